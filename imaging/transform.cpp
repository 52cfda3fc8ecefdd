#include "imaging/transform.h"

#include <cmath>
#include <numbers>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace bien {

Surface RotateSurface(const Surface& surface, double angle_deg) {
  if (surface.width <= 0 || surface.height <= 0) throw Error("cannot rotate an empty surface");
  if (!std::isfinite(angle_deg)) throw Error("rotation angle must be finite");
  const int w = surface.width, h = surface.height;
  cv::Mat z(h, w, CV_32F), m(h, w, CV_32F);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const float v = surface.At(x, y);
      const bool ok = std::isfinite(v);
      z.at<float>(y, x) = ok ? v : 0.f;
      m.at<float>(y, x) = ok ? 1.f : 0.f;
    }
  }
  double turns = std::fmod(angle_deg, 360.0);
  if (turns < 0) turns += 360;
  Surface out = surface;
  out.mask.reset();  // an annotation mask does not follow the rotation
  cv::Mat zr, mr;
  const double quarter = turns / 90.0;
  if (std::abs(quarter - std::round(quarter)) < 1e-12) {
    // Exact quarter turns. Clockwise on screen is cv::ROTATE_90_CLOCKWISE.
    const int q = static_cast<int>(std::lround(quarter)) % 4;
    if (q == 0) return out;
    const int code = q == 1   ? cv::ROTATE_90_CLOCKWISE
                     : q == 2 ? cv::ROTATE_180
                              : cv::ROTATE_90_COUNTERCLOCKWISE;
    cv::rotate(z, zr, code);
    cv::rotate(m, mr, code);
  } else {
    if (std::abs(surface.dx_m - surface.dy_m) > 1e-3 * surface.dx_m) {
      throw Error("rotating by " + std::to_string(angle_deg) +
                  " degrees needs square pixels; resample the surface first");
    }
    const double a = angle_deg * std::numbers::pi / 180.0;
    const double c = std::cos(a), s = std::sin(a);
    const int nw = static_cast<int>(std::ceil(std::abs(w * c) + std::abs(h * s)));
    const int nh = static_cast<int>(std::ceil(std::abs(w * s) + std::abs(h * c)));
    const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
    const double ncx = (nw - 1) / 2.0, ncy = (nh - 1) / 2.0;
    // out (u, v) -> in: p = Rot(-a) (u - ncx, v - ncy) + (cx, cy)
    cv::Mat map = (cv::Mat_<double>(2, 3) << c, s, -c * ncx - s * ncy + cx,  //
                   -s, c, s * ncx - c * ncy + cy);
    cv::warpAffine(z, zr, map, cv::Size(nw, nh), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                   cv::BORDER_CONSTANT, 0);
    cv::warpAffine(m, mr, map, cv::Size(nw, nh), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                   cv::BORDER_CONSTANT, 0);
  }
  out.width = zr.cols;
  out.height = zr.rows;
  if (std::abs(quarter - std::round(quarter)) < 1e-12 &&
      static_cast<int>(std::lround(quarter)) % 2) {
    std::swap(out.dx_m, out.dy_m);
  }
  out.z.assign(static_cast<size_t>(out.width) * out.height, NAN);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      const float share = mr.at<float>(y, x);
      if (share >= 0.999f) out.At(x, y) = zr.at<float>(y, x) / share;
    }
  }
  return out;
}

}  // namespace bien

#include "imaging/preprocess.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace bien {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Heights (0 where invalid) and validity (1 / 0) as CV_32F.
struct Field {
  cv::Mat z;
  cv::Mat m;
};

Field ToField(const Surface& s) {
  Field f{cv::Mat(s.height, s.width, CV_32F), cv::Mat(s.height, s.width, CV_32F)};
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      const float v = s.At(x, y);
      const bool ok = std::isfinite(v);
      f.z.at<float>(y, x) = ok ? v : 0.f;
      f.m.at<float>(y, x) = ok ? 1.f : 0.f;
    }
  }
  return f;
}

// NaN-aware resampling: area averaging of z*m and m.
Field Resample(const Field& in, double fx, double fy) {
  if (std::abs(fx - 1) < 1e-9 && std::abs(fy - 1) < 1e-9) return in;
  const int w = std::max(1, static_cast<int>(std::lround(in.z.cols / fx)));
  const int h = std::max(1, static_cast<int>(std::lround(in.z.rows / fy)));
  const int interp = fx > 1 || fy > 1 ? cv::INTER_AREA : cv::INTER_LINEAR;
  cv::Mat zm, mm;
  cv::resize(in.z.mul(in.m), zm, cv::Size(w, h), 0, 0, interp);
  cv::resize(in.m, mm, cv::Size(w, h), 0, 0, interp);
  Field out{cv::Mat::zeros(h, w, CV_32F), cv::Mat::zeros(h, w, CV_32F)};
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const float share = mm.at<float>(y, x);
      if (share >= 0.5f) {
        out.z.at<float>(y, x) = zm.at<float>(y, x) / share;
        out.m.at<float>(y, x) = 1.f;
      }
    }
  }
  return out;
}

// NaN-aware Gaussian low-pass with the ISO 16610-61 weighting for a cut-off
// wavelength (in pixels): sigma = cutoff * sqrt(ln 2 / 2) / pi.
cv::Mat GaussianLowPass(const Field& f, double cutoff_px) {
  const double sigma = cutoff_px * std::sqrt(std::log(2.0) / 2.0) / std::numbers::pi;
  if (sigma < 0.3) return f.z.clone();
  const int k = 2 * static_cast<int>(std::ceil(3 * sigma)) + 1;
  cv::Mat zm, mm;
  cv::GaussianBlur(f.z.mul(f.m), zm, cv::Size(k, k), sigma, sigma, cv::BORDER_CONSTANT);
  cv::GaussianBlur(f.m, mm, cv::Size(k, k), sigma, sigma, cv::BORDER_CONSTANT);
  cv::Mat out = cv::Mat::zeros(f.z.size(), CV_32F);
  for (int y = 0; y < out.rows; ++y) {
    for (int x = 0; x < out.cols; ++x) {
      const float w = mm.at<float>(y, x);
      if (w > 1e-3f) out.at<float>(y, x) = zm.at<float>(y, x) / w;
    }
  }
  return out;
}

// Robust fit of a polynomial surface (degree 1 or 2) to the valid points,
// iteratively re-weighted (Tukey biweight); returns the fitted surface.
cv::Mat FitSurface(const Field& f, int degree) {
  const int terms = degree == 1 ? 3 : 6;
  const int step = std::max(1, static_cast<int>(std::sqrt(cv::countNonZero(f.m) / 20000.0)));
  const double cx = f.z.cols / 2.0, cy = f.z.rows / 2.0, s = std::max(f.z.cols, f.z.rows) / 2.0;
  auto basis = [&](int x, int y, double* b) {
    const double u = (x - cx) / s, v = (y - cy) / s;
    b[0] = 1;
    b[1] = u;
    b[2] = v;
    if (degree > 1) {
      b[3] = u * u;
      b[4] = u * v;
      b[5] = v * v;
    }
  };
  std::vector<cv::Point> pts;
  for (int y = 0; y < f.z.rows; y += step) {
    for (int x = 0; x < f.z.cols; x += step) {
      if (f.m.at<float>(y, x) > 0) pts.emplace_back(x, y);
    }
  }
  cv::Mat coef = cv::Mat::zeros(terms, 1, CV_64F);
  std::vector<double> weight(pts.size(), 1.0), resid(pts.size());
  double b[6];
  for (int iter = 0; iter < 5 && pts.size() >= static_cast<size_t>(terms); ++iter) {
    cv::Mat ata = cv::Mat::zeros(terms, terms, CV_64F), atb = cv::Mat::zeros(terms, 1, CV_64F);
    for (size_t i = 0; i < pts.size(); ++i) {
      if (weight[i] <= 0) continue;
      basis(pts[i].x, pts[i].y, b);
      const double z = f.z.at<float>(pts[i]);
      for (int r = 0; r < terms; ++r) {
        atb.at<double>(r) += weight[i] * b[r] * z;
        for (int c = 0; c < terms; ++c) ata.at<double>(r, c) += weight[i] * b[r] * b[c];
      }
    }
    if (!cv::solve(ata, atb, coef, cv::DECOMP_SVD)) break;
    for (size_t i = 0; i < pts.size(); ++i) {
      basis(pts[i].x, pts[i].y, b);
      double fit = 0;
      for (int t = 0; t < terms; ++t) fit += coef.at<double>(t) * b[t];
      resid[i] = std::abs(f.z.at<float>(pts[i]) - fit);
    }
    std::vector<double> sorted = resid;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    const double c = std::max(4.685 * 1.4826 * sorted[sorted.size() / 2], 1e-12);
    for (size_t i = 0; i < pts.size(); ++i) {
      const double u = resid[i] / c;
      weight[i] = u < 1 ? (1 - u * u) * (1 - u * u) : 0;
    }
  }
  cv::Mat fit(f.z.size(), CV_32F);
  for (int y = 0; y < fit.rows; ++y) {
    for (int x = 0; x < fit.cols; ++x) {
      basis(x, y, b);
      double v = 0;
      for (int t = 0; t < terms; ++t) v += coef.at<double>(t) * b[t];
      fit.at<float>(y, x) = static_cast<float>(v);
    }
  }
  return fit;
}

// Median absolute deviation (scaled to a standard deviation) of valid values.
double RobustSigma(const cv::Mat& z, const cv::Mat& m) {
  std::vector<float> v;
  for (int y = 0; y < z.rows; ++y) {
    for (int x = 0; x < z.cols; ++x) {
      if (m.at<float>(y, x) > 0) v.push_back(z.at<float>(y, x));
    }
  }
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  const float med = v[v.size() / 2];
  for (float& x : v) x = std::abs(x - med);
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return 1.4826 * v[v.size() / 2];
}

Circle FromContour(const std::vector<cv::Point>& contour) {
  Circle c;
  if (contour.size() < 5) return c;
  cv::Point2f centre;
  float r = 0;
  cv::minEnclosingCircle(contour, centre, r);
  c.cx_px = centre.x;
  c.cy_px = centre.y;
  c.r_px = r;
  c.found = true;
  return c;
}

// The primer: the outer boundary of the largest valid region (its holes filled).
Circle FindPrimer(const cv::Mat& m8) {
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(m8.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
  size_t best = contours.size();
  double best_area = 0;
  for (size_t i = 0; i < contours.size(); ++i) {
    const double a = cv::contourArea(contours[i]);
    if (a > best_area) {
      best_area = a;
      best = i;
    }
  }
  if (best == contours.size()) return {};
  // The inscribed side of the region: use the circle of equal area centred on
  // the region's centroid, not the enclosing circle (rough edges bulge out).
  const cv::Moments mo = cv::moments(contours[best]);
  Circle c;
  if (mo.m00 <= 0) return c;
  c.cx_px = mo.m10 / mo.m00;
  c.cy_px = mo.m01 / mo.m00;
  c.r_px = std::sqrt(best_area / std::numbers::pi);
  c.found = true;
  return c;
}

// The firing-pin impression: the largest invalid region inside the primer
// circle that does not touch the primer's edge, grown by `extra` (points of
// the impression's rim that stand far off the breech face).
Circle FindFiringPin(const cv::Mat& invalid8, const Circle& primer) {
  cv::Mat inside = cv::Mat::zeros(invalid8.size(), CV_8U);
  cv::circle(inside, cv::Point2d(primer.cx_px, primer.cy_px),
             static_cast<int>(std::max(1.0, primer.r_px * 0.9)), cv::Scalar(255), cv::FILLED);
  cv::Mat holes;
  cv::bitwise_and(invalid8, inside, holes);
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(holes, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
  size_t best = contours.size();
  double best_area = 0;
  for (size_t i = 0; i < contours.size(); ++i) {
    const double a = cv::contourArea(contours[i]);
    if (a > best_area) {
      best_area = a;
      best = i;
    }
  }
  // Ignore specks: an impression covers at least 1 % of the primer.
  if (best == contours.size() || best_area < 0.01 * std::numbers::pi * primer.r_px * primer.r_px) {
    return {};
  }
  return FromContour(contours[best]);
}

}  // namespace

void PreprocessOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("preprocess options: " + what); };
  if (!(std::isfinite(working_pixel_um) && working_pixel_um > 0 && working_pixel_um <= 1000)) {
    bad("working_pixel_um must be a positive number of micrometres (at most 1000)");
  }
  for (const auto& [v, name] :
       {std::pair{firing_pin_margin_um, "firing_pin_margin_um"},
        std::pair{primer_margin_um, "primer_margin_um"}, std::pair{outlier_mad, "outlier_mad"},
        std::pair{short_cutoff_um, "short_cutoff_um"}, std::pair{long_cutoff_um, "long_cutoff_um"},
        std::pair{illumination_cutoff_um, "illumination_cutoff_um"}}) {
    if (!(std::isfinite(v) && v >= 0)) bad(std::string(name) + " must be zero or positive");
  }
  if (short_cutoff_um > 0 && long_cutoff_um > 0 && short_cutoff_um >= long_cutoff_um) {
    bad("short_cutoff_um (" + Num(short_cutoff_um) + ") must be below long_cutoff_um (" +
        Num(long_cutoff_um) + ")");
  }
}

Surface PreprocessBreechFace(const Surface& input, const std::string& source,
                             const PreprocessOptions& options, PreprocessReport* report) {
  options.Check();
  if (input.width <= 0 || input.height <= 0 || input.z.empty()) {
    throw Error(source + ": empty surface");
  }
  if (!(input.dx_m > 0 && input.dy_m > 0)) throw Error(source + ": lateral spacing is not set");
  if (input.ValidCount() == 0) throw Error(source + ": all points are NaN");
  PreprocessReport local;
  PreprocessReport& rep = report ? *report : local;
  rep = PreprocessReport{};
  const bool intensity = input.values == SurfaceValues::kIntensity;
  const double px = options.working_pixel_um;

  // 1. Resample to the working pixel size.
  Field f = Resample(ToField(input), px / (input.dx_m * 1e6), px / (input.dy_m * 1e6));
  const double to_px = 1.0 / px;  // micrometres -> pixels

  // 2D images: flatten the illumination and normalise the contrast.
  if (intensity) {
    if (options.illumination_cutoff_um > 0) {
      const cv::Mat background = GaussianLowPass(f, options.illumination_cutoff_um * to_px);
      f.z = (f.z - background).mul(f.m);
    }
    const double sd = RobustSigma(f.z, f.m);
    if (sd > 0) f.z = f.z / sd;
    rep.notes.push_back("2D image: illumination flattened, contrast normalised");
  }

  // Raw or already processed? Processed scans are levelled and band-passed:
  // after removing a plane their heights span a few micrometres only.
  cv::Mat m8;
  f.m.convertTo(m8, CV_8U, 255);
  if (!intensity) {
    const cv::Mat plane = FitSurface(f, 1);
    const double sigma = RobustSigma(f.z - plane, f.m);
    rep.already_processed = sigma < 3e-6 && input.NanShare() > 0.3;
  }

  // 2. Region of interest.
  if (options.find_region && !intensity) {
    rep.primer = FindPrimer(m8);
    if (rep.primer.found) {
      cv::Mat invalid8;
      cv::bitwise_not(m8, invalid8);
      rep.firing_pin = FindFiringPin(invalid8, rep.primer);
    }
    if (!rep.already_processed && rep.primer.found) {
      // Raw scan: keep the primer minus its rim, remove the firing-pin
      // impression with a margin, and points of the impression's rim that
      // stand far off the breech face.
      cv::Mat keep = cv::Mat::zeros(f.m.size(), CV_32F);
      const double r = rep.primer.r_px - options.primer_margin_um * to_px;
      if (r > 0) {
        cv::circle(keep, cv::Point2d(rep.primer.cx_px, rep.primer.cy_px), static_cast<int>(r),
                   cv::Scalar(1), cv::FILLED);
      }
      if (rep.firing_pin.found) {
        // The impression's crater wall: grow the hole while the heights stay
        // far from the breech-face level.
        const cv::Mat level = FitSurface(Field{f.z, f.m.mul(keep)}, 2);
        const double sigma = RobustSigma(f.z - level, f.m.mul(keep));
        double radius = rep.firing_pin.r_px;
        const double limit = rep.primer.r_px * 0.9;
        for (; radius < limit; radius += 1) {
          int off = 0, total = 0;
          for (int k = 0; k < 180; ++k) {
            const double a = k * std::numbers::pi / 90;
            const int x =
                static_cast<int>(std::lround(rep.firing_pin.cx_px + radius * std::cos(a)));
            const int y =
                static_cast<int>(std::lround(rep.firing_pin.cy_px + radius * std::sin(a)));
            if (x < 0 || y < 0 || x >= f.z.cols || y >= f.z.rows || f.m.at<float>(y, x) == 0) {
              continue;
            }
            ++total;
            off += std::abs(f.z.at<float>(y, x) - level.at<float>(y, x)) > 4 * sigma ? 1 : 0;
          }
          if (total > 20 && off < total / 10) break;
        }
        rep.firing_pin.r_px = radius;
        cv::circle(keep, cv::Point2d(rep.firing_pin.cx_px, rep.firing_pin.cy_px),
                   static_cast<int>(radius + options.firing_pin_margin_um * to_px), cv::Scalar(0),
                   cv::FILLED);
      }
      f.m = f.m.mul(keep);
      f.z = f.z.mul(f.m);
      rep.notes.push_back("raw scan: primer and firing-pin impression found and masked");
    } else if (rep.already_processed) {
      rep.notes.push_back("already processed: region kept as given");
    }
  }
  if (cv::countNonZero(f.m) < 16) {
    throw Error(source + ": nothing is left of the breech face after masking");
  }

  // 3. Levelling (plane and primer curvature).
  if (options.level && !intensity) {
    f.z = (f.z - FitSurface(f, 2)).mul(f.m);
  }

  // 4. Outliers.
  if (options.outlier_mad > 0) {
    const double sigma = RobustSigma(f.z, f.m);
    if (sigma > 0) {
      for (int y = 0; y < f.z.rows; ++y) {
        for (int x = 0; x < f.z.cols; ++x) {
          if (f.m.at<float>(y, x) > 0 &&
              std::abs(f.z.at<float>(y, x)) > options.outlier_mad * sigma) {
            f.m.at<float>(y, x) = 0;
            f.z.at<float>(y, x) = 0;
          }
        }
      }
    }
  }

  // 5. Gaussian band-pass.
  if (options.short_cutoff_um > 0 || options.long_cutoff_um > 0) {
    cv::Mat z = options.short_cutoff_um > 0 ? GaussianLowPass(f, options.short_cutoff_um * to_px)
                                            : f.z.clone();
    if (options.long_cutoff_um > 0) {
      z -= GaussianLowPass(f, options.long_cutoff_um * to_px);
    }
    f.z = z.mul(f.m);
  }

  // 6. Crop to the valid bounding box.
  f.m.convertTo(m8, CV_8U, 255);
  const cv::Rect box = cv::boundingRect(m8);
  if (box.area() == 0) throw Error(source + ": nothing is left of the breech face after masking");
  Surface out;
  out.width = box.width;
  out.height = box.height;
  out.dx_m = out.dy_m = px * 1e-6;
  out.values = input.values;
  out.provenance = input.provenance;
  out.z.assign(static_cast<size_t>(box.area()), NAN);
  for (int y = 0; y < box.height; ++y) {
    for (int x = 0; x < box.width; ++x) {
      if (f.m.at<float>(y + box.y, x + box.x) > 0)
        out.At(x, y) = f.z.at<float>(y + box.y, x + box.x);
    }
  }
  for (Circle* c : {&rep.primer, &rep.firing_pin}) {
    if (c->found) {
      c->cx_px -= box.x;
      c->cy_px -= box.y;
    }
  }
  rep.valid_share = 1.0 - out.NanShare();
  return out;
}

}  // namespace bien

#include "imaging/preprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
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

// Values (0 where invalid) and validity (1 / 0), both CV_32F, same size.
struct Field {
  cv::Mat z;
  cv::Mat m;
};

Field ToField(const Surface& s) {
  Field f{cv::Mat(s.height, s.width, CV_32F), cv::Mat(s.height, s.width, CV_32F)};
  for (int y = 0; y < s.height; ++y) {
    const float* in = s.z.data() + static_cast<size_t>(y) * s.width;
    float* z = f.z.ptr<float>(y);
    float* m = f.m.ptr<float>(y);
    for (int x = 0; x < s.width; ++x) {
      const bool ok = std::isfinite(in[x]);
      z[x] = ok ? in[x] : 0.f;
      m[x] = ok ? 1.f : 0.f;
    }
  }
  return f;
}

// Sets z to 0 wherever m is 0 (keeps the "0 where invalid" invariant).
void ZeroInvalid(Field& f) { f.z = f.z.mul(f.m); }

cv::Mat ToMask8(const cv::Mat& m) {
  cv::Mat m8;
  cv::compare(m, 0.5, m8, cv::CMP_GT);
  return m8;
}

size_t CountValid(const cv::Mat& m) { return static_cast<size_t>(cv::countNonZero(m)); }

// NaN-aware resampling by factors fx, fy (input pixels per output pixel):
// area averaging (shrinking) or bilinear (growing) of z*m and m, then
// division; an output point is valid when at least half its area was.
Field Resample(const Field& in, double fx, double fy) {
  if (std::abs(fx - 1) < 1e-6 && std::abs(fy - 1) < 1e-6) return in;
  const int w = std::max(1, static_cast<int>(std::lround(in.z.cols / fx)));
  const int h = std::max(1, static_cast<int>(std::lround(in.z.rows / fy)));
  const int interp = fx > 1 || fy > 1 ? cv::INTER_AREA : cv::INTER_LINEAR;
  cv::Mat zm, mm;
  cv::resize(in.z, zm, cv::Size(w, h), 0, 0, interp);  // z is already 0 where invalid
  cv::resize(in.m, mm, cv::Size(w, h), 0, 0, interp);
  Field out{cv::Mat::zeros(h, w, CV_32F), cv::Mat::zeros(h, w, CV_32F)};
  for (int y = 0; y < h; ++y) {
    const float* a = zm.ptr<float>(y);
    const float* b = mm.ptr<float>(y);
    float* z = out.z.ptr<float>(y);
    float* m = out.m.ptr<float>(y);
    for (int x = 0; x < w; ++x) {
      if (b[x] >= 0.5f) {
        z[x] = a[x] / b[x];
        m[x] = 1.f;
      }
    }
  }
  return out;
}

// ISO 16610-61 Gaussian: the standard deviation of the weighting function
// for a cut-off wavelength, sigma = cutoff * sqrt(ln 2 / 2) / pi (50 %
// transmission at the cut-off).
double GaussianSigma(double cutoff) {
  return cutoff * std::sqrt(std::log(2.0) / 2.0) / std::numbers::pi;
}

// NaN-aware Gaussian low-pass (normalised convolution): blur(z*m) / blur(m),
// evaluated everywhere a little weight reaches (0 elsewhere).
cv::Mat LowPass(const Field& f, double sigma_px) {
  if (sigma_px < 0.2) return f.z.clone();
  const int k = 2 * static_cast<int>(std::ceil(3 * sigma_px)) + 1;
  cv::Mat zm, mm;
  cv::GaussianBlur(f.z, zm, cv::Size(k, k), sigma_px, sigma_px, cv::BORDER_CONSTANT);
  cv::GaussianBlur(f.m, mm, cv::Size(k, k), sigma_px, sigma_px, cv::BORDER_CONSTANT);
  cv::Mat out = cv::Mat::zeros(f.z.size(), CV_32F);
  for (int y = 0; y < out.rows; ++y) {
    const float* a = zm.ptr<float>(y);
    const float* b = mm.ptr<float>(y);
    float* o = out.ptr<float>(y);
    for (int x = 0; x < out.cols; ++x) {
      if (b[x] > 1e-4f) o[x] = a[x] / b[x];
    }
  }
  return out;
}

// Median of |v - median(v)| scaled to a normal standard deviation; also the median.
struct Robust {
  double median = 0;
  double sigma = 0;
};
Robust RobustOf(std::vector<float> v) {
  Robust r;
  if (v.empty()) return r;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  r.median = *mid;
  for (float& x : v) x = std::abs(x - static_cast<float>(r.median));
  std::nth_element(v.begin(), mid, v.end());
  r.sigma = 1.4826 * *mid;
  return r;
}

// Valid values of z (where m > 0), every `step`-th row and column.
std::vector<float> ValidValues(const cv::Mat& z, const cv::Mat& m, int step = 1) {
  std::vector<float> v;
  for (int y = 0; y < z.rows; y += step) {
    const float* a = z.ptr<float>(y);
    const float* b = m.ptr<float>(y);
    for (int x = 0; x < z.cols; x += step) {
      if (b[x] > 0) v.push_back(a[x]);
    }
  }
  return v;
}

// A polynomial surface of degree 1 (plane) or 2 (plane plus curvature), in
// coordinates centred and scaled to the grid for a well-conditioned fit.
struct Poly {
  int terms = 0;
  std::array<double, 6> c{};
  double cx = 0, cy = 0, s = 1;
  void Basis(double x, double y, double* b) const {
    const double u = (x - cx) / s, v = (y - cy) / s;
    b[0] = 1;
    b[1] = u;
    b[2] = v;
    b[3] = u * u;
    b[4] = u * v;
    b[5] = v * v;
  }
  double At(double x, double y) const {
    double b[6];
    Basis(x, y, b);
    double v = 0;
    for (int t = 0; t < terms; ++t) v += c[t] * b[t];
    return v;
  }
  cv::Mat Render(cv::Size size) const {
    cv::Mat out(size, CV_32F);
    for (int y = 0; y < size.height; ++y) {
      float* o = out.ptr<float>(y);
      for (int x = 0; x < size.width; ++x) o[x] = static_cast<float>(At(x, y));
    }
    return out;
  }
};

// Robust fit of a polynomial surface to the points where `m` > 0 by
// iteratively re-weighted least squares with Tukey's biweight (c = 4.685
// robust sigmas), on a subsample of about 20 000 points. `start` seeds the
// weights (points far from it start with weight 0), so a fit on a trusted
// sub-region can be extended to a region with large off-level parts.
Poly RobustFit(const cv::Mat& z, const cv::Mat& m, int degree, const Poly* start = nullptr,
               int iterations = 8) {
  Poly p;
  p.terms = degree == 1 ? 3 : 6;
  p.cx = z.cols / 2.0;
  p.cy = z.rows / 2.0;
  p.s = std::max(z.cols, z.rows) / 2.0;
  const size_t n = CountValid(m);
  const int step = std::max(1, static_cast<int>(std::sqrt(static_cast<double>(n) / 20000.0)));
  struct Pt {
    double b[6];
    double z;
    double start;  // the start's value here
  };
  std::vector<Pt> pts;
  for (int y = 0; y < z.rows; y += step) {
    const float* a = z.ptr<float>(y);
    const float* w = m.ptr<float>(y);
    for (int x = 0; x < z.cols; x += step) {
      if (w[x] > 0) {
        Pt q;
        p.Basis(x, y, q.b);
        q.z = a[x];
        q.start = start ? start->At(x, y) : 0;
        pts.push_back(q);
      }
    }
  }
  const int terms = p.terms;
  if (pts.size() < static_cast<size_t>(terms) * 4) {
    // Too few points for a surface: remove the median only.
    p.terms = 1;
    std::vector<float> v;
    for (const Pt& q : pts) v.push_back(static_cast<float>(q.z));
    p.c[0] = RobustOf(v).median;
    return p;
  }
  std::vector<double> weight(pts.size(), 1.0);
  std::vector<float> resid(pts.size()), a(pts.size());
  // Tukey weights from residuals; the scale is the median absolute residual.
  auto reweight = [&] {
    for (size_t i = 0; i < pts.size(); ++i) a[i] = std::abs(resid[i]);
    const auto mid = a.begin() + static_cast<std::ptrdiff_t>(a.size() / 2);
    std::nth_element(a.begin(), mid, a.end());
    const double c = std::max(4.685 * 1.4826 * *mid, 1e-15);
    for (size_t i = 0; i < pts.size(); ++i) {
      const double u = resid[i] / c;
      weight[i] = std::abs(u) < 1 ? (1 - u * u) * (1 - u * u) : 0;
    }
  };
  if (start) {
    for (size_t i = 0; i < pts.size(); ++i) resid[i] = static_cast<float>(pts[i].z - pts[i].start);
    reweight();
  }
  cv::Mat coef;
  for (int iter = 0; iter < iterations; ++iter) {
    cv::Mat ata = cv::Mat::zeros(terms, terms, CV_64F), atb = cv::Mat::zeros(terms, 1, CV_64F);
    double* A = ata.ptr<double>();
    double* B = atb.ptr<double>();
    for (size_t i = 0; i < pts.size(); ++i) {
      const double w = weight[i];
      if (w <= 0) continue;
      const double* b = pts[i].b;
      for (int r = 0; r < terms; ++r) {
        B[r] += w * b[r] * pts[i].z;
        for (int c = r; c < terms; ++c) A[r * terms + c] += w * b[r] * b[c];
      }
    }
    for (int r = 0; r < terms; ++r) {
      for (int c = 0; c < r; ++c) A[r * terms + c] = A[c * terms + r];
    }
    if (!cv::solve(ata, atb, coef, cv::DECOMP_SVD)) break;
    for (int t = 0; t < terms; ++t) p.c[t] = coef.at<double>(t);
    for (size_t i = 0; i < pts.size(); ++i) {
      double v = 0;
      for (int t = 0; t < terms; ++t) v += p.c[t] * pts[i].b[t];
      resid[i] = static_cast<float>(pts[i].z - v);
    }
    reweight();
  }
  return p;
}

// A circle through points by Kasa's algebraic fit, made robust by
// re-weighting on the geometric residual (Tukey, scale at least 1 px).
Circle FitCircle(const std::vector<cv::Point2d>& pts) {
  Circle c;
  if (pts.size() < 8) return c;
  double mx = 0, my = 0;
  for (const auto& p : pts) {
    mx += p.x;
    my += p.y;
  }
  mx /= static_cast<double>(pts.size());
  my /= static_cast<double>(pts.size());
  std::vector<double> w(pts.size(), 1.0), e(pts.size());
  double cx = mx, cy = my, r = 0;
  for (int iter = 0; iter < 12; ++iter) {
    // x^2 + y^2 + D x + E y + F = 0 in coordinates relative to the mean.
    cv::Matx33d ata = cv::Matx33d::zeros();
    cv::Vec3d atb(0, 0, 0);
    double used = 0;
    for (size_t i = 0; i < pts.size(); ++i) {
      if (w[i] <= 0) continue;
      const double x = pts[i].x - mx, y = pts[i].y - my;
      const cv::Vec3d a(x, y, 1);
      const double b = -(x * x + y * y);
      ata += w[i] * (a * a.t());
      atb += w[i] * b * a;
      used += w[i];
    }
    if (used < 3) return {};
    cv::Vec3d sol;
    if (!cv::solve(ata, atb, sol, cv::DECOMP_SVD)) return {};
    cx = mx - sol[0] / 2;
    cy = my - sol[1] / 2;
    const double r2 = sol[0] * sol[0] / 4 + sol[1] * sol[1] / 4 - sol[2];
    if (!(r2 > 0)) return {};
    r = std::sqrt(r2);
    std::vector<float> a(pts.size());
    for (size_t i = 0; i < pts.size(); ++i) {
      e[i] = std::hypot(pts[i].x - cx, pts[i].y - cy) - r;
      a[i] = static_cast<float>(std::abs(e[i]));
    }
    const auto mid = a.begin() + static_cast<std::ptrdiff_t>(a.size() / 2);
    std::nth_element(a.begin(), mid, a.end());
    const double scale = 4.685 * std::max(1.4826 * *mid, 1.0);
    for (size_t i = 0; i < pts.size(); ++i) {
      const double u = e[i] / scale;
      w[i] = std::abs(u) < 1 ? (1 - u * u) * (1 - u * u) : 0;
    }
  }
  c.cx_px = cx;
  c.cy_px = cy;
  c.r_px = r;
  c.found = true;
  return c;
}

// The points of rays from (cx, cy), one per `rays` directions: along each ray,
// `pick` gets the samples (1 px apart, out to max_r or the grid edge) and
// returns the radius of the boundary point, or a negative value for none.
template <class Pick>
std::vector<cv::Point2d> RayPoints(cv::Size size, double cx, double cy, double max_r, int rays,
                                   Pick pick) {
  std::vector<cv::Point2d> pts;
  std::vector<int> idx;
  for (int k = 0; k < rays; ++k) {
    const double a = 2 * std::numbers::pi * k / rays, dx = std::cos(a), dy = std::sin(a);
    idx.clear();
    for (int r = 0; r <= max_r; ++r) {
      const int x = static_cast<int>(std::lround(cx + r * dx));
      const int y = static_cast<int>(std::lround(cy + r * dy));
      if (x < 0 || y < 0 || x >= size.width || y >= size.height) break;
      idx.push_back(y * size.width + x);
    }
    const double r = pick(idx);
    if (r >= 0) pts.emplace_back(cx + r * dx, cy + r * dy);
  }
  return pts;
}

// The primer: a robust circle through the outermost points of the largest
// valid region along rays from its centre. Rough, bitten edges and valid
// specks beyond the primer (e.g. in a scan's corners) are outliers of the fit.
Circle FindPrimer(const cv::Mat& m8) {
  cv::Mat closed;
  cv::morphologyEx(m8, closed, cv::MORPH_CLOSE,
                   cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(5, 5)));
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(closed, labels, stats, centroids, 8, CV_32S);
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (best == 0 || stats.at<int>(i, cv::CC_STAT_AREA) > stats.at<int>(best, cv::CC_STAT_AREA)) {
      best = i;
    }
  }
  if (best == 0) return {};
  // Centre of the region with its holes filled: the bounding box of the
  // component is a fair start; the fit does not depend on it much.
  const double cx =
      stats.at<int>(best, cv::CC_STAT_LEFT) + stats.at<int>(best, cv::CC_STAT_WIDTH) / 2.0;
  const double cy =
      stats.at<int>(best, cv::CC_STAT_TOP) + stats.at<int>(best, cv::CC_STAT_HEIGHT) / 2.0;
  const int* lab = labels.ptr<int>();
  const double max_r = std::hypot(m8.cols, m8.rows);
  const auto pts = RayPoints(m8.size(), cx, cy, max_r, 360, [&](const std::vector<int>& idx) {
    for (size_t i = idx.size(); i-- > 0;) {
      if (lab[idx[i]] == best) return static_cast<double>(i);
    }
    return -1.0;
  });
  Circle c = FitCircle(pts);
  if (c.found && c.r_px < 8) c = {};
  return c;
}

// The firing-pin impression: the round region near the primer's middle that
// is not breech face (`face8` = 0: no data, or far off the levelled breech
// face, such as the raised rim around the impression). Its centre is first
// taken as the point deepest inside that region (distance transform). Rays
// from there are walked inwards from the primer edge (less `edge_px`): the
// impression starts where a run of `run_px` points that are not breech face
// begins. A robust circle goes through those points. Walking inwards matters:
// the impression's sloping wall passes through the breech-face level, which
// would look like breech face to a walk outwards from the centre.
Circle FindFiringPin(const cv::Mat& face8, const Circle& primer, double edge_px, int run_px,
                     double min_r_px) {
  cv::Mat not_face;
  cv::bitwise_not(face8, not_face);
  cv::Mat dist;
  cv::distanceTransform(not_face, dist, cv::DIST_L2, 3);
  cv::Mat search = cv::Mat::zeros(face8.size(), CV_8U);
  cv::circle(search,
             cv::Point(static_cast<int>(std::lround(primer.cx_px)),
                       static_cast<int>(std::lround(primer.cy_px))),
             static_cast<int>(0.6 * primer.r_px), cv::Scalar(255), cv::FILLED);
  double deepest = 0;
  cv::Point at;
  cv::minMaxLoc(dist, nullptr, &deepest, nullptr, &at, search);
  if (deepest < min_r_px) return {};
  const uchar* face = face8.ptr<uchar>();
  const double ox = at.x - primer.cx_px, oy = at.y - primer.cy_px;
  const double rp = std::max(1.0, primer.r_px - edge_px);
  std::vector<cv::Point2d> pts;
  std::vector<int> idx;
  const int rays = 360;
  for (int k = 0; k < rays; ++k) {
    const double a = 2 * std::numbers::pi * k / rays, dx = std::cos(a), dy = std::sin(a);
    // Distance from the start to the (shrunk) primer circle along the ray.
    const double b = dx * ox + dy * oy, disc = b * b - (ox * ox + oy * oy) + rp * rp;
    if (disc <= 0) continue;
    const double end = -b + std::sqrt(disc);
    idx.clear();
    for (int r = 0; r <= end; ++r) {
      const int x = static_cast<int>(std::lround(at.x + r * dx));
      const int y = static_cast<int>(std::lround(at.y + r * dy));
      if (x < 0 || y < 0 || x >= face8.cols || y >= face8.rows) break;
      idx.push_back(y * face8.cols + x);
    }
    int run = 0;
    for (size_t i = idx.size(); i-- > 0;) {
      run = face[idx[i]] ? 0 : run + 1;
      if (run >= run_px) {
        const double r = static_cast<double>(i + static_cast<size_t>(run_px));
        pts.emplace_back(at.x + r * dx, at.y + r * dy);
        break;
      }
    }
  }
  // Most rays must meet the impression, or this is none.
  if (pts.size() < rays / 2) return {};
  Circle c = FitCircle(pts);
  if (!c.found || c.r_px < min_r_px || c.r_px > 0.85 * primer.r_px) return {};
  return c;
}

// Points inside the circle grown by `grow` px (negative shrinks) set to `value` in m.
void FillCircle(cv::Mat& m, const Circle& c, double grow, float value) {
  const double r = c.r_px + grow;
  if (r <= 0) return;
  // Sub-pixel exact: compare distances instead of drawing.
  const int y0 = std::max(0, static_cast<int>(std::floor(c.cy_px - r)));
  const int y1 = std::min(m.rows - 1, static_cast<int>(std::ceil(c.cy_px + r)));
  const int x0 = std::max(0, static_cast<int>(std::floor(c.cx_px - r)));
  const int x1 = std::min(m.cols - 1, static_cast<int>(std::ceil(c.cx_px + r)));
  for (int y = y0; y <= y1; ++y) {
    float* row = m.ptr<float>(y);
    for (int x = x0; x <= x1; ++x) {
      if ((x - c.cx_px) * (x - c.cx_px) + (y - c.cy_px) * (y - c.cy_px) <= r * r) row[x] = value;
    }
  }
}

// Intensities to zero median and unit robust sigma (the standard deviation
// when more than half the values are equal; unchanged when all are).
void Normalise(Field& f) {
  const std::vector<float> v = ValidValues(f.z, f.m);
  const Robust r = RobustOf(v);
  double scale = r.sigma;
  if (!(scale > 0)) {
    double sum2 = 0;
    for (float x : v) sum2 += (x - r.median) * (x - r.median);
    scale = v.empty() ? 0 : std::sqrt(sum2 / static_cast<double>(v.size()));
  }
  f.z -= r.median;
  if (scale > 0) f.z /= scale;
  ZeroInvalid(f);
}

}  // namespace

std::string PreprocessKey(const PreprocessOptions& o) {
  auto num = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return std::string(buf);
  };
  return "pre-v1 px=" + num(o.working_pixel_um) + " region=" + (o.find_region ? "1" : "0") +
         " fp=" + num(o.firing_pin_margin_um) + " primer=" + num(o.primer_margin_um) +
         " level=" + (o.level ? "1" : "0") + " mad=" + num(o.outlier_mad) +
         " short=" + num(o.short_cutoff_um) + " long=" + num(o.long_cutoff_um) +
         " illum=" + num(o.illumination_cutoff_um);
}

void PreprocessOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("preprocess options: " + what); };
  if (!(std::isfinite(working_pixel_um) && working_pixel_um > 0 && working_pixel_um <= 1000)) {
    bad("working_pixel_um must be a positive number of micrometres (at most 1000), not " +
        Num(working_pixel_um));
  }
  for (const auto& [v, name] :
       {std::pair{firing_pin_margin_um, "firing_pin_margin_um"},
        std::pair{primer_margin_um, "primer_margin_um"}, std::pair{outlier_mad, "outlier_mad"},
        std::pair{short_cutoff_um, "short_cutoff_um"}, std::pair{long_cutoff_um, "long_cutoff_um"},
        std::pair{illumination_cutoff_um, "illumination_cutoff_um"}}) {
    if (!(std::isfinite(v) && v >= 0)) {
      bad(std::string(name) + " must be zero (off) or positive, not " + Num(v));
    }
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
  if (input.z.size() != static_cast<size_t>(input.width) * input.height) {
    throw Error(source + ": " + std::to_string(input.z.size()) + " values for a " +
                std::to_string(input.width) + " x " + std::to_string(input.height) + " grid");
  }
  if (!(input.dx_m > 0 && input.dy_m > 0)) throw Error(source + ": lateral spacing is not set");
  if (input.ValidCount() == 0) throw Error(source + ": all points are NaN");
  PreprocessReport local;
  PreprocessReport& rep = report ? *report : local;
  rep = PreprocessReport{};
  const bool intensity = input.values == SurfaceValues::kIntensity;
  const double px = options.working_pixel_um;
  const double um_to_px = 1.0 / px;

  // 1. Resample to the working pixel size.
  const double fx = px / (input.dx_m * 1e6), fy = px / (input.dy_m * 1e6);
  const double grid = std::round(input.width / fx) * std::round(input.height / fy);
  if (grid > 100e6) {
    throw Error(source + ": resampling from " + Num(input.dx_m * 1e6) + " um to " + Num(px) +
                " um pixels would make " + Num(grid) + " points (at most 1e8)");
  }
  Field f = Resample(ToField(input), fx, fy);
  if (CountValid(f.m) < 16) {
    throw Error(source + ": fewer than 16 valid points at the working pixel size of " + Num(px) +
                " um");
  }

  // 2D images: flatten the illumination (divide by the local mean brightness)
  // and normalise the contrast (zero median, unit robust sigma).
  if (intensity) {
    if (options.illumination_cutoff_um > 0) {
      const cv::Mat background =
          LowPass(f, GaussianSigma(options.illumination_cutoff_um * um_to_px));
      double peak = 0;
      cv::minMaxLoc(background, nullptr, &peak, nullptr, nullptr, ToMask8(f.m));
      const float floor = static_cast<float>(std::max(0.02 * peak, 1e-6));
      for (int y = 0; y < f.z.rows; ++y) {
        float* z = f.z.ptr<float>(y);
        const float* b = background.ptr<float>(y);
        for (int x = 0; x < f.z.cols; ++x) z[x] = z[x] / std::max(b[x], floor) - 1.f;
      }
      ZeroInvalid(f);
    }
    Normalise(f);
    rep.notes.push_back("2D image: illumination flattened, contrast normalised");
  }

  // Raw or already processed? Processed scans are levelled and band-passed:
  // after removing a plane their heights span a few micrometres only.
  if (!intensity) {
    const Poly plane = RobustFit(f.z, f.m, 1);
    std::vector<float> v = ValidValues(f.z - plane.Render(f.z.size()), f.m, 2);
    const auto lo = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 100);
    const auto hi = v.begin() + static_cast<std::ptrdiff_t>(v.size() * 99 / 100);
    std::nth_element(v.begin(), lo, v.end());
    const double low = *lo;
    std::nth_element(lo + 1, hi, v.end());
    const double spread = *hi - low;
    rep.already_processed = spread < 30e-6;
    rep.notes.push_back("heights after a plane fit span " + Num(spread * 1e6) +
                        " um (1st to 99th percentile)");
  }

  // 2. Region of interest.
  if (options.find_region && !intensity) {
    const cv::Mat m8 = ToMask8(f.m);
    rep.primer = FindPrimer(m8);
    // The breech face: valid points and, in a raw scan, near the level of the
    // primer's outer part (the firing-pin impression and the rim of primer
    // metal raised around it lie tens of micrometres off that level).
    cv::Mat face8 = m8;
    if (rep.primer.found && !rep.already_processed) {
      cv::Mat outer = cv::Mat::zeros(f.m.size(), CV_32F);
      FillCircle(outer, rep.primer, 0, 1.f);
      FillCircle(outer, rep.primer, -0.2 * rep.primer.r_px, 0.f);
      outer = outer.mul(f.m);
      const Poly level = RobustFit(f.z, outer, 2);
      const cv::Mat resid = f.z - level.Render(f.z.size());
      const Robust r = RobustOf(ValidValues(resid, outer));
      const double tol = std::max(5 * r.sigma, 5e-6);
      face8 = m8 & (cv::abs(resid) < tol);
      rep.notes.push_back("raw scan: the primer's outer part is within " + Num(r.sigma * 1e6) +
                          " um (robust sigma) of a second-order surface; points further off than " +
                          Num(tol * 1e6) + " um are not breech face");
    }
    if (rep.primer.found) {
      rep.firing_pin = FindFiringPin(face8, rep.primer, options.primer_margin_um * um_to_px,
                                     std::max(3, static_cast<int>(std::lround(50 * um_to_px))),
                                     std::max(3.0, 100 * um_to_px));
    }
    if (rep.already_processed) {
      rep.notes.push_back("already processed: region kept as given");
    } else if (!rep.primer.found) {
      rep.notes.push_back("raw scan, but no primer found in the valid data: region kept as given");
    } else {
      cv::Mat keep = cv::Mat::zeros(f.m.size(), CV_32F);
      FillCircle(keep, rep.primer, -options.primer_margin_um * um_to_px, 1.f);
      if (rep.firing_pin.found) {
        FillCircle(keep, rep.firing_pin, options.firing_pin_margin_um * um_to_px, 0.f);
      }
      f.m = f.m.mul(keep);
      rep.notes.push_back(std::string("raw scan: outside the primer") +
                          (rep.firing_pin.found ? " and inside the firing-pin impression" : "") +
                          " masked");
      // What is left off the breech-face level (the raised rim where it is
      // not round, the primer's rolled edge) goes too, unless that is much
      // of the region: then the second-order surface is what does not fit.
      const size_t in_region = CountValid(f.m);
      cv::Mat face;
      face8.convertTo(face, CV_32F, 1.0 / 255);
      const cv::Mat on_level = f.m.mul(face);
      const size_t off = in_region - CountValid(on_level);
      if (off <= in_region / 4) {
        f.m = on_level;
        rep.notes.push_back(std::to_string(off) + " points off the breech-face level masked");
      } else {
        rep.notes.push_back(std::to_string(off) + " of " + std::to_string(in_region) +
                            " points are off the breech-face level: too many to mask, kept");
      }
      ZeroInvalid(f);
    }
  }
  if (CountValid(f.m) < 16) {
    throw Error(source + ": nothing is left of the breech face after masking");
  }

  // 3. Levelling (plane and primer curvature).
  if (options.level && !intensity) {
    const Poly fit = RobustFit(f.z, f.m, 2);
    f.z -= fit.Render(f.z.size());
    ZeroInvalid(f);
  }

  // 4. Outliers.
  if (options.outlier_mad > 0) {
    const Robust r = RobustOf(ValidValues(f.z, f.m));
    if (r.sigma > 0) {
      const float lim = static_cast<float>(options.outlier_mad * r.sigma);
      const float med = static_cast<float>(r.median);
      size_t removed = 0;
      for (int y = 0; y < f.z.rows; ++y) {
        float* z = f.z.ptr<float>(y);
        float* m = f.m.ptr<float>(y);
        for (int x = 0; x < f.z.cols; ++x) {
          if (m[x] > 0 && std::abs(z[x] - med) > lim) {
            m[x] = 0;
            z[x] = 0;
            ++removed;
          }
        }
      }
      if (removed > 0) rep.notes.push_back(std::to_string(removed) + " outliers removed");
    }
  }

  // 5. Gaussian band-pass.
  if ((options.short_cutoff_um > 0 || options.long_cutoff_um > 0)) {
    cv::Mat z = options.short_cutoff_um > 0
                    ? LowPass(f, GaussianSigma(options.short_cutoff_um * um_to_px))
                    : f.z.clone();
    if (options.long_cutoff_um > 0)
      z -= LowPass(f, GaussianSigma(options.long_cutoff_um * um_to_px));
    f.z = z;
    ZeroInvalid(f);
  }
  if (intensity) Normalise(f);

  // 6. Crop to the valid bounding box.
  const cv::Rect box = cv::boundingRect(ToMask8(f.m));
  if (box.area() == 0) throw Error(source + ": nothing is left of the breech face after masking");
  Surface out;
  out.width = box.width;
  out.height = box.height;
  out.dx_m = out.dy_m = px * 1e-6;
  out.values = input.values;
  out.provenance = input.provenance;
  out.warnings = input.warnings;
  out.z.assign(static_cast<size_t>(box.area()), NAN);
  for (int y = 0; y < box.height; ++y) {
    const float* z = f.z.ptr<float>(y + box.y) + box.x;
    const float* m = f.m.ptr<float>(y + box.y) + box.x;
    for (int x = 0; x < box.width; ++x) {
      if (m[x] > 0) out.At(x, y) = z[x];
    }
  }
  for (Circle* c : {&rep.primer, &rep.firing_pin}) {
    if (c->found) {
      c->cx_px -= box.x;
      c->cy_px -= box.y;
    }
  }
  rep.crop_x_px = box.x;
  rep.crop_y_px = box.y;
  rep.valid_share = 1.0 - out.NanShare();
  return out;
}

}  // namespace bien

#include "imaging/land.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace bien {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

double Median(std::vector<double> v) {
  if (v.empty()) return kNaN;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  return v[mid];
}

double Tricube(double u) {
  const double a = std::abs(u);
  if (a >= 1) return 0;
  const double t = 1 - a * a * a;
  return t * t * t;
}

double Bisquare(double u) {
  const double a = std::abs(u);
  if (a >= 1) return 0;
  const double t = 1 - a * a;
  return t * t;
}

// Solves the weighted least-squares quadratic a + b u + c u^2 from its sums;
// returns a (the fit at u = 0). Falls back to the weighted line, then to the
// weighted mean, when the system is (nearly) singular.
double SolveQuadratic(const double s[5], const double t[3]) {
  const double a00 = s[0], a01 = s[1], a02 = s[2], a11 = s[2], a12 = s[3], a22 = s[4];
  const double c00 = a11 * a22 - a12 * a12;
  const double c01 = a02 * a12 - a01 * a22;
  const double c02 = a01 * a12 - a02 * a11;
  const double det = a00 * c00 + a01 * c01 + a02 * c02;
  const double scale = std::abs(a00 * a11 * a22) + 1e-300;
  if (std::abs(det) > 1e-10 * scale) {
    return (c00 * t[0] + c01 * t[1] + c02 * t[2]) / det;
  }
  const double det2 = s[0] * s[2] - s[1] * s[1];
  if (std::abs(det2) > 1e-10 * (std::abs(s[0] * s[2]) + 1e-300)) {
    return (s[2] * t[0] - s[1] * t[1]) / det2;
  }
  return s[0] > 0 ? t[0] / s[0] : 0;
}

// One local quadratic fit at x0 over the q nearest points.
double LocalFit(const std::vector<double>& xs, const std::vector<double>& ys,
                const std::vector<double>& robust, double x0, size_t q, double span) {
  const size_t n = xs.size();
  size_t lo = static_cast<size_t>(std::lower_bound(xs.begin(), xs.end(), x0) - xs.begin());
  size_t hi = lo;
  while (hi - lo < q) {
    if (lo == 0) {
      ++hi;
    } else if (hi == n) {
      --lo;
    } else if (x0 - xs[lo - 1] <= xs[hi] - x0) {
      --lo;
    } else {
      ++hi;
    }
  }
  double d = std::max(x0 - xs[lo], xs[hi - 1] - x0);
  if (span > 1) d *= span;
  d *= 1.000001;  // the farthest of the q points keeps a (tiny) weight
  if (!(d > 0)) return ys[lo];
  double s[5] = {0, 0, 0, 0, 0}, t[3] = {0, 0, 0};
  for (size_t j = lo; j < hi; ++j) {
    const double u = (xs[j] - x0) / d;
    const double w = Tricube(u) * robust[j];
    const double wu = w * u, wu2 = wu * u;
    s[0] += w;
    s[1] += wu;
    s[2] += wu2;
    s[3] += wu2 * u;
    s[4] += wu2 * u * u;
    t[0] += w * ys[j];
    t[1] += wu * ys[j];
    t[2] += wu2 * ys[j];
  }
  if (!(s[0] > 0)) return ys[lo];
  return SolveQuadratic(s, t);
}

// Fits at every stride-th point (and the last), interpolated at all points.
std::vector<double> FitAtPoints(const std::vector<double>& xs, const std::vector<double>& ys,
                                const std::vector<double>& robust, size_t q, double span,
                                int stride) {
  const size_t n = xs.size();
  std::vector<double> fit(n);
  const size_t step = static_cast<size_t>(std::max(1, stride));
  size_t prev = 0;
  fit[0] = LocalFit(xs, ys, robust, xs[0], q, span);
  for (size_t i = step;; i += step) {
    const size_t v = std::min(i, n - 1);
    if (v == prev) break;
    fit[v] = LocalFit(xs, ys, robust, xs[v], q, span);
    for (size_t k = prev + 1; k < v; ++k) {
      const double w = (xs[k] - xs[prev]) / (xs[v] - xs[prev]);
      fit[k] = fit[prev] + w * (fit[v] - fit[prev]);
    }
    prev = v;
    if (v == n - 1) break;
  }
  return fit;
}

// The heights arranged as lines along the bullet (t) of profiles across the land (u).
struct Lines {
  const Surface* s = nullptr;
  bool across_y = true;
  int along = 0;   // number of lines
  int across = 0;  // points per line
  double step_along_um = 0;
  double step_across_um = 0;
  float At(int t, int u) const { return across_y ? s->At(t, u) : s->At(u, t); }
};

// NaN-aware mean of the lines within `half` of t0.
std::vector<double> Crosscut(const Lines& l, int t0, int half) {
  std::vector<double> sum(static_cast<size_t>(l.across), 0.0);
  std::vector<int> count(static_cast<size_t>(l.across), 0);
  for (int t = std::max(0, t0 - half); t <= std::min(l.along - 1, t0 + half); ++t) {
    for (int u = 0; u < l.across; ++u) {
      const float z = l.At(t, u);
      if (std::isfinite(z)) {
        sum[static_cast<size_t>(u)] += z;
        ++count[static_cast<size_t>(u)];
      }
    }
  }
  for (size_t u = 0; u < sum.size(); ++u) {
    sum[u] = count[u] > 0 ? sum[u] / count[u] * 1e6 : kNaN;  // micrometres
  }
  return sum;
}

// First and last finite index; {-1, -1} when none.
std::pair<int, int> ValidRange(const std::vector<double>& c) {
  int first = -1, last = -1;
  for (int i = 0; i < static_cast<int>(c.size()); ++i) {
    if (std::isfinite(c[static_cast<size_t>(i)])) {
      if (first < 0) first = i;
      last = i;
    }
  }
  return {first, last};
}

// The crosscut minus a loess of its middle 70 % (bulletxtrctr land_cc), NaN elsewhere.
std::vector<double> MiddleResidual(const std::vector<double>& c, double span) {
  std::vector<double> r(c.size(), kNaN);
  const auto [first, last] = ValidRange(c);
  if (first < 0) return r;
  const int lo = first + static_cast<int>(0.15 * (last - first));
  const int hi = first + static_cast<int>(0.85 * (last - first));
  std::vector<double> xs, ys;
  for (int u = lo; u <= hi; ++u) {
    if (std::isfinite(c[static_cast<size_t>(u)])) {
      xs.push_back(u);
      ys.push_back(c[static_cast<size_t>(u)]);
    }
  }
  if (xs.size() < 8) return r;
  const std::vector<double> robust(xs.size(), 1.0);
  const size_t q = std::min(xs.size(), static_cast<size_t>(std::ceil(span * xs.size())));
  const int stride = std::max(1, static_cast<int>(xs.size() / 64));
  const std::vector<double> fit = FitAtPoints(xs, ys, robust, std::max<size_t>(q, 3), span, stride);
  for (size_t i = 0; i < xs.size(); ++i) r[static_cast<size_t>(xs[i])] = ys[i] - fit[i];
  return r;
}

// Maximum Pearson correlation of a and b over lags |k| <= max_lag (NaN-aware).
double MaxCorrelation(const std::vector<double>& a, const std::vector<double>& b, int max_lag) {
  double best = -1;
  const int n = static_cast<int>(a.size());
  for (int k = -max_lag; k <= max_lag; ++k) {
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    int m = 0;
    for (int i = std::max(0, -k); i < n && i + k < n; ++i) {
      const double x = a[static_cast<size_t>(i)], y = b[static_cast<size_t>(i + k)];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      sa += x;
      sb += y;
      saa += x * x;
      sbb += y * y;
      sab += x * y;
      ++m;
    }
    if (m < 16) continue;
    const double cov = sab - sa * sb / m;
    const double va = saa - sa * sa / m, vb = sbb - sb * sb / m;
    if (va <= 0 || vb <= 0) continue;
    best = std::max(best, cov / std::sqrt(va * vb));
  }
  return best;
}

// Median |second difference| along x and along y over a sample of the surface.
std::pair<double, double> SecondDifferences(const Surface& s, int lag) {
  std::vector<double> dx, dy;
  const int step = std::max(1, static_cast<int>(std::sqrt(s.Size() / 200000.0)));
  for (int y = lag; y + lag < s.height; y += step) {
    for (int x = lag; x + lag < s.width; x += step) {
      const double c = s.At(x, y);
      if (!std::isfinite(c)) continue;
      const double l = s.At(x - lag, y), r = s.At(x + lag, y);
      const double u = s.At(x, y - lag), d = s.At(x, y + lag);
      if (std::isfinite(l) && std::isfinite(r)) dx.push_back(std::abs(l - 2 * c + r));
      if (std::isfinite(u) && std::isfinite(d)) dy.push_back(std::abs(u - 2 * c + d));
    }
  }
  return {Median(std::move(dx)), Median(std::move(dy))};
}

// Moving mean over 2 * half + 1 points, NaN-aware (NaN where the window has no data).
std::vector<double> MovingMean(const std::vector<double>& v, int half) {
  const int n = static_cast<int>(v.size());
  std::vector<double> sum(static_cast<size_t>(n) + 1, 0.0);
  std::vector<int> cnt(static_cast<size_t>(n) + 1, 0);
  for (int i = 0; i < n; ++i) {
    const bool ok = std::isfinite(v[static_cast<size_t>(i)]);
    sum[static_cast<size_t>(i) + 1] =
        sum[static_cast<size_t>(i)] + (ok ? v[static_cast<size_t>(i)] : 0);
    cnt[static_cast<size_t>(i) + 1] = cnt[static_cast<size_t>(i)] + (ok ? 1 : 0);
  }
  std::vector<double> out(v.size(), kNaN);
  for (int i = 0; i < n; ++i) {
    const int lo = std::max(0, i - half), hi = std::min(n, i + half + 1);
    const int c = cnt[static_cast<size_t>(hi)] - cnt[static_cast<size_t>(lo)];
    if (c > 0) {
      out[static_cast<size_t>(i)] =
          (sum[static_cast<size_t>(hi)] - sum[static_cast<size_t>(lo)]) / c;
    }
  }
  return out;
}

}  // namespace

const char* ToString(LandAxis axis) {
  switch (axis) {
    case LandAxis::kAuto:
      return "auto";
    case LandAxis::kX:
      return "x";
    case LandAxis::kY:
      return "y";
  }
  return "auto";
}

LandAxis ParseLandAxis(const std::string& text) {
  if (text == "auto") return LandAxis::kAuto;
  if (text == "x" || text == "X") return LandAxis::kX;
  if (text == "y" || text == "Y") return LandAxis::kY;
  throw Error("unknown land axis '" + text + "' (expected auto, x or y)");
}

void LandOptions::Check() const {
  auto positive = [](double v, const char* name) {
    if (!(std::isfinite(v) && v > 0)) {
      throw Error(std::string("land options: ") + name + " must be a positive number");
    }
  };
  positive(min_direction_ratio, "min_direction_ratio");
  positive(direction_lag_um, "direction_lag_um");
  if (min_direction_ratio < 1) throw Error("land options: min_direction_ratio must be >= 1");
  if (!(std::isfinite(crosscut_start_um) && crosscut_start_um >= 0)) {
    throw Error("land options: crosscut_start_um must be >= 0");
  }
  positive(crosscut_step_um, "crosscut_step_um");
  if (!(crosscut_min_ccf > -1 && crosscut_min_ccf <= 1)) {
    throw Error("land options: crosscut_min_ccf must lie in (-1, 1]");
  }
  positive(crosscut_band_um, "crosscut_band_um");
  if (!(std::isfinite(crosscut_max_lag_um) && crosscut_max_lag_um >= 0)) {
    throw Error("land options: crosscut_max_lag_um must be >= 0");
  }
  positive(shoulder_rise_um, "shoulder_rise_um");
  positive(shoulder_smooth_um, "shoulder_smooth_um");
  if (!(std::isfinite(shoulder_margin_um) && shoulder_margin_um >= 0)) {
    throw Error("land options: shoulder_margin_um must be >= 0");
  }
  positive(min_land_width_um, "min_land_width_um");
  positive(min_land_length_um, "min_land_length_um");
  if (!(curvature_span > 0 && curvature_span <= 2)) {
    throw Error("land options: curvature_span must lie in (0, 2]");
  }
  if (robust_iterations < 0 || robust_iterations > 20) {
    throw Error("land options: robust_iterations must lie in 0..20");
  }
  if (!(smooth_span > 0 && smooth_span <= 1)) {
    throw Error("land options: smooth_span must lie in (0, 1]");
  }
  positive(signature_spacing_um, "signature_spacing_um");
  positive(max_gap_um, "max_gap_um");
  if (!(min_valid_share > 0 && min_valid_share <= 1)) {
    throw Error("land options: min_valid_share must lie in (0, 1]");
  }
}

std::vector<double> Loess(const std::vector<double>& xs, const std::vector<double>& ys,
                          const std::vector<double>& at, double span, int robust_iterations,
                          int stride) {
  BIEN_CHECK(xs.size() == ys.size());
  BIEN_CHECK(span > 0);
  const size_t n = xs.size();
  if (n == 0) return std::vector<double>(at.size(), kNaN);
  const size_t q = std::clamp<size_t>(static_cast<size_t>(std::ceil(span * static_cast<double>(n))),
                                      std::min<size_t>(n, 3), n);
  std::vector<double> robust(n, 1.0);
  for (int iter = 0; iter < robust_iterations; ++iter) {
    const std::vector<double> fit = FitAtPoints(xs, ys, robust, q, span, stride);
    std::vector<double> abs_res(n);
    for (size_t i = 0; i < n; ++i) abs_res[i] = std::abs(ys[i] - fit[i]);
    const double scale = 6 * Median(abs_res);
    if (!(scale > 0)) break;
    for (size_t i = 0; i < n; ++i) robust[i] = Bisquare((ys[i] - fit[i]) / scale);
  }
  std::vector<double> out(at.size());
  if (stride <= 1) {
    for (size_t i = 0; i < at.size(); ++i) out[i] = LocalFit(xs, ys, robust, at[i], q, span);
    return out;
  }
  const std::vector<double> fit = FitAtPoints(xs, ys, robust, q, span, stride);
  for (size_t i = 0; i < at.size(); ++i) {
    const double x = at[i];
    const size_t k = static_cast<size_t>(std::lower_bound(xs.begin(), xs.end(), x) - xs.begin());
    if (k == 0) {
      out[i] = fit[0];
    } else if (k >= n) {
      out[i] = fit[n - 1];
    } else {
      const double w = (x - xs[k - 1]) / (xs[k] - xs[k - 1]);
      out[i] = fit[k - 1] + w * (fit[k] - fit[k - 1]);
    }
  }
  return out;
}

LandSignature ExtractLandSignature(const Surface& land, const std::string& source,
                                   const LandOptions& options) {
  options.Check();
  if (land.values != SurfaceValues::kHeight) {
    throw Error(source + ": a bullet land signature needs 3D heights, not a 2D image");
  }
  if (land.width < 3 || land.height < 3 || land.z.size() != land.Size() ||
      land.Size() != static_cast<size_t>(land.width) * static_cast<size_t>(land.height)) {
    throw Error(source + ": the land scan is empty or smaller than 3 x 3 points");
  }
  if (!(land.dx_m > 0 && land.dy_m > 0)) {
    throw Error(source + ": the land scan has no lateral spacing");
  }
  if (land.ValidCount() == 0)
    throw Error(source + ": the land scan has no valid heights (all NaN)");

  LandSignature sig;
  // 1. Orientation.
  const double spacing_um = std::min(land.dx_m, land.dy_m) * 1e6;
  const int lag = std::max(1, static_cast<int>(std::lround(options.direction_lag_um / spacing_um)));
  const auto [d2x, d2y] = SecondDifferences(land, lag);
  if (!(d2x > 0 && d2y > 0)) {
    throw Error(source +
                ": too few valid neighbouring points to tell the striation direction "
                "(all NaN or flat)");
  }
  const double ratio_y = d2y / d2x;  // > 1: heights change more along y, so y runs across
  const LandAxis found = ratio_y >= 1 ? LandAxis::kY : LandAxis::kX;
  const double ratio = ratio_y >= 1 ? ratio_y : 1 / ratio_y;
  if (options.across == LandAxis::kAuto) {
    if (ratio < options.min_direction_ratio) {
      throw Error(source + ": no clear striation direction (second differences across / along " +
                  "= " + std::to_string(ratio).substr(0, 4) + ", need " +
                  std::to_string(options.min_direction_ratio).substr(0, 4) +
                  "); is it a bullet land scan?");
    }
    sig.across = found;
  } else {
    if (options.across != found && ratio >= options.min_direction_ratio) {
      throw Error(source + ": the orientation given says " + ToString(options.across) +
                  " runs across the land, but the striations run along " +
                  ToString(options.across) + " (" + ToString(found) +
                  " runs across); check the orientation or use auto");
    }
    sig.across = options.across;
  }
  sig.direction_ratio = ratio;

  Lines l;
  l.s = &land;
  l.across_y = sig.across == LandAxis::kY;
  l.along = l.across_y ? land.width : land.height;
  l.across = l.across_y ? land.height : land.width;
  l.step_along_um = (l.across_y ? land.dx_m : land.dy_m) * 1e6;
  l.step_across_um = (l.across_y ? land.dy_m : land.dx_m) * 1e6;
  const double along_um = l.along * l.step_along_um;
  if (along_um < options.min_land_length_um) {
    throw Error(source + ": the land scan is too short along the bullet (" + Num(along_um) +
                " um, needs " + Num(options.min_land_length_um) + " um)");
  }
  const double across_um = l.across * l.step_across_um;
  if (across_um < options.min_land_width_um) {
    throw Error(source + ": the land scan is too narrow across the land (" + Num(across_um) +
                " um, needs " + Num(options.min_land_width_um) + " um)");
  }

  // 2. Crosscut.
  const int half =
      std::max(0, static_cast<int>(std::lround(options.crosscut_band_um / 2 / l.step_along_um)));
  const int step =
      std::max(1, static_cast<int>(std::lround(options.crosscut_step_um / l.step_along_um)));
  int start = static_cast<int>(std::lround(options.crosscut_start_um / l.step_along_um));
  std::vector<int> candidates;
  for (int t = start; t + half < l.along; t += step) candidates.push_back(t);
  if (candidates.empty()) candidates.push_back(l.along / 2);
  const int max_lag = static_cast<int>(std::lround(options.crosscut_max_lag_um / l.step_across_um));
  int chosen = -1;
  double chosen_ccf = -1;
  int best = candidates.front();
  double best_ccf = -2;
  std::vector<double> prev =
      MiddleResidual(Crosscut(l, candidates[0], half), options.curvature_span);
  for (size_t k = 0; k + 1 < candidates.size(); ++k) {
    std::vector<double> next =
        MiddleResidual(Crosscut(l, candidates[k + 1], half), options.curvature_span);
    const double ccf = MaxCorrelation(prev, next, max_lag);
    if (ccf > best_ccf) {
      best_ccf = ccf;
      best = candidates[k];
    }
    if (ccf >= options.crosscut_min_ccf) {
      chosen = candidates[k];
      chosen_ccf = ccf;
      break;
    }
    prev = std::move(next);
  }
  if (chosen < 0) {
    chosen = best;
    chosen_ccf = best_ccf;
  }
  sig.crosscut_um = chosen * l.step_along_um;
  sig.crosscut_ccf = chosen_ccf;
  const std::vector<double> cut = Crosscut(l, chosen, half);
  const auto [first, last] = ValidRange(cut);
  if (first < 0 || last - first < 8) {
    throw Error(source + ": the crosscut at " + Num(sig.crosscut_um) +
                " um along the bullet has almost no valid heights");
  }

  // 3. Groove shoulders: from the top of the arch outwards, the valley before
  // the first rise of more than shoulder_rise_um.
  const int smooth_half =
      std::max(1, static_cast<int>(std::lround(options.shoulder_smooth_um / 2 / l.step_across_um)));
  const std::vector<double> rs = MovingMean(cut, smooth_half);
  const int margin = static_cast<int>(std::lround(options.shoulder_margin_um / l.step_across_um));
  int top = -1;
  {
    const std::vector<double> wide = MovingMean(cut, 4 * smooth_half);
    const int span_pts = last - first;
    for (int u = first + span_pts / 4; u <= first + 3 * span_pts / 4; ++u) {
      const double v = wide[static_cast<size_t>(u)];
      if (std::isfinite(v) && (top < 0 || v > wide[static_cast<size_t>(top)])) top = u;
    }
    if (top < 0) top = (first + last) / 2;
  }
  // From the edge inwards (as bulletxtrctr's rollapply): the highest point so
  // far is the shoulder's peak, the lowest after it the valley; once the
  // profile climbs shoulder_rise_um above that valley (the arch of the land),
  // the valley is the groove's edge.
  auto find_cut = [&](int dir, bool* found_shoulder) {
    const int edge = dir > 0 ? first : last;
    double peak = -std::numeric_limits<double>::infinity();
    double valley = std::numeric_limits<double>::infinity();
    int valley_u = -1;
    for (int u = edge; dir > 0 ? u <= top : u >= top; u += dir) {
      const double v = rs[static_cast<size_t>(u)];
      if (!std::isfinite(v)) continue;
      if (v > peak) {
        peak = v;
        valley = std::numeric_limits<double>::infinity();
        valley_u = -1;
      } else if (v < valley) {
        valley = v;
        valley_u = u;
      } else if (valley_u >= 0 && v > valley + options.shoulder_rise_um) {
        *found_shoulder = true;
        return valley_u + dir * margin;
      }
    }
    *found_shoulder = false;
    return edge;
  };
  int gl = find_cut(+1, &sig.shoulder_left_found);
  int gr = find_cut(-1, &sig.shoulder_right_found);
  gl = std::max(gl, first);
  gr = std::min(gr, last);
  sig.groove_left_um = gl * l.step_across_um;
  sig.groove_right_um = gr * l.step_across_um;
  sig.land_width_um = (gr - gl) * l.step_across_um;
  if (gr <= gl || sig.land_width_um < options.min_land_width_um) {
    throw Error(source + ": the land is only " + Num(std::max(0.0, sig.land_width_um)) +
                " um wide between the groove shoulders (needs " + Num(options.min_land_width_um) +
                " um); is the scan too short across the land?");
  }

  // 4. Curvature.
  std::vector<double> xs, ys;
  for (int u = gl; u <= gr; ++u) {
    const double v = cut[static_cast<size_t>(u)];
    if (std::isfinite(v)) {
      xs.push_back(u * l.step_across_um);
      ys.push_back(v);
    }
  }
  const double valid_share = static_cast<double>(xs.size()) / (gr - gl + 1);
  if (valid_share < options.min_valid_share) {
    throw Error(source + ": only " + Num(100 * valid_share) +
                " % of the crosscut between the groove shoulders is measured (needs " +
                Num(100 * options.min_valid_share) + " %)");
  }
  const int stride = std::max(1, static_cast<int>(xs.size() / 128));
  const std::vector<double> curve =
      Loess(xs, ys, xs, options.curvature_span, options.robust_iterations, stride);
  std::vector<double> raw(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) raw[i] = ys[i] - curve[i];

  // 5. Signature.
  sig.spacing_um = options.signature_spacing_um;
  const double x0 = gl * l.step_across_um, x1 = gr * l.step_across_um;
  const size_t samples = static_cast<size_t>(std::floor((x1 - x0) / sig.spacing_um)) + 1;
  std::vector<double> at(samples);
  for (size_t i = 0; i < samples; ++i) at[i] = x0 + static_cast<double>(i) * sig.spacing_um;
  const std::vector<double> smooth = Loess(xs, raw, at, options.smooth_span, 0, 1);
  sig.values_um.resize(samples);
  for (size_t i = 0; i < samples; ++i) {
    const size_t k =
        static_cast<size_t>(std::lower_bound(xs.begin(), xs.end(), at[i]) - xs.begin());
    double gap = std::numeric_limits<double>::infinity();
    if (k < xs.size()) gap = xs[k] - at[i];
    if (k > 0) gap = std::min(gap, at[i] - xs[k - 1]);
    sig.values_um[i] = gap <= options.max_gap_um / 2 ? static_cast<float>(smooth[i])
                                                     : std::numeric_limits<float>::quiet_NaN();
  }

  // For pictures: the whole crosscut and the curvature over the kept part.
  sig.profile_spacing_um = l.step_across_um;
  sig.profile_um.assign(cut.begin(), cut.end());
  sig.curvature_um.assign(cut.size(), std::numeric_limits<float>::quiet_NaN());
  for (size_t i = 0; i < xs.size(); ++i) {
    sig.curvature_um[static_cast<size_t>(std::lround(xs[i] / l.step_across_um))] =
        static_cast<float>(curve[i]);
  }
  return sig;
}

}  // namespace bien

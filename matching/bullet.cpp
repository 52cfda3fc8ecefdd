#include "matching/bullet.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>

#include "core/error.h"
#include "core/hash.h"

namespace bien {

struct PreparedLand {
  double spacing_um = 0;
  std::vector<float> v;     // NaN -> 0
  std::vector<float> mask;  // 1 valid, 0 not
  bool all_valid = true;
  std::vector<double> sum, sum2;  // prefix sums of v and v^2 (n + 1)
  struct Stria {
    double pos = 0;  // samples
    int kind = 0;    // +1 peak, -1 valley
  };
  std::vector<Stria> striae;  // by position
};

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double Pearson(double n, double sa, double sb, double saa, double sbb, double sab) {
  const double cov = sab - sa * sb / n;
  const double va = saa - sa * sa / n, vb = sbb - sb * sb / n;
  if (!(va > 0 && vb > 0)) return kNaN;
  return cov / std::sqrt(va * vb);
}

// Dot product with four accumulators (lets the compiler keep several in flight).
double Dot(const float* a, const float* b, int n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
    s4 += a[i + 4] * b[i + 4];
    s5 += a[i + 5] * b[i + 5];
    s6 += a[i + 6] * b[i + 6];
    s7 += a[i + 7] * b[i + 7];
  }
  double s = (double(s0) + s1 + s2 + s3) + (double(s4) + s5 + s6 + s7);
  for (; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

}  // namespace

void LandCompareOptions::Check() const {
  if (!(min_overlap_share > 0 && min_overlap_share <= 1)) {
    throw Error("land comparison options: min_overlap_share must lie in (0, 1]");
  }
  if (!(std::isfinite(striae_smooth_um) && striae_smooth_um >= 0)) {
    throw Error("land comparison options: striae_smooth_um must be >= 0");
  }
  if (!(std::isfinite(stria_tolerance_um) && stria_tolerance_um > 0)) {
    throw Error("land comparison options: stria_tolerance_um must be positive");
  }
  if (!(std::isfinite(cms_full) && cms_full >= 1)) {
    throw Error("land comparison options: cms_full must be >= 1");
  }
}

std::shared_ptr<const PreparedLand> PrepareLand(const LandSignature& signature,
                                                const std::string& label,
                                                const LandCompareOptions& options) {
  options.Check();
  if (!(signature.spacing_um > 0)) throw Error(label + ": the land signature has no spacing");
  auto p = std::make_shared<PreparedLand>();
  p->spacing_um = signature.spacing_um;
  const size_t n = signature.values_um.size();
  p->v.resize(n);
  p->mask.resize(n);
  p->sum.assign(n + 1, 0.0);
  p->sum2.assign(n + 1, 0.0);
  size_t valid = 0;
  for (size_t i = 0; i < n; ++i) {
    const float x = signature.values_um[i];
    const bool ok = std::isfinite(x);
    p->v[i] = ok ? x : 0.0f;
    p->mask[i] = ok ? 1.0f : 0.0f;
    valid += ok;
    p->sum[i + 1] = p->sum[i] + p->v[i];
    p->sum2[i + 1] = p->sum2[i] + double(p->v[i]) * p->v[i];
  }
  p->all_valid = valid == n;
  if (valid < 16) {
    throw Error(label + ": the land signature has only " + std::to_string(valid) +
                " valid samples (needs 16)");
  }
  // Striae: local extrema of the moving mean, over runs of valid samples.
  const int half =
      static_cast<int>(std::lround(options.striae_smooth_um / 2 / signature.spacing_um));
  std::vector<double> smooth(n, kNaN);
  for (size_t i = 0; i < n; ++i) {
    if (!p->mask[i]) continue;
    const size_t lo = i >= static_cast<size_t>(half) ? i - static_cast<size_t>(half) : 0;
    const size_t hi = std::min(n, i + static_cast<size_t>(half) + 1);
    double s = 0;
    int c = 0;
    for (size_t k = lo; k < hi; ++k) {
      if (p->mask[k]) {
        s += p->v[k];
        ++c;
      }
    }
    smooth[i] = s / c;
  }
  for (size_t i = 1; i + 1 < n; ++i) {
    const double l = smooth[i - 1], c = smooth[i], r = smooth[i + 1];
    if (!std::isfinite(l) || !std::isfinite(c) || !std::isfinite(r)) continue;
    int kind = 0;
    if (c > l && c >= r) kind = 1;
    if (c < l && c <= r) kind = -1;
    if (kind == 0) continue;
    // Parabolic refinement of the extremum's position.
    const double denom = l - 2 * c + r;
    const double off = denom != 0 ? std::clamp(0.5 * (l - r) / denom, -0.5, 0.5) : 0.0;
    p->striae.push_back({static_cast<double>(i) + off, kind});
  }
  return p;
}

double SpacingOf(const PreparedLand& land) { return land.spacing_um; }
size_t SamplesOf(const PreparedLand& land) { return land.v.size(); }

LandComparison CompareLands(const PreparedLand& a, const PreparedLand& b,
                            const LandCompareOptions& options) {
  if (std::abs(a.spacing_um - b.spacing_um) > 1e-9 * a.spacing_um) {
    throw Error("land signatures sampled at different spacings cannot be compared (" +
                std::to_string(a.spacing_um) + " and " + std::to_string(b.spacing_um) + " um)");
  }
  LandComparison r;
  const int na = static_cast<int>(a.v.size()), nb = static_cast<int>(b.v.size());
  const int min_overlap =
      std::max(16, static_cast<int>(std::ceil(options.min_overlap_share * std::min(na, nb))));
  double best = -2;
  int best_lag = 0;
  // a[i] faces b[i + k]; overlap i in [max(0, -k), min(na, nb - k)).
  for (int k = -(na - min_overlap); k <= nb - min_overlap; ++k) {
    const int lo = std::max(0, -k), hi = std::min(na, nb - k);
    const int len = hi - lo;
    if (len < min_overlap) continue;
    double ccf;
    if (a.all_valid && b.all_valid) {
      const double sa = a.sum[hi] - a.sum[lo], saa = a.sum2[hi] - a.sum2[lo];
      const double sb = b.sum[hi + k] - b.sum[lo + k], sbb = b.sum2[hi + k] - b.sum2[lo + k];
      const double sab = Dot(a.v.data() + lo, b.v.data() + lo + k, len);
      ccf = Pearson(len, sa, sb, saa, sbb, sab);
    } else {
      double n = 0, sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
      for (int i = lo; i < hi; ++i) {
        const double m = a.mask[i] * b.mask[i + k];
        const double x = a.v[i] * m, y = b.v[i + k] * m;
        n += m;
        sa += x;
        sb += y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
      }
      ccf = n >= min_overlap ? Pearson(n, sa, sb, saa, sbb, sab) : kNaN;
    }
    if (std::isfinite(ccf) && ccf > best) {
      best = ccf;
      best_lag = k;
    }
  }
  if (best < -1.5) return r;  // no lag with enough overlap
  r.valid = true;
  r.ccf = best;
  r.lag = best_lag;
  r.lag_um = best_lag * a.spacing_um;
  const int lo = std::max(0, -best_lag), hi = std::min(na, nb - best_lag);
  r.overlap_um = (hi - lo) * a.spacing_um;

  // Distance.
  double d2 = 0, h2 = 0;
  int m = 0;
  for (int i = lo; i < hi; ++i) {
    if (!a.mask[i] || !b.mask[i + best_lag]) continue;
    const double x = a.v[i], y = b.v[i + best_lag];
    d2 += (x - y) * (x - y);
    h2 += x * x + y * y;
    ++m;
  }
  if (m > 0) {
    r.d_um = std::sqrt(d2 / m);
    r.d_rel = h2 > 0 ? std::sqrt(d2 / h2) : 1.0;  // sqrt(mean d^2 / (mean a^2 + mean b^2))
  }

  // Consecutive matching striae.
  const double tol = options.stria_tolerance_um / a.spacing_um;
  int run = 0;
  for (const PreparedLand::Stria& s : a.striae) {
    if (s.pos < lo || s.pos > hi - 1) continue;
    ++r.striae;
    const double target = s.pos + best_lag;  // position in b
    const auto it =
        std::lower_bound(b.striae.begin(), b.striae.end(), target - tol,
                         [](const PreparedLand::Stria& x, double v) { return x.pos < v; });
    bool match = false;
    for (auto j = it; j != b.striae.end() && j->pos <= target + tol; ++j) {
      if (j->kind == s.kind) {
        match = true;
        break;
      }
    }
    if (match) {
      ++r.matches;
      r.cms = std::max(r.cms, ++run);
    } else {
      run = 0;
    }
  }
  r.score = (std::max(0.0, r.ccf) + std::min(1.0, r.cms / options.cms_full) +
             (1 - std::min(1.0, r.d_rel))) /
            3;
  return r;
}

int PreparedBullet::Present() const {
  int n = 0;
  for (const auto& l : lands) n += l != nullptr;
  return n;
}

BulletComparison CompareBullets(const PreparedBullet& a, const PreparedBullet& b,
                                const LandCompareOptions& options) {
  if (a.Present() == 0) throw Error(a.label + ": the bullet has no usable land");
  if (b.Present() == 0) throw Error(b.label + ": the bullet has no usable land");
  BulletComparison r;
  const int n = static_cast<int>(std::max(a.lands.size(), b.lands.size()));
  r.lands = n;
  auto land = [n](const PreparedBullet& x, int i) -> const PreparedLand* {
    (void)n;
    return i < static_cast<int>(x.lands.size()) ? x.lands[static_cast<size_t>(i)].get() : nullptr;
  };
  std::vector<std::vector<LandComparison>> all(static_cast<size_t>(n),
                                               std::vector<LandComparison>(static_cast<size_t>(n)));
  r.matrix.assign(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), kNaN));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const PreparedLand* la = land(a, i);
      const PreparedLand* lb = land(b, j);
      if (!la || !lb) continue;
      all[i][j] = CompareLands(*la, *lb, options);
      r.matrix[i][j] = all[i][j].score;
    }
  }
  r.phase_sums.assign(static_cast<size_t>(n), 0.0);
  r.phase_means.assign(static_cast<size_t>(n), 0.0);
  int best = -1;
  for (int p = 0; p < n; ++p) {
    int count = 0;
    for (int i = 0; i < n; ++i) {
      const double s = r.matrix[i][(i + p) % n];
      if (std::isfinite(s)) {
        r.phase_sums[p] += s;
        ++count;
      }
    }
    if (count > 0) r.phase_means[p] = r.phase_sums[p] / count;
    if (count > 0 && (best < 0 || r.phase_sums[p] > r.phase_sums[best])) best = p;
  }
  if (best < 0) {
    throw Error(a.label + " and " + b.label +
                ": no alignment of the lands pairs any two scanned lands");
  }
  r.phase = best;
  r.score = r.phase_means[best];
  r.runner_up = 0;
  for (int p = 0; p < n; ++p) {
    if (p != best) r.runner_up = std::max(r.runner_up, r.phase_means[p]);
  }
  for (int i = 0; i < n; ++i) {
    const int j = (i + best) % n;
    if (std::isfinite(r.matrix[i][j])) r.pairs.push_back({i + 1, j + 1, all[i][j]});
  }
  return r;
}

// ---------------------------------------------------------------------------
// Coarse descriptor.

namespace {

std::string KeyNum(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// The first and last frequency bin kept (wavelength = fft_samples * step / k).
std::pair<int, int> BandBins(const BulletDescriptorOptions& o) {
  const double span = o.fft_samples * o.step_um;
  return {static_cast<int>(std::ceil(span / o.max_wavelength_um - 1e-9)),
          static_cast<int>(std::floor(span / o.min_wavelength_um + 1e-9))};
}

}  // namespace

void BulletDescriptorOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("bullet descriptor options: " + what); };
  if (!(std::isfinite(step_um) && step_um > 0)) bad("step_um must be positive");
  if (fft_samples < 64 || fft_samples > 65536) bad("fft_samples must lie in 64..65536");
  if (!(std::isfinite(min_wavelength_um) && min_wavelength_um >= 2 * step_um)) {
    bad("min_wavelength_um must be at least twice step_um (the Nyquist limit)");
  }
  if (!(std::isfinite(max_wavelength_um) && max_wavelength_um > min_wavelength_um)) {
    bad("max_wavelength_um must exceed min_wavelength_um");
  }
  if (smooth_bins < 3 || smooth_bins % 2 == 0) bad("smooth_bins must be odd and at least 3");
  if (!(std::isfinite(taper_um) && taper_um >= 0)) bad("taper_um must be >= 0");
  if (!(std::isfinite(trim_um) && trim_um >= 0)) bad("trim_um must be >= 0");
  if (min_valid_samples < 16) bad("min_valid_samples must be at least 16");
  const auto [lo, hi] = BandBins(*this);
  if (hi - lo + 1 < 2 * smooth_bins) bad("the wavelength band holds too few frequency bins");
}

std::string LandOptionsText(const LandOptions& land) {
  land.Check();
  return "land-v1 across=" + std::string(ToString(land.across)) +
         " dir=" + KeyNum(land.min_direction_ratio) + "/" + KeyNum(land.direction_lag_um) +
         " cc=" + KeyNum(land.crosscut_start_um) + "/" + KeyNum(land.crosscut_step_um) + "/" +
         KeyNum(land.crosscut_min_ccf) + "/" + KeyNum(land.crosscut_band_um) + "/" +
         KeyNum(land.crosscut_max_lag_um) + " sh=" + KeyNum(land.shoulder_rise_um) + "/" +
         KeyNum(land.shoulder_smooth_um) + "/" + KeyNum(land.shoulder_margin_um) +
         " min=" + KeyNum(land.min_land_width_um) + "/" + KeyNum(land.min_land_length_um) +
         " loess=" + KeyNum(land.curvature_span) + "/" + std::to_string(land.robust_iterations) +
         "/" + KeyNum(land.smooth_span) + " sp=" + KeyNum(land.signature_spacing_um) +
         " gap=" + KeyNum(land.max_gap_um) + " valid=" + KeyNum(land.min_valid_share);
}

std::string BulletDescriptorKey(const BulletDescriptorOptions& o, const LandOptions& land) {
  o.Check();
  // The store takes keys of up to 128 characters: the signature's options
  // enter by the first 12 hex digits of the SHA-256 of LandOptionsText.
  return "bld-v1 step=" + KeyNum(o.step_um) + " n=" + std::to_string(o.fft_samples) +
         " wl=" + KeyNum(o.min_wavelength_um) + ".." + KeyNum(o.max_wavelength_um) +
         " smooth=" + std::to_string(o.smooth_bins) + " trim=" + KeyNum(o.trim_um) +
         " taper=" + KeyNum(o.taper_um) + " min=" + std::to_string(o.min_valid_samples) +
         " dim=" + std::to_string(BulletDescriptorDim(o)) +
         " sig=" + Sha256Hex(LandOptionsText(land)).substr(0, 12);
}

int BulletDescriptorDim(const BulletDescriptorOptions& o) {
  o.Check();
  const auto [lo, hi] = BandBins(o);
  return hi - lo + 1;
}

std::vector<float> BulletDescriptor(const LandSignature& signature, const std::string& label,
                                    const BulletDescriptorOptions& o) {
  o.Check();
  if (!(signature.spacing_um > 0) || signature.values_um.empty()) {
    throw Error(label + ": the land signature is empty");
  }
  // 1. Resample every step_um (linear between neighbours; NaN when either is).
  const std::vector<float>& in = signature.values_um;
  const double length_um = signature.spacing_um * static_cast<double>(in.size() - 1);
  const size_t n = static_cast<size_t>(std::floor(length_um / o.step_um)) + 1;
  std::vector<double> x(n, kNaN);
  for (size_t i = 0; i < n; ++i) {
    const double pos = static_cast<double>(i) * o.step_um / signature.spacing_um;
    const size_t j = std::min(static_cast<size_t>(pos), in.size() - 1);
    const double t = pos - static_cast<double>(j);
    if (j + 1 >= in.size() || t < 1e-9) {
      x[i] = in[j];
    } else {
      x[i] = (1 - t) * in[j] + t * in[j + 1];
    }
  }
  int valid = 0;
  double mean = 0;
  for (double v : x) {
    if (std::isfinite(v)) {
      mean += v;
      ++valid;
    }
  }
  if (valid < o.min_valid_samples) {
    throw Error(label + ": the land signature has " + std::to_string(valid) + " valid samples at " +
                KeyNum(o.step_um) + " um, the bullet descriptor needs " +
                std::to_string(o.min_valid_samples));
  }
  mean /= valid;
  for (double& v : x) v = std::isfinite(v) ? v - mean : 0.0;
  {
    const size_t trim = static_cast<size_t>(std::lround(o.trim_um / o.step_um));
    if (2 * trim + static_cast<size_t>(o.min_valid_samples) <= x.size()) {
      x = std::vector<double>(x.begin() + static_cast<std::ptrdiff_t>(trim),
                              x.end() - static_cast<std::ptrdiff_t>(trim));
    }
  }
  // The middle fft_samples when longer than the transform.
  const size_t m = static_cast<size_t>(o.fft_samples);
  if (x.size() > m) {
    const size_t skip = (x.size() - m) / 2;
    x = std::vector<double>(x.begin() + static_cast<std::ptrdiff_t>(skip),
                            x.begin() + static_cast<std::ptrdiff_t>(skip + m));
  }
  const double taper = std::min(o.taper_um / o.step_um, static_cast<double>(x.size()) / 2);
  for (size_t i = 0; i < x.size(); ++i) {
    const double from_edge =
        std::min(static_cast<double>(i), static_cast<double>(x.size() - 1 - i));
    if (from_edge < taper) {
      x[i] *= 0.5 * (1 - std::cos(std::numbers::pi * from_edge / taper));
    }
  }
  // 2. Power at the band's bins (a direct transform: ~200 bins of ~500 samples).
  const auto [lo, hi] = BandBins(o);
  const int bins = hi - lo + 1;
  std::vector<double> logp(static_cast<size_t>(bins));
  double total = 0;
  for (double v : x) total += v * v;
  if (!(total > 0)) throw Error(label + ": the land signature is flat (no striae)");
  const double floor_power = 1e-12 * total;
  for (int b = 0; b < bins; ++b) {
    const double w = 2 * std::numbers::pi * (lo + b) / static_cast<double>(m);
    // Rotating phasor, re-anchored every 64 samples against drift.
    double re = 0, im = 0;
    for (size_t i0 = 0; i0 < x.size(); i0 += 64) {
      double c = std::cos(w * static_cast<double>(i0)), s = -std::sin(w * static_cast<double>(i0));
      const double cw = std::cos(w), sw = -std::sin(w);
      for (size_t i = i0; i < std::min(x.size(), i0 + 64); ++i) {
        re += x[i] * c;
        im += x[i] * s;
        const double c2 = c * cw - s * sw;
        s = c * sw + s * cw;
        c = c2;
      }
    }
    logp[static_cast<size_t>(b)] = std::log(re * re + im * im + floor_power);
  }
  // 3. Minus its moving mean (the window shrinks symmetrically at the band's ends).
  const int half = o.smooth_bins / 2;
  std::vector<float> out(static_cast<size_t>(bins));
  for (int b = 0; b < bins; ++b) {
    const int h = std::min({half, b, bins - 1 - b});
    double s = 0;
    int count = 0;
    for (int k = b - std::max(h, 1); k <= b + std::max(h, 1); ++k) {
      if (k < 0 || k >= bins) continue;
      s += logp[static_cast<size_t>(k)];
      ++count;
    }
    out[static_cast<size_t>(b)] = static_cast<float>(logp[static_cast<size_t>(b)] - s / count);
  }
  // 4. L2 normalised.
  double norm = 0;
  for (float v : out) norm += double(v) * v;
  norm = std::sqrt(norm);
  if (!(norm > 0)) throw Error(label + ": the land signature gives a flat spectrum");
  for (float& v : out) v = static_cast<float>(v / norm);
  return out;
}

}  // namespace bien

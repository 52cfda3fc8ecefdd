#include "imaging/synth_land.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/mix.h"

namespace bien {
namespace {

constexpr uint64_t kLandHashStart = 0x510e527fade682d1ull;

// mt19937_64 is bit-exact by the standard; the normals are derived here.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }
  double Normal() {
    const double u1 = 1 - Uniform(), u2 = Uniform();
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * 3.14159265358979323846 * u2);
  }

 private:
  std::mt19937_64 gen_;
};

// Smoothed white noise of `n` samples, unit RMS.
std::vector<double> Striae(Rng& rng, size_t n, double sigma_px) {
  std::vector<double> white(n);
  for (double& w : white) w = rng.Normal();
  const int half = std::max(1, static_cast<int>(std::ceil(3 * sigma_px)));
  std::vector<double> kernel(static_cast<size_t>(2 * half + 1));
  for (int k = -half; k <= half; ++k) {
    kernel[static_cast<size_t>(k + half)] = std::exp(-0.5 * k * k / (sigma_px * sigma_px));
  }
  std::vector<double> out(n, 0.0);
  double ss = 0;
  for (size_t i = 0; i < n; ++i) {
    double s = 0, w = 0;
    for (int k = -half; k <= half; ++k) {
      const long j = static_cast<long>(i) + k;
      if (j < 0 || j >= static_cast<long>(n)) continue;
      s += kernel[static_cast<size_t>(k + half)] * white[static_cast<size_t>(j)];
      w += kernel[static_cast<size_t>(k + half)];
    }
    out[i] = s / w;
    ss += out[i] * out[i];
  }
  const double rms = std::sqrt(ss / static_cast<double>(n));
  for (double& v : out) v /= rms;
  return out;
}

}  // namespace

void SynthLandOptions::Check() const {
  auto positive = [](double v, const char* name) {
    if (!(std::isfinite(v) && v > 0)) {
      throw Error(std::string("synthetic land options: ") + name + " must be positive");
    }
  };
  positive(pixel_um, "pixel_um");
  positive(along_um, "along_um");
  positive(across_um, "across_um");
  positive(land_width_um, "land_width_um");
  positive(radius_um, "radius_um");
  positive(wall_um, "wall_um");
  positive(striae_width_um, "striae_width_um");
  if (!(groove_depth_um >= 0 && striae_um >= 0 && noise_um >= 0 && max_shift_um >= 0)) {
    throw Error("synthetic land options: depths, heights, noise and shift must be >= 0");
  }
  if (!(transfer >= 0 && transfer <= 1)) {
    throw Error("synthetic land options: transfer must lie in [0, 1]");
  }
  if (land_width_um + 2 * max_shift_um > across_um) {
    throw Error("synthetic land options: the land and its shift must fit across the scan");
  }
  if (along_um / pixel_um > 20000 || across_um / pixel_um > 20000) {
    throw Error("synthetic land options: more than 20000 points on a side");
  }
}

Surface MakeSynthLand(const SynthLandOptions& o, int barrel, int land, int shot) {
  o.Check();
  const int along = std::max(3, static_cast<int>(std::lround(o.along_um / o.pixel_um)));
  const int across = std::max(3, static_cast<int>(std::lround(o.across_um / o.pixel_um)));
  // The land's striae, in land coordinates (one sample per pixel, with room for the shift).
  Rng land_rng(
      HashOf(kLandHashStart, {o.seed, static_cast<uint64_t>(barrel), static_cast<uint64_t>(land)}));
  const size_t n = static_cast<size_t>(across) * 2;
  const std::vector<double> land_striae = Striae(land_rng, n, o.striae_width_um / o.pixel_um);
  Rng shot_rng(
      HashOf(kLandHashStart, {o.seed, static_cast<uint64_t>(barrel), static_cast<uint64_t>(land),
                              static_cast<uint64_t>(shot), 1}));
  const std::vector<double> own = Striae(shot_rng, n, o.striae_width_um / o.pixel_um);
  const double shift_um = (2 * shot_rng.Uniform() - 1) * o.max_shift_um;
  const double a = std::sqrt(o.transfer), b = std::sqrt(1 - o.transfer);

  const double centre = o.across_um / 2 + shift_um;
  const double g0 = centre - o.land_width_um / 2, g1 = centre + o.land_width_um / 2;
  std::vector<double> profile(static_cast<size_t>(across));
  for (int u = 0; u < across; ++u) {
    const double x = u * o.pixel_um;
    const double d = x - o.across_um / 2;
    double z = std::sqrt(std::max(0.0, o.radius_um * o.radius_um - d * d)) - o.radius_um;
    if (x < g0) z += o.groove_depth_um * std::min(1.0, (g0 - x) / o.wall_um);
    if (x > g1) z += o.groove_depth_um * std::min(1.0, (x - g1) / o.wall_um);
    // Striae in land coordinates: the same mark sits at the same place on the land.
    const long k = std::lround((x - g0) / o.pixel_um) + across / 2;
    const size_t kk = static_cast<size_t>(std::clamp<long>(k, 0, static_cast<long>(n) - 1));
    z += o.striae_um * (a * land_striae[kk] + b * own[kk]);
    profile[static_cast<size_t>(u)] = z;
  }

  Surface s;
  s.width = o.across_y ? along : across;
  s.height = o.across_y ? across : along;
  s.dx_m = s.dy_m = o.pixel_um * 1e-6;
  s.z.resize(static_cast<size_t>(s.width) * s.height);
  const int nan_edge = static_cast<int>(shot_rng.Uniform() * 40);
  for (int t = 0; t < along; ++t) {
    for (int u = 0; u < across; ++u) {
      double z = profile[static_cast<size_t>(u)] + o.noise_um * shot_rng.Normal();
      if (u < nan_edge || shot_rng.Uniform() < 0.01) z = std::numeric_limits<double>::quiet_NaN();
      const float v = static_cast<float>(z * 1e-6);
      if (o.across_y) {
        s.At(t, u) = v;
      } else {
        s.At(u, t) = v;
      }
    }
  }
  s.provenance.creator = "bien synthetic land";
  return s;
}

}  // namespace bien

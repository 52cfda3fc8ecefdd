#include "exchange/fine_features.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace bien::exchange {

FineFeatures QuantiseSurface(const Surface& s) {
  if (s.width < kMinFineSide || s.height < kMinFineSide || s.width > kMaxFineSide ||
      s.height > kMaxFineSide) {
    throw Error("fine features: the surface is " + std::to_string(s.width) + " x " +
                std::to_string(s.height) + " points (each side must be " +
                std::to_string(kMinFineSide) + ".." + std::to_string(kMaxFineSide) + ")");
  }
  if (!(s.dx_m > 0) || std::abs(s.dx_m - s.dy_m) > 1e-3 * s.dx_m) {
    throw Error("fine features: the surface needs square pixels");
  }
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  for (float v : s.z) {
    if (std::isfinite(v)) {
      lo = std::min<double>(lo, v);
      hi = std::max<double>(hi, v);
    }
  }
  if (!(lo <= hi)) throw Error("fine features: the surface has no valid point");
  FineFeatures f;
  f.width = s.width;
  f.height = s.height;
  f.pixel_um = s.dx_m * 1e6;
  // Quanta -32767..32767 span [lo, hi]; -32768 is "no data".
  const double span = std::max(hi - lo, 1e-12);
  f.z_scale_m = span / 65534.0;
  f.z_offset_m = (lo + hi) / 2;
  f.z.resize(s.z.size());
  for (size_t i = 0; i < s.z.size(); ++i) {
    const float v = s.z[i];
    if (!std::isfinite(v)) {
      f.z[i] = FineFeatures::kNoData;
      continue;
    }
    const double q = std::round((v - f.z_offset_m) / f.z_scale_m);
    f.z[i] = static_cast<int16_t>(std::clamp(q, -32767.0, 32767.0));
  }
  return f;
}

Surface ToSurface(const FineFeatures& f) {
  Surface s;
  s.width = f.width;
  s.height = f.height;
  s.dx_m = s.dy_m = f.pixel_um * 1e-6;
  s.z.resize(f.z.size());
  for (size_t i = 0; i < f.z.size(); ++i) {
    s.z[i] = f.z[i] == FineFeatures::kNoData
                 ? std::numeric_limits<float>::quiet_NaN()
                 : static_cast<float>(f.z_offset_m + f.z_scale_m * f.z[i]);
  }
  return s;
}

}  // namespace bien::exchange

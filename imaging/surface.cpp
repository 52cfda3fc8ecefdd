#include "imaging/surface.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/error.h"

namespace bien {

namespace {

std::string Format(const char* fmt, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

// "190 mm", "3.2 µm", "8 m": a length in the unit that reads best.
std::string HumanLength(double metres) {
  if (!std::isfinite(metres)) return Format("%g m", metres);
  const double a = std::fabs(metres);
  if (a >= 1) return Format("%.3g m", metres);
  if (a >= 1e-3) return Format("%.3g mm", metres * 1e3);
  if (a >= 1e-6) return Format("%.3g µm", metres * 1e6);
  return Format("%.3g nm", metres * 1e9);
}

}  // namespace

size_t Surface::ValidCount() const {
  return static_cast<size_t>(
      std::count_if(z.begin(), z.end(), [](float v) { return !std::isnan(v); }));
}

double Surface::NanShare() const {
  if (z.empty()) return 1.0;
  return 1.0 - static_cast<double>(ValidCount()) / static_cast<double>(z.size());
}

SurfaceStats ComputeStats(const Surface& surface) {
  SurfaceStats stats;
  double sum = 0;
  double lo = INFINITY;
  double hi = -INFINITY;
  for (float v : surface.z) {
    if (std::isnan(v)) continue;
    ++stats.valid;
    sum += v;
    lo = std::min(lo, static_cast<double>(v));
    hi = std::max(hi, static_cast<double>(v));
  }
  stats.nan_share = surface.z.empty() ? 1.0
                                      : 1.0 - static_cast<double>(stats.valid) /
                                                  static_cast<double>(surface.z.size());
  if (stats.valid == 0) return stats;
  stats.min = lo;
  stats.max = hi;
  stats.mean = sum / static_cast<double>(stats.valid);
  double ss = 0;
  for (float v : surface.z) {
    if (std::isnan(v)) continue;
    const double d = v - stats.mean;
    ss += d * d;
  }
  stats.stddev = std::sqrt(ss / static_cast<double>(stats.valid));
  return stats;
}

void SurfaceLimits::Check() const {
  if (!(max_nan_share >= 0 && max_nan_share <= 1)) {
    throw Error("invalid surface limits: max_nan_share must be within 0..1");
  }
  if (!(std::isfinite(min_spacing_m) && min_spacing_m > 0 && std::isfinite(max_spacing_m) &&
        max_spacing_m >= min_spacing_m)) {
    throw Error("invalid surface limits: spacing bounds must be positive, finite and ordered");
  }
  if (!(max_height_span_m > 0)) {
    throw Error("invalid surface limits: max_height_span_m must be positive");
  }
  if (min_points_per_side < 1) {
    throw Error("invalid surface limits: min_points_per_side must be at least 1");
  }
}

void ValidateSurface(const Surface& surface, const std::string& source,
                     const SurfaceLimits& limits) {
  limits.Check();
  if (surface.width < 0 || surface.height < 0 ||
      surface.z.size() !=
          static_cast<size_t>(surface.width) * static_cast<size_t>(surface.height)) {
    throw Error(source + ": inconsistent surface (" + std::to_string(surface.width) + " x " +
                std::to_string(surface.height) + " grid but " + std::to_string(surface.z.size()) +
                " values)");
  }
  if (surface.width < limits.min_points_per_side || surface.height < limits.min_points_per_side) {
    throw Error(source + ": too small (" + std::to_string(surface.width) + " x " +
                std::to_string(surface.height) + " points; at least " +
                std::to_string(limits.min_points_per_side) + " per side needed)");
  }
  for (const auto& [name, spacing] : {std::pair{"x", surface.dx_m}, std::pair{"y", surface.dy_m}}) {
    if (!(std::isfinite(spacing) && spacing >= limits.min_spacing_m &&
          spacing <= limits.max_spacing_m)) {
      throw Error(source + ": lateral spacing along " + name + " is " + HumanLength(spacing) +
                  ", outside the accepted " + HumanLength(limits.min_spacing_m) + " to " +
                  HumanLength(limits.max_spacing_m));
    }
  }
  const SurfaceStats stats = ComputeStats(surface);
  if (stats.valid == 0) throw Error(source + ": all points are NaN");
  if (stats.nan_share > limits.max_nan_share) {
    throw Error(source + ": only " + Format("%.3g", 100.0 * (1.0 - stats.nan_share)) +
                " % of the points are valid (at least " +
                Format("%.3g", 100.0 * (1.0 - limits.max_nan_share)) + " % needed)");
  }
  if (surface.values == SurfaceValues::kHeight) {
    const double span = stats.max - stats.min;
    if (!(span <= limits.max_height_span_m)) {
      throw Error(source + ": heights span " + HumanLength(span) +
                  "; the file's z values are probably not in metres (at most " +
                  HumanLength(limits.max_height_span_m) +
                  " expected; state the height unit, mm or um, if the file uses another)");
    }
  }
}

}  // namespace bien

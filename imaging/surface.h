// The Surface: one measured topography (or a 2D image treated as one).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bien {

enum class SurfaceValues {
  kHeight,     // z in metres
  kIntensity,  // a 2D image: grey level scaled to [0, 1]; no physical unit
};

// Who measured what, as the file states it. Empty when the file does not say.
struct Provenance {
  std::string instrument;  // manufacturer, model, serial, version joined by " / "
  std::string date;        // as written (ISO 8601 in X3P Record2)
  std::string creator;
  std::string comment;
};

// An X3P annotation mask (ISO 25178-72): an RGB raster the size of the surface,
// with a background colour and named annotation colours.
struct SurfaceMask {
  int width = 0;
  int height = 0;
  std::vector<uint32_t> rgb;  // row-major 0xRRGGBB, width * height
  uint32_t background = 0xcd7f32;
  std::vector<std::pair<uint32_t, std::string>> annotations;  // colour, label
};

struct Surface {
  int width = 0;   // points along x (columns)
  int height = 0;  // points along y (rows)
  // Row-major, width * height values; NaN = not measured or outside the region.
  std::vector<float> z;
  double dx_m = 0;  // lateral spacing along x, metres
  double dy_m = 0;  // lateral spacing along y, metres
  SurfaceValues values = SurfaceValues::kHeight;
  Provenance provenance;
  std::optional<SurfaceMask> mask;
  // Non-fatal findings while reading (e.g. "main.xml checksum does not match").
  std::vector<std::string> warnings;

  float At(int x, int y) const { return z[static_cast<size_t>(y) * width + x]; }
  float& At(int x, int y) { return z[static_cast<size_t>(y) * width + x]; }
  size_t Size() const { return z.size(); }
  size_t ValidCount() const;
  double NanShare() const;  // 0..1; 1 for an empty surface
};

// Summary statistics over the valid points.
struct SurfaceStats {
  size_t valid = 0;
  double nan_share = 1;
  double min = NAN;
  double max = NAN;
  double mean = NAN;
  double stddev = NAN;
};
SurfaceStats ComputeStats(const Surface& surface);

// Limits on what a scan may look like before it is accepted into a store.
struct SurfaceLimits {
  double max_nan_share = 0.995;     // a scan with less than 0.5 % valid points is refused
  double min_spacing_m = 1e-9;      // 1 nm
  double max_spacing_m = 1e-3;      // 1 mm: coarser is not a toolmark scan
  double max_height_span_m = 5e-3;  // 5 mm: larger means wrong z units (e.g. micrometres)
  int min_points_per_side = 2;      // comparisons set their own, larger minimum
  void Check() const;
};

// Throws bien::Error naming `source` and the problem when the surface breaks a limit.
void ValidateSurface(const Surface& surface, const std::string& source,
                     const SurfaceLimits& limits = {});

}  // namespace bien

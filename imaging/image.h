// 2D images (PNG, TIFF, JPEG; 8 or 16 bit; grey or colour) as intensity surfaces.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>

#include "imaging/surface.h"

namespace bien {

struct ImageReadOptions {
  double pixel_size_um = 0;  // required: the user states the pixel size (> 0)
  int64_t max_points = 400'000'000;
  void Check() const;
};

// Colour is converted to grey (ITU-R BT.601 weights); values scaled to [0, 1]
// by the bit depth. values = SurfaceValues::kIntensity. Throws bien::Error
// naming `source` for an empty, unreadable or unsupported image.
Surface ReadImage(const std::filesystem::path& path, const ImageReadOptions& options);
Surface ReadImageFromMemory(std::span<const std::byte> bytes, const std::string& source,
                            const ImageReadOptions& options);

}  // namespace bien

// One entry point for any scan file: picks the reader by content, not by name.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include "imaging/image.h"
#include "imaging/x3p.h"

namespace bien {

enum class ScanFormat { kX3p, kPng, kTiff, kJpeg, kUnknown };

const char* ToString(ScanFormat format);

// From the first bytes (zip magic for X3P, PNG/TIFF/JPEG signatures).
ScanFormat DetectFormat(std::span<const std::byte> head);

struct ScanReadOptions {
  X3pReadOptions x3p;
  std::optional<double> pixel_size_um;  // needed for images
};

// Reads any supported scan. Throws bien::Error naming `source`: unknown format,
// an image without a pixel size, or the reader's own errors.
Surface ReadScanFromMemory(std::span<const std::byte> bytes, const std::string& source,
                           const ScanReadOptions& options, ScanFormat* format_out = nullptr);

}  // namespace bien

#include "imaging/surface_io.h"

#include <cstring>

#include "core/error.h"

namespace bien {

namespace {

bool StartsWith(std::span<const std::byte> head, std::initializer_list<unsigned char> magic) {
  if (head.size() < magic.size()) return false;
  size_t i = 0;
  for (unsigned char m : magic) {
    if (std::to_integer<unsigned char>(head[i++]) != m) return false;
  }
  return true;
}

}  // namespace

const char* ToString(ScanFormat format) {
  switch (format) {
    case ScanFormat::kX3p:
      return "x3p";
    case ScanFormat::kPng:
      return "png";
    case ScanFormat::kTiff:
      return "tiff";
    case ScanFormat::kJpeg:
      return "jpeg";
    case ScanFormat::kUnknown:
      break;
  }
  return "unknown";
}

ScanFormat DetectFormat(std::span<const std::byte> head) {
  if (StartsWith(head, {'P', 'K', 0x03, 0x04}) || StartsWith(head, {'P', 'K', 0x05, 0x06})) {
    return ScanFormat::kX3p;
  }
  if (StartsWith(head, {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'})) return ScanFormat::kPng;
  if (StartsWith(head, {'I', 'I', '*', 0x00}) || StartsWith(head, {'M', 'M', 0x00, '*'})) {
    return ScanFormat::kTiff;
  }
  if (StartsWith(head, {0xff, 0xd8, 0xff})) return ScanFormat::kJpeg;
  return ScanFormat::kUnknown;
}

Surface ReadScanFromMemory(std::span<const std::byte> bytes, const std::string& source,
                           const ScanReadOptions& options, ScanFormat* format_out) {
  if (bytes.empty()) throw Error(source + ": empty file");
  const ScanFormat format = DetectFormat(bytes);
  if (format_out != nullptr) *format_out = format;
  switch (format) {
    case ScanFormat::kX3p:
      return ReadX3pFromMemory(bytes, source, options.x3p);
    case ScanFormat::kPng:
    case ScanFormat::kTiff:
    case ScanFormat::kJpeg: {
      if (!options.pixel_size_um) {
        throw Error(source + ": a 2D image needs its pixel size (--pixel-size-um)");
      }
      ImageReadOptions image_options;
      image_options.pixel_size_um = *options.pixel_size_um;
      image_options.max_points = options.x3p.max_points;
      return ReadImageFromMemory(bytes, source, image_options);
    }
    case ScanFormat::kUnknown:
      break;
  }
  throw Error(source + ": unrecognised file format (expected X3P, PNG, TIFF or JPEG)");
}

}  // namespace bien

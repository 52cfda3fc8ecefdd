#include "imaging/image.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace bien {

namespace {

uint32_t BigEndian32(std::span<const std::byte> b, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | std::to_integer<uint8_t>(b[at + i]);
  return v;
}

void CheckPoints(int64_t width, int64_t height, const std::string& source,
                 const ImageReadOptions& options) {
  if (width > 0 && height > 0 && width > options.max_points / height) {
    throw Error(source + ": image of " + std::to_string(width) + " x " + std::to_string(height) +
                " pixels exceeds the limit of " + std::to_string(options.max_points) + " points");
  }
}

}  // namespace

void ImageReadOptions::Check() const {
  if (!(std::isfinite(pixel_size_um) && pixel_size_um > 0)) {
    throw Error("the pixel size of a 2D image must be a positive number of micrometres (got " +
                std::to_string(pixel_size_um) + ")");
  }
  if (max_points <= 0) throw Error("image read options: max_points must be positive");
}

Surface ReadImageFromMemory(std::span<const std::byte> bytes, const std::string& source,
                            const ImageReadOptions& options) {
  try {
    options.Check();
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  if (bytes.empty()) throw Error(source + ": not a readable image (empty or corrupt)");
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw Error(source + ": image file too large (" + std::to_string(bytes.size()) + " bytes)");
  }
  // PNG states its size in the header: refuse a giant before decoding it.
  static constexpr unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 24 && std::memcmp(bytes.data(), kPng, 8) == 0 &&
      std::memcmp(bytes.data() + 12, "IHDR", 4) == 0) {
    CheckPoints(BigEndian32(bytes, 16), BigEndian32(bytes, 20), source, options);
  }

  cv::Mat image;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8U,
                         const_cast<std::byte*>(bytes.data()));
    image = cv::imdecode(buffer, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR);
  } catch (const cv::Exception&) {
    image.release();
  }
  if (image.empty()) throw Error(source + ": not a readable image (empty or corrupt)");
  CheckPoints(image.cols, image.rows, source, options);

  cv::Mat scaled;
  switch (image.depth()) {
    case CV_8U:
      image.convertTo(scaled, CV_32F, 1.0 / 255.0);
      break;
    case CV_16U:
      image.convertTo(scaled, CV_32F, 1.0 / 65535.0);
      break;
    case CV_32F:
      scaled = image;
      break;
    case CV_64F:
      image.convertTo(scaled, CV_32F);
      break;
    default:
      throw Error(source + ": unsupported pixel type (expected 8 or 16 bit integer, or float)");
  }
  cv::Mat grey;
  switch (scaled.channels()) {
    case 1:
      grey = scaled;
      break;
    case 3:
      cv::cvtColor(scaled, grey, cv::COLOR_BGR2GRAY);
      break;
    case 4:
      cv::cvtColor(scaled, grey, cv::COLOR_BGRA2GRAY);
      break;
    default:
      throw Error(source + ": unsupported image with " + std::to_string(scaled.channels()) +
                  " channels (expected grey, RGB or RGBA)");
  }

  Surface surface;
  surface.width = grey.cols;
  surface.height = grey.rows;
  surface.values = SurfaceValues::kIntensity;
  surface.dx_m = surface.dy_m = options.pixel_size_um * 1e-6;
  surface.z.resize(static_cast<size_t>(grey.cols) * grey.rows);
  for (int y = 0; y < grey.rows; ++y) {
    const float* row = grey.ptr<float>(y);
    std::copy(row, row + grey.cols, surface.z.begin() + static_cast<ptrdiff_t>(y) * grey.cols);
  }
  return surface;
}

Surface ReadImage(const std::filesystem::path& path, const ImageReadOptions& options) {
  const std::string source = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw Error(source + ": cannot open (no such file)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(source + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(source + ": cannot read the file");
  return ReadImageFromMemory(std::as_bytes(std::span(chars)), source, options);
}

}  // namespace bien

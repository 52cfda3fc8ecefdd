// 2D images as intensity surfaces, and picking the reader by content.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "imaging/image.h"
#include "imaging/surface_io.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;
using testing::TempDir;
namespace fs = std::filesystem;

ImageReadOptions Pixel(double um) {
  ImageReadOptions o;
  o.pixel_size_um = um;
  return o;
}

std::vector<std::byte> Bytes(const std::string& s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return std::vector<std::byte>(p, p + s.size());
}

// A grey ramp: value (x * 7 + y * 13) mod `levels`.
cv::Mat Ramp(int type, int levels, int w = 40, int h = 30) {
  cv::Mat m(h, w, type);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int v = (x * 7 + y * 13 * 257) % levels;
      if (type == CV_8U) m.at<uint8_t>(y, x) = static_cast<uint8_t>(v);
      if (type == CV_16U) m.at<uint16_t>(y, x) = static_cast<uint16_t>(v);
    }
  }
  return m;
}

TEST(ImageRead, EightBitPng) {
  TempDir dir;
  const cv::Mat m = Ramp(CV_8U, 256);
  const fs::path path = dir / "grey 8.png";
  ASSERT_TRUE(cv::imwrite(path.string(), m));
  const Surface s = ReadImage(path, Pixel(2.5));
  EXPECT_EQ(s.width, 40);
  EXPECT_EQ(s.height, 30);
  EXPECT_EQ(s.values, SurfaceValues::kIntensity);
  EXPECT_DOUBLE_EQ(s.dx_m, 2.5e-6);
  EXPECT_DOUBLE_EQ(s.dy_m, 2.5e-6);
  EXPECT_EQ(s.NanShare(), 0);
  for (int y = 0; y < 30; ++y) {
    for (int x = 0; x < 40; ++x) {
      ASSERT_FLOAT_EQ(s.At(x, y), m.at<uint8_t>(y, x) / 255.0f) << x << "," << y;
    }
  }
}

TEST(ImageRead, SixteenBitPngAndTiff) {
  TempDir dir;
  const cv::Mat m = Ramp(CV_16U, 65536);
  for (const std::string name : {"deep.png", "deep.tif"}) {
    const fs::path path = dir / name;
    ASSERT_TRUE(cv::imwrite(path.string(), m));
    const Surface s = ReadImage(path, Pixel(1));
    ASSERT_EQ(s.width, 40) << name;
    for (int y = 0; y < 30; ++y) {
      for (int x = 0; x < 40; ++x) {
        ASSERT_NEAR(s.At(x, y), m.at<uint16_t>(y, x) / 65535.0, 1e-7) << name;
      }
    }
    // 16-bit precision survives: neighbouring codes stay distinct.
    EXPECT_NE(s.At(1, 0), s.At(0, 0));
  }
}

TEST(ImageRead, FloatTiffIsTakenAsIs) {
  TempDir dir;
  cv::Mat m(10, 12, CV_32F);
  for (int y = 0; y < 10; ++y) {
    for (int x = 0; x < 12; ++x) m.at<float>(y, x) = 0.01f * (x + y) - 0.05f;
  }
  ASSERT_TRUE(cv::imwrite((dir / "f.tif").string(), m));
  const Surface s = ReadImage(dir / "f.tif", Pixel(3));
  EXPECT_EQ(s.At(11, 9), m.at<float>(9, 11));
  EXPECT_EQ(s.At(0, 0), -0.05f);
}

TEST(ImageRead, Jpeg) {
  TempDir dir;
  cv::Mat m(64, 64, CV_8U);
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) m.at<uint8_t>(y, x) = static_cast<uint8_t>(x * 2 + y);
  }
  ASSERT_TRUE(cv::imwrite((dir / "photo.jpg").string(), m, {cv::IMWRITE_JPEG_QUALITY, 95}));
  const Surface s = ReadImage(dir / "photo.jpg", Pixel(4));
  EXPECT_EQ(s.width, 64);
  EXPECT_NEAR(s.At(10, 20), (10 * 2 + 20) / 255.0, 0.03);
  EXPECT_NEAR(s.At(60, 60), (60 * 2 + 60) / 255.0, 0.03);
  ScanFormat format = ScanFormat::kUnknown;
  ScanReadOptions options;
  options.pixel_size_um = 4;
  ReadScanFromMemory(testing::ReadBytes(dir / "photo.jpg"), "photo.jpg", options, &format);
  EXPECT_EQ(format, ScanFormat::kJpeg);
}

TEST(ImageRead, ColourBecomesGreyWithBt601Weights) {
  TempDir dir;
  cv::Mat bgr(2, 3, CV_8UC3);
  bgr.at<cv::Vec3b>(0, 0) = {0, 0, 255};  // red
  bgr.at<cv::Vec3b>(0, 1) = {0, 255, 0};  // green
  bgr.at<cv::Vec3b>(0, 2) = {255, 0, 0};  // blue
  bgr.at<cv::Vec3b>(1, 0) = {255, 255, 255};
  bgr.at<cv::Vec3b>(1, 1) = {0, 0, 0};
  bgr.at<cv::Vec3b>(1, 2) = {10, 100, 200};  // b, g, r
  ASSERT_TRUE(cv::imwrite((dir / "c.png").string(), bgr));
  Surface s = ReadImage(dir / "c.png", Pixel(1));
  EXPECT_NEAR(s.At(0, 0), 0.299, 1e-3);
  EXPECT_NEAR(s.At(1, 0), 0.587, 1e-3);
  EXPECT_NEAR(s.At(2, 0), 0.114, 1e-3);
  EXPECT_NEAR(s.At(0, 1), 1.0, 1e-3);
  EXPECT_NEAR(s.At(1, 1), 0.0, 1e-6);
  EXPECT_NEAR(s.At(2, 1), (0.299 * 200 + 0.587 * 100 + 0.114 * 10) / 255, 1e-3);

  cv::Mat bgra;
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  ASSERT_TRUE(cv::imwrite((dir / "c4.png").string(), bgra));
  s = ReadImage(dir / "c4.png", Pixel(1));
  EXPECT_NEAR(s.At(0, 0), 0.299, 1e-3);
  EXPECT_NEAR(s.At(2, 1), (0.299 * 200 + 0.587 * 100 + 0.114 * 10) / 255, 1e-3);

  cv::Mat deep;
  bgr.convertTo(deep, CV_16UC3, 257);
  ASSERT_TRUE(cv::imwrite((dir / "c16.tif").string(), deep));
  s = ReadImage(dir / "c16.tif", Pixel(1));
  EXPECT_NEAR(s.At(1, 0), 0.587, 1e-3);
}

TEST(ImageRead, EmptyAndGarbageFilesAreRefused) {
  TempDir dir;
  const fs::path empty = dir / "empty.png";
  testing::WriteBytes(empty, {});
  EXPECT_EQ(ErrorOf([&] { ReadImage(empty, Pixel(1)); }),
            empty.string() + ": not a readable image (empty or corrupt)");
  const fs::path garbage = dir / "garbage.png";
  std::vector<std::byte> bytes = Bytes("\x89PNG\r\n\x1a\n");
  for (int i = 0; i < 200; ++i) bytes.push_back(static_cast<std::byte>(i * 37));
  testing::WriteBytes(garbage, bytes);
  EXPECT_EQ(ErrorOf([&] { ReadImage(garbage, Pixel(1)); }),
            garbage.string() + ": not a readable image (empty or corrupt)");
  EXPECT_TRUE(Contains(ErrorOf([&] { ReadImage(dir / "absent.png", Pixel(1)); }),
                       (dir / "absent.png").string() + ": cannot open"));
}

TEST(ImageRead, PixelSizeIsRequiredAndChecked) {
  TempDir dir;
  ASSERT_TRUE(cv::imwrite((dir / "a.png").string(), Ramp(CV_8U, 256)));
  for (double bad : {0.0, -1.0, double{NAN}, double{INFINITY}}) {
    EXPECT_TRUE(Contains(ErrorOf([&] { ReadImage(dir / "a.png", Pixel(bad)); }),
                         (dir / "a.png").string() + ": the pixel size"))
        << bad;
    EXPECT_THROW(Pixel(bad).Check(), Error);
  }
  EXPECT_NO_THROW(Pixel(0.5).Check());
  const std::vector<std::byte> bytes = testing::ReadBytes(dir / "a.png");
  EXPECT_EQ(ErrorOf([&] { ReadScanFromMemory(bytes, "a.png", {}); }),
            "a.png: a 2D image needs its pixel size (--pixel-size-um)");
  ScanReadOptions options;
  options.pixel_size_um = 3.5;
  ScanFormat format = ScanFormat::kUnknown;
  const Surface s = ReadScanFromMemory(bytes, "a.png", options, &format);
  EXPECT_EQ(format, ScanFormat::kPng);
  EXPECT_DOUBLE_EQ(s.dx_m, 3.5e-6);
}

TEST(ImageRead, TooManyPixelsAreRefused) {
  TempDir dir;
  ASSERT_TRUE(cv::imwrite((dir / "a.png").string(), Ramp(CV_8U, 256)));
  ASSERT_TRUE(cv::imwrite((dir / "a.tif").string(), Ramp(CV_8U, 256)));
  ImageReadOptions o = Pixel(1);
  o.max_points = 1199;  // the image has 1200
  for (const char* name : {"a.png", "a.tif"}) {
    EXPECT_TRUE(Contains(ErrorOf([&] { ReadImage(dir / name, o); }),
                         "40 x 30 pixels exceeds the limit of 1199 points"))
        << name;
  }
  o.max_points = 1200;
  EXPECT_NO_THROW(ReadImage(dir / "a.png", o));
}

TEST(ScanFormat, DetectedByContent) {
  auto detect = [](const std::string& s) { return DetectFormat(Bytes(s)); };
  EXPECT_EQ(detect(std::string("PK\x03\x04rest", 8)), ScanFormat::kX3p);
  EXPECT_EQ(detect(std::string("PK\x05\x06", 4)), ScanFormat::kX3p);
  EXPECT_EQ(detect("\x89PNG\r\n\x1a\nIHDR"), ScanFormat::kPng);
  EXPECT_EQ(detect(std::string("II*\0\x08\0\0\0", 8)), ScanFormat::kTiff);
  EXPECT_EQ(detect(std::string("MM\0*\0\0\0\x08", 8)), ScanFormat::kTiff);
  EXPECT_EQ(detect("\xff\xd8\xff\xe0"), ScanFormat::kJpeg);
  EXPECT_EQ(detect("GIF89a"), ScanFormat::kUnknown);
  EXPECT_EQ(detect("PK"), ScanFormat::kUnknown);  // too short to be sure
  EXPECT_EQ(detect(""), ScanFormat::kUnknown);
  EXPECT_STREQ(ToString(ScanFormat::kTiff), "tiff");
  EXPECT_STREQ(ToString(ScanFormat::kUnknown), "unknown");

  EXPECT_EQ(ErrorOf([] { ReadScanFromMemory({}, "nothing.x3p", {}); }), "nothing.x3p: empty file");
  EXPECT_EQ(ErrorOf([] { ReadScanFromMemory(Bytes("GIF89a..."), "scan.gif", {}); }),
            "scan.gif: unrecognised file format (expected X3P, PNG, TIFF or JPEG)");
  // The zip magic alone does not make an X3P.
  EXPECT_TRUE(Contains(
      ErrorOf([] { ReadScanFromMemory(Bytes(std::string("PK\x03\x04xx", 6)), "fake.x3p", {}); }),
      "fake.x3p: not an X3P file"));
}

}  // namespace
}  // namespace bien

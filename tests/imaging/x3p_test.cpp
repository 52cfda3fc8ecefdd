// X3P reading and writing: round trips, every data type, and every way a file
// can be wrong (each error must name the file and the problem).
#include <gtest/gtest.h>
#include <zip.h>

#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "imaging/surface.h"
#include "imaging/surface_io.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;
using testing::TempDir;
namespace fs = std::filesystem;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// ------------------------------------------------------------------ helpers

using Entries = std::map<std::string, std::string>;  // name -> bytes

Entries Unzip(const fs::path& path) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_RDONLY, &err);
  EXPECT_NE(za, nullptr) << path;
  Entries out;
  if (za == nullptr) return out;
  for (zip_int64_t i = 0; i < zip_get_num_entries(za, 0); ++i) {
    zip_stat_t st;
    zip_stat_index(za, static_cast<zip_uint64_t>(i), 0, &st);
    std::string bytes(st.size, '\0');
    zip_file_t* f = zip_fopen_index(za, static_cast<zip_uint64_t>(i), 0);
    if (st.size > 0) zip_fread(f, bytes.data(), st.size);
    zip_fclose(f);
    out[st.name] = bytes;
  }
  zip_discard(za);
  return out;
}

void Zip(const Entries& entries, const fs::path& path) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(za, nullptr);
  for (const auto& [name, bytes] : entries) {
    if (name.ends_with("/")) {
      zip_dir_add(za, name.c_str(), 0);
      continue;
    }
    zip_source_t* src = zip_source_buffer(za, bytes.data(), bytes.size(), 0);
    ASSERT_GE(zip_file_add(za, name.c_str(), src, ZIP_FL_OVERWRITE), 0);
  }
  ASSERT_EQ(zip_close(za), 0);
}

std::string Md5(const std::string& s) { return Md5Hex(std::as_bytes(std::span(s))); }

template <typename T>
std::string LittleEndian(const std::vector<T>& values) {
  static_assert(std::endian::native == std::endian::little);
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// A main.xml with every field a test may want to change.
struct Spec {
  std::string root = "p:ISO5436_2";
  std::string feature = "SUR";
  std::string x_axis = "I";
  std::string cx = "6.25e-06";
  std::string cy = "6.25e-06";
  std::string type = "D";
  std::string cz_increment = "1";
  std::string cz_offset = "0";
  std::string size_x = "4";
  std::string size_y = "3";
  std::string size_z = "1";
  std::string dimension = "MatrixDimension";
  std::string md5;            // empty: no MD5ChecksumPointData
  std::string valid_link;     // empty: no ValidPointsLink
  std::string extra_record3;  // appended inside Record3
};

std::string MainXml(const Spec& s) {
  const bool ns = s.root.find(':') != std::string::npos;
  return std::string("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<") + s.root +
         (ns ? " xmlns:p=\"http://www.opengps.eu/2008/ISO5436_2\"" : "") +
         ">\r\n<Record1><Revision>ISO5436 - 2000</Revision><FeatureType>" + s.feature +
         "</FeatureType><Axes>"
         "<CX><AxisType>" +
         s.x_axis + "</AxisType><DataType>D</DataType><Increment>" + s.cx +
         "</Increment><Offset>0</Offset></CX>"
         "<CY><AxisType>I</AxisType><DataType>D</DataType><Increment>" +
         s.cy +
         "</Increment><Offset>0</Offset></CY>"
         "<CZ><AxisType>A</AxisType><DataType>" +
         s.type + "</DataType><Increment>" + s.cz_increment + "</Increment><Offset>" + s.cz_offset +
         "</Offset></CZ>"
         "</Axes></Record1>\r\n"
         "<Record2><Date>2011-01-24T13:00:00</Date><Creator>Test Creator</Creator>"
         "<Instrument><Manufacturer>NanoFocus</Manufacturer><Model>usurf</Model>"
         "<Serial>not available</Serial><Version>V.6.12.6</Version></Instrument>"
         "<Comment>NA: 0.30</Comment></Record2>\r\n"
         "<Record3><" +
         s.dimension + "><SizeX>" + s.size_x + "</SizeX><SizeY>" + s.size_y + "</SizeY><SizeZ>" +
         s.size_z + "</SizeZ></" + s.dimension +
         ">"
         "<DataLink><PointDataLink>bindata/data.bin</PointDataLink>" +
         (s.md5.empty() ? "" : "<MD5ChecksumPointData>" + s.md5 + "\r\n</MD5ChecksumPointData>") +
         (s.valid_link.empty() ? "" : "<ValidPointsLink>" + s.valid_link + "</ValidPointsLink>") +
         "</DataLink>" + s.extra_record3 + "</Record3>\r\n</" + s.root + ">\r\n";
}

// A 4 x 3 grid of float64 heights.
std::string DoubleData(int n = 12) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back((i - 5) * 1e-6);
  return LittleEndian(v);
}

// Reads a hand-made archive, expecting an error that names the file and `problem`.
void ExpectReadError(const Entries& entries, const std::string& problem,
                     const X3pReadOptions& options = {}) {
  TempDir dir;
  const fs::path path = dir / "bad scan.x3p";
  Zip(entries, path);
  const std::string msg = ErrorOf([&] { ReadX3p(path, options); });
  EXPECT_TRUE(msg.starts_with(path.string() + ": ")) << msg;
  EXPECT_TRUE(Contains(msg, problem));
}

Surface TestSurface(int w = 37, int h = 23) {
  Surface s;
  s.width = w;
  s.height = h;
  s.dx_m = 3.125e-6;
  s.dy_m = 6.25e-6;
  s.z.resize(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      s.At(x, y) = static_cast<float>(std::sin(x * 0.3) * std::cos(y * 0.2) * 2.5e-6 - 1e-7 * x);
    }
  }
  // NaNs, a negative zero and a denormal: all must survive bit for bit.
  s.At(0, 0) = kNan;
  s.At(5 % w, 7 % h) = kNan;
  s.At(w - 1, h - 1) = kNan;
  s.At(3 % w, 3 % h) = -0.0f;
  s.At(4 % w, 4 % h) = std::numeric_limits<float>::denorm_min();
  return s;
}

void ExpectSameZ(const Surface& a, const Surface& b) {
  ASSERT_EQ(a.z.size(), b.z.size());
  EXPECT_EQ(std::memcmp(a.z.data(), b.z.data(), a.z.size() * sizeof(float)), 0)
      << "z values differ bitwise";
}

// ------------------------------------------------------------------ round trips

TEST(X3pWrite, RoundTripIsBitIdenticalWithMaskAndProvenance) {
  TempDir dir;
  Surface s = TestSurface();
  s.provenance = {"NanoFocus / usurf / 1234 / V.6.12.6", "2011-01-24T13:00:00", "Examiner <A&B>",
                  "NA: 0.30, \"quoted\" & more"};
  SurfaceMask mask;
  mask.width = s.width;
  mask.height = s.height;
  mask.rgb.assign(s.z.size(), 0xcd7f32);
  for (int x = 0; x < 10; ++x) mask.rgb[x] = 0x1f376c;
  mask.rgb.back() = 0xffff00;
  mask.annotations = {{0x1f376c, "break-off"}, {0xffff00, "no striae"}};
  s.mask = mask;

  const fs::path path = dir / "scan with spaces (1).x3p";
  WriteX3p(s, path);
  const Surface r = ReadX3p(path);
  EXPECT_EQ(r.width, s.width);
  EXPECT_EQ(r.height, s.height);
  EXPECT_EQ(r.dx_m, s.dx_m);
  EXPECT_EQ(r.dy_m, s.dy_m);
  EXPECT_EQ(r.values, SurfaceValues::kHeight);
  ExpectSameZ(s, r);
  EXPECT_TRUE(std::isnan(r.At(5, 7)));
  EXPECT_EQ(r.provenance.instrument, s.provenance.instrument);
  EXPECT_EQ(r.provenance.date, s.provenance.date);
  EXPECT_EQ(r.provenance.creator, s.provenance.creator);
  EXPECT_EQ(r.provenance.comment, s.provenance.comment);
  ASSERT_TRUE(r.mask.has_value());
  EXPECT_EQ(r.mask->width, s.width);
  EXPECT_EQ(r.mask->height, s.height);
  EXPECT_EQ(r.mask->rgb, mask.rgb);
  EXPECT_EQ(r.mask->background, 0xcd7f32u);
  EXPECT_EQ(r.mask->annotations, mask.annotations);
  EXPECT_TRUE(r.warnings.empty()) << r.warnings.front();

  // Nothing but the file itself is left in the folder (no temporary files).
  int count = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++count;
  EXPECT_EQ(count, 1);

  // Rewriting the read surface gives the same surface again.
  WriteX3p(r, dir / "again.x3p");
  const Surface r2 = ReadX3p(dir / "again.x3p");
  ExpectSameZ(s, r2);
  EXPECT_EQ(r2.provenance.instrument, s.provenance.instrument);
}

TEST(X3pWrite, FileLayoutFollowsTheStandard) {
  TempDir dir;
  Surface s = TestSurface(8, 9);
  X3pWriteOptions options;
  options.default_comment = "written by a test";
  WriteX3p(s, dir / "a.x3p", options);
  Entries e = Unzip(dir / "a.x3p");
  ASSERT_TRUE(e.count("main.xml"));
  ASSERT_TRUE(e.count("md5checksum.hex"));
  ASSERT_TRUE(e.count("bindata/data.bin"));
  EXPECT_FALSE(e.count("bindata/mask.png"));
  const std::string& xml = e["main.xml"];
  EXPECT_EQ(e["md5checksum.hex"], Md5(xml) + " *main.xml\n");
  EXPECT_EQ(e["bindata/data.bin"].size(), 8u * 9u * 4u);
  EXPECT_TRUE(Contains(xml, "<p:ISO5436_2 xmlns:p=\"http://www.opengps.eu/2008/ISO5436_2\""));
  EXPECT_TRUE(Contains(xml, "<Revision>ISO5436 - 2000</Revision>"));
  EXPECT_TRUE(Contains(xml, "<FeatureType>SUR</FeatureType>"));
  EXPECT_TRUE(Contains(xml, "<Increment>3.125e-06</Increment>"));
  EXPECT_TRUE(Contains(xml, "<DataType>F</DataType>"));
  EXPECT_TRUE(Contains(xml, "<SizeX>8</SizeX>"));
  EXPECT_TRUE(Contains(xml, "<SizeY>9</SizeY>"));
  EXPECT_TRUE(Contains(xml, "<MD5ChecksumPointData>" + Md5(e["bindata/data.bin"])));
  EXPECT_TRUE(Contains(xml, "<ChecksumFile>md5checksum.hex</ChecksumFile>"));
  EXPECT_TRUE(Contains(xml, "<Comment>written by a test</Comment>"));
  EXPECT_TRUE(Contains(xml, "<Manufacturer>bien</Manufacturer>"));
  // Without a stated date the writer records when it wrote the file.
  const Surface r = ReadX3p(dir / "a.x3p");
  EXPECT_EQ(r.provenance.date.size(), 20u) << r.provenance.date;
  EXPECT_EQ(r.provenance.instrument, "bien");
  EXPECT_EQ(r.provenance.comment, "written by a test");
  EXPECT_FALSE(r.mask.has_value());
}

TEST(X3pWrite, ReplacesAnExistingFileAndNamesThePathOnFailure) {
  TempDir dir;
  const fs::path path = dir / "s.x3p";
  WriteX3p(TestSurface(9, 9), path);
  WriteX3p(TestSurface(10, 12), path);
  EXPECT_EQ(ReadX3p(path).height, 12);

  const fs::path missing = dir / "no such folder" / "s.x3p";
  const std::string msg = ErrorOf([&] { WriteX3p(TestSurface(), missing); });
  EXPECT_TRUE(msg.starts_with(missing.string() + ": cannot write X3P")) << msg;
  EXPECT_FALSE(fs::exists(missing));

  Surface broken = TestSurface();
  broken.z.pop_back();
  EXPECT_TRUE(Contains(ErrorOf([&] { WriteX3p(broken, path); }), path.string()));
  broken = TestSurface();
  broken.dx_m = 0;
  EXPECT_TRUE(Contains(ErrorOf([&] { WriteX3p(broken, path); }), "spacing"));
}

TEST(X3pRead, ReadsFromMemoryAndThroughFormatDetection) {
  TempDir dir;
  const Surface s = TestSurface();
  WriteX3p(s, dir / "m.x3p");
  const std::vector<std::byte> bytes = testing::ReadBytes(dir / "m.x3p");
  ExpectSameZ(s, ReadX3pFromMemory(bytes, "upload.x3p"));
  ScanFormat format = ScanFormat::kUnknown;
  const Surface r = ReadScanFromMemory(bytes, "upload.x3p", {}, &format);
  EXPECT_EQ(format, ScanFormat::kX3p);
  EXPECT_STREQ(ToString(format), "x3p");
  ExpectSameZ(s, r);
}

// ------------------------------------------------------------------ data types

TEST(X3pRead, ReadsDoubleDataIgnoringTheZIncrement) {
  Spec spec;
  spec.cz_increment = "1e-06";  // as in csafe-logo.x3p: not applied to float data
  const std::string data = DoubleData();
  spec.md5 = Md5(data);
  TempDir dir;
  Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", data}}, dir / "d.x3p");
  const Surface r = ReadX3p(dir / "d.x3p");
  ASSERT_EQ(r.width, 4);
  ASSERT_EQ(r.height, 3);
  EXPECT_EQ(r.dx_m, 6.25e-6);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(r.z[i], static_cast<float>((i - 5) * 1e-6)) << i;
  EXPECT_EQ(r.At(1, 2), static_cast<float>(4e-6));  // x fastest: index 2 * 4 + 1 = 9
  EXPECT_EQ(r.provenance.instrument, "NanoFocus / usurf / V.6.12.6");
  EXPECT_EQ(r.provenance.creator, "Test Creator");
  EXPECT_EQ(r.provenance.date, "2011-01-24T13:00:00");
  EXPECT_EQ(r.provenance.comment, "NA: 0.30");
}

TEST(X3pRead, ReadsFloatData) {
  Spec spec;
  spec.type = "F";
  std::vector<float> v = {1.5e-6f, kNan, -2e-6f, 0, 1, 2, 3, 4, 5, 6, 7, 8};
  TempDir dir;
  Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", LittleEndian(v)}}, dir / "f.x3p");
  const Surface r = ReadX3p(dir / "f.x3p");
  EXPECT_EQ(r.z[0], 1.5e-6f);
  EXPECT_TRUE(std::isnan(r.z[1]));
  EXPECT_EQ(r.z[2], -2e-6f);
  EXPECT_EQ(r.z[11], 8.0f);
  EXPECT_NEAR(r.NanShare(), 1.0 / 12, 1e-12);
}

TEST(X3pRead, ScalesIntegerDataByIncrementAndOffset) {
  TempDir dir;
  for (const std::string type : {"I", "L"}) {
    Spec spec;
    spec.type = type;
    spec.cz_increment = "1e-08";
    spec.cz_offset = "2e-06";
    std::string data;
    if (type == "I") {
      data = LittleEndian(std::vector<int16_t>{0, 1, -1, 32767, -32768, 5, 6, 7, 8, 9, 10, 11});
    } else {
      data = LittleEndian(std::vector<int32_t>{0, 1, -1, 100000, -100000, 5, 6, 7, 8, 9, 10, 11});
    }
    spec.md5 = Md5(data);
    const fs::path path = dir / (type + ".x3p");
    Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", data}}, path);
    const Surface r = ReadX3p(path);
    EXPECT_FLOAT_EQ(r.z[0], 2e-6f) << type;
    EXPECT_FLOAT_EQ(r.z[1], 2.01e-6f) << type;
    EXPECT_FLOAT_EQ(r.z[2], 1.99e-6f) << type;
    EXPECT_FLOAT_EQ(r.z[3], type == "I" ? 2e-6f + 32767e-8f : 2e-6f + 1e-3f) << type;
    EXPECT_FLOAT_EQ(r.z[4], type == "I" ? 2e-6f - 32768e-8f : 2e-6f - 1e-3f) << type;
  }
}

TEST(X3pRead, ValidPointsBitArrayMarksInvalidPointsNan) {
  Spec spec;
  spec.type = "L";
  spec.valid_link = "bindata/valid.bin";
  // 12 points: bit i of byte i / 8, least significant first; 1 = valid.
  // Invalid: 1, 2, 8, 11.
  const std::string bits = {static_cast<char>(0b11111001), static_cast<char>(0b0110)};
  TempDir dir;
  Zip({{"main.xml", MainXml(spec)},
       {"bindata/data.bin", LittleEndian(std::vector<int32_t>(12, 7))},
       {"bindata/valid.bin", bits}},
      dir / "v.x3p");
  const Surface r = ReadX3p(dir / "v.x3p");
  for (int i = 0; i < 12; ++i) {
    const bool invalid = i == 1 || i == 2 || i == 8 || i == 11;
    EXPECT_EQ(std::isnan(r.z[i]), invalid) << i;
    if (!invalid) {
      EXPECT_EQ(r.z[i], 7.0f);
    }
  }
  // A bit array too short for the grid is refused.
  ExpectReadError({{"main.xml", MainXml(spec)},
                   {"bindata/data.bin", LittleEndian(std::vector<int32_t>(12, 7))},
                   {"bindata/valid.bin", bits.substr(0, 1)}},
                  "bindata/valid.bin holds 1 bytes");
}

TEST(X3pRead, PlainRootInASubFolderIgnoringMacJunk) {
  Spec spec;
  spec.root = "ISO5436";
  TempDir dir;
  Zip({{"scan/", ""},
       {"scan/main.xml", MainXml(spec)},
       {"scan/bindata/data.bin", DoubleData()},
       {"scan/bindata/.DS_Store", "junk"},
       {"__MACOSX/scan/main.xml", "not xml at all"},
       {"__MACOSX/._scan", "junk"}},
      dir / "sub.x3p");
  const Surface r = ReadX3p(dir / "sub.x3p");
  EXPECT_EQ(r.width, 4);
  EXPECT_EQ(r.z[9], static_cast<float>(4e-6));

  ExpectReadError({{"a/main.xml", MainXml(spec)},
                   {"a/bindata/data.bin", DoubleData()},
                   {"b/main.xml", MainXml(spec)}},
                  "main.xml in several folders");
}

// ------------------------------------------------------------------ units

TEST(X3pRead, LateralUnits) {
  TempDir dir;
  Spec spec;
  spec.cx = "7.37";  // micrometres, as some instruments write
  spec.cy = "7.37";
  Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}}, dir / "um.x3p");
  Surface r = ReadX3p(dir / "um.x3p");
  EXPECT_DOUBLE_EQ(r.dx_m, 7.37e-6);
  EXPECT_DOUBLE_EQ(r.dy_m, 7.37e-6);

  X3pReadOptions metre;
  metre.xy_unit = LengthUnit::kMetre;
  EXPECT_DOUBLE_EQ(ReadX3p(dir / "um.x3p", metre).dx_m, 7.37);

  spec.cx = spec.cy = "6.25e-06";
  Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}}, dir / "m.x3p");
  EXPECT_DOUBLE_EQ(ReadX3p(dir / "m.x3p").dx_m, 6.25e-6);
  X3pReadOptions micro;
  micro.xy_unit = LengthUnit::kMicrometre;
  EXPECT_DOUBLE_EQ(ReadX3p(dir / "m.x3p", micro).dx_m, 6.25e-12);

  // One axis in micrometres makes both micrometres (one unit per file).
  spec.cx = "1.5625";
  spec.cy = "1e-3";
  Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}}, dir / "mixed.x3p");
  r = ReadX3p(dir / "mixed.x3p");
  EXPECT_DOUBLE_EQ(r.dx_m, 1.5625e-6);
  EXPECT_DOUBLE_EQ(r.dy_m, 1e-9);

  for (const std::string bad : {"0", "-6.25e-06", "nan", "inf", "abc"}) {
    Spec b;
    b.cx = bad;
    ExpectReadError({{"main.xml", MainXml(b)}, {"bindata/data.bin", DoubleData()}}, "CX increment");
  }
}

// ------------------------------------------------------------------ bad files

TEST(X3pRead, TruncatedZip) {
  TempDir dir;
  WriteX3p(TestSurface(), dir / "full.x3p");
  std::vector<std::byte> bytes = testing::ReadBytes(dir / "full.x3p");
  bytes.resize(bytes.size() / 2);
  const fs::path path = dir / "cut short.x3p";
  testing::WriteBytes(path, bytes);
  const std::string msg = ErrorOf([&] { ReadX3p(path); });
  EXPECT_TRUE(msg.starts_with(path.string() + ": not an X3P file (not a zip archive")) << msg;
}

TEST(X3pRead, CorruptedCompressedData) {
  TempDir dir;
  // Incompressible-ish data so that the entry is stored with its CRC checked on read.
  Surface s = TestSurface(64, 64);
  WriteX3p(s, dir / "ok.x3p");
  std::vector<std::byte> bytes = testing::ReadBytes(dir / "ok.x3p");
  // Flip bytes in the middle of the archive (inside data.bin's compressed stream).
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 16; ++i) bytes[i] ^= std::byte{0x5a};
  const std::string msg = ErrorOf([&] { ReadX3pFromMemory(bytes, "flipped.x3p"); });
  EXPECT_TRUE(msg.starts_with("flipped.x3p: ")) << msg;
}

TEST(X3pRead, NotAZipFile) {
  TempDir dir;
  const fs::path path = dir / "notes.x3p";
  const std::string text = "this is not a zip archive, just some text to fill the file";
  testing::WriteBytes(
      path, std::vector<std::byte>(reinterpret_cast<const std::byte*>(text.data()),
                                   reinterpret_cast<const std::byte*>(text.data() + text.size())));
  const std::string msg = ErrorOf([&] { ReadX3p(path); });
  EXPECT_TRUE(msg.starts_with(path.string() + ": not an X3P file")) << msg;

  EXPECT_TRUE(Contains(ErrorOf([] { ReadX3pFromMemory({}, "empty.x3p"); }), "empty.x3p: empty"));
  const std::string missing = (dir / "absent.x3p").string();
  EXPECT_TRUE(Contains(ErrorOf([&] { ReadX3p(missing); }), missing + ": cannot open"));
}

TEST(X3pRead, MissingMainXml) {
  ExpectReadError({{"readme.txt", "hello"}, {"bindata/data.bin", DoubleData()}},
                  "not an X3P file (no main.xml in the archive)");
}

TEST(X3pRead, MissingPointData) {
  ExpectReadError({{"main.xml", MainXml({})}},
                  "point data bindata/data.bin named in main.xml is "
                  "missing from the archive");
}

TEST(X3pRead, DataSizeDoesNotMatchTheGrid) {
  Spec spec;
  spec.size_x = "545";
  spec.size_y = "545";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "bindata/data.bin holds 96 bytes, main.xml declares 545 x 545 D = 2376200 bytes");
  spec = {};
  spec.type = "F";  // 12 float32 = 48 bytes, but the file holds 96
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "holds 96 bytes, main.xml declares 4 x 3 F = 48 bytes");
}

TEST(X3pRead, WrongPointDataChecksumIsAnError) {
  Spec spec;
  spec.md5 = "0123456789abcdef0123456789abcdef";
  ExpectReadError(
      {{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
      "point data MD5 checksum mismatch (main.xml says 0123456789abcdef0123456789abcdef");
  // Upper-case hex with a CRLF line end (as real files have) is accepted.
  spec.md5 = Md5(DoubleData());
  for (char& c : spec.md5) c = static_cast<char>(std::toupper(c));
  TempDir dir;
  Zip({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}}, dir / "ok.x3p");
  EXPECT_EQ(ReadX3p(dir / "ok.x3p").width, 4);
}

TEST(X3pRead, StaleMainXmlChecksumIsOnlyAWarning) {
  const std::string xml = MainXml({});
  TempDir dir;
  Zip({{"main.xml", xml},
       {"bindata/data.bin", DoubleData()},
       {"md5checksum.hex", "ffffffffffffffffffffffffffffffff *main.xml\n"}},
      dir / "stale.x3p");
  Surface r = ReadX3p(dir / "stale.x3p");
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(Contains(r.warnings[0], "main.xml checksum does not match md5checksum.hex"));

  Zip({{"main.xml", xml},
       {"bindata/data.bin", DoubleData()},
       {"md5checksum.hex", Md5(xml) + " *main.xml\r\n"}},
      dir / "fresh.x3p");
  EXPECT_TRUE(ReadX3p(dir / "fresh.x3p").warnings.empty());
}

TEST(X3pRead, UnknownDataType) {
  Spec spec;
  spec.type = "X";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "z data type 'X' not supported");
}

TEST(X3pRead, AbsurdDimensionsAreRefusedBeforeAllocating) {
  Spec spec;
  spec.size_x = spec.size_y = "1000000";  // 10^12 points: 8 TB if allocated
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "grid 1000000 x 1000000 exceeds the limit of 400000000 points");
  // Within the point limit but far beyond the data: refused by size, not by allocation.
  spec.size_x = spec.size_y = "20000";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "holds 96 bytes, main.xml declares 20000 x 20000 D = 3200000000 bytes");
  X3pReadOptions small;
  small.max_points = 11;
  ExpectReadError({{"main.xml", MainXml({})}, {"bindata/data.bin", DoubleData()}},
                  "grid 4 x 3 exceeds the limit of 11 points", small);
  for (const std::string bad : {"0", "-5"}) {
    spec.size_x = bad;
    ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                    "is empty or negative");
  }
  spec.size_x = "4x";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "SizeX '4x' is not an integer");
}

TEST(X3pRead, InvalidXml) {
  ExpectReadError({{"main.xml", "<p:ISO5436_2><Record1><FeatureType>SUR</Record1>"},
                   {"bindata/data.bin", DoubleData()}},
                  "main.xml is not valid XML");
  ExpectReadError({{"main.xml", "<html><body/></html>"}, {"bindata/data.bin", DoubleData()}},
                  "main.xml root element is <html>, expected ISO5436_2");
}

TEST(X3pRead, UnsupportedGeometry) {
  Spec spec;
  spec.feature = "PRF";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "feature type 'PRF' not supported");
  spec = {};
  spec.x_axis = "A";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "irregular (absolute) x axis not supported");
  spec = {};
  spec.dimension = "ListDimension";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "ListDimension) not supported");
  spec = {};
  spec.size_z = "2";
  ExpectReadError({{"main.xml", MainXml(spec)}, {"bindata/data.bin", DoubleData()}},
                  "SizeZ 2 not supported");
}

TEST(X3pRead, MaskOfTheWrongSizeIsSkippedWithAWarning) {
  TempDir dir;
  Surface s = TestSurface(12, 10);
  SurfaceMask mask;
  mask.width = 12;
  mask.height = 10;
  mask.rgb.assign(120, 0x00ff00);
  s.mask = mask;
  WriteX3p(s, dir / "m.x3p");
  Entries e = Unzip(dir / "m.x3p");
  ASSERT_TRUE(e.count("bindata/mask.png"));

  Surface other = TestSurface(5, 4);
  other.mask = SurfaceMask{5, 4, std::vector<uint32_t>(20, 0xff0000), 0xcd7f32, {}};
  WriteX3p(other, dir / "small.x3p");
  e["bindata/mask.png"] = Unzip(dir / "small.x3p")["bindata/mask.png"];
  Zip(e, dir / "wrong mask.x3p");
  Surface r = ReadX3p(dir / "wrong mask.x3p");
  EXPECT_FALSE(r.mask.has_value());
  ASSERT_FALSE(r.warnings.empty());
  EXPECT_TRUE(Contains(r.warnings[0], "mask.png is 5 x 4 but the surface is 12 x 10"));
  ExpectSameZ(s, r);

  X3pReadOptions no_mask;
  no_mask.read_mask = false;
  EXPECT_FALSE(ReadX3p(dir / "m.x3p", no_mask).mask.has_value());
  EXPECT_TRUE(ReadX3p(dir / "m.x3p").mask.has_value());
}

// ------------------------------------------------------------------ validation

TEST(ValidateSurface, AcceptsAPlausibleScan) {
  Surface s = TestSurface();
  EXPECT_NO_THROW(ValidateSurface(s, "scan.x3p"));
  const SurfaceStats st = ComputeStats(s);
  EXPECT_EQ(st.valid, s.Size() - 3);
  EXPECT_NEAR(st.nan_share, 3.0 / s.Size(), 1e-12);
  EXPECT_LE(st.min, st.mean);
  EXPECT_LE(st.mean, st.max);
  EXPECT_GT(st.stddev, 0);
}

TEST(ValidateSurface, AllNan) {
  Surface s = TestSurface();
  std::fill(s.z.begin(), s.z.end(), kNan);
  EXPECT_EQ(s.NanShare(), 1.0);
  EXPECT_EQ(ComputeStats(s).valid, 0u);
  EXPECT_TRUE(std::isnan(ComputeStats(s).mean));
  EXPECT_EQ(ErrorOf([&] { ValidateSurface(s, "empty scan.x3p"); }),
            "empty scan.x3p: all points are NaN");
  s.z[17] = 1e-6f;  // one valid point in 851: 99.9 % NaN
  EXPECT_TRUE(Contains(ErrorOf([&] { ValidateSurface(s, "sparse.x3p"); }),
                       "sparse.x3p: only 0.118 % of the points are valid"));
}

TEST(ValidateSurface, HeightsNotInMetres) {
  Surface s = TestSurface();
  s.z[1] = 0.19f;  // a height span of 190 mm
  EXPECT_TRUE(Contains(ErrorOf([&] { ValidateSurface(s, "um.x3p"); }),
                       "um.x3p: heights span 190 mm; the file's z values are probably not in "
                       "metres"));
  s.values = SurfaceValues::kIntensity;  // no unit: no span limit
  EXPECT_NO_THROW(ValidateSurface(s, "image.png"));
}

TEST(ValidateSurface, SizeAndSpacing) {
  Surface s = TestSurface(1, 20);
  EXPECT_TRUE(Contains(ErrorOf([&] { ValidateSurface(s, "thin.x3p"); }),
                       "thin.x3p: too small (1 x 20 points; at least 2 per side needed)"));
  s = TestSurface();
  s.dx_m = 7.37;
  EXPECT_TRUE(Contains(ErrorOf([&] { ValidateSurface(s, "coarse.x3p"); }),
                       "coarse.x3p: lateral spacing along x is 7.37 m"));
  s.dx_m = 1e-12;
  EXPECT_TRUE(Contains(ErrorOf([&] { ValidateSurface(s, "fine.x3p"); }), "fine.x3p: lateral"));
  s = TestSurface();
  s.z.pop_back();
  EXPECT_TRUE(Contains(ErrorOf([&] { ValidateSurface(s, "odd.x3p"); }), "odd.x3p: inconsistent"));
  SurfaceLimits bad;
  bad.max_nan_share = 2;
  EXPECT_THROW(ValidateSurface(TestSurface(), "x", bad), Error);
}

}  // namespace
}  // namespace bien

// Every real scan under ../shared/data (see its README.md) is read and checked
// against what its main.xml and the README state. The expected values below were
// taken from the files independently of this reader (main.xml by eye, NaN shares
// with Python's zipfile + struct). Skips when the data folder is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/image.h"
#include "imaging/surface.h"
#include "imaging/surface_io.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::ErrorOf;
using testing::TempDir;

struct Expected {
  const char* folder;
  const char* name;
  int width;
  int height;
  double dx_m;  // after the unit rule: increments >= 1e-3 are micrometres
  double dy_m;
  double nan_share;
};

// clang-format off
const Expected kScans[] = {
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet1_Land1.x3p", 501, 1588, 1.5625e-06, 1.5625e-06, 0.031208},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet1_Land2.x3p", 500, 1550, 1.5625e-06, 1.5625e-06, 0.035746},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet1_Land3.x3p", 502, 1577, 1.5625e-06, 1.5625e-06, 0.036796},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet1_Land4.x3p", 502, 1573, 1.5625e-06, 1.5625e-06, 0.053030},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet1_Land5.x3p", 502, 1522, 1.5625e-06, 1.5625e-06, 0.041224},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet2_Land1.x3p", 502, 1540, 1.5625e-06, 1.5625e-06, 0.025860},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet2_Land2.x3p", 502, 1508, 1.5625e-06, 1.5625e-06, 0.016831},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet2_Land4.x3p", 500, 1559, 1.5625e-06, 1.5625e-06, 0.035985},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet2_Land5.x3p", 502, 1562, 1.5625e-06, 1.5625e-06, 0.039134},
    {"bullet/hamby252", "Hamby252_Barrel1_Bullet2_Land6.x3p", 502, 1610, 1.5625e-06, 1.5625e-06, 0.053785},
    {"bullet/hamby252", "Hamby252_Barrel2_Bullet1_Land1.x3p", 501, 1573, 1.5625e-06, 1.5625e-06, 0.023937},
    {"cartridge/fadul", "Fadul 1-1.x3p", 545, 545, 6.25e-06, 6.25e-06, 0.722104},
    {"cartridge/fadul", "Fadul 1-2.x3p", 546, 546, 6.25e-06, 6.25e-06, 0.699872},
    {"cartridge/fadul", "Fadul 10-1.x3p", 536, 536, 6.25e-06, 6.25e-06, 0.737013},
    {"cartridge/fadul", "Fadul 10-2.x3p", 540, 540, 6.25e-06, 6.25e-06, 0.728954},
    {"cartridge/fadul", "Fadul 2-1.x3p", 537, 537, 6.25e-06, 6.25e-06, 0.702832},
    {"cartridge/fadul", "Fadul 2-2.x3p", 545, 545, 6.25e-06, 6.25e-06, 0.692474},
    {"cartridge/fadul", "Fadul 3-1.x3p", 534, 534, 6.25e-06, 6.25e-06, 0.738091},
    {"cartridge/fadul", "Fadul 3-2.x3p", 539, 539, 6.25e-06, 6.25e-06, 0.725965},
    {"cartridge/fadul", "Fadul 4-1.x3p", 554, 554, 6.25e-06, 6.25e-06, 0.661679},
    {"cartridge/fadul", "Fadul 4-2.x3p", 538, 538, 6.25e-06, 6.25e-06, 0.704810},
    {"cartridge/fadul", "Fadul 5-1.x3p", 550, 550, 6.25e-06, 6.25e-06, 0.694714},
    {"cartridge/fadul", "Fadul 5-2.x3p", 546, 546, 6.25e-06, 6.25e-06, 0.701774},
    {"cartridge/fadul", "Fadul 6-1.x3p", 560, 560, 6.25e-06, 6.25e-06, 0.660542},
    {"cartridge/fadul", "Fadul 6-2.x3p", 567, 567, 6.25e-06, 6.25e-06, 0.651375},
    {"cartridge/fadul", "Fadul 7-1.x3p", 558, 558, 6.25e-06, 6.25e-06, 0.668089},
    {"cartridge/fadul", "Fadul 7-2.x3p", 552, 552, 6.25e-06, 6.25e-06, 0.694487},
    {"cartridge/fadul", "Fadul 8-1.x3p", 498, 498, 6.25e-06, 6.25e-06, 0.767871},
    {"cartridge/fadul", "Fadul 8-2.x3p", 548, 548, 6.25e-06, 6.25e-06, 0.669432},
    {"cartridge/fadul", "Fadul 9-1.x3p", 557, 557, 6.25e-06, 6.25e-06, 0.684286},
    {"cartridge/fadul", "Fadul 9-2.x3p", 540, 540, 6.25e-06, 6.25e-06, 0.720113},
    {"cartridge/fadul", "Fadul A.x3p", 537, 537, 6.25e-06, 6.25e-06, 0.729433},
    {"cartridge/fadul", "Fadul B.x3p", 539, 539, 6.25e-06, 6.25e-06, 0.714520},
    {"cartridge/fadul", "Fadul C.x3p", 579, 579, 6.25e-06, 6.25e-06, 0.673432},
    {"cartridge/fadul", "Fadul E.x3p", 553, 553, 6.25e-06, 6.25e-06, 0.676913},
    {"cartridge/fadul", "Fadul F.x3p", 540, 540, 6.25e-06, 6.25e-06, 0.711355},
    {"cartridge/fadul", "Fadul H.x3p", 560, 560, 6.25e-06, 6.25e-06, 0.695057},
    {"cartridge/fadul", "Fadul I.x3p", 572, 572, 6.25e-06, 6.25e-06, 0.639383},
    {"cartridge/fadul", "Fadul K.x3p", 560, 560, 6.25e-06, 6.25e-06, 0.676566},
    {"cartridge/fadul", "Fadul L.x3p", 547, 547, 6.25e-06, 6.25e-06, 0.717692},
    {"cartridge/fadul", "Fadul M.x3p", 528, 528, 6.25e-06, 6.25e-06, 0.750341},
    {"cartridge/fadul", "Fadul N.x3p", 522, 522, 6.25e-06, 6.25e-06, 0.739926},
    {"cartridge/fadul", "Fadul O.x3p", 536, 536, 6.25e-06, 6.25e-06, 0.695958},
    {"cartridge/fadul", "Fadul P.x3p", 547, 546, 6.25e-06, 6.25e-06, 0.705021},
    {"cartridge/fadul", "Fadul Q.x3p", 540, 539, 6.25e-06, 6.25e-06, 0.719525},
    {"cartridge/fadul", "Fadul R.x3p", 536, 536, 6.25e-06, 6.25e-06, 0.704688},
    {"cartridge/fadul", "Fadul S.x3p", 530, 530, 6.25e-06, 6.25e-06, 0.733282},
    {"cartridge/fadul", "Fadul T.x3p", 556, 556, 6.25e-06, 6.25e-06, 0.676773},
    {"cartridge/fadul", "Fadul X.x3p", 561, 561, 6.25e-06, 6.25e-06, 0.692769},
    {"cartridge/fadul", "Fadul Y.x3p", 533, 533, 6.25e-06, 6.25e-06, 0.684180},
    {"cartridge/fadul", "Fadul Z.x3p", 566, 566, 6.25e-06, 6.25e-06, 0.679541},
    {"cartridge/fadul-raw", "Fadul 1-1.x3p", 1231, 1223, 3.125e-06, 3.125e-06, 0.464446},
    {"cartridge/fadul-raw", "Fadul 1-2.x3p", 1227, 1214, 3.125e-06, 3.125e-06, 0.447796},
    {"cartridge/fadul-raw", "Fadul 2-1.x3p", 1204, 1205, 3.125e-06, 3.125e-06, 0.442624},
    {"format", "csafe-logo.x3p", 741, 419, 6.45000000000095e-07, 6.45e-07, 0.000000},
    {"format", "pyramid.x3p", 5, 5, 1e-06, 1e-06, 0.000000},
    {"format", "sample-land.x3p", 918, 256, 2.58e-06, 2.58e-06, 0.107622},
    {"format", "testing.x3p", 30, 20, 2.7499999602635696e-08, 2.7499999602635696e-08, 0.000000},
};
// clang-format on

struct ExpectedImage {
  const char* folder;
  const char* name;
  int width;
  int height;
};
const ExpectedImage kImages[] = {
    {"image2d/nbide", "NBIDE R BF 118.png", 2592, 1944},
    {"image2d/nbide", "NBIDE R BF 129.png", 2592, 1944},
};

const char* const kFolders[] = {"bullet/hamby252", "cartridge/fadul", "cartridge/fadul-raw",
                                "format", "image2d/nbide"};

std::string TestName(const std::string& folder, const std::string& name) {
  std::string out = folder + "_" + name;
  for (char& c : out) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return out;
}

// ------------------------------------------------------------------ inventory

TEST(RealData, EveryFileIsKnownAndEveryTruthRowExists) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  std::set<std::string> expected;  // "folder/name"
  for (const Expected& e : kScans) expected.insert(std::string(e.folder) + "/" + e.name);
  for (const ExpectedImage& e : kImages) expected.insert(std::string(e.folder) + "/" + e.name);

  std::set<std::string> found;
  for (const auto& entry : fs::recursive_directory_iterator(data)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), data).generic_string();
    const std::string file = entry.path().filename().string();
    if (file == "README.md" || file == "truth.csv") continue;
    found.insert(rel);
  }
  EXPECT_EQ(found, expected) << "a scan was added to or removed from shared/data: update kScans";

  // Each truth.csv lists exactly the scans of its folder (format/ has none).
  for (const char* folder : kFolders) {
    const fs::path truth = data / folder / "truth.csv";
    if (std::string(folder) == "format") {
      EXPECT_FALSE(fs::exists(truth));
      continue;
    }
    ASSERT_TRUE(fs::exists(truth)) << truth;
    const CsvTable table = ReadCsvFile(truth);
    const auto path_col = table.Column("path");
    const auto source_col = table.Column("source");
    ASSERT_TRUE(path_col && source_col) << truth;
    std::set<std::string> listed;
    for (const auto& row : table.rows) {
      listed.insert(std::string(folder) + "/" + row[*path_col]);
      EXPECT_FALSE(row[*source_col].empty());
    }
    std::set<std::string> in_folder;
    for (const std::string& f : found) {
      if (f.starts_with(std::string(folder) + "/")) in_folder.insert(f);
    }
    EXPECT_EQ(listed, in_folder) << truth;
  }
}

TEST(RealData, FadulTruthHasTheStatedPairCounts) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const CsvTable t = ReadCsvFile(data / "cartridge/fadul/truth.csv");
  const size_t src = *t.Column("source");
  int km = 0, knm = 0;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    for (size_t j = i + 1; j < t.rows.size(); ++j) {
      (t.rows[i][src] == t.rows[j][src] ? km : knm)++;
    }
  }
  EXPECT_EQ(km, 63);
  EXPECT_EQ(knm, 717);
}

// ------------------------------------------------------------------ every X3P

class RealX3p : public ::testing::TestWithParam<Expected> {};

TEST_P(RealX3p, MatchesItsHeader) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Expected& e = GetParam();
  const std::string folder = e.folder;
  const fs::path path = data / e.folder / e.name;
  const Surface s = ReadX3p(path);
  EXPECT_EQ(s.width, e.width);
  EXPECT_EQ(s.height, e.height);
  EXPECT_EQ(s.z.size(), static_cast<size_t>(e.width) * e.height);
  EXPECT_NEAR(s.dx_m, e.dx_m, e.dx_m * 1e-12);
  EXPECT_NEAR(s.dy_m, e.dy_m, e.dy_m * 1e-12);
  EXPECT_NEAR(s.NanShare(), e.nan_share, 1e-3);
  EXPECT_EQ(s.values, SurfaceValues::kHeight);

  // The same bytes through format detection give the same surface.
  ScanFormat format = ScanFormat::kUnknown;
  const Surface m = ReadScanFromMemory(testing::ReadBytes(path), e.name, {}, &format);
  EXPECT_EQ(format, ScanFormat::kX3p);
  EXPECT_EQ(std::memcmp(m.z.data(), s.z.data(), s.z.size() * sizeof(float)), 0);

  const bool is_format_sample = folder == "format";
  if (!is_format_sample) {
    // Real toolmark scans: accepted, NanoFocus, heights in metres, no warnings.
    EXPECT_NO_THROW(ValidateSurface(s, path.string()));
    EXPECT_TRUE(s.warnings.empty()) << s.warnings.front();
    EXPECT_EQ(s.provenance.instrument, "NanoFocus / usurf / V.6.12.6");
    EXPECT_EQ(s.provenance.creator, "Xiaoyu Zheng");
    EXPECT_FALSE(s.mask.has_value());  // fadul has a Mask element but no mask.png
    const SurfaceStats st = ComputeStats(s);
    EXPECT_LT(st.max - st.min, folder == "cartridge/fadul" ? 1e-4 : 3e-4);
    EXPECT_GT(st.stddev, 1e-7);
  }
}

INSTANTIATE_TEST_SUITE_P(AllScans, RealX3p, ::testing::ValuesIn(kScans),
                         [](const ::testing::TestParamInfo<Expected>& info) {
                           return TestName(info.param.folder, info.param.name);
                         });

// ------------------------------------------------------------------ format samples

fs::path Format(const fs::path& data, const char* name) { return data / "format" / name; }

TEST(RealFormat, CsafeLogoHasAStaleRecord4AndFloatHeightsInMetres) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Surface s = ReadX3p(Format(data, "csafe-logo.x3p"));  // main.xml in csafe-logo/
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_TRUE(Contains(s.warnings[0], "main.xml checksum does not match md5checksum.hex"));
  // CZ increment 1e-6 with float data: not applied, heights stay ~0.2-0.8 µm.
  const SurfaceStats st = ComputeStats(s);
  EXPECT_NEAR(st.min, 2.078e-7, 1e-10);
  EXPECT_NEAR(st.max, 8.275e-7, 1e-10);
  EXPECT_EQ(s.provenance.instrument, "");  // all "N/A"
  EXPECT_EQ(s.provenance.creator, "Heike Hofmann, CSAFE");
  EXPECT_EQ(s.provenance.comment, "image rendered from the CSAFE logo");
  EXPECT_NO_THROW(ValidateSurface(s, "csafe-logo.x3p"));
}

TEST(RealFormat, SampleLandHasAMask) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Surface s = ReadX3p(Format(data, "sample-land.x3p"));
  EXPECT_TRUE(s.warnings.empty());
  EXPECT_EQ(s.provenance.instrument, "Sensofar / Sneox1 / 350262016");
  EXPECT_EQ(s.provenance.date, "2018-09-15T17:46:09");
  ASSERT_TRUE(s.mask.has_value());
  EXPECT_EQ(s.mask->width, 918);
  EXPECT_EQ(s.mask->height, 256);
  EXPECT_EQ(s.mask->background, 0xcd7f32u);
  ASSERT_EQ(s.mask->annotations.size(), 9u);
  EXPECT_EQ(s.mask->annotations[0], (std::pair<uint32_t, std::string>{0x1f376c, "break-off"}));
  EXPECT_EQ(s.mask->annotations[5].second, "vertical change in striations");
  EXPECT_EQ(s.mask->annotations[6].second, "");  // colour-only entries as in the file
  std::map<uint32_t, size_t> colours;
  for (uint32_t c : s.mask->rgb) ++colours[c];
  EXPECT_GT(colours[0xcd7f32], s.mask->rgb.size() / 2) << "mostly background";
  EXPECT_GT(colours.size(), 1u) << "some annotated pixels";
  EXPECT_NO_THROW(ValidateSurface(s, "sample-land.x3p"));

  // The mask survives our own write and read.
  TempDir dir;
  WriteX3p(s, dir / "land copy.x3p");
  const Surface r = ReadX3p(dir / "land copy.x3p");
  ASSERT_TRUE(r.mask.has_value());
  EXPECT_EQ(r.mask->rgb, s.mask->rgb);
  EXPECT_EQ(r.mask->annotations, s.mask->annotations);
  EXPECT_EQ(r.provenance.instrument, s.provenance.instrument);
  EXPECT_EQ(std::memcmp(r.z.data(), s.z.data(), s.z.size() * sizeof(float)), 0);
}

TEST(RealFormat, TinyGridsNeedTheirUnitsStated) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  // pyramid: increments 1 -> 1 µm by the unit rule; z 2..10 (F, CZ increment 1).
  const Surface p = ReadX3p(Format(data, "pyramid.x3p"));
  const SurfaceStats ps = ComputeStats(p);
  EXPECT_EQ(ps.min, 2);
  EXPECT_EQ(ps.max, 10);
  EXPECT_EQ(p.provenance.instrument, "Manufacturer Name / Model / Serial / Version");
  EXPECT_TRUE(Contains(
      [&] {
        try {
          ValidateSurface(p, "pyramid.x3p");
        } catch (const Error& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      "pyramid.x3p: heights span 8 m"));
  // testing: increment 0.0275 read as micrometres -> 27.5 nm; heights -0.024..0.009
  // (probably millimetres), a span of 33 "metres-as-written" mm: refused.
  const Surface t = ReadX3p(Format(data, "testing.x3p"));
  EXPECT_NEAR(t.dx_m, 2.75e-8, 1e-14);
  try {
    ValidateSurface(t, "testing.x3p");
    ADD_FAILURE() << "testing.x3p accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(Contains(e.what(), "testing.x3p: heights span 32.8 mm"));
  }

  // With their units stated, both are valid surfaces.
  X3pReadOptions um;
  um.xy_unit = um.z_unit = LengthUnit::kMicrometre;
  const Surface pu = ReadX3p(Format(data, "pyramid.x3p"), um);
  EXPECT_NO_THROW(ValidateSurface(pu, "pyramid.x3p"));
  EXPECT_FLOAT_EQ(ComputeStats(pu).max, 10e-6f);
  X3pReadOptions mm;
  mm.xy_unit = mm.z_unit = LengthUnit::kMillimetre;
  const Surface tm = ReadX3p(Format(data, "testing.x3p"), mm);
  EXPECT_NO_THROW(ValidateSurface(tm, "testing.x3p"));
  EXPECT_NEAR(tm.dx_m, 27.5e-6, 1e-11);
  EXPECT_NEAR(ComputeStats(tm).max - ComputeStats(tm).min, 32.8e-6, 0.1e-6);
}

// ------------------------------------------------------------------ round trip

TEST(RealData, AFadulScanSurvivesWriteAndRead) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Surface s = ReadX3p(data / "cartridge/fadul/Fadul 1-1.x3p");
  TempDir dir;
  WriteX3p(s, dir / "Fadul 1-1 copy.x3p");
  const Surface r = ReadX3p(dir / "Fadul 1-1 copy.x3p");
  EXPECT_EQ(r.width, s.width);
  EXPECT_EQ(r.height, s.height);
  EXPECT_EQ(r.dx_m, s.dx_m);
  EXPECT_EQ(r.dy_m, s.dy_m);
  EXPECT_EQ(std::memcmp(r.z.data(), s.z.data(), s.z.size() * sizeof(float)), 0);
  EXPECT_EQ(r.provenance.instrument, s.provenance.instrument);
  EXPECT_EQ(r.provenance.date, s.provenance.date);
  EXPECT_EQ(r.provenance.creator, s.provenance.creator);
  EXPECT_EQ(r.provenance.comment, s.provenance.comment);
}

// ------------------------------------------------------------------ 2D images

class RealImage : public ::testing::TestWithParam<ExpectedImage> {};

TEST_P(RealImage, ReadsAsGreyIntensity) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const ExpectedImage& e = GetParam();
  const fs::path path = data / e.folder / e.name;
  ScanReadOptions options;
  options.pixel_size_um = 2.0;  // the README gives none; any positive value will do here
  ScanFormat format = ScanFormat::kUnknown;
  const Surface s = ReadScanFromMemory(testing::ReadBytes(path), path.string(), options, &format);
  EXPECT_EQ(format, ScanFormat::kPng);
  EXPECT_EQ(s.width, e.width);
  EXPECT_EQ(s.height, e.height);
  EXPECT_EQ(s.values, SurfaceValues::kIntensity);
  EXPECT_DOUBLE_EQ(s.dx_m, 2e-6);
  EXPECT_EQ(s.NanShare(), 0);
  const SurfaceStats st = ComputeStats(s);
  EXPECT_GE(st.min, 0);
  EXPECT_LE(st.max, 1);
  EXPECT_GT(st.stddev, 0.01);
  EXPECT_NO_THROW(ValidateSurface(s, path.string()));
  const std::string msg = [&] {
    try {
      ReadScanFromMemory(testing::ReadBytes(path), e.name, {});
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string();
  }();
  EXPECT_TRUE(Contains(msg, "needs its pixel size"));
}

INSTANTIATE_TEST_SUITE_P(AllImages, RealImage, ::testing::ValuesIn(kImages),
                         [](const ::testing::TestParamInfo<ExpectedImage>& info) {
                           return TestName(info.param.folder, info.param.name);
                         });

}  // namespace
}  // namespace bien

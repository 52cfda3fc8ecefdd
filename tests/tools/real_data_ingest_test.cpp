// Every file under ../shared/data ingests through `bien ingest --manifest`,
// the two format samples that break the X3P unit convention once their units
// are stated, and the node verifies afterwards.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/csv.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

struct Row {
  std::filesystem::path path;
  std::string kind;
  std::string pixel_size_um;
  std::string xy_unit;
  std::string z_unit;
};

// One manifest row per scan file, one exhibit per file. The format samples
// testing.x3p (converted from a TopMatch TMD file: lateral 0.0275 and heights
// of +-0.02, both millimetres) and pyramid.x3p (a 5 x 5 test grid with
// increments of 1 and heights 2..10) get their units stated when `with_units`.
std::vector<Row> AllScans(const std::filesystem::path& data, bool with_units) {
  std::vector<Row> rows;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(data)) {
    if (!entry.is_regular_file()) continue;
    const auto ext = entry.path().extension().string();
    if (ext != ".x3p" && ext != ".png") continue;
    Row row;
    row.path = entry.path();
    const std::string rel = std::filesystem::relative(entry.path(), data).generic_string();
    row.kind = rel.rfind("bullet/", 0) == 0 || rel == "format/sample-land.x3p" ? "bullet"
                                                                               : "cartridge_case";
    if (ext == ".png") row.pixel_size_um = "2.5";  // stated by the examiner for 2D images
    if (with_units && rel == "format/testing.x3p") row.xy_unit = row.z_unit = "mm";
    if (with_units && rel == "format/pyramid.x3p") row.xy_unit = row.z_unit = "um";
    rows.push_back(std::move(row));
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.path < b.path; });
  return rows;
}

std::filesystem::path WriteManifest(const std::filesystem::path& dir,
                                    const std::vector<Row>& rows) {
  const auto path = dir / "all scans.csv";
  std::ofstream out(path);
  out << "path,case,exhibit,kind,role,pixel_size_um,xy_unit,z_unit\n";
  int n = 0;
  for (const auto& r : rows) {
    out << CsvEscape(r.path.string()) << ",REAL-" << ++n << ",E1," << r.kind << ",evidence,"
        << r.pixel_size_um << "," << r.xy_unit << "," << r.z_unit << "\n";
  }
  return path;
}

TEST(RealDataIngest, EveryFileIngestsAndVerifies) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  TempDir dir;
  const std::string node = (dir.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node, "--name", "All real scans"}).code, 0);

  const auto rows = AllScans(data, true);
  ASSERT_GE(rows.size(), 60u) << "the README lists 40 + 3 + 11 + 2 + 4 scan files";
  const auto manifest = WriteManifest(dir.path(), rows);
  const CliResult r =
      RunBien({"ingest", "--node", node, "--json", "--manifest", manifest.string()});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ingested"].get<int>(), static_cast<int>(rows.size())) << r.out;
  EXPECT_EQ(j["rejected"].get<int>(), 0) << r.out;

  const StoreCounts counts = CountsOf(node);
  EXPECT_EQ(counts.scans, static_cast<int64_t>(rows.size()));
  EXPECT_EQ(counts.exhibits, static_cast<int64_t>(rows.size()));
  const CliResult v = RunBien({"verify", "--node", node});
  EXPECT_EQ(v.code, 0) << v.out << v.err;

  // The millimetre file keeps its stated scale: 27.5 um spacing, heights x 1e-3.
  const CliResult shown = RunBien({"show", "--node", node, "--json", "REAL-" + [&] {
                                     for (size_t i = 0; i < rows.size(); ++i) {
                                       if (rows[i].path.filename() == "testing.x3p") {
                                         return std::to_string(i + 1);
                                       }
                                     }
                                     return std::string("missing");
                                   }() + "/E1"});
  ASSERT_EQ(shown.code, 0) << shown.err;
  const auto scan = nlohmann::json::parse(shown.out)["scans"][0];
  EXPECT_NEAR(scan["dx_m"].get<double>(), 27.5e-6, 1e-9);
  EXPECT_DOUBLE_EQ(scan["z_scale"].get<double>(), 1e-3);
}

TEST(RealDataIngest, UnstatedNonStandardUnitsAreRejectedByName) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  TempDir dir;
  const std::string node = (dir.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  std::vector<Row> rows;
  for (const auto& r : AllScans(data, false)) {
    if (r.path.parent_path().filename() == "format") rows.push_back(r);
  }
  ASSERT_EQ(rows.size(), 4u);
  const CliResult r =
      RunBien({"ingest", "--node", node, "--manifest", WriteManifest(dir.path(), rows).string()});
  EXPECT_EQ(r.code, 3) << "partial success exits 3: " << r.out << r.err;
  EXPECT_NE(r.out.find("testing.x3p: heights span 32.8 mm"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pyramid.x3p: heights span"), std::string::npos) << r.out;
  EXPECT_EQ(CountsOf(node).scans, 2);
  EXPECT_EQ(RunBien({"verify", "--node", node}).code, 0);
}

}  // namespace
}  // namespace bien::testing

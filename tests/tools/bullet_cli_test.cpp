// Bullets through the `bien` command: compare of lands and bullets (files
// and stored exhibits) with pictures, eval of a bullet truth.csv, bad land
// scans; synthetic lands always, Hamby 252 where the real data is present.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "core/csv.h"
#include "imaging/synth_land.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

nlohmann::json Json(const CliResult& r) {
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  return nlohmann::json::parse(r.out);
}

// Barrel 0: bullets A (lands 1-6) and B (its land j carries barrel land (j + 4) mod 6, so land
// i of A faces land i + 2 of B; land 4 not scanned); barrel 1: bullet C (lands 1-6).
class BulletCli : public ::testing::Test {
 protected:
  void SetUp() override {
    SynthLandOptions o;
    o.along_um = 200;
    std::string csv = "path,source,bullet,land,land_id\n";
    auto add = [&](const std::string& bullet, int barrel, int land, int barrel_land, int shot) {
      const std::string name = bullet + "-L" + std::to_string(land) + ".x3p";
      WriteX3p(MakeSynthLand(o, barrel, barrel_land, shot), dir_ / name);
      csv += name + ",barrel-" + std::to_string(barrel) + "," + bullet + "," +
             std::to_string(land) + ",barrel-" + std::to_string(barrel) + "/L" +
             std::to_string(barrel_land + 1) + "\n";
      files_[bullet].resize(6);
      files_[bullet][static_cast<size_t>(land - 1)] = (dir_ / name).string();
    };
    for (int i = 0; i < 6; ++i) add("A", 0, i + 1, i, 0);
    for (int j = 0; j < 6; ++j) {
      if (j != 3) add("B", 0, j + 1, (j + 4) % 6, 1);
    }
    for (int i = 0; i < 6; ++i) add("C", 1, i + 1, i, 0);
    WriteBytes(dir_ / "truth.csv",
               std::vector<std::byte>(reinterpret_cast<const std::byte*>(csv.data()),
                                      reinterpret_cast<const std::byte*>(csv.data()) + csv.size()));
  }
  std::string List(const std::string& bullet) {
    std::string s;
    for (size_t i = 0; i < files_[bullet].size(); ++i) s += (i ? "," : "") + files_[bullet][i];
    return s;
  }

  TempDir dir_;
  std::map<std::string, std::vector<std::string>> files_;
};

TEST_F(BulletCli, ComparesTwoLandsWithAPicture) {
  // Land 1 of A and land 3 of B carry barrel 0's land 1; land 1 of C is barrel 1's.
  const auto png = dir_ / "lands.png";
  const auto km = Json(RunBien({"compare", "--kind", "land", files_["A"][0], files_["B"][2],
                                "--json", "--png", png.string()}));
  const auto knm =
      Json(RunBien({"compare", "--kind", "land", files_["A"][0], files_["C"][0], "--json"}));
  EXPECT_EQ(km["kind"], "land");
  EXPECT_GT(km["result"]["score"].get<double>(), knm["result"]["score"].get<double>() + 0.2);
  EXPECT_GT(km["result"]["cms"].get<int>(), knm["result"]["cms"].get<int>());
  EXPECT_EQ(km["reference"]["across"], "y");
  const cv::Mat picture = cv::imread(png.string());
  ASSERT_FALSE(picture.empty());
  EXPECT_GT(picture.cols, 600);

  const CliResult text = RunBien({"compare", "--kind", "land", files_["A"][0], files_["B"][2]});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "land score"));
  EXPECT_TRUE(Contains(text.out, "CMS"));
}

TEST_F(BulletCli, ComparesBulletsFromFilesAndFromTheStore) {
  std::vector<std::string> b_list = files_["B"];
  b_list[3] = "";  // land 4 of B was not scanned
  std::string b;
  for (size_t i = 0; i < b_list.size(); ++i) b += (i ? "," : "") + b_list[i];
  const auto png = dir_ / "bullets.png";
  const auto r =
      Json(RunBien({"compare", "--kind", "bullet", List("A"), b, "--json", "--png", png.string()}));
  EXPECT_EQ(r["phase"].get<int>(), 2);
  EXPECT_EQ(r["pairs"].size(), 5u);
  EXPECT_TRUE(std::filesystem::exists(png));

  // Stored: each land ingested as a scan of one bullet exhibit, with its land number.
  const std::string node = (dir_ / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  for (const std::string bullet : {"A", "B", "C"}) {
    for (size_t i = 0; i < 6; ++i) {
      if (files_[bullet][i].empty()) continue;
      const CliResult in = RunBien({"ingest", "--node", node, "--case", "K1", "--exhibit", bullet,
                                    "--kind", "bullet", "--role", "test_fire", "--lands", "6",
                                    "--land", std::to_string(i + 1), files_[bullet][i]});
      ASSERT_EQ(in.code, 0) << in.err;
    }
  }
  const auto same = Json(RunBien({"compare", "--node", node, "K1/A", "K1/B", "--json"}));
  EXPECT_EQ(same["kind"], "bullet");
  EXPECT_EQ(same["phase"].get<int>(), 2);
  EXPECT_NEAR(same["score"].get<double>(), r["score"].get<double>(), 1e-9);
  const auto other = Json(RunBien({"compare", "--node", node, "K1/A", "K1/C", "--json"}));
  EXPECT_LT(other["score"].get<double>(), same["score"].get<double>() - 0.2);
}

TEST_F(BulletCli, EvalReportsLandAndBulletFigures) {
  const auto pairs = dir_ / "pairs.csv";
  const auto j = Json(RunBien(
      {"eval", "--truth", (dir_ / "truth.csv").string(), "--json", "--pairs", pairs.string()}));
  EXPECT_EQ(j["lands"].get<int>(), 17);
  EXPECT_EQ(j["land_level"]["km"].get<int>(), 5);
  EXPECT_DOUBLE_EQ(j["land_level"]["auc"].get<double>(), 1.0);
  EXPECT_GT(j["land_level"]["min_km"].get<double>(), j["land_level"]["max_knm"].get<double>());
  EXPECT_EQ(j["bullet_level"]["bullets"].get<int>(), 3);
  EXPECT_EQ(j["bullet_level"]["pairings_checked"].get<int>(), 1);
  EXPECT_EQ(j["bullet_level"]["pairings_right"].get<int>(), 1);
  EXPECT_GT(j["bullet_level"]["min_km"].get<double>(), j["bullet_level"]["max_knm"].get<double>());
  EXPECT_EQ(ReadCsvFile(pairs).rows.size(), 17u * 16 / 2);
}

TEST_F(BulletCli, BadLandScansFailClearlyAndWriteNothing) {
  // All NaN.
  Surface s = MakeSynthLand(SynthLandOptions{}, 0, 0, 0);
  std::fill(s.z.begin(), s.z.end(), std::numeric_limits<float>::quiet_NaN());
  WriteX3p(s, dir_ / "nan.x3p");
  const auto png = dir_ / "never.png";
  CliResult r = RunBien({"compare", "--kind", "land", (dir_ / "nan.x3p").string(), files_["A"][0],
                         "--png", png.string()});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "nan.x3p"));
  EXPECT_FALSE(std::filesystem::exists(png));
  // Too short across the land.
  SynthLandOptions narrow;
  narrow.across_um = 250;
  narrow.land_width_um = 200;
  narrow.max_shift_um = 10;
  WriteX3p(MakeSynthLand(narrow, 0, 0, 0), dir_ / "short.x3p");
  r = RunBien({"compare", "--kind", "land", (dir_ / "short.x3p").string(), files_["A"][0]});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "short.x3p: the land scan is too narrow across the land"));
  // Wrong orientation stated.
  r = RunBien({"compare", "--kind", "land", "--land-across", "x", files_["A"][0], files_["A"][1]});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "A-L1.x3p: the orientation given says x runs across the land"));
  r = RunBien({"compare", "--kind", "lands", files_["A"][0], files_["A"][1]});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "unknown --kind 'lands'"));
}

TEST(BulletCliReal, Hamby252EvalSeparatesEveryLandAndPairsTheBullets) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  const auto j = Json(RunBien(
      {"eval", "--truth", (data / "bullet" / "hamby252" / "truth.csv").string(), "--json"}));
  EXPECT_EQ(j["land_level"]["km"].get<int>(), 4);
  EXPECT_DOUBLE_EQ(j["land_level"]["auc"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["land_level"]["eer"].get<double>(), 0.0);
  EXPECT_EQ(j["bullet_level"]["pairings_right"].get<int>(), 1);
  EXPECT_EQ(j["bullet_level"]["pairings_checked"].get<int>(), 1);
  EXPECT_GT(j["bullet_level"]["min_km"].get<double>(), j["bullet_level"]["max_knm"].get<double>());
}

}  // namespace
}  // namespace bien::testing

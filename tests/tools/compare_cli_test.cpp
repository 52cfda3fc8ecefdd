// `bien compare` and `bien eval` end to end: synthetic sets always, the Fadul
// set where the real data is present.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>

#include "core/csv.h"
#include "imaging/synth.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

nlohmann::json Json(const CliResult& r) {
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  return nlohmann::json::parse(r.out);
}

class CompareCli : public ::testing::Test {
 protected:
  void SetUp() override {
    SynthOptions o;
    o.firearms = 3;
    o.shots = 2;
    o.seed = 11;
    o.size_px = 320;
    files_ = WriteSynthSet(dir_.path() / "set", o);
  }
  std::string File(int i) const { return (dir_.path() / "set" / files_[i].file_name).string(); }

  TempDir dir_;
  std::vector<SynthFile> files_;
};

TEST_F(CompareCli, ComparesTwoFilesWithScoresRegistrationAndPicture) {
  const auto png = dir_.path() / "pair.png";
  const auto km = Json(RunBien({"compare", File(0), File(1), "--json", "--png", png.string()}));
  const auto knm = Json(RunBien({"compare", File(0), File(2), "--json"}));
  EXPECT_GT(km["combined"].get<double>(), 3 * std::max(1.0, knm["combined"].get<double>()));
  EXPECT_EQ(km["forward"]["cells"].size(), 64u);
  EXPECT_TRUE(km["registration"].contains("angle_deg"));
  // Without a node the strength is stated as unknown, never left out.
  EXPECT_TRUE(Contains(km["strength"]["text"].get<std::string>(), "unknown"));
  const cv::Mat picture = cv::imread(png.string());
  ASSERT_FALSE(picture.empty());
  EXPECT_GT(picture.cols, 300);

  const CliResult text = RunBien({"compare", File(0), File(1)});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "CMC score"));
  EXPECT_TRUE(Contains(text.out, "registration"));
  EXPECT_TRUE(Contains(text.out, "strength"));

  // The coarse scores the search would rank them by: the descriptor's cosine
  // and the ring spectra at their best rotation, both far higher for mates.
  for (const char* field :
       {"cosine", "ring_score", "ring_angle_deg", "descriptor", "ring_spectra"}) {
    ASSERT_TRUE(km["coarse"].contains(field)) << field << km["coarse"].dump();
    ASSERT_TRUE(knm["coarse"].contains(field)) << field << knm["coarse"].dump();
  }
  EXPECT_GT(km["coarse"]["ring_score"].get<double>(),
            knm["coarse"]["ring_score"].get<double>() + 0.2)
      << km["coarse"].dump() << knm["coarse"].dump();
  EXPECT_GT(km["coarse"]["cosine"].get<double>(), knm["coarse"]["cosine"].get<double>() + 0.1);
  EXPECT_TRUE(Contains(text.out, "descriptor cosine")) << text.out;
  EXPECT_TRUE(Contains(text.out, "ring correlation")) << text.out;
}

TEST_F(CompareCli, EvalReportsTheNamedFieldsAndFeedsTheNodeDistribution) {
  const std::string node = (dir_.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  const std::string truth = (dir_.path() / "set" / "truth.csv").string();
  // eval compares on its own threads with OpenCV single-threaded meanwhile;
  // the process's OpenCV setting comes back afterwards (commands also run
  // in-process, e.g. in the server).
  cv::setNumThreads(2);
  const auto j = Json(RunBien({"eval", "--truth", truth, "--json", "--node", node}));
  EXPECT_EQ(cv::getNumThreads(), 2);
  for (const char* field : {"pairs", "km", "knm", "auc", "eer", "min_km", "max_knm", "top1",
                            "top10", "ms_per_comparison"}) {
    EXPECT_TRUE(j.contains(field)) << field;
  }
  EXPECT_EQ(j["pairs"].get<int>(), 15);
  EXPECT_EQ(j["km"].get<int>(), 3);
  EXPECT_EQ(j["knm"].get<int>(), 12);
  EXPECT_DOUBLE_EQ(j["auc"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), 1.0);
  EXPECT_EQ(j["knm_scores_recorded"].get<int>(), 12);

  // The node now reports how often known non-matches reach a score.
  const auto c = Json(RunBien({"compare", "--node", node, File(0), File(1), "--json"}));
  EXPECT_EQ(c["strength"]["knm_total"].get<int>(), 12);
  EXPECT_EQ(c["strength"]["knm_at_least"].get<int>(), 0);
  EXPECT_LT(c["strength"]["rate_upper95"].get<double>(), 0.25);

  // Rotated at random, the synthetic mates are still found first; --pairs
  // writes one row per pair with the scores, registration and rotations.
  const auto pairs = dir_.path() / "pairs.csv";
  const auto r = Json(RunBien(
      {"eval", "--truth", truth, "--json", "--rotate-random", "5", "--pairs", pairs.string()}));
  EXPECT_DOUBLE_EQ(r["auc"].get<double>(), 1.0);
  const CsvTable table = ReadCsvFile(pairs);
  ASSERT_EQ(table.rows.size(), 15u);
  const auto same = table.Column("same_source"), score = table.Column("score");
  const auto rot_a = table.Column("rotation_a_deg"), angle = table.Column("angle_deg");
  ASSERT_TRUE(same && score && rot_a && angle && table.Column("path_b"));
  int km_rows = 0;
  for (const auto& row : table.rows) {
    km_rows += row[*same] == "1";
    EXPECT_NE(std::stod(row[*rot_a]), 0.0);
    EXPECT_LE(std::abs(std::stod(row[*angle])), 180.0);
  }
  EXPECT_EQ(km_rows, 3);
  // The coarse scores: ranked as the fine one is, and one column each per pair.
  ASSERT_TRUE(r["coarse"].contains("ring_spectra")) << r["coarse"].dump();
  EXPECT_DOUBLE_EQ(r["coarse"]["ring_spectra"]["top1"].get<double>(), 1.0);
  EXPECT_GT(r["coarse"]["ring_spectra"]["auc"].get<double>(), 0.9);
  EXPECT_GT(r["coarse"]["descriptor"]["auc"].get<double>(), 0.9);
  const auto ring_score = table.Column("ring_score"), ring_angle = table.Column("ring_angle_deg");
  ASSERT_TRUE(ring_score && ring_angle && table.Column("cosine"));
  for (const auto& row : table.rows) {
    const double v = std::stod(row[*ring_score]), a = std::stod(row[*ring_angle]);
    EXPECT_TRUE(v >= -1 && v <= 1) << v;
    EXPECT_TRUE(a >= 0 && a < 360) << a;
    // A mate's ring angle is the rotation the fine comparison registers.
    if (row[*same] == "1") {
      const double cmc = std::stod(row[*angle]);
      EXPECT_LT(std::abs(std::remainder(a - cmc, 360.0)), 3.0)
          << "ring angle " << a << ", CMC angle " << cmc;
    }
  }
  // An unwritable place is an error naming it, and no table is left behind.
  const CliResult bad =
      RunBien({"eval", "--truth", truth, "--pairs", (dir_.path() / "no" / "p.csv").string()});
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(Contains(bad.err, "p.csv")) << bad.err;
}

TEST_F(CompareCli, ComparesStoredExhibits) {
  const std::string node = (dir_.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  for (int i : {0, 1}) {
    ASSERT_EQ(RunBien({"ingest", "--node", node, File(i), "--case", "C1", "--exhibit",
                       "E" + std::to_string(i), "--kind", "cartridge_case", "--role", "evidence"})
                  .code,
              0);
  }
  const auto j = Json(RunBien({"compare", "--node", node, "C1/E0", "C1/E1", "--json"}));
  EXPECT_GE(j["combined"].get<double>(), 6);
  EXPECT_EQ(j["reference"]["label"].get<std::string>(), "C1/E0");
}

TEST_F(CompareCli, CalibrateComparesTestFiresOfDifferentFirearms) {
  const std::string node = (dir_.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  // Before any firearm is known, calibrate explains what it needs.
  CliResult r = RunBien({"calibrate", "--node", node});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "--firearm")) << r.err;
  for (size_t i = 0; i < files_.size(); ++i) {
    ASSERT_EQ(RunBien({"ingest", "--node", node, File(static_cast<int>(i)), "--case",
                       "TF-" + files_[i].source, "--exhibit", "T" + std::to_string(i), "--kind",
                       "cartridge_case", "--role", "test_fire", "--firearm", files_[i].source})
                  .code,
              0);
  }
  const auto j = Json(RunBien({"calibrate", "--node", node, "--json"}));
  EXPECT_EQ(j["firearms"].get<int>(), 3);
  EXPECT_EQ(j["pairs"].get<int>(), 12);  // 15 pairs less the 3 same-firearm ones
  EXPECT_EQ(j["recorded"].get<int>(), 12);
  EXPECT_EQ(j["distribution_size"].get<int>(), 12);
  const auto c = Json(RunBien({"compare", "--node", node, File(0), File(1), "--json"}));
  EXPECT_EQ(c["strength"]["knm_total"].get<int>(), 12);
  EXPECT_EQ(RunBien({"verify", "--node", node}).code, 0);
}

TEST_F(CompareCli, BadInputsAreNamed) {
  CliResult r = RunBien({"compare", File(0), (dir_.path() / "missing.x3p").string()});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "missing.x3p")) << r.err;
  r = RunBien({"eval", "--truth", (dir_.path() / "nothing" / "truth.csv").string()});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "truth.csv")) << r.err;
}

TEST(CompareCliReal, FadulEvalSeparatesEveryPairAtAnyRotation) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  const std::string truth = (data / "cartridge/fadul/truth.csv").string();
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, std::vector<std::string>{"--rotate-random", "42"}}) {
    std::vector<std::string> args{"eval", "--truth", truth, "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto j = Json(RunBien(args));
    EXPECT_EQ(j["pairs"].get<int>(), 780);
    EXPECT_EQ(j["km"].get<int>(), 63);
    EXPECT_DOUBLE_EQ(j["auc"].get<double>(), 1.0) << j.dump();
    EXPECT_GT(j["min_km"].get<double>(), j["max_knm"].get<double>()) << j.dump();
    EXPECT_DOUBLE_EQ(j["top1"].get<double>(), 1.0) << j.dump();
  }
}

}  // namespace
}  // namespace bien::testing

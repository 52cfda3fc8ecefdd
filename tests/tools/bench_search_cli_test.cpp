// `bien synth --features` (the synthetic descriptor file and its reader) and
// `bien bench search`.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "matching/descriptor.h"
#include "matching/ring_codes.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"
#include "tools/synth_features.h"

namespace bien::testing {
namespace {

std::string ReadBytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// One 2000-exhibit file shared by the tests of the suite (about 2-4 s to make).
class BenchSearchCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    file_ = dir_->path() / "features 2000.bin";
    result_ = RunBien({"synth", "--features", "2000", "--out", file_.string(), "--json"});
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override { ASSERT_EQ(result_.code, 0) << result_.err; }

  static std::unique_ptr<TempDir> dir_;
  static std::filesystem::path file_;
  static CliResult result_;
  TempDir scratch_;
};
std::unique_ptr<TempDir> BenchSearchCli::dir_;
std::filesystem::path BenchSearchCli::file_;
CliResult BenchSearchCli::result_;

TEST_F(BenchSearchCli, SynthFeaturesWritesAFileTheReaderAccepts) {
  const auto j = nlohmann::json::parse(result_.out);
  EXPECT_EQ(j["count"], 2000);
  const int dim = DescriptorDim();
  EXPECT_EQ(j["dim"], dim);
  EXPECT_EQ(j["shots"], 2);
  EXPECT_EQ(j["descriptor_key"], DescriptorKey());
  EXPECT_EQ(j["synthetic_model"], SynthDescriptorKey());
  const cli::FeatureFile f =
      cli::ReadSynthFeatureFile(file_, -1, DescriptorKey(), SynthDescriptorKey());
  EXPECT_EQ(f.model, SynthDescriptorKey());
  EXPECT_EQ(f.count, 2000);
  EXPECT_EQ(f.dim, dim);
  EXPECT_EQ(f.shots, 2);
  EXPECT_EQ(f.seed, 1u);
  ASSERT_EQ(f.vectors.size(), 2000u * dim);
  // The vectors are SynthDescriptors of (seed 1, firearm, shot), firearm-major.
  SynthDescriptorOptions synth;
  synth.seed = 1;
  const auto expected = SynthDescriptors(synth, DescriptorOptions{}, 997, 3, 2);
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(f.vectors[997 * 2 * dim + i], expected[i]) << i;
  }
  double norm = 0;
  for (int i = 0; i < dim; ++i) norm += double(f.vectors[i]) * f.vectors[i];
  EXPECT_NEAR(norm, 1.0, 1e-4);
  // A prefix: only the first vectors are kept, the whole file is still checked.
  const cli::FeatureFile head = cli::ReadSynthFeatureFile(file_, 10);
  ASSERT_EQ(head.vectors.size(), 10u * dim);
  EXPECT_TRUE(std::equal(head.vectors.begin(), head.vectors.end(), f.vectors.begin()));
  // No temporary file is left beside it.
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_->path())) ++files;
  EXPECT_EQ(files, 1);
}

TEST_F(BenchSearchCli, OutputDoesNotDependOnThreads) {
  const auto one = scratch_ / "one.bin", two = scratch_ / "two.bin";
  // 700 exhibits of 3 shots: 234 firearms in two chunks of work, the last
  // firearm partial.
  for (const char* jobs : {"1", "2"}) {
    const auto out = std::string(jobs) == "1" ? one : two;
    const auto r = RunBien({"synth", "--features", "700", "--shots", "3", "--seed", "9", "--jobs",
                            jobs, "--out", out.string()});
    ASSERT_EQ(r.code, 0) << r.err;
  }
  EXPECT_EQ(ReadBytes(one), ReadBytes(two));
  const cli::FeatureFile f = cli::ReadSynthFeatureFile(one);
  EXPECT_EQ(f.count, 700);
  EXPECT_EQ(f.shots, 3);
  EXPECT_EQ(f.seed, 9u);
}

TEST_F(BenchSearchCli, DamagedTruncatedAndForeignFilesAreRefused) {
  const std::string good = ReadBytes(file_);
  auto refused = [&](const std::string& name, const std::string& bytes, const std::string& why) {
    const auto path = scratch_ / name;
    WriteBytes(path, bytes);
    const auto r = RunBien({"bench", "search", "--exhibits", "100", "--features", path.string(),
                            "--queries", "5", "--rerank", "1"});
    EXPECT_EQ(r.code, 1) << name;
    EXPECT_TRUE(Contains(r.err, path.string())) << r.err;
    EXPECT_TRUE(Contains(r.err, why)) << r.err;
    EXPECT_TRUE(Contains(ErrorOf([&] { cli::ReadSynthFeatureFile(path); }), why));
  };
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  refused("flipped.bin", flipped, "checksum mismatch");
  std::string bad_digest = good;
  bad_digest.back() = bad_digest.back() == '0' ? '1' : '0';
  refused("digest.bin", bad_digest, "checksum mismatch");
  refused("truncated.bin", good.substr(0, good.size() - 1000), "truncated");
  refused("header only.bin", good.substr(0, 20), "truncated");
  refused("trailing.bin", good + "x", "bytes after its end");
  refused("empty.bin", "", "not a bien synthetic features file");
  refused("text.bin", "id,vector\n1,0.5\n", "not a bien synthetic features file");
  std::string version = good;
  version[8] = 3;
  refused("version.bin", version, "unsupported features file version 3");
  // Version 1 files hold vectors of the first synthetic model.
  std::string first = good;
  first[8] = 1;
  refused("version 1.bin", first, "first synthetic model (sbf-v1)");
  // The model key's length lies within the header (after the descriptor key).
  std::string model_length = good;
  const size_t key_length = static_cast<unsigned char>(good[28]);
  model_length[40 + key_length] = 0;
  model_length[40 + key_length + 1] = 0;
  refused("model length.bin", model_length, "bad features file header (model key length 0)");
  std::string dim = good;
  dim[12] = 0, dim[13] = 0;
  refused("dim.bin", dim, "bad features file header");
  // A file of another descriptor version is refused by key.
  EXPECT_TRUE(
      Contains(ErrorOf([&] { cli::ReadSynthFeatureFile(file_, -1, "bfd-v2 something else"); }),
               "descriptor key differs"));
  // ... and so is a file of another synthetic model.
  SynthDescriptorOptions first_model;
  first_model.mark_waves = 1;
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         cli::ReadSynthFeatureFile(file_, -1, DescriptorKey(),
                                                   SynthDescriptorKey(first_model));
                       }),
                       "synthetic model differs"));
  // Fewer vectors than asked for.
  const auto r = RunBien({"bench", "search", "--exhibits", "2001", "--features", file_.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "holds 2000 vectors, fewer than the 2001")) << r.err;
  EXPECT_TRUE(Contains(r.err, file_.string())) << r.err;
}

TEST_F(BenchSearchCli, BenchSearchFindsTheMates) {
  const auto r = RunBien({"bench", "search", "--exhibits", "2000,500,2000", "--features",
                          file_.string(), "--queries", "50", "--rerank", "8", "--ring-pool", "40",
                          "--ring-codes", "40", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["descriptor_key"], DescriptorKey());
  EXPECT_EQ(j["shots_per_firearm"], 2);
  ASSERT_EQ(j["runs"].size(), 3u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["exhibits"], 2000);
  EXPECT_EQ(run["queries"], 50);
  EXPECT_EQ(run["indexed"], 1950);  // the 50 held-out shots are not in the index
  EXPECT_EQ(run["kind"], "exact");
  EXPECT_GT(run["bytes_per_exhibit"].get<double>(), DescriptorDim() * 4);
  EXPECT_GT(run["query_ms_median"].get<double>(), 0);
  EXPECT_GE(run["query_ms_p99"].get<double>(), run["query_ms_median"].get<double>());
  for (const char* field : {"mate_recall_at_10", "mate_recall_at_100", "exact_mate_recall_at_10",
                            "exact_mate_recall_at_100", "neighbour_recall_at_10"}) {
    EXPECT_GE(run[field].get<double>(), 0.0) << field;
    EXPECT_LE(run[field].get<double>(), 1.0) << field;
  }
  // The descriptor's own recall (docs/DESCRIPTOR.md: 70 % in the top 100 of
  // 4000); chance would be 100 / 1950 = 5 %.
  EXPECT_GE(run["mate_recall_at_100"].get<double>(), 0.6);
  EXPECT_GE(run["mate_recall_at_100"].get<double>(), run["mate_recall_at_10"].get<double>());
  EXPECT_DOUBLE_EQ(run["neighbour_recall_at_10"].get<double>(), 1.0);  // exact is exact
  EXPECT_EQ(j["runs"][1]["exhibits"], 500);
  EXPECT_EQ(j["runs"][1]["indexed"], 450);
  // The held-out rows are put back after each size: the same size again
  // measures the same vectors.
  for (const char* field : {"mate_recall_at_10", "mate_recall_at_100", "index_bytes"}) {
    EXPECT_EQ(j["runs"][2][field], run[field]) << field;
  }
  // The fine stage ran for real: the mate is ranked first by CMC.
  const auto& fine = j["fine"];
  EXPECT_EQ(fine["candidates"], 8);
  EXPECT_EQ(fine["mate_rank"], 1);
  EXPECT_GT(fine["mate_score"].get<double>(), fine["best_other_score"].get<double>());
  EXPECT_GT(fine["per_candidate_ms"]["compare"].get<double>(), 0);
  // The ring stage: each query's best 40 by cosine re-ranked by ring
  // correlation; its top 10 holds a mate at least as often as the cosine's.
  const auto& ring = run["ring_stage"];
  EXPECT_EQ(ring["pool"], 40);
  EXPECT_EQ(j["ring_spectra_key"], RingSpectraKey());
  EXPECT_GT(ring["ms_median"].get<double>(), 0);
  EXPECT_GE(ring["mate_recall_at_10"].get<double>(), run["mate_recall_at_10"].get<double>());
  EXPECT_EQ(ring["queries_without_spectra"], 0);
  // The ring screen, as the search runs it on a partition larger than the
  // pool (here its best 40): every exhibit's codes scored, its best join
  // the pool.
  const auto& codes = run["ring_codes"];
  EXPECT_EQ(codes["keep"], 40);
  EXPECT_EQ(codes["key"], RingCodec::KeyFor());
  EXPECT_EQ(codes["bytes_per_exhibit"], 544);
  EXPECT_EQ(codes["trained_on"], 1950);
  EXPECT_GT(codes["kept_energy"].get<double>(), 0.8);
  EXPECT_GT(codes["union_mean"].get<double>(), 40);
  EXPECT_LE(codes["union_mean"].get<double>(), 80);
  EXPECT_GE(codes["mate_recall_at_100"].get<double>(), ring["mate_recall_at_100"].get<double>());
  EXPECT_DOUBLE_EQ(run["coarse_ms"].get<double>(), ring["pool_query_ms_median"].get<double>() +
                                                       codes["screen_ms_median"].get<double>() +
                                                       codes["stage_ms_median"].get<double>());
  EXPECT_DOUBLE_EQ(run["end_to_end_ms"].get<double>(),
                   run["coarse_ms"].get<double>() + fine["total_ms"].get<double>());
  // Text output: one row per size.
  const auto t = RunBien({"bench", "search", "--exhibits", "400", "--features", file_.string(),
                          "--queries", "20", "--rerank", "2", "--ring-pool", "20"});
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_TRUE(Contains(t.out, "MATE@100")) << t.out;
  EXPECT_TRUE(Contains(t.out, "compressed ring screen (brc-v1")) << t.out;
  // Without the screen the coarse stage is the pool and the ring stage.
  const auto off = nlohmann::json::parse(
      RunBien({"bench", "search", "--exhibits", "400", "--features", file_.string(), "--queries",
               "20", "--rerank", "2", "--ring-pool", "20", "--ring-codes", "0", "--json"})
          .out);
  const auto& off_run = off["runs"][0];
  EXPECT_TRUE(off_run["ring_codes"].is_null());
  EXPECT_DOUBLE_EQ(off_run["coarse_ms"].get<double>(),
                   off_run["ring_stage"]["pool_query_ms_median"].get<double>() +
                       off_run["ring_stage"]["ms_median"].get<double>());
  EXPECT_TRUE(Contains(t.out, "RING@100")) << t.out;
  EXPECT_TRUE(Contains(t.out, "exact")) << t.out;
  EXPECT_TRUE(Contains(t.out, "fine stage (2 candidates")) << t.out;
}

TEST_F(BenchSearchCli, BenchSearchKindIsChosenAndReported) {
  // 500 exhibits are far below exact_below: --kind forces the kind anyway.
  for (const std::string kind : {"binary_sq8", "ivf_sq8", "exact"}) {
    const auto r =
        RunBien({"bench", "search", "--exhibits", "500", "--features", file_.string(), "--queries",
                 "20", "--rerank", "2", "--kind", kind, "--ring-pool", "0", "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    const auto run = nlohmann::json::parse(r.out)["runs"][0];
    EXPECT_EQ(run["kind"], kind);
    EXPECT_GE(run["mate_recall_at_100"].get<double>(), 0.0);
  }
  const auto r = RunBien(
      {"bench", "search", "--exhibits", "500", "--features", file_.string(), "--kind", "hnsw"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "--kind")) << r.err;
  // --hamming picks binary_sq8's bit counting; the portable kernel runs on
  // every CPU and finds what the default finds.
  nlohmann::json recall;
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, std::vector<std::string>{"--hamming", "portable"}}) {
    std::vector<std::string> cmd = {
        "bench",        "search",     "--exhibits",  "500",      "--features",
        file_.string(), "--queries",  "20",          "--rerank", "2",
        "--kind",       "binary_sq8", "--ring-pool", "0",        "--json"};
    cmd.insert(cmd.end(), extra.begin(), extra.end());
    const auto h = RunBien(cmd);
    ASSERT_EQ(h.code, 0) << h.err;
    const auto j = nlohmann::json::parse(h.out);
    if (!extra.empty()) {
      EXPECT_EQ(j["hamming_kernel"], "portable");
    }
    const auto& run = j["runs"][0];
    if (recall.is_null()) recall = run["mate_recall_at_100"];
    EXPECT_EQ(run["mate_recall_at_100"], recall);
  }
  const auto bad = RunBien(
      {"bench", "search", "--exhibits", "500", "--features", file_.string(), "--hamming", "sse9"});
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(Contains(bad.err, "--hamming")) << bad.err;
}

TEST(BenchSearchCliArgs, BadArgumentsAreRefused) {
  TempDir dir;
  auto r = RunBien({"bench", "search", "--exhibits", "3", "--shots", "2", "--queries", "1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "need at least 4")) << r.err;
  r = RunBien({"bench", "search", "--exhibits", "100", "--queries", "0"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--queries")) << r.err;
  r = RunBien({"bench", "search", "--exhibits", "100", "--shots", "1", "--rerank", "1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no mates")) << r.err;
  r = RunBien({"bench", "search", "--exhibits", "100", "--ring-codes", "-2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--ring-codes must be -1")) << r.err;
  r = RunBien({"bench", "search", "--exhibits", "100", "--ring-codes", "10", "--ring-pool", "0"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "give --ring-pool too")) << r.err;
  r = RunBien({"synth", "--features", "0", "--out", (dir / "f.bin").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "count must be at least 1")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "f.bin"));
  r = RunBien({"synth", "--features", "10", "--out", (dir / "no such folder" / "f.bin").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no such folder")) << r.err;
}

}  // namespace
}  // namespace bien::testing

// `bien bench node` as a process (the built bien binary): a small run whose
// output and node are checked (no timing is asserted), and refused
// arguments.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "matching/descriptor.h"
#include "storage/store.h"
#include "tests/test_util.h"
#include "tests/tools/process_util.h"

namespace bien::testing {
namespace {

namespace fs = std::filesystem;

// 1200 exhibits: 2 synthetic queries, their mates, 1196 distractors with
// descriptors, ring spectra and linked fine features; a ring pool of 300 so
// the partition is larger than it and the ring screen runs.
TEST(BenchNode, SmallRunSearchesAStoreWithSpectraAndFindsTheMates) {
  TempDir tmp;
  const fs::path work = tmp / "work";
  const Ran r = RunProcess({"bench", "node", "--exhibits", "1200", "--queries", "2", "--ring-pool",
                            "300", "--ring-screen", "200", "--work", work.string(), "--json"},
                           tmp.path(), 540000);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["problems"].empty()) << j["problems"].dump();
  EXPECT_EQ(j["exhibits"], 1200);
  const auto& d = j["setup"]["distractors"];
  EXPECT_EQ(d["count"], 1196);
  const int64_t without = d["without_spectra"].get<int64_t>();
  EXPECT_LT(without, 120);  // a few synthetic shots are too sparse for ring spectra
  EXPECT_EQ(j["setup"]["index"]["size"], 1200);
  // Every scan with ring spectra has a code: the distractors' and the four
  // ingested scans'.
  EXPECT_EQ(j["setup"]["ring_codes"]["size"].get<int64_t>(), 1196 - without + 4);
  ASSERT_EQ(j["searches"].size(), 2u);
  for (const auto& s : j["searches"]) {
    SCOPED_TRACE(s["query"].get<std::string>());
    EXPECT_EQ(s["partition_scans"], 1200);
    EXPECT_GE(s["compared"].get<int>(), 100);  // the top 100 and query expansion's
    EXPECT_EQ(s["ring_pool"].get<int>(), 300 + s["screen_added"].get<int>());
    EXPECT_GT(s["screen_added"].get<int>(), 0);  // the screen brought candidates in
    EXPECT_EQ(s["screen_note"], "loaded");       // saved by the set-up, read by the process
    EXPECT_EQ(s["mate_rank"], 1);
    EXPECT_GT(s["mate_score"].get<double>(), 10);
    EXPECT_GT(s["fine_ms"].get<double>(), 0);
    EXPECT_GT(s["wall_ms"].get<double>(), s["coarse_ms"].get<double>());
  }
  EXPECT_EQ(j["mates_first"], 2);
  EXPECT_EQ(j["wall_ms"]["n"], 2);
  // The node is kept with --work: the distractors carry ring spectra and
  // links to the feature pool.
  auto store = Store::Open(work / "node");
  const ExhibitRecord e = store->FindExhibit(std::string(kBenchDistractorCase) + "/D0000001");
  const auto scans = store->ScansOf(e.id);
  ASSERT_EQ(scans.size(), 1u);
  EXPECT_TRUE(store->GetDescriptor(scans[0].id, DescriptorKey()).has_value());
  const Partition p{ExhibitKind::kCartridgeCase, "9mm Luger"};
  EXPECT_EQ(store->DescriptorScanIds(RingSpectraKey(), p).size(),
            static_cast<size_t>(1196 - without + 4));
  EXPECT_TRUE(fs::exists(work / "feature-pool" / "64.cmcf"));
}

// --through-node: the node's `bien serve` runs the searches, with the index
// it loaded when it started in memory.
TEST(BenchNode, ThroughTheNodeTheIndexStaysInMemory) {
  TempDir tmp;
  const Ran r = RunProcess(
      {"bench", "node", "--exhibits", "600", "--queries", "1", "--through-node", "--json"},
      tmp.path(), 540000);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["problems"].empty()) << j["problems"].dump();
  EXPECT_TRUE(j["through_node"].get<bool>());
  EXPECT_EQ(j["first_search"]["index_note"], "in memory");
  ASSERT_EQ(j["searches"].size(), 1u);
  EXPECT_EQ(j["searches"][0]["index_note"], "in memory");
  EXPECT_EQ(j["searches"][0]["mate_rank"], 1);
}

TEST(BenchNode, RefusesBadArguments) {
  TempDir tmp;
  Ran r = RunProcess({"bench", "node", "--exhibits", "4", "--queries", "2"}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--exhibits 4: need more than twice --queries (2)")) << r.err;
  r = RunProcess({"bench", "node", "--queries", "0"}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--queries: 1 to 999"));
  r = RunProcess({"bench", "node", "--ring-pool", "-5"}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--ring-pool and --ring-screen must be 0 or more"));
  r = RunProcess({"bench", "node", "--data", (tmp / "nowhere").string()}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "nowhere: no such folder"));
  fs::create_directories(tmp / "busy");
  std::ofstream(tmp / "busy" / "x") << "x";
  r = RunProcess({"bench", "node", "--work", (tmp / "busy").string()}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "exists and is not an empty folder"));
  // A features file that is not one is refused by its reader, naming it.
  std::ofstream(tmp / "bad.bin") << "not a features file";
  r = RunProcess({"bench", "node", "--exhibits", "300", "--queries", "1", "--features",
                  (tmp / "bad.bin").string()},
                 tmp.path(), 120000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "bad.bin")) << r.err;
}

}  // namespace
}  // namespace bien::testing

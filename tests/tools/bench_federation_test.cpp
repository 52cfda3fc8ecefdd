// `bien bench federation` as a process (the built bien binary): a small run
// whose output is checked (no timing is asserted), refused arguments, and
// the nodes stopping by themselves when the bench is killed. The nodes
// listen on 127.0.0.1 only; every process is stopped by the test.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/test_util.h"
#include "tests/tools/process_util.h"

namespace bien::testing {
namespace {

namespace fs = std::filesystem;

TEST(BenchFederation, SmallRunAnswersFindsTheMatesAndScoresEveryCandidate) {
  TempDir tmp;
  const fs::path work = tmp / "work";
  const Ran r = RunProcess({"bench", "federation", "--exhibits", "2000", "--queries", "2", "--work",
                            work.string(), "--json"},
                           tmp.path(), 540000);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["ok"].get<bool>()) << j["problems"].dump();
  EXPECT_EQ(j["exhibits_per_node"], 2000);
  ASSERT_EQ(j["nodes"].size(), 3u);
  for (const auto& n : j["nodes"]) {
    EXPECT_EQ(n["exhibits"], 2000) << n["name"];
    EXPECT_EQ(n["real"], 2);
    EXPECT_EQ(n["distractors"], 1998);
    EXPECT_EQ(n["index"]["size"], 2000);
  }
  for (const char* mode : {"coarse_only", "fine"}) {
    SCOPED_TRACE(mode);
    const auto& run = j["runs"][mode];
    EXPECT_EQ(run["searches"], 2);
    EXPECT_EQ(run["all_peers_answered"], 2);
    // Each query's mates (one on each peer) come back in the merged list.
    EXPECT_EQ(run["mates_possible"], 4);
    EXPECT_EQ(run["mates_found"], 4);
    // The local search listed its 100 candidates each time, and compared
    // them unless the search was coarse-only (locally too).
    EXPECT_EQ(run["local_candidates"], 200);
    EXPECT_EQ(run["local_fine_scored"], std::string(mode) == "fine" ? 200 : 0);
    // Each peer returned its whole top 100.
    EXPECT_EQ(run["peer_candidates"], 400);
    for (const auto& q : run["per_query"]) {
      EXPECT_TRUE(q["all_answered"].get<bool>());
      EXPECT_EQ(q["local_skipped"], 0);
      for (const auto& p : q["peers"]) {
        EXPECT_EQ(p["status"], "ok");
        EXPECT_EQ(p["partition_size"], 2000);
        EXPECT_FALSE(p["mate_rank"].is_null()) << p["peer"];
      }
    }
  }
  // With the fine re-rank every candidate a peer compared has a CMC score,
  // and each query's mate is at the top of its peer's answer.
  EXPECT_EQ(j["runs"]["fine"]["peer_candidates_fine_scored"], 400);
  EXPECT_EQ(j["runs"]["coarse_only"]["peer_candidates_fine_scored"], 0);
  for (const auto& q : j["runs"]["fine"]["per_query"]) {
    for (const auto& p : q["peers"]) {
      EXPECT_EQ(p["fine_scored"], 100);
      EXPECT_GT(p["fine_ms"].get<double>(), 0);
      EXPECT_LE(p["mate_rank"].get<int>(), 3) << p["peer"];  // the two mates, then the rest
    }
  }
  // The nodes were stopped cleanly; --work keeps the folder.
  EXPECT_TRUE(fs::exists(work / "rs" / "bien.db"));
  for (const char* n : {"rs", "ba", "mk"}) EXPECT_FALSE(fs::exists(work / n / "serve.endpoint"));
  EXPECT_TRUE(Contains(ReadFile(work / "ba.log"), "stop signal received"));
}

TEST(BenchFederation, RefusesBadArguments) {
  TempDir tmp;
  Ran r =
      RunProcess({"bench", "federation", "--exhibits", "5", "--queries", "5"}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--exhibits 5: need more than --queries (5) per node"));
  r = RunProcess({"bench", "federation", "--queries", "0"}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--queries: 1 to 999"));
  r = RunProcess({"bench", "federation", "--features", (tmp / "none.bin").string()}, tmp.path(),
                 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "none.bin: no such file"));
  fs::create_directories(tmp / "busy");
  std::ofstream(tmp / "busy" / "x") << "x";
  r = RunProcess({"bench", "federation", "--work", (tmp / "busy").string()}, tmp.path(), 60000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "exists and is not an empty folder"));
  // A features file of another descriptor key is refused by its reader.
  std::ofstream(tmp / "bad.bin") << "not a features file";
  r = RunProcess({"bench", "federation", "--exhibits", "300", "--queries", "1", "--features",
                  (tmp / "bad.bin").string()},
                 tmp.path(), 120000);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "bad.bin")) << r.err;
}

// Killed with SIGKILL while its nodes run, the bench leaves no node behind:
// each gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and shuts down cleanly.
TEST(BenchFederation, NodesStopWhenTheBenchIsKilled) {
  TempDir tmp;
  const fs::path work = tmp / "work";
  const pid_t pid = SpawnBien(
      {"bench", "federation", "--exhibits", "300", "--queries", "1", "--work", work.string()},
      tmp / "out.txt", tmp / "err.txt");
  auto serving = [&] {
    int n = 0;
    for (const char* d : {"rs", "ba", "mk"}) n += fs::exists(work / d / "serve.endpoint");
    return n;
  };
  bool all = false;
  for (int i = 0; i < 6000 && !all; ++i) {  // up to 120 s
    all = serving() == 3;
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(all) << ReadFile(tmp / "out.txt") << ReadFile(tmp / "err.txt");
  bool gone = false;
  for (int i = 0; i < 750 && !gone; ++i) {  // up to 15 s
    gone = serving() == 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "a node kept running after the bench was killed";
  for (const char* n : {"rs", "ba", "mk"}) {
    EXPECT_TRUE(Contains(ReadFile(work / (std::string(n) + ".log")), "stop signal received")) << n;
  }
}

}  // namespace
}  // namespace bien::testing

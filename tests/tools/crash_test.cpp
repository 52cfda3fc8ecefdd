// Crash safety: a `bien ingest` process killed with SIGKILL part-way leaves a
// store that opens, verifies, and holds every exhibit either fully or not at all.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "imaging/synth.h"
#include "storage/store.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

constexpr int kScansPerExhibit = 3;

pid_t SpawnBien(const std::vector<std::string>& args, const std::filesystem::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    std::vector<char*> argv{const_cast<char*>(BIEN_EXE)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(BIEN_EXE, argv.data());
    _exit(127);
  }
  return pid;
}

TEST(CrashSafety, KilledIngestLeavesWholeExhibitsOnly) {
  TempDir dir;
  SynthOptions o;
  o.firearms = 24;
  o.shots = kScansPerExhibit;
  o.size_px = 300;
  o.seed = 11;
  const auto files = WriteSynthSet(dir / "synth", o);
  {
    std::ofstream m(dir / "synth" / "manifest.csv");
    m << "path,case,exhibit,kind,role,land\n";
    for (const auto& f : files) {
      m << "\"" << f.file_name << "\",CRASH-1," << f.source << ",bullet,evidence," << f.shot + 1
        << "\n";
    }
  }
  const std::string node = (dir / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  const std::vector<std::string> ingest{
      "ingest", "--node", node, "--manifest", (dir / "synth" / "manifest.csv").string(),
      "--jobs", "1"};

  // Kill at different moments: as soon as the first exhibit lands, then later.
  for (int round = 0; round < 3; ++round) {
    const pid_t pid = SpawnBien(ingest, dir / ("ingest-" + std::to_string(round) + ".log"));
    ASSERT_GT(pid, 0);
    const auto start = std::chrono::steady_clock::now();
    const int64_t before = CountsOf(node).scans;
    const int64_t wait_for = before + kScansPerExhibit * (round + 1);
    bool finished = false;
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        finished = true;
        break;
      }
      if (CountsOf(node).scans >= wait_for) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!finished) {
      ASSERT_EQ(kill(pid, SIGKILL), 0);
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFSIGNALED(status));
    }

    auto store = Store::Open(node);
    const VerifyReport report = store->Verify();
    EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems[0]);
    for (const auto& e : store->ListExhibits()) {
      EXPECT_EQ(e.scan_count, kScansPerExhibit) << "exhibit " << e.exhibit_ref << " is partial";
    }
    const StoreCounts counts = store->Counts();
    EXPECT_EQ(counts.scans, counts.exhibits * kScansPerExhibit);
    EXPECT_LT(counts.scans, static_cast<int64_t>(files.size())) << "killed too late to test";
  }

  // Running the same ingest again completes the store; what was there is reported
  // as duplicates.
  const auto r = RunBien(ingest);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  const StoreCounts counts = CountsOf(node);
  EXPECT_EQ(counts.scans, static_cast<int64_t>(files.size()));
  EXPECT_EQ(counts.exhibits, o.firearms);
  EXPECT_EQ(RunBien({"verify", "--node", node}).code, 0);
}

}  // namespace
}  // namespace bien::testing

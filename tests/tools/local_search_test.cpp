// `bien search` through the serving node (tools/local_search.h), with the
// built bien binary as processes: the node's `bien serve` runs the search
// with the partition's index in memory, `--standalone` runs it in the
// calling process, a stale socket falls back to the calling process, a node
// that stops during a search is noticed. The
// node listens on 127.0.0.1 and a socket file in its folder; every process
// is stopped by the test.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <zmq.hpp>

#include "storage/store.h"
#include "tests/test_util.h"
#include "tests/tools/process_util.h"
#include "tools/local_search.h"

namespace bien::testing {
namespace {

namespace fs = std::filesystem;

class LocalSearchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = tmp_ / "node";
    ASSERT_EQ(
        RunProcess({"init", "--node", node_.string(), "--name", "LS", "--country", "RS"}).code, 0);
    ASSERT_EQ(RunProcess({"keys", "--node", node_.string()}).code, 0);
    // 4 synthetic firearms x 2 shots, each shot an exhibit of its own case.
    const fs::path samples = tmp_ / "samples";
    ASSERT_EQ(RunProcess({"synth", "--out", samples.string(), "--firearms", "4", "--shots", "2",
                          "--seed", "11", "--size-px", "400"})
                  .code,
              0);
    std::ofstream manifest(samples / "manifest.csv");
    manifest << "path,case,exhibit,kind,role,calibre\n";
    for (int f = 1; f <= 4; ++f) {
      for (int s = 1; s <= 2; ++s) {
        manifest << "\"synth F0" << f << "-" << s << ".x3p\",C" << f << "-" << s
                 << ",E1,cartridge_case,evidence,9mm Luger\n";
      }
    }
    manifest.close();
    const Ran ingest = RunProcess({"ingest", "--node", node_.string(), "--manifest",
                                   (samples / "manifest.csv").string(), "--no-search"});
    ASSERT_EQ(ingest.code, 0) << ingest.out << ingest.err;
  }

  void TearDown() override {
    if (serve_ > 0) {
      kill(serve_, SIGKILL);
      Reap(serve_, 15000);
    }
  }

  Ran RunProcess(const std::vector<std::string>& args) {
    return testing::RunProcess(args, tmp_.path(), 300000);
  }

  void StartServe() {
    serve_ = SpawnBien({"serve", "--node", node_.string(), "--listen", "tcp://127.0.0.1:*"},
                       tmp_ / "serve.log");
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!fs::exists(cli::LocalSearchSocket(node_)) && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(fs::exists(cli::LocalSearchSocket(node_))) << ReadFile(tmp_ / "serve.log");
  }

  bool ServeLogSays(const std::string& text, int ms = 15000) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (ReadFile(tmp_ / "serve.log").find(text) == std::string::npos) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  }

  // `bien search C1-1/E1 --json` with `extra`; the parsed output.
  nlohmann::json Search(const std::vector<std::string>& extra, Ran* ran = nullptr) {
    std::vector<std::string> args{"search", "--node", node_.string(), "C1-1/E1", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Ran r = RunProcess(args);
    if (ran) *ran = r;
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  static std::vector<std::string> Exhibits(const nlohmann::json& j) {
    std::vector<std::string> out;
    for (const auto& c : j["candidates"]) out.push_back(c["exhibit"].get<std::string>());
    return out;
  }

  TempDir tmp_;
  fs::path node_;
  pid_t serve_ = -1;
};

TEST_F(LocalSearchTest, TheServingNodeRunsTheSearchWithItsIndexInMemory) {
  // No node serving: the search runs in its own process and builds the index.
  const auto alone = Search({"--no-leads"});
  ASSERT_FALSE(alone.is_discarded());
  EXPECT_EQ(alone["index"]["note"], "rebuilt: no saved index");
  ASSERT_FALSE(alone["candidates"].empty());
  EXPECT_EQ(alone["candidates"][0]["exhibit"], "C1-2/E1");  // the mate first

  StartServe();
  const fs::path socket = cli::LocalSearchSocket(node_);
  EXPECT_EQ(fs::status(socket).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // The node loads the saved index when it starts; through it every search
  // finds it in memory, and the list is the same as in a process of its own.
  ASSERT_TRUE(ServeLogSays("local searches: indexes ready (1 cartridge-case partitions"))
      << ReadFile(tmp_ / "serve.log");
  EXPECT_TRUE(ServeLogSays("cartridge_case|9mm Luger ready, 8 scans; index loaded"))
      << ReadFile(tmp_ / "serve.log");
  const auto first = Search({"--no-leads"});
  EXPECT_EQ(first["index"]["note"], "in memory");
  const auto second = Search({"--no-leads"});
  EXPECT_EQ(second["index"]["note"], "in memory");
  EXPECT_EQ(Exhibits(second), Exhibits(alone));
  // --standalone: in this process again.
  EXPECT_EQ(Search({"--no-leads", "--standalone"})["index"]["note"], "loaded");
  // The node logs each search; leads are recorded by the user who searched.
  const auto with_leads = Search({"--user", "alice"});
  EXPECT_FALSE(with_leads["leads"].empty());
  const std::string log = ReadFile(tmp_ / "serve.log");
  EXPECT_NE(log.find("local search (search C1-1/E1 --json --no-leads"), std::string::npos) << log;
  {
    auto store = Store::Open(node_);
    const auto trail = store->AuditTrail(std::nullopt);
    ASSERT_FALSE(trail.empty());
    EXPECT_EQ(trail.back().action, "record_leads");
    EXPECT_EQ(trail.back().actor, "alice");
  }
  // Errors come back as the command's own, with its exit code.
  const Ran missing = RunProcess({"search", "--node", node_.string(), "NO-SUCH/E9", "--no-leads"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("NO-SUCH/E9"), std::string::npos) << missing.err;

  // A clean stop removes the socket.
  kill(serve_, SIGTERM);
  EXPECT_EQ(Reap(serve_, 15000), 0);
  serve_ = -1;
  EXPECT_FALSE(fs::exists(socket));
}

TEST_F(LocalSearchTest, AStaleSocketFallsBackToThisProcess) {
  StartServe();
  kill(serve_, SIGKILL);  // leaves NODE/search.ipc behind with nobody listening
  Reap(serve_, 15000);
  serve_ = -1;
  ASSERT_TRUE(fs::exists(cli::LocalSearchSocket(node_)));
  Ran r;
  const auto j = Search({"--no-leads"}, &r);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_NE(r.err.find("did not take the search"), std::string::npos) << r.err;
  EXPECT_EQ(j["candidates"][0]["exhibit"], "C1-2/E1");
  // A node started again replaces the stale socket and serves.
  StartServe();
  EXPECT_EQ(Search({"--no-leads"})["index"]["note"], "in memory");
}

TEST_F(LocalSearchTest, ANodeThatStopsDuringTheSearchIsNoticed) {
  // A stand-in for the node: takes the search, never answers, goes away.
  zmq::context_t context;
  zmq::socket_t rep(context, zmq::socket_type::rep);
  rep.set(zmq::sockopt::linger, 0);
  rep.set(zmq::sockopt::rcvtimeo, 15000);
  rep.bind("ipc://" + cli::LocalSearchSocket(node_).string());
  const pid_t pid = SpawnBien({"search", "--node", node_.string(), "C1-1/E1", "--no-leads"},
                              tmp_ / "o.txt", tmp_ / "e.txt");
  zmq::message_t first;
  ASSERT_TRUE(rep.recv(first));  // the hand-over
  EXPECT_EQ(first.to_string(), "bien-local-search-v1");
  rep.close();
  fs::remove(cli::LocalSearchSocket(node_));
  EXPECT_EQ(Reap(pid, 30000), 1);
  EXPECT_NE(ReadFile(tmp_ / "e.txt").find("the serving node stopped during the search"),
            std::string::npos)
      << ReadFile(tmp_ / "e.txt");
}

TEST(LocalSearchArgs, ForwardsAPlainSearchWithTheNodeAndUser) {
  const fs::path dir = "/srv/node";
  auto a = cli::LocalSearchArgs(
      {"--node", "x", "search", "C/E", "--json", "--user=bob", "--top", "5"}, dir, "alice");
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, (std::vector<std::string>{"search", "C/E", "--json", "--top", "5", "--node",
                                          "/srv/node", "--user", "alice", "--standalone"}));
  a = cli::LocalSearchArgs({"search", "--node=/x", "C/E", "--user", "bob"}, dir, "bob");
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, (std::vector<std::string>{"search", "C/E", "--node", "/srv/node", "--user", "bob",
                                          "--standalone"}));
  EXPECT_FALSE(cli::LocalSearchArgs({"search", "C/E", "--federated"}, dir, "a"));
  EXPECT_FALSE(cli::LocalSearchArgs({"search", "C/E", "--standalone"}, dir, "a"));
  EXPECT_FALSE(cli::LocalSearchArgs({"leads", "--open"}, dir, "a"));
  EXPECT_FALSE(cli::LocalSearchArgs({"--json"}, dir, "a"));
}

}  // namespace
}  // namespace bien::testing

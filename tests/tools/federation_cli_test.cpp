// The federation as separate `bien serve` processes on loopback (the built
// bien binary): the demo, and fault tests — kill -9 of a node with hit
// notices and correlation requests in flight, a link down (a node stopped)
// for a while, 3 nodes x 1,000 messages — each checking that every message
// took effect exactly once. Bounded in time; the processes are stopped by
// the test.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "exchange/codec.h"
#include "exchange/keys.h"
#include "storage/exchange_store.h"
#include "tests/test_util.h"
#include "tests/tools/process_util.h"

namespace bien::testing {
namespace {

namespace fs = std::filesystem;

template <typename F>
bool WaitFor(F done, int ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

struct ProcNode {
  std::string name;
  fs::path dir;
  std::string key;
  std::string endpoint;
  pid_t pid = -1;
};

class FederationProcessTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (ProcNode& n : nodes_) Stop(n, SIGTERM);
  }

  ProcNode& Make(const std::string& name, const std::string& country) {
    ProcNode n;
    n.name = name;
    n.dir = tmp_ / name;
    Store::Create(n.dir, NodeConfig{name, country, "", ""}, "admin");
    n.key = exchange::LoadOrCreateKeyPair(n.dir, nullptr).public_key;
    nodes_.push_back(n);
    return nodes_.back();
  }

  // Starts `bien serve` (on its earlier endpoint when it has one) and waits
  // for its endpoint file.
  void Start(ProcNode& n) {
    fs::remove(n.dir / "serve.endpoint");
    n.pid =
        SpawnBien({"serve", "--node", n.dir.string(), "--listen",
                   n.endpoint.empty() ? "tcp://127.0.0.1:*" : n.endpoint, "--heartbeat-ms", "200"},
                  tmp_ / (n.name + ".log"));
    std::string endpoint;
    ASSERT_TRUE(WaitFor(
        [&] {
          std::ifstream(n.dir / "serve.endpoint") >> endpoint;
          return !endpoint.empty();
        },
        15000))
        << ReadFile(tmp_ / (n.name + ".log"));
    n.endpoint = endpoint;
  }

  int Stop(ProcNode& n, int sig) {
    if (n.pid <= 0) return -1;
    kill(n.pid, sig);
    const int code = Reap(n.pid, 15000);
    n.pid = -1;
    return code;
  }

  void Federate() {
    for (ProcNode& n : nodes_) {
      auto ex = ExchangeStore::Open(n.dir);
      for (const ProcNode& p : nodes_) {
        if (&p != &n) ex->AddPeer("admin", {p.name, p.endpoint, p.key, {"*"}});
      }
    }
  }

  // Queues `count` hit notices from `from` to `to` in from's outbox (as `bien
  // confirm` does), each with its own hit id; returns the hit ids.
  std::set<std::string> QueueNotices(const ProcNode& from, const ProcNode& to, int count) {
    auto ex = ExchangeStore::Open(from.dir);
    const auto peer = ex->PeerByKey(to.key);
    EXPECT_TRUE(peer);
    std::set<std::string> ids;
    for (int i = 0; i < count; ++i) {
      exchange::HitNotice h;
      h.hit_id = exchange::NewId();
      h.sender_case_ref = from.name + "-case";
      h.sender_exhibit_ref = "E" + std::to_string(i);
      h.receiver_case_ref = to.name + "-case";
      h.receiver_exhibit_ref = "E" + std::to_string(i);
      h.confirmed_by = "expert";
      h.confirmed_at_ms = exchange::NowMs();
      h.fine_score = 20;
      h.method = "cmc-v1";
      const exchange::Message m = exchange::NewMessage(from.key, h);
      ex->Enqueue(peer->id, {m.id, "hit_notice", exchange::Encode(m), std::nullopt});
      ids.insert(h.hit_id);
    }
    return ids;
  }

  // The hit ids of the remote alerts a node holds, from each sender (by
  // payload "peer"); fails on a duplicate.
  std::map<std::string, std::multiset<std::string>> Received(const ProcNode& n) {
    std::map<std::string, std::multiset<std::string>> out;
    for (const AlertRecord& a : Store::Open(n.dir)->Alerts()) {
      if (a.origin != "remote") continue;
      const std::string p = a.payload_json;
      const size_t at = p.find("\"hit_id\":\"");
      out[a.peer.value_or("?")].insert(p.substr(at + 10, 32));
    }
    return out;
  }

  int64_t QueueDepth(const ProcNode& n) {
    int64_t depth = 0;
    for (const PeerRecord& p : ExchangeStore::Open(n.dir)->Peers()) depth += p.queue_depth;
    return depth;
  }

  TempDir tmp_;
  std::vector<ProcNode> nodes_;
};

TEST_F(FederationProcessTest, ThreeNodesTimesAThousandMessagesThroughKillNineAndALinkDown) {
  nodes_.reserve(3);
  ProcNode& a = Make("RS", "RS");
  ProcNode& b = Make("BA", "BA");
  ProcNode& c = Make("MK", "MK");
  for (ProcNode* n : {&a, &b, &c}) Start(*n);
  Federate();
  // 3 nodes x 1,000 messages: 500 to each of the two peers.
  std::map<std::string, std::map<std::string, std::set<std::string>>> sent;  // to -> from -> ids
  for (ProcNode* from : {&a, &b, &c}) {
    for (ProcNode* to : {&a, &b, &c}) {
      if (from != to) sent[to->name][from->name] = QueueNotices(*from, *to, 500);
    }
  }
  // A correlation request from RS to BA in flight too.
  auto ex_a = ExchangeStore::Open(a.dir);
  ExhibitSpec spec;
  spec.case_ref = "RS-1";
  spec.exhibit_ref = "E1";
  spec.cc.calibre = "9mm Luger";
  const std::vector<std::byte> bytes{std::byte{1}};
  ScanMeta meta;
  meta.original_name = "q.x3p";
  meta.format = "x3p";
  meta.width = meta.height = 4;
  meta.dx_m = meta.dy_m = 1e-6;
  const NewScan scan{meta, bytes};
  const ExhibitId q = ex_a->store().AddScans("alice", spec, {&scan, 1})[0].exhibit;
  exchange::CorrelationRequest req;
  req.request_id = exchange::NewId();
  req.cc.calibre = "9mm Luger";
  req.descriptor_key = "bfd-v1";
  req.descriptor = {1, 2, 3};
  req.case_ref = "RS-1";
  req.exhibit_ref = "E1";
  req.expires_ms = exchange::NowMs() + 120000;
  const exchange::Message rm = exchange::NewMessage(a.key, req);
  ex_a->StartFederatedSearch(
      "alice", q, req.request_id, req.expires_ms,
      {{ex_a->PeerByKey(b.key)->id,
        {rm.id, "correlation_request", exchange::Encode(rm), req.expires_ms}}});

  // kill -9 BA once deliveries are under way; restart it after 1.5 s.
  ASSERT_TRUE(WaitFor([&] { return Store::Open(b.dir)->Alerts().size() >= 50; }, 60000))
      << ReadFile(tmp_ / "BA.log");
  EXPECT_EQ(Stop(b, SIGKILL), 128 + SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Start(b);
  // The link to MK down for a while: MK stopped cleanly, started again.
  ASSERT_TRUE(WaitFor([&] { return Store::Open(c.dir)->Alerts().size() >= 100; }, 60000));
  EXPECT_EQ(Stop(c, SIGTERM), 0);
  // Hits confirmed meanwhile wait for it.
  for (ProcNode* from : {&a, &b}) {
    for (const std::string& id : QueueNotices(*from, c, 100)) sent["MK"][from->name].insert(id);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_GE(QueueDepth(a) + QueueDepth(b), 200);
  Start(c);

  ASSERT_TRUE(WaitFor(
      [&] { return QueueDepth(a) == 0 && QueueDepth(b) == 0 && QueueDepth(c) == 0; }, 240000))
      << "queues " << QueueDepth(a) << " " << QueueDepth(b) << " " << QueueDepth(c);
  // Exactly once in effect: every hit notice raised one alert at its receiver.
  for (ProcNode* to : {&a, &b, &c}) {
    const auto got = Received(*to);
    for (const auto& [from, ids] : sent[to->name]) {
      const auto it = got.find(from);
      ASSERT_NE(it, got.end()) << to->name << " got nothing from " << from;
      EXPECT_EQ(it->second.size(), ids.size()) << from << " -> " << to->name;
      EXPECT_EQ(std::set<std::string>(it->second.begin(), it->second.end()), ids)
          << from << " -> " << to->name;
    }
    EXPECT_EQ(Store::Open(to->dir)->Alerts().size(), to == &c ? 1200u : 1000u) << to->name;
    EXPECT_TRUE(Store::Open(to->dir)->Verify().ok()) << to->name;
  }
  // The request was answered exactly once, across the kill.
  ASSERT_TRUE(WaitFor([&] { return ex_a->Answers(req.request_id).size() == 1; }, 30000));
  // BA's real handler refuses a descriptor key it does not know, and says so.
  EXPECT_EQ(ex_a->Answers(req.request_id)[0].status, "refused");
  EXPECT_TRUE(Contains(ex_a->Answers(req.request_id)[0].detail, "descriptor bfd-v1"));
  for (const PeerRecord& p : ExchangeStore::Open(a.dir)->Peers()) {
    EXPECT_EQ(p.state, "up") << p.spec.name;
  }
  for (ProcNode* n : {&a, &b, &c}) EXPECT_EQ(Stop(*n, SIGTERM), 0) << n->name;
  EXPECT_TRUE(Contains(ReadFile(tmp_ / "BA.log"), "is up"));
  // The others noticed BA and MK going quiet (heartbeats), and coming back.
  EXPECT_TRUE(Contains(ReadFile(tmp_ / "RS.log"), "peer BA is silent"));
  EXPECT_TRUE(Contains(ReadFile(tmp_ / "RS.log"), "peer MK is silent"));
  EXPECT_TRUE(Contains(ReadFile(tmp_ / "RS.log"), "peer BA is up (was"));
}

// `bien serve` checks its coarse index once per store state, and a scan that
// `bien ingest` (another process) adds while it runs is found by the next
// request. A coarse-only federated search is coarse-only locally too: one
// list by cosine, local and remote; with the fine re-rank, --top says how
// much it left out.
TEST_F(FederationProcessTest, AScanIngestedWhileServingIsFoundByTheNextRequest) {
  nodes_.reserve(2);
  ProcNode& a = Make("RS", "RS");
  ProcNode& b = Make("BA", "BA");
  int command = 0;
  // Runs `bien ARGS` as a process; its stdout (stderr apart).
  auto bien = [&](const std::vector<std::string>& args) {
    const fs::path out = tmp_ / ("command-" + std::to_string(++command) + ".out");
    std::string line = "bien";
    for (const std::string& x : args) line += " " + x;
    const pid_t child = SpawnBien(args, out, out.string() + ".err");
    const int code = Reap(child, 120000);
    EXPECT_EQ(code, 0) << line << "\n" << ReadFile(out) << ReadFile(out.string() + ".err");
    return ReadFile(out);
  };
  const std::string samples = (tmp_ / "samples").string();
  bien({"synth", "--out", samples, "--firearms", "3", "--shots", "2", "--seed", "7"});
  auto ingest = [&](const ProcNode& n, const std::string& file, const std::string& c) {
    bien({"ingest", "--node", n.dir.string(), samples + "/" + file, "--case", c, "--exhibit", "E1",
          "--kind", "cartridge_case", "--role", "evidence", "--calibre", "9mm Luger",
          "--no-search"});
  };
  ingest(a, "synth F02-1.x3p", "RS-1");
  ingest(a, "synth F01-2.x3p", "RS-2");
  ingest(b, "synth F01-1.x3p", "BA-1");
  ingest(b, "synth F03-1.x3p", "BA-3");
  Start(a);
  Start(b);
  Federate();
  auto search = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args{"search", "--node",    a.dir.string(), "RS-1/E1",   "--federated",
                                  "--json", "--timeout", "60",           "--no-leads"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto j = nlohmann::json::parse(bien(args), nullptr, false);
    EXPECT_TRUE(j.is_object());
    EXPECT_EQ(j["answers"].size(), 1u) << j.dump(2);
    return j;
  };
  auto remote = [](const nlohmann::json& j) {
    std::set<std::string> out;
    for (const auto& c : j["candidates"]) {
      if (!c["local"].get<bool>()) out.insert(c["exhibit"].get<std::string>());
    }
    return out;
  };

  const auto before = search({"--coarse-only"});
  EXPECT_TRUE(before["coarse_only"].get<bool>());
  EXPECT_EQ(before["local_candidates"], 1);
  EXPECT_EQ(before["local_compared"], 0);
  EXPECT_EQ(remote(before), (std::set<std::string>{"BA-1/E1", "BA-3/E1"}));
  ASSERT_EQ(before["candidates"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& c = before["candidates"][i];
    EXPECT_TRUE(c["score"].is_null()) << c.dump();
    if (i > 0) {
      EXPECT_LE(c["coarse_score"].get<double>(),
                before["candidates"][i - 1]["coarse_score"].get<double>());
    }
  }

  // A mate ingested at BA by another process while BA serves.
  ingest(b, "synth F02-2.x3p", "BA-2");
  const auto after = search({"--coarse-only"});
  EXPECT_EQ(remote(after), (std::set<std::string>{"BA-1/E1", "BA-2/E1", "BA-3/E1"}));
  EXPECT_EQ(remote(search({"--coarse-only"})), remote(after));  // and again, unchanged

  // With the fine re-rank the mate comes first; --top 1 leaves 3 out.
  const auto fine = search({"--top", "1"});
  ASSERT_EQ(fine["candidates"].size(), 1u);
  EXPECT_EQ(fine["candidates"][0]["exhibit"], "BA-2/E1");
  EXPECT_GT(fine["candidates"][0]["score"].get<double>(), 10);
  EXPECT_EQ(fine["local_compared"], 1);
  EXPECT_EQ(fine["not_shown"], 3);
  EXPECT_EQ(fine["not_shown_without_fine_score"], 0);
  EXPECT_EQ(Stop(a, SIGTERM), 0);
  EXPECT_EQ(Stop(b, SIGTERM), 0);
}

TEST(FederationDemo, RunsThreeNodeProcessesAndTheAlertArrives) {
  TempDir tmp;
  const fs::path log = tmp / "demo.txt";
  const pid_t pid = SpawnBien({"demo", "--dir", (tmp / "demo").string()}, log);
  EXPECT_EQ(Reap(pid, 240000), 0) << ReadFile(log);
  const std::string out = ReadFile(log);
  EXPECT_TRUE(Contains(out, "asked 2 peers (coarse + fine re-rank); 2 answered"));
  EXPECT_TRUE(Contains(out, "confirmed remote candidate R"));
  EXPECT_TRUE(Contains(out, "2026-SA-0107/E3 of node BA-sarajevo"));
  EXPECT_TRUE(Contains(out, "remote (RS-belgrade): cross-border hit from node RS-belgrade"));
  EXPECT_TRUE(Contains(out, "BA-FUP Sarajevo (pid"));
  EXPECT_EQ(out.find("exited with 1"), std::string::npos);
  EXPECT_TRUE(Contains(out, "demo finished"));
}

}  // namespace
}  // namespace bien::testing

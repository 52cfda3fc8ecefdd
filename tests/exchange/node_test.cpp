// The node actor on loopback, in-process: delivery and acknowledgement
// through the outbox, and what a node does with connections and messages it
// must not trust: unknown keys, a peer posing as another, replays,
// malformed, truncated, oversized and wrong-version messages, a removed peer.
#include "exchange/node.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "exchange/codec.h"
#include "exchange/keys.h"
#include "tests/test_util.h"

namespace bien::exchange {
namespace {

namespace fs = std::filesystem;
using testing::Contains;

// Waits up to 20 s for `done`; true when it became true.
template <typename F>
bool WaitFor(F done, int ms = 20000) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

struct Logs {
  std::mutex mu;
  std::vector<std::string> lines;
  LogSink Sink() {
    return [this](const std::string& level, const std::string& text) {
      std::lock_guard lock(mu);
      lines.push_back(level + " " + text);
    };
  }
  std::string Dump() {
    std::lock_guard lock(mu);
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
  bool Has(const std::string& part) {
    std::lock_guard lock(mu);
    for (const auto& l : lines) {
      if (l.find(part) != std::string::npos) return true;
    }
    return false;
  }
};

// A handler that answers with one candidate named after the request.
CorrelationResult Echo(Store&, const CorrelationRequest& req, const PeerRecord&) {
  CorrelationResult r;
  r.candidates.push_back({req.case_ref + "-echo", "E1", 1, 0.5, 12.0, std::nullopt, "cmc-v1"});
  return r;
}

NodeOptions FastOptions() {
  NodeOptions o;
  o.listen = "tcp://127.0.0.1:*";
  o.heartbeat_ms = 100;
  o.silent_after_ms = 400;
  o.gone_after_ms = 1000;
  o.poll_ms = 10;
  o.resend_initial_ms = 200;
  o.resend_max_ms = 1000;
  return o;
}

HitNotice Notice(const std::string& our_case) {
  HitNotice h;
  h.hit_id = NewId();
  h.sender_case_ref = "RS-1";
  h.sender_exhibit_ref = "E1";
  h.receiver_case_ref = our_case;
  h.receiver_exhibit_ref = "E3";
  h.confirmed_by = "Ana";
  h.confirmed_at_ms = NowMs();
  h.fine_score = 30;
  h.method = "cmc-v1";
  return h;
}

class NodeTest : public ::testing::Test {
 protected:
  fs::path MakeNode(const std::string& name, const std::string& country) {
    const fs::path dir = tmp_ / name;
    Store::Create(dir, NodeConfig{name, country, "", ""}, "admin");
    LoadOrCreateKeyPair(dir, nullptr);
    return dir;
  }
  static std::string KeyOf(const fs::path& dir) { return LoadKeyPair(dir)->public_key; }
  static size_t Alerts(const fs::path& dir) { return Store::Open(dir)->Alerts().size(); }

  // A raw client of `node` with its own keys (admitted or not), sending frames.
  struct Client {
    zmq::context_t ctx;
    zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
    KeyPair keys = GenerateKeyPair();
    void Connect(const std::string& endpoint, const std::string& server_key) {
      dealer.set(zmq::sockopt::linger, 0);
      dealer.set(zmq::sockopt::curve_serverkey, server_key);
      dealer.set(zmq::sockopt::curve_publickey, keys.public_key);
      dealer.set(zmq::sockopt::curve_secretkey, keys.secret_key);
      dealer.connect(endpoint);
    }
    void Send(const std::string& bytes) { dealer.send(zmq::buffer(bytes), zmq::send_flags::none); }
    // The next reply within `ms`, decoded.
    std::optional<Message> Reply(int ms = 5000) {
      dealer.set(zmq::sockopt::rcvtimeo, ms);
      zmq::message_t m;
      if (!dealer.recv(m)) return std::nullopt;
      return Decode(m.to_string_view()).message;
    }
  };

  testing::TempDir tmp_;
};

TEST_F(NodeTest, TwoNodesDeliverAnsweredRequestsAndHitNoticesAndAcknowledgeThem) {
  const fs::path a = MakeNode("RS-Belgrade", "RS");
  const fs::path b = MakeNode("BA-Sarajevo", "BA");
  Logs la, lb;
  auto na = Node::Start(a, FastOptions(), Echo, la.Sink());
  auto nb = Node::Start(b, FastOptions(), Echo, lb.Sink());
  auto xa = ExchangeStore::Open(a);
  auto xb = ExchangeStore::Open(b);
  const PeerRecord pb = xa->AddPeer("admin", {"BA", na ? nb->endpoint() : "", KeyOf(b), {"*"}});
  xb->AddPeer("admin", {"RS", na->endpoint(), KeyOf(a), {"*"}});
  ASSERT_TRUE(WaitFor([&] { return xa->Peers()[0].remote_name.has_value(); }))
      << la.Dump() << lb.Dump();
  EXPECT_EQ(xa->Peers()[0].remote_name, "BA-Sarajevo");
  EXPECT_EQ(xa->Peers()[0].remote_country, "BA");

  // Other systems subscribe to B's alerts.
  zmq::context_t sub_ctx;
  zmq::socket_t sub(sub_ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "alert");
  sub.set(zmq::sockopt::rcvtimeo, 20000);
  sub.connect(nb->alerts_endpoint());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the subscription reaches B

  // A hit notice queued in A's outbox arrives once at B as a remote alert.
  const Message m = NewMessage(KeyOf(a), Notice("BA-7"));
  xa->Enqueue(pb.id, {m.id, "hit_notice", Encode(m), std::nullopt});
  ASSERT_TRUE(WaitFor([&] { return Alerts(b) == 1; })) << la.Dump() << lb.Dump();
  ASSERT_TRUE(WaitFor([&] { return xa->Peers()[0].queue_depth == 0; }));  // acknowledged
  const AlertRecord alert = Store::Open(b)->Alerts()[0];
  EXPECT_EQ(alert.origin, "remote");
  EXPECT_EQ(alert.peer, "RS");
  EXPECT_TRUE(Contains(alert.summary, "our BA-7/E3"));
  zmq::message_t topic, body;
  ASSERT_TRUE(sub.recv(topic));
  ASSERT_TRUE(sub.recv(body));
  EXPECT_EQ(topic.to_string(), "alert");
  EXPECT_TRUE(Contains(body.to_string(), "\"origin\":\"remote\""));
  EXPECT_TRUE(Contains(body.to_string(), "our BA-7/E3"));

  // A correlation request is answered by B's handler and the answer recorded at A.
  ExhibitSpec spec;
  spec.case_ref = "RS-1";
  spec.exhibit_ref = "E1";
  const std::vector<std::byte> bytes{std::byte{7}};
  ScanMeta meta;
  meta.original_name = "x.x3p";
  meta.format = "x3p";
  meta.width = meta.height = 4;
  meta.dx_m = meta.dy_m = 1e-6;
  const NewScan scan{meta, bytes};
  const ExhibitId q = xa->store().AddScans("alice", spec, {&scan, 1})[0].exhibit;
  CorrelationRequest req;
  req.request_id = NewId();
  req.descriptor_key = "bfd-v1";
  req.descriptor = {1, 2, 3};
  req.case_ref = "RS-1";
  req.exhibit_ref = "E1";
  req.expires_ms = NowMs() + 60000;
  const Message rm = NewMessage(KeyOf(a), req);
  xa->StartFederatedSearch("alice", q, req.request_id, req.expires_ms,
                           {{pb.id, {rm.id, "correlation_request", Encode(rm), req.expires_ms}}});
  ASSERT_TRUE(WaitFor([&] { return xa->Answers(req.request_id).size() == 1; }))
      << la.Dump() << lb.Dump();
  const auto cands = xa->RemoteCandidates(req.request_id);
  ASSERT_EQ(cands.size(), 1u);
  EXPECT_EQ(cands[0].Label(), "RS-1-echo/E1");
  EXPECT_EQ(cands[0].peer_name, "BA");
  na->Stop();
  nb->Stop();
  EXPECT_TRUE(lb.Has("hit notice from peer RS"));
}

TEST_F(NodeTest, AnUnknownKeyCannotConnectOrSend) {
  const fs::path a = MakeNode("RS-Belgrade", "RS");
  Logs la;
  auto na = Node::Start(a, FastOptions(), Echo, la.Sink());
  Client stranger;
  stranger.Connect(na->endpoint(), KeyOf(a));
  stranger.Send(Encode(NewMessage(stranger.keys.public_key, Notice("RS-1"))));
  stranger.Send(Encode(NewMessage(stranger.keys.public_key, Heartbeat{})));
  EXPECT_FALSE(stranger.Reply(1500));  // no acknowledgement, no welcome
  EXPECT_TRUE(WaitFor([&] { return la.Has("is not an admitted peer"); }));
  EXPECT_EQ(Alerts(a), 0u);
  na->Stop();
}

TEST_F(NodeTest, APeerCannotPoseAsAnotherAndReplaysAreIgnored) {
  const fs::path a = MakeNode("RS-Belgrade", "RS");
  Logs la;
  auto na = Node::Start(a, FastOptions(), Echo, la.Sink());
  auto xa = ExchangeStore::Open(a);
  Client mallory, bob;
  xa->AddPeer("admin", {"ME-podgorica", "tcp://127.0.0.1:9", mallory.keys.public_key, {"*"}});
  xa->AddPeer("admin", {"BA-sarajevo", "tcp://127.0.0.1:9", bob.keys.public_key, {"*"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the node re-reads its peers
  mallory.Connect(na->endpoint(), KeyOf(a));
  bob.Connect(na->endpoint(), KeyOf(a));

  // Mallory (admitted) signs a notice with Bob's key as sender: dropped, no ack.
  mallory.Send(Encode(NewMessage(bob.keys.public_key, Notice("RS-1"))));
  EXPECT_TRUE(WaitFor([&] { return la.Has("claims to come from BA-sarajevo"); }));
  EXPECT_EQ(Alerts(a), 0u);

  // Bob's notice, sent three times (a replay): acknowledged each time, one alert.
  const std::string bytes = Encode(NewMessage(bob.keys.public_key, Notice("RS-1")));
  for (int i = 0; i < 3; ++i) {
    bob.Send(bytes);
    std::optional<Message> reply;
    while ((reply = bob.Reply()) && reply->type() != MessageType::kAck) {
    }
    ASSERT_TRUE(reply) << "no acknowledgement of copy " << i;
  }
  EXPECT_EQ(Alerts(a), 1u);
  EXPECT_TRUE(la.Has("duplicate hit notice"));

  // The same hit in a new message (a peer re-confirming) raises no second alert.
  Message again = NewMessage(bob.keys.public_key, Notice("RS-1"));
  std::get<HitNotice>(again.body).hit_id = std::get<HitNotice>(Decode(bytes).message->body).hit_id;
  bob.Send(Encode(again));
  ASSERT_TRUE(WaitFor([&] { return la.Has("duplicate hit notice " + again.id.substr(0, 8)); }));
  EXPECT_EQ(Alerts(a), 1u);

  while (bob.Reply(300)) {
  }
  // Removed: cut off at once, although its connection is still open.
  xa->RemovePeer("admin", "BA-sarajevo");
  ASSERT_TRUE(WaitFor([&] { return la.Has("peer BA-sarajevo removed"); }));
  bob.Send(Encode(NewMessage(bob.keys.public_key, Notice("RS-2"))));
  EXPECT_TRUE(WaitFor([&] { return la.Has("not an admitted peer"); }));
  EXPECT_FALSE(bob.Reply(500));
  EXPECT_EQ(Alerts(a), 1u);
  na->Stop();
}

TEST_F(NodeTest, MalformedTruncatedOversizedAndWrongVersionMessagesAreDroppedAndLogged) {
  const fs::path a = MakeNode("RS-Belgrade", "RS");
  Logs la;
  auto na = Node::Start(a, FastOptions(), Echo, la.Sink());
  auto xa = ExchangeStore::Open(a);
  Client bob;
  xa->AddPeer("admin", {"BA-sarajevo", "tcp://127.0.0.1:9", bob.keys.public_key, {"*"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  bob.Connect(na->endpoint(), KeyOf(a));

  const std::string good = Encode(NewMessage(bob.keys.public_key, Notice("RS-1")));
  std::string v2 = good;
  v2[1] = 2;                                          // field 1 (version) = 2
  bob.Send("\x0a\xff\xff\xff garbage");               // malformed
  bob.Send(good.substr(0, good.size() / 2));          // truncated
  bob.Send(std::string(kMaxMessageBytes + 10, 'x'));  // oversized
  bob.Send(v2);                                       // another protocol version
  bob.Send("");                                       // empty
  zmq::message_t part1("a", 1), part2("b", 1);        // two frames
  bob.dealer.send(part1, zmq::send_flags::sndmore);
  bob.dealer.send(part2, zmq::send_flags::none);
  ASSERT_TRUE(WaitFor([&] {
    return la.Has("peer BA-sarajevo: not a protocol message") &&
           la.Has("peer BA-sarajevo: message of") && la.Has("protocol version 2") &&
           la.Has("peer BA-sarajevo: empty message") && la.Has("of 2 frames");
  })) << la.Dump();
  EXPECT_EQ(Alerts(a), 0u);
  // Still serving: a good message after the bad ones is handled.
  bob.Send(good);
  EXPECT_TRUE(WaitFor([&] { return Alerts(a) == 1u; }));
  na->Stop();
}

TEST_F(NodeTest, ARequestForAPartitionNotSharedWithThePeerIsRefused) {
  const fs::path a = MakeNode("RS-Belgrade", "RS");
  Logs la;
  auto na = Node::Start(a, FastOptions(), Echo, la.Sink());
  auto xa = ExchangeStore::Open(a);
  Client bob;
  xa->AddPeer(
      "admin",
      {"BA-sarajevo", "tcp://127.0.0.1:9", bob.keys.public_key, {"cartridge_case|.45 ACP"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  bob.Connect(na->endpoint(), KeyOf(a));
  CorrelationRequest req;
  req.request_id = NewId();
  req.cc.calibre = "9mm Luger";
  req.descriptor_key = "bfd-v1";
  req.descriptor = {1, 2, 3};
  req.case_ref = "BA-1";
  req.exhibit_ref = "E1";
  req.expires_ms = NowMs() + 60000;
  bob.Send(Encode(NewMessage(bob.keys.public_key, req)));
  EXPECT_TRUE(WaitFor([&] { return la.Has("partition cartridge_case|9mm Luger not shared"); }))
      << la.Dump();
  // The refusal is queued for the peer like any answer.
  const auto peer = xa->PeerByKey(bob.keys.public_key);
  ASSERT_TRUE(WaitFor([&] { return xa->PeerByKey(bob.keys.public_key)->queue_depth == 1; }));
  na->Stop();
  const auto due = xa->DueOutbox(peer->id, NowMs() + 3600000, 10);
  ASSERT_EQ(due.size(), 1u);
  const auto answer = std::get<CorrelationResult>(Decode(due[0].payload).message->body);
  EXPECT_EQ(answer.status, "refused");
  EXPECT_EQ(answer.request_id, req.request_id);
  EXPECT_TRUE(answer.candidates.empty());
}

TEST_F(NodeTest, MessagesWaitInTheOutboxWhileThePeerIsDownAndArriveWhenItStarts) {
  const fs::path a = MakeNode("RS-Belgrade", "RS");
  const fs::path b = MakeNode("BA-Sarajevo", "BA");
  Logs la, lb;
  // B's port first, so A knows where to send; then B stops.
  auto nb = Node::Start(b, FastOptions(), Echo, lb.Sink());
  const std::string b_endpoint = nb->endpoint();
  nb->Stop();
  nb.reset();
  auto na = Node::Start(a, FastOptions(), Echo, la.Sink());
  auto xa = ExchangeStore::Open(a);
  const PeerRecord pb = xa->AddPeer("admin", {"BA", b_endpoint, KeyOf(b), {"*"}});
  ExchangeStore::Open(b)->AddPeer("admin", {"RS", na->endpoint(), KeyOf(a), {"*"}});
  for (int i = 0; i < 20; ++i) {
    const Message m = NewMessage(KeyOf(a), Notice("BA-" + std::to_string(i)));
    xa->Enqueue(pb.id, {m.id, "hit_notice", Encode(m), std::nullopt});
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(xa->Peers()[0].queue_depth, 20);
  EXPECT_EQ(Alerts(b), 0u);
  NodeOptions o = FastOptions();
  o.listen = b_endpoint;
  nb = Node::Start(b, o, Echo, lb.Sink());
  ASSERT_TRUE(WaitFor([&] { return xa->Peers()[0].queue_depth == 0; }));
  EXPECT_EQ(Alerts(b), 20u);
  EXPECT_TRUE(la.Has("peer BA is up"));
  nb->Stop();
  na->Stop();
}

}  // namespace
}  // namespace bien::exchange

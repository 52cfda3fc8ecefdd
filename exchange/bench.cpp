#include "exchange/bench.h"

#include <chrono>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "core/error.h"
#include "exchange/codec.h"
#include "exchange/keys.h"
#include "exchange/node.h"

namespace bien::exchange {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string Z85Of(const zmq::message_t& m) {
  char out[41] = {};
  if (m.size() != 32 || !zmq_z85_encode(out, static_cast<const uint8_t*>(m.data()), 32)) return "";
  return out;
}

// A CURVE ROUTER with a ZAP handler admitting only `client`, and a DEALER
// connected with `client`'s keys; `run` gets both once the handshake is done.
template <typename F>
void WithCurvePair(F run) {
  zmq::context_t ctx;
  const KeyPair server = GenerateKeyPair();
  const KeyPair client = GenerateKeyPair();
  zmq::socket_t zap(ctx, zmq::socket_type::rep);
  zap.bind("inproc://zeromq.zap.01");
  std::thread zap_thread([&] {
    std::vector<zmq::message_t> req;
    if (!zmq::recv_multipart(zap, std::back_inserter(req))) return;
    const bool ok = req.size() >= 7 && Z85Of(req[6]) == client.public_key;
    const std::string id = req.size() > 1 ? req[1].to_string() : "";
    std::array<zmq::const_buffer, 6> reply = {zmq::str_buffer("1.0"),
                                              zmq::buffer(id),
                                              zmq::buffer(std::string(ok ? "200" : "400")),
                                              zmq::str_buffer("bench"),
                                              zmq::buffer(ok ? client.public_key : std::string()),
                                              zmq::const_buffer()};
    zmq::send_multipart(zap, reply);
  });
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::curve_server, 1);
  router.set(zmq::sockopt::curve_secretkey, server.secret_key);
  router.set(zmq::sockopt::zap_domain, "bien");
  router.set(zmq::sockopt::rcvhwm, 0);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::curve_serverkey, server.public_key);
  dealer.set(zmq::sockopt::curve_publickey, client.public_key);
  dealer.set(zmq::sockopt::curve_secretkey, client.secret_key);
  dealer.set(zmq::sockopt::sndhwm, 0);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  // Handshake: one message through.
  dealer.send(zmq::str_buffer("ping"), zmq::send_flags::none);
  std::vector<zmq::message_t> first;
  if (!zmq::recv_multipart(router, std::back_inserter(first))) throw Error("no handshake");
  zap_thread.join();
  run(router, dealer);
}

}  // namespace

ThroughputResult BenchCurveTransport(int64_t count, size_t size) {
  ThroughputResult r;
  WithCurvePair([&](zmq::socket_t& router, zmq::socket_t& dealer) {
    const std::string payload(size, 'x');
    const auto t0 = Clock::now();
    std::thread sender([&] {
      for (int64_t i = 0; i < count; ++i) dealer.send(zmq::buffer(payload), zmq::send_flags::none);
    });
    zmq::message_t rid, body;
    for (int64_t i = 0; i < count; ++i) {
      (void)router.recv(rid);
      (void)router.recv(body);
      r.bytes += static_cast<int64_t>(body.size());
    }
    r.seconds = Since(t0);
    sender.join();
    r.messages = count;
  });
  return r;
}

ThroughputResult BenchCodecMessages(int64_t count) {
  ThroughputResult r;
  const KeyPair keys = GenerateKeyPair();
  WithCurvePair([&](zmq::socket_t& router, zmq::socket_t& dealer) {
    const auto t0 = Clock::now();
    std::thread sender([&] {
      for (int64_t i = 0; i < count; ++i) {
        HitNotice h;
        h.hit_id = NewId();
        h.sender_case_ref = "2026-BG-0042";
        h.sender_exhibit_ref = "E" + std::to_string(i);
        h.receiver_case_ref = "2026-SA-0107";
        h.receiver_exhibit_ref = "E3";
        h.confirmed_by = "Dr. Jelena Markovic";
        h.confirmed_at_ms = NowMs();
        h.fine_score = 50.5;
        h.method = "cmc-v1";
        const std::string bytes = Encode(NewMessage(keys.public_key, h));
        dealer.send(zmq::buffer(bytes), zmq::send_flags::none);
      }
    });
    zmq::message_t rid, body;
    for (int64_t i = 0; i < count; ++i) {
      (void)router.recv(rid);
      (void)router.recv(body);
      const Decoded d = Decode(body.to_string_view());
      if (!d.message) throw Error("bench: a message did not decode: " + d.error);
      r.bytes += static_cast<int64_t>(body.size());
    }
    r.seconds = Since(t0);
    sender.join();
    r.messages = count;
  });
  return r;
}

ThroughputResult BenchReliableDelivery(const std::filesystem::path& work, int64_t count) {
  const auto a = work / "bench-a";
  const auto b = work / "bench-b";
  for (const auto& d : {a, b}) {
    std::filesystem::remove_all(d);
    Store::Create(d, NodeConfig{d.filename().string(), "RS", "", ""}, "bench");
    LoadOrCreateKeyPair(d, nullptr);
  }
  NodeOptions o;
  o.listen = "tcp://127.0.0.1:*";
  o.alerts = "inproc://bench-alerts";
  auto no_requests = [](Store&, const CorrelationRequest&, const PeerRecord&) {
    CorrelationResult r;
    r.status = "refused";
    r.detail = "benchmark node";
    return r;
  };
  auto na = Node::Start(a, o, no_requests, nullptr);
  o.alerts = "inproc://bench-alerts-b";
  auto nb = Node::Start(b, o, no_requests, nullptr);
  auto xa = ExchangeStore::Open(a);
  auto xb = ExchangeStore::Open(b);
  const PeerRecord pb = xa->AddPeer("bench", {"b", nb->endpoint(), nb->public_key(), {"*"}});
  xb->AddPeer("bench", {"a", na->endpoint(), na->public_key(), {"*"}});
  // Wait until they talk.
  for (int i = 0; i < 400 && !xa->Peers()[0].remote_name; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ThroughputResult r;
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < count; ++i) {
    HitNotice h;
    h.hit_id = NewId();
    h.sender_case_ref = "2026-BG-0042";
    h.sender_exhibit_ref = "E" + std::to_string(i);
    h.receiver_case_ref = "2026-SA-0107";
    h.receiver_exhibit_ref = "E3";
    h.confirmed_by = "bench";
    h.confirmed_at_ms = NowMs();
    h.fine_score = 1;
    h.method = "cmc-v1";
    const Message m = NewMessage(na->public_key(), h);
    const std::string bytes = Encode(m);
    r.bytes += static_cast<int64_t>(bytes.size());
    xa->Enqueue(pb.id, {m.id, "hit_notice", bytes, std::nullopt});
  }
  const double queued = Since(t0);
  while (xa->Peers()[0].queue_depth > 0) {
    if (Since(t0) > 600) throw Error("bench: delivery did not finish within 10 minutes");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.seconds = Since(t0);
  r.messages = count;
  if (static_cast<int64_t>(xb->store().Alerts().size()) != count) {
    throw Error("bench: " + std::to_string(xb->store().Alerts().size()) + " alerts for " +
                std::to_string(count) + " notices");
  }
  (void)queued;
  nb->Stop();
  na->Stop();
  return r;
}

}  // namespace bien::exchange

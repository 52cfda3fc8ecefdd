#include "exchange/node.h"

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/hash.h"
#include "exchange/keys.h"

namespace bien::exchange {

void NodeOptions::Check() const {
  if (listen.rfind("tcp://", 0) != 0) throw Error("--listen must be tcp://HOST:PORT");
  if (heartbeat_ms < 10 || silent_after_ms <= heartbeat_ms || gone_after_ms <= silent_after_ms) {
    throw Error("heartbeat < silent-after < gone-after, heartbeat at least 10 ms");
  }
  if (poll_ms < 1 || poll_ms > 1000) throw Error("poll interval must be 1-1000 ms");
  if (resend_initial_ms < 10 || resend_max_ms < resend_initial_ms) {
    throw Error("re-send back-off: initial >= 10 ms and max >= initial");
  }
}

namespace {

constexpr const char* kControl = "inproc://bien-node-control";
constexpr int kBatch = 512;  // most messages handled per socket per turn

using Clock = std::chrono::steady_clock;

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string Z85(const void* data, size_t size) {
  char out[41] = {};
  if (size != 32 || !zmq_z85_encode(out, static_cast<const uint8_t*>(data), size)) return "";
  return out;
}

// ipc://NODE/alerts.ipc; when that path is too long for a Unix socket (108
// bytes), a socket named after the node's path in $XDG_RUNTIME_DIR (or /tmp).
std::string DefaultAlertsEndpoint(const std::filesystem::path& dir) {
  const std::string path = (std::filesystem::absolute(dir) / "alerts.ipc").string();
  if (path.size() < 100) return "ipc://" + path;
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  const std::string base = runtime && *runtime ? runtime : "/tmp";
  return "ipc://" + base + "/bien-alerts-" + Sha256Hex(path).substr(0, 16) + ".ipc";
}

std::string Short(const std::string& key) { return key.substr(0, 8) + "..."; }

enum class LinkState { kNew, kUp, kSilent, kGone };
const char* ToString(LinkState s) {
  switch (s) {
    case LinkState::kNew:
      return "new";
    case LinkState::kUp:
      return "up";
    case LinkState::kSilent:
      return "silent";
    case LinkState::kGone:
      return "gone";
  }
  return "?";
}

struct Link {
  PeerRecord record;
  std::unique_ptr<zmq::socket_t> dealer;
  LinkState state = LinkState::kNew;
  int64_t heard_ms = 0;       // steady clock, last valid message from it
  int64_t seen_saved_ms = 0;  // last time last_seen_at was written
  int64_t next_heartbeat_ms = 0;
  int64_t dealer_heard_ms = 0;  // last reply on the dealer (or when it was made)
};

class NodeImpl final : public Node {
 public:
  NodeImpl(std::filesystem::path dir, NodeOptions options, RequestHandler handler, LogSink log)
      : dir_(std::move(dir)),
        options_(std::move(options)),
        handler_(std::move(handler)),
        log_(std::move(log)) {}

  ~NodeImpl() override { Stop(); }

  void Init() {
    options_.Check();
    const auto keys = LoadKeyPair(dir_);
    if (!keys) {
      throw Error(dir_.string() + ": the node has no keys yet; create them with `bien keys`");
    }
    keys_ = *keys;
    store_ = ExchangeStore::Open(dir_);
    config_ = store_->store().config();
    // The ZAP handler must be bound before any CURVE server socket exists.
    zap_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::rep);
    zap_->set(zmq::sockopt::linger, 0);
    zap_->bind("inproc://zeromq.zap.01");
    control_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pull);
    control_->set(zmq::sockopt::linger, 0);
    control_->bind(kControl);
    router_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    router_->set(zmq::sockopt::linger, 0);
    router_->set(zmq::sockopt::curve_server, 1);
    router_->set(zmq::sockopt::curve_secretkey, keys_.secret_key);
    router_->set(zmq::sockopt::zap_domain, "bien");
    router_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * kMaxMessageBytes));
    router_->set(zmq::sockopt::sndhwm, 100000);
    router_->set(zmq::sockopt::rcvhwm, 100000);
    try {
      router_->bind(options_.listen);
    } catch (const zmq::error_t& e) {
      throw Error("cannot listen on " + options_.listen + ": " + e.what());
    }
    endpoint_ = router_->get(zmq::sockopt::last_endpoint);
    pub_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pub);
    pub_->set(zmq::sockopt::linger, 0);
    alerts_endpoint_ = options_.alerts.empty() ? DefaultAlertsEndpoint(dir_) : options_.alerts;
    try {
      pub_->bind(alerts_endpoint_);
    } catch (const zmq::error_t& e) {
      throw Error("cannot publish alerts on " + alerts_endpoint_ + ": " + e.what());
    }
    alerts_endpoint_ = pub_->get(zmq::sockopt::last_endpoint);
    const auto alerts = store_->AlertsAfter(0);
    last_alert_ = alerts.empty() ? 0 : alerts.back().id.value;
    ReloadPeers();
    for (PendingRequest& p : store_->PendingRequests()) Queue(std::move(p));
    actor_ = std::thread([this] { RunActor(); });
    worker_ = std::thread([this] { RunWorker(); });
    Log("info", "node " + config_.name + " (" + config_.country + ") listening on " + endpoint_ +
                    ", key " + keys_.public_key + ", alerts on " + alerts_endpoint_ + ", " +
                    std::to_string(links_.size()) + " peers");
  }

  const std::string& endpoint() const override { return endpoint_; }
  const std::string& alerts_endpoint() const override { return alerts_endpoint_; }
  const std::string& public_key() const override { return keys_.public_key; }

  void Stop() override {
    if (stopped_.exchange(true)) return;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (actor_.joinable()) {
      Wake("stop");
      actor_.join();
    }
    if (worker_.joinable()) worker_.join();
    // Sockets before the context; the actor already closed its own.
    links_.clear();
    router_.reset();
    pub_.reset();
    zap_.reset();
    control_.reset();
    ctx_.close();
    Log("info", "node " + config_.name + " stopped");
  }

 private:
  void Log(const std::string& level, const std::string& text) {
    if (log_) log_(level, text);
  }

  // A word to the actor over the inproc pipe, from any thread (a socket of its own).
  void Wake(const std::string& word) {
    try {
      zmq::socket_t push(ctx_, zmq::socket_type::push);
      push.set(zmq::sockopt::linger, 1000);
      push.connect(kControl);
      push.send(zmq::buffer(word), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
      // The context is closing: the actor is stopping anyway.
    }
  }

  std::string PeerName(const std::string& key) const {
    const auto it = links_.find(key);
    return it == links_.end() ? "unknown key " + Short(key) : it->second.record.spec.name;
  }

  // ---- peers ---------------------------------------------------------------

  void ReloadPeers() {
    std::map<std::string, PeerRecord> now;
    for (PeerRecord& p : store_->Peers()) now.emplace(p.spec.public_key, std::move(p));
    for (auto it = links_.begin(); it != links_.end();) {
      const auto found = now.find(it->first);
      if (found == now.end() || found->second.spec.endpoint != it->second.record.spec.endpoint) {
        Log("warn", "peer " + it->second.record.spec.name +
                        (found == now.end() ? " removed: cut off (its connection and messages "
                                              "are refused from now on)"
                                            : " moved to " + found->second.spec.endpoint));
        it = links_.erase(it);
      } else {
        it->second.record = found->second;
        ++it;
      }
    }
    for (auto& [key, record] : now) {
      if (links_.count(key)) continue;
      Link link;
      link.record = record;
      Connect(link);
      Log("info", "peer " + record.spec.name + " at " + record.spec.endpoint + " admitted");
      links_.emplace(key, std::move(link));
    }
    peers_loaded_ms_ = SteadyMs();
  }

  // A new DEALER to the peer. libzmq does not retry a connection the peer's
  // ZAP handler refused (e.g. before the peer admitted this node), so a
  // dealer that hears nothing for silent_after_ms is replaced by a new one.
  void Connect(Link& link) {
    link.dealer = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    zmq::socket_t& d = *link.dealer;
    d.set(zmq::sockopt::linger, 0);
    d.set(zmq::sockopt::curve_serverkey, link.record.spec.public_key);
    d.set(zmq::sockopt::curve_publickey, keys_.public_key);
    d.set(zmq::sockopt::curve_secretkey, keys_.secret_key);
    d.set(zmq::sockopt::immediate, 1);  // queue only to a connected, authenticated peer
    d.set(zmq::sockopt::reconnect_ivl, 100);
    d.set(zmq::sockopt::reconnect_ivl_max, 2000);
    d.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * kMaxMessageBytes));
    d.set(zmq::sockopt::sndhwm, 100000);
    d.set(zmq::sockopt::rcvhwm, 100000);
    d.connect(link.record.spec.endpoint);
    link.dealer_heard_ms = SteadyMs();
    link.next_heartbeat_ms = 0;
  }

  void Heard(Link& link, const std::optional<Hello>& hello) {
    const int64_t now = SteadyMs();
    link.heard_ms = now;
    if (link.state != LinkState::kUp) {
      Log("info", "peer " + link.record.spec.name + " is up (was " + ToString(link.state) + ")");
      link.state = LinkState::kUp;
      store_->SetPeerState(link.record.id, "up");
      store_->ResetBackoff(link.record.id);  // what it missed goes now
      SendHello(link);
    }
    if (hello || now - link.seen_saved_ms > 1000) {
      link.seen_saved_ms = now;
      std::optional<std::string> name, country;
      if (hello) {
        name = hello->node_name;
        country = hello->country;
      }
      store_->PeerSeen(link.record.id, name, country);
    }
  }

  void SendHello(Link& link) {
    Hello h{config_.name,
            config_.country,
            kProtocolVersion,
            {"search/cartridge_case", "hit_notice", "heartbeat"}};
    const std::string bytes = Encode(NewMessage(keys_.public_key, h));
    link.dealer->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  }

  void Tick() {
    const int64_t now = SteadyMs();
    if (now - peers_loaded_ms_ >= 250) ReloadPeers();
    for (auto& [key, link] : links_) {
      // Liveness.
      const int64_t quiet = link.heard_ms == 0 ? -1 : now - link.heard_ms;
      if (link.state == LinkState::kUp && quiet > options_.silent_after_ms) {
        link.state = LinkState::kSilent;
        store_->SetPeerState(link.record.id, "silent");
        Log("warn", "peer " + link.record.spec.name + " is silent (nothing for " +
                        std::to_string(quiet) + " ms)");
      } else if (link.state == LinkState::kSilent && quiet > options_.gone_after_ms) {
        link.state = LinkState::kGone;
        store_->SetPeerState(link.record.id, "gone");
        Log("warn", "peer " + link.record.spec.name + " is gone (nothing for " +
                        std::to_string(quiet) + " ms); its messages wait in the outbox");
      }
      if (now - link.dealer_heard_ms > options_.silent_after_ms) Connect(link);
      if (now >= link.next_heartbeat_ms) {
        link.next_heartbeat_ms = now + options_.heartbeat_ms;
        Message hb = NewMessage(keys_.public_key, Heartbeat{link.record.queue_depth});
        heartbeat_ids_.insert(hb.id);
        const std::string bytes = Encode(hb);
        link.dealer->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
        if (link.state == LinkState::kNew && link.heard_ms == 0) SendHello(link);
      }
      Flush(link);
    }
    if (heartbeat_ids_.size() > 10000) heartbeat_ids_.clear();
    if (now - expired_ms_ > 1000) {
      expired_ms_ = now;
      if (const int n = store_->ExpireOutbox(NowMs()); n > 0) {
        Log("info", std::to_string(n) + " correlation requests expired unsent");
      }
    }
    PublishAlerts();
  }

  // Sends what the outbox holds for the peer and is due.
  void Flush(Link& link) {
    const int64_t now = NowMs();
    for (int round = 0; round < 8; ++round) {
      const auto due = store_->DueOutbox(link.record.id, now, kBatch);
      if (due.empty()) return;
      std::vector<std::pair<int64_t, int64_t>> sent;
      bool blocked = false;
      for (const OutboxEntry& e : due) {
        if (!link.dealer->send(zmq::buffer(e.payload), zmq::send_flags::dontwait)) {
          blocked = true;  // not connected (or its queue is full): try again later
          break;
        }
        if (e.attempts > 0) {
          Log("info", "re-sending " + e.type + " " + e.message_id.substr(0, 8) + " to peer " +
                          link.record.spec.name + " (attempt " + std::to_string(e.attempts + 1) +
                          ")");
        }
        const int64_t backoff = std::min<int64_t>(options_.resend_max_ms,
                                                  static_cast<int64_t>(options_.resend_initial_ms)
                                                      << std::min(e.attempts, 16));
        sent.emplace_back(e.row, now + backoff);
      }
      store_->MarkAttempts(sent);
      if (blocked || static_cast<int>(due.size()) < kBatch) return;
    }
  }

  void PublishAlerts() {
    for (const AlertRecord& a : store_->AlertsAfter(last_alert_)) {
      last_alert_ = a.id.value;
      nlohmann::json j = {{"id", a.id.value},
                          {"node", config_.name},
                          {"created_at", a.created_at},
                          {"origin", a.origin},
                          {"peer", a.peer ? nlohmann::json(*a.peer) : nlohmann::json(nullptr)},
                          {"summary", a.summary},
                          {"payload", nlohmann::json::parse(a.payload_json, nullptr, false)}};
      pub_->send(zmq::str_buffer("alert"), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      pub_->send(zmq::buffer(j.dump()), zmq::send_flags::dontwait);
    }
  }

  // ---- ZAP -----------------------------------------------------------------

  void HandleZap() {
    std::vector<zmq::message_t> req;
    if (!zmq::recv_multipart(*zap_, std::back_inserter(req), zmq::recv_flags::dontwait)) return;
    if (req.size() < 6) return;  // libzmq's own request: never short
    const std::string request_id = req[1].to_string();
    const std::string address = req[3].to_string();
    const std::string mechanism = req[5].to_string();
    std::string status = "400", text = "not admitted", user;
    if (mechanism == "CURVE" && req.size() >= 7) {
      const std::string key = Z85(req[6].data(), req[6].size());
      if (links_.count(key)) {
        status = "200";
        text = "OK";
        user = key;
      } else {
        // A key removed a moment ago is refused even before the next reload.
        Log("warn",
            "refused a connection from " + address + ": key " + key + " is not an admitted peer");
      }
    } else {
      Log("warn", "refused a connection from " + address + ": mechanism " + mechanism);
    }
    std::array<zmq::const_buffer, 6> reply = {zmq::str_buffer("1.0"), zmq::buffer(request_id),
                                              zmq::buffer(status),    zmq::buffer(text),
                                              zmq::buffer(user),      zmq::const_buffer()};
    zmq::send_multipart(*zap_, reply);
  }

  // ---- inbound -------------------------------------------------------------

  void SendAck(const zmq::message_t& rid, const std::string& id) {
    const std::string bytes = Encode(NewMessage(keys_.public_key, Ack{id}));
    router_->send(zmq::buffer(rid.data(), rid.size()),
                  zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    router_->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  }

  // What a turn of inbound messages leaves to do once its transaction is
  // committed: acknowledgements, requests for the worker, alerts to publish.
  struct AfterCommit {
    std::vector<std::pair<zmq::message_t, std::string>> acks;  // routing id, message id
    std::vector<PendingRequest> requests;
    bool alerts = false;
  };

  // Up to kBatch inbound messages, their effects in one transaction (each
  // message's own effect all-or-nothing), then their acknowledgements.
  void HandleRouter() {
    std::vector<std::vector<zmq::message_t>> batch;
    for (int n = 0; n < kBatch; ++n) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(*router_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
        break;
      }
      batch.push_back(std::move(frames));
    }
    if (batch.empty()) return;
    AfterCommit after;
    try {
      store_->RunBatch([&] {
        for (auto& frames : batch) Inbound(frames, after);
      });
    } catch (const Error& e) {
      // Nothing was committed and nothing is acknowledged: the peers send again.
      Log("warn", std::string("could not record inbound messages: ") + e.what());
      return;
    }
    for (auto& [rid, id] : after.acks) SendAck(rid, id);
    for (PendingRequest& p : after.requests) Queue(std::move(p));
    if (after.alerts) PublishAlerts();
  }

  void Inbound(std::vector<zmq::message_t>& frames, AfterCommit& after) {
    if (frames.size() != 2) {
      Log("warn", "dropped a message of " + std::to_string(frames.size() - 1) +
                      " frames (a message is one frame)");
      return;
    }
    std::string key;
    try {
      key = frames[1].gets("User-Id");
    } catch (const zmq::error_t&) {
    }
    const auto it = links_.find(key);
    if (it == links_.end()) {
      Log("warn", "dropped a message from " +
                      (key.empty() ? "an unauthenticated sender" : "key " + key) +
                      ": not an admitted peer");
      return;
    }
    Link& link = it->second;
    const std::string& name = link.record.spec.name;
    const std::string_view bytes(static_cast<const char*>(frames[1].data()), frames[1].size());
    Decoded d = Decode(bytes);
    if (!d.message) {
      Log("warn", "dropped a message from peer " + name + ": " + d.error);
      return;
    }
    Message& m = *d.message;
    if (m.sender != key) {
      Log("warn", "dropped a " + std::string(ToString(m.type())) + " from peer " + name +
                      ": it claims to come from " + PeerName(m.sender) +
                      " (sender field does not match its authenticated key)");
      return;
    }
    try {
      Dispatch(link, frames[0], m, bytes, after);
    } catch (const Error& e) {
      // A store failure: its savepoint is rolled back and it is not
      // acknowledged, so the peer sends it again.
      Log("warn", "could not handle a " + std::string(ToString(m.type())) + " from peer " + name +
                      ": " + e.what());
    }
  }

  void Dispatch(Link& link, const zmq::message_t& rid, Message& m, std::string_view bytes,
                AfterCommit& after) {
    const std::string& name = link.record.spec.name;
    switch (m.type()) {
      case MessageType::kHello: {
        const Hello& h = std::get<Hello>(m.body);
        Heard(link, h);
        Welcome w;
        static_cast<Hello&>(w) = Hello{config_.name,
                                       config_.country,
                                       kProtocolVersion,
                                       {"search/cartridge_case", "hit_notice", "heartbeat"}};
        const std::string out = Encode(NewMessage(keys_.public_key, w));
        router_->send(zmq::buffer(rid.data(), rid.size()),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        router_->send(zmq::buffer(out), zmq::send_flags::dontwait);
        return;
      }
      case MessageType::kHeartbeat:
        Heard(link, std::nullopt);
        after.acks.emplace_back(zmq::message_t(rid.data(), rid.size()), m.id);
        return;
      case MessageType::kCorrelationRequest: {
        Heard(link, std::nullopt);
        if (store_->AcceptRequest(m.id, m.sender, std::string(bytes))) {
          after.requests.push_back(PendingRequest{m.id, m.sender, std::string(bytes)});
          Log("info", "correlation request " + m.id.substr(0, 8) + " from peer " + name);
        } else {
          Log("info", "duplicate correlation request " + m.id.substr(0, 8) + " from peer " + name +
                          " ignored (acknowledged again)");
        }
        after.acks.emplace_back(zmq::message_t(rid.data(), rid.size()), m.id);
        return;
      }
      case MessageType::kCorrelationResult: {
        Heard(link, std::nullopt);
        const CorrelationResult& r = std::get<CorrelationResult>(m.body);
        FederatedAnswer a;
        a.peer_name = name;
        a.status = r.status;
        a.detail = r.detail;
        a.partition_size = r.partition_size;
        a.coarse_ms = r.coarse_ms;
        a.fine_ms = r.fine_ms;
        std::vector<RemoteCandidateSpec> cands;
        for (const Candidate& c : r.candidates) {
          cands.push_back({c.case_ref, c.exhibit_ref, c.coarse_rank, c.coarse_score, c.fine_score,
                           c.strength, c.method});
        }
        if (store_->RecordAnswer(m.id, m.sender, name, r.request_id, a, cands)) {
          Log("info", "answer from peer " + name + " to request " + r.request_id.substr(0, 8) +
                          ": " + std::to_string(cands.size()) + " candidates");
        } else {
          Log("info", "answer " + m.id.substr(0, 8) + " from peer " + name +
                          " ignored (duplicate, or no such request)");
        }
        after.acks.emplace_back(zmq::message_t(rid.data(), rid.size()), m.id);
        return;
      }
      case MessageType::kHitNotice: {
        Heard(link, std::nullopt);
        const HitNotice& h = std::get<HitNotice>(m.body);
        ReceivedHitNotice n;
        n.hit_id = h.hit_id;
        n.peer_name = name;
        n.their_case_ref = h.sender_case_ref;
        n.their_exhibit_ref = h.sender_exhibit_ref;
        n.our_case_ref = h.receiver_case_ref;
        n.our_exhibit_ref = h.receiver_exhibit_ref;
        n.confirmed_by = h.confirmed_by;
        n.confirmed_at = IsoMs(h.confirmed_at_ms);
        n.note = h.note;
        n.fine_score = h.fine_score;
        n.method = h.method;
        if (const auto alert = store_->ReceiveHitNotice(m.id, m.sender, n)) {
          Log("info", "hit notice from peer " + name + ": alert #" +
                          std::to_string(alert->id.value) + ": " + alert->summary);
          after.alerts = true;
        } else {
          Log("info",
              "duplicate hit notice " + m.id.substr(0, 8) + " from peer " + name + " ignored");
        }
        after.acks.emplace_back(zmq::message_t(rid.data(), rid.size()), m.id);
        return;
      }
      case MessageType::kWelcome:
      case MessageType::kAck:
        Log("warn", "dropped a " + std::string(ToString(m.type())) + " from peer " + name +
                        " on the inbound socket (only replies carry those)");
        return;
    }
  }

  static std::string IsoMs(int64_t ms) {
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms % 1000));
    return buf;
  }

  // Replies from a peer's ROUTER: acknowledgements and welcomes.
  void HandleDealer(Link& link, std::vector<std::pair<int64_t, std::string>>& acks) {
    for (int n = 0; n < kBatch; ++n) {
      zmq::message_t msg;
      if (!link.dealer->recv(msg, zmq::recv_flags::dontwait)) return;
      const std::string& name = link.record.spec.name;
      link.dealer_heard_ms = SteadyMs();
      Decoded d = Decode(std::string_view(static_cast<const char*>(msg.data()), msg.size()));
      if (!d.message) {
        Log("warn", "dropped a reply from peer " + name + ": " + d.error);
        continue;
      }
      if (d.message->sender != link.record.spec.public_key) {
        Log("warn", "dropped a reply from peer " + name + ": it claims to come from " +
                        PeerName(d.message->sender));
        continue;
      }
      if (const Ack* a = std::get_if<Ack>(&d.message->body)) {
        Heard(link, std::nullopt);
        if (!heartbeat_ids_.erase(a->acked_id)) acks.emplace_back(link.record.id, a->acked_id);
      } else if (const Welcome* w = std::get_if<Welcome>(&d.message->body)) {
        Heard(link, static_cast<const Hello&>(*w));
      } else {
        Log("warn", "dropped a " + std::string(ToString(d.message->type())) + " from peer " + name +
                        " on its reply socket");
      }
    }
  }

  void RunActor() {
    try {
      int64_t next_tick = 0;
      while (true) {
        std::vector<zmq::pollitem_t> items = {{control_->handle(), 0, ZMQ_POLLIN, 0},
                                              {zap_->handle(), 0, ZMQ_POLLIN, 0},
                                              {router_->handle(), 0, ZMQ_POLLIN, 0}};
        std::vector<Link*> order;
        for (auto& [key, link] : links_) {
          items.push_back({link.dealer->handle(), 0, ZMQ_POLLIN, 0});
          order.push_back(&link);
        }
        const int64_t wait = std::max<int64_t>(0, next_tick - SteadyMs());
        zmq::poll(items, std::chrono::milliseconds(wait));
        if (items[0].revents & ZMQ_POLLIN) {
          zmq::message_t word;
          bool stop = false;
          while (control_->recv(word, zmq::recv_flags::dontwait)) {
            stop = stop || word.to_string_view() == "stop";
          }
          if (stop) break;
          next_tick = 0;  // an answer is queued: send it now
        }
        if (items[1].revents & ZMQ_POLLIN) HandleZap();
        if (items[2].revents & ZMQ_POLLIN) HandleRouter();
        std::vector<std::pair<int64_t, std::string>> acks;
        for (size_t i = 0; i < order.size(); ++i) {
          if (items[3 + i].revents & ZMQ_POLLIN) HandleDealer(*order[i], acks);
        }
        if (!acks.empty()) store_->Acknowledge(acks);
        if (SteadyMs() >= next_tick) {
          Tick();
          next_tick = SteadyMs() + options_.poll_ms;
        }
      }
    } catch (const std::exception& e) {
      Log("error", std::string("node actor stopped: ") + e.what());
    }
    // The actor's sockets are closed by Stop after the join.
  }

  // ---- correlation requests ------------------------------------------------

  void Queue(PendingRequest p) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(p));
    }
    cv_.notify_one();
  }

  void RunWorker() {
    std::unique_ptr<ExchangeStore> store;
    try {
      store = ExchangeStore::Open(dir_);
    } catch (const std::exception& e) {
      Log("error", std::string("request worker cannot open the store: ") + e.what());
      return;
    }
    while (true) {
      PendingRequest p;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;  // unanswered requests stay pending for the next start
        p = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        Answer(*store, p);
        Wake("answer");
      } catch (const std::exception& e) {
        Log("error", "request " + p.message_id.substr(0, 8) + ": " + e.what());
      }
    }
  }

  void Answer(ExchangeStore& store, const PendingRequest& p) {
    const auto peer = store.PeerByKey(p.peer_key);
    Decoded d = Decode(p.payload);
    if (!peer || !d.message) {
      store.AnswerRequest(p.message_id, 0, {});  // peer removed meanwhile: nothing to send
      return;
    }
    const CorrelationRequest& req = std::get<CorrelationRequest>(d.message->body);
    CorrelationResult result;
    result.request_id = req.request_id;
    const std::string partition = PartitionOf(req.kind, req.cc).Key();
    result.partition = partition;
    if (!peer->Shares(partition)) {
      result.status = "refused";
      result.detail = "partition " + partition + " is not shared with node " + config_.name;
      Log("warn", "refused request " + p.message_id.substr(0, 8) + " from peer " + peer->spec.name +
                      ": partition " + partition + " not shared with it");
    } else if (req.expires_ms < NowMs()) {
      result.status = "refused";
      result.detail = "the request expired before it could be answered";
    } else {
      try {
        result = handler_(store.store(), req, *peer);
        result.request_id = req.request_id;
      } catch (const std::exception& e) {
        result.status = "error";
        result.detail = std::string(e.what()).substr(0, kMaxNoteChars);
      }
    }
    Message out = NewMessage(keys_.public_key, result);
    std::string bytes;
    try {
      bytes = Encode(out);
    } catch (const Error& e) {
      CorrelationResult err;
      err.request_id = req.request_id;
      err.status = "error";
      err.detail = std::string(e.what()).substr(0, kMaxNoteChars);
      out = NewMessage(keys_.public_key, err);
      bytes = Encode(out);
    }
    store.AnswerRequest(p.message_id, peer->id,
                        OutgoingMessage{out.id, "correlation_result", bytes, std::nullopt});
    Log("info", "answered request " + p.message_id.substr(0, 8) + " from peer " + peer->spec.name +
                    ": " + result.status + ", " + std::to_string(result.candidates.size()) +
                    " candidates");
  }

  std::filesystem::path dir_;
  NodeOptions options_;
  RequestHandler handler_;
  LogSink log_;
  KeyPair keys_;
  NodeConfig config_;
  std::unique_ptr<ExchangeStore> store_;  // the actor's
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> zap_, control_, router_, pub_;
  std::map<std::string, Link> links_;  // by public key
  std::set<std::string> heartbeat_ids_;
  std::string endpoint_, alerts_endpoint_;
  int64_t peers_loaded_ms_ = 0;
  int64_t expired_ms_ = 0;
  int64_t last_alert_ = 0;
  std::thread actor_, worker_;
  std::atomic<bool> stopped_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PendingRequest> queue_;
  bool stopping_ = false;
};

}  // namespace

std::unique_ptr<Node> Node::Start(const std::filesystem::path& node_dir, const NodeOptions& options,
                                  RequestHandler handler, LogSink log) {
  auto node = std::make_unique<NodeImpl>(node_dir, options, std::move(handler), std::move(log));
  node->Init();
  return node;
}

}  // namespace bien::exchange

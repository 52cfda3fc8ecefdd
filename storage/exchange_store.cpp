#include "storage/exchange_store.h"

#include <openssl/rand.h>
#include <sqlite3.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/time.h"
#include "storage/sqlite.h"
#include "storage/store_internal.h"

namespace bien {
namespace {

namespace fs = std::filesystem;

bool IsPeerName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsZ85(const std::string& s) {
  static const std::string kAlphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  if (s.size() != 40) return false;
  for (char c : s) {
    if (kAlphabet.find(c) == std::string::npos) return false;
  }
  return true;
}

// tcp://HOST:PORT with a port 1..65535.
bool IsEndpoint(const std::string& s) {
  if (s.rfind("tcp://", 0) != 0) return false;
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon <= 6) return false;
  const std::string port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  const int p = std::stoi(port);
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= ' ') return false;
  }
  return p >= 1 && p <= 65535;
}

bool HasControl(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 && c != '\n' && c != '\t') return true;
  }
  return false;
}

std::string IsoOfMs(int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// A transaction, or a savepoint inside one already open (RunBatch): each
// method keeps its all-or-nothing effect either way.
class Tx {
 public:
  explicit Tx(sql::Db& db) : db_(db), nested_(sqlite3_get_autocommit(db.handle()) == 0) {
    if (nested_) {
      db_.Exec("SAVEPOINT exchange_step");
    } else {
      db_.Exec("BEGIN IMMEDIATE");
    }
  }
  ~Tx() {
    if (done_) return;
    sqlite3_exec(db_.handle(),
                 nested_ ? "ROLLBACK TO exchange_step; RELEASE exchange_step" : "ROLLBACK", nullptr,
                 nullptr, nullptr);
  }
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;
  void Commit() {
    db_.Exec(nested_ ? "RELEASE exchange_step" : "COMMIT");
    done_ = true;
  }

 private:
  sql::Db& db_;
  bool nested_;
  bool done_ = false;
};

constexpr const char* kPeerColumns =
    "SELECT p.id, p.name, p.endpoint, p.public_key, p.share, p.added_at, p.added_by,"
    " p.remote_name, p.remote_country, p.last_seen_at, p.state,"
    " (SELECT count(*) FROM outbox o WHERE o.peer_id = p.id AND o.acked_at IS NULL"
    "  AND o.expired_at IS NULL) FROM peers p ";

constexpr const char* kCandidateColumns =
    "SELECT r.id, s.request_id, s.query_exhibit_id, e.case_id, c.case_ref, e.exhibit_ref,"
    " r.peer_name, r.case_ref, r.exhibit_ref, r.coarse_rank, r.coarse_score, r.fine_score,"
    " r.strength, r.method, r.status, r.decided_by, r.decided_at, r.note, r.hit_id"
    " FROM remote_candidates r JOIN federated_answers a ON a.id = r.answer_id"
    " JOIN federated_searches s ON s.id = a.search_id"
    " JOIN exhibits e ON e.id = s.query_exhibit_id JOIN cases c ON c.id = e.case_id ";

class SqliteExchangeStore final : public ExchangeStore {
 public:
  SqliteExchangeStore(std::unique_ptr<Store> store, std::unique_ptr<sql::Db> db)
      : store_(std::move(store)), db_(std::move(db)) {}

  Store& store() override { return *store_; }

  void RunBatch(const std::function<void()>& work) override {
    sql::Transaction tx(*db_);
    work();
    tx.Commit();
  }

  PeerRecord AddPeer(const std::string& actor, const PeerSpec& spec) override {
    if (!IsPeerName(spec.name)) {
      throw Error("peer name '" + spec.name +
                  "': use 1-64 letters, digits, '_', '.' or '-' (e.g. BA-sarajevo)");
    }
    if (!IsEndpoint(spec.endpoint)) {
      throw Error("peer endpoint '" + spec.endpoint + "': expected tcp://HOST:PORT");
    }
    if (!IsZ85(spec.public_key)) {
      throw Error("peer public key '" + spec.public_key +
                  "': expected the 40-character Z85 text `bien keys` prints");
    }
    if (spec.share.empty()) throw Error("peer " + spec.name + ": share nothing? give --share");
    nlohmann::json share = nlohmann::json::array();
    for (const std::string& p : spec.share) {
      if (p != "*" && !ParsePartitionKey(p)) {
        throw Error("peer " + spec.name + ": '" + p +
                    "' is not a partition (e.g. 'cartridge_case|9mm Luger') or 'all'");
      }
      share.push_back(p);
    }
    Tx tx(*db_);
    if (Exists("SELECT count(*) FROM peers WHERE name = ?1", spec.name)) {
      throw Error("a peer named " + spec.name + " already exists (bien peer remove it first)");
    }
    if (Exists("SELECT count(*) FROM peers WHERE public_key = ?1", spec.public_key)) {
      throw Error("that public key already belongs to another peer");
    }
    sql::Stmt s(*db_,
                "INSERT INTO peers (name, endpoint, public_key, share, added_at, added_by)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    s.Bind(1, spec.name)
        .Bind(2, spec.endpoint)
        .Bind(3, spec.public_key)
        .Bind(4, share.dump())
        .Bind(5, UtcNowIso8601())
        .Bind(6, actor);
    s.Run();
    internal::AppendAuditRow(*db_, actor, "add_peer", "peer " + spec.name, std::nullopt,
                             std::nullopt,
                             nlohmann::json{{"name", spec.name},
                                            {"endpoint", spec.endpoint},
                                            {"public_key", spec.public_key},
                                            {"share", share}}
                                 .dump());
    tx.Commit();
    return *PeerWhere("WHERE p.name = ?1", spec.name);
  }

  void RemovePeer(const std::string& actor, const std::string& name) override {
    Tx tx(*db_);
    const auto peer = PeerWhere("WHERE p.name = ?1", name);
    if (!peer) throw Error("no peer named '" + name + "' (see bien peer list)");
    // Its queue goes with it; answers and alerts it caused stay (by name).
    sql::Stmt(*db_, "DELETE FROM outbox WHERE peer_id = ?1").Bind(1, peer->id).Run();
    sql::Stmt(*db_, "DELETE FROM peers WHERE id = ?1").Bind(1, peer->id).Run();
    internal::AppendAuditRow(*db_, actor, "remove_peer", "peer " + name, std::nullopt, std::nullopt,
                             nlohmann::json{{"name", name},
                                            {"public_key", peer->spec.public_key},
                                            {"dropped_messages", peer->queue_depth}}
                                 .dump());
    tx.Commit();
  }

  std::vector<PeerRecord> Peers() const override { return PeersWhere("ORDER BY p.name", {}); }

  std::optional<PeerRecord> PeerByKey(const std::string& key) const override {
    return PeerWhere("WHERE p.public_key = ?1", key);
  }

  void PeerSeen(int64_t peer_id, const std::optional<std::string>& remote_name,
                const std::optional<std::string>& remote_country) override {
    sql::Stmt s(*db_,
                "UPDATE peers SET last_seen_at = ?2, remote_name = coalesce(?3, remote_name),"
                " remote_country = coalesce(?4, remote_country) WHERE id = ?1");
    s.Bind(1, peer_id).Bind(2, UtcNowIso8601()).Bind(3, remote_name).Bind(4, remote_country);
    s.Run();
  }

  void SetPeerState(int64_t peer_id, const std::string& state) override {
    sql::Stmt s(*db_, "UPDATE peers SET state = ?2 WHERE id = ?1");
    s.Bind(1, peer_id).Bind(2, state);
    s.Run();
  }

  void Enqueue(int64_t peer_id, const OutgoingMessage& m) override {
    Tx tx(*db_);
    Insert(peer_id, m);
    tx.Commit();
  }

  std::vector<OutboxEntry> DueOutbox(int64_t peer_id, int64_t now_ms, int limit) const override {
    sql::Stmt s(*db_,
                "SELECT id, peer_id, message_id, type, payload, attempts FROM outbox"
                " WHERE acked_at IS NULL AND expired_at IS NULL AND peer_id = ?1"
                " AND next_attempt_ms <= ?2 ORDER BY id LIMIT ?3");
    s.Bind(1, peer_id).Bind(2, now_ms).Bind(3, limit);
    std::vector<OutboxEntry> out;
    while (s.Step()) {
      const auto blob = s.Blob(4);
      out.push_back({s.Int(0), s.Int(1), s.Text(2), s.Text(3),
                     std::string(reinterpret_cast<const char*>(blob.data()), blob.size()),
                     static_cast<int>(s.Int(5))});
    }
    return out;
  }

  void ResetBackoff(int64_t peer_id) override {
    sql::Stmt s(*db_,
                "UPDATE outbox SET next_attempt_ms = 0 WHERE peer_id = ?1 AND acked_at IS NULL"
                " AND expired_at IS NULL AND next_attempt_ms > 0");
    s.Bind(1, peer_id);
    s.Run();
  }

  void MarkAttempts(const std::vector<std::pair<int64_t, int64_t>>& rows) override {
    if (rows.empty()) return;
    Tx tx(*db_);
    sql::Stmt s(*db_,
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2 WHERE id = ?1");
    for (const auto& [row, next] : rows) {
      sql::Stmt::Scope scope(s);
      s.Bind(1, row).Bind(2, next);
      s.Run();
    }
    tx.Commit();
  }

  int Acknowledge(const std::vector<std::pair<int64_t, std::string>>& acks) override {
    if (acks.empty()) return 0;
    Tx tx(*db_);
    sql::Stmt s(*db_,
                "UPDATE outbox SET acked_at = ?3 WHERE peer_id = ?1 AND message_id = ?2"
                " AND acked_at IS NULL");
    const std::string now = UtcNowIso8601();
    int done = 0;
    for (const auto& [peer, id] : acks) {
      sql::Stmt::Scope scope(s);
      s.Bind(1, peer).Bind(2, id).Bind(3, now);
      s.Run();
      done += db_->Changes();
    }
    tx.Commit();
    return done;
  }

  int ExpireOutbox(int64_t now_ms, int keep_days) override {
    Tx tx(*db_);
    sql::Stmt s(*db_,
                "UPDATE outbox SET expired_at = ?2 WHERE acked_at IS NULL AND expired_at IS NULL"
                " AND expires_ms IS NOT NULL AND expires_ms < ?1");
    s.Bind(1, now_ms).Bind(2, UtcNowIso8601());
    s.Run();
    const int expired = db_->Changes();
    // Delivered (or expired) long ago: kept for a while for inspection, then gone.
    sql::Stmt prune(*db_,
                    "DELETE FROM outbox WHERE coalesce(acked_at, expired_at) IS NOT NULL"
                    " AND coalesce(acked_at, expired_at) < ?1");
    prune.Bind(1, IsoOfMs(now_ms - int64_t{keep_days} * 86'400'000));
    prune.Run();
    tx.Commit();
    return expired;
  }

  bool AcceptOnce(const std::string& id, const std::string& peer_key,
                  const std::string& type) override {
    sql::Stmt s(*db_,
                "INSERT OR IGNORE INTO inbox (message_id, peer_key, type, received_at, state)"
                " VALUES (?1, ?2, ?3, ?4, 'done')");
    s.Bind(1, id).Bind(2, peer_key).Bind(3, type).Bind(4, UtcNowIso8601());
    s.Run();
    return db_->Changes() > 0;
  }

  bool Seen(const std::string& id) const override {
    return Exists("SELECT count(*) FROM inbox WHERE message_id = ?1", id);
  }

  bool AcceptRequest(const std::string& id, const std::string& peer_key,
                     const std::string& payload) override {
    sql::Stmt s(*db_,
                "INSERT OR IGNORE INTO inbox (message_id, peer_key, type, received_at, state,"
                " payload) VALUES (?1, ?2, 'correlation_request', ?3, 'pending', ?4)");
    s.Bind(1, id).Bind(2, peer_key).Bind(3, UtcNowIso8601()).Bind(4, AsBytes(payload));
    s.Run();
    return db_->Changes() > 0;
  }

  std::vector<PendingRequest> PendingRequests() const override {
    sql::Stmt s(*db_,
                "SELECT message_id, peer_key, payload FROM inbox WHERE state = 'pending'"
                " ORDER BY received_at");
    std::vector<PendingRequest> out;
    while (s.Step()) {
      const auto blob = s.Blob(2);
      out.push_back({s.Text(0), s.Text(1),
                     std::string(reinterpret_cast<const char*>(blob.data()), blob.size())});
    }
    return out;
  }

  void AnswerRequest(const std::string& id, int64_t peer_id,
                     const OutgoingMessage& answer) override {
    Tx tx(*db_);
    sql::Stmt s(*db_,
                "UPDATE inbox SET state = 'done', payload = NULL WHERE message_id = ?1"
                " AND state = 'pending'");
    s.Bind(1, id);
    s.Run();
    if (db_->Changes() == 0) return;  // answered already
    if (peer_id > 0) Insert(peer_id, answer);
    tx.Commit();
  }

  FederatedSearchRecord StartFederatedSearch(
      const std::string& actor, ExhibitId query, const std::string& request_id, int64_t expires_ms,
      const std::vector<std::pair<int64_t, OutgoingMessage>>& requests) override {
    const ExhibitRecord e = store_->FindExhibit("#" + std::to_string(query.value));
    Tx tx(*db_);
    sql::Stmt s(*db_,
                "INSERT INTO federated_searches (request_id, query_exhibit_id, partition_key,"
                " created_at, created_by, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    s.Bind(1, request_id)
        .Bind(2, query.value)
        .Bind(3, PartitionKey(e))
        .Bind(4, UtcNowIso8601())
        .Bind(5, actor)
        .Bind(6, expires_ms);
    s.Run();
    nlohmann::json peers = nlohmann::json::array();
    for (const auto& [peer, m] : requests) {
      Insert(peer, m);
      peers.push_back(peer);
    }
    internal::AppendAuditRow(*db_, actor, "federated_search",
                             "exhibit " + e.case_ref + "/" + e.exhibit_ref, query, std::nullopt,
                             nlohmann::json{{"request_id", request_id}, {"peers", peers}}.dump());
    tx.Commit();
    return *FederatedSearch(request_id);
  }

  bool RecordAnswer(const std::string& message_id, const std::string& peer_key,
                    const std::string& peer_name, const std::string& request_id,
                    const FederatedAnswer& a,
                    const std::vector<RemoteCandidateSpec>& candidates) override {
    Tx tx(*db_);
    if (!AcceptOnce(message_id, peer_key, "correlation_result")) return false;
    const auto search = FederatedSearch(request_id);
    if (!search) {
      tx.Commit();  // remember the id: a replay is a duplicate, not unknown
      return false;
    }
    sql::Stmt s(*db_,
                "INSERT OR IGNORE INTO federated_answers (search_id, peer_name, status, detail,"
                " partition_size, coarse_ms, fine_ms, received_at)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    s.Bind(1, search->id)
        .Bind(2, peer_name)
        .Bind(3, a.status)
        .Bind(4, a.detail)
        .Bind(5, a.partition_size)
        .Bind(6, a.coarse_ms)
        .Bind(7, a.fine_ms)
        .Bind(8, UtcNowIso8601());
    s.Run();
    if (db_->Changes() == 0) {
      tx.Commit();
      return false;
    }
    const int64_t answer_id = db_->LastInsertRowId();
    sql::Stmt c(*db_,
                "INSERT INTO remote_candidates (answer_id, peer_name, case_ref, exhibit_ref,"
                " coarse_rank, coarse_score, fine_score, strength, method)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    for (const RemoteCandidateSpec& k : candidates) {
      sql::Stmt::Scope scope(c);
      c.Bind(1, answer_id)
          .Bind(2, peer_name)
          .Bind(3, k.case_ref)
          .Bind(4, k.exhibit_ref)
          .Bind(5, k.coarse_rank)
          .Bind(6, k.coarse_score)
          .Bind(7, k.fine_score)
          .Bind(8, k.strength)
          .Bind(9, k.method);
      c.Run();
    }
    tx.Commit();
    return true;
  }

  std::optional<FederatedSearchRecord> FederatedSearch(
      const std::string& request_id) const override {
    sql::Stmt s(*db_,
                "SELECT id, request_id, query_exhibit_id, partition_key, created_at, expires_ms"
                " FROM federated_searches WHERE request_id = ?1");
    s.Bind(1, request_id);
    if (!s.Step()) return std::nullopt;
    return FederatedSearchRecord{s.Int(0),  s.Text(1), ExhibitId(s.Int(2)),
                                 s.Text(3), s.Text(4), s.Int(5)};
  }

  std::vector<FederatedAnswer> Answers(const std::string& request_id) const override {
    sql::Stmt s(*db_,
                "SELECT a.id, a.peer_name, a.status, a.detail, a.partition_size, a.coarse_ms,"
                " a.fine_ms, a.received_at FROM federated_answers a JOIN federated_searches s"
                " ON s.id = a.search_id WHERE s.request_id = ?1 ORDER BY a.id");
    s.Bind(1, request_id);
    std::vector<FederatedAnswer> out;
    while (s.Step()) {
      out.push_back({s.Int(0), s.Text(1), s.Text(2), s.Text(3), s.Int(4), s.Double(5), s.Double(6),
                     s.Text(7)});
    }
    return out;
  }

  std::vector<RemoteCandidateRecord> RemoteCandidates(
      const std::string& request_id) const override {
    if (request_id.empty()) return Candidates("ORDER BY r.id", std::optional<int64_t>());
    return Candidates("WHERE s.request_id = ?1 ORDER BY r.id", request_id);
  }

  RemoteCandidateRecord FindRemoteCandidate(int64_t id) const override {
    auto found = Candidates("WHERE r.id = ?1", id);
    if (found.empty()) {
      throw Error("no remote candidate R" + std::to_string(id) +
                  " in the store (see bien search --federated)");
    }
    return found.front();
  }

  ConfirmedRemote ConfirmRemoteCandidate(
      int64_t id, const std::string& by, const std::string& note,
      const std::function<OutgoingMessage(const RemoteCandidateRecord&, int64_t)>& make_notice)
      override {
    CheckBy(by, note);
    const int64_t now_ms = NowMs();
    const std::string now = IsoOfMs(now_ms);
    Tx tx(*db_);
    {
      // One hit per pair: the same remote exhibit found again by a later
      // search is not confirmed (and notified) twice.
      const RemoteCandidateRecord c = FindRemoteCandidate(id);
      sql::Stmt same(*db_, std::string("SELECT r.id FROM remote_candidates r") +
                               " JOIN federated_answers a ON a.id = r.answer_id"
                               " JOIN federated_searches s ON s.id = a.search_id"
                               " WHERE r.status = 'confirmed' AND r.peer_name = ?1 AND"
                               " r.case_ref = ?2 AND r.exhibit_ref = ?3 AND"
                               " s.query_exhibit_id = ?4");
      same.Bind(1, c.peer_name)
          .Bind(2, c.candidate.case_ref)
          .Bind(3, c.candidate.exhibit_ref)
          .Bind(4, c.query.id.value);
      if (same.Step() && same.Int(0) != id) {
        throw Error(c.query.Label() + " and " + c.peer_name + ":" + c.Label() +
                    " are already a confirmed hit (R" + std::to_string(same.Int(0)) +
                    "); its node was notified then");
      }
    }
    RemoteCandidateRecord r = Decide(id, "confirmed", by, note, now);
    const std::string hit_id = RandomHexId();
    sql::Stmt(*db_, "UPDATE remote_candidates SET hit_id = ?2 WHERE id = ?1")
        .Bind(1, id)
        .Bind(2, hit_id)
        .Run();
    r.hit_id = hit_id;
    const auto peer = PeerWhere("WHERE p.name = ?1", r.peer_name);
    if (!peer) {
      throw Error("peer " + r.peer_name +
                  " is no longer in the peer list: cannot send it the hit notice (bien peer add "
                  "it again first)");
    }
    const ExhibitRecord q = store_->FindExhibit("#" + std::to_string(r.query.id.value));
    const NodeConfig& node = store_->config();
    nlohmann::json payload = {
        {"hit_id", hit_id},
        {"remote_candidate", id},
        {"node", {{"id", node.node_id}, {"name", node.name}, {"country", node.country}}},
        {"peer", r.peer_name},
        {"a",
         {{"node", node.name},
          {"exhibit_id", q.id.value},
          {"case", q.case_ref},
          {"exhibit", q.exhibit_ref},
          {"kind", ToString(q.kind)},
          {"calibre", q.cc.calibre ? nlohmann::json(*q.cc.calibre) : nlohmann::json(nullptr)}}},
        {"b",
         {{"node", r.peer_name},
          {"case", r.candidate.case_ref},
          {"exhibit", r.candidate.exhibit_ref}}},
        {"method", r.candidate.method},
        {"score", r.candidate.fine_score ? nlohmann::json(*r.candidate.fine_score)
                                         : nlohmann::json(nullptr)},
        {"confirmed_by", by},
        {"confirmed_at", now},
        {"note", note}};
    const std::string summary =
        "cross-border hit: " + r.query.Label() + " (this node) and " + r.Label() + " (node " +
        r.peer_name + ") were fired by the same firearm; " + r.candidate.method + " score " +
        (r.candidate.fine_score ? Num(*r.candidate.fine_score) : std::string("-")) +
        "; confirmed by " + by;
    const int64_t alert = InsertAlert("local", std::nullopt, id, std::nullopt, r.peer_name, now,
                                      summary, payload.dump());
    const OutgoingMessage notice = make_notice(r, now_ms);
    Insert(peer->id, notice);
    internal::AppendAuditRow(*db_, by, "confirm_remote_candidate",
                             "remote candidate R" + std::to_string(id) + ": " + r.query.Label() +
                                 " and " + r.peer_name + ":" + r.Label(),
                             r.query.id, std::nullopt,
                             nlohmann::json{{"remote_candidate", id},
                                            {"hit_id", hit_id},
                                            {"alert", alert},
                                            {"peer", r.peer_name},
                                            {"notice_message", notice.message_id},
                                            {"note", note}}
                                 .dump());
    tx.Commit();
    ConfirmedRemote out;
    out.candidate = FindRemoteCandidate(id);
    out.alert = AlertsWhere("WHERE id = ?1", alert).front();
    return out;
  }

  RemoteCandidateRecord RejectRemoteCandidate(int64_t id, const std::string& by,
                                              const std::string& note) override {
    CheckBy(by, note);
    const std::string now = UtcNowIso8601();
    Tx tx(*db_);
    RemoteCandidateRecord r = Decide(id, "rejected", by, note, now);
    internal::AppendAuditRow(*db_, by, "reject_remote_candidate",
                             "remote candidate R" + std::to_string(id) + ": " + r.query.Label() +
                                 " and " + r.peer_name + ":" + r.Label(),
                             r.query.id, std::nullopt,
                             nlohmann::json{{"remote_candidate", id}, {"note", note}}.dump());
    tx.Commit();
    return FindRemoteCandidate(id);
  }

  std::optional<AlertRecord> ReceiveHitNotice(const std::string& message_id,
                                              const std::string& peer_key,
                                              const ReceivedHitNotice& n) override {
    Tx tx(*db_);
    if (!AcceptOnce(message_id, peer_key, "hit_notice")) return std::nullopt;
    if (Exists("SELECT count(*) FROM alerts WHERE notice_id = ?1", n.hit_id)) {
      tx.Commit();
      return std::nullopt;
    }
    // Our exhibit, when it is known here (a notice naming an unknown exhibit
    // still alerts: the investigators must see it).
    std::optional<ExhibitRecord> ours;
    try {
      ours = store_->FindExhibit(n.our_case_ref + "/" + n.our_exhibit_ref);
    } catch (const Error&) {
    }
    nlohmann::json payload = {
        {"hit_id", n.hit_id},
        {"peer", n.peer_name},
        {"a",
         {{"node", n.peer_name}, {"case", n.their_case_ref}, {"exhibit", n.their_exhibit_ref}}},
        {"b",
         {{"node", store_->config().name},
          {"case", n.our_case_ref},
          {"exhibit", n.our_exhibit_ref},
          {"exhibit_id", ours ? nlohmann::json(ours->id.value) : nlohmann::json(nullptr)}}},
        {"method", n.method},
        {"score", n.fine_score},
        {"confirmed_by", n.confirmed_by},
        {"confirmed_at", n.confirmed_at},
        {"note", n.note}};
    const std::string summary =
        "cross-border hit from node " + n.peer_name + ": their " + n.their_case_ref + "/" +
        n.their_exhibit_ref + " and our " + n.our_case_ref + "/" + n.our_exhibit_ref +
        (ours ? "" : " (not found in this node)") + " were fired by the same firearm; " + n.method +
        " score " + Num(n.fine_score) + "; confirmed by " + n.confirmed_by + " at " +
        n.confirmed_at;
    const int64_t alert = InsertAlert("remote", std::nullopt, std::nullopt, n.hit_id, n.peer_name,
                                      UtcNowIso8601(), summary, payload.dump());
    internal::AppendAuditRow(
        *db_, "peer:" + n.peer_name, "receive_hit_notice",
        "hit notice from " + n.peer_name + " on " + n.our_case_ref + "/" + n.our_exhibit_ref,
        ours ? std::optional<ExhibitId>(ours->id) : std::nullopt, std::nullopt,
        nlohmann::json{{"hit_id", n.hit_id}, {"message", message_id}, {"alert", alert}}.dump());
    tx.Commit();
    return AlertsWhere("WHERE id = ?1", alert).front();
  }

  std::vector<AlertRecord> AlertsAfter(int64_t after) const override {
    return AlertsWhere("WHERE id > ?1 ORDER BY id", after);
  }

 private:
  static std::span<const std::byte> AsBytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
  }

  static std::string RandomHexId();

  template <typename T>
  bool Exists(const char* sql, const T& param) const {
    sql::Stmt s(*db_, sql);
    s.Bind(1, param);
    return s.Step() && s.Int(0) > 0;
  }

  void Insert(int64_t peer_id, const OutgoingMessage& m) {
    sql::Stmt s(*db_,
                "INSERT INTO outbox (peer_id, message_id, type, payload, created_at,"
                " next_attempt_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)");
    s.Bind(1, peer_id)
        .Bind(2, m.message_id)
        .Bind(3, m.type)
        .Bind(4, AsBytes(m.payload))
        .Bind(5, UtcNowIso8601())
        .Bind(6, m.expires_ms);
    s.Run();
  }

  PeerRecord ReadPeer(const sql::Stmt& s) const {
    PeerRecord p;
    p.id = s.Int(0);
    p.spec.name = s.Text(1);
    p.spec.endpoint = s.Text(2);
    p.spec.public_key = s.Text(3);
    p.spec.share.clear();
    for (const auto& v : nlohmann::json::parse(s.Text(4))) p.spec.share.push_back(v);
    p.added_at = s.Text(5);
    p.added_by = s.Text(6);
    p.remote_name = s.OptText(7);
    p.remote_country = s.OptText(8);
    p.last_seen_at = s.OptText(9);
    p.state = s.OptText(10);
    p.queue_depth = s.Int(11);
    return p;
  }

  std::vector<PeerRecord> PeersWhere(const std::string& where,
                                     std::optional<std::string> param) const {
    sql::Stmt s(*db_, kPeerColumns + where);
    if (param) s.Bind(1, *param);
    std::vector<PeerRecord> out;
    while (s.Step()) out.push_back(ReadPeer(s));
    return out;
  }

  std::optional<PeerRecord> PeerWhere(const std::string& where, const std::string& param) const {
    auto all = PeersWhere(where, param);
    if (all.empty()) return std::nullopt;
    return all.front();
  }

  template <typename T>
  std::vector<RemoteCandidateRecord> Candidates(const std::string& where,
                                                const std::optional<T>& param) const {
    sql::Stmt s(*db_, kCandidateColumns + where);
    if (param) s.Bind(1, *param);
    std::vector<RemoteCandidateRecord> out;
    while (s.Step()) {
      RemoteCandidateRecord r;
      r.id = s.Int(0);
      r.request_id = s.Text(1);
      r.query = ExhibitLabel{ExhibitId(s.Int(2)), CaseId(s.Int(3)), s.Text(4), s.Text(5)};
      r.peer_name = s.Text(6);
      r.candidate.case_ref = s.Text(7);
      r.candidate.exhibit_ref = s.Text(8);
      r.candidate.coarse_rank = static_cast<int>(s.Int(9));
      r.candidate.coarse_score = s.Double(10);
      r.candidate.fine_score = s.OptDouble(11);
      r.candidate.strength = s.OptDouble(12);
      r.candidate.method = s.Text(13);
      r.status = s.Text(14);
      r.decided_by = s.OptText(15);
      r.decided_at = s.OptText(16);
      r.note = s.OptText(17);
      r.hit_id = s.OptText(18);
      out.push_back(std::move(r));
    }
    return out;
  }
  std::vector<RemoteCandidateRecord> Candidates(const std::string& where, int64_t id) const {
    return Candidates(where, std::optional<int64_t>(id));
  }
  std::vector<RemoteCandidateRecord> Candidates(const std::string& where,
                                                const std::string& text) const {
    return Candidates(where, std::optional<std::string>(text));
  }

  std::vector<AlertRecord> AlertsWhere(const std::string& where, int64_t param) const {
    sql::Stmt s(*db_, internal::kAlertColumns + where);
    s.Bind(1, param);
    std::vector<AlertRecord> out;
    while (s.Step()) {
      out.push_back(internal::AlertFromRow(s));
    }
    return out;
  }

  int64_t InsertAlert(const std::string& origin, std::optional<int64_t> hit,
                      std::optional<int64_t> remote_candidate,
                      const std::optional<std::string>& notice, const std::string& peer,
                      const std::string& at, const std::string& summary,
                      const std::string& payload) {
    sql::Stmt s(*db_,
                "INSERT INTO alerts (hit_id, remote_candidate_id, notice_id, peer_name,"
                " created_at, origin, summary, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    s.Bind(1, hit)
        .Bind(2, remote_candidate)
        .Bind(3, notice)
        .Bind(4, peer)
        .Bind(5, at)
        .Bind(6, origin)
        .Bind(7, summary)
        .Bind(8, payload);
    s.Run();
    return db_->LastInsertRowId();
  }

  static void CheckBy(const std::string& by, const std::string& note) {
    if (by.empty() || by.size() > 128 || HasControl(by) || by.find('\n') != std::string::npos) {
      throw Error("the expert's name (--by) must be 1-128 characters on one line");
    }
    if (note.size() > 2000 || HasControl(note)) {
      throw Error("the note must be at most 2000 characters without control characters");
    }
  }

  // The open candidate `id` marked decided; the caller holds the transaction.
  RemoteCandidateRecord Decide(int64_t id, const std::string& status, const std::string& by,
                               const std::string& note, const std::string& now) {
    RemoteCandidateRecord r = FindRemoteCandidate(id);
    if (r.status != "open") {
      throw Error("remote candidate R" + std::to_string(id) + " is already " + r.status + " (by " +
                  r.decided_by.value_or("?") + " at " + r.decided_at.value_or("?") + ")");
    }
    std::optional<std::string> n;
    if (!note.empty()) n = note;
    sql::Stmt s(*db_,
                "UPDATE remote_candidates SET status = ?2, decided_by = ?3, decided_at = ?4,"
                " note = ?5, hit_id = ?6 WHERE id = ?1 AND status = 'open'");
    // A confirmed candidate gets its hit id in the same statement (the CHECK
    // ties status 'confirmed' to a hit id); ConfirmRemoteCandidate overwrites it.
    std::optional<std::string> placeholder;
    if (status == "confirmed") placeholder = RandomHexId();
    s.Bind(1, id).Bind(2, status).Bind(3, by).Bind(4, now).Bind(5, n).Bind(6, placeholder);
    s.Run();
    r.status = status;
    r.decided_by = by;
    r.decided_at = now;
    r.note = n;
    return r;
  }

  std::unique_ptr<Store> store_;
  std::unique_ptr<sql::Db> db_;
};

std::string SqliteExchangeStore::RandomHexId() {
  static constexpr char kDigits[] = "0123456789abcdef";
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw Error("no random bytes for a hit id");
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

}  // namespace

bool PeerRecord::Shares(const std::string& partition_key) const {
  for (const std::string& p : spec.share) {
    if (p == "*" || p == partition_key) return true;
  }
  return false;
}

std::unique_ptr<ExchangeStore> ExchangeStore::Open(const fs::path& dir) {
  auto db = internal::OpenNodeDatabase(dir);
  return std::make_unique<SqliteExchangeStore>(Store::Open(dir), std::move(db));
}

}  // namespace bien

// The federation's tables of a node's store (docs/SCHEMA.md, "Federation"):
// peers, the outbox and inbox of the reliable delivery, federated searches
// with the answers and candidates peers returned, and the alerts cross-border
// hits raise. Messages are opaque bytes here (the exchange layer encodes
// them); what matters is that each is written in the transaction of the
// change that caused it. One ExchangeStore per thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "storage/store.h"

namespace bien {

struct PeerSpec {
  std::string name;        // 1-64 of A-Z a-z 0-9 _ . -
  std::string endpoint;    // tcp://HOST:PORT
  std::string public_key;  // its CURVE public key, Z85 (40 characters)
  // Partition keys (Partition::Key) shared with the peer, or {"*"} for all.
  std::vector<std::string> share{"*"};
};

struct PeerRecord {
  int64_t id = 0;
  PeerSpec spec;
  std::string added_at;
  std::string added_by;
  std::optional<std::string> remote_name;  // as its hello/welcome said
  std::optional<std::string> remote_country;
  std::optional<std::string> last_seen_at;
  std::optional<std::string> state;  // up | silent | gone, as the running node last saw it
  int64_t queue_depth = 0;           // messages to it not yet acknowledged (and not expired)

  // True when the policy shares `partition_key` with this peer.
  bool Shares(const std::string& partition_key) const;
};

// A message to queue: its id (32 hex digits), type and encoded bytes. A
// message with expires_ms is dropped unsent after that time (requests); one
// without is sent until acknowledged (results, hit notices).
struct OutgoingMessage {
  std::string message_id;
  std::string type;
  std::string payload;
  std::optional<int64_t> expires_ms;
};

struct OutboxEntry {
  int64_t row = 0;
  int64_t peer_id = 0;
  std::string message_id;
  std::string type;
  std::string payload;
  int attempts = 0;
};

struct PendingRequest {
  std::string message_id;
  std::string peer_key;
  std::string payload;
};

struct FederatedSearchRecord {
  int64_t id = 0;
  std::string request_id;
  ExhibitId query;
  std::string partition_key;
  std::string created_at;
  int64_t expires_ms = 0;
};

struct FederatedAnswer {
  int64_t id = 0;
  std::string peer_name;
  std::string status;  // ok | refused | error
  std::string detail;
  int64_t partition_size = 0;
  double coarse_ms = 0;
  double fine_ms = 0;
  std::string received_at;
};

struct RemoteCandidateSpec {
  std::string case_ref;
  std::string exhibit_ref;
  int coarse_rank = 1;
  double coarse_score = 0;
  std::optional<double> fine_score;
  std::optional<double> strength;
  std::string method;
};

struct RemoteCandidateRecord {
  int64_t id = 0;
  std::string request_id;
  ExhibitLabel query;  // this node's exhibit that was searched
  std::string peer_name;
  RemoteCandidateSpec candidate;
  std::string status = "open";  // open | confirmed | rejected
  std::optional<std::string> decided_by;
  std::optional<std::string> decided_at;
  std::optional<std::string> note;
  std::optional<std::string> hit_id;  // 32 hex digits once confirmed
  std::string Label() const { return candidate.case_ref + "/" + candidate.exhibit_ref; }
};

struct ConfirmedRemote {
  RemoteCandidateRecord candidate;
  AlertRecord alert;
};

// What a received hit notice says, for the alert it raises.
struct ReceivedHitNotice {
  std::string hit_id;  // 32 hex digits
  std::string peer_name;
  std::string their_case_ref;
  std::string their_exhibit_ref;
  std::string our_case_ref;
  std::string our_exhibit_ref;
  std::string confirmed_by;
  std::string confirmed_at;  // UTC ISO 8601
  std::string note;
  double fine_score = 0;
  std::string method;
};

class ExchangeStore {
 public:
  // Opens the node (Store::Open: checks and migrates) and a connection of its own.
  static std::unique_ptr<ExchangeStore> Open(const std::filesystem::path& dir);
  virtual ~ExchangeStore() = default;

  virtual Store& store() = 0;  // the node's evidence store (same folder)

  // Runs `work` in one transaction: the methods it calls keep their own
  // all-or-nothing effect (savepoints) and commit together, with one sync to
  // disk. An exception from `work` rolls everything back.
  virtual void RunBatch(const std::function<void()>& work) = 0;

  // Peers. AddPeer and RemovePeer append an audit row. Throws bien::Error,
  // changing nothing, for a bad name, endpoint, key or share list, a name or
  // key already used, or (RemovePeer) an unknown name.
  virtual PeerRecord AddPeer(const std::string& actor, const PeerSpec& spec) = 0;
  virtual void RemovePeer(const std::string& actor, const std::string& name) = 0;
  virtual std::vector<PeerRecord> Peers() const = 0;  // by name
  virtual std::optional<PeerRecord> PeerByKey(const std::string& public_key) const = 0;
  // Records that the peer was heard from (and, when given, what it calls itself).
  virtual void PeerSeen(int64_t peer_id, const std::optional<std::string>& remote_name,
                        const std::optional<std::string>& remote_country) = 0;
  // The running node's view of the peer: "up", "silent" or "gone".
  virtual void SetPeerState(int64_t peer_id, const std::string& state) = 0;

  // Outbox. Enqueue writes in a transaction of its own.
  virtual void Enqueue(int64_t peer_id, const OutgoingMessage& message) = 0;
  // Unacknowledged, unexpired messages to the peer due at `now_ms`, oldest first.
  virtual std::vector<OutboxEntry> DueOutbox(int64_t peer_id, int64_t now_ms, int limit) const = 0;
  // Sent: attempts + 1 and the time of the next attempt, per outbox row.
  virtual void MarkAttempts(const std::vector<std::pair<int64_t, int64_t>>& row_next_ms) = 0;
  // The peer is back: everything waiting for it is due now.
  virtual void ResetBackoff(int64_t peer_id) = 0;
  // Acknowledgements (peer id, message id), one transaction; returns how
  // many messages were waiting for them.
  virtual int Acknowledge(const std::vector<std::pair<int64_t, std::string>>& acks) = 0;
  // Marks requests past their expiry as expired, and deletes messages
  // acknowledged or expired more than `keep_days` ago; returns how many expired.
  virtual int ExpireOutbox(int64_t now_ms, int keep_days = 30) = 0;

  // Inbox. True when the id was not seen before (and is now recorded as done).
  virtual bool AcceptOnce(const std::string& message_id, const std::string& peer_key,
                          const std::string& type) = 0;
  virtual bool Seen(const std::string& message_id) const = 0;
  // A correlation request to answer: recorded as pending with its bytes.
  virtual bool AcceptRequest(const std::string& message_id, const std::string& peer_key,
                             const std::string& payload) = 0;
  virtual std::vector<PendingRequest> PendingRequests() const = 0;
  // The request is answered: marked done and the answer queued, one transaction.
  virtual void AnswerRequest(const std::string& message_id, int64_t peer_id,
                             const OutgoingMessage& answer) = 0;

  // Federated search: the search and its requests (one per peer), one
  // transaction with an audit row.
  virtual FederatedSearchRecord StartFederatedSearch(
      const std::string& actor, ExhibitId query, const std::string& request_id, int64_t expires_ms,
      const std::vector<std::pair<int64_t, OutgoingMessage>>& requests) = 0;
  // A peer's answer: de-duplicated by message id, stored with its candidates
  // in one transaction. False for a duplicate, an unknown request id or a
  // second answer of the same peer.
  virtual bool RecordAnswer(const std::string& message_id, const std::string& peer_key,
                            const std::string& peer_name, const std::string& request_id,
                            const FederatedAnswer& answer,
                            const std::vector<RemoteCandidateSpec>& candidates) = 0;
  virtual std::optional<FederatedSearchRecord> FederatedSearch(
      const std::string& request_id) const = 0;
  virtual std::vector<FederatedAnswer> Answers(const std::string& request_id) const = 0;
  // Candidates of one search (or of all, when empty), by id.
  virtual std::vector<RemoteCandidateRecord> RemoteCandidates(
      const std::string& request_id) const = 0;
  virtual RemoteCandidateRecord FindRemoteCandidate(int64_t id) const = 0;

  // An expert confirms a remote candidate: in one transaction it becomes
  // confirmed with a new hit id, a local alert is raised, the hit notice that
  // `make_notice` encodes is queued for the peer, and an audit row is
  // appended. Throws bien::Error, changing nothing, for an unknown or decided
  // candidate, a peer no longer admitted, an empty `by`.
  virtual ConfirmedRemote ConfirmRemoteCandidate(
      int64_t id, const std::string& by, const std::string& note,
      const std::function<OutgoingMessage(const RemoteCandidateRecord&, int64_t confirmed_at_ms)>&
          make_notice) = 0;
  virtual RemoteCandidateRecord RejectRemoteCandidate(int64_t id, const std::string& by,
                                                      const std::string& note) = 0;

  // A hit notice from a peer: de-duplicated by message id and by hit id; one
  // remote alert, in one transaction. nullopt for a duplicate.
  virtual std::optional<AlertRecord> ReceiveHitNotice(const std::string& message_id,
                                                      const std::string& peer_key,
                                                      const ReceivedHitNotice& notice) = 0;
  // Alerts with an id above `after`, by id.
  virtual std::vector<AlertRecord> AlertsAfter(int64_t after) const = 0;
};

}  // namespace bien

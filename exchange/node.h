// The node: one actor thread owns every ZeroMQ socket of the federation
// (docs/PROTOCOL.md, "Transport"):
//   ROUTER   bound at `listen` (tcp), CURVE server; a ZAP handler admits only
//            the public keys of the store's peers table, re-read as it changes
//   DEALER   one per peer, CURVE client to the peer's ROUTER
//   PUB      `alerts` endpoint (ipc by default): every new alert, as JSON
//   ZAP REP  inproc://zeromq.zap.01, the allowlist
//   PAIR     inproc control pipe (Stop)
// Delivery is reliable through the store: the actor sends what the outbox
// holds, re-sends with back-off until the peer acknowledges, acknowledges what
// it received only after the change it causes is committed, and drops
// duplicates by message id. Correlation requests are answered on a worker
// thread (the search can take seconds) whose answer goes to the outbox in the
// transaction that marks the request answered.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "exchange/codec.h"
#include "storage/exchange_store.h"

namespace bien::exchange {

struct NodeOptions {
  std::string listen = "tcp://127.0.0.1:7300";  // ROUTER endpoint; port * = any free one
  std::string alerts;                           // PUB endpoint; empty = ipc://NODE/alerts.ipc
  int heartbeat_ms = 1000;                      // heartbeat to each peer this often
  int silent_after_ms = 3000;                   // a peer not heard from this long is "silent"
  int gone_after_ms = 10000;                    // ... and "gone"
  int poll_ms = 20;              // how often the outbox and peers table are looked at
  int resend_initial_ms = 1000;  // first re-send after this; doubles per attempt
  int resend_max_ms = 30000;     // ... up to this
  void Check() const;            // throws bien::Error on a bad value
};

// Answers a peer's correlation request (runs on the node's worker thread,
// with that thread's own store connection).
using RequestHandler = std::function<CorrelationResult(
    Store& store, const CorrelationRequest& request, const PeerRecord& peer)>;

// Log lines: level ("info", "warn") and text naming the peer.
using LogSink = std::function<void(const std::string& level, const std::string& text)>;

class Node {
 public:
  // Loads the node's keys (keys/node.key; `bien keys` creates them), binds and
  // starts the actor. Throws bien::Error when the keys are missing or the
  // endpoint cannot be bound.
  static std::unique_ptr<Node> Start(const std::filesystem::path& node_dir,
                                     const NodeOptions& options, RequestHandler handler,
                                     LogSink log);
  virtual ~Node() = default;
  virtual const std::string& endpoint() const = 0;         // the ROUTER's actual endpoint
  virtual const std::string& alerts_endpoint() const = 0;  // the PUB's
  virtual const std::string& public_key() const = 0;
  // Stops the actor and the worker (idempotent); an in-flight search is
  // awaited. What was not acknowledged stays in the outbox for the next start.
  virtual void Stop() = 0;
};

}  // namespace bien::exchange

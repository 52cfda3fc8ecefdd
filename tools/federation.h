// The federation from the `bien` command (docs/PROTOCOL.md, docs/CLI.md):
// keys, peers, the node (`bien serve`), federated search, confirming a
// remote candidate (a hit notice to its node) and following alerts.
//
// The command and the running node talk through the node's store: `bien
// search --federated` writes its requests to the outbox (one transaction) and
// waits for the answers the node (`bien serve`, another process) writes to the
// store as they arrive; `bien confirm R7` queues the hit notice in the
// transaction that confirms. Nothing is lost when the node is not running:
// it sends the queue when it starts.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "exchange/codec.h"
#include "storage/store.h"
#include "tools/commands.h"

namespace bien::cli {

int CmdKeys(Context& ctx);

struct PeerAddArgs {
  std::string name;
  std::string endpoint;
  std::string public_key;
  std::string share = "all";  // "all" or partitions/calibres separated by commas
};
int CmdPeerAdd(Context& ctx, const PeerAddArgs& args);
int CmdPeerList(Context& ctx);
int CmdPeerRemove(Context& ctx, const std::string& name);

struct ServeArgs {
  std::string listen = "tcp://127.0.0.1:7300";
  std::string alerts;  // empty: ipc://NODE/alerts.ipc
  int heartbeat_ms = 1000;
  int jobs = 0;  // fine-stage threads for peers' requests; 0 = all cores
};
// Runs the node until SIGINT or SIGTERM. Writes NODE/serve.endpoint (the
// ROUTER's actual endpoint, useful with port *) while it runs.
int CmdServe(Context& ctx, const ServeArgs& args);

struct FederatedArgs {
  double timeout_s = 10;     // wait this long for peers' answers
  bool coarse_only = false;  // ask peers for coarse candidates only (no fine features sent)
  int remote_top = 20;       // candidates each peer returns
};
// `bien search EXHIBIT --federated`: the local search and every sharing
// peer's, merged into one list marked by node.
struct SearchArgs;
int CmdSearchFederated(Context& ctx, const SearchArgs& search, const FederatedArgs& args);

// `bien confirm R7` / `bien reject R7`: remote candidates (true when `lead`
// names one and the command ran).
bool IsRemoteCandidateRef(const std::string& lead);
int CmdConfirmRemote(Context& ctx, const std::string& lead, const std::string& by,
                     const std::string& note);
int CmdRejectRemote(Context& ctx, const std::string& lead, const std::string& by,
                    const std::string& note);

struct AlertsFollowArgs {
  std::optional<double> timeout_s;  // stop after this long (default: until SIGINT/SIGTERM)
  std::optional<int> count;         // stop once this many alerts were printed
};
// Prints alerts as they arrive (existing ones first unless --json), one line
// (or one JSON object per line) each.
int CmdAlertsFollow(Context& ctx, const AlertsFollowArgs& args);

struct BenchExchangeArgs {
  int64_t messages = 200000;  // small messages (1 KiB frames; hit notices through the codec)
  int bulk_mb = 2000;         // 1 MiB frames, this many
  int64_t reliable = 2000;    // hit notices delivered through two nodes' stores
  std::optional<std::filesystem::path> work;  // scratch folder (default: temporary)
};
int CmdBenchExchange(Context& ctx, const BenchExchangeArgs& args);

// `bien bench federation` (tools/bench_federation.cpp): three nodes as `bien
// serve` processes, each with `exhibits` cartridge cases in one partition
// (a few real synthetic scans, the rest bench distractors), and federated
// searches from one node, coarse-only and with the peers' fine re-rank,
// timed as `bien search --federated` processes.
struct BenchFederationArgs {
  int64_t exhibits = 100000;                      // per node, in cartridge_case|9mm Luger
  int queries = 10;                               // timed searches per mode (one firearm each)
  std::optional<std::filesystem::path> features;  // `bien synth --features` file for distractors
  // Real data folder (../shared/data): the query firearms are Fadul slides
  // (scans 1, 2, 3 on RS, BA, MK) instead of synthetic scans.
  std::optional<std::filesystem::path> data;
  std::optional<std::filesystem::path> work;  // kept folder (default: temporary, removed)
  int jobs = 0;                               // threads per node and search; 0 = every core
};
int CmdBenchFederation(Context& ctx, const BenchFederationArgs& args);

// `bien demo` (tools/demo_federation.cpp): three nodes as processes.
struct DemoArgs;
int CmdDemoFederation(Context& ctx, const DemoArgs& args);

// Answers a peer's correlation request with the two-stage search on this
// node's store (what `bien serve` runs for each request).
exchange::CorrelationResult AnswerCorrelation(Store& store,
                                              const exchange::CorrelationRequest& request,
                                              int jobs);

// The correlation request for a stored cartridge case: class
// characteristics, coarse descriptor, the ring query for the peers' ring
// stage over their best `ring_pool` (none when 0 or the breech face is too
// sparse) and (unless coarse_only) the compact fine features.
exchange::CorrelationRequest BuildCorrelationRequest(Store& store, const ExhibitRecord& exhibit,
                                                     bool coarse_only, int top, int coarse_k,
                                                     int ring_pool = 20000);

}  // namespace bien::cli

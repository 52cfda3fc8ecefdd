#include "tools/federation.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/time.h"
#include "exchange/bench.h"
#include "exchange/keys.h"
#include "exchange/node.h"
#include "matching/calibration.h"
#include "matching/cmc.h"
#include "matching/descriptor.h"
#include "storage/exchange_store.h"
#include "tools/compare.h"
#include "tools/fine_features.h"
#include "tools/local_search.h"
#include "tools/output.h"
#include "tools/parallel.h"
#include "tools/search.h"

namespace bien::cli {
namespace {

namespace fs = std::filesystem;
using exchange::Candidate;
using exchange::CorrelationRequest;
using exchange::CorrelationResult;

std::string Label(const ExhibitRecord& e) { return e.case_ref + "/" + e.exhibit_ref; }

std::optional<ScanRecord> FirstTopography(const Store& store, ExhibitId exhibit) {
  for (const ScanRecord& s : store.ScansOf(exhibit)) {
    if (!s.meta.intensity) return s;
  }
  return std::nullopt;
}

exchange::KeyPair RequireKeys(const fs::path& dir) {
  const auto keys = exchange::LoadKeyPair(dir);
  if (!keys) throw Error(dir.string() + ": the node has no keys yet; create them with `bien keys`");
  return *keys;
}

// "all" -> {"*"}; otherwise each comma-separated item is a partition key
// ("cartridge_case|9mm Luger") or a calibre (cartridge cases of that calibre).
std::vector<std::string> ParseShare(const std::string& text) {
  if (text == "all" || text == "*") return {"*"};
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    if (item.find('|') == std::string::npos) {
      item = PartitionOf(ExhibitKind::kCartridgeCase, ClassCharacteristics{item, {}, {}, {}, {}})
                 .Key();
    }
    out.push_back(item);
  }
  if (out.empty()) throw Error("--share: give 'all' or partitions separated by commas");
  return out;
}

std::string Opt(const std::optional<double>& v, int digits) { return v ? Fixed(*v, digits) : "-"; }

nlohmann::json PeerJson(const PeerRecord& p) {
  return {
      {"name", p.spec.name},
      {"endpoint", p.spec.endpoint},
      {"public_key", p.spec.public_key},
      {"share", p.spec.share},
      {"added_at", p.added_at},
      {"added_by", p.added_by},
      {"remote_name", p.remote_name ? nlohmann::json(*p.remote_name) : nlohmann::json()},
      {"remote_country", p.remote_country ? nlohmann::json(*p.remote_country) : nlohmann::json()},
      {"last_seen_at", p.last_seen_at ? nlohmann::json(*p.last_seen_at) : nlohmann::json()},
      {"queue_depth", p.queue_depth}};
}

nlohmann::json AlertJson(const AlertRecord& a) {
  nlohmann::json payload = nlohmann::json::parse(a.payload_json, nullptr, false);
  return {{"id", a.id.value},
          {"created_at", a.created_at},
          {"origin", a.origin},
          {"peer", a.peer ? nlohmann::json(*a.peer) : nlohmann::json()},
          {"hit", a.hit ? nlohmann::json(a.hit->value) : nlohmann::json()},
          {"summary", a.summary},
          {"payload", payload.is_discarded() ? nlohmann::json(a.payload_json) : payload}};
}

volatile std::sig_atomic_t g_stop_requested = 0;
extern "C" void OnStopSignal(int) { g_stop_requested = 1; }

// Blocks SIGINT and SIGTERM in this thread (and the threads it starts) while
// it lives, so sigtimedwait can take them, and catches them everywhere else:
// threads that exist already (a library's pool, e.g. OpenBLAS's, started when
// it loads) do not block them, and a SIGTERM delivered to one of those used
// to end the process at once, without its clean shutdown (seen when a node
// got a second SIGTERM while stopping). With the handler such a signal only
// raises the flag StopSignal reads. Restores the mask and handlers after.
class StopSignals {
 public:
  StopSignals() {
    g_stop_requested = 0;
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~StopSignals() {
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  const sigset_t& set() const { return set_; }

 private:
  sigset_t set_{};
  sigset_t old_{};
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// Waits up to `ms` for SIGINT/SIGTERM; true when one came (to this thread or,
// through the handler, to any other).
bool StopSignal(const sigset_t& set, int ms) {
  if (g_stop_requested != 0) return true;
  timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1000000L};
  return sigtimedwait(&set, nullptr, &ts) > 0 || g_stop_requested != 0;
}

}  // namespace

// ---- keys and peers --------------------------------------------------------

int CmdKeys(Context& ctx) {
  const fs::path& dir = ctx.NodeDir();
  Store::Open(dir);  // a node folder (migrated)
  bool created = false;
  const exchange::KeyPair k = exchange::LoadOrCreateKeyPair(dir, &created);
  if (ctx.json) {
    ctx.out << nlohmann::json{{"public_key", k.public_key},
                              {"secret_key_file", (dir / "keys" / "node.key").string()},
                              {"created", created}}
                   .dump(2)
            << "\n";
    return kExitOk;
  }
  ctx.out << (created ? "created the node's CURVE key pair\n" : "") << "public key  "
          << k.public_key << "\n"
          << "secret key  " << (dir / "keys" / "node.key").string()
          << " (owner only; never share it)\n"
          << "give the public key and this node's endpoint to the other nodes' administrators:\n"
          << "  bien peer add NAME tcp://HOST:PORT -- '" << k.public_key << "'\n";
  return kExitOk;
}

int CmdPeerAdd(Context& ctx, const PeerAddArgs& args) {
  const std::string& key = args.public_key;
  if (key.empty()) {
    throw Error("peer add: give the peer's public key (its `bien keys` prints it)");
  }
  auto store = ExchangeStore::Open(ctx.NodeDir());
  PeerSpec spec{args.name, args.endpoint, key, ParseShare(args.share)};
  if (const auto keys = exchange::LoadKeyPair(ctx.NodeDir()); keys && keys->public_key == key) {
    throw Error("that is this node's own public key");
  }
  const PeerRecord p = store->AddPeer(ctx.actor, spec);
  if (ctx.json) {
    ctx.out << PeerJson(p).dump(2) << "\n";
    return kExitOk;
  }
  std::string share;
  for (const auto& s : p.spec.share) share += (share.empty() ? "" : ", ") + s;
  ctx.out << "peer " << p.spec.name << " added: " << p.spec.endpoint << ", key "
          << p.spec.public_key << ", shares " << (share == "*" ? "all partitions" : share)
          << "\n(a running node admits it within a second)\n";
  return kExitOk;
}

int CmdPeerList(Context& ctx) {
  auto store = ExchangeStore::Open(ctx.NodeDir());
  const auto peers = store->Peers();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& p : peers) j.push_back(PeerJson(p));
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  TextTable t({"PEER", "ENDPOINT", "NODE", "SHARES", "STATE", "LAST SEEN", "QUEUE", "KEY"});
  for (const auto& p : peers) {
    std::string share;
    for (const auto& s : p.spec.share) share += (share.empty() ? "" : ",") + s;
    t.Add({p.spec.name, p.spec.endpoint,
           p.remote_name ? *p.remote_name + " (" + p.remote_country.value_or("?") + ")" : "-",
           share == "*" ? "all" : share, p.state.value_or("-"), p.last_seen_at.value_or("never"),
           std::to_string(p.queue_depth), p.spec.public_key.substr(0, 12) + "..."});
  }
  ctx.out << t.Render() << peers.size() << " peer" << (peers.size() == 1 ? "" : "s") << "\n";
  return kExitOk;
}

int CmdPeerRemove(Context& ctx, const std::string& name) {
  auto store = ExchangeStore::Open(ctx.NodeDir());
  store->RemovePeer(ctx.actor, name);
  ctx.out << "peer " << name
          << " removed: a running node refuses it from now on; its queued messages are dropped\n";
  return kExitOk;
}

// ---- answering peers -------------------------------------------------------

CorrelationResult AnswerCorrelation(Store& store, const CorrelationRequest& req, int jobs) {
  CorrelationResult r;
  r.request_id = req.request_id;
  const Partition partition = PartitionOf(req.kind, req.cc);
  r.partition = partition.Key();
  if (req.kind != ExhibitKind::kCartridgeCase) {
    r.status = "refused";
    r.detail = "this node searches cartridge cases only";
    return r;
  }
  if (req.descriptor_key != DescriptorKey()) {
    r.status = "refused";
    r.detail = "descriptor " + req.descriptor_key + " is not this node's (" + DescriptorKey() + ")";
    return r;
  }
  const auto t0 = Clock::now();
  const CoarseIndex ci = OpenCoarseIndex(store, partition);
  r.partition_size = ci.scans;
  if (ci.index->size() == 0) return r;
  if (static_cast<int>(req.descriptor.size()) != ci.index->dim()) {
    r.status = "refused";
    r.detail = "descriptor of " + std::to_string(req.descriptor.size()) + " values (expected " +
               std::to_string(ci.index->dim()) + ")";
    return r;
  }
  // The local search's coarse stage (tools/search.h CoarseSelection), with
  // its ring stage when the request carries the query's ring spectra of this
  // node's key (else, or when they do not fit it, the cosine's order).
  CoarseSelection selection(store, ci, req.cc, std::nullopt);
  const int threads =
      jobs > 0 ? jobs : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<SearchCandidate> first;
  const size_t ring_dim = static_cast<size_t>(RingSpectraDim());
  if (req.ring_key == RingSpectraKey() && req.ring_pool > 0 && !req.ring_spectra.empty() &&
      req.ring_spectra.front().size() == ring_dim) {
    const RingQuery query{req.ring_spectra, req.ring_offsets_um};
    first = selection.NextByRings(req.descriptor, query, req.ring_pool, req.coarse_k, threads);
  } else {
    first = selection.Next(req.descriptor, req.coarse_k);
  }
  r.coarse_ms = MsSince(t0);
  struct Cand {
    SearchCandidate c;
    std::optional<double> fine;
  };
  std::vector<Cand> cands;
  if (!req.fine) {
    for (SearchCandidate& c : first) cands.push_back({std::move(c), std::nullopt});
  } else {
    const auto t1 = Clock::now();
    FineFeatures features(store.dir());
    const CmcOptions& cmc = features.options();
    const auto query = DecodeCmcFeatures(*req.fine, "the peer's exhibit", cmc);
    std::vector<SearchCandidate> scored;
    auto fine = [&](std::vector<SearchCandidate>& batch) {
      std::vector<FineTarget> targets;
      for (const SearchCandidate& c : batch) targets.push_back({c.exhibit, c.scan});
      const std::vector<FineOutcome> outcomes =
          CompareWithStored(store, features, *query, targets, threads);
      for (size_t i = 0; i < batch.size(); ++i) {
        // Not comparable: stays a coarse-only candidate.
        std::optional<double> f;
        if (outcomes[i].result) {
          f = outcomes[i].result->combined;
          batch[i].score = *f;
          scored.push_back(batch[i]);
        }
        cands.push_back({std::move(batch[i]), f});
      }
    };
    fine(first);
    // Query expansion, as the local search does it (the node's defaults): the
    // coarse neighbours of the strongest candidates. The answer has no "via":
    // they rank after the query's own list, with the query's cosine.
    std::vector<SearchCandidate> more =
        selection.Expand(scored, kDefaultLeadThreshold, SearchOptions{});
    for (size_t i = 0; i < more.size(); ++i) {
      more[i].coarse_rank = static_cast<int>(cands.size() + i) + 1;
      const auto v = store.GetDescriptor(more[i].scan, ci.index->descriptor_key());
      if (v && v->size() == req.descriptor.size()) {
        double dot = 0, na = 0, nb = 0;
        for (size_t d = 0; d < v->size(); ++d) {
          dot += static_cast<double>((*v)[d]) * req.descriptor[d];
          na += static_cast<double>((*v)[d]) * (*v)[d];
          nb += static_cast<double>(req.descriptor[d]) * req.descriptor[d];
        }
        more[i].coarse_score = na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0;
      }
    }
    fine(more);
    r.fine_ms = MsSince(t1);
    std::stable_sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
      return a.fine.value_or(-1) > b.fine.value_or(-1);
    });
  }
  const KnmDistribution knm(store.KnmScores(kCmcMethod));
  for (const Cand& c : cands) {
    if (static_cast<int>(r.candidates.size()) >= req.top) break;
    Candidate k;
    k.case_ref = c.c.exhibit.case_ref;
    k.exhibit_ref = c.c.exhibit.exhibit_ref;
    k.coarse_rank = c.c.coarse_rank;
    k.coarse_score = c.c.coarse_score;
    k.fine_score = c.fine;
    if (c.fine) {
      k.method = kCmcMethod;
      if (knm.size() > 0) k.strength = knm.At(*c.fine).rate;
    }
    r.candidates.push_back(std::move(k));
  }
  return r;
}

CorrelationRequest BuildCorrelationRequest(Store& store, const ExhibitRecord& e, bool coarse_only,
                                           int top, int coarse_k, int ring_pool) {
  const std::string name = Label(e);
  if (e.kind != ExhibitKind::kCartridgeCase) {
    throw Error(name + ": federated search is available for cartridge cases");
  }
  const auto scan = FirstTopography(store, e.id);
  if (!scan) throw Error(name + ": has no 3D scan to search with");
  CorrelationRequest r;
  r.request_id = exchange::NewId();
  r.kind = e.kind;
  r.cc = e.cc;
  r.descriptor_key = DescriptorKey();
  auto vector = store.GetDescriptor(scan->id, r.descriptor_key);
  const std::filesystem::path object = store.ObjectPath(scan->sha256);
  if (!vector) vector = BreechFaceScanDescriptor(ReadStoredScan(object, *scan, name).surface, name);
  r.descriptor = *vector;
  // The ring query for the peers' ring stage; a breech face too sparse for
  // ring spectra is searched by cosine alone.
  if (ring_pool > 0) {
    try {
      RingQuery q =
          BreechFaceRingQuery(Preprocessed(ReadStoredScan(object, *scan, name), nullptr), name);
      r.ring_key = RingSpectraKey();
      r.ring_spectra = std::move(q.spectra);
      r.ring_offsets_um = std::move(q.offsets_um);
      r.ring_pool = std::min(ring_pool, exchange::kMaxRingPool);
    } catch (const Error&) {
    }
  }
  if (!coarse_only) {
    FineFeatures features(store.dir());
    r.fine = EncodeCmcFeatures(*features.Get(*scan, object, name), features.options());
  }
  r.case_ref = e.case_ref;
  r.exhibit_ref = e.exhibit_ref;
  r.top = top;
  r.coarse_k = coarse_k;
  return r;
}

// ---- serve -----------------------------------------------------------------

int CmdServe(Context& ctx, const ServeArgs& args) {
  const fs::path dir = ctx.NodeDir();
  const StopSignals stop_signals;  // before any thread starts
  const sigset_t& signals = stop_signals.set();
  exchange::NodeOptions options;
  options.listen = args.listen;
  options.alerts = args.alerts;
  options.heartbeat_ms = args.heartbeat_ms;
  options.silent_after_ms = 3 * args.heartbeat_ms;
  options.gone_after_ms = 10 * args.heartbeat_ms;
  std::mutex log_mu;
  std::ostream& log_out = ctx.err;
  auto log = [&](const std::string& level, const std::string& text) {
    std::lock_guard lock(log_mu);
    log_out << UtcNowIso8601() << " " << level << " " << text << std::endl;
  };
  const int jobs = args.jobs;
  auto handler = [jobs](Store& store, const CorrelationRequest& req, const PeerRecord&) {
    return AnswerCorrelation(store, req, jobs);
  };
  auto node = exchange::Node::Start(dir, options, handler, log);
  // `bien search` on this node runs here, with the indexes in memory.
  std::unique_ptr<LocalSearchServer> local_search;
  try {
    local_search = std::make_unique<LocalSearchServer>(dir, log);
  } catch (const Error& e) {
    log("warn", std::string("no local searches through this node: ") + e.what());
  }
  {
    std::ofstream f(dir / "serve.endpoint");
    f << node->endpoint() << "\n" << node->alerts_endpoint() << "\n";
  }
  ctx.out << "serving node at " << node->endpoint() << " (alerts: " << node->alerts_endpoint()
          << "); stop with Ctrl-C\n"
          << std::flush;
  while (!StopSignal(signals, 500)) {
  }
  log("info", "stop signal received: shutting down");
  local_search.reset();
  const std::string alerts = node->alerts_endpoint();
  node->Stop();
  std::error_code ec;
  fs::remove(dir / "serve.endpoint", ec);
  if (alerts.rfind("ipc://", 0) == 0) fs::remove(alerts.substr(6), ec);
  return kExitOk;
}

// ---- federated search ------------------------------------------------------

int CmdSearchFederated(Context& ctx, const SearchArgs& search, const FederatedArgs& args) {
  if (args.timeout_s <= 0 || args.timeout_s > 3600) throw Error("--timeout: 0-3600 seconds");
  const fs::path dir = ctx.NodeDir();
  const exchange::KeyPair keys = RequireKeys(dir);
  auto ex = ExchangeStore::Open(dir);
  Store& store = ex->store();
  const ExhibitRecord query = store.FindExhibit(search.exhibit);
  const std::string partition = PartitionKey(query);
  std::vector<PeerRecord> peers;
  for (PeerRecord& p : ex->Peers()) {
    if (p.Shares(partition)) peers.push_back(std::move(p));
  }
  const auto t0 = Clock::now();
  CorrelationRequest req =
      BuildCorrelationRequest(store, query, args.coarse_only, args.remote_top,
                              search.options.coarse_k, search.options.ring_pool);
  const int64_t expires = exchange::NowMs() + static_cast<int64_t>(args.timeout_s * 1000) + 5000;
  req.expires_ms = expires;
  std::vector<std::pair<int64_t, OutgoingMessage>> out;
  for (const PeerRecord& p : peers) {
    const exchange::Message m = exchange::NewMessage(keys.public_key, req);
    out.push_back(
        {p.id, OutgoingMessage{m.id, "correlation_request", exchange::Encode(m), expires}});
  }
  ex->StartFederatedSearch(ctx.actor, query.id, req.request_id, expires, out);

  // The local search meanwhile (it records local leads as `bien search` does;
  // with --coarse-only it is coarse-only too: no CMC, no leads).
  SearchOptions options = search.options;
  options.coarse_only = args.coarse_only;
  options.record_leads = !search.no_leads;
  std::optional<SearchReport> local;
  std::string local_error;
  try {
    // The request's ring query is the local search's too (made once).
    std::optional<RingQuery> rings;
    if (!req.ring_key.empty()) rings = RingQuery{req.ring_spectra, req.ring_offsets_um};
    local = SearchExhibit(store, query, options, ctx.actor, rings ? &*rings : nullptr);
  } catch (const Error& e) {
    local_error = e.what();
  }

  // The answers, as the node writes them.
  const auto deadline = t0 + std::chrono::milliseconds(static_cast<int64_t>(args.timeout_s * 1000));
  std::vector<FederatedAnswer> answers;
  while (true) {
    answers = ex->Answers(req.request_id);
    if (answers.size() >= peers.size() || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double total_ms = MsSince(t0);
  const auto remote = ex->RemoteCandidates(req.request_id);
  std::set<std::string> answered;
  for (const auto& a : answers) answered.insert(a.peer_name);
  std::vector<std::string> silent;
  for (const auto& p : peers) {
    if (!answered.count(p.spec.name)) silent.push_back(p.spec.name);
  }

  struct Row {
    std::string node, candidate, ref, method;
    std::optional<double> score, strength;
    double coarse = 0;
    int coarse_rank = 0;
    bool local = true;
  };
  std::vector<Row> rows;
  const std::string self = store.config().name;
  if (local) {
    for (const SearchCandidate& c : local->candidates) {
      Row r{self,           Label(c.exhibit), "",  "", std::nullopt, std::nullopt,
            c.coarse_score, c.coarse_rank,    true};
      if (!local->coarse_only) {
        r.method = kCmcMethod;
        r.score = c.score;
        if (c.strength && c.strength->total > 0) r.strength = c.strength->rate;
      }
      rows.push_back(std::move(r));
    }
  }
  for (const RemoteCandidateRecord& c : remote) {
    rows.push_back({c.peer_name, c.Label(), "R" + std::to_string(c.id), c.candidate.method,
                    c.candidate.fine_score, c.candidate.strength, c.candidate.coarse_score,
                    c.candidate.coarse_rank, false});
  }
  if (args.coarse_only) {
    // Cosines of one descriptor key (a peer refuses another) compare across
    // nodes: one list by coarse score.
    std::stable_sort(rows.begin(), rows.end(),
                     [](const Row& a, const Row& b) { return a.coarse > b.coarse; });
  } else {
    // By fine score; candidates without one (not comparable) after, by cosine.
    std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      if (a.score.has_value() != b.score.has_value()) return a.score.has_value();
      return a.score ? *a.score > *b.score : a.coarse > b.coarse;
    });
  }
  // What --top leaves out is counted, and the candidates without a fine
  // score among it named by number, never dropped silently.
  size_t not_shown = 0, not_shown_unscored = 0;
  if (static_cast<int>(rows.size()) > search.top) {
    for (size_t i = static_cast<size_t>(search.top); i < rows.size(); ++i) {
      ++not_shown;
      not_shown_unscored += !rows[i].score.has_value();
    }
    rows.resize(static_cast<size_t>(search.top));
  }

  if (ctx.json) {
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      list.push_back(
          {{"rank", i + 1},
           {"node", r.node},
           {"local", r.local},
           {"exhibit", r.candidate},
           {"remote_candidate", r.ref.empty() ? nlohmann::json() : nlohmann::json(r.ref)},
           {"score", r.score ? nlohmann::json(*r.score) : nlohmann::json()},
           {"strength", r.strength ? nlohmann::json(*r.strength) : nlohmann::json()},
           {"method", r.method},
           {"coarse_rank", r.coarse_rank},
           {"coarse_score", r.coarse}});
    }
    nlohmann::json ans = nlohmann::json::array();
    for (const auto& a : answers) {
      ans.push_back({{"node", a.peer_name},
                     {"status", a.status},
                     {"detail", a.detail},
                     {"partition_size", a.partition_size},
                     {"coarse_ms", a.coarse_ms},
                     {"fine_ms", a.fine_ms}});
    }
    ctx.out << nlohmann::json{{"query", Label(query)},
                              {"partition", partition},
                              {"request_id", req.request_id},
                              {"peers_asked", peers.size()},
                              {"answers", ans},
                              {"no_answer", silent},
                              {"local_error", local_error.empty() ? nlohmann::json()
                                                                  : nlohmann::json(local_error)},
                              {"coarse_only", args.coarse_only},
                              {"local_candidates", local ? local->candidates.size() : 0},
                              {"local_compared",
                               local && !local->coarse_only ? local->candidates.size() : 0},
                              {"not_shown", not_shown},
                              {"not_shown_without_fine_score", not_shown_unscored},
                              {"local_skipped",
                               local ? local->skipped : std::vector<std::string>()},
                              {"candidates", list},
                              {"ms", total_ms}}
                   .dump(2)
            << "\n";
    return kExitOk;
  }
  ctx.out << "federated search " << Label(query) << " (partition " << partition << ")\n"
          << "asked " << peers.size() << " peer" << (peers.size() == 1 ? "" : "s")
          << (args.coarse_only ? " (coarse only, here too: ordered by coarse cosine)"
                               : " (coarse + fine re-rank)")
          << "; " << answers.size() << " answered in " << Fixed(total_ms / 1000, 1) << " s\n";
  if (!local_error.empty()) ctx.out << "local search: " << local_error << "\n";
  if (local && !local->skipped.empty()) {
    ctx.out << "local search: " << local->skipped.size()
            << " candidates not compared (first: " << local->skipped.front() << ")\n";
  }
  TextTable t({"RANK", "NODE", "CANDIDATE", "SCORE", "STRENGTH", "COARSE", "CONFIRM AS"});
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    t.Add({std::to_string(i + 1), r.node + (r.local ? " (local)" : ""), r.candidate,
           Opt(r.score, 1), Opt(r.strength, 4),
           "#" + std::to_string(r.coarse_rank) + " " + Fixed(r.coarse, 3),
           r.local ? "(bien leads)" : r.ref});
  }
  ctx.out << t.Render();
  if (not_shown > 0) {
    ctx.out << not_shown << " more not shown (--top " << search.top << ")";
    if (!args.coarse_only) {
      ctx.out << ", " << not_shown_unscored << " of them without a fine score";
    }
    ctx.out << "\n";
  }
  for (const auto& a : answers) {
    if (a.status != "ok")
      ctx.out << "node " << a.peer_name << " " << a.status << ": " << a.detail << "\n";
  }
  if (!silent.empty()) {
    std::string names;
    for (const auto& s : silent) names += (names.empty() ? "" : ", ") + s;
    ctx.out << "no answer within " << Fixed(args.timeout_s, 0) << " s from: " << names
            << " (the request stays queued until it expires; is `bien serve` running?)\n";
  }
  return kExitOk;
}

// ---- remote candidates -----------------------------------------------------

bool IsRemoteCandidateRef(const std::string& lead) {
  return lead.size() >= 2 && (lead[0] == 'R' || lead[0] == 'r') &&
         std::all_of(lead.begin() + 1, lead.end(), [](char c) { return c >= '0' && c <= '9'; });
}

namespace {
int64_t RemoteId(const std::string& lead) {
  if (!IsRemoteCandidateRef(lead) || lead.size() > 15) {
    throw Error("'" + lead + "' is not a remote candidate (e.g. R3)");
  }
  return std::stoll(lead.substr(1));
}
}  // namespace

int CmdConfirmRemote(Context& ctx, const std::string& lead, const std::string& by,
                     const std::string& note) {
  const int64_t id = RemoteId(lead);
  const fs::path dir = ctx.NodeDir();
  const exchange::KeyPair keys = RequireKeys(dir);
  auto ex = ExchangeStore::Open(dir);
  const ConfirmedRemote c =
      ex->ConfirmRemoteCandidate(id, by, note, [&](const RemoteCandidateRecord& r, int64_t at_ms) {
        exchange::HitNotice h;
        h.hit_id = *r.hit_id;
        h.sender_case_ref = r.query.case_ref;
        h.sender_exhibit_ref = r.query.exhibit_ref;
        h.receiver_case_ref = r.candidate.case_ref;
        h.receiver_exhibit_ref = r.candidate.exhibit_ref;
        h.confirmed_by = by;
        h.confirmed_at_ms = at_ms;
        h.note = note;
        h.fine_score = r.candidate.fine_score.value_or(0);
        h.method = r.candidate.method;
        const exchange::Message m = exchange::NewMessage(keys.public_key, h);
        return OutgoingMessage{m.id, "hit_notice", exchange::Encode(m), std::nullopt};
      });
  if (ctx.json) {
    ctx.out << nlohmann::json{{"remote_candidate", lead},
                              {"hit_id", *c.candidate.hit_id},
                              {"alert", AlertJson(c.alert)},
                              {"notice_to", c.candidate.peer_name}}
                   .dump(2)
            << "\n";
    return kExitOk;
  }
  ctx.out << "confirmed remote candidate " << lead << ": " << c.candidate.query.Label() << " and "
          << c.candidate.Label() << " of node " << c.candidate.peer_name << " (by " << by << ")\n"
          << "alert #" << c.alert.id.value << " (local): " << c.alert.summary << "\n"
          << "hit notice queued for node " << c.candidate.peer_name
          << " (sent by `bien serve` until it is acknowledged)\n";
  return kExitOk;
}

int CmdRejectRemote(Context& ctx, const std::string& lead, const std::string& by,
                    const std::string& note) {
  auto ex = ExchangeStore::Open(ctx.NodeDir());
  const RemoteCandidateRecord r = ex->RejectRemoteCandidate(RemoteId(lead), by, note);
  ctx.out << "rejected remote candidate " << lead << ": " << r.query.Label() << " and " << r.Label()
          << " of node " << r.peer_name << "\n";
  return kExitOk;
}

// ---- bench exchange --------------------------------------------------------

int CmdBenchExchange(Context& ctx, const BenchExchangeArgs& args) {
  if (args.messages < 1 || args.bulk_mb < 1 || args.reliable < 1) {
    throw Error("--messages, --bulk-mb and --reliable must be at least 1");
  }
  const fs::path work =
      args.work ? *args.work
                : fs::temp_directory_path() / ("bien-bench-exchange-" + std::to_string(::getpid()));
  fs::create_directories(work);
  const auto small = exchange::BenchCurveTransport(args.messages, 1024);
  const auto codec = exchange::BenchCodecMessages(args.messages);
  const auto bulk = exchange::BenchCurveTransport(args.bulk_mb, 1 << 20);
  const auto reliable = exchange::BenchReliableDelivery(work, args.reliable);
  if (!args.work) fs::remove_all(work);
  if (ctx.json) {
    auto j = [](const exchange::ThroughputResult& r) {
      return nlohmann::json{{"messages", r.messages},
                            {"bytes", r.bytes},
                            {"seconds", r.seconds},
                            {"messages_per_s", r.MessagesPerSecond()},
                            {"mb_per_s", r.MegabytesPerSecond()}};
    };
    ctx.out << nlohmann::json{{"curve_1kib", j(small)},
                              {"codec_hit_notices", j(codec)},
                              {"curve_1mib", j(bulk)},
                              {"reliable_hit_notices", j(reliable)}}
                   .dump(2)
            << "\n";
    return kExitOk;
  }
  TextTable t({"MEASURE", "MESSAGES", "BYTES EACH", "SECONDS", "MESSAGES/S", "MB/S"});
  auto row = [&](const std::string& what, const exchange::ThroughputResult& r) {
    t.Add({what, std::to_string(r.messages),
           std::to_string(r.bytes / std::max<int64_t>(1, r.messages)), Fixed(r.seconds, 2),
           Fixed(r.MessagesPerSecond(), 0), Fixed(r.MegabytesPerSecond(), 1)});
  };
  row("CURVE tcp loopback, 1 KiB frames", small);
  row("hit notices: encode, CURVE, decode+check", codec);
  row("CURVE tcp loopback, 1 MiB frames (bulk)", bulk);
  row("reliable: outbox -> node -> node -> alert, acked", reliable);
  ctx.out << t.Render();
  return kExitOk;
}

// ---- alerts --follow -------------------------------------------------------

int CmdAlertsFollow(Context& ctx, const AlertsFollowArgs& args) {
  const StopSignals stop_signals;
  const sigset_t& signals = stop_signals.set();
  auto ex = ExchangeStore::Open(ctx.NodeDir());
  const auto t0 = Clock::now();
  int64_t last = 0;
  int shown = 0;
  auto print = [&](const AlertRecord& a) {
    if (ctx.json) {
      ctx.out << AlertJson(a).dump() << "\n";
    } else {
      ctx.out << "alert #" << a.id.value << " " << a.created_at << " " << a.origin
              << (a.peer ? " (" + *a.peer + ")" : "") << ": " << a.summary << "\n";
    }
    ctx.out << std::flush;
  };
  // What is already there first, then what arrives.
  for (const AlertRecord& a : ex->AlertsAfter(0)) {
    print(a);
    last = a.id.value;
    ++shown;
  }
  while (true) {
    for (const AlertRecord& a : ex->AlertsAfter(last)) {
      print(a);
      last = a.id.value;
      ++shown;
    }
    if (args.count && shown >= *args.count) break;
    if (args.timeout_s && MsSince(t0) >= *args.timeout_s * 1000) break;
    if (StopSignal(signals, 100)) break;
  }
  return kExitOk;
}

}  // namespace bien::cli

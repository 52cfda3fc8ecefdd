// `bien bench federation`: end-to-end federated search across three nodes
// (docs/PERFORMANCE.md, "Federated search at 10^5 exhibits per node").
//
// Set-up (not timed as search):
//  1. three nodes (RS, BA, MK) with CURVE keys, as `bien demo` makes them
//     (tools/local_federation.h);
//  2. per query a firearm with one shot on each node (545 px synthetic X3P
//     scans at 6.25 um, or with --data a Fadul slide's first three scans),
//     ingested normally (originals, descriptors, cached CMC features), so
//     each query from RS has a mate on BA and on MK;
//  3. the rest of each node's partition cartridge_case|9mm Luger is bench
//     distractors (Store::AddBenchDistractors, one transaction per node):
//     synthetic coarse descriptors (SynthDescriptors, or a `bien synth
//     --features` file), and as their cached CMC features hard links to a
//     pool of encoded features of synthetic scans of other firearms, so the
//     fine stage compares every candidate for real (the CMC cost of a
//     candidate does not depend on which pool file it reads);
//  4. each node's coarse index built and saved (timed, reported apart);
//  5. `bien serve` on 127.0.0.1 for each node, peers admitted both ways, and
//     one untimed federated search so each node holds its index in memory.
// Timed: `bien search QUERY --federated --json` as a process from RS, first
// with --coarse-only, then with each peer's fine re-rank of its top 100,
// `queries` times each. Checked: every peer answered, the mates came back,
// every compared candidate has a fine score.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>
#include <thread>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/synth.h"
#include "matching/cmc.h"
#include "matching/descriptor.h"
#include "storage/exchange_store.h"
#include "tools/bench_support.h"
#include "tools/cli.h"
#include "tools/compare.h"
#include "tools/federation.h"
#include "tools/fine_features.h"
#include "tools/local_federation.h"
#include "tools/output.h"
#include "tools/parallel.h"
#include "tools/search.h"
#include "tools/synth_features.h"

namespace bien::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kCalibre = "9mm Luger";
constexpr int kCoarseK = 100;      // each node's fine top-100 (the search's default --k)
constexpr int kPoolFiles = 64;     // distinct encoded feature files the distractors link to
constexpr double kTimeoutS = 300;  // a federated search waits this long for its peers

double Seconds(Clock::time_point t0) { return MsSince(t0) / 1000; }

// Milliseconds since 1970 of "2026-11-23T10:15:30.123Z" (the store's times).
std::optional<int64_t> IsoMs(const std::string& text) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

// The query's exhibit on node `node` (0 = RS, the querying node).
std::string QueryCase(const LocalNode& node, int firearm) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "-BENCH-F%03d", firearm + 1);
  return node.country + buf;
}

// One timed `bien search --federated` and what it found.
struct Outcome {
  int query = 0;           // firearm index
  double wall_ms = 0;      // the process, start to exit
  double reported_ms = 0;  // its own "ms" (request built to last answer or timeout)
  double peers_ms = 0;     // search recorded -> last peer answer recorded (store times)
  bool all_answered = false;
  struct Peer {
    std::string name, status;
    double coarse_ms = 0, fine_ms = 0;
    int64_t partition_size = 0;
    int returned = 0, fine_scored = 0;
    std::optional<int> mate_rank;         // in the merged list
    std::optional<int> mate_coarse_rank;  // in the peer's coarse list
    std::optional<double> mate_score;
  };
  std::vector<Peer> peers;
  int local_candidates = 0;  // the local search's list (coarse-only: coarse candidates)
  int local_compared = 0, local_skipped = 0;
  std::vector<std::string> problems;
};

}  // namespace

int CmdBenchFederation(Context& ctx, const BenchFederationArgs& args) {
  if (args.queries < 1 || args.queries > 999) throw Error("--queries: 1 to 999");
  const int jobs = BenchJobs(args.jobs);
  if (args.exhibits < args.queries + 1) {
    throw Error("--exhibits " + std::to_string(args.exhibits) + ": need more than --queries (" +
                std::to_string(args.queries) + ") per node, the rest being distractors");
  }
  CheckBenchPaths(args.data, args.features);
  const fs::path exe = BienExecutable("bien bench federation");
  const std::vector<double> load_before = LoadAverage();
  const auto t_all = Clock::now();
  auto log = [&](const std::string& line) {
    if (!ctx.json) ctx.out << line << std::flush;
  };
  // Runs a bien command in this process, quietly; throws with its errors.
  const BienCommand quiet = [&](const std::string& title, const std::vector<std::string>& a) {
    std::vector<const char*> argv{"bien"};
    for (const auto& s : a) argv.push_back(s.c_str());
    std::ostringstream out, err;
    if (Run(static_cast<int>(argv.size()), argv.data(), out, err) != kExitOk) {
      throw Error(title + ": " + err.str());
    }
  };

  BenchWorkDir work(args.work, "bien-bench-federation");
  std::vector<LocalNode> nodes = BalkanNodes(work.path());
  const int64_t distractors = args.exhibits - args.queries;  // per node
  const std::string key = DescriptorKey();
  const int dim = DescriptorDim();
  const Partition partition = PartitionOf(ExhibitKind::kCartridgeCase, {kCalibre, {}, {}, {}, {}});
  json node_json = json::array();
  for (const LocalNode& n : nodes)
    node_json.push_back({{"name", n.name}, {"peer_name", n.peer_name}});

  // 1. The nodes and their keys.
  log("bench federation: 3 nodes x " + std::to_string(args.exhibits) + " exhibits (" +
      std::to_string(args.queries) + " real synthetic scans + " + std::to_string(distractors) +
      " distractors each) in " + work.path().string() + "\n");
  CreateLocalNodes(nodes, quiet);

  // 2. The query firearms: shot k on node k, ingested as any scan is.
  auto t = Clock::now();
  std::string query_source;
  {
    QueryShots made = BenchQueryShots(args.data, static_cast<int>(nodes.size()), args.queries,
                                      work.path() / "samples");  // per firearm, one scan per node
    const auto& shots = made.shots;
    query_source = made.source;
    for (size_t k = 0; k < nodes.size(); ++k) {
      std::vector<IngestItem> items;
      for (size_t f = 0; f < shots.size(); ++f) {
        IngestItem item;
        item.path = shots[f][k];
        item.label = item.path.string();
        item.exhibit.case_ref = QueryCase(nodes[k], static_cast<int>(f));
        item.exhibit.exhibit_ref = "E1";
        item.exhibit.kind = ExhibitKind::kCartridgeCase;
        item.exhibit.role = ExhibitRole::kEvidence;
        item.exhibit.cc.calibre = kCalibre;
        items.push_back(std::move(item));
      }
      auto store = Store::Open(nodes[k].dir);
      const IngestSummary s =
          IngestItems(*store, ctx.actor, std::move(items), jobs, false, ctx.err);
      for (const IngestOutcome& o : s.items) {
        if (o.status != "ingested") {
          throw Error(nodes[k].name + ": " + o.label + " was " + o.status + ": " + o.reason);
        }
        if (!o.warnings.empty()) throw Error(o.label + ": " + o.warnings.front());
      }
    }
  }
  const double real_s = Seconds(t);
  log("  real exhibits: " + std::to_string(args.queries) + " per node (" + query_source +
      ") ingested in " + Fixed(real_s, 1) + " s\n");

  // 3a. The distractors' coarse vectors: one slice per node.
  t = Clock::now();
  const int64_t total = distractors * static_cast<int64_t>(nodes.size());
  BenchVectors made = BenchDistractorVectors(
      args.features, total, 2, 1, jobs, [&](const std::string& line) { log("  " + line); },
      ctx.progress ? ProgressLine(ctx.err, "synthetic descriptors") : FeatureProgress());
  std::vector<float> vectors = std::move(made.vectors);
  const std::string vector_source = made.source;
  const double vectors_s = Seconds(t);

  // 3b. The pool of encoded CMC features the distractors' cache entries link to.
  t = Clock::now();
  const std::vector<fs::path> pool_files = MakeFeaturePool(
      work.path() / "feature-pool", FineFeatures(nodes[0].dir).options(), kPoolFiles, jobs);
  const double pool_s = Seconds(t);

  // 3c. Each node's distractors (one transaction), their feature links, and
  // its coarse index.
  for (size_t k = 0; k < nodes.size(); ++k) {
    LocalNode& n = nodes[k];
    auto store = Store::Open(n.dir);
    t = Clock::now();
    const std::span<const float> slice(vectors.data() + k * static_cast<size_t>(distractors) * dim,
                                       static_cast<size_t>(distractors) * dim);
    const std::vector<AddResult> added =
        store->AddBenchDistractors(ctx.actor, kCalibre, key, dim, slice);
    const double add_s = Seconds(t);
    t = Clock::now();
    LinkFeaturePool(n.dir, added, pool_files, 0);
    const double link_s = Seconds(t);
    t = Clock::now();
    const CoarseIndex ci = OpenCoarseIndex(*store, partition);
    const double index_s = Seconds(t);
    node_json[k]["exhibits"] = ci.scans;
    node_json[k]["real"] = args.queries;
    node_json[k]["distractors"] = static_cast<int64_t>(added.size());
    node_json[k]["distractors_s"] = add_s;
    node_json[k]["feature_links_s"] = link_s;
    node_json[k]["index"] = {{"kind", std::string(IndexKindName(ci.index->kind()))},
                             {"size", ci.index->size()},
                             {"build_s", index_s},
                             {"note", ci.note}};
    log("  " + n.name + ": " + std::to_string(added.size()) + " distractors in " + Fixed(add_s, 1) +
        " s (one transaction), feature links " + Fixed(link_s, 1) + " s, index " +
        std::string(IndexKindName(ci.index->kind())) + " of " + std::to_string(ci.index->size()) +
        " built in " + Fixed(index_s, 1) + " s\n");
  }
  std::vector<float>().swap(vectors);  // before starting processes

  // 4. The nodes as processes, federated.
  ServeProcesses serving(exe);
  std::vector<std::string> serve_extra;
  if (args.jobs > 0) serve_extra = {"--jobs", std::to_string(args.jobs)};
  for (LocalNode& n : nodes) serving.Start(n, work.path() / (n.folder + ".log"), 500, serve_extra);
  AdmitEachOther(nodes, kCalibre, quiet);
  WaitUntilPeersHeard(nodes, 30000);
  log("  nodes serving on 127.0.0.1, admitted each other\n");

  const LocalNode& asker = nodes[0];
  int search_no = 0;
  // One `bien search --federated` process from RS.
  auto search = [&](int firearm, bool coarse_only) {
    const std::string label = QueryCase(asker, firearm) + "/E1";
    const fs::path out = work.path() / ("search-" + std::to_string(++search_no) + ".json");
    const fs::path err = work.path() / ("search-" + std::to_string(search_no) + ".err");
    std::vector<std::string> a{"search",
                               "--node",
                               asker.dir.string(),
                               label,
                               "--json",
                               "--federated",
                               "--timeout",
                               Fixed(kTimeoutS, 0),
                               "--no-leads",
                               "--top",
                               "1000",
                               "--remote-top",
                               std::to_string(kCoarseK),
                               "--k",
                               std::to_string(kCoarseK)};
    if (coarse_only) a.push_back("--coarse-only");
    if (args.jobs > 0) a.insert(a.end(), {"--jobs", std::to_string(args.jobs)});
    Outcome o;
    o.query = firearm;
    const auto t0 = Clock::now();
    const ChildProcess child = StartChild("search", exe, a, out, err);
    bool timed_out = false;
    const int code = WaitChild(child, static_cast<int>(kTimeoutS * 1000) + 60000, &timed_out);
    o.wall_ms = MsSince(t0);
    if (code != 0) {
      throw Error("bien search " + label + " --federated" + (timed_out ? " timed out" : "") +
                  " exited with " + std::to_string(code) + ": " + ReadText(err));
    }
    const json j = json::parse(ReadText(out), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      throw Error("bien search " + label + ": output is not JSON (" + out.string() + ")");
    }
    o.reported_ms = j.value("ms", 0.0);
    o.local_candidates = j.value("local_candidates", 0);
    o.local_compared = j.value("local_compared", 0);
    const json skipped = j.value("local_skipped", json::array());
    o.local_skipped = static_cast<int>(skipped.size());
    if (j.contains("local_error") && j["local_error"].is_string()) {
      o.problems.push_back("local search: " + j["local_error"].get<std::string>());
    }
    const json candidates = j.value("candidates", json::array());
    // Answer times from the asking node's store.
    auto ex = ExchangeStore::Open(asker.dir);
    const std::string request = j.value("request_id", "");
    const auto rec = ex->FederatedSearch(request);
    std::map<std::string, FederatedAnswer> answers;
    for (const FederatedAnswer& fa : ex->Answers(request)) answers[fa.peer_name] = fa;
    const auto started = rec ? IsoMs(rec->created_at) : std::nullopt;
    o.all_answered = true;
    for (size_t k = 1; k < nodes.size(); ++k) {
      Outcome::Peer p;
      p.name = nodes[k].peer_name;
      const auto it = answers.find(p.name);
      if (it == answers.end()) {
        p.status = "no answer";
        o.all_answered = false;
        o.problems.push_back(p.name + " did not answer");
      } else {
        const FederatedAnswer& fa = it->second;
        p.status = fa.status;
        p.coarse_ms = fa.coarse_ms;
        p.fine_ms = fa.fine_ms;
        p.partition_size = fa.partition_size;
        if (fa.status != "ok") {
          o.all_answered = false;
          o.problems.push_back(p.name + " answered " + fa.status + ": " + fa.detail);
        }
        const auto at = IsoMs(fa.received_at);
        if (started && at) o.peers_ms = std::max(o.peers_ms, static_cast<double>(*at - *started));
      }
      const std::string mate = QueryCase(nodes[k], firearm) + "/E1";
      for (const json& c : candidates) {
        if (c.value("local", true) || c.value("node", "") != p.name) continue;
        ++p.returned;
        const bool scored = c.contains("score") && c["score"].is_number();
        if (scored) ++p.fine_scored;
        if (c.value("exhibit", "") == mate && !p.mate_rank) {
          p.mate_rank = c.value("rank", 0);
          p.mate_coarse_rank = c.value("coarse_rank", 0);
          if (scored) p.mate_score = c["score"].get<double>();
        }
      }
      const int64_t expected = std::min<int64_t>(kCoarseK, p.partition_size);
      if (p.status == "ok" && p.returned != expected) {
        o.problems.push_back(p.name + " returned " + std::to_string(p.returned) +
                             " candidates, expected " + std::to_string(expected));
      }
      if (!coarse_only && p.fine_scored != p.returned) {
        o.problems.push_back(p.name + ": " + std::to_string(p.returned - p.fine_scored) + " of " +
                             std::to_string(p.returned) + " candidates have no fine score");
      }
      o.peers.push_back(std::move(p));
    }
    if (o.local_skipped > 0) {
      o.problems.push_back("local search: " + std::to_string(o.local_skipped) +
                           " candidates not compared: " + skipped[0].dump());
    }
    // Coarse-only, the local search is coarse-only too: its coarse list is
    // counted; else its fine-compared candidates.
    const int local = coarse_only ? o.local_candidates : o.local_compared;
    if (local < std::min<int64_t>(kCoarseK, args.exhibits - 1)) {
      o.problems.push_back("local search " + std::string(coarse_only ? "listed " : "compared ") +
                           std::to_string(local) + " candidates, expected at least " +
                           std::to_string(std::min<int64_t>(kCoarseK, args.exhibits - 1)));
    }
    if (coarse_only && o.local_compared != 0) {
      o.problems.push_back("coarse-only search compared " + std::to_string(o.local_compared) +
                           " candidates locally");
    }
    return o;
  };

  // 5. Warm-up (untimed): each node loads its index once, as a running node does.
  log("  warm-up search (each node loads its saved index into memory)...\n");
  const Outcome warm = search(0, true);

  // 6. The timed searches.
  struct Mode {
    std::string name;
    bool coarse_only = false;
    std::vector<Outcome> outcomes;
  };
  std::vector<Mode> modes{{"coarse_only", true, {}}, {"fine", false, {}}};
  for (Mode& m : modes) {
    log("  " + std::to_string(args.queries) + " federated searches, " +
        (m.coarse_only ? "coarse-only answers" : "with each peer's fine top-100 re-rank") +
        "...\n");
    for (int q = 0; q < args.queries; ++q) m.outcomes.push_back(search(q, m.coarse_only));
  }

  // 7. Stop the nodes (a clean shutdown is part of the result).
  std::vector<std::string> problems;
  for (const ServeProcesses::Stopped& s : serving.StopAll()) {
    if (s.code != 0) {
      problems.push_back(s.child.name + " (bien serve) exited with " + std::to_string(s.code));
    }
  }
  const std::vector<double> load_after = LoadAverage();

  // Summaries.
  json runs = json::object();
  TextTable table({"ANSWERS", "SEARCHES", "ALL PEERS ANSWERED", "END TO END (PROCESS) MEDIAN",
                   "MAX", "PEERS ANSWERED MEDIAN", "MAX", "MATES FOUND", "FINE-SCORED"});
  TextTable peers_table({"ANSWERS", "PEER", "PARTITION", "COARSE MS MEDIAN", "MAX",
                         "FINE MS MEDIAN", "MAX", "MATE RANK (MERGED / PEER'S COARSE)"});
  for (const Mode& m : modes) {
    std::vector<double> wall, reported, peers_ms;
    int all_answered = 0, mates = 0, mates_possible = 0, scored = 0, returned = 0, local = 0;
    int local_listed = 0, local_scored = 0;
    json per_query = json::array();
    std::map<std::string, std::vector<const Outcome::Peer*>> by_peer;
    for (const Outcome& o : m.outcomes) {
      wall.push_back(o.wall_ms);
      reported.push_back(o.reported_ms);
      peers_ms.push_back(o.peers_ms);
      all_answered += o.all_answered;
      local += m.coarse_only ? o.local_candidates : o.local_compared;
      local_listed += o.local_candidates;
      local_scored += o.local_compared;
      for (const std::string& p : o.problems) {
        problems.push_back(m.name + ", query F" + std::to_string(o.query + 1) + ": " + p);
      }
      json pj = json::array();
      for (const Outcome::Peer& p : o.peers) {
        by_peer[p.name].push_back(&p);
        ++mates_possible;
        mates += p.mate_rank.has_value();
        scored += p.fine_scored;
        returned += p.returned;
        pj.push_back({{"peer", p.name},
                      {"status", p.status},
                      {"partition_size", p.partition_size},
                      {"coarse_ms", p.coarse_ms},
                      {"fine_ms", p.fine_ms},
                      {"returned", p.returned},
                      {"fine_scored", p.fine_scored},
                      {"mate_rank", p.mate_rank ? json(*p.mate_rank) : json()},
                      {"mate_coarse_rank", p.mate_coarse_rank ? json(*p.mate_coarse_rank) : json()},
                      {"mate_score", p.mate_score ? json(*p.mate_score) : json()}});
      }
      per_query.push_back({{"query", QueryCase(asker, o.query) + "/E1"},
                           {"wall_ms", o.wall_ms},
                           {"reported_ms", o.reported_ms},
                           {"peers_answered_ms", o.peers_ms},
                           {"all_answered", o.all_answered},
                           {"local_candidates", o.local_candidates},
                           {"local_compared", o.local_compared},
                           {"local_skipped", o.local_skipped},
                           {"peers", pj}});
    }
    json peer_stats = json::array();
    for (const auto& [name, list] : by_peer) {
      std::vector<double> c, f;
      std::string ranks;
      int64_t size = 0;
      for (const Outcome::Peer* p : list) {
        c.push_back(p->coarse_ms);
        f.push_back(p->fine_ms);
        size = p->partition_size;
        ranks += (ranks.empty() ? "" : " ") +
                 (p->mate_rank
                      ? std::to_string(*p->mate_rank) + "/" + std::to_string(*p->mate_coarse_rank)
                      : std::string("-"));
      }
      peer_stats.push_back({{"peer", name},
                            {"partition_size", size},
                            {"coarse_ms", Stats(c)},
                            {"fine_ms", Stats(f)}});
      peers_table.Add({m.name, name, std::to_string(size), Fixed(Median(c), 1), Fixed(Max(c), 1),
                       m.coarse_only ? "-" : Fixed(Median(f), 0),
                       m.coarse_only ? "-" : Fixed(Max(f), 0), ranks});
    }
    const std::string fine_cell =
        m.coarse_only ? "none (coarse only; local " + std::to_string(local) + " coarse candidates)"
                      : "local " + std::to_string(local) + ", peers " + std::to_string(scored) +
                            "/" + std::to_string(returned);
    table.Add({m.name, std::to_string(m.outcomes.size()),
               std::to_string(all_answered) + "/" + std::to_string(m.outcomes.size()),
               Fixed(Median(wall) / 1000, 2) + " s", Fixed(Max(wall) / 1000, 2) + " s",
               Fixed(Median(peers_ms) / 1000, 2) + " s", Fixed(Max(peers_ms) / 1000, 2) + " s",
               std::to_string(mates) + "/" + std::to_string(mates_possible), fine_cell});
    runs[m.name] = {{"searches", m.outcomes.size()},
                    {"all_peers_answered", all_answered},
                    {"wall_ms", Stats(wall)},
                    {"reported_ms", Stats(reported)},
                    {"peers_answered_ms", Stats(peers_ms)},
                    {"mates_found", mates},
                    {"mates_possible", mates_possible},
                    {"local_candidates", local_listed},
                    {"local_fine_scored", local_scored},
                    {"peer_candidates", returned},
                    {"peer_candidates_fine_scored", scored},
                    {"peers", peer_stats},
                    {"per_query", per_query}};
  }
  const double total_s = Seconds(t_all);
  const bool ok = problems.empty();
  if (ctx.json) {
    ctx.out << json{{"exhibits_per_node", args.exhibits},
                    {"queries", args.queries},
                    {"partition", partition.Key()},
                    {"coarse_k", kCoarseK},
                    {"jobs", jobs},
                    {"cores", std::thread::hardware_concurrency()},
                    {"nodes", node_json},
                    {"setup",
                     {{"queries_from", query_source},
                      {"real_exhibits_s", real_s},
                      {"vectors", vector_source},
                      {"vectors_s", vectors_s},
                      {"feature_pool_files", kPoolFiles},
                      {"feature_pool_s", pool_s}}},
                    {"warm_up_ms", warm.wall_ms},
                    {"runs", runs},
                    {"load_average_before", load_before},
                    {"load_average_after", load_after},
                    {"total_s", total_s},
                    {"ok", ok},
                    {"problems", problems}}
                   .dump(2)
            << "\n";
  } else {
    ctx.out << "\nfederated search from " << asker.peer_name << " to 2 peers, " << args.exhibits
            << " exhibits per node (partition " << partition.Key() << "), `bien search "
            << "--federated` as a process; warm-up " << Fixed(warm.wall_ms / 1000, 2) << " s\n"
            << table.Render() << "\n"
            << peers_table.Render()
            << "END TO END: the `bien search` process, including the local search (coarse-only "
               "too with --coarse-only, else with its own CMC re-rank).\nPEERS ANSWERED: from the "
               "search's record to the last peer answer "
               "recorded (store times).\n"
            << "load average before " << LoadText(load_before) << ", after " << LoadText(load_after)
            << "; " << std::thread::hardware_concurrency() << " cores; total " << Fixed(total_s, 0)
            << " s\n";
    for (const std::string& p : problems) ctx.out << "problem: " << p << "\n";
  }
  if (!ok) {
    ctx.err << "bien bench federation: " << problems.size() << " problem"
            << (problems.size() == 1 ? "" : "s") << " (first: " << problems.front() << ")\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace bien::cli

// `bien bench node`: one node holding N cartridge cases with everything a
// real search reads, and `bien search` timed end to end as the process an
// expert runs (docs/PERFORMANCE.md, "A node of 10^6 exhibits end to end").
//
// Set-up (timed, reported apart from the searches):
//  1. a node (`bien init`) in the work folder;
//  2. per query a firearm with two shots (545 px synthetic X3P scans at 6.25
//     um, or with --data a Fadul slide's first two scans), ingested as
//     `bien ingest` does (original, descriptor, ring spectra, cached CMC
//     features): BENCH-Q001/E1 is the query, BENCH-M001/E1 its mate;
//  3. the rest of the partition cartridge_case|9mm Luger is bench
//     distractors (Store::AddBenchDistractors, one transaction per chunk):
//     synthetic coarse descriptors (a `bien synth --features` file, or
//     generated), their ring spectra made from the same synthetic shots the
//     descriptors were made from (MakeSynthBreechFace), and as cached CMC
//     features hard links to a pool of encoded features of synthetic scans of
//     other firearms (the CMC cost of a candidate does not depend on which
//     file it reads, so the fine stage compares every candidate for real);
//  4. the partition's coarse index and compressed ring codes built and saved
//     (OpenCoarseIndex, OpenRingCodes), and one untimed search.
// Timed: `bien search QUERY --json --no-leads` as a process, once per query,
// with the search's defaults (the ring pool, the ring screen, the fine top
// 100). Checked: every search compared min(100, partition - 1) candidates and
// skipped none.
#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "imaging/synth.h"
#include "matching/descriptor.h"
#include "matching/index.h"
#include "matching/ring_codes.h"
#include "tools/bench_support.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/fine_features.h"
#include "tools/local_federation.h"
#include "tools/local_search.h"
#include "tools/output.h"
#include "tools/parallel.h"
#include "tools/search.h"
#include "tools/synth_features.h"

namespace bien::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kCalibre = "9mm Luger";
constexpr int kPoolFiles = 64;        // distinct encoded feature files the distractors link to
constexpr int kSearchTimeoutS = 900;  // one search process
constexpr int64_t kChunk = 20000;     // distractors per transaction (spectra made per chunk)

double Seconds(Clock::time_point t0) { return MsSince(t0) / 1000; }

std::string QueryRef(int firearm) {
  return "BENCH-Q" + std::to_string(1000 + firearm + 1).substr(1);
}
std::string MateRef(int firearm) {
  return "BENCH-M" + std::to_string(1000 + firearm + 1).substr(1);
}

// One timed search and what it found.
struct Outcome {
  int query = 0;
  double wall_ms = 0;                   // the process, start to exit
  double coarse_ms = 0, fine_ms = 0;    // as the search reported them
  double ring_ms = 0, screen_ms = 0;    // parts of coarse_ms
  int ring_pool = 0, screen_added = 0;  // the ring stage's candidates, of them the screen's
  std::string index_note, screen_note;
  int64_t partition_scans = 0;
  int compared = 0, skipped = 0;
  std::optional<int> mate_rank, mate_coarse_rank, mate_screen_rank;
  std::optional<double> mate_score;
  std::vector<std::string> problems;
};

}  // namespace

int CmdBenchNode(Context& ctx, const BenchNodeArgs& args) {
  if (args.queries < 1 || args.queries > 999) throw Error("--queries: 1 to 999");
  const int jobs = BenchJobs(args.jobs);
  if (args.ring_pool < -1 || args.ring_screen < -1) {
    throw Error("--ring-pool and --ring-screen must be 0 or more");
  }
  if (args.exhibits < 2 * static_cast<int64_t>(args.queries) + 1) {
    throw Error("--exhibits " + std::to_string(args.exhibits) +
                ": need more than twice --queries (" + std::to_string(args.queries) +
                "), the rest being distractors");
  }
  CheckBenchPaths(args.data, args.features);
  const fs::path exe = BienExecutable("bien bench node");
  const std::vector<double> load_before = LoadAverage();
  const auto t_all = Clock::now();
  auto log = [&](const std::string& line) {
    if (!ctx.json) ctx.out << line << std::flush;
  };
  BenchWorkDir work(args.work, "bien-bench-node");
  const fs::path node = work.path() / "node";
  const int64_t distractors = args.exhibits - 2 * static_cast<int64_t>(args.queries);
  const Partition partition = PartitionOf(ExhibitKind::kCartridgeCase, {kCalibre, {}, {}, {}, {}});
  json setup = json::object();

  // 1. The node.
  {
    const std::vector<std::string> a{"init",  "--node",    node.string(), "--name",
                                     "BENCH", "--country", "RS"};
    std::vector<const char*> argv{"bien"};
    for (const auto& s : a) argv.push_back(s.c_str());
    std::ostringstream out, err;
    if (Run(static_cast<int>(argv.size()), argv.data(), out, err) != kExitOk) {
      throw Error("bien init " + node.string() + ": " + err.str());
    }
  }
  log("bench node: " + std::to_string(args.exhibits) + " exhibits (" +
      std::to_string(args.queries) + " queries and their mates + " + std::to_string(distractors) +
      " distractors) in " + node.string() + "\n");
  auto store = Store::Open(node);

  // 2. The query firearms: shot 1 the query, shot 2 its mate.
  auto t = Clock::now();
  std::string query_source;
  {
    QueryShots made = BenchQueryShots(args.data, 2, args.queries, work.path() / "samples");
    const auto& shots = made.shots;
    query_source = made.source;
    std::vector<IngestItem> items;
    for (size_t f = 0; f < shots.size(); ++f) {
      for (int s = 0; s < 2; ++s) {
        IngestItem item;
        item.path = shots[f][static_cast<size_t>(s)];
        item.label = item.path.string();
        item.exhibit.case_ref =
            s == 0 ? QueryRef(static_cast<int>(f)) : MateRef(static_cast<int>(f));
        item.exhibit.exhibit_ref = "E1";
        item.exhibit.kind = ExhibitKind::kCartridgeCase;
        item.exhibit.role = ExhibitRole::kEvidence;
        item.exhibit.cc.calibre = kCalibre;
        items.push_back(std::move(item));
      }
    }
    const IngestSummary s = IngestItems(*store, ctx.actor, std::move(items), jobs, false, ctx.err);
    for (const IngestOutcome& o : s.items) {
      if (o.status != "ingested") throw Error(o.label + " was " + o.status + ": " + o.reason);
      if (!o.warnings.empty()) throw Error(o.label + ": " + o.warnings.front());
    }
  }
  setup["real"] = {{"exhibits", 2 * args.queries}, {"source", query_source}, {"s", Seconds(t)}};
  log("  queries and mates: " + std::to_string(2 * args.queries) + " exhibits (" + query_source +
      ") ingested in " + Fixed(Seconds(t), 1) + " s\n");

  // 3a. The distractors' coarse descriptors and the synthetic model they
  // were made with.
  t = Clock::now();
  BenchVectors made = BenchDistractorVectors(
      args.features, distractors, 2, 1, jobs, [&](const std::string& line) { log("  " + line); },
      ctx.progress ? ProgressLine(ctx.err, "synthetic descriptors") : FeatureProgress());
  std::vector<float> vectors = std::move(made.vectors);
  const std::string vector_source = made.source;
  SynthDescriptorOptions model;
  model.seed = made.seed;
  const int shots_per_firearm = made.shots;
  const double vectors_s = Seconds(t);

  // 3b. The pool of encoded CMC features the distractors' cache entries link to.
  t = Clock::now();
  const std::vector<fs::path> pool =
      MakeFeaturePool(work.path() / "feature-pool", FineFeatures(node).options(), kPoolFiles, jobs);
  const double pool_s = Seconds(t);

  // 3c. Per chunk: the distractors' ring spectra (made from their synthetic
  // shots, as ingest makes a scan's), one transaction, the feature links.
  log("  " + std::to_string(distractors) + " distractors with ring spectra, " +
      std::to_string(kChunk) +
      " per transaction (the spectra about 500 per second on 2 cores)...\n");
  const int dim = DescriptorDim();
  const DescriptorOptions shape;  // the working pixel the descriptors were made at
  double spectra_s = 0, add_s = 0, link_s = 0;
  int64_t without_spectra = 0;
  for (int64_t first = 0; first < distractors; first += kChunk) {
    const int64_t n = std::min(kChunk, distractors - first);
    t = Clock::now();
    std::vector<std::vector<float>> spectra(static_cast<size_t>(n));
    {
      const CvSingleThread cv_single;  // parallel over distractors instead
      ParallelFor(spectra.size(), jobs, [&](size_t i) {
        const int64_t id = first + static_cast<int64_t>(i);
        try {
          spectra[i] = BreechFaceRingSpectra(
              MakeSynthBreechFace(model, shape, static_cast<int>(id / shots_per_firearm),
                                  static_cast<int>(id % shots_per_firearm)),
              "distractor");
        } catch (const Error&) {
          spectra[i].clear();  // too sparse for ring spectra: none, as ingest stores none
        }
      });
    }
    for (const auto& s : spectra) without_spectra += s.empty();
    spectra_s += Seconds(t);
    t = Clock::now();
    const std::vector<BenchExtraDescriptors> extra{{RingSpectraKey(), spectra}};
    const std::span<const float> slice(vectors.data() + static_cast<size_t>(first) * dim,
                                       static_cast<size_t>(n) * dim);
    const std::vector<AddResult> added =
        store->AddBenchDistractors(ctx.actor, kCalibre, DescriptorKey(), dim, slice, extra);
    add_s += Seconds(t);
    t = Clock::now();
    LinkFeaturePool(node, added, pool, static_cast<size_t>(first));
    link_s += Seconds(t);
    if (ctx.progress) {
      ctx.err << "\r  distractors: " << first + n << " / " << distractors << " (spectra "
              << Fixed(spectra_s, 0) << " s, store " << Fixed(add_s, 0) << " s)" << std::flush;
    }
  }
  if (ctx.progress) ctx.err << "\n";
  std::vector<float>().swap(vectors);
  setup["distractors"] = {{"count", distractors},       {"descriptors", vector_source},
                          {"descriptors_s", vectors_s}, {"feature_pool_s", pool_s},
                          {"spectra_s", spectra_s},     {"without_spectra", without_spectra},
                          {"store_s", add_s},           {"feature_links_s", link_s}};
  log("  distractors: descriptors " + Fixed(vectors_s, 1) + " s (" + vector_source +
      "), ring spectra " + Fixed(spectra_s, 1) + " s (" + std::to_string(without_spectra) +
      " too sparse for them), store " + Fixed(add_s, 1) + " s, feature links " + Fixed(link_s, 1) +
      " s\n");

  // 4. The coarse index and the ring codes, built and saved as the first
  // search would; then one untimed search.
  t = Clock::now();
  const CoarseIndex ci = OpenCoarseIndex(*store, partition);
  const double index_s = Seconds(t);
  t = Clock::now();
  std::string codes_note;
  const auto codes = OpenRingCodes(*store, partition, jobs, &codes_note);
  const double codes_s = Seconds(t);
  std::error_code ec;
  const auto db_bytes = fs::file_size(node / "bien.db", ec);
  setup["index"] = {{"kind", std::string(IndexKindName(ci.index->kind()))},
                    {"size", ci.index->size()},
                    {"build_s", index_s},
                    {"note", ci.note}};
  setup["ring_codes"] = {{"key", RingCodec::KeyFor()},
                         {"size", codes ? codes->size() : 0},
                         {"build_s", codes_s},
                         {"note", codes_note}};
  setup["store_bytes"] = ec ? 0 : db_bytes;
  log("  index " + std::string(IndexKindName(ci.index->kind())) + " of " +
      std::to_string(ci.index->size()) + " in " + Fixed(index_s, 1) + " s; ring codes of " +
      std::to_string(codes ? codes->size() : 0) + " in " + Fixed(codes_s, 1) + " s (" + codes_note +
      "); bien.db " + HumanBytes(static_cast<double>(db_bytes)) + "\n");
  store.reset();  // the searches are other processes

  int search_no = 0;
  auto search = [&](int firearm) {
    const std::string label = QueryRef(firearm) + "/E1";
    const fs::path out = work.path() / ("search-" + std::to_string(++search_no) + ".json");
    const fs::path err = work.path() / ("search-" + std::to_string(search_no) + ".err");
    std::vector<std::string> a{"search", "--node", node.string(), label, "--json", "--no-leads"};
    if (args.jobs > 0) a.insert(a.end(), {"--jobs", std::to_string(args.jobs)});
    if (args.ring_pool >= 0) a.insert(a.end(), {"--ring-pool", std::to_string(args.ring_pool)});
    if (args.ring_screen >= 0) {
      a.insert(a.end(), {"--ring-screen", std::to_string(args.ring_screen)});
    }
    Outcome o;
    o.query = firearm;
    const auto t0 = Clock::now();
    const ChildProcess child = StartChild("search", exe, a, out, err);
    bool timed_out = false;
    const int code = WaitChild(child, kSearchTimeoutS * 1000, &timed_out);
    o.wall_ms = MsSince(t0);
    if (code != 0) {
      throw Error("bien search " + label + (timed_out ? " timed out" : "") + " exited with " +
                  std::to_string(code) + ": " + ReadText(err));
    }
    const json j = json::parse(ReadText(out), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      throw Error("bien search " + label + ": output is not JSON (" + out.string() + ")");
    }
    o.coarse_ms = j.value("coarse_ms", 0.0);
    o.fine_ms = j.value("fine_ms", 0.0);
    o.partition_scans = j.value("partition_scans", int64_t{0});
    o.compared = j.value("compared", 0);
    o.skipped = static_cast<int>(j.value("skipped", json::array()).size());
    if (j.contains("index")) o.index_note = j["index"].value("note", "");
    if (j.contains("ring_stage")) {
      const json& r = j["ring_stage"];
      o.ring_ms = r.value("ms", 0.0);
      o.ring_pool = r.value("pool", 0);
      if (r.contains("screen")) {
        o.screen_ms = r["screen"].value("ms", 0.0);
        o.screen_added = r["screen"].value("added", 0);
        o.screen_note = r["screen"].value("note", "");
      }
    }
    const std::string mate = MateRef(firearm) + "/E1";
    for (const json& c : j.value("candidates", json::array())) {
      if (c.value("exhibit", "") != mate) continue;
      o.mate_rank = c.value("rank", 0);
      o.mate_coarse_rank = c.value("coarse_rank", 0);
      if (const int r = c.value("screen_rank", 0); r > 0)
        o.mate_screen_rank = r;  // 0: not screened in
      if (c.contains("score") && c["score"].is_number()) o.mate_score = c["score"].get<double>();
      break;
    }
    const int64_t expected = std::min<int64_t>(100, o.partition_scans - 1);
    if (o.compared < expected) {
      o.problems.push_back(label + ": compared " + std::to_string(o.compared) + " candidates, " +
                           "expected " + std::to_string(expected));
    }
    if (o.skipped > 0) {
      o.problems.push_back(label + ": " + std::to_string(o.skipped) +
                           " candidates skipped: " + j["skipped"][0].dump());
    }
    return o;
  };

  // With --through-node the node serves and the searches go through it.
  std::optional<ChildProcess> serving;
  if (args.through_node) {
    const std::vector<std::string> k{"keys", "--node", node.string()};
    std::vector<const char*> argv{"bien"};
    for (const auto& s : k) argv.push_back(s.c_str());
    std::ostringstream out, err;
    if (Run(static_cast<int>(argv.size()), argv.data(), out, err) != kExitOk) {
      throw Error("bien keys " + node.string() + ": " + err.str());
    }
    serving = StartChild("serve", exe,
                         {"serve", "--node", node.string(), "--listen", "tcp://127.0.0.1:*"},
                         work.path() / "serve.log");
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (!fs::exists(LocalSearchSocket(node)) && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!fs::exists(LocalSearchSocket(node))) {
      StopChild(*serving);
      throw Error("bien serve " + node.string() +
                  " did not start within 60 s: " + ReadText(work.path() / "serve.log"));
    }
    log("  bien serve runs the searches (" + LocalSearchSocket(node).string() + ")\n");
  }
  log("  first search (untimed: reads the saved index and codes once)...\n");
  const Outcome warm = search(0);
  log("  " + std::to_string(args.queries) + " searches, one process each...\n");
  std::vector<Outcome> outcomes;
  for (int q = 0; q < args.queries; ++q) outcomes.push_back(search(q));
  const std::vector<double> load_after = LoadAverage();
  std::vector<std::string> problems = warm.problems;
  if (serving) {
    if (const int code = StopChild(*serving); code != 0) {
      problems.push_back("bien serve exited with " + std::to_string(code));
    }
  }

  std::vector<double> wall, coarse, fine, ring, screen, rest;
  int mates_top10 = 0, mates_first = 0, mates_listed = 0;
  json per_query = json::array();
  TextTable table({"QUERY", "END TO END", "COARSE", "(SCREEN", "RING STAGE)", "FINE", "OTHER",
                   "MATE RANK", "COARSE RANK", "SCREEN RANK", "SCORE"});
  auto rank_text = [](const std::optional<int>& r) { return r ? std::to_string(*r) : "-"; };
  for (const Outcome& o : outcomes) {
    wall.push_back(o.wall_ms);
    coarse.push_back(o.coarse_ms);
    fine.push_back(o.fine_ms);
    ring.push_back(o.ring_ms);
    screen.push_back(o.screen_ms);
    rest.push_back(o.wall_ms - o.coarse_ms - o.fine_ms);
    if (o.mate_rank) {
      ++mates_listed;
      mates_top10 += *o.mate_rank <= 10;
      mates_first += *o.mate_rank == 1;
    }
    problems.insert(problems.end(), o.problems.begin(), o.problems.end());
    table.Add({QueryRef(o.query) + "/E1", Fixed(o.wall_ms / 1000, 2) + " s",
               Fixed(o.coarse_ms, 0) + " ms", Fixed(o.screen_ms, 0) + " ms",
               Fixed(o.ring_ms, 0) + " ms", Fixed(o.fine_ms, 0) + " ms",
               Fixed(o.wall_ms - o.coarse_ms - o.fine_ms, 0) + " ms", rank_text(o.mate_rank),
               rank_text(o.mate_coarse_rank), rank_text(o.mate_screen_rank),
               o.mate_score ? Fixed(*o.mate_score, 2) : "-"});
    per_query.push_back(
        {{"query", QueryRef(o.query) + "/E1"},
         {"wall_ms", o.wall_ms},
         {"coarse_ms", o.coarse_ms},
         {"ring_ms", o.ring_ms},
         {"screen_ms", o.screen_ms},
         {"fine_ms", o.fine_ms},
         {"ring_pool", o.ring_pool},
         {"screen_added", o.screen_added},
         {"index_note", o.index_note},
         {"screen_note", o.screen_note},
         {"partition_scans", o.partition_scans},
         {"compared", o.compared},
         {"mate_rank", o.mate_rank ? json(*o.mate_rank) : json(nullptr)},
         {"mate_coarse_rank", o.mate_coarse_rank ? json(*o.mate_coarse_rank) : json(nullptr)},
         {"mate_screen_rank", o.mate_screen_rank ? json(*o.mate_screen_rank) : json(nullptr)},
         {"mate_score", o.mate_score ? json(*o.mate_score) : json(nullptr)}});
  }
  const double total_s = Seconds(t_all);
  if (ctx.json) {
    ctx.out << json{{"exhibits", args.exhibits},
                    {"queries", args.queries},
                    {"ring_pool", args.ring_pool},
                    {"ring_screen", args.ring_screen},
                    {"through_node", args.through_node},
                    {"jobs", jobs},
                    {"setup", setup},
                    {"first_search",
                     {{"wall_ms", warm.wall_ms},
                      {"coarse_ms", warm.coarse_ms},
                      {"fine_ms", warm.fine_ms},
                      {"index_note", warm.index_note},
                      {"screen_note", warm.screen_note}}},
                    {"wall_ms", Stats(wall)},
                    {"coarse_ms", Stats(coarse)},
                    {"ring_screen_ms", Stats(screen)},
                    {"ring_stage_ms", Stats(ring)},
                    {"fine_ms", Stats(fine)},
                    {"other_ms", Stats(rest)},
                    {"mates_listed", mates_listed},
                    {"mates_in_top_10", mates_top10},
                    {"mates_first", mates_first},
                    {"searches", per_query},
                    {"problems", problems},
                    {"load_before", load_before},
                    {"load_after", load_after},
                    {"peak_rss_mib", PeakRssMiB()},
                    {"total_s", total_s}}
                   .dump(2)
            << "\n";
  } else {
    ctx.out << "\n"
            << table.Render() << "\nend to end (the `bien search` process"
            << (args.through_node ? ", run by the node's `bien serve`" : "") << "): median "
            << Fixed(Median(wall) / 1000, 2) << " s, max " << Fixed(Max(wall) / 1000, 2)
            << " s; coarse median " << Fixed(Median(coarse), 0) << " ms (ring screen "
            << Fixed(Median(screen), 0) << " ms, ring stage " << Fixed(Median(ring), 0)
            << " ms), fine median " << Fixed(Median(fine), 0) << " ms, the rest (start, query, "
            << "output) " << Fixed(Median(rest), 0) << " ms\n"
            << "mates: " << mates_listed << " of " << args.queries << " listed, " << mates_top10
            << " in the top 10, " << mates_first << " first\n"
            << "first search (untimed) " << Fixed(warm.wall_ms / 1000, 2) << " s; load average "
            << LoadText(load_before) << " before, " << LoadText(load_after) << " after; "
            << Fixed(total_s / 60, 1) << " min in all, peak " << Fixed(PeakRssMiB(), 0)
            << " MiB in this process\n";
    for (const std::string& p : problems) ctx.out << "PROBLEM: " << p << "\n";
  }
  return problems.empty() ? kExitOk : kExitFailure;
}

}  // namespace bien::cli

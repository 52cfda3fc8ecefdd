// `bien bench ingest`: scans per second for read + validate + hash + store,
// on the real Fadul scans and on synthetic scans of the same size.
// `bien bench search`: the coarse index and the CMC re-ranking at partition
// sizes up to 10^6 exhibits, on synthetic descriptors.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <optional>
#include <ostream>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "core/csv.h"
#include "core/error.h"
#include "core/file.h"
#include "imaging/preprocess.h"
#include "imaging/synth.h"
#include "imaging/x3p.h"
#include "matching/cmc.h"
#include "matching/descriptor.h"
#include "matching/hamming.h"
#include "matching/index.h"
#include "matching/ring_codes.h"
#include "tools/bench_support.h"
#include "tools/commands.h"
#include "tools/output.h"
#include "tools/parallel.h"
#include "tools/search.h"
#include "tools/synth_features.h"

namespace bien::cli {

double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::optional<std::filesystem::path> FindDataDir(
    const std::optional<std::filesystem::path>& given) {
  if (given) {
    if (!std::filesystem::is_directory(*given)) {
      throw Error(given->string() + ": no such data folder");
    }
    return *given;
  }
  if (const char* env = std::getenv("BIEN_DATA_DIR"); env && *env) {
    if (std::filesystem::is_directory(env)) return std::filesystem::path(env);
  }
  for (const char* candidate : {"../shared/data", "../../shared/data"}) {
    if (std::filesystem::is_directory(candidate)) return std::filesystem::path(candidate);
  }
  return std::nullopt;
}

namespace {

struct BenchRun {
  std::string name;
  IngestSummary summary;
};

nlohmann::json RunJson(const BenchRun& r) {
  const double s = r.summary.seconds;
  return {{"set", r.name},
          {"scans", r.summary.ingested},
          {"rejected", r.summary.rejected},
          {"bytes", r.summary.bytes},
          {"seconds", s},
          {"scans_per_second", s > 0 ? r.summary.ingested / s : 0.0},
          {"mib_per_second", s > 0 ? r.summary.bytes / s / (1 << 20) : 0.0}};
}

}  // namespace

int CmdBenchIngest(Context& ctx, const BenchIngestArgs& args) {
  std::filesystem::path work;
  bool remove_work = false;
  if (args.work) {
    work = *args.work;
    std::filesystem::create_directories(work);
  } else {
    std::string templ = (std::filesystem::temp_directory_path() / "bien-bench-XXXXXX").string();
    if (!mkdtemp(templ.data())) throw Error("cannot create a temporary folder for the benchmark");
    work = templ;
    remove_work = true;
  }
  std::vector<BenchRun> runs;
  auto log = [&](const std::string& line) {
    if (!ctx.json) ctx.out << line << std::flush;
  };

  const auto data = FindDataDir(args.data);
  const auto fadul = data ? *data / "cartridge" / "fadul" : std::filesystem::path();
  if (data && std::filesystem::exists(fadul / "truth.csv")) {
    const CsvTable truth = ReadCsvFile(fadul / "truth.csv");
    std::vector<IngestItem> items;
    for (const auto& row : truth.rows) {
      IngestItem item;
      item.path = fadul / row[*truth.Column("path")];
      item.label = item.path.string();
      item.exhibit.case_ref = "BENCH-FADUL";
      item.exhibit.exhibit_ref = row[*truth.Column("path")];
      item.exhibit.kind = ExhibitKind::kCartridgeCase;
      item.exhibit.role = ExhibitRole::kTestFire;
      items.push_back(std::move(item));
    }
    Store::Create(work / "node-fadul", NodeConfig{"bench", "ZZ", "", ""}, ctx.actor);
    auto store = Store::Open(work / "node-fadul");
    log("fadul: ingesting " + std::to_string(items.size()) + " real scans...\n");
    runs.push_back({"fadul (real, 6.25 um, ~545 px)",
                    IngestItems(*store, ctx.actor, std::move(items), args.jobs, false, ctx.err)});
  } else {
    log("fadul: real data not found (pass --data or set BIEN_DATA_DIR); skipped\n");
  }

  if (args.synthetic > 0) {
    SynthOptions options;
    options.firearms = args.synthetic;
    options.shots = 1;
    options.seed = 2026;
    options.size_px = 545;
    log("synthetic: generating " + std::to_string(args.synthetic) +
        " scans of 545 px (not timed)...\n");
    const auto files = WriteSynthSet(work / "synth", options);
    std::vector<IngestItem> items;
    for (const auto& f : files) {
      IngestItem item;
      item.path = work / "synth" / f.file_name;
      item.label = item.path.string();
      item.exhibit.case_ref = "BENCH-SYNTH";
      item.exhibit.exhibit_ref = f.file_name;
      items.push_back(std::move(item));
    }
    Store::Create(work / "node-synth", NodeConfig{"bench", "ZZ", "", ""}, ctx.actor);
    auto store = Store::Open(work / "node-synth");
    log("synthetic: ingesting...\n");
    runs.push_back({"synthetic (6.25 um, 545 px)",
                    IngestItems(*store, ctx.actor, std::move(items), args.jobs, false, ctx.err)});
  }

  const double peak = PeakRssMiB();
  if (remove_work) std::filesystem::remove_all(work);
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : runs) j.push_back(RunJson(r));
    ctx.out << nlohmann::json{{"runs", j}, {"peak_rss_mib", peak}}.dump(2) << "\n";
  } else {
    TextTable table({"SET", "SCANS", "REJECTED", "SECONDS", "SCANS/S", "MiB/S"});
    for (const auto& r : runs) {
      const auto j = RunJson(r);
      char s[32], sps[32], mbs[32];
      std::snprintf(s, sizeof s, "%.2f", j["seconds"].get<double>());
      std::snprintf(sps, sizeof sps, "%.1f", j["scans_per_second"].get<double>());
      std::snprintf(mbs, sizeof mbs, "%.1f", j["mib_per_second"].get<double>());
      table.Add({r.name, std::to_string(r.summary.ingested), std::to_string(r.summary.rejected), s,
                 sps, mbs});
    }
    ctx.out << table.Render();
    char line[64];
    std::snprintf(line, sizeof line, "peak resident memory: %.0f MiB\n", peak);
    ctx.out << line;
  }
  for (const auto& r : runs) {
    if (r.summary.rejected > 0) {
      ctx.err << "bien: " << r.summary.rejected << " scans rejected in '" << r.name
              << "'; first: " <<
          [&] {
            for (const auto& o : r.summary.items) {
              if (o.status == "rejected") return o.reason;
            }
            return std::string();
          }() << "\n";
      return kExitFailure;
    }
  }
  return kExitOk;
}

namespace {

// A scratch folder removed on scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "bien-bench-XXXXXX").string();
    if (!mkdtemp(templ.data())) throw Error("cannot create a temporary folder for the benchmark");
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The fine stage of one search, measured for real: the query and `candidates`
// synthetic scans (545 px at 6.25 um, as a Fadul scan) are written first as
// X3P originals and their compact CMC features as the node caches them at
// ingest (not timed: ingest's work). Then, timed as `bien search` does it,
// the query's original is read, preprocessed, described and prepared, and
// each candidate's cached features are read, decoded and compared with CMC
// on `jobs` threads. Candidate 0 is the query's mate (same synthetic firearm).
struct FineStage {
  int candidates = 0;
  int threads = 0;
  double query_ms = 0;       // read + preprocess + descriptor + PrepareCmc of the query
  double candidates_ms = 0;  // wall time of all candidates on `threads` threads
  double read_ms = 0, decode_ms = 0, compare_ms = 0;  // per candidate, mean
  double feature_bytes = 0;                           // per candidate, mean
  int mate_rank = 0;                                  // 1 = the mate has the best CMC score
  double mate_score = 0;
  double best_other_score = 0;
  double total_ms() const { return query_ms + candidates_ms; }
};

FineStage MeasureFineStage(int candidates, int jobs, uint64_t seed,
                           const std::filesystem::path& work) {
  SynthOptions so;
  so.firearms = candidates;
  so.shots = 2;
  so.seed = seed;
  so.size_px = 545;
  so.Check();
  const CmcOptions cmc;
  const auto query_path = work / "query.x3p";
  auto candidate_path = [&](int i) { return work / ("candidate-" + std::to_string(i) + ".cmcf"); };
  ParallelFor(static_cast<size_t>(candidates) + 1, jobs, [&](size_t at) {
    const int i = static_cast<int>(at);
    if (i == candidates) {
      WriteX3p(MakeSynthShot(so, 0, 1), query_path);
    } else {
      const std::string label = "candidate " + std::to_string(i);
      const Surface s = PreprocessBreechFace(MakeSynthShot(so, i, 0), label);
      WriteFileAtomically(candidate_path(i), EncodeCmcFeatures(*PrepareCmc(s, label, cmc), cmc),
                          "features");
    }
  });
  FineStage f;
  f.candidates = candidates;
  f.threads = jobs;
  std::vector<double> read(candidates), decode(candidates), cmp(candidates), bytes(candidates),
      score(candidates);
  {
    const CvSingleThread cv_single;  // parallel over candidates instead
    const auto t0 = Clock::now();
    const Surface q = PreprocessBreechFace(ReadX3p(query_path), query_path.string());
    const std::vector<float> descriptor = BreechFaceDescriptor(q, query_path.string());
    const auto query = PrepareCmc(q, query_path.string(), cmc);
    f.query_ms = MsSince(t0);
    const auto t1 = Clock::now();
    ParallelFor(static_cast<size_t>(candidates), jobs, [&](size_t i) {
      const auto path = candidate_path(i);
      auto t = Clock::now();
      std::ifstream in(path, std::ios::binary);
      const std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      read[i] = MsSince(t);
      bytes[i] = static_cast<double>(b.size());
      t = Clock::now();
      const auto prepared = DecodeCmcFeatures(b, path.string(), cmc);
      decode[i] = MsSince(t);
      t = Clock::now();
      score[i] = CompareCmc(*query, *prepared, cmc).combined;
      cmp[i] = MsSince(t);
    });
    f.candidates_ms = MsSince(t1);
    if (descriptor.empty()) throw Error(query_path.string() + ": empty descriptor");
  }
  auto mean = [&](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / static_cast<double>(v.size());
  };
  f.read_ms = mean(read);
  f.decode_ms = mean(decode);
  f.compare_ms = mean(cmp);
  f.feature_bytes = mean(bytes);
  f.mate_score = score[0];
  f.mate_rank = 1;
  for (int i = 1; i < candidates; ++i) {
    f.best_other_score = std::max(f.best_other_score, score[i]);
    if (score[i] > score[0]) ++f.mate_rank;
  }
  return f;
}

// The ring stage of the coarse search (tools/search.h RingStage) on the
// benchmark's synthetic exhibits: for each query, its ring spectra around the
// centre offsets and those of its `pools[q]` candidates (best cosine first)
// are made from their synthetic shots (MakeSynthBreechFace, the shots the
// descriptors were made from; not timed: a node stores them at ingest; a
// candidate's once for all queries when memory allows), then,
// timed, the ring stage's scores (RingStageScores: the found centre's for all,
// the centre search for the best kRingScreen of those and of the cosine's)
// and order on `jobs` threads.
struct RingStageBench {
  int pool = 0;          // candidates per query (the largest pool)
  double ms_median = 0;  // correlations + order, per query
  double ms_p99 = 0;
  double mate_found_at_10 = 0;  // share of queries with a mate in the top 10 after it
  double mate_found_at_100 = 0;
  int64_t without_spectra = 0;  // candidates too sparse for ring spectra (kept by cosine)
  int queries_without = 0;      // queries too sparse for them (cosine order kept)
  double spectra_seconds = 0;   // making the synthetic shots' spectra, wall
  // The same for the pool's first 1000, 2000, 5000, ... (smaller pools, from
  // the same scores, i.e. screened on the whole pool): (pool, found at 10,
  // found at 100).
  std::vector<std::tuple<int, double, double>> smaller;
  // The compressed ring screen (BenchSearchArgs::ring_codes; keep 0: not
  // measured): training the basis on a sample and encoding every indexed
  // exhibit (wall), the code bytes per exhibit (with its scale), the share of
  // the training energy kept; per query the screen over every code (ms), a
  // mate among its best `keep`, the size of its union with the cosine pool,
  // the ring stage on that union (ms) and a mate in its top 10 / 100.
  struct Codes {
    std::string key;
    int keep = 0;
    int64_t trained_on = 0;
    double train_seconds = 0;
    double encode_seconds = 0;
    double bytes_per_exhibit = 0;
    double kept_energy = 0;
    double screen_ms_median = 0;
    double screen_ms_p99 = 0;
    double screen_found = 0;
    double union_mean = 0;
    double stage_ms_median = 0;
    double mate_found_at_10 = 0;
    double mate_found_at_100 = 0;
    // The same with the screen's first 1000, 2000, 5000, 10 000 only (from
    // the same scores): (keep, found at 10, found at 100).
    std::vector<std::tuple<int, double, double>> smaller;
  } codes;
};

RingStageBench MeasureRingStage(const std::vector<std::vector<int64_t>>& pools,
                                const std::vector<int64_t>& held,
                                const std::vector<std::vector<int64_t>>& mates, int shots,
                                uint64_t seed, int jobs, const std::vector<int64_t>& indexed,
                                int codes_keep) {
  SynthDescriptorOptions synth;
  synth.seed = seed;
  const DescriptorOptions shape;  // the working pixel the descriptors were made at
  auto surface_of = [&](int64_t id) {
    return MakeSynthBreechFace(synth, shape, static_cast<int>(id / shots),
                               static_cast<int>(id % shots));
  };
  RingStageBench b;
  std::vector<double> ms;
  double found10 = 0, found100 = 0;
  {
    const CvSingleThread cv_single;  // parallel over candidates instead
    // A candidate's spectra (empty: too sparse for them), made from its shot.
    auto spectra_of = [&](int64_t id) {
      try {
        return BreechFaceRingSpectra(surface_of(id), "candidate");
      } catch (const Error&) {
        return std::vector<float>();
      }
    };
    // Made once for every query whose pool holds the candidate when all the
    // distinct candidates' spectra fit in kSharedSpectraIds (the pools
    // overlap: at 10^6 exhibits 200 pools of 20 000 hold up to 4 million
    // entries but at most 10^6 exhibits, 7.6 GB of spectra made in about 25
    // minutes on 2 cores instead of 100 per query); otherwise per query.
    constexpr size_t kSharedSpectraIds = 1000000;
    std::unordered_map<int64_t, std::vector<float>> shared;
    std::unordered_set<int64_t> distinct;
    for (const auto& pool : pools) distinct.insert(pool.begin(), pool.end());
    if (codes_keep > 0) distinct.insert(indexed.begin(), indexed.end());  // all are encoded
    const bool share = distinct.size() <= kSharedSpectraIds;
    if (codes_keep > 0 && !share) {
      throw Error("--ring-codes: the spectra of " + std::to_string(distinct.size()) +
                  " exhibits are more than this benchmark keeps (" +
                  std::to_string(kSharedSpectraIds) + ")");
    }
    if (share) {
      const auto t_spectra = Clock::now();
      const std::vector<int64_t> ids(distinct.begin(), distinct.end());
      std::vector<std::vector<float>> made(ids.size());
      ParallelFor(ids.size(), jobs, [&](size_t i) { made[i] = spectra_of(ids[i]); });
      for (size_t i = 0; i < ids.size(); ++i) shared.emplace(ids[i], std::move(made[i]));
      b.spectra_seconds += std::chrono::duration<double>(Clock::now() - t_spectra).count();
    }
    // The compressed screen's codes of every indexed exhibit, in `indexed`
    // order; the basis trained on about 20 000 of them.
    std::optional<RingCodec> codec;
    std::vector<int8_t> code_bytes;
    std::vector<float> code_scales;
    std::unordered_map<int64_t, size_t> code_position;  // exhibit id -> its code
    std::vector<double> screen_ms, stage_ms;
    double screen_found = 0, union_total = 0, codes10 = 0, codes100 = 0;
    if (codes_keep > 0) {
      b.codes.keep = codes_keep;
      std::vector<const std::vector<float>*> all(indexed.size());
      for (size_t i = 0; i < indexed.size(); ++i) all[i] = &shared.at(indexed[i]);
      const size_t step = std::max<size_t>(1, indexed.size() / 20000);
      std::vector<const std::vector<float>*> sample;
      for (size_t i = 0; i < all.size(); i += step) sample.push_back(all[i]);
      auto t0 = Clock::now();
      codec.emplace(RingCodec::Train(sample));
      b.codes.train_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      b.codes.trained_on = static_cast<int64_t>(sample.size());
      b.codes.key = codec->Key();
      b.codes.kept_energy = codec->kept_energy();
      t0 = Clock::now();
      codec->EncodeAll(all, jobs, code_bytes, code_scales);
      code_position.reserve(indexed.size());
      for (size_t i = 0; i < indexed.size(); ++i) code_position.emplace(indexed[i], i);
      b.codes.encode_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      b.codes.bytes_per_exhibit = codec->code_bytes() + static_cast<double>(sizeof(float));
    }
    for (size_t q = 0; q < pools.size(); ++q) {
      const std::vector<int64_t>& pool = pools[q];
      b.pool = std::max(b.pool, static_cast<int>(pool.size()));
      const auto t_spectra = Clock::now();
      std::optional<RingQuery> query;
      try {
        query = BreechFaceRingQuery(surface_of(held[q]), "query");
      } catch (const Error&) {
        ++b.queries_without;
      }
      std::vector<std::vector<float>> own(share ? 0 : pool.size());
      std::vector<const std::vector<float>*> spectra(pool.size());
      for (size_t i = 0; i < pool.size(); ++i) spectra[i] = share ? &shared.at(pool[i]) : &own[i];
      if (query && !share) {
        ParallelFor(pool.size(), jobs, [&](size_t i) { own[i] = spectra_of(pool[i]); });
      }
      b.spectra_seconds += std::chrono::duration<double>(Clock::now() - t_spectra).count();
      const auto t = Clock::now();
      std::vector<std::optional<double>> ring(pool.size());
      if (query) ring = RingStageScores(*query, spectra, 100, jobs);
      const std::vector<size_t> order = RingOrder(ring, 100);
      ms.push_back(MsSince(t));
      for (const auto* v : spectra) b.without_spectra += query && v->empty();
      auto found = [&](const std::vector<size_t>& in, size_t top) {
        for (size_t j = 0; j < std::min(top, in.size()); ++j) {
          if (std::count(mates[q].begin(), mates[q].end(), pool[in[j]])) return 1.0;
        }
        return 0.0;
      };
      found10 += found(order, 10);
      found100 += found(order, 100);
      size_t at = 0;
      for (size_t p : {1000, 2000, 5000, 10000, 20000, 50000}) {
        if (p >= pool.size()) break;
        if (b.smaller.size() <= at) b.smaller.emplace_back(static_cast<int>(p), 0.0, 0.0);
        const std::vector<size_t> o =
            RingOrder(std::vector<std::optional<double>>(ring.begin(),
                                                         ring.begin() + static_cast<ptrdiff_t>(p)),
                      100);
        std::get<1>(b.smaller[at]) += found(o, 10);
        std::get<2>(b.smaller[at]) += found(o, 100);
        ++at;
      }
      if (!codec) continue;
      // The compressed screen: every code scored, its best codes_keep
      // appended (in their order) to the cosine pool, the ring stage on all.
      std::vector<int64_t> joined = pool;
      std::vector<size_t> screen_place;  // of each joined beyond the pool, in the screen's list
      std::vector<float> scores(indexed.size());  // every code's, at the found centre
      const auto t_screen = Clock::now();
      if (query) {
        codec->ScoreAll(codec->Project(query->spectra.front()), code_bytes, code_scales, scores,
                        jobs);
        std::vector<size_t> best(indexed.size());
        for (size_t i = 0; i < best.size(); ++i) best[i] = i;
        const size_t keep = std::min(best.size(), static_cast<size_t>(codes_keep));
        auto better = [&](size_t x, size_t y) {
          return scores[x] > scores[y] || (scores[x] == scores[y] && x < y);
        };
        std::nth_element(best.begin(), best.begin() + static_cast<ptrdiff_t>(keep), best.end(),
                         better);
        best.resize(keep);
        std::sort(best.begin(), best.end(), better);
        screen_ms.push_back(MsSince(t_screen));
        bool mate_kept = false;
        const std::unordered_set<int64_t> in_pool(pool.begin(), pool.end());
        for (size_t r = 0; r < best.size(); ++r) {
          const int64_t id = indexed[best[r]];
          mate_kept = mate_kept || std::count(mates[q].begin(), mates[q].end(), id) > 0;
          if (!in_pool.count(id)) {
            joined.push_back(id);
            screen_place.push_back(r);
          }
        }
        screen_found += mate_kept;
      }
      union_total += static_cast<double>(joined.size());
      std::vector<const std::vector<float>*> joined_spectra(joined.size());
      for (size_t i = 0; i < joined.size(); ++i) joined_spectra[i] = &shared.at(joined[i]);
      // As the search runs it with the codes at hand: their found-centre
      // scores, the centre search on RingCentreSearchSet (its spectra copied,
      // as the search reads them from the store).
      const auto t_stage = Clock::now();
      std::vector<std::optional<double>> joined_keys(joined.size());
      if (query) {
        std::vector<std::optional<double>> compressed(joined.size());
        for (size_t i = 0; i < joined.size(); ++i) {
          if (!joined_spectra[i]->empty()) compressed[i] = scores[code_position.at(joined[i])];
        }
        RingStageScoresFromCodes(
            *query, compressed, 100, jobs,
            [&](const std::vector<size_t>& which) {
              std::vector<std::vector<float>> out;
              out.reserve(which.size());
              for (size_t i : which) out.push_back(*joined_spectra[i]);
              return out;
            },
            &joined_keys);
      }
      const std::vector<size_t> joined_order = RingOrder(joined_keys, 100);
      stage_ms.push_back(MsSince(t_stage));
      auto found_joined = [&](size_t top) {
        for (size_t j = 0; j < std::min(top, joined_order.size()); ++j) {
          if (std::count(mates[q].begin(), mates[q].end(), joined[joined_order[j]])) return 1.0;
        }
        return 0.0;
      };
      codes10 += found_joined(10);
      codes100 += found_joined(100);
      // Smaller screens from the same scores: the pool and the screen's
      // first `keep` (screened for the centre search on the whole union).
      size_t cut = 0;
      for (size_t keep : {1000, 2000, 5000, 10000}) {
        if (keep >= static_cast<size_t>(codes_keep)) break;
        if (b.codes.smaller.size() <= cut) {
          b.codes.smaller.emplace_back(static_cast<int>(keep), 0.0, 0.0);
        }
        std::vector<size_t> subset;
        for (size_t i = 0; i < joined.size(); ++i) {
          if (i < pool.size() || screen_place[i - pool.size()] < keep) subset.push_back(i);
        }
        std::vector<std::optional<double>> sub_ring(subset.size());
        for (size_t i = 0; i < subset.size(); ++i) sub_ring[i] = joined_keys[subset[i]];
        const std::vector<size_t> o = RingOrder(sub_ring, 100);
        auto found_sub = [&](size_t top) {
          for (size_t j = 0; j < std::min(top, o.size()); ++j) {
            if (std::count(mates[q].begin(), mates[q].end(), joined[subset[o[j]]])) return 1.0;
          }
          return 0.0;
        };
        std::get<1>(b.codes.smaller[cut]) += found_sub(10);
        std::get<2>(b.codes.smaller[cut]) += found_sub(100);
        ++cut;
      }
    }
    if (codec) {
      const double n = static_cast<double>(std::max<size_t>(pools.size(), 1));
      b.codes.screen_ms_median = Percentile(screen_ms, 0.5);
      b.codes.screen_ms_p99 = Percentile(screen_ms, 0.99);
      b.codes.screen_found = screen_found / n;
      b.codes.union_mean = union_total / n;
      b.codes.stage_ms_median = Percentile(stage_ms, 0.5);
      b.codes.mate_found_at_10 = codes10 / n;
      b.codes.mate_found_at_100 = codes100 / n;
      for (auto& [keep, f10, f100] : b.codes.smaller) {
        f10 /= n;
        f100 /= n;
      }
    }
  }
  const double n = static_cast<double>(std::max<size_t>(pools.size(), 1));
  b.mate_found_at_10 = found10 / n;
  b.mate_found_at_100 = found100 / n;
  for (auto& [p, f10, f100] : b.smaller) {
    f10 /= n;
    f100 /= n;
  }
  b.ms_median = Percentile(ms, 0.5);
  b.ms_p99 = Percentile(ms, 0.99);
  return b;
}

nlohmann::json SmallerPoolsJson(const RingStageBench& b) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [pool, f10, f100] : b.smaller) {
    out.push_back({{"pool", pool}, {"mate_recall_at_10", f10}, {"mate_recall_at_100", f100}});
  }
  return out;
}

nlohmann::json CodesJson(const RingStageBench::Codes& c, double pool_query_ms, double fine_ms) {
  // The coarse stage with the screen: the index's pool, the screen, the ring
  // stage on their union.
  const double coarse = pool_query_ms + c.screen_ms_median + c.stage_ms_median;
  nlohmann::json smaller = nlohmann::json::array();
  for (const auto& [keep, f10, f100] : c.smaller) {
    smaller.push_back({{"keep", keep}, {"mate_recall_at_10", f10}, {"mate_recall_at_100", f100}});
  }
  return {{"key", c.key},
          {"keep", c.keep},
          {"trained_on", c.trained_on},
          {"train_seconds", c.train_seconds},
          {"encode_seconds", c.encode_seconds},
          {"bytes_per_exhibit", c.bytes_per_exhibit},
          {"kept_energy", c.kept_energy},
          {"screen_ms_median", c.screen_ms_median},
          {"screen_ms_p99", c.screen_ms_p99},
          {"screen_mate_recall", c.screen_found},
          {"union_mean", c.union_mean},
          {"stage_ms_median", c.stage_ms_median},
          {"mate_recall_at_10", c.mate_found_at_10},
          {"mate_recall_at_100", c.mate_found_at_100},
          {"smaller_screens", smaller},
          {"coarse_ms", coarse},
          {"end_to_end_ms", coarse + fine_ms}};
}

nlohmann::json FineJson(const FineStage& f) {
  return {{"candidates", f.candidates},
          {"threads", f.threads},
          {"query_ms", f.query_ms},
          {"candidates_ms", f.candidates_ms},
          {"total_ms", f.total_ms()},
          {"per_candidate_ms",
           {{"read", f.read_ms}, {"decode", f.decode_ms}, {"compare", f.compare_ms}}},
          {"feature_bytes", f.feature_bytes},
          {"mate_rank", f.mate_rank},
          {"mate_score", f.mate_score},
          {"best_other_score", f.best_other_score}};
}

}  // namespace

int CmdBenchSearch(Context& ctx, const BenchSearchArgs& args) {
  if (args.exhibits.empty()) throw Error("--exhibits: give at least one partition size");
  if (args.queries < 1) throw Error("--queries must be at least 1");
  if (args.rerank < 1) throw Error("--rerank must be at least 1");
  if (args.nprobe < 1) throw Error("--nprobe must be at least 1");
  if (args.jobs < 0) throw Error("--jobs must be 0 (every core) or more");
  if (args.ring_pool < 0) throw Error("--ring-pool must be 0 (not measured) or more");
  if (args.ring_codes < -1) {
    throw Error("--ring-codes must be -1 (as the search), 0 (not measured) or more");
  }
  if (args.ring_codes > 0 && args.ring_pool == 0) {
    throw Error("--ring-codes: the compressed screen joins the ring stage; give --ring-pool too");
  }
  const int jobs = args.jobs > 0
                       ? args.jobs
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (!args.features && args.shots < 2) {
    throw Error("--shots " + std::to_string(args.shots) +
                ": 1 shot per firearm leaves no mates to search for (use 2 or more)");
  }
  auto check_sizes = [&](int shots) {
    for (int64_t n : args.exhibits) {
      if (n < 2 * static_cast<int64_t>(shots)) {
        throw Error("--exhibits " + std::to_string(n) + ": need at least " +
                    std::to_string(2 * shots) + " (two firearms of " + std::to_string(shots) +
                    " shots)");
      }
    }
  };
  check_sizes(args.features ? 1 : args.shots);  // before minutes of reading or generating
  const int64_t max_n = *std::max_element(args.exhibits.begin(), args.exhibits.end());
  const std::string key = DescriptorKey();
  const int dim = DescriptorDim();
  auto log = [&](const std::string& line) {
    if (!ctx.json) ctx.out << line << std::flush;
  };

  // The vectors: the first max_n of the file, or generated.
  const auto t_load = Clock::now();
  BenchVectors made = BenchDistractorVectors(
      args.features, max_n, args.shots, args.seed, jobs, log,
      ctx.progress ? ProgressLine(ctx.err, "synthetic descriptors") : FeatureProgress());
  std::vector<float> vectors = std::move(made.vectors);
  const int shots = made.shots;
  const uint64_t seed = made.seed;
  const double load_seconds = std::chrono::duration<double>(Clock::now() - t_load).count();
  if (shots < 2) {
    throw Error(args.features->string() +
                ": 1 shot per firearm leaves no mates to search for (write it with --shots 2)");
  }
  check_sizes(shots);

  log("fine stage: " + std::to_string(args.rerank) + " candidate scans, CMC on " +
      std::to_string(jobs) + " threads...\n");
  ScratchDir scratch;
  const FineStage fine = MeasureFineStage(args.rerank, jobs, seed, scratch.path());

  VectorIndexOptions options;
  options.nprobe = args.nprobe;
  if (!args.kind.empty()) {
    const std::optional<IndexKind> kind = ParseIndexKind(args.kind);
    if (!kind) throw Error("--kind: unknown index kind \"" + args.kind + "\"");
    if (*kind == IndexKind::kExact) {
      options.exact_below = std::numeric_limits<int64_t>::max();
    } else {
      options.approximate_kind = *kind;
      options.exact_below = 0;  // the named kind at every size
    }
  }
  if (!args.hamming.empty()) {
    options.hamming_kernel = ParseHammingKernel(args.hamming);
    if (!options.hamming_kernel) throw Error("--hamming: unknown kernel \"" + args.hamming + "\"");
    if (!HammingKernelAvailable(*options.hamming_kernel)) {
      throw Error("--hamming: kernel " + args.hamming + " is not available on this CPU");
    }
  }
  const std::string_view hamming =
      HammingKernelName(options.hamming_kernel.value_or(BestHammingKernel()));
  options.build_threads = jobs;
  options.search_threads = jobs;  // a single query's binary_sq8 scan may split
  options.Check();
  nlohmann::json runs = nlohmann::json::array();
  for (int64_t n : args.exhibits) {
    // Queries: the last shot of Q firearms spread over the first n vectors;
    // the index holds the other n - Q vectors (the query's mates among them).
    const int64_t firearms = n / shots;  // complete firearms within n
    const int q_count = static_cast<int>(std::min<int64_t>(args.queries, firearms - 1));
    std::vector<int64_t> held(q_count);
    std::vector<std::vector<int64_t>> mates(q_count);
    for (int q = 0; q < q_count; ++q) {
      const int64_t f = (2 * q + 1) * firearms / (2 * static_cast<int64_t>(q_count));
      held[q] = f * shots + shots - 1;
      for (int s = 0; s < shots - 1; ++s) mates[q].push_back(f * shots + s);
    }
    // Move the held-out rows out of the first n (in place, order kept) and
    // back afterwards: no second copy of up to 10^6 vectors.
    const size_t row = static_cast<size_t>(dim);
    std::vector<float> queries(static_cast<size_t>(q_count) * row);
    std::vector<int64_t> ids;
    ids.reserve(static_cast<size_t>(n - q_count));
    {
      size_t h = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (h < held.size() && held[h] == i) {
          std::memcpy(&queries[h * row], &vectors[static_cast<size_t>(i) * row],
                      row * sizeof(float));
          ++h;
          continue;
        }
        if (static_cast<int64_t>(ids.size()) != i) {
          std::memmove(&vectors[ids.size() * row], &vectors[static_cast<size_t>(i) * row],
                       row * sizeof(float));
        }
        ids.push_back(i);
      }
    }
    auto restore = [&] {
      size_t h = held.size();
      for (int64_t j = static_cast<int64_t>(ids.size()) - 1; j >= -1; --j) {
        // Everything after ids[j] up to the next kept id was held out.
        const int64_t from = j >= 0 ? ids[j] : -1;
        while (h > 0 && held[h - 1] > from) {
          --h;
          std::memcpy(&vectors[static_cast<size_t>(held[h]) * row], &queries[h * row],
                      row * sizeof(float));
        }
        if (j >= 0 && ids[j] != j) {
          std::memmove(&vectors[static_cast<size_t>(ids[j]) * row],
                       &vectors[static_cast<size_t>(j) * row], row * sizeof(float));
        }
      }
    };
    log("n = " + std::to_string(n) + ": building and querying the index...\n");
    IndexBenchResult r;
    try {
      r = BenchIndexOn(dim, ids, std::span<const float>(vectors.data(), ids.size() * row), queries,
                       mates, options, args.ring_pool);
    } catch (...) {
      restore();
      throw;
    }
    restore();
    RingStageBench ring;
    // The screen's size: as the search (the pool's, when the partition holds
    // more than the pool), or as given.
    const int codes_keep =
        args.ring_pool == 0 ? 0
        : args.ring_codes >= 0
            ? args.ring_codes
            : (static_cast<int64_t>(ids.size()) > args.ring_pool ? SearchOptions{}.ring_screen : 0);
    if (args.ring_pool > 0) {
      log("n = " + std::to_string(n) + ": ring stage of each query's best " +
          std::to_string(args.ring_pool) +
          (codes_keep > 0 ? " and the ring screen's best " + std::to_string(codes_keep) : "") +
          " (their ring spectra made from the synthetic shots first, untimed)...\n");
      ring = MeasureRingStage(r.pools, held, mates, shots, seed, jobs, ids, codes_keep);
    }
    // The coarse stage a search runs: the index's top 100, or its ring pool
    // (with the ring screen's) and the ring stage.
    const double coarse_ms =
        args.ring_pool == 0 ? r.query_ms_median
        : codes_keep > 0
            ? r.pool_query_ms_median + ring.codes.screen_ms_median + ring.codes.stage_ms_median
            : r.pool_query_ms_median + ring.ms_median;
    const double indexed = static_cast<double>(ids.size());
    runs.push_back(
        {{"exhibits", n},
         {"indexed", ids.size()},
         {"queries", q_count},
         {"mates_per_query", shots - 1},
         {"kind", std::string(IndexKindName(r.kind))},
         {"nlist", r.nlist},
         {"nprobe", r.nprobe},
         {"build_seconds", r.build_seconds},
         {"bytes_per_exhibit", r.bytes_per_vector},
         {"index_bytes", r.bytes_per_vector * indexed},
         {"query_ms_median", r.query_ms_median},
         {"query_ms_p99", r.query_ms_p99},
         {"exact_query_ms_median", r.exact_query_ms_median},
         {"mate_recall_at_10", r.mate_found_at_10},
         {"mate_recall_at_100", r.mate_found_at_100},
         {"exact_mate_recall_at_10", r.exact_mate_found_at_10},
         {"exact_mate_recall_at_100", r.exact_mate_found_at_100},
         {"neighbour_recall_at_10", r.recall_at_10},
         {"neighbour_recall_at_100", r.recall_at_100},
         {"ring_stage", args.ring_pool > 0
                            ? nlohmann::json{{"pool", ring.pool},
                                             {"pool_query_ms_median", r.pool_query_ms_median},
                                             {"ms_median", ring.ms_median},
                                             {"ms_p99", ring.ms_p99},
                                             {"mate_recall_at_10", ring.mate_found_at_10},
                                             {"mate_recall_at_100", ring.mate_found_at_100},
                                             {"candidates_without_spectra", ring.without_spectra},
                                             {"queries_without_spectra", ring.queries_without},
                                             {"spectra_seconds", ring.spectra_seconds},
                                             {"smaller_pools", SmallerPoolsJson(ring)}}
                            : nlohmann::json(nullptr)},
         {"ring_codes", codes_keep > 0
                            ? CodesJson(ring.codes, r.pool_query_ms_median, fine.total_ms())
                            : nlohmann::json(nullptr)},
         {"coarse_ms", coarse_ms},
         {"fine_ms", fine.total_ms()},
         {"end_to_end_ms", coarse_ms + fine.total_ms()}});
  }

  const nlohmann::json j = {
      {"descriptor_key", key},
      {"synthetic_model", SynthDescriptorKey()},
      {"dim", dim},
      {"features", args.features ? nlohmann::json(args.features->string()) : nlohmann::json()},
      {"shots_per_firearm", shots},
      {"seed", seed},
      {"vectors_seconds", load_seconds},
      {"threads", jobs},
      {"hamming_kernel", hamming},
      {"ring_spectra_key", RingSpectraKey()},
      {"fine", FineJson(fine)},
      {"runs", runs},
      {"peak_rss_mib", PeakRssMiB()}};
  if (ctx.json) {
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  ctx.out << "\ndescriptors: " << (args.features ? args.features->string() : "generated") << ", "
          << shots << " shots per firearm, seed " << seed << " (" << Fixed(load_seconds, 1)
          << " s to " << (args.features ? "read" : "make") << "); binary_sq8 Hamming kernel "
          << hamming << "\n"
          << "fine stage (" << fine.candidates << " candidates, " << fine.threads
          << " threads): query " << Fixed(fine.query_ms, 0) << " ms + candidates "
          << Fixed(fine.candidates_ms, 0) << " ms = " << Fixed(fine.total_ms(), 0)
          << " ms; per candidate read " << Fixed(fine.read_ms, 1) << " ("
          << Fixed(fine.feature_bytes / 1024, 0) << " KiB of cached features), decode "
          << Fixed(fine.decode_ms, 1) << ", compare " << Fixed(fine.compare_ms, 1)
          << " ms; mate ranked " << fine.mate_rank << " (CMC " << Fixed(fine.mate_score, 1)
          << ", best other " << Fixed(fine.best_other_score, 1) << ")\n";
  TextTable table({"EXHIBITS", "INDEX", "BUILD S", "BYTES/EX", "MEDIAN MS", "P99 MS", "MATE@10",
                   "MATE@100", "EXACT@100", "RING POOL MS", "RING@10", "RING@100", "FINE MS",
                   "TOTAL MS"});
  for (const auto& r : runs) {
    const auto& ring = r["ring_stage"];
    auto ring_cell = [&](const char* k, int digits) {
      return ring.is_null() ? std::string("-") : Fixed(ring[k].get<double>(), digits);
    };
    table.Add(
        {std::to_string(r["exhibits"].get<int64_t>()), r["kind"].get<std::string>(),
         Fixed(r["build_seconds"].get<double>(), 1), Fixed(r["bytes_per_exhibit"].get<double>(), 0),
         Fixed(r["query_ms_median"].get<double>(), 2), Fixed(r["query_ms_p99"].get<double>(), 2),
         Fixed(r["mate_recall_at_10"].get<double>(), 3),
         Fixed(r["mate_recall_at_100"].get<double>(), 3),
         Fixed(r["exact_mate_recall_at_100"].get<double>(), 3),
         ring.is_null() ? std::string("-")
                        : Fixed(ring["pool_query_ms_median"].get<double>(), 1) + " + " +
                              Fixed(ring["ms_median"].get<double>(), 1),
         ring_cell("mate_recall_at_10", 3), ring_cell("mate_recall_at_100", 3),
         Fixed(r["fine_ms"].get<double>(), 0), Fixed(r["end_to_end_ms"].get<double>(), 0)});
  }
  ctx.out << table.Render();
  ctx.out << "MATE@k: share of queries whose mate is in the coarse top k (EXACT: exact search).\n"
          << "RING: the index's best " << args.ring_pool
          << " (POOL MS: that search + the ring stage's correlations, median) re-ranked by ring "
             "correlation without the ring screen; RING@k: a mate in its top k. TOTAL: the "
             "coarse stage a search runs (with the ring screen where it runs, below) + FINE.\n"
          << "peak resident memory: " << Fixed(j["peak_rss_mib"].get<double>(), 0) << " MiB\n";
  for (const auto& r : runs) {
    const auto& c = r["ring_codes"];
    if (c.is_null()) continue;
    ctx.out << r["exhibits"].get<int64_t>() << " exhibits, compressed ring screen ("
            << c["key"].get<std::string>() << ", " << Fixed(c["bytes_per_exhibit"].get<double>(), 0)
            << " bytes per exhibit, basis from " << c["trained_on"].get<int64_t>() << " keeping "
            << Fixed(c["kept_energy"].get<double>(), 3) << " of the energy): screen "
            << Fixed(c["screen_ms_median"].get<double>(), 1) << " ms median (p99 "
            << Fixed(c["screen_ms_p99"].get<double>(), 1) << "), a mate in its best "
            << c["keep"].get<int>() << " for " << Fixed(c["screen_mate_recall"].get<double>(), 3)
            << "; ring stage on the union with the pool ("
            << Fixed(c["union_mean"].get<double>(), 0) << " on average) "
            << Fixed(c["stage_ms_median"].get<double>(), 1) << " ms; RING@10 / @100 "
            << Fixed(c["mate_recall_at_10"].get<double>(), 3) << " / "
            << Fixed(c["mate_recall_at_100"].get<double>(), 3) << "; coarse "
            << Fixed(c["coarse_ms"].get<double>(), 0) << " ms, total "
            << Fixed(c["end_to_end_ms"].get<double>(), 0) << " ms\n";
  }
  return kExitOk;
}

}  // namespace bien::cli

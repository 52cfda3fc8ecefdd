// `bien bench ingest`: scans per second for read + validate + hash + store,
// on the real Fadul scans and on synthetic scans of the same size.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <ostream>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/synth.h"
#include "tools/commands.h"
#include "tools/output.h"

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

}  // namespace bien::cli

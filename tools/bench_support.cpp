#include "tools/bench_support.h"

#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/synth.h"
#include "tools/compare.h"
#include "tools/fine_features.h"
#include "tools/parallel.h"
#include "tools/synth_features.h"

namespace bien::cli {

namespace fs = std::filesystem;

BenchWorkDir::BenchWorkDir(const std::optional<fs::path>& given, const std::string& prefix) {
  if (given) {
    path_ = fs::absolute(*given);
    if (fs::exists(path_) && !(fs::is_directory(path_) && fs::is_empty(path_))) {
      throw Error("--work " + path_.string() + ": exists and is not an empty folder");
    }
    fs::create_directories(path_);
    return;
  }
  std::string templ = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (!mkdtemp(templ.data())) throw Error("cannot create a temporary folder for the benchmark");
  path_ = templ;
  remove_ = true;
}

BenchWorkDir::~BenchWorkDir() {
  std::error_code ec;
  if (remove_) fs::remove_all(path_, ec);
}

void CheckBenchPaths(const std::optional<fs::path>& data, const std::optional<fs::path>& features) {
  if (data && !fs::is_directory(*data))
    throw Error("--data " + data->string() + ": no such folder");
  if (features && !fs::is_regular_file(*features)) {
    throw Error("--features " + features->string() + ": no such file");
  }
}

int BenchJobs(int jobs) {
  if (jobs < 0) throw Error("--jobs must be 0 (every core) or more");
  return jobs > 0 ? jobs : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

BenchVectors BenchDistractorVectors(const std::optional<fs::path>& features, int64_t count,
                                    int shots, uint64_t seed, int jobs,
                                    const std::function<void(const std::string&)>& log,
                                    const std::function<void(int64_t, int64_t)>& progress) {
  BenchVectors out;
  out.shots = shots;
  out.seed = seed;
  if (features) {
    log("reading " + std::to_string(count) + " descriptors from " + features->string() +
        " (checks the whole file's SHA-256)...\n");
    FeatureFile f = ReadBenchFeatures(*features, count);
    out.vectors = std::move(f.vectors);
    out.seed = f.seed;
    out.shots = f.shots;
    out.source = features->string();
    return out;
  }
  SynthFeatureOptions o;
  o.count = count;
  o.shots = out.shots;
  o.seed = out.seed;
  o.jobs = jobs;
  o.Check();
  log("generating " + std::to_string(count) + " synthetic descriptors on " + std::to_string(jobs) +
      " threads (about 600 per second per core)...\n");
  out.vectors = MakeSynthFeatures(o, progress);
  out.source = "generated (SynthDescriptors, seed " + std::to_string(out.seed) + ")";
  return out;
}

std::vector<double> LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::vector<double> out(3, 0.0);
  for (double& v : out) in >> v;
  return out;
}

std::string LoadText(const std::vector<double>& l) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return buf;
}

std::string ReadText(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double Max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

nlohmann::json Stats(const std::vector<double>& v) {
  return {{"median", Median(v)}, {"max", Max(v)}, {"n", v.size()}};
}

std::vector<std::vector<fs::path>> FadulShots(const fs::path& data, int per_firearm, int firearms) {
  const fs::path fadul = data / "cartridge" / "fadul";
  const CsvTable truth = ReadCsvFile(fadul / "truth.csv");
  const auto path_col = truth.Column("path"), source_col = truth.Column("source");
  if (!path_col || !source_col) {
    throw Error((fadul / "truth.csv").string() + ": needs columns path and source");
  }
  std::map<std::string, std::vector<fs::path>> by_source;
  for (const auto& row : truth.rows) by_source[row[*source_col]].push_back(fadul / row[*path_col]);
  std::vector<std::vector<fs::path>> shots;
  for (auto& [source, files] : by_source) {
    std::sort(files.begin(), files.end());
    if (files.size() >= static_cast<size_t>(per_firearm)) {
      shots.emplace_back(files.begin(), files.begin() + per_firearm);
    }
  }
  if (static_cast<int>(shots.size()) < firearms) {
    throw Error(std::to_string(firearms) + " firearms wanted: " + fadul.string() + " has " +
                std::to_string(shots.size()) + " with " + std::to_string(per_firearm) + " scans");
  }
  shots.resize(static_cast<size_t>(firearms));
  return shots;
}

QueryShots BenchQueryShots(const std::optional<fs::path>& data, int per_firearm, int firearms,
                           const fs::path& dir) {
  QueryShots out;
  if (data) {
    out.shots = FadulShots(*data, per_firearm, firearms);
    out.source = "Fadul (" + (*data / "cartridge" / "fadul").string() + ")";
    return out;
  }
  SynthOptions so;
  so.firearms = firearms;
  so.shots = per_firearm;
  so.seed = 2026;
  so.size_px = 545;
  out.shots.resize(static_cast<size_t>(firearms));
  for (const SynthFile& f : WriteSynthSet(dir, so)) {
    out.shots[static_cast<size_t>(f.firearm)].push_back(dir / f.file_name);
  }
  out.source = "synthetic X3P (bien synth, seed " + std::to_string(so.seed) + ", 545 px)";
  return out;
}

std::vector<fs::path> MakeFeaturePool(const fs::path& dir, const CmcOptions& cmc, int count,
                                      int jobs) {
  fs::create_directories(dir);
  std::vector<fs::path> files(static_cast<size_t>(count));
  SynthOptions so;
  so.firearms = count;
  so.shots = 1;
  so.seed = 7919;  // other firearms than the benchmarks' queries (seed 2026)
  so.size_px = 545;
  ParallelFor(files.size(), jobs, [&](size_t i) {
    const int firearm = static_cast<int>(i);
    const std::string label = "feature pool scan " + std::to_string(i + 1);
    const Surface pre = Preprocessed(Operand{label, "", MakeSynthShot(so, firearm, 0)}, nullptr);
    const std::string bytes = EncodeCmcFeatures(pre, label, cmc);
    DecodeCmcFeatures(bytes, label, cmc);  // usable (cells), or throws naming it
    files[i] = dir / (std::to_string(i + 1) + ".cmcf");
    std::ofstream out(files[i], std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw Error(files[i].string() + ": cannot write");
  });
  return files;
}

void LinkFeaturePool(const fs::path& node_dir, const std::vector<AddResult>& added,
                     const std::vector<fs::path>& pool, size_t first) {
  if (pool.empty()) throw Error("no feature pool files to link bench distractors to");
  FineFeatures features(node_dir);
  std::set<fs::path> folders;
  for (size_t i = 0; i < added.size(); ++i) {
    const fs::path path = features.PathFor(added[i].sha256);
    if (folders.insert(path.parent_path()).second) fs::create_directories(path.parent_path());
    const fs::path& target = pool[(first + i) % pool.size()];
    std::error_code ec;
    fs::create_hard_link(target, path, ec);
    if (ec)
      throw Error(path.string() + ": cannot link to " + target.string() + ": " + ec.message());
  }
}

}  // namespace bien::cli

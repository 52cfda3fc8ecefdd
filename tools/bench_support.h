// What the end-to-end benchmarks (`bien bench federation`,
// tools/bench_federation.cpp, and `bien bench node`, tools/bench_node.cpp)
// share: their work folder, the machine's load, small statistics, the Fadul
// query scans, and the pool of encoded CMC features bench distractors link to
// as their cached fine features.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "matching/cmc.h"
#include "storage/store.h"

namespace bien::cli {

// The work folder: `given` (created; must be new or empty), or a temporary
// folder "<prefix>-XXXXXX" removed on scope exit.
class BenchWorkDir {
 public:
  BenchWorkDir(const std::optional<std::filesystem::path>& given, const std::string& prefix);
  ~BenchWorkDir();
  BenchWorkDir(const BenchWorkDir&) = delete;
  BenchWorkDir& operator=(const BenchWorkDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  bool remove_ = false;
};

// The arguments both benchmarks share: --data must name a folder and
// --features a file when given (bien::Error naming them otherwise); --jobs
// 0 means every core (returned as a count).
void CheckBenchPaths(const std::optional<std::filesystem::path>& data,
                     const std::optional<std::filesystem::path>& features);
int BenchJobs(int jobs);

// The benchmarks' synthetic coarse descriptors: the first `count` of a
// `bien synth --features` file (its whole SHA-256 checked), or generated
// with `shots` per firearm and `seed` on `jobs` threads; with the synthetic
// model's seed and shots per firearm (vector i is firearm i / shots, shot
// i % shots) and where they came from. `log` gets a line before the work
// starts; `progress` (may be empty) the generation's progress.
struct BenchVectors {
  std::vector<float> vectors;
  uint64_t seed = 1;
  int shots = 2;
  std::string source;
};
BenchVectors BenchDistractorVectors(const std::optional<std::filesystem::path>& features,
                                    int64_t count, int shots, uint64_t seed, int jobs,
                                    const std::function<void(const std::string&)>& log,
                                    const std::function<void(int64_t, int64_t)>& progress);

// "1.23 0.98 0.51" of /proc/loadavg, and as text.
std::vector<double> LoadAverage();
std::string LoadText(const std::vector<double>& load);

// A whole (small) text file; empty when it cannot be read.
std::string ReadText(const std::filesystem::path& path);

double Median(std::vector<double> v);  // 0 for none
double Max(const std::vector<double>& v);
nlohmann::json Stats(const std::vector<double>& v);  // {median, max, n}

// The first `per_firearm` scans (by file name) of the first `firearms` Fadul
// slides with that many (data/cartridge/fadul, truth.csv columns path and
// source). bien::Error naming the folder when there are too few.
std::vector<std::vector<std::filesystem::path>> FadulShots(const std::filesystem::path& data,
                                                           int per_firearm, int firearms);

// The query firearms' scans, `per_firearm` per firearm: Fadul slides'
// (FadulShots) with `data`, else synthetic X3P scans (bien synth, seed 2026,
// 545 px, as a Fadul scan) written to `dir`; with where they came from.
struct QueryShots {
  std::vector<std::vector<std::filesystem::path>> shots;
  std::string source;
};
QueryShots BenchQueryShots(const std::optional<std::filesystem::path>& data, int per_firearm,
                           int firearms, const std::filesystem::path& dir);

// Encoded CMC features (with `cmc`) of `count` synthetic scans (545 px X3P
// scans at 6.25 um, seed 7919: other firearms than the benchmarks' queries),
// written to dir/1.cmcf, 2.cmcf, ... on `jobs` threads. The CMC cost of a
// candidate does not depend on which file it reads, so distractors linked to
// these are compared for real.
std::vector<std::filesystem::path> MakeFeaturePool(const std::filesystem::path& dir,
                                                   const CmcOptions& cmc, int count, int jobs);

// Hard links, as the cached fine features of `added` (bench distractors of
// the node at `node_dir`), to `pool`: distractor i (counted from `first`)
// links to pool[i % size].
void LinkFeaturePool(const std::filesystem::path& node_dir, const std::vector<AddResult>& added,
                     const std::vector<std::filesystem::path>& pool, size_t first);

}  // namespace bien::cli

// `bien compare`, `bien eval` and `bien bench compare`: breech-face comparison
// of two scans, accuracy on a labelled folder, and comparison speed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "tools/commands.h"

namespace bien::cli {

// The name under which a node keeps its known-non-match scores of the
// breech-face comparator; a new comparator version starts a new distribution.
inline constexpr const char* kCmcMethod = "cmc-v1";

struct CompareArgs {
  std::string a;  // a scan file, or a stored exhibit (CASE/EXHIBIT or #ID)
  std::string b;
  std::optional<std::filesystem::path> png;
  std::optional<double> pixel_size_um;  // for 2D image files
};
int CmdCompare(Context& ctx, const CompareArgs& args);

struct EvalArgs {
  std::filesystem::path truth;                     // DIR/truth.csv (columns path, source)
  std::optional<uint64_t> rotate_random;           // seed: rotate every scan at random first
  int jobs = 0;                                    // 0 = all cores
  std::optional<double> pixel_size_um;             // for 2D image files
  std::optional<std::filesystem::path> pairs_csv;  // every pair's scores and registration
};
int CmdEval(Context& ctx, const EvalArgs& args);

struct CalibrateArgs {
  int max_pairs = 5000;  // at most this many different-firearm pairs are compared
  int jobs = 0;          // 0 = all cores
};
// Compares stored cartridge cases of different firearms (exhibits whose
// firearm references differ) and records the scores as the node's
// known-non-match distribution (docs/SCORES.md).
int CmdCalibrate(Context& ctx, const CalibrateArgs& args);

struct BenchCompareArgs {
  std::optional<std::filesystem::path> data;  // real data folder (default as bench ingest)
  int pairs = 100;                            // comparisons to time
};
int CmdBenchCompare(Context& ctx, const BenchCompareArgs& args);

}  // namespace bien::cli

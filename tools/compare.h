// `bien compare`, `bien eval` and `bien bench compare`: breech-face comparison
// of two scans, accuracy on a labelled folder, and comparison speed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "imaging/preprocess.h"
#include "imaging/surface.h"
#include "storage/store.h"
#include "tools/commands.h"

namespace bien::cli {

// The name under which a node keeps its known-non-match scores of the
// breech-face comparator; a new comparator version starts a new distribution.
inline constexpr const char* kCmcMethod = "cmc-v1";

// A scan to compare: its label in messages, the SHA-256 of its original and
// the surface as read.
struct Operand {
  std::string label;
  std::string sha256;
  Surface surface;
};
// Reads a stored original (`object`, the store's ObjectPath of scan.sha256)
// the way it was read at ingest: stored spacing and height scale. Checks the
// hash. Touches no Store, so it can run on any thread.
Operand ReadStoredScan(const std::filesystem::path& object, const ScanRecord& scan,
                       const std::string& label);
// The breech-face preprocessing every comparison uses (default options).
Surface Preprocessed(const Operand& op, PreprocessReport* report);

struct CompareArgs {
  std::string a;  // a scan file, or a stored exhibit (CASE/EXHIBIT or #ID)
  std::string b;
  std::optional<std::filesystem::path> png;
  std::optional<double> pixel_size_um;  // for 2D image files
  // auto (stored bullets are compared as bullets, files as cartridge cases),
  // cartridge_case, land (two land scan files) or bullet (tools/bullet_commands.h).
  std::string kind = "auto";
  std::string land_across = "auto";  // lands: which scan axis runs across the land (auto, x, y)
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

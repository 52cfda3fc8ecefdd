// Bullets in the `bien` command (docs/BULLETS.md): `bien compare` of two
// lands or two bullets, `bien eval` of a bullet truth.csv (columns path,
// source, bullet, land, land_id), and `bien bench bullets`.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "matching/bullet.h"
#include "storage/store.h"
#include "tools/commands.h"
#include "tools/compare.h"

namespace bien::cli {

// The name of the bullet comparator and its score (see matching/bullet.h).
inline constexpr const char* kBulletMethod = "bullet-land-v1";

// One land scan of a stored bullet, with where its original lies.
struct StoredLandScan {
  ScanRecord scan;
  std::filesystem::path object;
  std::string label;  // "CASE/EXHIBIT land N"
};
// The land scans of a stored bullet exhibit, by land. Throws bien::Error
// naming the exhibit when it is not a bullet, has no scans, a scan without a
// land number or two scans of one land. `*lands` = the exhibit's number of
// lands (its class characteristic, else the highest land scanned).
std::vector<StoredLandScan> StoredLandScans(const Store& store, const ExhibitRecord& exhibit,
                                            int* lands);
// Reads one land's original (hash checked), extracts its signature (default
// LandOptions) and prepares it; no store access, so it may run on any thread.
// Throws bien::Error naming the land.
std::shared_ptr<const PreparedLand> PrepareStoredLand(const StoredLandScan& land);

// True when `bien compare` should compare lands or bullets: --kind land or
// bullet, or (with --kind auto) an operand that is a stored bullet exhibit.
bool IsBulletCompare(const Context& ctx, const CompareArgs& args);
// Two lands (--kind land: each operand one land scan file) or two bullets
// (each a stored bullet exhibit, or land scan files in land order separated
// by commas, an empty entry for a land not scanned).
int CmdCompareBullets(Context& ctx, const CompareArgs& args);

// True when the truth file has a land_id column (a bullet set).
bool IsBulletTruth(const std::filesystem::path& truth);
int CmdEvalBullets(Context& ctx, const EvalArgs& args);

struct BenchBulletsArgs {
  std::optional<std::filesystem::path> data;  // real data folder (default as bench ingest)
  int repeat = 200;                           // passes over the timed comparisons
};
// Signature extraction per land scan, land-to-land and 6 x 6 bullet-to-bullet
// comparison, one thread, on Hamby 252 (synthetic lands when it is absent).
int CmdBenchBullets(Context& ctx, const BenchBulletsArgs& args);

}  // namespace bien::cli

// The compact fine-comparison (CMC) features of stored scans, cached beside
// the database so a search compares its candidates without re-reading and
// re-preprocessing their originals (docs/SEARCH.md, "Fine features").
//
//   NODE/features/<12 hex digits>/KEY          the full key, for people
//   NODE/features/<12 hex digits>/ab/cdef...   one scan's features, named by
//                                              the SHA-256 of its original
//
// The folder is named by the SHA-256 of the key: CmcFeaturesKey (CMC
// resolution) and PreprocessKey (the preprocessing). A change of either
// starts a new folder, so features of another version are never used.
// The cache holds derived data only: a missing, damaged or foreign file is
// recomputed from the stored original (whose hash ReadStoredScan checks) and
// rewritten; deleting the folder is always safe. Files are written
// atomically; a failed write (a full disk) costs speed, never a result.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include "matching/cmc.h"
#include "storage/store.h"

namespace bien::cli {

class FineFeatures {
 public:
  explicit FineFeatures(const std::filesystem::path& node_dir, const CmcOptions& options = {});

  const std::filesystem::path& folder() const { return folder_; }
  const CmcOptions& options() const { return options_; }
  std::filesystem::path PathFor(const std::string& sha256) const;

  // The prepared features of a stored 3D scan: from the cache when present
  // and sound, else computed from its original `object` (read, preprocessed
  // as every comparison is, prepared) and cached. Thread-safe. Throws
  // bien::Error naming `label` when the original cannot be read or gives no
  // usable breech face.
  std::shared_ptr<const CmcPrepared> Get(const ScanRecord& scan,
                                         const std::filesystem::path& object,
                                         const std::string& label);
  // Caches features (EncodeCmcFeatures with this cache's options) of the
  // scan whose original has this SHA-256 (ingest). Never throws for a failed
  // write: it is counted.
  void Put(const std::string& sha256, const std::string& encoded);

  // Since construction: features read from the cache, computed, and cache
  // writes that failed.
  int hits() const { return hits_; }
  int computed() const { return computed_; }
  int write_failures() const { return write_failures_; }

 private:
  CmcOptions options_;
  std::filesystem::path folder_;
  std::string key_;
  std::atomic<int> hits_{0};
  std::atomic<int> computed_{0};
  std::atomic<int> write_failures_{0};
};

}  // namespace bien::cli

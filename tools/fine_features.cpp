#include "tools/fine_features.h"

#include <fstream>
#include <iterator>
#include <system_error>

#include "core/error.h"
#include "core/file.h"
#include "core/hash.h"
#include "imaging/preprocess.h"
#include "tools/compare.h"

namespace bien::cli {
namespace {

// The whole file, or nullopt when it cannot be read.
std::optional<std::string> ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return std::nullopt;
  return bytes;
}

}  // namespace

FineFeatures::FineFeatures(const std::filesystem::path& node_dir, const CmcOptions& options)
    : options_(options), key_(CmcFeaturesKey(options) + " | " + PreprocessKey()) {
  options_.Check();
  folder_ = node_dir / "features" / Sha256Hex(key_).substr(0, 12);
}

std::filesystem::path FineFeatures::PathFor(const std::string& sha256) const {
  if (sha256.size() != 64) throw Error("not a SHA-256: \"" + sha256 + "\"");
  return folder_ / sha256.substr(0, 2) / (sha256.substr(2) + ".cmcf");
}

std::shared_ptr<const CmcPrepared> FineFeatures::Get(const ScanRecord& scan,
                                                     const std::filesystem::path& object,
                                                     const std::string& label) {
  const std::filesystem::path path = PathFor(scan.sha256);
  if (const auto bytes = ReadAll(path)) {
    try {
      auto prepared = DecodeCmcFeatures(*bytes, label, options_);
      ++hits_;
      return prepared;
    } catch (const Error&) {
      // Damaged or foreign: recomputed and rewritten below.
    }
  }
  const Operand op = ReadStoredScan(object, scan, label);
  auto prepared = PrepareCmc(Preprocessed(op, nullptr), label, options_);
  ++computed_;
  Put(scan.sha256, EncodeCmcFeatures(*prepared, options_));
  return prepared;
}

void FineFeatures::Put(const std::string& sha256, const std::string& encoded) {
  try {
    const std::filesystem::path path = PathFor(sha256);
    std::filesystem::create_directories(path.parent_path());
    const std::filesystem::path key_file = folder_ / "KEY";
    std::error_code ec;
    if (!std::filesystem::exists(key_file, ec)) {
      WriteFileAtomically(key_file, key_ + "\n", "feature cache key", Durability::kCache);
    }
    // Not synced: a file a crash leaves torn fails its CRC and is recomputed.
    WriteFileAtomically(path, encoded, "cached CMC features", Durability::kCache);
  } catch (const std::exception&) {
    ++write_failures_;
  }
}

}  // namespace bien::cli

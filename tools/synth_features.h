// Synthetic coarse descriptors for search benchmarks (`bien synth --features`,
// `bien bench search`): made by SynthDescriptors (matching/descriptor.h) in
// parallel, deterministically, and kept in a checksummed binary file.
//
// File format (version 1, little-endian):
//   magic       8 bytes  "BIENFEAT"
//   version     u32      2 (version 1, without the model key, held vectors of
//                        the first synthetic model and is refused)
//   dim         u32      floats per vector
//   count       u64      vectors (exhibits)
//   shots       u32      shots per firearm: vector i is shot i % shots of
//                        firearm i / shots (the last firearm may be partial)
//   key_length  u32      bytes of the descriptor key that follows (1..4096)
//   seed        u64      SynthDescriptorOptions::seed
//   key         key_length bytes (DescriptorKey of the vectors)
//   model_length u32     bytes of the synthetic model key that follows (1..4096)
//   model       model_length bytes (SynthDescriptorKey of the generator)
//   vectors     count * dim float32, firearm-major
//   sha256      64 bytes: lower-case hex SHA-256 of everything before it
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <span>
#include <string>
#include <vector>

namespace bien::cli {

struct SynthFeatureOptions {
  int64_t count = 0;   // vectors (exhibits) to make; >= 1
  int shots = 2;       // shots per firearm (so each exhibit has shots - 1 mates); >= 1
  uint64_t seed = 1;   // SynthDescriptorOptions::seed
  int jobs = 0;        // threads; 0 = every core. The output does not depend on it.
  void Check() const;  // throws bien::Error on a bad value
};

// Called with (vectors done, total) now and then.
using FeatureProgress = std::function<void(int64_t done, int64_t total)>;

// A progress callback that redraws "WHAT: done / total (rate/s)" on `err`
// (carriage return, newline when done).
FeatureProgress ProgressLine(std::ostream& err, const std::string& what);

// Makes the descriptors of vectors 0..count-1 (default descriptor and synth
// options but the seed) and hands them to `sink` in order, in chunks of whole
// firearms (the last chunk may end within a firearm): sink(first vector
// index, floats). Each firearm's vectors depend only on (seed, firearm
// index). Worker exceptions are rethrown here.
void GenerateSynthFeatures(
    const SynthFeatureOptions& options,
    const std::function<void(int64_t first, std::span<const float> vectors)>& sink,
    const FeatureProgress& progress = {});

// The same, into memory (count * dim floats).
std::vector<float> MakeSynthFeatures(const SynthFeatureOptions& options,
                                     const FeatureProgress& progress = {});

// Streams the vectors into a temporary file beside `path`, syncs it and
// renames it into place. Throws bien::Error naming the path on failure (the
// temporary file is removed).
void WriteSynthFeatureFile(const std::filesystem::path& path, const SynthFeatureOptions& options,
                           const FeatureProgress& progress = {});

struct FeatureFile {
  std::string key;    // descriptor key
  std::string model;  // synthetic model key (SynthDescriptorKey)
  int dim = 0;
  int64_t count = 0;  // vectors in the file
  int shots = 0;
  uint64_t seed = 0;
  std::vector<float> vectors;  // the first `limit` vectors read, row-major
};

// Reads the header and the first `limit` vectors (all when limit < 0) after
// checking the magic, the version, that the lengths fit the file (truncated
// or trailing bytes), and the SHA-256 over the whole file (damage). When
// `expected_key` is non-empty the file's descriptor key must equal it, and
// likewise its synthetic model key `expected_model`. Throws bien::Error
// "PATH: problem" for any of these, or when the file holds fewer than `limit`
// vectors.
FeatureFile ReadSynthFeatureFile(const std::filesystem::path& path, int64_t limit = -1,
                                 const std::string& expected_key = "",
                                 const std::string& expected_model = "");

// For the benchmarks: the first `limit` vectors of a file made by this bien's
// default descriptor and synthetic model (both keys must match) whose vectors
// have the descriptor's dimension; bien::Error naming the path otherwise.
FeatureFile ReadBenchFeatures(const std::filesystem::path& path, int64_t limit);

}  // namespace bien::cli

// Compressed ring spectra ("brc-v1"): a rotation-equivariant code of a scan's
// ring spectra (matching/descriptor.h, brs-v1) small enough to keep for every
// exhibit of a partition in memory and to score against a query at every
// rotation, so that a first screen over the whole partition can find mates
// the descriptor's cosine ranks too low for the ring stage's pool.
//
// A rotation of the case multiplies harmonic k of every ring by the same
// exp(-i k a). Each harmonic's column of rings (21 complex values) is
// therefore projected on its own orthonormal complex basis, the `components`
// leading eigenvectors of that harmonic's Hermitian ring covariance over a
// training sample (a per-harmonic complex PCA): the projection commutes with
// the rotation, and the best-rotation correlation of two codes approximates
// that of the full spectra (the energy the basis leaves out is lost). The
// coefficients are quantised to signed bytes with one scale per code.
//
// Measured (docs/ACCURACY.md "Compressed ring spectra"): among 10^5
// synthetic exhibits, 6 components per harmonic (540 bytes + a 4-byte scale)
// at 128 rotations ranked the mate in the top 500 for 0.988 of the queries,
// as the full spectra at the found centre do, against the descriptor
// cosine's 0.967, at about 0.7 us per candidate on 2 threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "matching/descriptor.h"
#include "matching/index.h"

namespace bien {

struct RingCodecOptions {
  int components = 6;   // basis vectors per harmonic (at most the number of rings)
  int rotations = 128;  // rotations scored (a power of two above 2 x max_harmonic)
  // Throws bien::Error ("ring codec options: ...") on a bad value for these
  // ring spectra.
  void Check(const RingSpectraOptions& spectra) const;
};

// A scan's code: `bytes` signed coefficients (harmonic-major, component,
// real and imaginary) times `scale`. An empty spectra (a scan too sparse for
// them) has scale 0 and scores 0 against everything.
struct RingCode {
  std::vector<int8_t> bytes;
  float scale = 0;
};

class RingCodec {
 public:
  // Trains the per-harmonic bases from the non-empty spectra of `sample`
  // (each RingSpectraDim(spectra) floats; empty ones are skipped).
  // Deterministic for the same sample in the same order. Throws bien::Error
  // when a spectra has another length, or fewer than 2 x components
  // non-empty ones are given.
  static RingCodec Train(std::span<const std::vector<float>* const> sample,
                         const RingSpectraOptions& spectra = {},
                         const RingCodecOptions& options = {});

  // "brc-v1 c=6 rot=128 " + RingSpectraKey: codes of another key must never
  // be mixed with these (and codes of another basis neither: a basis lives
  // with its codes, in one RingCodeIndex).
  std::string Key() const;
  static std::string KeyFor(const RingSpectraOptions& spectra = {},
                            const RingCodecOptions& options = {});
  // Bytes per code (2 x harmonics x components).
  int code_bytes() const { return nk_ * components_ * 2; }
  int components() const { return components_; }
  // Share of the training sample's energy the basis keeps (0..1).
  double kept_energy() const { return kept_energy_; }

  // The code of one scan's spectra. Throws bien::Error on a wrong length.
  RingCode Encode(const std::vector<float>& spectra) const;
  // Codes of many, one after the other (n * code_bytes() bytes) and their
  // scales, on `jobs` threads.
  void EncodeAll(std::span<const std::vector<float>* const> spectra, int jobs,
                 std::vector<int8_t>& bytes, std::vector<float>& scales) const;

  // A query's projected spectra (unquantised).
  std::vector<float> Project(const std::vector<float>& spectra) const;
  // The best-rotation correlation of `query` (Project) with each of the
  // `scales.size()` codes stored one after the other in `bytes`, into `out`,
  // on `jobs` threads. Scores lie in about [-1, 1] (1: the same scan, less
  // the energy the basis leaves out).
  void ScoreAll(const std::vector<float>& query, std::span<const int8_t> bytes,
                std::span<const float> scales, std::span<float> out, int jobs) const;
  float Score(const std::vector<float>& query, const RingCode& code) const;

 private:
  friend class RingCodeIndex;  // saves and loads the basis
  RingCodec() = default;
  RingSpectraOptions spectra_;
  int rings_ = 0;
  int nk_ = 0;  // harmonics
  int components_ = 0;
  int rotations_ = 0;
  double kept_energy_ = 0;
  // basis_[(k * components + j) * rings + r]: component j of harmonic k,
  // ring r, as (re, im) pairs (2 floats each).
  std::vector<float> basis_;
};

// How many spectra a RingCodeIndex basis is trained on at most (evenly
// spread over the partition): 20 000 took 0.7 s and kept 0.93 of the energy
// with 6 components (docs/ACCURACY.md "Compressed ring spectra").
inline constexpr int64_t kRingCodeTrainSample = 20000;

// A partition's compressed ring screen: the codes of its scans keyed by scan
// id, with the basis that made them, saved beside the partition's vector
// index. Every method may be called from any thread (Add and Remove take an
// exclusive lock, the others a shared one).
class RingCodeIndex {
 public:
  // An empty index of codes made by `codec`, whose basis was trained on a
  // partition of `trained_on` scans.
  RingCodeIndex(RingCodec codec, int64_t trained_on);
  // Trains the basis on up to kRingCodeTrainSample spectra evenly spread
  // over `spectra` and encodes them all (`jobs` threads). Throws bien::Error
  // as RingCodec::Train and on a repeated id or a size mismatch.
  static std::unique_ptr<RingCodeIndex> Build(std::span<const int64_t> ids,
                                              std::span<const std::vector<float>* const> spectra,
                                              int jobs, const RingSpectraOptions& options = {},
                                              const RingCodecOptions& codec = {});

  // Adds the codes of these spectra; an id already held is replaced. A
  // repeated id, a size mismatch or a wrong length throws bien::Error and
  // leaves the index unchanged.
  void Add(std::span<const int64_t> ids, std::span<const std::vector<float>* const> spectra,
           int jobs);
  size_t Remove(std::span<const int64_t> ids);  // how many were held

  // The k best codes by their best-rotation correlation with the query's
  // spectra (found centre), best first (ties: lower id first), on `jobs`
  // threads. Throws bien::Error on a wrong length or k < 1.
  std::vector<SearchHit> Search(const std::vector<float>& spectra, int k, int jobs) const;

  // The best-rotation correlation of the query's spectra (found centre) with
  // the code of each of `ids`, in order (nullopt: no code held), on `jobs`
  // threads: the ring stage's first score where the codes are at hand.
  // Throws bien::Error on a wrong length.
  std::vector<std::optional<float>> Scores(const std::vector<float>& spectra,
                                           std::span<const int64_t> ids, int jobs) const;

  std::vector<int64_t> Ids() const;  // sorted
  int64_t size() const;
  int64_t trained_on() const { return trained_on_; }
  // The partition grew or shrank fourfold since the basis was trained.
  bool ShouldRetrain() const;
  const RingCodec& codec() const { return codec_; }
  std::string key() const { return codec_.Key(); }
  size_t MemoryBytes() const;

  // Writes atomically (temporary file + rename): header (magic, version,
  // key, count, trained_on, id fingerprint), basis, ids, scales, codes and a
  // SHA-256 over everything before it. Throws bien::Error naming the path.
  void Save(const std::filesystem::path& path) const;
  struct LoadResult {
    std::unique_ptr<RingCodeIndex> index;  // null when refused
    std::string reason;                    // why refused; empty on success
    std::string id_fingerprint;            // from the header, when it could be read
  };
  // Loads after checking magic, version, lengths, the SHA-256 and the key;
  // never throws for a bad file (the reason says what is wrong).
  static LoadResult Load(const std::filesystem::path& path, const std::string& expected_key);

 private:
  RingCodec codec_;
  int64_t trained_on_ = 0;
  mutable std::shared_mutex mutex_;
  std::vector<int64_t> ids_;  // position -> id
  std::unordered_map<int64_t, size_t> position_;
  std::vector<int8_t> bytes_;  // code_bytes() per position
  std::vector<float> scales_;
};

}  // namespace bien

// The vector index behind the coarse search: FAISS behind the project's own
// type, one index per partition (class characteristics), keyed by our int64
// ids (scan or exhibit ids).
//
// Vectors are coarse descriptors of dimension d, L2-normalised by the caller,
// so the inner product the index ranks by is the cosine similarity. Every
// index carries the `descriptor_key` (descriptor version and parameters, e.g.
// "bfd-v1 r32 a64 pca128") of the vectors it holds: a saved index whose key
// differs from the running descriptor's is stale and is rebuilt.
//
// Kinds. Measured with BenchIndex on this project's 2-core machine (Debian
// FAISS 1.7.3, OpenBLAS, 2 threads, machine shared and loaded), clustered
// synthetic vectors, 200 single queries, nprobe 16, k = 100:
//   10^6 x 128   kind      build  bytes/vec  median ms  recall@10  @100
//                exact        -       ~600      296        1       1
//                ivf_flat   80 s       566     0.77     0.989   0.959
//                ivf_sq8    66 s       182     0.75     0.974   0.953
//                ivf_pq32   98 s        86     0.35     0.686   0.636
//   10^6 x 256   exact        -      ~1100      321        1       1
//                ivf_flat   99 s      1080     1.84     0.997   0.992
//                ivf_sq8    55 s       312     1.46     0.982   0.982
//                ivf_pq32  134 s        88     0.62     0.523   0.400
// (the true mates were in every approximate top-10.)
//  - exact: a flat inner-product index; every query scans every vector. Used
//    below `exact_below` vectors, where it is fast enough and needs no
//    training (10^4 x 256: 1.3 ms per query).
//  - ivf_flat: k-means coarse quantiser with `nlist` lists, vectors stored
//    uncompressed; a query scans `nprobe` lists. d * 4 + ~50 bytes per
//    vector; the best recall at the same speed.
//  - ivf_sq8 (the default approximate kind until binary_sq8): as ivf_flat
//    with 8-bit scalar-quantised vectors (d + ~50 bytes), recall a little
//    lower on clustered data. At 10^6 x 1024 (docs/PERFORMANCE.md, "Search"):
//    1093 bytes per exhibit, 18 ms median per query at nprobe 16 (Debian's
//    FAISS scans SQ8 codes without AVX2). The real descriptors have no
//    cluster structure (mates at cosine 0.49 +- 0.16, non-mates 0.02 +-
//    0.07), so the lists split them badly: see binary_sq8.
//  - ivf_pq: product-quantised codes (`pq_bytes` + ~50 bytes); smallest, but
//    recall@10 below 0.7 without re-ranking.
//  - binary_sq8 (default approximate kind): two flat stages, no lists, no
//    k-means. Stage 1: the sign bits of the d floats (d / 8 bytes in two
//    halves, the first and the second d / 2 dimensions; d must be a
//    multiple of 16), the R = max(k * rerank_factor, rerank_min) nearest in
//    Hamming distance, scanned exhaustively (the first halves of all, the
//    second halves of the R * prefilter_factor nearest by the first; the
//    bits counted by matching/hamming.h with AVX-512 or POPCNT where the CPU
//    has them); stage 2: those R re-ranked by the inner product with their
//    8-bit scalar-quantised vectors (d bytes), which is the score
//    returned. Build trains only the SQ8 ranges (a sample of 65 536).
//    `bien bench search --kind`, 10^5 sbf-v2 synthetic bfd-v2 descriptors x
//    1024, 200 queries with one mate each, single queries on one thread,
//    k = 100, before the own Hamming scan (2026-11-23, machine loaded,
//    timings noisy; docs/PERFORMANCE.md "binary_sq8 vs ivf_sq8 at 10^5"):
//                kind              build  bytes/vec  median ms  mate in top 10 / 100
//                exact               -      ~4200      136        0.910 / 0.945
//                ivf_sq8 nprobe 16  9.6 s    1120      3.0        0.710 / 0.730
//                ivf_sq8 nprobe 64  9.4 s    1120      9.3        0.815 / 0.835
//                binary_sq8 R = 500 1.1 s    1247      4.7        0.920 / 0.960
//    (2 x 10^4: binary_sq8 1.5 ms and exact's recall, ivf_sq8 1.2 ms and 0.73 /
//    0.735 against 0.925 / 0.955.) The prototype measured R = 1000 at 20 %
//    more time for the same recall, and ranked real Fadul queries' mates
//    among the 10^5 as exact search does. Overlap with the exact top 100 is
//    lower (0.47 at 10^5): beyond the mates that list is noise-level
//    non-mates. A query scans every first half (d / 16 bytes per vector), so
//    its time grows linearly with the index: at 10^6 x 1024 (quiet machine,
//    the scan on 2 threads) 4.1 ms median (37 ms with FAISS's own binary
//    index, which counts bits without POPCNT), build 7.3 s, 1244 bytes per
//    vector, mate in top 10 / 100 0.810 / 0.855 against exact's 0.795 /
//    0.855 at 1.36 s per query; 1.0 ms at 10^5.
// HNSW is not offered: FAISS cannot remove vectors from an HNSW graph, and at
// 10^5 x 128 HNSW32 (efConstruction 40, efSearch 64) lost on every count:
// build 12.4 s vs 1.1 s, 0.41 vs 0.22 ms per query, recall@10 0.973 vs 0.993,
// 784 vs 572 bytes per vector.
//
// Training (k-means for the lists, the quantiser's codebooks, binary_sq8's
// SQ8 ranges) happens only in Build() and Optimize(), never in Add(): Add()
// to an approximate index only assigns the new vectors to the existing lists
// (binary_sq8: encodes them with the existing ranges).
//
// Threads: every method of VectorIndex may be called from any thread. Add,
// Remove and Optimize take an exclusive lock; Search, SearchBatch, Save and
// the accessors a shared one, so searches run concurrently with each other
// and never see a half-done Add. Each call uses at most
// `VectorIndexOptions::search_threads` (resp. `build_threads`) OpenMP threads
// of its own: a caller that runs queries on its own thread pool keeps
// search_threads = 1 so that one query does not grab every core. A single
// query, a Remove and any call on fewer than 4M floats run on the calling
// thread alone. Process environment, outside this library's control: FAISS
// uses BLAS for exact batches of 20 or more queries and OpenBLAS sizes its own
// thread pool from OPENBLAS_NUM_THREADS; libgomp's idle threads spin unless
// OMP_WAIT_POLICY=passive, which on a busy machine made small parallel
// regions 10x slower: run the node with both set.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "matching/hamming.h"

namespace bien {

// The numeric values are saved in index files: append, never renumber.
enum class IndexKind { kExact, kIvfFlat, kIvfSq8, kIvfPq, kBinarySq8 };

// binary_sq8 needs a dimension that is a multiple of this (two halves of
// whole bytes of sign bits).
inline constexpr int kBinarySq8DimMultiple = 16;

// "exact", "ivf_flat", "ivf_sq8", "ivf_pq", "binary_sq8".
std::string_view IndexKindName(IndexKind kind);
// The kind of that name; nullopt for an unknown name.
std::optional<IndexKind> ParseIndexKind(std::string_view name);

struct VectorIndexOptions {
  // Build() makes an exact index below this many vectors, an approximate one
  // from it on. Exact search at 2 * 10^4 vectors: 1.2 ms (d = 128), 2.4 ms
  // (d = 256) per query; 14 / 50 ms at 10^5. With d = 1024 (bfd-v2) exact
  // took 7.5 ms at 10^4 where binary_sq8 took 0.13 ms and found the same
  // mates (0.95 / 0.98 in the top 10 / 100; 0.23 ms and 0.93 / 0.955
  // against exact's 27 ms and 0.925 / 0.955 at 2 * 10^4): below 5000 the
  // SQ8 ranges would be trained on few vectors for little gain.
  int64_t exact_below = 5000;
  // Chosen by measurement (see the kinds above): binary_sq8 finds the true
  // mates as exact search does; ivf_sq8 lost a third of them at nprobe 16.
  IndexKind approximate_kind = IndexKind::kBinarySq8;
  // Lists of an approximate index; 0: automatic, 4 * sqrt(n) rounded to a
  // power of two, at most n / train_points_per_list.
  int nlist = 0;
  int nprobe = 16;    // lists a query visits (default for Search without override)
  int pq_bytes = 32;  // ivf_pq: bytes per vector code; must divide d
  // binary_sq8: a query re-ranks the max(k * rerank_factor, rerank_min)
  // nearest codes in Hamming distance (at most the index size) by their SQ8
  // inner product. At 10^5 x 1024 R = 500 found the mates as exact search
  // did; R = 1000 cost 20 % more time for the same recall.
  int rerank_factor = 5;
  int rerank_min = 500;
  // binary_sq8: with more than R * prefilter_factor codes (R as above), a
  // query first ranks every code by the sign bits of the first half of the
  // dimensions alone (half the bytes to read) and completes the distance
  // only for the nearest (at least R * prefilter_factor, all at the cut
  // distance). 0: every code's whole distance. At 10^6 sbf-v2 descriptors x
  // 1024 a throwaway prototype kept every mate of the whole-code top 500
  // with 20 000 heads, 2 of 173 fewer with 10 000; at 10^5 20 000 were
  // needed. 64 (32 000 at R = 500) keeps a margin.
  int prefilter_factor = 64;
  // binary_sq8: how Hamming distances are counted (matching/hamming.h);
  // unset: the fastest kernel this CPU has. Set only to measure the others.
  std::optional<HammingKernel> hamming_kernel;
  // k-means training sample: nlist * train_points_per_list vectors drawn
  // from the data (>= 39, FAISS's minimum for a stable clustering).
  int train_points_per_list = 40;
  int train_iterations = 10;       // k-means iterations
  uint64_t train_seed = 20240611;  // sample and k-means seed (deterministic builds)
  // OpenMP threads one Search / SearchBatch call may use. 1 suits callers
  // that parallelise over queries themselves. A batch spreads its queries
  // over them; a single query uses one thread, except a binary_sq8 query on
  // 2^16 codes or more, whose Hamming scan is split over them.
  int search_threads = 1;
  int build_threads = 2;  // OpenMP threads of Build / Optimize / Add
  void Check() const;     // throws bien::Error on a bad value
};

struct SearchHit {
  int64_t id = 0;
  float score = 0;  // inner product (cosine similarity for unit vectors)
};

// Per-call search settings (never stored in the shared index).
struct SearchParams {
  int nprobe = 0;  // 0: the index options' nprobe; ignored by exact and binary_sq8
};

// A SHA-256 (lower-case hex) over the sorted, de-duplicated ids, each as 8
// little-endian bytes. The saved index's header carries the fingerprint of
// its id set computed this way, so a caller compares it with its store's.
std::string IdFingerprint(std::span<const int64_t> ids);

class VectorIndex {
 public:
  // An empty exact index. Throws bien::Error on a bad option or dimension,
  // e.g. one that is not a multiple of 16 when approximate_kind is binary_sq8.
  VectorIndex(int dim, std::string descriptor_key, const VectorIndexOptions& options = {});
  ~VectorIndex();
  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;

  // Builds from n = ids.size() vectors (row-major, n * dim floats): exact
  // below options.exact_below, else options.approximate_kind (trained here).
  // Throws bien::Error on a size mismatch, a non-finite value or a repeated id.
  static std::unique_ptr<VectorIndex> Build(int dim, std::string descriptor_key,
                                            std::span<const int64_t> ids,
                                            std::span<const float> vectors,
                                            const VectorIndexOptions& options = {});

  // Adds vectors (ids.size() * dim floats). An id already in the index is
  // replaced (its old vector removed): re-ingesting a scan updates it. An id
  // repeated within one call, a size mismatch or a non-finite value throws
  // bien::Error and leaves the index unchanged.
  void Add(std::span<const int64_t> ids, std::span<const float> vectors);
  // Removes the id; false when it was not in the index.
  bool Remove(int64_t id);
  size_t Remove(std::span<const int64_t> ids);  // how many were present

  // The k best (highest inner product) ids, best first; fewer when the index
  // holds fewer or (approximate) the visited lists hold fewer. Throws
  // bien::Error when query.size() != dim, on a non-finite value or k < 1.
  std::vector<SearchHit> Search(std::span<const float> query, int k,
                                const SearchParams& params = {}) const;
  // queries: n * dim floats; one result list per query.
  std::vector<std::vector<SearchHit>> SearchBatch(std::span<const float> queries, int k,
                                                  const SearchParams& params = {}) const;

  // Re-trains when the index no longer suits its size: an exact index that
  // reached exact_below becomes approximate, an approximate one that grew (or
  // shrank) fourfold since training is re-trained (binary_sq8: its SQ8 ranges;
  // the sign codes are kept), one of another approximate kind than the
  // options' is rebuilt as that kind, one below exact_below / 2 becomes exact.
  // The vectors come from the index itself (exact and ivf_flat keep them
  // losslessly; sq8/pq decode approximations, so rebuild those from the store
  // when possible). Returns whether anything changed. Blocks Add and Search
  // while it runs.
  bool Optimize();
  bool ShouldOptimize() const;

  bool Contains(int64_t id) const;
  std::vector<int64_t> Ids() const;  // sorted
  std::string IdFingerprint() const;
  int64_t size() const;
  int dim() const { return dim_; }
  const std::string& descriptor_key() const { return descriptor_key_; }
  IndexKind kind() const;
  int nlist() const;  // 0 for an exact index
  // Estimated bytes held in memory (vectors/codes, ids, lists, id set).
  size_t MemoryBytes() const;
  const VectorIndexOptions& options() const { return options_; }

  // Writes the index atomically (temporary file + rename): a header (magic,
  // format version, kind, dim, count, descriptor_key, id fingerprint, payload
  // size), the FAISS payload and a SHA-256 over everything before it.
  // Throws bien::Error naming the path on failure.
  void Save(const std::filesystem::path& path) const;

  struct LoadResult {
    std::unique_ptr<VectorIndex> index;  // null when refused
    std::string reason;                  // why refused; empty on success
    std::string id_fingerprint;          // from the header, when it could be read
  };
  // Loads a saved index after checking, before FAISS sees a byte: that the
  // file exists, its magic and version, that its lengths fit the file (not
  // truncated), the SHA-256 (corruption), the descriptor key and the dim.
  // The payload is then decoded with FAISS, errors caught, and the result
  // checked against the header (kind, dim, count, metric, id fingerprint).
  // Never throws for a bad file: the reason says what is wrong, e.g.
  // "checksum mismatch (the file is corrupt)". The checksum detects damage,
  // not forgery: the index folder is as trusted as the node's store.
  static LoadResult Load(const std::filesystem::path& path, const std::string& expected_key,
                         int expected_dim, const VectorIndexOptions& options = {});

 private:
  struct Impl;
  VectorIndex(int dim, std::string descriptor_key, const VectorIndexOptions& options,
              std::unique_ptr<Impl> impl);
  // Trains (when approximate) and fills a new index body; no locking.
  static std::unique_ptr<Impl> BuildImpl(int dim, std::span<const int64_t> ids,
                                         std::span<const float> vectors,
                                         const VectorIndexOptions& options);
  void SearchBinarySq8(std::span<const float> queries, size_t n, int kk,
                       std::vector<std::vector<SearchHit>>& out) const;
  int dim_;
  std::string descriptor_key_;
  VectorIndexOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Hands batches of (ids, ids.size() * dim floats) to a rebuild.
using VectorFeed = std::function<void(std::span<const int64_t> ids, std::span<const float>)>;
// Calls the feed with every vector of a partition, in any number of batches.
using VectorSource = std::function<void(const VectorFeed& feed)>;

// The per-partition indexes of a node, saved in one folder (NODE/index) as
// <sanitised partition>-<12 hex of its SHA-256>.bidx. Thread-safe.
class PartitionIndexes {
 public:
  PartitionIndexes(std::filesystem::path folder, VectorIndexOptions options = {});

  struct Outcome {
    std::shared_ptr<VectorIndex> index;
    bool rebuilt = false;
    // Why it was rebuilt ("no saved index", "checksum mismatch (the file is
    // corrupt)", "descriptor key differs: ...", "id set differs from the
    // store"...); empty when loaded.
    std::string reason;
  };
  // Loads the partition's saved index when valid, for `key` and `dim`, and
  // holding exactly the ids whose fingerprint (IdFingerprint()) is
  // `expected_id_fingerprint`; otherwise rebuilds it from `source`, saves it
  // and says why. Throws bien::Error when the source's vectors are invalid
  // or the rebuilt index cannot be saved.
  Outcome LoadOrRebuild(const std::string& partition, const std::string& key, int dim,
                        const std::string& expected_id_fingerprint, const VectorSource& source);

  std::shared_ptr<VectorIndex> Get(const std::string& partition) const;  // null: not loaded
  void Save(const std::string& partition) const;  // throws bien::Error when not loaded
  std::filesystem::path PathFor(const std::string& partition) const;
  const std::filesystem::path& folder() const { return folder_; }

 private:
  std::filesystem::path folder_;
  VectorIndexOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<VectorIndex>> indexes_;
};

// Measurement of one configuration on clustered synthetic vectors: n / mates
// centres (drawn around 256 family means), each with `mates` noisy unit
// copies; each query is a further noisy copy of a random centre.
// The p-quantile (0..1) of `v` by the nearest rank; 0 for an empty `v`.
double Percentile(std::vector<double> v, double p);

struct IndexBenchResult {
  int64_t n = 0;
  int dim = 0;
  IndexKind kind = IndexKind::kExact;
  int nlist = 0;
  int nprobe = 0;
  double build_seconds = 0;     // Build(): training + adding
  double bytes_per_vector = 0;  // MemoryBytes() / n
  double query_ms_median = 0;   // one query at a time, one thread
  double query_ms_p99 = 0;
  double exact_query_ms_median = 0;  // same queries, exact index (the baseline)
  double recall_at_10 = 0;           // share of the exact top-10 found in the top-10
  double recall_at_100 = 0;          // share of the exact top-100 found in the top-100
  double mate_recall_at_10 = 0;      // share of the queried centre's mates in the top-10
  // Share of queries with at least one of their mates in the top-k of the
  // index measured (mate_found_*) and of the exact baseline (exact_mate_found_*):
  // their difference is what the approximate index loses.
  double mate_found_at_10 = 0;
  double mate_found_at_100 = 0;
  double exact_mate_found_at_10 = 0;
  double exact_mate_found_at_100 = 0;
  int queries = 0;
  // BenchIndexOn with pool > 0: each query's best `pool` ids from the index
  // measured (the candidates of a second coarse pass), and the median time of
  // those searches.
  std::vector<std::vector<int64_t>> pools;
  double pool_query_ms_median = 0;
};
// Throws bien::Error on bad arguments (n < mates, queries < 1...).
IndexBenchResult BenchIndex(int64_t n, int dim, int queries, uint64_t seed,
                            const VectorIndexOptions& options, int mates = 4);

// The same measurement on given vectors: builds an index of `vectors`
// (ids.size() * dim floats) with `options`, runs each of the
// mates.size() queries (queries: mates.size() * dim floats, none of them in
// the index) one at a time for its top 100, and scores it against the ids in
// mates[q] (the query's true mates, in the index) and against an exact index
// of the same vectors. With pool > 0 each query also asks the index for its
// best `pool` (IndexBenchResult::pools). Throws bien::Error on a size
// mismatch, no queries or a mate id that is not among `ids`.
IndexBenchResult BenchIndexOn(int dim, std::span<const int64_t> ids, std::span<const float> vectors,
                              std::span<const float> queries,
                              const std::vector<std::vector<int64_t>>& mates,
                              const VectorIndexOptions& options, int pool = 0);

}  // namespace bien

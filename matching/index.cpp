#include "matching/index.h"

#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <omp.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <shared_mutex>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>

#include "core/bytes.h"
#include "core/error.h"
#include "core/file.h"
#include "core/hash.h"
#include "matching/hamming.h"

namespace bien {
namespace {

using faiss_idx = faiss::Index::idx_t;
static_assert(sizeof(faiss_idx) == sizeof(int64_t));

// ---------------------------------------------------------------- helpers

// Limits OpenMP threads of FAISS calls made by this thread, restored after.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

// OpenMP threads for a call handling `floats` values: small work runs on
// the calling thread alone. A parallel region costs little on an idle machine
// but libgomp's spin-waiting threads make small regions 10-50x slower when
// the cores are busy (measured: the unit tests' small builds and adds took
// 10 s instead of 1 s on the loaded 2-core machine).
int ThreadsFor(size_t floats, int most) { return floats >= (size_t{1} << 22) ? most : 1; }

void CheckVectors(int dim, std::span<const int64_t> ids, std::span<const float> vectors,
                  const std::string& what) {
  if (vectors.size() != ids.size() * static_cast<size_t>(dim)) {
    throw Error(what + ": " + std::to_string(vectors.size()) + " floats for " +
                std::to_string(ids.size()) + " ids of dimension " + std::to_string(dim) +
                " (expected " + std::to_string(ids.size() * static_cast<size_t>(dim)) + ")");
  }
  for (size_t i = 0; i < vectors.size(); ++i) {
    if (!std::isfinite(vectors[i])) {
      throw Error(what + ": vector of id " + std::to_string(ids[i / dim]) +
                  " has a non-finite value at position " + std::to_string(i % dim));
    }
  }
  std::unordered_set<int64_t> seen;
  seen.reserve(ids.size());
  for (int64_t id : ids) {
    if (!seen.insert(id).second) {
      throw Error(what + ": id " + std::to_string(id) + " appears twice in one batch");
    }
  }
}

int RoundPow2(double x) {
  int p = 1;
  while (p < x && p < (1 << 20)) p *= 2;
  // Nearer of p/2 and p.
  if (p > 1 && (x - p / 2) < (p - x)) p /= 2;
  return p;
}

int ListsFor(int64_t n, const VectorIndexOptions& o) {
  int nlist = o.nlist > 0 ? o.nlist : RoundPow2(4.0 * std::sqrt(static_cast<double>(n)));
  const int64_t most = std::max<int64_t>(1, n / o.train_points_per_list);
  return static_cast<int>(std::min<int64_t>(nlist, most));
}

// binary_sq8 stage 1: bit j of byte b of a vector's code is set when
// v[first + 8b + j] > 0, for the `count` dimensions from `first` (a multiple
// of 8). n vectors into n * count / 8 bytes.
void SignCodes(const float* vectors, size_t n, int dim, int first, int count, uint8_t* out) {
  const size_t bytes = static_cast<size_t>(count) / 8;
  for (size_t i = 0; i < n; ++i) {
    const float* v = vectors + i * static_cast<size_t>(dim) + first;
    for (size_t b = 0; b < bytes; ++b) {
      uint8_t x = 0;
      for (int j = 0; j < 8; ++j) {
        if (v[8 * b + j] > 0) x |= static_cast<uint8_t>(1u << j);
      }
      out[i * bytes + b] = x;
    }
  }
}

void CheckBinaryDim(int dim) {
  if (dim % kBinarySq8DimMultiple != 0) {
    throw Error("vector index: kind binary_sq8 needs a dimension that is a multiple of " +
                std::to_string(kBinarySq8DimMultiple) + ", got " + std::to_string(dim) +
                " (choose another approximate_kind)");
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define BIEN_SQ8_AVX2 1
#endif

// binary_sq8 stage 2: the inner product of a query with SQ8-coded vectors as
// FAISS's IndexScalarQuantizer (QT_8bit, per-dimension ranges) decodes
// them, x_i = vmin_i + (c_i + 0.5) / 255 * vdiff_i, folded into one weight
// per dimension: q.x = base + sum_i w_i c_i. FAISS's own distance computer
// (Debian's build has no SIMD for it) took 1 ms for 500 codes of 1024.
class Sq8Scorer {
 public:
  Sq8Scorer(const faiss::IndexScalarQuantizer& sq, const float* query)
      : dim_(static_cast<size_t>(sq.d)), codes_(sq.codes.data()), weight_(dim_) {
    const float* vmin = sq.sq.trained.data();
    const float* vdiff = vmin + dim_;
    double base = 0;
    for (size_t i = 0; i < dim_; ++i) {
      weight_[i] = query[i] * vdiff[i] / 255.0f;
      base += static_cast<double>(query[i]) * (vmin[i] + 0.5f * vdiff[i] / 255.0f);
    }
    base_ = static_cast<float>(base);
  }
  // The codes of a query's candidates are scattered over the whole index:
  // fetch the next ones while one is scored.
  void Prefetch(int64_t position) const {
    const uint8_t* c = codes_ + static_cast<size_t>(position) * dim_;
    for (size_t b = 0; b < dim_; b += 64) __builtin_prefetch(c + b);
  }
  float operator()(int64_t position) const {
    const uint8_t* c = codes_ + static_cast<size_t>(position) * dim_;
#ifdef BIEN_SQ8_AVX2
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2) return base_ + DotAvx2(c);
#endif
    return base_ + DotPortable(c);
  }

 private:
  float DotPortable(const uint8_t* c) const {
    // Sixteen partial sums: without -ffast-math the compiler keeps the order
    // of a single sum's additions, one at a time; these it can vectorise.
    constexpr size_t kLanes = 16;
    float lane[kLanes] = {};
    size_t i = 0;
    for (; i + kLanes <= dim_; i += kLanes) {
      for (size_t j = 0; j < kLanes; ++j) lane[j] += weight_[i + j] * static_cast<float>(c[i + j]);
    }
    float sum = 0;
    for (; i < dim_; ++i) sum += weight_[i] * static_cast<float>(c[i]);
    for (float v : lane) sum += v;
    return sum;
  }
#ifdef BIEN_SQ8_AVX2
  __attribute__((target("avx2,fma"))) float DotAvx2(const uint8_t* c) const {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim_; i += 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i));
      const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
      const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)));
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(&weight_[i]), lo, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(&weight_[i + 8]), hi, acc1);
    }
    alignas(32) float lane[8];
    _mm256_store_ps(lane, _mm256_add_ps(acc0, acc1));
    float sum = 0;
    for (float v : lane) sum += v;
    for (; i < dim_; ++i) sum += weight_[i] * static_cast<float>(c[i]);
    return sum;
  }
#endif

  size_t dim_;
  const uint8_t* codes_;
  std::vector<float> weight_;
  float base_ = 0;
};

// binary_sq8: a single query's Hamming scan is split over search_threads
// from this many codes on (below, a parallel region costs more than it saves).
constexpr int64_t kParallelScanCodes = int64_t{1} << 16;

// binary_sq8: vectors its SQ8 ranges are trained on (a sample; the ranges are
// per-dimension minima and maxima, so more adds little).
constexpr int64_t kSq8TrainVectors = int64_t{1} << 16;

// A uniform sample of `want` of the n vectors (all when want >= n), in their
// order, drawn with `seed`: the same data gives the same sample.
std::vector<float> SampleVectors(std::span<const float> vectors, int64_t n, int64_t want, int dim,
                                 uint64_t seed) {
  std::vector<float> sample;
  if (want >= n) {
    sample.assign(vectors.begin(), vectors.end());
    return sample;
  }
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  // Partial Fisher-Yates: the first `want` entries are a uniform sample.
  for (int64_t i = 0; i < want; ++i) {
    std::uniform_int_distribution<int64_t> pick(i, n - 1);
    std::swap(order[i], order[pick(rng)]);
  }
  std::sort(order.begin(), order.begin() + want);
  sample.resize(static_cast<size_t>(want) * dim);
  for (int64_t i = 0; i < want; ++i) {
    std::copy_n(vectors.begin() + order[i] * dim, dim, sample.begin() + i * dim);
  }
  return sample;
}

// Unordered set footprint estimate (libstdc++: one node of value + next
// pointer + cached hash per element, one pointer per bucket).
size_t SetBytes(const std::unordered_set<int64_t>& s) {
  return s.size() * 32 + s.bucket_count() * sizeof(void*);
}

// FAISS I/O into / out of our own buffers (no extra copy of the payload).
struct StringWriter : faiss::IOWriter {
  std::string* out = nullptr;
  size_t operator()(const void* ptr, size_t size, size_t nitems) override {
    out->append(static_cast<const char*>(ptr), size * nitems);
    return nitems;
  }
};
struct SpanReader : faiss::IOReader {
  const char* data = nullptr;
  size_t size = 0;
  size_t at = 0;
  size_t operator()(void* ptr, size_t item, size_t nitems) override {
    if (item == 0) return 0;
    const size_t n = std::min(nitems, (size - at) / item);
    if (n > 0) std::memcpy(ptr, data + at, n * item);
    at += n * item;
    return n;
  }
};

// File layout (little-endian):
//   0   "BIENVIDX"
//   8   u32 format version (2; version 1 held binary_sq8's sign codes in one
//       block, and is refused so that the index is rebuilt)
//   12  u32 kind (IndexKind)
//   16  u32 dim
//   20  u32 descriptor key length (<= kMaxKey)
//   24  u64 count
//   32  u64 payload length
//   40  64 hex chars: id fingerprint
//   104 key, payload, 64 hex chars: SHA-256 of all before.
// The payload is faiss::write_index of the index, except for binary_sq8:
//   u64 vectors the SQ8 ranges were trained on
//   u64 length, faiss::write_index_binary of the IndexBinaryFlat of the
//       first half of the sign codes (the first dim / 2 dimensions)
//   u64 length, the same for the second half
//   u64 length, faiss::write_index of the IndexScalarQuantizer
//   count x i64: the id at each position.
constexpr char kMagic[8] = {'B', 'I', 'E', 'N', 'V', 'I', 'D', 'X'};
constexpr uint32_t kFormatVersion = 2;
constexpr size_t kFixedHeader = 104;
constexpr size_t kChecksumLen = 64;
constexpr uint32_t kMaxKey = 4096;
constexpr uint32_t kMaxDim = 65536;

}  // namespace

// ---------------------------------------------------------------- options

std::string_view IndexKindName(IndexKind kind) {
  switch (kind) {
    case IndexKind::kExact:
      return "exact";
    case IndexKind::kIvfFlat:
      return "ivf_flat";
    case IndexKind::kIvfSq8:
      return "ivf_sq8";
    case IndexKind::kIvfPq:
      return "ivf_pq";
    case IndexKind::kBinarySq8:
      return "binary_sq8";
  }
  return "unknown";
}

std::optional<IndexKind> ParseIndexKind(std::string_view name) {
  for (IndexKind kind : {IndexKind::kExact, IndexKind::kIvfFlat, IndexKind::kIvfSq8,
                         IndexKind::kIvfPq, IndexKind::kBinarySq8}) {
    if (IndexKindName(kind) == name) return kind;
  }
  return std::nullopt;
}

void VectorIndexOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("vector index options: " + what); };
  if (exact_below < 0) bad("exact_below must be >= 0");
  if (approximate_kind == IndexKind::kExact) bad("approximate_kind must be an approximate kind");
  if (IndexKindName(approximate_kind) == "unknown") bad("approximate_kind is not a kind");
  if (nlist < 0 || nlist > (1 << 20)) bad("nlist must be in [0, 2^20] (0: automatic)");
  if (nprobe < 1) bad("nprobe must be >= 1");
  if (pq_bytes < 1 || pq_bytes > 256) bad("pq_bytes must be in [1, 256]");
  if (rerank_factor < 1 || rerank_factor > 1000) bad("rerank_factor must be in [1, 1000]");
  if (rerank_min < 1 || rerank_min > (1 << 20)) bad("rerank_min must be in [1, 2^20]");
  if (hamming_kernel && !HammingKernelAvailable(*hamming_kernel)) {
    bad("hamming_kernel " + std::string(HammingKernelName(*hamming_kernel)) +
        " is not available on this CPU");
  }
  if (prefilter_factor != 0 && (prefilter_factor < 2 || prefilter_factor > (1 << 16))) {
    bad("prefilter_factor must be 0 (off) or in [2, 2^16]");
  }
  if (train_points_per_list < 39 || train_points_per_list > 1000)
    bad("train_points_per_list must be in [39, 1000]");
  if (train_iterations < 1 || train_iterations > 1000) bad("train_iterations must be in [1, 1000]");
  if (search_threads < 1 || search_threads > 1024) bad("search_threads must be in [1, 1024]");
  if (build_threads < 1 || build_threads > 1024) bad("build_threads must be in [1, 1024]");
}

std::string IdFingerprint(std::span<const int64_t> ids) {
  std::vector<int64_t> sorted(ids.begin(), ids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  Digest digest(DigestKind::kSha256);
  std::string chunk;
  chunk.reserve(8 * 4096);
  for (size_t i = 0; i < sorted.size(); ++i) {
    PutU64(chunk, static_cast<uint64_t>(sorted[i]));
    if (chunk.size() >= 8 * 4096) {
      digest.Update(chunk);
      chunk.clear();
    }
  }
  digest.Update(chunk);
  return digest.HexDigest();
}

// ---------------------------------------------------------------- Impl

struct VectorIndex::Impl {
  mutable std::shared_mutex mutex;
  IndexKind kind = IndexKind::kExact;
  // IndexIDMap2(IndexFlatIP), an IndexIVF* or (binary_sq8, stage 2) an
  // IndexScalarQuantizer.
  std::unique_ptr<faiss::Index> index;
  std::unordered_set<int64_t> ids;  // what the index holds

  // binary_sq8 only. FAISS numbers the vectors of the flat indexes by
  // position (0, 1, ... in the order added; a removal closes the gap keeping
  // the order), the same in all three: `head` and `tail` hold the sign codes
  // of the first and the second half of the dimensions (stage 1; apart, so
  // that a scan of the heads reads only them), `index` the SQ8 codes,
  // position_ids[p] the id at position p.
  std::unique_ptr<faiss::IndexBinaryFlat> head, tail;
  std::vector<int64_t> position_ids;
  std::unordered_map<int64_t, int64_t> position_of;  // id -> position
  int64_t trained_on = 0;                            // vectors when the SQ8 ranges were trained

  faiss::IndexIVF* ivf() const { return dynamic_cast<faiss::IndexIVF*>(index.get()); }
  faiss::IndexIDMap2* idmap() const { return dynamic_cast<faiss::IndexIDMap2*>(index.get()); }
  faiss::IndexScalarQuantizer* sq8() const {
    return kind == IndexKind::kBinarySq8 ? dynamic_cast<faiss::IndexScalarQuantizer*>(index.get())
                                         : nullptr;
  }

  static std::unique_ptr<Impl> MakeExact(int dim) {
    auto impl = std::make_unique<Impl>();
    auto* idmap = new faiss::IndexIDMap2(new faiss::IndexFlatIP(dim));
    idmap->own_fields = true;
    impl->index.reset(idmap);
    impl->kind = IndexKind::kExact;
    return impl;
  }

  // binary_sq8: the sign codes of n vectors for one half (head: the first
  // head->d dimensions, tail: the rest).
  std::vector<uint8_t> HalfCodes(const faiss::IndexBinaryFlat& half, const float* vectors,
                                 size_t n) const {
    const int first = &half == head.get() ? 0 : head->d;
    std::vector<uint8_t> codes(n * half.code_size);
    SignCodes(vectors, n, index->d, first, half.d, codes.data());
    return codes;
  }

  // A binary_sq8 index with SQ8 ranges trained on the sample, empty.
  static std::unique_ptr<Impl> MakeTrainedBinarySq8(int dim, std::span<const float> sample) {
    CheckBinaryDim(dim);
    auto impl = std::make_unique<Impl>();
    impl->kind = IndexKind::kBinarySq8;
    impl->head = std::make_unique<faiss::IndexBinaryFlat>(dim / 2);
    impl->tail = std::make_unique<faiss::IndexBinaryFlat>(dim - dim / 2);
    auto sq = std::make_unique<faiss::IndexScalarQuantizer>(dim, faiss::ScalarQuantizer::QT_8bit,
                                                            faiss::METRIC_INNER_PRODUCT);
    sq->train(static_cast<faiss_idx>(sample.size() / dim), sample.data());
    impl->index = std::move(sq);
    return impl;
  }

  // A trained, empty IVF index of `kind` from the training sample.
  static std::unique_ptr<Impl> MakeTrainedIvf(int dim, IndexKind kind, int nlist,
                                              std::span<const float> sample,
                                              const VectorIndexOptions& o) {
    auto impl = std::make_unique<Impl>();
    auto* quantizer = new faiss::IndexFlatIP(dim);
    faiss::IndexIVF* ivf = nullptr;
    try {
      switch (kind) {
        case IndexKind::kIvfFlat:
          ivf = new faiss::IndexIVFFlat(quantizer, dim, nlist, faiss::METRIC_INNER_PRODUCT);
          break;
        case IndexKind::kIvfSq8:
          ivf = new faiss::IndexIVFScalarQuantizer(quantizer, dim, nlist,
                                                   faiss::ScalarQuantizer::QT_8bit,
                                                   faiss::METRIC_INNER_PRODUCT, true);
          break;
        case IndexKind::kIvfPq:
          if (dim % o.pq_bytes != 0) {
            throw Error("vector index: pq_bytes " + std::to_string(o.pq_bytes) +
                        " does not divide the dimension " + std::to_string(dim));
          }
          ivf = new faiss::IndexIVFPQ(quantizer, dim, nlist, o.pq_bytes, 8,
                                      faiss::METRIC_INNER_PRODUCT);
          break;
        case IndexKind::kExact:
        case IndexKind::kBinarySq8:
          BIEN_CHECK(false);
      }
    } catch (...) {
      delete quantizer;
      throw;
    }
    ivf->own_fields = true;
    impl->index.reset(ivf);
    impl->kind = kind;
    ivf->cp.niter = o.train_iterations;
    ivf->cp.seed = static_cast<int>(o.train_seed & 0x7fffffff);
    ivf->cp.max_points_per_centroid = 1 << 30;  // we sample ourselves
    ivf->cp.min_points_per_centroid = 1;        // small partitions: no warnings
    if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(ivf)) {
      pq->pq.cp.niter = o.train_iterations;
      pq->pq.cp.seed = static_cast<int>(o.train_seed & 0x7fffffff);
      pq->pq.cp.min_points_per_centroid = 1;
    }
    ivf->train(static_cast<faiss_idx>(sample.size() / dim), sample.data());
    return impl;
  }

  // ids and vectors already checked; ids new to the index.
  void AddChecked(std::span<const int64_t> add_ids, std::span<const float> vectors) {
    if (add_ids.empty()) return;
    if (kind == IndexKind::kBinarySq8) {
      const size_t n = add_ids.size();
      position_ids.reserve(position_ids.size() + n);
      position_of.reserve(position_of.size() + n);
      index->add(static_cast<faiss_idx>(n), vectors.data());
      head->add(static_cast<faiss_idx>(n), HalfCodes(*head, vectors.data(), n).data());
      tail->add(static_cast<faiss_idx>(n), HalfCodes(*tail, vectors.data(), n).data());
      for (int64_t id : add_ids) {
        position_of[id] = static_cast<int64_t>(position_ids.size());
        position_ids.push_back(id);
      }
      ids.insert(add_ids.begin(), add_ids.end());
      BIEN_CHECK(head->ntotal == index->ntotal && tail->ntotal == index->ntotal &&
                 static_cast<size_t>(index->ntotal) == position_ids.size());
      return;
    }
    index->add_with_ids(static_cast<faiss_idx>(add_ids.size()), vectors.data(),
                        reinterpret_cast<const faiss_idx*>(add_ids.data()));
    ids.insert(add_ids.begin(), add_ids.end());
  }

  size_t RemoveChecked(std::span<const int64_t> remove) {
    std::vector<faiss_idx> present;
    for (int64_t id : remove) {
      if (ids.count(id)) present.push_back(id);
    }
    if (present.empty()) return 0;
    if (kind == IndexKind::kBinarySq8) return RemoveBinaryChecked(present);
    faiss::IDSelectorBatch sel(static_cast<size_t>(present.size()), present.data());
    const size_t removed = index->remove_ids(sel);
    for (faiss_idx id : present) ids.erase(id);
    BIEN_CHECK(removed == present.size());
    BIEN_CHECK(static_cast<size_t>(index->ntotal) == ids.size());
    return removed;
  }

  // binary_sq8: removes ids known to be present from both FAISS indexes (by
  // position) and from the position maps.
  size_t RemoveBinaryChecked(std::span<const faiss_idx> present) {
    std::vector<faiss_idx> positions;
    positions.reserve(present.size());
    for (faiss_idx id : present) positions.push_back(position_of.at(id));
    std::sort(positions.begin(), positions.end());
    faiss::IDSelectorBatch sel(positions.size(), positions.data());
    const size_t removed = index->remove_ids(sel);
    const size_t removed_heads = head->remove_ids(sel);
    const size_t removed_tails = tail->remove_ids(sel);
    BIEN_CHECK(removed == positions.size() && removed_heads == positions.size() &&
               removed_tails == positions.size());
    for (faiss_idx id : present) {
      ids.erase(id);
      position_of.erase(id);
    }
    // Close the gaps as FAISS did (order kept); renumber what moved.
    const size_t first = static_cast<size_t>(positions.front());
    size_t write = first, next = 0;
    for (size_t read = first; read < position_ids.size(); ++read) {
      if (next < positions.size() && static_cast<size_t>(positions[next]) == read) {
        ++next;
        continue;
      }
      position_ids[write] = position_ids[read];
      position_of[position_ids[write]] = static_cast<int64_t>(write);
      ++write;
    }
    position_ids.resize(write);
    BIEN_CHECK(static_cast<size_t>(index->ntotal) == ids.size() && head->ntotal == index->ntotal &&
               tail->ntotal == index->ntotal && position_ids.size() == ids.size());
    return removed;
  }

  // All (ids, vectors) the index holds, in storage order.
  void Extract(int dim, std::vector<int64_t>& out_ids, std::vector<float>& out_vectors) const {
    out_ids.clear();
    out_vectors.clear();
    out_ids.reserve(index->ntotal);
    out_vectors.reserve(static_cast<size_t>(index->ntotal) * dim);
    if (auto* map = idmap()) {
      auto* flat = dynamic_cast<faiss::IndexFlat*>(map->index);
      BIEN_CHECK(flat != nullptr);
      const float* xb = flat->get_xb();
      out_ids.assign(map->id_map.begin(), map->id_map.end());
      out_vectors.assign(xb, xb + static_cast<size_t>(flat->ntotal) * dim);
      return;
    }
    if (auto* sq = sq8()) {  // decoded approximations, in position order
      out_ids = position_ids;
      out_vectors.resize(static_cast<size_t>(sq->ntotal) * dim);
      if (sq->ntotal > 0) sq->reconstruct_n(0, sq->ntotal, out_vectors.data());
      return;
    }
    auto* iv = ivf();
    BIEN_CHECK(iv != nullptr);
    std::vector<float> recons(dim);
    for (size_t l = 0; l < iv->nlist; ++l) {
      const size_t len = iv->invlists->list_size(l);
      faiss::InvertedLists::ScopedIds list_ids(iv->invlists, l);
      for (size_t j = 0; j < len; ++j) {
        iv->reconstruct_from_offset(static_cast<int64_t>(l), static_cast<int64_t>(j),
                                    recons.data());
        out_ids.push_back(list_ids[j]);
        out_vectors.insert(out_vectors.end(), recons.begin(), recons.end());
      }
    }
  }

  std::vector<int64_t> StoredIds() const {
    std::vector<int64_t> out;
    if (auto* map = idmap()) {
      out.assign(map->id_map.begin(), map->id_map.end());
      return out;
    }
    if (kind == IndexKind::kBinarySq8) return position_ids;
    auto* iv = ivf();
    BIEN_CHECK(iv != nullptr);
    for (size_t l = 0; l < iv->nlist; ++l) {
      const size_t len = iv->invlists->list_size(l);
      faiss::InvertedLists::ScopedIds list_ids(iv->invlists, l);
      for (size_t j = 0; j < len; ++j) out.push_back(list_ids[j]);
    }
    return out;
  }

  int nlist() const {
    auto* iv = ivf();
    return iv ? static_cast<int>(iv->nlist) : 0;
  }

  size_t MemoryBytes(int dim) const {
    size_t bytes = SetBytes(ids);
    if (auto* map = idmap()) {
      bytes += static_cast<size_t>(map->ntotal) * (static_cast<size_t>(dim) * 4 + 8);
      bytes += map->rev_map.size() * 32 + map->rev_map.bucket_count() * sizeof(void*);
      return bytes;
    }
    if (auto* sq = sq8()) {
      bytes += sq->codes.capacity() + head->xb.capacity() + tail->xb.capacity() +
               sq->sq.trained.size() * sizeof(float);
      bytes += position_ids.capacity() * sizeof(int64_t);
      bytes += position_of.size() * 32 + position_of.bucket_count() * sizeof(void*);
      return bytes;
    }
    auto* iv = ivf();
    BIEN_CHECK(iv != nullptr);
    bytes += iv->nlist * static_cast<size_t>(dim) * 4;  // centroids
    if (auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(iv->invlists)) {
      for (size_t l = 0; l < lists->nlist; ++l) {
        bytes += lists->codes[l].capacity() + lists->ids[l].capacity() * sizeof(faiss_idx) +
                 2 * sizeof(std::vector<uint8_t>);
      }
    } else {
      bytes += static_cast<size_t>(iv->ntotal) * (iv->code_size + sizeof(faiss_idx));
    }
    if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(iv)) {
      bytes +=
          pq->pq.centroids.size() * sizeof(float) + pq->precomputed_table.size() * sizeof(float);
    }
    if (auto* sq = dynamic_cast<faiss::IndexIVFScalarQuantizer*>(iv)) {
      bytes += sq->sq.trained.size() * sizeof(float);
    }
    return bytes;
  }
};

// Builds the Impl for n vectors (checked) with the kind the options give.
std::unique_ptr<VectorIndex::Impl> VectorIndex::BuildImpl(int dim, std::span<const int64_t> ids,
                                                          std::span<const float> vectors,
                                                          const VectorIndexOptions& o) {
  const int64_t n = static_cast<int64_t>(ids.size());
  OmpThreads threads(ThreadsFor(vectors.size(), o.build_threads));
  std::unique_ptr<VectorIndex::Impl> impl;
  if (n < o.exact_below || n == 0) {
    impl = VectorIndex::Impl::MakeExact(dim);
  } else if (o.approximate_kind == IndexKind::kBinarySq8) {
    CheckBinaryDim(dim);
    const std::vector<float> sample =
        SampleVectors(vectors, n, std::min(n, kSq8TrainVectors), dim, o.train_seed);
    impl = VectorIndex::Impl::MakeTrainedBinarySq8(dim, sample);
    impl->trained_on = n;
  } else {
    const int nlist = ListsFor(n, o);
    const int64_t want =
        std::min<int64_t>(n, static_cast<int64_t>(nlist) * o.train_points_per_list);
    const std::vector<float> sample = SampleVectors(vectors, n, want, dim, o.train_seed);
    impl = VectorIndex::Impl::MakeTrainedIvf(dim, o.approximate_kind, nlist, sample, o);
  }
  impl->AddChecked(ids, vectors);
  // The lists grew by doubling; a fresh index holds only what it needs.
  if (auto* iv = impl->ivf()) {
    if (auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(iv->invlists)) {
      for (size_t l = 0; l < lists->nlist; ++l) {
        lists->codes[l].shrink_to_fit();
        lists->ids[l].shrink_to_fit();
      }
    }
  }
  return impl;
}

// ---------------------------------------------------------------- VectorIndex

VectorIndex::VectorIndex(int dim, std::string descriptor_key, const VectorIndexOptions& options,
                         std::unique_ptr<Impl> impl)
    : dim_(dim),
      descriptor_key_(std::move(descriptor_key)),
      options_(options),
      impl_(std::move(impl)) {}

VectorIndex::VectorIndex(int dim, std::string descriptor_key, const VectorIndexOptions& options)
    : dim_(dim), descriptor_key_(std::move(descriptor_key)), options_(options) {
  options_.Check();
  if (dim < 1 || dim > static_cast<int>(kMaxDim)) {
    throw Error("vector index: dimension " + std::to_string(dim) + " out of range [1, " +
                std::to_string(kMaxDim) + "]");
  }
  if (descriptor_key_.size() > kMaxKey) {
    throw Error("vector index: descriptor key longer than " + std::to_string(kMaxKey) +
                " characters");
  }
  // Fail now, not when the index reaches exact_below.
  if (options_.approximate_kind == IndexKind::kBinarySq8) CheckBinaryDim(dim);
  impl_ = Impl::MakeExact(dim);
}

VectorIndex::~VectorIndex() = default;

std::unique_ptr<VectorIndex> VectorIndex::Build(int dim, std::string descriptor_key,
                                                std::span<const int64_t> ids,
                                                std::span<const float> vectors,
                                                const VectorIndexOptions& options) {
  auto index = std::make_unique<VectorIndex>(dim, std::move(descriptor_key), options);
  CheckVectors(dim, ids, vectors, "vector index \"" + index->descriptor_key_ + "\"");
  try {
    index->impl_ = BuildImpl(dim, ids, vectors, index->options_);
  } catch (const faiss::FaissException& e) {
    throw Error("vector index \"" + index->descriptor_key_ +
                "\": FAISS failed to build: " + e.what());
  }
  return index;
}

void VectorIndex::Add(std::span<const int64_t> ids, std::span<const float> vectors) {
  CheckVectors(dim_, ids, vectors, "vector index \"" + descriptor_key_ + "\"");
  std::unique_lock lock(impl_->mutex);
  OmpThreads threads(ThreadsFor(vectors.size(), options_.build_threads));
  try {
    impl_->RemoveChecked(ids);  // replace: drop the old vectors of these ids
    impl_->AddChecked(ids, vectors);
  } catch (const faiss::FaissException& e) {
    throw Error("vector index \"" + descriptor_key_ + "\": FAISS failed to add: " + e.what());
  }
}

bool VectorIndex::Remove(int64_t id) { return Remove(std::span<const int64_t>(&id, 1)) == 1; }

size_t VectorIndex::Remove(std::span<const int64_t> ids) {
  std::unique_lock lock(impl_->mutex);
  OmpThreads threads(1);  // a scan of the id lists; fast enough alone
  return impl_->RemoveChecked(ids);
}

std::vector<std::vector<SearchHit>> VectorIndex::SearchBatch(std::span<const float> queries, int k,
                                                             const SearchParams& params) const {
  if (k < 1) throw Error("vector index search: k must be >= 1, got " + std::to_string(k));
  if (queries.size() % dim_ != 0) {
    throw Error("vector index search: " + std::to_string(queries.size()) +
                " floats are not a whole number of queries of dimension " + std::to_string(dim_));
  }
  for (float v : queries) {
    if (!std::isfinite(v)) throw Error("vector index search: the query has a non-finite value");
  }
  if (params.nprobe < 0) throw Error("vector index search: nprobe must be >= 0");
  const size_t n = queries.size() / dim_;
  std::vector<std::vector<SearchHit>> out(n);
  if (n == 0) return out;
  std::shared_lock lock(impl_->mutex);
  const int64_t total = impl_->index->ntotal;
  if (total == 0) return out;
  const int kk = static_cast<int>(std::min<int64_t>(k, total));
  std::vector<float> scores(n * kk);
  std::vector<faiss_idx> labels(n * kk);
  // One query runs on one thread; a batch may use search_threads.
  OmpThreads threads(n >= 4 ? options_.search_threads : 1);
  if (impl_->kind == IndexKind::kBinarySq8) {
    SearchBinarySq8(queries, n, kk, out);
    return out;
  }
  if (auto* iv = impl_->ivf()) {
    faiss::SearchParametersIVF sp;
    sp.nprobe = std::min<size_t>(params.nprobe > 0 ? params.nprobe : options_.nprobe, iv->nlist);
    iv->search(static_cast<faiss_idx>(n), queries.data(), kk, scores.data(), labels.data(), &sp);
  } else {
    impl_->index->search(static_cast<faiss_idx>(n), queries.data(), kk, scores.data(),
                         labels.data());
  }
  for (size_t q = 0; q < n; ++q) {
    out[q].reserve(kk);
    for (int j = 0; j < kk; ++j) {
      const faiss_idx id = labels[q * kk + j];
      if (id < 0) continue;  // fewer than k in the visited lists
      out[q].push_back(SearchHit{id, scores[q * kk + j]});
    }
  }
  return out;
}

// binary_sq8, under the caller's shared lock. Per query: the Hamming
// distances of every head (the sign bits of the first half of the
// dimensions); when the index holds more than R * prefilter_factor codes
// only the nearest heads go on (at least R * prefilter_factor: all within
// the distance that makes that many). Their tails' distances complete the
// whole codes' distances; the R nearest whole codes are re-ranked by the SQ8
// inner product and the best kk returned. Ties go to the lower position, so
// the result does not depend on the threads. Measured at 10^6 x 1024 on 2
// threads (quiet machine): heads 1.9 ms, cut and tails 1.1 ms, SQ8 0.3 ms.
void VectorIndex::SearchBinarySq8(std::span<const float> queries, size_t n, int kk,
                                  std::vector<std::vector<SearchHit>>& out) const {
  const Impl& impl = *impl_;
  const int64_t total = impl.index->ntotal;
  const int64_t r = std::min<int64_t>(
      total,
      std::max<int64_t>(static_cast<int64_t>(kk) * options_.rerank_factor, options_.rerank_min));
  const int64_t r1 = options_.prefilter_factor > 0 ? r * options_.prefilter_factor : total;
  const bool prefilter = r1 < total;
  const faiss::IndexBinaryFlat& head = *impl.head;
  const faiss::IndexBinaryFlat& tail = *impl.tail;
  const size_t head_bytes = head.code_size, tail_bytes = tail.code_size;
  const uint32_t head_bits = static_cast<uint32_t>(head.d);
  const uint32_t all_bits = head_bits + static_cast<uint32_t>(tail.d);
  const HammingKernel kernel = options_.hamming_kernel.value_or(BestHammingKernel());

  // Distances of the query's code `q` to codes [0, total) of `codes`, split
  // over `threads` (static: each thread a contiguous range).
  auto scan = [&](const uint8_t* q, const uint8_t* codes, size_t bytes, uint32_t* d, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t begin = total * t / nt, end = total * (t + 1) / nt;
      HammingScan(q, codes + begin * bytes, static_cast<size_t>(end - begin), bytes, d + begin,
                  nullptr, kernel);
    }
  };
  // The prefiltered stage 1 in one parallel region: each thread scans its
  // range of heads into d and counts their distances; the counts give the
  // cut, the smallest head distance that at least r1 heads are within; each
  // thread completes the distances of its range's heads within the cut with
  // their tails. The r nearest by the whole code, ties to the lower position.
  // (Every head at the cut goes on, not only enough to make r1: a choice
  // among them would need the threads to meet once more, and a meeting of
  // sleeping OpenMP threads costs as much as the extra tails.)
  auto Prefiltered = [&](const uint8_t* q_head, const uint8_t* q_tail, uint32_t* d, int threads) {
    std::vector<std::vector<uint32_t>> counts(threads);
    std::vector<std::vector<std::pair<uint32_t, int64_t>>> whole(threads);
    uint32_t cut = 0;
    std::exception_ptr failed;
    // A thread that fails skips the rest of its work but not the barriers.
    auto guard = [&](auto&& work) {
      bool skip = false;
#pragma omp critical(bien_prefilter_failed)
      skip = failed != nullptr;
      if (skip) return;
      try {
        work();
      } catch (...) {
#pragma omp critical(bien_prefilter_failed)
        if (!failed) failed = std::current_exception();
      }
    };
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t begin = total * t / nt, end = total * (t + 1) / nt;
      guard([&] {
        counts[t].assign(head_bits + 1, 0);
        HammingScan(q_head, head.xb.data() + begin * head_bytes, static_cast<size_t>(end - begin),
                    head_bytes, d + begin, counts[t].data(), kernel);
      });
#pragma omp barrier
#pragma omp single
      guard([&] {
        size_t within = 0;
        for (;; ++cut) {
          for (int u = 0; u < nt; ++u) within += counts[u][cut];
          if (within >= static_cast<size_t>(r1) || cut == head_bits) break;
        }
      });
      guard([&] {
        std::vector<int64_t> mine;
        for (int64_t i = begin; i < end; ++i) {
          if (d[i] <= cut) mine.push_back(i);
        }
        std::vector<uint32_t> sum(mine.size());
        for (size_t j = 0; j < mine.size(); ++j) sum[j] = d[mine[j]];
        HammingAddAt(q_tail, tail.xb.data(), tail_bytes, mine, sum.data(), kernel);
        std::vector<std::pair<uint32_t, int64_t>>& w = whole[t];
        w.reserve(mine.size());
        for (size_t j = 0; j < mine.size(); ++j) w.emplace_back(sum[j], mine[j]);
        // This range's r nearest; the r nearest of all are among them.
        if (w.size() > static_cast<size_t>(r)) {
          std::nth_element(w.begin(), w.begin() + r, w.end());
          w.resize(static_cast<size_t>(r));
        }
      });
    }

    if (failed) std::rethrow_exception(failed);
    std::vector<std::pair<uint32_t, int64_t>> all;
    for (auto& w : whole) all.insert(all.end(), w.begin(), w.end());
    const size_t keep = std::min(static_cast<size_t>(r), all.size());
    std::partial_sort(all.begin(), all.begin() + keep, all.end());
    std::vector<int64_t> out(keep);
    for (size_t j = 0; j < keep; ++j) out[j] = all[j].second;
    return out;
  };
  auto one = [&](size_t q, int threads) {
    const float* query = queries.data() + q * dim_;
    const std::vector<uint8_t> q_head = impl.HalfCodes(head, query, 1);
    const std::vector<uint8_t> q_tail = impl.HalfCodes(tail, query, 1);
    // Kept per thread and reused: a fresh buffer of 4 MB (10^6 codes) per
    // query cost more in page faults than the scan itself.
    thread_local std::vector<uint32_t> d_buffer;
    d_buffer.resize(static_cast<size_t>(total));
    uint32_t* const d = d_buffer.data();
    std::vector<int64_t> nearest;  // positions, nearest first
    if (prefilter) {
      nearest = Prefiltered(q_head.data(), q_tail.data(), d, threads);
    } else {
      thread_local std::vector<uint32_t> d_tail;
      d_tail.resize(static_cast<size_t>(total));
      scan(q_head.data(), head.xb.data(), head_bytes, d, threads);
      scan(q_tail.data(), tail.xb.data(), tail_bytes, d_tail.data(), threads);
      for (int64_t i = 0; i < total; ++i) d[i] += d_tail[i];
      nearest =
          SmallestDistances(std::span<const uint32_t>(d, static_cast<size_t>(total)), r, all_bits);
    }
    const Sq8Scorer score(*impl.sq8(), query);
    std::vector<std::pair<float, faiss_idx>> scored;
    scored.reserve(nearest.size());
    constexpr size_t kAhead = 4;
    for (size_t j = 0; j < std::min(kAhead, nearest.size()); ++j) score.Prefetch(nearest[j]);
    for (size_t j = 0; j < nearest.size(); ++j) {
      if (j + kAhead < nearest.size()) score.Prefetch(nearest[j + kAhead]);
      scored.emplace_back(score(nearest[j]), nearest[j]);
    }
    const size_t keep = std::min<size_t>(kk, scored.size());
    // Best first; ties by position.
    std::partial_sort(scored.begin(), scored.begin() + keep, scored.end(),
                      [](const auto& a, const auto& b) {
                        return a.first > b.first || (a.first == b.first && a.second < b.second);
                      });
    out[q].reserve(keep);
    for (size_t j = 0; j < keep; ++j) {
      out[q].push_back(SearchHit{impl.position_ids[scored[j].second], scored[j].first});
    }
  };

  const int threads = options_.search_threads;
  if (n == 1 || threads == 1) {
    // Queries one after the other, each scan split when the index is large.
    const int scan_threads = total >= kParallelScanCodes ? threads : 1;
    for (size_t q = 0; q < n; ++q) one(q, scan_threads);
    return;
  }
  // A batch: queries spread over the threads, each scanned by one.
  std::exception_ptr failed;
  std::mutex failed_mutex;
#pragma omp parallel for num_threads(threads) schedule(dynamic)
  for (size_t q = 0; q < n; ++q) {
    try {
      one(q, 1);
    } catch (...) {
      std::lock_guard lock(failed_mutex);
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
}

std::vector<SearchHit> VectorIndex::Search(std::span<const float> query, int k,
                                           const SearchParams& params) const {
  if (query.size() != static_cast<size_t>(dim_)) {
    throw Error("vector index search: query has " + std::to_string(query.size()) +
                " values, the index dimension is " + std::to_string(dim_));
  }
  return std::move(SearchBatch(query, k, params).front());
}

bool VectorIndex::ShouldOptimize() const {
  std::shared_lock lock(impl_->mutex);
  const int64_t n = impl_->index->ntotal;
  if (impl_->kind == IndexKind::kExact) return n >= options_.exact_below && n > 0;
  if (n < options_.exact_below / 2) return true;
  if (impl_->kind != options_.approximate_kind) return true;
  if (impl_->kind == IndexKind::kBinarySq8) {
    // Re-train the SQ8 ranges when the index grew or shrank fourfold, as an
    // IVF index re-trains when its list count is off by a factor of two
    // (lists grow with the square root of the size).
    const int64_t was = impl_->trained_on;
    return n >= 4 * was || 4 * n <= was;
  }
  const int want = ListsFor(n, options_);
  const int have = impl_->nlist();
  return want >= 2 * have || have >= 2 * want;
}

bool VectorIndex::Optimize() {
  if (!ShouldOptimize()) return false;
  std::unique_lock lock(impl_->mutex);
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  {
    OmpThreads threads(1);
    impl_->Extract(dim_, ids, vectors);
  }
  std::unique_ptr<Impl> fresh;
  try {
    fresh = BuildImpl(dim_, ids, vectors, options_);
  } catch (const faiss::FaissException& e) {
    throw Error("vector index \"" + descriptor_key_ + "\": FAISS failed to re-train: " + e.what());
  }
  if (impl_->kind == IndexKind::kBinarySq8 && fresh->kind == IndexKind::kBinarySq8) {
    // Only the SQ8 ranges were re-trained: keep the sign codes of the
    // original vectors rather than those of their decoded approximations
    // (same positions: Extract gave the vectors in position order).
    BIEN_CHECK(fresh->head->ntotal == impl_->head->ntotal);
    fresh->head = std::move(impl_->head);
    fresh->tail = std::move(impl_->tail);
  }
  // Keep the mutex object (callers may be waiting on it): move the content.
  impl_->index = std::move(fresh->index);
  impl_->ids = std::move(fresh->ids);
  impl_->kind = fresh->kind;
  impl_->head = std::move(fresh->head);
  impl_->tail = std::move(fresh->tail);
  impl_->position_ids = std::move(fresh->position_ids);
  impl_->position_of = std::move(fresh->position_of);
  impl_->trained_on = fresh->trained_on;
  return true;
}

bool VectorIndex::Contains(int64_t id) const {
  std::shared_lock lock(impl_->mutex);
  return impl_->ids.count(id) > 0;
}

std::vector<int64_t> VectorIndex::Ids() const {
  std::vector<int64_t> out;
  {
    std::shared_lock lock(impl_->mutex);
    out.assign(impl_->ids.begin(), impl_->ids.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string VectorIndex::IdFingerprint() const { return bien::IdFingerprint(Ids()); }

int64_t VectorIndex::size() const {
  std::shared_lock lock(impl_->mutex);
  return impl_->index->ntotal;
}

IndexKind VectorIndex::kind() const {
  std::shared_lock lock(impl_->mutex);
  return impl_->kind;
}

int VectorIndex::nlist() const {
  std::shared_lock lock(impl_->mutex);
  return impl_->nlist();
}

size_t VectorIndex::MemoryBytes() const {
  std::shared_lock lock(impl_->mutex);
  return impl_->MemoryBytes(dim_);
}

// ---------------------------------------------------------------- persistence

void VectorIndex::Save(const std::filesystem::path& path) const {
  std::string bytes;
  {
    std::shared_lock lock(impl_->mutex);
    const std::string fingerprint = bien::IdFingerprint(impl_->StoredIds());
    bytes.append(kMagic, sizeof(kMagic));
    PutU32(bytes, kFormatVersion);
    PutU32(bytes, static_cast<uint32_t>(impl_->kind));
    PutU32(bytes, static_cast<uint32_t>(dim_));
    PutU32(bytes, static_cast<uint32_t>(descriptor_key_.size()));
    PutU64(bytes, static_cast<uint64_t>(impl_->index->ntotal));
    const size_t payload_len_at = bytes.size();
    PutU64(bytes, 0);  // payload length, patched below
    bytes += fingerprint;
    BIEN_CHECK(bytes.size() == kFixedHeader);
    bytes += descriptor_key_;
    const size_t payload_at = bytes.size();
    StringWriter writer;
    writer.out = &bytes;
    try {
      if (impl_->kind == IndexKind::kBinarySq8) {
        PutU64(bytes, static_cast<uint64_t>(impl_->trained_on));
        auto write_part = [&](auto&& write) {
          const size_t len_at = bytes.size();
          PutU64(bytes, 0);
          write();
          std::string len;
          PutU64(len, bytes.size() - len_at - 8);
          bytes.replace(len_at, 8, len);
        };
        write_part([&] { faiss::write_index_binary(impl_->head.get(), &writer); });
        write_part([&] { faiss::write_index_binary(impl_->tail.get(), &writer); });
        write_part([&] { faiss::write_index(impl_->index.get(), &writer); });
        for (int64_t id : impl_->position_ids) PutU64(bytes, static_cast<uint64_t>(id));
      } else {
        faiss::write_index(impl_->index.get(), &writer);
      }
    } catch (const faiss::FaissException& e) {
      throw Error(path.string() + ": cannot write the vector index (FAISS: " + e.what() + ")");
    }
    const uint64_t payload_len = bytes.size() - payload_at;
    std::string len;
    PutU64(len, payload_len);
    bytes.replace(payload_len_at, 8, len);
  }
  bytes += Sha256Hex(std::string_view(bytes));
  WriteFileAtomically(path, bytes, "vector index");
}

VectorIndex::LoadResult VectorIndex::Load(const std::filesystem::path& path,
                                          const std::string& expected_key, int expected_dim,
                                          const VectorIndexOptions& options) {
  LoadResult result;
  auto refuse = [&](const std::string& why) {
    result.index.reset();
    result.reason = why;
    return std::move(result);
  };
  options.Check();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return refuse("no saved index");
  std::string bytes;
  if (std::string why = ReadFileInto(path, bytes); !why.empty()) return refuse(why);
  if (std::string why = CheckFileHead(bytes, std::string_view(kMagic, sizeof(kMagic)),
                                      "vector index", kFixedHeader + kChecksumLen, kFormatVersion);
      !why.empty()) {
    return refuse(why);
  }
  const uint32_t kind_raw = GetU32(bytes, 12);
  const uint32_t dim = GetU32(bytes, 16);
  const uint32_t key_len = GetU32(bytes, 20);
  const uint64_t count = GetU64(bytes, 24);
  const uint64_t payload_len = GetU64(bytes, 32);
  if (key_len > kMaxKey || payload_len > bytes.size()) {
    // A length this large cannot be real; the rest of the header is damaged.
    return refuse("truncated or corrupt header (lengths exceed the file size of " +
                  std::to_string(bytes.size()) + " bytes)");
  }
  const uint64_t expected_size = kFixedHeader + key_len + payload_len + kChecksumLen;
  if (bytes.size() < expected_size) {
    return refuse("truncated (" + std::to_string(bytes.size()) + " of " +
                  std::to_string(expected_size) + " bytes)");
  }
  if (bytes.size() > expected_size) {
    return refuse("corrupt (" + std::to_string(bytes.size() - expected_size) +
                  " unexpected bytes after the checksum)");
  }
  const size_t body = bytes.size() - kChecksumLen;
  if (Sha256Hex(std::string_view(bytes.data(), body)) != std::string_view(bytes).substr(body)) {
    return refuse("checksum mismatch (the file is corrupt)");
  }
  // From here on the bytes are as Save wrote them (barring forgery).
  const std::string fingerprint = bytes.substr(40, 64);
  const std::string key = bytes.substr(kFixedHeader, key_len);
  result.id_fingerprint = fingerprint;
  if (key != expected_key) {
    return refuse("descriptor key differs (file: \"" + key + "\", expected: \"" + expected_key +
                  "\")");
  }
  if (dim != static_cast<uint32_t>(expected_dim)) {
    return refuse("dimension differs (file: " + std::to_string(dim) +
                  ", expected: " + std::to_string(expected_dim) + ")");
  }
  if (dim < 1 || dim > kMaxDim)
    return refuse("corrupt header (dimension " + std::to_string(dim) + ")");
  if (kind_raw > static_cast<uint32_t>(IndexKind::kBinarySq8)) {
    return refuse("corrupt header (unknown index kind " + std::to_string(kind_raw) + ")");
  }
  const auto kind = static_cast<IndexKind>(kind_raw);

  const size_t payload_at = kFixedHeader + key_len;
  std::unique_ptr<faiss::Index> index;
  std::unique_ptr<faiss::IndexBinary> head, tail;
  std::vector<int64_t> position_ids;
  uint64_t trained_on = 0;
  try {
    SpanReader reader;
    reader.data = bytes.data() + payload_at;
    reader.size = payload_len;
    if (kind == IndexKind::kBinarySq8) {
      // Parts: trained_on, [len, head], [len, tail], [len, sq8], count ids.
      size_t at = 0;
      auto u64 = [&](uint64_t& v) {
        if (payload_len - at < 8) return false;
        v = GetU64(bytes, payload_at + at);
        at += 8;
        return true;
      };
      auto part = [&](auto&& read) {
        uint64_t len = 0;
        if (!u64(len) || len > payload_len - at) return false;
        SpanReader r;
        r.data = bytes.data() + payload_at + at;
        r.size = len;
        read(r);
        at += len;
        return r.at == r.size;
      };
      if (!u64(trained_on)) return refuse("corrupt payload (truncated)");
      if (!part([&](SpanReader& r) { head.reset(faiss::read_index_binary(&r)); }) ||
          !part([&](SpanReader& r) { tail.reset(faiss::read_index_binary(&r)); })) {
        return refuse("corrupt payload (sign codes)");
      }
      if (!part([&](SpanReader& r) { index.reset(faiss::read_index(&r)); })) {
        return refuse("corrupt payload (SQ8 codes)");
      }
      if (count > (payload_len - at) / 8 || payload_len - at != count * 8) {
        return refuse("corrupt payload (position ids)");
      }
      position_ids.resize(count);
      for (uint64_t i = 0; i < count; ++i) {
        position_ids[i] = static_cast<int64_t>(GetU64(bytes, payload_at + at + 8 * i));
      }
    } else {
      index.reset(faiss::read_index(&reader));
      if (reader.at != reader.size) {
        return refuse("corrupt payload (trailing bytes after the index)");
      }
    }
  } catch (const std::exception& e) {
    return refuse(std::string("FAISS cannot read the payload (") + e.what() + ")");
  }
  if (!index) return refuse("FAISS cannot read the payload");

  // Check the decoded structure against the header.
  auto impl = std::make_unique<Impl>();
  impl->index = std::move(index);
  impl->kind = kind;
  faiss::Index* raw = impl->index.get();
  if (raw->d != static_cast<int>(dim) || raw->ntotal != static_cast<faiss_idx>(count) ||
      raw->metric_type != faiss::METRIC_INNER_PRODUCT || !raw->is_trained) {
    return refuse("payload does not match the header (dimension, count or metric)");
  }
  bool shape_ok = false;
  if (kind == IndexKind::kBinarySq8) {
    auto* sq = impl->sq8();
    // Both halves: flat, of dim / 2 bits, holding count codes.
    auto half_ok = [&](const std::unique_ptr<faiss::IndexBinary>& half) {
      const int bits = static_cast<int>(dim / 2);
      return half && typeid(*half) == typeid(faiss::IndexBinaryFlat) && half->d == bits &&
             half->code_size == bits / 8 && half->ntotal == static_cast<faiss_idx>(count) &&
             static_cast<faiss::IndexBinaryFlat&>(*half).xb.size() ==
                 static_cast<size_t>(count) * (bits / 8);
    };
    shape_ok = sq && dim % kBinarySq8DimMultiple == 0 && half_ok(head) && half_ok(tail) &&
               typeid(*raw) == typeid(faiss::IndexScalarQuantizer) &&
               sq->sq.qtype == faiss::ScalarQuantizer::QT_8bit && sq->sq.d == dim &&
               sq->code_size == dim && sq->sq.code_size == dim &&
               sq->sq.trained.size() == 2 * static_cast<size_t>(dim) &&
               sq->codes.size() == static_cast<size_t>(count) * dim &&
               position_ids.size() == count && trained_on >= 1 && trained_on <= (uint64_t{1} << 40);
    if (shape_ok) {
      impl->head.reset(static_cast<faiss::IndexBinaryFlat*>(head.release()));
      impl->tail.reset(static_cast<faiss::IndexBinaryFlat*>(tail.release()));
      impl->position_ids = std::move(position_ids);
      impl->trained_on = static_cast<int64_t>(trained_on);
      impl->position_of.reserve(impl->position_ids.size());
      for (size_t p = 0; p < impl->position_ids.size(); ++p) {
        impl->position_of.emplace(impl->position_ids[p], static_cast<int64_t>(p));
      }
    }
  } else if (kind == IndexKind::kExact) {
    auto* map = impl->idmap();
    shape_ok = map && typeid(*raw) == typeid(faiss::IndexIDMap2) && map->index &&
               typeid(*map->index) == typeid(faiss::IndexFlatIP) &&
               map->index->ntotal == raw->ntotal &&
               map->id_map.size() == static_cast<size_t>(raw->ntotal);
  } else {
    auto* iv = impl->ivf();
    const std::type_info& want = kind == IndexKind::kIvfFlat ? typeid(faiss::IndexIVFFlat)
                                 : kind == IndexKind::kIvfSq8
                                     ? typeid(faiss::IndexIVFScalarQuantizer)
                                     : typeid(faiss::IndexIVFPQ);
    shape_ok = iv && typeid(*raw) == want && iv->quantizer &&
               typeid(*iv->quantizer) == typeid(faiss::IndexFlatIP) && iv->quantizer->d == raw->d &&
               iv->quantizer->ntotal == static_cast<faiss_idx>(iv->nlist) && iv->invlists &&
               typeid(*iv->invlists) == typeid(faiss::ArrayInvertedLists) &&
               iv->invlists->nlist == iv->nlist && iv->invlists->code_size == iv->code_size;
    if (shape_ok) {
      size_t total = 0;
      for (size_t l = 0; l < iv->nlist; ++l) total += iv->invlists->list_size(l);
      shape_ok = total == static_cast<size_t>(raw->ntotal);
    }
  }
  if (!shape_ok) return refuse("payload does not match the header (index structure)");
  const std::vector<int64_t> stored = impl->StoredIds();
  impl->ids.insert(stored.begin(), stored.end());
  if (impl->ids.size() != stored.size()) return refuse("corrupt payload (repeated ids)");
  if (bien::IdFingerprint(stored) != fingerprint) {
    return refuse("payload does not match the header (id fingerprint)");
  }
  result.index.reset(new VectorIndex(static_cast<int>(dim), key, options, std::move(impl)));
  result.reason.clear();
  return result;
}

// ---------------------------------------------------------------- PartitionIndexes

PartitionIndexes::PartitionIndexes(std::filesystem::path folder, VectorIndexOptions options)
    : folder_(std::move(folder)), options_(options) {
  options_.Check();
}

std::filesystem::path PartitionIndexes::PathFor(const std::string& partition) const {
  std::string name;
  for (char c : partition) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_';
    name.push_back(keep ? c : '_');
    if (name.size() >= 80) break;
  }
  if (!name.empty() && name.front() == '.') name.front() = '_';
  name += "-" + Sha256Hex(partition).substr(0, 12) + ".bidx";
  return folder_ / name;
}

PartitionIndexes::Outcome PartitionIndexes::LoadOrRebuild(
    const std::string& partition, const std::string& key, int dim,
    const std::string& expected_id_fingerprint, const VectorSource& source) {
  const auto path = PathFor(partition);
  Outcome outcome;
  VectorIndex::LoadResult loaded = VectorIndex::Load(path, key, dim, options_);
  if (loaded.index) {
    if (loaded.id_fingerprint != expected_id_fingerprint) {
      outcome.reason = "id set differs from the store (the index holds " +
                       std::to_string(loaded.index->size()) + " vectors)";
    } else if (loaded.index->ShouldOptimize()) {
      outcome.reason = "index of kind " + std::string(IndexKindName(loaded.index->kind())) +
                       " no longer suits its " + std::to_string(loaded.index->size()) + " vectors";
    } else {
      outcome.index = std::move(loaded.index);
      std::lock_guard lock(mutex_);
      indexes_[partition] = outcome.index;
      return outcome;
    }
  } else {
    outcome.reason = loaded.reason;
  }

  std::vector<int64_t> ids;
  std::vector<float> vectors;
  const std::string what = "index of partition \"" + partition + "\"";
  source([&](std::span<const int64_t> batch_ids, std::span<const float> batch_vectors) {
    if (batch_vectors.size() != batch_ids.size() * static_cast<size_t>(dim)) {
      throw Error(what + ": the source gave " + std::to_string(batch_vectors.size()) +
                  " floats for " + std::to_string(batch_ids.size()) + " ids of dimension " +
                  std::to_string(dim));
    }
    ids.insert(ids.end(), batch_ids.begin(), batch_ids.end());
    vectors.insert(vectors.end(), batch_vectors.begin(), batch_vectors.end());
  });
  if (bien::IdFingerprint(ids) != expected_id_fingerprint) {
    throw Error(what + ": the source's " + std::to_string(ids.size()) +
                " ids do not match the expected id fingerprint");
  }
  std::shared_ptr<VectorIndex> index = VectorIndex::Build(dim, key, ids, vectors, options_);
  std::error_code ec;
  std::filesystem::create_directories(folder_, ec);
  if (ec) throw Error(folder_.string() + ": cannot create the index folder (" + ec.message() + ")");
  index->Save(path);
  outcome.index = index;
  outcome.rebuilt = true;
  std::lock_guard lock(mutex_);
  indexes_[partition] = index;
  return outcome;
}

std::shared_ptr<VectorIndex> PartitionIndexes::Get(const std::string& partition) const {
  std::lock_guard lock(mutex_);
  auto it = indexes_.find(partition);
  return it == indexes_.end() ? nullptr : it->second;
}

void PartitionIndexes::Save(const std::string& partition) const {
  auto index = Get(partition);
  if (!index) throw Error("index of partition \"" + partition + "\" is not loaded");
  std::error_code ec;
  std::filesystem::create_directories(folder_, ec);
  if (ec) throw Error(folder_.string() + ": cannot create the index folder (" + ec.message() + ")");
  index->Save(PathFor(partition));
}

// ---------------------------------------------------------------- benchmark

namespace {

void Normalise(std::span<float> v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.f;
  for (float& x : v) x *= inv;
}

}  // namespace

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i =
      std::min(v.size() - 1, static_cast<size_t>(std::floor(p * (v.size() - 1) + 0.5)));
  return v[i];
}

IndexBenchResult BenchIndex(int64_t n, int dim, int queries, uint64_t seed,
                            const VectorIndexOptions& options, int mates) {
  options.Check();
  if (mates < 1 || n < mates || dim < 2 || queries < 1) {
    throw Error("index benchmark: need mates >= 1, n >= mates, dim >= 2, queries >= 1");
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> gauss(0.f, 1.f);
  const int families = 256;
  const int64_t centres = n / mates;
  const float unit = 1.f / std::sqrt(static_cast<float>(dim));
  // Family means and centres: a centre is 0.6 * family + 0.8 * own (cos 0.36
  // between centres of a family); a mate or query adds noise of norm 0.6
  // (cos ~0.86 to its centre).
  std::vector<float> family(static_cast<size_t>(families) * dim);
  for (int f = 0; f < families; ++f) {
    std::span<float> v(family.data() + static_cast<size_t>(f) * dim, dim);
    for (float& x : v) x = gauss(rng);
    Normalise(v);
  }
  std::vector<float> centre(static_cast<size_t>(centres) * dim);
  std::uniform_int_distribution<int> pick_family(0, families - 1);
  for (int64_t c = 0; c < centres; ++c) {
    std::span<float> v(centre.data() + static_cast<size_t>(c) * dim, dim);
    const float* fam = family.data() + static_cast<size_t>(pick_family(rng)) * dim;
    for (int j = 0; j < dim; ++j) v[j] = 0.6f * fam[j] + 0.8f * unit * gauss(rng);
    Normalise(v);
  }
  auto noisy_copy = [&](int64_t c, float* out) {
    const float* ctr = centre.data() + static_cast<size_t>(c) * dim;
    for (int j = 0; j < dim; ++j) out[j] = ctr[j] + 0.6f * unit * gauss(rng);
    Normalise(std::span<float>(out, dim));
  };
  // Ids: vector i belongs to centre i % centres (mates spread over the ids).
  std::vector<int64_t> ids(n);
  std::vector<float> data(static_cast<size_t>(n) * dim);
  for (int64_t i = 0; i < n; ++i) {
    ids[i] = i;
    noisy_copy(i % centres, data.data() + static_cast<size_t>(i) * dim);
  }
  std::vector<int64_t> query_centre(queries);
  std::vector<float> qv(static_cast<size_t>(queries) * dim);
  std::uniform_int_distribution<int64_t> pick_centre(0, centres - 1);
  for (int q = 0; q < queries; ++q) {
    query_centre[q] = pick_centre(rng);
    noisy_copy(query_centre[q], qv.data() + static_cast<size_t>(q) * dim);
  }

  std::vector<std::vector<int64_t>> query_mates(queries);
  for (int q = 0; q < queries; ++q) {
    for (int64_t m = query_centre[q]; m < n; m += centres) {
      if (m / centres >= mates) break;  // leftover ids beyond whole groups
      query_mates[q].push_back(m);
    }
  }
  return BenchIndexOn(dim, ids, data, qv, query_mates, options);
}

IndexBenchResult BenchIndexOn(int dim, std::span<const int64_t> ids, std::span<const float> vectors,
                              std::span<const float> queries,
                              const std::vector<std::vector<int64_t>>& mates,
                              const VectorIndexOptions& options, int pool) {
  options.Check();
  const int64_t n = static_cast<int64_t>(ids.size());
  const int query_count = static_cast<int>(mates.size());
  if (dim < 1 || n < 1 || query_count < 1 ||
      vectors.size() != static_cast<size_t>(n) * static_cast<size_t>(dim) ||
      queries.size() != static_cast<size_t>(query_count) * static_cast<size_t>(dim)) {
    throw Error(
        "index benchmark: need at least one vector and one query, ids.size() * dim vector "
        "floats and mates.size() * dim query floats");
  }
  {
    std::vector<int64_t> sorted(ids.begin(), ids.end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& list : mates) {
      for (int64_t m : list) {
        if (!std::binary_search(sorted.begin(), sorted.end(), m)) {
          throw Error("index benchmark: mate id " + std::to_string(m) + " is not in the index");
        }
      }
    }
  }
  using Clock = std::chrono::steady_clock;
  const int k = 100;
  IndexBenchResult r;
  r.n = n;
  r.dim = dim;
  r.queries = query_count;
  const auto t0 = Clock::now();
  auto index = VectorIndex::Build(dim, "bench", ids, vectors, options);
  r.build_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.kind = index->kind();
  r.nlist = index->nlist();
  r.nprobe = r.kind == IndexKind::kExact ? 0 : std::min(options.nprobe, r.nlist);
  r.bytes_per_vector = static_cast<double>(index->MemoryBytes()) / static_cast<double>(n);

  auto time_queries = [&](const VectorIndex& idx, int count, std::vector<double>& ms,
                          std::vector<std::vector<SearchHit>>* hits) {
    for (int q = 0; q < count; ++q) {
      std::span<const float> one(queries.data() + static_cast<size_t>(q) * dim, dim);
      const auto s = Clock::now();
      auto h = idx.Search(one, k);
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      if (hits) hits->push_back(std::move(h));
    }
  };
  std::vector<double> ms;
  std::vector<std::vector<SearchHit>> approx;
  time_queries(*index, query_count, ms, &approx);
  r.query_ms_median = Percentile(ms, 0.5);
  r.query_ms_p99 = Percentile(ms, 0.99);
  if (pool > 0) {
    std::vector<double> pool_ms;
    for (int q = 0; q < query_count; ++q) {
      std::span<const float> one(queries.data() + static_cast<size_t>(q) * dim, dim);
      const auto s = Clock::now();
      const auto h = index->Search(one, pool);
      pool_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      std::vector<int64_t>& ids_of = r.pools.emplace_back();
      for (const SearchHit& hit : h) ids_of.push_back(hit.id);
    }
    r.pool_query_ms_median = Percentile(pool_ms, 0.5);
  }

  // Ground truth: an exact index over the same vectors (batch search).
  VectorIndexOptions exact_options = options;
  exact_options.exact_below = std::numeric_limits<int64_t>::max();
  exact_options.search_threads = 1;  // the single-query baseline; batches use BLAS
  std::unique_ptr<VectorIndex> exact_holder;
  const VectorIndex* exact = index.get();
  if (r.kind != IndexKind::kExact) {
    index.reset();  // free the approximate index's memory first
    exact_holder = VectorIndex::Build(dim, "bench", ids, vectors, exact_options);
    exact = exact_holder.get();
  }
  const auto truth = exact->SearchBatch(queries, k);
  std::vector<double> exact_ms;
  time_queries(*exact, std::min(query_count, 20), exact_ms, nullptr);
  r.exact_query_ms_median = Percentile(exact_ms, 0.5);

  auto found_in = [](const std::vector<SearchHit>& hits, size_t top,
                     const std::vector<int64_t>& wanted) {
    int found = 0;
    for (size_t j = 0; j < std::min(top, hits.size()); ++j) {
      found += std::count(wanted.begin(), wanted.end(), hits[j].id) > 0 ? 1 : 0;
    }
    return found;
  };
  double hit10 = 0, hit100 = 0, mate_hits = 0, mate_total = 0;
  double found10 = 0, found100 = 0, exact10 = 0, exact100 = 0;
  for (int q = 0; q < query_count; ++q) {
    auto overlap = [&](size_t top) {
      std::unordered_set<int64_t> want;
      for (size_t j = 0; j < std::min(top, truth[q].size()); ++j) want.insert(truth[q][j].id);
      size_t found = 0;
      for (size_t j = 0; j < std::min(top, approx[q].size()); ++j)
        found += want.count(approx[q][j].id);
      return want.empty() ? 1.0 : static_cast<double>(found) / static_cast<double>(want.size());
    };
    hit10 += overlap(10);
    hit100 += overlap(100);
    const int in10 = found_in(approx[q], 10, mates[q]);
    mate_total += static_cast<double>(mates[q].size());
    mate_hits += in10;
    found10 += in10 > 0 ? 1 : 0;
    found100 += found_in(approx[q], 100, mates[q]) > 0 ? 1 : 0;
    exact10 += found_in(truth[q], 10, mates[q]) > 0 ? 1 : 0;
    exact100 += found_in(truth[q], 100, mates[q]) > 0 ? 1 : 0;
  }
  r.recall_at_10 = hit10 / query_count;
  r.recall_at_100 = hit100 / query_count;
  r.mate_recall_at_10 = mate_total > 0 ? mate_hits / mate_total : 1.0;
  r.mate_found_at_10 = found10 / query_count;
  r.mate_found_at_100 = found100 / query_count;
  r.exact_mate_found_at_10 = exact10 / query_count;
  r.exact_mate_found_at_100 = exact100 / query_count;
  return r;
}

}  // namespace bien

#include "matching/hamming.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "core/error.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's _mm512_reduce_add_epi64 reads an _mm256_undefined_si256(), which
// -Wuninitialized reports inside the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define BIEN_X86_KERNELS 1
#endif

namespace bien {
namespace {

constexpr HammingKernel kKernels[] = {HammingKernel::kPortable, HammingKernel::kPopcnt,
                                      HammingKernel::kAvx512};

uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Portable: std::popcount compiles to bit arithmetic without -mpopcnt.
uint32_t DistancePortable(const uint8_t* a, const uint8_t* b, size_t bytes) {
  uint32_t d = 0;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) d += std::popcount(Load64(a + i) ^ Load64(b + i));
  for (; i < bytes; ++i) d += std::popcount(static_cast<unsigned>(a[i] ^ b[i]));
  return d;
}

#ifdef BIEN_X86_KERNELS
__attribute__((target("popcnt"), always_inline)) inline uint32_t DistancePopcnt(const uint8_t* a,
                                                                                const uint8_t* b,
                                                                                size_t bytes) {
  uint32_t d = 0;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    d += static_cast<uint32_t>(__builtin_popcountll(Load64(a + i) ^ Load64(b + i)));
  }
  for (; i < bytes; ++i) d += static_cast<uint32_t>(__builtin_popcount(a[i] ^ b[i]));
  return d;
}

__attribute__((target("avx512f,avx512vpopcntdq,popcnt"), always_inline)) inline uint32_t
DistanceAvx512(const uint8_t* a, const uint8_t* b, size_t bytes) {
  __m512i acc = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  uint32_t d = static_cast<uint32_t>(_mm512_reduce_add_epi64(acc));
  for (; i + 8 <= bytes; i += 8) {
    d += static_cast<uint32_t>(__builtin_popcountll(Load64(a + i) ^ Load64(b + i)));
  }
  for (; i < bytes; ++i) d += static_cast<uint32_t>(__builtin_popcount(a[i] ^ b[i]));
  return d;
}

// The scans are separate functions per kernel so that the distance inlines
// into a loop compiled for that instruction set; 64-byte codes (binary_sq8's
// halves of 1024-float descriptors) get a loop of their own.
__attribute__((target("popcnt"))) void ScanPopcnt(const uint8_t* q, const uint8_t* codes, size_t n,
                                                  size_t bytes, uint32_t* out, uint32_t* counts) {
  for (size_t i = 0; i < n; ++i) {
    out[i] = DistancePopcnt(q, codes + i * bytes, bytes);
    if (counts) ++counts[out[i]];
  }
}

__attribute__((target("avx512f,avx512vpopcntdq,popcnt"))) void ScanAvx512(const uint8_t* q,
                                                                          const uint8_t* codes,
                                                                          size_t n, size_t bytes,
                                                                          uint32_t* out,
                                                                          uint32_t* counts) {
  if (bytes == 64) {
    const __m512i qv = _mm512_loadu_si512(q);
    for (size_t i = 0; i < n; ++i) {
      const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(codes + i * 64), qv);
      out[i] = static_cast<uint32_t>(_mm512_reduce_add_epi64(_mm512_popcnt_epi64(x)));
      if (counts) ++counts[out[i]];
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    out[i] = DistanceAvx512(q, codes + i * bytes, bytes);
    if (counts) ++counts[out[i]];
  }
}
#endif

void ScanPortable(const uint8_t* q, const uint8_t* codes, size_t n, size_t bytes, uint32_t* out,
                  uint32_t* counts) {
  for (size_t i = 0; i < n; ++i) {
    out[i] = DistancePortable(q, codes + i * bytes, bytes);
    if (counts) ++counts[out[i]];
  }
}

}  // namespace

bool HammingKernelAvailable(HammingKernel kernel) {
  switch (kernel) {
    case HammingKernel::kPortable:
      return true;
#ifdef BIEN_X86_KERNELS
    case HammingKernel::kPopcnt:
      return __builtin_cpu_supports("popcnt");
    case HammingKernel::kAvx512:
      // libgcc reports AVX-512 features only when the OS saves their state.
      return __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512vpopcntdq");
#else
    case HammingKernel::kPopcnt:
    case HammingKernel::kAvx512:
      return false;
#endif
  }
  return false;
}

namespace {

void Require(HammingKernel kernel) {
  if (!HammingKernelAvailable(kernel)) {
    throw Error("Hamming distance: kernel " + std::string(HammingKernelName(kernel)) +
                " is not available on this CPU");
  }
}

}  // namespace

std::string_view HammingKernelName(HammingKernel kernel) {
  switch (kernel) {
    case HammingKernel::kPortable:
      return "portable";
    case HammingKernel::kPopcnt:
      return "popcnt";
    case HammingKernel::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::optional<HammingKernel> ParseHammingKernel(std::string_view name) {
  for (HammingKernel k : kKernels) {
    if (HammingKernelName(k) == name) return k;
  }
  return std::nullopt;
}

std::vector<HammingKernel> AvailableHammingKernels() {
  std::vector<HammingKernel> out;
  for (HammingKernel k : kKernels) {
    if (HammingKernelAvailable(k)) out.push_back(k);
  }
  return out;
}

HammingKernel BestHammingKernel() {
  static const HammingKernel best = AvailableHammingKernels().back();
  return best;
}

void HammingScan(const uint8_t* query, const uint8_t* codes, size_t n, size_t bytes, uint32_t* out,
                 uint32_t* counts, HammingKernel kernel) {
  Require(kernel);
  switch (kernel) {
#ifdef BIEN_X86_KERNELS
    case HammingKernel::kAvx512:
      return ScanAvx512(query, codes, n, bytes, out, counts);
    case HammingKernel::kPopcnt:
      return ScanPopcnt(query, codes, n, bytes, out, counts);
#endif
    default:
      return ScanPortable(query, codes, n, bytes, out, counts);
  }
}

void HammingAddAt(const uint8_t* query, const uint8_t* codes, size_t bytes,
                  std::span<const int64_t> positions, uint32_t* out, HammingKernel kernel) {
  Require(kernel);
  uint32_t (*distance)(const uint8_t*, const uint8_t*, size_t) = DistancePortable;
#ifdef BIEN_X86_KERNELS
  if (kernel == HammingKernel::kAvx512) distance = DistanceAvx512;
  if (kernel == HammingKernel::kPopcnt) distance = DistancePopcnt;
#endif
  // Scattered codes: fetch a few ahead so that their cache misses overlap.
  constexpr size_t kAhead = 16;
  for (size_t j = 0; j < positions.size(); ++j) {
    if (j + kAhead < positions.size()) {
      const uint8_t* next = codes + static_cast<size_t>(positions[j + kAhead]) * bytes;
      for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(next + b);
    }
    out[j] += distance(query, codes + static_cast<size_t>(positions[j]) * bytes, bytes);
  }
}

std::vector<int64_t> SmallestDistances(std::span<const uint32_t> distances, size_t k,
                                       uint32_t max_distance) {
  k = std::min(k, distances.size());
  std::vector<int64_t> out;
  if (k == 0) return out;
  std::vector<size_t> counts(static_cast<size_t>(max_distance) + 1, 0);
  for (uint32_t d : distances) {
    BIEN_CHECK(d <= max_distance);
    ++counts[d];
  }
  // The cut: the smallest t with at least k distances <= t.
  uint32_t cut = 0;
  size_t below = 0;  // distances < cut
  while (below + counts[cut] < k) below += counts[cut++];
  size_t at_cut = k - below;  // of those equal to the cut, the first ones
  out.reserve(k);
  for (size_t i = 0; i < distances.size(); ++i) {
    const uint32_t d = distances[i];
    if (d < cut || (d == cut && at_cut > 0)) {
      if (d == cut) --at_cut;
      out.push_back(static_cast<int64_t>(i));
    }
  }
  std::sort(out.begin(), out.end(), [&](int64_t a, int64_t b) {
    return distances[a] < distances[b] || (distances[a] == distances[b] && a < b);
  });
  return out;
}

}  // namespace bien

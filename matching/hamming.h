// Hamming distances between binary codes (the sign codes of binary_sq8
// indexes, matching/index.h), with the fastest population count the CPU
// offers: AVX-512 VPOPCNTDQ, the POPCNT instruction, or portable code,
// chosen once at run time. Every kernel gives the same distances; they differ
// only in speed. Debian's FAISS is built for any x86-64, so its own Hamming
// code counts bits without POPCNT: on this project's machine 10^6 codes of
// 1024 bits took 38 ms with FAISS, 11 ms with AVX-512 on one core; through
// binary_sq8 at 10^6 x 1024 on 2 threads a query took 4.1 ms with AVX-512,
// 3.8 ms with POPCNT (the scan is bound by memory) and 16.5 ms portable
// (docs/PERFORMANCE.md, "Search").
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace bien {

enum class HammingKernel { kPortable, kPopcnt, kAvx512 };

// "portable", "popcnt", "avx512".
std::string_view HammingKernelName(HammingKernel kernel);
// The kernel of that name; nullopt for an unknown name.
std::optional<HammingKernel> ParseHammingKernel(std::string_view name);

// Whether this CPU can run `kernel`.
bool HammingKernelAvailable(HammingKernel kernel);

// The kernels this CPU can run, kPortable first (always there).
std::vector<HammingKernel> AvailableHammingKernels();

// The fastest available kernel (the last of AvailableHammingKernels()).
HammingKernel BestHammingKernel();

// out[i] = popcount(query XOR code i) for the n codes of `bytes` bytes each
// stored one after the other from `codes`; when `counts` is not null also
// ++counts[out[i]] (it needs bytes * 8 + 1 entries): a histogram of the
// distances made while the codes stream by, to find a cut. Throws
// bien::Error when `kernel` is not available on this CPU.
void HammingScan(const uint8_t* query, const uint8_t* codes, size_t n, size_t bytes, uint32_t* out,
                 uint32_t* counts = nullptr, HammingKernel kernel = BestHammingKernel());

// out[j] += popcount(query XOR code positions[j]) (codes stored as for
// HammingScan; every position must be a valid code index).
void HammingAddAt(const uint8_t* query, const uint8_t* codes, size_t bytes,
                  std::span<const int64_t> positions, uint32_t* out,
                  HammingKernel kernel = BestHammingKernel());

// The positions of the k smallest of the distances (k is cut to their
// number), ordered by (distance, position): of equal distances at the cut,
// the lower positions, so the choice does not depend on threads or heaps.
// Every distance must be <= max_distance (a histogram of max_distance + 1
// bins finds the cut in linear time).
std::vector<int64_t> SmallestDistances(std::span<const uint32_t> distances, size_t k,
                                       uint32_t max_distance);

}  // namespace bien

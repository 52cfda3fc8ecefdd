#include "matching/hamming.h"

#include <gtest/gtest.h>

#include <bit>
#include <random>
#include <string>

namespace bien {
namespace {

uint32_t Reference(const uint8_t* a, const uint8_t* b, size_t bytes) {
  uint32_t d = 0;
  for (size_t i = 0; i < bytes; ++i) d += std::popcount(static_cast<unsigned>(a[i] ^ b[i]));
  return d;
}

TEST(HammingTest, KernelsAgreeWithTheBitCountOnEveryCodeLength) {
  const std::vector<HammingKernel> kernels = AvailableHammingKernels();
  ASSERT_FALSE(kernels.empty());
  EXPECT_EQ(kernels.front(), HammingKernel::kPortable);
  EXPECT_EQ(BestHammingKernel(), kernels.back());
  std::mt19937_64 rng(5);
  // Lengths around the 8-byte words and 64-byte vectors (64: binary_sq8's
  // half of a 1024-float descriptor, with a loop of its own).
  for (size_t bytes : {1, 7, 8, 9, 16, 63, 64, 65, 128, 136, 200}) {
    SCOPED_TRACE("bytes " + std::to_string(bytes));
    const size_t n = 37;
    std::vector<uint8_t> codes(n * bytes), query(bytes);
    for (auto& c : codes) c = static_cast<uint8_t>(rng());
    for (auto& c : query) c = static_cast<uint8_t>(rng());
    // Code 0 equals the query, code 1 its complement: 0 and all bits.
    std::copy(query.begin(), query.end(), codes.begin());
    for (size_t i = 0; i < bytes; ++i) codes[bytes + i] = static_cast<uint8_t>(~query[i]);
    std::vector<uint32_t> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = Reference(query.data(), &codes[i * bytes], bytes);
    EXPECT_EQ(want[0], 0u);
    EXPECT_EQ(want[1], 8 * bytes);
    std::vector<uint32_t> want_counts(8 * bytes + 1, 0);
    for (uint32_t d : want) ++want_counts[d];
    const std::vector<int64_t> positions = {5, 0, 36, 5, 1};
    for (HammingKernel k : kernels) {
      SCOPED_TRACE(std::string(HammingKernelName(k)));
      std::vector<uint32_t> got(n, 99), counts(8 * bytes + 1, 0);
      HammingScan(query.data(), codes.data(), n, bytes, got.data(), nullptr, k);
      EXPECT_EQ(got, want);
      HammingScan(query.data(), codes.data(), n, bytes, got.data(), counts.data(), k);
      EXPECT_EQ(got, want);
      EXPECT_EQ(counts, want_counts);
      // AddAt adds to what is there, at any positions, repeated or not.
      std::vector<uint32_t> sum(positions.size(), 1000);
      HammingAddAt(query.data(), codes.data(), bytes, positions, sum.data(), k);
      for (size_t j = 0; j < positions.size(); ++j) EXPECT_EQ(sum[j], 1000 + want[positions[j]]);
    }
  }
}

TEST(HammingTest, SmallestDistancesBreakTiesByPosition) {
  const std::vector<uint32_t> d = {5, 3, 9, 3, 0, 5, 5, 3, 12};
  // Sorted by (distance, position).
  EXPECT_EQ(SmallestDistances(d, 3, 12), (std::vector<int64_t>{4, 1, 3}));
  // The cut falls inside the 5s: the lower positions of them.
  EXPECT_EQ(SmallestDistances(d, 6, 12), (std::vector<int64_t>{4, 1, 3, 7, 0, 5}));
  EXPECT_EQ(SmallestDistances(d, 100, 12).size(), d.size());
  EXPECT_TRUE(SmallestDistances(d, 0, 12).empty());
  EXPECT_TRUE(SmallestDistances({}, 4, 12).empty());
}

TEST(HammingTest, SmallestDistancesOfManyAreTheSortedPrefix) {
  std::mt19937_64 rng(9);
  std::vector<uint32_t> d(20000);
  for (auto& v : d) v = static_cast<uint32_t>(rng() % 513);
  std::vector<int64_t> all(d.size());
  for (size_t i = 0; i < d.size(); ++i) all[i] = static_cast<int64_t>(i);
  std::stable_sort(all.begin(), all.end(), [&](int64_t a, int64_t b) { return d[a] < d[b]; });
  for (size_t k : {1, 500, 7777, 20000}) {
    const std::vector<int64_t> got = SmallestDistances(d, k, 512);
    EXPECT_EQ(got, std::vector<int64_t>(all.begin(), all.begin() + k)) << k;
  }
}

}  // namespace
}  // namespace bien

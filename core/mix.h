// Deterministic 64-bit mixing for seeds and hashes that must come out the
// same on every platform and build (synthetic data, the descriptor's sketch).
#pragma once

#include <cstdint>
#include <initializer_list>

namespace bien {

// SplitMix64's finaliser (Steele, Lea, Flood 2014).
inline uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A hash of several values, starting from `start` (each user keeps its own
// start so streams of different modules never coincide).
inline uint64_t HashOf(uint64_t start, std::initializer_list<uint64_t> parts) {
  uint64_t h = start;
  for (uint64_t p : parts) h = SplitMix(h ^ SplitMix(p));
  return h;
}

}  // namespace bien

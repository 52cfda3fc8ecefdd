// What a score means: how often known non-matches score at least as high.
//
// A node keeps the scores of comparisons between exhibits known to come from
// different firearms (see docs/SCORES.md for how they are collected). For a new
// score s, with n such scores of which k are >= s, the node reports k of n and
// the upper end of a one-sided 95 % confidence interval for the rate
// P(KNM score >= s) (exact binomial / Clopper-Pearson), so a score above every
// known non-match still reads "rarer than 3/n", never "impossible".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bien {

struct Exceedance {
  int64_t at_least = 0;     // known non-matches scoring >= the score
  int64_t total = 0;        // known non-matches in the distribution
  double rate = 0;          // at_least / total (NaN when total == 0)
  double rate_upper95 = 0;  // one-sided 95 % upper bound of the rate (1 when total == 0)
};

class KnmDistribution {
 public:
  KnmDistribution() = default;
  explicit KnmDistribution(std::vector<double> scores);  // NaN scores are refused (bien::Error)
  int64_t size() const { return static_cast<int64_t>(sorted_.size()); }
  Exceedance At(double score) const;
  // E.g. "0 of 717 known non-matches score >= 21.5 (rate < 0.42 %, 95 % bound)"
  // or "no known-non-match scores recorded yet: strength unknown".
  std::string Describe(double score) const;

 private:
  std::vector<double> sorted_;
};

}  // namespace bien

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

// The exact one-sided upper confidence bound (Clopper-Pearson) of a binomial
// rate seen k times in n trials: the p at which P(X <= k | n, p) = 1 - confidence,
// i.e. the `confidence` quantile of Beta(k + 1, n - k). 1 when k == n (which
// includes n == 0). k = 0 gives 1 - (1 - confidence)^(1/n), about 3/n at 95 %.
// Computed from the regularized incomplete beta function (continued fraction)
// by bisection; O(sqrt(n)) per step, so fast for any n. Throws bien::Error
// unless 0 <= k <= n and 0 < confidence < 1.
double ClopperPearsonUpper(int64_t k, int64_t n, double confidence = 0.95);

class KnmDistribution {
 public:
  KnmDistribution() = default;
  // Non-finite scores (NaN, infinities) are refused (bien::Error).
  explicit KnmDistribution(std::vector<double> scores);
  int64_t size() const { return static_cast<int64_t>(sorted_.size()); }
  // O(log n) to count, plus the bound (see ClopperPearsonUpper).
  Exceedance At(double score) const;
  // E.g. "0 of 717 known non-matches score >= 21.5 (rate < 0.42 %, 95 % bound)",
  // "12 of 717 known non-matches score >= 3 (rate 1.7 %, at most 2.7 %, 95 % bound)"
  // or "no known-non-match scores recorded yet: strength unknown (see docs/SCORES.md)".
  std::string Describe(double score) const;

 private:
  std::vector<double> sorted_;
};

}  // namespace bien

#include "matching/calibration.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;

TEST(KnmDistribution, CountsScoresAtLeastAsHigh) {
  const KnmDistribution d({1, 2, 2, 3, 5});
  EXPECT_EQ(d.size(), 5);
  Exceedance e = d.At(2);
  EXPECT_EQ(e.at_least, 4);
  EXPECT_DOUBLE_EQ(e.rate, 0.8);
  e = d.At(6);
  EXPECT_EQ(e.at_least, 0);
  EXPECT_DOUBLE_EQ(e.rate, 0.0);
  // k = 0: the exact bound is 1 - 0.05^(1/n).
  EXPECT_NEAR(e.rate_upper95, 1 - std::pow(0.05, 1.0 / 5), 1e-12);
  // Every known non-match scores at least as high: the bound is 1.
  e = d.At(1);
  EXPECT_EQ(e.at_least, 5);
  EXPECT_EQ(e.rate_upper95, 1.0);
}

// Reference values: the 0.95 quantile of Beta(k + 1, n - k), computed apart
// with mpmath at 40-50 digits (bisection on the regularized incomplete beta,
// and on the binomial CDF summed exactly).
TEST(ClopperPearson, MatchesIndependentlyComputedValues) {
  struct Case {
    int64_t k, n;
    double expected;
  };
  for (const Case& c :
       {Case{0, 5, 0.45071972834694112}, Case{1, 10, 0.39416330243650478},
        Case{10, 100, 0.16371762327581479}, Case{5, 717, 0.014606218848201854},
        Case{50, 1000, 0.062863403512379738}, Case{999, 1000, 0.99994870802109098},
        Case{3, 3000, 0.0025825051382936551}, Case{250, 100000, 0.0027757704044435129},
        Case{2000, 20000, 0.10355738442430822}}) {
    EXPECT_NEAR(ClopperPearsonUpper(c.k, c.n), c.expected, 1e-10 * c.expected)
        << c.k << " of " << c.n;
  }
}

TEST(ClopperPearson, MatchesClosedFormsAtTheEnds) {
  for (int64_t n : {1, 2, 7, 717, 100000}) {
    // k = 0: P(X <= 0) = (1 - p)^n = 0.05.
    const double none = 1 - std::pow(0.05, 1.0 / static_cast<double>(n));
    EXPECT_NEAR(ClopperPearsonUpper(0, n), none, 1e-9 * none) << n;
    // k = n - 1: P(X <= n - 1) = 1 - p^n = 0.05.
    const double all_but_one = std::pow(0.95, 1.0 / static_cast<double>(n));
    EXPECT_NEAR(ClopperPearsonUpper(n - 1, n), all_but_one, 1e-12) << n;
    EXPECT_EQ(ClopperPearsonUpper(n, n), 1.0);
  }
  EXPECT_EQ(ClopperPearsonUpper(0, 0), 1.0);
  // Another confidence: k = 0 gives 1 - (1 - c)^(1/n).
  EXPECT_NEAR(ClopperPearsonUpper(0, 10, 0.99), 1 - std::pow(0.01, 0.1), 1e-12);
  // The rule of three: about 3/n for large n.
  EXPECT_NEAR(ClopperPearsonUpper(0, 717), 3.0 / 717, 1e-4);
}

TEST(ClopperPearson, RefusesImpossibleCounts) {
  EXPECT_TRUE(Contains(ErrorOf([] { ClopperPearsonUpper(4, 3); }), "4 of 3"));
  EXPECT_TRUE(Contains(ErrorOf([] { ClopperPearsonUpper(-1, 3); }), "-1 of 3"));
  EXPECT_TRUE(Contains(ErrorOf([] { ClopperPearsonUpper(0, 3, 1.0); }), "confidence"));
  EXPECT_TRUE(Contains(ErrorOf([] { ClopperPearsonUpper(0, 3, NAN); }), "confidence"));
}

TEST(KnmDistribution, LargeDistributionsStayExact) {
  // A million scores, half of them at least as high as the query: the bound is
  // just above one half, and computing it does not sum half a million terms.
  std::vector<double> scores(1000000);
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = static_cast<double>(i);
  const KnmDistribution d(std::move(scores));
  const Exceedance e = d.At(500000);
  EXPECT_EQ(e.at_least, 500000);
  // Normal approximation: 0.5 + 1.645 * sqrt(0.25 / 1e6) = 0.50082.
  EXPECT_NEAR(e.rate_upper95, 0.50082, 2e-5);
  EXPECT_GT(e.rate_upper95, e.rate);
}

TEST(KnmDistribution, DescribesAndRefusesNonFiniteScores) {
  EXPECT_TRUE(Contains(KnmDistribution().Describe(5), "unknown"));
  const KnmDistribution d({1, 2, 3});
  EXPECT_TRUE(Contains(d.Describe(10), "0 of 3 known non-matches score >= 10 (rate < 63 %"));
  EXPECT_TRUE(Contains(d.Describe(2), "2 of 3 known non-matches score >= 2 (rate 67 %, at most"));
  const Exceedance empty = KnmDistribution().At(1);
  EXPECT_EQ(empty.total, 0);
  EXPECT_TRUE(std::isnan(empty.rate));
  EXPECT_EQ(empty.rate_upper95, 1.0);
  EXPECT_THROW(KnmDistribution({1, NAN}), Error);
  EXPECT_THROW(KnmDistribution({std::numeric_limits<double>::infinity()}), Error);
  // 717 scores below the query: "< 0.42 %", as docs/SCORES.md says.
  EXPECT_TRUE(Contains(KnmDistribution(std::vector<double>(717, 1.0)).Describe(21.5),
                       "0 of 717 known non-matches score >= 21.5 (rate < 0.42 %, 95 % bound)"));
}

}  // namespace
}  // namespace bien

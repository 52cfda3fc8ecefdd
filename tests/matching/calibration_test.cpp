#include "matching/calibration.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;

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
}

TEST(KnmDistribution, ClopperPearsonMatchesKnownValues) {
  std::vector<double> scores(100, 0.0);
  for (int i = 0; i < 10; ++i) scores[i] = 10;
  const Exceedance e = KnmDistribution(scores).At(10);
  EXPECT_EQ(e.at_least, 10);
  // One-sided 95 % upper bound for 10 of 100: 0.16372 (binomial CDF, computed apart).
  EXPECT_NEAR(e.rate_upper95, 0.16372, 1e-4);
  // 717 known non-matches, none as high: rule of three, about 3/717.
  const Exceedance none = KnmDistribution(std::vector<double>(717, 1.0)).At(20);
  EXPECT_NEAR(none.rate_upper95, 1 - std::pow(0.05, 1.0 / 717), 1e-12);
  EXPECT_NEAR(none.rate_upper95, 3.0 / 717, 1e-4);
}

TEST(KnmDistribution, DescribesAndRefusesNaN) {
  EXPECT_TRUE(Contains(KnmDistribution().Describe(5), "unknown"));
  const KnmDistribution d({1, 2, 3});
  EXPECT_TRUE(Contains(d.Describe(10), "0 of 3 known non-matches score >= 10"));
  EXPECT_TRUE(Contains(d.Describe(2), "2 of 3"));
  EXPECT_EQ(KnmDistribution().At(1).rate_upper95, 1.0);
  EXPECT_THROW(KnmDistribution({1, NAN}), Error);
}

}  // namespace
}  // namespace bien

#include "matching/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"

namespace bien {
namespace {

// Items 0,1 share a source; 2,3 share a source.
std::vector<PairScore> Pairs(double km01, double km23, double knm) {
  std::vector<PairScore> p;
  for (int a = 0; a < 4; ++a) {
    for (int b = a + 1; b < 4; ++b) {
      const bool same = (a / 2) == (b / 2);
      p.push_back({a, b, same ? (a == 0 ? km01 : km23) : knm, same});
    }
  }
  return p;
}

TEST(Metrics, PerfectSeparation) {
  const EvalMetrics m = ComputeEvalMetrics(4, Pairs(20, 18, 2));
  EXPECT_EQ(m.pairs, 6);
  EXPECT_EQ(m.km, 2);
  EXPECT_EQ(m.knm, 4);
  EXPECT_DOUBLE_EQ(m.auc, 1.0);
  EXPECT_DOUBLE_EQ(m.eer, 0.0);
  EXPECT_DOUBLE_EQ(m.min_km, 18);
  EXPECT_DOUBLE_EQ(m.max_knm, 2);
  EXPECT_EQ(m.queries, 4);
  EXPECT_DOUBLE_EQ(m.top1, 1.0);
  EXPECT_DOUBLE_EQ(m.top10, 1.0);
}

TEST(Metrics, ReversedAndTied) {
  EXPECT_DOUBLE_EQ(ComputeEvalMetrics(4, Pairs(1, 1, 5)).auc, 0.0);
  const EvalMetrics tied = ComputeEvalMetrics(4, Pairs(3, 3, 3));
  EXPECT_DOUBLE_EQ(tied.auc, 0.5);
  // Ties rank against the query: a non-mate tied with the mate comes first.
  EXPECT_DOUBLE_EQ(tied.top1, 0.0);
  EXPECT_DOUBLE_EQ(tied.top10, 1.0);
}

TEST(Metrics, HandComputedEerAndRetrieval) {
  // KM: 10, 4. KNM: 5, 3, 2, 1. AUC: 10 beats 4, 4 beats 3 of 4 -> 7/8.
  std::vector<PairScore> p = {{0, 1, 10, true}, {2, 3, 4, true},  {0, 2, 5, false},
                              {0, 3, 3, false}, {1, 2, 2, false}, {1, 3, 1, false}};
  const EvalMetrics m = ComputeEvalMetrics(4, p);
  EXPECT_DOUBLE_EQ(m.auc, 7.0 / 8.0);
  // Threshold 5: FMR 1/4, FNMR 1/2 -> crossed; threshold 4: FMR 1/4, FNMR 0.
  // Between them the curves cross at 1/4.
  EXPECT_NEAR(m.eer, 0.25, 1e-12);
  // Item 2's mate (4) is beaten by its non-mate 0 (5): rank 2.
  EXPECT_DOUBLE_EQ(m.top1, 0.75);
  EXPECT_DOUBLE_EQ(m.top10, 1.0);
}

TEST(Metrics, MissingClassesAndBadInput) {
  const EvalMetrics m = ComputeEvalMetrics(3, {{0, 1, 2, false}, {1, 2, 3, false}});
  EXPECT_TRUE(std::isnan(m.auc));
  EXPECT_TRUE(std::isnan(m.min_km));
  EXPECT_TRUE(std::isnan(m.top1));
  EXPECT_EQ(m.queries, 0);
  EXPECT_THROW(ComputeEvalMetrics(2, {{0, 2, 1, false}}), Error);
  EXPECT_THROW(ComputeEvalMetrics(2, {{1, 1, 1, false}}), Error);
  EXPECT_THROW(ComputeEvalMetrics(2, {{0, 1, NAN, false}}), Error);
}

}  // namespace
}  // namespace bien

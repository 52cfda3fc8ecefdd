#include "matching/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "tests/test_util.h"

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

TEST(Metrics, ReversedOrderHasEerOne) {
  const EvalMetrics m = ComputeEvalMetrics(4, Pairs(1, 1, 5));
  EXPECT_DOUBLE_EQ(m.eer, 1.0);
  EXPECT_DOUBLE_EQ(m.top1, 0.0);
  // All tied: the curves cross half-way.
  EXPECT_DOUBLE_EQ(ComputeEvalMetrics(4, Pairs(3, 3, 3)).eer, 0.5);
}

TEST(Metrics, HandComputedWithTies) {
  // Sources: {0, 1}, {2, 3, 5}, {4}. Not every pair is compared.
  // KM: 5, 3, 3. KNM: 3, 2, 1, 1.
  const std::vector<PairScore> p = {{0, 1, 5, true},  {2, 3, 3, true},  {5, 3, 3, true},
                                    {0, 2, 3, false}, {1, 4, 2, false}, {3, 4, 1, false},
                                    {4, 5, 1, false}};
  const EvalMetrics m = ComputeEvalMetrics(6, p);
  EXPECT_EQ(m.km, 3);
  EXPECT_EQ(m.knm, 4);
  // AUC: KM 5 beats all four KNM; each KM 3 beats 2, 1, 1 and ties 3: 3.5.
  // (4 + 3.5 + 3.5) / 12.
  EXPECT_DOUBLE_EQ(m.auc, 11.0 / 12.0);
  // FMR / FNMR by threshold: 1: 1, 0; 2: 1/2, 0; 3: 1/4, 0 (a tie at 3 counts
  // as a match on both sides); 5: 0, 2/3 -> crossed. Between 3 and 5:
  // w = (1/4) / (1/4 + 2/3) = 3/11, EER = 1/4 - 3/11 * 1/4 = 2/11.
  EXPECT_NEAR(m.eer, 2.0 / 11.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.min_km, 3);
  EXPECT_DOUBLE_EQ(m.max_knm, 3);
  // Queries: 0, 1, 2, 3, 5 (4 has no mate). Item 2's mate (3) ties with its
  // non-mate 0 (3): the tie ranks against it, rank 2. The others rank 1.
  EXPECT_EQ(m.queries, 5);
  EXPECT_DOUBLE_EQ(m.top1, 4.0 / 5.0);
  EXPECT_DOUBLE_EQ(m.top10, 1.0);
}

TEST(Metrics, TiesAtTheTenthPlace) {
  // Item 0's mate (1) scores 7; n non-mates tie with it.
  auto with_tied_non_mates = [](int n) {
    std::vector<PairScore> p = {{0, 1, 7, true}};
    for (int i = 0; i < n; ++i) p.push_back({0, 2 + i, 7, false});
    return ComputeEvalMetrics(2 + n, p);
  };
  // 9 tied non-mates: the mate ranks 10th.
  EvalMetrics m = with_tied_non_mates(9);
  EXPECT_EQ(m.queries, 2);  // items 0 and 1
  EXPECT_DOUBLE_EQ(m.top1, 0.5);
  EXPECT_DOUBLE_EQ(m.top10, 1.0);
  // 10 tied non-mates: 11th, outside the top ten.
  m = with_tied_non_mates(10);
  EXPECT_DOUBLE_EQ(m.top1, 0.5);
  EXPECT_DOUBLE_EQ(m.top10, 0.5);
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
  EXPECT_THROW(ComputeEvalMetrics(2, {{-1, 1, 1, false}}), Error);
  EXPECT_THROW(ComputeEvalMetrics(-1, {}), Error);
  EXPECT_TRUE(testing::Contains(testing::ErrorOf([] {
                                  ComputeEvalMetrics(3, {{0, 1, 1, false}, {1, 0, 2, false}});
                                }),
                                "pair (0, 1) is given more than once"));
  const EvalMetrics none = ComputeEvalMetrics(0, {});
  EXPECT_EQ(none.pairs, 0);
  EXPECT_TRUE(std::isnan(none.eer));
}

}  // namespace
}  // namespace bien

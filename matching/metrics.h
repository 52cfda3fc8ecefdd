// Accuracy figures for a labelled set of comparisons (`bien eval`).
#pragma once

#include <cstdint>
#include <vector>

namespace bien {

// One compared pair of items (0-based indices into the evaluated set), each
// unordered pair at most once.
struct PairScore {
  int a = 0;
  int b = 0;
  double score = 0;  // higher = more similar
  bool same_source = false;
};

struct EvalMetrics {
  int64_t pairs = 0;
  int64_t km = 0;   // known-match pairs
  int64_t knm = 0;  // known-non-match pairs
  // ROC area: the share of (KM, KNM) pairs in which the KM pair scores higher
  // (Mann-Whitney), a tie counting one half. 1 = perfect separation, 0.5 = no
  // better than chance, 0 = reversed. NaN without both classes.
  double auc = 0;
  // Equal error rate (0..1), NaN without both classes. A pair is called a match
  // when its score >= t. For t over -inf, every distinct score and +inf:
  //   FMR(t)  = share of KNM pairs scoring >= t   (falls from 1 to 0)
  //   FNMR(t) = share of KM pairs scoring < t     (rises from 0 to 1)
  // At the first t_i where FMR(t_i) <= FNMR(t_i), the two curves are joined
  // to the previous threshold t_{i-1} by straight lines and the EER is where
  // those lines cross: with d = FMR - FNMR and w = d(t_{i-1}) / (d(t_{i-1}) -
  // d(t_i)), EER = FMR(t_{i-1}) + w (FMR(t_i) - FMR(t_{i-1})). So perfect
  // separation gives 0, all scores tied 0.5, a reversed order 1.
  double eer = 0;
  double min_km = 0;   // lowest known-match score; NaN without km
  double max_knm = 0;  // highest known-non-match score; NaN without knm
  // Retrieval: each item with at least one compared mate (a same-source
  // partner) is a query; its compared partners are ranked by score. Ties are
  // ranked against the query: the rank of its best mate is 1 + the number of
  // its non-mates scoring >= that mate, so ties never flatter. top1 = share of
  // queries with that rank 1; top10 = share with rank <= 10.
  int64_t queries = 0;  // items with at least one mate
  double top1 = 0;      // 0..1; NaN without queries
  double top10 = 0;
};

// O(n log n) in the number of pairs. Throws bien::Error for a negative item
// count, an index outside [0, items), a pair (i, i), the same unordered pair
// given twice, or a score that is not a finite number.
EvalMetrics ComputeEvalMetrics(int items, const std::vector<PairScore>& pairs);

}  // namespace bien

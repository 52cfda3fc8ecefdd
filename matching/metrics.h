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
  int64_t km = 0;      // known-match pairs
  int64_t knm = 0;     // known-non-match pairs
  double auc = 0;      // ROC area; ties count one half; NaN without both classes
  double eer = 0;      // equal error rate (0..1); NaN without both classes
  double min_km = 0;   // lowest known-match score; NaN without km
  double max_knm = 0;  // highest known-non-match score; NaN without knm
  // Retrieval: for each item with at least one mate, its compared partners
  // ranked by score. top1 = share of those items whose best partner is a mate;
  // top10 = a mate among the first ten. Ties are ranked against the query
  // (a non-mate tied with the best mate ranks first), so ties never flatter.
  int64_t queries = 0;  // items with at least one mate
  double top1 = 0;      // 0..1; NaN without queries
  double top10 = 0;
};

// Throws bien::Error for an index outside [0, items) or a pair (i, i).
EvalMetrics ComputeEvalMetrics(int items, const std::vector<PairScore>& pairs);

}  // namespace bien

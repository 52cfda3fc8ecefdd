#include "matching/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace bien {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ROC area by the Mann-Whitney statistic, ties counting one half.
double Auc(std::vector<double> km, std::vector<double> knm) {
  std::sort(km.begin(), km.end());
  std::sort(knm.begin(), knm.end());
  double wins = 0;
  size_t lo = 0, hi = 0;  // knm[0..lo) < x, knm[0..hi) <= x
  for (double x : km) {
    while (lo < knm.size() && knm[lo] < x) ++lo;
    while (hi < knm.size() && knm[hi] <= x) ++hi;
    wins += static_cast<double>(lo) + 0.5 * static_cast<double>(hi - lo);
  }
  return wins / (static_cast<double>(km.size()) * static_cast<double>(knm.size()));
}

// Equal error rate, as defined in metrics.h: thresholds t run over every
// distinct score and +inf; a pair is called a match when score >= t.
// FMR(t) = share of KNM >= t, FNMR(t) = share of KM < t. The EER is where the
// two curves cross, linearly interpolated between the two neighbouring
// thresholds where FMR - FNMR changes sign. O(n log n).
double Eer(std::vector<double> km, std::vector<double> knm) {
  std::sort(km.begin(), km.end());
  std::sort(knm.begin(), knm.end());
  std::vector<double> t = km;
  t.insert(t.end(), knm.begin(), knm.end());
  std::sort(t.begin(), t.end());
  t.erase(std::unique(t.begin(), t.end()), t.end());
  t.push_back(std::numeric_limits<double>::infinity());  // everything a non-match
  const double nkm = static_cast<double>(km.size()), nknm = static_cast<double>(knm.size());
  double prev_fmr = 1, prev_fnmr = 0;  // threshold -inf: everything a match
  for (double th : t) {
    const double fmr =
        static_cast<double>(knm.end() - std::lower_bound(knm.begin(), knm.end(), th)) / nknm;
    const double fnmr =
        static_cast<double>(std::lower_bound(km.begin(), km.end(), th) - km.begin()) / nkm;
    if (fmr <= fnmr) {
      const double d_prev = prev_fmr - prev_fnmr;  // >= 0
      const double d_now = fmr - fnmr;             // <= 0
      const double w = d_prev - d_now > 0 ? d_prev / (d_prev - d_now) : 0;
      return prev_fmr + w * (fmr - prev_fmr);
    }
    prev_fmr = fmr;
    prev_fnmr = fnmr;
  }
  return 0;
}

}  // namespace

EvalMetrics ComputeEvalMetrics(int items, const std::vector<PairScore>& pairs) {
  if (items < 0) throw Error("evaluation: negative item count");
  EvalMetrics m;
  std::vector<double> km, knm;
  // Per item: its best mate score and the scores of its non-mates.
  std::vector<std::vector<std::pair<double, bool>>> partners(static_cast<size_t>(items));
  for (const PairScore& p : pairs) {
    if (p.a < 0 || p.b < 0 || p.a >= items || p.b >= items) {
      throw Error("evaluation: pair (" + std::to_string(p.a) + ", " + std::to_string(p.b) +
                  ") is outside 0.." + std::to_string(items - 1));
    }
    if (p.a == p.b) throw Error("evaluation: item " + std::to_string(p.a) + " paired with itself");
    if (!std::isfinite(p.score)) throw Error("evaluation: a score is not a finite number");
    (p.same_source ? km : knm).push_back(p.score);
    partners[static_cast<size_t>(p.a)].emplace_back(p.score, p.same_source);
    partners[static_cast<size_t>(p.b)].emplace_back(p.score, p.same_source);
  }
  // Each unordered pair at most once: a repeat would count twice.
  {
    std::vector<std::pair<int, int>> keys;
    keys.reserve(pairs.size());
    for (const PairScore& p : pairs) keys.emplace_back(std::minmax(p.a, p.b));
    std::sort(keys.begin(), keys.end());
    const auto repeat = std::adjacent_find(keys.begin(), keys.end());
    if (repeat != keys.end()) {
      throw Error("evaluation: pair (" + std::to_string(repeat->first) + ", " +
                  std::to_string(repeat->second) + ") is given more than once");
    }
  }
  m.pairs = static_cast<int64_t>(pairs.size());
  m.km = static_cast<int64_t>(km.size());
  m.knm = static_cast<int64_t>(knm.size());
  m.min_km = km.empty() ? kNaN : *std::min_element(km.begin(), km.end());
  m.max_knm = knm.empty() ? kNaN : *std::max_element(knm.begin(), knm.end());
  m.auc = km.empty() || knm.empty() ? kNaN : Auc(km, knm);
  m.eer = km.empty() || knm.empty() ? kNaN : Eer(km, knm);

  int64_t hit1 = 0, hit10 = 0;
  for (const auto& list : partners) {
    double best_mate = -std::numeric_limits<double>::infinity();
    bool has_mate = false;
    for (const auto& [score, mate] : list) {
      if (mate) {
        has_mate = true;
        best_mate = std::max(best_mate, score);
      }
    }
    if (!has_mate) continue;
    ++m.queries;
    // Rank of the best mate: 1 + non-mates scoring at least as high (ties
    // count against the query).
    int64_t above = 0;
    for (const auto& [score, mate] : list) above += !mate && score >= best_mate ? 1 : 0;
    hit1 += above == 0 ? 1 : 0;
    hit10 += above < 10 ? 1 : 0;
  }
  m.top1 = m.queries ? static_cast<double>(hit1) / static_cast<double>(m.queries) : kNaN;
  m.top10 = m.queries ? static_cast<double>(hit10) / static_cast<double>(m.queries) : kNaN;
  return m;
}

}  // namespace bien

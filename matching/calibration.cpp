#include "matching/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"

namespace bien {
namespace {

// P(X <= k) for X ~ Binomial(n, p), summed in log space (k < n, 0 < p < 1).
double BinomialCdf(int64_t k, int64_t n, double p) {
  const double lp = std::log(p), lq = std::log1p(-p);
  const double lgn = std::lgamma(static_cast<double>(n) + 1);
  double sum = 0;
  double max_log = -std::numeric_limits<double>::infinity();
  std::vector<double> logs;
  logs.reserve(static_cast<size_t>(k + 1));
  for (int64_t i = 0; i <= k; ++i) {
    const double di = static_cast<double>(i);
    const double l = lgn - std::lgamma(di + 1) - std::lgamma(static_cast<double>(n - i) + 1) +
                     di * lp + static_cast<double>(n - i) * lq;
    logs.push_back(l);
    max_log = std::max(max_log, l);
  }
  for (double l : logs) sum += std::exp(l - max_log);
  return std::min(1.0, std::exp(max_log) * sum);
}

// One-sided 95 % Clopper-Pearson upper bound of a rate seen k times in n.
double UpperBound95(int64_t k, int64_t n) {
  if (n <= 0 || k >= n) return 1.0;
  if (k == 0) return 1.0 - std::pow(0.05, 1.0 / static_cast<double>(n));
  double lo = static_cast<double>(k) / static_cast<double>(n), hi = 1.0;
  for (int it = 0; it < 100 && hi - lo > 1e-12; ++it) {
    const double mid = (lo + hi) / 2;
    (BinomialCdf(k, n, mid) > 0.05 ? lo : hi) = mid;
  }
  return hi;
}

std::string Percent(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof buf, rate >= 0.1 ? "%.0f %%" : "%.2g %%", 100 * rate);
  return buf;
}

}  // namespace

KnmDistribution::KnmDistribution(std::vector<double> scores) : sorted_(std::move(scores)) {
  for (double s : sorted_) {
    if (!std::isfinite(s)) throw Error("known-non-match scores must be finite numbers");
  }
  std::sort(sorted_.begin(), sorted_.end());
}

Exceedance KnmDistribution::At(double score) const {
  Exceedance e;
  e.total = size();
  e.at_least =
      static_cast<int64_t>(sorted_.end() - std::lower_bound(sorted_.begin(), sorted_.end(), score));
  e.rate = e.total ? static_cast<double>(e.at_least) / static_cast<double>(e.total)
                   : std::numeric_limits<double>::quiet_NaN();
  e.rate_upper95 = UpperBound95(e.at_least, e.total);
  return e;
}

std::string KnmDistribution::Describe(double score) const {
  if (sorted_.empty()) {
    return "no known-non-match scores recorded yet: strength unknown (see docs/SCORES.md)";
  }
  const Exceedance e = At(score);
  char s[32];
  std::snprintf(s, sizeof s, "%g", score);
  std::string text = std::to_string(e.at_least) + " of " + std::to_string(e.total) +
                     " known non-matches score >= " + s + " (rate ";
  text += e.at_least == 0 ? "< " + Percent(e.rate_upper95)
                          : Percent(e.rate) + ", at most " + Percent(e.rate_upper95);
  text += ", 95 % bound)";
  return text;
}

}  // namespace bien

#include "matching/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace bien {
namespace {

// Continued fraction of the incomplete beta function (modified Lentz), as in
// Numerical Recipes' betacf; converges quickly for x < (a + 1) / (a + b + 2),
// in O(sqrt(max(a, b))) terms.
double BetaContinuedFraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  constexpr double kEps = 1e-16;
  const int max_terms = 1000 + static_cast<int>(20 * std::sqrt(std::max(a, b)));
  const double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1;
  double d = 1 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= max_terms; ++m) {
    const double dm = m, m2 = 2.0 * m;
    double aa = dm * (b - dm) * x / ((qam + m2) * (a + m2));  // even step
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + dm) * (qab + dm) * x / ((a + m2) * (qap + m2));  // odd step
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double step = d * c;
    h *= step;
    if (std::fabs(step - 1) < kEps) break;
  }
  return h;
}

// The regularized incomplete beta function I_x(a, b), a, b > 0.
double RegularizedIncompleteBeta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double log_front =
      std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1) / (a + b + 2)) return std::exp(log_front) * BetaContinuedFraction(a, b, x) / a;
  return 1 - std::exp(log_front) * BetaContinuedFraction(b, a, 1 - x) / b;
}

std::string Percent(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof buf, rate >= 0.1 ? "%.0f %%" : "%.2g %%", 100 * rate);
  return buf;
}

}  // namespace

double ClopperPearsonUpper(int64_t k, int64_t n, double confidence) {
  if (k < 0 || n < 0 || k > n) {
    throw Error("binomial bound: " + std::to_string(k) + " of " + std::to_string(n) +
                " is not a count out of a total");
  }
  if (!(confidence > 0 && confidence < 1)) {
    throw Error("binomial bound: the confidence must lie strictly between 0 and 1");
  }
  if (k == n) return 1.0;
  // P(X <= k | n, p) = 1 - I_p(k + 1, n - k), falling in p: find where
  // I_p(k + 1, n - k) reaches `confidence`.
  const double a = static_cast<double>(k) + 1, b = static_cast<double>(n - k);
  double lo = 0, hi = 1;
  for (int it = 0; it < 200 && hi - lo > 1e-15 * hi; ++it) {
    const double mid = lo + (hi - lo) / 2;
    (RegularizedIncompleteBeta(a, b, mid) < confidence ? lo : hi) = mid;
  }
  return hi;
}

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
  e.rate_upper95 = ClopperPearsonUpper(e.at_least, e.total);
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

#include "matching/cmc.h"

#include <zlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif
#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <opencv2/core.hpp>
#include <opencv2/core/hal/hal.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace bien {
namespace {

constexpr double kDegToRad = std::numbers::pi / 180.0;

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Angle in (-180, 180].
double WrapDeg(double a) {
  a = std::fmod(a, 360.0);
  if (a <= -180) a += 360;
  if (a > 180) a -= 360;
  return a;
}

// One resolution of a surface: standardised heights (zero mean, unit variance
// over the valid points; 0 elsewhere) and the validity mask (1 / 0), CV_32F.
// Pixel (x, y) of the level lies at ((x - cx) * px_um, (y - cy) * px_um)
// micrometres from the input surface's centre.
struct Level {
  cv::Mat z;
  cv::Mat m;
  double px_um = 0;
  double cx = 0;
  double cy = 0;
  int valid = 0;
};

Level MakeLevel(const Surface& s, double in_px_um, double out_px_um) {
  cv::Mat z(s.height, s.width, CV_32F), m(s.height, s.width, CV_32F);
  for (int y = 0; y < s.height; ++y) {
    const float* src = &s.z[static_cast<size_t>(y) * s.width];
    float* zr = z.ptr<float>(y);
    float* mr = m.ptr<float>(y);
    for (int x = 0; x < s.width; ++x) {
      const bool ok = std::isfinite(src[x]);
      zr[x] = ok ? src[x] : 0.f;
      mr[x] = ok ? 1.f : 0.f;
    }
  }
  const double f = out_px_um / in_px_um;  // input pixels per level pixel
  Level level;
  level.px_um = out_px_um;
  if (std::abs(f - 1.0) > 1e-6) {
    const int w = std::max(1, static_cast<int>(std::lround(s.width / f)));
    const int h = std::max(1, static_cast<int>(std::lround(s.height / f)));
    cv::Mat zm, mm;
    cv::resize(z, zm, cv::Size(w, h), 0, 0, f > 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    cv::resize(m, mm, cv::Size(w, h), 0, 0, f > 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    // Heights were zero where invalid: divide by the mask share, and keep a
    // level pixel only when most of its area was measured.
    z = cv::Mat::zeros(h, w, CV_32F);
    m = cv::Mat::zeros(h, w, CV_32F);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        const float share = mm.at<float>(y, x);
        if (share >= 0.5f) {
          z.at<float>(y, x) = zm.at<float>(y, x) / share;
          m.at<float>(y, x) = 1.f;
        }
      }
    }
    level.cx = s.width / (2 * f) - 0.5;
    level.cy = s.height / (2 * f) - 0.5;
  } else {
    level.cx = (s.width - 1) / 2.0;
    level.cy = (s.height - 1) / 2.0;
  }
  // Standardise over the valid points.
  const double n = cv::sum(m)[0];
  level.valid = static_cast<int>(n);
  if (n >= 2) {
    const double mean = cv::sum(z)[0] / n;
    cv::Mat centred = z - mean;
    centred = centred.mul(m);
    const double var = cv::sum(centred.mul(centred))[0] / n;
    const double sd = var > 0 ? std::sqrt(var) : 1.0;
    level.z = centred / sd;
  } else {
    level.z = z;
  }
  level.m = m;
  return level;
}

// Rounds a level's heights to half precision (IEEE binary16), the precision
// of the compact features (EncodeCmcFeatures): a surface prepared directly
// and one decoded from its features compare identically. Standardised
// heights keep about three significant digits, far below the scan's noise.
void QuantiseLevel(Level& level) {
  cv::Mat half;
  level.z.convertTo(half, CV_16F);
  half.convertTo(level.z, CV_32F);
}

// A canvas of odd side centred on the level's centre, large enough to hold
// every valid point under any rotation about that centre.
struct Canvas {
  cv::Mat z;  // standardised heights, 0 where invalid
  cv::Mat m;
  int side = 0;
};

// After warping z*m and m bilinearly: keep the points whose interpolation
// used only valid neighbours (mask ~1), undo the mask weighting there, and
// drop the rest.
void KeepFullyCovered(Canvas& c) {
  for (int y = 0; y < c.z.rows; ++y) {
    float* zr = c.z.ptr<float>(y);
    float* mr = c.m.ptr<float>(y);
    for (int x = 0; x < c.z.cols; ++x) {
      if (mr[x] >= 0.99f) {
        zr[x] /= mr[x];
        mr[x] = 1.f;
      } else {
        zr[x] = 0.f;
        mr[x] = 0.f;
      }
    }
  }
}

int CanvasSide(const Level& l) {
  double r2 = 0;
  for (int y = 0; y < l.m.rows; ++y) {
    const float* mr = l.m.ptr<float>(y);
    for (int x = 0; x < l.m.cols; ++x) {
      if (mr[x] > 0) r2 = std::max(r2, (x - l.cx) * (x - l.cx) + (y - l.cy) * (y - l.cy));
    }
  }
  return 2 * static_cast<int>(std::ceil(std::sqrt(r2))) + 3;
}

// Samples `l` rotated by `angle_deg` (registration convention: canvas point q
// shows the level's point p with q = Rot(angle) p) into a side x side canvas.
Canvas Rotated(const Level& l, double angle_deg, int side) {
  const double a = angle_deg * kDegToRad;
  const double c = std::cos(a), s = std::sin(a);
  const double half = (side - 1) / 2.0;
  // canvas (u, v) -> level pixel: p = Rot(-a) (u - half, v - half) + (cx, cy)
  cv::Mat map = (cv::Mat_<double>(2, 3) << c, s, -c * half - s * half + l.cx,  //
                 -s, c, s * half - c * half + l.cy);
  Canvas out;
  out.side = side;
  cv::Mat zm = l.z.mul(l.m);
  cv::warpAffine(zm, out.z, map, cv::Size(side, side), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                 cv::BORDER_CONSTANT, 0);
  cv::warpAffine(l.m, out.m, map, cv::Size(side, side), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                 cv::BORDER_CONSTANT, 0);
  KeepFullyCovered(out);
  return out;
}

// c = a * conj(b) for spectra in OpenCV's packed (CCS) layout of a real p x p
// DFT, p even: as cv::mulSpectrums(a, b, c, 0, true), bit for bit (it forms
// each complex product in double and rounds it to float; products of two
// floats are exact in double, so the order of the sums is all that matters).
void MulConj(const cv::Mat& a, const cv::Mat& b, cv::Mat& c) {
  const int p = a.rows, q = a.cols;
  CV_Assert(p % 2 == 0 && q % 2 == 0 && b.size() == a.size() && a.type() == CV_32F &&
            b.type() == CV_32F);
  c.create(p, q, CV_32F);
  auto mul = [](float ar, float ai, float br, float bi, float* cr, float* ci) {
    *cr = static_cast<float>(static_cast<double>(ar) * br + static_cast<double>(ai) * bi);
    *ci = static_cast<float>(static_cast<double>(ai) * br - static_cast<double>(ar) * bi);
  };
  // Columns 0 and q - 1 hold the DFT of the first and last column, packed
  // down the column: real at rows 0 and p - 1, complex pairs between.
  for (const int x : {0, q - 1}) {
    c.at<float>(0, x) = a.at<float>(0, x) * b.at<float>(0, x);
    c.at<float>(p - 1, x) = a.at<float>(p - 1, x) * b.at<float>(p - 1, x);
    for (int y = 1; y < p - 1; y += 2) {
      mul(a.at<float>(y, x), a.at<float>(y + 1, x), b.at<float>(y, x), b.at<float>(y + 1, x),
          &c.at<float>(y, x), &c.at<float>(y + 1, x));
    }
  }
  // Elsewhere complex pairs along the rows.
  for (int y = 0; y < p; ++y) {
    const float* ar = a.ptr<float>(y);
    const float* br = b.ptr<float>(y);
    float* cr = c.ptr<float>(y);
    int x = 1;
#if defined(__SSE2__)
    // Two products at a time, the same double arithmetic.
    for (; x + 4 <= q - 1; x += 4) {
      const __m128 av = _mm_loadu_ps(ar + x), bv = _mm_loadu_ps(br + x);
      const __m128d a0 = _mm_cvtps_pd(av), a1 = _mm_cvtps_pd(_mm_movehl_ps(av, av));
      const __m128d b0 = _mm_cvtps_pd(bv), b1 = _mm_cvtps_pd(_mm_movehl_ps(bv, bv));
      const __m128d p0 = _mm_mul_pd(a0, b0), p1 = _mm_mul_pd(a1, b1);  // (ar br, ai bi)
      const __m128d q0 = _mm_mul_pd(a0, _mm_shuffle_pd(b0, b0, 1));    // (ar bi, ai br)
      const __m128d q1 = _mm_mul_pd(a1, _mm_shuffle_pd(b1, b1, 1));
      const __m128d re = _mm_add_pd(_mm_unpacklo_pd(p0, p1), _mm_unpackhi_pd(p0, p1));
      const __m128d im = _mm_sub_pd(_mm_unpackhi_pd(q0, q1), _mm_unpacklo_pd(q0, q1));
      const __m128 lo = _mm_cvtpd_ps(_mm_unpacklo_pd(re, im));
      const __m128 hi = _mm_cvtpd_ps(_mm_unpackhi_pd(re, im));
      _mm_storeu_ps(cr + x, _mm_movelh_ps(lo, hi));
    }
#endif
    for (; x < q - 1; x += 2) mul(ar[x], ar[x + 1], br[x], br[x + 1], cr + x, cr + x + 1);
  }
}

// Real DFTs of one size p x p, planned once and reused within a comparison.
// cv::dft plans an OpenCV hal::DFT2D on every call and runs it; this keeps the
// plans, so the results are bit for bit those of cv::dft with the same
// nonzeroRows, without planning and allocating per call. The inverse computes
// only the output rows that are read (OpenCV's inverse runs the columns
// first, then each wanted row: the same values). Not thread-safe.
class Fft {
 public:
  // inverse_rows: the output rows a correlation needs (the rest come out 0).
  Fft(int p, int inverse_rows)
      : p_(p),
        inverse_(cv::hal::DFT2D::create(
            p, p, CV_32F, 1, 1, CV_HAL_DFT_IS_CONTINUOUS | CV_HAL_DFT_INVERSE | CV_HAL_DFT_SCALE,
            inverse_rows)),
        frame_(cv::Mat::zeros(p, p, CV_32F)),
        prod_(p, p, CV_32F) {}
  // The part `r` of a p x p frame that is zero outside `r`, for the caller
  // to fill whole; overwritten by the next call. Cleared only when an earlier
  // call wrote outside `r`.
  cv::Mat Place(const cv::Rect& r) {
    if ((dirty_ | r) != r) frame_.setTo(0);
    dirty_ = r;
    return frame_(r);
  }
  const cv::Mat& frame() const { return frame_; }
  // spec = DFT of a p x p frame whose rows from `rows` on are zero (as
  // cv::dft(frame, spec, 0, rows)).
  void Forward(const cv::Mat& frame, int rows, cv::Mat& spec) {
    CV_Assert(frame.rows == p_ && frame.cols == p_ && frame.type() == CV_32F);
    cv::Ptr<cv::hal::DFT2D>* plan = nullptr;
    for (auto& [r, f] : forward_) {
      if (r == rows) plan = &f;
    }
    if (!plan) {
      forward_.emplace_back(
          rows, cv::hal::DFT2D::create(p_, p_, CV_32F, 1, 1, CV_HAL_DFT_IS_CONTINUOUS, rows));
      plan = &forward_.back().second;
    }
    spec.create(p_, p_, CV_32F);
    (*plan)->apply(frame.data, frame.step, spec.data, spec.step);
  }
  // DFT of `a` placed at (x0, y0) in a p x p frame of zeros (as cv::dft of
  // that frame with nonzeroRows y0 + a.rows).
  void Forward(const cv::Mat& a, cv::Mat& spec, int x0 = 0, int y0 = 0) {
    cv::Mat part = Place(cv::Rect(x0, y0, a.cols, a.rows));
    a.copyTo(part);
    Forward(frame_, y0 + a.rows, spec);
  }
  // Cross-correlation c(k) = sum_u a(u) t(u + k) from spectra A and T (as
  // cv::mulSpectrums(T, A, conjB) and a scaled real inverse cv::dft), in its
  // first inverse_rows rows.
  void Correlate(const cv::Mat& t_spec, const cv::Mat& a_spec, cv::Mat& out) {
    MulConj(t_spec, a_spec, prod_);
    out.create(p_, p_, CV_32F);
    inverse_->apply(prod_.data, prod_.step, out.data, out.step);
  }

 private:
  int p_;
  cv::Ptr<cv::hal::DFT2D> inverse_;
  std::vector<std::pair<int, cv::Ptr<cv::hal::DFT2D>>> forward_;
  cv::Mat frame_;
  cv::Rect dirty_;  // where frame_ may be non-zero
  cv::Mat prod_;
};

// Complex DFTs of one power-of-two size p x p on split real / imaginary
// planes (row-major p x p floats each), for the cell searches: radix-2
// passes along the columns, where each butterfly combines two whole rows (a
// loop the compiler vectorises), with a transpose between the two passes.
// The forward transform takes natural order and leaves the spectrum
// transposed and in bit-reversed order; the inverse takes that layout back
// to natural order. Products of two spectra are element-wise, so the layout
// never needs sorting. One complex transform carries two real signals (re
// and im), where OpenCV's real DFTs take one each.
class Fft2 {
 public:
  explicit Fft2(int p) : p_(p), wr_(p / 2), wi_(p / 2), neg_(p), half_row_(p, -1) {
    CV_Assert(p >= 4 && (p & (p - 1)) == 0);
    for (int k = 0; k < p / 2; ++k) {
      const double a = -2.0 * std::numbers::pi * k / p;
      wr_[k] = static_cast<float>(std::cos(a));
      wi_[k] = static_cast<float>(std::sin(a));
    }
    int bits = 0;
    while ((1 << bits) < p) ++bits;
    std::vector<int> rev(p);
    for (int i = 0; i < p; ++i) {
      for (int b = 0; b < bits; ++b) rev[i] |= ((i >> b) & 1) << (bits - 1 - b);
    }
    int rows = 0;
    for (int i = 0; i < p; ++i) {
      neg_[i] = rev[(p - rev[i]) & (p - 1)];
      if (rev[i] <= p / 2) half_row_[i] = rows++;
    }
  }
  int size() const { return p_; }
  // The spectrum of a real signal is Hermitian, X(-k) = conj X(k): its rows
  // (of the forward's layout) with frequency 0..p/2 are enough. HalfRow(i) is
  // the place of row i among those p/2 + 1 rows, or -1 for a row to be read
  // as conj(row Neg(i) at columns Neg(j)).
  int HalfRow(int i) const { return half_row_[i]; }
  int Neg(int i) const { return neg_[i]; }
  // In place: spectrum (transposed, bit-reversed) of re + i im.
  void Forward(float* re, float* im) const {
    Dif(re, im, p_);
    Transpose(re);
    Transpose(im);
    Dif(re, im, p_);
  }
  // In place, unscaled: the natural-order signal of a spectrum in the
  // forward's layout; only the first `cols` columns (rounded up to a
  // multiple of 4) of the output are computed, the rest is garbage.
  void Inverse(float* re, float* im, int cols) const {
    Dit(re, im, p_);
    Transpose(re);
    Transpose(im);
    Dit(re, im, std::min(p_, (cols + 3) / 4 * 4));
  }

 private:
  // (a, b) <- (a + b, a - b), row by row.
  static void Butterfly(float* __restrict ar, float* __restrict ai, float* __restrict br,
                        float* __restrict bi, int width) {
    for (int x = 0; x < width; ++x) {
      const float xr = ar[x] - br[x], xi = ai[x] - bi[x];
      ar[x] += br[x];
      ai[x] += bi[x];
      br[x] = xr;
      bi[x] = xi;
    }
  }
  // Decimation in frequency along the columns (forward, natural -> bit
  // reversed), on the first `width` floats of each row.
  void Dif(float* re, float* im, int width) const {
    const int p = p_;
    for (int len = p; len >= 2; len /= 2) {
      const int half = len / 2, stride = p / len;
      for (int s = 0; s < p; s += len) {
        for (int k = 0; k < half; ++k) {
          const float c = wr_[k * stride], d = wi_[k * stride];
          float* __restrict ar = re + static_cast<size_t>(s + k) * p;
          float* __restrict ai = im + static_cast<size_t>(s + k) * p;
          float* __restrict br = re + static_cast<size_t>(s + k + half) * p;
          float* __restrict bi = im + static_cast<size_t>(s + k + half) * p;
          if (k == 0) {  // twiddle 1: no products (the same values)
            Butterfly(ar, ai, br, bi, width);
            continue;
          }
          for (int x = 0; x < width; ++x) {
            const float xr = ar[x] - br[x], xi = ai[x] - bi[x];
            ar[x] += br[x];
            ai[x] += bi[x];
            br[x] = xr * c - xi * d;
            bi[x] = xr * d + xi * c;
          }
        }
      }
    }
  }
  // Decimation in time along the columns with conjugate twiddles (inverse,
  // bit reversed -> natural), on the first `width` floats of each row.
  void Dit(float* re, float* im, int width) const {
    const int p = p_;
    for (int len = 2; len <= p; len *= 2) {
      const int half = len / 2, stride = p / len;
      for (int s = 0; s < p; s += len) {
        for (int k = 0; k < half; ++k) {
          const float c = wr_[k * stride], d = -wi_[k * stride];
          float* __restrict ar = re + static_cast<size_t>(s + k) * p;
          float* __restrict ai = im + static_cast<size_t>(s + k) * p;
          float* __restrict br = re + static_cast<size_t>(s + k + half) * p;
          float* __restrict bi = im + static_cast<size_t>(s + k + half) * p;
          if (k == 0) {  // twiddle 1
            Butterfly(ar, ai, br, bi, width);
            continue;
          }
          for (int x = 0; x < width; ++x) {
            const float tr = br[x] * c - bi[x] * d, ti = br[x] * d + bi[x] * c;
            br[x] = ar[x] - tr;
            bi[x] = ai[x] - ti;
            ar[x] += tr;
            ai[x] += ti;
          }
        }
      }
    }
  }
  // In place, in 4 x 4 blocks (p is a multiple of 4).
  void Transpose(float* a) const {
    const size_t p = static_cast<size_t>(p_);
    for (size_t by = 0; by < p; by += 4) {
      for (size_t bx = by; bx < p; bx += 4) {
        float* u = a + by * p + bx;
        float* v = a + bx * p + by;
#if defined(__SSE2__)
        __m128 u0 = _mm_loadu_ps(u), u1 = _mm_loadu_ps(u + p), u2 = _mm_loadu_ps(u + 2 * p),
               u3 = _mm_loadu_ps(u + 3 * p);
        _MM_TRANSPOSE4_PS(u0, u1, u2, u3);
        if (bx == by) {
          _mm_storeu_ps(u, u0);
          _mm_storeu_ps(u + p, u1);
          _mm_storeu_ps(u + 2 * p, u2);
          _mm_storeu_ps(u + 3 * p, u3);
          continue;
        }
        __m128 v0 = _mm_loadu_ps(v), v1 = _mm_loadu_ps(v + p), v2 = _mm_loadu_ps(v + 2 * p),
               v3 = _mm_loadu_ps(v + 3 * p);
        _MM_TRANSPOSE4_PS(v0, v1, v2, v3);
        _mm_storeu_ps(v, u0);
        _mm_storeu_ps(v + p, u1);
        _mm_storeu_ps(v + 2 * p, u2);
        _mm_storeu_ps(v + 3 * p, u3);
        _mm_storeu_ps(u, v0);
        _mm_storeu_ps(u + p, v1);
        _mm_storeu_ps(u + 2 * p, v2);
        _mm_storeu_ps(u + 3 * p, v3);
#else
        for (size_t y = 0; y < 4; ++y) {
          for (size_t x = bx == by ? y + 1 : 0; x < 4; ++x) std::swap(u[y * p + x], v[x * p + y]);
        }
#endif
      }
    }
  }

  int p_;
  std::vector<float> wr_, wi_;  // exp(-2 pi i k / p), k < p / 2
  std::vector<int> neg_;        // the place of frequency -k
  std::vector<int> half_row_;
};

struct Pose {
  double angle_deg = 0;
  double dx_um = 0;
  double dy_um = 0;
  double score = -2;
};

}  // namespace

// ---------------------------------------------------------------- prepared

struct PreparedCell {
  CmcCell info;      // grid position, rectangle in input pixels, valid share
  cv::Rect rect;     // in fine-level pixels
  double cx_um = 0;  // cell centre relative to the surface centre
  double cy_um = 0;
  // Spectra of r*m, r^2*m and m at the cell FFT size: OpenCV's packed real
  // DFTs, or when that size is a power of two (fast) Fft2 spectra, scaled by
  // 1 / size^2, in `spec` as re and im of each, rows 0..size/2 of the
  // frequencies only (Fft2::HalfRow).
  cv::Mat spec_a;
  cv::Mat spec_a2;
  cv::Mat spec_m;
  std::vector<float> spec;
  int valid = 0;
  double sum_r = 0;   // of the standardised cell over its valid points (about 0)
  double sum_rr = 0;  // (about the valid count)
};

class CmcPrepared {
 public:
  std::string source;
  double in_px_um = 0;
  int in_width = 0;
  int in_height = 0;
  Level coarse;
  Level fine;
  int coarse_side = 0;  // rotation-safe canvas side at the coarse level
  int cell_side = 0;    // fine pixels
  int window = 0;       // search radius in fine pixels
  int cell_fft = 0;     // FFT size of a cell search
  std::vector<PreparedCell> cells;
  // Tells prepared surfaces apart for the per-thread cache of the coarse
  // reference spectra (an address may be reused after a surface is freed).
  const uint64_t serial = next_serial_.fetch_add(1, std::memory_order_relaxed);

 private:
  static inline std::atomic<uint64_t> next_serial_{1};
};

void CmcOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("CMC options: " + what); };
  auto positive = [&](double v, const char* name) {
    if (!(std::isfinite(v) && v > 0)) bad(std::string(name) + " must be positive");
  };
  positive(cell_pixel_um, "cell_pixel_um");
  positive(coarse_pixel_um, "coarse_pixel_um");
  if (coarse_pixel_um < cell_pixel_um) bad("coarse_pixel_um must not be finer than cell_pixel_um");
  if (cells_per_side < 2 || cells_per_side > 32) bad("cells_per_side must be 2..32");
  if (!(min_cell_valid > 0 && min_cell_valid <= 1)) bad("min_cell_valid must be in (0, 1]");
  if (!(coarse_step_deg > 0 && coarse_step_deg <= 30)) bad("coarse_step_deg must be in (0, 30]");
  if (coarse_candidates < 1 || coarse_candidates > 16) bad("coarse_candidates must be 1..16");
  if (choice_cells < 1) bad("choice_cells must be at least 1");
  if (!(candidate_separation_deg >= 0 && candidate_separation_deg < 180)) {
    bad("candidate_separation_deg must be in [0, 180)");
  }
  if (!(fine_range_deg >= 0 && fine_range_deg <= 45)) bad("fine_range_deg must be in [0, 45]");
  positive(fine_step_deg, "fine_step_deg");
  positive(search_radius_um, "search_radius_um");
  positive(max_shift_um, "max_shift_um");
  if (!(min_ccf > 0 && min_ccf < 1)) bad("min_ccf must be in (0, 1)");
  if (!(prune_ccf >= 0 && prune_ccf <= min_ccf)) bad("prune_ccf must be in [0, min_ccf]");
  if (!(angle_tolerance_deg >= 0)) bad("angle_tolerance_deg must not be negative");
  if (!(translation_tolerance_um >= 0)) bad("translation_tolerance_um must not be negative");
  if (!(min_overlap > 0 && min_overlap <= 1)) bad("min_overlap must be in (0, 1]");
}

namespace {
void PrepareCells(CmcPrepared& prepared, const CmcOptions& options);
}  // namespace

namespace {

// The two levels of a surface (checked), heights rounded as the features
// keep them: the start of PrepareCmc and of EncodeCmcFeatures(Surface).
std::shared_ptr<CmcPrepared> MakeLevels(const Surface& surface, const std::string& source,
                                        const CmcOptions& options) {
  options.Check();
  if (surface.width <= 0 || surface.height <= 0 || surface.z.empty()) {
    throw Error(source + ": empty surface");
  }
  if (!(surface.dx_m > 0) || std::abs(surface.dx_m - surface.dy_m) > 1e-3 * surface.dx_m) {
    throw Error(source + ": CMC needs square pixels (x " + Num(surface.dx_m * 1e6) + " um, y " +
                Num(surface.dy_m * 1e6) + " um); preprocess the scan first");
  }
  if (surface.ValidCount() == 0) throw Error(source + ": all points are NaN");
  auto p = std::make_shared<CmcPrepared>();
  p->source = source;
  p->in_px_um = surface.dx_m * 1e6;
  p->in_width = surface.width;
  p->in_height = surface.height;
  const double cell_px = std::max(options.cell_pixel_um, p->in_px_um);
  const double coarse_px = std::max(options.coarse_pixel_um, cell_px);
  p->fine = MakeLevel(surface, p->in_px_um, cell_px);
  p->coarse = MakeLevel(surface, p->in_px_um, coarse_px);
  QuantiseLevel(p->fine);
  QuantiseLevel(p->coarse);
  return p;
}

}  // namespace

std::shared_ptr<const CmcPrepared> PrepareCmc(const Surface& surface, const std::string& source,
                                              const CmcOptions& options) {
  auto p = MakeLevels(surface, source, options);
  PrepareCells(*p, options);
  return p;
}

namespace {

// The rest of preparation, from the two levels (shared by PrepareCmc and
// DecodeCmcFeatures).
void PrepareCells(CmcPrepared& prepared, const CmcOptions& options) {
  CmcPrepared* p = &prepared;
  const std::string& source = p->source;
  const double cell_px = p->fine.px_um;
  p->coarse_side = CanvasSide(p->coarse);

  // Grid over the valid bounding box at the fine level.
  const Level& f = p->fine;
  cv::Mat mask8;
  f.m.convertTo(mask8, CV_8U);
  const cv::Rect box = cv::boundingRect(mask8);
  const int n = options.cells_per_side;
  p->cell_side = std::max(
      4, static_cast<int>(std::ceil(std::max(box.width, box.height) / static_cast<double>(n))));
  // The search radius is at least search_radius_um, widened to fill the FFT
  // size (a power of two when one is close: OpenCV is fastest there).
  const int min_window =
      std::max(1, static_cast<int>(std::lround(options.search_radius_um / f.px_um)));
  const int need = p->cell_side + 2 * min_window;
  int fft = cv::getOptimalDFTSize(need);
  int pow2 = 1;
  while (pow2 < need) pow2 *= 2;
  if (pow2 <= need * 1.15) fft = pow2;
  p->cell_fft = fft;
  p->window = (fft - p->cell_side) / 2;
  const double f_in = cell_px / p->in_px_um;  // input pixels per fine pixel
  const bool fast = (p->cell_fft & (p->cell_fft - 1)) == 0;
  Fft cell_dft(p->cell_fft, p->cell_fft);
  std::unique_ptr<Fft2> cell_fft2;
  if (fast) cell_fft2 = std::make_unique<Fft2>(p->cell_fft);
  for (int row = 0; row < n; ++row) {
    for (int col = 0; col < n; ++col) {
      PreparedCell cell;
      cell.info.row = row;
      cell.info.col = col;
      // Centre the grid on the box.
      const int x0 = box.x + (box.width - n * p->cell_side) / 2 + col * p->cell_side;
      const int y0 = box.y + (box.height - n * p->cell_side) / 2 + row * p->cell_side;
      cell.rect = cv::Rect(x0, y0, p->cell_side, p->cell_side);
      const cv::Rect inside = cell.rect & cv::Rect(0, 0, f.m.cols, f.m.rows);
      cell.valid = inside.area() > 0 ? static_cast<int>(cv::sum(f.m(inside))[0]) : 0;
      cell.info.valid_share = static_cast<double>(cell.valid) / cell.rect.area();
      cell.info.x = static_cast<int>(std::lround(x0 * f_in));
      cell.info.y = static_cast<int>(std::lround(y0 * f_in));
      cell.info.width = static_cast<int>(std::lround(p->cell_side * f_in));
      cell.info.height = cell.info.width;
      cell.cx_um = (x0 + (p->cell_side - 1) / 2.0 - f.cx) * f.px_um;
      cell.cy_um = (y0 + (p->cell_side - 1) / 2.0 - f.cy) * f.px_um;
      cell.info.used = cell.info.valid_share >= options.min_cell_valid && cell.valid >= 16;
      if (cell.info.used) {
        cv::Mat r = cv::Mat::zeros(p->cell_side, p->cell_side, CV_32F);
        cv::Mat m = cv::Mat::zeros(p->cell_side, p->cell_side, CV_32F);
        f.z(inside).copyTo(r(cv::Rect(inside.x - x0, inside.y - y0, inside.width, inside.height)));
        f.m(inside).copyTo(m(cv::Rect(inside.x - x0, inside.y - y0, inside.width, inside.height)));
        // Standardise the cell over its own valid points.
        const double cn = cv::sum(m)[0];
        const double mean = cv::sum(r)[0] / cn;
        cv::Mat c = (r - mean).mul(m);
        const double sd = std::sqrt(std::max(cv::sum(c.mul(c))[0] / cn, 1e-12));
        c /= sd;
        cell.sum_r = cv::sum(c)[0];
        cell.sum_rr = cv::sum(c.mul(c))[0];
        if (fast) {
          const int q = p->cell_fft;
          const size_t plane = static_cast<size_t>(q) * q;
          const size_t half = static_cast<size_t>(q / 2 + 1) * q;
          std::vector<float> full(2 * plane);
          cell.spec.assign(6 * half, 0.f);
          const cv::Mat planes[3] = {c, c.mul(c), m};
          for (int k = 0; k < 3; ++k) {
            std::fill(full.begin(), full.end(), 0.f);
            for (int y = 0; y < p->cell_side; ++y) {
              std::copy_n(planes[k].ptr<float>(y), p->cell_side, &full[static_cast<size_t>(y) * q]);
            }
            cell_fft2->Forward(full.data(), full.data() + plane);
            const float scale = 1.f / static_cast<float>(plane);  // a power of two: exact
            float* re = cell.spec.data() + 2 * k * half;
            for (int i = 0; i < q; ++i) {
              const int h = cell_fft2->HalfRow(i);
              if (h < 0) continue;
              for (int j = 0; j < q; ++j) {
                re[static_cast<size_t>(h) * q + j] = full[static_cast<size_t>(i) * q + j] * scale;
                re[half + static_cast<size_t>(h) * q + j] =
                    full[plane + static_cast<size_t>(i) * q + j] * scale;
              }
            }
          }
        } else {
          cell_dft.Forward(c, cell.spec_a);
          cell_dft.Forward(c.mul(c), cell.spec_a2);
          cell_dft.Forward(m, cell.spec_m);
        }
      }
      p->cells.push_back(std::move(cell));
    }
  }
  int used = 0;
  for (const auto& c : p->cells) used += c.info.used ? 1 : 0;
  if (used == 0) {
    throw Error(source + ": no cell has enough valid points (at least " +
                Num(100 * options.min_cell_valid) + " % of a cell)");
  }
}

}  // namespace

namespace {

// Spectra of one reference rotated to the angles of the coarse grid, two
// angles per complex spectrum (empty until computed).
struct CoarseSpectra {
  uint64_t serial = 0;  // CmcPrepared::serial of the reference
  int p = 0;            // DFT size
  int steps = 0;
  std::vector<std::vector<float>> spec;  // per pair of angles: re, im planes
};

// This thread's cache entry for (reference, p, steps), made the most recent;
// the least recent of kCoarseCacheEntries is dropped for a new one (each
// about 9.4 MB at p = 128, the size for a Fadul scan).
CoarseSpectra& CoarseSpectraFor(uint64_t serial, int p, int steps) {
  constexpr size_t kCoarseCacheEntries = 2;
  thread_local std::vector<CoarseSpectra> cache;
  auto it = std::find_if(cache.begin(), cache.end(), [&](const CoarseSpectra& e) {
    return e.serial == serial && e.p == p && e.steps == steps;
  });
  if (it == cache.end()) {
    if (cache.size() < kCoarseCacheEntries) cache.emplace_back();
    it = cache.end() - 1;
    *it = CoarseSpectra{serial, p, steps, std::vector<std::vector<float>>((steps + 1) / 2)};
  }
  std::rotate(cache.begin(), it, it + 1);
  return cache.front();
}

// Full-circle search at the coarse level: the reference rotated in steps over
// 360 degrees, each angle correlated with the target over translations within
// max_shift_um. The score is the sum of products of the standardised heights
// over the overlap divided by the smaller valid count: the NCC weighted by the
// share of the surface that overlaps, which needs one FFT pair per angle (no
// overlap count) and favours poses where most of the surface takes part. The
// peak over angle is narrow (about +-2 degrees: at 1.5 mm from the centre a
// degree moves a point 26 um), so the step must be fine; cheap scores pay for
// that.
std::vector<Pose> CoarseCandidates(const CmcPrepared& ref, const CmcPrepared& tgt,
                                   const CmcOptions& o) {
  const Level& r = ref.coarse;
  const Level& t = tgt.coarse;
  // Each surface on its own canvas (odd sides), centres aligned.
  const int side = ref.coarse_side, side_t = tgt.coarse_side;
  const int off = (side_t - side) / 2;  // target canvas centre - reference canvas centre
  const int dm = std::max(1, static_cast<int>(std::lround(o.max_shift_um / r.px_um)));
  int p = 4;  // no wrap-around over shifts within +-dm
  while (p < std::max(side, side_t) + 2 * dm) p *= 2;
  const Canvas tc = Rotated(t, 0, side_t);
  const Fft2 fft(p);
  const size_t plane = static_cast<size_t>(p) * p;
  // d(k) = sum_v t'(v) r(v + k) with the target t' placed at -off - dm
  // (wrapping round the frame), so that d(2 dm - k) is the score at shift
  // k - dm per axis (reference point u onto the target point u + k - dm
  // from the centres): the shifts read are the first 2 dm + 1 rows and
  // columns. d = IDFT(conj(T) R): two rotations r_a + i r_b in one
  // transform give d_a + i d_b.
  std::vector<float> buf(4 * plane, 0.f);
  float* tr = buf.data();
  float* ti = tr + plane;
  float* zr = tr + 2 * plane;
  float* zi = tr + 3 * plane;
  const int shift = 2 * p - off - dm;  // (y + shift) % p
  for (int y = 0; y < side_t; ++y) {
    const float* src = tc.z.ptr<float>(y);
    float* dst = tr + static_cast<size_t>((y + shift) % p) * p;
    for (int x = 0; x < side_t; ++x) dst[(x + shift) % p] = src[x];
  }
  fft.Forward(tr, ti);
  const double full = std::min(r.valid, t.valid);
  const double scale = 1.0 / (static_cast<double>(plane) * full);
  const double half = (side - 1) / 2.0;

  auto rotation = [&](double angle) {
    const double a = angle * kDegToRad;
    const double c = std::cos(a), s = std::sin(a);
    return cv::Mat((cv::Mat_<double>(2, 3) << c, s, -c * half - s * half + r.cx,  //
                    -s, c, s * half - c * half + r.cy));
  };
  // Heights are 0 where invalid, so a bilinear warp of the heights alone is
  // enough here: edge pixels mix in zeros, which only lowers them. Warped
  // straight into the zero frame of the DFT.
  auto rotate_into = [&](double angle, float* frame) {
    cv::Mat rz(side, side, CV_32F, frame, static_cast<size_t>(p) * sizeof(float));
    cv::warpAffine(r.z, rz, rotation(angle), cv::Size(side, side),
                   cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT, 0);
    CV_Assert(rz.data == reinterpret_cast<uchar*>(frame));
  };
  auto best_shift = [&](const float* d, double angle) {
    Pose pose;
    pose.angle_deg = angle;
    for (int ky = 0; ky <= 2 * dm; ++ky) {
      const float* row = d + static_cast<size_t>(2 * dm - ky) * p + 2 * dm;
      for (int kx = 0; kx <= 2 * dm; ++kx) {
        const double score = row[-kx] * scale;
        if (score > pose.score) {
          pose.score = score;
          pose.dx_um = (kx - dm) * r.px_um;
          pose.dy_um = (ky - dm) * r.px_um;
        }
      }
    }
    return pose;
  };
  const int steps = std::max(1, static_cast<int>(std::lround(360.0 / o.coarse_step_deg)));
  const double step = 360.0 / steps;
  // The spectra of the rotated reference depend only on the reference, the
  // DFT size and the angle step: kept per thread for the next comparison of
  // the same reference (a query compared with many candidates), unless they
  // would take more than 16 MB (Fadul: 9.4 MB at p = 128; p = 256 would not
  // be kept).
  const bool keep = (steps + 1) / 2 * 2 * plane * sizeof(float) <= (size_t{16} << 20);
  CoarseSpectra* cache = keep ? &CoarseSpectraFor(ref.serial, p, steps) : nullptr;
  // Scores of the reference rotated by angle a and (when `two`) by b; `pair`
  // >= 0 for the grid angles 2 pair and 2 pair + 1 (cached spectra).
  auto evaluate = [&](double a, double b, bool two, Pose* pa, Pose* pb, int pair = -1) {
    const float* sr = zr;
    const float* si = zi;
    if (!cache) pair = -1;
    if (pair >= 0 && !cache->spec[pair].empty()) {
      sr = cache->spec[pair].data();
      si = sr + plane;
    } else {
      std::fill(zr, zr + 2 * plane, 0.f);
      rotate_into(a, zr);
      if (two) rotate_into(b, zi);
      fft.Forward(zr, zi);
      if (pair >= 0) cache->spec[pair].assign(zr, zr + 2 * plane);
    }
    for (size_t i = 0; i < plane; ++i) {  // conj(T) Z
      const float xr = tr[i] * sr[i] + ti[i] * si[i];
      const float xi = tr[i] * si[i] - ti[i] * sr[i];
      zr[i] = xr;
      zi[i] = xi;
    }
    fft.Inverse(zr, zi, 2 * dm + 1);
    *pa = best_shift(zr, a);
    if (two) *pb = best_shift(zi, b);
  };
  std::vector<Pose> best(steps);
  for (int i = 0; i < steps; i += 2) {
    const bool two = i + 1 < steps;
    evaluate(WrapDeg(i * step), WrapDeg((i + 1) * step), two, &best[i],
             two ? &best[i + 1] : nullptr, i / 2);
  }
  std::vector<Pose> order = best;
  std::sort(order.begin(), order.end(), [](const Pose& a, const Pose& b) {
    return a.score != b.score ? a.score > b.score : a.angle_deg < b.angle_deg;
  });
  // Valid reference points that land on valid target points under a pose.
  auto overlap = [&](const Pose& pose) {
    cv::Mat rm;
    cv::warpAffine(r.m, rm, rotation(pose.angle_deg), cv::Size(side, side),
                   cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT, 0);
    const int sx = static_cast<int>(std::lround(pose.dx_um / r.px_um)) + off;
    const int sy = static_cast<int>(std::lround(pose.dy_um / r.px_um)) + off;
    int n = 0;
    for (int y = std::max(0, -sy); y < std::min(side, side_t - sy); ++y) {
      const float* a = rm.ptr<float>(y);
      const float* b = tc.m.ptr<float>(y + sy);
      for (int x = std::max(0, -sx); x < std::min(side, side_t - sx); ++x) {
        n += a[x] >= 0.99f && b[x + sx] > 0.f;
      }
    }
    return n;
  };
  // Local maxima over angle, best first, separated by candidate_separation_deg,
  // where at least min_overlap of the smaller surface overlaps.
  std::vector<Pose> out;
  for (const Pose& c : order) {
    if (c.score <= -2) break;
    bool near = false;
    for (const Pose& k : out) {
      near = near || std::abs(WrapDeg(c.angle_deg - k.angle_deg)) < o.candidate_separation_deg;
    }
    if (!near && overlap(c) >= o.min_overlap * full) out.push_back(c);
    if (static_cast<int>(out.size()) == o.coarse_candidates) break;
  }
  // Refine each candidate's angle between the steps: the vertex of the
  // parabola through the scores at its angle and its two neighbours, kept
  // when it scores at least as well.
  for (Pose& c : out) {
    const int i = static_cast<int>(std::lround(WrapDeg(c.angle_deg) / step + steps)) % steps;
    const double sm = best[(i + steps - 1) % steps].score, sp = best[(i + 1) % steps].score;
    const double curvature = sm - 2 * c.score + sp;
    if (sm <= -2 || sp <= -2 || curvature >= 0) continue;
    const double delta = std::clamp(0.5 * (sm - sp) / curvature, -0.5, 0.5);
    if (std::abs(delta) < 0.05) continue;
    Pose refined;
    evaluate(WrapDeg(c.angle_deg + delta * step), 0, false, &refined, nullptr);
    if (refined.score >= c.score) c = refined;
  }
  return out;
}

// Buffers of the cell searches of one reference against one target, reused
// from cell to cell and angle to angle (allocation-free after the first).
struct CellWork {
  explicit CellWork(const CmcPrepared& ref) : fft(ref.cell_fft, 2 * ref.window + 1) {
    if (!ref.cells.empty() && ref.cell_fft > 0 && (ref.cell_fft & (ref.cell_fft - 1)) == 0) {
      fft2 = std::make_unique<Fft2>(ref.cell_fft);
      buf.resize(13 * static_cast<size_t>(ref.cell_fft) * ref.cell_fft);
    }
  }
  Fft fft;                     // at the cell FFT size; inverses keep the 2w + 1 shift rows
  std::unique_ptr<Fft2> fft2;  // when the cell FFT size is a power of two
  std::vector<float> buf;      // its planes: two spectra, four products, rows
  Canvas warped;               // the target in the reference frame at the current angle
  cv::Mat xy, alpha;           // warp maps
  std::vector<int> delta;
  cv::Mat t, n, tt;                         // region around a cell: heights, mask, squared heights
  cv::Mat ft, fn, ftt;                      // their spectra
  cv::Mat c_rt, c_r, c_rr, c_n, c_t, c_tt;  // correlations (full frames)
};

// cv::warpAffine(src, dst, m, dst.size(), INTER_LINEAR | WARP_INVERSE_MAP,
// BORDER_CONSTANT, 0) on the rectangle `roi` of dst only (and the same for
// src2, dst2), pixel for pixel the
// same: OpenCV's fixed-point map (hal::warpAffine: coordinates in 1/1024
// pixel, rounded to 1/32 for the bilinear weights) computed for those pixels
// and handed to cv::remap, as warpAffine does block by block.
// Both `src` and `src2` (same size) into `dst` and `dst2`, with one map.
void WarpAffineRect(const cv::Mat& src, cv::Mat& dst, const cv::Mat& src2, cv::Mat& dst2,
                    const double m[6], const cv::Rect& roi, cv::Mat& xy, cv::Mat& alpha,
                    std::vector<int>& delta) {
  constexpr int kAbBits = 10, kAbScale = 1 << kAbBits;
  constexpr int kBits = cv::INTER_BITS, kTab = cv::INTER_TAB_SIZE;
  constexpr int kRoundDelta = kAbScale / kTab / 2;
  xy.create(roi.height, roi.width, CV_16SC2);
  alpha.create(roi.height, roi.width, CV_16UC1);
  delta.resize(2 * static_cast<size_t>(roi.width));
  int* ad = delta.data();
  int* bd = ad + roi.width;
  for (int i = 0; i < roi.width; ++i) {
    const int x = roi.x + i;
    ad[i] = cv::saturate_cast<int>(m[0] * x * kAbScale);
    bd[i] = cv::saturate_cast<int>(m[3] * x * kAbScale);
  }
  for (int j = 0; j < roi.height; ++j) {
    const int y = roi.y + j;
    const int x0 = cv::saturate_cast<int>((m[1] * y + m[2]) * kAbScale) + kRoundDelta;
    const int y0 = cv::saturate_cast<int>((m[4] * y + m[5]) * kAbScale) + kRoundDelta;
    short* pxy = xy.ptr<short>(j);
    ushort* pa = alpha.ptr<ushort>(j);
    for (int i = 0; i < roi.width; ++i) {
      const int X = (x0 + ad[i]) >> (kAbBits - kBits);
      const int Y = (y0 + bd[i]) >> (kAbBits - kBits);
      pxy[2 * i] = cv::saturate_cast<short>(X >> kBits);
      pxy[2 * i + 1] = cv::saturate_cast<short>(Y >> kBits);
      pa[i] = static_cast<ushort>((Y & (kTab - 1)) * kTab + (X & (kTab - 1)));
    }
  }
  cv::Mat part = dst(roi), part2 = dst2(roi);
  cv::remap(src, part, xy, alpha, cv::INTER_LINEAR, cv::BORDER_CONSTANT, 0);
  cv::remap(src2, part2, xy, alpha, cv::INTER_LINEAR, cv::BORDER_CONSTANT, 0);
  CV_Assert(part.data == dst.ptr(roi.y, roi.x) && part2.data == dst2.ptr(roi.y, roi.x));
}

// The target resampled into the reference's fine frame under pose (angle, d),
// with a margin of `window` pixels on every side, into work.warped; only its
// part `want` is computed (the rest is left as it was).
void TargetInReferenceFrame(const CmcPrepared& ref, const CmcPrepared& tgt, double angle_deg,
                            double dx_um, double dy_um, const cv::Rect& want, CellWork& work) {
  const Level& r = ref.fine;
  const Level& t = tgt.fine;
  const int w = ref.window;
  const double a = angle_deg * kDegToRad;
  const double c = std::cos(a), s = std::sin(a);
  // canvas (u, v) -> reference pixel (u - w, v - w) -> p_um -> q = Rot p + d -> target pixel
  const double k = r.px_um / t.px_um;
  const double ox = -(w + r.cx), oy = -(w + r.cy);
  const double map[6] = {k * c, -k * s, k * (c * ox - s * oy) + dx_um / t.px_um + t.cx,
                         k * s, k * c,  k * (s * ox + c * oy) + dy_um / t.px_um + t.cy};
  Canvas& out = work.warped;
  const cv::Size size(r.z.cols + 2 * w, r.z.rows + 2 * w);
  out.z.create(size, CV_32F);
  out.m.create(size, CV_32F);
  const cv::Rect roi = want & cv::Rect(cv::Point(0, 0), size);
  if (roi.empty()) return;
  // The heights are 0 where the mask is: t.z * t.m is t.z, bit for bit.
  WarpAffineRect(t.z, out.z, t.m, out.m, map, roi, work.xy, work.alpha, work.delta);
  Canvas part;
  part.z = out.z(roi);
  part.m = out.m(roi);
  KeepFullyCovered(part);
}

struct CellHit {
  double ccf = -2;
  double angle_deg = 0;
  double dx_um = 0;
  double dy_um = 0;
  bool searched = false;
};

// Masked NCC of one reference cell over the +-window translations of the
// warped target (pose angle, d); the hit's registration is in micrometres.
CellHit SearchCell(const CmcPrepared& ref, const PreparedCell& cell, double angle_deg, double dx_um,
                   double dy_um, double min_overlap, CellWork& work) {
  const Canvas& warped = work.warped;
  const int w = ref.window;
  const int side = ref.cell_side;
  const int region = side + 2 * w;
  // The region of the warped target around the cell's home position.
  cv::Mat& t = work.t;
  cv::Mat& n = work.n;
  t.create(region, region, CV_32F);
  n.create(region, region, CV_32F);
  const cv::Rect want(cell.rect.x, cell.rect.y, region, region);  // canvas has a w margin
  const cv::Rect have = want & cv::Rect(0, 0, warped.z.cols, warped.z.rows);
  CellHit hit;
  hit.searched = true;
  if (have.area() == 0) return hit;
  if (have != want) {  // zeros beyond the canvas
    t.setTo(0);
    n.setTo(0);
  }
  const cv::Rect dst(have.x - want.x, have.y - want.y, have.width, have.height);
  warped.z(have).copyTo(t(dst));
  warped.m(have).copyTo(n(dst));
  const double region_valid = cv::sum(n)[0];
  if (region_valid < min_overlap) return hit;
  // Sums over the overlap of the cell at each shift k (0..2w per axis):
  // s_rt = sum r t, s_r = sum r, s_rr = sum r^2, s_t = sum t, s_tt = sum t^2,
  // s_n = count.
  const int shifts = 2 * w + 1;
  const cv::Rect out(0, 0, shifts, shifts);
  cv::Mat s_rt, s_r, s_rr, s_t, s_tt, s_n;
  if (work.fft2) {
    // Two complex transforms carry the four real inputs, four inverses the
    // six correlations: F1 = DFT(t + i n), F2 = DFT(t^2 + i n), and
    // F1 conj(A) -> s_rt + i s_r, F1 conj(M) -> s_t + i s_n,
    // F2 conj(M) -> s_tt + i (unused), F2 conj(A2) -> (unused) + i s_rr.
    const Fft2& fft2 = *work.fft2;
    const int q = fft2.size();
    const size_t plane = static_cast<size_t>(q) * q;
    float* f1r = work.buf.data();
    float* f1i = f1r + plane;
    float* f2r = f1r + 2 * plane;
    float* f2i = f1r + 3 * plane;
    std::fill(f1r, f1r + 4 * plane, 0.f);
    for (int y = 0; y < region; ++y) {
      const float* tr = t.ptr<float>(y);
      const float* nr = n.ptr<float>(y);
      const size_t o = static_cast<size_t>(y) * q;
      for (int x = 0; x < region; ++x) {
        f1r[o + x] = tr[x];
        f1i[o + x] = nr[x];
        f2r[o + x] = tr[x] * tr[x];
        f2i[o + x] = nr[x];
      }
    }
    fft2.Forward(f1r, f1i);
    fft2.Forward(f2r, f2i);
    const size_t half = static_cast<size_t>(q / 2 + 1) * q;
    float* g[8];
    for (int k = 0; k < 8; ++k) g[k] = f1r + (4 + k) * plane;
    float* row = f1r + 12 * plane;  // six rows of the cell spectra, unfolded
    for (int i = 0; i < q; ++i) {
      const int h = fft2.HalfRow(i);
      const float* cs[6];  // A re, im, A2 re, im, M re, im at row i
      if (h >= 0) {
        for (int k = 0; k < 6; ++k)
          cs[k] = cell.spec.data() + k * half + static_cast<size_t>(h) * q;
      } else {
        const size_t from = static_cast<size_t>(fft2.HalfRow(fft2.Neg(i))) * q;
        for (int k = 0; k < 6; ++k) {
          const float* src = cell.spec.data() + k * half + from;
          float* dst = row + static_cast<size_t>(k) * q;
          for (int j = 0; j < q; ++j) dst[j] = src[fft2.Neg(j)];
          if (k % 2 == 1) {
            for (int j = 0; j < q; ++j) dst[j] = -dst[j];
          }
          cs[k] = dst;
        }
      }
      const size_t o = static_cast<size_t>(i) * q;
      const float* __restrict ar = cs[0];
      const float* __restrict ai = cs[1];
      const float* __restrict a2r = cs[2];
      const float* __restrict a2i = cs[3];
      const float* __restrict mr = cs[4];
      const float* __restrict mi = cs[5];
      const float* __restrict x1r = f1r + o;
      const float* __restrict x1i = f1i + o;
      const float* __restrict x2r = f2r + o;
      const float* __restrict x2i = f2i + o;
      float* __restrict g0 = g[0] + o;
      float* __restrict g1 = g[1] + o;
      float* __restrict g2 = g[2] + o;
      float* __restrict g3 = g[3] + o;
      float* __restrict g4 = g[4] + o;
      float* __restrict g5 = g[5] + o;
      float* __restrict g6 = g[6] + o;
      float* __restrict g7 = g[7] + o;
      for (int j = 0; j < q; ++j) {  // x conj(y)
        g0[j] = x1r[j] * ar[j] + x1i[j] * ai[j];
        g1[j] = x1i[j] * ar[j] - x1r[j] * ai[j];
        g2[j] = x1r[j] * mr[j] + x1i[j] * mi[j];
        g3[j] = x1i[j] * mr[j] - x1r[j] * mi[j];
        g4[j] = x2r[j] * mr[j] + x2i[j] * mi[j];
        g5[j] = x2i[j] * mr[j] - x2r[j] * mi[j];
        g6[j] = x2r[j] * a2r[j] + x2i[j] * a2i[j];
        g7[j] = x2i[j] * a2r[j] - x2r[j] * a2i[j];
      }
    }
    for (int k = 0; k < 8; k += 2) fft2.Inverse(g[k], g[k + 1], shifts);
    const size_t step = static_cast<size_t>(q) * sizeof(float);
    s_rt = cv::Mat(shifts, shifts, CV_32F, g[0], step);
    s_r = cv::Mat(shifts, shifts, CV_32F, g[1], step);
    s_t = cv::Mat(shifts, shifts, CV_32F, g[2], step);
    s_n = cv::Mat(shifts, shifts, CV_32F, g[3], step);
    s_tt = cv::Mat(shifts, shifts, CV_32F, g[4], step);
    s_rr = cv::Mat(shifts, shifts, CV_32F, g[7], step);
  } else {
    // Where the cell or the region is fully valid, some of the sums are
    // box sums or constants, which saves FFTs; the result is the same.
    const bool cell_full = cell.valid == side * side;
    const bool region_full = region_valid == static_cast<double>(region) * region;
    Fft& fft = work.fft;
    fft.Forward(t, work.ft);
    fft.Correlate(work.ft, cell.spec_a, work.c_rt);
    s_rt = work.c_rt(out);
    if (region_full) {
      s_r = cv::Mat(out.size(), CV_32F, cv::Scalar(cell.sum_r));
      s_rr = cv::Mat(out.size(), CV_32F, cv::Scalar(cell.sum_rr));
      s_n = cv::Mat(out.size(), CV_32F, cv::Scalar(cell.valid));
    } else {
      fft.Forward(n, work.fn);
      fft.Correlate(work.fn, cell.spec_a, work.c_r);
      s_r = work.c_r(out);
      fft.Correlate(work.fn, cell.spec_a2, work.c_rr);
      s_rr = work.c_rr(out);
      if (!cell_full) {
        fft.Correlate(work.fn, cell.spec_m, work.c_n);
        s_n = work.c_n(out);
      }
    }
    if (cell_full) {
      // Box sums of side x side windows from integral images.
      cv::Mat it, itt, in;
      cv::integral(t, it, itt, CV_64F, CV_64F);
      auto box = [&](const cv::Mat& ii, int x, int y) {
        return ii.at<double>(y + side, x + side) - ii.at<double>(y, x + side) -
               ii.at<double>(y + side, x) + ii.at<double>(y, x);
      };
      s_t.create(out.size(), CV_32F);
      s_tt.create(out.size(), CV_32F);
      for (int y = 0; y < shifts; ++y) {
        for (int x = 0; x < shifts; ++x) {
          s_t.at<float>(y, x) = static_cast<float>(box(it, x, y));
          s_tt.at<float>(y, x) = static_cast<float>(box(itt, x, y));
        }
      }
      if (!region_full) {
        cv::integral(n, in, CV_64F);
        s_n.create(out.size(), CV_32F);
        for (int y = 0; y < shifts; ++y) {
          for (int x = 0; x < shifts; ++x) s_n.at<float>(y, x) = static_cast<float>(box(in, x, y));
        }
      }
    } else {
      fft.Correlate(work.ft, cell.spec_m, work.c_t);
      s_t = work.c_t(out);
      cv::multiply(t, t, work.tt);
      fft.Forward(work.tt, work.ftt);
      fft.Correlate(work.ftt, cell.spec_m, work.c_tt);
      s_tt = work.c_tt(out);
    }
  }
  int bx = -1, by = -1;
  for (int ky = 0; ky <= 2 * w; ++ky) {
    for (int kx = 0; kx <= 2 * w; ++kx) {
      const double no = s_n.at<float>(ky, kx);
      if (no < min_overlap) continue;
      const double sr = s_r.at<float>(ky, kx), st = s_t.at<float>(ky, kx);
      const double num = s_rt.at<float>(ky, kx) - sr * st / no;
      const double vr = s_rr.at<float>(ky, kx) - sr * sr / no;
      const double vt = s_tt.at<float>(ky, kx) - st * st / no;
      if (vr <= 1e-6 * no || vt <= 1e-6 * no) continue;
      const double ccf = num / std::sqrt(vr * vt);
      if (ccf > hit.ccf) {
        hit.ccf = ccf;
        bx = kx;
        by = ky;
      }
    }
  }
  if (bx < 0) return hit;
  // Shift s (reference pixels, in the rotated frame) -> target displacement.
  const double sx = (bx - w) * ref.fine.px_um, sy = (by - w) * ref.fine.px_um;
  const double a = angle_deg * kDegToRad;
  hit.angle_deg = angle_deg;
  hit.dx_um = dx_um + std::cos(a) * sx - std::sin(a) * sy;
  hit.dy_um = dy_um + std::sin(a) * sx + std::cos(a) * sy;
  return hit;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  double m = v[mid];
  if (v.size() % 2 == 0) {
    m = (m + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid))) / 2;
  }
  return m;
}

// The cell's registration expressed as where the cell centre lands, so that
// cells can be compared against one consensus (angle, dx, dy).
struct Consensus {
  Registration reg;
  int congruent = 0;
};

// Consensus of the high-correlation cells and the congruent count. The
// consensus is the mode, not the mean: the pose of the high-correlation cell
// that the most other such cells agree with (within the tolerances), refined
// to the median of the cells that agree with it. A few cells matching
// elsewhere do not pull it away from where most cells match.
Consensus Agree(const CmcPrepared& ref, const std::vector<CellHit>& hits, const Pose& fallback,
                const CmcOptions& o, std::vector<bool>* congruent) {
  auto agrees = [&](const CellHit& h, double angle, double dx, double dy) {
    return std::abs(WrapDeg(h.angle_deg - angle)) <= o.angle_tolerance_deg &&
           std::abs(h.dx_um - dx) <= o.translation_tolerance_um &&
           std::abs(h.dy_um - dy) <= o.translation_tolerance_um;
  };
  std::vector<size_t> high;
  for (size_t i = 0; i < hits.size(); ++i) {
    if (ref.cells[i].info.used && hits[i].searched && hits[i].ccf >= o.min_ccf) high.push_back(i);
  }
  Consensus c;
  c.reg = {WrapDeg(fallback.angle_deg), fallback.dx_um, fallback.dy_um};
  size_t best_votes = 0;
  double best_ccf = -1;
  for (size_t i : high) {
    size_t votes = 0;
    double ccf = 0;
    for (size_t j : high) {
      if (agrees(hits[j], hits[i].angle_deg, hits[i].dx_um, hits[i].dy_um)) {
        ++votes;
        ccf += hits[j].ccf;
      }
    }
    if (votes > best_votes || (votes == best_votes && ccf > best_ccf)) {
      best_votes = votes;
      best_ccf = ccf;
      std::vector<double> angles, dxs, dys;
      for (size_t j : high) {
        if (!agrees(hits[j], hits[i].angle_deg, hits[i].dx_um, hits[i].dy_um)) continue;
        angles.push_back(WrapDeg(hits[j].angle_deg - hits[i].angle_deg));
        dxs.push_back(hits[j].dx_um);
        dys.push_back(hits[j].dy_um);
      }
      c.reg = {WrapDeg(hits[i].angle_deg + Median(angles)), Median(dxs), Median(dys)};
    }
  }
  congruent->assign(hits.size(), false);
  for (size_t i : high) {
    const bool ok = agrees(hits[i], c.reg.angle_deg, c.reg.dx_um, c.reg.dy_um);
    (*congruent)[i] = ok;
    c.congruent += ok ? 1 : 0;
  }
  return c;
}

// Searches the reference cells (those with `take[i]`, or all when empty) at
// the pose's angle, then, when `all_angles`, the cells that correlate at least
// prune_ccf there at the other angles of the fine range. `known` holds hits
// already computed at the pose's angle (searched = true), which are reused.
std::vector<CellHit> SearchCells(const CmcPrepared& ref, const CmcPrepared& tgt, const Pose& pose,
                                 const CmcOptions& o, bool all_angles,
                                 const std::vector<bool>& take = {},
                                 const std::vector<CellHit>& known = {}) {
  std::vector<CellHit> hits(ref.cells.size());
  const int k = static_cast<int>(std::floor(o.fine_range_deg / o.fine_step_deg + 1e-9));
  std::vector<double> offsets{0};
  if (all_angles) {
    for (int i = 1; i <= k; ++i) {
      offsets.push_back(-i * o.fine_step_deg);
      offsets.push_back(i * o.fine_step_deg);
    }
  }
  CellWork work(ref);
  const int region = ref.cell_side + 2 * ref.window;
  std::vector<size_t> todo;
  for (size_t a = 0; a < offsets.size(); ++a) {
    const double angle = WrapDeg(pose.angle_deg + offsets[a]);
    // The cells to search at this angle and the part of the warped target
    // they read.
    todo.clear();
    cv::Rect box;
    for (size_t i = 0; i < ref.cells.size(); ++i) {
      const PreparedCell& cell = ref.cells[i];
      if (!cell.info.used || (!take.empty() && !take[i])) continue;
      if (a == 0 && i < known.size() && known[i].searched) {
        hits[i] = known[i];
        continue;
      }
      if (a > 0 && hits[i].ccf < o.prune_ccf) continue;
      const cv::Rect want(cell.rect.x, cell.rect.y, region, region);
      box = todo.empty() ? want : (box | want);
      todo.push_back(i);
    }
    if (todo.empty()) continue;
    // One warp of the box, or when the cells are few and far apart, one of
    // each cell's part (overlaps get the same values again).
    const bool each = static_cast<double>(todo.size()) * region * region < box.area();
    if (!each) TargetInReferenceFrame(ref, tgt, angle, pose.dx_um, pose.dy_um, box, work);
    for (const size_t i : todo) {
      const PreparedCell& cell = ref.cells[i];
      if (each) {
        TargetInReferenceFrame(ref, tgt, angle, pose.dx_um, pose.dy_um,
                               cv::Rect(cell.rect.x, cell.rect.y, region, region), work);
      }
      const CellHit h =
          SearchCell(ref, cell, angle, pose.dx_um, pose.dy_um, o.min_overlap * cell.valid, work);
      if (h.ccf > hits[i].ccf || !hits[i].searched) hits[i] = h;
    }
  }
  return hits;
}

CmcDirection Direction(const CmcPrepared& ref, const CmcPrepared& tgt, const Pose& pose,
                       const CmcOptions& o, const std::vector<CellHit>& known = {}) {
  const std::vector<CellHit> hits = SearchCells(ref, tgt, pose, o, true, {}, known);
  std::vector<bool> congruent;
  const Consensus c = Agree(ref, hits, pose, o, &congruent);
  CmcDirection d;
  d.registration = c.reg;
  d.congruent = c.congruent;
  for (size_t i = 0; i < ref.cells.size(); ++i) {
    CmcCell cell = ref.cells[i].info;
    if (cell.used) {
      ++d.valid_cells;
      cell.ccf = std::max(0.0, hits[i].ccf);
      cell.registration = {WrapDeg(hits[i].angle_deg), hits[i].dx_um, hits[i].dy_um};
      cell.congruent = congruent[i];
    }
    d.cells.push_back(cell);
  }
  return d;
}

Pose Inverse(const Registration& r) {
  // q = Rot(a) p + d  <=>  p = Rot(-a) q - Rot(-a) d
  const double a = -r.angle_deg * kDegToRad;
  Pose p;
  p.angle_deg = WrapDeg(-r.angle_deg);
  p.dx_um = -(std::cos(a) * r.dx_um - std::sin(a) * r.dy_um);
  p.dy_um = -(std::sin(a) * r.dx_um + std::cos(a) * r.dy_um);
  return p;
}

}  // namespace

CmcResult CompareCmc(const CmcPrepared& reference, const CmcPrepared& target,
                     const CmcOptions& options) {
  options.Check();
  if (std::abs(reference.in_px_um - target.in_px_um) > 1e-3 * reference.in_px_um) {
    throw Error("cannot compare " + reference.source + " (" + Num(reference.in_px_um) +
                " um pixels) with " + target.source + " (" + Num(target.in_px_um) +
                " um pixels): preprocess both to the same working pixel size");
  }
  if (std::abs(reference.fine.px_um - target.fine.px_um) > 1e-6 || reference.cell_side <= 0 ||
      target.cell_side <= 0) {
    throw Error("cannot compare " + reference.source + " with " + target.source +
                ": prepared with different options");
  }
  const std::vector<Pose> candidates = CoarseCandidates(reference, target, options);
  if (candidates.empty()) {
    throw Error(reference.source + " and " + target.source +
                " do not overlap at any rotation within " + Num(options.max_shift_um) +
                " um of translation");
  }
  // Pick the candidate whose pose most cells agree with at its own angle,
  // judged on the `choice_cells` fullest cells to keep it cheap.
  Pose best = candidates.front();
  std::vector<CellHit> best_hits;
  if (candidates.size() > 1) {
    std::vector<size_t> order;
    for (size_t i = 0; i < reference.cells.size(); ++i) {
      if (reference.cells[i].info.used) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return reference.cells[a].info.valid_share > reference.cells[b].info.valid_share;
    });
    std::vector<bool> take(reference.cells.size(), false);
    for (size_t k = 0; k < order.size() && k < static_cast<size_t>(options.choice_cells); ++k) {
      take[order[k]] = true;
    }
    int best_count = -1;
    for (const Pose& c : candidates) {
      std::vector<CellHit> hits = SearchCells(reference, target, c, options, false, take);
      std::vector<bool> congruent;
      const int count = Agree(reference, hits, c, options, &congruent).congruent;
      if (count > best_count) {
        best_count = count;
        best = c;
        best_hits = std::move(hits);
      }
    }
  }
  CmcResult result;
  result.forward = Direction(reference, target, best, options, best_hits);
  result.backward = Direction(target, reference, Inverse(result.forward.registration), options);
  result.combined = (result.forward.congruent + result.backward.congruent) / 2.0;
  return result;
}

CmcResult CompareCmc(const Surface& reference, const Surface& target, const CmcOptions& options) {
  const auto r = PrepareCmc(reference, "reference", options);
  const auto t = PrepareCmc(target, "target", options);
  return CompareCmc(*r, *t, options);
}

// ---------------------------------------------------------------- features

std::string CmcFeaturesKey(const CmcOptions& options) {
  return "cmcf-v1 fp16 cell=" + Num(options.cell_pixel_um) +
         " coarse=" + Num(options.coarse_pixel_um);
}

namespace {

static_assert(std::endian::native == std::endian::little,
              "the compact CMC features are written little-endian");

constexpr char kFeaturesMagic[8] = {'B', 'I', 'E', 'N', 'C', 'M', 'C', 'F'};
constexpr uint32_t kFeaturesFormat = 1;
constexpr uint32_t kMaxLevelSide = 16384;
constexpr uint64_t kMaxLevelPoints = uint64_t{1} << 26;
constexpr uint32_t kMaxKeyBytes = 1024;

template <typename T>
void Put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void PutLevel(std::string& out, const Level& l) {
  Put(out, l.px_um);
  Put(out, l.cx);
  Put(out, l.cy);
  Put(out, static_cast<uint32_t>(l.z.cols));
  Put(out, static_cast<uint32_t>(l.z.rows));
  // Heights as binary16, NaN where not valid, row-major, then deflated.
  cv::Mat z = l.z.clone();
  z.setTo(std::numeric_limits<float>::quiet_NaN(), l.m == 0);
  cv::Mat half;
  z.convertTo(half, CV_16F);
  CV_Assert(half.isContinuous());
  const auto raw_bytes = static_cast<uLong>(half.total() * 2);
  uLongf packed_bytes = compressBound(raw_bytes);
  std::string packed(packed_bytes, '\0');
  if (compress2(reinterpret_cast<Bytef*>(packed.data()), &packed_bytes, half.ptr<Bytef>(),
                raw_bytes, 6) != Z_OK) {
    throw Error("CMC features: compression failed");
  }
  Put(out, static_cast<uint32_t>(packed_bytes));
  out.append(packed.data(), packed_bytes);
}

// Reads fields of the encoded features, throwing a bien::Error naming the
// source on any field that is out of bounds or runs past the end.
class Reader {
 public:
  Reader(std::string_view bytes, const std::string& source) : bytes_(bytes), source_(source) {}
  template <typename T>
  T Get(const char* what) {
    if (bytes_.size() - pos_ < sizeof(T)) Fail(std::string("truncated at ") + what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view Take(size_t n, const char* what) {
    if (bytes_.size() - pos_ < n) Fail(std::string("truncated at ") + what);
    const std::string_view v = bytes_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  size_t pos() const { return pos_; }
  [[noreturn]] void Fail(const std::string& why) const {
    throw Error(source_ + ": not usable CMC features: " + why);
  }

 private:
  std::string_view bytes_;
  const std::string& source_;
  size_t pos_ = 0;
};

Level GetLevel(Reader& r, double expect_px_um, const char* name) {
  Level l;
  l.px_um = r.Get<double>(name);
  l.cx = r.Get<double>(name);
  l.cy = r.Get<double>(name);
  const auto w = r.Get<uint32_t>(name);
  const auto h = r.Get<uint32_t>(name);
  if (!(std::abs(l.px_um - expect_px_um) <= 1e-9 * expect_px_um)) {
    r.Fail(std::string(name) + " level has " + Num(l.px_um) + " um pixels, the options want " +
           Num(expect_px_um));
  }
  if (w < 1 || h < 1 || w > kMaxLevelSide || h > kMaxLevelSide ||
      uint64_t{w} * h > kMaxLevelPoints) {
    r.Fail(std::string(name) + " level of " + std::to_string(w) + " x " + std::to_string(h) +
           " points is out of bounds");
  }
  if (!std::isfinite(l.cx) || !std::isfinite(l.cy) || std::abs(l.cx) > 4.0 * w ||
      std::abs(l.cy) > 4.0 * h) {
    r.Fail(std::string(name) + " level centre is out of bounds");
  }
  const auto packed_bytes = r.Get<uint32_t>(name);
  const std::string_view packed = r.Take(packed_bytes, name);
  cv::Mat half(static_cast<int>(h), static_cast<int>(w), CV_16F);
  uLongf raw_bytes = static_cast<uLongf>(half.total() * 2);
  const uLongf want = raw_bytes;
  if (uncompress(half.ptr<Bytef>(), &raw_bytes, reinterpret_cast<const Bytef*>(packed.data()),
                 static_cast<uLong>(packed.size())) != Z_OK ||
      raw_bytes != want) {
    r.Fail(std::string(name) + " level heights do not inflate to " + std::to_string(w) + " x " +
           std::to_string(h) + " points");
  }
  half.convertTo(l.z, CV_32F);
  l.m = cv::Mat::zeros(l.z.size(), CV_32F);
  int valid = 0;
  for (int y = 0; y < l.z.rows; ++y) {
    float* zr = l.z.ptr<float>(y);
    float* mr = l.m.ptr<float>(y);
    for (int x = 0; x < l.z.cols; ++x) {
      if (std::isfinite(zr[x])) {
        mr[x] = 1.f;
        ++valid;
      } else {
        zr[x] = 0.f;
      }
    }
  }
  if (valid == 0) r.Fail(std::string(name) + " level has no valid point");
  l.valid = valid;
  return l;
}

}  // namespace

std::string EncodeCmcFeatures(const CmcPrepared& prepared, const CmcOptions& options) {
  const std::string key = CmcFeaturesKey(options);
  std::string out(kFeaturesMagic, sizeof kFeaturesMagic);
  Put(out, kFeaturesFormat);
  Put(out, static_cast<uint32_t>(key.size()));
  out += key;
  Put(out, prepared.in_px_um);
  Put(out, static_cast<uint32_t>(prepared.in_width));
  Put(out, static_cast<uint32_t>(prepared.in_height));
  PutLevel(out, prepared.fine);
  PutLevel(out, prepared.coarse);
  Put(out, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(out.data()),
                                       static_cast<uInt>(out.size()))));
  return out;
}

std::string EncodeCmcFeatures(const Surface& surface, const std::string& source,
                              const CmcOptions& options) {
  return EncodeCmcFeatures(*MakeLevels(surface, source, options), options);
}

std::shared_ptr<const CmcPrepared> DecodeCmcFeatures(std::string_view bytes,
                                                     const std::string& source,
                                                     const CmcOptions& options) {
  options.Check();
  Reader r(bytes, source);
  if (bytes.size() < sizeof kFeaturesMagic + 8 ||
      std::memcmp(bytes.data(), kFeaturesMagic, sizeof kFeaturesMagic) != 0) {
    r.Fail("no BIENCMCF header");
  }
  const auto stored_crc = [&] {
    uint32_t v;
    std::memcpy(&v, bytes.data() + bytes.size() - 4, 4);
    return v;
  }();
  if (crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size() - 4)) !=
      stored_crc) {
    r.Fail("checksum mismatch (damaged or truncated)");
  }
  Reader body(bytes.substr(0, bytes.size() - 4), source);
  body.Take(sizeof kFeaturesMagic, "magic");
  const auto format = body.Get<uint32_t>("format");
  if (format != kFeaturesFormat) {
    body.Fail("format " + std::to_string(format) + ", this build reads format " +
              std::to_string(kFeaturesFormat));
  }
  const auto key_bytes = body.Get<uint32_t>("key");
  if (key_bytes > kMaxKeyBytes) body.Fail("key too long");
  const std::string key(body.Take(key_bytes, "key"));
  if (key != CmcFeaturesKey(options)) {
    body.Fail("made as \"" + key + "\", the options want \"" + CmcFeaturesKey(options) + "\"");
  }
  auto p = std::make_shared<CmcPrepared>();
  p->source = source;
  p->in_px_um = body.Get<double>("pixel size");
  p->in_width = static_cast<int>(body.Get<uint32_t>("width"));
  p->in_height = static_cast<int>(body.Get<uint32_t>("height"));
  if (!(std::isfinite(p->in_px_um) && p->in_px_um > 0 && p->in_px_um < 1e4) || p->in_width < 1 ||
      p->in_height < 1 || p->in_width > 1 << 20 || p->in_height > 1 << 20) {
    body.Fail("input size or pixel size out of bounds");
  }
  const double cell_px = std::max(options.cell_pixel_um, p->in_px_um);
  const double coarse_px = std::max(options.coarse_pixel_um, cell_px);
  p->fine = GetLevel(body, cell_px, "fine");
  p->coarse = GetLevel(body, coarse_px, "coarse");
  if (body.pos() != bytes.size() - 4) body.Fail("trailing bytes");
  PrepareCells(*p, options);
  return p;
}

}  // namespace bien

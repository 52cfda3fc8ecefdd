// Breech-face preprocessing: synthetic checks that always run, real scans
// where ../shared/data is present.
#include "imaging/preprocess.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numbers>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "imaging/image.h"
#include "imaging/transform.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::ErrorOf;

constexpr double kPi = std::numbers::pi;

// ---------------------------------------------------------------------------
// Synthetic surfaces

// What a raw breech-face scan looks like, at 3.125 um: a primer disc (NaN
// outside) on a tilted, curved (bowl) primer, a firing-pin hole (NaN) with a
// raised rim around it, fine texture in the pass band, and a few spikes.
struct RawPrimer {
  int n = 800;
  double px_um = 3.125;
  double cx = 410, cy = 395;        // primer centre, input pixels
  double primer_r = 370;            // input pixels
  double pin_x = 370, pin_y = 380;  // firing-pin impression centre (off the primer's centre)
  double hole_r = 130;              // the impression proper
  double hole_depth_um = NAN;       // its depth; NaN: not measured (no data), as in real scans
  double rim_r = 190;               // raised rim out to here (the impression's extent)
  double rim_um = 30;               // the rim's height
  double bowl = 1e-5;               // curvature, 1/um: 14 um at the edge
  int spike_count = 40;             // 2 x 2 px spikes of 80 um, on the breech face
  std::vector<cv::Point> spikes;
  Surface Make() {
    Surface s;
    s.width = s.height = n;
    s.dx_m = s.dy_m = px_um * 1e-6;
    s.z.assign(static_cast<size_t>(n) * n, NAN);
    std::mt19937 rng(5);
    std::normal_distribution<double> noise(0, 0.05);
    for (int y = 0; y < n; ++y) {
      for (int x = 0; x < n; ++x) {
        const double rp = std::hypot(x - cx, y - cy), rf = std::hypot(x - pin_x, y - pin_y);
        if (rp > primer_r || (rf < hole_r && std::isnan(hole_depth_um))) continue;
        const double u = (x - cx) * px_um, v = (y - cy) * px_um;  // micrometres
        const double tilt = 0.04 * u - 0.03 * v;                  // +-45 um across
        const double bowl = this->bowl * (u * u + v * v);
        const double rim = rf < hole_r ? -hole_depth_um : rf < rim_r ? rim_um : 0;
        const double texture = 0.5 * std::sin(2 * kPi * u / 80.0) * std::cos(2 * kPi * v / 110.0);
        s.At(x, y) = static_cast<float>((tilt + bowl + rim + texture + noise(rng)) * 1e-6);
      }
    }
    std::uniform_int_distribution<int> pick(0, n - 1);
    while (spikes.size() < static_cast<size_t>(spike_count)) {
      const cv::Point p(pick(rng), pick(rng));
      if (std::hypot(p.x - cx, p.y - cy) < primer_r - 60 &&
          std::hypot(p.x - pin_x, p.y - pin_y) > std::max(hole_r, rim_r) + 60) {
        spikes.push_back(p);
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) s.At(p.x + dx, p.y + dy) += 80e-6f;  // 80 um spike
        }
      }
    }
    return s;
  }
};

// An input point in the output grid (2:1 area averaging, then the crop).
cv::Point2d ToOutput(double x, double y, double factor, const PreprocessReport& rep) {
  return {(x + 0.5) / factor - 0.5 - rep.crop_x_px, (y + 0.5) / factor - 0.5 - rep.crop_y_px};
}

// Least-squares plane z = a + b x + c y over the valid points; returns the
// slopes b, c (z units per pixel).
cv::Vec2d PlaneSlopes(const Surface& s) {
  cv::Matx33d ata = cv::Matx33d::zeros();
  cv::Vec3d atb(0, 0, 0);
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      const float v = s.At(x, y);
      if (!std::isfinite(v)) continue;
      const cv::Vec3d a(1, x, y);
      ata += a * a.t();
      atb += static_cast<double>(v) * a;
    }
  }
  cv::Vec3d c;
  cv::solve(ata, atb, c, cv::DECOMP_SVD);
  return {c[1], c[2]};
}

// A sine of `wavelength_um` along x at `px_um`, amplitude 1 um.
Surface Sine(double wavelength_um, double px_um = 2, int n = 512) {
  Surface s;
  s.width = s.height = n;
  s.dx_m = s.dy_m = px_um * 1e-6;
  s.z.resize(static_cast<size_t>(n) * n);
  for (int y = 0; y < n; ++y) {
    for (int x = 0; x < n; ++x) {
      s.At(x, y) = static_cast<float>(1e-6 * std::sin(2 * kPi * x * px_um / wavelength_um));
    }
  }
  return s;
}

// Amplitude (sqrt(2) * RMS) of the valid points at least `border` from every edge.
double InnerAmplitude(const Surface& s, int border) {
  double sum = 0, sum2 = 0;
  size_t n = 0;
  for (int y = border; y < s.height - border; ++y) {
    for (int x = border; x < s.width - border; ++x) {
      const float v = s.At(x, y);
      if (!std::isfinite(v)) continue;
      sum += v;
      sum2 += static_cast<double>(v) * v;
      ++n;
    }
  }
  if (n == 0) return NAN;
  const double mean = sum / n;
  return std::sqrt(2 * std::max(0.0, sum2 / n - mean * mean));
}

PreprocessOptions BandPassOnly(double px_um) {
  PreprocessOptions o;
  o.find_region = false;
  o.level = false;
  o.outlier_mad = 0;
  o.working_pixel_um = px_um;
  return o;
}

// ---------------------------------------------------------------------------
// Comparing surfaces

// Pearson correlation over the points valid in both; b is shifted by (dx, dy):
// a(x, y) pairs with b(x - dx, y - dy). `n` gets the number of common points.
double MaskedNcc(const Surface& a, const Surface& b, int dx = 0, int dy = 0, size_t* n = nullptr) {
  double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  size_t count = 0;
  for (int y = 0; y < a.height; ++y) {
    const int yb = y - dy;
    if (yb < 0 || yb >= b.height) continue;
    for (int x = 0; x < a.width; ++x) {
      const int xb = x - dx;
      if (xb < 0 || xb >= b.width) continue;
      const double u = a.At(x, y), v = b.At(xb, yb);
      if (!std::isfinite(u) || !std::isfinite(v)) continue;
      sa += u;
      sb += v;
      saa += u * u;
      sbb += v * v;
      sab += u * v;
      ++count;
    }
  }
  if (n) *n = count;
  if (count < 2) return 0;
  const double k = static_cast<double>(count);
  const double cov = sab / k - sa / k * sb / k;
  const double va = saa / k - sa / k * sa / k, vb = sbb / k - sb / k * sb / k;
  return va > 0 && vb > 0 ? cov / std::sqrt(va * vb) : 0;
}

// NaN-aware block average, `factor` points to one along each axis.
Surface Coarse(const Surface& s, int factor) {
  Surface out = s;
  out.width = s.width / factor;
  out.height = s.height / factor;
  out.dx_m = s.dx_m * factor;
  out.dy_m = s.dy_m * factor;
  out.z.assign(static_cast<size_t>(out.width) * out.height, NAN);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      double sum = 0;
      int n = 0;
      for (int j = 0; j < factor; ++j) {
        for (int i = 0; i < factor; ++i) {
          const float v = s.At(x * factor + i, y * factor + j);
          if (std::isfinite(v)) {
            sum += v;
            ++n;
          }
        }
      }
      if (2 * n >= factor * factor) out.At(x, y) = static_cast<float>(sum / n);
    }
  }
  return out;
}

// Zero-mean values with NaN as 0 (for cv::matchTemplate).
cv::Mat ZeroFilled(const Surface& s) {
  double sum = 0;
  size_t n = 0;
  for (float v : s.z) {
    if (std::isfinite(v)) {
      sum += v;
      ++n;
    }
  }
  const double mean = n ? sum / n : 0;
  cv::Mat m(s.height, s.width, CV_32F);
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      const float v = s.At(x, y);
      m.at<float>(y, x) = std::isfinite(v) ? static_cast<float>(v - mean) : 0.f;
    }
  }
  return m;
}

struct Registration {
  double ncc = -1;  // masked NCC at the best pose, at the coarse resolution
  double angle_deg = 0;
  int dx = 0;  // coarse pixels: fixed(x, y) pairs with moving(x - dx, y - dy)
  int dy = 0;
  size_t common = 0;
};

// Brute-force registration of `moving` onto `fixed` (same pixel size) at
// `coarse_um`: every rotation in [-max_deg, max_deg] (1 degree steps), the
// translation within +-max_shift_um of the grids' centres from
// cv::matchTemplate (TM_CCORR_NORMED on zero-filled data), refined by +-1 px
// with the masked NCC, which is what is returned.
Registration Register(const Surface& fixed, const Surface& moving, double coarse_um = 25,
                      double max_deg = 6, double max_shift_um = 750) {
  const int factor = std::max(1, static_cast<int>(std::lround(coarse_um * 1e-6 / fixed.dx_m)));
  const int shift = static_cast<int>(std::lround(max_shift_um / coarse_um));
  const Surface f = Coarse(fixed, factor);
  const cv::Mat fz = ZeroFilled(f);
  size_t f_valid = f.ValidCount();
  Registration best;
  for (double angle = -max_deg; angle <= max_deg + 1e-9; angle += 1) {
    const Surface m = Coarse(RotateSurface(moving, angle), factor);
    const cv::Mat mz = ZeroFilled(m);
    // Offsets within +-max_shift of the centres lying on each other.
    const int ox0 = (f.width - m.width) / 2, oy0 = (f.height - m.height) / 2;
    const int left = std::max(0, shift - ox0), top = std::max(0, shift - oy0);
    const int right = std::max(0, ox0 + shift + m.width - f.width);
    const int bottom = std::max(0, oy0 + shift + m.height - f.height);
    cv::Mat padded;
    cv::copyMakeBorder(fz, padded, top, bottom, left, right, cv::BORDER_CONSTANT, 0);
    cv::Mat score;
    cv::matchTemplate(padded, mz, score, cv::TM_CCORR_NORMED);
    const cv::Rect window(ox0 - shift + left, oy0 - shift + top, 2 * shift + 1, 2 * shift + 1);
    cv::Point at;
    cv::minMaxLoc(score(window & cv::Rect(0, 0, score.cols, score.rows)), nullptr, nullptr, nullptr,
                  &at);
    const int ox = at.x + std::max(0, ox0 - shift + left) - left;
    const int oy = at.y + std::max(0, oy0 - shift + top) - top;
    // Refine by +-1 px with the masked NCC itself.
    for (int j = -1; j <= 1; ++j) {
      for (int i = -1; i <= 1; ++i) {
        size_t n = 0;
        const double ncc = MaskedNcc(f, m, ox + i, oy + j, &n);
        if (n * 4 >= std::min(f_valid, m.ValidCount()) && ncc > best.ncc) {
          best = {ncc, angle, ox + i, oy + j, n};
        }
      }
    }
  }
  return best;
}

// ---------------------------------------------------------------------------
// Synthetic tests (always run)

// Runs a raw-like primer through preprocessing and checks the circles, the
// mask, the levelling and the spikes; `pin_r` is the impression's expected
// extent in input pixels.
void CheckRawLike(RawPrimer p, double pin_r) {
  const Surface in = p.Make();
  PreprocessReport rep;
  const Surface out = PreprocessBreechFace(in, "primer.x3p", {}, &rep);
  std::string notes;
  for (const std::string& note : rep.notes) notes += note + "\n";
  SCOPED_TRACE(notes);
  EXPECT_FALSE(rep.already_processed);
  EXPECT_NEAR(out.dx_m, 6.25e-6, 1e-12);
  EXPECT_NEAR(out.dy_m, 6.25e-6, 1e-12);
  EXPECT_EQ(out.values, SurfaceValues::kHeight);

  // The circles, in output pixels (2:1 resampling, then the crop).
  ASSERT_TRUE(rep.primer.found);
  ASSERT_TRUE(rep.firing_pin.found);
  const cv::Point2d primer = ToOutput(p.cx, p.cy, 2, rep), pin = ToOutput(p.pin_x, p.pin_y, 2, rep);
  EXPECT_NEAR(rep.primer.cx_px, primer.x, 2);
  EXPECT_NEAR(rep.primer.cy_px, primer.y, 2);
  EXPECT_NEAR(rep.primer.r_px, p.primer_r / 2, 2);
  EXPECT_NEAR(rep.firing_pin.cx_px, pin.x, 2);
  EXPECT_NEAR(rep.firing_pin.cy_px, pin.y, 2);
  EXPECT_NEAR(rep.firing_pin.r_px, pin_r / 2, 2);

  // Masked: nothing inside the impression plus its margin, nothing outside
  // the primer less its margin; the annulus between is kept.
  const PreprocessOptions o;
  const double margin_fp = o.firing_pin_margin_um / 6.25, margin_pr = o.primer_margin_um / 6.25;
  size_t inside_ring = 0, kept = 0;
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      const double rf = std::hypot(x - pin.x, y - pin.y),
                   rp = std::hypot(x - primer.x, y - primer.y);
      const bool valid = std::isfinite(out.At(x, y));
      if (rf < pin_r / 2 + margin_fp - 1.5 || rp > p.primer_r / 2 - margin_pr + 1.5) {
        EXPECT_FALSE(valid) << x << "," << y;
      } else if (rf > pin_r / 2 + margin_fp + 1.5 && rp < p.primer_r / 2 - margin_pr - 1.5) {
        ++inside_ring;
        kept += valid ? 1 : 0;
      }
    }
  }
  EXPECT_GT(static_cast<double>(kept), 0.97 * static_cast<double>(inside_ring));

  // Tilt and bowl removed: no plane left, heights at the texture's level
  // (amplitude 0.5 um) instead of the tens of micrometres of the input.
  const cv::Vec2d slope = PlaneSlopes(out);
  EXPECT_LT(std::abs(slope[0]), 1e-9);  // < 1 nm per 6.25 um pixel
  EXPECT_LT(std::abs(slope[1]), 1e-9);
  const SurfaceStats st = ComputeStats(out);
  EXPECT_GT(st.stddev, 0.1e-6);
  EXPECT_LT(st.stddev, 0.4e-6);
  // The 80 um spikes are gone, not smeared into the band-passed result.
  EXPECT_LT(std::max(std::abs(st.min), std::abs(st.max)), 1.5e-6);
  for (const cv::Point& s : p.spikes) {
    const cv::Point2d q = ToOutput(s.x + 0.5, s.y + 0.5, 2, rep);
    const int x = static_cast<int>(std::lround(q.x)), y = static_cast<int>(std::lround(q.y));
    if (x >= 0 && y >= 0 && x < out.width && y < out.height) {
      EXPECT_TRUE(std::isnan(out.At(x, y))) << x << "," << y;
    }
  }
}

TEST(Preprocess, RawLikeSurfaceIsMaskedLevelledAndCleaned) {
  {
    SCOPED_TRACE("no data in the impression, raised rim around it");
    RawPrimer p;
    CheckRawLike(p, p.rim_r);
  }
  {
    SCOPED_TRACE("measured impression 60 um deep, raised rim around it");
    RawPrimer p;
    p.hole_depth_um = 60;
    CheckRawLike(p, p.rim_r);
  }
  {
    SCOPED_TRACE("no data in the impression, no rim");
    RawPrimer p;
    p.rim_um = 0;
    p.bowl = 5e-5;  // 67 um at the edge: without a rim, heights must span over 30 um to look raw
    CheckRawLike(p, p.hole_r);
  }
  {
    SCOPED_TRACE("measured impression 40 um deep, no rim, primer at the grid's edge");
    RawPrimer p;
    p.hole_depth_um = 40;
    p.rim_um = 0;
    p.bowl = 5e-5;
    p.cx = 372;
    p.cy = 430;
    p.pin_x = 420;
    p.pin_y = 470;
    CheckRawLike(p, p.hole_r);
  }
}

TEST(Preprocess, SwitchingStepsOffKeepsTheInput) {
  RawPrimer p;
  Surface in = p.Make();
  PreprocessOptions o;
  o.find_region = false;
  o.level = false;
  o.outlier_mad = 0;
  o.short_cutoff_um = 0;
  o.long_cutoff_um = 0;
  o.working_pixel_um = 3.125;
  PreprocessReport rep;
  const Surface out = PreprocessBreechFace(in, "primer.x3p", o, &rep);
  // Only the crop to the valid bounding box.
  ASSERT_EQ(out.ValidCount(), in.ValidCount());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      const float a = out.At(x, y), b = in.At(x + rep.crop_x_px, y + rep.crop_y_px);
      ASSERT_TRUE((std::isnan(a) && std::isnan(b)) || a == b) << x << "," << y;
    }
  }
}

TEST(Preprocess, BandPassKeepsThePassBandAndDropsTheRest) {
  // ISO 16610-61 Gaussian: 50 % at each cut-off. At 60 um the low-pass at
  // 16 um passes exp(-ln2 (16/60)^2) = 95 % and the high-pass at 250 um ~100 %.
  const int border = 60;  // px: edge effects of the 250 um filter (sigma 23 px)
  auto amplitude = [&](double wavelength_um) {
    return InnerAmplitude(PreprocessBreechFace(Sine(wavelength_um), "sine", BandPassOnly(2)),
                          border) /
           1e-6;
  };
  EXPECT_NEAR(amplitude(60), std::exp(-std::log(2.0) * std::pow(16.0 / 60, 2)), 0.03);
  EXPECT_NEAR(amplitude(100), 0.98, 0.03);
  EXPECT_NEAR(amplitude(16), 0.5, 0.05);  // at the short cut-off
  EXPECT_LT(amplitude(6), 0.02);          // far below the short cut-off
  EXPECT_LT(amplitude(2000), 0.05);       // far above the long cut-off
  // At the long cut-off: the high-pass keeps half.
  auto long_only = [&](double wavelength_um) {
    PreprocessOptions o = BandPassOnly(8);
    o.short_cutoff_um = 0;
    return InnerAmplitude(PreprocessBreechFace(Sine(wavelength_um, 8, 512), "sine", o), 90) / 1e-6;
  };
  EXPECT_NEAR(long_only(250), 0.5, 0.05);
}

TEST(Preprocess, BandPassIgnoresMissingPoints) {
  // A 100 um sine on a 5 um offset, with a round hole and stripes of NaN: the
  // filters average the valid points only, so the offset goes everywhere (a
  // filter that took NaN as 0 would leave micrometres of it at the holes'
  // edges) and the sine keeps its 97 %.
  Surface s = Sine(100);
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      if (std::hypot(x - 256, y - 256) < 40 || (x / 16 + y / 16) % 7 == 0) {
        s.At(x, y) = NAN;
      } else {
        s.At(x, y) += 5e-6f;
      }
    }
  }
  const Surface out = PreprocessBreechFace(s, "holes", BandPassOnly(2));
  double worst = 0, sum = 0;
  size_t n = 0;
  for (int y = 60; y < s.height - 60; ++y) {
    for (int x = 60; x < s.width - 60; ++x) {
      if (!std::isfinite(out.At(x, y))) continue;
      const double error = out.At(x, y) - 0.97e-6 * std::sin(2 * kPi * x * 2 / 100.0);
      worst = std::max(worst, std::abs(error));
      sum += error;
      ++n;
    }
  }
  EXPECT_LT(worst, 0.3e-6);
  EXPECT_LT(std::abs(sum / n), 0.01e-6);
}

TEST(Preprocess, ResamplesToTheWorkingPixelSize) {
  // 2.5 um -> 6.25 um (factor 2.5, not an integer) and 10 um -> 6.25 um.
  for (const double px : {2.5, 10.0}) {
    Surface s = Sine(100, px, 256);
    const Surface out = PreprocessBreechFace(s, "sine", BandPassOnly(6.25));
    EXPECT_NEAR(out.dx_m, 6.25e-6, 1e-12);
    EXPECT_NEAR(out.width, 256 * px / 6.25, 1) << px;
    EXPECT_NEAR(out.height, 256 * px / 6.25, 1) << px;
    // 100 um passes the band at 97 %; area averaging over 6.25 um takes < 1 %.
    EXPECT_NEAR(InnerAmplitude(out, out.width / 5) / 1e-6, 0.97, 0.03) << px;
  }
}

TEST(Preprocess, ImageIlluminationIsFlattenedAndNormalised) {
  // A textured 2D image under a strong illumination gradient: 5 % of full
  // brightness on the left, 100 % on the right, times a broad vignette.
  Surface s;
  s.width = 800;
  s.height = 600;
  s.dx_m = s.dy_m = 2.5e-6;
  s.values = SurfaceValues::kIntensity;
  s.z.resize(static_cast<size_t>(s.width) * s.height);
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> grain(0.3, 0.7);
  cv::Mat texture(s.height, s.width, CV_32F);
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) texture.at<float>(y, x) = static_cast<float>(grain(rng));
  }
  cv::GaussianBlur(texture, texture, cv::Size(0, 0), 4);  // grains of ~25 um
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      const double light = (0.05 + 0.95 * x / (s.width - 1.0)) *
                           (1 - 0.3 * std::pow(std::hypot(x - 400, y - 300) / 500, 2));
      s.At(x, y) = static_cast<float>(light * 2 * texture.at<float>(y, x));
    }
  }
  PreprocessReport rep;
  const Surface out = PreprocessBreechFace(s, "lit.png", {}, &rep);
  EXPECT_EQ(out.values, SurfaceValues::kIntensity);
  EXPECT_NEAR(out.dx_m, 6.25e-6, 1e-12);
  EXPECT_FALSE(rep.primer.found);  // no region finding on images
  // Normalised: median 0, robust sigma 1.
  std::vector<float> v;
  for (float x : out.z) {
    if (std::isfinite(x)) v.push_back(x);
  }
  ASSERT_GT(v.size(), out.z.size() * 9 / 10);
  std::sort(v.begin(), v.end());
  EXPECT_NEAR(v[v.size() / 2], 0, 0.02);
  EXPECT_NEAR((v[v.size() * 3 / 4] - v[v.size() / 4]) / 1.349, 1, 0.1);
  // Flattened: the left (dark) and right (bright) thirds have the same mean
  // and the same contrast, where the input's differ several-fold.
  auto band = [&](const Surface& a, int x0, int x1) {
    double sum = 0, sum2 = 0;
    size_t n = 0;
    for (int y = a.height / 6; y < a.height * 5 / 6; ++y) {
      for (int x = x0; x < x1; ++x) {
        const float z = a.At(x, y);
        if (!std::isfinite(z)) continue;
        sum += z;
        sum2 += z * z;
        ++n;
      }
    }
    const double mean = sum / n;
    return std::pair{mean, std::sqrt(sum2 / n - mean * mean)};
  };
  const double in_left_mean = band(s, 40, 260).first, in_right_mean = band(s, 540, 760).first;
  EXPECT_GT(in_right_mean / in_left_mean, 3);
  const int w = out.width;
  // Away from the edges, where the 500 um illumination filter sees one side only.
  const auto [left_mean, left_sd] = band(out, w / 8, w / 3);
  const auto [right_mean, right_sd] = band(out, 2 * w / 3, w - w / 8);
  EXPECT_LT(std::abs(left_mean - right_mean), 0.1);
  EXPECT_NEAR(left_sd / right_sd, 1, 0.15);
}

TEST(Preprocess, OptionsAreChecked) {
  EXPECT_NO_THROW(PreprocessOptions{}.Check());
  auto error = [](auto change) {
    PreprocessOptions o;
    change(o);
    return ErrorOf([&] { o.Check(); });
  };
  EXPECT_TRUE(Contains(error([](auto& o) { o.short_cutoff_um = 300; }),
                       "short_cutoff_um (300) must be below long_cutoff_um (250)"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.short_cutoff_um = 250; }), "must be below"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.short_cutoff_um = -16; }),
                       "short_cutoff_um must be zero (off) or positive"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.long_cutoff_um = NAN; }), "long_cutoff_um"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.working_pixel_um = -1; }), "working_pixel_um"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.working_pixel_um = 0; }), "working_pixel_um"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.outlier_mad = -3; }), "outlier_mad"));
  EXPECT_TRUE(Contains(error([](auto& o) { o.primer_margin_um = -1; }), "primer_margin_um"));
  EXPECT_TRUE(
      Contains(error([](auto& o) { o.firing_pin_margin_um = INFINITY; }), "firing_pin_margin_um"));
  EXPECT_TRUE(
      Contains(error([](auto& o) { o.illumination_cutoff_um = -1; }), "illumination_cutoff_um"));
  // Either cut-off may be off (0).
  EXPECT_NO_THROW((PreprocessOptions{.short_cutoff_um = 0}.Check()));
  EXPECT_NO_THROW((PreprocessOptions{.long_cutoff_um = 0}.Check()));
  // Bad options are refused before the surface is looked at.
  PreprocessOptions o;
  o.long_cutoff_um = 10;
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(Sine(100), "sine", o); }),
                       "preprocess options: short_cutoff_um"));
}

TEST(Preprocess, BadInputsGiveClearErrors) {
  Surface blank = Sine(100, 2, 64);
  std::fill(blank.z.begin(), blank.z.end(), NAN);
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(blank, "blank.x3p"); }),
                       "blank.x3p: all points are NaN"));
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(Surface{}, "none.x3p"); }),
                       "none.x3p: empty surface"));
  Surface no_spacing = Sine(100, 2, 64);
  no_spacing.dx_m = 0;
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(no_spacing, "flat.x3p"); }),
                       "flat.x3p: lateral spacing"));
  Surface short_data = Sine(100, 2, 64);
  short_data.z.resize(100);
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(short_data, "cut.x3p"); }),
                       "cut.x3p: 100 values for a 64 x 64 grid"));
  // A coarse grid that would grow past 1e8 points at the working pixel size.
  Surface coarse = Sine(100, 1000, 100);
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(coarse, "coarse.x3p"); }),
                       "coarse.x3p: resampling from 1000 um to 6.25 um pixels would make"));
  // A few valid points: nothing usable at the working pixel size.
  Surface tiny = blank;
  for (int i = 0; i < 3; ++i) tiny.At(30 + i, 30) = 1e-6f;
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(tiny, "tiny.x3p"); }), "tiny.x3p: "));
  // Valid data, but all of it is off the breech face after masking: a raw
  // primer whose firing-pin impression covers it (primer margin eats the rest).
  RawPrimer p;
  p.n = 300;
  p.cx = p.cy = 150;
  p.primer_r = 40;
  p.pin_x = p.pin_y = 150;
  p.hole_r = 5;
  p.rim_r = 10;
  p.spike_count = 0;
  Surface small = p.Make();
  PreprocessOptions o;
  o.primer_margin_um = 200;  // more than the primer's 125 um radius
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(small, "small.x3p", o); }),
                       "small.x3p: nothing is left of the breech face after masking"));
}

// ---------------------------------------------------------------------------
// Real scans (skip without ../shared/data)

Surface Fadul(const fs::path& data, const std::string& folder, const std::string& name) {
  return ReadX3p(data / "cartridge" / folder / ("Fadul " + name + ".x3p"));
}

// The CSAFE files are already cropped, levelled, band-passed and masked. The
// region step keeps their region, levelling and outlier removal change next
// to nothing, and the band-pass does what it does to every scan: it removes
// wavelengths above 250 um, which these files keep a good deal of (their own
// filter passed them). Outlier removal takes a few hundred points at most
// (deep pits at the firing-pin edge). So the output is compared twice: with
// the file as it is (NCC 0.80 to 0.90), and with the file through the
// band-pass and outlier removal alone, which isolates what the region and
// levelling steps do to it: next to nothing (NCC near 1).
TEST(Preprocess, ProcessedScansPassThroughWithoutDamage) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  int files = 0;
  double worst_kept = 1, worst_ncc = 1, worst_band_ncc = 1, sum_ncc = 0;
  for (const auto& entry : fs::directory_iterator(data / "cartridge/fadul")) {
    if (entry.path().extension() != ".x3p") continue;
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    const Surface in = ReadX3p(entry.path());
    PreprocessReport rep;
    const Surface out = PreprocessBreechFace(in, name, {}, &rep);
    ++files;
    EXPECT_TRUE(rep.already_processed);
    EXPECT_TRUE(rep.primer.found);
    EXPECT_TRUE(rep.firing_pin.found);
    EXPECT_NEAR(out.dx_m, in.dx_m, 1e-12);
    // The region is kept: the circles lie on the annulus' edges, and only a
    // handful of outliers are removed.
    EXPECT_NEAR(rep.primer.r_px, std::min(in.width, in.height) / 2.0, 0.05 * in.width);
    EXPECT_GT(rep.firing_pin.r_px, 0.6 * rep.primer.r_px);
    const double kept =
        static_cast<double>(out.ValidCount()) / static_cast<double>(in.ValidCount());
    EXPECT_GE(kept, 0.98);
    // Same grid up to the crop: correlate point by point.
    size_t common = 0;
    const double ncc = MaskedNcc(in, out, rep.crop_x_px, rep.crop_y_px, &common);
    EXPECT_GE(ncc, 0.75);
    EXPECT_EQ(common, out.ValidCount());
    PreprocessOptions band_only = BandPassOnly(6.25);
    band_only.outlier_mad = PreprocessOptions{}.outlier_mad;
    PreprocessReport band_rep;
    const Surface band = PreprocessBreechFace(in, name, band_only, &band_rep);
    const double band_ncc = MaskedNcc(band, out, rep.crop_x_px - band_rep.crop_x_px,
                                      rep.crop_y_px - band_rep.crop_y_px);
    EXPECT_GE(band_ncc, 0.995);
    worst_kept = std::min(worst_kept, kept);
    worst_ncc = std::min(worst_ncc, ncc);
    worst_band_ncc = std::min(worst_band_ncc, band_ncc);
    sum_ncc += ncc;
  }
  EXPECT_EQ(files, 40);
  std::printf(
      "[ numbers  ] %d processed scans: worst kept share %.4f; NCC with the file: worst %.3f, "
      "mean %.3f; NCC with the file band-passed (and outliers removed) alone: worst %.4f\n",
      files, worst_kept, worst_ncc, sum_ncc / std::max(files, 1), worst_band_ncc);
}

TEST(Preprocess, RawScansComeOutLikeTheirProcessedCounterparts) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Surface done11 = Fadul(data, "fadul", "1-1"), done21 = Fadul(data, "fadul", "2-1");
  for (const std::string name : {"1-1", "1-2", "2-1"}) {
    PreprocessReport rep;
    const Surface raw =
        PreprocessBreechFace(Fadul(data, "fadul-raw", name), "raw " + name, {}, &rep);
    const Surface done = Fadul(data, "fadul", name);
    SCOPED_TRACE(name);
    EXPECT_FALSE(rep.already_processed);
    ASSERT_TRUE(rep.primer.found);
    ASSERT_TRUE(rep.firing_pin.found);
    EXPECT_NEAR(raw.dx_m, done.dx_m, 1e-12);
    EXPECT_NEAR(raw.dy_m, done.dy_m, 1e-12);
    // The firing-pin impression's centre is masked.
    const int cx = static_cast<int>(std::lround(rep.firing_pin.cx_px));
    const int cy = static_cast<int>(std::lround(rep.firing_pin.cy_px));
    ASSERT_TRUE(cx >= 0 && cy >= 0 && cx < raw.width && cy < raw.height);
    EXPECT_TRUE(std::isnan(raw.At(cx, cy)));
    // Similar breech-face area and extent.
    const double area = static_cast<double>(raw.ValidCount()) / done.ValidCount();
    EXPECT_GT(area, 0.8);
    EXPECT_LT(area, 1.6);
    EXPECT_NEAR(raw.width, done.width, 0.1 * done.width);
    // Heights in the micrometre range of the processed file, not the ~190 um of the raw one.
    const SurfaceStats a = ComputeStats(raw), b = ComputeStats(done);
    EXPECT_NEAR(a.stddev / b.stddev, 1, 0.5);
    EXPECT_LT(a.max - a.min, 3 * (b.max - b.min));
    // The same scan correlates after registration (with the file, and with
    // the file through this preprocessing too, as comparisons see it);
    // another slide's scan does not. Raw and processed files are in the same
    // orientation: the best rotation is 0.
    const Registration same = Register(done, raw);
    const Registration same_ours = Register(PreprocessBreechFace(done, name), raw);
    const Registration other = Register(name[0] == '1' ? done21 : done11, raw);
    std::printf(
        "[ numbers  ] raw %s: %dx%d, valid %zu (processed %zu, ratio %.2f), sd %.2f um "
        "(processed %.2f), range %.1f um (processed %.1f); primer r %.1f px, firing pin r %.1f px\n"
        "[ numbers  ]   NCC at 25 um vs processed %s: %.3f at %.0f deg, shift (%d, %d) px, %zu "
        "points; vs processed %s preprocessed: %.3f; vs processed %s: %.3f at %.0f deg\n",
        name.c_str(), raw.width, raw.height, raw.ValidCount(), done.ValidCount(), area,
        a.stddev * 1e6, b.stddev * 1e6, (a.max - a.min) * 1e6, (b.max - b.min) * 1e6,
        rep.primer.r_px, rep.firing_pin.r_px, name.c_str(), same.ncc, same.angle_deg, same.dx,
        same.dy, same.common, name.c_str(), same_ours.ncc, name[0] == '1' ? "2-1" : "1-1",
        other.ncc, other.angle_deg);
    EXPECT_GT(same.ncc, 0.65);
    EXPECT_GT(same_ours.ncc, 0.65);
    EXPECT_GT(same.ncc, other.ncc + 0.4);
    EXPECT_EQ(same.angle_deg, 0);
    EXPECT_EQ(same_ours.angle_deg, 0);
  }
}

TEST(Preprocess, RealImageIsFlattenedAndNormalised) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  // NBIDE ring-light photographs carry no pixel size; 2.5 um makes the
  // primer ~3.6 mm across, as it is (a small pistol primer is 4.45 mm).
  ImageReadOptions io;
  io.pixel_size_um = 2.5;
  const Surface in = ReadImage(data / "image2d/nbide/NBIDE R BF 118.png", io);
  PreprocessReport rep;
  const Surface out = PreprocessBreechFace(in, "NBIDE R BF 118.png", {}, &rep);
  EXPECT_EQ(out.values, SurfaceValues::kIntensity);
  EXPECT_NEAR(out.dx_m, 6.25e-6, 1e-12);
  EXPECT_NEAR(out.width, 2592 * 2.5 / 6.25, 1);
  const SurfaceStats st = ComputeStats(out);
  EXPECT_NEAR(st.mean, 0, 0.2);
  EXPECT_GT(st.stddev, 0.8);
  EXPECT_LT(st.stddev, 2.5);
}

}  // namespace
}  // namespace bien

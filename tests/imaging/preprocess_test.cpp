// Breech-face preprocessing: synthetic checks that always run, real scans
// where ../shared/data is present.
#include "imaging/preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;

// A tilted, curved primer with a firing-pin hole and fine texture.
Surface Primer(int n = 400, double px_um = 3.125) {
  Surface s;
  s.width = s.height = n;
  s.dx_m = s.dy_m = px_um * 1e-6;
  s.z.assign(static_cast<size_t>(n) * n, NAN);
  const double c = (n - 1) / 2.0;
  for (int y = 0; y < n; ++y) {
    for (int x = 0; x < n; ++x) {
      const double r = std::hypot(x - c, y - c);
      if (r > 0.45 * n || r < 0.12 * n) continue;
      const double u = (x - c) * px_um, v = (y - c) * px_um;  // micrometres
      const double tilt = 0.05 * u + 0.03 * v, bowl = 2e-5 * (u * u + v * v);
      const double texture = std::sin(2 * std::numbers::pi * u / 80.0) * 0.5;
      s.At(x, y) = static_cast<float>((tilt + bowl + texture) * 1e-6);
    }
  }
  return s;
}

TEST(Preprocess, RemovesTiltAndCurvatureAndKeepsTheTexture) {
  PreprocessReport rep;
  const Surface out = PreprocessBreechFace(Primer(), "primer.x3p", {}, &rep);
  EXPECT_NEAR(out.dx_m, 6.25e-6, 1e-12);
  const SurfaceStats st = ComputeStats(out);
  // The 80 µm texture (amplitude 0.5 µm, RMS 0.35 µm) is in the pass band;
  // the tilt (tens of µm across) and the bowl are gone.
  EXPECT_GT(st.stddev, 0.2e-6);
  EXPECT_LT(st.stddev, 0.5e-6);
  EXPECT_TRUE(rep.primer.found);
  EXPECT_TRUE(rep.firing_pin.found);
  EXPECT_GT(rep.valid_share, 0.3);
}

TEST(Preprocess, BandPassKeepsThePassBandAndDropsTheRest) {
  auto amplitude = [](double wavelength_um) {
    Surface s;
    s.width = s.height = 256;
    s.dx_m = s.dy_m = 2e-6;
    s.z.resize(256 * 256);
    for (int y = 0; y < 256; ++y) {
      for (int x = 0; x < 256; ++x) {
        s.At(x, y) =
            static_cast<float>(1e-6 * std::sin(2 * std::numbers::pi * x * 2.0 / wavelength_um));
      }
    }
    PreprocessOptions o;
    o.find_region = false;
    o.level = false;
    o.outlier_mad = 0;
    o.working_pixel_um = 2;
    const Surface out = PreprocessBreechFace(s, "sine", o);
    return ComputeStats(out).stddev * std::sqrt(2.0) / 1e-6;
  };
  EXPECT_GT(amplitude(60), 0.8);    // inside 16..250 µm
  EXPECT_LT(amplitude(6), 0.1);     // below the short cut-off
  EXPECT_LT(amplitude(1600), 0.1);  // far above the long cut-off
}

TEST(Preprocess, ProcessedScansPassThrough) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  const Surface in = ReadX3p(data / "cartridge/fadul/Fadul 1-1.x3p");
  PreprocessReport rep;
  const Surface out = PreprocessBreechFace(in, "Fadul 1-1", {}, &rep);
  EXPECT_TRUE(rep.already_processed);
  EXPECT_GE(static_cast<double>(out.ValidCount()), 0.9 * static_cast<double>(in.ValidCount()));
  // Same grid (the file is already cropped at 6.25 µm): correlate point by point.
  ASSERT_EQ(out.width, in.width);
  ASSERT_EQ(out.height, in.height);
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < in.z.size(); ++i) {
    if (std::isfinite(in.z[i]) && std::isfinite(out.z[i])) {
      sab += in.z[i] * out.z[i];
      saa += in.z[i] * in.z[i];
      sbb += out.z[i] * out.z[i];
    }
  }
  // Wavelengths above 250 µm that the file's own processing kept are removed
  // on purpose (every scan gets the same band); the marks themselves stay.
  EXPECT_GT(sab / std::sqrt(saa * sbb), 0.8);
}

TEST(Preprocess, RawScanComesOutLikeItsProcessedCounterpart) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  PreprocessReport rep;
  const Surface raw = PreprocessBreechFace(ReadX3p(data / "cartridge/fadul-raw/Fadul 1-1.x3p"),
                                           "raw 1-1", {}, &rep);
  const Surface done = ReadX3p(data / "cartridge/fadul/Fadul 1-1.x3p");
  EXPECT_FALSE(rep.already_processed);
  EXPECT_TRUE(rep.firing_pin.found);
  EXPECT_NEAR(raw.dx_m, done.dx_m, 1e-12);
  // Heights in the micrometre range of the processed file, not the ~190 µm of the raw one.
  const SurfaceStats a = ComputeStats(raw), b = ComputeStats(done);
  EXPECT_LT(a.stddev, 3 * b.stddev);
  EXPECT_GT(a.stddev, b.stddev / 3);
  // The firing-pin impression's centre is masked.
  const int cx = static_cast<int>(rep.firing_pin.cx_px),
            cy = static_cast<int>(rep.firing_pin.cy_px);
  ASSERT_TRUE(cx >= 0 && cy >= 0 && cx < raw.width && cy < raw.height);
  EXPECT_TRUE(std::isnan(raw.At(cx, cy)));
  // Similar breech-face area (within a factor of two).
  EXPECT_LT(static_cast<double>(raw.ValidCount()), 2.0 * static_cast<double>(done.ValidCount()));
  EXPECT_GT(static_cast<double>(raw.ValidCount()), 0.5 * static_cast<double>(done.ValidCount()));
}

TEST(Preprocess, BadInputsGiveClearErrors) {
  Surface s = Primer(64);
  std::fill(s.z.begin(), s.z.end(), NAN);
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(s, "blank.x3p"); }),
                       "blank.x3p: all points are NaN"));
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(Surface{}, "none.x3p"); }),
                       "none.x3p: empty surface"));
  PreprocessOptions o;
  o.short_cutoff_um = 300;
  EXPECT_TRUE(Contains(ErrorOf([&] { o.Check(); }), "must be below long_cutoff_um"));
  o = {};
  o.working_pixel_um = -1;
  EXPECT_THROW(o.Check(), Error);
  // Too little left to be a breech face.
  Surface tiny = Primer(64);
  std::fill(tiny.z.begin(), tiny.z.end(), NAN);
  for (int i = 0; i < 3; ++i) tiny.At(30 + i, 30) = 1e-6f;
  EXPECT_TRUE(Contains(ErrorOf([&] { PreprocessBreechFace(tiny, "tiny.x3p"); }),
                       "tiny.x3p: nothing is left"));
}

}  // namespace
}  // namespace bien

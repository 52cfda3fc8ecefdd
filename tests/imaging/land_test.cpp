// Land signatures (imaging/land.h): synthetic lands from imaging/synth_land.h,
// and the Hamby 252 scans under ../shared/data (skipped when absent).
#include "imaging/land.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/synth_land.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;

// Correlation of two equally long vectors (NaN pairs skipped).
double Correlation(const std::vector<float>& a, const std::vector<float>& b) {
  double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0, n = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) continue;
    sa += a[i];
    sb += b[i];
    saa += a[i] * a[i];
    sbb += b[i] * b[i];
    sab += a[i] * b[i];
    ++n;
  }
  return (sab - sa * sb / n) / std::sqrt((saa - sa * sa / n) * (sbb - sb * sb / n));
}

TEST(LandTest, LoessFollowsAQuadraticExactlyAndIgnoresAnOutlier) {
  std::vector<double> xs, ys;
  for (int i = 0; i < 200; ++i) {
    xs.push_back(i);
    ys.push_back(3 + 0.5 * i - 0.01 * i * i);
  }
  ys[100] += 50;  // one outlier: the robust fit must not follow it
  const std::vector<double> fit = Loess(xs, ys, xs, 0.75, 2, 1);
  for (size_t i = 0; i < xs.size(); i += 10) {
    const double truth = 3 + 0.5 * xs[i] - 0.01 * xs[i] * xs[i];
    EXPECT_NEAR(fit[i], truth, 1e-3) << "at " << xs[i];
  }
  const std::vector<double> fast = Loess(xs, ys, xs, 0.75, 2, 8);
  // Linear interpolation between fits 8 apart: at most 8^2 |f''| / 8 off.
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_NEAR(fast[i], fit[i], 64 * 0.02 / 8 + 1e-3);
}

TEST(LandTest, SyntheticLandGivesItsStriaeWithoutCurvatureOrShoulders) {
  SynthLandOptions o;
  const Surface s = MakeSynthLand(o, 0, 0, 0);
  const LandSignature sig = ExtractLandSignature(s, "synthetic");
  EXPECT_EQ(sig.across, LandAxis::kY);
  EXPECT_GT(sig.direction_ratio, 1.5);
  EXPECT_TRUE(sig.shoulder_left_found);
  EXPECT_TRUE(sig.shoulder_right_found);
  // The land is 1900 um wide; the cut lies just inside both shoulders.
  EXPECT_GT(sig.land_width_um, 1700);
  EXPECT_LT(sig.land_width_um, 1900);
  EXPECT_DOUBLE_EQ(sig.spacing_um, 4);
  // Curvature (hundreds of um) and walls (40 um) are gone: the signature is the striae's size.
  double ss = 0;
  int n = 0;
  for (float v : sig.values_um) {
    if (!std::isfinite(v)) continue;
    ss += v * v;
    ++n;
    EXPECT_LT(std::abs(v), 5) << "a shoulder or the curvature was left in";
  }
  EXPECT_GT(n, 400);
  EXPECT_GT(std::sqrt(ss / n), 0.2);
  EXPECT_LT(std::sqrt(ss / n), 1.5);
}

TEST(LandTest, OrientationIsDetectedNotAssumed) {
  SynthLandOptions o;
  const LandSignature along_y = ExtractLandSignature(MakeSynthLand(o, 0, 1, 0), "y");
  o.across_y = false;  // the same land, transposed: x runs across it
  const LandSignature along_x = ExtractLandSignature(MakeSynthLand(o, 0, 1, 0), "x");
  EXPECT_EQ(along_y.across, LandAxis::kY);
  EXPECT_EQ(along_x.across, LandAxis::kX);
  ASSERT_EQ(along_x.values_um.size(), along_y.values_um.size());
  EXPECT_GT(Correlation(along_x.values_um, along_y.values_um), 0.9);
}

TEST(LandTest, BadLandScansGiveClearErrors) {
  SynthLandOptions o;
  Surface s = MakeSynthLand(o, 0, 0, 0);
  // Wrong orientation stated.
  LandOptions stated;
  stated.across = LandAxis::kX;
  EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(s, "land.x3p", stated); }),
                       "land.x3p: the orientation given says x runs across the land"));
  // All NaN.
  Surface empty = s;
  std::fill(empty.z.begin(), empty.z.end(), std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(empty, "nan.x3p"); }),
                       "nan.x3p: the land scan has no valid heights (all NaN)"));
  // Too short across the land.
  SynthLandOptions narrow = o;
  narrow.across_um = 250;
  narrow.land_width_um = 200;
  narrow.max_shift_um = 10;
  EXPECT_TRUE(
      Contains(ErrorOf([&] { ExtractLandSignature(MakeSynthLand(narrow, 0, 0, 0), "short.x3p"); }),
               "short.x3p: the land scan is too narrow across the land"));
  // Too short along the bullet.
  SynthLandOptions stub = o;
  stub.along_um = 50;
  EXPECT_TRUE(
      Contains(ErrorOf([&] { ExtractLandSignature(MakeSynthLand(stub, 0, 0, 0), "stub.x3p"); }),
               "stub.x3p: the land scan is too short along the bullet"));
  // No striation direction: isotropic noise.
  Surface noise = s;
  uint64_t state = 7;
  for (float& v : noise.z) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>(((state >> 33) % 1000) * 1e-9);
  }
  EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(noise, "noise.x3p"); }),
                       "noise.x3p: no clear striation direction"));
  // Empty, and a 2D image.
  EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(Surface{}, "none.x3p"); }),
                       "none.x3p: the land scan is empty"));
  Surface image = s;
  image.values = SurfaceValues::kIntensity;
  EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(image, "img.png"); }),
                       "img.png: a bullet land signature needs 3D heights"));
  // Bad options.
  LandOptions bad;
  bad.smooth_span = 0;
  EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(s, "x", bad); }), "land options:"));
}

// Every Hamby 252 land: y runs across, both groove shoulders are found on
// the lands whose scans hold both, and the land is about 2 mm wide.
TEST(LandRealTest, Hamby252LandsGiveSignatures) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  const auto dir = data / "bullet" / "hamby252";
  const CsvTable truth = ReadCsvFile(dir / "truth.csv");
  ASSERT_EQ(truth.rows.size(), 11u);
  for (const auto& row : truth.rows) {
    const Surface s = ReadX3p(dir / row[0]);
    const LandSignature sig = ExtractLandSignature(s, row[0]);
    EXPECT_EQ(sig.across, LandAxis::kY) << row[0];
    EXPECT_GT(sig.direction_ratio, 1.5) << row[0];
    EXPECT_GT(sig.land_width_um, 1800) << row[0];
    EXPECT_LT(sig.land_width_um, 2200) << row[0];
    EXPECT_TRUE(sig.shoulder_left_found) << row[0];
    EXPECT_GT(sig.crosscut_ccf, 0.8) << row[0];
    // Stating the orientation the file really has changes nothing; the other one is refused.
    LandOptions y;
    y.across = LandAxis::kY;
    EXPECT_EQ(ExtractLandSignature(s, row[0], y).values_um.size(), sig.values_um.size());
    LandOptions x;
    x.across = LandAxis::kX;
    EXPECT_TRUE(Contains(ErrorOf([&] { ExtractLandSignature(s, row[0], x); }),
                         "the striations run along x"))
        << row[0];
  }
}

}  // namespace
}  // namespace bien

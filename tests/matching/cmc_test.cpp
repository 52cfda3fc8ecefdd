// Congruent matching cells on real breech faces and on synthetic surfaces.
#include "matching/cmc.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "imaging/preprocess.h"
#include "imaging/synth.h"
#include "imaging/transform.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;
namespace fs = std::filesystem;

Surface Fadul(const fs::path& data, const std::string& name) {
  return ReadX3p(data / "cartridge/fadul" / ("Fadul " + name + ".x3p"));
}

double AngleDiff(double a, double b) {
  double d = std::fmod(a - b, 360.0);
  if (d > 180) d -= 360;
  if (d <= -180) d += 360;
  return std::abs(d);
}

// A synthetic breech face (one firearm's texture, NaN outside a disc),
// preprocessed as every scan is before comparison.
Surface Synthetic(int firearm, int shot, int size = 400) {
  SynthOptions o;
  o.seed = 7;
  o.size_px = size;
  o.max_shift_px = 4;
  return PreprocessBreechFace(MakeSynthShot(o, firearm, shot), "synthetic");
}

TEST(Cmc, SameSlideScoresFarAboveDifferentSlides) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Surface a = Fadul(data, "1-1"), b = Fadul(data, "1-2"), c = Fadul(data, "2-1");
  const CmcResult km = CompareCmc(a, b);
  const CmcResult knm = CompareCmc(a, c);
  EXPECT_GE(km.combined, 12) << "forward " << km.forward.congruent << " backward "
                             << km.backward.congruent;
  EXPECT_LE(knm.combined, 5);
  EXPECT_GE(km.combined, 3 * knm.combined);
  EXPECT_GT(km.forward.valid_cells, 20);
  EXPECT_GT(km.backward.valid_cells, 20);
  // The per-cell table is complete and consistent with the counts.
  ASSERT_EQ(km.forward.cells.size(), 64u);
  int congruent = 0, used = 0;
  for (const CmcCell& cell : km.forward.cells) {
    congruent += cell.congruent ? 1 : 0;
    used += cell.used ? 1 : 0;
    if (cell.congruent) {
      EXPECT_GE(cell.ccf, CmcOptions{}.min_ccf);
      EXPECT_LE(AngleDiff(cell.registration.angle_deg, km.forward.registration.angle_deg),
                CmcOptions{}.angle_tolerance_deg + 1e-9);
    }
  }
  EXPECT_EQ(congruent, km.forward.congruent);
  EXPECT_EQ(used, km.forward.valid_cells);
}

TEST(Cmc, RawScansBehaveLikeProcessedOnes) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  auto raw = [&](const std::string& name) {
    const Surface s = ReadX3p(data / "cartridge/fadul-raw" / ("Fadul " + name + ".x3p"));
    return PreprocessBreechFace(s, name);
  };
  const Surface a = raw("1-1"), b = raw("1-2"), c = raw("2-1");
  const CmcResult km = CompareCmc(a, b);
  const CmcResult knm = CompareCmc(a, c);
  EXPECT_GE(km.combined, 10);
  EXPECT_LE(knm.combined, 5);
  EXPECT_GE(km.combined, 2.5 * knm.combined);
  // A raw scan matches the processed scan of the same case.
  const CmcResult same = CompareCmc(a, PreprocessBreechFace(Fadul(data, "1-1"), "1-1"));
  EXPECT_GE(same.combined, 12);
}

TEST(Cmc, FindsARotationOf137Degrees) {
  const fs::path data = BIEN_REQUIRE_SHARED_DATA();
  const Surface a = Fadul(data, "1-1");
  const Surface rotated = RotateSurface(a, 137);
  const CmcResult r = CompareCmc(a, rotated);
  EXPECT_LE(AngleDiff(r.forward.registration.angle_deg, 137), 2)
      << r.forward.registration.angle_deg;
  EXPECT_LE(AngleDiff(r.backward.registration.angle_deg, -137), 2);
  EXPECT_GE(r.forward.congruent, 0.7 * r.forward.valid_cells);
  EXPECT_GE(r.combined, 20);
  // A known match, rotated, is still found at the right angle.
  const Surface b = Fadul(data, "1-2");
  const CmcResult plain = CompareCmc(a, b);
  const CmcResult turned = CompareCmc(a, RotateSurface(b, -100));
  EXPECT_LE(
      AngleDiff(turned.forward.registration.angle_deg, plain.forward.registration.angle_deg - 100),
      2);
  EXPECT_GE(turned.combined, 12);
}

TEST(Cmc, SyntheticSameFirearmMatchesAtAnyAngle) {
  const Surface a = Synthetic(0, 0);
  const Surface b = RotateSurface(Synthetic(0, 1), 250);
  const Surface c = Synthetic(1, 0);
  const CmcResult km = CompareCmc(a, b);
  const CmcResult knm = CompareCmc(a, c);
  EXPECT_GT(km.combined, 3 * std::max(1.0, knm.combined));
  EXPECT_LE(knm.combined, 5);
}

TEST(Cmc, IsDeterministic) {
  const Surface a = Synthetic(2, 0), b = Synthetic(2, 1);
  const CmcResult r1 = CompareCmc(a, b), r2 = CompareCmc(a, b);
  EXPECT_EQ(r1.combined, r2.combined);
  EXPECT_EQ(r1.forward.registration.angle_deg, r2.forward.registration.angle_deg);
  ASSERT_EQ(r1.forward.cells.size(), r2.forward.cells.size());
  for (size_t i = 0; i < r1.forward.cells.size(); ++i) {
    EXPECT_EQ(r1.forward.cells[i].ccf, r2.forward.cells[i].ccf);
  }
}

TEST(Cmc, MostlyNanCellsAreExcluded) {
  Surface a = Synthetic(3, 0);
  // Wipe the right half except a sprinkle of points: those cells must not count.
  std::mt19937 rng(1);
  for (int y = 0; y < a.height; ++y) {
    for (int x = a.width / 2; x < a.width; ++x) {
      if (rng() % 50 != 0) a.At(x, y) = NAN;
    }
  }
  const CmcResult r = CompareCmc(a, Synthetic(3, 1));
  int right_used = 0, left_used = 0;
  for (const CmcCell& cell : r.forward.cells) {
    const int centre_x = cell.x + cell.width / 2;
    if (centre_x > a.width / 2 + cell.width / 2) right_used += cell.used ? 1 : 0;
    if (centre_x < a.width / 2 - cell.width / 2) left_used += cell.used ? 1 : 0;
    if (cell.used) {
      EXPECT_GE(cell.valid_share, CmcOptions{}.min_cell_valid);
    }
  }
  EXPECT_EQ(right_used, 0);
  EXPECT_GT(left_used, 4);
}

TEST(Cmc, BadInputsGiveClearErrors) {
  const Surface a = Synthetic(4, 0);
  Surface coarse = a;
  coarse.dx_m *= 2;
  coarse.dy_m *= 2;
  EXPECT_TRUE(Contains(ErrorOf([&] { CompareCmc(a, coarse); }), "pixels"));
  EXPECT_TRUE(Contains(ErrorOf([&] { CompareCmc(a, coarse); }), "same working pixel size"));

  Surface nan = a;
  std::fill(nan.z.begin(), nan.z.end(), NAN);
  EXPECT_TRUE(Contains(ErrorOf([&] { PrepareCmc(nan, "empty scan.x3p"); }),
                       "empty scan.x3p: all points are NaN"));

  Surface rect = a;
  rect.dy_m *= 1.5;
  EXPECT_TRUE(Contains(ErrorOf([&] { PrepareCmc(rect, "odd.x3p"); }), "square pixels"));

  // Data only near the centre in one, only far from it in the other: no
  // rotation about the centres and no allowed shift makes them overlap.
  Surface inner = a, outer = a;
  const double cx = (a.width - 1) / 2.0, cy = (a.height - 1) / 2.0;
  for (int y = 0; y < a.height; ++y) {
    for (int x = 0; x < a.width; ++x) {
      const double r = std::hypot(x - cx, y - cy);
      if (r > 0.15 * a.width) inner.At(x, y) = NAN;
      if (r < 0.3 * a.width) outer.At(x, y) = NAN;
    }
  }
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         CmcOptions o;
                         o.max_shift_um = 50;
                         const auto pi = PrepareCmc(inner, "inner.x3p", o);
                         const auto po = PrepareCmc(outer, "outer.x3p", o);
                         CompareCmc(*pi, *po, o);
                       }),
                       "do not overlap"));

  CmcOptions bad;
  bad.min_ccf = 1.5;
  EXPECT_TRUE(Contains(ErrorOf([&] { bad.Check(); }), "min_ccf"));
  bad = CmcOptions{};
  bad.cells_per_side = 1;
  EXPECT_THROW(bad.Check(), Error);
}

}  // namespace
}  // namespace bien

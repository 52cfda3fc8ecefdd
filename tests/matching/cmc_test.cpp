// Congruent matching cells on real breech faces and on synthetic surfaces.
#include "matching/cmc.h"

#include <gtest/gtest.h>

#include <zlib.h>
#include <cmath>
#include <random>
#include <thread>
#include <tuple>

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

// The cell search has two implementations: its own FFT when the cell FFT
// size is a power of two (64 on the Fadul scans; here with a 300 um search
// radius) and OpenCV's DFT otherwise (54 here at the default 250 um).
TEST(Cmc, BothCellFftSizesSeparateSameFromDifferentFirearms) {
  const Surface a = Synthetic(0, 0);
  const Surface b = RotateSurface(Synthetic(0, 1), 40);
  const Surface c = Synthetic(1, 0);
  for (const double radius : {250.0, 300.0}) {
    SCOPED_TRACE(radius);
    CmcOptions o;
    o.search_radius_um = radius;
    const CmcResult plain = CompareCmc(a, Synthetic(0, 1), o);
    const CmcResult km = CompareCmc(a, b, o);
    const CmcResult knm = CompareCmc(a, c, o);
    EXPECT_GT(km.combined, 3 * std::max(1.0, knm.combined));
    EXPECT_LE(knm.combined, 5);
    EXPECT_LE(
        AngleDiff(km.forward.registration.angle_deg, plain.forward.registration.angle_deg + 40), 2);
  }
}

// The coarse spectra of a reference are kept per thread for its next
// comparison: a comparison that reuses them gives what a fresh one gives.
TEST(Cmc, KeptCoarseSpectraChangeNothing) {
  const auto a = PrepareCmc(Synthetic(3, 0), "a");
  const auto b = PrepareCmc(Synthetic(3, 1), "b");
  const auto c = PrepareCmc(Synthetic(4, 0), "c");
  const CmcResult first = CompareCmc(*a, *b);
  CompareCmc(*a, *c);
  const CmcResult again = CompareCmc(*a, *b);
  CmcResult fresh;
  std::thread([&] { fresh = CompareCmc(*a, *b); }).join();
  const CmcResult* results[] = {&again, &fresh};
  for (const CmcResult* r : results) {
    EXPECT_EQ(r->combined, first.combined);
    EXPECT_EQ(r->forward.registration.angle_deg, first.forward.registration.angle_deg);
    EXPECT_EQ(r->forward.registration.dx_um, first.forward.registration.dx_um);
    EXPECT_EQ(r->backward.registration.dy_um, first.backward.registration.dy_um);
    ASSERT_EQ(r->forward.cells.size(), first.forward.cells.size());
    for (size_t i = 0; i < first.forward.cells.size(); ++i) {
      EXPECT_EQ(r->forward.cells[i].ccf, first.forward.cells[i].ccf);
    }
  }
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

// The compact features compare exactly as the surface they were made from,
// and any damage to them is an error naming the source (they come from disk
// and from other nodes).
TEST(CmcFeatures, RoundTripComparesIdentically) {
  const Surface a = Synthetic(0, 0), b = Synthetic(0, 1), c = Synthetic(1, 0);
  const auto pa = PrepareCmc(a, "a"), pb = PrepareCmc(b, "b"), pc = PrepareCmc(c, "c");
  const std::string fa = EncodeCmcFeatures(*pa), fb = EncodeCmcFeatures(*pb);
  // Far smaller than the surface's float heights.
  EXPECT_LT(fa.size(), a.z.size() * sizeof(float) / 4) << fa.size();
  EXPECT_EQ(EncodeCmcFeatures(*pa), fa);     // deterministic
  EXPECT_EQ(EncodeCmcFeatures(a, "a"), fa);  // straight from the surface (ingest)
  const auto da = DecodeCmcFeatures(fa, "a"), db = DecodeCmcFeatures(fb, "b");
  EXPECT_EQ(EncodeCmcFeatures(*da), fa);
  for (const auto& [x, y, dx, dy] :
       {std::tuple{pa, pb, da, db}, std::tuple{pa, pc, da, pc}, std::tuple{pb, pa, db, da}}) {
    const CmcResult direct = CompareCmc(*x, *y), decoded = CompareCmc(*dx, *dy);
    EXPECT_EQ(direct.combined, decoded.combined);
    EXPECT_EQ(direct.forward.registration.angle_deg, decoded.forward.registration.angle_deg);
    EXPECT_EQ(direct.forward.registration.dx_um, decoded.forward.registration.dx_um);
    ASSERT_EQ(direct.forward.cells.size(), decoded.forward.cells.size());
    for (size_t i = 0; i < direct.forward.cells.size(); ++i) {
      EXPECT_EQ(direct.forward.cells[i].ccf, decoded.forward.cells[i].ccf) << i;
      EXPECT_EQ(direct.forward.cells[i].x, decoded.forward.cells[i].x) << i;
    }
  }
  EXPECT_GT(CompareCmc(*da, *db).combined, CompareCmc(*da, *pc).combined);
}

TEST(CmcFeatures, DamagedOrForeignFeaturesAreNamedErrors) {
  const std::string f = EncodeCmcFeatures(*PrepareCmc(Synthetic(2, 0), "s"));
  auto error = [](std::string_view bytes, const CmcOptions& o = {}) {
    return ErrorOf([&] { DecodeCmcFeatures(bytes, "peer RS scan 7", o); });
  };
  EXPECT_TRUE(Contains(error(""), "peer RS scan 7: not usable CMC features: no BIENCMCF header"));
  EXPECT_TRUE(Contains(error("BIENCMCF"), "no BIENCMCF header"));
  // Every truncation and every flipped byte is caught (by the checksum, or
  // the bounds when the checksum is recomputed by a hostile sender).
  for (size_t n = 1; n < f.size(); n += 97) {
    EXPECT_TRUE(Contains(error(f.substr(0, n)), "peer RS scan 7: not usable CMC features")) << n;
  }
  for (size_t i = 0; i < f.size(); i += 131) {
    std::string g = f;
    g[i] = static_cast<char>(g[i] ^ 0x5a);
    EXPECT_TRUE(Contains(error(g), "not usable CMC features")) << i;
  }
  CmcOptions other;
  other.cell_pixel_um = 20;
  EXPECT_TRUE(Contains(error(f, other), "the options want \"cmcf-v1 fp16 cell=20 coarse=50\""));
}

// Random mutations with valid checksums: decoding either succeeds or throws
// bien::Error; it never crashes or reads out of bounds (run under ASan in
// the sanitizer build).
TEST(CmcFeatures, MutatedFeaturesWithValidChecksumsNeverCrash) {
  const std::string f = EncodeCmcFeatures(*PrepareCmc(Synthetic(3, 0, 200), "s"));
  std::mt19937_64 rng(20261123);
  int decoded = 0, refused = 0;
  for (int round = 0; round < 400; ++round) {
    std::string g = f.substr(0, f.size() - 4);
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % g.size();
      switch (rng() % 3) {
        case 0:
          g[at] = static_cast<char>(rng());
          break;
        case 1:
          g.erase(at, 1 + rng() % 8);
          break;
        default:
          g.insert(at, std::string(1 + rng() % 8, static_cast<char>(rng())));
          break;
      }
      if (g.size() < 8) g = f.substr(0, 8);
    }
    const uint32_t crc =
        crc32(0, reinterpret_cast<const Bytef*>(g.data()), static_cast<uInt>(g.size()));
    g.append(reinterpret_cast<const char*>(&crc), 4);
    try {
      DecodeCmcFeatures(g, "fuzz");
      ++decoded;
    } catch (const Error& e) {
      EXPECT_TRUE(Contains(std::string(e.what()), "fuzz: ")) << round;
      ++refused;
    }
  }
  EXPECT_GT(refused, 300);
  EXPECT_EQ(decoded + refused, 400);
}

}  // namespace
}  // namespace bien

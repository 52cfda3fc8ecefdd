// Land and bullet comparison (matching/bullet.h) on synthetic lands and on
// the Hamby 252 scans under ../shared/data (skipped when absent).
#include "matching/bullet.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/land.h"
#include "imaging/synth_land.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;

std::shared_ptr<const PreparedLand> Synth(int barrel, int land, int shot) {
  SynthLandOptions o;
  o.along_um = 200;
  const std::string label = "synthetic " + std::to_string(barrel) + "/" + std::to_string(land) +
                            "/" + std::to_string(shot);
  return PrepareLand(ExtractLandSignature(MakeSynthLand(o, barrel, land, shot), label), label);
}

TEST(BulletTest, SameSyntheticLandScoresAboveDifferentLands) {
  const auto a = Synth(0, 0, 0);
  const auto b = Synth(0, 0, 1);
  const LandComparison same = CompareLands(*a, *b);
  EXPECT_TRUE(same.valid);
  EXPECT_GT(same.ccf, 0.6);
  EXPECT_GT(same.cms, 8);
  // The shots are shifted across the scan; the lag undoes it (the striae sit on the land).
  EXPECT_LT(std::abs(same.lag_um), 150);
  for (int land = 1; land < 4; ++land) {
    const LandComparison other = CompareLands(*a, *Synth(0, land, 1));
    EXPECT_LT(other.score, same.score - 0.2) << "land " << land;
    EXPECT_LT(other.cms, same.cms);
  }
  // Symmetric in its score (up to the CMS counting from a's striae).
  EXPECT_NEAR(CompareLands(*b, *a).ccf, same.ccf, 1e-9);
  // A signature compared with itself is perfect.
  const LandComparison self = CompareLands(*a, *a);
  EXPECT_NEAR(self.ccf, 1, 1e-6);
  EXPECT_EQ(self.lag, 0);
  EXPECT_NEAR(self.d_um, 0, 1e-6);
}

TEST(BulletTest, BulletPhaseIsFoundWithAMissingLand) {
  PreparedBullet a{"A", {}}, b{"B", {}};
  for (int land = 0; land < 6; ++land) a.lands.push_back(Synth(3, land, 0));
  // B was fired through the same barrel but loaded so that its land 1 carries barrel land 5:
  // land i of A faces land (i + 2) mod 6 of B. B's land 4 is damaged (not scanned).
  b.lands.resize(6);
  for (int j = 0; j < 6; ++j) {
    if (j != 3) b.lands[j] = Synth(3, (j + 4) % 6, 1);
  }
  const BulletComparison r = CompareBullets(a, b);
  EXPECT_EQ(r.lands, 6);
  EXPECT_EQ(r.phase, 2);
  ASSERT_EQ(r.pairs.size(), 5u);
  for (const LandPair& p : r.pairs) EXPECT_EQ(p.land_b, (p.land_a - 1 + 2) % 6 + 1);
  EXPECT_GT(r.score, r.runner_up + 0.2);

  // A bullet of another barrel: no phase stands out.
  PreparedBullet c{"C", {}};
  for (int land = 0; land < 6; ++land) c.lands.push_back(Synth(4, land, 0));
  const BulletComparison knm = CompareBullets(a, c);
  EXPECT_LT(knm.score, r.score - 0.2);
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double dot = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) dot += double(a[i]) * b[i];
  return dot;
}

std::vector<float> SynthDescriptor(int barrel, int land, int shot) {
  SynthLandOptions o;
  o.along_um = 200;
  const std::string label = "synthetic " + std::to_string(barrel) + "/" + std::to_string(land) +
                            "/" + std::to_string(shot);
  return BulletDescriptor(ExtractLandSignature(MakeSynthLand(o, barrel, land, shot), label), label);
}

// Shots of one land (shifted across the scan by up to 60 um, with striae of
// their own) are closer than any two different lands, and the vector has the
// stated length and unit norm.
TEST(BulletDescriptorTest, SameSyntheticLandIsNearestWhateverTheShift) {
  const int dim = BulletDescriptorDim();
  double min_same = 2, max_other = -2;
  std::vector<std::vector<float>> shot0, shot1;
  for (int land = 0; land < 4; ++land) {
    shot0.push_back(SynthDescriptor(0, land, 0));
    shot1.push_back(SynthDescriptor(0, land, 1));
  }
  shot0.push_back(SynthDescriptor(1, 0, 0));  // another barrel
  for (const auto& v : shot0) {
    ASSERT_EQ(static_cast<int>(v.size()), dim);
    double norm = 0;
    for (float x : v) norm += double(x) * x;
    EXPECT_NEAR(norm, 1, 1e-5);
  }
  for (size_t i = 0; i < shot1.size(); ++i) {
    for (size_t j = 0; j < shot0.size(); ++j) {
      const double c = Cosine(shot1[i], shot0[j]);
      if (i == j) {
        min_same = std::min(min_same, c);
      } else {
        max_other = std::max(max_other, c);
      }
    }
  }
  EXPECT_GT(min_same, max_other + 0.2) << min_same << " vs " << max_other;
}

TEST(BulletDescriptorTest, KeyNamesEveryParameterAndBadInputIsNamed) {
  const std::string key = BulletDescriptorKey();
  EXPECT_EQ(key.rfind("bld-v1 ", 0), 0u) << key;
  EXPECT_LE(key.size(), 128u);  // the store's limit for descriptor keys
  BulletDescriptorOptions o;
  o.smooth_bins = 9;
  EXPECT_NE(BulletDescriptorKey(o), key);
  LandOptions land;
  land.smooth_span = 0.05;
  EXPECT_NE(BulletDescriptorKey({}, land), key);
  o.smooth_bins = 4;
  EXPECT_TRUE(Contains(ErrorOf([&] { (void)BulletDescriptorKey(o); }), "smooth_bins"));

  LandSignature short_sig;
  short_sig.spacing_um = 4;
  short_sig.values_um.assign(200, std::numeric_limits<float>::quiet_NaN());
  for (int i = 0; i < 20; ++i) short_sig.values_um[static_cast<size_t>(i)] = float(i % 3);
  EXPECT_TRUE(Contains(ErrorOf([&] { (void)BulletDescriptor(short_sig, "land X"); }),
                       "land X: the land signature has 20 valid samples"));
  LandSignature flat;
  flat.spacing_um = 4;
  flat.values_um.assign(500, 1.5f);
  EXPECT_TRUE(Contains(ErrorOf([&] { (void)BulletDescriptor(flat, "land Y"); }),
                       "land Y: the land signature is flat"));
}

TEST(BulletTest, BadInputsGiveClearErrors) {
  const auto a = Synth(0, 0, 0);
  SynthLandOptions o;
  o.along_um = 200;
  LandOptions coarse;
  coarse.signature_spacing_um = 8;
  const auto b = PrepareLand(ExtractLandSignature(MakeSynthLand(o, 0, 0, 1), "b", coarse), "b");
  EXPECT_TRUE(Contains(ErrorOf([&] { CompareLands(*a, *b); }), "different spacings"));
  PreparedBullet empty{"empty bullet", {nullptr, nullptr}};
  PreparedBullet one{"one", {a}};
  EXPECT_TRUE(Contains(ErrorOf([&] { CompareBullets(empty, one); }),
                       "empty bullet: the bullet has no usable land"));
  LandSignature tiny;
  tiny.spacing_um = 4;
  tiny.values_um.assign(10, 1.0f);
  EXPECT_TRUE(Contains(ErrorOf([&] { PrepareLand(tiny, "tiny"); }), "tiny: the land signature"));
  LandCompareOptions bad;
  bad.min_overlap_share = 0;
  EXPECT_TRUE(Contains(ErrorOf([&] { PrepareLand(tiny, "x", bad); }), "land comparison options"));
}

struct HambyLand {
  std::string path;
  std::string source, bullet, land_id;
  int land = 0;
  std::shared_ptr<const PreparedLand> prepared;
  std::vector<float> descriptor;  // BulletDescriptor
};

std::vector<HambyLand> LoadHamby(const std::filesystem::path& dir) {
  const CsvTable truth = ReadCsvFile(dir / "truth.csv");
  std::vector<HambyLand> out;
  for (const auto& row : truth.rows) {
    HambyLand l;
    l.path = row[*truth.Column("path")];
    l.source = row[*truth.Column("source")];
    l.bullet = row[*truth.Column("bullet")];
    l.land = std::stoi(row[*truth.Column("land")]);
    l.land_id = row[*truth.Column("land_id")];
    const LandSignature signature = ExtractLandSignature(ReadX3p(dir / l.path), l.path);
    l.prepared = PrepareLand(signature, l.path);
    l.descriptor = BulletDescriptor(signature, l.path);
    out.push_back(std::move(l));
  }
  return out;
}

// The published result the method is known for: every same-land pair of
// Hamby 252 scores above every different-land pair; bullets 1 and 2 of barrel
// 1 align at the phase the truth gives; the barrel-2 land matches nothing.
TEST(BulletRealTest, Hamby252SameLandPairsScoreAboveAllOthers) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  const std::vector<HambyLand> lands = LoadHamby(data / "bullet" / "hamby252");
  ASSERT_EQ(lands.size(), 11u);
  double min_km = 2, max_knm = -1;
  int km = 0;
  for (size_t i = 0; i < lands.size(); ++i) {
    for (size_t j = i + 1; j < lands.size(); ++j) {
      const LandComparison r = CompareLands(*lands[i].prepared, *lands[j].prepared);
      if (lands[i].land_id == lands[j].land_id) {
        ++km;
        min_km = std::min(min_km, r.score);
        EXPECT_LT(std::abs(r.lag_um), 100) << lands[i].path << " " << lands[j].path;
      } else {
        max_knm = std::max(max_knm, r.score);
      }
    }
  }
  EXPECT_EQ(km, 4);
  EXPECT_GT(min_km, max_knm);
  EXPECT_GT(min_km - max_knm, 0.2) << "the separation should not hang by a thread";

  // The coarse descriptor: every same-land cosine above every different-land
  // one (docs/BULLETS.md: 0.317 against 0.213).
  double min_km_cos = 2, max_knm_cos = -2;
  for (size_t i = 0; i < lands.size(); ++i) {
    for (size_t j = i + 1; j < lands.size(); ++j) {
      const double c = Cosine(lands[i].descriptor, lands[j].descriptor);
      if (lands[i].land_id == lands[j].land_id) {
        min_km_cos = std::min(min_km_cos, c);
      } else {
        max_knm_cos = std::max(max_knm_cos, c);
      }
    }
  }
  EXPECT_GT(min_km_cos, max_knm_cos) << min_km_cos << " vs " << max_knm_cos;

  // Bullets: land i of bullet 1 carries the same barrel land as land i + 2 of bullet 2.
  PreparedBullet b1{"barrel-1/bullet1", std::vector<std::shared_ptr<const PreparedLand>>(6)};
  PreparedBullet b2{"barrel-1/bullet2", std::vector<std::shared_ptr<const PreparedLand>>(6)};
  PreparedBullet other{"barrel-2/bullet1", std::vector<std::shared_ptr<const PreparedLand>>(6)};
  for (const HambyLand& l : lands) {
    PreparedBullet& b = l.source == "barrel-2" ? other : l.bullet == "bullet1" ? b1 : b2;
    b.lands[static_cast<size_t>(l.land - 1)] = l.prepared;
  }
  const BulletComparison r = CompareBullets(b1, b2);
  EXPECT_EQ(r.phase, 2);
  ASSERT_EQ(r.pairs.size(), 4u);  // bullet 1 lacks land 6, bullet 2 land 3
  std::map<int, std::string> id1, id2;
  for (const HambyLand& l : lands) {
    if (l.source != "barrel-1") continue;
    (l.bullet == "bullet1" ? id1 : id2)[l.land] = l.land_id;
  }
  for (const LandPair& p : r.pairs) EXPECT_EQ(id1[p.land_a], id2[p.land_b]);
  EXPECT_GT(r.score, r.runner_up + 0.3);

  // The barrel-2 land against both barrel-1 bullets: below every same-land pair.
  for (const PreparedBullet* b : {&b1, &b2}) {
    const BulletComparison o = CompareBullets(*b, other);
    EXPECT_LT(o.score, min_km) << b->label;
    EXPECT_LT(o.score, r.score - 0.3) << b->label;
  }
}

}  // namespace
}  // namespace bien

// Land and bullet comparison (matching/bullet.h) on synthetic lands and on
// the Hamby 252 scans under ../shared/data (skipped when absent).
#include "matching/bullet.h"

#include <gtest/gtest.h>

#include <cmath>
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
    l.prepared = PrepareLand(ExtractLandSignature(ReadX3p(dir / l.path), l.path), l.path);
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

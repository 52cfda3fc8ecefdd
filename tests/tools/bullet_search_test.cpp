// `bien search` and ingest's automatic search for bullets: the bld land index
// of a partition, the bullet-to-bullet re-ranking with its phase, leads, and
// the index rebuilt when its file is gone. Synthetic always; Hamby 252 where
// the real data is present.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/csv.h"
#include "imaging/synth.h"
#include "imaging/synth_land.h"
#include "imaging/x3p.h"
#include "matching/bullet.h"
#include "storage/store.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

nlohmann::json Json(const CliResult& r) {
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  return nlohmann::json::parse(r.out);
}

std::vector<std::filesystem::path> IndexFiles(const std::filesystem::path& node) {
  std::vector<std::filesystem::path> files;
  if (!std::filesystem::exists(node / "index")) return files;
  for (const auto& f : std::filesystem::directory_iterator(node / "index")) {
    files.push_back(f.path());
  }
  return files;
}

// Barrel 0: bullets A (shot 0) and B (shot 1; its land j carries barrel land
// (j + 4) mod 6, so land i of A faces land i + 2 of B: phase 2; land 4 not
// scanned). Barrels 1 and 2: bullets C and D. Bullet X: a third shot of barrel
// 0, said to be of another calibre (it would match; another partition is
// never searched).
class BulletSearchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    SynthLandOptions o;
    o.along_um = 200;
    std::ofstream m(dir_.path() / "manifest.csv");
    m << "path,case,exhibit,kind,role,calibre,lands,land\n";
    auto add = [&](const std::string& bullet, const std::string& calibre, int barrel, int land,
                   int barrel_land, int shot) {
      const std::string name = bullet + "-L" + std::to_string(land) + ".x3p";
      WriteX3p(MakeSynthLand(o, barrel, barrel_land, shot), dir_.path() / name);
      m << name << ",K1," << bullet << ",bullet,evidence," << calibre << ",6," << land << "\n";
    };
    for (int i = 0; i < 6; ++i) add("A", "9mm Luger", 0, i + 1, i, 0);
    for (int j = 0; j < 6; ++j) {
      if (j != 3) add("B", "9mm Luger", 0, j + 1, (j + 4) % 6, 1);
    }
    for (int i = 0; i < 6; ++i) add("C", "9mm Luger", 1, i + 1, i, 0);
    for (int i = 0; i < 6; ++i) add("D", "9mm Luger", 2, i + 1, i, 0);
    for (int i = 0; i < 6; ++i) add("X", ".38 Special", 0, i + 1, i, 2);
    m.close();
    node_ = (dir_.path() / "node").string();
    EXPECT_EQ(RunBien({"init", "--node", node_}).code, 0);
  }
  nlohmann::json Ingest() {
    return Json(RunBien({"ingest", "--node", node_, "--manifest",
                         (dir_.path() / "manifest.csv").string(), "--json"}));
  }

  TempDir dir_;
  std::string node_;
};

TEST_F(BulletSearchCli, IngestSearchesNewBulletsAndTheMateComesFirstWithItsPhase) {
  const auto ingest = Ingest();
  EXPECT_EQ(ingest["ingested"].get<int>(), 29);
  ASSERT_EQ(ingest["searches"].size(), 5u) << ingest.dump(2);
  EXPECT_TRUE(ingest["search_errors"].empty()) << ingest.dump(2);

  // One open lead, A with B, flagged by the bullet method; nothing else.
  const auto leads = Json(RunBien({"leads", "--node", node_, "--json"}));
  ASSERT_EQ(leads.size(), 1u) << leads.dump(2);
  EXPECT_EQ(leads[0]["method"].get<std::string>(), "bullet-v1") << leads[0].dump();
  const std::set<std::string> pair = {leads[0]["query"]["exhibit"].get<std::string>(),
                                      leads[0]["candidate"]["exhibit"].get<std::string>()};
  EXPECT_EQ(pair, (std::set<std::string>{"A", "B"})) << leads[0].dump();

  const auto s = Json(RunBien({"search", "--node", node_, "K1/A", "--json"}));
  EXPECT_EQ(s["method"].get<std::string>(), "bullet-v1");
  EXPECT_EQ(s["partition"].get<std::string>(), "bullet|9mm Luger");
  EXPECT_EQ(s["partition_scans"].get<int>(), 23);  // X is in its own partition
  EXPECT_EQ(s["query_lands"].get<int>(), 6);
  ASSERT_EQ(s["candidates"].size(), 3u) << s.dump(2);
  const auto& best = s["candidates"][0];
  EXPECT_EQ(best["exhibit"].get<std::string>(), "K1/B");
  EXPECT_EQ(best["phase"].get<int>(), 2);
  EXPECT_EQ(best["coarse_rank"].get<int>(), 1);
  EXPECT_TRUE(best["lead"].get<bool>());
  EXPECT_GE(best["score"].get<double>(), 0.5);
  EXPECT_LT(best["runner_up"].get<double>(), best["score"].get<double>() - 0.2);
  ASSERT_EQ(best["pairing"].size(), 5u);  // B's land 4 was not scanned
  for (const auto& p : best["pairing"]) {
    EXPECT_EQ(p["candidate_land"].get<int>(), (p["query_land"].get<int>() + 1) % 6 + 1) << p;
  }
  for (size_t i = 1; i < s["candidates"].size(); ++i) {
    const auto& c = s["candidates"][i];
    EXPECT_FALSE(c["lead"].get<bool>()) << c.dump();
    EXPECT_LT(c["score"].get<double>(), 0.5) << c.dump();
  }
  for (const auto& c : s["candidates"]) EXPECT_NE(c["exhibit"].get<std::string>(), "K1/X");
  ASSERT_EQ(s["leads"].size(), 1u);
  EXPECT_EQ(s["leads"][0]["outcome"].get<std::string>(), "updated");

  // The text list names the phase and the land pairs.
  const CliResult text = RunBien({"search", "--node", node_, "K1/A", "--no-leads"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "bullet comparison (bullet-v1)")) << text.out;
  EXPECT_TRUE(Contains(text.out, "1-3 ")) << text.out;  // land 1 of A faces land 3 of B

  // The other calibre's bullet is searched in its own partition only.
  const auto x = Json(RunBien({"search", "--node", node_, "K1/X", "--json"}));
  EXPECT_EQ(x["partition"].get<std::string>(), "bullet|.38 Special");
  EXPECT_EQ(x["partition_scans"].get<int>(), 6);
  EXPECT_TRUE(x["candidates"].empty());

  // A higher threshold given on the command line: no lead from this search.
  const auto high =
      Json(RunBien({"search", "--node", node_, "K1/A", "--lead-threshold", "0.99", "--json"}));
  EXPECT_DOUBLE_EQ(high["lead_threshold"].get<double>(), 0.99);
  EXPECT_TRUE(high["leads"].empty());
}

TEST_F(BulletSearchCli, IngestStoresTheLandDescriptorWithEachScan) {
  const auto ingest =
      Json(RunBien({"ingest", "--node", node_, "--manifest",
                    (dir_.path() / "manifest.csv").string(), "--no-search", "--json"}));
  EXPECT_EQ(ingest["ingested"].get<int>(), 29);
  EXPECT_TRUE(ingest["searches"].empty());
  auto store = Store::Open(node_);
  ClassCharacteristics nine, special;
  nine.calibre = "9mm Luger";
  special.calibre = ".38 Special";
  const std::string key = BulletDescriptorKey();
  EXPECT_EQ(store->DescriptorScanIds(key, PartitionOf(ExhibitKind::kBullet, nine)).size(), 23u);
  EXPECT_EQ(store->DescriptorScanIds(key, PartitionOf(ExhibitKind::kBullet, special)).size(), 6u);
  EXPECT_TRUE(store->ScansLackingDescriptor(key, ExhibitKind::kBullet).empty());
  const auto v = store->GetDescriptor(
      store->DescriptorScanIds(key, PartitionOf(ExhibitKind::kBullet, nine)).front(), key);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(static_cast<int>(v->size()), BulletDescriptorDim());
}

TEST_F(BulletSearchCli, TheBulletIndexIsItsOwnFileAndRebuiltWhenDeleted) {
  Ingest();
  const std::vector<std::filesystem::path> files = IndexFiles(node_);
  ASSERT_EQ(files.size(), 2u);  // one per bullet partition
  for (const auto& f : files) {
    EXPECT_NE(f.filename().string().find("bld"), std::string::npos) << f;
  }
  const auto first = Json(RunBien({"search", "--node", node_, "K1/A", "--json"}));
  const std::string note = first["index"]["note"].get<std::string>();
  EXPECT_TRUE(note == "loaded" || note == "in memory") << note;

  std::filesystem::path nine;
  for (const auto& f : files) {
    if (f.filename().string().find("9mm") != std::string::npos) nine = f;
  }
  ASSERT_FALSE(nine.empty());
  std::filesystem::remove(nine);
  const auto again = Json(RunBien({"search", "--node", node_, "K1/A", "--json"}));
  EXPECT_EQ(again["index"]["note"].get<std::string>().rfind("rebuilt", 0), 0u)
      << again["index"]["note"];
  EXPECT_TRUE(std::filesystem::exists(nine));
  EXPECT_EQ(again["partition_scans"].get<int>(), 23);
  ASSERT_FALSE(again["candidates"].empty());
  EXPECT_EQ(again["candidates"][0]["exhibit"], first["candidates"][0]["exhibit"]);
  EXPECT_EQ(again["candidates"][0]["phase"], first["candidates"][0]["phase"]);
  EXPECT_DOUBLE_EQ(again["candidates"][0]["score"].get<double>(),
                   first["candidates"][0]["score"].get<double>());

  // A cartridge case of the same calibre: its breech-face index is another
  // file, and deleting the bullet index leaves it alone.
  SynthOptions so;
  so.firearms = 1;
  so.shots = 1;
  so.seed = 21;
  so.size_px = 560;
  WriteX3p(MakeSynthShot(so, 0, 0), dir_.path() / "case.x3p");
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--case", "K3", "--exhibit", "CC", "--kind",
                     "cartridge_case", "--role", "evidence", "--calibre", "9mm Luger",
                     (dir_.path() / "case.x3p").string()})
                .code,
            0);
  ASSERT_EQ(IndexFiles(node_).size(), 3u);
  std::filesystem::remove(nine);
  const auto cc = Json(RunBien({"search", "--node", node_, "K3/CC", "--json"}));
  EXPECT_EQ(cc["partition"].get<std::string>(), "cartridge_case|9mm Luger");
  EXPECT_EQ(cc["partition_scans"].get<int>(), 1);
  const std::string cc_note = cc["index"]["note"].get<std::string>();
  EXPECT_TRUE(cc_note == "loaded" || cc_note == "in memory") << cc_note;
  const auto bullet = Json(RunBien({"search", "--node", node_, "K1/A", "--json"}));
  EXPECT_EQ(bullet["index"]["note"].get<std::string>().rfind("rebuilt", 0), 0u);
  EXPECT_EQ(bullet["partition_scans"].get<int>(), 23);
}

TEST_F(BulletSearchCli, BadRequestsAreNamed) {
  // A bullet scan without a land number is stored, not searchable.
  SynthLandOptions o;
  o.along_um = 200;
  WriteX3p(MakeSynthLand(o, 5, 0, 0), dir_.path() / "noland.x3p");
  const CliResult in =
      RunBien({"ingest", "--node", node_, "--case", "K2", "--exhibit", "N", "--kind", "bullet",
               "--role", "evidence", (dir_.path() / "noland.x3p").string()});
  EXPECT_EQ(in.code, 0) << in.err;
  EXPECT_TRUE(Contains(in.out + in.err, "not searchable")) << in.out << in.err;
  const CliResult s = RunBien({"search", "--node", node_, "K2/N"});
  EXPECT_NE(s.code, 0);
  EXPECT_TRUE(Contains(s.err, "K2/N")) << s.err;
  EXPECT_TRUE(Contains(s.err, "no land number")) << s.err;
  // A lead threshold below zero is refused, naming the option.
  Ingest();
  const CliResult neg = RunBien({"search", "--node", node_, "K1/A", "--lead-threshold", "-1"});
  EXPECT_NE(neg.code, 0);
  EXPECT_TRUE(Contains(neg.err, "--lead-threshold")) << neg.err;
}

// Hamby 252: bullets 1 and 2 of barrel 1 and the barrel-2 land, each stored as
// one exhibit; bullet 1 finds bullet 2 first, at the phase the truth gives.
TEST(BulletSearchReal, Hamby252BulletFindsItsMateAtTheTruePhase) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  const std::filesystem::path dir = data / "bullet" / "hamby252";
  if (!std::filesystem::exists(dir / "truth.csv")) GTEST_SKIP() << dir << " is absent";
  const CsvTable truth = ReadCsvFile(dir / "truth.csv");
  TempDir tmp;
  std::ofstream m(tmp.path() / "manifest.csv");
  m << "path,case,exhibit,kind,role,lands,land\n";
  std::map<std::string, std::map<int, std::string>> ids;  // exhibit -> land -> land_id
  for (const auto& row : truth.rows) {
    const std::string exhibit = row[*truth.Column("source")] + "-" + row[*truth.Column("bullet")];
    const int land = std::stoi(row[*truth.Column("land")]);
    ids[exhibit][land] = row[*truth.Column("land_id")];
    m << (dir / row[*truth.Column("path")]).string() << ",H252," << exhibit
      << ",bullet,test_fire,6," << land << "\n";
  }
  m.close();
  ASSERT_EQ(ids.size(), 3u);
  // The phase the truth implies: land_b - land_a (mod 6) for lands of one barrel land.
  std::set<int> phases;
  for (const auto& [la, ida] : ids["barrel-1-bullet1"]) {
    for (const auto& [lb, idb] : ids["barrel-1-bullet2"]) {
      if (ida == idb) phases.insert(((lb - la) % 6 + 6) % 6);
    }
  }
  ASSERT_EQ(phases.size(), 1u);

  const std::string node = (tmp.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  const auto ingest = Json(RunBien(
      {"ingest", "--node", node, "--manifest", (tmp.path() / "manifest.csv").string(), "--json"}));
  EXPECT_EQ(ingest["ingested"].get<int>(), 11);
  EXPECT_TRUE(ingest["search_errors"].empty()) << ingest.dump(2);
  const auto s = Json(RunBien({"search", "--node", node, "H252/barrel-1-bullet1", "--json"}));
  ASSERT_EQ(s["candidates"].size(), 2u) << s.dump(2);
  const auto& best = s["candidates"][0];
  EXPECT_EQ(best["exhibit"].get<std::string>(), "H252/barrel-1-bullet2");
  EXPECT_EQ(best["phase"].get<int>(), *phases.begin());
  EXPECT_TRUE(best["lead"].get<bool>());
  EXPECT_EQ(best["coarse_rank"].get<int>(), 1);
  for (const auto& p : best["pairing"]) {
    EXPECT_EQ(ids["barrel-1-bullet1"][p["query_land"].get<int>()],
              ids["barrel-1-bullet2"][p["candidate_land"].get<int>()])
        << p;
  }
  EXPECT_FALSE(s["candidates"][1]["lead"].get<bool>());
  EXPECT_LT(s["candidates"][1]["score"].get<double>(), 0.5);
}

}  // namespace
}  // namespace bien::testing

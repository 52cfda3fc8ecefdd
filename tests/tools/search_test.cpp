// `bien search` and the automatic search at ingest: the coarse index kept in
// step with the store, the CMC re-ranking, partitions and leads. Synthetic
// always; the Fadul set among synthetic distractors where the real data is.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "core/csv.h"
#include "core/error.h"
#include "core/hash.h"
#include "imaging/synth.h"
#include "imaging/transform.h"
#include "imaging/x3p.h"
#include "matching/descriptor.h"
#include "matching/ring_codes.h"
#include "storage/store.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"
#include "tools/compare.h"
#include "tools/search.h"

namespace bien::testing {
namespace {

nlohmann::json Json(const CliResult& r) {
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  return nlohmann::json::parse(r.out);
}

std::filesystem::path OnlyIndexFile(const std::filesystem::path& node) {
  std::vector<std::filesystem::path> files;
  for (const auto& f : std::filesystem::directory_iterator(node / "index")) {
    files.push_back(f.path());
  }
  EXPECT_EQ(files.size(), 1u);
  return files.empty() ? std::filesystem::path() : files.front();
}

class SearchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    // Three synthetic firearms, two shots each, at a realistic scan size (the
    // descriptor's rings reach 2.2 mm from the firing pin).
    SynthOptions o;
    o.firearms = 3;
    o.shots = 2;
    o.seed = 21;
    o.size_px = 560;
    files_ = WriteSynthSet(dir_.path() / "set", o);
    // A third shot of firearm 0, said to be of another calibre: it would
    // match, but another partition is never searched.
    WriteX3p(MakeSynthShot(o, 0, 2), dir_.path() / "set" / "other calibre.x3p");
    node_ = (dir_.path() / "node").string();
    EXPECT_EQ(RunBien({"init", "--node", node_}).code, 0);
    std::ofstream m(dir_.path() / "set" / "manifest.csv");
    m << "path,case,exhibit,kind,role,calibre,firearm\n";
    for (const SynthFile& f : files_) {
      m << f.file_name << ",CASE-" << f.firearm << ",E" << f.firearm << "-" << f.shot
        << ",cartridge_case,evidence,9mm Luger,\n";
    }
    m << "other calibre.x3p,CASE-X,X1,cartridge_case,evidence,.40 S&W,\n";
  }

  // A third shot of firearm 1 of the set (not ingested), its path.
  std::filesystem::path WriteThirdShotOfFirearmOne() const {
    SynthOptions o;
    o.seed = 21;
    o.size_px = 560;
    o.firearms = 3;
    o.shots = 2;
    const auto extra = dir_.path() / "extra.x3p";
    WriteX3p(MakeSynthShot(o, 1, 3), extra);
    return extra;
  }

  TempDir dir_;
  std::vector<SynthFile> files_;
  std::string node_;
};

TEST_F(SearchCli, IngestSearchesNewCasesAndFlagsTheMatesAsLeads) {
  const auto ingest = Json(RunBien({"ingest", "--node", node_, "--manifest",
                                    (dir_.path() / "set" / "manifest.csv").string(), "--json"}));
  EXPECT_EQ(ingest["ingested"].get<int>(), 7);
  ASSERT_EQ(ingest["searches"].size(), 7u) << ingest.dump(2);
  EXPECT_TRUE(ingest["search_errors"].empty());

  // Each pair of shots of one firearm became exactly one open lead; nothing
  // else did (the other calibre's shot is in another partition).
  const auto leads = Json(RunBien({"leads", "--node", node_, "--json"}));
  ASSERT_EQ(leads.size(), 3u) << leads.dump(2);
  for (const auto& l : leads) {
    EXPECT_EQ(l["query"]["case"], l["candidate"]["case"]) << l.dump();
    EXPECT_NE(l["query"]["case"].get<std::string>(), "CASE-X");
  }

  const auto s = Json(RunBien({"search", "--node", node_, "CASE-0/E0-0", "--json"}));
  EXPECT_EQ(s["partition"].get<std::string>(), "cartridge_case|9mm Luger");
  EXPECT_EQ(s["partition_scans"].get<int>(), 6);
  ASSERT_EQ(s["candidates"].size(), 5u);
  EXPECT_EQ(s["candidates"][0]["exhibit"].get<std::string>(), "CASE-0/E0-1");
  EXPECT_TRUE(s["candidates"][0]["lead"].get<bool>());
  EXPECT_GT(s["candidates"][0]["score"].get<double>(),
            3 * s["candidates"][1]["score"].get<double>());
  for (const auto& c : s["candidates"]) EXPECT_NE(c["exhibit"].get<std::string>(), "CASE-X/X1");
  // Found again: the open lead is updated, not doubled.
  ASSERT_EQ(s["leads"].size(), 1u);
  EXPECT_EQ(s["leads"][0]["outcome"].get<std::string>(), "updated");
  EXPECT_EQ(Json(RunBien({"leads", "--node", node_, "--json"})).size(), 3u);

  // The other calibre is searched in its own partition only.
  const auto x = Json(RunBien({"search", "--node", node_, "CASE-X/X1", "--json"}));
  EXPECT_EQ(x["partition_scans"].get<int>(), 1);
  EXPECT_TRUE(x["candidates"].empty());
}

TEST_F(SearchCli, TheIndexIsRebuiltWhenMissingOrDamagedAndUpdatedAfterIngest) {
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--manifest",
                     (dir_.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  auto note = [&] {
    const auto s = Json(RunBien({"search", "--node", node_, "E1-0", "--json", "--no-leads"}));
    // A shot of the same firearm first (E1-1, or E1-3 once it is stored).
    EXPECT_TRUE(Contains(s["candidates"][0]["exhibit"].get<std::string>(), "CASE-1/E1-"));
    return s["index"]["note"].get<std::string>();
  };
  EXPECT_TRUE(Contains(note(), "rebuilt: no saved index"));
  // This process keeps the index it saved; another process loads the file.
  EXPECT_EQ(note(), "in memory");
  {
    const std::string command =
        std::string("'") + BIEN_EXE + "' search --node '" + node_ + "' E1-0 --json --no-leads";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    ASSERT_EQ(pclose(pipe), 0) << out;
    EXPECT_EQ(nlohmann::json::parse(out)["index"]["note"].get<std::string>(), "loaded");
  }
  const auto file = OnlyIndexFile(node_);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(file) / 2));
    f.put('\x5a');
  }
  EXPECT_TRUE(Contains(note(), "rebuilt: checksum mismatch"));
  std::filesystem::resize_file(file, 40);
  EXPECT_TRUE(Contains(note(), "rebuilt: truncated"));
  std::filesystem::remove(file);
  EXPECT_TRUE(Contains(note(), "rebuilt: no saved index"));
  // --no-leads recorded nothing.
  EXPECT_TRUE(Json(RunBien({"leads", "--node", node_, "--json"})).empty());

  // A new exhibit joins the saved index without a rebuild.
  const auto extra = WriteThirdShotOfFirearmOne();
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--case", "CASE-1", "--exhibit", "E1-3", "--kind",
                     "cartridge_case", "--role", "evidence", "--calibre", "9mm Luger",
                     "--no-search", extra.string()})
                .code,
            0);
  EXPECT_EQ(note(), "updated (+1, -0)");
}

// The fine stage compares cached compact features; a missing or damaged
// feature file is recomputed from the original, and the list is the same.
TEST_F(SearchCli, CachedFeaturesGiveTheSameListAndAreRecomputedWhenDamaged) {
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--manifest",
                     (dir_.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  // Ingest cached every scan's features: one folder (the key), KEY + 7 files.
  std::vector<std::filesystem::path> cached;
  for (const auto& f :
       std::filesystem::recursive_directory_iterator(std::filesystem::path(node_) / "features")) {
    if (f.path().extension() == ".cmcf") cached.push_back(f.path());
  }
  ASSERT_EQ(cached.size(), 7u);
  // Damage only files the search below reads (not the other calibre's).
  const std::string other = Sha256File(dir_.path() / "set" / "other calibre.x3p");
  std::erase_if(cached, [&](const std::filesystem::path& p) {
    return p.parent_path().filename().string() + p.stem().string() == other;
  });
  ASSERT_EQ(cached.size(), 6u);
  auto search = [&] {
    return Json(RunBien({"search", "--node", node_, "E2-0", "--json", "--no-leads"}));
  };
  auto scores = [](const nlohmann::json& s) {
    std::vector<std::pair<std::string, double>> out;
    for (const auto& c : s["candidates"]) {
      out.emplace_back(c["exhibit"].get<std::string>(), c["score"].get<double>());
    }
    return out;
  };
  const auto first = search();
  EXPECT_EQ(first["fine_features"]["cached"].get<int>(), 6);  // the query and 5 candidates
  EXPECT_EQ(first["fine_features"]["computed"].get<int>(), 0);
  EXPECT_EQ(first["candidates"][0]["exhibit"].get<std::string>(), "CASE-2/E2-1");

  // Damage one file, truncate another, delete a third.
  {
    std::fstream f(cached[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(cached[0]) / 2));
    f.put('\x5a');
  }
  std::filesystem::resize_file(cached[1], 100);
  std::filesystem::remove(cached[2]);
  const auto second = search();
  EXPECT_EQ(second["fine_features"]["computed"].get<int>(), 3);
  EXPECT_EQ(second["fine_features"]["cached"].get<int>(), 3);
  EXPECT_EQ(scores(second), scores(first));
  // ... and rewritten: the next search reads every one from the cache.
  const auto third = search();
  EXPECT_EQ(third["fine_features"]["cached"].get<int>(), 6);
  EXPECT_EQ(scores(third), scores(first));

  // Without the cache at all, the same list again.
  std::filesystem::remove_all(std::filesystem::path(node_) / "features");
  const auto fourth = search();
  EXPECT_EQ(fourth["fine_features"]["computed"].get<int>(), 6);
  EXPECT_EQ(scores(fourth), scores(first));
}

TEST_F(SearchCli, BadRequestsAreNamed) {
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--manifest",
                     (dir_.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  CliResult r = RunBien({"search", "--node", node_, "NO-SUCH"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "NO-SUCH")) << r.err;
  r = RunBien({"search", "--node", node_, "E0-0", "--k", "0"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "at least one")) << r.err;
  r = RunBien({"search", "--node", node_, "E0-0", "--top", "0"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "--top")) << r.err;
}

// A long-running process (`bien serve`) checks a partition's index against
// the store once per store state: an unchanged store gives the checked index
// back; a scan that another process ingests meanwhile changes the store's
// stamp, and the next open (on the same connection, as the node's request
// worker holds it) brings it into the index and the coarse selection finds it.
TEST_F(SearchCli, AScanIngestedByAnotherProcessIsFoundByTheNextRequest) {
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--manifest",
                     (dir_.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  auto store = Store::Open(node_);
  const ExhibitRecord query = store->FindExhibit("CASE-1/E1-0");
  const Partition partition = PartitionOf(query);
  const auto vector = store->GetDescriptor(store->ScansOf(query.id).front().id, DescriptorKey());
  ASSERT_TRUE(vector);
  auto candidates = [&](const cli::CoarseIndex& ci) {
    cli::CoarseSelection selection(*store, ci, query.cc, query.id);
    std::vector<std::string> out;
    for (const cli::SearchCandidate& c : selection.Next(*vector, 100)) {
      out.push_back(c.exhibit.case_ref + "/" + c.exhibit.exhibit_ref);
    }
    return out;
  };
  const cli::CoarseIndex first = cli::OpenCoarseIndex(*store, partition);
  EXPECT_TRUE(Contains(first.note, "rebuilt: no saved index")) << first.note;
  EXPECT_EQ(first.scans, 6);
  EXPECT_EQ(candidates(first).size(), 5u);  // the partition but the query
  const cli::CoarseIndex again = cli::OpenCoarseIndex(*store, partition);
  EXPECT_EQ(again.note, "in memory");
  EXPECT_EQ(again.index, first.index);
  EXPECT_EQ(again.scans, 6);

  // Another process ingests a third shot of firearm 1.
  const auto extra = WriteThirdShotOfFirearmOne();
  {
    const std::string command = std::string("'") + BIEN_EXE + "' ingest --node '" + node_ +
                                "' --case CASE-1 --exhibit E1-3 --kind cartridge_case --role "
                                "evidence --calibre '9mm Luger' --no-search '" +
                                extra.string() + "' 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    ASSERT_EQ(pclose(pipe), 0) << out;
  }
  const cli::CoarseIndex after = cli::OpenCoarseIndex(*store, partition);
  EXPECT_EQ(after.note, "updated (+1, -0)");
  EXPECT_EQ(after.scans, 7);
  const auto found = candidates(after);
  EXPECT_EQ(found.size(), 6u);
  EXPECT_NE(std::find(found.begin(), found.end(), "CASE-1/E1-3"), found.end());
  // Nothing changed since: the checked index again, with the new scan.
  const cli::CoarseIndex later = cli::OpenCoarseIndex(*store, partition);
  EXPECT_EQ(later.note, "in memory");
  EXPECT_EQ(later.scans, 7);
  EXPECT_EQ(candidates(later), found);
}

// --coarse-only: the coarse list by cosine, nothing compared, no leads.
TEST_F(SearchCli, CoarseOnlyListsTheCoarseCandidatesWithoutComparingThem) {
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--manifest",
                     (dir_.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  // Without the ring stage: by cosine.
  const auto s = Json(
      RunBien({"search", "--node", node_, "E0-0", "--coarse-only", "--ring-pool", "0", "--json"}));
  EXPECT_TRUE(s["coarse_only"].get<bool>());
  EXPECT_EQ(s["compared"].get<int>(), 0);
  EXPECT_EQ(s["ring_stage"]["pool"].get<int>(), 0);
  ASSERT_EQ(s["candidates"].size(), 5u);
  double previous = 2;
  for (size_t i = 0; i < s["candidates"].size(); ++i) {
    const auto& c = s["candidates"][i];
    EXPECT_TRUE(c["score"].is_null()) << c.dump();
    EXPECT_TRUE(c["ring_score"].is_null()) << c.dump();
    EXPECT_EQ(c["coarse_rank"].get<size_t>(), i + 1);
    EXPECT_EQ(c["descriptor_rank"].get<size_t>(), i + 1);
    EXPECT_LE(c["coarse_score"].get<double>(), previous);
    previous = c["coarse_score"].get<double>();
    EXPECT_FALSE(c.contains("lead"));
  }
  EXPECT_TRUE(s["leads"].empty());
  EXPECT_TRUE(Json(RunBien({"leads", "--node", node_, "--json"})).empty());
  const CliResult text =
      RunBien({"search", "--node", node_, "E0-0", "--coarse-only", "--top", "2"});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "fine         none (--coarse-only)")) << text.out;
  EXPECT_TRUE(Contains(text.out, "3 more not shown (--top 2)")) << text.out;
}

// A candidate without ring spectra keeps its cosine place; the others take
// the remaining places by ring score.
TEST(RingOrder, UnscoredCandidatesKeepTheirPlaceAndTheRestFollowTheRingScore) {
  const std::vector<std::optional<double>> ring = {0.1, std::nullopt, 0.9, 0.5, std::nullopt};
  EXPECT_EQ(cli::RingOrder(ring, 3), (std::vector<size_t>{2, 1, 3}));
  EXPECT_EQ(cli::RingOrder(ring, 5), (std::vector<size_t>{2, 1, 3, 0, 4}));
  EXPECT_EQ(cli::RingOrder(ring, 9), (std::vector<size_t>{2, 1, 3, 0, 4}));
  EXPECT_TRUE(cli::RingOrder(ring, 0).empty());
  EXPECT_EQ(cli::RingOrder({0.2, 0.7}, 1), (std::vector<size_t>{1}));
}

// The ring stage's screen on a pool larger than kRingScreen: synthetic
// shots of 1500 firearms, the query's mate at the pool's end (the cosine
// placed it last). Every candidate gets the found centre's correlation; the
// best kRingScreen of those and the pool's first kRingScreen get the centre
// search, and nothing left out scores above a candidate screened by it.
TEST(RingStageScores, ScreensAtTheFoundCentreThenSearchesCentres) {
  const SynthDescriptorOptions synth;
  const DescriptorOptions shape;
  const RingQuery query = BreechFaceRingQuery(MakeSynthBreechFace(synth, shape, 0, 1), "query");
  constexpr int kOthers = 1500;
  std::vector<std::vector<float>> spectra(kOthers + 2);
  for (int f = 1; f <= kOthers; ++f) {
    try {
      spectra[f - 1] = BreechFaceRingSpectra(MakeSynthBreechFace(synth, shape, f, 0), "other");
    } catch (const Error&) {
      // too sparse for spectra: stays empty, as in a store
    }
  }
  // spectra[kOthers] stays empty: a candidate without spectra.
  spectra[kOthers + 1] = BreechFaceRingSpectra(MakeSynthBreechFace(synth, shape, 0, 0), "mate");
  std::vector<const std::vector<float>*> of;
  for (const auto& v : spectra) of.push_back(&v);
  const auto ring = cli::RingStageScores(query, of, 100, 2);
  ASSERT_EQ(ring.size(), spectra.size());
  EXPECT_FALSE(ring[kOthers].has_value());
  // Which are screened: the best kRingScreen at the found centre and the
  // first kRingScreen of the pool.
  std::vector<std::pair<double, size_t>> found;
  for (size_t i = 0; i < spectra.size(); ++i) {
    if (!spectra[i].empty())
      found.emplace_back(RingCorrelation(query.spectra[0], spectra[i]).score, i);
  }
  ASSERT_GT(found.size(), static_cast<size_t>(cli::kRingScreen + 300));
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::set<size_t> screened;
  for (size_t j = 0; j < static_cast<size_t>(cli::kRingScreen); ++j)
    screened.insert(found[j].second);
  const double screen_floor = found[cli::kRingScreen - 1].first;
  int by_cosine_only = 0, moved = 0;
  for (const auto& [score, i] : found) {
    ASSERT_TRUE(ring[i].has_value()) << i;
    if (i < static_cast<size_t>(cli::kRingScreen)) by_cosine_only += screened.insert(i).second;
    if (screened.count(i)) {
      const double full = RingCorrelation(query, spectra[i]).score;
      EXPECT_DOUBLE_EQ(*ring[i], full) << i;
      EXPECT_GE(full, score - 1e-6) << i;
      moved += full > score;
    } else {
      EXPECT_DOUBLE_EQ(*ring[i], score) << i;
      EXPECT_LE(score, screen_floor) << i;
    }
  }
  EXPECT_GT(by_cosine_only, 0);              // the union adds candidates
  EXPECT_GT(moved, cli::kRingScreen / 2);    // the search lifts most scores
  EXPECT_LT(screened.size(), found.size());  // some are left at the found centre
  // The mate, last by cosine, leads the order.
  const std::vector<size_t> order = cli::RingOrder(ring, 100);
  ASSERT_EQ(order.size(), 100u);
  EXPECT_EQ(order[0], static_cast<size_t>(kOthers + 1));
  EXPECT_GT(*ring[order[0]], *ring[order[1]] + 0.1);  // measured 0.49 against 0.3
}

// With the ring codes at hand the found-centre scores are the codes' and
// only the centre-search set's spectra are read: exactly that set, whose
// scores become the centre search's; the rest keep the compressed score and
// are ordered after every searched candidate.
TEST(RingStageScores, FromCodesReadsOnlyTheCentreSearchSet) {
  const SynthDescriptorOptions synth;
  const DescriptorOptions shape;
  const RingQuery query = BreechFaceRingQuery(MakeSynthBreechFace(synth, shape, 0, 1), "query");
  constexpr int kOthers = 1400;
  std::vector<std::vector<float>> spectra(kOthers + 1);
  for (int f = 1; f <= kOthers; ++f) {
    try {
      spectra[f - 1] = BreechFaceRingSpectra(MakeSynthBreechFace(synth, shape, f, 0), "other");
    } catch (const Error&) {
    }
  }
  spectra[kOthers] = BreechFaceRingSpectra(MakeSynthBreechFace(synth, shape, 0, 0), "mate");
  std::vector<int64_t> ids;
  std::vector<const std::vector<float>*> coded;
  for (size_t i = 0; i < spectra.size(); ++i) {
    if (spectra[i].empty()) continue;
    ids.push_back(static_cast<int64_t>(i));
    coded.push_back(&spectra[i]);
  }
  const auto codes = RingCodeIndex::Build(ids, coded, 2);
  // Candidate i is scan i; one more candidate (scan 5000) has no code.
  std::vector<int64_t> pool(spectra.size() + 1);
  std::iota(pool.begin(), pool.end(), int64_t{0});
  pool.back() = 5000;
  const auto scores = codes->Scores(query.spectra[0], pool, 2);
  std::vector<std::optional<double>> compressed(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) {
    if (scores[i]) compressed[i] = *scores[i];
  }
  EXPECT_FALSE(compressed.back().has_value());
  const std::vector<size_t> expected_set = cli::RingCentreSearchSet(compressed, 100);
  ASSERT_GT(expected_set.size(), static_cast<size_t>(cli::kRingScreen));
  ASSERT_LT(expected_set.size(), ids.size());
  // The mate's spectra are "gone" from the store since its code was made.
  std::vector<size_t> asked;
  std::vector<std::optional<double>> keys;
  const auto ring = cli::RingStageScoresFromCodes(
      query, compressed, 100, 2,
      [&](const std::vector<size_t>& which) {
        asked = which;
        std::vector<std::vector<float>> out;
        for (size_t i : which) {
          out.push_back(i < static_cast<size_t>(kOthers) ? spectra[i] : std::vector<float>());
        }
        return out;
      },
      &keys);
  EXPECT_EQ(asked, expected_set);
  ASSERT_EQ(ring.size(), pool.size());
  ASSERT_EQ(keys.size(), pool.size());
  const std::set<size_t> searched(asked.begin(), asked.end());
  ASSERT_TRUE(searched.count(kOthers));  // the mate is in the set, and unscored without spectra
  EXPECT_FALSE(ring[kOthers].has_value());
  double lowest_searched = 10;
  for (size_t i = 0; i < pool.size(); ++i) {
    if (!compressed[i] || i == static_cast<size_t>(kOthers)) continue;
    if (searched.count(i)) {
      EXPECT_DOUBLE_EQ(*ring[i], RingCorrelation(query, spectra[i]).score) << i;
      EXPECT_DOUBLE_EQ(*keys[i], *ring[i]);
      lowest_searched = std::min(lowest_searched, *keys[i]);
    } else {
      EXPECT_DOUBLE_EQ(*ring[i], *compressed[i]) << i;
    }
  }
  for (size_t i = 0; i < pool.size(); ++i) {
    if (keys[i] && !searched.count(i)) {
      EXPECT_LT(*keys[i], lowest_searched) << i;
    }
  }
  // With the mate's spectra back it leads the order.
  cli::RingStageScoresFromCodes(
      query, compressed, 100, 2,
      [&](const std::vector<size_t>& which) {
        std::vector<std::vector<float>> out;
        for (size_t i : which) out.push_back(spectra[i]);
        return out;
      },
      &keys);
  EXPECT_EQ(cli::RingOrder(keys, 100).front(), static_cast<size_t>(kOthers));
}

// The ring stage re-ranks the coarse pool by ring correlation; spectra a
// store lacks (scans stored before them) are computed from the originals.
TEST_F(SearchCli, TheRingStageOrdersTheCoarseListAndBackfillsMissingSpectra) {
  ASSERT_EQ(RunBien({"ingest", "--node", node_, "--manifest",
                     (dir_.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  auto check = [&](const std::string& exhibit, const std::string& mate) {
    const auto s = Json(RunBien({"search", "--node", node_, exhibit, "--coarse-only", "--json"}));
    EXPECT_EQ(s["ring_stage"]["pool"].get<int>(), 5) << s.dump();
    EXPECT_EQ(s["ring_stage"]["key"].get<std::string>(), RingSpectraKey());
    ASSERT_EQ(s["candidates"].size(), 5u);
    std::set<size_t> descriptor_ranks;
    double previous = 2;
    for (size_t i = 0; i < s["candidates"].size(); ++i) {
      const auto& c = s["candidates"][i];
      ASSERT_TRUE(c["ring_score"].is_number()) << c.dump();
      EXPECT_EQ(c["coarse_rank"].get<size_t>(), i + 1);
      EXPECT_LE(c["ring_score"].get<double>(), previous);
      previous = c["ring_score"].get<double>();
      descriptor_ranks.insert(c["descriptor_rank"].get<size_t>());
    }
    EXPECT_EQ(descriptor_ranks, (std::set<size_t>{1, 2, 3, 4, 5}));
    // The mate (the other shot of the firearm) leads the ring ranking, well
    // above the non-mates.
    EXPECT_EQ(s["candidates"][0]["exhibit"].get<std::string>(), mate) << s.dump();
    EXPECT_GT(s["candidates"][0]["ring_score"].get<double>(),
              s["candidates"][1]["ring_score"].get<double>() + 0.1)
        << s.dump();
  };
  check("E0-0", "CASE-0/E0-1");
  // The store loses its ring spectra (as one stored before them has none).
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((std::filesystem::path(node_) / "bien.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DELETE FROM descriptors WHERE descriptor_key LIKE 'brs-%'", nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    EXPECT_EQ(sqlite3_changes(db), 7);  // 6 + the other calibre's
    sqlite3_close(db);
  }
  check("E1-1", "CASE-1/E1-0");
  auto store = Store::Open(node_);
  for (const ExhibitRecord& e : store->ListExhibits()) {
    if (e.cc.calibre != "9mm Luger") continue;  // only the searched partition is backfilled
    for (const ScanRecord& scan : store->ScansOf(e.id)) {
      const auto v = store->GetDescriptor(scan.id, RingSpectraKey());
      ASSERT_TRUE(v.has_value()) << e.exhibit_ref;
      EXPECT_EQ(static_cast<int>(v->size()), RingSpectraDim());
    }
  }
  const CliResult text = RunBien({"search", "--node", node_, "E0-0", "--top", "3"});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "re-ranked by ring correlation (brs-v1")) << text.out;
  EXPECT_TRUE(Contains(text.out, "RING")) << text.out;
  EXPECT_NE(RunBien({"search", "--node", node_, "E0-0", "--ring-pool", "-1"}).code, 0);
}

// A partition larger than the ring pool: the compressed ring screen scores
// every scan's codes and its best that the cosine's pool lacks join the ring
// stage; its codes are saved beside the index, rebuilt when damaged and
// updated after an ingest.
TEST(SearchScreen, TheRingScreenJoinsThePoolAndItsCodesFollowTheStore) {
  TempDir dir;
  SynthOptions o;
  o.firearms = 8;  // 16 scans: a basis needs at least 12 spectra
  o.shots = 2;
  o.seed = 33;
  o.size_px = 560;
  const auto files = WriteSynthSet(dir.path() / "set", o);
  {
    std::ofstream m(dir.path() / "set" / "manifest.csv");
    m << "path,case,exhibit,kind,role,calibre,firearm\n";
    for (const SynthFile& f : files) {
      m << f.file_name << ",CASE-" << f.firearm << ",E" << f.firearm << "-" << f.shot
        << ",cartridge_case,evidence,9mm Luger,\n";
    }
  }
  const std::string node = (dir.path() / "node").string();
  ASSERT_EQ(RunBien({"init", "--node", node}).code, 0);
  ASSERT_EQ(RunBien({"ingest", "--node", node, "--manifest",
                     (dir.path() / "set" / "manifest.csv").string(), "--no-search"})
                .code,
            0);
  auto search = [&](const std::string& exhibit) {
    return Json(RunBien({"search", "--node", node, exhibit, "--coarse-only", "--json", "--k", "3",
                         "--ring-pool", "3", "--ring-screen", "3"}));
  };
  const auto s = search("E2-0");
  const auto& screen = s["ring_stage"]["screen"];
  EXPECT_EQ(screen["key"].get<std::string>(), RingCodec::KeyFor());
  EXPECT_TRUE(Contains(screen["note"].get<std::string>(), "rebuilt: no saved ring codes"))
      << s.dump();
  // The screen's own list, from its saved codes and the query's spectra.
  std::vector<std::filesystem::path> codes_files;
  for (const auto& f : std::filesystem::directory_iterator(std::filesystem::path(node) / "index")) {
    if (f.path().extension() == ".brc") codes_files.push_back(f.path());
  }
  ASSERT_EQ(codes_files.size(), 1u);
  auto codes = RingCodeIndex::Load(codes_files[0], RingCodec::KeyFor());
  ASSERT_TRUE(codes.index) << codes.reason;
  EXPECT_EQ(codes.index->size(), 16);
  auto store = Store::Open(node);
  const ExhibitRecord query = store->FindExhibit("CASE-2/E2-0");
  const ScanId query_scan = store->ScansOf(query.id).front().id;
  const auto query_spectra = store->GetDescriptor(query_scan, RingSpectraKey());
  ASSERT_TRUE(query_spectra);
  // Its best 3 (the query's own scan among them, skipped by the search).
  const std::vector<SearchHit> screen_hits = codes.index->Search(*query_spectra, 3, 1);
  ASSERT_EQ(screen_hits.size(), 3u);
  // The pool is the cosine's best 3 (descriptor ranks 1..3) and those of the
  // screen's best 3 it lacks (screen ranks); all scored by the ring stage,
  // the mate first.
  int added = 0;
  ASSERT_EQ(s["candidates"].size(), 3u);
  for (const auto& c : s["candidates"]) {
    ASSERT_TRUE(c["ring_score"].is_number()) << c.dump();
    ASSERT_TRUE(c["coarse_score"].is_number()) << c.dump();
    const int screen_rank = c["screen_rank"].get<int>();
    if (screen_rank > 0) {
      EXPECT_EQ(c["descriptor_rank"].get<int>(), 0);
      ASSERT_LE(screen_rank, 3);
      EXPECT_EQ(c["scan_id"].get<int64_t>(), screen_hits[static_cast<size_t>(screen_rank) - 1].id);
      ++added;
    } else {
      EXPECT_GE(c["descriptor_rank"].get<int>(), 1);
    }
  }
  EXPECT_EQ(s["ring_stage"]["pool"].get<int>(), 3 + screen["added"].get<int>()) << s.dump();
  EXPECT_LE(added, screen["added"].get<int>());
  // Here the screen's best are two non-mates the cosine ranked lower (the
  // mate scores low at the found centre, which the screen uses, and high
  // with the ring stage's centre search): both join, and the mate still
  // leads.
  EXPECT_GE(added, 1) << s.dump();
  EXPECT_EQ(s["candidates"][0]["exhibit"].get<std::string>(), "CASE-2/E2-1") << s.dump();

  // Kept in memory, rebuilt when damaged, updated after an ingest.
  EXPECT_EQ(search("E2-0")["ring_stage"]["screen"]["note"].get<std::string>(), "in memory");
  {
    std::fstream f(codes_files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(codes_files[0]) / 2));
    f.put('\x5a');
  }
  EXPECT_TRUE(Contains(search("E2-0")["ring_stage"]["screen"]["note"].get<std::string>(),
                       "rebuilt: checksum mismatch"));
  SynthOptions third = o;
  WriteX3p(MakeSynthShot(third, 5, 2), dir.path() / "third.x3p");
  ASSERT_EQ(RunBien({"ingest", "--node", node, "--case", "CASE-5", "--exhibit", "E5-2", "--kind",
                     "cartridge_case", "--role", "evidence", "--calibre", "9mm Luger",
                     "--no-search", (dir.path() / "third.x3p").string()})
                .code,
            0);
  EXPECT_EQ(search("E5-2")["ring_stage"]["screen"]["note"].get<std::string>(), "updated (+1, -0)");
  // The text names the screen.
  const CliResult text =
      RunBien({"search", "--node", node, "E2-0", "--coarse-only", "--k", "3", "--ring-pool", "3"});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "ring screen")) << text.out;
  // Off on request; a pool that holds the whole partition needs no screen.
  const auto off = Json(RunBien({"search", "--node", node, "E2-0", "--coarse-only", "--json", "--k",
                                 "3", "--ring-pool", "3", "--ring-screen", "0"}));
  EXPECT_EQ(off["ring_stage"]["screen"]["added"].get<int>(), 0);
  EXPECT_EQ(off["ring_stage"]["pool"].get<int>(), 3);
  EXPECT_NE(RunBien({"search", "--node", node, "E2-0", "--ring-screen", "-1"}).code, 0);
  EXPECT_EQ(Json(RunBien({"search", "--node", node, "E2-0", "--coarse-only", "--json", "--k", "3",
                          "--ring-pool", "20"}))["ring_stage"]["screen"]["note"]
                .get<std::string>(),
            "");
}

// The acceptance test: the 40 Fadul scans, each rotated at random,
// among synthetic distractor exhibits of the same calibre; every scan's mates
// (same slide) appear in the top 10 of its correlation list. The distractors
// are MakeSynthBreechFace shots (matching/descriptor.h), whose descriptors
// are distributed like real non-matches.
TEST(SearchReal, FadulMatesInTheTopTenAmongSyntheticDistractors) {
  const auto data = BIEN_REQUIRE_SHARED_DATA();
  TempDir dir;
  NodeConfig config;
  config.name = "search test";
  config.country = "RS";
  Store::Create(dir.path() / "node", config, "test");
  auto store = Store::Open(dir.path() / "node");
  const CsvTable truth = ReadCsvFile(data / "cartridge/fadul/truth.csv");
  const size_t path_col = *truth.Column("path"), source_col = *truth.Column("source");
  std::mt19937_64 rng(4242);
  std::uniform_real_distribution<double> angle(0, 360);
  std::map<std::string, std::string> source_of;  // exhibit ref -> slide
  // Stores `s` (written as an X3P file) as the one scan of CASE/EXHIBIT, with
  // its descriptor, in one transaction.
  auto add = [&](const Surface& s, const std::string& case_ref, const std::string& exhibit_ref,
                 std::vector<float> descriptor, std::vector<float> rings) {
    const auto file = dir.path() / (exhibit_ref + ".x3p");
    WriteX3p(s, file);
    const std::vector<std::byte> bytes = ReadBytes(file);
    ExhibitSpec spec;
    spec.case_ref = case_ref;
    spec.exhibit_ref = exhibit_ref;
    spec.cc.calibre = "9mm Luger";
    NewScan scan;
    scan.meta.original_name = file.filename().string();
    scan.meta.format = "x3p";
    scan.meta.width = s.width;
    scan.meta.height = s.height;
    scan.meta.dx_m = s.dx_m;
    scan.meta.dy_m = s.dy_m;
    scan.original = bytes;
    scan.descriptors.push_back(NewDescriptor{DescriptorKey(), std::move(descriptor)});
    if (!rings.empty())
      scan.descriptors.push_back(NewDescriptor{RingSpectraKey(), std::move(rings)});
    store->AddScans("test", spec, std::span<const NewScan>(&scan, 1));
    std::filesystem::remove(file);
  };
  for (size_t i = 0; i < truth.rows.size(); ++i) {
    const Surface s =
        RotateSurface(ReadX3p(data / "cartridge/fadul" / truth.rows[i][path_col]), angle(rng));
    const std::string ref = "F" + std::to_string(i);
    source_of[ref] = truth.rows[i][source_col];
    const Surface pre = cli::Preprocessed(cli::Operand{ref, "", s}, nullptr);
    add(s, "REAL", ref, BreechFaceDescriptor(pre, ref), BreechFaceRingSpectra(pre, ref));
  }
  const int kDistractors = 1000;
  const SynthDescriptorOptions synth;
  int without_rings = 0;
  for (int f = 0; f < kDistractors; ++f) {
    const Surface s = MakeSynthBreechFace(synth, DescriptorOptions{}, 100 + f, 0);
    // Ring spectra as ingest stores them: none for a breech face too narrow
    // for them (the search keeps such a candidate at its cosine rank).
    std::vector<float> rings;
    try {
      rings = BreechFaceRingSpectra(s, "distractor");
    } catch (const Error&) {
      ++without_rings;
    }
    add(s, "SYNTH", "D" + std::to_string(f), BreechFaceDescriptor(s, "distractor"),
        std::move(rings));
  }
  cli::SearchOptions options;  // the defaults, with query expansion
  options.coarse_k = 50;       // (the default 100 doubles the test's time)
  options.record_leads = false;
  int queries = 0, mate_first = 0, with_mate_in_top10 = 0, mate_pairs = 0, mate_pairs_in_top10 = 0;
  // The coarse list alone: mate pairs in its top 10 by cosine and after the
  // ring stage.
  int coarse_pairs_cosine = 0, coarse_pairs_rings = 0;
  for (const auto& [ref, slide] : source_of) {
    const ExhibitRecord query = store->FindExhibit("REAL/" + ref);
    for (const int pool : {0, 1000}) {
      cli::SearchOptions coarse;
      coarse.coarse_only = true;
      coarse.coarse_k = 10;
      coarse.ring_pool = pool;
      const cli::SearchReport r = cli::SearchExhibit(*store, query, coarse, "test");
      // The index's best 1000 and, the partition being larger (1040), what
      // the ring screen's best 1000 add to them: nearly all the rest.
      EXPECT_EQ(r.ring_pool - r.ring_screen, pool) << r.ring_note;
      if (pool > 0) {
        EXPECT_GT(r.ring_screen, 0) << r.ring_screen_note;
        EXPECT_LE(r.ring_pool, 1039) << r.ring_screen_note;  // at most every other scan
      }
      ASSERT_EQ(r.candidates.size(), 10u);
      for (const cli::SearchCandidate& c : r.candidates) {
        const bool mate = c.exhibit.case_ref == "REAL" && source_of[c.exhibit.exhibit_ref] == slide;
        (pool ? coarse_pairs_rings : coarse_pairs_cosine) += mate;
        if (!pool) {
          EXPECT_FALSE(c.ring_score.has_value());
        }
      }
    }
    const cli::SearchReport r = cli::SearchExhibit(*store, query, options, "test");
    int mates_in_top10 = 0, mates = 0;
    for (const auto& [other, other_slide] : source_of)
      mates += other != ref && other_slide == slide;
    for (size_t k = 0; k < r.candidates.size() && k < 10; ++k) {
      const auto& e = r.candidates[k].exhibit;
      if (e.case_ref == "REAL" && source_of[e.exhibit_ref] == slide) ++mates_in_top10;
    }
    with_mate_in_top10 += mates_in_top10 > 0;
    mate_pairs += mates;
    mate_pairs_in_top10 += mates_in_top10;
    if (mates_in_top10 < mates) {
      std::printf("  %s (%s): %d of %d mates in the top 10\n", ref.c_str(), slide.c_str(),
                  mates_in_top10, mates);
    }
    ++queries;
    mate_first += !r.candidates.empty() && r.candidates[0].exhibit.case_ref == "REAL" &&
                  source_of[r.candidates[0].exhibit.exhibit_ref] == slide;
    EXPECT_EQ(r.partition_scans, 40 + kDistractors);
  }
  std::printf(
      "Fadul among %d distractors: mate first %d of %d; a mate in the top 10 %d of %d; "
      "mate pairs in the top 10 %d of %d\n",
      kDistractors, mate_first, queries, with_mate_in_top10, queries, mate_pairs_in_top10,
      mate_pairs);
  std::printf(
      "coarse top 10 alone: %d mate pairs by cosine, %d after the ring stage (%d distractors "
      "without ring spectra)\n",
      coarse_pairs_cosine, coarse_pairs_rings, without_rings);
  EXPECT_EQ(queries, 40);
  // Measured 2026-11-24: 122 by cosine, 126 after the ring stage.
  EXPECT_GE(coarse_pairs_rings, coarse_pairs_cosine);
  EXPECT_GE(coarse_pairs_rings, 125);
  // Measured 2026-11-23 (docs/ACCURACY.md, "Search"), 1024-float
  // descriptors: every scan ranks a mate first and all 126 mate pairs are in
  // the top 10 (with 256 floats: 39 of 40, 122 of 126). The goal is
  // a mate at rank 1 for every query; the pair bound leaves room for two
  // weak mates to slip below ten.
  EXPECT_EQ(with_mate_in_top10, 40);
  EXPECT_EQ(mate_first, 40);
  EXPECT_GE(mate_pairs_in_top10, 124);
}

}  // namespace
}  // namespace bien::testing

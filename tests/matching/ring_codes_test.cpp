// Compressed ring spectra (brc-v1): the full basis reproduces the ring
// correlation, six components rank synthetic mates as the full spectra do,
// and bad input is refused.
#include "matching/ring_codes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "matching/descriptor.h"
#include "tests/test_util.h"

namespace bien {
namespace {

using testing::Contains;
using testing::ErrorOf;

// Ring spectra of the benchmark's synthetic shots (firearm f, shot s at
// index 2f + s), made once for the whole file.
const std::vector<std::vector<float>>& Shots() {
  static const std::vector<std::vector<float>> shots = [] {
    constexpr int kFirearms = 120;
    SynthDescriptorOptions synth;
    synth.seed = 7;
    std::vector<std::vector<float>> out;
    for (int f = 0; f < kFirearms; ++f) {
      for (int s = 0; s < 2; ++s) {
        try {
          out.push_back(BreechFaceRingSpectra(MakeSynthBreechFace(synth, DescriptorOptions{}, f, s),
                                              "synthetic"));
        } catch (const Error&) {
          out.emplace_back();  // too sparse: an empty spectra, as the store holds none
        }
      }
    }
    return out;
  }();
  return shots;
}

std::vector<const std::vector<float>*> Pointers(const std::vector<std::vector<float>>& v) {
  std::vector<const std::vector<float>*> out;
  for (const auto& x : v) out.push_back(&x);
  return out;
}

TEST(RingCodes, FullBasisReproducesTheRingCorrelation) {
  const auto& shots = Shots();
  RingCodecOptions full;
  full.components =
      RingSpectraDim() /
      (2 * (RingSpectraOptions{}.max_harmonic - RingSpectraOptions{}.min_harmonic + 1));
  full.rotations = RingSpectraOptions{}.angles;  // the same rotations as RingCorrelation
  const RingCodec codec = RingCodec::Train(Pointers(shots), {}, full);
  EXPECT_NEAR(codec.kept_energy(), 1.0, 1e-6);
  int compared = 0;
  for (size_t i = 0; i + 1 < shots.size(); i += 7) {
    const auto& a = shots[i];
    const auto& b = shots[i + 1];
    if (a.empty() || b.empty()) continue;
    const double exact = RingCorrelation(a, b).score;
    // The basis is unitary: only the bytes' rounding differs.
    EXPECT_NEAR(codec.Score(codec.Project(a), codec.Encode(b)), exact, 0.01) << i;
    ++compared;
  }
  EXPECT_GE(compared, 20);
}

TEST(RingCodes, SixComponentsRankMatesAsTheFullSpectraDo) {
  const auto& shots = Shots();
  const auto all = Pointers(shots);
  const RingCodec codec = RingCodec::Train(all);
  EXPECT_EQ(codec.code_bytes(), 2 * 45 * 6);
  EXPECT_GT(codec.kept_energy(), 0.6);
  EXPECT_LT(codec.kept_energy(), 1.0);
  std::vector<int8_t> bytes;
  std::vector<float> scales;
  codec.EncodeAll(all, 2, bytes, scales);
  ASSERT_EQ(bytes.size(), shots.size() * static_cast<size_t>(codec.code_bytes()));
  // Each firearm's shot 1 against every shot 0: the mate first?
  int queries = 0, first_by_codes = 0, first_by_spectra = 0;
  std::vector<float> scores(shots.size());
  for (size_t q = 1; q < shots.size(); q += 2) {
    if (shots[q].empty() || shots[q - 1].empty()) continue;
    ++queries;
    codec.ScoreAll(codec.Project(shots[q]), bytes, scales, scores, 2);
    bool codes_first = true, spectra_first = true;
    const double mate_exact = RingCorrelation(shots[q], shots[q - 1]).score;
    for (size_t c = 0; c < shots.size(); c += 2) {
      if (c == q - 1 || shots[c].empty()) continue;
      codes_first = codes_first && scores[c] < scores[q - 1];
      spectra_first = spectra_first && RingCorrelation(shots[q], shots[c]).score < mate_exact;
    }
    first_by_codes += codes_first;
    first_by_spectra += spectra_first;
  }
  ASSERT_GE(queries, 100);
  // Among 120 firearms the full spectra put nearly every mate first; the
  // 540-byte codes lose at most a few of them.
  EXPECT_GE(first_by_spectra, queries * 9 / 10);
  EXPECT_GE(first_by_codes, first_by_spectra - queries / 20);
  // ScoreAll is Score, on any number of threads; an empty spectra scores 0.
  codec.ScoreAll(codec.Project(shots[1]), bytes, scales, scores, 1);
  for (size_t c = 0; c < shots.size(); c += 17) {
    RingCode code;
    code.bytes.assign(bytes.begin() + static_cast<ptrdiff_t>(c * codec.code_bytes()),
                      bytes.begin() + static_cast<ptrdiff_t>((c + 1) * codec.code_bytes()));
    code.scale = scales[c];
    EXPECT_FLOAT_EQ(codec.Score(codec.Project(shots[1]), code), scores[c]);
  }
  const RingCode empty = codec.Encode({});
  EXPECT_EQ(empty.scale, 0.0f);
  EXPECT_EQ(codec.Score(codec.Project(shots[1]), empty), 0.0f);
  // Deterministic: the same sample trains the same basis.
  const RingCodec again = RingCodec::Train(all);
  EXPECT_EQ(again.Encode(shots[5]).bytes, codec.Encode(shots[5]).bytes);
  EXPECT_EQ(codec.Key(), "brc-v1 c=6 rot=128 " + RingSpectraKey());
}

TEST(RingCodes, BadInputIsRefused) {
  const auto& shots = Shots();
  const auto all = Pointers(shots);
  RingCodecOptions o;
  o.components = 0;
  EXPECT_TRUE(Contains(ErrorOf([&] { RingCodec::Train(all, {}, o); }), "components 0"));
  o.components = 22;
  EXPECT_TRUE(Contains(ErrorOf([&] { RingCodec::Train(all, {}, o); }), "1..21"));
  o = {};
  o.rotations = 96;
  EXPECT_TRUE(Contains(ErrorOf([&] { RingCodec::Train(all, {}, o); }), "power of two"));
  o.rotations = 64;  // harmonics up to 48 need more than 96
  EXPECT_TRUE(Contains(ErrorOf([&] { RingCodec::Train(all, {}, o); }), "twice the highest"));
  // Too few to train on, a wrong length.
  const std::vector<const std::vector<float>*> few(all.begin(), all.begin() + 4);
  EXPECT_TRUE(Contains(ErrorOf([&] { RingCodec::Train(few); }), "at least 12 needed"));
  const std::vector<float> short_spectra(100, 0.1f);
  std::vector<const std::vector<float>*> bad = all;
  bad.push_back(&short_spectra);
  EXPECT_TRUE(Contains(ErrorOf([&] { RingCodec::Train(bad); }), "100 floats"));
  const RingCodec codec = RingCodec::Train(all);
  EXPECT_TRUE(Contains(ErrorOf([&] { codec.Encode(short_spectra); }), "100 floats"));
  std::vector<float> out(3);
  EXPECT_TRUE(Contains(
      ErrorOf([&] { codec.ScoreAll(codec.Project(shots[0]), {}, std::vector<float>(2), out, 1); }),
      "2 scales"));
}

TEST(RingCodeIndex, SearchesSavesLoadsAndRefusesDamagedFiles) {
  const auto& shots = Shots();
  // Ids 1000 + i; firearm f's shot 0 is indexed, shot 1 queries.
  std::vector<int64_t> ids;
  std::vector<const std::vector<float>*> spectra;
  for (size_t i = 0; i < shots.size(); i += 2) {
    ids.push_back(1000 + static_cast<int64_t>(i));
    spectra.push_back(&shots[i]);
  }
  const auto index = RingCodeIndex::Build(ids, spectra, 2);
  EXPECT_EQ(index->size(), static_cast<int64_t>(ids.size()));
  EXPECT_EQ(index->trained_on(), static_cast<int64_t>(ids.size()));
  EXPECT_FALSE(index->ShouldRetrain());
  EXPECT_EQ(index->key(), RingCodec::KeyFor());
  int first = 0, queries = 0;
  for (size_t q = 1; q < shots.size(); q += 20) {
    if (shots[q].empty() || shots[q - 1].empty()) continue;
    ++queries;
    const auto hits = index->Search(shots[q], 5, 2);
    ASSERT_EQ(hits.size(), 5u);
    EXPECT_GE(hits[0].score, hits[4].score);
    first += hits[0].id == 1000 + static_cast<int64_t>(q - 1);
  }
  EXPECT_GE(first, queries - 1);

  // Scores of chosen ids are the scores Search gives them; an id without a
  // code has none.
  {
    const auto hits = index->Search(shots[1], static_cast<int>(ids.size()), 2);
    std::vector<int64_t> asked{hits[3].id, 7, hits[0].id, hits.back().id};
    const auto scores = index->Scores(shots[1], asked, 2);
    ASSERT_EQ(scores.size(), 4u);
    ASSERT_TRUE(scores[0] && scores[2] && scores[3]);
    EXPECT_FALSE(scores[1].has_value());
    EXPECT_FLOAT_EQ(*scores[0], hits[3].score);
    EXPECT_FLOAT_EQ(*scores[2], hits[0].score);
    EXPECT_FLOAT_EQ(*scores[3], hits.back().score);
    EXPECT_TRUE(index->Scores(shots[1], {}, 2).empty());
    EXPECT_THROW(index->Scores(std::vector<float>(5, 1.0f), asked, 2), Error);
  }

  const testing::TempDir dir;
  const auto path = dir / "p.brc";
  index->Save(path);
  auto loaded = RingCodeIndex::Load(path, RingCodec::KeyFor());
  ASSERT_TRUE(loaded.index) << loaded.reason;
  EXPECT_EQ(loaded.index->Ids(), index->Ids());
  EXPECT_EQ(loaded.id_fingerprint, IdFingerprint(ids));
  const auto a = index->Search(shots[3], 10, 1), b = loaded.index->Search(shots[3], 10, 1);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].score, b[i].score);
  }
  // Remove moves the last code into the gap; Add replaces or appends.
  const int64_t gone[] = {1000, 1002, 99};
  EXPECT_EQ(loaded.index->Remove(gone), 2u);
  EXPECT_EQ(loaded.index->size(), index->size() - 2);
  const auto after = loaded.index->Search(shots[1], 3, 1);
  EXPECT_NE(after[0].id, 1000);  // its mate is gone
  const int64_t back[] = {1000};
  const std::vector<float>* back_spectra[] = {&shots[0]};
  loaded.index->Add(back, back_spectra, 1);
  EXPECT_EQ(loaded.index->Search(shots[1], 1, 1)[0].id, 1000);
  const int64_t twice[] = {5, 5};
  const std::vector<float>* two[] = {&shots[0], &shots[2]};
  EXPECT_TRUE(Contains(ErrorOf([&] { loaded.index->Add(twice, two, 1); }), "id 5 given twice"));
  EXPECT_EQ(loaded.index->size(), index->size() - 1);

  // Damage: missing, another key, a flipped byte, truncated, not ours.
  EXPECT_EQ(RingCodeIndex::Load(dir / "none.brc", RingCodec::KeyFor()).reason,
            "no saved ring codes");
  RingCodecOptions other;
  other.components = 4;
  EXPECT_TRUE(Contains(RingCodeIndex::Load(path, RingCodec::KeyFor({}, other)).reason,
                       "ring code key differs"));
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << b;
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x10;
  write(flipped);
  EXPECT_EQ(RingCodeIndex::Load(path, RingCodec::KeyFor()).reason,
            "checksum mismatch (the file is corrupt)");
  write(bytes.substr(0, 50));
  EXPECT_TRUE(Contains(RingCodeIndex::Load(path, RingCodec::KeyFor()).reason, "truncated"));
  write("BIENVIDX" + bytes.substr(8));
  EXPECT_TRUE(Contains(RingCodeIndex::Load(path, RingCodec::KeyFor()).reason, "bad magic"));
}

}  // namespace
}  // namespace bien

// The federation commands in-process: keys, peers, alerts --follow, and what
// they refuse. (The node itself runs as processes in federation_cli_test.cpp.)
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>

#include "exchange/codec.h"
#include "imaging/preprocess.h"
#include "imaging/x3p.h"
#include "matching/descriptor.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"
#include "tools/federation.h"
#include "tools/search.h"

namespace bien::testing {
namespace {

namespace fs = std::filesystem;

class FederationCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = (tmp_ / "node").string();
    ASSERT_EQ(RunBien({"init", "--node", node_, "--name", "RS lab", "--country", "RS"}).code, 0);
  }
  TempDir tmp_;
  std::string node_;
};

TEST_F(FederationCommandsTest, KeysAreCreatedOnceWithAnOwnerOnlySecret) {
  auto r = RunBien({"keys", "--node", node_});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "created the node's CURVE key pair"));
  struct stat st {};
  ASSERT_EQ(stat((fs::path(node_) / "keys" / "node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string pub;
  std::ifstream(fs::path(node_) / "keys" / "node.pub") >> pub;
  EXPECT_EQ(pub.size(), 40u);
  r = RunBien({"keys", "--node", node_, "--json"});
  EXPECT_TRUE(Contains(r.out, "\"created\": false"));
  EXPECT_TRUE(Contains(r.out, pub));
  // A secret others can read is refused.
  chmod((fs::path(node_) / "keys" / "node.key").c_str(), 0644);
  r = RunBien({"keys", "--node", node_});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "readable by others"));
}

TEST_F(FederationCommandsTest, PeersAreAddedListedAndRemoved) {
  ASSERT_EQ(RunBien({"keys", "--node", node_}).code, 0);
  std::string own;
  std::ifstream(fs::path(node_) / "keys" / "node.pub") >> own;
  const std::string key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  auto r = RunBien({"peer", "add", "--node", node_, "BA-sarajevo", "tcp://127.0.0.1:7301", key,
                    "--share", "9mm Luger, bullet|9mm Luger"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "cartridge_case|9mm Luger, bullet|9mm Luger"));
  r = RunBien({"peer", "add", "--node", node_, "self", "tcp://127.0.0.1:7302", own});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "this node's own public key"));
  r = RunBien({"peer", "add", "--node", node_, "x", "udp://h:1", key});
  EXPECT_EQ(r.code, 1);
  // Z85 keys start with '-' about once in 85 (the demo met one): pasted as
  // printed, such a key is taken, with or without a "--" before it.
  const std::string dash_key = "-" + key.substr(1);
  ASSERT_TRUE(exchange::IsZ85Key(dash_key));
  r = RunBien({"peer", "add", "--node", node_, "MK-skopje", "tcp://127.0.0.1:7303", dash_key,
               "--share", "9mm Luger"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "key " + dash_key));
  r = RunBien({"peer", "add", "--node", node_, "ME-podgorica", "tcp://127.0.0.1:7304", "--",
               "-" + key.substr(2) + "x"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = RunBien({"peer", "add", "--node", node_, "AL-tirana", "tcp://127.0.0.1:7305"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "give the peer's public key"));
  r = RunBien({"peer", "add", "--node", node_, "AL-tirana", "tcp://127.0.0.1:7305", key, "-zzz"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "not expected: -zzz"));
  ASSERT_EQ(RunBien({"peer", "remove", "--node", node_, "MK-skopje"}).code, 0);
  ASSERT_EQ(RunBien({"peer", "remove", "--node", node_, "ME-podgorica"}).code, 0);
  r = RunBien({"peer", "list", "--node", node_});
  EXPECT_TRUE(Contains(r.out, "BA-sarajevo"));
  EXPECT_TRUE(Contains(r.out, "never"));
  EXPECT_TRUE(Contains(r.out, "1 peer"));
  r = RunBien({"peer", "list", "--node", node_, "--json"});
  EXPECT_TRUE(Contains(r.out, "\"queue_depth\": 0"));
  ASSERT_EQ(RunBien({"peer", "remove", "--node", node_, "BA-sarajevo"}).code, 0);
  EXPECT_TRUE(Contains(RunBien({"peer", "list", "--node", node_}).out, "0 peers"));
  r = RunBien({"peer", "remove", "--node", node_, "BA-sarajevo"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no peer named"));
}

TEST_F(FederationCommandsTest, RemoteCandidatesAndFollowingAlertsNeedWhatTheyNeed) {
  auto r = RunBien({"confirm", "--node", node_, "R1", "--by", "ana"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "bien keys"));
  ASSERT_EQ(RunBien({"keys", "--node", node_}).code, 0);
  r = RunBien({"confirm", "--node", node_, "R1", "--by", "ana"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no remote candidate R1"));
  r = RunBien({"alerts", "--node", node_, "--follow", "--timeout", "0.3"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  r = RunBien({"serve", "--node", node_, "--listen", "udp://x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--listen must be tcp://HOST:PORT"));
}

// A peer's request, built from a stored cartridge case as `search
// --federated` builds it (through the codec, as on the wire), answered by
// another node's two-stage search: the shot of the same pistol comes first
// with a CMC score far above the others; coarse-only answers carry no fine
// score.
TEST(FederationSearch, APeersRequestIsAnsweredByTheLocalTwoStageSearch) {
  TempDir tmp;
  const std::string samples = (tmp / "s").string();
  ASSERT_EQ(
      RunBien({"synth", "--out", samples, "--firearms", "3", "--shots", "2", "--seed", "7"}).code,
      0);
  const std::string a = (tmp / "a").string(), b = (tmp / "b").string();
  ASSERT_EQ(RunBien({"init", "--node", a, "--country", "RS"}).code, 0);
  ASSERT_EQ(RunBien({"init", "--node", b, "--country", "BA"}).code, 0);
  auto ingest = [&](const std::string& node, const std::string& file, const std::string& c) {
    const auto r = RunBien({"ingest", "--node", node, samples + "/" + file, "--case", c,
                            "--exhibit", "E1", "--kind", "cartridge_case", "--role", "evidence",
                            "--calibre", "9mm Luger", "--no-search"});
    ASSERT_EQ(r.code, 0) << r.err;
  };
  ingest(a, "synth F02-1.x3p", "RS-1");
  ingest(b, "synth F01-1.x3p", "BA-1");
  ingest(b, "synth F02-2.x3p", "BA-2");
  ingest(b, "synth F03-1.x3p", "BA-3");
  auto store_a = Store::Open(a);
  auto store_b = Store::Open(b);
  exchange::CorrelationRequest req =
      cli::BuildCorrelationRequest(*store_a, store_a->FindExhibit("RS-1/E1"), false, 10, 100);
  req.expires_ms = exchange::NowMs() + 60000;
  const auto wire = exchange::Decode(
      exchange::Encode(exchange::NewMessage("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", req)));
  ASSERT_TRUE(wire.message) << wire.error;
  const auto& sent = std::get<exchange::CorrelationRequest>(wire.message->body);
  ASSERT_TRUE(sent.fine);
  EXPECT_EQ(sent.cc.calibre, "9mm Luger");
  // The ring query for the peer's ring stage: 49 centre offsets.
  EXPECT_EQ(sent.ring_key, RingSpectraKey());
  EXPECT_EQ(sent.ring_spectra.size(), 49u);
  EXPECT_EQ(sent.ring_spectra.front().size(), static_cast<size_t>(RingSpectraDim()));
  EXPECT_EQ(sent.ring_pool, cli::SearchOptions{}.ring_pool);

  const exchange::CorrelationResult r = cli::AnswerCorrelation(*store_b, sent, 2);
  EXPECT_EQ(r.status, "ok") << r.detail;
  EXPECT_EQ(r.partition, "cartridge_case|9mm Luger");
  EXPECT_EQ(r.partition_size, 3);
  ASSERT_EQ(r.candidates.size(), 3u);
  EXPECT_EQ(r.candidates[0].case_ref, "BA-2");
  ASSERT_TRUE(r.candidates[0].fine_score && r.candidates[1].fine_score);
  EXPECT_GT(*r.candidates[0].fine_score, 10);
  EXPECT_LT(*r.candidates[1].fine_score, 6);
  EXPECT_EQ(r.candidates[0].method, "cmc-v1");

  exchange::CorrelationRequest coarse = sent;
  coarse.fine.reset();
  coarse.top = 2;
  const exchange::CorrelationResult rc = cli::AnswerCorrelation(*store_b, coarse, 2);
  ASSERT_EQ(rc.candidates.size(), 2u);
  EXPECT_FALSE(rc.candidates[0].fine_score);
  EXPECT_EQ(rc.fine_ms, 0);

  // The peer's coarse order follows the request's ring query: with the ring
  // spectra of BA-3's own shot (F03-1) and the descriptor of F02-1, BA-3
  // leads the coarse-only answer; without a ring query the cosine decides.
  exchange::CorrelationRequest swapped = coarse;
  const Surface f03 = PreprocessBreechFace(ReadX3p(samples + "/synth F03-1.x3p"), "F03-1");
  RingQuery f03_query = BreechFaceRingQuery(f03, "F03-1");
  swapped.ring_spectra = f03_query.spectra;
  swapped.ring_offsets_um = f03_query.offsets_um;
  swapped.top = 3;
  const exchange::CorrelationResult by_rings = cli::AnswerCorrelation(*store_b, swapped, 2);
  ASSERT_EQ(by_rings.candidates.size(), 3u);
  EXPECT_EQ(by_rings.candidates[0].case_ref, "BA-3");
  EXPECT_EQ(by_rings.candidates[0].coarse_rank, 1);
  swapped.ring_key.clear();
  swapped.ring_spectra.clear();
  swapped.ring_offsets_um.clear();
  swapped.ring_pool = 0;
  const exchange::CorrelationResult by_cosine = cli::AnswerCorrelation(*store_b, swapped, 2);
  ASSERT_EQ(by_cosine.candidates.size(), 3u);
  EXPECT_EQ(by_cosine.candidates[0].case_ref, "BA-2");  // F02-2, the descriptor's mate

  exchange::CorrelationRequest other = sent;
  other.descriptor_key = "bfd-v0";
  EXPECT_EQ(cli::AnswerCorrelation(*store_b, other, 2).status, "refused");
  other = sent;
  other.cc.calibre = ".45 ACP";  // another partition: nothing there
  const auto empty = cli::AnswerCorrelation(*store_b, other, 2);
  EXPECT_EQ(empty.status, "ok");
  EXPECT_TRUE(empty.candidates.empty());
}

}  // namespace
}  // namespace bien::testing

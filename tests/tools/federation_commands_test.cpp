// The federation commands in-process: keys, peers, alerts --follow, and what
// they refuse. (The node itself runs as processes in federation_cli_test.cpp.)
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>

#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

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

}  // namespace
}  // namespace bien::testing

// The federation's tables: peers and their checks, the outbox (back-off,
// acknowledgements, expiry), the inbox (de-duplication), federated answers,
// and confirming a remote candidate: hit, alert and hit notice in one
// transaction or none of them.
#include "storage/exchange_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>

#include "core/error.h"
#include "tests/test_util.h"

namespace bien {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::ErrorOf;

const std::string kKeyA = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
const std::string kKeyB = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

std::string Id(char c) { return std::string(32, c); }

class ExchangeStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = tmp_ / "node";
    Store::Create(node_, NodeConfig{"RS lab", "RS", "", ""}, "admin");
    ex_ = ExchangeStore::Open(node_);
    ExhibitSpec spec;
    spec.case_ref = "2026-1";
    spec.exhibit_ref = "E1";
    spec.cc.calibre = "9mm Luger";
    const std::vector<std::byte> bytes{std::byte{1}, std::byte{2}};
    ScanMeta meta;
    meta.original_name = "a.x3p";
    meta.format = "x3p";
    meta.width = meta.height = 10;
    meta.dx_m = meta.dy_m = 1e-6;
    const NewScan scan{meta, bytes};
    query_ = ex_->store().AddScans("alice", spec, {&scan, 1})[0].exhibit;
  }

  PeerRecord AddB(std::vector<std::string> share = {"*"}) {
    return ex_->AddPeer("admin", {"BA-sarajevo", "tcp://127.0.0.1:7301", kKeyB, std::move(share)});
  }

  // A federated search answered by peer B with one candidate; returns its id.
  int64_t AnsweredCandidate(const PeerRecord& b) {
    ex_->StartFederatedSearch("alice", query_, Id('1'), 4102444800000,
                              {{b.id, {Id('2'), "correlation_request", "req", 4102444800000}}});
    FederatedAnswer a;
    a.status = "ok";
    EXPECT_TRUE(ex_->RecordAnswer(Id('3'), kKeyB, "BA-sarajevo", Id('1'), a,
                                  {{"BA-7", "E3", 2, 0.4, 50.5, 0.001, "cmc-v1"}}));
    return ex_->RemoteCandidates(Id('1')).at(0).id;
  }

  testing::TempDir tmp_;
  fs::path node_;
  std::unique_ptr<ExchangeStore> ex_;
  ExhibitId query_;
};

TEST_F(ExchangeStoreTest, PeersAreCheckedAddedListedAndRemovedWithAudit) {
  const size_t audit = ex_->store().AuditTrail(std::nullopt).size();
  const PeerRecord b = AddB({"cartridge_case|9mm Luger"});
  EXPECT_EQ(b.spec.name, "BA-sarajevo");
  EXPECT_TRUE(b.Shares("cartridge_case|9mm Luger"));
  EXPECT_FALSE(b.Shares("cartridge_case|.45 ACP"));
  EXPECT_TRUE(Contains(ErrorOf([&] { AddB(); }), "already exists"));
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->AddPeer("admin", {"other", "tcp://h:1", kKeyB, {"*"}});
                       }),
                       "already belongs"));
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->AddPeer("admin", {"bad name", "tcp://h:1", kKeyA});
                       }),
                       "peer name"));
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->AddPeer("admin", {"x", "http://h:1", kKeyA});
                       }),
                       "tcp://HOST:PORT"));
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->AddPeer("admin", {"x", "tcp://h:1", "short"});
                       }),
                       "Z85"));
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->AddPeer("admin", {"x", "tcp://h:1", kKeyA, {"9mm"}});
                       }),
                       "not a partition"));
  EXPECT_EQ(ex_->Peers().size(), 1u);
  EXPECT_EQ(ex_->PeerByKey(kKeyB)->id, b.id);
  EXPECT_FALSE(ex_->Peers()[0].state);
  ex_->SetPeerState(b.id, "silent");
  EXPECT_EQ(ex_->Peers()[0].state, "silent");
  EXPECT_THROW(ex_->SetPeerState(b.id, "asleep"), Error);
  EXPECT_FALSE(ex_->PeerByKey(kKeyA));
  ex_->Enqueue(b.id, {Id('a'), "hit_notice", "bytes", std::nullopt});
  EXPECT_EQ(ex_->Peers()[0].queue_depth, 1);
  ex_->RemovePeer("admin", "BA-sarajevo");
  EXPECT_TRUE(ex_->Peers().empty());
  EXPECT_TRUE(Contains(ErrorOf([&] { ex_->RemovePeer("admin", "BA-sarajevo"); }), "no peer"));
  const auto trail = ex_->store().AuditTrail(std::nullopt);
  ASSERT_EQ(trail.size(), audit + 2);
  EXPECT_EQ(trail[audit].action, "add_peer");
  EXPECT_EQ(trail[audit + 1].action, "remove_peer");
  EXPECT_TRUE(ex_->store().Verify().ok());
}

TEST_F(ExchangeStoreTest, OutboxBacksOffUntilAcknowledgedAndRequestsExpire) {
  const PeerRecord b = AddB();
  ex_->Enqueue(b.id, {Id('a'), "hit_notice", "one", std::nullopt});
  ex_->Enqueue(b.id, {Id('b'), "correlation_request", "two", 1000});
  auto due = ex_->DueOutbox(b.id, 500, 10);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].payload, "one");
  ex_->MarkAttempts({{due[0].row, 5000}, {due[1].row, 5000}});
  EXPECT_TRUE(ex_->DueOutbox(b.id, 4999, 10).empty());
  EXPECT_EQ(ex_->DueOutbox(b.id, 5000, 10).at(0).attempts, 1);
  ex_->ResetBackoff(b.id);  // the peer came back
  EXPECT_EQ(ex_->DueOutbox(b.id, 600, 10).size(), 2u);
  EXPECT_EQ(ex_->Acknowledge({{b.id, Id('a')}, {b.id, Id('a')}, {b.id, Id('c')}}), 1);
  EXPECT_EQ(ex_->ExpireOutbox(2000), 1);  // the request expired unsent
  EXPECT_TRUE(ex_->DueOutbox(b.id, 1'000'000, 10).empty());
  EXPECT_EQ(ex_->Peers()[0].queue_depth, 0);
  // Delivered and expired rows are kept for a while, then deleted.
  auto rows = [&] {
    sqlite3* db = nullptr;
    sqlite3_open((node_ / "bien.db").c_str(), &db);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox", -1, &st, nullptr);
    sqlite3_step(st);
    const int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  };
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  ex_->ExpireOutbox(now, 30);
  EXPECT_EQ(rows(), 2);
  ex_->ExpireOutbox(now + 31 * int64_t{86'400'000}, 30);
  EXPECT_EQ(rows(), 0);
}

TEST_F(ExchangeStoreTest, InboxDeduplicatesAndPendingRequestsSurviveReopening) {
  EXPECT_TRUE(ex_->AcceptOnce(Id('a'), kKeyB, "heartbeat"));
  EXPECT_FALSE(ex_->AcceptOnce(Id('a'), kKeyB, "heartbeat"));
  EXPECT_TRUE(ex_->AcceptRequest(Id('b'), kKeyB, "request bytes"));
  EXPECT_FALSE(ex_->AcceptRequest(Id('b'), kKeyB, "request bytes"));
  ex_ = ExchangeStore::Open(node_);
  const auto pending = ex_->PendingRequests();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].payload, "request bytes");
  const PeerRecord b = AddB();
  ex_->AnswerRequest(Id('b'), b.id, {Id('c'), "correlation_result", "answer", std::nullopt});
  ex_->AnswerRequest(Id('b'), b.id, {Id('d'), "correlation_result", "again", std::nullopt});
  EXPECT_TRUE(ex_->PendingRequests().empty());
  const auto due = ex_->DueOutbox(b.id, 1, 10);
  ASSERT_EQ(due.size(), 1u);  // answered once
  EXPECT_EQ(due[0].payload, "answer");
}

TEST_F(ExchangeStoreTest, AnswersAreRecordedOncePerPeerAndRequest) {
  const PeerRecord b = AddB();
  const int64_t id = AnsweredCandidate(b);
  FederatedAnswer a;
  a.status = "ok";
  // The same message again, another message from the same peer, an unknown request.
  EXPECT_FALSE(ex_->RecordAnswer(Id('3'), kKeyB, "BA-sarajevo", Id('1'), a, {}));
  EXPECT_FALSE(ex_->RecordAnswer(Id('4'), kKeyB, "BA-sarajevo", Id('1'), a, {}));
  EXPECT_FALSE(ex_->RecordAnswer(Id('5'), kKeyB, "BA-sarajevo", Id('9'), a, {}));
  EXPECT_EQ(ex_->Answers(Id('1')).size(), 1u);
  const RemoteCandidateRecord r = ex_->FindRemoteCandidate(id);
  EXPECT_EQ(r.Label(), "BA-7/E3");
  EXPECT_EQ(r.query.Label(), "2026-1/E1");
  EXPECT_EQ(r.candidate.fine_score, 50.5);
  EXPECT_EQ(r.status, "open");
}

TEST_F(ExchangeStoreTest, ConfirmingARemoteCandidateQueuesItsHitNoticeInTheSameTransaction) {
  const PeerRecord b = AddB();
  const int64_t id = AnsweredCandidate(b);
  const size_t outbox_before = ex_->DueOutbox(b.id, 1, 100).size();
  // A failure while building the notice changes nothing.
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->ConfirmRemoteCandidate(
                             id, "ana", "",
                             [](const RemoteCandidateRecord&, int64_t) -> OutgoingMessage {
                               throw Error("encoder failed");
                             });
                       }),
                       "encoder failed"));
  EXPECT_EQ(ex_->FindRemoteCandidate(id).status, "open");
  EXPECT_TRUE(ex_->store().Alerts().empty());
  EXPECT_EQ(ex_->DueOutbox(b.id, 1, 100).size(), outbox_before);

  std::string hit_seen;
  const ConfirmedRemote c = ex_->ConfirmRemoteCandidate(
      id, "ana", "same firearm", [&](const RemoteCandidateRecord& r, int64_t) {
        hit_seen = r.hit_id.value_or("");
        return OutgoingMessage{Id('e'), "hit_notice", "notice", std::nullopt};
      });
  EXPECT_EQ(c.candidate.status, "confirmed");
  EXPECT_EQ(c.candidate.hit_id, hit_seen);
  EXPECT_EQ(c.alert.origin, "local");
  EXPECT_EQ(c.alert.peer, "BA-sarajevo");
  EXPECT_TRUE(Contains(c.alert.summary, "BA-7/E3"));
  const auto due = ex_->DueOutbox(b.id, 1, 100);
  ASSERT_EQ(due.size(), outbox_before + 1);
  EXPECT_EQ(due.back().payload, "notice");
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->ConfirmRemoteCandidate(id, "ana", "", [](auto&, int64_t) {
                           return OutgoingMessage{Id('f'), "hit_notice", "x", std::nullopt};
                         });
                       }),
                       "already confirmed"));
  EXPECT_EQ(ex_->store().AuditTrail(std::nullopt).back().action, "confirm_remote_candidate");
  // The same remote exhibit found by a later search is not a second hit.
  ex_->StartFederatedSearch("alice", query_, Id('5'), 4102444800000, {});
  FederatedAnswer again;
  again.status = "ok";
  ASSERT_TRUE(ex_->RecordAnswer(Id('6'), kKeyB, "BA-sarajevo", Id('5'), again,
                                {{"BA-7", "E3", 1, 0.5, 49.0, 0.001, "cmc-v1"}}));
  const int64_t second = ex_->RemoteCandidates(Id('5')).at(0).id;
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         ex_->ConfirmRemoteCandidate(second, "ana", "", [](auto&, int64_t) {
                           return OutgoingMessage{Id('9'), "hit_notice", "x", std::nullopt};
                         });
                       }),
                       "already a confirmed hit (R" + std::to_string(id) + ")"));
  EXPECT_EQ(ex_->DueOutbox(b.id, 1, 100).size(), outbox_before + 1);
  EXPECT_TRUE(ex_->store().Verify().ok());
}

TEST_F(ExchangeStoreTest, AHitNoticeRaisesOneAlertHoweverOftenItArrives) {
  ReceivedHitNotice n;
  n.hit_id = Id('7');
  n.peer_name = "BA-sarajevo";
  n.their_case_ref = "BA-7";
  n.their_exhibit_ref = "E3";
  n.our_case_ref = "2026-1";
  n.our_exhibit_ref = "E1";
  n.confirmed_by = "Emina";
  n.confirmed_at = "2026-11-23T10:00:00.000Z";
  n.fine_score = 40;
  n.method = "cmc-v1";
  const auto alert = ex_->ReceiveHitNotice(Id('a'), kKeyB, n);
  ASSERT_TRUE(alert);
  EXPECT_EQ(alert->origin, "remote");
  EXPECT_EQ(alert->peer, "BA-sarajevo");
  EXPECT_TRUE(Contains(alert->payload_json, "\"exhibit_id\":1"));
  EXPECT_FALSE(ex_->ReceiveHitNotice(Id('a'), kKeyB, n));  // the same message again
  EXPECT_FALSE(ex_->ReceiveHitNotice(Id('b'), kKeyB, n));  // the same hit, a new message
  EXPECT_EQ(ex_->store().Alerts().size(), 1u);
  EXPECT_EQ(ex_->AlertsAfter(0).size(), 1u);
  EXPECT_TRUE(ex_->AlertsAfter(alert->id.value).empty());
}

TEST_F(ExchangeStoreTest, ABatchCommitsTogetherAndAFailedStepOnlyLosesItsOwnEffect) {
  const PeerRecord b = AddB();
  ex_->RunBatch([&] {
    EXPECT_TRUE(ex_->AcceptOnce(Id('a'), kKeyB, "hit_notice"));
    // A step that fails (a duplicate message id in the outbox) rolls back alone.
    ex_->Enqueue(b.id, {Id('b'), "hit_notice", "one", std::nullopt});
    EXPECT_THROW(ex_->Enqueue(b.id, {Id('b'), "hit_notice", "again", std::nullopt}), Error);
    EXPECT_TRUE(ex_->AcceptOnce(Id('c'), kKeyB, "hit_notice"));
  });
  EXPECT_TRUE(ex_->Seen(Id('a')));
  EXPECT_TRUE(ex_->Seen(Id('c')));
  EXPECT_EQ(ex_->DueOutbox(b.id, 1, 10).size(), 1u);
  // An exception out of the batch rolls all of it back.
  EXPECT_THROW(ex_->RunBatch([&] {
    ex_->AcceptOnce(Id('d'), kKeyB, "hit_notice");
    throw Error("disk full");
  }),
               Error);
  EXPECT_FALSE(ex_->Seen(Id('d')));
}

}  // namespace
}  // namespace bien

// `bien leads | confirm | reject | alerts` end to end, in-process, on leads
// recorded through the store as `bien search` records them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "storage/store.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

class LeadsCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = (dir_ / "node").string();
    const auto r = RunBien({"init", "--node", node_, "--name", "Lead node", "--country", "RS"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto store = Store::Open(node_);
    query_ = AddExhibit(*store, "2026-RS-1", "E1");
    match_ = AddExhibit(*store, "2025-RS-9", "T1");
    other_ = AddExhibit(*store, "2024-RS-3", "E2");
    const auto leads =
        store->RecordLeads("searcher", query_,
                           {LeadCandidate{match_, "cmc-v1", 23, 0.0004, 1, R"({"angle_deg":4.5})"},
                            LeadCandidate{other_, "cmc-v1", 3, std::nullopt, 7, ""}});
    ASSERT_EQ(leads.size(), 2u);
    match_lead_ = std::to_string(leads[0].lead.value);
    other_lead_ = std::to_string(leads[1].lead.value);
  }

  static ExhibitId AddExhibit(Store& store, const std::string& case_ref,
                              const std::string& exhibit_ref) {
    ExhibitSpec spec;
    spec.case_ref = case_ref;
    spec.exhibit_ref = exhibit_ref;
    spec.cc.calibre = "9mm Luger";
    const std::string text = "scan of " + case_ref + "/" + exhibit_ref;
    std::vector<std::byte> bytes;
    for (char c : text) bytes.push_back(static_cast<std::byte>(c));
    ScanMeta meta;
    meta.original_name = exhibit_ref + ".x3p";
    meta.format = "x3p";
    meta.width = meta.height = 8;
    meta.dx_m = meta.dy_m = 1e-6;
    const NewScan scan{meta, bytes};
    return store.AddScans("alice", spec, {&scan, 1})[0].exhibit;
  }

  TempDir dir_;
  std::string node_;
  ExhibitId query_, match_, other_;
  std::string match_lead_, other_lead_;
};

TEST_F(LeadsCliTest, ListConfirmRejectAndAlerts) {
  auto r = RunBien({"leads", "--node", node_});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* column : {"LEAD", "STATUS", "QUERY", "CANDIDATE", "SCORE", "STRENGTH", "CREATED",
                             "2026-RS-1/E1", "2025-RS-9/T1", "cmc-v1 23", "0.0004"}) {
    EXPECT_TRUE(Contains(r.out, column)) << r.out;
  }
  EXPECT_TRUE(Contains(r.out, "2 leads (2 open) in node 'Lead node'")) << r.out;

  r = RunBien({"leads", "--node", node_, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto list = nlohmann::json::parse(r.out);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["id"].get<int64_t>(), std::stoll(match_lead_));
  EXPECT_EQ(list[0]["status"], "open");
  EXPECT_EQ(list[0]["query"]["case"], "2026-RS-1");
  EXPECT_EQ(list[0]["candidate"]["exhibit"], "T1");
  EXPECT_EQ(list[0]["score"], 23.0);
  EXPECT_EQ(list[0]["strength"], 0.0004);
  EXPECT_EQ(list[0]["coarse_rank"], 1);
  EXPECT_EQ(list[0]["registration"]["angle_deg"], 4.5);
  EXPECT_TRUE(list[1]["strength"].is_null());
  EXPECT_TRUE(list[1]["decided_by"].is_null());

  r = RunBien({"confirm", "--node", node_, match_lead_, "--by", "Dr. Petrović", "--note",
               "breech-face marks agree"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "confirmed lead #" + match_lead_ + ": 2026-RS-1/E1 and 2025-RS-9/T1"))
      << r.out;
  EXPECT_TRUE(Contains(r.out, "hit #1: links case 2026-RS-1 and case 2025-RS-9")) << r.out;
  EXPECT_TRUE(Contains(r.out, "alert #1 (local): hit: 2026-RS-1/E1 and 2025-RS-9/T1")) << r.out;

  r = RunBien({"reject", "--node", node_, "#" + other_lead_, "--by", "Dr. Petrović", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto rejected = nlohmann::json::parse(r.out);
  EXPECT_EQ(rejected["status"], "rejected");
  EXPECT_EQ(rejected["decided_by"], "Dr. Petrović");
  EXPECT_TRUE(rejected["note"].is_null());

  r = RunBien({"leads", "--node", node_, "--open"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "0 open leads")) << r.out;
  r = RunBien({"leads", "--node", node_, "--json"});
  list = nlohmann::json::parse(r.out);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["status"], "confirmed");
  EXPECT_EQ(list[0]["note"], "breech-face marks agree");
  EXPECT_EQ(list[1]["status"], "rejected");

  r = RunBien({"alerts", "--node", node_});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "ALERT")) << r.out;
  EXPECT_TRUE(Contains(r.out, "confirmed by Dr. Petrović")) << r.out;
  EXPECT_TRUE(Contains(r.out, "1 alert in node 'Lead node'")) << r.out;
  r = RunBien({"alerts", "--node", node_, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto alerts = nlohmann::json::parse(r.out);
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0]["origin"], "local");
  EXPECT_EQ(alerts[0]["hit"], 1);
  EXPECT_EQ(alerts[0]["payload"]["a"]["case"], "2026-RS-1");
  EXPECT_EQ(alerts[0]["payload"]["b"]["case"], "2025-RS-9");
  EXPECT_EQ(alerts[0]["payload"]["confirmed_by"], "Dr. Petrović");
  EXPECT_EQ(alerts[0]["payload"]["score"], 23.0);
  EXPECT_TRUE(alerts[0]["delivered_at"].is_null());

  // The decisions are in the audit trail and the node verifies.
  auto store = Store::Open(node_);
  const auto audit = store->AuditTrail(std::nullopt);
  EXPECT_EQ(audit[audit.size() - 2].action, "confirm_lead");
  EXPECT_EQ(audit.back().action, "reject_lead");
  EXPECT_EQ(audit.back().actor, "Dr. Petrović");
  EXPECT_EQ(RunBien({"verify", "--node", node_}).code, 0);
}

TEST_F(LeadsCliTest, ConfirmJsonIsParseable) {
  const auto r = RunBien({"confirm", "--node", node_, match_lead_, "--by", "alice", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["lead"]["status"], "confirmed");
  EXPECT_EQ(j["hit"]["lead"].get<int64_t>(), std::stoll(match_lead_));
  EXPECT_EQ(j["hit"]["a"]["exhibit"], "E1");
  EXPECT_EQ(j["hit"]["b"]["exhibit"], "T1");
  EXPECT_EQ(j["alert"]["hit"], j["hit"]["id"]);
  EXPECT_EQ(j["alert"]["payload"]["lead"].get<int64_t>(), std::stoll(match_lead_));
}

TEST_F(LeadsCliTest, ErrorsNameTheLeadAndChangeNothing) {
  ASSERT_EQ(RunBien({"confirm", "--node", node_, match_lead_, "--by", "alice"}).code, 0);
  const StoreCounts before = CountsOf(node_);

  auto r = RunBien({"confirm", "--node", node_, match_lead_, "--by", "bob"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "lead " + match_lead_ +
                                  " (2026-RS-1/E1 and 2025-RS-9/T1) is confirmed, not open: "
                                  "decided by alice"))
      << r.err;
  r = RunBien({"reject", "--node", node_, match_lead_, "--by", "bob"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "is confirmed, not open")) << r.err;

  r = RunBien({"confirm", "--node", node_, "99", "--by", "bob"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no lead 99 in the store")) << r.err;
  r = RunBien({"reject", "--node", node_, "#99", "--by", "bob"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no lead 99 in the store")) << r.err;
  for (const char* bad : {"abc", "#", "0", "-3", "7x"}) {
    r = RunBien({"confirm", "--node", node_, bad, "--by", "bob"});
    EXPECT_EQ(r.code, 1) << bad;
    EXPECT_TRUE(Contains(r.err, std::string("'") + bad + "' is not a lead number")) << r.err;
  }

  r = RunBien({"confirm", "--node", node_, other_lead_});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "--by")) << r.err;
  r = RunBien({"reject", "--node", node_, other_lead_});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "--by")) << r.err;
  r = RunBien({"confirm", "--node", node_, "--by", "bob"});
  EXPECT_EQ(r.code, 2);
  r = RunBien({"confirm", "--node", node_, other_lead_, "--by", ""});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "the confirming expert (by) is empty")) << r.err;
  r = RunBien({"reject", "--node", node_, other_lead_, "--by", " "});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "the rejecting expert (by) is empty")) << r.err;

  const StoreCounts after = CountsOf(node_);
  EXPECT_EQ(after.leads, before.leads);
  EXPECT_EQ(after.hits, before.hits);
  EXPECT_EQ(after.alerts, before.alerts);
  EXPECT_EQ(after.audit, before.audit);
  EXPECT_EQ(Store::Open(node_)->FindLead(LeadId(std::stoll(other_lead_))).status,
            LeadStatus::kOpen);

  // Without a node folder.
  r = RunBien({"leads"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "no node folder given")) << r.err;
}

TEST_F(LeadsCliTest, EmptyNodeListsNothing) {
  const std::string empty = (dir_ / "empty").string();
  ASSERT_EQ(RunBien({"init", "--node", empty}).code, 0);
  auto r = RunBien({"alerts", "--node", empty, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::array());
  r = RunBien({"leads", "--node", empty});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "0 leads (0 open)")) << r.out;
}

}  // namespace
}  // namespace bien::testing

// The evidence store: node folders, schema and migrations, all-or-nothing
// ingest, duplicates, class characteristics, the audit chain and Verify.
#include "storage/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "storage/exchange_store.h"
#include "tests/test_util.h"

namespace bien {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::TempDir;

// Runs `f`, expecting a bien::Error whose message contains `text`.
template <typename F>
void ExpectError(F&& f, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing: " << text;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
        << "expected '" << text << "' in: " << e.what();
  }
}

// A second, raw connection to a node's database, for tampering.
class RawDb {
 public:
  explicit RawDb(const fs::path& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  // Returns "" on success, else SQLite's message.
  std::string Exec(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) == SQLITE_OK) return "";
    std::string text = message ? message : "failed";
    sqlite3_free(message);
    return text;
  }
  std::string Text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db_);
    std::string out;
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0)) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

std::vector<std::byte> Bytes(const std::string& text) {
  std::vector<std::byte> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<std::byte>(text[i]);
  return out;
}

ScanMeta Meta(const std::string& name) {
  ScanMeta m;
  m.original_name = name;
  m.format = "x3p";
  m.width = 640;
  m.height = 480;
  m.dx_m = 1.5625e-6;
  m.dy_m = 1.5625e-6;
  m.nan_share = 0.25;
  return m;
}

ExhibitSpec Spec(const std::string& case_ref, const std::string& exhibit_ref,
                 ExhibitKind kind = ExhibitKind::kCartridgeCase) {
  ExhibitSpec s;
  s.case_ref = case_ref;
  s.exhibit_ref = exhibit_ref;
  s.kind = kind;
  return s;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = tmp_ / "node";
    Store::Create(node_, NodeConfig{"Test lab", "RS", "", ""}, "alice");
    store_ = Store::Open(node_);
  }

  // Adds scans with the given contents (names "<content>.x3p").
  std::vector<AddResult> Add(const ExhibitSpec& spec, const std::vector<std::string>& contents,
                             std::vector<ScanMeta> metas = {}) {
    std::vector<std::vector<std::byte>> bytes;
    for (const auto& c : contents) bytes.push_back(Bytes(c));
    std::vector<NewScan> scans;
    for (size_t i = 0; i < contents.size(); ++i) {
      scans.push_back(NewScan{i < metas.size() ? metas[i] : Meta(contents[i] + ".x3p"), bytes[i]});
    }
    return store_->AddScans("alice", spec, scans);
  }

  fs::path Db() const { return node_ / "bien.db"; }

  TempDir tmp_;
  fs::path node_;
  std::unique_ptr<Store> store_;
};

void ExpectSameCounts(const StoreCounts& a, const StoreCounts& b) {
  EXPECT_EQ(a.cases, b.cases);
  EXPECT_EQ(a.exhibits, b.exhibits);
  EXPECT_EQ(a.scans, b.scans);
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.audit, b.audit);
  EXPECT_EQ(a.descriptors, b.descriptors);
  EXPECT_EQ(a.leads, b.leads);
  EXPECT_EQ(a.hits, b.hits);
  EXPECT_EQ(a.alerts, b.alerts);
}

bool IsHex(const std::string& s) {
  return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// ---------------------------------------------------------------------------

TEST(StoreEnums, RoundTrip) {
  for (auto k : {ExhibitKind::kCartridgeCase, ExhibitKind::kBullet}) {
    EXPECT_EQ(ParseExhibitKind(ToString(k)), k);
  }
  for (auto r : {ExhibitRole::kEvidence, ExhibitRole::kTestFire}) {
    EXPECT_EQ(ParseExhibitRole(ToString(r)), r);
  }
  for (auto t : {Twist::kLeft, Twist::kRight}) EXPECT_EQ(ParseTwist(ToString(t)), t);
  EXPECT_FALSE(ParseExhibitKind("cartridge"));
  EXPECT_FALSE(ParseExhibitRole(""));
  EXPECT_FALSE(ParseTwist("Left"));
}

TEST_F(StoreTest, CreateThenOpen) {
  const NodeConfig& c = store_->config();
  EXPECT_EQ(c.name, "Test lab");
  EXPECT_EQ(c.country, "RS");
  EXPECT_EQ(c.node_id.size(), 32u);
  EXPECT_TRUE(IsHex(c.node_id)) << c.node_id;
  EXPECT_FALSE(c.created_at.empty());
  EXPECT_EQ(store_->dir(), node_);
  EXPECT_TRUE(fs::is_regular_file(node_ / "node.toml"));
  EXPECT_TRUE(fs::is_regular_file(node_ / "bien.db"));
  EXPECT_TRUE(fs::is_directory(node_ / "objects" / "tmp"));
  EXPECT_GE(Store::SchemaVersion(), 1);

  const StoreCounts counts = store_->Counts();
  EXPECT_EQ(counts.cases, 0);
  EXPECT_EQ(counts.exhibits, 0);
  EXPECT_EQ(counts.scans, 0);
  EXPECT_EQ(counts.audit, 1);
  const auto audit = store_->AuditTrail(std::nullopt);
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0].seq, 1);
  EXPECT_EQ(audit[0].action, "init");
  EXPECT_EQ(audit[0].actor, "alice");
  EXPECT_EQ(audit[0].prev_hash, std::string(64, '0'));
  EXPECT_NE(audit[0].details.find(c.node_id), std::string::npos) << audit[0].details;

  // A second node gets another id; reopening reads the same config.
  Store::Create(tmp_ / "other", NodeConfig{"Other", "BA", "", ""}, "bob");
  EXPECT_NE(Store::Open(tmp_ / "other")->config().node_id, c.node_id);
  const auto again = Store::Open(node_);
  EXPECT_EQ(again->config().node_id, c.node_id);
  EXPECT_EQ(again->config().created_at, c.created_at);
  EXPECT_TRUE(again->Verify().ok());
}

TEST_F(StoreTest, NodeTomlQuotesOddNames) {
  const fs::path dir = tmp_ / "odd";
  Store::Create(dir, NodeConfig{"Lab \"Q\" \\ Ž", "DE", "", ""}, "alice");
  EXPECT_EQ(Store::Open(dir)->config().name, "Lab \"Q\" \\ Ž");
}

TEST_F(StoreTest, CreateRefusesNonEmptyFolderAndBadConfig) {
  ExpectError(
      [&] {
        Store::Create(node_, NodeConfig{"x", "RS", "", ""}, "a");
      },
      node_.string() + ": already holds a bien node");
  const fs::path busy = tmp_ / "busy";
  fs::create_directories(busy);
  std::ofstream(busy / "notes.txt") << "mine";
  ExpectError(
      [&] {
        Store::Create(busy, NodeConfig{"x", "RS", "", ""}, "a");
      },
      busy.string() + ": folder is not empty");
  EXPECT_TRUE(fs::exists(busy / "notes.txt"));

  const fs::path fresh = tmp_ / "fresh";
  for (const char* country : {"rs", "R", "RSX", "R1", ""}) {
    ExpectError([&] { Store::Create(fresh, NodeConfig{"x", country, "", ""}, "a"); }, "country");
  }
  ExpectError([&] { Store::Create(fresh, NodeConfig{"", "RS", "", ""}, "a"); }, "name");
  EXPECT_FALSE(fs::exists(fresh)) << "a refused create leaves nothing behind";

  // An existing empty folder is fine.
  const fs::path empty = tmp_ / "empty";
  fs::create_directories(empty);
  Store::Create(empty, NodeConfig{"x", "RS", "", ""}, "a");
  EXPECT_EQ(Store::Open(empty)->Counts().audit, 1);
}

TEST_F(StoreTest, OpenErrors) {
  const fs::path missing = tmp_ / "nowhere";
  ExpectError([&] { Store::Open(missing); },
              missing.string() + ": no such node folder (create one with `bien init`)");

  const fs::path plain = tmp_ / "plain";
  fs::create_directories(plain);
  std::ofstream(plain / "file.txt") << "x";
  ExpectError([&] { Store::Open(plain); }, plain.string() + ": not a bien node (no node.toml)");

  const fs::path no_db = tmp_ / "no-db";
  fs::create_directories(no_db);
  fs::copy_file(node_ / "node.toml", no_db / "node.toml");
  ExpectError([&] { Store::Open(no_db); }, no_db.string() + ": not a bien node (no bien.db)");

  // Garbage where the database should be: the error names the file.
  const fs::path corrupt = tmp_ / "corrupt";
  fs::create_directories(corrupt);
  fs::copy_file(node_ / "node.toml", corrupt / "node.toml");
  std::ofstream(corrupt / "bien.db") << std::string(4096, 'z');
  ExpectError(
      [&] { Store::Open(corrupt); },
      (corrupt / "bien.db").string() + ": not a usable bien database (file is not a database)");

  // A node.toml without the fields.
  const fs::path bad_toml = tmp_ / "bad-toml";
  fs::create_directories(bad_toml);
  std::ofstream(bad_toml / "node.toml") << "name = \"x\"\n";
  std::ofstream(bad_toml / "bien.db");
  ExpectError([&] { Store::Open(bad_toml); }, (bad_toml / "node.toml").string());
}

TEST_F(StoreTest, OpenRefusesNewerSchema) {
  store_.reset();
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("PRAGMA user_version = 99"), "");
  }
  ExpectError([&] { Store::Open(node_); },
              Db().string() +
                  ": created by a newer bien (schema version 99; this build knows up to " +
                  std::to_string(Store::SchemaVersion()) + ")");
  // Refusing changed nothing.
  RawDb raw(Db());
  EXPECT_EQ(raw.Text("PRAGMA user_version"), "99");
}

TEST_F(StoreTest, MigratesAnEmptyVersionZeroDatabase) {
  store_.reset();
  for (const char* f : {"bien.db", "bien.db-wal", "bien.db-shm"}) fs::remove(node_ / f);
  {
    RawDb raw(Db());  // creates an empty database at user_version 0
    ASSERT_EQ(raw.Exec("PRAGMA user_version = 0"), "");
    EXPECT_EQ(raw.Text("SELECT count(*) FROM sqlite_schema"), "0");
  }
  auto store = Store::Open(node_);
  RawDb raw(Db());
  EXPECT_EQ(raw.Text("PRAGMA user_version"), std::to_string(Store::SchemaVersion()));
  for (const char* table : {"cases", "exhibits", "scans", "features", "audit", "knm_scores",
                            "descriptors", "leads", "hits", "alerts"}) {
    EXPECT_EQ(raw.Text(std::string("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
                                   "name = '") +
                       table + "'"),
              "1")
        << table;
  }
  EXPECT_EQ(raw.Text("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"), "2");
  // The migrated store works.
  auto bytes = Bytes("scan");
  const NewScan scan{Meta("a.x3p"), bytes};
  EXPECT_EQ(store->AddScans("alice", Spec("C", "E"), {&scan, 1})[0].status, AddStatus::kAdded);
  EXPECT_TRUE(store->Verify().ok());
  // Opening again does not migrate twice.
  EXPECT_EQ(Store::Open(node_)->Counts().scans, 1);
}

TEST_F(StoreTest, WalModeAndForeignKeys) {
  RawDb raw(Db());
  EXPECT_EQ(raw.Text("PRAGMA journal_mode"), "wal");
  // The store's own connection enforces foreign keys: an audit row about an
  // exhibit that does not exist is refused.
  const StoreCounts before = store_->Counts();
  ExpectError([&] { store_->RecordAudit("alice", "export", "x", ExhibitId(999), "{}"); },
              "FOREIGN KEY constraint failed");
  ExpectSameCounts(store_->Counts(), before);
}

TEST_F(StoreTest, AddScansStoresRowsObjectsAndAudit) {
  ExhibitSpec spec = Spec("2026-1", "E1");
  spec.role = ExhibitRole::kTestFire;
  spec.cc.calibre = "9mm Luger";
  spec.cc.firing_pin = "circular";
  ScanMeta first = Meta("Fadul 1-1.x3p");
  first.instrument = "Sensofar S neox";
  first.measured_at = "2024-01-02T03:04:05Z";
  first.creator = "lab";
  first.comment = "first, \"quoted\"\nline";
  first.land = 3;
  first.intensity = true;
  ScanMeta second = Meta("second.png");
  second.format = "png";
  const std::string a(5000, 'a');
  const std::string b = "second file";
  const auto results = Add(spec, {a, b}, {first, second});

  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status, AddStatus::kAdded);
    EXPECT_TRUE(r.detail.empty());
  }
  EXPECT_EQ(results[0].sha256, Sha256Hex(std::string_view(a)));
  EXPECT_EQ(results[1].sha256, Sha256Hex(std::string_view(b)));
  EXPECT_EQ(results[0].exhibit, results[1].exhibit);
  EXPECT_NE(results[0].scan, results[1].scan);

  const StoreCounts counts = store_->Counts();
  EXPECT_EQ(counts.cases, 1);
  EXPECT_EQ(counts.exhibits, 1);
  EXPECT_EQ(counts.scans, 2);
  EXPECT_EQ(counts.audit, 4);  // init, add_exhibit, 2 x add_scan

  const ExhibitRecord e = store_->FindExhibit("2026-1/E1");
  EXPECT_EQ(e.id, results[0].exhibit);
  EXPECT_EQ(e.kind, ExhibitKind::kCartridgeCase);
  EXPECT_EQ(e.role, ExhibitRole::kTestFire);
  EXPECT_EQ(e.cc.calibre, "9mm Luger");
  EXPECT_EQ(e.cc.firing_pin, "circular");
  EXPECT_FALSE(e.cc.breech_face);
  EXPECT_FALSE(e.cc.lands);
  EXPECT_FALSE(e.cc.twist);
  EXPECT_EQ(e.scan_count, 2);
  ASSERT_EQ(store_->ListExhibits().size(), 1u);

  const auto scans = store_->ScansOf(e.id);
  ASSERT_EQ(scans.size(), 2u);
  EXPECT_EQ(scans[0].id, results[0].scan);
  EXPECT_EQ(scans[0].size_bytes, 5000);
  EXPECT_EQ(scans[0].meta.original_name, "Fadul 1-1.x3p");
  EXPECT_EQ(scans[0].meta.width, 640);
  EXPECT_DOUBLE_EQ(scans[0].meta.dx_m, 1.5625e-6);
  EXPECT_DOUBLE_EQ(scans[0].meta.nan_share, 0.25);
  EXPECT_TRUE(scans[0].meta.intensity);
  EXPECT_EQ(scans[0].meta.land, 3);
  EXPECT_EQ(scans[0].meta.instrument, "Sensofar S neox");
  EXPECT_EQ(scans[0].meta.comment, first.comment);
  EXPECT_EQ(scans[1].meta.format, "png");
  EXPECT_FALSE(scans[1].meta.land);
  EXPECT_TRUE(scans[1].meta.instrument.empty());
  EXPECT_EQ(store_->AllScans().size(), 2u);
  {
    RawDb raw(Db());  // unknown = NULL, not ''
    EXPECT_EQ(raw.Text("SELECT count(*) FROM scans WHERE instrument IS NULL"), "1");
  }

  // Originals: byte-identical, content-addressed, read-only.
  for (size_t i = 0; i < 2; ++i) {
    const fs::path object = store_->ObjectPath(results[i].sha256);
    EXPECT_EQ(object,
              node_ / "objects" / results[i].sha256.substr(0, 2) / results[i].sha256.substr(2));
    EXPECT_EQ(testing::ReadBytes(object), Bytes(i == 0 ? a : b));
    struct stat st {};
    ASSERT_EQ(::stat(object.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0444u);
  }
  EXPECT_TRUE(fs::is_empty(node_ / "objects" / "tmp"));

  // Audit: exhibit then scans, chained, about the exhibit.
  const auto trail = store_->AuditTrail(e.id);
  ASSERT_EQ(trail.size(), 3u);
  EXPECT_EQ(trail[0].action, "add_exhibit");
  EXPECT_EQ(trail[0].subject, "exhibit 2026-1/E1");
  EXPECT_EQ(trail[0].exhibit, e.id);
  EXPECT_EQ(trail[1].action, "add_scan");
  EXPECT_EQ(trail[1].subject,
            "scan " + std::to_string(results[0].scan.value) + " of exhibit 2026-1/E1");
  EXPECT_EQ(trail[1].sha256, results[0].sha256);
  EXPECT_NE(trail[1].details.find("\"original_name\":\"Fadul 1-1.x3p\""), std::string::npos)
      << trail[1].details;
  EXPECT_NE(trail[1].details.find("\"width\":640"), std::string::npos) << trail[1].details;
  EXPECT_EQ(trail[2].prev_hash, trail[1].row_hash);
  EXPECT_EQ(trail[1].prev_hash, trail[0].row_hash);
  {
    RawDb raw(Db());
    EXPECT_EQ(raw.Text("SELECT count(*) FROM audit WHERE NOT json_valid(details)"), "0");
  }
  const VerifyReport report = store_->Verify();
  EXPECT_TRUE(report.ok()) << report.problems[0];
  EXPECT_EQ(report.objects_checked, 2);
  EXPECT_EQ(report.audit_rows_checked, 4);
}

TEST_F(StoreTest, AuditRowHashFollowsTheDocumentedFormula) {
  Add(Spec("2026-1", "E1"), {"x"});
  std::string prev(64, '0');
  for (const auto& a : store_->AuditTrail(std::nullopt)) {
    const std::string text = std::to_string(a.seq) + "\n" + a.at + "\n" + a.actor + "\n" +
                             a.action + "\n" + a.subject + "\n" +
                             (a.exhibit ? std::to_string(a.exhibit->value) : "") + "\n" +
                             a.sha256.value_or("") + "\n" + a.details + "\n" + a.prev_hash;
    EXPECT_EQ(a.prev_hash, prev);
    EXPECT_EQ(a.row_hash, Sha256Hex(std::string_view(text))) << "row " << a.seq;
    prev = a.row_hash;
  }
}

TEST_F(StoreTest, DuplicatesAreIdempotent) {
  const auto first = Add(Spec("2026-1", "E1"), {"one", "two"});
  const StoreCounts before = store_->Counts();

  const auto again = Add(Spec("2026-1", "E1"), {"one", "two"});
  ASSERT_EQ(again.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again[i].status, AddStatus::kDuplicate);
    EXPECT_EQ(again[i].scan, first[i].scan);
    EXPECT_EQ(again[i].sha256, first[i].sha256);
    EXPECT_EQ(again[i].detail, "already stored as scan " + std::to_string(first[i].scan.value) +
                                   " of exhibit 2026-1/E1");
  }
  ExpectSameCounts(store_->Counts(), before);

  // Already stored under another exhibit: reported where, and the new
  // exhibit and case are not created for nothing.
  const auto elsewhere = Add(Spec("2026-9", "E7"), {"one"});
  EXPECT_EQ(elsewhere[0].status, AddStatus::kDuplicate);
  EXPECT_EQ(elsewhere[0].detail, "already stored as scan " + std::to_string(first[0].scan.value) +
                                     " of exhibit 2026-1/E1");
  ExpectSameCounts(store_->Counts(), before);
  ExpectError([&] { store_->FindExhibit("2026-9/E7"); }, "no exhibit matches");

  // The same file twice in one call: the second is a duplicate of the first.
  const auto twice = Add(Spec("2026-1", "E2"), {"three", "three", "one"});
  ASSERT_EQ(twice.size(), 3u);
  EXPECT_EQ(twice[0].status, AddStatus::kAdded);
  EXPECT_EQ(twice[1].status, AddStatus::kDuplicate);
  EXPECT_EQ(twice[1].scan, twice[0].scan);
  EXPECT_EQ(twice[1].detail, "already stored as scan " + std::to_string(twice[0].scan.value) +
                                 " of exhibit 2026-1/E2");
  EXPECT_EQ(twice[2].status, AddStatus::kDuplicate);
  EXPECT_EQ(store_->Counts().scans, before.scans + 1);
  EXPECT_TRUE(store_->Verify().ok());
}

TEST_F(StoreTest, ConflictingKindOrRoleFailsAndChangesNothing) {
  Add(Spec("CASE", "EX"), {"cc"});
  const StoreCounts before = store_->Counts();
  ExpectError([&] { Add(Spec("CASE", "EX", ExhibitKind::kBullet), {"new bytes"}); },
              "exhibit CASE/EX is recorded as cartridge_case, not bullet");
  ExhibitSpec test_fire = Spec("CASE", "EX");
  test_fire.role = ExhibitRole::kTestFire;
  ExpectError([&] { Add(test_fire, {"new bytes"}); },
              "exhibit CASE/EX is recorded as evidence, not test_fire");
  ExpectSameCounts(store_->Counts(), before);
  // The same file under the right kind goes in: nothing was half-stored.
  EXPECT_EQ(Add(Spec("CASE", "EX"), {"new bytes"})[0].status, AddStatus::kAdded);
}

TEST_F(StoreTest, ClassCharacteristicsFillInAndConflict) {
  ExhibitSpec spec = Spec("2026-B", "B1", ExhibitKind::kBullet);
  spec.cc.calibre = "9mm Luger";
  Add(spec, {"land 1"});
  ExhibitRecord e = store_->FindExhibit("B1");
  EXPECT_FALSE(e.cc.lands);

  // Unknown characteristics are filled in and audited; known ones repeated are fine.
  spec.cc.lands = 6;
  spec.cc.twist = Twist::kRight;
  Add(spec, {"land 2"});
  e = store_->FindExhibit("B1");
  EXPECT_EQ(e.cc.calibre, "9mm Luger");
  EXPECT_EQ(e.cc.lands, 6);
  EXPECT_EQ(e.cc.twist, Twist::kRight);
  const auto trail = store_->AuditTrail(e.id);
  const auto update = std::find_if(trail.begin(), trail.end(), [](const AuditRecord& a) {
    return a.action == "update_exhibit";
  });
  ASSERT_NE(update, trail.end());
  EXPECT_NE(update->details.find("\"lands\":6"), std::string::npos) << update->details;
  EXPECT_NE(update->details.find("\"twist\":\"right\""), std::string::npos) << update->details;
  EXPECT_EQ(update->details.find("calibre"), std::string::npos) << update->details;

  // Re-adding with the same characteristics records no update.
  const StoreCounts before = store_->Counts();
  Add(spec, {"land 2"});
  ExpectSameCounts(store_->Counts(), before);

  // A known characteristic that conflicts: refused, naming field and values.
  ExhibitSpec other = spec;
  other.cc.calibre = ".45 ACP";
  ExpectError([&] { Add(other, {"land 3"}); },
              "exhibit 2026-B/B1 is recorded with calibre '9mm Luger', not '.45 ACP'");
  other = spec;
  other.cc.lands = 5;
  ExpectError([&] { Add(other, {"land 3"}); }, "exhibit 2026-B/B1 is recorded with lands 6, not 5");
  other = spec;
  other.cc.twist = Twist::kLeft;
  ExpectError([&] { Add(other, {"land 3"}); }, "twist 'right', not 'left'");
  ExpectSameCounts(store_->Counts(), before);

  // Out-of-range lands are refused before anything happens.
  other = Spec("2026-B", "B2", ExhibitKind::kBullet);
  other.cc.lands = 65;
  ExpectError([&] { Add(other, {"land 9"}); }, "lands 65 is out of range");
  ExpectSameCounts(store_->Counts(), before);
}

TEST_F(StoreTest, BatchIsAllOrNothing) {
  Add(Spec("2026-1", "E0"), {"earlier"});
  const StoreCounts before = store_->Counts();
  const auto trail_before = store_->AuditTrail(std::nullopt);

  // The second scan's land violates the range: the first, already inserted in
  // the transaction, is rolled back with it, and so are the new case and exhibit.
  ScanMeta bad = Meta("bad.x3p");
  bad.land = 0;
  ExpectError(
      [&] {
        Add(Spec("2026-2", "E1"), {"good", "bad"}, {Meta("good.x3p"), bad});
      },
      "bad.x3p: land 0 is out of range");
  ExpectSameCounts(store_->Counts(), before);

  // A value only the database CHECKs (width 0), into an existing exhibit.
  ScanMeta zero = Meta("zero.x3p");
  zero.width = 0;
  ExpectError(
      [&] {
        Add(Spec("2026-1", "E0"), {"good", "zero"}, {Meta("good.x3p"), zero});
      },
      "zero.x3p: cannot be recorded");
  ExpectSameCounts(store_->Counts(), before);
  EXPECT_EQ(store_->AuditTrail(std::nullopt).size(), trail_before.size());
  ExpectError([&] { store_->FindExhibit("2026-2/E1"); }, "no exhibit matches");
  EXPECT_EQ(store_->FindExhibit("2026-1/E0").scan_count, 1);

  // The good file was not recorded: it goes in now as new.
  EXPECT_EQ(Add(Spec("2026-2", "E1"), {"good"})[0].status, AddStatus::kAdded);
  EXPECT_TRUE(store_->Verify().ok());
}

TEST_F(StoreTest, RejectsBadReferences) {
  const StoreCounts before = store_->Counts();
  ExpectError([&] { Add(Spec("", "E1"), {"x"}); }, "case reference is empty");
  ExpectError([&] { Add(Spec("C", ""), {"x"}); }, "exhibit reference is empty");
  ExpectError([&] { Add(Spec("C\n1", "E1"), {"x"}); }, "control character");
  ExpectError([&] { Add(Spec("C", std::string(129, 'e')), {"x"}); }, "longer than 128");
  ExpectError([&] { Add(Spec("C", "#5"), {"x"}); }, "must not begin with '#'");
  ExpectError([&] { Add(Spec(" C", "E1"), {"x"}); }, "blank");
  ExpectError([&] { store_->AddScans("", Spec("C", "E1"), {}); }, "actor");
  ExpectSameCounts(store_->Counts(), before);
  // 128 characters of UTF-8 are fine.
  std::string long_ref;
  for (int i = 0; i < 128; ++i) long_ref += "Ž";
  EXPECT_EQ(Add(Spec("C", long_ref), {"x"})[0].status, AddStatus::kAdded);
}

TEST_F(StoreTest, AuditLogIsAppendOnly) {
  Add(Spec("2026-1", "E1"), {"x"});
  store_.reset();
  RawDb raw(Db());
  EXPECT_NE(
      raw.Exec("UPDATE audit SET actor = 'mallory' WHERE seq = 2").find("audit log is append-only"),
      std::string::npos);
  EXPECT_NE(raw.Exec("DELETE FROM audit WHERE seq = 3").find("audit log is append-only"),
            std::string::npos);
  EXPECT_EQ(raw.Text("SELECT actor FROM audit WHERE seq = 2"), "alice");
  EXPECT_EQ(raw.Text("SELECT count(*) FROM audit"), "3");
}

TEST_F(StoreTest, RecordAuditAndTrailFilter) {
  const auto added = Add(Spec("2026-1", "E1"), {"x"});
  Add(Spec("2026-1", "E2"), {"y"});
  store_->RecordAudit("bob", "export", "exhibit 2026-1/E1", added[0].exhibit, "{\"files\":1}");
  store_->RecordAudit("bob", "note", "node", std::nullopt, "");
  const auto trail = store_->AuditTrail(added[0].exhibit);
  ASSERT_EQ(trail.size(), 3u);
  EXPECT_EQ(trail.back().action, "export");
  EXPECT_EQ(trail.back().actor, "bob");
  EXPECT_EQ(trail.back().details, "{\"files\":1}");
  for (const auto& a : trail) EXPECT_EQ(a.exhibit, added[0].exhibit);
  const auto all = store_->AuditTrail(std::nullopt);
  EXPECT_EQ(all.size(), 7u);
  EXPECT_EQ(all.back().details, "{}");
  EXPECT_FALSE(all.back().exhibit);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq, static_cast<int64_t>(i + 1));

  const StoreCounts before = store_->Counts();
  ExpectError([&] { store_->RecordAudit("bob", "export", "x", std::nullopt, "not json"); },
              "audit details are not a JSON object");
  ExpectError([&] { store_->RecordAudit("bob", "export", "x", std::nullopt, "[1]"); },
              "audit details are not a JSON object");
  ExpectError([&] { store_->RecordAudit("bob", "", "x", std::nullopt, "{}"); }, "action");
  ExpectSameCounts(store_->Counts(), before);
  EXPECT_TRUE(store_->Verify().ok());
}

TEST_F(StoreTest, FindExhibitForms) {
  const auto a = Add(Spec("2026-1", "E1"), {"a"});
  const auto b = Add(Spec("2026-2", "E1"), {"b"});
  const auto c = Add(Spec("2026-2", "E2"), {"c"});
  const auto d = Add(Spec("LAB/2026/7", "K/1"), {"d"});

  EXPECT_EQ(store_->FindExhibit("2026-1/E1").id, a[0].exhibit);
  EXPECT_EQ(store_->FindExhibit("2026-2/E1").id, b[0].exhibit);
  EXPECT_EQ(store_->FindExhibit("E2").id, c[0].exhibit);
  EXPECT_EQ(store_->FindExhibit("#" + std::to_string(b[0].exhibit.value)).id, b[0].exhibit);
  EXPECT_EQ(store_->FindExhibit("LAB/2026/7/K/1").id, d[0].exhibit);
  EXPECT_EQ(store_->FindExhibit("K/1").id, d[0].exhibit);
  const ExhibitRecord r = store_->FindExhibit("2026-2/E2");
  EXPECT_EQ(r.case_ref, "2026-2");
  EXPECT_EQ(r.exhibit_ref, "E2");
  EXPECT_EQ(r.scan_count, 1);

  ExpectError([&] { store_->FindExhibit("E1"); },
              "'E1' is ambiguous: matches 2026-1/E1, 2026-2/E1 (use CASE/EXHIBIT)");
  ExpectError([&] { store_->FindExhibit("E9"); }, "no exhibit matches 'E9'");
  ExpectError([&] { store_->FindExhibit("2026-3/E1"); }, "no exhibit matches '2026-3/E1'");
  ExpectError([&] { store_->FindExhibit("#999"); }, "no exhibit matches '#999'");
  ExpectError([&] { store_->FindExhibit(""); }, "no exhibit matches ''");
}

TEST_F(StoreTest, FeaturesPutGetUpsert) {
  const auto added = Add(Spec("2026-1", "E1"), {"x", "y"});
  const ScanId s1 = added[0].scan;
  const ScanId s2 = added[1].scan;
  EXPECT_FALSE(store_->GetFeature(s1, "ccf", 1));

  const auto v1 = Bytes(std::string("\0\1\2\3", 4));
  const auto v2 = Bytes("second version");
  store_->PutFeature(s1, "ccf", 1, v1);
  store_->PutFeature(s1, "ccf", 2, v2);
  store_->PutFeature(s2, "ccf", 1, std::vector<std::byte>{});
  EXPECT_EQ(store_->GetFeature(s1, "ccf", 1), v1);
  EXPECT_EQ(store_->GetFeature(s1, "ccf", 2), v2);
  const auto empty = store_->GetFeature(s2, "ccf", 1);
  ASSERT_TRUE(empty) << "an empty blob is stored, not NULL";
  EXPECT_TRUE(empty->empty());
  EXPECT_FALSE(store_->GetFeature(s1, "other", 1));
  EXPECT_EQ(store_->Counts().features, 3);

  // Same (scan, kind, version): replaced, not added.
  store_->PutFeature(s1, "ccf", 1, v2);
  EXPECT_EQ(store_->GetFeature(s1, "ccf", 1), v2);
  EXPECT_EQ(store_->Counts().features, 3);

  ExpectError([&] { store_->PutFeature(ScanId(999), "ccf", 1, v1); }, "no scan 999");
  ExpectError([&] { store_->PutFeature(s1, "", 1, v1); }, "feature kind");
  EXPECT_EQ(store_->Counts().features, 3);
}

TEST_F(StoreTest, ObjectPathRejectsNonDigests) {
  ExpectError([&] { store_->ObjectPath("../../etc/passwd"); }, "not a SHA-256");
  ExpectError([&] { store_->ObjectPath(std::string(64, 'A')); }, "not a SHA-256");
}

TEST_F(StoreTest, ExistingObjectIsKeptOrRepaired) {
  // An object left by an earlier failed ingest is reused when intact...
  const std::string content = "orphan";
  const std::string sha = Sha256Hex(std::string_view(content));
  const fs::path object = store_->ObjectPath(sha);
  fs::create_directories(object.parent_path());
  testing::WriteBytes(object, Bytes(content));
  EXPECT_EQ(Add(Spec("C", "E"), {content})[0].status, AddStatus::kAdded);
  EXPECT_EQ(testing::ReadBytes(object), Bytes(content));
  // ... and replaced when it does not match its name.
  const std::string other = "other";
  const fs::path object2 = store_->ObjectPath(Sha256Hex(std::string_view(other)));
  fs::create_directories(object2.parent_path());
  testing::WriteBytes(object2, Bytes("garbage"));
  EXPECT_EQ(Add(Spec("C", "E"), {other})[0].status, AddStatus::kAdded);
  EXPECT_EQ(testing::ReadBytes(object2), Bytes(other));
  EXPECT_TRUE(store_->Verify().ok());
}

// ---------------------------------------------------------------------------
// Verify

TEST_F(StoreTest, VerifyDetectsModifiedObject) {
  const auto added = Add(Spec("2026-1", "E1"), {std::string(1000, 'q')}, {Meta("Fadul 1-1.x3p")});
  ASSERT_TRUE(store_->Verify().ok());
  const fs::path object = store_->ObjectPath(added[0].sha256);
  fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
  {
    std::fstream f(object, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('!');
  }
  const VerifyReport report = store_->Verify();
  ASSERT_EQ(report.problems.size(), 1u);
  const std::string& p = report.problems[0];
  EXPECT_NE(p.find("scan " + std::to_string(added[0].scan.value) +
                   " (exhibit 2026-1/E1, 'Fadul 1-1.x3p'): stored original objects/" +
                   added[0].sha256.substr(0, 2) + "/" + added[0].sha256.substr(2) +
                   " has been modified (sha256 "),
            std::string::npos)
      << p;
  EXPECT_EQ(report.objects_checked, 1);

  // A changed size is caught too.
  std::ofstream(object, std::ios::app) << "more";
  EXPECT_NE(store_->Verify().problems.at(0).find("has been modified (size 1004 bytes"),
            std::string::npos);
}

TEST_F(StoreTest, VerifyDetectsMissingObject) {
  const auto added = Add(Spec("2026-1", "E1"), {"a", "b"}, {Meta("a.x3p"), Meta("b.x3p")});
  fs::remove(store_->ObjectPath(added[1].sha256));
  const VerifyReport report = store_->Verify();
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_EQ(report.problems[0], "scan " + std::to_string(added[1].scan.value) +
                                    " (exhibit 2026-1/E1, 'b.x3p'): stored original objects/" +
                                    added[1].sha256.substr(0, 2) + "/" + added[1].sha256.substr(2) +
                                    " is missing");
  EXPECT_EQ(report.objects_checked, 2);
}

TEST_F(StoreTest, VerifyDetectsAlteredAuditRow) {
  Add(Spec("2026-1", "E1"), {"a", "b"});
  ASSERT_TRUE(store_->Verify().ok());
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_no_update"), "");
    ASSERT_EQ(raw.Exec("UPDATE audit SET actor = 'mallory' WHERE seq = 3"), "");
  }
  const VerifyReport report = store_->Verify();
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_EQ(report.problems[0], "audit row 3: hash does not match its content (row altered)");
  EXPECT_EQ(report.audit_rows_checked, 4);
}

TEST_F(StoreTest, VerifyDetectsRehashedAuditRow) {
  // Recomputing the altered row's own hash breaks the link to the next row.
  Add(Spec("2026-1", "E1"), {"a", "b"});
  auto trail = store_->AuditTrail(std::nullopt);
  const AuditRecord& a = trail[1];
  const std::string text = std::to_string(a.seq) + "\n" + a.at + "\nmallory\n" + a.action + "\n" +
                           a.subject + "\n" + std::to_string(a.exhibit->value) + "\n" +
                           a.sha256.value_or("") + "\n" + a.details + "\n" + a.prev_hash;
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_no_update"), "");
    ASSERT_EQ(raw.Exec("UPDATE audit SET actor = 'mallory', row_hash = '" +
                       Sha256Hex(std::string_view(text)) + "' WHERE seq = 2"),
              "");
  }
  const VerifyReport report = store_->Verify();
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_NE(report.problems[0].find("audit row 3: prev_hash does not match"), std::string::npos)
      << report.problems[0];
}

TEST_F(StoreTest, VerifyDetectsDeletedAuditRow) {
  Add(Spec("2026-1", "E1"), {"a", "b", "c"});
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_no_delete"), "");
    ASSERT_EQ(raw.Exec("DELETE FROM audit WHERE seq = 3"), "");
  }
  VerifyReport report = store_->Verify();
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_EQ(report.problems[0], "audit row 3 missing (chain broken between 2 and 4)");
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("DELETE FROM audit WHERE seq = 1"), "");
  }
  report = store_->Verify();
  ASSERT_EQ(report.problems.size(), 2u);
  EXPECT_EQ(report.problems[0], "audit row 1 missing (chain broken before 2)");
}

TEST_F(StoreTest, VerifyRunsDatabaseChecks) {
  Add(Spec("2026-1", "E1"), {"a"});
  {
    RawDb raw(Db());  // a raw connection does not enforce foreign keys
    ASSERT_EQ(raw.Exec("INSERT INTO exhibits (case_id, exhibit_ref, kind, role, created_at)"
                       " VALUES (999, 'X', 'bullet', 'evidence', 'now')"),
              "");
  }
  const VerifyReport report = store_->Verify();
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.problems[0], "foreign key: exhibits row 2 refers to a missing cases row");
}

}  // namespace
}  // namespace bien

namespace bien {
namespace {

std::string Sha(char c) { return std::string(64, c); }

TEST_F(StoreTest, KnmScoresAreRecordedAuditedAndReplaced) {
  EXPECT_TRUE(store_->KnmScores("cmc-v1").empty());
  EXPECT_EQ(store_->CountKnmScores("cmc-v1"), 0);
  EXPECT_EQ(store_->RecordKnmScores("cmc-v1", "eval",
                                    {{Sha('a'), Sha('b'), 2.5}, {Sha('a'), Sha('c'), 1.0}}, "bob"),
            2);
  EXPECT_EQ(store_->KnmScores("cmc-v1"), (std::vector<double>{1.0, 2.5}));
  EXPECT_EQ(store_->CountKnmScores("cmc-v1"), 2);
  EXPECT_TRUE(store_->KnmScores("cmc-v2").empty());  // another method starts empty
  EXPECT_EQ(store_->CountKnmScores("cmc-v2"), 0);

  // One audit row per call, naming method, origin and count.
  auto audit = store_->AuditTrail(std::nullopt);
  EXPECT_EQ(audit.back().action, "record_knm_scores");
  EXPECT_EQ(audit.back().actor, "bob");
  EXPECT_EQ(audit.back().subject, "known-non-match scores cmc-v1");
  EXPECT_FALSE(audit.back().exhibit.has_value());
  EXPECT_EQ(audit.back().details, R"({"method":"cmc-v1","origin":"eval","count":2})");
  const size_t rows = audit.size();

  // The same pair again, in the other order, replaces its score and origin.
  EXPECT_EQ(store_->RecordKnmScores("cmc-v1", "calibrate", {{Sha('b'), Sha('a'), 4.0}}, "bob"), 1);
  EXPECT_EQ(store_->KnmScores("cmc-v1"), (std::vector<double>{1.0, 4.0}));
  {
    RawDb raw(Db());
    EXPECT_EQ(raw.Text("SELECT count(*) FROM knm_scores WHERE sha_a < sha_b"), "2");
    EXPECT_EQ(raw.Text("SELECT origin FROM knm_scores WHERE sha_b = '" + Sha('b') + "'"),
              "calibrate");
  }
  // A pair given twice in one call is one row, with its last score.
  EXPECT_EQ(store_->RecordKnmScores("cmc-v1", "eval",
                                    {{Sha('c'), Sha('d'), 7}, {Sha('d'), Sha('c'), 8}}, "bob"),
            1);
  EXPECT_EQ(store_->KnmScores("cmc-v1"), (std::vector<double>{1.0, 4.0, 8.0}));
  // Nothing to record: no row, no audit entry.
  EXPECT_EQ(store_->RecordKnmScores("cmc-v1", "eval", {}, "bob"), 0);
  audit = store_->AuditTrail(std::nullopt);
  EXPECT_EQ(audit.size(), rows + 2);
  EXPECT_TRUE(store_->Verify().ok());
  // The scores survive reopening.
  store_ = Store::Open(node_);
  EXPECT_EQ(store_->CountKnmScores("cmc-v1"), 3);
}

TEST_F(StoreTest, KnmScoresRefuseBadInputAndChangeNothing) {
  store_->RecordKnmScores("cmc-v1", "eval", {{Sha('a'), Sha('b'), 1}}, "bob");
  const StoreCounts before = store_->Counts();
  auto record = [&](std::vector<KnmScore> scores, const std::string& method = "cmc-v1",
                    const std::string& origin = "eval", const std::string& actor = "bob") {
    return [=, this] { store_->RecordKnmScores(method, origin, scores, actor); };
  };
  // A good score before the bad one is not written either.
  ExpectError(record({{Sha('a'), Sha('c'), 1}, {"xyz", Sha('b'), 1}}),
              "known-non-match score 2 of 2: 'xyz' is not a sha256 digest");
  ExpectError(record({{Sha('a'), std::string(64, 'A'), 1}}), "64 lower-case hex digits");
  ExpectError(record({{Sha('a'), Sha('a'), 1}}), "two different files");
  ExpectError(record({{Sha('a'), Sha('c'), NAN}}), "not a finite number");
  ExpectError(record({{Sha('a'), Sha('c'), INFINITY}}), "not a finite number");
  ExpectError(record({{Sha('a'), Sha('c'), 1}}, ""), "the method name is empty");
  ExpectError(record({{Sha('a'), Sha('c'), 1}}, "cmc\nv1"), "control character");
  ExpectError(record({{Sha('a'), Sha('c'), 1}}, "cmc-v1", ""), "the origin is empty");
  ExpectError(record({{Sha('a'), Sha('c'), 1}}, "cmc-v1", "eval", ""), "actor");
  ExpectError(record({}, ""), "method");
  EXPECT_EQ(store_->KnmScores("cmc-v1"), (std::vector<double>{1.0}));
  ExpectSameCounts(store_->Counts(), before);
}

TEST_F(StoreTest, FirearmReferenceIsKeptAndNeverSilentlyChanged) {
  ExhibitSpec spec = Spec("C1", "T1");
  spec.role = ExhibitRole::kTestFire;
  spec.firearm_ref = "RUGER-P95-0001";
  Add(spec, {"scan one"});
  EXPECT_EQ(store_->FindExhibit("C1/T1").firearm_ref, "RUGER-P95-0001");
  auto audit = store_->AuditTrail(store_->FindExhibit("C1/T1").id);
  EXPECT_NE(audit.front().details.find(R"("firearm_ref":"RUGER-P95-0001")"), std::string::npos)
      << audit.front().details;
  // The same ref again, or none, is fine.
  Add(spec, {"scan two"});
  spec.firearm_ref.reset();
  Add(spec, {"scan three"});
  EXPECT_EQ(store_->FindExhibit("C1/T1").firearm_ref, "RUGER-P95-0001");
  // Another ref is refused, and nothing is added.
  spec.firearm_ref = "OTHER";
  const StoreCounts before = store_->Counts();
  ExpectError([&] { Add(spec, {"scan four"}); },
              "exhibit C1/T1 is recorded with firearm_ref 'RUGER-P95-0001', not 'OTHER'");
  ExpectSameCounts(store_->Counts(), before);
  EXPECT_EQ(store_->FindExhibit("C1/T1").scan_count, 3);

  // Unknown, then known: filled in, with an update_exhibit audit row.
  ExhibitSpec later = Spec("C1", "T2");
  later.role = ExhibitRole::kTestFire;
  Add(later, {"scan five"});
  EXPECT_FALSE(store_->FindExhibit("C1/T2").firearm_ref.has_value());
  later.firearm_ref = "";  // empty = unknown
  Add(later, {"scan six"});
  EXPECT_FALSE(store_->FindExhibit("C1/T2").firearm_ref.has_value());
  later.firearm_ref = "GLOCK-17-0042";
  Add(later, {"scan seven"});
  EXPECT_EQ(store_->FindExhibit("C1/T2").firearm_ref, "GLOCK-17-0042");
  audit = store_->AuditTrail(store_->FindExhibit("C1/T2").id);
  const auto update = std::find_if(audit.begin(), audit.end(), [](const AuditRecord& a) {
    return a.action == "update_exhibit";
  });
  ASSERT_NE(update, audit.end());
  EXPECT_EQ(update->details, R"({"filled":{"firearm_ref":"GLOCK-17-0042"}})");
  EXPECT_TRUE(store_->Verify().ok());

  // Refs are compared exactly, so stray blanks and control characters are refused.
  ExhibitSpec bad = Spec("C1", "T3");
  bad.firearm_ref = " SN-1";
  ExpectError([&] { Add(bad, {"scan eight"}); }, "firearm reference ' SN-1' begins or ends");
  bad.firearm_ref = "SN\t1";
  ExpectError([&] { Add(bad, {"scan eight"}); }, "control character");
  bad.firearm_ref = std::string(129, 'x');
  ExpectError([&] { Add(bad, {"scan eight"}); }, "longer than 128");
}

// The version-1 schema exactly as released (storage/store.cpp at 5ef79a2),
// with scans.z_scale as later version-1 builds wrote it, or without it as the
// first release did.
std::string SchemaVersionOne(bool with_z_scale) {
  return std::string(R"sql(
CREATE TABLE cases (
  id          INTEGER PRIMARY KEY,
  case_ref    TEXT NOT NULL UNIQUE CHECK (length(case_ref) BETWEEN 1 AND 128),
  created_at  TEXT NOT NULL
);
CREATE TABLE exhibits (
  id           INTEGER PRIMARY KEY,
  case_id      INTEGER NOT NULL REFERENCES cases(id),
  exhibit_ref  TEXT NOT NULL CHECK (length(exhibit_ref) BETWEEN 1 AND 128),
  kind         TEXT NOT NULL CHECK (kind IN ('cartridge_case', 'bullet')),
  role         TEXT NOT NULL CHECK (role IN ('evidence', 'test_fire')),
  calibre      TEXT CHECK (calibre IS NULL OR length(calibre) > 0),
  firing_pin   TEXT CHECK (firing_pin IS NULL OR length(firing_pin) > 0),
  breech_face  TEXT CHECK (breech_face IS NULL OR length(breech_face) > 0),
  lands        INTEGER CHECK (lands IS NULL OR lands BETWEEN 1 AND 64),
  twist        TEXT CHECK (twist IS NULL OR twist IN ('left', 'right')),
  created_at   TEXT NOT NULL,
  UNIQUE (case_id, exhibit_ref)
);
CREATE TABLE scans (
  id             INTEGER PRIMARY KEY,
  exhibit_id     INTEGER NOT NULL REFERENCES exhibits(id),
  sha256         TEXT NOT NULL UNIQUE
                 CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
  size_bytes     INTEGER NOT NULL CHECK (size_bytes >= 0),
  original_name  TEXT NOT NULL CHECK (length(original_name) > 0),
  format         TEXT NOT NULL CHECK (length(format) > 0),
  width          INTEGER NOT NULL CHECK (width > 0),
  height         INTEGER NOT NULL CHECK (height > 0),
  dx_m           REAL NOT NULL CHECK (dx_m > 0),
  dy_m           REAL NOT NULL CHECK (dy_m > 0),
)sql") + (with_z_scale ? "  z_scale        REAL NOT NULL DEFAULT 1 CHECK (z_scale > 0),\n" : "") +
         R"sql(  nan_share      REAL NOT NULL CHECK (nan_share BETWEEN 0 AND 1),
  intensity      INTEGER NOT NULL CHECK (intensity IN (0, 1)),
  land           INTEGER CHECK (land IS NULL OR land BETWEEN 1 AND 64),
  instrument     TEXT,
  measured_at    TEXT,
  creator        TEXT,
  comment        TEXT,
  added_at       TEXT NOT NULL
);
CREATE INDEX scans_by_exhibit ON scans(exhibit_id);
CREATE TABLE features (
  id          INTEGER PRIMARY KEY,
  scan_id     INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
  kind        TEXT NOT NULL CHECK (length(kind) > 0),
  version     INTEGER NOT NULL CHECK (version >= 0),
  blob        BLOB NOT NULL,
  created_at  TEXT NOT NULL,
  UNIQUE (scan_id, kind, version)
);
CREATE TABLE audit (
  seq         INTEGER PRIMARY KEY CHECK (seq >= 1),
  at          TEXT NOT NULL,
  actor       TEXT NOT NULL CHECK (length(actor) > 0),
  action      TEXT NOT NULL CHECK (length(action) > 0),
  subject     TEXT NOT NULL,
  exhibit_id  INTEGER REFERENCES exhibits(id),
  sha256      TEXT CHECK (sha256 IS NULL OR length(sha256) = 64),
  details     TEXT NOT NULL CHECK (json_valid(details)),
  prev_hash   TEXT NOT NULL CHECK (length(prev_hash) = 64),
  row_hash    TEXT NOT NULL UNIQUE CHECK (length(row_hash) = 64)
);
CREATE INDEX audit_by_exhibit ON audit(exhibit_id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit log is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit log is append-only');
END;
)sql";
}

class VersionOneTest : public StoreTest, public ::testing::WithParamInterface<bool> {};

// A node whose bien.db was written with the version-1 schema (with its data:
// an exhibit, two scans, a feature, a hash-chained audit log) opens, migrates
// to the current version keeping everything, and then takes firearm refs and
// scores.
TEST_P(VersionOneTest, VersionOneDatabaseMigratesToTheCurrentVersion) {
  const bool with_z_scale = GetParam();
  ExhibitSpec spec = Spec("2026-1", "T1");
  spec.role = ExhibitRole::kTestFire;
  spec.cc.calibre = "9mm Luger";
  const auto added = Add(spec, {"first scan", "second scan"});
  store_->PutFeature(added[0].scan, "ccf", 1, Bytes("blob"));
  const auto audit_before = store_->AuditTrail(std::nullopt);
  store_.reset();

  // Rebuild bien.db from the version-1 schema and the rows written above.
  const fs::path old_db = node_ / "v2.db";
  fs::rename(Db(), old_db);
  for (const char* f : {"bien.db-wal", "bien.db-shm"}) fs::remove(node_ / f);
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec(SchemaVersionOne(with_z_scale)), "");
    ASSERT_EQ(raw.Exec("ATTACH DATABASE '" + old_db.string() + "' AS v2"), "");
    const std::string scan_columns =
        std::string(
            "id, exhibit_id, sha256, size_bytes, original_name, format, width, height, "
            "dx_m, dy_m, ") +
        (with_z_scale ? "z_scale, " : "") +
        "nan_share, intensity, land, instrument, measured_at, creator, comment, added_at";
    const std::string exhibit_columns =
        "id, case_id, exhibit_ref, kind, role, calibre, firing_pin, breech_face, lands, twist, "
        "created_at";
    ASSERT_EQ(raw.Exec("BEGIN; INSERT INTO cases SELECT * FROM v2.cases;"
                       "INSERT INTO exhibits (" +
                       exhibit_columns + ") SELECT " + exhibit_columns +
                       " FROM v2.exhibits;"
                       "INSERT INTO scans (" +
                       scan_columns + ") SELECT " + scan_columns +
                       " FROM v2.scans;"
                       "INSERT INTO features SELECT * FROM v2.features;"
                       "INSERT INTO audit SELECT * FROM v2.audit; COMMIT;"),
              "");
    ASSERT_EQ(raw.Exec("DETACH DATABASE v2"), "");
    ASSERT_EQ(raw.Exec("PRAGMA user_version = 1"), "");
    EXPECT_EQ(raw.Text("SELECT count(*) FROM scans"), "2");
  }
  fs::remove(old_db);

  store_ = Store::Open(node_);
  {
    RawDb check(Db());
    EXPECT_EQ(check.Text("PRAGMA user_version"), std::to_string(Store::SchemaVersion()));
    EXPECT_EQ(check.Text("SELECT count(*) FROM pragma_table_info('exhibits') WHERE name = "
                         "'firearm_ref'"),
              "1");
    EXPECT_EQ(check.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'knm_scores'"), "1");
    EXPECT_EQ(check.Text("SELECT group_concat(z_scale) FROM scans"), "1.0,1.0");
  }
  EXPECT_EQ(Store::SchemaVersion(), 4);
  // Everything is still there, and the audit chain still verifies.
  const ExhibitRecord e = store_->FindExhibit("2026-1/T1");
  EXPECT_EQ(e.scan_count, 2);
  EXPECT_EQ(e.cc.calibre, "9mm Luger");
  EXPECT_FALSE(e.firearm_ref.has_value());
  EXPECT_EQ(store_->ScansOf(e.id)[1].meta.z_scale, 1.0);
  EXPECT_EQ(store_->GetFeature(added[0].scan, "ccf", 1), Bytes("blob"));
  EXPECT_EQ(store_->AuditTrail(std::nullopt).size(), audit_before.size());
  EXPECT_TRUE(store_->Verify().ok());
  // Version-2 features work on it.
  spec.firearm_ref = "SN-1234";
  Add(spec, {"third scan"});
  EXPECT_EQ(store_->FindExhibit("2026-1/T1").firearm_ref, "SN-1234");
  store_->RecordKnmScores("cmc-v1", "eval", {{Sha('a'), Sha('b'), 2.0}}, "bob");
  EXPECT_EQ(store_->CountKnmScores("cmc-v1"), 1);
  const VerifyReport report = store_->Verify();
  EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems[0]);
  // Opening again does not migrate twice.
  store_ = Store::Open(node_);
  EXPECT_EQ(store_->FindExhibit("2026-1/T1").scan_count, 3);
}

INSTANTIATE_TEST_SUITE_P(Store, VersionOneTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "WithZScale" : "FirstRelease";
                         });

// The step from version 1 to version 2 exactly as released (storage/store.cpp
// at 2d41615).
constexpr const char* kSchemaStepTwo = R"sql(
ALTER TABLE exhibits ADD COLUMN firearm_ref TEXT
  CHECK (firearm_ref IS NULL OR length(firearm_ref) BETWEEN 1 AND 128);
CREATE TABLE knm_scores (
  id           INTEGER PRIMARY KEY,
  method       TEXT NOT NULL CHECK (length(method) > 0),
  sha_a        TEXT NOT NULL CHECK (length(sha_a) = 64 AND sha_a NOT GLOB '*[^0-9a-f]*'),
  sha_b        TEXT NOT NULL CHECK (length(sha_b) = 64 AND sha_b NOT GLOB '*[^0-9a-f]*'),
  score        REAL NOT NULL,
  origin       TEXT NOT NULL CHECK (length(origin) > 0),
  recorded_at  TEXT NOT NULL,
  CHECK (sha_a < sha_b),
  UNIQUE (method, sha_a, sha_b)
);
)sql";

ExhibitSpec CalibreSpec(const std::string& case_ref, const std::string& exhibit_ref,
                        std::optional<std::string> calibre,
                        ExhibitKind kind = ExhibitKind::kCartridgeCase) {
  ExhibitSpec s = Spec(case_ref, exhibit_ref, kind);
  s.cc.calibre = std::move(calibre);
  return s;
}

// A node whose bien.db is at version 2 (with exhibits, scans, a feature,
// known-non-match scores and a hash-chained audit log) migrates to version 3
// keeping everything; the audit chain still verifies and continues; the new
// tables work.
TEST_F(StoreTest, VersionTwoDatabaseMigratesToVersionThree) {
  ExhibitSpec spec = CalibreSpec("2026-1", "T1", "9mm Luger");
  spec.role = ExhibitRole::kTestFire;
  spec.firearm_ref = "SN-1";
  const auto t1 = Add(spec, {"first scan", "second scan"});
  const auto e2 = Add(CalibreSpec("2026-2", "E1", "9mm Luger"), {"third scan"});
  store_->PutFeature(t1[0].scan, "ccf", 1, Bytes("blob"));
  store_->RecordKnmScores("cmc-v1", "eval", {{Sha('a'), Sha('b'), 2.0}}, "bob");
  const auto audit_before = store_->AuditTrail(std::nullopt);
  store_.reset();

  // Rebuild bien.db from the version-2 schema and the rows written above.
  const fs::path old_db = node_ / "v3.db";
  fs::rename(Db(), old_db);
  for (const char* f : {"bien.db-wal", "bien.db-shm"}) fs::remove(node_ / f);
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec(SchemaVersionOne(true)), "");
    ASSERT_EQ(raw.Exec(kSchemaStepTwo), "");
    ASSERT_EQ(raw.Exec("ATTACH DATABASE '" + old_db.string() + "' AS v3"), "");
    ASSERT_EQ(raw.Exec("BEGIN; INSERT INTO cases SELECT * FROM v3.cases;"
                       "INSERT INTO exhibits SELECT * FROM v3.exhibits;"
                       "INSERT INTO scans SELECT * FROM v3.scans;"
                       "INSERT INTO features SELECT * FROM v3.features;"
                       "INSERT INTO knm_scores SELECT * FROM v3.knm_scores;"
                       "INSERT INTO audit SELECT * FROM v3.audit; COMMIT;"),
              "");
    ASSERT_EQ(raw.Exec("DETACH DATABASE v3"), "");
    ASSERT_EQ(raw.Exec("PRAGMA user_version = 2"), "");
    EXPECT_EQ(raw.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'leads'"), "0");
  }
  fs::remove(old_db);

  store_ = Store::Open(node_);
  {
    RawDb check(Db());
    EXPECT_EQ(check.Text("PRAGMA user_version"), std::to_string(Store::SchemaVersion()));
    for (const char* table : {"descriptors", "leads", "hits", "alerts"}) {
      EXPECT_EQ(check.Text(std::string("SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
                                       "AND name = '") +
                           table + "'"),
                "1")
          << table;
    }
    for (const char* index : {"descriptors_by_key", "leads_by_pair", "leads_open_pair"}) {
      EXPECT_EQ(check.Text(std::string("SELECT count(*) FROM sqlite_schema WHERE type = 'index' "
                                       "AND name = '") +
                           index + "'"),
                "1")
          << index;
    }
  }
  const ExhibitRecord t = store_->FindExhibit("2026-1/T1");
  EXPECT_EQ(t.scan_count, 2);
  EXPECT_EQ(t.firearm_ref, "SN-1");
  EXPECT_EQ(store_->GetFeature(t1[0].scan, "ccf", 1), Bytes("blob"));
  EXPECT_EQ(store_->CountKnmScores("cmc-v1"), 1);
  const auto audit_after = store_->AuditTrail(std::nullopt);
  ASSERT_EQ(audit_after.size(), audit_before.size());
  EXPECT_EQ(audit_after.back().row_hash, audit_before.back().row_hash);
  EXPECT_TRUE(store_->Verify().ok());

  // Version-3 features work on it, and the chain continues from the old rows.
  const std::vector<float> v{1, 2, 3};
  store_->PutDescriptor(t1[0].scan, "bf-v1", v);
  EXPECT_EQ(store_->Descriptors("bf-v1", PartitionOf(t)).size(), 1u);
  const auto leads =
      store_->RecordLeads("alice", e2[0].exhibit, {{t.id, "cmc-v1", 20, 0.001, 1, "{}"}});
  ASSERT_EQ(leads.size(), 1u);
  store_->ConfirmLead(leads[0].lead, "alice", "");
  const auto audit = store_->AuditTrail(std::nullopt);
  ASSERT_EQ(audit.size(), audit_before.size() + 2);
  EXPECT_EQ(audit[audit_before.size()].prev_hash, audit_before.back().row_hash);
  const VerifyReport report = store_->Verify();
  EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems[0]);
  // Opening again does not migrate twice.
  store_ = Store::Open(node_);
  EXPECT_EQ(store_->Counts().hits, 1);
}

// The step from version 2 to version 3 exactly as released (storage/store.cpp
// at 125a42a).
constexpr const char* kSchemaStepThree = R"sql(
CREATE TABLE descriptors (
  id              INTEGER PRIMARY KEY,
  scan_id         INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
  descriptor_key  TEXT NOT NULL CHECK (length(descriptor_key) BETWEEN 1 AND 128),
  dim             INTEGER NOT NULL CHECK (dim BETWEEN 1 AND 65536),
  vector          BLOB NOT NULL CHECK (length(vector) = 4 * dim),
  created_at      TEXT NOT NULL,
  UNIQUE (scan_id, descriptor_key)
);
CREATE INDEX descriptors_by_key ON descriptors(descriptor_key, scan_id);
CREATE TABLE leads (
  id                    INTEGER PRIMARY KEY,
  query_exhibit_id      INTEGER NOT NULL REFERENCES exhibits(id),
  candidate_exhibit_id  INTEGER NOT NULL REFERENCES exhibits(id),
  method                TEXT NOT NULL CHECK (length(method) BETWEEN 1 AND 128),
  score                 REAL NOT NULL,
  strength              REAL CHECK (strength IS NULL OR strength BETWEEN 0 AND 1),
  coarse_rank           INTEGER CHECK (coarse_rank IS NULL OR coarse_rank >= 1),
  registration          TEXT NOT NULL
                        CHECK (json_valid(registration) AND json_type(registration) = 'object'),
  status                TEXT NOT NULL CHECK (status IN ('open', 'confirmed', 'rejected')),
  created_at            TEXT NOT NULL,
  updated_at            TEXT NOT NULL,
  decided_by            TEXT CHECK (decided_by IS NULL OR length(decided_by) > 0),
  decided_at            TEXT,
  note                  TEXT,
  CHECK (query_exhibit_id <> candidate_exhibit_id),
  CHECK ((status = 'open') = (decided_by IS NULL AND decided_at IS NULL))
);
CREATE INDEX leads_by_pair ON leads(min(query_exhibit_id, candidate_exhibit_id),
                                    max(query_exhibit_id, candidate_exhibit_id));
CREATE UNIQUE INDEX leads_open_pair ON leads(min(query_exhibit_id, candidate_exhibit_id),
                                             max(query_exhibit_id, candidate_exhibit_id))
  WHERE status = 'open';
CREATE TABLE hits (
  id            INTEGER PRIMARY KEY,
  lead_id       INTEGER NOT NULL UNIQUE REFERENCES leads(id),
  exhibit_a_id  INTEGER NOT NULL REFERENCES exhibits(id),
  case_a_id     INTEGER NOT NULL REFERENCES cases(id),
  exhibit_b_id  INTEGER NOT NULL REFERENCES exhibits(id),
  case_b_id     INTEGER NOT NULL REFERENCES cases(id),
  confirmed_by  TEXT NOT NULL CHECK (length(confirmed_by) > 0),
  confirmed_at  TEXT NOT NULL,
  note          TEXT,
  CHECK (exhibit_a_id <> exhibit_b_id)
);
CREATE TABLE alerts (
  id               INTEGER PRIMARY KEY,
  hit_id           INTEGER REFERENCES hits(id),
  created_at       TEXT NOT NULL,
  origin           TEXT NOT NULL CHECK (origin IN ('local', 'remote')),
  summary          TEXT NOT NULL CHECK (length(summary) > 0),
  payload          TEXT NOT NULL CHECK (json_valid(payload) AND json_type(payload) = 'object'),
  delivered_at     TEXT,
  acknowledged_at  TEXT,
  acknowledged_by  TEXT CHECK (acknowledged_by IS NULL OR length(acknowledged_by) > 0),
  CHECK (origin = 'remote' OR hit_id IS NOT NULL)
);
CREATE INDEX alerts_by_hit ON alerts(hit_id);
)sql";

// A node whose bien.db is at version 3 (exhibits, descriptors, a confirmed
// lead with its hit and local alert, audit log) migrates to version 4 keeping
// everything: the alert survives the rebuild of the alerts table, the audit
// chain verifies, and the federation's tables work.
TEST_F(StoreTest, VersionThreeDatabaseMigratesToVersionFour) {
  const auto t1 = Add(CalibreSpec("2026-1", "T1", "9mm Luger"), {"first scan"});
  const auto e2 = Add(CalibreSpec("2026-2", "E1", "9mm Luger"), {"second scan"});
  store_->PutDescriptor(t1[0].scan, "bf-v1", std::vector<float>{1, 2, 3});
  const auto leads =
      store_->RecordLeads("alice", e2[0].exhibit, {{t1[0].exhibit, "cmc-v1", 20, 0.001, 1, "{}"}});
  const ConfirmedLead confirmed = store_->ConfirmLead(leads[0].lead, "alice", "checked");
  const auto audit_before = store_->AuditTrail(std::nullopt);
  store_.reset();

  const fs::path old_db = node_ / "v4.db";
  fs::rename(Db(), old_db);
  for (const char* f : {"bien.db-wal", "bien.db-shm"}) fs::remove(node_ / f);
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec(SchemaVersionOne(true)), "");
    ASSERT_EQ(raw.Exec(kSchemaStepTwo), "");
    ASSERT_EQ(raw.Exec(kSchemaStepThree), "");
    ASSERT_EQ(raw.Exec("ATTACH DATABASE '" + old_db.string() + "' AS v4"), "");
    ASSERT_EQ(raw.Exec("BEGIN; INSERT INTO cases SELECT * FROM v4.cases;"
                       "INSERT INTO exhibits SELECT * FROM v4.exhibits;"
                       "INSERT INTO scans SELECT * FROM v4.scans;"
                       "INSERT INTO descriptors SELECT * FROM v4.descriptors;"
                       "INSERT INTO leads SELECT * FROM v4.leads;"
                       "INSERT INTO hits SELECT * FROM v4.hits;"
                       "INSERT INTO alerts SELECT id, hit_id, created_at, origin, summary, payload,"
                       " delivered_at, acknowledged_at, acknowledged_by FROM v4.alerts;"
                       "INSERT INTO audit SELECT * FROM v4.audit; COMMIT;"),
              "");
    ASSERT_EQ(raw.Exec("DETACH DATABASE v4"), "");
    ASSERT_EQ(raw.Exec("PRAGMA user_version = 3"), "");
    EXPECT_EQ(raw.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'peers'"), "0");
  }
  fs::remove(old_db);

  store_ = Store::Open(node_);
  {
    RawDb check(Db());
    EXPECT_EQ(check.Text("PRAGMA user_version"), "4");
    for (const char* table : {"peers", "outbox", "inbox", "federated_searches", "federated_answers",
                              "remote_candidates", "alerts"}) {
      EXPECT_EQ(check.Text(std::string("SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
                                       "AND name = '") +
                           table + "'"),
                "1")
          << table;
    }
    EXPECT_EQ(check.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'alerts_v4'"), "0");
    EXPECT_EQ(check.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'alerts_by_hit'"), "1");
    EXPECT_EQ(check.Text("PRAGMA foreign_key_check"), "");
  }
  const auto alerts = store_->Alerts();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].summary, confirmed.alert.summary);
  EXPECT_EQ(alerts[0].hit, confirmed.hit.id);
  EXPECT_FALSE(alerts[0].peer.has_value());
  const auto audit_after = store_->AuditTrail(std::nullopt);
  ASSERT_EQ(audit_after.size(), audit_before.size());
  EXPECT_EQ(audit_after.back().row_hash, audit_before.back().row_hash);
  const VerifyReport report = store_->Verify();
  EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems[0]);
  store_.reset();

  // Version-4 features work on it, and the chain continues.
  auto ex = ExchangeStore::Open(node_);
  ex->AddPeer(
      "admin",
      {"BA-sarajevo", "tcp://127.0.0.1:7301", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", {"*"}});
  EXPECT_EQ(ex->Peers().size(), 1u);
  EXPECT_TRUE(ex->store().Verify().ok());
}

// ---------------------------------------------------------------------------
// Partitions, descriptors, leads, hits and alerts.

TEST(StorePartitions, KeysAreStableText) {
  ClassCharacteristics cc;
  EXPECT_EQ(PartitionOf(ExhibitKind::kCartridgeCase, cc).Key(), "cartridge_case|unknown");
  cc.calibre = "9mm Luger";
  EXPECT_EQ(PartitionOf(ExhibitKind::kCartridgeCase, cc).Key(), "cartridge_case|9mm Luger");
  EXPECT_EQ(PartitionOf(ExhibitKind::kBullet, cc).Key(), "bullet|9mm Luger");
  // Other class characteristics do not split partitions.
  cc.firing_pin = "circular";
  cc.twist = Twist::kRight;
  EXPECT_EQ(PartitionOf(ExhibitKind::kBullet, cc).Key(), "bullet|9mm Luger");
  // A calibre written "unknown" is unknown.
  cc.calibre = "Unknown";
  EXPECT_FALSE(PartitionOf(ExhibitKind::kBullet, cc).calibre);
  EXPECT_EQ(PartitionOf(ExhibitKind::kBullet, cc).Key(), "bullet|unknown");
  EXPECT_EQ((Partition{ExhibitKind::kBullet, "UNKNOWN"}.Key()), "bullet|unknown");

  ExhibitRecord e;
  e.kind = ExhibitKind::kCartridgeCase;
  e.cc.calibre = ".45 ACP";
  EXPECT_EQ(PartitionKey(e), "cartridge_case|.45 ACP");

  for (const char* key : {"cartridge_case|9mm Luger", "bullet|unknown", "bullet|a|b"}) {
    const auto p = ParsePartitionKey(key);
    ASSERT_TRUE(p) << key;
    EXPECT_EQ(p->Key(), key);
  }
  EXPECT_FALSE(ParsePartitionKey("bullet|unknown")->calibre);
  EXPECT_EQ(ParsePartitionKey("bullet|a|b")->calibre, "a|b");
  for (const char* bad : {"", "bullet", "bullet|", "shell|9mm", "|9mm", "bullet|Unknown"}) {
    EXPECT_FALSE(ParsePartitionKey(bad)) << bad;
  }
}

TEST(StorePartitions, UnknownClassCharacteristicsMatchKnownOnes) {
  ClassCharacteristics a, b;
  EXPECT_TRUE(ClassCompatible(a, b));
  a.firing_pin = "circular";
  EXPECT_TRUE(ClassCompatible(a, b));  // b does not know it
  b.firing_pin = "circular";
  EXPECT_TRUE(ClassCompatible(a, b));
  b.firing_pin = "rectangular";
  EXPECT_FALSE(ClassCompatible(a, b));
  b.firing_pin.reset();
  a.lands = 6;
  b.lands = 5;
  EXPECT_FALSE(ClassCompatible(a, b));
  b.lands = 6;
  a.twist = Twist::kLeft;
  b.twist = Twist::kRight;
  EXPECT_FALSE(ClassCompatible(a, b));
  b.twist.reset();
  a.breech_face = "parallel";
  b.breech_face = "arched";
  EXPECT_FALSE(ClassCompatible(a, b));
  b.breech_face = "parallel";
  EXPECT_TRUE(ClassCompatible(a, b));
  // Calibre is the partition's business.
  a.calibre = "9mm Luger";
  b.calibre = ".45 ACP";
  EXPECT_TRUE(ClassCompatible(a, b));
}

TEST_F(StoreTest, DescriptorsRoundTripWithinOnePartition) {
  const auto a = Add(CalibreSpec("C1", "A", "9mm Luger"), {"a1", "a2"});
  const auto b = Add(CalibreSpec("C1", "B", "9mm Luger"), {"b1"});
  const auto other = Add(CalibreSpec("C2", "X", ".45 ACP"), {"x1"});
  const auto unknown = Add(CalibreSpec("C3", "U", std::nullopt), {"u1"});
  const auto written = Add(CalibreSpec("C3", "W", "unknown"), {"w1"});
  const auto bullet = Add(CalibreSpec("C4", "K", "9mm Luger", ExhibitKind::kBullet), {"k1"});

  // Values that show any loss of precision or byte-order mix-up.
  auto vec = [](float base) {
    return std::vector<float>{base, -base / 3, 1e-38f, 3.4e38f, 0.1f, -0.0f, base * 7};
  };
  store_->PutDescriptor(a[0].scan, "bf-v1", vec(1));
  store_->PutDescriptor(a[1].scan, "bf-v1", vec(2));
  store_->PutDescriptor(b[0].scan, "bf-v1", vec(3));
  store_->PutDescriptor(other[0].scan, "bf-v1", vec(4));
  store_->PutDescriptor(unknown[0].scan, "bf-v1", vec(5));
  store_->PutDescriptor(written[0].scan, "bf-v1", vec(6));
  store_->PutDescriptor(bullet[0].scan, "bf-v1", vec(7));
  store_->PutDescriptor(a[0].scan, "bf-v2", std::vector<float>{9, 9});
  EXPECT_EQ(store_->Counts().descriptors, 8);

  const Partition nine{ExhibitKind::kCartridgeCase, "9mm Luger"};
  const auto rows = store_->Descriptors("bf-v1", nine);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].scan, a[0].scan);
  EXPECT_EQ(rows[0].exhibit, a[0].exhibit);
  EXPECT_EQ(rows[1].scan, a[1].scan);
  EXPECT_EQ(rows[2].scan, b[0].scan);
  EXPECT_EQ(rows[2].exhibit, b[0].exhibit);
  for (size_t i = 0; i < 3; ++i) {
    const auto expected = vec(static_cast<float>(i + 1));
    ASSERT_EQ(rows[i].vector.size(), expected.size());
    EXPECT_EQ(std::memcmp(rows[i].vector.data(), expected.data(), expected.size() * 4), 0) << i;
  }
  EXPECT_EQ(store_->DescriptorScanIds("bf-v1", nine),
            (std::vector<ScanId>{a[0].scan, a[1].scan, b[0].scan}));
  // Another calibre, another kind, another key: never mixed in.
  const auto acp = store_->Descriptors("bf-v1", {ExhibitKind::kCartridgeCase, ".45 ACP"});
  ASSERT_EQ(acp.size(), 1u);
  EXPECT_EQ(acp[0].exhibit, other[0].exhibit);
  EXPECT_EQ(store_->DescriptorScanIds("bf-v1", {ExhibitKind::kBullet, "9mm Luger"}),
            std::vector<ScanId>{bullet[0].scan});
  EXPECT_EQ(store_->DescriptorScanIds("bf-v1", {ExhibitKind::kCartridgeCase, std::nullopt}),
            (std::vector<ScanId>{unknown[0].scan, written[0].scan}));
  EXPECT_EQ(store_->DescriptorScanIds("bf-v2", nine), std::vector<ScanId>{a[0].scan});
  EXPECT_TRUE(store_->Descriptors("bf-v3", nine).empty());
  EXPECT_TRUE(store_->Descriptors("bf-v1", {ExhibitKind::kCartridgeCase, "9mm luger"}).empty());

  // Writing a (scan, key) again replaces it.
  store_->PutDescriptor(a[0].scan, "bf-v1", vec(8));
  EXPECT_EQ(store_->Descriptors("bf-v1", nine)[0].vector, vec(8));
  EXPECT_EQ(store_->Counts().descriptors, 8);

  std::vector<std::string> keys;
  for (const auto& p : store_->Partitions()) keys.push_back(p.Key());
  EXPECT_EQ(keys, (std::vector<std::string>{"bullet|9mm Luger", "cartridge_case|.45 ACP",
                                            "cartridge_case|9mm Luger", "cartridge_case|unknown"}));
  // Descriptors are derived data: no audit rows.
  EXPECT_EQ(store_->AuditTrail(std::nullopt).back().action, "add_scan");
}

TEST_F(StoreTest, PutDescriptorRefusesBadInputAndChangesNothing) {
  const auto a = Add(CalibreSpec("C1", "A", "9mm Luger"), {"a1", "a2"});
  store_->PutDescriptor(a[0].scan, "bf-v1", std::vector<float>{1, 2, 3});
  const StoreCounts before = store_->Counts();
  const std::vector<float> three{1, 2, 3};
  ExpectError([&] { store_->PutDescriptor(ScanId(999), "bf-v1", three); }, "no scan 999");
  ExpectError([&] { store_->PutDescriptor(a[1].scan, "", three); }, "descriptor key is empty");
  ExpectError([&] { store_->PutDescriptor(a[1].scan, "bf\tv1", three); }, "control character");
  ExpectError([&] { store_->PutDescriptor(a[1].scan, std::string(129, 'k'), three); },
              "longer than 128");
  ExpectError([&] { store_->PutDescriptor(a[1].scan, "bf-v1", std::vector<float>{}); },
              "descriptor 'bf-v1' is empty");
  ExpectError(
      [&] {
        store_->PutDescriptor(a[1].scan, "bf-v1", std::vector<float>{1, NAN, 3});
      },
      "value 1 is not a finite number");
  ExpectError(
      [&] {
        store_->PutDescriptor(a[1].scan, "bf-v1", std::vector<float>{1, 2});
      },
      "has 2 values; the key's stored descriptors have 3");
  ExpectSameCounts(store_->Counts(), before);
  // The only descriptor of a key may change its dimension when replaced.
  store_->PutDescriptor(a[0].scan, "bf-v1", std::vector<float>{1, 2});
  EXPECT_EQ(store_->Descriptors("bf-v1", {ExhibitKind::kCartridgeCase, "9mm Luger"})[0].vector,
            (std::vector<float>{1, 2}));
}

// Benchmarks only: distractor exhibits in bulk, one transaction.
TEST_F(StoreTest, AddBenchDistractorsInOneTransaction) {
  const Partition p9{ExhibitKind::kCartridgeCase, "9mm Luger"};
  const auto real = Add(CalibreSpec("C1", "A", "9mm Luger"), {"a1"});
  store_->PutDescriptor(real[0].scan, "bf-v1", std::vector<float>{1, 0, 0});
  const StoreCounts before = store_->Counts();
  // Four vectors of three values.
  const std::vector<float> v{0, 1, 0, 0, 0, 1, 0.6f, 0.8f, 0, 0.8f, 0, 0.6f};
  const auto added = store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3, v);
  ASSERT_EQ(added.size(), 4u);
  const StoreCounts after = store_->Counts();
  EXPECT_EQ(after.cases, before.cases + 1);
  EXPECT_EQ(after.exhibits, before.exhibits + 4);
  EXPECT_EQ(after.scans, before.scans + 4);
  EXPECT_EQ(after.descriptors, before.descriptors + 4);
  EXPECT_EQ(after.audit, before.audit + 1);  // one row for the whole batch
  EXPECT_EQ(store_->AuditTrail(std::nullopt).back().action, "add_bench_distractors");
  const ExhibitRecord e = store_->FindExhibit("BENCH-DISTRACTORS/D0000003");
  EXPECT_EQ(e.id, added[2].exhibit);
  EXPECT_EQ(e.kind, ExhibitKind::kCartridgeCase);
  EXPECT_EQ(e.cc.calibre, "9mm Luger");
  const auto scans = store_->ScansOf(e.id);
  ASSERT_EQ(scans.size(), 1u);
  EXPECT_EQ(scans[0].id, added[2].scan);
  EXPECT_EQ(scans[0].meta.format, kBenchDistractorFormat);
  EXPECT_EQ(scans[0].sha256, added[2].sha256);
  EXPECT_EQ(scans[0].sha256, Sha256Hex(std::as_bytes(std::span<const float>(v).subspan(6, 3))));
  EXPECT_FALSE(fs::exists(store_->ObjectPath(scans[0].sha256)));  // no original
  EXPECT_EQ(*store_->GetDescriptor(added[2].scan, "bf-v1"), (std::vector<float>{0.6f, 0.8f, 0}));
  EXPECT_EQ(store_->DescriptorOwners("bf-v1", p9).size(), 5u);
  // A second batch numbers on.
  const std::vector<float> w{0.28f, 0.96f, 0};
  const auto more = store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3, w);
  EXPECT_EQ(store_->FindExhibit("BENCH-DISTRACTORS/D0000005").id, more[0].exhibit);

  // A failure in the middle (the third vector repeats the first: one sha256)
  // leaves nothing behind.
  const StoreCounts before_bad = store_->Counts();
  const std::vector<float> dup{0, 0.6f, 0.8f, 0, 0.8f, 0.6f, 0, 0.6f, 0.8f, 1, 1, 0};
  ExpectError([&] { store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3, dup); },
              "bench distractors: vector 3 (BENCH-DISTRACTORS/D0000008");
  ExpectSameCounts(store_->Counts(), before_bad);
  EXPECT_THROW(store_->FindExhibit("BENCH-DISTRACTORS/D0000006"), Error);

  // Bad input is refused with a clear error and changes nothing.
  ExpectError([&] { store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3, {}); },
              "bench distractors: no vectors given");
  ExpectError(
      [&] {
        store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3,
                                    std::vector<float>{1, 0, 0, 1});
      },
      "4 values are not a whole number of vectors of 3 values");
  ExpectError(
      [&] {
        store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 2,
                                    std::vector<float>{1, 0, 0, 1});
      },
      "vectors of 2 values, but the store's descriptors of 'bf-v1' have 3");
  ExpectError(
      [&] {
        store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3,
                                    std::vector<float>{1, 0, 0, 0, NAN, 1});
      },
      "bench distractors: vector 2: descriptor 'bf-v1' value 1 is not a finite number");
  ExpectError(
      [&] {
        store_->AddBenchDistractors("alice", "", "bf-v1", 3, std::vector<float>{1, 0, 0});
      },
      "calibre is empty");
  ExpectError([&] { store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 0, w); },
              "dimension 0 is out of range");
  ExpectSameCounts(store_->Counts(), before_bad);

  // More descriptors per distractor (ring spectra in `bien bench node`), in
  // the same transaction; an empty vector gives that distractor none.
  const std::vector<float> two{0.8f, 0.6f, 0, 0, 0.28f, 0.96f};
  const std::vector<std::vector<float>> ring{{1, 2, 3, 4}, {}};
  const std::vector<BenchExtraDescriptors> extra{{"ring-v1", ring}};
  const auto with = store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3, two, extra);
  ASSERT_EQ(with.size(), 2u);
  EXPECT_EQ(*store_->GetDescriptor(with[0].scan, "ring-v1"), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_FALSE(store_->GetDescriptor(with[1].scan, "ring-v1").has_value());
  EXPECT_EQ(*store_->GetDescriptor(with[1].scan, "bf-v1"), (std::vector<float>{0, 0.28f, 0.96f}));
  EXPECT_EQ(store_->AuditTrail(std::nullopt).back().action, "add_bench_distractors");
  EXPECT_NE(store_->AuditTrail(std::nullopt).back().details.find("\"extra_keys\":\"ring-v1\""),
            std::string::npos);

  // Bad extras are refused before anything is written.
  const StoreCounts before_extra = store_->Counts();
  const std::vector<float> three{0.6f, 0, 0.8f, 0.96f, 0.28f, 0, 0, 0, 1};
  auto refuse = [&](std::vector<BenchExtraDescriptors> x, const std::string& message) {
    ExpectError([&] { store_->AddBenchDistractors("alice", "9mm Luger", "bf-v1", 3, three, x); },
                message);
  };
  const std::vector<std::vector<float>> short_list{{1, 2, 3, 4}};
  refuse({{"ring-v1", short_list}}, "1 extra descriptors of 'ring-v1' for 3 vectors");
  const std::vector<std::vector<float>> ragged{{1, 2, 3, 4}, {1, 2}, {}};
  refuse({{"ring-v1", ragged}}, "vector 2, extra 'ring-v1' has 2 values, the others 4");
  const std::vector<std::vector<float>> not_finite{{}, {}, {1, NAN, 3, 4}};
  refuse({{"ring-v1", not_finite}}, "vector 3, extra 'ring-v1'");
  const std::vector<std::vector<float>> five{{1, 2, 3, 4, 5}, {}, {}};
  refuse({{"ring-v1", five}}, "extra descriptors of 'ring-v1' have 5 values, the store's 4");
  const std::vector<std::vector<float>> fine{{1, 2, 3, 4}, {}, {}};
  refuse({{"bf-v1", fine}}, "extra descriptors of 'bf-v1' repeat the key");
  refuse({{"ring-v1", fine}, {"ring-v1", fine}}, "extra key 'ring-v1' given twice");
  refuse({{"", fine}}, "an extra descriptor key");
  ExpectSameCounts(store_->Counts(), before_extra);
}

TEST_F(StoreTest, AddScansStoresDescriptorsInTheSameTransaction) {
  auto b1 = Bytes("one"), b2 = Bytes("two"), b3 = Bytes("three");
  std::vector<NewScan> scans{
      {Meta("one.x3p"), b1, {{"bf-v1", {1, 2}}, {"bf-v2", {5}}}},
      {Meta("two.x3p"), b2, {{"bf-v1", {3, 4}}}},
  };
  const auto added = store_->AddScans("alice", CalibreSpec("C1", "A", "9mm Luger"), scans);
  ASSERT_EQ(added.size(), 2u);
  const Partition nine{ExhibitKind::kCartridgeCase, "9mm Luger"};
  const auto rows = store_->Descriptors("bf-v1", nine);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].scan, added[0].scan);
  EXPECT_EQ(rows[0].vector, (std::vector<float>{1, 2}));
  EXPECT_EQ(rows[1].vector, (std::vector<float>{3, 4}));
  EXPECT_EQ(store_->DescriptorScanIds("bf-v2", nine), std::vector<ScanId>{added[0].scan});

  // A duplicate's descriptors are ignored: the file is already stored.
  std::vector<NewScan> again{{Meta("one.x3p"), b1, {{"bf-v3", {7}}}}};
  EXPECT_EQ(store_->AddScans("alice", CalibreSpec("C1", "A", "9mm Luger"), again)[0].status,
            AddStatus::kDuplicate);
  EXPECT_TRUE(store_->Descriptors("bf-v3", nine).empty());

  // A bad descriptor on any scan stores nothing of the batch, not even objects.
  const StoreCounts before = store_->Counts();
  auto objects = [&] {
    size_t n = 0;
    for (const auto& f : fs::recursive_directory_iterator(node_ / "objects")) {
      n += f.is_regular_file() ? 1 : 0;
    }
    return n;
  };
  const size_t objects_before = objects();
  const auto b4 = Bytes("four");
  auto refused = [&](std::vector<NewDescriptor> descriptors, const std::string& problem) {
    std::vector<NewScan> batch{{Meta("three.x3p"), b3, {}}, {Meta("four.x3p"), b4, descriptors}};
    ExpectError([&] { store_->AddScans("alice", CalibreSpec("C2", "B", "9mm Luger"), batch); },
                problem);
    ExpectSameCounts(store_->Counts(), before);
    EXPECT_EQ(objects(), objects_before);
  };
  refused({{"bf-v1", {1, 2, 3}}}, "'four.x3p' of exhibit C2/B: descriptor 'bf-v1' has 3 values");
  refused({{"bf-v9", {1}}, {"bf-v9", {2}}}, "descriptor 'bf-v9' is given twice");
  refused({{"bf-v9", {INFINITY}}}, "value 0 is not a finite number");
  refused({{"", {1}}}, "descriptor key is empty");

  // A failure inside the transaction (here a trigger refusing descriptor rows)
  // leaves no exhibit, scan, descriptor or audit row behind.
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("CREATE TRIGGER refuse_descriptor BEFORE INSERT ON descriptors BEGIN "
                       "SELECT RAISE(ABORT, 'descriptor refused by test'); END"),
              "");
  }
  std::vector<NewScan> batch{{Meta("three.x3p"), b3, {{"bf-v1", {8, 9}}}}};
  ExpectError([&] { store_->AddScans("alice", CalibreSpec("C2", "B", "9mm Luger"), batch); },
              "descriptor refused by test");
  ExpectSameCounts(store_->Counts(), before);
  EXPECT_THROW(store_->FindExhibit("C2/B"), Error);
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("DROP TRIGGER refuse_descriptor"), "");
  }
  EXPECT_TRUE(store_->Verify().ok());
}

TEST_F(StoreTest, ScansLackingADescriptor) {
  const auto a = Add(CalibreSpec("C1", "A", "9mm Luger"), {"a1", "a2"});
  const auto k = Add(CalibreSpec("C1", "K", "9mm Luger", ExhibitKind::kBullet), {"k1"});
  store_->PutDescriptor(a[0].scan, "bf-v1", std::vector<float>{1});
  auto ids = [](const std::vector<ScanRecord>& scans) {
    std::vector<ScanId> out;
    for (const auto& s : scans) out.push_back(s.id);
    return out;
  };
  EXPECT_EQ(ids(store_->ScansLackingDescriptor("bf-v1", std::nullopt)),
            (std::vector<ScanId>{a[1].scan, k[0].scan}));
  EXPECT_EQ(ids(store_->ScansLackingDescriptor("bf-v1", ExhibitKind::kCartridgeCase)),
            std::vector<ScanId>{a[1].scan});
  EXPECT_EQ(ids(store_->ScansLackingDescriptor("bf-v2", ExhibitKind::kCartridgeCase)),
            (std::vector<ScanId>{a[0].scan, a[1].scan}));
  const auto lacking = store_->ScansLackingDescriptor("bf-v1", ExhibitKind::kBullet);
  ASSERT_EQ(lacking.size(), 1u);
  EXPECT_EQ(lacking[0].sha256, k[0].sha256);
  EXPECT_EQ(lacking[0].meta.original_name, "k1.x3p");
}

class LeadTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    q_ = Add(CalibreSpec("2026-1", "E1", "9mm Luger"), {"q"})[0].exhibit;
    b_ = Add(CalibreSpec("2025-7", "T1", "9mm Luger"), {"b"})[0].exhibit;
    c_ = Add(CalibreSpec("2024-3", "E4", std::nullopt), {"c"})[0].exhibit;
  }
  static LeadCandidate Candidate(ExhibitId e, double score, std::optional<double> strength = {},
                                 std::optional<int> rank = {}, std::string registration = "") {
    return LeadCandidate{e, "cmc-v1", score, strength, rank, std::move(registration)};
  }
  ExhibitId q_, b_, c_;
};

TEST_F(LeadTest, RecordedDeduplicatedAndAudited) {
  const size_t audit_before = store_->AuditTrail(std::nullopt).size();
  const auto r = store_->RecordLeads(
      "searcher", q_,
      {Candidate(b_, 21, 0.001, 1, R"({"angle_deg":3.5,"dx_um":-12})"), Candidate(c_, 4)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].outcome, LeadOutcome::kCreated);
  EXPECT_EQ(r[1].outcome, LeadOutcome::kCreated);
  EXPECT_NE(r[0].lead, r[1].lead);
  EXPECT_EQ(r[0].status, LeadStatus::kOpen);

  const LeadRecord l = store_->FindLead(r[0].lead);
  EXPECT_EQ(l.query.id, q_);
  EXPECT_EQ(l.query.Label(), "2026-1/E1");
  EXPECT_EQ(l.candidate.id, b_);
  EXPECT_EQ(l.candidate.Label(), "2025-7/T1");
  EXPECT_EQ(l.candidate.case_id, store_->FindExhibit("2025-7/T1").case_id);
  EXPECT_EQ(l.method, "cmc-v1");
  EXPECT_EQ(l.score, 21);
  EXPECT_EQ(l.strength, 0.001);
  EXPECT_EQ(l.coarse_rank, 1);
  EXPECT_EQ(l.registration_json, R"({"angle_deg":3.5,"dx_um":-12})");
  EXPECT_EQ(l.status, LeadStatus::kOpen);
  EXPECT_FALSE(l.decided_by);
  EXPECT_EQ(l.created_at, l.updated_at);
  EXPECT_EQ(store_->FindLead(r[1].lead).registration_json, "{}");
  EXPECT_FALSE(store_->FindLead(r[1].lead).strength);

  // One audit row for the call, about the query exhibit.
  auto audit = store_->AuditTrail(std::nullopt);
  ASSERT_EQ(audit.size(), audit_before + 1);
  EXPECT_EQ(audit.back().action, "record_leads");
  EXPECT_EQ(audit.back().actor, "searcher");
  EXPECT_EQ(audit.back().subject, "leads for exhibit 2026-1/E1");
  EXPECT_EQ(audit.back().exhibit, q_);
  EXPECT_TRUE(Contains(audit.back().details, R"("created":2,"updated":0,"already_decided":0)"))
      << audit.back().details;
  EXPECT_TRUE(Contains(audit.back().details, R"("candidate":"2025-7/T1","method":"cmc-v1")"))
      << audit.back().details;

  // The same pair found again, from the other side: the open lead is updated.
  const auto again =
      store_->RecordLeads("searcher", b_, {Candidate(q_, 25, 0.0005, 2, R"({"angle_deg":-3.5})")});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].outcome, LeadOutcome::kUpdated);
  EXPECT_EQ(again[0].lead, r[0].lead);
  const LeadRecord u = store_->FindLead(r[0].lead);
  EXPECT_EQ(u.query.id, b_);
  EXPECT_EQ(u.candidate.id, q_);
  EXPECT_EQ(u.score, 25);
  EXPECT_EQ(u.strength, 0.0005);
  EXPECT_EQ(u.coarse_rank, 2);
  EXPECT_EQ(u.registration_json, R"({"angle_deg":-3.5})");
  EXPECT_EQ(u.created_at, l.created_at);
  EXPECT_EQ(store_->Counts().leads, 2);
  audit = store_->AuditTrail(std::nullopt);
  EXPECT_TRUE(Contains(audit.back().details, R"("created":0,"updated":1)")) << audit.back().details;

  // Open first, then by score.
  const auto leads = store_->Leads(false);
  ASSERT_EQ(leads.size(), 2u);
  EXPECT_EQ(leads[0].id, r[0].lead);
  EXPECT_EQ(leads[1].id, r[1].lead);

  // The database itself refuses a second open lead for a pair.
  RawDb raw(Db());
  EXPECT_TRUE(Contains(raw.Exec("INSERT INTO leads (query_exhibit_id, candidate_exhibit_id,"
                                " method, score, registration, status, created_at, updated_at)"
                                " VALUES (" +
                                std::to_string(b_.value) + ", " + std::to_string(q_.value) +
                                ", 'x', 1, '{}', 'open', 't', 't')"),
                       "UNIQUE constraint failed"));
  EXPECT_TRUE(store_->RecordLeads("searcher", q_, {}).empty());
  EXPECT_EQ(store_->AuditTrail(std::nullopt).size(), audit.size());
}

TEST_F(LeadTest, RecordLeadsRefusesBadInputAndChangesNothing) {
  const auto d = Add(CalibreSpec("2026-9", "X", ".45 ACP"), {"d"})[0].exhibit;
  const auto k =
      Add(CalibreSpec("2026-9", "K", "9mm Luger", ExhibitKind::kBullet), {"k"})[0].exhibit;
  ExhibitSpec pin = CalibreSpec("2026-9", "P", "9mm Luger");
  pin.cc.firing_pin = "rectangular";
  const auto p = Add(pin, {"p"})[0].exhibit;
  ExhibitSpec round = CalibreSpec("2026-9", "R", "9mm Luger");
  round.cc.firing_pin = "circular";
  const auto rnd = Add(round, {"r"})[0].exhibit;
  store_->RecordLeads("searcher", q_, {Candidate(b_, 10)});
  const StoreCounts before = store_->Counts();
  const LeadRecord lead_before = store_->FindLead(store_->Leads(true)[0].id);

  auto record = [&](ExhibitId query, std::vector<LeadCandidate> candidates,
                    const std::string& actor = "searcher") {
    return [=, this] { store_->RecordLeads(actor, query, candidates); };
  };
  ExpectError(record(ExhibitId(999), {Candidate(b_, 1)}), "no exhibit #999 in the store");
  ExpectError(record(q_, {Candidate(ExhibitId(998), 1)}), "lead candidate 1 of 1: no exhibit #998");
  ExpectError(record(q_, {Candidate(q_, 1)}), "exhibit 2026-1/E1 is the query itself");
  ExpectError(record(q_, {Candidate(k, 1)}), "is a bullet, exhibit 2026-1/E1 a cartridge_case");
  ExpectError(record(q_, {Candidate(d, 1)}),
              "exhibit 2026-9/X is of calibre '.45 ACP', exhibit 2026-1/E1 of '9mm Luger'; "
              "exhibits of another calibre are never compared");
  ExpectError(record(p, {Candidate(rnd, 1)}), "conflict with those of 2026-9/P");
  ExpectError(record(q_, {Candidate(c_, NAN)}), "the score is not a finite number");
  ExpectError(record(q_, {Candidate(c_, 1, 1.5)}), "the strength 1.5 is not between 0 and 1");
  ExpectError(record(q_, {Candidate(c_, 1, {}, 0)}), "the coarse rank 0 is below 1");
  ExpectError(record(q_, {Candidate(c_, 1, {}, {}, "[1]")}), "registration is not a JSON object");
  ExpectError(record(q_, {Candidate(c_, 1, {}, {}, "{bad")}), "registration is not a JSON object");
  ExpectError(record(q_, {LeadCandidate{c_, "", 1, {}, {}, ""}}), "the method is empty");
  ExpectError(record(q_, {Candidate(c_, 1)}, ""), "actor");
  // The first candidate is fine and the pair's lead would be updated, the
  // second is not: the call changes nothing.
  ExpectError(record(q_, {Candidate(b_, 99), Candidate(ExhibitId(997), 1)}),
              "lead candidate 2 of 2: no exhibit #997");
  ExpectSameCounts(store_->Counts(), before);
  EXPECT_EQ(store_->FindLead(lead_before.id).score, 10);
  // Unknown calibre on one side is not a conflict.
  EXPECT_EQ(store_->RecordLeads("searcher", q_, {Candidate(c_, 3)})[0].outcome,
            LeadOutcome::kCreated);
}

TEST_F(LeadTest, ConfirmCreatesHitAndAlertInOneTransaction) {
  const auto r = store_->RecordLeads("searcher", q_, {Candidate(b_, 21, 0.001, 1)});
  const LeadId id = r[0].lead;
  const size_t audit_before = store_->AuditTrail(std::nullopt).size();

  const ConfirmedLead c = store_->ConfirmLead(id, "dr. expert", "same breech-face marks");
  EXPECT_EQ(c.lead.id, id);
  EXPECT_EQ(c.lead.status, LeadStatus::kConfirmed);
  EXPECT_EQ(c.lead.decided_by, "dr. expert");
  EXPECT_EQ(c.lead.note, "same breech-face marks");
  EXPECT_EQ(c.hit.lead, id);
  EXPECT_EQ(c.hit.a.Label(), "2026-1/E1");
  EXPECT_EQ(c.hit.b.Label(), "2025-7/T1");
  EXPECT_EQ(c.hit.a.case_id, store_->FindExhibit("2026-1/E1").case_id);
  EXPECT_EQ(c.hit.b.case_id, store_->FindExhibit("2025-7/T1").case_id);
  EXPECT_EQ(c.hit.confirmed_by, "dr. expert");
  EXPECT_EQ(c.hit.confirmed_at, *c.lead.decided_at);
  EXPECT_EQ(c.alert.hit, c.hit.id);
  EXPECT_EQ(c.alert.origin, "local");
  EXPECT_FALSE(c.alert.delivered_at);
  EXPECT_FALSE(c.alert.acknowledged_at);
  EXPECT_TRUE(Contains(c.alert.summary, "hit: 2026-1/E1 and 2025-7/T1")) << c.alert.summary;
  EXPECT_TRUE(Contains(c.alert.summary, "confirmed by dr. expert")) << c.alert.summary;

  // What was returned is what is stored.
  const LeadRecord stored = store_->FindLead(id);
  EXPECT_EQ(stored.status, LeadStatus::kConfirmed);
  EXPECT_EQ(stored.decided_at, c.lead.decided_at);
  ASSERT_EQ(store_->Hits().size(), 1u);
  EXPECT_EQ(store_->Hits()[0].id, c.hit.id);
  const auto alerts = store_->Alerts();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].payload_json, c.alert.payload_json);
  EXPECT_TRUE(store_->Leads(true).empty());
  EXPECT_EQ(store_->Leads(false).size(), 1u);

  // The payload names both cases and exhibits, scores and who confirmed.
  {
    RawDb raw(Db());
    auto field = [&](const std::string& path) {
      return raw.Text("SELECT json_extract(payload, '" + path + "') FROM alerts");
    };
    EXPECT_EQ(field("$.a.case"), "2026-1");
    EXPECT_EQ(field("$.a.exhibit"), "E1");
    EXPECT_EQ(field("$.b.case"), "2025-7");
    EXPECT_EQ(field("$.b.exhibit"), "T1");
    EXPECT_EQ(field("$.b.calibre"), "9mm Luger");
    EXPECT_EQ(field("$.method"), "cmc-v1");
    EXPECT_EQ(field("$.score"), "21");
    EXPECT_EQ(field("$.strength"), "0.001");
    EXPECT_EQ(field("$.confirmed_by"), "dr. expert");
    EXPECT_EQ(field("$.node.country"), "RS");
    EXPECT_EQ(field("$.hit"), std::to_string(c.hit.id.value));
  }

  // One audit row.
  const auto audit = store_->AuditTrail(std::nullopt);
  ASSERT_EQ(audit.size(), audit_before + 1);
  EXPECT_EQ(audit.back().action, "confirm_lead");
  EXPECT_EQ(audit.back().actor, "dr. expert");
  EXPECT_EQ(audit.back().subject, "lead " + std::to_string(id.value) + ": 2026-1/E1 and 2025-7/T1");
  EXPECT_EQ(audit.back().exhibit, q_);
  EXPECT_TRUE(Contains(audit.back().details, "\"hit\":" + std::to_string(c.hit.id.value)));
  EXPECT_TRUE(store_->Verify().ok());
}

TEST_F(LeadTest, DecisionsAreFinal) {
  const auto r = store_->RecordLeads("searcher", q_, {Candidate(b_, 21), Candidate(c_, 3)});
  const LeadId hit_lead = r[0].lead, rejected_lead = r[1].lead;
  store_->ConfirmLead(hit_lead, "alice", "");
  const LeadRecord rejected = store_->RejectLead(rejected_lead, "bob", "different firing pin drag");
  EXPECT_EQ(rejected.status, LeadStatus::kRejected);
  EXPECT_EQ(rejected.decided_by, "bob");
  EXPECT_EQ(rejected.note, "different firing pin drag");
  EXPECT_EQ(store_->FindLead(rejected_lead).status, LeadStatus::kRejected);
  EXPECT_EQ(store_->AuditTrail(std::nullopt).back().action, "reject_lead");
  EXPECT_FALSE(store_->FindLead(hit_lead).note);  // an empty note is no note

  const StoreCounts before = store_->Counts();
  const std::string h = std::to_string(hit_lead.value), x = std::to_string(rejected_lead.value);
  ExpectError([&] { store_->ConfirmLead(hit_lead, "bob", ""); },
              "lead " + h + " (2026-1/E1 and 2025-7/T1) is confirmed, not open: decided by alice");
  ExpectError([&] { store_->RejectLead(hit_lead, "bob", ""); }, "lead " + h + " (");
  ExpectError([&] { store_->ConfirmLead(rejected_lead, "alice", ""); },
              "lead " + x + " (2026-1/E1 and 2024-3/E4) is rejected, not open: decided by bob");
  ExpectError([&] { store_->RejectLead(rejected_lead, "alice", ""); }, "is rejected, not open");
  ExpectError([&] { store_->ConfirmLead(LeadId(999), "alice", ""); }, "no lead 999 in the store");
  ExpectError([&] { store_->RejectLead(LeadId(999), "alice", ""); }, "no lead 999 in the store");
  EXPECT_THROW(store_->FindLead(LeadId(999)), Error);
  ExpectSameCounts(store_->Counts(), before);

  // A decided pair is not re-opened by a later search, from either side.
  const auto again = store_->RecordLeads("searcher", b_, {Candidate(q_, 30)});
  EXPECT_EQ(again[0].outcome, LeadOutcome::kAlreadyDecided);
  EXPECT_EQ(again[0].lead, hit_lead);
  EXPECT_EQ(again[0].status, LeadStatus::kConfirmed);
  EXPECT_EQ(store_->RecordLeads("searcher", q_, {Candidate(c_, 30)})[0].status,
            LeadStatus::kRejected);
  ExpectSameCounts(store_->Counts(), before);  // and no audit row
  EXPECT_EQ(store_->FindLead(hit_lead).score, 21);
}

TEST_F(LeadTest, DecidingNeedsAName) {
  const auto r = store_->RecordLeads("searcher", q_, {Candidate(b_, 21)});
  const StoreCounts before = store_->Counts();
  ExpectError([&] { store_->ConfirmLead(r[0].lead, "", ""); },
              "the confirming expert (by) is empty");
  ExpectError([&] { store_->ConfirmLead(r[0].lead, "  ", ""); },
              "the confirming expert (by) is empty");
  ExpectError([&] { store_->RejectLead(r[0].lead, "", ""); }, "the rejecting expert (by) is empty");
  ExpectError([&] { store_->ConfirmLead(r[0].lead, "a\nb", ""); }, "control character");
  ExpectError([&] { store_->ConfirmLead(r[0].lead, "alice", std::string("x\0y", 3)); },
              "the note contains a control character");
  ExpectSameCounts(store_->Counts(), before);
  EXPECT_EQ(store_->FindLead(r[0].lead).status, LeadStatus::kOpen);
  // A note may span lines.
  EXPECT_EQ(store_->RejectLead(r[0].lead, "alice", "line 1\nline 2").note, "line 1\nline 2");
}

TEST_F(LeadTest, AFailedConfirmationLeavesTheLeadOpen) {
  const auto r = store_->RecordLeads("searcher", q_, {Candidate(b_, 21)});
  const StoreCounts before = store_->Counts();
  // The alert is written after the lead and the hit: refusing it must undo both.
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("CREATE TRIGGER refuse_alert BEFORE INSERT ON alerts BEGIN "
                       "SELECT RAISE(ABORT, 'alert refused by test'); END"),
              "");
  }
  ExpectError([&] { store_->ConfirmLead(r[0].lead, "alice", ""); }, "alert refused by test");
  ExpectSameCounts(store_->Counts(), before);
  const LeadRecord l = store_->FindLead(r[0].lead);
  EXPECT_EQ(l.status, LeadStatus::kOpen);
  EXPECT_FALSE(l.decided_by);
  {
    RawDb raw(Db());
    ASSERT_EQ(raw.Exec("DROP TRIGGER refuse_alert"), "");
  }
  EXPECT_EQ(store_->ConfirmLead(r[0].lead, "alice", "").lead.status, LeadStatus::kConfirmed);
  EXPECT_TRUE(store_->Verify().ok());
}

TEST_F(LeadTest, SchemaRefusesInconsistentRows) {
  RawDb raw(Db());
  const std::string q = std::to_string(q_.value), b = std::to_string(b_.value);
  auto insert = [&](const std::string& values) {
    return raw.Exec(
        "INSERT INTO leads (query_exhibit_id, candidate_exhibit_id, method, score, strength,"
        " registration, status, created_at, updated_at, decided_by, decided_at) VALUES (" +
        values + ")");
  };
  EXPECT_TRUE(Contains(insert(q + "," + q + ",'m',1,NULL,'{}','open','t','t',NULL,NULL"),
                       "CHECK constraint failed"));
  EXPECT_TRUE(Contains(insert(q + "," + b + ",'m',1,2,'{}','open','t','t',NULL,NULL"),
                       "CHECK constraint failed"));
  EXPECT_TRUE(Contains(insert(q + "," + b + ",'m',1,NULL,'[]','open','t','t',NULL,NULL"),
                       "CHECK constraint failed"));
  EXPECT_TRUE(Contains(insert(q + "," + b + ",'m',1,NULL,'{}','confirmed','t','t',NULL,NULL"),
                       "CHECK constraint failed"));
  EXPECT_TRUE(Contains(insert(q + "," + b + ",'m',1,NULL,'{}','open','t','t','x','t'"),
                       "CHECK constraint failed"));
  EXPECT_TRUE(Contains(raw.Exec("INSERT INTO alerts (created_at, origin, summary, payload) VALUES "
                                "('t', 'local', 's', '{}')"),
                       "CHECK constraint failed"));
  EXPECT_EQ(raw.Exec("INSERT INTO alerts (created_at, origin, summary, payload) VALUES "
                     "('t', 'remote', 'from a peer', '{}')"),
            "");
  EXPECT_EQ(store_->Alerts().size(), 1u);
  EXPECT_EQ(store_->Alerts()[0].origin, "remote");
  EXPECT_FALSE(store_->Alerts()[0].hit);
}

}  // namespace
}  // namespace bien

// The evidence store: SQLite (storage/sqlite.h) plus content-addressed
// originals under objects/. docs/SCHEMA.md documents what this file writes.
#include "storage/store.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/hash.h"
#include "core/time.h"
#include "storage/sqlite.h"
#include "storage/store_internal.h"

namespace bien {

namespace fs = std::filesystem;

const char* ToString(ExhibitKind kind) {
  switch (kind) {
    case ExhibitKind::kCartridgeCase:
      return "cartridge_case";
    case ExhibitKind::kBullet:
      return "bullet";
  }
  BIEN_CHECK(false);
}

const char* ToString(ExhibitRole role) {
  switch (role) {
    case ExhibitRole::kEvidence:
      return "evidence";
    case ExhibitRole::kTestFire:
      return "test_fire";
  }
  BIEN_CHECK(false);
}

const char* ToString(Twist twist) {
  switch (twist) {
    case Twist::kLeft:
      return "left";
    case Twist::kRight:
      return "right";
  }
  BIEN_CHECK(false);
}

std::optional<ExhibitKind> ParseExhibitKind(std::string_view text) {
  if (text == "cartridge_case") return ExhibitKind::kCartridgeCase;
  if (text == "bullet") return ExhibitKind::kBullet;
  return std::nullopt;
}

std::optional<ExhibitRole> ParseExhibitRole(std::string_view text) {
  if (text == "evidence") return ExhibitRole::kEvidence;
  if (text == "test_fire") return ExhibitRole::kTestFire;
  return std::nullopt;
}

std::optional<Twist> ParseTwist(std::string_view text) {
  if (text == "left") return Twist::kLeft;
  if (text == "right") return Twist::kRight;
  return std::nullopt;
}

const char* ToString(LeadStatus status) {
  switch (status) {
    case LeadStatus::kOpen:
      return "open";
    case LeadStatus::kConfirmed:
      return "confirmed";
    case LeadStatus::kRejected:
      return "rejected";
  }
  BIEN_CHECK(false);
}

std::optional<LeadStatus> ParseLeadStatus(std::string_view text) {
  if (text == "open") return LeadStatus::kOpen;
  if (text == "confirmed") return LeadStatus::kConfirmed;
  if (text == "rejected") return LeadStatus::kRejected;
  return std::nullopt;
}

const char* ToString(LeadOutcome outcome) {
  switch (outcome) {
    case LeadOutcome::kCreated:
      return "created";
    case LeadOutcome::kUpdated:
      return "updated";
    case LeadOutcome::kAlreadyDecided:
      return "already_decided";
  }
  BIEN_CHECK(false);
}

namespace {

constexpr const char* kUnknownCalibre = "unknown";

// "unknown" in any (ASCII) case: the same test as the SQL in Descriptors.
bool IsUnknownCalibre(std::string_view calibre) {
  if (calibre.size() != std::strlen(kUnknownCalibre)) return false;
  for (size_t i = 0; i < calibre.size(); ++i) {
    char c = calibre[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kUnknownCalibre[i]) return false;
  }
  return true;
}

}  // namespace

std::string Partition::Key() const {
  const bool known = calibre && !calibre->empty() && !IsUnknownCalibre(*calibre);
  return std::string(ToString(kind)) + "|" + (known ? *calibre : std::string(kUnknownCalibre));
}

Partition PartitionOf(ExhibitKind kind, const ClassCharacteristics& cc) {
  Partition p;
  p.kind = kind;
  if (cc.calibre && !cc.calibre->empty() && !IsUnknownCalibre(*cc.calibre)) p.calibre = cc.calibre;
  return p;
}

Partition PartitionOf(const ExhibitRecord& exhibit) {
  return PartitionOf(exhibit.kind, exhibit.cc);
}

std::string PartitionKey(const ExhibitRecord& exhibit) { return PartitionOf(exhibit).Key(); }

std::optional<Partition> ParsePartitionKey(std::string_view key) {
  const size_t bar = key.find('|');
  if (bar == std::string_view::npos || bar + 1 == key.size()) return std::nullopt;
  const auto kind = ParseExhibitKind(key.substr(0, bar));
  if (!kind) return std::nullopt;
  Partition p;
  p.kind = *kind;
  const std::string_view calibre = key.substr(bar + 1);
  if (calibre != kUnknownCalibre) {
    if (IsUnknownCalibre(calibre)) return std::nullopt;  // not a key Key() writes
    p.calibre = std::string(calibre);
  }
  return p;
}

bool ClassCompatible(const ClassCharacteristics& a, const ClassCharacteristics& b) {
  auto agree = [](const auto& x, const auto& y) { return !x || !y || *x == *y; };
  return agree(a.firing_pin, b.firing_pin) && agree(a.breech_face, b.breech_face) &&
         agree(a.lands, b.lands) && agree(a.twist, b.twist);
}

namespace {

constexpr size_t kMaxRefLength = 128;
constexpr size_t kMaxDescriptorDim = 65536;
const std::string kZeroHash(64, '0');

// ---------------------------------------------------------------------------
// Schema and migrations. Migration i takes user_version i to i + 1; each runs
// in its own transaction together with the user_version update. Never edit a
// released step: append a new one.

constexpr const char* kSchemaV1 = R"sql(
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
  z_scale        REAL NOT NULL DEFAULT 1 CHECK (z_scale > 0),
  nan_share      REAL NOT NULL CHECK (nan_share BETWEEN 0 AND 1),
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

struct Migration {
  const char* what;
  const char* sql;
  // Runs first, in the same transaction, for what plain SQL cannot say.
  void (*before)(sql::Db& db) = nullptr;
};

// Version-1 databases written by the first release have no scans.z_scale (it
// was added to the version-1 step before version 2 existed); every scan they
// hold was read as standard X3P metres, i.e. z_scale 1. Give them the column
// as the later version 1 has it, so every version-1 database leaves the step
// to version 2 with the same tables.
void AddMissingZScale(sql::Db& db) {
  if (db.QueryInt("SELECT count(*) FROM pragma_table_info('scans') WHERE name = 'z_scale'") == 0) {
    db.Exec("ALTER TABLE scans ADD COLUMN z_scale REAL NOT NULL DEFAULT 1 CHECK (z_scale > 0)");
  }
}

constexpr const char* kSchemaV2 = R"sql(
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

// Search and leads: coarse descriptors per scan and key; leads (candidate
// pairs for review, one open lead per unordered pair); hits (confirmed leads)
// and the alerts they raise.
constexpr const char* kSchemaV3 = R"sql(
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

// Federation (docs/PROTOCOL.md): the peers an administrator admitted; the
// outbox of messages to them (written in the transaction of the change that
// caused each, re-sent with back-off until acknowledged); the inbox of message
// ids received (de-duplication, and correlation requests still to answer);
// federated searches with the answers and candidates peers returned; alerts
// rebuilt so a local alert may come from a confirmed remote candidate, and a
// remote one names the hit notice it came from (unique: a notice raises one
// alert however often it arrives).
constexpr const char* kSchemaV4 = R"sql(
CREATE TABLE peers (
  id              INTEGER PRIMARY KEY,
  name            TEXT NOT NULL UNIQUE
                  CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9_.-]*'),
  endpoint        TEXT NOT NULL CHECK (endpoint GLOB 'tcp://?*:[0-9]*'),
  public_key      TEXT NOT NULL UNIQUE CHECK (length(public_key) = 40),
  share           TEXT NOT NULL CHECK (json_valid(share) AND json_type(share) = 'array'),
  added_at        TEXT NOT NULL,
  added_by        TEXT NOT NULL CHECK (length(added_by) > 0),
  remote_name     TEXT,
  remote_country  TEXT,
  last_seen_at    TEXT,
  state           TEXT CHECK (state IS NULL OR state IN ('up', 'silent', 'gone'))
);
CREATE TABLE outbox (
  id               INTEGER PRIMARY KEY,
  peer_id          INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
  message_id       TEXT NOT NULL UNIQUE
                   CHECK (length(message_id) = 32 AND message_id NOT GLOB '*[^0-9a-f]*'),
  type             TEXT NOT NULL CHECK (length(type) > 0),
  payload          BLOB NOT NULL,
  created_at       TEXT NOT NULL,
  attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_ms  INTEGER NOT NULL,
  expires_ms       INTEGER,
  acked_at         TEXT,
  expired_at       TEXT
);
CREATE INDEX outbox_pending ON outbox(next_attempt_ms) WHERE acked_at IS NULL AND expired_at IS NULL;
CREATE INDEX outbox_by_peer ON outbox(peer_id) WHERE acked_at IS NULL AND expired_at IS NULL;
CREATE TABLE inbox (
  message_id   TEXT PRIMARY KEY
               CHECK (length(message_id) = 32 AND message_id NOT GLOB '*[^0-9a-f]*'),
  peer_key     TEXT NOT NULL CHECK (length(peer_key) = 40),
  type         TEXT NOT NULL CHECK (length(type) > 0),
  received_at  TEXT NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
  payload      BLOB,
  CHECK ((state = 'pending') = (payload IS NOT NULL))
) WITHOUT ROWID;
CREATE TABLE federated_searches (
  id                INTEGER PRIMARY KEY,
  request_id        TEXT NOT NULL UNIQUE
                    CHECK (length(request_id) = 32 AND request_id NOT GLOB '*[^0-9a-f]*'),
  query_exhibit_id  INTEGER NOT NULL REFERENCES exhibits(id),
  partition_key     TEXT NOT NULL,
  created_at        TEXT NOT NULL,
  created_by        TEXT NOT NULL CHECK (length(created_by) > 0),
  expires_ms        INTEGER NOT NULL
);
CREATE TABLE federated_answers (
  id              INTEGER PRIMARY KEY,
  search_id       INTEGER NOT NULL REFERENCES federated_searches(id),
  peer_name       TEXT NOT NULL,
  status          TEXT NOT NULL CHECK (status IN ('ok', 'refused', 'error')),
  detail          TEXT NOT NULL,
  partition_size  INTEGER NOT NULL CHECK (partition_size >= 0),
  coarse_ms       REAL NOT NULL,
  fine_ms         REAL NOT NULL,
  received_at     TEXT NOT NULL,
  UNIQUE (search_id, peer_name)
);
CREATE TABLE remote_candidates (
  id            INTEGER PRIMARY KEY,
  answer_id     INTEGER NOT NULL REFERENCES federated_answers(id),
  peer_name     TEXT NOT NULL,
  case_ref      TEXT NOT NULL CHECK (length(case_ref) BETWEEN 1 AND 128),
  exhibit_ref   TEXT NOT NULL CHECK (length(exhibit_ref) BETWEEN 1 AND 128),
  coarse_rank   INTEGER NOT NULL CHECK (coarse_rank >= 1),
  coarse_score  REAL NOT NULL,
  fine_score    REAL,
  strength      REAL CHECK (strength IS NULL OR strength BETWEEN 0 AND 1),
  method        TEXT NOT NULL,
  status        TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'confirmed', 'rejected')),
  decided_by    TEXT,
  decided_at    TEXT,
  note          TEXT,
  hit_id        TEXT UNIQUE CHECK (hit_id IS NULL OR length(hit_id) = 32),
  CHECK ((status = 'open') = (decided_by IS NULL AND decided_at IS NULL)),
  CHECK ((status = 'confirmed') = (hit_id IS NOT NULL))
);
CREATE INDEX remote_candidates_by_answer ON remote_candidates(answer_id);
CREATE TABLE alerts_v4 (
  id                   INTEGER PRIMARY KEY,
  hit_id               INTEGER REFERENCES hits(id),
  remote_candidate_id  INTEGER REFERENCES remote_candidates(id),
  notice_id            TEXT UNIQUE CHECK (notice_id IS NULL OR length(notice_id) = 32),
  peer_name            TEXT,
  created_at           TEXT NOT NULL,
  origin               TEXT NOT NULL CHECK (origin IN ('local', 'remote')),
  summary              TEXT NOT NULL CHECK (length(summary) > 0),
  payload              TEXT NOT NULL CHECK (json_valid(payload) AND json_type(payload) = 'object'),
  delivered_at         TEXT,
  acknowledged_at      TEXT,
  acknowledged_by      TEXT CHECK (acknowledged_by IS NULL OR length(acknowledged_by) > 0),
  CHECK (origin = 'remote' OR hit_id IS NOT NULL OR remote_candidate_id IS NOT NULL),
  CHECK (origin = 'local' OR notice_id IS NOT NULL OR hit_id IS NULL)
);
INSERT INTO alerts_v4 (id, hit_id, created_at, origin, summary, payload, delivered_at,
                       acknowledged_at, acknowledged_by)
  SELECT id, hit_id, created_at, origin, summary, payload, delivered_at, acknowledged_at,
         acknowledged_by FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_v4 RENAME TO alerts;
CREATE INDEX alerts_by_hit ON alerts(hit_id);
)sql";

constexpr std::array kMigrations{
    Migration{"create cases, exhibits, scans, features and the audit log", kSchemaV1},
    Migration{"add exhibits.firearm_ref and the known-non-match score table", kSchemaV2,
              AddMissingZScale},
    Migration{"add descriptors, leads, hits and alerts", kSchemaV3},
    Migration{"add peers, outbox, inbox and federated searches; alerts from the federation",
              kSchemaV4},
};

// ---------------------------------------------------------------------------
// Small helpers.

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool HasControlChar(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

// Characters (UTF-8 code points), not bytes.
size_t CharCount(std::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1) {
    throw Error("cannot get random bytes from OpenSSL");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : buf) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string ErrnoText() { return std::strerror(errno); }

// A reference (case or exhibit): non-empty, at most 128 characters, no
// control characters, no surrounding blanks.
void CheckRef(const std::string& what, const std::string& ref) {
  if (ref.empty()) throw Error(what + " is empty");
  if (HasControlChar(ref)) throw Error(what + " " + Quote(ref) + " contains a control character");
  if (CharCount(ref) > kMaxRefLength) {
    throw Error(what + " " + Quote(ref) + " is longer than " + std::to_string(kMaxRefLength) +
                " characters");
  }
  if (ref.front() == ' ' || ref.back() == ' ') {
    throw Error(what + " " + Quote(ref) + " begins or ends with a blank");
  }
}

// A one-line field of the audit log (actor, action, subject).
void CheckLine(const std::string& what, const std::string& text, bool may_be_empty) {
  if (!may_be_empty && text.empty()) throw Error(what + " is empty");
  if (HasControlChar(text)) {
    throw Error(what + " " + Quote(text) + " contains a control character");
  }
}

// A descriptor key and vector as PutDescriptor and AddScans take them.
void CheckDescriptor(const std::string& what, const std::string& key,
                     std::span<const float> vector) {
  CheckRef(what + ": the descriptor key", key);
  if (vector.empty()) throw Error(what + ": descriptor " + Quote(key) + " is empty");
  if (vector.size() > kMaxDescriptorDim) {
    throw Error(what + ": descriptor " + Quote(key) + " has " + std::to_string(vector.size()) +
                " values, more than " + std::to_string(kMaxDescriptorDim));
  }
  for (size_t i = 0; i < vector.size(); ++i) {
    if (!std::isfinite(vector[i])) {
      throw Error(what + ": descriptor " + Quote(key) + " value " + std::to_string(i) +
                  " is not a finite number");
    }
  }
}

// Who decides a lead: a name, not blank.
void CheckPerson(const std::string& what, const std::string& name) {
  if (name.find_first_not_of(" \t") == std::string::npos) throw Error(what + " is empty");
  CheckLine(what, name, false);
}

// A free-text note: may span lines, but holds no other control characters.
std::optional<std::string> CheckNote(const std::string& note) {
  for (char c : note) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) {
      throw Error("the note contains a control character");
    }
  }
  if (note.empty()) return std::nullopt;
  return note;
}

// Float32 vectors are stored as their bytes; bien builds on little-endian
// machines only, so the blob is little-endian IEEE 754 (docs/SCHEMA.md).
static_assert(std::endian::native == std::endian::little, "descriptor blobs are little-endian");
static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559);

std::span<const std::byte> FloatBytes(std::span<const float> vector) {
  return std::as_bytes(vector);
}

std::vector<float> BytesToFloats(const std::vector<std::byte>& blob) {
  std::vector<float> out(blob.size() / sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), blob.data(), out.size() * sizeof(float));
  return out;
}

// "0.00123" for a score or strength in a message.
std::string Number(double value) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%.4g", value);
  return buf.data();
}

// A JSON object built by hand (storage does not depend on a JSON library).
class JsonObject {
 public:
  JsonObject& Add(std::string_view key, std::string_view value) {
    Key(key);
    Escape(value);
    return *this;
  }
  JsonObject& Add(std::string_view key, const char* value) {
    return Add(key, std::string_view(value));
  }
  JsonObject& Add(std::string_view key, const std::string& value) {
    return Add(key, std::string_view(value));
  }
  JsonObject& Add(std::string_view key, int64_t value) {
    Key(key);
    text_ += std::to_string(value);
    return *this;
  }
  JsonObject& Add(std::string_view key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonObject& Add(std::string_view key, double value) {
    Key(key);
    if (!std::isfinite(value)) {
      text_ += "null";
      return *this;
    }
    std::array<char, 64> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), value);
    BIEN_CHECK(ec == std::errc());
    text_.append(buf.data(), end);
    return *this;
  }
  JsonObject& AddRaw(std::string_view key, std::string_view json) {
    Key(key);
    text_ += json;
    return *this;
  }
  template <typename T>
  JsonObject& Add(std::string_view key, const std::optional<T>& value) {
    if (value) return Add(key, *value);
    return AddRaw(key, "null");
  }
  bool empty() const { return text_.empty(); }
  std::string str() const { return "{" + text_ + "}"; }

 private:
  void Key(std::string_view key) {
    if (!text_.empty()) text_ += ",";
    Escape(key);
    text_ += ":";
  }
  void Escape(std::string_view s) {
    text_ += '"';
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      switch (c) {
        case '"':
          text_ += "\\\"";
          break;
        case '\\':
          text_ += "\\\\";
          break;
        case '\n':
          text_ += "\\n";
          break;
        case '\r':
          text_ += "\\r";
          break;
        case '\t':
          text_ += "\\t";
          break;
        default:
          if (u < 0x20 || u == 0x7f) {
            static constexpr char kHex[] = "0123456789abcdef";
            text_ += "\\u00";
            text_ += kHex[u >> 4];
            text_ += kHex[u & 15];
          } else {
            text_ += c;
          }
      }
    }
    text_ += '"';
  }
  std::string text_;
};

// The text whose SHA-256 is an audit row's row_hash (docs/SCHEMA.md).
std::string AuditCanonicalText(int64_t seq, const std::string& at, const std::string& actor,
                               const std::string& action, const std::string& subject,
                               std::optional<int64_t> exhibit_id,
                               const std::optional<std::string>& sha256, const std::string& details,
                               const std::string& prev_hash) {
  std::string text;
  text += std::to_string(seq) + "\n";
  text += at + "\n";
  text += actor + "\n";
  text += action + "\n";
  text += subject + "\n";
  text += (exhibit_id ? std::to_string(*exhibit_id) : std::string()) + "\n";
  text += sha256.value_or("") + "\n";
  text += details + "\n";
  text += prev_hash;
  return text;
}

// ---------------------------------------------------------------------------
// Files.

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting a failure (a deferred write error shows up here).
  void Close(const fs::path& path) {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error(path.string() + ": close failed: " + ErrnoText());
  }

 private:
  int fd_;
};

void FsyncDir(const fs::path& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) throw Error(dir.string() + ": cannot open folder: " + ErrnoText());
  if (::fsync(fd.get()) != 0) throw Error(dir.string() + ": fsync failed: " + ErrnoText());
  fd.Close(dir);
}

// Writes `bytes` to `tmp` (which must not exist), with `mode`, fsyncs it and
// renames it to `target`, then fsyncs the target's folder. The temp file is
// removed on failure.
void WriteFileAtomically(const fs::path& tmp, const fs::path& target,
                         std::span<const std::byte> bytes, mode_t mode) {
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) throw Error(tmp.string() + ": cannot create: " + ErrnoText());
  try {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(tmp.string() + ": write failed: " + ErrnoText());
      }
      done += static_cast<size_t>(n);
    }
    if (::fchmod(fd.get(), mode) != 0) {
      throw Error(tmp.string() + ": cannot set permissions: " + ErrnoText());
    }
    if (::fsync(fd.get()) != 0) throw Error(tmp.string() + ": fsync failed: " + ErrnoText());
    fd.Close(tmp);
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      throw Error(target.string() + ": cannot move " + tmp.filename().string() +
                  " into place: " + ErrnoText());
    }
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
  FsyncDir(target.parent_path());
}

// True when `path` is a regular file of `size` bytes whose SHA-256 is `sha256`.
bool FileMatches(const fs::path& path, uint64_t size, const std::string& sha256) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  const auto actual = fs::file_size(path, ec);
  if (ec || actual != size) return false;
  try {
    return Sha256File(path) == sha256;
  } catch (const Error&) {
    return false;
  }
}

// ---------------------------------------------------------------------------
// node.toml

void WriteNodeToml(const fs::path& dir, const NodeConfig& config) {
  std::ostringstream out;
  out << "# A bien evidence node.\n"
         "# bien.db holds cases, exhibits, scans, features and the hash-chained audit log\n"
         "# (schema: docs/SCHEMA.md; its version is the database's PRAGMA user_version);\n"
         "# objects/ holds the original files by SHA-256. Do not edit node_id.\n";
  out << "name = " << toml::value<std::string>(config.name) << "\n";
  out << "country = " << toml::value<std::string>(config.country) << "\n";
  out << "node_id = " << toml::value<std::string>(config.node_id) << "\n";
  out << "created_at = " << toml::value<std::string>(config.created_at) << "\n";
  const std::string text = out.str();
  WriteFileAtomically(dir / ("node.toml." + RandomHex(8) + ".tmp"), dir / "node.toml",
                      std::as_bytes(std::span<const char>(text.data(), text.size())), 0644);
}

bool IsCountryCode(const std::string& s) {
  return s.size() == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

NodeConfig ReadNodeToml(const fs::path& path) {
  toml::table table;
  try {
    table = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    throw Error(path.string() + ": not valid TOML: " + std::string(e.description()) + " (line " +
                std::to_string(e.source().begin.line) + ")");
  }
  auto get = [&](const char* key) {
    const auto value = table[key].value<std::string>();
    if (!value || value->empty()) {
      throw Error(path.string() + ": missing or empty '" + std::string(key) + "'");
    }
    return *value;
  };
  NodeConfig config;
  config.name = get("name");
  config.country = get("country");
  config.node_id = get("node_id");
  config.created_at = get("created_at");
  if (!IsCountryCode(config.country)) {
    throw Error(path.string() + ": country " + Quote(config.country) +
                " is not a two-letter upper-case code");
  }
  if (config.node_id.size() != 32 || !IsLowerHex(config.node_id)) {
    throw Error(path.string() + ": node_id " + Quote(config.node_id) +
                " is not 32 hexadecimal digits");
  }
  return config;
}

// ---------------------------------------------------------------------------
// Opening the database.

// Opens bien.db, refuses a newer schema, sets the connection up (WAL,
// synchronous=FULL, foreign keys, busy timeout) and migrates it forward.
std::unique_ptr<sql::Db> OpenDatabase(const fs::path& path, bool create) {
  auto db = std::make_unique<sql::Db>(
      path, SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOFOLLOW);
  if (sqlite3_busy_timeout(db->handle(), 5000) != SQLITE_OK) db->Fail("cannot set busy timeout");

  int64_t version = 0;
  try {
    // Reading the header is where a damaged or foreign file shows itself.
    version = db->QueryInt("PRAGMA user_version");
  } catch (const Error&) {
    throw Error(path.string() + ": not a usable bien database (" + db->LastError() + ")");
  }
  const int64_t known = static_cast<int64_t>(kMigrations.size());
  if (version > known) {
    throw Error(path.string() + ": created by a newer bien (schema version " +
                std::to_string(version) + "; this build knows up to " + std::to_string(known) +
                ")");
  }
  if (version < 0) {
    throw Error(path.string() + ": invalid schema version " + std::to_string(version));
  }

  const std::string mode = db->QueryText("PRAGMA journal_mode = WAL");
  if (mode != "wal") {
    throw Error(path.string() + ": cannot switch to WAL journal mode (it stays '" + mode + "')");
  }
  db->Exec("PRAGMA synchronous = FULL");
  db->Exec("PRAGMA foreign_keys = ON");
  if (db->QueryInt("PRAGMA foreign_keys") != 1) {
    throw Error(path.string() + ": this SQLite cannot enforce foreign keys");
  }

  for (int64_t step = version; step < known; ++step) {
    sql::Transaction tx(*db);
    // Another process may have migrated meanwhile.
    if (db->QueryInt("PRAGMA user_version") > step) continue;
    try {
      const Migration& migration = kMigrations[static_cast<size_t>(step)];
      if (migration.before) migration.before(*db);
      db->Exec(migration.sql);
    } catch (const Error& e) {
      throw Error(path.string() + ": migration to schema version " + std::to_string(step + 1) +
                  " (" + kMigrations[static_cast<size_t>(step)].what + ") failed: " + e.what());
    }
    db->Exec("PRAGMA user_version = " + std::to_string(step + 1));
    tx.Commit();
  }
  return db;
}

// ---------------------------------------------------------------------------
// The store.

constexpr const char* kExhibitColumns =
    "SELECT e.id, e.case_id, c.case_ref, e.exhibit_ref, e.kind, e.role, e.calibre, e.firing_pin,"
    " e.breech_face, e.lands, e.twist, e.created_at,"
    " (SELECT count(*) FROM scans s WHERE s.exhibit_id = e.id), e.firearm_ref"
    " FROM exhibits e JOIN cases c ON c.id = e.case_id ";

constexpr const char* kScanColumns =
    "SELECT id, exhibit_id, sha256, size_bytes, original_name, format, width, height, dx_m, dy_m,"
    " nan_share, intensity, land, instrument, measured_at, creator, comment, added_at, z_scale"
    " FROM scans ";

constexpr const char* kAuditColumns =
    "SELECT seq, at, actor, action, subject, exhibit_id, sha256, details, prev_hash, row_hash"
    " FROM audit ";

std::string Label(const ExhibitRecord& e) { return e.case_ref + "/" + e.exhibit_ref; }

class SqliteStore final : public Store {
 public:
  SqliteStore(fs::path dir, NodeConfig config, std::unique_ptr<sql::Db> db)
      : dir_(std::move(dir)), config_(std::move(config)), db_(std::move(db)) {}

  const fs::path& dir() const override { return dir_; }
  const NodeConfig& config() const override { return config_; }

  std::vector<AddResult> AddScans(const std::string& actor, const ExhibitSpec& exhibit,
                                  std::span<const NewScan> scans) override;
  std::vector<ExhibitRecord> ListExhibits() const override;
  ExhibitRecord FindExhibit(std::string_view ref) const override;
  std::vector<ScanRecord> ScansOf(ExhibitId exhibit) const override;
  std::vector<ScanRecord> AllScans() const override;
  std::vector<AuditRecord> AuditTrail(std::optional<ExhibitId> exhibit) const override;
  void RecordAudit(const std::string& actor, const std::string& action, const std::string& subject,
                   std::optional<ExhibitId> exhibit, const std::string& details_json) override;
  fs::path ObjectPath(const std::string& sha256) const override;
  void PutFeature(ScanId scan, const std::string& kind, int version,
                  std::span<const std::byte> blob) override;
  std::optional<std::vector<std::byte>> GetFeature(ScanId scan, const std::string& kind,
                                                   int version) const override;
  int RecordKnmScores(const std::string& method, const std::string& origin,
                      const std::vector<KnmScore>& scores, const std::string& actor) override;
  std::vector<double> KnmScores(const std::string& method) const override;
  int64_t CountKnmScores(const std::string& method) const override;
  void PutDescriptor(ScanId scan, const std::string& key, std::span<const float> vector) override;
  std::vector<DescriptorRow> Descriptors(const std::string& key,
                                         const Partition& partition) const override;
  std::vector<DescriptorRow> DescriptorOwners(const std::string& key,
                                              const Partition& partition) const override;
  std::optional<std::vector<float>> GetDescriptor(ScanId scan,
                                                  const std::string& key) const override;
  std::vector<ScanId> DescriptorScanIds(const std::string& key,
                                        const Partition& partition) const override;
  std::vector<ScanRecord> ScansLackingDescriptor(const std::string& key,
                                                 std::optional<ExhibitKind> kind) const override;
  std::vector<Partition> Partitions() const override;
  using Store::AddBenchDistractors;
  std::vector<AddResult> AddBenchDistractors(const std::string& actor, const std::string& calibre,
                                             const std::string& key, int dim,
                                             std::span<const float> vectors,
                                             std::span<const BenchExtraDescriptors> extra) override;
  std::vector<RecordedLead> RecordLeads(const std::string& actor, ExhibitId query,
                                        const std::vector<LeadCandidate>& candidates) override;
  std::vector<LeadRecord> Leads(bool open_only) const override;
  LeadRecord FindLead(LeadId id) const override;
  ConfirmedLead ConfirmLead(LeadId id, const std::string& by, const std::string& note) override;
  LeadRecord RejectLead(LeadId id, const std::string& by, const std::string& note) override;
  std::vector<HitRecord> Hits() const override;
  std::vector<AlertRecord> Alerts() const override;
  StoreCounts Counts() const override;
  SearchStamp SearchStampNow() const override;
  VerifyReport Verify() const override;

  // Appends one audit row; the caller holds a write transaction.
  void AppendAudit(const std::string& actor, const std::string& action, const std::string& subject,
                   std::optional<ExhibitId> exhibit, const std::optional<std::string>& sha256,
                   const std::string& details);

 private:
  // A statement prepared on first use and kept for the store's lifetime.
  sql::Stmt& Q(const std::string& text) const {
    auto& slot = stmts_[text];
    if (!slot) slot = std::make_unique<sql::Stmt>(*db_, text);
    return *slot;
  }

  ExhibitRecord ReadExhibit(const sql::Stmt& s) const;
  ScanRecord ReadScan(const sql::Stmt& s) const;
  std::vector<ExhibitRecord> QueryExhibits(const std::string& where,
                                           const std::vector<std::string>& params) const;
  std::vector<ScanRecord> QueryScans(const std::string& where, std::optional<int64_t> param) const;
  std::optional<ExhibitRecord> ExhibitByRefs(const std::string& case_ref,
                                             const std::string& exhibit_ref) const;
  // Stores an original under objects/ unless an intact copy is already there.
  void WriteObject(const std::string& sha256, std::span<const std::byte> bytes);

  bool IsJsonObject(const std::string& text) const;
  std::optional<ExhibitRecord> ExhibitById(ExhibitId id) const;
  // The dimension of the key's stored descriptors (other than `except`'s), if any.
  std::optional<int64_t> DescriptorDim(const std::string& key, std::optional<ScanId> except) const;
  // Inserts or replaces one descriptor (checked by CheckDescriptor); refuses a
  // dimension other than the key's. The caller holds a write transaction.
  void WriteDescriptor(ScanId scan, const std::string& key, std::span<const float> vector,
                       const std::string& now);
  std::vector<DescriptorRow> QueryDescriptors(const std::string& key, const Partition& partition,
                                              bool with_vectors) const;
  std::vector<LeadRecord> QueryLeads(const std::string& where, std::optional<int64_t> param) const;
  std::vector<HitRecord> QueryHits(const std::string& where, std::optional<int64_t> param) const;
  std::vector<AlertRecord> QueryAlerts(const std::string& where,
                                       std::optional<int64_t> param) const;
  // The open lead `id` (throws naming it and its status otherwise); the caller
  // holds a write transaction. Marks it decided with `status`.
  LeadRecord DecideLead(LeadId id, LeadStatus status, const std::string& by,
                        const std::optional<std::string>& note, const std::string& now);

  fs::path dir_;
  NodeConfig config_;
  std::unique_ptr<sql::Db> db_;
  // Declared after db_ so the statements are finalised before it closes.
  mutable std::unordered_map<std::string, std::unique_ptr<sql::Stmt>> stmts_;
};

ExhibitRecord SqliteStore::ReadExhibit(const sql::Stmt& s) const {
  ExhibitRecord e;
  e.id = ExhibitId(s.Int(0));
  e.case_id = CaseId(s.Int(1));
  e.case_ref = s.Text(2);
  e.exhibit_ref = s.Text(3);
  const std::string kind = s.Text(4);
  const std::string role = s.Text(5);
  const auto k = ParseExhibitKind(kind);
  const auto r = ParseExhibitRole(role);
  if (!k || !r) {
    throw Error(db_->path().string() + ": exhibit #" + std::to_string(e.id.value) +
                " has an unknown kind or role (" + kind + ", " + role + ")");
  }
  e.kind = *k;
  e.role = *r;
  e.cc.calibre = s.OptText(6);
  e.cc.firing_pin = s.OptText(7);
  e.cc.breech_face = s.OptText(8);
  if (const auto lands = s.OptInt(9)) e.cc.lands = static_cast<int>(*lands);
  if (const auto twist = s.OptText(10)) {
    e.cc.twist = ParseTwist(*twist);
    if (!e.cc.twist) {
      throw Error(db_->path().string() + ": exhibit #" + std::to_string(e.id.value) +
                  " has an unknown twist " + Quote(*twist));
    }
  }
  e.created_at = s.Text(11);
  e.scan_count = static_cast<int>(s.Int(12));
  e.firearm_ref = s.OptText(13);
  return e;
}

ScanRecord SqliteStore::ReadScan(const sql::Stmt& s) const {
  ScanRecord r;
  r.id = ScanId(s.Int(0));
  r.exhibit = ExhibitId(s.Int(1));
  r.sha256 = s.Text(2);
  r.size_bytes = s.Int(3);
  r.meta.original_name = s.Text(4);
  r.meta.format = s.Text(5);
  r.meta.width = static_cast<int>(s.Int(6));
  r.meta.height = static_cast<int>(s.Int(7));
  r.meta.dx_m = s.Double(8);
  r.meta.dy_m = s.Double(9);
  r.meta.nan_share = s.Double(10);
  r.meta.intensity = s.Int(11) != 0;
  if (const auto land = s.OptInt(12)) r.meta.land = static_cast<int>(*land);
  r.meta.instrument = s.OptText(13).value_or("");
  r.meta.measured_at = s.OptText(14).value_or("");
  r.meta.creator = s.OptText(15).value_or("");
  r.meta.comment = s.OptText(16).value_or("");
  r.added_at = s.Text(17);
  r.meta.z_scale = s.Double(18);
  return r;
}

std::vector<ExhibitRecord> SqliteStore::QueryExhibits(
    const std::string& where, const std::vector<std::string>& params) const {
  auto& s = Q(kExhibitColumns + where + " ORDER BY c.case_ref, e.exhibit_ref, e.id");
  sql::Stmt::Scope scope(s);
  for (size_t i = 0; i < params.size(); ++i) s.Bind(static_cast<int>(i + 1), params[i]);
  std::vector<ExhibitRecord> out;
  while (s.Step()) out.push_back(ReadExhibit(s));
  return out;
}

std::vector<ScanRecord> SqliteStore::QueryScans(const std::string& where,
                                                std::optional<int64_t> param) const {
  auto& s = Q(kScanColumns + where + " ORDER BY id");
  sql::Stmt::Scope scope(s);
  if (param) s.Bind(1, *param);
  std::vector<ScanRecord> out;
  while (s.Step()) out.push_back(ReadScan(s));
  return out;
}

std::optional<ExhibitRecord> SqliteStore::ExhibitByRefs(const std::string& case_ref,
                                                        const std::string& exhibit_ref) const {
  auto found =
      QueryExhibits("WHERE c.case_ref = ?1 AND e.exhibit_ref = ?2", {case_ref, exhibit_ref});
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

std::vector<ExhibitRecord> SqliteStore::ListExhibits() const { return QueryExhibits("", {}); }

ExhibitRecord SqliteStore::FindExhibit(std::string_view ref_view) const {
  const std::string ref(ref_view);
  const std::string none = "no exhibit matches " + Quote(ref);
  if (ref.size() > 1 && ref[0] == '#') {
    int64_t id = 0;
    const auto [end, ec] = std::from_chars(ref.data() + 1, ref.data() + ref.size(), id);
    if (ec == std::errc() && end == ref.data() + ref.size()) {
      auto found = QueryExhibits("WHERE e.id = CAST(?1 AS INTEGER)", {std::to_string(id)});
      if (found.empty()) throw Error(none);
      return std::move(found.front());
    }
  }
  // Every split of CASE/EXHIBIT at a '/' (either ref may itself contain '/'),
  // and the whole text as an exhibit ref.
  std::map<int64_t, ExhibitRecord> matches;
  for (size_t slash = ref.find('/'); slash != std::string::npos; slash = ref.find('/', slash + 1)) {
    if (auto e = ExhibitByRefs(ref.substr(0, slash), ref.substr(slash + 1))) {
      matches.emplace(e->id.value, std::move(*e));
    }
  }
  for (auto& e : QueryExhibits("WHERE e.exhibit_ref = ?1", {ref})) {
    matches.emplace(e.id.value, std::move(e));
  }
  if (matches.empty()) throw Error(none);
  if (matches.size() > 1) {
    std::vector<std::string> labels;
    for (const auto& [id, e] : matches) labels.push_back(Label(e));
    std::sort(labels.begin(), labels.end());
    std::string list;
    for (const auto& l : labels) list += (list.empty() ? "" : ", ") + l;
    throw Error(Quote(ref) + " is ambiguous: matches " + list + " (use CASE/EXHIBIT)");
  }
  return std::move(matches.begin()->second);
}

std::vector<ScanRecord> SqliteStore::ScansOf(ExhibitId exhibit) const {
  return QueryScans("WHERE exhibit_id = ?1", exhibit.value);
}

std::vector<ScanRecord> SqliteStore::AllScans() const { return QueryScans("", std::nullopt); }

std::vector<AuditRecord> SqliteStore::AuditTrail(std::optional<ExhibitId> exhibit) const {
  auto& s =
      Q(std::string(kAuditColumns) + (exhibit ? "WHERE exhibit_id = ?1 " : "") + "ORDER BY seq");
  sql::Stmt::Scope scope(s);
  if (exhibit) s.Bind(1, exhibit->value);
  std::vector<AuditRecord> out;
  while (s.Step()) {
    AuditRecord a;
    a.seq = s.Int(0);
    a.at = s.Text(1);
    a.actor = s.Text(2);
    a.action = s.Text(3);
    a.subject = s.Text(4);
    if (const auto id = s.OptInt(5)) a.exhibit = ExhibitId(*id);
    a.sha256 = s.OptText(6);
    a.details = s.Text(7);
    a.prev_hash = s.Text(8);
    a.row_hash = s.Text(9);
    out.push_back(std::move(a));
  }
  return out;
}

void SqliteStore::AppendAudit(const std::string& actor, const std::string& action,
                              const std::string& subject, std::optional<ExhibitId> exhibit,
                              const std::optional<std::string>& sha256,
                              const std::string& details) {
  internal::AppendAuditRow(*db_, actor, action, subject, exhibit, sha256, details);
}

void SqliteStore::RecordAudit(const std::string& actor, const std::string& action,
                              const std::string& subject, std::optional<ExhibitId> exhibit,
                              const std::string& details_json) {
  const std::string details = details_json.empty() ? "{}" : details_json;
  if (!IsJsonObject(details)) throw Error("audit details are not a JSON object: " + details);
  sql::Transaction tx(*db_);
  AppendAudit(actor, action, subject, exhibit, std::nullopt, details);
  tx.Commit();
}

fs::path SqliteStore::ObjectPath(const std::string& sha256) const {
  if (sha256.size() != 64 || !IsLowerHex(sha256)) {
    throw Error(Quote(sha256) + " is not a SHA-256 digest (64 lower-case hex digits)");
  }
  return dir_ / "objects" / sha256.substr(0, 2) / sha256.substr(2);
}

void SqliteStore::WriteObject(const std::string& sha256, std::span<const std::byte> bytes) {
  const fs::path target = ObjectPath(sha256);
  if (FileMatches(target, bytes.size(), sha256)) return;
  const fs::path objects = dir_ / "objects";
  const fs::path shard = target.parent_path();
  std::error_code ec;
  if (!fs::is_directory(shard, ec)) {
    fs::create_directories(shard, ec);
    if (ec) throw Error(shard.string() + ": cannot create folder: " + ec.message());
    FsyncDir(objects);
  }
  const fs::path tmp_dir = objects / "tmp";
  fs::create_directories(tmp_dir, ec);
  if (ec) throw Error(tmp_dir.string() + ": cannot create folder: " + ec.message());
  WriteFileAtomically(tmp_dir / (RandomHex(16) + ".tmp"), target, bytes, 0444);
}

std::vector<AddResult> SqliteStore::AddScans(const std::string& actor, const ExhibitSpec& spec_in,
                                             std::span<const NewScan> scans) {
  // Validate what can be validated without the database.
  ExhibitSpec spec = spec_in;
  CheckRef("case reference", spec.case_ref);
  CheckRef("exhibit reference", spec.exhibit_ref);
  if (spec.exhibit_ref.front() == '#') {
    throw Error("exhibit reference " + Quote(spec.exhibit_ref) +
                " must not begin with '#' (that form names an exhibit by id)");
  }
  CheckLine("the actor (who is acting)", actor, false);
  for (auto* field : {&spec.cc.calibre, &spec.cc.firing_pin, &spec.cc.breech_face}) {
    if (*field && field->value().empty()) field->reset();  // empty = unknown
    if (*field) CheckLine("class characteristic", **field, false);
  }
  // Firearm refs are compared exactly (different refs = known non-matches), so
  // they follow the rules of references: no stray blanks or control characters.
  if (spec.firearm_ref && spec.firearm_ref->empty()) spec.firearm_ref.reset();  // empty = unknown
  if (spec.firearm_ref) CheckRef("firearm reference", *spec.firearm_ref);
  if (spec.cc.lands && (*spec.cc.lands < 1 || *spec.cc.lands > 64)) {
    throw Error("lands " + std::to_string(*spec.cc.lands) + " is out of range (1 to 64)");
  }
  const std::string label = spec.case_ref + "/" + spec.exhibit_ref;
  // Descriptors: well-formed, one per key and scan, one dimension per key
  // (within the call and with those already stored).
  {
    std::map<std::string, size_t> dims;
    for (const auto& scan : scans) {
      const std::string what =
          "scan file " + Quote(scan.meta.original_name) + " of exhibit " + label;
      std::set<std::string> keys;
      for (const auto& d : scan.descriptors) {
        CheckDescriptor(what, d.key, d.vector);
        if (!keys.insert(d.key).second) {
          throw Error(what + ": descriptor " + Quote(d.key) + " is given twice");
        }
        auto [it, first] = dims.emplace(d.key, d.vector.size());
        if (first) {
          if (const auto stored = DescriptorDim(d.key, std::nullopt)) it->second = size_t(*stored);
        }
        if (it->second != d.vector.size()) {
          throw Error(what + ": descriptor " + Quote(d.key) + " has " +
                      std::to_string(d.vector.size()) +
                      " values; other descriptors of the key have " + std::to_string(it->second) +
                      " (a new dimension needs a new key)");
        }
      }
    }
  }

  // Hash every file; find the ones already stored (those need no object).
  std::vector<std::string> hashes;
  hashes.reserve(scans.size());
  for (const auto& scan : scans) hashes.push_back(Sha256Hex(scan.original));
  auto stored_as = [&](const std::string& sha256) -> std::optional<AddResult> {
    auto& s =
        Q("SELECT s.id, s.exhibit_id, c.case_ref, e.exhibit_ref FROM scans s"
          " JOIN exhibits e ON e.id = s.exhibit_id JOIN cases c ON c.id = e.case_id"
          " WHERE s.sha256 = ?1");
    sql::Stmt::Scope scope(s);
    s.Bind(1, sha256);
    if (!s.Step()) return std::nullopt;
    AddResult r;
    r.status = AddStatus::kDuplicate;
    r.scan = ScanId(s.Int(0));
    r.exhibit = ExhibitId(s.Int(1));
    r.sha256 = sha256;
    r.detail = "already stored as scan " + std::to_string(r.scan.value) + " of exhibit " +
               s.Text(2) + "/" + s.Text(3);
    return r;
  };

  // Originals go to disk before the transaction that records them: a crash in
  // between leaves an unreferenced object, never a row without its file.
  {
    std::set<std::string> written;
    for (size_t i = 0; i < scans.size(); ++i) {
      if (written.count(hashes[i]) || stored_as(hashes[i])) continue;
      WriteObject(hashes[i], scans[i].original);
      written.insert(hashes[i]);
    }
  }

  sql::Transaction tx(*db_);
  std::optional<ExhibitRecord> existing = ExhibitByRefs(spec.case_ref, spec.exhibit_ref);

  // An existing exhibit must agree; unknown class characteristics are filled in.
  JsonObject filled;
  if (existing) {
    if (existing->kind != spec.kind) {
      throw Error("exhibit " + label + " is recorded as " + ToString(existing->kind) + ", not " +
                  ToString(spec.kind));
    }
    if (existing->role != spec.role) {
      throw Error("exhibit " + label + " is recorded as " + ToString(existing->role) + ", not " +
                  ToString(spec.role));
    }
    auto merge_text = [&](const char* name, const std::optional<std::string>& known,
                          const std::optional<std::string>& given) {
      if (!given) return;
      if (known && *known != *given) {
        throw Error("exhibit " + label + " is recorded with " + name + " " + Quote(*known) +
                    ", not " + Quote(*given));
      }
      if (!known) filled.Add(name, *given);
    };
    merge_text("calibre", existing->cc.calibre, spec.cc.calibre);
    merge_text("firing_pin", existing->cc.firing_pin, spec.cc.firing_pin);
    merge_text("breech_face", existing->cc.breech_face, spec.cc.breech_face);
    merge_text("firearm_ref", existing->firearm_ref, spec.firearm_ref);
    if (spec.cc.lands) {
      if (existing->cc.lands && *existing->cc.lands != *spec.cc.lands) {
        throw Error("exhibit " + label + " is recorded with lands " +
                    std::to_string(*existing->cc.lands) + ", not " +
                    std::to_string(*spec.cc.lands));
      }
      if (!existing->cc.lands) filled.Add("lands", *spec.cc.lands);
    }
    if (spec.cc.twist) {
      if (existing->cc.twist && *existing->cc.twist != *spec.cc.twist) {
        throw Error("exhibit " + label + " is recorded with twist " +
                    Quote(ToString(*existing->cc.twist)) + ", not " +
                    Quote(ToString(*spec.cc.twist)));
      }
      if (!existing->cc.twist) filled.Add("twist", ToString(*spec.cc.twist));
    }
  }

  // Which scans are new (a file given twice in one call counts once).
  std::vector<std::optional<AddResult>> duplicate(scans.size());
  bool any_new = false;
  {
    std::set<std::string> seen;
    for (size_t i = 0; i < scans.size(); ++i) {
      duplicate[i] = stored_as(hashes[i]);
      if (!duplicate[i] && seen.insert(hashes[i]).second) any_new = true;
    }
  }
  if (!existing && !any_new) {
    // Nothing to record: do not create an empty exhibit.
    std::vector<AddResult> results;
    for (size_t i = 0; i < scans.size(); ++i) results.push_back(*duplicate[i]);
    return results;  // the transaction rolls back, having changed nothing
  }

  const std::string now = UtcNowIso8601();
  ExhibitId exhibit_id;
  if (existing) {
    exhibit_id = existing->id;
    if (!filled.empty()) {
      auto& s = Q(
          "UPDATE exhibits SET calibre = coalesce(calibre, ?2), firing_pin = coalesce(firing_pin, "
          "?3), breech_face = coalesce(breech_face, ?4), lands = coalesce(lands, ?5), twist = "
          "coalesce(twist, ?6), firearm_ref = coalesce(firearm_ref, ?7) WHERE id = ?1");
      sql::Stmt::Scope scope(s);
      s.Bind(1, exhibit_id.value)
          .Bind(2, spec.cc.calibre)
          .Bind(3, spec.cc.firing_pin)
          .Bind(4, spec.cc.breech_face)
          .Bind(5, spec.cc.lands)
          .Bind(7, spec.firearm_ref);
      if (spec.cc.twist) s.Bind(6, ToString(*spec.cc.twist));
      s.Run();
      AppendAudit(actor, "update_exhibit", "exhibit " + label, exhibit_id, std::nullopt,
                  JsonObject().AddRaw("filled", filled.str()).str());
    }
  } else {
    int64_t case_id = 0;
    {
      auto& find = Q("SELECT id FROM cases WHERE case_ref = ?1");
      sql::Stmt::Scope scope(find);
      find.Bind(1, spec.case_ref);
      if (find.Step()) case_id = find.Int(0);
    }
    const bool new_case = case_id == 0;
    if (new_case) {
      auto& s = Q("INSERT INTO cases (case_ref, created_at) VALUES (?1, ?2)");
      sql::Stmt::Scope scope(s);
      s.Bind(1, spec.case_ref).Bind(2, now).Run();
      case_id = db_->LastInsertRowId();
    }
    {
      auto& s =
          Q("INSERT INTO exhibits (case_id, exhibit_ref, kind, role, calibre, firing_pin,"
            " breech_face, lands, twist, created_at, firearm_ref) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
            " ?7, ?8, ?9, ?10, ?11)");
      sql::Stmt::Scope scope(s);
      s.Bind(1, case_id)
          .Bind(2, spec.exhibit_ref)
          .Bind(3, ToString(spec.kind))
          .Bind(4, ToString(spec.role))
          .Bind(5, spec.cc.calibre)
          .Bind(6, spec.cc.firing_pin)
          .Bind(7, spec.cc.breech_face)
          .Bind(8, spec.cc.lands)
          .Bind(10, now)
          .Bind(11, spec.firearm_ref);
      if (spec.cc.twist) s.Bind(9, ToString(*spec.cc.twist));
      s.Run();
      exhibit_id = ExhibitId(db_->LastInsertRowId());
    }
    JsonObject details;
    details.Add("case_ref", spec.case_ref)
        .AddRaw("new_case", new_case ? "true" : "false")
        .Add("exhibit_ref", spec.exhibit_ref)
        .Add("kind", ToString(spec.kind))
        .Add("role", ToString(spec.role))
        .Add("calibre", spec.cc.calibre)
        .Add("firing_pin", spec.cc.firing_pin)
        .Add("breech_face", spec.cc.breech_face)
        .Add("lands", spec.cc.lands);
    if (spec.cc.twist) {
      details.Add("twist", ToString(*spec.cc.twist));
    } else {
      details.AddRaw("twist", "null");
    }
    details.Add("firearm_ref", spec.firearm_ref);
    AppendAudit(actor, "add_exhibit", "exhibit " + label, exhibit_id, std::nullopt, details.str());
  }

  std::vector<AddResult> results;
  std::unordered_map<std::string, AddResult> added;  // by SHA-256, for repeats in this call
  for (size_t i = 0; i < scans.size(); ++i) {
    const std::string& sha = hashes[i];
    if (duplicate[i]) {
      results.push_back(*duplicate[i]);
      continue;
    }
    if (auto it = added.find(sha); it != added.end()) {
      AddResult r = it->second;
      r.status = AddStatus::kDuplicate;
      r.detail = "already stored as scan " + std::to_string(r.scan.value) + " of exhibit " + label;
      results.push_back(r);
      continue;
    }
    const ScanMeta& m = scans[i].meta;
    const std::string name = m.original_name.empty() ? "(unnamed)" : m.original_name;
    if (m.original_name.empty()) throw Error("a scan of exhibit " + label + " has no file name");
    if (m.land && (*m.land < 1 || *m.land > 64)) {
      throw Error(name + ": land " + std::to_string(*m.land) + " is out of range (1 to 64)");
    }
    auto opt = [](const std::string& s) {
      return s.empty() ? std::nullopt : std::optional<std::string>(s);
    };
    {
      auto& s =
          Q("INSERT INTO scans (exhibit_id, sha256, size_bytes, original_name, format, width,"
            " height, dx_m, dy_m, nan_share, intensity, land, instrument, measured_at, creator,"
            " comment, added_at, z_scale) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
            " ?12, ?13, ?14, ?15, ?16, ?17, ?18)");
      sql::Stmt::Scope scope(s);
      s.Bind(1, exhibit_id.value)
          .Bind(2, sha)
          .Bind(3, static_cast<int64_t>(scans[i].original.size()))
          .Bind(4, m.original_name)
          .Bind(5, m.format)
          .Bind(6, m.width)
          .Bind(7, m.height)
          .Bind(8, m.dx_m)
          .Bind(9, m.dy_m)
          .Bind(10, m.nan_share)
          .Bind(11, m.intensity ? 1 : 0)
          .Bind(12, m.land)
          .Bind(13, opt(m.instrument))
          .Bind(14, opt(m.measured_at))
          .Bind(15, opt(m.creator))
          .Bind(16, opt(m.comment))
          .Bind(17, now)
          .Bind(18, m.z_scale);
      try {
        s.Run();
      } catch (const Error& e) {
        throw Error(name + ": cannot be recorded: " + e.what());
      }
    }
    AddResult r;
    r.status = AddStatus::kAdded;
    r.scan = ScanId(db_->LastInsertRowId());
    r.exhibit = exhibit_id;
    r.sha256 = sha;
    JsonObject details;
    details.Add("original_name", m.original_name)
        .Add("format", m.format)
        .Add("width", m.width)
        .Add("height", m.height)
        .Add("dx_m", m.dx_m)
        .Add("dy_m", m.dy_m);
    AppendAudit(actor, "add_scan", "scan " + std::to_string(r.scan.value) + " of exhibit " + label,
                exhibit_id, sha, details.str());
    for (const auto& d : scans[i].descriptors) WriteDescriptor(r.scan, d.key, d.vector, now);
    added.emplace(sha, r);
    results.push_back(r);
  }
  tx.Commit();
  return results;
}

void SqliteStore::PutFeature(ScanId scan, const std::string& kind, int version,
                             std::span<const std::byte> blob) {
  if (kind.empty() || HasControlChar(kind)) {
    throw Error("feature kind " + Quote(kind) + " is empty or has a control character");
  }
  if (version < 0) throw Error("feature version " + std::to_string(version) + " is negative");
  sql::Transaction tx(*db_);
  {
    auto& s = Q("SELECT 1 FROM scans WHERE id = ?1");
    sql::Stmt::Scope scope(s);
    s.Bind(1, scan.value);
    if (!s.Step()) throw Error("no scan " + std::to_string(scan.value) + " in the store");
  }
  auto& s = Q(
      "INSERT INTO features (scan_id, kind, version, blob, created_at) VALUES (?1, ?2, ?3, ?4, ?5)"
      " ON CONFLICT (scan_id, kind, version) DO UPDATE SET blob = excluded.blob,"
      " created_at = excluded.created_at");
  {
    sql::Stmt::Scope scope(s);
    s.Bind(1, scan.value).Bind(2, kind).Bind(3, version).Bind(4, blob).Bind(5, UtcNowIso8601());
    s.Run();
  }
  tx.Commit();
}

std::optional<std::vector<std::byte>> SqliteStore::GetFeature(ScanId scan, const std::string& kind,
                                                              int version) const {
  auto& s = Q("SELECT blob FROM features WHERE scan_id = ?1 AND kind = ?2 AND version = ?3");
  sql::Stmt::Scope scope(s);
  s.Bind(1, scan.value).Bind(2, kind).Bind(3, version);
  if (!s.Step()) return std::nullopt;
  return s.Blob(0);
}

int SqliteStore::RecordKnmScores(const std::string& method, const std::string& origin,
                                 const std::vector<KnmScore>& scores, const std::string& actor) {
  CheckRef("known-non-match scores: the method name", method);
  CheckRef("known-non-match scores: the origin", origin);
  CheckLine("the actor (who is acting)", actor, false);
  // Check everything before writing anything; order each pair (sha_a < sha_b).
  std::vector<KnmScore> ordered;
  ordered.reserve(scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    const KnmScore& k = scores[i];
    const std::string which = "known-non-match score " + std::to_string(i + 1) + " of " +
                              std::to_string(scores.size()) + ": ";
    for (const std::string* sha : {&k.sha_a, &k.sha_b}) {
      if (sha->size() != 64 || !IsLowerHex(*sha)) {
        throw Error(which + Quote(sha->substr(0, 80)) +
                    " is not a sha256 digest (64 lower-case hex digits)");
      }
    }
    if (k.sha_a == k.sha_b) {
      throw Error(which + "both files are " + k.sha_a.substr(0, 16) +
                  "…; a known non-match compares two different files");
    }
    if (!std::isfinite(k.score)) throw Error(which + "the score is not a finite number");
    KnmScore o = k;
    if (o.sha_b < o.sha_a) std::swap(o.sha_a, o.sha_b);
    ordered.push_back(std::move(o));
  }
  if (ordered.empty()) return 0;
  std::set<std::pair<std::string, std::string>> distinct;
  for (const KnmScore& k : ordered) distinct.emplace(k.sha_a, k.sha_b);

  const std::string now = UtcNowIso8601();
  sql::Transaction tx(*db_);
  auto& s =
      Q("INSERT INTO knm_scores (method, sha_a, sha_b, score, origin, recorded_at) VALUES (?1, ?2, "
        "?3, ?4, ?5, ?6) ON CONFLICT (method, sha_a, sha_b) DO UPDATE SET score = excluded.score, "
        "origin = excluded.origin, recorded_at = excluded.recorded_at");
  for (const KnmScore& k : ordered) {
    sql::Stmt::Scope scope(s);
    s.Bind(1, method)
        .Bind(2, k.sha_a)
        .Bind(3, k.sha_b)
        .Bind(4, k.score)
        .Bind(5, origin)
        .Bind(6, now);
    s.Run();
  }
  AppendAudit(actor, "record_knm_scores", "known-non-match scores " + method, std::nullopt,
              std::nullopt,
              JsonObject()
                  .Add("method", method)
                  .Add("origin", origin)
                  .AddRaw("count", std::to_string(distinct.size()))
                  .str());
  tx.Commit();
  return static_cast<int>(distinct.size());
}

std::vector<double> SqliteStore::KnmScores(const std::string& method) const {
  auto& s = Q("SELECT score FROM knm_scores WHERE method = ?1 ORDER BY score");
  sql::Stmt::Scope scope(s);
  s.Bind(1, method);
  std::vector<double> out;
  while (s.Step()) out.push_back(s.Double(0));
  return out;
}

int64_t SqliteStore::CountKnmScores(const std::string& method) const {
  auto& s = Q("SELECT count(*) FROM knm_scores WHERE method = ?1");
  sql::Stmt::Scope scope(s);
  s.Bind(1, method);
  if (!s.Step()) db_->Fail("cannot count known-non-match scores");
  return s.Int(0);
}

bool SqliteStore::IsJsonObject(const std::string& text) const {
  auto& s = Q("SELECT CASE WHEN json_valid(?1) THEN json_type(?1) = 'object' ELSE 0 END");
  sql::Stmt::Scope scope(s);
  s.Bind(1, text);
  return s.Step() && s.OptInt(0).value_or(0) == 1;
}

std::optional<ExhibitRecord> SqliteStore::ExhibitById(ExhibitId id) const {
  auto found = QueryExhibits("WHERE e.id = CAST(?1 AS INTEGER)", {std::to_string(id.value)});
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

// ---------------------------------------------------------------------------
// Descriptors.

std::optional<int64_t> SqliteStore::DescriptorDim(const std::string& key,
                                                  std::optional<ScanId> except) const {
  auto& s = Q("SELECT dim FROM descriptors WHERE descriptor_key = ?1 AND scan_id <> ?2 LIMIT 1");
  sql::Stmt::Scope scope(s);
  s.Bind(1, key).Bind(2, except ? except->value : int64_t{0});
  if (!s.Step()) return std::nullopt;
  return s.Int(0);
}

void SqliteStore::WriteDescriptor(ScanId scan, const std::string& key,
                                  std::span<const float> vector, const std::string& now) {
  if (const auto dim = DescriptorDim(key, scan);
      dim && *dim != static_cast<int64_t>(vector.size())) {
    throw Error("descriptor " + Quote(key) + " of scan " + std::to_string(scan.value) + " has " +
                std::to_string(vector.size()) + " values; the key's stored descriptors have " +
                std::to_string(*dim) + " (a new dimension needs a new key)");
  }
  auto& s =
      Q("INSERT INTO descriptors (scan_id, descriptor_key, dim, vector, created_at) VALUES (?1, ?2,"
        " ?3, ?4, ?5) ON CONFLICT (scan_id, descriptor_key) DO UPDATE SET dim = excluded.dim,"
        " vector = excluded.vector, created_at = excluded.created_at");
  sql::Stmt::Scope scope(s);
  s.Bind(1, scan.value)
      .Bind(2, key)
      .Bind(3, static_cast<int64_t>(vector.size()))
      .Bind(4, FloatBytes(vector))
      .Bind(5, now);
  s.Run();
}

void SqliteStore::PutDescriptor(ScanId scan, const std::string& key,
                                std::span<const float> vector) {
  CheckDescriptor("scan " + std::to_string(scan.value), key, vector);
  sql::Transaction tx(*db_);
  {
    auto& s = Q("SELECT 1 FROM scans WHERE id = ?1");
    sql::Stmt::Scope scope(s);
    s.Bind(1, scan.value);
    if (!s.Step()) throw Error("no scan " + std::to_string(scan.value) + " in the store");
  }
  WriteDescriptor(scan, key, vector, UtcNowIso8601());
  tx.Commit();
}

std::vector<AddResult> SqliteStore::AddBenchDistractors(
    const std::string& actor, const std::string& calibre, const std::string& key, int dim,
    std::span<const float> vectors, std::span<const BenchExtraDescriptors> extra) {
  const std::string what = "bench distractors";
  CheckLine("the actor (who is acting)", actor, false);
  CheckRef(what + ": calibre", calibre);
  CheckRef(what + ": the descriptor key", key);
  if (dim < 1 || static_cast<size_t>(dim) > kMaxDescriptorDim) {
    throw Error(what + ": dimension " + std::to_string(dim) + " is out of range (1 to " +
                std::to_string(kMaxDescriptorDim) + ")");
  }
  const size_t d = static_cast<size_t>(dim);
  if (vectors.empty()) throw Error(what + ": no vectors given");
  if (vectors.size() % d != 0) {
    throw Error(what + ": " + std::to_string(vectors.size()) +
                " values are not a whole number of vectors of " + std::to_string(dim) + " values");
  }
  const size_t count = vectors.size() / d;
  for (size_t i = 0; i < count; ++i) {
    CheckDescriptor(what + ": vector " + std::to_string(i + 1), key, vectors.subspan(i * d, d));
  }
  // Each extra key's dimension (0: no vector given).
  std::vector<size_t> extra_dims(extra.size(), 0);
  for (size_t e = 0; e < extra.size(); ++e) {
    const BenchExtraDescriptors& x = extra[e];
    CheckRef(what + ": an extra descriptor key", x.key);
    if (x.key == key)
      throw Error(what + ": extra descriptors of " + Quote(x.key) + " repeat the key");
    for (size_t f = 0; f < e; ++f) {
      if (extra[f].key == x.key) throw Error(what + ": extra key " + Quote(x.key) + " given twice");
    }
    if (x.vectors.size() != count) {
      throw Error(what + ": " + std::to_string(x.vectors.size()) + " extra descriptors of " +
                  Quote(x.key) + " for " + std::to_string(count) + " vectors");
    }
    for (size_t i = 0; i < count; ++i) {
      const std::vector<float>& v = x.vectors[i];
      if (v.empty()) continue;
      const std::string label =
          what + ": vector " + std::to_string(i + 1) + ", extra " + Quote(x.key);
      if (extra_dims[e] != 0 && v.size() != extra_dims[e]) {
        throw Error(label + " has " + std::to_string(v.size()) + " values, the others " +
                    std::to_string(extra_dims[e]));
      }
      extra_dims[e] = v.size();
      CheckDescriptor(label, x.key, v);
    }
  }

  sql::Transaction tx(*db_);
  if (const auto stored = DescriptorDim(key, std::nullopt); stored && *stored != dim) {
    throw Error(what + ": vectors of " + std::to_string(dim) + " values, but the store's " +
                "descriptors of " + Quote(key) + " have " + std::to_string(*stored) +
                " (a new dimension needs a new key)");
  }
  for (size_t e = 0; e < extra.size(); ++e) {
    const auto stored = DescriptorDim(extra[e].key, std::nullopt);
    if (stored && extra_dims[e] != 0 && *stored != static_cast<int64_t>(extra_dims[e])) {
      throw Error(what + ": extra descriptors of " + Quote(extra[e].key) + " have " +
                  std::to_string(extra_dims[e]) + " values, the store's " +
                  std::to_string(*stored) + " (a new dimension needs a new key)");
    }
  }
  const std::string now = UtcNowIso8601();
  const std::string case_ref = kBenchDistractorCase;
  int64_t case_id = 0;
  {
    auto& find = Q("SELECT id FROM cases WHERE case_ref = ?1");
    sql::Stmt::Scope scope(find);
    find.Bind(1, case_ref);
    if (find.Step()) case_id = find.Int(0);
  }
  if (case_id == 0) {
    auto& s = Q("INSERT INTO cases (case_ref, created_at) VALUES (?1, ?2)");
    sql::Stmt::Scope scope(s);
    s.Bind(1, case_ref).Bind(2, now).Run();
    case_id = db_->LastInsertRowId();
  }
  int64_t first = 1;  // number of the first new distractor
  {
    auto& s = Q("SELECT count(*) FROM exhibits WHERE case_id = ?1");
    sql::Stmt::Scope scope(s);
    s.Bind(1, case_id);
    if (s.Step()) first = s.Int(0) + 1;
  }
  auto& insert_exhibit =
      Q("INSERT INTO exhibits (case_id, exhibit_ref, kind, role, calibre, created_at) VALUES (?1,"
        " ?2, 'cartridge_case', 'test_fire', ?3, ?4)");
  auto& insert_scan =
      Q("INSERT INTO scans (exhibit_id, sha256, size_bytes, original_name, format, width, height,"
        " dx_m, dy_m, nan_share, intensity, comment, added_at, z_scale) VALUES (?1, ?2, ?3, ?4,"
        " ?5, ?6, 1, 1, 1, 0, 0, ?7, ?8, 1)");
  auto& insert_descriptor =
      Q("INSERT INTO descriptors (scan_id, descriptor_key, dim, vector, created_at) VALUES (?1, ?2,"
        " ?3, ?4, ?5)");
  const std::string comment = "benchmark distractor: a synthetic descriptor, no original";
  std::vector<AddResult> results;
  results.reserve(count);
  std::string first_ref, last_ref;
  for (size_t i = 0; i < count; ++i) {
    const std::span<const float> vector = vectors.subspan(i * d, d);
    std::array<char, 32> ref{};
    std::snprintf(ref.data(), ref.size(), "D%07lld",
                  static_cast<long long>(first + static_cast<int64_t>(i)));
    const std::string exhibit_ref = ref.data();
    const std::string label = case_ref + "/" + exhibit_ref;
    AddResult r;
    r.sha256 = Sha256Hex(FloatBytes(vector));
    try {
      {
        sql::Stmt::Scope scope(insert_exhibit);
        insert_exhibit.Bind(1, case_id).Bind(2, exhibit_ref).Bind(3, calibre).Bind(4, now).Run();
        r.exhibit = ExhibitId(db_->LastInsertRowId());
      }
      {
        sql::Stmt::Scope scope(insert_scan);
        insert_scan.Bind(1, r.exhibit.value)
            .Bind(2, r.sha256)
            .Bind(3, static_cast<int64_t>(d * sizeof(float)))
            .Bind(4, exhibit_ref + ".descriptor")
            .Bind(5, kBenchDistractorFormat)
            .Bind(6, static_cast<int64_t>(dim))
            .Bind(7, comment)
            .Bind(8, now)
            .Run();
        r.scan = ScanId(db_->LastInsertRowId());
      }
      {
        sql::Stmt::Scope scope(insert_descriptor);
        insert_descriptor.Bind(1, r.scan.value)
            .Bind(2, key)
            .Bind(3, static_cast<int64_t>(dim))
            .Bind(4, FloatBytes(vector))
            .Bind(5, now)
            .Run();
      }
      for (const BenchExtraDescriptors& x : extra) {
        const std::vector<float>& v = x.vectors[i];
        if (v.empty()) continue;
        sql::Stmt::Scope scope(insert_descriptor);
        insert_descriptor.Bind(1, r.scan.value)
            .Bind(2, x.key)
            .Bind(3, static_cast<int64_t>(v.size()))
            .Bind(4, FloatBytes(v))
            .Bind(5, now)
            .Run();
      }
    } catch (const Error& e) {
      throw Error(what + ": vector " + std::to_string(i + 1) + " (" + label + ", sha256 " +
                  r.sha256.substr(0, 12) + "...) cannot be recorded: " + e.what());
    }
    if (i == 0) first_ref = exhibit_ref;
    last_ref = exhibit_ref;
    results.push_back(std::move(r));
  }
  JsonObject details;
  details.Add("case_ref", case_ref)
      .Add("first", first_ref)
      .Add("last", last_ref)
      .AddRaw("count", std::to_string(count))
      .Add("calibre", calibre)
      .Add("descriptor_key", key)
      .Add("dim", dim);
  if (!extra.empty()) {
    std::string keys;
    for (const BenchExtraDescriptors& x : extra) keys += (keys.empty() ? "" : ",") + x.key;
    details.Add("extra_keys", keys);
  }
  AppendAudit(actor, "add_bench_distractors", "bench distractors " + case_ref, std::nullopt,
              std::nullopt, details.str());
  tx.Commit();
  return results;
}

std::vector<DescriptorRow> SqliteStore::QueryDescriptors(const std::string& key,
                                                         const Partition& partition,
                                                         bool with_vectors) const {
  // The partition's calibre as Partition::Key writes it (NULL and any-case
  // "unknown" are the unknown partition).
  auto& s =
      // Without the vectors only the index descriptors_by_key is read: selecting
      // anything else of `d` reads every row (4 KiB each), 0.5 s at 10^5 rows.
      Q(std::string("SELECT d.scan_id, s.exhibit_id") + (with_vectors ? ", d.dim, d.vector" : "") +
        " FROM descriptors d JOIN scans s ON s.id = d.scan_id"
        " JOIN exhibits e ON e.id = s.exhibit_id"
        " WHERE d.descriptor_key = ?1 AND e.kind = ?2 AND (CASE WHEN e.calibre IS NULL OR"
        " e.calibre = '' OR lower(e.calibre) = 'unknown' THEN 'unknown' ELSE e.calibre END)"
        " = ?3 ORDER BY d.scan_id");
  const std::string partition_key = partition.Key();
  sql::Stmt::Scope scope(s);
  s.Bind(1, key)
      .Bind(2, ToString(partition.kind))
      .Bind(3, partition_key.substr(partition_key.find('|') + 1));
  std::vector<DescriptorRow> out;
  while (s.Step()) {
    DescriptorRow row;
    row.scan = ScanId(s.Int(0));
    row.exhibit = ExhibitId(s.Int(1));
    if (with_vectors) {
      const int64_t dim = s.Int(2);
      const std::vector<std::byte> blob = s.Blob(3);
      if (dim < 1 || blob.size() != static_cast<size_t>(dim) * sizeof(float)) {
        throw Error(db_->path().string() + ": descriptor " + Quote(key) + " of scan " +
                    std::to_string(row.scan.value) + " holds " + std::to_string(blob.size()) +
                    " bytes, not " + std::to_string(dim) + " float32 values");
      }
      row.vector = BytesToFloats(blob);
    }
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<DescriptorRow> SqliteStore::Descriptors(const std::string& key,
                                                    const Partition& partition) const {
  return QueryDescriptors(key, partition, /*with_vectors=*/true);
}

std::vector<DescriptorRow> SqliteStore::DescriptorOwners(const std::string& key,
                                                         const Partition& partition) const {
  return QueryDescriptors(key, partition, /*with_vectors=*/false);
}

std::optional<std::vector<float>> SqliteStore::GetDescriptor(ScanId scan,
                                                             const std::string& key) const {
  auto& s = Q("SELECT dim, vector FROM descriptors WHERE scan_id = ?1 AND descriptor_key = ?2");
  sql::Stmt::Scope scope(s);
  s.Bind(1, scan.value).Bind(2, key);
  if (!s.Step()) return std::nullopt;
  const int64_t dim = s.Int(0);
  const std::vector<std::byte> blob = s.Blob(1);
  if (dim < 1 || blob.size() != static_cast<size_t>(dim) * sizeof(float)) {
    throw Error(db_->path().string() + ": descriptor " + Quote(key) + " of scan " +
                std::to_string(scan.value) + " holds " + std::to_string(blob.size()) +
                " bytes, not " + std::to_string(dim) + " float32 values");
  }
  return BytesToFloats(blob);
}

std::vector<ScanId> SqliteStore::DescriptorScanIds(const std::string& key,
                                                   const Partition& partition) const {
  std::vector<ScanId> out;
  for (const auto& row : QueryDescriptors(key, partition, /*with_vectors=*/false)) {
    out.push_back(row.scan);
  }
  return out;
}

std::vector<ScanRecord> SqliteStore::ScansLackingDescriptor(const std::string& key,
                                                            std::optional<ExhibitKind> kind) const {
  auto& s = Q(std::string(kScanColumns) +
              "WHERE NOT EXISTS (SELECT 1 FROM descriptors d WHERE d.scan_id = scans.id AND"
              " d.descriptor_key = ?1) AND (?2 IS NULL OR (SELECT e.kind FROM exhibits e WHERE"
              " e.id = scans.exhibit_id) = ?2) ORDER BY id");
  sql::Stmt::Scope scope(s);
  s.Bind(1, key);
  if (kind) s.Bind(2, ToString(*kind));
  std::vector<ScanRecord> out;
  while (s.Step()) out.push_back(ReadScan(s));
  return out;
}

std::vector<Partition> SqliteStore::Partitions() const {
  auto& s = Q("SELECT DISTINCT kind, calibre FROM exhibits");
  sql::Stmt::Scope scope(s);
  std::map<std::string, Partition> by_key;
  while (s.Step()) {
    const std::string kind_text = s.Text(0);
    const auto kind = ParseExhibitKind(kind_text);
    if (!kind) {
      throw Error(db_->path().string() + ": an exhibit has an unknown kind " + Quote(kind_text));
    }
    ClassCharacteristics cc;
    cc.calibre = s.OptText(1);
    const Partition p = PartitionOf(*kind, cc);
    by_key.emplace(p.Key(), p);
  }
  std::vector<Partition> out;
  for (auto& [key, p] : by_key) out.push_back(std::move(p));
  return out;
}

// ---------------------------------------------------------------------------
// Leads, hits and alerts.

constexpr const char* kLeadColumns =
    "SELECT l.id, l.query_exhibit_id, qe.case_id, qc.case_ref, qe.exhibit_ref,"
    " l.candidate_exhibit_id, ce.case_id, cc.case_ref, ce.exhibit_ref, l.method, l.score,"
    " l.strength, l.coarse_rank, l.registration, l.status, l.created_at, l.updated_at,"
    " l.decided_by, l.decided_at, l.note"
    " FROM leads l JOIN exhibits qe ON qe.id = l.query_exhibit_id"
    " JOIN cases qc ON qc.id = qe.case_id JOIN exhibits ce ON ce.id = l.candidate_exhibit_id"
    " JOIN cases cc ON cc.id = ce.case_id ";

constexpr const char* kHitColumns =
    "SELECT h.id, h.lead_id, h.exhibit_a_id, h.case_a_id, ca.case_ref, ea.exhibit_ref,"
    " h.exhibit_b_id, h.case_b_id, cb.case_ref, eb.exhibit_ref, h.confirmed_by, h.confirmed_at,"
    " h.note FROM hits h JOIN exhibits ea ON ea.id = h.exhibit_a_id"
    " JOIN cases ca ON ca.id = h.case_a_id JOIN exhibits eb ON eb.id = h.exhibit_b_id"
    " JOIN cases cb ON cb.id = h.case_b_id ";

std::vector<LeadRecord> SqliteStore::QueryLeads(const std::string& where,
                                                std::optional<int64_t> param) const {
  auto& s = Q(kLeadColumns + where);
  sql::Stmt::Scope scope(s);
  if (param) s.Bind(1, *param);
  std::vector<LeadRecord> out;
  while (s.Step()) {
    LeadRecord l;
    l.id = LeadId(s.Int(0));
    l.query = {ExhibitId(s.Int(1)), CaseId(s.Int(2)), s.Text(3), s.Text(4)};
    l.candidate = {ExhibitId(s.Int(5)), CaseId(s.Int(6)), s.Text(7), s.Text(8)};
    l.method = s.Text(9);
    l.score = s.Double(10);
    l.strength = s.OptDouble(11);
    if (const auto rank = s.OptInt(12)) l.coarse_rank = static_cast<int>(*rank);
    l.registration_json = s.Text(13);
    const std::string status = s.Text(14);
    const auto parsed = ParseLeadStatus(status);
    if (!parsed) {
      throw Error(db_->path().string() + ": lead " + std::to_string(l.id.value) +
                  " has an unknown status " + Quote(status));
    }
    l.status = *parsed;
    l.created_at = s.Text(15);
    l.updated_at = s.Text(16);
    l.decided_by = s.OptText(17);
    l.decided_at = s.OptText(18);
    l.note = s.OptText(19);
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<HitRecord> SqliteStore::QueryHits(const std::string& where,
                                              std::optional<int64_t> param) const {
  auto& s = Q(kHitColumns + where);
  sql::Stmt::Scope scope(s);
  if (param) s.Bind(1, *param);
  std::vector<HitRecord> out;
  while (s.Step()) {
    HitRecord h;
    h.id = HitId(s.Int(0));
    h.lead = LeadId(s.Int(1));
    h.a = {ExhibitId(s.Int(2)), CaseId(s.Int(3)), s.Text(4), s.Text(5)};
    h.b = {ExhibitId(s.Int(6)), CaseId(s.Int(7)), s.Text(8), s.Text(9)};
    h.confirmed_by = s.Text(10);
    h.confirmed_at = s.Text(11);
    h.note = s.OptText(12);
    out.push_back(std::move(h));
  }
  return out;
}

std::vector<AlertRecord> SqliteStore::QueryAlerts(const std::string& where,
                                                  std::optional<int64_t> param) const {
  auto& s = Q(internal::kAlertColumns + where);
  sql::Stmt::Scope scope(s);
  if (param) s.Bind(1, *param);
  std::vector<AlertRecord> out;
  while (s.Step()) {
    out.push_back(internal::AlertFromRow(s));
  }
  return out;
}

std::vector<RecordedLead> SqliteStore::RecordLeads(const std::string& actor, ExhibitId query,
                                                   const std::vector<LeadCandidate>& candidates) {
  CheckLine("the actor (who is acting)", actor, false);
  // Check what needs no database first.
  std::vector<std::string> registrations;
  registrations.reserve(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const LeadCandidate& c = candidates[i];
    const std::string which = "lead candidate " + std::to_string(i + 1) + " of " +
                              std::to_string(candidates.size()) + " (exhibit #" +
                              std::to_string(c.candidate.value) + "): ";
    CheckRef(which + "the method", c.method);
    if (!std::isfinite(c.score)) throw Error(which + "the score is not a finite number");
    if (c.strength && !(*c.strength >= 0 && *c.strength <= 1)) {
      throw Error(which + "the strength " + Number(*c.strength) + " is not between 0 and 1");
    }
    if (c.coarse_rank && *c.coarse_rank < 1) {
      throw Error(which + "the coarse rank " + std::to_string(*c.coarse_rank) +
                  " is below 1 (ranks start at 1)");
    }
    const std::string registration = c.registration_json.empty() ? "{}" : c.registration_json;
    if (!IsJsonObject(registration)) {
      throw Error(which + "the registration is not a JSON object: " + registration.substr(0, 80));
    }
    registrations.push_back(registration);
  }
  if (candidates.empty()) return {};

  const std::string now = UtcNowIso8601();
  sql::Transaction tx(*db_);
  const auto q = ExhibitById(query);
  if (!q) throw Error("no exhibit #" + std::to_string(query.value) + " in the store");
  const Partition qp = PartitionOf(*q);

  std::vector<RecordedLead> results;
  std::string listed;  // JSON array items for the audit row
  int created = 0, updated = 0, decided = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const LeadCandidate& c = candidates[i];
    const auto e = ExhibitById(c.candidate);
    const std::string which = "lead candidate " + std::to_string(i + 1) + " of " +
                              std::to_string(candidates.size()) + ": ";
    if (!e)
      throw Error(which + "no exhibit #" + std::to_string(c.candidate.value) + " in the store");
    if (e->id == q->id) {
      throw Error(which + "exhibit " + Label(*e) + " is the query itself");
    }
    if (e->kind != q->kind) {
      throw Error(which + "exhibit " + Label(*e) + " is a " + ToString(e->kind) + ", exhibit " +
                  Label(*q) + " a " + ToString(q->kind) + "; they are never compared");
    }
    const Partition ep = PartitionOf(*e);
    if (ep.calibre && qp.calibre && *ep.calibre != *qp.calibre) {
      throw Error(which + "exhibit " + Label(*e) + " is of calibre " + Quote(*ep.calibre) +
                  ", exhibit " + Label(*q) + " of " + Quote(*qp.calibre) +
                  "; exhibits of another calibre are never compared");
    }
    if (!ClassCompatible(e->cc, q->cc)) {
      throw Error(which + "the class characteristics of exhibit " + Label(*e) + " (" +
                  Quote(e->cc.firing_pin.value_or("?")) + " firing pin, " +
                  Quote(e->cc.breech_face.value_or("?")) + " breech face) conflict with those of " +
                  Label(*q) + "; a lead needs compatible class characteristics");
    }

    // The pair's newest lead, the open one first.
    const int64_t lo = std::min(q->id.value, e->id.value);
    const int64_t hi = std::max(q->id.value, e->id.value);
    std::optional<std::pair<int64_t, LeadStatus>> existing;
    {
      auto& s =
          Q("SELECT id, status FROM leads WHERE min(query_exhibit_id, candidate_exhibit_id) = ?1"
            " AND max(query_exhibit_id, candidate_exhibit_id) = ?2"
            " ORDER BY status = 'open' DESC, id DESC LIMIT 1");
      sql::Stmt::Scope scope(s);
      s.Bind(1, lo).Bind(2, hi);
      if (s.Step()) {
        const auto status = ParseLeadStatus(s.Text(1));
        if (!status) {
          throw Error(db_->path().string() + ": lead " + std::to_string(s.Int(0)) +
                      " has an unknown status");
        }
        existing.emplace(s.Int(0), *status);
      }
    }
    RecordedLead r;
    if (existing && existing->second != LeadStatus::kOpen) {
      r.lead = LeadId(existing->first);
      r.outcome = LeadOutcome::kAlreadyDecided;
      r.status = existing->second;
      ++decided;
      results.push_back(r);
      continue;
    }
    if (existing) {
      auto& s =
          Q("UPDATE leads SET query_exhibit_id = ?2, candidate_exhibit_id = ?3, method = ?4,"
            " score = ?5, strength = ?6, coarse_rank = ?7, registration = ?8, updated_at = ?9"
            " WHERE id = ?1 AND status = 'open'");
      sql::Stmt::Scope scope(s);
      s.Bind(1, existing->first)
          .Bind(2, q->id.value)
          .Bind(3, e->id.value)
          .Bind(4, c.method)
          .Bind(5, c.score)
          .Bind(6, c.strength)
          .Bind(7, c.coarse_rank)
          .Bind(8, registrations[i])
          .Bind(9, now);
      s.Run();
      BIEN_CHECK(db_->Changes() == 1);
      r.lead = LeadId(existing->first);
      r.outcome = LeadOutcome::kUpdated;
      ++updated;
    } else {
      auto& s =
          Q("INSERT INTO leads (query_exhibit_id, candidate_exhibit_id, method, score, strength,"
            " coarse_rank, registration, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4,"
            " ?5, ?6, ?7, 'open', ?8, ?8)");
      sql::Stmt::Scope scope(s);
      s.Bind(1, q->id.value)
          .Bind(2, e->id.value)
          .Bind(3, c.method)
          .Bind(4, c.score)
          .Bind(5, c.strength)
          .Bind(6, c.coarse_rank)
          .Bind(7, registrations[i])
          .Bind(8, now);
      s.Run();
      r.lead = LeadId(db_->LastInsertRowId());
      r.outcome = LeadOutcome::kCreated;
      ++created;
    }
    r.status = LeadStatus::kOpen;
    results.push_back(r);
    listed += (listed.empty() ? "" : ",") + JsonObject()
                                                .Add("lead", r.lead.value)
                                                .Add("candidate", Label(*e))
                                                .Add("method", c.method)
                                                .Add("score", c.score)
                                                .Add("strength", c.strength)
                                                .Add("outcome", ToString(r.outcome))
                                                .str();
  }
  if (created + updated == 0) return results;  // every pair decided: nothing to record
  AppendAudit(actor, "record_leads", "leads for exhibit " + Label(*q), q->id, std::nullopt,
              JsonObject()
                  .Add("created", created)
                  .Add("updated", updated)
                  .Add("already_decided", decided)
                  .AddRaw("leads", "[" + listed + "]")
                  .str());
  tx.Commit();
  return results;
}

std::vector<LeadRecord> SqliteStore::Leads(bool open_only) const {
  return QueryLeads(std::string(open_only ? "WHERE l.status = 'open' " : "") +
                        "ORDER BY l.status <> 'open', l.score DESC, l.id",
                    std::nullopt);
}

LeadRecord SqliteStore::FindLead(LeadId id) const {
  auto found = QueryLeads("WHERE l.id = ?1", id.value);
  if (found.empty()) throw Error("no lead " + std::to_string(id.value) + " in the store");
  return std::move(found.front());
}

LeadRecord SqliteStore::DecideLead(LeadId id, LeadStatus status, const std::string& by,
                                   const std::optional<std::string>& note, const std::string& now) {
  LeadRecord lead = FindLead(id);
  if (lead.status != LeadStatus::kOpen) {
    throw Error("lead " + std::to_string(id.value) + " (" + lead.query.Label() + " and " +
                lead.candidate.Label() + ") is " + ToString(lead.status) +
                ", not open: " + "decided by " + lead.decided_by.value_or("?") + " at " +
                lead.decided_at.value_or("?") + "; a decision is final");
  }
  auto& s =
      Q("UPDATE leads SET status = ?2, decided_by = ?3, decided_at = ?4, note = ?5"
        " WHERE id = ?1 AND status = 'open'");
  sql::Stmt::Scope scope(s);
  s.Bind(1, id.value).Bind(2, ToString(status)).Bind(3, by).Bind(4, now).Bind(5, note);
  s.Run();
  BIEN_CHECK(db_->Changes() == 1);
  lead.status = status;
  lead.decided_by = by;
  lead.decided_at = now;
  lead.note = note;
  return lead;
}

ConfirmedLead SqliteStore::ConfirmLead(LeadId id, const std::string& by,
                                       const std::string& note_text) {
  CheckPerson("the confirming expert (by)", by);
  const std::optional<std::string> note = CheckNote(note_text);
  const std::string now = UtcNowIso8601();
  sql::Transaction tx(*db_);
  ConfirmedLead out;
  out.lead = DecideLead(id, LeadStatus::kConfirmed, by, note, now);
  const LeadRecord& lead = out.lead;

  // The hit: the lead's query exhibit is a, its candidate b.
  {
    auto& s =
        Q("INSERT INTO hits (lead_id, exhibit_a_id, case_a_id, exhibit_b_id, case_b_id,"
          " confirmed_by, confirmed_at, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    sql::Stmt::Scope scope(s);
    s.Bind(1, lead.id.value)
        .Bind(2, lead.query.id.value)
        .Bind(3, lead.query.case_id.value)
        .Bind(4, lead.candidate.id.value)
        .Bind(5, lead.candidate.case_id.value)
        .Bind(6, by)
        .Bind(7, now)
        .Bind(8, note);
    s.Run();
  }
  const HitId hit_id(db_->LastInsertRowId());

  // The alert investigators receive.
  const auto a = ExhibitById(lead.query.id);
  const auto b = ExhibitById(lead.candidate.id);
  BIEN_CHECK(a && b);  // the lead's foreign keys hold
  auto exhibit_json = [](const ExhibitRecord& e) {
    return JsonObject()
        .Add("exhibit_id", e.id.value)
        .Add("case", e.case_ref)
        .Add("exhibit", e.exhibit_ref)
        .Add("kind", ToString(e.kind))
        .Add("role", ToString(e.role))
        .Add("calibre", e.cc.calibre)
        .str();
  };
  const std::string payload = JsonObject()
                                  .Add("hit", hit_id.value)
                                  .Add("lead", lead.id.value)
                                  .AddRaw("node", JsonObject()
                                                      .Add("id", config_.node_id)
                                                      .Add("name", config_.name)
                                                      .Add("country", config_.country)
                                                      .str())
                                  .AddRaw("a", exhibit_json(*a))
                                  .AddRaw("b", exhibit_json(*b))
                                  .Add("method", lead.method)
                                  .Add("score", lead.score)
                                  .Add("strength", lead.strength)
                                  .Add("confirmed_by", by)
                                  .Add("confirmed_at", now)
                                  .Add("note", note)
                                  .str();
  std::string summary = "hit: " + Label(*a) + " and " + Label(*b) + " (" + ToString(a->kind) +
                        (a->cc.calibre ? ", " + *a->cc.calibre : std::string()) +
                        ") were fired by the same firearm; " + lead.method + " score " +
                        Number(lead.score) +
                        (lead.strength ? ", strength " + Number(*lead.strength) : std::string()) +
                        "; confirmed by " + by;
  {
    auto& s =
        Q("INSERT INTO alerts (hit_id, created_at, origin, summary, payload) VALUES (?1, ?2,"
          " 'local', ?3, ?4)");
    sql::Stmt::Scope scope(s);
    s.Bind(1, hit_id.value).Bind(2, now).Bind(3, summary).Bind(4, payload);
    s.Run();
  }
  const AlertId alert_id(db_->LastInsertRowId());

  AppendAudit(by, "confirm_lead",
              "lead " + std::to_string(lead.id.value) + ": " + Label(*a) + " and " + Label(*b),
              a->id, std::nullopt,
              JsonObject()
                  .Add("lead", lead.id.value)
                  .Add("hit", hit_id.value)
                  .Add("alert", alert_id.value)
                  .Add("a", Label(*a))
                  .Add("b", Label(*b))
                  .Add("method", lead.method)
                  .Add("score", lead.score)
                  .Add("strength", lead.strength)
                  .Add("note", note)
                  .str());
  // The exchange's outbox row (the hit notice for peers) belongs here, in
  // this transaction, so a hit is never confirmed without its notice queued.

  auto hits = QueryHits("WHERE h.id = ?1", hit_id.value);
  auto alerts = QueryAlerts("WHERE id = ?1", alert_id.value);
  BIEN_CHECK(hits.size() == 1 && alerts.size() == 1);  // just inserted, same transaction
  out.hit = std::move(hits.front());
  out.alert = std::move(alerts.front());
  tx.Commit();
  return out;
}

LeadRecord SqliteStore::RejectLead(LeadId id, const std::string& by, const std::string& note_text) {
  CheckPerson("the rejecting expert (by)", by);
  const std::optional<std::string> note = CheckNote(note_text);
  const std::string now = UtcNowIso8601();
  sql::Transaction tx(*db_);
  LeadRecord lead = DecideLead(id, LeadStatus::kRejected, by, note, now);
  AppendAudit(by, "reject_lead",
              "lead " + std::to_string(lead.id.value) + ": " + lead.query.Label() + " and " +
                  lead.candidate.Label(),
              lead.query.id, std::nullopt,
              JsonObject()
                  .Add("lead", lead.id.value)
                  .Add("a", lead.query.Label())
                  .Add("b", lead.candidate.Label())
                  .Add("method", lead.method)
                  .Add("score", lead.score)
                  .Add("strength", lead.strength)
                  .Add("note", note)
                  .str());
  tx.Commit();
  return lead;
}

std::vector<HitRecord> SqliteStore::Hits() const {
  return QueryHits("ORDER BY h.id", std::nullopt);
}

std::vector<AlertRecord> SqliteStore::Alerts() const {
  return QueryAlerts("ORDER BY id", std::nullopt);
}

StoreCounts SqliteStore::Counts() const {
  auto count = [&](const char* table) {
    auto& s = Q(std::string("SELECT count(*) FROM ") + table);
    sql::Stmt::Scope scope(s);
    if (!s.Step()) db_->Fail(std::string("cannot count ") + table);
    return s.Int(0);
  };
  sql::Transaction read(*db_, sql::Transaction::Mode::kDeferred);  // one snapshot
  StoreCounts c;
  c.cases = count("cases");
  c.exhibits = count("exhibits");
  c.scans = count("scans");
  c.features = count("features");
  c.audit = count("audit");
  c.descriptors = count("descriptors");
  c.leads = count("leads");
  c.hits = count("hits");
  c.alerts = count("alerts");
  read.Commit();
  return c;
}

SearchStamp SqliteStore::SearchStampNow() const {
  auto& s =
      Q("SELECT (SELECT coalesce(max(id), 0) FROM scans), (SELECT count(*) FROM scans),"
        " (SELECT coalesce(max(id), 0) FROM descriptors), (SELECT count(*) FROM descriptors)");
  sql::Stmt::Scope scope(s);
  if (!s.Step()) db_->Fail("cannot read the search stamp");
  return SearchStamp{s.Int(0), s.Int(1), s.Int(2), s.Int(3)};
}

VerifyReport SqliteStore::Verify() const {
  VerifyReport report;

  // 1. Every stored original: present, of the recorded size, same SHA-256.
  struct ScanRow {
    int64_t id;
    std::string label;
    std::string name;
    std::string sha256;
    int64_t size;
  };
  std::vector<ScanRow> rows;
  {
    auto& s =
        Q("SELECT s.id, c.case_ref || '/' || e.exhibit_ref, s.original_name, s.sha256, s.size_bytes"
          " FROM scans s JOIN exhibits e ON e.id = s.exhibit_id JOIN cases c ON c.id = e.case_id"
          " ORDER BY s.id");
    sql::Stmt::Scope scope(s);
    while (s.Step()) rows.push_back({s.Int(0), s.Text(1), s.Text(2), s.Text(3), s.Int(4)});
  }
  {
    auto& s = Q("SELECT count(*) FROM scans");
    sql::Stmt::Scope scope(s);
    if (s.Step() && s.Int(0) != static_cast<int64_t>(rows.size())) {
      report.problems.push_back(std::to_string(s.Int(0) - static_cast<int64_t>(rows.size())) +
                                " scan rows belong to no exhibit or case");
    }
  }
  for (const auto& row : rows) {
    ++report.objects_checked;
    const std::string what =
        "scan " + std::to_string(row.id) + " (exhibit " + row.label + ", " + Quote(row.name) + ")";
    if (row.sha256.size() != 64 || !IsLowerHex(row.sha256)) {
      report.problems.push_back(what + ": recorded SHA-256 " + Quote(row.sha256) + " is malformed");
      continue;
    }
    const fs::path path = ObjectPath(row.sha256);
    const std::string shown = "objects/" + row.sha256.substr(0, 2) + "/" + row.sha256.substr(2);
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      report.problems.push_back(what + ": stored original " + shown + " is missing");
      continue;
    }
    if (!fs::is_regular_file(path, ec)) {
      report.problems.push_back(what + ": stored original " + shown + " is not a regular file");
      continue;
    }
    const auto size = fs::file_size(path, ec);
    if (ec) {
      report.problems.push_back(what + ": stored original " + shown +
                                " cannot be read: " + ec.message());
      continue;
    }
    if (size != static_cast<uintmax_t>(row.size)) {
      report.problems.push_back(what + ": stored original " + shown + " has been modified (size " +
                                std::to_string(size) + " bytes, recorded " +
                                std::to_string(row.size) + ")");
      continue;
    }
    std::string actual;
    try {
      actual = Sha256File(path);
    } catch (const Error& e) {
      report.problems.push_back(what + ": stored original " + shown +
                                " cannot be read: " + e.what());
      continue;
    }
    if (actual != row.sha256) {
      report.problems.push_back(what + ": stored original " + shown +
                                " has been modified (sha256 now " + actual + ")");
    }
  }

  // 2. The audit chain: seq 1, 2, 3, ...; each prev_hash is the previous
  // row's row_hash; each row_hash recomputes from the row's content.
  {
    auto& s = Q(std::string(kAuditColumns) + "ORDER BY seq");
    sql::Stmt::Scope scope(s);
    int64_t expected = 1;
    std::string prev_hash = kZeroHash;
    while (s.Step()) {
      ++report.audit_rows_checked;
      const int64_t seq = s.Int(0);
      const std::string row = "audit row " + std::to_string(seq);
      bool gap = false;
      if (seq != expected) {
        gap = true;
        const std::string missing = seq - expected == 1
                                        ? "audit row " + std::to_string(expected) + " missing"
                                        : "audit rows " + std::to_string(expected) + " to " +
                                              std::to_string(seq - 1) + " missing";
        report.problems.push_back(
            missing + (expected == 1 ? " (chain broken before " + std::to_string(seq) + ")"
                                     : " (chain broken between " + std::to_string(expected - 1) +
                                           " and " + std::to_string(seq) + ")"));
      }
      const auto at = s.OptText(1).value_or("");
      const auto actor = s.OptText(2).value_or("");
      const auto action = s.OptText(3).value_or("");
      const auto subject = s.OptText(4).value_or("");
      const auto exhibit_id = s.OptInt(5);
      const auto sha256 = s.OptText(6);
      const auto details = s.OptText(7).value_or("");
      const auto row_prev = s.OptText(8).value_or("");
      const auto row_hash = s.OptText(9).value_or("");
      if (!gap && row_prev != prev_hash) {
        report.problems.push_back(row + ": prev_hash does not match the hash of row " +
                                  std::to_string(seq - 1) + " (chain broken)");
      }
      const std::string recomputed = Sha256Hex(AuditCanonicalText(
          seq, at, actor, action, subject, exhibit_id, sha256, details, row_prev));
      if (recomputed != row_hash) {
        report.problems.push_back(row + ": hash does not match its content (row altered)");
      }
      prev_hash = row_hash;
      expected = seq + 1;
    }
  }

  // 3. SQLite's own checks.
  {
    sql::Stmt s(*db_, "PRAGMA integrity_check");
    while (s.Step()) {
      const std::string message = s.OptText(0).value_or("");
      if (message != "ok") report.problems.push_back("database integrity: " + message);
    }
  }
  {
    sql::Stmt s(*db_, "PRAGMA foreign_key_check");
    while (s.Step()) {
      report.problems.push_back("foreign key: " + s.OptText(0).value_or("?") + " row " +
                                std::to_string(s.OptInt(1).value_or(0)) + " refers to a missing " +
                                s.OptText(2).value_or("?") + " row");
    }
  }
  return report;
}

}  // namespace

int Store::SchemaVersion() { return static_cast<int>(kMigrations.size()); }

void Store::Create(const fs::path& dir, const NodeConfig& config_in, const std::string& actor) {
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  if (existed) {
    if (!fs::is_directory(dir, ec)) throw Error(dir.string() + ": exists and is not a folder");
    if (fs::exists(dir / "node.toml", ec) || fs::exists(dir / "bien.db", ec)) {
      throw Error(dir.string() + ": already holds a bien node");
    }
    if (!fs::is_empty(dir, ec)) throw Error(dir.string() + ": folder is not empty");
    if (ec) throw Error(dir.string() + ": cannot read folder: " + ec.message());
  }
  NodeConfig config = config_in;
  if (config.name.empty()) throw Error("the node name is empty");
  CheckLine("node name", config.name, false);
  if (!IsCountryCode(config.country)) {
    throw Error("country " + Quote(config.country) +
                " is not an ISO 3166-1 alpha-2 code (two upper-case letters, e.g. RS)");
  }
  CheckLine("the actor (who is acting)", actor, false);
  config.node_id = RandomHex(16);
  config.created_at = UtcNowIso8601();

  try {
    fs::create_directories(dir / "objects" / "tmp", ec);
    if (ec) throw Error(dir.string() + ": cannot create folder: " + ec.message());
    {
      auto db = OpenDatabase(dir / "bien.db", /*create=*/true);
      SqliteStore store(dir, config, std::move(db));
      JsonObject details;
      details.Add("name", config.name)
          .Add("country", config.country)
          .Add("node_id", config.node_id)
          .Add("schema_version", SchemaVersion());
      store.RecordAudit(actor, "init", "node " + config.name, std::nullopt, details.str());
    }
    FsyncDir(dir / "objects");
    // node.toml last: its presence marks a complete node.
    WriteNodeToml(dir, config);
    if (!existed) FsyncDir(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
  } catch (...) {
    // Leave the folder as it was found (empty, or absent).
    std::error_code ignored;
    if (existed) {
      for (const auto& entry : fs::directory_iterator(dir, ignored)) fs::remove_all(entry, ignored);
    } else {
      fs::remove_all(dir, ignored);
    }
    throw;
  }
}

std::unique_ptr<Store> Store::Open(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    throw Error(dir.string() + ": no such node folder (create one with `bien init`)");
  }
  if (!fs::is_directory(dir, ec)) throw Error(dir.string() + ": not a bien node (not a folder)");
  if (!fs::exists(dir / "node.toml", ec)) {
    throw Error(dir.string() + ": not a bien node (no node.toml)");
  }
  if (!fs::exists(dir / "bien.db", ec))
    throw Error(dir.string() + ": not a bien node (no bien.db)");
  NodeConfig config = ReadNodeToml(dir / "node.toml");
  auto db = OpenDatabase(dir / "bien.db", /*create=*/false);
  return std::make_unique<SqliteStore>(dir, std::move(config), std::move(db));
}

namespace internal {

AlertRecord AlertFromRow(sql::Stmt& s) {
  AlertRecord a;
  a.id = AlertId(s.Int(0));
  if (const auto hit = s.OptInt(1)) a.hit = HitId(*hit);
  a.created_at = s.Text(2);
  a.origin = s.Text(3);
  a.summary = s.Text(4);
  a.payload_json = s.Text(5);
  a.delivered_at = s.OptText(6);
  a.acknowledged_at = s.OptText(7);
  a.acknowledged_by = s.OptText(8);
  a.peer = s.OptText(9);
  return a;
}

void AppendAuditRow(sql::Db& db, const std::string& actor, const std::string& action,
                    const std::string& subject, std::optional<ExhibitId> exhibit,
                    const std::optional<std::string>& sha256, const std::string& details) {
  CheckLine("the actor (who is acting)", actor, false);
  CheckLine("the audit action", action, false);
  CheckLine("the audit subject", subject, true);
  int64_t seq = 1;
  std::string prev_hash = kZeroHash;
  {
    sql::Stmt last(db, "SELECT seq, row_hash FROM audit ORDER BY seq DESC LIMIT 1");
    if (last.Step()) {
      seq = last.Int(0) + 1;
      prev_hash = last.Text(1);
    }
  }
  const std::string at = UtcNowIso8601();
  std::optional<int64_t> exhibit_id;
  if (exhibit) exhibit_id = exhibit->value;
  const std::string row_hash = Sha256Hex(
      AuditCanonicalText(seq, at, actor, action, subject, exhibit_id, sha256, details, prev_hash));
  sql::Stmt s(
      db,
      "INSERT INTO audit (seq, at, actor, action, subject, exhibit_id, sha256, details, prev_hash,"
      " row_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
  s.Bind(1, seq)
      .Bind(2, at)
      .Bind(3, actor)
      .Bind(4, action)
      .Bind(5, subject)
      .Bind(6, exhibit_id)
      .Bind(7, sha256)
      .Bind(8, details)
      .Bind(9, prev_hash)
      .Bind(10, row_hash);
  s.Run();
}

std::unique_ptr<sql::Db> OpenNodeDatabase(const fs::path& dir) {
  Store::Open(dir);  // checks the folder and migrates
  return OpenDatabase(dir / "bien.db", /*create=*/false);
}

}  // namespace internal

}  // namespace bien

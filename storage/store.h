// The evidence store of one node: a node folder holding
//   node.toml   the node's name, country and id
//   bien.db     SQLite (WAL, foreign keys, synchronous=FULL): cases, exhibits,
//               scans, features, the hash-chained audit log
//   objects/    original files, content-addressed by SHA-256, never modified
// The schema is documented in docs/SCHEMA.md. Every change is one transaction.
// A Store object is used from one thread at a time (the node's writer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/ids.h"

namespace bien {

enum class ExhibitKind { kCartridgeCase, kBullet };
enum class ExhibitRole { kEvidence, kTestFire };
enum class Twist { kLeft, kRight };

const char* ToString(ExhibitKind kind);  // "cartridge_case" | "bullet"
const char* ToString(ExhibitRole role);  // "evidence" | "test_fire"
const char* ToString(Twist twist);       // "left" | "right"
std::optional<ExhibitKind> ParseExhibitKind(std::string_view text);
std::optional<ExhibitRole> ParseExhibitRole(std::string_view text);
std::optional<Twist> ParseTwist(std::string_view text);

// Class characteristics partition the search space. Each may be unknown.
struct ClassCharacteristics {
  std::optional<std::string> calibre;      // e.g. "9mm Luger"
  std::optional<std::string> firing_pin;   // e.g. "circular", "elliptical", "rectangular"
  std::optional<std::string> breech_face;  // e.g. "parallel", "arched", "granular"
  std::optional<int> lands;                // number of lands/grooves (bullets)
  std::optional<Twist> twist;              // rifling direction (bullets)
};

struct NodeConfig {
  std::string name;     // e.g. "RS-NFC Belgrade"
  std::string country;  // ISO 3166-1 alpha-2, upper case, e.g. "RS"
  std::string node_id;  // random, 32 hex digits; assigned by Create
  std::string created_at;
};

// What identifies an exhibit and what is known of it.
struct ExhibitSpec {
  std::string case_ref;     // the lab's case number, e.g. "2026-BG-0042"
  std::string exhibit_ref;  // unique within the case, e.g. "E1"
  ExhibitKind kind = ExhibitKind::kCartridgeCase;
  ExhibitRole role = ExhibitRole::kEvidence;
  ClassCharacteristics cc;
  // The firearm that fired it, when known (test fires: lab id or serial number).
  // Exhibits with different firearm refs are known non-matches (bien calibrate).
  std::optional<std::string> firearm_ref;
};

// What ingest learned from one scan file.
struct ScanMeta {
  std::string original_name;  // the file's name as the user gave it
  std::string format;         // "x3p", "png", "tiff", "jpeg"
  int width = 0;
  int height = 0;
  double dx_m = 0;
  double dy_m = 0;
  // Metres per height unit of the original file (1 for X3P files that follow
  // the standard), so the original can be re-read as it was at ingest.
  double z_scale = 1;
  double nan_share = 0;
  bool intensity = false;   // a 2D image rather than heights
  std::optional<int> land;  // bullet land number, 1-based
  std::string instrument;   // empty = unknown (stored as NULL)
  std::string measured_at;
  std::string creator;
  std::string comment;
};

struct NewScan {
  ScanMeta meta;
  std::span<const std::byte> original;  // the file's bytes, stored untouched
};

enum class AddStatus { kAdded, kDuplicate };

struct AddResult {
  AddStatus status = AddStatus::kAdded;
  ScanId scan;        // the new scan; for a duplicate, the scan already holding the file
  ExhibitId exhibit;  // that scan's exhibit
  std::string sha256;
  std::string detail;  // for a duplicate: where the file is already stored
};

struct ExhibitRecord {
  ExhibitId id;
  CaseId case_id;
  std::string case_ref;
  std::string exhibit_ref;
  ExhibitKind kind = ExhibitKind::kCartridgeCase;
  ExhibitRole role = ExhibitRole::kEvidence;
  ClassCharacteristics cc;
  std::optional<std::string> firearm_ref;
  std::string created_at;
  int scan_count = 0;
};

struct ScanRecord {
  ScanId id;
  ExhibitId exhibit;
  std::string sha256;
  int64_t size_bytes = 0;
  ScanMeta meta;
  std::string added_at;
};

struct AuditRecord {
  int64_t seq = 0;
  std::string at;                     // UTC ISO 8601
  std::string actor;                  // who
  std::string action;                 // e.g. "init", "add_scan", "export"
  std::string subject;                // e.g. "exhibit 2026-BG-0042/E1"
  std::optional<ExhibitId> exhibit;   // the exhibit the row is about, if any
  std::optional<std::string> sha256;  // of what was added, when something was
  std::string details;                // JSON object text
  std::string prev_hash;
  std::string row_hash;
};

// A comparison score between two originals, named by their sha256 (64
// lower-case hex digits), known to come from different firearms. The pair is
// unordered: it is stored with the smaller sha as sha_a.
struct KnmScore {
  std::string sha_a;
  std::string sha_b;
  double score = 0;
};

struct StoreCounts {
  int64_t cases = 0;
  int64_t exhibits = 0;
  int64_t scans = 0;
  int64_t features = 0;
  int64_t audit = 0;
};

struct VerifyReport {
  int64_t objects_checked = 0;
  int64_t audit_rows_checked = 0;
  std::vector<std::string> problems;  // each names the scan/object/row and the problem
  bool ok() const { return problems.empty(); }
};

class Store {
 public:
  // The schema version this build writes (PRAGMA user_version).
  static int SchemaVersion();

  // Creates a node folder (which may exist but must be empty). Throws
  // bien::Error naming the folder when it already holds a node or other files.
  static void Create(const std::filesystem::path& dir, const NodeConfig& config,
                     const std::string& actor);

  // Opens an existing node, migrating an older schema forward. Throws
  // bien::Error naming the folder: missing, not a node, or a newer schema.
  static std::unique_ptr<Store> Open(const std::filesystem::path& dir);

  virtual ~Store() = default;

  virtual const std::filesystem::path& dir() const = 0;
  virtual const NodeConfig& config() const = 0;

  // Adds scans of one exhibit in one transaction: all of them or none. The
  // case and exhibit are created when new; an existing exhibit must agree on
  // kind and role, and known class characteristics must not conflict (unknown
  // ones are filled in). A file already stored (same SHA-256) is reported as
  // kDuplicate and not stored again. Throws bien::Error and changes nothing
  // on failure.
  virtual std::vector<AddResult> AddScans(const std::string& actor, const ExhibitSpec& exhibit,
                                          std::span<const NewScan> scans) = 0;

  virtual std::vector<ExhibitRecord> ListExhibits() const = 0;
  // `ref` is "CASE/EXHIBIT", an exhibit ref that is unique in the store, or
  // "#ID" (the numeric id). Throws bien::Error when none or several match.
  virtual ExhibitRecord FindExhibit(std::string_view ref) const = 0;
  virtual std::vector<ScanRecord> ScansOf(ExhibitId exhibit) const = 0;
  virtual std::vector<ScanRecord> AllScans() const = 0;

  // Audit rows about one exhibit (and its scans), or all rows.
  virtual std::vector<AuditRecord> AuditTrail(std::optional<ExhibitId> exhibit) const = 0;
  // Appends an audit row of its own (e.g. "export"), in its own transaction.
  virtual void RecordAudit(const std::string& actor, const std::string& action,
                           const std::string& subject, std::optional<ExhibitId> exhibit,
                           const std::string& details_json) = 0;

  // Path of a stored original.
  virtual std::filesystem::path ObjectPath(const std::string& sha256) const = 0;

  // Versioned feature blobs per scan (filled by the matching layer).
  virtual void PutFeature(ScanId scan, const std::string& kind, int version,
                          std::span<const std::byte> blob) = 0;
  virtual std::optional<std::vector<std::byte>> GetFeature(ScanId scan, const std::string& kind,
                                                           int version) const = 0;

  // Known-non-match scores of a comparison method (e.g. "cmc-v1"), for score
  // calibration (docs/SCORES.md); `origin` says where they came from ("eval",
  // "calibrate"). Records all of them in one transaction with one
  // "record_knm_scores" audit row (method, origin, count); re-recording a pair
  // (in either order) replaces its score and origin. Returns the rows written:
  // the distinct pairs (a pair given twice in one call keeps its last score).
  // An empty list writes nothing (no audit row) and returns 0. Throws
  // bien::Error, changing nothing, on an empty method or origin, a sha that is
  // not 64 lower-case hex digits, a pair of equal shas or a non-finite score.
  virtual int RecordKnmScores(const std::string& method, const std::string& origin,
                              const std::vector<KnmScore>& scores, const std::string& actor) = 0;
  // The recorded scores of a method, ascending; empty for an unknown method.
  virtual std::vector<double> KnmScores(const std::string& method) const = 0;
  virtual int64_t CountKnmScores(const std::string& method) const = 0;

  virtual StoreCounts Counts() const = 0;

  // Re-hashes every stored original and checks the audit chain.
  virtual VerifyReport Verify() const = 0;
};

}  // namespace bien

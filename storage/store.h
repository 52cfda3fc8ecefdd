// The evidence store of one node: a node folder holding
//   node.toml   the node's name, country and id
//   bien.db     SQLite (WAL, foreign keys, synchronous=FULL): cases, exhibits,
//               scans, features, descriptors, leads, hits, alerts, the
//               hash-chained audit log
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

// A coarse search descriptor of one scan: a float32 vector under a key that
// names the descriptor's method, version and parameters (e.g.
// "bf-coarse-v1/64x64/pca128"). A new version or parameter set is a new key.
struct NewDescriptor {
  std::string key;
  std::vector<float> vector;
};

struct NewScan {
  ScanMeta meta;
  std::span<const std::byte> original;  // the file's bytes, stored untouched
  // Descriptors stored with the scan, in the same transaction. Ignored when
  // the file is already stored (a duplicate adds nothing).
  std::vector<NewDescriptor> descriptors = {};
};

enum class AddStatus { kAdded, kDuplicate };

// Benchmarks only (Store::AddBenchDistractors): the case holding the
// synthetic distractor exhibits and the format of their scans.
inline constexpr const char* kBenchDistractorCase = "BENCH-DISTRACTORS";
inline constexpr const char* kBenchDistractorFormat = "synthetic-descriptor";

// Benchmarks only: more descriptors of bench distractors under one key, one
// vector per distractor (empty: none for it). Store::AddBenchDistractors.
struct BenchExtraDescriptors {
  std::string key;
  std::span<const std::vector<float>> vectors;
};

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

// Search partitions (docs/SCHEMA.md, "Partitions"). Exhibits are compared
// only within one partition: the same kind and the same calibre. An unknown
// calibre is a partition of its own: an exhibit of unknown calibre is compared
// only with other exhibits of unknown calibre until its calibre is filled in.
// Calibres are compared exactly as stored ("9mm Luger" and "9 mm Luger" are
// two partitions); a calibre stored as the text "unknown" (in any case) counts
// as unknown.
struct Partition {
  ExhibitKind kind = ExhibitKind::kCartridgeCase;
  std::optional<std::string> calibre;  // nullopt: unknown calibre

  // Stable text: "<kind>|<calibre>", e.g. "cartridge_case|9mm Luger",
  // "bullet|unknown". The kind never contains '|', so the key splits at the
  // first one.
  std::string Key() const;
  bool operator==(const Partition& other) const { return Key() == other.Key(); }
};
Partition PartitionOf(ExhibitKind kind, const ClassCharacteristics& cc);
Partition PartitionOf(const ExhibitRecord& exhibit);
std::string PartitionKey(const ExhibitRecord& exhibit);  // PartitionOf(exhibit).Key()
// The inverse of Partition::Key; nullopt for text that is not a key.
std::optional<Partition> ParsePartitionKey(std::string_view key);

// Within a partition, the other class characteristics (firing pin, breech
// face, lands, twist) only exclude: two exhibits are compatible unless both
// know one of them and the values differ. Unknown matches anything. Calibre
// and kind are the partition's business and are not looked at here.
bool ClassCompatible(const ClassCharacteristics& a, const ClassCharacteristics& b);

// One stored descriptor, with the exhibit its scan belongs to.
struct DescriptorRow {
  ScanId scan;
  ExhibitId exhibit;
  std::vector<float> vector;
};

using LeadId = StrongId<struct LeadIdTag>;
using HitId = StrongId<struct HitIdTag>;
using AlertId = StrongId<struct AlertIdTag>;

enum class LeadStatus { kOpen, kConfirmed, kRejected };
const char* ToString(LeadStatus status);  // "open" | "confirmed" | "rejected"
std::optional<LeadStatus> ParseLeadStatus(std::string_view text);

// An exhibit as leads, hits and alerts name it.
struct ExhibitLabel {
  ExhibitId id;
  CaseId case_id;
  std::string case_ref;
  std::string exhibit_ref;
  std::string Label() const { return case_ref + "/" + exhibit_ref; }  // "CASE/EXHIBIT"
};

// One candidate of a search, to be flagged for review (Store::RecordLeads).
struct LeadCandidate {
  ExhibitId candidate;
  std::string method;              // the fine comparator and version, e.g. "cmc-v1"
  double score = 0;                // the fine score (finite)
  std::optional<double> strength;  // share of known non-matches scoring at least this high, 0-1
  std::optional<int> coarse_rank;  // 1-based rank in the coarse search, when there was one
  std::string registration_json;   // a JSON object (e.g. angle and shift); empty = {}
};

struct LeadRecord {
  LeadId id;
  ExhibitLabel query;      // the exhibit searched (the latest search that found the pair)
  ExhibitLabel candidate;  // the exhibit it found
  std::string method;
  double score = 0;
  std::optional<double> strength;
  std::optional<int> coarse_rank;
  std::string registration_json;  // JSON object text
  LeadStatus status = LeadStatus::kOpen;
  std::string created_at;
  std::string updated_at;  // last time a search found the pair
  std::optional<std::string> decided_by;
  std::optional<std::string> decided_at;
  std::optional<std::string> note;
};

enum class LeadOutcome {
  kCreated,         // a new open lead
  kUpdated,         // the pair already had an open lead: its scores were replaced
  kAlreadyDecided,  // an expert already confirmed or rejected the pair: nothing changed
};
const char* ToString(LeadOutcome outcome);  // "created" | "updated" | "already_decided"

struct RecordedLead {
  LeadId lead;  // the new or updated lead, or the newest decided lead of the pair
  LeadOutcome outcome = LeadOutcome::kCreated;
  LeadStatus status = LeadStatus::kOpen;  // that lead's status
};

// A confirmed lead: the two exhibits were fired by the same firearm.
struct HitRecord {
  HitId id;
  LeadId lead;
  ExhibitLabel a;  // the lead's query exhibit
  ExhibitLabel b;  // the lead's candidate exhibit
  std::string confirmed_by;
  std::string confirmed_at;
  std::optional<std::string> note;
};

// What investigators are told. Local alerts come from hits confirmed in this
// node; remote ones (origin "remote", no local hit) from other nodes.
struct AlertRecord {
  AlertId id;
  std::optional<HitId> hit;
  std::string created_at;
  std::string origin;        // "local" | "remote"
  std::string summary;       // one line for people
  std::string payload_json;  // a JSON object: both exhibits and cases, scores, who confirmed
  std::optional<std::string> delivered_at;
  std::optional<std::string> acknowledged_at;
  std::optional<std::string> acknowledged_by;
  // The peer node a cross-border alert concerns (the one that sent the hit
  // notice, or the one whose candidate was confirmed here); none for local hits.
  std::optional<std::string> peer;
};

struct ConfirmedLead {
  LeadRecord lead;  // now confirmed
  HitRecord hit;
  AlertRecord alert;
};

struct StoreCounts {
  int64_t cases = 0;
  int64_t exhibits = 0;
  int64_t scans = 0;
  int64_t features = 0;
  int64_t audit = 0;
  int64_t descriptors = 0;
  int64_t leads = 0;
  int64_t hits = 0;
  int64_t alerts = 0;
};

// A cheap summary of what search indexes are built from (Store::SearchStamp):
// the largest id and the row count of the scans and descriptors tables. The
// store only adds such rows (an exhibit's class characteristics are filled
// in only together with a new scan), so any commit that can change a
// partition's set of indexed scans, from this connection or another process,
// changes the stamp. A descriptor rewritten in place for the same scan and
// key (PutDescriptor again) does not; nor does it change the index's id set.
struct SearchStamp {
  int64_t scans_max_id = 0;
  int64_t scans = 0;
  int64_t descriptors_max_id = 0;
  int64_t descriptors = 0;
  bool operator==(const SearchStamp&) const = default;
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
  // kDuplicate and not stored again. Each new scan's descriptors
  // (NewScan::descriptors, checked as PutDescriptor checks them, before
  // anything is written) are stored in the same transaction. Throws
  // bien::Error and changes nothing on failure.
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

  // Coarse search descriptors (table `descriptors`): one float32 vector per
  // scan and key. Derived data, not audited; writing a (scan, key) again
  // replaces the vector. Throws bien::Error, changing nothing, for an unknown
  // scan, a key that is empty, longer than 128 characters or holds a control
  // character, an empty vector, a non-finite value, or a dimension other than
  // that of the key's other descriptors.
  virtual void PutDescriptor(ScanId scan, const std::string& key,
                             std::span<const float> vector) = 0;
  // Every descriptor of `key` whose scan belongs to an exhibit of `partition`,
  // by scan id. Exhibits of another partition are never returned.
  virtual std::vector<DescriptorRow> Descriptors(const std::string& key,
                                                 const Partition& partition) const = 0;
  // As Descriptors, without reading the vectors (rows with empty vectors).
  virtual std::vector<DescriptorRow> DescriptorOwners(const std::string& key,
                                                      const Partition& partition) const = 0;
  // One scan's descriptor of `key`; nullopt when it has none.
  virtual std::optional<std::vector<float>> GetDescriptor(ScanId scan,
                                                          const std::string& key) const = 0;
  // The scan ids of Descriptors(key, partition), ascending, without the vectors.
  virtual std::vector<ScanId> DescriptorScanIds(const std::string& key,
                                                const Partition& partition) const = 0;
  // Scans that have no descriptor of `key` (optionally only scans of exhibits
  // of one kind), by id: what to compute after a descriptor version change.
  virtual std::vector<ScanRecord> ScansLackingDescriptor(const std::string& key,
                                                         std::optional<ExhibitKind> kind) const = 0;
  // The partitions of the stored exhibits, sorted by key.
  virtual std::vector<Partition> Partitions() const = 0;

  // FOR BENCHMARKS ONLY (`bien bench federation`): fills a partition with
  // synthetic "distractor" exhibits fast, without originals. In one
  // transaction with one "add_bench_distractors" audit row, each vector of
  // `vectors` (count * dim floats, back to back) becomes an exhibit
  // kBenchDistractorCase/D0000001, D0000002, ... (numbered on from the
  // case's existing exhibits; cartridge case, test fire, of `calibre`), one
  // scan of format kBenchDistractorFormat whose sha256 is that of the
  // vector's bytes (no object is written: `bien verify` reports them as
  // missing originals) and the vector as its descriptor under `key`. Returns
  // one AddResult per vector, in order. Throws bien::Error, changing nothing,
  // when `vectors` is empty or not a whole number of `dim`-value vectors,
  // `dim` differs from the key's stored descriptors, a value is not finite,
  // the key, calibre or actor is malformed, or a row cannot be written (e.g.
  // two equal vectors: one sha256). docs/SCHEMA.md, "Bench distractors".
  //
  // `extra` (may be empty) gives each distractor more descriptors in the same
  // transaction: per entry a key and one vector per distractor, in order (an
  // empty vector: none for that distractor, as a scan too sparse for ring
  // spectra has none). Its vectors of one key share one dimension, the
  // key's stored one if any. Refused as above when an entry has another
  // count than `vectors`, a malformed key, the descriptor key again, or a
  // value that is not finite.
  std::vector<AddResult> AddBenchDistractors(const std::string& actor, const std::string& calibre,
                                             const std::string& key, int dim,
                                             std::span<const float> vectors) {
    return AddBenchDistractors(actor, calibre, key, dim, vectors, {});
  }
  virtual std::vector<AddResult> AddBenchDistractors(
      const std::string& actor, const std::string& calibre, const std::string& key, int dim,
      std::span<const float> vectors, std::span<const BenchExtraDescriptors> extra) = 0;

  // Flags candidates of a search for `query` for review, in one transaction
  // with one "record_leads" audit row. The pair (query, candidate) is
  // unordered: when it already has an open lead, that lead takes this
  // search's direction, method, scores and registration (kUpdated) instead of
  // a second lead being added; when an expert has already confirmed or
  // rejected it, nothing changes (kAlreadyDecided). A candidate given twice in
  // one call updates the lead its first mention created. Returns one entry per
  // candidate, in order. An empty list, or one where every pair is already
  // decided, writes nothing (no audit row). Throws bien::Error, changing
  // nothing, for an unknown exhibit, a candidate that is the query, of another
  // kind, of another known calibre or with conflicting known class
  // characteristics (ClassCompatible), an empty method, a non-finite score, a
  // strength outside 0-1, a coarse rank below 1 or a registration that is not
  // a JSON object.
  virtual std::vector<RecordedLead> RecordLeads(const std::string& actor, ExhibitId query,
                                                const std::vector<LeadCandidate>& candidates) = 0;
  // All leads (or only the open ones): open first, then by score (highest
  // first), then by id.
  virtual std::vector<LeadRecord> Leads(bool open_only) const = 0;
  // Throws bien::Error "no lead N in the store".
  virtual LeadRecord FindLead(LeadId id) const = 0;
  // An expert (`by`, non-empty) confirms an open lead: in one transaction the
  // lead becomes confirmed, a hit and its local alert are created and a
  // "confirm_lead" audit row is appended. Throws bien::Error, changing
  // nothing, for an unknown lead, a lead that is not open (naming its status,
  // who decided and when), an empty `by` or a note with control characters
  // other than line feeds and tabs. An empty note is stored as none.
  virtual ConfirmedLead ConfirmLead(LeadId id, const std::string& by, const std::string& note) = 0;
  // As ConfirmLead, but the lead becomes rejected; no hit, no alert; audit
  // action "reject_lead".
  virtual LeadRecord RejectLead(LeadId id, const std::string& by, const std::string& note) = 0;
  virtual std::vector<HitRecord> Hits() const = 0;      // by id
  virtual std::vector<AlertRecord> Alerts() const = 0;  // by id

  virtual StoreCounts Counts() const = 0;
  // One snapshot; a few milliseconds at 10^5 scans (index-only reads).
  virtual SearchStamp SearchStampNow() const = 0;

  // Re-hashes every stored original and checks the audit chain.
  virtual VerifyReport Verify() const = 0;
};

}  // namespace bien

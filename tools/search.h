// `bien search`: the two-stage search of one stored cartridge case or bullet
// against its partition of the node's store (docs/SEARCH.md).
//
// Cartridge cases:
//  1. coarse: the exhibit's bfd descriptor (matching/descriptor.h) is looked
//     up in the partition's FAISS index (matching/index.h), kept in
//     NODE/index/ and brought up to date with the store first (loaded,
//     updated with the scans added since, or rebuilt when missing, corrupt
//     or of another descriptor version); its best `ring_pool` exhibits are
//     re-ranked by the ring correlation of their stored ring spectra with
//     the query's (the best rotation and centre offset, brs-v1), which
//     ranks mates higher than the rotation-invariant cosine does; in a
//     partition larger than the pool, the best `ring_pool` of the ring
//     screen (compressed ring spectra of every scan scored at the found
//     centre, matching/ring_codes.h, saved in NODE/index/ as .brc) join
//     the pool first;
//  2. fine: the best `coarse_k` exhibits of compatible class characteristics
//     are compared with congruent matching cells (matching/cmc.h) on all
//     cores, from their cached compact features (tools/fine_features.h;
//     computed from the stored originals when missing);
//  3. the correlation list is ordered by the fine score, each with its
//     strength (how often the node's known non-matches score as high);
//     candidates at or above `lead_threshold` become leads;
//  4. query expansion: the coarse neighbours of the strongest candidates are
//     compared too (a mate the query's descriptor ranks low is often close to
//     another mate's).
//
// Bullets (docs/BULLETS.md, "Search"): each land scan has a bld descriptor
// (matching/bullet.h) in the partition's bullet index (a file of its own);
// every land of the query looks up its nearest lands, candidate bullets are
// ranked by the sum over the query's lands of their best cosine, and the
// best `coarse_k` are compared bullet to bullet (phase alignment of the land
// scores) on all cores. No query expansion (a bullet's six lands already
// give six looks into the index).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "imaging/surface.h"
#include "matching/calibration.h"
#include "matching/cmc.h"
#include "matching/descriptor.h"
#include "matching/index.h"
#include "matching/ring_codes.h"
#include "storage/store.h"
#include "tools/commands.h"
#include "tools/fine_features.h"

namespace bien::cli {

// A combined CMC score at or above this makes a candidate a lead. NIST's
// CMC papers call six congruent cells an identification; on the Fadul set
// known non-matches score at most 4.5 and known matches at least 14
// (docs/ACCURACY.md). A lead is only flagged for an expert's review.
inline constexpr double kDefaultLeadThreshold = 6;
// A bullet score (mean land score at the best phase, matching/bullet.h) at or
// above this makes a candidate bullet a lead. On Hamby 252 every same-land
// pair scores at least 0.757 and every different-land pair at most 0.362, so
// the best phase of two bullets of different barrels (a mean of different-land
// scores) stays below 0.362 and a same-barrel bullet scored 0.792; 0.5 lies
// in the gap with room on both sides (docs/BULLETS.md, "Search").
inline constexpr double kDefaultBulletLeadThreshold = 0.5;
// The lead method of a bullet search (the bullet-to-bullet score of
// matching/bullet.h with the bld-v1 coarse stage).
inline constexpr const char* kBulletSearchMethod = "bullet-v1";

// The ring screen's candidates per search (docs/SEARCH.md "The ring
// screen"). At 10^6 synthetic exhibits with a pool of 20 000 the screen's
// best 20 000 put a mate in the coarse top 100 for 0.990 of the queries
// (0.975 without it), and so did its first 1000, 2000, 5000 and 10 000
// (scored on the same run, docs/PERFORMANCE.md "The ring screen"): 5000
// keeps a margin and reads 15 000 fewer spectra from the store than 20 000.
inline constexpr int kDefaultRingScreen = 5000;

struct SearchOptions {
  int coarse_k = 100;  // candidates the coarse stage hands to the fine stage
  int jobs = 0;        // fine-stage threads; 0 = all cores
  // nullopt: the kind's default (kDefaultLeadThreshold for cartridge cases,
  // kDefaultBulletLeadThreshold for bullets).
  std::optional<double> lead_threshold;
  bool record_leads = true;
  // Query expansion: the coarse neighbours of the `expand_top` strongest
  // candidates (at or above the lead threshold) are compared as well,
  // `expand_k` new exhibits each; 0 turns it off.
  int expand_top = 3;
  int expand_k = 20;
  // The coarse stage only: candidates in coarse order with their cosines, no
  // fine comparison, no query expansion, no leads.
  bool coarse_only = false;
  // The coarse stage's second pass: the index's best `ring_pool` exhibits
  // (at least coarse_k) are re-ranked by the ring correlation of their
  // stored ring spectra with the query's (matching/descriptor.h, brs-v1: the
  // best rotation and centre offset), and the best coarse_k go on. 0: the
  // descriptor's order alone. At 10^6 synthetic exhibits 1000 / 2000 / 5000
  // put a mate in the top 100 for 0.915 / 0.930 / 0.955 of the queries
  // (docs/PERFORMANCE.md, "The ring stage"); the mates beyond are the pool's
  // (at 10^5 the exact cosine's top 5000 / 10 000 / 20 000 hold 0.988 /
  // 0.993 / 0.995 of them, docs/ACCURACY.md "Search"); with 20 000,
  // screened (kRingScreen), 0.990 at 10^5 against 0.980 with 5000. About 3 us
  // of CPU per candidate; reading 20 000 spectra from the store about 200 ms
  // (5000: 47 ms; warm cache).
  int ring_pool = 20000;
  // The ring screen (partitions with more scans than the pool): its best
  // `ring_screen` join the pool; 0 turns it off (kDefaultRingScreen).
  int ring_screen = kDefaultRingScreen;
};

struct SearchCandidate {
  ExhibitRecord exhibit;
  ScanId scan;              // the scan the coarse stage found
  int coarse_rank = 0;      // 1-based, in the coarse list that found it
  double coarse_score = 0;  // cosine of the descriptors
  int descriptor_rank = 0;  // 1-based rank by that cosine (before the ring stage)
  // Ring correlation with the query (the ring stage ran and the candidate has
  // ring spectra); the list's order when the ring stage ran.
  std::optional<double> ring_score;
  // 1-based rank by the compressed ring screen (matching/ring_codes.h) when
  // the screen, not the index's pool, brought the candidate in;
  // descriptor_rank is then 0 (coarse_score is still the cosine).
  int screen_rank = 0;
  std::string found_via;  // empty: the query's coarse list; else the candidate whose list
  double score = 0;       // combined CMC score
  int forward = 0;        // congruent cells, reference -> candidate
  int backward = 0;
  Registration registration;  // candidate = query under this pose
  std::optional<Exceedance> strength;
  std::string strength_text;
  bool lead = false;  // at or above the lead threshold
  // Bullets only (score is then the bullet score, 0..1; forward, backward and
  // registration stay empty): the best phase, the number of lands n, the
  // land pairs at that phase with their land scores, and the best mean of
  // another phase.
  struct LandPairing {
    int query_land = 0;  // 1-based
    int candidate_land = 0;
    double score = 0;
  };
  std::optional<int> phase;  // land i of the query faces land ((i - 1 + phase) mod n) + 1
  int lands = 0;
  std::vector<LandPairing> pairing;
  double runner_up = 0;
};

struct SearchReport {
  ExhibitRecord query;
  std::string method;  // the fine comparison: "cmc-v1" or kBulletSearchMethod
  std::string partition;
  int64_t partition_scans = 0;              // scans with a descriptor in the partition
  std::string index_kind;                   // "exact", "ivf_flat", ...
  std::string index_note;                   // "loaded", "updated (+2)", "rebuilt: no saved index"
  bool coarse_only = false;                 // SearchOptions::coarse_only: no fine scores
  std::vector<SearchCandidate> candidates;  // best fine score first (coarse only: coarse order)
  std::vector<std::string> skipped;         // candidates that could not be compared, and why
  std::vector<RecordedLead> leads;
  double lead_threshold = kDefaultLeadThreshold;
  double coarse_ms = 0;  // both coarse passes (index and ring stage)
  // The ring stage: candidates re-ranked (0: it did not run, see ring_note),
  // its share of coarse_ms, and why it did not run or what it skipped.
  int ring_pool = 0;
  double ring_ms = 0;
  std::string ring_note;
  // The compressed ring screen (partitions larger than the pool): the
  // candidates it added to the pool, its share of ring_ms, and the state of
  // the partition's ring codes ("loaded", "rebuilt: ...") or why it did not
  // run.
  int ring_screen = 0;
  double ring_screen_ms = 0;
  std::string ring_screen_note;
  double fine_ms = 0;
  int jobs = 1;
  // Compact CMC features (tools/fine_features.h) of the query and the
  // candidates: read from the node's cache, or computed from the originals.
  int features_cached = 0;
  int features_computed = 0;
  int features_write_failures = 0;  // computed but not cached (e.g. a full disk)
  // Bullets: the query's lands in the search, and its land scans that could
  // not be used (and why).
  int query_lands = 0;
  std::vector<std::string> query_unusable;
};

// The coarse descriptor of a raw scan as ingest computes it: preprocessed as
// every comparison is, then bfd. Throws bien::Error naming `label`.
std::vector<float> BreechFaceScanDescriptor(const Surface& raw, const std::string& label);

// The coarse stage's second pass: `pool` (the index's candidates, best
// cosine first) re-ranked by the ring correlation of each candidate's stored
// ring spectra (RingSpectraKey) with `query`, on `jobs` threads (the store is
// read on this thread). Returns the best `keep`: a candidate without stored
// spectra (a scan too sparse for them, or bench distractors) keeps its place
// when its cosine rank is within `keep` (RingOrder); the others go to
// `dropped`. coarse_rank is renumbered 1.. in the new order,
// descriptor_rank keeps the cosine rank.
// The ring stage's order, also measured by `bien bench search`: `ring` holds
// the candidates' ring scores in cosine order (nullopt: no spectra); returns
// the indices of the best `keep` in their new order: an unscored candidate
// whose cosine rank is within `keep` keeps that place, the other places take
// the ring-scored ones, best first.
std::vector<size_t> RingOrder(const std::vector<std::optional<double>>& ring, int keep);
// The ring stage scores every candidate at the query's found centre (one
// correlation, about 3 us) and runs the centre search (RingQuery's 49
// offsets, about 60 us) on the best kRingScreen of those (at least `keep`)
// and on the cosine's best kRingScreen. In a simulation (400 synthetic
// queries among 10^5 exhibits, docs/ACCURACY.md "Search") this screen lost
// no mate the full centre search ranks in the top 100 for pools up to
// 20 000 (a pool of all 10^5: 0.995 against 0.998); it lets the pool grow
// for less CPU.
inline constexpr int kRingScreen = 1000;
// The ring stage's scores of candidates with these spectra (in cosine
// order; empty: none, nullopt): the centre search's for the screened, the
// found centre's for the rest (never above a candidate screened by it,
// since the search includes the found centre), on `jobs` threads. RingOrder
// of them is the stage's order.
std::vector<std::optional<double>> RingStageScores(
    const RingQuery& query, const std::vector<const std::vector<float>*>& spectra, int keep,
    int jobs);
// Which candidates the centre search takes, given their found-centre scores
// in cosine order (nullopt: no spectra): the best max(kRingScreen, keep) by
// that score and, of those scored, the cosine's first max(kRingScreen, keep).
std::vector<size_t> RingCentreSearchSet(const std::vector<std::optional<double>>& found, int keep);
// The ring stage's scores when the partition's ring codes are at hand (the
// screen ran): the found-centre scores come from the codes
// (RingCodeIndex::Scores, already in memory) and only the centre-search
// set's spectra are read from the store (`read(set)`: the spectra of those
// candidates, in that order, empty for one that has none): about 2000 reads instead of the whole
// pool's 25 000 (a real search at 10^5 spent about 0.55 s of its 0.7 s ring stage reading them).
// Returns the scores (the centre search's for that set, the compressed found centre's for the rest)
// and, in `order_keys`, what to order by: the rest rank after every centre-searched candidate.
std::vector<std::optional<double>> RingStageScoresFromCodes(
    const RingQuery& query, const std::vector<std::optional<double>>& compressed, int keep,
    int jobs,
    const std::function<std::vector<std::vector<float>>(const std::vector<size_t>&)>& read,
    std::vector<std::optional<double>>* order_keys);
// `codes` (may be null): the partition's ring codes (RingStageScoresFromCodes).
std::vector<SearchCandidate> RingStage(const Store& store, const RingQuery& query,
                                       std::vector<SearchCandidate> pool, int keep, int jobs,
                                       std::vector<SearchCandidate>* dropped,
                                       const RingCodeIndex* codes = nullptr);

// The coarse descriptor of a raw land scan as ingest computes it: its land
// signature (imaging/land.h, default options), then bld. Throws bien::Error
// naming `label`.
std::vector<float> LandScanDescriptor(const Surface& raw, const std::string& label);

// One stored scan to compare with a query in the fine stage.
struct FineTarget {
  ExhibitRecord exhibit;
  ScanId scan;
};
// Its outcome: the CMC result, or why it could not be compared.
struct FineOutcome {
  std::optional<CmcResult> result;
  std::string error;
};
// The fine stage of a breech-face search, shared by the local search and the
// answer to a peer's request: CMC of `query` against each target, from the
// targets' cached compact features (computed from the originals when
// missing), on `jobs` threads (OpenCV single-threaded meanwhile). The Store
// is only read here, on the calling thread.
std::vector<FineOutcome> CompareWithStored(Store& store, FineFeatures& features,
                                           const CmcPrepared& query,
                                           const std::vector<FineTarget>& targets, int jobs);

// A partition's breech-face coarse index, brought up to date with the store
// as the search does it (descriptors backfilled, saved index loaded, updated
// or rebuilt), with the scans it holds. Also used to answer peers'
// correlation requests (tools/federation.cpp).
struct CoarseIndex {
  std::shared_ptr<VectorIndex> index;
  // scan id -> exhibit id of every indexed scan (shared, not copied, when a
  // remembered check is reused)
  std::shared_ptr<const std::unordered_map<int64_t, int64_t>> exhibit_of;
  int64_t scans = 0;                   // indexed scans
  std::string note;                    // "in memory", "loaded", "updated (+2, -0)", "rebuilt: ..."
  std::optional<Partition> partition;  // whose index it is (its ring codes are opened on demand)
};
// The full check (backfill, the partition's scan list against the index's id
// set) runs once per store state: a process remembers, per node folder,
// partition and descriptor key, the Store::SearchStampNow it last checked
// against and reuses that index while the stamp and the index file are
// unchanged (a long-running `bien serve` answers each request after a few
// milliseconds instead of re-reading 10^5 scan ids). Any scan or descriptor
// added since, by this process or another (`bien ingest` while `bien serve`
// runs), changes the stamp and brings the full check back. Thread-safe.
CoarseIndex OpenCoarseIndex(Store& store, const Partition& partition);

// The coarse stage of a breech-face search: one selection for the local
// search and the answer to a peer's request (tools/federation.cpp), so the
// two cannot drift. A candidate is an exhibit (its best-ranked scan's hit),
// taken once per selection (a later list, e.g. query expansion, skips the
// exhibits an earlier one took), never the query's own exhibit, and only when
// ClassCompatible with the query's class characteristics; the index is asked
// for more hits until a list is full or the index has no more.
class CoarseSelection {
 public:
  // `query`: the stored exhibit searched (left out), none for a peer's query.
  CoarseSelection(Store& store, CoarseIndex index, ClassCharacteristics cc,
                  std::optional<ExhibitId> query);
  // The next `k` new candidates of a coarse query, best cosine first
  // (coarse_rank 1..k in this list, found_via = via).
  std::vector<SearchCandidate> Next(std::span<const float> vector, int k,
                                    const std::string& via = "");
  // The same with the ring stage: the next max(pool, k) by cosine, and when
  // the partition holds more scans than that, the best max(screen, k) of the
  // partition's compressed ring screen (OpenRingCodes; none when screen is
  // 0) not among them, all re-ranked by RingStage against `rings` on `jobs`
  // threads; the `k` it keeps are taken, the rest given back (a later list,
  // e.g. query expansion, may take them). `pooled` receives how many were
  // re-ranked.
  std::vector<SearchCandidate> NextByRings(std::span<const float> vector, const RingQuery& rings,
                                           int pool, int k, int jobs, int* pooled = nullptr,
                                           int screen = kDefaultRingScreen);
  // What the last NextByRings' screen did: candidates added, its time (ms),
  // the ring codes' state or why it did not run (empty: the pool held the
  // whole partition).
  struct Screen {
    int added = 0;
    double ms = 0;
    std::string note;
  };
  const Screen& screen() const { return screen_; }
  // Query expansion: for each of the `options.expand_top` strongest of
  // `scored` (fine score at or above `threshold`), the next
  // `options.expand_k` candidates of its own stored descriptor, marked as
  // found via it. Nothing when expansion is off.
  std::vector<SearchCandidate> Expand(const std::vector<SearchCandidate>& scored, double threshold,
                                      const SearchOptions& options);
  const CoarseIndex& index() const { return index_; }

 private:
  const ExhibitRecord& Exhibit(int64_t id);
  // Next without reading the exhibits' records when every exhibit of the
  // partition is class-compatible with the query (only their ids are set;
  // a pool of 20 000 records took about 0.3 s to read); FillRecords reads
  // those of the candidates that stay.
  std::vector<SearchCandidate> Collect(std::span<const float> vector, int k,
                                       const std::string& via);
  bool ChecksClass() const;  // the query has class characteristics beyond the partition's
  void FillRecords(std::vector<SearchCandidate>& candidates);
  Store& store_;
  CoarseIndex index_;
  ClassCharacteristics cc_;
  std::optional<ExhibitId> query_;
  std::set<int64_t> taken_;                    // exhibits already candidates
  std::map<int64_t, ExhibitRecord> exhibits_;  // records of the hits looked at
  Screen screen_;
};

// The partition's compressed ring screen (matching/ring_codes.h), saved in
// NODE/index/ beside its vector index (.brc) and brought up to date with the
// store's ring spectra first (loaded, updated with the scans added or
// removed since, or rebuilt when missing, damaged, of another key, or when
// the partition grew or shrank fourfold since its basis was trained); the
// check runs once per store state, as OpenCoarseIndex's. `note` receives
// "in memory", "loaded", "updated (+n, -m)" or "rebuilt: why". Throws
// bien::Error when the partition has too few ring spectra to train a basis
// (fewer than 12) or the file cannot be saved.
std::shared_ptr<RingCodeIndex> OpenRingCodes(Store& store, const Partition& partition, int jobs,
                                             std::string* note);

// Runs the search of a stored exhibit. Throws bien::Error naming the exhibit
// when it is neither a cartridge case nor a bullet, has no 3D scan or no
// usable descriptor (a bullet: no land scan with one).
// Records leads (one transaction) unless options.record_leads is false.
// `rings`: the query's ring query when the caller has made it already (a
// federated search sends it to the peers); else it is made from the stored
// original.
SearchReport SearchExhibit(Store& store, const ExhibitRecord& query, const SearchOptions& options,
                           const std::string& actor, const RingQuery* rings = nullptr);

struct SearchArgs {
  std::string exhibit;  // CASE/EXHIBIT, a unique exhibit ref, or #ID
  int top = 20;         // rows printed
  SearchOptions options;
  bool no_leads = false;
  bool standalone = false;  // never through the serving node (tools/local_search.h)
};
int CmdSearch(Context& ctx, const SearchArgs& args);

// Prints one search as `bien search` does (text), for ingest's automatic search.
void PrintSearchSummary(std::ostream& out, const SearchReport& report);

}  // namespace bien::cli

// Subcommands of `bien` (private to tools/). Each takes the common context
// and its own arguments, writes to ctx.out / ctx.err, and returns an exit code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "imaging/x3p.h"
#include "storage/store.h"
#include "tools/cli.h"

namespace bien::cli {

struct Context {
  std::ostream& out;
  std::ostream& err;
  bool json = false;
  std::string actor;                          // who runs the command (audit)
  std::optional<std::filesystem::path> node;  // --node or BIEN_NODE
  bool progress = false;                      // draw a progress bar on stderr

  // The node folder, or a bien::Error telling how to name one.
  const std::filesystem::path& NodeDir() const;
};

struct InitArgs {
  std::string name;
  std::string country = "ZZ";  // ISO 3166 "unknown or unspecified"
};
int CmdInit(Context& ctx, const InitArgs& args);

// One file to ingest and what it belongs to.
struct IngestItem {
  std::filesystem::path path;
  ExhibitSpec exhibit;
  std::optional<int> land;
  std::optional<double> pixel_size_um;
  // How to read X3P lateral increments and heights; unset = auto / metres.
  std::optional<LengthUnit> xy_unit;
  std::optional<LengthUnit> z_unit;
  std::string error;  // set when the item was already invalid (e.g. a bad manifest row)
  std::string label;  // how to name the item in messages (path, or manifest:line path)
};

struct IngestArgs {
  std::vector<std::filesystem::path> files;
  std::optional<std::filesystem::path> manifest;
  std::string case_ref;
  std::string exhibit_ref;
  std::string kind;
  std::string role;
  std::optional<std::string> calibre, firing_pin, breech_face, twist;
  std::optional<std::string> firearm;  // reference of the firearm that fired a test fire
  std::optional<int> lands;
  std::optional<int> land;
  std::optional<double> pixel_size_um;
  std::string xy_unit = "auto";
  std::string z_unit = "m";
  int jobs = 0;            // parser threads; 0 = number of cores
  bool no_search = false;  // skip the automatic search of new cartridge cases
};
int CmdIngest(Context& ctx, const IngestArgs& args);

// The ingest engine shared by `ingest`, `bench ingest` and `demo`.
struct IngestOutcome {
  std::string label;
  std::string status;  // "ingested" | "duplicate" | "rejected"
  std::string reason;  // for rejected / duplicate
  int64_t scan_id = 0;
  int64_t exhibit_id = 0;
  std::string sha256;
  int64_t bytes = 0;
  std::vector<std::string> warnings;  // non-fatal findings of the reader
};
struct IngestSummary {
  std::vector<IngestOutcome> items;  // in input order
  int ingested = 0;
  int duplicates = 0;
  int rejected = 0;
  int64_t bytes = 0;
  double seconds = 0;
};
IngestSummary IngestItems(Store& store, const std::string& actor, std::vector<IngestItem> items,
                          int jobs, bool progress, std::ostream& progress_out);
// Reads a manifest CSV into items (columns in docs/INGEST.md). Paths are
// relative to the manifest's folder. Throws bien::Error for an unreadable
// file or a bad header; a bad row becomes an item with `error` set.
std::vector<IngestItem> ReadManifest(const std::filesystem::path& manifest);

// Peak resident memory of this process, MiB.
double PeakRssMiB();
// The real-data folder: `given`, else $BIEN_DATA_DIR, else ../shared/data or
// ../../shared/data from the working folder; nullopt when none exists.
std::optional<std::filesystem::path> FindDataDir(const std::optional<std::filesystem::path>& given);

int CmdList(Context& ctx, const std::optional<std::string>& case_ref);
int CmdShow(Context& ctx, const std::string& exhibit);
int CmdExport(Context& ctx, const std::string& exhibit, const std::filesystem::path& out_dir);
int CmdVerify(Context& ctx);

struct SynthArgs {
  std::filesystem::path out;
  int firearms = 3;
  int shots = 2;
  uint64_t seed = 1;
  int size_px = 400;
  // Set: write this many synthetic coarse descriptors (`shots` per firearm)
  // to the file `out` instead of X3P scans (tools/synth_features.h).
  std::optional<int64_t> features;
  int jobs = 0;  // threads for --features; 0 = every core
};
int CmdSynth(Context& ctx, const SynthArgs& args);

struct BenchIngestArgs {
  std::optional<std::filesystem::path> data;  // real data folder (../shared/data)
  int synthetic = 1000;
  int jobs = 0;
  std::optional<std::filesystem::path> work;  // scratch folder (default: a temp folder)
};
int CmdBenchIngest(Context& ctx, const BenchIngestArgs& args);

struct BenchSearchArgs {
  std::vector<int64_t> exhibits{10000, 100000, 1000000};  // partition sizes, measured in turn
  std::optional<std::filesystem::path> features;          // `bien synth --features` file
  int queries = 200;  // held-out shots searched for, one at a time
  int rerank = 100;   // candidates of the timed fine stage (CMC)
  int nprobe = 16;    // lists an approximate index visits per query
  // Index kind measured: empty for the node's default (exact below
  // exact_below vectors, else the default approximate kind); a named kind is
  // used at every size ("exact", "ivf_flat", "ivf_sq8", "ivf_pq", "binary_sq8").
  std::string kind;
  // binary_sq8's Hamming kernel ("portable", "popcnt", "avx512"); empty: the
  // fastest this CPU has.
  std::string hamming;
  int shots = 2;      // shots per firearm when generating on the fly
  uint64_t seed = 1;  // synthetic descriptors' seed when generating on the fly
  int jobs = 0;       // threads of generation and of the fine stage; 0 = every core
  // The ring stage (tools/search.h): each query's best ring_pool from the
  // index re-ranked by ring correlation; 0: not measured.
  int ring_pool = 20000;  // the search's default (SearchOptions)
  // The compressed ring screen (matching/ring_codes.h): every indexed
  // exhibit's ring spectra are made and encoded (brc-v1, the basis trained on
  // a sample of them), each query scores all the codes and its best
  // `ring_codes` join the index's ring_pool before the ring stage. -1: as
  // the search does (SearchOptions::ring_screen, when the partition holds
  // more than ring_pool); 0: not measured. The ring stage over the index's
  // pool alone is measured too.
  int ring_codes = -1;
};
int CmdBenchSearch(Context& ctx, const BenchSearchArgs& args);

// `bien bench node` (tools/bench_node.cpp): one node of `exhibits` cartridge
// cases with descriptors, ring spectra and cached CMC features, and `bien
// search` timed end to end as a process.
struct BenchNodeArgs {
  int64_t exhibits = 100000;  // in cartridge_case|9mm Luger: queries, mates, distractors
  int queries = 10;           // timed searches (one firearm each: a query and its mate)
  std::optional<std::filesystem::path> features;  // `bien synth --features` file for distractors
  std::optional<std::filesystem::path> data;      // real data folder: Fadul queries and mates
  std::optional<std::filesystem::path> work;      // kept folder (default: temporary, removed)
  int jobs = 0;                                   // threads; 0 = every core
  int ring_pool = -1;    // passed to each search as --ring-pool; -1: the search's default
  int ring_screen = -1;  // likewise --ring-screen
  // The searches through the node's `bien serve` (tools/local_search.h),
  // which keeps the index and ring codes in memory, instead of each process
  // loading them.
  bool through_node = false;
};
int CmdBenchNode(Context& ctx, const BenchNodeArgs& args);

struct DemoArgs {
  std::filesystem::path dir = "bien-demo";
};
int CmdDemo(Context& ctx, const DemoArgs& args);

}  // namespace bien::cli

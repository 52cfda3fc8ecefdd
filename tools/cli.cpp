#include "tools/cli.h"

#include <pwd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <ostream>

#include "core/error.h"
#include "tools/bullet_commands.h"
#include "tools/commands.h"
#include "tools/compare.h"
#include "tools/federation.h"
#include "tools/leads.h"
#include "tools/local_search.h"
#include "tools/search.h"

namespace bien::cli {

const std::filesystem::path& Context::NodeDir() const {
  if (!node || node->empty()) {
    throw Error("no node folder given: pass --node DIR or set BIEN_NODE");
  }
  return *node;
}

namespace {

std::string DefaultActor() {
  if (const char* u = std::getenv("BIEN_USER"); u && *u) return u;
  if (const char* u = std::getenv("USER"); u && *u) return u;
  if (const passwd* pw = getpwuid(getuid()); pw && pw->pw_name) return pw->pw_name;
  return "uid:" + std::to_string(getuid());
}

}  // namespace

int Run(int argc, const char* const argv[], std::ostream& out, std::ostream& err) {
  CLI::App app{
      "bien: ballistic information-exchange node.\n"
      "Keeps fired cartridge-case and bullet scans with their chain of custody."};
  app.require_subcommand(1);
  app.fallthrough();
  app.set_help_all_flag("--help-all", "Help for every subcommand");

  std::string node;
  bool json = false;
  std::string actor = DefaultActor();
  app.add_option("--node", node, "Node folder (or set BIEN_NODE)")->envname("BIEN_NODE");
  app.add_flag("--json", json, "Machine-readable output");
  app.add_option("--user", actor, "Who is acting, for the audit log (or set BIEN_USER)");

  std::function<int(Context&)> action;

  // init
  InitArgs init;
  auto* c_init = app.add_subcommand("init", "Create a node folder (database, objects/, node.toml)");
  c_init->add_option("--name", init.name, "Node name (default: the folder name)");
  c_init->add_option("--country", init.country, "ISO 3166-1 alpha-2 code, e.g. RS")
      ->capture_default_str();
  c_init->callback([&] { action = [&](Context& ctx) { return CmdInit(ctx, init); }; });

  // ingest
  IngestArgs ingest;
  auto* c_ingest = app.add_subcommand(
      "ingest", "Store scans (X3P, PNG, TIFF, JPEG) of an exhibit, or many via --manifest");
  c_ingest->add_option("files", ingest.files, "Scan files of one exhibit");
  c_ingest->add_option("--manifest", ingest.manifest,
                       "CSV with one row per scan (see docs/INGEST.md)");
  c_ingest->add_option("--case", ingest.case_ref, "Case reference");
  c_ingest->add_option("--exhibit", ingest.exhibit_ref, "Exhibit reference within the case");
  c_ingest->add_option("--kind", ingest.kind, "cartridge_case | bullet");
  c_ingest->add_option("--role", ingest.role, "evidence | test_fire");
  c_ingest->add_option("--calibre", ingest.calibre, "e.g. 9mm Luger");
  c_ingest->add_option("--firing-pin", ingest.firing_pin, "Firing-pin shape, e.g. circular");
  c_ingest->add_option("--breech-face", ingest.breech_face, "Breech-face mark class");
  c_ingest->add_option("--lands", ingest.lands, "Number of lands/grooves");
  c_ingest->add_option("--twist", ingest.twist, "left | right");
  c_ingest->add_option("--land", ingest.land, "Land number of a single bullet-land scan");
  c_ingest->add_option("--firearm", ingest.firearm,
                       "Reference of the firearm that fired it (test fires), e.g. a serial number");
  c_ingest->add_option("--pixel-size-um", ingest.pixel_size_um, "Pixel size of 2D images (um)");
  c_ingest
      ->add_option("--xy-unit", ingest.xy_unit,
                   "X3P lateral increment unit: auto (metres, or um when >= 1e-3) | m | mm | um")
      ->capture_default_str();
  c_ingest
      ->add_option("--z-unit", ingest.z_unit,
                   "X3P height unit: m (the standard) | mm | um, for files that break it")
      ->capture_default_str();
  c_ingest->add_option("--jobs", ingest.jobs, "Reader threads (default: all cores)");
  c_ingest->add_flag("--no-search", ingest.no_search,
                     "Do not search new cartridge cases against the store (no leads)");
  c_ingest->callback([&] { action = [&](Context& ctx) { return CmdIngest(ctx, ingest); }; });

  // list
  std::optional<std::string> list_case;
  auto* c_list = app.add_subcommand("list", "List exhibits");
  c_list->add_option("--case", list_case, "Only this case");
  c_list->callback([&] { action = [&](Context& ctx) { return CmdList(ctx, list_case); }; });

  // show
  std::string show_ref;
  auto* c_show = app.add_subcommand("show", "An exhibit: metadata, scans, hashes, audit trail");
  c_show->add_option("exhibit", show_ref, "CASE/EXHIBIT, EXHIBIT or #ID")->required();
  c_show->callback([&] { action = [&](Context& ctx) { return CmdShow(ctx, show_ref); }; });

  // export
  std::string export_ref;
  std::filesystem::path export_out;
  auto* c_export = app.add_subcommand("export", "Copy an exhibit's original files, byte-identical");
  c_export->add_option("exhibit", export_ref, "CASE/EXHIBIT, EXHIBIT or #ID")->required();
  c_export->add_option("--out", export_out, "Destination folder")->required();
  c_export->callback(
      [&] { action = [&](Context& ctx) { return CmdExport(ctx, export_ref, export_out); }; });

  // verify
  auto* c_verify =
      app.add_subcommand("verify", "Re-hash every stored original and check the audit chain");
  c_verify->callback([&] { action = [&](Context& ctx) { return CmdVerify(ctx); }; });

  // synth
  SynthArgs synth;
  auto* c_synth =
      app.add_subcommand("synth",
                         "Write synthetic cartridge-case X3P scans with a truth.csv, or with "
                         "--features N synthetic coarse descriptors for `bench search`");
  c_synth->add_option("--out", synth.out, "Output folder (with --features: output file)")
      ->required();
  c_synth->add_option("--firearms", synth.firearms, "Number of firearms")->capture_default_str();
  c_synth->add_option("--shots", synth.shots, "Shots per firearm")->capture_default_str();
  c_synth->add_option("--seed", synth.seed, "Random seed")->capture_default_str();
  c_synth->add_option("--size-px", synth.size_px, "Scan side in pixels")->capture_default_str();
  c_synth->add_option(
      "--features", synth.features,
      "Write N synthetic exhibits' coarse descriptors (--shots per firearm) to "
      "the file --out instead of scans; 10^6 take about an hour on 2 cores (bfd-v2)");
  c_synth->add_option("--jobs", synth.jobs, "Threads for --features (default: all cores)");
  c_synth->callback([&] { action = [&](Context& ctx) { return CmdSynth(ctx, synth); }; });

  // compare
  CompareArgs compare;
  auto* c_compare = app.add_subcommand("compare",
                                       "Compare two cartridge cases' breech faces (congruent "
                                       "matching cells), two bullet lands or two bullets");
  c_compare->add_option("a", compare.a, "Reference: a scan file, or a stored CASE/EXHIBIT or #ID")
      ->required();
  c_compare->add_option("b", compare.b, "Target: a scan file, or a stored CASE/EXHIBIT or #ID")
      ->required();
  c_compare->add_option("--png", compare.png, "Write a picture of the comparison to this file");
  c_compare->add_option("--pixel-size-um", compare.pixel_size_um, "Pixel size of 2D images (um)");
  c_compare
      ->add_option("--kind", compare.kind,
                   "auto | cartridge_case | land (two land scan files) | bullet (stored bullets, "
                   "or land files in land order joined by commas)")
      ->capture_default_str();
  c_compare
      ->add_option("--land-across", compare.land_across,
                   "Bullet lands: the scan axis that runs across the land (auto | x | y)")
      ->capture_default_str();
  c_compare->callback([&] { action = [&](Context& ctx) { return CmdCompare(ctx, compare); }; });

  // eval
  EvalArgs eval;
  auto* c_eval = app.add_subcommand(
      "eval", "Compare every pair of a labelled folder and report accuracy and speed");
  c_eval
      ->add_option("--truth", eval.truth,
                   "DIR/truth.csv with columns path, source (bullets: also bullet, land, land_id)")
      ->required();
  c_eval->add_option("--rotate-random", eval.rotate_random,
                     "Rotate every scan by a random angle first (seed)");
  c_eval->add_option("--jobs", eval.jobs, "Threads (default: all cores)");
  c_eval->add_option("--pixel-size-um", eval.pixel_size_um, "Pixel size of 2D images (um)");
  c_eval->add_option("--pairs", eval.pairs_csv,
                     "Write every pair's scores and registration to this CSV file");
  c_eval->callback([&] { action = [&](Context& ctx) { return CmdEval(ctx, eval); }; });

  // calibrate
  CalibrateArgs calibrate;
  auto* c_calibrate = app.add_subcommand(
      "calibrate",
      "Compare stored cartridge cases of different firearms to learn what scores mean");
  c_calibrate->add_option("--max-pairs", calibrate.max_pairs, "Most pairs to compare")
      ->capture_default_str();
  c_calibrate->add_option("--jobs", calibrate.jobs, "Threads (default: all cores)");
  c_calibrate->callback(
      [&] { action = [&](Context& ctx) { return CmdCalibrate(ctx, calibrate); }; });

  // bench
  auto* c_bench = app.add_subcommand("bench", "Measure speed and memory");
  c_bench->require_subcommand(1);
  BenchIngestArgs bench_ingest;
  auto* c_bench_ingest = c_bench->add_subcommand(
      "ingest", "Scans per second for the Fadul scans and synthetic scans, with peak memory");
  c_bench_ingest->add_option("--data", bench_ingest.data,
                             "Real data folder (default: $BIEN_DATA_DIR or ../shared/data)");
  c_bench_ingest->add_option("--synthetic", bench_ingest.synthetic, "Synthetic scans to ingest")
      ->capture_default_str();
  c_bench_ingest->add_option("--jobs", bench_ingest.jobs, "Reader threads (default: all cores)");
  c_bench_ingest->add_option("--work", bench_ingest.work, "Scratch folder (default: temporary)");
  c_bench_ingest->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchIngest(ctx, bench_ingest); }; });

  BenchCompareArgs bench_compare;
  auto* c_bench_compare = c_bench->add_subcommand(
      "compare", "Milliseconds per breech-face comparison on the Fadul scans, one thread");
  c_bench_compare->add_option("--data", bench_compare.data,
                              "Real data folder (default: $BIEN_DATA_DIR or ../shared/data)");
  c_bench_compare->add_option("--pairs", bench_compare.pairs, "Comparisons to time")
      ->capture_default_str();
  c_bench_compare->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchCompare(ctx, bench_compare); }; });

  BenchBulletsArgs bench_bullets;
  auto* c_bench_bullets = c_bench->add_subcommand(
      "bullets",
      "Signature extraction per land scan, land-to-land and 6 x 6 bullet-to-bullet comparison, "
      "one thread, on Hamby 252 (synthetic lands without it)");
  c_bench_bullets->add_option("--data", bench_bullets.data,
                              "Real data folder (default: $BIEN_DATA_DIR or ../shared/data)");
  c_bench_bullets->add_option("--repeat", bench_bullets.repeat, "Passes over the timed comparisons")
      ->capture_default_str();
  c_bench_bullets->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchBullets(ctx, bench_bullets); }; });

  BenchSearchArgs bench_search;
  auto* c_bench_search = c_bench->add_subcommand(
      "search",
      "Coarse index build, memory, latency and mate recall at partition sizes up to 10^6, "
      "and the CMC re-ranking of the top candidates, on synthetic descriptors");
  c_bench_search
      ->add_option("--exhibits", bench_search.exhibits,
                   "Partition sizes, measured in turn (repeat or separate with commas)")
      ->delimiter(',')
      ->capture_default_str();
  c_bench_search->add_option(
      "--features", bench_search.features,
      "Descriptors written by `bien synth --features` (the first N are used). Without it they "
      "are generated, which takes about an hour for 10^6 on 2 cores (bfd-v2)");
  c_bench_search->add_option("--queries", bench_search.queries, "Held-out shots searched for")
      ->capture_default_str();
  c_bench_search
      ->add_option("--rerank", bench_search.rerank, "Candidates of the timed CMC re-ranking")
      ->capture_default_str();
  c_bench_search->add_option("--nprobe", bench_search.nprobe, "Lists an IVF query visits")
      ->capture_default_str();
  c_bench_search
      ->add_option("--kind", bench_search.kind,
                   "Index kind at every size: exact | ivf_flat | ivf_sq8 | ivf_pq | binary_sq8 "
                   "(default: as a node builds it, exact below 5000 vectors, else binary_sq8)")
      ->check(CLI::IsMember({"exact", "ivf_flat", "ivf_sq8", "ivf_pq", "binary_sq8"}));
  c_bench_search
      ->add_option("--hamming", bench_search.hamming,
                   "binary_sq8 Hamming kernel: portable | popcnt | avx512 (default: the fastest "
                   "this CPU has)")
      ->check(CLI::IsMember({"portable", "popcnt", "avx512"}));
  c_bench_search->add_option("--shots", bench_search.shots, "Shots per firearm when generating")
      ->capture_default_str();
  c_bench_search->add_option("--seed", bench_search.seed, "Seed when generating")
      ->capture_default_str();
  c_bench_search->add_option("--jobs", bench_search.jobs, "Threads (default: all cores)");
  c_bench_search
      ->add_option("--ring-pool", bench_search.ring_pool,
                   "Candidates per query re-ranked by ring correlation (0: not measured; their "
                   "spectra are made from the synthetic shots, about 3 ms each per core)")
      ->capture_default_str();
  c_bench_search
      ->add_option(
          "--ring-codes", bench_search.ring_codes,
          "The ring screen's best N join the ring pool, as bien search does: every "
          "exhibit's ring spectra encoded (brc-v1) and scored per query (-1: as the "
          "search, N = 5000 when the partition is larger than the pool; 0: not measured; the "
          "spectra of every exhibit are made, about 7.6 KB each in memory)")
      ->capture_default_str();
  c_bench_search->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchSearch(ctx, bench_search); }; });

  BenchExchangeArgs bench_exchange;
  auto* c_bench_exchange = c_bench->add_subcommand(
      "exchange",
      "Messages per second and MB/s over CURVE on loopback, through the codec, and reliable "
      "delivery between two nodes' stores");
  c_bench_exchange->add_option("--messages", bench_exchange.messages, "Small messages to time")
      ->capture_default_str();
  c_bench_exchange->add_option("--bulk-mb", bench_exchange.bulk_mb, "1 MiB frames to time")
      ->capture_default_str();
  c_bench_exchange
      ->add_option("--reliable", bench_exchange.reliable,
                   "Hit notices delivered through two nodes' outbox and store")
      ->capture_default_str();
  c_bench_exchange->add_option("--work", bench_exchange.work,
                               "Scratch folder (default: temporary)");
  c_bench_exchange->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchExchange(ctx, bench_exchange); }; });

  BenchFederationArgs bench_federation;
  auto* c_bench_federation = c_bench->add_subcommand(
      "federation",
      "Federated search end to end: three `bien serve` nodes on 127.0.0.1 with N exhibits each, "
      "coarse-only and with each peer's fine top-100 re-rank");
  c_bench_federation
      ->add_option("--exhibits", bench_federation.exhibits,
                   "Exhibits per node in cartridge_case|9mm Luger")
      ->capture_default_str();
  c_bench_federation
      ->add_option("--queries", bench_federation.queries, "Timed federated searches per mode")
      ->capture_default_str();
  c_bench_federation->add_option(
      "--features", bench_federation.features,
      "The distractors' descriptors from a `bien synth --features` file (default: generated)");
  c_bench_federation->add_option(
      "--data", bench_federation.data,
      "Real data folder (../shared/data): the queries and their mates are Fadul scans");
  c_bench_federation->add_option("--work", bench_federation.work,
                                 "Keep the nodes in this (new or empty) folder (default: a "
                                 "temporary folder, removed)");
  c_bench_federation->add_option("--jobs", bench_federation.jobs,
                                 "Threads per node and per search (default: all cores)");
  c_bench_federation->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchFederation(ctx, bench_federation); }; });

  BenchNodeArgs bench_node;
  auto* c_bench_node = c_bench->add_subcommand(
      "node",
      "`bien search` end to end on one node of N cartridge cases (descriptors, ring spectra, "
      "cached fine features), each search a process");
  c_bench_node
      ->add_option("--exhibits", bench_node.exhibits,
                   "Exhibits in cartridge_case|9mm Luger (queries, their mates, distractors)")
      ->capture_default_str();
  c_bench_node->add_option("--queries", bench_node.queries, "Timed searches (one firearm each)")
      ->capture_default_str();
  c_bench_node->add_option(
      "--features", bench_node.features,
      "The distractors' descriptors from a `bien synth --features` file (default: generated)");
  c_bench_node->add_option(
      "--data", bench_node.data,
      "Real data folder (../shared/data): the queries and their mates are Fadul scans");
  c_bench_node->add_option(
      "--work", bench_node.work,
      "Keep the node in this (new or empty) folder (default: a temporary folder, removed)");
  c_bench_node->add_option("--jobs", bench_node.jobs, "Threads (default: all cores)");
  c_bench_node->add_option("--ring-pool", bench_node.ring_pool,
                           "Each search's --ring-pool (default: the search's)");
  c_bench_node->add_option("--ring-screen", bench_node.ring_screen,
                           "Each search's --ring-screen (default: the search's)");
  c_bench_node->add_flag("--through-node", bench_node.through_node,
                         "Run `bien serve` on the node: the searches go through it, with the "
                         "index and ring codes in memory");
  c_bench_node->callback(
      [&] { action = [&](Context& ctx) { return CmdBenchNode(ctx, bench_node); }; });

  // search
  SearchArgs search;
  auto* c_search = app.add_subcommand(
      "search", "Correlation list of a stored cartridge case: coarse index, then CMC re-ranking");
  c_search->add_option("exhibit", search.exhibit, "CASE/EXHIBIT, a unique exhibit ref, or #ID")
      ->required();
  c_search->add_option("--top", search.top, "Candidates to print (default 20)");
  c_search->add_option("--k", search.options.coarse_k,
                       "Candidates the coarse stage passes to the fine comparison (default 100)");
  double search_lead_threshold = 0;  // set into search.options only when given
  auto* o_lead = c_search->add_option(
      "--lead-threshold", search_lead_threshold,
      "Score from which a candidate becomes a lead (default: CMC 6 for cartridge cases, "
      "bullet score 0.5 for bullets)");
  c_search->add_option("--expand", search.options.expand_top,
                       "Also compare the coarse neighbours of this many strongest candidates "
                       "(default 3; 0: off)");
  c_search->add_option("--ring-pool", search.options.ring_pool,
                       "Cartridge cases: the index's best N are re-ranked by ring correlation "
                       "before the best --k go on (default 20000; 0: the cosine's order)");
  c_search->add_option("--ring-screen", search.options.ring_screen,
                       "Cartridge cases, partitions larger than --ring-pool: the ring screen's "
                       "best N (compressed ring spectra of every scan) join the ring stage "
                       "(default 5000; 0: off)");
  c_search->add_flag("--no-leads", search.no_leads, "Do not record leads");
  c_search->add_flag("--standalone", search.standalone,
                     "Search in this process even when the node is serving (by default a "
                     "running `bien serve` runs it, with the index and ring codes in memory)");
  c_search->add_option("--jobs", search.options.jobs, "Threads (default: all cores)");
  bool federated = false;
  FederatedArgs federated_args;
  c_search->add_flag("--federated", federated,
                     "Also ask every peer sharing the partition (needs `bien serve` running)");
  c_search->add_option("--timeout", federated_args.timeout_s, "Seconds to wait for peers")
      ->capture_default_str();
  c_search->add_flag("--coarse-only", search.options.coarse_only,
                     "The coarse stage only, locally and (with --federated) at the peers: "
                     "candidates by coarse cosine, no CMC, no fine features sent, no leads");
  c_search->add_option("--remote-top", federated_args.remote_top, "Candidates each peer returns")
      ->capture_default_str();
  c_search->callback([&, o_lead] {
    if (o_lead->count() > 0) search.options.lead_threshold = search_lead_threshold;
    federated_args.coarse_only = search.options.coarse_only;
    action = [&](Context& ctx) {
      if (federated) return CmdSearchFederated(ctx, search, federated_args);
      // A serving node runs it with the partition's index and ring codes in
      // memory (tools/local_search.h).
      if (!search.standalone) {
        const std::vector<std::string> words(argv + 1, argv + argc);
        if (const auto forwarded = LocalSearchArgs(words, ctx.NodeDir(), ctx.actor)) {
          if (const auto code = SearchThroughNode(ctx.NodeDir(), *forwarded, ctx.out, ctx.err)) {
            return *code;
          }
        }
      }
      return CmdSearch(ctx, search);
    };
  });

  // leads, confirm, reject, alerts
  LeadsArgs leads;
  auto* c_leads = app.add_subcommand("leads", "Candidate pairs flagged for review");
  c_leads->add_flag("--open", leads.open_only, "Only leads not yet confirmed or rejected");
  c_leads->callback([&] { action = [&](Context& ctx) { return CmdLeads(ctx, leads); }; });

  DecideArgs confirm;
  auto* c_confirm = app.add_subcommand(
      "confirm", "Confirm a lead as a hit (same firearm): records the hit and raises an alert");
  c_confirm->add_option("lead", confirm.lead, "Lead number (see `bien leads`)")->required();
  c_confirm->add_option("--by", confirm.by, "Name of the expert confirming")->required();
  c_confirm->add_option("--note", confirm.note, "Why, for the record");
  c_confirm->callback([&] {
    action = [&](Context& ctx) {
      return IsRemoteCandidateRef(confirm.lead)
                 ? CmdConfirmRemote(ctx, confirm.lead, confirm.by, confirm.note)
                 : CmdConfirm(ctx, confirm);
    };
  });

  DecideArgs reject;
  auto* c_reject = app.add_subcommand("reject", "Reject a lead (not the same firearm)");
  c_reject->add_option("lead", reject.lead, "Lead number (see `bien leads`)")->required();
  c_reject->add_option("--by", reject.by, "Name of the expert rejecting")->required();
  c_reject->add_option("--note", reject.note, "Why, for the record");
  c_reject->callback([&] {
    action = [&](Context& ctx) {
      return IsRemoteCandidateRef(reject.lead)
                 ? CmdRejectRemote(ctx, reject.lead, reject.by, reject.note)
                 : CmdReject(ctx, reject);
    };
  });

  auto* c_alerts = app.add_subcommand("alerts", "Alerts raised by confirmed hits");
  bool follow = false;
  AlertsFollowArgs follow_args;
  c_alerts->add_flag("--follow", follow, "Keep printing alerts as they arrive");
  c_alerts->add_option("--timeout", follow_args.timeout_s, "With --follow: stop after S seconds");
  c_alerts->add_option("--count", follow_args.count,
                       "With --follow: stop once N alerts were printed");
  c_alerts->callback([&] {
    action = [&](Context& ctx) {
      return follow ? CmdAlertsFollow(ctx, follow_args) : CmdAlerts(ctx);
    };
  });

  // keys, peer, serve
  auto* c_keys = app.add_subcommand("keys", "Create (once) and show the node's CURVE key pair");
  c_keys->callback([&] { action = [&](Context& ctx) { return CmdKeys(ctx); }; });
  auto* c_peer = app.add_subcommand("peer", "The other nodes this node exchanges with");
  c_peer->require_subcommand(1);
  PeerAddArgs peer_add;
  auto* c_peer_add = c_peer->add_subcommand("add", "Admit a node: only admitted keys may connect");
  c_peer_add->add_option("name", peer_add.name, "A name for it, e.g. BA-sarajevo")->required();
  c_peer_add->add_option("endpoint", peer_add.endpoint, "tcp://HOST:PORT")->required();
  c_peer_add->add_option("public_key", peer_add.public_key,
                         "Its public key (bien keys); Z85 keys may start with '-'");
  c_peer_add
      ->add_option("--share", peer_add.share,
                   "all, or calibres / partitions (kind|calibre) separated by commas")
      ->capture_default_str();
  c_peer_add->callback([&] { action = [&](Context& ctx) { return CmdPeerAdd(ctx, peer_add); }; });
  auto* c_peer_list = c_peer->add_subcommand("list", "Peers, last seen and queue depth");
  c_peer_list->callback([&] { action = [&](Context& ctx) { return CmdPeerList(ctx); }; });
  std::string peer_remove;
  auto* c_peer_remove = c_peer->add_subcommand("remove", "Cut a peer off");
  c_peer_remove->add_option("name", peer_remove, "The peer's name")->required();
  c_peer_remove->callback(
      [&] { action = [&](Context& ctx) { return CmdPeerRemove(ctx, peer_remove); }; });
  ServeArgs serve;
  auto* c_serve = app.add_subcommand(
      "serve", "Run the node: answer peers, deliver the outbox, publish alerts (until Ctrl-C)");
  c_serve->add_option("--listen", serve.listen, "tcp://HOST:PORT (port * = any free one)")
      ->capture_default_str();
  c_serve->add_option("--alerts", serve.alerts,
                      "PUB endpoint for alerts (default ipc://NODE/alerts.ipc)");
  c_serve->add_option("--heartbeat-ms", serve.heartbeat_ms, "Heartbeat period")
      ->capture_default_str();
  c_serve->add_option("--jobs", serve.jobs, "Fine-stage threads for peers' requests");
  c_serve->callback([&] { action = [&](Context& ctx) { return CmdServe(ctx, serve); }; });

  // demo
  DemoArgs demo;
  auto* c_demo = app.add_subcommand(
      "demo", "Three national nodes as processes: federated search, a cross-border hit, its alert");
  c_demo->add_option("--dir", demo.dir, "Demo folder (replaced if it holds an earlier demo)")
      ->capture_default_str();
  bool demo_single = false;
  c_demo->add_flag("--single-node", demo_single,
                   "The earlier one-node demo (ingest, list, compare, verify)");
  c_demo->callback([&] {
    action = [&](Context& ctx) {
      return demo_single ? CmdDemo(ctx, demo) : CmdDemoFederation(ctx, demo);
    };
  });

  // A Z85 public key starts with '-' about once in 85, and the parser takes
  // such a word for an unknown option. Extras are collected here (after every
  // subcommand exists, so they all fall through to this level) and the one
  // such word `peer add` lacks is taken as its key; anything else is refused.
  app.allow_extras();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e, out, err);
    return code == 0 ? kExitOk : kExitUsage;
  }
  std::vector<std::string> extras = app.remaining();
  if (c_peer_add->parsed() && peer_add.public_key.empty() && extras.size() == 1 &&
      exchange::IsZ85Key(extras.front())) {
    peer_add.public_key = extras.front();
    extras.clear();
  }
  if (!extras.empty()) {
    err << "The following argument" << (extras.size() > 1 ? "s were" : " was") << " not expected:";
    for (const std::string& e : extras) err << " " << e;
    err << "\nRun with --help or --help-all for more information.\n";
    return kExitUsage;
  }

  std::optional<std::filesystem::path> node_dir;
  if (!node.empty()) node_dir = std::filesystem::path(node);
  Context ctx{out, err, json, actor, node_dir, !json && ::isatty(STDERR_FILENO) == 1};
  try {
    return action(ctx);
  } catch (const Error& e) {
    err << "bien: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    err << "bien: unexpected error: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace bien::cli

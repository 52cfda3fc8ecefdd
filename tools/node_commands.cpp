// `bien init | list | show | export | verify | synth | demo`.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>

#include "core/csv.h"
#include "core/error.h"
#include "core/hash.h"
#include "imaging/synth.h"
#include "tools/commands.h"
#include "tools/output.h"
#include "tools/synth_features.h"

namespace bien::cli {

int CmdInit(Context& ctx, const InitArgs& args) {
  const auto& dir = ctx.NodeDir();
  NodeConfig config;
  config.name = args.name.empty() ? std::filesystem::absolute(dir).filename().string() : args.name;
  config.country = args.country;
  Store::Create(dir, config, ctx.actor);
  auto store = Store::Open(dir);
  const NodeConfig& c = store->config();
  if (ctx.json) {
    ctx.out << nlohmann::json{{"node", std::filesystem::absolute(dir).string()},
                              {"name", c.name},
                              {"country", c.country},
                              {"node_id", c.node_id},
                              {"schema_version", Store::SchemaVersion()}}
                   .dump(2)
            << "\n";
  } else {
    ctx.out << "created node '" << c.name << "' (" << c.country << ", id " << c.node_id << ") in "
            << dir.string() << "\n";
  }
  return kExitOk;
}

int CmdList(Context& ctx, const std::optional<std::string>& case_ref) {
  auto store = Store::Open(ctx.NodeDir());
  std::vector<ExhibitRecord> exhibits;
  for (auto& e : store->ListExhibits()) {
    if (!case_ref || e.case_ref == *case_ref) exhibits.push_back(std::move(e));
  }
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& e : exhibits) j.push_back(ToJson(e));
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  TextTable table({"ID", "CASE", "EXHIBIT", "KIND", "ROLE", "SCANS", "FIREARM", "CLASS"});
  for (const auto& e : exhibits) {
    table.Add({"#" + std::to_string(e.id.value), e.case_ref, e.exhibit_ref, ToString(e.kind),
               ToString(e.role), std::to_string(e.scan_count), e.firearm_ref.value_or("-"),
               Describe(e.cc)});
  }
  ctx.out << table.Render();
  ctx.out << exhibits.size() << " exhibit" << (exhibits.size() == 1 ? "" : "s") << " in node '"
          << store->config().name << "'\n";
  return kExitOk;
}

int CmdShow(Context& ctx, const std::string& ref) {
  auto store = Store::Open(ctx.NodeDir());
  const ExhibitRecord e = store->FindExhibit(ref);
  const auto scans = store->ScansOf(e.id);
  const auto audit = store->AuditTrail(e.id);
  if (ctx.json) {
    nlohmann::json j = ToJson(e);
    j["scans"] = nlohmann::json::array();
    for (const auto& s : scans) j["scans"].push_back(ToJson(s));
    j["audit"] = nlohmann::json::array();
    for (const auto& a : audit) j["audit"].push_back(ToJson(a));
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  ctx.out << "exhibit   " << e.case_ref << "/" << e.exhibit_ref << "  (#" << e.id.value << ")\n"
          << "kind      " << ToString(e.kind) << "\n"
          << "role      " << ToString(e.role) << "\n"
          << "class     " << Describe(e.cc) << "\n"
          << "firearm   " << e.firearm_ref.value_or("unknown") << "\n"
          << "created   " << e.created_at << "\n\n"
          << "scans (" << scans.size() << ")\n";
  for (const auto& s : scans) {
    char geometry[128];
    std::snprintf(geometry, sizeof geometry, "%d x %d px at %.4g x %.4g um, %.1f %% NaN",
                  s.meta.width, s.meta.height, s.meta.dx_m * 1e6, s.meta.dy_m * 1e6,
                  100 * s.meta.nan_share);
    ctx.out << "  #" << s.id.value << "  " << s.meta.original_name << "  (" << s.meta.format
            << (s.meta.intensity ? ", 2D image" : "") << ", " << HumanBytes(double(s.size_bytes))
            << ")\n"
            << "      sha256 " << s.sha256 << "\n"
            << "      " << geometry << "\n";
    if (s.meta.land) ctx.out << "      land " << *s.meta.land << "\n";
    if (!s.meta.instrument.empty()) ctx.out << "      instrument " << s.meta.instrument << "\n";
    if (!s.meta.measured_at.empty() || !s.meta.creator.empty()) {
      ctx.out << "      measured " << s.meta.measured_at << " by " << s.meta.creator << "\n";
    }
  }
  ctx.out << "\naudit trail (" << audit.size() << ")\n";
  for (const auto& a : audit) {
    ctx.out << "  " << a.seq << "  " << a.at << "  " << a.actor << "  " << a.action << "  "
            << a.subject;
    if (a.sha256) ctx.out << "  sha256 " << a.sha256->substr(0, 16) << "…";
    ctx.out << "\n";
  }
  return kExitOk;
}

int CmdExport(Context& ctx, const std::string& ref, const std::filesystem::path& out_dir) {
  auto store = Store::Open(ctx.NodeDir());
  const ExhibitRecord e = store->FindExhibit(ref);
  const auto scans = store->ScansOf(e.id);
  std::filesystem::create_directories(out_dir);
  // Plan names first so nothing is written when any would overwrite a file.
  std::vector<std::filesystem::path> targets;
  std::set<std::string> used;
  for (const auto& s : scans) {
    std::string name = std::filesystem::path(s.meta.original_name).filename().string();
    if (name.empty() || used.count(name)) name = "scan-" + std::to_string(s.id.value) + "-" + name;
    used.insert(name);
    const auto target = out_dir / name;
    if (std::filesystem::exists(target)) {
      throw Error(target.string() + ": already exists; export does not overwrite files");
    }
    targets.push_back(target);
  }
  nlohmann::json files = nlohmann::json::array();
  std::string sums;
  for (size_t i = 0; i < scans.size(); ++i) {
    const auto& s = scans[i];
    const auto source = store->ObjectPath(s.sha256);
    std::filesystem::copy_file(source, targets[i]);
    std::filesystem::permissions(targets[i], std::filesystem::perms::owner_write,
                                 std::filesystem::perm_options::add);
    const std::string copied = Sha256File(targets[i]);
    if (copied != s.sha256) {
      std::filesystem::remove(targets[i]);
      throw Error("scan " + std::to_string(s.id.value) + ": stored original " + source.string() +
                  " does not match its recorded sha256 (run `bien verify`); export stopped");
    }
    sums += s.sha256 + "  " + targets[i].filename().string() + "\n";
    files.push_back({{"scan_id", s.id.value},
                     {"path", targets[i].string()},
                     {"sha256", s.sha256},
                     {"size_bytes", s.size_bytes}});
  }
  {
    std::ofstream sums_file(out_dir / "SHA256SUMS", std::ios::app);
    sums_file << sums;
    if (!sums_file) throw Error((out_dir / "SHA256SUMS").string() + ": write failed");
  }
  store->RecordAudit(ctx.actor, "export", "exhibit " + e.case_ref + "/" + e.exhibit_ref, e.id,
                     nlohmann::json{{"destination", std::filesystem::absolute(out_dir).string()},
                                    {"files", scans.size()}}
                         .dump());
  if (ctx.json) {
    ctx.out << nlohmann::json{{"exhibit", e.case_ref + "/" + e.exhibit_ref}, {"files", files}}.dump(
                   2)
            << "\n";
  } else {
    for (const auto& f : files) {
      ctx.out << "  " << f["path"].get<std::string>() << "  sha256 "
              << f["sha256"].get<std::string>().substr(0, 16) << "…\n";
    }
    ctx.out << "exported " << scans.size() << " original file" << (scans.size() == 1 ? "" : "s")
            << " of " << e.case_ref << "/" << e.exhibit_ref << " to " << out_dir.string()
            << " (checksums in SHA256SUMS)\n";
  }
  return kExitOk;
}

int CmdVerify(Context& ctx) {
  auto store = Store::Open(ctx.NodeDir());
  const VerifyReport report = store->Verify();
  if (ctx.json) {
    ctx.out << nlohmann::json{{"ok", report.ok()},
                              {"objects_checked", report.objects_checked},
                              {"audit_rows_checked", report.audit_rows_checked},
                              {"problems", report.problems}}
                   .dump(2)
            << "\n";
  } else {
    for (const auto& p : report.problems) ctx.out << "  PROBLEM  " << p << "\n";
    ctx.out << (report.ok() ? "verified: " : "verification FAILED: ") << report.objects_checked
            << " stored originals re-hashed, " << report.audit_rows_checked
            << " audit rows chained, " << report.problems.size() << " problem"
            << (report.problems.size() == 1 ? "" : "s") << "\n";
  }
  return report.ok() ? kExitOk : kExitFailure;
}

int CmdSynth(Context& ctx, const SynthArgs& args) {
  if (args.features) {
    SynthFeatureOptions options;
    options.count = *args.features;
    options.shots = args.shots;
    options.seed = args.seed;
    options.jobs = args.jobs;
    options.Check();
    const auto start = std::chrono::steady_clock::now();
    WriteSynthFeatureFile(
        args.out, options,
        ctx.progress ? ProgressLine(ctx.err, "synthetic descriptors") : FeatureProgress());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const FeatureFile header = ReadSynthFeatureFile(args.out, 0);
    if (ctx.json) {
      ctx.out << nlohmann::json{{"out", args.out.string()},
                                {"count", header.count},
                                {"dim", header.dim},
                                {"shots", header.shots},
                                {"seed", header.seed},
                                {"descriptor_key", header.key},
                                {"synthetic_model", header.model},
                                {"bytes", std::filesystem::file_size(args.out)},
                                {"seconds", seconds}}
                     .dump(2)
              << "\n";
    } else {
      ctx.out << "wrote and verified " << header.count << " synthetic descriptors (" << header.dim
              << " floats, " << header.shots << " shots per firearm, seed " << header.seed
              << ") to " << args.out.string() << " in " << std::lround(seconds) << " s\n";
    }
    return kExitOk;
  }
  SynthOptions options;
  options.firearms = args.firearms;
  options.shots = args.shots;
  options.seed = args.seed;
  options.size_px = args.size_px;
  options.Check();
  const auto files = WriteSynthSet(args.out, options);
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& f : files) {
      j.push_back({{"path", (args.out / f.file_name).string()}, {"source", f.source}});
    }
    ctx.out << nlohmann::json{{"out", args.out.string()}, {"files", j}}.dump(2) << "\n";
  } else {
    ctx.out << "wrote " << files.size() << " synthetic cartridge-case scans (" << args.firearms
            << " firearms x " << args.shots << " shots, seed " << args.seed << ") and truth.csv to "
            << args.out.string() << "\n";
  }
  return kExitOk;
}

namespace {

// Runs one `bien` command line for the demo, echoing it as a user would type it.
int DemoStep(Context& ctx, const std::string& title, std::vector<std::string> args) {
  ctx.out << "\n== " << title << "\n$ bien";
  for (const auto& a : args) {
    ctx.out << " " << (a.find(' ') != std::string::npos ? "'" + a + "'" : a);
  }
  ctx.out << "\n";
  std::vector<const char*> argv{"bien"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return Run(static_cast<int>(argv.size()), argv.data(), ctx.out, ctx.err);
}

}  // namespace

int CmdDemo(Context& ctx, const DemoArgs& args) {
  const auto dir = args.dir;
  const auto marker = dir / ".bien-demo";
  if (std::filesystem::exists(dir)) {
    if (!std::filesystem::exists(marker) && !std::filesystem::is_empty(dir)) {
      throw Error(dir.string() + ": exists and is not an earlier demo folder; choose --dir");
    }
    std::filesystem::remove_all(dir);
  }
  std::filesystem::create_directories(dir);
  std::ofstream(marker) << "made by bien demo; replaced by the next demo run\n";
  const auto samples = (dir / "samples").string();
  const auto node = (dir / "node").string();
  ctx.out << "bien demo: generates synthetic cartridge-case scans with bien's own generator,\n"
             "creates a node, ingests the scans as test fires and crime-scene evidence,\n"
             "lists the node, compares evidence with test fires (congruent matching cells)\n"
             "and verifies every stored original and the audit chain.\n";

  int rc = DemoStep(ctx, "1. generate 3 firearms x 2 shots (X3P, 6.25 um)",
                    {"synth", "--out", samples, "--firearms", "3", "--shots", "2", "--seed", "7"});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "2. create the node",
                {"init", "--node", node, "--name", "Demo focal point", "--country", "RS"});
  if (rc != kExitOk) return rc;

  // Shot 1 of each firearm is a test fire; shot 2 was found at a crime scene.
  const CsvTable truth = ReadCsvFile(dir / "samples" / "truth.csv");
  const auto path_col = truth.Column("path");
  const auto source_col = truth.Column("source");
  if (!path_col || !source_col) throw Error("demo: truth.csv lacks path/source columns");
  std::ofstream manifest(dir / "samples" / "manifest.csv");
  manifest << "path,case,exhibit,kind,role,calibre,firing_pin,firearm\n";
  int shot_of_source = 0;
  std::string last_source;
  for (const auto& row : truth.rows) {
    const std::string& source = row[*source_col];
    shot_of_source = source == last_source ? shot_of_source + 1 : 1;
    last_source = source;
    const bool test_fire = shot_of_source == 1;
    manifest << CsvEscape(row[*path_col]) << ","
             << (test_fire ? "TF-" + source : "2026-RS-" + source) << ","
             << (test_fire ? "T1" : "E1") << ",cartridge_case,"
             << (test_fire ? "test_fire" : "evidence") << ",9mm Luger,circular,"
             << (test_fire ? "PISTOL-" + source : "") << "\n";
  }
  manifest.close();
  rc = DemoStep(ctx, "3. ingest the scans (manifest: samples/manifest.csv)",
                {"ingest", "--node", node, "--manifest", samples + "/manifest.csv"});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "4. ingest one file again: reported, not duplicated",
                {"ingest", "--node", node, samples + "/synth F01-1.x3p", "--case", "TF-F01",
                 "--exhibit", "T1", "--kind", "cartridge_case", "--role", "test_fire"});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "5. list the exhibits", {"list", "--node", node});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "6. show one exhibit with its chain of custody",
                {"show", "--node", node, "2026-RS-F02/E1"});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "7. learn what scores mean: compare test fires of different pistols",
                {"calibrate", "--node", node});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "8. compare crime-scene evidence with the test fire of pistol F02 (a match)",
                {"compare", "--node", node, "2026-RS-F02/E1", "TF-F02/T1", "--png",
                 (dir / "F02 evidence vs test fire.png").string()});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "9. compare it with the test fire of pistol F01 (not a match)",
                {"compare", "--node", node, "2026-RS-F02/E1", "TF-F01/T1"});
  if (rc != kExitOk) return rc;
  rc = DemoStep(ctx, "10. verify stored originals and the audit chain", {"verify", "--node", node});
  if (rc != kExitOk) return rc;
  ctx.out << "\ndemo finished: node in " << node << "\n";
  return kExitOk;
}

}  // namespace bien::cli

// `bien demo`: three national nodes on this machine (Serbia, Bosnia and
// Herzegovina, North Macedonia) as separate `bien serve` processes, one
// firearm fired in two countries, a federated search, a confirmed
// cross-border hit and its alert arriving at the other node.
#include <chrono>
#include <fstream>
#include <ostream>
#include <thread>

#include "core/error.h"
#include "storage/exchange_store.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/federation.h"
#include "tools/local_federation.h"

namespace bien::cli {
namespace {

namespace fs = std::filesystem;

int Step(Context& ctx, const std::string& title, std::vector<std::string> args) {
  ctx.out << "\n== " << title << "\n$ bien";
  for (const auto& a : args) {
    ctx.out << " " << (a.find(' ') != std::string::npos ? "'" + a + "'" : a);
  }
  ctx.out << "\n" << std::flush;
  std::vector<const char*> argv{"bien"};
  for (const auto& a : args) argv.push_back(a.c_str());
  const int rc = Run(static_cast<int>(argv.size()), argv.data(), ctx.out, ctx.err);
  ctx.out << std::flush;
  if (rc != kExitOk) throw Error("demo step failed: " + title);
  return rc;
}

}  // namespace

int CmdDemoFederation(Context& ctx, const DemoArgs& args) {
  const fs::path exe = BienExecutable("bien demo");
  const fs::path dir = fs::absolute(args.dir);
  const auto marker = dir / ".bien-demo";
  if (fs::exists(dir)) {
    if (!fs::exists(marker) && !fs::is_empty(dir)) {
      throw Error(dir.string() + ": exists and is not an earlier demo folder; choose --dir");
    }
    fs::remove_all(dir);
  }
  fs::create_directories(dir);
  std::ofstream(marker) << "made by bien demo; replaced by the next demo run\n";
  const std::string samples = (dir / "samples").string();
  ctx.out << "bien demo: three national nodes (Serbia, Bosnia and Herzegovina, North Macedonia)\n"
             "run as separate `bien serve` processes on 127.0.0.1, each with its own folder,\n"
             "database and CURVE keys. One pistol was fired in Belgrade and in Sarajevo; the\n"
             "Serbian node asks its peers \"have you seen this firearm?\", an expert confirms\n"
             "the cross-border candidate and the Bosnian node's investigators get the alert.\n";

  std::vector<LocalNode> nodes = BalkanNodes(dir);

  Step(ctx, "1. generate test fires and evidence: 4 pistols x 3 shots (X3P, synthetic)",
       {"synth", "--out", samples, "--firearms", "4", "--shots", "3", "--seed", "11"});
  CreateLocalNodes(nodes, [&](const std::string& title, const std::vector<std::string>& a) {
    Step(ctx, "2. " + title, a);
  });
  // Who holds what: pistol F01 fired in Belgrade (evidence) and in Sarajevo
  // (evidence of another case); the others are each country's own.
  struct Item {
    size_t node;
    std::string file, case_ref, exhibit, role;
  };
  const std::vector<Item> items = {
      {0, "synth F01-1.x3p", "2026-BG-0042", "E1", "evidence"},
      {0, "synth F02-1.x3p", "2026-BG-0051", "E1", "evidence"},
      {1, "synth F01-2.x3p", "2026-SA-0107", "E3", "evidence"},
      {1, "synth F03-1.x3p", "2026-SA-0110", "E1", "evidence"},
      {1, "synth F02-2.x3p", "TF-BA-77", "T1", "test_fire"},
      {2, "synth F04-1.x3p", "2026-SK-0009", "E2", "evidence"},
      {2, "synth F03-2.x3p", "TF-MK-12", "T1", "test_fire"},
      {2, "synth F04-2.x3p", "2026-SK-0013", "E1", "evidence"},
  };
  for (const Item& it : items) {
    const LocalNode& n = nodes[it.node];
    Step(ctx, "3. " + n.name + " ingests " + it.case_ref + "/" + it.exhibit,
         {"ingest", "--node", n.dir.string(), (dir / "samples" / it.file).string(), "--case",
          it.case_ref, "--exhibit", it.exhibit, "--kind", "cartridge_case", "--role", it.role,
          "--calibre", "9mm Luger", "--no-search"});
  }

  ServeProcesses serving(exe);
  int rc = kExitOk;
  try {
    ctx.out << "\n== 4. start the three nodes (bien serve, one process each; logs in "
            << dir.string() << "/*.log)\n";
    for (LocalNode& n : nodes) {
      const ChildProcess& c = serving.Start(n, dir / (n.folder + ".log"), 500);
      ctx.out << n.name << ": pid " << c.pid << ", listening on " << n.endpoint << ", key " << n.key
              << "\n";
    }
    AdmitEachOther(nodes, "9mm Luger",
                   [&](const std::string& title, const std::vector<std::string>& a) {
                     Step(ctx, "5. " + title, a);
                   });
    ctx.out << "\n== 6. wait until every node has heard from both peers\n";
    WaitUntilPeersHeard(nodes, 30000);
    Step(ctx, "   peers of " + nodes[0].name, {"peer", "list", "--node", nodes[0].dir.string()});

    Step(ctx,
         "7. Belgrade: federated search for the cartridge case of case 2026-BG-0042 (local "
         "store and every peer sharing 9mm Luger, each re-ranking its own candidates with CMC)",
         {"search", "--node", nodes[0].dir.string(), "2026-BG-0042/E1", "--federated", "--timeout",
          "30", "--no-leads"});
    // The expert reviews the list; the Sarajevo candidate is the strongest.
    auto ex = ExchangeStore::Open(nodes[0].dir);
    std::optional<RemoteCandidateRecord> best;
    for (const RemoteCandidateRecord& c : ex->RemoteCandidates("")) {
      if (c.candidate.fine_score &&
          (!best || *c.candidate.fine_score > best->candidate.fine_score.value_or(-1))) {
        best = c;
      }
    }
    if (!best) throw Error("no remote candidate came back");
    Step(ctx,
         "8. the Belgrade expert confirms the cross-border candidate R" + std::to_string(best->id) +
             " (" + best->peer_name + ": " + best->Label() + "): hit, local alert, hit notice",
         {"confirm", "--node", nodes[0].dir.string(), "R" + std::to_string(best->id), "--by",
          "Dr. Jelena Markovic", "--note", "breech-face marks agree; same pistol"});
    Step(
        ctx, "9. Sarajevo: the alert arrives (bien alerts --follow, stops after the first)",
        {"alerts", "--node", nodes[1].dir.string(), "--follow", "--count", "1", "--timeout", "30"});
    Step(ctx, "10. Belgrade: the notice was acknowledged (queue 0)",
         {"peer", "list", "--node", nodes[0].dir.string()});
  } catch (const Error& e) {
    ctx.err << "bien demo: " << e.what() << "\n";
    rc = kExitFailure;
  }
  ctx.out << "\n== 11. stop the nodes (SIGTERM; each shuts down cleanly)\n";
  for (const ServeProcesses::Stopped& s : serving.StopAll()) {
    ctx.out << s.child.name << " (pid " << s.child.pid << ") exited with " << s.code << "\n";
    if (s.code != 0) rc = kExitFailure;
  }
  ctx.out << (rc == kExitOk ? "\ndemo finished: nodes in " + dir.string() + "\n"
                            : "\ndemo failed: see the logs in " + dir.string() + "\n");
  return rc;
}

}  // namespace bien::cli

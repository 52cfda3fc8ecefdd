// A federation of nodes on this machine, each a `bien serve` process on
// 127.0.0.1: what `bien demo` (tools/demo_federation.cpp) and `bien bench
// federation` (tools/bench_federation.cpp) set up the same way.
//
//   1. CreateLocalNodes: `bien init` and `bien keys` for each node;
//   2. ServeProcesses::Start: `bien serve --listen tcp://127.0.0.1:*`, and the
//      endpoint it writes to NODE/serve.endpoint;
//   3. AdmitEachOther: `bien peer add` of every other node on each node;
//   4. WaitUntilPeersHeard: every node has had a hello from each peer.
//
// The nodes stop by themselves: ServeProcesses stops them (SIGTERM, then
// SIGKILL after 10 s) when it is destroyed, also on an exception, and each
// child gets SIGTERM from the kernel when the thread that started it dies
// (PR_SET_PDEATHSIG), so a crashed or killed parent leaves no node behind.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace bien::cli {

// The `bien` executable to start processes with: this process when it is
// bien, else $BIEN_EXE (tests run commands in-process). Throws bien::Error
// naming `what` (e.g. "bien demo") when there is none.
std::filesystem::path BienExecutable(const std::string& what);

struct LocalNode {
  std::string folder;     // sub-folder of the federation's folder, e.g. "rs"
  std::string name;       // node name, e.g. "RS-NFC Belgrade"
  std::string country;    // ISO alpha-2
  std::string peer_name;  // how the other nodes name it, e.g. "RS-belgrade"
  std::filesystem::path dir;
  std::string key;       // CURVE public key (after CreateLocalNodes)
  std::string endpoint;  // ROUTER endpoint (while its `bien serve` runs)
};

// Serbia, Bosnia and Herzegovina, North Macedonia, in folders rs, ba, mk of `dir`.
std::vector<LocalNode> BalkanNodes(const std::filesystem::path& dir);

// Runs one `bien` command (arguments after "bien"); throws bien::Error when it
// fails. The demo prints each command; the bench runs them quietly.
using BienCommand =
    std::function<void(const std::string& title, const std::vector<std::string>& args)>;

// `bien init` and `bien keys` for each node; fills in its key.
void CreateLocalNodes(std::vector<LocalNode>& nodes, const BienCommand& run);

// `bien peer add` of every other node on each node, sharing `share`
// (e.g. "9mm Luger"). The nodes must be serving (endpoints known).
void AdmitEachOther(const std::vector<LocalNode>& nodes, const std::string& share,
                    const BienCommand& run);

// Waits until every node has heard from each of its peers; throws bien::Error
// naming the node after `timeout_ms`.
void WaitUntilPeersHeard(const std::vector<LocalNode>& nodes, int timeout_ms);

// A child process of this one.
struct ChildProcess {
  std::string name;
  pid_t pid = -1;
};

// Starts `exe args...` with stdout to `log` and stderr to `err_log` (both
// truncated; stderr to `log` too when `err_log` is empty), with
// PR_SET_PDEATHSIG = SIGTERM. Throws bien::Error when it cannot start.
ChildProcess StartChild(const std::string& name, const std::filesystem::path& exe,
                        const std::vector<std::string>& args, const std::filesystem::path& log,
                        const std::filesystem::path& err_log = {});

// SIGTERM, then up to `grace_ms` for a clean exit, then SIGKILL. Returns the
// exit code (128 + signal when a signal ended it); -1 for no process.
int StopChild(const ChildProcess& child, int grace_ms = 10000);

// Waits for a child to exit by itself for up to `timeout_ms`, then stops it
// as StopChild does. Returns its exit code; `timed_out` tells whether it had
// to be stopped.
int WaitChild(const ChildProcess& child, int timeout_ms, bool* timed_out);

// The `bien serve` processes of a federation; stops them when destroyed.
class ServeProcesses {
 public:
  explicit ServeProcesses(std::filesystem::path exe) : exe_(std::move(exe)) {}
  ~ServeProcesses();
  ServeProcesses(const ServeProcesses&) = delete;
  ServeProcesses& operator=(const ServeProcesses&) = delete;

  // Starts `bien serve --node DIR --listen tcp://127.0.0.1:* --heartbeat-ms
  // HB [extra...]` with its log in `log`, and waits (up to 10 s) for its
  // endpoint, which it stores in node.endpoint. Throws bien::Error naming the
  // log when the node does not come up.
  const ChildProcess& Start(LocalNode& node, const std::filesystem::path& log, int heartbeat_ms,
                            const std::vector<std::string>& extra = {});

  struct Stopped {
    ChildProcess child;
    int code = 0;  // exit code; 0 = clean shutdown
  };
  // Stops every node (SIGTERM, each gets up to 10 s), in start order.
  std::vector<Stopped> StopAll();

 private:
  std::filesystem::path exe_;
  std::vector<ChildProcess> children_;
};

}  // namespace bien::cli

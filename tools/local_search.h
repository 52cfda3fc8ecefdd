// `bien search` through the serving node: a running `bien serve` keeps each
// partition's vector index and ring codes in memory after its first search,
// while a `bien search` process loads them from NODE/index/ every time (at
// 10^6 exhibits about 6 s of a 9 s search; docs/PERFORMANCE.md "A node of
// 10^6 exhibits end to end"). So `bien serve` loads them when it starts and
// also answers local searches
// on ipc://NODE/search.ipc (a socket file only the node's user may open),
// and `bien search` hands its arguments there when the node is serving,
// printing what the node's run printed. `--standalone`, `--federated`, or no
// serving node: the search runs in the calling process as before.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

namespace bien::cli {

// NODE/search.ipc
std::filesystem::path LocalSearchSocket(const std::filesystem::path& node_dir);

// The arguments of a `bien search` command line (argv[1..]) as the node runs
// them: --node and --user (with their values) left out, then "--node DIR",
// "--user ACTOR" and "--standalone" added. nullopt when they are not a plain
// local search (the first word is not `search`, or --federated or
// --standalone is among them).
std::optional<std::vector<std::string>> LocalSearchArgs(const std::vector<std::string>& argv,
                                                        const std::filesystem::path& node_dir,
                                                        const std::string& actor);

// Client: when a node serves `node_dir`, sends it `args` (LocalSearchArgs),
// writes its output and errors to out / err and returns its exit code.
// nullopt when no node serves it (no socket file), or the socket is stale
// (no answer to the hand-over within `connect_ms`; a line on `err` says so):
// the caller then searches in its own process.
std::optional<int> SearchThroughNode(const std::filesystem::path& node_dir,
                                     const std::vector<std::string>& args, std::ostream& out,
                                     std::ostream& err, int connect_ms = 2000);

// Server: a thread that first loads every cartridge-case partition's index
// and ring codes (a line per partition, then "local searches: indexes
// ready"), then answers local searches one at a time with cli::Run(args) in
// this process (a search handed over meanwhile waits). `log(level, text)`
// gets a line per search.
class LocalSearchServer {
 public:
  using Log = std::function<void(const std::string& level, const std::string& text)>;
  // Binds the socket (mode 0600; a stale socket file is replaced). Throws
  // bien::Error naming the path when it cannot.
  LocalSearchServer(const std::filesystem::path& node_dir, Log log);
  ~LocalSearchServer();  // stops the thread, removes the socket file
  LocalSearchServer(const LocalSearchServer&) = delete;
  LocalSearchServer& operator=(const LocalSearchServer&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bien::cli

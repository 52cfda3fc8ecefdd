#include "tools/local_federation.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

#include "core/error.h"
#include "storage/exchange_store.h"

extern char** environ;

namespace bien::cli {

namespace fs = std::filesystem;

fs::path BienExecutable(const std::string& what) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && self.filename() == "bien") return self;
  if (const char* e = std::getenv("BIEN_EXE"); e && *e) return e;
  throw Error(what + " starts `bien` processes: run it from the bien executable (or set BIEN_EXE)");
}

std::vector<LocalNode> BalkanNodes(const fs::path& dir) {
  std::vector<LocalNode> nodes = {
      {"rs", "RS-NFC Belgrade", "RS", "RS-belgrade", {}, {}, {}},
      {"ba", "BA-FUP Sarajevo", "BA", "BA-sarajevo", {}, {}, {}},
      {"mk", "MK-MVR Skopje", "MK", "MK-skopje", {}, {}, {}},
  };
  for (LocalNode& n : nodes) n.dir = dir / n.folder;
  return nodes;
}

void CreateLocalNodes(std::vector<LocalNode>& nodes, const BienCommand& run) {
  for (LocalNode& n : nodes) {
    run("create node " + n.name + " and its CURVE key pair",
        {"init", "--node", n.dir.string(), "--name", n.name, "--country", n.country});
    run("keys of " + n.name, {"keys", "--node", n.dir.string()});
    n.key.clear();
    std::ifstream(n.dir / "keys" / "node.pub") >> n.key;
    if (n.key.empty()) throw Error(n.name + ": no public key in " + (n.dir / "keys").string());
  }
}

void AdmitEachOther(const std::vector<LocalNode>& nodes, const std::string& share,
                    const BienCommand& run) {
  for (const LocalNode& n : nodes) {
    for (const LocalNode& p : nodes) {
      if (&p == &n) continue;
      if (p.endpoint.empty()) throw Error(p.name + " is not serving: no endpoint to admit");
      run(n.name + " admits " + p.name + " (only admitted keys may connect)",
          {"peer", "add", "--node", n.dir.string(), "--share", share, p.peer_name, p.endpoint, "--",
           p.key});
    }
  }
}

void WaitUntilPeersHeard(const std::vector<LocalNode>& nodes, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (const LocalNode& n : nodes) {
    auto ex = ExchangeStore::Open(n.dir);
    while (true) {
      bool all = true;
      for (const PeerRecord& p : ex->Peers()) all = all && p.remote_name.has_value();
      if (all) break;
      if (std::chrono::steady_clock::now() >= until) {
        throw Error(n.name + " did not hear from its peers within " +
                    std::to_string(timeout_ms / 1000) + " s (see the logs)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

ChildProcess StartChild(const std::string& name, const fs::path& exe,
                        const std::vector<std::string>& args, const fs::path& log,
                        const fs::path& err_log) {
  // Everything the child needs is made before fork: between fork and exec it
  // only makes async-signal-safe calls.
  const std::string exe_path = exe.string();
  const std::string log_path = log.string();
  const std::string err_path = err_log.empty() ? std::string() : err_log.string();
  std::vector<std::string> all{exe_path};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  sigset_t none;
  sigemptyset(&none);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw Error("cannot start " + exe_path + ": " + std::strerror(errno));
  if (pid == 0) {
    // SIGTERM when the thread that started it dies; and if the parent is
    // already gone, stop now.
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(127);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int efd = err_path.empty()
                        ? fd
                        : ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || efd < 0 || ::dup2(fd, STDOUT_FILENO) < 0 || ::dup2(efd, STDERR_FILENO) < 0) {
      ::_exit(127);
    }
    ::execve(exe_path.c_str(), argv.data(), environ);
    ::_exit(127);
  }
  return {name, pid};
}

namespace {

// The exit code of a status from waitpid.
int ExitCode(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Polls for the child's exit for up to `ms`; true (and the code) when it exited.
bool Reaped(pid_t pid, int ms, int* code) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      *code = ExitCode(status);
      return true;
    }
    if (r < 0 && errno == ECHILD) {
      *code = -1;
      return true;
    }
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::string Tail(const fs::path& log) {
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 2000) text = "..." + text.substr(text.size() - 2000);
  return text;
}

// Waits up to `grace_ms` for a child that was sent SIGTERM, then SIGKILL.
int AwaitStopped(const ChildProcess& c, int grace_ms) {
  int code = 0;
  if (Reaped(c.pid, grace_ms, &code)) return code;
  ::kill(c.pid, SIGKILL);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  return 128 + SIGKILL;
}

}  // namespace

int StopChild(const ChildProcess& c, int grace_ms) {
  if (c.pid <= 0) return -1;
  int code = 0;
  if (Reaped(c.pid, 0, &code)) return code;
  ::kill(c.pid, SIGTERM);
  return AwaitStopped(c, grace_ms);
}

int WaitChild(const ChildProcess& c, int timeout_ms, bool* timed_out) {
  int code = 0;
  *timed_out = false;
  if (Reaped(c.pid, timeout_ms, &code)) return code;
  *timed_out = true;
  return StopChild(c);
}

ServeProcesses::~ServeProcesses() { StopAll(); }

const ChildProcess& ServeProcesses::Start(LocalNode& node, const fs::path& log, int heartbeat_ms,
                                          const std::vector<std::string>& extra) {
  std::error_code ec;
  fs::remove(node.dir / "serve.endpoint", ec);
  std::vector<std::string> args{"serve",
                                "--node",
                                node.dir.string(),
                                "--listen",
                                "tcp://127.0.0.1:*",
                                "--heartbeat-ms",
                                std::to_string(heartbeat_ms)};
  args.insert(args.end(), extra.begin(), extra.end());
  children_.push_back(StartChild(node.name, exe_, args, log));
  const ChildProcess& child = children_.back();
  node.endpoint.clear();
  for (int i = 0; i < 200 && node.endpoint.empty(); ++i) {
    std::ifstream(node.dir / "serve.endpoint") >> node.endpoint;
    if (!node.endpoint.empty()) break;
    int code = 0;
    if (Reaped(child.pid, 50, &code)) {
      children_.pop_back();
      throw Error(node.name + ": `bien serve` exited with " + std::to_string(code) + ": " +
                  Tail(log));
    }
  }
  if (node.endpoint.empty()) {
    throw Error(node.name + " did not start within 10 s (log " + log.string() + "): " + Tail(log));
  }
  return child;
}

std::vector<ServeProcesses::Stopped> ServeProcesses::StopAll() {
  std::vector<Stopped> out;
  // SIGTERM to all at once (once: a second one could end a node that is
  // shutting down cleanly), then each gets up to 10 s.
  for (const ChildProcess& c : children_) ::kill(c.pid, SIGTERM);
  for (const ChildProcess& c : children_) out.push_back({c, AwaitStopped(c, 10000)});
  children_.clear();
  return out;
}

}  // namespace bien::cli

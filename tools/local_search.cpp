#include "tools/local_search.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <zmq.hpp>

#include "core/error.h"
#include "storage/store.h"
#include "tools/cli.h"
#include "tools/output.h"
#include "tools/search.h"

namespace bien::cli {

namespace fs = std::filesystem;

namespace {

constexpr const char* kProtocol = "bien-local-search-v1";
constexpr int kPollMs = 200;  // the server checks for stop this often
constexpr int kSearchTimeoutMs =
    30 * 60000;  // a search answers within this, or the client gives up

std::string Endpoint(const fs::path& socket) { return "ipc://" + socket.string(); }

bool FitsSocketPath(const fs::path& socket) {
  return socket.string().size() < sizeof(sockaddr_un{}.sun_path);
}

constexpr int kAliveCheckMs = 1000;

// Whether something accepts connections on the socket file (a plain Unix
// connection, closed at once: the node's ZeroMQ socket drops it).
bool Listening(const fs::path& socket) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;  // cannot tell: keep waiting
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket.string();
  std::copy(path.begin(), path.end(), addr.sun_path);
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

fs::path LocalSearchSocket(const fs::path& node_dir) { return node_dir / "search.ipc"; }

std::optional<std::vector<std::string>> LocalSearchArgs(const std::vector<std::string>& argv,
                                                        const fs::path& node_dir,
                                                        const std::string& actor) {
  std::vector<std::string> out;
  bool search = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--federated" || a == "--standalone") return std::nullopt;
    if (a == "--node" || a == "--user") {
      ++i;  // and its value
      continue;
    }
    if (a.rfind("--node=", 0) == 0 || a.rfind("--user=", 0) == 0) continue;
    if (!search && a.rfind("-", 0) != 0) {
      if (a != "search") return std::nullopt;
      search = true;
    }
    out.push_back(a);
  }
  if (!search) return std::nullopt;
  out.insert(out.end(),
             {"--node", fs::absolute(node_dir).string(), "--user", actor, "--standalone"});
  return out;
}

std::optional<int> SearchThroughNode(const fs::path& node_dir, const std::vector<std::string>& args,
                                     std::ostream& out, std::ostream& err, int connect_ms) {
  const fs::path socket = LocalSearchSocket(node_dir);
  std::error_code ec;
  if (!fs::exists(socket, ec) || !FitsSocketPath(socket)) return std::nullopt;
  zmq::context_t context;
  zmq::socket_t req(context, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.set(zmq::sockopt::immediate, 1);  // no queueing to a socket nobody listens on
  req.set(zmq::sockopt::sndtimeo, connect_ms);
  try {
    req.connect(Endpoint(socket));
    std::vector<zmq::const_buffer> frames;
    frames.push_back(zmq::buffer(std::string_view(kProtocol)));
    for (const std::string& a : args) frames.push_back(zmq::buffer(a));
    // The first frame waits for the connection (immediate + send timeout).
    for (size_t i = 0; i < frames.size(); ++i) {
      const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (!req.send(frames[i], flags)) {
        err << "bien: " << socket.string() << " did not take the search within " << connect_ms
            << " ms (a node that stopped without removing it?); searching in this process\n";
        return std::nullopt;
      }
    }
    // Handed over: from here the node runs the search. Checked every second
    // that it still listens (a node that died meanwhile would leave this
    // waiting for nothing).
    const auto until = Clock::now() + std::chrono::milliseconds(kSearchTimeoutMs);
    while (true) {
      zmq::pollitem_t item{req.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(kAliveCheckMs)) > 0) break;
      if (!Listening(socket)) {
        throw Error("the serving node stopped during the search (" + socket.string() +
                    " no longer listens); search again, or with --standalone");
      }
      if (Clock::now() > until) {
        throw Error("the serving node (" + socket.string() + ") did not answer the search within " +
                    std::to_string(kSearchTimeoutMs / 60000) + " minutes");
      }
    }
    std::vector<zmq::message_t> parts;
    while (true) {
      zmq::message_t m;
      if (!req.recv(m)) throw Error(socket.string() + ": the answer was cut short");
      const bool more = m.more();
      parts.push_back(std::move(m));
      if (!more) break;
    }
    if (parts.size() != 3) {
      throw Error(socket.string() + ": an answer of " + std::to_string(parts.size()) +
                  " parts (expected exit code, output, errors)");
    }
    int code = 0;
    try {
      code = std::stoi(parts[0].to_string());
    } catch (const std::exception&) {
      throw Error(socket.string() + ": the answer's exit code is not a number");
    }
    out << parts[1].to_string_view() << std::flush;
    err << parts[2].to_string_view() << std::flush;
    return code;
  } catch (const zmq::error_t& e) {
    err << "bien: " << socket.string() << ": " << e.what() << "; searching in this process\n";
    return std::nullopt;
  }
}

struct LocalSearchServer::Impl {
  fs::path node_dir;  // absolute, as the searches name it (LocalSearchArgs)
  fs::path socket;
  Log log;
  zmq::context_t context;
  zmq::socket_t rep{context, zmq::socket_type::rep};
  std::atomic<bool> stop{false};
  std::thread thread;

  // Loads every cartridge-case partition's index (and its ring codes where
  // a search would screen) into this process, so the first search after a
  // start does not pay for it (at 10^6 exhibits about 8 s cold; 23 s for the
  // first search measured without this).
  void WarmUp() {
    const auto t_all = Clock::now();
    int partitions = 0;
    try {
      auto store = Store::Open(node_dir);
      const SearchOptions defaults;
      const int jobs = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      for (const Partition& p : store->Partitions()) {
        if (stop) return;
        if (p.kind != ExhibitKind::kCartridgeCase) continue;
        const auto t0 = Clock::now();
        const CoarseIndex ci = OpenCoarseIndex(*store, p);
        std::string codes = "not needed (the ring pool holds the partition)";
        if (ci.index && defaults.ring_screen > 0 &&
            ci.index->size() > std::max(defaults.ring_pool, defaults.coarse_k)) {
          try {
            OpenRingCodes(*store, p, jobs, &codes);
          } catch (const Error& e) {
            codes = std::string("none: ") + e.what();
          }
        }
        ++partitions;
        log("info", "local searches: " + p.Key() + " ready, " + std::to_string(ci.scans) +
                        " scans; index " + ci.note + "; ring codes " + codes + " (" +
                        std::to_string(static_cast<int64_t>(MsSince(t0))) + " ms)");
      }
    } catch (const Error& e) {
      log("warn", std::string("local searches: loading the indexes: ") + e.what());
    }
    log("info", "local searches: indexes ready (" + std::to_string(partitions) +
                    " cartridge-case partitions, " +
                    std::to_string(static_cast<int64_t>(MsSince(t_all))) + " ms)");
  }

  void Serve() {
    WarmUp();
    while (!stop) {
      zmq::pollitem_t item{rep.handle(), 0, ZMQ_POLLIN, 0};
      try {
        if (zmq::poll(&item, 1, std::chrono::milliseconds(kPollMs)) == 0) continue;
        std::vector<std::string> parts;
        while (true) {
          zmq::message_t m;
          if (!rep.recv(m)) break;
          parts.push_back(m.to_string());
          if (!m.more()) break;
        }
        std::string code = "2", out, err;
        if (parts.empty() || parts[0] != kProtocol) {
          err = "bien: the node's local search socket speaks " + std::string(kProtocol) + "\n";
        } else if (parts.size() < 2 || parts[1] != "search") {
          err = "bien: the node's local search socket runs `bien search` only\n";
        } else {
          std::vector<const char*> argv{"bien"};
          for (size_t i = 1; i < parts.size(); ++i) argv.push_back(parts[i].c_str());
          std::ostringstream o, e;
          const auto t0 = std::chrono::steady_clock::now();
          const int rc = Run(static_cast<int>(argv.size()), argv.data(), o, e);
          const double ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count();
          code = std::to_string(rc);
          out = o.str();
          err = e.str();
          std::string line;
          for (size_t i = 1; i < parts.size(); ++i) line += (i > 1 ? " " : "") + parts[i];
          log("info", "local search (" + line + "): exit " + code + " in " +
                          std::to_string(static_cast<int64_t>(ms)) + " ms");
        }
        rep.send(zmq::buffer(code), zmq::send_flags::sndmore);
        rep.send(zmq::buffer(out), zmq::send_flags::sndmore);
        rep.send(zmq::buffer(err), zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        if (stop) break;
        log("warn", "local search socket: " + std::string(e.what()));
      }
    }
  }
};

LocalSearchServer::LocalSearchServer(const fs::path& node_dir, Log log)
    : impl_(std::make_unique<Impl>()) {
  impl_->node_dir = fs::absolute(node_dir);
  impl_->socket = LocalSearchSocket(impl_->node_dir);
  impl_->log = std::move(log);
  if (!FitsSocketPath(impl_->socket)) {
    throw Error(impl_->socket.string() + ": the path is too long for a local socket (at most " +
                std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " characters)");
  }
  std::error_code ec;
  fs::remove(impl_->socket, ec);  // a node that stopped without removing it
  impl_->rep.set(zmq::sockopt::linger, 0);
  // Only the node's user may connect: the socket file is made without
  // permissions for others, then set to 0600.
  const mode_t old = ::umask(0077);
  try {
    impl_->rep.bind(Endpoint(impl_->socket));
  } catch (const zmq::error_t& e) {
    ::umask(old);
    throw Error(impl_->socket.string() + ": cannot listen for local searches: " + e.what());
  }
  ::umask(old);
  ::chmod(impl_->socket.c_str(), 0600);
  impl_->thread = std::thread([this] { impl_->Serve(); });
}

LocalSearchServer::~LocalSearchServer() {
  impl_->stop = true;
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->rep.close();
  std::error_code ec;
  fs::remove(impl_->socket, ec);
}

}  // namespace bien::cli

#include "exchange/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "exchange/codec.h"

namespace bien::exchange {
namespace {

namespace fs = std::filesystem;

std::string ReadKeyFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(path.string() + ": cannot read");
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ')) {
    line.pop_back();
  }
  if (!IsZ85Key(line)) throw Error(path.string() + ": not a CURVE key (40 Z85 characters)");
  return line;
}

void WriteKeyFile(const fs::path& path, const std::string& key, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) throw Error(path.string() + ": cannot create: " + std::strerror(errno));
  const std::string text = key + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) throw Error(path.string() + ": cannot write: " + std::strerror(errno));
}

}  // namespace

KeyPair GenerateKeyPair() {
  if (!zmq_has("curve")) throw Error("this libzmq was built without CURVE security");
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    throw Error(std::string("cannot create a CURVE key pair: ") + zmq_strerror(zmq_errno()));
  }
  return {pub, sec};
}

std::string PublicKeyOf(const std::string& secret_key) {
  char pub[41];
  if (!IsZ85Key(secret_key) || zmq_curve_public(pub, secret_key.c_str()) != 0) {
    throw Error("not a CURVE secret key");
  }
  return pub;
}

std::optional<KeyPair> LoadKeyPair(const fs::path& node_dir) {
  const fs::path dir = node_dir / "keys";
  const fs::path sec_path = dir / "node.key";
  const fs::path pub_path = dir / "node.pub";
  std::error_code ec;
  if (!fs::exists(sec_path, ec)) return std::nullopt;
  struct stat st {};
  if (::stat(sec_path.c_str(), &st) != 0) throw Error(sec_path.string() + ": cannot stat");
  if ((st.st_mode & 077) != 0) {
    throw Error(sec_path.string() + ": the secret key is readable by others (mode " + [&] {
      std::ostringstream o;
      o << std::oct << (st.st_mode & 0777);
      return o.str();
    }() + "); run chmod 600 on it and consider the key compromised");
  }
  KeyPair k;
  k.secret_key = ReadKeyFile(sec_path);
  k.public_key = ReadKeyFile(pub_path);
  if (PublicKeyOf(k.secret_key) != k.public_key) {
    throw Error(pub_path.string() + ": does not belong to " + sec_path.string());
  }
  return k;
}

KeyPair LoadOrCreateKeyPair(const fs::path& node_dir, bool* created) {
  if (auto k = LoadKeyPair(node_dir)) {
    if (created) *created = false;
    return *k;
  }
  if (!fs::exists(node_dir / "node.toml")) {
    throw Error(node_dir.string() + ": not a bien node (no node.toml)");
  }
  const fs::path dir = node_dir / "keys";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir.string() + ": cannot create: " + ec.message());
  ::chmod(dir.c_str(), 0700);
  const KeyPair k = GenerateKeyPair();
  // The public half first: a node.key present means the pair is complete.
  std::error_code ignored;
  fs::remove(dir / "node.pub", ignored);
  WriteKeyFile(dir / "node.pub", k.public_key, 0644);
  WriteKeyFile(dir / "node.key", k.secret_key, 0600);
  if (created) *created = true;
  return k;
}

}  // namespace bien::exchange

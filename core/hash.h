// Cryptographic digests used for evidence integrity (SHA-256) and for the X3P
// point-data checksum (MD5, as ISO 5436-2 prescribes). Hex output is lower case.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace bien {

enum class DigestKind { kSha256, kMd5 };

// Incremental digest: Update() any number of times, then HexDigest() once.
class Digest {
 public:
  explicit Digest(DigestKind kind);
  ~Digest();
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;

  void Update(std::span<const std::byte> data);
  void Update(std::string_view text);
  std::string HexDigest();  // finalises; further calls throw

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(std::span<const std::byte> data);
std::string Sha256Hex(std::string_view text);
std::string Md5Hex(std::span<const std::byte> data);
// Streams the file; throws bien::Error naming the path when it cannot be read.
std::string Sha256File(const std::filesystem::path& path);

}  // namespace bien

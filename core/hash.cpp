#include "core/hash.h"

#include <openssl/evp.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "core/error.h"

namespace bien {

struct Digest::Impl {
  EVP_MD_CTX* ctx = nullptr;
  bool finished = false;
};

Digest::Digest(DigestKind kind) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  BIEN_CHECK(impl_->ctx != nullptr);
  const EVP_MD* md = kind == DigestKind::kSha256 ? EVP_sha256() : EVP_md5();
  BIEN_CHECK(EVP_DigestInit_ex(impl_->ctx, md, nullptr) == 1);
}

Digest::~Digest() { EVP_MD_CTX_free(impl_->ctx); }

void Digest::Update(std::span<const std::byte> data) {
  if (impl_->finished) throw Error("digest already finalised");
  BIEN_CHECK(EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) == 1);
}

void Digest::Update(std::string_view text) {
  Update(std::as_bytes(std::span<const char>(text.data(), text.size())));
}

std::string Digest::HexDigest() {
  if (impl_->finished) throw Error("digest already finalised");
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int n = 0;
  BIEN_CHECK(EVP_DigestFinal_ex(impl_->ctx, out.data(), &n) == 1);
  impl_->finished = true;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(2 * n, '0');
  for (unsigned int i = 0; i < n; ++i) {
    hex[2 * i] = kHex[out[i] >> 4];
    hex[2 * i + 1] = kHex[out[i] & 15];
  }
  return hex;
}

std::string Sha256Hex(std::span<const std::byte> data) {
  Digest d(DigestKind::kSha256);
  d.Update(data);
  return d.HexDigest();
}

std::string Sha256Hex(std::string_view text) {
  Digest d(DigestKind::kSha256);
  d.Update(text);
  return d.HexDigest();
}

std::string Md5Hex(std::span<const std::byte> data) {
  Digest d(DigestKind::kMd5);
  d.Update(data);
  return d.HexDigest();
}

std::string Sha256File(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open for reading");
  Digest d(DigestKind::kSha256);
  std::array<char, 1 << 16> buffer{};
  while (in) {
    in.read(buffer.data(), buffer.size());
    const auto got = in.gcount();
    if (got > 0) d.Update(std::string_view(buffer.data(), static_cast<size_t>(got)));
  }
  if (in.bad()) throw Error(path.string() + ": read failed");
  return d.HexDigest();
}

}  // namespace bien

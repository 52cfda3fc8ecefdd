#include "tools/synth_features.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <opencv2/core.hpp>
#include <ostream>
#include <thread>

#include "core/error.h"
#include "core/hash.h"
#include "matching/descriptor.h"
#include "tools/parallel.h"

namespace bien::cli {

static_assert(std::endian::native == std::endian::little,
              "the features file is written in the host's byte order, little-endian");

namespace {

constexpr char kMagic[8] = {'B', 'I', 'E', 'N', 'F', 'E', 'A', 'T'};
// 2 (2026-11-23): the synthetic model's key follows the descriptor key.
// Version 1 files hold vectors of the first model (sbf-v1) and are refused.
constexpr uint32_t kVersion = 2;
constexpr size_t kFixedHeader = 8 + 4 + 4 + 8 + 4 + 4 + 8;  // up to the key
constexpr size_t kDigestChars = 64;
constexpr uint32_t kMaxKey = 4096;
constexpr int kFirearmsPerChunk = 128;

std::atomic<uint64_t> g_tmp_counter{0};

template <typename T>
void Put(std::string& out, T value) {
  char b[sizeof(T)];
  std::memcpy(b, &value, sizeof(T));
  out.append(b, sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

void SynthFeatureOptions::Check() const {
  if (count < 1) throw Error("synthetic features: the count must be at least 1");
  if (shots < 1) throw Error("synthetic features: shots per firearm must be at least 1");
  if (jobs < 0) throw Error("synthetic features: jobs must be 0 (every core) or more");
  if ((count + shots - 1) / shots > std::numeric_limits<int>::max() - kFirearmsPerChunk) {
    throw Error("synthetic features: too many firearms");
  }
}

FeatureProgress ProgressLine(std::ostream& err, const std::string& what) {
  const auto start = std::chrono::steady_clock::now();
  return [&err, what, start](int64_t done, int64_t total) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char line[160];
    std::snprintf(line, sizeof line, "\r%s: %lld / %lld (%.0f per second)", what.c_str(),
                  static_cast<long long>(done), static_cast<long long>(total),
                  s > 0 ? static_cast<double>(done) / s : 0.0);
    err << line << (done >= total ? "\n" : "") << std::flush;
  };
}

void GenerateSynthFeatures(
    const SynthFeatureOptions& options,
    const std::function<void(int64_t first, std::span<const float> vectors)>& sink,
    const FeatureProgress& progress) {
  options.Check();
  SynthDescriptorOptions synth;
  synth.seed = options.seed;
  const DescriptorOptions descriptor;
  const size_t dim = static_cast<size_t>(DescriptorDim(descriptor));
  const int64_t firearms = (options.count + options.shots - 1) / options.shots;
  const int64_t chunks = (firearms + kFirearmsPerChunk - 1) / kFirearmsPerChunk;
  int jobs = options.jobs > 0 ? options.jobs
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  jobs = static_cast<int>(std::min<int64_t>(jobs, chunks));
  CvSingleThread cv_single;
  int64_t written = 0;
  if (progress) progress(0, options.count);
  // Rounds of `jobs` chunks made in parallel, handed over in order: memory
  // stays at 2 * jobs chunks whatever the count.
  for (int64_t round = 0; round < chunks; round += jobs) {
    const int in_round = static_cast<int>(std::min<int64_t>(jobs, chunks - round));
    std::vector<std::vector<float>> made(in_round);
    std::vector<std::exception_ptr> failed(in_round);
    {
      std::vector<std::jthread> workers;
      for (int t = 0; t < in_round; ++t) {
        workers.emplace_back([&, t] {
          try {
            const int64_t first = (round + t) * kFirearmsPerChunk;
            const int64_t n = std::min<int64_t>(kFirearmsPerChunk, firearms - first);
            made[t] = SynthDescriptors(synth, descriptor, static_cast<int>(first),
                                       static_cast<int>(n), options.shots);
          } catch (...) {
            failed[t] = std::current_exception();
          }
        });
      }
    }
    for (int t = 0; t < in_round; ++t) {
      if (failed[t]) std::rethrow_exception(failed[t]);
      const int64_t first = (round + t) * kFirearmsPerChunk * options.shots;
      const int64_t n =
          std::min<int64_t>(static_cast<int64_t>(made[t].size() / dim), options.count - first);
      sink(first, std::span<const float>(made[t].data(), static_cast<size_t>(n) * dim));
      written = first + n;
    }
    if (progress) progress(written, options.count);
  }
}

std::vector<float> MakeSynthFeatures(const SynthFeatureOptions& options,
                                     const FeatureProgress& progress) {
  options.Check();
  const size_t dim = static_cast<size_t>(DescriptorDim());
  std::vector<float> out;
  out.reserve(static_cast<size_t>(options.count) * dim);
  GenerateSynthFeatures(
      options,
      [&](int64_t, std::span<const float> v) { out.insert(out.end(), v.begin(), v.end()); },
      progress);
  return out;
}

void WriteSynthFeatureFile(const std::filesystem::path& path, const SynthFeatureOptions& options,
                           const FeatureProgress& progress) {
  options.Check();
  auto fail = [&](const std::string& why) {
    throw Error(path.string() + ": cannot write the features file (" + why + ")");
  };
  if (path.empty()) fail("no file name");
  const DescriptorOptions descriptor;
  const std::string key = DescriptorKey(descriptor);
  SynthDescriptorOptions synth;
  synth.seed = options.seed;
  const std::string model = SynthDescriptorKey(synth);
  std::string header(kMagic, sizeof kMagic);
  Put<uint32_t>(header, kVersion);
  Put<uint32_t>(header, static_cast<uint32_t>(DescriptorDim(descriptor)));
  Put<uint64_t>(header, static_cast<uint64_t>(options.count));
  Put<uint32_t>(header, static_cast<uint32_t>(options.shots));
  Put<uint32_t>(header, static_cast<uint32_t>(key.size()));
  Put<uint64_t>(header, options.seed);
  header += key;
  Put<uint32_t>(header, static_cast<uint32_t>(model.size()));
  header += model;

  const std::string tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(g_tmp_counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(std::strerror(errno));
  bool open = true;
  try {
    auto write_all = [&](const char* p, size_t n) {
      while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
          if (errno == EINTR) continue;
          fail(std::strerror(errno));
        }
        p += w;
        n -= static_cast<size_t>(w);
      }
    };
    Digest digest(DigestKind::kSha256);
    write_all(header.data(), header.size());
    digest.Update(header);
    GenerateSynthFeatures(
        options,
        [&](int64_t, std::span<const float> v) {
          const auto bytes = std::as_bytes(v);
          write_all(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          digest.Update(bytes);
        },
        progress);
    const std::string hex = digest.HexDigest();
    write_all(hex.data(), hex.size());
    if (::fsync(fd) != 0) fail(std::strerror(errno));
    open = false;
    if (::close(fd) != 0) fail(std::strerror(errno));
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) fail(ec.message());
  } catch (...) {
    if (open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

FeatureFile ReadSynthFeatureFile(const std::filesystem::path& path, int64_t limit,
                                 const std::string& expected_key,
                                 const std::string& expected_model) {
  auto fail = [&](const std::string& why) -> void { throw Error(path.string() + ": " + why); };
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("no such features file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail("cannot read the features file (" + ec.message() + ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open the features file");
  const std::string not_ours = "not a bien synthetic features file (bad magic)";
  if (size < kFixedHeader) {
    char magic[sizeof kMagic] = {};
    in.read(magic, static_cast<std::streamsize>(std::min<uint64_t>(size, sizeof magic)));
    if (std::memcmp(magic, kMagic, static_cast<size_t>(std::min<uint64_t>(size, sizeof magic))) !=
            0 ||
        size == 0) {
      fail(not_ours);
    }
    fail("truncated features file (" + std::to_string(size) + " bytes, shorter than a header)");
  }
  std::string header(kFixedHeader, '\0');
  in.read(header.data(), static_cast<std::streamsize>(kFixedHeader));
  if (!in) fail("cannot read the features file header");
  if (std::memcmp(header.data(), kMagic, sizeof kMagic) != 0) fail(not_ours);
  const char* p = header.data() + sizeof kMagic;
  const uint32_t version = Get<uint32_t>(p);
  if (version == 1) {
    fail(
        "features file version 1 holds vectors of the first synthetic model (sbf-v1), which "
        "this bien no longer makes; write the file again with `bien synth --features`");
  }
  if (version != kVersion) {
    fail("unsupported features file version " + std::to_string(version) + " (this bien reads " +
         std::to_string(kVersion) + ")");
  }
  FeatureFile f;
  const uint32_t dim = Get<uint32_t>(p + 4);
  const uint64_t count = Get<uint64_t>(p + 8);
  const uint32_t shots = Get<uint32_t>(p + 16);
  const uint32_t key_length = Get<uint32_t>(p + 20);
  f.seed = Get<uint64_t>(p + 24);
  if (dim < 1 || dim > 65536 || shots < 1 || shots > 1000000 || key_length < 1 ||
      key_length > kMaxKey || count > (uint64_t{1} << 40)) {
    fail("bad features file header (dim " + std::to_string(dim) + ", count " +
         std::to_string(count) + ", shots " + std::to_string(shots) + ", key length " +
         std::to_string(key_length) + ")");
  }
  // The key and the model's key with its length come before the vectors.
  if (size < kFixedHeader + key_length + 4) {
    fail("truncated features file (" + std::to_string(size) + " bytes, shorter than its header)");
  }
  f.key.resize(key_length);
  in.read(f.key.data(), key_length);
  char model_length_bytes[4] = {};
  in.read(model_length_bytes, sizeof model_length_bytes);
  if (!in) fail("cannot read the features file header");
  const uint32_t model_length = Get<uint32_t>(model_length_bytes);
  if (model_length < 1 || model_length > kMaxKey) {
    fail("bad features file header (model key length " + std::to_string(model_length) + ")");
  }
  const uint64_t payload = count * dim * sizeof(float);
  const uint64_t expected = kFixedHeader + key_length + 4 + model_length + payload + kDigestChars;
  if (size < expected) {
    fail("truncated features file (" + std::to_string(size) + " bytes, the header announces " +
         std::to_string(expected) + ")");
  }
  if (size > expected) {
    fail("features file has " + std::to_string(size - expected) +
         " bytes after its end (damaged or not written by bien)");
  }
  f.dim = static_cast<int>(dim);
  f.count = static_cast<int64_t>(count);
  f.shots = static_cast<int>(shots);
  f.model.resize(model_length);
  in.read(f.model.data(), model_length);
  if (!in) fail("cannot read the features file header");
  if (!expected_key.empty() && f.key != expected_key) {
    fail("descriptor key differs: the file holds \"" + f.key + "\", this bien makes \"" +
         expected_key + "\"");
  }
  if (!expected_model.empty() && f.model != expected_model) {
    fail("synthetic model differs: the file holds \"" + f.model + "\", this bien makes \"" +
         expected_model + "\"");
  }
  if (limit > f.count) {
    fail("holds " + std::to_string(f.count) + " vectors, fewer than the " + std::to_string(limit) +
         " asked for");
  }
  const int64_t keep = limit < 0 ? f.count : limit;
  Digest digest(DigestKind::kSha256);
  digest.Update(header);
  digest.Update(f.key);
  digest.Update(std::string_view(model_length_bytes, sizeof model_length_bytes));
  digest.Update(f.model);
  f.vectors.resize(static_cast<size_t>(keep) * dim);
  const uint64_t keep_bytes = static_cast<uint64_t>(keep) * dim * sizeof(float);
  constexpr uint64_t kBlock = uint64_t{1} << 22;
  char* dst = reinterpret_cast<char*>(f.vectors.data());
  for (uint64_t done = 0; done < keep_bytes; done += kBlock) {
    const uint64_t n = std::min(kBlock, keep_bytes - done);
    in.read(dst + done, static_cast<std::streamsize>(n));
    if (!in) fail("cannot read the features file's vectors");
    digest.Update(std::as_bytes(std::span<const char>(dst + done, n)));
  }
  std::vector<char> rest(kBlock);
  for (uint64_t done = keep_bytes; done < payload; done += kBlock) {
    const uint64_t n = std::min(kBlock, payload - done);
    in.read(rest.data(), static_cast<std::streamsize>(n));
    if (!in) fail("cannot read the features file's vectors");
    digest.Update(std::as_bytes(std::span<const char>(rest.data(), n)));
  }
  std::string stored(kDigestChars, '\0');
  in.read(stored.data(), kDigestChars);
  if (!in) fail("cannot read the features file's checksum");
  if (digest.HexDigest() != stored) fail("checksum mismatch (the features file is damaged)");
  return f;
}

FeatureFile ReadBenchFeatures(const std::filesystem::path& path, int64_t limit) {
  FeatureFile f = ReadSynthFeatureFile(path, limit, DescriptorKey(), SynthDescriptorKey());
  const int dim = DescriptorDim();
  if (f.dim != dim) {
    throw Error(path.string() + ": vectors of " + std::to_string(f.dim) +
                " floats, the descriptor has " + std::to_string(dim));
  }
  return f;
}

}  // namespace bien::cli

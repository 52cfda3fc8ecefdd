#include "matching/ring_codes.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstring>
#include <mutex>
#include <numeric>
#include <opencv2/core.hpp>
#include <unordered_set>

#include "core/bytes.h"
#include "core/error.h"
#include "core/file.h"
#include "core/hash.h"

namespace bien {
namespace {

using Complex = std::complex<double>;

int Harmonics(const RingSpectraOptions& s) { return s.max_harmonic - s.min_harmonic + 1; }

// Codes scored per inverse DFT call (one row each).
constexpr int kScoreBlock = 256;

// File layout (little-endian):
//   0   "BIENRCDX"
//   8   u32 format version (1)
//   12  u32 key length (<= kMaxKey)
//   16  u64 count
//   24  u64 trained_on
//   32  64 hex chars: id fingerprint (IdFingerprint)
//   96  key; u32 components, rotations, rings, harmonics; f64 kept energy
//       (as u64 bits); the basis (harmonics x components x rings x 2 f32 as
//       u32 bits); count x i64 ids; count x f32 scales; count x code bytes;
//       64 hex chars: SHA-256 of all before.
constexpr char kMagic[8] = {'B', 'I', 'E', 'N', 'R', 'C', 'D', 'X'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFixedHeader = 96;
constexpr size_t kChecksumLen = 64;
constexpr uint32_t kMaxKey = 4096;

uint32_t FloatBits(float v) {
  uint32_t u = 0;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
float BitsFloat(uint32_t u) {
  float v = 0;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace

void RingCodecOptions::Check(const RingSpectraOptions& spectra) const {
  auto bad = [](const std::string& why) { throw Error("ring codec options: " + why); };
  const int rings = RingSpectraDim(spectra) / (2 * Harmonics(spectra));
  if (components < 1 || components > rings) {
    bad("components " + std::to_string(components) + " must be 1.." + std::to_string(rings) +
        " (the rings)");
  }
  if (rotations < 8 || (rotations & (rotations - 1)) != 0) {
    bad("rotations " + std::to_string(rotations) + " must be a power of two, at least 8");
  }
  if (2 * spectra.max_harmonic >= rotations) {
    bad("rotations " + std::to_string(rotations) + " must exceed twice the highest harmonic (" +
        std::to_string(spectra.max_harmonic) + ")");
  }
}

RingCodec RingCodec::Train(std::span<const std::vector<float>* const> sample,
                           const RingSpectraOptions& spectra, const RingCodecOptions& options) {
  spectra.Check();
  options.Check(spectra);
  const size_t dim = static_cast<size_t>(RingSpectraDim(spectra));
  const int nk = Harmonics(spectra);
  const int rings = static_cast<int>(dim) / (2 * nk);
  const size_t rr = static_cast<size_t>(rings) * rings;
  // Per harmonic, the Hermitian ring covariance sum x x^H (upper triangle).
  std::vector<Complex> cov(static_cast<size_t>(nk) * rr);
  std::vector<Complex> x(static_cast<size_t>(rings));
  size_t used = 0;
  for (const std::vector<float>* s : sample) {
    if (s->empty()) continue;
    if (s->size() != dim) {
      throw Error("ring codec: training spectra of " + std::to_string(s->size()) + " floats; " +
                  RingSpectraKey(spectra) + " has " + std::to_string(dim));
    }
    ++used;
    for (int k = 0; k < nk; ++k) {
      for (int r = 0; r < rings; ++r) {
        const size_t at = 2 * (static_cast<size_t>(r) * nk + k);
        x[static_cast<size_t>(r)] = Complex((*s)[at], (*s)[at + 1]);
      }
      Complex* c = &cov[static_cast<size_t>(k) * rr];
      for (int a = 0; a < rings; ++a) {
        for (int b = a; b < rings; ++b) {
          c[static_cast<size_t>(a) * rings + b] +=
              x[static_cast<size_t>(a)] * std::conj(x[static_cast<size_t>(b)]);
        }
      }
    }
  }
  if (used < 2 * static_cast<size_t>(options.components)) {
    throw Error("ring codec: " + std::to_string(used) +
                " non-empty ring spectra to train on, at least " +
                std::to_string(2 * options.components) + " needed");
  }
  RingCodec codec;
  codec.spectra_ = spectra;
  codec.rings_ = rings;
  codec.nk_ = nk;
  codec.components_ = options.components;
  codec.rotations_ = options.rotations;
  codec.basis_.assign(static_cast<size_t>(nk) * options.components * rings * 2, 0.0f);
  double total = 0, kept = 0;
  for (int k = 0; k < nk; ++k) {
    // The Hermitian C = A + iB as the real symmetric [[A, -B], [B, A]]: each
    // eigenvalue of C appears twice, with eigenvectors [u; v] and [-v; u]
    // for the complex eigenvector u + iv.
    const Complex* c = &cov[static_cast<size_t>(k) * rr];
    cv::Mat m(2 * rings, 2 * rings, CV_64F);
    for (int a = 0; a < rings; ++a) {
      for (int b = 0; b < rings; ++b) {
        const Complex v = a <= b ? c[static_cast<size_t>(a) * rings + b]
                                 : std::conj(c[static_cast<size_t>(b) * rings + a]);
        m.at<double>(a, b) = v.real();
        m.at<double>(a, rings + b) = -v.imag();
        m.at<double>(rings + a, b) = v.imag();
        m.at<double>(rings + a, rings + b) = v.real();
      }
      total += c[static_cast<size_t>(a) * rings + a].real();
    }
    cv::Mat values, vectors;
    cv::eigen(m, values, vectors);  // descending, one eigenvector per row
    // Complex Gram-Schmidt over the rows in order: the second of each pair
    // is (up to a phase) the first again and is left out.
    std::vector<std::vector<Complex>> accepted;
    for (int i = 0; i < vectors.rows && static_cast<int>(accepted.size()) < options.components;
         ++i) {
      std::vector<Complex> z(static_cast<size_t>(rings));
      for (int r = 0; r < rings; ++r) {
        z[static_cast<size_t>(r)] =
            Complex(vectors.at<double>(i, r), vectors.at<double>(i, rings + r));
      }
      for (const auto& u : accepted) {
        Complex dot = 0;
        for (int r = 0; r < rings; ++r)
          dot += std::conj(u[static_cast<size_t>(r)]) * z[static_cast<size_t>(r)];
        for (int r = 0; r < rings; ++r)
          z[static_cast<size_t>(r)] -= dot * u[static_cast<size_t>(r)];
      }
      double norm = 0;
      for (const Complex& v : z) norm += std::norm(v);
      norm = std::sqrt(norm);
      if (norm < 0.5) continue;  // the partner of an accepted vector
      for (Complex& v : z) v /= norm;
      // Its share of the energy: u^H C u.
      double energy = 0;
      for (int a = 0; a < rings; ++a) {
        Complex row = 0;
        for (int b = 0; b < rings; ++b) {
          const Complex v = a <= b ? c[static_cast<size_t>(a) * rings + b]
                                   : std::conj(c[static_cast<size_t>(b) * rings + a]);
          row += v * z[static_cast<size_t>(b)];
        }
        energy += (std::conj(z[static_cast<size_t>(a)]) * row).real();
      }
      kept += energy;
      const int j = static_cast<int>(accepted.size());
      float* out = &codec.basis_[(static_cast<size_t>(k) * options.components + j) * rings * 2];
      for (int r = 0; r < rings; ++r) {
        out[2 * r] = static_cast<float>(z[static_cast<size_t>(r)].real());
        out[2 * r + 1] = static_cast<float>(z[static_cast<size_t>(r)].imag());
      }
      accepted.push_back(std::move(z));
    }
  }
  codec.kept_energy_ = total > 0 ? kept / total : 0;
  return codec;
}

std::string RingCodec::KeyFor(const RingSpectraOptions& spectra, const RingCodecOptions& options) {
  return "brc-v1 c=" + std::to_string(options.components) +
         " rot=" + std::to_string(options.rotations) + " " + RingSpectraKey(spectra);
}

std::string RingCodec::Key() const {
  RingCodecOptions o;
  o.components = components_;
  o.rotations = rotations_;
  return KeyFor(spectra_, o);
}

std::vector<float> RingCodec::Project(const std::vector<float>& spectra) const {
  const size_t dim = static_cast<size_t>(rings_) * nk_ * 2;
  std::vector<float> out(static_cast<size_t>(code_bytes()), 0.0f);
  if (spectra.empty()) return out;
  if (spectra.size() != dim) {
    throw Error("ring codec: spectra of " + std::to_string(spectra.size()) + " floats; " + Key() +
                " takes " + std::to_string(dim));
  }
  for (int k = 0; k < nk_; ++k) {
    for (int j = 0; j < components_; ++j) {
      const float* u = &basis_[(static_cast<size_t>(k) * components_ + j) * rings_ * 2];
      // conj(u) . x
      float re = 0, im = 0;
      for (int r = 0; r < rings_; ++r) {
        const size_t at = 2 * (static_cast<size_t>(r) * nk_ + k);
        const float xr = spectra[at], xi = spectra[at + 1];
        re += u[2 * r] * xr + u[2 * r + 1] * xi;
        im += u[2 * r] * xi - u[2 * r + 1] * xr;
      }
      out[2 * (static_cast<size_t>(k) * components_ + j)] = re;
      out[2 * (static_cast<size_t>(k) * components_ + j) + 1] = im;
    }
  }
  return out;
}

RingCode RingCodec::Encode(const std::vector<float>& spectra) const {
  const std::vector<float> z = Project(spectra);
  RingCode code;
  code.bytes.assign(z.size(), 0);
  float peak = 0;
  for (float v : z) peak = std::max(peak, std::abs(v));
  if (!(peak > 0)) return code;
  code.scale = peak / 127.0f;
  for (size_t i = 0; i < z.size(); ++i) {
    code.bytes[i] = static_cast<int8_t>(std::clamp(std::lround(z[i] / code.scale), -127L, 127L));
  }
  return code;
}

void RingCodec::EncodeAll(std::span<const std::vector<float>* const> spectra, int jobs,
                          std::vector<int8_t>& bytes, std::vector<float>& scales) const {
  const size_t width = static_cast<size_t>(code_bytes());
  bytes.assign(spectra.size() * width, 0);
  scales.assign(spectra.size(), 0.0f);
  const int64_t n = static_cast<int64_t>(spectra.size());
  // Errors are collected and thrown on this thread.
  std::string error;
#pragma omp parallel for num_threads(std::max(1, jobs)) schedule(dynamic, 256)
  for (int64_t i = 0; i < n; ++i) {
    try {
      RingCode c = Encode(*spectra[static_cast<size_t>(i)]);
      std::copy(c.bytes.begin(), c.bytes.end(), bytes.begin() + static_cast<ptrdiff_t>(i * width));
      scales[static_cast<size_t>(i)] = c.scale;
    } catch (const Error& e) {
#pragma omp critical(bien_ring_codes_error)
      if (error.empty()) error = e.what();
    }
  }
  if (!error.empty()) throw Error(error);
}

void RingCodec::ScoreAll(const std::vector<float>& query, std::span<const int8_t> bytes,
                         std::span<const float> scales, std::span<float> out, int jobs) const {
  const size_t width = static_cast<size_t>(code_bytes());
  const size_t n = scales.size();
  if (query.size() != width || bytes.size() != n * width || out.size() != n) {
    throw Error("ring codec: scoring a query of " + std::to_string(query.size()) +
                " values against " + std::to_string(bytes.size()) + " code bytes, " +
                std::to_string(n) + " scales and " + std::to_string(out.size()) + " outputs (" +
                Key() + ")");
  }
  const int64_t blocks = static_cast<int64_t>((n + kScoreBlock - 1) / kScoreBlock);
  const int nk = nk_, nc = components_, na = rotations_, h0 = spectra_.min_harmonic;
#pragma omp parallel num_threads(std::max(1, jobs))
  {
    cv::Mat terms(kScoreBlock, na, CV_32F), corr;
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < blocks; ++b) {
      const size_t first = static_cast<size_t>(b) * kScoreBlock;
      const int count = static_cast<int>(std::min<size_t>(kScoreBlock, n - first));
      terms.setTo(cv::Scalar::all(0));
      for (int i = 0; i < count; ++i) {
        const int8_t* c = bytes.data() + (first + static_cast<size_t>(i)) * width;
        const float scale = 0.5f * scales[first + static_cast<size_t>(i)];
        float* t = terms.ptr<float>(i);
        for (int k = 0; k < nk; ++k) {
          // C_k = sum_j q_kj conj(c_kj); CCS packing, harmonic h at 2h - 1, 2h.
          float re = 0, im = 0;
          const float* q = &query[2 * static_cast<size_t>(k) * nc];
          const int8_t* ck = c + 2 * static_cast<size_t>(k) * nc;
          for (int j = 0; j < nc; ++j) {
            const float cr = ck[2 * j], ci = ck[2 * j + 1];
            re += q[2 * j] * cr + q[2 * j + 1] * ci;
            im += q[2 * j + 1] * cr - q[2 * j] * ci;
          }
          const int h = h0 + k;
          t[2 * h - 1] = scale * re;
          t[2 * h] = scale * im;
        }
      }
      cv::dft(terms.rowRange(0, count), corr, cv::DFT_INVERSE | cv::DFT_ROWS | cv::DFT_REAL_OUTPUT);
      for (int i = 0; i < count; ++i) {
        const float* v = corr.ptr<float>(i);
        out[first + static_cast<size_t>(i)] = *std::max_element(v, v + na);
      }
    }
  }
}

float RingCodec::Score(const std::vector<float>& query, const RingCode& code) const {
  float out = 0;
  ScoreAll(query, code.bytes, std::span<const float>(&code.scale, 1), std::span<float>(&out, 1), 1);
  return out;
}

// ---------------------------------------------------------------- index

RingCodeIndex::RingCodeIndex(RingCodec codec, int64_t trained_on)
    : codec_(std::move(codec)), trained_on_(trained_on) {}

std::unique_ptr<RingCodeIndex> RingCodeIndex::Build(
    std::span<const int64_t> ids, std::span<const std::vector<float>* const> spectra, int jobs,
    const RingSpectraOptions& options, const RingCodecOptions& codec) {
  if (ids.size() != spectra.size()) {
    throw Error("ring code index: " + std::to_string(ids.size()) + " ids for " +
                std::to_string(spectra.size()) + " spectra");
  }
  const size_t step =
      std::max<size_t>(1, spectra.size() / static_cast<size_t>(kRingCodeTrainSample));
  std::vector<const std::vector<float>*> sample;
  for (size_t i = 0; i < spectra.size(); i += step) sample.push_back(spectra[i]);
  auto index = std::make_unique<RingCodeIndex>(RingCodec::Train(sample, options, codec),
                                               static_cast<int64_t>(ids.size()));
  index->Add(ids, spectra, jobs);
  return index;
}

void RingCodeIndex::Add(std::span<const int64_t> ids,
                        std::span<const std::vector<float>* const> spectra, int jobs) {
  if (ids.size() != spectra.size()) {
    throw Error("ring code index: " + std::to_string(ids.size()) + " ids for " +
                std::to_string(spectra.size()) + " spectra");
  }
  std::unordered_set<int64_t> seen;
  for (int64_t id : ids) {
    if (!seen.insert(id).second) {
      throw Error("ring code index: id " + std::to_string(id) + " given twice");
    }
  }
  std::vector<int8_t> bytes;
  std::vector<float> scales;
  codec_.EncodeAll(spectra, jobs, bytes, scales);  // throws before any change
  const size_t width = static_cast<size_t>(codec_.code_bytes());
  const std::unique_lock lock(mutex_);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto [it, fresh] = position_.emplace(ids[i], ids_.size());
    if (fresh) {
      ids_.push_back(ids[i]);
      bytes_.resize(bytes_.size() + width);
      scales_.push_back(0);
    }
    std::copy_n(bytes.begin() + static_cast<ptrdiff_t>(i * width), width,
                bytes_.begin() + static_cast<ptrdiff_t>(it->second * width));
    scales_[it->second] = scales[i];
  }
}

size_t RingCodeIndex::Remove(std::span<const int64_t> ids) {
  const size_t width = static_cast<size_t>(codec_.code_bytes());
  const std::unique_lock lock(mutex_);
  size_t removed = 0;
  for (int64_t id : ids) {
    const auto it = position_.find(id);
    if (it == position_.end()) continue;
    // The last code moves into the gap.
    const size_t at = it->second, last = ids_.size() - 1;
    position_.erase(it);
    if (at != last) {
      ids_[at] = ids_[last];
      position_[ids_[at]] = at;
      std::copy_n(bytes_.begin() + static_cast<ptrdiff_t>(last * width), width,
                  bytes_.begin() + static_cast<ptrdiff_t>(at * width));
      scales_[at] = scales_[last];
    }
    ids_.pop_back();
    bytes_.resize(bytes_.size() - width);
    scales_.pop_back();
    ++removed;
  }
  return removed;
}

std::vector<SearchHit> RingCodeIndex::Search(const std::vector<float>& spectra, int k,
                                             int jobs) const {
  if (k < 1) throw Error("ring code index: k must be at least 1");
  const std::vector<float> query = codec_.Project(spectra);
  const std::shared_lock lock(mutex_);
  std::vector<float> scores(ids_.size());
  codec_.ScoreAll(query, bytes_, scales_, scores, jobs);
  std::vector<size_t> order(ids_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  const size_t keep = std::min(order.size(), static_cast<size_t>(k));
  auto better = [&](size_t a, size_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && ids_[a] < ids_[b]);
  };
  std::nth_element(order.begin(), order.begin() + static_cast<ptrdiff_t>(keep), order.end(),
                   better);
  order.resize(keep);
  std::sort(order.begin(), order.end(), better);
  std::vector<SearchHit> out;
  out.reserve(keep);
  for (size_t i : order) out.push_back({ids_[i], scores[i]});
  return out;
}

std::vector<std::optional<float>> RingCodeIndex::Scores(const std::vector<float>& spectra,
                                                        std::span<const int64_t> ids,
                                                        int jobs) const {
  const std::vector<float> query = codec_.Project(spectra);
  const std::shared_lock lock(mutex_);
  const size_t width = static_cast<size_t>(codec_.code_bytes());
  std::vector<size_t> held;  // indices into ids with a code
  std::vector<int8_t> bytes;
  std::vector<float> scales;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto it = position_.find(ids[i]);
    if (it == position_.end()) continue;
    held.push_back(i);
    const auto from = bytes_.begin() + static_cast<ptrdiff_t>(it->second * width);
    bytes.insert(bytes.end(), from, from + static_cast<ptrdiff_t>(width));
    scales.push_back(scales_[it->second]);
  }
  std::vector<float> scores(held.size());
  if (!held.empty()) codec_.ScoreAll(query, bytes, scales, scores, jobs);
  std::vector<std::optional<float>> out(ids.size());
  for (size_t j = 0; j < held.size(); ++j) out[held[j]] = scores[j];
  return out;
}

std::vector<int64_t> RingCodeIndex::Ids() const {
  const std::shared_lock lock(mutex_);
  std::vector<int64_t> out = ids_;
  std::sort(out.begin(), out.end());
  return out;
}

int64_t RingCodeIndex::size() const {
  const std::shared_lock lock(mutex_);
  return static_cast<int64_t>(ids_.size());
}

bool RingCodeIndex::ShouldRetrain() const {
  const int64_t n = size();
  return n >= 4 * std::max<int64_t>(trained_on_, 1) || 4 * n < trained_on_;
}

size_t RingCodeIndex::MemoryBytes() const {
  const std::shared_lock lock(mutex_);
  // Codes, scales, ids, and the id map (about 32 bytes a node + buckets).
  return bytes_.size() + scales_.size() * sizeof(float) + ids_.size() * sizeof(int64_t) +
         position_.size() * 32 + position_.bucket_count() * sizeof(void*) +
         codec_.basis_.size() * sizeof(float);
}

void RingCodeIndex::Save(const std::filesystem::path& path) const {
  std::string bytes;
  {
    const std::shared_lock lock(mutex_);
    const std::string key = codec_.Key();
    bytes.reserve(kFixedHeader + key.size() + codec_.basis_.size() * 4 + ids_.size() * 12 +
                  bytes_.size() + kChecksumLen);
    bytes.append(kMagic, sizeof(kMagic));
    PutU32(bytes, kFormatVersion);
    PutU32(bytes, static_cast<uint32_t>(key.size()));
    PutU64(bytes, ids_.size());
    PutU64(bytes, static_cast<uint64_t>(trained_on_));
    bytes += IdFingerprint(ids_);
    bytes += key;
    PutU32(bytes, static_cast<uint32_t>(codec_.components_));
    PutU32(bytes, static_cast<uint32_t>(codec_.rotations_));
    PutU32(bytes, static_cast<uint32_t>(codec_.rings_));
    PutU32(bytes, static_cast<uint32_t>(codec_.nk_));
    uint64_t energy = 0;
    std::memcpy(&energy, &codec_.kept_energy_, sizeof energy);
    PutU64(bytes, energy);
    for (float v : codec_.basis_) PutU32(bytes, FloatBits(v));
    for (int64_t id : ids_) PutU64(bytes, static_cast<uint64_t>(id));
    for (float v : scales_) PutU32(bytes, FloatBits(v));
    bytes.append(reinterpret_cast<const char*>(bytes_.data()), bytes_.size());
  }
  bytes += Sha256Hex(std::string_view(bytes));
  WriteFileAtomically(path, bytes, "ring code index");
}

RingCodeIndex::LoadResult RingCodeIndex::Load(const std::filesystem::path& path,
                                              const std::string& expected_key) {
  LoadResult result;
  auto refuse = [&](const std::string& why) {
    result.index.reset();
    result.reason = why;
    return std::move(result);
  };
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return refuse("no saved ring codes");
  std::string bytes;
  if (std::string why = ReadFileInto(path, bytes); !why.empty()) return refuse(why);
  if (std::string why = CheckFileHead(bytes, std::string_view(kMagic, sizeof(kMagic)), "ring code",
                                      kFixedHeader + kChecksumLen, kFormatVersion);
      !why.empty()) {
    return refuse(why);
  }
  const size_t body = bytes.size() - kChecksumLen;
  if (Sha256Hex(std::string_view(bytes.data(), body)) != std::string_view(bytes).substr(body)) {
    return refuse("checksum mismatch (the file is corrupt)");
  }
  const uint32_t key_len = GetU32(bytes, 12);
  const uint64_t count = GetU64(bytes, 16);
  const uint64_t trained_on = GetU64(bytes, 24);
  result.id_fingerprint = bytes.substr(32, 64);
  if (key_len > kMaxKey || kFixedHeader + key_len + 24 > body) {
    return refuse("corrupt header (key length " + std::to_string(key_len) + ")");
  }
  const std::string key = bytes.substr(kFixedHeader, key_len);
  if (key != expected_key) {
    return refuse("ring code key differs (file: \"" + key + "\", expected: \"" + expected_key +
                  "\")");
  }
  size_t at = kFixedHeader + key_len;
  RingCodec codec;
  codec.components_ = static_cast<int>(GetU32(bytes, at));
  codec.rotations_ = static_cast<int>(GetU32(bytes, at + 4));
  codec.rings_ = static_cast<int>(GetU32(bytes, at + 8));
  codec.nk_ = static_cast<int>(GetU32(bytes, at + 12));
  const uint64_t energy = GetU64(bytes, at + 16);
  std::memcpy(&codec.kept_energy_, &energy, sizeof energy);
  at += 24;
  // The key names the spectra's and codec's options: they must agree with
  // the sizes read (the checksum only proves the file is as written).
  const RingSpectraOptions spectra;
  const int nk = spectra.max_harmonic - spectra.min_harmonic + 1;
  if (codec.nk_ != nk || codec.rings_ * 2 * nk != RingSpectraDim(spectra) ||
      codec.components_ < 1 || codec.components_ > codec.rings_ || codec.Key() != expected_key) {
    return refuse("corrupt header (codec sizes disagree with the key)");
  }
  codec.spectra_ = spectra;
  const size_t basis = static_cast<size_t>(codec.nk_) * codec.components_ * codec.rings_ * 2;
  const size_t width = static_cast<size_t>(codec.code_bytes());
  if (count > body || (body - at) != basis * 4 + count * (8 + 4 + width)) {
    return refuse("truncated or corrupt (" + std::to_string(body - at) + " bytes of codes for " +
                  std::to_string(count) + " scans)");
  }
  codec.basis_.resize(basis);
  for (size_t i = 0; i < basis; ++i) codec.basis_[i] = BitsFloat(GetU32(bytes, at + 4 * i));
  at += basis * 4;
  auto index = std::make_unique<RingCodeIndex>(std::move(codec), static_cast<int64_t>(trained_on));
  index->ids_.resize(count);
  index->scales_.resize(count);
  index->position_.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    index->ids_[i] = static_cast<int64_t>(GetU64(bytes, at + 8 * i));
    if (!index->position_.emplace(index->ids_[i], i).second) {
      return refuse("corrupt (id " + std::to_string(index->ids_[i]) + " twice)");
    }
  }
  at += count * 8;
  for (size_t i = 0; i < count; ++i) index->scales_[i] = BitsFloat(GetU32(bytes, at + 4 * i));
  at += count * 4;
  index->bytes_.resize(count * width);
  std::memcpy(index->bytes_.data(), bytes.data() + at, count * width);
  if (IdFingerprint(index->ids_) != result.id_fingerprint) {
    return refuse("corrupt (the ids do not match the header's fingerprint)");
  }
  result.index = std::move(index);
  return result;
}

}  // namespace bien

#include "exchange/codec.h"

#include <openssl/rand.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>

#include "bien_exchange.pb.h"
#include "core/error.h"
#include "google/protobuf/stubs/logging.h"

namespace bien::exchange {
namespace {

static_assert(std::endian::native == std::endian::little, "the wire's int16 heights are LE");

std::string HexOf(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// 16 raw bytes of a 32-hex-digit id (already validated).
std::string BytesOf(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  return out;
}

bool HasControl(std::string_view s, bool allow_newlines) {
  for (unsigned char c : s) {
    if (c == 0x7f) return true;
    if (c < 0x20 && !(allow_newlines && (c == '\n' || c == '\t'))) return true;
  }
  return false;
}

// Checks one text field; appends the problem to `error` (first one wins).
struct Checker {
  std::string error;
  void Fail(const std::string& what) {
    if (error.empty()) error = what;
  }
  void Text(const std::string& field, const std::string& value, size_t min, size_t max,
            bool newlines = false) {
    if (value.size() < min || value.size() > max) {
      Fail(field + ": " + std::to_string(value.size()) + " bytes (allowed " + std::to_string(min) +
           ".." + std::to_string(max) + ")");
    } else if (HasControl(value, newlines)) {
      Fail(field + ": holds a control character");
    }
  }
  void OptText(const std::string& field, const std::optional<std::string>& value) {
    if (value) Text(field, *value, 1, kMaxRefChars);
  }
  void Id(const std::string& field, const std::string& value) {
    if (!IsHexId(value)) Fail(field + ": not a 16-byte id");
  }
  void Finite(const std::string& field, double v, double lo, double hi) {
    if (!std::isfinite(v) || v < lo || v > hi) {
      Fail(field + ": " + std::to_string(v) + " outside " + std::to_string(lo) + ".." +
           std::to_string(hi));
    }
  }
  void Range(const std::string& field, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      Fail(field + ": " + std::to_string(v) + " outside " + std::to_string(lo) + ".." +
           std::to_string(hi));
    }
  }
};

constexpr int64_t kMinTimeMs = 1'000'000'000'000;   // 2001
constexpr int64_t kMaxTimeMs = 32'503'680'000'000;  // year 3000
constexpr double kMaxScore = 1e9;

void CheckHello(Checker& c, const std::string& name, const Hello& h) {
  c.Text(name + ".node_name", h.node_name, 1, kMaxRefChars);
  if (h.country.size() != 2 || !std::isupper(static_cast<unsigned char>(h.country[0])) ||
      !std::isupper(static_cast<unsigned char>(h.country[1]))) {
    c.Fail(name + ".country: not an ISO 3166-1 alpha-2 code");
  }
  c.Range(name + ".protocol_version", h.protocol_version, 1, 1000);
  c.Range(name + ".capabilities", static_cast<int64_t>(h.capabilities.size()), 0, 32);
  for (const std::string& cap : h.capabilities) c.Text(name + ".capabilities", cap, 1, 64);
}

void CheckCc(Checker& c, const ClassCharacteristics& cc) {
  c.OptText("correlation_request.cc.calibre", cc.calibre);
  c.OptText("correlation_request.cc.firing_pin", cc.firing_pin);
  c.OptText("correlation_request.cc.breech_face", cc.breech_face);
  if (cc.lands) c.Range("correlation_request.cc.lands", *cc.lands, 1, 64);
}

void CheckRequest(Checker& c, const CorrelationRequest& r) {
  const std::string n = "correlation_request";
  c.Id(n + ".request_id", r.request_id);
  CheckCc(c, r.cc);
  c.Text(n + ".descriptor_key", r.descriptor_key, 1, kMaxRefChars);
  c.Range(n + ".descriptor", static_cast<int64_t>(r.descriptor.size()), 1, kMaxDescriptorDim);
  for (float v : r.descriptor) {
    if (!std::isfinite(v)) {
      c.Fail(n + ".descriptor: a value is not finite");
      break;
    }
  }
  if (r.fine) {
    c.Range(n + ".fine", static_cast<int64_t>(r.fine->size()), 16,
            static_cast<int64_t>(kMaxFineBytes));
    if (c.error.empty() && r.fine->compare(0, 8, "BIENCMCF") != 0) {
      c.Fail(n + ".fine: not compact CMC features (no BIENCMCF header)");
    }
  }
  c.Text(n + ".case_ref", r.case_ref, 1, kMaxRefChars);
  c.Text(n + ".exhibit_ref", r.exhibit_ref, 1, kMaxRefChars);
  c.Range(n + ".top", r.top, 1, kMaxCandidates);
  c.Range(n + ".coarse_k", r.coarse_k, 1, kMaxCandidates);
  c.Range(n + ".expires_ms", r.expires_ms, kMinTimeMs, kMaxTimeMs);
  if (r.ring_key.empty()) {
    if (!r.ring_spectra.empty() || !r.ring_offsets_um.empty() || r.ring_pool != 0) {
      c.Fail(n + ".ring_spectra: given without a ring_key");
    }
    return;
  }
  c.Text(n + ".ring_key", r.ring_key, 1, kMaxRefChars);
  c.Range(n + ".ring_spectra", static_cast<int64_t>(r.ring_spectra.size()), 1, kMaxRingCentres);
  c.Range(n + ".ring_offsets_um", static_cast<int64_t>(r.ring_offsets_um.size()),
          static_cast<int64_t>(r.ring_spectra.size()), static_cast<int64_t>(r.ring_spectra.size()));
  c.Range(n + ".ring_pool", r.ring_pool, 1, kMaxRingPool);
  if (!r.ring_spectra.empty()) {
    c.Range(n + ".ring_dim", static_cast<int64_t>(r.ring_spectra.front().size()), 1, kMaxRingDim);
  }
  for (const std::vector<float>& s : r.ring_spectra) {
    if (s.size() != r.ring_spectra.front().size()) {
      c.Fail(n + ".ring_spectra: centres of different lengths");
      break;
    }
    for (float v : s) {
      if (!std::isfinite(v)) {
        c.Fail(n + ".ring_spectra: a value is not finite");
        break;
      }
    }
  }
  for (const auto& [x, y] : r.ring_offsets_um) {
    c.Finite(n + ".ring_offsets_um", x, -10000, 10000);
    c.Finite(n + ".ring_offsets_um", y, -10000, 10000);
  }
}

void CheckResult(Checker& c, const CorrelationResult& r) {
  const std::string n = "correlation_result";
  c.Id(n + ".request_id", r.request_id);
  if (r.status != "ok" && r.status != "refused" && r.status != "error") {
    c.Fail(n + ".status: not ok, refused or error");
  }
  c.Text(n + ".detail", r.detail, 0, kMaxNoteChars, true);
  c.Text(n + ".partition", r.partition, 0, 2 * kMaxRefChars);
  c.Range(n + ".partition_size", r.partition_size, 0, int64_t{1} << 40);
  c.Range(n + ".candidates", static_cast<int64_t>(r.candidates.size()), 0, kMaxCandidates);
  for (const Candidate& k : r.candidates) {
    c.Text(n + ".candidate.case_ref", k.case_ref, 1, kMaxRefChars);
    c.Text(n + ".candidate.exhibit_ref", k.exhibit_ref, 1, kMaxRefChars);
    c.Range(n + ".candidate.coarse_rank", k.coarse_rank, 1, 1'000'000);
    c.Finite(n + ".candidate.coarse_score", k.coarse_score, -kMaxScore, kMaxScore);
    if (k.fine_score) c.Finite(n + ".candidate.fine_score", *k.fine_score, -kMaxScore, kMaxScore);
    if (k.strength) c.Finite(n + ".candidate.strength", *k.strength, 0, 1);

    c.Text(n + ".candidate.method", k.method, 0, 64);
    if (!c.error.empty()) break;
  }
  c.Finite(n + ".coarse_ms", r.coarse_ms, 0, 1e9);
  c.Finite(n + ".fine_ms", r.fine_ms, 0, 1e9);
}

void CheckNotice(Checker& c, const HitNotice& h) {
  const std::string n = "hit_notice";
  c.Id(n + ".hit_id", h.hit_id);
  c.Text(n + ".sender_case_ref", h.sender_case_ref, 1, kMaxRefChars);
  c.Text(n + ".sender_exhibit_ref", h.sender_exhibit_ref, 1, kMaxRefChars);
  c.Text(n + ".receiver_case_ref", h.receiver_case_ref, 1, kMaxRefChars);
  c.Text(n + ".receiver_exhibit_ref", h.receiver_exhibit_ref, 1, kMaxRefChars);
  c.Text(n + ".confirmed_by", h.confirmed_by, 1, kMaxRefChars);
  c.Range(n + ".confirmed_at_ms", h.confirmed_at_ms, kMinTimeMs, kMaxTimeMs);
  c.Text(n + ".note", h.note, 0, kMaxNoteChars, true);
  c.Finite(n + ".fine_score", h.fine_score, -kMaxScore, kMaxScore);
  c.Text(n + ".method", h.method, 0, 64);
}

struct BodyChecker {
  Checker& c;
  void operator()(const Hello& h) { CheckHello(c, "hello", h); }
  void operator()(const Welcome& h) { CheckHello(c, "welcome", h); }
  void operator()(const CorrelationRequest& r) { CheckRequest(c, r); }
  void operator()(const CorrelationResult& r) { CheckResult(c, r); }
  void operator()(const HitNotice& h) { CheckNotice(c, h); }
  void operator()(const Ack& a) { c.Id("ack.acked_id", a.acked_id); }
  void operator()(const Heartbeat& h) {
    c.Range("heartbeat.queue_depth", h.queue_depth, 0, int64_t{1} << 40);
  }
};

// --- to the wire ----------------------------------------------------------

void PutHello(const Hello& h, wire::Hello* w) {
  w->set_node_name(h.node_name);
  w->set_country(h.country);
  w->set_protocol_version(h.protocol_version);
  for (const auto& cap : h.capabilities) w->add_capabilities(cap);
}

struct BodyWriter {
  wire::Envelope& e;
  void operator()(const Hello& h) { PutHello(h, e.mutable_hello()); }
  void operator()(const Welcome& h) { PutHello(h, e.mutable_welcome()); }
  void operator()(const CorrelationRequest& r) {
    wire::CorrelationRequest* w = e.mutable_correlation_request();
    w->set_request_id(BytesOf(r.request_id));
    w->set_exhibit_kind(ToString(r.kind));
    wire::ClassCharacteristics* cc = w->mutable_cc();
    if (r.cc.calibre) cc->set_calibre(*r.cc.calibre);
    if (r.cc.firing_pin) cc->set_firing_pin(*r.cc.firing_pin);
    if (r.cc.breech_face) cc->set_breech_face(*r.cc.breech_face);
    if (r.cc.lands) cc->set_lands(static_cast<uint32_t>(*r.cc.lands));
    if (r.cc.twist) cc->set_twist(ToString(*r.cc.twist));
    w->set_descriptor_key(r.descriptor_key);
    w->mutable_coarse_vector()->Add(r.descriptor.begin(), r.descriptor.end());
    if (r.fine) w->set_fine(*r.fine);
    w->set_case_ref(r.case_ref);
    w->set_exhibit_ref(r.exhibit_ref);
    w->set_top(static_cast<uint32_t>(r.top));
    w->set_coarse_k(static_cast<uint32_t>(r.coarse_k));
    w->set_expires_ms(r.expires_ms);
    if (!r.ring_key.empty()) {
      w->set_ring_key(r.ring_key);
      w->set_ring_dim(static_cast<uint32_t>(r.ring_spectra.front().size()));
      for (const std::vector<float>& s : r.ring_spectra) {
        w->mutable_ring_spectra()->Add(s.begin(), s.end());
      }
      for (const auto& [x, y] : r.ring_offsets_um) {
        w->add_ring_offsets_um(static_cast<float>(x));
        w->add_ring_offsets_um(static_cast<float>(y));
      }
      w->set_ring_pool(static_cast<uint32_t>(r.ring_pool));
    }
  }
  void operator()(const CorrelationResult& r) {
    wire::CorrelationResult* w = e.mutable_correlation_result();
    w->set_request_id(BytesOf(r.request_id));
    w->set_status(r.status);
    w->set_detail(r.detail);
    w->set_partition(r.partition);
    w->set_partition_size(static_cast<uint64_t>(r.partition_size));
    for (const Candidate& k : r.candidates) {
      wire::Candidate* c = w->add_candidates();
      c->set_case_ref(k.case_ref);
      c->set_exhibit_ref(k.exhibit_ref);
      c->set_coarse_rank(static_cast<uint32_t>(k.coarse_rank));
      c->set_coarse_score(k.coarse_score);
      if (k.fine_score) c->set_fine_score(*k.fine_score);
      if (k.strength) c->set_strength(*k.strength);
      c->set_method(k.method);
    }
    w->set_coarse_ms(r.coarse_ms);
    w->set_fine_ms(r.fine_ms);
  }
  void operator()(const HitNotice& h) {
    wire::HitNotice* w = e.mutable_hit_notice();
    w->set_hit_id(BytesOf(h.hit_id));
    w->set_sender_case_ref(h.sender_case_ref);
    w->set_sender_exhibit_ref(h.sender_exhibit_ref);
    w->set_receiver_case_ref(h.receiver_case_ref);
    w->set_receiver_exhibit_ref(h.receiver_exhibit_ref);
    w->set_confirmed_by(h.confirmed_by);
    w->set_confirmed_at_ms(h.confirmed_at_ms);
    w->set_note(h.note);
    w->set_fine_score(h.fine_score);
    w->set_method(h.method);
  }
  void operator()(const Ack& a) { e.mutable_ack()->set_acked_id(BytesOf(a.acked_id)); }
  void operator()(const Heartbeat& h) {
    e.mutable_heartbeat()->set_queue_depth(static_cast<uint32_t>(h.queue_depth));
  }
};

// --- from the wire --------------------------------------------------------

Hello GetHello(const wire::Hello& w) {
  Hello h;
  h.node_name = w.node_name();
  h.country = w.country();
  h.protocol_version = w.protocol_version();
  h.capabilities.assign(w.capabilities().begin(), w.capabilities().end());
  return h;
}

// An id field: 16 bytes become 32 hex digits; anything else an invalid text.
std::string IdOf(const std::string& bytes) { return bytes.size() == 16 ? HexOf(bytes) : "?"; }

template <typename T>
std::optional<T> Opt(bool has, const T& value) {
  return has ? std::optional<T>(value) : std::nullopt;
}

std::optional<Body> GetBody(const wire::Envelope& e, std::string* error) {
  using W = wire::Envelope;
  switch (e.body_case()) {
    case W::kHello:
      return GetHello(e.hello());
    case W::kWelcome: {
      Welcome w;
      static_cast<Hello&>(w) = GetHello(e.welcome());
      return w;
    }
    case W::kCorrelationRequest: {
      const wire::CorrelationRequest& w = e.correlation_request();
      CorrelationRequest r;
      r.request_id = IdOf(w.request_id());
      const auto kind = ParseExhibitKind(w.exhibit_kind());
      if (!kind) {
        *error = "correlation_request.exhibit_kind: unknown kind";
        return std::nullopt;
      }
      r.kind = *kind;
      const wire::ClassCharacteristics& cc = w.cc();
      r.cc.calibre = Opt(cc.has_calibre(), cc.calibre());
      r.cc.firing_pin = Opt(cc.has_firing_pin(), cc.firing_pin());
      r.cc.breech_face = Opt(cc.has_breech_face(), cc.breech_face());
      if (cc.has_lands()) {
        if (cc.lands() > 64) {
          *error = "correlation_request.cc.lands: more than 64";
          return std::nullopt;
        }
        r.cc.lands = static_cast<int>(cc.lands());
      }
      if (cc.has_twist()) {
        r.cc.twist = ParseTwist(cc.twist());
        if (!r.cc.twist) {
          *error = "correlation_request.cc.twist: not left or right";
          return std::nullopt;
        }
      }
      r.descriptor_key = w.descriptor_key();
      r.descriptor.assign(w.coarse_vector().begin(), w.coarse_vector().end());
      if (!w.fine().empty()) r.fine = w.fine();
      r.case_ref = w.case_ref();
      r.exhibit_ref = w.exhibit_ref();
      r.top = static_cast<int>(std::min<uint32_t>(w.top(), 1u << 30));
      r.coarse_k = static_cast<int>(std::min<uint32_t>(w.coarse_k(), 1u << 30));
      r.expires_ms = w.expires_ms();
      r.ring_key = w.ring_key();
      r.ring_pool = static_cast<int>(std::min<uint32_t>(w.ring_pool(), 1u << 30));
      if (w.ring_spectra_size() > 0 || w.ring_offsets_um_size() > 0) {
        const int dim = static_cast<int>(std::min<uint32_t>(w.ring_dim(), 1u << 30));
        if (dim < 1 || w.ring_spectra_size() % dim != 0 ||
            w.ring_offsets_um_size() != 2 * (w.ring_spectra_size() / dim)) {
          *error =
              "correlation_request.ring_spectra: not ring_dim floats and two offsets per centre";
          return std::nullopt;
        }
        for (int i = 0; i < w.ring_spectra_size(); i += dim) {
          r.ring_spectra.emplace_back(w.ring_spectra().begin() + i,
                                      w.ring_spectra().begin() + i + dim);
          r.ring_offsets_um.emplace_back(w.ring_offsets_um(2 * (i / dim)),
                                         w.ring_offsets_um(2 * (i / dim) + 1));
        }
      }
      return r;
    }
    case W::kCorrelationResult: {
      const wire::CorrelationResult& w = e.correlation_result();
      CorrelationResult r;
      r.request_id = IdOf(w.request_id());
      r.status = w.status();
      r.detail = w.detail();
      r.partition = w.partition();
      r.partition_size = static_cast<int64_t>(std::min<uint64_t>(w.partition_size(), 1ull << 62));
      if (w.candidates_size() > kMaxCandidates) {
        *error = "correlation_result.candidates: " + std::to_string(w.candidates_size()) +
                 " (at most " + std::to_string(kMaxCandidates) + ")";
        return std::nullopt;
      }
      for (const wire::Candidate& c : w.candidates()) {
        Candidate k;
        k.case_ref = c.case_ref();
        k.exhibit_ref = c.exhibit_ref();
        k.coarse_rank = static_cast<int>(std::min<uint32_t>(c.coarse_rank(), 1u << 30));
        k.coarse_score = c.coarse_score();
        k.fine_score = Opt(c.has_fine_score(), c.fine_score());
        k.strength = Opt(c.has_strength(), c.strength());
        k.method = c.method();
        r.candidates.push_back(std::move(k));
      }
      r.coarse_ms = w.coarse_ms();
      r.fine_ms = w.fine_ms();
      return r;
    }
    case W::kHitNotice: {
      const wire::HitNotice& w = e.hit_notice();
      HitNotice h;
      h.hit_id = IdOf(w.hit_id());
      h.sender_case_ref = w.sender_case_ref();
      h.sender_exhibit_ref = w.sender_exhibit_ref();
      h.receiver_case_ref = w.receiver_case_ref();
      h.receiver_exhibit_ref = w.receiver_exhibit_ref();
      h.confirmed_by = w.confirmed_by();
      h.confirmed_at_ms = w.confirmed_at_ms();
      h.note = w.note();
      h.fine_score = w.fine_score();
      h.method = w.method();
      return h;
    }
    case W::kAck:
      return Ack{IdOf(e.ack().acked_id())};
    case W::kHeartbeat:
      return Heartbeat{static_cast<int64_t>(e.heartbeat().queue_depth())};
    case W::BODY_NOT_SET:
      break;
  }
  *error = "no message body (or a type this node does not know)";
  return std::nullopt;
}

}  // namespace

const char* ToString(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "hello";
    case MessageType::kWelcome:
      return "welcome";
    case MessageType::kCorrelationRequest:
      return "correlation_request";
    case MessageType::kCorrelationResult:
      return "correlation_result";
    case MessageType::kHitNotice:
      return "hit_notice";
    case MessageType::kAck:
      return "ack";
    case MessageType::kHeartbeat:
      return "heartbeat";
  }
  return "?";
}

MessageType Message::type() const { return static_cast<MessageType>(body.index()); }

bool IsZ85Key(std::string_view text) {
  static constexpr std::string_view kAlphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  if (text.size() != 40) return false;
  for (char c : text) {
    if (kAlphabet.find(c) == std::string_view::npos) return false;
  }
  return true;
}

bool IsHexId(std::string_view text) {
  if (text.size() != 32) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string NewId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw Error("no random bytes for a message id");
  return HexOf(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Message NewMessage(const std::string& sender, Body body) {
  Message m;
  m.id = NewId();
  m.sender = sender;
  m.time_ms = NowMs();
  m.body = std::move(body);
  return m;
}

std::string Validate(const Message& m) {
  Checker c;
  if (m.version != kProtocolVersion) {
    c.Fail("protocol version " + std::to_string(m.version) + " (this node speaks " +
           std::to_string(kProtocolVersion) + ")");
    return c.error;
  }
  c.Id("id", m.id);
  if (!IsZ85Key(m.sender)) c.Fail("sender: not a Z85 CURVE public key");
  c.Range("time_ms", m.time_ms, kMinTimeMs, kMaxTimeMs);
  if (!c.error.empty()) return c.error;
  std::visit(BodyChecker{c}, m.body);
  return c.error;
}

std::string Encode(const Message& m) {
  if (const std::string problem = Validate(m); !problem.empty()) {
    throw Error("cannot send a " + std::string(ToString(m.type())) + " message: " + problem);
  }
  wire::Envelope e;
  e.set_version(m.version);
  e.set_id(BytesOf(m.id));
  e.set_sender(m.sender);
  e.set_time_ms(m.time_ms);
  std::visit(BodyWriter{e}, m.body);
  std::string out;
  if (!e.SerializeToString(&out)) throw Error("cannot serialise a message");
  if (out.size() > kMaxMessageBytes) {
    throw Error("cannot send a " + std::string(ToString(m.type())) + " message of " +
                std::to_string(out.size()) + " bytes (at most " + std::to_string(kMaxMessageBytes) +
                ")");
  }
  return out;
}

Decoded Decode(std::string_view bytes) {
  Decoded d;
  if (bytes.size() > kMaxMessageBytes) {
    d.error = "message of " + std::to_string(bytes.size()) + " bytes (at most " +
              std::to_string(kMaxMessageBytes) + ")";
    return d;
  }
  if (bytes.empty()) {
    d.error = "empty message";
    return d;
  }
  // Protobuf would print its own complaint (e.g. invalid UTF-8) to stderr for
  // every bad message a peer sends; the caller logs our reason instead.
  static std::once_flag quiet;
  std::call_once(quiet, [] { google::protobuf::SetLogHandler(nullptr); });
  wire::Envelope e;
  if (!e.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    d.error = "not a protocol message (truncated or malformed)";
    return d;
  }
  if (e.version() != kProtocolVersion) {
    d.error = "protocol version " + std::to_string(e.version()) + " (this node speaks " +
              std::to_string(kProtocolVersion) + ")";
    return d;
  }
  Message m;
  m.version = e.version();
  m.id = IdOf(e.id());
  m.sender = e.sender();
  m.time_ms = e.time_ms();
  std::string error;
  std::optional<Body> body = GetBody(e, &error);
  if (!body) {
    d.error = error;
    return d;
  }
  m.body = std::move(*body);
  if (std::string problem = Validate(m); !problem.empty()) {
    d.error = std::move(problem);
    return d;
  }
  d.message = std::move(m);
  return d;
}

}  // namespace bien::exchange

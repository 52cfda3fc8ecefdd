// The bien exchange protocol's one codec (docs/PROTOCOL.md): plain structs
// for every message, Encode to the wire and Decode from it. Decode never
// trusts its input: a message that does not parse, is larger than
// kMaxMessageBytes, has another protocol version or breaks any field limit is
// refused with a reason, never asserted on. The wire format is Protocol
// Buffers (exchange/bien_exchange.proto), kept out of this header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "storage/store.h"

namespace bien::exchange {

inline constexpr uint32_t kProtocolVersion = 1;
// Largest message accepted or sent (a correlation request with the largest
// fine features is just over 1 MiB); sockets drop larger ones before they are
// read.
inline constexpr size_t kMaxMessageBytes = 4u << 20;
inline constexpr int kMaxCandidates = 1000;
inline constexpr int kMaxDescriptorDim = 4096;
// Compact CMC features (matching/cmc.h EncodeCmcFeatures): 29-38 KB for a
// Fadul breech face; the receiver decodes them with DecodeCmcFeatures, which
// checks every field.
inline constexpr size_t kMaxFineBytes = 1u << 20;
// A request's ring query (the ring stage, docs/SEARCH.md): 49 centres x 1890
// floats (brs-v1) is 370 KB; at most these centres, floats per centre and
// ring pool.
inline constexpr int kMaxRingCentres = 169;
inline constexpr int kMaxRingDim = 4096;
inline constexpr int kMaxRingPool = 20000;
inline constexpr size_t kMaxRefChars = 128;  // case, exhibit, node names, calibres
inline constexpr size_t kMaxNoteChars = 2000;

enum class MessageType {
  kHello,
  kWelcome,
  kCorrelationRequest,
  kCorrelationResult,
  kHitNotice,
  kAck,
  kHeartbeat,
};
const char* ToString(MessageType type);  // "hello", "welcome", "correlation_request", ...

struct Hello {
  std::string node_name;
  std::string country;  // ISO 3166-1 alpha-2
  uint32_t protocol_version = kProtocolVersion;
  std::vector<std::string> capabilities;
};
struct Welcome : Hello {};

struct CorrelationRequest {
  std::string request_id;  // 32 hex digits
  ExhibitKind kind = ExhibitKind::kCartridgeCase;
  ClassCharacteristics cc;
  std::string descriptor_key;
  std::vector<float> descriptor;
  // EncodeCmcFeatures bytes of the query; none: coarse-only answer wanted.
  std::optional<std::string> fine;
  std::string case_ref;  // the requesting node's
  std::string exhibit_ref;
  int top = 20;
  int coarse_k = 100;
  int64_t expires_ms = 0;
  // The query's ring spectra around its centre offsets (matching/descriptor.h
  // RingQuery under ring_key) and how many coarse candidates the peer should
  // re-rank by them; empty ring_key: none (the peer ranks by cosine).
  std::string ring_key;
  std::vector<std::vector<float>> ring_spectra;
  std::vector<std::pair<double, double>> ring_offsets_um;
  int ring_pool = 0;
};

struct Candidate {
  std::string case_ref;
  std::string exhibit_ref;
  int coarse_rank = 0;  // 1-based
  double coarse_score = 0;
  std::optional<double> fine_score;
  std::optional<double> strength;
  std::string method;  // empty when there is no fine score
};

struct CorrelationResult {
  std::string request_id;     // 32 hex digits
  std::string status = "ok";  // "ok" | "refused" | "error"
  std::string detail;
  std::string partition;
  int64_t partition_size = 0;
  std::vector<Candidate> candidates;
  double coarse_ms = 0;
  double fine_ms = 0;
};

struct HitNotice {
  std::string hit_id;  // 32 hex digits
  std::string sender_case_ref;
  std::string sender_exhibit_ref;
  std::string receiver_case_ref;
  std::string receiver_exhibit_ref;
  std::string confirmed_by;
  int64_t confirmed_at_ms = 0;
  std::string note;
  double fine_score = 0;
  std::string method;
};

struct Ack {
  std::string acked_id;  // 32 hex digits
};

struct Heartbeat {
  int64_t queue_depth = 0;
};

using Body =
    std::variant<Hello, Welcome, CorrelationRequest, CorrelationResult, HitNotice, Ack, Heartbeat>;

struct Message {
  uint32_t version = kProtocolVersion;
  std::string id;      // 32 hex digits (16 bytes on the wire)
  std::string sender;  // the sender's CURVE public key, Z85, 40 characters
  int64_t time_ms = 0;
  Body body;

  MessageType type() const;
};

// A new message from `sender` (a Z85 public key): a fresh random id and the
// current time.
Message NewMessage(const std::string& sender, Body body);
// 32 random hex digits (OpenSSL RAND_bytes).
std::string NewId();
int64_t NowMs();

// "" when every field is within the limits of docs/PROTOCOL.md, else the
// first problem found ("correlation_request.descriptor: 5000 values (at most
// 4096)").
std::string Validate(const Message& message);

// Throws bien::Error when the message breaks a limit (a caller's bug or bad
// local data): nothing invalid is ever sent.
std::string Encode(const Message& message);

struct Decoded {
  std::optional<Message> message;
  std::string error;  // why it was refused, when message is empty
};
// Parses and validates bytes from the network. Never throws for bad input.
Decoded Decode(std::string_view bytes);

// True for 40 characters of the Z85 alphabet (a CURVE key as text).
bool IsZ85Key(std::string_view text);
bool IsHexId(std::string_view text);  // 32 lower-case hex digits

}  // namespace bien::exchange

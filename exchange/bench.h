// Measurements behind `bien bench exchange` (docs/PERFORMANCE.md): the
// transport as the node uses it (CURVE ROUTER <- DEALER over TCP loopback,
// ZAP allowlist), with and without the codec, and reliable delivery between
// two nodes through their stores.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace bien::exchange {

struct ThroughputResult {
  int64_t messages = 0;
  int64_t bytes = 0;  // payload bytes
  double seconds = 0;
  double MessagesPerSecond() const { return seconds > 0 ? messages / seconds : 0; }
  double MegabytesPerSecond() const { return seconds > 0 ? bytes / seconds / 1e6 : 0; }
};

// `count` frames of `size` bytes from a DEALER to a ROUTER on
// tcp://127.0.0.1:* with CURVE (both sides' keys fresh, the client's key
// admitted by a ZAP handler), timed from the first send to the last receive.
ThroughputResult BenchCurveTransport(int64_t count, size_t size);

// As above, each message a hit notice built, encoded (NewMessage + Encode),
// sent, received and decoded (Decode, with every bounds check).
ThroughputResult BenchCodecMessages(int64_t count);

// `count` hit notices queued in node A's outbox, delivered by two running
// nodes (A and B, in this process, in `work`) to B's store, each one alert,
// all acknowledged: reliable delivery as the federation does it.
ThroughputResult BenchReliableDelivery(const std::filesystem::path& work, int64_t count);

}  // namespace bien::exchange

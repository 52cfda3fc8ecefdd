// The exchange codec: every message type round-trips; bytes from the network
// that are malformed, truncated, oversized, of another version or out of
// bounds are refused with a reason and never crash (seeded fuzzing).
#include "exchange/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "tests/test_util.h"

namespace bien::exchange {
namespace {

using testing::Contains;

const std::string kKey = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

CorrelationRequest SampleRequest() {
  CorrelationRequest r;
  r.request_id = NewId();
  r.cc.calibre = "9mm Luger";
  r.cc.firing_pin = "circular";
  r.descriptor_key = "bfd-v1/64x64/pca128";
  for (int i = 0; i < 128; ++i) r.descriptor.push_back(std::sin(static_cast<float>(i)));
  // The codec carries compact CMC features as bytes (the receiver decodes
  // them with DecodeCmcFeatures, tested in matching/cmc_test.cpp).
  r.fine = std::string("BIENCMCF") + std::string(200, '\x07');
  r.case_ref = "2026-BG-0042";
  r.exhibit_ref = "E1";
  r.top = 20;
  r.coarse_k = 100;
  r.expires_ms = NowMs() + 10000;
  return r;
}

CorrelationResult SampleResult() {
  CorrelationResult r;
  r.request_id = NewId();
  r.partition = "cartridge_case|9mm Luger";
  r.partition_size = 12345;
  for (int i = 0; i < 5; ++i) {
    Candidate c;
    c.case_ref = "BA-2026-" + std::to_string(i);
    c.exhibit_ref = "E" + std::to_string(i);
    c.coarse_rank = i + 1;
    c.coarse_score = 0.9 - i * 0.1;
    if (i < 3) {
      c.fine_score = 20.0 - i;
      c.strength = 0.001 * i;
      c.method = "cmc-v1";
    }
    r.candidates.push_back(c);
  }
  r.coarse_ms = 1.5;
  r.fine_ms = 800;
  return r;
}

HitNotice SampleNotice() {
  HitNotice h;
  h.hit_id = NewId();
  h.sender_case_ref = "2026-BG-0042";
  h.sender_exhibit_ref = "E1";
  h.receiver_case_ref = "BA-2026-7";
  h.receiver_exhibit_ref = "E3";
  h.confirmed_by = "Ana Petrovic";
  h.confirmed_at_ms = NowMs();
  h.note = "same firearm\nchecked twice";
  h.fine_score = 18.5;
  h.method = "cmc-v1";
  return h;
}

std::vector<Message> Samples() {
  Hello hello{"RS-NFC Belgrade", "RS", 1, {"search/cartridge_case", "hit_notice"}};
  Welcome welcome;
  static_cast<Hello&>(welcome) = hello;
  CorrelationRequest with_rings = SampleRequest();
  with_rings.ring_key = "brs-v1";
  with_rings.ring_spectra = {{0.5f, -0.25f, 0.125f}, {0.0f, 1.0f, -1.0f}};
  with_rings.ring_offsets_um = {{0, 0}, {25, -25}};
  with_rings.ring_pool = 1000;
  return {NewMessage(kKey, hello),           NewMessage(kKey, welcome),
          NewMessage(kKey, SampleRequest()), NewMessage(kKey, with_rings),
          NewMessage(kKey, SampleResult()),  NewMessage(kKey, SampleNotice()),
          NewMessage(kKey, Ack{NewId()}),    NewMessage(kKey, Heartbeat{3})};
}

TEST(ExchangeCodec, EveryMessageTypeRoundTrips) {
  for (const Message& m : Samples()) {
    const std::string bytes = Encode(m);
    const Decoded d = Decode(bytes);
    ASSERT_TRUE(d.message) << ToString(m.type()) << ": " << d.error;
    EXPECT_EQ(d.message->type(), m.type());
    EXPECT_EQ(d.message->id, m.id);
    EXPECT_EQ(d.message->sender, m.sender);
    EXPECT_EQ(d.message->time_ms, m.time_ms);
    // Encoding the decoded message gives the same bytes.
    EXPECT_EQ(Encode(*d.message), bytes) << ToString(m.type());
  }
  const Message req = NewMessage(kKey, SampleRequest());
  const auto back = std::get<CorrelationRequest>(Decode(Encode(req)).message->body);
  const auto& sent = std::get<CorrelationRequest>(req.body);
  EXPECT_EQ(back.descriptor, sent.descriptor);
  EXPECT_EQ(back.fine, sent.fine);
  EXPECT_EQ(back.cc.calibre, "9mm Luger");
  EXPECT_FALSE(back.cc.lands.has_value());
  const Message res = NewMessage(kKey, SampleResult());
  const auto got = std::get<CorrelationResult>(Decode(Encode(res)).message->body);
  ASSERT_EQ(got.candidates.size(), 5u);
  EXPECT_EQ(got.candidates[1].fine_score, 19.0);
  EXPECT_FALSE(got.candidates[4].fine_score.has_value());
}

TEST(ExchangeCodec, EncodeRefusesWhatBreaksALimit) {
  CorrelationRequest r = SampleRequest();
  r.descriptor.push_back(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(Contains(testing::ErrorOf([&] { Encode(NewMessage(kKey, r)); }),
                       "correlation_request.descriptor: a value is not finite"));
  HitNotice h = SampleNotice();
  h.confirmed_by = "";
  EXPECT_TRUE(
      Contains(testing::ErrorOf([&] { Encode(NewMessage(kKey, h)); }), "hit_notice.confirmed_by"));
  EXPECT_TRUE(Contains(testing::ErrorOf([&] { Encode(NewMessage("short", Heartbeat{})); }),
                       "sender: not a Z85"));
}

// The ring query of a request (the peers' ring stage): centres of ring_dim
// floats and two offsets each, round trip; what breaks its shape is refused.
TEST(ExchangeCodec, RequestsCarryTheRingQueryAndRefuseABrokenOne) {
  CorrelationRequest r = SampleRequest();
  r.ring_key = "brs-v1 px=25";
  for (int c = 0; c < 3; ++c) {
    std::vector<float> s;
    for (int i = 0; i < 10; ++i) s.push_back(std::cos(static_cast<float>(c * 10 + i)));
    r.ring_spectra.push_back(s);
    r.ring_offsets_um.emplace_back(25.0 * c, -25.0);
  }
  r.ring_pool = 1000;
  const auto back = std::get<CorrelationRequest>(Decode(Encode(NewMessage(kKey, r))).message->body);
  EXPECT_EQ(back.ring_key, r.ring_key);
  EXPECT_EQ(back.ring_spectra, r.ring_spectra);
  EXPECT_EQ(back.ring_offsets_um, r.ring_offsets_um);
  EXPECT_EQ(back.ring_pool, 1000);
  // Without a key, nothing of it is sent or accepted.
  const auto plain =
      std::get<CorrelationRequest>(Decode(Encode(NewMessage(kKey, SampleRequest()))).message->body);
  EXPECT_TRUE(plain.ring_key.empty());
  EXPECT_TRUE(plain.ring_spectra.empty());
  auto refused = [&](const std::function<void(CorrelationRequest&)>& spoil) {
    CorrelationRequest bad = r;
    spoil(bad);
    return testing::ErrorOf([&] { Encode(NewMessage(kKey, bad)); });
  };
  EXPECT_TRUE(Contains(refused([](CorrelationRequest& b) { b.ring_key.clear(); }),
                       "ring_spectra: given without a ring_key"));
  EXPECT_TRUE(Contains(refused([](CorrelationRequest& b) { b.ring_spectra[1].pop_back(); }),
                       "centres of different lengths"));
  EXPECT_TRUE(Contains(refused([](CorrelationRequest& b) {
                         b.ring_spectra[2][3] = std::numeric_limits<float>::infinity();
                       }),
                       "ring_spectra: a value is not finite"));
  EXPECT_TRUE(Contains(refused([](CorrelationRequest& b) { b.ring_offsets_um.pop_back(); }),
                       "ring_offsets_um"));
  EXPECT_TRUE(Contains(refused([](CorrelationRequest& b) { b.ring_pool = 0; }), "ring_pool"));
  EXPECT_TRUE(Contains(refused([](CorrelationRequest& b) { b.ring_pool = kMaxRingPool + 1; }),
                       "ring_pool"));
  // On the wire: spectra that are not whole centres of ring_dim floats.
  CorrelationRequest odd = r;
  odd.ring_spectra = {std::vector<float>(10, 0.5f)};
  odd.ring_offsets_um = {{0, 0}};
  std::string bytes = Encode(NewMessage(kKey, odd));
  const uint8_t dim_tag = (13 << 3) | 0;  // field 13 (ring_dim), varint 10
  const size_t at = bytes.find(std::string{static_cast<char>(dim_tag), 10});
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = 3;  // 10 floats are not whole centres of 3
  EXPECT_TRUE(Contains(Decode(bytes).error, "ring_dim floats and two offsets per centre"));
}

TEST(ExchangeCodec, RefusesWrongVersionTruncatedOversizedAndGarbage) {
  Message m = NewMessage(kKey, SampleNotice());
  const std::string good = Encode(m);
  // Another protocol version: encode by hand with version 2.
  m.version = 2;
  EXPECT_TRUE(Contains(testing::ErrorOf([&] { Encode(m); }), "protocol version 2"));
  std::string v2 = good;
  ASSERT_EQ(v2[0], 0x08);  // field 1 (version), varint
  v2[1] = 2;
  EXPECT_TRUE(Contains(Decode(v2).error, "protocol version 2"));
  // Every truncation is refused (never a partial message).
  for (size_t n = 0; n < good.size(); ++n) {
    const Decoded d = Decode(std::string_view(good).substr(0, n));
    EXPECT_FALSE(d.message) << "accepted " << n << " of " << good.size() << " bytes";
  }
  EXPECT_TRUE(Contains(Decode(std::string(kMaxMessageBytes + 1, 'x')).error, "at most"));
  EXPECT_EQ(Decode("").error, "empty message");
  EXPECT_FALSE(Decode("\xff\xff\xff\xff").message);
}

TEST(ExchangeCodec, RefusesFieldsOutOfBounds) {
  // A descriptor longer than the limit, hand-built through the codec's own
  // structs but bypassing Encode's check is impossible, so go through the
  // wire: a result with a strength above 1 is refused by Decode.
  CorrelationResult r = SampleResult();
  Message m = NewMessage(kKey, r);
  std::string bytes = Encode(m);
  // Find the strength double 0.001 (i = 1) and replace it by 2.0.
  const double old_value = 0.001;
  const double new_value = 2.0;
  const std::string from(reinterpret_cast<const char*>(&old_value), 8);
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 8, std::string(reinterpret_cast<const char*>(&new_value), 8));
  EXPECT_TRUE(Contains(Decode(bytes).error, "correlation_result.candidate.strength"));
}

// Seeded fuzzing: random mutations of valid messages and random bytes. Every
// input either decodes to a message that passes Validate and re-encodes, or
// is refused with a reason. Runs in CI (a fixed seed per case).
TEST(ExchangeCodec, SeededFuzzNeverCrashesAndOnlyAcceptsValidMessages) {
  std::mt19937_64 rng(20261123);
  const std::vector<Message> samples = Samples();
  std::vector<std::string> seeds;
  for (const Message& m : samples) seeds.push_back(Encode(m));
  int accepted = 0, refused = 0;
  for (int iter = 0; iter < 30000; ++iter) {
    std::string bytes = seeds[rng() % seeds.size()];
    const int op = static_cast<int>(rng() % 6);
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < n; ++k) {
      if (bytes.empty()) break;
      const size_t pos = rng() % bytes.size();
      switch (op) {
        case 0:  // flip a bit
          bytes[pos] = static_cast<char>(bytes[pos] ^ (1 << (rng() % 8)));
          break;
        case 1:  // random byte
          bytes[pos] = static_cast<char>(rng());
          break;
        case 2:  // truncate
          bytes.resize(pos);
          break;
        case 3:  // insert junk
          bytes.insert(pos, std::string(1 + rng() % 16, static_cast<char>(rng())));
          break;
        case 4:  // erase a run
          bytes.erase(pos, 1 + rng() % 16);
          break;
        default: {  // pure random bytes
          bytes.resize(rng() % 512);
          for (char& c : bytes) c = static_cast<char>(rng());
        }
      }
    }
    const Decoded d = Decode(bytes);
    if (d.message) {
      ++accepted;
      EXPECT_EQ(Validate(*d.message), "");
      EXPECT_NO_THROW(Encode(*d.message));
    } else {
      ++refused;
      EXPECT_FALSE(d.error.empty());
    }
  }
  EXPECT_GT(refused, 1000);
  EXPECT_GT(accepted, 0);  // some mutations only change a value within bounds
}

TEST(ExchangeFineFeatures, OnlyCompactCmcFeaturesWithinTheirLimitAreCarried) {
  CorrelationRequest r = SampleRequest();
  r.fine = std::string(100, 'x');
  Message m = NewMessage(kKey, r);
  EXPECT_TRUE(Contains(Validate(m), "fine: not compact CMC features")) << Validate(m);
  r.fine = "BIENCMCF" + std::string(kMaxFineBytes, 'x');
  m = NewMessage(kKey, r);
  EXPECT_TRUE(Contains(Validate(m), ".fine")) << Validate(m);
  r.fine.reset();
  EXPECT_EQ(Validate(NewMessage(kKey, r)), "");
}

}  // namespace
}  // namespace bien::exchange

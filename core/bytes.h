// Little-endian integers in byte strings: the layout of the project's own
// binary files (vector indexes, ring code indexes), whatever the host.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bien {

inline void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
// The caller checks that `at` + 4 (resp. 8) bytes lie within `in`.
inline uint32_t GetU32(const std::string& in, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<uint32_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  }
  return v;
}
inline uint64_t GetU64(const std::string& in, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  }
  return v;
}

// The opening checks of the project's checksummed binary files (vector
// indexes, ring codes): the 8-byte `magic`, at least `min_size` bytes, and
// the u32 format version at byte 8. "" when they pass, else why not, e.g.
// "not a bien ring code file (bad magic)".
inline std::string CheckFileHead(const std::string& bytes, std::string_view magic,
                                 std::string_view what, size_t min_size, uint32_t version) {
  if (bytes.size() < magic.size() || std::string_view(bytes).substr(0, magic.size()) != magic) {
    return "not a bien " + std::string(what) + " file (bad magic)";
  }
  if (bytes.size() < min_size || bytes.size() < 12) {
    return "truncated (" + std::to_string(bytes.size()) + " bytes, shorter than a header)";
  }
  const uint32_t found = GetU32(bytes, 8);
  if (found != version) {
    return "format version " + std::to_string(found) + " not supported (this build reads " +
           std::to_string(version) + ")";
  }
  return "";
}

}  // namespace bien

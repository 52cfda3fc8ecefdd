#pragma once

#include <string>

namespace bien {

// Current UTC time as ISO 8601 with milliseconds: 2026-11-23T10:15:30.123Z
std::string UtcNowIso8601();

}  // namespace bien

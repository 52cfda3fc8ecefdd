// Errors in tiers (docs/ARCHITECTURE.md):
//  - bien::Error: bad input or failed I/O. The message names the file, peer or
//    item and the problem, in words a user can act on. Carries the source
//    location for logs.
//  - BIEN_CHECK: a broken internal invariant. Aborts with file:line. Never
//    used on bytes that came from disk or the network.
#pragma once

#include <source_location>
#include <stdexcept>
#include <string>

namespace bien {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message,
                 std::source_location where = std::source_location::current());

  // "file.cpp:123" of the throw site, for logs; not part of the user message.
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

[[noreturn]] void CheckFailed(const char* expression, std::source_location where);

}  // namespace bien

#define BIEN_CHECK(cond)                                                      \
  do {                                                                        \
    if (!(cond)) ::bien::CheckFailed(#cond, std::source_location::current()); \
  } while (false)

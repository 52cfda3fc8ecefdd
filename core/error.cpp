#include "core/error.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace bien {

namespace {
std::string FormatWhere(const std::source_location& where) {
  return std::filesystem::path(where.file_name()).filename().string() + ":" +
         std::to_string(where.line());
}
}  // namespace

Error::Error(const std::string& message, std::source_location where)
    : std::runtime_error(message), where_(FormatWhere(where)) {}

void CheckFailed(const char* expression, std::source_location where) {
  std::fprintf(stderr, "bien: internal invariant broken: %s at %s (%s)\n", expression,
               FormatWhere(where).c_str(), where.function_name());
  std::abort();
}

}  // namespace bien

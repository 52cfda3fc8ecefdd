// Helpers for tests that run `bien` as separate processes (BIEN_EXE).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace bien::testing {

// Starts `bien ARGS...`. With `err`, stdout goes to `out` and stderr to
// `err`, both truncated; without it, both are appended to `out`.
pid_t SpawnBien(const std::vector<std::string>& args, const std::filesystem::path& out,
                const std::filesystem::path& err = {});

// Waits for the process; SIGKILL after `ms`. Returns the exit code (128+signal).
int Reap(pid_t pid, int ms);

// The whole file ("" when it cannot be read).
std::string ReadFile(const std::filesystem::path& path);

// `bien ARGS...` run to its end (SIGKILL after `timeout_ms`), its output and
// errors kept in `dir`/out.txt and err.txt.
struct Ran {
  int code = 0;
  std::string out, err;
};
Ran RunProcess(const std::vector<std::string>& args, const std::filesystem::path& dir,
               int timeout_ms);

}  // namespace bien::testing

// Helpers for running `bien` in-process and building broken X3P files.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "imaging/surface.h"
#include "storage/store.h"

namespace bien::testing {

struct CliResult {
  int code = 0;
  std::string out;
  std::string err;
};

// Runs `bien ARGS...` in this process.
CliResult RunBien(std::vector<std::string> args);

// A small synthetic-looking surface: smooth relief, NaN corners.
Surface SmallSurface(int width = 64, int height = 48, unsigned seed = 1);

// The entries of a zip file, by name.
std::map<std::string, std::string> ReadZip(const std::filesystem::path& path);
void WriteZip(const std::filesystem::path& path, const std::map<std::string, std::string>& entries);

// Store counts of the node, for "nothing changed" checks.
StoreCounts CountsOf(const std::filesystem::path& node);

}  // namespace bien::testing

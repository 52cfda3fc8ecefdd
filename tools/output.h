// Shared printing helpers for the `bien` subcommands.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "storage/store.h"

namespace bien::cli {

nlohmann::json ToJson(const ClassCharacteristics& cc);
nlohmann::json ToJson(const ExhibitRecord& e);
nlohmann::json ToJson(const ScanRecord& s);
nlohmann::json ToJson(const AuditRecord& a);

// "calibre=9mm, firing_pin=circular" or "-" when nothing is known.
std::string Describe(const ClassCharacteristics& cc);

// Fixed-width text table helper: pads each column to its widest cell.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header);
  void Add(std::vector<std::string> row);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string HumanBytes(double bytes);

// `v` with `digits` decimals ("%.*f").
std::string Fixed(double v, int digits);

using Clock = std::chrono::steady_clock;
// Milliseconds elapsed since `t0`.
double MsSince(Clock::time_point t0);

}  // namespace bien::cli

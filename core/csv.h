// RFC 4180 CSV: comma-separated, fields optionally in double quotes (which may
// hold commas, quotes doubled, and newlines). Used for manifests and truth.csv.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bien {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each row has header.size() fields
  std::vector<int> row_lines;                  // 1-based line number where each row starts

  // Index of a column, or nullopt when the header lacks it.
  std::optional<size_t> Column(std::string_view name) const;
};

// Parses text whose first record is the header. Throws bien::Error naming
// `source` and the line on malformed input (unterminated quote, wrong field count).
CsvTable ParseCsv(std::string_view text, const std::string& source);
CsvTable ReadCsvFile(const std::filesystem::path& path);

// Quotes a field when it needs it.
std::string CsvEscape(std::string_view field);

}  // namespace bien

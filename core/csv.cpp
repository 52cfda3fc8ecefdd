#include "core/csv.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace bien {

std::optional<size_t> CsvTable::Column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  return std::nullopt;
}

namespace {

// Splits into records; each record is a list of fields.
std::vector<std::pair<int, std::vector<std::string>>> SplitRecords(std::string_view text,
                                                                   const std::string& source) {
  std::vector<std::pair<int, std::vector<std::string>>> records;
  std::vector<std::string> fields;
  std::string field;
  bool in_quotes = false;
  bool record_has_content = false;
  int line = 1;
  int record_line = 1;
  size_t i = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // UTF-8 byte-order mark
  auto end_record = [&] {
    fields.push_back(std::move(field));
    field.clear();
    if (record_has_content) records.emplace_back(record_line, std::move(fields));
    fields.clear();
    record_has_content = false;
  };
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"') {
      in_quotes = true;
      record_has_content = true;
    } else if (c == ',') {
      fields.push_back(std::move(field));
      field.clear();
      record_has_content = true;
    } else if (c == '\r') {
      // CRLF line endings: the \n ends the record.
    } else if (c == '\n') {
      end_record();
      ++line;
      record_line = line;
    } else {
      if (!record_has_content) record_line = line;
      field.push_back(c);
      record_has_content = true;
    }
  }
  if (in_quotes) {
    throw Error(source + ":" + std::to_string(record_line) + ": unterminated quoted field");
  }
  end_record();
  return records;
}

}  // namespace

CsvTable ParseCsv(std::string_view text, const std::string& source) {
  auto records = SplitRecords(text, source);
  if (records.empty()) throw Error(source + ": empty CSV file (no header)");
  CsvTable table;
  table.header = std::move(records.front().second);
  for (auto& h : table.header) {
    while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.pop_back();
    while (!h.empty() && (h.front() == ' ' || h.front() == '\t')) h.erase(h.begin());
  }
  for (size_t r = 1; r < records.size(); ++r) {
    auto& [line, fields] = records[r];
    if (fields.size() != table.header.size()) {
      throw Error(source + ":" + std::to_string(line) + ": expected " +
                  std::to_string(table.header.size()) + " fields, found " +
                  std::to_string(fields.size()));
    }
    table.rows.push_back(std::move(fields));
    table.row_lines.push_back(line);
  }
  return table;
}

CsvTable ReadCsvFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open CSV file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseCsv(ss.str(), path.string());
}

std::string CsvEscape(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace bien

#include "tools/output.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace bien::cli {

namespace {
template <typename T>
nlohmann::json OrNull(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
nlohmann::json OrNull(const std::string& s) {
  return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
}
}  // namespace

nlohmann::json ToJson(const ClassCharacteristics& cc) {
  return {{"calibre", OrNull(cc.calibre)},
          {"firing_pin", OrNull(cc.firing_pin)},
          {"breech_face", OrNull(cc.breech_face)},
          {"lands", OrNull(cc.lands)},
          {"twist", cc.twist ? nlohmann::json(ToString(*cc.twist)) : nlohmann::json(nullptr)}};
}

nlohmann::json ToJson(const ExhibitRecord& e) {
  return {
      {"id", e.id.value},           {"case", e.case_ref},       {"exhibit", e.exhibit_ref},
      {"kind", ToString(e.kind)},   {"role", ToString(e.role)}, {"class", ToJson(e.cc)},
      {"created_at", e.created_at}, {"scans", e.scan_count},    {"firearm", OrNull(e.firearm_ref)}};
}

nlohmann::json ToJson(const ScanRecord& s) {
  return {{"id", s.id.value},
          {"exhibit_id", s.exhibit.value},
          {"sha256", s.sha256},
          {"size_bytes", s.size_bytes},
          {"original_name", s.meta.original_name},
          {"format", s.meta.format},
          {"width", s.meta.width},
          {"height", s.meta.height},
          {"dx_m", s.meta.dx_m},
          {"dy_m", s.meta.dy_m},
          {"z_scale", s.meta.z_scale},
          {"nan_share", s.meta.nan_share},
          {"intensity", s.meta.intensity},
          {"land", OrNull(s.meta.land)},
          {"instrument", OrNull(s.meta.instrument)},
          {"measured_at", OrNull(s.meta.measured_at)},
          {"creator", OrNull(s.meta.creator)},
          {"comment", OrNull(s.meta.comment)},
          {"added_at", s.added_at}};
}

nlohmann::json ToJson(const AuditRecord& a) {
  nlohmann::json details = nlohmann::json::parse(a.details, nullptr, false);
  if (details.is_discarded()) details = a.details;
  return {{"seq", a.seq},         {"at", a.at},
          {"actor", a.actor},     {"action", a.action},
          {"subject", a.subject}, {"sha256", OrNull(a.sha256)},
          {"details", details},   {"row_hash", a.row_hash}};
}

std::string Describe(const ClassCharacteristics& cc) {
  std::vector<std::string> parts;
  if (cc.calibre) parts.push_back("calibre=" + *cc.calibre);
  if (cc.firing_pin) parts.push_back("firing_pin=" + *cc.firing_pin);
  if (cc.breech_face) parts.push_back("breech_face=" + *cc.breech_face);
  if (cc.lands) parts.push_back("lands=" + std::to_string(*cc.lands));
  if (cc.twist) parts.push_back(std::string("twist=") + ToString(*cc.twist));
  if (parts.empty()) return "-";
  std::string s = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) s += ", " + parts[i];
  return s;
}

TextTable::TextTable(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void TextTable::Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

std::string TextTable::Render() const {
  std::vector<size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::ostringstream out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
  return out.str();
}

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace bien::cli

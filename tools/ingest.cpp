// `bien ingest`: read + validate + hash + store, with reader threads feeding
// one writer (the store is single-writer). Each exhibit's scans are committed
// in one transaction, so an exhibit is either fully present or absent, and a
// bad file only rejects itself.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <thread>
#include <utility>

#include "core/csv.h"
#include "core/error.h"
#include "imaging/surface_io.h"
#include "matching/bullet.h"
#include "matching/descriptor.h"
#include "tools/commands.h"
#include "tools/compare.h"
#include "tools/fine_features.h"
#include "tools/output.h"
#include "tools/search.h"

namespace bien::cli {

namespace {

// Refuse files larger than this before reading them into memory.
constexpr int64_t kMaxFileBytes = int64_t{4} << 30;

template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}
  void Push(T value) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return queue_.size() < capacity_; });
    queue_.push_back(std::move(value));
    not_empty_.notify_one();
  }
  // Empty optional once closed and drained.
  std::optional<T> Pop() {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !queue_.empty() || closed_; });
    if (queue_.empty()) return std::nullopt;
    T value = std::move(queue_.front());
    queue_.pop_front();
    not_full_.notify_one();
    return value;
  }
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> queue_;
  size_t capacity_;
  bool closed_ = false;
};

struct Group {
  ExhibitSpec spec;
  std::vector<size_t> items;
};

struct ParsedScan {
  size_t item = 0;
  std::vector<std::byte> bytes;
  ScanMeta meta;
  std::vector<NewDescriptor> descriptors;
  std::string fine_features;  // EncodeCmcFeatures, cached once the scan is stored
  std::vector<std::string> warnings;
  std::string error;
};

struct ParsedGroup {
  size_t group = 0;
  std::vector<ParsedScan> scans;
};

LengthUnit ParseZUnit(const std::string& text) {
  const LengthUnit unit = ParseLengthUnit(text);
  if (unit == LengthUnit::kAuto) {
    throw Error("the height unit cannot be guessed: give m, mm or um");
  }
  return unit;
}

std::vector<std::byte> ReadFileBytes(const std::filesystem::path& path, const std::string& label) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) throw Error(label + ": no such file");
  if (std::filesystem::is_directory(status)) throw Error(label + ": is a folder, not a file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(label + ": cannot read size: " + ec.message());
  if (static_cast<int64_t>(size) > kMaxFileBytes) {
    throw Error(label + ": file is " + HumanBytes(static_cast<double>(size)) +
                ", larger than the 4 GiB limit for one scan");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(label + ": cannot open for reading");
  std::vector<std::byte> bytes(size);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(in.gcount()) != size) throw Error(label + ": read failed");
  return bytes;
}

ParsedScan ParseItem(const IngestItem& item, size_t index, const CmcOptions& fine_options) {
  ParsedScan parsed;
  parsed.item = index;
  if (!item.error.empty()) {
    parsed.error = item.error;
    return parsed;
  }
  try {
    parsed.bytes = ReadFileBytes(item.path, item.label);
    ScanReadOptions options;
    options.x3p.xy_unit = item.xy_unit.value_or(LengthUnit::kAuto);
    options.x3p.z_unit = item.z_unit.value_or(LengthUnit::kMetre);
    options.pixel_size_um = item.pixel_size_um;
    ScanFormat format = ScanFormat::kUnknown;
    const Surface surface = ReadScanFromMemory(parsed.bytes, item.label, options, &format);
    ValidateSurface(surface, item.label);
    ScanMeta& m = parsed.meta;
    m.original_name = item.path.filename().string();
    m.format = ToString(format);
    m.width = surface.width;
    m.height = surface.height;
    m.dx_m = surface.dx_m;
    m.dy_m = surface.dy_m;
    m.z_scale = MetresPer(options.x3p.z_unit);
    m.nan_share = surface.NanShare();
    m.intensity = surface.values == SurfaceValues::kIntensity;
    m.land = item.land;
    m.instrument = surface.provenance.instrument;
    m.measured_at = surface.provenance.date;
    m.creator = surface.provenance.creator;
    m.comment = surface.provenance.comment;
    parsed.warnings = surface.warnings;
    // The coarse search descriptor of a 3D breech face, stored in the same
    // transaction. A breech face it cannot use is still stored (it is
    // evidence), with a warning that search will not find it.
    // Its compact CMC features are cached after the transaction (search
    // compares candidates from them, tools/fine_features.h). Both come from
    // one preprocessing.
    if (item.exhibit.kind == ExhibitKind::kCartridgeCase && !m.intensity) {
      try {
        const Surface pre = Preprocessed(Operand{item.label, "", surface}, nullptr);
        parsed.descriptors.push_back(
            NewDescriptor{DescriptorKey(), BreechFaceDescriptor(pre, item.label)});
        parsed.fine_features = EncodeCmcFeatures(pre, item.label, fine_options);
        // The ring spectra of the coarse stage's second pass (tools/search.h);
        // they need less data than the descriptor, so they rarely fail alone.
        try {
          parsed.descriptors.push_back(
              NewDescriptor{RingSpectraKey(), BreechFaceRingSpectra(pre, item.label)});
        } catch (const Error& e) {
          parsed.warnings.push_back(std::string("no ring spectra: ") + e.what());
        }
      } catch (const Error& e) {
        parsed.warnings.push_back(std::string("not searchable: ") + e.what());
      }
    }
    // A bullet's land scan: the coarse descriptor of its land signature
    // (matching/bullet.h), in the same transaction; a land it cannot use is
    // still stored, with a warning. A scan without a land number is stored
    // too, but a bullet search needs the land of each scan.
    if (item.exhibit.kind == ExhibitKind::kBullet && !m.intensity) {
      try {
        if (!item.land) {
          throw Error(item.label + ": no land number (give --land or a land column)");
        }
        parsed.descriptors.push_back(
            NewDescriptor{BulletDescriptorKey(), LandScanDescriptor(surface, item.label)});
      } catch (const Error& e) {
        parsed.warnings.push_back(std::string("not searchable: ") + e.what());
      }
    }
  } catch (const Error& e) {
    parsed.error = e.what();
    parsed.bytes.clear();
  } catch (const std::bad_alloc&) {
    parsed.error = item.label + ": out of memory while reading";
    parsed.bytes.clear();
  } catch (const std::exception& e) {
    parsed.error = item.label + ": " + e.what();
    parsed.bytes.clear();
  }
  return parsed;
}

class Progress {
 public:
  Progress(bool enabled, std::ostream& out, size_t total)
      : enabled_(enabled), out_(out), total_(total) {}
  void Update(const IngestSummary& s) {
    if (!enabled_) return;
    const size_t done = static_cast<size_t>(s.ingested + s.duplicates + s.rejected);
    const int width = 30;
    const int filled = total_ ? static_cast<int>(width * done / total_) : width;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    char line[160];
    std::snprintf(line, sizeof line, "\r  ingest [%s] %zu/%zu  ok %d  dup %d  rejected %d",
                  bar.c_str(), done, total_, s.ingested, s.duplicates, s.rejected);
    out_ << line << std::flush;
  }
  void Finish() {
    if (enabled_) out_ << "\n";
  }

 private:
  bool enabled_;
  std::ostream& out_;
  size_t total_;
};

// Sets `problem` when `given` differs from a `known` value (first problem wins).
template <typename T, typename Show>
void MergeField(const char* field, std::optional<T>& known, const std::optional<T>& given,
                Show show, std::string& problem) {
  if (!given || !problem.empty()) return;
  if (known && *known != *given) {
    problem = std::string(field) + " '" + show(*given) + "' here, but '" + show(*known) +
              "' on an earlier row";
  }
}

// Folds a later row's description of an exhibit into the one its group will
// be stored with: unknown fields are filled in; a different kind, role or known
// value is that row's problem, returned ("" when it agrees) with `group` left
// as it was. So no row silently loses what it says, and a conflicting row
// rejects only itself.
std::string MergeSpec(ExhibitSpec& group, const ExhibitSpec& row) {
  std::string problem;
  auto text = [](const std::string& v) { return v; };
  auto number = [](int v) { return std::to_string(v); };
  auto twist = [](Twist v) { return std::string(ToString(v)); };
  if (row.kind != group.kind) {
    problem = std::string("kind '") + ToString(row.kind) + "' here, but '" + ToString(group.kind) +
              "' on an earlier row";
  } else if (row.role != group.role) {
    problem = std::string("role '") + ToString(row.role) + "' here, but '" + ToString(group.role) +
              "' on an earlier row";
  }
  ExhibitSpec merged = group;
  MergeField("calibre", merged.cc.calibre, row.cc.calibre, text, problem);
  MergeField("firing_pin", merged.cc.firing_pin, row.cc.firing_pin, text, problem);
  MergeField("breech_face", merged.cc.breech_face, row.cc.breech_face, text, problem);
  MergeField("lands", merged.cc.lands, row.cc.lands, number, problem);
  MergeField("twist", merged.cc.twist, row.cc.twist, twist, problem);
  MergeField("firearm", merged.firearm_ref, row.firearm_ref, text, problem);
  if (!problem.empty()) {
    return "exhibit " + group.case_ref + "/" + group.exhibit_ref + ": " + problem;
  }
  auto fill = [](auto& known, const auto& given) {
    if (!known) known = given;
  };
  fill(merged.cc.calibre, row.cc.calibre);
  fill(merged.cc.firing_pin, row.cc.firing_pin);
  fill(merged.cc.breech_face, row.cc.breech_face);
  fill(merged.cc.lands, row.cc.lands);
  fill(merged.cc.twist, row.cc.twist);
  fill(merged.firearm_ref, row.firearm_ref);
  group = std::move(merged);
  return "";
}

}  // namespace

IngestSummary IngestItems(Store& store, const std::string& actor, std::vector<IngestItem> items,
                          int jobs, bool progress, std::ostream& progress_out) {
  const auto start = std::chrono::steady_clock::now();

  // Group by exhibit, in first-seen order. The group's description comes from
  // its valid rows only (a bad row's fields may be half-read), merged.
  std::vector<Group> groups;
  std::vector<bool> described;  // a valid row has set the group's spec
  std::map<std::pair<std::string, std::string>, size_t> group_of;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto key = std::make_pair(items[i].exhibit.case_ref, items[i].exhibit.exhibit_ref);
    auto [it, inserted] = group_of.try_emplace(key, groups.size());
    if (inserted) {
      groups.push_back(Group{items[i].exhibit, {}});
      described.push_back(false);
    }
    const size_t g = it->second;
    groups[g].items.push_back(i);
    if (!items[i].error.empty()) continue;
    if (!described[g]) {
      groups[g].spec = items[i].exhibit;
      described[g] = true;
    } else if (std::string problem = MergeSpec(groups[g].spec, items[i].exhibit);
               !problem.empty()) {
      items[i].error = items[i].label + ": " + problem;
    }
  }

  IngestSummary summary;
  summary.items.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) summary.items[i].label = items[i].label;

  if (jobs <= 0) jobs = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  jobs = std::min<int>(jobs, static_cast<int>(std::max<size_t>(1, groups.size())));
  BoundedQueue<ParsedGroup> queue(static_cast<size_t>(2 * jobs));
  FineFeatures fine(store.dir());
  std::atomic<size_t> next_group{0};
  std::atomic<int> running{jobs};
  std::vector<std::jthread> workers;
  for (int w = 0; w < jobs; ++w) {
    workers.emplace_back([&] {
      for (size_t g = next_group++; g < groups.size(); g = next_group++) {
        ParsedGroup parsed{g, {}};
        for (size_t item : groups[g].items) {
          parsed.scans.push_back(ParseItem(items[item], item, fine.options()));
        }
        queue.Push(std::move(parsed));
      }
      if (--running == 0) queue.Close();
    });
  }

  Progress bar(progress, progress_out, items.size());
  while (auto parsed = queue.Pop()) {
    std::vector<NewScan> to_store;
    std::vector<size_t> stored_items;
    std::vector<std::string> stored_features;
    for (auto& scan : parsed->scans) {
      IngestOutcome& outcome = summary.items[scan.item];
      outcome.warnings = scan.warnings;
      if (!scan.error.empty()) {
        outcome.status = "rejected";
        outcome.reason = scan.error;
        ++summary.rejected;
        continue;
      }
      outcome.bytes = static_cast<int64_t>(scan.bytes.size());
      to_store.push_back(NewScan{scan.meta, scan.bytes, std::move(scan.descriptors)});
      stored_items.push_back(scan.item);
      stored_features.push_back(std::move(scan.fine_features));
    }
    if (!to_store.empty()) {
      try {
        const auto results = store.AddScans(actor, groups[parsed->group].spec, to_store);
        for (size_t k = 0; k < results.size(); ++k) {
          IngestOutcome& outcome = summary.items[stored_items[k]];
          outcome.scan_id = results[k].scan.value;
          outcome.exhibit_id = results[k].exhibit.value;
          outcome.sha256 = results[k].sha256;
          if (results[k].status == AddStatus::kAdded) {
            if (!stored_features[k].empty()) fine.Put(results[k].sha256, stored_features[k]);
            outcome.status = "ingested";
            summary.bytes += outcome.bytes;
            ++summary.ingested;
          } else {
            outcome.status = "duplicate";
            outcome.reason = results[k].detail;
            ++summary.duplicates;
          }
        }
      } catch (const Error& e) {
        for (size_t item : stored_items) {
          summary.items[item].status = "rejected";
          summary.items[item].reason = items[item].label + ": " + e.what();
          ++summary.rejected;
        }
      }
    }
    bar.Update(summary);
  }
  bar.Finish();
  workers.clear();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

namespace {

const std::vector<std::string> kManifestColumns = {
    "path",  "case",  "exhibit", "kind",          "role",    "calibre", "firing_pin", "breech_face",
    "lands", "twist", "land",    "pixel_size_um", "xy_unit", "z_unit",  "firearm"};

std::optional<std::string> NonEmpty(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return s;
}

int ParseInt(const std::string& text, const std::string& what) {
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) throw Error(what + " '" + text + "' is not a whole number");
  return value;
}

double ParsePositive(const std::string& text, const std::string& what) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !(value > 0) || !std::isfinite(value)) {
    throw Error(what + " '" + text + "' is not a positive number");
  }
  return value;
}

// Builds an ExhibitSpec from text fields; throws bien::Error naming the bad field.
ExhibitSpec MakeSpec(const std::string& case_ref, const std::string& exhibit_ref,
                     const std::string& kind, const std::string& role,
                     const std::optional<std::string>& calibre,
                     const std::optional<std::string>& firing_pin,
                     const std::optional<std::string>& breech_face, std::optional<int> lands,
                     const std::optional<std::string>& twist) {
  ExhibitSpec spec;
  if (case_ref.empty()) throw Error("a case reference is required (--case / column case)");
  if (exhibit_ref.empty()) {
    throw Error("an exhibit reference is required (--exhibit / column exhibit)");
  }
  spec.case_ref = case_ref;
  spec.exhibit_ref = exhibit_ref;
  const auto k = ParseExhibitKind(kind);
  if (!k) {
    throw Error("unknown exhibit kind '" + kind + "' (expected cartridge_case or bullet)");
  }
  spec.kind = *k;
  const auto r = ParseExhibitRole(role);
  if (!r) throw Error("unknown exhibit role '" + role + "' (expected evidence or test_fire)");
  spec.role = *r;
  spec.cc.calibre = calibre;
  spec.cc.firing_pin = firing_pin;
  spec.cc.breech_face = breech_face;
  if (lands && (*lands < 1 || *lands > 64)) {
    throw Error("lands " + std::to_string(*lands) + " is out of range (1 to 64)");
  }
  spec.cc.lands = lands;
  if (twist) {
    const auto t = ParseTwist(*twist);
    if (!t) throw Error("unknown twist '" + *twist + "' (expected left or right)");
    spec.cc.twist = *t;
  }
  return spec;
}

}  // namespace

std::vector<IngestItem> ReadManifest(const std::filesystem::path& manifest) {
  const CsvTable table = ReadCsvFile(manifest);
  for (const auto& column : table.header) {
    if (std::find(kManifestColumns.begin(), kManifestColumns.end(), column) ==
        kManifestColumns.end()) {
      std::string known;
      for (const auto& k : kManifestColumns) known += (known.empty() ? "" : ", ") + k;
      throw Error(manifest.string() + ": unknown column '" + column + "' (known: " + known + ")");
    }
  }
  for (const char* required : {"path", "case", "exhibit", "kind", "role"}) {
    if (!table.Column(required)) {
      throw Error(manifest.string() + ": required column '" + required + "' is missing");
    }
  }
  const auto base = manifest.parent_path();
  auto cell = [&](const std::vector<std::string>& row, const char* name) -> std::string {
    const auto c = table.Column(name);
    return c ? row[*c] : std::string();
  };
  std::vector<IngestItem> items;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    IngestItem item;
    const std::string where =
        manifest.filename().string() + ":" + std::to_string(table.row_lines[r]);
    const std::string rel = cell(row, "path");
    item.path = rel.empty() ? std::filesystem::path() : base / rel;
    item.label = rel.empty() ? where : item.path.string();
    item.exhibit.case_ref = cell(row, "case");
    item.exhibit.exhibit_ref = cell(row, "exhibit");
    try {
      if (rel.empty()) throw Error("the path is empty");
      const std::string lands = cell(row, "lands");
      item.exhibit =
          MakeSpec(cell(row, "case"), cell(row, "exhibit"), cell(row, "kind"), cell(row, "role"),
                   NonEmpty(cell(row, "calibre")), NonEmpty(cell(row, "firing_pin")),
                   NonEmpty(cell(row, "breech_face")),
                   lands.empty() ? std::nullopt : std::optional<int>(ParseInt(lands, "lands")),
                   NonEmpty(cell(row, "twist")));
      item.exhibit.firearm_ref = NonEmpty(cell(row, "firearm"));
      if (const std::string land = cell(row, "land"); !land.empty()) {
        item.land = ParseInt(land, "land");
        if (*item.land < 1 || *item.land > 64) throw Error("land " + land + " is out of range");
      }
      if (const std::string px = cell(row, "pixel_size_um"); !px.empty()) {
        item.pixel_size_um = ParsePositive(px, "pixel_size_um");
      }
      if (const std::string u = cell(row, "xy_unit"); !u.empty()) item.xy_unit = ParseLengthUnit(u);
      if (const std::string u = cell(row, "z_unit"); !u.empty()) item.z_unit = ParseZUnit(u);
    } catch (const Error& e) {
      item.error = where + ": " + e.what();
    }
    items.push_back(std::move(item));
  }
  return items;
}

namespace {

nlohmann::json SummaryJson(const IngestSummary& s) {
  nlohmann::json items = nlohmann::json::array();
  for (const auto& o : s.items) {
    nlohmann::json j = {{"path", o.label}, {"status", o.status}};
    if (!o.reason.empty()) j["reason"] = o.reason;
    if (o.scan_id) j["scan_id"] = o.scan_id;
    if (!o.sha256.empty()) j["sha256"] = o.sha256;
    if (!o.warnings.empty()) j["warnings"] = o.warnings;
    items.push_back(std::move(j));
  }
  return {{"ingested", s.ingested}, {"duplicates", s.duplicates}, {"rejected", s.rejected},
          {"bytes", s.bytes},       {"seconds", s.seconds},       {"items", items}};
}

void PrintSummary(std::ostream& out, const IngestSummary& s) {
  const bool list_each = s.items.size() <= 20;
  for (const auto& o : s.items) {
    if (o.status == "ingested") {
      if (list_each) {
        out << "  ingested   scan " << o.scan_id << "  sha256 " << o.sha256.substr(0, 16) << "…  "
            << o.label << "\n";
      }
    } else if (o.status == "duplicate") {
      out << "  duplicate  " << o.label << ": " << o.reason << "\n";
    } else {
      out << "  REJECTED   " << o.reason << "\n";
    }
    for (const auto& w : o.warnings) out << "  warning    " << o.label << ": " << w << "\n";
  }
  char rate[96] = "";
  if (s.seconds > 0 && s.ingested > 0) {
    std::snprintf(rate, sizeof rate, ", %.1f scans/s", s.ingested / s.seconds);
  }
  out << "ingested " << s.ingested << ", duplicates " << s.duplicates << ", rejected " << s.rejected
      << " (of " << s.items.size() << " files, " << HumanBytes(double(s.bytes)) << " stored in "
      << std::to_string(s.seconds).substr(0, 5) << " s" << rate << ")\n";
}

}  // namespace

int CmdIngest(Context& ctx, const IngestArgs& args) {
  if (args.manifest && !args.files.empty()) {
    throw Error("give either FILE arguments or --manifest, not both");
  }
  if (!args.manifest && args.files.empty()) {
    throw Error("nothing to ingest: give FILE arguments or --manifest FILE.csv");
  }
  const LengthUnit xy_unit = ParseLengthUnit(args.xy_unit);
  const LengthUnit z_unit = ParseZUnit(args.z_unit);
  std::vector<IngestItem> items;
  if (args.manifest) {
    items = ReadManifest(*args.manifest);
    // Command-line units are the default for rows that leave the columns empty.
    for (auto& item : items) {
      if (!item.xy_unit) item.xy_unit = xy_unit;
      if (!item.z_unit) item.z_unit = z_unit;
    }
  } else {
    if (args.kind.empty()) throw Error("--kind is required (cartridge_case or bullet)");
    if (args.role.empty()) throw Error("--role is required (evidence or test_fire)");
    ExhibitSpec spec = MakeSpec(args.case_ref, args.exhibit_ref, args.kind, args.role, args.calibre,
                                args.firing_pin, args.breech_face, args.lands, args.twist);
    spec.firearm_ref = args.firearm;
    if (spec.firearm_ref && spec.firearm_ref->empty()) throw Error("--firearm must not be empty");
    if (args.land && args.files.size() != 1) {
      throw Error("--land names the land of a single scan; give one file with it");
    }
    if (args.pixel_size_um && !(*args.pixel_size_um > 0)) {
      throw Error("--pixel-size-um must be a positive number");
    }
    for (const auto& f : args.files) {
      IngestItem item;
      item.path = f;
      item.label = f.string();
      item.exhibit = spec;
      item.land = args.land;
      item.pixel_size_um = args.pixel_size_um;
      item.xy_unit = xy_unit;
      item.z_unit = z_unit;
      items.push_back(std::move(item));
    }
  }
  auto store = Store::Open(ctx.NodeDir());
  const IngestSummary summary =
      IngestItems(*store, ctx.actor, std::move(items), args.jobs, ctx.progress, ctx.err);
  // Every new cartridge case and bullet is searched against the node's own
  // store; its candidates at or above the lead threshold become leads.
  std::vector<SearchReport> searches;
  std::vector<std::string> search_errors;
  if (!args.no_search) {
    std::set<int64_t> searched;
    for (const IngestOutcome& o : summary.items) {
      if (o.status != "ingested" || !searched.insert(o.exhibit_id).second) continue;
      const ExhibitRecord e = store->FindExhibit("#" + std::to_string(o.exhibit_id));
      if (e.kind != ExhibitKind::kCartridgeCase && e.kind != ExhibitKind::kBullet) continue;
      try {
        searches.push_back(SearchExhibit(*store, e, SearchOptions{}, ctx.actor));
      } catch (const Error& err) {
        search_errors.push_back(err.what());
      }
    }
  }
  if (ctx.json) {
    nlohmann::json j = SummaryJson(summary);
    nlohmann::json js = nlohmann::json::array();
    for (const SearchReport& r : searches) {
      nlohmann::json leads = nlohmann::json::array();
      for (const RecordedLead& l : r.leads) {
        leads.push_back({{"lead", l.lead.value}, {"outcome", ToString(l.outcome)}});
      }
      js.push_back({{"exhibit", r.query.case_ref + "/" + r.query.exhibit_ref},
                    {"compared", r.candidates.size()},
                    {"best_score", r.candidates.empty() ? 0.0 : r.candidates.front().score},
                    {"leads", leads}});
    }
    j["searches"] = js;
    j["search_errors"] = search_errors;
    ctx.out << j.dump(2) << "\n";
  } else {
    PrintSummary(ctx.out, summary);
    for (const SearchReport& r : searches) PrintSearchSummary(ctx.out, r);
    for (const std::string& e : search_errors) ctx.out << "search not run: " << e << "\n";
  }
  if (summary.rejected == 0) return kExitOk;
  return summary.ingested + summary.duplicates > 0 ? kExitPartial : kExitFailure;
}

}  // namespace bien::cli

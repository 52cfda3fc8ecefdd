#include "tools/bullet_commands.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <thread>

#include "core/csv.h"
#include "core/error.h"
#include "core/file.h"
#include "core/hash.h"
#include "imaging/land.h"
#include "imaging/surface_io.h"
#include "imaging/synth_land.h"
#include "matching/bullet.h"
#include "matching/metrics.h"
#include "tools/output.h"
#include "tools/parallel.h"

namespace bien::cli {
namespace {

// One land ready to compare, with what its extraction found.
struct Land {
  std::string label;
  LandSignature signature;
  std::shared_ptr<const PreparedLand> prepared;
};

// A bullet: lands[i] is land i + 1 (empty label: not scanned).
struct Bullet {
  std::string label;
  std::vector<std::optional<Land>> lands;
  PreparedBullet Prepared() const {
    PreparedBullet p;
    p.label = label;
    for (const auto& l : lands) p.lands.push_back(l ? l->prepared : nullptr);
    return p;
  }
};

Land LandFromSurface(const Surface& s, const std::string& label, const LandOptions& options) {
  Land l;
  l.label = label;
  l.signature = ExtractLandSignature(s, label, options);
  l.prepared = PrepareLand(l.signature, label);
  return l;
}

Land LandFromFile(const std::filesystem::path& path, const LandOptions& options) {
  const std::vector<std::byte> bytes = ReadWholeFile(path);
  const Surface s = ReadScanFromMemory(bytes, path.string(), ScanReadOptions{});
  ValidateSurface(s, path.string());
  return LandFromSurface(s, path.string(), options);
}

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    out.push_back(text.substr(start, comma == std::string::npos ? comma : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string Name(const ExhibitRecord& e) { return e.case_ref + "/" + e.exhibit_ref; }

Bullet StoredBullet(const Store& store, const ExhibitRecord& e, const LandOptions& options) {
  int n = 0;
  const std::vector<StoredLandScan> scans = StoredLandScans(store, e, &n);
  Bullet b;
  b.label = Name(e);
  b.lands.resize(static_cast<size_t>(n));
  for (const StoredLandScan& s : scans) {
    const Operand op = ReadStoredScan(s.object, s.scan, s.label);
    b.lands[static_cast<size_t>(*s.scan.meta.land - 1)] =
        LandFromSurface(op.surface, s.label, options);
  }
  return b;
}

bool IsFile(const std::string& arg) {
  std::error_code ec;
  return std::filesystem::is_regular_file(arg, ec);
}

Bullet LoadBullet(const Context& ctx, const std::string& arg, const LandOptions& options,
                  std::unique_ptr<Store>& store) {
  if (!IsFile(arg) && arg.find(',') == std::string::npos) {
    if (!ctx.node) {
      throw Error(arg + ": no such file (to compare a stored bullet, name the node with --node)");
    }
    if (!store) store = Store::Open(ctx.NodeDir());
    return StoredBullet(*store, store->FindExhibit(arg), options);
  }
  Bullet b;
  b.label = arg;
  for (const std::string& part : SplitCommas(arg)) {
    if (part.empty()) {
      b.lands.emplace_back();
    } else {
      b.lands.emplace_back(LandFromFile(part, options));
    }
  }
  return b;
}

nlohmann::json LandJson(const LandComparison& r) {
  return {{"score", r.score},           {"ccf", r.ccf},   {"lag_um", r.lag_um},
          {"overlap_um", r.overlap_um}, {"cms", r.cms},   {"matching_striae", r.matches},
          {"striae", r.striae},         {"d_um", r.d_um}, {"d_rel", r.d_rel}};
}

nlohmann::json SignatureJson(const Land& l) {
  const LandSignature& s = l.signature;
  return {{"label", l.label},
          {"across", ToString(s.across)},
          {"direction_ratio", s.direction_ratio},
          {"crosscut_um", s.crosscut_um},
          {"crosscut_ccf", s.crosscut_ccf},
          {"groove_left_um", s.groove_left_um},
          {"groove_right_um", s.groove_right_um},
          {"shoulders_found", {s.shoulder_left_found, s.shoulder_right_found}},
          {"land_width_um", s.land_width_um},
          {"samples", s.values_um.size()},
          {"spacing_um", s.spacing_um}};
}

std::string Describe(const LandComparison& r) {
  return Fixed(r.score, 3) + "  (ccf " + Fixed(r.ccf, 3) + ", CMS " + std::to_string(r.cms) +
         " of " + std::to_string(r.striae) + " striae, D " + Fixed(r.d_um, 2) +
         " um = " + Fixed(r.d_rel, 2) + " of the heights, lag " + Fixed(r.lag_um, 0) +
         " um, overlap " + Fixed(r.overlap_um, 0) + " um)";
}

std::string DescribeLand(const Land& l) {
  const LandSignature& s = l.signature;
  return l.label + "  (" + ToString(s.across) + " across; crosscut at " + Fixed(s.crosscut_um, 0) +
         " um; land " + Fixed(s.groove_left_um, 0) + "-" + Fixed(s.groove_right_um, 0) + " um, " +
         Fixed(s.land_width_um, 0) + " um wide)";
}

// --- picture ------------------------------------------------------------

std::string Ascii(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += (c >= 32 && c < 127) ? static_cast<char>(c) : '?';
  return out;
}

// The file name of a path-like label, for picture titles.
std::string Short(const std::string& label) {
  if (label.find('/') == std::string::npos || label.find(',') != std::string::npos) return label;
  return std::filesystem::path(label).filename().string();
}

// One panel per pair: a's signature in blue, b's shifted by the lag in red,
// on a common micrometre axis.
void WriteSignaturesPng(const std::vector<std::pair<const Land*, const Land*>>& pairs,
                        const std::vector<LandComparison>& results,
                        const std::vector<std::string>& caption, const std::filesystem::path& out) {
  const int width = 1400, panel = 170, margin = 60,
            top = 24 + 22 * static_cast<int>(caption.size());
  const int height = top + panel * static_cast<int>(pairs.size()) + 20;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  const int font = cv::FONT_HERSHEY_SIMPLEX;
  for (size_t i = 0; i < caption.size(); ++i) {
    cv::putText(img, Ascii(caption[i]), cv::Point(12, 22 + 22 * static_cast<int>(i)), font, 0.55,
                cv::Scalar(25, 25, 25), 1, cv::LINE_AA);
  }
  for (size_t k = 0; k < pairs.size(); ++k) {
    const LandSignature& a = pairs[k].first->signature;
    const LandSignature& b = pairs[k].second->signature;
    const LandComparison& r = results[k];
    const double lag_um = r.lag_um;
    // x range (um, in a's frame): union of a and shifted b.
    const double x0 = std::min(0.0, -lag_um);
    const double x1 = std::max(a.LengthUm(), b.LengthUm() - lag_um);
    double ymax = 0.5;
    for (float v : a.values_um)
      ymax = std::isfinite(v) ? std::max<double>(ymax, std::abs(v)) : ymax;
    for (float v : b.values_um)
      ymax = std::isfinite(v) ? std::max<double>(ymax, std::abs(v)) : ymax;
    const int y0 = top + static_cast<int>(k) * panel;
    const int mid = y0 + panel / 2 + 8;
    const double sx = (width - 2 * margin) / std::max(1.0, x1 - x0);
    const double sy = (panel / 2 - 22) / ymax;
    cv::line(img, cv::Point(margin, mid), cv::Point(width - margin, mid),
             cv::Scalar(210, 210, 210));
    auto draw = [&](const LandSignature& s, double shift, const cv::Scalar& colour) {
      std::vector<cv::Point> run;
      auto flush = [&] {
        if (run.size() > 1) cv::polylines(img, run, false, colour, 1, cv::LINE_AA);
        run.clear();
      };
      for (size_t i = 0; i < s.values_um.size(); ++i) {
        const float v = s.values_um[i];
        if (!std::isfinite(v)) {
          flush();
          continue;
        }
        const double x = i * s.spacing_um - shift;
        run.emplace_back(margin + static_cast<int>((x - x0) * sx), mid - static_cast<int>(v * sy));
      }
      flush();
    };
    draw(a, 0, cv::Scalar(180, 90, 20));       // blue
    draw(b, lag_um, cv::Scalar(40, 40, 215));  // red
    const std::string title = Ascii(Short(pairs[k].first->label)) + " (blue)  vs  " +
                              Ascii(Short(pairs[k].second->label)) + " (red):  score " +
                              Fixed(r.score, 3) + ", ccf " + Fixed(r.ccf, 3) + ", CMS " +
                              std::to_string(r.cms) + ", +/-" + Fixed(ymax, 1) + " um";
    cv::putText(img, title, cv::Point(margin, y0 + 18), font, 0.45, cv::Scalar(25, 25, 25), 1,
                cv::LINE_AA);
  }
  std::vector<uchar> png;
  if (!cv::imencode(".png", img, png)) throw Error(out.string() + ": cannot encode PNG");
  WriteFileAtomically(out, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()),
                      "picture");
}

}  // namespace

std::vector<StoredLandScan> StoredLandScans(const Store& store, const ExhibitRecord& e,
                                            int* lands) {
  const std::string name = Name(e);
  if (e.kind != ExhibitKind::kBullet) {
    throw Error(name + ": is a " + std::string(ToString(e.kind)) + ", not a bullet");
  }
  const std::vector<ScanRecord> scans = store.ScansOf(e.id);
  if (scans.empty()) throw Error(name + ": has no scans");
  int n = e.cc.lands.value_or(0);
  std::set<int> seen;
  std::vector<StoredLandScan> out;
  for (const ScanRecord& s : scans) {
    if (!s.meta.land) {
      throw Error(name + ": scan " + s.meta.original_name +
                  " has no land number (ingest bullet scans with --land or a land column)");
    }
    const std::string label = name + " land " + std::to_string(*s.meta.land);
    if (!seen.insert(*s.meta.land).second) {
      throw Error(label + ": the bullet has two scans of this land");
    }
    n = std::max(n, *s.meta.land);
    out.push_back(StoredLandScan{s, store.ObjectPath(s.sha256), label});
  }
  std::sort(out.begin(), out.end(), [](const StoredLandScan& a, const StoredLandScan& b) {
    return *a.scan.meta.land < *b.scan.meta.land;
  });
  *lands = n;
  return out;
}

std::shared_ptr<const PreparedLand> PrepareStoredLand(const StoredLandScan& land) {
  const Operand op = ReadStoredScan(land.object, land.scan, land.label);
  return PrepareLand(ExtractLandSignature(op.surface, land.label), land.label);
}

bool IsBulletCompare(const Context& ctx, const CompareArgs& args) {
  if (args.kind == "land" || args.kind == "bullet") return true;
  if (args.kind == "cartridge_case") return false;
  if (args.kind != "auto") {
    throw Error("unknown --kind '" + args.kind +
                "' (expected auto, cartridge_case, land or bullet)");
  }
  if (!ctx.node) return false;
  for (const std::string& arg : {args.a, args.b}) {
    if (IsFile(arg)) continue;
    try {
      const auto store = Store::Open(ctx.NodeDir());
      if (store->FindExhibit(arg).kind == ExhibitKind::kBullet) return true;
    } catch (const Error&) {
      // Left to the breech-face path, which reports the problem.
    }
  }
  return false;
}

int CmdCompareBullets(Context& ctx, const CompareArgs& args) {
  LandOptions options;
  options.across = ParseLandAxis(args.land_across);
  const auto t0 = Clock::now();
  if (args.kind == "land") {
    for (const std::string& arg : {args.a, args.b}) {
      if (!IsFile(arg)) throw Error(arg + ": no such land scan file");
    }
    const Land a = LandFromFile(args.a, options);
    const Land b = LandFromFile(args.b, options);
    const double extract_ms = MsSince(t0);
    const auto t1 = Clock::now();
    const LandComparison r = CompareLands(*a.prepared, *b.prepared);
    const double compare_ms = MsSince(t1);
    if (args.png) {
      WriteSignaturesPng(
          {{&a, &b}}, {r},
          {"land-to-land comparison (" + std::string(kBulletMethod) + "): score " + Describe(r)},
          *args.png);
    }
    if (ctx.json) {
      nlohmann::json j = {{"kind", "land"},
                          {"method", kBulletMethod},
                          {"reference", SignatureJson(a)},
                          {"target", SignatureJson(b)},
                          {"result", LandJson(r)},
                          {"extract_ms", extract_ms},
                          {"compare_ms", compare_ms}};
      if (args.png) j["png"] = args.png->string();
      ctx.out << j.dump(2) << "\n";
      return kExitOk;
    }
    ctx.out << "reference      " << DescribeLand(a) << "\n"
            << "target         " << DescribeLand(b) << "\n"
            << "land score     " << Describe(r) << "\n"
            << "time           signatures " << Fixed(extract_ms, 0) << " ms, compare "
            << Fixed(compare_ms, 3) << " ms\n";
    if (args.png) ctx.out << "picture        " << args.png->string() << "\n";
    return kExitOk;
  }

  std::unique_ptr<Store> store;
  const Bullet a = LoadBullet(ctx, args.a, options, store);
  const Bullet b = LoadBullet(ctx, args.b, options, store);
  const double extract_ms = MsSince(t0);
  const auto t1 = Clock::now();
  const BulletComparison r = CompareBullets(a.Prepared(), b.Prepared());
  const double compare_ms = MsSince(t1);
  auto land_of = [](const Bullet& x, int land) -> const Land& {
    return *x.lands[static_cast<size_t>(land - 1)];
  };
  if (args.png) {
    std::vector<std::pair<const Land*, const Land*>> pairs;
    std::vector<LandComparison> results;
    for (const LandPair& p : r.pairs) {
      pairs.emplace_back(&land_of(a, p.land_a), &land_of(b, p.land_b));
      results.push_back(p.result);
    }
    WriteSignaturesPng(pairs, results,
                       {"bullet-to-bullet comparison (" + std::string(kBulletMethod) + "): score " +
                            Fixed(r.score, 3) + " at phase " + std::to_string(r.phase) +
                            " (next best phase " + Fixed(r.runner_up, 3) + ")",
                        "reference " + (a.label.find(',') == std::string::npos
                                            ? a.label
                                            : std::to_string(a.lands.size()) + " land files"),
                        "target " + (b.label.find(',') == std::string::npos
                                         ? b.label
                                         : std::to_string(b.lands.size()) + " land files")},
                       *args.png);
  }
  if (ctx.json) {
    nlohmann::json pairs = nlohmann::json::array();
    for (const LandPair& p : r.pairs) {
      nlohmann::json j = LandJson(p.result);
      j["land_a"] = p.land_a;
      j["land_b"] = p.land_b;
      pairs.push_back(std::move(j));
    }
    nlohmann::json matrix = nlohmann::json::array();
    for (const auto& row : r.matrix) {
      nlohmann::json jr = nlohmann::json::array();
      for (double v : row) jr.push_back(std::isfinite(v) ? nlohmann::json(v) : nullptr);
      matrix.push_back(std::move(jr));
    }
    nlohmann::json j = {{"kind", "bullet"},
                        {"method", kBulletMethod},
                        {"reference", a.label},
                        {"target", b.label},
                        {"score", r.score},
                        {"phase", r.phase},
                        {"lands", r.lands},
                        {"runner_up", r.runner_up},
                        {"pairs", pairs},
                        {"phase_means", r.phase_means},
                        {"phase_sums", r.phase_sums},
                        {"matrix", matrix},
                        {"extract_ms", extract_ms},
                        {"compare_ms", compare_ms}};
    if (args.png) j["png"] = args.png->string();
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  ctx.out << "reference      " << a.label << "  (" << a.Prepared().Present() << " of "
          << a.lands.size() << " lands)\n"
          << "target         " << b.label << "  (" << b.Prepared().Present() << " of "
          << b.lands.size() << " lands)\n"
          << "bullet score   " << Fixed(r.score, 3) << "  (mean land score at phase " << r.phase
          << ": land i faces land i+" << r.phase << "; next best phase " << Fixed(r.runner_up, 3)
          << ")\n";
  TextTable table({"LAND A", "LAND B", "SCORE", "CCF", "CMS", "D UM", "LAG UM"});
  for (const LandPair& p : r.pairs) {
    table.Add({std::to_string(p.land_a), std::to_string(p.land_b), Fixed(p.result.score, 3),
               Fixed(p.result.ccf, 3), std::to_string(p.result.cms), Fixed(p.result.d_um, 2),
               Fixed(p.result.lag_um, 0)});
  }
  ctx.out << table.Render();
  ctx.out << "phases         ";
  for (size_t p = 0; p < r.phase_means.size(); ++p) {
    ctx.out << (p ? "  " : "") << p << ":" << Fixed(r.phase_means[p], 3);
  }
  ctx.out << "\n"
          << "time           signatures " << Fixed(extract_ms, 0) << " ms, compare "
          << Fixed(compare_ms, 2) << " ms\n";
  if (args.png) ctx.out << "picture        " << args.png->string() << "\n";
  return kExitOk;
}

bool IsBulletTruth(const std::filesystem::path& truth) {
  return ReadCsvFile(truth).Column("land_id").has_value();
}

int CmdEvalBullets(Context& ctx, const EvalArgs& args) {
  if (args.rotate_random) throw Error("--rotate-random applies to cartridge cases, not bullets");
  const CsvTable truth = ReadCsvFile(args.truth);
  const auto path_col = truth.Column("path"), source_col = truth.Column("source");
  const auto id_col = truth.Column("land_id");
  const auto bullet_col = truth.Column("bullet"), land_col = truth.Column("land");
  if (!path_col || !source_col || !id_col) {
    throw Error(args.truth.string() + ": a bullet set needs the columns path, source and land_id");
  }
  struct Item {
    std::string path, source, land_id, bullet;
    int land = 0;
    std::optional<Land> land_data;
    double ms = 0;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < truth.rows.size(); ++i) {
    const auto& row = truth.rows[i];
    Item it;
    it.path = row[*path_col];
    it.source = row[*source_col];
    it.land_id = row[*id_col];
    const std::string where = args.truth.string() + ":" + std::to_string(truth.row_lines[i]);
    if (it.path.empty() || it.source.empty() || it.land_id.empty()) {
      throw Error(where + ": path, source and land_id must not be empty");
    }
    if (bullet_col && land_col) {
      it.bullet = row[*bullet_col];
      try {
        it.land = std::stoi(row[*land_col]);
      } catch (const std::exception&) {
        throw Error(where + ": land '" + row[*land_col] + "' is not a number");
      }
      if (it.land < 1 || it.land > 64) throw Error(where + ": land must lie in 1..64");
    }
    items.push_back(std::move(it));
  }
  if (items.size() < 2) throw Error(args.truth.string() + ": needs at least two land scans");
  int jobs = args.jobs > 0 ? args.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(1, jobs);
  const std::filesystem::path base = args.truth.parent_path();
  const LandOptions options;
  const auto t_prep = Clock::now();
  ParallelFor(items.size(), jobs, [&](size_t i) {
    const auto t0 = Clock::now();
    items[i].land_data = LandFromFile(base / items[i].path, options);
    items[i].ms = MsSince(t0);
  });
  const double prep_wall_s = MsSince(t_prep) / 1000;

  std::vector<PairScore> pairs;
  std::vector<LandComparison> results;
  const auto t_cmp = Clock::now();
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = i + 1; j < items.size(); ++j) {
      const LandComparison r =
          CompareLands(*items[i].land_data->prepared, *items[j].land_data->prepared);
      PairScore p;
      p.a = static_cast<int>(i);
      p.b = static_cast<int>(j);
      p.score = r.score;
      p.same_source = items[i].land_id == items[j].land_id;
      pairs.push_back(p);
      results.push_back(r);
    }
  }
  const double ms_per_land = MsSince(t_cmp) / static_cast<double>(pairs.size());
  const EvalMetrics m = ComputeEvalMetrics(static_cast<int>(items.size()), pairs);
  // The coarse search descriptor: cosines of every land pair (docs/BULLETS.md).
  std::vector<std::vector<float>> descriptors;
  for (const Item& it : items) {
    descriptors.push_back(BulletDescriptor(it.land_data->signature, it.path));
  }
  std::vector<PairScore> coarse_pairs = pairs;
  for (PairScore& p : coarse_pairs) {
    const auto& da = descriptors[static_cast<size_t>(p.a)];
    const auto& db = descriptors[static_cast<size_t>(p.b)];
    double dot = 0;
    for (size_t k = 0; k < da.size(); ++k) dot += double(da[k]) * db[k];
    p.score = dot;
  }
  const EvalMetrics cm = ComputeEvalMetrics(static_cast<int>(items.size()), coarse_pairs);

  // Bullets: the lands of one (source, bullet).
  std::map<std::pair<std::string, std::string>, Bullet> bullets;
  std::map<std::pair<std::string, std::string>, std::map<int, std::string>> land_ids;
  int n_lands = 0;
  if (bullet_col && land_col) {
    for (const Item& it : items) n_lands = std::max(n_lands, it.land);
    for (const Item& it : items) {
      const auto key = std::make_pair(it.source, it.bullet);
      Bullet& b = bullets[key];
      b.label = it.source + "/" + it.bullet;
      b.lands.resize(static_cast<size_t>(n_lands));
      if (b.lands[static_cast<size_t>(it.land - 1)]) {
        throw Error(args.truth.string() + ": " + b.label + " land " + std::to_string(it.land) +
                    " appears twice");
      }
      b.lands[static_cast<size_t>(it.land - 1)] = it.land_data;
      land_ids[key][it.land] = it.land_id;
    }
  }
  struct BulletRow {
    std::string a, b;
    bool same_source = false;
    double score = 0, runner_up = 0;
    int phase = 0;
    std::optional<int> expected_phase;  // from the truth, when it pairs any lands
    bool right = false;
  };
  std::vector<BulletRow> bullet_rows;
  std::vector<PairScore> bullet_pairs;
  std::vector<std::pair<std::string, std::string>> keys;
  for (const auto& [k, b] : bullets) keys.push_back(k);
  for (size_t i = 0; i < keys.size(); ++i) {
    for (size_t j = i + 1; j < keys.size(); ++j) {
      const Bullet& a = bullets[keys[i]];
      const Bullet& b = bullets[keys[j]];
      const BulletComparison r = CompareBullets(a.Prepared(), b.Prepared());
      BulletRow row;
      row.a = a.label;
      row.b = b.label;
      row.same_source = keys[i].first == keys[j].first;
      row.score = r.score;
      row.runner_up = r.runner_up;
      row.phase = r.phase;
      // The phase the truth implies: land_b - land_a for lands sharing a land_id.
      std::set<int> phases;
      for (const auto& [la, ida] : land_ids[keys[i]]) {
        for (const auto& [lb, idb] : land_ids[keys[j]]) {
          if (ida == idb) phases.insert(((lb - la) % n_lands + n_lands) % n_lands);
        }
      }
      if (phases.size() == 1) row.expected_phase = *phases.begin();
      row.right = row.expected_phase && *row.expected_phase == r.phase;
      bullet_rows.push_back(row);
      PairScore p;
      p.a = static_cast<int>(i);
      p.b = static_cast<int>(j);
      p.score = r.score;
      p.same_source = row.same_source;
      bullet_pairs.push_back(p);
    }
  }
  const EvalMetrics bm = ComputeEvalMetrics(static_cast<int>(keys.size()), bullet_pairs);
  int with_truth = 0, right = 0;
  for (const BulletRow& b : bullet_rows) {
    if (b.expected_phase) {
      ++with_truth;
      right += b.right;
    }
  }

  if (args.pairs_csv) {
    std::string text =
        "path_a,path_b,land_id_a,land_id_b,same_land,score,ccf,cms,striae,d_um,d_rel,lag_um,"
        "overlap_um,coarse_cosine\n";
    for (size_t k = 0; k < pairs.size(); ++k) {
      const Item& a = items[static_cast<size_t>(pairs[k].a)];
      const Item& b = items[static_cast<size_t>(pairs[k].b)];
      const LandComparison& r = results[k];
      text += CsvEscape(a.path) + "," + CsvEscape(b.path) + "," + CsvEscape(a.land_id) + "," +
              CsvEscape(b.land_id) + "," + (pairs[k].same_source ? "1" : "0") + "," +
              Fixed(r.score, 4) + "," + Fixed(r.ccf, 4) + "," + std::to_string(r.cms) + "," +
              std::to_string(r.striae) + "," + Fixed(r.d_um, 3) + "," + Fixed(r.d_rel, 3) + "," +
              Fixed(r.lag_um, 1) + "," + Fixed(r.overlap_um, 1) + "," +
              Fixed(coarse_pairs[k].score, 4) + "\n";
    }
    WriteFileAtomically(*args.pairs_csv, text, "pair table");
  }

  auto num = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  if (ctx.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const BulletRow& b : bullet_rows) {
      rows.push_back({{"a", b.a},
                      {"b", b.b},
                      {"same_source", b.same_source},
                      {"score", b.score},
                      {"runner_up", b.runner_up},
                      {"phase", b.phase},
                      {"expected_phase", b.expected_phase ? nlohmann::json(*b.expected_phase)
                                                          : nlohmann::json(nullptr)},
                      {"right_pairing", b.right}});
    }
    const nlohmann::json j = {{"truth", args.truth.string()},
                              {"method", kBulletMethod},
                              {"lands", items.size()},
                              {"land_level",
                               {{"pairs", m.pairs},
                                {"km", m.km},
                                {"knm", m.knm},
                                {"auc", num(m.auc)},
                                {"eer", num(m.eer)},
                                {"min_km", num(m.min_km)},
                                {"max_knm", num(m.max_knm)},
                                {"top1", num(m.top1)},
                                {"queries", m.queries}}},
                              {"coarse_descriptor",
                               {{"key", BulletDescriptorKey()},
                                {"auc", num(cm.auc)},
                                {"min_km", num(cm.min_km)},
                                {"max_knm", num(cm.max_knm)},
                                {"top1", num(cm.top1)}}},
                              {"bullet_level",
                               {{"bullets", keys.size()},
                                {"pairs", bm.pairs},
                                {"km", bm.km},
                                {"knm", bm.knm},
                                {"auc", num(bm.auc)},
                                {"min_km", num(bm.min_km)},
                                {"max_knm", num(bm.max_knm)},
                                {"pairings_checked", with_truth},
                                {"pairings_right", right},
                                {"comparisons", rows}}},
                              {"ms_per_land_comparison", ms_per_land},
                              {"signature_wall_seconds", prep_wall_s},
                              {"jobs", jobs}};
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  auto txt = [](double v, int digits) { return std::isfinite(v) ? Fixed(v, digits) : "n/a"; };
  ctx.out << "evaluated       " << args.truth.string() << " (" << items.size()
          << " land scans, method " << kBulletMethod << ")\n"
          << "land pairs      " << m.pairs << "  (" << m.km << " same land, " << m.knm
          << " different lands)\n"
          << "ROC AUC         " << txt(m.auc, 4) << "\n"
          << "EER             " << txt(100 * m.eer, 2) << " %\n"
          << "lowest KM       " << txt(m.min_km, 3) << "\n"
          << "highest KNM     " << txt(m.max_knm, 3) << "\n"
          << "coarse cosine   same land lowest " << txt(cm.min_km, 3)
          << ", different lands highest " << txt(cm.max_knm, 3) << ", AUC " << txt(cm.auc, 4)
          << " (" << BulletDescriptorKey().substr(0, 6) << " descriptor)\n";
  if (!bullet_rows.empty()) {
    ctx.out << "bullets         " << keys.size() << " (" << bm.km << " same-barrel pairs, "
            << bm.knm << " different-barrel pairs)\n"
            << "bullet scores   lowest KM " << txt(bm.min_km, 3) << ", highest KNM "
            << txt(bm.max_knm, 3) << "\n"
            << "right pairing   " << right << " of " << with_truth
            << " bullet pairs whose truth pairs lands\n";
    TextTable table({"BULLET A", "BULLET B", "SAME", "SCORE", "PHASE", "TRUE PHASE", "NEXT"});
    for (const BulletRow& b : bullet_rows) {
      table.Add({b.a, b.b, b.same_source ? "yes" : "no", Fixed(b.score, 3), std::to_string(b.phase),
                 b.expected_phase ? std::to_string(*b.expected_phase) : "-",
                 Fixed(b.runner_up, 3)});
    }
    ctx.out << table.Render();
  }
  ctx.out << "time            " << Fixed(ms_per_land, 4) << " ms per land comparison (one core); "
          << "signatures " << Fixed(prep_wall_s, 1) << " s on " << jobs << " threads\n";
  return kExitOk;
}

int CmdBenchBullets(Context& ctx, const BenchBulletsArgs& args) {
  if (args.repeat < 1) throw Error("--repeat must be at least 1");
  const CvSingleThread cv_single;  // restored when the command returns
  std::vector<Surface> scans;
  std::vector<std::string> labels;
  std::string source;
  const auto data = FindDataDir(args.data);
  if (data && std::filesystem::exists(*data / "bullet" / "hamby252" / "truth.csv")) {
    const std::filesystem::path dir = *data / "bullet" / "hamby252";
    const CsvTable truth = ReadCsvFile(dir / "truth.csv");
    const auto path_col = truth.Column("path");
    if (!path_col) throw Error((dir / "truth.csv").string() + ": no path column");
    for (const auto& row : truth.rows) {
      const std::vector<std::byte> bytes = ReadWholeFile(dir / row[*path_col]);
      scans.push_back(ReadScanFromMemory(bytes, row[*path_col], ScanReadOptions{}));
      labels.push_back(row[*path_col]);
    }
    source = "Hamby 252 (" + dir.string() + ")";
  } else {
    SynthLandOptions o;
    for (int land = 0; land < 12; ++land) {
      scans.push_back(MakeSynthLand(o, 0, land % 6, land / 6));
      labels.push_back("synthetic land " + std::to_string(land));
    }
    source = "synthetic lands (real data not found)";
  }
  std::vector<double> extract_ms;
  std::vector<std::shared_ptr<const PreparedLand>> lands;
  for (size_t i = 0; i < scans.size(); ++i) {
    const auto t0 = Clock::now();
    const LandSignature s = ExtractLandSignature(scans[i], labels[i]);
    lands.push_back(PrepareLand(s, labels[i]));
    extract_ms.push_back(MsSince(t0));
  }
  // Land to land: every pair, `repeat` times.
  int64_t land_count = 0;
  double checksum = 0;
  const auto t_land = Clock::now();
  for (int rep = 0; rep < args.repeat; ++rep) {
    for (size_t i = 0; i < lands.size(); ++i) {
      for (size_t j = i + 1; j < lands.size(); ++j) {
        checksum += CompareLands(*lands[i], *lands[j]).score;
        ++land_count;
      }
    }
  }
  const double land_ms = MsSince(t_land) / static_cast<double>(land_count);
  // Bullet to bullet, 6 x 6: two bullets of six lands each from the scans (cycled).
  PreparedBullet a{"A", {}}, b{"B", {}};
  for (size_t i = 0; i < 6; ++i) {
    a.lands.push_back(lands[i % lands.size()]);
    b.lands.push_back(lands[(i + 5) % lands.size()]);
  }
  const int bullet_reps = std::max(1, args.repeat / 4);
  const auto t_bullet = Clock::now();
  for (int rep = 0; rep < bullet_reps; ++rep) checksum += CompareBullets(a, b).score;
  const double bullet_ms = MsSince(t_bullet) / bullet_reps;
  std::vector<double> sorted = extract_ms;
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (double v : sorted) sum += v;
  const nlohmann::json j = {{"source", source},
                            {"threads", 1},
                            {"land_scans", scans.size()},
                            {"extract_ms",
                             {{"mean", sum / sorted.size()},
                              {"median", sorted[sorted.size() / 2]},
                              {"max", sorted.back()}}},
                            {"land_comparisons", land_count},
                            {"land_compare_ms", land_ms},
                            {"bullet_comparisons", bullet_reps},
                            {"bullet_compare_ms", bullet_ms},
                            {"bullet_lands", 6},
                            {"checksum", checksum},
                            {"peak_rss_mib", PeakRssMiB()}};
  if (ctx.json) {
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  ctx.out << "bullets, one thread: " << source << ", " << scans.size() << " land scans\n"
          << "signature   mean " << Fixed(sum / sorted.size(), 1) << " ms, median "
          << Fixed(sorted[sorted.size() / 2], 1) << " ms, max " << Fixed(sorted.back(), 1)
          << " ms per land scan (after reading)\n"
          << "land        " << Fixed(land_ms, 4) << " ms per land-to-land comparison ("
          << land_count << " timed)\n"
          << "bullet      " << Fixed(bullet_ms, 3) << " ms per 6 x 6 bullet-to-bullet comparison ("
          << bullet_reps << " timed)\n"
          << "peak resident memory: " << Fixed(PeakRssMiB(), 0) << " MiB\n";
  return kExitOk;
}

}  // namespace bien::cli

#include "tools/compare.h"

#include "tools/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <random>
#include <thread>

#include "core/csv.h"
#include "core/error.h"
#include "core/file.h"
#include "core/hash.h"
#include "imaging/preprocess.h"
#include "imaging/surface_io.h"
#include "imaging/transform.h"
#include "matching/calibration.h"
#include "matching/cmc.h"
#include "matching/descriptor.h"
#include "matching/metrics.h"
#include "storage/store.h"
#include "tools/bullet_commands.h"
#include "tools/compare_picture.h"
#include "tools/output.h"

namespace bien::cli {
namespace {

// A scan as given on the command line: its heights and where they came from.
Operand LoadFile(const std::filesystem::path& path, std::optional<double> pixel_size_um) {
  Operand op;
  op.label = path.string();
  const std::vector<std::byte> bytes = ReadWholeFile(path);
  op.sha256 = Sha256Hex(bytes);
  ScanReadOptions options;
  options.pixel_size_um = pixel_size_um;
  op.surface = ReadScanFromMemory(bytes, op.label, options);
  ValidateSurface(op.surface, op.label);
  return op;
}

// A stored exhibit's breech-face scan, read from its untouched original the
// way it was read at ingest (stored spacing and height scale).
Operand LoadStored(const Store& store, const std::string& ref) {
  const ExhibitRecord e = store.FindExhibit(ref);
  const std::string name = e.case_ref + "/" + e.exhibit_ref;
  if (e.kind != ExhibitKind::kCartridgeCase) {
    throw Error(name + ": is a " + ToString(e.kind) +
                "; only cartridge-case (breech-face) comparison is available");
  }
  const auto scans = store.ScansOf(e.id);
  if (scans.empty()) throw Error(name + ": has no scans");
  return ReadStoredScan(store.ObjectPath(scans.front().sha256), scans.front(), name);
}

Operand LoadOperand(const Context& ctx, const std::string& arg, std::optional<double> px,
                    std::unique_ptr<Store>& store) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(arg, ec)) return LoadFile(arg, px);
  if (!ctx.node) {
    throw Error(arg + ": no such file (to compare a stored exhibit, name the node with --node)");
  }
  if (!store) store = Store::Open(ctx.NodeDir());
  return LoadStored(*store, arg);
}

// The two coarse vectors of a processed breech face (docs/DESCRIPTOR.md):
// the index's descriptor and the ring spectra compared at the best rotation.
// A surface without them (too little data around the firing pin) keeps the
// reason instead; the fine comparison does not depend on them.
struct Coarse {
  std::vector<float> descriptor;
  std::vector<float> rings;  // around the found centre
  RingQuery ring_query;      // and around the centre search's offsets
  std::string error;
  bool ok() const { return error.empty(); }
};

Coarse CoarseOf(const Surface& processed, const std::string& label) {
  Coarse c;
  try {
    c.descriptor = BreechFaceDescriptor(processed, label);
    c.ring_query = BreechFaceRingQuery(processed, label);
    c.rings = c.ring_query.spectra.front();
  } catch (const Error& e) {
    c = Coarse{};
    c.error = e.what();
  }
  return c;
}

struct CoarsePair {
  double cosine = std::numeric_limits<double>::quiet_NaN();
  RingMatch rings{std::numeric_limits<double>::quiet_NaN(), 0};
};

CoarsePair CompareCoarse(const Coarse& a, const Coarse& b) {
  CoarsePair p;
  if (!a.ok() || !b.ok()) return p;
  p.cosine = DescriptorCosine(a.descriptor, b.descriptor);
  // Each side's centre search against the other's found centre; the better
  // one, turned into b's terms (b = a rotated by the angle).
  p.rings = RingCorrelation(a.ring_query, b.rings);
  const RingMatch back = RingCorrelation(b.ring_query, a.rings);
  if (back.score > p.rings.score) {
    p.rings = back;
    p.rings.angle_deg = back.angle_deg > 0 ? 360 - back.angle_deg : 0;
  }
  return p;
}

nlohmann::json RegistrationJson(const Registration& r) {
  return {{"angle_deg", r.angle_deg}, {"dx_um", r.dx_um}, {"dy_um", r.dy_um}};
}

nlohmann::json DirectionJson(const CmcDirection& d) {
  nlohmann::json cells = nlohmann::json::array();
  for (const CmcCell& c : d.cells) {
    nlohmann::json j = {{"row", c.row},
                        {"col", c.col},
                        {"x", c.x},
                        {"y", c.y},
                        {"width", c.width},
                        {"height", c.height},
                        {"valid_share", c.valid_share},
                        {"used", c.used}};
    if (c.used) {
      j["ccf"] = c.ccf;
      j["registration"] = RegistrationJson(c.registration);
      j["congruent"] = c.congruent;
    }
    cells.push_back(std::move(j));
  }
  return {{"congruent", d.congruent},
          {"valid_cells", d.valid_cells},
          {"registration", RegistrationJson(d.registration)},
          {"cells", cells}};
}

std::string DescribeRegistration(const Registration& r) {
  return "rotate " + Fixed(r.angle_deg, 1) + " deg, shift (" + Fixed(r.dx_um, 0) + ", " +
         Fixed(r.dy_um, 0) + ") um";
}

// The node's known-non-match distribution for the comparator, if a node is named.
std::optional<KnmDistribution> NodeDistribution(const Context& ctx, std::unique_ptr<Store>& store) {
  if (!ctx.node) return std::nullopt;
  if (!store) store = Store::Open(ctx.NodeDir());
  return KnmDistribution(store->KnmScores(kCmcMethod));
}

}  // namespace

Operand ReadStoredScan(const std::filesystem::path& object, const ScanRecord& scan,
                       const std::string& label) {
  Operand op;
  op.label = label;
  op.sha256 = scan.sha256;
  const std::vector<std::byte> bytes = ReadWholeFile(object);
  if (Sha256Hex(bytes) != scan.sha256) {
    throw Error(label + ": the stored original does not match its hash; run bien verify");
  }
  ScanReadOptions options;
  if (scan.meta.intensity) options.pixel_size_um = scan.meta.dx_m * 1e6;
  op.surface = ReadScanFromMemory(bytes, label, options);
  op.surface.dx_m = scan.meta.dx_m;
  op.surface.dy_m = scan.meta.dy_m;
  if (scan.meta.z_scale != 1.0) {
    for (float& v : op.surface.z) v = static_cast<float>(v * scan.meta.z_scale);
  }
  return op;
}

Surface Preprocessed(const Operand& op, PreprocessReport* report) {
  return PreprocessBreechFace(op.surface, op.label, PreprocessOptions{}, report);
}

int CmdCompare(Context& ctx, const CompareArgs& args) {
  if (IsBulletCompare(ctx, args)) return CmdCompareBullets(ctx, args);
  std::unique_ptr<Store> store;
  const Operand a = LoadOperand(ctx, args.a, args.pixel_size_um, store);
  const Operand b = LoadOperand(ctx, args.b, args.pixel_size_um, store);
  const auto t0 = Clock::now();
  PreprocessReport ra, rb;
  const Surface pa = Preprocessed(a, &ra);
  const Surface pb = Preprocessed(b, &rb);
  const double preprocess_ms = MsSince(t0);
  const auto t1 = Clock::now();
  const CmcOptions options;
  const auto prep_a = PrepareCmc(pa, a.label, options);
  const auto prep_b = PrepareCmc(pb, b.label, options);
  const CmcResult r = CompareCmc(*prep_a, *prep_b, options);
  const double compare_ms = MsSince(t1);
  const Coarse coarse_a = CoarseOf(pa, a.label), coarse_b = CoarseOf(pb, b.label);
  const CoarsePair coarse = CompareCoarse(coarse_a, coarse_b);
  const std::string coarse_error = !coarse_a.ok() ? coarse_a.error : coarse_b.error;

  const std::optional<KnmDistribution> knm = NodeDistribution(ctx, store);
  const std::string strength =
      knm ? knm->Describe(r.combined)
          : "unknown: no node named, so no known-non-match distribution (see docs/SCORES.md)";

  if (args.png) {
    ComparisonPicture picture;
    picture.reference_label = a.label;
    picture.target_label = b.label;
    picture.caption_lines = {"CMC " + Fixed(r.combined, 1) + "  (forward " +
                                 std::to_string(r.forward.congruent) + " of " +
                                 std::to_string(r.forward.valid_cells) + ", backward " +
                                 std::to_string(r.backward.congruent) + " of " +
                                 std::to_string(r.backward.valid_cells) + " congruent cells)",
                             "target registered: " + DescribeRegistration(r.forward.registration),
                             "strength: " + strength};
    WriteComparisonPng(pa, pb, r, picture, *args.png);
  }

  if (ctx.json) {
    nlohmann::json j = {{"reference", {{"label", a.label}, {"sha256", a.sha256}}},
                        {"target", {{"label", b.label}, {"sha256", b.sha256}}},
                        {"method", kCmcMethod},
                        {"combined", r.combined},
                        {"forward", DirectionJson(r.forward)},
                        {"backward", DirectionJson(r.backward)},
                        {"registration", RegistrationJson(r.forward.registration)},
                        {"strength", {{"text", strength}}},
                        {"coarse", nlohmann::json::object()},
                        {"preprocess_ms", preprocess_ms},
                        {"compare_ms", compare_ms}};
    if (knm) {
      const Exceedance e = knm->At(r.combined);
      j["strength"]["knm_at_least"] = e.at_least;
      j["strength"]["knm_total"] = e.total;
      j["strength"]["rate"] = std::isfinite(e.rate) ? nlohmann::json(e.rate) : nullptr;
      j["strength"]["rate_upper95"] = e.rate_upper95;
    }
    if (coarse_error.empty()) {
      j["coarse"] = {{"descriptor", DescriptorKey()},
                     {"cosine", coarse.cosine},
                     {"ring_spectra", RingSpectraKey()},
                     {"ring_score", coarse.rings.score},
                     {"ring_angle_deg", coarse.rings.angle_deg}};
    } else {
      j["coarse"] = {{"error", coarse_error}};
    }
    if (args.png) j["png"] = args.png->string();
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  auto side = [](const Operand& op, const Surface& s, const CmcDirection& d) {
    return op.label + "  (" + std::to_string(s.width) + " x " + std::to_string(s.height) +
           " px at " + Fixed(s.dx_m * 1e6, 3) + " um after preprocessing; " +
           std::to_string(d.valid_cells) + " cells used)";
  };
  ctx.out << "reference      " << side(a, pa, r.forward) << "\n"
          << "target         " << side(b, pb, r.backward) << "\n"
          << "CMC score      " << Fixed(r.combined, 1) << "  (forward " << r.forward.congruent
          << " of " << r.forward.valid_cells << ", backward " << r.backward.congruent << " of "
          << r.backward.valid_cells << " congruent cells)\n"
          << "registration   target = reference " << DescribeRegistration(r.forward.registration)
          << "\n"
          << "strength       " << strength << "\n"
          << "coarse         "
          << (coarse_error.empty() ? "descriptor cosine " + Fixed(coarse.cosine, 3) +
                                         ", ring correlation " + Fixed(coarse.rings.score, 3) +
                                         " at " + Fixed(coarse.rings.angle_deg, 1) + " deg"
                                   : "n/a: " + coarse_error)
          << "\n"
          << "time           preprocess " << Fixed(preprocess_ms, 0) << " ms, compare "
          << Fixed(compare_ms, 0) << " ms\n";
  if (args.png) ctx.out << "picture        " << args.png->string() << "\n";
  return kExitOk;
}

namespace {

struct EvalItem {
  std::string path;
  std::string source;
  std::string sha256;
  std::shared_ptr<const CmcPrepared> prepared;
  Coarse coarse;
  double preprocess_ms = 0;
};

class EvalProgress {
 public:
  EvalProgress(bool enabled, std::ostream& out, std::string what, size_t total)
      : enabled_(enabled), out_(out), what_(std::move(what)), total_(total) {}
  void Step() {
    const size_t done = ++done_;
    if (!enabled_ || (done % 8 != 0 && done != total_)) return;
    std::lock_guard lock(mutex_);
    out_ << "\r  " << what_ << " " << done << "/" << total_ << std::flush;
    if (done == total_) out_ << "\n";
  }

 private:
  bool enabled_;
  std::ostream& out_;
  std::string what_;
  size_t total_;
  std::atomic<size_t> done_{0};
  std::mutex mutex_;
};

nlohmann::json NumberOrNull(double v) { return std::isfinite(v) ? nlohmann::json(v) : nullptr; }

}  // namespace

int CmdEval(Context& ctx, const EvalArgs& args) {
  if (IsBulletTruth(args.truth)) return CmdEvalBullets(ctx, args);
  const CsvTable truth = ReadCsvFile(args.truth);
  const auto path_col = truth.Column("path");
  const auto source_col = truth.Column("source");
  if (!path_col || !source_col) {
    throw Error(args.truth.string() + ": needs the columns path and source");
  }
  const std::filesystem::path base = args.truth.parent_path();
  std::vector<EvalItem> items;
  for (size_t i = 0; i < truth.rows.size(); ++i) {
    EvalItem item;
    item.path = truth.rows[i][*path_col];
    item.source = truth.rows[i][*source_col];
    if (item.path.empty() || item.source.empty()) {
      throw Error(args.truth.string() + ":" + std::to_string(truth.row_lines[i]) +
                  ": path and source must not be empty");
    }
    items.push_back(std::move(item));
  }
  if (items.size() < 2) throw Error(args.truth.string() + ": needs at least two scans");
  int jobs = args.jobs > 0 ? args.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(1, jobs);
  const CvSingleThread cv_single;  // parallel over comparisons instead

  // Random rotations, one per scan, drawn up front so they do not depend on
  // thread scheduling.
  std::vector<double> rotation(items.size(), 0.0);
  if (args.rotate_random) {
    std::mt19937_64 rng(*args.rotate_random);
    std::uniform_real_distribution<double> angle(0.0, 360.0);
    for (double& r : rotation) r = angle(rng);
  }

  const CmcOptions options;
  const auto t_prep = Clock::now();
  EvalProgress prep_progress(ctx.progress, ctx.err, "preprocessed", items.size());
  ParallelFor(items.size(), jobs, [&](size_t i) {
    const auto t0 = Clock::now();
    Operand op = LoadFile(base / items[i].path, args.pixel_size_um);
    items[i].sha256 = op.sha256;
    if (rotation[i] != 0) op.surface = RotateSurface(op.surface, rotation[i]);
    const Surface processed = Preprocessed(op, nullptr);
    items[i].prepared = PrepareCmc(processed, items[i].path, options);
    items[i].preprocess_ms = MsSince(t0);
    items[i].coarse = CoarseOf(processed, items[i].path);
    prep_progress.Step();
  });
  const double prep_wall_s = MsSince(t_prep) / 1000;

  std::vector<PairScore> pairs;
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = i + 1; j < items.size(); ++j) {
      PairScore p;
      p.a = static_cast<int>(i);
      p.b = static_cast<int>(j);
      p.same_source = items[i].source == items[j].source;
      pairs.push_back(p);
    }
  }
  std::vector<double> ms(pairs.size());
  std::vector<CmcResult> results(args.pairs_csv ? pairs.size() : 0);
  std::vector<CoarsePair> coarse(pairs.size());
  const auto t_cmp = Clock::now();
  EvalProgress cmp_progress(ctx.progress, ctx.err, "compared", pairs.size());
  ParallelFor(pairs.size(), jobs, [&](size_t k) {
    const auto t0 = Clock::now();
    const CmcResult r =
        CompareCmc(*items[pairs[k].a].prepared, *items[pairs[k].b].prepared, options);
    pairs[k].score = r.combined;
    ms[k] = MsSince(t0);
    coarse[k] = CompareCoarse(items[pairs[k].a].coarse, items[pairs[k].b].coarse);
    if (!results.empty()) {
      results[k] = r;
      results[k].forward.cells.clear();
      results[k].backward.cells.clear();
    }
    cmp_progress.Step();
  });
  const double cmp_wall_s = MsSince(t_cmp) / 1000;
  const EvalMetrics m = ComputeEvalMetrics(static_cast<int>(items.size()), pairs);
  // The coarse scores ranked the same way: how well each would pick the
  // candidates the fine comparison sees (docs/DESCRIPTOR.md).
  std::string coarse_error;
  for (const EvalItem& item : items) {
    if (!item.coarse.ok()) {
      coarse_error = item.coarse.error;
      break;
    }
  }
  EvalMetrics m_cosine, m_rings;
  if (coarse_error.empty()) {
    std::vector<PairScore> by_cosine = pairs, by_rings = pairs;
    for (size_t k = 0; k < pairs.size(); ++k) {
      by_cosine[k].score = coarse[k].cosine;
      by_rings[k].score = coarse[k].rings.score;
    }
    m_cosine = ComputeEvalMetrics(static_cast<int>(items.size()), by_cosine);
    m_rings = ComputeEvalMetrics(static_cast<int>(items.size()), by_rings);
  }
  double total_ms = 0;
  for (double v : ms) total_ms += v;
  const double ms_per_comparison = total_ms / static_cast<double>(pairs.size());

  if (args.pairs_csv) {
    // Written whole to a temporary file, then renamed: never half a table.
    std::string text =
        "path_a,path_b,source_a,source_b,same_source,score,forward,backward,valid_cells_a,"
        "valid_cells_b,angle_deg,dx_um,dy_um,rotation_a_deg,rotation_b_deg,ms,cosine,ring_score,"
        "ring_angle_deg\n";
    for (size_t k = 0; k < pairs.size(); ++k) {
      const EvalItem& a = items[pairs[k].a];
      const EvalItem& b = items[pairs[k].b];
      const CmcResult& r = results[k];
      text += CsvEscape(a.path) + "," + CsvEscape(b.path) + "," + CsvEscape(a.source) + "," +
              CsvEscape(b.source) + "," + (pairs[k].same_source ? "1" : "0") + "," +
              Fixed(r.combined, 1) + "," + std::to_string(r.forward.congruent) + "," +
              std::to_string(r.backward.congruent) + "," + std::to_string(r.forward.valid_cells) +
              "," + std::to_string(r.backward.valid_cells) + "," +
              Fixed(r.forward.registration.angle_deg, 2) + "," +
              Fixed(r.forward.registration.dx_um, 1) + "," +
              Fixed(r.forward.registration.dy_um, 1) + "," + Fixed(rotation[pairs[k].a], 2) + "," +
              Fixed(rotation[pairs[k].b], 2) + "," + Fixed(ms[k], 1) + "," +
              (coarse_error.empty()
                   ? Fixed(coarse[k].cosine, 4) + "," + Fixed(coarse[k].rings.score, 4) + "," +
                         Fixed(coarse[k].rings.angle_deg, 2)
                   : std::string(",,")) +
              "\n";
    }
    WriteFileAtomically(*args.pairs_csv, text, "pair table");
  }

  // A node named with --node keeps the known-non-match scores for calibration.
  int recorded = 0;
  if (ctx.node) {
    std::vector<KnmScore> knm;
    for (const PairScore& p : pairs) {
      if (p.same_source || items[p.a].sha256 == items[p.b].sha256) continue;
      KnmScore s;
      s.sha_a = std::min(items[p.a].sha256, items[p.b].sha256);
      s.sha_b = std::max(items[p.a].sha256, items[p.b].sha256);
      s.score = p.score;
      knm.push_back(std::move(s));
    }
    auto store = Store::Open(ctx.NodeDir());
    recorded = store->RecordKnmScores(kCmcMethod, args.rotate_random ? "eval-rotated" : "eval", knm,
                                      ctx.actor);
  }

  if (ctx.json) {
    nlohmann::json j = {{"truth", args.truth.string()},
                        {"method", kCmcMethod},
                        {"scans", items.size()},
                        {"pairs", m.pairs},
                        {"km", m.km},
                        {"knm", m.knm},
                        {"auc", NumberOrNull(m.auc)},
                        {"eer", NumberOrNull(m.eer)},
                        {"min_km", NumberOrNull(m.min_km)},
                        {"max_knm", NumberOrNull(m.max_knm)},
                        {"top1", NumberOrNull(m.top1)},
                        {"top10", NumberOrNull(m.top10)},
                        {"queries", m.queries},
                        {"ms_per_comparison", ms_per_comparison},
                        {"comparison_wall_seconds", cmp_wall_s},
                        {"preprocess_wall_seconds", prep_wall_s},
                        {"jobs", jobs}};
    if (args.rotate_random) j["rotate_random_seed"] = *args.rotate_random;
    if (ctx.node) j["knm_scores_recorded"] = recorded;
    if (coarse_error.empty()) {
      auto coarse_json = [&](const EvalMetrics& c, const std::string& key) {
        return nlohmann::json{{"key", key},
                              {"auc", NumberOrNull(c.auc)},
                              {"eer", NumberOrNull(c.eer)},
                              {"min_km", NumberOrNull(c.min_km)},
                              {"max_knm", NumberOrNull(c.max_knm)},
                              {"top1", NumberOrNull(c.top1)},
                              {"top10", NumberOrNull(c.top10)}};
      };
      j["coarse"] = {{"descriptor", coarse_json(m_cosine, DescriptorKey())},
                     {"ring_spectra", coarse_json(m_rings, RingSpectraKey())}};
    } else {
      j["coarse"] = {{"error", coarse_error}};
    }
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  auto num = [](double v, int digits) { return std::isfinite(v) ? Fixed(v, digits) : "n/a"; };
  ctx.out << "evaluated       " << args.truth.string() << " (" << items.size() << " scans"
          << (args.rotate_random
                  ? ", each rotated at random, seed " + std::to_string(*args.rotate_random)
                  : "")
          << ")\n"
          << "pairs           " << m.pairs << "  (" << m.km << " known matches, " << m.knm
          << " known non-matches)\n"
          << "ROC AUC         " << num(m.auc, 4) << "\n"
          << "EER             " << num(100 * m.eer, 2) << " %\n"
          << "lowest KM       " << num(m.min_km, 1) << "\n"
          << "highest KNM     " << num(m.max_knm, 1) << "\n"
          << "top-1 / top-10  " << num(100 * m.top1, 1) << " % / " << num(100 * m.top10, 1)
          << " %  (" << m.queries << " scans with a mate)\n"
          << "time            " << Fixed(ms_per_comparison, 1) << " ms per comparison (one core), "
          << Fixed(cmp_wall_s, 1) << " s for all pairs on " << jobs << " threads; preprocessing "
          << Fixed(prep_wall_s, 1) << " s\n";
  if (coarse_error.empty()) {
    auto coarse_line = [&](const EvalMetrics& c) {
      return "AUC " + num(c.auc, 4) + ", top-1 / top-10 " + num(100 * c.top1, 1) + " % / " +
             num(100 * c.top10, 1) + " %\n";
    };
    ctx.out << "coarse cosine   " << coarse_line(m_cosine) << "coarse rings    "
            << coarse_line(m_rings);
  } else {
    ctx.out << "coarse scores   n/a: " << coarse_error << "\n";
  }
  if (ctx.node) {
    ctx.out << "recorded        " << recorded
            << " known-non-match scores into the node's distribution (" << kCmcMethod << ")\n";
  }
  return kExitOk;
}

int CmdCalibrate(Context& ctx, const CalibrateArgs& args) {
  if (args.max_pairs < 1) throw Error("--max-pairs must be at least 1");
  auto store = Store::Open(ctx.NodeDir());
  std::vector<ExhibitRecord> exhibits;
  std::map<std::string, int> firearms;
  for (auto& e : store->ListExhibits()) {
    if (e.kind != ExhibitKind::kCartridgeCase || !e.firearm_ref || e.scan_count == 0) continue;
    ++firearms[*e.firearm_ref];
    exhibits.push_back(std::move(e));
  }
  if (firearms.size() < 2) {
    throw Error(
        "calibrate needs cartridge cases of at least two firearms with a firearm "
        "reference (bien ingest --firearm REF); this node has " +
        std::to_string(firearms.size()));
  }
  std::vector<std::pair<size_t, size_t>> pairs;
  for (size_t i = 0; i < exhibits.size() && static_cast<int>(pairs.size()) < args.max_pairs; ++i) {
    for (size_t j = i + 1; j < exhibits.size() && static_cast<int>(pairs.size()) < args.max_pairs;
         ++j) {
      if (*exhibits[i].firearm_ref != *exhibits[j].firearm_ref) pairs.emplace_back(i, j);
    }
  }
  int jobs = args.jobs > 0 ? args.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(1, jobs);
  const CvSingleThread cv_single;  // restored when the command returns
  const CmcOptions options;
  std::vector<std::shared_ptr<const CmcPrepared>> prepared(exhibits.size());
  std::vector<std::string> sha(exhibits.size());
  std::vector<bool> needed(exhibits.size(), false);
  for (const auto& [i, j] : pairs) needed[i] = needed[j] = true;
  EvalProgress prep_progress(ctx.progress, ctx.err, "preprocessed", exhibits.size());
  std::mutex store_mutex;  // a Store is used from one thread at a time (storage/store.h)
  ParallelFor(exhibits.size(), jobs, [&](size_t i) {
    if (needed[i]) {
      const Operand op = [&] {
        std::lock_guard lock(store_mutex);
        return LoadStored(*store, "#" + std::to_string(exhibits[i].id.value));
      }();
      sha[i] = op.sha256;
      prepared[i] = PrepareCmc(Preprocessed(op, nullptr), op.label, options);
    }
    prep_progress.Step();
  });
  std::vector<KnmScore> scores(pairs.size());
  EvalProgress cmp_progress(ctx.progress, ctx.err, "compared", pairs.size());
  ParallelFor(pairs.size(), jobs, [&](size_t k) {
    const auto [i, j] = pairs[k];
    scores[k].sha_a = std::min(sha[i], sha[j]);
    scores[k].sha_b = std::max(sha[i], sha[j]);
    scores[k].score = CompareCmc(*prepared[i], *prepared[j], options).combined;
    cmp_progress.Step();
  });
  std::erase_if(scores, [](const KnmScore& s) { return s.sha_a == s.sha_b; });
  const int recorded = store->RecordKnmScores(kCmcMethod, "calibrate", scores, ctx.actor);
  const size_t total = store->KnmScores(kCmcMethod).size();
  if (ctx.json) {
    ctx.out << nlohmann::json{{"firearms", firearms.size()}, {"exhibits", exhibits.size()},
                              {"pairs", pairs.size()},       {"recorded", recorded},
                              {"distribution_size", total},  {"method", kCmcMethod}}
                   .dump(2)
            << "\n";
    return kExitOk;
  }
  ctx.out << "compared " << pairs.size() << " pairs of cartridge cases from " << firearms.size()
          << " different firearms (" << exhibits.size() << " exhibits)\n"
          << "recorded " << recorded << " known-non-match scores; the node's " << kCmcMethod
          << " distribution now holds " << total << "\n";
  return kExitOk;
}

int CmdBenchCompare(Context& ctx, const BenchCompareArgs& args) {
  if (args.pairs < 1) throw Error("--pairs must be at least 1");
  const auto data = FindDataDir(args.data);
  if (!data) throw Error("real data not found: pass --data or set BIEN_DATA_DIR");
  const std::filesystem::path dir = *data / "cartridge" / "fadul";
  const CsvTable truth = ReadCsvFile(dir / "truth.csv");
  const auto path_col = truth.Column("path");
  if (!path_col) throw Error((dir / "truth.csv").string() + ": no path column");
  const CvSingleThread cv_single;  // restored when the command returns
  const CmcOptions options;
  std::vector<std::shared_ptr<const CmcPrepared>> prepared;
  std::vector<double> preprocess_ms, prepare_ms;
  for (const auto& row : truth.rows) {
    const Operand op = LoadFile(dir / row[*path_col], std::nullopt);
    auto t0 = Clock::now();
    const Surface s = Preprocessed(op, nullptr);
    preprocess_ms.push_back(MsSince(t0));
    t0 = Clock::now();
    prepared.push_back(PrepareCmc(s, op.label, options));
    prepare_ms.push_back(MsSince(t0));
  }
  std::vector<double> ms;
  for (size_t i = 0; i < prepared.size() && static_cast<int>(ms.size()) < args.pairs; ++i) {
    for (size_t j = i + 1; j < prepared.size() && static_cast<int>(ms.size()) < args.pairs; ++j) {
      const auto t0 = Clock::now();
      CompareCmc(*prepared[i], *prepared[j], options);
      ms.push_back(MsSince(t0));
    }
  }
  auto stats = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    return nlohmann::json{{"mean", sum / v.size()},
                          {"median", v[v.size() / 2]},
                          {"p90", v[std::min(v.size() - 1, v.size() * 9 / 10)]},
                          {"max", v.back()}};
  };
  const nlohmann::json j = {{"scans", prepared.size()},
                            {"comparisons", ms.size()},
                            {"threads", 1},
                            {"preprocess_ms", stats(preprocess_ms)},
                            {"prepare_ms", stats(prepare_ms)},
                            {"compare_ms", stats(ms)},
                            {"peak_rss_mib", PeakRssMiB()}};
  if (ctx.json) {
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  auto line = [&](const char* name, const nlohmann::json& s) {
    ctx.out << name << "mean " << Fixed(s["mean"].get<double>(), 1) << " ms, median "
            << Fixed(s["median"].get<double>(), 1) << " ms, p90 "
            << Fixed(s["p90"].get<double>(), 1) << " ms, max " << Fixed(s["max"].get<double>(), 1)
            << " ms\n";
  };
  ctx.out << "Fadul breech faces, one thread: " << prepared.size() << " scans, " << ms.size()
          << " comparisons (both directions, full-circle rotation search)\n";
  line("preprocess  ", j["preprocess_ms"]);
  line("prepare     ", j["prepare_ms"]);
  line("compare     ", j["compare_ms"]);
  ctx.out << "peak resident memory: " << Fixed(PeakRssMiB(), 0) << " MiB\n";
  return kExitOk;
}

}  // namespace bien::cli

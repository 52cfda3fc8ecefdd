#include "tools/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <ostream>
#include <set>
#include <span>
#include <thread>

#include "core/error.h"
#include "matching/descriptor.h"
#include "matching/index.h"
#include "tools/cli.h"
#include "tools/compare.h"
#include "tools/output.h"
#include "tools/parallel.h"

namespace bien::cli {
namespace {

std::string Label(const ExhibitRecord& e) { return e.case_ref + "/" + e.exhibit_ref; }

// The first 3D scan of an exhibit (2D images are not in the coarse index:
// their descriptors are not comparable with those of topographies).
std::optional<ScanRecord> FirstTopography(const Store& store, ExhibitId exhibit) {
  for (const ScanRecord& s : store.ScansOf(exhibit)) {
    if (!s.meta.intensity) return s;
  }
  return std::nullopt;
}

// Computes the descriptors a partition's 3D breech-face scans lack (scans
// stored before descriptors existed, or under another descriptor version).
int BackfillDescriptors(Store& store, const Partition& partition, const std::string& key) {
  const auto lacking = store.ScansLackingDescriptor(key, ExhibitKind::kCartridgeCase);
  if (lacking.empty()) return 0;
  std::map<int64_t, ExhibitRecord> exhibits;
  for (ExhibitRecord& e : store.ListExhibits()) exhibits.emplace(e.id.value, std::move(e));
  int added = 0;
  for (const ScanRecord& scan : lacking) {
    const auto it = exhibits.find(scan.exhibit.value);
    if (scan.meta.intensity || it == exhibits.end() || !(PartitionOf(it->second) == partition)) {
      continue;
    }
    const std::string label = Label(it->second);
    try {
      const Operand op = ReadStoredScan(store.ObjectPath(scan.sha256), scan, label);
      store.PutDescriptor(scan.id, key, BreechFaceScanDescriptor(op.surface, label));
      ++added;
    } catch (const Error&) {
      // A breech face the descriptor cannot use stays out of the index; its
      // exhibit can still be compared one to one (bien compare).
    }
  }
  return added;
}

// The partition's index, brought up to date with the store: loaded when the
// saved one holds exactly the store's scans, updated in place when it only
// lacks or holds a few more, rebuilt otherwise (and always when the file is
// missing, damaged or of another descriptor key). Saved when changed.
std::shared_ptr<VectorIndex> SyncIndex(Store& store, const Partition& partition,
                                       const std::vector<DescriptorRow>& owners,
                                       std::string* note) {
  const std::string key = DescriptorKey();
  const int dim = DescriptorDim();
  const PartitionIndexes folder(store.dir() / "index");
  const std::filesystem::path path = folder.PathFor(partition.Key());
  std::vector<int64_t> ids;
  ids.reserve(owners.size());
  for (const DescriptorRow& r : owners) ids.push_back(r.scan.value);
  const std::string fingerprint = IdFingerprint(ids);

  VectorIndex::LoadResult loaded = VectorIndex::Load(path, key, dim);
  std::string why = loaded.reason;
  if (loaded.index) {
    if (loaded.id_fingerprint == fingerprint) {
      *note = "loaded";
      return std::shared_ptr<VectorIndex>(std::move(loaded.index));
    }
    const std::vector<int64_t> have = loaded.index->Ids();
    std::vector<int64_t> missing, extra;
    std::set_difference(ids.begin(), ids.end(), have.begin(), have.end(),
                        std::back_inserter(missing));
    std::set_difference(have.begin(), have.end(), ids.begin(), ids.end(),
                        std::back_inserter(extra));
    if (missing.size() + extra.size() <= std::max<size_t>(1000, ids.size() / 4)) {
      std::vector<float> vectors;
      vectors.reserve(missing.size() * static_cast<size_t>(dim));
      for (int64_t id : missing) {
        const auto v = store.GetDescriptor(ScanId(id), key);
        if (!v || static_cast<int>(v->size()) != dim) {
          throw Error("scan " + std::to_string(id) + ": descriptor vanished during the search");
        }
        vectors.insert(vectors.end(), v->begin(), v->end());
      }
      loaded.index->Remove(extra);
      loaded.index->Add(missing, vectors);
      if (loaded.index->ShouldOptimize()) loaded.index->Optimize();
      loaded.index->Save(path);
      *note = "updated (+" + std::to_string(missing.size()) + ", -" + std::to_string(extra.size()) +
              ")";
      return std::shared_ptr<VectorIndex>(std::move(loaded.index));
    }
    why = "the store's scans differ from the saved index's";
  }
  const std::vector<DescriptorRow> rows = store.Descriptors(key, partition);
  std::vector<int64_t> row_ids;
  std::vector<float> vectors;
  row_ids.reserve(rows.size());
  vectors.reserve(rows.size() * static_cast<size_t>(dim));
  for (const DescriptorRow& r : rows) {
    row_ids.push_back(r.scan.value);
    vectors.insert(vectors.end(), r.vector.begin(), r.vector.end());
  }
  std::shared_ptr<VectorIndex> index = VectorIndex::Build(dim, key, row_ids, vectors);
  std::filesystem::create_directories(folder.folder());
  index->Save(path);
  *note = "rebuilt: " + why;
  return index;
}

nlohmann::json RegistrationJson(const Registration& r) {
  return {{"angle_deg", r.angle_deg}, {"dx_um", r.dx_um}, {"dy_um", r.dy_um}};
}

std::string StrengthCell(const SearchCandidate& c) {
  if (!c.strength || c.strength->total == 0) return "unknown";
  const Exceedance& e = *c.strength;
  return std::to_string(e.at_least) + "/" + std::to_string(e.total) +
         " (<= " + Fixed(100 * e.rate_upper95, 2) + " %)";
}

}  // namespace

CoarseIndex OpenCoarseIndex(Store& store, const Partition& partition) {
  CoarseIndex out;
  BackfillDescriptors(store, partition, DescriptorKey());
  out.owners = store.DescriptorOwners(DescriptorKey(), partition);
  out.index = SyncIndex(store, partition, out.owners, &out.note);
  return out;
}

std::vector<float> BreechFaceScanDescriptor(const Surface& raw, const std::string& label) {
  Operand op;
  op.label = label;
  op.surface = raw;
  return BreechFaceDescriptor(Preprocessed(op, nullptr), label);
}

SearchReport SearchExhibit(Store& store, const ExhibitRecord& query, const SearchOptions& options,
                           const std::string& actor) {
  const std::string name = Label(query);
  if (query.kind != ExhibitKind::kCartridgeCase) {
    throw Error(name + ": is a " + ToString(query.kind) +
                "; search is available for cartridge cases (breech faces)");
  }
  if (options.coarse_k < 1) throw Error("the coarse stage needs at least one candidate (--k)");
  const std::optional<ScanRecord> query_scan = FirstTopography(store, query.id);
  if (!query_scan) {
    throw Error(name + ": has no 3D scan; 2D images cannot be searched yet (bien compare them)");
  }
  SearchReport report;
  report.query = query;
  report.lead_threshold = options.lead_threshold;
  const Partition partition = PartitionOf(query);
  report.partition = partition.Key();
  const std::string key = DescriptorKey();

  const auto t_coarse = Clock::now();
  BackfillDescriptors(store, partition, key);
  const auto query_vector = store.GetDescriptor(query_scan->id, key);
  if (!query_vector) {
    throw Error(name +
                ": its breech face gives no usable descriptor (too little valid data "
                "around the firing pin?); compare it one to one with bien compare");
  }
  const std::vector<DescriptorRow> owners = store.DescriptorOwners(key, partition);
  report.partition_scans = static_cast<int64_t>(owners.size());
  std::map<int64_t, int64_t> exhibit_of;  // scan -> exhibit
  for (const DescriptorRow& r : owners) exhibit_of[r.scan.value] = r.exhibit.value;
  const std::shared_ptr<VectorIndex> index =
      SyncIndex(store, partition, owners, &report.index_note);
  report.index_kind = std::string(IndexKindName(index->kind()));

  // Coarse: more hits than needed, since one exhibit may have several scans
  // and the query's own scans come back too.
  // Exhibit records of the hits only (a partition may hold 10^6 exhibits).
  std::map<int64_t, ExhibitRecord> exhibits;
  auto exhibit = [&](int64_t id) -> const ExhibitRecord& {
    auto it = exhibits.find(id);
    if (it == exhibits.end()) {
      it = exhibits.emplace(id, store.FindExhibit("#" + std::to_string(id))).first;
    }
    return it->second;
  };
  const int own_scans = static_cast<int>(store.ScansOf(query.id).size());
  std::set<int64_t> seen;  // exhibits already taken as candidates
  // The next `k` compatible exhibits of a coarse query, best first.
  auto coarse = [&](std::span<const float> vector, int k, const std::string& via) {
    std::vector<SearchCandidate> out;
    const int want = k + own_scans + 16;
    for (const SearchHit& h : index->Search(vector, std::min<int64_t>(want, index->size()))) {
      const auto owner = exhibit_of.find(h.id);
      if (owner == exhibit_of.end() || owner->second == query.id.value) continue;
      if (seen.count(owner->second)) continue;
      const ExhibitRecord& e = exhibit(owner->second);
      if (!ClassCompatible(query.cc, e.cc)) continue;
      seen.insert(owner->second);
      SearchCandidate c;
      c.exhibit = e;
      c.scan = ScanId(h.id);
      c.coarse_rank = static_cast<int>(out.size()) + 1;
      c.coarse_score = h.score;
      c.found_via = via;
      out.push_back(std::move(c));
      if (static_cast<int>(out.size()) == k) break;
    }
    return out;
  };
  std::vector<SearchCandidate> first = coarse(*query_vector, options.coarse_k, "");
  report.coarse_ms = MsSince(t_coarse);

  // Fine: records and paths looked up here (the Store is single-threaded),
  // originals read, preprocessed and compared on all cores.
  const auto t_fine = Clock::now();
  int jobs =
      options.jobs > 0 ? options.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(1, jobs);
  report.jobs = jobs;
  const int saved_threads = cv::getNumThreads();
  cv::setNumThreads(1);  // parallel over candidates instead
  const CmcOptions cmc;
  const Operand query_op = ReadStoredScan(store.ObjectPath(query_scan->sha256), *query_scan, name);
  const auto query_prepared = PrepareCmc(Preprocessed(query_op, nullptr), name, cmc);
  auto fine = [&](std::vector<SearchCandidate>& batch) {
    std::vector<std::optional<ScanRecord>> records(batch.size());
    std::vector<std::filesystem::path> objects(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      for (const ScanRecord& sc : store.ScansOf(batch[i].exhibit.id)) {
        if (sc.id == batch[i].scan) {
          records[i] = sc;
          objects[i] = store.ObjectPath(sc.sha256);
        }
      }
    }
    std::vector<std::string> errors(batch.size());
    std::vector<char> done(batch.size(), 0);
    ParallelFor(batch.size(), jobs, [&](size_t i) {
      SearchCandidate& c = batch[i];
      const std::string label = Label(c.exhibit);
      try {
        if (!records[i]) throw Error(label + ": its scan is no longer stored");
        const Operand op = ReadStoredScan(objects[i], *records[i], label);
        const auto prepared = PrepareCmc(Preprocessed(op, nullptr), label, cmc);
        const CmcResult r = CompareCmc(*query_prepared, *prepared, cmc);
        c.score = r.combined;
        c.forward = r.forward.congruent;
        c.backward = r.backward.congruent;
        c.registration = r.forward.registration;
        done[i] = 1;
      } catch (const Error& e) {
        errors[i] = e.what();
      }
    });
    for (size_t i = 0; i < batch.size(); ++i) {
      if (done[i]) {
        report.candidates.push_back(std::move(batch[i]));
      } else {
        report.skipped.push_back(errors[i]);
      }
    }
  };
  fine(first);
  // Query expansion: the coarse neighbours of the strongest candidates (at or
  // above the lead threshold) are compared too. Shots of one firearm resemble
  // each other unevenly; a mate the query's own descriptor ranks low is often
  // a near neighbour of another mate.
  if (options.expand_top > 0 && options.expand_k > 0) {
    std::vector<SearchCandidate> strong;
    for (const SearchCandidate& c : report.candidates) {
      if (c.score >= options.lead_threshold) strong.push_back(c);
    }
    std::stable_sort(
        strong.begin(), strong.end(),
        [](const SearchCandidate& a, const SearchCandidate& b) { return a.score > b.score; });
    std::vector<SearchCandidate> more;
    for (size_t i = 0; i < strong.size() && static_cast<int>(i) < options.expand_top; ++i) {
      const auto v = store.GetDescriptor(strong[i].scan, key);
      if (!v || static_cast<int>(v->size()) != index->dim()) continue;
      for (SearchCandidate& c : coarse(*v, options.expand_k, Label(strong[i].exhibit))) {
        more.push_back(std::move(c));
      }
    }
    fine(more);
  }
  cv::setNumThreads(saved_threads);
  report.fine_ms = MsSince(t_fine);

  const KnmDistribution knm(store.KnmScores(kCmcMethod));
  for (SearchCandidate& c : report.candidates) {
    c.strength = knm.At(c.score);
    c.strength_text = knm.Describe(c.score);
    c.lead = c.score >= options.lead_threshold;
  }
  std::stable_sort(report.candidates.begin(), report.candidates.end(),
                   [](const SearchCandidate& a, const SearchCandidate& b) {
                     return a.score != b.score ? a.score > b.score : a.coarse_rank < b.coarse_rank;
                   });

  if (options.record_leads) {
    std::vector<LeadCandidate> leads;
    for (const SearchCandidate& c : report.candidates) {
      if (!c.lead) continue;
      LeadCandidate l;
      l.candidate = c.exhibit.id;
      l.method = kCmcMethod;
      l.score = c.score;
      if (c.strength && c.strength->total > 0) l.strength = c.strength->rate;
      if (c.found_via.empty()) l.coarse_rank = c.coarse_rank;
      l.registration_json = RegistrationJson(c.registration).dump();
      leads.push_back(std::move(l));
    }
    if (!leads.empty()) report.leads = store.RecordLeads(actor, query.id, leads);
  }
  return report;
}

void PrintSearchSummary(std::ostream& out, const SearchReport& r) {
  int created = 0, updated = 0, decided = 0;
  for (const RecordedLead& l : r.leads) {
    created += l.outcome == LeadOutcome::kCreated;
    updated += l.outcome == LeadOutcome::kUpdated;
    decided += l.outcome == LeadOutcome::kAlreadyDecided;
  }
  out << "search " << Label(r.query) << ": " << r.candidates.size() << " candidates compared";
  if (!r.candidates.empty()) {
    const SearchCandidate& best = r.candidates.front();
    out << ", best " << Label(best.exhibit) << " at " << Fixed(best.score, 1);
  }
  out << "; leads: " << created << " new, " << updated << " updated";
  if (decided) out << ", " << decided << " already decided";
  out << " (score >= " << Fixed(r.lead_threshold, 1) << ")\n";
}

int CmdSearch(Context& ctx, const SearchArgs& args) {
  if (args.top < 1) throw Error("--top must be at least 1");
  auto store = Store::Open(ctx.NodeDir());
  const ExhibitRecord query = store->FindExhibit(args.exhibit);
  SearchOptions options = args.options;
  options.record_leads = !args.no_leads;
  const SearchReport r = SearchExhibit(*store, query, options, ctx.actor);
  const size_t shown = std::min(r.candidates.size(), static_cast<size_t>(args.top));

  if (ctx.json) {
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < shown; ++i) {
      const SearchCandidate& c = r.candidates[i];
      nlohmann::json j = {{"rank", i + 1},
                          {"exhibit", Label(c.exhibit)},
                          {"exhibit_id", c.exhibit.id.value},
                          {"scan_id", c.scan.value},
                          {"role", ToString(c.exhibit.role)},
                          {"coarse_rank", c.coarse_rank},
                          {"found_via", c.found_via.empty() ? nlohmann::json(nullptr)
                                                            : nlohmann::json(c.found_via)},
                          {"coarse_score", c.coarse_score},
                          {"score", c.score},
                          {"forward", c.forward},
                          {"backward", c.backward},
                          {"registration", RegistrationJson(c.registration)},
                          {"strength", {{"text", c.strength_text}}},
                          {"lead", c.lead}};
      if (c.exhibit.firearm_ref) j["firearm"] = *c.exhibit.firearm_ref;
      if (c.strength) {
        j["strength"]["knm_at_least"] = c.strength->at_least;
        j["strength"]["knm_total"] = c.strength->total;
        j["strength"]["rate_upper95"] = c.strength->rate_upper95;
      }
      list.push_back(std::move(j));
    }
    nlohmann::json leads = nlohmann::json::array();
    for (const RecordedLead& l : r.leads) {
      leads.push_back({{"lead", l.lead.value},
                       {"outcome", ToString(l.outcome)},
                       {"status", ToString(l.status)}});
    }
    const nlohmann::json j = {{"query", Label(r.query)},
                              {"partition", r.partition},
                              {"partition_scans", r.partition_scans},
                              {"index", {{"kind", r.index_kind}, {"note", r.index_note}}},
                              {"compared", r.candidates.size()},
                              {"candidates", list},
                              {"skipped", r.skipped},
                              {"lead_threshold", r.lead_threshold},
                              {"leads", leads},
                              {"coarse_ms", r.coarse_ms},
                              {"fine_ms", r.fine_ms},
                              {"jobs", r.jobs}};
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  ctx.out << "query        " << Label(r.query) << "  (partition " << r.partition << ", "
          << r.partition_scans << " scans indexed)\n"
          << "index        " << r.index_kind << ", " << r.index_note << "\n"
          << "coarse       " << Fixed(r.coarse_ms, 0)
          << " ms: " << r.candidates.size() + r.skipped.size() << " candidate exhibits\n"
          << "fine         " << Fixed(r.fine_ms / 1000, 1) << " s: CMC on " << r.jobs
          << " threads\n";
  TextTable table({"RANK", "CANDIDATE", "ROLE", "FIREARM", "SCORE", "CELLS F/B", "COARSE",
                   "KNM >= SCORE (95 % BOUND)", "REGISTRATION", "LEAD"});
  for (size_t i = 0; i < shown; ++i) {
    const SearchCandidate& c = r.candidates[i];
    table.Add({std::to_string(i + 1), Label(c.exhibit), ToString(c.exhibit.role),
               c.exhibit.firearm_ref.value_or("-"), Fixed(c.score, 1),
               std::to_string(c.forward) + "/" + std::to_string(c.backward),
               (c.found_via.empty() ? "" : "via " + c.found_via + " ") + "#" +
                   std::to_string(c.coarse_rank) + " " + Fixed(c.coarse_score, 3),
               StrengthCell(c),
               Fixed(c.registration.angle_deg, 1) + " deg (" + Fixed(c.registration.dx_um, 0) +
                   ", " + Fixed(c.registration.dy_um, 0) + ") um",
               c.lead ? "yes" : ""});
  }
  ctx.out << table.Render();
  for (const std::string& s : r.skipped) ctx.out << "not compared: " << s << "\n";
  PrintSearchSummary(ctx.out, r);
  return kExitOk;
}

}  // namespace bien::cli

#include "tools/search.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <opencv2/core.hpp>
#include <ostream>
#include <set>
#include <span>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "imaging/land.h"
#include "matching/bullet.h"
#include "matching/descriptor.h"
#include "matching/index.h"
#include "matching/ring_codes.h"
#include "tools/bullet_commands.h"
#include "tools/cli.h"
#include "tools/compare.h"
#include "tools/fine_features.h"
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

// Computes the descriptors and ring spectra a partition's 3D breech-face
// scans lack (scans stored before either existed, or under another version),
// from one preprocessing per scan. Bench distractors have no originals.
int BackfillDescriptors(Store& store, const Partition& partition) {
  const std::string key = DescriptorKey(), ring_key = RingSpectraKey();
  // Scans with an original that is a 3D scan (intensity images and bench
  // distractors never get these): scan -> (record, 1 bfd | 2 rings).
  std::map<int64_t, std::pair<ScanRecord, int>> lacking;
  auto note = [&](const ScanRecord& s, int bit) {
    if (s.meta.intensity || s.meta.format == kBenchDistractorFormat) return;
    lacking.emplace(s.id.value, std::pair{s, 0}).first->second.second |= bit;
  };
  for (const ScanRecord& s : store.ScansLackingDescriptor(key, ExhibitKind::kCartridgeCase)) {
    note(s, 1);
  }
  for (const ScanRecord& s : store.ScansLackingDescriptor(ring_key, ExhibitKind::kCartridgeCase)) {
    note(s, 2);
  }
  // Only the lacking scans' exhibits are read (listing every exhibit took
  // 0.1 s per 10^5 at every search of a store whose bench distractors or
  // sparse scans lack ring spectra).
  std::map<int64_t, std::optional<ExhibitRecord>> exhibits;
  auto exhibit_of = [&](ExhibitId id) -> const std::optional<ExhibitRecord>& {
    auto it = exhibits.find(id.value);
    if (it == exhibits.end()) {
      std::optional<ExhibitRecord> e;
      try {
        e = store.FindExhibit("#" + std::to_string(id.value));
      } catch (const Error&) {
      }
      it = exhibits.emplace(id.value, std::move(e)).first;
    }
    return it->second;
  };
  int added = 0;
  for (const auto& [id, entry] : lacking) {
    const auto& [scan, missing] = entry;
    const std::optional<ExhibitRecord>& exhibit = exhibit_of(scan.exhibit);
    if (!exhibit || !(PartitionOf(*exhibit) == partition)) continue;
    const std::string label = Label(*exhibit);
    // A breech face the descriptor or the ring spectra cannot use stays out
    // of the index or the ring stage; its exhibit can still be compared one
    // to one (bien compare).
    try {
      const Surface pre =
          Preprocessed(ReadStoredScan(store.ObjectPath(scan.sha256), scan, label), nullptr);
      if (missing & 1) {
        try {
          store.PutDescriptor(scan.id, key, BreechFaceDescriptor(pre, label));
          ++added;
        } catch (const Error&) {
        }
      }
      if (missing & 2) {
        try {
          store.PutDescriptor(scan.id, ring_key, BreechFaceRingSpectra(pre, label));
          ++added;
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
    }
  }
  return added;
}

// Indexes this process has loaded or saved, by file, with the file's size and
// modification time then. A long-running process (bien serve, an ingest of
// many cases) reuses the index in memory while the file on disk is the one it
// read or wrote, instead of re-reading and re-hashing it for every search.
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  timespec mtime{};
  bool operator==(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime.tv_sec == o.mtime.tv_sec &&
           mtime.tv_nsec == o.mtime.tv_nsec;
  }
};
std::optional<FileStamp> StampOf(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileStamp{st.st_dev, st.st_ino, st.st_size, st.st_mtim};
}

// The key an index file holds (a saved index of another key is stale).
const std::string& KeyOf(const VectorIndex& index) { return index.descriptor_key(); }
std::string KeyOf(const RingCodeIndex& index) { return index.key(); }

// One cache per index type (VectorIndex, RingCodeIndex).
template <typename T>
struct IndexCache {
  struct Entry {
    std::shared_ptr<T> index;
    FileStamp stamp;  // of the file when this process loaded or saved it
  };
  std::mutex mu;
  std::map<std::filesystem::path, Entry> entries;
};
template <typename T>
IndexCache<T>& CacheOf() {
  static IndexCache<T> cache;
  return cache;
}

template <typename T>
void Remember(const std::filesystem::path& path, std::shared_ptr<T> index) {
  const auto stamp = StampOf(path);
  IndexCache<T>& cache = CacheOf<T>();
  const std::lock_guard lock(cache.mu);
  if (stamp) {
    cache.entries[path] = {std::move(index), *stamp};
  } else {
    cache.entries.erase(path);
  }
}

// The index this process last loaded or saved at `path`, if the file is
// still that one (device, inode, size, modification time) and holds `key`.
template <typename T>
std::shared_ptr<T> Recall(const std::filesystem::path& path, const std::string& key) {
  const auto stamp = StampOf(path);
  IndexCache<T>& cache = CacheOf<T>();
  const std::lock_guard lock(cache.mu);
  const auto it = cache.entries.find(path);
  if (it == cache.entries.end()) return nullptr;
  if (!stamp || !(*stamp == it->second.stamp) || KeyOf(*it->second.index) != key) {
    cache.entries.erase(it);
    return nullptr;
  }
  return it->second.index;
}

// The node's index options for descriptors of `dim` floats: the library's
// defaults (exact below exact_below, else binary_sq8), except for a dimension
// binary_sq8 cannot split into two halves of whole bytes of sign bits (the
// 132-float bullet descriptor), which keeps ivf_sq8, the default before binary_sq8 (binary_sq8
// was measured on breech-face descriptors only).
VectorIndexOptions IndexOptionsFor(int dim) {
  VectorIndexOptions options;
  if (dim % kBinarySq8DimMultiple != 0) options.approximate_kind = IndexKind::kIvfSq8;
  // One query at a time: its Hamming scan may use both cores.
  options.search_threads =
      static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 1024u));
  return options;
}

// The ids of `want` (sorted) that `have` (sorted) lacks, and those it holds
// beyond them.
std::pair<std::vector<int64_t>, std::vector<int64_t>> IdChanges(const std::vector<int64_t>& want,
                                                                const std::vector<int64_t>& have) {
  std::pair<std::vector<int64_t>, std::vector<int64_t>> out;
  std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                      std::back_inserter(out.first));
  std::set_difference(have.begin(), have.end(), want.begin(), want.end(),
                      std::back_inserter(out.second));
  return out;
}

// The partition's index, brought up to date with the store: loaded when the
// saved one holds exactly the store's scans, updated in place when it only
// lacks or holds a few more, rebuilt otherwise (and always when the file is
// missing, damaged or of another descriptor key). Saved when changed.
// `key` and `dim` are the descriptor's; `index_name` names the file in
// NODE/index/ (PartitionIndexes::PathFor).
std::shared_ptr<VectorIndex> SyncIndex(Store& store, const Partition& partition,
                                       const std::vector<DescriptorRow>& owners,
                                       const std::string& key, int dim,
                                       const std::string& index_name, std::string* note) {
  const PartitionIndexes folder(store.dir() / "index");
  const std::filesystem::path path = folder.PathFor(index_name);
  std::vector<int64_t> ids;
  ids.reserve(owners.size());
  for (const DescriptorRow& r : owners) ids.push_back(r.scan.value);
  const std::string fingerprint = IdFingerprint(ids);

  std::shared_ptr<VectorIndex> current = Recall<VectorIndex>(path, key);
  std::string why;
  if (current) {
    if (IdFingerprint(current->Ids()) == fingerprint) {
      *note = "in memory";
      return current;
    }
  } else {
    VectorIndex::LoadResult loaded = VectorIndex::Load(path, key, dim, IndexOptionsFor(dim));
    why = loaded.reason;
    if (loaded.index && loaded.index->ShouldOptimize()) {
      // Another kind than the options give (e.g. ivf_sq8, the default
      // before binary_sq8) or the wrong size for its kind: rebuilt from the
      // store's vectors, not re-trained on the index's decoded ones.
      const VectorIndexOptions& o = loaded.index->options();
      why = "saved index of kind " + std::string(IndexKindName(loaded.index->kind())) +
            " no longer suits its " + std::to_string(loaded.index->size()) +
            " vectors (exact below " + std::to_string(o.exact_below) + ", else " +
            std::string(IndexKindName(o.approximate_kind)) + ")";
      loaded.index.reset();
    }
    if (loaded.index) {
      current = std::shared_ptr<VectorIndex>(std::move(loaded.index));
      Remember(path, current);
      if (loaded.id_fingerprint == fingerprint) {
        *note = "loaded";
        return current;
      }
    }
  }
  if (current) {
    const auto [missing, extra] = IdChanges(ids, current->Ids());
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
      current->Remove(extra);
      current->Add(missing, vectors);
      if (current->ShouldOptimize()) current->Optimize();
      current->Save(path);
      Remember(path, current);
      *note = "updated (+" + std::to_string(missing.size()) + ", -" + std::to_string(extra.size()) +
              ")";
      return current;
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
  std::shared_ptr<VectorIndex> index =
      VectorIndex::Build(dim, key, row_ids, vectors, IndexOptionsFor(dim));
  std::filesystem::create_directories(folder.folder());
  index->Save(path);
  Remember(path, index);
  *note = "rebuilt: " + why;
  return index;
}

// The file of a partition's ring codes: beside its vector index, same stem.
std::filesystem::path RingCodesPath(const Store& store, const Partition& partition) {
  return PartitionIndexes(store.dir() / "index").PathFor(partition.Key()).replace_extension(".brc");
}

// The partition's compressed ring screen (matching/ring_codes.h), brought up
// to date with the store's ring spectra as SyncIndex does for the vectors:
// loaded when the saved codes are of this key and hold exactly the store's
// scans with spectra, updated in place when a few differ, rebuilt (the basis
// trained anew on up to kRingCodeTrainSample of them) when the file is
// missing, damaged, of another key, or the partition grew or shrank fourfold
// since the basis was trained. Saved when changed. Spectra that vanish while
// it reads are left out (the next search adds or drops them).
std::shared_ptr<RingCodeIndex> SyncRingCodes(Store& store, const Partition& partition, int jobs,
                                             std::string* note) {
  const std::string key = RingCodec::KeyFor(), spectra_key = RingSpectraKey();
  const std::filesystem::path path = RingCodesPath(store, partition);
  std::vector<int64_t> ids;
  for (const ScanId& id : store.DescriptorScanIds(spectra_key, partition)) ids.push_back(id.value);
  std::sort(ids.begin(), ids.end());
  const std::string fingerprint = IdFingerprint(ids);
  // Spectra of these scans from the store, in batches, to `feed`.
  auto read = [&](const std::vector<int64_t>& which, auto&& feed) {
    constexpr size_t kBatch = 4096;
    for (size_t at = 0; at < which.size(); at += kBatch) {
      std::vector<int64_t> batch_ids;
      std::vector<std::vector<float>> batch;
      for (size_t i = at; i < std::min(which.size(), at + kBatch); ++i) {
        auto v = store.GetDescriptor(ScanId(which[i]), spectra_key);
        if (!v) continue;
        batch_ids.push_back(which[i]);
        batch.push_back(std::move(*v));
      }
      std::vector<const std::vector<float>*> of;
      for (const auto& v : batch) of.push_back(&v);
      feed(batch_ids, of);
    }
  };

  std::shared_ptr<RingCodeIndex> current = Recall<RingCodeIndex>(path, key);
  std::string why;
  if (current && IdFingerprint(current->Ids()) == fingerprint) {
    *note = "in memory";
    return current;
  }
  if (!current) {
    RingCodeIndex::LoadResult loaded = RingCodeIndex::Load(path, key);
    why = loaded.reason;
    if (loaded.index) {
      current = std::shared_ptr<RingCodeIndex>(std::move(loaded.index));
      Remember(path, current);
      if (loaded.id_fingerprint == fingerprint) {
        *note = "loaded";
        return current;
      }
    }
  }
  if (current) {
    const auto [missing, extra] = IdChanges(ids, current->Ids());
    current->Remove(extra);
    read(missing, [&](const std::vector<int64_t>& batch_ids,
                      const std::vector<const std::vector<float>*>& of) {
      current->Add(batch_ids, of, jobs);
    });
    if (!current->ShouldRetrain()) {
      current->Save(path);
      Remember(path, current);
      *note = "updated (+" + std::to_string(missing.size()) + ", -" + std::to_string(extra.size()) +
              ")";
      return current;
    }
    why = "the partition grew or shrank fourfold since the basis was trained on " +
          std::to_string(current->trained_on()) + " scans";
  }
  // Rebuilt: the basis from an even sample, then every scan's code.
  const size_t step = std::max<size_t>(1, ids.size() / static_cast<size_t>(kRingCodeTrainSample));
  std::vector<int64_t> sample_ids;
  for (size_t i = 0; i < ids.size(); i += step) sample_ids.push_back(ids[i]);
  std::vector<std::vector<float>> sample;
  read(sample_ids,
       [&](const std::vector<int64_t>&, const std::vector<const std::vector<float>*>& of) {
         for (const auto* v : of) sample.push_back(*v);
       });
  std::vector<const std::vector<float>*> sample_of;
  for (const auto& v : sample) sample_of.push_back(&v);
  auto index = std::make_shared<RingCodeIndex>(RingCodec::Train(sample_of),
                                               static_cast<int64_t>(ids.size()));
  sample.clear();
  read(ids,
       [&](const std::vector<int64_t>& batch_ids,
           const std::vector<const std::vector<float>*>& of) { index->Add(batch_ids, of, jobs); });
  std::filesystem::create_directories(path.parent_path());
  index->Save(path);
  Remember(path, index);
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

// --- bullets ----------------------------------------------------------------

// The file name of a partition's bullet index: the partition key (which holds
// the kind) and the descriptor family, so it can never be the breech-face
// index's file, whatever the partition.
std::string BulletIndexName(const Partition& partition) { return partition.Key() + "|bld"; }

// Computes the bld descriptors a partition's land scans lack (scans stored
// before bullet descriptors existed, or under another descriptor version).
int BackfillLandDescriptors(Store& store, const Partition& partition, const std::string& key) {
  const auto lacking = store.ScansLackingDescriptor(key, ExhibitKind::kBullet);
  if (lacking.empty()) return 0;
  std::map<int64_t, ExhibitRecord> exhibits;
  int added = 0;
  for (const ScanRecord& scan : lacking) {
    auto it = exhibits.find(scan.exhibit.value);
    if (it == exhibits.end()) {
      it = exhibits
               .emplace(scan.exhibit.value,
                        store.FindExhibit("#" + std::to_string(scan.exhibit.value)))
               .first;
    }
    if (scan.meta.intensity || !scan.meta.land || !(PartitionOf(it->second) == partition)) {
      continue;
    }
    const std::string label = Label(it->second) + " land " + std::to_string(*scan.meta.land);
    try {
      const Operand op = ReadStoredScan(store.ObjectPath(scan.sha256), scan, label);
      store.PutDescriptor(scan.id, key, LandScanDescriptor(op.surface, label));
      ++added;
    } catch (const Error&) {
      // A land the descriptor cannot use stays out of the index; the bullet
      // is still found through its other lands, and compared whole.
    }
  }
  return added;
}

nlohmann::json PairingJson(const SearchCandidate& c) {
  nlohmann::json pairs = nlohmann::json::array();
  for (const SearchCandidate::LandPairing& p : c.pairing) {
    pairs.push_back(
        {{"query_land", p.query_land}, {"candidate_land", p.candidate_land}, {"score", p.score}});
  }
  return pairs;
}

// The last steps of a correlation list, the same for every kind: each
// candidate's strength against the node's known non-matches of `method`, the
// order (fine score, then coarse rank) and, when `record`, the leads from
// `threshold` (one transaction), each with the pose `registration` gives.
void RankAndRecordLeads(Store& store, SearchReport& report, const std::string& method,
                        double threshold, bool record, const std::string& actor,
                        const std::function<std::string(const SearchCandidate&)>& registration) {
  const KnmDistribution knm(store.KnmScores(method));
  for (SearchCandidate& c : report.candidates) {
    c.strength = knm.At(c.score);
    c.strength_text = knm.Describe(c.score);
    c.lead = c.score >= threshold;
  }
  std::stable_sort(report.candidates.begin(), report.candidates.end(),
                   [](const SearchCandidate& a, const SearchCandidate& b) {
                     return a.score != b.score ? a.score > b.score : a.coarse_rank < b.coarse_rank;
                   });
  if (!record) return;
  std::vector<LeadCandidate> leads;
  for (const SearchCandidate& c : report.candidates) {
    if (!c.lead) continue;
    LeadCandidate l;
    l.candidate = c.exhibit.id;
    l.method = method;
    l.score = c.score;
    if (c.strength && c.strength->total > 0) l.strength = c.strength->rate;
    if (c.found_via.empty()) l.coarse_rank = c.coarse_rank;
    l.registration_json = registration(c);
    leads.push_back(std::move(l));
  }
  if (!leads.empty()) report.leads = store.RecordLeads(actor, report.query.id, leads);
}

SearchReport SearchBullet(Store& store, const ExhibitRecord& query, const SearchOptions& options,
                          const std::string& actor) {
  const std::string name = Label(query);
  SearchReport report;
  report.query = query;
  report.method = kBulletSearchMethod;
  report.lead_threshold = options.lead_threshold.value_or(kDefaultBulletLeadThreshold);
  const Partition partition = PartitionOf(query);
  report.partition = partition.Key();
  const std::string key = BulletDescriptorKey();
  const int dim = BulletDescriptorDim();

  const auto t_coarse = Clock::now();
  int query_n = 0;
  const std::vector<StoredLandScan> query_scans = StoredLandScans(store, query, &query_n);
  BackfillLandDescriptors(store, partition, key);
  std::vector<std::pair<int, std::vector<float>>> query_vectors;  // land, descriptor
  for (const StoredLandScan& s : query_scans) {
    if (s.scan.meta.intensity) continue;
    if (auto v = store.GetDescriptor(s.scan.id, key); v && static_cast<int>(v->size()) == dim) {
      query_vectors.emplace_back(*s.scan.meta.land, std::move(*v));
    }
  }
  if (query_vectors.empty()) {
    throw Error(name +
                ": none of its land scans gives a usable bullet descriptor (no 3D land "
                "scan, or no land signature); compare it one to one with bien compare");
  }
  const std::vector<DescriptorRow> owners = store.DescriptorOwners(key, partition);
  report.partition_scans = static_cast<int64_t>(owners.size());
  std::map<int64_t, int64_t> exhibit_of;  // scan -> exhibit
  for (const DescriptorRow& r : owners) exhibit_of[r.scan.value] = r.exhibit.value;
  const std::shared_ptr<VectorIndex> index =
      SyncIndex(store, partition, owners, key, dim, BulletIndexName(partition), &report.index_note);
  report.index_kind = std::string(IndexKindName(index->kind()));

  // Coarse: each query land's nearest lands; a candidate bullet's coarse
  // score is the sum over the query's lands of the best cosine (at least 0)
  // with any of its lands among those neighbours. Six lands per bullet:
  // enough neighbours per land for coarse_k bullets.
  const int64_t per_land =
      std::min<int64_t>(index->size(), static_cast<int64_t>(options.coarse_k) * 8 +
                                           static_cast<int64_t>(query_scans.size()) + 16);
  std::map<int64_t, std::map<int, double>> best;  // exhibit -> query land -> best cosine
  for (const auto& [land, vector] : query_vectors) {
    for (const SearchHit& h : index->Search(vector, per_land)) {
      const auto owner = exhibit_of.find(h.id);
      if (owner == exhibit_of.end() || owner->second == query.id.value) continue;
      double& b = best[owner->second][land];
      b = std::max(b, static_cast<double>(h.score));
    }
  }
  struct Ranked {
    int64_t exhibit = 0;
    double sum = 0;
  };
  std::vector<Ranked> ranked;
  for (const auto& [exhibit, lands] : best) {
    Ranked r{exhibit, 0};
    for (const auto& [land, cosine] : lands) r.sum += std::max(0.0, cosine);
    ranked.push_back(r);
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const Ranked& a, const Ranked& b) { return a.sum > b.sum; });
  std::vector<SearchCandidate> candidates;
  for (const Ranked& r : ranked) {
    const ExhibitRecord e = store.FindExhibit("#" + std::to_string(r.exhibit));
    if (!ClassCompatible(query.cc, e.cc)) continue;
    SearchCandidate c;
    c.exhibit = e;
    c.coarse_rank = static_cast<int>(candidates.size()) + 1;
    // Mean over the query's searched lands of the best land cosine.
    c.coarse_score = r.sum / static_cast<double>(query_vectors.size());
    candidates.push_back(std::move(c));
    if (static_cast<int>(candidates.size()) == options.coarse_k) break;
  }
  report.coarse_ms = MsSince(t_coarse);
  if (options.coarse_only) {
    report.coarse_only = true;
    report.candidates = std::move(candidates);
    return report;
  }

  // Fine: the lands of the query and of every candidate read and their
  // signatures extracted on all cores (one land per task: bullets differ in
  // how many lands they have), then each candidate compared with the query.
  // The store is looked up here, on this thread.
  const auto t_fine = Clock::now();
  int jobs =
      options.jobs > 0 ? options.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(1, jobs);
  report.jobs = jobs;
  struct Work {
    std::vector<StoredLandScan> scans;
    int lands = 0;
    std::string error;
  };
  std::vector<Work> work(candidates.size() + 1);  // [0]: the query
  work[0].scans = query_scans;
  work[0].lands = query_n;
  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      work[i + 1].scans = StoredLandScans(store, candidates[i].exhibit, &work[i + 1].lands);
    } catch (const Error& e) {
      work[i + 1].error = e.what();
    }
  }
  struct LandTask {
    size_t bullet = 0;  // into work
    const StoredLandScan* scan = nullptr;
    std::shared_ptr<const PreparedLand> prepared;
    std::string error;
  };
  std::vector<LandTask> tasks;
  for (size_t w = 0; w < work.size(); ++w) {
    for (const StoredLandScan& s : work[w].scans) tasks.push_back({w, &s, nullptr, ""});
  }
  ParallelFor(tasks.size(), jobs, [&](size_t t) {
    try {
      tasks[t].prepared = PrepareStoredLand(*tasks[t].scan);
    } catch (const Error& e) {
      tasks[t].error = e.what();
    }
  });
  std::vector<PreparedBullet> bullets(work.size());
  for (size_t w = 0; w < work.size(); ++w) {
    bullets[w].label = w == 0 ? name : Label(candidates[w - 1].exhibit);
    bullets[w].lands.resize(static_cast<size_t>(work[w].lands));
  }
  for (const LandTask& t : tasks) {
    if (t.prepared) {
      bullets[t.bullet].lands[static_cast<size_t>(*t.scan->scan.meta.land - 1)] = t.prepared;
    } else if (t.bullet == 0) {
      report.query_unusable.push_back(t.error);  // a candidate's is left out silently
    }
  }
  report.query_lands = bullets[0].Present();
  if (report.query_lands == 0) {
    throw Error(name + ": none of its land scans gives a usable signature");
  }
  std::vector<char> done(candidates.size(), 0);
  ParallelFor(candidates.size(), jobs, [&](size_t i) {
    Work& w = work[i + 1];
    if (!w.error.empty()) return;
    SearchCandidate& c = candidates[i];
    try {
      if (bullets[i + 1].Present() == 0) {
        throw Error(c.exhibit.case_ref + "/" + c.exhibit.exhibit_ref +
                    ": none of its land scans gives a usable signature");
      }
      const BulletComparison r = CompareBullets(bullets[0], bullets[i + 1]);
      c.score = r.score;
      c.phase = r.phase;
      c.lands = r.lands;
      c.runner_up = r.runner_up;
      for (const LandPair& p : r.pairs) c.pairing.push_back({p.land_a, p.land_b, p.result.score});
      done[i] = 1;
    } catch (const Error& e) {
      w.error = e.what();
    }
  });
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (done[i]) {
      report.candidates.push_back(std::move(candidates[i]));
    } else {
      report.skipped.push_back(work[i + 1].error);
    }
  }
  report.fine_ms = MsSince(t_fine);

  RankAndRecordLeads(store, report, kBulletSearchMethod, report.lead_threshold,
                     options.record_leads, actor, [](const SearchCandidate& c) {
                       return nlohmann::json{
                           {"phase", *c.phase}, {"lands", c.lands}, {"pairs", PairingJson(c)}}
                           .dump();
                     });
  return report;
}

}  // namespace

std::vector<float> LandScanDescriptor(const Surface& raw, const std::string& label) {
  return BulletDescriptor(ExtractLandSignature(raw, label), label);
}

std::vector<FineOutcome> CompareWithStored(Store& store, FineFeatures& features,
                                           const CmcPrepared& query,
                                           const std::vector<FineTarget>& targets, int jobs) {
  std::vector<std::optional<ScanRecord>> records(targets.size());
  std::vector<std::filesystem::path> objects(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    for (const ScanRecord& sc : store.ScansOf(targets[i].exhibit.id)) {
      if (sc.id == targets[i].scan) {
        records[i] = sc;
        objects[i] = store.ObjectPath(sc.sha256);
      }
    }
  }
  std::vector<FineOutcome> out(targets.size());
  const CvSingleThread cv_single;  // parallel over targets instead
  ParallelFor(targets.size(), std::max(1, jobs), [&](size_t i) {
    const std::string label = Label(targets[i].exhibit);
    try {
      if (!records[i]) throw Error(label + ": its scan is no longer stored");
      const auto prepared = features.Get(*records[i], objects[i], label);
      out[i].result = CompareCmc(query, *prepared, features.options());
    } catch (const Error& e) {
      out[i].error = e.what();
    }
  });
  return out;
}

namespace {

// The coarse indexes this process checked against a store, by node folder,
// partition and descriptor key, with the store's SearchStamp read before that
// check began (so a change committed during the check brings it back).
struct CheckedIndex {
  SearchStamp stamp;
  CoarseIndex coarse;
};
std::mutex checked_mu;
std::map<std::string, CheckedIndex> checked_indexes;

}  // namespace

CoarseIndex OpenCoarseIndex(Store& store, const Partition& partition) {
  const std::string key = DescriptorKey();
  const std::filesystem::path path =
      PartitionIndexes(store.dir() / "index").PathFor(partition.Key());
  const std::string memo = store.dir().string() + "\n" + partition.Key() + "\n" + key;
  const SearchStamp stamp = store.SearchStampNow();
  {
    const std::lock_guard lock(checked_mu);
    const auto it = checked_indexes.find(memo);
    // The same store state, and the index file still the one this process
    // loaded or saved (a damaged or removed file is checked, and rebuilt).
    if (it != checked_indexes.end() && it->second.stamp == stamp &&
        Recall<VectorIndex>(path, key) == it->second.coarse.index) {
      CoarseIndex out = it->second.coarse;
      out.note = "in memory";
      return out;
    }
  }
  CoarseIndex out;
  BackfillDescriptors(store, partition);
  const std::vector<DescriptorRow> owners = store.DescriptorOwners(key, partition);
  out.scans = static_cast<int64_t>(owners.size());
  auto exhibit_of = std::make_shared<std::unordered_map<int64_t, int64_t>>();
  exhibit_of->reserve(owners.size());
  for (const DescriptorRow& r : owners) exhibit_of->emplace(r.scan.value, r.exhibit.value);
  out.exhibit_of = std::move(exhibit_of);
  out.index = SyncIndex(store, partition, owners, key, DescriptorDim(), partition.Key(), &out.note);
  out.partition = partition;
  const std::lock_guard lock(checked_mu);
  checked_indexes[memo] = CheckedIndex{stamp, out};
  return out;
}

namespace {

// The ring code indexes this process checked against a store, as
// checked_indexes.
struct CheckedCodes {
  SearchStamp stamp;
  std::shared_ptr<RingCodeIndex> codes;
};
std::mutex checked_codes_mu;
std::map<std::string, CheckedCodes> checked_codes;

}  // namespace

std::shared_ptr<RingCodeIndex> OpenRingCodes(Store& store, const Partition& partition, int jobs,
                                             std::string* note) {
  const std::string key = RingCodec::KeyFor();
  const std::filesystem::path path = RingCodesPath(store, partition);
  const std::string memo = store.dir().string() + "\n" + partition.Key() + "\n" + key;
  const SearchStamp stamp = store.SearchStampNow();
  {
    const std::lock_guard lock(checked_codes_mu);
    const auto it = checked_codes.find(memo);
    if (it != checked_codes.end() && it->second.stamp == stamp &&
        Recall<RingCodeIndex>(path, key) == it->second.codes) {
      *note = "in memory";
      return it->second.codes;
    }
  }
  std::shared_ptr<RingCodeIndex> codes = SyncRingCodes(store, partition, jobs, note);
  const std::lock_guard lock(checked_codes_mu);
  checked_codes[memo] = CheckedCodes{stamp, codes};
  return codes;
}

CoarseSelection::CoarseSelection(Store& store, CoarseIndex index, ClassCharacteristics cc,
                                 std::optional<ExhibitId> query)
    : store_(store), index_(std::move(index)), cc_(std::move(cc)), query_(query) {}

const ExhibitRecord& CoarseSelection::Exhibit(int64_t id) {
  auto it = exhibits_.find(id);
  if (it == exhibits_.end()) {
    it = exhibits_.emplace(id, store_.FindExhibit("#" + std::to_string(id))).first;
  }
  return it->second;
}

std::vector<SearchCandidate> CoarseSelection::Next(std::span<const float> vector, int k,
                                                   const std::string& via) {
  std::vector<SearchCandidate> out = Collect(vector, k, via);
  FillRecords(out);
  return out;
}

bool CoarseSelection::ChecksClass() const {
  return cc_.firing_pin || cc_.breech_face || cc_.lands || cc_.twist;
}

void CoarseSelection::FillRecords(std::vector<SearchCandidate>& candidates) {
  for (SearchCandidate& c : candidates) {
    if (c.exhibit.exhibit_ref.empty()) c.exhibit = Exhibit(c.exhibit.id.value);
  }
}

std::vector<SearchCandidate> CoarseSelection::Collect(std::span<const float> vector, int k,
                                                      const std::string& via) {
  std::vector<SearchCandidate> out;
  const int64_t size = index_.index ? index_.index->size() : 0;
  if (k < 1 || size == 0) return out;
  // More hits than candidates: an exhibit may have several scans, the
  // query's own come back, and taken or incompatible exhibits are skipped;
  // when that is not enough, four times as many, up to the whole index.
  int64_t want = std::min<int64_t>(size, k + static_cast<int64_t>(taken_.size()) + 16);
  std::set<int64_t> taking;
  while (true) {
    out.clear();
    taking.clear();
    for (const SearchHit& h : index_.index->Search(vector, static_cast<int>(want))) {
      const auto owner = index_.exhibit_of->find(h.id);
      if (owner == index_.exhibit_of->end()) continue;
      const int64_t e = owner->second;
      if ((query_ && e == query_->value) || taken_.count(e) || taking.count(e)) continue;
      SearchCandidate c;
      if (ChecksClass()) {
        const ExhibitRecord& record = Exhibit(e);
        if (!ClassCompatible(cc_, record.cc)) continue;
        c.exhibit = record;
      } else {
        c.exhibit.id = ExhibitId(e);  // every exhibit of the partition is compatible: read later
      }
      taking.insert(e);
      c.scan = ScanId(h.id);
      c.coarse_rank = static_cast<int>(out.size()) + 1;
      c.descriptor_rank = c.coarse_rank;
      c.coarse_score = h.score;
      c.found_via = via;
      out.push_back(std::move(c));
      if (static_cast<int>(out.size()) == k) break;
    }
    if (static_cast<int>(out.size()) == k || want >= size) break;
    want = std::min<int64_t>(size, want * 4);
  }
  taken_.insert(taking.begin(), taking.end());
  return out;
}

std::vector<SearchCandidate> CoarseSelection::NextByRings(std::span<const float> vector,
                                                          const RingQuery& rings, int pool, int k,
                                                          int jobs, int* pooled, int screen) {
  std::vector<SearchCandidate> candidates = Collect(vector, std::max(pool, k), "");
  screen_ = {};
  std::shared_ptr<RingCodeIndex> codes;  // when the screen ran: the ring stage reads less
  const int64_t size = index_.index ? index_.index->size() : 0;
  if (screen > 0 && index_.partition && size > std::max(pool, k) && !rings.spectra.empty()) {
    // The compressed ring screen over the whole partition: its best `screen`
    // that the cosine's pool lacks join it (a mate the descriptor ranks
    // beyond the pool; docs/SEARCH.md "The ring screen").
    const auto t = Clock::now();
    try {
      codes = OpenRingCodes(store_, *index_.partition, jobs, &screen_.note);
      const std::vector<SearchHit> hits =
          codes->Search(rings.spectra.front(), std::max(screen, k), jobs);
      for (size_t i = 0; i < hits.size(); ++i) {
        const auto owner = index_.exhibit_of->find(hits[i].id);
        if (owner == index_.exhibit_of->end()) continue;  // no descriptor: not searchable
        const int64_t e = owner->second;
        if ((query_ && e == query_->value) || taken_.count(e)) continue;
        SearchCandidate c;
        if (ChecksClass()) {
          const ExhibitRecord& record = Exhibit(e);
          if (!ClassCompatible(cc_, record.cc)) continue;
          c.exhibit = record;
        } else {
          c.exhibit.id = ExhibitId(e);
        }
        taken_.insert(e);
        c.scan = ScanId(hits[i].id);
        c.coarse_rank = static_cast<int>(candidates.size()) + 1;
        c.screen_rank = static_cast<int>(i) + 1;
        candidates.push_back(std::move(c));
        ++screen_.added;
      }
    } catch (const Error& e) {
      screen_.note = std::string("no ring screen: ") + e.what();
      codes.reset();
    }
    screen_.ms = MsSince(t);
  }
  if (pooled) *pooled = static_cast<int>(candidates.size());
  std::vector<SearchCandidate> dropped;
  std::vector<SearchCandidate> kept =
      RingStage(store_, rings, std::move(candidates), k, jobs, &dropped, codes.get());
  for (const SearchCandidate& c : dropped) taken_.erase(c.exhibit.id.value);
  FillRecords(kept);
  // The cosine of the screen's candidates that stay (the index did not
  // score them).
  const std::vector<float> query(vector.begin(), vector.end());
  for (SearchCandidate& c : kept) {
    if (c.screen_rank == 0) continue;
    const auto v = store_.GetDescriptor(c.scan, index_.index->descriptor_key());
    if (v && v->size() == query.size()) c.coarse_score = DescriptorCosine(query, *v);
  }
  return kept;
}

std::vector<size_t> RingOrder(const std::vector<std::optional<double>>& ring, int keep) {
  // An unscored candidate within `keep` by cosine keeps its place; the other
  // places take the best ring scores in turn.
  const size_t size = std::min(ring.size(), static_cast<size_t>(std::max(keep, 0)));
  std::vector<size_t> scored;
  for (size_t i = 0; i < ring.size(); ++i) {
    if (ring[i]) scored.push_back(i);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [&](size_t a, size_t b) { return *ring[a] > *ring[b]; });
  std::vector<size_t> order;
  size_t next = 0;
  for (size_t place = 0; place < size; ++place) {
    if (!ring[place]) {
      order.push_back(place);
    } else if (next < scored.size()) {
      order.push_back(scored[next++]);
    }
  }
  return order;
}

std::vector<std::optional<double>> RingStageScores(
    const RingQuery& query, const std::vector<const std::vector<float>*>& spectra, int keep,
    int jobs) {
  if (query.spectra.empty()) throw Error("ring query without spectra");
  jobs = std::max(1, jobs);
  std::vector<std::optional<double>> ring(spectra.size());
  ParallelFor(spectra.size(), jobs, [&](size_t i) {
    if (!spectra[i]->empty()) ring[i] = RingCorrelation(query.spectra[0], *spectra[i]).score;
  });
  const std::vector<size_t> screened = RingCentreSearchSet(ring, keep);
  ParallelFor(screened.size(), jobs, [&](size_t j) {
    ring[screened[j]] = RingCorrelation(query, *spectra[screened[j]]).score;
  });
  return ring;
}

std::vector<size_t> RingCentreSearchSet(const std::vector<std::optional<double>>& found, int keep) {
  std::vector<size_t> screened;
  for (size_t i = 0; i < found.size(); ++i) {
    if (found[i]) screened.push_back(i);
  }
  const size_t screen = static_cast<size_t>(std::max(kRingScreen, keep));
  if (screened.size() > screen) {
    std::nth_element(screened.begin(), screened.begin() + static_cast<ptrdiff_t>(screen),
                     screened.end(), [&](size_t a, size_t b) {
                       return *found[a] > *found[b] || (*found[a] == *found[b] && a < b);
                     });
    // The cosine's best `screen` too (the pool is in cosine order): a mate
    // whose firing-pin centre was found off scores low at the found centre.
    screened.erase(std::remove_if(screened.begin() + static_cast<ptrdiff_t>(screen), screened.end(),
                                  [&](size_t i) { return i >= screen; }),
                   screened.end());
  }
  return screened;
}

std::vector<std::optional<double>> RingStageScoresFromCodes(
    const RingQuery& query, const std::vector<std::optional<double>>& compressed, int keep,
    int jobs,
    const std::function<std::vector<std::vector<float>>(const std::vector<size_t>&)>& read,
    std::vector<std::optional<double>>* order_keys) {
  if (query.spectra.empty()) throw Error("ring query without spectra");
  std::vector<std::optional<double>> ring = compressed;
  const std::vector<size_t> screened = RingCentreSearchSet(compressed, keep);
  const std::vector<std::vector<float>> spectra = read(screened);
  if (spectra.size() != screened.size()) throw Error("ring stage: spectra read for another set");
  ParallelFor(screened.size(), std::max(1, jobs), [&](size_t j) {
    // A code without spectra in the store (they changed since): unscored.
    ring[screened[j]] = spectra[j].empty()
                            ? std::nullopt
                            : std::optional<double>(RingCorrelation(query, spectra[j]).score);
  });
  // Scores lie in about [-1, 1]: 4 below puts the rest after the searched.
  *order_keys = ring;
  std::vector<bool> searched(ring.size(), false);
  for (size_t i : screened) searched[i] = true;
  for (size_t i = 0; i < ring.size(); ++i) {
    if (!searched[i] && (*order_keys)[i]) *(*order_keys)[i] -= 4;
  }
  return ring;
}

std::vector<SearchCandidate> RingStage(const Store& store, const RingQuery& query,
                                       std::vector<SearchCandidate> pool, int keep, int jobs,
                                       std::vector<SearchCandidate>* dropped,
                                       const RingCodeIndex* codes) {
  const std::string key = RingSpectraKey();
  const size_t dim = static_cast<size_t>(RingSpectraDim());
  // The spectra of pool[which[j]], read in scan-id order (the store's row
  // order): 20 000 spectra took 145-300 ms so against 210-800 ms in the
  // pool's order (throwaway, 50 000 scans).
  auto read = [&](const std::vector<size_t>& which) {
    std::vector<size_t> by_scan(which.size());
    std::iota(by_scan.begin(), by_scan.end(), size_t{0});
    std::sort(by_scan.begin(), by_scan.end(), [&](size_t a, size_t b) {
      return pool[which[a]].scan.value < pool[which[b]].scan.value;
    });
    std::vector<std::vector<float>> out(which.size());
    for (size_t j : by_scan) {
      auto v = store.GetDescriptor(pool[which[j]].scan, key);
      if (v && v->size() == dim) out[j] = std::move(*v);
    }
    return out;
  };
  std::vector<std::optional<double>> ring, order_keys;
  if (codes && !query.spectra.empty()) {
    std::vector<int64_t> ids(pool.size());
    for (size_t i = 0; i < pool.size(); ++i) ids[i] = pool[i].scan.value;
    const std::vector<std::optional<float>> scores = codes->Scores(query.spectra[0], ids, jobs);
    std::vector<std::optional<double>> compressed(pool.size());
    for (size_t i = 0; i < pool.size(); ++i) {
      if (scores[i]) compressed[i] = *scores[i];
    }
    ring = RingStageScoresFromCodes(query, compressed, keep, jobs, read, &order_keys);
  } else {
    std::vector<size_t> all(pool.size());
    std::iota(all.begin(), all.end(), size_t{0});
    const std::vector<std::vector<float>> spectra = read(all);
    std::vector<const std::vector<float>*> of(pool.size());
    for (size_t i = 0; i < pool.size(); ++i) of[i] = &spectra[i];
    ring = RingStageScores(query, of, keep, jobs);
    order_keys = ring;
  }
  for (size_t i = 0; i < pool.size(); ++i) pool[i].ring_score = ring[i];
  std::vector<bool> chosen(pool.size(), false);
  std::vector<SearchCandidate> out;
  for (size_t i : RingOrder(order_keys, keep)) {
    chosen[i] = true;
    out.push_back(pool[i]);
    out.back().coarse_rank = static_cast<int>(out.size());
  }
  if (dropped) {
    for (size_t i = 0; i < pool.size(); ++i) {
      if (!chosen[i]) dropped->push_back(std::move(pool[i]));
    }
  }
  return out;
}

std::vector<SearchCandidate> CoarseSelection::Expand(const std::vector<SearchCandidate>& scored,
                                                     double threshold,
                                                     const SearchOptions& options) {
  std::vector<SearchCandidate> more;
  if (options.expand_top <= 0 || options.expand_k <= 0 || !index_.index) return more;
  std::vector<const SearchCandidate*> strong;
  for (const SearchCandidate& c : scored) {
    if (c.score >= threshold) strong.push_back(&c);
  }
  std::stable_sort(
      strong.begin(), strong.end(),
      [](const SearchCandidate* a, const SearchCandidate* b) { return a->score > b->score; });
  for (size_t i = 0; i < strong.size() && static_cast<int>(i) < options.expand_top; ++i) {
    const auto v = store_.GetDescriptor(strong[i]->scan, index_.index->descriptor_key());
    if (!v || static_cast<int>(v->size()) != index_.index->dim()) continue;
    for (SearchCandidate& c : Next(*v, options.expand_k, Label(strong[i]->exhibit))) {
      more.push_back(std::move(c));
    }
  }
  return more;
}

std::vector<float> BreechFaceScanDescriptor(const Surface& raw, const std::string& label) {
  Operand op;
  op.label = label;
  op.surface = raw;
  return BreechFaceDescriptor(Preprocessed(op, nullptr), label);
}

SearchReport SearchExhibit(Store& store, const ExhibitRecord& query, const SearchOptions& options,
                           const std::string& actor, const RingQuery* rings) {
  const std::string name = Label(query);
  if (options.coarse_k < 1) throw Error("the coarse stage needs at least one candidate (--k)");
  if (options.ring_pool < 0) throw Error("--ring-pool must be 0 (off) or more");
  if (options.ring_screen < 0) throw Error("--ring-screen must be 0 (off) or more");
  if (options.lead_threshold &&
      !(std::isfinite(*options.lead_threshold) && *options.lead_threshold >= 0)) {
    throw Error("--lead-threshold must be a number >= 0");
  }
  if (query.kind == ExhibitKind::kBullet) return SearchBullet(store, query, options, actor);
  if (query.kind != ExhibitKind::kCartridgeCase) {
    throw Error(name + ": is a " + ToString(query.kind) +
                "; search is available for cartridge cases (breech faces) and bullets");
  }
  const double lead_threshold = options.lead_threshold.value_or(kDefaultLeadThreshold);
  const std::optional<ScanRecord> query_scan = FirstTopography(store, query.id);
  if (!query_scan) {
    throw Error(name + ": has no 3D scan; 2D images cannot be searched yet (bien compare them)");
  }
  SearchReport report;
  report.query = query;
  report.method = kCmcMethod;
  report.lead_threshold = lead_threshold;
  const Partition partition = PartitionOf(query);
  report.partition = partition.Key();
  const std::string key = DescriptorKey();

  const auto t_coarse = Clock::now();
  // Brought up to date first: the query's own descriptor may be backfilled.
  const CoarseIndex ci = OpenCoarseIndex(store, partition);
  const auto query_vector = store.GetDescriptor(query_scan->id, key);
  if (!query_vector) {
    throw Error(name +
                ": its breech face gives no usable descriptor (too little valid data "
                "around the firing pin?); compare it one to one with bien compare");
  }
  report.partition_scans = ci.scans;
  report.index_note = ci.note;
  report.index_kind = std::string(IndexKindName(ci.index->kind()));
  CoarseSelection selection(store, ci, query.cc, query.id);
  int jobs =
      options.jobs > 0 ? options.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(1, jobs);
  std::vector<SearchCandidate> first;
  if (options.ring_pool > 0) {
    // The ring stage: the query's ring spectra around the centre offsets,
    // from its stored original (as the ring spectra of the candidates were).
    std::optional<RingQuery> ring_query;
    if (rings) ring_query = *rings;
    try {
      if (!ring_query) {
        ring_query = BreechFaceRingQuery(
            Preprocessed(ReadStoredScan(store.ObjectPath(query_scan->sha256), *query_scan, name),
                         nullptr),
            name);
      }
    } catch (const Error& e) {
      report.ring_note = std::string("no ring stage: ") + e.what();
    }
    if (ring_query) {
      const auto t_ring = Clock::now();
      first = selection.NextByRings(*query_vector, *ring_query, options.ring_pool, options.coarse_k,
                                    jobs, &report.ring_pool, options.ring_screen);
      report.ring_screen = selection.screen().added;
      report.ring_screen_ms = selection.screen().ms;
      report.ring_screen_note = selection.screen().note;
      int unscored = 0;
      for (const SearchCandidate& c : first) unscored += !c.ring_score;
      if (unscored > 0) {
        report.ring_note =
            std::to_string(unscored) + " candidates without ring spectra kept their cosine rank";
      }
      report.ring_ms = MsSince(t_ring);
    }
  }
  if (!options.ring_pool || report.ring_pool == 0) {
    first = selection.Next(*query_vector, options.coarse_k);
  }
  report.coarse_ms = MsSince(t_coarse);
  if (options.coarse_only) {
    report.coarse_only = true;
    report.candidates = std::move(first);
    return report;
  }

  // Fine: CompareWithStored on all cores, from the cached compact features.
  const auto t_fine = Clock::now();
  report.jobs = jobs;
  FineFeatures features(store.dir());
  const auto query_prepared = features.Get(*query_scan, store.ObjectPath(query_scan->sha256), name);
  auto fine = [&](std::vector<SearchCandidate>& batch) {
    std::vector<FineTarget> targets;
    for (const SearchCandidate& c : batch) targets.push_back({c.exhibit, c.scan});
    const std::vector<FineOutcome> outcomes =
        CompareWithStored(store, features, *query_prepared, targets, jobs);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!outcomes[i].result) {
        report.skipped.push_back(outcomes[i].error);
        continue;
      }
      const CmcResult& r = *outcomes[i].result;
      SearchCandidate& c = batch[i];
      c.score = r.combined;
      c.forward = r.forward.congruent;
      c.backward = r.backward.congruent;
      c.registration = r.forward.registration;
      report.candidates.push_back(std::move(c));
    }
  };
  fine(first);
  // Query expansion: the coarse neighbours of the strongest candidates (at or
  // above the lead threshold) are compared too. Shots of one firearm resemble
  // each other unevenly; a mate the query's own descriptor ranks low is often
  // a near neighbour of another mate.
  std::vector<SearchCandidate> more = selection.Expand(report.candidates, lead_threshold, options);
  fine(more);
  report.fine_ms = MsSince(t_fine);
  report.features_cached = features.hits();
  report.features_computed = features.computed();
  report.features_write_failures = features.write_failures();

  RankAndRecordLeads(
      store, report, kCmcMethod, lead_threshold, options.record_leads, actor,
      [](const SearchCandidate& c) { return RegistrationJson(c.registration).dump(); });
  return report;
}

void PrintSearchSummary(std::ostream& out, const SearchReport& r) {
  int created = 0, updated = 0, decided = 0;
  for (const RecordedLead& l : r.leads) {
    created += l.outcome == LeadOutcome::kCreated;
    updated += l.outcome == LeadOutcome::kUpdated;
    decided += l.outcome == LeadOutcome::kAlreadyDecided;
  }
  const bool bullet = r.method == kBulletSearchMethod;
  const int digits = bullet ? 3 : 1;  // bullet scores lie in 0..1
  out << "search " << Label(r.query) << ": " << r.candidates.size() << " candidates compared";
  if (!r.candidates.empty()) {
    const SearchCandidate& best = r.candidates.front();
    out << ", best " << Label(best.exhibit) << " at " << Fixed(best.score, digits);
    if (best.phase) out << " (phase " << *best.phase << ")";
  }
  out << "; leads: " << created << " new, " << updated << " updated";
  if (decided) out << ", " << decided << " already decided";
  out << " (score >= " << Fixed(r.lead_threshold, digits) << ")\n";
}

namespace {

// "0.412 (#57)": the descriptor cosine and its rank in the coarse pool.
std::string CosineCell(const SearchCandidate& c) {
  if (c.screen_rank > 0) {
    return Fixed(c.coarse_score, 3) + " (screen #" + std::to_string(c.screen_rank) + ")";
  }
  return Fixed(c.coarse_score, 3) + " (#" + std::to_string(c.descriptor_rank) + ")";
}

std::string RingCell(const SearchCandidate& c) {
  return c.ring_score ? Fixed(*c.ring_score, 3) : "-";
}

void PrintRingStage(std::ostream& out, const SearchReport& r) {
  if (r.ring_pool > 0) {
    out << "rings        " << Fixed(r.ring_ms, 0) << " ms: the index's best "
        << r.ring_pool - r.ring_screen;
    if (r.ring_screen > 0) out << " and " << r.ring_screen << " more of the ring screen";
    out << " re-ranked by ring correlation (" << RingSpectraKey() << ")";
    if (!r.ring_note.empty()) out << "; " << r.ring_note;
    out << "\n";
    if (!r.ring_screen_note.empty()) {
      out << "ring screen  " << Fixed(r.ring_screen_ms, 0) << " ms: " << RingCodec::KeyFor()
          << " codes of the partition, " << r.ring_screen_note << "\n";
    }
  } else if (!r.ring_note.empty()) {
    out << "rings        " << r.ring_note << "\n";
  }
}

void PrintBulletSearch(std::ostream& out, const SearchReport& r, size_t shown) {
  out << "query        " << Label(r.query) << "  (" << r.query_lands << " usable lands; partition "
      << r.partition << ", " << r.partition_scans << " land scans indexed)\n"
      << "index        " << r.index_kind << ", " << r.index_note << "\n"
      << "coarse       " << Fixed(r.coarse_ms, 0)
      << " ms: " << r.candidates.size() + r.skipped.size() << " candidate bullets\n"
      << "fine         " << Fixed(r.fine_ms / 1000, 1) << " s: bullet comparison (" << r.method
      << ") on " << r.jobs << " threads\n";
  for (const std::string& s : r.query_unusable) out << "query land not used: " << s << "\n";
  TextTable table({"RANK", "CANDIDATE", "ROLE", "FIREARM", "SCORE", "PHASE", "NEXT PHASE",
                   "LANDS (QUERY-CANDIDATE SCORE)", "COARSE", "KNM >= SCORE (95 % BOUND)", "LEAD"});
  for (size_t i = 0; i < shown; ++i) {
    const SearchCandidate& c = r.candidates[i];
    std::string pairs;
    for (const SearchCandidate::LandPairing& p : c.pairing) {
      if (!pairs.empty()) pairs += " ";
      pairs += std::to_string(p.query_land) + "-" + std::to_string(p.candidate_land) + " " +
               Fixed(p.score, 2);
    }
    table.Add({std::to_string(i + 1), Label(c.exhibit), ToString(c.exhibit.role),
               c.exhibit.firearm_ref.value_or("-"), Fixed(c.score, 3),
               c.phase ? std::to_string(*c.phase) : "-", Fixed(c.runner_up, 3), pairs,
               "#" + std::to_string(c.coarse_rank) + " " + Fixed(c.coarse_score, 3),
               StrengthCell(c), c.lead ? "yes" : ""});
  }
  out << table.Render();
  for (const std::string& s : r.skipped) out << "not compared: " << s << "\n";
  PrintSearchSummary(out, r);
}

}  // namespace

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
      nlohmann::json j = {
          {"rank", i + 1},
          {"exhibit", Label(c.exhibit)},
          {"exhibit_id", c.exhibit.id.value},
          {"scan_id", c.scan.value},
          {"role", ToString(c.exhibit.role)},
          {"coarse_rank", c.coarse_rank},
          {"found_via",
           c.found_via.empty() ? nlohmann::json(nullptr) : nlohmann::json(c.found_via)},
          {"coarse_score", c.coarse_score},
          {"descriptor_rank", c.descriptor_rank},
          {"screen_rank", c.screen_rank},
          {"ring_score", c.ring_score ? nlohmann::json(*c.ring_score) : nlohmann::json(nullptr)},
          {"score", c.score},
          {"forward", c.forward},
          {"backward", c.backward},
          {"registration", RegistrationJson(c.registration)},
          {"strength", {{"text", c.strength_text}}},
          {"lead", c.lead}};
      if (c.phase) {  // a bullet: phase and land pairing instead of cells and registration
        j.erase("forward");
        j.erase("backward");
        j.erase("registration");
        j.erase("scan_id");
        j.erase("descriptor_rank");  // no ring stage for bullets
        j.erase("screen_rank");
        j.erase("ring_score");
        j["phase"] = *c.phase;
        j["lands"] = c.lands;
        j["pairing"] = PairingJson(c);
        j["runner_up"] = c.runner_up;
      }
      if (c.exhibit.firearm_ref) j["firearm"] = *c.exhibit.firearm_ref;
      if (r.coarse_only) {  // no fine comparison: nothing but the coarse stage's
        for (const char* k : {"forward", "backward", "registration", "strength", "lead", "phase",
                              "lands", "pairing", "runner_up"}) {
          j.erase(k);
        }
        j["score"] = nullptr;
      }
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
    nlohmann::json j = {{"query", Label(r.query)},
                        {"partition", r.partition},
                        {"partition_scans", r.partition_scans},
                        {"index", {{"kind", r.index_kind}, {"note", r.index_note}}},
                        {"coarse_only", r.coarse_only},
                        {"compared", r.coarse_only ? 0 : r.candidates.size()},
                        {"candidates", list},
                        {"skipped", r.skipped},
                        {"lead_threshold", r.lead_threshold},
                        {"leads", leads},
                        {"coarse_ms", r.coarse_ms},
                        {"ring_stage",
                         {{"key", RingSpectraKey()},
                          {"pool", r.ring_pool},
                          {"ms", r.ring_ms},
                          {"note", r.ring_note},
                          {"screen",
                           {{"key", RingCodec::KeyFor()},
                            {"added", r.ring_screen},
                            {"ms", r.ring_screen_ms},
                            {"note", r.ring_screen_note}}}}},
                        {"fine_ms", r.fine_ms},
                        {"fine_features",
                         {{"cached", r.features_cached},
                          {"computed", r.features_computed},
                          {"write_failures", r.features_write_failures}}},
                        {"jobs", r.jobs}};
    if (r.method == kBulletSearchMethod) {
      j.erase("fine_features");
      j.erase("ring_stage");
      j["method"] = r.method;
      j["query_lands"] = r.query_lands;
      j["query_unusable"] = r.query_unusable;
    }
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  if (r.coarse_only) {
    ctx.out << "query        " << Label(r.query) << "  (partition " << r.partition << ", "
            << r.partition_scans << (r.method == kBulletSearchMethod ? " land" : "")
            << " scans indexed)\n"
            << "index        " << r.index_kind << ", " << r.index_note << "\n"
            << "coarse       " << Fixed(r.coarse_ms, 0) << " ms: " << r.candidates.size()
            << " candidate exhibits\n";
    PrintRingStage(ctx.out, r);
    ctx.out << "fine         none (--coarse-only): ordered by the coarse "
            << (r.ring_pool ? "ring correlation" : "cosine") << ", no leads\n";
    TextTable table({"RANK", "CANDIDATE", "ROLE", "FIREARM", "COSINE (#RANK)", "RING"});
    for (size_t i = 0; i < shown; ++i) {
      const SearchCandidate& c = r.candidates[i];
      table.Add({std::to_string(i + 1), Label(c.exhibit), ToString(c.exhibit.role),
                 c.exhibit.firearm_ref.value_or("-"), CosineCell(c), RingCell(c)});
    }
    ctx.out << table.Render();
    if (shown < r.candidates.size()) {
      ctx.out << r.candidates.size() - shown << " more not shown (--top " << args.top << ")\n";
    }
    return kExitOk;
  }
  if (r.method == kBulletSearchMethod) {
    PrintBulletSearch(ctx.out, r, shown);
    return kExitOk;
  }
  ctx.out << "query        " << Label(r.query) << "  (partition " << r.partition << ", "
          << r.partition_scans << " scans indexed)\n"
          << "index        " << r.index_kind << ", " << r.index_note << "\n"
          << "coarse       " << Fixed(r.coarse_ms, 0)
          << " ms: " << r.candidates.size() + r.skipped.size() << " candidate exhibits\n";
  PrintRingStage(ctx.out, r);
  ctx.out << "fine         " << Fixed(r.fine_ms / 1000, 1) << " s: CMC on " << r.jobs
          << " threads; features " << r.features_cached << " cached, " << r.features_computed
          << " computed from originals"
          << (r.features_write_failures
                  ? " (" + std::to_string(r.features_write_failures) + " not cached: write failed)"
                  : std::string())
          << "\n";
  TextTable table({"RANK", "CANDIDATE", "ROLE", "FIREARM", "SCORE", "CELLS F/B", "COARSE", "RING",
                   "KNM >= SCORE (95 % BOUND)", "REGISTRATION", "LEAD"});
  for (size_t i = 0; i < shown; ++i) {
    const SearchCandidate& c = r.candidates[i];
    table.Add({std::to_string(i + 1), Label(c.exhibit), ToString(c.exhibit.role),
               c.exhibit.firearm_ref.value_or("-"), Fixed(c.score, 1),
               std::to_string(c.forward) + "/" + std::to_string(c.backward),
               (c.found_via.empty() ? "" : "via " + c.found_via + " ") + "#" +
                   std::to_string(c.coarse_rank) + " " + Fixed(c.coarse_score, 3),
               RingCell(c), StrengthCell(c),
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

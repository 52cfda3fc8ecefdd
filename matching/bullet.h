// Bullet comparison (Hare, Hofmann and Carriquiry 2017; docs/BULLETS.md):
// land to land, by the signatures of imaging/land.h, and bullet to bullet, by
// aligning the land sequences.
//
// Land to land: the second signature slides along the first; at every lag
// where the two overlap by at least `min_overlap_share` of the shorter one,
// the Pearson correlation of the overlapping samples is taken. At the lag of
// the maximum correlation (ccf):
//  - consecutive matching striae (CMS): the striae of each signature are its
//    peaks and valleys (local extrema after a moving mean of `striae_smooth_um`);
//    a stria of the first matches when the second has one of the same kind
//    within `stria_tolerance_um`; CMS is the longest run of consecutive
//    matching striae of the first in the overlap;
//  - distance: D, the root mean square difference of the aligned signatures
//    (micrometres), and D relative to their root mean square height
//    (0 = identical, 1 = unrelated signatures of equal height);
// combined into one score in [0, 1]:
//     score = ( max(0, ccf) + min(1, CMS / cms_full) + (1 - min(1, D_rel)) ) / 3
// An equal-weight mean of three features Hare et al. found among the most
// informative; their random forest is not reproduced (it would need training
// data this node does not have).
//
// Bullet to bullet: with n lands, for each phase p land i of the first faces
// land (i + p) mod n of the second; the phase whose land scores sum highest
// wins, and the bullet score is the mean land score at that phase. Missing
// lands (damaged, not scanned) are left out of the sums.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "imaging/land.h"

namespace bien {

struct LandCompareOptions {
  double min_overlap_share = 0.5;  // of the shorter signature, (0, 1]
  double striae_smooth_um = 20;    // moving mean before finding peaks and valleys
  double stria_tolerance_um = 10;  // a matching stria lies this close
  double cms_full = 20;            // CMS at which the CMS term reaches 1
  void Check() const;              // throws bien::Error "land comparison options: ..."
};

// A signature ready for comparison (validity mask, prefix sums, striae).
struct PreparedLand;
// Throws bien::Error naming `label` for a signature with fewer than 16 valid samples.
std::shared_ptr<const PreparedLand> PrepareLand(const LandSignature& signature,
                                                const std::string& label,
                                                const LandCompareOptions& options = {});
double SpacingOf(const PreparedLand& land);
size_t SamplesOf(const PreparedLand& land);

struct LandComparison {
  double score = 0;  // combined, 0..1
  double ccf = 0;    // maximum correlation over lag
  int lag = 0;       // b's sample i + lag faces a's sample i
  double lag_um = 0;
  double overlap_um = 0;
  int cms = 0;         // consecutive matching striae
  int matches = 0;     // matching striae of a in the overlap
  int striae = 0;      // striae of a in the overlap
  double d_um = 0;     // root mean square difference
  double d_rel = 0;    // d_um over the signatures' root mean square height
  bool valid = false;  // false: no lag with enough overlap (score 0)
};

// Throws bien::Error when the two were sampled at different spacings.
LandComparison CompareLands(const PreparedLand& a, const PreparedLand& b,
                            const LandCompareOptions& options = {});

// A bullet: lands[i] is land i + 1, null when that land was not scanned.
struct PreparedBullet {
  std::string label;
  std::vector<std::shared_ptr<const PreparedLand>> lands;
  int Present() const;
};

struct LandPair {
  int land_a = 0;  // 1-based
  int land_b = 0;
  LandComparison result;
};

struct BulletComparison {
  double score = 0;                 // mean land score at the best phase
  int phase = 0;                    // land i of a faces land ((i - 1 + phase) mod n) + 1 of b
  int lands = 0;                    // n
  std::vector<LandPair> pairs;      // at the best phase, by land of a
  std::vector<double> phase_sums;   // summed land scores, by phase
  std::vector<double> phase_means;  // mean land score, by phase (0 without pairs)
  double runner_up = 0;             // best mean of another phase
  // Every compared land pair: matrix[i][j] is land i+1 of a against land j+1 of b
  // (score NaN where one of them is missing).
  std::vector<std::vector<double>> matrix;
};

// Throws bien::Error when a bullet has no lands or no phase pairs any lands.
BulletComparison CompareBullets(const PreparedBullet& a, const PreparedBullet& b,
                                const LandCompareOptions& options = {});

}  // namespace bien

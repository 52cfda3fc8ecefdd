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

// The coarse search descriptor of one land scan (docs/BULLETS.md, "Coarse
// descriptor"): a fixed-length, L2-normalised vector whose cosine with another
// land's is high when both are shots of the same barrel land, whatever the
// lag between their signatures. Steps:
//  1. the signature is resampled every `step_um` (linear, NaN kept), its valid
//     mean removed, NaN set to 0, `trim_um` cut from each end and both ends
//     tapered (a Tukey window over `taper_um` at each end) so the scan's
//     edges (groove feet, steps) add no spectrum of their own;
//  2. zero-padded (or cut around its middle) to `fft_samples` samples and its
//     power spectrum taken at the wavelengths `min_wavelength_um` to
//     `max_wavelength_um` (the magnitude of a Fourier transform does not
//     change when the signal shifts: the lag between two shots drops out);
//  3. log power minus its moving mean over `smooth_bins` neighbouring bins:
//     what is left is the land's own spectral detail (which striae, how
//     strong), not the general roughness every land shares;
//  4. L2-normalised.
struct BulletDescriptorOptions {
  double step_um = 4;               // resampling step of the signature
  int fft_samples = 1024;           // transform length (4096 um at 4 um)
  double min_wavelength_um = 30;    // shortest wavelength kept
  double max_wavelength_um = 1000;  // longest wavelength kept
  int smooth_bins = 17;             // moving mean of the log power (odd)
  double trim_um = 50;              // cut from each end first (groove feet, edge steps)
  double taper_um = 300;            // Tukey taper at each end
  int min_valid_samples = 64;       // a signature with fewer valid samples is refused
  void Check() const;               // throws bien::Error "bullet descriptor options: ..."
};

// "bld-v1 ..." naming the version and every parameter; the options of the
// land signature it is computed from enter as "sig=" and the first 12 hex
// digits of the SHA-256 of LandOptionsText (the store's keys are at most 128
// characters). A change to either forces the search index to be rebuilt and
// stored descriptors to be recomputed.
std::string BulletDescriptorKey(const BulletDescriptorOptions& options = {},
                                const LandOptions& land = {});
int BulletDescriptorDim(const BulletDescriptorOptions& options = {});
// Every option of the land signature, as text ("land-v1 across=auto dir=...").
std::string LandOptionsText(const LandOptions& land = {});
// Throws bien::Error naming `label` when the signature has too few valid
// samples or carries no striae (flat).
std::vector<float> BulletDescriptor(const LandSignature& signature, const std::string& label,
                                    const BulletDescriptorOptions& options = {});

}  // namespace bien

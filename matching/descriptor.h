// The coarse descriptor of a breech face: one fixed-length, L2-normalised
// vector per scan whose inner product with another scan's vector (a cosine
// similarity) ranks candidates for the fine comparator (matching/cmc.h).
// docs/DESCRIPTOR.md has the method and the measurements behind the defaults.
//
// Method ("bfd-v2"; steps 1-6 are "bfd-v1"):
//  1. the preprocessed surface (imaging/preprocess.h) is resampled to
//     `working_pixel_um` (NaN-aware area averaging) and standardised;
//  2. its centre is the firing-pin impression's centre: a robust circle fit
//     to the inner edge of the valid annulus (the first run of valid points
//     along rays from the centroid). When no inner edge is found (no hole),
//     the outer edge's circle, else the centroid, is used. The primer edge is
//     a worse reference: the primer sits differently in the breech at each
//     shot, the firing-pin hole does not (measured in docs/DESCRIPTOR.md);
//  3. rings every `ring_step_um` between `inner_radius_um` and
//     `outer_radius_um` around that centre are sampled at `angles` points
//     (bilinear; a sample is kept only when its neighbourhood is all valid,
//     0 otherwise);
//  4. each ring's DFT over the angle: a rotation of the case by a multiplies
//     harmonic k of every ring by exp(-i k a), so the cross-ring products
//     X_r(k) conj(X_{r+d}(k)), d = 1..`ring_lags`, do not depend on the
//     rotation but keep the relative phase between rings (unlike |X_r(k)|);
//     harmonics `min_harmonic`..`max_harmonic` are used;
//  5. the products are divided by the two rings' RMS over the band, centred
//     per (d, k) over the rings, and folded into `dim` floats by a fixed signed hash
//     (count sketch; no training data, inner products preserved on average);
//  6. the vector is L2-normalised;
//  7. centre blur ("bfd-v2", the default): steps 3-6 are repeated around
//     every point of a square grid of `centre_blur_step_um` within
//     `centre_blur_um` of the found centre, and the vector is the normalised
//     sum of those unit vectors. The found centre differs between shots of
//     one firearm by tens of micrometres, which turns the high harmonics'
//     phases; averaging over nearby centres keeps weak mates similar
//     (docs/DESCRIPTOR.md, "Centre blur"). centre_blur_um = 0 is "bfd-v1".
// One vector per scan, one query per search: no rotation search.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "imaging/surface.h"

namespace bien {

struct DescriptorOptions {
  double working_pixel_um = 25;   // resampling before the polar grid; input must not be coarser
  double inner_radius_um = 500;   // first ring, from the firing-pin centre
  double outer_radius_um = 2200;  // last ring (a small pistol primer is 2.2 mm in radius)
  double ring_step_um = 25;       // ring spacing
  int angles = 512;               // samples per ring (a power of two is fastest)
  int min_harmonic = 8;           // lowest angular harmonic used (longer waves are form)
  int max_harmonic = 150;         // highest; below angles / 2
  int ring_lags = 1;              // products between rings 1..ring_lags apart
  double min_ring_share = 0.25;   // a ring with fewer valid samples is left out
  int min_valid_samples = 2000;   // fewer valid polar samples in all rings: refused
  int dim = 1024;                 // output floats (the sketch size); 16..4096
  uint64_t sketch_seed = 1;       // the fixed hash of the sketch
  // Centre blur (bfd-v2): the vector is the normalised sum of the unit
  // sketches around every point of a square grid of this step within this
  // radius of the found centre; 0 gives bfd-v1 (the found centre only).
  double centre_blur_um = 75;
  double centre_blur_step_um = 37.5;
  // Throws bien::Error ("descriptor options: ...") on a bad value.
  void Check() const;
};

// "bfd-v1 px=25 r=500..2200/25 ang=512 k=8..150 lag=1 share=0.25 min=2000 dim=1024 seed=1":
// version and every parameter that changes the vector. Store it beside an
// index; a different key means the index must be rebuilt.
std::string DescriptorKey(const DescriptorOptions& options = {});

// Length of the vector (options.dim).
int DescriptorDim(const DescriptorOptions& options = {});

// The descriptor of a surface made by PreprocessBreechFace (band-passed, NaN
// outside the breech face). Deterministic. Throws bien::Error whose message
// starts with `source` for an empty or all-NaN surface, non-square pixels or
// pixels coarser than working_pixel_um, or too little valid data within the
// rings; bad options throw "descriptor options: ...".
std::vector<float> BreechFaceDescriptor(const Surface& preprocessed, const std::string& source,
                                        const DescriptorOptions& options = {});

// Cosine of two descriptors (their inner product; both are unit vectors).
// Throws bien::Error when the lengths differ.
double DescriptorCosine(const std::vector<float>& a, const std::vector<float>& b);

// Ring spectra ("brs-v1"): the rotation-covariant companion of the
// descriptor. The same working surface and firing-pin centre, smoothed
// (normalised Gaussian, `smooth_um`), sampled on rings every `ring_step_um`
// at `angles` points; each ring loses its mean and is transformed over the
// angle; harmonics `min_harmonic`..`max_harmonic` of every ring make the
// vector (ring-major, real and imaginary parts), L2-normalised. A rotation
// of the case turns harmonic k of every ring by the same exp(-i k a), so two
// scans are compared by their correlation at the best rotation
// (RingCorrelation), a second-order score; the descriptor's cosine is the
// energy of that correlation over all rotations, a fourth-order one. Measured
// on the Fadul scans and synthetic sets (docs/DESCRIPTOR.md, "Ring
// spectra"), the best rotation separates mates from non-mates better than
// the descriptor does at 10^5 exhibits, but it cannot be indexed by inner
// product: it is shown by `bien compare` and measured by `bien eval`.
struct RingSpectraOptions {
  double working_pixel_um = 25;   // as the descriptor's; input must not be coarser
  double smooth_um = 50;          // Gaussian sigma before sampling (0: none)
  double inner_radius_um = 575;   // first ring, from the firing-pin centre
  double outer_radius_um = 2075;  // last ring
  double ring_step_um = 75;       // ring spacing
  int angles = 256;               // samples per ring and rotations tried (a power of two)
  int min_harmonic = 4;           // lowest angular harmonic kept
  int max_harmonic = 48;          // highest; below angles / 2
  double min_ring_share = 0.25;   // a ring with fewer valid samples counts as empty
  int min_valid_samples = 500;    // fewer valid samples on the kept rings: refused
  // A query's spectra are also taken around every point of a square grid of
  // this step within this radius of the found centre, and a candidate scores
  // its best: the firing-pin centre moves between shots relative to the
  // breech-face marks (0: the found centre only).
  double centre_search_um = 100;
  double centre_search_step_um = 25;
  // Throws bien::Error ("ring spectra options: ...") on a bad value.
  void Check() const;
};

// "brs-v1 px=25 smooth=50 r=575..2075/75 ang=256 k=4..48 share=0.25 min=500 search=100/25".
std::string RingSpectraKey(const RingSpectraOptions& options = {});

// Length of the vector: 2 x rings x harmonics (1890 floats by default).
int RingSpectraDim(const RingSpectraOptions& options = {});

// The ring spectra of a surface made by PreprocessBreechFace. Deterministic.
// Throws bien::Error starting with `source` as BreechFaceDescriptor does, and
// when fewer than min_valid_samples samples lie on the kept rings.
std::vector<float> BreechFaceRingSpectra(const Surface& preprocessed, const std::string& source,
                                         const RingSpectraOptions& options = {});

// The spectra of a query around the found centre (first) and the offsets of
// the centre search that have enough data.
struct RingQuery {
  std::vector<std::vector<float>> spectra;
  std::vector<std::pair<double, double>> offsets_um;  // (x, y) of each centre
};
RingQuery BreechFaceRingQuery(const Surface& preprocessed, const std::string& source,
                              const RingSpectraOptions& options = {});

struct RingMatch {
  double score = 0;      // correlation at the best rotation, in [-1, 1] (1: the same scan)
  double angle_deg = 0;  // that rotation in [0, 360): b is a turned by it (as RotateSurface)
  double dx_um = 0;      // the query centre's offset that scored best (RingQuery)
  double dy_um = 0;
};

// The correlation of two ring spectra at the best of `angles` rotations,
// refined between them. Throws bien::Error when a length does not fit the
// options.
RingMatch RingCorrelation(const std::vector<float>& a, const std::vector<float>& b,
                          const RingSpectraOptions& options = {});
// The best over the query's centres.
RingMatch RingCorrelation(const RingQuery& a, const std::vector<float>& b,
                          const RingSpectraOptions& options = {});

// Fast synthetic descriptors for index benchmarks at 10^6 exhibits.
//
// Each synthetic firearm has a breech-face texture made directly at the
// descriptor's working resolution: band-limited isotropic relief, parallel
// machining marks (random direction and spacing) and a component shared by
// every firearm of the set (`class_share`: consecutively made parts share
// sub-class marks, which lifts non-match cosines as on real sets). A shot
// imprints it rotated by a random angle about the firing-pin centre, with a
// small centring error, a partial transfer (a smooth field between
// 1 - transfer_loss and 1), its own noise, a primer edge that sits
// differently at each shot and random missing blobs; it is NaN outside the
// annulus. The shot is a Surface at working_pixel_um that goes through
// BreechFaceDescriptor unchanged. Deterministic for (seed, firearm, shot).
//
// Realism (docs/DESCRIPTOR.md, defaults, 2000 firearms x 2 shots): mate
// cosines mean 0.29, sd 0.15 with bfd-v1 and 0.49, sd 0.16 with bfd-v2 (real
// Fadul mates: 0.26, 0.18 and 0.48, 0.15); non-mates mean 0.007 / 0.022, p99
// 0.10 / 0.20 (real consecutively made slides: 0.011 / 0.066, p99 0.25 with
// bfd-v2). About 550 bfd-v1 or 140 bfd-v2 shots per CPU second on one core.
struct SynthDescriptorOptions {
  uint64_t seed = 1;
  double firing_pin_radius_um = 1300;  // mean; each firearm differs by up to +-15 %
  double primer_radius_um = 1700;      // each shot's primer edge
  double primer_offset_um = 80;        // the primer's centre moves this much between shots
  double centre_error_um = 10;         // texture vs firing-pin centre, per shot
  double class_share = 0.22;           // variance share of the set-wide component
  double transfer_loss = 0.5;          // weakest transfer of a shot's imprint
  double noise = 0.33;                 // median RMS of a shot's own noise, relative to the texture
  double noise_spread = 0.5;           // a shot's noise is noise * exp(noise_spread * N(0, 1))
  double missing_share = 0.08;         // area of random missing blobs
  // Machining marks: `mark_waves` parallel waves whose spacings scatter
  // log-normally (sd `mark_period_spread`) and directions normally (sd
  // `mark_direction_spread_rad`) around the firearm's. 1 wave = one exact
  // sinusoid, the first model (sbf-v1, until 2026-11-23): two firearms of
  // similar spacing then looked alike to the rotation-invariant descriptor
  // (non-mate cosines up to 0.8, p99 0.33; real consecutively made slides:
  // max 0.29, p99 0.25).
  int mark_waves = 6;
  double mark_period_spread = 0.3;
  double mark_direction_spread_rad = 0.03;
  void Check() const;
};

// The synthetic model's version and parameters (not the seed), e.g.
// "sbf-v2 pin=1300 ... marks=6/0.3/0.03"; written into features files so
// that vectors of another model are never mixed in a benchmark.
std::string SynthDescriptorKey(const SynthDescriptorOptions& options = {});

// One shot as a Surface at options.working_pixel_um (heights in metres).
Surface MakeSynthBreechFace(const SynthDescriptorOptions& synth, const DescriptorOptions& options,
                            int firearm, int shot);

// Descriptors of shots 0..shots-1 of firearms first..first+count-1, firearm
// major: count * shots * DescriptorDim(options) floats. Makes each firearm's
// texture once.
std::vector<float> SynthDescriptors(const SynthDescriptorOptions& synth,
                                    const DescriptorOptions& options, int first_firearm,
                                    int firearm_count, int shots);

}  // namespace bien

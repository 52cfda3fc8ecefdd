// Bullet land-engraved areas: from one land scan to its signature, the
// striation profile across the land (Hare, Hofmann and Carriquiry 2017,
// "Automatic matching of bullet land impressions"; docs/BULLETS.md has the
// details, the published parameters and where bien departs from them).
//
// Steps:
//  1. orientation: striations run along the bullet's axis. Heights change
//     little along them and a lot across them, so the axis along which the
//     median absolute second difference of the heights (at a lag of
//     `direction_lag_um`) is larger runs across
//     the land. Detected, never assumed (Hamby 252 has Y across the land,
//     other sets X); a stated orientation that the heights contradict is an
//     error, and so is a scan without a clear striation direction;
//  2. crosscut: the heights of a band of lines (`crosscut_band_um` wide) at
//     one position along the bullet, averaged. Starting `crosscut_start_um`
//     from the scan's first line, a crosscut every `crosscut_step_um` is
//     compared with the next (curvature removed from the middle 70 %, then
//     the maximum correlation over a few micrometres of lag); the first
//     position where consecutive crosscuts agree (correlation >=
//     `crosscut_min_ccf`) is taken, else the best agreeing pair;
//  3. groove shoulders: a robust (Tukey bisquare) quadratic fitted to the
//     middle half of the crosscut stands for the bullet's curvature; going
//     out from the middle, the shoulder starts where the smoothed residual
//     rises more than `shoulder_rise_um` above it; the cut is at the valley
//     at the foot of that rise, moved `shoulder_margin_um` inwards (as
//     bulletxtrctr's rollapply method cuts at the first valley after the
//     shoulder's peak). A side without such a rise keeps its valid data;
//  4. curvature: a robust local regression (loess, degree 2, tricube
//     weights, span `curvature_span`, bisquare robustness iterations) of the
//     cropped crosscut; the residual is the raw signature;
//  5. signature: the raw signature smoothed by a loess of span
//     `smooth_span` (Hare's span2), sampled every `signature_spacing_um`
//     micrometres across the land, in micrometres of height. Samples further
//     than `max_gap_um` from any measured point are NaN.
#pragma once

#include <string>
#include <vector>

#include "imaging/surface.h"

namespace bien {

// Which axis of the scan runs across the land (perpendicular to the striations).
enum class LandAxis { kAuto, kX, kY };
const char* ToString(LandAxis axis);  // "auto" | "x" | "y"
// "auto", "x", "y"; throws bien::Error on anything else.
LandAxis ParseLandAxis(const std::string& text);

struct LandOptions {
  LandAxis across = LandAxis::kAuto;  // kAuto: detect (step 1)
  // Step 1: the across/along ratio of median |second difference| below which
  // a scan has no clear striation direction, and above which a stated
  // orientation counts as contradicted.
  double min_direction_ratio = 1.3;
  // Step 1: the lag of the second differences (at 1.5625 um per point the
  // pixel-to-pixel differences are mostly instrument noise, equal both ways).
  double direction_lag_um = 16;
  // Step 2 (bulletxtrctr x3p_crosscut_optimize: ylimits 50, distance 25, minccf 0.9).
  double crosscut_start_um = 50;   // first candidate, from the scan's first line
  double crosscut_step_um = 25;    // distance between candidates
  double crosscut_min_ccf = 0.9;   // consecutive crosscuts agree from here
  double crosscut_band_um = 10;    // lines averaged into one crosscut (x3p_crosscut range)
  double crosscut_max_lag_um = 8;  // lag allowed between consecutive crosscuts
  // Step 3.
  double shoulder_rise_um = 4;      // climb above the valley that ends a groove shoulder
  double shoulder_smooth_um = 25;   // moving mean before looking (rollapply smoothfactor 15 px)
  double shoulder_margin_um = 16;   // cut this far inside the valley (rollapply adjust 10 px)
  double min_land_width_um = 300;   // narrower after the cut: refused
  double min_land_length_um = 100;  // along the bullet: shorter scans are refused
  // Steps 4 and 5 (bulletxtrctr cc_get_signature: span1 0.75, span2 0.03).
  double curvature_span = 0.75;     // share of the land's points in each local fit
  int robust_iterations = 2;        // bisquare re-weightings of the curvature fit
  double smooth_span = 0.03;        // share of the land's points in each smoothing fit
  double signature_spacing_um = 4;  // sample spacing of the signature
  double max_gap_um = 30;           // longer gaps in the crosscut stay NaN
  double min_valid_share = 0.5;     // of the crosscut between the shoulders
  // Throws bien::Error ("land options: ...") on a non-positive, non-finite or
  // out-of-range value.
  void Check() const;
};

struct LandSignature {
  double spacing_um = 0;         // between samples
  std::vector<float> values_um;  // heights, micrometres; NaN = not measured
  // Where it came from, in micrometres of the scan (for reports and pictures).
  LandAxis across = LandAxis::kAuto;  // the axis found (or stated) across the land
  double direction_ratio = 0;         // step 1's across/along ratio
  double crosscut_um = 0;             // position of the crosscut along the bullet
  double crosscut_ccf = 0;            // agreement with the next crosscut
  double groove_left_um = 0;          // the cut, from the start of the across axis
  double groove_right_um = 0;
  bool shoulder_left_found = false;  // false: the valid data's edge was used
  bool shoulder_right_found = false;
  double land_width_um = 0;  // groove_right_um - groove_left_um
  // The crosscut across the whole scan (micrometres, NaN where missing) at
  // `profile_spacing_um`, and the curvature fit over the kept part, for pictures.
  double profile_spacing_um = 0;
  std::vector<float> profile_um;
  std::vector<float> curvature_um;  // same grid as profile_um; NaN outside the cut

  double LengthUm() const { return spacing_um * static_cast<double>(values_um.size()); }
};

// Throws bien::Error whose message starts with `source` when the scan cannot
// give a signature: empty, not heights, no spacing, all NaN, too short along
// or across the bullet, no clear striation direction, or an orientation in
// `options.across` that the heights contradict. Bad options throw
// "land options: ...".
LandSignature ExtractLandSignature(const Surface& land, const std::string& source,
                                   const LandOptions& options = {});

// Loess (Cleveland 1979, as R's loess with surface = "direct" evaluated at
// `at`): degree 2 local fits with tricube weights over the ceil(span * n)
// nearest of the points (xs ascending, ys finite), with `robust_iterations`
// bisquare re-weightings. Fits at every `stride`-th point and interpolates
// linearly in between when stride > 1. Exposed for tests.
std::vector<double> Loess(const std::vector<double>& xs, const std::vector<double>& ys,
                          const std::vector<double>& at, double span, int robust_iterations,
                          int stride = 1);

}  // namespace bien

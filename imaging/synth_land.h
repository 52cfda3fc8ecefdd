// Synthetic bullet land scans, for tests and demos without real data.
//
// Each (barrel, land) has its own striation pattern: white noise smoothed by
// a Gaussian of `striae_width_um`, scaled to `striae_um` RMS. One shot of that
// land is a scan of `along_um` x `across_um` at `pixel_um`: the bullet's
// curvature (a circle of `radius_um`), the land-engraved area between two
// groove shoulders (walls rising `groove_depth_um` outwards over
// `wall_um`), the land's striae (shifted across by up to `max_shift_um` and
// transferred at `transfer` of their height), striae of the shot's own
// (the remaining share), measurement noise of `noise_um` RMS, and NaN where
// the instrument saw nothing (a few specks and a short run at one edge).
// Deterministic for (seed, barrel, land, shot).
#pragma once

#include <cstdint>

#include "imaging/surface.h"

namespace bien {

struct SynthLandOptions {
  uint64_t seed = 1;
  double pixel_um = 1.5625;     // lateral spacing, x and y
  double along_um = 400;        // along the bullet (striation direction)
  double across_um = 2400;      // across the land, shoulders included
  double land_width_um = 1900;  // between the groove shoulders
  double radius_um = 4500;      // bullet radius (curvature across the land)
  double groove_depth_um = 40;  // how far the shoulders rise
  double wall_um = 60;          // over this width
  double striae_um = 1.0;       // RMS of the land's striae
  double striae_width_um = 6;   // Gaussian smoothing of the striae
  double transfer = 0.8;        // share of a shot's striae that are the land's
  double noise_um = 0.25;       // RMS measurement noise per point
  double max_shift_um = 60;     // random shift of the land across the scan
  bool across_y = true;         // true: y runs across the land (as Hamby 252)
  void Check() const;           // throws bien::Error "synthetic land options: ..."
};

// One shot of one land (barrel and land 0-based or any integer ids).
Surface MakeSynthLand(const SynthLandOptions& options, int barrel, int land, int shot);

}  // namespace bien

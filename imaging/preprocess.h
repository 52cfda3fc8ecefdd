// Breech-face preprocessing: from a raw or already-processed cartridge-case
// scan to the surface the comparators work on.
//
// Steps, in order (each can be switched off):
//  1. resample to `working_pixel_um` (area averaging when shrinking, NaN-aware);
//  2. region of interest: the primer (outer circle) and the firing-pin
//     impression (inner circle) are found by circle fits on the valid-data
//     mask and the height; points outside the primer and inside the firing-pin
//     circle (plus `firing_pin_margin_um`) become NaN;
//  3. levelling: a robust (iteratively re-weighted) fit of a plane plus the
//     primer's curvature (second-order surface) is subtracted;
//  4. outliers: points further than `outlier_mad` robust standard deviations
//     from the levelled surface become NaN;
//  5. Gaussian band-pass (ISO 16610-61 style Gaussian, NaN-aware by normalised
//     convolution): wavelengths below `short_cutoff_um` and above
//     `long_cutoff_um` are removed;
//  6. crop to the bounding box of the valid points.
// Already-processed scans (cropped, levelled, band-passed, NaN outside the
// annulus, as in ../shared/data/cartridge/fadul) pass through without damage:
// the circle fits then find the existing annulus and the filters change
// little. 2D images (SurfaceValues::kIntensity) get illumination flattening
// and contrast normalisation instead of levelling, then the same steps.
#pragma once

#include <string>
#include <vector>

#include "imaging/surface.h"

namespace bien {

struct PreprocessOptions {
  double working_pixel_um = 6.25;       // output lateral spacing (x and y)
  bool find_region = true;              // step 2
  double firing_pin_margin_um = 60;     // extra NaN ring around the firing-pin impression
  double primer_margin_um = 60;         // NaN ring inside the primer edge
  bool level = true;                    // step 3
  double outlier_mad = 10;              // step 4; 0 = off
  double short_cutoff_um = 16;          // step 5; 0 = no low-pass
  double long_cutoff_um = 250;          // step 5; 0 = no high-pass
  double illumination_cutoff_um = 500;  // 2D images: background removed by this Gaussian
  void Check() const;                   // throws bien::Error on a bad value
};

struct Circle {
  double cx_px = 0;  // centre, in pixels of the output surface
  double cy_px = 0;
  double r_px = 0;
  bool found = false;
};

// What preprocessing found and did, for `bien compare` output and pictures.
struct PreprocessReport {
  Circle primer;                   // outer edge of the breech-face region
  Circle firing_pin;               // firing-pin impression
  bool already_processed = false;  // input looked band-passed and masked already
  double valid_share = 0;          // of the output grid
  std::vector<std::string> notes;  // human-readable remarks
};

// Throws bien::Error naming `source` when the input cannot give a usable
// breech face (e.g. all NaN, or nothing left after masking).
Surface PreprocessBreechFace(const Surface& input, const std::string& source,
                             const PreprocessOptions& options = {},
                             PreprocessReport* report = nullptr);

}  // namespace bien

// Breech-face preprocessing: from a raw or already-processed cartridge-case
// scan to the surface the comparators work on (docs/PREPROCESS.md has the
// details and the measurements behind the defaults).
//
// Steps, in order (each can be switched off):
//  1. resample to `working_pixel_um` (area averaging when shrinking, bilinear
//     when growing; NaN-aware: a point is valid when half its area was);
//  2. region of interest (heights only): the primer is a robust circle fit to
//     the outer edge of the largest valid region. In a raw scan, a
//     second-order surface fitted to the primer's outer fifth gives the
//     breech-face level; the firing-pin impression (a hole without data or a
//     deep depression, with the rim of primer metal raised around it) is
//     what lies off that level near the middle, and a robust circle fit to
//     its outer edge gives its circle. Points outside the primer (less
//     `primer_margin_um`), inside the impression (plus
//     `firing_pin_margin_um`), and still off the breech-face level become NaN;
//  3. levelling: a robust (iteratively re-weighted, Tukey) fit of a plane plus
//     the primer's curvature (second-order surface) is subtracted;
//  4. outliers: points further than `outlier_mad` robust standard deviations
//     (1.4826 MAD) from the median become NaN;
//  5. Gaussian band-pass (ISO 16610-61 Gaussian, 50 % transmission at each
//     cut-off; NaN-aware by normalised convolution): wavelengths below
//     `short_cutoff_um` and above `long_cutoff_um` are removed;
//  6. crop to the bounding box of the valid points.
// Already-processed scans (cropped, levelled, band-passed, NaN outside the
// annulus, as in ../shared/data/cartridge/fadul) are recognised by their
// heights: after a plane fit, the 1st to 99th percentile spans less than
// 30 um (raw scans: 70 um and more). Their region is kept as given (the
// circles are still fitted, for the report) and the other steps change them
// little beyond the band they share with every scan. 2D images
// (SurfaceValues::kIntensity) are divided by their local mean brightness
// (Gaussian, `illumination_cutoff_um`) and normalised to zero median and unit
// robust sigma, then go through steps 4 to 6 and are normalised again; they
// get no region finding or levelling.
#pragma once

#include <string>
#include <vector>

#include "imaging/surface.h"

namespace bien {

struct PreprocessOptions {
  double working_pixel_um = 6.25;       // output lateral spacing (x and y), > 0
  bool find_region = true;              // step 2
  double firing_pin_margin_um = 60;     // raw scans: extra NaN ring around the impression
  double primer_margin_um = 60;         // raw scans: NaN ring inside the primer edge
  bool level = true;                    // step 3
  double outlier_mad = 10;              // step 4; 0 = off
  double short_cutoff_um = 16;          // step 5; 0 = no low-pass
  double long_cutoff_um = 250;          // step 5; 0 = no high-pass; above short_cutoff_um
  double illumination_cutoff_um = 500;  // 2D images: background Gaussian cut-off; 0 = off
  // Throws bien::Error ("preprocess options: ...") on a negative, non-finite
  // or inverted value.
  void Check() const;
};

// "pre-v1 px=6.25 region=1 fp=60 primer=60 level=1 mad=10 short=16 long=250
// illum=500": the version of the method and every option. Anything derived
// from preprocessed surfaces and kept (cached CMC features) is keyed by it;
// a change of the method's output needs a new version here.
std::string PreprocessKey(const PreprocessOptions& options = {});

struct Circle {
  double cx_px = 0;  // centre, in pixels of the output surface (column, row; may lie outside)
  double cy_px = 0;
  double r_px = 0;
  bool found = false;
};

// What preprocessing found and did, for `bien compare` output and pictures.
struct PreprocessReport {
  Circle primer;                   // outer edge of the breech-face region
  Circle firing_pin;               // firing-pin impression
  bool already_processed = false;  // heights input that looked levelled and band-passed already
  double valid_share = 0;          // of the output grid
  // Where the output's (0, 0) lies in the input resampled to the working
  // pixel size (before cropping); for an input already at that size, output
  // point (x, y) is input point (x + crop_x_px, y + crop_y_px).
  int crop_x_px = 0;
  int crop_y_px = 0;
  std::vector<std::string> notes;  // human-readable remarks
};

// Output: spacing working_pixel_um in x and y, z in the input's unit (metres
// for heights), NaN outside the breech-face region, `values`, provenance and
// warnings kept, no annotation mask. Throws bien::Error whose message starts
// with `source` when the input cannot give a usable breech face (empty, all
// NaN, no spacing, fewer than 16 valid points at the working pixel size, or
// nothing left after masking); bad options throw "preprocess options: ...".
Surface PreprocessBreechFace(const Surface& input, const std::string& source,
                             const PreprocessOptions& options = {},
                             PreprocessReport* report = nullptr);

}  // namespace bien

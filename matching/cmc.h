// Congruent matching cells (CMC) for breech-face impressions.
//
// After Song (2013), Tong et al. (2015, "high CMC") and Chen et al. (2017):
// the reference surface is split into a grid of cells; each cell is searched
// for in the target over rotations and translations by NaN-aware (masked)
// normalised cross-correlation, computed with FFTs. A cell is congruent when
// its best correlation reaches `min_ccf` and its (angle, dx, dy) agrees with
// the consensus registration of all cells within the tolerances. The search
// covers the full circle: a coarse whole-surface registration over 360 degrees
// at low resolution proposes candidate poses, the cells are then searched
// around each candidate and the candidate with most congruent cells wins.
// Both directions are computed (reference cells in the target, target cells
// in the reference).
//
// Coordinates: a registration maps a point p of the reference (micrometres,
// relative to the reference surface's centre, x right, y down) to the target:
//   q = Rot(angle) * p + (dx, dy), relative to the target's centre,
// with Rot(a) = [cos a, -sin a; sin a, cos a] (angle counter-clockwise as seen
// with y down, i.e. clockwise on screen). Deterministic for given inputs.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "imaging/surface.h"

namespace bien {

struct CmcOptions {
  // Resolution: inputs (preprocessed, same pixel size) are resampled to these.
  double cell_pixel_um = 15.625;  // resolution of the cell search
  double coarse_pixel_um = 50;    // resolution of the full-circle registration
  // Cells.
  int cells_per_side = 8;        // grid over the reference's valid bounding box
  double min_cell_valid = 0.15;  // a cell with less valid share is excluded
  // Full-circle coarse registration.
  double coarse_step_deg = 2.5;          // angle step over 360 degrees
  int coarse_candidates = 3;             // poses handed to the cell search
  int choice_cells = 16;                 // fullest cells that judge between candidate poses
  double max_shift_um = 400;             // largest translation between the two centres
  double candidate_separation_deg = 15;  // minimum angle between candidates
  // Cell search around each candidate pose.
  double fine_range_deg = 2;  // +- around the candidate angle
  double fine_step_deg = 2;
  double search_radius_um = 250;  // translation window around the predicted place (at least)
  // Congruency.
  double min_ccf = 0.5;            // minimum masked NCC of a congruent cell
  double prune_ccf = 0.4;          // cells below this at the candidate angle skip the other angles
  double angle_tolerance_deg = 3;  // |cell angle - consensus|
  double translation_tolerance_um = 50;  // |cell shift - consensus| per axis
  double min_overlap = 0.5;  // cell's valid points that must overlap valid target points
  void Check() const;        // throws bien::Error on a bad value
};

struct Registration {
  double angle_deg = 0;  // in (-180, 180]
  double dx_um = 0;
  double dy_um = 0;
};

struct CmcCell {
  int row = 0;  // grid position
  int col = 0;
  // The cell's rectangle in the pixels of the surface given to CompareCmc.
  int x = 0, y = 0, width = 0, height = 0;
  double valid_share = 0;     // share of the cell's points that are valid
  bool used = false;          // false: excluded (too few valid points)
  double ccf = 0;             // best masked NCC found
  Registration registration;  // where the cell matched best
  bool congruent = false;
};

struct CmcDirection {
  int congruent = 0;           // congruent cells
  int valid_cells = 0;         // cells used
  Registration registration;   // consensus registration of this direction
  std::vector<CmcCell> cells;  // every cell of the grid, row-major
};

struct CmcResult {
  CmcDirection forward;   // reference cells found in the target
  CmcDirection backward;  // target cells found in the reference
  // The score: the mean of the two directions' congruent cell counts.
  double combined = 0;
};

// A surface made ready for many comparisons (resampled levels, cells and
// their spectra). Build once per scan; thread-safe to share.
class CmcPrepared;
std::shared_ptr<const CmcPrepared> PrepareCmc(const Surface& surface, const std::string& source,
                                              const CmcOptions& options = {});

// Compact fine-comparison features: what PrepareCmc keeps of a surface (its
// two resampled levels, heights rounded to half precision, NaN where not
// valid, deflated), about 30 KB for a Fadul breech face instead of the
// 0.65-4.8 MB original. A node caches them so a search need not re-read and
// re-preprocess each candidate, and a correlation request carries them to
// other nodes. DecodeCmcFeatures(EncodeCmcFeatures(p)) compares exactly as p.
// Layout (little-endian): "BIENCMCF", u32 format (1), u32 key length, key
// (CmcFeaturesKey), f64 input pixel um, u32 input width, u32 height, then the
// fine and the coarse level: f64 pixel um, f64 centre x, f64 centre y (level
// pixels), u32 width, u32 height, u32 n, n bytes of zlib-deflated binary16
// heights (row-major); last a u32 CRC-32 of everything before it.
//
// "cmcf-v1 fp16 cell=15.62 coarse=50": the options that change the features.
std::string CmcFeaturesKey(const CmcOptions& options = {});
std::string EncodeCmcFeatures(const CmcPrepared& prepared, const CmcOptions& options = {});
// The same bytes straight from a preprocessed surface, without preparing the
// cells (ingest); throws as PrepareCmc does for an unusable surface (but not
// for one without usable cells: DecodeCmcFeatures refuses that one).
std::string EncodeCmcFeatures(const Surface& surface, const std::string& source,
                              const CmcOptions& options = {});
// Throws bien::Error starting with `source` for bytes that are not features
// of this key (any field out of bounds, truncated, bad checksum): safe on
// untrusted input.
std::shared_ptr<const CmcPrepared> DecodeCmcFeatures(std::string_view bytes,
                                                     const std::string& source,
                                                     const CmcOptions& options = {});

// Throws bien::Error for different pixel sizes, all-NaN input, no usable
// cells or no overlap, naming the sources.
CmcResult CompareCmc(const CmcPrepared& reference, const CmcPrepared& target,
                     const CmcOptions& options = {});
CmcResult CompareCmc(const Surface& reference, const Surface& target,
                     const CmcOptions& options = {});

}  // namespace bien

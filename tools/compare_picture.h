// The picture of a breech-face comparison for an examiner (`bien compare A B --png OUT.png`):
// the reference with its CMC cells outlined on the left, the target rotated and shifted into
// the reference frame on the right with every cell drawn where it matched, and the caption and
// a legend below. Congruent cells then sit on the same marks in both panels.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "imaging/surface.h"
#include "matching/cmc.h"

namespace bien::cli {

struct ComparisonPicture {
  std::string reference_label;             // panel titles (non-ASCII shown as '?')
  std::string target_label;                //
  std::vector<std::string> caption_lines;  // score, registration, strength; wrapped to fit
};

// Where WriteComparisonPng puts its parts, in pixels of the PNG. Both panels show the
// reference frame at the same scale.
struct ComparisonLayout {
  int width = 0;  // the whole picture
  int height = 0;
  int panel_width = 0;  // each of the two panels
  int panel_height = 0;
  int left_x = 0;  // top-left corners of the reference (left) and target (right) panels
  int right_x = 0;
  int panel_y = 0;
};

// The layout WriteComparisonPng uses for these inputs (for tests, and callers that crop).
// Throws bien::Error for an empty reference.
ComparisonLayout LayoutComparisonPicture(const Surface& reference, const CmcResult& result,
                                         const ComparisonPicture& info);

// Writes the PNG atomically (a temporary file beside `out`, then renamed). Heights are shown as
// grey levels clipped to the 1st-99th percentile of each surface's valid values; missing points
// in a light blue-grey. Left: the reference with result.forward's cells (congruent green, used
// but not congruent orange, excluded faint). Right: the target mapped into the reference frame
// by result.forward.registration, each used cell drawn where its own registration put it.
// Throws bien::Error when the two surfaces have different pixel sizes or one is empty, and
// naming `out` when it cannot be written (no partial file is left).
void WriteComparisonPng(const Surface& reference, const Surface& target, const CmcResult& result,
                        const ComparisonPicture& info, const std::filesystem::path& out);

}  // namespace bien::cli

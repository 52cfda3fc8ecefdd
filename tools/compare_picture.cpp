#include "tools/compare_picture.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <utility>

#include "core/error.h"
#include "core/file.h"

namespace bien::cli {
namespace {

// Layout, in pixels of the picture.
constexpr int kMargin = 16;
constexpr int kGap = 16;  // between the two panels
constexpr int kMaxWidth = 1600;
constexpr int kMinWidth = 960;  // room for the caption beside narrow panels
constexpr int kMaxPanelWidth = (kMaxWidth - 2 * kMargin - kGap) / 2;
constexpr int kMaxPanelHeight = 760;
constexpr int kTitleHeight = 50;     // two title lines above the panels
constexpr int kScaleBarHeight = 36;  // below the panels
constexpr int kCaptionLineHeight = 24;
constexpr int kLegendLineHeight = 26;
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr double kTitleScale = 0.6;
constexpr double kSubtitleScale = 0.45;
constexpr double kCaptionScale = 0.55;
constexpr double kLegendScale = 0.5;
constexpr double kCellLabelScale = 0.38;

// Colours (BGR). Data is pure grey, so every colour here is told apart from it.
const cv::Scalar kPaper(255, 255, 255);
const cv::Scalar kInk(25, 25, 25);
const cv::Scalar kNoData(228, 212, 196);   // light blue-grey
const cv::Scalar kCongruent(0, 205, 0);    // green
const cv::Scalar kUsed(0, 140, 255);       // orange
const cv::Scalar kExcluded(190, 120, 40);  // blue, blended faintly
constexpr double kExcludedAlpha = 0.35;

// Hershey fonts are ASCII only: the micro and degree signs get words, other
// non-ASCII characters become '?'.
std::string Printable(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out += (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c);
      continue;
    }
    size_t len = 1;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
    }
    const std::string seq = text.substr(i, len);
    if (seq == "\xc2\xb5" || seq == "\xce\xbc") {
      out += 'u';
    } else if (seq == "\xc2\xb0") {
      out += " deg";
    } else {
      out += '?';
    }
    i += std::min(len, text.size() - i) - 1;
  }
  return out;
}

int TextWidth(const std::string& text, double scale, int thickness = 1) {
  int baseline = 0;
  return cv::getTextSize(text, kFont, scale, thickness, &baseline).width;
}

// `text` cut to `width` pixels, ending in "..." when cut.
std::string Fit(const std::string& text, int width, double scale, int thickness = 1) {
  if (TextWidth(text, scale, thickness) <= width) return text;
  std::string cut = text;
  while (!cut.empty() && TextWidth(cut + "...", scale, thickness) > width) cut.pop_back();
  return cut + "...";
}

// Greedy word wrap to `width` pixels; a word longer than a line is cut.
std::vector<std::string> Wrap(const std::string& text, int width, double scale) {
  std::vector<std::string> lines;
  std::string line;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    const std::string joined = line.empty() ? word : line + " " + word;
    if (TextWidth(joined, scale) <= width) {
      line = joined;
      continue;
    }
    if (!line.empty()) lines.push_back(line);
    line = Fit(word, width, scale);
  }
  if (!line.empty() || lines.empty()) lines.push_back(line);
  return lines;
}

std::string Format(const char* format, double a, double b = 0, double c = 0) {
  char buffer[128];
  std::snprintf(buffer, sizeof buffer, format, a, b, c);
  return buffer;
}

std::string Describe(const Registration& r) {
  return Format("%.2f deg, dx %.1f um, dy %.1f um", r.angle_deg, r.dx_um, r.dy_um);
}

struct LegendItem {
  cv::Scalar colour;
  bool filled = false;  // a filled swatch (no data) rather than an outline (cells)
  bool faint = false;
  std::string text;
  cv::Point at;  // top-left of the swatch
};

// Everything about the picture that does not need the pixels.
struct Plan {
  ComparisonLayout layout;
  double px_per_um = 0;  // picture pixels per micrometre, both panels
  std::vector<std::string> caption;
  int caption_top = 0;
  std::vector<LegendItem> legend;
};

std::string NameOf(const std::string& label, const char* fallback) {
  return label.empty() ? fallback : label;
}

void CheckSurface(const Surface& s, const std::string& name) {
  if (s.width <= 0 || s.height <= 0 ||
      s.z.size() != static_cast<size_t>(s.width) * static_cast<size_t>(s.height)) {
    throw Error("cannot draw the comparison picture: " + name + " is an empty surface");
  }
  if (!(std::isfinite(s.dx_m) && s.dx_m > 0 && std::isfinite(s.dy_m) && s.dy_m > 0)) {
    throw Error("cannot draw the comparison picture: " + name + " has no valid pixel size");
  }
}

struct CellCounts {
  int congruent = 0;
  int used = 0;  // used but not congruent
  int excluded = 0;
};

CellCounts Count(const CmcDirection& direction) {
  CellCounts n;
  for (const CmcCell& cell : direction.cells) {
    if (!cell.used) {
      ++n.excluded;
    } else if (cell.congruent) {
      ++n.congruent;
    } else {
      ++n.used;
    }
  }
  return n;
}

Plan MakePlan(const Surface& reference, const CmcResult& result, const ComparisonPicture& info) {
  CheckSurface(reference, NameOf(info.reference_label, "the reference"));
  Plan plan;
  ComparisonLayout& l = plan.layout;
  const double width_um = reference.width * reference.dx_m * 1e6;
  const double height_um = reference.height * reference.dy_m * 1e6;
  plan.px_per_um = std::min(kMaxPanelWidth / width_um, kMaxPanelHeight / height_um);
  l.panel_width =
      std::clamp(static_cast<int>(std::lround(width_um * plan.px_per_um)), 1, kMaxPanelWidth);
  l.panel_height =
      std::clamp(static_cast<int>(std::lround(height_um * plan.px_per_um)), 1, kMaxPanelHeight);
  const int content = 2 * l.panel_width + kGap;
  l.width = std::max(content + 2 * kMargin, kMinWidth);
  l.left_x = (l.width - content) / 2;
  l.right_x = l.left_x + l.panel_width + kGap;
  l.panel_y = kMargin + kTitleHeight;

  const int text_width = l.width - 2 * kMargin;
  for (const std::string& line : info.caption_lines) {
    for (std::string& part : Wrap(Printable(line), text_width, kCaptionScale)) {
      plan.caption.push_back(std::move(part));
    }
  }
  plan.caption_top = l.panel_y + l.panel_height + kScaleBarHeight;
  int y = plan.caption_top + static_cast<int>(plan.caption.size()) * kCaptionLineHeight;

  // The legend flows over as many lines as it needs.
  const CellCounts n = Count(result.forward);
  plan.legend = {
      {kCongruent, false, false, "congruent cell (" + std::to_string(n.congruent) + ")", {}},
      {kUsed, false, false, "used, not congruent (" + std::to_string(n.used) + ")", {}},
      {kExcluded,
       false,
       true,
       "excluded: too few valid points (" + std::to_string(n.excluded) + ")",
       {}},
      {kNoData, true, false, "no data", {}},
  };
  y += 8;
  int x = kMargin;
  for (LegendItem& item : plan.legend) {
    const int item_width = 18 + 8 + TextWidth(item.text, kLegendScale) + 28;
    if (x > kMargin && x + item_width > l.width - kMargin) {
      x = kMargin;
      y += kLegendLineHeight;
    }
    item.at = cv::Point(x, y);
    x += item_width;
  }
  y += kLegendLineHeight;
  l.height = y + kMargin;
  return plan;
}

// The surface at the panel resolution: the valid-weighted mean height and the
// valid share per pixel (area averaging when shrinking, bilinear when growing).
struct Weighted {
  cv::Mat sum;    // CV_32F: sum of z * valid, resampled
  cv::Mat share;  // CV_32F: valid share, resampled
};

Weighted Resampled(const Surface& s, int width, int height) {
  cv::Mat sum(s.height, s.width, CV_32F);
  cv::Mat share(s.height, s.width, CV_32F);
  for (int y = 0; y < s.height; ++y) {
    auto* zs = sum.ptr<float>(y);
    auto* ms = share.ptr<float>(y);
    for (int x = 0; x < s.width; ++x) {
      const float z = s.At(x, y);
      const bool valid = std::isfinite(z);
      zs[x] = valid ? z : 0.0f;
      ms[x] = valid ? 1.0f : 0.0f;
    }
  }
  const bool shrink =
      static_cast<int64_t>(width) * height < static_cast<int64_t>(s.width) * s.height;
  const int interpolation = shrink ? cv::INTER_AREA : cv::INTER_LINEAR;
  Weighted w;
  cv::resize(sum, w.sum, cv::Size(width, height), 0, 0, interpolation);
  cv::resize(share, w.share, cv::Size(width, height), 0, 0, interpolation);
  return w;
}

// Heights where at least half of a pixel is valid, NaN elsewhere.
cv::Mat Heights(const Weighted& w) {
  cv::Mat out(w.sum.size(), CV_32F);
  for (int y = 0; y < out.rows; ++y) {
    const auto* zs = w.sum.ptr<float>(y);
    const auto* ms = w.share.ptr<float>(y);
    auto* o = out.ptr<float>(y);
    for (int x = 0; x < out.cols; ++x) o[x] = ms[x] >= 0.5f ? zs[x] / ms[x] : NAN;
  }
  return out;
}

// The 1st and 99th percentile of the valid heights.
std::pair<double, double> Contrast(const cv::Mat& heights) {
  std::vector<float> values;
  values.reserve(heights.total());
  for (int y = 0; y < heights.rows; ++y) {
    const auto* h = heights.ptr<float>(y);
    for (int x = 0; x < heights.cols; ++x) {
      if (std::isfinite(h[x])) values.push_back(h[x]);
    }
  }
  if (values.empty()) return {0, 1};
  auto at = [&](double q) {
    const auto k = static_cast<size_t>(std::lround(q * (values.size() - 1)));
    std::nth_element(values.begin(), values.begin() + k, values.end());
    return static_cast<double>(values[k]);
  };
  const double lo = at(0.01);
  const double hi = at(0.99);
  if (!(hi > lo)) return {lo - 1, lo + 1};  // flat: mid grey
  return {lo, hi};
}

cv::Mat Grey(const cv::Mat& heights, std::pair<double, double> range) {
  cv::Mat out(heights.size(), CV_8UC3, kNoData);
  const double scale = 255.0 / (range.second - range.first);
  for (int y = 0; y < heights.rows; ++y) {
    const auto* h = heights.ptr<float>(y);
    auto* o = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < heights.cols; ++x) {
      if (!std::isfinite(h[x])) continue;
      const auto g = cv::saturate_cast<uchar>((h[x] - range.first) * scale);
      o[x] = cv::Vec3b(g, g, g);
    }
  }
  return out;
}

cv::Matx33d Affine(double a, double b, double c, double d, double e, double f) {
  return cv::Matx33d(a, b, c, d, e, f, 0, 0, 1);
}

// The rigid motion of a registration, in micrometres: reference -> target.
cv::Matx33d Motion(const Registration& r) {
  const double a = r.angle_deg * CV_PI / 180;
  return Affine(std::cos(a), -std::sin(a), r.dx_um, std::sin(a), std::cos(a), r.dy_um);
}

// Pixels of a surface -> micrometres relative to its centre.
cv::Matx33d PixelsToUm(const Surface& s) {
  const double dx = s.dx_m * 1e6;
  const double dy = s.dy_m * 1e6;
  return Affine(dx, 0, -(s.width - 1) / 2.0 * dx, 0, dy, -(s.height - 1) / 2.0 * dy);
}

// Pixels of a surface -> pixels of its resampled image (cv::resize's pixel-centre convention).
cv::Matx33d PixelsToPanel(const Surface& s, const cv::Size& size) {
  const double sx = static_cast<double>(size.width) / s.width;
  const double sy = static_cast<double>(size.height) / s.height;
  return Affine(sx, 0, 0.5 * sx - 0.5, 0, sy, 0.5 * sy - 0.5);
}

void Polygon(cv::Mat& image, const std::vector<cv::Point2d>& corners, const cv::Scalar& colour,
             int thickness) {
  constexpr int kShift = 4;  // sub-pixel corners
  std::vector<cv::Point> points;
  for (const cv::Point2d& p : corners) {
    const double lim = 1e6;
    points.emplace_back(static_cast<int>(std::lround(std::clamp(p.x, -lim, lim) * (1 << kShift))),
                        static_cast<int>(std::lround(std::clamp(p.y, -lim, lim) * (1 << kShift))));
  }
  cv::polylines(image, points, true, colour, thickness, cv::LINE_AA, kShift);
}

void Text(cv::Mat& image, const std::string& text, cv::Point at, double scale,
          const cv::Scalar& colour, int thickness = 1) {
  cv::putText(image, text, at, kFont, scale, colour, thickness, cv::LINE_AA);
}

// A label readable on any grey: dark outline, coloured fill.
void Label(cv::Mat& image, const std::string& text, cv::Point at, const cv::Scalar& colour) {
  Text(image, text, at, kCellLabelScale, cv::Scalar(0, 0, 0), 3);
  Text(image, text, at, kCellLabelScale, colour, 1);
}

// Outlines every cell in `panel`; `to_panel` maps a cell corner (reference pixels) into the
// panel, per cell. Excluded cells only when `excluded` (their place in the target is unknown).
template <typename Map>
void DrawCells(cv::Mat& panel, const CmcDirection& direction, const Map& to_panel, bool excluded) {
  std::vector<std::vector<cv::Point2d>> corners(direction.cells.size());
  double smallest = 1e9;
  for (size_t i = 0; i < direction.cells.size(); ++i) {
    const CmcCell& c = direction.cells[i];
    const double x0 = c.x - 0.5, y0 = c.y - 0.5;
    const double x1 = x0 + c.width, y1 = y0 + c.height;
    for (const cv::Point2d& p :
         {cv::Point2d(x0, y0), cv::Point2d(x1, y0), cv::Point2d(x1, y1), cv::Point2d(x0, y1)}) {
      corners[i].push_back(to_panel(c, p));
    }
    smallest = std::min(smallest, cv::norm(corners[i][1] - corners[i][0]));
  }
  const int thickness = smallest >= 24 ? 2 : 1;
  // Each outline a little inside its cell, so neighbours' outlines stay apart.
  const double inset = smallest >= 24 ? 1.5 * thickness : 0.5;
  for (std::vector<cv::Point2d>& polygon : corners) {
    const cv::Point2d centre = 0.25 * (polygon[0] + polygon[1] + polygon[2] + polygon[3]);
    for (cv::Point2d& p : polygon) {
      const double d = cv::norm(centre - p);
      if (d > 4 * inset) p += (centre - p) * (inset * std::sqrt(2.0) / d);
    }
  }
  if (excluded) {
    cv::Mat faint = panel.clone();
    for (size_t i = 0; i < direction.cells.size(); ++i) {
      if (!direction.cells[i].used) Polygon(faint, corners[i], kExcluded, 1);
    }
    cv::addWeighted(faint, kExcludedAlpha, panel, 1 - kExcludedAlpha, 0, panel);
  }
  // Congruent cells last, so they stay on top.
  for (const bool congruent : {false, true}) {
    for (size_t i = 0; i < direction.cells.size(); ++i) {
      const CmcCell& c = direction.cells[i];
      if (!c.used || c.congruent != congruent) continue;
      if (!std::isfinite(corners[i][0].x) || !std::isfinite(corners[i][0].y)) continue;
      const cv::Scalar& colour = congruent ? kCongruent : kUsed;
      Polygon(panel, corners[i], colour, thickness);
      if (smallest >= 28) {
        const cv::Point2d at = corners[i][0] + cv::Point2d(4, 13);
        if (std::abs(at.x) < 1e5 && std::abs(at.y) < 1e5) {
          Label(panel, std::to_string(i + 1),
                cv::Point(static_cast<int>(at.x), static_cast<int>(at.y)), colour);
        }
      }
    }
  }
}

cv::Point2d Apply(const cv::Matx33d& m, const cv::Point2d& p) {
  return {m(0, 0) * p.x + m(0, 1) * p.y + m(0, 2), m(1, 0) * p.x + m(1, 1) * p.y + m(1, 2)};
}

// A round length near a fifth of the panel, drawn below it.
void ScaleBar(cv::Mat& canvas, const Plan& plan, int x, int y) {
  const double target_um = 0.2 * plan.layout.panel_width / plan.px_per_um;
  double unit = std::pow(10.0, std::floor(std::log10(target_um)));
  double length = unit;
  for (const double m : {1.0, 2.0, 5.0}) {
    if (m * unit <= target_um) length = m * unit;
  }
  const int px = std::max(1, static_cast<int>(std::lround(length * plan.px_per_um)));
  cv::line(canvas, {x, y}, {x + px, y}, kInk, 2);
  cv::line(canvas, {x, y - 5}, {x, y + 5}, kInk, 1);
  cv::line(canvas, {x + px, y - 5}, {x + px, y + 5}, kInk, 1);
  const std::string text =
      length >= 1000 ? Format("%g mm", length / 1000) : Format("%g um", length);
  Text(canvas, text, {x + px + 8, y + 5}, kLegendScale, kInk);
}

cv::Mat Render(const Surface& reference, const Surface& target, const CmcResult& result,
               const ComparisonPicture& info, const Plan& plan) {
  const ComparisonLayout& l = plan.layout;
  const cv::Size panel_size(l.panel_width, l.panel_height);

  // Left: the reference as measured.
  const cv::Mat ref_heights = Heights(Resampled(reference, l.panel_width, l.panel_height));
  cv::Mat left = Grey(ref_heights, Contrast(ref_heights));

  // Right: the target, resampled to the same scale, then mapped into the reference frame.
  // Each panel pixel is looked up in the target (the inverse mapping):
  // panel -> reference pixels -> um -> registration -> target um -> target pixels -> resampled.
  const double target_um_w = target.width * target.dx_m * 1e6;
  const double target_um_h = target.height * target.dy_m * 1e6;
  const cv::Size target_size(
      std::max(1, static_cast<int>(std::lround(target_um_w * plan.px_per_um))),
      std::max(1, static_cast<int>(std::lround(target_um_h * plan.px_per_um))));
  const Weighted t = Resampled(target, target_size.width, target_size.height);
  const cv::Matx33d ref_to_panel = PixelsToPanel(reference, panel_size);
  const cv::Matx33d ref_to_um = PixelsToUm(reference);
  const cv::Matx33d consensus = Motion(result.forward.registration);
  const cv::Matx33d panel_to_target = PixelsToPanel(target, target_size) *
                                      PixelsToUm(target).inv() * consensus * ref_to_um *
                                      ref_to_panel.inv();
  const cv::Mat warp = cv::Mat(panel_to_target).rowRange(0, 2);
  Weighted mapped;
  cv::warpAffine(t.sum, mapped.sum, warp, panel_size, cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                 cv::BORDER_CONSTANT, 0);
  cv::warpAffine(t.share, mapped.share, warp, panel_size, cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                 cv::BORDER_CONSTANT, 0);
  cv::Mat right = Grey(Heights(mapped), Contrast(Heights(t)));

  // Cells: as cut from the reference on the left; on the right where each cell's own
  // registration put it in the target, brought back by the consensus registration.
  DrawCells(
      left, result.forward,
      [&](const CmcCell&, const cv::Point2d& p) { return Apply(ref_to_panel, p); }, true);
  const cv::Matx33d target_to_ref_panel = ref_to_panel * ref_to_um.inv() * consensus.inv();
  DrawCells(
      right, result.forward,
      [&](const CmcCell& c, const cv::Point2d& p) {
        return Apply(target_to_ref_panel * Motion(c.registration) * ref_to_um, p);
      },
      false);

  cv::Mat canvas(l.height, l.width, CV_8UC3, kPaper);
  left.copyTo(canvas(cv::Rect(l.left_x, l.panel_y, l.panel_width, l.panel_height)));
  right.copyTo(canvas(cv::Rect(l.right_x, l.panel_y, l.panel_width, l.panel_height)));
  for (const int x : {l.left_x, l.right_x}) {
    cv::rectangle(canvas, cv::Rect(x - 1, l.panel_y - 1, l.panel_width + 2, l.panel_height + 2),
                  cv::Scalar(150, 150, 150), 1);
  }

  // Titles: over their panel; beside narrow panels the left title may reach left into the
  // margin (right-aligned to its panel) and the right one to the picture's edge.
  const int line1 = l.panel_y - 30;
  const int line2 = l.panel_y - 10;
  auto left_title = [&](const std::string& text, int y, double scale, int thickness) {
    const int room = l.left_x + l.panel_width + kGap / 2 - kMargin;
    const std::string fitted = Fit(text, room, scale, thickness);
    const int w = TextWidth(fitted, scale, thickness);
    const int x = w <= l.panel_width + kGap / 2 ? l.left_x : l.left_x + l.panel_width - w;
    Text(canvas, fitted, {std::max(kMargin, x), y}, scale, kInk, thickness);
  };
  auto right_title = [&](const std::string& text, int y, double scale, int thickness) {
    const int room = l.width - kMargin - l.right_x;
    Text(canvas, Fit(text, room, scale, thickness), {l.right_x, y}, scale, kInk, thickness);
  };
  left_title("Reference: " + Printable(NameOf(info.reference_label, "reference")), line1,
             kTitleScale, 2);
  left_title("as measured, with the cells of the comparison", line2, kSubtitleScale, 1);
  right_title("Target: " + Printable(NameOf(info.target_label, "target")), line1, kTitleScale, 2);
  right_title("in the reference frame (registration " + Describe(result.forward.registration) +
                  "); cells where they matched",
              line2, kSubtitleScale, 1);

  const int bar_y = l.panel_y + l.panel_height + 18;
  ScaleBar(canvas, plan, l.left_x, bar_y);
  ScaleBar(canvas, plan, l.right_x, bar_y);

  // Caption and legend.
  int y = plan.caption_top + kCaptionLineHeight - 6;
  for (const std::string& line : plan.caption) {
    Text(canvas, line, {kMargin, y}, kCaptionScale, kInk);
    y += kCaptionLineHeight;
  }
  for (const LegendItem& item : plan.legend) {
    const cv::Rect swatch(item.at.x, item.at.y + 4, 18, 14);
    if (item.filled) {
      cv::rectangle(canvas, swatch, item.colour, cv::FILLED);
      cv::rectangle(canvas, swatch, cv::Scalar(150, 150, 150), 1);
    } else {
      cv::Mat patch = canvas(swatch);
      cv::Mat drawn = patch.clone();
      cv::rectangle(drawn, cv::Rect(0, 0, swatch.width, swatch.height), item.colour,
                    item.faint ? 1 : 2);
      cv::addWeighted(drawn, item.faint ? kExcludedAlpha * 1.5 : 1.0, patch,
                      item.faint ? 1 - kExcludedAlpha * 1.5 : 0.0, 0, patch);
    }
    Text(canvas, item.text, {item.at.x + 26, item.at.y + 16}, kLegendScale, kInk);
  }
  return canvas;
}

}  // namespace

ComparisonLayout LayoutComparisonPicture(const Surface& reference, const CmcResult& result,
                                         const ComparisonPicture& info) {
  return MakePlan(reference, result, info).layout;
}

void WriteComparisonPng(const Surface& reference, const Surface& target, const CmcResult& result,
                        const ComparisonPicture& info, const std::filesystem::path& out) {
  const std::string ref_name = NameOf(info.reference_label, "the reference");
  const std::string target_name = NameOf(info.target_label, "the target");
  CheckSurface(reference, ref_name);
  CheckSurface(target, target_name);
  auto same = [](double a, double b) { return std::abs(a - b) <= 1e-6 * std::max(a, b); };
  if (!same(reference.dx_m, target.dx_m) || !same(reference.dy_m, target.dy_m)) {
    throw Error("cannot draw the comparison picture: different pixel sizes (" + ref_name + " " +
                Format("%g x %g um", reference.dx_m * 1e6, reference.dy_m * 1e6) + ", " +
                target_name + " " + Format("%g x %g um", target.dx_m * 1e6, target.dy_m * 1e6) +
                ")");
  }
  const Registration& r = result.forward.registration;
  if (!std::isfinite(r.angle_deg) || !std::isfinite(r.dx_um) || !std::isfinite(r.dy_um)) {
    throw Error("cannot draw the comparison picture: the registration is not a number");
  }
  std::vector<uchar> png;
  try {
    const Plan plan = MakePlan(reference, result, info);
    const cv::Mat picture = Render(reference, target, result, info, plan);
    if (!cv::imencode(".png", picture, png)) throw Error(out.string() + ": cannot encode PNG");
  } catch (const cv::Exception& e) {
    throw Error(out.string() + ": cannot draw the comparison picture (" + e.msg + ")");
  }
  WriteFileAtomically(out, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()),
                      "comparison picture");
}

}  // namespace bien::cli

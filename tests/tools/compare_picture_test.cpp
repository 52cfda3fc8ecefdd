// The comparison picture: a synthetic pair whose target is the reference rotated
// and shifted by a known registration; the right panel must show the target
// brought back onto the reference.
#include "tools/compare_picture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <vector>

#include "core/error.h"
#include "tests/test_util.h"

namespace bien::testing {
namespace {

using cli::ComparisonLayout;
using cli::ComparisonPicture;

constexpr double kPixelUm = 3.0;

// A random texture in micrometres (Gaussian bumps of several sizes), defined everywhere so
// the target can be sampled exactly at its own points.
class Texture {
 public:
  explicit Texture(uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> pos(-550, 550), amp(-1, 1), sigma(6, 30);
    for (int i = 0; i < 900; ++i) bumps_.push_back({pos(rng), pos(rng), amp(rng), sigma(rng)});
  }
  float operator()(double x, double y) const {
    double z = 0;
    for (const Bump& b : bumps_) {
      const double d2 = (x - b.x) * (x - b.x) + (y - b.y) * (y - b.y);
      if (d2 < 16 * b.s * b.s) z += b.a * std::exp(-d2 / (2 * b.s * b.s));
    }
    return static_cast<float>(z * 1e-6);  // micrometres of height, in metres
  }

 private:
  struct Bump {
    double x, y, a, s;
  };
  std::vector<Bump> bumps_;
};

Surface Blank(int width, int height) {
  Surface s;
  s.width = width;
  s.height = height;
  s.dx_m = s.dy_m = kPixelUm * 1e-6;
  s.z.assign(static_cast<size_t>(width) * height, NAN);
  return s;
}

// The reference: a disc with a hole (like a firing-pin aperture), off-centre.
Surface Reference(const Texture& f) {
  Surface s = Blank(300, 300);
  const double c = (s.width - 1) / 2.0;
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      const double r = std::hypot(x - c, y - c);
      const double hole = std::hypot(x - c - 20, y - c + 10);
      if (r <= 140 && hole > 25) s.At(x, y) = f((x - c) * kPixelUm, (y - c) * kPixelUm);
    }
  }
  return s;
}

// The target, a different size: at target point q lies reference point p with
// q = Rot(angle) p + (dx, dy), both relative to their surfaces' centres (cmc.h).
Surface Target(const Texture& f, const Registration& r) {
  Surface s = Blank(320, 280);
  const double cx = (s.width - 1) / 2.0, cy = (s.height - 1) / 2.0;
  const double a = r.angle_deg * M_PI / 180, co = std::cos(a), si = std::sin(a);
  for (int y = 0; y < s.height; ++y) {
    for (int x = 0; x < s.width; ++x) {
      if (std::hypot(x - cx, y - cy) > 135) continue;
      const double qx = (x - cx) * kPixelUm - r.dx_um, qy = (y - cy) * kPixelUm - r.dy_um;
      s.At(x, y) = f(co * qx + si * qy, -si * qx + co * qy);  // Rot(-angle) (q - t)
    }
  }
  return s;
}

const Registration kTruth{30, 60, -45};

// A 4 x 4 grid over the reference; the corners excluded, most cells congruent at the truth,
// two used cells that matched elsewhere.
CmcResult Result(const Registration& consensus) {
  CmcResult result;
  result.forward.registration = consensus;
  for (int row = 0; row < 4; ++row) {
    for (int col = 0; col < 4; ++col) {
      CmcCell cell;
      cell.row = row;
      cell.col = col;
      cell.x = 10 + col * 70;
      cell.y = 10 + row * 70;
      cell.width = cell.height = 70;
      const bool corner = (row == 0 || row == 3) && (col == 0 || col == 3);
      cell.used = !corner;
      cell.valid_share = corner ? 0.1 : 0.9;
      if (cell.used && !(row == 1 && col == 2) && !(row == 2 && col == 0)) {
        cell.congruent = true;
        cell.ccf = 0.8;
        cell.registration = {consensus.angle_deg + 0.5 * (col - 1.5),
                             consensus.dx_um + 3 * (row - 1.5), consensus.dy_um - 2 * col};
      } else if (cell.used) {
        cell.ccf = 0.3;
        cell.registration = {consensus.angle_deg - 70, consensus.dx_um + 150, consensus.dy_um - 90};
      }
      result.forward.cells.push_back(cell);
    }
  }
  for (const CmcCell& c : result.forward.cells) {
    result.forward.valid_cells += c.used;
    result.forward.congruent += c.congruent;
  }
  result.combined = result.forward.congruent;
  return result;
}

ComparisonPicture Info() {
  return {
      "Case 7 / E1 (test fire) \xc2\xb5",
      "Case 7 / E2 (cartridge case)",
      {"CMC score: 10 congruent of 12 cells forward", "Registration: 30.00\xc2\xb0, 60 \xc2\xb5m",
       "Strength: a long caption line that has to be wrapped because it keeps going and going "
       "well beyond the width of the picture, with more words than fit on a single line of it"}};
}

struct Rendered {
  cv::Mat image;
  ComparisonLayout layout;
};

Rendered Render(const TempDir& dir, const Surface& reference, const Surface& target,
                const CmcResult& result, const std::string& name) {
  const std::filesystem::path out = dir / name;
  cli::WriteComparisonPng(reference, target, result, Info(), out);
  return {cv::imread(out.string(), cv::IMREAD_COLOR),
          cli::LayoutComparisonPicture(reference, result, Info())};
}

cv::Mat LeftPanel(const Rendered& r) {
  const ComparisonLayout& l = r.layout;
  return r.image(cv::Rect(l.left_x, l.panel_y, l.panel_width, l.panel_height));
}
cv::Mat RightPanel(const Rendered& r) {
  const ComparisonLayout& l = r.layout;
  return r.image(cv::Rect(l.right_x, l.panel_y, l.panel_width, l.panel_height));
}

bool IsData(const cv::Vec3b& p) { return p[0] == p[1] && p[1] == p[2]; }  // pure grey
bool IsGreen(const cv::Vec3b& p) { return p[1] > 150 && p[0] < 100 && p[2] < 100; }
bool IsOrange(const cv::Vec3b& p) { return p[2] > 200 && p[1] > 90 && p[1] < 190 && p[0] < 80; }

int CountPixels(const cv::Mat& image, bool (*pred)(const cv::Vec3b&)) {
  int n = 0;
  for (int y = 0; y < image.rows; ++y) {
    for (int x = 0; x < image.cols; ++x) n += pred(image.at<cv::Vec3b>(y, x));
  }
  return n;
}

// Pearson correlation of the grey values where both panels show data; `shared` gets the
// share of panel pixels that entered.
double PanelCorrelation(const Rendered& r, double* shared) {
  const cv::Mat a = LeftPanel(r), b = RightPanel(r);
  double n = 0, sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  for (int y = 0; y < a.rows; ++y) {
    for (int x = 0; x < a.cols; ++x) {
      const cv::Vec3b pa = a.at<cv::Vec3b>(y, x), pb = b.at<cv::Vec3b>(y, x);
      if (!IsData(pa) || !IsData(pb)) continue;
      const double va = pa[0], vb = pb[0];
      n += 1;
      sa += va;
      sb += vb;
      saa += va * va;
      sbb += vb * vb;
      sab += va * vb;
    }
  }
  *shared = n / a.total();
  const double cov = sab - sa * sb / n;
  return cov / std::sqrt((saa - sa * sa / n) * (sbb - sb * sb / n));
}

class ComparePictureTest : public ::testing::Test {
 protected:
  Texture texture_{7};
  Surface reference_ = Reference(texture_);
  Surface target_ = Target(texture_, kTruth);
  TempDir dir_;
};

TEST_F(ComparePictureTest, WritesAReadablePictureWithOutlinedCells) {
  const Rendered r = Render(dir_, reference_, target_, Result(kTruth), "pair.png");
  ASSERT_FALSE(r.image.empty()) << "the PNG does not decode";
  EXPECT_EQ(r.image.cols, r.layout.width);
  EXPECT_EQ(r.image.rows, r.layout.height);
  EXPECT_GE(r.image.cols, 900);
  EXPECT_LE(r.image.cols, 1600);
  EXPECT_GE(r.layout.panel_width, 600);  // a small scan is enlarged to be seen
  EXPECT_EQ(r.layout.panel_width, r.layout.panel_height);
  EXPECT_GT(r.image.rows, r.layout.panel_y + r.layout.panel_height + 100);  // caption below
  EXPECT_LT(r.image.rows, 1300);

  EXPECT_GT(CountPixels(LeftPanel(r), IsGreen), 1000);
  EXPECT_GT(CountPixels(RightPanel(r), IsGreen), 1000);
  EXPECT_GT(CountPixels(LeftPanel(r), IsOrange), 200);
  EXPECT_GT(CountPixels(RightPanel(r), IsOrange), 200);
  // No outlines outside the panels except in the legend (below them).
  const cv::Mat above = r.image(cv::Rect(0, 0, r.image.cols, r.layout.panel_y));
  EXPECT_EQ(CountPixels(above, IsGreen), 0);

  // Nothing but the picture in the folder.
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_.path())) ++files;
  EXPECT_EQ(files, 1);
}

TEST_F(ComparePictureTest, TargetIsBroughtOntoTheReference) {
  double shared = 0;
  const double right =
      PanelCorrelation(Render(dir_, reference_, target_, Result(kTruth), "right.png"), &shared);
  EXPECT_GT(shared, 0.25);
  EXPECT_GT(right, 0.8);

  // The same pair drawn with a wrong registration does not line up.
  const double negated = PanelCorrelation(
      Render(dir_, reference_, target_, Result({-kTruth.angle_deg, kTruth.dx_um, kTruth.dy_um}),
             "negated-angle.png"),
      &shared);
  EXPECT_LT(negated, 0.4);
  const double shift = PanelCorrelation(
      Render(dir_, reference_, target_, Result({kTruth.angle_deg, -kTruth.dx_um, -kTruth.dy_um}),
             "negated-shift.png"),
      &shared);
  EXPECT_LT(shift, 0.4);
  EXPECT_LT(std::max(negated, shift), right - 0.4);
}

TEST_F(ComparePictureTest, CongruentCellsSitOnTheSameMarks) {
  // The right panel's green outlines are where the left panel's are: congruent cells match
  // near the consensus registration.
  const Rendered r = Render(dir_, reference_, target_, Result(kTruth), "pair.png");
  const cv::Mat left = LeftPanel(r), right = RightPanel(r);
  int both = 0, right_only = 0;
  for (int y = 0; y < right.rows; ++y) {
    for (int x = 0; x < right.cols; ++x) {
      if (!IsGreen(right.at<cv::Vec3b>(y, x))) continue;
      bool near = false;
      for (int dy = -6; dy <= 6 && !near; ++dy) {
        for (int dx = -6; dx <= 6 && !near; ++dx) {
          const int u = x + dx, v = y + dy;
          near = u >= 0 && v >= 0 && u < left.cols && v < left.rows &&
                 IsGreen(left.at<cv::Vec3b>(v, u));
        }
      }
      (near ? both : right_only) += 1;
    }
  }
  EXPECT_GT(both, 20 * right_only);
}

TEST_F(ComparePictureTest, DifferentPixelSizesAreRefused) {
  Surface coarse = target_;
  coarse.dx_m = coarse.dy_m = 2 * kPixelUm * 1e-6;
  const std::filesystem::path out = dir_ / "pair.png";
  const std::string error =
      ErrorOf([&] { cli::WriteComparisonPng(reference_, coarse, Result(kTruth), Info(), out); });
  EXPECT_TRUE(Contains(error, "pixel size"));
  EXPECT_TRUE(Contains(error, "Case 7 / E2"));
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(ComparePictureTest, UnwritablePathIsNamedAndLeavesNothing) {
  const std::filesystem::path missing = dir_ / "no such folder" / "pair.png";
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         cli::WriteComparisonPng(reference_, target_, Result(kTruth), Info(),
                                                 missing);
                       }),
                       missing.string()));
  EXPECT_FALSE(std::filesystem::exists(missing.parent_path()));

  // A folder in the way: the rename fails after the bytes were written; the temporary goes.
  const std::filesystem::path folder = dir_ / "taken.png";
  std::filesystem::create_directory(folder);
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         cli::WriteComparisonPng(reference_, target_, Result(kTruth), Info(),
                                                 folder);
                       }),
                       folder.string()));
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"taken.png"});
  EXPECT_TRUE(std::filesystem::is_empty(folder));
}

TEST_F(ComparePictureTest, ReplacesAnExistingFile) {
  const std::filesystem::path out = dir_ / "pair.png";
  WriteBytes(out, std::vector<std::byte>(10, std::byte{0}));
  cli::WriteComparisonPng(reference_, target_, Result(kTruth), Info(), out);
  EXPECT_FALSE(cv::imread(out.string()).empty());
}

TEST_F(ComparePictureTest, EmptySurfaceIsRefused) {
  EXPECT_TRUE(Contains(ErrorOf([&] {
                         cli::WriteComparisonPng(Surface{}, target_, Result(kTruth), Info(),
                                                 dir_ / "pair.png");
                       }),
                       "empty"));
}

}  // namespace
}  // namespace bien::testing

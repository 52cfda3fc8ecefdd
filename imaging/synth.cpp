#include "imaging/synth.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numbers>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <system_error>

#include "core/csv.h"
#include "core/error.h"
#include "core/mix.h"
#include "imaging/x3p.h"

namespace bien {

namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

constexpr uint64_t kSynthHashStart = 0x6a09e667f3bcc908ull;

// mt19937_64 is specified bit for bit by the standard; the distributions are
// not, so uniforms and normals (Box-Muller) are derived here.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - Uniform();  // (0, 1]
    const double u2 = Uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(kTwoPi * u2);
    has_spare_ = true;
    return r * std::cos(kTwoPi * u2);
  }
  cv::Mat NormalField(int rows, int cols) {
    cv::Mat m(rows, cols, CV_32F);
    for (int y = 0; y < rows; ++y) {
      float* row = m.ptr<float>(y);
      for (int x = 0; x < cols; ++x) row[x] = static_cast<float>(Normal());
    }
    return m;
  }

 private:
  std::mt19937_64 gen_;
  bool has_spare_ = false;
  double spare_ = 0;
};

// Zero mean, unit RMS (in place).
void Standardise(cv::Mat& m) {
  cv::Scalar mean, stddev;
  cv::meanStdDev(m, mean, stddev);
  const double s = stddev[0] > 0 ? stddev[0] : 1.0;
  m.convertTo(m, CV_32F, 1.0 / s, -mean[0] / s);
}

// Smooth random field: white noise on a coarse grid, interpolated up.
cv::Mat CoarseField(Rng& rng, int side, int cell_px) {
  const int coarse = std::max(4, side / cell_px + 4);
  cv::Mat small = rng.NormalField(coarse, coarse);
  cv::Mat big;
  cv::resize(small, big, cv::Size(side, side), 0, 0, cv::INTER_CUBIC);
  Standardise(big);
  return big;
}

int CanvasSide(const SynthOptions& o) {
  return o.size_px + 2 * static_cast<int>(std::ceil(o.max_shift_px)) + 8;
}

// The breech-face texture of one firearm, in metres, over the canvas.
cv::Mat FirearmTexture(const SynthOptions& o, int firearm) {
  Rng rng(HashOf(kSynthHashStart,
                 {o.seed, 0x46495245ull /* "FIRE" */, static_cast<uint64_t>(firearm)}));
  const int n = CanvasSide(o);

  // Parameters first, so that each draw has a fixed place in the stream.
  const double theta = rng.Uniform(0, std::numbers::pi);
  const double spacing_um = rng.Uniform(30, 80);
  const double period = std::max(3.0, spacing_um / o.pixel_um);
  const double phase[3] = {rng.Uniform(0, kTwoPi), rng.Uniform(0, kTwoPi), rng.Uniform(0, kTwoPi)};
  const double harmonic[3] = {1.0, rng.Uniform(0.2, 0.5), rng.Uniform(0.05, 0.25)};
  const double wave_amp = rng.Uniform(0.1, 0.4) * period;
  const double wave_len = rng.Uniform(0.5, 1.5) * n;
  const double wave_phase = rng.Uniform(0, kTwoPi);
  const int grooves = static_cast<int>(std::ceil(3.0 * n / period)) + 4;
  std::vector<double> groove_amp(static_cast<size_t>(grooves));
  for (double& a : groove_amp) a = rng.Uniform(0.3, 1.0);
  struct ToolMark {
    double px, py, dir, width, depth;
  };
  std::vector<ToolMark> tool_marks(static_cast<size_t>(3 + rng.Uniform() * 4));
  for (ToolMark& t : tool_marks) {
    t.px = rng.Uniform(0, n);
    t.py = rng.Uniform(0, n);
    t.dir = rng.Uniform(0, std::numbers::pi);
    t.width = rng.Uniform(2, 6);
    t.depth = rng.Normal() * 1.5;
  }

  // Isotropic relief: fine (sigma 2.5 px) plus a coarser undulation.
  cv::Mat fine = rng.NormalField(n, n);
  cv::GaussianBlur(fine, fine, cv::Size(0, 0), 2.5);
  Standardise(fine);
  cv::Mat coarse = CoarseField(rng, n, 24);

  // Parallel machining marks: grooves across direction theta, each with its
  // own depth, slightly wavy along their length.
  cv::Mat marks(n, n, CV_32F);
  const double c = std::cos(theta), s = std::sin(theta);
  for (int y = 0; y < n; ++y) {
    float* row = marks.ptr<float>(y);
    for (int x = 0; x < n; ++x) {
      const double u = x * c + y * s + n;  // across the marks, >= 0
      const double v = -x * s + y * c;     // along the marks
      const double t = (u + wave_amp * std::sin(kTwoPi * v / wave_len + wave_phase)) / period;
      const double k = std::clamp(std::floor(t), 0.0, static_cast<double>(grooves - 2));
      const double f = std::clamp(t - k, 0.0, 1.0);
      const size_t i = static_cast<size_t>(k);
      const double amp = groove_amp[i] * (1 - f) + groove_amp[i + 1] * f;
      const double profile = harmonic[0] * std::sin(kTwoPi * t + phase[0]) +
                             harmonic[1] * std::sin(2 * kTwoPi * t + phase[1]) +
                             harmonic[2] * std::sin(3 * kTwoPi * t + phase[2]);
      row[x] = static_cast<float>(amp * profile);
    }
  }
  Standardise(marks);

  cv::Mat texture = fine + 0.5 * coarse + 0.9 * marks;
  // A few larger tool marks: straight scratches with a Gaussian section.
  for (const ToolMark& t : tool_marks) {
    const double nx = -std::sin(t.dir), ny = std::cos(t.dir);
    const double reach = 4 * t.width;
    for (int y = 0; y < n; ++y) {
      float* row = texture.ptr<float>(y);
      for (int x = 0; x < n; ++x) {
        const double d = (x - t.px) * nx + (y - t.py) * ny;
        if (std::fabs(d) > reach) continue;
        row[x] += static_cast<float>(t.depth * std::exp(-d * d / (2 * t.width * t.width)));
      }
    }
  }
  Standardise(texture);
  texture *= o.relief_um * 1e-6;
  return texture;
}

}  // namespace

void SynthOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("synthetic scans: " + what); };
  if (firearms < 1 || firearms > 100000) bad("firearms must be between 1 and 100000");
  if (shots < 1 || shots > 999) bad("shots must be between 1 and 999");
  if (!(std::isfinite(pixel_um) && pixel_um > 0 && pixel_um <= 1000)) {
    bad("pixel size must be a positive number of micrometres (at most 1000)");
  }
  if (size_px < 32 || size_px > 8192) bad("size must be between 32 and 8192 pixels");
  if (!(std::isfinite(relief_um) && relief_um > 0 && relief_um < 1000)) {
    bad("relief must be positive (micrometres, under 1000)");
  }
  if (!(std::isfinite(noise_um) && noise_um >= 0 && noise_um < 1000)) {
    bad("noise must be zero or positive (micrometres, under 1000)");
  }
  if (!(std::isfinite(max_shift_px) && max_shift_px >= 0 && max_shift_px <= size_px)) {
    bad("maximum shift must be between 0 and the size in pixels");
  }
}

namespace {

// One shot imprinted from a firearm texture made by FirearmTexture.
Surface ShotFromTexture(const SynthOptions& options, const cv::Mat& texture, int firearm,
                        int shot) {
  const int n = texture.rows;
  const int side = options.size_px;

  Rng rng(HashOf(kSynthHashStart, {options.seed, 0x53484f54ull /* "SHOT" */,
                                   static_cast<uint64_t>(firearm), static_cast<uint64_t>(shot)}));
  const double angle = rng.Uniform(0, 360) * std::numbers::pi / 180;
  const double shift_x = rng.Uniform(-options.max_shift_px, options.max_shift_px);
  const double shift_y = rng.Uniform(-options.max_shift_px, options.max_shift_px);
  const double tilt_x = rng.Uniform(-2e-6, 2e-6);
  const double tilt_y = rng.Uniform(-2e-6, 2e-6);
  const double bow = rng.Uniform(-1e-6, 1e-6);
  const double pin_dx = rng.Uniform(-0.03, 0.03) * side;
  const double pin_dy = rng.Uniform(-0.03, 0.03) * side;
  const double pin_r = rng.Uniform(0.11, 0.13) * side;

  // Partial transfer: a smooth field between 0.5 (weak) and 1 (full).
  cv::Mat transfer = CoarseField(rng, n, 32);
  for (int y = 0; y < n; ++y) {
    float* row = transfer.ptr<float>(y);
    for (int x = 0; x < n; ++x) row[x] = static_cast<float>(0.75 + 0.25 * std::tanh(1.2 * row[x]));
  }
  const cv::Mat imprint = texture.mul(transfer);

  // Rotate about the centre and shift: dst p -> src c_s + R (p - c_d) + t.
  const double cs = (n - 1) / 2.0, cd = (side - 1) / 2.0;
  const double ca = std::cos(angle), sa = std::sin(angle);
  const cv::Matx23d map(ca, -sa, cs - (ca * cd - sa * cd) + shift_x,  //
                        sa, ca, cs - (sa * cd + ca * cd) + shift_y);
  cv::Mat shot_mat;
  cv::warpAffine(imprint, shot_mat, map, cv::Size(side, side),
                 cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_REFLECT_101);

  // The instrument's own noise, in the scan frame: white plus slightly smoothed.
  if (options.noise_um > 0) {
    cv::Mat white = rng.NormalField(side, side);
    cv::Mat smooth = rng.NormalField(side, side);
    cv::GaussianBlur(smooth, smooth, cv::Size(0, 0), 1.0);
    Standardise(smooth);
    cv::Mat noise = 0.6 * white + 0.8 * smooth;
    Standardise(noise);
    shot_mat += noise * (options.noise_um * 1e-6);
  }

  Surface surface;
  surface.width = surface.height = side;
  surface.dx_m = surface.dy_m = options.pixel_um * 1e-6;
  surface.values = SurfaceValues::kHeight;
  surface.z.resize(static_cast<size_t>(side) * side);
  const double half = side / 2.0;
  const double primer_r2 = (0.47 * side) * (0.47 * side);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int y = 0; y < side; ++y) {
    const float* row = shot_mat.ptr<float>(y);
    for (int x = 0; x < side; ++x) {
      const double rx = x - cd, ry = y - cd;
      const double px = rx - pin_dx, py = ry - pin_dy;
      float v = nan;
      if (rx * rx + ry * ry <= primer_r2 && px * px + py * py > pin_r * pin_r) {
        const double xn = rx / half, yn = ry / half;
        v = static_cast<float>(row[x] + tilt_x * xn + tilt_y * yn + bow * (xn * xn + yn * yn));
      }
      surface.z[static_cast<size_t>(y) * side + x] = v;
    }
  }
  char comment[160];
  std::snprintf(comment, sizeof comment, "synthetic breech face: firearm F%02d, shot %d, seed %llu",
                firearm + 1, shot + 1, static_cast<unsigned long long>(options.seed));
  surface.provenance.instrument = "bien synth";
  surface.provenance.creator = "bien synth";
  surface.provenance.comment = comment;
  return surface;
}

}  // namespace

Surface MakeSynthShot(const SynthOptions& options, int firearm, int shot) {
  options.Check();
  if (firearm < 0 || shot < 0) throw Error("synthetic scans: firearm and shot are 0-based indices");
  return ShotFromTexture(options, FirearmTexture(options, firearm), firearm, shot);
}

std::vector<SynthFile> WriteSynthSet(const std::filesystem::path& dir,
                                     const SynthOptions& options) {
  options.Check();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir.string() + ": cannot create the folder (" + ec.message() + ")");

  std::vector<SynthFile> files;
  std::string truth = "path,source\n";
  for (int f = 0; f < options.firearms; ++f) {
    char source[16];
    std::snprintf(source, sizeof source, "F%02d", f + 1);
    const cv::Mat texture = FirearmTexture(options, f);
    for (int s = 0; s < options.shots; ++s) {
      SynthFile file;
      file.file_name = "synth " + std::string(source) + "-" + std::to_string(s + 1) + ".x3p";
      file.source = source;
      file.firearm = f;
      file.shot = s;
      WriteX3p(ShotFromTexture(options, texture, f, s), dir / file.file_name);
      truth += CsvEscape(file.file_name) + "," + CsvEscape(file.source) + "\n";
      files.push_back(std::move(file));
    }
  }

  const std::filesystem::path truth_path = dir / "truth.csv";
  const std::filesystem::path tmp = truth_path.string() + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << truth;
    out.flush();
    if (!out) {
      std::filesystem::remove(tmp, ec);
      throw Error(truth_path.string() + ": cannot write");
    }
  }
  std::filesystem::rename(tmp, truth_path, ec);
  if (ec) {
    std::error_code ignore;
    std::filesystem::remove(tmp, ignore);
    throw Error(truth_path.string() + ": cannot write (" + ec.message() + ")");
  }
  return files;
}

}  // namespace bien

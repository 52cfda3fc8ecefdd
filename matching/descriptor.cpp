#include "matching/descriptor.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdio>
#include <limits>
#include <numbers>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "core/mix.h"

namespace bien {
namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

constexpr uint64_t kDescriptorHashStart = 0x243f6a8885a308d3ull;

// ---------------------------------------------------------------------------
// The descriptor.

// The surface at the working pixel size: standardised heights (0 where
// invalid) and the validity mask (1 / 0), CV_32F. Working pixel (u, v) shows
// input pixel ((u + 0.5) * sx - 0.5, (v + 0.5) * sy - 0.5).
struct Working {
  cv::Mat z;
  cv::Mat m;
  double px_x_um = 0;  // exact spacing of the working grid
  double px_y_um = 0;
  int valid = 0;
};

Working MakeWorking(const Surface& s, double in_px_um, double out_px_um) {
  cv::Mat z(s.height, s.width, CV_32F), m(s.height, s.width, CV_32F);
  for (int y = 0; y < s.height; ++y) {
    const float* src = &s.z[static_cast<size_t>(y) * s.width];
    float* zr = z.ptr<float>(y);
    float* mr = m.ptr<float>(y);
    for (int x = 0; x < s.width; ++x) {
      const bool ok = std::isfinite(src[x]);
      zr[x] = ok ? src[x] : 0.f;
      mr[x] = ok ? 1.f : 0.f;
    }
  }
  Working w;
  const double f = out_px_um / in_px_um;
  if (f > 1 + 1e-6) {
    const int cols = std::max(1, static_cast<int>(std::lround(s.width / f)));
    const int rows = std::max(1, static_cast<int>(std::lround(s.height / f)));
    cv::Mat zs, ms;
    cv::resize(z, zs, cv::Size(cols, rows), 0, 0, cv::INTER_AREA);
    cv::resize(m, ms, cv::Size(cols, rows), 0, 0, cv::INTER_AREA);
    for (int y = 0; y < rows; ++y) {
      float* zr = zs.ptr<float>(y);
      float* mr = ms.ptr<float>(y);
      for (int x = 0; x < cols; ++x) {
        // A working pixel is valid when most of its area was measured.
        if (mr[x] >= 0.5f) {
          zr[x] /= mr[x];
          mr[x] = 1.f;
        } else {
          zr[x] = 0.f;
          mr[x] = 0.f;
        }
      }
    }
    z = zs;
    m = ms;
    w.px_x_um = in_px_um * s.width / cols;
    w.px_y_um = in_px_um * s.height / rows;
  } else {
    w.px_x_um = w.px_y_um = in_px_um;
  }
  const double n = cv::sum(m)[0];
  w.valid = static_cast<int>(n);
  if (n >= 2) {
    const double mean = cv::sum(z)[0] / n;
    cv::Mat centred = (z - mean).mul(m);
    const double var = cv::sum(centred.mul(centred))[0] / n;
    z = var > 0 ? centred / std::sqrt(var) : centred;
  }
  w.z = z;
  w.m = m;
  return w;
}

struct Fit {
  double cx = 0, cy = 0, r = 0;
  bool found = false;
};

// Kasa's algebraic circle fit, re-weighted on the geometric residual (Tukey,
// scale at least half a pixel).
Fit FitCircle(const std::vector<cv::Point2d>& pts) {
  Fit c;
  if (pts.size() < 8) return c;
  double mx = 0, my = 0;
  for (const auto& p : pts) {
    mx += p.x;
    my += p.y;
  }
  mx /= static_cast<double>(pts.size());
  my /= static_cast<double>(pts.size());
  std::vector<double> w(pts.size(), 1.0), e(pts.size()), a(pts.size());
  double last_x = 0, last_y = 0;
  for (int iter = 0; iter < 10; ++iter) {
    cv::Matx33d ata = cv::Matx33d::zeros();
    cv::Vec3d atb(0, 0, 0);
    double used = 0;
    for (size_t i = 0; i < pts.size(); ++i) {
      if (w[i] <= 0) continue;
      const double x = pts[i].x - mx, y = pts[i].y - my;
      const cv::Vec3d row(x, y, 1);
      ata += w[i] * (row * row.t());
      atb += w[i] * -(x * x + y * y) * row;
      used += w[i];
    }
    if (used < 3) return {};
    cv::Vec3d sol;
    if (!cv::solve(ata, atb, sol, cv::DECOMP_SVD)) return {};
    c.cx = mx - sol[0] / 2;
    c.cy = my - sol[1] / 2;
    const double r2 = sol[0] * sol[0] / 4 + sol[1] * sol[1] / 4 - sol[2];
    if (!(r2 > 0)) return {};
    const bool settled =
        iter > 0 && std::abs(c.cx - last_x) < 1e-3 && std::abs(c.cy - last_y) < 1e-3;
    last_x = c.cx;
    last_y = c.cy;
    c.r = std::sqrt(r2);
    if (settled) break;
    for (size_t i = 0; i < pts.size(); ++i) {
      e[i] = std::hypot(pts[i].x - c.cx, pts[i].y - c.cy) - c.r;
      a[i] = std::abs(e[i]);
    }
    const auto mid = a.begin() + static_cast<std::ptrdiff_t>(a.size() / 2);
    std::nth_element(a.begin(), mid, a.end());
    const double scale = 4.685 * std::max(1.4826 * *mid, 0.5);
    for (size_t i = 0; i < pts.size(); ++i) {
      const double u = e[i] / scale;
      w[i] = std::abs(u) < 1 ? (1 - u * u) * (1 - u * u) : 0;
    }
  }
  c.found = true;
  return c;
}

// The centre of the rings, in working pixels: the firing-pin impression's
// circle (inner edge of the valid region), else the outer edge's circle, else
// the centroid.
cv::Point2d FindCentre(const Working& w) {
  const cv::Mat& m = w.m;
  double cx = 0, cy = 0, n = 0;
  for (int y = 0; y < m.rows; ++y) {
    const float* mr = m.ptr<float>(y);
    for (int x = 0; x < m.cols; ++x) {
      if (mr[x] > 0) {
        cx += x;
        cy += y;
        n += 1;
      }
    }
  }
  cx /= n;
  cy /= n;
  const double px = std::min(w.px_x_um, w.px_y_um);
  // The inner edge is where a run of 75 um of valid points starts (valid
  // specks inside the impression are skipped); samples every half pixel.
  const int run_needed = std::max(2, static_cast<int>(std::lround(2 * 75 / px)));
  const double max_r = std::hypot(m.cols, m.rows);
  constexpr int kRays = 360;
  // Along each ray from (x0, y0): the start of the first run of valid points
  // (inner edge) or the last valid point (outer edge); negative for none.
  auto walk = [&](double x0, double y0, double dx, double dy, bool inner_edge) {
    int run = 0;
    double last = -1;
    for (double r = 0; r <= max_r; r += 0.5) {
      const double fx = x0 + r * dx + 0.5, fy = y0 + r * dy + 0.5;
      if (fx < 0 || fy < 0 || fx >= m.cols || fy >= m.rows) break;
      if (m.at<float>(static_cast<int>(fy), static_cast<int>(fx)) > 0) {
        last = r;
        if (inner_edge && ++run >= run_needed) return r - 0.5 * (run - 1);
      } else {
        run = 0;
      }
    }
    return inner_edge ? -1.0 : last;
  };
  for (const bool inner_edge : {true, false}) {
    double x0 = cx, y0 = cy;
    Fit fit;
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<cv::Point2d> pts;
      for (int k = 0; k < kRays; ++k) {
        const double a = kTwoPi * k / kRays, dx = std::cos(a), dy = std::sin(a);
        const double r = walk(x0, y0, dx, dy, inner_edge);
        if (r >= 0) pts.emplace_back(x0 + r * dx, y0 + r * dy);
      }
      // An edge met by most rays; an inner edge not at the start (a start
      // inside the valid region means there is no hole around it).
      fit = pts.size() >= kRays / 2 ? FitCircle(pts) : Fit{};
      if (fit.found && inner_edge && fit.r * px < 100) fit = {};
      if (!fit.found) break;
      x0 = fit.cx;
      y0 = fit.cy;
    }
    if (fit.found) return {fit.cx, fit.cy};
  }
  return {cx, cy};
}

// The centre offsets a descriptor is averaged over (working pixels): the
// points of a square grid of `step` within `radius` of the found centre, the
// centre first. {(0, 0)} alone when radius is 0.
std::vector<cv::Point2d> GridOffsets(double radius_um, double step_um, double px_um) {
  std::vector<cv::Point2d> offsets{{0, 0}};
  if (radius_um <= 0) return offsets;
  const double step = step_um / px_um, radius = radius_um / px_um;
  const int n = static_cast<int>(std::floor(radius / step + 1e-9));
  for (int j = -n; j <= n; ++j) {
    for (int i = -n; i <= n; ++i) {
      if ((i != 0 || j != 0) && std::hypot(i * step, j * step) <= radius + 1e-9) {
        offsets.emplace_back(i * step, j * step);
      }
    }
  }
  return offsets;
}
std::vector<cv::Point2d> BlurOffsets(const DescriptorOptions& o, double px_um) {
  return GridOffsets(o.centre_blur_um, o.centre_blur_step_um, px_um);
}

// The work shared by every centre offset of one surface.
struct Rings {
  cv::Mat zm_m;  // 2 channels: heights times mask, mask
  std::vector<double> cosine, sine;
  int rings = 0;
  // The sketch's slot of (lag, harmonic, ring, real/imaginary part): bit 0 the
  // sign (1: +), the rest the index. A fixed hash of the four.
  std::vector<uint32_t> slots;
  uint32_t Slot(int d, int k, int ring, int part, const DescriptorOptions& o) const {
    const size_t nk = static_cast<size_t>(o.max_harmonic - o.min_harmonic + 1);
    return slots[((static_cast<size_t>(d - 1) * nk + static_cast<size_t>(k - o.min_harmonic)) *
                      static_cast<size_t>(rings) +
                  static_cast<size_t>(ring)) *
                     2 +
                 static_cast<size_t>(part)];
  }
};

Rings MakeRings(const Working& w, const DescriptorOptions& o) {
  Rings g;
  g.rings = static_cast<int>(
                std::floor((o.outer_radius_um - o.inner_radius_um) / o.ring_step_um + 1e-9)) +
            1;
  g.cosine.resize(static_cast<size_t>(o.angles));
  g.sine.resize(static_cast<size_t>(o.angles));
  for (int j = 0; j < o.angles; ++j) {
    g.cosine[static_cast<size_t>(j)] = std::cos(kTwoPi * j / o.angles);
    g.sine[static_cast<size_t>(j)] = std::sin(kTwoPi * j / o.angles);
  }
  const cv::Mat channels[2] = {w.z.mul(w.m), w.m};
  cv::merge(channels, 2, g.zm_m);
  for (int d = 1; d <= o.ring_lags; ++d) {
    for (int k = o.min_harmonic; k <= o.max_harmonic; ++k) {
      const uint64_t base = HashOf(kDescriptorHashStart, {o.sketch_seed, static_cast<uint64_t>(d),
                                                          static_cast<uint64_t>(k)});
      for (int i = 0; i < g.rings; ++i) {
        for (int part = 0; part < 2; ++part) {
          const uint64_t h = SplitMix(base ^ (static_cast<uint64_t>(i) * 2 + part));
          g.slots.push_back(
              static_cast<uint32_t>(((h & 0xffffffffu) % static_cast<uint64_t>(o.dim)) << 1) |
              static_cast<uint32_t>(h >> 63));
        }
      }
    }
  }
  return g;
}

// The rings (radius r0 + i * step, `cosine.size()` angles) of a 2-channel
// surface (heights times mask, mask) around centre `c`, bilinear: each row
// one ring's heights, 0 where the sample's neighbourhood is not all valid,
// less the ring's mean over its valid samples (so that gaps do not leak the
// ring's offset into every harmonic); `count` gets each ring's valid samples.
cv::Mat SampleRings(const cv::Mat& zm_m, const Working& w, cv::Point2d c, double r0, double step,
                    int rings, const std::vector<double>& cosine, const std::vector<double>& sine,
                    std::vector<int>& count) {
  const int na = static_cast<int>(cosine.size());
  cv::Mat map_x(rings, na, CV_32F), map_y(rings, na, CV_32F);
  for (int i = 0; i < rings; ++i) {
    const double r = r0 + i * step;
    const double rx = r / w.px_x_um, ry = r / w.px_y_um;
    float* mx = map_x.ptr<float>(i);
    float* my = map_y.ptr<float>(i);
    for (int j = 0; j < na; ++j) {
      mx[j] = static_cast<float>(c.x + rx * cosine[static_cast<size_t>(j)]);
      my[j] = static_cast<float>(c.y + ry * sine[static_cast<size_t>(j)]);
    }
  }
  cv::Mat sampled, pz, pm;
  cv::remap(zm_m, sampled, map_x, map_y, cv::INTER_LINEAR, cv::BORDER_CONSTANT, 0);
  cv::extractChannel(sampled, pz, 0);
  cv::extractChannel(sampled, pm, 1);
  count.assign(static_cast<size_t>(rings), 0);
  for (int i = 0; i < rings; ++i) {
    float* zr = pz.ptr<float>(i);
    const float* mr = pm.ptr<float>(i);
    int n = 0;
    double sum = 0;
    for (int j = 0; j < na; ++j) {
      if (mr[j] >= 0.99f) {
        zr[j] /= mr[j];
        sum += zr[j];
        ++n;
      }
    }
    const float mean = n > 0 ? static_cast<float>(sum / n) : 0.f;
    for (int j = 0; j < na; ++j) zr[j] = mr[j] >= 0.99f ? zr[j] - mean : 0.f;
    count[static_cast<size_t>(i)] = n;
  }
  return pz;
}

// The unnormalised sketch of the cross-ring products around centre `c` (step
// 3-5 of the method) into `out` (zeroed first); the number of valid polar
// samples on the rings used.
int Sketch(const Working& w, const Rings& g, const DescriptorOptions& o, cv::Point2d c,
           std::vector<double>& out) {
  const int rings = g.rings, na = o.angles;
  std::vector<int> count;
  const cv::Mat pz =
      SampleRings(g.zm_m, w, c, o.inner_radius_um, o.ring_step_um, rings, g.cosine, g.sine, count);
  std::vector<char> used(static_cast<size_t>(rings), 0);
  int total = 0;
  for (int i = 0; i < rings; ++i) {
    if (count[static_cast<size_t>(i)] >= o.min_ring_share * na) {
      used[static_cast<size_t>(i)] = 1;
      total += count[static_cast<size_t>(i)];
    }
  }
  out.assign(static_cast<size_t>(o.dim), 0.0);
  if (total < o.min_valid_samples) return total;
  cv::Mat spec;
  cv::dft(pz, spec, cv::DFT_ROWS | cv::DFT_COMPLEX_OUTPUT);
  const int k0 = o.min_harmonic, k1 = o.max_harmonic, nk = k1 - k0 + 1;
  using Cx = std::complex<double>;
  auto at = [&](int ring, int k) {
    const cv::Vec2f v = spec.at<cv::Vec2f>(ring, k);
    return Cx(v[0], v[1]);
  };
  // Each ring's band energy: the products are normalised per ring pair, so
  // that a weakly marked ring counts as much as a strongly marked one.
  std::vector<double> ring_rms(static_cast<size_t>(rings), 0.0);
  for (int i = 0; i < rings; ++i) {
    if (!used[static_cast<size_t>(i)]) continue;
    double e = 0;
    for (int k = k0; k <= k1; ++k) e += std::norm(at(i, k));
    ring_rms[static_cast<size_t>(i)] = std::sqrt(e / nk);
    if (!(ring_rms[static_cast<size_t>(i)] > 0)) used[static_cast<size_t>(i)] = 0;
  }
  std::vector<Cx> z(static_cast<size_t>(rings));
  for (int d = 1; d <= o.ring_lags; ++d) {
    for (int k = k0; k <= k1; ++k) {
      // The products of this (lag, harmonic), centred over the rings: what
      // every breech face has in common at this scale is removed.
      Cx mean = 0;
      int count = 0;
      for (int i = 0; i + d < rings; ++i) {
        if (!used[static_cast<size_t>(i)] || !used[static_cast<size_t>(i + d)]) continue;
        z[static_cast<size_t>(i)] =
            at(i, k) * std::conj(at(i + d, k)) /
            (ring_rms[static_cast<size_t>(i)] * ring_rms[static_cast<size_t>(i + d)]);
        mean += z[static_cast<size_t>(i)];
        ++count;
      }
      if (count == 0) continue;
      mean /= count;
      for (int i = 0; i + d < rings; ++i) {
        if (!used[static_cast<size_t>(i)] || !used[static_cast<size_t>(i + d)]) continue;
        const Cx v = z[static_cast<size_t>(i)] - mean;
        for (int part = 0; part < 2; ++part) {
          const uint32_t slot = g.Slot(d, k, i, part, o);
          const double value = part == 0 ? v.real() : v.imag();
          out[slot >> 1] += (slot & 1) ? value : -value;
        }
      }
    }
  }
  return total;
}

double NormOf(const std::vector<double>& v) {
  double n = 0;
  for (double x : v) n += x * x;
  return std::sqrt(n);
}

// The descriptor: the unit sketch around the found centre, or (centre blur)
// the normalised sum of the unit sketches around every offset of it.
std::vector<float> Describe(const Working& w, const DescriptorOptions& o,
                            const std::string& source) {
  const cv::Point2d c = FindCentre(w);
  const Rings g = MakeRings(w, o);
  const std::vector<cv::Point2d> offsets = BlurOffsets(o, std::min(w.px_x_um, w.px_y_um));
  std::vector<double> out, sum;
  for (const cv::Point2d& off : offsets) {
    const int total = Sketch(w, g, o, c + off, out);
    const double norm = NormOf(out);
    const bool centre = &off == &offsets.front();
    if (centre && total < o.min_valid_samples) {
      throw Error(source + ": too little valid data for a breech-face descriptor (" +
                  std::to_string(total) + " valid samples on rings " + Num(o.inner_radius_um) +
                  "-" + Num(o.outer_radius_um) + " um from the firing-pin centre, at least " +
                  std::to_string(o.min_valid_samples) + " needed)");
    }
    if (centre && (!(norm > 0) || !std::isfinite(norm))) {
      throw Error(source + ": too little valid data for a breech-face descriptor (no ring pairs)");
    }
    if (offsets.size() == 1) {
      std::vector<float> result(out.size());
      for (size_t i = 0; i < out.size(); ++i) result[i] = static_cast<float>(out[i] / norm);
      return result;
    }
    // An offset ring set with too little data adds nothing.
    if (total < o.min_valid_samples || !(norm > 0) || !std::isfinite(norm)) continue;
    if (sum.empty()) sum.assign(out.size(), 0.0);
    for (size_t i = 0; i < out.size(); ++i) sum[i] += out[i] / norm;
  }
  const double norm = NormOf(sum);
  std::vector<float> result(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) result[i] = static_cast<float>(sum[i] / norm);
  return result;
}

// ---------------------------------------------------------------------------
// Synthetic shots.

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return state_ = SplitMix(state_); }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  double Normal() {
    const double u1 = 1.0 - Uniform(), u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
  }
  // Approximately normal values, zero mean and unit variance: the sum of four
  // 16-bit uniforms (Irwin-Hall). The fields are smoothed afterwards, which
  // makes them Gaussian; one 64-bit draw per value keeps this fast.
  cv::Mat NormalField(int rows, int cols) {
    cv::Mat m(rows, cols, CV_32F);
    constexpr double kMean = 2 * 65535.0;
    const double scale = 1.0 / (65536.0 * std::sqrt(4.0 / 12.0));
    for (int y = 0; y < rows; ++y) {
      float* row = m.ptr<float>(y);
      for (int x = 0; x < cols; ++x) {
        const uint64_t r = Next();
        const double sum = static_cast<double>((r & 0xffff) + ((r >> 16) & 0xffff) +
                                               ((r >> 32) & 0xffff) + (r >> 48));
        row[x] = static_cast<float>((sum - kMean) * scale);
      }
    }
    return m;
  }

 private:
  uint64_t state_;
};

void Standardise(cv::Mat& m) {
  cv::Scalar mean, sd;
  cv::meanStdDev(m, mean, sd);
  const double s = sd[0] > 0 ? sd[0] : 1.0;
  m.convertTo(m, CV_32F, 1.0 / s, -mean[0] / s);
}

// Band-limited relief at the working pixel size (about 50-250 um).
cv::Mat Relief(Rng& rng, int side, double px_um) {
  cv::Mat white = rng.NormalField(side, side), fine, coarse;
  const double long_sigma = 250 * std::sqrt(std::log(2.0) / 2) / std::numbers::pi / px_um;
  cv::GaussianBlur(white, fine, cv::Size(0, 0), 0.6);
  cv::GaussianBlur(white, coarse, cv::Size(0, 0), long_sigma);
  cv::Mat relief = fine - coarse;
  Standardise(relief);
  return relief;
}

// Smooth random field with correlation length `cell_px`: normal values on a
// coarse grid, mapped by `f`, interpolated up.
template <class F>
cv::Mat Smooth(Rng& rng, int side, double cell_px, F f) {
  const int coarse = std::max(4, static_cast<int>(side / cell_px) + 3);
  cv::Mat small = rng.NormalField(coarse, coarse), big;
  for (int y = 0; y < coarse; ++y) {
    float* row = small.ptr<float>(y);
    for (int x = 0; x < coarse; ++x) row[x] = f(row[x]);
  }
  cv::resize(small, big, cv::Size(side, side), 0, 0, cv::INTER_CUBIC);
  return big;
}
cv::Mat Smooth(Rng& rng, int side, double cell_px) {
  return Smooth(rng, side, cell_px, [](float v) { return v; });
}

// A firearm's texture (or the set-wide component: firearm = -1).
cv::Mat Texture(const SynthDescriptorOptions& s, double px_um, int side, int64_t firearm) {
  Rng rng(HashOf(kDescriptorHashStart,
                 {s.seed, 0x54455854ull /* "TEXT" */, static_cast<uint64_t>(firearm)}));
  const double theta = rng.Uniform(0, std::numbers::pi);
  const double period = rng.Uniform(75, 250) / px_um;
  const double phase = rng.Uniform(0, kTwoPi);
  const double mark_share = rng.Uniform(0.2, 0.6);
  cv::Mat relief = Relief(rng, side, px_um);
  cv::Mat depth = Smooth(rng, side, 400 / px_um);
  cv::Mat marks(side, side, CV_32F, cv::Scalar(0));
  // Each wave: sin(2 pi (x cos th + y sin th) / p + ph), along each row by a
  // rotation recurrence. One wave is the firearm's spacing, direction and
  // phase exactly (the first model, sbf-v1); several waves scatter
  // around them, with phases of their own.
  const bool single = s.mark_waves == 1;
  for (int w = 0; w < s.mark_waves; ++w) {
    const double p = single ? period : period * std::exp(s.mark_period_spread * rng.Normal());
    const double th = single ? theta : theta + s.mark_direction_spread_rad * rng.Normal();
    const double ph = single ? phase : rng.Uniform(0, kTwoPi);
    const double step = kTwoPi * std::cos(th) / p;
    const std::complex<double> turn(std::cos(step), std::sin(step));
    for (int y = 0; y < side; ++y) {
      float* row = marks.ptr<float>(y);
      const float* dr = depth.ptr<float>(y);
      const double start = kTwoPi * y * std::sin(th) / p + ph;
      std::complex<double> v(std::cos(start), std::sin(start));
      for (int x = 0; x < side; ++x) {
        row[x] += static_cast<float>((1 + 0.5 * dr[x]) * v.imag());
        v *= turn;
      }
    }
  }
  Standardise(marks);
  cv::Mat texture = std::sqrt(1 - mark_share) * relief + std::sqrt(mark_share) * marks;
  Standardise(texture);
  return texture;
}

struct SynthGeometry {
  int side = 0;          // shot grid
  int texture_side = 0;  // firearm texture grid (covers any rotation)
  double px_um = 0;
};

SynthGeometry GeometryOf(const SynthDescriptorOptions& s, const DescriptorOptions& o) {
  SynthGeometry g;
  g.px_um = o.working_pixel_um;
  const double reach = s.primer_radius_um + s.primer_offset_um;
  g.side = 2 * static_cast<int>(std::ceil(reach / g.px_um)) + 9;
  g.texture_side = static_cast<int>(std::ceil(g.side * 1.5)) + 8;
  return g;
}

Surface Shot(const SynthDescriptorOptions& s, const SynthGeometry& g, const cv::Mat& texture,
             double pin_radius_um, int firearm, int shot) {
  Rng rng(
      HashOf(kDescriptorHashStart, {s.seed, 0x53484f54ull /* "SHOT" */,
                                    static_cast<uint64_t>(firearm), static_cast<uint64_t>(shot)}));
  const double px = g.px_um;
  const double angle = rng.Uniform(0, kTwoPi);
  const double err_x = rng.Normal() * s.centre_error_um / px;
  const double err_y = rng.Normal() * s.centre_error_um / px;
  const double half = (g.side - 1) / 2.0;
  const double pin_x = half + rng.Uniform(-3, 3), pin_y = half + rng.Uniform(-3, 3);
  const double off_r = std::sqrt(rng.Uniform()) * s.primer_offset_um / px;
  const double off_a = rng.Uniform(0, kTwoPi);
  const double primer_x = pin_x + off_r * std::cos(off_a);
  const double primer_y = pin_y + off_r * std::sin(off_a);

  // Texture rotated about the firing-pin centre: shot p -> texture t_c + R (p - pin) + err.
  const double tc = (g.texture_side - 1) / 2.0;
  const double ca = std::cos(angle), sa = std::sin(angle);
  const cv::Matx23d map(ca, -sa, tc - (ca * pin_x - sa * pin_y) + err_x,  //
                        sa, ca, tc - (sa * pin_x + ca * pin_y) + err_y);
  cv::Mat imprint;
  cv::warpAffine(texture, imprint, map, cv::Size(g.side, g.side),
                 cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_REFLECT_101);
  // Partial transfer: a smooth field between 1 - loss and 1 (made on the
  // coarse grid, then interpolated).
  const double loss = s.transfer_loss;
  cv::Mat transfer = Smooth(rng, g.side, 300 / px, [loss](float v) {
    return static_cast<float>(1 - loss / 2 + loss / 2 * std::tanh(1.2 * v));
  });
  cv::Mat surface = imprint.mul(transfer);
  const double noise = s.noise * std::exp(s.noise_spread * rng.Normal());
  if (noise > 0) surface += noise * Relief(rng, g.side, px);
  cv::Mat missing = Smooth(rng, g.side, 150 / px);
  // The standard normal quantile of 1 - missing_share (a smooth field's
  // values are close to normal).
  const double share = std::clamp(s.missing_share, 0.0, 0.99);
  double threshold = std::numeric_limits<double>::infinity();
  if (share > 0) {
    double lo = -8, hi = 8;
    for (int i = 0; i < 60; ++i) {
      const double mid = (lo + hi) / 2;
      (0.5 * std::erfc(mid / std::numbers::sqrt2) > share ? lo : hi) = mid;
    }
    threshold = lo;
  }

  Surface out;
  out.width = out.height = g.side;
  out.dx_m = out.dy_m = px * 1e-6;
  out.values = SurfaceValues::kHeight;
  out.z.assign(static_cast<size_t>(g.side) * g.side, std::numeric_limits<float>::quiet_NaN());
  const double pin_r = pin_radius_um / px, primer_r = s.primer_radius_um / px;
  for (int y = 0; y < g.side; ++y) {
    const float* row = surface.ptr<float>(y);
    const float* mr = missing.ptr<float>(y);
    for (int x = 0; x < g.side; ++x) {
      const double dp2 = (x - pin_x) * (x - pin_x) + (y - pin_y) * (y - pin_y);
      const double dq2 = (x - primer_x) * (x - primer_x) + (y - primer_y) * (y - primer_y);
      if (dp2 > pin_r * pin_r && dq2 < primer_r * primer_r && mr[x] < threshold) {
        out.z[static_cast<size_t>(y) * g.side + x] = static_cast<float>(row[x] * 1e-6);
      }
    }
  }
  char comment[128];
  std::snprintf(comment, sizeof comment,
                "synthetic coarse breech face: firearm %d, shot %d, seed %llu", firearm + 1,
                shot + 1, static_cast<unsigned long long>(s.seed));
  out.provenance.instrument = "bien synth descriptor";
  out.provenance.creator = "bien synth descriptor";
  out.provenance.comment = comment;
  return out;
}

double PinRadius(const SynthDescriptorOptions& s, int firearm) {
  Rng rng(HashOf(kDescriptorHashStart,
                 {s.seed, 0x50494e52ull /* "PINR" */, static_cast<uint64_t>(firearm)}));
  return s.firing_pin_radius_um * rng.Uniform(0.85, 1.15);
}

cv::Mat FirearmTexture(const SynthDescriptorOptions& s, const SynthGeometry& g,
                       const cv::Mat& shared, int firearm) {
  cv::Mat own = Texture(s, g.px_um, g.texture_side, firearm);
  cv::Mat t = std::sqrt(1 - s.class_share) * own + std::sqrt(s.class_share) * shared;
  return t;
}

// The checked input at the working pixel size (steps 1 of both the
// descriptor and the ring spectra).
Working WorkingOf(const Surface& s, const std::string& source, double working_pixel_um) {
  if (s.width <= 0 || s.height <= 0) throw Error(source + ": empty surface; no descriptor");
  if (s.z.size() != static_cast<size_t>(s.width) * s.height) {
    throw Error(source + ": surface has " + std::to_string(s.z.size()) + " values for " +
                std::to_string(s.width) + " x " + std::to_string(s.height) + " points");
  }
  const double px_x = s.dx_m * 1e6, px_y = s.dy_m * 1e6;
  if (!(std::isfinite(px_x) && std::isfinite(px_y) && px_x > 0 && px_y > 0)) {
    throw Error(source + ": surface has no valid pixel size; no descriptor");
  }
  if (std::abs(px_x - px_y) > 0.01 * std::max(px_x, px_y)) {
    throw Error(source + ": pixels are not square (" + Num(px_x) + " x " + Num(px_y) +
                " um); use the output of breech-face preprocessing");
  }
  if (px_x > working_pixel_um * 1.001) {
    throw Error(source + ": pixel size " + Num(px_x) + " um is coarser than the descriptor's " +
                Num(working_pixel_um) +
                " um working pixel; use the output of breech-face preprocessing");
  }
  if (s.ValidCount() == 0) throw Error(source + ": surface is all NaN; no descriptor");
  Working w = MakeWorking(s, px_x, working_pixel_um);
  if (w.valid < 16) {
    throw Error(source + ": too little valid data for a breech-face descriptor (" +
                std::to_string(w.valid) + " valid points at " + Num(working_pixel_um) + " um)");
  }
  return w;
}

int RingCount(const RingSpectraOptions& o) {
  return static_cast<int>(
             std::floor((o.outer_radius_um - o.inner_radius_um) / o.ring_step_um + 1e-9)) +
         1;
}

// The working heights smoothed by a normalised Gaussian (the ring spectra's
// input).
cv::Mat SmoothedHeights(const Working& w, const RingSpectraOptions& o) {
  // Heights smoothed by a normalised Gaussian: the mask-weighted blur over
  // the blurred mask, where enough of the neighbourhood is valid.
  cv::Mat zm = w.z.mul(w.m);
  const double sigma = o.smooth_um / std::min(w.px_x_um, w.px_y_um);
  if (sigma > 0) {
    cv::Mat bz, bm;
    cv::GaussianBlur(zm, bz, cv::Size(0, 0), sigma);
    cv::GaussianBlur(w.m, bm, cv::Size(0, 0), sigma);
    for (int y = 0; y < zm.rows; ++y) {
      float* zr = zm.ptr<float>(y);
      const float* mr = w.m.ptr<float>(y);
      const float* bzr = bz.ptr<float>(y);
      const float* bmr = bm.ptr<float>(y);
      for (int x = 0; x < zm.cols; ++x) {
        zr[x] = mr[x] > 0 && bmr[x] > 0.3f ? bzr[x] / bmr[x] : 0.f;
      }
    }
  }
  return zm;
}

// The ring spectra of `zm_m` (smoothed heights times mask, mask) around centre `c`;
// empty when fewer than min_valid_samples samples lie on the kept rings or
// the rings are flat, with the reason in `why`.
std::vector<float> RingSpectraAt(const Working& w, const cv::Mat& zm_m,
                                 const std::vector<double>& cosine, const std::vector<double>& sine,
                                 cv::Point2d c, const RingSpectraOptions& o, std::string& why) {
  const int rings = RingCount(o), na = o.angles;
  std::vector<int> count;
  cv::Mat pz =
      SampleRings(zm_m, w, c, o.inner_radius_um, o.ring_step_um, rings, cosine, sine, count);
  int total = 0;
  for (int i = 0; i < rings; ++i) {
    if (count[static_cast<size_t>(i)] >= o.min_ring_share * na) {
      total += count[static_cast<size_t>(i)];
    } else {
      pz.row(i).setTo(0);  // too little of this ring to count
    }
  }
  if (total < o.min_valid_samples) {
    why = std::to_string(total) + " valid samples on rings " + Num(o.inner_radius_um) + "-" +
          Num(o.outer_radius_um) + " um from the firing-pin centre, at least " +
          std::to_string(o.min_valid_samples) + " needed";
    return {};
  }
  cv::Mat spec;
  cv::dft(pz, spec, cv::DFT_ROWS | cv::DFT_COMPLEX_OUTPUT);
  const int nk = o.max_harmonic - o.min_harmonic + 1;
  std::vector<float> out(static_cast<size_t>(2 * rings * nk));
  double energy = 0;
  for (int i = 0; i < rings; ++i) {
    const cv::Vec2f* row = spec.ptr<cv::Vec2f>(i);
    for (int k = 0; k < nk; ++k) {
      const cv::Vec2f v = row[o.min_harmonic + k];
      const size_t at = 2 * (static_cast<size_t>(i) * nk + k);
      out[at] = v[0];
      out[at + 1] = v[1];
      energy += static_cast<double>(v[0]) * v[0] + static_cast<double>(v[1]) * v[1];
    }
  }
  if (!(energy > 0) || !std::isfinite(energy)) {
    why = "flat rings";
    return {};
  }
  const double inv = 1 / std::sqrt(energy);
  for (float& v : out) v = static_cast<float>(v * inv);
  return out;
}

// The ring spectra around the found centre and (query) every offset of the
// centre search; offsets without enough data are left out, the found centre
// must have it.
RingQuery RingSpectraOf(const Working& w, const RingSpectraOptions& o, const std::string& source,
                        bool search) {
  const cv::Point2d c = FindCentre(w);
  // Shared by every centre: the smoothed heights with their mask, and the
  // angle tables.
  const cv::Mat channels[2] = {SmoothedHeights(w, o), w.m};
  cv::Mat zm_m;
  cv::merge(channels, 2, zm_m);
  std::vector<double> cosine(static_cast<size_t>(o.angles)), sine(static_cast<size_t>(o.angles));
  for (int j = 0; j < o.angles; ++j) {
    cosine[static_cast<size_t>(j)] = std::cos(kTwoPi * j / o.angles);
    sine[static_cast<size_t>(j)] = std::sin(kTwoPi * j / o.angles);
  }
  const double px = std::min(w.px_x_um, w.px_y_um);
  const std::vector<cv::Point2d> offsets =
      search ? GridOffsets(o.centre_search_um, o.centre_search_step_um, px)
             : std::vector<cv::Point2d>{{0, 0}};
  RingQuery q;
  for (const cv::Point2d& off : offsets) {
    std::string why;
    std::vector<float> v = RingSpectraAt(w, zm_m, cosine, sine, c + off, o, why);
    if (v.empty()) {
      if (&off == &offsets.front()) {
        throw Error(source + ": too little valid data for ring spectra (" + why + ")");
      }
      continue;
    }
    q.spectra.push_back(std::move(v));
    q.offsets_um.emplace_back(off.x * w.px_x_um, off.y * w.px_y_um);
  }
  return q;
}

}  // namespace

void DescriptorOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("descriptor options: " + what); };
  auto finite_pos = [](double v) { return std::isfinite(v) && v > 0; };
  if (!finite_pos(working_pixel_um) || working_pixel_um > 1000) {
    bad("working pixel size must be in (0, 1000] um");
  }
  if (!finite_pos(ring_step_um)) bad("ring step must be a positive number of micrometres");
  if (!(std::isfinite(inner_radius_um) && inner_radius_um >= 0)) {
    bad("inner radius must be zero or positive");
  }
  if (!(std::isfinite(outer_radius_um) && outer_radius_um > inner_radius_um)) {
    bad("outer radius must be larger than the inner radius");
  }
  if ((outer_radius_um - inner_radius_um) / ring_step_um > 4096) bad("more than 4096 rings");
  if (angles < 16 || angles > 65536) bad("angles must be between 16 and 65536");
  if (min_harmonic < 1 || max_harmonic < min_harmonic || max_harmonic >= angles / 2) {
    bad("harmonics must satisfy 1 <= min_harmonic <= max_harmonic < angles / 2");
  }
  if (ring_lags < 1 || ring_lags > 64) bad("ring lags must be between 1 and 64");
  if (!(std::isfinite(min_ring_share) && min_ring_share > 0 && min_ring_share <= 1)) {
    bad("minimum ring share must be in (0, 1]");
  }
  if (min_valid_samples < 1) bad("minimum valid samples must be at least 1");
  if (dim < 16 || dim > 4096) bad("dimension must be between 16 and 4096");
  if (!(std::isfinite(centre_blur_um) && centre_blur_um >= 0 && centre_blur_um <= 500)) {
    bad("centre blur radius must be in [0, 500] um");
  }
  if (centre_blur_um > 0 &&
      !(std::isfinite(centre_blur_step_um) && centre_blur_step_um >= centre_blur_um / 8 &&
        centre_blur_step_um <= centre_blur_um)) {
    bad("centre blur step must be between 1/8 of the blur radius and the radius");
  }
}

std::string DescriptorKey(const DescriptorOptions& o) {
  o.Check();
  // Without centre blur the vectors are bfd-v1's, and so is the key.
  const bool blur = o.centre_blur_um > 0;
  return std::string(blur ? "bfd-v2" : "bfd-v1") + " px=" + Num(o.working_pixel_um) +
         " r=" + Num(o.inner_radius_um) + ".." + Num(o.outer_radius_um) + "/" +
         Num(o.ring_step_um) + " ang=" + std::to_string(o.angles) +
         " k=" + std::to_string(o.min_harmonic) + ".." + std::to_string(o.max_harmonic) +
         " lag=" + std::to_string(o.ring_lags) + " share=" + Num(o.min_ring_share) +
         " min=" + std::to_string(o.min_valid_samples) + " dim=" + std::to_string(o.dim) +
         " seed=" + std::to_string(o.sketch_seed) +
         (blur ? " blur=" + Num(o.centre_blur_um) + "/" + Num(o.centre_blur_step_um) : "");
}

int DescriptorDim(const DescriptorOptions& options) {
  options.Check();
  return options.dim;
}

std::vector<float> BreechFaceDescriptor(const Surface& s, const std::string& source,
                                        const DescriptorOptions& options) {
  options.Check();
  return Describe(WorkingOf(s, source, options.working_pixel_um), options, source);
}

double DescriptorCosine(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    throw Error("descriptors differ in length (" + std::to_string(a.size()) + " and " +
                std::to_string(b.size()) + ")");
  }
  double c = 0;
  for (size_t i = 0; i < a.size(); ++i) c += static_cast<double>(a[i]) * b[i];
  return c;
}

void RingSpectraOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("ring spectra options: " + what); };
  auto finite_pos = [](double v) { return std::isfinite(v) && v > 0; };
  if (!finite_pos(working_pixel_um) || working_pixel_um > 1000) {
    bad("working pixel size must be in (0, 1000] um");
  }
  if (!(std::isfinite(smooth_um) && smooth_um >= 0 && smooth_um <= 1000)) {
    bad("smoothing must be in [0, 1000] um");
  }
  if (!finite_pos(ring_step_um)) bad("ring step must be a positive number of micrometres");
  if (!(std::isfinite(inner_radius_um) && inner_radius_um >= 0)) {
    bad("inner radius must be zero or positive");
  }
  if (!(std::isfinite(outer_radius_um) && outer_radius_um >= inner_radius_um)) {
    bad("outer radius must not be smaller than the inner radius");
  }
  if ((outer_radius_um - inner_radius_um) / ring_step_um > 256) bad("more than 257 rings");
  if (angles < 16 || angles > 4096 || (angles & (angles - 1)) != 0) {
    bad("angles must be a power of two between 16 and 4096");
  }
  if (min_harmonic < 1 || max_harmonic < min_harmonic || max_harmonic >= angles / 2) {
    bad("harmonics must satisfy 1 <= min_harmonic <= max_harmonic < angles / 2");
  }
  if (!(std::isfinite(min_ring_share) && min_ring_share > 0 && min_ring_share <= 1)) {
    bad("minimum ring share must be in (0, 1]");
  }
  if (min_valid_samples < 1) bad("minimum valid samples must be at least 1");
  if (RingSpectraDim(*this) > 65536) bad("more than 65536 floats");
  if (!(std::isfinite(centre_search_um) && centre_search_um >= 0 && centre_search_um <= 500)) {
    bad("centre search radius must be in [0, 500] um");
  }
  if (centre_search_um > 0 &&
      !(std::isfinite(centre_search_step_um) && centre_search_step_um >= centre_search_um / 16 &&
        centre_search_step_um <= centre_search_um)) {
    bad("centre search step must be between 1/16 of the search radius and the radius");
  }
}

std::string RingSpectraKey(const RingSpectraOptions& o) {
  o.Check();
  return "brs-v1 px=" + Num(o.working_pixel_um) + " smooth=" + Num(o.smooth_um) +
         " r=" + Num(o.inner_radius_um) + ".." + Num(o.outer_radius_um) + "/" +
         Num(o.ring_step_um) + " ang=" + std::to_string(o.angles) +
         " k=" + std::to_string(o.min_harmonic) + ".." + std::to_string(o.max_harmonic) +
         " share=" + Num(o.min_ring_share) + " min=" + std::to_string(o.min_valid_samples) +
         " search=" + Num(o.centre_search_um) + "/" + Num(o.centre_search_step_um);
}

int RingSpectraDim(const RingSpectraOptions& o) {
  // Not through Check (which calls this); the bounds are checked there.
  return 2 * RingCount(o) * (o.max_harmonic - o.min_harmonic + 1);
}

std::vector<float> BreechFaceRingSpectra(const Surface& s, const std::string& source,
                                         const RingSpectraOptions& options) {
  options.Check();
  return std::move(
      RingSpectraOf(WorkingOf(s, source, options.working_pixel_um), options, source, false)
          .spectra.front());
}

RingQuery BreechFaceRingQuery(const Surface& s, const std::string& source,
                              const RingSpectraOptions& options) {
  options.Check();
  return RingSpectraOf(WorkingOf(s, source, options.working_pixel_um), options, source, true);
}

namespace {

// The best rotation of `b` against each of `count` ring spectra `a[i]`: for
// each, C_k = sum over rings of a_k conj(b_k), and the correlation at
// rotation t = 2 pi j / angles is Re sum_k C_k exp(i k t) = y_j, the real
// inverse DFT of the conjugate-symmetric spectrum C_k / 2 (one call for all
// rows). The best (i, j) wins (the first of equals); a parabola through the
// peak and its neighbours places the rotation between the samples, the score
// is the peak sample (a slight underestimate). `best` receives i.
RingMatch BestRotation(const std::vector<float>* const* a, size_t count,
                       const std::vector<float>& b, const RingSpectraOptions& o, size_t* best) {
  const size_t dim = static_cast<size_t>(RingSpectraDim(o));
  for (size_t i = 0; i < count; ++i) {
    if (a[i]->size() != dim || b.size() != dim) {
      throw Error("ring spectra of " + std::to_string(a[i]->size()) + " and " +
                  std::to_string(b.size()) + " floats; " + RingSpectraKey(o) + " has " +
                  std::to_string(dim));
    }
  }
  const int rings = RingCount(o), nk = o.max_harmonic - o.min_harmonic + 1, na = o.angles;
  thread_local cv::Mat terms, corr;
  thread_local std::vector<float> re, im;
  terms.create(static_cast<int>(count), na, CV_32F);
  terms.setTo(cv::Scalar::all(0));
  re.resize(static_cast<size_t>(nk));
  im.resize(static_cast<size_t>(nk));
  for (size_t i = 0; i < count; ++i) {
    std::fill(re.begin(), re.end(), 0.0f);
    std::fill(im.begin(), im.end(), 0.0f);
    for (int r = 0; r < rings; ++r) {
      const float* x = a[i]->data() + 2 * static_cast<size_t>(r) * nk;
      const float* y = b.data() + 2 * static_cast<size_t>(r) * nk;
      for (int k = 0; k < nk; ++k) {
        re[k] += x[2 * k] * y[2 * k] + x[2 * k + 1] * y[2 * k + 1];
        im[k] += x[2 * k + 1] * y[2 * k] - x[2 * k] * y[2 * k + 1];
      }
    }
    // CCS packing (harmonic h at 2h - 1, 2h; max_harmonic < angles / 2).
    float* t = terms.ptr<float>(static_cast<int>(i));
    for (int k = 0; k < nk; ++k) {
      const int h = o.min_harmonic + k;
      t[2 * h - 1] = 0.5f * re[k];
      t[2 * h] = 0.5f * im[k];
    }
  }
  cv::dft(terms, corr, cv::DFT_INVERSE | cv::DFT_ROWS | cv::DFT_REAL_OUTPUT);
  int bi = 0, bj = 0;
  for (int i = 0; i < static_cast<int>(count); ++i) {
    const float* v = corr.ptr<float>(i);
    for (int j = 0; j < na; ++j) {
      if (v[j] > corr.at<float>(bi, bj)) {
        bi = i;
        bj = j;
      }
    }
  }
  const float* v = corr.ptr<float>(bi);
  const double left = v[(bj + na - 1) % na], mid = v[bj], right = v[(bj + 1) % na];
  const double curve = left - 2 * mid + right;
  const double shift = curve < 0 ? std::clamp(0.5 * (left - right) / curve, -0.5, 0.5) : 0.0;
  // b = a turned by t multiplies harmonic k of b by exp(-i k t): the peak
  // lies at -t.
  double angle = -360.0 * (bj + shift) / na;
  angle = std::fmod(angle + 720.0, 360.0);  // exact: in [0, 360)
  if (best) *best = static_cast<size_t>(bi);
  return {mid, angle, 0, 0};
}

}  // namespace

RingMatch RingCorrelation(const std::vector<float>& a, const std::vector<float>& b,
                          const RingSpectraOptions& o) {
  o.Check();
  const std::vector<float>* one = &a;
  return BestRotation(&one, 1, b, o, nullptr);
}

RingMatch RingCorrelation(const RingQuery& a, const std::vector<float>& b,
                          const RingSpectraOptions& options) {
  if (a.spectra.empty() || a.spectra.size() != a.offsets_um.size()) {
    throw Error("ring query without spectra");
  }
  options.Check();
  // All centres in one pass (one DFT call for all of them).
  thread_local std::vector<const std::vector<float>*> rows;
  rows.clear();
  for (const std::vector<float>& s : a.spectra) rows.push_back(&s);
  size_t best = 0;
  RingMatch m = BestRotation(rows.data(), rows.size(), b, options, &best);
  m.dx_um = a.offsets_um[best].first;
  m.dy_um = a.offsets_um[best].second;
  return m;
}

void SynthDescriptorOptions::Check() const {
  auto bad = [](const std::string& what) { throw Error("synthetic descriptor options: " + what); };
  auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0; };
  if (!(std::isfinite(firing_pin_radius_um) && firing_pin_radius_um > 0)) {
    bad("firing-pin radius must be positive");
  }
  if (!(std::isfinite(primer_radius_um) && primer_radius_um > firing_pin_radius_um * 1.15)) {
    bad("primer radius must exceed the largest firing-pin radius (1.15 x the mean)");
  }
  if (!finite_nonneg(primer_offset_um) || !finite_nonneg(centre_error_um)) {
    bad("primer offset and centre error must be zero or positive");
  }
  if (!(finite_nonneg(class_share) && class_share < 1)) bad("class share must be in [0, 1)");
  if (!(finite_nonneg(transfer_loss) && transfer_loss <= 1)) {
    bad("transfer loss must be in [0, 1]");
  }
  if (!finite_nonneg(noise) || noise > 100) bad("noise must be in [0, 100]");
  if (!finite_nonneg(noise_spread) || noise_spread > 3) bad("noise spread must be in [0, 3]");
  if (!(finite_nonneg(missing_share) && missing_share < 0.9)) {
    bad("missing share must be in [0, 0.9)");
  }
  if (mark_waves < 1 || mark_waves > 64) bad("mark waves must be between 1 and 64");
  if (!finite_nonneg(mark_period_spread) || mark_period_spread > 2) {
    bad("mark period spread must be in [0, 2]");
  }
  if (!finite_nonneg(mark_direction_spread_rad) || mark_direction_spread_rad > 1) {
    bad("mark direction spread must be in [0, 1] radians");
  }
}

std::string SynthDescriptorKey(const SynthDescriptorOptions& o) {
  o.Check();
  // One wave of machining marks is the first model's texture.
  return std::string(o.mark_waves == 1 ? "sbf-v1" : "sbf-v2") +
         " pin=" + Num(o.firing_pin_radius_um) + " primer=" + Num(o.primer_radius_um) + "/" +
         Num(o.primer_offset_um) + " centre=" + Num(o.centre_error_um) +
         " class=" + Num(o.class_share) + " loss=" + Num(o.transfer_loss) +
         " noise=" + Num(o.noise) + "/" + Num(o.noise_spread) + " missing=" + Num(o.missing_share) +
         " marks=" + std::to_string(o.mark_waves) + "/" + Num(o.mark_period_spread) + "/" +
         Num(o.mark_direction_spread_rad);
}

Surface MakeSynthBreechFace(const SynthDescriptorOptions& synth, const DescriptorOptions& options,
                            int firearm, int shot) {
  synth.Check();
  options.Check();
  if (firearm < 0 || shot < 0) {
    throw Error("synthetic descriptor: firearm and shot are 0-based indices");
  }
  const SynthGeometry g = GeometryOf(synth, options);
  const cv::Mat shared = Texture(synth, g.px_um, g.texture_side, -1);
  return Shot(synth, g, FirearmTexture(synth, g, shared, firearm), PinRadius(synth, firearm),
              firearm, shot);
}

std::vector<float> SynthDescriptors(const SynthDescriptorOptions& synth,
                                    const DescriptorOptions& options, int first_firearm,
                                    int firearm_count, int shots) {
  synth.Check();
  options.Check();
  if (first_firearm < 0 || firearm_count < 0 || shots < 1) {
    throw Error("synthetic descriptor: need first firearm >= 0, count >= 0 and shots >= 1");
  }
  const SynthGeometry g = GeometryOf(synth, options);
  const cv::Mat shared = Texture(synth, g.px_um, g.texture_side, -1);
  const size_t dim = static_cast<size_t>(options.dim);
  std::vector<float> out;
  out.reserve(static_cast<size_t>(firearm_count) * shots * dim);
  for (int f = first_firearm; f < first_firearm + firearm_count; ++f) {
    const cv::Mat texture = FirearmTexture(synth, g, shared, f);
    const double pin_r = PinRadius(synth, f);
    for (int s = 0; s < shots; ++s) {
      const Surface shot = Shot(synth, g, texture, pin_r, f, s);
      const std::vector<float> d = BreechFaceDescriptor(
          shot, "synthetic firearm " + std::to_string(f + 1) + " shot " + std::to_string(s + 1),
          options);
      out.insert(out.end(), d.begin(), d.end());
    }
  }
  return out;
}

}  // namespace bien

// Synthetic cartridge-case breech-face scans, for demos and tests at scale.
//
// Each synthetic firearm has its own breech-face texture: fine isotropic random
// relief plus parallel machining marks (a random direction and spacing). A shot
// imprints that texture partially (a random share of the cells transfers weakly)
// with its own measurement noise, is rotated and shifted at random, has a
// circular firing-pin hole, and is NaN outside the primer. Deterministic for a
// seed: the same (seed, firearm, shot) gives the same surface bit for bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "imaging/surface.h"

namespace bien {

struct SynthOptions {
  int firearms = 3;  // distinct firearms (sources)
  int shots = 2;     // shots per firearm
  uint64_t seed = 1;
  double pixel_um = 6.25;    // lateral spacing
  int size_px = 400;         // square scan side
  double relief_um = 1.0;    // RMS of the firearm's texture
  double noise_um = 0.35;    // RMS of each shot's own noise
  double max_shift_px = 12;  // uniform random shift in x and y
  void Check() const;
};

// One shot of one firearm (0-based indices).
Surface MakeSynthShot(const SynthOptions& options, int firearm, int shot);

struct SynthFile {
  std::string file_name;  // e.g. "synth F03-2.x3p"
  std::string source;     // e.g. "F03": equal source = same firearm
  int firearm = 0;
  int shot = 0;
};

// Writes options.firearms * options.shots X3P files and truth.csv
// (columns path,source as in ../shared/data) into `dir` (created if needed).
std::vector<SynthFile> WriteSynthSet(const std::filesystem::path& dir, const SynthOptions& options);

}  // namespace bien

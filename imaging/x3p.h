// X3P (ISO 5436-2 / ISO 25178-72) reading and writing.
//
// Reading: a zip with main.xml (at the root or in one sub-folder) and the binary
// point data it links (bindata/data.bin). Data types D (float64), F (float32),
// I (int16), L (int32), little-endian, x fastest. Integer data is scaled by the
// CZ increment and offset. Invalid points: NaN for D/F, and the optional
// valid-points bit array (ValidPointsLink) for any type. Lateral increments are
// normalised to metres (see X3pReadOptions::xy_unit). The point-data MD5 is
// verified when main.xml gives one; a wrong main.xml checksum (Record4) is only
// a warning, because real files in circulation carry stale ones. An optional
// annotation mask (bindata/mask.png) is read.
//
// Decisions: the CZ increment/offset apply to integer data only (float data
// already holds heights in metres, as x3ptools reads it; csafe-logo.x3p has D
// data ~5e-7 with a CZ increment of 1e-6). Instrument fields that are empty,
// "not available" or "N/A" are left out of Provenance::instrument. Infinite
// heights are read as NaN.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "imaging/surface.h"

namespace bien {

enum class LengthUnit {
  kAuto,  // lateral only: metres, unless the increment is >= 1e-3, then micrometres
  kMetre,
  kMillimetre,
  kMicrometre,
};

// Metres per unit (1 for kMetre and kAuto).
double MetresPer(LengthUnit unit);
// "auto", "m", "mm", "um" (also accepts "µm"); throws bien::Error on anything else.
LengthUnit ParseLengthUnit(const std::string& text);
const char* ToString(LengthUnit unit);

struct X3pReadOptions {
  // How to read the CX/CY increments. The standard says metres; some real
  // files write micrometres, which kAuto recognises by their size.
  LengthUnit xy_unit = LengthUnit::kAuto;
  // The unit the file's heights are in (after the CZ increment for integer
  // data). The standard says metres; files converted from other formats may
  // hold millimetres or micrometres. kAuto is not accepted here: heights have
  // no reliable magnitude to guess from, so the user states it.
  LengthUnit z_unit = LengthUnit::kMetre;
  // Refuse before allocating when SizeX * SizeY exceeds this (default: 400 M points).
  int64_t max_points = 400'000'000;
  bool read_mask = true;
  void Check() const;
};

// Throws bien::Error whose message starts with `source` (normally the path).
Surface ReadX3p(const std::filesystem::path& path, const X3pReadOptions& options = {});
Surface ReadX3pFromMemory(std::span<const std::byte> bytes, const std::string& source,
                          const X3pReadOptions& options = {});

struct X3pWriteOptions {
  // Free text written to Record2/Comment when the surface has none.
  std::string default_comment;
};

// Writes float32 (F) point data with its MD5 and main.xml with the Record4
// checksum file. An empty provenance date is written as the current UTC time
// and an empty instrument as "bien", so only a surface with both set reads
// back with identical provenance (z, grid and spacing always do). Writes to a temporary file and
// renames, so a crash never leaves a half-written X3P at `path`. Throws bien::Error on I/O failure.
void WriteX3p(const Surface& surface, const std::filesystem::path& path,
              const X3pWriteOptions& options = {});

}  // namespace bien

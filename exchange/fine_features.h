// The compact fine-comparison features a correlation request carries: the
// preprocessed breech face with its heights quantised to 16 bits.
#pragma once

#include "exchange/codec.h"
#include "imaging/surface.h"

namespace bien::exchange {

// Quantises a preprocessed surface (square pixels, heights in metres; NaN =
// no data). Throws bien::Error when it is empty, all NaN, has non-square
// pixels or a side outside kMinFineSide..kMaxFineSide.
FineFeatures QuantiseSurface(const Surface& surface);

// The surface back (NaN where there was no data), spacing pixel_um.
Surface ToSurface(const FineFeatures& features);

}  // namespace bien::exchange

// Geometric transforms of a Surface.
#pragma once

#include "imaging/surface.h"

namespace bien {

// The surface rotated by `angle_deg` about its centre (counter-clockwise as
// seen with y down, i.e. clockwise on screen, matching the CMC registration
// convention). The grid grows so no valid point is cut off; points outside the
// original and points whose bilinear neighbourhood touches a NaN become NaN.
// Spacing, values and provenance are kept. An angle that is a multiple of 90
// degrees is exact (no interpolation).
Surface RotateSurface(const Surface& surface, double angle_deg);

}  // namespace bien

#!/usr/bin/env bash
# Build, then run every test. Tests that need the real scans read them from
# ../shared/data (or $BIEN_DATA_DIR) and skip with a reason where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd build
ctest --output-on-failure -j2 --timeout 900

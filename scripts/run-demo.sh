#!/usr/bin/env bash
# The main job: build, then run the demo (synthetic scans -> new node -> list -> verify).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
./build/tools/bien demo --dir build/demo

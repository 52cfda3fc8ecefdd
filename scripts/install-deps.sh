#!/usr/bin/env bash
# Installs the Debian 12 packages bien needs to build, test and run.
# Idempotent: when everything is present it only checks and returns.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libssl-dev          # SHA-256 and MD5 (OpenSSL 3, Apache-2.0)
  libsqlite3-dev      # evidence store
  libzip-dev          # X3P containers
  zlib1g-dev          # compact CMC features (zlib licence)
  libpugixml-dev      # X3P main.xml
  libopencv-dev       # 2D images, filtering, FFT
  libcli11-dev        # the bien command
  nlohmann-json3-dev  # --json output
  libtomlplusplus-dev # node.toml
  libfaiss-dev        # coarse vector index (FAISS, MIT licence: Apache-2.0 compatible)
  libopenblas-dev     # fast BLAS for FAISS (BSD-3-Clause); exact search twice as fast as reference BLAS
  libzmq3-dev         # exchange between nodes (ZeroMQ 4.3, MPL-2.0), CURVE via libsodium
  libsodium-dev       # CURVE keys (ISC)
  cppzmq-dev          # C++ binding of ZeroMQ (MIT)
  libprotobuf-dev protobuf-compiler  # the wire format (BSD-3-Clause)
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format        # format_check test
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

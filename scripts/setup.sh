#!/usr/bin/env bash
# Installs what is missing (Debian 12), configures and builds mega into build/.
# Idempotent: a second run installs nothing and rebuilds only what changed.
#   MEGA_BUILD_DIR   build directory (default: build)
#   MEGA_JOBS        parallel build jobs (default: nproc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEGA_BUILD_DIR:-$root/build}

packages=(
  build-essential cmake ninja-build lld pkg-config
  libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools libzstd-dev   # the compiler
  libopenblas-dev libopenmpi-dev openmpi-bin                           # the runtime
  libsentencepiece-dev sentencepiece                                   # tokenizer (mega-data, --generate)
  python3-torch python3-numpy                                          # the PyTorch reference (/usr/bin/python3)
  r-cran-janeaustenr fortunes-min                                      # corpora (read without R)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The cuDNN frontend's headers for the CUDA backend's fused attention.
"$root/scripts/fetch_cudnn_frontend.sh"

if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-19/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-19/build/utils/lit/lit.py \
    -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=lld
fi
cmake --build "$build" -j "${MEGA_JOBS:-$(nproc)}"

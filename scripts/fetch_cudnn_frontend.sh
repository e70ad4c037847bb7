#!/usr/bin/env bash
# Puts the cuDNN frontend's headers (NVIDIA's header-only C++ graph API over
# cuDNN; MIT and Apache-2.0) in build-deps/cudnn-frontend/include, from its PyPI
# wheel, for the CUDA backend's fused attention (CudnnAttention.cpp). Nothing
# of it is committed; the build finds it there (MEGA_CUDNN_FRONTEND_DIR).
# Optional: without it the CUDA backend keeps mega's own attention kernels.
# A second run does nothing. Exit 0 even when PyPI cannot be reached.
#   MEGA_CUDNN_FRONTEND_VERSION   the wheel's version (default 1.32.0)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/build-deps/cudnn-frontend
version=${MEGA_CUDNN_FRONTEND_VERSION:-1.32.0}
if [ -f "$dest/include/cudnn_frontend.h" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=$(command -v python3 || command -v /usr/bin/python3)
if ! "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
    "nvidia-cudnn-frontend==$version" >"$tmp/log" 2>&1; then
  echo "fetch_cudnn_frontend: could not download nvidia-cudnn-frontend $version" \
       "($(tail -1 "$tmp/log")); the CUDA backend keeps mega's attention kernels"
  exit 0
fi
rm -rf "$dest" && mkdir -p "$dest"
if ! "$py" - "$tmp" "$dest" <<'PY'
import sys, zipfile, glob, os
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith("include/"):
            z.extract(n, sys.argv[2])
PY
then
  echo "fetch_cudnn_frontend: could not unpack the wheel"; rm -rf "$dest"; exit 0
fi
echo "$version" >"$dest/VERSION"
echo "fetch_cudnn_frontend: cuDNN frontend $version headers in $dest/include"

#!/usr/bin/env bash
# Builds, here, the runtime executables bench/gpu/check.sh runs on the GPU
# machine, so that check.sh can skip its build there (a few minutes of the
# machine's time). Carry bench/gpu/prebuilt along with bench/gpu/plans:
#
#   bench/gpu/make_plans.sh && bench/gpu/prebuild.sh
#
# The build is check.sh's own (-DMEGA_BUILD_COMPILER=OFF, sm_90, Release) in
# build-gpu-prebuilt/, without sentencepiece (the GPU machine has none; only
# prompt tokenizing needs it). Its executables, stripped, go to
# bench/gpu/prebuilt/bin with SOURCES, the hash of the sources they were built
# from (bench/gpu/source_hash.sh): check.sh uses them only when the tree it
# runs in hashes the same and every library they need resolves there;
# otherwise it builds as before.
set -eu
cd "$(dirname "$0")/../.." || exit 1
BUILD=build-gpu-prebuilt
OUT=bench/gpu/prebuilt
mkdir -p "$BUILD"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake "${gen[@]}" -S . -B "$BUILD" -DMEGA_BUILD_COMPILER=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSENTENCEPIECE_LIB=OFF -DSENTENCEPIECE_TRAIN_LIB=OFF \
  -DSENTENCEPIECE_INCLUDE=OFF \
  >"$BUILD/configure.log" 2>&1 || { tail -20 "$BUILD/configure.log"; exit 1; }
# check.sh's build has cuDNN's attention (make_plans.sh fetched its headers):
# so must this one.
if ! grep -q "cuDNN attention: cudnn.h in" "$BUILD/configure.log"; then
  grep -E "cuDNN|CUDA backend" "$BUILD/configure.log" >&2
  echo "prebuild: no cuDNN attention in this build (run make_plans.sh first)" >&2
  exit 1
fi
cmake --build "$BUILD" -j "$(nproc)" --target mega-run cuda_twin_check
BINS=(mega-run cuda_twin_check cudnn_attention_test cuda_attention_bench cuda_memory_bench
      nccl_test)
rm -rf "$OUT"
mkdir -p "$OUT/bin"
for b in "${BINS[@]}"; do
  f=$(find "$BUILD" -type f -name "$b" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "prebuild: no $b was built" >&2; exit 1; }
  cp "$f" "$OUT/bin/$b"
  strip "$OUT/bin/$b"
done
bench/gpu/source_hash.sh > "$OUT/SOURCES"
if ldd "$OUT/bin/mega-run" | grep -q sentencepiece; then
  echo "prebuild: mega-run still needs libsentencepiece (not on the GPU machine)" >&2
  exit 1
fi
du -sh "$OUT"
echo "prebuild: $(ls "$OUT/bin" | wc -l) executables in $OUT, sources $(cat "$OUT/SOURCES")"

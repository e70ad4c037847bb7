#!/usr/bin/env bash
# Nsight Compute (ncu) over the memory-bound kernels that cost GPT-2 small's
# bf16 step the most past its GEMMs and attention, each timed alone by
# cuda_memory_bench at the step's shapes:
#
#   LayerNormGrad bf16 dx + dsum   ln_1/ln_2's gradient (25 a step, ~65 us):
#                                  the row kernel, then its column sums over
#                                  the chunks (dw|db and dsum in one launch:
#                                  chunkSumPairKernel)
#   LayerNorm bf16 x, ldy 776      ln_1/ln_2 with the column of ones
#   CrossEntropyWithGrad           the loss and its gradient (4 row blocks)
#
# For each: duration, DRAM and L2 throughput, achieved occupancy, registers
# and shared memory per block, and where the warps stall (ncu's
# SpeedOfLight, Occupancy, LaunchStats, WarpStateStats and
# MemoryWorkloadAnalysis sections), for the first launches of the kernels
# named below. Run on the GPU machine after the build (check.sh's, or
# bench/gpu/prebuilt):
#
#   bench/gpu/profile.sh [path/to/cuda_memory_bench]
#
# Full reports go to $OUT (or build-gpu/profile/) as ncu-<case>.txt; the
# lines that answer "bandwidth or latency?" are printed. Clocks are left as
# the card has them (--clock-control none). Exits 0 without ncu (says so):
# the profile is a diagnosis, not a check.
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
BENCH=${1:-build-gpu/bin/cuda_memory_bench}
DIR=${OUT:-build-gpu/profile}
NCU=${NCU:-ncu}
if ! command -v "$NCU" >/dev/null; then
  for p in /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu; do
    [ -x "$p" ] && NCU=$p && break
  done
fi
if ! command -v "$NCU" >/dev/null && [ ! -x "$NCU" ]; then
  echo "profile: no ncu (Nsight Compute) here: skipped"
  exit 0
fi
[ -x "$BENCH" ] || { echo "profile: no $BENCH (build it first)" >&2; exit 1; }
mkdir -p "$DIR"
SECTIONS=(--section SpeedOfLight --section Occupancy --section LaunchStats
          --section WarpStateStats --section MemoryWorkloadAnalysis)
rc=0
# case label | cuda_memory_bench filter | launches | kernels (ncu regex over
# the demangled names, whose integer template arguments read "(int)6").
# The bench's filters name its groups (LayerNormGrad, CrossEntropy) or one
# case; the regex picks the launches of the step's form.
while IFS='|' read -r label filter count kernels; do
  [ -n "$label" ] || continue
  out=$DIR/ncu-$label.txt
  echo "== $label ($filter): kernels /$kernels/"
  if ! timeout 180 "$NCU" --clock-control none --target-processes all \
      --kernel-name-base demangled -k "regex:$kernels" -c "$count" "${SECTIONS[@]}" \
      "$BENCH" "$filter" >"$out" 2>&1; then
    echo "profile: ncu failed on $label:"
    tail -5 "$out"
    rc=1
    continue
  fi
  if grep -q "No kernels were profiled" "$out"; then
    echo "profile: no launch of /$kernels/ in $label"
    rc=1
    continue
  fi
  # Each kernel's header line, then the figures that tell bandwidth from
  # latency or issue limits.
  grep -E "^  [A-Za-z_].*\(|Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Dynamic Shared Memory Per Block|Block Limit (Registers|Shared Mem)|Warp Cycles Per Issued Instruction|Issued Warp Per Scheduler|No Eligible|stalled|represents about" \
    "$out" | sed -E 's/ +/ /g' | cut -c1-160 | head -40
done <<'EOF2'
lngrad|LayerNormGrad|2|layerNormGradWarpKernel.*__nv_bfloat16, __nv_bfloat16, __nv_bfloat16
chunks|LayerNormGrad|1|chunkSumPairKernel
lnorm|LayerNorm [16384,768] bf16 x, y bf16 ldy|2|layerNormWarpKernel
xent|CrossEntropy|1|crossEntropyWithGradRowsStaged
EOF2
exit "$rc"

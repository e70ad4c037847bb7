#!/usr/bin/env bash
# bench/gpu/check.sh in segments, each under its own time limit, so that a
# step that hangs or runs long costs only its segment and the others still
# report:
#
#   twin     the CUDA kernels against their CPU twins           (limit 200 s)
#   train    train, nccl, ranks                                  (limit 240 s)
#   kernels  the attention and memory-bound kernels timed alone  (limit 150 s)
#   multi    nccl-ranks: the ranks on a GPU each over NCCL, and GPT-2 small
#            at dp 2 (skipped at once with one GPU)             (limit 240 s)
#   timing   torch, mega-timing                                  (limit 300 s)
#   profile  Nsight Compute over the costliest memory-bound kernels (limit 150 s)
#
#   OUT=DIR bench/gpu/check_segments.sh [GROUP...]
#
# A GROUP is a segment, or segments joined by '+' that run at the same time
# (twin+train: both only check results, so they may share the GPU; never join
# a segment that times something). Groups run one after the other; the
# default is "timing twin+train kernels multi profile": the timed steps first, on a GPU that
# nothing else uses. The build (or the copy of bench/gpu/prebuilt) runs once
# before them all. MEGA_SEGMENTS_DEADLINE=S (seconds from the start) shortens
# a group's limit to what is left of S, less 20 s for packing the logs, and
# skips a group when under 30 s would be left.
#
# Each segment's whole output goes to DIR/check-SEGMENT.txt, with its steps'
# summary lines printed here; the step logs (LOGS below) are packed into
# DIR/logs.tgz at the end. MEGA_SEGMENTS_SKIP="torch" leaves out steps by
# name in every segment. Exits non-zero when a segment failed, ran out of
# time or was skipped for the deadline.
set -u
cd "$(dirname "$0")/../.." || exit 1
OUTDIR=${OUT:-build-gpu/check-segments}
LOGS=${MEGA_SEGMENT_LOGS:-/tmp/mega-check-logs}
DEADLINE=${MEGA_SEGMENTS_DEADLINE:-0}
mkdir -p "$OUTDIR" "$LOGS"
ALL="build twin kernels train nccl ranks nccl-ranks torch mega-timing profile"
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(timing twin+train kernels multi profile)
SECONDS=0
status=0

steps_of() {
  case "$1" in
    build) echo "build 300" ;;
    twin) echo "twin 200" ;;
    train) echo "train nccl ranks 240" ;;
    kernels) echo "kernels 150" ;;
    multi) echo "nccl-ranks 240" ;;
    timing) echo "torch mega-timing 300" ;;
    profile) echo "profile 150" ;;
    *) return 1 ;;
  esac
}

for g in "${groups[@]}"; do
  for seg in ${g//+/ }; do
    steps_of "$seg" >/dev/null || {
      echo "check_segments: unknown segment '$seg' (twin, train, kernels, multi, timing or profile)" >&2
      exit 2
    }
  done
done

# run_segment SEG LIMIT: check.sh with only SEG's steps, output to
# OUTDIR/check-SEG.txt.
run_segment() {
  local seg=$1 limit=$2 keep skip="" s
  keep=$(steps_of "$seg")
  keep=${keep% *}
  for s in $ALL; do
    case " $keep " in *" $s "*) ;; *) skip="$skip $s" ;; esac
  done
  skip="$skip ${MEGA_SEGMENTS_SKIP:-}"
  OUT=$LOGS MEGA_CHECK_SKIP="$skip" timeout "$limit" bash bench/gpu/check.sh \
    >"$OUTDIR/check-$seg.txt" 2>&1
}

report() {
  local seg=$1 rc=$2 limit=$3
  [ "$rc" -eq 124 ] && echo "== $seg: ran past its $limit s" || echo "== $seg: status $rc"
  grep -E "^\[check|passed|failed|FAIL|worst|ratio torch bf16|^mega gpt2-small" \
    "$OUTDIR/check-$seg.txt" | grep -v "^PASS\|skipped (MEGA_CHECK_SKIP)" | tail -40
}

# The limit a segment gets: its own, or what the deadline leaves.
limit_of() {
  local limit=$1 left
  if [ "$DEADLINE" -gt 0 ]; then
    left=$((DEADLINE - SECONDS - 20))
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  echo "$limit"
}

# One build for every segment after it (concurrent segments must not copy
# the prebuilt executables over each other).
run_segment build "$(limit_of 300)"
rc=$?
report build "$rc" 300
if [ "$rc" -ne 0 ]; then
  tar czf "$OUTDIR/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  exit 1
fi
for g in "${groups[@]}"; do
  IFS=+ read -r -a segs <<<"$g"
  pids=() limits=()
  for seg in "${segs[@]}"; do
    own=$(steps_of "$seg")
    limit=$(limit_of "${own##* }")
    if [ "$limit" -lt 30 ]; then
      echo "== $seg: skipped, $((DEADLINE - SECONDS)) s left before the deadline"
      status=1
      continue
    fi
    run_segment "$seg" "$limit" &
    pids+=($!) limits+=("$seg:$limit")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    [ "$rc" -ne 0 ] && status=1
    report "${limits[$i]%%:*}" "$rc" "${limits[$i]##*:}"
  done
  echo "== after $g: ${SECONDS} s"
done
tar czf "$OUTDIR/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
exit "$status"

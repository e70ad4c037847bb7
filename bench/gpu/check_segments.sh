#!/usr/bin/env bash
# bench/gpu/check.sh in three segments, one after the other on the same
# machine, each under its own time limit, so that a step that hangs or runs
# long costs only its segment and the others still report:
#
#   twin     the CUDA kernels against their CPU twins           (limit 200 s)
#   train    kernels, train, nccl, ranks                         (limit 240 s)
#   timing   torch, mega-timing                                  (limit 300 s)
#
#   OUT=DIR bench/gpu/check_segments.sh [SEGMENT...]    (default: all three)
#
# Each segment's whole output goes to DIR/check-SEGMENT.txt, with its steps'
# summary lines printed here; the step logs (LOGS below) are packed into
# DIR/logs.tgz at the end. Exits non-zero when a segment failed or ran out
# of time. Uses check.sh's prebuilt executables when they match the tree
# (bench/gpu/prebuild.sh), as check.sh does.
set -u
cd "$(dirname "$0")/../.." || exit 1
OUTDIR=${OUT:-build-gpu/check-segments}
LOGS=${MEGA_SEGMENT_LOGS:-/tmp/mega-check-logs}
mkdir -p "$OUTDIR" "$LOGS"
ALL="twin kernels train nccl ranks torch mega-timing"
segments=("$@")
[ ${#segments[@]} -eq 0 ] && segments=(twin train timing)
status=0
for seg in "${segments[@]}"; do
  case "$seg" in
    twin) keep="twin" limit=200 ;;
    train) keep="kernels train nccl ranks" limit=240 ;;
    timing) keep="torch mega-timing" limit=300 ;;
    *) echo "check_segments: unknown segment '$seg' (twin, train or timing)" >&2; exit 2 ;;
  esac
  skip=""
  for s in $ALL; do
    case " $keep " in *" $s "*) ;; *) skip="$skip $s" ;; esac
  done
  OUT=$LOGS MEGA_CHECK_SKIP="$skip" timeout "$limit" bash bench/gpu/check.sh \
    >"$OUTDIR/check-$seg.txt" 2>&1
  rc=$?
  [ "$rc" -eq 124 ] && echo "== $seg: ran past its $limit s" || echo "== $seg: status $rc"
  [ "$rc" -ne 0 ] && status=1
  grep -E "^\[check|passed|failed|FAIL|worst|ratio torch bf16|^mega gpt2-small" \
    "$OUTDIR/check-$seg.txt" | grep -v "^PASS" | tail -40
done
tar czf "$OUTDIR/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
exit "$status"

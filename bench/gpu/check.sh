#!/usr/bin/env bash
# The GPU machine's check of the CUDA backend. Run from anywhere in the repo:
#
#   bench/gpu/check.sh
#
# Steps (each one's failure is recorded and the later steps still run; the exit
# status is 1 when any step failed):
#   1. build   configure + build the runtime alone (-DMEGA_BUILD_COMPILER=OFF,
#              -DCMAKE_CUDA_ARCHITECTURES=90) with all cores into build-gpu/, or
#              take bench/gpu/prebuilt/bin (bench/gpu/prebuild.sh, run where
#              megac is) when it was built from these sources and its
#              libraries resolve here
#   2. twin    cuda_twin_check: every opcode on the CPU and the GPU, compared (fp32
#              rel 1e-5; Cast, bf16 MatMul and bf16 Attention rel 1e-2), outputs
#              poisoned first, random non-zero inputs
#   2a. kernels cuda_attention_bench (mega's attention kernels and cuDNN's at GPT-2
#              small's layer) and cuda_memory_bench (the memory-bound kernels;
#              LayerNormGrad and ReduceSum again with MEGA_CUDA_CHUNK_PREFETCH=0)
#   3. train   if bench/gpu/plans/gpt-small-{cpu,cuda}.plan exist (make_plans.sh):
#              20 steps on --device cuda and on --device cpu, same seed (or
#              --load bench/gpu/plans/gpt-small.safetensors when present), same
#              data, --no-shuffle; per-step lm loss compared (rel 1e-4), both printed;
#              then the same for the bf16 plans gpt-small-bf16-{cpu,cuda}.plan (rel 1e-2),
#              on cuDNN's fused attention and on mega's (--attention-backend local;
#              also with --no-cuda-graph and with --wgrad-stream: bitwise the
#              same losses),
#              gpt-small-bf16f32res-{cpu,cuda}.plan (--fp32-residual-connection,
#              rel 1e-2), gpt-small-bf16f32grad-{cpu,cuda}.plan
#              (--bf16-residual-grad=false, rel 1e-2) and
#              gpt-small-bf16bgrad-{cpu,cuda}.plan (--ones-column-bias-grad=false,
#              rel 1e-2);
#              the cuda runs must say that train was replayed as a CUDA graph, and a
#              third fp32 run with --no-cuda-graph must give bitwise the same losses;
#              two bf16 runs with --gemm-autotune-file: the second reads what the
#              first timed, times nothing, leaves the file and has its bits; a bf16
#              run with --gemm-autotune-wide against the CPU (rel 1e-2)
#   3a. nccl   nccl_test: the NCCL path with one-rank communicators on the one GPU,
#              every collective against the host-staged path (bitwise), the
#              gradient buckets' stream, an invalid argument and a receive that
#              never completes (the watchdog's 2 s deadline) each one error line
#   3b. ranks  if bench/gpu/plans/ranks-*-cuda.plan exist: the small model at dp 2,
#              pp 2, pp 2 x dp 2, interleaved pp 2, tp 2, tp 2 x pp 2, dp 2 with
#              the distributed optimizer and tp 2 x dp 2 with sequence
#              parallelism on MPI ranks sharing the GPU, 10 steps,
#              losses against one process (rel 1e-5); bf16 pp 2, tp 2 x pp 2, tp 2
#              (the column of ones on each rank's columns) and tp 2 with
#              sequence parallelism (bf16 all-gathers) against the bf16
#              one-process run (rel 1e-3)
#   3c. nccl-ranks  with two GPUs or more (nvidia-smi -L): the ranks step's
#              2-rank layouts (with four GPUs its 4-rank ones too) on a GPU
#              each with --comm nccl (a run that cannot use NCCL fails),
#              losses against one process as in 3b; then GPT-2 small bf16 at
#              dp 2 (gpt2-small-bf16-dp2-cuda.plan: a micro-batch of 16 on each
#              GPU) and at tp 2 (gpt2-small-bf16-tp2-cuda.plan: the batch of
#              16 on halves of each layer) against one GPU: ms/step, tokens/s
#              per GPU, scaling. With one GPU: skipped
#   4. torch   bench/gpu/torch_baseline.py --config gpt2-small (fp32, bf16,
#              bf16-compile): ms/step
#   5. mega    if bench/gpu/plans/gpt2-small-{,bf16-}cuda.plan exist: mega's GPT-2
#              small ms/step in fp32 and bf16 (also with cuBLASLt's candidates
#              timed and kept in a file, then read back; the kept choices with
#              the weight gradients on a second stream (--wgrad-stream, also on
#              the plan compiled with --wgrad-slack 6); with the wide search's
#              candidates (--gemm-autotune-wide) timed and kept in a file, then
#              read back, also with --wgrad-stream on the --wgrad-slack plan;
#              with the heuristic's first algorithm for every GEMM
#              (--no-gemm-autotune); and with MEGA_TIMING=all with the bias
#              gradients in cuBLASLt's epilogue instead of the column of ones,
#              with the chunk sums one load at a time, with the residual
#              gradient in f32, without CUDA
#              graphs, with mega's attention kernels instead of cuDNN's, with the bias
#              gradients as ReduceSums, with the backward's bf16 rules off,
#              with the biases in f32, with the residual stream in f32 and
#              with the output layer unblocked), beside torch's
#              modes of step 4
#              (tokens/s, TFLOP/s, MFU, ratios), then one traced bf16 run: the
#              per-kernel time of a step (again on the wide search's choices)
#   6. profile bench/gpu/profile.sh: Nsight Compute over LayerNormGrad, LayerNorm
#              and CrossEntropyWithGrad at GPT-2 small's shapes (skipped
#              without ncu)
# Logs go to $OUT when it is set, else build-gpu/check-logs/. About 6 minutes on
# an H100 (most of it the build and torch.compile).
# Environment: MEGA_CMAKE_ARGS adds configure arguments; PYTHON picks python3;
# MEGA_CHECK_SKIP="twin torch" skips steps by name; MEGA_TIMING=all times
# every GPT-2 variant (step 5); MEGA_TORCH_MODES=bf16,bf16-compile times
# only those of torch's modes (step 4).
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
BUILD=${MEGA_GPU_BUILD:-$ROOT/build-gpu}
LOGS=${OUT:-$BUILD/check-logs}
PLANS=$ROOT/bench/gpu/plans
PY=${PYTHON:-python3}
JOBS=$(nproc 2>/dev/null || echo 8)
# Executables land in build-gpu/bin (CMAKE_RUNTIME_OUTPUT_DIRECTORY), or beside
# their CMakeLists in builds configured before that was set.
locate() {
  local p
  for p in "$BUILD/bin/$1" "$BUILD/$2/$1"; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "$BUILD/bin/$1"
}
MEGA_RUN=$BUILD/bin/mega-run
TWIN=$BUILD/bin/cuda_twin_check
TOOLS=$ROOT/bench/gpu/check_tools.py
mkdir -p "$LOGS" "$LOGS/data"
SMALL_VOCAB=8192 SMALL_TOKENS=$((8 * 128 * 24 + 129))
GPT2_VOCAB=50304 GPT2_TOKENS=$((16 * 1024 * 14 + 1025))
[ -f "$PLANS/plans.env" ] && . "$PLANS/plans.env"
FAILED=()
SECONDS=0

note() { printf '[check %4ds] %s\n' "$SECONDS" "$*"; }
step() {
  local name=$1 rc
  shift
  case " ${MEGA_CHECK_SKIP:-} " in
  *" $name "*)
    note "=== $name: skipped (MEGA_CHECK_SKIP)"
    return 0
    ;;
  esac
  note "=== $name"
  "$@"
  rc=$?
  if [ $rc -eq 0 ]; then
    note "--- $name: ok"
  else
    note "--- $name: FAILED (status $rc)"
    FAILED+=("$name")
  fi
}

# cuDNN for the fused attention: mega-run opens libcudnn.so.9 at run time.
# Where the system has none, PyTorch's wheel may (nvidia/cudnn/lib).
find_cudnn() {
  ldconfig -p 2>/dev/null | grep -q "libcudnn.so.9 " && return 0
  local d
  d=$("$PY" -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2>/dev/null) || return 0
  if [ -f "$d/lib/libcudnn.so.9" ]; then
    export LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    note "libcudnn.so.9 from $d/lib"
  fi
}
find_cudnn

# Executables built beforehand by bench/gpu/prebuild.sh, when they were built
# from these very sources and every library they need resolves here.
use_prebuilt() {
  local pre=$ROOT/bench/gpu/prebuilt b
  [ -f "$pre/SOURCES" ] && [ -x "$pre/bin/mega-run" ] || return 1
  if [ "$(cat "$pre/SOURCES")" != "$("$ROOT/bench/gpu/source_hash.sh")" ]; then
    echo "bench/gpu/prebuilt is of other sources: building here"
    return 1
  fi
  for b in "$pre"/bin/*; do
    if ldd "$b" 2>&1 | grep -q "not found"; then
      echo "bench/gpu/prebuilt/bin/$(basename "$b") misses libraries here: building here"
      ldd "$b" | grep "not found" | head -5
      return 1
    fi
  done
  mkdir -p "$BUILD/bin"
  cp "$pre"/bin/* "$BUILD/bin/"
  echo "using the executables of bench/gpu/prebuilt (sources $(cat "$pre/SOURCES"))"
}

do_build() {
  local gen=() cuda=()
  if use_prebuilt; then
    MEGA_RUN=$(locate mega-run tools/mega-run)
    TWIN=$(locate cuda_twin_check test/runtime/cuda)
    return 0
  fi
  command -v ninja >/dev/null && gen=(-G Ninja)
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    cuda=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  fi
  # shellcheck disable=SC2086
  if ! timeout 300 cmake "${gen[@]}" -S "$ROOT" -B "$BUILD" -DMEGA_BUILD_COMPILER=OFF \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${cuda[@]}" \
      ${MEGA_CMAKE_ARGS:-} >"$LOGS/configure.log" 2>&1; then
    tail -40 "$LOGS/configure.log"
    return 1
  fi
  grep -E "CUDA compiler identification|without the CUDA backend|cuDNN attention" \
    "$LOGS/configure.log"
  if ! timeout 600 cmake --build "$BUILD" -j "$JOBS" --target mega-run cuda_twin_check \
      >"$LOGS/build.log" 2>&1; then
    grep -E -A8 "error|Error" "$LOGS/build.log" | head -80
    tail -15 "$LOGS/build.log"
    return 1
  fi
  MEGA_RUN=$(locate mega-run tools/mega-run)
  TWIN=$(locate cuda_twin_check test/runtime/cuda)
  echo "built $MEGA_RUN and $TWIN"
}

do_twin() {
  TWIN=$(locate cuda_twin_check test/runtime/cuda)
  [ -x "$TWIN" ] || { echo "no $TWIN (build failed?)"; return 1; }
  local c
  c=$(locate cudnn_attention_test test/runtime/cuda)
  [ -x "$c" ] && { timeout 60 "$c" 2>&1 | tail -3; }
  timeout 400 "$TWIN" 2>&1 | tee "$LOGS/twin.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 77 ] && echo "the twin check found no GPU: counted as a failure here"
  # The fused paths that fell back (the twins pass either way).
  echo "fallbacks told: $(grep -c "^cuda: cu" "$LOGS/twin.log")"
  grep "^cuda: cu" "$LOGS/twin.log" | sort | uniq -c | sort -rn | head -20
  return "$rc"
}

# The attention and memory-bound kernels alone at GPT-2 small's shapes
# (cuda_attention_bench: mega's kernels and cuDNN's; cuda_memory_bench: the
# vector and element forms, with their GB/s).
do_kernels() {
  local a m rc=0
  a=$(locate cuda_attention_bench test/runtime/cuda)
  m=$(locate cuda_memory_bench test/runtime/cuda)
  [ -x "$a" ] && [ -x "$m" ] || { echo "no $a or $m (build failed?)"; return 1; }
  timeout 120 "$a" 2>&1 | tee "$LOGS/attention-bench.log" || rc=1
  timeout 180 "$m" 2>&1 | tee "$LOGS/memory-bench.log" || rc=1
  # The kernels that sum chunks' column partials, loading one chunk at a
  # time (MEGA_CUDA_CHUNK_PREFETCH=0), to time against the lines above.
  echo "the same, one chunk at a time (MEGA_CUDA_CHUNK_PREFETCH=0):"
  MEGA_CUDA_CHUNK_PREFETCH=0 timeout 120 "$m" "LayerNormGrad" 2>&1 \
    | tee "$LOGS/memory-bench-noprefetch.log" || rc=1
  MEGA_CUDA_CHUNK_PREFETCH=0 timeout 60 "$m" "ReduceSum" 2>&1 \
    | tee -a "$LOGS/memory-bench-noprefetch.log" || rc=1
  return "$rc"
}

# run_mega NAME PLAN DEVICE DATA STEPS [extra args]: a mega-run training run
# logged to $LOGS/NAME.{log,jsonl}.
run_mega() {
  local name=$1 plan=$2 device=$3 data=$4 steps=$5
  shift 5
  rm -f "$LOGS/$name.jsonl"
  timeout 300 "$MEGA_RUN" "$plan" --data "$data" --steps "$steps" --no-shuffle --seed 1 \
    --log-interval 1 --log-file "$LOGS/$name.jsonl" --device "$device" "$@" \
    >"$LOGS/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "mega-run $name failed (status $rc):"
    tail -5 "$LOGS/$name.log"
  fi
  return "$rc"
}

# A bf16 variant of the small model, gpt-small-<tag>-{cuda,cpu}.plan when
# make_plans.sh made them: 20 steps on each device, losses within 1e-2.
bf16_variant() {
  local tag=$1 label=$2 rc=0
  [ -f "$PLANS/gpt-small-$tag-cuda.plan" ] && [ -f "$PLANS/gpt-small-$tag-cpu.plan" ] || return 0
  for d in cuda cpu; do
    run_mega "small-$tag-$d" "$PLANS/gpt-small-$tag-$d.plan" "$d" "$LOGS/data/small" 20 \
      "${load[@]}" || rc=1
  done
  printf '%s: ' "$label"
  "$PY" "$TOOLS" compare "$LOGS/small-$tag-cpu.jsonl" "$LOGS/small-$tag-cuda.jsonl" \
    --rtol 1e-2 | tee "$LOGS/compare-$tag.txt" | tail -1 || rc=1
  return "$rc"
}

# same_bits NAME LABEL [mega-run args]: the small bf16 plan 20 steps on
# mega's attention (deterministic; cuDNN's backward is not) and the GEMM
# algorithms small-bf16-cuda-local timed (LOCAL_CHOICES: two timings may
# pick differently), whose losses must equal small-bf16-cuda-local's bit
# for bit (do_train's `load`).
LOCAL_CHOICES=$LOGS/small-bf16-local-choices.txt
same_bits() {
  local name=$1 label=$2
  shift 2
  run_mega "$name" "$PLANS/gpt-small-bf16-cuda.plan" cuda "$LOGS/data/small" 20 \
    "${load[@]}" --attention-backend local --gemm-autotune-file "$LOCAL_CHOICES" "$@" \
    || return 1
  printf '%s (exact): ' "$label"
  "$PY" "$TOOLS" compare "$LOGS/$name.jsonl" "$LOGS/small-bf16-cuda-local.jsonl" \
    --rtol 0 | tail -1
}

do_train() {
  MEGA_RUN=$(locate mega-run tools/mega-run)
  if [ ! -f "$PLANS/gpt-small-cuda.plan" ] || [ ! -f "$PLANS/gpt-small-cpu.plan" ]; then
    echo "no bench/gpu/plans/gpt-small-{cpu,cuda}.plan (make_plans.sh): skipped"
    return 0
  fi
  [ -x "$MEGA_RUN" ] || { echo "no $MEGA_RUN (build failed?)"; return 1; }
  "$PY" "$TOOLS" data "$LOGS/data/small" --vocab "$SMALL_VOCAB" --tokens "$SMALL_TOKENS" || return 1
  local load=()
  [ -f "$PLANS/gpt-small.safetensors" ] && load=(--load "$PLANS/gpt-small.safetensors")
  local rc=0
  run_mega small-cuda "$PLANS/gpt-small-cuda.plan" cuda "$LOGS/data/small" 20 "${load[@]}" || rc=1
  run_mega small-cpu "$PLANS/gpt-small-cpu.plan" cpu "$LOGS/data/small" 20 "${load[@]}" || rc=1
  "$PY" "$TOOLS" compare "$LOGS/small-cpu.jsonl" "$LOGS/small-cuda.jsonl" --rtol 1e-4 \
    | tee "$LOGS/compare.txt" || rc=1
  # CUDA graphs: the run above must have replayed train as a graph, and the
  # same run launching every kernel on its own must give the same bits.
  if ! grep -q "program train replayed as a CUDA graph" "$LOGS/small-cuda.log"; then
    echo "small-cuda: train was not replayed as a CUDA graph:"
    grep -h "CUDA graph\|kernel by kernel" "$LOGS/small-cuda.log"
    rc=1
  fi
  grep -h "replayed as a CUDA graph\|runs kernel by kernel" "$LOGS/small-cuda.log"
  run_mega small-cuda-nograph "$PLANS/gpt-small-cuda.plan" cuda "$LOGS/data/small" 20 \
    "${load[@]}" --no-cuda-graph || rc=1
  if grep -q "CUDA graph" "$LOGS/small-cuda-nograph.log"; then
    echo "small-cuda-nograph: --no-cuda-graph still replayed a graph"
    rc=1
  fi
  printf 'graph vs --no-cuda-graph (exact): '
  "$PY" "$TOOLS" compare "$LOGS/small-cuda-nograph.jsonl" "$LOGS/small-cuda.jsonl" --rtol 0 \
    >"$LOGS/compare-graph.txt"
  local grc=$?
  tail -1 "$LOGS/compare-graph.txt"
  [ "$grc" -eq 0 ] || { cat "$LOGS/compare-graph.txt"; rc=1; }
  for d in cuda cuda-nograph cpu; do
    [ -f "$LOGS/small-$d.jsonl" ] && printf '%-12s ' "$d" && "$PY" "$TOOLS" timing "$LOGS/small-$d.jsonl"
  done
  # bf16: the CPU runs the same plan with bf16 rounding emulated (its twin).
  if [ -f "$PLANS/gpt-small-bf16-cuda.plan" ] && [ -f "$PLANS/gpt-small-bf16-cpu.plan" ]; then
    run_mega small-bf16-cuda "$PLANS/gpt-small-bf16-cuda.plan" cuda "$LOGS/data/small" 20 "${load[@]}" || rc=1
    if ! grep -q "program train replayed as a CUDA graph" "$LOGS/small-bf16-cuda.log"; then
      echo "small-bf16-cuda: train was not replayed as a CUDA graph:"
      grep -h "CUDA graph\|kernel by kernel" "$LOGS/small-bf16-cuda.log"
      rc=1
    fi
    run_mega small-bf16-cpu "$PLANS/gpt-small-bf16-cpu.plan" cpu "$LOGS/data/small" 20 "${load[@]}" || rc=1
    "$PY" "$TOOLS" compare "$LOGS/small-bf16-cpu.jsonl" "$LOGS/small-bf16-cuda.jsonl" --rtol 1e-2 \
      | tee "$LOGS/compare-bf16.txt" || rc=1
    grep -h "mega-run: attention:" "$LOGS/small-bf16-cuda.log"
    # mega's own attention kernels on the same plan (the run above used
    # cuDNN's where it could).
    rm -f "$LOCAL_CHOICES"
    run_mega small-bf16-cuda-local "$PLANS/gpt-small-bf16-cuda.plan" cuda "$LOGS/data/small" 20 \
      "${load[@]}" --attention-backend local --gemm-autotune-file "$LOCAL_CHOICES" || rc=1
    "$PY" "$TOOLS" compare "$LOGS/small-bf16-cpu.jsonl" "$LOGS/small-bf16-cuda-local.jsonl" \
      --rtol 1e-2 | tail -1 || rc=1
    # The bf16 step's fused kernels (the bias-gradient epilogue, the fused
    # norm gradients, the loss's row blocks) replayed as a graph against
    # launched one by one, and the chunk sums one load at a time: the same
    # bits (every run with the GEMM algorithms the first one timed).
    same_bits small-bf16-cuda-local-nograph 'bf16 graph vs --no-cuda-graph' \
      --no-cuda-graph || rc=1
    MEGA_CUDA_CHUNK_PREFETCH=0 same_bits small-bf16-cuda-local-serial \
      'bf16 without the chunk prefetch' || rc=1
    # The weight gradients' products on a second stream (--wgrad-stream):
    # the same kernels on the same bytes, in an order the waits keep, so
    # the same bits.
    same_bits small-bf16-cuda-local-wgrad 'bf16 --wgrad-stream' --wgrad-stream || rc=1
    grep -h "launches on the side stream" "$LOGS/small-bf16-cuda-local-wgrad.log" \
      || { echo "small-bf16 --wgrad-stream: no launch went to the side stream"; rc=1; }
    for d in cuda cpu; do
      [ -f "$LOGS/small-bf16-$d.jsonl" ] && printf 'bf16 %-4s ' "$d" && "$PY" "$TOOLS" timing "$LOGS/small-bf16-$d.jsonl"
    done
  fi
  # The residual stream in f32 (--fp32-residual-connection): the norms and
  # the residual epilogue read f32 on both devices. The residual stream's
  # gradient in f32 (--bf16-residual-grad=false): the norms' f32-dx forms
  # with the bf16 copy on both devices.
  bf16_variant bf16f32res 'f32 residual' || rc=1
  bf16_variant bf16f32grad 'f32 residual gradient' || rc=1
  # c_attn's and c_fc's bias gradients in cuBLASLt's bias-gradient
  # epilogue (--ones-column-bias-grad=false; the bf16 pairs above have the
  # column of ones, cuda's default).
  bf16_variant bf16bgrad 'bias-gradient epilogue' || rc=1
  # Kept autotune choices (--gemm-autotune-file): the first run times
  # cuBLASLt's candidates and writes them, the second reads them, times
  # nothing, leaves the file as it was and gives the same bits (mega's
  # attention: cuDNN's backward is not deterministic).
  if [ -f "$PLANS/gpt-small-bf16-cuda.plan" ]; then
    local kept=$LOGS/small-choices.txt
    rm -f "$kept"
    for k in 1 2; do
      run_mega "small-bf16-kept$k" "$PLANS/gpt-small-bf16-cuda.plan" cuda "$LOGS/data/small" \
        20 "${load[@]}" --attention-backend local --gemm-autotune-file "$kept" || rc=1
      [ "$k" = 1 ] && cp "$kept" "$kept.first" 2>/dev/null
    done
    printf 'kept autotune choices: %s GEMMs; ' "$(grep -c '^gemm' "$kept" 2>/dev/null)"
    if [ ! -s "$kept" ] || ! cmp -s "$kept" "$kept.first"; then
      echo "the second run changed or lost $kept"
      rc=1
    elif grep -q "candidate\|timing it again" "$LOGS/small-bf16-kept2.log"; then
      echo "the second run timed GEMMs again:"
      grep -h "autotune" "$LOGS/small-bf16-kept2.log"
      rc=1
    fi
    "$PY" "$TOOLS" compare "$LOGS/small-bf16-kept1.jsonl" "$LOGS/small-bf16-kept2.jsonl" \
      --rtol 0 | tail -1 || rc=1
    # The wide search's candidates (--gemm-autotune-wide: other algorithm
    # ids, split-K forms): sums in another order, the CPU's losses to 1e-2.
    if [ -f "$LOGS/small-bf16-cpu.jsonl" ]; then
      run_mega small-bf16-wide "$PLANS/gpt-small-bf16-cuda.plan" cuda "$LOGS/data/small" 20 \
        "${load[@]}" --gemm-autotune-wide || rc=1
      grep -h "cuda: autotune: the" "$LOGS/small-bf16-wide.log"
      printf 'bf16 --gemm-autotune-wide: '
      "$PY" "$TOOLS" compare "$LOGS/small-bf16-cpu.jsonl" "$LOGS/small-bf16-wide.jsonl" \
        --rtol 1e-2 | tail -1 || rc=1
    fi
  fi
  return "$rc"
}

# The NCCL path on the one GPU (nccl_test, built with cuda_twin_check).
do_nccl() {
  local t
  t=$(locate nccl_test test/runtime/cuda)
  if [ ! -x "$t" ]; then
    echo "no $t (did the build find NCCL?)"
    grep -E "NCCL" "$LOGS/configure.log"
    return 1
  fi
  timeout 120 "$t" 2>&1 | tee "$LOGS/nccl.log"
  return "${PIPESTATUS[0]}"
}

# Several ranks on the one GPU (MPI; the collectives staged through host
# memory, the data-parallel buckets started during the backward): each layout's
# losses against the one-process run of the same model (rel 1e-5).
# run_ranks NAME NP PLAN STEPS DATA [mega-run args]: PLAN on NP MPI ranks
# (OpenMPI as root), rank 0's log lines in $LOGS/NAME.jsonl, every rank's
# output in $LOGS/NAME.log.
run_ranks() {
  local name=$1 np=$2 plan=$3 steps=$4 data=$5
  shift 5
  rm -f "$LOGS/$name.jsonl"
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \
    timeout 300 mpirun -np "$np" --oversubscribe --bind-to none "$MEGA_RUN" \
    "$plan" --data "$data" --steps "$steps" --no-shuffle \
    --seed 1 --log-interval 1 --log-file "$LOGS/$name.jsonl" --device cuda "$@" \
    >"$LOGS/$name.log" 2>&1
}

do_ranks() {
  MEGA_RUN=$(locate mega-run tools/mega-run)
  if [ ! -f "$PLANS/ranks-ref-cuda.plan" ]; then
    echo "no bench/gpu/plans/ranks-*-cuda.plan (make_plans.sh): skipped"
    return 0
  fi
  command -v mpirun >/dev/null || { echo "no mpirun: skipped"; return 0; }
  [ -x "$MEGA_RUN" ] || { echo "no $MEGA_RUN (build failed?)"; return 1; }
  "$PY" "$TOOLS" data "$LOGS/data/small" --vocab "$SMALL_VOCAB" --tokens "$SMALL_TOKENS" || return 1
  run_mega ranks-ref "$PLANS/ranks-ref-cuda.plan" cuda "$LOGS/data/small" 10 || return 1
  # bf16 layouts against the bf16 one-process run at rel 1e-3: a tensor-
  # parallel sum, or the pipeline's gradient norm, that differs in its last
  # f32 bits may round a bf16 value the other way (as parallel.res_* on the
  # CPU).
  if [ -f "$PLANS/ranks-bf16-ref-cuda.plan" ]; then
    run_mega ranks-bf16-ref "$PLANS/ranks-bf16-ref-cuda.plan" cuda "$LOGS/data/small" 10 \
      || return 1
  fi
  local rc=0 c name np ref rtol
  for c in dp2:2 pp2:2 pp2dp2:4 pp2vpp2:2 tp2:2 tp2pp2:4 dp2do:2 tp2spdp2:4 bf16-pp2:2 \
    bf16-tp2pp2:4 bf16-tp2:2 bf16-tp2sp:2; do
    name=${c%%:*} np=${c##*:} ref=ranks-ref rtol=1e-5
    case $name in bf16-*) ref=ranks-bf16-ref rtol=1e-3 ;; esac
    [ -f "$PLANS/ranks-$name-cuda.plan" ] || { echo "no ranks-$name-cuda.plan: skipped"; continue; }
    run_ranks "ranks-$name" "$np" "$PLANS/ranks-$name-cuda.plan" 10 "$LOGS/data/small"
    if [ $? -ne 0 ]; then
      if grep -q "built without MPI" "$LOGS/ranks-$name.log"; then
        echo "this mega-run has no MPI (no MPI headers where it was built): skipped"
        return 0
      fi
      echo "ranks $name failed:"; tail -5 "$LOGS/ranks-$name.log"; rc=1; continue
    fi
    grep -h "collectives:\|buckets all-reduced\|buckets reduce-scattered\|pipeline .* over" \
      "$LOGS/ranks-$name.log" | head -3
    printf '%-8s ' "$name"
    "$PY" "$TOOLS" compare "$LOGS/$ref.jsonl" "$LOGS/ranks-$name.jsonl" --rtol "$rtol" \
      | tail -1 || rc=1
  done
  return "$rc"
}

# Several GPUs: the ranks on a GPU each, their collectives on NCCL
# (--comm nccl: a run that cannot use it fails), which one GPU cannot show
# (NCCL refuses a communicator that has one GPU twice).
do_nccl_ranks() {
  local gpus
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
  if [ "${gpus:-0}" -lt 2 ]; then
    echo "${gpus:-0} GPU: skipped (NCCL between ranks needs a GPU for each)"
    return 0
  fi
  MEGA_RUN=$(locate mega-run tools/mega-run)
  command -v mpirun >/dev/null || { echo "no mpirun: skipped"; return 0; }
  [ -x "$MEGA_RUN" ] || { echo "no $MEGA_RUN (build failed?)"; return 1; }
  [ -f "$PLANS/ranks-ref-cuda.plan" ] || { echo "no ranks plans (make_plans.sh): skipped"; return 0; }
  "$PY" "$TOOLS" data "$LOGS/data/small" --vocab "$SMALL_VOCAB" --tokens "$SMALL_TOKENS" || return 1
  local rc=0 c name np ref rtol layouts
  # The one-process references (as the ranks step makes them).
  run_mega nccl-ref "$PLANS/ranks-ref-cuda.plan" cuda "$LOGS/data/small" 10 || return 1
  run_mega nccl-bf16-ref "$PLANS/ranks-bf16-ref-cuda.plan" cuda "$LOGS/data/small" 10 || rc=1
  layouts="dp2:2 pp2:2 pp2vpp2:2 tp2:2 dp2do:2 bf16-pp2:2 bf16-tp2:2 bf16-tp2sp:2"
  [ "$gpus" -ge 4 ] && layouts="$layouts pp2dp2:4 tp2pp2:4 tp2spdp2:4 bf16-tp2pp2:4"
  for c in $layouts; do
    name=${c%%:*} np=${c##*:} ref=nccl-ref rtol=1e-5
    case $name in bf16-*) ref=nccl-bf16-ref rtol=1e-3 ;; esac
    [ -f "$PLANS/ranks-$name-cuda.plan" ] || { echo "no ranks-$name-cuda.plan: skipped"; continue; }
    if ! run_ranks "nccl-$name" "$np" "$PLANS/ranks-$name-cuda.plan" 10 "$LOGS/data/small" \
      --comm nccl; then
      echo "nccl $name failed:"; tail -5 "$LOGS/nccl-$name.log"; rc=1; continue
    fi
    if ! grep -q "collectives: NCCL" "$LOGS/nccl-$name.log"; then
      echo "nccl $name: the collectives did not go through NCCL:"
      grep -h "collectives:" "$LOGS/nccl-$name.log"
      rc=1
    fi
    grep -h "collectives:\|buckets all-reduced\|buckets reduce-scattered" \
      "$LOGS/nccl-$name.log" | sort -u | head -3
    printf '%-8s ' "$name"
    "$PY" "$TOOLS" compare "$LOGS/$ref.jsonl" "$LOGS/nccl-$name.jsonl" --rtol "$rtol" \
      | tail -1 || rc=1
  done
  # GPT-2 small bf16 at dp 2: a micro-batch of 16 on each GPU, the
  # gradients all-reduced in buckets during the backward, against one GPU.
  if [ -f "$PLANS/gpt2-small-bf16-dp2-cuda.plan" ]; then
    "$PY" "$TOOLS" data "$LOGS/data/gpt2" --vocab "$GPT2_VOCAB" --tokens "$GPT2_TOKENS" || return 1
    run_mega nccl-gpt2-1gpu "$PLANS/gpt2-small-bf16-cuda.plan" cuda "$LOGS/data/gpt2" 12 || rc=1
    run_ranks nccl-gpt2-dp2 2 "$PLANS/gpt2-small-bf16-dp2-cuda.plan" 12 "$LOGS/data/gpt2" \
      --comm nccl || { echo "nccl gpt2 dp 2 failed:"; tail -5 "$LOGS/nccl-gpt2-dp2.log"; rc=1; }
    grep -h "collectives:\|buckets all-reduced" "$LOGS/nccl-gpt2-dp2.log" | sort -u | head -2
    "$PY" "$TOOLS" scaling "$LOGS/nccl-gpt2-1gpu.jsonl" "$LOGS/nccl-gpt2-dp2.jsonl" --gpus 2 \
      --tokens $((16 * 1024)) || rc=1
  fi
  # The same batch of 16 on tensor-parallel halves of every layer (tp 2:
  # Megatron's all-reduces after the attention and MLP blocks, on NCCL).
  if [ -f "$PLANS/gpt2-small-bf16-tp2-cuda.plan" ] && [ -f "$LOGS/nccl-gpt2-1gpu.jsonl" ]; then
    run_ranks nccl-gpt2-tp2 2 "$PLANS/gpt2-small-bf16-tp2-cuda.plan" 12 "$LOGS/data/gpt2" \
      --comm nccl || { echo "nccl gpt2 tp 2 failed:"; tail -5 "$LOGS/nccl-gpt2-tp2.log"; rc=1; }
    "$PY" "$TOOLS" scaling "$LOGS/nccl-gpt2-1gpu.jsonl" "$LOGS/nccl-gpt2-tp2.jsonl" --gpus 2 \
      --tokens $((16 * 1024)) --strong || rc=1
  fi
  return "$rc"
}

# Nsight Compute over the memory-bound kernels that cost the step most
# (bench/gpu/profile.sh; skipped without ncu).
do_profile() {
  local m
  m=$(locate cuda_memory_bench test/runtime/cuda)
  OUT=$LOGS/profile bash "$ROOT/bench/gpu/profile.sh" "$m"
}

do_torch() {
  [ -f "$ROOT/bench/gpu/torch_baseline.py" ] || { echo "no torch_baseline.py: skipped"; return 0; }
  PYTHONUNBUFFERED=1 timeout 420 "$PY" "$ROOT/bench/gpu/torch_baseline.py" --config gpt2-small \
    --modes "${MEGA_TORCH_MODES:-fp32,bf16,bf16-compile}" --json "$LOGS/torch.json" 2>&1 \
    | tee "$LOGS/torch.log"
  return "${PIPESTATUS[0]}"
}

# One timed GPT-2 small run of bench/gpu/plans/PLAN on the GPU when
# make_plans.sh made it: STEPS steps logged to LOGS/NAME.{log,jsonl}, added
# to the caller's runs as LABEL (in the report beside torch's).
time_plan() {
  local label=$1 name=$2 plan=$PLANS/$3 steps=$4 rc=0
  shift 4
  [ -f "$plan" ] || return 0
  run_mega "$name" "$plan" cuda "$LOGS/data/gpt2" "$steps" "$@" || rc=1
  runs+=("$label=$LOGS/$name.jsonl")
  return "$rc"
}

do_mega_timing() {
  MEGA_RUN=$(locate mega-run tools/mega-run)
  if [ ! -f "$PLANS/gpt2-small-bf16-cuda.plan" ]; then
    echo "no bench/gpu/plans/gpt2-small-bf16-cuda.plan (make_plans.sh): skipped"
    return 0
  fi
  [ -x "$MEGA_RUN" ] || { echo "no $MEGA_RUN (build failed?)"; return 1; }
  "$PY" "$TOOLS" data "$LOGS/data/gpt2" --vocab "$GPT2_VOCAB" --tokens "$GPT2_TOKENS" || return 1
  local rc=0 runs=()
  time_plan bf16 gpt2-bf16 gpt2-small-bf16-cuda.plan 12 || rc=1
  grep -h "replayed as a CUDA graph\|runs kernel by kernel\|mega-run: attention:" \
    "$LOGS/gpt2-bf16.log"
  # What fell back from cuBLASLt's epilogues or cuDNN in the timed step.
  grep -h "^cuda: cu" "$LOGS/gpt2-bf16.log" | sort | uniq -c
  # The run above timed cuBLASLt's candidates at each GEMM's first call
  # (mega-run's default); the heuristic's first instead
  # (--no-gemm-autotune); the timed choices kept in a file
  # (--gemm-autotune-file), then read back untimed: what a user's second
  # run gets.
  time_plan bf16-heuristic gpt2-bf16-heuristic gpt2-small-bf16-cuda.plan 12 \
    --no-gemm-autotune || rc=1
  time_plan bf16-autotune gpt2-bf16-tuned gpt2-small-bf16-cuda.plan 12 \
    --gemm-autotune-file "$LOGS/gpt2-choices.txt" || rc=1
  grep -h "cuda: autotune" "$LOGS/gpt2-bf16-tuned.log"
  # The default run and this one timed the same candidates: did they keep
  # the same ones? (Only the choices that are not the heuristic's first are
  # told; the times are left out of the comparison.)
  local k
  for k in gpt2-bf16 gpt2-bf16-tuned; do
    grep -h "cuda: autotune: the" "$LOGS/$k.log" | sed 's/: [0-9.-]* us, .*//' | sort \
      >"$LOGS/$k.choices"
  done
  if cmp -s "$LOGS/gpt2-bf16.choices" "$LOGS/gpt2-bf16-tuned.choices"; then
    echo "autotune: the two timings kept the same algorithms" \
      "($(wc -l <"$LOGS/gpt2-bf16.choices") not the heuristic's first)"
  else
    echo "autotune: the two timings kept different algorithms:"
    diff "$LOGS/gpt2-bf16.choices" "$LOGS/gpt2-bf16-tuned.choices" | grep '^[<>]'
  fi
  time_plan bf16-kept gpt2-bf16-kept gpt2-small-bf16-cuda.plan 12 \
    --gemm-autotune-file "$LOGS/gpt2-choices.txt" || rc=1
  # The weight gradients' products on a second stream, beside the backward
  # (--wgrad-stream), on the same kept GEMM choices as bf16-kept.
  time_plan bf16-wgrad gpt2-bf16-wgrad gpt2-small-bf16-cuda.plan 12 \
    --gemm-autotune-file "$LOGS/gpt2-choices.txt" --wgrad-stream || rc=1
  grep -h "replayed as a CUDA graph\|runs kernel by kernel" "$LOGS/gpt2-bf16-wgrad.log"
  # The same on the plan whose arena leaves each product's inputs unwritten
  # for 6 kernels (megac --wgrad-slack 6): 48 of the 52 weight gradients on the side stream.
  time_plan bf16-wslack gpt2-bf16-wslack gpt2-small-bf16-wslack-cuda.plan 12 \
    --gemm-autotune-file "$LOGS/gpt2-choices.txt" --wgrad-stream || rc=1
  grep -h "replayed as a CUDA graph\|runs kernel by kernel" "$LOGS/gpt2-bf16-wslack.log"
  # The same with both streams at one priority (the default: the main
  # stream above the side stream).
  MEGA_CUDA_SIDE_PRIORITY=0 time_plan bf16-wslack-samepri gpt2-bf16-wslack-samepri \
    gpt2-small-bf16-wslack-cuda.plan 12 --gemm-autotune-file "$LOGS/gpt2-choices.txt" \
    --wgrad-stream || rc=1
  # The wide search (--gemm-autotune-wide): more candidates per GEMM
  # (cuBLASLt's other algorithm ids, split-K forms of the products that
  # leave the GPU part idle), timed into a file of their own, then read
  # back untimed as bf16-kept reads the plain search's.
  time_plan bf16-wide gpt2-bf16-wide gpt2-small-bf16-cuda.plan 12 --gemm-autotune-wide \
    --gemm-autotune-file "$LOGS/gpt2-wide-choices.txt" || rc=1
  grep -h "cuda: autotune" "$LOGS/gpt2-bf16-wide.log"
  time_plan bf16-wide-kept gpt2-bf16-wide-kept gpt2-small-bf16-cuda.plan 12 \
    --gemm-autotune-file "$LOGS/gpt2-wide-choices.txt" || rc=1
  # Everything not yet the default at once: the wide search's kept choices
  # and the weight gradients on the side stream of the --wgrad-slack 6 plan.
  time_plan bf16-wide-wslack gpt2-bf16-wide-wslack gpt2-small-bf16-wslack-cuda.plan 12 \
    --gemm-autotune-wide --gemm-autotune-file "$LOGS/gpt2-wide-choices.txt" \
    --wgrad-stream || rc=1
  # MEGA_TIMING=all: the variants whose cost earlier runs measured (the
  # default keeps the timing segment within its time).
  if [ "${MEGA_TIMING:-}" = all ]; then
    # The bias gradients of c_attn and c_fc in cuBLASLt's bias-gradient
    # epilogue (--ones-column-bias-grad=false) instead of the column of ones.
    time_plan bf16-bgrad gpt2-bf16-bgrad gpt2-small-bf16-bgrad-cuda.plan 12 || rc=1
    # The column sums of LayerNormGrad's and ReduceSum's chunks one load at a
    # time (MEGA_CUDA_CHUNK_PREFETCH=0; the same bits).
    MEGA_CUDA_CHUNK_PREFETCH=0 time_plan bf16-noprefetch gpt2-bf16-noprefetch \
      gpt2-small-bf16-cuda.plan 12 || rc=1
    # The residual stream's gradient in f32 (--bf16-residual-grad=false).
    time_plan bf16-f32grad gpt2-bf16-f32grad gpt2-small-bf16-f32grad-cuda.plan 12 || rc=1
    # mega's own attention kernels instead of cuDNN's.
    time_plan bf16-localattn gpt2-bf16-local gpt2-small-bf16-cuda.plan 12 \
      --attention-backend local || rc=1
    # The same without CUDA graphs: what the launches cost.
    time_plan bf16-nograph gpt2-bf16-nograph gpt2-small-bf16-cuda.plan 12 --no-cuda-graph || rc=1
    # The backward's bias sums, dX product and GELU aux kept in f32.
    time_plan bf16-f32bwd gpt2-bf16-f32bwd gpt2-small-bf16-f32bwd-cuda.plan 12 || rc=1
    # The bias gradients as ReduceSums (no cuBLASLt bias-gradient epilogue).
    time_plan bf16-nobgrad gpt2-bf16-nobgrad gpt2-small-bf16-nobgrad-cuda.plan 12 || rc=1
    # The residual stream in f32 (--fp32-residual-connection, as autocast).
    time_plan bf16-f32residual gpt2-bf16-f32res gpt2-small-bf16-f32res-cuda.plan 12 || rc=1
    # The biases in f32 (--bf16-bias=false): c_attn's and c_fc's products
    # without cuBLASLt's bias epilogues (the plain product + mega's kernel).
    time_plan bf16-f32bias gpt2-bf16-f32bias gpt2-small-bf16-f32bias-cuda.plan 12 || rc=1
    # The output layer on all rows at once (no row blocks: 1.24 GB more arena).
    time_plan bf16-whole gpt2-bf16-whole gpt2-small-bf16-whole-cuda.plan 12 || rc=1
  fi
  time_plan fp32 gpt2-fp32 gpt2-small-cuda.plan 8 || rc=1
  for r in "${runs[@]}"; do
    printf 'mega gpt2-small %-5s ' "${r%%=*}"
    "$PY" "$TOOLS" timing "${r#*=}" --warmup 2
  done
  echo "GPT-2 small (B 16, S 1024), the same run:"
  "$PY" "$TOOLS" report "$LOGS/torch.json" "${runs[@]}" --tokens $((16 * 1024)) || rc=1
  # One traced run: every kernel synchronised and timed (step 2 of 2).
  run_mega gpt2-bf16-trace "$PLANS/gpt2-small-bf16-cuda.plan" cuda "$LOGS/data/gpt2" 2 \
    --trace "$LOGS/gpt2-bf16-trace.json" || rc=1
  "$PY" "$TOOLS" breakdown "$LOGS/gpt2-bf16-trace.json" || rc=1
  # The same on the wide search's kept choices: which shapes its algorithms
  # moved (the MatMuls by shape, beside the table above).
  if [ -s "$LOGS/gpt2-wide-choices.txt" ]; then
    echo "the same on the wide search's kept choices (--gemm-autotune-wide):"
    run_mega gpt2-bf16-wide-trace "$PLANS/gpt2-small-bf16-cuda.plan" cuda "$LOGS/data/gpt2" 2 \
      --gemm-autotune-file "$LOGS/gpt2-wide-choices.txt" \
      --trace "$LOGS/gpt2-bf16-wide-trace.json" || rc=1
    "$PY" "$TOOLS" breakdown "$LOGS/gpt2-bf16-wide-trace.json" || rc=1
  fi
  if [ "${MEGA_TIMING:-}" = all ] && [ -f "$PLANS/gpt2-small-bf16-f32grad-cuda.plan" ]; then
    echo "the same with --bf16-residual-grad=false (kernels only):"
    run_mega gpt2-bf16-f32grad-trace "$PLANS/gpt2-small-bf16-f32grad-cuda.plan" cuda \
      "$LOGS/data/gpt2" 2 --trace "$LOGS/gpt2-bf16-f32grad-trace.json" || rc=1
    "$PY" "$TOOLS" breakdown "$LOGS/gpt2-bf16-f32grad-trace.json" | sed '/^MatMul by shape/,$d' || rc=1
  fi
  if [ "${MEGA_TIMING:-}" = all ] && [ -f "$PLANS/gpt2-small-bf16-bgrad-cuda.plan" ]; then
    echo "the same with --ones-column-bias-grad=false:"
    run_mega gpt2-bf16-bgrad-trace "$PLANS/gpt2-small-bf16-bgrad-cuda.plan" cuda \
      "$LOGS/data/gpt2" 2 --trace "$LOGS/gpt2-bf16-bgrad-trace.json" || rc=1
    "$PY" "$TOOLS" breakdown "$LOGS/gpt2-bf16-bgrad-trace.json" || rc=1
  fi
  return "$rc"
}

note "mega GPU check in $ROOT, logs in $LOGS"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
else
  note "nvidia-smi not found"
fi
step build do_build
step twin do_twin
step kernels do_kernels
step train do_train
step nccl do_nccl
step ranks do_ranks
step nccl-ranks do_nccl_ranks
step torch do_torch
step mega-timing do_mega_timing
step profile do_profile
if [ ${#FAILED[@]} -eq 0 ]; then
  note "ALL STEPS PASSED"
  exit 0
fi
note "FAILED STEPS: ${FAILED[*]}"
exit 1

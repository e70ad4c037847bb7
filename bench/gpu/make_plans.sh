#!/usr/bin/env bash
# Compiles the plans that bench/gpu/check.sh runs (the GPU machine has no MLIR, so
# no megac): run this where megac is built, then carry bench/gpu/plans/ along.
#
#   bench/gpu/make_plans.sh [path/to/megac]     (default: build/bin/megac)
#
#   gpt-small-{cpu,cuda}.plan   the cpu-small model (layers 4, hidden 256, heads 4,
#                               vocab 8192, seq 128, micro-batch 8), AdamW, clip 1.0:
#                               trained on both devices and the losses compared
#   gpt-small-bf16-{cpu,cuda}.plan  the same in --precision bf16 (the CPU emulates bf16;
#                               the residual stream and its gradient bf16, megac's default;
#                               every bf16 pair is given --ones-column-bias-grad, cuda's
#                               default, so that the CPU plan is the GPU's)
#   gpt-small-bf16f32grad-{cpu,cuda}.plan  the same with --bf16-residual-grad=false
#                               (the residual stream's gradient f32; bf16 by default)
#   gpt-small-bf16f32res-{cpu,cuda}.plan  the same with --fp32-residual-connection (the
#                               residual stream f32, as under autocast)
#   gpt-small-bf16bgrad-{cpu,cuda}.plan  the same with --ones-column-bias-grad=false
#                               (c_attn's and c_fc's bias gradients in cuBLASLt's
#                               bias-gradient epilogue, as before the column of ones)
#   gpt2-small-cuda.plan        GPT-2 small fp32 (12 x 768, 12 heads, vocab 50304,
#                               seq 1024, micro-batch 16): timed against PyTorch
#   gpt2-small-bf16-cuda.plan   GPT-2 small --precision bf16: timed against PyTorch bf16
#                               (c_attn's and c_fc's bias gradients from a column of
#                               ones: megac's default for cuda bf16)
#   gpt2-small-bf16-f32bwd-cuda.plan  the same with --bf16-reductions=false
#                               --bf16-products=false (the backward's bias sums, the
#                               MLP's dX product and GELU's aux in f32): what those
#                               two rules save, timed in the same run
#   gpt2-small-bf16-whole-cuda.plan  the same with --max-logits-mib 0: the output layer
#                               on all 16384 rows at once (1.65 GB of logits) instead of
#                               4 row blocks: what the blocks cost in time, same run
#   gpt2-small-bf16-nobgrad-cuda.plan  the same with --fuse-bias-grad=false: c_fc's and
#                               c_attn's bias gradients as ReduceSums instead of cuBLASLt's
#                               bias-gradient epilogue on the weight gradient: timed, same run
#   gpt2-small-bf16-bgrad-cuda.plan  the same with --ones-column-bias-grad=false: c_attn's
#                               and c_fc's bias gradients in cuBLASLt's bias-gradient
#                               epilogue instead of one more row of their weight
#                               gradients' products: timed, same run
#   gpt2-small-bf16-f32grad-cuda.plan  the same with --bf16-residual-grad=false (the
#                               residual stream's gradient f32: the norms' gradients
#                               read and write it in f32 and write a bf16 copy): timed,
#                               same run
#   gpt2-small-bf16-f32res-cuda.plan  the same with --fp32-residual-connection (the
#                               residual stream f32, as under autocast): timed, same run
#   gpt2-small-bf16-f32bias-cuda.plan  the same with --bf16-bias=false: the f32 biases
#                               that cuBLASLt's bias epilogues refuse with a bf16 D (the
#                               plain product and mega's epilogue kernel): timed, same run
#   gpt2-small-bf16-wslack-cuda.plan  the same with --wgrad-slack 6: the buffers
#                               each weight gradient's product reads left
#                               unwritten by the 6 kernels after it, so that
#                               mega-run --wgrad-stream runs 48 of the 52
#                               beside the backward (the same arena): timed,
#                               same run
#   gpt2-small-bf16-dp2-cuda.plan  the same at --dp 2 (global batch 32), and
#   gpt2-small-bf16-tp2-cuda.plan  at --tp 2 (global batch 16): check.sh's
#                               nccl-ranks step, on two GPUs
#   ranks-*-cuda.plan           the cpu-small model at dp 2, pp 2, pp 2 x dp 2, pp 2
#                               interleaved, tp 2, tp 2 x pp 2, dp 2 with the
#                               distributed optimizer and tp 2 x dp 2 with sequence
#                               parallelism, and its one-process reference:
#                               run on MPI ranks sharing the GPU, losses compared
#   plans.env                   the vocab sizes check.sh draws its random tokens from
# It also readies build-deps/ for the GPU machine's build (carry it too): the cuDNN
# frontend's headers (scripts/fetch_cudnn_frontend.sh) and, in build-deps/cudnn/include,
# this toolkit's cudnn*.h, used there when the machine has no cudnn.h of its own.
set -eu
cd "$(dirname "$0")/../.." || exit 1
MEGAC=${1:-build/bin/megac}
OUT=bench/gpu/plans
mkdir -p "$OUT"
scripts/fetch_cudnn_frontend.sh
if ls /usr/local/cuda/include/cudnn*.h >/dev/null 2>&1; then
  mkdir -p build-deps/cudnn/include
  cp /usr/local/cuda/include/cudnn*.h build-deps/cudnn/include/
fi
SMALL=(--set layers=4 --set hidden=256 --set heads=4 --set vocab=8192 --set seq=128
       --micro-batch-size 8 --global-batch-size 8 --optimizer adam --weight-decay 0.01
       --clip-grad 1.0 --lr 1e-3)
GPT2=(--set layers=12 --set hidden=768 --set heads=12 --set vocab=50304 --set seq=1024
      --micro-batch-size 16 --global-batch-size 16 --optimizer adam --weight-decay 0.1
      --clip-grad 1.0 --lr 6e-4)
BF16=(--precision bf16 --ones-column-bias-grad)
for t in cpu cuda; do
  "$MEGAC" models/gpt.mlir -o "$OUT/gpt-small-$t.plan" "${SMALL[@]}" --target "$t"
  "$MEGAC" models/gpt.mlir -o "$OUT/gpt-small-bf16-$t.plan" "${SMALL[@]}" --target "$t" \
    "${BF16[@]}"
  "$MEGAC" models/gpt.mlir -o "$OUT/gpt-small-bf16f32res-$t.plan" "${SMALL[@]}" \
    --target "$t" "${BF16[@]}" --fp32-residual-connection
  "$MEGAC" models/gpt.mlir -o "$OUT/gpt-small-bf16f32grad-$t.plan" "${SMALL[@]}" \
    --target "$t" "${BF16[@]}" --bf16-residual-grad=false
  "$MEGAC" models/gpt.mlir -o "$OUT/gpt-small-bf16bgrad-$t.plan" "${SMALL[@]}" \
    --target "$t" --precision bf16 --ones-column-bias-grad=false
done
# Several MPI ranks sharing the GPU (the collectives go through host memory):
# data parallelism with overlapped buckets, 1F1B, both, and interleaved, each
# against one process, 4 micro-batches of 4 per step.
RANKS=(--set layers=4 --set hidden=256 --set heads=4 --set vocab=8192 --set seq=128
       --micro-batch-size 4 --global-batch-size 16 --target cuda)
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-ref-cuda.plan" "${RANKS[@]}"
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-dp2-cuda.plan" "${RANKS[@]}" --dp 2 --ddp-bucket-size 300000
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-pp2-cuda.plan" "${RANKS[@]}" --pp 2
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-pp2dp2-cuda.plan" "${RANKS[@]}" --pp 2 --dp 2 \
  --ddp-bucket-size 300000
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-pp2vpp2-cuda.plan" "${RANKS[@]}" --pp 2 --vpp 2 \
  --schedule interleaved
# Tensor parallelism (the vocabulary-parallel embedding and loss kernels), with
# 1F1B, and the distributed optimizer (AdamW on this rank's block of each
# parameter between a reduce-scatter, started in buckets during the backward,
# and an AllGather).
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-tp2-cuda.plan" "${RANKS[@]}" --tp 2
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-tp2pp2-cuda.plan" "${RANKS[@]}" --tp 2 --pp 2
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-dp2do-cuda.plan" "${RANKS[@]}" --dp 2 \
  --use-distributed-optimizer --ddp-bucket-size 300000
# Sequence parallelism with data parallelism: the norms' and biases' gradient
# terms summed over the tensor group once a step, after the data buckets.
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-tp2spdp2-cuda.plan" "${RANKS[@]}" --tp 2 \
  --sequence-parallel --dp 2 --ddp-bucket-size 300000
# bf16 layouts: pipelines with the stream crossing stages in bf16 and
# attention's projection and o stashed once in bf16 (mega-port-sources,
# mega-narrow-ports), and sequence parallelism.
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-bf16-ref-cuda.plan" "${RANKS[@]}" --precision bf16
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-bf16-pp2-cuda.plan" "${RANKS[@]}" --precision bf16 \
  --pp 2
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-bf16-tp2pp2-cuda.plan" "${RANKS[@]}" --precision bf16 \
  --tp 2 --pp 2
# Tensor parallelism in bf16: c_attn's and c_fc's bias gradients from the
# column of ones (cuda bf16's default) on each rank's columns.
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-bf16-tp2-cuda.plan" "${RANKS[@]}" --precision bf16 \
  --tp 2
# Sequence parallelism in bf16: the norms' rows all-gathered in bf16.
"$MEGAC" models/gpt.mlir -o "$OUT/ranks-bf16-tp2sp-cuda.plan" "${RANKS[@]}" --precision bf16 \
  --tp 2 --sequence-parallel
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-cuda.plan" "${GPT2[@]}" --target cuda
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-cuda.plan" "${GPT2[@]}" --target cuda \
  --precision bf16
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-f32bwd-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --bf16-reductions=false --bf16-products=false
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-whole-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --max-logits-mib 0
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-nobgrad-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --fuse-bias-grad=false
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-f32res-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --fp32-residual-connection
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-f32bias-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --bf16-bias=false
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-f32grad-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --bf16-residual-grad=false
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-bgrad-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --ones-column-bias-grad=false
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-wslack-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --wgrad-slack 6
# Data parallelism over two GPUs (check.sh's nccl-ranks step, where there are
# two): a micro-batch of 16 on each, so each GPU does the one-GPU step's work
# (and the column of ones' products go through scratch and 24 more Copies:
# the data-parallel buckets place the gradients back to back, without tails).
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-dp2-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --dp 2 --global-batch-size 32
# Tensor parallelism over two GPUs: the same batch of 16, each layer's
# products split in halves (column- then row-parallel) with an all-reduce
# after each block.
"$MEGAC" models/gpt.mlir -o "$OUT/gpt2-small-bf16-tp2-cuda.plan" "${GPT2[@]}" \
  --target cuda --precision bf16 --tp 2
printf 'SMALL_VOCAB=8192\nSMALL_TOKENS=%d\nGPT2_VOCAB=50304\nGPT2_TOKENS=%d\n' \
  $((8 * 128 * 24 + 129)) $((16 * 1024 * 14 + 1025)) > "$OUT/plans.env"
ls -l "$OUT"

#!/usr/bin/env bash
# The main job: set up and build, prepare the Jane Austen corpus, compile GPT
# with tensor parallelism 2 and pipeline parallelism 2, train it on 4 MPI ranks
# on the CPU, compare its validation loss with a unigram model's, and generate
# text from a prompt (one process, a --tp 1 --pp 1 plan of the same model
# reading the consolidated checkpoint). Idempotent: the corpus is reused, and
# so is the trained checkpoint when the plan and step count are unchanged.
#   MEGA_STEPS (default 300)   MEGA_THREADS (threads per rank; default
#   nproc / 4, at least 1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEGA_BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
bin=$build/bin
data=$root/data
runs=$root/runs/gpt-austen
steps=${MEGA_STEPS:-300}
ranks=4 # tp 2 x pp 2
threads=${MEGA_THREADS:-$(( $(nproc) / ranks > 0 ? $(nproc) / ranks : 1 ))}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
# mpirun as root, and more ranks than cores on small machines.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$data" "$runs"

if [ ! -f "$data/austen_train.idx" ]; then
  "$bin/mega-data" --corpus austen --output-prefix "$data/austen" --vocab-size 8192
fi
"$bin/mega-data" --info "$data/austen_train"
"$bin/mega-data" --info "$data/austen_valid"

# Training: Megatron's layout on 4 ranks (heads split over 2 tensor ranks, the
# layers cut into 2 pipeline stages, 1F1B over 4 micro-batches of 2), the
# same global batch of 8 sequences, and so the same training run, as one
# process. Generation: the same model as one program.
model=(--set layers=4 --set hidden=256 --set heads=4 --set vocab=8192 --set seq=128)
"$bin/megac" "$root/models/gpt.mlir" -o "$runs/gpt.plan" "${model[@]}" \
  --tp 2 --pp 2 --schedule 1f1b --micro-batch-size 2 --global-batch-size 8 --lr 1e-3
"$bin/megac" "$root/models/gpt.mlir" -o "$runs/generate.plan" "${model[@]}" \
  --micro-batch-size 1

# Training is skipped when a checkpoint of this many steps is already there
# (delete runs/ to train afresh).
done_steps=$(cat "$runs/ckpt/latest_checkpointed_iteration.txt" 2>/dev/null || echo 0)
if [ "$done_steps" = "$steps" ] && cmp -s "$runs/gpt.plan" "$runs/trained.plan"; then
  echo "demo: reusing the checkpoint of $steps steps in $runs/ckpt"
else
  rm -rf "$runs/ckpt"
  mpirun -np $ranks "$bin/mega-run" "$runs/gpt.plan" --data "$data/austen_train" --steps "$steps" \
    --lr 1e-3 --lr-schedule cosine --warmup 20 --min-lr 1e-4 --seed 1234 \
    --log-interval 10 --log-file "$runs/log.jsonl" \
    --eval-interval 100 --eval-data "$data/austen_valid" --eval-iters 80 \
    --save "$runs/ckpt" --save-interval 100
  cp "$runs/gpt.plan" "$runs/trained.plan"
fi
grep '"validation_loss"' "$runs/log.jsonl" | tail -1

/usr/bin/python3 "$root/scripts/unigram_entropy.py" "$data/austen_train" "$data/austen_valid" 8192

# Three samples; each stops at the end of a paragraph (the tokenizer's EOS)
# or after 60 tokens.
for seed in 1 2 3; do
  "$bin/mega-run" "$runs/generate.plan" --generate --load "$runs/ckpt" \
    --tokenizer-model "$data/austen.model" --prompt "It is a truth universally acknowledged" \
    --max-new-tokens 60 --temperature 0.8 --top-k 40 --seed "$seed"
done

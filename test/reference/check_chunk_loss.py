#!/usr/bin/env python3
"""A plan whose output layer, loss and their gradients run on row blocks
(megac's mega-chunk-loss, --max-logits-mib) trains like the plan that
computes all rows at once (--max-logits-mib=0) on the CPU. Not to the bit:
each block's loss share is added in float, and the tied embedding's
gradient sums the blocks' products one after the other. Checked for fp32
and bf16 plans with logits of 4 and 2 MiB and a 0.5 MiB limit (8 and 4
blocks).

  check_chunk_loss.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe

SIZES = ["--set", "layers=2", "--set", "hidden=64", "--set", "heads=2",
         "--set", "vocab=8192", "--set", "seq=64", "--micro-batch-size", "2",
         "--global-batch-size", "4", "--optimizer", "adam", "--clip-grad", "1.0"]
BLOCKS = {"fp32": 8, "bf16": 4}


def arena(text):
    return int(re.search(r'program "train" .*arena=(\d+)', text).group(1))


def counts(precision, chunked, whole):
    c = pe.kernels(chunked, "CrossEntropyWithGrad")
    w = pe.kernels(whole, "CrossEntropyWithGrad")
    ca, wa = arena(chunked), arena(whole)
    # The arena holds one block's logits (its dlogits over them) instead of
    # all rows': most of the difference must go (other buffers may take a
    # little of the freed room).
    logits = 128 * 8192 * (4 if precision == "fp32" else 2)
    saves = logits - logits // BLOCKS[precision]
    if w != 1 or c != BLOCKS[precision]:
        wrong = "the output layer was not split into row blocks"
    elif wa - ca < 0.9 * saves:
        wrong = (f"the train arena shrank by {wa - ca} bytes, less than 90% "
                 f"of the {saves} the blocks free")
    else:
        wrong = None
    return (f"CrossEntropyWithGrad kernels: {c} with --max-logits-mib=0.5, "
            f"{w} with 0; train arena {ca} bytes against {wa}", wrong)


if __name__ == "__main__":
    # Tolerances: the difference is the float rounding of the block sums,
    # carried through 3 AdamW steps (measured: fp32 5e-8 in the loss, grad
    # norms equal; bf16 2.3e-7 in a grad norm, where bf16 weight copies can
    # round weights those ulps apart to neighbouring values): 20x and 40x
    # that.
    pe.main("--max-logits-mib", counts, seed=13, values=("0.5", "0"),
            sizes=SIZES, rtol={"fp32": 1e-6, "bf16": 1e-5})

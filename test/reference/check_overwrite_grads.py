#!/usr/bin/env python3
"""megac's mega-overwrite-grads: with one micro-batch per step, the first
kernel to add into each gradient overwrites it and the optimizer no longer
clears the gradients. 0 + x is x, so the plan trains to the same bits on the
CPU as the plan that clears them (--overwrite-grads=false), fp32 and bf16;
the pass must have turned the optimizer's clearing off.

  check_overwrite_grads.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe

# One micro-batch per step (the pass's condition): global batch = micro-batch.
SIZES = [a if a != "4" else "2" for a in pe.SIZES]


def clearing(text):
    """AdamWMulti kernels that clear the gradients (zero_grads = 1) and the
    ones that do not."""
    flags = re.findall(r"AdamWMulti\([^)]*\) i=\[\d+,(\d)", text)
    return flags.count("1"), flags.count("0")


def overwrites(text):
    """Gradient-writing MatMuls of the train program that overwrite (beta 0)
    and that add (beta 1)."""
    m = re.search(r'^program "train"[^\n]*\{\n(.*?)^\}', text, re.M | re.S)
    betas = re.findall(r"MatMul\([^)]*\) i=\[[^\]]*\] f=\[[^,\]]+,([^\]]+)\]",
                       m.group(1) if m else "")
    return betas.count("0"), betas.count("1")


def counts(precision, on, off):
    on_clear, on_keep = clearing(on)
    off_clear, _ = clearing(off)
    on_over, on_add = overwrites(on)
    off_over, _ = overwrites(off)
    summary = (f"optimizer clearing the gradients: {on_clear} with the pass, "
               f"{off_clear} without; products overwriting: {on_over} with, "
               f"{off_over} without ({on_add} still adding)")
    wrong = None
    if off_clear == 0 or on_clear != 0 or on_keep == 0:
        wrong = "the optimizer still clears the gradients"
    elif on_over <= off_over:
        wrong = "no gradient product overwrites"
    return summary, wrong


if __name__ == "__main__":
    assert "--global-batch-size" in pe.SIZES
    pe.main("--overwrite-grads", counts, sizes=SIZES, seed=11)

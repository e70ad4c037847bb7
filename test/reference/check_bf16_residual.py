#!/usr/bin/env python3
"""`megac --bf16-residual` (the residual stream stored in bf16, Megatron's
bf16 default): with mega-fold-casts the kernels that read the stream widen
it on load (LayerNorm's x, LayerNormGrad's x, the residual of the MatMul
epilogue that adds it) and the MatMul that adds it writes bf16; without,
Cast kernels do both. The two plans must train to the same bits on the CPU,
and the folded one must read the stream in bf16 with no Cast left for it.
(reference.gpt.bf16-residual holds the same flag against PyTorch.)

  check_bf16_residual.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe


def bf16_norm_inputs(text):
    """How many LayerNorm instructions of the train program read a bf16 x."""
    m = re.search(r'^program "train"[^\n]*\{\n(.*?)^\}', text, re.M | re.S)
    body = m.group(1) if m else ""
    types = dict(re.findall(r"^\s*%(\d+) = \S+ : \S+x(\w+)$", body, re.M))
    xs = re.findall(r"= LayerNorm\(%(\d+),", body)
    return sum(types.get(x) == "bf16" for x in xs), len(xs)


def counts(precision, folded, casts):
    on, off = pe.kernels(folded, "Cast"), pe.kernels(casts, "Cast")
    bf16_x, norms = bf16_norm_inputs(folded)
    summary = (f"Cast kernels: {on} folded, {off} with --fold-casts=false; "
               f"{bf16_x} of {norms} LayerNorms read a bf16 x")
    wrong = None
    if on >= off:
        wrong = "no cast was folded"
    elif norms == 0 or bf16_x != norms:
        wrong = "a LayerNorm still reads an f32 residual stream"
    return summary, wrong


if __name__ == "__main__":
    pe.main("--fold-casts", counts, precisions=("bf16",), seed=7,
            extra=("--bf16-residual", "--bf16-bias=false"))

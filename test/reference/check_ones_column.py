#!/usr/bin/env python3
"""`megac --ones-column-bias-grad` (mega-ones-column): a Linear fed by a
LayerNorm takes its bias gradient from a column of ones the norm writes
beside its output, as one more row of the weight gradient's product,
instead of the product's bias-gradient epilogue (ReduceSum's sums on the
CPU). The plan must pad every such norm (c_attn's and c_fc's: two a layer)
and drop their 4 bias-gradient epilogues (fp32 keeps the projections'), and train on the CPU within a
tolerance of the plan without the flag: only the bias gradients' summation
order differs (the product's f32 sum against ReduceSum's double partials).
Two micro-batches a step, so the rows are added into the gradients (an
Elementwise add); reference.gpt.ones-column holds the one-micro-batch form
(a Copy) against PyTorch.

  check_ones_column.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe

# Measured on this check's model and data: the losses and grad norms of the
# 3 steps come out bit for bit the same in fp32 and bf16, while the first
# step's c_attn and c_fc bias gradients differ in up to 199 of their
# elements by at most 1.8e-7 of their largest (fp32; bf16 6 elements,
# 6.5e-11). The tolerance allows such last-bit differences to grow over
# the steps with another BLAS's summation order.
RTOL = {"fp32": 1e-5, "bf16": 1e-5}


def train_body(text):
    m = re.search(r'^program "train"[^\n]*\{\n(.*?)^\}', text, re.M | re.S)
    return m.group(1) if m else ""


def counts(precision, on, off):
    on, off = train_body(on), train_body(off)
    padded = len(re.findall(r"= LayerNorm\([^)]*\) i=\[\d+,\d+,\d+\]", on))
    padded_off = len(re.findall(r"= LayerNorm\([^)]*\) i=\[\d+,\d+,\d+\]", off))
    bgrad = lambda t: len(re.findall(r"= MatMul\([^)]*\) i=\[(?:-?\d+,){12}5,", t))
    summary = (f"padded LayerNorms {padded} ({padded_off} without the flag), "
               f"bias-gradient epilogues {bgrad(on)} ({bgrad(off)})")
    wrong = None
    if padded != 4 or padded_off != 0:
        wrong = "the flag did not pad the 4 norms that feed c_attn and c_fc"
    elif bgrad(off) - bgrad(on) != 4:
        wrong = "the 4 norm-fed Linears kept their bias-gradient epilogues"
    return summary, wrong


if __name__ == "__main__":
    pe.main("--ones-column-bias-grad", counts, seed=13, rtol=RTOL)

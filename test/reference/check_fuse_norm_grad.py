#!/usr/bin/env python3
"""A plan whose LayerNormGrads add dx into the residual gradient, write its
bf16 copy and add dw/db into the gradients themselves (megac's
mega-fuse-norm-grad) trains to the same bits on the CPU as the plan with the
separate Elementwise adds and Cast (--fuse-norm-grad=false): the fused
kernel computes the same values in the same order. In bf16 plans the norms
also sum their copy's columns into the Linear bias gradients (their 5th
output) in place of the ReduceSums that read the copy. Checked for fp32 and
bf16 plans.

  check_fuse_norm_grad.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe

# A LayerNormGrad's integer attributes: rows, cols, accumulate(, acc_wb(,
# dsum accumulate)).
NORM = re.compile(
    r"= LayerNormGrad\([^)]*\) i=\[(\d+),(\d+),(\d)(?:,(\d))?(?:,(\d))?\]")


def norms(text):
    """(norms, accumulating into dx, accumulating dw/db, summing the copy)
    of the plan text."""
    found = NORM.findall(text)
    return (len(found), sum(f[2] == "1" for f in found),
            sum(f[3] == "1" for f in found), sum(f[4] != "" for f in found))


def counts(precision, fused, plain):
    f, p = norms(fused), norms(plain)
    ew = (pe.kernels(fused, "Elementwise"), pe.kernels(plain, "Elementwise"))
    rs = (pe.kernels(fused, "ReduceSum"), pe.kernels(plain, "ReduceSum"))
    # Two layers: ln_1, ln_2 twice and ln_f, in each train program. Every
    # norm adds its dw/db (2 Elementwise kernels each go); all but ln_f add
    # dx into the residual gradient (one more each). In bf16 every norm but
    # the first layer's ln_1 (whose dx goes to the embeddings) has a Linear's
    # bias gradient summed from its copy: those ReduceSums go.
    n = f[0]
    sums = n - n // 5 if precision == "bf16" else 0
    wrong = (n < 5 or p[0] != n or f[2] != n or f[1] != n - n // 5 or
             p[1] != 0 or p[2] != 0 or p[3] != 0 or f[3] != sums or
             rs[1] - rs[0] != sums or ew[1] - ew[0] != 2 * n + f[1])
    return (f"LayerNormGrad (all, acc, acc_wb, dsum) {f} fused, {p} with "
            f"--fuse-norm-grad=false; Elementwise kernels {ew[0]} vs {ew[1]}, "
            f"ReduceSum {rs[0]} vs {rs[1]}",
            "the norms' gradients were not fused" if wrong else None)


if __name__ == "__main__":
    # mega-fuse-bias-grad would take the ReduceSums the norms leave (and,
    # with this pass off, those they take): held off to count this pass's.
    pe.main("--fuse-norm-grad", counts, seed=13, extra=["--fuse-bias-grad=false"])

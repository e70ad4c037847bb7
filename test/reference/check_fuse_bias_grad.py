#!/usr/bin/env python3
"""A plan whose weight-gradient MatMuls also sum their B operand's columns
into the Linear's bias gradient (megac's mega-fuse-bias-grad, MatMul
epilogue 5) trains to the same bits on the CPU as the plan with the separate
ReduceSums (--fuse-bias-grad=false): the CPU computes the product and then
ReduceSum's very sums. Checked for fp32 and bf16 plans.

  check_fuse_bias_grad.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe

# A MatMul's integer attributes; epilogue 5 has 14 (…, 5, accumulate).
BIAS_GRAD = re.compile(r"= MatMul\([^)]*\) i=\[(?:-?\d+,){12}5,1\]")


def counts(precision, fused, plain):
    fm = len(BIAS_GRAD.findall(fused))
    pm = len(BIAS_GRAD.findall(plain))
    rs = (pe.kernels(fused, "ReduceSum"), pe.kernels(plain, "ReduceSum"))
    # Two layers. In bf16 the norms already sum c_proj's and the MLP
    # projection's bias gradients (mega-fuse-norm-grad), leaving c_attn's
    # and c_fc's: 2 per layer. In fp32 all four Linears' ReduceSums remain
    # for this pass: 4 per layer. Each fused one is one ReduceSum fewer.
    want = 4 if precision == "bf16" else 8
    wrong = fm != want or pm != 0 or rs[1] - rs[0] != fm
    return (f"MatMuls summing a bias gradient: {fm} fused, {pm} with "
            f"--fuse-bias-grad=false; ReduceSum kernels {rs[0]} vs {rs[1]}",
            "the bias gradients were not fused" if wrong else None)


if __name__ == "__main__":
    pe.main("--fuse-bias-grad", counts, seed=17)

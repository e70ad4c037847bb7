#!/usr/bin/env python3
"""A plan whose Linears compute bias, residual and GELU in the MatMul's
epilogue (megac's mega-fuse-epilogues) trains to the same bits on the CPU as
the plan with an Elementwise kernel after each MatMul (--fuse-epilogues=false):
the CPU epilogue does the Elementwise's adds in its order and the same GELU.
Checked for fp32 and bf16 plans (bf16: the epilogue's D also rounds on store
after mega-fold-casts).

  check_fuse_epilogues.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe


def epilogues(text):
    """MatMuls whose i lists 13 values: those with an epilogue."""
    return len(re.findall(r"= MatMul\([^)]*\) i=\[(?:-?\d+,){12}[1234]\]", text))


def counts(precision, fused, plain):
    ews = pe.kernels(fused, "Elementwise"), pe.kernels(plain, "Elementwise")
    epis = epilogues(fused), epilogues(plain)
    # Per layer: c_attn (bias), attn proj and mlp proj (residual), c_fc
    # (GELU), in the train, eval and predict programs alike; the train
    # program adds the GELU gradient (epilogue 4).
    wrong = epis[1] != 0 or epis[0] < 4 * 2 or ews[0] >= ews[1]
    return (f"Elementwise kernels {ews[0]} fused, {ews[1]} with "
            f"--fuse-epilogues=false; MatMuls with an epilogue {epis[0]}",
            "the Linears' epilogues were not fused" if wrong else None)


if __name__ == "__main__":
    # --bf16-bias=false: only a fused epilogue reads its bias in bf16
    # (check_bf16_bias.py checks that).
    pe.main("--fuse-epilogues", counts, seed=5, extra=("--bf16-bias=false",))

#!/usr/bin/env python3
"""A bf16 plan whose producers write the bf16 copies themselves (megac's
mega-fold-casts: Elementwise, Transpose, CrossEntropyGrad, LayerNorm,
Attention round on store) trains to the same bits on the CPU as the plan with
a Cast kernel for each (--fold-casts=false): rounding on store is exactly the
cast it replaces.

  check_fold_casts.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import pass_equivalence as pe


def counts(precision, folded, casts):
    on, off = pe.kernels(folded, "Cast"), pe.kernels(casts, "Cast")
    return (f"Cast kernels: {on} folded, {off} with --fold-casts=false",
            "no cast was folded" if on >= off else None)


if __name__ == "__main__":
    # --bf16-bias=false: without the folds a Linear's D stays f32 and
    # mega-bf16-bias would round no bias (check_bf16_bias.py checks it).
    pe.main("--fold-casts", counts, precisions=("bf16",), seed=5,
            extra=("--bf16-bias=false",))

#!/usr/bin/env python3
"""A plan whose train program computes the loss and its gradient in one
CrossEntropyWithGrad kernel (megac's mega-fuse-loss) trains to the same bits
on the CPU as the plan with CrossEntropy and CrossEntropyGrad apart
(--fuse-loss=false): the fused kernel is the two kernels' code, row by row
on the GPU. Checked for fp32 and bf16 plans (bf16: bf16 logits, the
gradient written over them).

  check_fuse_loss.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import pass_equivalence as pe


def counts(precision, fused, plain):
    f = (pe.kernels(fused, "CrossEntropyWithGrad"),
         pe.kernels(fused, "CrossEntropyGrad"))
    p = (pe.kernels(plain, "CrossEntropyWithGrad"),
         pe.kernels(plain, "CrossEntropyGrad"))
    # One per train program (the global batch is two micro-batches of one
    # train program); none with --fuse-loss=false.
    wrong = f[0] < 1 or f[1] != 0 or p[0] != 0 or p[1] < 1
    return (f"CrossEntropyWithGrad, CrossEntropyGrad kernels {f} fused, {p} "
            f"with --fuse-loss=false",
            "the loss and its gradient were not fused" if wrong else None)


if __name__ == "__main__":
    pe.main("--fuse-loss", counts, seed=11)

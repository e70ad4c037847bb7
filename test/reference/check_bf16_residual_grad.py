#!/usr/bin/env python3
"""`megac --bf16-residual-grad` (the residual stream's gradient stored in
bf16, as in Megatron's bf16 backward; the bf16 default): mega-fold-casts lets each
LayerNormGrad write its dx in bf16, and mega-fuse-norm-grad then has every
norm but the last one add its dx into that bf16 residual gradient in place
(the old value widened, the sum rounded) and sum its columns for the
Linear's bias gradient, as the Elementwise adds, Casts and ReduceSums of
--fuse-norm-grad=false do. The two plans must train to the same bits on the
CPU; the fused one must have every norm write a bf16 dx and no Cast left but
the one the embeddings' gradients read. (reference.gpt.bf16 holds it
against PyTorch, reference.gpt.bf16-f32-residual-grad the f32 gradient.)

  check_bf16_residual_grad.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe


def train_body(text):
    m = re.search(r'^program "train"[^\n]*\{\n(.*?)^\}', text, re.M | re.S)
    return m.group(1) if m else ""


def norm_grads(text):
    """(LayerNormGrads, those writing a bf16 dx, those accumulating into it)
    in the train program."""
    body = train_body(text)
    types = dict(re.findall(r"^\s*%(\d+) = \S+ : \S+x(\w+)$", body, re.M))
    found = re.findall(r"^\s*%(\d+),[^=]*= LayerNormGrad\([^)]*\) "
                       r"i=\[\d+,\d+,(\d)", body, re.M)
    return (len(found), sum(types.get(dx) == "bf16" for dx, _ in found),
            sum(acc == "1" for _, acc in found))


def counts(precision, fused, plain):
    n, bf16_dx, acc = norm_grads(fused)
    casts = pe.kernels(train_body(fused), "Cast")
    summary = (f"{n} LayerNormGrads, {bf16_dx} writing a bf16 dx, {acc} "
               f"adding it into the residual gradient; {casts} Cast kernel(s) "
               f"in train (fused), {pe.kernels(train_body(plain), 'Cast')} "
               f"with --fuse-norm-grad=false")
    wrong = None
    if n < 5 or bf16_dx != n or acc != n - n // 5:
        wrong = "not every norm writes (and, but ln_f, adds into) a bf16 dx"
    elif casts != 1:
        wrong = "a Cast of the residual gradient is left besides the embeddings'"
    return summary, wrong


if __name__ == "__main__":
    pe.main("--fuse-norm-grad", counts, precisions=("bf16",), seed=11,
            extra=("--bf16-residual-grad",))

#!/usr/bin/env python3
"""A plan whose attention kernels read q, k, v from the fused projection's
[B, S, 3, H, hd] output and write o (and read dout) as [B, S, H, hd]
(megac's mega-fold-attention-layout: no Transposes around attention) trains
to the same bits on the CPU as the plan with the Transposes
(--fold-attention-layout=false): the CPU kernel gathers each head's rows
into the contiguous slice the unfolded plan computes on, and AttentionGrad
scatters dq, dk, dv into the [B, S, 3, H, hd] buffer the unfolded plan's
join Transpose fills. Checked for fp32 and bf16 plans; the folded plans
must have no Transpose kernel left (GPT moves heads only around attention).

  check_fold_attention_layout.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import pass_equivalence as pe


def counts(precision, folded, plain):
    on = pe.kernels(folded, "Transpose"), pe.kernels(folded, "Cast")
    off = pe.kernels(plain, "Transpose"), pe.kernels(plain, "Cast")
    return (f"Transpose, Cast kernels {on} folded, {off} with "
            f"--fold-attention-layout=false",
            f"{on[0]} Transpose kernels are left" if on[0] or not off[0]
            else None)


if __name__ == "__main__":
    # --bf16-bias=false: without the fold c_attn's D stays f32 for the head
    # Transposes, so mega-bf16-bias would round its bias in one plan only.
    pe.main("--fold-attention-layout", counts, seed=7,
            extra=("--bf16-bias=false",))

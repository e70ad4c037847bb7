#!/usr/bin/env python3
"""megac --ones-column-bias-grad (c_attn's and c_fc's bias gradients as one
more row of their weight gradients' products; cuda bf16's default) on MPI
ranks (ctest parallel.ones_*; builds with megac).

A small GPT (layers 2, hidden 64, heads 4, vocab 256) compiled with
--precision bf16 --ones-column-bias-grad trains on the CPU, --no-shuffle,
the same --seed, against the one-process plan with the same flags (whose two
micro-batches add the product's rows into the gradients with Elementwise
adds): losses and grad norms within rel 1e-3 (a bf16 rounding of an f32
value that differs in its last bits may go the other way, as in
parallel.res_*; at tp=2 every gradient of the first step is 0.3-0.7% off
one process's with or without the flag). Against the same layout without
the flag (the bias gradients summed by the epilogue), the losses within rel
1e-3 and the first step's --dump-grads within rel 1e-6. Each plan must
have the padded norms (rows of 72: a 1 in column 64) and none of the
bias-gradient epilogues left.

ones_tp       tp=2: c_attn and c_fc are column-parallel, so each rank's
              product is of its own columns: [72, N/2], whose row 64 is its
              shard of the bias gradient (two micro-batches: added in)
ones_tp_tail  the same with one micro-batch a step: each product writes its
              weight gradient's buffer, rows 64-71 in its tail (plan
              tail_bytes), and only the bias row is copied
ones_dp       dp=2, one micro-batch a rank: the rows are copied into the
              gradients (Copy), which the overlapped buckets then all-reduce
ones_distopt  dp=2 with --use-distributed-optimizer: the copied gradients
              are reduce-scattered into the ranks' blocks
"""
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_dp as dp  # noqa: E402  (shared helpers: run, compare, datasets)
import test_tp as tp  # noqa: E402  (compile_plan, plan_text)
import test_weight_copies as wc  # noqa: E402  (data, train, sets)

TOL = 1e-3
# Only the bias gradients' sums differ from the epilogue's (measured 1.2e-8
# at tp=2, 6.4e-9 at dp=2).
GRAD_TOL = 1e-6
FLAGS = ["--precision", "bf16", "--ones-column-bias-grad"]


def check_plan(tag, text, tails):
    """The norms before c_attn and c_fc padded to 72 columns, their weight
    gradients plain products of 72 rows, no bias-gradient epilogue left, and
    `tails` weight gradients whose buffers hold the products' last rows."""
    padded = len(re.findall(r"= LayerNorm\([^)]*\) i=\[\d+,64,72\]", text))
    products = len(re.findall(r"= MatMul\([^)]*\) i=\[1,72,", text))
    epilogues = len(re.findall(r"= MatMul\([^)]*\) i=\[[^\]]*,5,[01]\]", text))
    got = len(re.findall(r" tail\(\d+ bytes\)", text))
    print(f"{tag}: {padded} padded norms, {products} products of 72 rows, "
          f"{epilogues} bias-gradient epilogues, {got} gradients with a tail")
    dp.check(padded == 4 and products == 4 and epilogues == 0 and got == tails,
             f"{tag}: {padded} padded norms, {products} products of 72 rows, "
             f"{epilogues} bias-gradient epilogues and {got} tails (want 4, 4, 0 "
             f"and {tails})")


def dumped(plan, d, tag, ranks):
    path = dp.scratch(f"{tag}-grads.safetensors")
    if os.path.exists(path):
        os.remove(path)
    wc.train(plan, d, f"{tag}-grads", ranks, steps=1, extra=["--dump-grads", path])
    return dp.load_safetensors(path)


def layout(tag, tpsize, dpsize, flags, ranks, batch=4):
    """`batch` 2: one micro-batch a step, so without data parallelism the
    products write the weight gradients' buffers (their tails)."""
    d = wc.data()
    ref = tp.compile_plan(dp.scratch(f"ref{batch}.plan"), wc.VOCAB, 1, 1, 2, batch, FLAGS)
    plan = tp.compile_plan(dp.scratch(f"{tag}.plan"), wc.VOCAB, tpsize, dpsize, 2,
                           batch, FLAGS + list(flags))
    off = tp.compile_plan(dp.scratch(f"{tag}-off.plan"), wc.VOCAB, tpsize, dpsize, 2,
                          batch, FLAGS[:2] + list(flags))
    sets = wc.sets(FLAGS[2:])
    sets[sets.index("--global-batch-size") + 1] = str(batch)
    check_plan("one process", tp.plan_text(sets), 4 if batch == 2 else 0)
    check_plan(tag, tp.plan_text(sets + ["--tp", str(tpsize), "--dp", str(dpsize)]
                                 + list(flags)),
               4 if batch == 2 and dpsize == 1 else 0)
    l0, n0 = wc.train(ref, d, "ref", 0)
    l1, n1 = wc.train(plan, d, tag, ranks)
    l2, n2 = wc.train(off, d, f"{tag}-off", ranks)
    dp.check(len(l1) == wc.STEPS, f"{tag}: {len(l1)} logged steps")
    dp.compare(f"{tag}: losses against one process", l0, l1, TOL)
    dp.compare(f"{tag}: grad norms against one process", n0, n1, TOL)
    print(f"{tag}: losses {l1} (one process {l0})")
    # The same layout with the epilogue's bias gradients: only the sums of
    # the bias gradients differ (the product's f32 sum against the
    # epilogue's), which the step's bf16 roundings may carry further.
    dp.compare(f"{tag}: losses against the bias-gradient epilogue", l2, l1, TOL)
    g1, g2 = dumped(plan, d, tag, ranks), dumped(off, d, f"{tag}-off", ranks)
    dp.check(sorted(g1) == sorted(g2), f"{tag}: dumped gradients {sorted(g1)} vs {sorted(g2)}")
    worst = 0.0
    for k, g in g2.items():
        dp.compare(f"{tag}: first step's gradient of {k} against the epilogue's", g,
                   g1[k], GRAD_TOL)
        worst = max(worst, float(np.abs(g - g1[k]).max() / max(np.abs(g).max(), 1e-30)))
    print(f"{tag}: first step's gradients within {worst:.3g} of the epilogue's")


CASES = ["ones_tp", "ones_tp_tail", "ones_dp", "ones_distopt"]


def main():
    args = dp.setup_gpt_script(CASES)
    {"ones_tp": lambda: layout("tp2", 2, 1, [], 2),
     "ones_tp_tail": lambda: layout("tp2tail", 2, 1, [], 2, batch=2),
     "ones_dp": lambda: layout("dp2", 1, 2, [], 2),
     "ones_distopt": lambda: layout("dp2do", 1, 2, ["--use-distributed-optimizer"], 2)
     }[args.case]()
    print("PASS " + args.case)


if __name__ == "__main__":
    main()

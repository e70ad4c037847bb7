#!/usr/bin/env python3
"""megac --bf16-residual (the residual stream stored in bf16) on MPI ranks
(ctest parallel.res_*; builds with megac).

A small GPT (layers 2, hidden 64, heads 4, vocab 256) compiled with
--precision bf16 --bf16-residual trains on the CPU, --no-shuffle, the same
--seed, against the one-process plan with the same flags: losses and grad
norms within rel 1e-3 (tp splits products' sums and dp sums the gradients
over ranks, so a bf16 rounding of an f32 value that differs in its last bits
may go the other way, as in parallel.wc_*).

res_tp_sp   tp=2 with --sequence-parallel: each rank's block of the stream's
            rows is rounded where the norms read it, after the
            reduce-scatter (every norm reads bf16, as with dp)
res_pp      pp=2 (1F1B): the stream crosses the stage boundary, and goes from
            a forward to its backward program, through ports that
            mega-narrow-ports makes bf16: every norm reads bf16 here too.
            The first step's --dump-grads equal one process's to rel 1e-4
            (measured 9.9e-8: the same products, summed in the same order);
            a norm gradient that read the stream unrounded where it arrived
            from the other stage was 3.3e-3 off
res_dp      dp=2
res_ports   pp=2 with --port-sources and --narrow-ports (the defaults), with
            --narrow-ports=false, and with both false: attention's q, k and v
            sent as the projection (no Copy kernels), and the ports that
            carry a widened bf16 value, or one every reader rounds (after
            moving its elements: q, k, v and o), in bf16; the same losses
            and grad norms bit for bit, fewer port bytes and Cast kernels.
            All with --bf16-bias=false: narrowed, the fused projection
            stores bf16 itself, and mega-bf16-bias would round its bias as
            one process does, a different (not a wrong) result
"""
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_dp as dp  # noqa: E402  (shared helpers: run, compare, datasets)
import test_tp as tp  # noqa: E402  (compile_plan, plan_text)
import test_weight_copies as wc  # noqa: E402  (data, train)

TOL = 1e-3
GRAD_TOL = 1e-4
FLAGS = ["--precision", "bf16", "--bf16-residual"]


def norm_inputs(text):
    """(LayerNorms reading a bf16 x, LayerNorms) over every program."""
    bf16_x = norms = 0
    for body in re.findall(r'^program "[^\n]*\{\n(.*?)^\}', text, re.M | re.S):
        types = dict(re.findall(r"^\s*%(\d+) = \S+ : \S+x(\w+)$", body, re.M))
        for x in re.findall(r"= LayerNorm\(%(\d+),", body):
            norms += 1
            bf16_x += types.get(x) == "bf16"
    return bf16_x, norms


def layout(tag, tpsize, dpsize, flags, ranks):
    d = wc.data()
    ref = tp.compile_plan(dp.scratch("ref.plan"), wc.VOCAB, 1, 1, 2, 4, FLAGS)
    plan = tp.compile_plan(dp.scratch(f"{tag}.plan"), wc.VOCAB, tpsize, dpsize, 2,
                           4, FLAGS + list(flags))
    text = tp.plan_text(wc.sets(["--bf16-residual", "--tp", str(tpsize), "--dp",
                                 str(dpsize)] + list(flags)))
    bf16_x, norms = norm_inputs(text)
    print(f"{tag}: {bf16_x} of {norms} LayerNorms read a bf16 x")
    dp.check(norms > 0 and bf16_x == norms,
             f"{tag}: {bf16_x} of {norms} LayerNorms read a bf16 x")
    l0, n0 = wc.train(ref, d, "ref", 0)
    l1, n1 = wc.train(plan, d, tag, ranks)
    dp.check(len(l1) == wc.STEPS, f"{tag}: {len(l1)} logged steps")
    dp.compare(f"{tag}: losses against one process", l0, l1, TOL)
    dp.compare(f"{tag}: grad norms against one process", n0, n1, TOL)
    print(f"{tag}: losses {l1} (one process {l0})")
    if "--pp" in flags:
        grads = {}
        for name, p, n in (("ref", ref, 0), (tag, plan, ranks)):
            path = dp.scratch(f"{name}-grads.safetensors")
            if os.path.exists(path):
                os.remove(path)
            wc.train(p, d, f"{name}-grads", n, steps=1, extra=["--dump-grads", path])
            grads[name] = dp.load_safetensors(path)
        dp.check(sorted(grads["ref"]) == sorted(grads[tag]),
                 f"{tag}: dumped gradients {sorted(grads[tag])} vs {sorted(grads['ref'])}")
        worst = 0.0
        for k, g in grads["ref"].items():
            dp.compare(f"{tag}: first step's gradient of {k} against one process", g,
                       grads[tag][k], GRAD_TOL)
            worst = max(worst, float(np.abs(g - grads[tag][k]).max() / max(np.abs(g).max(), 1e-30)))
        print(f"{tag}: first step's gradients within {worst:.3g} of one process's")


def port_bytes(text):
    """Bytes of the pipeline ports the programs write (output pipe.N)."""
    total = 0
    for shape, dtype in re.findall(r'^\s*output \d+ "pipe\.\d+" (\S+)x(\w+)$', text, re.M):
        n = 1
        for d in shape.split("x"):
            n *= int(d)
        total += n * (2 if dtype == "bf16" else 4)
    return total


def ports():
    """--port-sources and --narrow-ports on, narrow off, and both off at pp 2:
    the same bits, fewer bytes and kernels."""
    d = wc.data()
    variants = {"on": [], "wide": ["--narrow-ports=false"],
                "off": ["--narrow-ports=false", "--port-sources=false"]}
    plans, texts = {}, {}
    for v, extra in variants.items():
        flags = ["--pp", "2", "--bf16-bias=false"] + extra
        plans[v] = tp.compile_plan(dp.scratch(f"ports-{v}.plan"), wc.VOCAB, 1, 1, 2, 4,
                                   FLAGS + flags)
        texts[v] = tp.plan_text(wc.sets(flags))
    nbytes = {v: port_bytes(t) for v, t in texts.items()}
    casts = {v: len(re.findall(r"= Cast\(", t)) for v, t in texts.items()}
    copies = {v: len(re.findall(r"= Copy\(", t)) for v, t in texts.items()}
    print(f"ports: bytes {nbytes}, Cast kernels {casts}, Copy kernels {copies}")
    dp.check(0 < nbytes["on"] < nbytes["wide"] < nbytes["off"] and casts["on"] < casts["wide"],
             "no port was narrowed, or none sends its layout's source")
    dp.check(copies["on"] == copies["wide"] == 0 < copies["off"],
             "q, k and v are still copied out of the projection for their ports")
    ref = wc.train(plans["off"], d, "ports-off", 2)
    for v in ("wide", "on"):
        got = wc.train(plans[v], d, f"ports-{v}", 2)
        dp.check(len(got[0]) == wc.STEPS and got == ref,
                 f"{v}: the ports changed the bits: losses and grad norms {got} vs {ref}")


CASES = ["res_tp_sp", "res_pp", "res_dp", "res_ports"]


def main():
    args = dp.setup_gpt_script(CASES)
    {"res_tp_sp": lambda: layout("tp2sp", 2, 1, ["--sequence-parallel"], 2),
     "res_pp": lambda: layout("pp2", 1, 1, ["--pp", "2"], 2),
     "res_dp": lambda: layout("dp2", 1, 2, [], 2),
     "res_ports": ports}[args.case]()
    print("PASS " + args.case)


if __name__ == "__main__":
    main()

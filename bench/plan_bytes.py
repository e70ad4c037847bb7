#!/usr/bin/env python3
"""Launches and operand bytes per kernel of one program of a plan, from
`megac --emit plan-text`: what each kernel reads and writes if every operand
is touched once (a lower bound on memory traffic for the memory-bound
kernels; a GEMM moves more). Attention and AttentionGrad operands are
counted as their [BH, S, hd] rows (the strided form's values span more
bytes than they touch); lse as [BH, S] f32. With --rw, what a kernel adds
into in place is counted as read too (a MatMul's C with beta != 0, the
accumulate flags of ReduceSum, EmbeddingGrad and LayerNormGrad, AdamWMulti's
parameters, moments and, when it clears them, gradients).

  megac models/gpt.mlir --precision bf16 --micro-batch-size 16 --emit plan-text \\
      | bench/plan_bytes.py [--program train]
"""
import argparse
import collections
import re
import sys


def reread(op, ins, outs, iattr, fattr, values):
    """--rw: the bytes of what `op` reads back from the values it adds into
    (docs/plan-format.md's accumulate forms), beyond the one touch each
    operand already counts."""
    i = [int(x) for x in iattr.split(",")] if iattr else []
    f = [float(x) for x in fattr.split(",")] if fattr else []
    size = lambda v: values.get(v, (0, 4))[0] * values.get(v, (0, 4))[1]
    if op == "MatMul":
        extra = size(outs[0]) if outs and len(f) > 1 and f[1] != 0 else 0
        if len(i) == 14 and i[13] and len(outs) > 1:
            extra += size(outs[1])  # the bias gradient added into
        return extra
    if op == "ReduceSum" and len(i) > 2 and i[2] and outs:
        return size(outs[0])
    if op in ("EmbeddingGrad", "VocabEmbeddingGrad") and len(i) > 3 and i[3] and outs:
        return size(outs[0])
    if op == "LayerNormGrad":
        # dx (accumulate), dw and db (accumulate_wb), dsum (its accumulate:
        # the last output, the 5th, or the 4th with a bf16 dx).
        extra = size(outs[0]) if len(i) > 2 and i[2] and outs else 0
        if len(i) > 3 and i[3] and len(outs) > 2:
            extra += size(outs[1]) + size(outs[2])
        if len(i) > 4 and i[4] and len(outs) > 3:
            extra += size(outs[-1])
        return extra
    if op == "AdamWMulti" and len(i) > 1:
        # lr, step, coef, then (param, grad, m, v) per tensor, in place:
        # param, m and v written back, the gradient too when cleared.
        extra = 0
        for t in range(i[0]):
            p, g, m, v = ins[3 + 4 * t:7 + 4 * t]
            extra += size(p) + size(m) + size(v) + (size(g) if i[1] else 0)
        return extra
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan_text", nargs="?", default="-",
                    help="plan text (default: stdin)")
    ap.add_argument("--program", default="train")
    ap.add_argument("--bytes", action="store_true",
                    help="print bytes instead of GB")
    ap.add_argument("--rw", action="store_true",
                    help="also count the reads of what a kernel adds into in "
                         "place (a MatMul's C with beta != 0, accumulate "
                         "flags, AdamW's parameters, moments and gradients)")
    a = ap.parse_args()
    text = sys.stdin.read() if a.plan_text == "-" else open(a.plan_text).read()
    m = re.search(r'^program "%s"[^\n]*\{\n(.*?)^\}' % re.escape(a.program), text,
                  re.M | re.S)
    if not m:
        sys.exit(f"plan_bytes: no program '{a.program}' in the plan text")
    body = m.group(1)
    values = {}
    for v in re.finditer(r"^\s*%(\d+) = \S+ : (\S+)$", body, re.M):
        dims, _, dtype = v.group(2).rpartition("x")
        n = 1
        for d in filter(None, dims.split("x")):
            n *= int(d)
        values[v.group(1)] = (n, {"bf16": 2, "i32": 4, "f32": 4}.get(dtype, 4))
    launches = collections.Counter()
    nbytes = collections.Counter()
    for k in re.finditer(r"^\s*(?:(%[\d, %]+) = )?([A-Za-z]+)\(([^)]*)\)"
                         r"(?: i=\[([^\]]*)\])?(?: f=\[([^\]]*)\])?", body, re.M):
        outs, op, ins, iattr, fattr = k.groups()
        operands = re.findall(r"%(\d+)", ins or "") + re.findall(r"%(\d+)", outs or "")
        total = 0
        if op in ("Attention", "AttentionGrad") and iattr:
            bh, seq, hd = (int(x) for x in iattr.split(",")[:3])
            for j, v in enumerate(operands):
                size = values.get(v, (0, 4))[1]
                total += bh * seq * 4 if j == 4 else bh * seq * hd * size  # j 4: lse
        else:
            for v in operands:
                n, size = values.get(v, (0, 4))
                total += n * size
        if a.rw:
            total += reread(op, re.findall(r"%(\d+)", ins or ""),
                            re.findall(r"%(\d+)", outs or ""), iattr, fattr, values)
        launches[op] += 1
        nbytes[op] += total
    unit = "bytes" if a.bytes else "GB"
    show = (lambda b: f"{b:11d}") if a.bytes else (lambda b: f"{b / 1e9:11.2f}")
    print(f"{'kernel':20s} {'launches':>8s} {'operand ' + unit:>11s}")
    for op, b in nbytes.most_common():
        print(f"{op:20s} {launches[op]:8d} {show(b)}")
    print(f"{'total':20s} {sum(launches.values()):8d} {show(sum(nbytes.values()))}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Helpers of bench/gpu/check.sh (standard library only).

  check_tools.py data PREFIX --vocab V --tokens N [--seed S]
      writes a Megatron indexed dataset (PREFIX.bin/.idx, uint16, one document) of N random
      tokens in [0, V).
  check_tools.py compare CPU.jsonl CUDA.jsonl [--rtol 1e-4]
      prints the per-iteration lm loss (and grad norm) of both --log-file runs side by side;
      exit 1 when a loss differs by more than rtol (relative), a step is missing or not finite.
  check_tools.py timing LOG.jsonl [--warmup 2]
      prints the median elapsed_ms of the iterations after the warm-up.
  check_tools.py report TORCH.json NAME=LOG.jsonl... [--tokens B*S] [--peak 989]
      one table of mega's runs (median ms/step after 2 warm-up steps) beside PyTorch's modes
      from the same run: ms/step, tokens/s, TFLOP/s, MFU (model FLOPs per token as
      torch_baseline.py counts them, over --peak dense bf16 TFLOP/s) and the time ratios
      torch/mega (above 1: mega is faster).
  check_tools.py scaling ONE.jsonl MANY.jsonl --gpus N --tokens T [--strong] [--warmup 2]
      one GPU against N GPUs each doing the one GPU's work (T tokens a step each; --strong:
      sharing its T tokens, as tensor parallelism does): ms/step, tokens/s in all and per
      GPU, and the scaling (N GPUs' tokens/s over N times one's).
  check_tools.py breakdown TRACE.json [--top 25]
      per-kernel time of the last traced step (mega-run --trace: each kernel synchronised, so
      small kernels carry their launch cost), summed by opcode over its train and optimizer
      programs.
"""
import argparse
import json
import math
import os
import re
import random
import statistics
import struct
import sys


def write_dataset(prefix, tokens):
    # The MMIDIDX layout (docs/ and test/reference/gpt_ref.py describe it): header, version,
    # dtype code (8 = uint16), sequence count, document count, sizes, pointers, doc indices.
    with open(prefix + ".bin", "wb") as f:
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", 8))
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<Q", 2))
        f.write(struct.pack("<i", len(tokens)))
        f.write(struct.pack("<q", 0))
        f.write(struct.pack("<2q", 0, 1))


def cmd_data(a):
    if a.vocab > 65500:
        sys.exit("check_tools.py data: uint16 tokens need vocab <= 65500")
    rng = random.Random(a.seed)
    write_dataset(a.prefix, [rng.randrange(a.vocab) for _ in range(a.tokens)])
    return 0


def read_log(path):
    recs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if "iteration" in r and "lm_loss" in r:
                recs[int(r["iteration"])] = r
    return recs


def cmd_compare(a):
    for path in (a.cpu, a.cuda):
        if not os.path.exists(path):
            print(f"compare: no log {path} (that run failed)")
            return 1
    cpu, cuda = read_log(a.cpu), read_log(a.cuda)
    its = sorted(set(cpu) | set(cuda))
    if not its:
        print("compare: no iterations in either log")
        return 1
    bad = 0
    worst = 0.0
    print(f"{'iter':>5s} {'cpu lm loss':>14s} {'cuda lm loss':>14s} {'rel diff':>9s}"
          f" {'cpu grad norm':>14s} {'cuda grad norm':>14s}")
    for it in its:
        c, g = cpu.get(it), cuda.get(it)
        if c is None or g is None:
            print(f"{it:5d} missing in the {'cpu' if c is None else 'cuda'} log")
            bad += 1
            continue
        lc, lg = float(c["lm_loss"]), float(g["lm_loss"])
        ok = math.isfinite(lc) and math.isfinite(lg)
        rel = abs(lc - lg) / max(abs(lc), 1e-30) if ok else math.inf
        worst = max(worst, rel)
        flag = "" if ok and rel <= a.rtol else "  <-- FAIL"
        bad += bool(flag)
        print(f"{it:5d} {lc:14.8f} {lg:14.8f} {rel:9.2e} {float(c.get('grad_norm', 'nan')):14.8f}"
              f" {float(g.get('grad_norm', 'nan')):14.8f}{flag}")
    print(f"compare: {len(its)} iterations, worst relative loss difference {worst:.2e} "
          f"(tolerance {a.rtol:g}): {'FAIL' if bad else 'PASS'}")
    return 1 if bad else 0


def cmd_timing(a):
    if not os.path.exists(a.log):
        print(f"timing: no log {a.log}")
        return 1
    recs = read_log(a.log)
    ms = [float(r["elapsed_ms"]) for it, r in sorted(recs.items()) if it > a.warmup]
    if not ms:
        print(f"timing: no iterations after {a.warmup} in {a.log}")
        return 1
    loss = [float(r["lm_loss"]) for _, r in sorted(recs.items())]
    print(f"median ms/step {statistics.median(ms):.1f} over {len(ms)} steps "
          f"(min {min(ms):.1f}, max {max(ms):.1f}); loss {loss[0]:.4f} -> {loss[-1]:.4f}")
    return 0


def median_ms(path, warmup):
    """The median ms/step after `warmup` iterations of a run's log, or None."""
    if not os.path.exists(path):
        return None
    ms = [float(r["elapsed_ms"]) for it, r in sorted(read_log(path).items()) if it > warmup]
    return statistics.median(ms) if ms else None


def cmd_scaling(a):
    """One GPU against `gpus` GPUs: each doing the one GPU's work (data
    parallel), or with --strong sharing it (tensor parallel: the same tokens
    a step). ms/step, tokens/s in all and per GPU, and the per-GPU rate's
    share of the one-GPU rate."""
    one, many = median_ms(a.one, a.warmup), median_ms(a.many, a.warmup)
    if one is None or many is None:
        print(f"scaling: no iterations in {a.one if one is None else a.many}")
        return 1
    t1 = a.tokens / (one / 1e3)
    tn = (1 if a.strong else a.gpus) * a.tokens / (many / 1e3)
    print(f"1 GPU: {one:.1f} ms/step, {t1:,.0f} tokens/s; {a.gpus} GPUs: {many:.1f} ms/step, "
          f"{tn:,.0f} tokens/s ({tn / a.gpus:,.0f} per GPU); scaling {tn / (a.gpus * t1):.1%} "
          f"of {a.gpus}x")
    return 0


def cmd_report(a):
    torch = json.load(open(a.torch)) if os.path.exists(a.torch) else {"results": []}
    rows = []
    flops_per_token = None
    for r in torch.get("results", []):
        if r.get("median_ms"):
            rows.append(("torch " + r["mode"], float(r["median_ms"])))
            if flops_per_token is None and r.get("tokens_per_s"):
                flops_per_token = r["tflops"] * 1e12 / r["tokens_per_s"]
    for spec in a.runs:
        name, path = spec.split("=", 1)
        if not os.path.exists(path):
            print(f"report: no log {path} ({name} failed?)")
            continue
        ms = [float(r["elapsed_ms"]) for it, r in sorted(read_log(path).items()) if it > 2]
        if ms:
            rows.append(("mega " + name, statistics.median(ms)))
    if not rows:
        print("report: nothing to report")
        return 1
    print(f"{'run':22s} {'ms/step':>9s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s}")
    for name, ms in rows:
        tok = a.tokens / (ms / 1000.0)
        tf = tok * flops_per_token / 1e12 if flops_per_token else float("nan")
        print(f"{name:22s} {ms:9.1f} {tok:10.0f} {tf:8.1f} {100 * tf / a.peak:5.1f}%")
    # Memory: torch's peak allocated bytes against the device memory mega's
    # plan asked for (allocated once, before the first step; logged by
    # mega-run next to the JSON log).
    for r in torch.get("results", []):
        if r.get("peak_mem_gib"):
            print(f"memory torch {r['mode']:14s} peak allocated {r['peak_mem_gib']:7.2f} GiB")
    for spec in a.runs:
        name, path = spec.split("=", 1)
        log = os.path.splitext(path)[0] + ".log"
        if os.path.exists(log):
            for line in open(log, errors="replace"):
                m = re.search(r"(\d+) bytes of device memory planned", line)
                if m:
                    print(f"memory mega  {name:14s} planned        {int(m.group(1)) / 2**30:7.2f} GiB"
                          f"  ({line.split('(', 1)[-1].strip().rstrip(')')})")
                m = re.search(r"(\d+) bytes of device memory held", line)
                if m:
                    print(f"memory mega  {name:14s} held at the end {int(m.group(1)) / 2**30:6.2f} GiB"
                          f"  ({line.split('(', 1)[-1].strip().rstrip(')')})")
    times = dict(rows)
    for m in [n for n in times if n.startswith("mega ")]:
        for t in [n for n in times if n.startswith("torch ")]:
            print(f"ratio {t} / {m}: {times[t] / times[m]:.2f}x "
                  f"({'mega faster' if times[t] > times[m] else 'torch faster'})")
    return 0


def cmd_breakdown(a):
    if not os.path.exists(a.trace):
        print(f"breakdown: no trace {a.trace}")
        return 1
    data = json.load(open(a.trace))
    events = data["traceEvents"] if isinstance(data, dict) else data
    # The last step only (the first pays for lazy loading and cuBLASLt's
    # first heuristics): its train and optimizer programs' windows.
    windows = []
    for name in ("train", "optimizer"):
        runs = [e for e in events if e.get("cat") == "program" and e.get("name") == name]
        if runs:
            windows.append((runs[-1]["ts"], runs[-1]["ts"] + runs[-1]["dur"], runs[-1]["dur"] / 1000.0))
    total, count = {}, {}
    for e in events:
        if e.get("cat") != "kernel" or not any(lo <= e["ts"] <= hi for lo, hi, _ in windows):
            continue
        total[e["name"]] = total.get(e["name"], 0.0) + float(e.get("dur", 0)) / 1000.0
        count[e["name"]] = count.get(e["name"], 0) + 1
    whole = sum(total.values())
    if not whole:
        print("breakdown: no kernel events in the trace")
        return 1
    print(f"per-kernel time of the last traced step (train {windows[0][2]:.1f} ms"
          + (f" + optimizer {windows[1][2]:.1f} ms" if len(windows) > 1 else "")
          + "; each kernel synchronised, so launches cost more than in an untraced step):")
    print(f"{'kernel':24s} {'ms':>9s} {'share':>7s} {'launches':>9s}")
    for name in sorted(total, key=total.get, reverse=True)[:a.top]:
        print(f"{name:24s} {total[name]:9.2f} {100 * total[name] / whole:6.1f}% {count[name]:9d}")
    print(f"{'all kernels':24s} {whole:9.2f}")
    # The MatMuls by shape (the events' args: the instruction's i), the
    # costliest first, with their rate (2 M N K per batch item).
    shapes = {}
    for e in events:
        if (e.get("cat") != "kernel" or e.get("name") != "MatMul" or
                not any(lo <= e["ts"] <= hi for lo, hi, _ in windows)):
            continue
        i = (e.get("args") or {}).get("i") or []
        if len(i) < 12:
            continue
        epi = i[12] if len(i) > 12 else 0
        key = (i[1], i[2], i[3], i[4], i[5], epi, i[0])
        t, n = shapes.get(key, (0.0, 0))
        shapes[key] = (t + float(e.get("dur", 0)) / 1000.0, n + 1)
    if shapes:
        print(f"MatMul by shape ({'M':>5s} x {'N':>5s} x {'K':>5s}, transposes, epilogue):"
              f" {'ms':>7s} {'calls':>5s} {'us/call':>8s} {'TFLOP/s':>8s}")
        for key in sorted(shapes, key=lambda k: shapes[k][0], reverse=True)[:a.top]:
            M, N, K, ta, tb, epi, batch = key
            t, n = shapes[key]
            rate = 2.0 * M * N * K * max(batch, 1) * n / (t * 1e-3) / 1e12 if t else 0.0
            print(f"  {M:5d} x {N:5d} x {K:5d}  tA {ta} tB {tb} epi {epi}  "
                  f"{t:7.2f} {n:5d} {1e3 * t / n:8.1f} {rate:8.1f}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("prefix")
    d.add_argument("--vocab", type=int, required=True)
    d.add_argument("--tokens", type=int, required=True)
    d.add_argument("--seed", type=int, default=2)
    c = sub.add_parser("compare")
    c.add_argument("cpu")
    c.add_argument("cuda")
    c.add_argument("--rtol", type=float, default=1e-4)
    t = sub.add_parser("timing")
    t.add_argument("log")
    t.add_argument("--warmup", type=int, default=2)
    r = sub.add_parser("report")
    r.add_argument("torch")
    r.add_argument("runs", nargs="*", help="NAME=LOG.jsonl")
    r.add_argument("--tokens", type=int, default=16 * 1024)
    r.add_argument("--peak", type=float, default=989.0, help="dense bf16 TFLOP/s (H100 SXM)")
    sc = sub.add_parser("scaling")
    sc.add_argument("one", help="the one-GPU run's log")
    sc.add_argument("many", help="the data-parallel run's log (rank 0)")
    sc.add_argument("--gpus", type=int, required=True)
    sc.add_argument("--tokens", type=int, required=True,
                    help="tokens a step of the one-GPU run (and of each GPU's share without --strong)")
    sc.add_argument("--strong", action="store_true",
                    help="the GPUs share the one-GPU run's tokens (tensor parallel)")
    sc.add_argument("--warmup", type=int, default=2)
    b = sub.add_parser("breakdown")
    b.add_argument("trace")
    b.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    return {"data": cmd_data, "compare": cmd_compare, "timing": cmd_timing,
            "report": cmd_report, "breakdown": cmd_breakdown,
            "scaling": cmd_scaling}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

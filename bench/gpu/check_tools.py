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
"""
import argparse
import json
import math
import os
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
    a = ap.parse_args()
    return {"data": cmd_data, "compare": cmd_compare, "timing": cmd_timing}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

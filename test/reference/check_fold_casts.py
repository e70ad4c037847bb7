#!/usr/bin/env python3
"""A bf16 plan whose producers write the bf16 copies themselves (megac's
mega-fold-casts: Elementwise, Transpose, CrossEntropyGrad, LayerNorm,
Attention round on store) trains to the same bits on the CPU as the plan with
a Cast kernel for each (--fold-casts=false): rounding on store is exactly the
cast it replaces.

  check_fold_casts.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys

SIZES = ["--set", "layers=2", "--set", "hidden=64", "--set", "heads=2",
         "--set", "vocab=97", "--set", "seq=16", "--micro-batch-size", "2",
         "--global-batch-size", "4", "--optimizer", "adam", "--clip-grad", "1.0",
         "--precision", "bf16"]
STEPS = 3


def write_dataset(prefix, tokens):
    """Megatron MMIDIDX (uint16 tokens), all tokens one document."""
    with open(prefix + ".bin", "wb") as f:
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 1, 2))
        f.write(struct.pack("<i", len(tokens)) + struct.pack("<q", 0))
        f.write(struct.pack("<2q", 0, 1))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p.stdout


def kernels(text, name):
    return len(re.findall(r"= " + name + r"\(", text))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--megac", required=True)
    ap.add_argument("--mega-run", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    w = lambda n: os.path.join(a.workdir, n)

    rng = random.Random(5)
    write_dataset(w("data"), [rng.randrange(97) for _ in range(4 * 16 * STEPS + 1)])
    logs = {}
    casts = {}
    for name, flag in (("folded", "--fold-casts=true"), ("casts", "--fold-casts=false")):
        plan = w(f"{name}.plan")
        run([a.megac, a.model, flag, "-o", plan] + SIZES)
        text = run([a.megac, a.model, flag, "--emit", "plan-text"] + SIZES)
        casts[name] = kernels(text, "Cast")
        log = w(f"{name}.jsonl")
        if os.path.exists(log):
            os.remove(log)
        run([a.mega_run, plan, "--data", w("data"), "--steps", str(STEPS),
             "--no-shuffle", "--seed", "1", "--log-interval", "1", "--device", "cpu",
             "--threads", "2", "--log-file", log])
        with open(log) as f:
            logs[name] = [json.loads(l) for l in f if '"lm_loss"' in l]
    print(f"Cast kernels: {casts['folded']} folded, {casts['casts']} with --fold-casts=false")
    if casts["folded"] >= casts["casts"]:
        sys.exit("FAIL: no cast was folded")
    ok = len(logs["folded"]) == len(logs["casts"]) == STEPS
    for c, g in zip(logs["folded"], logs["casts"]):
        same = c["lm_loss"] == g["lm_loss"] and c["grad_norm"] == g["grad_norm"]
        ok &= same
        print(f"iter {c['iteration']}: loss {c['lm_loss']!r} vs {g['lm_loss']!r}, "
              f"grad norm {c['grad_norm']!r} vs {g['grad_norm']!r}"
              f"{'' if same else '  DIFFERENT'}")
    if not ok:
        sys.exit("FAIL: the folded plan's losses are not bit-identical")
    print("PASS")


if __name__ == "__main__":
    main()

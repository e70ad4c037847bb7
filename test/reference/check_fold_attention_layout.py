#!/usr/bin/env python3
"""A plan whose attention kernels read q, k, v from the fused projection's
[B, S, 3, H, hd] output and write o (and read dout) as [B, S, H, hd]
(megac's mega-fold-attention-layout: no Transposes around attention) trains
to the same bits on the CPU as the plan with the Transposes
(--fold-attention-layout=false): the CPU kernel gathers each head's rows
into the contiguous slice the unfolded plan computes on. Checked for fp32
and bf16 plans; the folded plans must have fewer Transpose kernels.

  check_fold_attention_layout.py --megac M --mega-run R --model gpt.mlir --workdir DIR
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
         "--global-batch-size", "4", "--optimizer", "adam", "--clip-grad", "1.0"]
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

    rng = random.Random(7)
    write_dataset(w("data"), [rng.randrange(97) for _ in range(4 * 16 * STEPS + 1)])
    ok = True
    for precision in ("fp32", "bf16"):
        logs, counts = {}, {}
        for name, flag in (("folded", "--fold-attention-layout=true"),
                           ("plain", "--fold-attention-layout=false")):
            args = [a.model, flag, "--precision", precision] + SIZES
            plan = w(f"{precision}-{name}.plan")
            run([a.megac] + args + ["-o", plan])
            text = run([a.megac] + args + ["--emit", "plan-text"])
            counts[name] = (kernels(text, "Transpose"), kernels(text, "Cast"))
            log = w(f"{precision}-{name}.jsonl")
            if os.path.exists(log):
                os.remove(log)
            run([a.mega_run, plan, "--data", w("data"), "--steps", str(STEPS),
                 "--no-shuffle", "--seed", "1", "--log-interval", "1",
                 "--device", "cpu", "--threads", "2", "--log-file", log])
            with open(log) as f:
                logs[name] = [json.loads(l) for l in f if '"lm_loss"' in l]
        print(f"{precision}: Transpose, Cast kernels {counts['folded']} folded, "
              f"{counts['plain']} with --fold-attention-layout=false")
        if counts["folded"][0] >= counts["plain"][0]:
            ok = False
            print(f"{precision}: no Transpose was folded  FAIL")
        ok &= len(logs["folded"]) == len(logs["plain"]) == STEPS
        for c, g in zip(logs["folded"], logs["plain"]):
            same = c["lm_loss"] == g["lm_loss"] and c["grad_norm"] == g["grad_norm"]
            ok &= same
            print(f"{precision} iter {c['iteration']}: loss {c['lm_loss']!r} vs "
                  f"{g['lm_loss']!r}, grad norm {c['grad_norm']!r} vs "
                  f"{g['grad_norm']!r}{'' if same else '  DIFFERENT'}")
    if not ok:
        sys.exit("FAIL: the folded plans' losses are not bit-identical")
    print("PASS")


if __name__ == "__main__":
    main()

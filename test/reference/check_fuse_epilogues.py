#!/usr/bin/env python3
"""A plan whose Linears compute bias, residual and GELU in the MatMul's
epilogue (megac's mega-fuse-epilogues) trains to the same bits on the CPU as
the plan with an Elementwise kernel after each MatMul (--fuse-epilogues=false):
the CPU epilogue does the Elementwise's adds in its order and the same GELU.
Checked for fp32 and bf16 plans (bf16: the epilogue's D also rounds on store
after mega-fold-casts).

  check_fuse_epilogues.py --megac M --mega-run R --model gpt.mlir --workdir DIR
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

    rng = random.Random(5)
    write_dataset(w("data"), [rng.randrange(97) for _ in range(4 * 16 * STEPS + 1)])
    ok = True
    for precision in ("fp32", "bf16"):
        logs = {}
        ews = {}
        epis = {}
        for name, flag in (("fused", "--fuse-epilogues=true"),
                           ("plain", "--fuse-epilogues=false")):
            args = [flag, "--precision", precision] + SIZES
            plan = w(f"{precision}_{name}.plan")
            run([a.megac, a.model, "-o", plan] + args)
            text = run([a.megac, a.model, "--emit", "plan-text"] + args)
            ews[name] = kernels(text, "Elementwise")
            # MatMul i lists of 13: the epilogue's.
            epis[name] = len(re.findall(r"= MatMul\([^)]*\) i=\[(?:-?\d+,){12}[123]\]", text))
            log = w(f"{precision}_{name}.jsonl")
            if os.path.exists(log):
                os.remove(log)
            run([a.mega_run, plan, "--data", w("data"), "--steps", str(STEPS),
                 "--no-shuffle", "--seed", "1", "--log-interval", "1", "--device", "cpu",
                 "--threads", "2", "--log-file", log])
            with open(log) as f:
                logs[name] = [json.loads(l) for l in f if '"lm_loss"' in l]
        print(f"{precision}: Elementwise kernels {ews['fused']} fused, {ews['plain']} with "
              f"--fuse-epilogues=false; MatMuls with an epilogue {epis['fused']}")
        # Per layer: c_attn (bias), attn proj and mlp proj (residual), c_fc
        # (GELU), in the train, eval and predict programs alike.
        if epis["plain"] != 0 or epis["fused"] < 4 * 2 or ews["fused"] >= ews["plain"]:
            sys.exit(f"FAIL: {precision}: the Linears' epilogues were not fused")
        ok &= len(logs["fused"]) == len(logs["plain"]) == STEPS
        for c, g in zip(logs["fused"], logs["plain"]):
            same = c["lm_loss"] == g["lm_loss"] and c["grad_norm"] == g["grad_norm"]
            ok &= same
            print(f"  iter {c['iteration']}: loss {c['lm_loss']!r} vs {g['lm_loss']!r}, "
                  f"grad norm {c['grad_norm']!r} vs {g['grad_norm']!r}"
                  f"{'' if same else '  DIFFERENT'}")
    if not ok:
        sys.exit("FAIL: the fused plans' losses are not bit-identical")
    print("PASS")


if __name__ == "__main__":
    main()

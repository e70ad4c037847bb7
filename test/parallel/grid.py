#!/usr/bin/env python3
"""The parallel equivalence grid in one script (ctest parallel.grid).

GPT (hidden 64, heads 4, seq 16, micro-batch 2, global batch 8, AdamW with
clipping at 1.0) trains 10 steps on the same tokens (--no-shuffle, --seed 5)
under every layout below and once on one device; the logged losses and
gradient norms must equal the one-device run's to rel 1e-5 and the first
step's --dump-grads (full tensors under canonical names, whatever the layout)
to rel 1e-4. Each layout runs on T*P*D MPI ranks.

   T  P  D  V  schedule     other                        model
   2  1  1  -  -                                         4 layers, vocab 256
   4  1  1  -  -                                         4 layers, vocab 256
   1  2  1  -  1f1b                                      4 layers, vocab 256
   1  4  1  -  gpipe                                     4 layers, vocab 256
   1  1  2  -  -                                         4 layers, vocab 256
   2  2  1  -  1f1b                                      4 layers, vocab 256
   2  2  2  -  1f1b                                      4 layers, vocab 256
   1  2  1  2  interleaved                               4 layers, vocab 256
   2  1  1  -  -            --sequence-parallel          4 layers, vocab 256
   1  1  2  -  -            --use-distributed-optimizer  4 layers, vocab 256
   2  2  2  -  1f1b         --sequence-parallel          4 layers, vocab 256
                            --use-distributed-optimizer
                            --ddp-bucket-size 5000
   2  2  1  -  1f1b         (awkward)                    3 layers, vocab 251

The awkward shape: 3 layers on 2 pipeline stages (an uneven cut) and a
vocabulary that T = 2 does not divide (padded to 252, the padding masked).
The script prints one row per layout with the worst differences seen.
"""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_dp as dp  # noqa: E402  (shared helpers: run, datasets, safetensors)

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models",
                     "gpt.mlir")
STEPS = 10

# (T, P, D, V, schedule, extra megac flags, layers, vocab)
GRID = [
    (2, 1, 1, 1, None, [], 4, 256),
    (4, 1, 1, 1, None, [], 4, 256),
    (1, 2, 1, 1, "1f1b", [], 4, 256),
    (1, 4, 1, 1, "gpipe", [], 4, 256),
    (1, 1, 2, 1, None, [], 4, 256),
    (2, 2, 1, 1, "1f1b", [], 4, 256),
    (2, 2, 2, 1, "1f1b", [], 4, 256),
    (1, 2, 1, 2, "interleaved", [], 4, 256),
    (2, 1, 1, 1, None, ["--sequence-parallel"], 4, 256),
    (1, 1, 2, 1, None, ["--use-distributed-optimizer"], 4, 256),
    # Every axis at once, the reduce-scatters overlapped in small buckets.
    (2, 2, 2, 1, "1f1b", ["--sequence-parallel", "--use-distributed-optimizer",
                          "--ddp-bucket-size", "5000"], 4, 256),
    (2, 2, 1, 1, "1f1b", [], 3, 251),
]


def compile_plan(path, layers, vocab, flags):
    megac = os.path.join(dp.ARGS.bin_dir, "megac")
    dp.check(os.path.exists(megac), f"no megac at {megac}")
    p = subprocess.run([megac, MODEL, "-o", path, "--set", f"layers={layers}",
                        "--set", "hidden=64", "--set", "heads=4", "--set", f"vocab={vocab}",
                        "--set", "seq=16", "--micro-batch-size", "2",
                        "--global-batch-size", "8", "--clip-grad", "1.0"] + flags,
                       capture_output=True, text=True)
    dp.check(p.returncode == 0, f"megac {' '.join(flags)} failed:\n{p.stderr}")
    return path


def train(plan, data, tag, ranks):
    log, grads = dp.scratch(f"{tag}.jsonl"), dp.scratch(f"{tag}-grads.safetensors")
    for f in (log, grads):
        if os.path.exists(f):
            os.remove(f)
    dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", STEPS, "--log-interval", 1,
            "--log-file", log, "--dump-grads", grads, "--no-shuffle", "--seed", 5],
           np_=ranks, timeout=240)
    with open(log) as f:
        records = [json.loads(l) for l in f if l.strip()]
    steps = [r for r in records if "lm_loss" in r]
    dp.check(len(steps) == STEPS, f"{tag}: {len(steps)} logged steps, expected {STEPS}")
    return ([r["lm_loss"] for r in steps], [r["grad_norm"] for r in steps],
            dp.load_safetensors(grads))


def worst(name, a, b, rel):
    """Relative difference of b from a (scaled by max |a|); fails past rel,
    naming the worst element."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dp.check(a.shape == b.shape, f"{name}: shapes {a.shape} vs {b.shape}")
    diff = np.abs(a - b)
    err = float(diff.max() / max(np.abs(a).max(), 1e-30))
    if err > rel:
        i = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
        dp.fail(f"{name}: relative difference {err:.3g} > {rel}; worst element {list(i)}: "
                f"{a[i]!r} vs {b[i]!r}")
    return err


def main():
    dp.setup_gpt_script()

    rng = np.random.default_rng(21)
    data = {}
    refs = {}
    rows = []
    for (t, p, d, v, schedule, flags, layers, vocab) in GRID:
        if vocab not in data:
            data[vocab] = dp.write_dataset(
                dp.scratch(f"data-{vocab}"),
                [rng.integers(0, vocab, size=n) for n in (1500, 1100, 900)])
        if (layers, vocab) not in refs:
            ref = compile_plan(dp.scratch(f"ref-l{layers}-v{vocab}.plan"), layers, vocab, [])
            refs[(layers, vocab)] = train(ref, data[vocab], f"ref-l{layers}-v{vocab}", 0)
            dp.check(max(refs[(layers, vocab)][1]) > 1.0,
                     f"one-device grad norms {refs[(layers, vocab)][1]} never clip: a wrong "
                     "norm would go unseen")
        l1, n1, g1 = refs[(layers, vocab)]
        layout = ["--tp", str(t), "--pp", str(p), "--dp", str(d)]
        if v > 1:
            layout += ["--vpp", str(v)]
        if schedule:
            layout += ["--schedule", schedule]
        tag = "-".join(x.lstrip("-") for x in layout + flags) + f"-l{layers}-v{vocab}"
        plan = compile_plan(dp.scratch(f"{tag}.plan"), layers, vocab, layout + flags)
        l2, n2, g2 = train(plan, data[vocab], tag, t * p * d)
        el = worst(f"{tag}: losses", l1, l2, 1e-5)
        en = worst(f"{tag}: grad norms", n1, n2, 1e-5)
        dp.check(sorted(g1) == sorted(g2), f"{tag}: grad names {sorted(g1)} vs {sorted(g2)}")
        eg = max(worst(f"{tag}: grad {k}", g1[k], g2[k], 1e-4) for k in g1)
        what = " ".join([f"T={t} P={p} D={d}"] + ([f"V={v}"] if v > 1 else [])
                        + ([schedule] if schedule else []) + flags
                        + [f"layers={layers} vocab={vocab}"])
        rows.append((what, t * p * d, el, en, eg, len(g1)))

    print(f"{'layout':<58} ranks  loss rel   norm rel   grad rel (tensors)")
    for what, ranks, el, en, eg, n in rows:
        print(f"{what:<58} {ranks:>5}  {el:8.2e}  {en:8.2e}  {eg:8.2e} ({n})")
    print(f"PASS grid: {len(rows)} layouts equal one device over {STEPS} steps")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Pipeline parallelism on MPI ranks (ctest parallel.pp_*; builds with megac).

A small GPT (hidden 64, heads 4, seq 16) compiled by megac at pp=1 and at a
pipelined layout trains 10 steps on the same data (--no-shuffle, --seed 5),
4 micro-batches of 2 per step: the logged losses and clipped gradient norms
agree to rel 1e-5 and --dump-grads (full tensors under canonical names) to
rel 1e-4. A checkpoint saved by the pipelined run loads into the pp=1 plan
and gives its parameters back (pp_1f1b). Each pipeline rank allocates only
its stages' persistent tensors: fewer bytes than the pp=1 run, summing to its
total plus the tied embedding's copy on the last stage (pp_1f1b, pp_gpipe).

case          (T, P, D, V, schedule), layers, vocab
pp_1f1b       (1, 2, 1, 1, 1f1b), 2 layers, vocab 256; also --save / --load
pp_gpipe      (1, 4, 1, 1, gpipe), 4 layers, vocab 256
pp_tp         (2, 2, 1, 1, 1f1b), 2 layers, vocab 256
pp_tp_dp      (2, 2, 2, 1, 1f1b), 2 layers, vocab 256 (8 ranks, oversubscribed);
              the data-parallel buckets start in the last micro-batch's backward
pp_interleaved (1, 2, 1, 2, interleaved), 4 layers, vocab 256
pp_awkward    (2, 2, 1, 1, 1f1b), 3 layers on 2 stages, vocab 251 (not
              divisible by T: the embedding and loss stay replicated)
pp_errors     every invalid pipeline configuration is one `error:` line
"""
import json
import re
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_dp as dp  # noqa: E402  (shared helpers: run, compare, datasets)

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models",
                     "gpt.mlir")


def megac():
    path = os.path.join(dp.ARGS.bin_dir, "megac")
    dp.check(os.path.exists(path), f"no megac at {path}")
    return path


def sets(layers, vocab):
    return ["--set", f"layers={layers}", "--set", "hidden=64", "--set", "heads=4",
            "--set", f"vocab={vocab}", "--set", "seq=16"]


def compile_plan(path, layers, vocab, flags=(), global_batch=8):
    subprocess.run([megac(), MODEL, "-o", path, "--micro-batch-size", "2",
                    "--global-batch-size", str(global_batch)]
                   + sets(layers, vocab) + list(flags), check=True)
    return path


def compare(name, a, b, rel):
    """dp.compare, printing the worst element when it fails."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dp.check(a.shape == b.shape, f"{name}: shapes {a.shape} vs {b.shape}")
    scale = max(np.abs(a).max(), 1e-30)
    diff = np.abs(a - b)
    err = diff.max() / scale
    if err > rel:
        i = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
        dp.fail(f"{name}: relative difference {err:.3g} > {rel}; worst element {list(i)}: "
                f"{a[i]!r} vs {b[i]!r}")


def train(plan, data, tag, np_, extra, steps=10, logged=None):
    log = dp.scratch(f"{tag}.jsonl")
    if os.path.exists(log):
        os.remove(log)
    grads = dp.scratch(f"{tag}-grads.safetensors")
    p = dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", steps, "--log-interval", 1,
                "--log-file", log, "--dump-grads", grads] + extra, np_=np_, timeout=240)
    lines = [l for l in p.stdout.splitlines() if l.startswith(" iteration")]
    logged = steps if logged is None else logged
    dp.check(len(lines) == logged, f"{tag}: {len(lines)} log lines (only rank 0 logs)\n"
             + p.stdout + p.stderr)
    with open(log) as f:
        records = [json.loads(l) for l in f if l.strip()]
    steps_ = [r for r in records if "lm_loss" in r]
    evals = [r["validation_loss"] for r in records if "validation_loss" in r]
    train.evals = evals
    return ([r["lm_loss"] for r in steps_], [r["grad_norm"] for r in steps_],
            dp.load_safetensors(grads), p.stdout)


def persistent_bytes(tag, ref_out, out, pp, vocab):
    """Each pipeline rank holds only its stages' persistents: fewer bytes
    than the pp=1 run, and together the pp=1 total plus the tied embedding's
    second copy on the last stage (weight, gradient, two Adam moments)."""
    m = re.search(r"mega-run: (\d+) bytes of persistent tensors", ref_out)
    dp.check(m, f"{tag}: the pp=1 run reports no persistent bytes:\n{ref_out}")
    total = int(m.group(1))
    got = {}
    for line in out.splitlines():
        m = re.search(r"stage (\d+): (\d+) bytes of persistent tensors", line)
        if m:
            got[int(m.group(1))] = int(m.group(2))
    dp.check(sorted(got) == list(range(pp)), f"{tag}: persistent bytes per stage {got}")
    for s, b in got.items():
        dp.check(0 < b < total, f"{tag}: stage {s} holds {b} persistent bytes, not less "
                 f"than the pp=1 run's {total}")
    tied = 4 * vocab * 64 * 4
    dp.check(sum(got.values()) - tied == total,
             f"{tag}: stages hold {got} persistent bytes, sum {sum(got.values())}; "
             f"minus the tied embedding's second copy ({tied}) that is not the pp=1 "
             f"total {total}")
    print(f"{tag}: persistent bytes per stage {[got[s] for s in sorted(got)]}, pp=1 {total}")


def equivalence(layers, vocab, tp=1, pp=2, dpsize=1, vpp=1, schedule="1f1b", save=False,
                peak_counts=None, persistent=False):
    tag = f"l{layers}-v{vocab}-tp{tp}-pp{pp}-dp{dpsize}-vpp{vpp}-{schedule}"
    rng = np.random.default_rng(13)
    data = dp.write_dataset(dp.scratch(f"data-{vocab}"),
                            [rng.integers(0, vocab, size=n) for n in (1500, 1100, 900)])
    # The same global batch (4 micro-batches of 2 per data rank) for both.
    g = 8 * dpsize
    ref = compile_plan(dp.scratch(f"{tag}-ref.plan"), layers, vocab, global_batch=g)
    flags = ["--tp", str(tp), "--pp", str(pp), "--dp", str(dpsize), "--vpp", str(vpp),
             "--schedule", schedule]
    par = compile_plan(dp.scratch(f"{tag}.plan"), layers, vocab, flags, global_batch=g)
    # Validation (a forward-only pass through the stages) every 5 steps on
    # the same data must match too.
    extra = ["--no-shuffle", "--seed", "5", "--eval-interval", "5", "--eval-data", data,
             "--eval-iters", "3"]
    save_dir = dp.scratch(f"{tag}-ckpt")
    ref_dir = dp.scratch(f"{tag}-ref-ckpt")
    l1, n1, g1, ref_out = train(ref, data, f"{tag}-ref", 0,
                          extra + (["--save", ref_dir] if save else []))
    e1 = train.evals
    l2, n2, g2, out = train(par, data, tag, tp * pp * dpsize,
                            extra + (["--save", save_dir] if save else []))
    e2 = train.evals
    compare(f"{tag}: losses", l1, l2, 1e-5)
    dp.check(len(e1) == 2, f"{tag}: {len(e1)} validation records, expected 2")
    compare(f"{tag}: validation losses", e1, e2, 1e-5)
    compare(f"{tag}: grad norms", n1, n2, 1e-5)
    dp.check(max(n1) > 1.0, f"{tag}: grad norms {n1} never clip; the test "
             "would not see a wrong norm")
    dp.check(sorted(g1) == sorted(g2), f"{tag}: grad names {sorted(g1)} vs {sorted(g2)}")
    for k in g1:
        compare(f"{tag}: grad {k}", g1[k], g2[k], 1e-4)
    peaks = [l for l in out.splitlines() if "stashed" in l]
    dp.check(len(peaks) == tp * pp * dpsize, f"{tag}: every rank reports its activation "
             f"memory, got {peaks}")
    if peak_counts:
        # Micro-batches in flight per pipeline stage (1F1B: P - stage, GPipe: m),
        # and bytes in proportion (every micro-batch stashes the same tensors).
        got = {}
        for line in peaks:
            m = re.search(r"stage (\d+): peak (\d+) stashed micro-batch\(es\), (\d+) bytes", line)
            dp.check(m, f"{tag}: unreadable memory line {line!r}")
            got[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
        counts = [got[s][0] for s in sorted(got)]
        dp.check(counts == peak_counts, f"{tag}: peak stashed micro-batches per stage "
                 f"{counts}, expected {peak_counts}")
        for s, (n, b) in got.items():
            dp.check(b > 0 and b % n == 0, f"{tag}: stage {s}: {b} bytes for {n} micro-batches")
    if dpsize > 1:
        # megac's default: each rank's buckets start in its stages' backward
        # of the last micro-batch (the equality above covers them).
        m = re.search(r"(\d+) data-parallel gradient buckets all-reduced during", out)
        dp.check(m and int(m.group(1)) >= 1, f"{tag}: no overlapped buckets logged\n{out}")
    if persistent:
        persistent_bytes(tag, ref_out, out, pp, vocab)
    print(f"{tag}: 10 steps, losses {[round(x, 6) for x in l1]}")
    if save:
        # The pipelined checkpoint holds the full model under canonical
        # names (every stage's parameters and Adam moments), equal to the
        # pp=1 run's. (rel 1e-3: the clip coefficient is summed from the
        # stages' partial norms in another order, and ten Adam steps turn its
        # last-bit difference into ~1e-4 of the near-zero biases.)
        for f in ("model.safetensors", "optimizer.safetensors"):
            a = dp.load_safetensors(latest(save_dir, f))
            b = dp.load_safetensors(latest(ref_dir, f))
            dp.check(sorted(a) == sorted(b), f"{tag}: {f} names differ: {sorted(a)} vs "
                     f"{sorted(b)}")
            for k in a:
                compare(f"{tag}: {f} {k}", b[k], a[k], 1e-3)
        # Continuing from the pipelined checkpoint for 2 more steps gives the
        # same losses under pp=1 and pp=2 (checkpoints move between layouts).
        l3, _, _, _ = train(ref, data, f"{tag}-resume-ref", 0, extra + ["--load", save_dir],
                            steps=12, logged=2)
        l4, _, _, _ = train(par, data, f"{tag}-resume", tp * pp * dpsize,
                            extra + ["--load", save_dir], steps=12, logged=2)
        compare(f"{tag}: resumed losses", l3, l4, 1e-5)


def latest(ckpt_dir, name):
    for root, _, files in sorted(os.walk(ckpt_dir), reverse=True):
        if name in files:
            return os.path.join(root, name)
    dp.fail(f"no {name} under {ckpt_dir}")


def errors():
    cases = [
        (sets(2, 256) + ["--pp", "3"], "--pp 3 is more than layers=2"),
        (sets(2, 256) + ["--pp", "2", "--vpp", "2", "--schedule", "interleaved",
                         "--global-batch-size", "4", "--micro-batch-size", "1"],
         "--pp 2 x --vpp 2 = 4 pipeline stages are more than layers=2"),
        (sets(4, 256) + ["--vpp", "2"], "--vpp 2 needs --pp > 1"),
        (sets(4, 256) + ["--pp", "2", "--vpp", "2", "--schedule", "interleaved",
                         "--global-batch-size", "3"],
         "multiple of --pp (2)"),
        (sets(4, 256) + ["--pp", "2", "--dp", "2", "--micro-batch-size", "2",
                         "--global-batch-size", "6"],
         "--global-batch-size 6 is not a multiple of --micro-batch-size 2 times --dp 2"),
    ]
    for args, want in cases:
        p = subprocess.run([megac(), MODEL, "-o", dp.scratch("bad.plan")] + args,
                           capture_output=True, text=True)
        lines = p.stderr.strip().splitlines()
        dp.check(p.returncode == 1 and len(lines) == 1 and "error:" in lines[0]
                 and want in lines[0],
                 f"megac {' '.join(args)}: rc {p.returncode}, stderr {p.stderr!r}, "
                 f"want one error line with {want!r}")
    # World size != T*P*D.
    plan = compile_plan(dp.scratch("pp2.plan"), 2, 256, ["--pp", "2"])
    rng = np.random.default_rng(1)
    data = dp.write_dataset(dp.scratch("data-err"), [rng.integers(0, 256, size=400)])
    p = dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", 1], np_=3, expect_rc=None)
    dp.check(p.returncode != 0 and "world size" in (p.stdout + p.stderr),
             f"a 3-rank launch of a pp=2 plan must be refused: {p.stdout}{p.stderr}")
    # Two ranks given different plans (the same layout, another schedule):
    # each refuses in one line, before any step could hang or mix them.
    other = compile_plan(dp.scratch("pp2-gpipe.plan"), 2, 256,
                         ["--pp", "2", "--schedule", "gpipe"])
    p = dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", 1, ":", "-np", 1,
                dp.ARGS.mega_run, other, "--data", data, "--steps", 1], expect_rc=None)
    lines = [l for l in p.stderr.splitlines() if "error:" in l]
    dp.check(p.returncode != 0 and lines and all(
        "loaded another plan than world rank" in l and "same plan file" in l for l in lines),
        f"ranks with different plans must be refused in one line each: {p.stdout}{p.stderr}")
    # --generate needs a predict program, which pipelined plans do not have.
    p = dp.run([dp.ARGS.mega_run, plan, "--generate", "--prompt", "x", "--tokenizer-model",
                dp.scratch("none.model"), "--load",
                dp.scratch("none")], np_=2, expect_rc=None)
    lines = [l for l in p.stderr.splitlines() if "error:" in l]
    dp.check(p.returncode != 0 and lines and all("--generate needs a plan compiled with --pp 1"
                                                  in l for l in lines),
             f"--generate with a pp=2 plan must be refused in one line: {p.stdout}{p.stderr}")
    print("errors: each refused in one line")


CASES = ["pp_1f1b", "pp_gpipe", "pp_tp", "pp_tp_dp", "pp_interleaved", "pp_awkward", "pp_errors"]


def main():
    args = dp.setup_gpt_script(CASES)
    {"pp_1f1b": lambda: equivalence(2, 256, save=True, peak_counts=[2, 1], persistent=True),
     "pp_gpipe": lambda: equivalence(4, 256, pp=4, schedule="gpipe", peak_counts=[4, 4, 4, 4],
                                     persistent=True),
     "pp_tp": lambda: equivalence(2, 256, tp=2),
     "pp_tp_dp": lambda: equivalence(2, 256, tp=2, dpsize=2),
     "pp_interleaved": lambda: equivalence(4, 256, vpp=2, schedule="interleaved"),
     "pp_awkward": lambda: equivalence(3, 251, tp=2),
     "pp_errors": errors}[args.case]()
    print("PASS " + args.case)


if __name__ == "__main__":
    main()

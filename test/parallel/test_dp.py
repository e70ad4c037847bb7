#!/usr/bin/env python3
"""Data parallelism on MPI ranks (ctest parallel.*).

collectives  closed-form AllReduce/AllGather/ReduceScatter/Send/Recv over MPI
             (comm_test) at tp*dp*pp = 1*2*1, 2*2*1 and 1*2*2 (Megatron's
             rank order: tensor fastest, then data, then pipeline)
dp_bigram    the same model, data and initial weights trained 10 steps at
             dp=1 (B=2, 4 micro-batches, G=8) and at dp=2 under mpirun -np 2
             (B=2, 2 micro-batches per rank, G=8): the logged losses agree to
             rel 1e-5 and --dump-grads to rel 1e-4, with and without
             shuffling, and 5 steps from the single run's saved parameters
             (--load FILE.safetensors); the dp=2 run's checkpoint resumes in a
             dp=1 run. When
             megac accepts --dp, the same for a small GPT compiled by megac.
tp_bigram    the bigram model with wte vocabulary-parallel and proj column-
             parallel (make_test_plan --tp 2) under mpirun -np 2 against the
             unsharded model in one process: losses rel 1e-5, --dump-grads
             (full tensors) rel 1e-4, saved full tensors equal (bitwise at
             initialisation: one step at lr 0), a T=1 parameters file loaded
             at T=2, a T=1 checkpoint resumed at T=1 and T=2 with the same
             losses, and the T=2 checkpoint resumed at T=1.
world_size   a dp=2 plan refuses world size 1 and 3, and WORLD_SIZE=2
             without an MPI launcher, each in one line.
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np

ARGS = None
ERROR_RE = re.compile(r"^mega-run: error: [^\n]+\n$")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def scratch(name):
    return os.path.join(ARGS.scratch, name)


def env(extra=None):
    e = dict(os.environ)
    for k in ("WORLD_SIZE", "RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        e.pop(k, None)
    e.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
              "OMP_NUM_THREADS": "1"})
    e.update(extra or {})
    return e


def run(cmd, np_=1, expect_rc=0, extra_env=None, timeout=60):
    cmd = [str(c) for c in cmd]
    if np_ > 0:
        cmd = [ARGS.mpirun, "-np", str(np_), "--allow-run-as-root", "--oversubscribe",
               "--mca", "btl", "self,vader",
               # containers often forbid the cross-memory-attach syscalls
               "--mca", "btl_vader_single_copy_mechanism", "none",
               "--bind-to", "none"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(extra_env), timeout=timeout)
    if expect_rc is not None and p.returncode != expect_rc:
        fail(f"{' '.join(cmd)}: rc {p.returncode}, expected {expect_rc}\n"
             f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


def setup_gpt_script(cases=None):
    """The command line every megac-based parallel script takes (see
    test/parallel/CMakeLists.txt), with `case` among `cases` when given; sets
    ARGS and an empty scratch directory. Returns the arguments."""
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--mega-run", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--scratch", required=True)
    if cases:
        ap.add_argument("case", choices=list(cases))
    ARGS = ap.parse_args()
    shutil.rmtree(ARGS.scratch, ignore_errors=True)
    os.makedirs(ARGS.scratch)
    return ARGS


def write_dataset(prefix, docs):
    docs = [np.asarray(d, dtype="<u2") for d in docs]
    with open(prefix + ".bin", "wb") as f:
        for d in docs:
            f.write(d.tobytes())
    sizes = np.array([len(d) for d in docs], "<i4")
    ptrs = np.zeros(len(docs), "<i8")
    if len(docs) > 1:
        ptrs[1:] = np.cumsum(sizes[:-1].astype(np.int64)) * 2
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, len(docs), len(docs) + 1))
        f.write(sizes.tobytes() + ptrs.tobytes() + np.arange(len(docs) + 1, dtype="<i8").tobytes())
    return prefix


def load_safetensors(path):
    buf = open(path, "rb").read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    header.pop("__metadata__", None)
    data = buf[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
    return out


def losses(log):
    with open(log) as f:
        return [json.loads(l)["lm_loss"] for l in f if l.strip()]


def compare(name, a, b, rel):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    check(a.shape == b.shape, f"{name}: shapes {a.shape} vs {b.shape}")
    scale = max(np.abs(a).max(), 1e-30)
    err = np.abs(a - b).max() / scale
    check(err <= rel, f"{name}: relative difference {err:.3g} > {rel}")


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------- cases

def case_collectives():
    for tp, dp, pp in ((1, 2, 1), (2, 2, 1), (1, 2, 2)):
        p = run([ARGS.comm_test, tp, dp, pp], np_=tp * dp * pp, timeout=90)
        check(f"ok: {tp * dp * pp} ranks (mpi), tp={tp} dp={dp} pp={pp}" in p.stdout,
              f"comm_test {tp} {dp} {pp}: {p.stdout!r}")
    # World size 1: the single-process communicator (no MPI, no mpirun).
    p = run([ARGS.comm_test, 1, 1, 1], np_=0)
    check("ok: 1 ranks (single-process)" in p.stdout, p.stdout)


def train_pair(plan1, plan2, data, tag, extra, steps=10):
    """Runs plan1 (one process) and plan2 (dp=2 or tp=2, mpirun -np 2)."""
    out = {}
    for name, plan, np_ in (("dp1", plan1, 0), ("dp2", plan2, 2)):
        log = scratch(f"{tag}-{name}.jsonl")
        if os.path.exists(log):
            os.remove(log)
        grads = scratch(f"{tag}-{name}-grads.safetensors")
        save = fresh(scratch(f"{tag}-{name}-ckpt"))
        p = run([ARGS.mega_run, plan, "--data", data, "--steps", steps, "--log-interval", 1,
                 "--log-file", log, "--dump-grads", grads, "--save", save] + extra, np_=np_)
        lines = [l for l in p.stdout.splitlines() if l.startswith(" iteration")]
        check(len(lines) == steps, f"{tag} {name}: {len(lines)} log lines (only rank 0 logs)\n"
              + p.stdout)
        out[name] = (losses(log), load_safetensors(grads), save)
    l1, g1, _ = out["dp1"]
    l2, g2, _ = out["dp2"]
    compare(f"{tag}: losses", l1, l2, 1e-5)
    check(sorted(g1) == sorted(g2), f"{tag}: grad names {sorted(g1)} vs {sorted(g2)}")
    for k in g1:
        compare(f"{tag}: grad {k}", g1[k], g2[k], 1e-4)
    return out


def case_dp_bigram():
    rng = np.random.default_rng(5)
    data = write_dataset(scratch("data"), [rng.integers(0, 16, size=n) for n in (300, 200, 150)])
    plan1 = scratch("dp1.plan")
    plan2 = scratch("dp2.plan")
    subprocess.run([ARGS.make_plan, plan1, "--micro-batch-size", "2", "--num-microbatches", "4",
                    "--clip", "1.0"], check=True)
    subprocess.run([ARGS.make_plan, plan2, "--micro-batch-size", "2", "--num-microbatches", "2",
                    "--dp", "2", "--clip", "1.0"], check=True)
    first = train_pair(plan1, plan2, data, "noshuffle", ["--no-shuffle", "--seed", "7"])
    # Same weights from a file: the single run's saved parameters.
    model = os.path.join(first["dp1"][2], "iter_0000010", "model.safetensors")
    check(os.path.exists(model), f"no {model}")
    train_pair(plan1, plan2, data, "load", ["--no-shuffle", "--load", model], steps=5)
    out = train_pair(plan1, plan2, data, "shuffle", ["--seed", "11", "--lr", "0.05"])
    # Only rank 0 saved; the checkpoint resumes in a single-process run.
    save2 = out["dp2"][2]
    check(os.path.exists(os.path.join(save2, "latest_checkpointed_iteration.txt"))
          or any(n.startswith("iter_") for n in os.listdir(save2)),
          f"dp=2 run saved nothing in {save2}: {os.listdir(save2)}")
    p = run([ARGS.mega_run, plan1, "--data", data, "--steps", 12, "--load", save2,
             "--log-interval", 1], np_=0)
    check("resumed from" in p.stdout and "at iteration 10" in p.stdout, p.stdout)


def case_tp_bigram():
    rng = np.random.default_rng(5)
    data = write_dataset(scratch("data"), [rng.integers(0, 16, size=n) for n in (300, 200, 150)])
    plan1 = scratch("tp1.plan")
    plan2 = scratch("tp2.plan")
    common = ["--micro-batch-size", "2", "--num-microbatches", "4", "--clip", "0.25"]
    subprocess.run([ARGS.make_plan, plan1] + common, check=True)
    subprocess.run([ARGS.make_plan, plan2, "--tp", "2"] + common, check=True)

    # Initialisation: the full weights drawn at T=2 are the T=1 ones, bit for
    # bit (one step at lr 0 changes nothing; the saves gather the shards).
    init = train_pair(plan1, plan2, data, "init", ["--no-shuffle", "--seed", "7", "--lr", "0"],
                      steps=1)
    # (The moments hold one step's gradients: close, not bitwise.)
    for f in ("model.safetensors", "optimizer.safetensors"):
        a = load_safetensors(os.path.join(init["dp1"][2], "iter_0000001", f))
        b = load_safetensors(os.path.join(init["dp2"][2], "iter_0000001", f))
        check(sorted(a) == sorted(b), f"init {f}: names {sorted(a)} vs {sorted(b)}")
        for k in a:
            check(a[k].shape == b[k].shape, f"init {f}: {k} {a[k].shape} vs {b[k].shape}")
            if f == "model.safetensors":
                check(np.array_equal(a[k], b[k]), f"init: {k} differs between T=1 and T=2")
            else:
                compare(f"init {f} {k}", a[k], b[k], 1e-4)

    # Training (with clipping: the norm of the shards meets over the group).
    first = train_pair(plan1, plan2, data, "train", ["--no-shuffle", "--seed", "7"])
    ck1, ck2 = first["dp1"][2], first["dp2"][2]
    for f in ("model.safetensors", "optimizer.safetensors"):
        a = load_safetensors(os.path.join(ck1, "iter_0000010", f))
        b = load_safetensors(os.path.join(ck2, "iter_0000010", f))
        check(sorted(a) == sorted(b), f"{f}: names {sorted(a)} vs {sorted(b)}")
        for k in a:
            compare(f"saved {f} {k}", a[k], b[k], 1e-4)

    # A T=1 parameters file loaded at T=1 and T=2.
    model = os.path.join(ck1, "iter_0000010", "model.safetensors")
    train_pair(plan1, plan2, data, "load", ["--no-shuffle", "--load", model], steps=5)

    # The T=1 checkpoint (with the moments) resumed at T=1 and at T=2.
    res = {}
    for name, plan, np_ in (("t1", plan1, 0), ("t2", plan2, 2)):
        log = scratch(f"resume-{name}.jsonl")
        p = run([ARGS.mega_run, plan, "--data", data, "--steps", 13, "--load", ck1,
                 "--no-shuffle", "--log-interval", 1, "--log-file", log], np_=np_)
        check("resumed from" in p.stdout and "at iteration 10" in p.stdout, p.stdout)
        res[name] = losses(log)
    check(len(res["t1"]) == 3, f"resume: {res['t1']}")
    compare("resume T=1 checkpoint at T=1 and T=2: losses", res["t1"], res["t2"], 1e-5)

    # And back: the T=2 checkpoint resumed at T=1.
    p = run([ARGS.mega_run, plan1, "--data", data, "--steps", 12, "--load", ck2,
             "--log-interval", 1], np_=0)
    check("resumed from" in p.stdout and "at iteration 10" in p.stdout, p.stdout)


def case_dp_gpt():
    """GPT compiled by megac at dp=1 and dp=2 (registered only in builds that have megac)."""
    megac = os.path.join(ARGS.bin_dir, "megac")
    model = os.path.join(os.path.dirname(__file__), "..", "..", "models", "gpt.mlir")
    check(os.path.exists(megac), f"no megac at {megac}")
    sets = ["--set", "layers=2", "--set", "hidden=32", "--set", "heads=2", "--set", "vocab=64",
            "--set", "seq=16"]
    plans = {}
    # dp=2 with small buckets (2000 elements: 14 of them), reduced during the
    # last micro-batch's backward (megac's default), and the same reduced in
    # the optimizer step (--overlap-grad-reduce=false).
    for name, flags in ((1, ["--dp", "1"]), (2, ["--dp", "2", "--ddp-bucket-size", "2000"]),
                        ("2-optimizer", ["--dp", "2", "--ddp-bucket-size", "2000",
                                         "--overlap-grad-reduce=false"])):
        plans[name] = scratch(f"gpt-dp{name}.plan")
        subprocess.run([megac, model, "-o", plans[name], "--micro-batch-size", "4",
                        "--global-batch-size", "8"] + flags + sets, check=True)
    rng = np.random.default_rng(9)
    data = write_dataset(scratch("gpt-data"), [rng.integers(0, 64, size=n) for n in (900, 700)])
    out = train_pair(plans[1], plans[2], data, "gpt", ["--no-shuffle", "--seed", "3"])
    print(f"dp_gpt: 10 steps, dp=1 losses {[round(x, 6) for x in out['dp1'][0]]}")
    # The overlapped run said so; without overlap the sums are the same
    # (two ranks: a + b either way), so the losses are bitwise equal.
    log = scratch("gpt-dp2-optimizer.jsonl")
    if os.path.exists(log):
        os.remove(log)
    args = ["--data", data, "--steps", 10, "--log-interval", 1, "--no-shuffle", "--seed", "3"]
    p = run([ARGS.mega_run, plans[2]] + args, np_=2)
    m = re.search(r"(\d+) data-parallel gradient buckets all-reduced during the last "
                  r"micro-batch's backward", p.stdout)
    check(m and int(m.group(1)) >= 3, "dp_gpt: no overlapped buckets logged\n" + p.stdout)
    p = run([ARGS.mega_run, plans["2-optimizer"], "--log-file", log] + args, np_=2)
    check("gradient buckets all-reduced during" not in p.stdout,
          "dp_gpt: --overlap-grad-reduce=false still overlaps\n" + p.stdout)
    check(losses(log) == out["dp2"][0],
          f"dp_gpt: overlapped {out['dp2'][0]} vs in the optimizer {losses(log)}")
    print(f"dp_gpt: {m.group(1)} buckets overlapped; losses equal to the optimizer-step reduction")


def case_world_size():
    plan2 = scratch("dp2.plan")
    subprocess.run([ARGS.make_plan, plan2, "--dp", "2"], check=True)
    rng = np.random.default_rng(1)
    data = write_dataset(scratch("data"), [rng.integers(0, 16, size=200)])
    base = [ARGS.mega_run, plan2, "--data", data, "--steps", 1]
    p = run(base, np_=0, expect_rc=1)
    check(ERROR_RE.match(p.stderr) and "world size is 1" in p.stderr
          and "tp*pp*dp = 1*1*2 = 2" in p.stderr, f"world size 1: {p.stderr!r}")
    p = run(base, np_=3, expect_rc=None)
    check(p.returncode != 0 and "world size is 3 (from OMPI_COMM_WORLD_SIZE)" in p.stderr
          and "tp*pp*dp = 1*1*2 = 2" in p.stderr, f"world size 3: {p.stderr!r}")
    p = run(base, np_=0, expect_rc=1, extra_env={"WORLD_SIZE": "2", "RANK": "0"})
    check(ERROR_RE.match(p.stderr) and "MPI launcher" in p.stderr, f"WORLD_SIZE=2: {p.stderr!r}")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--mega-run", required=True)
    ap.add_argument("--make-plan", required=True)
    ap.add_argument("--comm-test", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("case", choices=["collectives", "dp_bigram", "dp_gpt", "tp_bigram",
                                     "world_size"])
    ARGS = ap.parse_args()
    shutil.rmtree(ARGS.scratch, ignore_errors=True)
    os.makedirs(ARGS.scratch)
    {"collectives": case_collectives, "dp_bigram": case_dp_bigram, "dp_gpt": case_dp_gpt,
     "tp_bigram": case_tp_bigram, "world_size": case_world_size}[ARGS.case]()
    print("PASS " + ARGS.case)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""End-to-end tests of mega-run on the bigram test plan (TestPlans.h).

Each case is one ctest entry:  test_cli.py --mega-run BIN --make-plan BIN
--scratch DIR CASE.  The closed forms (loss, gradients, eval loss) are
computed here with numpy from parameters this script writes itself, so they
do not depend on anything mega-run computes.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np

ARGS = None
ERROR_RE = re.compile(r"^mega-run: error: [^\n]+\n$")
LOG_RE = re.compile(
    r"^ iteration +(\d+)/ +(\d+) \| consumed samples: +(\d+) \| elapsed time per iteration \(ms\): "
    r"[0-9.]+ \| throughput per GPU \(TFLOP/s/GPU\): [0-9.]+ \| learning rate: [0-9.]+E[-+]\d+ \| "
    r"global batch size: +(\d+) \| lm loss: ([-0-9.]+E[-+]\d+|nan) \| loss scale: 1\.0 \| "
    r"grad norm: ([0-9.]+|nan|inf) \| number of skipped iterations: +(\d+) \| "
    r"number of nan iterations: +(\d+) \|$")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ----------------------------------------------------------------------------- helpers
def scratch(name):
    return os.path.join(ARGS.scratch, name)


def run(args, env=None, timeout=120, expect_rc=None):
    e = dict(os.environ)
    for k in ("WORLD_SIZE", "RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
              "SLURM_NTASKS", "SLURM_PROCID"):
        e.pop(k, None)
    e.update(env or {})
    p = subprocess.run([ARGS.mega_run] + [str(a) for a in args], capture_output=True,
                       text=True, env=e, timeout=timeout)
    if expect_rc is not None and p.returncode != expect_rc:
        raise Failure(f"mega-run {' '.join(map(str, args))}: rc {p.returncode}, "
                      f"expected {expect_rc}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def expect_error(args, needle, env=None):
    p = run(args, env=env)
    check(p.returncode == 1, f"{args}: rc {p.returncode}, expected 1 (stderr {p.stderr!r})")
    check(ERROR_RE.match(p.stderr), f"{args}: stderr is not one error line: {p.stderr!r}")
    check(needle in p.stderr, f"{args}: error {p.stderr.strip()!r} lacks {needle!r}")


# What `--device cuda` says where it cannot run: a build without the CUDA
# backend, or a machine without a usable GPU.
CUDA_UNAVAILABLE = ("built without the CUDA backend", "no CUDA device available")


def expect_error_any(args, needles, env=None):
    p = run(args, env=env)
    check(p.returncode == 1, f"{args}: rc {p.returncode}, expected 1 (stderr {p.stderr!r})")
    check(ERROR_RE.match(p.stderr), f"{args}: stderr is not one error line: {p.stderr!r}")
    check(any(n in p.stderr for n in needles),
          f"{args}: error {p.stderr.strip()!r} lacks any of {needles!r}")


def has_gpu():
    """True when an NVIDIA GPU is visible (nvidia-smi lists one)."""
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and "GPU" in r.stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


def make_plan(path, **opts):
    cmd = [ARGS.make_plan, path]
    for k, v in opts.items():
        if k == "set":
            for kv in v:
                cmd += ["--set", kv]
        else:
            cmd += ["--" + k.replace("_", "-"), str(v)]
    subprocess.run(cmd, check=True)
    return path


def write_dataset(prefix, docs, code=8):
    """Megatron MMIDIDX, one sequence per document (written from the layout)."""
    dt = {8: "<u2", 4: "<i4"}[code]
    docs = [np.asarray(d, dtype=dt) for d in docs]
    with open(prefix + ".bin", "wb") as f:
        for d in docs:
            f.write(d.tobytes())
    sizes = np.array([len(d) for d in docs], "<i4")
    ptrs = np.zeros(len(docs), "<i8")
    if len(docs) > 1:
        ptrs[1:] = np.cumsum(sizes[:-1].astype(np.int64)) * np.dtype(dt).itemsize
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, len(docs), len(docs) + 1))
        f.write(sizes.tobytes() + ptrs.tobytes() + np.arange(len(docs) + 1, dtype="<i8").tobytes())
    return prefix


def random_docs(n, vocab, seed):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, vocab, size=n)
    docs, i = [], 0
    while i < n:
        k = int(rng.integers(1, 40))
        docs.append(toks[i:i + k])
        i += k
    return docs, toks


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def load_safetensors(path):
    buf = open(path, "rb").read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4"}[info["dtype"]]
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"])
    return out, meta


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


# ----------------------------------------------------------------------------- numpy model
V, H, S, B, M = 16, 8, 8, 2, 2  # the default bigram plan
G = B * M


def random_params(seed, vocab=V, hidden=H):
    rng = np.random.default_rng(seed)
    return {"wte.weight": rng.normal(0, 0.5, (vocab, hidden)).astype(np.float32),
            "proj.weight": rng.normal(0, 0.5, (hidden, vocab)).astype(np.float32),
            "proj.bias": rng.normal(0, 0.1, (vocab,)).astype(np.float32)}


def forward_backward(p, tokens, targets, scale):
    wte, W, b = (p[k].astype(np.float64) for k in ("wte.weight", "proj.weight", "proj.bias"))
    tokens, targets = tokens.reshape(-1), targets.reshape(-1)
    rows = len(tokens)
    a = np.tanh(wte[tokens])
    z = a @ W + b
    zmax = z.max(axis=1, keepdims=True)
    lse = (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[:, 0]
    loss = float(np.mean(lse - z[np.arange(rows), targets]))
    prob = np.exp(z - lse[:, None])
    prob[np.arange(rows), targets] -= 1.0
    dz = prob * scale / rows
    da = dz @ W.T
    dh = da * (1 - a * a)
    gwte = np.zeros_like(wte)
    np.add.at(gwte, tokens, dh)
    return loss, {"wte.weight": gwte, "proj.weight": a.T @ dz, "proj.bias": dz.sum(axis=0)}


def sample(stream, i):
    s = stream[i * S:i * S + S + 1]
    return s[:S], s[1:]


def microbatch(stream, first):
    rows = [sample(stream, i) for i in range(first, first + B)]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def setup_basic(vocab=V, ntokens=4000, seed=1):
    plan = make_plan(scratch("bigram.plan"), vocab=vocab)
    docs, stream = random_docs(ntokens, vocab, seed)
    data = write_dataset(scratch("train"), docs)
    return plan, data, stream


# ----------------------------------------------------------------------------- cases
def case_plan_errors():
    plan, data, _ = setup_basic()
    good = open(plan, "rb").read()
    expect_error([scratch("missing.plan"), "--data", data, "--steps", 1], "cannot open plan")
    expect_error(["/dev/zero", "--data", data, "--steps", 1], "not a regular file")
    expect_error([ARGS.scratch, "--data", data, "--steps", 1], "not a regular file")
    open(scratch("empty.plan"), "wb").close()
    expect_error([scratch("empty.plan"), "--data", data, "--steps", 1], "bad magic")
    open(scratch("magic.plan"), "wb").write(b"NOTAPLAN" + good[8:])
    expect_error([scratch("magic.plan"), "--data", data, "--steps", 1], "bad magic")
    open(scratch("trunc.plan"), "wb").write(good[:len(good) // 2])
    expect_error([scratch("trunc.plan"), "--data", data, "--steps", 1], "truncated")
    open(scratch("hdr.plan"), "wb").write(good[:20])
    expect_error([scratch("hdr.plan"), "--data", data, "--steps", 1], "truncated")
    open(scratch("version.plan"), "wb").write(good[:8] + struct.pack("<I", 99) + good[12:])
    expect_error([scratch("version.plan"), "--data", data, "--steps", 1], "version 99")
    flipped = bytearray(good)
    flipped[len(good) - 5] ^= 0x40
    open(scratch("flip.plan"), "wb").write(bytes(flipped))
    expect_error([scratch("flip.plan"), "--data", data, "--steps", 1], "checksum")
    # Random damage anywhere must never crash.
    rng = random.Random(5)
    for k in range(30):
        bad = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        if rng.random() < 0.3:
            bad = bad[:rng.randrange(len(bad))]
        if bytes(bad) == good:
            continue
        open(scratch("fuzz.plan"), "wb").write(bytes(bad))
        p = run([scratch("fuzz.plan"), "--data", data, "--steps", 1])
        check(p.returncode == 1 and ERROR_RE.match(p.stderr),
              f"fuzzed plan {k}: rc {p.returncode}, stderr {p.stderr!r}")


def case_cli_errors():
    plan, data, _ = setup_basic()
    base = [plan, "--data", data, "--steps", 2]
    expect_error([], "no plan given")
    expect_error(base + ["--foo"], "unknown option '--foo'")
    expect_error(base + ["--lr"], "--lr needs a value")
    expect_error([plan, "--data", data, "--steps", "abc"], "--steps expects an integer, got 'abc'")
    expect_error([plan, "--data", data, "--steps", "0"], "--steps must be at least 1")
    expect_error(base + ["--lr", "fast"], "--lr expects a number")
    expect_error(base + ["--lr", "-1"], "must not be negative")
    expect_error(base + ["--seed", "-3"], "--seed expects a non-negative integer")
    expect_error(base + ["--log-interval", "1.5"], "expects an integer")
    expect_error(base + ["--lr-schedule", "linearish"], "linearish")
    expect_error(base + ["--save-interval", "1"], "--save-interval needs --save")
    expect_error(base + ["--eval-interval", "1"], "--eval-interval needs --eval-data")
    expect_error([plan, "--steps", 1], "no training data given")
    expect_error([plan, "--data", data], "no iteration count")
    expect_error(base + ["extra"], "unexpected argument 'extra'")
    # Without a CUDA build or a GPU: one line saying which; with a GPU: this
    # plan has no cuda programs.
    expect_error_any(base + ["--device", "cuda"], CUDA_UNAVAILABLE + ("no programs for device 'cuda'",))
    expect_error(base + ["--device", "tpu"], "'cpu' or 'cuda'")
    expect_error(base + ["--comm", "mpi"], "--comm must be 'auto', 'nccl' or 'host', not 'mpi'")
    expect_error(base + ["--comm-timeout", "0"], "--comm-timeout must be a number of seconds")
    expect_error(base + ["--comm-timeout", "soon"], "--comm-timeout expects a number")
    expect_error(base + ["--attention-backend", "flash"],
                 "--attention-backend must be 'auto', 'fused' or 'local', not 'flash'")
    # A cuda option: the CPU backend has one attention and says nothing of it.
    p = run(base + ["--attention-backend", "fused"], expect_rc=0)
    check("attention:" not in p.stdout, f"the cpu run spoke of attention: {p.stdout!r}")
    expect_error(base + ["--comm", "nccl", "--device", "cpu"],
                 "--comm nccl needs the cuda backend (this run uses cpu)")
    # Another cuda option the CPU backend has nothing to do with (on by
    # default there: --gemm-autotune says so, --no-gemm-autotune turns it off).
    for flag in ("--gemm-autotune", "--no-gemm-autotune", "--gemm-autotune-wide"):
        p = run(base + [flag], expect_rc=0)
        check("autotune" not in p.stdout + p.stderr,
              f"the cpu run with {flag} spoke of autotuning: {p.stdout!r} {p.stderr!r}")
    expect_error(base + ["--no-gemm-autotune", "--gemm-autotune"],
                 "--no-gemm-autotune cannot go with --gemm-autotune")
    expect_error(base + ["--gemm-autotune-file", scratch("x.txt"), "--no-gemm-autotune"],
                 "--no-gemm-autotune cannot go with --gemm-autotune-file")
    expect_error(base + ["--gemm-autotune-wide", "--no-gemm-autotune"],
                 "--no-gemm-autotune cannot go with --gemm-autotune-wide")
    # --wgrad-stream splits a CUDA graph: nothing to do without graphs, and
    # the CPU backend records none (it runs and says nothing of streams).
    expect_error(base + ["--wgrad-stream", "--no-cuda-graph"],
                 "--wgrad-stream splits a program's CUDA graph over two streams; "
                 "it cannot go with --no-cuda-graph")
    p = run(base + ["--wgrad-stream"], expect_rc=0)
    check("side stream" not in p.stdout + p.stderr,
          f"the cpu run spoke of a side stream: {p.stdout!r} {p.stderr!r}")
    # Its kept choices: read before any backend exists (a malformed file is
    # one line naming the line), never written by a backend that times none.
    choices = scratch("choices.txt")
    p = run(base + ["--gemm-autotune-file", choices], expect_rc=0)
    check(not os.path.exists(choices), "the cpu run wrote GEMM choices")
    with open(choices, "w") as f:
        f.write("device X\ncublaslt 130100\ngemm 1 2 3\n")
    expect_error(base + ["--gemm-autotune-file", choices],
                 "choices.txt:3: 'gemm' needs 17 integers")
    # --comm host is always possible; one rank says nothing about it.
    p = run(base + ["--comm", "host", "--comm-timeout", "5"], expect_rc=0)
    check("collectives:" not in p.stdout, f"one rank logged its collectives: {p.stdout!r}")
    expect_error(base + ["--prompt", "hi"], "only applies with --generate")
    expect_error([plan, "--generate", "--prompt", "x", "--load", "c", "--tokenizer-model", "m",
                  "--data", data], "does not apply to --generate")
    expect_error([plan, "--generate", "--load", "c", "--tokenizer-model", "m"], "needs --prompt")
    expect_error(base, "world size is 2 (from WORLD_SIZE)", env={"WORLD_SIZE": "2"})
    expect_error(base, "world size is 4 (from OMPI_COMM_WORLD_SIZE)",
                 env={"OMPI_COMM_WORLD_SIZE": "4"})
    expect_error(base, "SLURM_NTASKS='x'", env={"SLURM_NTASKS": "x"})
    tp2 = make_plan(scratch("tp2.plan"), set=["tp=2"])
    expect_error([tp2, "--data", data, "--steps", 1], "tp*pp*dp = 2*1*1 = 2")
    expect_error([tp2, "--data", data, "--steps", 1], "MPI launcher", env={"WORLD_SIZE": "2"})
    cuda = make_plan(scratch("cuda.plan"), target="cuda")
    p = run([cuda, "--data", data, "--steps", 1])
    if p.returncode != 0 or not has_gpu():  # on a GPU machine the cuda plan may just train
        check(p.returncode == 1 and ERROR_RE.match(p.stderr)
              and any(n in p.stderr for n in CUDA_UNAVAILABLE),
              f"cuda plan without a GPU: rc {p.returncode}, stderr {p.stderr!r}")
    expect_error([cuda, "--data", data, "--steps", 1, "--device", "cpu"], "compiled for cuda")
    p = run(base + ["--steps=1", "--log-interval=1"], env={"WORLD_SIZE": "1"}, expect_rc=0)
    check(" iteration        1/       1 |" in p.stdout, "--flag=value form")
    p = run(["--help"], expect_rc=0)
    check("usage:" in p.stdout, "--help prints usage")


def case_data_errors():
    plan, data, _ = setup_basic()
    base = [plan, "--steps", 1]
    expect_error(base + ["--data", scratch("nothing")], "nothing")
    docs, _ = random_docs(500, 40, 2)
    write_dataset(scratch("bigvocab"), docs)
    expect_error(base + ["--data", scratch("bigvocab")], "but the plan's vocab is 16")
    write_dataset(scratch("bigid"), [np.array([1, 2, 3]), np.array([4, 17, 5]), np.array([1] * 50)])
    expect_error(base + ["--data", scratch("bigid")], "token id 17")
    write_dataset(scratch("tiny"), [np.array([1, 2, 3, 4, 5])])
    expect_error(base + ["--data", scratch("tiny")], "fewer than one sample")
    shutil.copy(data + ".bin", scratch("corrupt.bin"))
    idx = open(data + ".idx", "rb").read()
    open(scratch("corrupt.idx"), "wb").write(b"MMIDIDY" + idx[7:])
    expect_error(base + ["--data", scratch("corrupt")], "bad magic")
    open(scratch("corrupt.idx"), "wb").write(idx[:-4])
    expect_error(base + ["--data", scratch("corrupt")], "corrupt.idx")
    open(scratch("corrupt.idx"), "wb").write(idx)
    open(scratch("corrupt.bin"), "ab").write(b"\x00")
    expect_error(base + ["--data", scratch("corrupt")], "corrupt.bin")
    expect_error(base + ["--data", data, "--eval-data", scratch("tiny")], "fewer than one")
    expect_error(base + ["--data", data, "--log-file", scratch("no/such/dir/log.jsonl")],
                 "cannot open log file")


def case_train_log():
    plan, data, stream = setup_basic()
    params = random_params(3)
    save_safetensors(scratch("init.safetensors"), params)
    log = scratch("log.jsonl")
    steps, warmup, lr, min_lr = 12, 3, 0.05, 0.005
    p = run([plan, "--data", data, "--steps", steps, "--lr", lr, "--min-lr", min_lr,
             "--lr-schedule", "cosine", "--warmup", warmup, "--no-shuffle", "--log-interval", 1,
             "--log-file", log, "--load", scratch("init.safetensors")], expect_rc=0)
    check(p.stderr == "", f"stderr not empty when not a terminal: {p.stderr!r}")
    lines = [l for l in p.stdout.splitlines() if l.startswith(" iteration")]
    check(len(lines) == steps, f"{len(lines)} log lines, expected {steps}")
    for k, l in enumerate(lines, 1):
        m = LOG_RE.match(l)
        check(m, f"log line not Megatron-shaped: {l!r}")
        check(int(m.group(1)) == k and int(m.group(2)) == steps, l)
        check(int(m.group(3)) == k * G and int(m.group(4)) == G, l)
    recs = read_jsonl(log)
    check(len(recs) == steps, "one JSON line per log line")
    keys = {"iteration", "consumed_samples", "elapsed_ms", "tflops", "lr", "global_batch_size",
            "lm_loss", "grad_norm", "skipped", "nan"}
    for k, r in enumerate(recs, 1):
        check(keys <= set(r), f"JSON line keys {sorted(r)}")
        check(r["iteration"] == k and r["consumed_samples"] == k * G, f"record {r}")
        s = k - 1  # Megatron: iteration k uses the lr after k-1 steps
        if s <= warmup:
            want = lr * s / warmup
        else:
            want = min_lr + (lr - min_lr) * 0.5 * (1 + np.cos(np.pi * (s - warmup) / (steps - warmup)))
        check(abs(r["lr"] - np.float32(want)) <= 1e-7 * max(lr, 1e-30) + 1e-12,
              f"iteration {k}: lr {r['lr']} expected {want}")
    # Iteration 1's loss and grad norm in closed form.
    loss, norm2 = 0.0, {}
    for m in range(M):
        x, y = microbatch(stream, m * B)
        l, g = forward_backward(params, x, y, 1.0 / M)
        loss += l / M
        for n, v in g.items():
            norm2[n] = norm2.get(n, 0) + v
    gnorm = np.sqrt(sum((v ** 2).sum() for v in norm2.values()))
    check(abs(recs[0]["lm_loss"] - loss) < 1e-5 * abs(loss), f"loss {recs[0]['lm_loss']} vs {loss}")
    check(abs(recs[0]["grad_norm"] - gnorm) < 1e-4 * gnorm, f"grad norm {recs[0]['grad_norm']} vs {gnorm}")
    # The progress bar appears on a terminal (stderr a pty), on stderr only.
    import pty
    master, slave = pty.openpty()
    e = dict(os.environ)
    e.pop("WORLD_SIZE", None)
    proc = subprocess.Popen([ARGS.mega_run, plan, "--data", data, "--steps", "30"],
                            stdout=subprocess.PIPE, stderr=slave, env=e)
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    bar = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        bar += chunk
    os.close(master)
    check(proc.returncode == 0, "run with a terminal")
    check(b"30/30" in bar and b"ETA" in bar and b"\r" in bar, f"progress bar on a tty: {bar[-200:]!r}")
    check(b"\r" not in out and b"ETA" not in out, "no progress bar on stdout")
    # Averaging over a log interval, and learning on a learnable stream.
    cyc = np.tile(np.arange(V), 300)
    write_dataset(scratch("cyclic"), [cyc[:1000], cyc[1000:]])
    log2 = scratch("log2.jsonl")
    p = run([plan, "--data", scratch("cyclic"), "--steps", 60, "--lr", 0.05, "--log-interval", 20,
             "--log-file", log2], expect_rc=0)
    recs = read_jsonl(log2)
    check([r["iteration"] for r in recs] == [20, 40, 60], "log interval 20")
    check(recs[-1]["lm_loss"] < 0.5 * recs[0]["lm_loss"],
          f"loss did not fall: {[r['lm_loss'] for r in recs]}")


def _weights_equal(a_dir, b_dir):
    for f in ("model.safetensors", "optimizer.safetensors"):
        ta, ma = load_safetensors(os.path.join(a_dir, f))
        tb, mb = load_safetensors(os.path.join(b_dir, f))
        check(sorted(ta) == sorted(tb), f"{f}: tensor names differ")
        for n in ta:
            check(np.array_equal(ta[n], tb[n]), f"{f}: tensor {n} differs after resume")


def case_resume():
    # 100 tokens = 12 samples = 3 iterations per epoch: the 6 iterations
    # cross two epoch boundaries, one of them at the resume point.
    plan, data, _ = setup_basic(ntokens=100)
    for shuffle in (True, False):
        flags = [] if shuffle else ["--no-shuffle"]
        tag = "s" if shuffle else "n"
        common = [plan, "--data", data, "--lr", 0.02, "--lr-schedule", "cosine", "--warmup", 2,
                  "--log-interval", 1, "--seed", 7] + flags
        run(common + ["--steps", 6, "--save", scratch(f"A{tag}"), "--log-file",
                      scratch(f"A{tag}.jsonl")], expect_rc=0)
        run(common + ["--steps", 3, "--save", scratch(f"B{tag}")], expect_rc=0)
        check(open(scratch(f"B{tag}/latest_checkpointed_iteration.txt")).read().strip() == "3",
              "tracker names iteration 3")
        # The cosine schedule is relative to --steps, so the resumed run
        # names the same total as the straight one.
        p = run(common + ["--steps", 6, "--load", scratch(f"B{tag}"), "--save", scratch(f"C{tag}"),
                          "--log-file", scratch(f"C{tag}.jsonl")], expect_rc=0)
        check("resumed from" in p.stdout, "resume message")
        a = read_jsonl(scratch(f"A{tag}.jsonl"))
        c = read_jsonl(scratch(f"C{tag}.jsonl"))
        check([r["iteration"] for r in c] == [4, 5, 6], f"resumed iterations {c}")
        for ra, rc in zip(a[3:], c):
            for k in ("lm_loss", "grad_norm", "lr", "consumed_samples"):
                check(ra[k] == rc[k], f"shuffle={shuffle} iteration {ra['iteration']}: "
                                      f"{k} {ra[k]!r} straight vs {rc[k]!r} resumed")
        _weights_equal(scratch(f"A{tag}/iter_0000006"), scratch(f"C{tag}/iter_0000006"))
        _, meta = load_safetensors(scratch(f"C{tag}/iter_0000006/model.safetensors"))
        check(meta["iteration"] == "6" and meta["consumed_samples"] == str(6 * G), f"metadata {meta}")
        for k in ("rng_state", "data_seed", "data_epoch", "data_position", "plan_config_hash"):
            check(k in meta, f"metadata lacks {k}")
    # Loading a checkpoint at or past --steps trains nothing and succeeds.
    p = run([plan, "--data", data, "--steps", 3, "--load", scratch("Bs")], expect_rc=0)
    check("nothing to train" in p.stdout, "already-done message")


def case_crash_safety():
    plan = make_plan(scratch("big.plan"), vocab=512, hidden=128, seq=16)
    docs, _ = random_docs(20000, 512, 4)
    data = write_dataset(scratch("train"), docs)
    ck = scratch("ckpt")
    rng = random.Random(11)
    kills = 0
    for attempt in range(6):
        args = [plan, "--data", data, "--steps", 100000, "--save", ck, "--save-interval", 1,
                "--log-interval", 1000]
        if os.path.exists(os.path.join(ck, "latest_checkpointed_iteration.txt")):
            args += ["--load", ck]
        e = dict(os.environ)
        e.pop("WORLD_SIZE", None)
        proc = subprocess.Popen([ARGS.mega_run] + [str(a) for a in args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        time.sleep(rng.uniform(0.4, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        tracker = os.path.join(ck, "latest_checkpointed_iteration.txt")
        if not os.path.exists(tracker):
            continue  # killed before the first save completed
        it = int(open(tracker).read())
        # The tracker's checkpoint parses completely and loads.
        d = os.path.join(ck, "iter_%07d" % it)
        t, meta = load_safetensors(os.path.join(d, "model.safetensors"))
        check(meta["iteration"] == str(it), "model metadata names the tracker's iteration")
        load_safetensors(os.path.join(d, "optimizer.safetensors"))
        run([plan, "--data", data, "--steps", it + 1, "--load", ck, "--log-interval", 1],
            expect_rc=0)
    check(kills >= 3, f"only {kills} runs were killed mid-flight")
    # The states a crash can leave at each step of a save, built by hand:
    # (1) a new iteration directory with a partial model temp file, (2) a
    # complete model and a partial optimizer temp file, (3) both complete and
    # a partial tracker temp file. The tracker still names the previous
    # iteration in every case, and it must load.
    it = int(open(os.path.join(ck, "latest_checkpointed_iteration.txt")).read())
    prev = os.path.join(ck, "iter_%07d" % it)
    new = os.path.join(ck, "iter_%07d" % (it + 1))
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new)
    model = open(os.path.join(prev, "model.safetensors"), "rb").read()
    opt = open(os.path.join(prev, "optimizer.safetensors"), "rb").read()
    stages = [("model.safetensors.tmp.999999", model[:len(model) // 3]),
              ("model.safetensors", model),
              ("optimizer.safetensors.tmp.999998", opt[:100]),
              ("optimizer.safetensors", opt)]
    for name, content in stages:
        open(os.path.join(new, name), "wb").write(content)
        open(os.path.join(ck, "latest_checkpointed_iteration.txt.tmp.999997"), "w").write("")
        p = run([plan, "--data", data, "--steps", it + 1, "--load", ck, "--log-interval", 1],
                expect_rc=0)
        check(f"at iteration {it}," in p.stdout, f"crash state {name}: loaded {p.stdout!r}")
    check(os.path.exists(os.path.join(ck, "latest_checkpointed_iteration.txt")),
          "no checkpoint was ever completed")


def case_dump_grads():
    plan, data, stream = setup_basic()
    params = random_params(9)
    save_safetensors(scratch("init.safetensors"), params)
    out = scratch("grads.safetensors")
    run([plan, "--data", data, "--steps", 1, "--no-shuffle", "--load", scratch("init.safetensors"),
         "--dump-grads", out], expect_rc=0)
    got, meta = load_safetensors(out)
    check(sorted(got) == sorted(params), f"gradient names {sorted(got)}")
    want = {n: np.zeros_like(v, dtype=np.float64) for n, v in params.items()}
    for m in range(M):
        x, y = microbatch(stream, m * B)
        _, g = forward_backward(params, x, y, 1.0 / M)
        for n in want:
            want[n] += g[n]
    for n in want:
        check(got[n].shape == want[n].shape, f"{n}: shape {got[n].shape}")
        err = np.abs(got[n] - want[n])
        tol = 1e-6 + 1e-4 * np.abs(want[n])
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        check((err <= tol).all(), f"{n}: worst element {worst}: got {got[n][worst]}, "
                                  f"closed form {want[n][worst]}")


def case_checkpoint_errors():
    plan, data, _ = setup_basic()
    base = [plan, "--data", data, "--steps", 2]
    run(base + ["--save", scratch("good"), "--steps", 1], expect_rc=0)
    expect_error(base + ["--load", scratch("absent")], "does not exist")
    os.makedirs(scratch("emptydir"), exist_ok=True)
    expect_error(base + ["--load", scratch("emptydir")], "latest_checkpointed_iteration.txt")
    shutil.copytree(scratch("good"), scratch("trunc"))
    f = scratch("trunc/iter_0000001/model.safetensors")
    raw = open(f, "rb").read()
    open(f, "wb").write(raw[:-7])
    expect_error(base + ["--load", scratch("trunc")], "truncated")
    open(f, "wb").write(raw[:5])
    expect_error(base + ["--load", scratch("trunc")], "shorter than")
    t, _ = load_safetensors(scratch("good/iter_0000001/model.safetensors"))
    t = dict(t)
    t["bogus"] = np.zeros(3, np.float32)
    save_safetensors(scratch("extra.safetensors"), t)
    expect_error(base + ["--load", scratch("extra.safetensors")], "'bogus'")
    del t["bogus"]
    t["proj.bias"] = np.zeros(5, np.float32)
    save_safetensors(scratch("shape.safetensors"), t)
    expect_error(base + ["--load", scratch("shape.safetensors")], "'proj.bias'")
    del t["proj.bias"]
    save_safetensors(scratch("missing.safetensors"), t)
    expect_error(base + ["--load", scratch("missing.safetensors")], "no tensor 'proj.bias'")
    # A name holding a byte that is not UTF-8 and (JSON-escaped) a terminal
    # escape: the error line quotes them as \xNN (stderr stays ASCII, one
    # line); a name in valid UTF-8 is quoted as it is.
    raw = open(scratch("good/iter_0000001/model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    for name, shown in ((b"proj.\xb6\\u001b[31mbias", "'proj.\\xb6\\x1b[31mbias'"),
                        ("proj.bíàs".encode(), "'proj.bíàs'")):
        head = raw[8:8 + n].replace(b'"proj.bias"', b'"' + name + b'"')
        check(head != raw[8:8 + n], "the checkpoint's header names proj.bias")
        path = scratch("named.safetensors")
        open(path, "wb").write(struct.pack("<Q", len(head)) + head + raw[8 + n:])
        expect_error(base + ["--load", path], shown)
    shutil.copytree(scratch("good"), scratch("tracker"))
    open(scratch("tracker/latest_checkpointed_iteration.txt"), "w").write("9\n")
    expect_error(base + ["--load", scratch("tracker")], "iter_0000009")
    shutil.copytree(scratch("good"), scratch("noopt"))
    os.remove(scratch("noopt/iter_0000001/optimizer.safetensors"))
    expect_error(base + ["--load", scratch("noopt")], "optimizer.safetensors")
    bigger = make_plan(scratch("bigger.plan"), vocab=32)
    expect_error([bigger, "--data", data, "--steps", 2, "--load", scratch("good")],
                 "but the plan expects [32")


def case_eval_trace():
    plan, data, _ = setup_basic()
    docs, estream = random_docs(800, V, 8)
    edata = write_dataset(scratch("valid"), docs)
    trace, log = scratch("trace.json"), scratch("log.jsonl")
    p = run([plan, "--data", data, "--steps", 4, "--eval-data", edata, "--eval-interval", 2,
             "--eval-iters", 3, "--save", scratch("ck"), "--trace", trace, "--log-file", log,
             "--log-interval", 1], expect_rc=0)
    vals = re.findall(r"^ validation loss at iteration (\d+) \| lm loss value: (\S+) \| "
                      r"lm loss PPL: (\S+) \| $", p.stdout, re.M)
    check([int(v[0]) for v in vals] == [2, 4], f"validation lines: {vals}")
    recs = [r for r in read_jsonl(log) if "validation_loss" in r]
    check([r["iteration"] for r in recs] == [2, 4], "validation JSON lines")
    check(abs(recs[-1]["validation_ppl"] - np.exp(recs[-1]["validation_loss"])) <
          1e-6 * recs[-1]["validation_ppl"], "ppl = exp(loss)")
    params, _ = load_safetensors(scratch("ck/iter_0000004/model.safetensors"))
    want = np.mean([forward_backward(params, *microbatch(estream, k * B), 1.0)[0]
                    for k in range(3)])
    check(abs(recs[-1]["validation_loss"] - want) < 1e-5 * want,
          f"eval loss {recs[-1]['validation_loss']} vs closed form {want}")
    t = json.load(open(trace))
    ev = t["traceEvents"]
    names = [e["name"] for e in ev if e.get("ph") == "X"]
    check(names.count("train") == 4 * M and names.count("optimizer") == 4, "program events")
    check("MatMul" in names and "AdamW" in names and "CrossEntropy" in names, "kernel events")
    check(all(e["pid"] == 0 for e in ev), "pid = rank 0")
    check({e["tid"] for e in ev if e.get("ph") == "X"} >= {0, 1}, "program and kernel lanes")
    check(all(e["dur"] >= 0 for e in ev if e.get("ph") == "X"), "durations")
    # Kernel events carry the instruction's integer attributes (a MatMul's
    # shape first: check_tools.py breakdown groups by them).
    mm = [e for e in ev if e.get("cat") == "kernel" and e["name"] == "MatMul"]
    check(mm and all(len(e.get("args", {}).get("i", [])) >= 12 and
                     all(isinstance(x, int) for x in e["args"]["i"]) for e in mm),
          f"MatMul events carry i: {mm[:1]}")


def case_skipped():
    plan = make_plan(scratch("nan.plan"), proj_std=1e38, hidden=64)
    docs, _ = random_docs(2000, V, 2)
    data = write_dataset(scratch("train"), docs)
    log = scratch("log.jsonl")
    p = run([plan, "--data", data, "--steps", 4, "--log-interval", 2, "--log-file", log],
            expect_rc=0)
    recs = read_jsonl(log)
    check(len(recs) == 2, "two interval records")
    for r in recs:
        check(r["skipped"] == 2 and r["nan"] == 2, f"skip counters {r}")
        check(r["lm_loss"] is None, f"lm_loss of an all-skipped interval is null: {r}")
    check("number of skipped iterations:   2 |" in p.stdout, p.stdout)


def case_generate():
    if not shutil.which("spm_train") or not shutil.which("spm_encode"):
        print("spm_train/spm_encode not installed: skipping the generate case")
        return
    text = scratch("corpus.txt")
    words = "the cat sat on the mat and the dog ran to the park with a red ball".split()
    rng = random.Random(1)
    with open(text, "w") as f:
        for _ in range(400):
            f.write(" ".join(rng.choice(words) for _ in range(12)) + "\n")
    subprocess.run(["spm_train", f"--input={text}", f"--model_prefix={scratch('spm')}",
                    "--vocab_size=40", "--model_type=bpe", "--minloglevel=2"],
                   check=True, capture_output=True)
    ids = subprocess.run(["spm_encode", f"--model={scratch('spm.model')}",
                          "--output_format=id", text], check=True, capture_output=True,
                         text=True).stdout
    docs = [np.array([int(t) for t in l.split()]) for l in ids.splitlines() if l.strip()]
    data = write_dataset(scratch("train"), docs)
    plan = make_plan(scratch("gen.plan"), vocab=48, hidden=16, seq=16)
    run([plan, "--data", data, "--steps", 40, "--lr", 0.05, "--save", scratch("ck")], expect_rc=0)
    gen = [plan, "--generate", "--prompt", "the cat", "--load", scratch("ck"),
           "--tokenizer-model", scratch("spm.model"), "--max-new-tokens", 12]
    p1 = run(gen + ["--temperature", 0], expect_rc=0)
    p2 = run(gen + ["--temperature", 0], expect_rc=0)
    check(p1.stdout.startswith("the cat") and len(p1.stdout) > len("the cat\n"),
          f"generated {p1.stdout!r}")
    check(p1.stdout == p2.stdout, "greedy generation is deterministic")
    s1 = run(gen + ["--temperature", 1.0, "--top-k", 5, "--seed", 3], expect_rc=0).stdout
    s2 = run(gen + ["--temperature", 1.0, "--top-k", 5, "--seed", 3], expect_rc=0).stdout
    check(s1 == s2, "seeded sampling is deterministic")
    # Parameters-only file works too.
    run(gen[:5] + [scratch("ck/iter_0000040/model.safetensors")] + gen[6:], expect_rc=0)
    expect_error(gen[:7] + [scratch("missing.model")] + gen[8:], "missing.model")
    small = make_plan(scratch("small.plan"), vocab=20, hidden=16, seq=16)
    expect_error([small] + gen[1:], "pieces but the plan's vocab is 20")


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mega-run", required=True)
    ap.add_argument("--make-plan", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ARGS = ap.parse_args()
    failed = 0
    for name in ARGS.cases:
        shutil.rmtree(ARGS.scratch, ignore_errors=True)
        os.makedirs(ARGS.scratch)
        try:
            CASES[name]()
            print(f"{name}: ok")
        except Failure as e:
            failed += 1
            print(f"{name}: FAILED: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

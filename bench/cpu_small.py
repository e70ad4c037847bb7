#!/usr/bin/python3
"""cpu-small benchmark: the same GPT training step in PyTorch (fp32) and in mega.

  /usr/bin/python3 bench/cpu_small.py --megac build/megac --mega-run build/mega-run [--threads 2]

Model: layers 4, hidden 256, heads 4, vocab 8192, seq 128, micro-batch 8, AdamW lr 1e-4
(wd 0.01 on >=2-dim params, clip 1.0: the same work mega's step does).
Both sides run as child processes under `/usr/bin/time -v` so peak RSS is measured the same
way, with the same OMP/BLAS thread variables. Each side does --steps steps; the first
--warmup are discarded and the median of the rest is reported (torch: wall time per step
measured in-process; mega: elapsed_ms of its --log-file records).
If the mega binaries are missing or fail, the torch figures are still printed and the exit
status is 1.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "reference"))

CFG = dict(layers=4, hidden=256, heads=4, vocab=8192, seq=128)
MICRO_BATCH = 8
LR, WEIGHT_DECAY, CLIP = 1e-4, 0.01, 1.0


def flops_per_token(n_params_non_embedding):
    # nanoGPT's estimate_mfu: 6*N for the weight matmuls (fwd+bwd) plus 12*L*H*Q*T for the
    # attention score/value matmuls; N excludes wpe (wte counts: it is also the output head).
    L, nh, q, T = CFG["layers"], CFG["heads"], CFG["hidden"] // CFG["heads"], CFG["seq"]
    return 6 * n_params_non_embedding + 12 * L * nh * q * T


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    return env


# ----------------------------------------------------------------------------- torch side
def torch_worker(a):
    """Runs inside the child process (under /usr/bin/time -v)."""
    import numpy as np
    import torch
    import gpt_ref as R
    torch.set_num_threads(a.threads)
    cfg = R.GPTConfig(**CFG)
    model = R.build_model(cfg, R.random_weights(cfg, 1), torch.float32)
    oc = R.OptConfig(lr=LR, weight_decay=WEIGHT_DECAY, clip_grad=CLIP)
    # torch.optim.AdamW with foreach=True: the fastest stock PyTorch CPU AdamW, so the baseline
    # is not handicapped by a python loop over parameters.
    opt = R.make_torch_optimizer(model, oc, foreach=True)
    params = list(model.parameters())
    S, B = cfg.seq, MICRO_BATCH
    tokens = np.random.default_rng(2).integers(0, cfg.vocab, size=R.tokens_needed(a.steps, B, S))
    times, cpu, losses = [], [], []
    for step in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = R.forward_backward(model, tokens, step, B, B, S)  # .item() inside syncs
        R.clip_grads_(params, CLIP)
        opt.step()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)  # all threads; wall-clock is noisy on a shared host
        losses.append(loss)
    n_non_emb = sum(p.numel() for p in params) - model.wpe.weight.numel()
    with open(a.json_out, "w") as f:
        json.dump({"ms": times, "cpu_ms": cpu, "losses": losses, "n_params": sum(p.numel() for p in params),
                   "n_non_embedding": n_non_emb, "threads": torch.get_num_threads()}, f)


def max_rss_mb(time_v_stderr):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v_stderr)
    return int(m.group(1)) / 1024 if m else float("nan")


def run_timed(cmd, env, timeout):
    """Runs cmd under /usr/bin/time -v; returns (returncode, stdout, stderr, peak RSS MiB)."""
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr, max_rss_mb(r.stderr)


def openblas_core_for_this_cpu():
    """The OpenBLAS core mega's CPU backend switches to when Debian's OpenBLAS 0.3.21 does not know the CPU and
    falls back to its SSE3 kernels (lib/Runtime/Backends/cpu/CpuBackend.cpp): SkylakeX with AVX-512, else Haswell
    with AVX2. The baseline gets the same BLAS kernels, so the ratio measures everything but the BLAS choice."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def run_torch(a, wd, core=None):
    out = os.path.join(wd, f"torch-{core or 'default'}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--json-out", out,
           "--threads", str(a.threads), "--steps", str(a.steps)]
    env = thread_env(a.threads)
    if core:
        env["OPENBLAS_CORETYPE"] = core
    rc, so, se, rss = run_timed(cmd, env, a.timeout)
    if rc != 0:
        raise RuntimeError(f"torch worker failed (rc {rc}):\n{so[-2000:]}{se[-3000:]}")
    with open(out) as f:
        res = json.load(f)
    res["median_ms"] = statistics.median(res["ms"][a.warmup:])
    res["median_cpu_ms"] = statistics.median(res["cpu_ms"][a.warmup:])
    res["rss_mb"] = rss
    return res


# ----------------------------------------------------------------------------- mega side
def run_mega(a, wd):
    import gpt_ref as R
    import numpy as np
    for tool in (a.megac, a.mega_run):
        if not tool or not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
            raise RuntimeError(f"mega binary not found/executable: {tool!r}")
    S, B = CFG["seq"], MICRO_BATCH
    prefix, plan, log = (os.path.join(wd, n) for n in ("data", "gpt.plan", "log.jsonl"))
    toks = np.random.default_rng(2).integers(0, CFG["vocab"], size=R.tokens_needed(a.steps, B, S) + S)
    R.write_indexed_dataset(prefix, [toks], np.uint16)
    cmd = [a.megac, a.model, "-o", plan]
    for k, v in CFG.items():
        cmd += ["--set", f"{k}={v}"]
    cmd += ["--micro-batch-size", str(B), "--global-batch-size", str(B), "--optimizer", "adam",
            "--weight-decay", str(WEIGHT_DECAY), "--clip-grad", str(CLIP)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    if r.returncode != 0:
        raise RuntimeError(f"megac failed (rc {r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    cmd = [a.mega_run, plan, "--data", prefix, "--steps", str(a.steps), "--lr", str(LR),
           "--no-shuffle", "--seed", "1", "--log-file", log, "--log-interval", "1",
           "--threads", str(a.threads)]
    rc, so, se, rss = run_timed(cmd, thread_env(a.threads), a.timeout)
    if rc != 0:
        raise RuntimeError(f"mega-run failed (rc {rc}): {(so + se)[-2000:]}")
    with open(log) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    # elapsed_ms is taken as the time of that iteration alone (log interval 1).
    ms = [float(r["elapsed_ms"]) for r in recs if int(r["iteration"]) > a.warmup]
    if not ms:
        raise RuntimeError(f"no log records after iteration {a.warmup} in {log}")
    return {"median_ms": statistics.median(ms), "rss_mb": rss,
            "losses": [float(r["lm_loss"]) for r in recs]}


# ----------------------------------------------------------------------------- report
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--megac")
    p.add_argument("--mega-run")
    p.add_argument("--model", default=os.path.join(HERE, "..", "models", "gpt.mlir"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=13, help="total steps per side, incl. warm-up")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workdir")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_worker:
        return torch_worker(a)
    if a.steps <= a.warmup:
        p.error("--steps must exceed --warmup")
    wd = a.workdir or tempfile.mkdtemp(prefix="cpu_small_")
    os.makedirs(wd, exist_ok=True)
    tok_per_step = MICRO_BATCH * CFG["seq"]
    print(f"cpu-small: {CFG}, micro-batch {MICRO_BATCH}, {a.threads} threads, "
          f"{a.steps} steps ({a.warmup} warm-up), workdir {wd}")

    torches = [("torch", run_torch(a, wd))]
    core = None if os.environ.get("OPENBLAS_CORETYPE") else openblas_core_for_this_cpu()
    if core:
        torches.append((f"torch/{core}", run_torch(a, wd, core)))
    t = min((r for _, r in torches), key=lambda r: r["median_ms"])  # the fairer, faster baseline
    fpt = flops_per_token(t["n_non_embedding"])
    mega, mega_err = None, None
    try:
        mega = run_mega(a, wd)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
        mega_err = str(e)

    print(f"params {t['n_params']:,} ({t['n_non_embedding']:,} non-embedding), "
          f"model FLOPs/token {fpt / 1e6:.1f} M")
    print(f"{'':14s} {'ms/step':>9s} {'tokens/s':>10s} {'GFLOP/s':>9s} {'peak RSS MiB':>13s}")
    rows = torches + ([("mega", mega)] if mega else [])
    for name, r in rows:
        tps = tok_per_step / (r["median_ms"] / 1000)
        r["tps"] = tps
        print(f"{name:14s} {r['median_ms']:9.1f} {tps:10.0f} {tps * fpt / 1e9:9.2f} {r['rss_mb']:13.1f}")
    print(f"torch median CPU time/step (all threads) {t['median_cpu_ms']:.1f} ms; per-step wall ms: "
          + " ".join(f"{x:.0f}" for x in t["ms"]))
    if mega:
        print(f"mega/torch tokens/s ratio (against the faster torch row): {mega['tps'] / t['tps']:.3f}  "
              f"(RSS ratio {mega['rss_mb'] / t['rss_mb']:.2f})")
        return 0
    print(f"mega: NOT RUN: {mega_err}")
    return 1


if __name__ == "__main__":
    sys.exit(main())

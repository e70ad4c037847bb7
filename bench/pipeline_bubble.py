#!/usr/bin/env python3
"""Pipeline bubble and activation memory, measured from mega-run --trace.

For each (P, V, schedule, m) the script compiles a GPT whose stages cost about
the same (4 layers of hidden 256 on P=2, a small vocabulary so that the
embedding and the output layer weigh little), trains a few steps on P ranks
(mpirun, one rank per core for P=2) with --trace, and reads every rank's
trace (rank 0 writes FILE, rank k FILE.rank<k>; their clocks start together).
Per iteration (delimited by the optimizer events, the first iteration
skipped as warm-up):

  window  = from the first step any rank starts to the last forward/backward
            any rank ends (the optimizer step is outside)
  busy_r  = the time rank r spends in forward and backward programs
  idle    = P * window - sum_r busy_r
  idle fraction   = idle / (P * window)     (unit model: (P-1)/(m+P-1))
  bubble / compute = idle / sum_r busy_r    (Megatron's (P-1)/m; for
                                            interleaved (P-1)/(V*m))

and prints them next to the unit-model figures. It also prints each rank's
peak activation memory (stashed micro-batches, bytes) from mega-run's log.

  /usr/bin/python3 bench/pipeline_bubble.py --bin build/bin [--pp 2] [--steps 6]
      [--cases 1f1b:4,1f1b:8,1f1b:16,interleaved:4,interleaved:8,interleaved:16]
      [--memory]       # P=4, m=8: 1F1B vs GPipe peak stash per stage
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import mpirun, write_dataset  # noqa: E402

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "gpt.mlir")


def compile_plan(bin_dir, out, pp, vpp, schedule, m, layers, hidden, micro):
    sets = ["--set", f"layers={layers}", "--set", f"hidden={hidden}", "--set", "heads=4",
            "--set", "vocab=64", "--set", "seq=64"]
    subprocess.run([os.path.join(bin_dir, "megac"), MODEL, "-o", out, "--pp", str(pp),
                    "--vpp", str(vpp), "--schedule", schedule, "--micro-batch-size", str(micro),
                    "--global-batch-size", str(m * micro)] + sets, check=True)
    return out


def load_events(path):
    with open(path) as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def bubble(trace, pp):
    ranks = [load_events(trace)] + [load_events(f"{trace}.rank{r}") for r in range(1, pp)]
    # Iteration k of rank r: the events between its optimizer k-1 and k.
    per_rank = []
    for ev in ranks:
        ev.sort(key=lambda e: e["ts"])
        iters, cur = [], []
        for e in ev:
            if e["cat"] == "optimizer":
                iters.append(cur)
                cur = []
            elif e["cat"] in ("forward", "backward", "exchange"):
                cur.append(e)
        per_rank.append(iters)
    n = min(len(i) for i in per_rank)
    rows = []
    for k in range(1, n):  # the first iteration warms up
        start = min(min(e["ts"] for e in it[k]) for it in per_rank)
        end = max(max(e["ts"] + e["dur"] for e in it[k] if e["cat"] in ("forward", "backward"))
                  for it in per_rank)
        busy = sum(sum(e["dur"] for e in it[k] if e["cat"] in ("forward", "backward"))
                   for it in per_rank)
        window = end - start
        rows.append((pp * window - busy, pp * window, busy))
    idle = sum(r[0] for r in rows)
    total = sum(r[1] for r in rows)
    busy = sum(r[2] for r in rows)
    return idle / total, idle / busy, total / pp / len(rows) / 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--cases", default="1f1b:4,1f1b:8,1f1b:16,interleaved:4,interleaved:8,"
                                       "interleaved:16")
    ap.add_argument("--yield-when-idle", action="store_true",
                    help="OpenMPI mpi_yield_when_idle=1 (waiting ranks yield the core)")
    ap.add_argument("--fragment-kb", type=int, default=0,
                    help="OpenMPI shared-memory fragments of this many KiB (btl_vader_max_send_size; "
                         "fewer fragments = fewer sender-side progress steps per message)")
    ap.add_argument("--memory", action="store_true",
                    help="P=4, m=8: peak activation memory per stage, 1F1B vs GPipe")
    args = ap.parse_args()
    mega_run = os.path.join(args.bin, "mega-run")
    work = tempfile.mkdtemp(prefix="pipeline-bubble-")
    data = write_dataset(os.path.join(work, "data"), 200000, 64)
    mca = ["--mca", "mpi_yield_when_idle", "1"] if args.yield_when_idle else []
    if args.fragment_kb:
        mca += ["--mca", "btl_vader_max_send_size", str(args.fragment_kb * 1024)]

    if args.memory:
        print("P=4, m=8, 4 layers: peak activations stashed per rank")
        for schedule in ("1f1b", "gpipe"):
            plan = compile_plan(args.bin, os.path.join(work, f"mem-{schedule}.plan"), 4, 1,
                                schedule, 8, 4, args.hidden, args.micro)
            out = mpirun([mega_run, plan, "--data", data, "--steps", 2, "--no-shuffle"], 4, mca)
            for line in sorted(l for l in out.splitlines() if "stashed" in l):
                print(f"  {schedule:5s} {line.replace('mega-run: ', '')}")
        return

    print(f"P={args.pp}, layers={args.layers}, hidden={args.hidden}, micro-batch {args.micro}, "
          f"seq 64, {args.steps} steps (first skipped){', yield when idle' if args.yield_when_idle else ''}"
          f"{f', {args.fragment_kb} KiB fragments' if args.fragment_kb else ''}")
    print(f"{'schedule':12s} {'V':>2s} {'m':>3s} {'idle frac':>9s} {'unit':>7s} "
          f"{'idle/busy':>9s} {'(P-1)/(V*m)':>11s} {'ms/iter':>8s}")
    for case in args.cases.split(","):
        schedule, m = case.split(":")
        m = int(m)
        vpp = 2 if schedule == "interleaved" else 1
        plan = compile_plan(args.bin, os.path.join(work, f"{schedule}-{m}.plan"), args.pp, vpp,
                            schedule, m, args.layers, args.hidden, args.micro)
        trace = os.path.join(work, f"{schedule}-{m}.json")
        mpirun([mega_run, plan, "--data", data, "--steps", args.steps, "--no-shuffle",
                "--trace", trace], args.pp, mca)
        frac, ratio, ms = bubble(trace, args.pp)
        p = args.pp
        unit = (p - 1) / (vpp * m + p - 1)
        print(f"{schedule:12s} {vpp:2d} {m:3d} {frac:9.3f} {unit:7.3f} {ratio:9.3f} "
              f"{(p - 1) / (vpp * m):11.3f} {ms:8.1f}")


if __name__ == "__main__":
    main()

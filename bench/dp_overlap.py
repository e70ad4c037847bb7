#!/usr/bin/env python3
"""Data-parallel gradient reduction overlapped with the backward pass, measured.

Compiles the demo-sized GPT (4 layers, hidden 256, vocabulary 8192, seq 128:
5.3 M parameters, 21 MB of f32 gradients) at --dp 2 twice: with megac's default
(each bucket's all-reduce starts in the last micro-batch's backward as soon as
its gradients are final) and with --overlap-grad-reduce=false (every bucket
is all-reduced at the start of the optimizer step). Trains both on 2 MPI ranks
(one per core) with --trace, alternating the two --repeats times, and reads
rank 0's trace. Per iteration (the first of each run skipped as warm-up):

  step        from the first train program's start to the optimizer's end
  optimizer   the optimizer program
  exposed     what the optimizer waits for the reduction: AllReduceWait
              (overlapped) or the bucket copies + AllReduce (not)
  start       the AllReduceStart instructions in train (the bucket copies)

With --use-distributed-optimizer both plans reduce-scatter the gradients
instead (ZeRO-1): exposed is then ReduceScatterWait (overlapped) or the
ReduceScatters in the optimizer, start the ReduceScatterStarts.

  /usr/bin/python3 bench/dp_overlap.py --bin build/bin [--steps 6]
      [--repeats 3] [--micro-batch-size 1] [--global-batch-size 2]
      [--ddp-bucket-size 1000000] [--use-distributed-optimizer]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import mpirun, write_dataset  # noqa: E402

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "gpt.mlir")
SETS = ["--set", "layers=4", "--set", "hidden=256", "--set", "heads=4", "--set", "vocab=8192",
        "--set", "seq=128"]


def iterations(trace):
    """Per iteration (up to each optimizer program's end): its events."""
    events = [e for e in json.load(open(trace))["traceEvents"] if e.get("ph") == "X"]
    ends = sorted(e["ts"] + e["dur"] for e in events
                  if e["name"] == "optimizer" and e.get("cat") == "program")
    its, begin = [], -1
    for end in ends:
        its.append([e for e in events if begin < e["ts"] < end])
        begin = end
    return its


def measure(it):
    programs = [e for e in it if e.get("cat") == "program"]
    kernels = [e for e in it if e.get("cat") == "kernel"]
    opt = [e for e in programs if e["name"] == "optimizer"][-1]
    first = min(e["ts"] for e in programs if e["name"] == "train")
    in_opt = [k for k in kernels if opt["ts"] <= k["ts"] < opt["ts"] + opt["dur"]]
    # Without overlap the optimizer starts with the bucket copies (Copy) and
    # the AllReduce of each bucket; everything up to the last AllReduce is
    # the reduction.
    # The distributed optimizer reduce-scatters each gradient from its
    # accumulator (no copies).
    exposed = 0.0
    waits = [k for k in in_opt if k["name"] in ("AllReduceWait", "ReduceScatterWait")]
    if waits:
        exposed = sum(k["dur"] for k in waits)
    else:
        reduce = "ReduceScatter" if any(k["name"] == "ReduceScatter" for k in in_opt) \
            else "AllReduce"
        last = max((k["ts"] + k["dur"] for k in in_opt if k["name"] == reduce), default=None)
        if last is not None:
            exposed = sum(k["dur"] for k in in_opt
                          if k["ts"] + k["dur"] <= last and k["name"] in ("Copy", reduce))
    start = sum(k["dur"] for k in kernels
                if k["name"] in ("AllReduceStart", "ReduceScatterStart"))
    return {"step": (opt["ts"] + opt["dur"] - first) / 1e3, "optimizer": opt["dur"] / 1e3,
            "exposed": exposed / 1e3, "start": start / 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    # One micro-batch of one sequence per rank: the reduction (21 MB) is then
    # a visible part of the step on this machine.
    ap.add_argument("--micro-batch-size", type=int, default=1)
    ap.add_argument("--global-batch-size", type=int, default=2)
    # 1 M elements (4 MB): 6 buckets here (megac's default of 25 MiB would
    # make the whole model one bucket, started only after the embedding).
    ap.add_argument("--ddp-bucket-size", type=int, default=1000000)
    ap.add_argument("--use-distributed-optimizer", action="store_true")
    a = ap.parse_args()
    zero = ["--use-distributed-optimizer"] if a.use_distributed_optimizer else []
    tmp = tempfile.mkdtemp(prefix="mega-dp-overlap-")
    data = write_dataset(os.path.join(tmp, "data"), 200000, 8192)
    plans = {}
    for name, flags in (("overlapped", []), ("in optimizer", ["--overlap-grad-reduce=false"])):
        plans[name] = os.path.join(tmp, name.replace(" ", "-") + ".plan")
        cmd = [os.path.join(a.bin, "megac"), MODEL, "-o", plans[name], "--dp", 2,
               "--micro-batch-size", a.micro_batch_size, "--global-batch-size",
               a.global_batch_size, "--ddp-bucket-size", a.ddp_bucket_size] + flags + zero + SETS
        subprocess.run([str(x) for x in cmd], check=True)
    # The two alternate, --repeats times, so that a slow spell of the
    # machine hits both; the medians are over all their iterations.
    samples = {name: [] for name in plans}
    losses, buckets = {}, {}
    for _ in range(a.repeats):
        for name, plan in plans.items():
            trace = os.path.join(tmp, name.replace(" ", "-") + ".json")
            out = mpirun([os.path.join(a.bin, "mega-run"), plan, "--data", data, "--steps",
                          a.steps, "--log-interval", 1, "--trace", trace, "--seed", 1], 2)
            losses[name] = re.findall(r"lm loss: ([0-9.E+-]+)", out)
            b = re.search(r"(\d+) data-parallel gradient buckets (all-reduced|reduce-scattered)",
                          out)
            buckets[name] = b.group(1) if b else "-"
            samples[name] += [measure(it) for it in iterations(trace)[1:]]
    rows = {}
    for name, its in samples.items():
        rows[name] = {k: statistics.median(x[k] for x in its) for k in its[0]}
        rows[name]["losses"] = losses[name]
        rows[name]["buckets"] = buckets[name]
    m = a.global_batch_size // (2 * a.micro_batch_size)
    print(f"GPT 4x256, vocab 8192, seq 128 (5.3 M parameters), dp 2 on 2 ranks, "
          f"micro-batch {a.micro_batch_size}, {m} micro-batches per rank"
          f"{', distributed optimizer' if zero else ''}; "
          f"median of {a.repeats} x {a.steps - 1} iterations (ms)")
    print(f"{'reduction':<14}{'buckets':>8}{'step':>10}{'optimizer':>11}{'exposed':>10}{'start':>8}")
    for name, r in rows.items():
        print(f"{name:<14}{r['buckets']:>8}{r['step']:>10.1f}{r['optimizer']:>11.1f}"
              f"{r['exposed']:>10.1f}{r['start']:>8.1f}")
    same = rows["overlapped"]["losses"] == rows["in optimizer"]["losses"]
    print(f"losses identical: {same} ({rows['overlapped']['losses'][-1]} at step {a.steps})")
    o, n = rows["overlapped"], rows["in optimizer"]
    print(f"step time ratio (in optimizer / overlapped): {n['step'] / o['step']:.3f}; "
          f"exposed reduction {n['exposed']:.1f} -> {o['exposed']:.1f} ms")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()

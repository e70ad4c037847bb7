#!/usr/bin/env python3
"""Every CUDA kernel of the backend compiled for one architecture (sm_90, the
H100 the benchmarks run on) with ptxas's resource report: a kernel that
spills registers to local memory fails the test, unless it is one of the
known spillers below, each with its reason.

Why a test: the kernels' speed rests on register budgets that only a GPU can
time (LayerNormGrad's warp form at two blocks a multiprocessor, 128
registers, measured at 102 us; three blocks, 80 registers, spilled and took
129 us). A change made without a GPU at hand cannot be timed, but ptxas
says at compile time whether it spills; this makes that visible in CI.

  ptxas_spills.py --nvcc NVCC --arch 90 [-I DIR]... [-D DEF]... FILE.cu...

Prints each file's kernel count, the most registers a kernel there uses and
the spilling kernels; exits 1 when a kernel spills that is not known to, or
when nvcc fails.
"""
import argparse
import concurrent.futures
import re
import subprocess
import sys

# Known spillers: (pattern on the demangled name, reason). None is on the
# path of a bf16 plan that the benchmarks time (its attention runs on cuDNN
# or mega's tensor-core kernels); fp32 plans are for exactness checks.
KNOWN = [
    (r"::plainGrad(Q|KV)<(64|128), ",
     "mega's plain attention backward (fp32 plans, any S) keeps a thread's "
     "whole row of dq, or of dk and dv, in registers: one thread a row, 64 "
     "or 128 floats each"),
    (r"::plainForward<128, ",
     "the plain attention forward at head dim 128 keeps a thread's q and o "
     "rows in registers, 256 floats"),
]

ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)'")
PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                   r"(\d+) bytes spill loads")
REGS = re.compile(r"ptxas info\s*: Used (\d+) registers")


def demangle(names):
    if not names:
        return {}
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names),
                             capture_output=True, text=True, check=True)
        return dict(zip(names, out.stdout.splitlines()))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def report(nvcc, arch, flags, source):
    """[(mangled name, registers, spill stores, spill loads)] of `source`."""
    cmd = [nvcc, "-cubin", "-o", "/dev/null", f"-arch=sm_{arch}", "-O3",
           "-std=c++17", "--resource-usage", *flags, source]
    run = subprocess.run(cmd, capture_output=True, text=True)
    text = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"{source}: nvcc failed (exit {run.returncode}):\n"
                           + text[-2000:])
    kernels, name, spill = [], None, None
    for line in text.splitlines():
        m = ENTRY.search(line)
        if m:
            name, spill = m.group(1), None
            continue
        m = PROPS.search(line)
        if m and name:
            spill = (int(m.group(2)), int(m.group(3)))
            continue
        m = REGS.search(line)
        if m and name and spill is not None:
            kernels.append((name, int(m.group(1)), *spill))
            name = None
    if not kernels:
        raise RuntimeError(f"{source}: nvcc reported no kernel "
                           "(--resource-usage output not understood)")
    return kernels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nvcc", required=True)
    ap.add_argument("--arch", default="90")
    ap.add_argument("-I", dest="incs", action="append", default=[])
    ap.add_argument("-D", dest="defs", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("sources", nargs="+")
    a = ap.parse_args()
    flags = [f"-I{d}" for d in a.incs] + [f"-D{d}" for d in a.defs]

    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        futures = {s: pool.submit(report, a.nvcc, a.arch, flags, s)
                   for s in a.sources}
    failed = False
    unknown = []
    for src, fut in futures.items():
        try:
            kernels = fut.result()
        except RuntimeError as e:
            print(f"error: {e}")
            failed = True
            continue
        names = demangle([k[0] for k in kernels])
        spilling = [(names[k[0]], *k[1:]) for k in kernels if k[2] or k[3]]
        base = src.rsplit("/", 1)[-1]
        print(f"{base}: {len(kernels)} kernels for sm_{a.arch}, at most "
              f"{max(k[1] for k in kernels)} registers, "
              f"{len(spilling)} spilling")
        for name, regs, st, ld in spilling:
            short = name.replace("(anonymous namespace)::", "").split("(")[0]
            why = next((r for p, r in KNOWN if re.search(p, name)), None)
            tag = "known" if why else "not known to spill"
            print(f"  {tag}: {short}: {regs} registers, {st} bytes spill "
                  f"stores, {ld} bytes spill loads")
            if not why:
                unknown.append(short)
    for p, why in KNOWN:
        print(f"known spillers {p}: {why}")
    if unknown:
        print(f"error: {len(unknown)} kernel(s) spill registers on "
              f"sm_{a.arch} and are not among the known spillers: give each "
              "fewer live values, or time it on a GPU and add it to KNOWN in "
              "this file with the reason")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What the checks of one megac pass have in common: compile a small GPT
with the pass on and with it off, train both plans on the CPU from the same
tokens, and demand the same losses and grad norms, bit for bit, at every
step. Each check_<pass>.py adds its own count of what the pass removed from
the plan text (a pass that changes nothing would pass the bit test
trivially).

  check_<pass>.py --megac M --mega-run R --model gpt.mlir --workdir DIR
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
    """How many `name` instructions the plan text holds."""
    return len(re.findall(r"= " + name + r"\(", text))


def compile_and_train(a, w, tag, args):
    """Compiles `args` into DIR/<tag>.plan, trains it STEPS steps on the CPU;
    returns the plan text and the logged steps."""
    plan = w(f"{tag}.plan")
    run([a.megac, a.model, "-o", plan] + args)
    text = run([a.megac, a.model, "--emit", "plan-text"] + args)
    log = w(f"{tag}.jsonl")
    if os.path.exists(log):
        os.remove(log)
    run([a.mega_run, plan, "--data", w("data"), "--steps", str(STEPS),
         "--no-shuffle", "--seed", "1", "--log-interval", "1", "--device", "cpu",
         "--threads", "2", "--log-file", log])
    with open(log) as f:
        return text, [json.loads(l) for l in f if '"lm_loss"' in l]


def close(a, b, rtol):
    return a == b if rtol == 0 else abs(a - b) <= rtol * abs(b)


def same_steps(label, on, off, rtol=0):
    """Prints each step's loss and grad norm with the pass and without it;
    True when there are STEPS of each and they are equal to the bit (rtol
    0) or within rtol of each other."""
    ok = len(on) == len(off) == STEPS
    for c, g in zip(on, off):
        same = (close(c["lm_loss"], g["lm_loss"], rtol) and
                close(c["grad_norm"], g["grad_norm"], rtol))
        ok &= same
        print(f"{label} iter {c['iteration']}: loss {c['lm_loss']!r} vs "
              f"{g['lm_loss']!r}, grad norm {c['grad_norm']!r} vs "
              f"{g['grad_norm']!r}{'' if same else '  DIFFERENT'}")
    return ok


def main(flag, counts, precisions=("fp32", "bf16"), seed=5, values=("true", "false"),
         sizes=None, rtol=None, extra=()):
    """The check of megac's `flag` (e.g. --fold-casts) at each precision.
    counts(precision, text_on, text_off) compares the two plan texts and
    returns (a summary line, None or what is wrong: the pass did nothing it
    should). `values`: the flag's value on and off; `sizes`: the model's
    flags instead of SIZES; `rtol`: {precision: relative tolerance} for a
    pass that changes rounding (default: the same bits); `extra`: megac
    flags for both plans (another pass held still). Exits 1 naming
    every failure, else prints PASS."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--megac", required=True)
    ap.add_argument("--mega-run", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    w = lambda n: os.path.join(a.workdir, n)

    rng = random.Random(seed)
    write_dataset(w("data"), [rng.randrange(97) for _ in range(4 * 64 * STEPS + 1)])
    failures = []
    for precision in precisions:
        runs = {}
        for name, value in zip(("on", "off"), values):
            args = ([f"{flag}={value}", "--precision", precision] + list(extra) +
                    (sizes or SIZES))
            runs[name] = compile_and_train(a, w, f"{precision}-{name}", args)
        summary, wrong = counts(precision, runs["on"][0], runs["off"][0])
        print(f"{precision}: {summary}")
        if wrong:
            failures.append(f"{precision}: {wrong}")
        tol = (rtol or {}).get(precision, 0)
        if not same_steps(precision, runs["on"][1], runs["off"][1], tol):
            failures.append(f"{precision}: the losses or grad norms with "
                            f"{flag}={values[0]} are not " +
                            (f"within {tol:g} of" if tol else "bit-identical to") +
                            f" {flag}={values[1]}")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("PASS")

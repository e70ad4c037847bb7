#!/usr/bin/env python3
"""A bf16 plan whose optimizer keeps each weight's bf16 copy (megac's
mega-bf16-weight-copies: the AdamWMulti writes it, the programs read it)
trains to the same bits on the CPU as the plan that casts every weight at
each use (--bf16-weight-copies=false): the copy is the same Cast of the same
value, made one step earlier. fp32 plans have no Casts, so nothing changes
there (checked too). The bf16 plan must keep no Cast of a parameter.

  check_bf16_weight_copies.py --megac M --mega-run R --model gpt.mlir --workdir DIR
"""
import re

import pass_equivalence as pe


def copies_and_casts(text):
    """(bf16 parameter copies, Casts that read a parameter, AdamWMulti copy
    flags set) in a plan text."""
    params = set(int(k) for k in re.findall(r"^  %p(\d+) param \"", text, re.M))
    copies = len(re.findall(r"^  %p\d+ param_copy \"", text, re.M))
    casts = flags = 0
    for program in re.split(r"^program ", text, flags=re.M)[1:]:
        persistent = {v: int(p) for v, p in
                      re.findall(r"^  %(\d+) = persistent\[(\d+)\]\+0 : \S+xf32$",
                                 program, re.M)}
        for v in re.findall(r"= Cast\(%(\d+)\)", program):
            casts += persistent.get(v) in params
        for i in re.findall(r"AdamWMulti\([^)]*\) i=\[([\d,]+)\]", program):
            flags += sum(int(x) for x in i.split(",")[2:])
    return copies, casts, flags


def counts(precision, on, off):
    c_on, c_off = copies_and_casts(on), copies_and_casts(off)
    if precision == "fp32":
        wrong = c_on != (0, 0, 0) or c_off != (0, 0, 0)
    else:
        # Every weight cast is gone, each copy is written by one AdamWMulti
        # flag, and without the pass there are casts and no copies.
        wrong = (c_on[0] < 1 or c_on[1] != 0 or c_on[2] != c_on[0] or
                 c_off[0] != 0 or c_off[1] < c_on[0])
    return (f"(copies, parameter Casts, AdamWMulti copy flags) {c_on} with the "
            f"copies, {c_off} with --bf16-weight-copies=false",
            "the parameter Casts were not replaced by copies" if wrong else None)


if __name__ == "__main__":
    pe.main("--bf16-weight-copies", counts, seed=13)

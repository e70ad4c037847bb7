#!/usr/bin/python3
"""Numerical check of mega-autodiff's gradient rules (float64, numpy only).

  mega-opt FILE -split-input-file -mega-autodiff=microbatches=N -mlir-print-op-generic \
      | python3 gradcheck.py --microbatches N [--tol 1e-6] [--samples 24]

Reads one or more modules (separated by `// -----`) in MLIR's generic form, each
with a differentiated func @train. It interprets @train at the tensor level with
numpy in float64 on random inputs and parameters: the forward ops give the loss,
the backward ops that mega-autodiff emitted give `mega.accumulate_grad` values.
These are compared with central finite differences of the forward loss (times
the seed 1/N), for up to --samples elements per parameter.
Nothing here knows the rules: only each op's forward semantics
(docs/compiler.md, docs/dialect.md) and the documented formulas of the *_grad
ops. A parameter with no accumulate_grad must have a zero finite difference.

Prints one line per parameter and `gradcheck: N parameters OK` at the end;
exit 1 (with the worst element) on any mismatch.
"""
import argparse
import math
import re
import sys

import numpy as np

OP_RE = re.compile(
    r'^\s*(?:(?P<res>%[\w]+)(?::(?P<n>\d+))?\s*=\s*)?"(?P<op>[\w.]+)"\((?P<args>[^)]*)\)'
    r'(?:\s*<\{(?P<props>.*)\}>)?\s*(?:\(\{)?\s*(?::\s*(?P<types>.*))?$')
TENSOR_RE = re.compile(r"tensor<([^>]*)>")


def parse_shape(t):
    parts = t.split("x")
    return tuple(int(p) for p in parts[:-1]), parts[-1]


def result_types(types):
    """Types after `->` of a generic op signature."""
    if "->" not in types:
        return []
    out = types.split("->", 1)[1]
    return [parse_shape(m) for m in TENSOR_RE.findall(out)]


class Op:
    def __init__(self, m):
        self.name = m.group("op")
        res, n = m.group("res"), m.group("n")
        if res is None:
            self.results = []
        elif n is None:
            self.results = [res]
        else:
            self.results = [f"{res}#{i}" for i in range(int(n))]
        args = m.group("args").strip()
        self.args = [a.strip() for a in args.split(",")] if args else []
        self.props = m.group("props") or ""
        self.types = result_types(m.group("types") or "")

    def attr(self, key, conv=float):
        m = re.search(r"(?:^|[\s{,])" + key + r"\s*=\s*([^,:}]+)", self.props)
        return conv(m.group(1).strip().strip('"')) if m else None

    def unit(self, key):
        return re.search(r"(?:^|[\s,])" + key + r"(?:\s*[,}]|$)", self.props) is not None

    def str_attr(self, key):
        m = re.search(key + r' = "([^"]*)"', self.props)
        return m.group(1) if m else None

    def array(self, key):
        m = re.search(key + r" = array<i64(?::\s*([^>]*))?>", self.props)
        if not m or not m.group(1):
            return []
        return [int(v) for v in m.group(1).split(",")]


def parse_train(text):
    """The ops of func @train, in order."""
    ops, inside = [], False
    for line in text.splitlines():
        if '"func.func"' in line:
            inside = 'sym_name = "train"' in line
            continue
        if not inside:
            continue
        m = OP_RE.match(line)
        if not m:
            continue
        op = Op(m)
        if op.name == "func.return":
            break
        ops.append(op)
    return ops


def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_prime(x):
    c = math.sqrt(2 / math.pi)
    u = c * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)


def softmax_fwd(x, scale, causal):
    z = scale * x
    if causal:
        r = np.arange(x.shape[-2])[:, None]
        c = np.arange(x.shape[-1])[None, :]
        z = np.where(c > r, -np.inf, z)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def matmul(a, b, ta, tb):
    if ta:
        a = np.swapaxes(a, -1, -2)
    if tb:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def layer_norm_grad(dy, x, w, mean, rstd):
    c = x.shape[-1]
    x2, dy2 = x.reshape(-1, c), dy.reshape(-1, c)
    xhat = (x2 - mean[:, None]) * rstd[:, None]
    g = dy2 * w
    dx = rstd[:, None] * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    return dx.reshape(x.shape), (dy2 * xhat).sum(0), dy2.sum(0)


def evaluate(ops, params, inputs, forward_only):
    """Runs the ops; returns (loss, {name: accumulated grad})."""
    env, grads, loss = {}, {}, None
    for op in ops:
        a = [env[x] for x in op.args]
        n = op.name[len("mega."):] if op.name.startswith("mega.") else op.name
        r = None
        if n == "param":
            r = params[op.str_attr("name")]
        elif n == "input":
            r = inputs[op.str_attr("name")]
        elif n == "output":
            if op.str_attr("name") == "loss":
                loss = a[0]
                if forward_only:
                    return loss, grads
            continue
        elif n == "accumulate_grad":
            name = op.str_attr("name")
            grads[name] = grads.get(name, 0) + a[0]
            continue
        elif n == "embedding":
            r = a[1][a[0]]
        elif n == "embedding_grad":
            h = a[1].shape[-1]
            r = np.zeros((op.attr("vocab", int), h))
            np.add.at(r, a[0].reshape(-1), a[1].reshape(-1, h))
        elif n == "layer_norm":
            x, w, b = a
            eps = op.attr("eps") or 1e-5
            mean = x.mean(-1)
            rstd = 1 / np.sqrt(x.var(-1) + eps)
            y = (x - mean[..., None]) * rstd[..., None] * w + b
            r = [y, mean.reshape(-1), rstd.reshape(-1)]
        elif n == "layer_norm_grad":
            r = list(layer_norm_grad(*a))
        elif n == "matmul":
            r = matmul(a[0], a[1], op.unit("transpose_a"), op.unit("transpose_b"))
        elif n == "add":
            r = a[0] + a[1]
        elif n == "sub":
            r = a[0] - a[1]
        elif n == "mul":
            r = a[0] * a[1]
        elif n == "scale":
            r = op.attr("factor") * a[0]
        elif n == "gelu":
            r = gelu(a[0])
        elif n == "gelu_grad":
            r = gelu_prime(a[0]) * a[1]
        elif n == "softmax":
            scale = op.attr("scale")
            r = softmax_fwd(a[0], 1.0 if scale is None else scale, op.unit("causal"))
        elif n == "softmax_grad":
            scale = op.attr("scale")
            y, dy = a
            r = (1.0 if scale is None else scale) * y * (dy - (dy * y).sum(-1, keepdims=True))
        elif n == "cross_entropy":
            logits, t = a
            v = logits.shape[-1]
            l2, t2 = logits.reshape(-1, v), t.reshape(-1)
            m = l2.max(-1)
            lse = m + np.log(np.exp(l2 - m[:, None]).sum(-1))
            r = [np.array((lse - l2[np.arange(len(t2)), t2]).mean()), lse]
        elif n == "cross_entropy_grad":
            logits, t, lse, dloss = a
            v = logits.shape[-1]
            l2, t2 = logits.reshape(-1, v), t.reshape(-1)
            d = np.exp(l2 - lse[:, None])
            d[np.arange(len(t2)), t2] -= 1
            r = (d * dloss / len(t2)).reshape(logits.shape)
        elif n == "reduce_sum":
            k = a[0].ndim - op.attr("rank", int)
            r = a[0].sum(axis=tuple(range(k))) if k else a[0]
        elif n == "reshape":
            r = a[0].reshape(op.types[0][0])
        elif n == "transpose":
            r = np.transpose(a[0], op.array("perm"))
        elif n == "split":
            r = np.split(a[0], op.attr("parts", int), axis=op.attr("dim", int))
        elif n == "concat":
            r = np.concatenate(a, axis=op.attr("dim", int))
        elif n == "fill":
            r = np.full(op.types[0][0], op.attr("value"))
        else:
            raise SystemExit(f"gradcheck: no semantics for {op.name}")
        rs = r if isinstance(r, list) else [r]
        assert len(rs) == len(op.results), op.name
        for name, val, (shape, _) in zip(op.results, rs, op.types):
            val = np.asarray(val, dtype=np.float64 if not np.issubdtype(np.asarray(val).dtype, np.integer) else np.int64)
            if tuple(val.shape) != tuple(shape):
                raise SystemExit(f"gradcheck: {op.name} gave shape {val.shape}, IR says {shape}")
            env[name] = val
    return loss, grads


def make_inputs(ops, rng):
    params, inputs, int_range = {}, {}, {}
    producers = {r: op for op in ops for r in op.results}
    for op in ops:  # the range of each i32 input from its uses
        for i, arg in enumerate(op.args):
            src = producers.get(arg)
            if src is None or src.name != "mega.input":
                continue
            name = src.str_attr("name")
            if op.name == "mega.embedding" and i == 0:
                bound = producers[op.args[1]].types[0][0][0]
            elif op.name == "mega.cross_entropy" and i == 1:
                bound = producers[op.args[0]].types[0][0][-1]
            else:
                continue
            int_range[name] = min(int_range.get(name, bound), bound)
    for op in ops:
        if op.name == "mega.param":
            shape, _ = op.types[0]
            value = rng.normal(0, 0.5, shape) + (1.0 if len(shape) == 1 else 0.0)
            params.setdefault(op.str_attr("name"), np.array(value, dtype=np.float64))
        elif op.name == "mega.input":
            shape, elem = op.types[0]
            name = op.str_attr("name")
            if elem == "i32":
                inputs[name] = rng.integers(0, int_range.get(name, 2), shape)
            else:
                inputs[name] = rng.normal(0, 1, shape)
    return params, inputs


def check_module(text, idx, tol, samples, microbatches, rng):
    ops = parse_train(text)
    if not ops:
        return 0
    params, inputs = make_inputs(ops, rng)
    _, grads = evaluate(ops, params, inputs, forward_only=False)
    seed = 1.0 / microbatches
    h = 1e-5
    for name, p in params.items():
        flat = p.reshape(-1)
        assert np.shares_memory(flat, p)
        picks = rng.permutation(flat.size)[:samples]
        fd = np.zeros(len(picks))
        for j, k in enumerate(picks):
            old = flat[k]
            flat[k] = old + h
            lp, _ = evaluate(ops, params, inputs, True)
            flat[k] = old - h
            lm, _ = evaluate(ops, params, inputs, True)
            flat[k] = old
            fd[j] = seed * (float(lp) - float(lm)) / (2 * h)
        if name not in grads:
            worst = float(np.max(np.abs(fd)))
            status = "OK" if worst < tol else "FAIL"
            print(f"case {idx} {name}: no gradient, max |fd| {worst:.2e} {status}")
            if status == "FAIL":
                return -1
            continue
        ad = np.asarray(grads[name]).reshape(-1)[picks]
        # An absolute floor: some gradients are exactly zero (a constant shift of
        # all logits), where finite differences leave ~1e-11 of round-off.
        denom = max(float(np.max(np.abs(fd))), 1e-3)
        err = np.abs(ad - fd)
        rel = float(np.max(err)) / denom
        status = "OK" if rel < tol else "FAIL"
        print(f"case {idx} {name}: rel {rel:.2e} {status}")
        if status == "FAIL":
            w = int(np.argmax(err))
            print(f"  worst element {int(picks[w])}: autodiff {ad[w]!r}, finite difference {fd[w]!r}")
            return -1
    return len(params)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--microbatches", type=int, default=1, help="as given to mega-autodiff (seed 1/N)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    text = sys.stdin.read()
    total = 0
    for idx, module in enumerate(re.split(r"^// -----\s*$", text, flags=re.M)):
        n = check_module(module, idx, args.tol, args.samples, args.microbatches, rng)
        if n < 0:
            print("gradcheck: FAIL")
            return 1
        total += n
    print(f"gradcheck: {total} parameters OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

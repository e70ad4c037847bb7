"""check_gpt.py --self-test: checks the reference pieces that CAN be wrong, without mega.

Each check is independent of the code it tests where possible: hand-written bytes for the
file formats, a hand-computed slicing example, torch.optim for the optimizer, an independent
numpy forward for the model, finite differences for gradients, and a fake mega (built on the
reference) for the driver, plus injected faults to prove the driver can fail.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import check_gpt as C
import gpt_ref as R

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = R.GPTConfig(layers=2, hidden=8, heads=2, vocab=13, seq=5)
_results = []


def check(name, ok, detail=""):
    _results.append((name, bool(ok)))
    detail = str(detail[0] if isinstance(detail, list) and detail else detail)
    detail = detail if len(detail) < 300 else detail[:300] + "..."
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f"  ({detail})" if detail else ""))


def tiny_tokens(n, seed=7):
    return np.random.default_rng(seed).integers(0, TINY.vocab, size=n)


# ----------------------------------------------------------------------------- file formats
def test_safetensors(tmp):
    path = os.path.join(tmp, "t.safetensors")
    t = {"a": np.arange(15, dtype=np.float32).reshape(3, 5) - 7.5,
         "b.scalar": np.array(3.25, dtype=np.float64), "c": np.zeros((0, 4), np.int32),
         "d": np.array([1, 65535], np.uint16), "e": np.array([0.5, -2], np.float16)}
    R.save_safetensors(path, t, {"k": "v"})
    back, meta = R.load_safetensors(path)
    same = set(back) == set(t) and all(back[k].dtype == t[k].dtype and back[k].shape == t[k].shape
                                       and np.array_equal(back[k], t[k]) for k in t)
    check("safetensors round trip (F32, F64 scalar, empty I32, U16, F16, metadata)",
          same and meta == {"k": "v"})
    # Byte layout read by hand, not by our reader: u64 LE header size, JSON, data at offsets.
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    b, e = hdr["a"]["data_offsets"]
    ok = (n % 8 == 0 and hdr["a"]["dtype"] == "F32" and hdr["a"]["shape"] == [3, 5]
          and raw[8 + n + b: 8 + n + e] == struct.pack("<15f", *t["a"].ravel())
          and hdr["__metadata__"] == {"k": "v"} and len(raw) == 8 + n + max(
              v["data_offsets"][1] for k, v in hdr.items() if k != "__metadata__"))
    check("safetensors byte layout matches the spec", ok)
    # BF16 written by hand: 0x3F80 = 1.0, 0xC000 = -2.0, 0x3FC0 = 1.5.
    h = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + struct.pack("<3H", 0x3F80, 0xC000, 0x3FC0))
    w, _ = R.load_safetensors(path)
    check("safetensors BF16 read", np.array_equal(w["w"], np.array([1.0, -2.0, 1.5], np.float32)))
    # A malformed file (offsets claim more bytes than the shape) must be rejected.
    h = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(12))
    try:
        R.load_safetensors(path)
        rejected = False
    except ValueError:
        rejected = True
    check("safetensors reader rejects inconsistent offsets", rejected)


def test_dataset(tmp):
    prefix = os.path.join(tmp, "ds")
    R.write_indexed_dataset(prefix, [[1, 2, 3], [4], [5, 6]], np.uint16)
    want_idx = (b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + bytes([8]) + struct.pack("<QQ", 3, 4)
                + struct.pack("<3i", 3, 1, 2) + struct.pack("<3q", 0, 6, 8)
                + struct.pack("<4q", 0, 1, 2, 3))
    check("dataset .idx bytes (uint16) match the documented layout",
          open(prefix + ".idx", "rb").read() == want_idx)
    check("dataset .bin bytes (uint16)", open(prefix + ".bin", "rb").read() == struct.pack("<6H", *range(1, 7)))
    R.write_indexed_dataset(prefix, [[70000, 2], [3]], np.int32)
    idx = open(prefix + ".idx", "rb").read()
    ok = (idx[17] == 4 and struct.unpack_from("<2q", idx, 34 + 8) == (0, 8)
          and R.read_indexed_dataset(prefix).tolist() == [70000, 2, 3])
    check("dataset int32 dtype code, pointers and read back", ok)


def test_slicing():
    toks = np.arange(100)
    # S=4, B=2, G=4 (2 micro-batches). Step 1, micro 1 -> samples 6, 7 -> tokens 24.. and 28..
    x, y = R.get_microbatch(toks, step=1, micro=1, B=2, G=4, S=4)
    ok = (x.tolist() == [[24, 25, 26, 27], [28, 29, 30, 31]]
          and y.tolist() == [[25, 26, 27, 28], [29, 30, 31, 32]])
    x0, y0 = R.get_microbatch(toks, 0, 0, 2, 4, 4)
    ok = ok and x0.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y0.tolist()[1] == [5, 6, 7, 8]
    try:  # last sample needs token i*S+S which must exist
        R.get_microbatch(np.arange(24), 1, 1, 2, 4, 4)
        short_ok = False
    except ValueError:
        short_ok = True
    check("no-shuffle sample slicing vs hand-computed example", ok and short_ok)
    check("tokens_needed", R.tokens_needed(10, 8, 17) == 10 * 8 * 17 + 1)


# ----------------------------------------------------------------------------- model
def np_forward_loss(cfg, w, x, y):
    """Independent float64 numpy GPT written per-head with explicit column slices."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    B, S = x.shape
    H, nh = cfg.hidden, cfg.heads
    d = H // nh

    def ln(z, p):
        mu = z.mean(-1, keepdims=True)
        var = ((z - mu) ** 2).mean(-1, keepdims=True)  # biased variance, as LayerNorm
        return (z - mu) / np.sqrt(var + 1e-5) * w[p + ".weight"] + w[p + ".bias"]

    h = w["wte.weight"][x] + w["wpe.weight"][:S]
    future = np.triu(np.ones((S, S), bool), 1)
    for i in range(cfg.layers):
        p = f"h.{i}."
        qkv = ln(h, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        heads = []
        for j in range(nh):
            q = qkv[..., j * d:(j + 1) * d]
            k = qkv[..., H + j * d:H + (j + 1) * d]
            v = qkv[..., 2 * H + j * d:2 * H + (j + 1) * d]
            s = np.einsum("bqd,bkd->bqk", q, k) / math.sqrt(d)
            s[:, future] = -np.inf
            s = np.exp(s - s.max(-1, keepdims=True))
            heads.append((s / s.sum(-1, keepdims=True)) @ v)
        h = h + np.concatenate(heads, -1) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        u = ln(h, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]
        u = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
        h = h + u @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    logits = ln(h, "ln_f") @ w["wte.weight"].T
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    return float(np.mean(lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]))


def test_model():
    w = R.random_weights(TINY, 3)
    m = R.build_model(TINY, w, torch.float64)
    check("state_dict keys == mega parameter names (order too)",
          list(m.state_dict()) == list(R.param_shapes(TINY))
          and all(tuple(v.shape) == R.param_shapes(TINY)[k] for k, v in m.state_dict().items()))
    check("random LayerNorm params are non-trivial",
          np.std(w["h.0.ln_1.weight"]) > 0.01 and np.abs(w["ln_f.bias"]).max() > 0.01)
    toks = tiny_tokens(2 * TINY.seq + 1)
    x, y = R.get_microbatch(toks, 0, 0, 2, 2, TINY.seq)
    ref = m(x, y).item()
    npl = np_forward_loss(TINY, w, x.numpy(), y.numpy())
    check("torch model loss == independent numpy forward (fp64)", abs(ref - npl) < 1e-12 * abs(npl),
          f"{ref:.15f} vs {npl:.15f}")
    # Causality: changing the last input token must not change earlier positions' logits.
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % TINY.vocab
    with torch.no_grad():
        a, b = m.logits(x), m.logits(x2)
    check("attention is causal", torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1]))


def test_gradients():
    """Autograd vs central finite differences (fp64) on a few elements of every parameter,
    and the tied-embedding decomposition."""
    w = R.random_weights(TINY, 5)
    m = R.build_model(TINY, w, torch.float64)
    toks = tiny_tokens(2 * TINY.seq + 1, seed=11)
    x, y = R.get_microbatch(toks, 0, 0, 2, 2, TINY.seq)
    m.zero_grad()
    m(x, y).backward()
    rng = np.random.default_rng(0)
    used = set(x.flatten().tolist())
    unused = [t for t in range(TINY.vocab) if t not in used]
    worst = 0.0
    for name, p in m.named_parameters():
        idxs = [tuple(int(rng.integers(0, s)) for s in p.shape) for _ in range(2)]
        if name == "wte.weight":  # a row used as input (both uses) and one only in the output
            idxs = [(int(x[0, 0]), 1), (unused[0], 2)] if unused else [(int(x[0, 0]), 1)]
        for i in idxs:
            with torch.no_grad():
                old = p[i].item()
                p[i] = old + 1e-6
                lp = m(x, y).item()
                p[i] = old - 1e-6
                lm = m(x, y).item()
                p[i] = old
            fd, g = (lp - lm) / 2e-6, p.grad[i].item()
            worst = max(worst, abs(fd - g) / (1e-6 + abs(g)))
    check("autograd == finite differences (2 elems/param, fp64)", worst < 1e-5, f"worst rel {worst:.1e}")

    # Tied embedding: the gradient of wte must equal input-use grad + output-use grad.
    m.zero_grad()
    wout = m.wte.weight.detach().clone().requires_grad_(True)
    pos = torch.arange(TINY.seq)
    hcur = m.wte(x) + m.wpe(pos)[None]
    for blk in m.h:
        hcur = blk(hcur)
    logits = m.ln_f(hcur) @ wout.t()
    torch.nn.functional.cross_entropy(logits.reshape(-1, TINY.vocab), y.reshape(-1)).backward()
    g_in, g_out = m.wte.weight.grad.clone(), wout.grad.clone()
    m.zero_grad()
    m(x, y).backward()
    tok = int(x[0, 0])
    ok = (torch.allclose(m.wte.weight.grad, g_in + g_out, rtol=1e-12, atol=1e-15)
          and g_in[tok].abs().max() > 0 and g_out[tok].abs().max() > 0)
    check("tied wte grad == embedding-use grad + output-use grad", ok)


def test_accumulation():
    w = R.random_weights(TINY, 9)
    toks = tiny_tokens(4 * TINY.seq + 1, seed=2)
    m1, m2 = R.build_model(TINY, w, torch.float64), R.build_model(TINY, w, torch.float64)
    l1 = R.forward_backward(m1, toks, 0, 2, 4, TINY.seq)  # 2 micro-batches of 2
    l2 = R.forward_backward(m2, toks, 0, 4, 4, TINY.seq)  # 1 micro-batch of 4
    ok = abs(l1 - l2) < 1e-12 and all(torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-14)
                                      for a, b in zip(m1.parameters(), m2.parameters()))
    check("grad accumulation G/B micro-batches == one batch of G", ok)


# ----------------------------------------------------------------------------- optimizer
def test_optimizer():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64)) for _ in range(3)]
    for p in ps:
        p.grad = torch.randn_like(p) * 3
    grads = [p.grad.clone() for p in ps]
    n_mine = R.clip_grads_(ps, 1.0)
    mine = [p.grad.clone() for p in ps]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    n_torch = torch.nn.utils.clip_grad_norm_(ps, 1.0)
    check("clip_grads_ == torch clip_grad_norm_",
          float(n_mine) == float(n_torch) and all(torch.equal(a, p.grad) for a, p in zip(mine, ps)))

    w = R.random_weights(TINY, 4)
    toks = tiny_tokens(6 * 4 * TINY.seq + 1, seed=3)
    for optname in ("adam", "sgd"):
        oc = R.OptConfig(optimizer=optname, lr=3e-2, weight_decay=0.1, clip_grad=0.5)
        for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
            la, _, ma = R.train(TINY, w, toks, 6, 2, 4, oc, dtype, optimizer="manual")
            lb, _, mb = R.train(TINY, w, toks, 6, 2, 4, oc, dtype, optimizer="torch")
            err = max(C.rel_err(a.detach().numpy(), b.detach().numpy())[1]
                      for a, b in zip(ma.parameters(), mb.parameters()))
            lerr = max(C.scalar_rel(a["lm_loss"], b["lm_loss"]) for a, b in zip(la, lb))
            check(f"manual {optname} == torch.optim ({str(dtype)[6:]}, groups, clip, 6 steps)",
                  err <= tol and lerr <= tol, f"param rel {err:.1e}, loss rel {lerr:.1e}")
    # Negative control: decaying biases/LN too must give a different result, otherwise the
    # comparison above could not have noticed the decay/no-decay split.
    oc = R.OptConfig(lr=3e-2, weight_decay=0.1, clip_grad=0.5)
    saved = R.is_decayed
    R.is_decayed = lambda n, p: True
    try:
        _, _, mc = R.train(TINY, w, toks, 6, 2, 4, oc, torch.float64, optimizer="manual")
    finally:
        R.is_decayed = saved
    _, _, ma = R.train(TINY, w, toks, 6, 2, 4, oc, torch.float64, optimizer="manual")
    check("negative control: weight decay on 1-dim params changes the result",
          not torch.equal(mc.ln_f.bias, ma.ln_f.bias))


def test_determinism():
    w = R.random_weights(TINY, 1)
    toks = tiny_tokens(3 * 4 * TINY.seq + 1)
    oc = R.OptConfig(clip_grad=1.0)
    a = R.train(TINY, w, toks, 3, 2, 4, oc)
    b = R.train(TINY, w, toks, 3, 2, 4, oc)
    check("reference fp32 is bitwise deterministic",
          a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1]))


# ----------------------------------------------------------------------------- driver
def test_driver(tmp):
    """Full check_gpt run against fake_mega (must PASS), then injected faults (must FAIL)."""
    tools = {}
    for tool in ("megac", "mega-run"):
        tools[tool] = os.path.join(tmp, tool)
        with open(tools[tool], "w") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} {os.path.join(HERE, "fake_mega.py")} {tool} "$@"\n')
        os.chmod(tools[tool], 0o755)
    wd = os.path.join(tmp, "e2e")
    args = ["--megac", tools["megac"], "--mega-run", tools["mega-run"], "--model", "unused.mlir",
            "--layers", "2", "--hidden", "16", "--heads", "2", "--vocab", "29", "--seq", "7",
            "--batch", "2", "--global-batch", "4", "--workdir", wd]
    r = subprocess.run([sys.executable, os.path.join(HERE, "check_gpt.py")] + args,
                       capture_output=True, text=True, timeout=120)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    check("end-to-end check_gpt vs fake mega passes", r.returncode == 0 and last.startswith("PASS"),
          last if r.returncode == 0 else r.stdout[-2000:] + r.stderr[-2000:])
    if r.returncode != 0:
        return
    a = C.build_parser().parse_args(args)
    cfg, weights, tokens = C.prepare_inputs(a, wd)
    ref = C.run_reference(a, cfg, weights, tokens, out=lambda *_: None)
    gpath, lpath = os.path.join(wd, "grads.safetensors"), os.path.join(wd, "log.jsonl")
    grads0, _ = R.load_safetensors(gpath)
    log0 = open(lpath).read()
    quiet = lambda *_: None  # noqa: E731

    def run_with(grads, log_text):
        R.save_safetensors(gpath, grads)
        with open(lpath, "w") as f:
            f.write(log_text)
        return C.check_outputs(a, wd, *ref, out=quiet)

    check("in-process compare of clean outputs passes", run_with(grads0, log0) == [])
    g = dict(grads0)
    g["h.1.mlp.c_fc.weight"] = g["h.1.mlp.c_fc.weight"].copy()
    g["h.1.mlp.c_fc.weight"][3, 5] += 3e-4 * np.abs(g["h.1.mlp.c_fc.weight"]).max()
    f = run_with(g, log0)
    check("fault: one gradient element off by 3e-4 is caught", f and "h.1.mlp.c_fc.weight" in f[0], f)
    g = {k: v for k, v in grads0.items() if k != "ln_f.bias"}
    g["extra.weight"] = np.zeros(3, np.float32)
    f = run_with(g, log0)
    check("fault: missing + extra gradient caught", len(f) == 2 and "ln_f.bias" in f[0] and "extra" in f[1], f)
    g = dict(grads0)
    g["h.0.attn.c_attn.weight"] = np.ascontiguousarray(g["h.0.attn.c_attn.weight"].T)
    f = run_with(g, log0)
    check("fault: transposed Conv1D layout caught", any("shape" in s for s in f), f)
    lines = []
    R.save_safetensors(gpath, {k: v * np.float32(0.5) for k, v in grads0.items()})
    f = C.check_outputs(a, wd, *ref, out=lines.append)
    check("fault: uniformly scaled grads caught and diagnosed",
          f and any(s.startswith("NOTE: mega grads == 0.5 x") for s in lines), f)
    recs = [json.loads(line) for line in log0.splitlines()]

    def log_with(edit):
        rs = [dict(r) for r in recs]
        edit(rs)
        return "".join(json.dumps(r) + "\n" for r in rs)
    f = run_with(grads0, log_with(lambda rs: rs[6].update(lm_loss=rs[6]["lm_loss"] * (1 + 3e-4))))
    check("fault: iteration 7 loss off by 3e-4 caught", f and "iteration 7" in f[0], f)
    f = run_with(grads0, log_with(lambda rs: rs[0].update(lm_loss=rs[0]["lm_loss"] * (1 + 3e-5))))
    check("fault: step-1 loss off by 3e-5 caught", f and "iteration 1" in f[0], f)
    f = run_with(grads0, log_with(lambda rs: rs[2].update(consumed_samples=2)))
    check("fault: wrong consumed_samples caught", f and "consumed_samples" in f[0], f)
    f = run_with(grads0, log_with(lambda rs: rs.pop(4)))
    check("fault: missing log iteration caught", f and "iterations" in f[0], f)
    run_with(grads0, log0)


def run():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="check_gpt_selftest_")
    try:
        test_safetensors(tmp)
        test_dataset(tmp)
        test_slicing()
        test_model()
        test_gradients()
        test_accumulation()
        test_optimizer()
        test_determinism()
        test_driver(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bad = [n for n, ok in _results if not ok]
    dt = time.time() - t0
    if bad:
        print(f"FAIL: {len(bad)} of {len(_results)} self-checks failed, first: {bad[0]} ({dt:.1f}s)")
        return 1
    print(f"PASS: {len(_results)} self-checks in {dt:.1f}s")
    return 0

#!/usr/bin/env python3
"""The PyTorch side of the GPU benchmark: one GPT training step, timed.

  python3 bench/gpu/torch_baseline.py --config gpt2-small --modes fp32,bf16,bf16-compile
                                      [--steps 20] [--warmup 5] [--batch B] [--json FILE]

The model is the one mega trains (DESIGN.md, "GPT semantics"): pre-LayerNorm blocks (eps 1e-5),
learned positions, causal attention scaled by 1/sqrt(head dim), 4x MLP with tanh GELU, final
LayerNorm, output projection tied to the token embedding, mean cross-entropy, no dropout;
AdamW (wd 0.1 on matrices) and global-norm clipping at 1.0, as mega's plans do.

Modes: fp32 is plain float32 with TF32 switched off (what mega's fp32 plans compute); bf16 runs
the forward under autocast(bfloat16); "-compile" wraps the model in torch.compile. Each mode
prints one row: median ms/step over the timed steps, tokens/s, and model TFLOP/s (6N + 12LHQT
per token, N without the position table). A mode that fails prints its error and the exit
status is 1; the other modes still run.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "gpt2-small": dict(layers=12, heads=12, hidden=768, vocab=50304, seq=1024, batch=16),
    "cpu-small": dict(layers=4, heads=4, hidden=256, vocab=8192, seq=128, batch=8),
}


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.c_attn(x).view(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [b, heads, t, head dim]
        if hasattr(F, "scaled_dot_product_attention"):  # PyTorch >= 2.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = att.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
        self.attn = Attention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.c_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg["vocab"], cfg["hidden"])
        self.wpe = nn.Embedding(cfg["seq"], cfg["hidden"])
        self.h = nn.ModuleList(Block(cfg["hidden"], cfg["heads"]) for _ in range(cfg["layers"]))
        self.ln_f = nn.LayerNorm(cfg["hidden"], eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied output projection
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def model_flops_per_token(cfg, model):
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    q = cfg["hidden"] // cfg["heads"]
    return 6 * n + 12 * cfg["layers"] * cfg["heads"] * q * cfg["seq"]


def run_mode(cfg, mode, steps, warmup, device):
    torch.manual_seed(0)
    bf16 = mode.startswith("bf16")
    compiled = mode.endswith("-compile")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    model = GPT(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    fused = {"fused": True} if device == "cuda" else {}  # the fastest stock AdamW on a GPU
    opt = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.999), eps=1e-8, **fused)
    if compiled and not hasattr(torch, "compile"):
        raise RuntimeError("torch.compile needs PyTorch >= 2.0")
    fwd = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(1)
    B, S = cfg["batch"], cfg["seq"]
    data = [torch.randint(0, cfg["vocab"], (B, S + 1), generator=gen).to(device) for _ in range(4)]

    def step(i):
        batch = data[i % len(data)]
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times, losses = [], []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(i)
        losses.append(float(loss.item()))  # .item() waits for the step
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    ms = statistics.median(times)
    tok_s = B * S / (ms / 1000.0)
    return {"mode": mode, "median_ms": ms, "tokens_per_s": tok_s,
            "tflops": tok_s * model_flops_per_token(cfg, model) / 1e12,
            "losses": losses, "ms": times,
            "peak_mem_gib": (torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="gpt2-small", choices=sorted(CONFIGS))
    ap.add_argument("--modes", default="fp32,bf16,bf16-compile")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    ap.add_argument("--batch", type=int, help="micro-batch (default: the config's)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    cfg = dict(CONFIGS[a.config])
    if a.batch:
        cfg["batch"] = a.batch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}: {a.config} {cfg}, "
          f"{a.warmup} warm-up + {a.steps} timed steps per mode", flush=True)
    print(f"{'mode':14s} {'ms/step':>9s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'peak GiB':>9s}  first/last loss",
          flush=True)
    results, failed = [], False
    for mode in [m.strip() for m in a.modes.split(",") if m.strip()]:
        if mode not in ("fp32", "bf16", "fp32-compile", "bf16-compile"):
            print(f"{mode:14s} unknown mode (fp32, bf16, fp32-compile, bf16-compile)", flush=True)
            failed = True
            continue
        try:
            r = run_mode(cfg, mode, a.steps, a.warmup, device)
        except Exception as e:  # report and go on with the next mode
            print(f"{mode:14s} FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  flush=True)
            failed = True
            continue
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        results.append(r)
        print(f"{mode:14s} {r['median_ms']:9.1f} {r['tokens_per_s']:10.0f} {r['tflops']:8.1f} "
              f"{r['peak_mem_gib']:9.1f}  {r['losses'][0]:.4f}/{r['losses'][-1]:.4f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": a.config, "cfg": cfg, "device": name, "results": results}, f, indent=1)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())

"""PyTorch reference for mega's GPT (numerics oracle for test/reference/check_gpt.py).

Pinned semantics (see the mega docs / brief):
  * Pre-LayerNorm blocks (eps 1e-5), learned position embeddings, causal MHA scaled by
    1/sqrt(head_dim), MLP 4*hidden with tanh-approximate GELU, final LayerNorm, output
    projection tied to wte (logits = ln_f(x) @ wte.weight^T), mean CE over all B*S tokens.
  * Parameter names/layouts are Hugging Face GPT-2's minus the "transformer." prefix;
    c_attn/c_proj/c_fc are Conv1D: weight is [in, out] and y = x @ W + b.
  * AdamW exactly like torch.optim.AdamW, weight decay only on >=2-dim params, global-norm
    clipping exactly like torch.nn.utils.clip_grad_norm_; logged grad_norm is pre-clip.
  * Gradient accumulation: G/B micro-batches per step, grads and loss are their mean.

Only stdlib + numpy + torch, so it runs without any mega binary.
"""
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

LN_EPS = 1e-5


@dataclass
class GPTConfig:
    layers: int
    hidden: int
    heads: int
    vocab: int
    seq: int

    @property
    def head_dim(self):
        assert self.hidden % self.heads == 0, "hidden must be divisible by heads"
        return self.hidden // self.heads


# ----------------------------------------------------------------------------- model
class Conv1D(nn.Module):
    """HF GPT-2 Conv1D: weight [in, out], y = x @ W + b (NOT nn.Linear's [out, in])."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


def gelu_tanh(x):
    # Written out (instead of F.gelu(approximate="tanh")) so the formula is visible.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.c_attn = Conv1D(cfg.hidden, 3 * cfg.hidden)
        self.c_proj = Conv1D(cfg.hidden, cfg.hidden)

    def forward(self, x):
        B, S, H = x.shape
        nh, d = self.cfg.heads, self.cfg.head_dim
        # Columns of c_attn are q|k|v, and inside each the heads are contiguous blocks of d.
        q, k, v = self.c_attn(x).split(H, dim=2)
        q, k, v = (t.view(B, S, nh, d).transpose(1, 2) for t in (q, k, v))  # [B,nh,S,d]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
        causal = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, S, H)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Conv1D(cfg.hidden, 4 * cfg.hidden)
        self.c_proj = Conv1D(4 * cfg.hidden, cfg.hidden)

    def forward(self, x):
        return self.c_proj(gelu_tanh(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Module tree chosen so that state_dict() keys are exactly mega's parameter names."""

    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.hidden)
        self.wpe = nn.Embedding(cfg.seq, cfg.hidden)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.layers)])
        self.ln_f = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.to(dtype)

    def logits(self, idx):
        B, S = idx.shape
        pos = torch.arange(S, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)[None]
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied output projection

    def forward(self, idx, targets):
        logits = self.logits(idx)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def param_shapes(cfg):
    """Ordered {name: shape} of every parameter mega must have (and no others)."""
    H, V, S = cfg.hidden, cfg.vocab, cfg.seq
    shapes = {"wte.weight": (V, H), "wpe.weight": (S, H)}
    for i in range(cfg.layers):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (H,), p + "ln_1.bias": (H,),
            p + "attn.c_attn.weight": (H, 3 * H), p + "attn.c_attn.bias": (3 * H,),
            p + "attn.c_proj.weight": (H, H), p + "attn.c_proj.bias": (H,),
            p + "ln_2.weight": (H,), p + "ln_2.bias": (H,),
            p + "mlp.c_fc.weight": (H, 4 * H), p + "mlp.c_fc.bias": (4 * H,),
            p + "mlp.c_proj.weight": (4 * H, H), p + "mlp.c_proj.bias": (H,),
        })
    shapes.update({"ln_f.weight": (H,), "ln_f.bias": (H,)})
    return shapes


def random_weights(cfg, seed=1234):
    """Non-trivial float32 weights: LayerNorm weights/biases and all biases are random too,
    so that every gradient path (incl. d/d gamma, d/d beta) is exercised and a mega bug that
    ignores e.g. a bias cannot hide behind a zero. Scales keep activations O(1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.05 * rng.standard_normal(shape)
        elif name in ("wte.weight", "wpe.weight"):
            a = 0.1 * rng.standard_normal(shape)
        else:  # Conv1D weights: std ~ 1/sqrt(fan_in) keeps the residual stream O(1)
            a = rng.standard_normal(shape) / math.sqrt(shape[0])
        out[name] = a.astype(np.float32)
    return out


def build_model(cfg, weights, dtype=torch.float32):
    model = GPT(cfg, dtype)
    sd = {k: torch.from_numpy(np.asarray(v)).to(dtype) for k, v in weights.items()}
    model.load_state_dict(sd, strict=True)  # strict: names and shapes must match exactly
    return model


# ----------------------------------------------------------------------------- safetensors
# dtype name -> (numpy dtype used for storage, itemsize). BF16 is stored as raw uint16 and
# widened to float32 on read (numpy has no bfloat16).
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
              "U8": np.uint8, "U16": np.uint16, "BOOL": np.bool_}
_NP_TO_ST = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
             np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
             np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.uint16): "U16",
             np.dtype(np.bool_): "BOOL"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: {name: np.ndarray}. Header is space-padded to a multiple of 8 bytes (as the
    reference implementation does) so the data section is 8-byte aligned."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])  # not ascontiguousarray: it turns 0-d into 1-d
        st = _NP_TO_ST[a.dtype]
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)


def load_safetensors(path):
    """Returns ({name: np.ndarray}, metadata dict). Validates offsets strictly so a
    malformed file from mega is reported rather than silently misread."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} exceeds file size {len(buf)}")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = memoryview(buf)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    out, spans = {}, []
    for name, info in header.items():
        st, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        if st not in _ST_DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {st}")
        npdt = np.dtype(_ST_DTYPES[st]).newbyteorder("<")
        if not (0 <= b <= e <= len(data)) or (e - b) != int(np.prod(shape, dtype=np.int64)) * npdt.itemsize:
            raise ValueError(f"{path}: {name}: bad data_offsets {b},{e} for {st}{shape}")
        a = np.frombuffer(data[b:e], dtype=npdt).reshape(shape).copy()
        if st == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(a.dtype.newbyteorder("="))
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:  # spec: tensors tile the data section with no holes or overlaps
        if b != pos:
            raise ValueError(f"{path}: data section has a hole/overlap at byte {pos}")
        pos = e
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return out, meta


# ----------------------------------------------------------------------------- dataset
MMIDIDX_MAGIC = b"MMIDIDX\x00\x00"
_DSET_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3,
               np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.float64): 6,
               np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
_DSET_DTYPES = {v: k for k, v in _DSET_CODES.items()}


def write_indexed_dataset(prefix, docs, dtype=np.uint16):
    """Megatron MMIDIDX dataset, one sequence per document. docs: list of 1-D int arrays."""
    dtype = np.dtype(dtype)
    docs = [np.asarray(d).astype(dtype.newbyteorder("<")) for d in docs]
    sizes = np.array([len(d) for d in docs], dtype="<i4")
    pointers = np.zeros(len(docs), dtype="<i8")
    if len(docs) > 1:
        pointers[1:] = np.cumsum(sizes[:-1].astype(np.int64)) * dtype.itemsize
    doc_idx = np.arange(len(docs) + 1, dtype="<i8")  # 0 .. count
    with open(prefix + ".bin", "wb") as f:
        for d in docs:
            f.write(d.tobytes())
    with open(prefix + ".idx", "wb") as f:
        f.write(MMIDIDX_MAGIC)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", _DSET_CODES[dtype]))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes.tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())


def read_indexed_dataset(prefix):
    """Returns the concatenated token stream (int64) in sequence order."""
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    if idx[:9] != MMIDIDX_MAGIC:
        raise ValueError(f"{prefix}.idx: bad magic")
    (version,) = struct.unpack_from("<Q", idx, 9)
    (code,) = struct.unpack_from("<B", idx, 17)
    count, doc_count = struct.unpack_from("<QQ", idx, 18)
    if version != 1:
        raise ValueError(f"{prefix}.idx: unsupported version {version}")
    dtype = _DSET_DTYPES[code].newbyteorder("<")
    off = 34
    sizes = np.frombuffer(idx, "<i4", count, off); off += 4 * count
    pointers = np.frombuffer(idx, "<i8", count, off); off += 8 * count
    np.frombuffer(idx, "<i8", doc_count, off)  # doc_idx: read to validate length only
    raw = np.fromfile(prefix + ".bin", dtype=dtype)
    parts = [raw[p // dtype.itemsize: p // dtype.itemsize + s] for p, s in zip(pointers, sizes)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def random_token_docs(n_tokens, vocab, seed, mean_doc_len=37):
    """Random tokens split into documents of random length, so --no-shuffle sample slicing
    must cross document boundaries (mega must treat the stream as concatenated)."""
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, vocab, size=n_tokens)
    docs, i = [], 0
    while i < n_tokens:
        n = int(rng.integers(1, 2 * mean_doc_len))
        docs.append(toks[i:i + n])
        i += n
    return docs


def get_microbatch(tokens, step, micro, B, G, S):
    """--no-shuffle slicing: global sample index i = step*G + micro*B + row, and sample i is
    tokens[i*S : i*S+S+1]; inputs are its first S tokens, targets its last S."""
    first = step * G + micro * B
    rows = [tokens[i * S: i * S + S + 1] for i in range(first, first + B)]
    if any(len(r) != S + 1 for r in rows):
        raise ValueError("dataset too short for the requested steps")
    arr = np.stack(rows).astype(np.int64)
    return torch.from_numpy(arr[:, :S].copy()), torch.from_numpy(arr[:, 1:].copy())


def tokens_needed(steps, G, S):
    return steps * G * S + 1


# ----------------------------------------------------------------------------- training
@dataclass
class OptConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_grad: float = 0.0  # 0 = no clipping (grad_norm is still computed and logged)


def is_decayed(name, p):
    return p.dim() >= 2


def global_grad_norm(params):
    # Same reduction order as clip_grad_norm_: norm of the per-tensor 2-norms.
    return torch.norm(torch.stack([torch.norm(p.grad.detach(), 2.0) for p in params]), 2.0)


def clip_grads_(params, max_norm):
    """Exactly torch.nn.utils.clip_grad_norm_ (torch 1.13): always multiplies by the clamped
    coefficient. Returns the pre-clip total norm."""
    total = global_grad_norm(params)
    if max_norm > 0:
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for p in params:
            p.grad.detach().mul_(coef.to(p.grad.dtype))
    return total


class ManualOptimizer:
    """AdamW / SGD written out step by step in torch.optim.AdamW's (single-tensor) order, so
    the update rule is readable and mega authors can follow it line by line."""

    def __init__(self, named_params, oc):
        self.oc = oc
        self.items = [(n, p, is_decayed(n, p)) for n, p in named_params]
        self.state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p, _ in self.items}
        self.t = 0

    @torch.no_grad()
    def step(self):
        oc = self.oc
        self.t += 1
        for name, p, decay in self.items:
            g = p.grad
            wd = oc.weight_decay if decay else 0.0
            if oc.optimizer == "sgd":
                p.add_(g.add(p, alpha=wd), alpha=-oc.lr)  # torch.optim.SGD's order
                continue
            m, v = self.state[name]
            p.mul_(1 - oc.lr * wd)                                  # decoupled weight decay
            m.mul_(oc.beta1).add_(g, alpha=1 - oc.beta1)
            v.mul_(oc.beta2).addcmul_(g, g, value=1 - oc.beta2)
            bc1 = 1 - oc.beta1 ** self.t
            bc2 = 1 - oc.beta2 ** self.t
            denom = (v.sqrt() / math.sqrt(bc2)).add_(oc.eps)
            p.addcdiv_(m, denom, value=-(oc.lr / bc1))


def make_torch_optimizer(model, oc, **kw):
    """torch.optim equivalent with two param groups (decay / no-decay); used by the
    self-test to validate ManualOptimizer and by the benchmark."""
    decay = [p for n, p in model.named_parameters() if is_decayed(n, p)]
    other = [p for n, p in model.named_parameters() if not is_decayed(n, p)]
    groups = [{"params": decay, "weight_decay": oc.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    if oc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=oc.lr, **kw)
    return torch.optim.AdamW(groups, lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=oc.eps, **kw)


def forward_backward(model, tokens, step, B, G, S):
    """One global batch: G/B micro-batches, grads accumulated as their mean. Returns the mean
    micro-batch loss (= the logged lm_loss, taken before this step's update)."""
    assert G % B == 0, "global batch must be a multiple of micro batch"
    n_micro = G // B
    for p in model.parameters():
        p.grad = None
    total = 0.0
    for m in range(n_micro):
        x, y = get_microbatch(tokens, step, m, B, G, S)
        loss = model(x, y)
        (loss / n_micro).backward()
        total += loss.item()  # python float (fp64) sum of per-micro-batch losses
    return total / n_micro


def train(cfg, weights, tokens, steps, B, G, oc, dtype=torch.float32, optimizer="manual"):
    """Runs `steps` optimizer steps from `weights` on `tokens`.
    Returns (logs, first_grads): logs = [{"iteration", "lm_loss", "grad_norm"}...],
    first_grads = {name: np.ndarray} after step 1's backward, before clipping/update."""
    model = build_model(cfg, weights, dtype)
    named = list(model.named_parameters())
    params = [p for _, p in named]
    opt = ManualOptimizer(named, oc) if optimizer == "manual" else make_torch_optimizer(model, oc)
    logs, first_grads = [], None
    for step in range(steps):
        loss = forward_backward(model, tokens, step, B, G, cfg.seq)
        if first_grads is None:
            first_grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in named}
        gn = clip_grads_(params, oc.clip_grad)
        opt.step()
        logs.append({"iteration": step + 1, "lm_loss": loss, "grad_norm": float(gn)})
    return logs, first_grads, model

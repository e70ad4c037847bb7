//===- Optimizer.cpp - GradNorm, AdamW, AdamWMulti, Sgd ------------------===//
//
// AdamW and Sgd follow torch.optim's single-tensor code operation by
// operation (scalars prepared in double, tensor arithmetic in float) so that
// mega and the PyTorch reference round alike.
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "Reduce.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace mega::rt::cpu {

namespace {
constexpr int64_t kNormBlock = 16384; // fixed: the sum order is the data's
constexpr int64_t kGrain = 16384;
} // namespace

//===----------------------------------------------------------------------===//
// GradNorm
//===----------------------------------------------------------------------===//

void checkGradNorm(const Checker &c) {
  if (c.outs.size() != 2)
    c.fail("expects 2 outputs (norm, coef), got " +
           std::to_string(c.outs.size()));
  // i = {} (every gradient whole on every rank), or {group, s_0..s_{n-1}}
  // with s_k = 1 when input k is a tensor-parallel shard over `group`.
  // With a trailing pipeline group {group, s_0..s_{n-1}, outer}, flag 2
  // marks a copy counted on another pipeline rank. With two trailing groups
  // {group, s.., outer or -1, data}, every input is also a data-parallel
  // block (the distributed optimizer's): the sums meet over `data` first.
  if (!c.instr.i.empty()) {
    const size_t n = c.ins.size();
    bool outer = c.instr.i.size() >= 2 + n;
    bool data = c.instr.i.size() == 3 + n;
    if (!outer)
      c.attrs(1 + n, 1);
    c.attr(0, 0, 2, "group");
    for (size_t k = 0; k < n; ++k)
      outer ? c.attr(1 + k, 0, 2, "shard flag") : c.flag(1 + k, "shard flag");
    if (outer)
      c.attr(1 + n, data ? -1 : 0, 2, "pipeline group");
    if (data)
      c.attr(2 + n, 0, 2, "data group");
  }
  c.attrs(c.instr.i.size(), 1);
  c.finite(0, "maxNorm");
  c.tensor(c.outs[0], DType::F32, 1, "norm");
  c.tensor(c.outs[1], DType::F32, 1, "coef");
  c.disjoint(c.outs[1], c.outs[0], "coef", "norm");
  for (const Value *v : c.ins) {
    c.dtype(v, DType::F32, "a gradient");
    c.numel(v, "a gradient");
    c.disjoint(c.outs[0], v, "norm", "a gradient");
    c.disjoint(c.outs[1], v, "coef", "a gradient");
  }
}

namespace {

/// Squared L2 sums of the replicated ([0]) and the sharded ([1]) inputs
/// (all replicated when `in.i` is empty): blocks of kNormBlock elements of
/// each tensor summed in double, then the block sums in order.
void squaredSums(const Ctx &ctx, const Instr &in, const Refs &ins,
                 double ss[2]) {
  struct Block {
    const float *p;
    int64_t n;
    int kind;
  };
  std::vector<Block> blocks;
  for (size_t k = 0; k < ins.size(); ++k) {
    if (!in.i.empty() && in.i[1 + k] == 2)
      continue; // counted on another pipeline rank
    const int kind = in.i.empty() ? 0 : int(in.i[1 + k] != 0);
    for (int64_t b = 0, n = ins[k].numel(); b < n; b += kNormBlock)
      blocks.push_back({ins[k].f32() + b, std::min(kNormBlock, n - b), kind});
  }
  std::vector<double> part(blocks.size());
  parallelFor(ctx, int64_t(blocks.size()), 2, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      part[size_t(b)] = dotD(blocks[size_t(b)].p, blocks[size_t(b)].p,
                             blocks[size_t(b)].n);
  });
  ss[0] = ss[1] = 0;
  for (size_t b = 0; b < blocks.size(); ++b)
    ss[blocks[b].kind] += part[b];
}

void finishGradNorm(const Instr &in, double ss, const Refs &outs) {
  const float norm = float(std::sqrt(ss));
  const float maxNorm = in.f[0];
  float coef;
  if (!std::isfinite(norm))
    coef = std::numeric_limits<float>::quiet_NaN();
  else if (maxNorm <= 0.0f)
    coef = 1.0f;
  else
    coef = std::min(1.0f, maxNorm / (norm + 1e-6f)); // as clip_grad_norm_
  outs[0].f32()[0] = norm;
  outs[1].f32()[0] = coef;
}

} // namespace

void runGradNorm(const Ctx &ctx, const Instr &in, const Refs &ins,
                 const Refs &outs) {
  double ss[2];
  squaredSums(ctx, in, ins, ss);
  finishGradNorm(in, ss[0] + ss[1], outs);
}

void runGradNormSharded(const Ctx &ctx, const Instr &in, const Refs &ins,
                        const Refs &outs, Communicator &comm) {
  double ss[2];
  squaredSums(ctx, in, ins, ss);
  finishGradNorm(in, gradNormTotal(in, ins.size(), ss[0], ss[1], comm), outs);
}

//===----------------------------------------------------------------------===//
// AdamW, Sgd
//===----------------------------------------------------------------------===//

namespace {

/// The big tensors of an optimizer instruction must not share bytes (they
/// are updated in place, element by element, in parallel).
void checkState(const Checker &c, std::initializer_list<int> which,
                const char *const *names, int scalarsFrom) {
  const Value *p = c.ins[0];
  int64_t n = c.numel(p, names[0]);
  for (int k : which) {
    c.tensor(c.ins[k], DType::F32, n, names[k]);
    for (int j : which)
      if (j < k)
        c.disjoint(c.ins[k], c.ins[j], names[k], names[j]);
  }
  for (int k = scalarsFrom; k < int(c.ins.size()); ++k)
    c.tensor(c.ins[k], DType::F32, 1, names[k]);
}

} // namespace

void checkAdamW(const Checker &c) {
  static const char *const names[] = {"param", "grad", "m",   "v",
                                      "lr",    "step", "coef"};
  if (!c.instr.i.empty()) {
    // Distributed optimizer: grad, m, v and the output are this rank's
    // block of the parameter (its rank-th 1/size part).
    c.operands(7, 1);
    c.attrs(1, 4);
    c.attr(0, 0, 2, "group");
    int64_t n = c.numel(c.ins[1], "grad");
    int64_t all = c.numel(c.ins[0], "param");
    if (n <= 0 || all % n != 0)
      c.fail("the grad block (" + std::to_string(n) +
             " elements) does not divide the parameter (" +
             std::to_string(all) + ")");
    for (int k : {2, 3})
      c.tensor(c.ins[k], DType::F32, n, names[k]);
    c.tensor(c.outs[0], DType::F32, n, "out");
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < k; ++j)
        c.disjoint(c.ins[k], c.ins[j], names[k], names[j]);
    for (int k = 0; k < 4; ++k)
      c.disjoint(c.outs[0], c.ins[k], "out", names[k]);
    for (int k = 4; k < 7; ++k)
      c.tensor(c.ins[k], DType::F32, 1, names[k]);
  } else {
    c.operands(7, 0);
    c.attrs(0, 4);
    checkState(c, {0, 1, 2, 3}, names, 4);
  }
  float b1 = c.finite(0, "beta1"), b2 = c.finite(1, "beta2");
  c.finite(2, "eps");
  c.finite(3, "weightDecay");
  if (!(b1 >= 0.0f && b1 < 1.0f) || !(b2 >= 0.0f && b2 < 1.0f))
    c.fail("betas must be in [0, 1)");
}

namespace {

/// The float scalars of torch's AdamW for one tensor (decoupled weight
/// decay `wd`), prepared in double from the step's lr and count exactly as
/// torch does with its Python floats, rounded to float when used.
struct AdamScalars {
  float coef, decay, b1, a1, b2, a2, negStep, bc2Sqrt, eps;
};

AdamScalars adamScalars(const Instr &in, const Refs &ins, size_t lrAt,
                        double wd) {
  const double lr = ins[lrAt].f32()[0], t = ins[lrAt + 1].f32()[0];
  const double b1 = in.f[0], b2 = in.f[1];
  AdamScalars s;
  s.coef = ins[lrAt + 2].f32()[0];
  s.decay = float(1.0 - lr * wd);
  s.b1 = float(b1);
  s.a1 = float(1.0 - b1);
  s.b2 = float(b2);
  s.a2 = float(1.0 - b2);
  const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
  s.negStep = float(-(lr / bc1));
  s.bc2Sqrt = float(std::sqrt(bc2));
  s.eps = in.f[2];
  return s;
}

/// torch's AdamW element update on [b, e): `pin` -> `p` (the same array in
/// place), m and v in place. AdamW and AdamWMulti share it, so the fused
/// instruction rounds exactly as the single ones.
inline void adamwElements(const AdamScalars s, const float *grad, float *m,
                          float *v, const float *pin, float *p, int64_t b,
                          int64_t e) {
  // Scalars into locals: read through a reference, a float may alias the
  // stores and the loop would stay scalar.
  const float cf = s.coef, dc = s.decay, B1 = s.b1, A1 = s.a1, B2 = s.b2,
              A2 = s.a2, ns = s.negStep, bs = s.bc2Sqrt, ep = s.eps;
  for (int64_t k = b; k < e; ++k) {
    const float g = grad[k] * cf;
    const float pk = pin[k] * dc;
    const float mk = m[k] * B1 + A1 * g;
    const float vk = v[k] * B2 + A2 * (g * g);
    const float denom = std::sqrt(vk) / bs + ep;
    m[k] = mk;
    v[k] = vk;
    p[k] = pk + ns * (mk / denom);
  }
}

/// torch's AdamW step on n elements: `pin` -> `pout` (the same array in
/// place), m and v updated in place.
void adamwStep(const Ctx &ctx, const Instr &in, const Refs &ins,
               const float *pin, float *p, int64_t n) {
  const AdamScalars s = adamScalars(in, ins, 4, in.f[3]);
  float *m = ins[2].f32(), *v = ins[3].f32();
  const float *grad = ins[1].f32();
  parallelFor(ctx, n, kGrain, [=](int64_t b, int64_t e) {
    adamwElements(s, grad, m, v, pin, p, b, e);
  });
}

} // namespace

void runAdamWShard(const Ctx &ctx, const GroupPlace &place, const Instr &in,
                   const Refs &ins, const Refs &outs) {
  const int64_t n = ins[1].numel();
  if (ins[0].numel() != n * place.size)
    fail(in.op, "the parameter has " + std::to_string(ins[0].numel()) +
                    " elements, not " + std::to_string(place.size) +
                    " blocks of " + std::to_string(n));
  float *out = outs[0].f32();
  if (std::isnan(ins[6].f32()[0])) {
    // Skipped step: the block goes back unchanged (it is all-gathered).
    std::memcpy(out, ins[0].f32() + place.rank * n, size_t(n) * 4);
    return;
  }
  adamwStep(ctx, in, ins, ins[0].f32() + place.rank * n, out, n);
}

void runAdamW(const Ctx &ctx, const Instr &in, const Refs &ins,
              const Refs &outs) {
  // AdamW with a group never comes here: the backends send it to
  // runAdamWShard with its groupPlace().
  if (std::isnan(ins[6].f32()[0]))
    return; // non-finite gradient norm: skip the step
  adamwStep(ctx, in, ins, ins[0].f32(), ins[0].f32(), ins[0].numel());
}

void checkAdamWMulti(const Checker &c) {
  // i = {n, zero_grads} or {n, zero_grads, c_1..c_n}; inputs lr, step,
  // coef, then (param, grad, m, v) per tensor; outputs the bf16 copies of
  // the tensors with c_k = 1; f = {beta1, beta2, eps, wd_1..wd_n}.
  if (c.instr.i.size() < 2)
    c.fail("expects 2 integer attributes (n, zero_grads), got " +
           std::to_string(c.instr.i.size()));
  const int64_t n = c.attr(0, 1, int64_t(1) << 24, "n");
  c.flag(1, "zero_grads");
  const bool withCopies = c.instr.i.size() > 2;
  size_t copies = 0;
  if (withCopies) {
    if (c.instr.i.size() != size_t(2 + n))
      c.fail("expects 2 or " + std::to_string(2 + n) +
             " integer attributes (n, zero_grads, a copy flag per tensor), "
             "got " + std::to_string(c.instr.i.size()));
    for (int64_t t = 0; t < n; ++t) {
      c.flag(size_t(2 + t), "copy flag");
      copies += size_t(c.instr.i[size_t(2 + t)]);
    }
  }
  c.operands(size_t(3 + 4 * n), copies);
  c.attrs(withCopies ? size_t(2 + n) : 2, 3 + n);
  static const char *const scalars[] = {"lr", "step", "coef"};
  for (int k = 0; k < 3; ++k)
    c.tensor(c.ins[size_t(k)], DType::F32, 1, scalars[k]);
  float b1 = c.finite(0, "beta1"), b2 = c.finite(1, "beta2");
  c.finite(2, "eps");
  if (!(b1 >= 0.0f && b1 < 1.0f) || !(b2 >= 0.0f && b2 < 1.0f))
    c.fail("betas must be in [0, 1)");
  static const char *const names[] = {"param", "grad", "m", "v"};
  for (int64_t t = 0; t < n; ++t) {
    c.finite(size_t(3 + t), "weightDecay");
    const Value *const *q = &c.ins[size_t(3 + 4 * t)];
    int64_t numel = c.numel(q[0], "param");
    for (int k = 0; k < 4; ++k)
      c.tensor(q[k], DType::F32, numel, names[k]);
  }
  // Every tensor is updated in place while the others are (one pass over
  // all of them): no two of the 4n may share a byte.
  for (size_t a = 3; a < c.ins.size(); ++a)
    for (size_t b = 3; b < a; ++b)
      c.disjoint(c.ins[a], c.ins[b], names[(a - 3) % 4], names[(b - 3) % 4]);
  // Each copy: bf16 of its parameter's size, written in the same pass as
  // every operand is read or updated, so it shares a byte with none.
  size_t out = 0;
  for (int64_t t = 0; withCopies && t < n; ++t) {
    if (!c.instr.i[size_t(2 + t)])
      continue;
    const Value *copy = c.outs[out];
    c.tensor(copy, DType::BF16, c.numel(c.ins[size_t(3 + 4 * t)], "param"),
             "copy");
    for (const Value *v : c.ins)
      c.disjoint(copy, v, "copy", "an operand");
    for (size_t o = 0; o < out; ++o)
      c.disjoint(copy, c.outs[o], "copy", "copy");
    ++out;
  }
}

void runAdamWMulti(const Ctx &ctx, const Instr &in, const Refs &ins,
                   const Refs &outs) {
  const int64_t n = in.i[0];
  const bool zero = in.i[1] != 0;
  // Non-finite gradient norm: no update, but the gradients are still
  // cleared, as the Fill after the n skipped AdamW did.
  const bool skip = std::isnan(ins[2].f32()[0]);
  // One pass over the concatenation of the tensors: [first[t], first[t+1])
  // is tensor t, so a thread's range may cover many small tensors.
  std::vector<int64_t> first(size_t(n) + 1, 0);
  std::vector<AdamScalars> sc(static_cast<size_t>(n));
  // Tensor t's bf16 copy (its c_t = 1), or nullptr.
  std::vector<uint16_t *> copy(static_cast<size_t>(n), nullptr);
  for (int64_t t = 0, o = 0; t < n; ++t) {
    first[size_t(t) + 1] = first[size_t(t)] + ins[size_t(3 + 4 * t)].numel();
    sc[size_t(t)] = adamScalars(in, ins, 0, in.f[size_t(3 + t)]);
    if (in.i.size() > 2 && in.i[size_t(2 + t)])
      copy[size_t(t)] = outs[size_t(o++)].bf16();
  }
  parallelFor(ctx, first.back(), kGrain, [&](int64_t b, int64_t e) {
    const auto after = std::upper_bound(first.begin(), first.end(), b);
    int64_t t = int64_t(after - first.begin()) - 1; // the tensor holding b
    for (; t < n && first[size_t(t)] < e; ++t) {
      const int64_t lo = std::max(b, first[size_t(t)]) - first[size_t(t)];
      const int64_t hi = std::min(e, first[size_t(t) + 1]) - first[size_t(t)];
      const TensorRef *q = &ins[size_t(3 + 4 * t)];
      float *p = q[0].f32(), *g = q[1].f32();
      if (!skip)
        adamwElements(sc[size_t(t)], g, q[2].f32(), q[3].f32(), p, p, lo, hi);
      // The copy from the new value (the old one when skipped): the Cast
      // the next step's programs would otherwise do.
      if (uint16_t *cp = copy[size_t(t)])
        for (int64_t k = lo; k < hi; ++k)
          cp[k] = floatToBf16(p[k]);
      if (zero)
        std::memset(g + lo, 0, size_t(hi - lo) * sizeof(float));
    }
  });
}

void checkSgd(const Checker &c) {
  c.operands(4, 0);
  c.attrs(0, 1);
  static const char *const names[] = {"param", "grad", "lr", "coef"};
  checkState(c, {0, 1}, names, 2);
  c.finite(0, "weightDecay");
}

void runSgd(const Ctx &ctx, const Instr &in, const Refs &ins, const Refs &) {
  const float coef = ins[3].f32()[0];
  if (std::isnan(coef))
    return;
  const int64_t n = ins[0].numel();
  float *p = ins[0].f32();
  const float *grad = ins[1].f32();
  const float negLr = -ins[2].f32()[0];
  const float wd = in.f[0];
  parallelFor(ctx, n, kGrain, [=](int64_t b, int64_t e) {
    const float cf = coef, nl = negLr, w = wd;
    for (int64_t k = b; k < e; ++k) {
      const float g = grad[k] * cf;
      p[k] = p[k] + nl * (g + w * p[k]);
    }
  });
}

} // namespace mega::rt::cpu

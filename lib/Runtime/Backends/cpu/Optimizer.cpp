//===- Optimizer.cpp - GradNorm, AdamW, Sgd --------------------------------===//
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
  const size_t n = ins.size();
  if (in.i.size() == 3 + n) {
    // Data-parallel blocks: the whole gradients' sums, per kind.
    const ProcessGroup &d = comm.group(plan::ParallelGroup(in.i[2 + n]));
    if (d.size > 1) {
      float both[2] = {float(ss[0]), float(ss[1])};
      comm.allReduce(d, both, both, 2, plan::ReduceOp::Sum);
      ss[0] = double(both[0]);
      ss[1] = double(both[1]);
    }
  }
  const ProcessGroup &g = comm.group(plan::ParallelGroup(in.i[0]));
  if (g.size > 1) {
    // Every rank gets the same sum, so the same norm and coefficient.
    float shard = float(ss[1]);
    comm.allReduce(g, &shard, &shard, 1, plan::ReduceOp::Sum);
    ss[1] = double(shard);
  }
  double total = ss[0] + ss[1];
  if (in.i.size() >= 2 + n && in.i[1 + n] >= 0) {
    // Pipeline: every rank's parameters once, summed over the stages.
    const ProcessGroup &p = comm.group(plan::ParallelGroup(in.i[1 + n]));
    if (p.size > 1) {
      float mine = float(total);
      comm.allReduce(p, &mine, &mine, 1, plan::ReduceOp::Sum);
      total = double(mine);
    }
  }
  finishGradNorm(in, total, outs);
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

/// torch's AdamW step on n elements: `pin` -> `pout` (the same array in
/// place), m and v updated in place.
void adamwStep(const Ctx &ctx, const Instr &in, const Refs &ins,
               const float *pin, float *p, int64_t n) {
  const float coef = ins[6].f32()[0];
  float *m = ins[2].f32(), *v = ins[3].f32();
  const float *grad = ins[1].f32();
  const double lr = ins[4].f32()[0], t = ins[5].f32()[0];
  const double b1 = in.f[0], b2 = in.f[1], wd = in.f[3];
  const float eps = in.f[2];
  // Python-float scalars of torch's AdamW, rounded to float when used.
  const float decay = float(1.0 - lr * wd);
  const float b1f = float(b1), a1 = float(1.0 - b1);
  const float b2f = float(b2), a2 = float(1.0 - b2);
  const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
  const float negStep = float(-(lr / bc1));
  const float bc2Sqrt = float(std::sqrt(bc2));
  // Scalars by value and into locals: captured by reference, a float may
  // alias the stores and the loop would stay scalar.
  parallelFor(ctx, n, kGrain, [=](int64_t b, int64_t e) {
    const float cf = coef, dc = decay, B1 = b1f, A1 = a1, B2 = b2f, A2 = a2;
    const float ns = negStep, bs = bc2Sqrt, ep = eps;
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
  if (!in.i.empty()) // one rank of one: the block is the parameter
    return runAdamWShard(ctx, GroupPlace{}, in, ins, outs);
  if (std::isnan(ins[6].f32()[0]))
    return; // non-finite gradient norm: skip the step
  adamwStep(ctx, in, ins, ins[0].f32(), ins[0].f32(), ins[0].numel());
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

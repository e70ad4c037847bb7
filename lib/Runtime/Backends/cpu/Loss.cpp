//===- Loss.cpp - Cross entropy and its gradient --------------------------===//
//
// Targets are data: they are range-checked at launch (before anything is
// written) and a bad one throws Error rather than reading outside the row.
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "Reduce.h"
#include "MathApprox.h"

#include <cmath>
#include <limits>

namespace mega::rt::cpu {

namespace {

constexpr int64_t kBig = int64_t(1) << 48;

void checkTargets(Op op, const int32_t *t, int64_t rows, int64_t V) {
  for (int64_t r = 0; r < rows; ++r)
    if (t[r] < 0 || t[r] >= V)
      fail(op, "target " + std::to_string(t[r]) + " of row " +
                   std::to_string(r) + " is outside the vocabulary [0, " +
                   std::to_string(V) + ")");
}

constexpr int64_t kLseBlock = 1024; // fixed: the result is the data's alone

/// log(sum(exp(x))) of one row in a single pass over memory: blocks of
/// kLseBlock, each shifted by the running maximum, the running sum rescaled
/// (in double) when the maximum grows. `tmp` holds kLseBlock floats.
double logSumExp(const float *x, int64_t V, float *tmp) {
  float m = -std::numeric_limits<float>::infinity();
  double s = 0.0;
  for (int64_t b = 0; b < V; b += kLseBlock) {
    const int64_t len = std::min(kLseBlock, V - b);
    const float bm = maxF(x + b, len);
    if (bm > m) {
      s *= std::exp(double(m) - double(bm));
      m = bm;
    }
    // Fetch the next block (or the next row's first) while this one is
    // exponentiated; a prefetch past the buffer's end is harmless.
    const uintptr_t next = reinterpret_cast<uintptr_t>(x + b + len);
    for (int64_t k = 0; k < kLseBlock; k += 16)
      __builtin_prefetch(reinterpret_cast<const void *>(next + uintptr_t(k) * 4));
    for (int64_t j = 0; j < len; ++j)
      tmp[j] = vexp(x[b + j] - m);
    s += sumD(tmp, len);
  }
  return double(m) + std::log(s);
}

int64_t rowGrain(int64_t V) { return std::max<int64_t>(1, 16384 / V); }

/// Row r of f32 or bf16 logits as floats: f32 rows are read where they are,
/// bf16 rows are widened (exactly) into `wide` (V floats) first, so that an
/// in-place gradient reads the whole row before it writes any of it.
const float *logitRow(const TensorRef &x, int64_t r, int64_t V,
                      std::vector<float> &wide) {
  if (x.value->dtype == DType::F32)
    return x.f32() + r * V;
  const uint16_t *h = x.bf16() + r * V;
  for (int64_t j = 0; j < V; ++j)
    wide[size_t(j)] = bf16ToFloat(h[j]);
  return wide.data();
}

} // namespace

void checkCrossEntropy(const Checker &c) {
  c.operands(2, 2);
  c.attrs(2, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t V = c.attr(1, 1, INT32_MAX, "V");
  // Logits may be bf16 (mixed precision): widened, fp32 math.
  c.tensor(c.ins[0], c.ins[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32,
           i128(rows) * V, "logits");
  c.tensor(c.ins[1], DType::I32, rows, "targets");
  c.tensor(c.outs[0], DType::F32, 1, "loss");
  c.tensor(c.outs[1], DType::F32, rows, "lse");
  for (int o = 0; o < 2; ++o)
    for (int k = 0; k < 2; ++k)
      c.disjoint(c.outs[o], c.ins[k], o ? "lse" : "loss",
                 k ? "targets" : "logits");
  c.disjoint(c.outs[1], c.outs[0], "lse", "loss");
}

namespace {

/// Each row's lse into `lse`; returns the sum of the rows' losses, in row
/// order, in double.
double crossEntropyRows(const Ctx &ctx, Op op, int64_t rows, int64_t V,
                        const TensorRef &x, const int32_t *t, float *lse) {
  checkTargets(op, t, rows, V);
  std::vector<double> rowLoss(static_cast<size_t>(rows));
  const bool bf16 = x.value->dtype == DType::BF16;
  parallelFor(ctx, rows, rowGrain(V), [&](int64_t r0, int64_t r1) {
    std::vector<float> tmp(static_cast<size_t>(kLseBlock));
    std::vector<float> wide(bf16 ? static_cast<size_t>(V) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = logitRow(x, r, V, wide);
      double l = logSumExp(xr, V, tmp.data());
      lse[r] = float(l);
      rowLoss[size_t(r)] = l - double(xr[t[r]]);
    }
  });
  double s = 0;
  for (int64_t r = 0; r < rows; ++r)
    s += rowLoss[size_t(r)];
  return s;
}

} // namespace

void runCrossEntropy(const Ctx &ctx, const Instr &in, const Refs &ins,
                     const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  const double s = crossEntropyRows(ctx, in.op, rows, V, ins[0], ins[1].i32(),
                                    outs[1].f32());
  outs[0].f32()[0] = rows ? float(s / double(rows))
                          : std::numeric_limits<float>::quiet_NaN();
}

void checkCrossEntropyGrad(const Checker &c) {
  c.operands(4, 1);
  c.attrs(2, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t V = c.attr(1, 1, INT32_MAX, "V");
  // Logits may be bf16 (mixed precision: widened, fp32 math); dlogits may
  // be bf16 (its cast folded in). In place only when both have one dtype.
  const bool inBf16 = c.ins[0]->dtype == DType::BF16;
  c.tensor(c.ins[0], inBf16 ? DType::BF16 : DType::F32, i128(rows) * V,
           "logits");
  c.tensor(c.ins[1], DType::I32, rows, "targets");
  c.tensor(c.ins[2], DType::F32, rows, "lse");
  c.tensor(c.ins[3], DType::F32, 1, "dloss");
  const bool bf16 = c.outs[0]->dtype == DType::BF16;
  c.tensor(c.outs[0], bf16 ? DType::BF16 : DType::F32, i128(rows) * V,
           "dlogits");
  if (bf16 != inBf16)
    c.disjoint(c.outs[0], c.ins[0],
               bf16 ? "bf16 dlogits" : "f32 dlogits",
               inBf16 ? "bf16 logits" : "f32 logits");
  else
    c.sameOrDisjoint(c.outs[0], c.ins[0], "dlogits", "logits");
  c.disjoint(c.outs[0], c.ins[1], "dlogits", "targets");
  c.disjoint(c.outs[0], c.ins[2], "dlogits", "lse");
  c.disjoint(c.outs[0], c.ins[3], "dlogits", "dloss");
}

namespace {

/// dlogits = (softmax - onehot) * scale, row by row (ins: logits, targets,
/// lse).
void crossEntropyGradRows(const Ctx &ctx, Op op, int64_t rows, int64_t V,
                          const Refs &ins, const Refs &outs, float scale) {
  const float *lse = ins[2].f32();
  const int32_t *t = ins[1].i32();
  checkTargets(op, t, rows, V);
  if (rows == 0)
    return;
  if (ins[0].value->dtype == DType::BF16) {
    // bf16 logits: each row widened before any of it is written (dlogits
    // may be its bytes), then the f32 path's expressions, stored f32 or
    // rounded to bf16.
    const TensorRef x = ins[0];
    const TensorRef d = outs[0];
    const bool outBf16 = d.value->dtype == DType::BF16;
    parallelFor(ctx, rows, rowGrain(V), [=](int64_t r0, int64_t r1) {
      std::vector<float> wide(static_cast<size_t>(V));
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = logitRow(x, r, V, wide);
        const float l = lse[r];
        const int32_t tr = t[r];
        const float pt = vexp(xr[tr] - l);
        if (outBf16) {
          uint16_t *h = d.bf16() + r * V;
          for (int64_t j = 0; j < V; ++j)
            h[j] = floatToBf16(vexp(xr[j] - l) * scale);
          h[tr] = floatToBf16((pt - 1.0f) * scale);
        } else {
          float *dr = d.f32() + r * V;
          for (int64_t j = 0; j < V; ++j)
            dr[j] = vexp(xr[j] - l) * scale;
          dr[tr] = (pt - 1.0f) * scale;
        }
      }
    });
    return;
  }
  const float *x = ins[0].f32();
  float *dx = outs[0].f32();
  if (outs[0].value->dtype == DType::BF16) {
    // bf16 dlogits: each row in floats, then rounded (the GPU's twin).
    uint16_t *h = outs[0].bf16();
    parallelFor(ctx, rows, rowGrain(V), [=](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(V));
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * V;
        const float l = lse[r];
        for (int64_t j = 0; j < V; ++j)
          row[size_t(j)] = vexp(xr[j] - l) * scale;
        row[size_t(t[r])] = (vexp(xr[t[r]] - l) - 1.0f) * scale;
        for (int64_t j = 0; j < V; ++j)
          h[r * V + j] = floatToBf16(row[size_t(j)]);
      }
    });
    return;
  }
  parallelFor(ctx, rows, rowGrain(V), [=](int64_t r0, int64_t r1) {
    const float sc = scale; // a local: the stores cannot alias it
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = x + r * V;
      float *dr = dx + r * V;
      const float l = lse[r];
      const int32_t tr = t[r];
      const float pt = vexp(xr[tr] - l); // before dr overwrites xr in place
      for (int64_t j = 0; j < V; ++j)
        dr[j] = vexp(xr[j] - l) * sc;
      dr[tr] = (pt - 1.0f) * sc;
    }
  });
}

} // namespace

void runCrossEntropyGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                         const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  crossEntropyGradRows(ctx, in.op, rows, V, ins, outs,
                       float(double(ins[3].f32()[0]) / double(rows)));
}

// CrossEntropyWithGrad: CrossEntropy then CrossEntropyGrad, on the same
// operands (the GPU's twin: its fused kernel gives these bits row by row).
// With {rows, V, mean_rows, accumulate} it is one row block of a larger
// batch (mega-chunk-loss): the mean and the gradient's scale divide by
// mean_rows, and with accumulate the block's share is added to the loss.

void checkCrossEntropyWithGrad(const Checker &c) {
  c.operands(3, 3);
  if (c.instr.i.size() != 2 && c.instr.i.size() != 4)
    c.fail("expects 2 or 4 integer attributes, got " +
           std::to_string(c.instr.i.size()));
  Instr base = c.instr;
  base.i.resize(2);
  const Vals ceIns = {c.ins[0], c.ins[1]}, ceOuts = {c.outs[0], c.outs[1]};
  checkCrossEntropy(Checker(base, ceIns, ceOuts));
  const Vals gradIns = {c.ins[0], c.ins[1], c.outs[1], c.ins[2]};
  const Vals gradOuts = {c.outs[2]};
  checkCrossEntropyGrad(Checker(base, gradIns, gradOuts));
  c.disjoint(c.outs[2], c.outs[0], "dlogits", "loss");
  c.disjoint(c.outs[0], c.ins[2], "loss", "dloss");
  c.disjoint(c.outs[1], c.ins[2], "lse", "dloss");
  if (c.instr.i.size() == 4) {
    const int64_t rows = c.attr(0, 0, kBig, "rows");
    c.attr(2, std::max<int64_t>(rows, 1), kBig, "mean_rows");
    c.flag(3, "accumulate");
  }
}

void runCrossEntropyWithGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                             const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  const bool block = in.i.size() == 4;
  const int64_t meanRows = block ? in.i[2] : rows;
  const bool accumulate = block && in.i[3];
  const double s = crossEntropyRows(ctx, in.op, rows, V, ins[0], ins[1].i32(),
                                    outs[1].f32());
  float *loss = outs[0].f32();
  if (accumulate)
    loss[0] = float(double(loss[0]) + s / double(meanRows));
  else
    loss[0] = meanRows ? float(s / double(meanRows))
                       : std::numeric_limits<float>::quiet_NaN();
  crossEntropyGradRows(ctx, in.op, rows, V, {ins[0], ins[1], outs[1], ins[2]},
                       {outs[2]},
                       float(double(ins[2].f32()[0]) / double(meanRows)));
}

} // namespace mega::rt::cpu

//===- VocabParallel.cpp - Vocabulary-parallel embedding and loss ---------===//
//
// Megatron's VocabParallelEmbedding and vocab_parallel_cross_entropy, split
// into kernels around the plan's collectives: rank r of group i[group] holds
// the vocabulary rows [r*Vl, (r+1)*Vl). The rank and group size come from
// the program run's communicator (Backend::launch with a Communicator).
//
// Ids and targets are data: range-checked over the whole vocabulary
// [0, Vl*groupSize) at launch, before anything is written. Every result is
// independent of the thread count (fixed-order reductions, one owner per
// output element).
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "MathApprox.h"
#include "Reduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace mega::rt::cpu {

namespace {

constexpr int64_t kBig = int64_t(1) << 48;

void checkIds(Op op, const int32_t *ids, int64_t rows, int64_t V,
              const char *what) {
  for (int64_t r = 0; r < rows; ++r)
    if (ids[r] < 0 || ids[r] >= V)
      fail(op, std::string(what) + " " + std::to_string(ids[r]) + " of row " +
                   std::to_string(r) + " is outside the vocabulary [0, " +
                   std::to_string(V) + ")");
}

int64_t rowGrain(int64_t cols) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
}

void checkGroup(const Checker &c, size_t k) {
  c.attr(k, 0, 2, "group");
}

/// The loss kernels' attributes: {rows, Vl, group} or, for a vocabulary
/// zero-padded past its true size V, {rows, Vl, V, group}. Returns rows and
/// Vl; V (when given) must leave at least one column to the group's first
/// rank and be below the padded size (checked against the group at run time).
std::pair<int64_t, int64_t> checkLossAttrs(const Checker &c) {
  if (c.instr.i.size() == 4) {
    c.attrs(4, 0);
    c.attr(2, 1, INT32_MAX, "V");
    checkGroup(c, 3);
  } else {
    c.attrs(3, 0);
    checkGroup(c, 2);
  }
  return {c.attr(0, 0, kBig, "rows"), c.attr(1, 1, INT32_MAX, "Vl")};
}

} // namespace

//===----------------------------------------------------------------------===//
// VocabEmbedding, VocabEmbeddingGrad
//===----------------------------------------------------------------------===//

void checkVocabEmbedding(const Checker &c) {
  c.operands(2, 1);
  c.attrs(4, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t Vl = c.attr(1, 0, INT32_MAX, "Vl");
  int64_t H = c.attr(2, 0, kBig, "H");
  checkGroup(c, 3);
  c.tensor(c.ins[0], DType::F32, i128(Vl) * H, "table");
  c.tensor(c.ins[1], DType::I32, rows, "ids");
  c.tensor(c.outs[0], DType::F32, i128(rows) * H, "out");
  c.disjoint(c.outs[0], c.ins[0], "out", "table");
  c.disjoint(c.outs[0], c.ins[1], "out", "ids");
}

void runVocabEmbedding(const Ctx &ctx, const GroupPlace &place,
                       const Instr &in, const Refs &ins, const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1], H = in.i[2];
  const float *table = ins[0].f32();
  const int32_t *ids = ins[1].i32();
  float *out = outs[0].f32();
  checkIds(Op::VocabEmbedding, ids, rows, Vl * place.size, "id");
  const int64_t start = Vl * place.rank;
  parallelFor(ctx, rows, rowGrain(H), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t v = int64_t(ids[r]) - start;
      float *dst = out + r * H;
      if (v >= 0 && v < Vl)
        std::memcpy(dst, table + v * H, size_t(H) * 4);
      else
        std::memset(dst, 0, size_t(H) * 4);
    }
  });
}

void checkVocabEmbeddingGrad(const Checker &c) {
  c.operands(2, 1);
  c.attrs(5, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t Vl = c.attr(1, 0, INT32_MAX, "Vl");
  int64_t H = c.attr(2, 0, kBig, "H");
  c.flag(3, "accumulate");
  checkGroup(c, 4);
  c.tensor(c.ins[0], DType::F32, i128(rows) * H, "dout");
  c.tensor(c.ins[1], DType::I32, rows, "ids");
  c.tensor(c.outs[0], DType::F32, i128(Vl) * H, "dtable");
  c.disjoint(c.outs[0], c.ins[0], "dtable", "dout");
  c.disjoint(c.outs[0], c.ins[1], "dtable", "ids");
}

void runVocabEmbeddingGrad(const Ctx &ctx, const GroupPlace &place,
                           const Instr &in, const Refs &ins,
                           const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1], H = in.i[2];
  const bool acc = in.i[3] != 0;
  const float *dout = ins[0].f32();
  const int32_t *ids = ins[1].i32();
  float *table = outs[0].f32();
  checkIds(Op::VocabEmbeddingGrad, ids, rows, Vl * place.size, "id");
  const int64_t start = Vl * place.rank;
  // As EmbeddingGrad: each thread owns a contiguous range of local rows and
  // adds the dout rows that fall in it in row order (deterministic).
  const int64_t work = (acc ? 0 : Vl * H) + rows * H;
  const int64_t T = std::max(1, ctx.threads);
  const int64_t grain = work >= (int64_t(1) << 16)
                            ? std::max<int64_t>(1, (Vl + T - 1) / T)
                            : std::max<int64_t>(1, Vl);
  parallelFor(ctx, Vl, grain, [&](int64_t v0, int64_t v1) {
    if (!acc)
      std::memset(table + v0 * H, 0, size_t((v1 - v0) * H) * 4);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t v = int64_t(ids[r]) - start;
      if (v < v0 || v >= v1)
        continue;
      const float *src = dout + r * H;
      float *dst = table + v * H;
      for (int64_t j = 0; j < H; ++j)
        dst[j] += src[j];
    }
  });
}

//===----------------------------------------------------------------------===//
// RowMax
//===----------------------------------------------------------------------===//

void checkRowMax(const Checker &c) {
  c.operands(1, 1);
  c.attrs(2, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t cols = c.attr(1, 1, kBig, "cols");
  c.tensor(c.ins[0], DType::F32, i128(rows) * cols, "x");
  c.tensor(c.outs[0], DType::F32, rows, "out");
  c.disjoint(c.outs[0], c.ins[0], "out", "x");
}

void runRowMax(const Ctx &ctx, const Instr &in, const Refs &ins,
               const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const float *x = ins[0].f32();
  float *out = outs[0].f32();
  parallelFor(ctx, rows, rowGrain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      out[r] = maxF(x + r * cols, cols);
  });
}

//===----------------------------------------------------------------------===//
// VocabCrossEntropyStats, VocabCrossEntropy, VocabCrossEntropyGrad
//===----------------------------------------------------------------------===//

void checkVocabCrossEntropyStats(const Checker &c) {
  c.operands(3, 2);
  auto [rows, Vl] = checkLossAttrs(c);
  c.tensor(c.ins[0], DType::F32, i128(rows) * Vl, "logits");
  c.tensor(c.ins[1], DType::I32, rows, "targets");
  c.tensor(c.ins[2], DType::F32, rows, "max");
  c.tensor(c.outs[0], DType::F32, rows, "sumexp");
  c.tensor(c.outs[1], DType::F32, rows, "targetLogit");
  static const char *const inNames[] = {"logits", "targets", "max"};
  static const char *const outNames[] = {"sumexp", "targetLogit"};
  for (int o = 0; o < 2; ++o)
    for (int k = 0; k < 3; ++k)
      c.disjoint(c.outs[size_t(o)], c.ins[size_t(k)], outNames[o], inNames[k]);
  c.disjoint(c.outs[1], c.outs[0], "targetLogit", "sumexp");
}

void runVocabCrossEntropyStats(const Ctx &ctx, const GroupPlace &place,
                               const Instr &in, const Refs &ins,
                               const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1];
  const float *x = ins[0].f32(), *mx = ins[2].f32();
  const int32_t *t = ins[1].i32();
  float *sumexp = outs[0].f32(), *tl = outs[1].f32();
  const int64_t V = trueVocab(in, place);
  checkIds(Op::VocabCrossEntropyStats, t, rows, V, "target");
  const int64_t start = Vl * place.rank;
  // Padded columns (global index >= V) are not part of the softmax.
  const int64_t mine = std::clamp<int64_t>(V - start, 0, Vl);
  constexpr int64_t kBlock = 1024; // fixed: the result is the data's alone
  parallelFor(ctx, rows, rowGrain(Vl), [&](int64_t r0, int64_t r1) {
    std::vector<float> tmp(static_cast<size_t>(kBlock));
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = x + r * Vl;
      const float m = mx[r];
      double s = 0;
      for (int64_t b = 0; b < mine; b += kBlock) {
        const int64_t len = std::min(kBlock, mine - b);
        for (int64_t j = 0; j < len; ++j)
          tmp[size_t(j)] = vexp(xr[b + j] - m);
        s += sumD(tmp.data(), len);
      }
      sumexp[r] = float(s);
      const int64_t v = int64_t(t[r]) - start;
      tl[r] = v >= 0 && v < Vl ? xr[v] : 0.0f;
    }
  });
}

void checkVocabCrossEntropy(const Checker &c) {
  c.operands(3, 2);
  c.attrs(1, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  static const char *const inNames[] = {"max", "sumexp", "targetLogit"};
  for (int k = 0; k < 3; ++k)
    c.tensor(c.ins[size_t(k)], DType::F32, rows, inNames[k]);
  c.tensor(c.outs[0], DType::F32, 1, "loss");
  c.tensor(c.outs[1], DType::F32, rows, "lse");
  for (int o = 0; o < 2; ++o)
    for (int k = 0; k < 3; ++k)
      c.disjoint(c.outs[size_t(o)], c.ins[size_t(k)], o ? "lse" : "loss",
                 inNames[k]);
  c.disjoint(c.outs[1], c.outs[0], "lse", "loss");
}

void runVocabCrossEntropy(const Ctx &, const Instr &in, const Refs &ins,
                          const Refs &outs) {
  const int64_t rows = in.i[0];
  const float *mx = ins[0].f32(), *se = ins[1].f32(), *tl = ins[2].f32();
  float *loss = outs[0].f32(), *lse = outs[1].f32();
  double s = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double l = double(mx[r]) + std::log(double(se[r]));
    lse[r] = float(l);
    s += l - double(tl[r]);
  }
  loss[0] = rows ? float(s / double(rows))
                 : std::numeric_limits<float>::quiet_NaN();
}

void checkVocabCrossEntropyGrad(const Checker &c) {
  c.operands(4, 1);
  auto [rows, Vl] = checkLossAttrs(c);
  c.tensor(c.ins[0], DType::F32, i128(rows) * Vl, "logits");
  c.tensor(c.ins[1], DType::I32, rows, "targets");
  c.tensor(c.ins[2], DType::F32, rows, "lse");
  c.tensor(c.ins[3], DType::F32, 1, "dloss");
  c.tensor(c.outs[0], DType::F32, i128(rows) * Vl, "dlogits");
  c.sameOrDisjoint(c.outs[0], c.ins[0], "dlogits", "logits");
  c.disjoint(c.outs[0], c.ins[1], "dlogits", "targets");
  c.disjoint(c.outs[0], c.ins[2], "dlogits", "lse");
  c.disjoint(c.outs[0], c.ins[3], "dlogits", "dloss");
}

void runVocabCrossEntropyGrad(const Ctx &ctx, const GroupPlace &place,
                              const Instr &in, const Refs &ins,
                              const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1];
  const float *x = ins[0].f32(), *lse = ins[2].f32();
  const int32_t *t = ins[1].i32();
  float *dx = outs[0].f32();
  const int64_t V = trueVocab(in, place);
  checkIds(Op::VocabCrossEntropyGrad, t, rows, V, "target");
  if (rows == 0)
    return;
  const int64_t start = Vl * place.rank;
  // Padded columns (global index >= V) get no gradient.
  const int64_t own = std::clamp<int64_t>(V - start, 0, Vl);
  const float scale = float(double(ins[3].f32()[0]) / double(rows));
  parallelFor(ctx, rows, rowGrain(Vl), [=](int64_t r0, int64_t r1) {
    const float sc = scale;
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = x + r * Vl;
      float *dr = dx + r * Vl;
      const float l = lse[r];
      const int64_t v = int64_t(t[r]) - start;
      const bool mine = v >= 0 && v < Vl;
      const float pt = mine ? vexp(xr[v] - l) : 0.0f; // before dr overwrites
      for (int64_t j = 0; j < own; ++j)
        dr[j] = vexp(xr[j] - l) * sc;
      for (int64_t j = own; j < Vl; ++j)
        dr[j] = 0.0f;
      if (mine)
        dr[v] = (pt - 1.0f) * sc;
    }
  });
}

} // namespace mega::rt::cpu

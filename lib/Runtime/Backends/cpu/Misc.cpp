//===- Misc.cpp - Fill, Copy, ReduceSum, Transpose ------------------------===//
#include "Common.h"
#include "mega/Runtime/TransposeDims.h"

#include <cstring>

namespace mega::rt::cpu {

//===----------------------------------------------------------------------===//
// Fill, Copy
//===----------------------------------------------------------------------===//

void checkFill(const Checker &c) {
  c.operands(0, 1);
  c.attrs(0, 1);
  c.dtype(c.outs[0], DType::F32, "out");
  c.numel(c.outs[0], "out");
}

void runFill(const Ctx &ctx, const Instr &in, const Refs &, const Refs &outs) {
  float v = in.f[0];
  float *y = outs[0].f32();
  // Float scalars are copied into the lambdas (by value, then to locals):
  // a float captured by reference may alias the stores and would keep the
  // loop scalar.
  parallelFor(ctx, outs[0].numel(), 1 << 16, [=](int64_t b, int64_t e) {
    const float value = v;
    for (int64_t k = b; k < e; ++k)
      y[k] = value;
  });
}

void checkCopy(const Checker &c) {
  c.operands(1, 1);
  c.attrs(0, 0);
  c.tensor(c.outs[0], c.ins[0]->dtype, c.numel(c.ins[0], "in"), "out");
  c.sameOrDisjoint(c.outs[0], c.ins[0], "out", "in");
}

void runCopy(const Ctx &ctx, const Instr &, const Refs &ins, const Refs &outs) {
  const char *x = static_cast<const char *>(ins[0].data);
  char *y = static_cast<char *>(outs[0].data);
  int64_t bytes = ins[0].numel() * 4;
  if (x == y || bytes == 0)
    return;
  parallelFor(ctx, bytes, 1 << 18, [&](int64_t b, int64_t e) {
    std::memcpy(y + b, x + b, size_t(e - b));
  });
}

//===----------------------------------------------------------------------===//
// ReduceSum: column sums, double accumulation in fixed blocks of rows.
//===----------------------------------------------------------------------===//

void checkReduceSum(const Checker &c) {
  c.operands(1, 1);
  c.attrs(3, 0);
  int64_t outer = c.attr(0, 0, int64_t(1) << 48, "outer");
  int64_t inner = c.attr(1, 0, int64_t(1) << 48, "inner");
  c.flag(2, "accumulate");
  // bf16 in: the bias gradient summed from the bf16 copy of the gradient
  // (mega-mixed-precision); widened exactly, summed as f32 is.
  const DType xt = c.ins[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32;
  c.tensor(c.ins[0], xt, i128(outer) * inner, "in");
  c.tensor(c.outs[0], DType::F32, inner, "out");
  c.disjoint(c.outs[0], c.ins[0], "out", "in");
}

namespace {
constexpr int64_t kColBlock = 256;

// The order is kSumRowBlock's (Common.h): LayerNormGrad's column sums of its
// bf16 copy reuse it, bit for bit.
template <typename T>
void reduceSum(const Ctx &ctx, const T *x, int64_t outer, int64_t inner,
               bool acc, float *y) {
  const int64_t nrb =
      std::max<int64_t>(1, (outer + kSumRowBlock - 1) / kSumRowBlock);
  const int64_t ncb = (inner + kColBlock - 1) / kColBlock;
  std::vector<double> part(size_t(nrb * inner));
  parallelForEach(ctx, nrb * ncb, [&](int64_t task) {
    int64_t rb = task / ncb, cb = task % ncb;
    int64_t r0 = rb * kSumRowBlock, r1 = std::min(outer, r0 + kSumRowBlock);
    int64_t c0 = cb * kColBlock, c1 = std::min(inner, c0 + kColBlock);
    double s[kColBlock] = {};
    for (int64_t r = r0; r < r1; ++r)
      columnSumAddRow(s, x + r * inner + c0, c1 - c0);
    std::memcpy(&part[size_t(rb * inner + c0)], s, sizeof(double) * (c1 - c0));
  });
  parallelFor(ctx, inner, 1024, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j)
      y[j] = columnSumFinish(&part[size_t(j)], nrb, inner, y[j], acc);
  });
}
} // namespace

void runReduceSum(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t outer = in.i[0], inner = in.i[1];
  const bool acc = in.i[2] != 0;
  if (inner == 0)
    return;
  if (ins[0].value->dtype == DType::BF16)
    reduceSum(ctx, ins[0].bf16(), outer, inner, acc, outs[0].f32());
  else
    reduceSum(ctx, ins[0].f32(), outer, inner, acc, outs[0].f32());
}

//===----------------------------------------------------------------------===//
// Transpose (rank <= 6), 4-byte elements.
//===----------------------------------------------------------------------===//

void checkTranspose(const Checker &c) {
  c.operands(1, 1);
  if (c.instr.i.empty())
    c.fail("missing attribute rank");
  int64_t rank = c.attr(0, 1, 6, "rank");
  c.attrs(size_t(1 + 2 * rank), 0);
  i128 n = 1;
  bool seen[6] = {};
  for (int64_t k = 0; k < rank; ++k) {
    n *= c.attr(size_t(1 + k), 0, int64_t(1) << 48, "dim");
    int64_t p = c.attr(size_t(1 + rank + k), 0, rank - 1, "permutation entry");
    if (seen[p])
      c.fail("the permutation repeats dimension " + std::to_string(p));
    seen[p] = true;
  }
  DType t = c.ins[0]->dtype;
  c.tensor(c.ins[0], t, n, "in");
  // f32 -> bf16 converts on the way (a cast folded into the transpose);
  // bf16 -> bf16 moves the bits (a value rounded by its producer instead).
  // Otherwise out has in's dtype.
  const bool toBf16 = t == DType::F32 && c.outs[0]->dtype == DType::BF16;
  if (t == DType::BF16 && c.outs[0]->dtype != DType::BF16)
    c.fail(std::string("a bf16 in needs a bf16 out, not ") +
           plan::dtypeName(c.outs[0]->dtype));
  c.tensor(c.outs[0], toBf16 ? DType::BF16 : t, n, "out");
  c.disjoint(c.outs[0], c.ins[0], "out", "in");
}

namespace {

using Perm = TransposeDims;

/// Input offset of the out-index `idx` over dims [0, nd) (row-major),
/// skipping `skip1`, `skip2` (which are not part of idx's mixed radix).
int64_t inOffset(const Perm &p, int64_t idx, int nd, int skip1, int skip2) {
  int64_t off = 0;
  for (int j = nd - 1; j >= 0; --j) {
    if (j == skip1 || j == skip2)
      continue;
    off += (idx % p.dim[j]) * p.ist[j];
    idx /= p.dim[j];
  }
  return off;
}

} // namespace

void runTranspose(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t n = ins[0].numel();
  if (n == 0)
    return;
  if (ins[0].value->dtype == DType::BF16) {
    // bf16 -> bf16: widened (exact), moved as f32, rounded back (exact: every
    // value is a bf16 already).
    std::vector<float> wide;
    const float *xf = floatsOf(ins[0], n, wide);
    Value v = *ins[0].value;
    v.dtype = DType::F32;
    runTranspose(ctx, in, {TensorRef{const_cast<float *>(xf), &v}}, outs);
    return;
  }
  if (outs[0].value->dtype == DType::BF16 && ins[0].value->dtype == DType::F32) {
    // f32 -> bf16: transpose into floats, then round (the CPU twin).
    std::vector<float> tmp(static_cast<size_t>(n));
    Value v = *outs[0].value;
    v.dtype = DType::F32;
    runTranspose(ctx, in, ins, {TensorRef{tmp.data(), &v}});
    uint16_t *y = outs[0].bf16();
    parallelFor(ctx, n, 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k)
        y[k] = floatToBf16(tmp[size_t(k)]);
    });
    return;
  }
  const uint32_t *x = static_cast<const uint32_t *>(ins[0].data);
  uint32_t *y = static_cast<uint32_t *>(outs[0].data);
  Perm p = simplifyTranspose(in);
  if (p.rank <= 1) {
    parallelFor(ctx, n, 1 << 16, [&](int64_t b, int64_t e) {
      std::memcpy(y + b, x + b, size_t(e - b) * 4);
    });
    return;
  }
  const int R = p.rank;
  if (p.ist[R - 1] == 1) {
    // The innermost dimension is kept: copy contiguous rows.
    const int64_t len = p.dim[R - 1], rows = n / len;
    int64_t grain = std::max<int64_t>(1, 16384 / len);
    parallelFor(ctx, rows, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        std::memcpy(y + r * len, x + inOffset(p, r, R - 1, -1, -1),
                    size_t(len) * 4);
    });
    return;
  }
  // Tiled 2-D transpose between the out-innermost dimension `a` and the
  // dimension `b` that is innermost in the input.
  const int a = R - 1;
  int b = 0;
  for (int j = 0; j < R; ++j)
    if (p.ist[j] == 1)
      b = j;
  int64_t ost[6];
  int64_t s = 1;
  for (int j = R - 1; j >= 0; --j) {
    ost[j] = s;
    s *= p.dim[j];
  }
  constexpr int64_t T = 32;
  const int64_t na = p.dim[a], nb = p.dim[b];
  const int64_t ta = (na + T - 1) / T, tb = (nb + T - 1) / T;
  const int64_t outerN = n / (na * nb);
  const int64_t sa = p.ist[a], osb = ost[b];
  parallelFor(ctx, outerN * tb * ta, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t o = t / (tb * ta), ib = (t / ta) % tb, ia = t % ta;
      // Out offset of the outer index: same mixed radix, out strides.
      int64_t oi = o, ooff = 0;
      for (int j = R - 1; j >= 0; --j) {
        if (j == a || j == b)
          continue;
        ooff += (oi % p.dim[j]) * ost[j];
        oi /= p.dim[j];
      }
      int64_t ioff = inOffset(p, o, R, a, b);
      int64_t b0 = ib * T, b1 = std::min(nb, b0 + T);
      int64_t a0 = ia * T, a1 = std::min(na, a0 + T);
      for (int64_t i = b0; i < b1; ++i) {
        uint32_t *dst = y + ooff + i * osb;
        const uint32_t *src = x + ioff + i;
        for (int64_t j = a0; j < a1; ++j)
          dst[j] = src[j * sa];
      }
    }
  });
}

} // namespace mega::rt::cpu

//===- Norms.cpp - LayerNorm, Softmax and their gradients -----------------===//
//
// Row statistics are accumulated in double over fixed lanes; the weight and
// bias gradients of LayerNorm are summed over fixed blocks of rows, combined
// in block order, so every result is independent of the thread count.
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "MathApprox.h"
#include "Reduce.h"

#include <cmath>

namespace mega::rt::cpu {

namespace {
/// Rows per thread chunk so that a chunk is worth a thread (~16K elements).
int64_t rowGrain(int64_t cols) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
}
constexpr int64_t kBig = int64_t(1) << 48;
} // namespace

//===----------------------------------------------------------------------===//
// LayerNorm
//===----------------------------------------------------------------------===//

void checkLayerNorm(const Checker &c) {
  c.operands(3, 3);
  // {rows, cols} or {rows, cols, ldy}: rows of y padded to ldy > cols
  // columns, a 1 in column cols and zeros after (mega-ones-column).
  c.attrs(c.instr.i.size() == 3 ? 3 : 2, 1);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t cols = c.attr(1, 1, kBig, "cols");
  const int64_t ldy =
      c.instr.i.size() == 3 ? c.attr(2, cols + 1, kBig, "ldy") : cols;
  c.finite(0, "eps");
  // x may be bf16 (the residual stream stored in bf16: widened on load).
  const DType xt = c.ins[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32;
  c.tensor(c.ins[0], xt, i128(rows) * cols, "x");
  c.tensor(c.ins[1], DType::F32, cols, "w");
  c.tensor(c.ins[2], DType::F32, cols, "b");
  // y may be bf16 (a cast folded into the norm: rounded on store); mean
  // and rstd stay f32 for the gradient.
  const DType yt = c.outs[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32;
  c.tensor(c.outs[0], yt, i128(rows) * ldy, "y");
  c.tensor(c.outs[1], DType::F32, rows, "mean");
  c.tensor(c.outs[2], DType::F32, rows, "rstd");
  const char *in[] = {"x", "w", "b"}, *out[] = {"y", "mean", "rstd"};
  for (int o = 0; o < 3; ++o) {
    for (int k = 0; k < 3; ++k) {
      if (o == 0 && k == 0 && yt == xt && ldy == cols)
        c.sameOrDisjoint(c.outs[0], c.ins[0], "y", "x"); // in place is fine
      else
        c.disjoint(c.outs[o], c.ins[k], out[o], in[k]);
    }
    for (int k = 0; k < o; ++k)
      c.disjoint(c.outs[o], c.outs[k], out[o], out[k]);
  }
}

namespace {
/// One row of y in f32. Out of line so that the f32 and the bf16 forms run
/// the same instructions (the bf16 y must be the f32 y rounded, bit for bit,
/// whatever the compiler contracts into FMAs).
[[gnu::noinline]] void lnRow(const float *__restrict xr,
                             const float *__restrict w,
                             const float *__restrict b, float m, float s,
                             float *__restrict yr, int64_t cols) {
  for (int64_t k = 0; k < cols; ++k)
    yr[k] = (xr[k] - m) * s * w[k] + b[k];
}
} // namespace

void runLayerNorm(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const int64_t ldy = in.i.size() == 3 ? in.i[2] : cols;
  const double eps = in.f[0];
  const float *w = ins[1].f32(), *b = ins[2].f32();
  // A bf16 x is widened row by row (exact): the f32 path runs on the row.
  const bool xBf16 = ins[0].value->dtype == DType::BF16;
  const float *x = xBf16 ? nullptr : ins[0].f32();
  const uint16_t *xh = xBf16 ? ins[0].bf16() : nullptr;
  float *mean = outs[1].f32(), *rstd = outs[2].f32();
  // A bf16 y: each row in floats, then rounded (the GPU's twin).
  const bool bf16 = outs[0].value->dtype == DType::BF16;
  float *y = bf16 ? nullptr : outs[0].f32();
  uint16_t *yh = bf16 ? outs[0].bf16() : nullptr;
  parallelFor(ctx, rows, rowGrain(cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(bf16 ? size_t(cols) : 0);
    std::vector<float> xrow(xBf16 ? size_t(cols) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = x ? x + r * cols : xrow.data();
      if (xh)
        for (int64_t k = 0; k < cols; ++k)
          xrow[size_t(k)] = bf16ToFloat(xh[r * cols + k]);
      // One pass: E[x^2] - E[x]^2 in double loses nothing that matters for
      // float data (relative error ~1e-16 (mean/std)^2).
      double sum, sumSq;
      sumSumSqD(xr, cols, sum, sumSq);
      const double mu = sum / double(cols);
      const double var = std::max(0.0, sumSq / double(cols) - mu * mu);
      const double rs = 1.0 / std::sqrt(var + eps);
      const float m = float(mu), s = float(rs);
      mean[r] = m;
      rstd[r] = s;
      if (!bf16) {
        float *yr = y + r * ldy;
        lnRow(xr, w, b, m, s, yr, cols);
        for (int64_t k = cols; k < ldy; ++k)
          yr[k] = k == cols ? 1.0f : 0.0f;
        continue;
      }
      lnRow(xr, w, b, m, s, row.data(), cols);
      uint16_t *hr = yh + r * ldy;
      for (int64_t k = 0; k < cols; ++k)
        hr[k] = floatToBf16(row[size_t(k)]);
      for (int64_t k = cols; k < ldy; ++k)
        hr[k] = floatToBf16(k == cols ? 1.0f : 0.0f);
    }
  });
}

//===----------------------------------------------------------------------===//
// LayerNormGrad
//===----------------------------------------------------------------------===//

void checkLayerNormGrad(const Checker &c) {
  // dx is f32, or bf16 (the residual gradient stored in bf16: rounded on
  // store, its old value widened when accumulating). With an f32 dx a 4th
  // output (dx's bf16 copy) and a 5th (the copy's column sums) are
  // optional; with a bf16 dx, dx is that copy and a 4th output is its
  // column sums. The attributes accumulate_wb (i[3]) and dsum accumulate
  // (i[4]) are optional: plans without them keep their meaning.
  const bool dxBf16 = c.outs.size() >= 1 && c.outs[0]->dtype == DType::BF16;
  const size_t most = dxBf16 ? 4 : 5;
  if (c.ins.size() != 5 || c.outs.size() < 3 || c.outs.size() > most)
    c.fail("expects 5 inputs and " +
           std::string(dxBf16 ? "3 or 4 outputs (a bf16 dx)"
                              : "3, 4 or 5 outputs") +
           ", got " + std::to_string(c.ins.size()) + " and " +
           std::to_string(c.outs.size()));
  const size_t na = c.instr.i.size();
  c.attrs(na == 4 || na == 5 ? int(na) : 3, 0);
  const bool hasDsum = c.outs.size() == most;
  if (hasDsum != (na == 5))
    c.fail("has " + std::to_string(c.outs.size()) + " outputs and " +
           std::to_string(na) + " integer attributes: the " +
           std::string(dxBf16 ? "4th output (dsum, with a bf16 dx)"
                              : "5th output (dsum)") +
           " comes with the 5th attribute (its accumulate) and only with it");
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t cols = c.attr(1, 1, kBig, "cols");
  c.flag(2, "accumulate");
  if (na >= 4)
    c.flag(3, "accumulate_wb");
  if (na == 5)
    c.flag(4, "dsum accumulate");
  const i128 n = i128(rows) * cols;
  // dy may be bf16 (a bf16 product's gradient: widened, never dx's bytes).
  const bool dyBf16 = c.ins[0]->dtype == DType::BF16;
  c.tensor(c.ins[0], dyBf16 ? DType::BF16 : DType::F32, n, "dy");
  // x may be bf16 too (the residual stream stored in bf16: widened).
  c.tensor(c.ins[1], c.ins[1]->dtype == DType::BF16 ? DType::BF16 : DType::F32,
           n, "x");
  c.tensor(c.ins[2], DType::F32, cols, "w");
  c.tensor(c.ins[3], DType::F32, rows, "mean");
  c.tensor(c.ins[4], DType::F32, rows, "rstd");
  c.tensor(c.outs[0], dxBf16 ? DType::BF16 : DType::F32, n, "dx");
  c.tensor(c.outs[1], DType::F32, cols, "dw");
  c.tensor(c.outs[2], DType::F32, cols, "db");
  if (!dxBf16 && c.outs.size() >= 4)
    c.tensor(c.outs[3], DType::BF16, n, "dx_bf16");
  if (hasDsum)
    c.tensor(c.outs[most - 1], DType::F32, cols, "dsum");
  const char *in[] = {"dy", "x", "w", "mean", "rstd"};
  const char *f32Out[] = {"dx", "dw", "db", "dx_bf16", "dsum"};
  const char *bf16Out[] = {"dx", "dw", "db", "dsum"};
  const char *const *out = dxBf16 ? bf16Out : f32Out;
  for (size_t o = 0; o < c.outs.size(); ++o) {
    for (int k = 0; k < 5; ++k) {
      if (o == 0 && k == 0 && !dyBf16 && !dxBf16)
        c.sameOrDisjoint(c.outs[0], c.ins[0], "dx", "dy"); // in place is fine
      else
        c.disjoint(c.outs[o], c.ins[k], out[o], in[k]);
    }
    for (size_t k = 0; k < o; ++k)
      c.disjoint(c.outs[o], c.outs[k], out[o], out[k]);
  }
}

namespace {

constexpr int64_t kLnRowBlock = 32; // fixed: the dw/db sum order is the data's

/// One row's xhat and g = dy * w, and its dw/db contributions.
void lnGradRowStats(const float *__restrict dyr, const float *__restrict xr,
                    const float *__restrict w, float m, float s,
                    float *__restrict xhat, float *__restrict g,
                    float *__restrict fw, float *__restrict fb, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    const float xh = (xr[j] - m) * s, d = dyr[j];
    xhat[j] = xh;
    g[j] = d * w[j];
    fw[j] += d * xh;
    fb[j] += d;
  }
}

/// dx of one row without accumulating. Out of line, so that the
/// accumulating form adds the very values the plain form stores: an add
/// into dx must not be contracted with the product into an FMA (the bits
/// of LayerNormGrad followed by an Elementwise add).
[[gnu::noinline]] void lnGradRowDx(float *__restrict dxr,
                                   const float *__restrict xhat,
                                   const float *__restrict g, float s, float c1,
                                   float c2, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j)
    dxr[j] = s * (g[j] - c1 - xhat[j] * c2);
}

/// dx += v (f32 adds, as Elementwise's Add) and, when wanted, dx's bf16
/// copy (rounded as Cast rounds).
void lnGradRowFinish(float *__restrict dxr, const float *__restrict v,
                     uint16_t *__restrict hr, bool acc, int64_t cols) {
  if (acc)
    for (int64_t j = 0; j < cols; ++j)
      dxr[j] = dxr[j] + v[j];
  if (hr)
    for (int64_t j = 0; j < cols; ++j)
      hr[j] = floatToBf16(dxr[j]);
}

} // namespace

void runLayerNormGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const bool acc = in.i[2] != 0;
  // accumulate_wb: dw, db += the sums over the rows (each sum rounded to
  // f32 first, then one f32 add: the bits of an Elementwise add after).
  const bool accWb = in.i.size() > 3 && in.i[3] != 0;
  const float *w = ins[2].f32();
  const float *mean = ins[3].f32(), *rstd = ins[4].f32();
  // A bf16 x is widened row by row (exact).
  const float *x = ins[1].value->dtype == DType::BF16 ? nullptr : ins[1].f32();
  const uint16_t *xh = x ? nullptr : ins[1].bf16();
  // A bf16 dx is its own bf16 copy: each row is computed in f32 (from its
  // old value widened, when accumulating) and rounded into dx.
  const bool dxBf16 = outs[0].value->dtype == DType::BF16;
  float *dx = dxBf16 ? nullptr : outs[0].f32();
  float *dw = outs[1].f32(), *db = outs[2].f32();
  uint16_t *dxh = dxBf16            ? outs[0].bf16()
                  : outs.size() > 3 ? outs[3].bf16()
                                    : nullptr;
  // dsum: the copy's column sums, ReduceSum's bits (its kSumRowBlock-row
  // blocks, Common.h), summed from each row of the copy as it is written.
  const size_t dsumAt = dxBf16 ? 3 : 4;
  float *dsum = outs.size() > dsumAt ? outs[dsumAt].f32() : nullptr;
  const bool dsumAcc = in.i.size() > 4 && in.i[4] != 0;
  // A bf16 dy is widened whole first (exact): the f32 path then runs on it.
  std::vector<float> wide;
  const float *dy = ins[0].value->dtype == DType::BF16
                        ? floatsOf(ins[0], rows * cols, wide)
                        : ins[0].f32();
  // Fixed blocks of rows; each block leaves its dw/db partial sums (float
  // within the block's 32 rows, double across blocks). With dsum the
  // threads take whole groups of kSumRowBlock rows (ReduceSum's blocks),
  // which leaves the dw/db sums alone (they are per 32-row block whoever
  // computes them); without, groups of one block.
  static_assert(kSumRowBlock % kLnRowBlock == 0, "a group is whole blocks");
  const int64_t groupBlocks = dsum ? kSumRowBlock / kLnRowBlock : 1;
  const int64_t nblocks = std::max<int64_t>(1, (rows + kLnRowBlock - 1) / kLnRowBlock);
  const int64_t ngroups = (nblocks + groupBlocks - 1) / groupBlocks;
  std::vector<double> part(size_t(nblocks * cols * 2));
  std::vector<double> dpart(dsum ? size_t(ngroups * cols) : 0);
  const int64_t groupGrain =
      std::max<int64_t>(1, rowGrain(cols) / (kLnRowBlock * groupBlocks));
  parallelFor(ctx, ngroups, groupGrain, [&](int64_t g0, int64_t g1) {
    std::vector<float> scratch(
        static_cast<size_t>((5 + (xh ? 1 : 0) + (dxBf16 ? 1 : 0)) * cols));
    std::vector<double> ds(dsum ? size_t(cols) : 0);
    float *xhat = scratch.data(), *g = xhat + cols, *fw = g + cols, *fb = fw + cols;
    float *v = fb + cols, *xw = v + cols;
    float *dxw = xw + (xh ? cols : 0); // a bf16 dx's row in f32
    for (int64_t grp = g0; grp < g1; ++grp) {
      std::fill(ds.begin(), ds.end(), 0.0);
      const int64_t blkEnd = std::min(nblocks, (grp + 1) * groupBlocks);
      for (int64_t blk = grp * groupBlocks; blk < blkEnd; ++blk) {
        std::fill(fw, fw + 2 * cols, 0.0f);
        const int64_t r1 = std::min(rows, (blk + 1) * kLnRowBlock);
        for (int64_t r = blk * kLnRowBlock; r < r1; ++r) {
          if (xh)
            for (int64_t j = 0; j < cols; ++j)
              xw[j] = bf16ToFloat(xh[r * cols + j]);
          lnGradRowStats(dy + r * cols, xh ? xw : x + r * cols, w, mean[r],
                         rstd[r], xhat, g, fw, fb, cols);
          // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dy is dead now
          // (dx may be dy).
          const float c1 = float(sumD(g, cols) / double(cols));
          const float c2 = float(dotD(g, xhat, cols) / double(cols));
          uint16_t *hr = dxh ? dxh + r * cols : nullptr;
          float *dxr = dxBf16 ? dxw : dx + r * cols;
          if (dxBf16 && acc)
            for (int64_t j = 0; j < cols; ++j)
              dxw[j] = bf16ToFloat(hr[j]);
          if (!acc) {
            lnGradRowDx(dxr, xhat, g, rstd[r], c1, c2, cols);
            lnGradRowFinish(dxr, nullptr, hr, false, cols);
          } else {
            lnGradRowDx(v, xhat, g, rstd[r], c1, c2, cols);
            lnGradRowFinish(dxr, v, hr, true, cols);
          }
          if (dsum)
            columnSumAddRow(ds.data(), hr, cols);
        }
        double *pw = &part[size_t(blk * cols * 2)], *pb = pw + cols;
        for (int64_t j = 0; j < cols; ++j) {
          pw[j] = double(fw[j]);
          pb[j] = double(fb[j]);
        }
      }
      if (dsum)
        std::copy(ds.begin(), ds.end(), dpart.begin() + grp * cols);
    }
  });
  parallelFor(ctx, cols, 256, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      double sw = 0, sb = 0;
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        sw += part[size_t(blk * cols * 2 + j)];
        sb += part[size_t(blk * cols * 2 + cols + j)];
      }
      if (accWb) {
        dw[j] = dw[j] + float(sw);
        db[j] = db[j] + float(sb);
      } else {
        dw[j] = float(sw);
        db[j] = float(sb);
      }
      if (dsum)
        dsum[j] =
            columnSumFinish(&dpart[size_t(j)], ngroups, cols, dsum[j], dsumAcc);
    }
  });
}

//===----------------------------------------------------------------------===//
// Softmax
//===----------------------------------------------------------------------===//

void checkSoftmax(const Checker &c) {
  c.operands(1, 1);
  c.attrs(4, 1);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t cols = c.attr(1, 1, kBig, "cols");
  bool causal = c.flag(2, "causal");
  int64_t seq = c.attr(3, causal ? 1 : 0, kBig, "seq");
  if (causal && rows % seq != 0)
    c.fail("rows = " + std::to_string(rows) + " is not a multiple of seq = " +
           std::to_string(seq));
  c.finite(0, "scale");
  c.tensor(c.ins[0], DType::F32, i128(rows) * cols, "x");
  c.tensor(c.outs[0], DType::F32, i128(rows) * cols, "y");
  c.sameOrDisjoint(c.outs[0], c.ins[0], "y", "x");
}

void runSoftmax(const Ctx &ctx, const Instr &in, const Refs &ins,
                const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const bool causal = in.i[2] != 0;
  const int64_t seq = in.i[3];
  const float scale = in.f[0];
  const float *x = ins[0].f32();
  float *y = outs[0].f32();
  parallelFor(ctx, rows, rowGrain(cols), [=](int64_t r0, int64_t r1) {
    const float sc = scale; // a local: the stores cannot alias it
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = x + r * cols;
      float *yr = y + r * cols;
      // Columns c > r % seq are masked; column 0 never is.
      const int64_t valid = causal ? std::min(cols, r % seq + 1) : cols;
      // max(sc * x) = sc * max(x) for sc > 0 (rounding is monotonic),
      // sc * min(x) for sc < 0.
      const float m = sc > 0.0f ? sc * maxF(xr, valid)
                      : sc < 0.0f ? sc * minF(xr, valid) : 0.0f;
      for (int64_t j = 0; j < valid; ++j)
        yr[j] = vexp(sc * xr[j] - m); // y may be x: read before write
      const float inv = float(1.0 / sumD(yr, valid));
      for (int64_t j = 0; j < valid; ++j)
        yr[j] *= inv;
      for (int64_t j = valid; j < cols; ++j)
        yr[j] = 0.0f;
    }
  });
}

//===----------------------------------------------------------------------===//
// SoftmaxGrad
//===----------------------------------------------------------------------===//

void checkSoftmaxGrad(const Checker &c) {
  c.operands(2, 1);
  c.attrs(2, 1);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t cols = c.attr(1, 0, kBig, "cols");
  c.finite(0, "scale");
  c.tensor(c.ins[0], DType::F32, i128(rows) * cols, "y");
  c.tensor(c.ins[1], DType::F32, i128(rows) * cols, "dy");
  c.tensor(c.outs[0], DType::F32, i128(rows) * cols, "dx");
  c.sameOrDisjoint(c.outs[0], c.ins[0], "dx", "y");
  c.sameOrDisjoint(c.outs[0], c.ins[1], "dx", "dy");
}

void runSoftmaxGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                    const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const float scale = in.f[0];
  const float *y = ins[0].f32(), *dy = ins[1].f32();
  float *dx = outs[0].f32();
  parallelFor(ctx, rows, rowGrain(cols), [=](int64_t r0, int64_t r1) {
    const float sc = scale;
    for (int64_t r = r0; r < r1; ++r) {
      const float *yr = y + r * cols, *dyr = dy + r * cols;
      float *dxr = dx + r * cols;
      const float d = float(dotD(dyr, yr, cols));
      for (int64_t j = 0; j < cols; ++j)
        dxr[j] = sc * (yr[j] * (dyr[j] - d));
    }
  });
}

} // namespace mega::rt::cpu

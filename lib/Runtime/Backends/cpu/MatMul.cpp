//===- MatMul.cpp - Batched, strided GEMM on OpenBLAS ---------------------===//
//
// OpenBLAS runs single-threaded (createCpuBackend sets that); the kernel
// spreads independent sgemm calls over OpenMP threads instead: whole batch
// items when there are enough of them (attention heads), otherwise tiles of
// C. One pool of threads, no oversubscription between OpenMP and OpenBLAS,
// and the small per-head products, which OpenBLAS's own threading handles
// badly, run one per thread. K is never split, so every C element is one
// dot product in OpenBLAS's order; see "Tiling" below for why the bits do
// not depend on the thread count.
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "MathApprox.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>

#include <cblas.h>

namespace mega::rt::cpu {

namespace {

struct Gemm {
  int64_t batch, M, N, K;
  bool ta, tb;
  int64_t lda, ldb, ldc, sA, sB, sC;
  float alpha, beta;
};

Gemm parse(const Instr &in) {
  const auto &i = in.i;
  return Gemm{i[0], i[1], i[2],  i[3],  i[4] != 0, i[5] != 0, i[6],
              i[7], i[8], i[9], i[10], i[11],     in.f[0],   in.f[1]};
}

/// Largest element index + 1 of `batch` row-major matrices rows x cols with
/// leading dim ld and batch stride s; 0 when nothing is touched.
i128 extent(int64_t batch, int64_t rows, int64_t cols, int64_t ld, int64_t s) {
  if (batch == 0 || rows == 0 || cols == 0)
    return 0;
  return i128(s) * (batch - 1) + i128(rows - 1) * ld + cols;
}

/// The epilogue's constraints (Plan.h): one plain product (batch 1, alpha
/// 1, beta 0, D contiguous), bias f32 or bf16 (widened) [N], residual f32
/// or bf16 (widened) [M*N], aux and D f32 or bf16 [M*N] (for the GELU
/// gradient aux is the third input, in place of the bias); D may be the
/// residual itself, nothing else may overlap.
void checkEpilogue(const Checker &c, int64_t epi, int64_t M, int64_t N) {
  const auto &i = c.instr.i;
  if (i[0] != 1)
    c.fail("an epilogue needs batch 1, not " + std::to_string(i[0]));
  if (c.instr.f[0] != 1.0f || c.instr.f[1] != 0.0f)
    c.fail("an epilogue needs alpha 1 and beta 0, not " +
           std::to_string(c.instr.f[0]) + " and " +
           std::to_string(c.instr.f[1]));
  if (i[8] != std::max<int64_t>(1, N))
    c.fail("an epilogue needs ldc = N (" + std::to_string(N) + "), not " +
           std::to_string(i[8]));
  const Value *D = c.outs[0];
  if (D->dtype != DType::F32 && D->dtype != DType::BF16)
    c.fail(std::string("D must be f32 or bf16, not ") +
           plan::dtypeName(D->dtype));
  const i128 mn = i128(M) * N;
  if (i128(c.numel(D, "D")) != mn)
    c.fail("D has " + std::to_string(c.numel(D, "D")) +
           " elements, the attributes say " + toString(mn));
  if (epi == 4) {
    // The GELU gradient: ins[2] is the pre-activation (f32 or bf16).
    const Value *aux = c.ins[2];
    c.tensor(aux, aux->dtype == DType::BF16 ? DType::BF16 : DType::F32, mn,
             "aux");
    c.disjoint(D, aux, "D", "aux");
    return;
  }
  // A bf16 bias (mega-bf16-bias: the sum is stored in bf16) is widened on
  // load.
  const Value *bias = c.ins[2];
  c.tensor(bias, bias->dtype == DType::BF16 ? DType::BF16 : DType::F32, N,
           "bias");
  c.disjoint(D, c.ins[2], "D", "bias");
  if (epi == 2) {
    // A bf16 residual (the stream stored in bf16) is widened on load.
    const Value *R = c.ins[3];
    c.tensor(R, R->dtype == DType::BF16 ? DType::BF16 : DType::F32, mn,
             "residual");
    c.sameOrDisjoint(D, c.ins[3], "D", "residual");
  }
  if (epi == 3) {
    const Value *aux = c.outs[1];
    // aux may be bf16: the pre-activation rounded on store (D is computed
    // from the unrounded value).
    c.tensor(aux, aux->dtype == DType::BF16 ? DType::BF16 : DType::F32, mn,
             "aux");
    c.disjoint(aux, c.ins[0], "aux", "A");
    c.disjoint(aux, c.ins[1], "aux", "B");
    c.disjoint(aux, c.ins[2], "aux", "bias");
    c.disjoint(aux, D, "aux", "D");
  }
}

} // namespace

void checkMatMul(const Checker &c) {
  // i[12], when present, is the epilogue (Plan.h): 0 none, 1 bias, 2 bias +
  // residual, 3 bias + GELU (D and the pre-activation aux), 4 the GELU
  // gradient at the pre-activation aux (an input), 5 B's column sums (the
  // bias gradient) into a second output, i[13] accumulate.
  const size_t nattr = c.instr.i.size();
  const bool hasEpi = nattr >= 13;
  c.attrs(nattr == 14 ? 14 : hasEpi ? 13 : 12, 2);
  const int64_t epi = hasEpi ? c.attr(12, 0, 5, "epilogue") : 0;
  if (epi == 5 && nattr != 14)
    c.fail("epilogue 5 (bias gradient) needs a 14th attribute, accumulate");
  if (epi != 5 && nattr == 14)
    c.fail("only epilogue 5 takes a 14th attribute");
  c.operands(epi == 0 || epi == 5 ? 2 : epi == 2 ? 4 : 3,
             epi == 3 || epi == 5 ? 2 : 1);
  const int64_t big = int64_t(1) << 48;
  int64_t batch = c.attr(0, 0, big, "batch");
  int64_t M = c.attr(1, 0, INT_MAX, "M");
  int64_t N = c.attr(2, 0, INT_MAX, "N");
  int64_t K = c.attr(3, 0, INT_MAX, "K");
  bool ta = c.flag(4, "transA"), tb = c.flag(5, "transB");
  // Stored shapes: A is M x K (K x M when transposed), B is K x N (N x K).
  int64_t aRows = ta ? K : M, aCols = ta ? M : K;
  int64_t bRows = tb ? N : K, bCols = tb ? K : N;
  // BLAS requires ld >= max(1, columns) even for empty matrices.
  int64_t lda = c.attr(6, std::max<int64_t>(1, aCols), INT_MAX, "lda");
  int64_t ldb = c.attr(7, std::max<int64_t>(1, bCols), INT_MAX, "ldb");
  int64_t ldc = c.attr(8, std::max<int64_t>(1, N), INT_MAX, "ldc");
  int64_t sA = c.attr(9, 0, big, "strideA");
  int64_t sB = c.attr(10, 0, big, "strideB");
  int64_t sC = c.attr(11, 0, big, "strideC");
  float alpha = c.finite(0, "alpha");
  float beta = c.finite(1, "beta");
  // A and B: both f32, or both bf16 (widened, fp32 math: the tensor-core
  // twin).
  if (c.ins[0]->dtype != DType::F32 && c.ins[0]->dtype != DType::BF16)
    c.fail(std::string("A must be f32 or bf16, not ") +
           plan::dtypeName(c.ins[0]->dtype));
  c.dtype(c.ins[1], c.ins[0]->dtype, "B");
  // Without an epilogue C is f32, or bf16 (rounded on store: a folded
  // cast) for a tensor-core product that overwrites it: bf16 A and B,
  // alpha != 0, beta = 0, K > 0, and C one contiguous [batch, M, N] block.
  if (epi == 0 && c.outs[0]->dtype == DType::BF16) {
    if (c.ins[0]->dtype != DType::BF16 || alpha == 0.0f || beta != 0.0f ||
        K == 0)
      c.fail("a bf16 C needs bf16 A and B, alpha != 0, beta = 0 and K > 0");
    if (ldc != N || (batch > 1 && sC != M * N))
      c.fail("a bf16 C must be contiguous (ldc = N, strideC = M*N), got "
             "ldc " + std::to_string(ldc) + ", strideC " + std::to_string(sC));
  } else if (epi == 0 || epi == 5) {
    c.dtype(c.outs[0], DType::F32, "C");
  }
  // A and B are read only when alpha != 0 and K > 0 (BLAS convention).
  bool readsAB = alpha != 0.0f && K > 0;
  i128 needA = readsAB && N > 0 ? extent(batch, aRows, aCols, lda, sA) : 0;
  i128 needB = readsAB && M > 0 ? extent(batch, bRows, bCols, ldb, sB) : 0;
  i128 needC = extent(batch, M, N, ldc, sC);
  auto fits = [&](i128 need, const Value *v, const char *what) {
    int64_t have = c.numel(v, what);
    if (need > have)
      c.fail(std::string(what) + " has " + std::to_string(have) +
             " elements but the attributes reach element " + toString(need - 1));
  };
  fits(needA, c.ins[0], "A");
  fits(needB, c.ins[1], "B");
  fits(needC, c.outs[0], "C");
  // Batch items must write different elements of C (they run in parallel).
  if (batch > 1 && needC > 0 && sC < (M - 1) * ldc + N)
    c.fail("strideC " + std::to_string(sC) +
           " makes the batch items of C overlap");
  c.disjoint(c.outs[0], c.ins[0], "C", "A");
  c.disjoint(c.outs[0], c.ins[1], "C", "B");
  if (epi == 5) {
    // The bias gradient of the weight gradient's product: g[n] (+)= the sum
    // over k of B[k, n], ReduceSum's bits: B one contiguous K x N block.
    c.flag(13, "accumulate");
    if (batch != 1 || tb || ldb != std::max<int64_t>(1, N))
      c.fail("epilogue 5 needs batch 1, B not transposed and ldb = N (" +
             std::to_string(N) + ")");
    c.tensor(c.outs[1], DType::F32, N, "bias gradient");
    c.disjoint(c.outs[1], c.ins[0], "bias gradient", "A");
    c.disjoint(c.outs[1], c.ins[1], "bias gradient", "B");
    c.disjoint(c.outs[1], c.outs[0], "bias gradient", "C");
  } else if (epi != 0) {
    checkEpilogue(c, epi, M, N);
  }
}

namespace {

// Tiling. Results must not depend on the thread count, and OpenBLAS does not
// promise that a sub-product gives the same bits as the whole. Measured on
// 0.3.21: splitting the rows of C at multiples of 48 never changes a bit
// (its kernels unroll rows by 4, 6, 8, 12 or 16); splitting the columns at
// multiples of 64 keeps the bits with the SkylakeX, Sandybridge and Prescott
// kernels but not with Haswell's or Zen's. probeGemmSplits() tests both on
// the OpenBLAS actually loaded; a dimension that passes is split as the
// thread count suggests (1 thread: one call, no overhead), one that fails is
// split by the shape alone (the same tiles for every thread count).
constexpr int64_t kRowAlign = 48;
constexpr int64_t kColAlign = 64;
constexpr int64_t kFixedColTile = 384;     // about, when columns are fixed
constexpr int64_t kFixedRowTile = 240;     // when rows are fixed
constexpr double kTileMinFlops = 8e6;      // smaller items are not tiled
constexpr double kParallelMinFlops = 2e5;  // smaller products run serially
constexpr int kRowsFree = 1, kColsFree = 2;

std::atomic<int> gSplitPolicy{0}; // until probed: everything fixed (safe)

struct Tiling {
  int64_t rowTile = 0, rowTiles = 1; // rows per tile (a multiple of 48)
  int64_t colTiles = 1;              // column split points: colSplit
};

int64_t colSplit(int64_t N, int64_t parts, int64_t k) {
  if (k >= parts)
    return N;
  return std::min(N, (N * k / parts + kColAlign / 2) / kColAlign * kColAlign);
}

Tiling makeTiling(int64_t M, int64_t rowTile, int64_t colTiles) {
  Tiling t;
  t.rowTile = std::max<int64_t>(1, std::min(M, rowTile));
  t.rowTiles = (M + t.rowTile - 1) / t.rowTile;
  t.colTiles = colTiles;
  return t;
}

int64_t rowTileFor(int64_t M, int64_t parts) {
  if (parts <= 1)
    return M;
  int64_t r = (M + parts - 1) / parts;
  return (r + kRowAlign - 1) / kRowAlign * kRowAlign;
}

/// Estimated time in flops: rounds of the largest tile, with OpenBLAS's
/// packing (about 8 flops per packed float) included.
double tilingCost(const Gemm &g, const Tiling &t, int64_t threads) {
  int64_t colMax = 0;
  for (int64_t k = 0; k < t.colTiles; ++k)
    colMax = std::max(colMax, colSplit(g.N, t.colTiles, k + 1) - colSplit(g.N, t.colTiles, k));
  const int64_t tasks = g.batch * t.rowTiles * t.colTiles;
  const double rounds = double((tasks + threads - 1) / threads);
  const double rows = double(t.rowTile), cols = double(colMax), K = double(g.K);
  return rounds * (2.0 * rows * cols * K + 8.0 * K * (rows + cols));
}

Tiling chooseTiling(const Gemm &g, int64_t threads) {
  const double itemFlops = 2.0 * double(g.M) * double(g.N) * double(g.K);
  if (itemFlops < kTileMinFlops)
    return makeTiling(g.M, g.M, 1);
  const int policy = gSplitPolicy.load(std::memory_order_relaxed);
  const bool rowsFree = policy & kRowsFree, colsFree = policy & kColsFree;
  const int64_t fixedRow = g.M <= 2 * kFixedRowTile ? g.M : kFixedRowTile;
  const int64_t fixedCols = std::max<int64_t>(1, (g.N + kFixedColTile / 2) / kFixedColTile);
  Tiling best = makeTiling(g.M, rowsFree ? g.M : fixedRow, colsFree ? 1 : fixedCols);
  if (threads <= 1 || g.batch >= 4 * threads)
    return best;
  double bestCost = tilingCost(g, best, threads);
  const int64_t maxP = rowsFree ? std::min<int64_t>(std::max<int64_t>(1, g.M / kRowAlign), 2 * threads) : 1;
  const int64_t maxQ = colsFree ? std::min<int64_t>(std::max<int64_t>(1, g.N / kColAlign), 2 * threads) : 1;
  for (int64_t q = 1; q <= maxQ; ++q)
    for (int64_t p = 1; p <= maxP && p * q <= 2 * threads; ++p) {
      Tiling t = makeTiling(g.M, rowsFree ? rowTileFor(g.M, p) : fixedRow,
                            colsFree ? q : fixedCols);
      double cost = tilingCost(g, t, threads);
      if (cost < bestCost * 0.98) { // fewer tiles unless clearly better
        bestCost = cost;
        best = t;
      }
    }
  return best;
}

/// C = A B (or with transposes) as one call and as tiles; same bits?
bool splitKeepsBits(bool ta, bool tb, bool splitRows) {
  const int M = 96, N = 320, K = 100;
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N), whole(size_t(M) * N),
      tiled(size_t(M) * N);
  uint32_t s = 12345;
  auto next = [&] {
    s = s * 1664525u + 1013904223u;
    return float(int32_t(s >> 8) - (1 << 23)) / float(1 << 23);
  };
  for (float &x : A)
    x = next();
  for (float &x : B)
    x = next();
  const int lda = ta ? M : K, ldb = tb ? K : N;
  const CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE TB = tb ? CblasTrans : CblasNoTrans;
  cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f,
              whole.data(), N);
  if (splitRows) {
    for (int m0 : {0, 48})
      cblas_sgemm(CblasRowMajor, TA, TB, 48, N, K, 1.0f, A.data() + (ta ? m0 : m0 * lda),
                  lda, B.data(), ldb, 0.0f, tiled.data() + m0 * N, N);
  } else {
    const int cuts[] = {0, 64, 128, 256, N};
    for (int k = 0; k < 4; ++k)
      cblas_sgemm(CblasRowMajor, TA, TB, M, cuts[k + 1] - cuts[k], K, 1.0f, A.data(), lda,
                  B.data() + (tb ? cuts[k] * ldb : cuts[k]), ldb, 0.0f,
                  tiled.data() + cuts[k], N);
  }
  return std::memcmp(whole.data(), tiled.data(), whole.size() * 4) == 0;
}

} // namespace

int probeGemmSplits() {
  int policy = kRowsFree | kColsFree;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      if (!splitKeepsBits(ta, tb, true))
        policy &= ~kRowsFree;
      if (!splitKeepsBits(ta, tb, false))
        policy &= ~kColsFree;
    }
  gSplitPolicy.store(policy, std::memory_order_relaxed);
  return policy;
}

namespace {

/// C = alpha op(A) op(B) + beta C (the plain MatMul into `C`).
void gemm(const Ctx &ctx, const Gemm &g, const Refs &ins, float *C) {
  if (g.batch == 0 || g.M == 0 || g.N == 0)
    return;
  if (g.alpha == 0.0f || g.K == 0) {
    // C = beta * C without touching A and B (which check() did not size);
    // beta == 0 overwrites C without reading it, as BLAS does.
    parallelForEach(ctx, g.batch * g.M, [&](int64_t r) {
      float *row = C + (r / g.M) * g.sC + (r % g.M) * g.ldc;
      for (int64_t j = 0; j < g.N; ++j)
        row[j] = g.beta == 0.0f ? 0.0f : g.beta * row[j];
    });
    return;
  }
  // bf16 operands: widened to float (exact), then the fp32 product, which
  // is what tensor cores compute (bf16 products, fp32 sums). Only the
  // elements the attributes reach are widened.
  std::vector<float> wideA, wideB;
  const int64_t aRows = g.ta ? g.K : g.M, aCols = g.ta ? g.M : g.K;
  const int64_t bRows = g.tb ? g.N : g.K, bCols = g.tb ? g.K : g.N;
  const float *A = floatsOf(ins[0], int64_t(extent(g.batch, aRows, aCols, g.lda, g.sA)), wideA);
  const float *B = floatsOf(ins[1], int64_t(extent(g.batch, bRows, bCols, g.ldb, g.sB)), wideB);
  const CBLAS_TRANSPOSE TA = g.ta ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE TB = g.tb ? CblasTrans : CblasNoTrans;
  // OpenBLAS (0.3.21, MAX_THREADS 64) has 128 work buffers, one per running
  // call: at most 64 concurrent calls. (Below that the team stays
  // ctx.threads; see parallelFor.)
  Ctx c = ctx;
  c.threads = std::min(ctx.threads, 64);
  const double flops = 2.0 * double(g.batch) * double(g.M) * double(g.N) * double(g.K);
  if (flops < kParallelMinFlops)
    c.threads = 1;
  const Tiling t = chooseTiling(g, c.threads);
  const int64_t tiles = t.colTiles * t.rowTiles;
  parallelForEach(c, g.batch * tiles, [&](int64_t task) {
    const int64_t b = task / tiles, tile = task % tiles;
    const int64_t ct = tile / t.rowTiles, rt = tile % t.rowTiles;
    const int64_t m0 = rt * t.rowTile, m1 = std::min(g.M, m0 + t.rowTile);
    const int64_t n0 = colSplit(g.N, t.colTiles, ct), n1 = colSplit(g.N, t.colTiles, ct + 1);
    if (m0 >= m1 || n0 >= n1)
      return;
    const float *a = A + b * g.sA + (g.ta ? m0 : m0 * g.lda);
    const float *bb = B + b * g.sB + (g.tb ? n0 * g.ldb : n0);
    float *cc = C + b * g.sC + m0 * g.ldc + n0;
    cblas_sgemm(CblasRowMajor, TA, TB, int(m1 - m0), int(n1 - n0), int(g.K), g.alpha, a,
                int(g.lda), bb, int(g.ldb), g.beta, cc, int(g.ldc));
  });
}

/// The epilogue over the product t [M, N] (row-major): exactly the
/// Elementwise program mega-fuse-epilogues replaced (docs/plan-format.md),
/// the same f32 adds in the same order, the same GELU function, so a plan
/// gives the same bits with and without the fusion. For GELU, t is aux
/// itself (f32): it is overwritten with the pre-activation; with a bf16
/// aux (`auxBf16`) t is scratch and aux gets the pre-activation rounded.
void epilogue(const Ctx &ctx, int64_t epi, int64_t M, int64_t N, float *t,
              const float *bias, const float *R, const uint16_t *Rh,
              const TensorRef &D, uint16_t *auxBf16) {
  float *df = D.value->dtype == DType::F32 ? D.f32() : nullptr;
  uint16_t *dh = df ? nullptr : D.bf16();
  parallelForEach(ctx, M, [&](int64_t m) {
    float *tr = t + m * N;
    const float *rr = R ? R + m * N : nullptr;
    for (int64_t j = 0; j < N; ++j)
      tr[j] = tr[j] + bias[j];
    if (rr)
      for (int64_t j = 0; j < N; ++j)
        tr[j] = tr[j] + rr[j];
    if (Rh) // widened (exact), then the same f32 add
      for (int64_t j = 0; j < N; ++j)
        tr[j] = tr[j] + bf16ToFloat(Rh[m * N + j]);
    if (auxBf16)
      for (int64_t j = 0; j < N; ++j)
        auxBf16[m * N + j] = floatToBf16(tr[j]);
    float row[256]; // GELU's results, a block at a time (bf16 D)
    for (int64_t j0 = 0; j0 < N; j0 += 256) {
      const int64_t len = std::min<int64_t>(256, N - j0);
      const float *y = tr + j0;
      if (epi == 3) {
        float *out = df ? df + m * N + j0 : row;
        for (int64_t j = 0; j < len; ++j)
          out[j] = vgelu(y[j]);
        y = out;
      }
      if (dh)
        for (int64_t j = 0; j < len; ++j)
          dh[m * N + j0 + j] = floatToBf16(y[j]);
      else if (y != df + m * N + j0)
        std::memcpy(df + m * N + j0, y, size_t(len) * 4);
    }
  });
}

/// Epilogue 4: D = gelu'(aux) * t, the Elementwise GeluGrad(aux, t) it
/// replaces (vgeluGrad, element by element: the same bits), aux widened
/// when bf16, D rounded when bf16.
void geluGradEpilogue(const Ctx &ctx, const Gemm &g, const Refs &ins,
                      const TensorRef &D) {
  std::vector<float> t(size_t(g.M * g.N));
  gemm(ctx, g, ins, t.data());
  const float *af = ins[2].value->dtype == DType::F32 ? ins[2].f32() : nullptr;
  const uint16_t *ah = af ? nullptr : ins[2].bf16();
  float *df = D.value->dtype == DType::F32 ? D.f32() : nullptr;
  uint16_t *dh = df ? nullptr : D.bf16();
  parallelFor(ctx, g.M * g.N, int64_t(1) << 15, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const float x = af ? af[k] : bf16ToFloat(ah[k]);
      const float y = vgeluGrad(x, t[size_t(k)]);
      if (dh)
        dh[k] = floatToBf16(y);
      else
        df[k] = y;
    }
  });
}

} // namespace

void runMatMul(const Ctx &ctx, const Instr &in, const Refs &ins,
               const Refs &outs) {
  const Gemm g = parse(in);
  const int64_t epi = in.i.size() > 12 ? in.i[12] : 0;
  if (epi == 0 && outs[0].value->dtype == DType::BF16) {
    // bf16 C (check(): beta 0, contiguous): the f32 product, then rounded,
    // the same bits as the product followed by a Cast.
    const int64_t n = g.batch * g.M * g.N;
    std::vector<float> t(static_cast<size_t>(n));
    Gemm f = g;
    f.sC = g.M * g.N;
    gemm(ctx, f, ins, t.data());
    uint16_t *h = outs[0].bf16();
    parallelFor(ctx, n, int64_t(1) << 16, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k)
        h[k] = floatToBf16(t[size_t(k)]);
    });
    return;
  }
  if (epi == 0)
    return gemm(ctx, g, ins, outs[0].f32());
  if (epi == 5) {
    // The product, then B's column sums exactly as the ReduceSum this
    // replaces (mega-fuse-bias-grad): the same bits as the two kernels.
    gemm(ctx, g, ins, outs[0].f32());
    Instr sum;
    sum.op = Op::ReduceSum;
    sum.i = {g.K, g.N, in.i[13]};
    return runReduceSum(ctx, sum, {ins[1]}, {outs[1]});
  }
  if (g.M == 0 || g.N == 0)
    return;
  if (epi == 4)
    return geluGradEpilogue(ctx, g, ins, outs[0]);
  // The product goes where the epilogue can finish in place: aux (GELU),
  // an f32 D that is not the residual it still has to read, or scratch.
  const TensorRef &D = outs[0];
  const bool rBf16 = epi == 2 && ins[3].value->dtype == DType::BF16;
  const float *R = epi == 2 && !rBf16 ? ins[3].f32() : nullptr;
  const uint16_t *Rh = rBf16 ? ins[3].bf16() : nullptr;
  std::vector<float> scratch;
  float *t;
  uint16_t *auxBf16 = epi == 3 && outs[1].value->dtype == DType::BF16
                          ? outs[1].bf16()
                          : nullptr;
  if (epi == 3 && !auxBf16)
    t = outs[1].f32();
  else if (D.value->dtype == DType::F32 && (epi != 2 || D.data != ins[3].data))
    t = D.f32();
  else {
    scratch.resize(size_t(g.M * g.N));
    t = scratch.data();
  }
  gemm(ctx, g, ins, t);
  // A bf16 bias widened (exact) once: the same f32 adds after.
  std::vector<float> wide;
  const float *bias =
      ins[2].value->dtype == DType::F32 ? ins[2].f32() : nullptr;
  if (!bias) {
    wide.resize(size_t(g.N));
    const uint16_t *h = ins[2].bf16();
    for (int64_t j = 0; j < g.N; ++j)
      wide[size_t(j)] = bf16ToFloat(h[j]);
    bias = wide.data();
  }
  epilogue(ctx, epi, g.M, g.N, t, bias, R, Rh, D, auxBf16);
}

} // namespace mega::rt::cpu

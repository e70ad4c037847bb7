//===- test_matmul.cpp - MatMul against a double reference ----------------===//
#include "KernelTest.h"

#include <array>
#include <cstring>

using namespace kt;

namespace {

struct MM {
  int64_t batch, M, N, K;
  bool ta, tb;
  int64_t lda, ldb, ldc, sA, sB, sC;
  float alpha, beta;
};

int64_t extent(int64_t batch, int64_t rows, int64_t cols, int64_t ld,
               int64_t s) {
  if (batch == 0 || rows == 0 || cols == 0)
    return 1;
  return s * (batch - 1) + (rows - 1) * ld + cols;
}

void runCase(Harness &h, Rng &rng, const MM &c, const char *label,
             bool nanC = false) {
  int64_t aRows = c.ta ? c.K : c.M, aCols = c.ta ? c.M : c.K;
  int64_t bRows = c.tb ? c.N : c.K, bCols = c.tb ? c.K : c.N;
  int64_t nA = extent(c.batch, aRows, aCols, c.lda, c.sA) + 3;
  int64_t nB = extent(c.batch, bRows, bCols, c.ldb, c.sB) + 2;
  int64_t nC = extent(c.batch, c.M, c.N, c.ldc, c.sC) + 5;
  std::vector<float> A = rng.vec(size_t(nA)), B = rng.vec(size_t(nB)),
                     C0 = rng.vec(size_t(nC));
  if (nanC)
    for (float &x : C0)
      x = std::nanf("");
  Tensor &tA = h.f32({nA}, A), &tB = h.f32({nB}, B), &tC = h.f32({nC}, C0);
  Instr in = make(Op::MatMul,
                  {c.batch, c.M, c.N, c.K, c.ta, c.tb, c.lda, c.ldb, c.ldc,
                   c.sA, c.sB, c.sC},
                  {c.alpha, c.beta});
  if (!h.run(in, {&tA, &tB}, {&tC}))
    return;
  std::vector<double> ref = toD(C0), tol(size_t(nC), 0.0);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = 0; n < c.N; ++n) {
        double s = 0, mag = 0;
        for (int64_t k = 0; k < c.K; ++k) {
          double a = c.ta ? A[b * c.sA + k * c.lda + m] : A[b * c.sA + m * c.lda + k];
          double bb = c.tb ? B[b * c.sB + n * c.ldb + k] : B[b * c.sB + k * c.ldb + n];
          s += a * bb;
          mag += std::fabs(a * bb);
        }
        size_t at = size_t(b * c.sC + m * c.ldc + n);
        double old = C0[at];
        ref[at] = double(c.alpha) * s + (c.beta == 0.0f ? 0.0 : double(c.beta) * old);
        tol[at] = 2e-6 * (std::fabs(c.alpha) * mag +
                          (c.beta == 0.0f ? 0.0 : std::fabs(c.beta * old))) + 1e-30;
      }
  // Elements outside the C views (padding, slack) must be untouched: tol 0.
  closeToTol(label, tC.f(), ref, tol);
}

/// A MatMul with an epilogue (i[12]) against the plain MatMul followed by
/// the Elementwise program mega-fuse-epilogues replaces: the same bits, for
/// D f32 and bf16, GELU's aux f32 and bf16 (stored rounded, D from the
/// unrounded value), and with D written over the residual (in place).
void epilogueCase(Harness &h, Rng &rng, int64_t M, int64_t N, int64_t K,
                  int64_t epi, DType dType, bool inPlace,
                  DType auxType = DType::F32) {
  using mega::plan::EwOp;
  const int64_t n = M * N;
  Tensor &A = h.f32({M, K}, rng.vec(size_t(M * K)));
  Tensor &B = h.f32({K, N}, rng.vec(size_t(K * N)));
  Tensor &bias = h.f32({N}, rng.vec(size_t(N)));
  const std::vector<float> r0 = rng.vec(size_t(n));
  Tensor &R = h.f32({n}, r0);
  const std::vector<int64_t> mm = {1, M, N, K, 0, 0, std::max<int64_t>(1, K), N, N, 0, 0, 0};
  // Reference: C = A B; Elementwise (C, bias[, R]) -> y (pre, gelu).
  Tensor &C = h.f32({n});
  if (!h.run(make(Op::MatMul, mm, {1.0f, 0.0f}), {&A, &B}, {&C}))
    return;
  const int64_t L = int64_t(EwOp::Load), S = int64_t(EwOp::Store),
                Ad = int64_t(EwOp::Add), G = int64_t(EwOp::Gelu);
  std::vector<int64_t> code = {n, epi == 2 ? 3 : 2, epi == 3 ? 2 : 1, n, N};
  if (epi == 2)
    code.push_back(n);
  using Ops = std::vector<int64_t>;
  auto emit = [&](const Ops &ops) { code.insert(code.end(), ops.begin(), ops.end()); };
  emit(Ops{L, 0, 0, 0, L, 1, 1, 0, Ad, 0, 0, 1});
  if (epi == 2)
    emit(Ops{L, 1, 2, 0, Ad, 0, 0, 1});
  emit(Ops{S, 0, 0, 0});
  if (epi == 3)
    emit(Ops{G, 1, 0, 0, S, 1, 1, 0});
  Tensor &pre = h.alloc(auxType, {n}), &act = h.alloc(dType, {n});
  std::vector<Tensor *> ewIns = {&C, &bias}, ewOuts;
  if (epi == 2)
    ewIns.push_back(&R);
  if (epi == 3)
    ewOuts = {&pre, &act};
  else
    ewOuts = {&act};
  if (!h.run(make(Op::Elementwise, code, {}), ewIns, ewOuts))
    return;
  // The epilogue.
  std::vector<int64_t> i = mm;
  i.push_back(epi);
  Tensor &aux = h.alloc(auxType, {n});
  Tensor &D = inPlace ? R : h.alloc(dType, {n});
  std::vector<Tensor *> ins = {&A, &B, &bias}, outs = {&D};
  if (epi == 2)
    ins.push_back(&R);
  if (epi == 3)
    outs.push_back(&aux);
  if (!h.run(make(Op::MatMul, i, {1.0f, 0.0f}), ins, outs))
    return;
  const size_t bytes = size_t(n) * (dType == DType::BF16 ? 2 : 4);
  CHECK(std::memcmp(D.data, act.data, bytes) == 0,
        "epilogue %lld M=%lld N=%lld K=%lld%s%s: D differs from MatMul + "
        "Elementwise",
        (long long)epi, (long long)M, (long long)N, (long long)K,
        dType == DType::BF16 ? " bf16" : "", inPlace ? " in place" : "");
  if (epi == 3)
    CHECK(std::memcmp(aux.data, pre.data,
                      size_t(n) * (auxType == DType::BF16 ? 2 : 4)) == 0,
          "epilogue 3 M=%lld N=%lld%s: aux differs from the pre-activation",
          (long long)M, (long long)N,
          auxType == DType::BF16 ? " bf16 aux" : "");
}

/// Epilogue 4 against the plain MatMul followed by the Elementwise
/// GeluGrad(aux, t) it replaces: the same bits, aux and D f32 or bf16.
void geluGradCase(Harness &h, Rng &rng, int64_t M, int64_t N, int64_t K,
                  DType auxType, DType dType) {
  using mega::plan::EwOp;
  const int64_t n = M * N;
  Tensor &A = h.f32({M, K}, rng.vec(size_t(M * K)));
  Tensor &B = h.f32({K, N}, rng.vec(size_t(K * N)));
  Tensor &xf = h.f32({n}, rng.vec(size_t(n), -4, 4));
  Tensor *aux = &xf;
  if (auxType == DType::BF16) {
    // The pre-activation rounded (by the Elementwise Store, tested).
    aux = &h.alloc(DType::BF16, {n});
    const std::vector<int64_t> copy = {n, 1, 1, n, int64_t(EwOp::Load), 0, 0, 0,
                                       int64_t(EwOp::Store), 0, 0, 0};
    if (!h.run(make(Op::Elementwise, copy, {}), {&xf}, {aux}))
      return;
  }
  const std::vector<int64_t> mm = {1, M, N, K, 0, 0, std::max<int64_t>(1, K), N, N, 0, 0, 0};
  Tensor &C = h.f32({n});
  if (!h.run(make(Op::MatMul, mm, {1.0f, 0.0f}), {&A, &B}, {&C}))
    return;
  const std::vector<int64_t> code = {n, 2, 1, n, n, int64_t(EwOp::Load), 0, 0, 0,
                                     int64_t(EwOp::Load), 1, 1, 0,
                                     int64_t(EwOp::GeluGrad), 2, 0, 1,
                                     int64_t(EwOp::Store), 2, 0, 0};
  Tensor &ref = h.alloc(dType, {n}), &D = h.alloc(dType, {n});
  std::vector<int64_t> i = mm;
  i.push_back(4);
  if (!h.run(make(Op::Elementwise, code, {}), {aux, &C}, {&ref}) ||
      !h.run(make(Op::MatMul, i, {1.0f, 0.0f}), {&A, &B, aux}, {&D}))
    return;
  CHECK(std::memcmp(D.data, ref.data,
                    size_t(n) * (dType == DType::BF16 ? 2 : 4)) == 0,
        "epilogue 4 M=%lld N=%lld K=%lld aux %s D %s: differs from MatMul + "
        "Elementwise GeluGrad",
        (long long)M, (long long)N, (long long)K,
        auxType == DType::BF16 ? "bf16" : "f32",
        dType == DType::BF16 ? "bf16" : "f32");
}

/// Epilogue 5 against the plain MatMul followed by the ReduceSum of B it
/// replaces: C and the bias gradient g with the same bits, g fresh or
/// accumulated, A and B f32 or bf16 (rounded by an Elementwise copy).
void biasGradCase(Harness &h, Rng &rng, int64_t M, int64_t N, int64_t K,
                  DType ab, float beta, int acc) {
  using mega::plan::EwOp;
  auto operand = [&](int64_t n) -> Tensor * {
    Tensor &x = h.f32({n}, rng.vec(size_t(n)));
    if (ab == DType::F32)
      return &x;
    if (n == 0)
      return &h.alloc(DType::BF16, {0});
    Tensor *y = &h.alloc(DType::BF16, {n});
    const std::vector<int64_t> copy = {n, 1, 1, n, int64_t(EwOp::Load), 0, 0, 0,
                                       int64_t(EwOp::Store), 0, 0, 0};
    return h.run(make(Op::Elementwise, copy, {}), {&x}, {y}) ? y : nullptr;
  };
  Tensor *A = operand(K * M), *B = operand(K * N);
  if (!A || !B)
    return;
  const std::vector<float> c0 = rng.vec(size_t(M * N)), g0 = rng.vec(size_t(N));
  Tensor &C = h.f32({M * N}, c0), &Cref = h.f32({M * N}, c0);
  Tensor &g = h.f32({N}, g0), &gref = h.f32({N}, g0);
  const std::vector<int64_t> mm = {1, M, N, K, 1, 0, std::max<int64_t>(1, M),
                                   std::max<int64_t>(1, N),
                                   std::max<int64_t>(1, N), 0, 0, 0};
  std::vector<int64_t> i = mm;
  i.push_back(5);
  i.push_back(acc);
  if (!h.run(make(Op::MatMul, mm, {1.0f, beta}), {A, B}, {&Cref}) ||
      !h.run(make(Op::ReduceSum, {K, N, acc}, {}), {B}, {&gref}) ||
      !h.run(make(Op::MatMul, i, {1.0f, beta}), {A, B}, {&C, &g}))
    return;
  CHECK(std::memcmp(C.data, Cref.data, size_t(M * N) * 4) == 0 &&
            std::memcmp(g.data, gref.data, size_t(N) * 4) == 0,
        "epilogue 5 M=%lld N=%lld K=%lld %s beta %g acc %d: differs from "
        "MatMul + ReduceSum",
        (long long)M, (long long)N, (long long)K,
        ab == DType::BF16 ? "bf16" : "f32", double(beta), acc);
}

/// Epilogue 5's refusals: B transposed, batch 2, g of the wrong size or
/// overlapping C, a 14th attribute without epilogue 5 and none with it.
void biasGradRefusals(Harness &h, Rng &rng) {
  Tensor &A = h.f32({16 * 4}, rng.vec(64)), &B = h.f32({16 * 8}, rng.vec(128));
  Tensor &C = h.f32({4 * 8}), &g = h.f32({8}), &g7 = h.f32({7});
  const std::vector<int64_t> ok = {1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1};
  auto with = [&](std::initializer_list<std::pair<size_t, int64_t>> kv) {
    std::vector<int64_t> i = ok;
    for (auto [k, v] : kv)
      i[k] = v;
    return make(Op::MatMul, i, {1.0f, 1.0f});
  };
  Tensor &C2 = h.f32({2 * 4 * 8});
  h.reject("transB", with({{5, 1}, {7, 16}}), {&A, &B}, {&C, &g},
           "B not transposed");
  h.reject("batch 2", with({{0, 2}, {11, 32}}), {&A, &B}, {&C2, &g},
           "batch 1");
  h.reject("g of 7", make(Op::MatMul, ok, {1.0f, 1.0f}), {&A, &B}, {&C, &g7},
           "bias gradient");
  h.reject("g is C", make(Op::MatMul, ok, {1.0f, 1.0f}), {&A, &B}, {&C, &C},
           "bias gradient");
  std::vector<int64_t> no5 = ok;
  no5[12] = 1;
  h.reject("14 attributes, epilogue 1", make(Op::MatMul, no5, {1.0f, 0.0f}),
           {&A, &B}, {&C, &g}, "only epilogue 5");
  std::vector<int64_t> short5(ok.begin(), ok.end() - 1);
  h.reject("epilogue 5 without accumulate",
           make(Op::MatMul, short5, {1.0f, 1.0f}), {&A, &B}, {&C, &g},
           "14th attribute");
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(7);
  // Plain, odd sizes.
  runCase(h, rng, {1, 7, 17, 33, 0, 0, 33, 17, 17, 0, 0, 0, 1.0f, 0.0f}, "plain 7x17x33");
  // Transposes with padded leading dimensions.
  runCase(h, rng, {1, 17, 33, 7, 1, 0, 20, 35, 34, 0, 0, 0, 1.0f, 0.0f}, "transA padded");
  runCase(h, rng, {1, 33, 7, 17, 0, 1, 19, 18, 9, 0, 0, 0, 1.0f, 0.0f}, "transB padded");
  runCase(h, rng, {1, 9, 13, 96, 1, 1, 9, 96, 13, 0, 0, 0, -0.5f, 0.0f}, "both transposed");
  // Batched with strides and slack between items; B broadcast (stride 0).
  runCase(h, rng, {3, 7, 9, 5, 0, 0, 5, 9, 11, 40, 50, 80, 1.0f, 0.0f}, "batched strided");
  runCase(h, rng, {4, 7, 9, 5, 0, 1, 5, 5, 9, 35, 0, 63, 1.0f, 0.0f}, "batched B broadcast");
  // beta accumulation and alpha scaling.
  runCase(h, rng, {2, 17, 33, 7, 0, 0, 7, 33, 33, 119, 231, 561, 0.5f, 1.0f}, "beta 1");
  runCase(h, rng, {1, 33, 17, 96, 1, 0, 33, 17, 17, 0, 0, 0, 2.0f, 0.25f}, "beta 0.25");
  // Attention-like: many small heads (batch-parallel path).
  runCase(h, rng, {8, 33, 33, 16, 0, 1, 16, 16, 33, 33 * 16, 33 * 16, 33 * 33, 0.25f, 0.0f},
          "attention scores");
  runCase(h, rng, {8, 33, 16, 33, 0, 0, 33, 16, 16, 33 * 33, 33 * 16, 33 * 16, 1.0f, 0.0f},
          "attention values");
  // Large enough to be split into tiles across threads.
  runCase(h, rng, {1, 257, 190, 96, 0, 0, 96, 190, 190, 0, 0, 0, 1.0f, 0.0f}, "tiled");
  runCase(h, rng, {1, 96, 1031, 130, 1, 1, 96, 130, 1031, 0, 0, 0, 1.0f, 1.0f}, "tiled transposed");
  runCase(h, rng, {2, 190, 257, 64, 0, 1, 64, 64, 260, 190 * 64, 257 * 64, 190 * 260, 1.0f, 0.0f},
          "tiled batched");
  // beta = 0 overwrites C without reading it (a NaN there does not leak).
  runCase(h, rng, {1, 7, 17, 33, 0, 0, 33, 17, 17, 0, 0, 0, 1.0f, 0.0f}, "beta 0 over NaN", true);
  runCase(h, rng, {1, 129, 200, 64, 0, 0, 64, 200, 200, 0, 0, 0, 1.0f, 0.0f}, "beta 0 over NaN tiled", true);
  // alpha = 0 and K = 0: C = beta * C, A and B untouched.
  runCase(h, rng, {2, 5, 6, 7, 0, 0, 7, 6, 6, 35, 42, 30, 0.0f, 0.5f}, "alpha 0");
  runCase(h, rng, {2, 5, 6, 0, 0, 0, 1, 6, 6, 0, 0, 30, 1.0f, 0.5f}, "K 0");
  runCase(h, rng, {2, 5, 6, 0, 0, 0, 1, 6, 6, 0, 0, 30, 1.0f, 0.0f}, "K 0 beta 0");
  // Empty products.
  runCase(h, rng, {3, 0, 6, 7, 0, 0, 7, 6, 6, 0, 42, 0, 1.0f, 0.0f}, "M 0");
  runCase(h, rng, {0, 4, 6, 7, 0, 0, 7, 6, 6, 28, 42, 24, 1.0f, 0.0f}, "batch 0");
  // One row / one column.
  runCase(h, rng, {1, 1, 251, 33, 0, 0, 33, 251, 251, 0, 0, 0, 1.0f, 0.0f}, "single row");
  runCase(h, rng, {5, 33, 1, 17, 0, 0, 17, 1, 1, 33 * 17, 17, 33, 1.0f, 0.0f}, "single column");
  // Epilogues (bias, bias + residual, bias + GELU): the bits of MatMul +
  // Elementwise; small, odd and tiled shapes, D f32 and bf16, in place.
  for (auto [M, N, K] : {std::array<int64_t, 3>{7, 17, 33}, {257, 190, 96}, {3, 5, 0}})
    for (int64_t epi : {1, 2, 3})
      for (DType d : {DType::F32, DType::BF16})
        epilogueCase(h, rng, M, N, K, epi, d, false);
  epilogueCase(h, rng, 257, 190, 96, 2, DType::F32, true);
  for (DType d : {DType::F32, DType::BF16}) {
    epilogueCase(h, rng, 257, 190, 96, 3, d, false, DType::BF16);
    epilogueCase(h, rng, 3, 5, 0, 3, d, false, DType::BF16);
    for (DType aux : {DType::F32, DType::BF16}) {
      geluGradCase(h, rng, 257, 190, 96, aux, d);
      geluGradCase(h, rng, 3, 5, 0, aux, d);
    }
  }
  // The bias gradient (epilogue 5): the bits of MatMul + ReduceSum.
  for (DType ab : {DType::F32, DType::BF16})
    for (int acc : {0, 1}) {
      biasGradCase(h, rng, 7, 17, 33, ab, 1.0f, acc);
      biasGradCase(h, rng, 96, 190, 257, ab, acc ? 1.0f : 0.0f, acc);
    }
  biasGradCase(h, rng, 5, 9, 0, DType::F32, 1.0f, 1);
  biasGradCase(h, rng, 0, 9, 5, DType::BF16, 1.0f, 1);
  biasGradRefusals(h, rng);
  return finish("test_matmul");
}

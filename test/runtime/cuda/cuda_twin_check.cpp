//===- cuda_twin_check.cpp - Every CUDA kernel against its CPU twin -------===//
//
// For every opcode: random (never all-zero) inputs at odd sizes (7, 17, 33,
// 96, 251) and at the cpu-small model's sizes (hidden 256, vocab 8192, seq
// 128, micro-batch 8), outputs poisoned with NaN first (so an element the
// kernel forgot shows), one run on the CPU backend and one on the CUDA
// backend, every output compared:
//
//   rel = max |cuda - cpu| / max |cpu|  <=  1e-5  (fp32)
//
// bf16 kernels (Cast, bf16 MatMul, Attention on bf16) are held to rel 1e-2
// (tensor cores round probabilities to bf16 for their products).
// A NaN (or inf) must appear in both at the same place. No opcode needs a
// looser bound: the reductions accumulate in double on both sides, and
// cuBLAS runs plain fp32 (no TF32), so the differences are float rounding of
// differently ordered sums (measured well under 1e-6 on these sizes).
// Besides the twins: data errors (a bad id or target) must surface as an
// Error at synchronisation, and the kernels whose sums span blocks (LayerNorm
// dw/db, ReduceSum, GradNorm, cross entropy, EmbeddingGrad) must give the
// same bits when run twice.
//
// One line per case; on a failure, the worst element. Exit code 0 when all
// pass, 1 on any failure, 77 (ctest: skipped) when there is no CUDA device.
// --quick runs only the small cases (to run under compute-sanitizer);
// --only G1,G2 only the named groups (a rerun of the failed ones).
// --cases-on-cpu runs the cases with the CPU backend on both sides: no GPU
// needed, nothing learnt of the CUDA kernels, but every case is shown to be
// one the plan checker takes and the CPU runs (ctest runtime.cuda.twin_cases;
// every group but the two that reach into the CUDA backend itself).
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

#include "Jit.h"
#include "LtSearch.h"

#include <cstdlib>

using namespace twincheck;

namespace {

//===----------------------------------------------------------------------===//
// The cases
//===----------------------------------------------------------------------===//

void fillAndCopy(Rng &rng) {
  for (int64_t n : {7, 251, 1024 * 256}) {
    Case c = make("Fill " + dims({{"n", n}}), Op::Fill, {}, {-0.375f});
    c.outs = {c.out({n})};
    twin(c);
  }
  for (int64_t n : {7, 17, 251 * 33}) {
    Case c = make("Copy f32 " + dims({{"n", n}}), Op::Copy, {});
    c.ins = {c.f32({n}, rng.vec(n))};
    c.outs = {c.out({n})};
    twin(c);
    Case d = make("Copy i32 " + dims({{"n", n}}), Op::Copy, {});
    d.ins = {d.i32({n}, rng.ids(n, 1 << 30))};
    d.outs = {d.out({n}, DType::I32)};
    twin(d);
  }
  Case c = make("Copy in place n=33", Op::Copy, {});
  int x = c.inout({33}, rng.vec(33));
  c.ins = {x};
  c.outs = {c.same(x)};
  twin(c);
}

void matmul(Rng &rng) {
  struct G {
    int64_t batch, M, N, K;
    int ta, tb;
    int64_t padA, padB, padC; // extra leading-dim elements
    float alpha, beta;
    bool broadcastB; // strideB = 0
  };
  const G gs[] = {
      {1, 7, 17, 33, 0, 0, 0, 0, 0, 1.0f, 0.0f, false},
      {1, 17, 7, 33, 1, 0, 0, 0, 0, 1.0f, 0.0f, false},
      {1, 33, 17, 7, 0, 1, 0, 0, 0, 1.0f, 0.0f, false},
      {1, 96, 251, 33, 1, 1, 0, 0, 0, 0.5f, 0.0f, false},
      {1, 251, 96, 17, 0, 0, 3, 5, 7, 1.0f, 1.0f, false},
      {3, 17, 33, 7, 0, 1, 1, 2, 3, 1.0f, 0.0f, false},
      {5, 7, 17, 96, 1, 0, 0, 0, 0, -1.25f, 0.5f, false},
      {4, 33, 7, 17, 0, 0, 0, 0, 0, 1.0f, 0.0f, true},
      {2, 17, 33, 7, 0, 0, 0, 0, 0, 0.0f, 0.5f, false}, // alpha 0: C *= beta
      {2, 17, 33, 0, 0, 0, 0, 0, 0, 1.0f, 0.0f, false}, // K 0: C = 0
      // cpu-small: qkv projection, tied logits, attention scores/values.
      {1, 1024, 768, 256, 0, 0, 0, 0, 0, 1.0f, 0.0f, false},
      {1, 1024, 8192, 256, 0, 1, 0, 0, 0, 1.0f, 0.0f, false},
      {1, 256, 8192, 1024, 1, 0, 0, 0, 0, 1.0f, 1.0f, false},
      {32, 128, 128, 64, 0, 1, 0, 0, 0, 0.125f, 0.0f, false},
      {32, 128, 64, 128, 0, 0, 0, 0, 0, 1.0f, 0.0f, false},
  };
  for (const G &g : gs) {
    const int64_t aRows = g.ta ? g.K : g.M, aCols = g.ta ? g.M : g.K;
    const int64_t bRows = g.tb ? g.N : g.K, bCols = g.tb ? g.K : g.N;
    const int64_t lda = std::max<int64_t>(1, aCols) + g.padA;
    const int64_t ldb = std::max<int64_t>(1, bCols) + g.padB;
    const int64_t ldc = g.N + g.padC;
    const int64_t sA = aRows * lda + 3, sB = g.broadcastB ? 0 : bRows * ldb + 1;
    const int64_t sC = g.M * ldc + 2;
    const int64_t nA = std::max<int64_t>(1, sA * g.batch);
    const int64_t nB =
        std::max<int64_t>(1, g.broadcastB ? bRows * ldb : sB * g.batch);
    const int64_t nC = sC * g.batch;
    std::string label = "MatMul " +
                        dims({{"b", g.batch},
                              {"M", g.M},
                              {"N", g.N},
                              {"K", g.K},
                              {"tA", g.ta},
                              {"tB", g.tb}}) +
                        fmt(" a=%g", g.alpha) + fmt(" b=%g", g.beta) +
                        (g.padA + g.padB + g.padC ? " padded" : "") +
                        (g.broadcastB ? " sB=0" : "");
    Case c =
        make(label, Op::MatMul,
             {g.batch, g.M, g.N, g.K, g.ta, g.tb, lda, ldb, ldc, sA, sB, sC},
             {g.alpha, g.beta});
    c.ins = {c.f32({nA}, rng.vec(nA)), c.f32({nB}, rng.vec(nB))};
    // beta != 0 reads C; beta == 0 must overwrite even NaN. Either way the
    // gaps between C's rows must come back untouched (NaN or the data).
    c.outs = {g.beta != 0.0f ? c.inout({nC}, rng.vec(nC)) : c.out({nC})};
    twin(c);
  }
}

struct Micro {
  EwOp op;
  int dst, a, b;
};

std::vector<int64_t> ewProgram(int64_t n, const std::vector<int64_t> &periods,
                               int nout, const std::vector<Micro> &code) {
  std::vector<int64_t> i = {n, int64_t(periods.size()), nout};
  i.insert(i.end(), periods.begin(), periods.end());
  for (const Micro &m : code)
    i.insert(i.end(), {int64_t(m.op), m.dst, m.a, m.b});
  return i;
}

/// The shapes that pick the generated kernels' two variants: the vector one
/// (n % 4 == 0, 16-byte aligned operands, broadcast periods % 4 == 0; 4
/// elements per thread) and the scalar one (anything else).
void elementwiseVariants(Rng &rng, const std::string &via) {
  const auto program = ewProgram;
  // Vector: GPT-2's bias + GELU on [1365, 768] (about 2^20 elements), with
  // the 768-wide bias row read 16 bytes at a time.
  for (int64_t rows : {int64_t(1365), int64_t(2)}) {
    const int64_t cols = 768, n = rows * cols;
    Case c = make("Elementwise" + via + " vector bias+gelu " +
                      dims({{"rows", rows}, {"cols", cols}}),
                  Op::Elementwise,
                  program(n, {n, cols}, 2,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::Add, 2, 0, 1},
                           {EwOp::Gelu, 3, 2, 0},
                           {EwOp::Store, 3, 0, 0},
                           {EwOp::Store, 2, 1, 0}}));
    c.ins = {c.f32({n}, rng.vec(n, -6, 6)), c.f32({cols}, rng.vec(cols))};
    c.outs = {c.out({n}), c.out({n})};
    twin(c);
  }
  // Vector, bf16 output (8-byte stores of 4 values) next to an f32 one.
  {
    const int64_t cols = 3072, n = 64 * cols;
    Case c = make("Elementwise" + via + " vector gelu f32+bf16 " +
                      dims({{"n", n}}),
                  Op::Elementwise,
                  program(n, {n, cols}, 2,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::Add, 2, 0, 1},
                           {EwOp::Gelu, 3, 2, 0},
                           {EwOp::Store, 2, 0, 0},
                           {EwOp::Store, 3, 1, 0}}));
    c.ins = {c.f32({n}, rng.vec(n, -3, 3)), c.f32({cols}, rng.vec(cols))};
    c.outs = {c.out({n}), c.out({n}, DType::BF16)};
    c.tol = 1e-2; // one bf16 rounding of values that may differ in the ulp
    twin(c);
  }
  // bf16 inputs (a bf16 product's result, widened on load): GPT-2's GELU
  // gradient with dy bf16 and a bf16 result (vector: 8-byte loads; odd n:
  // the scalar kernel), and a bf16 broadcast row and scalar into f32.
  for (int64_t n : {int64_t(64) * 3072, int64_t(251) * 7}) {
    Case c = make("Elementwise" + via + " gelu-grad bf16 dy " +
                      dims({{"n", n}}),
                  Op::Elementwise,
                  program(n, {n, n}, 1,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::GeluGrad, 2, 0, 1},
                           {EwOp::Store, 2, 0, 0}}));
    c.ins = {c.f32({n}, rng.vec(n, -8, 8)), c.bf16({n}, rng.vec(n))};
    c.outs = {c.out({n}, DType::BF16)};
    c.tol = 1e-2; // one bf16 rounding of values that may differ in the ulp
    twin(c);
  }
  {
    const int64_t cols = 96, n = 33 * cols;
    Case c = make("Elementwise" + via + " bf16 row and scalar " +
                      dims({{"n", n}}),
                  Op::Elementwise,
                  program(n, {n, cols, 1}, 1,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::Load, 2, 2, 0},
                           {EwOp::Add, 3, 0, 1},
                           {EwOp::Mul, 3, 3, 2},
                           {EwOp::Store, 3, 0, 0}}));
    c.ins = {c.bf16({n}, rng.vec(n)), c.bf16({cols}, rng.vec(cols)),
             c.bf16({1}, {-1.5f})};
    c.outs = {c.out({n})};
    twin(c);
  }
  // Vector, in place: the residual add x += y (output 0 is input 0), and a
  // scalar factor with NaNs for max/min.
  {
    const int64_t n = 768 * 64;
    Case c = make("Elementwise" + via + " vector residual in place " +
                      dims({{"n", n}}),
                  Op::Elementwise,
                  program(n, {n, n, 1}, 1,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::Load, 2, 2, 0},
                           {EwOp::Mul, 3, 1, 2},
                           {EwOp::Max, 4, 0, 3},
                           {EwOp::Min, 5, 3, 0},
                           {EwOp::Add, 0, 4, 5},
                           {EwOp::Store, 0, 0, 0}}));
    std::vector<float> y = rng.vec(n);
    y[5] = kNaN;
    y[n - 2] = kNaN;
    int x = c.inout({n}, rng.vec(n));
    c.ins = {x, c.f32({n}, y), c.f32({1}, {0.625f})};
    c.outs = {c.same(x)};
    twin(c);
  }
  // Scalar kernel: n % 4 == 0 but an odd broadcast period (251); n not a
  // multiple of 4 with a period that is (1023 = 3 * 341, period 341 odd;
  // 4 * 251 + 2 with period 2).
  for (auto [n, period] : {std::pair<int64_t, int64_t>{4 * 251, 251},
                           {1023, 341},
                           {4 * 251 + 2, 2}}) {
    Case c = make("Elementwise" + via + " scalar-path bias*x " +
                      dims({{"n", n}, {"period", period}}),
                  Op::Elementwise,
                  program(n, {n, period}, 1,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::Mul, 2, 0, 1},
                           {EwOp::Sub, 2, 2, 1},
                           {EwOp::Store, 2, 0, 0}}));
    c.ins = {c.f32({n}, rng.vec(n)), c.f32({period}, rng.vec(period))};
    c.outs = {c.out({n})};
    twin(c);
  }
  // Scalar kernel: everything a multiple of 4, but one input starts 4 bytes
  // into its buffer (not 16-byte aligned), and an output 8 bytes in.
  {
    const int64_t n = 4096;
    Case c = make("Elementwise" + via + " scalar-path misaligned " +
                      dims({{"n", n}}),
                  Op::Elementwise,
                  program(n, {n, n}, 1,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::GeluGrad, 2, 0, 1},
                           {EwOp::Store, 2, 0, 0}}));
    int x = c.f32({n + 1}, rng.vec(n + 1, -5, 5));
    int xs = c.view(x, {n});
    c.ts[size_t(xs)].v.offset = 4;
    int o = c.out({n + 2});
    int os = c.view(o, {n});
    c.ts[size_t(os)].v.offset = 8;
    c.ins = {xs, c.f32({n}, rng.vec(n))};
    c.outs = {os};
    twin(c);
  }
}

void elementwise(Rng &rng) {
  const auto program = ewProgram;
  for (int64_t rows : {1, 7, 33, 1024}) {
    for (int64_t cols : {17, 96, 251}) {
      if (rows == 1024 && cols != 96)
        continue;
      const int64_t n = rows * cols;
      // bias add + GELU, two outputs.
      {
        Case c = make("Elementwise bias+gelu " +
                          dims({{"rows", rows}, {"cols", cols}}),
                      Op::Elementwise,
                      program(n, {n, cols}, 2,
                              {{EwOp::Load, 0, 0, 0},
                               {EwOp::Load, 1, 1, 0},
                               {EwOp::Add, 2, 0, 1},
                               {EwOp::Gelu, 3, 2, 0},
                               {EwOp::Store, 3, 0, 0},
                               {EwOp::Store, 2, 1, 0}}));
        c.ins = {c.f32({n}, rng.vec(n, -6, 6)), c.f32({cols}, rng.vec(cols))};
        c.outs = {c.out({n}), c.out({n})};
        twin(c);
      }
      // GELU gradient.
      {
        Case c =
            make("Elementwise gelu-grad " + dims({{"n", n}}), Op::Elementwise,
                 program(n, {n, n}, 1,
                         {{EwOp::Load, 0, 0, 0},
                          {EwOp::Load, 1, 1, 0},
                          {EwOp::GeluGrad, 2, 0, 1},
                          {EwOp::Store, 2, 0, 0}}));
        c.ins = {c.f32({n}, rng.vec(n, -8, 8)), c.f32({n}, rng.vec(n))};
        c.outs = {c.out({n})};
        twin(c);
      }
    }
  }
  // Every micro-op once, on positive inputs (log, sqrt) and a constant.
  for (int64_t n : {7, 251, 96 * 33, 262144}) {
    Case c = make(
        "Elementwise all-ops " + dims({{"n", n}}), Op::Elementwise,
        program(n, {n, n}, 2, {{EwOp::Load, 0, 0, 0},   {EwOp::Load, 1, 1, 0},
                               {EwOp::Exp, 2, 1, 0},    {EwOp::Log, 3, 0, 0},
                               {EwOp::Tanh, 4, 1, 0},   {EwOp::Sqrt, 5, 0, 0},
                               {EwOp::Rsqrt, 6, 0, 0},  {EwOp::Neg, 7, 1, 0},
                               {EwOp::Square, 8, 1, 0}, {EwOp::Add, 9, 2, 3},
                               {EwOp::Sub, 10, 4, 5},   {EwOp::Mul, 11, 6, 7},
                               {EwOp::Div, 12, 8, 2},   {EwOp::Max, 13, 9, 10},
                               {EwOp::Min, 14, 11, 12}, {EwOp::Const, 15, 0, 0},
                               {EwOp::Mul, 13, 13, 15}, {EwOp::Add, 13, 13, 14},
                               {EwOp::Store, 13, 0, 0}, {EwOp::Gelu, 15, 1, 0},
                               {EwOp::Store, 15, 1, 0}}));
    c.instr.f = {0.75f};
    c.ins = {c.f32({n}, rng.vec(n, 0.05, 3.0)), c.f32({n}, rng.vec(n, -4, 4))};
    c.outs = {c.out({n}), c.out({n})};
    twin(c);
  }
  // Scalar broadcast, in place (the output is the first input), and NaNs
  // that max/min must propagate.
  for (int64_t n : {17, 251 * 7}) {
    Case c = make("Elementwise scalar, in place, NaN " + dims({{"n", n}}),
                  Op::Elementwise,
                  program(n, {n, 1, n}, 1,
                          {{EwOp::Load, 0, 0, 0},
                           {EwOp::Load, 1, 1, 0},
                           {EwOp::Mul, 2, 0, 1},
                           {EwOp::Load, 3, 2, 0},
                           {EwOp::Max, 4, 2, 3},
                           {EwOp::Min, 5, 3, 2},
                           {EwOp::Add, 6, 4, 5},
                           {EwOp::Store, 6, 0, 0}}));
    std::vector<float> y = rng.vec(n);
    y[3] = kNaN;
    int x = c.inout({n}, rng.vec(n));
    c.ins = {x, c.f32({1}, {-1.5f}), c.f32({n}, y)};
    c.outs = {c.same(x)};
    twin(c);
  }
  elementwiseVariants(rng, "");
  // The cases above ran on generated kernels only if the backend's compiler
  // works on this machine (else it says so once and interprets): the same
  // EwJit on its own must compile and load one.
  {
    const int64_t n = 4 * 768;
    Instr in;
    in.op = Op::Elementwise;
    in.i = ewProgram(n, {n, 768}, 1,
                     {{EwOp::Load, 0, 0, 0},
                      {EwOp::Load, 1, 1, 0},
                      {EwOp::Add, 2, 0, 1},
                      {EwOp::Store, 2, 0, 0}});
    try {
      rt::gpu::EwJit jit(0);
      const rt::gpu::EwJit::Kernels *k = jit.get(in, {false, false}, {false});
      report(k && k->vec && k->scalar,
             "Elementwise generated kernels (NVRTC, library loader)",
             k ? "compiled and loaded: the cases above ran on them"
               : "unusable: the cases above ran on the interpreter");
    } catch (const std::exception &e) {
      report(false, "Elementwise generated kernels (NVRTC, library loader)",
             std::string("threw: ") + e.what());
    }
  }
  // The interpreter kernel (what runs when NVRTC cannot), on a backend of
  // its own: the same variant cases.
  setenv("MEGA_CUDA_NVRTC", "0", 1);
  std::unique_ptr<Backend> interp = rt::createCudaBackend(0);
  unsetenv("MEGA_CUDA_NVRTC");
  struct Restore { // even when a case throws: interp dies first
    Backend *generated;
    ~Restore() { gCuda = generated; }
  } restore{gCuda};
  gCuda = interp.get();
  elementwiseVariants(rng, " (interpreter)");
}

void reduceSum(Rng &rng) {
  // inner % 4 == 0 runs the float4 kernel (768, 2304 and 3072: GPT-2's
  // bias gradients; 12: fewer vectors than a block's columns; 36 with 251
  // rows: chunks and row lanes that do not divide evenly); the others the
  // element one.
  const int64_t shapes[][2] = {{7, 17},     {251, 33},  {17, 251},
                               {1024, 768}, {3000, 7},  {0, 5},
                               {4096, 2304}, {33, 3072}, {100, 12},
                               {251, 36},   {0, 8}};
  // Each also with a bf16 input (the bias gradient summed from the
  // gradient's bf16 copy): widened exactly, so the f32 tolerance holds.
  for (DType t : {DType::F32, DType::BF16})
    for (const auto &s : shapes)
      for (int acc : {0, 1}) {
        const int64_t outer = s[0], inner = s[1];
        Case c = make("ReduceSum " + std::string(name(t)) + " " +
                          dims({{"outer", outer},
                                {"inner", inner},
                                {"acc", acc}}),
                      Op::ReduceSum, {outer, inner, acc});
        const std::vector<float> x = rng.vec(outer * inner);
        c.ins = {t == DType::BF16 ? c.bf16({outer, inner}, x)
                                  : c.f32({outer, inner}, x)};
        c.outs = {acc ? c.inout({inner}, rng.vec(inner)) : c.out({inner})};
        twin(c);
        if ((outer == 1024 || outer == 251) && !acc)
          deterministic(c);
      }
  // inner % 4 == 0 but x 4 bytes into its buffer: the element kernel.
  {
    const int64_t outer = 300, inner = 768;
    Case c = make("ReduceSum misaligned x " +
                      dims({{"outer", outer}, {"inner", inner}}),
                  Op::ReduceSum, {outer, inner, 0});
    c.ins = {misalignedInput(c, rng, outer * inner, 1)};
    c.outs = {c.out({inner})};
    twin(c);
  }
  // bf16, 2 bytes into its buffer: 8-byte vectors would be misaligned.
  {
    const int64_t outer = 300, inner = 768;
    Case c = make("ReduceSum bf16 misaligned x " +
                      dims({{"outer", outer}, {"inner", inner}}),
                  Op::ReduceSum, {outer, inner, 0});
    const int whole = c.bf16({outer * inner + 1}, rng.vec(outer * inner + 1));
    const int v = c.view(whole, {outer * inner});
    c.ts[size_t(v)].v.offset = 2;
    c.ins = {v};
    c.outs = {c.out({inner})};
    twin(c);
  }
}

void softmax(Rng &rng) {
  struct S {
    int64_t rows, cols;
    int causal;
    int64_t seq;
    float scale;
  };
  const S ss[] = {{7, 17, 0, 0, 1.0f},         {99, 33, 1, 33, 0.125f},
                  {17, 251, 0, 0, -0.5f},      {98, 7, 1, 7, 2.0f},
                  {4096, 128, 1, 128, 0.125f}, {33, 96, 0, 0, 0.0f}};
  for (const S &s : ss) {
    const int64_t n = s.rows * s.cols;
    for (int inPlace : {0, 1}) {
      Case c =
          make("Softmax " +
                   dims({{"rows", s.rows},
                         {"cols", s.cols},
                         {"causal", s.causal},
                         {"seq", s.seq}}) +
                   fmt(" scale=%g", s.scale) + (inPlace ? " in place" : ""),
               Op::Softmax, {s.rows, s.cols, s.causal, s.seq}, {s.scale});
      int x = inPlace ? c.inout({s.rows, s.cols}, rng.vec(n, -8, 8))
                      : c.f32({s.rows, s.cols}, rng.vec(n, -8, 8));
      c.ins = {x};
      c.outs = {inPlace ? c.same(x) : c.out({s.rows, s.cols})};
      twin(c);
    }
    for (int inPlace : {0, 1, 2}) { // dx = y, dx = dy
      Case c =
          make("SoftmaxGrad " + dims({{"rows", s.rows}, {"cols", s.cols}}) +
                   fmt(" scale=%g", s.scale) +
                   (inPlace == 1   ? " dx=y"
                    : inPlace == 2 ? " dx=dy"
                                   : ""),
               Op::SoftmaxGrad, {s.rows, s.cols}, {s.scale});
      int y = inPlace == 1 ? c.inout({s.rows, s.cols}, rng.vec(n, 0, 1))
                           : c.f32({s.rows, s.cols}, rng.vec(n, 0, 1));
      int dy = inPlace == 2 ? c.inout({s.rows, s.cols}, rng.vec(n))
                            : c.f32({s.rows, s.cols}, rng.vec(n));
      c.ins = {y, dy};
      c.outs = {inPlace == 1   ? c.same(y)
                : inPlace == 2 ? c.same(dy)
                               : c.out({s.rows, s.cols})};
      twin(c);
    }
  }
}

void crossEntropy(Rng &rng) {
  // V % 4 == 0 reads float4s (8192; 50304: GPT-2's padded vocabulary; 36:
  // fewer vectors than threads, most threads see no element); the others
  // one element per access.
  const int64_t shapes[][2] = {{7, 17},      {33, 251},  {96, 7},
                               {1024, 8192}, {3, 50257}, {0, 17},
                               {64, 50304},  {5, 36}};
  for (const auto &s : shapes) {
    const int64_t rows = s[0], V = s[1], n = rows * V;
    std::vector<float> logits = rng.vec(n, -6, 6);
    std::vector<int32_t> t = rng.ids(rows, V);
    {
      Case c = make("CrossEntropy " + dims({{"rows", rows}, {"V", V}}),
                    Op::CrossEntropy, {rows, V});
      c.ins = {c.f32({rows, V}, logits), c.i32({rows}, t)};
      c.outs = {c.out({}), c.out({rows})};
      twin(c);
      if (rows == 1024)
        deterministic(c);
    }
    // lse consistent with the logits (as the forward leaves it).
    std::vector<float> lse(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double m = -INFINITY, s2 = 0;
      for (int64_t j = 0; j < V; ++j)
        m = std::max(m, double(logits[size_t(r * V + j)]));
      for (int64_t j = 0; j < V; ++j)
        s2 += std::exp(double(logits[size_t(r * V + j)]) - m);
      lse[size_t(r)] = float(m + std::log(s2));
    }
    for (int inPlace : {0, 1}) {
      Case c = make("CrossEntropyGrad " + dims({{"rows", rows}, {"V", V}}) +
                        (inPlace ? " in place" : ""),
                    Op::CrossEntropyGrad, {rows, V});
      int x = inPlace ? c.inout({rows, V}, logits) : c.f32({rows, V}, logits);
      c.ins = {x, c.i32({rows}, t), c.f32({rows}, lse), c.f32({}, {0.7f})};
      c.outs = {inPlace ? c.same(x) : c.out({rows, V})};
      twin(c);
      // Both in one kernel (mega-fuse-loss).
      Case f = make("CrossEntropyWithGrad " +
                        dims({{"rows", rows}, {"V", V}}) +
                        (inPlace ? " in place" : ""),
                    Op::CrossEntropyWithGrad, {rows, V});
      int fx = inPlace ? f.inout({rows, V}, logits) : f.f32({rows, V}, logits);
      f.ins = {fx, f.i32({rows}, t), f.f32({}, {0.7f})};
      f.outs = {f.out({}), f.out({rows}), inPlace ? f.same(fx) : f.out({rows, V})};
      twin(f);
      if (rows == 1024 && inPlace)
        deterministic(f);
      // A row block of a batch of 3 rows + 2 (mega-chunk-loss), adding its
      // share to the loss already there (acc 1) or not.
      if (rows > 0) {
        const int64_t acc = inPlace, meanRows = 3 * rows + 2;
        Case b = make("CrossEntropyWithGrad row block " +
                          dims({{"rows", rows}, {"V", V},
                                {"mean_rows", meanRows}, {"acc", acc}}),
                      Op::CrossEntropyWithGrad, {rows, V, meanRows, acc});
        int bx = inPlace ? b.inout({rows, V}, logits) : b.f32({rows, V}, logits);
        b.ins = {bx, b.i32({rows}, t), b.f32({}, {0.7f})};
        b.outs = {acc ? b.inout({}, {2.5f}) : b.out({}), b.out({rows}),
                  inPlace ? b.same(bx) : b.out({rows, V})};
        twin(b);
      }
    }
  }
  // V % 4 == 0 but the logits 4 bytes into their buffer: the element
  // kernels (the gradient also in place).
  {
    const int64_t rows = 9, V = 8192, n = rows * V;
    Case c = make("CrossEntropy misaligned logits " +
                      dims({{"rows", rows}, {"V", V}}),
                  Op::CrossEntropy, {rows, V});
    c.ins = {misalignedInput(c, rng, n, 1, -6, 6), c.i32({rows}, rng.ids(rows, V))};
    c.outs = {c.out({}), c.out({rows})};
    twin(c);
    Case g = make("CrossEntropyGrad misaligned logits in place " +
                      dims({{"rows", rows}, {"V", V}}),
                  Op::CrossEntropyGrad, {rows, V});
    int x = misalignedInput(g, rng, n, 1, -6, 6);
    g.compare.push_back(x);
    std::vector<float> lse(static_cast<size_t>(rows), 9.5f);
    g.ins = {x, g.i32({rows}, rng.ids(rows, V)), g.f32({rows}, lse),
             g.f32({}, {0.7f})};
    g.outs = {g.same(x)};
    twin(g);
  }
  Case bad =
      make("CrossEntropy target out of range", Op::CrossEntropy, {7, 17});
  std::vector<int32_t> t = rng.ids(7, 17);
  t[4] = 17;
  bad.ins = {bad.f32({7, 17}, rng.vec(7 * 17)), bad.i32({7}, t)};
  bad.outs = {bad.out({}), bad.out({7})};
  dataError(bad, "target 17 of row 4 is outside the vocabulary [0, 17)");
  Case badg = make("CrossEntropyGrad target out of range", Op::CrossEntropyGrad,
                   {7, 17});
  t[4] = -3;
  badg.ins = {badg.f32({7, 17}, rng.vec(7 * 17)), badg.i32({7}, t),
              badg.f32({7}, rng.vec(7)), badg.f32({}, {1.0f})};
  badg.outs = {badg.out({7, 17})};
  dataError(badg, "target -3 of row 4 is outside the vocabulary [0, 17)");
  Case badf = make("CrossEntropyWithGrad target out of range",
                   Op::CrossEntropyWithGrad, {7, 17});
  badf.ins = {badf.f32({7, 17}, rng.vec(7 * 17)), badf.i32({7}, t),
              badf.f32({}, {1.0f})};
  badf.outs = {badf.out({}), badf.out({7}), badf.out({7, 17})};
  dataError(badf, "target -3 of row 4 is outside the vocabulary [0, 17)");
}

void embedding(Rng &rng) {
  const int64_t shapes[][3] = {
      {7, 17, 33},       {251, 96, 7},     {251, 7, 17}, {33, 251, 96},
      {1024, 8192, 256}, {1024, 128, 256}, {0, 5, 3}};
  for (const auto &s : shapes) {
    const int64_t rows = s[0], V = s[1], H = s[2];
    std::vector<int32_t> ids = rng.ids(rows, V);
    for (int acc : {0, 1}) {
      Case c =
          make("Embedding " +
                   dims({{"rows", rows}, {"V", V}, {"H", H}, {"acc", acc}}),
               Op::Embedding, {rows, V, H, acc});
      c.ins = {c.f32({V, H}, rng.vec(V * H)), c.i32({rows}, ids)};
      c.outs = {acc ? c.inout({rows, H}, rng.vec(rows * H)) : c.out({rows, H})};
      twin(c);
      Case g =
          make("EmbeddingGrad " +
                   dims({{"rows", rows}, {"V", V}, {"H", H}, {"acc", acc}}),
               Op::EmbeddingGrad, {rows, V, H, acc});
      g.ins = {g.f32({rows, H}, rng.vec(rows * H)), g.i32({rows}, ids)};
      g.outs = {acc ? g.inout({V, H}, rng.vec(V * H)) : g.out({V, H})};
      twin(g);
      if (rows == 1024 && V == 128 && !acc)
        deterministic(g);
    }
  }
  std::vector<int32_t> ids = rng.ids(7, 17);
  ids[5] = 17;
  Case bad = make("Embedding id out of range", Op::Embedding, {7, 17, 3, 0});
  bad.ins = {bad.f32({17, 3}, rng.vec(51)), bad.i32({7}, ids)};
  bad.outs = {bad.out({7, 3})};
  dataError(bad, "id 17 of row 5 is outside the table [0, 17)");
  ids[5] = -1;
  Case badg =
      make("EmbeddingGrad id out of range", Op::EmbeddingGrad, {7, 17, 3, 0});
  badg.ins = {badg.f32({7, 3}, rng.vec(21)), badg.i32({7}, ids)};
  badg.outs = {badg.out({17, 3})};
  dataError(badg, "id -1 of row 5 is outside the table [0, 17)");
}

void transpose(Rng &rng) {
  struct T {
    std::vector<int64_t> d, p;
    DType dt, out;    // out: the output dtype (bf16: a cast folded in)
    int64_t inOff = 0, outOff = 0; // elements the views start late by
  };
  const DType F = DType::F32, I = DType::I32, H = DType::BF16;
  // The vector kernels take an innermost output dim that is contiguous in
  // the input and a multiple of 4 long, with aligned views: the heads
  // cases, and GPT-2's q|k|v split, head merge and its gradient at batch 2
  // (GPT-2 runs batch 16: the same strides). The rest (a transposed
  // innermost dim, 33 or 17 or 5 long, views 4 or 2 bytes late) run the
  // element kernels.
  const T ts[] = {
      {{17, 33}, {1, 0}, F, F},
      {{7, 17, 33}, {2, 0, 1}, F, F},
      {{7, 17, 33}, {1, 0, 2}, I, I},
      {{8, 128, 4, 64}, {0, 2, 1, 3}, F, F}, // cpu-small heads
      {{2, 32, 3, 4, 16}, {2, 0, 3, 1, 4}, F, F},
      {{3, 1, 7, 1, 17, 5}, {4, 2, 5, 0, 3, 1}, F, F},
      {{251, 96}, {0, 1}, F, F},
      {{2, 1024, 3, 12, 64}, {2, 0, 3, 1, 4}, F, H},
      {{2, 12, 1024, 64}, {0, 2, 1, 3}, F, H},
      {{2, 12, 1024, 64}, {0, 2, 1, 3}, F, F},
      {{3, 2, 12, 1024, 64}, {1, 3, 0, 2, 4}, F, F},
      {{6, 10, 8}, {1, 0, 2}, I, I},
      {{6, 10, 8}, {1, 0, 2}, F, H},
      {{4, 9, 12}, {1, 0, 2}, F, F, 1, 0},
      {{4, 9, 12}, {1, 0, 2}, F, H, 0, 1},
      {{4, 9, 12}, {1, 0, 2}, F, F, 0, 1},
      {{5, 7, 3}, {1, 0, 2}, F, H},
      // bf16 -> bf16 (a value its producer rounded): 8-byte vectors, and
      // the element kernel for a transposed innermost dim or a late view.
      {{2, 12, 1024, 64}, {0, 2, 1, 3}, H, H},
      {{6, 10, 8}, {1, 0, 2}, H, H},
      {{7, 17, 33}, {2, 0, 1}, H, H},
      {{4, 9, 12}, {1, 0, 2}, H, H, 1, 0},
      {{4, 9, 12}, {1, 0, 2}, H, H, 0, 2},
  };
  for (const T &t : ts) {
    const int rank = int(t.d.size());
    std::vector<int64_t> i = {rank};
    i.insert(i.end(), t.d.begin(), t.d.end());
    i.insert(i.end(), t.p.begin(), t.p.end());
    std::vector<int64_t> outShape;
    for (int64_t p : t.p)
      outShape.push_back(t.d[size_t(p)]);
    std::string label = "Transpose [";
    for (int k = 0; k < rank; ++k)
      label.append(k ? "," : "").append(std::to_string(t.d[size_t(k)]));
    label += "] perm [";
    for (int k = 0; k < rank; ++k)
      label.append(k ? "," : "").append(std::to_string(t.p[size_t(k)]));
    label += std::string("] ") + plan::dtypeName(t.dt);
    if (t.out != t.dt)
      label += std::string("->") + plan::dtypeName(t.out);
    if (t.inOff)
      label += " in+" + std::to_string(t.inOff);
    if (t.outOff)
      label += " out+" + std::to_string(t.outOff);
    Case c = make(label, Op::Transpose, i);
    const int64_t n = numel(t.d);
    int x = t.dt == F   ? c.f32({n + t.inOff}, rng.vec(n + t.inOff))
            : t.dt == H ? c.bf16({n + t.inOff}, rng.vec(n + t.inOff))
                        : c.i32({n + t.inOff}, rng.ids(n + t.inOff, 1 << 30));
    int xv = c.view(x, t.d);
    c.ts[size_t(xv)].v.offset = t.inOff * plan::dtypeSize(t.dt);
    int y = c.out({n + t.outOff}, t.out);
    int yv = c.view(y, outShape);
    c.ts[size_t(yv)].v.offset = t.outOff * plan::dtypeSize(t.out);
    c.ins = {xv};
    c.outs = {yv};
    c.tol = 0.0; // a gather (and one rounding) on both sides
    twin(c);
  }
}

void optimizer(Rng &rng) {
  // GradNorm over tensors of odd sizes (some span several 16384-blocks).
  const std::vector<int64_t> sizes = {7, 17, 33, 96 * 251, 16384 * 2 + 5, 251};
  for (float maxNorm : {1.0f, 0.0f, 1e6f}) {
    Case c = make(fmt("GradNorm 6 tensors maxNorm=%g", maxNorm), Op::GradNorm,
                  {}, {maxNorm});
    for (int64_t n : sizes)
      c.ins.push_back(c.f32({n}, rng.vec(n)));
    c.outs = {c.out({}), c.out({})};
    twin(c);
    if (maxNorm == 1.0f)
      deterministic(c);
  }
  {
    Case c =
        make("GradNorm 80 tensors (two launches)", Op::GradNorm, {}, {1.0f});
    for (int k = 0; k < 80; ++k) {
      int64_t n = 1 + (k * 37) % 300;
      c.ins.push_back(c.f32({n}, rng.vec(n)));
    }
    c.outs = {c.out({}), c.out({})};
    twin(c);
  }
  {
    Case c = make("GradNorm with a NaN (coef NaN)", Op::GradNorm, {}, {1.0f});
    std::vector<float> g = rng.vec(33);
    g[7] = kNaN;
    c.ins = {c.f32({17}, rng.vec(17)), c.f32({33}, g)};
    c.outs = {c.out({}), c.out({})};
    twin(c);
  }
  for (int64_t n : {7, 251, 262144})
    for (float step : {1.0f, 10.0f})
      for (float coef : {0.5f, kNaN}) {
        Case c = make("AdamW " + dims({{"n", n}, {"step", int64_t(step)}}) +
                          (std::isnan(coef) ? " coef=NaN (skip)" : " coef=0.5"),
                      Op::AdamW, {}, {0.9f, 0.95f, 1e-8f, 0.1f});
        c.ins = {c.inout({n}, rng.vec(n)),
                 c.f32({n}, rng.vec(n)),
                 c.inout({n}, rng.vec(n, -0.1, 0.1)),
                 c.inout({n}, rng.vec(n, 0, 0.01)),
                 c.f32({}, {3e-4f}),
                 c.f32({}, {step}),
                 c.f32({}, {coef})};
        twin(c);
      }
  // AdamWMulti: tensors of odd sizes, one of exactly a chunk and one just
  // past it, each with its own weight decay; the grads (random, non-zero)
  // are compared too: zeroed with zero_grads = 1 (also on a NaN coef),
  // untouched otherwise.
  const std::vector<int64_t> multi = {7, 251, 8192, 8193, 1, 262144, 4096};
  for (int zero : {0, 1})
    for (float coef : {0.5f, kNaN}) {
      const int64_t n = int64_t(multi.size());
      std::vector<float> f = {0.9f, 0.95f, 1e-8f};
      for (int64_t k = 0; k < n; ++k)
        f.push_back(k % 2 ? 0.0f : 0.1f * float(k + 1));
      Case c = make("AdamWMulti " + dims({{"tensors", n}, {"zero_grads", zero}}) +
                        (std::isnan(coef) ? " coef=NaN (skip)" : " coef=0.5"),
                    Op::AdamWMulti, {n, zero}, f);
      c.ins = {c.f32({}, {3e-4f}), c.f32({}, {7.0f}), c.f32({}, {coef})};
      for (int64_t sz : multi) {
        c.ins.push_back(c.inout({sz}, rng.vec(sz)));
        c.ins.push_back(c.inout({sz}, rng.vec(sz)));
        c.ins.push_back(c.inout({sz}, rng.vec(sz, -0.1, 0.1)));
        c.ins.push_back(c.inout({sz}, rng.vec(sz, 0, 0.01)));
      }
      twin(c);
      if (zero && !std::isnan(coef))
        deterministic(c);
    }
  for (int64_t n : {7, 251, 262144})
    for (float coef : {0.5f, kNaN}) {
      Case c = make("Sgd " + dims({{"n", n}}) +
                        (std::isnan(coef) ? " coef=NaN (skip)" : " coef=0.5"),
                    Op::Sgd, {}, {0.01f});
      c.ins = {c.inout({n}, rng.vec(n)), c.f32({n}, rng.vec(n)),
               c.f32({}, {0.1f}), c.f32({}, {coef})};
      twin(c);
    }
}

void refusals(Rng &rng) {
  Case c = make("MatMul lda too small", Op::MatMul,
                {1, 7, 17, 33, 0, 0, 32, 17, 17, 0, 0, 0}, {1.0f, 0.0f});
  c.ins = {c.f32({7 * 33}, rng.vec(7 * 33)),
           c.f32({33 * 17}, rng.vec(33 * 17))};
  c.outs = {c.out({7 * 17})};
  refusal(c);
  Case d =
      make("LayerNorm output overlapping w", Op::LayerNorm, {7, 17}, {1e-5f});
  int w = d.f32({17}, rng.vec(17));
  d.ins = {d.f32({7, 17}, rng.vec(7 * 17)), w, d.f32({17}, rng.vec(17))};
  d.outs = {d.out({7, 17}), d.view(w, {7}), d.out({7})};
  refusal(d);
}

} // namespace

int main(int argc, char **argv) {
  bool casesOnCpu = false;
  std::string only; // ",g1,g2,": the groups to run; empty: all
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--quick") {
      gQuick = true;
    } else if (a == "--cases-on-cpu") {
      casesOnCpu = true;
    } else if (a == "--only" && k + 1 < argc) {
      only = "," + std::string(argv[++k]) + ",";
    } else {
      std::printf("usage: cuda_twin_check [--quick] [--cases-on-cpu] "
                  "[--only GROUP[,GROUP...]]\n");
      return 2;
    }
  }
  std::unique_ptr<Backend> cpu, cuda;
  bool viaCudnn = false;
  if (casesOnCpu) {
    cpu = rt::createCpuBackend(0);
    cuda = rt::createCpuBackend(0);
    std::printf("cuda_twin_check --cases-on-cpu: the CPU backend on both "
                "sides (the cases, not the CUDA kernels)\n");
  } else {
    std::string reason;
    if (rt::gpu::deviceCount(reason) <= 0) {
      std::printf("SKIP: no CUDA device (%s)\n", reason.c_str());
      return 77;
    }
    try {
      cpu = rt::createCpuBackend(0);
      cuda = rt::createCudaBackend(0);
    } catch (const std::exception &e) {
      std::printf("FAIL  creating the backends: %s\n", e.what());
      return 1;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
      std::printf("cuda_twin_check on %s (sm_%d%d)\n", prop.name, prop.major,
                  prop.minor);
    // By default bf16 attention runs on cuDNN where it can; mega's own
    // kernels then get the attention group again below.
    const std::string choice = cuda->kernelChoices();
    std::printf("%s\n", choice.c_str());
    viaCudnn = choice.find("cuDNN") != std::string::npos &&
               choice.find("mega's kernels (") == std::string::npos;
  }
  gCpu = cpu.get();
  gCuda = cuda.get();
  gCudnnAttention = viaCudnn;
  auto wanted = [&](const std::string &g) {
    return only.empty() || only.find("," + g + ",") != std::string::npos;
  };
  Rng rng(20240601);
  const std::pair<const char *, std::function<void(Rng &)>> groups[] = {
      {"fill/copy", fillAndCopy},   {"matmul", matmul},
      {"elementwise", elementwise}, {"reduce", reduceSum},
      {"layernorm", layerNorm},     {"softmax", softmax},
      {"loss", crossEntropy},       {"embedding", embedding},
      {"transpose", transpose},     {"optimizer", optimizer},
      {"vocab parallel", vocabParallel},
      {"refusals", refusals},       {"cast/bf16 matmul", castAndBf16MatMul},
      {"attention", attention},     {"graphs", graphs},
      {"matmul epilogue", matmulEpilogue},
      {"layernorm grad fused", normGradFused},
      {"weight copies", weightCopies}};
  // The groups that reach past plan instructions into the CUDA backend
  // (the Elementwise kernel's JIT and interpreter forms, graph recording)
  // have no CPU form of their cases.
  const std::string gpuOnly = ",elementwise,graphs,";
  for (const auto &[name, run] : groups) {
    if (!wanted(name))
      continue;
    if (casesOnCpu && gpuOnly.find("," + std::string(name) + ",") !=
                          std::string::npos) {
      std::printf("group %s: GPU only, not run with --cases-on-cpu\n", name);
      continue;
    }
    try {
      run(rng);
    } catch (const std::exception &e) {
      report(false, std::string("group ") + name,
             std::string("threw: ") + e.what());
    }
  }
  // Groups run again on a CUDA backend made with other options (the
  // twins' CPU side unchanged); `what` names the rerun.
  auto again = [&](const char *what, const rt::CudaOptions &options,
                   const std::function<void()> &groups) {
    std::printf("%s\n", what);
    try {
      std::unique_ptr<Backend> own = rt::createCudaBackend(0, options);
      gCuda = own.get();
      groups();
    } catch (const std::exception &e) {
      report(false, what, std::string("threw: ") + e.what());
    }
    gCuda = cuda.get();
  };
  if (viaCudnn && wanted("attention")) {
    rt::CudaOptions local;
    local.attention = rt::AttentionBackend::Local;
    again("attention again on mega's kernels (--attention-backend local)",
          local, [&] {
            gCudnnAttention = false;
            attention(rng);
          });
  }
  // The bf16 products again with each GEMM's algorithm the fastest of
  // cuBLASLt's candidates, timed on the call itself (mega-run
  // --gemm-autotune), and of the wide search's too (--gemm-autotune-wide:
  // other algorithm ids and split-K forms, whose sums run in another
  // order): the candidate kept must leave the same result.
  if (!casesOnCpu &&
      (wanted("matmul epilogue") || wanted("cast/bf16 matmul"))) {
    for (bool wide : {false, true}) {
      rt::CudaOptions tuned;
      tuned.gemmAutotune = true;
      tuned.gemmAutotuneWide = wide;
      again(wide ? "bf16 products again with --gemm-autotune-wide"
                 : "bf16 products again with --gemm-autotune",
            tuned, [&] {
              if (wanted("cast/bf16 matmul"))
                castAndBf16MatMul(rng);
              if (wanted("matmul epilogue"))
                matmulEpilogue(rng);
            });
    }
  }
  // Every candidate of the wide search, not only the one the timing keeps:
  // a backend each, whose GEMMs run their candidate k untimed
  // (CudaOptions::gemmCandidate; the heuristic's first where there are
  // fewer than k + 1).
  if (!casesOnCpu && wanted("cast/bf16 matmul")) {
    for (size_t k = 0; k < rt::gpu::kWideCandidates; ++k) {
      rt::CudaOptions one;
      one.gemmAutotuneWide = true;
      one.gemmCandidate = int(k);
      one.attention = rt::AttentionBackend::Local; // no cuDNN to load
      const std::string what =
          "bf16 products on the wide search's candidate " + std::to_string(k);
      again(what.c_str(), one, [&] { bf16ProductCandidates(rng); });
    }
  }
  std::printf("cuda_twin_check: %d passed, %d failed\n", totals.pass,
              totals.fail);
  return totals.fail ? 1 : 0;
}

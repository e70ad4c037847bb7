//===- test_check.cpp - check() refuses every kind of bad instruction -----===//
//
// A hostile plan must never make launch() touch memory outside its operands:
// each case below is one way to try, and check() must refuse it with an
// Error "<Op>: <what is wrong>".
//
//===----------------------------------------------------------------------===//
#include "KernelTest.h"

#include <array>
#include <climits>
#include <limits>

using namespace kt;
using mega::plan::EwOp;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

int64_t op(EwOp e) { return int64_t(e); }

void matmul(Harness &h) {
  Tensor &A = h.f32({7, 33}), &B = h.f32({33, 17}), &C = h.f32({7, 17});
  auto mm = [&](std::vector<int64_t> i, std::vector<float> f = {1.0f, 0.0f}) {
    return make(Op::MatMul, std::move(i), std::move(f));
  };
  const std::vector<int64_t> good = {1, 7, 17, 33, 0, 0, 33, 17, 17, 0, 0, 0};
  h.run(mm(good), {&A, &B}, {&C}); // the baseline passes
  auto with = [&](size_t k, int64_t v) {
    std::vector<int64_t> i = good;
    i[k] = v;
    return i;
  };
  h.reject("operand count", mm(good), {&A}, {&C}, "expects 2 inputs");
  h.reject("attribute count", make(Op::MatMul, {1, 7, 17, 33}, {1, 0}), {&A, &B}, {&C},
           "integer attributes");
  h.reject("float count", mm(good, {1.0f}), {&A, &B}, {&C}, "float attributes");
  h.reject("lda past A", mm(with(6, 34)), {&A, &B}, {&C}, "A has 231 elements");
  h.reject("lda below K", mm(with(6, 32)), {&A, &B}, {&C}, "lda");
  h.reject("ldb past B", mm(with(7, 18)), {&A, &B}, {&C}, "B has");
  h.reject("ldc below N", mm(with(8, 16)), {&A, &B}, {&C}, "ldc");
  h.reject("ldc past C", mm(with(8, 18)), {&A, &B}, {&C}, "C has");
  h.reject("M too big", mm(with(1, 8)), {&A, &B}, {&C}, "A has");
  h.reject("K too big", mm(with(3, 34)), {&A, &B}, {&C}, "lda");
  h.reject("negative M", mm(with(1, -1)), {&A, &B}, {&C}, "M = -1");
  h.reject("M over INT_MAX", mm(with(1, int64_t(INT_MAX) + 1)), {&A, &B}, {&C}, "M = ");
  h.reject("transA 2", mm(with(4, 2)), {&A, &B}, {&C}, "transA");
  h.reject("transposed A too small", mm(with(4, 1)), {&A, &B}, {&C}, "A has");
  h.reject("batch reads past A", mm({2, 7, 17, 33, 0, 0, 33, 17, 17, 231, 0, 119}), {&A, &B},
           {&C}, "A has");
  h.reject("negative stride", mm({2, 7, 17, 33, 0, 0, 33, 17, 17, -5, 0, 0}), {&A, &B},
           {&C}, "strideA");
  h.reject("huge stride", mm({2, 7, 17, 33, 0, 0, 33, 17, 17, int64_t(1) << 47, 0, 0}),
           {&A, &B}, {&C}, "A has");
  h.reject("huge batch", mm({int64_t(1) << 47, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1}), {&A, &B},
           {&C}, "A has");
  Tensor &C2 = h.f32({2, 7, 17});
  h.reject("batch items share C", mm({2, 7, 17, 33, 0, 0, 33, 17, 17, 0, 0, 0}), {&A, &B},
           {&C2}, "strideC");
  h.reject("alpha NaN", mm(good, {kNaN, 0.0f}), {&A, &B}, {&C}, "alpha");
  h.reject("beta inf", mm(good, {1.0f, kInf}), {&A, &B}, {&C}, "beta");
  Tensor &Ai = h.alloc(DType::I32, {7, 33});
  h.reject("A i32", mm(good), {&Ai, &B}, {&C}, "A must be f32");
  Tensor &Ab = h.alloc(DType::BF16, {7, 33});
  h.reject("A bf16", mm(good), {&Ab, &B}, {&C}, "bf16");
  // C overlapping A in the arena.
  Tensor &Aa = h.arena(0, {7, 33}), &Ca = h.arena(100 * 4, {7, 17});
  h.reject("C overlaps A", mm(good), {&Aa, &B}, {&Ca}, "overlaps A");
  // Epilogues (i[12]): operand counts, the plain-product preconditions,
  // the operands' sizes and dtypes, overlaps.
  {
    std::vector<int64_t> e1 = good;
    e1.push_back(1);
    auto epi = [&](int64_t e) {
      std::vector<int64_t> i = good;
      i.push_back(e);
      return i;
    };
    Tensor &bias = h.f32({17}), &R = h.f32({7, 17}), &aux = h.f32({7, 17});
    Tensor &Db = h.alloc(DType::BF16, {7, 17});
    h.run(mm(epi(1)), {&A, &B, &bias}, {&C});
    h.run(mm(epi(2)), {&A, &B, &bias, &R}, {&R}); // D over R: in place
    h.run(mm(epi(3)), {&A, &B, &bias}, {&Db, &aux});
    h.reject("epilogue 5", mm(epi(5)), {&A, &B, &bias}, {&C}, "epilogue");
    h.reject("epilogue 4 without its pre-activation", mm(epi(4)), {&A, &B, &bias},
             {&C}, "aux has 17 elements");
    h.reject("epilogue operands", mm(epi(2)), {&A, &B, &bias}, {&C},
             "expects 4 inputs");
    h.reject("epilogue aux missing", mm(epi(3)), {&A, &B, &bias}, {&C},
             "expects 3 inputs and 2 outputs");
    std::vector<int64_t> batched = {2, 7, 17, 33, 0, 0, 33, 17, 17, 0, 0, 119, 1};
    h.reject("epilogue batch", mm(batched), {&A, &B, &bias}, {&C2}, "batch 1");
    h.reject("epilogue beta", mm(e1, {1.0f, 1.0f}), {&A, &B, &bias}, {&C}, "beta 0");
    std::vector<int64_t> ld = {1, 7, 16, 33, 0, 0, 33, 17, 17, 0, 0, 0, 1};
    h.reject("epilogue ldc", mm(ld), {&A, &B, &bias}, {&C}, "ldc = N");
    Tensor &shortBias = h.f32({16});
    h.reject("bias size", mm(e1), {&A, &B, &shortBias}, {&C}, "bias has 16");
    Tensor &Di = h.alloc(DType::I32, {7, 17});
    h.reject("D i32", mm(e1), {&A, &B, &bias}, {&Di}, "D must be f32 or bf16");
    Tensor &auxI = h.alloc(DType::I32, {7, 17});
    h.reject("aux i32", mm(epi(3)), {&A, &B, &bias}, {&C, &auxI}, "aux");
    Tensor &Rb = h.arena(0, {7, 17}), &Dp = h.arena(4, {7, 17});
    h.reject("D partly over R", mm(epi(2)), {&A, &B, &bias, &Rb}, {&Dp},
             "partially overlaps residual");
    h.reject("aux is D", mm(epi(3)), {&A, &B, &bias}, {&C, &C}, "aux");
  }
  std::vector<const Value *> none = {nullptr, &B.v}, outs = {&C.v};
  try {
    h.backend().check(mm(good), none, outs);
    CHECK(false, "a missing operand was accepted");
  } catch (const Error &e) {
    CHECK(std::string(e.what()).rfind("MatMul: ", 0) == 0, "%s", e.what());
  }
}

void elementwise(Harness &h) {
  const int64_t n = 6;
  Tensor &x = h.f32({2, 3}), &b = h.f32({3}), &y = h.f32({2, 3}), &z = h.f32({2, 3});
  auto ew = [&](std::vector<int64_t> head, std::vector<std::array<int64_t, 4>> code,
                std::vector<float> f = {}) {
    for (auto &g : code)
      head.insert(head.end(), g.begin(), g.end());
    return make(Op::Elementwise, head, f);
  };
  const std::vector<std::array<int64_t, 4>> add = {{op(EwOp::Load), 0, 0, 0},
                                                   {op(EwOp::Load), 1, 1, 0},
                                                   {op(EwOp::Add), 2, 0, 1},
                                                   {op(EwOp::Store), 2, 0, 0}};
  h.run(ew({n, 2, 1, n, 3}, add), {&x, &b}, {&y}); // baseline
  h.reject("header", make(Op::Elementwise, {n, 2}), {&x, &b}, {&y}, "at least 3");
  h.reject("input count", ew({n, 1, 1, n}, add), {&x, &b}, {&y}, "expects 1 inputs");
  h.reject("ragged code", make(Op::Elementwise, {n, 2, 1, n, 3, 0, 0, 0}), {&x, &b}, {&y},
           "groups of 4");
  h.reject("no code", make(Op::Elementwise, {n, 2, 1, n, 3}), {&x, &b}, {&y}, "groups of 4");
  h.reject("period 0", ew({n, 2, 1, n, 0}, add), {&x, &b}, {&y}, "period");
  h.reject("period > n", ew({n, 2, 1, n, 7}, add), {&x, &b}, {&y}, "period");
  h.reject("period not dividing", ew({n, 2, 1, n, 4}, add), {&x, &b}, {&y}, "does not divide");
  h.reject("input smaller than period", ew({n, 2, 1, n, n}, add), {&x, &b}, {&y},
           "input has 3 elements");
  h.reject("n past output", ew({12, 2, 1, 12, 3}, add), {&x, &b}, {&y}, "has 6 elements");
  h.reject("unknown micro-op", ew({n, 2, 1, n, 3}, {{op(EwOp::Load), 0, 0, 0}, {99, 1, 0, 0},
                                                    {op(EwOp::Store), 0, 0, 0}}),
           {&x, &b}, {&y}, "unknown code 99");
  h.reject("register 16", ew({n, 2, 1, n, 3}, {{op(EwOp::Load), 16, 0, 0},
                                               {op(EwOp::Store), 16, 0, 0}}),
           {&x, &b}, {&y}, "register 16");
  h.reject("negative register", ew({n, 2, 1, n, 3}, {{op(EwOp::Load), 0, 0, 0},
                                                     {op(EwOp::Exp), 1, -1, 0},
                                                     {op(EwOp::Store), 1, 0, 0}}),
           {&x, &b}, {&y}, "register -1");
  h.reject("unset register", ew({n, 2, 1, n, 3}, {{op(EwOp::Load), 0, 0, 0},
                                                  {op(EwOp::Mul), 2, 0, 5},
                                                  {op(EwOp::Store), 2, 0, 0}}),
           {&x, &b}, {&y}, "reads r5 before");
  h.reject("load past inputs", ew({n, 2, 1, n, 3}, {{op(EwOp::Load), 0, 2, 0},
                                                    {op(EwOp::Store), 0, 0, 0}}),
           {&x, &b}, {&y}, "loads input 2");
  h.reject("store past outputs", ew({n, 2, 1, n, 3}, {{op(EwOp::Load), 0, 0, 0},
                                                      {op(EwOp::Store), 0, 1, 0}}),
           {&x, &b}, {&y}, "stores output 1");
  h.reject("const past table", ew({n, 2, 1, n, 3}, {{op(EwOp::Const), 0, 1, 0},
                                                    {op(EwOp::Store), 0, 0, 0}},
                                  {1.0f}),
           {&x, &b}, {&y}, "constant 1");
  h.reject("output never stored", ew({n, 2, 2, n, 3}, add), {&x, &b}, {&y, &z},
           "output 1 is never stored");
  Tensor &xa = h.arena(0, {2, 3}), &ya = h.arena(8, {2, 3});
  h.reject("partial overlap", ew({n, 2, 1, n, 3}, add), {&xa, &b}, {&ya}, "partially overlaps");
  Tensor &y2 = h.arena(4, {2, 3});
  const std::vector<std::array<int64_t, 4>> two = {{op(EwOp::Load), 0, 0, 0},
                                                   {op(EwOp::Store), 0, 0, 0},
                                                   {op(EwOp::Store), 0, 1, 0}};
  h.reject("outputs overlap", ew({n, 1, 2, n}, two), {&x}, {&xa, &y2}, "another output");
  Tensor &xi = h.alloc(DType::I32, {2, 3});
  h.reject("i32 input", ew({n, 2, 1, n, 3}, add), {&xi, &b}, {&y}, "must be f32");
}

void rowOps(Harness &h) {
  const int64_t R = 4, C = 5;
  Tensor &x = h.f32({R, C}), &w = h.f32({C}), &b = h.f32({C}), &y = h.f32({R, C}),
         &m = h.f32({R}), &s = h.f32({R}), &w6 = h.f32({C + 1});
  h.run(make(Op::LayerNorm, {R, C}, {1e-5f}), {&x, &w, &b}, {&y, &m, &s});
  h.reject("layernorm rows*cols", make(Op::LayerNorm, {R, C + 1}, {1e-5f}), {&x, &w, &b},
           {&y, &m, &s}, "x has 20 elements");
  h.reject("layernorm cols 0", make(Op::LayerNorm, {R, 0}, {1e-5f}), {&x, &w, &b},
           {&y, &m, &s}, "cols");
  h.reject("layernorm w size", make(Op::LayerNorm, {R, C}, {1e-5f}), {&x, &w6, &b},
           {&y, &m, &s}, "w has 6");
  h.reject("layernorm eps NaN", make(Op::LayerNorm, {R, C}, {kNaN}), {&x, &w, &b},
           {&y, &m, &s}, "eps");
  h.reject("layernorm attrs", make(Op::LayerNorm, {R, C, 8, 0}, {1e-5f}),
           {&x, &w, &b}, {&y, &m, &s}, "integer attributes");
  // Padded rows (mega-ones-column): ldy > cols, y of rows x ldy.
  Tensor &y8 = h.f32({R, 8});
  h.run(make(Op::LayerNorm, {R, C, 8}, {1e-5f}), {&x, &w, &b}, {&y8, &m, &s});
  h.reject("layernorm ldy = cols", make(Op::LayerNorm, {R, C, C}, {1e-5f}),
           {&x, &w, &b}, {&y, &m, &s}, "ldy");
  h.reject("layernorm padded y size", make(Op::LayerNorm, {R, C, 8}, {1e-5f}),
           {&x, &w, &b}, {&y, &m, &s}, "y has 20 elements");
  Tensor &xa = h.arena(0, {R, C}), &ya8 = h.arena(0, {R, 8});
  h.reject("layernorm padded in place", make(Op::LayerNorm, {R, C, 8}, {1e-5f}),
           {&xa, &w, &b}, {&ya8, &m, &s}, "overlaps");
  Tensor &ya = h.arena(0, {R, C}), &ma = h.arena(40, {R});
  h.reject("layernorm mean inside y", make(Op::LayerNorm, {R, C}, {1e-5f}), {&x, &w, &b},
           {&ya, &ma, &s}, "mean overlaps y");
  Tensor &dx = h.f32({R, C}), &dw = h.f32({C}), &db = h.f32({C}), &s5 = h.f32({R + 1});
  h.run(make(Op::LayerNormGrad, {R, C, 1}), {&y, &x, &w, &m, &s}, {&dx, &dw, &db});
  h.reject("layernorm grad rstd size", make(Op::LayerNormGrad, {R, C, 0}),
           {&y, &x, &w, &m, &s5}, {&dx, &dw, &db}, "rstd has 5");
  h.reject("layernorm grad accumulate 5", make(Op::LayerNormGrad, {R, C, 5}),
           {&y, &x, &w, &m, &s}, {&dx, &dw, &db}, "accumulate");
  h.reject("layernorm grad dx is x", make(Op::LayerNormGrad, {R, C, 0}),
           {&y, &x, &w, &m, &s}, {&x, &dw, &db}, "dx overlaps x");

  h.run(make(Op::Softmax, {R, C, 1, 2}, {0.5f}), {&x}, {&y});
  h.reject("softmax seq 0", make(Op::Softmax, {R, C, 1, 0}, {0.5f}), {&x}, {&y}, "seq");
  h.reject("softmax rows % seq", make(Op::Softmax, {R, C, 1, 3}, {0.5f}), {&x}, {&y},
           "multiple of seq");
  h.reject("softmax causal 2", make(Op::Softmax, {R, C, 2, 2}, {0.5f}), {&x}, {&y}, "causal");
  h.reject("softmax scale inf", make(Op::Softmax, {R, C, 0, 0}, {kInf}), {&x}, {&y}, "scale");
  h.reject("softmax numel", make(Op::Softmax, {R + 1, C, 0, 0}, {1.0f}), {&x}, {&y},
           "x has 20 elements");
  Tensor &big = h.f32({R + 1, C});
  h.reject("softmax grad dy size", make(Op::SoftmaxGrad, {R, C}, {1.0f}), {&y, &big}, {&dx},
           "dy has 25");
  Tensor &dxa = h.arena(4, {R, C});
  h.reject("softmax grad partial overlap", make(Op::SoftmaxGrad, {R, C}, {1.0f}), {&ya, &x},
           {&dxa}, "partially overlaps");

  Tensor &in = h.f32({R, C}), &out = h.f32({C}), &out4 = h.f32({R});
  h.run(make(Op::ReduceSum, {R, C, 1}), {&in}, {&out});
  h.reject("reduce sum out size", make(Op::ReduceSum, {R, C, 0}), {&in}, {&out4}, "out has 4");
  h.reject("reduce sum in size", make(Op::ReduceSum, {R + 2, C, 0}), {&in}, {&out}, "in has 20");
  h.reject("reduce sum accumulate", make(Op::ReduceSum, {R, C, -1}), {&in}, {&out},
           "accumulate");
}

void lossAndEmbedding(Harness &h) {
  const int64_t R = 3, V = 7, H = 4;
  Tensor &logits = h.f32({R, V}), &loss = h.f32({}), &lse = h.f32({R}), &dl = h.f32({}),
         &dlogits = h.f32({R, V});
  Tensor &t = h.i32({R}, {0, 1, 2});
  Tensor &tf = h.f32({R}), &loss2 = h.f32({2});
  h.run(make(Op::CrossEntropy, {R, V}), {&logits, &t}, {&loss, &lse});
  h.reject("ce f32 targets", make(Op::CrossEntropy, {R, V}), {&logits, &tf}, {&loss, &lse},
           "targets must be i32");
  h.reject("ce loss size", make(Op::CrossEntropy, {R, V}), {&logits, &t}, {&loss2, &lse},
           "loss has 2");
  h.reject("ce V 0", make(Op::CrossEntropy, {R, 0}), {&logits, &t}, {&loss, &lse}, "V = 0");
  h.reject("ce V wrong", make(Op::CrossEntropy, {R, V + 1}), {&logits, &t}, {&loss, &lse},
           "logits has 21");
  h.run(make(Op::CrossEntropyGrad, {R, V}), {&logits, &t, &lse, &dl}, {&dlogits});
  h.reject("ce grad dloss size", make(Op::CrossEntropyGrad, {R, V}), {&logits, &t, &lse, &loss2},
           {&dlogits}, "dloss has 2");
  h.reject("ce grad lse is dlogits", make(Op::CrossEntropyGrad, {R, V}),
           {&logits, &t, &dlogits, &dl}, {&dlogits}, "lse has 21");

  Tensor &table = h.f32({V, H}), &out = h.f32({R, H}), &small = h.f32({V - 1, H});
  h.run(make(Op::Embedding, {R, V, H, 0}), {&table, &t}, {&out});
  h.reject("embedding table size", make(Op::Embedding, {R, V, H, 0}), {&small, &t}, {&out},
           "table has 24");
  h.reject("embedding ids size", make(Op::Embedding, {R + 1, V, H, 0}), {&table, &t}, {&out},
           "out has 12");
  h.reject("embedding V > int32", make(Op::Embedding, {R, int64_t(1) << 32, H, 0}),
           {&table, &t}, {&out}, "V = ");
  h.reject("embedding attrs", make(Op::Embedding, {R, V, H}), {&table, &t}, {&out},
           "integer attributes");
  h.run(make(Op::EmbeddingGrad, {R, V, H, 1}), {&out, &t}, {&table});
  h.reject("embedding grad H", make(Op::EmbeddingGrad, {R, V, H + 1, 0}), {&out, &t}, {&table},
           "has 12 elements");
  Tensor &douta = h.arena(0, {R, H}), &tablea = h.arena(16, {V, H});
  h.reject("embedding grad overlap", make(Op::EmbeddingGrad, {R, V, H, 0}), {&douta, &t},
           {&tablea}, "overlaps");
}

void transpose(Harness &h) {
  Tensor &x = h.f32({2, 3, 4}), &y = h.f32({4, 3, 2}), &y5 = h.f32({25});
  h.run(make(Op::Transpose, {3, 2, 3, 4, 2, 1, 0}), {&x}, {&y});
  h.reject("rank 7", make(Op::Transpose, {7, 1, 1, 1, 1, 1, 2, 12, 0, 1, 2, 3, 4, 5, 6}), {&x},
           {&y}, "rank");
  h.reject("rank 0", make(Op::Transpose, {0}), {&x}, {&y}, "rank");
  h.reject("no rank", make(Op::Transpose, {}), {&x}, {&y}, "rank");
  h.reject("attr count", make(Op::Transpose, {3, 2, 3, 4, 2, 1}), {&x}, {&y},
           "integer attributes");
  h.reject("repeated axis", make(Op::Transpose, {3, 2, 3, 4, 2, 2, 0}), {&x}, {&y}, "repeats");
  h.reject("axis out of range", make(Op::Transpose, {3, 2, 3, 4, 3, 1, 0}), {&x}, {&y},
           "permutation entry");
  h.reject("dims product", make(Op::Transpose, {3, 2, 3, 5, 2, 1, 0}), {&x}, {&y},
           "in has 24 elements");
  h.reject("out size", make(Op::Transpose, {3, 2, 3, 4, 2, 1, 0}), {&x}, {&y5}, "out has 25");
  h.reject("negative dim", make(Op::Transpose, {3, -2, 3, -4, 2, 1, 0}), {&x}, {&y}, "dim");
  Tensor &yi = h.alloc(DType::I32, {4, 3, 2});
  h.reject("dtype change", make(Op::Transpose, {3, 2, 3, 4, 2, 1, 0}), {&x}, {&yi},
           "out must be f32");
}

void optimizer(Harness &h) {
  const int64_t n = 10;
  Tensor &p = h.f32({n}), &g = h.f32({n}), &m = h.f32({n}), &v = h.f32({n}),
         &lr = h.f32({}), &st = h.f32({}), &coef = h.f32({}), &norm = h.f32({}),
         &v9 = h.f32({n - 1}), &lr2 = h.f32({2});
  const std::vector<float> fa = {0.9f, 0.999f, 1e-8f, 0.01f};
  h.run(make(Op::AdamW, {}, fa), {&p, &g, &m, &v, &lr, &st, &coef}, {});
  h.reject("adamw v size", make(Op::AdamW, {}, fa), {&p, &g, &m, &v9, &lr, &st, &coef}, {},
           "v has 9");
  h.reject("adamw lr size", make(Op::AdamW, {}, fa), {&p, &g, &m, &v, &lr2, &st, &coef}, {},
           "lr has 2");
  h.reject("adamw beta1 1", make(Op::AdamW, {}, {1.0f, 0.999f, 1e-8f, 0.0f}),
           {&p, &g, &m, &v, &lr, &st, &coef}, {}, "betas");
  h.reject("adamw eps NaN", make(Op::AdamW, {}, {0.9f, 0.999f, kNaN, 0.0f}),
           {&p, &g, &m, &v, &lr, &st, &coef}, {}, "eps");
  h.reject("adamw m is param", make(Op::AdamW, {}, fa), {&p, &g, &p, &v, &lr, &st, &coef}, {},
           "m overlaps param");
  h.reject("adamw operands", make(Op::AdamW, {}, fa), {&p, &g, &m, &v, &lr, &st}, {},
           "expects 7 inputs");
  h.run(make(Op::Sgd, {}, {0.0f}), {&p, &g, &lr, &coef}, {});
  h.reject("sgd grad size", make(Op::Sgd, {}, {0.0f}), {&p, &v9, &lr, &coef}, {}, "grad has 9");
  h.reject("sgd wd inf", make(Op::Sgd, {}, {kInf}), {&p, &g, &lr, &coef}, {}, "weightDecay");
  h.run(make(Op::GradNorm, {}, {1.0f}), {&g, &m}, {&norm, &coef});
  h.reject("gradnorm outputs", make(Op::GradNorm, {}, {1.0f}), {&g}, {&norm}, "2 outputs");
  h.reject("gradnorm norm size", make(Op::GradNorm, {}, {1.0f}), {&g}, {&lr2, &coef},
           "norm has 2");
  h.reject("gradnorm coef is norm", make(Op::GradNorm, {}, {1.0f}), {&g}, {&norm, &norm},
           "overlaps");
  Tensor &gi = h.alloc(DType::I32, {n});
  h.reject("gradnorm i32 grad", make(Op::GradNorm, {}, {1.0f}), {&gi}, {&norm, &coef},
           "gradient must be f32");
}

void fillCopy(Harness &h) {
  Tensor &x = h.f32({5}), &y = h.f32({6}), &xi = h.alloc(DType::I32, {5});
  h.run(make(Op::Fill, {}, {1.0f}), {}, {&x});
  h.reject("fill i32", make(Op::Fill, {}, {1.0f}), {}, {&xi}, "out must be f32");
  h.reject("fill no value", make(Op::Fill, {}), {}, {&x}, "float attributes");
  h.reject("copy size", make(Op::Copy, {}), {&x}, {&y}, "out has 6");
  h.reject("copy dtype", make(Op::Copy, {}), {&x}, {&xi}, "out must be f32");
  Tensor &a = h.arena(0, {5}), &b = h.arena(8, {5});
  h.reject("copy partial overlap", make(Op::Copy, {}), {&a}, {&b}, "partially overlaps");
}

} // namespace

/// Collectives are not kernels: the engine runs them through
/// Backend::collective, and check()/launch() refuse them.
void collectives(Harness &h) {
  Tensor &x = h.f32({8}), &y = h.f32({8});
  h.reject("allreduce", make(Op::AllReduce, {1, 0}), {&x}, {&y}, "collective");
  h.reject("send", make(Op::Send, {2, 1, 0}), {&x}, {}, "collective");
}

int main() {
  Harness h(2);
  matmul(h);
  elementwise(h);
  rowOps(h);
  lossAndEmbedding(h);
  transpose(h);
  optimizer(h);
  fillCopy(h);
  collectives(h);
  return finish("test_check");
}

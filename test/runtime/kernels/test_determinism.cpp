//===- test_determinism.cpp - Same bits for any thread count --------------===//
//
// Every kernel runs at GPT-like sizes with 1, 2, 3, 4 and 7 threads (and
// twice with the same count); all outputs must be bitwise identical.
//
//===----------------------------------------------------------------------===//
#include "KernelTest.h"

#include <array>
#include <map>

using namespace kt;
using mega::plan::EwOp;

namespace {

using Outputs = std::map<std::string, std::vector<float>>;

Outputs runAll(int threads) {
  Harness h(threads);
  Rng rng(23);
  Outputs out;
  auto keep = [&](const std::string &name, const Tensor &t) { out[name] = t.get(); };
  const int64_t B = 4, S = 33, H = 96, nh = 3, d = H / nh, V = 251, rows = B * S;

  // Projections: one big product (tiled) and batched heads.
  Tensor &x = h.f32({rows, H}, rng.vec(rows * H)), &w = h.f32({H, 3 * H}, rng.vec(H * 3 * H));
  Tensor &qkv = h.f32({rows, 3 * H});
  h.run(make(Op::MatMul, {1, rows, 3 * H, H, 0, 0, H, 3 * H, 3 * H, 0, 0, 0}, {1, 0}), {&x, &w},
        {&qkv});
  keep("matmul", qkv);
  Tensor &big = h.f32({300, 1000}, rng.vec(300 * 1000)), &bw = h.f32({1000, 257}, rng.vec(1000 * 257)),
         &bo = h.f32({300, 257});
  h.run(make(Op::MatMul, {1, 300, 257, 1000, 0, 0, 1000, 257, 257, 0, 0, 0}, {1, 0}), {&big, &bw},
        {&bo});
  keep("matmul big", bo);
  Tensor &dW = h.f32({H, 3 * H}, rng.vec(H * 3 * H));
  h.run(make(Op::MatMul, {1, H, 3 * H, rows, 1, 0, H, 3 * H, 3 * H, 0, 0, 0}, {1, 1}), {&x, &qkv},
        {&dW});
  keep("matmul weight grad", dW);
  Tensor &q = h.f32({B * nh, S, d}, rng.vec(B * nh * S * d)),
         &k = h.f32({B * nh, S, d}, rng.vec(B * nh * S * d)), &att = h.f32({B * nh, S, S});
  h.run(make(Op::MatMul, {B * nh, S, S, d, 0, 1, d, d, S, S * d, S * d, S * S}, {0.125f, 0}),
        {&q, &k}, {&att});
  keep("matmul heads", att);

  // Softmax (causal) and its gradient.
  Tensor &p = h.f32({B * nh, S, S});
  h.run(make(Op::Softmax, {B * nh * S, S, 1, S}, {1.0f}), {&att}, {&p});
  keep("softmax", p);
  Tensor &dp = h.f32({B * nh, S, S}, rng.vec(B * nh * S * S)), &datt = h.f32({B * nh, S, S});
  h.run(make(Op::SoftmaxGrad, {B * nh * S, S}, {0.125f}), {&p, &dp}, {&datt});
  keep("softmax grad", datt);

  // LayerNorm and its gradient.
  Tensor &lw = h.f32({H}, rng.vec(H)), &lb = h.f32({H}, rng.vec(H)), &y = h.f32({rows, H}),
         &mean = h.f32({rows}), &rstd = h.f32({rows});
  h.run(make(Op::LayerNorm, {rows, H}, {1e-5f}), {&x, &lw, &lb}, {&y, &mean, &rstd});
  keep("layernorm", y);
  Tensor &dy = h.f32({rows, H}, rng.vec(rows * H)), &dx = h.f32({rows, H}), &dlw = h.f32({H}),
         &dlb = h.f32({H});
  h.run(make(Op::LayerNormGrad, {rows, H, 0}), {&dy, &x, &lw, &mean, &rstd}, {&dx, &dlw, &dlb});
  keep("layernorm grad dx", dx);
  keep("layernorm grad dw", dlw);
  keep("layernorm grad db", dlb);

  // GELU over a bias (elementwise).
  Tensor &h4 = h.f32({rows, 4 * H}, rng.vec(rows * 4 * H)), &bias = h.f32({4 * H}, rng.vec(4 * H)),
         &g = h.f32({rows, 4 * H});
  std::vector<int64_t> code = {rows * 4 * H, 2, 1, rows * 4 * H, 4 * H,
                               int64_t(EwOp::Load), 0, 0, 0, int64_t(EwOp::Load), 1, 1, 0,
                               int64_t(EwOp::Add), 0, 0, 1, int64_t(EwOp::Gelu), 0, 0, 0,
                               int64_t(EwOp::Store), 0, 0, 0};
  h.run(make(Op::Elementwise, code), {&h4, &bias}, {&g});
  keep("gelu", g);
  Tensor &bsum = h.f32({4 * H});
  h.run(make(Op::ReduceSum, {rows, 4 * H, 0}), {&g}, {&bsum});
  keep("reduce sum", bsum);

  // Loss.
  std::vector<int32_t> t(rows);
  for (auto &v : t)
    v = rng.index(V);
  Tensor &logits = h.f32({rows, V}, rng.vec(rows * V, -5, 5)), &tt = h.i32({rows}, t),
         &loss = h.f32({}), &lse = h.f32({rows}), &dl = h.f32({}, {1.0f}),
         &dlogits = h.f32({rows, V});
  h.run(make(Op::CrossEntropy, {rows, V}), {&logits, &tt}, {&loss, &lse});
  keep("cross entropy", loss);
  h.run(make(Op::CrossEntropyGrad, {rows, V}), {&logits, &tt, &lse, &dl}, {&dlogits});
  keep("cross entropy grad", dlogits);

  // Embedding scatter-add with many repeated ids.
  std::vector<int32_t> ids(rows);
  for (auto &v : ids)
    v = rng.index(9);
  Tensor &ti = h.i32({rows}, ids), &table = h.f32({V, H});
  h.run(make(Op::EmbeddingGrad, {rows, V, H, 0}), {&dy, &ti}, {&table});
  keep("embedding grad", table);

  // Transpose [B,S,nh,d] -> [B,nh,S,d].
  Tensor &tr = h.f32({B, nh, S, d});
  h.run(make(Op::Transpose, {4, B, S, nh, d, 0, 2, 1, 3}), {&x}, {&tr});
  keep("transpose", tr);

  // Grad norm and AdamW.
  Tensor &norm = h.f32({}), &coef = h.f32({});
  h.run(make(Op::GradNorm, {}, {0.5f}), {&dW, &dlw, &dlb, &table, &dlogits}, {&norm, &coef});
  keep("grad norm", norm);
  keep("grad coef", coef);
  Tensor &m = h.f32({H, 3 * H}), &v = h.f32({H, 3 * H}), &lr = h.f32({}, {1e-3f}),
         &step = h.f32({}, {1.0f});
  h.run(make(Op::AdamW, {}, {0.9f, 0.999f, 1e-8f, 0.01f}), {&w, &dW, &m, &v, &lr, &step, &coef},
        {});
  keep("adamw", w);
  return out;
}

} // namespace

int main() {
  const Outputs ref = runAll(1);
  for (int threads : {1, 2, 3, 4, 7}) {
    Outputs o = runAll(threads);
    for (const auto &[name, bits] : ref) {
      const auto &got = o[name];
      CHECK(got.size() == bits.size(), "%s: size", name.c_str());
      if (got.size() == bits.size())
        sameBits((name + " with " + std::to_string(threads) + " threads").c_str(), got.data(),
                 bits.data(), bits.size());
    }
  }
  return finish("test_determinism");
}

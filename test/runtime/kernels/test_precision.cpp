//===- test_precision.cpp - Cast, bf16 MatMul, fused attention ------------===//
//
// References written independently of the kernels:
//  * Cast: round-to-nearest-even on hand-picked ties, NaN, infinities, and
//    bf16 -> f32 exactness.
//  * bf16 MatMul: the same bits as the fp32 MatMul on the widened values
//    (bf16 products are exact in fp32; the sums are the fp32 kernel's);
//    with a bf16 C those bits rounded.
//  * CrossEntropy(Grad) on bf16 logits: the bits of the f32 kernels on the
//    widened values (dlogits bf16: those rounded; also in place).
//  * ReduceSum of bf16: the bits of the f32 ReduceSum on the widened values.
//  * Elementwise with bf16 inputs (whole, a broadcast row, a scalar): the
//    bits of the same program on the widened values.
//  * LayerNormGrad with a bf16 dy: the bits of the f32 kernel on the
//    widened dy.
//  * LayerNormGrad's fused forms (accumulate into the residual gradient,
//    accumulate_wb, the 4th bf16 output): the bits of the unfused sequence
//    LayerNormGrad, Elementwise add (+ its bf16 copy), the two in-place
//    Elementwise adds into dw/db, or a Cast.
//  * Attention: the naive formula in double over the whole [S, S] score
//    matrix (softmax, then the weighted sum).
//  * AttentionGrad: central finite differences (in double) of the naive
//    forward, for L = sum(o * w) with random w, so dout = w.
//
//===----------------------------------------------------------------------===//
#include "KernelTest.h"

#include <cmath>
#include <limits>

using namespace kt;

namespace {

uint16_t bitsBf16(const Tensor &t, int64_t k) {
  return static_cast<const uint16_t *>(t.data)[k];
}

float widen(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

Tensor &bf16Tensor(Harness &h, std::vector<int64_t> shape,
                   const std::vector<float> &x, Harness &conv) {
  // Rounded by the Cast kernel of a second harness (tested above).
  const int64_t n = int64_t(x.size());
  Tensor &src = conv.f32({n}, x), &dst = conv.alloc(DType::BF16, {n});
  conv.run(make(Op::Cast, {n}), {&src}, {&dst});
  Tensor &t = h.alloc(DType::BF16, std::move(shape));
  std::memcpy(t.data, dst.data, size_t(n) * 2);
  return t;
}

void testCast(Harness &h) {
  const float inf = std::numeric_limits<float>::infinity();
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1). 1 + 3*2^-8 is a
  // tie between 1 + 2^-7 and 1 + 2^-6: to even (1 + 2^-6).
  const std::vector<float> x = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f,
                                1.0f + 0x1p-9f, -2.5f, 3.0e38f, -inf,
                                inf, 0.0f, -0.0f, 1e-40f};
  const std::vector<uint16_t> want = {0x3f80, 0x3f80, 0x3f82, 0x3f80, 0xc020,
                                      0x7f62, 0xff80, 0x7f80, 0x0000, 0x8000,
                                      0x0001};
  const int64_t n = int64_t(x.size());
  Tensor &a = h.f32({n}, x), &b = h.alloc(DType::BF16, {n});
  if (h.run(make(Op::Cast, {n}), {&a}, {&b}))
    for (int64_t k = 0; k < n; ++k)
      CHECK(bitsBf16(b, k) == want[size_t(k)],
            "cast %.9g -> bf16 %04x, want %04x", double(x[size_t(k)]),
            bitsBf16(b, k), want[size_t(k)]);
  // NaN stays NaN; bf16 -> f32 is exact.
  Tensor &nan = h.f32({1}, {std::numeric_limits<float>::quiet_NaN()});
  Tensor &nb = h.alloc(DType::BF16, {1});
  if (h.run(make(Op::Cast, {1}), {&nan}, {&nb}))
    CHECK(std::isnan(widen(bitsBf16(nb, 0))), "cast NaN stays NaN");
  Tensor &back = h.f32({n});
  if (h.run(make(Op::Cast, {n}), {&b}, {&back}))
    for (int64_t k = 0; k < n; ++k) {
      const float wide = widen(bitsBf16(b, k));
      CHECK(std::memcmp(&back.f()[k], &wide, 4) == 0,
            "bf16 -> f32 exact at %lld", (long long)k);
    }
  // Refusals: an i32 operand.
  Tensor &ia = h.i32({2}, {1, 2}), &fb = h.f32({2});
  h.reject("cast i32", make(Op::Cast, {2}), {&ia}, {&fb}, "f32 or bf16");
}

void testBf16MatMul(Harness &h, Harness &conv, Rng &rng, int64_t M, int64_t N,
                    int64_t K, bool ta, bool tb) {
  std::vector<float> a = rng.vec(size_t(M * K)), b = rng.vec(size_t(K * N));
  Tensor &ab = bf16Tensor(h, {M * K}, a, conv);
  Tensor &bb = bf16Tensor(h, {K * N}, b, conv);
  std::vector<float> aw(a.size()), bw(b.size());
  for (size_t k = 0; k < a.size(); ++k)
    aw[k] = widen(bitsBf16(ab, int64_t(k)));
  for (size_t k = 0; k < b.size(); ++k)
    bw[k] = widen(bitsBf16(bb, int64_t(k)));
  Tensor &af = h.f32({M * K}, aw), &bf = h.f32({K * N}, bw);
  Tensor &c1 = h.f32({M * N}), &c2 = h.f32({M * N});
  const Instr in = make(Op::MatMul,
                        {1, M, N, K, ta, tb, ta ? M : K, tb ? K : N, N, 0, 0, 0},
                        {1.0f, 0.0f});
  if (h.run(in, {&ab, &bb}, {&c1}) && h.run(in, {&af, &bf}, {&c2}))
    sameBits("bf16 matmul = fp32 matmul of the widened values", c1.f(), c2.f(),
             size_t(M * N));
  // Mixed operand types are refused.
  h.reject("matmul bf16 x f32", in, {&ab, &bf}, {&c1}, "B must be bf16");
}

/// Naive attention in double: o [BH,S,hd], lse [BH,S].
void naiveAttention(const std::vector<double> &q, const std::vector<double> &k,
                    const std::vector<double> &v, int64_t bh, int64_t S,
                    int64_t hd, bool causal, double scale,
                    std::vector<double> &o, std::vector<double> &lse) {
  o.assign(size_t(bh * S * hd), 0.0);
  lse.assign(size_t(bh * S), 0.0);
  std::vector<double> s(size_t(S * S));
  for (int64_t b = 0; b < bh; ++b) {
    const int64_t base = b * S * hd;
    for (int64_t i = 0; i < S; ++i) {
      double m = -INFINITY;
      for (int64_t j = 0; j < S; ++j) {
        double d = 0;
        for (int64_t c = 0; c < hd; ++c)
          d += q[size_t(base + i * hd + c)] * k[size_t(base + j * hd + c)];
        s[size_t(i * S + j)] = (causal && j > i) ? -INFINITY : scale * d;
        m = std::max(m, s[size_t(i * S + j)]);
      }
      double z = 0;
      for (int64_t j = 0; j < S; ++j)
        z += std::exp(s[size_t(i * S + j)] - m);
      lse[size_t(b * S + i)] = m + std::log(z);
      for (int64_t j = 0; j < S; ++j) {
        const double p = std::exp(s[size_t(i * S + j)] - m) / z;
        for (int64_t c = 0; c < hd; ++c)
          o[size_t(base + i * hd + c)] += p * v[size_t(base + j * hd + c)];
      }
    }
  }
}

void testAttention(Harness &h, Rng &rng, int64_t bh, int64_t S, int64_t hd,
                   bool causal) {
  const int64_t n = bh * S * hd;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<float> q = rng.vec(size_t(n), -2, 2), k = rng.vec(size_t(n), -2, 2),
                     v = rng.vec(size_t(n)), w = rng.vec(size_t(n));
  std::vector<double> o, lse;
  naiveAttention(toD(q), toD(k), toD(v), bh, S, hd, causal, scale, o, lse);
  Tensor &tq = h.f32({bh, S, hd}, q), &tk = h.f32({bh, S, hd}, k),
         &tv = h.f32({bh, S, hd}, v);
  Tensor &to = h.f32({bh, S, hd}), &tl = h.f32({bh, S});
  const std::vector<int64_t> attrs = {bh, S, hd, causal};
  const std::string label = "attention BH=" + std::to_string(bh) +
                            " S=" + std::to_string(S) + " hd=" +
                            std::to_string(hd) + (causal ? " causal" : "");
  if (!h.run(make(Op::Attention, attrs, {float(scale)}), {&tq, &tk, &tv},
             {&to, &tl}))
    return;
  closeTo((label + " o").c_str(), to.f(), o, 1e-5, 1e-6);
  closeTo((label + " lse").c_str(), tl.f(), lse, 1e-6, 1e-6);
  // Gradient of L = sum(o * w) by central differences of the naive forward.
  Tensor &tw = h.f32({bh, S, hd}, w);
  Tensor &dq = h.f32({bh, S, hd}), &dk = h.f32({bh, S, hd}),
         &dv = h.f32({bh, S, hd});
  if (!h.run(make(Op::AttentionGrad, attrs, {float(scale)}),
             {&tq, &tk, &tv, &to, &tl, &tw}, {&dq, &dk, &dv}))
    return;
  std::vector<double> x[3] = {toD(q), toD(k), toD(v)};
  const std::vector<double> wd = toD(w);
  std::vector<double> num[3];
  const double eps = 1e-5;
  auto loss = [&]() {
    std::vector<double> oo, ll;
    naiveAttention(x[0], x[1], x[2], bh, S, hd, causal, scale, oo, ll);
    double L = 0;
    for (size_t e = 0; e < oo.size(); ++e)
      L += oo[e] * wd[e];
    return L;
  };
  for (int t = 0; t < 3; ++t) {
    num[t].resize(size_t(n));
    for (int64_t e = 0; e < n; ++e) {
      const double keep = x[t][size_t(e)];
      x[t][size_t(e)] = keep + eps;
      const double up = loss();
      x[t][size_t(e)] = keep - eps;
      const double down = loss();
      x[t][size_t(e)] = keep;
      num[t][size_t(e)] = (up - down) / (2 * eps);
    }
  }
  closeTo((label + " dq").c_str(), dq.f(), num[0], 1e-4, 1e-5);
  closeTo((label + " dk").c_str(), dk.f(), num[1], 1e-4, 1e-5);
  closeTo((label + " dv").c_str(), dv.f(), num[2], 1e-4, 1e-5);
}

void testAttentionRefusals(Harness &h) {
  Tensor &q = h.f32({2, 4, 8}), &o = h.f32({2, 4, 8}), &l = h.f32({2, 4});
  Tensor &qb = h.alloc(DType::BF16, {2, 4, 8});
  h.reject("attention mixed dtypes", make(Op::Attention, {2, 4, 8, 1}, {0.5f}),
           {&q, &qb, &q}, {&o, &l}, "k must be f32");
  h.reject("attention wrong lse", make(Op::Attention, {2, 4, 8, 1}, {0.5f}),
           {&q, &q, &q}, {&o, &o}, "lse has 64 elements");
  h.reject("attention output aliasing q",
           make(Op::Attention, {2, 4, 8, 1}, {0.5f}), {&q, &q, &q}, {&q, &l},
           "o");
}

/// The residual stream in bf16 (megac --bf16-residual): LayerNorm's x,
/// LayerNormGrad's x and the residual of MatMul epilogue 2 may be bf16,
/// widened on load, so every output has the bits the f32 kernel gives for
/// the widened values; in place only at one width.
void testBf16Residual(Harness &h, Harness &conv, Rng &rng) {
  const int64_t r = 9, c = 37, n = r * c;
  Tensor &xb = bf16Tensor(h, {r, c}, rng.vec(n, -2, 2), conv);
  std::vector<float> wide(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k)
    wide[size_t(k)] = widen(bitsBf16(xb, k));
  Tensor &xf = h.f32({r, c}, wide);
  Tensor &w = h.f32({c}, rng.vec(c, 0.5, 1.5)), &b = h.f32({c}, rng.vec(c));
  Tensor &y1 = h.f32({r, c}), &m1 = h.f32({r}), &s1 = h.f32({r});
  Tensor &y2 = h.f32({r, c}), &m2 = h.f32({r}), &s2 = h.f32({r});
  const Instr ln = make(Op::LayerNorm, {r, c}, {1e-5f});
  if (h.run(ln, {&xf, &w, &b}, {&y1, &m1, &s1}) &&
      h.run(ln, {&xb, &w, &b}, {&y2, &m2, &s2})) {
    sameBits("layernorm bf16 x: y", y2.f(), y1.f(), size_t(n));
    sameBits("layernorm bf16 x: mean", m2.f(), m1.f(), size_t(r));
    sameBits("layernorm bf16 x: rstd", s2.f(), s1.f(), size_t(r));
  }
  // In place over a bf16 x only with a bf16 y.
  {
    Tensor &ax = h.arena(0, {r, c}, DType::BF16), &ay = h.arena(0, {r, c});
    h.reject("layernorm f32 y over bf16 x", ln, {&ax, &w, &b}, {&ay, &m1, &s1},
             "y overlaps x");
  }
  // LayerNormGrad with a bf16 x (and a bf16 dy), accumulating into dx.
  Tensor &dy = bf16Tensor(h, {r, c}, rng.vec(n), conv);
  const std::vector<float> start = rng.vec(n);
  Tensor &dx1 = h.f32({r, c}, start), &dx2 = h.f32({r, c}, start);
  Tensor &dw1 = h.f32({c}), &db1 = h.f32({c}), &dw2 = h.f32({c}),
         &db2 = h.f32({c});
  const Instr lng = make(Op::LayerNormGrad, {r, c, 1});
  if (h.run(lng, {&dy, &xf, &w, &m1, &s1}, {&dx1, &dw1, &db1}) &&
      h.run(lng, {&dy, &xb, &w, &m1, &s1}, {&dx2, &dw2, &db2})) {
    sameBits("layernorm grad bf16 x: dx", dx2.f(), dx1.f(), size_t(n));
    sameBits("layernorm grad bf16 x: dw", dw2.f(), dw1.f(), size_t(c));
    sameBits("layernorm grad bf16 x: db", db2.f(), db1.f(), size_t(c));
  }
  // MatMul epilogue 2 (bias + residual) with a bf16 residual, D f32 and
  // bf16, and in place (D = R, both bf16).
  const int64_t M = r, N = c, K = 5;
  Tensor &A = h.f32({M, K}, rng.vec(M * K)), &B = h.f32({K, N}, rng.vec(K * N));
  const Instr mm =
      make(Op::MatMul, {1, M, N, K, 0, 0, K, N, N, 0, 0, 0, 2}, {1.0f, 0.0f});
  Tensor &d1 = h.f32({M, N}), &d2 = h.f32({M, N});
  if (h.run(mm, {&A, &B, &b, &xf}, {&d1}) &&
      h.run(mm, {&A, &B, &b, &xb}, {&d2}))
    sameBits("epilogue bf16 residual: D f32", d2.f(), d1.f(), size_t(n));
  Tensor &dh = h.alloc(DType::BF16, {M, N});
  Tensor &rb = bf16Tensor(h, {M, N}, wide, conv);
  if (h.run(mm, {&A, &B, &b, &xb}, {&dh}) &&
      h.run(mm, {&A, &B, &b, &rb}, {&rb}))
    for (int64_t k = 0; k < n; ++k)
      CHECK(bitsBf16(rb, k) == bitsBf16(dh, k),
            "epilogue bf16 residual in place: element %lld differs",
            (long long)k);
  Tensor &ar = h.arena(0, {M, N}, DType::BF16), &ad = h.arena(0, {M, N});
  h.reject("epilogue f32 D over a bf16 residual", mm, {&A, &B, &b, &ar}, {&ad},
           "residual");
}

/// Kernels that write a bf16 output themselves (mega-fold-casts): the bits
/// are those of Cast applied to their f32 output.
void testBf16Outputs(Harness &h, Harness &conv, Rng &rng) {
  auto expectCast = [&](const char *what, const Tensor &f, const Tensor &b) {
    for (int64_t k = 0; k < f.n(); ++k) {
      uint32_t u;
      std::memcpy(&u, &f.f()[k], 4);
      u += 0x7fffu + ((u >> 16) & 1u);
      if (bitsBf16(b, k) != uint16_t(u >> 16)) {
        CHECK(false, "%s: element %lld is %04x, want %04x", what, (long long)k,
              bitsBf16(b, k), unsigned(u >> 16));
        return;
      }
    }
  };
  // Elementwise: gelu stored to an f32 and a bf16 output.
  const int64_t n = 1000;
  Tensor &x = h.f32({n}, rng.vec(n, -4, 4));
  Tensor &yf = h.f32({n}), &yb = h.alloc(DType::BF16, {n});
  using E = mega::plan::EwOp;
  const Instr ew = make(Op::Elementwise,
                        {n, 1, 2, n, int64_t(E::Load), 0, 0, 0, int64_t(E::Gelu),
                         1, 0, 0, int64_t(E::Store), 1, 0, 0, int64_t(E::Store),
                         1, 1, 0});
  if (h.run(ew, {&x}, {&yf, &yb}))
    expectCast("elementwise bf16 store", yf, yb);
  // Transpose f32 -> bf16.
  Tensor &t = h.f32({6, 35, 4}, rng.vec(6 * 35 * 4));
  Tensor &tf = h.f32({4, 6, 35}), &tb = h.alloc(DType::BF16, {4, 6, 35});
  const Instr tr = make(Op::Transpose, {3, 6, 35, 4, 2, 0, 1});
  if (h.run(tr, {&t}, {&tf}) && h.run(tr, {&t}, {&tb}))
    expectCast("transpose to bf16", tf, tb);
  // CrossEntropyGrad with bf16 dlogits.
  const int64_t rows = 7, V = 50;
  Tensor &logits = h.f32({rows, V}, rng.vec(rows * V, -3, 3));
  Tensor &targets = h.i32({rows}, {0, 5, 49, 7, 7, 12, 30});
  Tensor &loss = h.f32({1}), &lse = h.f32({rows});
  Tensor &dloss = h.f32({1}, {0.5f});
  Tensor &df = h.f32({rows, V}), &db = h.alloc(DType::BF16, {rows, V});
  if (h.run(make(Op::CrossEntropy, {rows, V}), {&logits, &targets}, {&loss, &lse}) &&
      h.run(make(Op::CrossEntropyGrad, {rows, V}), {&logits, &targets, &lse, &dloss}, {&df}) &&
      h.run(make(Op::CrossEntropyGrad, {rows, V}), {&logits, &targets, &lse, &dloss}, {&db}))
    expectCast("cross entropy grad to bf16", df, db);
  // Transpose bf16 -> bf16 (a value its producer rounded): the same bits as
  // rounding the f32 transpose, since rounding commutes with permuting.
  Tensor &tr2 = h.alloc(DType::BF16, {6, 35, 4});
  const Instr back = make(Op::Transpose, {3, 4, 6, 35, 1, 2, 0});
  Tensor &tf2 = h.f32({6, 35, 4});
  if (h.run(back, {&tb}, {&tr2}) && h.run(back, {&tf}, {&tf2}))
    expectCast("transpose bf16 to bf16", tf2, tr2);
  // LayerNorm with a bf16 y (mean and rstd stay f32), odd cols.
  const int64_t lr = 9, lc = 37;
  Tensor &lx = h.f32({lr, lc}, rng.vec(lr * lc, -2, 2));
  Tensor &lw = h.f32({lc}, rng.vec(lc)), &lb = h.f32({lc}, rng.vec(lc));
  Tensor &yF = h.f32({lr, lc}), &yB = h.alloc(DType::BF16, {lr, lc});
  Tensor &m1 = h.f32({lr}), &s1 = h.f32({lr}), &m2 = h.f32({lr}),
         &s2 = h.f32({lr});
  const Instr ln = make(Op::LayerNorm, {lr, lc}, {1e-5f});
  if (h.run(ln, {&lx, &lw, &lb}, {&yF, &m1, &s1}) &&
      h.run(ln, {&lx, &lw, &lb}, {&yB, &m2, &s2})) {
    expectCast("layernorm bf16 y", yF, yB);
    sameBits("layernorm bf16 y: mean", m1.f(), m2.f(), lr);
    sameBits("layernorm bf16 y: rstd", s1.f(), s2.f(), lr);
  }
  // Attention with a bf16 o (lse stays f32), causal and not, bf16 inputs.
  for (int causal = 0; causal < 2; ++causal) {
    const int64_t bh = 3, S = 7, hd = 5, an = bh * S * hd;
    Tensor &q = bf16Tensor(h, {bh, S, hd}, rng.vec(an), conv);
    Tensor &k = bf16Tensor(h, {bh, S, hd}, rng.vec(an), conv);
    Tensor &v = bf16Tensor(h, {bh, S, hd}, rng.vec(an), conv);
    Tensor &oF = h.f32({bh, S, hd}), &oB = h.alloc(DType::BF16, {bh, S, hd});
    Tensor &l1 = h.f32({bh, S}), &l2 = h.f32({bh, S});
    const Instr at = make(Op::Attention, {bh, S, hd, causal}, {0.4f});
    if (h.run(at, {&q, &k, &v}, {&oF, &l1}) &&
        h.run(at, {&q, &k, &v}, {&oB, &l2})) {
      expectCast(causal ? "causal attention bf16 o" : "attention bf16 o", oF,
                 oB);
      sameBits("attention bf16 o: lse", l1.f(), l2.f(), bh * S);
    }
  }
  // Only those outputs may be bf16; the inputs and statistics stay f32.
  h.reject("transpose bf16 in, f32 out", back, {&tb}, {&tf2},
           "a bf16 in needs a bf16 out, not f32");
  testBf16Residual(h, conv, rng);
  Tensor &mB = h.alloc(DType::BF16, {lr});
  h.reject("layernorm bf16 mean", ln, {&lx, &lw, &lb}, {&yB, &mB, &s1},
           "mean must be f32, not bf16");
  // A bf16 y over x's bytes: not in place (the widths differ).
  Tensor &ax = h.arena(0, {lr, lc}), &ay = h.arena(0, {lr, lc}, DType::BF16);
  h.reject("layernorm bf16 y over x", ln, {&ax, &lw, &lb}, {&ay, &m1, &s1},
           "y overlaps x");
  {
    Tensor &q = h.f32({2, 4, 8}), &lB = h.alloc(DType::BF16, {2, 4});
    Tensor &oB = h.alloc(DType::BF16, {2, 4, 8});
    h.reject("attention bf16 lse", make(Op::Attention, {2, 4, 8, 1}, {0.5f}),
             {&q, &q, &q}, {&oB, &lB}, "lse must be f32, not bf16");
  }

  // bf16 logits (mixed precision): widened, then the f32 kernels' math, so
  // loss, lse and f32 dlogits have the bits of f32 logits holding the same
  // values, and bf16 dlogits are those rounded; also over the logits'
  // own bytes.
  {
    const int64_t r = 6, v = 52;
    Tensor &xb = bf16Tensor(h, {r, v}, rng.vec(r * v, -4, 4), conv);
    std::vector<float> wide(size_t(r * v));
    for (int64_t k = 0; k < r * v; ++k)
      wide[size_t(k)] = widen(bitsBf16(xb, k));
    Tensor &xf = h.f32({r, v}, wide);
    Tensor &tg = h.i32({r}, {0, 51, 3, 3, 17, 40});
    Tensor &lossB = h.f32({1}), &lseB = h.f32({r});
    Tensor &lossF = h.f32({1}), &lseF = h.f32({r});
    Tensor &dl = h.f32({1}, {0.75f});
    const Instr ce = make(Op::CrossEntropy, {r, v});
    const Instr ceg = make(Op::CrossEntropyGrad, {r, v});
    if (h.run(ce, {&xb, &tg}, {&lossB, &lseB}) &&
        h.run(ce, {&xf, &tg}, {&lossF, &lseF})) {
      sameBits("bf16 logits: loss", lossB.f(), lossF.f(), 1);
      sameBits("bf16 logits: lse", lseB.f(), lseF.f(), size_t(r));
    }
    Tensor &dF = h.f32({r, v}), &dFB = h.f32({r, v});
    Tensor &dB = h.alloc(DType::BF16, {r, v});
    if (h.run(ceg, {&xf, &tg, &lseF, &dl}, {&dF}) &&
        h.run(ceg, {&xb, &tg, &lseF, &dl}, {&dFB}) &&
        h.run(ceg, {&xb, &tg, &lseF, &dl}, {&dB})) {
      sameBits("bf16 logits: f32 dlogits", dFB.f(), dF.f(), size_t(r * v));
      expectCast("bf16 logits: bf16 dlogits", dF, dB);
    }
    // In place: bf16 dlogits over the bf16 logits.
    Tensor &ax = h.arena(0, {r, v}, DType::BF16);
    Tensor &ad = h.arena(0, {r, v}, DType::BF16);
    std::memcpy(ax.data, xb.data, size_t(r * v) * 2);
    if (h.run(ceg, {&ax, &tg, &lseF, &dl}, {&ad}))
      expectCast("bf16 logits: bf16 dlogits in place", dF, ad);
    // f32 dlogits over bf16 logits: the widths differ.
    Tensor &adF = h.arena(0, {r, v});
    h.reject("bf16 logits, f32 dlogits over them", ceg,
             {&ax, &tg, &lseF, &dl}, {&adF}, "overlaps");
    Tensor &lseBad = h.alloc(DType::BF16, {r});
    h.reject("cross entropy bf16 lse", ce, {&xb, &tg}, {&lossB, &lseBad},
             "lse must be f32, not bf16");
  }

  // MatMul with a bf16 C (a folded cast): the bits of the f32 product
  // rounded; refused where C would be read or is not one block.
  {
    const int64_t M = 13, N = 40, K = 24, b = 2;
    Tensor &ab = bf16Tensor(h, {b * M * K}, rng.vec(b * M * K), conv);
    Tensor &bb = bf16Tensor(h, {b * K * N}, rng.vec(b * K * N), conv);
    Tensor &cF = h.f32({b * M * N});
    Tensor &cB = h.alloc(DType::BF16, {b * M * N});
    const Instr mm = make(Op::MatMul,
                          {b, M, N, K, 0, 1, K, K, N, M * K, K * N, M * N},
                          {1.0f, 0.0f});
    if (h.run(mm, {&ab, &bb}, {&cF}) && h.run(mm, {&ab, &bb}, {&cB}))
      expectCast("matmul bf16 C", cF, cB);
    h.reject("matmul bf16 C, beta 1",
             make(Op::MatMul, {b, M, N, K, 0, 1, K, K, N, M * K, K * N, M * N},
                  {1.0f, 1.0f}),
             {&ab, &bb}, {&cB}, "a bf16 C needs bf16 A and B");
    h.reject("matmul bf16 C, gaps between batch items",
             make(Op::MatMul,
                  {b, M - 1, N, K, 0, 1, K, K, N, M * K, K * N, M * N},
                  {1.0f, 0.0f}),
             {&ab, &bb}, {&cB}, "a bf16 C must be contiguous");
    Tensor &af = h.f32({b * M * K}, rng.vec(b * M * K));
    Tensor &bf = h.f32({b * K * N}, rng.vec(b * K * N));
    h.reject("matmul f32 operands, bf16 C", mm, {&af, &bf}, {&cB},
             "a bf16 C needs bf16 A and B");
  }
}

/// `bits` of an f32 tensor's element k.
uint32_t bitsF32(const Tensor &t, int64_t k) {
  uint32_t u;
  std::memcpy(&u, &t.f()[k], 4);
  return u;
}

/// Elementwise out... = in0 + in1 over n elements (a + b, both whole), the
/// micro-code megac emits for a residual gradient add; with `copy` the sum
/// is also stored to a second (bf16) output.
Instr ewAdd(int64_t n, bool copy) {
  std::vector<int64_t> i = {n, 2, copy ? 2 : 1, n, n, 0, 0, 0, 0, 0, 1, 1, 0,
                            3, 0, 0, 1, 1, 0, 0, 0};
  if (copy)
    i.insert(i.end(), {1, 0, 1, 0});
  return make(Op::Elementwise, i);
}

/// LayerNormGrad with accumulate (dx into a residual gradient r),
/// accumulate_wb (dw, db into gradients) and the bf16 copy of dx, against
/// the sequence mega-fuse-norm-grad replaces: the plain kernel, then
/// Elementwise r + dx (and its bf16 copy) or a Cast of dx, then g = g + dw
/// and g = g + db in place, and with dsum (1 fresh, 2 accumulating; with
/// the copy only) ReduceSum of the copy. Every result must have the same
/// bits. `wide`: each column of r also holds +2^40 and -2^40 in two random
/// rows; they cancel in the copy's column sum, and the small values added
/// between them are rounded to 2^-12, so the summation order shows in the
/// sum's f32 bits.
void testFusedLayerNormGrad(Harness &h, Harness &conv, Rng &rng, int64_t rows,
                            int64_t cols, bool dyBf16, bool acc, bool accWb,
                            bool copy, int dsum = 0, bool wide = false) {
  const int64_t n = rows * cols;
  const std::vector<float> dy = rng.vec(n), x = rng.vec(n, -2, 2),
                           w = rng.vec(cols, 0.5, 1.5), gw0 = rng.vec(cols),
                           gb0 = rng.vec(cols), s0 = rng.vec(cols);
  std::vector<float> r0 = rng.vec(n);
  if (wide)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t a = rng.index(rows), b = (a + 1 + rng.index(rows - 1)) % rows;
      r0[size_t(a * cols + j)] = std::ldexp(1.0f, 40);
      r0[size_t(b * cols + j)] = -std::ldexp(1.0f, 40);
    }
  std::vector<float> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  for (int64_t k = 0; k < rows; ++k) {
    mean[size_t(k)] = 0.1f * float(k % 7) - 0.3f;
    rstd[size_t(k)] = 0.8f + 0.05f * float(k % 11);
  }
  Tensor &tdy = dyBf16 ? bf16Tensor(h, {rows, cols}, dy, conv)
                       : h.f32({rows, cols}, dy);
  Tensor &tx = h.f32({rows, cols}, x), &tw = h.f32({cols}, w),
         &tm = h.f32({rows}, mean), &tr = h.f32({rows}, rstd);
  const std::string what =
      "fused layer norm grad " + std::to_string(rows) + "x" +
      std::to_string(cols) + (dyBf16 ? " bf16 dy" : "") + (acc ? " acc" : "") +
      (accWb ? " acc_wb" : "") + (copy ? " bf16 copy" : "") +
      (dsum == 1   ? " dsum"
       : dsum == 2 ? " dsum acc"
                   : "") +
      (wide ? " wide r" : "");
  // The unfused sequence.
  Tensor &dx1 = h.f32({rows, cols}), &dw1 = h.f32({cols}), &db1 = h.f32({cols});
  Tensor &r1 = h.f32({rows, cols}, r0), &gw1 = h.f32({cols}, gw0),
         &gb1 = h.f32({cols}, gb0);
  Tensor &sum1 = h.f32({rows, cols}), &h1 = h.alloc(DType::BF16, {rows, cols});
  if (!h.run(make(Op::LayerNormGrad, {rows, cols, 0}), {&tdy, &tx, &tw, &tm, &tr},
             {&dx1, &dw1, &db1}))
    return;
  if (acc) {
    std::vector<Tensor *> outs = {&sum1};
    if (copy)
      outs.push_back(&h1);
    if (!h.run(ewAdd(n, copy), {&r1, &dx1}, outs))
      return;
  } else if (copy && !h.run(make(Op::Cast, {n}), {&dx1}, {&h1})) {
    return;
  }
  if (accWb && (!h.run(ewAdd(cols, false), {&gw1, &dw1}, {&gw1}) ||
                !h.run(ewAdd(cols, false), {&gb1, &db1}, {&gb1})))
    return;
  Tensor &s1 = h.f32({cols}, s0);
  if (dsum &&
      !h.run(make(Op::ReduceSum, {rows, cols, dsum == 2}), {&h1}, {&s1}))
    return;
  // The fused kernel: dx accumulates into r's bytes, dw/db into g's.
  Tensor &dx2 = h.f32({rows, cols}, acc ? r0 : rng.vec(n));
  Tensor &dw2 = h.f32({cols}, accWb ? gw0 : rng.vec(cols));
  Tensor &db2 = h.f32({cols}, accWb ? gb0 : rng.vec(cols));
  Tensor &h2 = h.alloc(DType::BF16, {rows, cols});
  Tensor &s2 = h.f32({cols}, dsum == 2 ? s0 : rng.vec(cols));
  std::vector<int64_t> i = {rows, cols, acc};
  if (accWb || dsum)
    i.push_back(accWb);
  if (dsum)
    i.push_back(dsum == 2);
  std::vector<Tensor *> outs = {&dx2, &dw2, &db2};
  if (copy)
    outs.push_back(&h2);
  if (dsum)
    outs.push_back(&s2);
  if (!h.run(make(Op::LayerNormGrad, i), {&tdy, &tx, &tw, &tm, &tr}, outs))
    return;
  sameBits((what + " dx").c_str(), dx2.f(), acc ? sum1.f() : dx1.f(), size_t(n));
  sameBits((what + " dw").c_str(), dw2.f(), accWb ? gw1.f() : dw1.f(),
           size_t(cols));
  sameBits((what + " db").c_str(), db2.f(), accWb ? gb1.f() : db1.f(),
           size_t(cols));
  if (copy)
    for (int64_t k = 0; k < n; ++k)
      if (bitsBf16(h2, k) != bitsBf16(h1, k)) {
        CHECK(false, "%s dx_bf16: element %lld is %04x, want %04x",
              what.c_str(), (long long)k, bitsBf16(h2, k), bitsBf16(h1, k));
        break;
      }
  if (dsum)
    sameBits((what + " dsum").c_str(), s2.f(), s1.f(), size_t(cols));
  // The adds did something: a test that cannot fail is no test. (dsum's
  // s2 starts as s0, or random: only the sum itself matches s1.)
  if (accWb)
    CHECK(bitsF32(dw2, 0) != bitsF32(dw1, 0) || gw0[0] == 0.0f,
          "%s: dw was not accumulated", what.c_str());
}

/// The operands a fused LayerNormGrad refuses: a dx_bf16 of the wrong dtype
/// or size or overlapping another operand, a 5th output, a bad
/// accumulate_wb, a 5th attribute.
void testFusedLayerNormGradRefusals(Harness &h) {
  const int64_t R = 4, C = 8, n = R * C;
  Tensor &dy = h.f32({R, C}), &x = h.f32({R, C}), &w = h.f32({C}),
         &m = h.f32({R}), &s = h.f32({R}), &dx = h.f32({R, C}),
         &dw = h.f32({C}), &db = h.f32({C});
  Tensor &hb = h.alloc(DType::BF16, {R, C});
  const std::vector<Tensor *> ins = {&dy, &x, &w, &m, &s};
  h.run(make(Op::LayerNormGrad, {R, C, 1, 1}), ins, {&dx, &dw, &db, &hb});
  h.run(make(Op::LayerNormGrad, {R, C, 0, 0}), ins, {&dx, &dw, &db});
  Tensor &hf = h.f32({R, C}), &hs = h.alloc(DType::BF16, {n + 1});
  h.reject("layernorm grad f32 copy", make(Op::LayerNormGrad, {R, C, 0}), ins,
           {&dx, &dw, &db, &hf}, "dx_bf16");
  h.reject("layernorm grad copy size", make(Op::LayerNormGrad, {R, C, 0}), ins,
           {&dx, &dw, &db, &hs}, "dx_bf16 has 33");
  h.reject("layernorm grad accumulate_wb 2",
           make(Op::LayerNormGrad, {R, C, 0, 2}), ins, {&dx, &dw, &db},
           "accumulate_wb");
  h.reject("layernorm grad 5 attributes",
           make(Op::LayerNormGrad, {R, C, 0, 1, 0}), ins, {&dx, &dw, &db},
           "integer attributes");
  h.reject("layernorm grad 5 outputs", make(Op::LayerNormGrad, {R, C, 0}), ins,
           {&dx, &dw, &db, &hb, &dw}, "5th output (dsum) comes with the 5th");
  // dsum: the copy's column sums (5 outputs with 5 attributes).
  Tensor &ds = h.f32({C}), &dsb = h.alloc(DType::BF16, {C}),
         &dsl = h.f32({C + 1});
  h.run(make(Op::LayerNormGrad, {R, C, 0, 0, 1}), ins,
        {&dx, &dw, &db, &hb, &ds});
  h.reject("layernorm grad 6 outputs", make(Op::LayerNormGrad, {R, C, 0, 0, 1}),
           ins, {&dx, &dw, &db, &hb, &ds, &ds}, "3, 4 or 5 outputs");
  h.reject("layernorm grad dsum without its attribute",
           make(Op::LayerNormGrad, {R, C, 0, 0}), ins,
           {&dx, &dw, &db, &hb, &ds}, "5th output (dsum)");
  h.reject("layernorm grad dsum accumulate 2",
           make(Op::LayerNormGrad, {R, C, 0, 0, 2}), ins,
           {&dx, &dw, &db, &hb, &ds}, "dsum accumulate");
  h.reject("layernorm grad bf16 dsum", make(Op::LayerNormGrad, {R, C, 0, 0, 0}),
           ins, {&dx, &dw, &db, &hb, &dsb}, "dsum");
  h.reject("layernorm grad dsum size", make(Op::LayerNormGrad, {R, C, 0, 0, 0}),
           ins, {&dx, &dw, &db, &hb, &dsl}, "dsum has 9");
  h.reject("layernorm grad dsum is db",
           make(Op::LayerNormGrad, {R, C, 0, 0, 0}), ins,
           {&dx, &dw, &db, &hb, &db}, "dsum overlaps db");
  Tensor &hc = h.arena(1024, {R, C}, DType::BF16), &dsc = h.arena(1040, {C});
  h.reject("layernorm grad dsum inside the copy",
           make(Op::LayerNormGrad, {R, C, 0, 0, 1}), ins,
           {&dx, &dw, &db, &hc, &dsc}, "dsum overlaps dx_bf16");
  // The copy inside dx (arena bytes 0..127 are dx; the copy 64 bytes in).
  Tensor &dxa = h.arena(0, {R, C}), &ha = h.arena(64, {R, C}, DType::BF16);
  h.reject("layernorm grad copy inside dx", make(Op::LayerNormGrad, {R, C, 0}),
           ins, {&dxa, &dw, &db, &ha}, "dx_bf16 overlaps dx");
  // The copy over dy, and dw inside the copy.
  Tensor &dya = h.arena(256, {R, C}), &hd = h.arena(256, {R, C}, DType::BF16);
  h.reject("layernorm grad copy over dy", make(Op::LayerNormGrad, {R, C, 0}),
           {&dya, &x, &w, &m, &s}, {&dx, &dw, &db, &hd}, "dx_bf16 overlaps dy");
  Tensor &hw = h.arena(512, {R, C}, DType::BF16), &dwa = h.arena(544, {C});
  h.reject("layernorm grad dw inside the copy",
           make(Op::LayerNormGrad, {R, C, 0, 1}), ins, {&dx, &dwa, &db, &hw},
           "dx_bf16 overlaps dw");
}

} // namespace

/// A bias gradient summed from the gradient's bf16 copy: the widening is
/// exact, so the result has the f32 kernel's bits on the widened values
/// (with and without accumulating).
void testBf16ReduceSum(Harness &h, Harness &conv, Rng &rng, int64_t outer,
                       int64_t inner, bool acc) {
  const std::vector<float> x = rng.vec(outer * inner), y0 = rng.vec(inner);
  Tensor &xb = bf16Tensor(h, {outer, inner}, x, conv);
  std::vector<float> wide(x.size());
  for (size_t k = 0; k < x.size(); ++k)
    wide[k] = widen(bitsBf16(xb, int64_t(k)));
  Tensor &xf = h.f32({outer, inner}, wide);
  Tensor &y1 = h.f32({inner}, y0), &y2 = h.f32({inner}, y0);
  const Instr in = make(Op::ReduceSum, {outer, inner, acc});
  if (h.run(in, {&xb}, {&y1}) && h.run(in, {&xf}, {&y2}))
    sameBits(("bf16 reduce sum " + std::to_string(outer) + "x" +
              std::to_string(inner) + (acc ? " acc" : ""))
                 .c_str(),
             y1.f(), y2.f(), inner);
}

/// The GELU gradient with a bf16 dy (and a bf16 broadcast row and scalar
/// folded in), against the same program on f32 copies of the widened
/// values: the same bits, and a bf16 input may not be written over.
void testBf16Inputs(Harness &h, Harness &conv, Rng &rng, int64_t rows,
                    int64_t cols) {
  const int64_t n = rows * cols;
  using E = mega::plan::EwOp;
  const std::vector<float> x = rng.vec(n, -6, 6), dy = rng.vec(n),
                           row = rng.vec(cols);
  Tensor &dyb = bf16Tensor(h, {n}, dy, conv);
  Tensor &rowb = bf16Tensor(h, {cols}, row, conv);
  Tensor &sb = bf16Tensor(h, {1}, {-0.75f}, conv);
  auto wide = [&](Tensor &b) {
    std::vector<float> w(size_t(b.n()));
    for (int64_t k = 0; k < b.n(); ++k)
      w[size_t(k)] = widen(bitsBf16(b, k));
    return w;
  };
  Tensor &xf = h.f32({n}, x);
  Tensor &dyf = h.f32({n}, wide(dyb)), &rowf = h.f32({cols}, wide(rowb)),
         &sf = h.f32({1}, wide(sb));
  // y = gelu'(x) * dy * s + row
  const Instr ew = make(
      Op::Elementwise,
      {n, 4, 1, n, n, cols, 1, int64_t(E::Load), 0, 0, 0, int64_t(E::Load), 1,
       1, 0, int64_t(E::GeluGrad), 2, 0, 1, int64_t(E::Load), 3, 3, 0,
       int64_t(E::Mul), 2, 2, 3, int64_t(E::Load), 4, 2, 0, int64_t(E::Add), 2,
       2, 4, int64_t(E::Store), 2, 0, 0});
  Tensor &y1 = h.f32({n}), &y2 = h.f32({n});
  const std::string what = "elementwise bf16 inputs " + std::to_string(rows) +
                           "x" + std::to_string(cols);
  if (h.run(ew, {&xf, &dyb, &rowb, &sb}, {&y1}) &&
      h.run(ew, {&xf, &dyf, &rowf, &sf}, {&y2}))
    sameBits(what.c_str(), y1.f(), y2.f(), n);
  // An f32 output over a bf16 input's bytes would read rounded values it
  // has overwritten: refused.
  Tensor &inA = h.arena(0, {n}, DType::BF16), &outA = h.arena(0, {n});
  h.reject(("written over a bf16 input " + what).c_str(), ew,
           {&xf, &inA, &rowb, &sb}, {&outA}, "an output overlaps a bf16 input");
}

/// LayerNormGrad reading a bf16 dy (a bf16 product's gradient): dx, dw and
/// db are the f32 kernel's bits on the widened dy, with and without
/// accumulating into dx.
void testBf16LayerNormGrad(Harness &h, Harness &conv, Rng &rng, int64_t rows,
                           int64_t cols, bool acc) {
  const int64_t n = rows * cols;
  const std::vector<float> dy = rng.vec(n), x = rng.vec(n, -2, 2),
                           w = rng.vec(cols, 0.5, 1.5), dx0 = rng.vec(n);
  std::vector<float> mean(size_t(rows), 0.1f), rstd(size_t(rows), 1.3f);
  Tensor &dyb = bf16Tensor(h, {rows, cols}, dy, conv);
  std::vector<float> wide(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k)
    wide[size_t(k)] = widen(bitsBf16(dyb, k));
  Tensor &dyf = h.f32({rows, cols}, wide), &tx = h.f32({rows, cols}, x);
  Tensor &tw = h.f32({cols}, w), &tm = h.f32({rows}, mean),
         &tr = h.f32({rows}, rstd);
  Tensor &dx1 = h.f32({rows, cols}, dx0), &dw1 = h.f32({cols}),
         &db1 = h.f32({cols});
  Tensor &dx2 = h.f32({rows, cols}, dx0), &dw2 = h.f32({cols}),
         &db2 = h.f32({cols});
  const Instr in = make(Op::LayerNormGrad, {rows, cols, acc});
  if (!h.run(in, {&dyb, &tx, &tw, &tm, &tr}, {&dx1, &dw1, &db1}) ||
      !h.run(in, {&dyf, &tx, &tw, &tm, &tr}, {&dx2, &dw2, &db2}))
    return;
  const std::string what = "layer norm grad bf16 dy " + std::to_string(rows) +
                           "x" + std::to_string(cols) + (acc ? " acc" : "");
  sameBits((what + " dx").c_str(), dx1.f(), dx2.f(), n);
  sameBits((what + " dw").c_str(), dw1.f(), dw2.f(), cols);
  sameBits((what + " db").c_str(), db1.f(), db2.f(), cols);
}

int main() {
  Harness h(4), conv(1);
  Rng rng(23);
  testCast(h);
  testBf16MatMul(h, conv, rng, 17, 33, 9, false, false);
  testBf16MatMul(h, conv, rng, 64, 48, 128, true, false);
  testBf16MatMul(h, conv, rng, 31, 64, 16, false, true);
  testAttention(h, rng, 2, 5, 3, true);
  testAttention(h, rng, 3, 7, 4, false);
  testAttention(h, rng, 1, 9, 8, true);
  testAttentionRefusals(h);
  testBf16Outputs(h, conv, rng);
  testBf16ReduceSum(h, conv, rng, 1000, 33, false);
  testBf16ReduceSum(h, conv, rng, 300, 768, true);
  testBf16ReduceSum(h, conv, rng, 3, 1, false);
  testBf16Inputs(h, conv, rng, 700, 33);
  testBf16Inputs(h, conv, rng, 3, 1);
  testBf16LayerNormGrad(h, conv, rng, 70, 96, false);
  testBf16LayerNormGrad(h, conv, rng, 33, 17, true);
  // The fused forms: every combination, f32 and bf16 dy, GPT-2's width with
  // rows that leave a last block of 32 short, and an odd width.
  for (int dyBf16 : {0, 1})
    for (int acc : {0, 1})
      for (int accWb : {0, 1})
        for (int copy : {0, 1}) {
          testFusedLayerNormGrad(h, conv, rng, 70, 768, dyBf16, acc, accWb, copy);
          testFusedLayerNormGrad(h, conv, rng, 33, 17, dyBf16, acc, accWb, copy);
        }
  // The copy's column sums (ReduceSum's bits): fresh and accumulating,
  // with every other form, over rows that leave ReduceSum's last block of
  // 256 rows short (600), a single short block (70, 33) and an odd width.
  for (int dsum : {1, 2})
    for (int acc : {0, 1})
      for (int accWb : {0, 1}) {
        testFusedLayerNormGrad(h, conv, rng, 600, 768, dsum == 2, acc, accWb,
                               true, dsum);
        testFusedLayerNormGrad(h, conv, rng, 70, 96, dsum == 1, acc, accWb,
                               true, dsum);
        testFusedLayerNormGrad(h, conv, rng, 33, 17, false, acc, accWb, true,
                               dsum);
      }
  // r with cancelling +-2^40 in each column: the copy's sums round, so only
  // ReduceSum's order gives their bits.
  for (int dsum : {1, 2}) {
    testFusedLayerNormGrad(h, conv, rng, 1000, 64, true, true, true, true, dsum,
                           true);
    testFusedLayerNormGrad(h, conv, rng, 300, 7, false, true, false, true, dsum,
                           true);
  }
  testFusedLayerNormGradRefusals(h);
  return finish("test_precision");
}

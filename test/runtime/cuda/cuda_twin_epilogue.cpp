//===- cuda_twin_epilogue.cpp - Twins of MatMul with an epilogue ----------===//
//
// MatMul with i[12] = 1 (bias), 2 (bias + residual), 3 (bias + GELU with
// the pre-activation as aux), fp32 and bf16 operands, D f32 and bf16, at
// odd shapes (every transpose), at GPT-2 small's Linear shapes, with the
// residual in place (D = R), a misaligned bias (bf16: not cuBLASLt's
// epilogue but the plain product and the epilogue kernel), a misaligned D
// (GELU's element kernel) and K = 0; GELU's aux f32 or bf16; the GELU
// gradient (4) likewise, with aux or D off the alignment DGELU wants. The
// residual f32 or bf16 (the stream of a --bf16-residual plan: cuBLASLt's
// C when D is bf16 too, else widened by the epilogue kernel). The
// CUDA paths: cuBLASLt's BIAS epilogue into f32 D or aux (+ the GELU pass),
// its GELU_AUX_BIAS epilogue (D and aux bf16), its DGELU epilogue, and the
// plain product (cuBLAS fp32, cuBLASLt bf16) + the epilogue kernel. The
// bias gradient (5): cuBLASLt's BGRADA, or the product and ReduceSum.
// The bias f32 or bf16 (mega-bf16-bias: cuBLASLt's epilogues take it only
// in the type of what they write). fp32 operands and f32 outputs at rel
// 1e-5, anything bf16 at rel 1e-2.
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

namespace twincheck {

namespace {

const char *epiName(int64_t e) {
  return e == 1 ? "bias" : e == 2 ? "bias+res" : "bias+gelu";
}

struct E {
  int64_t M, N, K;
  int ta, tb;
  int64_t epi;
  DType ab, d;
  bool inPlace = false; ///< residual: D is R's bytes
  int64_t biasOff = 0;  ///< elements the bias starts late in its buffer
  bool twice = false;   ///< also: the same bits in two CUDA runs
  bool dLate = false;   ///< D starts one element late in its buffer
  DType aux = DType::F32; ///< GELU's pre-activation
  bool auxLate = false;   ///< aux starts one element late in its buffer
  DType res = DType::F32; ///< the residual (epilogue 2)
  DType bias = DType::F32; ///< the bias (widened on load when bf16)
  int64_t aPad = 0; ///< A's rows this many elements longer than its columns
};

void epilogueCase(const E &e, Rng &rng) {
  const int64_t aRows = e.ta ? e.K : e.M, aCols = e.ta ? e.M : e.K;
  const int64_t bRows = e.tb ? e.N : e.K, bCols = e.tb ? e.K : e.N;
  const int64_t mn = e.M * e.N;
  Case c =
      make(std::string("MatMul ") + epiName(e.epi) + " ab=" + name(e.ab) +
               " D=" + name(e.d) + " " +
               dims({{"M", e.M},
                     {"N", e.N},
                     {"K", e.K},
                     {"tA", e.ta},
                     {"tB", e.tb}}) +
               (e.epi == 2 ? std::string(" R=") + name(e.res) : "") +
               (e.inPlace ? " D=R" : "") + (e.biasOff ? " bias+1" : "") +
               (e.dLate ? " D+1" : "") +
               (e.epi == 3 ? std::string(" aux=") + name(e.aux) : "") +
               (e.auxLate ? " aux+1" : "") +
               (e.bias == DType::BF16 ? " bias=bf16" : "") +
               (e.aPad ? " lda+" + std::to_string(e.aPad) : ""),
           Op::MatMul,
           {1, e.M, e.N, e.K, e.ta, e.tb, std::max<int64_t>(1, aCols + e.aPad),
            std::max<int64_t>(1, bCols), e.N, 0, 0, 0, e.epi},
           {1.0f, 0.0f});
  auto in = [&](int64_t n) {
    std::vector<float> x = rng.vec(n);
    return e.ab == DType::BF16 ? c.bf16({n}, x) : c.f32({n}, x);
  };
  const int a = in(aRows * (aCols + e.aPad)), b = in(bRows * bCols);
  const bool biasH = e.bias == DType::BF16;
  const int biasBuf = biasH
                          ? c.bf16({e.N + e.biasOff}, rng.vec(e.N + e.biasOff))
                          : c.f32({e.N + e.biasOff}, rng.vec(e.N + e.biasOff));
  const int bias = c.view(biasBuf, {e.N});
  c.ts[size_t(bias)].v.offset = e.biasOff * (biasH ? 2 : 4);
  c.ins = {a, b, bias};
  int d;
  if (e.epi == 2) {
    int r;
    if (e.res == DType::BF16) {
      r = c.bf16({mn}, rng.vec(mn));
      if (e.inPlace)
        c.compare.push_back(r);
    } else {
      r = e.inPlace ? c.inout({mn}, rng.vec(mn)) : c.f32({mn}, rng.vec(mn));
    }
    c.ins.push_back(r);
    d = e.inPlace ? c.same(r) : c.out({mn}, e.d);
  } else if (e.dLate) {
    // Misaligned for the vector forms: the element kernels.
    d = c.view(c.out({mn + 1}, e.d), {mn});
    c.ts[size_t(d)].v.offset = e.d == DType::BF16 ? 2 : 4;
  } else {
    d = c.out({mn}, e.d);
  }
  c.outs = {d};
  if (e.epi == 3 && e.auxLate) {
    const int x = c.view(c.out({mn + 1}, e.aux), {mn});
    c.ts[size_t(x)].v.offset = e.aux == DType::BF16 ? 2 : 4;
    c.outs.push_back(x);
  } else if (e.epi == 3) {
    c.outs.push_back(c.out({mn}, e.aux));
  }
  c.tol =
      e.ab == DType::BF16 || e.d == DType::BF16 || e.aux == DType::BF16 || biasH
          ? 1e-2
          : 1e-5;
  twin(c);
  if (e.twice)
    deterministic(c);
}

/// Epilogue 4: D = gelu'(aux) * (A B), aux an input (the pre-activation);
/// aux and D may start `auxOff` and `dOff` elements late in their buffers
/// (off the alignment cuBLASLt's DGELU path asks for).
void geluGradCase(int64_t M, int64_t N, int64_t K, int ta, int tb, DType ab,
                  DType aux, DType d, Rng &rng, bool twice = false,
                  int64_t auxOff = 0, int64_t dOff = 0) {
  const int64_t aRows = ta ? K : M, aCols = ta ? M : K;
  const int64_t bRows = tb ? N : K, bCols = tb ? K : N;
  const int64_t mn = M * N;
  Case c = make(std::string("MatMul gelu-grad ab=") + name(ab) +
                    " aux=" + name(aux) + " D=" + name(d) + " " +
                    dims({{"M", M}, {"N", N}, {"K", K}, {"tA", ta}, {"tB", tb}}) +
                    (auxOff ? " aux+" + std::to_string(auxOff) : "") +
                    (dOff ? " D+" + std::to_string(dOff) : ""),
                Op::MatMul,
                {1, M, N, K, ta, tb, std::max<int64_t>(1, aCols),
                 std::max<int64_t>(1, bCols), N, 0, 0, 0, 4},
                {1.0f, 0.0f});
  auto in = [&](DType t, int64_t n, double lo, double hi) {
    std::vector<float> x = rng.vec(n, lo, hi);
    return t == DType::BF16 ? c.bf16({n}, x) : c.f32({n}, x);
  };
  auto bytes = [](DType t) { return t == DType::BF16 ? 2 : 4; };
  const int a = in(ab, aRows * aCols, -1, 1), b = in(ab, bRows * bCols, -1, 1);
  int x = in(aux, mn + auxOff, -4, 4);
  if (auxOff) {
    x = c.view(x, {mn});
    c.ts[size_t(x)].v.offset = auxOff * bytes(aux);
  }
  c.ins = {a, b, x};
  int y = c.out({mn + dOff}, d); // compared whole: the skipped head stays NaN
  if (dOff) {
    y = c.view(y, {mn});
    c.ts[size_t(y)].v.offset = dOff * bytes(d);
  }
  c.outs = {y};
  c.tol = ab == DType::BF16 || d == DType::BF16 || aux == DType::BF16 ? 1e-2
                                                                      : 1e-5;
  twin(c);
  if (twice)
    deterministic(c);
}

/// Epilogue 5: C = op(A) B + beta C and g (+)= the column sums of B
/// [K, N] (acc); bf16 operands take cuBLASLt's BGRADA (into g, or into
/// scratch then added into g), f32 ones the plain product and the ReduceSum
/// kernel; g may start `gOff` elements late (off the alignment BGRADA is
/// given: the plain path).
void biasGradCase(int64_t M, int64_t N, int64_t K, int ta, DType ab,
                  float beta, int acc, Rng &rng, int64_t gOff = 0) {
  const int64_t aRows = ta ? K : M, aCols = ta ? M : K;
  const int64_t mn = M * N;
  Case c = make(std::string("MatMul bias-grad ab=") + name(ab) + " " +
                    dims({{"M", M},
                          {"N", N},
                          {"K", K},
                          {"tA", ta},
                          {"beta", int64_t(beta)},
                          {"acc", acc}}) +
                    (gOff ? " g+" + std::to_string(gOff) : ""),
                Op::MatMul,
                {1, M, N, K, ta, 0, std::max<int64_t>(1, aCols),
                 std::max<int64_t>(1, N), std::max<int64_t>(1, N), 0, 0, 0, 5,
                 acc},
                {1.0f, beta});
  auto in = [&](int64_t n) {
    std::vector<float> x = rng.vec(n);
    return ab == DType::BF16 ? c.bf16({n}, x) : c.f32({n}, x);
  };
  c.ins = {in(aRows * aCols), in(K * N)};
  const int C = beta != 0.0f ? c.inout({mn}, rng.vec(mn)) : c.out({mn});
  // g compared whole: a skipped head stays as it was on both sides.
  int g = acc ? c.inout({N + gOff}, rng.vec(N + gOff)) : c.out({N + gOff});
  if (gOff) {
    g = c.view(g, {N});
    c.ts[size_t(g)].v.offset = gOff * 4;
  }
  c.outs = {C, g};
  c.tol = ab == DType::BF16 ? 1e-2 : 1e-5;
  twin(c);
}

} // namespace

void matmulEpilogue(Rng &rng) {
  const DType F = DType::F32, H = DType::BF16;
  // Odd shapes, every transpose, every form, both operand types, both Ds
  // (and for GELU both auxes; for the residual both types: a bf16 one is
  // cuBLASLt's C when everything is bf16, else the epilogue kernel's).
  for (DType ab : {F, H})
    for (DType d : {F, H})
      for (int64_t epi : {1, 2, 3})
        for (DType aux : {F, H})
          for (int t = 0; t < 4; ++t) {
            if (epi == 1 && aux == H)
              continue;
            E o{t < 2 ? 7 : 33, t < 2 ? 33 : 17, t == 3 ? 8 : 17, t & 1,
                (t >> 1) & 1, epi, ab, d};
            // aux's loop gives the residual's type for epilogue 2.
            (epi == 2 ? o.res : o.aux) = aux;
            epilogueCase(o, rng);
          }
  // Residual in place, misaligned bias (bf16: off cuBLASLt's epilogue), K 0.
  for (DType ab : {F, H}) {
    E r{64, 96, 40, 0, 1, 2, ab, F};
    r.inPlace = true;
    epilogueCase(r, rng);
    for (int64_t epi : {1, 3}) {
      E m{64, 96, 40, 0, 0, epi, ab, F};
      m.biasOff = 1;
      epilogueCase(m, rng);
    }
    for (DType d : {F, H}) {
      E late{64, 96, 40, 0, 0, 3, ab, d};
      late.dLate = true;
      epilogueCase(late, rng);
    }
    epilogueCase({5, 9, 0, 0, 0, 2, ab, F}, rng);
    epilogueCase({5, 9, 0, 0, 0, 3, ab, H}, rng);
  }
  // GPT-2 small (micro-batch 16 x 1024 tokens, hidden 768): c_attn (bias),
  // attn proj (bias + residual in place), c_fc on 4096 tokens (GELU, bf16
  // activation as mega-fold-casts leaves it), an fp32 Linear.
  epilogueCase({16384, 2304, 768, 0, 0, 1, H, F}, rng);
  E proj{16384, 768, 768, 0, 0, 2, H, F};
  proj.inPlace = true;
  epilogueCase(proj, rng);
  E fc{4096, 3072, 768, 0, 0, 3, H, H};
  fc.twice = true;
  epilogueCase(fc, rng);
  // c_fc as megac's bf16 plans have it: D and aux bf16 (cuBLASLt's
  // GELU_AUX_BIAS), every transpose at a smaller size, and aux misaligned
  // (the epilogue kernel).
  fc.aux = H;
  epilogueCase(fc, rng);
  for (int t = 0; t < 4; ++t) {
    E g{256, 384, 64, t & 1, (t >> 1) & 1, 3, H, H};
    g.aux = H;
    epilogueCase(g, rng);
  }
  // The GELU gradient (epilogue 4): every transpose and dtype mix at odd
  // sizes (the plain product + kernel), K = 0, and GPT-2's c_proj dX product
  // as megac's bf16 plans have it (bf16 everything: cuBLASLt's DGELU).
  for (DType ab : {F, H})
    for (DType aux : {F, H})
      for (DType d : {F, H})
        for (int t = 0; t < 4; ++t)
          geluGradCase(t < 2 ? 7 : 33, t < 2 ? 33 : 17, t == 3 ? 8 : 17, t & 1,
                       (t >> 1) & 1, ab, aux, d, rng);
  geluGradCase(5, 9, 0, 0, 0, H, H, H, rng);
  for (int t = 0; t < 4; ++t)
    geluGradCase(256, 384, 64, t & 1, (t >> 1) & 1, H, H, H, rng);
  geluGradCase(4096, 3072, 768, 0, 1, H, H, H, rng, true);
  E late{256, 384, 64, 0, 0, 3, H, H};
  late.aux = H;
  late.auxLate = true;
  epilogueCase(late, rng);
  // Off the cuBLASLt epilogues' alignment at shapes they would take: bf16
  // aux 2 and 8 bytes late (DGELU wants 16: the plain product + kernel), a
  // bf16 D 2 bytes late (DGELU, GELU_AUX_BIAS and BIAS told so, or the
  // kernel), and a bias 4 bytes late under GELU with D and aux bf16.
  geluGradCase(256, 384, 64, 0, 1, H, H, H, rng, false, 1, 0);
  geluGradCase(256, 384, 64, 0, 1, H, H, H, rng, false, 4, 0);
  geluGradCase(256, 384, 64, 0, 1, H, H, H, rng, false, 0, 1);
  for (int64_t epi : {1, 3}) {
    E dl{256, 384, 64, 0, 0, epi, H, H};
    dl.aux = H;
    dl.dLate = true;
    epilogueCase(dl, rng);
  }
  E bl{256, 384, 64, 0, 0, 3, H, H};
  bl.aux = H;
  bl.biasOff = 1;
  epilogueCase(bl, rng);
  epilogueCase({4096, 2304, 768, 0, 0, 1, H, H}, rng);
  epilogueCase({2048, 3072, 768, 0, 0, 3, F, F}, rng);
  // A bf16 residual (widened on load) in place (D = R, both bf16) for both
  // operand types, with a misaligned bias (the kernel), K = 0, and GPT-2
  // small's attention and MLP projections as a --bf16-residual plan has
  // them (bf16 everything, in place), the first twice.
  for (DType ab : {F, H}) {
    E r{64, 96, 40, 0, 1, 2, ab, H};
    r.res = H;
    r.inPlace = true;
    epilogueCase(r, rng);
  }
  E rb{256, 384, 64, 0, 0, 2, H, H};
  rb.res = H;
  rb.biasOff = 1;
  epilogueCase(rb, rng);
  E rk{5, 9, 0, 0, 0, 2, H, H};
  rk.res = H;
  epilogueCase(rk, rng);
  for (int64_t K : {768, 3072}) {
    E p{16384, 768, K, 0, 0, 2, H, H};
    p.res = H;
    p.inPlace = true;
    p.twice = K == 768;
    epilogueCase(p, rng);
  }
  // A bf16 bias (mega-bf16-bias): every form, operand type and D at odd
  // shapes (cuBLASLt's epilogues where D, or GELU's aux, is bf16, else the
  // epilogue kernel widening it), 2 bytes late (the kernel), and GPT-2
  // small's Linears as megac's bf16 plans have them: c_attn (BIAS, bf16
  // D), c_fc (GELU_AUX_BIAS), both twice, and the projections of a
  // --bf16-residual plan.
  for (DType ab : {F, H})
    for (DType d : {F, H})
      for (int64_t epi : {1, 2, 3})
        for (int t = 0; t < 4; ++t) {
          E o{t < 2 ? 7 : 33,
              t < 2 ? 33 : 17,
              t == 3 ? 8 : 17,
              t & 1,
              (t >> 1) & 1,
              epi,
              ab,
              d};
          o.bias = H;
          (epi == 2 ? o.res : o.aux) = d;
          epilogueCase(o, rng);
        }
  for (int64_t epi : {1, 2, 3}) {
    E o{256, 384, 64, 0, 0, epi, H, H};
    o.bias = H;
    (epi == 2 ? o.res : o.aux) = H;
    epilogueCase(o, rng);
    o.biasOff = 1;
    epilogueCase(o, rng);
  }
  E qkv{16384, 2304, 768, 0, 0, 1, H, H};
  qkv.bias = H;
  qkv.twice = true;
  epilogueCase(qkv, rng);
  E fcH{16384, 3072, 768, 0, 0, 3, H, H};
  fcH.aux = H;
  fcH.bias = H;
  fcH.twice = true;
  epilogueCase(fcH, rng);
  for (int64_t K : {768, 3072}) {
    E p{16384, 768, K, 0, 0, 2, H, H};
    p.res = H;
    p.inPlace = true;
    p.bias = H;
    epilogueCase(p, rng);
  }
  // c_attn and c_fc reading the norm's rows padded with the ones column
  // (mega-ones-column: lda 776).
  qkv.aPad = fcH.aPad = 8;
  qkv.twice = fcH.twice = false;
  epilogueCase(qkv, rng);
  epilogueCase(fcH, rng);
  // The bias gradient (epilogue 5): both operand types, A transposed or
  // not, beta 0 and 1, fresh and accumulated sums at odd sizes; g off
  // alignment; K = 0 (no rows to sum) and M = 0 (sums without a product);
  // GPT-2 small's c_fc and c_attn weight gradients as megac's bf16 plans
  // have them (x^T dy added into the f32 gradient, dy bf16).
  for (DType ab : {F, H})
    for (int ta : {0, 1})
      for (float beta : {0.0f, 1.0f})
        for (int acc : {0, 1})
          biasGradCase(ta ? 33 : 7, 40, 17, ta, ab, beta, acc, rng);
  biasGradCase(64, 96, 40, 1, H, 1.0f, 1, rng, 1);
  biasGradCase(64, 96, 40, 1, H, 1.0f, 0, rng, 1);
  biasGradCase(5, 9, 0, 1, H, 1.0f, 1, rng);
  biasGradCase(0, 24, 16, 1, H, 1.0f, 1, rng);
  biasGradCase(0, 24, 16, 1, F, 0.0f, 0, rng);
  biasGradCase(768, 3072, 16384, 1, H, 1.0f, 1, rng);
  biasGradCase(768, 2304, 16384, 1, H, 1.0f, 1, rng);
}

} // namespace twincheck

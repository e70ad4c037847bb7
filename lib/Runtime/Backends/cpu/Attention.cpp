//===- Attention.cpp - Fused attention and its gradient -------------------===//
//
// The CPU twin of the GPU's flash attention (opcodes Attention and
// AttentionGrad). Per (batch*head) slice, with s = scale * q k^T:
//
//   lse_i = log sum_j exp(s_ij)      o = p v,  p_ij = exp(s_ij - lse_i)
//                                    (j <= i when causal, else p_ij = 0)
//
// and backwards, with p recomputed from lse and D_i = dout_i . o_i:
//
//   ds = p * (dout v^T - D)      dq = scale ds k    dk = scale ds^T q
//   dv = p^T dout
//
// One slice's [S, S] scores exist at a time, in a per-slice scratch (the
// GPU keeps only a tile of them; what the plan promises is that no [B,
// heads, S, S] tensor is ever in the arena). The products are OpenBLAS
// sgemm calls, each whole (never split, so the bits do not depend on the
// thread count); the softmax sums are in double. bf16 operands are widened
// first (fp32 math, as on the tensor cores). Slices run in parallel.
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "MathApprox.h"
#include "Reduce.h"

#include <cmath>
#include <limits>

#include <cblas.h>

namespace mega::rt::cpu {

namespace {

constexpr int64_t kBig = int64_t(1) << 40;

struct Dims {
  int64_t bh, seq, hd;
  bool causal;
  float scale;
};

Dims checkCommon(const Checker &c, const char *const *names, size_t nsame) {
  c.attrs(4, 1);
  Dims d;
  d.bh = c.attr(0, 0, kBig, "BH");
  d.seq = c.attr(1, 1, kBig, "S");
  d.hd = c.attr(2, 1, 1 << 16, "hd");
  d.causal = c.flag(3, "causal");
  d.scale = c.finite(0, "scale");
  const DType t = c.ins[0]->dtype;
  if (t != DType::F32 && t != DType::BF16)
    c.fail(std::string("q must be f32 or bf16, not ") + plan::dtypeName(t));
  const i128 n = i128(d.bh) * d.seq * d.hd;
  for (size_t k = 0; k < nsame; ++k)
    c.tensor(c.ins[k], t, n, names[k]);
  return d;
}

} // namespace

void checkAttention(const Checker &c) {
  c.operands(3, 2);
  static const char *const names[] = {"q", "k", "v"};
  Dims d = checkCommon(c, names, 3);
  // o may be bf16 (a cast folded into attention: rounded on store); lse
  // stays f32 for the gradient.
  c.tensor(c.outs[0],
           c.outs[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32,
           i128(d.bh) * d.seq * d.hd, "o");
  c.tensor(c.outs[1], DType::F32, i128(d.bh) * d.seq, "lse");
  for (size_t o = 0; o < 2; ++o)
    for (size_t k = 0; k < 3; ++k)
      c.disjoint(c.outs[o], c.ins[k], o ? "lse" : "o", names[k]);
  c.disjoint(c.outs[0], c.outs[1], "o", "lse");
}

void checkAttentionGrad(const Checker &c) {
  c.operands(6, 3);
  // q, k, v, o share a dtype; so does dout (input 5), checked below.
  static const char *const names[] = {"q", "k", "v", "o"};
  Dims d = checkCommon(c, names, 4);
  const i128 n = i128(d.bh) * d.seq * d.hd;
  c.tensor(c.ins[4], DType::F32, i128(d.bh) * d.seq, "lse");
  c.tensor(c.ins[5], c.ins[0]->dtype, n, "dout");
  static const char *const outNames[] = {"dq", "dk", "dv"};
  static const char *const inNames[] = {"q", "k", "v", "o", "lse", "dout"};
  for (size_t o = 0; o < 3; ++o) {
    c.tensor(c.outs[o], DType::F32, n, outNames[o]);
    for (size_t k = 0; k < 6; ++k)
      c.disjoint(c.outs[o], c.ins[k], outNames[o], inNames[k]);
    for (size_t p = 0; p < o; ++p)
      c.disjoint(c.outs[o], c.outs[p], outNames[o], outNames[p]);
  }
}

namespace {

Dims dimsOf(const Instr &in) {
  return Dims{in.i[0], in.i[1], in.i[2], in.i[3] != 0, in.f[0]};
}

/// p [S, S] = exp(scale q k^T - lse) row by row (0 where masked). With
/// `lse` null, each row's logsumexp is computed first and written to
/// `lseOut`.
void probabilities(const Dims &d, const float *q, const float *k, float *p,
                   const float *lse, float *lseOut) {
  const int S = int(d.seq), hd = int(d.hd);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, hd, d.scale, q,
              hd, k, hd, 0.0f, p, S);
  for (int64_t i = 0; i < d.seq; ++i) {
    float *row = p + i * d.seq;
    const int64_t valid = d.causal ? i + 1 : d.seq;
    float l;
    if (lse) {
      l = lse[i];
    } else {
      const float m = maxF(row, valid);
      for (int64_t j = 0; j < valid; ++j)
        row[j] = vexp(row[j] - m);
      const double z = sumD(row, valid);
      lseOut[i] = float(double(m) + std::log(z));
      const float inv = float(1.0 / z);
      for (int64_t j = 0; j < valid; ++j)
        row[j] *= inv;
      for (int64_t j = valid; j < d.seq; ++j)
        row[j] = 0.0f;
      continue;
    }
    for (int64_t j = 0; j < valid; ++j)
      row[j] = vexp(row[j] - l);
    for (int64_t j = valid; j < d.seq; ++j)
      row[j] = 0.0f;
  }
}

} // namespace

void runAttention(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const Dims d = dimsOf(in);
  const int64_t n = d.bh * d.seq * d.hd;
  std::vector<float> sq, sk, sv;
  const float *q = floatsOf(ins[0], n, sq), *k = floatsOf(ins[1], n, sk),
              *v = floatsOf(ins[2], n, sv);
  // A bf16 o: each slice's o in floats, then rounded once (the GPU's twin:
  // its accumulator is f32 and rounds on the final store).
  const bool bf16 = outs[0].value->dtype == DType::BF16;
  float *o = bf16 ? nullptr : outs[0].f32();
  uint16_t *oh = bf16 ? outs[0].bf16() : nullptr;
  float *lse = outs[1].f32();
  const int S = int(d.seq), hd = int(d.hd);
  parallelForEach(ctx, d.bh, [&](int64_t s) {
    const int64_t base = s * d.seq * d.hd;
    std::vector<float> p(static_cast<size_t>(d.seq * d.seq));
    std::vector<float> os(bf16 ? size_t(d.seq * d.hd) : 0);
    float *dst = bf16 ? os.data() : o + base;
    probabilities(d, q + base, k + base, p.data(), nullptr, lse + s * d.seq);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, hd, S, 1.0f,
                p.data(), S, v + base, hd, 0.0f, dst, hd);
    if (bf16)
      for (int64_t e = 0; e < d.seq * d.hd; ++e)
        oh[base + e] = floatToBf16(os[size_t(e)]);
  });
}

void runAttentionGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const Dims d = dimsOf(in);
  const int64_t n = d.bh * d.seq * d.hd;
  std::vector<float> sq, sk, sv, so, sdo;
  const float *q = floatsOf(ins[0], n, sq), *k = floatsOf(ins[1], n, sk),
              *v = floatsOf(ins[2], n, sv), *o = floatsOf(ins[3], n, so),
              *dout = floatsOf(ins[5], n, sdo);
  const float *lse = ins[4].f32();
  float *dq = outs[0].f32(), *dk = outs[1].f32(), *dv = outs[2].f32();
  const int S = int(d.seq), hd = int(d.hd);
  parallelForEach(ctx, d.bh, [&](int64_t s) {
    const int64_t base = s * d.seq * d.hd;
    const size_t sq2 = size_t(d.seq * d.seq);
    std::vector<float> p(sq2), dp(sq2);
    probabilities(d, q + base, k + base, p.data(), lse + s * d.seq, nullptr);
    // dp = dout v^T, then ds = scale * p * (dp - D) in place.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, hd, 1.0f,
                dout + base, hd, v + base, hd, 0.0f, dp.data(), S);
    for (int64_t i = 0; i < d.seq; ++i) {
      const float D = float(dotD(dout + base + i * d.hd, o + base + i * d.hd, d.hd));
      const float *pr = p.data() + i * d.seq;
      float *r = dp.data() + i * d.seq;
      for (int64_t j = 0; j < d.seq; ++j)
        r[j] = d.scale * pr[j] * (r[j] - D);
    }
    // dv = p^T dout; dq = ds k; dk = ds^T q.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, hd, S, 1.0f,
                p.data(), S, dout + base, hd, 0.0f, dv + base, hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, hd, S, 1.0f,
                dp.data(), S, k + base, hd, 0.0f, dq + base, hd);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, hd, S, 1.0f,
                dp.data(), S, q + base, hd, 0.0f, dk + base, hd);
  });
}

} // namespace mega::rt::cpu

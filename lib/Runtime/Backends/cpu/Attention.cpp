//===- Attention.cpp - Fused attention and its gradient -------------------===//
//
// The CPU twin of the GPU's flash attention (opcodes Attention and
// AttentionGrad). Per (batch*head) slice and query row i:
//
//   s_j = scale * q_i . k_j          (j <= i when causal)
//   lse_i = log sum_j exp(s_j)       o_i = sum_j exp(s_j - lse_i) v_j
//
// and backwards, with p_ij = exp(s_ij - lse_i) recomputed and
// D_i = dout_i . o_i:
//
//   ds_ij = p_ij (dout_i . v_j - D_i)
//   dq_i = scale sum_j ds_ij k_j   dk_j = scale sum_i ds_ij q_i
//   dv_j = sum_i p_ij dout_i
//
// One row of scores lives at a time (the [S, S] matrix never exists). The
// sums are in double, so this is the reference the GPU's fp32 tiles are
// measured against; bf16 operands are widened first (fp32 math, as on the
// tensor cores). Slices run in parallel, each serially: the bits do not
// depend on the thread count.
//
//===----------------------------------------------------------------------===//
#include "Common.h"

#include <cmath>
#include <limits>

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
  c.tensor(c.outs[0], DType::F32, i128(d.bh) * d.seq * d.hd, "o");
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

double dot(const float *a, const float *b, int64_t n) {
  double s = 0.0;
  for (int64_t k = 0; k < n; ++k)
    s += double(a[k]) * double(b[k]);
  return s;
}

Dims dimsOf(const Instr &in) {
  return Dims{in.i[0], in.i[1], in.i[2], in.i[3] != 0, in.f[0]};
}

} // namespace

void runAttention(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const Dims d = dimsOf(in);
  const int64_t n = d.bh * d.seq * d.hd;
  std::vector<float> sq, sk, sv;
  const float *q = floatsOf(ins[0], n, sq), *k = floatsOf(ins[1], n, sk),
              *v = floatsOf(ins[2], n, sv);
  float *o = outs[0].f32(), *lse = outs[1].f32();
  parallelForEach(ctx, d.bh, [&](int64_t s) {
    const int64_t base = s * d.seq * d.hd;
    std::vector<double> score(size_t(d.seq)), acc(size_t(d.hd));
    for (int64_t i = 0; i < d.seq; ++i) {
      const float *qi = q + base + i * d.hd;
      const int64_t keys = d.causal ? i + 1 : d.seq;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < keys; ++j) {
        score[size_t(j)] = double(d.scale) * dot(qi, k + base + j * d.hd, d.hd);
        m = std::max(m, score[size_t(j)]);
      }
      double l = 0.0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < keys; ++j) {
        const double p = std::exp(score[size_t(j)] - m);
        l += p;
        const float *vj = v + base + j * d.hd;
        for (int64_t c = 0; c < d.hd; ++c)
          acc[size_t(c)] += p * double(vj[c]);
      }
      float *oi = o + base + i * d.hd;
      for (int64_t c = 0; c < d.hd; ++c)
        oi[c] = float(acc[size_t(c)] / l);
      lse[s * d.seq + i] = float(m + std::log(l));
    }
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
  parallelForEach(ctx, d.bh, [&](int64_t s) {
    const int64_t base = s * d.seq * d.hd;
    const size_t slice = size_t(d.seq * d.hd);
    std::vector<double> gq(slice, 0.0), gk(slice, 0.0), gv(slice, 0.0);
    for (int64_t i = 0; i < d.seq; ++i) {
      const float *qi = q + base + i * d.hd, *di = dout + base + i * d.hd;
      const double D = dot(di, o + base + i * d.hd, d.hd);
      const double li = double(lse[s * d.seq + i]);
      const int64_t keys = d.causal ? i + 1 : d.seq;
      for (int64_t j = 0; j < keys; ++j) {
        const float *kj = k + base + j * d.hd, *vj = v + base + j * d.hd;
        const double p = std::exp(double(d.scale) * dot(qi, kj, d.hd) - li);
        const double ds = p * (dot(di, vj, d.hd) - D) * double(d.scale);
        double *gqi = &gq[size_t(i * d.hd)];
        double *gkj = &gk[size_t(j * d.hd)], *gvj = &gv[size_t(j * d.hd)];
        for (int64_t c = 0; c < d.hd; ++c) {
          gqi[c] += ds * double(kj[c]);
          gkj[c] += ds * double(qi[c]);
          gvj[c] += p * double(di[c]);
        }
      }
    }
    for (size_t e = 0; e < slice; ++e) {
      dq[base + int64_t(e)] = float(gq[e]);
      dk[base + int64_t(e)] = float(gk[e]);
      dv[base + int64_t(e)] = float(gv[e]);
    }
  });
}

} // namespace mega::rt::cpu

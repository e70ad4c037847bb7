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
// Strided layouts (docs/plan-format.md, opcodes 29 and 30): with heads H,
// slice bh = b*H + h of an operand group starts at element b*sB + h*sH and
// its row s at + s*sS (the head dim contiguous), so q, k, v can be views of
// the projection's [B, S, 3, H, hd] output and o, dout, dq, dk, dv of
// [B, S, H, hd] buffers. Each slice's rows are gathered into a contiguous
// [S, hd] scratch (and the outputs scattered back), so a strided plan runs
// exactly the products of the contiguous one: the same bits.
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

/// Element strides of one operand group: slice bh = b*H + h starts at
/// b*sB + h*sH, its row s at + s*sS.
struct Layout {
  int64_t sB, sH, sS;
};

struct Dims {
  int64_t bh, seq, hd;
  bool causal;
  float scale;
  int64_t heads;          ///< H (1 in the contiguous form)
  Layout qkv, o, dout, g; ///< g: dq, dk, dv
};

/// The contiguous [BH, S, hd] layout (heads 1).
Layout contiguous(int64_t seq, int64_t hd) { return Layout{seq * hd, 0, hd}; }

/// Where row s of slice bh starts.
inline int64_t rowAt(const Layout &l, int64_t heads, int64_t bh, int64_t s) {
  return (bh / heads) * l.sB + (bh % heads) * l.sH + s * l.sS;
}

/// The integer attributes: {BH, S, hd, causal}, then optionally H and the
/// strides of each group (Attention: q|k|v, o; AttentionGrad: q|k|v, o,
/// dout, dq|dk|dv).
Dims dimsOf(const Instr &in) {
  Dims d{in.i[0], in.i[1], in.i[2], in.i[3] != 0, in.f[0], 1, {}, {}, {}, {}};
  const Layout c = contiguous(d.seq, d.hd);
  d.qkv = d.o = d.dout = d.g = c;
  if (in.i.size() > 4) {
    d.heads = in.i[4];
    Layout *groups[] = {&d.qkv, &d.o, &d.dout, &d.g};
    const bool grad = in.op == Op::AttentionGrad;
    size_t k = 5;
    for (Layout *l : groups) {
      if (!grad && (l == &d.dout || l == &d.g))
        continue;
      *l = Layout{in.i[k], in.i[k + 1], in.i[k + 2]};
      k += 3;
    }
  }
  return d;
}

/// The elements a strided operand spans: its last row's end.
i128 span(const Dims &d, const Layout &l) {
  if (d.bh == 0)
    return 0;
  const i128 b = d.bh / d.heads;
  return (b - 1) * l.sB + i128(d.heads - 1) * l.sH + i128(d.seq - 1) * l.sS +
         d.hd;
}

/// Refuses an output layout two of whose rows could share an element: the
/// (stride, extent) pairs sorted by stride must each step past everything
/// the smaller ones cover (a sufficient condition; every layout megac
/// writes satisfies it).
void rowsDisjoint(const Checker &c, const Dims &d, const Layout &l,
                  const char *name) {
  std::pair<int64_t, int64_t> dims[] = {
      {l.sB, d.bh / d.heads}, {l.sH, d.heads}, {l.sS, d.seq}};
  std::sort(std::begin(dims), std::end(dims));
  i128 covered = d.hd;
  for (auto [stride, extent] : dims) {
    if (extent <= 1)
      continue;
    if (stride < covered)
      c.fail(std::string(name) + "'s rows overlap (stride " +
             std::to_string(stride) + " < " + toString(covered) + ")");
    covered = i128(stride) * (extent - 1) + covered;
  }
}

/// Two outputs of one layout in the same buffer (dq, dk, dv interleaved in
/// a [B, S, 3, H, hd] buffer): proves that no row of one meets a row of the
/// other by listing the row starts (bounded, so the check stays cheap).
void interleavedDisjoint(const Checker &c, const Dims &d, const Layout &l,
                         const Value *a, const Value *b, const char *an,
                         const char *bn) {
  if (!overlaps(*a, *b))
    return;
  const int64_t esize = plan::dtypeSize(a->dtype);
  const int64_t delta = b->offset - a->offset;
  const i128 rows = i128(d.bh) * d.seq;
  if (delta % esize != 0 || rows > (i128(1) << 24))
    c.fail(std::string(bn) + " overlaps " + an);
  const int64_t shift = delta / esize;
  std::vector<int64_t> starts;
  starts.reserve(size_t(rows));
  for (int64_t s = 0; s < d.bh; ++s)
    for (int64_t r = 0; r < d.seq; ++r)
      starts.push_back(rowAt(l, d.heads, s, r));
  std::sort(starts.begin(), starts.end());
  // Rows [x, x + hd) of a and [y + shift, y + shift + hd) of b meet when
  // |x - y - shift| < hd: for each y, the nearest x at or above y + shift
  // - hd + 1.
  for (int64_t y : starts) {
    const int64_t lo = y + shift - d.hd + 1;
    auto it = std::lower_bound(starts.begin(), starts.end(), lo);
    if (it != starts.end() && *it < y + shift + d.hd)
      c.fail(std::string(bn) + " overlaps " + an);
  }
}

Dims checkCommon(const Checker &c, const char *const *names, size_t nsame,
                 size_t groups) {
  const size_t strided = 5 + 3 * groups;
  if (c.instr.i.size() != 4 && c.instr.i.size() != strided)
    c.fail("expects 4 or " + std::to_string(strided) +
           " integer attributes, got " + std::to_string(c.instr.i.size()));
  c.attrs(c.instr.i.size(), 1);
  Dims d;
  d.bh = c.attr(0, 0, kBig, "BH");
  d.seq = c.attr(1, 1, kBig, "S");
  d.hd = c.attr(2, 1, 1 << 16, "hd");
  d.causal = c.flag(3, "causal");
  d.scale = c.finite(0, "scale");
  if (c.instr.i.size() > 4) {
    const int64_t heads = c.attr(4, 1, kBig, "H");
    if (d.bh % heads != 0)
      c.fail("BH = " + std::to_string(d.bh) +
             " is not a multiple of H = " + std::to_string(heads));
    for (size_t k = 5; k < strided; ++k)
      c.attr(k, 0, kBig, "stride");
  }
  const Dims full = dimsOf(c.instr);
  d.heads = full.heads;
  d.qkv = full.qkv;
  d.o = full.o;
  d.dout = full.dout;
  d.g = full.g;
  const DType t = c.ins[0]->dtype;
  if (t != DType::F32 && t != DType::BF16)
    c.fail(std::string("q must be f32 or bf16, not ") + plan::dtypeName(t));
  for (size_t k = 0; k < nsame; ++k)
    c.dtype(c.ins[k], t, names[k]);
  return d;
}

/// An operand of layout `l`: exactly [BH, S, hd] in the contiguous form,
/// else at least as many elements as its last row's end.
void operand(const Checker &c, const Dims &d, const Value *v, DType t,
             const Layout &l, const char *name) {
  if (c.instr.i.size() == 4) {
    c.tensor(v, t, i128(d.bh) * d.seq * d.hd, name);
    return;
  }
  c.dtype(v, t, name);
  const i128 need = span(d, l);
  if (i128(c.numel(v, name)) < need)
    c.fail(std::string(name) + " has " + std::to_string(c.numel(v, name)) +
           " elements, its strides reach " + toString(need));
}

} // namespace

void checkAttention(const Checker &c) {
  c.operands(3, 2);
  static const char *const names[] = {"q", "k", "v"};
  Dims d = checkCommon(c, names, 3, 2);
  for (size_t k = 0; k < 3; ++k)
    operand(c, d, c.ins[k], c.ins[0]->dtype, d.qkv, names[k]);
  // o may be bf16 (a cast folded into attention: rounded on store); lse
  // stays f32 for the gradient.
  operand(c, d, c.outs[0],
          c.outs[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32, d.o, "o");
  rowsDisjoint(c, d, d.o, "o");
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
  Dims d = checkCommon(c, names, 4, 4);
  const DType t = c.ins[0]->dtype;
  for (size_t k = 0; k < 3; ++k)
    operand(c, d, c.ins[k], t, d.qkv, names[k]);
  operand(c, d, c.ins[3], t, d.o, "o");
  c.tensor(c.ins[4], DType::F32, i128(d.bh) * d.seq, "lse");
  operand(c, d, c.ins[5], t, d.dout, "dout");
  static const char *const outNames[] = {"dq", "dk", "dv"};
  static const char *const inNames[] = {"q", "k", "v", "o", "lse", "dout"};
  // dq, dk, dv: one dtype, f32 or bf16 (a cast folded in: rounded on store).
  const DType gt = c.outs[0]->dtype == DType::BF16 ? DType::BF16 : DType::F32;
  for (size_t o = 0; o < 3; ++o) {
    operand(c, d, c.outs[o], gt, d.g, outNames[o]);
    rowsDisjoint(c, d, d.g, outNames[o]);
    for (size_t k = 0; k < 6; ++k)
      c.disjoint(c.outs[o], c.ins[k], outNames[o], inNames[k]);
    for (size_t p = 0; p < o; ++p) {
      if (c.instr.i.size() == 4)
        c.disjoint(c.outs[o], c.outs[p], outNames[o], outNames[p]);
      else
        interleavedDisjoint(c, d, d.g, c.outs[p], c.outs[o], outNames[p],
                            outNames[o]);
    }
  }
}

namespace {

/// p [S, S] = exp(scale q k^T - lse) row by row (0 where masked). With
/// `lse` null, each row's logsumexp is computed first and written to
/// `lseOut`.
void probabilities(const Dims &d, const float *q, const float *k, float *p,
                   const float *lse, float *lseOut) {
  const int S = int(d.seq), hd = int(d.hd);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, hd, d.scale, q, hd,
              k, hd, 0.0f, p, S);
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

/// Slice bh of an operand as a contiguous [S, hd] float array (widened
/// from bf16), in `buf`.
void gather(const TensorRef &t, const Dims &d, const Layout &l, int64_t bh,
            float *buf) {
  const bool half = t.value->dtype == DType::BF16;
  for (int64_t s = 0; s < d.seq; ++s) {
    const int64_t at = rowAt(l, d.heads, bh, s);
    float *dst = buf + s * d.hd;
    if (half) {
      const uint16_t *src = static_cast<const uint16_t *>(t.data) + at;
      for (int64_t c = 0; c < d.hd; ++c)
        dst[c] = bf16ToFloat(src[c]);
    } else {
      std::memcpy(dst, static_cast<const float *>(t.data) + at,
                  size_t(d.hd) * 4);
    }
  }
}

/// Writes a contiguous [S, hd] slice to slice bh of an output (rounded
/// once when the output is bf16).
void scatter(const TensorRef &t, const Dims &d, const Layout &l, int64_t bh,
             const float *buf) {
  const bool half = t.value->dtype == DType::BF16;
  for (int64_t s = 0; s < d.seq; ++s) {
    const int64_t at = rowAt(l, d.heads, bh, s);
    const float *src = buf + s * d.hd;
    if (half) {
      uint16_t *dst = static_cast<uint16_t *>(t.data) + at;
      for (int64_t c = 0; c < d.hd; ++c)
        dst[c] = floatToBf16(src[c]);
    } else {
      std::memcpy(static_cast<float *>(t.data) + at, src, size_t(d.hd) * 4);
    }
  }
}

} // namespace

void runAttention(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const Dims d = dimsOf(in);
  float *lse = outs[1].f32();
  const int S = int(d.seq), hd = int(d.hd);
  const size_t slice = size_t(d.seq * d.hd);
  // o in floats per slice, then stored (rounded once when bf16: the GPU's
  // twin, whose accumulator is f32 and rounds on the final store).
  parallelForEach(ctx, d.bh, [&](int64_t s) {
    std::vector<float> p(static_cast<size_t>(d.seq * d.seq));
    std::vector<float> buf(4 * slice);
    float *q = buf.data(), *k = q + slice, *v = k + slice, *o = v + slice;
    gather(ins[0], d, d.qkv, s, q);
    gather(ins[1], d, d.qkv, s, k);
    gather(ins[2], d, d.qkv, s, v);
    probabilities(d, q, k, p.data(), nullptr, lse + s * d.seq);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, hd, S, 1.0f,
                p.data(), S, v, hd, 0.0f, o, hd);
    scatter(outs[0], d, d.o, s, o);
  });
}

void runAttentionGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const Dims d = dimsOf(in);
  const float *lse = ins[4].f32();
  const int S = int(d.seq), hd = int(d.hd);
  const size_t slice = size_t(d.seq * d.hd);
  parallelForEach(ctx, d.bh, [&](int64_t s) {
    const size_t sq2 = size_t(d.seq * d.seq);
    std::vector<float> p(sq2), dp(sq2), buf(8 * slice);
    float *q = buf.data(), *k = q + slice, *v = k + slice, *o = v + slice,
          *dout = o + slice, *dq = dout + slice, *dk = dq + slice,
          *dv = dk + slice;
    gather(ins[0], d, d.qkv, s, q);
    gather(ins[1], d, d.qkv, s, k);
    gather(ins[2], d, d.qkv, s, v);
    gather(ins[3], d, d.o, s, o);
    gather(ins[5], d, d.dout, s, dout);
    probabilities(d, q, k, p.data(), lse + s * d.seq, nullptr);
    // dp = dout v^T, then ds = scale * p * (dp - D) in place.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, hd, 1.0f, dout,
                hd, v, hd, 0.0f, dp.data(), S);
    for (int64_t i = 0; i < d.seq; ++i) {
      const float D = float(dotD(dout + i * d.hd, o + i * d.hd, d.hd));
      const float *pr = p.data() + i * d.seq;
      float *r = dp.data() + i * d.seq;
      for (int64_t j = 0; j < d.seq; ++j)
        r[j] = d.scale * pr[j] * (r[j] - D);
    }
    // dv = p^T dout; dq = ds k; dk = ds^T q.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, hd, S, 1.0f,
                p.data(), S, dout, hd, 0.0f, dv, hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, hd, S, 1.0f,
                dp.data(), S, k, hd, 0.0f, dq, hd);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, hd, S, 1.0f,
                dp.data(), S, q, hd, 0.0f, dk, hd);
    scatter(outs[0], d, d.g, s, dq);
    scatter(outs[1], d, d.g, s, dk);
    scatter(outs[2], d, d.g, s, dv);
  });
}

} // namespace mega::rt::cpu

//===- test_attention_layout.cpp - Strided Attention / AttentionGrad -----===//
//
// The strided operand layouts of Attention and AttentionGrad
// (docs/plan-format.md, opcodes 29 and 30) against the contiguous form:
// q, k, v read as views of one [B, S, 3, H, hd] buffer, o and dout as
// [B, S, H, hd], dq, dk, dv written into one [B, S, 3, H, hd] buffer must
// give exactly the bits of the contiguous [BH, S, hd] kernels on the
// permuted operands (the kernel gathers each slice into the contiguous
// form, so the products are the same). Then what check() must refuse:
// strides reaching past a value, overlapping output rows, dq and dk rows
// meeting, H not dividing BH, a wrong attribute count.
//
//===----------------------------------------------------------------------===//
#include "KernelTest.h"

#include <cmath>

using namespace kt;

namespace {

/// A view of `base`'s bytes from `byteOffset` on, `n` elements long.
Tensor viewOf(const Tensor &base, int64_t byteOffset, int64_t n) {
  Tensor t;
  t.v = base.v;
  t.v.offset = base.v.offset + byteOffset;
  t.v.shape = {n};
  t.data = static_cast<char *>(base.data) + byteOffset;
  return t;
}

/// Element size of a dtype (f32 4, bf16 2).
int64_t esize(DType t) { return t == DType::BF16 ? 2 : 4; }

/// f32 -> bf16 bits, round to nearest even (finite values).
uint16_t roundBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

/// Random bits of dtype t (bf16: the upper half of a random float).
void fillRandom(Tensor &t, Rng &rng) {
  const std::vector<float> x = rng.vec(size_t(t.n()), -2, 2);
  if (t.v.dtype == DType::BF16) {
    auto *p = static_cast<uint16_t *>(t.data);
    for (size_t k = 0; k < x.size(); ++k) {
      uint32_t u;
      std::memcpy(&u, &x[k], 4);
      p[k] = uint16_t(u >> 16);
    }
  } else {
    t.set(x);
  }
}

/// Copies element (bh, s, c) between a contiguous [BH, S, hd] tensor and a
/// strided one ({sB, sH, sS} with H heads, from element `at`).
void permute(const Tensor &contig, const Tensor &strided, int64_t at, int64_t H,
             int64_t BH, int64_t S, int64_t hd, const int64_t (&st)[3],
             bool toStrided) {
  const int64_t es = esize(contig.v.dtype);
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t s = 0; s < S; ++s) {
      char *c = static_cast<char *>(contig.data) + ((bh * S + s) * hd) * es;
      char *x = static_cast<char *>(strided.data) +
                (at + (bh / H) * st[0] + (bh % H) * st[1] + s * st[2]) * es;
      if (toStrided)
        std::memcpy(x, c, size_t(hd * es));
      else
        std::memcpy(c, x, size_t(hd * es));
    }
}

bool sameBytes(const Tensor &a, const Tensor &b) {
  return a.v.bytes() == b.v.bytes() &&
         std::memcmp(a.data, b.data, size_t(a.v.bytes())) == 0;
}

void testPacked(Harness &h, Rng &rng, DType t, int64_t B, int64_t H, int64_t S,
                int64_t hd, bool causal) {
  const int64_t BH = B * H, n = BH * S * hd, HD = H * hd;
  const std::string label =
      std::string(t == DType::BF16 ? "bf16" : "f32") +
      " B=" + std::to_string(B) + " H=" + std::to_string(H) +
      " S=" + std::to_string(S) + " hd=" + std::to_string(hd) +
      (causal ? " causal" : "");
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // The packed projection output and its contiguous q, k, v.
  Tensor &P = h.alloc(t, {B, S, 3, H, hd});
  fillRandom(P, rng);
  const int64_t qkvSt[3] = {S * 3 * HD, hd, 3 * HD};
  const int64_t oSt[3] = {S * HD, hd, HD};
  Tensor *qc[3];
  for (int j = 0; j < 3; ++j) {
    qc[j] = &h.alloc(t, {BH, S, hd});
    permute(*qc[j], P, j * HD, H, BH, S, hd, qkvSt, false);
  }
  const int64_t span = B * S * 3 * HD - 2 * HD;
  Tensor q = viewOf(P, 0, span), k = viewOf(P, HD * esize(t), span),
         v = viewOf(P, 2 * HD * esize(t), span);
  // Forward: contiguous vs strided (o in [B, S, H, hd], bf16 when t is).
  Tensor &oc = h.alloc(t, {BH, S, hd}), &lc = h.f32({BH, S});
  Tensor &os = h.alloc(t, {B, S, H, hd}), &ls = h.f32({BH, S});
  const std::vector<int64_t> plain = {BH, S, hd, causal};
  std::vector<int64_t> fwd = {BH, S, hd, causal, H};
  fwd.insert(fwd.end(), std::begin(qkvSt), std::end(qkvSt));
  fwd.insert(fwd.end(), std::begin(oSt), std::end(oSt));
  if (!h.run(make(Op::Attention, plain, {scale}), {qc[0], qc[1], qc[2]},
             {&oc, &lc}) ||
      !h.run(make(Op::Attention, fwd, {scale}), {&q, &k, &v}, {&os, &ls}))
    return;
  Tensor &oBack = h.alloc(t, {BH, S, hd});
  permute(oBack, os, 0, H, BH, S, hd, oSt, false);
  CHECK(sameBytes(oBack, oc), "[%s] strided o differs from contiguous",
        label.c_str());
  CHECK(sameBytes(ls, lc), "[%s] strided lse differs", label.c_str());
  // Backward: dout random in [B, S, H, hd]; dq | dk | dv into one packed
  // f32 buffer.
  Tensor &ds = h.alloc(t, {B, S, H, hd}), &dc = h.alloc(t, {BH, S, hd});
  fillRandom(ds, rng);
  permute(dc, ds, 0, H, BH, S, hd, oSt, false);
  Tensor &gc0 = h.f32({BH, S, hd}), &gc1 = h.f32({BH, S, hd}),
         &gc2 = h.f32({BH, S, hd});
  Tensor &G = h.f32({B, S, 3, H, hd});
  std::memset(G.data, 0xff, size_t(G.v.bytes())); // NaN: every row written?
  Tensor dq = viewOf(G, 0, span), dk = viewOf(G, HD * 4, span),
         dv = viewOf(G, 2 * HD * 4, span);
  std::vector<int64_t> bwd = {BH, S, hd, causal, H};
  for (const int64_t *st : {qkvSt, oSt, oSt, qkvSt})
    bwd.insert(bwd.end(), st, st + 3);
  if (!h.run(make(Op::AttentionGrad, plain, {scale}),
             {qc[0], qc[1], qc[2], &oc, &lc, &dc}, {&gc0, &gc1, &gc2}) ||
      !h.run(make(Op::AttentionGrad, bwd, {scale}), {&q, &k, &v, &os, &ls, &ds},
             {&dq, &dk, &dv}))
    return;
  Tensor *gc[3] = {&gc0, &gc1, &gc2};
  for (int j = 0; j < 3; ++j) {
    Tensor &back = h.f32({BH, S, hd});
    permute(back, G, j * HD, H, BH, S, hd, qkvSt, false);
    CHECK(sameBytes(back, *gc[j]), "[%s] strided d%c differs", label.c_str(),
          "qkv"[j]);
  }
  bool finite = true;
  for (int64_t e = 0; e < G.n(); ++e)
    finite = finite && std::isfinite(G.f()[e]);
  CHECK(finite, "[%s] a packed gradient element was not written",
        label.c_str());
  // The same into a bf16 buffer (mega-fold-casts folds the gradients' Cast
  // into the kernel): every element the f32 result rounded, none unwritten.
  Tensor &Gh = h.alloc(DType::BF16, {B, S, 3, H, hd});
  std::memset(Gh.data, 0xff, size_t(Gh.v.bytes()));
  Tensor hq = viewOf(Gh, 0, span), hk = viewOf(Gh, HD * 2, span),
         hv = viewOf(Gh, 2 * HD * 2, span);
  if (!h.run(make(Op::AttentionGrad, bwd, {scale}), {&q, &k, &v, &os, &ls, &ds},
             {&hq, &hk, &hv}))
    return;
  const uint16_t *bits = static_cast<const uint16_t *>(Gh.data);
  int64_t wrong = 0;
  for (int64_t e = 0; e < G.n(); ++e)
    wrong += bits[e] != roundBf16(G.f()[e]);
  CHECK(wrong == 0, "[%s] %lld bf16 gradient elements are not the f32 ones "
        "rounded", label.c_str(), (long long)wrong);
  (void)n;
}

void testRefusals(Harness &h) {
  const int64_t B = 2, H = 3, S = 4, hd = 8, HD = H * hd, BH = B * H;
  Tensor &P = h.f32({B, S, 3, H, hd});
  const int64_t span = B * S * 3 * HD - 2 * HD;
  Tensor q = viewOf(P, 0, span), k = viewOf(P, HD * 4, span),
         v = viewOf(P, 2 * HD * 4, span);
  Tensor &o = h.f32({B, S, H, hd}), &l = h.f32({BH, S});
  const std::vector<int64_t> good = {BH, S,      hd,     1,  H, S * 3 * HD,
                                     hd, 3 * HD, S * HD, hd, HD};
  h.run(make(Op::Attention, good, {0.5f}), {&q, &k, &v}, {&o, &l});
  // v one element short of its last row.
  Tensor vShort = viewOf(P, 2 * HD * 4, span - 1);
  h.reject("strided v past its value", make(Op::Attention, good, {0.5f}),
           {&q, &k, &vShort}, {&o, &l}, "v has");
  // o's heads overlapping (sH < hd).
  std::vector<int64_t> bad = good;
  bad[9] = hd - 1;
  h.reject("overlapping o rows", make(Op::Attention, bad, {0.5f}), {&q, &k, &v},
           {&o, &l}, "o's rows overlap");
  bad = good;
  bad[4] = 4;
  h.reject("H not dividing BH", make(Op::Attention, bad, {0.5f}), {&q, &k, &v},
           {&o, &l}, "not a multiple of H");
  bad = good;
  bad.pop_back();
  h.reject("attribute count", make(Op::Attention, bad, {0.5f}), {&q, &k, &v},
           {&o, &l}, "expects 4 or 11 integer attributes");
  // dq, dk, dv: interleaved is fine; dk one element after dq is not.
  Tensor &G = h.f32({B, S, 3, H, hd});
  std::vector<int64_t> bwd = {BH, S, hd, 1, H, S * 3 * HD, hd, 3 * HD};
  for (int g = 0; g < 2; ++g)
    bwd.insert(bwd.end(), {S * HD, hd, HD});
  bwd.insert(bwd.end(), {S * 3 * HD, hd, 3 * HD});
  Tensor dq = viewOf(G, 0, span), dk = viewOf(G, HD * 4, span),
         dv = viewOf(G, 2 * HD * 4, span), dkBad = viewOf(G, 4, span);
  h.run(make(Op::AttentionGrad, bwd, {0.5f}), {&q, &k, &v, &o, &l, &o},
        {&dq, &dk, &dv});
  h.reject("dk rows meeting dq's", make(Op::AttentionGrad, bwd, {0.5f}),
           {&q, &k, &v, &o, &l, &o}, {&dq, &dkBad, &dv}, "dk overlaps dq");
  Tensor overQ = viewOf(P, 0, span);
  h.reject("grad written over q", make(Op::AttentionGrad, bwd, {0.5f}),
           {&q, &k, &v, &o, &l, &o}, {&overQ, &dk, &dv}, "dq overlaps q");
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(29);
  testPacked(h, rng, DType::F32, 2, 3, 17, 7, true);
  testPacked(h, rng, DType::F32, 1, 2, 64, 16, false);
  testPacked(h, rng, DType::BF16, 2, 3, 9, 5, false);
  testPacked(h, rng, DType::BF16, 2, 12, 128, 64, true);
  testRefusals(h);
  return finish("test_attention_layout");
}

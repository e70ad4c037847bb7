//===- cuda_twin_fused.cpp - Twins of the mixed-precision kernels ---------===//
//
// Cast (both directions, bit-exact: both backends round to nearest even;
// the vector kernels, their tails and misaligned views),
// MatMul with bf16 operands (cuBLASLt vs OpenBLAS on the widened values),
// and the fused attention forward and backward: fp32 operands at rel 1e-5
// (the plain kernels), bf16 operands at rel 1e-2 (the tensor-core kernels
// when S is a multiple of 64 and the head dim 16/32/64/128, otherwise the
// plain ones on widened inputs), also in the strided layouts that read
// q, k, v from the packed projection output and write o, dq, dk, dv in
// place (dq|dk|dv f32 or bf16); the kernels that read bf16 or round on
// store (Elementwise, Transpose, the cross entropies, each dtype pair and
// off their vector alignment). Inputs random and non-zero, outputs
// poisoned first (TwinHarness.h).
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

namespace twincheck {

namespace {

constexpr double kBf16Tol = 1e-2;

/// An f32 or bf16 input tensor of random values in [lo, hi].
int input(Case &c, DType t, std::vector<int64_t> shape, Rng &rng,
          double lo = -1.0, double hi = 1.0) {
  std::vector<float> x = rng.vec(numel(shape), lo, hi);
  return t == DType::BF16 ? c.bf16(std::move(shape), x)
                          : c.f32(std::move(shape), x);
}

struct Bf16Product {
  int64_t batch, M, N, K;
  int ta, tb;
  int64_t off; // elements A starts late in its buffer (odd alignment)
  float beta;
};

/// A bf16 MatMul's twin: op(A)[M, K] op(B)[K, N] over `batch` items, A
/// `off` elements into its buffer (odd alignment), C in `cType` (bf16: a
/// folded cast, beta 0).
void bf16Product(const Bf16Product &g, DType cType, Rng &rng) {
  const int64_t aRows = g.ta ? g.K : g.M, aCols = g.ta ? g.M : g.K;
  const int64_t bRows = g.tb ? g.N : g.K, bCols = g.tb ? g.K : g.N;
  const int64_t sA = aRows * aCols, sB = bRows * bCols, sC = g.M * g.N;
  const bool bf16C = cType == DType::BF16;
  Case c =
      make(std::string(bf16C ? "MatMul bf16 C " : "MatMul bf16 ") +
               dims({{"b", g.batch},
                     {"M", g.M},
                     {"N", g.N},
                     {"K", g.K},
                     {"tA", g.ta},
                     {"tB", g.tb},
                     {"offA", g.off}}) +
               (bf16C ? "" : fmt(" beta=%g", g.beta)),
           Op::MatMul,
           {g.batch, g.M, g.N, g.K, g.ta, g.tb, aCols, bCols, g.N,
            g.batch > 1 ? sA : 0, g.batch > 1 ? sB : 0, g.batch > 1 ? sC : 0},
           {1.0f, g.beta});
  // A: a view `off` elements into a larger bf16 buffer.
  const int64_t nA = sA * g.batch;
  int whole = c.bf16({nA + g.off}, rng.vec(nA + g.off));
  int a = c.same(whole);
  c.ts[size_t(a)].v.shape = {nA};
  c.ts[size_t(a)].v.offset = g.off * 2;
  c.ins = {a, c.bf16({sB * g.batch}, rng.vec(sB * g.batch))};
  c.outs = {bf16C            ? c.out({sC * g.batch}, DType::BF16)
            : g.beta != 0.0f ? c.inout({sC * g.batch}, rng.vec(sC * g.batch))
                             : c.out({sC * g.batch})};
  c.tol = kBf16Tol;
  twin(c);
}

} // namespace

void castAndBf16MatMul(Rng &rng) {
  // n % 4 == 0 with aligned ends: the vector kernels; 4099: vectors and a
  // tail of 3; 7: the tail alone; 16384 x 768: GPT-2's activations.
  for (int64_t n : {int64_t(7), int64_t(251), int64_t(1 << 18), int64_t(4099),
                    int64_t(16384) * 768}) {
    Case c = make("Cast f32->bf16 " + dims({{"n", n}}), Op::Cast, {n});
    c.ins = {c.f32({n}, rng.vec(n, -300.0, 300.0))};
    c.outs = {c.out({n}, DType::BF16)};
    c.tol = 0.0; // the same rounding on both sides
    twin(c);
    Case d = make("Cast bf16->f32 " + dims({{"n", n}}), Op::Cast, {n});
    d.ins = {d.bf16({n}, rng.vec(n, -3.0, 3.0))};
    d.outs = {d.out({n})};
    d.tol = 0.0;
    twin(d);
  }
  // Views one element late (the input, or the output): the element kernels.
  for (int late : {0, 1}) {
    const int64_t n = 4096;
    const std::string where = late ? " out+1" : " in+1";
    Case c = make("Cast f32->bf16" + where + " " + dims({{"n", n}}), Op::Cast,
                  {n});
    int x = c.f32({n + 1}, rng.vec(n + 1, -300.0, 300.0));
    int y = c.out({n + 1}, DType::BF16);
    int xv = c.view(x, {n}), yv = c.view(y, {n});
    c.ts[size_t(late ? yv : xv)].v.offset = late ? 2 : 4;
    c.ins = {xv};
    c.outs = {yv};
    c.tol = 0.0;
    twin(c);
    Case d = make("Cast bf16->f32" + where + " " + dims({{"n", n}}), Op::Cast,
                  {n});
    int a = d.bf16({n + 1}, rng.vec(n + 1, -3.0, 3.0));
    int b = d.out({n + 1});
    int av = d.view(a, {n}), bv = d.view(b, {n});
    d.ts[size_t(late ? bv : av)].v.offset = late ? 4 : 2;
    d.ins = {av};
    d.outs = {bv};
    d.tol = 0.0;
    twin(d);
  }
  const Bf16Product gs[] = {
      {1, 7, 17, 33, 0, 0, 0, 0.0f},
      {1, 17, 7, 33, 1, 0, 1, 0.0f},
      {1, 33, 17, 8, 0, 1, 3, 1.0f},
      {3, 17, 33, 16, 1, 1, 0, 0.0f},
      {1, 1024, 768, 256, 0, 0, 0, 0.0f},
      {1, 1024, 8192, 256, 0, 1, 0, 0.0f},
      {1, 256, 8192, 1024, 1, 0, 0, 1.0f},
      {32, 128, 128, 64, 0, 1, 8, 0.0f},
      // GPT-2's c_fc weight gradient with the ones column (mega-ones-column):
      // 776 rows, the last 8 the bias gradient and zeros.
      {1, 776, 3072, 16384, 1, 0, 0, 0.0f},
  };
  for (const Bf16Product &g : gs)
    bf16Product(g, DType::F32, rng);
  // bf16 C (a folded cast: beta 0, contiguous): small, batched with odd
  // sizes, a misaligned A, and the logits' class (x @ wte^T, tB) at
  // GPT-2's vocabulary.
  const Bf16Product hs[] = {
      {1, 7, 17, 33, 0, 0, 0, 0.0f},
      {3, 17, 33, 16, 1, 1, 1, 0.0f},
      {1, 1024, 50304, 64, 0, 1, 0, 0.0f},
      {1, 256, 8192, 768, 0, 1, 0, 0.0f},
  };
  for (const Bf16Product &g : hs)
    bf16Product(g, DType::BF16, rng);
}

void bf16ProductCandidates(Rng &rng) {
  // Outputs of a few tiles over a long K (a weight gradient's shape): the
  // wide search's split-K forms apply; f32 C (beta 0 and 1) and bf16 C.
  bf16Product({1, 192, 256, 8192, 1, 0, 0, 0.0f}, DType::F32, rng);
  bf16Product({1, 128, 96, 4096, 1, 0, 0, 1.0f}, DType::F32, rng);
  bf16Product({1, 128, 256, 8192, 0, 1, 0, 0.0f}, DType::BF16, rng);
}

/// CrossEntropy and CrossEntropyGrad reading bf16 logits (mixed precision):
/// widened on load, fp32 math, so loss and lse at the fp32 tolerance;
/// dlogits f32 (1e-5), bf16 (1e-2), and bf16 over the logits' own bytes.
/// V % 4 == 0 and aligned: 8-byte loads (50304: GPT-2's vocabulary; 36:
/// fewer vectors than threads); 17, 251 and the logits one element into
/// their buffer: the element loads.
void bf16Logits(Rng &rng) {
  struct S {
    int64_t rows, V, off;
  };
  const S ss[] = {{7, 17, 0}, {33, 251, 0}, {5, 36, 0}, {64, 50304, 0},
                  {9, 8192, 1}};
  for (const S &s : ss) {
    const int64_t rows = s.rows, V = s.V, n = rows * V;
    const std::string shape = dims({{"rows", rows}, {"V", V}}) +
                              (s.off ? " misaligned" : "");
    // The logits as bf16 holds them, and their lse (the forward's).
    std::vector<float> logits = rng.vec(n, -6, 6);
    for (float &x : logits) {
      const uint32_t b = uint32_t(toBf16Bits(x)) << 16;
      std::memcpy(&x, &b, 4);
    }
    std::vector<float> lse(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double m = -1e30, z = 0;
      for (int64_t j = 0; j < V; ++j)
        m = std::max(m, double(logits[size_t(r * V + j)]));
      for (int64_t j = 0; j < V; ++j)
        z += std::exp(double(logits[size_t(r * V + j)]) - m);
      lse[size_t(r)] = float(m + std::log(z));
    }
    const std::vector<int32_t> t = rng.ids(rows, V);
    // bf16 logits `off` elements into a larger buffer.
    auto logitsIn = [&](Case &c) {
      std::vector<float> padded(size_t(s.off), 1.0f);
      padded.insert(padded.end(), logits.begin(), logits.end());
      int whole = c.bf16({n + s.off}, padded);
      int v = c.view(whole, {rows, V});
      c.ts[size_t(v)].v.offset = 2 * s.off;
      return v;
    };
    {
      Case c = make("CrossEntropy bf16 logits " + shape, Op::CrossEntropy,
                    {rows, V});
      c.ins = {logitsIn(c), c.i32({rows}, t)};
      c.outs = {c.out({}), c.out({rows})};
      twin(c);
    }
    for (int mode : {0, 1, 2}) { // f32 dlogits, bf16, bf16 in place
      Case c = make(std::string("CrossEntropyGrad bf16 logits, ") +
                        (mode == 0   ? "f32 dlogits "
                         : mode == 1 ? "bf16 dlogits "
                                     : "bf16 dlogits in place ") +
                        shape,
                    Op::CrossEntropyGrad, {rows, V});
      const int x = logitsIn(c);
      c.ins = {x, c.i32({rows}, t), c.f32({rows}, lse), c.f32({}, {0.7f})};
      if (mode == 2) {
        c.compare.push_back(x);
        c.outs = {c.same(x)};
      } else {
        c.outs = {c.out({rows, V}, mode ? DType::BF16 : DType::F32)};
      }
      c.tol = mode ? kBf16Tol : 1e-5;
      twin(c);
    }
    // The loss and its gradient in one kernel (mega-fuse-loss): f32
    // dlogits, bf16 ones of their own, and bf16 ones over the logits (GPT's
    // bf16 step).
    for (int mode : {0, 1, 2}) {
      Case c = make(std::string("CrossEntropyWithGrad bf16 logits, ") +
                        (mode == 0   ? "f32 dlogits "
                         : mode == 1 ? "bf16 dlogits "
                                     : "bf16 dlogits in place ") +
                        shape,
                    Op::CrossEntropyWithGrad, {rows, V});
      const int x = logitsIn(c);
      c.ins = {x, c.i32({rows}, t), c.f32({}, {0.7f})};
      if (mode == 2) {
        c.compare.push_back(x);
        c.outs = {c.out({}), c.out({rows}), c.same(x)};
      } else {
        c.outs = {c.out({}), c.out({rows}),
                  c.out({rows, V}, mode ? DType::BF16 : DType::F32)};
      }
      c.tol = mode ? kBf16Tol : 1e-5;
      twin(c);
    }
    // One row block of a batch of 4 rows + 1 (mega-chunk-loss): the mean
    // and the gradient's scale divide by that; acc 1 adds the block's share
    // to a loss already there. bf16 dlogits in place, and f32 ones (so that
    // the loss and lse are held to the f32 tolerance too: a case has one).
    for (int acc : {0, 1})
      for (bool inPlace : {true, false}) {
        if (rows == 0)
          continue;
        const int64_t meanRows = 4 * rows + 1;
        Case c = make(std::string("CrossEntropyWithGrad bf16 logits, ") +
                          (inPlace ? "bf16 dlogits in place" : "f32 dlogits") +
                          ", row block " +
                          dims({{"mean_rows", meanRows}, {"acc", acc}}) + " " +
                          shape,
                      Op::CrossEntropyWithGrad, {rows, V, meanRows, acc});
        const int x = logitsIn(c);
        if (inPlace)
          c.compare.push_back(x);
        c.ins = {x, c.i32({rows}, t), c.f32({}, {0.7f})};
        c.outs = {acc ? c.inout({}, {2.5f}) : c.out({}), c.out({rows}),
                  inPlace ? c.same(x) : c.out({rows, V})};
        c.tol = inPlace ? kBf16Tol : 1e-5;
        twin(c);
      }
  }
}

void bf16Outputs(Rng &rng) {
  // Elementwise: gelu(x) + b stored in f32 and in bf16.
  for (int64_t n : {int64_t(7), int64_t(3072 * 33)}) {
    using E = plan::EwOp;
    Case c = make("Elementwise bf16 output " + dims({{"n", n}}), Op::Elementwise,
                  {n, 2, 2, n, 33, int64_t(E::Load), 0, 0, 0, int64_t(E::Load),
                   1, 1, 0, int64_t(E::Gelu), 2, 0, 0, int64_t(E::Add), 3, 2, 1,
                   int64_t(E::Store), 3, 0, 0, int64_t(E::Store), 3, 1, 0});
    if (n % 33 != 0)
      c.instr.i[4] = n;
    c.ins = {c.f32({n}, rng.vec(n, -3, 3)),
             c.f32({c.instr.i[4]}, rng.vec(c.instr.i[4]))};
    c.outs = {c.out({n}), c.out({n}, DType::BF16)};
    c.tol = kBf16Tol;
    twin(c);
  }
  // Transpose f32 -> bf16: the q|k|v head split of GPT-2 small's shape.
  {
    Case c = make("Transpose f32->bf16 [2,128,3,4,64] perm 2,0,3,1,4",
                  Op::Transpose, {5, 2, 128, 3, 4, 64, 2, 0, 3, 1, 4});
    const int64_t n = 2 * 128 * 3 * 4 * 64;
    c.ins = {c.f32({n}, rng.vec(n))};
    c.outs = {c.out({n}, DType::BF16)};
    c.tol = 0.0; // a gather and one rounding on both sides
    twin(c);
  }
  // CrossEntropyGrad with bf16 dlogits.
  {
    const int64_t rows = 64, V = 8192;
    Case c = make("CrossEntropyGrad bf16 dlogits rows=64 V=8192",
                  Op::CrossEntropyGrad, {rows, V});
    std::vector<float> logits = rng.vec(rows * V, -4, 4);
    std::vector<float> lse(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double m = -1e30, z = 0;
      for (int64_t j = 0; j < V; ++j)
        m = std::max(m, double(logits[size_t(r * V + j)]));
      for (int64_t j = 0; j < V; ++j)
        z += std::exp(double(logits[size_t(r * V + j)]) - m);
      lse[size_t(r)] = float(m + std::log(z));
    }
    const int tl = c.f32({rows, V}, logits);
    const int tt = c.i32({rows}, rng.ids(rows, V));
    const int tlse = c.f32({rows}, lse);
    const int td = c.f32({1}, std::vector<float>{0.75f});
    c.ins = {tl, tt, tlse, td};
    c.outs = {c.out({rows, V}, DType::BF16)};
    c.tol = kBf16Tol;
    twin(c);
  }
  // The same with V % 4 != 0: the element stores.
  {
    const int64_t rows = 7, V = 8191;
    Case c = make("CrossEntropyGrad bf16 dlogits rows=7 V=8191",
                  Op::CrossEntropyGrad, {rows, V});
    c.ins = {c.f32({rows, V}, rng.vec(rows * V, -4, 4)),
             c.i32({rows}, rng.ids(rows, V)),
             c.f32({rows}, std::vector<float>(size_t(rows), 9.0f)),
             c.f32({1}, std::vector<float>{0.75f})};
    c.outs = {c.out({rows, V}, DType::BF16)};
    c.tol = kBf16Tol;
    twin(c);
  }
  // CrossEntropyWithGrad with f32 logits and bf16 dlogits (V % 4 == 0:
  // 8-byte stores; 8191: the element stores), and with only the dlogits
  // off their vector's alignment (f32 4 bytes, bf16 2 bytes late; the
  // logits aligned): the element kernel, not 16- or 8-byte stores.
  struct W {
    int64_t rows, V;
    DType x, d;
    int64_t dOff; ///< elements dlogits start late in their buffer
  };
  const DType F = DType::F32, H = DType::BF16;
  for (const W &w : {W{64, 8192, F, H, 0}, W{7, 8191, F, H, 0},
                     W{9, 8192, F, F, 1}, W{9, 8192, H, H, 1},
                     W{9, 8192, H, F, 1}}) {
    const int64_t n = w.rows * w.V;
    Case c = make(std::string("CrossEntropyWithGrad ") + name(w.x) +
                      " logits, " + name(w.d) + " dlogits " +
                      dims({{"rows", w.rows}, {"V", w.V}}) +
                      (w.dOff ? " dlogits+" + std::to_string(w.dOff) : ""),
                  Op::CrossEntropyWithGrad, {w.rows, w.V});
    c.ins = {input(c, w.x, {w.rows, w.V}, rng, -4, 4),
             c.i32({w.rows}, rng.ids(w.rows, w.V)), c.f32({}, {0.7f})};
    int d = c.out({n + w.dOff}, w.d); // compared whole: the head stays NaN
    if (w.dOff) {
      d = c.view(d, {w.rows, w.V});
      c.ts[size_t(d)].v.offset = w.dOff * (w.d == H ? 2 : 4);
    }
    c.outs = {c.out({}), c.out({w.rows}), d};
    c.tol = w.d == H ? kBf16Tol : 1e-5;
    twin(c);
  }
  // Elementwise reading bf16 off 16-byte alignment: 2 bytes late (the
  // scalar kernel: no 8-byte loads) and 8 bytes late (enough for the
  // vector kernel's 8-byte bf16 loads), next to an aligned f32 input.
  for (int64_t off : {1, 4}) {
    using E = plan::EwOp;
    const int64_t n = 4096;
    Case c = make("Elementwise bf16 input +" + std::to_string(2 * off) +
                      "B " + dims({{"n", n}}),
                  Op::Elementwise,
                  {n, 2, 1, n, n, int64_t(E::Load), 0, 0, 0, int64_t(E::Load),
                   1, 1, 0, int64_t(E::GeluGrad), 2, 0, 1, int64_t(E::Store), 2,
                   0, 0});
    const int whole = c.bf16({n + off}, rng.vec(n + off));
    const int dy = c.view(whole, {n});
    c.ts[size_t(dy)].v.offset = 2 * off;
    c.ins = {c.f32({n}, rng.vec(n, -4, 4)), dy};
    c.outs = {c.out({n})};
    twin(c);
  }
  bf16Logits(rng);
}

/// Attention and AttentionGrad in the strided layouts megac's
/// mega-fold-attention-layout writes: q, k, v views of one [B, S, 3, H, hd]
/// buffer (offsets 0, H*hd, 2*H*hd), o and dout [B, S, H, hd] (or
/// contiguous [BH, S, hd] when `packedO` is off: a fold of q, k, v alone),
/// dq | dk | dv written into one [B, S, 3, H, hd] f32 buffer, compared
/// whole (rows a kernel must not write stay NaN on both sides).
void attentionStrided(Rng &rng) {
  struct L {
    int64_t b, h, seq, hd;
    int causal;
    bool packedO;
  };
  // GPT-2 small's layer (B 2 of 16, H 12, S 1024, hd 64: the tensor-core
  // kernels, causal); the same with a contiguous o; S 64 hd 16 and 128
  // (tensor cores, other head dims); odd sizes on the plain kernels.
  const L ls[] = {{2, 12, 1024, 64, 1, true}, {2, 12, 1024, 64, 1, false},
                  {1, 2, 64, 16, 0, true},    {2, 2, 128, 128, 1, true},
                  {2, 3, 17, 7, 1, true},     {1, 4, 100, 64, 0, true},
                  {2, 3, 33, 40, 1, false}};
  for (DType t : {DType::F32, DType::BF16})
    for (const L &a : ls) {
      if (t == DType::F32 && a.seq == 1024 && !a.packedO)
        continue; // the fp32 plain kernels at GPT-2 size once is enough
      const int64_t BH = a.b * a.h, HD = a.h * a.hd, es = t == DType::BF16 ? 2 : 4;
      const int64_t total = a.b * a.seq * 3 * HD, span = total - 2 * HD;
      const float scale = float(1.0 / std::sqrt(double(a.hd)));
      const std::vector<int64_t> qkvSt = {a.seq * 3 * HD, a.hd, 3 * HD};
      const std::vector<int64_t> oSt =
          a.packedO ? std::vector<int64_t>{a.seq * HD, a.hd, HD}
                    : std::vector<int64_t>{a.h * a.seq * a.hd, a.seq * a.hd,
                                           a.hd};
      const std::vector<int64_t> oShape =
          a.packedO ? std::vector<int64_t>{a.b, a.seq, a.h, a.hd}
                    : std::vector<int64_t>{BH, a.seq, a.hd};
      const std::vector<int64_t> rows = {BH, a.seq};
      std::vector<int64_t> fwd = {BH, a.seq, a.hd, a.causal, a.h};
      fwd.insert(fwd.end(), qkvSt.begin(), qkvSt.end());
      fwd.insert(fwd.end(), oSt.begin(), oSt.end());
      std::vector<int64_t> bwd = {BH, a.seq, a.hd, a.causal, a.h};
      for (const auto *st : {&qkvSt, &oSt, &oSt, &qkvSt})
        bwd.insert(bwd.end(), st->begin(), st->end());
      const std::string shape =
          dims({{"B", a.b}, {"H", a.h}, {"S", a.seq}, {"hd", a.hd},
                {"causal", a.causal}}) +
          (a.packedO ? " packed" : " packed qkv");
      // q, k, v: three views of one packed buffer.
      auto packed = [&](Case &c, int out[3]) {
        const int whole = input(c, t, {a.b, a.seq, 3, a.h, a.hd}, rng, -2, 2);
        for (int j = 0; j < 3; ++j) {
          out[j] = c.view(whole, {span});
          c.ts[size_t(out[j])].v.offset = j * HD * es;
        }
      };
      Case f = make(std::string("Attention strided ") + name(t) + " " + shape,
                    Op::Attention, fwd, {scale});
      int qkv[3];
      packed(f, qkv);
      f.ins = {qkv[0], qkv[1], qkv[2]};
      f.outs = {f.out(oShape, t), f.out(rows)};
      f.tol = t == DType::BF16 ? kBf16Tol : 1e-5;
      twin(f);
      // The backward from the CPU forward's o and lse.
      Case g = make(std::string("AttentionGrad strided ") + name(t) + " " +
                        shape,
                    Op::AttentionGrad, bwd, {scale});
      int gqkv[3];
      packed(g, gqkv);
      Case f2 = make("", Op::Attention, fwd, {scale});
      f2.ts = g.ts;
      f2.ins = {gqkv[0], gqkv[1], gqkv[2]};
      f2.outs = {f2.out(oShape, t), f2.out(rows)};
      Result res;
      try {
        res = runOn(*gCpu, f2);
      } catch (const std::exception &e) {
        report(false, g.label, std::string("cpu forward threw: ") + e.what());
        continue;
      }
      std::vector<float> o(res[0].size()), lse(res[1].size());
      for (size_t e = 0; e < o.size(); ++e)
        o[e] = floatOf(res[0][e]);
      for (size_t e = 0; e < lse.size(); ++e)
        lse[e] = floatOf(res[1][e]);
      const int go = t == DType::BF16 ? g.bf16(oShape, o) : g.f32(oShape, o);
      const int gl = g.f32(rows, lse);
      const int gd = input(g, t, oShape, rng);
      g.ins = {gqkv[0], gqkv[1], gqkv[2], go, gl, gd};
      // dq | dk | dv into an f32 buffer, and into a bf16 one
      // (mega-fold-casts folds the gradients' Cast into the kernel): with
      // bf16 inputs, and with f32 inputs at the small sizes (a plan may
      // have them, megac does not: the plain kernels' float reads with
      // bf16 stores).
      for (DType gt : {DType::F32, DType::BF16}) {
        if (gt == DType::BF16 && t != DType::BF16 && a.seq >= 1024)
          continue;
        Case c = g;
        if (gt == DType::BF16)
          c.label += " bf16 grads";
        const int G = c.out({a.b, a.seq, 3, a.h, a.hd}, gt);
        int grads[3];
        for (int j = 0; j < 3; ++j) {
          grads[j] = c.view(G, {span});
          c.ts[size_t(grads[j])].v.offset = j * HD * (gt == DType::BF16 ? 2 : 4);
        }
        c.outs = {grads[0], grads[1], grads[2]};
        c.tol = t == DType::BF16 || gt == DType::BF16 ? kBf16Tol : 1e-5;
        twin(c);
        if (a.seq == 128 && !(gCudnnAttention && gt == DType::BF16))
          deterministic(c);
      }
    }
}

void attention(Rng &rng) {
  bf16Outputs(rng);
  attentionStrided(rng);
  struct A {
    int64_t bh, seq, hd;
    int causal;
    int64_t qOffset = 0; ///< bytes q starts late in its buffer
  };
  // bf16 with S % 64 == 0 and head dim 16/32/64/128: the tensor-core
  // kernels (S 64, 128, 192, 256, 1024, causal and not, BH not a multiple of
  // anything, GPT-2's S 1024 hd 64 at BH 5, the cpu-small model's 32 x 128 x
  // 64); the rest the plain kernels: odd S, S % 64 != 0, head dims 7, 40,
  // 48, 96, and q 8 bytes off 16-byte alignment. fp32: all plain kernels.
  const A as[] = {{3, 17, 7, 1},     {2, 33, 40, 0},    {2, 64, 32, 0},
                  {4, 128, 64, 1},   {2, 64, 16, 1},    {1, 128, 128, 1},
                  {32, 128, 64, 1},  {4, 1024, 64, 1},  {5, 64, 64, 0},
                  {3, 64, 128, 1},   {7, 256, 64, 0},   {3, 256, 128, 1},
                  {3, 192, 32, 1},   {5, 1024, 64, 0},  {2, 1024, 128, 1},
                  {3, 100, 64, 1},   {2, 128, 48, 0},   {2, 64, 96, 1},
                  {3, 128, 64, 1, 8}};
  for (DType t : {DType::F32, DType::BF16})
    for (const A &a : as) {
      const float scale = float(1.0 / std::sqrt(double(a.hd)));
      const std::vector<int64_t> x = {a.bh, a.seq, a.hd}, rows = {a.bh, a.seq};
      std::string shape = dims({{"BH", a.bh},
                                {"S", a.seq},
                                {"hd", a.hd},
                                {"causal", a.causal}});
      if (a.qOffset)
        shape += fmt(" q+%gB", double(a.qOffset));
      const std::vector<int64_t> attrs = {a.bh, a.seq, a.hd, a.causal};
      // q, in a buffer of its own or `qOffset` bytes into a larger one.
      auto query = [&](Case &c) {
        if (!a.qOffset)
          return input(c, t, x, rng, -2.0, 2.0);
        const int64_t n = numel(x),
                      pad = a.qOffset / (t == DType::BF16 ? 2 : 4);
        int whole = input(c, t, {n + pad}, rng, -2.0, 2.0);
        int view = c.view(whole, x);
        c.ts[size_t(view)].v.offset = a.qOffset;
        return view;
      };
      // The forward: o and lse compared.
      Case f = make(std::string("Attention ") + name(t) + " " + shape,
                    Op::Attention, attrs, {scale});
      int q = query(f), k = input(f, t, x, rng, -2.0, 2.0),
          v = input(f, t, x, rng);
      f.ins = {q, k, v};
      f.outs = {f.out(x), f.out(rows)};
      f.tol = t == DType::BF16 ? kBf16Tol : 1e-5;
      twin(f);
      // The backward, from the o and lse of its own q, k, v (the CPU's
      // forward, so both backends start from the same bits).
      Case g = make(std::string("AttentionGrad ") + name(t) + " " + shape,
                    Op::AttentionGrad, attrs, {scale});
      int gq = query(g), gk = input(g, t, x, rng, -2.0, 2.0),
          gv = input(g, t, x, rng);
      Case f2 = make("", Op::Attention, attrs, {scale});
      f2.ts = g.ts;
      f2.ins = {gq, gk, gv};
      f2.outs = {f2.out(x), f2.out(rows)};
      Result fwd;
      try {
        fwd = runOn(*gCpu, f2);
      } catch (const std::exception &e) {
        report(false, g.label, std::string("cpu forward threw: ") + e.what());
        continue;
      }
      std::vector<float> o(fwd[0].size()), lse(fwd[1].size());
      for (size_t e = 0; e < o.size(); ++e)
        o[e] = floatOf(fwd[0][e]);
      for (size_t e = 0; e < lse.size(); ++e)
        lse[e] = floatOf(fwd[1][e]);
      int go = t == DType::BF16 ? g.bf16(x, o) : g.f32(x, o);
      int gl = g.f32(rows, lse);
      int gd = input(g, t, x, rng);
      g.ins = {gq, gk, gv, go, gl, gd};
      g.outs = {g.out(x), g.out(x), g.out(x)};
      g.tol = t == DType::BF16 ? kBf16Tol : 1e-5;
      twin(g);
      if (a.seq == 128 && a.hd == 64 && !a.qOffset)
        deterministic(g);
      if (t != DType::BF16)
        continue;
      // All bf16 but lse, as megac's bf16 plans have them: what cuDNN's
      // fused attention takes (when the backend has it) where the shape
      // suits it, mega's kernels elsewhere.
      Case fb = f;
      fb.label += ", o bf16";
      fb.outs = {fb.out(x, DType::BF16), fb.out(rows)};
      twin(fb);
      Case gb = g;
      gb.label += ", bf16 grads";
      gb.outs = {gb.out(x, DType::BF16), gb.out(x, DType::BF16),
                 gb.out(x, DType::BF16)};
      twin(gb);
    }
  // o stored in bf16 (a Cast folded into the forward): the tensor-core
  // kernel's bf16 stores (causal and not) and the plain kernel's.
  for (const A &a : {A{4, 256, 64, 1}, A{3, 128, 128, 0}, A{3, 100, 64, 1}}) {
    const std::vector<int64_t> x = {a.bh, a.seq, a.hd}, rows = {a.bh, a.seq};
    Case f = make("Attention bf16, o bf16 " + dims({{"BH", a.bh},
                                                    {"S", a.seq},
                                                    {"hd", a.hd},
                                                    {"causal", a.causal}}),
                  Op::Attention, {a.bh, a.seq, a.hd, a.causal},
                  {float(1.0 / std::sqrt(double(a.hd)))});
    f.ins = {input(f, DType::BF16, x, rng, -2.0, 2.0),
             input(f, DType::BF16, x, rng, -2.0, 2.0),
             input(f, DType::BF16, x, rng)};
    f.outs = {f.out(x, DType::BF16), f.out(rows)};
    f.tol = kBf16Tol;
    twin(f);
  }
}

} // namespace twincheck

//===- cuda_twin_vocab.cpp - Vocabulary parallelism and distributed AdamW ===//
//
// Opcodes 22-27 (VocabEmbedding .. VocabCrossEntropyGrad) and AdamW with a
// group (the distributed optimizer's block update) on the CPU and the CUDA
// backend, compared. These kernels read this process's rank and group size
// from the program run's communicator; here a Place communicator answers
// group() with a chosen (rank, size) and has no collectives (the kernels
// call none: the plan's collectives run between them). Every case runs at
// one or more ranks, so the start offset, the other ranks' ids and targets,
// and the padded columns of the last rank (V < Vl * size) are all reached.
//
// Shapes: odd widths (the element kernels), widths % 4 == 0 (the float4
// ones, also with a padded tail that ends inside a vector), logits 4 bytes
// into their buffer (the element kernels again), GPT-2 small at tp 2
// (vocabulary 50304 = 2 x 25152, true 50257; 16384 tokens of hidden 768;
// the loss kernels once on all 16384 x 25152 logits).
// Inputs random and non-zero, outputs poisoned (TwinHarness.h); fp32 at
// rel 1e-5 (these kernels take no bf16 operands).
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

#include "../PlacedComm.h"

#include <algorithm>

namespace twincheck {

namespace {

/// Every group of the run has `size` ranks and this process is `rank` of
/// each; no collectives.
using Place = mega::test::PlacedComm;

std::string where(int rank, int size) {
  return " rank " + std::to_string(rank) + "/" + std::to_string(size);
}

void embedding(Rng &rng) {
  // {rows, Vl, H, size}: H = 6 and 33 the element kernel, 256 and 768 the
  // float4 one; Vl 5 and 64 with more rows than table rows (repeated ids).
  const int64_t shapes[][4] = {
      {7, 5, 6, 3}, {64, 64, 256, 2}, {300, 9, 33, 4}, {0, 8, 8, 2}};
  for (const auto &s : shapes) {
    const int64_t rows = s[0], Vl = s[1], H = s[2], size = s[3];
    const std::vector<float> table = rng.vec(Vl * H);
    const std::vector<float> dout = rng.vec(rows * H);
    const std::vector<float> prior = rng.vec(Vl * H);
    const std::vector<int32_t> ids = rng.ids(rows, Vl * size);
    for (int rank = 0; rank < size; ++rank) {
      Place comm(rank, int(size));
      const std::string d =
          dims({{"rows", rows}, {"Vl", Vl}, {"H", H}}) + where(rank, int(size));
      Case c =
          make("VocabEmbedding " + d, Op::VocabEmbedding, {rows, Vl, H, 0});
      c.ins = {c.f32({Vl, H}, table), c.i32({rows}, ids)};
      c.outs = {c.out({rows, H})};
      twin(c, &comm);
      for (int acc : {0, 1}) {
        Case g = make("VocabEmbeddingGrad " + d + " acc=" + std::to_string(acc),
                      Op::VocabEmbeddingGrad, {rows, Vl, H, acc, 0});
        g.ins = {g.f32({rows, H}, dout), g.i32({rows}, ids)};
        g.outs = {acc ? g.inout({Vl, H}, prior) : g.out({Vl, H})};
        twin(g, &comm);
      }
    }
  }
  // GPT-2 small at tp 2: 16384 tokens, this rank's 25152 rows of 768 (the
  // second rank: ids below 25152 are the other's).
  {
    const int64_t rows = 16384, Vl = 25152, H = 768;
    Place comm(1, 2);
    const std::vector<int32_t> ids = rng.ids(rows, 50257);
    Case c =
        make("VocabEmbedding GPT-2 tp2 " +
                 dims({{"rows", rows}, {"Vl", Vl}, {"H", H}}) + where(1, 2),
             Op::VocabEmbedding, {rows, Vl, H, 0});
    c.ins = {c.f32({Vl, H}, rng.vec(Vl * H)), c.i32({rows}, ids)};
    c.outs = {c.out({rows, H})};
    twin(c, &comm);
    Case g = make("VocabEmbeddingGrad GPT-2 tp2 " +
                      dims({{"rows", rows}, {"Vl", Vl}, {"H", H}}) + " acc=1" +
                      where(1, 2),
                  Op::VocabEmbeddingGrad, {rows, Vl, H, 1, 0});
    g.ins = {g.f32({rows, H}, rng.vec(rows * H)), g.i32({rows}, ids)};
    g.outs = {g.inout({Vl, H}, rng.vec(Vl * H))};
    twin(g, &comm);
    deterministic(g, &comm);
  }
  // An id outside the whole vocabulary [0, Vl * size): both backends name
  // it (one bad id: the CUDA kernels report any one of several).
  {
    const int64_t rows = 6, Vl = 5, H = 8;
    Place comm(1, 3);
    std::vector<int32_t> ids = rng.ids(rows, Vl * 3);
    ids[3] = 15;
    Case c = make("VocabEmbedding id 15 of 15", Op::VocabEmbedding,
                  {rows, Vl, H, 0});
    c.ins = {c.f32({Vl, H}, rng.vec(Vl * H)), c.i32({rows}, ids)};
    c.outs = {c.out({rows, H})};
    dataError(c,
              "VocabEmbedding: id 15 of row 3 is outside the vocabulary "
              "[0, 15)",
              &comm);
    ids[3] = -2;
    Case g = make("VocabEmbeddingGrad id -2", Op::VocabEmbeddingGrad,
                  {rows, Vl, H, 0, 0});
    g.ins = {g.f32({rows, H}, rng.vec(rows * H)), g.i32({rows}, ids)};
    g.outs = {g.out({Vl, H})};
    dataError(g,
              "VocabEmbeddingGrad: id -2 of row 3 is outside the "
              "vocabulary [0, 15)",
              &comm);
  }
}

void rowMax(Rng &rng) {
  // cols % 4 == 0: float4s (36: fewer vectors than threads; 25152: GPT-2's
  // shard); the others one element per access.
  const int64_t shapes[][2] = {{7, 17}, {33, 4096}, {64, 25152},
                               {5, 36}, {3, 1},     {0, 9}};
  for (const auto &s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    Case c = make("RowMax " + dims({{"rows", rows}, {"cols", cols}}),
                  Op::RowMax, {rows, cols});
    c.ins = {c.f32({rows, cols}, rng.vec(rows * cols, -6, 6))};
    c.outs = {c.out({rows})};
    twin(c);
  }
  {
    const int64_t rows = 9, cols = 4096;
    Case c =
        make("RowMax misaligned x " + dims({{"rows", rows}, {"cols", cols}}),
             Op::RowMax, {rows, cols});
    int whole = c.f32({rows * cols + 1}, rng.vec(rows * cols + 1, -6, 6));
    int x = c.view(whole, {rows, cols});
    c.ts[size_t(x)].v.offset = 4;
    c.ins = {x};
    c.outs = {c.out({rows})};
    twin(c);
  }
}

/// The per-row maximum of `x` [rows, cols] plus a margin: a max that the
/// group's AllReduce could have produced (other ranks' columns larger).
std::vector<float> rowMaxPlus(Rng &rng, const std::vector<float> &x,
                              int64_t rows, int64_t cols) {
  std::vector<float> m(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    float v = x[size_t(r * cols)];
    for (int64_t j = 1; j < cols; ++j)
      v = std::max(v, x[size_t(r * cols + j)]);
    m[size_t(r)] = v + float(rng.uniform(0.0, 0.5));
  }
  return m;
}

/// n floats in [lo, hi) from a counter hash (splitmix64): GPT-2's logits
/// (412 M) would take seconds from the Mersenne twister.
std::vector<float> fastVec(uint64_t seed, int64_t n, double lo, double hi) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    uint64_t z = seed + uint64_t(k) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float x = float(lo + (hi - lo) * double(z >> 11) * 0x1.0p-53);
    v[size_t(k)] = x != 0.0f ? x : float(0.5 * (lo + hi) + 0.25 * (hi - lo));
  }
  return v;
}

/// The loss kernels once at GPT-2 small's full shape at tp 2: 16384 rows of
/// this rank's 25152 logits, the second rank (25105 true columns, 47 padded;
/// 412 M elements, 1.6 GB), the gradient in place as the plans run it.
void lossGpt2(Rng &rng) {
  const int64_t rows = 16384, Vl = 25152, V = 50257;
  Place comm(1, 2);
  const std::string d = "GPT-2 tp2 " + dims({{"rows", rows}, {"Vl", Vl}}) +
                        " V=50257" + where(1, 2);
  std::vector<float> x = fastVec(rng.g(), rows * Vl, -6, 6);
  std::vector<float> mx(static_cast<size_t>(rows)), lse(mx.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x.data() + r * Vl;
    mx[size_t(r)] = *std::max_element(xr, xr + Vl) + 0.25f;
    // Near this shard's log-sum-exp (any finite lse is valid input).
    lse[size_t(r)] = mx[size_t(r)] + float(std::log(double(Vl)));
  }
  const std::vector<int32_t> t = rng.ids(rows, V);
  {
    Case c = make("VocabCrossEntropyStats " + d, Op::VocabCrossEntropyStats,
                  {rows, Vl, V, 0});
    c.ins = {c.f32({rows, Vl}, x), c.i32({rows}, t), c.f32({rows}, mx)};
    c.outs = {c.out({rows}), c.out({rows})};
    twin(c, &comm);
  }
  Case g = make("VocabCrossEntropyGrad " + d + " in place",
                Op::VocabCrossEntropyGrad, {rows, Vl, V, 0});
  int xi = g.inout({rows, Vl}, x);
  x = {}; // the case holds its own copy
  g.ins = {xi, g.i32({rows}, t), g.f32({rows}, lse), g.f32({}, {0.7f})};
  g.outs = {g.same(xi)};
  twin(g, &comm);
}

struct LossShape {
  int64_t rows, Vl, size, V; ///< V = 0: no padding (i has 3 entries)
};

void loss(Rng &rng) {
  // Vl 17 and 251: element kernels; 4096, 36 and 25152: float4s. Padded:
  // 17 x 3 = 51 > 45 (the last rank owns 11 columns); 36 x 4 = 144 > 141
  // (33 columns: a vector ends inside the padding); GPT-2 at tp 2, 50304 >
  // 50257 (25105 columns on rank 1).
  const LossShape shapes[] = {
      {7, 17, 3, 0},   {7, 17, 3, 45},        {33, 251, 2, 0}, {33, 4096, 2, 0},
      {9, 36, 4, 141}, {64, 25152, 2, 50257}, {0, 17, 2, 0}};
  for (const LossShape &s : shapes) {
    const int64_t rows = s.rows, Vl = s.Vl, size = s.size;
    const int64_t V = s.V ? s.V : Vl * size;
    const std::vector<float> x = rng.vec(rows * Vl, -6, 6);
    const std::vector<float> mx = rowMaxPlus(rng, x, rows, Vl);
    const std::vector<int32_t> t = rng.ids(rows, V);
    // lse as the forward would leave it: this shard's log-sum-exp, plus a
    // margin for the others'.
    std::vector<float> lse(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double s2 = 0;
      for (int64_t j = 0; j < Vl; ++j)
        s2 += std::exp(double(x[size_t(r * Vl + j)]) - double(mx[size_t(r)]));
      lse[size_t(r)] =
          float(double(mx[size_t(r)]) + std::log(s2) + rng.uniform(0.0, 1.0));
    }
    std::vector<int64_t> attrs = {rows, Vl};
    if (s.V)
      attrs.push_back(s.V);
    attrs.push_back(0);
    for (int rank = 0; rank < size; ++rank) {
      Place comm(rank, int(size));
      const std::string d = dims({{"rows", rows}, {"Vl", Vl}}) +
                            (s.V ? " V=" + std::to_string(s.V) : "") +
                            where(rank, int(size));
      Case c = make("VocabCrossEntropyStats " + d, Op::VocabCrossEntropyStats,
                    attrs);
      c.ins = {c.f32({rows, Vl}, x), c.i32({rows}, t), c.f32({rows}, mx)};
      c.outs = {c.out({rows}), c.out({rows})};
      twin(c, &comm);
      if (Vl == 25152)
        deterministic(c, &comm);
      for (int inPlace : {0, 1}) {
        Case g =
            make("VocabCrossEntropyGrad " + d + (inPlace ? " in place" : ""),
                 Op::VocabCrossEntropyGrad, attrs);
        int xi = inPlace ? g.inout({rows, Vl}, x) : g.f32({rows, Vl}, x);
        g.ins = {xi, g.i32({rows}, t), g.f32({rows}, lse), g.f32({}, {0.7f})};
        g.outs = {inPlace ? g.same(xi) : g.out({rows, Vl})};
        twin(g, &comm);
      }
    }
  }
  // Logits 4 bytes into their buffer: the element kernels (the gradient in
  // place), on the padded last rank.
  {
    const int64_t rows = 9, Vl = 4096, size = 2, V = 8000;
    Place comm(1, 2);
    const std::vector<float> x = rng.vec(rows * Vl + 1, -6, 6);
    const std::vector<int32_t> t = rng.ids(rows, V);
    Case c = make("VocabCrossEntropyStats misaligned logits V=8000" +
                      where(1, int(size)),
                  Op::VocabCrossEntropyStats, {rows, Vl, V, 0});
    int whole = c.f32({rows * Vl + 1}, x);
    int xi = c.view(whole, {rows, Vl});
    c.ts[size_t(xi)].v.offset = 4;
    c.ins = {xi, c.i32({rows}, t),
             c.f32({rows}, std::vector<float>(size_t(rows), 6.5f))};
    c.outs = {c.out({rows}), c.out({rows})};
    twin(c, &comm);
    Case g = make("VocabCrossEntropyGrad misaligned logits in place V=8000" +
                      where(1, int(size)),
                  Op::VocabCrossEntropyGrad, {rows, Vl, V, 0});
    int gw = g.f32({rows * Vl + 1}, x);
    int gx = g.view(gw, {rows, Vl});
    g.ts[size_t(gx)].v.offset = 4;
    g.compare.push_back(gx);
    g.ins = {gx, g.i32({rows}, t),
             g.f32({rows}, std::vector<float>(size_t(rows), 9.5f)),
             g.f32({}, {0.7f})};
    g.outs = {g.same(gx)};
    twin(g, &comm);
  }
  // VocabCrossEntropy: the group's reduced statistics into lse and the mean.
  for (int64_t rows : {7, 1000, 16384, 0}) {
    Case c = make("VocabCrossEntropy " + dims({{"rows", rows}}),
                  Op::VocabCrossEntropy, {rows});
    c.ins = {c.f32({rows}, rng.vec(rows, -3, 6)),
             c.f32({rows}, rng.vec(rows, 1, 5000)),
             c.f32({rows}, rng.vec(rows, -6, 6))};
    c.outs = {c.out({}), c.out({rows})};
    twin(c);
  }
  // A target outside the true vocabulary (the padding), and a V that the
  // group's padding cannot produce: both backends refuse alike.
  {
    const int64_t rows = 6, Vl = 17, size = 3, V = 45;
    Place comm(2, int(size));
    std::vector<int32_t> t = rng.ids(rows, V);
    t[4] = 45;
    const std::vector<float> x = rng.vec(rows * Vl, -6, 6);
    Case c = make("VocabCrossEntropyStats target 45 of V=45",
                  Op::VocabCrossEntropyStats, {rows, Vl, V, 0});
    c.ins = {c.f32({rows, Vl}, x), c.i32({rows}, t),
             c.f32({rows}, rowMaxPlus(rng, x, rows, Vl))};
    c.outs = {c.out({rows}), c.out({rows})};
    dataError(c,
              "VocabCrossEntropyStats: target 45 of row 4 is outside the "
              "vocabulary [0, 45)",
              &comm);
    Case g = make("VocabCrossEntropyGrad target 45 of V=45",
                  Op::VocabCrossEntropyGrad, {rows, Vl, V, 0});
    g.ins = {g.f32({rows, Vl}, x), g.i32({rows}, t),
             g.f32({rows}, std::vector<float>(size_t(rows), 9.5f)),
             g.f32({}, {0.7f})};
    g.outs = {g.out({rows, Vl})};
    dataError(g,
              "VocabCrossEntropyGrad: target 45 of row 4 is outside the "
              "vocabulary [0, 45)",
              &comm);
    t[4] = 3;
    Case p = make("VocabCrossEntropyStats V=34 over 3 x 17",
                  Op::VocabCrossEntropyStats, {rows, Vl, 34, 0});
    p.ins = {p.f32({rows, Vl}, x), p.i32({rows}, t),
             p.f32({rows}, rowMaxPlus(rng, x, rows, Vl))};
    p.outs = {p.out({rows}), p.out({rows})};
    dataError(p, "vocabulary 34 is not 3 shards of 17 with padding in the last",
              &comm);
  }
}

void distributedAdamW(Rng &rng) {
  // {block, size}: an odd block, one of 2^20 + 3, one rank of one.
  const int64_t shapes[][2] = {{1001, 4}, {(int64_t(1) << 20) + 3, 2}, {77, 1}};
  const std::vector<float> f = {0.9f, 0.95f, 1e-8f, 0.1f};
  for (const auto &s : shapes) {
    const int64_t n = s[0], size = s[1];
    const std::vector<float> param = rng.vec(n * size);
    const std::vector<float> grad = rng.vec(n), m = rng.vec(n, -0.1, 0.1),
                             v = rng.vec(n, 1e-4, 0.05);
    for (int rank = 0; rank<size; rank += size> 2 ? 3 : 1)
      for (float coef : {0.37f, kNaN}) {
        Place comm(rank, int(size));
        Case c =
            make("AdamW block " + dims({{"n", n}}) + where(rank, int(size)) +
                     (std::isnan(coef) ? " skipped (coef NaN)" : ""),
                 Op::AdamW, {1}, f);
        // param compared too: the update must leave it alone.
        c.ins = {c.inout({n * size}, param),
                 c.f32({n}, grad),
                 c.inout({n}, m),
                 c.inout({n}, v),
                 c.f32({}, {6e-4f}),
                 c.f32({}, {7.0f}),
                 c.f32({}, {coef})};
        c.outs = {c.out({n})};
        twin(c, &comm);
      }
  }
  // Without a communicator: one rank of one, the block is the parameter.
  {
    const int64_t n = 513;
    Case c = make("AdamW block n=513 no communicator", Op::AdamW, {1}, f);
    c.ins = {c.inout({n}, rng.vec(n)),
             c.f32({n}, rng.vec(n)),
             c.inout({n}, rng.vec(n, -0.1, 0.1)),
             c.inout({n}, rng.vec(n, 1e-4, 0.05)),
             c.f32({}, {1e-3f}),
             c.f32({}, {1.0f}),
             c.f32({}, {1.0f})};
    c.outs = {c.out({n})};
    twin(c);
  }
  // A parameter that is not `size` blocks: refused at launch alike.
  {
    const int64_t n = 100;
    Place comm(0, 2);
    Case c = make("AdamW block of a parameter of 3 blocks on 2 ranks",
                  Op::AdamW, {1}, f);
    c.ins = {c.f32({3 * n}, rng.vec(3 * n)),
             c.f32({n}, rng.vec(n)),
             c.f32({n}, rng.vec(n)),
             c.f32({n}, rng.vec(n, 0.0, 1.0)),
             c.f32({}, {1e-3f}),
             c.f32({}, {1.0f}),
             c.f32({}, {1.0f})};
    c.outs = {c.out({n})};
    dataError(c, "AdamW: the parameter has 300 elements, not 2 blocks of 100",
              &comm);
  }
}

} // namespace

void vocabParallel(Rng &rng) {
  embedding(rng);
  rowMax(rng);
  loss(rng);
  lossGpt2(rng);
  distributedAdamW(rng);
}

} // namespace twincheck

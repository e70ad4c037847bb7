//===- test_vocab_parallel.cpp - Vocabulary-parallel embedding and loss ---===//
//
// Each kernel runs once per "rank" of a tensor group of size T on that
// rank's slice of the vocabulary (a fake communicator says which rank), and
// the pieces, combined as the plan's collectives would, must give what the
// unsharded kernels give on the full tensors, and the naive double
// references.
//
//===----------------------------------------------------------------------===//
#include "KernelTest.h"

#include "../PlacedComm.h"

#include <algorithm>
#include <limits>

using namespace kt;
using mega::plan::ParallelGroup;
using mega::plan::ReduceOp;
using mega::rt::Communicator;
using mega::rt::ProcessGroup;

namespace {

/// Every group of size `size`, this process at `rank`; the only
/// communication is allReduce's sum with what the other ranks would add.
class FakeComm final : public mega::test::PlacedComm {
public:
  using PlacedComm::PlacedComm;
  /// Sum: in + `others` (what the other ranks would contribute).
  void allReduce(const ProcessGroup &, const float *in, float *out, size_t n,
                 ReduceOp op) override {
    if (op != ReduceOp::Sum || others.size() != n)
      none("allReduce other than a sum of `others`");
    for (size_t k = 0; k < n; ++k)
      out[k] = in[k] + others[k];
    ++reductions;
  }
  std::vector<float> others;
  int reductions = 0;
};

/// Columns [c0, c0 + n) of a [rows, cols] matrix.
std::vector<float> columns(const std::vector<float> &x, int64_t rows,
                           int64_t cols, int64_t c0, int64_t n) {
  std::vector<float> out(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j)
      out[size_t(r * n + j)] = x[size_t(r * cols + c0 + j)];
  return out;
}

void testEmbedding(Rng &rng, int64_t rows, int64_t T, int64_t Vl, int64_t H,
                   int threads) {
  const int64_t V = T * Vl;
  std::vector<float> table = rng.vec(V * H), dout = rng.vec(rows * H);
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    ids[size_t(r)] = r % 3 ? rng.index(V) : rng.index(std::min<int64_t>(V, 4));
  ids[0] = int32_t(V - 1);
  std::string tag = " T=" + std::to_string(T) + " rows=" + std::to_string(rows);

  // The unsharded kernels on the full table.
  Harness full(threads);
  Tensor &ft = full.f32({V, H}, table), &fi = full.i32({rows}, ids),
         &fo = full.f32({rows, H}), &fd = full.f32({rows, H}, dout),
         &fg = full.f32({V, H});
  if (!full.run(make(Op::Embedding, {rows, V, H, 0}), {&ft, &fi}, {&fo}) ||
      !full.run(make(Op::EmbeddingGrad, {rows, V, H, 0}), {&fd, &fi}, {&fg}))
    return;

  std::vector<double> sum(size_t(rows * H), 0.0);
  for (int64_t r = 0; r < T; ++r) {
    FakeComm comm{int(r), int(T)};
    Harness h(threads);
    h.comm = &comm;
    std::vector<float> slice(table.begin() + r * Vl * H,
                             table.begin() + (r + 1) * Vl * H);
    Tensor &tt = h.f32({Vl, H}, slice), &ti = h.i32({rows}, ids),
           &to = h.f32({rows, H}, rng.vec(rows * H)),
           &td = h.f32({rows, H}, dout), &tg = h.f32({Vl, H}, rng.vec(Vl * H)),
           &ta = h.f32({Vl, H}, slice);
    if (!h.run(make(Op::VocabEmbedding, {rows, Vl, H, 0}), {&tt, &ti}, {&to}) ||
        !h.run(make(Op::VocabEmbeddingGrad, {rows, Vl, H, 0, 0}), {&td, &ti},
               {&tg}) ||
        !h.run(make(Op::VocabEmbeddingGrad, {rows, Vl, H, 1, 0}), {&td, &ti},
               {&ta}))
      return;
    // Naive reference of this rank's piece.
    std::vector<double> ref(size_t(rows * H), 0.0);
    for (int64_t i = 0; i < rows; ++i)
      if (ids[size_t(i)] >= r * Vl && ids[size_t(i)] < (r + 1) * Vl)
        for (int64_t j = 0; j < H; ++j)
          ref[size_t(i * H + j)] = table[size_t(ids[size_t(i)] * H + j)];
    closeTo(("vocab embedding rank " + std::to_string(r) + tag).c_str(), to.f(),
            ref, 0, 0);
    for (size_t k = 0; k < sum.size(); ++k)
      sum[k] += to.f()[k];
    // The gradient of the slice is the slice of the full gradient, bit for
    // bit (the same additions in the same order).
    sameBits(("vocab embedding grad rank " + std::to_string(r) + tag).c_str(),
             tg.f(), fg.f() + r * Vl * H, size_t(Vl * H));
    std::vector<double> acc(size_t(Vl * H));
    for (int64_t k = 0; k < Vl * H; ++k)
      acc[size_t(k)] = double(slice[size_t(k)]) + double(fg.f()[r * Vl * H + k]);
    closeTo(("vocab embedding grad acc rank " + std::to_string(r) + tag).c_str(),
            ta.f(), acc, 1e-6, 1e-6);
  }
  // Summed over the ranks (the AllReduce): exactly the full Embedding.
  closeTo(("vocab embedding summed" + tag).c_str(), fo.f(), sum, 0, 0);
}

void testRowMax(Harness &h, Rng &rng, int64_t rows, int64_t cols) {
  std::vector<float> x = rng.vec(rows * cols, -30, 30);
  Tensor &tx = h.f32({rows, cols}, x), &to = h.f32({rows});
  if (!h.run(make(Op::RowMax, {rows, cols}), {&tx}, {&to}))
    return;
  std::vector<double> ref(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    ref[size_t(r)] = *std::max_element(x.begin() + r * cols,
                                       x.begin() + (r + 1) * cols);
  closeTo(("row max " + std::to_string(rows) + "x" + std::to_string(cols)).c_str(),
          to.f(), ref, 0, 0);
}

void testLoss(Rng &rng, int64_t rows, int64_t T, int64_t Vl, double spread,
              int threads) {
  const int64_t V = T * Vl;
  std::vector<float> logits = rng.vec(rows * V, -spread, spread);
  std::vector<int32_t> targets(static_cast<size_t>(rows));
  for (auto &t : targets)
    t = rng.index(V);
  targets[0] = int32_t(V - 1);
  targets[size_t(rows - 1)] = 0;
  const float dloss = 1.7f;
  std::string tag = " T=" + std::to_string(T) + " rows=" + std::to_string(rows) +
                    " Vl=" + std::to_string(Vl);

  // Unsharded CrossEntropy and its gradient.
  Harness full(threads);
  Tensor &fx = full.f32({rows, V}, logits), &ft = full.i32({rows}, targets),
         &floss = full.f32({}), &flse = full.f32({rows}),
         &fdl = full.f32({}, {dloss}), &fdx = full.f32({rows, V});
  if (!full.run(make(Op::CrossEntropy, {rows, V}), {&fx, &ft}, {&floss, &flse}) ||
      !full.run(make(Op::CrossEntropyGrad, {rows, V}), {&fx, &ft, &flse, &fdl},
                {&fdx}))
    return;

  // Naive double reference.
  std::vector<double> refLse(static_cast<size_t>(rows));
  double refLoss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double m = -1e300, s = 0;
    for (int64_t v = 0; v < V; ++v)
      m = std::max(m, double(logits[size_t(r * V + v)]));
    for (int64_t v = 0; v < V; ++v)
      s += std::exp(double(logits[size_t(r * V + v)]) - m);
    refLse[size_t(r)] = m + std::log(s);
    refLoss += refLse[size_t(r)] - logits[size_t(r * V + targets[size_t(r)])];
  }
  refLoss /= double(rows);

  // Per rank: RowMax on the slice; the max over the ranks (AllReduce max);
  // the stats with that max; their sums (AllReduce sum).
  std::vector<std::unique_ptr<Harness>> hs;
  std::vector<std::unique_ptr<FakeComm>> comms;
  std::vector<Tensor *> xs, ts;
  std::vector<float> gmax(size_t(rows), -std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < T; ++r) {
    comms.push_back(std::make_unique<FakeComm>(int(r), int(T)));
    hs.push_back(std::make_unique<Harness>(threads));
    Harness &h = *hs.back();
    h.comm = comms.back().get();
    xs.push_back(&h.f32({rows, Vl}, columns(logits, rows, V, r * Vl, Vl)));
    ts.push_back(&h.i32({rows}, targets));
    Tensor &tm = h.f32({rows});
    if (!h.run(make(Op::RowMax, {rows, Vl}), {xs.back()}, {&tm}))
      return;
    for (int64_t i = 0; i < rows; ++i)
      gmax[size_t(i)] = std::max(gmax[size_t(i)], tm.f()[i]);
  }
  std::vector<float> sumexp(size_t(rows), 0.0f), tl(size_t(rows), 0.0f);
  for (int64_t r = 0; r < T; ++r) {
    Harness &h = *hs[size_t(r)];
    Tensor &tm = h.f32({rows}, gmax), &ts2 = h.f32({rows}), &ttl = h.f32({rows});
    if (!h.run(make(Op::VocabCrossEntropyStats, {rows, Vl, 0}),
               {xs[size_t(r)], ts[size_t(r)], &tm}, {&ts2, &ttl}))
      return;
    std::vector<double> refS(static_cast<size_t>(rows)), refT(static_cast<size_t>(rows), 0.0);
    for (int64_t i = 0; i < rows; ++i) {
      double s = 0;
      for (int64_t v = 0; v < Vl; ++v)
        s += std::exp(double(logits[size_t(i * V + r * Vl + v)]) - gmax[size_t(i)]);
      refS[size_t(i)] = s;
      int64_t lv = targets[size_t(i)] - r * Vl;
      if (lv >= 0 && lv < Vl)
        refT[size_t(i)] = logits[size_t(i * V + r * Vl + lv)];
      sumexp[size_t(i)] += ts2.f()[i];
      tl[size_t(i)] += ttl.f()[i];
    }
    closeTo(("vocab ce stats sumexp rank " + std::to_string(r) + tag).c_str(),
            ts2.f(), refS, 1e-5, 1e-30);
    closeTo(("vocab ce stats target rank " + std::to_string(r) + tag).c_str(),
            ttl.f(), refT, 0, 0);
  }
  Harness &h0 = *hs[0];
  Tensor &cm = h0.f32({rows}, gmax), &cs = h0.f32({rows}, sumexp),
         &ct = h0.f32({rows}, tl), &closs = h0.f32({}), &clse = h0.f32({rows});
  if (!h0.run(make(Op::VocabCrossEntropy, {rows}), {&cm, &cs, &ct},
              {&closs, &clse}))
    return;
  closeTo(("vocab ce loss vs CrossEntropy" + tag).c_str(), closs.f(),
          {double(floss.f()[0])}, 1e-5, 1e-6);
  closeTo(("vocab ce loss vs reference" + tag).c_str(), closs.f(), {refLoss},
          1e-5, 1e-6);
  closeTo(("vocab ce lse vs CrossEntropy" + tag).c_str(), clse.f(),
          toD(flse.get()), 1e-6, 1e-5);
  closeTo(("vocab ce lse vs reference" + tag).c_str(), clse.f(), refLse, 1e-6,
          1e-5);

  // Gradients: each rank's piece is the slice of CrossEntropyGrad's result.
  for (int64_t r = 0; r < T; ++r) {
    Harness &h = *hs[size_t(r)];
    Tensor &tl2 = h.f32({rows}, clse.get()), &tdl = h.f32({}, {dloss}),
           &tdx = h.f32({rows, Vl});
    // Also in place (dlogits = logits), on a copy.
    Tensor &tip = h.f32({rows, Vl}, xs[size_t(r)]->get());
    if (!h.run(make(Op::VocabCrossEntropyGrad, {rows, Vl, 0}),
               {xs[size_t(r)], ts[size_t(r)], &tl2, &tdl}, {&tdx}) ||
        !h.run(make(Op::VocabCrossEntropyGrad, {rows, Vl, 0}),
               {&tip, ts[size_t(r)], &tl2, &tdl}, {&tip}))
      return;
    std::vector<float> want = columns(fdx.get(), rows, V, r * Vl, Vl);
    std::vector<double> ref(size_t(rows * Vl));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t v = 0; v < Vl; ++v) {
        double p = std::exp(double(logits[size_t(i * V + r * Vl + v)]) -
                            refLse[size_t(i)]);
        if (targets[size_t(i)] == r * Vl + v)
          p -= 1.0;
        ref[size_t(i * Vl + v)] = p * dloss / double(rows);
      }
    std::string rt = " rank " + std::to_string(r) + tag;
    closeTo(("vocab ce grad vs CrossEntropyGrad" + rt).c_str(), tdx.f(),
            toD(want), 1e-5, 1e-7);
    closeTo(("vocab ce grad vs reference" + rt).c_str(), tdx.f(), ref, 1e-4,
            1e-7);
    sameBits(("vocab ce grad in place" + rt).c_str(), tip.f(), tdx.f(),
             size_t(rows * Vl));
  }
}

void testWorldOfOne(Rng &rng) {
  // Without a communicator: rank 0 of 1, the whole vocabulary.
  Harness h(2);
  const int64_t rows = 9, V = 11, H = 3;
  std::vector<float> table = rng.vec(V * H);
  std::vector<int32_t> ids = {0, 10, 3, 3, 7, 1, 2, 9, 5};
  Tensor &tt = h.f32({V, H}, table), &ti = h.i32({rows}, ids),
         &a = h.f32({rows, H}), &b = h.f32({rows, H});
  if (h.run(make(Op::Embedding, {rows, V, H, 0}), {&tt, &ti}, {&a}) &&
      h.run(make(Op::VocabEmbedding, {rows, V, H, 0}), {&tt, &ti}, {&b}))
    sameBits("vocab embedding world of one", a.f(), b.f(), size_t(rows * H));
}

void testErrors(Rng &rng) {
  Harness h(2);
  FakeComm comm(1, 2);
  h.comm = &comm;
  const int64_t rows = 4, Vl = 5, H = 3;
  Tensor &tt = h.f32({Vl, H}, rng.vec(Vl * H)), &to = h.f32({rows, H}),
         &tx = h.f32({rows, Vl}, rng.vec(rows * Vl)), &tm = h.f32({rows}),
         &ts = h.f32({rows}), &ttl = h.f32({rows});
  // Ids of the other rank's range are fine, outside [0, 10) are errors.
  Tensor &good = h.i32({rows}, {0, 4, 5, 9});
  h.run(make(Op::VocabEmbedding, {rows, Vl, H, 0}), {&tt, &good}, {&to});
  for (int32_t bad : {-1, 10, 1 << 30}) {
    Tensor &ti = h.i32({rows}, {0, bad, 3, 9});
    h.launchThrows("vocab embedding bad id", make(Op::VocabEmbedding, {rows, Vl, H, 0}),
                   {&tt, &ti}, {&to}, "outside the vocabulary [0, 10)");
    h.launchThrows("vocab embedding grad bad id",
                   make(Op::VocabEmbeddingGrad, {rows, Vl, H, 0, 0}), {&to, &ti},
                   {&tt}, "outside the vocabulary");
    h.launchThrows("vocab ce stats bad target",
                   make(Op::VocabCrossEntropyStats, {rows, Vl, 0}),
                   {&tx, &ti, &tm}, {&ts, &ttl}, "target");
  }
  h.reject("vocab embedding group", make(Op::VocabEmbedding, {rows, Vl, H, 3}),
           {&tt, &good}, {&to}, "group = 3");
  h.reject("vocab embedding shape", make(Op::VocabEmbedding, {rows, Vl + 1, H, 0}),
           {&tt, &good}, {&to}, "table has");
  h.reject("vocab embedding grad attrs",
           make(Op::VocabEmbeddingGrad, {rows, Vl, H, 0}), {&to, &good}, {&tt},
           "integer attributes");
  h.reject("row max out", make(Op::RowMax, {rows, Vl}), {&tx}, {&tt}, "out has");
  h.reject("row max cols", make(Op::RowMax, {rows, 0}), {&tx}, {&tm}, "cols");
  h.reject("vocab ce stats alias", make(Op::VocabCrossEntropyStats, {rows, Vl, 0}),
           {&tx, &good, &tm}, {&tm, &ttl}, "overlaps");
  h.reject("vocab ce rows", make(Op::VocabCrossEntropy, {rows + 1}),
           {&tm, &ts, &ttl}, {&h.f32({}), &h.f32({rows + 1})}, "max has");
  h.reject("vocab ce grad partial overlap",
           make(Op::VocabCrossEntropyGrad, {rows, Vl, 0}),
           {&h.arena(0, {rows, Vl}), &good, &tm, &h.f32({})},
           {&h.arena(4, {rows, Vl})}, "partially overlaps");
}

void testDeterminism(Rng &rng) {
  // The same bits for 1 and 4 threads.
  const int64_t rows = 64, Vl = 3000, H = 40, T = 2;
  std::vector<float> x = rng.vec(rows * Vl, -8, 8), dout = rng.vec(rows * H);
  std::vector<int32_t> t(static_cast<size_t>(rows));
  for (auto &v : t)
    v = rng.index(Vl * T);
  std::vector<std::vector<float>> res;
  for (int threads : {1, 4}) {
    FakeComm comm{1, int(T)};
    Harness h(threads);
    h.comm = &comm;
    Tensor &tx = h.f32({rows, Vl}, x), &tt = h.i32({rows}, t),
           &tm = h.f32({rows}), &ts = h.f32({rows}), &ttl = h.f32({rows}),
           &td = h.f32({rows, H}, dout), &tg = h.f32({Vl, H});
    h.run(make(Op::RowMax, {rows, Vl}), {&tx}, {&tm});
    h.run(make(Op::VocabCrossEntropyStats, {rows, Vl, 0}), {&tx, &tt, &tm},
          {&ts, &ttl});
    h.run(make(Op::VocabEmbeddingGrad, {rows, Vl, H, 0, 0}), {&td, &tt}, {&tg});
    std::vector<float> all = ts.get();
    std::vector<float> g = tg.get();
    all.insert(all.end(), g.begin(), g.end());
    res.push_back(all);
  }
  sameBits("vocab parallel 1 vs 4 threads", res[0].data(), res[1].data(),
           res[0].size());
}

void testGradNormShards(Rng &rng) {
  // Input 0 and 2 are shards over the tensor group, input 1 replicated: the
  // squared sum of the shards meets the other ranks' (2.5 here), the
  // replicated one counts once.
  Harness h(2);
  FakeComm comm(0, 2);
  comm.others = {2.5f};
  h.comm = &comm;
  std::vector<float> a = rng.vec(40), b = rng.vec(7), c = rng.vec(20000);
  Tensor &ta = h.f32({40}, a), &tb = h.f32({7}, b), &tc = h.f32({20000}, c),
         &norm = h.f32({}), &coef = h.f32({});
  double shard = 0, rep = 0;
  for (float x : a)
    shard += double(x) * x;
  for (float x : c)
    shard += double(x) * x;
  for (float x : b)
    rep += double(x) * x;
  const double want = std::sqrt(float(shard) + 2.5 + rep);
  if (h.run(make(Op::GradNorm, {0, 1, 0, 1}, {0.5f}), {&ta, &tb, &tc},
            {&norm, &coef})) {
    CHECK(comm.reductions == 1, "GradNorm shards: %d reductions", comm.reductions);
    closeTo("grad norm with shards", norm.f(), {want}, 1e-6);
    closeTo("grad norm with shards: coef", coef.f(), {0.5 / (want + 1e-6)}, 1e-6);
  }
  // Without a communicator (world size 1) the flags change nothing.
  Harness h1(2);
  Tensor &ua = h1.f32({40}, a), &ub = h1.f32({7}, b), &un = h1.f32({}),
         &uc = h1.f32({});
  if (h1.run(make(Op::GradNorm, {0, 1, 0}, {0.0f}), {&ua, &ub}, {&un, &uc})) {
    double ss = rep;
    for (float x : a)
      ss += double(x) * x;
    closeTo("grad norm flags, one rank", un.f(), {std::sqrt(ss)}, 1e-6);
  }
  h.reject("grad norm flag count", make(Op::GradNorm, {0, 1}, {0.0f}),
           {&ta, &tb}, {&norm, &coef}, "integer attributes");
  h.reject("grad norm flag", make(Op::GradNorm, {0, 2, 0}, {0.0f}), {&ta, &tb},
           {&norm, &coef}, "shard flag");
  h.reject("grad norm group", make(Op::GradNorm, {3, 1, 0}, {0.0f}), {&ta, &tb},
           {&norm, &coef}, "group");
}

} // namespace

int main() {
  Rng rng(29);
  testEmbedding(rng, 33, 2, 13, 7, 4);
  testEmbedding(rng, 200, 3, 700, 33, 4);
  testEmbedding(rng, 17, 4, 1, 5, 1);
  {
    Harness h(4);
    testRowMax(h, rng, 1, 1);
    testRowMax(h, rng, 37, 1500);
  }
  testLoss(rng, 16, 2, 50, 4.0, 4);
  testLoss(rng, 65, 3, 1100, 20.0, 4);
  testLoss(rng, 7, 4, 3, 1.0, 1);
  testWorldOfOne(rng);
  testErrors(rng);
  testDeterminism(rng);
  testGradNormShards(rng);
  return finish("test_vocab_parallel");
}

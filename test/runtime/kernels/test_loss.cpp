//===- test_loss.cpp - CrossEntropy, CrossEntropyGrad, CrossEntropyWithGrad ===//
#include "KernelTest.h"

using namespace kt;

namespace {

/// Mean cross entropy in double; lse per row.
double ceD(const std::vector<double> &x, const std::vector<int32_t> &t, int64_t rows,
           int64_t V, std::vector<double> *lse = nullptr) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double m = -1e300, s = 0;
    for (int64_t j = 0; j < V; ++j)
      m = std::max(m, x[r * V + j]);
    for (int64_t j = 0; j < V; ++j)
      s += std::exp(x[r * V + j] - m);
    double l = m + std::log(s);
    if (lse)
      (*lse)[r] = l;
    total += l - x[r * V + t[r]];
  }
  return total / rows;
}

void testCrossEntropy(Harness &h, Rng &rng, int64_t rows, int64_t V, bool inPlace,
                      bool finiteDiff) {
  std::vector<float> x = rng.vec(rows * V, -6, 6);
  std::vector<int32_t> t(rows);
  for (auto &v : t)
    v = rng.index(V);
  t[0] = 0;
  t[rows - 1] = int32_t(V - 1); // both ends of the vocabulary
  Tensor &tx = inPlace ? h.arena(0, {rows, V}) : h.f32({rows, V});
  tx.set(x);
  Tensor &tt = h.i32({rows}, t), &loss = h.f32({}), &lse = h.f32({rows});
  std::string label = "cross entropy " + std::to_string(rows) + "x" + std::to_string(V) +
                      (inPlace ? " in place" : "");
  if (!h.run(make(Op::CrossEntropy, {rows, V}), {&tx, &tt}, {&loss, &lse}))
    return;
  std::vector<double> rl(rows);
  double rloss = ceD(toD(x), t, rows, V, &rl);
  closeTo((label + " loss").c_str(), loss.f(), {rloss}, 1e-6);
  closeTo((label + " lse").c_str(), lse.f(), rl, 1e-6, 1e-6);

  const float dloss = 0.7f;
  Tensor &tdl = h.f32({}, {dloss});
  Tensor &tdx = inPlace ? tx : h.f32({rows, V}, rng.vec(rows * V));
  if (!h.run(make(Op::CrossEntropyGrad, {rows, V}), {&tx, &tt, &lse, &tdl}, {&tdx}))
    return;
  std::vector<double> rdx(rows * V);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < V; ++j)
      rdx[r * V + j] = (std::exp(double(x[r * V + j]) - rl[r]) - (j == t[r] ? 1.0 : 0.0)) *
                       dloss / rows;
  closeTo((label + " grad").c_str(), tdx.f(), rdx, 2e-6, 1e-10);
  if (!finiteDiff)
    return;
  std::vector<double> xd = toD(x), nd(rows * V);
  const double step = 1e-6;
  for (size_t k = 0; k < xd.size(); ++k) {
    double keep = xd[k];
    xd[k] = keep + step;
    double lp = ceD(xd, t, rows, V);
    xd[k] = keep - step;
    double lm = ceD(xd, t, rows, V);
    xd[k] = keep;
    nd[k] = dloss * (lp - lm) / (2 * step);
  }
  closeTo((label + " grad vs finite differences").c_str(), tdx.f(), nd, 1e-4, 1e-7);
}

void testBadTargets(Harness &h, Rng &rng) {
  const int64_t rows = 5, V = 251;
  for (int32_t bad : {-1, 251, 1 << 30, -2147483647 - 1}) {
    std::vector<int32_t> t = {3, 1, bad, 7, 0};
    Tensor &tx = h.f32({rows, V}, rng.vec(rows * V)), &tt = h.i32({rows}, t),
           &loss = h.f32({}, {42.0f}), &lse = h.f32({rows}, {1, 2, 3, 4, 5});
    std::string label = "bad target " + std::to_string(bad);
    h.launchThrows(label.c_str(), make(Op::CrossEntropy, {rows, V}), {&tx, &tt},
                   {&loss, &lse}, "target");
    CHECK(loss.f()[0] == 42.0f && lse.f()[0] == 1.0f && lse.f()[4] == 5.0f,
          "%s: outputs were written before the error", label.c_str());
    Tensor &tdl = h.f32({}, {1.0f}), &tdx = h.f32({rows, V});
    h.launchThrows((label + " grad").c_str(), make(Op::CrossEntropyGrad, {rows, V}),
                   {&tx, &tt, &lse, &tdl}, {&tdx}, "target");
    h.launchThrows((label + " fused").c_str(),
                   make(Op::CrossEntropyWithGrad, {rows, V}), {&tx, &tt, &tdl},
                   {&loss, &lse, &tdx}, "CrossEntropyWithGrad: target");
  }
}

/// CrossEntropyWithGrad against CrossEntropy then CrossEntropyGrad: the
/// same bits for loss, lse and dlogits, also with the gradient written over
/// the logits.
/// Random logits in [-6, 6], spread targets, dloss 0.7, and the outputs of
/// a first launch over all rows.
struct LossCase {
  LossCase(Harness &h, Rng &rng, int64_t rows, int64_t V)
      : x(rng.vec(rows * V, -6, 6)), t(targets(rows, V)),
        tx(h.f32({rows, V}, x)), tt(h.i32({rows}, t)), dl(h.f32({}, {0.7f})),
        l1(h.f32({})), s1(h.f32({rows})), d1(h.f32({rows, V})) {}
  static std::vector<int32_t> targets(int64_t rows, int64_t V) {
    std::vector<int32_t> t(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      t[size_t(r)] = int32_t((r * 7919) % V);
    return t;
  }
  const std::vector<float> x;
  const std::vector<int32_t> t;
  Tensor &tx, &tt, &dl, &l1, &s1, &d1;
};

void testWithGrad(Harness &h, Rng &rng, int64_t rows, int64_t V, bool inPlace) {
  LossCase c(h, rng, rows, V);
  const std::vector<float> &x = c.x;
  Tensor &tx = c.tx, &tt = c.tt, &dl = c.dl, &l1 = c.l1, &s1 = c.s1, &d1 = c.d1;
  if (!h.run(make(Op::CrossEntropy, {rows, V}), {&tx, &tt}, {&l1, &s1}) ||
      !h.run(make(Op::CrossEntropyGrad, {rows, V}), {&tx, &tt, &s1, &dl}, {&d1}))
    return;
  Tensor &fx = h.f32({rows, V}, x);
  Tensor &l2 = h.f32({}), &s2 = h.f32({rows});
  Tensor &d2 = inPlace ? fx : h.f32({rows, V});
  const std::string label = "with grad " + std::to_string(rows) + "x" +
                            std::to_string(V) + (inPlace ? " in place" : "");
  if (!h.run(make(Op::CrossEntropyWithGrad, {rows, V}), {&fx, &tt, &dl},
             {&l2, &s2, &d2}))
    return;
  sameBits((label + " loss").c_str(), l2.f(), l1.f(), 1);
  sameBits((label + " lse").c_str(), s2.f(), s1.f(), rows);
  sameBits((label + " dlogits").c_str(), d2.f(), d1.f(), rows * V);
}

/// CrossEntropyWithGrad over row blocks {rows/n, V, rows, acc} (what
/// mega-chunk-loss emits) against one launch over all rows: lse and dlogits
/// the same bits (each row's math, and the scale dloss / mean_rows, do not
/// change); the loss within 2 ulp-ish of float (the blocks' shares are
/// rounded to float as they are added: rel 1e-6), and exactly the
/// one-launch bits when n == 1.
void testRowBlocks(Harness &h, Rng &rng, int64_t rows, int64_t V, int64_t n) {
  LossCase lc(h, rng, rows, V);
  const std::vector<float> &x = lc.x;
  const std::vector<int32_t> &t = lc.t;
  Tensor &tx = lc.tx, &tt = lc.tt, &dl = lc.dl, &l1 = lc.l1, &s1 = lc.s1,
         &d1 = lc.d1;
  if (!h.run(make(Op::CrossEntropyWithGrad, {rows, V}), {&tx, &tt, &dl},
             {&l1, &s1, &d1}))
    return;
  const int64_t r = rows / n;
  const std::string label = "row blocks " + std::to_string(rows) + "x" +
                            std::to_string(V) + " / " + std::to_string(n);
  Tensor &loss = h.f32({}, {123.0f}); // accumulate 0 must overwrite it
  for (int64_t c = 0; c < n; ++c) {
    std::vector<float> xc(x.begin() + c * r * V, x.begin() + (c + 1) * r * V);
    std::vector<int32_t> tc(t.begin() + c * r, t.begin() + (c + 1) * r);
    Tensor &bx = h.f32({r, V}, xc), &bt = h.i32({r}, tc);
    Tensor &bs = h.f32({r}), &bd = h.f32({r, V});
    if (!h.run(make(Op::CrossEntropyWithGrad, {r, V, rows, c > 0}),
               {&bx, &bt, &dl}, {&loss, &bs, &bd}))
      return;
    const std::string at = label + " block " + std::to_string(c);
    sameBits((at + " lse").c_str(), bs.f(), s1.f() + c * r, r);
    sameBits((at + " dlogits").c_str(), bd.f(), d1.f() + c * r * V, r * V);
  }
  if (n == 1)
    sameBits((label + " loss").c_str(), loss.f(), l1.f(), 1);
  const double want = l1.f()[0], got = loss.f()[0];
  CHECK(std::fabs(got - want) <= 1e-6 * std::fabs(want),
        "[%s] loss %.9g, one launch %.9g", label.c_str(), got, want);
}

/// The 4-attribute form's checks.
void testRowBlockChecks(Harness &h, Rng &rng) {
  const int64_t rows = 8, V = 16;
  Tensor &x = h.f32({rows, V}, rng.vec(rows * V));
  Tensor &t = h.i32({rows}, std::vector<int32_t>(size_t(rows), 3));
  Tensor &dl = h.f32({}, {1.0f});
  Tensor &loss = h.f32({}), &lse = h.f32({rows}), &d = h.f32({rows, V});
  const auto ce = [&](std::vector<int64_t> i) {
    return make(Op::CrossEntropyWithGrad, std::move(i));
  };
  h.reject("3 attributes", ce({rows, V, rows}), {&x, &t, &dl}, {&loss, &lse, &d},
           "expects 2 or 4 integer attributes, got 3");
  h.reject("mean_rows below rows", ce({rows, V, rows - 1, 0}), {&x, &t, &dl},
           {&loss, &lse, &d}, "mean_rows = 7 is outside [8,");
  h.reject("accumulate 2", ce({rows, V, 64, 2}), {&x, &t, &dl},
           {&loss, &lse, &d}, "accumulate = 2");
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(5);
  testCrossEntropy(h, rng, 7, 17, false, true);
  testCrossEntropy(h, rng, 33, 251, false, false);
  testCrossEntropy(h, rng, 5, 251, true, true);
  testCrossEntropy(h, rng, 64, 8192, false, false);
  testBadTargets(h, rng);
  testWithGrad(h, rng, 33, 251, false);
  testWithGrad(h, rng, 64, 8192, true);
  testRowBlocks(h, rng, 64, 8192, 1);
  testRowBlocks(h, rng, 64, 8192, 4);
  testRowBlocks(h, rng, 96, 251, 3);
  testRowBlockChecks(h, rng);
  return finish("test_loss");
}

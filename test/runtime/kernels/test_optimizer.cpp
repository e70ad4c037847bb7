//===- test_optimizer.cpp - GradNorm, AdamW, Sgd --------------------------===//
#include "KernelTest.h"

#include <limits>

using namespace kt;

namespace {

void testGradNorm(Harness &h, Rng &rng) {
  std::vector<int64_t> sizes = {7, 17 * 33, 40000, 1};
  std::vector<std::vector<float>> g;
  std::vector<Tensor *> ins;
  double ss = 0;
  for (int64_t n : sizes) {
    g.push_back(rng.vec(n, -0.1, 0.1));
    ins.push_back(&h.f32({n}, g.back()));
    for (float x : g.back())
      ss += double(x) * x;
  }
  const double norm = std::sqrt(ss);
  for (float maxNorm : {0.0f, -1.0f, float(norm * 0.5), float(norm * 2), 1e-3f}) {
    Tensor &tn = h.f32({}), &tc = h.f32({});
    std::string label = "grad norm max " + std::to_string(maxNorm);
    if (!h.run(make(Op::GradNorm, {}, {maxNorm}), ins, {&tn, &tc}))
      continue;
    double coef = maxNorm <= 0 ? 1.0 : std::min(1.0, maxNorm / (norm + 1e-6));
    closeTo((label + " norm").c_str(), tn.f(), {norm}, 1e-6);
    closeTo((label + " coef").c_str(), tc.f(), {coef}, 1e-6);
  }
  // A non-finite gradient: coef is NaN.
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
    std::vector<float> v = rng.vec(300);
    v[123] = bad;
    Tensor &tb = h.f32({300}, v), &tn = h.f32({}), &tc = h.f32({});
    std::vector<Tensor *> all = ins;
    all.push_back(&tb);
    if (h.run(make(Op::GradNorm, {}, {1.0f}), all, {&tn, &tc})) {
      CHECK(!std::isfinite(tn.f()[0]), "norm with a %g gradient is %g", double(bad),
            double(tn.f()[0]));
      CHECK(std::isnan(tc.f()[0]), "coef with a %g gradient is %g", double(bad),
            double(tc.f()[0]));
    }
  }
  // No gradients at all.
  {
    Tensor &tn = h.f32({}), &tc = h.f32({});
    if (h.run(make(Op::GradNorm, {}, {1.0f}), {}, {&tn, &tc}))
      CHECK(tn.f()[0] == 0.0f && tc.f()[0] == 1.0f, "empty grad norm: %g %g",
            double(tn.f()[0]), double(tc.f()[0]));
  }
}

void testAdamW(Harness &h, Rng &rng, int64_t n, float wd, float coef) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, lr = 1e-2f;
  std::vector<float> p0 = rng.vec(n);
  Tensor &tp = h.f32({n}, p0), &tg = h.f32({n}), &tm = h.f32({n}), &tv = h.f32({n});
  Tensor &tlr = h.f32({}, {lr}), &tstep = h.f32({}), &tcoef = h.f32({}, {coef});
  std::vector<double> p = toD(p0), m(n, 0.0), v(n, 0.0);
  std::string label = "adamw n=" + std::to_string(n) + " wd=" + std::to_string(wd) +
                      " coef=" + std::to_string(coef);
  for (int step = 1; step <= 6; ++step) {
    std::vector<float> g = rng.vec(n, -0.5, 0.5);
    tg.set(g);
    tstep.f()[0] = float(step);
    if (!h.run(make(Op::AdamW, {}, {b1, b2, eps, wd}),
               {&tp, &tg, &tm, &tv, &tlr, &tstep, &tcoef}, {}))
      return;
    // torch.optim.AdamW, in double.
    double bc1 = 1 - std::pow(double(b1), step), bc2 = 1 - std::pow(double(b2), step);
    for (int64_t k = 0; k < n; ++k) {
      double gk = double(g[k]) * coef;
      p[k] *= 1 - double(lr) * wd;
      m[k] = b1 * m[k] + (1 - double(b1)) * gk;
      v[k] = b2 * v[k] + (1 - double(b2)) * gk * gk;
      p[k] -= double(lr) * (m[k] / bc1) / (std::sqrt(v[k] / bc2) + eps);
    }
  }
  closeTo((label + " param").c_str(), tp.f(), p, 1e-5, 1e-7);
  closeTo((label + " m").c_str(), tm.f(), m, 1e-5, 1e-8); // m cancels: absolute
  closeTo((label + " v").c_str(), tv.f(), v, 1e-5, 1e-12);
}

void testSgd(Harness &h, Rng &rng, int64_t n, float wd, float coef) {
  const float lr = 0.05f;
  std::vector<float> p0 = rng.vec(n);
  Tensor &tp = h.f32({n}, p0), &tg = h.f32({n}), &tlr = h.f32({}, {lr}),
         &tcoef = h.f32({}, {coef});
  std::vector<double> p = toD(p0);
  for (int step = 0; step < 4; ++step) {
    std::vector<float> g = rng.vec(n);
    tg.set(g);
    if (!h.run(make(Op::Sgd, {}, {wd}), {&tp, &tg, &tlr, &tcoef}, {}))
      return;
    for (int64_t k = 0; k < n; ++k)
      p[k] -= lr * (double(g[k]) * coef + wd * p[k]);
  }
  closeTo(("sgd n=" + std::to_string(n)).c_str(), tp.f(), p, 1e-5, 1e-7);
}

/// GradNorm of a NaN gradient feeds coef = NaN: both optimizers skip.
void testSkip(Harness &h, Rng &rng) {
  const int64_t n = 100;
  std::vector<float> g = rng.vec(n);
  g[17] = std::nanf("");
  Tensor &tg = h.f32({n}, g), &tn = h.f32({}), &tc = h.f32({});
  if (!h.run(make(Op::GradNorm, {}, {1.0f}), {&tg}, {&tn, &tc}))
    return;
  std::vector<float> p0 = rng.vec(n), m0 = rng.vec(n), v0 = rng.vec(n, 0, 1);
  Tensor &tp = h.f32({n}, p0), &tm = h.f32({n}, m0), &tv = h.f32({n}, v0);
  Tensor &tlr = h.f32({}, {0.1f}), &tstep = h.f32({}, {3.0f});
  if (h.run(make(Op::AdamW, {}, {0.9f, 0.999f, 1e-8f, 0.1f}),
            {&tp, &tg, &tm, &tv, &tlr, &tstep, &tc}, {})) {
    sameBits("adamw skip param", tp.f(), p0.data(), n);
    sameBits("adamw skip m", tm.f(), m0.data(), n);
    sameBits("adamw skip v", tv.f(), v0.data(), n);
  }
  if (h.run(make(Op::Sgd, {}, {0.1f}), {&tp, &tg, &tlr, &tc}, {}))
    sameBits("sgd skip param", tp.f(), p0.data(), n);
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(17);
  testGradNorm(h, rng);
  testAdamW(h, rng, 7, 0.0f, 1.0f);
  testAdamW(h, rng, 33 * 17, 0.01f, 1.0f);
  testAdamW(h, rng, 70001, 0.1f, 0.37f);
  testSgd(h, rng, 17, 0.0f, 1.0f);
  testSgd(h, rng, 40001, 0.01f, 0.5f);
  testSkip(h, rng);
  return finish("test_optimizer");
}

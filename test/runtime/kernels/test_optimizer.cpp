//===- test_optimizer.cpp - GradNorm, AdamW, AdamWMulti, Sgd --------------===//
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

/// AdamWMulti is n AdamW in one instruction: the same bits for every
/// param, m and v over several steps (sizes that split across the threads
/// mid-tensor and tensors smaller than a thread's share), grads zeroed
/// after the update when zero_grads = 1 (also on a NaN coef, which leaves
/// param, m and v alone), untouched otherwise.
void testAdamWMulti(Harness &h, Rng &rng) {
  const std::vector<int64_t> sizes = {7, 70001, 1, 33 * 17, 40000};
  const int64_t n = int64_t(sizes.size());
  const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
  std::vector<float> wd;
  for (int64_t k = 0; k < n; ++k)
    wd.push_back(k % 2 ? 0.0f : 0.05f * float(k + 1));
  for (int zero : {0, 1}) {
    // Two sets of state from the same start: one per instruction kind.
    std::vector<Tensor *> single[4], multi[4];
    for (int64_t sz : sizes) {
      std::vector<float> init[4] = {rng.vec(sz), {}, rng.vec(sz, -0.1, 0.1),
                                    rng.vec(sz, 0, 0.01)};
      for (int r = 0; r < 4; ++r) {
        single[r].push_back(&h.f32({sz}, init[r]));
        multi[r].push_back(&h.f32({sz}, init[r]));
      }
    }
    Tensor &tlr = h.f32({}, {3e-3f}), &tstep = h.f32({}),
           &tcoef = h.f32({}, {0.7f});
    std::vector<float> f = {b1, b2, eps};
    f.insert(f.end(), wd.begin(), wd.end());
    const std::string z = " zero_grads=" + std::to_string(zero);
    for (int step = 1; step <= 4; ++step) {
      tstep.f()[0] = float(step);
      // Step 3 skips (a non-finite norm): nothing moves, grads still clear.
      tcoef.f()[0] = step == 3 ? std::nanf("") : 0.7f;
      std::vector<std::vector<float>> g;
      for (int64_t k = 0; k < n; ++k) {
        g.push_back(rng.vec(sizes[size_t(k)], -0.5, 0.5));
        single[1][size_t(k)]->set(g.back());
        multi[1][size_t(k)]->set(g.back());
      }
      std::vector<Tensor *> ins = {&tlr, &tstep, &tcoef};
      for (int64_t k = 0; k < n; ++k) {
        for (int r = 0; r < 4; ++r)
          ins.push_back(multi[r][size_t(k)]);
        if (!h.run(make(Op::AdamW, {}, {b1, b2, eps, wd[size_t(k)]}),
                   {single[0][size_t(k)], single[1][size_t(k)],
                    single[2][size_t(k)], single[3][size_t(k)], &tlr, &tstep,
                    &tcoef},
                   {}))
          return;
      }
      if (!h.run(make(Op::AdamWMulti, {n, zero}, f), ins, {}))
        return;
      for (int64_t k = 0; k < n; ++k) {
        const std::string t = " tensor " + std::to_string(k) + " step " +
                              std::to_string(step) + z;
        const size_t sz = size_t(sizes[size_t(k)]);
        sameBits(("adamw multi param" + t).c_str(), multi[0][size_t(k)]->f(),
                 single[0][size_t(k)]->f(), int64_t(sz));
        sameBits(("adamw multi m" + t).c_str(), multi[2][size_t(k)]->f(),
                 single[2][size_t(k)]->f(), int64_t(sz));
        sameBits(("adamw multi v" + t).c_str(), multi[3][size_t(k)]->f(),
                 single[3][size_t(k)]->f(), int64_t(sz));
        if (zero) {
          std::vector<float> zeros(sz, 0.0f);
          sameBits(("adamw multi grad zeroed" + t).c_str(),
                   multi[1][size_t(k)]->f(), zeros.data(), int64_t(sz));
        } else {
          sameBits(("adamw multi grad kept" + t).c_str(),
                   multi[1][size_t(k)]->f(), g[size_t(k)].data(), int64_t(sz));
        }
      }
    }
  }
  // Refusals: a missing tensor, the wrong f count, two tensors sharing
  // bytes (they are updated in one pass).
  Tensor &a = h.f32({5}), &b = h.f32({5}), &c = h.f32({5}), &d = h.f32({5});
  Tensor &s0 = h.f32({}), &s1 = h.f32({}), &s2 = h.f32({});
  h.reject("adamw multi operands", make(Op::AdamWMulti, {2, 0}, {0.9f, 0.9f, 1e-8f, 0, 0}),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {}, "expects 11 inputs");
  h.reject("adamw multi f count", make(Op::AdamWMulti, {1, 0}, {0.9f, 0.9f, 1e-8f}),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {}, "float attributes");
  h.reject("adamw multi zero flag", make(Op::AdamWMulti, {1, 2}, {0.9f, 0.9f, 1e-8f, 0}),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {}, "zero_grads");
  Tensor &e = h.f32({5}), &f2 = h.f32({5}), &g2 = h.f32({5});
  h.reject("adamw multi shared bytes",
           make(Op::AdamWMulti, {2, 0}, {0.9f, 0.9f, 1e-8f, 0, 0}),
           {&s0, &s1, &s2, &a, &b, &c, &d, &e, &b, &f2, &g2}, {}, "overlap");
}

/// AdamWMulti with copy flags: param, m, v and grads bit for bit those of
/// the instruction without them, and each flagged tensor's bf16 output the
/// bits Cast gives of the updated parameter (of the unchanged one on a NaN
/// coef); the outputs are poisoned before every step.
void testAdamWMultiCopies(Harness &h, Rng &rng) {
  const std::vector<int64_t> sizes = {7, 70001, 1, 33 * 17, 40000};
  const std::vector<int64_t> flags = {1, 0, 1, 1, 0};
  const int64_t n = int64_t(sizes.size());
  std::vector<float> f = {0.9f, 0.95f, 1e-8f};
  for (int64_t k = 0; k < n; ++k)
    f.push_back(k % 2 ? 0.0f : 0.05f * float(k + 1));
  std::vector<int64_t> iCopies = {n, 1};
  iCopies.insert(iCopies.end(), flags.begin(), flags.end());
  std::vector<Tensor *> plain[4], with[4], copies, casts;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const int64_t sz = sizes[k];
    std::vector<float> init[4] = {rng.vec(sz, -2, 2), {},
                                  rng.vec(sz, -0.1, 0.1), rng.vec(sz, 0, 0.01)};
    for (int r = 0; r < 4; ++r) {
      plain[r].push_back(&h.f32({sz}, init[r]));
      with[r].push_back(&h.f32({sz}, init[r]));
    }
    if (flags[k]) {
      copies.push_back(&h.alloc(DType::BF16, {sz}));
      casts.push_back(&h.alloc(DType::BF16, {sz}));
    }
  }
  Tensor &tlr = h.f32({}, {1e-2f}), &tstep = h.f32({}), &tcoef = h.f32({});
  for (int step = 1; step <= 3; ++step) {
    tstep.f()[0] = float(step);
    tcoef.f()[0] = step == 2 ? std::nanf("") : 0.8f;
    std::vector<Tensor *> insPlain = {&tlr, &tstep, &tcoef},
                          insWith = {&tlr, &tstep, &tcoef};
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<float> g = rng.vec(sizes[k], -0.5, 0.5);
      plain[1][k]->set(g);
      with[1][k]->set(g);
      for (int r = 0; r < 4; ++r) {
        insPlain.push_back(plain[r][k]);
        insWith.push_back(with[r][k]);
      }
    }
    for (Tensor *c : copies)
      std::memset(c->data, 0xff, size_t(c->v.bytes()));
    if (!h.run(make(Op::AdamWMulti, {n, 1}, f), insPlain, {}) ||
        !h.run(make(Op::AdamWMulti, iCopies, f), insWith, copies))
      return;
    const std::string at = " step " + std::to_string(step);
    for (size_t k = 0, c = 0; k < sizes.size(); ++k) {
      const std::string t = " tensor " + std::to_string(k) + at;
      for (int r = 0; r < 4; ++r)
        sameBits(("adamw multi copies state " + std::to_string(r) + t).c_str(),
                 with[r][k]->f(), plain[r][k]->f(), sizes[k]);
      if (!flags[k])
        continue;
      if (!h.run(make(Op::Cast, {sizes[k]}), {plain[0][k]}, {casts[c]}))
        return;
      CHECK(std::memcmp(copies[c]->data, casts[c]->data,
                        size_t(sizes[k]) * 2) == 0,
            "[adamw multi copy%s] differs from Cast of the parameter",
            t.c_str());
      ++c;
    }
  }
  // Refusals: copies that do not match the flags, a copy of the wrong
  // dtype or size, a copy on an operand's bytes.
  Tensor &a = h.f32({5}), &b = h.f32({5}), &c = h.f32({5}), &d = h.f32({5});
  Tensor &s0 = h.f32({}), &s1 = h.f32({}), &s2 = h.f32({});
  Tensor &cb = h.alloc(DType::BF16, {5}), &cf = h.f32({5});
  Tensor &cshort = h.alloc(DType::BF16, {4});
  const std::vector<float> f1 = {0.9f, 0.9f, 1e-8f, 0};
  h.reject("adamw multi copy count", make(Op::AdamWMulti, {1, 0, 1}, f1),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {}, "expects 7 inputs and 1");
  h.reject("adamw multi copy flags", make(Op::AdamWMulti, {1, 0, 1, 1}, f1),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {&cb}, "integer attributes");
  h.reject("adamw multi copy flag value", make(Op::AdamWMulti, {1, 0, 2}, f1),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {&cb}, "copy flag");
  h.reject("adamw multi copy dtype", make(Op::AdamWMulti, {1, 0, 1}, f1),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {&cf}, "copy");
  h.reject("adamw multi copy size", make(Op::AdamWMulti, {1, 0, 1}, f1),
           {&s0, &s1, &s2, &a, &b, &c, &d}, {&cshort}, "copy");
  Tensor &over = h.arena(0, {5}, DType::BF16), &p2 = h.arena(0, {5});
  h.reject("adamw multi copy on the parameter",
           make(Op::AdamWMulti, {1, 0, 1}, f1),
           {&s0, &s1, &s2, &p2, &b, &c, &d}, {&over}, "overlap");
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
  testAdamWMulti(h, rng);
  testAdamWMultiCopies(h, rng);
  return finish("test_optimizer");
}

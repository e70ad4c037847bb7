//===- test_elementwise.cpp - The fused elementwise interpreter -----------===//
#include "KernelTest.h"

#include <array>
#include <functional>
#include <limits>

using namespace kt;
using mega::plan::EwOp;

namespace {

using Code = std::vector<std::array<int64_t, 4>>;

int64_t op(EwOp e) { return int64_t(e); }

Instr ew(int64_t n, int nout, const std::vector<int64_t> &periods,
         const Code &code, std::vector<float> consts = {}) {
  std::vector<int64_t> i = {n, int64_t(periods.size()), nout};
  i.insert(i.end(), periods.begin(), periods.end());
  for (const auto &g : code)
    i.insert(i.end(), g.begin(), g.end());
  return make(Op::Elementwise, i, std::move(consts));
}

const double kSqrt2OverPi = 0.79788456080286535588;

double geluD(double x) {
  return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x)));
}
double geluGradD(double x) {
  double u = kSqrt2OverPi * (x + 0.044715 * x * x * x);
  double t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * 0.044715 * x * x);
}

/// One micro-op over one or two random inputs against a double reference.
void unaryOrBinary(Harness &h, Rng &rng, EwOp e, const char *name,
                   std::function<double(double, double)> ref, double rtol,
                   double atol, double lo = -3, double hi = 3) {
  const int64_t n = 3 * 7 * 33 + 1000; // not a multiple of any chunk size
  std::vector<float> a = rng.vec(size_t(n), lo, hi), b = rng.vec(size_t(n), lo, hi);
  Tensor &ta = h.f32({n}, a), &tb = h.f32({n}, b), &out = h.f32({n});
  Instr in = ew(n, 1, {n, n},
                {{op(EwOp::Load), 0, 0, 0},
                 {op(EwOp::Load), 1, 1, 0},
                 {op(e), 2, 0, 1},
                 {op(EwOp::Store), 2, 0, 0}});
  if (!h.run(in, {&ta, &tb}, {&out}))
    return;
  std::vector<double> r(static_cast<size_t>(n)), tol(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    r[size_t(k)] = ref(a[size_t(k)], b[size_t(k)]);
    tol[size_t(k)] = rtol * std::fabs(r[size_t(k)]) + atol;
  }
  closeToTol(name, out.f(), r, tol);
}

void testOps(Harness &h, Rng &rng) {
  // IEEE operations: correctly rounded, so the float reference is exact.
  unaryOrBinary(h, rng, EwOp::Add, "add", [](double x, double y) { return double(float(x) + float(y)); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Sub, "sub", [](double x, double y) { return double(float(x) - float(y)); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Mul, "mul", [](double x, double y) { return double(float(x) * float(y)); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Div, "div", [](double x, double y) { return double(float(x) / float(y)); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Max, "max", [](double x, double y) { return std::max(x, y); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Min, "min", [](double x, double y) { return std::min(x, y); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Neg, "neg", [](double x, double) { return -x; }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Square, "square", [](double x, double) { return double(float(x) * float(x)); }, 0, 0);
  unaryOrBinary(h, rng, EwOp::Sqrt, "sqrt", [](double x, double) { return double(std::sqrt(float(x))); }, 0, 0, 0, 50);
  unaryOrBinary(h, rng, EwOp::Rsqrt, "rsqrt", [](double x, double) { return 1.0 / std::sqrt(x); }, 1.2e-7, 0, 1e-3, 50);
  // Transcendentals: about 2 ulp against double libm.
  unaryOrBinary(h, rng, EwOp::Exp, "exp", [](double x, double) { return std::exp(x); }, 2.5e-7, 0, -80, 80);
  unaryOrBinary(h, rng, EwOp::Log, "log", [](double x, double) { return std::log(x); }, 2.5e-7, 1e-12, 1e-6, 1e6);
  unaryOrBinary(h, rng, EwOp::Tanh, "tanh", [](double x, double) { return std::tanh(x); }, 2.5e-7, 0, -6, 6);
  unaryOrBinary(h, rng, EwOp::Tanh, "tanh small", [](double x, double) { return std::tanh(x); }, 2.5e-7, 0, -0.7, 0.7);
  // GELU: 1 + tanh cancels for negative x, as in PyTorch's float formula,
  // so the error is relative to 0.5 x, not to the result (tolerances below).
  {
    const int64_t n = 4000;
    std::vector<float> a = rng.vec(n, -8, 8), b = rng.vec(n, -2, 2);
    Tensor &ta = h.f32({n}, a), &tb = h.f32({n}, b), &o1 = h.f32({n}), &o2 = h.f32({n});
    Instr in = ew(n, 2, {n, n},
                  {{op(EwOp::Load), 0, 0, 0},
                   {op(EwOp::Load), 1, 1, 0},
                   {op(EwOp::Gelu), 2, 0, 0},
                   {op(EwOp::GeluGrad), 3, 0, 1},
                   {op(EwOp::Store), 2, 0, 0},
                   {op(EwOp::Store), 3, 1, 0}});
    if (h.run(in, {&ta, &tb}, {&o1, &o2})) {
      std::vector<double> r1(n), t1(n), r2(n), t2(n), fd(n), tfd(n);
      for (int64_t k = 0; k < n; ++k) {
        double x = a[k], dy = b[k];
        r1[k] = geluD(x);
        t1[k] = 4e-7 * std::fabs(r1[k]) + 2.5e-7 * std::fabs(0.5 * x);
        r2[k] = dy * geluGradD(x);
        t2[k] = 1e-6 * std::fabs(r2[k]) + 5e-7 * std::fabs(dy) * (1 + std::fabs(x));
        // Finite differences of the double GELU.
        const double eps = 1e-5;
        fd[k] = dy * (geluD(x + eps) - geluD(x - eps)) / (2 * eps);
        tfd[k] = 1e-5 * std::fabs(dy) * (1 + std::fabs(x));
      }
      closeToTol("gelu (wide)", o1.f(), r1, t1);
      closeToTol("gelu grad", o2.f(), r2, t2);
      closeToTol("gelu grad vs finite differences", o2.f(), fd, tfd);
    }
  }
}

/// exp/log/tanh at special values and over their whole float range.
void testSpecialValues(Harness &h) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  std::vector<float> x = {0.0f, -0.0f, 1.0f, -1.0f, inf, -inf, nan, 1e-45f, 1e-40f,
                          1.17549435e-38f, 88.72f, 88.7228394f, 88.73f, 89.0f,
                          -87.3f, -87.4f, -100.0f, -103.9f, -104.0f, -120.0f,
                          1e-30f, -1e-30f, 0.549f, 0.551f, -0.551f, 9.0f, 10.0f,
                          -10.0f, 20.0f, 3e38f, -3e38f};
  // Sweep: exp over its finite range, log over all positive floats, tanh.
  for (int k = 0; k <= 40000; ++k)
    x.push_back(float(-104.0 + (88.7228 + 104.0) * k / 40000.0));
  for (int k = 0; k <= 40000; ++k)
    x.push_back(std::ldexp(1.0f + float(k % 997) / 997.0f, -149 + (k * 277) / 40000));
  const int64_t n = int64_t(x.size());
  Tensor &tx = h.f32({n}, x), &oe = h.f32({n}), &ol = h.f32({n}), &ot = h.f32({n});
  Instr in = ew(n, 3, {n},
                {{op(EwOp::Load), 0, 0, 0},
                 {op(EwOp::Exp), 1, 0, 0},
                 {op(EwOp::Log), 2, 0, 0},
                 {op(EwOp::Tanh), 3, 0, 0},
                 {op(EwOp::Store), 1, 0, 0},
                 {op(EwOp::Store), 2, 1, 0},
                 {op(EwOp::Store), 3, 2, 0}});
  if (!h.run(in, {&tx}, {&oe, &ol, &ot}))
    return;
  std::vector<double> re(n), te(n), rl(n), tl(n), rt(n), tt(n);
  for (int64_t k = 0; k < n; ++k) {
    double v = x[k];
    // Reference: double libm rounded to float (so overflow gives inf).
    re[k] = double(float(std::exp(v)));
    te[k] = 2.5e-7 * std::fabs(re[k]) + 3e-45; // subnormal results: ~2 ulp
    rl[k] = v < 0 ? std::nan("") : std::log(v);
    tl[k] = 2.5e-7 * std::fabs(rl[k]) + 1e-12;
    rt[k] = std::tanh(v);
    tt[k] = 2.5e-7 * std::fabs(rt[k]);
  }
  closeToTol("exp special values", oe.f(), re, te);
  closeToTol("log special values", ol.f(), rl, tl);
  closeToTol("tanh special values", ot.f(), rt, tt);
}

/// Bias row, scalar input, constant, odd periods that straddle chunks.
void testBroadcast(Harness &h, Rng &rng) {
  for (int64_t H : {33, 256, 1000}) {
    const int64_t rows = 97, n = rows * H;
    std::vector<float> x = rng.vec(n), bias = rng.vec(H), s = {1.5f};
    Tensor &tx = h.f32({rows, H}, x), &tb = h.f32({H}, bias), &ts = h.f32({}, s),
           &out = h.f32({rows, H});
    // out = (x + bias) * s - 0.25
    Instr in = ew(n, 1, {n, H, 1},
                  {{op(EwOp::Load), 0, 0, 0},
                   {op(EwOp::Load), 1, 1, 0},
                   {op(EwOp::Add), 2, 0, 1},
                   {op(EwOp::Load), 3, 2, 0},
                   {op(EwOp::Mul), 2, 2, 3},
                   {op(EwOp::Const), 4, 0, 0},
                   {op(EwOp::Sub), 5, 2, 4},
                   {op(EwOp::Store), 5, 0, 0}},
                  {0.25f});
    if (!h.run(in, {&tx, &tb, &ts}, {&out}))
      continue;
    std::vector<double> r(n);
    for (int64_t k = 0; k < n; ++k)
      r[k] = double((x[k] + bias[k % H]) * 1.5f - 0.25f);
    closeTo(("bias broadcast H=" + std::to_string(H)).c_str(), out.f(), r, 1e-7, 1e-7);
  }
  // A [S, H] addend repeated over the batch (period S*H).
  {
    const int64_t B = 3, S = 7, H = 17, n = B * S * H;
    std::vector<float> x = rng.vec(n), p = rng.vec(S * H);
    Tensor &tx = h.f32({B, S, H}, x), &tp = h.f32({S, H}, p), &out = h.f32({B, S, H});
    Instr in = ew(n, 1, {n, S * H},
                  {{op(EwOp::Load), 0, 0, 0},
                   {op(EwOp::Load), 1, 1, 0},
                   {op(EwOp::Add), 0, 0, 1},
                   {op(EwOp::Store), 0, 0, 0}});
    if (h.run(in, {&tx, &tp}, {&out})) {
      std::vector<double> r(n);
      for (int64_t k = 0; k < n; ++k)
        r[k] = double(x[k] + p[k % (S * H)]);
      closeTo("position broadcast", out.f(), r, 0, 0);
    }
  }
  // No inputs at all: a constant fill through the interpreter.
  {
    const int64_t n = 1001;
    Tensor &out = h.f32({n});
    Instr in = ew(n, 1, {}, {{op(EwOp::Const), 7, 1, 0}, {op(EwOp::Store), 7, 0, 0}},
                  {0.0f, -3.5f});
    if (h.run(in, {}, {&out}))
      closeTo("const only", out.f(), std::vector<double>(n, -3.5), 0, 0);
  }
}

/// An output that is also an input: every micro-op sees the element's
/// values as they were when loaded.
void testInPlace(Harness &h, Rng &rng) {
  const int64_t n = 2500;
  std::vector<float> x = rng.vec(n);
  Tensor &tx = h.arena(0, {n}), &other = h.arena(n * 4, {n});
  tx.set(x);
  // out0 (= x) = 2x; out1 = x + 2, computed after out0 was stored.
  Instr in = ew(n, 2, {n},
                {{op(EwOp::Load), 0, 0, 0},
                 {op(EwOp::Const), 1, 0, 0},
                 {op(EwOp::Mul), 2, 0, 1},
                 {op(EwOp::Store), 2, 0, 0},
                 {op(EwOp::Add), 3, 0, 1},
                 {op(EwOp::Store), 3, 1, 0}},
                {2.0f});
  if (!h.run(in, {&tx}, {&tx, &other}))
    return;
  std::vector<double> r0(n), r1(n);
  for (int64_t k = 0; k < n; ++k) {
    r0[k] = double(x[k] * 2.0f);
    r1[k] = double(x[k] + 2.0f);
  }
  closeTo("in place out0", tx.f(), r0, 0, 0);
  closeTo("in place out1 (old x)", other.f(), r1, 0, 0);
}

/// A realistic fused backward: dx = dy * gelu'(x + bias).
void testFusedBackward(Harness &h, Rng &rng) {
  const int64_t rows = 33, H = 96, n = rows * H;
  std::vector<float> x = rng.vec(n, -4, 4), dy = rng.vec(n), b = rng.vec(H);
  Tensor &tx = h.f32({rows, H}, x), &tdy = h.f32({rows, H}, dy), &tb = h.f32({H}, b),
         &out = h.f32({rows, H});
  Instr in = ew(n, 1, {n, n, H},
                {{op(EwOp::Load), 0, 0, 0},
                 {op(EwOp::Load), 1, 2, 0},
                 {op(EwOp::Add), 0, 0, 1},
                 {op(EwOp::Load), 2, 1, 0},
                 {op(EwOp::GeluGrad), 3, 0, 2},
                 {op(EwOp::Store), 3, 0, 0}});
  if (!h.run(in, {&tx, &tdy, &tb}, {&out}))
    return;
  std::vector<double> r(n), tol(n);
  for (int64_t k = 0; k < n; ++k) {
    double xb = double(x[k] + b[k % H]);
    r[k] = dy[k] * geluGradD(xb);
    tol[k] = 1e-6 * std::fabs(r[k]) + 5e-7 * std::fabs(dy[k]) * (1 + std::fabs(xb));
  }
  closeToTol("fused gelu backward", out.f(), r, tol);
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(11);
  testOps(h, rng);
  testSpecialValues(h);
  testBroadcast(h, rng);
  testInPlace(h, rng);
  testFusedBackward(h, rng);
  return finish("test_elementwise");
}

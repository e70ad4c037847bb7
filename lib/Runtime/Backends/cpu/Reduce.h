//===- Reduce.h - Fixed-order vector reductions for the CPU kernels -------===//
//
// Only for the kernel files (compiled for MEGA_CPU_ARCH): the vector types
// change the calling convention with the ISA, so CpuBackend.cpp, built for
// the baseline ISA, must not include this.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CPU_REDUCE_H
#define MEGA_RUNTIME_BACKENDS_CPU_REDUCE_H

#include <cstdint>

namespace mega::rt::cpu {

// Fixed-order reductions. Written with GCC vector extensions (lowered to
// AVX2 or SSE as the ISA allows) because the compiler does not vectorise
// reductions without -ffast-math. The lane results are combined in a fixed
// order, so a result depends on the data alone, never on the threads.
using v4f = float __attribute__((vector_size(16)));
using v8f = float __attribute__((vector_size(32)));
using v4d = double __attribute__((vector_size(32)));

inline v4f load4(const float *p) {
  v4f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline v8f load8(const float *p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline v4d widen(v4f v) { return __builtin_convertvector(v, v4d); }

/// Sum in double: 16 lanes, then the lanes in order.
inline double sumD(const float *x, int64_t n) {
  v4d a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 += widen(load4(x + i));
    a1 += widen(load4(x + i + 4));
    a2 += widen(load4(x + i + 8));
    a3 += widen(load4(x + i + 12));
  }
  double s = 0;
  for (; i < n; ++i)
    s += double(x[i]);
  v4d a = (a0 + a1) + (a2 + a3);
  return ((a[0] + a[1]) + (a[2] + a[3])) + s;
}

/// Dot product in double, same lane structure as sumD.
inline double dotD(const float *x, const float *y, int64_t n) {
  v4d a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 += widen(load4(x + i)) * widen(load4(y + i));
    a1 += widen(load4(x + i + 4)) * widen(load4(y + i + 4));
    a2 += widen(load4(x + i + 8)) * widen(load4(y + i + 8));
    a3 += widen(load4(x + i + 12)) * widen(load4(y + i + 12));
  }
  double s = 0;
  for (; i < n; ++i)
    s += double(x[i]) * double(y[i]);
  v4d a = (a0 + a1) + (a2 + a3);
  return ((a[0] + a[1]) + (a[2] + a[3])) + s;
}

/// Maximum (NaNs are skipped unless x[0] is one); n >= 1.
/// Sum of (x - mu)^2 in double, same lane structure as sumD.
inline double sumSqDevD(const float *x, int64_t n, double mu) {
  v4d a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v4d d0 = widen(load4(x + i)) - mu, d1 = widen(load4(x + i + 4)) - mu;
    v4d d2 = widen(load4(x + i + 8)) - mu, d3 = widen(load4(x + i + 12)) - mu;
    a0 += d0 * d0;
    a1 += d1 * d1;
    a2 += d2 * d2;
    a3 += d3 * d3;
  }
  double s = 0;
  for (; i < n; ++i)
    s += (double(x[i]) - mu) * (double(x[i]) - mu);
  v4d a = (a0 + a1) + (a2 + a3);
  return ((a[0] + a[1]) + (a[2] + a[3])) + s;
}

inline float maxF(const float *x, int64_t n) {
  v8f m0 = {}, m1 = {};
  m0 += x[0];
  m1 += x[0];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v8f a = load8(x + i), b = load8(x + i + 8);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  float m = m0[0];
  for (int l = 1; l < 8; ++l)
    m = m0[l] > m ? m0[l] : m;
  for (; i < n; ++i)
    m = x[i] > m ? x[i] : m;
  return m;
}

/// Minimum, as maxF.
inline float minF(const float *x, int64_t n) {
  v8f m0 = {}, m1 = {};
  m0 += x[0];
  m1 += x[0];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v8f a = load8(x + i), b = load8(x + i + 8);
    m0 = a < m0 ? a : m0;
    m1 = b < m1 ? b : m1;
  }
  m0 = m1 < m0 ? m1 : m0;
  float m = m0[0];
  for (int l = 1; l < 8; ++l)
    m = m0[l] < m ? m0[l] : m;
  for (; i < n; ++i)
    m = x[i] < m ? x[i] : m;
  return m;
}

/// Sum and sum of squares in double in one pass (same lane structure).
inline void sumSumSqD(const float *x, int64_t n, double &sum, double &sumSq) {
  v4d a0 = {}, a1 = {}, q0 = {}, q1 = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v4d d0 = widen(load4(x + i)), d1 = widen(load4(x + i + 4));
    a0 += d0;
    a1 += d1;
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  double s = 0, q = 0;
  for (; i < n; ++i) {
    s += double(x[i]);
    q += double(x[i]) * double(x[i]);
  }
  v4d a = a0 + a1, b = q0 + q1;
  sum = ((a[0] + a[1]) + (a[2] + a[3])) + s;
  sumSq = ((b[0] + b[1]) + (b[2] + b[3])) + q;
}

} // namespace mega::rt::cpu

#endif // MEGA_RUNTIME_BACKENDS_CPU_REDUCE_H

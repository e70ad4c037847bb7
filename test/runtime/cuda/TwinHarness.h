//===- TwinHarness.h - Running one instruction on two backends ----------===//
//
// The cuda twin check's machinery (cuda_twin_check.cpp has the method and
// the base opcodes' cases, cuda_twin_fused.cpp the mixed-precision and
// attention ones): a Case is one instruction with its operands, each in its
// own buffer; runOn() poisons the outputs, runs it and reads the compared
// tensors back (bf16 ones widened to float bits); twin() compares the CPU
// and CUDA results.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TEST_RUNTIME_CUDA_TWINHARNESS_H
#define MEGA_TEST_RUNTIME_CUDA_TWINHARNESS_H

#include "CudaBackend.h"

#include "mega/Runtime/Backend.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace mega;
using plan::DType;
using plan::EwOp;
using plan::Instr;
using plan::Op;
using plan::Space;
using plan::Value;
using rt::Backend;

namespace twincheck {


inline const float kNaN = std::numeric_limits<float>::quiet_NaN();

inline uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float floatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  double uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(g);
  }
  int32_t index(int64_t n) {
    return int32_t(std::uniform_int_distribution<int64_t>(0, n - 1)(g));
  }
  std::vector<float> vec(int64_t n, double lo = -1.0, double hi = 1.0) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float &x : v)
      x = float(uniform(lo, hi));
    if (n && v[0] == 0.0f)
      v[0] = float(0.5 * (lo + hi) + 0.25 * (hi - lo));
    return v;
  }
  std::vector<int32_t> ids(int64_t n, int64_t V) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t &x : v)
      x = index(V);
    return v;
  }
};

/// float -> bf16 bits, round to nearest even (NaN stays NaN).
inline uint16_t toBf16Bits(float f) {
  uint32_t u = bitsOf(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

/// A dtype's name in case labels.
inline const char *name(DType t) { return t == DType::BF16 ? "bf16" : "f32"; }

inline int64_t numel(const std::vector<int64_t> &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

/// One instruction with its operands. Each operand is a plan::Value in its
/// own "persistent" buffer, or a second view of another's bytes (in place).
struct Case {
  std::string label;
  Instr instr;
  struct Tensor {
    Value v;
    std::vector<uint32_t> init; ///< raw bits; empty: poisoned with NaN
  };
  std::vector<Tensor> ts;
  std::vector<int> ins, outs;
  std::vector<int> compare; ///< tensors read back and compared
  double tol = 1e-5;

  int add(DType dt, std::vector<int64_t> shape, std::vector<uint32_t> init) {
    Tensor t;
    t.v.space = Space::Persistent;
    t.v.index = int32_t(ts.size());
    t.v.dtype = dt;
    t.v.shape = std::move(shape);
    t.init = std::move(init);
    ts.push_back(std::move(t));
    return int(ts.size()) - 1;
  }
  int f32(std::vector<int64_t> shape, const std::vector<float> &x) {
    std::vector<uint32_t> b(x.size());
    for (size_t k = 0; k < x.size(); ++k)
      b[k] = bitsOf(x[k]);
    return add(DType::F32, std::move(shape), std::move(b));
  }
  /// bf16 values (rounded to nearest even), two to a word.
  int bf16(std::vector<int64_t> shape, const std::vector<float> &x) {
    std::vector<uint32_t> b((x.size() + 1) / 2, 0);
    for (size_t k = 0; k < x.size(); ++k)
      b[k / 2] |= uint32_t(toBf16Bits(x[k])) << (16 * (k % 2));
    return add(DType::BF16, std::move(shape), std::move(b));
  }
  int i32(std::vector<int64_t> shape, const std::vector<int32_t> &x) {
    std::vector<uint32_t> b(x.begin(), x.end());
    return add(DType::I32, std::move(shape), std::move(b));
  }
  /// An output poisoned with NaN, compared afterwards.
  int out(std::vector<int64_t> shape, DType dt = DType::F32) {
    int k = add(dt, std::move(shape), {});
    compare.push_back(k);
    return k;
  }
  /// An f32 output starting from `x` (accumulating kernels), compared.
  int inout(std::vector<int64_t> shape, const std::vector<float> &x) {
    int k = f32(std::move(shape), x);
    compare.push_back(k);
    return k;
  }
  /// Another view of tensor k's bytes (for in-place operands).
  int same(int k) {
    Tensor t;
    t.v = ts[size_t(k)].v;
    ts.push_back(std::move(t));
    return int(ts.size()) - 1;
  }
  /// A view of the first elements of tensor k with another shape.
  int view(int k, std::vector<int64_t> shape) {
    int v = same(k);
    ts[size_t(v)].v.shape = std::move(shape);
    return v;
  }
};

inline Case make(std::string label, Op op, std::vector<int64_t> i,
          std::vector<float> f = {}) {
  Case c;
  c.label = std::move(label);
  c.instr.op = op;
  c.instr.i = std::move(i);
  c.instr.f = std::move(f);
  return c;
}

/// The compared tensors' bytes after running `c` on `be`.
using Result = std::vector<std::vector<uint32_t>>;

/// With `comm`, the instruction is launched as in a program run on that
/// communicator (the vocabulary-parallel kernels read their rank from it).
inline Result runOn(Backend &be, const Case &c,
                    rt::Communicator *comm = nullptr) {
  // One buffer per distinct index, as big as its largest view.
  std::vector<size_t> bytes;
  for (const auto &t : c.ts) {
    size_t k = size_t(t.v.index);
    if (bytes.size() <= k)
      bytes.resize(k + 1, 0);
    bytes[k] = std::max(bytes[k], size_t(t.v.offset + t.v.bytes()));
  }
  std::vector<void *> bufs(bytes.size(), nullptr);
  struct Release {
    Backend &be;
    std::vector<void *> &bufs;
    ~Release() {
      for (void *p : bufs)
        if (p)
          be.release(p);
    }
  } release{be, bufs};
  for (size_t k = 0; k < bytes.size(); ++k)
    bufs[k] = be.allocate(std::max<size_t>(bytes[k], 4));
  auto ptr = [&](const Value &v) {
    return static_cast<char *>(bufs[size_t(v.index)]) + v.offset;
  };
  // Fill: poison first, then the initial values (a view with data wins).
  // All-ones bytes are a NaN in f32 and in bf16.
  for (const auto &t : c.ts)
    if (t.init.empty()) {
      std::vector<uint8_t> nan(static_cast<size_t>(t.v.bytes()), 0xff);
      be.copyToDevice(ptr(t.v), nan.data(), nan.size());
    }
  for (const auto &t : c.ts)
    if (!t.init.empty())
      be.copyToDevice(ptr(t.v), t.init.data(),
                      std::min(t.init.size() * 4, size_t(t.v.bytes())));
  std::vector<const Value *> vi, vo;
  std::vector<rt::TensorRef> ri, ro;
  for (int k : c.ins) {
    vi.push_back(&c.ts[size_t(k)].v);
    ri.push_back({ptr(c.ts[size_t(k)].v), &c.ts[size_t(k)].v});
  }
  for (int k : c.outs) {
    vo.push_back(&c.ts[size_t(k)].v);
    ro.push_back({ptr(c.ts[size_t(k)].v), &c.ts[size_t(k)].v});
  }
  be.check(c.instr, vi, vo);
  if (comm)
    be.launch(c.instr, ri, ro, *comm);
  else
    be.launch(c.instr, ri, ro);
  be.synchronize();
  Result r;
  for (int k : c.compare) {
    const Value &v = c.ts[size_t(k)].v;
    std::vector<uint32_t> host(static_cast<size_t>(v.numel()));
    if (v.dtype == DType::BF16) { // widened: compared as floats
      std::vector<uint16_t> half(host.size());
      be.copyToHost(half.data(), ptr(v), half.size() * 2);
      for (size_t k = 0; k < half.size(); ++k)
        host[k] = uint32_t(half[k]) << 16;
    } else {
      be.copyToHost(host.data(), ptr(v), host.size() * 4);
    }
    r.push_back(std::move(host));
  }
  return r;
}

struct Totals {
  int pass = 0, fail = 0;
};
inline Totals totals;

inline void report(bool ok, const std::string &label, const std::string &detail) {
  (ok ? totals.pass : totals.fail)++;
  std::printf("%s  %-58s %s\n", ok ? "PASS" : "FAIL", label.c_str(),
              detail.c_str());
  std::fflush(stdout);
}

inline std::string fmt(const char *f, double a) {
  char b[64];
  std::snprintf(b, sizeof b, f, a);
  return b;
}

/// Compares `got` with `ref` for tensor `c.compare[t]`; returns the relative
/// error (inf on a NaN/inf mismatch) and describes the worst element.
inline double compareTensor(const Case &c, size_t t, const std::vector<uint32_t> &ref,
                     const std::vector<uint32_t> &got, std::string &worst) {
  const Value &v = c.ts[size_t(c.compare[t])].v;
  if (v.dtype == DType::I32) {
    for (size_t k = 0; k < ref.size(); ++k)
      if (ref[k] != got[k]) {
        worst = "output " + std::to_string(t) + " element " +
                std::to_string(k) + ": cpu " + std::to_string(int32_t(ref[k])) +
                " cuda " + std::to_string(int32_t(got[k]));
        return INFINITY;
      }
    return 0.0;
  }
  double maxRef = 0.0, maxDiff = 0.0;
  size_t at = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    float a = floatOf(ref[k]), b = floatOf(got[k]);
    if (std::isfinite(a))
      maxRef = std::max(maxRef, std::fabs(double(a)));
    bool special = !std::isfinite(a) || !std::isfinite(b);
    if (special) {
      bool same = (std::isnan(a) && std::isnan(b)) || a == b;
      if (!same) {
        worst = "output " + std::to_string(t) + " element " +
                std::to_string(k) + ": cpu " + fmt("%.9g", a) + " cuda " +
                fmt("%.9g", b);
        return INFINITY;
      }
      continue;
    }
    double d = std::fabs(double(a) - double(b));
    if (d > maxDiff) {
      maxDiff = d;
      at = k;
    }
  }
  double rel = maxRef > 0 ? maxDiff / maxRef : maxDiff;
  if (maxDiff > 0)
    worst = "output " + std::to_string(t) + " element " + std::to_string(at) +
            ": cpu " + fmt("%.9g", floatOf(ref[at])) + " cuda " +
            fmt("%.9g", floatOf(got[at])) + " (max |cpu| " +
            fmt("%.6g", maxRef) + ")";
  return rel;
}

inline Backend *gCpu = nullptr;
inline Backend *gCuda = nullptr;
inline bool gQuick = false; ///< --quick: only the small cases (for compute-sanitizer)
/// gCuda runs bf16 attention on cuDNN, whose backward is not bitwise
/// deterministic (float atomics): its cases skip the run-twice check.
inline bool gCudnnAttention = false;

/// Under --quick, cases with more than 2^18 elements in all are skipped.
inline bool skipped(const Case &c) {
  if (!gQuick)
    return false;
  int64_t n = 0;
  for (const auto &t : c.ts)
    n += t.v.numel();
  return n > (int64_t(1) << 18);
}

/// The twin comparison of one case.
inline void twin(const Case &c, rt::Communicator *comm = nullptr) {
  if (skipped(c))
    return;
  Result ref, got;
  try {
    ref = runOn(*gCpu, c, comm);
  } catch (const std::exception &e) {
    report(false, c.label, std::string("cpu threw: ") + e.what());
    return;
  }
  try {
    got = runOn(*gCuda, c, comm);
  } catch (const std::exception &e) {
    report(false, c.label, std::string("cuda threw: ") + e.what());
    return;
  }
  double rel = 0.0;
  std::string worst;
  for (size_t t = 0; t < ref.size(); ++t) {
    std::string w;
    double r = compareTensor(c, t, ref[t], got[t], w);
    if (r > rel || (r == rel && worst.empty())) {
      rel = r;
      worst = w;
    }
  }
  bool ok = rel <= c.tol;
  std::string detail =
      "rel " + fmt("%.2e", rel) + " (tol " + fmt("%.0e", c.tol) + ")";
  if (!ok)
    detail += "; worst " + worst;
  report(ok, c.label, detail);
}

/// The CUDA run twice: the same bits.
inline void deterministic(const Case &c, rt::Communicator *comm = nullptr) {
  if (skipped(c))
    return;
  try {
    Result a = runOn(*gCuda, c, comm), b = runOn(*gCuda, c, comm);
    bool same = a == b;
    report(same, "determinism: " + c.label,
           same ? "bit-identical twice" : "two runs differ");
  } catch (const std::exception &e) {
    report(false, "determinism: " + c.label, std::string("threw: ") + e.what());
  }
}

/// A data error: the CPU throws at launch, the CUDA backend at the
/// synchronisation; both messages must contain `needle`.
inline void dataError(const Case &c, const std::string &needle,
                      rt::Communicator *comm = nullptr) {
  std::string msgs[2];
  Backend *bes[2] = {gCpu, gCuda};
  for (int k = 0; k < 2; ++k) {
    try {
      runOn(*bes[k], c, comm);
      msgs[k] = "<no error>";
    } catch (const rt::Error &e) {
      msgs[k] = e.what();
    } catch (const std::exception &e) {
      msgs[k] = std::string("<not an Error> ") + e.what();
    }
  }
  bool ok = msgs[0].find(needle) != std::string::npos &&
            msgs[1].find(needle) != std::string::npos;
  report(ok, "data error: " + c.label, "cuda: " + msgs[1]);
  if (!ok)
    std::printf("      cpu: %s\n", msgs[0].c_str());
  // The backend must stay usable after a data error.
}

/// check() refusals agree.
inline void refusal(const Case &c) {
  std::string msgs[2];
  Backend *bes[2] = {gCpu, gCuda};
  bool threw[2] = {false, false};
  for (int k = 0; k < 2; ++k) {
    std::vector<const Value *> vi, vo;
    for (int t : c.ins)
      vi.push_back(&c.ts[size_t(t)].v);
    for (int t : c.outs)
      vo.push_back(&c.ts[size_t(t)].v);
    try {
      bes[k]->check(c.instr, vi, vo);
    } catch (const rt::Error &e) {
      threw[k] = true;
      msgs[k] = e.what();
    }
  }
  report(threw[0] && threw[1] && msgs[0] == msgs[1], "refusal: " + c.label,
         "cuda: " + msgs[1]);
}

inline std::string dims(std::initializer_list<std::pair<const char *, int64_t>> kv) {
  std::string s;
  for (const auto &[k, v] : kv)
    s += std::string(s.empty() ? "" : " ") + k + "=" + std::to_string(v);
  return s;
}

/// Each row's mean and 1 / sqrt(var + 1e-5), as the forward leaves them.
inline void rowStats(const std::vector<float> &x, int64_t rows, int64_t cols,
                     std::vector<float> &mean, std::vector<float> &rstd) {
  mean.assign(size_t(rows), 0.0f);
  rstd.assign(size_t(rows), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    double s1 = 0, s2 = 0;
    for (int64_t k = 0; k < cols; ++k) {
      const double v = x[size_t(r * cols + k)];
      s1 += v;
      s2 += v * v;
    }
    const double mu = s1 / double(cols);
    const double var = std::max(0.0, s2 / double(cols) - mu * mu);
    mean[size_t(r)] = float(mu);
    rstd[size_t(r)] = float(1.0 / std::sqrt(var + 1e-5));
  }
}

/// `x` rounded to bf16 (nearest even) and widened back: the values a bf16
/// tensor of `x` holds.
inline std::vector<float> roundedToBf16(const std::vector<float> &x) {
  std::vector<float> r(x.size());
  for (size_t k = 0; k < x.size(); ++k) {
    const uint32_t u = uint32_t(toBf16Bits(x[k])) << 16;
    std::memcpy(&r[k], &u, 4);
  }
  return r;
}

/// A view of n elements starting `off` elements into a buffer of random
/// values (off = 1: not 16-byte aligned, so the element kernels run).
inline int misalignedInput(Case &c, Rng &rng, int64_t n, int64_t off,
                           double lo = -1, double hi = 1) {
  int whole = c.f32({n + off}, rng.vec(n + off, lo, hi));
  int v = c.view(whole, {n});
  c.ts[size_t(v)].v.offset = 4 * off;
  return v;
}

// The vocabulary-parallel kernels and the distributed optimizer's AdamW on
// ranks of a group (cuda_twin_vocab.cpp).
void vocabParallel(Rng &rng);
// The mixed-precision and attention cases (cuda_twin_fused.cpp).
void castAndBf16MatMul(Rng &rng);
/// bf16 products whose wide search has split-K forms (one candidate per
/// backend: CudaOptions::gemmCandidate).
void bf16ProductCandidates(Rng &rng);
void attention(Rng &rng);
// Recorded launches (CUDA graphs) against eager ones (cuda_twin_graph.cpp).
void graphs(Rng &rng);
// MatMul with a bias / residual / GELU epilogue (cuda_twin_epilogue.cpp).
void matmulEpilogue(Rng &rng);
// LayerNorm and LayerNormGrad, x f32 or bf16 (cuda_twin_layernorm.cpp).
void layerNorm(Rng &rng);
// LayerNormGrad's fused forms (cuda_twin_norm_grad.cpp).
void normGradFused(Rng &rng);
// AdamWMulti writing the weights' bf16 copies (cuda_twin_weight_copies.cpp).
void weightCopies(Rng &rng);

} // namespace twincheck

#endif // MEGA_TEST_RUNTIME_CUDA_TWINHARNESS_H

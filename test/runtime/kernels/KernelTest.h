//===- KernelTest.h - Tiny harness for the CPU kernel tests ---------------===//
//
// No test framework (the GPU machines lack gtest): CHECK counts failures and
// keeps going, `closeTo` compares a float result with a double reference and
// prints the worst element, Harness owns backend memory and runs
// instructions through check() then launch() as the engine does.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TEST_RUNTIME_KERNELS_KERNELTEST_H
#define MEGA_TEST_RUNTIME_KERNELS_KERNELTEST_H

#include "mega/Runtime/Backend.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace kt {

using mega::plan::DType;
using mega::plan::Instr;
using mega::plan::Op;
using mega::plan::Space;
using mega::plan::Value;
using mega::rt::Error;

inline int &failures() {
  static int n = 0;
  return n;
}

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      ++kt::failures();                                                        \
      std::fprintf(stderr, "%s:%d: CHECK(%s) failed. ", __FILE__, __LINE__,    \
                   #cond);                                                     \
      std::fprintf(stderr, "" __VA_ARGS__);                                    \
      std::fprintf(stderr, "\n");                                              \
    }                                                                          \
  } while (0)

inline int finish(const char *name) {
  if (failures())
    std::printf("%s: %d check(s) FAILED\n", name, failures());
  else
    std::printf("%s: all checks passed\n", name);
  return failures() ? 1 : 0;
}

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  double uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(g);
  }
  double normal(double s = 1.0) {
    return std::normal_distribution<double>(0.0, s)(g);
  }
  int32_t index(int64_t n) {
    return int32_t(std::uniform_int_distribution<int64_t>(0, n - 1)(g));
  }
  /// Random values in [lo, hi), never all zero.
  std::vector<float> vec(size_t n, double lo = -1.0, double hi = 1.0) {
    std::vector<float> v(n);
    for (float &x : v)
      x = float(uniform(lo, hi));
    if (n && v[0] == 0.0f)
      v[0] = float(hi * 0.5 + lo * 0.25 + 0.1);
    return v;
  }
};

/// A tensor in backend memory, with the plan::Value describing it.
struct Tensor {
  Value v;
  void *data = nullptr;
  float *f() const { return static_cast<float *>(data); }
  int32_t *i() const { return static_cast<int32_t *>(data); }
  int64_t n() const { return v.numel(); }
  std::vector<float> get() const { return std::vector<float>(f(), f() + n()); }
  void set(const std::vector<float> &x) const {
    std::memcpy(data, x.data(), x.size() * 4);
  }
};

inline Instr make(Op op, std::vector<int64_t> i, std::vector<float> f = {}) {
  Instr in;
  in.op = op;
  in.i = std::move(i);
  in.f = std::move(f);
  return in;
}

inline std::vector<int64_t> shapeOf(int64_t n) { return {n}; }

class Harness {
public:
  explicit Harness(int threads = 4) : be(mega::rt::createCpuBackend(threads)) {}
  ~Harness() {
    for (void *p : allocations)
      be->release(p);
  }
  Harness(const Harness &) = delete;
  Harness &operator=(const Harness &) = delete;

  mega::rt::Backend &backend() { return *be; }

  /// A tensor in its own buffer (a distinct persistent index).
  Tensor &alloc(DType dt, std::vector<int64_t> shape) {
    auto t = std::make_unique<Tensor>();
    t->v.space = Space::Persistent;
    t->v.index = int32_t(tensors.size());
    t->v.dtype = dt;
    t->v.shape = std::move(shape);
    t->data = be->allocate(size_t(std::max<int64_t>(t->v.bytes(), 4)));
    allocations.push_back(t->data);
    tensors.push_back(std::move(t));
    return *tensors.back();
  }
  Tensor &f32(std::vector<int64_t> shape, const std::vector<float> &init = {}) {
    Tensor &t = alloc(DType::F32, std::move(shape));
    if (!init.empty())
      t.set(init);
    return t;
  }
  Tensor &i32(std::vector<int64_t> shape, const std::vector<int32_t> &init) {
    Tensor &t = alloc(DType::I32, std::move(shape));
    std::memcpy(t.data, init.data(), init.size() * 4);
    return t;
  }
  /// A view at `byteOffset` of one shared arena (for aliasing tests).
  Tensor &arena(int64_t byteOffset, std::vector<int64_t> shape,
                DType dt = DType::F32) {
    if (!arenaData) {
      arenaData = be->allocate(arenaBytes);
      allocations.push_back(arenaData);
    }
    auto t = std::make_unique<Tensor>();
    t->v.space = Space::Arena;
    t->v.offset = byteOffset;
    t->v.dtype = dt;
    t->v.shape = std::move(shape);
    t->data = static_cast<char *>(arenaData) + byteOffset;
    tensors.push_back(std::move(t));
    return *tensors.back();
  }

  void check(const Instr &in, const std::vector<Tensor *> &ins,
             const std::vector<Tensor *> &outs) {
    std::vector<const Value *> vi, vo;
    for (Tensor *t : ins)
      vi.push_back(&t->v);
    for (Tensor *t : outs)
      vo.push_back(&t->v);
    be->check(in, vi, vo);
  }
  void launch(const Instr &in, const std::vector<Tensor *> &ins,
              const std::vector<Tensor *> &outs) {
    std::vector<mega::rt::TensorRef> ri, ro;
    for (Tensor *t : ins)
      ri.push_back({t->data, &t->v});
    for (Tensor *t : outs)
      ro.push_back({t->data, &t->v});
    if (comm)
      be->launch(in, ri, ro, *comm);
    else
      be->launch(in, ri, ro);
  }
  /// When set, launch() passes it to the backend (the program run's
  /// communicator: the vocabulary-parallel kernels read their rank in it).
  mega::rt::Communicator *comm = nullptr;
  /// check() then launch(); a throw is a test failure.
  bool run(const Instr &in, const std::vector<Tensor *> &ins,
           const std::vector<Tensor *> &outs) {
    try {
      check(in, ins, outs);
      launch(in, ins, outs);
      return true;
    } catch (const std::exception &e) {
      CHECK(false, "%s threw: %s", mega::plan::opName(in.op), e.what());
      return false;
    }
  }
  /// check() must refuse with an Error "<Op>: ..." containing `what`.
  void reject(const char *label, const Instr &in,
              const std::vector<Tensor *> &ins,
              const std::vector<Tensor *> &outs, const char *what) {
    std::string prefix = std::string(mega::plan::opName(in.op)) + ": ";
    try {
      check(in, ins, outs);
      CHECK(false, "[%s] check() accepted a bad instruction", label);
    } catch (const Error &e) {
      std::string msg = e.what();
      CHECK(msg.rfind(prefix, 0) == 0 && msg.find(what) != std::string::npos,
            "[%s] wrong message '%s' (want '%s...%s')", label, e.what(),
            prefix.c_str(), what);
    } catch (const std::exception &e) {
      CHECK(false, "[%s] threw a non-Error: %s", label, e.what());
    }
  }
  /// check() passes, launch() throws an Error containing `what`.
  void launchThrows(const char *label, const Instr &in,
                    const std::vector<Tensor *> &ins,
                    const std::vector<Tensor *> &outs, const char *what) {
    try {
      check(in, ins, outs);
    } catch (const std::exception &e) {
      CHECK(false, "[%s] check() refused: %s", label, e.what());
      return;
    }
    try {
      launch(in, ins, outs);
      CHECK(false, "[%s] launch() did not throw", label);
    } catch (const Error &e) {
      CHECK(std::string(e.what()).find(what) != std::string::npos,
            "[%s] wrong message '%s' (want '%s')", label, e.what(), what);
    }
  }

  static constexpr size_t arenaBytes = 1 << 20;

private:
  std::unique_ptr<mega::rt::Backend> be;
  std::vector<std::unique_ptr<Tensor>> tensors;
  std::vector<void *> allocations;
  void *arenaData = nullptr;
};

/// Every |got[k] - ref[k]| <= tol[k]; prints the worst element. NaN matches
/// NaN and infinities match infinities of the same sign.
inline bool closeToTol(const char *what, const float *got,
                       const std::vector<double> &ref,
                       const std::vector<double> &tol) {
  double worst = -1;
  size_t at = 0, bad = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    double g = got[k], r = ref[k];
    double err = std::fabs(g - r);
    bool ok = err <= tol[k] || (std::isnan(g) && std::isnan(r)) ||
              (std::isinf(g) && std::isinf(r) && (g > 0) == (r > 0));
    if (ok)
      continue;
    ++bad;
    double score = std::isnan(err) ? 1e300 : err / (tol[k] > 0 ? tol[k] : 1e-300);
    if (score > worst) {
      worst = score;
      at = k;
    }
  }
  CHECK(bad == 0,
        "%s: %zu of %zu elements off; worst %zu: got %.9g, want %.9g, tol %.3g",
        what, bad, ref.size(), at, bad ? double(got[at]) : 0.0,
        bad ? ref[at] : 0.0, bad ? tol[at] : 0.0);
  return bad == 0;
}

/// Every |got - ref| <= atol + rtol * |ref|.
inline bool closeTo(const char *what, const float *got,
                    const std::vector<double> &ref, double rtol,
                    double atol = 0.0) {
  std::vector<double> tol(ref.size());
  for (size_t k = 0; k < ref.size(); ++k)
    tol[k] = atol + rtol * std::fabs(ref[k]);
  return closeToTol(what, got, ref, tol);
}

inline bool sameBits(const char *what, const float *a, const float *b,
                     size_t n) {
  for (size_t k = 0; k < n; ++k)
    if (std::memcmp(&a[k], &b[k], 4) != 0) {
      CHECK(false, "%s: element %zu differs: %.9g vs %.9g", what, k, double(a[k]),
            double(b[k]));
      return false;
    }
  return true;
}

inline std::vector<double> toD(const std::vector<float> &v) {
  return std::vector<double>(v.begin(), v.end());
}

} // namespace kt

#endif // MEGA_TEST_RUNTIME_KERNELS_KERNELTEST_H

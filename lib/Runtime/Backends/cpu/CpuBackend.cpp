//===- CpuBackend.cpp - The CPU backend: memory, checks, dispatch ---------===//
//
// This file is compiled for the baseline x86-64 ISA (the kernels may use
// AVX2/FMA, see CMakeLists.txt), so that createCpuBackend can refuse a CPU
// that lacks them with a clear message instead of dying on SIGILL.
//
//===----------------------------------------------------------------------===//
#include "Common.h"

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>

extern "C" {
void openblas_set_num_threads(int);
char *openblas_get_corename(void);
// Weak: present in OpenBLAS builds with DYNAMIC_ARCH (Debian's), absent in
// others, where they stay null and the kernel choice is left alone. (In a
// static link they come with the object that defines OpenBLAS's `gotoblas`
// table, which every BLAS call pulls in.)
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
}

namespace mega::rt::cpu {

[[noreturn]] void fail(Op op, const std::string &msg) {
  const char *name = plan::opName(op);
  throw Error(std::string(name ? name : "unknown opcode") + ": " + msg);
}

namespace {
/// The engine checks collectives with checkCollective and runs them with
/// Backend::collective (host pointers straight through: hostMemory()); as a
/// kernel, check() and launch() refuse one.
[[noreturn]] void notAKernel(Op op) {
  fail(op, "a collective is not a kernel of the cpu backend (it runs "
           "through Backend::collective)");
}
} // namespace

//===----------------------------------------------------------------------===//
// Checker
//===----------------------------------------------------------------------===//

void Checker::fail(const std::string &msg) const { cpu::fail(op, msg); }

void Checker::operands(size_t nin, size_t nout) const {
  if (ins.size() != nin || outs.size() != nout)
    fail("expects " + std::to_string(nin) + " inputs and " +
         std::to_string(nout) + " outputs, got " + std::to_string(ins.size()) +
         " and " + std::to_string(outs.size()));
}

void Checker::attrs(size_t ni, long nf) const {
  if (instr.i.size() != ni)
    fail("expects " + std::to_string(ni) + " integer attributes, got " +
         std::to_string(instr.i.size()));
  if (nf >= 0 && instr.f.size() != size_t(nf))
    fail("expects " + std::to_string(nf) + " float attributes, got " +
         std::to_string(instr.f.size()));
}

int64_t Checker::attr(size_t k, int64_t lo, int64_t hi,
                      const char *name) const {
  if (k >= instr.i.size())
    fail(std::string("missing attribute ") + name);
  int64_t v = instr.i[k];
  if (v < lo || v > hi)
    fail(std::string(name) + " = " + std::to_string(v) + " is outside [" +
         std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

int64_t Checker::numel(const Value *v, const char *what) const {
  if (!v)
    fail(std::string(what) + " is missing");
  i128 n = 1;
  for (int64_t d : v->shape) {
    if (d < 0)
      fail(std::string(what) + " has a negative dimension");
    n *= d;
    if (n > (i128(1) << 48))
      fail(std::string(what) + " is too large");
  }
  return int64_t(n);
}

void Checker::dtype(const Value *v, DType t, const char *what) const {
  if (!v)
    fail(std::string(what) + " is missing");
  if (v->dtype != t)
    fail(std::string(what) + " must be " + plan::dtypeName(t) + ", not " +
         plan::dtypeName(v->dtype));
}

std::string toString(i128 v) {
  if (v < 0)
    return "-" + toString(-v);
  std::string s;
  do {
    s.insert(s.begin(), char('0' + int(v % 10)));
    v /= 10;
  } while (v);
  return s;
}

void Checker::tensor(const Value *v, DType t, i128 n, const char *what) const {
  dtype(v, t, what);
  int64_t have = numel(v, what);
  if (i128(have) != n)
    fail(std::string(what) + " has " + std::to_string(have) +
         " elements, the attributes say " + toString(n));
}

float Checker::finite(size_t k, const char *name) const {
  if (k >= instr.f.size())
    fail(std::string("missing attribute ") + name);
  float f = instr.f[k];
  if (!(f - f == 0.0f))
    fail(std::string(name) + " is not finite");
  return f;
}

static bool sameBuffer(const Value &a, const Value &b) {
  if (a.space != b.space)
    return false;
  return a.space == plan::Space::Arena || a.index == b.index;
}

bool overlaps(const Value &a, const Value &b) {
  if (!sameBuffer(a, b))
    return false;
  int64_t ab = a.bytes(), bb = b.bytes();
  if (ab == 0 || bb == 0)
    return false;
  return a.offset < b.offset + bb && b.offset < a.offset + ab;
}

bool sameBytes(const Value &a, const Value &b) {
  return sameBuffer(a, b) && a.offset == b.offset && a.bytes() == b.bytes();
}

void Checker::disjoint(const Value *out, const Value *other,
                       const char *outName, const char *otherName) const {
  if (overlaps(*out, *other))
    fail(std::string(outName) + " overlaps " + otherName);
}

void Checker::sameOrDisjoint(const Value *out, const Value *other,
                             const char *outName,
                             const char *otherName) const {
  if (overlaps(*out, *other) && !sameBytes(*out, *other))
    fail(std::string(outName) + " partially overlaps " + otherName);
}

//===----------------------------------------------------------------------===//
// The backend
//===----------------------------------------------------------------------===//

namespace {

class CpuBackend final : public Backend {
public:
  explicit CpuBackend(int threads) { ctx.threads = threads; }
  const char *name() const override { return "cpu"; }
  bool hostMemory() const override { return true; }

  void *allocate(size_t bytes) override {
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    if (rounded < bytes)
      throw Error("cpu: cannot allocate " + std::to_string(bytes) + " bytes");
    void *p = std::aligned_alloc(64, rounded);
    if (!p)
      throw Error("cpu: out of memory allocating " + std::to_string(bytes) +
                  " bytes");
    // Zero in parallel: first touch places pages near the threads using them.
    char *c = static_cast<char *>(p);
    parallelFor(ctx, int64_t(rounded), int64_t(1) << 20,
                [&](int64_t b, int64_t e) { std::memset(c + b, 0, e - b); });
    return p;
  }
  void release(void *ptr) override { std::free(ptr); }
  void copyToDevice(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memmove(dst, src, bytes);
  }
  void copyToHost(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memmove(dst, src, bytes);
  }
  void copyOnDevice(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memmove(dst, src, bytes);
  }

  void check(const plan::Instr &instr, const std::vector<const Value *> &ins,
             const std::vector<const Value *> &outs) override {
    for (const Value *v : ins)
      if (!v)
        fail(instr.op, "an input is missing");
    for (const Value *v : outs)
      if (!v)
        fail(instr.op, "an output is missing");
    Checker c(instr, ins, outs);
    // bf16 operands: the mixed-precision kernels and the kernels a cast
    // folds into (bf16 output) only; each checks which operands.
    const bool takesBf16 =
        instr.op == Op::MatMul || instr.op == Op::Cast ||
        instr.op == Op::Attention || instr.op == Op::AttentionGrad ||
        instr.op == Op::Elementwise || instr.op == Op::Transpose ||
        instr.op == Op::CrossEntropy || instr.op == Op::CrossEntropyGrad ||
        instr.op == Op::LayerNorm || instr.op == Op::LayerNormGrad ||
        instr.op == Op::ReduceSum ||
        instr.op == Op::CrossEntropyWithGrad ||
        instr.op == Op::AdamWMulti; // the weights' bf16 copies
    for (const auto *list : {&ins, &outs})
      for (const Value *v : *list)
        if (v->dtype != DType::F32 && v->dtype != DType::I32 &&
            !(takesBf16 && v->dtype == DType::BF16))
          c.fail(std::string("the cpu backend has no ") +
                 plan::dtypeName(v->dtype) + " kernels");
    switch (instr.op) {
#define MEGA_CASE(NAME)                                                        \
  case Op::NAME:                                                               \
    return check##NAME(c);
      MEGA_PLAN_BASE_KERNELS(MEGA_CASE)
      MEGA_PLAN_VOCAB_KERNELS(MEGA_CASE)
      MEGA_PLAN_FUSED_KERNELS(MEGA_CASE)
#undef MEGA_CASE
#define MEGA_CASE(NAME) case Op::NAME:
      MEGA_PLAN_COLLECTIVES(MEGA_CASE)
#undef MEGA_CASE
      notAKernel(instr.op);
    }
    throw Error("cpu: unknown opcode " + std::to_string(int(instr.op)));
  }

  /// Without a communicator: world size 1, rank 0 of every group.
  void launch(const plan::Instr &instr, const std::vector<TensorRef> &ins,
              const std::vector<TensorRef> &outs) override {
    run(instr, ins, outs, GroupPlace{});
  }

  void launch(const plan::Instr &instr, const std::vector<TensorRef> &ins,
              const std::vector<TensorRef> &outs,
              Communicator &comm) override {
    // GradNorm with shard flags: the squared sums meet over comm.
    if (instr.op == Op::GradNorm && !instr.i.empty())
      return runGradNormSharded(ctx, instr, ins, outs, comm);
    run(instr, ins, outs, groupPlace(instr, comm));
  }

private:
  void run(const plan::Instr &instr, const std::vector<TensorRef> &ins,
           const std::vector<TensorRef> &outs, const GroupPlace &place) {
    // AdamW with a group (the distributed optimizer): this rank's block.
    if (instr.op == Op::AdamW && !instr.i.empty())
      return runAdamWShard(ctx, place, instr, ins, outs);
    switch (instr.op) {
#define MEGA_CASE(NAME)                                                        \
  case Op::NAME:                                                               \
    return run##NAME(ctx, instr, ins, outs);
      MEGA_PLAN_BASE_KERNELS(MEGA_CASE)
      MEGA_PLAN_FUSED_KERNELS(MEGA_CASE)
      // The two vocabulary-parallel kernels that need no rank:
      MEGA_CASE(RowMax)
      MEGA_CASE(VocabCrossEntropy)
#undef MEGA_CASE
#define MEGA_CASE(NAME)                                                        \
  case Op::NAME:                                                               \
    return run##NAME(ctx, place, instr, ins, outs);
      MEGA_CASE(VocabEmbedding)
      MEGA_CASE(VocabEmbeddingGrad)
      MEGA_CASE(VocabCrossEntropyStats)
      MEGA_CASE(VocabCrossEntropyGrad)
#undef MEGA_CASE
#define MEGA_CASE(NAME) case Op::NAME:
      MEGA_PLAN_COLLECTIVES(MEGA_CASE)
#undef MEGA_CASE
      notAKernel(instr.op);
    }
    throw Error("cpu: unknown opcode " + std::to_string(int(instr.op)));
  }

  Ctx ctx;
};

/// OpenBLAS built with DYNAMIC_ARCH picks its kernels by CPU model at load
/// time, and a release older than the CPU falls back to its SSE3 ("Prescott")
/// kernels: Debian 12's 0.3.21 does so on Emerald Rapids, 5x slower. When
/// the user has not chosen (OPENBLAS_CORETYPE) and OpenBLAS settled for such
/// a core although the CPU has AVX-512 or AVX2, redo its choice with the
/// matching core.
void pickOpenBlasCore() {
  if (std::getenv("OPENBLAS_CORETYPE") || !gotoblas_dynamic_init ||
      !gotoblas_dynamic_quit || !openblas_get_corename())
    return;
  std::string core = openblas_get_corename();
  for (char &ch : core)
    ch = char(std::tolower(static_cast<unsigned char>(ch)));
  static const char *const generic[] = {
      "prescott", "core2",   "penryn",   "dunnington", "nehalem",
      "atom",     "katmai",  "coppermine", "northwood", "banias",
      "athlon",   "opteron", "opteron_sse3", "barcelona", "nano",
      "unknown"};
  bool weak = false;
  for (const char *g : generic)
    weak = weak || core == g;
  if (!weak)
    return;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const char *want = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512cd"))
    want = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    want = "Haswell";
  if (!want)
    return;
  setenv("OPENBLAS_CORETYPE", want, 0);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
#endif
}

} // namespace
} // namespace mega::rt::cpu

namespace mega::rt {

std::unique_ptr<Backend> createCpuBackend(int threads) {
#if defined(MEGA_CPU_NEEDS_X86_64_V3) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
      !__builtin_cpu_supports("bmi2"))
    throw Error("cpu: this mega-run was built for x86-64-v3 (AVX2, FMA) and "
                "this CPU lacks them; rebuild with -DMEGA_CPU_ARCH=x86-64-v2");
#endif
  if (threads <= 0)
    threads = omp_get_max_threads();
  threads = std::max(1, threads);
  static std::once_flag once;
  std::call_once(once, [] {
    cpu::pickOpenBlasCore();
    // MatMul parallelises itself over OpenMP threads and calls OpenBLAS
    // single-threaded, so that only one pool of spinning threads exists.
    openblas_set_num_threads(1);
    cpu::probeGemmSplits();
  });
  return std::make_unique<cpu::CpuBackend>(threads);
}

} // namespace mega::rt

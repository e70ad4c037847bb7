//===- Common.h - Shared helpers of the CPU backend's kernels -------------===//
//
// Every opcode has a check function (run once when a plan is loaded; it makes
// sure that the attributes agree with the operands so that the kernel can
// never touch memory outside them) and a run function (the kernel). They live
// together, one file per concern; CpuBackend.cpp dispatches.
//
// Threading: kernels take a Ctx with the thread count and use OpenMP with an
// explicit num_threads. Results never depend on the thread count: reductions
// are split into fixed-size blocks combined in a fixed order.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CPU_COMMON_H
#define MEGA_RUNTIME_BACKENDS_CPU_COMMON_H

#include "mega/Runtime/Backend.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

namespace mega::rt::cpu {

using plan::DType;
using plan::Instr;
using plan::Op;
using plan::Value;
using Vals = std::vector<const Value *>;
using Refs = std::vector<TensorRef>;
using i128 = __int128;

/// What a kernel needs to know about the backend.
struct Ctx {
  int threads = 1;
};

/// Throws Error("<Op>: <msg>").
[[noreturn]] void fail(Op op, const std::string &msg);

std::string toString(i128 v);

/// Attribute and operand checks for one instruction; every failure throws
/// Error naming the opcode.
class Checker {
public:
  Checker(const Instr &in, const Vals &inputs, const Vals &outputs)
      : op(in.op), instr(in), ins(inputs), outs(outputs) {}

  [[noreturn]] void fail(const std::string &msg) const;
  /// Exact operand counts.
  void operands(size_t nin, size_t nout) const;
  /// Exact attribute counts (nf < 0: any number of float attributes).
  void attrs(size_t ni, long nf) const;
  /// i[k] as an integer in [lo, hi].
  int64_t attr(size_t k, int64_t lo, int64_t hi, const char *name) const;
  /// A flag attribute: 0 or 1.
  bool flag(size_t k, const char *name) const { return attr(k, 0, 1, name); }
  /// Element count of an operand (its shape's product), refusing negative
  /// dimensions and overflow.
  int64_t numel(const Value *v, const char *what) const;
  void dtype(const Value *v, DType t, const char *what) const;
  /// dtype and exact element count.
  void tensor(const Value *v, DType t, i128 n, const char *what) const;
  /// f[k] must be finite (not NaN, not inf).
  float finite(size_t k, const char *name) const;
  /// Refuse an output that shares any byte with `other` (input or output).
  void disjoint(const Value *out, const Value *other, const char *outName,
                const char *otherName) const;
  /// Allow `out` to coincide exactly with `other` (same bytes), refuse a
  /// partial overlap.
  void sameOrDisjoint(const Value *out, const Value *other,
                      const char *outName, const char *otherName) const;

  const Op op;
  const Instr &instr;
  const Vals &ins;
  const Vals &outs;
};

/// Byte range of a view; two views overlap if they live in the same buffer
/// and the ranges intersect (arena views all share one buffer).
bool overlaps(const Value &a, const Value &b);
bool sameBytes(const Value &a, const Value &b);
/// At launch: do the two element ranges share memory?
inline bool memOverlap(const void *a, size_t abytes, const void *b,
                       size_t bbytes) {
  auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + bbytes && pb < pa + abytes;
}

// Every parallel region uses the same team size, ctx.threads, even when
// there is less work than threads (the surplus threads get none): libgomp
// lets the threads beyond a smaller team's size exit, and the next larger
// team has to create them again, which costs tens of microseconds per
// thread; measured as a 20x slowdown of small kernels in a real training
// step at 16 threads.

/// Runs f(begin, end) over [0, n) split into at most ctx.threads contiguous
/// parts, each a multiple of `grain` (but the last). Serial when there is
/// less than two grains of work. f must not throw.
template <typename F>
void parallelFor(const Ctx &ctx, int64_t n, int64_t grain, F &&f) {
  if (n <= 0)
    return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int T = ctx.threads;
  if (T <= 1 || chunks <= 1) {
    f(int64_t(0), n);
    return;
  }
  const int64_t parts = std::min<int64_t>(T, chunks);
#pragma omp parallel num_threads(T)
  {
    const int64_t t = omp_get_thread_num();
    if (t < parts) {
      int64_t c0 = chunks * t / parts, c1 = chunks * (t + 1) / parts;
      int64_t b = c0 * grain, e = std::min(n, c1 * grain);
      if (b < e)
        f(b, e);
    }
  }
}

/// Runs f(k) for every k in [0, n), dynamically scheduled (for uneven work
/// such as tiles of different sizes).
template <typename F>
void parallelForEach(const Ctx &ctx, int64_t n, F &&f) {
  if (n <= 0)
    return;
  if (ctx.threads <= 1 || n == 1) {
    for (int64_t k = 0; k < n; ++k)
      f(k);
    return;
  }
#pragma omp parallel for num_threads(ctx.threads) schedule(dynamic, 1)
  for (int64_t k = 0; k < n; ++k)
    f(k);
}

/// Tests once whether OpenBLAS gives the same bits for a product computed
/// whole and in row / column tiles, and lets MatMul split accordingly.
/// Returns the policy bits (1: rows may follow the threads, 2: columns).
int probeGemmSplits();

// Per-opcode check and run functions (one file per concern).
#define MEGA_CPU_KERNEL(NAME)                                                  \
  void check##NAME(const Checker &c);                                          \
  void run##NAME(const Ctx &ctx, const Instr &in, const Refs &ins,             \
                 const Refs &outs);
MEGA_CPU_KERNEL(Fill)
MEGA_CPU_KERNEL(Copy)
MEGA_CPU_KERNEL(MatMul)
MEGA_CPU_KERNEL(Elementwise)
MEGA_CPU_KERNEL(ReduceSum)
MEGA_CPU_KERNEL(LayerNorm)
MEGA_CPU_KERNEL(LayerNormGrad)
MEGA_CPU_KERNEL(Softmax)
MEGA_CPU_KERNEL(SoftmaxGrad)
MEGA_CPU_KERNEL(CrossEntropy)
MEGA_CPU_KERNEL(CrossEntropyGrad)
MEGA_CPU_KERNEL(Embedding)
MEGA_CPU_KERNEL(EmbeddingGrad)
MEGA_CPU_KERNEL(Transpose)
MEGA_CPU_KERNEL(GradNorm)
MEGA_CPU_KERNEL(AdamW)
MEGA_CPU_KERNEL(Sgd)
MEGA_CPU_KERNEL(RowMax)
MEGA_CPU_KERNEL(VocabCrossEntropy)
MEGA_CPU_KERNEL(Cast)
MEGA_CPU_KERNEL(Attention)
MEGA_CPU_KERNEL(AttentionGrad)
MEGA_CPU_KERNEL(AdamWMulti)
MEGA_CPU_KERNEL(CrossEntropyWithGrad)
#undef MEGA_CPU_KERNEL

/// bfloat16 <-> float, as the GPU converts (__float2bfloat16_rn): round to
/// nearest even; a NaN stays a NaN (quiet). bf16 -> float is exact.
inline uint16_t floatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16ToFloat(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
/// ReduceSum's summation order (Misc.cpp), shared with LayerNormGrad's
/// column sums of its bf16 copy (Norms.cpp) so that the two give the same
/// bits: each block of kSumRowBlock rows sums every column in double, row
/// after row from 0 (columnSumAddRow); the blocks' sums are then added in
/// block order from 0 and rounded once (columnSumFinish).
constexpr int64_t kSumRowBlock = 256;
inline void columnSumAddRow(double *__restrict s, const float *__restrict row,
                            int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    s[j] += double(row[j]);
}
inline void columnSumAddRow(double *__restrict s,
                            const uint16_t *__restrict row, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    s[j] += double(bf16ToFloat(row[j]));
}
/// Column j's sum from part[b * stride] (b < blocks): the value stored, or
/// with acc added to `old` in double and rounded once.
inline float columnSumFinish(const double *part, int64_t blocks, int64_t stride,
                             float old, bool acc) {
  double s = 0;
  for (int64_t b = 0; b < blocks; ++b)
    s += part[size_t(b * stride)];
  return acc ? float(double(old) + s) : float(s);
}

/// An F32 or BF16 operand as floats (BF16 widened into `scratch`).
const float *floatsOf(const TensorRef &t, int64_t n, std::vector<float> &scratch);

// Kernels that need their GroupPlace (Backend.h), in VocabParallel.cpp.
#define MEGA_CPU_GROUP_KERNEL(NAME)                                            \
  void check##NAME(const Checker &c);                                          \
  void run##NAME(const Ctx &ctx, const GroupPlace &place, const Instr &in,     \
                 const Refs &ins, const Refs &outs);
MEGA_CPU_GROUP_KERNEL(VocabEmbedding)
MEGA_CPU_GROUP_KERNEL(VocabEmbeddingGrad)
MEGA_CPU_GROUP_KERNEL(VocabCrossEntropyStats)
MEGA_CPU_GROUP_KERNEL(VocabCrossEntropyGrad)
#undef MEGA_CPU_GROUP_KERNEL

/// GradNorm with i = {group, shard flags...}: the squared sums of the
/// flagged inputs are summed over the group through `comm` (Optimizer.cpp).
/// Without a communicator (runGradNorm) the group has one rank.
void runGradNormSharded(const Ctx &ctx, const Instr &in, const Refs &ins,
                        const Refs &outs, Communicator &comm);

/// AdamW with i = {group} (the distributed optimizer): grad, m and v are
/// block `place.rank` of the parameter; the updated block is written to
/// the output (Optimizer.cpp).
void runAdamWShard(const Ctx &ctx, const GroupPlace &place, const Instr &in,
                   const Refs &ins, const Refs &outs);

} // namespace mega::rt::cpu

#endif // MEGA_RUNTIME_BACKENDS_CPU_COMMON_H

//===- Common.h - Shared host-side pieces of the CUDA backend -------------===//
//
// The CUDA backend mirrors the CPU one: one run function per opcode, one file
// per concern, CudaBackend.cpp dispatches. Everything is fp32 (and i32 ids),
// and everything is enqueued on the backend's one stream; nothing here
// synchronises except where a comment says so.
//
// Determinism: no float atomics anywhere. Cross-row reductions (LayerNorm's
// dw/db, ReduceSum, GradNorm, the mean of CrossEntropy) are two passes: fixed
// per-block partial sums in double, then a fixed-order final sum. The block
// shapes depend on the problem's shape alone, so a result is a function of
// the data and the shape, run after run.
//
// Data errors (an id or target outside the table) cannot throw from a
// kernel: the kernel records the first one in a DeviceError and
// skips the element; the backend turns it into an Error at the next
// synchronisation (synchronize(), copyToHost(), copyToDevice()).
//
// This header is included by host (.cpp) and device (.cu) files alike, so it
// holds no device code; DeviceUtil.cuh has the device helpers.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_COMMON_H
#define MEGA_RUNTIME_BACKENDS_CUDA_COMMON_H

#include "mega/Runtime/Backend.h"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace mega::rt::gpu {

using plan::DType;
using plan::Instr;
using plan::Op;
using plan::Value;
using Refs = std::vector<TensorRef>;

/// The first data error a kernel met, in device memory (the backend copies
/// it back at each synchronisation). `flag` is claimed with atomicCAS so
/// that one reporter fills the other fields.
struct DeviceError {
  int flag; ///< 0: none
  int op;   ///< plan::Op of the instruction
  long long row;
  long long value;
  long long limit; ///< the valid range is [0, limit)
};

/// True when `p` is a multiple of `bytes` (a vector access's alignment).
inline bool aligned(const void *p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

/// Throws Error("cuda: <api>: <error string> (<error name>)").
[[noreturn]] void fail(const char *api, cudaError_t e);
[[noreturn]] void failBlas(const char *api, cublasStatus_t s);
inline void checkCuda(cudaError_t e, const char *api) {
  if (e != cudaSuccess)
    fail(api, e);
}
inline void checkBlas(cublasStatus_t s, const char *api) {
  if (s != CUBLAS_STATUS_SUCCESS)
    failBlas(api, s);
}
/// After a kernel launch: reports a bad launch configuration (not an
/// asynchronous fault, which the next synchronisation reports).
void checkLaunch(const char *kernel);

/// Grow-only device scratch shared by all kernels (they run one after the
/// other on one stream, so one buffer serves every launch). A launch asks
/// once for everything it needs (see Carve): a second get() may move it.
/// While the stream is being recorded into a CUDA graph it cannot grow (the
/// graph would keep the old address): get() then throws Error.
class Workspace {
public:
  explicit Workspace(cudaStream_t stream) : stream_(stream) {}
  ~Workspace();
  Workspace(const Workspace &) = delete;
  Workspace &operator=(const Workspace &) = delete;
  void *get(size_t bytes);
  /// Counts the moves of the buffer: a graph recorded at another value
  /// holds a freed address.
  uint64_t generation() const { return generation_; }
  size_t capacity() const { return capacity_; }

private:
  cudaStream_t stream_;
  void *ptr_ = nullptr;
  size_t capacity_ = 0;
  uint64_t generation_ = 0;
};

/// Device copies of per-instruction tables (AdamWMulti's list of tensors),
/// uploaded at an instruction's first launch and kept for the next steps:
/// persistent tensors never move, so a training run uploads each table
/// once. Keyed by the instruction's address; the host bytes are kept and
/// compared, so a changed table (another plan at the same address) is
/// uploaded again rather than read stale.
class TableCache {
public:
  explicit TableCache(cudaStream_t stream) : stream_(stream) {}
  ~TableCache();
  TableCache(const TableCache &) = delete;
  TableCache &operator=(const TableCache &) = delete;
  /// The device copy of `bytes` bytes at `host` for instruction `key`.
  /// Throws Error when it would upload while the stream is being recorded
  /// into a CUDA graph (the graph would not see a later change).
  const void *get(const void *key, const void *host, size_t bytes);
  /// Counts the tables freed or rewritten: a graph recorded at another
  /// value may read stale or freed memory.
  uint64_t generation() const { return generation_; }

private:
  struct Entry {
    std::vector<char> host;
    void *dev = nullptr;
  };
  cudaStream_t stream_;
  std::unordered_map<const void *, Entry> entries_;
  uint64_t generation_ = 0;
};

/// What picks one bf16 GEMM's cuBLASLt plan: both transposes, N, M, K, the
/// leading dims and batch strides of B, A and C, the batch count, the
/// alignment classes of B, A and C (and D), the epilogue with the type of C
/// and D, and the alignment class of its bias (Precision.cu, ltGemm).
using LtGemmKey = GemmKey;

/// One distinct GEMM's cuBLASLt descriptors and the algorithm the heuristic
/// chose for them (found false: none fits; the caller falls back).
struct LtGemmPlan {
  LtGemmPlan() = default;
  ~LtGemmPlan();
  LtGemmPlan(const LtGemmPlan &) = delete;
  LtGemmPlan &operator=(const LtGemmPlan &) = delete;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  /// With CudaOptions::gemmAutotune: the heuristic's candidates, best
  /// first (algo is the first until timed), then with gemmAutotuneWide the
  /// wide search's (LtSearch.h).
  std::vector<cublasLtMatmulAlgo_t> candidates;
};

/// The backend's LtGemmPlans, made at each GEMM's first call and kept for
/// the backend's life (a training run has a few dozen distinct GEMMs).
class LtPlans {
public:
  /// nullptr when `key` has no plan yet.
  const LtGemmPlan *find(const LtGemmKey &key) const;
  const LtGemmPlan &add(const LtGemmKey &key, std::unique_ptr<LtGemmPlan> plan);
  size_t size() const { return plans_.size(); }

private:
  std::map<LtGemmKey, std::unique_ptr<LtGemmPlan>> plans_;
};

/// Lays out several scratch arrays in one workspace request.
class Carve {
public:
  /// Reserves `bytes` (256-byte aligned); returns its offset.
  size_t add(size_t bytes) {
    size_t at = total_;
    total_ += (bytes + 255) / 256 * 256;
    return at;
  }
  size_t total() const { return total_ ? total_ : 256; }

private:
  size_t total_ = 0;
};

class EwJit;
class CudnnAttention;

/// What a kernel needs to know about the backend.
struct Ctx {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;  ///< bf16 GEMMs
  LtPlans *ltPlans = nullptr;     ///< their descriptors and algorithms
  void *ltWorkspace = nullptr;    ///< cuBLASLt's own scratch (fixed size)
  size_t ltWorkspaceBytes = 0;
  Workspace *ws = nullptr;
  TableCache *tables = nullptr; ///< per-instruction device tables
  DeviceError *err = nullptr; ///< the device's error record
  int sms = 1;                ///< multiprocessors, for grid sizes
  EwJit *ewJit = nullptr;     ///< generated Elementwise kernels (Jit.h)
  /// cuDNN's fused attention (CudnnAttention.h), when loaded and chosen;
  /// `cudnnRequired`: a problem it refuses is an Error, not a fallback.
  CudnnAttention *cudnn = nullptr;
  bool cudnnRequired = false;
  /// Time cuBLASLt's candidates at a GEMM's first call (CudaOptions);
  /// with gemmAutotuneWide, those of the wide search too (LtSearch.h).
  bool gemmAutotune = false;
  bool gemmAutotuneWide = false;
  int gemmCandidate = -1; ///< CudaOptions::gemmCandidate
  /// The kept choices and what saves them (CudaOptions::gemmChoices), or
  /// null.
  GemmChoices *gemmChoices = nullptr;
  const std::function<void(const GemmChoices &)> *saveGemmChoices = nullptr;
};

/// Blocks for a grid-stride loop over n items with `threads` per block.
inline unsigned gridFor(const Ctx &ctx, int64_t n, int threads) {
  int64_t want = (n + threads - 1) / threads;
  int64_t cap = int64_t(ctx.sms) * 32;
  if (want > cap)
    want = cap;
  return unsigned(want < 1 ? 1 : want);
}

/// Blocks for a one-block-per-row kernel that loops when rows exceed it.
inline unsigned rowGrid(int64_t rows) {
  const int64_t cap = int64_t(1) << 20;
  return unsigned(rows < 1 ? 1 : (rows > cap ? cap : rows));
}

/// Threads per block for a row of `cols` elements: a multiple of 32 in
/// [32, maxThreads].
inline int rowThreads(int64_t cols, int maxThreads = 256) {
  int64_t t = (cols + 31) / 32 * 32;
  if (t > maxThreads)
    t = maxThreads;
  return int(t < 32 ? 32 : t);
}

/// How sumChunks stores a column's sum s (a double) into its output y.
enum class SumInto {
  Overwrite,  ///< y = float(s)
  AddWide,    ///< y = float(y + s) in double (ReduceSum's accumulate)
  AddRounded, ///< y = y + float(s) in f32: the bits of an Elementwise add of
              ///< the overwritten sum (LayerNormGrad's accumulate_wb)
};

/// Column sums of part[chunks][width] down the chunks, in a fixed order (the
/// second pass of ReduceSum and of LayerNormGrad's dw/db, Misc.cu): columns
/// [0, split) into out0, [split, width) into out1[j - split], stored as
/// `into` says.
void sumChunks(const Ctx &ctx, const double *part, int64_t chunks,
               int64_t width, int64_t split, float *out0, float *out1,
               SumInto into);
void sumChunks(const Ctx &ctx, const float *part, int64_t chunks,
               int64_t width, int64_t split, float *out0, float *out1,
               SumInto into);
/// One sumChunks call's arguments.
template <typename P> struct ChunkSumJob {
  const P *part;
  int64_t chunks, width, split;
  float *out0, *out1;
  SumInto into;
};
/// sumChunks(a) and sumChunks(b) in one launch: the same bits.
void sumChunks(const Ctx &ctx, const ChunkSumJob<float> &a,
               const ChunkSumJob<double> &b);

/// ReduceSum's chunk of rows (Misc.cu): at least 64 and a multiple of 32,
/// so that LayerNormGrad's 32-row blocks tile it (its column sums of its
/// bf16 copy use ReduceSum's chunks), with at most 1024 chunks.
inline int64_t reduceSumChunkRows(int64_t outer) {
  const int64_t least = (outer + 1023) / 1024;
  const int64_t chunk = least > 64 ? least : 64;
  return (chunk + 31) / 32 * 32;
}

/// ReduceSum of a bf16 [outer, inner] into y (Misc.cu): LayerNormGrad's
/// block-per-row form sums its copy with it.
void reduceSumBf16(const Ctx &ctx, const void *x, int64_t outer, int64_t inner,
                   bool acc, float *y);

// Per-opcode run functions (one file per concern).
#define MEGA_CUDA_KERNEL(NAME)                                                 \
  void run##NAME(const Ctx &ctx, const Instr &in, const Refs &ins,             \
                 const Refs &outs);
MEGA_CUDA_KERNEL(Fill)
MEGA_CUDA_KERNEL(Copy)
MEGA_CUDA_KERNEL(MatMul)
MEGA_CUDA_KERNEL(Elementwise)
MEGA_CUDA_KERNEL(ReduceSum)
MEGA_CUDA_KERNEL(LayerNorm)
MEGA_CUDA_KERNEL(LayerNormGrad)
MEGA_CUDA_KERNEL(Softmax)
MEGA_CUDA_KERNEL(SoftmaxGrad)
MEGA_CUDA_KERNEL(CrossEntropy)
MEGA_CUDA_KERNEL(CrossEntropyGrad)
MEGA_CUDA_KERNEL(Embedding)
MEGA_CUDA_KERNEL(EmbeddingGrad)
MEGA_CUDA_KERNEL(Transpose)
MEGA_CUDA_KERNEL(GradNorm)
MEGA_CUDA_KERNEL(AdamW)
MEGA_CUDA_KERNEL(Sgd)
MEGA_CUDA_KERNEL(Cast)
MEGA_CUDA_KERNEL(Attention)
MEGA_CUDA_KERNEL(AttentionGrad)
MEGA_CUDA_KERNEL(AdamWMulti)
MEGA_CUDA_KERNEL(CrossEntropyWithGrad)
/// GradNorm with shard flags (tensor, pipeline or data-parallel groups): the
/// sums meet over `comm`'s groups on the host, as on the CPU.
void runGradNormSharded(const Ctx &ctx, const plan::Instr &in,
                        const std::vector<TensorRef> &ins,
                        const std::vector<TensorRef> &outs,
                        Communicator &comm);
/// MatMul with bf16 A and B (cuBLASLt), called by runMatMul.
MEGA_CUDA_KERNEL(MatMulBf16)
/// MatMul with an epilogue (i[12] != 0; f32 or bf16 A and B), called by
/// runMatMul (Precision.cu).
MEGA_CUDA_KERNEL(MatMulEpilogue)
#undef MEGA_CUDA_KERNEL

// The vocabulary-parallel kernels that need no rank (Vocab.cu).
void runRowMax(const Ctx &ctx, const Instr &in, const Refs &ins,
               const Refs &outs);
void runVocabCrossEntropy(const Ctx &ctx, const Instr &in, const Refs &ins,
                          const Refs &outs);
// The vocabulary-parallel kernels that need their GroupPlace (Backend.h),
// in Vocab.cu.
#define MEGA_CUDA_GROUP_KERNEL(NAME)                                           \
  void run##NAME(const Ctx &ctx, const GroupPlace &place, const Instr &in,     \
                 const Refs &ins, const Refs &outs);
MEGA_CUDA_GROUP_KERNEL(VocabEmbedding)
MEGA_CUDA_GROUP_KERNEL(VocabEmbeddingGrad)
MEGA_CUDA_GROUP_KERNEL(VocabCrossEntropyStats)
MEGA_CUDA_GROUP_KERNEL(VocabCrossEntropyGrad)
/// AdamW with i = {group} (the distributed optimizer): grad, m and v are
/// block `place.rank` of the parameter; the updated block is written to the
/// output (Optimizer.cu).
MEGA_CUDA_GROUP_KERNEL(AdamWShard)
#undef MEGA_CUDA_GROUP_KERNEL

/// The scatter-add of EmbeddingGrad (Embedding.cu), deterministic without
/// float atomics: dout row r is added to table row ids[r] - start when that
/// is in [0, V), in row order; ids outside [0, limit) are data errors of
/// `op`. The table [V, H] is zeroed first unless `acc`.
void scatterRowsSorted(const Ctx &ctx, Op op, const float *dout,
                       const int32_t *ids, int64_t rows, int64_t V, int64_t H,
                       int64_t start, int64_t limit, bool acc, float *table);

/// Largest Elementwise program the kernel takes in its parameters; check()
/// refuses bigger ones with a message naming the limit.
inline constexpr int kEwMaxInputs = 16;
inline constexpr int kEwMaxOutputs = 8;
inline constexpr int kEwMaxCode = 160;
inline constexpr int kEwMaxConsts = 64;
/// Largest head dim of the Attention kernels (registers per query row).
inline constexpr int64_t kAttentionMaxHeadDim = 128;

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_COMMON_H

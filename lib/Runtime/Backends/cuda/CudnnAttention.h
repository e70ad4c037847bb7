//===- CudnnAttention.h - Attention through cuDNN's fused SDPA ------------===//
//
// The bf16 Attention and AttentionGrad of a plan can run as cuDNN's fused
// scaled-dot-product attention (the flash-attention engines of cuDNN 9,
// through the cuDNN frontend's graph API), as Megatron's Transformer Engine
// runs them by default on Hopper. mega's own kernels (Attention.cu) stay the
// fallback and the choice of `mega-run --attention-backend local`.
//
// cuDNN is loaded at run time (dlopen of libcudnn.so.9), so a build never
// links it and a machine without it still runs every plan. A graph is built
// per distinct problem (shape, strides, causal, scale) at its first launch
// and kept; a problem cuDNN refuses is remembered and goes to the fallback.
//
// Numerics: the same operation as the CPU twin (softmax of the scaled,
// causally masked scores, lse in natural-log units, bf16 in and out, fp32
// accumulation), rounded as cuDNN rounds. cuDNN's backward accumulates dq
// with float atomics: unlike mega's kernels, its bf16 gradients may differ
// in the last bits from run to run (`--attention-backend local` keeps the
// backend deterministic).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_CUDNNATTENTION_H
#define MEGA_RUNTIME_BACKENDS_CUDA_CUDNNATTENTION_H

#include "mega/Runtime/Backend.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime.h>

namespace mega::rt::gpu {

class Workspace;
struct Ctx;

/// Element strides of one operand group: slice bh = b*H + h starts at
/// b*sB + h*sH, its row s at + s*sS, the head dim contiguous.
struct SdpaStrides {
  int64_t sB, sH, sS;
};

/// One attention problem: B x H slices of S rows and head dim hd.
struct SdpaProblem {
  int64_t batch, heads, seq, hd;
  bool causal;
  float scale;
  SdpaStrides qkv, o, dout, grad; ///< dout, grad: AttentionGrad only
};

/// The operands, all bf16 but lse ([B*H, S] float, contiguous).
struct SdpaForwardArgs {
  const void *q, *k, *v;
  void *o;
  float *lse;
};
struct SdpaBackwardArgs {
  const void *q, *k, *v, *o, *dout;
  const float *lse;
  void *dq, *dk, *dv;
};

class CudnnAttention {
public:
  /// Whether this build has the cuDNN frontend (else load() always fails).
  static bool built();
  /// Loads libcudnn.so.9; nullptr with `why` set when it cannot.
  static std::unique_ptr<CudnnAttention> load(std::string &why);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention &) = delete;
  CudnnAttention &operator=(const CudnnAttention &) = delete;

  /// "cuDNN 9.19.0 (frontend 1.32.0)".
  std::string version() const;

  /// Enqueues the problem on `stream` and returns true, or returns false
  /// with `why` set when cuDNN has no plan for it or fails to launch the
  /// one it built (then dropped for good): the caller's kernels then write
  /// every output whole.
  bool forward(cudaStream_t stream, Workspace &ws, const SdpaProblem &p,
               const SdpaForwardArgs &a, std::string &why);
  bool backward(cudaStream_t stream, Workspace &ws, const SdpaProblem &p,
                const SdpaBackwardArgs &a, std::string &why);

private:
  struct Impl;
  explicit CudnnAttention(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Attention or AttentionGrad (the plan's operands) through ctx.cudnn when
/// the operands suit cuDNN (bf16 but the float lse, 16-byte aligned, strides
/// and head dim multiples of 8, head dim at most 128) and cuDNN has a plan:
/// true when enqueued. With ctx.cudnnRequired a refusal is an Error naming
/// why; otherwise the caller runs mega's kernels.
bool runSdpa(const Ctx &ctx, const plan::Instr &in, const SdpaProblem &p,
             const std::vector<TensorRef> &ins,
             const std::vector<TensorRef> &outs);

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_CUDNNATTENTION_H

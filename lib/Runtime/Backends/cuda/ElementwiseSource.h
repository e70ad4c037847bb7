//===- ElementwiseSource.h - An Elementwise program as CUDA C++ -----------===//
//
// The CUDA backend compiles each Elementwise instruction's micro-op program
// into a kernel of its own (NVRTC, Jit.h) instead of interpreting it: the
// code becomes straight-line float arithmetic, so a launch costs what its
// loads and stores cost. This file only writes the source; it needs no
// device and no CUDA header, so that a CPU test can check it.
//
// What the source depends on (and nothing else, so that equal sources are
// compiled once): the code, the constants, each input's period class (the
// whole tensor, one scalar, or a broadcast row), each operand's dtype, and
// whether indices need 64 bits. Element counts, periods and pointers are
// kernel parameters (EwParams).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_ELEMENTWISESOURCE_H
#define MEGA_RUNTIME_BACKENDS_CUDA_ELEMENTWISESOURCE_H

#include "mega/Plan/Plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mega::rt::gpu {

/// How an input is indexed: element e reads in[e] (Full, period n),
/// in[0] (Scalar, period 1) or in[e % period] (Broadcast).
enum class EwInput : uint8_t { Full, Scalar, Broadcast };

/// The largest program a generated kernel takes (EwParams' arrays); the
/// same limits as the interpreter's, checked by CudaBackend::check().
inline constexpr int kEwJitMaxInputs = 16;
inline constexpr int kEwJitMaxOutputs = 8;

/// Everything the kernel source depends on.
struct EwKernelSpec {
  std::vector<EwInput> inputs;
  std::vector<bool> bf16In;        ///< per input: bf16, widened on load
  std::vector<bool> bf16Out;       ///< per output: stored rounded to bf16
  std::vector<int64_t> code;       ///< groups of 4: (EwOp, dst, a, b)
  std::vector<float> consts;       ///< EwOp::Const reads consts[a]
  bool wideIndex = false;          ///< n >= 2^31: 64-bit index math
};

/// The spec of a checked Elementwise instruction whose inputs and outputs
/// have dtypes `inBf16` and `outBf16` (true: bf16).
EwKernelSpec ewSpecOf(const plan::Instr &instr, const std::vector<bool> &inBf16,
                      const std::vector<bool> &outBf16);

/// The kernels' parameter block: laid out alike on the host (this struct)
/// and in the generated source (struct MegaEwParams), 8-byte fields only.
struct EwParams {
  int64_t n;
  const float *in[kEwJitMaxInputs];
  int64_t period[kEwJitMaxInputs];
  void *out[kEwJitMaxOutputs];
};
static_assert(sizeof(EwParams) ==
                  8 * (1 + 2 * kEwJitMaxInputs + kEwJitMaxOutputs),
              "no padding: the generated struct has the same layout");

/// Names of the two kernels every source defines (extern "C", so the names
/// are not mangled). The vector kernel handles 4 consecutive elements per
/// thread with 16-byte loads; launch it only when ewVectorizable() holds.
/// The scalar kernel takes any operands.
inline constexpr const char *kEwVectorKernel = "mega_ew_vec4";
inline constexpr const char *kEwScalarKernel = "mega_ew_scalar";

/// True when the vector kernel may run: n % 4 == 0, every broadcast period
/// % 4 == 0 (so a group of 4 never wraps), every f32 operand 16-byte
/// aligned and every bf16 one 8-byte aligned.
bool ewVectorizable(const EwKernelSpec &spec, const EwParams &p);

/// The CUDA C++ source of both kernels (needs no header: NVRTC's built-in
/// math and vector types only).
std::string ewSource(const EwKernelSpec &spec);

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_ELEMENTWISESOURCE_H

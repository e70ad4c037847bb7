//===- Backend.h - The small interface every runtime backend implements ---===//
//
// The engine (plan loading, memory, training loop) knows nothing about how a
// kernel runs; a backend knows nothing about training. Like IREE's HAL
// drivers, a backend is: allocate, copy, launch, synchronise (and, later,
// collectives). The CPU backend is always built; CUDA joins when present.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKEND_H
#define MEGA_RUNTIME_BACKEND_H

#include "mega/Plan/Plan.h"

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mega::rt {

/// The runtime's one error type: a message a user can act on.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A resolved operand: where the bytes are plus the plan's view of them.
struct TensorRef {
  void *data = nullptr;
  const plan::Value *value = nullptr; ///< dtype and shape
  int64_t numel() const { return value->numel(); }
  float *f32() const { return static_cast<float *>(data); }
  int32_t *i32() const { return static_cast<int32_t *>(data); }
};

class Backend {
public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;
  /// Device memory (host memory for the CPU), zero-filled, 64-byte aligned.
  virtual void *allocate(size_t bytes) = 0;
  virtual void release(void *ptr) = 0;
  virtual void copyToDevice(void *dst, const void *src, size_t bytes) = 0;
  virtual void copyToHost(void *dst, const void *src, size_t bytes) = 0;
  /// Checks once, when a plan is loaded, that an instruction's attributes
  /// agree with its operands' sizes, so that launch() can never touch memory
  /// outside them. Throws Error naming the problem.
  virtual void check(const plan::Instr &instr,
                     const std::vector<const plan::Value *> &inputs,
                     const std::vector<const plan::Value *> &outputs) = 0;
  /// Runs one instruction.
  virtual void launch(const plan::Instr &instr,
                      const std::vector<TensorRef> &inputs,
                      const std::vector<TensorRef> &outputs) = 0;
  virtual void synchronize() {}
};

/// The CPU backend: OpenBLAS for MatMul, OpenMP-parallel loops elsewhere.
/// threads <= 0 means "as the environment says" (OMP_NUM_THREADS).
std::unique_ptr<Backend> createCpuBackend(int threads);

/// The CUDA backend on `device` (fp32; cuBLAS for MatMul). Throws Error
/// ("no CUDA device available (cudaGetDeviceCount: ...)") when there is no
/// usable GPU, and ("this mega-run was built without the CUDA backend")
/// when the build has no CUDA toolkit (MEGA_HAVE_CUDA undefined).
std::unique_ptr<Backend> createCudaBackend(int device);

} // namespace mega::rt

#endif // MEGA_RUNTIME_BACKEND_H

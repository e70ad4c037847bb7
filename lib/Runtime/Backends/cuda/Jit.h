//===- Jit.h - Generated Elementwise kernels: NVRTC and their cache -------===//
//
// Each distinct Elementwise kernel source (ElementwiseSource.h) is compiled
// once per backend by NVRTC, straight to the device's own architecture (a
// CUBIN: the driver does not JIT it), loaded with the runtime's library API
// and kept until the backend goes. The backend compiles while it checks a
// plan (check() runs once per instruction at load), never inside a step.
//
// A compile error is a bug in the generator: it throws the backend's Error
// with the first lines of NVRTC's log. When NVRTC or the library loader
// cannot be used at all (an NVRTC without this architecture, a driver without
// the library API), the backend says so once and runs every Elementwise on
// its interpreter (Elementwise.cu), as it does when MEGA_CUDA_NVRTC=0.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_JIT_H
#define MEGA_RUNTIME_BACKENDS_CUDA_JIT_H

#include "ElementwiseSource.h"

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace mega::rt::gpu {

/// NVRTC's CUBIN of `source` for `arch` (e.g. "sm_90"); needs no device.
/// Returns false with `why` set when NVRTC itself is unusable here (it
/// fails to start or refuses the architecture); throws Error with the head
/// of the compile log when the source does not compile.
bool nvrtcCubin(const std::string &source, const std::string &arch,
                std::vector<char> &cubin, std::string &why);

/// The generated Elementwise kernels of one backend (one device).
class EwJit {
public:
  struct Kernels {
    EwKernelSpec spec;
    cudaKernel_t vec = nullptr;    ///< kEwVectorKernel
    cudaKernel_t scalar = nullptr; ///< kEwScalarKernel
  };

  /// `device`'s architecture; MEGA_CUDA_NVRTC=0 disables the compiler.
  explicit EwJit(int device);
  ~EwJit();
  EwJit(const EwJit &) = delete;
  EwJit &operator=(const EwJit &) = delete;

  /// The kernels of a checked Elementwise instruction whose inputs and
  /// outputs are bf16 where `inBf16` and `outBf16` say, compiled now unless
  /// an equal source was before; null when the interpreter must run it
  /// (NVRTC unusable or disabled).
  const Kernels *get(const plan::Instr &instr, const std::vector<bool> &inBf16,
                     const std::vector<bool> &outBf16);

  /// Writes "cuda: N elementwise kernels compiled by NVRTC in X ms" when
  /// kernels were compiled since the last call (the first launch after a
  /// plan was loaded calls it: one line per load).
  void report();

private:
  const Kernels *compile(EwKernelSpec spec);
  void disable(const std::string &why);

  std::string arch_; ///< "sm_XY"
  bool usable_ = true;
  std::unordered_map<std::string, std::unique_ptr<Kernels>> bySource_;
  std::vector<cudaLibrary_t> libraries_;
  /// The last lookup per instruction: a plan's launches skip writing the
  /// source again. The attributes are kept and compared (another
  /// instruction may come to live at the same address).
  struct Seen {
    std::vector<int64_t> i;
    std::vector<float> f;
    std::vector<bool> bf16In, bf16Out;
    const Kernels *kernels = nullptr;
  };
  std::unordered_map<const plan::Instr *, Seen> byInstr_;
  int compiled_ = 0;
  double compileMs_ = 0;
};

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_JIT_H

//===- GemmChoices.h - cuBLASLt algorithms chosen by timing, by GEMM ------===//
//
// mega-run --gemm-autotune times cuBLASLt's candidate algorithms at each
// distinct bf16 GEMM's first call and keeps the fastest. Two tuned runs may
// pick differently (the timings are noisy), so their bits may differ.
// --gemm-autotune-file FILE keeps the choices: a run reads them, uses them
// where they still hold and times only the GEMMs the file lacks, then
// rewrites the file; a second run of the same plan times nothing and has
// the bits of the first. cuBLASLt's algorithm structure may be stored and
// reused with the same cuBLASLt on the same GPU (its documentation), so the
// choices carry both and a run on another one times again.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_GEMMCHOICES_H
#define MEGA_RUNTIME_GEMMCHOICES_H

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace mega::rt {

/// What identifies one GEMM (the CUDA backend's key: transposes, N, M, K,
/// leading dims, batch strides, batch count, operand alignment classes, the
/// epilogue with its types and its pointers' alignment).
using GemmKey = std::array<int64_t, 17>;

/// One GEMM's chosen algorithm: cuBLASLt's cublasLtMatmulAlgo_t (8 words)
/// and the time it took when chosen, in microseconds.
struct GemmChoice {
  std::array<uint64_t, 8> algo{};
  double us = 0.0;
};

struct GemmChoices {
  std::string device;   ///< the GPU's name the choices were timed on
  int64_t cublasLt = 0; ///< cublasLtGetVersion() of the run that timed them
  std::map<GemmKey, GemmChoice> byKey;
};

/// FILE's choices (throws Error "FILE:LINE: ..." on malformed text); an
/// empty set when FILE does not exist.
GemmChoices readGemmChoices(const std::string &path);
/// Writes `c` to FILE atomically (a reader sees the old or the new file).
void writeGemmChoices(const std::string &path, const GemmChoices &c);

} // namespace mega::rt

#endif // MEGA_RUNTIME_GEMMCHOICES_H

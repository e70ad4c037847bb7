//===- LtSearch.h - The wide search for a bf16 GEMM's candidates ----------===//
//
// mega-run --gemm-autotune-wide: the candidates the autotune times for one
// bf16 GEMM are, beyond the heuristic's own list (its best fits, in its
// order, first):
//   1. each of cuBLASLt's algorithm ids for these types, as the heuristic
//      configures it when asked for that id alone
//      (CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID), for the families its best-fit
//      list left out;
//   2. the split-K forms (GemmTuning.h, splitVariants) of the first
//      candidates that leave the GPU part idle (with f32 partials only
//      where the result is bf16).
// Each is kept only when cublasLtMatmulAlgoCheck takes it for these very
// descriptors within the workspace, and only once.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_LTSEARCH_H
#define MEGA_RUNTIME_BACKENDS_CUDA_LTSEARCH_H

#include "Common.h"

#include <cublasLt.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mega::rt::gpu {

/// The most candidates the wide search hands the autotune per GEMM: the
/// heuristic's best fits asked for, and the places kept for split-K forms
/// whatever the algorithm ids bring.
constexpr size_t kWideCandidates = 64;
constexpr int kWideBestFits = 24;
constexpr size_t kWideSplitPlaces = 16;

/// Appends the wide search's candidates to `e.candidates` (which holds the
/// heuristic's best fits, best first, `waves` their wave counts), up to
/// kWideCandidates in all. `pref` is the preference the best fits were
/// asked with; its search mode is changed. `cd` is C's and D's type.
void widenCandidates(const Ctx &ctx, LtGemmPlan &e,
                     cublasLtMatmulPreference_t pref, cudaDataType cd,
                     int64_t K, const std::vector<float> &waves);

/// "algorithm 66, tile 23, stages 8, split-K 4 (f32 partials)": what an
/// algorithm's configuration says (for the autotune's notices).
std::string describeAlgo(const cublasLtMatmulAlgo_t &algo);

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_LTSEARCH_H

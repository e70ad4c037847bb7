//===- LtSearch.cpp - The wide search for a bf16 GEMM's candidates --------===//
//
// What is searched is in LtSearch.h. A question cuBLASLt cannot answer (an
// id these types do not run, a split the kernel does not take) only drops
// that candidate: the search adds to the heuristic's list and never takes
// from it.
//
//===----------------------------------------------------------------------===//
#include "LtSearch.h"

#include "GemmTuning.h"

#include <cstring>

namespace mega::rt::gpu {

static_assert(uint32_t(kReduceInPlace) ==
                      uint32_t(CUBLASLT_REDUCTION_SCHEME_INPLACE) &&
                  uint32_t(kReduceCompute) ==
                      uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) &&
                  uint32_t(kReduceOutput) ==
                      uint32_t(CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE),
              "GemmTuning.h's reduction schemes are cuBLASLt's");

namespace {

/// The algo ids asked for at most.
constexpr int kMaxIds = 256;

class Candidates {
public:
  Candidates(const Ctx &ctx, LtGemmPlan &e) : ctx_(ctx), e_(e) {}

  bool full(size_t cap = kWideCandidates) const {
    return e_.candidates.size() >= cap;
  }

  /// Adds `algo` when it is new and cuBLASLt takes it for e's descriptors
  /// within the workspace; its wave count then goes to `waves`.
  bool add(const cublasLtMatmulAlgo_t &algo, std::vector<float> &waves) {
    if (full())
      return false;
    for (const cublasLtMatmulAlgo_t &have : e_.candidates)
      if (std::memcmp(&have, &algo, sizeof algo) == 0)
        return false;
    cublasLtMatmulHeuristicResult_t r{};
    if (cublasLtMatmulAlgoCheck(ctx_.lt, e_.desc, e_.a, e_.b, e_.c, e_.c, &algo,
                                &r) != CUBLAS_STATUS_SUCCESS ||
        r.workspaceSize > ctx_.ltWorkspaceBytes)
      return false;
    e_.candidates.push_back(algo);
    waves.push_back(r.wavesCount);
    return true;
  }

private:
  const Ctx &ctx_;
  LtGemmPlan &e_;
};

/// What splitVariants needs to know of `algo`.
SplitBase splitBase(const cublasLtMatmulAlgo_t &algo, float waves) {
  SplitBase b;
  b.waves = waves;
  int32_t support = 0;
  uint32_t mask = 0;
  int32_t split = 1;
  size_t written = 0;
  b.splitSupport = cublasLtMatmulAlgoCapGetAttribute(
                       &algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &support,
                       sizeof support, &written) == CUBLAS_STATUS_SUCCESS &&
                   support != 0;
  if (cublasLtMatmulAlgoCapGetAttribute(
          &algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &mask, sizeof mask,
          &written) == CUBLAS_STATUS_SUCCESS)
    b.reductions = mask;
  if (cublasLtMatmulAlgoConfigGetAttribute(
          &algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split,
          &written) == CUBLAS_STATUS_SUCCESS)
    b.split = split;
  return b;
}

/// One configuration attribute of `algo` (T its type), or `none`.
template <typename T>
T configOf(const cublasLtMatmulAlgo_t &algo,
           cublasLtMatmulAlgoConfigAttributes_t attr, T none) {
  T v{};
  size_t written = 0;
  return cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof v,
                                              &written) == CUBLAS_STATUS_SUCCESS
             ? v
             : none;
}

} // namespace

std::string describeAlgo(const cublasLtMatmulAlgo_t &algo) {
  const int32_t id = configOf<int32_t>(algo, CUBLASLT_ALGO_CONFIG_ID, -1);
  const uint32_t tile =
      configOf<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, 0);
  const uint32_t stages =
      configOf<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, 0);
  const int32_t split =
      configOf<int32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 1);
  const uint32_t reduction =
      configOf<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, 0);
  std::string out = "algorithm " + std::to_string(id) + ", tile " +
                    std::to_string(tile) + ", stages " + std::to_string(stages);
  if (split > 1)
    out += ", split-K " + std::to_string(split) +
           (reduction == kReduceCompute   ? " (f32 partials)"
            : reduction == kReduceOutput  ? " (partials in the output's type)"
            : reduction == kReduceInPlace ? " (in place)"
                                          : "");
  return out;
}

void widenCandidates(const Ctx &ctx, LtGemmPlan &e,
                     cublasLtMatmulPreference_t pref, cudaDataType cd,
                     int64_t K, const std::vector<float> &bestWaves) {
  Candidates cands(ctx, e);
  std::vector<float> waves = bestWaves;
  waves.resize(e.candidates.size(), 0.0f);

  // 1. One configuration of each algorithm id, as the heuristic makes it
  // when asked for that id alone (leaving places for step 2).
  const size_t idCap = kWideCandidates - kWideSplitPlaces;
  int ids[kMaxIds];
  int nIds = 0;
  const uint32_t byId = CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID;
  if (cublasLtMatmulAlgoGetIds(ctx.lt, CUBLAS_COMPUTE_32F, CUDA_R_32F,
                               CUDA_R_16BF, CUDA_R_16BF, cd, cd, kMaxIds, ids,
                               &nIds) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceSetAttribute(
          pref, CUBLASLT_MATMUL_PREF_SEARCH_MODE, &byId, sizeof byId) ==
          CUBLAS_STATUS_SUCCESS) {
    for (int k = 0; k < nIds && !cands.full(idCap); ++k) {
      cublasLtMatmulHeuristicResult_t r{};
      int found = 0;
      if (cublasLtMatmulAlgoInit(ctx.lt, CUBLAS_COMPUTE_32F, CUDA_R_32F,
                                 CUDA_R_16BF, CUDA_R_16BF, cd, cd, ids[k],
                                 &r.algo) != CUBLAS_STATUS_SUCCESS)
        continue;
      if (cublasLtMatmulAlgoGetHeuristic(ctx.lt, e.desc, e.a, e.b, e.c, e.c,
                                         pref, 1, &r,
                                         &found) == CUBLAS_STATUS_SUCCESS &&
          found > 0 && r.state == CUBLAS_STATUS_SUCCESS)
        cands.add(r.algo, waves);
    }
  }

  // 2. Split-K forms of the candidates so far that leave the GPU part idle.
  std::vector<SplitBase> bases;
  const size_t before = e.candidates.size();
  for (size_t k = 0; k < before; ++k)
    bases.push_back(splitBase(e.candidates[k], waves[k]));
  const uint32_t allowed =
      cd == CUDA_R_16BF
          ? uint32_t(kReduceCompute)
          : uint32_t(kReduceInPlace | kReduceCompute | kReduceOutput);
  for (const SplitVariant &v : splitVariants(bases, K, allowed)) {
    if (cands.full())
      break;
    cublasLtMatmulAlgo_t algo = e.candidates[v.base];
    const int32_t split = v.split;
    const uint32_t reduction = v.reduction;
    if (cublasLtMatmulAlgoConfigSetAttribute(
            &algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split) ==
            CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulAlgoConfigSetAttribute(
            &algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &reduction,
            sizeof reduction) == CUBLAS_STATUS_SUCCESS)
      cands.add(algo, waves);
  }
}

} // namespace mega::rt::gpu

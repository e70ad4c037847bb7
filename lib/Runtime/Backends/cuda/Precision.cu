//===- Precision.cu - Cast, and bf16 GEMMs on cuBLASLt --------------------===//
//
// Cast: f32 -> bf16 with __float2bfloat16_rn (round to nearest even, the
// CPU's floatToBf16), bf16 -> f32 exactly; four elements per thread (one
// 16-byte and one 8-byte access) where both pointers allow.
//
// bf16 MatMul (A and B bf16, C f32): cuBLASLt on tensor cores, fp32
// accumulation (CUBLAS_COMPUTE_32F), the same row-major-as-column-major swap
// as the fp32 path in MatMul.cu (C^T = op(B)^T op(A)^T). cuBLASLt assumes
// 256-byte aligned pointers unless told otherwise; plan views (a head, one
// of q|k|v) may start anywhere, so each call states the alignment its
// pointers have and the heuristic picks only algorithms that can take it.
// The descriptors and the heuristic's choice are made once per distinct
// GEMM (Ctx::ltPlans) and reused by every later call of the same one.
// Should cuBLASLt offer none, cublasGemmStridedBatchedEx (also tensor cores
// for bf16) runs the product instead.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"
#include "GemmTuning.h"
#include "LtSearch.h"

#include <cuda_bf16.h>

#include <cstdio>
#include <cstring>

namespace mega::rt::gpu {

namespace {

__global__ void toBf16Kernel(const float *x, __nv_bfloat16 *y, int64_t n) {
  for (int64_t k = globalThread(); k < n; k += globalStride())
    y[k] = __float2bfloat16_rn(x[k]);
}

__global__ void toF32Kernel(const __nv_bfloat16 *x, float *y, int64_t n) {
  for (int64_t k = globalThread(); k < n; k += globalStride())
    y[k] = __bfloat162float(x[k]);
}

/// The vector casts: x and y aligned to their vector (16 and 8 bytes),
/// nv = n / 4 vectors, then the last n % 4 elements one by one.
__global__ void toBf16VecKernel(const float4 *__restrict__ x,
                                Bf16x4 *__restrict__ y, int64_t nv,
                                int64_t n) {
  for (int64_t v = globalThread(); v < nv; v += globalStride())
    put4(y + v, x[v]);
  const float *xs = reinterpret_cast<const float *>(x);
  __nv_bfloat16 *ys = reinterpret_cast<__nv_bfloat16 *>(y);
  for (int64_t k = 4 * nv + globalThread(); k < n; k += globalStride())
    ys[k] = __float2bfloat16_rn(xs[k]);
}

__global__ void toF32VecKernel(const Bf16x4 *__restrict__ x,
                               float4 *__restrict__ y, int64_t nv, int64_t n) {
  for (int64_t v = globalThread(); v < nv; v += globalStride()) {
    const Bf16x4 a = x[v];
    const float2 lo = __bfloat1622float2(a.lo), hi = __bfloat1622float2(a.hi);
    y[v] = make_float4(lo.x, lo.y, hi.x, hi.y);
  }
  const __nv_bfloat16 *xs = reinterpret_cast<const __nv_bfloat16 *>(x);
  float *ys = reinterpret_cast<float *>(y);
  for (int64_t k = 4 * nv + globalThread(); k < n; k += globalStride())
    ys[k] = __bfloat162float(xs[k]);
}

/// Largest power of two (at most 256) dividing the address.
uint32_t alignmentOf(const void *p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0)
    al >>= 1;
  return al;
}

void checkLt(cublasStatus_t s, const char *api) { checkBlas(s, api); }

cublasLtMatrixLayout_t layout(cudaDataType t, int64_t rows, int64_t cols,
                              int64_t ld, int count, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  checkLt(cublasLtMatrixLayoutCreate(&l, t, uint64_t(rows), uint64_t(cols), ld),
          "cublasLtMatrixLayoutCreate");
  if (count > 1) {
    checkLt(cublasLtMatrixLayoutSetAttribute(
                l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
            "cublasLtMatrixLayoutSetAttribute");
    checkLt(cublasLtMatrixLayoutSetAttribute(
                l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                sizeof stride),
            "cublasLtMatrixLayoutSetAttribute");
  }
  return l;
}

/// A cuBLASLt epilogue: DEFAULT (none), BIAS with a bias of D's rows (the
/// plan's columns), GELU_AUX_BIAS (D = gelu(t + bias), aux = t + bias in
/// D's type, `auxLd` apart), DGELU (D = gelu'(aux) t, aux read, no bias)
/// or BGRADA (the f32 bias gradient into `bias`); C and D of type `cd`
/// (f32, or bf16 rounded on store). cuBLASLt takes a bias only of D's type
/// (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE): `biasType` says what
/// the plan's is, and a mismatch finds no algorithm.
struct LtEpilogue {
  cublasLtEpilogue_t mode = CUBLASLT_EPILOGUE_DEFAULT;
  const void *bias = nullptr;
  cudaDataType cd = CUDA_R_32F;
  void *aux = nullptr;
  int64_t auxLd = 0;
  cudaDataType biasType = CUDA_R_32F;
};

/// Points the shared descriptor at this call's bias (and aux).
void setEpiloguePointers(cublasLtMatmulDesc_t desc, const LtEpilogue &epi) {
  if (epi.bias)
    checkLt(cublasLtMatmulDescSetAttribute(
                desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &epi.bias,
                sizeof epi.bias),
            "cublasLtMatmulDescSetAttribute");
  if (epi.aux)
    checkLt(cublasLtMatmulDescSetAttribute(
                desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &epi.aux,
                sizeof epi.aux),
            "cublasLtMatmulDescSetAttribute");
}

/// Candidates timed per GEMM with CudaOptions::gemmAutotune.
constexpr int kTuneCandidates = 16;

/// Builds `e` for one GEMM: its descriptors, and the heuristic's first
/// algorithm for them under the operands' alignment classes (e.found false
/// when there is none); with `want` > 1 also its first `want` candidates
/// (with Ctx::gemmAutotuneWide, its first kWideBestFits and the wide
/// search's, LtSearch.h).
void planLtGemm(const Ctx &ctx, LtGemmPlan &e, cublasOperation_t opB,
                cublasOperation_t opA, int64_t N, int64_t M, int64_t K,
                int64_t ldb, int64_t sB, int64_t lda, int64_t sA, int64_t ldc,
                int64_t sC, int count, uint32_t alB, uint32_t alA,
                uint32_t alC, const LtEpilogue &epi, int want) {
  checkLt(cublasLtMatmulDescCreate(&e.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
          "cublasLtMatmulDescCreate");
  if (epi.mode != CUBLASLT_EPILOGUE_DEFAULT) {
    // The bias has D's type (f32) by default; the heuristic reads the bias
    // pointer's alignment, so it is set before the question is asked (and
    // again at every call: the descriptor is shared by every call).
    checkLt(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                           &epi.mode, sizeof epi.mode),
            "cublasLtMatmulDescSetAttribute");
    setEpiloguePointers(e.desc, epi);
    if (epi.aux) {
      const int64_t ld = epi.auxLd;
      checkLt(cublasLtMatmulDescSetAttribute(
                  e.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld),
              "cublasLtMatmulDescSetAttribute");
    }
    // The bias's own type (the default would be D's).
    const int32_t biasType = epi.biasType;
    if (epi.bias)
      checkLt(cublasLtMatmulDescSetAttribute(
                  e.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType,
                  sizeof biasType),
              "cublasLtMatmulDescSetAttribute");
  }
  checkLt(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                         &opB, sizeof opB),
          "cublasLtMatmulDescSetAttribute");
  checkLt(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                         &opA, sizeof opA),
          "cublasLtMatmulDescSetAttribute");
  // Column-major view: the first operand is B (N x K after op), the second
  // A (K x M after op), the result C^T (N x M).
  const bool tb = opB == CUBLAS_OP_T, ta = opA == CUBLAS_OP_T;
  e.a = layout(CUDA_R_16BF, tb ? K : N, tb ? N : K, ldb, count, sB);
  e.b = layout(CUDA_R_16BF, ta ? M : K, ta ? K : M, lda, count, sA);
  e.c = layout(epi.cd, N, M, ldc, count, sC);
  // The preference only steers the heuristic; it is not kept.
  cublasLtMatmulPreference_t pref = nullptr;
  checkLt(cublasLtMatmulPreferenceCreate(&pref),
          "cublasLtMatmulPreferenceCreate");
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } guard{pref};
  uint64_t wsBytes = ctx.ltWorkspaceBytes;
  checkLt(cublasLtMatmulPreferenceSetAttribute(
              pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsBytes,
              sizeof wsBytes),
          "cublasLtMatmulPreferenceSetAttribute");
  checkLt(cublasLtMatmulPreferenceSetAttribute(
              pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alB,
              sizeof alB),
          "cublasLtMatmulPreferenceSetAttribute");
  checkLt(cublasLtMatmulPreferenceSetAttribute(
              pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alA,
              sizeof alA),
          "cublasLtMatmulPreferenceSetAttribute");
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    checkLt(cublasLtMatmulPreferenceSetAttribute(pref, attr, &alC, sizeof alC),
            "cublasLtMatmulPreferenceSetAttribute");
  const bool wide = want > 1 && ctx.gemmAutotuneWide;
  want = wide ? kWideBestFits : std::max(1, std::min(want, kTuneCandidates));
  std::vector<cublasLtMatmulHeuristicResult_t> results(
      static_cast<size_t>(want));
  int found = 0;
  e.found = cublasLtMatmulAlgoGetHeuristic(ctx.lt, e.desc, e.a, e.b, e.c, e.c,
                                           pref, want, results.data(),
                                           &found) == CUBLAS_STATUS_SUCCESS &&
            found > 0;
  if (!e.found)
    return;
  e.algo = results[0].algo;
  std::vector<float> waves;
  if (want > 1)
    for (int k = 0; k < found; ++k)
      if (results[size_t(k)].state == CUBLAS_STATUS_SUCCESS) {
        e.candidates.push_back(results[size_t(k)].algo);
        waves.push_back(results[size_t(k)].wavesCount);
      }
  if (wide)
    widenCandidates(ctx, e, pref, epi.cd, K, waves);
}

/// The name of a cuBLASLt epilogue mega asks for.
const char *epilogueName(cublasLtEpilogue_t mode) {
  switch (mode) {
  case CUBLASLT_EPILOGUE_BIAS:
    return "BIAS";
  case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
    return "GELU_AUX_BIAS";
  case CUBLASLT_EPILOGUE_DGELU:
    return "DGELU";
  case CUBLASLT_EPILOGUE_BGRADA:
    return "BGRADA";
  default:
    return "an epilogue";
  }
}

/// Tells once per GEMM that cuBLASLt will not run its epilogue (as cuDNN's
/// refusals are told): the result is the same, from the plain product and
/// mega's epilogue kernel, but the fusion's time is lost.
void refusedEpilogue(const LtEpilogue &epi, int64_t N, int64_t M, int64_t K,
                     const char *why) {
  std::fprintf(stderr,
               "cuda: cuBLASLt %s the %s epilogue (D %s%s) of the %lld x "
               "%lld x %lld product: the plain product and mega's epilogue "
               "kernel run instead\n",
               why, epilogueName(epi.mode),
               epi.cd == CUDA_R_16BF ? "bf16" : "f32",
               !epi.bias || epi.mode == CUBLASLT_EPILOGUE_BGRADA
                   ? ""
                   : epi.biasType == CUDA_R_16BF ? ", bias bf16"
                                                  : ", bias f32",
               (long long)M, (long long)N, (long long)K);
}

/// mega-run --gemm-autotune: times `e`'s candidates on this very call and
/// makes the one chooseCandidate (GemmTuning.h) picks `e.algo`. Repeating
/// the call must change nothing it reads: `D` is the call's own D when C is
/// not D or is not read (beta 0), else scratch of D's layout (ltGemm);
/// every output is write-only then (the plan's check keeps D off A, B, the
/// bias and aux). A candidate the call refuses is skipped. Tells the choice
/// on stderr when it is not the heuristic's first. Returns the chosen
/// algorithm's time in microseconds, or -1 when no candidate ran.
double tuneLtGemm(const Ctx &ctx, LtGemmPlan &e, const float *alpha,
                  const void *B, const void *A, const float *beta,
                  const void *C, void *D, int64_t N, int64_t M, int64_t K,
                  const LtEpilogue &epi) {
  cudaEvent_t t0 = nullptr, t1 = nullptr;
  checkCuda(cudaEventCreate(&t0), "cudaEventCreate");
  checkCuda(cudaEventCreate(&t1), "cudaEventCreate");
  struct EventGuard {
    cudaEvent_t a, b;
    ~EventGuard() {
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
  } guard{t0, t1};
  auto launch = [&](size_t k) {
    return cublasLtMatmul(ctx.lt, e.desc, alpha, B, e.a, A, e.b, beta, C, e.c,
                          D, e.c, &e.candidates[k], ctx.ltWorkspace,
                          ctx.ltWorkspaceBytes, ctx.stream);
  };
  TuneClock clock;
  clock.warm = [&](size_t k) { return launch(k) == CUBLAS_STATUS_SUCCESS; };
  clock.time = [&](size_t k, int reps) {
    checkCuda(cudaEventRecord(t0, ctx.stream), "cudaEventRecord");
    for (int r = 0; r < reps; ++r)
      checkLt(launch(k), "cublasLtMatmul (autotune)");
    checkCuda(cudaEventRecord(t1, ctx.stream), "cudaEventRecord");
    checkCuda(cudaEventSynchronize(t1), "cudaEventSynchronize");
    float ms = 0.0f;
    checkCuda(cudaEventElapsedTime(&ms, t0, t1), "cudaEventElapsedTime");
    return double(ms) / reps;
  };
  const TuneResult r = chooseCandidate(e.candidates.size(), clock);
  if (r.chosen < 0)
    return -1.0;
  e.algo = e.candidates[size_t(r.chosen)];
  if (r.chosen != 0)
    std::fprintf(stderr,
                 "cuda: autotune: the %lld x %lld x %lld product (%s) takes "
                 "candidate %ld of %zu: %.1f us, the heuristic's first "
                 "%.1f us (%s)\n",
                 (long long)M, (long long)N, (long long)K,
                 epi.mode == CUBLASLT_EPILOGUE_DEFAULT ? "no epilogue"
                                                       : epilogueName(epi.mode),
                 r.chosen + 1, e.candidates.size(), 1e3 * r.ms,
                 r.firstMs < 0 ? -1.0 : 1e3 * r.firstMs,
                 describeAlgo(e.algo).c_str());
  return 1e3 * r.ms;
}

/// A kept choice (mega-run --gemm-autotune-file) as `e`'s algorithm when
/// cuBLASLt still takes it for these descriptors within the workspace;
/// false (said on stderr: timed again when `retune`) when it does not.
bool applyChoice(const Ctx &ctx, LtGemmPlan &e, const GemmChoice &choice,
                 int64_t N, int64_t M, int64_t K, bool retune) {
  static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(choice.algo),
                "cublasLtMatmulAlgo_t is 8 words");
  cublasLtMatmulAlgo_t algo;
  std::memcpy(&algo, choice.algo.data(), sizeof algo);
  cublasLtMatmulHeuristicResult_t result{};
  if (cublasLtMatmulAlgoCheck(ctx.lt, e.desc, e.a, e.b, e.c, e.c, &algo,
                              &result) == CUBLAS_STATUS_SUCCESS &&
      result.workspaceSize <= ctx.ltWorkspaceBytes) {
    e.algo = algo;
    return true;
  }
  std::fprintf(stderr,
               "cuda: autotune: the kept algorithm of the %lld x %lld x %lld "
               "product no longer applies: %s\n",
               (long long)M, (long long)N, (long long)K,
               retune ? "timing it again" : "the heuristic's first");
  return false;
}

/// One cuBLASLt call of up to 65535 batch items; false when no algorithm
/// fits (the caller falls back to cublasGemmStridedBatchedEx). The
/// descriptors and the algorithm are made at the first call of each
/// distinct GEMM (shape, strides, transposes, batch, alignment classes) and
/// reused after: the heuristic sees the same question and so gives the same
/// answer as when it was asked every call, without its host cost per call.
/// D = alpha op(A) op(B) + beta C (C and D of one layout and type, f32
/// unless the epilogue says bf16; C may be D), then the epilogue's bias per
/// row of the column-major D (a column of the plan's row-major D).
/// An epilogue call cuBLASLt refuses at launch (a type combination its
/// heuristic offered but the call does not take) is remembered as having
/// no algorithm and answered false, like one the heuristic refused: the
/// caller's plain path then runs.
bool ltGemm(const Ctx &ctx, cublasOperation_t opB, cublasOperation_t opA,
            int64_t N, int64_t M, int64_t K, const float *alpha,
            const void *B, int64_t ldb, int64_t sB, const void *A, int64_t lda,
            int64_t sA, const float *beta, const void *C, void *D,
            int64_t ldc, int64_t sC, int count, const LtEpilogue &epi = {}) {
  const uint32_t alB = alignmentOf(B), alA = alignmentOf(A),
                 alC = std::min(alignmentOf(C), alignmentOf(D));
  const bool withEpi = epi.mode != CUBLASLT_EPILOGUE_DEFAULT;
  const LtGemmKey key = {int64_t(opB), int64_t(opA), N,   M,   K,
                         ldb,          sB,           lda, sA,  ldc,
                         sC,           count,        alB, alA, alC,
                         int64_t(epi.mode) | int64_t(epi.cd) << 32 |
                             int64_t(epi.biasType) << 40,
                         withEpi ? int64_t(epi.bias ? alignmentOf(epi.bias) : 0) |
                                       (epi.aux ? int64_t(alignmentOf(epi.aux))
                                                      << 32
                                                : 0)
                                 : 0};
  const LtGemmPlan *e = ctx.ltPlans->find(key);
  if (!e) {
    // Kept only once whole: a failure part way leaves no half-made entry.
    auto fresh = std::make_unique<LtGemmPlan>();
    // Tuned where the call is not being captured into a graph (a capture
    // runs nothing). A call that reads D as C (beta != 0) is timed into
    // scratch (tuneLtGemm), except BGRADA's: its sums may already be
    // scratch that growing the workspace would move.
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    checkCuda(cudaStreamIsCapturing(ctx.stream, &capturing),
              "cudaStreamIsCapturing");
    const bool readsD = *beta != 0.0f && C == D;
    // A choice kept from an earlier run is used untimed.
    const GemmChoice *kept = nullptr;
    if (ctx.gemmChoices) {
      auto it = ctx.gemmChoices->byKey.find(key);
      kept = it == ctx.gemmChoices->byKey.end() ? nullptr : &it->second;
    }
    const bool tune = ctx.gemmAutotune &&
                      capturing == cudaStreamCaptureStatusNone &&
                      !(readsD && epi.mode == CUBLASLT_EPILOGUE_BGRADA);
    planLtGemm(ctx, *fresh, opB, opA, N, M, K, ldb, sB, lda, sA, ldc, sC,
               count, alB, alA, alC, epi, tune && !kept ? kTuneCandidates : 1);
    if (!fresh->found && withEpi)
      refusedEpilogue(epi, N, M, K, "has no algorithm for");
    if (fresh->found && kept &&
        !applyChoice(ctx, *fresh, *kept, N, M, K, tune) && tune) {
      fresh = std::make_unique<LtGemmPlan>(); // asked again for candidates
      planLtGemm(ctx, *fresh, opB, opA, N, M, K, ldb, sB, lda, sA, ldc, sC,
                 count, alB, alA, alC, epi, kTuneCandidates);
    }
    // A test's pick (CudaOptions::gemmCandidate): candidate k alone goes
    // through the timing, which drops it, as it drops any candidate, when
    // its launch is refused (the heuristic's first then stays); not kept.
    const bool pick = ctx.gemmCandidate >= 0;
    if (fresh->found && tune && pick) {
      const size_t k = size_t(ctx.gemmCandidate);
      std::vector<cublasLtMatmulAlgo_t> one;
      if (k < fresh->candidates.size())
        one.push_back(fresh->candidates[k]);
      fresh->candidates = std::move(one);
    }
    if (fresh->found && tune && fresh->candidates.size() > (pick ? 0 : 1)) {
      if (withEpi)
        setEpiloguePointers(fresh->desc, epi);
      void *tuneD = D;
      if (readsD) {
        const size_t elems = size_t(count - 1) * size_t(sC) +
                             size_t(M - 1) * size_t(ldc) + size_t(N);
        tuneD = ctx.ws->get(elems * (epi.cd == CUDA_R_16BF ? 2 : 4));
      }
      const double us =
          tuneLtGemm(ctx, *fresh, alpha, B, A, beta, C, tuneD, N, M, K, epi);
      if (us >= 0 && ctx.gemmChoices && !pick) {
        GemmChoice &g = ctx.gemmChoices->byKey[key];
        std::memcpy(g.algo.data(), &fresh->algo, sizeof g.algo);
        g.us = us;
        if (ctx.saveGemmChoices && *ctx.saveGemmChoices)
          (*ctx.saveGemmChoices)(*ctx.gemmChoices);
      }
    }
    e = &ctx.ltPlans->add(key, std::move(fresh));
  }
  if (!e->found)
    return false;
  if (!withEpi) {
    checkLt(cublasLtMatmul(ctx.lt, e->desc, alpha, B, e->a, A, e->b, beta, C,
                           e->c, D, e->c, &e->algo, ctx.ltWorkspace,
                           ctx.ltWorkspaceBytes, ctx.stream),
            "cublasLtMatmul");
    return true;
  }
  setEpiloguePointers(e->desc, epi);
  const cublasStatus_t st = cublasLtMatmul(
      ctx.lt, e->desc, alpha, B, e->a, A, e->b, beta, C, e->c, D, e->c,
      &e->algo, ctx.ltWorkspace, ctx.ltWorkspaceBytes, ctx.stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    refusedEpilogue(epi, N, M, K, "refused");
    ctx.ltPlans->add(key, std::make_unique<LtGemmPlan>()); // found = false
    return false;
  }
  checkLt(st, "cublasLtMatmul (epilogue)");
  return true;
}

constexpr int64_t kMaxBatch = 65535;

} // namespace

LtGemmPlan::~LtGemmPlan() {
  if (c)
    cublasLtMatrixLayoutDestroy(c);
  if (b)
    cublasLtMatrixLayoutDestroy(b);
  if (a)
    cublasLtMatrixLayoutDestroy(a);
  if (desc)
    cublasLtMatmulDescDestroy(desc);
}

const LtGemmPlan *LtPlans::find(const LtGemmKey &key) const {
  auto it = plans_.find(key);
  return it == plans_.end() ? nullptr : it->second.get();
}

const LtGemmPlan &LtPlans::add(const LtGemmKey &key,
                               std::unique_ptr<LtGemmPlan> plan) {
  std::unique_ptr<LtGemmPlan> &slot = plans_[key];
  slot = std::move(plan);
  return *slot;
}

void runCast(const Ctx &ctx, const Instr &in, const Refs &ins,
             const Refs &outs) {
  const int64_t n = in.i[0];
  if (n == 0)
    return;
  const DType from = ins[0].value->dtype, to = outs[0].value->dtype;
  if (from == to) {
    checkCuda(cudaMemcpyAsync(outs[0].data, ins[0].data,
                              size_t(n) * plan::dtypeSize(to),
                              cudaMemcpyDeviceToDevice, ctx.stream),
              "cudaMemcpyAsync (Cast)");
    return;
  }
  // Four elements per thread where both ends are aligned to their vector
  // (views may start anywhere: the element loop then).
  const bool vec = aligned(ins[0].data, from == DType::F32 ? 16 : 8) &&
                   aligned(outs[0].data, to == DType::F32 ? 16 : 8);
  const int64_t nv = n / 4;
  if (from == DType::F32 && vec)
    toBf16VecKernel<<<gridFor(ctx, std::max<int64_t>(nv, 1), 256), 256, 0,
                      ctx.stream>>>(static_cast<const float4 *>(ins[0].data),
                                    static_cast<Bf16x4 *>(outs[0].data), nv, n);
  else if (from == DType::F32)
    toBf16Kernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
        ins[0].f32(), static_cast<__nv_bfloat16 *>(outs[0].data), n);
  else if (vec)
    toF32VecKernel<<<gridFor(ctx, std::max<int64_t>(nv, 1), 256), 256, 0,
                     ctx.stream>>>(static_cast<const Bf16x4 *>(ins[0].data),
                                   static_cast<float4 *>(outs[0].data), nv, n);
  else
    toF32Kernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
        static_cast<const __nv_bfloat16 *>(ins[0].data), outs[0].f32(), n);
  checkLaunch("Cast");
}

void runMatMulBf16(const Ctx &ctx, const Instr &in, const Refs &ins,
                   const Refs &outs) {
  const auto &i = in.i;
  const int64_t batch = i[0], M = i[1], N = i[2], K = i[3];
  const bool ta = i[4] != 0, tb = i[5] != 0;
  const int64_t lda = i[6], ldb = i[7], ldc = i[8];
  const int64_t sA = i[9], sB = i[10], sC = i[11];
  const float alpha = in.f[0], beta = in.f[1];
  const auto *A = static_cast<const __nv_bfloat16 *>(ins[0].data);
  const auto *B = static_cast<const __nv_bfloat16 *>(ins[1].data);
  // C f32, or bf16 (a folded cast; check(): beta 0, so C is only written):
  // fp32 sums either way, rounded to nearest even on store for bf16.
  const bool cBf16 = outs[0].value->dtype == DType::BF16;
  const cudaDataType cType = cBf16 ? CUDA_R_16BF : CUDA_R_32F;
  const size_t cSize = cBf16 ? 2 : 4;
  char *C = static_cast<char *>(outs[0].data);
  LtEpilogue plain;
  plain.cd = cType;
  const cublasOperation_t opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxBatch) {
    const int count = int(std::min(kMaxBatch, batch - b0));
    const void *Bp = B + b0 * sB, *Ap = A + b0 * sA;
    void *Cp = C + size_t(b0 * sC) * cSize;
    if (ltGemm(ctx, opB, opA, N, M, K, &alpha, Bp, ldb, sB, Ap, lda, sA, &beta,
               Cp, Cp, ldc, sC, count, plain))
      continue;
    checkBlas(cublasGemmStridedBatchedEx(
                  ctx.blas, opB, opA, int(N), int(M), int(K), &alpha, Bp,
                  CUDA_R_16BF, int(ldb), (long long)sB, Ap, CUDA_R_16BF,
                  int(lda), (long long)sA, &beta, Cp, cType, int(ldc),
                  (long long)sC, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmStridedBatchedEx (bf16)");
  }
}

namespace {

/// The whole epilogue after a plain product t [M, N] (docs/plan-format.md):
/// x = (t + bias[j]) (+ R), in that order, in f32 (the bias f32, or bf16 in
/// biasH, widened; R f32, or bf16 in Rh, widened); GELU: aux = x (f32 in auxF, or rounded in auxH) and D =
/// gelu(x) of the unrounded x; else D = x; D f32 (Df) or bf16 (Dh). t may
/// be auxF or D (each element is read before it is written, by the same
/// thread) and R may be D, so none of these is __restrict__.
__global__ void epilogueKernel(const float *t, const float *__restrict__ bias,
                               const __nv_bfloat16 *__restrict__ biasH,
                               const float *R, const __nv_bfloat16 *Rh,
                               float *auxF,
                               __nv_bfloat16 *auxH, float *Df,
                               __nv_bfloat16 *Dh, int64_t M, int64_t N,
                               bool withGelu) {
  const int64_t n = M * N;
  for (int64_t e = globalThread(); e < n; e += globalStride()) {
    const int64_t j = e % N;
    float x = t[e] + (bias ? bias[j] : __bfloat162float(biasH[j]));
    if (R)
      x = x + R[e];
    else if (Rh)
      x = x + __bfloat162float(Rh[e]);
    float y = x;
    if (withGelu) {
      if (auxH)
        auxH[e] = __float2bfloat16_rn(x);
      else
        auxF[e] = x;
      y = gelu(x);
    }
    if (Dh)
      Dh[e] = __float2bfloat16_rn(y);
    else
      Df[e] = y;
  }
}

/// Epilogue 4: D = gelu'(aux) t (EwOp::GeluGrad(aux, t)), aux f32 (auxF)
/// or bf16 (auxH, widened), D f32 (Df) or bf16 (Dh). t may be Df.
__global__ void geluGradEpilogueKernel(const float *t,
                                       const float *__restrict__ auxF,
                                       const __nv_bfloat16 *__restrict__ auxH,
                                       float *Df, __nv_bfloat16 *Dh,
                                       int64_t n) {
  for (int64_t e = globalThread(); e < n; e += globalStride()) {
    const float x = auxH ? __bfloat162float(auxH[e]) : auxF[e];
    const float y = geluGrad(x, t[e]);
    if (Dh)
      Dh[e] = __float2bfloat16_rn(y);
    else
      Df[e] = y;
  }
}

/// D = gelu(aux) after cuBLASLt wrote aux = t + bias.
__global__ void geluKernel(const float *__restrict__ aux,
                           float *__restrict__ Df, __nv_bfloat16 *__restrict__ Dh,
                           int64_t n) {
  for (int64_t e = globalThread(); e < n; e += globalStride()) {
    const float y = gelu(aux[e]);
    if (Dh)
      Dh[e] = __float2bfloat16_rn(y);
    else
      Df[e] = y;
  }
}

/// geluKernel four elements at a time: aux 16-byte aligned, D aligned to its
/// vector (16 bytes f32, 8 bytes bf16); nv = n / 4 vectors, then the last
/// n % 4 elements one by one.
__global__ void geluVecKernel(const float4 *__restrict__ aux,
                              float4 *__restrict__ Df, Bf16x4 *__restrict__ Dh,
                              int64_t nv, int64_t n) {
  for (int64_t v = globalThread(); v < nv; v += globalStride()) {
    const float4 a = aux[v];
    const float4 y =
        make_float4(gelu(a.x), gelu(a.y), gelu(a.z), gelu(a.w));
    if (Dh)
      put4(Dh + v, y);
    else
      Df[v] = y;
  }
  const float *as = reinterpret_cast<const float *>(aux);
  for (int64_t k = 4 * nv + globalThread(); k < n; k += globalStride()) {
    const float y = gelu(as[k]);
    if (Dh)
      reinterpret_cast<__nv_bfloat16 *>(Dh)[k] = __float2bfloat16_rn(y);
    else
      reinterpret_cast<float *>(Df)[k] = y;
  }
}

/// D = gelu(aux), vector loads and stores where the pointers allow.
void launchGelu(const Ctx &ctx, const float *aux, float *Df,
                __nv_bfloat16 *Dh, int64_t n) {
  const bool vec =
      aligned(aux, 16) && (Dh ? aligned(Dh, 8) : aligned(Df, 16));
  const int64_t nv = n / 4;
  if (vec)
    geluVecKernel<<<gridFor(ctx, std::max<int64_t>(nv, 1), 256), 256, 0,
                    ctx.stream>>>(reinterpret_cast<const float4 *>(aux),
                                  reinterpret_cast<float4 *>(Df),
                                  reinterpret_cast<Bf16x4 *>(Dh), nv, n);
  else
    geluKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(aux, Df, Dh, n);
  checkLaunch("MatMul (GELU epilogue)");
}

} // namespace

namespace {

/// t = op(A) op(B) [M, N] in f32, the product an epilogue kernel then
/// finishes: zeros when K = 0, cuBLASLt for bf16 operands, cuBLAS otherwise
/// (fp32 as MatMul.cu, no TF32; bf16 without a cuBLASLt algorithm).
void plainProduct(const Ctx &ctx, const Instr &in, const Refs &ins, float *t,
                  const char *what) {
  const auto &i = in.i;
  const int64_t M = i[1], N = i[2], K = i[3];
  const cublasOperation_t opB = i[5] ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = i[4] ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t lda = i[6], ldb = i[7];
  const bool bf16 = ins[0].value->dtype == DType::BF16;
  const float one = 1.0f, zero = 0.0f;
  if (K == 0) {
    checkCuda(cudaMemsetAsync(t, 0, size_t(M * N) * 4, ctx.stream),
              "cudaMemsetAsync (MatMul)");
  } else if (!bf16 || !ltGemm(ctx, opB, opA, N, M, K, &one, ins[1].data, ldb,
                              0, ins[0].data, lda, 0, &zero, t, t, N, 0, 1)) {
    const cudaDataType ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    checkBlas(cublasGemmStridedBatchedEx(
                  ctx.blas, opB, opA, int(N), int(M), int(K), &one,
                  ins[1].data, ab, int(ldb), 0, ins[0].data, ab, int(lda), 0,
                  &zero, t, CUDA_R_32F, int(N), 0, 1, CUBLAS_COMPUTE_32F,
                  CUBLAS_GEMM_DEFAULT),
              what);
  }
}

/// Epilogue 4, the GELU gradient at the pre-activation ins[2]: with bf16
/// operands, D and aux, cuBLASLt's DGELU epilogue (its tanh GELU's
/// derivative: the plan's formula, its own rounding); otherwise the plain
/// product and geluGradEpilogueKernel.
void geluGradEpilogue(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const auto &i = in.i;
  const int64_t M = i[1], N = i[2], K = i[3], n = M * N;
  const bool ta = i[4] != 0, tb = i[5] != 0;
  const int64_t lda = i[6], ldb = i[7];
  const cublasOperation_t opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const bool bf16 = ins[0].value->dtype == DType::BF16;
  const bool auxBf16 = ins[2].value->dtype == DType::BF16;
  const bool dBf16 = outs[0].value->dtype == DType::BF16;
  auto *auxH = auxBf16 ? static_cast<__nv_bfloat16 *>(ins[2].data) : nullptr;
  const float *auxF = auxBf16 ? nullptr : ins[2].f32();
  float *Df = dBf16 ? nullptr : outs[0].f32();
  auto *Dh = dBf16 ? static_cast<__nv_bfloat16 *>(outs[0].data) : nullptr;
  const float one = 1.0f, zero = 0.0f;
  if (bf16 && auxH && Dh && K > 0 && aligned(auxH, 16) && N % 8 == 0 &&
      ltGemm(ctx, opB, opA, N, M, K, &one, ins[1].data, ldb, 0, ins[0].data,
             lda, 0, &zero, Dh, Dh, N, 0, 1,
             LtEpilogue{CUBLASLT_EPILOGUE_DGELU, nullptr, CUDA_R_16BF, auxH,
                        N}))
    return;
  float *t = Df ? Df : static_cast<float *>(ctx.ws->get(size_t(n) * 4));
  plainProduct(ctx, in, ins, t, "cublasGemmStridedBatchedEx (GELU gradient)");
  geluGradEpilogueKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
      t, auxF, auxH, Df, Dh, n);
  checkLaunch("MatMul (GELU gradient epilogue)");
}

} // namespace

// Epilogue (i[12]: 1 bias, 2 bias + residual, 3 bias + GELU; check() has
// proved batch 1, alpha 1, beta 0, ldc = N and the operands' sizes).
// bf16 A and B: cuBLASLt's BIAS epilogue computes t + bias in the GEMM's
// own epilogue, with the residual as C (beta 1), straight into D (f32, or
// bf16 without a residual or with a bf16 one), or for GELU with an f32 aux
// into aux, which one
// more pass turns into D. GELU with D and aux both bf16 (what megac emits
// in bf16 plans) is cuBLASLt's GELU_AUX_BIAS: D = gelu(t + bias) and aux =
// t + bias, both rounded from the f32 value, in the GEMM itself (its tanh
// GELU is the plan's formula, its own rounding of it: within the twins'
// bf16 tolerance). Otherwise (fp32 operands, D and the residual of
// different types, a misaligned bias or aux, no algorithm, K = 0) the
// plain product goes to
// an f32 aux, to D or to scratch, and one kernel applies the epilogue.
namespace {

__global__ void addInto(float *__restrict__ y, const float *__restrict__ x,
                        int64_t n) {
  for (int64_t k = globalThread(); k < n; k += globalStride())
    y[k] += x[k];
}

/// Epilogue 5, the weight gradient's product with its bias gradient g[n]
/// (+)= sum over k of B[k, n]: with bf16 A and B, cuBLASLt's BGRADA (the
/// first operand of its column-major view is the plan's B, summed over k)
/// writes the sums into g, or into scratch that one small kernel adds into
/// g when accumulating (cuBLASLt only overwrites). Its f32 sums are in
/// cuBLASLt's order, not ReduceSum's (the twin check's bf16 tolerance).
/// Otherwise (f32 operands, no algorithm, a misaligned g) the plain product
/// and the ReduceSum kernel, the two kernels this replaces.
void biasGradEpilogue(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const auto &i = in.i;
  const int64_t M = i[1], N = i[2], K = i[3];
  const bool ta = i[4] != 0, acc = i[13] != 0;
  const int64_t lda = i[6], ldb = i[7], ldc = i[8];
  const float alpha = in.f[0], beta = in.f[1];
  float *g = outs[1].f32();
  if (ins[0].value->dtype == DType::BF16 && M > 0 && N > 0 && K > 0 &&
      alpha == 1.0f) {
    float *sums =
        acc ? static_cast<float *>(ctx.ws->get(size_t(N) * 4)) : g;
    float *C = outs[0].f32();
    if (aligned(sums, 16) &&
        ltGemm(ctx, CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
               &alpha, ins[1].data, ldb, 0, ins[0].data, lda, 0, &beta, C, C,
               ldc, 0, 1,
               LtEpilogue{CUBLASLT_EPILOGUE_BGRADA, sums, CUDA_R_32F})) {
      if (acc) {
        addInto<<<gridFor(ctx, N, 256), 256, 0, ctx.stream>>>(g, sums, N);
        checkLaunch("MatMul (bias gradient)");
      }
      return;
    }
  }
  Instr product = in;
  product.i.resize(12);
  runMatMul(ctx, product, ins, {outs[0]});
  Instr sum;
  sum.op = Op::ReduceSum;
  sum.i = {K, N, acc ? 1 : 0};
  runReduceSum(ctx, sum, {ins[1]}, {outs[1]});
}

} // namespace

void runMatMulEpilogue(const Ctx &ctx, const Instr &in, const Refs &ins,
                       const Refs &outs) {
  const auto &i = in.i;
  const int64_t M = i[1], N = i[2], K = i[3];
  const bool ta = i[4] != 0, tb = i[5] != 0;
  const int64_t lda = i[6], ldb = i[7];
  const int64_t epi = i[12];
  if (epi == 5)
    return biasGradEpilogue(ctx, in, ins, outs);
  if (M == 0 || N == 0)
    return;
  if (epi == 4)
    return geluGradEpilogue(ctx, in, ins, outs);
  // The bias: f32, or bf16 (mega-bf16-bias: the sum is stored in bf16).
  const bool biasBf16 = ins[2].value->dtype == DType::BF16;
  const void *bias = ins[2].data;
  const cudaDataType biasType = biasBf16 ? CUDA_R_16BF : CUDA_R_32F;
  // The residual: f32 (R), or bf16 (Rh: the stream stored in bf16).
  const bool rBf16 = epi == 2 && ins[3].value->dtype == DType::BF16;
  const float *R = epi == 2 && !rBf16 ? ins[3].f32() : nullptr;
  const auto *Rh =
      rBf16 ? static_cast<const __nv_bfloat16 *>(ins[3].data) : nullptr;
  const bool auxBf16 = epi == 3 && outs[1].value->dtype == DType::BF16;
  float *aux = epi == 3 && !auxBf16 ? outs[1].f32() : nullptr;
  auto *auxH = auxBf16 ? static_cast<__nv_bfloat16 *>(outs[1].data) : nullptr;
  const bool dBf16 = outs[0].value->dtype == DType::BF16;
  float *Df = dBf16 ? nullptr : outs[0].f32();
  auto *Dh = dBf16 ? static_cast<__nv_bfloat16 *>(outs[0].data) : nullptr;
  const bool bf16 = ins[0].value->dtype == DType::BF16;
  const cublasOperation_t opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const float one = 1.0f, zero = 0.0f;
  const int64_t n = M * N;
  // GELU, D and aux bf16: all in cuBLASLt (aux rows 16-byte aligned).
  if (auxH && Dh && bf16 && K > 0 && aligned(bias, 16) && aligned(auxH, 16) &&
      N % 8 == 0 &&
      ltGemm(ctx, opB, opA, N, M, K, &one, ins[1].data, ldb, 0, ins[0].data,
             lda, 0, &zero, Dh, Dh, N, 0, 1,
             LtEpilogue{CUBLASLT_EPILOGUE_GELU_AUX_BIAS, bias, CUDA_R_16BF,
                        auxH, N, biasType}))
    return;
  // cuBLASLt's epilogue (a 16-byte aligned bias): into an f32 aux (GELU),
  // into D with the residual of D's type as C (beta 1), or into D without
  // a residual (C is D, beta 0). C and D share a type: an f32 residual
  // cannot be the C of a bf16 D, nor a bf16 one of an f32 D.
  const void *resid = R ? static_cast<const void *>(R) : Rh;
  void *ltOut = epi == 3               ? static_cast<void *>(aux)
                : Df && !Rh            ? static_cast<void *>(Df)
                : Dh && (epi == 1 || Rh) ? static_cast<void *>(Dh)
                                         : nullptr;
  const cudaDataType cd = epi != 3 && Dh ? CUDA_R_16BF : CUDA_R_32F;
  if (bf16 && K > 0 && ltOut && !auxH && aligned(bias, 16) &&
      ltGemm(ctx, opB, opA, N, M, K, &one, ins[1].data, ldb, 0, ins[0].data,
             lda, 0, resid ? &one : &zero, resid ? resid : ltOut, ltOut, N, 0,
             1, LtEpilogue{CUBLASLT_EPILOGUE_BIAS, bias, cd, nullptr, 0,
                           biasType})) {
    if (epi == 3)
      launchGelu(ctx, aux, Df, Dh, n);
    return;
  }
  // The product where the epilogue can finish in place: aux, an f32 D that
  // is not the residual still to be read, or scratch.
  float *t = aux ? aux
             : (Df && static_cast<const void *>(Df) != R)
                 ? Df
                 : static_cast<float *>(ctx.ws->get(size_t(n) * 4));
  plainProduct(ctx, in, ins, t, "cublasGemmStridedBatchedEx (epilogue)");
  epilogueKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
      t, biasBf16 ? nullptr : static_cast<const float *>(bias),
      biasBf16 ? static_cast<const __nv_bfloat16 *>(bias) : nullptr, R, Rh,
      aux, auxH, Df, Dh, M, N, epi == 3);
  checkLaunch("MatMul (epilogue)");
}

} // namespace mega::rt::gpu

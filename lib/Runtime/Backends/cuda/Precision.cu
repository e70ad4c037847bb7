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

#include <cuda_bf16.h>

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

/// Four bf16 in one 8-byte store.
struct alignas(8) Bf16x4 {
  __nv_bfloat162 lo, hi;
};

/// The vector casts: x and y aligned to their vector (16 and 8 bytes),
/// nv = n / 4 vectors, then the last n % 4 elements one by one.
__global__ void toBf16VecKernel(const float4 *__restrict__ x,
                                Bf16x4 *__restrict__ y, int64_t nv,
                                int64_t n) {
  for (int64_t v = globalThread(); v < nv; v += globalStride()) {
    const float4 a = x[v];
    y[v] = Bf16x4{__floats2bfloat162_rn(a.x, a.y),
                  __floats2bfloat162_rn(a.z, a.w)};
  }
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

bool aligned(const void *p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
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

/// Builds `e` for one GEMM: its descriptors, and the heuristic's first
/// algorithm for them under the operands' alignment classes (e.found false
/// when there is none).
void planLtGemm(const Ctx &ctx, LtGemmPlan &e, cublasOperation_t opB,
                cublasOperation_t opA, int64_t N, int64_t M, int64_t K,
                int64_t ldb, int64_t sB, int64_t lda, int64_t sA, int64_t ldc,
                int64_t sC, int count, uint32_t alB, uint32_t alA,
                uint32_t alC) {
  checkLt(cublasLtMatmulDescCreate(&e.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
          "cublasLtMatmulDescCreate");
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
  e.c = layout(CUDA_R_32F, N, M, ldc, count, sC);
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
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  e.found = cublasLtMatmulAlgoGetHeuristic(ctx.lt, e.desc, e.a, e.b, e.c, e.c,
                                           pref, 1, &result,
                                           &found) == CUBLAS_STATUS_SUCCESS &&
            found > 0;
  if (e.found)
    e.algo = result.algo;
}

/// One cuBLASLt call of up to 65535 batch items; false when no algorithm
/// fits (the caller falls back to cublasGemmStridedBatchedEx). The
/// descriptors and the algorithm are made at the first call of each
/// distinct GEMM (shape, strides, transposes, batch, alignment classes) and
/// reused after: the heuristic sees the same question and so gives the same
/// answer as when it was asked every call, without its host cost per call.
bool ltGemm(const Ctx &ctx, cublasOperation_t opB, cublasOperation_t opA,
            int64_t N, int64_t M, int64_t K, const float *alpha,
            const void *B, int64_t ldb, int64_t sB, const void *A, int64_t lda,
            int64_t sA, const float *beta, float *C, int64_t ldc, int64_t sC,
            int count) {
  const uint32_t alB = alignmentOf(B), alA = alignmentOf(A),
                 alC = alignmentOf(C);
  const LtGemmKey key = {int64_t(opB), int64_t(opA), N,   M,   K,
                         ldb,          sB,           lda, sA,  ldc,
                         sC,           count,        alB, alA, alC};
  const LtGemmPlan *e = ctx.ltPlans->find(key);
  if (!e) {
    // Kept only once whole: a failure part way leaves no half-made entry.
    auto fresh = std::make_unique<LtGemmPlan>();
    planLtGemm(ctx, *fresh, opB, opA, N, M, K, ldb, sB, lda, sA, ldc, sC,
               count, alB, alA, alC);
    e = &ctx.ltPlans->add(key, std::move(fresh));
  }
  if (!e->found)
    return false;
  checkLt(cublasLtMatmul(ctx.lt, e->desc, alpha, B, e->a, A, e->b, beta, C,
                         e->c, C, e->c, &e->algo, ctx.ltWorkspace,
                         ctx.ltWorkspaceBytes, ctx.stream),
          "cublasLtMatmul");
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
  float *C = outs[0].f32();
  const cublasOperation_t opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxBatch) {
    const int count = int(std::min(kMaxBatch, batch - b0));
    const void *Bp = B + b0 * sB, *Ap = A + b0 * sA;
    float *Cp = C + b0 * sC;
    if (ltGemm(ctx, opB, opA, N, M, K, &alpha, Bp, ldb, sB, Ap, lda, sA, &beta,
               Cp, ldc, sC, count))
      continue;
    checkBlas(cublasGemmStridedBatchedEx(
                  ctx.blas, opB, opA, int(N), int(M), int(K), &alpha, Bp,
                  CUDA_R_16BF, int(ldb), (long long)sB, Ap, CUDA_R_16BF,
                  int(lda), (long long)sA, &beta, Cp, CUDA_R_32F, int(ldc),
                  (long long)sC, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmStridedBatchedEx (bf16)");
  }
}

} // namespace mega::rt::gpu

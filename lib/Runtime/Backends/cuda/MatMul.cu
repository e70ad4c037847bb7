//===- MatMul.cu - Batched, strided GEMM on cuBLAS ------------------------===//
//
// The plan's matrices are row-major; cuBLAS's are column-major. A row-major
// M x N matrix with leading dim ld is, read column-major, its N x M
// transpose with the same ld, so C = op(A) op(B) becomes the column-major
// C^T = op(B)^T op(A)^T: swap the operands (and M with N), keep the
// transpose flags. check() has already proved every ld and stride legal for
// BLAS and every batch item inside its buffer.
//
// fp32 operands: fp32 throughout (CUBLAS_COMPUTE_32F, default math mode: no
// TF32), so the results agree with the CPU's OpenBLAS to float rounding of
// the sums. bf16 operands go to cuBLASLt (Precision.cu), and so does every
// MatMul with an epilogue.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

namespace mega::rt::gpu {

namespace {

/// C = beta * C over `batch` M x N matrices (alpha == 0 or K == 0: A and B
/// are not read, and beta == 0 writes zeros without reading C, as BLAS).
__global__ void scaleKernel(float *C, int64_t batch, int64_t M, int64_t N,
                            int64_t ldc, int64_t sC, float beta) {
  const int64_t n = batch * M * N;
  for (int64_t e = globalThread(); e < n; e += globalStride()) {
    const int64_t j = e % N, rm = e / N, m = rm % M, b = rm / M;
    float *c = C + b * sC + m * ldc + j;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

// cuBLAS takes an int batch count; stay well inside it (and inside the
// grid limits of older cuBLAS releases).
constexpr int64_t kMaxBatch = 65535;

} // namespace

void runMatMul(const Ctx &ctx, const Instr &in, const Refs &ins,
               const Refs &outs) {
  const auto &i = in.i;
  const int64_t batch = i[0], M = i[1], N = i[2], K = i[3];
  const bool ta = i[4] != 0, tb = i[5] != 0;
  const int64_t lda = i[6], ldb = i[7], ldc = i[8];
  const int64_t sA = i[9], sB = i[10], sC = i[11];
  const float alpha = in.f[0], beta = in.f[1];
  // The bias gradient (epilogue 5) is due even when the product is empty.
  if (i.size() > 12 && i[12] == 5)
    return runMatMulEpilogue(ctx, in, ins, outs); // Precision.cu
  if (batch == 0 || M == 0 || N == 0)
    return;
  if (i.size() > 12 && i[12] != 0)
    return runMatMulEpilogue(ctx, in, ins, outs); // Precision.cu
  float *C = outs[0].f32();
  if (alpha == 0.0f || K == 0) {
    scaleKernel<<<gridFor(ctx, batch * M * N, 256), 256, 0, ctx.stream>>>(
        C, batch, M, N, ldc, sC, beta);
    checkLaunch("MatMul (scale)");
    return;
  }
  if (ins[0].value->dtype == DType::BF16)
    return runMatMulBf16(ctx, in, ins, outs); // tensor cores (Precision.cu)
  const float *A = ins[0].f32(), *B = ins[1].f32();
  const cublasOperation_t opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxBatch) {
    const int count = int(std::min(kMaxBatch, batch - b0));
    checkBlas(cublasGemmStridedBatchedEx(
                  ctx.blas, opB, opA, int(N), int(M), int(K), &alpha,
                  B + b0 * sB, CUDA_R_32F, int(ldb), (long long)sB, A + b0 * sA,
                  CUDA_R_32F, int(lda), (long long)sA, &beta, C + b0 * sC,
                  CUDA_R_32F, int(ldc), (long long)sC, count,
                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmStridedBatchedEx");
  }
}

} // namespace mega::rt::gpu

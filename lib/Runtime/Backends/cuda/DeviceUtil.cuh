//===- DeviceUtil.cuh - Device helpers of the CUDA kernels ----------------===//
//
// Block reductions combine lanes and warps in a fixed tree, so a result
// depends on the data and the block size alone (the kernels pick block sizes
// from the problem's shape). blockDim.x must be a multiple of 32.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_DEVICEUTIL_CUH
#define MEGA_RUNTIME_BACKENDS_CUDA_DEVICEUTIL_CUH

#include "Common.h"

#include <cuda_bf16.h>

namespace mega::rt::gpu {

/// Four bf16 in one 8-byte access (the bf16 side of a float4).
struct alignas(8) Bf16x4 {
  __nv_bfloat162 lo, hi;
};

/// One element at p as a float (bf16 widens exactly).
__device__ inline float load1(const float *p) { return *p; }
__device__ inline float load1(const __nv_bfloat16 *p) {
  return __bfloat162float(*p);
}
/// Four elements at p (aligned to the vector: 16 bytes f32, 8 bf16).
__device__ inline float4 load4(const float *p) {
  return *reinterpret_cast<const float4 *>(p);
}
__device__ inline float4 load4(const __nv_bfloat16 *p) {
  const Bf16x4 v = *reinterpret_cast<const Bf16x4 *>(p);
  const float2 a = __bfloat1622float2(v.lo), b = __bfloat1622float2(v.hi);
  return make_float4(a.x, a.y, b.x, b.y);
}
/// The tanh GELU as the plan defines it (the CPU's Elementwise, vgelu and
/// vgeluGrad in cpu/MathApprox.h): gelu(x) = x / (1 + e^{-2u}), u =
/// sqrt(2/pi) (x + 0.044715 x^3), and its gradient times dy. Shared by the
/// Elementwise interpreter and the MatMul epilogues.
constexpr float kGeluBeta = 0.7978845608028654f; // sqrt(2/pi)
constexpr float kGeluKappa = 0.044715f;

__device__ inline float gelu(float x) {
  const float u = kGeluBeta * (x + kGeluKappa * (x * x * x));
  return x / (1.0f + expf(-2.0f * u));
}

__device__ inline float geluGrad(float x, float dy) {
  const float x2 = x * x;
  const float u = kGeluBeta * (x + kGeluKappa * (x2 * x));
  const float du = kGeluBeta * (1.0f + 3.0f * kGeluKappa * x2);
  const float e = expf(-2.0f * u);
  const float s = 1.0f / (1.0f + e);
  const float oneMinusS = isinf(e) && e > 0.0f ? 1.0f : e * s;
  return dy * (s + 2.0f * x * du * s * oneMinusS);
}

/// Four floats stored as they are, or rounded to nearest even.
__device__ inline void put4(float4 *y, float4 v) { *y = v; }
__device__ inline void put4(Bf16x4 *y, float4 v) {
  *y = Bf16x4{__floats2bfloat162_rn(v.x, v.y), __floats2bfloat162_rn(v.z, v.w)};
}

/// Four bf16 at p (8-byte aligned) read through L2, never the read-only
/// path: for a kernel reading back what its own block wrote (after a
/// barrier).
__device__ inline float4 load4Cg(const __nv_bfloat16 *p) {
  const uint2 u = __ldcg(reinterpret_cast<const uint2 *>(p));
  __nv_bfloat162 lo, hi;
  memcpy(&lo, &u.x, sizeof lo);
  memcpy(&hi, &u.y, sizeof hi);
  const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}

/// ReduceSum's vector form (Misc.cu) sums column vector v (4 columns) of
/// a chunk of rows [r0, r1) of x (rows of nvec float4s) with kRsLanes row
/// lanes: lane ty sums rows r0 + ty, r0 + ty + kRsLanes, ... in double, from
/// 0, in row order (colLaneSum); lane 0 then adds lanes 1, 2, 3 in order.
/// LayerNormGrad's column sums of its bf16 copy (Norms.cu) follow the same
/// order, so the two give the same bits.
constexpr int kRsCols = 64, kRsLanes = 4;

/// Adds rows from, from + kRsLanes, ... < to of column vector v into s
/// (one lane's running sums, continued across calls whose `from` keep the
/// lane's phase). `load` reads four elements as a float4.
template <typename X, typename Load>
__device__ inline void colLaneSum(const X *x, int64_t from, int64_t to,
                                  int64_t nvec, int64_t v, double (&s)[4],
                                  Load load) {
#pragma unroll 4
  for (int64_t r = from; r < to; r += kRsLanes) {
    const float4 a = load(x + 4 * (r * nvec + v));
    s[0] += double(a.x);
    s[1] += double(a.y);
    s[2] += double(a.z);
    s[3] += double(a.w);
  }
}

/// ReduceSum's chunk partial: run by kRsCols x kRsLanes threads (tx, ty),
/// all of them (one barrier inside); column vector v < nvec's four sums go
/// to out[4 v ..].
template <typename X, typename Load>
__device__ inline void colChunkPartialVec(const X *x, int64_t r0, int64_t r1,
                                          int64_t nvec, int64_t v, int tx,
                                          int ty, double (*sh)[kRsCols][4],
                                          double *out, Load load) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  if (v < nvec)
    colLaneSum(x, r0 + ty, r1, nvec, v, s, load);
  if (ty > 0)
    for (int c = 0; c < 4; ++c)
      sh[ty - 1][tx][c] = s[c];
  __syncthreads();
  if (ty > 0 || v >= nvec)
    return;
  for (int l = 0; l < kRsLanes - 1; ++l)
    for (int c = 0; c < 4; ++c)
      s[c] += sh[l][tx][c];
  for (int c = 0; c < 4; ++c)
    out[4 * v + c] = s[c];
}

/// Records the first bad id/target of a launch; the host reports it.
__device__ inline void reportBadIndex(DeviceError *e, Op op, long long row,
                                      long long value, long long limit) {
  if (atomicCAS(&e->flag, 0, 1) == 0) {
    e->op = int(op);
    e->row = row;
    e->value = value;
    e->limit = limit;
  }
}

template <typename T> __device__ inline T warpSum(T v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Sum over the block; every thread gets the result. `sh` holds 32 T.
template <typename T> __device__ inline T blockSum(T v, T *sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nw = blockDim.x >> 5;
  v = warpSum(v);
  __syncthreads(); // the previous reduction's readers are done with sh
  if (lane == 0)
    sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < nw ? sh[lane] : T(0);
    w = warpSum(w);
    __syncwarp(); // every lane has read sh before lane 0 overwrites sh[0]
    if (lane == 0)
      sh[0] = w;
  }
  __syncthreads();
  return sh[0];
}

/// max (or min) as the CPU's maxF: `x > m ? x : m`, so a NaN only wins
/// where it starts. Every thread gets the result. `sh` holds 32 floats.
template <bool kMax> __device__ inline float pick(float a, float b) {
  return kMax ? (b > a ? b : a) : (b < a ? b : a);
}
template <bool kMax> __device__ inline float blockExtreme(float v, float *sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1)
    v = pick<kMax>(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0)
    sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = sh[lane < nw ? lane : 0];
    for (int o = 16; o > 0; o >>= 1)
      w = pick<kMax>(w, __shfl_xor_sync(0xffffffffu, w, o));
    __syncwarp(); // lanes >= nw read sh[0]: done before lane 0 writes it
    if (lane == 0)
      sh[0] = w;
  }
  __syncthreads();
  return sh[0];
}

__device__ inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

/// Grid-stride loop bounds.
__device__ inline int64_t globalThread() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t globalStride() {
  return int64_t(gridDim.x) * blockDim.x;
}

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_DEVICEUTIL_CUH

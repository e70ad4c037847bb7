//===- Loss.cu - Cross entropy and its gradient ---------------------------===//
//
// One block per row. Targets are data: one outside [0, V) is recorded in the
// DeviceError (reported at the next synchronisation) and its row is skipped
// (the loss becomes NaN). The mean over rows is a second, single-block pass
// over the per-row losses in double, in a fixed order.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cuda_bf16.h>

namespace mega::rt::gpu {

namespace {

__global__ void crossEntropyRows(const float *__restrict__ x,
                                 const int32_t *__restrict__ t, int64_t rows,
                                 int64_t V, float *__restrict__ lse,
                                 double *__restrict__ rowLoss,
                                 DeviceError *err) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * V;
    float m = xr[0];
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      m = xr[j] > m ? xr[j] : m;
    m = blockExtreme<true>(m, shf);
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      s += double(expf(xr[j] - m));
    s = blockSum(s, shd);
    if (threadIdx.x == 0) {
      const double l = double(m) + log(s);
      lse[r] = float(l);
      const int32_t tr = t[r];
      if (tr < 0 || tr >= V) {
        reportBadIndex(err, Op::CrossEntropy, r, tr, V);
        rowLoss[r] = nan("");
      } else {
        rowLoss[r] = l - double(xr[tr]);
      }
    }
  }
}

__global__ void meanKernel(const double *__restrict__ v, int64_t n,
                           float *__restrict__ out) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
    s += v[k];
  s = blockSum(s, sh);
  if (threadIdx.x == 0)
    out[0] = n ? float(s / double(n)) : nanf("");
}

__device__ inline void storeGrad(float *p, float v) { *p = v; }
__device__ inline void storeGrad(__nv_bfloat16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}

/// T = float, or __nv_bfloat16 when the plan folded a cast into dlogits
/// (then never in place).
template <typename T>
__global__ void crossEntropyGradRows(const float *x,
                                     const int32_t *__restrict__ t,
                                     const float *__restrict__ lse,
                                     const float *__restrict__ dloss, T *dx,
                                     int64_t rows, int64_t V,
                                     DeviceError *err) {
  const float sc = float(double(dloss[0]) / double(rows));
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t tr = t[r];
    if (tr < 0 || tr >= V) { // uniform over the block
      if (threadIdx.x == 0)
        reportBadIndex(err, Op::CrossEntropyGrad, r, tr, V);
      continue;
    }
    const float *xr = x + r * V;
    T *dr = dx + r * V;
    const float l = lse[r];
    const float pt = expf(xr[tr] - l); // before dr overwrites xr in place
    __syncthreads();
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      storeGrad(dr + j, expf(xr[j] - l) * sc);
    __syncthreads();
    if (threadIdx.x == 0)
      storeGrad(dr + tr, (pt - 1.0f) * sc);
  }
}

} // namespace

void runCrossEntropy(const Ctx &ctx, const Instr &in, const Refs &ins,
                     const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  Carve carve;
  const size_t lossAt = carve.add(size_t(rows) * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  double *rowLoss = reinterpret_cast<double *>(ws + lossAt);
  if (rows > 0) {
    crossEntropyRows<<<rowGrid(rows), rowThreads(V, 512), 0, ctx.stream>>>(
        ins[0].f32(), ins[1].i32(), rows, V, outs[1].f32(), rowLoss, ctx.err);
    checkLaunch("CrossEntropy");
  }
  meanKernel<<<1, 1024, 0, ctx.stream>>>(rowLoss, rows, outs[0].f32());
  checkLaunch("CrossEntropy (mean)");
}

void runCrossEntropyGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                         const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  if (rows == 0)
    return;
  if (outs[0].value->dtype == DType::BF16)
    crossEntropyGradRows<<<rowGrid(rows), rowThreads(V, 512), 0, ctx.stream>>>(
        ins[0].f32(), ins[1].i32(), ins[2].f32(), ins[3].f32(),
        static_cast<__nv_bfloat16 *>(outs[0].data), rows, V, ctx.err);
  else
    crossEntropyGradRows<<<rowGrid(rows), rowThreads(V, 512), 0, ctx.stream>>>(
        ins[0].f32(), ins[1].i32(), ins[2].f32(), ins[3].f32(), outs[0].f32(),
        rows, V, ctx.err);
  checkLaunch("CrossEntropyGrad");
}

} // namespace mega::rt::gpu

//===- Loss.cu - Cross entropy and its gradient ---------------------------===//
//
// One block per row. Targets are data: one outside [0, V) is recorded in the
// DeviceError (reported at the next synchronisation) and its row is skipped
// (the loss becomes NaN). The mean over rows is a second, single-block pass
// over the per-row losses in double, in a fixed order.
//
// The forward reads each row once: every thread keeps a running max and a
// sum of exp(x - max) in double, rescaled when its max grows; the block
// then takes the row's max and adds the threads' sums rescaled to it. Rows
// of 4-vectors (V % 4 == 0, aligned) load 16 (f32) or 8 (bf16) bytes per
// access; the gradient stores 16 (f32) or 8 (bf16) bytes likewise.
//
// Logits may be bf16 (mixed precision): each element is widened on load
// (exact) and every step after is the f32 path's, so f32 and bf16 logits
// holding the same values give the same loss, lse and dlogits.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cuda_bf16.h>

namespace mega::rt::gpu {

namespace {

/// One element into a thread's running (max, sum): the max as the CPU's
/// (`x > m ? x : m`), the sum rescaled when the max moves.
__device__ inline void online(float v, float &m, double &s) {
  if (v > m) {
    s *= double(expf(m - v));
    m = v;
  }
  s += double(expf(v - m));
}

/// One row's logsumexp (every thread of the block gets it) and, by thread
/// 0, its lse and loss (or the bad target recorded). X = float or
/// __nv_bfloat16 (the logits). V4: rows read as 4-vectors (V % 4 == 0, x
/// aligned to one).
template <typename X, bool V4>
__device__ double crossEntropyRow(const X *xr, int32_t tr, int64_t r,
                                  int64_t V, float *lse, double *rowLoss,
                                  DeviceError *err, Op op, float *shf,
                                  double *shd) {
  __shared__ double rowLse;
  {
    float m = load1(xr);
    double s = 0.0;
    if (V4) {
      for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
        const float4 a = load4(xr + 4 * j);
        // The vector's max first: at most one rescale per vector.
        float mv = a.x;
        mv = a.y > mv ? a.y : mv;
        mv = a.z > mv ? a.z : mv;
        mv = a.w > mv ? a.w : mv;
        if (mv > m) {
          s *= double(expf(m - mv));
          m = mv;
        }
        // Four terms in (0, 1] summed in float (relative error ~1e-7), then
        // one double add: a quarter of the conversions and adds.
        s += double((expf(a.x - m) + expf(a.y - m)) +
                    (expf(a.z - m) + expf(a.w - m)));
      }
    } else {
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
        online(load1(xr + j), m, s);
    }
    const float M = blockExtreme<true>(m, shf);
    // A thread's sum at its own max, moved to the row's (s = 0 where the
    // thread saw no element; exp(m - M) <= 1).
    s = blockSum(s == 0.0 ? 0.0 : s * double(expf(m - M)), shd);
    if (threadIdx.x == 0) {
      const double l = double(M) + log(s);
      rowLse = l;
      lse[r] = float(l);
      if (tr < 0 || tr >= V) {
        reportBadIndex(err, op, r, tr, V);
        rowLoss[r] = nan("");
      } else {
        rowLoss[r] = l - double(load1(xr + tr));
      }
    }
  }
  __syncthreads();
  const double l = rowLse;
  __syncthreads(); // rowLse is written again for the next row
  return l;
}

template <typename X, bool V4>
__global__ void crossEntropyRows(const X *__restrict__ x,
                                 const int32_t *__restrict__ t, int64_t rows,
                                 int64_t V, float *__restrict__ lse,
                                 double *__restrict__ rowLoss,
                                 DeviceError *err) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    crossEntropyRow<X, V4>(x + r * V, t[r], r, V, lse, rowLoss, err,
                           Op::CrossEntropy, shf, shd);
}

/// out = sum(v) / divisor, or out += that (accumulate: one row block of a
/// larger batch, CrossEntropyWithGrad's {rows, V, mean_rows, 1}).
__global__ void meanKernel(const double *__restrict__ v, int64_t n,
                           int64_t divisor, bool accumulate,
                           float *__restrict__ out) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
    s += v[k];
  s = blockSum(s, sh);
  if (threadIdx.x == 0) {
    if (accumulate)
      out[0] = float(double(out[0]) + s / double(divisor));
    else
      out[0] = divisor ? float(s / double(divisor)) : nanf("");
  }
}

__device__ inline void storeGrad(float *p, float v) { *p = v; }
__device__ inline void storeGrad(__nv_bfloat16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}

__device__ inline void storeGrad4(float *p, float4 v) {
  put4(reinterpret_cast<float4 *>(p), v);
}
__device__ inline void storeGrad4(__nv_bfloat16 *p, float4 v) {
  put4(reinterpret_cast<Bf16x4 *>(p), v);
}

/// X (logits) and T (dlogits) = float or __nv_bfloat16: T bf16 when the
/// plan folded a cast into dlogits, X bf16 in mixed precision. dx may be
/// x's bytes when X = T: each thread reads its elements before it writes
/// them, and the target's probability is read before the first write. V4:
/// rows of 4-vectors, x and dx aligned to them.
/// One row's gradient (tr a valid target, l the row's lse, sc = dloss /
/// rows), by the whole block.
template <typename X, typename T, bool V4>
__device__ void crossEntropyGradRow(const X *xr, T *dr, int32_t tr, float l,
                                    float sc, int64_t V) {
  const float pt = expf(load1(xr + tr) - l); // before dr overwrites xr
  __syncthreads();
  if (V4) {
    for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
      const float4 a = load4(xr + 4 * j);
      storeGrad4(dr + 4 * j,
                 make_float4(expf(a.x - l) * sc, expf(a.y - l) * sc,
                             expf(a.z - l) * sc, expf(a.w - l) * sc));
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      storeGrad(dr + j, expf(load1(xr + j) - l) * sc);
  }
  __syncthreads();
  if (threadIdx.x == 0)
    storeGrad(dr + tr, (pt - 1.0f) * sc);
}

template <typename X, typename T, bool V4>
__global__ void crossEntropyGradRows(const X *x,
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
    crossEntropyGradRow<X, T, V4>(x + r * V, dx + r * V, tr, lse[r], sc, V);
  }
}

/// CrossEntropyWithGrad: each row's statistics, then its gradient, by one
/// block; the second read is meant to hit the L2, which it misses once the
/// rows in flight outgrow it (crossEntropyWithGradRowsStaged). The same
/// device code as the two kernels, so the same bits.
template <typename X, typename T, bool V4>
__global__ void crossEntropyWithGradRows(const X *x,
                                         const int32_t *__restrict__ t,
                                         const float *__restrict__ dloss,
                                         float *__restrict__ lse,
                                         double *__restrict__ rowLoss, T *dx,
                                         int64_t rows, int64_t V,
                                         int64_t meanRows, DeviceError *err) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const float sc = float(double(dloss[0]) / double(meanRows));
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t tr = t[r];
    const double l = crossEntropyRow<X, V4>(x + r * V, tr, r, V, lse, rowLoss,
                                            err, Op::CrossEntropyWithGrad,
                                            shf, shd);
    if (tr >= 0 && tr < V) // uniform over the block
      crossEntropyGradRow<X, T, V4>(x + r * V, dx + r * V, tr, float(l), sc,
                                    V);
  }
}

/// Rows of at most this many bytes are staged in shared memory by
/// crossEntropyWithGradRowsStaged: two 512-thread blocks fit on an H100
/// multiprocessor (228 KB), so one block's row can load while the other's
/// is summed and written.
constexpr size_t kStageBytes = 110 * 1024;

/// n pieces of P (uint2 or uint4) from src to dst by the whole block, 8
/// loads in flight per thread before their stores.
template <typename P>
__device__ void copyToShared(P *dst, const P *src, int64_t n) {
  constexpr int kInFlight = 8;
  const int64_t step = blockDim.x;
  int64_t k = threadIdx.x;
  for (; k + (kInFlight - 1) * step < n; k += kInFlight * step) {
    P v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u)
      v[u] = src[k + u * step];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u)
      dst[k + u * step] = v[u];
  }
  for (; k < n; k += step)
    dst[k] = src[k];
}

/// crossEntropyWithGradRows with each row first copied into dynamic shared
/// memory (V4 rows: V % 4 == 0 and x aligned to 4 elements; 16-byte pieces
/// where every row is 16-byte aligned, else 8):
/// both passes then read the copy, so the row leaves memory exactly once
/// (in crossEntropyWithGradRows the second pass's reads miss the L2 when
/// the blocks in flight hold more rows than it does: GPT-2's 50304-entry
/// rows, 100 KB in bf16, measured as slow as the two separate kernels).
/// The same device code on the same values: the same bits. dx may be x's
/// bytes: the row is read whole before any of it is written.
template <typename X, typename T>
__global__ void __launch_bounds__(512)
    crossEntropyWithGradRowsStaged(const X *x, const int32_t *__restrict__ t,
                                   const float *__restrict__ dloss,
                                   float *__restrict__ lse,
                                   double *__restrict__ rowLoss, T *dx,
                                   int64_t rows, int64_t V, int64_t meanRows,
                                   bool wide, DeviceError *err) {
  extern __shared__ uint4 stage[];
  __shared__ float shf[32];
  __shared__ double shd[32];
  const X *row = reinterpret_cast<const X *>(stage);
  const float sc = float(double(dloss[0]) / double(meanRows));
  const int64_t bytes = V * int64_t(sizeof(X));
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    if (wide)
      copyToShared(stage, reinterpret_cast<const uint4 *>(x + r * V),
                   bytes / 16);
    else
      copyToShared(reinterpret_cast<uint2 *>(stage),
                   reinterpret_cast<const uint2 *>(x + r * V), bytes / 8);
    __syncthreads();
    const int32_t tr = t[r];
    const double l = crossEntropyRow<X, true>(row, tr, r, V, lse, rowLoss, err,
                                              Op::CrossEntropyWithGrad, shf,
                                              shd);
    if (tr >= 0 && tr < V) // uniform over the block
      crossEntropyGradRow<X, T, true>(row, dx + r * V, tr, float(l), sc, V);
    __syncthreads(); // the next row overwrites the stage
  }
}

template <typename X, typename T>
void launchCrossEntropyGrad(const Ctx &ctx, const X *x, const Refs &ins,
                            T *dx, int64_t rows, int64_t V) {
  const bool v4 = V % 4 == 0 && aligned(x, 4 * sizeof(X)) &&
                  aligned(dx, 4 * sizeof(T));
  const unsigned grid = rowGrid(rows);
  const int threads = rowThreads(v4 ? V / 4 : V, 512);
  if (v4)
    crossEntropyGradRows<X, T, true><<<grid, threads, 0, ctx.stream>>>(
        x, ins[1].i32(), ins[2].f32(), ins[3].f32(), dx, rows, V, ctx.err);
  else
    crossEntropyGradRows<X, T, false><<<grid, threads, 0, ctx.stream>>>(
        x, ins[1].i32(), ins[2].f32(), ins[3].f32(), dx, rows, V, ctx.err);
}

template <typename X>
void launchCrossEntropy(const Ctx &ctx, const X *x, const Refs &ins,
                        const Refs &outs, double *rowLoss, int64_t rows,
                        int64_t V) {
  const bool v4 = V % 4 == 0 && aligned(x, 4 * sizeof(X));
  if (v4)
    crossEntropyRows<X, true>
        <<<rowGrid(rows), rowThreads(V / 4, 512), 0, ctx.stream>>>(
            x, ins[1].i32(), rows, V, outs[1].f32(), rowLoss, ctx.err);
  else
    crossEntropyRows<X, false>
        <<<rowGrid(rows), rowThreads(V, 512), 0, ctx.stream>>>(
            x, ins[1].i32(), rows, V, outs[1].f32(), rowLoss, ctx.err);
}

template <typename X>
void dispatchCrossEntropyGrad(const Ctx &ctx, const X *x, const Refs &ins,
                              const Refs &outs, int64_t rows, int64_t V) {
  if (outs[0].value->dtype == DType::BF16)
    launchCrossEntropyGrad(ctx, x, ins,
                           static_cast<__nv_bfloat16 *>(outs[0].data), rows,
                           V);
  else
    launchCrossEntropyGrad(ctx, x, ins, outs[0].f32(), rows, V);
}

template <typename X, typename T>
void launchCrossEntropyWithGrad(const Ctx &ctx, const X *x, const Refs &ins,
                                const Refs &outs, T *dx, double *rowLoss,
                                int64_t rows, int64_t V, int64_t meanRows) {
  const bool v4 = V % 4 == 0 && aligned(x, 4 * sizeof(X)) &&
                  aligned(dx, 4 * sizeof(T));
  const unsigned grid = rowGrid(rows);
  const int threads = rowThreads(v4 ? V / 4 : V, 512);
  const size_t rowBytes = size_t(V) * sizeof(X);
  // Once per instantiation: rows up to kStageBytes, above the default 48 KB
  // of dynamic shared memory (a GPU that refuses keeps the unstaged form).
  static const bool stageable = [] {
    const bool ok = cudaFuncSetAttribute(
                        crossEntropyWithGradRowsStaged<X, T>,
                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                        int(kStageBytes)) == cudaSuccess;
    if (!ok)
      cudaGetLastError(); // not sticky; clear it
    return ok;
  }();
  if (v4 && stageable && rowBytes <= kStageBytes) {
    const bool wide = rowBytes % 16 == 0 && aligned(x, 16);
    crossEntropyWithGradRowsStaged<X, T>
        <<<grid, threads, rowBytes, ctx.stream>>>(
            x, ins[1].i32(), ins[2].f32(), outs[1].f32(), rowLoss, dx, rows,
            V, meanRows, wide, ctx.err);
  } else if (v4)
    crossEntropyWithGradRows<X, T, true><<<grid, threads, 0, ctx.stream>>>(
        x, ins[1].i32(), ins[2].f32(), outs[1].f32(), rowLoss, dx, rows, V,
        meanRows, ctx.err);
  else
    crossEntropyWithGradRows<X, T, false><<<grid, threads, 0, ctx.stream>>>(
        x, ins[1].i32(), ins[2].f32(), outs[1].f32(), rowLoss, dx, rows, V,
        meanRows, ctx.err);
}

template <typename X>
void dispatchCrossEntropyWithGrad(const Ctx &ctx, const X *x, const Refs &ins,
                                  const Refs &outs, double *rowLoss,
                                  int64_t rows, int64_t V, int64_t meanRows) {
  if (outs[2].value->dtype == DType::BF16)
    launchCrossEntropyWithGrad(ctx, x, ins, outs,
                               static_cast<__nv_bfloat16 *>(outs[2].data),
                               rowLoss, rows, V, meanRows);
  else
    launchCrossEntropyWithGrad(ctx, x, ins, outs, outs[2].f32(), rowLoss, rows,
                               V, meanRows);
}

} // namespace

namespace {

/// Scratch for the per-row losses the mean then sums in a fixed order.
double *rowLossScratch(const Ctx &ctx, int64_t rows) {
  Carve carve;
  const size_t lossAt = carve.add(size_t(rows) * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  return reinterpret_cast<double *>(ws + lossAt);
}

} // namespace

void runCrossEntropy(const Ctx &ctx, const Instr &in, const Refs &ins,
                     const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  double *rowLoss = rowLossScratch(ctx, rows);
  if (rows > 0) {
    if (ins[0].value->dtype == DType::BF16)
      launchCrossEntropy(ctx, static_cast<const __nv_bfloat16 *>(ins[0].data),
                         ins, outs, rowLoss, rows, V);
    else
      launchCrossEntropy(ctx, ins[0].f32(), ins, outs, rowLoss, rows, V);
    checkLaunch("CrossEntropy");
  }
  meanKernel<<<1, 1024, 0, ctx.stream>>>(rowLoss, rows, rows, false,
                                         outs[0].f32());
  checkLaunch("CrossEntropy (mean)");
}

void runCrossEntropyGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                         const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1];
  if (rows == 0)
    return;
  if (ins[0].value->dtype == DType::BF16)
    dispatchCrossEntropyGrad(ctx,
                             static_cast<const __nv_bfloat16 *>(ins[0].data),
                             ins, outs, rows, V);
  else
    dispatchCrossEntropyGrad(ctx, ins[0].f32(), ins, outs, rows, V);
  checkLaunch("CrossEntropyGrad");
}

void runCrossEntropyWithGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                             const Refs &outs) {
  // {rows, V} or one row block of a larger batch: {rows, V, mean_rows,
  // accumulate} (the CPU twin's words in cpu/Loss.cpp).
  const int64_t rows = in.i[0], V = in.i[1];
  const bool block = in.i.size() == 4;
  const int64_t meanRows = block ? in.i[2] : rows;
  double *rowLoss = rowLossScratch(ctx, rows);
  if (rows > 0) {
    if (ins[0].value->dtype == DType::BF16)
      dispatchCrossEntropyWithGrad(
          ctx, static_cast<const __nv_bfloat16 *>(ins[0].data), ins, outs,
          rowLoss, rows, V, meanRows);
    else
      dispatchCrossEntropyWithGrad(ctx, ins[0].f32(), ins, outs, rowLoss, rows,
                                   V, meanRows);
    checkLaunch("CrossEntropyWithGrad");
  }
  meanKernel<<<1, 1024, 0, ctx.stream>>>(rowLoss, rows, meanRows,
                                         block && in.i[3], outs[0].f32());
  checkLaunch("CrossEntropyWithGrad (mean)");
}

} // namespace mega::rt::gpu

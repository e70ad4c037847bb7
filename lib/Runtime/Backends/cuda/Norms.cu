//===- Norms.cu - LayerNorm, Softmax and their gradients ------------------===//
//
// Row statistics accumulated in double like the CPU's. LayerNorm and
// LayerNormGrad have a warp-per-row form for rows of at most 1024 columns
// in float4s (cols % 4 == 0, 16-byte aligned operands): the row stays in
// the lanes' registers between its statistics and its output; any other
// shape or alignment runs the block-per-row kernels. LayerNorm's dw/db sum
// over rows in two passes: per-chunk partials, then the chunks in order
// (sumChunks; no atomics, same bits every run).
//
// LayerNormGrad's optional forms (mega-fuse-norm-grad): accumulate adds dx
// into what dx holds (__fadd_rn, never contracted into an FMA, so the bits
// are those of an Elementwise add after the plain kernel); a 4th output
// takes dx's final value rounded to bf16 (Cast's rounding); accumulate_wb
// adds the finished dw/db column sums, each rounded to f32 first, into dw
// and db (sumChunks' SumInto::AddRounded); a 5th output takes the column
// sums of the copy, ReduceSum's bits: the warp form sums each of ReduceSum's
// chunks of rows in ReduceSum's order from the copy its block has just
// written (each 32 rows read back right after they are stored: from L2, not
// memory), the block form runs ReduceSum's kernels.
//
// x may be bf16 in LayerNorm and LayerNormGrad (the residual stream stored
// in bf16), widened on load like a bf16 dy.
//
// In place (y = x, dx = dy, dx = y): every row kernel reads the whole row
// for its statistics before it writes (the warp forms hold it in
// registers; the block forms pass a block-wide barrier), and afterwards
// each thread reads an element just before it writes the same element.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cuda_bf16.h>

#include <type_traits>

namespace mega::rt::gpu {

namespace {

/// Chunks of rows for the dw/db partials: at least 32 rows, at most 1024
/// chunks.
int64_t chunkRows(int64_t rows) {
  return std::max<int64_t>(32, (rows + 1023) / 1024);
}

//===----------------------------------------------------------------------===//
// LayerNorm
//===----------------------------------------------------------------------===//

__device__ inline void put(float *y, float v) { *y = v; }
__device__ inline void put(__nv_bfloat16 *y, float v) {
  *y = __float2bfloat16_rn(v);
}

/// The block-per-row form; X = float or __nv_bfloat16 (the residual stream
/// stored in bf16, widened on load); Y = float or __nv_bfloat16 (a cast
/// folded into the norm: the f32 value rounded on store, in place only
/// when X is Y). Rows of y are ldy >= cols apart; columns [cols, ldy) get
/// a 1 and then zeros (mega-ones-column).
template <typename X, typename Y>
__global__ void layerNormKernel(const X *x, const float *__restrict__ w,
                                const float *__restrict__ b, Y *y,
                                float *__restrict__ mean,
                                float *__restrict__ rstd, int64_t rows,
                                int64_t cols, int64_t ldy, double eps) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const X *xr = x + r * cols;
    Y *yr = y + r * ldy;
    double s = 0.0, q = 0.0;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
      const double v = double(load1(xr + k));
      s += v;
      q += v * v;
    }
    s = blockSum(s, sh);
    q = blockSum(q, sh);
    const double mu = s / double(cols);
    const double var = fmax(0.0, q / double(cols) - mu * mu);
    const double rs = 1.0 / sqrt(var + eps);
    const float m = float(mu), sc = float(rs);
    if (threadIdx.x == 0) {
      mean[r] = m;
      rstd[r] = sc;
    }
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x)
      put(yr + k, (load1(xr + k) - m) * sc * w[k] + b[k]);
    for (int64_t k = cols + threadIdx.x; k < ldy; k += blockDim.x)
      put(yr + k, k == cols ? 1.0f : 0.0f);
  }
}

/// Warps per block of the warp-per-row kernels.
constexpr int kRowWarps = 8;

/// Four elements of type T as they are stored: float4, or four bf16 (8
/// bytes), widened where used, so a row held in registers takes half the
/// registers in bf16.
template <typename T> struct Stored4 {
  using type = float4;
};
template <> struct Stored4<__nv_bfloat16> {
  using type = Bf16x4;
};
template <typename T>
__device__ inline typename Stored4<T>::type loadStored4(const T *p) {
  return *reinterpret_cast<const typename Stored4<T>::type *>(p);
}
__device__ inline float4 widen4(float4 v) { return v; }
__device__ inline float4 widen4(Bf16x4 v) {
  const float2 a = __bfloat1622float2(v.lo), b = __bfloat1622float2(v.hi);
  return make_float4(a.x, a.y, b.x, b.y);
}

/// The warp-per-row form: nvec = cols / 4 float4s per row, lane l holding
/// vectors l, l + 32, ..., (at most NV of them) as stored: X = float or
/// __nv_bfloat16, widened where used (a bf16 row takes half the registers:
/// 48 a thread at GPT-2's width, where widening on load took 64 and
/// spilled; measured on an H100 at 19.5 us against 21.5). Y4 = float4 or
/// Bf16x4. Rows of y are nvecY >= nvec vectors apart, the padding a 1 and
/// then zeros.
template <int NV, typename X, typename Y4>
__global__ void __launch_bounds__(kRowWarps * 32)
    layerNormWarpKernel(const X *x, const float4 *__restrict__ w,
                        const float4 *__restrict__ b, Y4 *y,
                        float *__restrict__ mean, float *__restrict__ rstd,
                        int64_t rows, int64_t nvec, int64_t nvecY,
                        double eps) {
  const int lane = threadIdx.x & 31;
  const int64_t cols = 4 * nvec;
  for (int64_t r = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
       r < rows; r += int64_t(gridDim.x) * kRowWarps) {
    const X *xr = x + r * cols;
    typename Stored4<X>::type v[NV];
    double s = 0.0, q = 0.0;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k < nvec) {
        v[i] = loadStored4(xr + 4 * k);
        const float4 f = widen4(v[i]);
        const double a = f.x, bb = f.y, c = f.z, d = f.w;
        s += (a + bb) + (c + d);
        q += (a * a + bb * bb) + (c * c + d * d);
      }
    }
    s = warpSum(s);
    q = warpSum(q);
    const double mu = s / double(cols);
    const double var = fmax(0.0, q / double(cols) - mu * mu);
    const double rs = 1.0 / sqrt(var + eps);
    const float m = float(mu), sc = float(rs);
    if (lane == 0) {
      mean[r] = m;
      rstd[r] = sc;
    }
    Y4 *yr = y + r * nvecY;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k < nvec) {
        const float4 f = widen4(v[i]), ww = w[k], bw = b[k];
        put4(yr + k, make_float4((f.x - m) * sc * ww.x + bw.x,
                                 (f.y - m) * sc * ww.y + bw.y,
                                 (f.z - m) * sc * ww.z + bw.z,
                                 (f.w - m) * sc * ww.w + bw.w));
      }
    }
    for (int64_t k = nvec + lane; k < nvecY; k += 32)
      put4(yr + k, make_float4(k == nvec ? 1.0f : 0.0f, 0.0f, 0.0f, 0.0f));
  }
}

/// Lane registers (float4s) a warp-per-row kernel needs for a row of nvec
/// float4s: 2, 4, 6 or 8; 0 when the row is too long for the warp form.
int warpVectors(int64_t nvec) {
  const int64_t per = (nvec + 31) / 32;
  for (int nv : {2, 4, 6, 8})
    if (per <= nv)
      return nv;
  return 0;
}

unsigned warpRowGrid(int64_t rows) {
  const int64_t want = (rows + kRowWarps - 1) / kRowWarps;
  const int64_t cap = int64_t(1) << 20;
  return unsigned(want < 1 ? 1 : (want > cap ? cap : want));
}

template <int NV, typename X, typename Y4>
void launchLayerNormWarp(const Ctx &ctx, const X *x, const float *w,
                         const float *b, Y4 *y, float *mean, float *rstd,
                         int64_t rows, int64_t cols, int64_t ldy, double eps) {
  layerNormWarpKernel<NV, X, Y4>
      <<<warpRowGrid(rows), kRowWarps * 32, 0, ctx.stream>>>(
          x, reinterpret_cast<const float4 *>(w),
          reinterpret_cast<const float4 *>(b), y, mean, rstd, rows, cols / 4,
          ldy / 4, eps);
}

template <typename X, typename Y4>
void layerNormWarp(const Ctx &ctx, int nv, const X *x, const float *w,
                   const float *b, Y4 *y, float *mean, float *rstd,
                   int64_t rows, int64_t cols, int64_t ldy, double eps) {
  switch (nv) {
  case 2:
    return launchLayerNormWarp<2>(ctx, x, w, b, y, mean, rstd, rows, cols, ldy,
                                  eps);
  case 4:
    return launchLayerNormWarp<4>(ctx, x, w, b, y, mean, rstd, rows, cols, ldy,
                                  eps);
  case 6:
    return launchLayerNormWarp<6>(ctx, x, w, b, y, mean, rstd, rows, cols, ldy,
                                  eps);
  default:
    return launchLayerNormWarp<8>(ctx, x, w, b, y, mean, rstd, rows, cols, ldy,
                                  eps);
  }
}

//===----------------------------------------------------------------------===//
// LayerNormGrad
//===----------------------------------------------------------------------===//

/// part[(2c) * cols + j] = sum over chunk c of dy * xhat, part[(2c+1) *
/// cols + j] = sum of dy. DY = float or __nv_bfloat16 (a bf16 product's
/// gradient, widened on load) in these kernels, and X likewise (the
/// residual stream stored in bf16).
template <typename DY, typename X>
__global__ void layerNormParamPartials(const DY *__restrict__ dy,
                                       const X *__restrict__ x,
                                       const float *__restrict__ mean,
                                       const float *__restrict__ rstd,
                                       int64_t rows, int64_t cols,
                                       int64_t chunk, double *part) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c = blockIdx.y;
  if (j >= cols)
    return;
  const int64_t r0 = c * chunk, r1 = imin(rows, r0 + chunk);
  double pw = 0.0, pb = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float d = load1(dy + r * cols + j);
    const float xhat = (load1(x + r * cols + j) - mean[r]) * rstd[r];
    pw += double(d) * double(xhat);
    pb += double(d);
  }
  part[(2 * c) * cols + j] = pw;
  part[(2 * c + 1) * cols + j] = pb;
}

template <typename DY, typename X, typename DX>
__global__ void layerNormDxKernel(const DY *dy, const X *__restrict__ x,
                                  const float *__restrict__ w,
                                  const float *__restrict__ mean,
                                  const float *__restrict__ rstd, DX *dx,
                                  __nv_bfloat16 *__restrict__ dxh,
                                  int64_t rows, int64_t cols, bool acc) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const DY *dyr = dy + r * cols;
    const X *xr = x + r * cols;
    DX *dxr = dx + r * cols;
    const float m = mean[r], s = rstd[r];
    double sg = 0.0, sgx = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xhat = (load1(xr + j) - m) * s;
      const float g = load1(dyr + j) * w[j];
      sg += double(g);
      sgx += double(g) * double(xhat);
    }
    sg = blockSum(sg, sh);
    sgx = blockSum(sgx, sh);
    const float c1 = float(sg / double(cols));
    const float c2 = float(sgx / double(cols));
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xhat = (load1(xr + j) - m) * s;
      const float g = load1(dyr + j) * w[j];
      float v = s * (g - c1 - xhat * c2);
      if (acc)
        v = __fadd_rn(load1(dxr + j), v);
      put(dxr + j, v);
      if (dxh)
        dxh[r * cols + j] = __float2bfloat16_rn(v);
    }
  }
}

/// Rows per block of the one-pass LayerNormGrad: each warp takes
/// kGradRows / kRowWarps consecutive rows.
constexpr int kGradRows = 32;
constexpr int kGradRowsPerWarp = kGradRows / kRowWarps;

/// Dynamic shared memory of layerNormGradWarpKernel: the warps' dw/db sums
/// (kRowWarps x 2 x nvec float4s), then with dpart ReduceSum's lane sums
/// (kRsLanes x nvec x 4 doubles).
size_t gradWarpSharedBytes(int64_t nvec, bool dsum) {
  return size_t(kRowWarps) * 2 * size_t(nvec) * sizeof(float4) +
         (dsum ? size_t(kRsLanes) * size_t(nvec) * 4 * sizeof(double) : 0);
}

/// The one-pass LayerNormGrad (warp per row, as layerNormWarpKernel): dx
/// of each 32-row block b's rows [32b, 32b + 32), and the block's dw/db
/// partials, part[b][0][nvec] (sum of dy * xhat) and part[b][1][nvec] (sum
/// of dy) in float4s: each lane adds its columns' terms over its warp's
/// rows, in row order, into the warp's own slice of shared memory, then the
/// warps' sums are added in warp order (the registers that kept those sums
/// now hold the row: its dy, x and, when accumulating, dx's old value are
/// loaded together, so a row waits on memory once, not twice). Measured on
/// an H100 at GPT-2's [16384, 768] with every fused form: 102 us, against
/// 120 us with the sums in registers and dx's old value loaded after the
/// row's statistics; three blocks a multiprocessor (80 registers) spilled
/// and took 129 us. Neither two rows per warp (the next one loaded early)
/// nor the next row copied into shared memory ahead (cp.async) was faster:
/// the all-bf16 form with dsum issues one instruction per warp every 10
/// cycles at 2 blocks a multiprocessor, so its instructions and registers,
/// not memory latency, are what limit it (Nsight Compute, 53 us). A CUDA
/// block takes `subBlocks` consecutive 32-row blocks in turn (the same
/// partials however many it takes). With dpart (the copy's
/// column sums; then subBlocks * 32 is ReduceSum's chunk of rows and CUDA
/// block c its chunk c), after each 32-row block the block reads those rows
/// of the copy back (its own stores, past a barrier, still in L2) into
/// ReduceSum's lane sums, kept in shared memory lanes[kRsLanes][nvec][4]
/// (thread (tx, ty) = lane ty of vectors tx, tx + 64, ...: the lane's rows
/// in row order, as colLaneSum continues them), and at the end leaves
/// ReduceSum's chunk partials (lane 0 + lane 1 + lane 2 + lane 3) at
/// dpart[c][cols].
// Two blocks per multiprocessor where that takes no spill (NV <= 6: 128
// registers, the GPT-2 width).
template <int NV, typename DY, typename X, typename DX>
__global__ void __launch_bounds__(kRowWarps * 32, NV <= 6 ? 2 : 1)
    layerNormGradWarpKernel(const DY *dy, const X *__restrict__ x,
                            const float4 *__restrict__ w,
                            const float *__restrict__ mean,
                            const float *__restrict__ rstd,
                            typename Stored4<DX>::type *dx, Bf16x4 *dxh,
                            const __nv_bfloat16 *copy, int64_t rows,
                            int64_t nvec, bool acc, int64_t subBlocks,
                            float4 *__restrict__ part,
                            double *__restrict__ dpart) {
  static_assert(kRsCols * kRsLanes == kRowWarps * 32, "one thread each");
  extern __shared__ float4 dyn[]; // gradWarpSharedBytes
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tx = threadIdx.x % kRsCols, ty = threadIdx.x / kRsCols;
  float4 *sums = dyn + int64_t(warp) * 2 * nvec; // dw at [j], db at [nvec + j]
  double *lanes = reinterpret_cast<double *>(dyn + int64_t(kRowWarps) * 2 * nvec);
  const int64_t cols = 4 * nvec;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int64_t sb = 0; sb < subBlocks; ++sb) {
    // The same for every thread of the block: the barriers below are safe.
    const int64_t blk = int64_t(blockIdx.x) * subBlocks + sb;
    if (blk * kGradRows >= rows)
      break;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t j = lane + 32 * i;
      if (j < nvec)
        sums[j] = sums[nvec + j] = zero;
    }
    const int64_t r0 = blk * kGradRows + warp * kGradRowsPerWarp;
    for (int k = 0; k < kGradRowsPerWarp; ++k) {
      const int64_t r = r0 + k;
      if (r >= rows)
        break;
      const DY *dyr = dy + 4 * r * nvec;
      const X *xr = x + 4 * r * nvec;
      typename Stored4<DX>::type *dxr = dx + r * nvec;
      typename Stored4<DY>::type d[NV];
      typename Stored4<X>::type xs[NV];
      typename Stored4<DX>::type o[NV];
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int64_t j = lane + 32 * i;
        if (j < nvec) {
          d[i] = loadStored4(dyr + 4 * j);
          xs[i] = loadStored4(xr + 4 * j);
          if (acc)
            o[i] = dxr[j];
        }
      }
      const float m = mean[r], s = rstd[r];
      double sg = 0.0, sgx = 0.0;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int64_t j = lane + 32 * i;
        if (j < nvec) {
          const float4 dv = widen4(d[i]), xv = widen4(xs[i]), ww = w[j];
          const float4 xh =
              make_float4((xv.x - m) * s, (xv.y - m) * s, (xv.z - m) * s,
                          (xv.w - m) * s);
          const float g0 = dv.x * ww.x, g1 = dv.y * ww.y, g2 = dv.z * ww.z,
                      g3 = dv.w * ww.w;
          sg += (double(g0) + double(g1)) + (double(g2) + double(g3));
          sgx += (double(g0) * double(xh.x) + double(g1) * double(xh.y)) +
                 (double(g2) * double(xh.z) + double(g3) * double(xh.w));
          float4 a = sums[j], c = sums[nvec + j];
          a.x = __fmaf_rn(dv.x, xh.x, a.x);
          a.y = __fmaf_rn(dv.y, xh.y, a.y);
          a.z = __fmaf_rn(dv.z, xh.z, a.z);
          a.w = __fmaf_rn(dv.w, xh.w, a.w);
          c = make_float4(__fadd_rn(c.x, dv.x), __fadd_rn(c.y, dv.y),
                          __fadd_rn(c.z, dv.z), __fadd_rn(c.w, dv.w));
          sums[j] = a;
          sums[nvec + j] = c;
        }
      }
      sg = warpSum(sg);
      sgx = warpSum(sgx);
      const float c1 = float(sg / double(cols));
      const float c2 = float(sgx / double(cols));
      // The row is in registers: dx may be dy.
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int64_t j = lane + 32 * i;
        if (j < nvec) {
          const float4 dv = widen4(d[i]), xv = widen4(xs[i]), ww = w[j];
          const float4 xh =
              make_float4((xv.x - m) * s, (xv.y - m) * s, (xv.z - m) * s,
                          (xv.w - m) * s);
          float4 v = make_float4(s * (dv.x * ww.x - c1 - xh.x * c2),
                                 s * (dv.y * ww.y - c1 - xh.y * c2),
                                 s * (dv.z * ww.z - c1 - xh.z * c2),
                                 s * (dv.w * ww.w - c1 - xh.w * c2));
          if (acc) {
            const float4 ov = widen4(o[i]);
            v = make_float4(__fadd_rn(ov.x, v.x), __fadd_rn(ov.y, v.y),
                            __fadd_rn(ov.z, v.z), __fadd_rn(ov.w, v.w));
          }
          put4(dxr + j, v);
          if (dxh)
            put4(dxh + r * nvec + j, v);
        }
      }
    }
    __syncthreads(); // every warp's sums (and, for dpart, the copy) stored
    // The warps' sums in warp order.
    float4 *out = part + blk * 2 * nvec;
    for (int64_t j = threadIdx.x; j < 2 * nvec; j += blockDim.x) {
      float4 a = dyn[j];
      for (int wv = 1; wv < kRowWarps; ++wv) {
        const float4 b = dyn[int64_t(wv) * 2 * nvec + j];
        a = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
      }
      out[j] = a;
    }
    // The copy's rows of this block into the lane sums: rows 32 blk + ty,
    // + 4, ... (blocks start at multiples of 4 from the chunk's first row:
    // each lane keeps its phase). Each thread owns its lanes' slots.
    if (dpart) {
      const int64_t b0 = blk * kGradRows, b1 = imin(rows, b0 + kGradRows);
      for (int64_t v = tx; v < nvec; v += kRsCols) {
        double *slot = lanes + (ty * nvec + v) * 4;
        double s4[4] = {0.0, 0.0, 0.0, 0.0};
        if (sb > 0)
          for (int c = 0; c < 4; ++c)
            s4[c] = slot[c];
        colLaneSum(copy, b0 + ty, b1, nvec, v, s4,
                   [](const __nv_bfloat16 *p) { return load4Cg(p); });
        for (int c = 0; c < 4; ++c)
          slot[c] = s4[c];
      }
    }
    __syncthreads(); // the sums are zeroed again by the next 32 rows
  }
  if (!dpart)
    return;
  // ReduceSum's chunk partial of chunk blockIdx.x: lane 0 adds lanes 1, 2,
  // 3 in order (every lane's slots were written before the last barrier).
  double *pout = dpart + int64_t(blockIdx.x) * cols;
  if (ty == 0)
    for (int64_t v = tx; v < nvec; v += kRsCols)
      for (int c = 0; c < 4; ++c) {
        double s = lanes[v * 4 + c];
        for (int l = 1; l < kRsLanes; ++l)
          s += lanes[(l * nvec + v) * 4 + c];
        pout[4 * v + c] = s;
      }
}

/// What one launch of layerNormGradWarpKernel is given.
template <typename DY, typename X, typename DX> struct GradWarpArgs {
  const DY *dy;
  const X *x;
  const float *w, *mean, *rstd;
  DX *dx;
  Bf16x4 *dxh;             ///< an f32 dx's bf16 copy, or null
  const __nv_bfloat16 *copy; ///< what dpart sums: dxh, or a bf16 dx
  int64_t rows, cols;
  bool acc;
  int64_t subBlocks; ///< 32-row blocks per CUDA block
  float4 *part;
  double *dpart; ///< null: no column sums of the copy
};

template <int NV, typename DY, typename X, typename DX>
void launchLayerNormGradWarp(const Ctx &ctx, unsigned blocks,
                             const GradWarpArgs<DY, X, DX> &a) {
  // The warps' sums and the lane sums: up to 96 KiB (nvec <= 256), over the
  // default 48 KiB, so each instantiation opts in once.
  const size_t bytes = gradWarpSharedBytes(a.cols / 4, a.dpart != nullptr);
  static const bool optIn = [] {
    checkCuda(cudaFuncSetAttribute(layerNormGradWarpKernel<NV, DY, X, DX>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(gradWarpSharedBytes(8 * 32, true))),
              "cudaFuncSetAttribute (LayerNormGrad)");
    return true;
  }();
  (void)optIn;
  layerNormGradWarpKernel<NV, DY, X, DX>
      <<<blocks, kRowWarps * 32, bytes, ctx.stream>>>(
          a.dy, a.x, reinterpret_cast<const float4 *>(a.w), a.mean, a.rstd,
          reinterpret_cast<typename Stored4<DX>::type *>(a.dx), a.dxh, a.copy,
          a.rows, a.cols / 4, a.acc, a.subBlocks, a.part, a.dpart);
}

template <typename DY, typename X, typename DX>
void layerNormGradWarp(const Ctx &ctx, int nv, unsigned blocks,
                       const GradWarpArgs<DY, X, DX> &a) {
  switch (nv) {
  case 2:
    return launchLayerNormGradWarp<2>(ctx, blocks, a);
  case 4:
    return launchLayerNormGradWarp<4>(ctx, blocks, a);
  case 6:
    return launchLayerNormGradWarp<6>(ctx, blocks, a);
  default:
    return launchLayerNormGradWarp<8>(ctx, blocks, a);
  }
}

//===----------------------------------------------------------------------===//
// Softmax, SoftmaxGrad
//===----------------------------------------------------------------------===//

__global__ void softmaxKernel(const float *x, float *y, int64_t rows,
                              int64_t cols, bool causal, int64_t seq,
                              float sc) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    // Columns c > r % seq are masked; column 0 never is.
    const int64_t valid = causal ? imin(cols, r % seq + 1) : cols;
    float m = 0.0f;
    if (sc != 0.0f) {
      float e = xr[0];
      if (sc > 0.0f) {
        for (int64_t j = threadIdx.x; j < valid; j += blockDim.x)
          e = xr[j] > e ? xr[j] : e;
        m = sc * blockExtreme<true>(e, shf);
      } else {
        for (int64_t j = threadIdx.x; j < valid; j += blockDim.x)
          e = xr[j] < e ? xr[j] : e;
        m = sc * blockExtreme<false>(e, shf);
      }
    }
    // Everyone has read x for the extreme (a barrier inside); now each
    // thread overwrites only what it reads.
    __syncthreads();
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) {
      const float v = expf(sc * xr[j] - m);
      yr[j] = v;
      s += double(v);
    }
    s = blockSum(s, shd);
    const float inv = float(1.0 / s);
    for (int64_t j = threadIdx.x; j < valid; j += blockDim.x)
      yr[j] *= inv;
    for (int64_t j = valid + threadIdx.x; j < cols; j += blockDim.x)
      yr[j] = 0.0f;
  }
}

__global__ void softmaxGradKernel(const float *y, const float *dy, float *dx,
                                  int64_t rows, int64_t cols, float sc) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *yr = y + r * cols, *dyr = dy + r * cols;
    float *dxr = dx + r * cols;
    double d = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      d += double(dyr[j]) * double(yr[j]);
    const float df = float(blockSum(d, sh));
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      dxr[j] = sc * (yr[j] * (dyr[j] - df));
  }
}

} // namespace

namespace {

/// LayerNorm with x of type X (f32, or bf16 widened on load).
template <typename X>
void layerNorm(const Ctx &ctx, const Instr &in, const X *x, const Refs &ins,
               const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const int64_t ldy = in.i.size() == 3 ? in.i[2] : cols;
  const float *w = ins[1].f32(), *b = ins[2].f32();
  float *mean = outs[1].f32(), *rstd = outs[2].f32();
  const double eps = double(in.f[0]);
  const bool bf16 = outs[0].value->dtype == DType::BF16;
  void *y = outs[0].data;
  const int nv = cols % 4 == 0 && ldy % 4 == 0 ? warpVectors(cols / 4) : 0;
  if (nv && aligned(x, 4 * sizeof(X)) && aligned(w, 16) && aligned(b, 16) &&
      aligned(y, bf16 ? 8 : 16)) {
    if (bf16)
      layerNormWarp(ctx, nv, x, w, b, static_cast<Bf16x4 *>(y), mean, rstd,
                    rows, cols, ldy, eps);
    else
      layerNormWarp(ctx, nv, x, w, b, static_cast<float4 *>(y), mean, rstd,
                    rows, cols, ldy, eps);
  } else if (bf16) {
    layerNormKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
        x, w, b, static_cast<__nv_bfloat16 *>(y), mean, rstd, rows, cols, ldy,
        eps);
  } else {
    layerNormKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
        x, w, b, static_cast<float *>(y), mean, rstd, rows, cols, ldy, eps);
  }
  checkLaunch("LayerNorm");
}

} // namespace

void runLayerNorm(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t rows = in.i[0];
  if (rows == 0)
    return;
  if (ins[0].value->dtype == DType::BF16)
    layerNorm(ctx, in, static_cast<const __nv_bfloat16 *>(ins[0].data), ins,
              outs);
  else
    layerNorm(ctx, in, ins[0].f32(), ins, outs);
}

namespace {

/// LayerNormGrad with dy of type DY and x of type X (each f32, or bf16
/// widened on load) and dx of type DX (f32, or bf16: the residual gradient
/// stored in bf16, its old value widened when accumulating, and then its
/// own bf16 copy: the column sums, a 4th output, are dx's).
template <typename DY, typename X, typename DX>
void layerNormGrad(const Ctx &ctx, const Instr &in, const DY *dy, const X *x,
                   const Refs &ins, const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const bool acc = in.i[2] != 0;
  const SumInto into = in.i.size() > 3 && in.i[3] != 0 ? SumInto::AddRounded
                                                       : SumInto::Overwrite;
  const float *w = ins[2].f32();
  const float *mean = ins[3].f32(), *rstd = ins[4].f32();
  constexpr bool dxBf16 = std::is_same_v<DX, __nv_bfloat16>;
  DX *dx = static_cast<DX *>(outs[0].data);
  float *dw = outs[1].f32(), *db = outs[2].f32();
  void *dxh = !dxBf16 && outs.size() > 3 ? outs[3].data : nullptr;
  const void *copy = dxBf16 ? static_cast<const void *>(dx) : dxh;
  // dsum: the copy's column sums, ReduceSum's bits (its chunks, its order).
  const size_t dsumAt = dxBf16 ? 3 : 4;
  float *dsum = outs.size() > dsumAt ? outs[dsumAt].f32() : nullptr;
  const SumInto dsumInto =
      in.i.size() > 4 && in.i[4] != 0 ? SumInto::AddWide : SumInto::Overwrite;
  const int nv = cols % 4 == 0 ? warpVectors(cols / 4) : 0;
  if (rows > 0 && nv && aligned(dy, 4 * sizeof(DY)) &&
      aligned(x, 4 * sizeof(X)) &&
      aligned(w, 16) && aligned(dx, 4 * sizeof(DX)) &&
      (!dxh || aligned(dxh, 8))) {
    // One pass: dx and each block's dw/db partials, then the blocks in order.
    const int64_t blocks = (rows + kGradRows - 1) / kGradRows;
    // With dsum a CUDA block takes one of ReduceSum's chunks (a whole
    // number of 32-row blocks: reduceSumChunkRows), which ReduceSum's vector
    // form (cols % 4 == 0, the copy 8-byte aligned, as here) sums.
    const int64_t subBlocks = dsum ? reduceSumChunkRows(rows) / kGradRows : 1;
    const int64_t grid = (blocks + subBlocks - 1) / subBlocks;
    if (grid > INT32_MAX)
      throw Error("LayerNormGrad: rows = " + std::to_string(rows) +
                  " is too many for the cuda kernel");
    Carve carve;
    const size_t partAt = carve.add(size_t(2 * blocks * cols) * sizeof(float));
    const size_t dpartAt =
        carve.add(dsum ? size_t(grid * cols) * sizeof(double) : 0);
    char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
    float4 *part = reinterpret_cast<float4 *>(ws + partAt);
    double *dpart = dsum ? reinterpret_cast<double *>(ws + dpartAt) : nullptr;
    layerNormGradWarp(
        ctx, nv, unsigned(grid),
        GradWarpArgs<DY, X, DX>{dy, x, w, mean, rstd, dx,
                                static_cast<Bf16x4 *>(dxh),
                                static_cast<const __nv_bfloat16 *>(copy), rows,
                                cols, acc, subBlocks, part, dpart});
    checkLaunch("LayerNormGrad");
    const ChunkSumJob<float> wb{reinterpret_cast<const float *>(part),
                                blocks, 2 * cols, cols, dw, db, into};
    if (dsum)
      sumChunks(ctx, wb,
                ChunkSumJob<double>{dpart, grid, cols, cols, dsum, dsum,
                                    dsumInto});
    else
      sumChunks(ctx, wb.part, wb.chunks, wb.width, wb.split, wb.out0,
                wb.out1, wb.into);
    return;
  }
  const int64_t chunk = chunkRows(rows);
  const int64_t chunks = std::max<int64_t>(1, (rows + chunk - 1) / chunk);
  const int64_t colBlocks = (cols + 255) / 256;
  if (colBlocks > INT32_MAX)
    throw Error("LayerNormGrad: cols = " + std::to_string(cols) +
                " is too large for the cuda kernel");
  Carve carve;
  const size_t partAt = carve.add(size_t(2 * chunks * cols) * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  double *part = reinterpret_cast<double *>(ws + partAt);
  // dw/db first: dx may overwrite dy.
  layerNormParamPartials<<<dim3(unsigned(colBlocks), unsigned(chunks)), 256, 0,
                           ctx.stream>>>(dy, x, mean, rstd, rows, cols, chunk,
                                         part);
  checkLaunch("LayerNormGrad (partials)");
  sumChunks(ctx, static_cast<const double *>(part), chunks, 2 * cols, cols, dw,
            db, into);
  if (rows > 0) {
    layerNormDxKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
        dy, x, w, mean, rstd, dx, static_cast<__nv_bfloat16 *>(dxh), rows, cols,
        acc);
    checkLaunch("LayerNormGrad (dx)");
  }
  // This form sums the copy after writing it, with ReduceSum's own kernels
  // (the forms and bits a ReduceSum of the copy would pick).
  if (dsum)
    reduceSumBf16(ctx, copy, rows, cols, dsumInto == SumInto::AddWide, dsum);
}

} // namespace

namespace {
template <typename DY, typename DX>
void layerNormGradX(const Ctx &ctx, const Instr &in, const DY *dy,
                    const Refs &ins, const Refs &outs) {
  if (ins[1].value->dtype == DType::BF16)
    layerNormGrad<DY, __nv_bfloat16, DX>(
        ctx, in, dy, static_cast<const __nv_bfloat16 *>(ins[1].data), ins,
        outs);
  else
    layerNormGrad<DY, float, DX>(ctx, in, dy, ins[1].f32(), ins, outs);
}

template <typename DY>
void layerNormGradDx(const Ctx &ctx, const Instr &in, const DY *dy,
                     const Refs &ins, const Refs &outs) {
  if (outs[0].value->dtype == DType::BF16)
    layerNormGradX<DY, __nv_bfloat16>(ctx, in, dy, ins, outs);
  else
    layerNormGradX<DY, float>(ctx, in, dy, ins, outs);
}
} // namespace

void runLayerNormGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  if (ins[0].value->dtype == DType::BF16)
    layerNormGradDx(ctx, in, static_cast<const __nv_bfloat16 *>(ins[0].data),
                    ins, outs);
  else
    layerNormGradDx(ctx, in, ins[0].f32(), ins, outs);
}

void runSoftmax(const Ctx &ctx, const Instr &in, const Refs &ins,
                const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  if (rows == 0)
    return;
  softmaxKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
      ins[0].f32(), outs[0].f32(), rows, cols, in.i[2] != 0, in.i[3], in.f[0]);
  checkLaunch("Softmax");
}

void runSoftmaxGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                    const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  if (rows == 0 || cols == 0)
    return;
  softmaxGradKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
      ins[0].f32(), ins[1].f32(), outs[0].f32(), rows, cols, in.f[0]);
  checkLaunch("SoftmaxGrad");
}

} // namespace mega::rt::gpu

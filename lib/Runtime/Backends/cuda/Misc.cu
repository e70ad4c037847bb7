//===- Misc.cu - Fill, Copy, ReduceSum, Transpose -------------------------===//
//
// ReduceSum and Transpose are pure data movement: their fast forms move 16
// (or 8) bytes per thread access where the shape and the pointers allow,
// and fall back to one element per thread otherwise (views may start
// anywhere, shapes may be odd), picked per launch.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"
#include "mega/Runtime/TransposeDims.h"

#include <cuda_bf16.h>

#include <cstdlib>
#include <string>

namespace mega::rt::gpu {

//===----------------------------------------------------------------------===//
// Fill, Copy
//===----------------------------------------------------------------------===//

namespace {

__global__ void fillKernel(float *y, int64_t n, float v) {
  for (int64_t k = globalThread(); k < n; k += globalStride())
    y[k] = v;
}

} // namespace

void runFill(const Ctx &ctx, const Instr &in, const Refs &, const Refs &outs) {
  const int64_t n = outs[0].numel();
  if (n == 0)
    return;
  fillKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(outs[0].f32(), n,
                                                           in.f[0]);
  checkLaunch("Fill");
}

void runCopy(const Ctx &ctx, const Instr &, const Refs &ins, const Refs &outs) {
  // check() allows only 4-byte dtypes and an exact or no overlap.
  const size_t bytes = size_t(ins[0].numel()) * 4;
  if (bytes == 0 || ins[0].data == outs[0].data)
    return;
  checkCuda(cudaMemcpyAsync(outs[0].data, ins[0].data, bytes,
                            cudaMemcpyDeviceToDevice, ctx.stream),
            "cudaMemcpyAsync (Copy)");
}

//===----------------------------------------------------------------------===//
// ReduceSum: column sums; per-chunk partials in double, then chunks in order.
// X = float, or __nv_bfloat16 (a bias gradient summed from the gradient's
// bf16 copy: widened exactly, then summed as f32 is).
//===----------------------------------------------------------------------===//

namespace {

/// part[c * inner + j] = sum of rows [c*chunk, (c+1)*chunk) of column j.
template <typename X>
__global__ void colPartialKernel(const X *__restrict__ x, int64_t outer,
                                 int64_t inner, int64_t chunk,
                                 double *__restrict__ part) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c = blockIdx.y;
  if (j >= inner)
    return;
  const int64_t r0 = c * chunk, r1 = imin(outer, r0 + chunk);
  double s = 0.0;
  for (int64_t r = r0; r < r1; ++r)
    s += double(load1(x + r * inner + j));
  part[c * inner + j] = s;
}

/// The vector form: inner % 4 == 0, x aligned to 4 elements (16 bytes f32,
/// 8 bf16). Block (kRsCols, kRsLanes) = (64, 4): column vector
/// blockIdx.x * 64 + tx of chunk blockIdx.y, colChunkPartialVec's order
/// (DeviceUtil.cuh; LayerNormGrad's column sums of its copy share it).
template <typename X>
__global__ void __launch_bounds__(kRsCols *kRsLanes)
    colPartialVecKernel(const X *__restrict__ x, int64_t outer, int64_t nvec,
                        int64_t chunk, double *__restrict__ part) {
  __shared__ double sh[kRsLanes - 1][kRsCols][4];
  const int64_t c = blockIdx.y;
  const int64_t r0 = c * chunk, r1 = imin(outer, r0 + chunk);
  colChunkPartialVec(
      x, r0, r1, nvec, int64_t(blockIdx.x) * kRsCols + threadIdx.x,
      int(threadIdx.x), int(threadIdx.y), sh, part + c * (4 * nvec),
      [](const X *p) { return load4(p); });
}

/// The last step of the chunk sums: warp 0 adds the 8 warps' sums of column
/// j in warp order (sh[w][lane] = warp w's) and stores the total as `into`
/// says, into out0 for j < split, else out1.
__device__ inline void storeChunkSum(double s, double (*sh)[32],
                                     int lane, int64_t j, int64_t split,
                                     float *out0, float *out1, SumInto into) {
  for (int w = 1; w < 8; ++w)
    s += sh[w][lane];
  float *y = j < split ? out0 + j : out1 + (j - split);
  if (into == SumInto::AddWide)
    *y = float(double(*y) + s);
  else if (into == SumInto::AddRounded)
    *y = __fadd_rn(*y, float(s)); // never contracted: Elementwise's Add
  else
    *y = float(s);
}

/// Column j < width of part[chunks][width], summed over the chunks in a
/// fixed tree: 8 warps each take chunks w, w + 8, ... in order, then the
/// warps in order. Columns [0, split) go to out0, [split, width) to out1
/// (LayerNorm's dw and db), stored as `into` says. The grid is narrow (one
/// block per 32 columns: 48 for GPT-2 small's dw|db) and every load is a
/// partial just written, so a warp loads `Prefetch` chunks before it adds
/// them, in the same order (the same bits), instead of each load waiting
/// on the add before it. Profiled on an H100 at GPT-2 small's dw|db (512
/// chunks of 1536): 7 us, 12% of the warps an SM could hold, the warps
/// waiting on their loads 69% of the time.
template <typename P, int Prefetch>
__device__ inline void chunkSumBlock(const P *__restrict__ part, int64_t chunks,
                                     int64_t width, int64_t split,
                                     float *out0, float *out1, SumInto into,
                                     int64_t block) {
  __shared__ double sh[8][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j = block * 32 + lane;
  double s = 0.0;
  if (j < width) {
    int64_t c = warp;
    for (; c + 8 * (Prefetch - 1) < chunks; c += 8 * Prefetch) {
      P v[Prefetch];
#pragma unroll
      for (int u = 0; u < Prefetch; ++u)
        v[u] = part[(c + 8 * u) * width + j];
#pragma unroll
      for (int u = 0; u < Prefetch; ++u)
        s += double(v[u]);
    }
    for (; c < chunks; c += 8)
      s += double(part[c * width + j]);
  }
  sh[warp][lane] = s;
  __syncthreads();
  if (warp != 0 || j >= width)
    return;
  storeChunkSum(s, sh, lane, j, split, out0, out1, into);
}

template <typename P, int Prefetch>
__global__ void __launch_bounds__(256)
    chunkSumKernel(const P *__restrict__ part, int64_t chunks, int64_t width,
                   int64_t split, float *out0, float *out1, SumInto into) {
  chunkSumBlock<P, Prefetch>(part, chunks, width, split, out0, out1, into,
                             blockIdx.x);
}

/// Two chunk sums in one launch (LayerNormGrad's dw|db and its copy's
/// column sums): blocks [0, blocksA) are a's chunkSumKernel blocks, the
/// rest b's; each the same code, so the same bits as two launches, without
/// the second launch's gap and ramp on a GPU the first leaves nearly idle.
template <int Prefetch>
__global__ void __launch_bounds__(256)
    chunkSumPairKernel(ChunkSumJob<float> a, ChunkSumJob<double> b,
                       int64_t blocksA) {
  if (blockIdx.x < blocksA)
    chunkSumBlock<float, Prefetch>(a.part, a.chunks, a.width, a.split, a.out0,
                                   a.out1, a.into, blockIdx.x);
  else
    chunkSumBlock<double, Prefetch>(b.part, b.chunks, b.width, b.split,
                                    b.out0, b.out1, b.into,
                                    int64_t(blockIdx.x) - blocksA);
}

/// Whether the chunk sums load 16 chunks ahead (the default) or one at a
/// time (MEGA_CUDA_CHUNK_PREFETCH=0, to time against; LayerNormGrad's two
/// sums then launch apart).
bool chunkPrefetch() {
  static const bool on = [] {
    const char *e = std::getenv("MEGA_CUDA_CHUNK_PREFETCH");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

/// Launches the chunk sums over `width` columns (one block per 32).
template <typename P>
void launchChunkSum(const Ctx &ctx, const P *part, int64_t chunks,
                    int64_t width, int64_t split, float *out0, float *out1,
                    SumInto into) {
  const int64_t blocks = (width + 31) / 32;
  if (blocks > INT32_MAX)
    throw Error("cuda: a column sum over " + std::to_string(width) +
                " columns is too wide for the kernel");
  if (chunkPrefetch())
    chunkSumKernel<P, 16><<<unsigned(blocks), 256, 0, ctx.stream>>>(
        part, chunks, width, split, out0, out1, into);
  else
    chunkSumKernel<P, 1><<<unsigned(blocks), 256, 0, ctx.stream>>>(
        part, chunks, width, split, out0, out1, into);
  checkLaunch("column sums of the chunks");
}

} // namespace

void sumChunks(const Ctx &ctx, const double *part, int64_t chunks,
               int64_t width, int64_t split, float *out0, float *out1,
               SumInto into) {
  launchChunkSum(ctx, part, chunks, width, split, out0, out1, into);
}
void sumChunks(const Ctx &ctx, const ChunkSumJob<float> &a,
               const ChunkSumJob<double> &b) {
  const int64_t blocksA = (a.width + 31) / 32, blocksB = (b.width + 31) / 32;
  if (!chunkPrefetch() || blocksA + blocksB > INT32_MAX) {
    sumChunks(ctx, a.part, a.chunks, a.width, a.split, a.out0, a.out1, a.into);
    sumChunks(ctx, b.part, b.chunks, b.width, b.split, b.out0, b.out1, b.into);
    return;
  }
  chunkSumPairKernel<16><<<unsigned(blocksA + blocksB), 256, 0, ctx.stream>>>(
      a, b, blocksA);
  checkLaunch("column sums of the chunks");
}
void sumChunks(const Ctx &ctx, const float *part, int64_t chunks,
               int64_t width, int64_t split, float *out0, float *out1,
               SumInto into) {
  launchChunkSum(ctx, part, chunks, width, split, out0, out1, into);
}

namespace {

template <typename X>
void reduceSum(const Ctx &ctx, const X *x, int64_t outer, int64_t inner,
               bool acc, float *y) {
  const bool vec = inner % 4 == 0 && aligned(x, 4 * sizeof(X));
  // Chunks of reduceSumChunkRows (Common.h): the partials stay small and
  // grid.y in range. Vector form: 64 column vectors per block; element
  // form: 256 columns per block.
  const int64_t chunk = reduceSumChunkRows(outer);
  const int64_t chunks = std::max<int64_t>(1, (outer + chunk - 1) / chunk);
  const int64_t nvec = inner / 4;
  const int64_t colBlocks =
      vec ? (nvec + kRsCols - 1) / kRsCols : (inner + 255) / 256;
  if (colBlocks > INT32_MAX)
    throw Error("ReduceSum: inner = " + std::to_string(inner) +
                " is too large for the cuda kernel");
  Carve carve;
  size_t partAt = carve.add(size_t(chunks * inner) * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  double *part = reinterpret_cast<double *>(ws + partAt);
  if (vec)
    colPartialVecKernel<X><<<dim3(unsigned(colBlocks), unsigned(chunks)),
                             dim3(kRsCols, kRsLanes), 0, ctx.stream>>>(
        x, outer, nvec, chunk, part);
  else
    colPartialKernel<X><<<dim3(unsigned(colBlocks), unsigned(chunks)), 256, 0,
                          ctx.stream>>>(x, outer, inner, chunk, part);
  checkLaunch("ReduceSum (partials)");
  sumChunks(ctx, static_cast<const double *>(part), chunks, inner, inner, y, y,
            acc ? SumInto::AddWide : SumInto::Overwrite);
}

} // namespace

void reduceSumBf16(const Ctx &ctx, const void *x, int64_t outer, int64_t inner,
                   bool acc, float *y) {
  if (inner > 0)
    reduceSum(ctx, static_cast<const __nv_bfloat16 *>(x), outer, inner, acc, y);
}

void runReduceSum(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t outer = in.i[0], inner = in.i[1];
  const bool acc = in.i[2] != 0;
  if (inner == 0)
    return;
  if (ins[0].value->dtype == DType::BF16)
    reduceSum(ctx, static_cast<const __nv_bfloat16 *>(ins[0].data), outer,
              inner, acc, outs[0].f32());
  else
    reduceSum(ctx, ins[0].f32(), outer, inner, acc, outs[0].f32());
}

//===----------------------------------------------------------------------===//
// Transpose (rank <= 6): 4-byte elements, f32 -> bf16 (a cast folded in) or
// bf16 -> bf16.
//===----------------------------------------------------------------------===//

namespace {

using Perm = TransposeDims;

/// The index math in I: 32-bit when every offset fits (64-bit division is
/// many instructions on the GPU and dominated these gathers).
template <typename I> struct PermT {
  int rank;
  I dim[6];
  I ist[6];
};

__device__ inline void put(uint32_t *y, uint32_t v) { *y = v; }
__device__ inline void put(uint16_t *y, uint16_t v) { *y = v; }
__device__ inline void put(__nv_bfloat16 *y, float v) {
  *y = __float2bfloat16_rn(v);
}

/// The input offset of output element (or vector) e.
template <typename I>
__device__ inline I gatherOffset(I e, const PermT<I> &p) {
  I off = 0;
  for (int j = p.rank - 1; j >= 0; --j) {
    off += (e % p.dim[j]) * p.ist[j];
    e /= p.dim[j];
  }
  return off;
}

/// One thread per output element; T -> U is a copy (4- or 2-byte elements)
/// or f32 -> bf16 (a cast folded into the transpose).
template <typename I, typename T, typename U>
__global__ void transposeKernel(const T *__restrict__ x, U *__restrict__ y,
                                I n, const __grid_constant__ PermT<I> p) {
  const I stride = I(gridDim.x) * blockDim.x;
  for (I e = I(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    put(y + e, x[gatherOffset(e, p)]);
}

/// Four consecutive elements of one type, moved in one access (with
/// DeviceUtil.cuh's float4 -> Bf16x4).
struct alignas(8) U16x4 {
  uint16_t v[4];
};
__device__ inline void put4(uint4 *y, uint4 v) { *y = v; }
__device__ inline void put4(U16x4 *y, U16x4 v) { *y = v; }
using gpu::put4;

/// The vector form, when the innermost output dim is contiguous in the
/// input (ist = 1) and a multiple of 4 long, every other input stride a
/// multiple of 4, and both pointers aligned to their vector: p is the
/// permutation over vectors (innermost dim / 4, its stride 4 elements),
/// so gatherOffset gives the element offset of the vector's first element.
template <typename I, typename T4, typename U4>
__global__ void transposeVecKernel(const typename T4::Elem *__restrict__ x,
                                   U4 *__restrict__ y, I nv,
                                   const __grid_constant__ PermT<I> p) {
  const I stride = I(gridDim.x) * blockDim.x;
  for (I v = I(blockIdx.x) * blockDim.x + threadIdx.x; v < nv; v += stride)
    put4(y + v, *reinterpret_cast<const typename T4::Vec *>(
                    x + gatherOffset(v, p)));
}

/// The input side of a vector: element type and 4-element vector type.
struct In32 {
  using Elem = uint32_t;
  using Vec = uint4;
};
struct InF32 {
  using Elem = float;
  using Vec = float4;
};
struct In16 {
  using Elem = uint16_t;
  using Vec = U16x4;
};

template <typename I> PermT<I> narrow(const Perm &p) {
  PermT<I> q{p.rank, {}, {}};
  for (int j = 0; j < p.rank; ++j) {
    q.dim[j] = I(p.dim[j]);
    q.ist[j] = I(p.ist[j]);
  }
  return q;
}

template <typename T, typename U>
void launchTranspose(const Ctx &ctx, const T *x, U *y, int64_t n,
                     const Perm &p) {
  const unsigned grid = gridFor(ctx, n, 256);
  if (n < (int64_t(1) << 31))
    transposeKernel<uint32_t, T, U><<<grid, 256, 0, ctx.stream>>>(
        x, y, uint32_t(n), narrow<uint32_t>(p));
  else
    transposeKernel<int64_t, T, U>
        <<<grid, 256, 0, ctx.stream>>>(x, y, n, narrow<int64_t>(p));
}

/// Whether the vector form takes p with x (elements of `inBytes`) and y
/// (of `outBytes`); if so, q is p over vectors.
bool vectorPerm(const Perm &p, const void *x, int inBytes, const void *y,
                int outBytes, Perm &q) {
  if (p.rank < 1 || p.ist[p.rank - 1] != 1 || p.dim[p.rank - 1] % 4 != 0 ||
      !aligned(x, size_t(4 * inBytes)) || !aligned(y, size_t(4 * outBytes)))
    return false;
  for (int j = 0; j + 1 < p.rank; ++j)
    if (p.ist[j] % 4 != 0)
      return false;
  q = p;
  q.dim[p.rank - 1] = p.dim[p.rank - 1] / 4;
  q.ist[p.rank - 1] = 4;
  return true;
}

template <typename T4, typename U4>
void launchTransposeVec(const Ctx &ctx, const typename T4::Elem *x, U4 *y,
                        int64_t n, const Perm &q) {
  const int64_t nv = n / 4;
  const unsigned grid = gridFor(ctx, nv, 256);
  if (n < (int64_t(1) << 31))
    transposeVecKernel<uint32_t, T4, U4><<<grid, 256, 0, ctx.stream>>>(
        x, y, uint32_t(nv), narrow<uint32_t>(q));
  else
    transposeVecKernel<int64_t, T4, U4>
        <<<grid, 256, 0, ctx.stream>>>(x, y, nv, narrow<int64_t>(q));
}

} // namespace

void runTranspose(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t n = ins[0].numel();
  if (n == 0)
    return;
  Perm p = simplifyTranspose(in);
  if (p.rank < 1) { // every dim 1: one element
    p.rank = 1;
    p.dim[0] = n;
    p.ist[0] = 1;
  }
  const DType from = ins[0].value->dtype, to = outs[0].value->dtype;
  const void *x = ins[0].data;
  void *y = outs[0].data;
  const int inBytes = from == DType::BF16 ? 2 : 4;
  const int outBytes = to == DType::BF16 ? 2 : 4;
  if (p.rank == 1 && inBytes == outBytes) { // a plain copy
    checkCuda(cudaMemcpyAsync(y, x, size_t(n) * size_t(inBytes),
                              cudaMemcpyDeviceToDevice, ctx.stream),
              "cudaMemcpyAsync (Transpose)");
    return;
  }
  Perm q;
  const bool vec = vectorPerm(p, x, inBytes, y, outBytes, q);
  if (from == DType::F32 && to == DType::BF16) {
    if (vec)
      launchTransposeVec<InF32>(ctx, static_cast<const float *>(x),
                                static_cast<Bf16x4 *>(y), n, q);
    else
      launchTranspose(ctx, static_cast<const float *>(x),
                      static_cast<__nv_bfloat16 *>(y), n, p);
    checkLaunch("Transpose (to bf16)");
  } else if (inBytes == 2) {
    if (vec)
      launchTransposeVec<In16>(ctx, static_cast<const uint16_t *>(x),
                               static_cast<U16x4 *>(y), n, q);
    else
      launchTranspose(ctx, static_cast<const uint16_t *>(x),
                      static_cast<uint16_t *>(y), n, p);
    checkLaunch("Transpose (bf16)");
  } else {
    if (vec)
      launchTransposeVec<In32>(ctx, static_cast<const uint32_t *>(x),
                               static_cast<uint4 *>(y), n, q);
    else
      launchTranspose(ctx, static_cast<const uint32_t *>(x),
                      static_cast<uint32_t *>(y), n, p);
    checkLaunch("Transpose");
  }
}

} // namespace mega::rt::gpu

//===- Misc.cu - Fill, Copy, ReduceSum, Transpose -------------------------===//
#include "DeviceUtil.cuh"
#include "mega/Runtime/TransposeDims.h"

#include <cuda_bf16.h>

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
//===----------------------------------------------------------------------===//

namespace {

/// part[c * inner + j] = sum of rows [c*chunk, (c+1)*chunk) of column j.
__global__ void colPartialKernel(const float *__restrict__ x, int64_t outer,
                                 int64_t inner, int64_t chunk,
                                 double *__restrict__ part) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c = blockIdx.y;
  if (j >= inner)
    return;
  const int64_t r0 = c * chunk, r1 = imin(outer, r0 + chunk);
  double s = 0.0;
  for (int64_t r = r0; r < r1; ++r)
    s += double(x[r * inner + j]);
  part[c * inner + j] = s;
}

__global__ void colFinalKernel(const double *__restrict__ part, int64_t chunks,
                               int64_t inner, bool acc, float *y) {
  for (int64_t j = globalThread(); j < inner; j += globalStride()) {
    double s = 0.0;
    for (int64_t c = 0; c < chunks; ++c)
      s += part[c * inner + j];
    y[j] = acc ? float(double(y[j]) + s) : float(s);
  }
}

} // namespace

void runReduceSum(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t outer = in.i[0], inner = in.i[1];
  const bool acc = in.i[2] != 0;
  if (inner == 0)
    return;
  // Chunks of at least 64 rows, at most 1024 chunks (so the partials stay
  // small and grid.y in range); columns in blocks of 256 (grid.x).
  int64_t chunk = std::max<int64_t>(64, (outer + 1023) / 1024);
  int64_t chunks = std::max<int64_t>(1, (outer + chunk - 1) / chunk);
  int64_t colBlocks = (inner + 255) / 256;
  if (colBlocks > INT32_MAX)
    throw Error("ReduceSum: inner = " + std::to_string(inner) +
                " is too large for the cuda kernel");
  Carve carve;
  size_t partAt = carve.add(size_t(chunks * inner) * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  double *part = reinterpret_cast<double *>(ws + partAt);
  colPartialKernel<<<dim3(unsigned(colBlocks), unsigned(chunks)), 256, 0,
                     ctx.stream>>>(ins[0].f32(), outer, inner, chunk, part);
  checkLaunch("ReduceSum (partials)");
  colFinalKernel<<<gridFor(ctx, inner, 256), 256, 0, ctx.stream>>>(
      part, chunks, inner, acc, outs[0].f32());
  checkLaunch("ReduceSum");
}

//===----------------------------------------------------------------------===//
// Transpose (rank <= 6), 4-byte elements: one thread per output element.
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
__device__ inline void put(__nv_bfloat16 *y, float v) {
  *y = __float2bfloat16_rn(v);
}

/// One thread per output element; T -> U is a copy (4-byte elements) or
/// f32 -> bf16 (a cast folded into the transpose).
template <typename I, typename T, typename U>
__global__ void transposeKernel(const T *__restrict__ x, U *__restrict__ y,
                                I n, const __grid_constant__ PermT<I> p) {
  const I stride = I(gridDim.x) * blockDim.x;
  for (I e = I(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    I idx = e, off = 0;
    for (int j = p.rank - 1; j >= 0; --j) {
      off += (idx % p.dim[j]) * p.ist[j];
      idx /= p.dim[j];
    }
    put(y + e, x[off]);
  }
}

template <typename T, typename U>
void launchTranspose(const Ctx &ctx, const T *x, U *y, int64_t n,
                     const Perm &p) {
  const unsigned grid = gridFor(ctx, n, 256);
  if (n < (int64_t(1) << 31)) {
    PermT<uint32_t> q{p.rank, {}, {}};
    for (int j = 0; j < p.rank; ++j) {
      q.dim[j] = uint32_t(p.dim[j]);
      q.ist[j] = uint32_t(p.ist[j]);
    }
    transposeKernel<uint32_t, T, U>
        <<<grid, 256, 0, ctx.stream>>>(x, y, uint32_t(n), q);
  } else {
    PermT<int64_t> q{p.rank, {}, {}};
    for (int j = 0; j < p.rank; ++j) {
      q.dim[j] = p.dim[j];
      q.ist[j] = p.ist[j];
    }
    transposeKernel<int64_t, T, U><<<grid, 256, 0, ctx.stream>>>(x, y, n, q);
  }
}

} // namespace

void runTranspose(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t n = ins[0].numel();
  if (n == 0)
    return;
  Perm p = simplifyTranspose(in);
  if (outs[0].value->dtype == DType::BF16 && ins[0].value->dtype == DType::F32) {
    if (p.rank < 1) { // a plain copy: one dimension of stride 1
      p.rank = 1;
      p.dim[0] = n;
      p.ist[0] = 1;
    }
    launchTranspose(ctx, ins[0].f32(),
                    static_cast<__nv_bfloat16 *>(outs[0].data), n, p);
    checkLaunch("Transpose (to bf16)");
    return;
  }
  if (p.rank <= 1) {
    checkCuda(cudaMemcpyAsync(outs[0].data, ins[0].data, size_t(n) * 4,
                              cudaMemcpyDeviceToDevice, ctx.stream),
              "cudaMemcpyAsync (Transpose)");
    return;
  }
  launchTranspose(ctx, static_cast<const uint32_t *>(ins[0].data),
                  static_cast<uint32_t *>(outs[0].data), n, p);
  checkLaunch("Transpose");
}

} // namespace mega::rt::gpu

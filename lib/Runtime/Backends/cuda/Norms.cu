//===- Norms.cu - LayerNorm, Softmax and their gradients ------------------===//
//
// One block per row for the row statistics, accumulated in double like the
// CPU's. LayerNorm's dw/db sum over rows in two passes: per-chunk partials
// in double, then the chunks in order (no atomics, same bits every run).
//
// In place (y = x, dx = dy, dx = y): every row kernel reads the whole row
// for its statistics before a block-wide barrier, and afterwards each thread
// reads an element just before it writes the same element.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

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

__global__ void layerNormKernel(const float *x, const float *__restrict__ w,
                                const float *__restrict__ b, float *y,
                                float *__restrict__ mean,
                                float *__restrict__ rstd, int64_t rows,
                                int64_t cols, double eps) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    double s = 0.0, q = 0.0;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
      const double v = double(xr[k]);
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
      yr[k] = (xr[k] - m) * sc * w[k] + b[k];
  }
}

//===----------------------------------------------------------------------===//
// LayerNormGrad
//===----------------------------------------------------------------------===//

/// part[(2c) * cols + j] = sum over chunk c of dy * xhat, part[(2c+1) *
/// cols + j] = sum of dy.
__global__ void layerNormParamPartials(const float *__restrict__ dy,
                                       const float *__restrict__ x,
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
    const float d = dy[r * cols + j];
    const float xhat = (x[r * cols + j] - mean[r]) * rstd[r];
    pw += double(d) * double(xhat);
    pb += double(d);
  }
  part[(2 * c) * cols + j] = pw;
  part[(2 * c + 1) * cols + j] = pb;
}

__global__ void layerNormParamFinal(const double *__restrict__ part,
                                    int64_t chunks, int64_t cols,
                                    float *__restrict__ dw,
                                    float *__restrict__ db) {
  for (int64_t j = globalThread(); j < cols; j += globalStride()) {
    double sw = 0.0, sb = 0.0;
    for (int64_t c = 0; c < chunks; ++c) {
      sw += part[(2 * c) * cols + j];
      sb += part[(2 * c + 1) * cols + j];
    }
    dw[j] = float(sw);
    db[j] = float(sb);
  }
}

__global__ void layerNormDxKernel(const float *dy, const float *__restrict__ x,
                                  const float *__restrict__ w,
                                  const float *__restrict__ mean,
                                  const float *__restrict__ rstd, float *dx,
                                  int64_t rows, int64_t cols, bool acc) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *dyr = dy + r * cols, *xr = x + r * cols;
    float *dxr = dx + r * cols;
    const float m = mean[r], s = rstd[r];
    double sg = 0.0, sgx = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xhat = (xr[j] - m) * s;
      const float g = dyr[j] * w[j];
      sg += double(g);
      sgx += double(g) * double(xhat);
    }
    sg = blockSum(sg, sh);
    sgx = blockSum(sgx, sh);
    const float c1 = float(sg / double(cols));
    const float c2 = float(sgx / double(cols));
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xhat = (xr[j] - m) * s;
      const float g = dyr[j] * w[j];
      const float v = s * (g - c1 - xhat * c2);
      dxr[j] = acc ? dxr[j] + v : v;
    }
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

void runLayerNorm(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  if (rows == 0)
    return;
  layerNormKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
      ins[0].f32(), ins[1].f32(), ins[2].f32(), outs[0].f32(), outs[1].f32(),
      outs[2].f32(), rows, cols, double(in.f[0]));
  checkLaunch("LayerNorm");
}

void runLayerNormGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  const bool acc = in.i[2] != 0;
  const float *dy = ins[0].f32(), *x = ins[1].f32(), *w = ins[2].f32();
  const float *mean = ins[3].f32(), *rstd = ins[4].f32();
  float *dx = outs[0].f32(), *dw = outs[1].f32(), *db = outs[2].f32();
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
  layerNormParamFinal<<<gridFor(ctx, cols, 256), 256, 0, ctx.stream>>>(
      part, chunks, cols, dw, db);
  checkLaunch("LayerNormGrad (dw, db)");
  if (rows == 0)
    return;
  layerNormDxKernel<<<rowGrid(rows), rowThreads(cols), 0, ctx.stream>>>(
      dy, x, w, mean, rstd, dx, rows, cols, acc);
  checkLaunch("LayerNormGrad (dx)");
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

//===- Vocab.cu - Vocabulary-parallel embedding and loss ------------------===//
//
// The CPU's VocabParallel.cpp on the device: Megatron's
// VocabParallelEmbedding and vocab_parallel_cross_entropy, cut into kernels
// around the plan's collectives (the AllReduces of the row maxima, the
// sums and the target logits run between them, not in them). Rank r of the
// instruction's group (GroupPlace, from the communicator) holds the
// vocabulary rows [r*Vl, (r+1)*Vl).
//
// Ids and targets are data: one outside the whole vocabulary is recorded in
// the DeviceError (reported at the next synchronisation) and its row is
// skipped. A true vocabulary V (i[2] of the loss kernels) that the group's
// padding cannot produce is refused at launch, as on the CPU.
//
// One block per row for the row kernels; sums of exponentials in double per
// thread, then the fixed tree of blockSum, so every result is the data's and
// the shape's alone. The embedding gradient is EmbeddingGrad's sorted
// scatter-add (no float atomics). Rows of float4s (width % 4 == 0, 16-byte
// aligned) are read and written 16 bytes at a time.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cmath>
#include <type_traits>

namespace mega::rt::gpu {

namespace {

/// The columns of this rank's shard that are part of the vocabulary
/// (global index start + v < V).
int64_t ownColumns(int64_t V, int64_t start, int64_t Vl) {
  const int64_t c = V - start;
  return c < 0 ? 0 : (c > Vl ? Vl : c);
}

/// out row r = table row ids[r] - start when that is this rank's, else 0.
/// W = H / 4 float4s (V4) or H floats per row.
template <bool V4>
__global__ void vocabEmbeddingKernel(const float *__restrict__ table,
                                     const int32_t *__restrict__ ids,
                                     float *__restrict__ out, int64_t rows,
                                     int64_t Vl, int64_t W, int64_t start,
                                     int64_t limit, DeviceError *err) {
  using T = typename std::conditional<V4, float4, float>::type;
  const T *tab = reinterpret_cast<const T *>(table);
  T *o = reinterpret_cast<T *>(out);
  const int64_t n = rows * W;
  for (int64_t e = globalThread(); e < n; e += globalStride()) {
    const int64_t r = e / W, j = e - r * W;
    const int32_t id = ids[r];
    if (id < 0 || id >= limit) {
      if (j == 0)
        reportBadIndex(err, Op::VocabEmbedding, r, id, limit);
      continue;
    }
    const int64_t v = int64_t(id) - start;
    T zero;
    if constexpr (V4)
      zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    else
      zero = 0.0f;
    o[e] = v >= 0 && v < Vl ? tab[v * W + j] : zero;
  }
}

/// The maximum of each row, as the CPU's maxF: every thread starts from the
/// row's first element and keeps `x > m ? x : m` (a NaN wins only there).
template <bool V4>
__global__ void rowMaxKernel(const float *__restrict__ x, int64_t rows,
                             int64_t cols, float *__restrict__ out) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols;
    float m = xr[0];
    if (V4) {
      const float4 *xv = reinterpret_cast<const float4 *>(xr);
      for (int64_t j = threadIdx.x; j < cols / 4; j += blockDim.x) {
        const float4 a = xv[j];
        m = a.x > m ? a.x : m;
        m = a.y > m ? a.y : m;
        m = a.z > m ? a.z : m;
        m = a.w > m ? a.w : m;
      }
    } else {
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
        m = xr[j] > m ? xr[j] : m;
    }
    m = blockExtreme<true>(m, sh);
    if (threadIdx.x == 0)
      out[r] = m;
  }
}

/// sumexp[r] = sum over the first `own` columns of exp(x - max[r]);
/// targetLogit[r] = the target's logit when it is this rank's, else 0.
template <bool V4>
__global__ void
vocabStatsKernel(const float *__restrict__ x, const int32_t *__restrict__ t,
                 const float *__restrict__ mx, float *__restrict__ sumexp,
                 float *__restrict__ tl, int64_t rows, int64_t Vl, int64_t own,
                 int64_t start, int64_t V, DeviceError *err) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * Vl;
    const float m = mx[r];
    double s = 0.0;
    int64_t from = 0; // the scalar tail's first column
    if (V4) {
      const float4 *xv = reinterpret_cast<const float4 *>(xr);
      const int64_t n4 = own / 4;
      for (int64_t j = threadIdx.x; j < n4; j += blockDim.x) {
        const float4 a = xv[j];
        // Four terms summed in float (as CrossEntropy), one double add.
        s += double((expf(a.x - m) + expf(a.y - m)) +
                    (expf(a.z - m) + expf(a.w - m)));
      }
      from = 4 * n4;
    }
    for (int64_t j = from + threadIdx.x; j < own; j += blockDim.x)
      s += double(expf(xr[j] - m));
    s = blockSum(s, sh);
    if (threadIdx.x == 0) {
      sumexp[r] = float(s);
      const int32_t tr = t[r];
      if (tr < 0 || tr >= V) {
        reportBadIndex(err, Op::VocabCrossEntropyStats, r, tr, V);
      } else {
        const int64_t v = int64_t(tr) - start;
        tl[r] = v >= 0 && v < Vl ? xr[v] : 0.0f;
      }
    }
  }
}

/// lse = max + log(sumexp) per row; loss = the mean of lse - targetLogit,
/// summed in double (one block, a fixed order).
__global__ void vocabLossKernel(const float *__restrict__ mx,
                                const float *__restrict__ se,
                                const float *__restrict__ tl, int64_t rows,
                                float *__restrict__ loss,
                                float *__restrict__ lse) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const double l = double(mx[r]) + log(double(se[r]));
    lse[r] = float(l);
    s += l - double(tl[r]);
  }
  s = blockSum(s, sh);
  if (threadIdx.x == 0)
    loss[0] = rows ? float(s / double(rows)) : nanf("");
}

/// dx = (exp(x - lse) - [target]) * dloss / rows on the first `own`
/// columns, 0 on the padded ones. x and dx may be the same bytes: the
/// target's probability is read before the row is overwritten.
template <bool V4>
__global__ void vocabGradKernel(const float *x, const int32_t *__restrict__ t,
                                const float *__restrict__ lse,
                                const float *__restrict__ dloss, float *dx,
                                int64_t rows, int64_t Vl, int64_t own,
                                int64_t start, int64_t V, DeviceError *err) {
  const float sc = float(double(dloss[0]) / double(rows));
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t tr = t[r];
    if (tr < 0 || tr >= V) { // uniform over the block
      if (threadIdx.x == 0)
        reportBadIndex(err, Op::VocabCrossEntropyGrad, r, tr, V);
      continue;
    }
    const float *xr = x + r * Vl;
    float *dr = dx + r * Vl;
    const float l = lse[r];
    const int64_t v = int64_t(tr) - start;
    const bool mine = v >= 0 && v < Vl;
    const float pt = mine ? expf(xr[v] - l) : 0.0f;
    __syncthreads(); // every thread has read xr[v] before any writes dr
    if (V4) {
      const float4 *xv = reinterpret_cast<const float4 *>(xr);
      float4 *dv = reinterpret_cast<float4 *>(dr);
      for (int64_t j = threadIdx.x; j < Vl / 4; j += blockDim.x) {
        const float4 a = xv[j];
        const int64_t c = 4 * j;
        dv[j] = make_float4(c < own ? expf(a.x - l) * sc : 0.0f,
                            c + 1 < own ? expf(a.y - l) * sc : 0.0f,
                            c + 2 < own ? expf(a.z - l) * sc : 0.0f,
                            c + 3 < own ? expf(a.w - l) * sc : 0.0f);
      }
    } else {
      for (int64_t j = threadIdx.x; j < Vl; j += blockDim.x)
        dr[j] = j < own ? expf(xr[j] - l) * sc : 0.0f;
    }
    __syncthreads(); // the row is written before the target's element
    if (threadIdx.x == 0 && mine)
      dr[v] = (pt - 1.0f) * sc;
  }
}

} // namespace

void runVocabEmbedding(const Ctx &ctx, const GroupPlace &place, const Instr &in,
                       const Refs &ins, const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1], H = in.i[2];
  if (rows == 0 || H == 0)
    return;
  const float *table = ins[0].f32();
  float *out = outs[0].f32();
  const int64_t start = Vl * place.rank, limit = Vl * place.size;
  if (H % 4 == 0 && aligned(table, 16) && aligned(out, 16))
    vocabEmbeddingKernel<true>
        <<<gridFor(ctx, rows * (H / 4), 256), 256, 0, ctx.stream>>>(
            table, ins[1].i32(), out, rows, Vl, H / 4, start, limit, ctx.err);
  else
    vocabEmbeddingKernel<false>
        <<<gridFor(ctx, rows * H, 256), 256, 0, ctx.stream>>>(
            table, ins[1].i32(), out, rows, Vl, H, start, limit, ctx.err);
  checkLaunch("VocabEmbedding");
}

void runVocabEmbeddingGrad(const Ctx &ctx, const GroupPlace &place,
                           const Instr &in, const Refs &ins, const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1], H = in.i[2];
  scatterRowsSorted(ctx, Op::VocabEmbeddingGrad, ins[0].f32(), ins[1].i32(),
                    rows, Vl, H, Vl * place.rank, Vl * place.size, in.i[3] != 0,
                    outs[0].f32());
}

void runRowMax(const Ctx &ctx, const Instr &in, const Refs &ins,
               const Refs &outs) {
  const int64_t rows = in.i[0], cols = in.i[1];
  if (rows == 0)
    return;
  const float *x = ins[0].f32();
  if (cols % 4 == 0 && aligned(x, 16))
    rowMaxKernel<true>
        <<<rowGrid(rows), rowThreads(cols / 4, 512), 0, ctx.stream>>>(
            x, rows, cols, outs[0].f32());
  else
    rowMaxKernel<false>
        <<<rowGrid(rows), rowThreads(cols, 512), 0, ctx.stream>>>(
            x, rows, cols, outs[0].f32());
  checkLaunch("RowMax");
}

void runVocabCrossEntropyStats(const Ctx &ctx, const GroupPlace &place,
                               const Instr &in, const Refs &ins,
                               const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1];
  const int64_t V = trueVocab(in, place);
  if (rows == 0)
    return;
  const int64_t start = Vl * place.rank, own = ownColumns(V, start, Vl);
  const float *x = ins[0].f32();
  if (Vl % 4 == 0 && aligned(x, 16))
    vocabStatsKernel<true>
        <<<rowGrid(rows), rowThreads(Vl / 4, 512), 0, ctx.stream>>>(
            x, ins[1].i32(), ins[2].f32(), outs[0].f32(), outs[1].f32(), rows,
            Vl, own, start, V, ctx.err);
  else
    vocabStatsKernel<false>
        <<<rowGrid(rows), rowThreads(Vl, 512), 0, ctx.stream>>>(
            x, ins[1].i32(), ins[2].f32(), outs[0].f32(), outs[1].f32(), rows,
            Vl, own, start, V, ctx.err);
  checkLaunch("VocabCrossEntropyStats");
}

void runVocabCrossEntropy(const Ctx &ctx, const Instr &in, const Refs &ins,
                          const Refs &outs) {
  vocabLossKernel<<<1, 1024, 0, ctx.stream>>>(ins[0].f32(), ins[1].f32(),
                                              ins[2].f32(), in.i[0],
                                              outs[0].f32(), outs[1].f32());
  checkLaunch("VocabCrossEntropy");
}

void runVocabCrossEntropyGrad(const Ctx &ctx, const GroupPlace &place,
                              const Instr &in, const Refs &ins,
                              const Refs &outs) {
  const int64_t rows = in.i[0], Vl = in.i[1];
  const int64_t V = trueVocab(in, place);
  if (rows == 0)
    return;
  const int64_t start = Vl * place.rank, own = ownColumns(V, start, Vl);
  const float *x = ins[0].f32();
  float *dx = outs[0].f32();
  if (Vl % 4 == 0 && aligned(x, 16) && aligned(dx, 16))
    vocabGradKernel<true>
        <<<rowGrid(rows), rowThreads(Vl / 4, 512), 0, ctx.stream>>>(
            x, ins[1].i32(), ins[2].f32(), ins[3].f32(), dx, rows, Vl, own,
            start, V, ctx.err);
  else
    vocabGradKernel<false>
        <<<rowGrid(rows), rowThreads(Vl, 512), 0, ctx.stream>>>(
            x, ins[1].i32(), ins[2].f32(), ins[3].f32(), dx, rows, Vl, own,
            start, V, ctx.err);
  checkLaunch("VocabCrossEntropyGrad");
}

} // namespace mega::rt::gpu

//===- Embedding.cu - Embedding gather and its scatter-add gradient -------===//
//
// Ids are data: one outside [0, V) is recorded in the DeviceError (reported
// at the next synchronisation) and its row is skipped.
//
// The gradient is deterministic without float atomics: the (id, row) pairs
// are radix-sorted by id (CUB's sort is stable, so rows with one id stay in
// row order), then one block per run of equal ids adds that run's dout rows
// into the table row, in row order, starting from the table's value (0 when
// not accumulating). That is the CPU's order of additions, so the two agree
// bit for bit. VocabEmbeddingGrad (Vocab.cu) shares it: its keys are the ids
// less the rank's first row, and ids of other ranks' rows sort last.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cub/device/device_radix_sort.cuh>

namespace mega::rt::gpu {

namespace {

__global__ void embeddingKernel(const float *__restrict__ table,
                                const int32_t *__restrict__ ids,
                                float *__restrict__ out, int64_t rows,
                                int64_t V, int64_t H, bool acc,
                                DeviceError *err) {
  const int64_t n = rows * H;
  for (int64_t e = globalThread(); e < n; e += globalStride()) {
    const int64_t r = e / H, j = e - r * H;
    const int32_t id = ids[r];
    if (id < 0 || id >= V) {
      if (j == 0)
        reportBadIndex(err, Op::Embedding, r, id, V);
      continue;
    }
    const float v = table[int64_t(id) * H + j];
    out[e] = acc ? out[e] + v : v;
  }
}

/// keys[r] = ids[r] - start when that is a row of the table [0, V), else V
/// (sorts last and is skipped); vals[r] = r. An id outside [0, limit) is a
/// data error of `op`.
__global__ void embeddingGradKeys(const int32_t *__restrict__ ids,
                                  uint32_t *__restrict__ keys,
                                  int32_t *__restrict__ vals, int64_t rows,
                                  int64_t V, int64_t start, int64_t limit,
                                  int op, DeviceError *err) {
  for (int64_t r = globalThread(); r < rows; r += globalStride()) {
    const int32_t id = ids[r];
    int64_t key = int64_t(id) - start;
    if (id < 0 || id >= limit) {
      reportBadIndex(err, Op(op), r, id, limit);
      key = V;
    } else if (key < 0 || key >= V) {
      key = V; // another rank's row
    }
    keys[r] = uint32_t(key);
    vals[r] = int32_t(r);
  }
}

/// Block b handles the run of equal keys that starts at sorted position b
/// (blocks at other positions return at once).
__global__ void embeddingGradRuns(const float *__restrict__ dout,
                                  const uint32_t *__restrict__ keys,
                                  const int32_t *__restrict__ rowsOf,
                                  float *__restrict__ table, int64_t rows,
                                  int64_t V, int64_t H) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const uint32_t id = keys[i];
    if ((i > 0 && keys[i - 1] == id) || int64_t(id) >= V)
      continue;
    int64_t end = i + 1;
    while (end < rows && keys[end] == id)
      ++end;
    float *dst = table + int64_t(id) * H;
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      float a = dst[j];
      for (int64_t k = i; k < end; ++k)
        a += dout[int64_t(rowsOf[k]) * H + j];
      dst[j] = a;
    }
  }
}

int bitsFor(int64_t v) {
  int b = 1;
  while (b < 31 && (int64_t(1) << b) <= v)
    ++b;
  return b;
}

} // namespace

void runEmbedding(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1], H = in.i[2];
  const bool acc = in.i[3] != 0;
  if (rows == 0 || H == 0)
    return;
  embeddingKernel<<<gridFor(ctx, rows * H, 256), 256, 0, ctx.stream>>>(
      ins[0].f32(), ins[1].i32(), outs[0].f32(), rows, V, H, acc, ctx.err);
  checkLaunch("Embedding");
}

void scatterRowsSorted(const Ctx &ctx, Op op, const float *dout,
                       const int32_t *ids, int64_t rows, int64_t V, int64_t H,
                       int64_t start, int64_t limit, bool acc, float *table) {
  if (!acc && V * H > 0)
    checkCuda(cudaMemsetAsync(table, 0, size_t(V * H) * 4, ctx.stream),
              "cudaMemsetAsync (EmbeddingGrad)");
  if (rows == 0)
    return;
  // rows <= INT32_MAX (check()); keys are in [0, V] with V <= INT32_MAX.
  const int n = int(rows);
  const int endBit = bitsFor(V);
  size_t tempBytes = 0;
  checkCuda(cub::DeviceRadixSort::SortPairs(
                nullptr, tempBytes, static_cast<const uint32_t *>(nullptr),
                static_cast<uint32_t *>(nullptr),
                static_cast<const int32_t *>(nullptr),
                static_cast<int32_t *>(nullptr), n, 0, endBit, ctx.stream),
            "cub::DeviceRadixSort::SortPairs (size)");
  Carve carve;
  const size_t ik = carve.add(size_t(n) * 4), iv = carve.add(size_t(n) * 4);
  const size_t ok = carve.add(size_t(n) * 4), ov = carve.add(size_t(n) * 4);
  const size_t tmp = carve.add(tempBytes);
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  uint32_t *keysIn = reinterpret_cast<uint32_t *>(ws + ik);
  int32_t *valsIn = reinterpret_cast<int32_t *>(ws + iv);
  uint32_t *keysOut = reinterpret_cast<uint32_t *>(ws + ok);
  int32_t *valsOut = reinterpret_cast<int32_t *>(ws + ov);
  embeddingGradKeys<<<gridFor(ctx, rows, 256), 256, 0, ctx.stream>>>(
      ids, keysIn, valsIn, rows, V, start, limit, int(op), ctx.err);
  checkLaunch("EmbeddingGrad (keys)");
  checkCuda(cub::DeviceRadixSort::SortPairs(ws + tmp, tempBytes, keysIn,
                                            keysOut, valsIn, valsOut, n, 0,
                                            endBit, ctx.stream),
            "cub::DeviceRadixSort::SortPairs");
  if (H == 0)
    return;
  embeddingGradRuns<<<rowGrid(rows), rowThreads(H), 0, ctx.stream>>>(
      dout, keysOut, valsOut, table, rows, V, H);
  checkLaunch("EmbeddingGrad");
}

void runEmbeddingGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1], H = in.i[2];
  scatterRowsSorted(ctx, Op::EmbeddingGrad, ins[0].f32(), ins[1].i32(), rows, V,
                    H, 0, V, in.i[3] != 0, outs[0].f32());
}

} // namespace mega::rt::gpu

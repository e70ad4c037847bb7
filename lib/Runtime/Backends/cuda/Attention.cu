//===- Attention.cu - Fused (flash) attention, forward and backward -------===//
//
// Opcodes Attention and AttentionGrad (include/mega/Plan/Plan.h). Neither
// writes the [S, S] scores to memory: the forward walks tiles of 64 keys per
// block of 64 queries and keeps one tile of scores in shared memory; the
// backward recomputes the probabilities from the saved logsumexp. No float
// atomics (the backend is deterministic): the backward is two kernels, one
// per block of keys (dk, dv: it owns those rows) and one per block of
// queries (dq), each summing over the other side in a fixed order.
//
// Two implementations, picked per launch:
//  * tensor cores (nvcuda::wmma, bf16 16x16x16, fp32 accumulation) when q,
//    k, v are bf16, the head dim is 16, 32, 64 or 128, S is a multiple of 64
//    and the pointers are 32-byte aligned. Each warp owns 16 rows of the
//    64-row block. The forward is two passes over the keys (row max and sum
//    first, then o = sum exp(s - lse) v): o accumulates in wmma fragments
//    without the rescaling an online softmax needs, for one more q k^T.
//    Probabilities and ds are rounded to bf16 for their products, as in
//    FlashAttention-2; the CPU twin agrees to bf16 tolerance.
//  * plain fp32 arithmetic (f32 or bf16 inputs, any S, head dim <= 128):
//    one thread per query (or key) row, online softmax, tiles of keys
//    (queries) in shared memory; the fp32 plans' kernel, agreeing with the
//    CPU to float rounding.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>

namespace mega::rt::gpu {

namespace {

using bf16 = __nv_bfloat16;

__device__ inline float toF(float x) { return x; }
__device__ inline float toF(bf16 x) { return __bfloat162float(x); }

struct Shape {
  int64_t bh, seq;
  int hd;
  bool causal;
  float scale;
};

Shape shapeOf(const Instr &in) {
  return Shape{in.i[0], in.i[1], int(in.i[2]), in.i[3] != 0, in.f[0]};
}

//===----------------------------------------------------------------------===//
// Plain fp32 kernels: one thread per row, D = padded head dim (32/64/128).
//===----------------------------------------------------------------------===//

constexpr int kRows = 64; // threads (rows) per block
constexpr int kKeys = 32; // rows of the other side per shared-memory tile

/// Loads `rows` rows (from `row0`) of a [S, hd] slice into a [kKeys][D]
/// float tile, zero beyond hd and beyond S.
template <int D, typename T>
__device__ void loadTile(float (*tile)[D], const T *x, int64_t row0,
                         int64_t seq, int hd) {
  for (int e = threadIdx.x; e < kKeys * D; e += blockDim.x) {
    const int r = e / D, c = e % D;
    const int64_t row = row0 + r;
    tile[r][c] = (row < seq && c < hd) ? toF(x[row * hd + c]) : 0.0f;
  }
}

template <int D, typename T>
__global__ void plainForward(const T *q, const T *k, const T *v, float *o,
                             float *lse, Shape s) {
  __shared__ float kt[kKeys][D], vt[kKeys][D];
  const int64_t base = int64_t(blockIdx.y) * s.seq * s.hd;
  const int64_t i = int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool active = i < s.seq;
  float qi[D], acc[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    qi[c] = active && c < s.hd ? toF(q[base + i * s.hd + c]) : 0.0f;
    acc[c] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t blockLast = int64_t(blockIdx.x) * kRows + kRows - 1;
  const int64_t keys = s.causal ? imin(s.seq, blockLast + 1) : s.seq;
  for (int64_t j0 = 0; j0 < keys; j0 += kKeys) {
    __syncthreads();
    loadTile<D>(kt, k + base, j0, s.seq, s.hd);
    loadTile<D>(vt, v + base, j0, s.seq, s.hd);
    __syncthreads();
    if (!active)
      continue;
    for (int r = 0; r < kKeys; ++r) {
      const int64_t j = j0 + r;
      if (j >= s.seq || (s.causal && j > i))
        break;
      float dot = 0.0f;
#pragma unroll
      for (int c = 0; c < D; ++c)
        dot = fmaf(qi[c], kt[r][c], dot);
      const float sc = dot * s.scale;
      if (sc > m) { // rescale what was summed under the old maximum
        const float f = expf(m - sc);
        l *= f;
  #pragma unroll
      for (int c = 0; c < D; ++c)
          acc[c] *= f;
        m = sc;
      }
      const float p = expf(sc - m);
      l += p;
#pragma unroll
      for (int c = 0; c < D; ++c)
        acc[c] = fmaf(p, vt[r][c], acc[c]);
    }
  }
  if (!active)
    return;
  const float inv = 1.0f / l;
  for (int c = 0; c < s.hd && c < D; ++c)
    o[base + i * s.hd + c] = acc[c] * inv;
  lse[int64_t(blockIdx.y) * s.seq + i] = m + logf(l);
}

/// D_i = dout_i . o_i, the row term of the softmax gradient.
template <typename T>
__global__ void rowDot(const T *dout, const T *o, float *d, int64_t rows,
                       int hd) {
  for (int64_t r = globalThread(); r < rows; r += globalStride()) {
    float acc = 0.0f;
    for (int c = 0; c < hd; ++c)
      acc = fmaf(toF(dout[r * hd + c]), toF(o[r * hd + c]), acc);
    d[r] = acc;
  }
}

/// dq: one thread per query row, tiles of keys.
template <int D, typename T>
__global__ void plainGradQ(const T *q, const T *k, const T *v, const T *dout,
                           const float *lse, const float *dsum, float *dq,
                           Shape s) {
  __shared__ float kt[kKeys][D], vt[kKeys][D];
  const int64_t row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = row0 * s.hd;
  const int64_t i = int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool active = i < s.seq;
  float qi[D], di[D], g[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    const bool in = active && c < s.hd;
    qi[c] = in ? toF(q[base + i * s.hd + c]) : 0.0f;
    di[c] = in ? toF(dout[base + i * s.hd + c]) : 0.0f;
    g[c] = 0.0f;
  }
  const float li = active ? lse[row0 + i] : 0.0f;
  const float Di = active ? dsum[row0 + i] : 0.0f;
  const int64_t blockLast = int64_t(blockIdx.x) * kRows + kRows - 1;
  const int64_t keys = s.causal ? imin(s.seq, blockLast + 1) : s.seq;
  for (int64_t j0 = 0; j0 < keys; j0 += kKeys) {
    __syncthreads();
    loadTile<D>(kt, k + base, j0, s.seq, s.hd);
    loadTile<D>(vt, v + base, j0, s.seq, s.hd);
    __syncthreads();
    if (!active)
      continue;
    for (int r = 0; r < kKeys; ++r) {
      const int64_t j = j0 + r;
      if (j >= s.seq || (s.causal && j > i))
        break;
      float qk = 0.0f, dv = 0.0f;
#pragma unroll
    #pragma unroll
  for (int c = 0; c < D; ++c) {
        qk = fmaf(qi[c], kt[r][c], qk);
        dv = fmaf(di[c], vt[r][c], dv);
      }
      const float p = expf(qk * s.scale - li);
      const float ds = p * (dv - Di);
#pragma unroll
      for (int c = 0; c < D; ++c)
        g[c] = fmaf(ds, kt[r][c], g[c]);
    }
  }
  if (!active)
    return;
  for (int c = 0; c < s.hd && c < D; ++c)
    dq[base + i * s.hd + c] = g[c] * s.scale;
}

/// dk, dv: one thread per key row, tiles of queries.
template <int D, typename T>
__global__ void plainGradKV(const T *q, const T *k, const T *v, const T *dout,
                            const float *lse, const float *dsum, float *dk,
                            float *dv, Shape s) {
  __shared__ float qt[kKeys][D], dt[kKeys][D];
  __shared__ float lt[kKeys], st[kKeys];
  const int64_t row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = row0 * s.hd;
  const int64_t j = int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool active = j < s.seq;
  float kj[D], vj[D], gk[D], gv[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    const bool in = active && c < s.hd;
    kj[c] = in ? toF(k[base + j * s.hd + c]) : 0.0f;
    vj[c] = in ? toF(v[base + j * s.hd + c]) : 0.0f;
    gk[c] = gv[c] = 0.0f;
  }
  const int64_t first = s.causal ? int64_t(blockIdx.x) * kRows : 0;
  for (int64_t i0 = first / kKeys * kKeys; i0 < s.seq; i0 += kKeys) {
    __syncthreads();
    loadTile<D>(qt, q + base, i0, s.seq, s.hd);
    loadTile<D>(dt, dout + base, i0, s.seq, s.hd);
    for (int r = threadIdx.x; r < kKeys; r += blockDim.x) {
      lt[r] = i0 + r < s.seq ? lse[row0 + i0 + r] : 0.0f;
      st[r] = i0 + r < s.seq ? dsum[row0 + i0 + r] : 0.0f;
    }
    __syncthreads();
    if (!active)
      continue;
    for (int r = 0; r < kKeys; ++r) {
      const int64_t i = i0 + r;
      if (i >= s.seq)
        break;
      if (s.causal && j > i)
        continue;
      float qk = 0.0f, dov = 0.0f;
#pragma unroll
    #pragma unroll
  for (int c = 0; c < D; ++c) {
        qk = fmaf(qt[r][c], kj[c], qk);
        dov = fmaf(dt[r][c], vj[c], dov);
      }
      const float p = expf(qk * s.scale - lt[r]);
      const float ds = p * (dov - st[r]);
#pragma unroll
    #pragma unroll
  for (int c = 0; c < D; ++c) {
        gv[c] = fmaf(p, dt[r][c], gv[c]);
        gk[c] = fmaf(ds, qt[r][c], gk[c]);
      }
    }
  }
  if (!active)
    return;
  for (int c = 0; c < s.hd && c < D; ++c) {
    dk[base + j * s.hd + c] = gk[c] * s.scale;
    dv[base + j * s.hd + c] = gv[c];
  }
}

//===----------------------------------------------------------------------===//
// Tensor-core kernels (bf16, wmma 16x16x16): blocks of 64 rows, 4 warps.
//===----------------------------------------------------------------------===//

namespace wm = nvcuda::wmma;
constexpr int kT = 64;        // rows per block and per tile of the other side
constexpr int kWarps = 4;     // 16 rows each
constexpr int kSLd = kT + 4;  // float score row stride (multiple of 4)
constexpr int kPLd = kT + 8;  // bf16 probability row stride (multiple of 8)

using FragA = wm::fragment<wm::matrix_a, 16, 16, 16, bf16, wm::row_major>;
using FragBRow = wm::fragment<wm::matrix_b, 16, 16, 16, bf16, wm::row_major>;
using FragBCol = wm::fragment<wm::matrix_b, 16, 16, 16, bf16, wm::col_major>;
using FragC = wm::fragment<wm::accumulator, 16, 16, 16, float>;

/// Shared-memory carving, in bytes, 128-aligned pieces.
struct Carver {
  char *base;
  size_t at = 0;
  template <typename T> __device__ T *take(size_t count) {
    T *p = reinterpret_cast<T *>(base + at);
    at += (count * sizeof(T) + 127) / 128 * 128;
    return p;
  }
};
template <int HD> constexpr size_t tileBytes() {
  return (size_t(kT) * (HD + 8) * 2 + 127) / 128 * 128;
}
constexpr size_t scoreBytes() {
  return (size_t(kWarps) * 16 * kSLd * 4 + 127) / 128 * 128;
}
constexpr size_t probBytes() {
  return (size_t(kWarps) * 16 * kPLd * 2 + 127) / 128 * 128;
}
constexpr size_t rowBytes() { return 128 * 4; }

/// Copies 64 rows (from row0) of a [S, HD] bf16 slice into a tile with row
/// stride HD + 8, 16 bytes at a time.
template <int HD>
__device__ void copyTile(bf16 *tile, const bf16 *x, int64_t row0) {
  constexpr int chunks = HD / 8;
  for (int e = threadIdx.x; e < kT * chunks; e += blockDim.x) {
    const int r = e / chunks, c = e % chunks;
    *reinterpret_cast<uint4 *>(tile + r * (HD + 8) + c * 8) =
        *reinterpret_cast<const uint4 *>(x + (row0 + r) * HD + c * 8);
  }
}

/// out[16 x 64] (float, stride kSLd) = a[16 x HD] . b[64 x HD]^T, a and b
/// tiles with stride HD + 8.
template <int HD>
__device__ void productNT(float *out, const bf16 *a, const bf16 *b) {
  for (int n = 0; n < kT / 16; ++n) {
    FragC acc;
    wm::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      FragA fa;
      FragBCol fb;
      wm::load_matrix_sync(fa, a + kk * 16, HD + 8);
      wm::load_matrix_sync(fb, b + n * 16 * (HD + 8) + kk * 16, HD + 8);
      wm::mma_sync(acc, fa, fb, acc);
    }
    wm::store_matrix_sync(out + n * 16, acc, kSLd, wm::mem_row_major);
  }
}

/// The A fragments of 16 rows x HD (stride HD + 8) that stay the same over
/// a kernel's loop (a warp's own q, or k and v), loaded once.
template <int HD> struct RowFrags {
  FragA f[HD / 16];
  __device__ void load(const bf16 *rows) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
      wm::load_matrix_sync(f[kk], rows + kk * 16, HD + 8);
  }
};

/// productNT with a preloaded: out[16 x 64] = a . b[64 x HD]^T.
template <int HD>
__device__ void productNT(float *out, const RowFrags<HD> &a, const bf16 *b) {
  for (int n = 0; n < kT / 16; ++n) {
    FragC acc;
    wm::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      FragBCol fb;
      wm::load_matrix_sync(fb, b + n * 16 * (HD + 8) + kk * 16, HD + 8);
      wm::mma_sync(acc, a.f[kk], fb, acc);
    }
    wm::store_matrix_sync(out + n * 16, acc, kSLd, wm::mem_row_major);
  }
}

/// acc[d] += p[16 x 64] (bf16, stride kPLd) . x[64 x HD] (tile).
template <int HD>
__device__ void productNN(FragC (&acc)[HD / 16], const bf16 *p,
                          const bf16 *x) {
#pragma unroll
  for (int d = 0; d < HD / 16; ++d)
#pragma unroll
    for (int kk = 0; kk < kT / 16; ++kk) {
      FragA fa;
      FragBRow fb;
      wm::load_matrix_sync(fa, p + kk * 16, kPLd);
      wm::load_matrix_sync(fb, x + kk * 16 * (HD + 8) + d * 16, HD + 8);
      wm::mma_sync(acc[d], fa, fb, acc[d]);
    }
}

template <int HD>
__global__ void __launch_bounds__(kWarps * 32)
    tcForward(const bf16 *q, const bf16 *k, const bf16 *v, float *o,
              float *lse, Shape s) {
  extern __shared__ __align__(128) char smem[];
  Carver cv{smem};
  bf16 *qs = cv.take<bf16>(kT * (HD + 8));
  bf16 *ks = cv.take<bf16>(kT * (HD + 8));
  bf16 *vs = cv.take<bf16>(kT * (HD + 8));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *sw = cv.take<float>(kWarps * 16 * kSLd) + warp * 16 * kSLd;
  bf16 *pw = cv.take<bf16>(kWarps * 16 * kPLd) + warp * 16 * kPLd;
  const int64_t qt = blockIdx.x, row0 = int64_t(blockIdx.y) * s.seq;
  const bf16 *qb = q + row0 * HD, *kb = k + row0 * HD, *vb = v + row0 * HD;
  copyTile<HD>(qs, qb, qt * kT);
  // Lane pairs own a row: r = lane / 2, columns half * 32 .. + 32.
  const int r = lane >> 1, half = lane & 1;
  const int64_t qi = qt * kT + warp * 16 + r;
  const int64_t tiles = s.causal ? qt + 1 : s.seq / kT;
  __syncthreads();
  RowFrags<HD> qw; // this warp's 16 queries, for every tile of keys
  qw.load(qs + warp * 16 * (HD + 8));
  // Pass 1: row maximum and sum of exponentials (online over tiles).
  float m = -INFINITY, l = 0.0f;
  for (int64_t t = 0; t < tiles; ++t) {
    __syncthreads();
    copyTile<HD>(ks, kb, t * kT);
    __syncthreads();
    productNT<HD>(sw, qw, ks);
    __syncwarp();
    float tm = -INFINITY;
    for (int c = half * 32; c < half * 32 + 32; ++c)
      if (!(s.causal && t * kT + c > qi))
        tm = fmaxf(tm, sw[r * kSLd + c] * s.scale);
    tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 1));
    const float mn = fmaxf(m, tm);
    float part = 0.0f;
    for (int c = half * 32; c < half * 32 + 32; ++c)
      if (!(s.causal && t * kT + c > qi))
        part += expf(sw[r * kSLd + c] * s.scale - mn);
    part += __shfl_xor_sync(0xffffffffu, part, 1);
    l = (m == -INFINITY ? 0.0f : l * expf(m - mn)) + part;
    m = mn;
    __syncwarp();
  }
  const float li = m + logf(l);
  if (half == 0)
    lse[row0 + qi] = li;
  // Pass 2: o = sum_t exp(s - lse) v, accumulated in fragments.
  FragC acc[HD / 16];
#pragma unroll
  for (int d = 0; d < HD / 16; ++d)
    wm::fill_fragment(acc[d], 0.0f);
  for (int64_t t = 0; t < tiles; ++t) {
    __syncthreads();
    copyTile<HD>(ks, kb, t * kT);
    copyTile<HD>(vs, vb, t * kT);
    __syncthreads();
    productNT<HD>(sw, qw, ks);
    __syncwarp();
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const bool masked = s.causal && t * kT + c > qi;
      const float p = masked ? 0.0f : expf(sw[r * kSLd + c] * s.scale - li);
      pw[r * kPLd + c] = __float2bfloat16_rn(p);
    }
    __syncwarp();
    productNN<HD>(acc, pw, vs);
  }
  float *ow = o + (row0 + qt * kT + warp * 16) * HD;
#pragma unroll
  for (int d = 0; d < HD / 16; ++d)
    wm::store_matrix_sync(ow + d * 16, acc[d], HD, wm::mem_row_major);
}

/// dk, dv for the 64 keys of block x: warp w owns keys w*16 .. +16 and
/// walks the query tiles at or after its own (causal).
template <int HD>
__global__ void __launch_bounds__(kWarps * 32)
    tcGradKV(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
             const float *lse, const float *dsum, float *dk, float *dv,
             Shape s) {
  extern __shared__ __align__(128) char smem[];
  Carver cv{smem};
  bf16 *ks = cv.take<bf16>(kT * (HD + 8));
  bf16 *vs = cv.take<bf16>(kT * (HD + 8));
  bf16 *qs = cv.take<bf16>(kT * (HD + 8));
  bf16 *dos = cv.take<bf16>(kT * (HD + 8));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *sw = cv.take<float>(kWarps * 16 * kSLd) + warp * 16 * kSLd;
  float *dpw = cv.take<float>(kWarps * 16 * kSLd) + warp * 16 * kSLd;
  bf16 *pw = cv.take<bf16>(kWarps * 16 * kPLd) + warp * 16 * kPLd;
  bf16 *dsw = cv.take<bf16>(kWarps * 16 * kPLd) + warp * 16 * kPLd;
  float *lseS = cv.take<float>(kT);
  float *dsumS = cv.take<float>(kT);
  const int64_t kt = blockIdx.x, row0 = int64_t(blockIdx.y) * s.seq;
  const bf16 *qb = q + row0 * HD, *kb = k + row0 * HD, *vb = v + row0 * HD,
             *db = dout + row0 * HD;
  copyTile<HD>(ks, kb, kt * kT);
  copyTile<HD>(vs, vb, kt * kT);
  __syncthreads();
  RowFrags<HD> kw, vw; // this warp's 16 keys and values, for every q tile
  kw.load(ks + warp * 16 * (HD + 8));
  vw.load(vs + warp * 16 * (HD + 8));
  FragC gk[HD / 16], gv[HD / 16];
#pragma unroll
  for (int d = 0; d < HD / 16; ++d) {
    wm::fill_fragment(gk[d], 0.0f);
    wm::fill_fragment(gv[d], 0.0f);
  }
  const int64_t tiles = s.seq / kT;
  for (int64_t t = s.causal ? kt : 0; t < tiles; ++t) {
    __syncthreads();
    copyTile<HD>(qs, qb, t * kT);
    copyTile<HD>(dos, db, t * kT);
    for (int e = threadIdx.x; e < kT; e += blockDim.x) {
      lseS[e] = lse[row0 + t * kT + e];
      dsumS[e] = dsum[row0 + t * kT + e];
    }
    __syncthreads();
    // s^T = k_w q^T and dp^T = v_w dout^T: [16 keys x 64 queries].
    productNT<HD>(sw, kw, qs);
    productNT<HD>(dpw, vw, dos);
    __syncwarp();
    // Lane j owns query columns j and j + 32 (their lse and D in registers,
    // shared memory conflict-free) of the warp's 16 key rows.
    const float lq[2] = {lseS[lane], lseS[lane + 32]};
    const float dq[2] = {dsumS[lane], dsumS[lane + 32]};
#pragma unroll
    for (int rr = 0; rr < 16; ++rr) {
      const int64_t krow = kt * kT + warp * 16 + rr;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = lane + 32 * h;
        const bool masked = s.causal && krow > t * kT + c;
        const float p =
            masked ? 0.0f : expf(sw[rr * kSLd + c] * s.scale - lq[h]);
        pw[rr * kPLd + c] = __float2bfloat16_rn(p);
        dsw[rr * kPLd + c] =
            __float2bfloat16_rn(p * (dpw[rr * kSLd + c] - dq[h]));
      }
    }
    __syncwarp();
    productNN<HD>(gv, pw, dos); // dv += p^T dout
    productNN<HD>(gk, dsw, qs); // dk += ds^T q
  }
  float *kOut = dk + (row0 + kt * kT + warp * 16) * HD;
  float *vOut = dv + (row0 + kt * kT + warp * 16) * HD;
#pragma unroll
  for (int d = 0; d < HD / 16; ++d) {
    for (int e = 0; e < gk[d].num_elements; ++e)
      gk[d].x[e] *= s.scale;
    wm::store_matrix_sync(kOut + d * 16, gk[d], HD, wm::mem_row_major);
    wm::store_matrix_sync(vOut + d * 16, gv[d], HD, wm::mem_row_major);
  }
}

/// dq for the 64 queries of block x: warp w owns queries w*16 .. +16.
template <int HD>
__global__ void __launch_bounds__(kWarps * 32)
    tcGradQ(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
            const float *lse, const float *dsum, float *dq, Shape s) {
  extern __shared__ __align__(128) char smem[];
  Carver cv{smem};
  bf16 *qs = cv.take<bf16>(kT * (HD + 8));
  bf16 *dos = cv.take<bf16>(kT * (HD + 8));
  bf16 *ks = cv.take<bf16>(kT * (HD + 8));
  bf16 *vs = cv.take<bf16>(kT * (HD + 8));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *sw = cv.take<float>(kWarps * 16 * kSLd) + warp * 16 * kSLd;
  float *dpw = cv.take<float>(kWarps * 16 * kSLd) + warp * 16 * kSLd;
  bf16 *pw = cv.take<bf16>(kWarps * 16 * kPLd) + warp * 16 * kPLd; // unused
  bf16 *dsw = cv.take<bf16>(kWarps * 16 * kPLd) + warp * 16 * kPLd;
  (void)pw;
  const int64_t qt = blockIdx.x, row0 = int64_t(blockIdx.y) * s.seq;
  const bf16 *qb = q + row0 * HD, *kb = k + row0 * HD, *vb = v + row0 * HD,
             *db = dout + row0 * HD;
  copyTile<HD>(qs, qb, qt * kT);
  copyTile<HD>(dos, db, qt * kT);
  // Each row's lse and D in registers of every lane (lane j owns columns j
  // and j + 32 of the warp's 16 rows).
  float lrow[16], drow[16];
#pragma unroll
  for (int rr = 0; rr < 16; ++rr) {
    lrow[rr] = lse[row0 + qt * kT + warp * 16 + rr];
    drow[rr] = dsum[row0 + qt * kT + warp * 16 + rr];
  }
  __syncthreads();
  RowFrags<HD> qw, dw; // this warp's 16 queries and their dout
  qw.load(qs + warp * 16 * (HD + 8));
  dw.load(dos + warp * 16 * (HD + 8));
  FragC g[HD / 16];
#pragma unroll
  for (int d = 0; d < HD / 16; ++d)
    wm::fill_fragment(g[d], 0.0f);
  const int64_t tiles = s.causal ? qt + 1 : s.seq / kT;
  for (int64_t t = 0; t < tiles; ++t) {
    __syncthreads();
    copyTile<HD>(ks, kb, t * kT);
    copyTile<HD>(vs, vb, t * kT);
    __syncthreads();
    productNT<HD>(sw, qw, ks);  // s = q_w k^T
    productNT<HD>(dpw, dw, vs); // dp = dout_w v^T
    __syncwarp();
#pragma unroll
    for (int rr = 0; rr < 16; ++rr) {
      const int64_t qrow = qt * kT + warp * 16 + rr;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = lane + 32 * h;
        const bool masked = s.causal && t * kT + c > qrow;
        const float p =
            masked ? 0.0f : expf(sw[rr * kSLd + c] * s.scale - lrow[rr]);
        dsw[rr * kPLd + c] =
            __float2bfloat16_rn(p * (dpw[rr * kSLd + c] - drow[rr]));
      }
    }
    __syncwarp();
    productNN<HD>(g, dsw, ks); // dq += ds k
  }
  float *out = dq + (row0 + qt * kT + warp * 16) * HD;
#pragma unroll
  for (int d = 0; d < HD / 16; ++d) {
    for (int e = 0; e < g[d].num_elements; ++e)
      g[d].x[e] *= s.scale;
    wm::store_matrix_sync(out + d * 16, g[d], HD, wm::mem_row_major);
  }
}

template <int HD> constexpr size_t forwardSmem() {
  return 3 * tileBytes<HD>() + scoreBytes() + probBytes();
}
template <int HD> constexpr size_t gradSmem() {
  return 4 * tileBytes<HD>() + 2 * scoreBytes() + 2 * probBytes() +
         2 * rowBytes();
}

bool aligned32(const void *p) {
  return reinterpret_cast<uintptr_t>(p) % 32 == 0;
}

/// The tensor-core path applies: bf16, head dim 16/32/64/128, S a multiple
/// of 64, every pointer 32-byte aligned (wmma loads and stores).
bool tensorCores(const Shape &s, const Refs &ins, const Refs &outs) {
  if (ins[0].value->dtype != DType::BF16 || s.seq % kT != 0)
    return false;
  if (s.hd != 16 && s.hd != 32 && s.hd != 64 && s.hd != 128)
    return false;
  for (const auto *list : {&ins, &outs})
    for (const TensorRef &t : *list)
      if (!aligned32(t.data))
        return false;
  return true;
}

template <typename K> void allowSmem(K kernel, size_t bytes) {
  checkCuda(cudaFuncSetAttribute(kernel,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(bytes)),
            "cudaFuncSetAttribute (attention shared memory)");
}

template <int HD>
void tcForwardLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                     const Refs &outs) {
  const size_t smem = forwardSmem<HD>();
  allowSmem(tcForward<HD>, smem);
  dim3 grid(unsigned(s.seq / kT), unsigned(s.bh));
  tcForward<HD><<<grid, kWarps * 32, smem, ctx.stream>>>(
      static_cast<const bf16 *>(ins[0].data),
      static_cast<const bf16 *>(ins[1].data),
      static_cast<const bf16 *>(ins[2].data), outs[0].f32(), outs[1].f32(), s);
}

template <int HD>
void tcGradLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                  const Refs &outs, const float *dsum) {
  const size_t smem = gradSmem<HD>();
  allowSmem(tcGradKV<HD>, smem);
  allowSmem(tcGradQ<HD>, smem);
  dim3 grid(unsigned(s.seq / kT), unsigned(s.bh));
  auto *q = static_cast<const bf16 *>(ins[0].data);
  auto *k = static_cast<const bf16 *>(ins[1].data);
  auto *v = static_cast<const bf16 *>(ins[2].data);
  auto *dout = static_cast<const bf16 *>(ins[5].data);
  tcGradKV<HD><<<grid, kWarps * 32, smem, ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, outs[1].f32(), outs[2].f32(), s);
  checkLaunch("AttentionGrad (dk, dv)");
  tcGradQ<HD><<<grid, kWarps * 32, smem, ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, outs[0].f32(), s);
}

template <int D, typename T>
void plainForwardLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                        const Refs &outs) {
  dim3 grid(unsigned((s.seq + kRows - 1) / kRows), unsigned(s.bh));
  plainForward<D, T><<<grid, kRows, 0, ctx.stream>>>(
      static_cast<const T *>(ins[0].data), static_cast<const T *>(ins[1].data),
      static_cast<const T *>(ins[2].data), outs[0].f32(), outs[1].f32(), s);
}

template <int D, typename T>
void plainGradLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                     const Refs &outs, const float *dsum) {
  dim3 grid(unsigned((s.seq + kRows - 1) / kRows), unsigned(s.bh));
  auto *q = static_cast<const T *>(ins[0].data);
  auto *k = static_cast<const T *>(ins[1].data);
  auto *v = static_cast<const T *>(ins[2].data);
  auto *dout = static_cast<const T *>(ins[5].data);
  plainGradQ<D, T><<<grid, kRows, 0, ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, outs[0].f32(), s);
  checkLaunch("AttentionGrad (dq)");
  plainGradKV<D, T><<<grid, kRows, 0, ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, outs[1].f32(), outs[2].f32(), s);
}

/// The padded head dim of the plain kernels: 32, 64 or 128.
int plainDim(int hd) { return hd <= 32 ? 32 : hd <= 64 ? 64 : 128; }

template <typename T>
void plainForwardAny(const Ctx &ctx, const Shape &s, const Refs &ins,
                     const Refs &outs) {
  switch (plainDim(s.hd)) {
  case 32:
    return plainForwardLaunch<32, T>(ctx, s, ins, outs);
  case 64:
    return plainForwardLaunch<64, T>(ctx, s, ins, outs);
  default:
    return plainForwardLaunch<128, T>(ctx, s, ins, outs);
  }
}

template <typename T>
void plainGradAny(const Ctx &ctx, const Shape &s, const Refs &ins,
                  const Refs &outs, const float *dsum) {
  switch (plainDim(s.hd)) {
  case 32:
    return plainGradLaunch<32, T>(ctx, s, ins, outs, dsum);
  case 64:
    return plainGradLaunch<64, T>(ctx, s, ins, outs, dsum);
  default:
    return plainGradLaunch<128, T>(ctx, s, ins, outs, dsum);
  }
}

} // namespace

void runAttention(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const Shape s = shapeOf(in);
  if (s.bh == 0)
    return;
  if (tensorCores(s, ins, outs)) {
    switch (s.hd) { // tensorCores() admits 16, 32, 64, 128
    case 16:
      tcForwardLaunch<16>(ctx, s, ins, outs);
      break;
    case 32:
      tcForwardLaunch<32>(ctx, s, ins, outs);
      break;
    case 64:
      tcForwardLaunch<64>(ctx, s, ins, outs);
      break;
    default:
      tcForwardLaunch<128>(ctx, s, ins, outs);
    }
  } else if (ins[0].value->dtype == DType::BF16) {
    plainForwardAny<bf16>(ctx, s, ins, outs);
  } else {
    plainForwardAny<float>(ctx, s, ins, outs);
  }
  checkLaunch("Attention");
}

void runAttentionGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const Shape s = shapeOf(in);
  if (s.bh == 0)
    return;
  // D = rowsum(dout * o) first, into the scratch.
  const int64_t rows = s.bh * s.seq;
  float *dsum = static_cast<float *>(ctx.ws->get(size_t(rows) * 4));
  if (ins[0].value->dtype == DType::BF16)
    rowDot<<<gridFor(ctx, rows, 256), 256, 0, ctx.stream>>>(
        static_cast<const bf16 *>(ins[5].data),
        static_cast<const bf16 *>(ins[3].data), dsum, rows, s.hd);
  else
    rowDot<<<gridFor(ctx, rows, 256), 256, 0, ctx.stream>>>(
        ins[5].f32(), ins[3].f32(), dsum, rows, s.hd);
  checkLaunch("AttentionGrad (row sums)");
  if (tensorCores(s, ins, outs)) {
    switch (s.hd) {
    case 16:
      tcGradLaunch<16>(ctx, s, ins, outs, dsum);
      break;
    case 32:
      tcGradLaunch<32>(ctx, s, ins, outs, dsum);
      break;
    case 64:
      tcGradLaunch<64>(ctx, s, ins, outs, dsum);
      break;
    default:
      tcGradLaunch<128>(ctx, s, ins, outs, dsum);
    }
  } else if (ins[0].value->dtype == DType::BF16) {
    plainGradAny<bf16>(ctx, s, ins, outs, dsum);
  } else {
    plainGradAny<float>(ctx, s, ins, outs, dsum);
  }
  checkLaunch("AttentionGrad");
}

} // namespace mega::rt::gpu

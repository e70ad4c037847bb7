//===- Attention.cu - Fused (flash) attention, forward and backward -------===//
//
// Opcodes Attention and AttentionGrad (include/mega/Plan/Plan.h). Neither
// writes the [S, S] scores to memory: the forward walks tiles of keys per
// block of queries and holds at most one tile of scores at a time; the
// backward recomputes the probabilities from the saved logsumexp. No float
// atomics (the backend is deterministic): the backward is two kernels, one
// per block of keys (dk, dv: it owns those rows) and one per block of
// queries (dq), each summing over the other side in a fixed order.
//
// bf16 problems go to cuDNN's fused attention first when the backend has
// loaded it (CudnnAttention.h); mega's own two implementations otherwise:
//  * tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation) when q, k, v
//    are bf16, the head dim is 16, 32, 64 or 128, S is a multiple of 64, BH
//    at most 65535 and every pointer 16-byte aligned. Blocks of 64 rows,
//    each warp owning 16; tiles of 64 rows of the other side stream through
//    shared memory with cp.async, double-buffered. Scores, probabilities,
//    dp and ds stay in registers (the accumulator fragments of q k^T are
//    the operand fragments of p v). The forward is one pass with an online
//    softmax; o is stored as f32 or bf16, whichever the plan gives.
//    Probabilities and ds are rounded to bf16 for their products, as in
//    FlashAttention-2; the CPU twin agrees to bf16 tolerance.
//  * plain fp32 arithmetic (f32 or bf16 inputs, any S, head dim <= 128):
//    one thread per query (or key) row, online softmax, tiles of keys
//    (queries) in shared memory; the fp32 plans' kernel, agreeing with the
//    CPU to float rounding.
//
// Every operand group (q|k|v, o, dout, dq|dk|dv) may be strided
// (docs/plan-format.md): with heads H, slice bh = b*H + h starts at
// b*sB + h*sH and its row s at + s*sS, the head dim contiguous; lse and the
// row sums stay [BH, S]. The kernels find each slice through sliceAt(), so
// the contiguous form is the layout {S*hd, 0, hd} with H = 1. The
// tensor-core path moreover wants every stride a multiple of 8 elements
// (16-byte rows for cp.async and the vector stores).
//
//===----------------------------------------------------------------------===//
#include "CudnnAttention.h"
#include "DeviceUtil.cuh"

#include <cuda_bf16.h>
#include <cuda_pipeline.h>

#include <cmath>
#include <cstdint>

namespace mega::rt::gpu {

namespace {

using bf16 = __nv_bfloat16;

__device__ inline float toF(float x) { return x; }
__device__ inline float toF(bf16 x) { return __bfloat162float(x); }

/// Element strides of an operand group (the CPU twin's Layout).
struct Layout {
  int64_t sB, sH, sS;
};

struct Shape {
  int64_t bh, seq;
  int hd;
  bool causal;
  float scale;
  int64_t heads;          ///< H (1 in the contiguous form)
  Layout qkv, o, dout, g; ///< g: dq, dk, dv
};

/// {BH, S, hd, causal}, then optionally H and the strides of each group
/// (Attention: q|k|v, o; AttentionGrad: q|k|v, o, dout, dq|dk|dv).
Shape shapeOf(const Instr &in) {
  Shape s{in.i[0], in.i[1], int(in.i[2]), in.i[3] != 0, in.f[0],
          1,       {},      {},           {},           {}};
  const Layout c{s.seq * s.hd, 0, s.hd};
  s.qkv = s.o = s.dout = s.g = c;
  if (in.i.size() > 4) {
    s.heads = in.i[4];
    Layout *groups[] = {&s.qkv, &s.o, &s.dout, &s.g};
    const bool grad = in.op == Op::AttentionGrad;
    size_t k = 5;
    for (Layout *l : groups) {
      if (!grad && (l == &s.dout || l == &s.g))
        continue;
      *l = Layout{in.i[k], in.i[k + 1], in.i[k + 2]};
      k += 3;
    }
  }
  return s;
}

/// Where slice bh's first row starts.
__host__ __device__ inline int64_t sliceAt(const Layout &l, int64_t heads,
                                           int64_t bh) {
  return (bh / heads) * l.sB + (bh % heads) * l.sH;
}

//===----------------------------------------------------------------------===//
// Plain fp32 kernels: one thread per row, D = padded head dim (32/64/128).
//===----------------------------------------------------------------------===//

constexpr int kRows = 64; // threads (rows) per block
constexpr int kKeys = 32; // rows of the other side per shared-memory tile

/// Loads kKeys rows (from `row0`) of a slice (`x` at its first row, rows
/// `ld` apart) into a [kKeys][D] float tile, zero beyond hd and beyond S.
template <int D, typename T>
__device__ void loadTile(float (*tile)[D], const T *x, int64_t ld, int64_t row0,
                         int64_t seq, int hd) {
  for (int e = threadIdx.x; e < kKeys * D; e += blockDim.x) {
    const int r = e / D, c = e % D;
    const int64_t row = row0 + r;
    tile[r][c] = (row < seq && c < hd) ? toF(x[row * ld + c]) : 0.0f;
  }
}

__device__ inline void storeF(float *p, float x) { *p = x; }
__device__ inline void storeF(bf16 *p, float x) { *p = __float2bfloat16_rn(x); }

template <int D, typename T, typename O>
__global__ void plainForward(const T *q, const T *k, const T *v, O *o,
                             float *lse, Shape s) {
  __shared__ float kt[kKeys][D], vt[kKeys][D];
  const int64_t base = sliceAt(s.qkv, s.heads, blockIdx.y), ld = s.qkv.sS;
  const int64_t i = int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool active = i < s.seq;
  float qi[D], acc[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    qi[c] = active && c < s.hd ? toF(q[base + i * ld + c]) : 0.0f;
    acc[c] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t blockLast = int64_t(blockIdx.x) * kRows + kRows - 1;
  const int64_t keys = s.causal ? imin(s.seq, blockLast + 1) : s.seq;
  for (int64_t j0 = 0; j0 < keys; j0 += kKeys) {
    __syncthreads();
    loadTile<D>(kt, k + base, ld, j0, s.seq, s.hd);
    loadTile<D>(vt, v + base, ld, j0, s.seq, s.hd);
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
  O *orow = o + sliceAt(s.o, s.heads, blockIdx.y) + i * s.o.sS;
  for (int c = 0; c < s.hd && c < D; ++c)
    storeF(orow + c, acc[c] * inv);
  lse[int64_t(blockIdx.y) * s.seq + i] = m + logf(l);
}

/// D_i = dout_i . o_i, the row term of the softmax gradient: a warp per row
/// (the lanes read neighbouring elements; one thread per row would touch 32
/// rows' cache lines per load), summed in a fixed tree.
template <typename T>
__global__ void rowDot(const T *dout, const T *o, float *d, Shape s) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = globalStride() >> 5, rows = s.bh * s.seq;
  for (int64_t r = globalThread() >> 5; r < rows; r += warps) {
    const int64_t bh = r / s.seq, i = r % s.seq;
    const T *dr = dout + sliceAt(s.dout, s.heads, bh) + i * s.dout.sS;
    const T *orow = o + sliceAt(s.o, s.heads, bh) + i * s.o.sS;
    float acc = 0.0f;
    for (int c = lane; c < s.hd; c += 32)
      acc = fmaf(toF(dr[c]), toF(orow[c]), acc);
    acc = warpSum(acc);
    if (lane == 0)
      d[r] = acc;
  }
}

/// dq: one thread per query row, tiles of keys. G = float or bf16 (dq, dk,
/// dv rounded on store: a cast folded in).
template <int D, typename T, typename G>
__global__ void plainGradQ(const T *q, const T *k, const T *v, const T *dout,
                           const float *lse, const float *dsum, G *dq,
                           Shape s) {
  __shared__ float kt[kKeys][D], vt[kKeys][D];
  const int64_t row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = sliceAt(s.qkv, s.heads, blockIdx.y), ld = s.qkv.sS;
  const int64_t dbase = sliceAt(s.dout, s.heads, blockIdx.y);
  const int64_t i = int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool active = i < s.seq;
  float qi[D], di[D], g[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    const bool in = active && c < s.hd;
    qi[c] = in ? toF(q[base + i * ld + c]) : 0.0f;
    di[c] = in ? toF(dout[dbase + i * s.dout.sS + c]) : 0.0f;
    g[c] = 0.0f;
  }
  const float li = active ? lse[row0 + i] : 0.0f;
  const float Di = active ? dsum[row0 + i] : 0.0f;
  const int64_t blockLast = int64_t(blockIdx.x) * kRows + kRows - 1;
  const int64_t keys = s.causal ? imin(s.seq, blockLast + 1) : s.seq;
  for (int64_t j0 = 0; j0 < keys; j0 += kKeys) {
    __syncthreads();
    loadTile<D>(kt, k + base, ld, j0, s.seq, s.hd);
    loadTile<D>(vt, v + base, ld, j0, s.seq, s.hd);
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
  G *grow = dq + sliceAt(s.g, s.heads, blockIdx.y) + i * s.g.sS;
  for (int c = 0; c < s.hd && c < D; ++c)
    storeF(grow + c, g[c] * s.scale);
}

/// dk, dv: one thread per key row, tiles of queries.
template <int D, typename T, typename G>
__global__ void plainGradKV(const T *q, const T *k, const T *v, const T *dout,
                            const float *lse, const float *dsum, G *dk, G *dv,
                            Shape s) {
  __shared__ float qt[kKeys][D], dt[kKeys][D];
  __shared__ float lt[kKeys], st[kKeys];
  const int64_t row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = sliceAt(s.qkv, s.heads, blockIdx.y), ld = s.qkv.sS;
  const int64_t dbase = sliceAt(s.dout, s.heads, blockIdx.y);
  const int64_t j = int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool active = j < s.seq;
  float kj[D], vj[D], gk[D], gv[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    const bool in = active && c < s.hd;
    kj[c] = in ? toF(k[base + j * ld + c]) : 0.0f;
    vj[c] = in ? toF(v[base + j * ld + c]) : 0.0f;
    gk[c] = gv[c] = 0.0f;
  }
  const int64_t first = s.causal ? int64_t(blockIdx.x) * kRows : 0;
  for (int64_t i0 = first / kKeys * kKeys; i0 < s.seq; i0 += kKeys) {
    __syncthreads();
    loadTile<D>(qt, q + base, ld, i0, s.seq, s.hd);
    loadTile<D>(dt, dout + dbase, s.dout.sS, i0, s.seq, s.hd);
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
  const int64_t at = sliceAt(s.g, s.heads, blockIdx.y) + j * s.g.sS;
  for (int c = 0; c < s.hd && c < D; ++c) {
    storeF(dk + at + c, gk[c] * s.scale);
    storeF(dv + at + c, gv[c]);
  }
}

//===----------------------------------------------------------------------===//
// Tensor-core kernels: bf16 mma.sync m16n8k16 with fp32 accumulation.
//
// Fragments of one m16n8k16 product (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), with g = lane / 4, t = lane % 4
// and two bf16 to a 32-bit register, the lower column (or k) in the lower
// half:
//   A 16x16: a0 (row g, cols 2t, 2t+1)   a1 (row g+8, cols 2t, 2t+1)
//            a2 (row g, cols 2t+8, +9)   a3 (row g+8, cols 2t+8, +9)
//   B 16x8:  b0 (k 2t, 2t+1, col g)      b1 (k 2t+8, 2t+9, col g)
//   C 16x8:  c0, c1 (row g, cols 2t, 2t+1)   c2, c3 (row g+8, same cols)
// So the accumulators of two neighbouring 16x8 score tiles j, j+1, rounded
// to bf16 pairs, are the A fragment of the probabilities over those 16 keys:
// {j.c0,c1}, {j.c2,c3}, {j+1.c0,c1}, {j+1.c2,c3}. Scores, probabilities,
// dp and ds never leave registers; only the operands of the products live
// in shared memory.
//===----------------------------------------------------------------------===//

constexpr int kT = 64;    // rows per block and per tile of the other side
constexpr int kWarps = 4; // 16 rows each
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

/// Row stride (bf16) of a tile in shared memory: the head dim plus 8, so a
/// row is a whole number of 16-byte chunks and the rows g = 0..7 of a
/// fragment load start 4 words apart (stride = 4 mod 32 words for head dim
/// 64 and 128, 12 and 20 for 16 and 32): the 32 lanes hit 32 banks.
template <int HD> __host__ __device__ constexpr int ldOf() { return HD + 8; }
template <int HD> __host__ __device__ constexpr int tileElems() {
  return kT * ldOf<HD>();
}

__device__ inline uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); // .x: low half
  return *reinterpret_cast<const uint32_t *>(&h);
}
/// Two neighbouring bf16 of a row (4-byte aligned): one 32-bit load.
__device__ inline uint32_t ld32(const bf16 *p) {
  return *reinterpret_cast<const uint32_t *>(p);
}
/// d += a . b for one 16x16 A fragment and one 16x8 B fragment.
__device__ inline void mma16816(float (&d)[4], const uint32_t (&a)[4],
                                uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// The A fragments of 16 rows x HD of a tile (`x` at the first row), one
/// per 16 columns.
template <int HD>
__device__ void loadRowsA(uint32_t (&f)[HD / 16][4], const bf16 *x, int g,
                          int t) {
  constexpr int LD = ldOf<HD>();
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    const bf16 *p = x + kk * 16 + 2 * t;
    f[kk][0] = ld32(p + g * LD);
    f[kk][1] = ld32(p + (g + 8) * LD);
    f[kk][2] = ld32(p + g * LD + 8);
    f[kk][3] = ld32(p + (g + 8) * LD + 8);
  }
}

/// ldmatrix .x4: lanes 8m .. 8m+7 give the row addresses (16 bytes each) of
/// 8x8 matrix m, and r[m] of lane (g, t) is that matrix's row g, columns 2t
/// and 2t+1; with .trans, its column g, rows 2t and 2t+1 (the lower in the
/// lower half, as a fragment wants).
__device__ inline void ldsm4(uint32_t (&r)[4], const bf16 *p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, "
               "[%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory"); // after the barrier that publishes the tile
}
__device__ inline void ldsm4t(uint32_t (&r)[4], const bf16 *p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, "
               "%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory"); // after the barrier that publishes the tile
}

/// s[j] (16 x 8, j < 8: 64 columns) = a[16 x HD] . rows[64 x HD]^T, `rows`
/// a tile: column n of the product is row n of the tile, so B (k = head
/// dim, n) runs along tile rows. One ldmatrix gives the B fragments of two
/// column tiles j, j+1: matrices (rows 8j.., cols 16kk..), (8j.., 16kk+8..),
/// (8j+8.., 16kk..), (8j+8.., 16kk+8..) = b0, b1 of j, b0, b1 of j+1.
template <int HD>
__device__ void productNT(float (&s)[8][4], const uint32_t (&a)[HD / 16][4],
                          const bf16 *rows, int lane) {
  constexpr int LD = ldOf<HD>();
#pragma unroll
  for (int j = 0; j < 8; ++j)
    s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
  const bf16 *at =
      rows + ((lane >> 4) * 8 + (lane & 7)) * LD + ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      uint32_t b[4];
      ldsm4(b, at + j * 8 * LD + kk * 16);
      mma16816(s[j], a[kk], b[0], b[1]);
      mma16816(s[j + 1], a[kk], b[2], b[3]);
    }
}

/// acc[n] (16 x 8, n < HD/8) += p[16 x 64] . x[64 x HD], p given as the
/// accumulators of productNT (rounded to bf16 here), x a tile whose row is
/// the k index: B's pairs run down a column, so ldmatrix .trans, matrices
/// (rows 16kk.., cols 16c..), (16kk+8.., 16c..), (16kk.., 16c+8..),
/// (16kk+8.., 16c+8..) = b0, b1 of column tile 2c, b0, b1 of 2c+1.
template <int HD>
__device__ void productPV(float (&acc)[HD / 8][4], const float (&p)[8][4],
                          const bf16 *x, int lane) {
  constexpr int LD = ldOf<HD>();
  const bf16 *at = x + (lane & 15) * LD + (lane >> 4) * 8;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint32_t a[4] = {packBf16(p[2 * kk][0], p[2 * kk][1]),
                           packBf16(p[2 * kk][2], p[2 * kk][3]),
                           packBf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                           packBf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int c = 0; c < HD / 16; ++c) {
      uint32_t b[4];
      ldsm4t(b, at + kk * 16 * LD + c * 16);
      mma16816(acc[2 * c], a, b[0], b[1]);
      mma16816(acc[2 * c + 1], a, b[2], b[3]);
    }
  }
}

/// Asynchronous copy (cp.async, 16 bytes a thread) of 64 rows of a bf16
/// slice (`x` at the first row, rows `ld` apart, a multiple of 8) into a
/// tile, and of 64 floats.
template <int HD>
__device__ void tileAsync(bf16 *tile, const bf16 *x, int64_t ld) {
  constexpr int chunks = HD / 8;
  for (int e = threadIdx.x; e < kT * chunks; e += blockDim.x) {
    const int r = e / chunks, c = e % chunks;
    __pipeline_memcpy_async(tile + r * ldOf<HD>() + c * 8, x + r * ld + c * 8,
                            16);
  }
}
__device__ inline void rowsAsync(float *dst, const float *src) {
  if (threadIdx.x < kT / 4)
    __pipeline_memcpy_async(dst + threadIdx.x * 4, src + threadIdx.x * 4, 16);
}

__device__ inline float rowMax4(float x) { // over the 4 lanes of a row
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ inline float rowSum4(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ inline void store2(float *p, float a, float b) {
  *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
__device__ inline void store2(bf16 *p, float a, float b) {
  *reinterpret_cast<uint32_t *>(p) = packBf16(a, b);
}

/// Writes a warp's 16 x HD accumulators (rows `out`, `out` + 8 rows, rows
/// `ld` apart) times `f0` (row g) and `f1` (row g + 8).
template <int HD, typename T>
__device__ void storeRows(T *out, int64_t ld, const float (&acc)[HD / 8][4],
                          float f0, float f1, int g, int t) {
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) {
    store2(out + g * ld + n * 8 + 2 * t, acc[n][0] * f0, acc[n][1] * f0);
    store2(out + (g + 8) * ld + n * 8 + 2 * t, acc[n][2] * f1, acc[n][3] * f1);
  }
}

/// o, lse for 64 queries (block y: slice, x: query tile), one pass over the
/// key tiles with an online softmax (running max and sum per row, the o
/// accumulators rescaled when the max grows). Scores are kept in log2 units
/// (scale * log2 e folded in) for exp2. Key tiles double-buffered.
template <int HD, typename OutT>
__global__ void __launch_bounds__(kWarps * 32)
    tcForward(const bf16 *q, const bf16 *k, const bf16 *v, OutT *o, float *lse,
              Shape s) {
  constexpr int LD = ldOf<HD>(), TE = tileElems<HD>();
  extern __shared__ __align__(128) char smem[];
  bf16 *qs = reinterpret_cast<bf16 *>(smem); // then stages {k, v} x 2
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  // Causal: the last query tiles see the most keys; start them first.
  const int64_t qt = s.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const int64_t row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = sliceAt(s.qkv, s.heads, blockIdx.y), ld = s.qkv.sS;
  const bf16 *kb = k + base, *vb = v + base;
  const int64_t tiles = s.causal ? qt + 1 : s.seq / kT;
  tileAsync<HD>(qs, q + base + qt * kT * ld, ld);
  tileAsync<HD>(qs + TE, kb, ld);
  tileAsync<HD>(qs + 2 * TE, vb, ld);
  __pipeline_commit();
  const float sl2 = s.scale * kLog2e;
  uint32_t qa[HD / 16][4];
  float acc[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n)
    acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (int64_t it = 0; it < tiles; ++it) {
    bf16 *ks = qs + TE + (it & 1) * 2 * TE, *vs = ks + TE;
    if (it + 1 < tiles) { // the next tile into the other stage
      bf16 *nk = qs + TE + ((it + 1) & 1) * 2 * TE;
      tileAsync<HD>(nk, kb + (it + 1) * kT * ld, ld);
      tileAsync<HD>(nk + TE, vb + (it + 1) * kT * ld, ld);
      __pipeline_commit();
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    if (it == 0)
      loadRowsA<HD>(qa, qs + warp * 16 * LD, g, t);
    float sc[8][4];
    productNT<HD>(sc, qa, ks, lane);
    // Element e of tile j: row g + 8 (e / 2), key column j*8 + 2t + e % 2.
    const bool diag = s.causal && it == qt;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[j][e] * sl2;
        if (diag && j * 8 + 2 * t + (e & 1) > warp * 16 + g + 8 * (e >> 1))
          x = -INFINITY;
        sc[j][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float mn = fmaxf(m[r], rowMax4(mx[r]));
      // A row with no key yet keeps base 0 so that exp2(-inf - base) = 0.
      base[r] = mn == -INFINITY ? 0.0f : mn;
      const float alpha = exp2f(m[r] - base[r]);
      m[r] = mn;
      l[r] *= alpha;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) {
        acc[n][2 * r] *= alpha;
        acc[n][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(sc[j][e] - base[e >> 1]);
        sc[j][e] = p;
        l[e >> 1] += p;
      }
    productPV<HD>(acc, sc, vs, lane);
    __syncthreads(); // this stage is refilled by the next iteration
  }
  l[0] = rowSum4(l[0]);
  l[1] = rowSum4(l[1]);
  const int64_t w0 = qt * kT + warp * 16; // the warp's first row
  const int64_t r0 = row0 + w0;           // its lse
  storeRows<HD>(o + sliceAt(s.o, s.heads, blockIdx.y) + w0 * s.o.sS, s.o.sS,
                acc, 1.0f / l[0], 1.0f / l[1], g, t);
  if (t == 0) {
    lse[r0 + g] = m[0] * kLn2 + logf(l[0]);
    lse[r0 + g + 8] = m[1] * kLn2 + logf(l[1]);
  }
}

/// dk, dv for the 64 keys of block x (warp w: keys w*16 .. +16), over the
/// query tiles at or after them (causal) in order, double-buffered:
/// s^T = k q^T and dp^T = v dout^T [16 keys x 64 queries] in registers,
/// p^T = exp(scale s^T - lse), ds^T = p^T (dp^T - D), dv += p^T dout,
/// dk += ds^T q.
template <int HD, typename G>
__global__ void __launch_bounds__(kWarps * 32)
    tcGradKV(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
             const float *lse, const float *dsum, G *dk, G *dv, Shape s) {
  constexpr int LD = ldOf<HD>(), TE = tileElems<HD>();
  constexpr int stageElems = 2 * TE + 2 * kT * 2; // q, dout, lse, D (floats)
  extern __shared__ __align__(128) char smem[];
  bf16 *ks = reinterpret_cast<bf16 *>(smem), *vs = ks + TE;
  bf16 *stages = ks + 2 * TE;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int64_t kt = blockIdx.x, row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = sliceAt(s.qkv, s.heads, blockIdx.y), ld = s.qkv.sS;
  const int64_t dld = s.dout.sS;
  const bf16 *qb = q + base, *db = dout + sliceAt(s.dout, s.heads, blockIdx.y);
  const float *lb = lse + row0, *sb = dsum + row0;
  const int64_t first = s.causal ? kt : 0, tiles = s.seq / kT;
  auto issue = [&](int64_t qtile, int stage) {
    bf16 *st = stages + stage * stageElems;
    float *rows = reinterpret_cast<float *>(st + 2 * TE);
    tileAsync<HD>(st, qb + qtile * kT * ld, ld);
    tileAsync<HD>(st + TE, db + qtile * kT * dld, dld);
    rowsAsync(rows, lb + qtile * kT);
    rowsAsync(rows + kT, sb + qtile * kT);
  };
  tileAsync<HD>(ks, k + base + kt * kT * ld, ld);
  tileAsync<HD>(vs, v + base + kt * kT * ld, ld);
  issue(first, 0);
  __pipeline_commit();
  const float sl2 = s.scale * kLog2e;
  float gk[HD / 8][4], gv[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n)
    for (int e = 0; e < 4; ++e)
      gk[n][e] = gv[n][e] = 0.0f;
  for (int64_t it = first; it < tiles; ++it) {
    const int stage = int((it - first) & 1);
    if (it + 1 < tiles) {
      issue(it + 1, stage ^ 1);
      __pipeline_commit();
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    const bf16 *qs = stages + stage * stageElems, *dos = qs + TE;
    const float *ls = reinterpret_cast<const float *>(qs + 2 * TE);
    const float *ds = ls + kT;
    float st[8][4], dpt[8][4];
    {
      uint32_t fa[HD / 16][4];
      loadRowsA<HD>(fa, ks + warp * 16 * LD, g, t);
      productNT<HD>(st, fa, qs, lane);
      loadRowsA<HD>(fa, vs + warp * 16 * LD, g, t);
      productNT<HD>(dpt, fa, dos, lane);
    }
    // Element e of tile j: key row g + 8 (e / 2), query j*8 + 2t + e % 2.
    const bool diag = s.causal && it == kt;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qc = j * 8 + 2 * t + (e & 1);
        float p = exp2f(st[j][e] * sl2 - ls[qc] * kLog2e);
        if (diag && warp * 16 + g + 8 * (e >> 1) > qc)
          p = 0.0f;
        st[j][e] = p;
        dpt[j][e] = p * (dpt[j][e] - ds[qc]);
      }
    productPV<HD>(gv, st, dos, lane);
    productPV<HD>(gk, dpt, qs, lane);
    __syncthreads();
  }
  const int64_t at =
      sliceAt(s.g, s.heads, blockIdx.y) + (kt * kT + warp * 16) * s.g.sS;
  storeRows<HD>(dk + at, s.g.sS, gk, s.scale, s.scale, g, t);
  storeRows<HD>(dv + at, s.g.sS, gv, 1.0f, 1.0f, g, t);
}

/// dq for the 64 queries of block x (warp w: queries w*16 .. +16), over the
/// key tiles at or before them (causal), double-buffered: s = q k^T,
/// dp = dout v^T, ds = p (dp - D), dq += ds k.
template <int HD, typename G>
__global__ void __launch_bounds__(kWarps * 32)
    tcGradQ(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
            const float *lse, const float *dsum, G *dq, Shape s) {
  constexpr int LD = ldOf<HD>(), TE = tileElems<HD>();
  extern __shared__ __align__(128) char smem[];
  bf16 *qs = reinterpret_cast<bf16 *>(smem), *dos = qs + TE;
  bf16 *stages = qs + 2 * TE; // {k, v} x 2
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int64_t qt = s.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const int64_t row0 = int64_t(blockIdx.y) * s.seq;
  const int64_t base = sliceAt(s.qkv, s.heads, blockIdx.y), ld = s.qkv.sS;
  const bf16 *kb = k + base, *vb = v + base;
  const int64_t tiles = s.causal ? qt + 1 : s.seq / kT;
  tileAsync<HD>(qs, q + base + qt * kT * ld, ld);
  tileAsync<HD>(
      dos, dout + sliceAt(s.dout, s.heads, blockIdx.y) + qt * kT * s.dout.sS,
      s.dout.sS);
  tileAsync<HD>(stages, kb, ld);
  tileAsync<HD>(stages + TE, vb, ld);
  __pipeline_commit();
  const int64_t w0 = qt * kT + warp * 16; // the warp's first row
  const int64_t r0 = row0 + w0;           // its lse and D
  const float sl2 = s.scale * kLog2e;
  const float lrow[2] = {lse[r0 + g] * kLog2e, lse[r0 + g + 8] * kLog2e};
  const float drow[2] = {dsum[r0 + g], dsum[r0 + g + 8]};
  float gq[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n)
    gq[n][0] = gq[n][1] = gq[n][2] = gq[n][3] = 0.0f;
  for (int64_t it = 0; it < tiles; ++it) {
    const bf16 *ks = stages + (it & 1) * 2 * TE, *vs = ks + TE;
    if (it + 1 < tiles) {
      bf16 *nk = stages + ((it + 1) & 1) * 2 * TE;
      tileAsync<HD>(nk, kb + (it + 1) * kT * ld, ld);
      tileAsync<HD>(nk + TE, vb + (it + 1) * kT * ld, ld);
      __pipeline_commit();
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    float sc[8][4], dp[8][4];
    {
      uint32_t fa[HD / 16][4];
      loadRowsA<HD>(fa, qs + warp * 16 * LD, g, t);
      productNT<HD>(sc, fa, ks, lane);
      loadRowsA<HD>(fa, dos + warp * 16 * LD, g, t);
      productNT<HD>(dp, fa, vs, lane);
    }
    // Element e of tile j: query row g + 8 (e / 2), key j*8 + 2t + e % 2.
    const bool diag = s.causal && it == qt;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        float p = exp2f(sc[j][e] * sl2 - lrow[r]);
        if (diag && j * 8 + 2 * t + (e & 1) > warp * 16 + g + 8 * r)
          p = 0.0f;
        dp[j][e] = p * (dp[j][e] - drow[r]);
      }
    productPV<HD>(gq, dp, ks, lane);
    __syncthreads();
  }
  storeRows<HD>(dq + sliceAt(s.g, s.heads, blockIdx.y) + w0 * s.g.sS, s.g.sS,
                gq, s.scale, s.scale, g, t);
}

template <int HD> constexpr size_t forwardSmem() {
  return size_t(5) * tileElems<HD>() * 2; // q, {k, v} x 2
}
template <int HD> constexpr size_t gradKVSmem() {
  return (size_t(2) * tileElems<HD>() +
          2 * (2 * size_t(tileElems<HD>()) + 2 * kT * 2)) *
         2; // k, v, {q, dout, lse, D} x 2
}
template <int HD> constexpr size_t gradQSmem() {
  return size_t(6) * tileElems<HD>() * 2; // q, dout, {k, v} x 2
}

/// The tensor-core path applies: bf16 q, k, v (and o, dout), head dim 16,
/// 32, 64 or 128, S a multiple of 64, BH within a grid's y (65535), every
/// pointer 16-byte aligned and every stride a multiple of 8 elements
/// (cp.async and the vector stores want 16-byte rows).
bool tensorCores(const Shape &s, const Refs &ins, const Refs &outs) {
  if (ins[0].value->dtype != DType::BF16 || s.seq % kT != 0 || s.bh > 65535)
    return false;
  if (s.hd != 16 && s.hd != 32 && s.hd != 64 && s.hd != 128)
    return false;
  for (const Layout &l : {s.qkv, s.o, s.dout, s.g})
    if (l.sB % 8 != 0 || l.sH % 8 != 0 || l.sS % 8 != 0)
      return false;
  for (const auto *list : {&ins, &outs})
    for (const TensorRef &t : *list)
      if (!aligned(t.data, 16))
        return false;
  return true;
}

template <typename K> void allowSmem(K kernel, size_t bytes) {
  checkCuda(cudaFuncSetAttribute(kernel,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(bytes)),
            "cudaFuncSetAttribute (attention shared memory)");
}

template <int HD, typename OutT>
void tcForwardLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                     const Refs &outs) {
  const size_t smem = forwardSmem<HD>();
  allowSmem(tcForward<HD, OutT>, smem);
  dim3 grid(unsigned(s.seq / kT), unsigned(s.bh));
  tcForward<HD, OutT><<<grid, kWarps * 32, smem, ctx.stream>>>(
      static_cast<const bf16 *>(ins[0].data),
      static_cast<const bf16 *>(ins[1].data),
      static_cast<const bf16 *>(ins[2].data), static_cast<OutT *>(outs[0].data),
      outs[1].f32(), s);
}

template <int HD>
void tcForwardAny(const Ctx &ctx, const Shape &s, const Refs &ins,
                  const Refs &outs) {
  if (outs[0].value->dtype == DType::BF16)
    tcForwardLaunch<HD, bf16>(ctx, s, ins, outs);
  else
    tcForwardLaunch<HD, float>(ctx, s, ins, outs);
}

/// G = float or bf16: the type of dq, dk, dv.
template <int HD, typename G>
void tcGradLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                  const Refs &outs, const float *dsum) {
  allowSmem(tcGradKV<HD, G>, gradKVSmem<HD>());
  allowSmem(tcGradQ<HD, G>, gradQSmem<HD>());
  dim3 grid(unsigned(s.seq / kT), unsigned(s.bh));
  auto *q = static_cast<const bf16 *>(ins[0].data);
  auto *k = static_cast<const bf16 *>(ins[1].data);
  auto *v = static_cast<const bf16 *>(ins[2].data);
  auto *dout = static_cast<const bf16 *>(ins[5].data);
  tcGradKV<HD, G><<<grid, kWarps * 32, gradKVSmem<HD>(), ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, static_cast<G *>(outs[1].data),
      static_cast<G *>(outs[2].data), s);
  checkLaunch("AttentionGrad (dk, dv)");
  tcGradQ<HD, G><<<grid, kWarps * 32, gradQSmem<HD>(), ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, static_cast<G *>(outs[0].data), s);
}

template <int HD>
void tcGradAny(const Ctx &ctx, const Shape &s, const Refs &ins,
               const Refs &outs, const float *dsum) {
  if (outs[0].value->dtype == DType::BF16)
    tcGradLaunch<HD, bf16>(ctx, s, ins, outs, dsum);
  else
    tcGradLaunch<HD, float>(ctx, s, ins, outs, dsum);
}

template <int D, typename T>
void plainForwardLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                        const Refs &outs) {
  dim3 grid(unsigned((s.seq + kRows - 1) / kRows), unsigned(s.bh));
  auto *q = static_cast<const T *>(ins[0].data);
  auto *k = static_cast<const T *>(ins[1].data);
  auto *v = static_cast<const T *>(ins[2].data);
  if (outs[0].value->dtype == DType::BF16)
    plainForward<D, T><<<grid, kRows, 0, ctx.stream>>>(
        q, k, v, static_cast<bf16 *>(outs[0].data), outs[1].f32(), s);
  else
    plainForward<D, T><<<grid, kRows, 0, ctx.stream>>>(q, k, v, outs[0].f32(),
                                                       outs[1].f32(), s);
}

template <int D, typename T, typename G>
void plainGradTyped(const Ctx &ctx, const Shape &s, const Refs &ins,
                    const Refs &outs, const float *dsum) {
  dim3 grid(unsigned((s.seq + kRows - 1) / kRows), unsigned(s.bh));
  auto *q = static_cast<const T *>(ins[0].data);
  auto *k = static_cast<const T *>(ins[1].data);
  auto *v = static_cast<const T *>(ins[2].data);
  auto *dout = static_cast<const T *>(ins[5].data);
  plainGradQ<D, T, G><<<grid, kRows, 0, ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, static_cast<G *>(outs[0].data), s);
  checkLaunch("AttentionGrad (dq)");
  plainGradKV<D, T, G><<<grid, kRows, 0, ctx.stream>>>(
      q, k, v, dout, ins[4].f32(), dsum, static_cast<G *>(outs[1].data),
      static_cast<G *>(outs[2].data), s);
}

template <int D, typename T>
void plainGradLaunch(const Ctx &ctx, const Shape &s, const Refs &ins,
                     const Refs &outs, const float *dsum) {
  if (outs[0].value->dtype == DType::BF16)
    plainGradTyped<D, T, bf16>(ctx, s, ins, outs, dsum);
  else
    plainGradTyped<D, T, float>(ctx, s, ins, outs, dsum);
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

/// The problem as cuDNN's SDPA sees it: [B, H, S, hd] with the plan's
/// strides (the contiguous form's H = 1 gets its batch stride for the
/// size-1 dimension).
SdpaProblem sdpaProblem(const Shape &s) {
  auto strides = [&](const Layout &l) {
    return SdpaStrides{l.sB, s.heads == 1 ? l.sB : l.sH, l.sS};
  };
  return SdpaProblem{s.bh / s.heads, s.heads,          s.seq,
                     s.hd,           s.causal,         s.scale,
                     strides(s.qkv), strides(s.o),     strides(s.dout),
                     strides(s.g)};
}

} // namespace

void runAttention(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const Shape s = shapeOf(in);
  if (s.bh == 0)
    return;
  if (ctx.cudnn && runSdpa(ctx, in, sdpaProblem(s), ins, outs))
    return;
  if (tensorCores(s, ins, outs)) {
    switch (s.hd) { // tensorCores() admits 16, 32, 64, 128
    case 16:
      tcForwardAny<16>(ctx, s, ins, outs);
      break;
    case 32:
      tcForwardAny<32>(ctx, s, ins, outs);
      break;
    case 64:
      tcForwardAny<64>(ctx, s, ins, outs);
      break;
    default:
      tcForwardAny<128>(ctx, s, ins, outs);
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
  if (ctx.cudnn && runSdpa(ctx, in, sdpaProblem(s), ins, outs))
    return;
  // D = rowsum(dout * o) first, into the scratch.
  const int64_t rows = s.bh * s.seq;
  float *dsum = static_cast<float *>(ctx.ws->get(size_t(rows) * 4));
  if (ins[0].value->dtype == DType::BF16)
    rowDot<<<gridFor(ctx, rows * 32, 256), 256, 0, ctx.stream>>>(
        static_cast<const bf16 *>(ins[5].data),
        static_cast<const bf16 *>(ins[3].data), dsum, s);
  else
    rowDot<<<gridFor(ctx, rows * 32, 256), 256, 0, ctx.stream>>>(
        ins[5].f32(), ins[3].f32(), dsum, s);
  checkLaunch("AttentionGrad (row sums)");
  if (tensorCores(s, ins, outs)) {
    switch (s.hd) {
    case 16:
      tcGradAny<16>(ctx, s, ins, outs, dsum);
      break;
    case 32:
      tcGradAny<32>(ctx, s, ins, outs, dsum);
      break;
    case 64:
      tcGradAny<64>(ctx, s, ins, outs, dsum);
      break;
    default:
      tcGradAny<128>(ctx, s, ins, outs, dsum);
    }
  } else if (ins[0].value->dtype == DType::BF16) {
    plainGradAny<bf16>(ctx, s, ins, outs, dsum);
  } else {
    plainGradAny<float>(ctx, s, ins, outs, dsum);
  }
  checkLaunch("AttentionGrad");
}

} // namespace mega::rt::gpu

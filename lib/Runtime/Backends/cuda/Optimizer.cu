//===- Optimizer.cu - GradNorm, AdamW, AdamWMulti, Sgd --------------------===//
//
// GradNorm: every gradient is cut into fixed blocks of kNormBlock elements;
// each block's sum of squares (in double) lands in its own slot, and one
// block then adds the slots in a fixed order (16-byte aligned gradients
// are read four elements a thread at a time). The descriptors of up to
// kNormTensors gradients travel in each launch's parameters (no upload).
//
// AdamW and Sgd follow the CPU's (torch.optim's) operation order: scalars
// prepared in double from the device-resident lr, step and coef (one thread
// per block, into shared memory), tensor arithmetic in float. AdamW with
// i = {group} (the distributed optimizer) updates this rank's block of the
// parameter into its output with the same element update.
//
// AdamWMulti: one launch for all the tensors of an optimizer step. Each
// tensor is cut into chunks of kAdamChunk elements; a table of (pointers,
// size, weight decay, first chunk) per tensor lives in device memory,
// uploaded at the instruction's first launch (TableCache), and the blocks
// walk the chunks of all tensors, four elements a thread at a time where
// the tensor's arrays are aligned for it. A tensor with a bf16 copy (the copy flags
// of mega-bf16-weight-copies) gets it written from the updated value in the
// same pass, rounded as Cast rounds (__float2bfloat16_rn).
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"

#include <cmath>
#include <limits>

namespace mega::rt::gpu {

namespace {

constexpr int64_t kNormBlock = 16384;
constexpr int kNormTensors = 64;
constexpr int kNormThreads = 256;

struct NormBatch {
  int count;
  const float *ptr[kNormTensors];
  int64_t n[kNormTensors];
  int64_t firstSlot[kNormTensors +
                    1]; ///< slots of tensor k: [first[k], first[k+1])
};

__global__ void __launch_bounds__(kNormThreads)
    sumSquaresKernel(const __grid_constant__ NormBatch b,
                     double *__restrict__ slots) {
  __shared__ double sh[32];
  const int64_t total = b.firstSlot[b.count];
  for (int64_t s = blockIdx.x; s < total; s += gridDim.x) {
    int k = 0; // the tensor holding slot s (few tensors: linear search)
    while (b.firstSlot[k + 1] <= s)
      ++k;
    const int64_t begin = (s - b.firstSlot[k]) * kNormBlock;
    const int64_t end =
        begin + kNormBlock < b.n[k] ? begin + kNormBlock : b.n[k];
    const float *p = b.ptr[k];
    double acc = 0.0;
    // Four elements a thread at a time from a 16-byte aligned gradient
    // (blocks start at multiples of kNormBlock): four loads in flight, not
    // one. The order is fixed either way: the same bits every run.
    int64_t e0 = begin;
    if (reinterpret_cast<uintptr_t>(p) % 16 == 0) {
      const int64_t nv = (end - begin) / 4;
      for (int64_t q = threadIdx.x; q < nv; q += blockDim.x) {
        const float4 x = *reinterpret_cast<const float4 *>(p + begin + 4 * q);
        acc += double(x.x) * double(x.x);
        acc += double(x.y) * double(x.y);
        acc += double(x.z) * double(x.z);
        acc += double(x.w) * double(x.w);
      }
      e0 = begin + 4 * nv;
    }
    for (int64_t e = e0 + threadIdx.x; e < end; e += blockDim.x)
      acc += double(p[e]) * double(p[e]);
    acc = blockSum(acc, sh);
    if (threadIdx.x == 0)
      slots[s] = acc;
  }
}

__global__ void normFinalKernel(const double *__restrict__ slots, int64_t n,
                                float maxNorm, float *__restrict__ norm,
                                float *__restrict__ coef) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
    s += slots[k];
  s = blockSum(s, sh);
  if (threadIdx.x == 0) {
    const float nv = float(sqrt(s));
    float c;
    if (!isfinite(nv))
      c = nanf("");
    else if (maxNorm <= 0.0f)
      c = 1.0f;
    else
      c = fminf(1.0f, maxNorm / (nv + 1e-6f)); // as clip_grad_norm_
    norm[0] = nv;
    coef[0] = c;
  }
}

struct AdamScalars {
  float coef, decay, b1, a1, b2, a2, negStep, bc2Sqrt;
  int skip;
};

/// torch's AdamW step scalars (Python floats, rounded to float when used)
/// from the device-resident lr, step and clip coefficient; `decay` is for
/// weight decay `wd`. One thread computes them.
__device__ inline AdamScalars adamScalars(float coef, double lr, double t,
                                          double beta1, double beta2,
                                          double wd) {
  AdamScalars s;
  s.skip = isnan(coef) ? 1 : 0; // non-finite gradient norm: skip the step
  s.coef = coef;
  s.decay = float(1.0 - lr * wd);
  s.b1 = float(beta1);
  s.a1 = float(1.0 - beta1);
  s.b2 = float(beta2);
  s.a2 = float(1.0 - beta2);
  const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
  s.negStep = float(-(lr / bc1));
  s.bc2Sqrt = float(sqrt(bc2));
  return s;
}

/// One AdamW update in torch's operation order, on values in registers:
/// p, m and v updated in place from the gradient g, with the tensor's
/// float decay `dc`.
__device__ inline void adamElementIn(float &p, float g, float &m, float &v,
                                     const AdamScalars &s, float dc,
                                     float eps) {
  g = g * s.coef;
  const float pk = p * dc;
  m = m * s.b1 + s.a1 * g;
  v = v * s.b2 + s.a2 * (g * g);
  const float denom = sqrtf(v) / s.bc2Sqrt + eps;
  p = pk + s.negStep * (m / denom);
}

/// Element k of one AdamW update: pin[k] -> pout[k] (the same array in
/// place, or the distributed optimizer's block of the parameter -> its
/// output).
__device__ inline void adamElement(const float *pin, float *pout,
                                   const float *__restrict__ grad,
                                   float *__restrict__ m, float *__restrict__ v,
                                   int64_t k, const AdamScalars &s, float dc,
                                   float eps) {
  float pk = pin[k], mk = m[k], vk = v[k];
  adamElementIn(pk, grad[k], mk, vk, s, dc, eps);
  m[k] = mk;
  v[k] = vk;
  pout[k] = pk;
}

__global__ void adamWKernel(float *__restrict__ p,
                            const float *__restrict__ grad,
                            float *__restrict__ m, float *__restrict__ v,
                            int64_t n, const float *__restrict__ lrp,
                            const float *__restrict__ stepp,
                            const float *__restrict__ coefp, double beta1,
                            double beta2, float eps, double wd) {
  __shared__ AdamScalars s;
  if (threadIdx.x == 0)
    s = adamScalars(coefp[0], lrp[0], stepp[0], beta1, beta2, wd);
  __syncthreads();
  if (s.skip)
    return;
  const AdamScalars sc = s;
  for (int64_t k = globalThread(); k < n; k += globalStride())
    adamElement(p, p, grad, m, v, k, sc, sc.decay, eps);
}

/// The distributed optimizer's AdamW: block `pin` of the parameter (n
/// elements) updated into `out`; a skipped step copies the block unchanged
/// (the AllGather that follows puts it back).
__global__ void adamWShardKernel(const float *__restrict__ pin,
                                 float *__restrict__ out,
                                 const float *__restrict__ grad,
                                 float *__restrict__ m, float *__restrict__ v,
                                 int64_t n, const float *__restrict__ lrp,
                                 const float *__restrict__ stepp,
                                 const float *__restrict__ coefp, double beta1,
                                 double beta2, float eps, double wd) {
  __shared__ AdamScalars s;
  if (threadIdx.x == 0)
    s = adamScalars(coefp[0], lrp[0], stepp[0], beta1, beta2, wd);
  __syncthreads();
  const AdamScalars sc = s;
  if (sc.skip) {
    for (int64_t k = globalThread(); k < n; k += globalStride())
      out[k] = pin[k];
    return;
  }
  for (int64_t k = globalThread(); k < n; k += globalStride())
    adamElement(pin, out, grad, m, v, k, sc, sc.decay, eps);
}

constexpr int64_t kAdamChunk = 8192;
constexpr int kAdamThreads = 256;

/// One tensor of an AdamWMulti (the device table's row).
struct AdamTensor {
  float *p, *g, *m, *v;
  __nv_bfloat16 *copy; ///< the parameter's bf16 copy, or nullptr
  int64_t n;
  int64_t firstChunk; ///< chunks of tensor k: [first[k], first[k+1])
  double wd;
  int vec; ///< p, g, m, v 16-byte aligned and the copy 8: float4 access
};

__global__ void __launch_bounds__(kAdamThreads)
    adamWMultiKernel(const AdamTensor *__restrict__ table, int count,
                     int64_t chunks, const float *__restrict__ lrp,
                     const float *__restrict__ stepp,
                     const float *__restrict__ coefp, double beta1,
                     double beta2, float eps, int zeroGrads) {
  __shared__ AdamScalars s;
  __shared__ double lrShared;
  if (threadIdx.x == 0) {
    lrShared = lrp[0];
    // (decay is per tensor, below)
    s = adamScalars(coefp[0], lrShared, stepp[0], beta1, beta2, 0.0);
  }
  __syncthreads();
  const AdamScalars sc = s;
  const bool update = !sc.skip;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    // The tensor holding chunk c: binary search over the first chunks.
    int lo = 0, hi = count - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table[mid].firstChunk <= c)
        lo = mid;
      else
        hi = mid - 1;
    }
    const AdamTensor &t = table[lo];
    const int64_t begin = (c - t.firstChunk) * kAdamChunk;
    const int64_t end = begin + kAdamChunk < t.n ? begin + kAdamChunk : t.n;
    float *__restrict__ p = t.p;
    float *__restrict__ g = t.g;
    float *__restrict__ m = t.m;
    float *__restrict__ v = t.v;
    __nv_bfloat16 *__restrict__ copy = t.copy;
    // As the single AdamW: the decay of this tensor, rounded to float.
    const float dc = float(1.0 - lrShared * t.wd);
    // Four elements a thread at a time where every array of the tensor is
    // 16-byte aligned (8 for the copy; chunks start at multiples of
    // kAdamChunk elements): four loads of each array in flight, not one;
    // each element's arithmetic is adamElement's. The rest (a misaligned
    // tensor, a tail short of four) one element at a time.
    int64_t k0 = begin;
    if (t.vec) {
      const int64_t nv = (end - begin) / 4;
      for (int64_t q = threadIdx.x; q < nv; q += blockDim.x) {
        const int64_t k = begin + 4 * q;
        float4 *p4 = reinterpret_cast<float4 *>(p + k);
        float4 *g4 = reinterpret_cast<float4 *>(g + k);
        float4 *m4 = reinterpret_cast<float4 *>(m + k);
        float4 *v4 = reinterpret_cast<float4 *>(v + k);
        float4 pv = *p4;
        if (update) {
          float4 gv = *g4, mv = *m4, vv = *v4;
          adamElementIn(pv.x, gv.x, mv.x, vv.x, sc, dc, eps);
          adamElementIn(pv.y, gv.y, mv.y, vv.y, sc, dc, eps);
          adamElementIn(pv.z, gv.z, mv.z, vv.z, sc, dc, eps);
          adamElementIn(pv.w, gv.w, mv.w, vv.w, sc, dc, eps);
          *m4 = mv;
          *v4 = vv;
          *p4 = pv;
        }
        if (copy)
          put4(reinterpret_cast<Bf16x4 *>(copy + k), pv);
        if (zeroGrads)
          *g4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
      k0 = begin + 4 * nv;
    }
    for (int64_t k = k0 + threadIdx.x; k < end; k += blockDim.x) {
      if (update)
        adamElement(p, p, g, m, v, k, sc, dc, eps);
      // From the new value (the old one when skipped): the Cast the next
      // step's programs would otherwise do. This thread wrote p[k].
      if (copy)
        copy[k] = __float2bfloat16_rn(p[k]);
      if (zeroGrads)
        g[k] = 0.0f; // the Fill of mega.zero_grad, after the update
    }
  }
}

__global__ void sgdKernel(float *__restrict__ p, const float *__restrict__ grad,
                          int64_t n, const float *__restrict__ lrp,
                          const float *__restrict__ coefp, float wd) {
  const float cf = coefp[0];
  if (isnan(cf))
    return;
  const float nl = -lrp[0];
  for (int64_t k = globalThread(); k < n; k += globalStride()) {
    const float g = grad[k] * cf;
    p[k] = p[k] + nl * (g + wd * p[k]);
  }
}

__global__ void slotSumKernel(const double *__restrict__ slots, int64_t n,
                              double *__restrict__ out) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
    s += slots[k];
  s = blockSum(s, sh);
  if (threadIdx.x == 0)
    *out = s;
}

/// Blocks of squares of `refs` into slots from `slots` on; returns the
/// number of slots written.
int64_t sumSquares(const Ctx &ctx, const std::vector<const TensorRef *> &refs,
                   double *slots) {
  int64_t slot = 0;
  for (size_t k0 = 0; k0 < refs.size(); k0 += kNormTensors) {
    NormBatch b{};
    b.count = int(std::min<size_t>(kNormTensors, refs.size() - k0));
    int64_t first = 0;
    for (int k = 0; k < b.count; ++k) {
      const TensorRef &t = *refs[k0 + size_t(k)];
      b.ptr[k] = t.f32();
      b.n[k] = t.numel();
      b.firstSlot[k] = first;
      first += (b.n[k] + kNormBlock - 1) / kNormBlock;
    }
    b.firstSlot[b.count] = first;
    if (first > 0) {
      sumSquaresKernel<<<rowGrid(first), kNormThreads, 0, ctx.stream>>>(
          b, slots + slot);
      checkLaunch("GradNorm (blocks)");
    }
    slot += first;
  }
  return slot;
}

} // namespace

void runGradNorm(const Ctx &ctx, const Instr &in, const Refs &ins,
                 const Refs &outs) {
  int64_t slotsTotal = 0;
  std::vector<const TensorRef *> all;
  for (const TensorRef &t : ins) {
    slotsTotal += (t.numel() + kNormBlock - 1) / kNormBlock;
    all.push_back(&t);
  }
  Carve carve;
  const size_t slotsAt = carve.add(size_t(slotsTotal) * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  double *slots = reinterpret_cast<double *>(ws + slotsAt);
  sumSquares(ctx, all, slots);
  normFinalKernel<<<1, 1024, 0, ctx.stream>>>(slots, slotsTotal, in.f[0],
                                              outs[0].f32(), outs[1].f32());
  checkLaunch("GradNorm");
}

void runGradNormSharded(const Ctx &ctx, const Instr &in, const Refs &ins,
                        const Refs &outs, Communicator &comm) {
  // The squares summed here: the sums of the replicated (flag 0) and the
  // sharded (flag 1) gradients, flag 2 (counted on another pipeline rank)
  // skipped, come to the host, meet over the groups (gradNormTotal, as on
  // the CPU), and the norm and coefficient go back.
  const size_t n = ins.size();
  std::vector<const TensorRef *> kind[2];
  int64_t slotsTotal = 0;
  for (size_t k = 0; k < n; ++k) {
    if (in.i[1 + k] == 2)
      continue;
    kind[in.i[1 + k] != 0 ? 1 : 0].push_back(&ins[k]);
    slotsTotal += (ins[k].numel() + kNormBlock - 1) / kNormBlock;
  }
  Carve carve;
  const size_t slotsAt = carve.add(size_t(slotsTotal) * sizeof(double));
  const size_t sumsAt = carve.add(2 * sizeof(double));
  char *ws = static_cast<char *>(ctx.ws->get(carve.total()));
  double *slots = reinterpret_cast<double *>(ws + slotsAt);
  double *sums = reinterpret_cast<double *>(ws + sumsAt);
  int64_t at = 0;
  for (int k = 0; k < 2; ++k) {
    int64_t used = sumSquares(ctx, kind[k], slots + at);
    slotSumKernel<<<1, 1024, 0, ctx.stream>>>(slots + at, used, sums + k);
    checkLaunch("GradNorm (sums)");
    at += used;
  }
  double ss[2];
  checkCuda(cudaMemcpyAsync(ss, sums, sizeof ss, cudaMemcpyDeviceToHost,
                            ctx.stream),
            "cudaMemcpyAsync (GradNorm sums)");
  checkCuda(cudaStreamSynchronize(ctx.stream), "GradNorm");
  const double total = gradNormTotal(in, n, ss[0], ss[1], comm);
  // As normFinalKernel (and the CPU's clip_grad_norm_ formula).
  float result[2];
  result[0] = float(std::sqrt(total));
  const float maxNorm = in.f[0];
  if (!std::isfinite(result[0]))
    result[1] = std::numeric_limits<float>::quiet_NaN();
  else if (maxNorm <= 0.0f)
    result[1] = 1.0f;
  else
    result[1] = std::fmin(1.0f, maxNorm / (result[0] + 1e-6f));
  checkCuda(cudaMemcpyAsync(outs[0].f32(), &result[0], sizeof(float),
                            cudaMemcpyHostToDevice, ctx.stream),
            "cudaMemcpyAsync (GradNorm norm)");
  checkCuda(cudaMemcpyAsync(outs[1].f32(), &result[1], sizeof(float),
                            cudaMemcpyHostToDevice, ctx.stream),
            "cudaMemcpyAsync (GradNorm coef)");
  // The copies read `result` from this stack frame.
  checkCuda(cudaStreamSynchronize(ctx.stream), "GradNorm");
}

void runAdamW(const Ctx &ctx, const Instr &in, const Refs &ins,
              const Refs &outs) {
  // AdamW with a group never comes here: the backends send it to
  // runAdamWShard with its groupPlace().
  const int64_t n = ins[0].numel();
  if (n == 0)
    return;
  adamWKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
      ins[0].f32(), ins[1].f32(), ins[2].f32(), ins[3].f32(), n, ins[4].f32(),
      ins[5].f32(), ins[6].f32(), double(in.f[0]), double(in.f[1]), in.f[2],
      double(in.f[3]));
  checkLaunch("AdamW");
}

void runAdamWShard(const Ctx &ctx, const GroupPlace &place, const Instr &in,
                   const Refs &ins, const Refs &outs) {
  const int64_t n = ins[1].numel();
  if (ins[0].numel() != n * place.size)
    throw Error("AdamW: the parameter has " + std::to_string(ins[0].numel()) +
                " elements, not " + std::to_string(place.size) + " blocks of " +
                std::to_string(n));
  if (n == 0)
    return;
  adamWShardKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
      ins[0].f32() + place.rank * n, outs[0].f32(), ins[1].f32(), ins[2].f32(),
      ins[3].f32(), n, ins[4].f32(), ins[5].f32(), ins[6].f32(),
      double(in.f[0]), double(in.f[1]), in.f[2], double(in.f[3]));
  checkLaunch("AdamW");
}

void runAdamWMulti(const Ctx &ctx, const Instr &in, const Refs &ins,
                   const Refs &outs) {
  const int64_t n = in.i[0];
  std::vector<AdamTensor> table(static_cast<size_t>(n));
  int64_t chunks = 0;
  size_t copies = 0; // outputs used: one per copy flag set, in order
  for (int64_t k = 0; k < n; ++k) {
    const TensorRef *q = &ins[size_t(3 + 4 * k)];
    AdamTensor &t = table[size_t(k)];
    t.p = q[0].f32();
    t.g = q[1].f32();
    t.m = q[2].f32();
    t.v = q[3].f32();
    t.copy = in.i.size() > 2 && in.i[size_t(2 + k)]
                 ? static_cast<__nv_bfloat16 *>(outs[copies++].data)
                 : nullptr;
    t.n = q[0].numel();
    t.firstChunk = chunks;
    t.wd = double(in.f[size_t(3 + k)]);
    t.vec = aligned(t.p, 16) && aligned(t.g, 16) && aligned(t.m, 16) &&
            aligned(t.v, 16) && (!t.copy || aligned(t.copy, 8));
    chunks += (t.n + kAdamChunk - 1) / kAdamChunk;
  }
  if (chunks == 0)
    return;
  // Uploaded once per instruction (the pointers never change between
  // steps); later launches only compare the host copy.
  const auto *dev = static_cast<const AdamTensor *>(
      ctx.tables->get(&in, table.data(), table.size() * sizeof(AdamTensor)));
  const int64_t cap = int64_t(ctx.sms) * 8;
  const unsigned grid = unsigned(chunks < cap ? chunks : cap);
  adamWMultiKernel<<<grid, kAdamThreads, 0, ctx.stream>>>(
      dev, int(n), chunks, ins[0].f32(), ins[1].f32(), ins[2].f32(),
      double(in.f[0]), double(in.f[1]), in.f[2], int(in.i[1] != 0));
  checkLaunch("AdamWMulti");
}

void runSgd(const Ctx &ctx, const Instr &in, const Refs &ins, const Refs &) {
  const int64_t n = ins[0].numel();
  if (n == 0)
    return;
  sgdKernel<<<gridFor(ctx, n, 256), 256, 0, ctx.stream>>>(
      ins[0].f32(), ins[1].f32(), n, ins[2].f32(), ins[3].f32(), in.f[0]);
  checkLaunch("Sgd");
}

} // namespace mega::rt::gpu

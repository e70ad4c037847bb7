//===- Elementwise.cu - Elementwise: generated kernels, or the interpreter ===//
//
// Each Elementwise runs as its own generated kernel (ElementwiseSource.h,
// compiled by NVRTC when the plan was checked, Jit.h): the vector variant
// when every operand allows 16-byte access (ewVectorizable), the scalar one
// otherwise. The interpreter below stays for when NVRTC cannot be used (or
// MEGA_CUDA_NVRTC=0), and as the reference the generated code follows.
//
// The interpreter: one thread per element (grid-stride); each thread runs the whole micro-op
// code over its own 16 registers. The program travels in the kernel's
// parameters (constant memory, read uniformly by every thread), so a launch
// needs no upload. Semantics per micro-op are the CPU's (Elementwise.cpp):
// same formulas for GELU and its gradient, NaN-propagating max/min, 1/sqrt
// for Rsqrt. expf/logf/tanhf are CUDA's (within 2 ulp), the CPU's are its
// own polynomials (within 2 ulp): results agree to a few float ulps.
//
// An output may be an input (same bytes): each element is read and written
// by one thread, in code order, exactly as the CPU does per element.
//
//===----------------------------------------------------------------------===//
#include "DeviceUtil.cuh"
#include "Jit.h"

#include <cuda_bf16.h>

namespace mega::rt::gpu {

using plan::EwOp;
using plan::kEwRegisters;

namespace {

struct EwArgs {
  int64_t n;
  int nin, nout, ncode;
  const void *in[kEwMaxInputs];
  int64_t period[kEwMaxInputs];
  void *out[kEwMaxOutputs];
  uint32_t bf16In;  ///< bit k: input k is bf16 (Load widens)
  uint32_t bf16Out; ///< bit k: output k is bf16 (Store rounds)
  uint8_t code[kEwMaxCode][4]; // (op, dst, a, b)
  float consts[kEwMaxConsts];
};
static_assert(sizeof(EwArgs) < 4000, "kernel parameters are limited to 4 KB");

__device__ inline float maxNan(float x, float y) {
  float r = x > y ? x : y;
  r = y != y ? y : r;
  return x != x ? x : r;
}
__device__ inline float minNan(float x, float y) {
  float r = x < y ? x : y;
  r = y != y ? y : r;
  return x != x ? x : r;
}

// __grid_constant__: the code is indexed per thread without a local copy.
// I: the index type, 32-bit when n fits (the broadcast `e % period` in
// 64 bits is many instructions per element).
template <typename I>
__global__ void __launch_bounds__(256)
    ewKernel(const __grid_constant__ EwArgs a) {
  const I n = I(a.n), stride = I(gridDim.x) * blockDim.x;
  for (I e = I(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    float r[kEwRegisters];
    for (int k = 0; k < a.ncode; ++k) {
      const int op = a.code[k][0], d = a.code[k][1];
      const int x = a.code[k][2], y = a.code[k][3];
      switch (EwOp(op)) {
      case EwOp::Load: {
        const I p = I(a.period[x]);
        const I at = p == n ? e : (p == 1 ? I(0) : e % p);
        r[d] = a.bf16In >> x & 1u
                   ? __bfloat162float(
                         static_cast<const __nv_bfloat16 *>(a.in[x])[at])
                   : static_cast<const float *>(a.in[x])[at];
        break;
      }
      case EwOp::Store:
        if (a.bf16Out >> x & 1u)
          static_cast<__nv_bfloat16 *>(a.out[x])[e] = __float2bfloat16_rn(r[d]);
        else
          static_cast<float *>(a.out[x])[e] = r[d];
        break;
      case EwOp::Const:
        r[d] = a.consts[x];
        break;
      case EwOp::Add:
        r[d] = r[x] + r[y];
        break;
      case EwOp::Sub:
        r[d] = r[x] - r[y];
        break;
      case EwOp::Mul:
        r[d] = r[x] * r[y];
        break;
      case EwOp::Div:
        r[d] = r[x] / r[y];
        break;
      case EwOp::Neg:
        r[d] = -r[x];
        break;
      case EwOp::Exp:
        r[d] = expf(r[x]);
        break;
      case EwOp::Log:
        r[d] = logf(r[x]);
        break;
      case EwOp::Tanh:
        r[d] = tanhf(r[x]);
        break;
      case EwOp::Sqrt:
        r[d] = sqrtf(r[x]);
        break;
      case EwOp::Rsqrt:
        r[d] = 1.0f / sqrtf(r[x]);
        break;
      case EwOp::Max:
        r[d] = maxNan(r[x], r[y]);
        break;
      case EwOp::Min:
        r[d] = minNan(r[x], r[y]);
        break;
      case EwOp::Gelu:
        r[d] = gelu(r[x]);
        break;
      case EwOp::GeluGrad:
        r[d] = geluGrad(r[x], r[y]);
        break;
      case EwOp::Square:
        r[d] = r[x] * r[x];
        break;
      }
    }
  }
}

} // namespace

static_assert(kEwMaxInputs <= kEwJitMaxInputs &&
                  kEwMaxOutputs <= kEwJitMaxOutputs,
              "check() admits no program the generated kernels cannot take");

/// Runs `in` through its generated kernel; false when there is none (the
/// interpreter runs it).
static bool runGenerated(const Ctx &ctx, const Instr &in, const Refs &ins,
                         const Refs &outs) {
  if (!ctx.ewJit)
    return false;
  std::vector<bool> inBf16(ins.size()), outBf16(outs.size());
  for (size_t k = 0; k < ins.size(); ++k)
    inBf16[k] = ins[k].value->dtype == DType::BF16;
  for (size_t k = 0; k < outs.size(); ++k)
    outBf16[k] = outs[k].value->dtype == DType::BF16;
  const EwJit::Kernels *k = ctx.ewJit->get(in, inBf16, outBf16);
  if (!k)
    return false;
  ctx.ewJit->report(); // once after a plan's kernels were compiled
  EwParams p{};
  p.n = in.i[0];
  for (size_t j = 0; j < ins.size(); ++j) {
    p.in[j] = static_cast<const float *>(ins[j].data); // or bf16
    p.period[j] = in.i[3 + j];
  }
  for (size_t j = 0; j < outs.size(); ++j)
    p.out[j] = outs[j].data;
  const bool vec = ewVectorizable(k->spec, p);
  const int64_t items = vec ? p.n / 4 : p.n;
  void *args[] = {&p};
  checkCuda(cudaLaunchKernel(reinterpret_cast<const void *>(
                                 vec ? k->vec : k->scalar),
                             dim3(gridFor(ctx, items, 256)), dim3(256), args,
                             0, ctx.stream),
            vec ? "cudaLaunchKernel (generated Elementwise, vector)"
                : "cudaLaunchKernel (generated Elementwise)");
  checkLaunch("Elementwise (generated)");
  return true;
}

void runElementwise(const Ctx &ctx, const Instr &in, const Refs &ins,
                    const Refs &outs) {
  // check() proved: counts within the kEwMax* limits, registers < 16,
  // indices in range, every output stored.
  if (in.i[0] == 0)
    return;
  if (runGenerated(ctx, in, ins, outs))
    return;
  EwArgs a{};
  a.n = in.i[0];
  a.nin = int(in.i[1]);
  a.nout = int(in.i[2]);
  if (a.n == 0)
    return;
  for (int k = 0; k < a.nin; ++k) {
    a.in[k] = ins[size_t(k)].data;
    a.period[k] = in.i[size_t(3 + k)];
    if (ins[size_t(k)].value->dtype == DType::BF16)
      a.bf16In |= 1u << k;
  }
  for (int k = 0; k < a.nout; ++k) {
    a.out[k] = outs[size_t(k)].data;
    if (outs[size_t(k)].value->dtype == DType::BF16)
      a.bf16Out |= 1u << k;
  }
  const size_t codeAt = size_t(3 + a.nin);
  a.ncode = int((in.i.size() - codeAt) / 4);
  for (int k = 0; k < a.ncode; ++k)
    for (int j = 0; j < 4; ++j)
      a.code[k][j] = uint8_t(in.i[codeAt + size_t(4 * k + j)]);
  for (size_t k = 0; k < in.f.size(); ++k)
    a.consts[k] = in.f[k];
  if (a.n < (int64_t(1) << 31))
    ewKernel<uint32_t><<<gridFor(ctx, a.n, 256), 256, 0, ctx.stream>>>(a);
  else
    ewKernel<int64_t><<<gridFor(ctx, a.n, 256), 256, 0, ctx.stream>>>(a);
  checkLaunch("Elementwise");
}

} // namespace mega::rt::gpu

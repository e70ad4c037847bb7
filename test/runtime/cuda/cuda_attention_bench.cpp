//===- cuda_attention_bench.cpp - Timing Attention and AttentionGrad -----===//
//
// Times the CUDA backend's Attention and AttentionGrad on one shape (by
// default GPT-2 small's: BH 192 = 16 x 12 heads, S 1024, head dim 64,
// causal, bf16), on mega's kernels and (bf16) on cuDNN's fused attention,
// and prints the median of 20 runs in ms and TFLOP/s. FLOPs
// by convention: forward 4 BH S^2 hd (halved when causal), backward 2.5x
// the forward. Each run is one launch between two synchronisations (the
// backend's stream is its own), so a launch's host overhead, some
// microseconds, is in the figure.
//
//   cuda_attention_bench [BH S hd causal [f32|bf16]]
//
// Not a test (not run by ctest): exits 77 without a device, 1 on an error.
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"

#include "mega/Runtime/Backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace mega;
using plan::DType;
using plan::Instr;
using plan::Op;
using plan::Value;

namespace {

struct Tensor {
  Value v;
  void *data = nullptr;
};

uint16_t bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

/// A device tensor of random values in [lo, hi] (zero-filled when lo == hi).
Tensor make(rt::Backend &be, DType dt, std::vector<int64_t> shape, int index,
            std::mt19937 &g, float lo, float hi) {
  Tensor t;
  t.v.space = plan::Space::Persistent;
  t.v.index = index;
  t.v.dtype = dt;
  t.v.shape = std::move(shape);
  const int64_t n = t.v.numel();
  t.data = be.allocate(size_t(t.v.bytes()));
  std::uniform_real_distribution<float> u(lo, hi);
  if (dt == DType::BF16) {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (auto &x : h)
      x = bf16Bits(lo == hi ? lo : u(g));
    be.copyToDevice(t.data, h.data(), h.size() * 2);
  } else {
    std::vector<float> h(static_cast<size_t>(n));
    for (auto &x : h)
      x = lo == hi ? lo : u(g);
    be.copyToDevice(t.data, h.data(), h.size() * 4);
  }
  return t;
}

/// Median milliseconds of `runs` launches of `in`, after 3 to warm up.
double timeIt(rt::Backend &be, const Instr &in, std::vector<Tensor *> ins,
              std::vector<Tensor *> outs, int runs) {
  std::vector<const Value *> vi, vo;
  std::vector<rt::TensorRef> ri, ro;
  for (Tensor *t : ins) {
    vi.push_back(&t->v);
    ri.push_back({t->data, &t->v});
  }
  for (Tensor *t : outs) {
    vo.push_back(&t->v);
    ro.push_back({t->data, &t->v});
  }
  be.check(in, vi, vo);
  std::vector<double> ms;
  for (int r = 0; r < runs + 3; ++r) {
    be.synchronize();
    auto t0 = std::chrono::steady_clock::now();
    be.launch(in, ri, ro);
    be.synchronize();
    auto t1 = std::chrono::steady_clock::now();
    if (r >= 3)
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  int64_t bh = 192, seq = 1024, hd = 64, causal = 1;
  DType dt = DType::BF16;
  if (argc != 1 && argc != 5 && argc != 6) {
    std::printf("error: usage: cuda_attention_bench [BH S hd causal "
                "[f32|bf16]], got %d arguments\n",
                argc - 1);
    return 1;
  }
  if (argc >= 5) {
    bh = std::atoll(argv[1]);
    seq = std::atoll(argv[2]);
    hd = std::atoll(argv[3]);
    causal = std::atoll(argv[4]) != 0;
    if (bh < 1 || seq < 1 || hd < 1 || hd > 128) {
      std::printf("error: BH, S must be >= 1 and hd in 1..128, got %lld %lld "
                  "%lld\n",
                  (long long)bh, (long long)seq, (long long)hd);
      return 1;
    }
  }
  if (argc == 6) {
    const std::string t = argv[5];
    if (t != "f32" && t != "bf16") {
      std::printf("error: the dtype must be f32 or bf16, got %s\n", t.c_str());
      return 1;
    }
    dt = t == "f32" ? DType::F32 : DType::BF16;
  }
  std::string reason;
  if (rt::gpu::deviceCount(reason) <= 0) {
    std::printf("SKIP: no CUDA device (%s)\n", reason.c_str());
    return 77;
  }
  // mega's kernels, then (bf16) cuDNN's fused attention, on the same
  // operands: o and the gradients in the operands' dtype, as megac's plans
  // have them.
  std::vector<rt::AttentionBackend> impls = {rt::AttentionBackend::Local};
  if (dt == DType::BF16)
    impls.push_back(rt::AttentionBackend::Fused);
  std::printf("attention %s BH=%lld S=%lld hd=%lld causal=%lld (median of "
              "20)\n",
              dt == DType::BF16 ? "bf16" : "f32", (long long)bh,
              (long long)seq, (long long)hd, (long long)causal);
  for (rt::AttentionBackend impl : impls) {
    const char *label = impl == rt::AttentionBackend::Local ? "mega" : "cuDNN";
    std::unique_ptr<rt::Backend> be;
    try {
      rt::CudaOptions options;
      options.attention = impl;
      be = rt::createCudaBackend(0, options);
    } catch (const std::exception &e) {
      std::printf("  %-5s unavailable: %s\n", label, e.what());
      continue;
    }
    try {
      std::mt19937 g(7);
      const std::vector<int64_t> x = {bh, seq, hd}, rows = {bh, seq};
      const float scale = float(1.0 / std::sqrt(double(hd)));
      Tensor q = make(*be, dt, x, 0, g, -2, 2),
             k = make(*be, dt, x, 1, g, -2, 2), v = make(*be, dt, x, 2, g, -1, 1);
      Tensor o = make(*be, dt, x, 3, g, 0, 0),
             lse = make(*be, DType::F32, rows, 4, g, 0, 0);
      Instr fwd;
      fwd.op = Op::Attention;
      fwd.i = {bh, seq, hd, causal};
      fwd.f = {scale};
      const double fms = timeIt(*be, fwd, {&q, &k, &v}, {&o, &lse}, 20);
      // The backward from the forward's own o and lse.
      Tensor dout = make(*be, dt, x, 6, g, -1, 1);
      Tensor dq = make(*be, dt, x, 7, g, 0, 0), dk = make(*be, dt, x, 8, g, 0, 0),
             dv = make(*be, dt, x, 9, g, 0, 0);
      Instr bwd = fwd;
      bwd.op = Op::AttentionGrad;
      const double bms =
          timeIt(*be, bwd, {&q, &k, &v, &o, &lse, &dout}, {&dq, &dk, &dv}, 20);
      const double flops = 4.0 * double(bh) * double(seq) * double(seq) *
                           double(hd) * (causal ? 0.5 : 1.0);
      std::printf("  %-5s Attention      %8.3f ms  %7.1f TFLOP/s\n", label, fms,
                  flops / (fms * 1e-3) / 1e12);
      std::printf("  %-5s AttentionGrad  %8.3f ms  %7.1f TFLOP/s\n", label, bms,
                  2.5 * flops / (bms * 1e-3) / 1e12);
      for (Tensor *t : {&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv})
        be->release(t->data);
    } catch (const std::exception &e) {
      std::printf("error: %s: %s\n", label, e.what());
      return 1;
    }
  }
  return 0;
}

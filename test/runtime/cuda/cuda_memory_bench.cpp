//===- cuda_memory_bench.cpp - Timing the memory-bound CUDA kernels ------===//
//
// Times Cast, Transpose, ReduceSum, LayerNorm, LayerNormGrad (also fused
// with the residual add it feeds and the bias gradient summed from its
// copy), CrossEntropy and CrossEntropyGrad at
// GPT-2 small's shapes (micro-batch 16, seq 1024,
// hidden 768, 12 heads, vocab 50304) in the two forms each picks from:
// "vector" (aligned operands: 16-byte accesses, the warp-per-row norms, the
// one-read loss) and "element" (the first input one element late in its
// buffer, which selects the element kernels). Prints for each the mean
// milliseconds of a launch (20 back-to-back launches between two
// synchronisations, median of 5 such batches) and the bandwidth of the bytes
// the kernel must move (inputs read once, outputs written once).
//
//   cuda_memory_bench [filter]     (only the cases whose name contains it)
//
// Not a test (not run by ctest): exits 77 without a device, 1 on an error.
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"

#include "mega/Runtime/Backend.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace mega;
using plan::DType;
using plan::Instr;
using plan::Op;
using plan::Value;

namespace {

/// A device tensor with 64 bytes of slack after it, so that a view one
/// element late still fits.
struct Tensor {
  Value v;
  char *base = nullptr;
};

/// Host values: a fast generator, values in [lo, hi] (ids in [0, hi) for
/// i32), repeated every 2^20 elements (only the time counts).
Tensor make(rt::Backend &be, DType dt, std::vector<int64_t> shape, int index,
            float lo, float hi) {
  Tensor t;
  t.v.space = plan::Space::Persistent;
  t.v.index = index;
  t.v.dtype = dt;
  t.v.shape = std::move(shape);
  const size_t bytes = size_t(t.v.bytes());
  t.base = static_cast<char *>(be.allocate(bytes + 64));
  const size_t block = std::min<size_t>(bytes, size_t(1) << 22);
  std::vector<char> h(block);
  uint64_t s = 0x9e3779b97f4a7c15ull + uint64_t(index);
  auto next = [&] {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return double(s >> 11) / double(uint64_t(1) << 53);
  };
  const size_t es = plan::dtypeSize(dt);
  for (size_t k = 0; k + es <= block; k += es) {
    const double u = next();
    if (dt == DType::I32) {
      const int32_t id = int32_t(u * double(hi));
      std::memcpy(&h[k], &id, 4);
    } else {
      const float f = float(lo + (hi - lo) * u);
      if (dt == DType::BF16) {
        uint32_t b;
        std::memcpy(&b, &f, 4);
        const uint16_t v = uint16_t(b >> 16);
        std::memcpy(&h[k], &v, 2);
      } else {
        std::memcpy(&h[k], &f, 4);
      }
    }
  }
  for (size_t at = 0; at < bytes; at += block)
    be.copyToDevice(t.base + at, h.data(), std::min(block, bytes - at));
  return t;
}

struct Case {
  std::string name;
  Instr in;
  std::vector<Tensor *> ins, outs;
  double bytes; ///< what the kernel must move
};

/// Mean ms of one launch: 20 launches between two synchronisations, the
/// median of 5 batches after one to warm up. late: the first input one
/// element late.
double timeIt(rt::Backend &be, const Case &c, bool late) {
  std::vector<const Value *> vi, vo;
  std::vector<rt::TensorRef> ri, ro;
  for (size_t k = 0; k < c.ins.size(); ++k) {
    Tensor *t = c.ins[k];
    vi.push_back(&t->v);
    const size_t skip = late && k == 0 ? plan::dtypeSize(t->v.dtype) : 0;
    ri.push_back({t->base + skip, &t->v});
  }
  for (Tensor *t : c.outs) {
    vo.push_back(&t->v);
    ro.push_back({t->base, &t->v});
  }
  be.check(c.in, vi, vo);
  constexpr int kLaunches = 20;
  std::vector<double> ms;
  for (int b = 0; b < 6; ++b) {
    be.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < kLaunches; ++r)
      be.launch(c.in, ri, ro);
    be.synchronize();
    const auto t1 = std::chrono::steady_clock::now();
    if (b > 0)
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() /
                   kLaunches);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Instr instr(Op op, std::vector<int64_t> i, std::vector<float> f = {}) {
  Instr in;
  in.op = op;
  in.i = std::move(i);
  in.f = std::move(f);
  return in;
}

} // namespace

int main(int argc, char **argv) {
  if (argc > 2) {
    std::printf("error: usage: cuda_memory_bench [filter], got %d arguments\n",
                argc - 1);
    return 1;
  }
  const std::string filter = argc == 2 ? argv[1] : "";
  std::string reason;
  if (rt::gpu::deviceCount(reason) <= 0) {
    std::printf("SKIP: no CUDA device (%s)\n", reason.c_str());
    return 77;
  }
  try {
    auto be = rt::createCudaBackend(0);
    const int64_t B = 16, S = 1024, H = 768, NH = 12, HD = 64, V = 50304;
    const int64_t R = B * S; // rows
    const DType F = DType::F32, BF = DType::BF16, I = DType::I32;
    std::vector<std::unique_ptr<Tensor>> pool;
    int next = 0;
    auto t = [&](DType dt, std::vector<int64_t> shape, float lo = -1.0f,
                 float hi = 1.0f) {
      pool.push_back(
          std::make_unique<Tensor>(make(*be, dt, std::move(shape), next++, lo, hi)));
      return pool.back().get();
    };
    auto wanted = [&](const std::string &name) {
      return filter.empty() || name.find(filter) != std::string::npos;
    };
    std::vector<Case> cases;
    // Cast: GPT-2's activations (hidden, q|k|v, MLP widths) and back.
    for (int64_t w : {H, 3 * H, 4 * H}) {
      const int64_t n = R * w;
      const std::string name = "Cast f32->bf16 [" + std::to_string(R) + "," +
                               std::to_string(w) + "]";
      if (wanted(name))
        cases.push_back({name, instr(Op::Cast, {n}), {t(F, {n})},
                         {t(BF, {n})}, 6.0 * double(n)});
    }
    if (wanted("Cast bf16->f32"))
      cases.push_back({"Cast bf16->f32 [16384,768]", instr(Op::Cast, {R * H}),
                       {t(BF, {R * H})}, {t(F, {R * H})}, 6.0 * double(R * H)});
    // Transposes: the q|k|v split, the head merge (f32 and bf16 out, and
    // bf16 -> bf16), the gradient's q|k|v join.
    struct Tr {
      const char *name;
      std::vector<int64_t> d, p;
      DType from, to;
    };
    const Tr trs[] = {
        {"Transpose qkv split f32->bf16", {B, S, 3, NH, HD}, {2, 0, 3, 1, 4}, F,
         BF},
        {"Transpose head merge f32->bf16", {B, NH, S, HD}, {0, 2, 1, 3}, F, BF},
        {"Transpose head merge f32", {B, NH, S, HD}, {0, 2, 1, 3}, F, F},
        {"Transpose head merge bf16", {B, NH, S, HD}, {0, 2, 1, 3}, BF, BF},
        {"Transpose qkv join f32", {3, B, NH, S, HD}, {1, 3, 0, 2, 4}, F, F},
    };
    for (const Tr &tr : trs) {
      if (!wanted(tr.name))
        continue;
      std::vector<int64_t> i = {int64_t(tr.d.size())};
      i.insert(i.end(), tr.d.begin(), tr.d.end());
      i.insert(i.end(), tr.p.begin(), tr.p.end());
      std::vector<int64_t> out;
      for (int64_t p : tr.p)
        out.push_back(tr.d[size_t(p)]);
      int64_t n = 1;
      for (int64_t d : tr.d)
        n *= d;
      cases.push_back({tr.name, instr(Op::Transpose, i), {t(tr.from, tr.d)},
                       {t(tr.to, out)},
                       double(n) * double(plan::dtypeSize(tr.from) +
                                          plan::dtypeSize(tr.to))});
    }
    // ReduceSum: the bias gradients.
    for (int64_t w : {H, 3 * H, 4 * H}) {
      const std::string name =
          "ReduceSum [" + std::to_string(R) + "," + std::to_string(w) + "]";
      if (wanted(name))
        cases.push_back({name, instr(Op::ReduceSum, {R, w, 0}), {t(F, {R, w})},
                         {t(F, {w})}, 4.0 * double(R * w)});
    }
    // LayerNorm (f32 and bf16 y) and its gradient.
    for (DType y : {F, BF}) {
      const std::string name =
          std::string("LayerNorm [16384,768] y ") + (y == F ? "f32" : "bf16");
      if (wanted(name))
        cases.push_back({name, instr(Op::LayerNorm, {R, H}, {1e-5f}),
                         {t(F, {R, H}), t(F, {H}), t(F, {H})},
                         {t(y, {R, H}), t(F, {R}), t(F, {R})},
                         double(R * H) * (4.0 + double(plan::dtypeSize(y)))});
    }
    // What a bf16 plan runs by default: x the bf16 residual stream; and
    // with megac --ones-column-bias-grad, rows of y padded to 776 columns.
    for (int64_t ldy : {H, H + 8}) {
      const std::string name = "LayerNorm [16384,768] bf16 x, y bf16" +
                               (ldy != H ? " ldy " + std::to_string(ldy) : "");
      if (!wanted(name))
        continue;
      std::vector<int64_t> i = {R, H};
      if (ldy != H)
        i.push_back(ldy);
      cases.push_back({name, instr(Op::LayerNorm, i, {1e-5f}),
                       {t(BF, {R, H}), t(F, {H}), t(F, {H})},
                       {t(BF, {R, ldy}), t(F, {R}), t(F, {R})},
                       2.0 * double(R * H) + 2.0 * double(R * ldy)});
    }
    if (wanted("LayerNormGrad"))
      cases.push_back({"LayerNormGrad [16384,768]",
                       instr(Op::LayerNormGrad, {R, H, 0}),
                       {t(F, {R, H}), t(F, {R, H}), t(F, {H}),
                        t(F, {R}, 0.0f, 0.0f), t(F, {R}, 1.0f, 1.0f)},
                       {t(F, {R, H}), t(F, {H}), t(F, {H})},
                       12.0 * double(R * H)});
    // What each of GPT-2's LayerNormGrads runs in the bf16 plan without
    // mega-fuse-norm-grad (the norm with a bf16 dy, then the residual add
    // with its bf16 copy; the two 768-float gradient adds are left out),
    // and the one fused kernel that replaces them: dx added into the
    // residual gradient, its bf16 copy, dw/db into the gradients.
    if (wanted("LayerNormGrad")) {
      Tensor *dyB = t(BF, {R, H}), *x = t(F, {R, H}), *w = t(F, {H});
      Tensor *mean = t(F, {R}, 0.0f, 0.0f), *rstd = t(F, {R}, 1.0f, 1.0f);
      Tensor *dx = t(F, {R, H}), *resid = t(F, {R, H}), *sum = t(F, {R, H});
      Tensor *copy = t(BF, {R, H}), *dw = t(F, {H}), *db = t(F, {H});
      cases.push_back({"LayerNormGrad [16384,768] bf16 dy",
                       instr(Op::LayerNormGrad, {R, H, 0}),
                       {dyB, x, w, mean, rstd}, {dx, dw, db},
                       10.0 * double(R * H)});
      // Elementwise: out0 = in0 + in1 (f32), out1 = the same rounded.
      const int64_t n = R * H;
      cases.push_back({"Elementwise residual add + bf16 copy",
                       instr(Op::Elementwise,
                             {n, 2, 2, n, n, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1,
                              1, 0, 0, 0, 1, 0, 1, 0}),
                       {resid, dx}, {sum, copy}, 14.0 * double(n)});
      cases.push_back({"LayerNormGrad fused (acc, acc_wb, bf16 copy)",
                       instr(Op::LayerNormGrad, {R, H, 1, 1}),
                       {dyB, x, w, mean, rstd}, {resid, dw, db, copy},
                       16.0 * double(R * H)});
      // The Linear bias gradient summed from that copy (a ReduceSum
      // accumulating into it), and the fused kernel that also sums it (the
      // copy read back from L2 by the block that wrote it: the norm's bytes
      // from memory, no more).
      Tensor *bias = t(F, {H});
      cases.push_back({"ReduceSum [16384,768] bf16 copy (acc)",
                       instr(Op::ReduceSum, {R, H, 1}),
                       {copy},
                       {bias},
                       2.0 * double(R * H)});
      cases.push_back({"LayerNormGrad fused + dsum (acc, acc_wb, copy)",
                       instr(Op::LayerNormGrad, {R, H, 1, 1, 1}),
                       {dyB, x, w, mean, rstd},
                       {resid, dw, db, copy, bias},
                       16.0 * double(R * H)});
      // The default bf16 plan's form (the residual gradient in bf16, x the
      // bf16 stream): dx read and written in bf16, its column sums.
      Tensor *xB = t(BF, {R, H}), *dxB = t(BF, {R, H});
      cases.push_back({"LayerNormGrad bf16 dx + dsum (acc, acc_wb)",
                       instr(Op::LayerNormGrad, {R, H, 1, 1, 1}),
                       {dyB, xB, w, mean, rstd},
                       {dxB, dw, db, bias},
                       8.0 * double(R * H)});
    }
    // The loss over GPT-2's padded vocabulary.
    if (wanted("CrossEntropy")) {
      Tensor *logits = t(F, {R, V}, -6.0f, 6.0f);
      Tensor *targets = t(I, {R}, 0.0f, float(V));
      cases.push_back({"CrossEntropy [16384,50304]",
                       instr(Op::CrossEntropy, {R, V}), {logits, targets},
                       {t(F, {}), t(F, {R})}, 4.0 * double(R * V)});
      Tensor *lse = t(F, {R}, 11.0f, 11.0f), *dloss = t(F, {}, 1.0f, 1.0f);
      cases.push_back({"CrossEntropyGrad [16384,50304] bf16 dlogits",
                       instr(Op::CrossEntropyGrad, {R, V}),
                       {logits, targets, lse, dloss}, {t(BF, {R, V})},
                       6.0 * double(R * V)});
      cases.push_back({"CrossEntropyGrad [16384,50304] f32 dlogits",
                       instr(Op::CrossEntropyGrad, {R, V}),
                       {logits, targets, lse, dloss}, {t(F, {R, V})},
                       8.0 * double(R * V)});
      // bf16 logits (mixed precision): what a bf16 plan runs.
      Tensor *logitsB = t(BF, {R, V}, -6.0f, 6.0f);
      cases.push_back({"CrossEntropy [16384,50304] bf16 logits",
                       instr(Op::CrossEntropy, {R, V}), {logitsB, targets},
                       {t(F, {}), t(F, {R})}, 2.0 * double(R * V)});
      cases.push_back({"CrossEntropyGrad [16384,50304] bf16 -> bf16",
                       instr(Op::CrossEntropyGrad, {R, V}),
                       {logitsB, targets, lse, dloss}, {t(BF, {R, V})},
                       4.0 * double(R * V)});
      // Both in one kernel (mega-fuse-loss): the logits read once.
      cases.push_back({"CrossEntropyWithGrad [16384,50304] bf16 -> bf16",
                       instr(Op::CrossEntropyWithGrad, {R, V}),
                       {logitsB, targets, dloss},
                       {t(F, {}), t(F, {R}), t(BF, {R, V})},
                       4.0 * double(R * V)});
    }
    std::printf("%-46s %10s %8s %10s %8s\n", "memory-bound kernels (GPT-2 small)",
                "vector ms", "GB/s", "element ms", "GB/s");
    double sumVec = 0, sumEl = 0;
    for (const Case &c : cases) {
      const double v = timeIt(*be, c, false), e = timeIt(*be, c, true);
      sumVec += v;
      sumEl += e;
      std::printf("%-46s %10.3f %8.0f %10.3f %8.0f\n", c.name.c_str(), v,
                  c.bytes / (v * 1e-3) / 1e9, e, c.bytes / (e * 1e-3) / 1e9);
    }
    std::printf("%-46s %10.3f %8s %10.3f\n", "sum (one launch each)", sumVec, "",
                sumEl);
    for (auto &p : pool)
      be->release(p->base);
  } catch (const std::exception &e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}

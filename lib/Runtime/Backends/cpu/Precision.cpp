//===- Precision.cpp - Cast between f32 and bf16 --------------------------===//
//
// The CPU twin of the GPU's mixed precision: values stored in bf16 are
// rounded exactly as the GPU rounds them (floatToBf16 in Common.h matches
// __float2bfloat16_rn), and every kernel that reads bf16 widens it to float
// and computes in fp32, so a bf16 plan gives the same numbers on both
// backends up to the order of fp32 sums.
//
//===----------------------------------------------------------------------===//
#include "Common.h"

namespace mega::rt::cpu {

const float *floatsOf(const TensorRef &t, int64_t n,
                      std::vector<float> &scratch) {
  if (t.value->dtype == DType::F32)
    return t.f32();
  scratch.resize(size_t(n));
  const uint16_t *b = t.bf16();
  for (int64_t k = 0; k < n; ++k)
    scratch[size_t(k)] = bf16ToFloat(b[k]);
  return scratch.data();
}

void checkCast(const Checker &c) {
  c.operands(1, 1);
  c.attrs(1, 0);
  int64_t n = c.attr(0, 0, int64_t(1) << 48, "n");
  for (const Value *v : {c.ins[0], c.outs[0]})
    if (v->dtype != DType::F32 && v->dtype != DType::BF16)
      c.fail(std::string("operands must be f32 or bf16, not ") +
             plan::dtypeName(v->dtype));
  c.tensor(c.ins[0], c.ins[0]->dtype, n, "in");
  c.tensor(c.outs[0], c.outs[0]->dtype, n, "out");
  c.disjoint(c.outs[0], c.ins[0], "out", "in");
}

void runCast(const Ctx &ctx, const Instr &in, const Refs &ins,
             const Refs &outs) {
  const int64_t n = in.i[0];
  const DType from = ins[0].value->dtype, to = outs[0].value->dtype;
  if (from == to) {
    std::memcpy(outs[0].data, ins[0].data, size_t(n) * plan::dtypeSize(to));
    return;
  }
  if (from == DType::F32) {
    const float *x = ins[0].f32();
    uint16_t *y = outs[0].bf16();
    parallelFor(ctx, n, 1 << 16, [=](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k)
        y[k] = floatToBf16(x[k]);
    });
    return;
  }
  const uint16_t *x = ins[0].bf16();
  float *y = outs[0].f32();
  parallelFor(ctx, n, 1 << 16, [=](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      y[k] = bf16ToFloat(x[k]);
  });
}

} // namespace mega::rt::cpu

//===- Elementwise.cpp - The fused elementwise micro-op interpreter -------===//
//
// The code runs over chunks of kChunk elements: a register is an array of
// kChunk floats (or a pointer straight into an input when the chunk is
// contiguous there), so each micro-op is one tight loop that the compiler
// vectorises and the dispatch cost is paid once per kChunk elements.
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "MathApprox.h"

#include <cmath>
#include <cstring>

namespace mega::rt::cpu {

using plan::EwOp;
using plan::kEwRegisters;

namespace {

constexpr int64_t kChunk = 512;
constexpr int kHeader = 3;
constexpr int kMaxOp = int(EwOp::Square);

enum Arity { kLoad, kStore, kConst, kUnary, kBinary };

Arity arityOf(EwOp op) {
  switch (op) {
  case EwOp::Load:
    return kLoad;
  case EwOp::Store:
    return kStore;
  case EwOp::Const:
    return kConst;
  case EwOp::Add:
  case EwOp::Sub:
  case EwOp::Mul:
  case EwOp::Div:
  case EwOp::Max:
  case EwOp::Min:
  case EwOp::GeluGrad:
    return kBinary;
  default:
    return kUnary;
  }
}

struct MicroOp {
  EwOp op;
  int dst, a, b;
};

} // namespace

void checkElementwise(const Checker &c) {
  const auto &i = c.instr.i;
  if (i.size() < kHeader)
    c.fail("expects at least 3 integer attributes {n, numInputs, numOutputs}");
  int64_t n = c.attr(0, 0, int64_t(1) << 48, "n");
  int64_t nin = c.attr(1, 0, 1 << 20, "numInputs");
  int64_t nout = c.attr(2, 1, 1 << 20, "numOutputs");
  c.operands(size_t(nin), size_t(nout));
  int64_t codeLen = int64_t(i.size()) - kHeader - nin;
  if (codeLen <= 0 || codeLen % 4 != 0)
    c.fail("the code after the periods must be groups of 4, got " +
           std::to_string(std::max<int64_t>(codeLen, 0)) + " integers");
  for (int64_t k = 0; k < nin; ++k) {
    int64_t p = c.attr(size_t(kHeader + k), 1, std::max<int64_t>(n, 1),
                       "period");
    if (n > 0 && n % p != 0)
      c.fail("period " + std::to_string(p) + " of input " + std::to_string(k) +
             " does not divide n = " + std::to_string(n));
    // An input may be bf16 (a bf16 product's result: Load widens it).
    const DType it = c.ins[k]->dtype == DType::BF16 ? DType::BF16 : DType::F32;
    c.tensor(c.ins[k], it, p, "input");
  }
  for (int64_t k = 0; k < nout; ++k) {
    // An output may be bf16 (a cast folded into its producer: Store rounds).
    const DType ot = c.outs[k]->dtype == DType::BF16 ? DType::BF16 : DType::F32;
    c.tensor(c.outs[k], ot, n, "output");
    // An output may be an input (same bytes, hence period n), not overlap
    // one partially; a bf16 output or input overlaps none.
    for (int64_t j = 0; j < nin; ++j)
      if (ot == DType::BF16)
        c.disjoint(c.outs[k], c.ins[j], "a bf16 output", "an input");
      else if (c.ins[j]->dtype == DType::BF16)
        c.disjoint(c.outs[k], c.ins[j], "an output", "a bf16 input");
      else
        c.sameOrDisjoint(c.outs[k], c.ins[j], "an output", "an input");
    for (int64_t j = 0; j < k; ++j)
      c.disjoint(c.outs[k], c.outs[j], "an output", "another output");
  }
  bool written[kEwRegisters] = {};
  std::vector<bool> stored(size_t(nout), false);
  for (int64_t at = kHeader + nin; at < int64_t(i.size()); at += 4) {
    std::string where = "micro-op " + std::to_string((at - kHeader - nin) / 4);
    int64_t op = i[at], dst = i[at + 1], a = i[at + 2], b = i[at + 3];
    if (op < 0 || op > kMaxOp)
      c.fail(where + " has unknown code " + std::to_string(op));
    auto reg = [&](int64_t r, const char *what) {
      if (r < 0 || r >= kEwRegisters)
        c.fail(where + ": " + what + " register " + std::to_string(r) +
               " is not in r0..r15");
    };
    auto read = [&](int64_t r, const char *what) {
      reg(r, what);
      if (!written[r])
        c.fail(where + " reads r" + std::to_string(r) + " before it is set");
    };
    switch (arityOf(EwOp(op))) {
    case kLoad:
      reg(dst, "destination");
      if (a < 0 || a >= nin)
        c.fail(where + " loads input " + std::to_string(a) + " of " +
               std::to_string(nin));
      written[dst] = true;
      break;
    case kStore:
      read(dst, "source");
      if (a < 0 || a >= nout)
        c.fail(where + " stores output " + std::to_string(a) + " of " +
               std::to_string(nout));
      stored[size_t(a)] = true;
      break;
    case kConst:
      reg(dst, "destination");
      if (a < 0 || a >= int64_t(c.instr.f.size()))
        c.fail(where + " reads constant " + std::to_string(a) + " of " +
               std::to_string(c.instr.f.size()));
      written[dst] = true;
      break;
    case kUnary:
      read(a, "operand");
      reg(dst, "destination");
      written[dst] = true;
      break;
    case kBinary:
      read(a, "operand");
      read(b, "operand");
      reg(dst, "destination");
      written[dst] = true;
      break;
    }
  }
  for (int64_t k = 0; k < nout; ++k)
    if (!stored[size_t(k)])
      c.fail("output " + std::to_string(k) + " is never stored");
}

namespace {

// dst may equal a or b (in place), so no __restrict here.
template <typename F>
inline void unary(float *d, const float *a, int64_t len, F f) {
  for (int64_t i = 0; i < len; ++i)
    d[i] = f(a[i]);
}
template <typename F>
inline void binary(float *d, const float *a, const float *b, int64_t len,
                   F f) {
  for (int64_t i = 0; i < len; ++i)
    d[i] = f(a[i], b[i]);
}

/// NaN-propagating max/min (like torch.maximum/minimum).
inline float maxNan(float x, float y) {
  float r = x > y ? x : y;
  r = y != y ? y : r;
  return x != x ? x : r;
}
inline float minNan(float x, float y) {
  float r = x < y ? x : y;
  r = y != y ? y : r;
  return x != x ? x : r;
}

} // namespace

void runElementwise(const Ctx &ctx, const Instr &in, const Refs &ins,
                    const Refs &outs) {
  const auto &iv = in.i;
  const int64_t n = iv[0];
  const int nin = int(iv[1]), nout = int(iv[2]);
  std::vector<MicroOp> code;
  for (size_t at = kHeader + nin; at < iv.size(); at += 4)
    code.push_back(MicroOp{EwOp(iv[at]), int(iv[at + 1]), int(iv[at + 2]),
                           int(iv[at + 3])});
  std::vector<const float *> src(nin);
  std::vector<const uint16_t *> srcBf16(nin, nullptr); // bf16: widened
  std::vector<int64_t> period(nin);
  std::vector<bool> aliased(nin, false); // an output shares its memory
  for (int k = 0; k < nin; ++k) {
    src[k] = ins[k].f32();
    if (ins[k].value->dtype == DType::BF16)
      srcBf16[k] = ins[k].bf16();
    period[k] = iv[kHeader + k];
    for (int j = 0; j < nout; ++j)
      if (memOverlap(ins[k].data, size_t(period[k]) * 4, outs[j].data,
                     size_t(n) * 4))
        aliased[k] = true;
  }
  std::vector<float *> dst(nout);
  std::vector<uint16_t *> dstBf16(nout, nullptr); // bf16 outputs: rounded
  for (int k = 0; k < nout; ++k) {
    dst[k] = outs[k].f32();
    if (outs[k].value->dtype == DType::BF16)
      dstBf16[k] = outs[k].bf16();
  }
  const float *consts = in.f.data();

  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / kChunk);
  parallelFor(ctx, chunks, grain, [&](int64_t c0, int64_t c1) {
    alignas(64) float buf[kEwRegisters][kChunk];
    const float *reg[kEwRegisters] = {};
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t e0 = ch * kChunk, len = std::min(kChunk, n - e0);
      for (const MicroOp &m : code) {
        float *d = buf[m.dst];
        switch (m.op) {
        case EwOp::Load: {
          const float *x = src[m.a];
          const int64_t p = period[m.a], j0 = e0 % p;
          if (const uint16_t *h = srcBf16[m.a]) {
            for (int64_t i = 0, j = j0; i < len; ++i, j = j + 1 == p ? 0 : j + 1)
              d[i] = bf16ToFloat(h[j]);
            break;
          }
          if (j0 + len <= p && !aliased[m.a]) {
            reg[m.dst] = x + j0; // contiguous: read in place
            continue;
          }
          if (p == 1) {
            for (int64_t i = 0; i < len; ++i)
              d[i] = x[0];
          } else {
            for (int64_t i = 0, j = j0; i < len;) {
              int64_t cnt = std::min(len - i, p - j);
              std::memcpy(d + i, x + j, size_t(cnt) * 4);
              i += cnt;
              j = 0;
            }
          }
          break;
        }
        case EwOp::Store:
          if (uint16_t *h = dstBf16[m.a]) {
            for (int64_t i = 0; i < len; ++i)
              h[e0 + i] = floatToBf16(reg[m.dst][i]);
          } else {
            std::memcpy(dst[m.a] + e0, reg[m.dst], size_t(len) * 4);
          }
          continue;
        case EwOp::Const: {
          float v = consts[m.a];
          for (int64_t i = 0; i < len; ++i)
            d[i] = v;
          break;
        }
        case EwOp::Add:
          binary(d, reg[m.a], reg[m.b], len, [](float x, float y) { return x + y; });
          break;
        case EwOp::Sub:
          binary(d, reg[m.a], reg[m.b], len, [](float x, float y) { return x - y; });
          break;
        case EwOp::Mul:
          binary(d, reg[m.a], reg[m.b], len, [](float x, float y) { return x * y; });
          break;
        case EwOp::Div:
          binary(d, reg[m.a], reg[m.b], len, [](float x, float y) { return x / y; });
          break;
        case EwOp::Max:
          binary(d, reg[m.a], reg[m.b], len, maxNan);
          break;
        case EwOp::Min:
          binary(d, reg[m.a], reg[m.b], len, minNan);
          break;
        case EwOp::GeluGrad:
          binary(d, reg[m.a], reg[m.b], len, vgeluGrad);
          break;
        case EwOp::Neg:
          unary(d, reg[m.a], len, [](float x) { return -x; });
          break;
        case EwOp::Exp:
          unary(d, reg[m.a], len, vexp);
          break;
        case EwOp::Log:
          unary(d, reg[m.a], len, vlog);
          break;
        case EwOp::Tanh:
          unary(d, reg[m.a], len, vtanh);
          break;
        case EwOp::Sqrt:
          unary(d, reg[m.a], len, [](float x) { return std::sqrt(x); });
          break;
        case EwOp::Rsqrt:
          unary(d, reg[m.a], len, [](float x) { return 1.0f / std::sqrt(x); });
          break;
        case EwOp::Gelu:
          unary(d, reg[m.a], len, vgelu);
          break;
        case EwOp::Square:
          unary(d, reg[m.a], len, [](float x) { return x * x; });
          break;
        }
        reg[m.dst] = d;
      }
    }
  });
}

} // namespace mega::rt::cpu

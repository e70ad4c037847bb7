//===- Embedding.cpp - Embedding gather and its scatter-add gradient ------===//
//
// Ids are data: they are range-checked at launch, before anything is
// written, and a bad one throws Error.
//
// The gradient is race-free and deterministic without atomics: each thread
// owns a contiguous range of table rows (vocabulary entries) and adds the
// dout rows whose id falls in its range, in row order. Every table element
// therefore sums its contributions in the same order for any thread count.
//
//===----------------------------------------------------------------------===//
#include "Common.h"

#include <cstring>

namespace mega::rt::cpu {

namespace {

constexpr int64_t kBig = int64_t(1) << 48;

void checkIds(Op op, const int32_t *ids, int64_t rows, int64_t V) {
  for (int64_t r = 0; r < rows; ++r)
    if (ids[r] < 0 || ids[r] >= V)
      fail(op, "id " + std::to_string(ids[r]) + " of row " +
                   std::to_string(r) + " is outside the table [0, " +
                   std::to_string(V) + ")");
}

/// Shared by Embedding and EmbeddingGrad: {rows, V, H, accumulate}, with
/// `dense` the [rows, H] operand and `table` the [V, H] one.
void checkShapes(const Checker &c, const Value *dense, const char *denseName,
                 const Value *table, const char *tableName) {
  c.attrs(4, 0);
  int64_t rows = c.attr(0, 0, kBig, "rows");
  int64_t V = c.attr(1, 0, INT32_MAX, "V");
  int64_t H = c.attr(2, 0, kBig, "H");
  c.flag(3, "accumulate");
  c.tensor(dense, DType::F32, i128(rows) * H, denseName);
  c.tensor(table, DType::F32, i128(V) * H, tableName);
  c.tensor(c.ins[1], DType::I32, rows, "ids");
}

} // namespace

void checkEmbedding(const Checker &c) {
  c.operands(2, 1);
  checkShapes(c, c.outs[0], "out", c.ins[0], "table");
  c.disjoint(c.outs[0], c.ins[0], "out", "table");
  c.disjoint(c.outs[0], c.ins[1], "out", "ids");
}

void runEmbedding(const Ctx &ctx, const Instr &in, const Refs &ins,
                  const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1], H = in.i[2];
  const bool acc = in.i[3] != 0;
  const float *table = ins[0].f32();
  const int32_t *ids = ins[1].i32();
  float *out = outs[0].f32();
  checkIds(Op::Embedding, ids, rows, V);
  parallelFor(ctx, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(H, 1)),
              [&](int64_t r0, int64_t r1) {
                for (int64_t r = r0; r < r1; ++r) {
                  const float *src = table + int64_t(ids[r]) * H;
                  float *dst = out + r * H;
                  if (acc)
                    for (int64_t j = 0; j < H; ++j)
                      dst[j] += src[j];
                  else
                    std::memcpy(dst, src, size_t(H) * 4);
                }
              });
}

void checkEmbeddingGrad(const Checker &c) {
  c.operands(2, 1);
  checkShapes(c, c.ins[0], "dout", c.outs[0], "dtable");
  c.disjoint(c.outs[0], c.ins[0], "dtable", "dout");
  c.disjoint(c.outs[0], c.ins[1], "dtable", "ids");
}

void runEmbeddingGrad(const Ctx &ctx, const Instr &in, const Refs &ins,
                      const Refs &outs) {
  const int64_t rows = in.i[0], V = in.i[1], H = in.i[2];
  const bool acc = in.i[3] != 0;
  const float *dout = ins[0].f32();
  const int32_t *ids = ins[1].i32();
  float *table = outs[0].f32();
  checkIds(Op::EmbeddingGrad, ids, rows, V);
  // One contiguous vocabulary range per thread when the work is worth it.
  const int64_t work = (acc ? 0 : V * H) + rows * H;
  const int64_t T = std::max(1, ctx.threads);
  const int64_t grain = work >= (int64_t(1) << 16)
                            ? std::max<int64_t>(1, (V + T - 1) / T)
                            : std::max<int64_t>(1, V);
  parallelFor(ctx, V, grain, [&](int64_t v0, int64_t v1) {
    if (!acc)
      std::memset(table + v0 * H, 0, size_t((v1 - v0) * H) * 4);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t id = ids[r];
      if (id < v0 || id >= v1)
        continue;
      const float *src = dout + r * H;
      float *dst = table + id * H;
      for (int64_t j = 0; j < H; ++j)
        dst[j] += src[j];
    }
  });
}

} // namespace mega::rt::cpu

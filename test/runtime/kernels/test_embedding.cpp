//===- test_embedding.cpp - Embedding gather and scatter-add --------------===//
#include "KernelTest.h"

using namespace kt;

namespace {

void testGather(Harness &h, Rng &rng, int64_t rows, int64_t V, int64_t H, bool acc) {
  std::vector<float> table = rng.vec(V * H), out0 = rng.vec(rows * H);
  std::vector<int32_t> ids(rows);
  for (auto &v : ids)
    v = rng.index(V);
  ids[0] = int32_t(V - 1);
  Tensor &tt = h.f32({V, H}, table), &ti = h.i32({rows}, ids), &to = h.f32({rows, H}, out0);
  std::string label = "embedding " + std::to_string(rows) + "x" + std::to_string(H) +
                      (acc ? " acc" : "");
  if (!h.run(make(Op::Embedding, {rows, V, H, acc}), {&tt, &ti}, {&to}))
    return;
  std::vector<double> r(rows * H);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < H; ++j)
      r[i * H + j] = acc ? double(out0[i * H + j] + table[ids[i] * H + j])
                         : double(table[ids[i] * H + j]);
  closeTo(label.c_str(), to.f(), r, 0, 0);
}

void testScatter(Harness &h, Rng &rng, int64_t rows, int64_t V, int64_t H, bool acc) {
  std::vector<float> dout = rng.vec(rows * H), t0 = rng.vec(V * H);
  // Half the rows from a few ids (many repeats), half anywhere in the table
  // (so the ids on the borders of the threads' vocabulary ranges occur).
  std::vector<int32_t> ids(rows);
  for (int64_t r = 0; r < rows; ++r)
    ids[r] = r % 2 ? rng.index(std::min<int64_t>(V, 5)) : rng.index(V);
  ids[rows - 1] = int32_t(V - 1);
  Tensor &td = h.f32({rows, H}, dout), &ti = h.i32({rows}, ids), &tt = h.f32({V, H}, t0);
  std::string label = "embedding grad " + std::to_string(rows) + "x" + std::to_string(H) +
                      " V=" + std::to_string(V) + (acc ? " acc" : "");
  if (!h.run(make(Op::EmbeddingGrad, {rows, V, H, acc}), {&td, &ti}, {&tt}))
    return;
  std::vector<double> r(V * H, 0.0), mag(V * H, 0.0), tol(V * H);
  if (acc)
    for (int64_t k = 0; k < V * H; ++k) {
      r[k] = t0[k];
      mag[k] = std::fabs(t0[k]);
    }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < H; ++j) {
      r[ids[i] * H + j] += dout[i * H + j];
      mag[ids[i] * H + j] += std::fabs(dout[i * H + j]);
    }
  for (int64_t k = 0; k < V * H; ++k)
    tol[k] = 1e-6 * mag[k];
  closeToTol(label.c_str(), tt.f(), r, tol);
}

void testBadIds(Harness &h, Rng &rng) {
  const int64_t rows = 4, V = 9, H = 5;
  for (int32_t bad : {-1, 9, 1 << 30}) {
    std::vector<int32_t> ids = {0, bad, 3, 8};
    std::vector<float> table = rng.vec(V * H);
    Tensor &tt = h.f32({V, H}, table), &ti = h.i32({rows}, ids), &to = h.f32({rows, H});
    std::string label = "bad id " + std::to_string(bad);
    h.launchThrows(label.c_str(), make(Op::Embedding, {rows, V, H, 0}), {&tt, &ti}, {&to}, "id");
    Tensor &td = h.f32({rows, H}, rng.vec(rows * H));
    h.launchThrows((label + " grad").c_str(), make(Op::EmbeddingGrad, {rows, V, H, 0}),
                   {&td, &ti}, {&tt}, "id");
    CHECK(std::memcmp(tt.f(), table.data(), table.size() * 4) == 0,
          "%s: the table was modified before the error", label.c_str());
  }
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(13);
  testGather(h, rng, 33, 251, 17, false);
  testGather(h, rng, 96, 7, 33, true);
  testGather(h, rng, 1024, 8192, 256, false);
  testScatter(h, rng, 33, 251, 17, false);
  testScatter(h, rng, 96, 7, 33, true);
  testScatter(h, rng, 1024, 8192, 256, false);
  testScatter(h, rng, 1024, 128, 256, true);
  testScatter(h, rng, 3, 1, 1, false);
  testScatter(h, rng, 4096, 16, 32, false); // every id, split over threads
  testScatter(h, rng, 4096, 17, 33, true);
  testBadIds(h, rng);
  return finish("test_embedding");
}

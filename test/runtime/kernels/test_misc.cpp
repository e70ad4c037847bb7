//===- test_misc.cpp - Fill, Copy, ReduceSum, Transpose -------------------===//
#include "KernelTest.h"

#include <algorithm>
#include <numeric>

using namespace kt;

namespace {

void testFillCopy(Harness &h, Rng &rng) {
  for (int64_t n : {int64_t(1), int64_t(17), int64_t(100003)}) {
    Tensor &t = h.f32({n}, rng.vec(n));
    if (h.run(make(Op::Fill, {}, {-2.5f}), {}, {&t}))
      closeTo("fill", t.f(), std::vector<double>(n, -2.5), 0, 0);
    std::vector<float> src = rng.vec(n);
    Tensor &a = h.f32({n}, src), &b = h.f32({n});
    if (h.run(make(Op::Copy, {}), {&a}, {&b}))
      sameBits("copy", b.f(), src.data(), n);
  }
  // i32 copy and a copy onto itself.
  std::vector<int32_t> ids = {5, -7, 1 << 30, 0, 3};
  Tensor &ia = h.i32({5}, ids), &ib = h.i32({5}, {0, 0, 0, 0, 0});
  if (h.run(make(Op::Copy, {}), {&ia}, {&ib}))
    CHECK(std::equal(ids.begin(), ids.end(), ib.i()), "i32 copy");
  std::vector<float> x = rng.vec(33);
  Tensor &s = h.arena(64, {33});
  s.set(x);
  if (h.run(make(Op::Copy, {}), {&s}, {&s}))
    sameBits("copy onto itself", s.f(), x.data(), 33);
}

void testReduceSum(Harness &h, Rng &rng, int64_t outer, int64_t inner, bool acc) {
  std::vector<float> x = rng.vec(outer * inner), y0 = rng.vec(inner);
  Tensor &tx = h.f32({outer, inner}, x), &ty = h.f32({inner}, y0);
  std::string label = "reduce sum " + std::to_string(outer) + "x" + std::to_string(inner) +
                      (acc ? " acc" : "");
  if (!h.run(make(Op::ReduceSum, {outer, inner, acc}), {&tx}, {&ty}))
    return;
  std::vector<double> r(inner), tol(inner);
  for (int64_t j = 0; j < inner; ++j) {
    double s = acc ? y0[j] : 0.0, mag = acc ? std::fabs(y0[j]) : 0.0;
    for (int64_t i = 0; i < outer; ++i) {
      s += x[i * inner + j];
      mag += std::fabs(x[i * inner + j]);
    }
    r[j] = s;
    tol[j] = 1e-7 * mag; // double accumulation: one float rounding
  }
  closeToTol(label.c_str(), ty.f(), r, tol);
}

void testTranspose(Harness &h, Rng &rng, std::vector<int64_t> dims,
                   std::vector<int64_t> perm, bool i32 = false) {
  const int rank = int(dims.size());
  int64_t n = 1;
  for (int64_t d : dims)
    n *= d;
  std::vector<float> x = rng.vec(n);
  if (i32)
    for (int64_t k = 0; k < n; ++k)
      std::memcpy(&x[k], &k, 4); // distinct bit patterns
  std::vector<int64_t> od(rank);
  for (int j = 0; j < rank; ++j)
    od[j] = dims[perm[j]];
  DType dt = i32 ? DType::I32 : DType::F32;
  Tensor &tx = h.alloc(dt, dims), &ty = h.alloc(dt, od);
  std::memcpy(tx.data, x.data(), n * 4);
  std::vector<int64_t> attrs = {rank};
  attrs.insert(attrs.end(), dims.begin(), dims.end());
  attrs.insert(attrs.end(), perm.begin(), perm.end());
  std::string label = "transpose dims";
  for (int64_t d : dims)
    label += " " + std::to_string(d);
  label += " perm";
  for (int64_t p : perm)
    label += " " + std::to_string(p);
  if (!h.run(make(Op::Transpose, attrs), {&tx}, {&ty}))
    return;
  // Naive: walk the output index, gather from the input.
  std::vector<int64_t> is(rank);
  for (int64_t k = rank - 1, s = 1; k >= 0; --k) {
    is[k] = s;
    s *= dims[k];
  }
  std::vector<float> want(n);
  std::vector<int64_t> idx(rank, 0);
  for (int64_t o = 0; o < n; ++o) {
    int64_t off = 0;
    for (int j = 0; j < rank; ++j)
      off += idx[j] * is[perm[j]];
    want[o] = x[off];
    for (int j = rank - 1; j >= 0; --j) {
      if (++idx[j] < od[j])
        break;
      idx[j] = 0;
    }
  }
  sameBits(label.c_str(), static_cast<float *>(ty.data), want.data(), n);
}

} // namespace

int main() {
  Harness h(4);
  Rng rng(19);
  testFillCopy(h, rng);
  testReduceSum(h, rng, 7, 33, false);
  testReduceSum(h, rng, 1000, 33, true);
  testReduceSum(h, rng, 1024, 256, false);
  testReduceSum(h, rng, 3, 1001, false);
  testReduceSum(h, rng, 0, 5, true);
  testReduceSum(h, rng, 0, 5, false);
  testReduceSum(h, rng, 100000, 1, false);
  testTranspose(h, rng, {2, 7, 3, 5}, {0, 2, 1, 3});     // [B,S,H,D] -> [B,H,S,D]
  testTranspose(h, rng, {8, 128, 4, 64}, {0, 2, 1, 3});  // cpu-small heads
  testTranspose(h, rng, {2, 3, 7, 5}, {0, 2, 1, 3});     // and back
  testTranspose(h, rng, {3, 5, 7, 2}, {3, 2, 1, 0});     // full reversal
  testTranspose(h, rng, {33, 17}, {1, 0});
  testTranspose(h, rng, {257, 130}, {1, 0});
  testTranspose(h, rng, {4, 33, 65}, {0, 2, 1});         // batched 2-D (K^T)
  testTranspose(h, rng, {2, 3, 1, 4, 2, 3}, {5, 1, 3, 0, 4, 2});
  testTranspose(h, rng, {2, 1, 3, 1, 5, 1}, {1, 3, 5, 4, 2, 0});
  testTranspose(h, rng, {1, 1, 1}, {2, 0, 1});
  testTranspose(h, rng, {17}, {0}, true);
  testTranspose(h, rng, {6, 35, 3}, {2, 0, 1}, true);
  testTranspose(h, rng, {5, 0, 3}, {2, 1, 0});
  return finish("test_misc");
}

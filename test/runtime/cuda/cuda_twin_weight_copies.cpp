//===- cuda_twin_weight_copies.cpp - AdamWMulti writing bf16 weight copies ===//
//
// AdamWMulti with copy flags (mega-bf16-weight-copies): the parameters,
// moments, gradients and copies of the CUDA kernel against the CPU's, and
// on each backend every copy exactly the bits Cast gives of its parameter
// after the step (of the unchanged parameter when coef is NaN). The copies
// start poisoned (NaN), the other operands random and non-zero.
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

namespace twincheck {

namespace {

/// One AdamWMulti over `sizes` with copy flags `flags`; `pairs` receives,
/// for each copy, the positions in the compared results of its parameter
/// and of the copy.
Case adamWCopies(Rng &rng, const std::vector<int64_t> &sizes,
                 const std::vector<int64_t> &flags, int zero, float coef,
                 std::vector<std::pair<size_t, size_t>> &pairs) {
  const int64_t n = int64_t(sizes.size());
  std::vector<float> f = {0.9f, 0.95f, 1e-8f};
  for (int64_t k = 0; k < n; ++k)
    f.push_back(k % 2 ? 0.0f : 0.1f * float(k + 1));
  std::vector<int64_t> i = {n, zero};
  i.insert(i.end(), flags.begin(), flags.end());
  Case c =
      make("AdamWMulti copies " + dims({{"tensors", n}, {"zero_grads", zero}}) +
               (std::isnan(coef) ? " coef=NaN (skip)" : " coef=0.5"),
           Op::AdamWMulti, i, f);
  c.ins = {c.f32({}, {3e-3f}), c.f32({}, {7.0f}), c.f32({}, {coef})};
  std::vector<size_t> paramAt;
  for (int64_t sz : sizes) {
    paramAt.push_back(c.compare.size());
    c.ins.push_back(c.inout({sz}, rng.vec(sz, -2.0, 2.0)));
    c.ins.push_back(c.inout({sz}, rng.vec(sz)));
    c.ins.push_back(c.inout({sz}, rng.vec(sz, -0.1, 0.1)));
    c.ins.push_back(c.inout({sz}, rng.vec(sz, 0, 0.01)));
  }
  for (size_t k = 0; k < sizes.size(); ++k)
    if (flags[k]) {
      pairs.push_back({paramAt[k], c.compare.size()});
      c.outs.push_back(c.out({sizes[k]}, DType::BF16));
    }
  return c;
}

/// On each backend: every copy is Cast(parameter), bit for bit.
void castBits(const Case &c,
              const std::vector<std::pair<size_t, size_t>> &pairs) {
  if (skipped(c))
    return;
  const std::pair<const char *, Backend *> bes[] = {{"cpu", gCpu},
                                                    {"cuda", gCuda}};
  for (const auto &[name, be] : bes) {
    const std::string label =
        std::string("cast bits (") + name + "): " + c.label;
    try {
      const Result r = runOn(*be, c);
      std::string bad;
      for (const auto &[p, q] : pairs)
        for (size_t e = 0; e < r[p].size() && bad.empty(); ++e)
          if ((uint32_t(toBf16Bits(floatOf(r[p][e]))) << 16) != r[q][e])
            bad = "copy " + std::to_string(q) + " element " +
                  std::to_string(e) + ": param " +
                  fmt("%.9g", floatOf(r[p][e])) + " copy " +
                  fmt("%.9g", floatOf(r[q][e]));
      report(bad.empty(), label,
             bad.empty() ? "every copy is Cast(param)" : bad);
    } catch (const std::exception &e) {
      report(false, label, std::string("threw: ") + e.what());
    }
  }
}

} // namespace

void weightCopies(Rng &rng) {
  // Odd sizes, one of exactly a chunk (8192) and one just past it, copies
  // on some tensors only (the first and the last included).
  const std::vector<int64_t> sizes = {7, 251, 8192, 8193, 1, 262144, 4096};
  const std::vector<int64_t> flags = {1, 0, 1, 1, 0, 1, 1};
  for (int zero : {0, 1})
    for (float coef : {0.5f, kNaN}) {
      std::vector<std::pair<size_t, size_t>> pairs;
      Case c = adamWCopies(rng, sizes, flags, zero, coef, pairs);
      twin(c);
      castBits(c, pairs);
      if (zero && !std::isnan(coef))
        deterministic(c);
    }
  {
    // Every tensor with a copy.
    std::vector<std::pair<size_t, size_t>> pairs;
    Case c = adamWCopies(rng, {513, 3}, {1, 1}, 1, 0.5f, pairs);
    twin(c);
    castBits(c, pairs);
  }
  {
    // Refused alike: a copy that is f32, a copy on the parameter's bytes.
    std::vector<std::pair<size_t, size_t>> pairs;
    Case c = adamWCopies(rng, {16}, {1}, 1, 0.5f, pairs);
    c.label = "AdamWMulti f32 copy";
    c.ts[size_t(c.outs[0])].v.dtype = DType::F32;
    refusal(c);
    Case d = adamWCopies(rng, {16}, {1}, 1, 0.5f, pairs);
    d.label = "AdamWMulti copy on its parameter";
    d.outs[0] = d.view(d.ins[3], {16});
    d.ts[size_t(d.outs[0])].v.dtype = DType::BF16;
    refusal(d);
  }
}

} // namespace twincheck

//===- gemm_tuning_test.cpp - The GEMM autotune's choice, without a GPU ---===//
//
// chooseCandidate (GemmTuning.h) decides which of cuBLASLt's candidates a
// bf16 GEMM keeps. Here its clock is scripted: each candidate has a true
// time per launch, and the script adds what a GPU adds (one lucky or
// unlucky block, a clock that drifts, refusals). The cases check the five
// steps of GemmTuning.h: refusals dropped, the block sized from the first
// that runs, the finalists, the median of interleaved rounds, and the
// margin that keeps the heuristic's order against noise. Then the wide
// search's split-K forms (splitVariants): which bases, which counts, which
// reduction.
//
//===----------------------------------------------------------------------===//
#include "GemmTuning.h"
#include "TestExpect.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

using namespace mega::rt::gpu;

namespace {

using megatest::expect;

/// A scripted GPU: `ms[k]` per launch (negative: k refuses), and `noise`
/// (the call number, k, reps -> factor on that block's time).
struct Script {
  explicit Script(std::vector<double> times) : ms(std::move(times)) {}
  std::vector<double> ms;
  std::function<double(int, size_t, int)> noise = [](int, size_t, int) {
    return 1.0;
  };
  int calls = 0;
  std::vector<size_t> warmed;
  std::vector<std::pair<size_t, int>> timed; ///< (k, reps), in order

  TuneClock clock() {
    TuneClock c;
    c.warm = [this](size_t k) {
      warmed.push_back(k);
      return ms[k] >= 0.0;
    };
    c.time = [this](size_t k, int reps) {
      if (ms[k] < 0.0)
        megatest::fail("refused candidate " + std::to_string(k) + " was timed");
      timed.push_back({k, reps});
      return ms[k] * noise(calls++, k, reps);
    };
    return c;
  }
  /// Blocks of candidate k after the probe.
  int blocks(size_t k) const {
    int n = 0;
    for (size_t j = 1; j < timed.size(); ++j)
      n += timed[j].first == k;
    return n;
  }
};

void testRefusals() {
  Script s({-1.0, -1.0, 0.1, 0.05});
  TuneResult r = chooseCandidate(s.ms.size(), s.clock());
  expect(s.warmed.size() == 4, "every candidate is launched once untimed");
  expect(r.chosen == 3, "the faster of the two that run is chosen");
  expect(r.firstMs == -1.0, "the heuristic's first refused: no time for it");
  expect(s.timed.front().first == 2 && s.timed.front().second == 1,
         "the block is sized from the first candidate that runs, timed alone");

  Script none({-1.0, -1.0});
  r = chooseCandidate(none.ms.size(), none.clock());
  expect(r.chosen == -1 && none.timed.empty(),
         "none runs: no choice and nothing timed");
}

void testBlockSize() {
  Script fast({0.01, 0.02});
  TuneResult r = chooseCandidate(fast.ms.size(), fast.clock());
  expect(r.reps == 50, "10 us launches: 50 a block (0.5 ms)");
  for (size_t j = 1; j < fast.timed.size(); ++j)
    expect(fast.timed[j].second == r.reps, "every block has the same size");

  Script slow({0.47, 0.5});
  r = chooseCandidate(slow.ms.size(), slow.clock());
  expect(r.reps == 3, "470 us launches: at least 3 a block");

  Script zero({0.0, 0.0});
  r = chooseCandidate(zero.ms.size(), zero.clock());
  expect(r.reps == 50, "a probe that reads 0 ms: the most launches a block");
}

void testFinalists() {
  // Round one: candidates 0, 2, 3, 4 and 5 within 25% of the fastest, 1 is
  // 30% slower. The four fastest go on: 3, 4, 2, 5 (0 is the slowest of
  // those within 25%).
  Script s({0.104, 0.13, 0.102, 0.100, 0.101, 0.103});
  TuneResult r = chooseCandidate(s.ms.size(), s.clock());
  expect(s.blocks(1) == 1, "a candidate 30% slower is timed in round one only");
  expect(s.blocks(0) == 1, "the fifth within 25% is not a finalist");
  for (size_t k : {2, 3, 4, 5})
    expect(s.blocks(k) == 4,
           "a finalist has round one and 3 more blocks: " + std::to_string(k));
  // Interleaved: after round one, the rounds go 2 3 4 5, 2 3 4 5, ...
  std::vector<size_t> after;
  for (size_t j = 1 + s.ms.size(); j < s.timed.size(); ++j)
    after.push_back(s.timed[j].first);
  expect(after == std::vector<size_t>({2, 3, 4, 5, 2, 3, 4, 5, 2, 3, 4, 5}),
         "the finalists' rounds interleave, in the heuristic's order");
  // 3 is 1.96% under 2 (the choice so far), 4 is not 1% under 3.
  expect(r.chosen == 3, "the fastest finalist, by more than the margin");
  expect(std::fabs(r.ms - 0.100) < 1e-12, "its time is its median");
  expect(std::fabs(r.firstMs - 0.104) < 1e-12,
         "the heuristic's first, not a finalist: its round-one time");
}

void testMargin() {
  // Candidate 1 is 0.5% faster than the heuristic's first: noise, kept.
  Script close({0.1000, 0.0995});
  TuneResult r = chooseCandidate(close.ms.size(), close.clock());
  expect(r.chosen == 0, "0.5% faster does not move the choice");
  expect(std::fabs(r.firstMs - 0.1) < 1e-12,
         "the heuristic's first, a finalist: its median");
  // 2% faster does.
  Script clear({0.100, 0.098});
  r = chooseCandidate(clear.ms.size(), clear.clock());
  expect(r.chosen == 1, "2% faster moves the choice");
}

void testOutliers() {
  // Candidate 1's round-one block is 15% lucky (a warm cache, a clock
  // step): alone it would win; its median over the rounds does not.
  Script s({0.100, 0.103});
  s.noise = [](int call, size_t k, int) {
    return call == 2 && k == 1 ? 0.85 : 1.0; // call 0 probe, 1 and 2 round one
  };
  TuneResult r = chooseCandidate(s.ms.size(), s.clock());
  expect(r.chosen == 0, "one lucky block does not win");
  // One unlucky block of the faster candidate in the rounds: its median
  // still wins.
  Script u({0.103, 0.100});
  u.noise = [](int call, size_t k, int) {
    return call == 4 && k == 1 ? 1.5 : 1.0; // its first block of the rounds
  };
  r = chooseCandidate(u.ms.size(), u.clock());
  expect(r.chosen == 1, "one unlucky block does not lose (the first)");
  Script v({0.103, 0.100});
  v.noise = [](int call, size_t k, int) {
    return call == 8 && k == 1 ? 1.5 : 1.0; // its last block of the rounds
  };
  r = chooseCandidate(v.ms.size(), v.clock());
  expect(r.chosen == 1, "one unlucky block does not lose (the last)");
  // A clock that slows 1% a block: interleaving moves both alike, so the
  // 3% faster candidate still wins although it is timed later each round.
  Script d({0.103, 0.100});
  d.noise = [](int call, size_t, int) { return 1.0 + 0.01 * call; };
  r = chooseCandidate(d.ms.size(), d.clock());
  expect(r.chosen == 1, "a drifting clock: still the faster one");
}

void testOne() {
  Script s({0.2});
  TuneResult r = chooseCandidate(s.ms.size(), s.clock());
  expect(r.chosen == 0 && s.timed.size() == 2,
         "one candidate: the probe and round one, no more");
  expect(std::fabs(r.ms - 0.2) < 1e-12 && std::fabs(r.firstMs - 0.2) < 1e-12,
         "one candidate: its round-one time");
}

/// "b:s:r b:s:r ..." of a list of split variants.
std::string describe(const std::vector<SplitVariant> &v) {
  std::string out;
  for (const SplitVariant &x : v) {
    if (!out.empty())
      out += ' ';
    out += std::to_string(x.base);
    out += ':';
    out += std::to_string(x.split);
    out += ':';
    out += std::to_string(x.reduction);
  }
  return out;
}

void expectVariants(const std::vector<SplitVariant> &got,
                    const std::string &want, const std::string &what) {
  const std::string g = describe(got);
  expect(g == want, what + " (got \"" + g + "\", want \"" + want + "\")");
}

void testSplitVariants() {
  const uint32_t all = kReduceInPlace | kReduceCompute | kReduceOutput;
  SplitBase third{0.3, true, all, 1};
  // 0.3 waves over K = 16384: 2, 3, 4 and 6 parts stay within 2 waves.
  expectVariants(splitVariants({third}, 16384), "0:2:2 0:3:2 0:4:2 0:6:2",
                 "a third of the GPU: counts up to 2 waves, f32 partials");
  expectVariants(splitVariants({{1.0, true, all, 1}}, 16384), "",
                 "a base that fills the GPU is not split");
  expectVariants(splitVariants({{0.3, true, all, 4}}, 16384), "",
                 "a base already split is not split again");
  expectVariants(splitVariants({{0.3, false, all, 1}}, 16384), "",
                 "a base without split-K support is not split");
  expectVariants(splitVariants({{0.3, true, 0, 1}}, 16384), "",
                 "a base without a reduction scheme is not split");
  expectVariants(
      splitVariants({{0.5, true, kReduceInPlace | kReduceOutput, 1}}, 16384),
      "0:2:4 0:3:4 0:4:4", "no f32 partials: the output's type");
  expectVariants(splitVariants({{0.5, true, kReduceInPlace, 1}}, 16384),
                 "0:2:1 0:3:1 0:4:1", "in place where that is all there is");
  expectVariants(splitVariants({{0.0, true, all, 1}}, 16384), "0:2:2 0:3:2",
                 "waves not known: the first two counts only");
  // K = 1024 keeps 256 per part: at most 4 parts.
  expectVariants(splitVariants({{0.2, true, all, 1}}, 1024),
                 "0:2:2 0:3:2 0:4:2", "each part keeps 256 of K");
  expectVariants(splitVariants({{0.2, true, all, 1}}, 500), "",
                 "K too short to split");
  // Bases in order, the ineligible skipped without counting; four varied.
  std::vector<SplitBase> many = {{1.5, true, all, 1},  {0.9, true, all, 1},
                                 {0.9, false, all, 1}, {0.9, true, all, 1},
                                 {0.9, true, all, 1},  {0.9, true, all, 1},
                                 {0.9, true, all, 1}};
  expectVariants(splitVariants({{0.5, true, kReduceInPlace | kReduceOutput, 1}},
                               16384, kReduceCompute),
                 "", "no allowed reduction: not split");
  expectVariants(splitVariants({{0.5, true, all, 1}}, 16384, kReduceCompute),
                 "0:2:2 0:3:2 0:4:2",
                 "f32 partials where only they are allowed");
  expectVariants(splitVariants(many, 16384), "1:2:2 3:2:2 4:2:2 5:2:2",
                 "the first four bases that can split, in order");
  SplitLimits two;
  two.bases = 2;
  two.maxWaves = 1.0;
  expectVariants(splitVariants({third, third, third}, 16384, all, two),
                 "0:2:2 0:3:2 1:2:2 1:3:2", "the limits are honoured");
}

} // namespace

int main() {
  testRefusals();
  testBlockSize();
  testFinalists();
  testMargin();
  testOutliers();
  testOne();
  testSplitVariants();
  return megatest::finish();
}

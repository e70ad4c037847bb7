//===- GemmTuning.cpp - Choosing among timed GEMM candidates --------------===//
//
// The steps are in GemmTuning.h.
//
//===----------------------------------------------------------------------===//
#include "GemmTuning.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mega::rt::gpu {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

} // namespace

TuneResult chooseCandidate(size_t count, const TuneClock &clock,
                           const TuneLimits &limits) {
  TuneResult result;
  // 1. Who runs, and the block size from the first that does.
  std::vector<size_t> ran;
  for (size_t k = 0; k < count; ++k)
    if (clock.warm(k))
      ran.push_back(k);
  if (ran.empty())
    return result;
  const double probe = clock.time(ran.front(), 1);
  int reps = limits.maxReps;
  if (probe > 0.0 && std::isfinite(probe))
    reps = int(
        std::min<double>(limits.maxReps, std::ceil(limits.blockMs / probe)));
  reps = std::clamp(reps, limits.minReps, limits.maxReps);
  result.reps = reps;

  // 2. Round one.
  std::vector<double> first(ran.size());
  for (size_t j = 0; j < ran.size(); ++j)
    first[j] = clock.time(ran[j], reps);

  // 3. The finalists, kept in the heuristic's order.
  const double best = *std::min_element(first.begin(), first.end());
  std::vector<size_t> order; // indices into `ran`, fastest first
  for (size_t j = 0; j < ran.size(); ++j)
    if (first[j] <= best * limits.finalistSpread)
      order.push_back(j);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return first[a] < first[b]; });
  if (order.size() > limits.finalists)
    order.resize(limits.finalists);
  std::sort(order.begin(), order.end());

  // 4. Interleaved rounds.
  std::vector<double> score(order.size());
  if (order.size() == 1) {
    score[0] = first[order[0]];
  } else {
    std::vector<std::vector<double>> blocks(order.size());
    for (int r = 0; r < limits.rounds; ++r)
      for (size_t f = 0; f < order.size(); ++f)
        blocks[f].push_back(clock.time(ran[order[f]], reps));
    for (size_t f = 0; f < order.size(); ++f)
      score[f] = median(blocks[f]);
  }

  // 5. The heuristic's order, moved only by more than the margin.
  size_t chosen = 0;
  for (size_t f = 1; f < order.size(); ++f)
    if (score[f] < score[chosen] * (1.0 - limits.margin))
      chosen = f;
  result.chosen = long(ran[order[chosen]]);
  if (ran.front() == 0) {
    result.firstMs = first.front();
    if (order.front() == 0)
      result.firstMs = score.front();
  }
  result.ms = score[chosen];
  return result;
}

std::vector<SplitVariant> splitVariants(const std::vector<SplitBase> &bases,
                                        int64_t K, uint32_t allowed,
                                        const SplitLimits &limits) {
  std::vector<SplitVariant> out;
  size_t varied = 0;
  for (size_t b = 0; b < bases.size() && varied < limits.bases; ++b) {
    const SplitBase &base = bases[b];
    const bool idle = base.waves < 1.0; // 0: not known
    if (!base.splitSupport || base.split > 1 || !idle)
      continue;
    uint32_t reduction = 0;
    for (uint32_t r : {kReduceCompute, kReduceOutput, kReduceInPlace})
      if (base.reductions & allowed & r) {
        reduction = r;
        break;
      }
    if (!reduction)
      continue;
    ++varied;
    size_t tried = 0;
    for (int s : limits.splits) {
      if (s < 2 || K / s < limits.minPartK)
        continue;
      if (base.waves > 0.0 ? base.waves * s > limits.maxWaves : tried >= 2)
        continue;
      out.push_back({b, s, reduction});
      ++tried;
    }
  }
  return out;
}

} // namespace mega::rt::gpu

//===- GemmTuning.h - Choosing among timed GEMM candidates ----------------===//
//
// mega-run's GEMM autotune (the default on cuda; Precision.cu) times
// cuBLASLt's candidates for each distinct bf16 GEMM at its first call and
// keeps the fastest. What is timed there is a few hundred microseconds of
// launches on a GPU whose clock and caches move under it, so a choice made
// from one short timing each (three launches, as before) can go either way
// between two runs of the same plan. The choice is made here, from a clock
// the caller supplies, so that a test without a GPU can check it against
// a scripted one.
//
// The steps (chooseCandidate):
//   1. Each candidate, in the heuristic's order, is launched once untimed;
//      one that refuses is dropped. The first that runs is then timed
//      alone once, which sizes a block: enough launches back to back for
//      about kBlockMs (at least kMinReps, at most kMaxReps).
//   2. Round one: one block of each candidate that ran.
//   3. The finalists: the kFinalists fastest of round one, among those
//      within kFinalistSpread of the fastest. The spread is wide, so that
//      one lucky block of another candidate does not shut the truly
//      fastest out before the rounds that would show it.
//   4. kRounds more blocks of each finalist, interleaved (every finalist
//      once, then again), so that a clock that drifts moves them all
//      alike. A finalist's score is the median of its blocks.
//   5. In the heuristic's order, a finalist takes the choice from the one
//      chosen so far only when its score is more than kMargin below it:
//      noise alone never moves the choice away from the heuristic's order.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_GEMMTUNING_H
#define MEGA_RUNTIME_BACKENDS_CUDA_GEMMTUNING_H

#include <cstddef>
#include <functional>

namespace mega::rt::gpu {

/// How a candidate is run and timed.
struct TuneClock {
  /// Launches candidate k once, untimed; false when it refuses (dropped).
  std::function<bool(size_t k)> warm;
  /// Launches candidate k `reps` times back to back; milliseconds per
  /// launch.
  std::function<double(size_t k, int reps)> time;
};

struct TuneLimits {
  double blockMs = 0.5;
  int minReps = 3, maxReps = 50;
  size_t finalists = 4;
  double finalistSpread = 1.25;
  int rounds = 3;
  double margin = 0.01;
};

struct TuneResult {
  /// The candidate chosen, or -1 when none ran.
  long chosen = -1;
  /// Its time per launch in milliseconds: its score (step 4), or its
  /// round-one time when it was the only finalist.
  double ms = 0.0;
  /// Candidate 0's time on the same terms: its score when it was a
  /// finalist, else its round-one time; -1 when it refused.
  double firstMs = -1.0;
  /// Launches in blocks of (step 1).
  int reps = 0;
};

/// Chooses among `count` candidates, best first in the heuristic's order.
TuneResult chooseCandidate(size_t count, const TuneClock &clock,
                           const TuneLimits &limits = {});

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_GEMMTUNING_H

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
// The wide search (mega-run --gemm-autotune-wide, splitVariants) adds to the
// heuristic's candidates the split-K forms of the first few that leave the
// GPU part idle: a product whose output has fewer tiles than the GPU has
// multiprocessors (a weight gradient of 768 x 768 over 16384 rows fills
// about a third of an H100) can cut K into parts that run side by side and
// are then summed.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_GEMMTUNING_H
#define MEGA_RUNTIME_BACKENDS_CUDA_GEMMTUNING_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

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

/// cuBLASLt's reduction schemes for split-K (cublasLtReductionScheme_t's
/// values; Precision.cu checks that they agree).
enum : uint32_t {
  kReduceInPlace = 1, ///< in the output, in its type, counters in workspace
  kReduceCompute = 2, ///< f32 partials in workspace, summed once
  kReduceOutput = 4,  ///< partials in the output's type in workspace
};

/// What the wide search knows of one candidate it may split.
struct SplitBase {
  /// The heuristic's wavesCount for it (1: the whole GPU once; 0: not
  /// known).
  double waves = 0.0;
  /// CUBLASLT_ALGO_CAP_SPLITK_SUPPORT and ..._REDUCTION_SCHEME_MASK.
  bool splitSupport = false;
  uint32_t reductions = 0;
  /// Its own CUBLASLT_ALGO_CONFIG_SPLITK_NUM (1: K whole).
  int split = 1;
};

struct SplitVariant {
  size_t base = 0; ///< index into the bases
  int split = 1;   ///< parts of K
  uint32_t reduction = 0;
};

struct SplitLimits {
  /// Bases varied: the first this many that can split and leave the GPU
  /// part idle (waves below 1, or not known).
  size_t bases = 4;
  /// Parts tried, smallest first; a count whose waves would pass maxWaves
  /// is skipped (not known: only the first two counts).
  std::vector<int> splits = {2, 3, 4, 6, 8, 12, 16};
  double maxWaves = 2.0;
  /// Each part keeps at least this much of K.
  int64_t minPartK = 256;
};

/// The split-K forms to try of `bases` (in their order) for a product over
/// K, each with the first of the reductions `allowed` that the base takes,
/// f32 partials first: per base, its counts in order. Bases already split,
/// that cannot split, that fill the GPU or that take none of `allowed`
/// give none. (A bf16 result allows f32 partials only: partials rounded to
/// bf16 before their sum would be coarser than the product unsplit.)
std::vector<SplitVariant> splitVariants(const std::vector<SplitBase> &bases,
                                        int64_t K,
                                        uint32_t allowed = kReduceInPlace |
                                                           kReduceCompute |
                                                           kReduceOutput,
                                        const SplitLimits &limits = {});

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_GEMMTUNING_H

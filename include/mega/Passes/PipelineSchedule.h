//===- PipelineSchedule.h - Pipeline-parallel schedules --------*- C++ -*-===//
//
// The order in which each pipeline rank runs the forward and backward steps of
// one optimizer step's micro-batches, for GPipe, 1F1B and Megatron's
// interleaved (virtual-pipeline) schedule, the plan's steps with their
// transfers, and a unit-cost simulator that gives the timeline and its
// bubble. No MLIR types: `megac --emit
// schedule-text|schedule-svg` uses it without compiling a model, and the
// pipeline pass will use it to order the per-rank program.
// Implementation: lib/Passes/PipelineSchedule.cpp; docs/compiler.md,
// "Pipeline schedules".
//
// Notation: P ranks (r = 0..P-1), V chunks (virtual stages) per rank, m
// micro-batches. Chunk c of rank r is virtual stage s = c*P + r of S = P*V;
// micro-batch mb flows forward through s = 0..S-1 and back through S-1..0.
//
// 1. GPipe: every rank runs F(0..m-1) then B(0..m-1).
// 2. 1F1B (PipeDream-flush, Megatron's non-interleaved schedule): rank r runs
//    w = min(P-r-1, m) warm-up forwards, then m-w times "F(w+i), B(i)"
//    (steady state), then the w remaining backwards (cool-down). At most
//    P-r micro-batches' activations are alive on rank r.
// 3. Interleaved (V > 1; m must be a multiple of P): rank r runs T = m*V
//    forward and T backward steps. The k-th forward step (k = 0..T-1) works on
//      chunk(k)      = (k mod (P*V)) / P
//      microbatch(k) = (k / (P*V)) * P + k mod P
//    i.e. groups of P micro-batches go through chunk 0, then the same group
//    through chunk 1, ...; the k-th backward step uses the same micro-batch
//    and chunk V-1-chunk(k). Warm-up w = min((P-r-1)*2 + (V-1)*P, T)
//    forwards (all T when m == P, as Megatron does), then T-w times
//    "F(w+i), B(i)", then the remaining backwards.
// 4. Point-to-point traffic: before F(mb, s) with s > 0 the rank receives
//    mb's activation from rank (s-1) mod P; after it, with s < S-1, it sends
//    to rank (s+1) mod P. Before B(mb, s) with s < S-1 it receives the
//    gradient from rank (s+1) mod P; after it, with s > 0, it sends to rank
//    (s-1) mod P. `Step::recvFrom/sendTo` give the peers.
// 5. Exchanges (planSteps): the plan runs each rank's transfers in
//    exchanges, runs of consecutive Send/Recv steps whose transfers progress
//    together, each send waiting for its receive as NCCL's does
//    (lib/Runtime/PipelineTraffic.h checks a plan against that rule). Before
//    each unit of computation comes one exchange: the sends of the unit
//    before and the receives of this one. A unit is one step, except in the
//    interleaved steady state, where F(w+i) and B(i) form one (Step::paired),
//    as in Megatron's send_forward_backward_recv_forward_backward: with one
//    step per unit, P=2 V=2 m=4 would hang (rank 0 sends B0's gradients to
//    rank 1, which first sends B1's). For GPipe and 1F1B the exchanges are
//    Megatron's send_forward_recv_backward and send_backward_recv_forward.
//    In step 6's unit model the exchanges delay nothing: with every send
//    waiting for its receive, each schedule megac writes (2-8 ranks, up to
//    4 chunks, 1-32 micro-batches) has the makespan of sends that never
//    wait (test/runtime/engine/pipeline_traffic_test.cpp).
// 6. Simulation (unit model): a forward step costs 1, a backward 2. Each rank
//    runs its steps in order; F(mb, s) starts after F(mb, s-1) ended, B(mb, s)
//    after B(mb, s+1) and F(mb, s) ended. bubble = idle / (P * makespan).
//    For GPipe and 1F1B this is (P-1)/(m+P-1). (Transfers cost nothing.)
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PASSES_PIPELINESCHEDULE_H
#define MEGA_PASSES_PIPELINESCHEDULE_H

#include "mega/Plan/Plan.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mega::pipeline {

enum class ScheduleKind { GPipe, OneFOneB, Interleaved };

/// "gpipe", "1f1b", "interleaved"; nullopt for anything else.
std::optional<ScheduleKind> parseScheduleKind(std::string_view name);
const char *scheduleName(ScheduleKind kind);

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::OneFOneB;
  int64_t ranks = 1;         ///< P
  int64_t virtualStages = 1; ///< V, chunks per rank
  int64_t microbatches = 1;  ///< m
};

/// "" when `config` is a valid schedule, otherwise one line naming the
/// constraint and the values (the text after `error: `).
std::string checkSchedule(const ScheduleConfig &config);

struct Step {
  bool forward = true;
  int64_t microbatch = 0;
  int64_t chunk = 0;
  /// A forward of the interleaved steady state: it and the backward after
  /// it are one unit of step 5.
  bool paired = false;
  /// The virtual stage this step runs on rank `rank`.
  int64_t stage(const ScheduleConfig &c, int64_t rank) const {
    return chunk * c.ranks + rank;
  }
  /// The rank this step receives from before it runs (step 4), or -1.
  int64_t recvFrom(const ScheduleConfig &c, int64_t rank) const;
  /// The rank this step sends to after it runs (step 4), or -1.
  int64_t sendTo(const ScheduleConfig &c, int64_t rank) const;
};

/// Steps per rank, in execution order (steps 1-3). `config` must pass
/// checkSchedule.
std::vector<std::vector<Step>> buildSchedule(const ScheduleConfig &config);

/// The plan's schedule (version 3): per rank, the steps of buildSchedule
/// with their transfers in exchanges (step 5), then the optimizer.
std::vector<std::vector<plan::ScheduleStep>>
planSteps(const ScheduleConfig &config);

struct TimedStep {
  Step step;
  int64_t start = 0, end = 0;
};

struct Timeline {
  std::vector<std::vector<TimedStep>> ranks;
  int64_t makespan = 0;
  int64_t idle = 0;     ///< summed over ranks
  double bubble = 0;    ///< idle / (P * makespan)
  std::string deadlock; ///< non-empty when the order cannot run
};

/// Step 6: unit-cost start/end times of `steps` (from buildSchedule).
Timeline simulate(const ScheduleConfig &config,
                  const std::vector<std::vector<Step>> &steps);

/// One line per rank: `rank 0: F0 F1 B0 ...` (`F0.1` = micro-batch 0 on
/// chunk 1 when V > 1), then `bubble: ...`.
std::string scheduleText(const ScheduleConfig &config, const Timeline &t);

/// The timeline as a self-contained SVG: one row per rank, forward boxes
/// (blue, width 1) and backward boxes (green, width 2) labelled with the
/// micro-batch, darker shades for later chunks, gaps where the rank idles.
std::string scheduleSvg(const ScheduleConfig &config, const Timeline &t);

} // namespace mega::pipeline

#endif // MEGA_PASSES_PIPELINESCHEDULE_H

//===- PipelineTraffic.h - The messages of a pipeline schedule -----------===//
//
// What a pipelined plan's schedule (plan::Plan::schedule) sends between the
// pipeline ranks, and a check that it runs under NCCL's rules for
// point-to-point transfers, which Communicator::exchange keeps on every path:
//  1. No tags: the k-th message rank a sends to rank b is the k-th one b
//     receives from a. Every pair of ranks must agree on the order.
//  2. A send completes only once its receive is posted. A rank runs its
//     steps in order, and consecutive Send/Recv steps (nothing computed
//     between them) form one exchange whose transfers progress together,
//     as Megatron's batched send_forward_recv_backward does; the exchange
//     ends when all of them have. The check simulates every rank under this
//     rule (each send waiting for its receive, the worst case) and fails
//     when some rank can never finish: the schedule would hang.
// The pipeline executor runs the check on the whole plan when it loads, so
// every rank refuses a schedule that could hang, with the same message.
//
// Messages: micro-batch mb's activations for stage s (forward s reads them;
// forward s-1 produced them) or its gradients for stage s (backward s reads
// them; backward s+1 produced them). Stage s = chunk * pp + rank.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_PIPELINETRAFFIC_H
#define MEGA_RUNTIME_PIPELINETRAFFIC_H

#include "mega/Plan/Plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mega::rt {

struct PipeMessage {
  int64_t microbatch = 0;
  int stage = 0;         ///< the stage that reads it
  bool gradient = false; ///< false: activations for forward `stage`
  bool operator==(const PipeMessage &o) const {
    return microbatch == o.microbatch && stage == o.stage &&
           gradient == o.gradient;
  }
  /// "micro-batch 3's activations for stage 2".
  std::string text() const;
};

struct PipeTransfer {
  bool send = false;
  int peer = 0; ///< pipeline rank
  PipeMessage message;
};

/// The transfers of one Send/Recv step of pipeline rank `rank` (the
/// message it moves, with the peer), in a plan of `pp` ranks and `vpp`
/// chunks per rank. Throws Error for a step that moves nothing (RecvForward
/// on stage 0, SendForward on the last stage, ...) or names a chunk the rank
/// does not have.
PipeTransfer stepTransfer(const plan::ScheduleStep &step, int rank, int pp,
                          int vpp);

/// Per rank, its exchanges in order: runs of consecutive Send/Recv steps
/// of `schedule` (one list of steps per rank). Throws Error (stepTransfer's,
/// or naming the step) for a receive after the forward or backward it feeds,
/// a send before the one it sends from, or a forward or backward with
/// nothing received before it where its stage needs it.
std::vector<std::vector<std::vector<PipeTransfer>>>
pipeExchanges(const std::vector<std::vector<plan::ScheduleStep>> &schedule,
              int pp, int vpp);

/// "" when `exchanges` (from pipeExchanges) keep rules 1 and 2, else one
/// line naming the first problem: two ranks that disagree on the order of
/// their messages, or where the ranks wait when the schedule hangs.
std::string checkPipeExchanges(
    const std::vector<std::vector<std::vector<PipeTransfer>>> &exchanges);

/// The steps of evaluation on pipeline rank `rank`: micro-batch 0 through
/// every chunk's forward in stage order, each with its receive before and
/// its send after.
std::vector<plan::ScheduleStep> evalSteps(int rank, int pp, int vpp);

} // namespace mega::rt

#endif // MEGA_RUNTIME_PIPELINETRAFFIC_H

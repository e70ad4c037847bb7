//===- Pipeline.h - Running a pipeline rank's schedule -------------------===//
//
// A pipelined plan (plan::Plan::schedule non-empty) has, per virtual stage s,
// a "forward" and a "backward" program, and per pipeline rank an "optimizer"
// (docs/plan-format.md §3.4). This rank runs the steps of its schedule in
// order:
//  - Send/Recv steps: a run of consecutive ones is one exchange
//    (Backend::exchange: NCCL on device memory where the pipeline group has
//    a communicator, else staged through host memory and MPI), under NCCL's
//    rules: no tags, each send waits for its receive. The executor checks
//    the whole plan's schedule against them when it loads (PipelineTraffic.h),
//    so a schedule that could hang is refused on every rank. What arrives
//    lands in device buffers of a pool;
//  - Forward: feeds tokens / targets (the micro-batch's, from the data
//    loader) and the received activations, runs, keeps the loss (last
//    stage), stashes what backward s reads (the received buffers as they
//    are, its own outputs copied on the device into pool buffers) and copies
//    on the device the activations it sends;
//  - Backward: feeds the stash and the received gradients, runs, gives the
//    buffers back to the pool, copies the gradients it sends.
// The transfers of a step go in the receiving program's input order.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_PIPELINE_H
#define MEGA_RUNTIME_PIPELINE_H

#include "Engine.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace mega::rt {

class Tracer;

class PipelineExecutor {
public:
  /// Checks that the plan's programs of this rank's stages exist and that
  /// their ports pair up; throws Error.
  PipelineExecutor(Engine &engine, Tracer *tracer);

  /// Fills one micro-batch's tokens and targets (B*S each).
  using Fetch = std::function<void(int64_t microbatch, int32_t *tokens,
                                   int32_t *targets)>;
  /// Every step of the schedule before the optimizer. Returns the sum of the
  /// micro-batch losses when this rank holds the last stage, else 0. With
  /// `startBuckets`, the backwards of the last micro-batch start the plan's
  /// data-parallel gradient buckets (AllReduceStart).
  double runMicrobatches(const Fetch &fetch, bool startBuckets = true);
  /// Evaluation: one micro-batch through every stage's forward program, in
  /// stage order (receive, run, send: evalSteps), nothing stashed. Returns
  /// its loss on the rank holding the last stage, else 0. Call between
  /// iterations only (after runOptimizer).
  double runForwardOnly(const Fetch &fetch);
  /// Runs this rank's optimizer; returns its grad_norm.
  double runOptimizer(float lr, float step);

  int pipelineRank() const { return rank_; }
  bool hasLastStage() const { return lastStage_; }
  /// The most micro-batches (times chunks) stashed at once, and their bytes.
  int64_t peakStashed() const { return peakStashed_; }
  int64_t peakStashBytes() const { return peakBytes_; }
  /// "stages 0, 2" for the log.
  std::string stagesText() const;

  /// The pipeline ranks that hold persistent k (allocated it: their
  /// programs reference it), in rank order; the first one's values are
  /// current (its optimizer updates them; the tied embedding is updated on
  /// the first and the last stage alike).
  const std::vector<int> &holders(size_t k) const { return holders_[k]; }
  /// For checkpoints: pipeline rank 0 (whose world rank 0 writes) gets host
  /// copies of the tensors with `role` that it does not hold, from their
  /// first holder; Memory::dropHostCopies frees them.
  void collect(plan::Role role);
  /// For --dump-grads: pipeline rank 0 gets every gradient summed over its
  /// holders (the tied embedding's two parts meet), on the device where it
  /// holds it, else as a host copy; returns its local values (empty where
  /// not held) so that restore() can put them back and drop the copies.
  std::vector<std::vector<float>> sumGrads();
  void restore(const std::vector<std::vector<float>> &local);

private:
  struct Transfer {
    std::string port;
    size_t bytes = 0;
  };
  struct Chunk {
    int stage = 0;
    ProgramRunner *forward = nullptr, *backward = nullptr;
    std::vector<Transfer> recvForward, sendForward;   ///< activations
    std::vector<Transfer> recvBackward, sendBackward; ///< their gradients
    std::vector<Transfer> stash; ///< what backward reads from forward
    bool tokens = false, targets = false; ///< forward or backward reads them
  };
  struct Buffers {
    /// Host memory: the tokens and targets a backward reads (stashed).
    std::map<std::string, std::vector<char>> ports;
    /// Device memory: received, stashed or to be sent.
    std::map<std::string, DeviceBuffer> device;
    size_t bytes() const;
  };
  void feed(ProgramRunner &p, const Buffers &from);
  /// A device buffer of `bytes` from the pool (or a new one).
  DeviceBuffer take(size_t bytes);
  void give(DeviceBuffer b);
  /// Device copies of `p`'s outputs `ports` into toSend_[key].
  void keepSends(ProgramRunner &p, const std::vector<Transfer> &ports,
                 std::pair<int64_t, int> key);
  /// Runs `steps`; `train` stashes for the backward (runMicrobatches).
  double runSteps(const std::vector<plan::ScheduleStep> &steps,
                  const Fetch &fetch, bool train);
  /// One exchange: the transfers of consecutive Send/Recv `steps`.
  void exchange(const std::vector<plan::ScheduleStep> &steps);
  void runForward(const Fetch &fetch, int64_t mb, int c, bool train,
                  double &loss);
  void runBackward(int64_t mb, int c);

  Engine &engine_;
  bool startBuckets_ = false; ///< this iteration's (runMicrobatches)
  Communicator &comm_;
  const ProcessGroup &group_;
  Tracer *tracer_;
  int rank_ = 0, pp_ = 1, vpp_ = 1, stages_ = 1;
  int64_t microbatches_ = 1, micro_ = 1, seq_ = 1;
  bool lastStage_ = false;
  std::vector<Chunk> chunks_;
  std::vector<std::vector<int>> holders_;
  /// Checkpoint and gradient-dump messages (between iterations, when no
  /// schedule message is in flight).
  static constexpr int kCollectTag = 32767;
  ProgramRunner *optimizer_ = nullptr;
  const std::vector<plan::ScheduleStep> *steps_ = nullptr;
  std::vector<plan::ScheduleStep> evalSteps_; ///< runForwardOnly's

  // Per-iteration state, keyed by (micro-batch, chunk).
  std::map<std::pair<int64_t, int>, Buffers> received_, stash_;
  /// Outputs to send, by (micro-batch, chunk; chunk + vpp for backward's).
  std::map<std::pair<int64_t, int>, Buffers> toSend_;
  std::vector<int32_t> tokens_, targets_;
  /// Device buffers for stashes and transfers, by size: given back once
  /// used, taken again by the next ones (as many as in flight at once).
  std::multimap<size_t, DeviceBuffer> pool_;
  int64_t peakStashed_ = 0, peakBytes_ = 0, stashBytes_ = 0;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_PIPELINE_H

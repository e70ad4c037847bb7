//===- Pipeline.h - Running a pipeline rank's schedule -------------------===//
//
// A pipelined plan (plan::Plan::schedule non-empty) has, per virtual stage s,
// a "forward" and a "backward" program, and per pipeline rank an "optimizer"
// (docs/plan-format.md §3.4). This rank runs the steps of its schedule in
// order:
//  - RecvForward / RecvBackward: blocking receives from the previous /
//    next pipeline rank into host buffers;
//  - Forward: feeds tokens / targets (the micro-batch's, from the data
//    loader) and the received activations, runs, keeps the loss (last
//    stage), stashes what backward s reads (its own outputs, copied on the
//    device into buffers of a pool, and its inputs, which arrived in host
//    memory) and holds the activations it sends;
//  - Backward: feeds the stash (device to device for the outputs) and the
//    received gradients, runs, gives the stash's buffers back to the pool;
//  - SendForward / SendBackward: non-blocking sends (Communicator::isend);
//    the buffers live until the optimizer step waits for them, so a rank
//    never blocks on a send and every schedule that the simulator runs
//    (include/mega/Passes/PipelineSchedule.h) runs here too.
// Messages are tagged by (micro-batch, receiving stage, direction, port), so
// they can never be matched to the wrong step.
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
  /// stage order (receive, run, send), nothing stashed. Returns its loss on
  /// the rank holding the last stage, else 0. Call between iterations only
  /// (after runOptimizer): its messages reuse micro-batch 0's tags.
  double runForwardOnly(const Fetch &fetch);
  /// Waits for the sends, runs this rank's optimizer; returns its grad_norm.
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
    std::map<std::string, std::vector<char>> ports;
    /// Forward outputs stashed for the backward, in device memory.
    std::map<std::string, DeviceBuffer> device;
    size_t bytes() const;
  };
  int tag(int64_t mb, int stage, int dir, size_t port) const;
  void feed(ProgramRunner &p, const Buffers &from);
  /// A device buffer of `bytes` from the pool (or a new one).
  DeviceBuffer take(size_t bytes);
  void runForward(const Fetch &fetch, int64_t mb, int c, double &loss);
  void runBackward(int64_t mb, int c);

  Engine &engine_;
  bool startBuckets_ = false; ///< this iteration's (runMicrobatches)
  Communicator &comm_;
  const ProcessGroup &group_;
  Tracer *tracer_;
  int rank_ = 0, pp_ = 1, vpp_ = 1, stages_ = 1;
  int64_t microbatches_ = 1, micro_ = 1, seq_ = 1;
  size_t maxPorts_ = 1;
  bool lastStage_ = false;
  std::vector<Chunk> chunks_;
  std::vector<std::vector<int>> holders_;
  /// Checkpoint and gradient-dump messages (between iterations, when no
  /// schedule message is in flight).
  static constexpr int kCollectTag = 32767;
  ProgramRunner *optimizer_ = nullptr;
  const std::vector<plan::ScheduleStep> *steps_ = nullptr;

  // Per-iteration state, keyed by (micro-batch, chunk).
  std::map<std::pair<int64_t, int>, Buffers> received_, stash_;
  std::vector<std::vector<char>> sending_; ///< alive until waitSends
  std::map<std::pair<int64_t, int>, Buffers> toSend_;
  std::vector<int32_t> tokens_, targets_;
  /// Stash buffers given back by backwards, by size: the next forwards
  /// reuse them (as many as the most micro-batches in flight).
  std::multimap<size_t, DeviceBuffer> pool_;
  int64_t peakStashed_ = 0, peakBytes_ = 0, stashBytes_ = 0;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_PIPELINE_H

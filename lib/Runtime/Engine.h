//===- Engine.h - Loading a plan into memory and running its programs -----===//
//
// Everything that can be decided once is decided at load time: each
// program's arena and port buffers are allocated, every instruction's
// operands are resolved to device pointers (TensorRefs), and the backend
// checks every instruction against its operands. Running a program is then
// a loop of backend.launch() calls with no allocation and no lookups.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_ENGINE_H
#define MEGA_RUNTIME_ENGINE_H

#include "BucketReducer.h"
#include "Lanes.h"
#include "Memory.h"

#include "mega/Plan/Plan.h"
#include "mega/Runtime/Backend.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mega::rt {

class Tracer;

class ProgramRunner {
public:
  /// Throws Error naming the program and instruction a check fails on.
  /// Collective instructions run through `comm` (checked against its group
  /// sizes here).
  /// `arena` is the scratch the program's arena values live in, at least
  /// program.arenaBytes long; the engine gives all its programs the same one
  /// (they never run at the same time).
  /// `reducer` runs the AllReduceStart/AllReduceWait pairs (the engine's,
  /// shared by its programs; a program with one and no reducer is an Error).
  ProgramRunner(const plan::Program &program, Memory &memory, Backend &backend,
                Communicator &comm, void *arena,
                BucketReducer *reducer = nullptr);

  const plan::Program &program() const { return program_; }
  const std::string &name() const { return program_.name; }
  /// Device bytes this runner holds: its port buffers.
  size_t deviceBytes() const;

  /// Port lookup; nullptr when the program has no such port.
  const plan::Port *inputPort(const std::string &name) const;
  const plan::Port *outputPort(const std::string &name) const;
  /// Port lookup that throws Error("plan program 'x' has no input 'y'").
  const plan::Port &requireInput(const std::string &name) const;
  const plan::Port &requireOutput(const std::string &name) const;

  /// Copies host bytes into an input port; `bytes` must be the port's size.
  void setInput(const std::string &name, const void *src, size_t bytes);
  /// Copies `bytes` from an output port starting at byte `offset`.
  void getOutput(const std::string &name, void *dst, size_t bytes,
                 size_t offset = 0) const;
  /// The same on the device: a whole output port into device memory `dst`
  /// (of the port's size), and device memory into a whole input port.
  void copyOutputOnDevice(const std::string &name, void *dst) const;
  void setInputOnDevice(const std::string &name, const void *src,
                        size_t bytes);
  /// Convenience for scalar ports.
  void setScalar(const std::string &name, float v) {
    setInput(name, &v, sizeof v);
  }
  float getScalar(const std::string &name) const {
    float v = 0;
    getOutput(name, &v, sizeof v);
    return v;
  }

  /// Runs every instruction in order. With a tracer, records one event for
  /// the program and (when it asks for kernels) one per instruction.
  void run(Tracer *tracer = nullptr);

  /// Lets this program run as a backend recording (Backend::capture) when
  /// graphEligible(): its first run is eager (every kernel scratch reaches
  /// its size, every table is uploaded), the second records and replays,
  /// later ones replay; a run traced kernel by kernel stays eager. `notice`
  /// gets one line the first time it replays, or why it could not record.
  /// A backend with a side stream (Backend::prepareSideStream) records
  /// the program's launches split over its two streams (Lanes.h).
  void useGraph(std::function<void(const std::string &)> notice);
  /// Every instruction is a kernel the backend can record (no collective,
  /// no bucket start or wait, no host round trip) and the run has one rank.
  bool graphEligible() const { return graphEligible_; }

private:
  struct Step {
    const plan::Instr *instr;
    std::vector<TensorRef> inputs, outputs;
    bool collective = false;
  };
  void launch(const Step &s) {
    if (s.instr->op == plan::Op::AllReduceStart ||
        s.instr->op == plan::Op::ReduceScatterStart)
      reducer_->start(*s.instr, s.inputs);
    else if (s.instr->op == plan::Op::AllReduceWait)
      reducer_->wait(*s.instr, s.inputs, {});
    else if (s.instr->op == plan::Op::ReduceScatterWait)
      reducer_->wait(*s.instr, s.inputs, s.outputs);
    else if (s.collective)
      backend_.collective(*s.instr, s.inputs, s.outputs, comm_);
    else
      backend_.launch(*s.instr, s.inputs, s.outputs, comm_);
  }
  /// An input port's buffer, checked to hold exactly `bytes`, and an output
  /// port's; Error naming the program and port otherwise.
  DeviceBuffer &inputBuffer(const std::string &name, size_t bytes);
  const DeviceBuffer &outputBuffer(const std::string &name) const;
  int portIndex(const std::vector<plan::Port> &ports,
                const std::string &name) const;
  void runSteps();
  /// One run through the recording (see useGraph).
  void runGraph();

  const plan::Program &program_;
  Backend &backend_;
  Communicator &comm_;
  void *arena_;
  BucketReducer *reducer_;
  std::vector<DeviceBuffer> inputs_, outputs_;
  std::vector<Step> steps_;
  bool graphEligible_ = false;
  bool graphOn_ = false;     ///< useGraph() and eligible; off after a failure
  bool graphWarm_ = false;   ///< the eager first run is done
  bool graphTold_ = false;   ///< the notice was given
  std::unique_ptr<LaunchGraph> graph_;
  std::function<void(const std::string &)> graphNotice_;
  /// The launches over the backend's two streams, while recording only
  /// (the eager first run, which times the GEMMs, stays on one).
  LanePlan lanes_;
  bool lanesOn_ = false;
  bool recording_ = false;
};

/// A plan made runnable on one backend: persistent memory plus a runner for
/// each of the plan's programs for this device.
class Engine {
public:
  /// `device` selects the programs whose target it is ("cpu", "cuda");
  /// those named in `skip` are not loaded (their ports are not allocated
  /// and their arena needs do not count: a training run has no use for
  /// "predict", a generation none for "train").
  /// The plan, backend and communicator must outlive the engine; without a
  /// communicator the engine runs single-process (every group of size 1).
  Engine(const plan::Plan &plan, Backend &backend, const std::string &device,
         Communicator *comm = nullptr,
         const std::vector<std::string> &skip = {});
  ~Engine();

  const plan::Plan &plan() const { return plan_; }
  Backend &backend() const { return backend_; }
  Communicator &comm() const { return *comm_; }
  Memory &memory() { return memory_; }
  const Memory &memory() const { return memory_; }

  /// The device memory the plan asked for on this rank, all allocated when
  /// the engine was built (nothing is allocated per step): this rank's
  /// persistent tensors, and every program's arena and ports.
  struct PlannedBytes {
    size_t persistents = 0, arena = 0, ports = 0;
    size_t total() const { return persistents + arena + ports; }
  };
  PlannedBytes plannedBytes() const;

  bool has(const std::string &program) const;
  /// Throws Error("the plan has no 'eval' program") when it is missing.
  ProgramRunner &program(const std::string &name);
  /// The program `name` of pipeline stage `stage` on this rank, or nullptr.
  ProgramRunner *find(const std::string &name, int stage);
  /// ProgramRunner::useGraph for every program (the eligible ones record).
  void useGraphs(const std::function<void(const std::string &)> &notice);
  /// The data-parallel gradient buckets the programs reduce in flight: the
  /// trainer turns their start on for a step's last micro-batch.
  BucketReducer &buckets() { return *buckets_; }

private:
  const plan::Plan &plan_;
  Backend &backend_;
  std::unique_ptr<Communicator> ownComm_;
  Communicator *comm_;
  Memory memory_;
  std::unique_ptr<BucketReducer> buckets_;
  /// One scratch arena for every program: the largest they ask for.
  DeviceBuffer arena_;
  std::vector<std::unique_ptr<ProgramRunner>> programs_;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_ENGINE_H

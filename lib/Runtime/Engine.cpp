//===- Engine.cpp - Loading a plan into memory and running its programs ---===//
#include "Engine.h"

#include "Trace.h"

#include <algorithm>

namespace mega::rt {

namespace {

/// A kernel event's args: the instruction's first integer attributes (a
/// MatMul's shape, transposes and epilogue; check_tools.py breakdown
/// groups the MatMuls by them).
std::string traceArgs(const plan::Instr &in) {
  constexpr size_t kMaxAttrs = 16;
  std::string out = "{\"i\":[";
  for (size_t k = 0; k < in.i.size() && k < kMaxAttrs; ++k) {
    if (k)
      out += ',';
    out += std::to_string(in.i[k]);
  }
  return out + "]}";
}

/// Which persistents this process allocates. Without a pipeline: all of
/// them. On pipeline rank r: those that a program this rank runs (a stage
/// s with s mod pp == r, or its optimizer) references; one that no program
/// of `device` references stays on rank 0, so that checkpoints still find it.
std::vector<bool> residentPersistents(const plan::Plan &plan,
                                      const std::string &device,
                                      Communicator &comm) {
  if (plan.schedule.empty())
    return {};
  int64_t pp = std::max<int64_t>(1, plan.getInt("pp", 1));
  int rank = comm.group(plan::ParallelGroup::Pipeline).rank;
  std::vector<bool> mine(plan.persistents.size(), false),
      used(plan.persistents.size(), false);
  for (const plan::Program &p : plan.programs) {
    if (p.target != device || p.stage < 0)
      continue;
    for (const plan::Value &v : p.values)
      if (v.space == plan::Space::Persistent) {
        used[size_t(v.index)] = true;
        if (p.stage % pp == rank)
          mine[size_t(v.index)] = true;
      }
  }
  for (size_t k = 0; k < mine.size(); ++k)
    if (!used[k] && rank == 0)
      mine[k] = true;
  return mine;
}

/// The data-parallel gradient buckets of the programs of `device`: the
/// persistents each AllReduceWait reduces, in its order, when they are whole
/// f32 persistents (a view, a persistent in two buckets or one with a tail
/// leaves its bucket out: the reducer then packs it). Memory places each
/// bucket's gradients back to back, so the bucket is all-reduced in place.
std::vector<std::vector<size_t>> bucketGroups(const plan::Plan &plan,
                                              const std::string &device,
                                              const std::vector<bool> &mine) {
  std::vector<std::vector<size_t>> groups;
  std::vector<bool> taken(plan.persistents.size(), false);
  for (const plan::Program &p : plan.programs) {
    if (p.target != device)
      continue;
    for (const plan::Instr &in : p.instrs) {
      if (in.op != plan::Op::AllReduceWait)
        continue;
      std::vector<size_t> group;
      bool whole = true;
      for (int32_t v : in.inputs) {
        const plan::Value &val = p.values[size_t(v)];
        size_t k = size_t(val.index);
        whole = whole && val.space == plan::Space::Persistent &&
                val.offset == 0 && val.dtype == plan::DType::F32 &&
                k < taken.size() && !taken[k] && (mine.empty() || mine[k]) &&
                plan.persistents[k].dtype == plan::DType::F32 &&
                plan.persistents[k].tailBytes == 0 &&
                val.numel() == plan.persistents[k].numel();
        if (whole && std::find(group.begin(), group.end(), k) != group.end())
          whole = false;
        group.push_back(k);
      }
      if (!whole)
        continue;
      for (size_t k : group)
        taken[k] = true;
      groups.push_back(std::move(group));
    }
  }
  return groups;
}

} // namespace

ProgramRunner::ProgramRunner(const plan::Program &program, Memory &memory,
                             Backend &backend, Communicator &comm,
                             void *arena, BucketReducer *reducer)
    : program_(program), backend_(backend), comm_(comm), arena_(arena),
      reducer_(reducer) {
  for (const plan::Port &p : program.inputs)
    inputs_.emplace_back(backend, size_t(p.bytes()));
  for (const plan::Port &p : program.outputs)
    outputs_.emplace_back(backend, size_t(p.bytes()));

  // plan::validate (run by readPlanFile) has already proved every view lies
  // inside its buffer, so resolving is pointer arithmetic.
  auto resolve = [&](int32_t v) {
    const plan::Value &val = program.values[size_t(v)];
    char *base = nullptr;
    switch (val.space) {
    case plan::Space::Arena:
      base = static_cast<char *>(arena_);
      break;
    case plan::Space::Persistent:
      base = static_cast<char *>(memory.data(size_t(val.index)));
      break;
    case plan::Space::Input:
      base = static_cast<char *>(inputs_[size_t(val.index)].data());
      break;
    case plan::Space::Output:
      base = static_cast<char *>(outputs_[size_t(val.index)].data());
      break;
    }
    TensorRef ref;
    ref.data = base + val.offset;
    ref.value = &val;
    return ref;
  };

  steps_.reserve(program.instrs.size());
  for (size_t k = 0; k < program.instrs.size(); ++k) {
    const plan::Instr &instr = program.instrs[k];
    Step step{&instr, {}, {}, plan::isCollective(instr.op)};
    std::vector<const plan::Value *> ins, outs;
    for (int32_t v : instr.inputs) {
      step.inputs.push_back(resolve(v));
      ins.push_back(step.inputs.back().value);
    }
    for (int32_t v : instr.outputs) {
      step.outputs.push_back(resolve(v));
      outs.push_back(step.outputs.back().value);
    }
    try {
      if (step.collective)
        checkCollective(instr, ins, outs, comm);
      else
        backend.check(instr, ins, outs);
      if (plan::isBucketOp(instr.op)) {
        if (!reducer)
          throw Error("needs the engine's gradient bucket reducer");
        // An AllReduceWait reduces in place: each output is its input's
        // bytes. A ReduceScatterWait's blocks share no byte with the
        // gradients.
        for (size_t j = 0; j < step.outputs.size(); ++j) {
          const char *o = static_cast<const char *>(step.outputs[j].data);
          size_t oBytes = size_t(step.outputs[j].value->bytes());
          if (instr.op == plan::Op::AllReduceWait &&
              step.outputs[j].data != step.inputs[j].data)
            throw Error("output " + std::to_string(j) +
                        " is not its input's bytes (the sum is in place)");
          if (instr.op == plan::Op::ReduceScatterWait)
            for (const TensorRef &in : step.inputs) {
              const char *a = static_cast<const char *>(in.data);
              if (o < a + in.value->bytes() && a < o + oBytes)
                throw Error("output " + std::to_string(j) +
                            " shares bytes with a gradient it is "
                            "reduce-scattered from");
            }
        }
        reducer->declare(instr, step.inputs);
      }
    } catch (const std::exception &e) {
      throw Error("plan program '" + program.name + "' instruction " +
                  std::to_string(k) + " (" + plan::opName(instr.op) +
                  "): " + e.what());
    }
    steps_.push_back(std::move(step));
  }
  // Conservative: one rank (no collective or bucket progress can be hidden
  // in a recording), and every instruction a plain kernel of the backend.
  graphEligible_ = !steps_.empty() && comm.worldSize() == 1;
  for (const Step &s : steps_)
    graphEligible_ = graphEligible_ && !s.collective &&
                     !plan::isBucketOp(s.instr->op) &&
                     backend.capturable(*s.instr);
}

void ProgramRunner::useGraph(
    std::function<void(const std::string &)> notice) {
  graphOn_ = graphEligible_;
  graphNotice_ = std::move(notice);
  lanesOn_ = false;
  if (!graphOn_ || !backend_.prepareSideStream(steps_.size()))
    return;
  // The bytes each launch touches: its inputs read, its outputs read and
  // written (some add into what they hold).
  std::vector<std::vector<Access>> touches(steps_.size());
  std::vector<bool> side(steps_.size());
  for (size_t k = 0; k < steps_.size(); ++k) {
    const Step &s = steps_[k];
    std::vector<const plan::Value *> ins;
    for (const TensorRef &r : s.inputs) {
      touches[k].push_back(
          {static_cast<const char *>(r.data), size_t(r.value->bytes()), false});
      ins.push_back(r.value);
    }
    for (const TensorRef &r : s.outputs)
      touches[k].push_back(
          {static_cast<const char *>(r.data), size_t(r.value->bytes()), true});
    side[k] = backend_.sideLaunch(*s.instr, ins);
  }
  lanes_ = planLanes(touches, side);
  const std::string wrong = checkLanes(touches, lanes_);
  if (!wrong.empty())
    throw Error("plan program '" + program_.name +
                "': its launches over two streams: " + wrong);
  lanesOn_ = lanes_.sideLaunches() > 0;
}

void ProgramRunner::runSteps() {
  const bool lanes = lanesOn_ && recording_;
  for (size_t k = 0; k < steps_.size(); ++k) {
    if (lanes)
      backend_.setLane(lanes_.steps[k].lane, lanes_.steps[k].wait);
    launch(steps_[k]);
    if (lanes && lanes_.steps[k].record)
      backend_.markLane(long(k));
    // Started gradient buckets advance between the kernels.
    if (reducer_ && reducer_->inFlight())
      comm_.progress();
  }
  if (lanes)
    backend_.setLane(0, lanes_.join);
}

void ProgramRunner::runGraph() {
  if (!graphWarm_) {
    graphWarm_ = true;
    runSteps();
    return;
  }
  if (graph_ && graph_->replay())
    return;
  // Not recorded yet, or memory it points into has moved: record now.
  graph_.reset();
  std::string why;
  graph_ = backend_.capture(
      [this] {
        recording_ = true;
        struct Off {
          bool &on;
          ~Off() { on = false; }
        } off{recording_};
        runSteps();
      },
      why);
  if (!graph_) {
    graphOn_ = false;
    if (graphNotice_)
      graphNotice_("program " + program_.name + " runs kernel by kernel: " +
                   why);
    runSteps(); // the recording ran nothing
    return;
  }
  if (!graph_->replay())
    throw Error("plan program '" + program_.name +
                "': its launch recording went stale while it was made");
  if (!graphTold_ && graphNotice_) {
    graphTold_ = true;
    std::string what = "program " + program_.name + " replayed as a " +
                       graph_->kind() + ": " +
                       std::to_string(graph_->kernels()) + " kernels";
    if (graph_->otherNodes())
      what += " and " + std::to_string(graph_->otherNodes()) +
              " copies or fills";
    const std::string details = graph_->details();
    if (!details.empty())
      what += " (" + details + ")";
    if (lanesOn_)
      what += "; " + std::to_string(lanes_.sideLaunches()) + " of " +
              std::to_string(steps_.size()) + " launches on the side stream, " +
              std::to_string(lanes_.waits()) + " waits between the two";
    graphNotice_(what);
  }
}

int ProgramRunner::portIndex(const std::vector<plan::Port> &ports,
                             const std::string &name) const {
  for (size_t k = 0; k < ports.size(); ++k)
    if (ports[k].name == name)
      return int(k);
  return -1;
}

const plan::Port *ProgramRunner::inputPort(const std::string &name) const {
  int k = portIndex(program_.inputs, name);
  return k < 0 ? nullptr : &program_.inputs[size_t(k)];
}

const plan::Port *ProgramRunner::outputPort(const std::string &name) const {
  int k = portIndex(program_.outputs, name);
  return k < 0 ? nullptr : &program_.outputs[size_t(k)];
}

const plan::Port &ProgramRunner::requireInput(const std::string &name) const {
  if (const plan::Port *p = inputPort(name))
    return *p;
  throw Error("plan program '" + program_.name + "' has no input '" + name +
              "'");
}

const plan::Port &ProgramRunner::requireOutput(const std::string &name) const {
  if (const plan::Port *p = outputPort(name))
    return *p;
  throw Error("plan program '" + program_.name + "' has no output '" + name +
              "'");
}

DeviceBuffer &ProgramRunner::inputBuffer(const std::string &name,
                                         size_t bytes) {
  int k = portIndex(program_.inputs, name);
  if (k < 0)
    throw Error("plan program '" + program_.name + "' has no input '" + name +
                "'");
  if (bytes != inputs_[size_t(k)].bytes())
    throw Error("plan program '" + program_.name + "' input '" + name +
                "' takes " + std::to_string(inputs_[size_t(k)].bytes()) +
                " bytes, got " + std::to_string(bytes));
  return inputs_[size_t(k)];
}

const DeviceBuffer &ProgramRunner::outputBuffer(const std::string &name) const {
  int k = portIndex(program_.outputs, name);
  if (k < 0)
    throw Error("plan program '" + program_.name + "' has no output '" + name +
                "'");
  return outputs_[size_t(k)];
}

void ProgramRunner::setInput(const std::string &name, const void *src,
                             size_t bytes) {
  backend_.copyToDevice(inputBuffer(name, bytes).data(), src, bytes);
}

void ProgramRunner::setInputOnDevice(const std::string &name, const void *src,
                                     size_t bytes) {
  backend_.copyOnDevice(inputBuffer(name, bytes).data(), src, bytes);
}

void ProgramRunner::getOutput(const std::string &name, void *dst, size_t bytes,
                              size_t offset) const {
  const DeviceBuffer &buf = outputBuffer(name);
  if (offset > buf.bytes() || bytes > buf.bytes() - offset)
    throw Error("plan program '" + program_.name + "' output '" + name +
                "' is smaller than the bytes asked for");
  backend_.copyToHost(dst, static_cast<const char *>(buf.data()) + offset,
                      bytes);
}

void ProgramRunner::copyOutputOnDevice(const std::string &name,
                                       void *dst) const {
  const DeviceBuffer &buf = outputBuffer(name);
  backend_.copyOnDevice(dst, buf.data(), buf.bytes());
}

void ProgramRunner::run(Tracer *tracer) {
  // Timing each kernel needs each kernel launched on its own.
  const bool graph = graphOn_ && !(tracer && tracer->kernels());
  if (!tracer) {
    if (graph)
      runGraph();
    else
      runSteps();
    return;
  }
  int64_t start = tracer->now();
  if (graph) {
    runGraph();
  } else if (tracer->kernels()) {
    for (const Step &s : steps_) {
      int64_t t0 = tracer->now();
      launch(s);
      if (reducer_ && reducer_->inFlight())
        comm_.progress();
      backend_.synchronize();
      tracer->complete(plan::opName(s.instr->op), "kernel", Tracer::Kernels, t0,
                       tracer->now(), traceArgs(*s.instr));
    }
  } else {
    runSteps();
  }
  backend_.synchronize();
  tracer->complete(program_.name, "program", Tracer::Programs, start,
                   tracer->now());
}

Engine::Engine(const plan::Plan &plan, Backend &backend,
               const std::string &device, Communicator *comm,
               const std::vector<std::string> &skip)
    : plan_(plan), backend_(backend),
      ownComm_(comm ? nullptr : createSingleProcessCommunicator()),
      comm_(comm ? comm : ownComm_.get()),
      memory_(plan, backend, comm_, residentPersistents(plan, device, *comm_),
              bucketGroups(plan, device,
                           residentPersistents(plan, device, *comm_))),
      buckets_(std::make_unique<BucketReducer>(backend, *comm_)) {
  std::string targets;
  int64_t pp = std::max<int64_t>(1, plan.getInt("pp", 1));
  int pipelineRank = plan.schedule.empty()
                         ? 0
                         : comm_->group(plan::ParallelGroup::Pipeline).rank;
  if (plan.schedule.empty())
    pp = 1 << 30; // not pipelined: stage 0 only
  std::vector<const plan::Program *> mine;
  size_t arenaBytes = 0;
  for (const plan::Program &p : plan.programs) {
    if (p.target != device) {
      if (targets.find(p.target) == std::string::npos)
        targets += (targets.empty() ? "" : ", ") + p.target;
      continue;
    }
    // Pipeline stages: this rank runs the programs of its stages (virtual
    // stage s lives on pipeline rank s mod pp; the optimizer's stage is the
    // rank); without a pipeline only stage 0 exists.
    if (p.stage < 0 || p.stage % pp != pipelineRank)
      continue;
    if (std::find(skip.begin(), skip.end(), p.name) != skip.end())
      continue;
    mine.push_back(&p);
    arenaBytes = std::max(arenaBytes, size_t(p.arenaBytes));
  }
  // Programs run one at a time and keep nothing in their arena between runs
  // (what outlives a run is in ports or persistents), so they share one.
  arena_ = DeviceBuffer(backend, arenaBytes);
  for (const plan::Program *p : mine)
    programs_.push_back(std::make_unique<ProgramRunner>(
        *p, memory_, backend, *comm_, arena_.data(), buckets_.get()));
  buckets_->checkPairs();
  if (programs_.empty() && !plan.programs.empty())
    throw Error("the plan has no programs for device '" + device +
                "' (it was compiled for " + targets +
                "; use --device or recompile with --target " + device + ")");
}

Engine::~Engine() = default;

size_t ProgramRunner::deviceBytes() const {
  size_t n = 0;
  for (const DeviceBuffer &b : inputs_)
    n += b.bytes();
  for (const DeviceBuffer &b : outputs_)
    n += b.bytes();
  return n;
}

Engine::PlannedBytes Engine::plannedBytes() const {
  PlannedBytes b;
  b.persistents = memory_.allocatedBytes();
  b.arena = arena_.bytes();
  for (const auto &p : programs_)
    b.ports += p->deviceBytes();
  return b;
}

bool Engine::has(const std::string &name) const {
  for (const auto &p : programs_)
    if (p->name() == name)
      return true;
  return false;
}

ProgramRunner *Engine::find(const std::string &name, int stage) {
  for (const auto &p : programs_)
    if (p->name() == name && p->program().stage == stage)
      return p.get();
  return nullptr;
}

void Engine::useGraphs(
    const std::function<void(const std::string &)> &notice) {
  for (const auto &p : programs_)
    p->useGraph(notice);
}

ProgramRunner &Engine::program(const std::string &name) {
  for (const auto &p : programs_)
    if (p->name() == name)
      return *p;
  throw Error("the plan has no '" + name + "' program");
}

} // namespace mega::rt

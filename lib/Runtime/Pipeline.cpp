//===- Pipeline.cpp - Running a pipeline rank's schedule -----------------===//
#include "Pipeline.h"

#include "Trace.h"

#include <algorithm>

namespace mega::rt {

namespace {

const plan::Program *findProgram(const plan::Plan &plan,
                                 const std::string &name, int stage) {
  for (const plan::Program &p : plan.programs)
    if (p.name == name && p.stage == stage)
      return &p;
  return nullptr;
}

const plan::Port *findPort(const std::vector<plan::Port> &ports,
                           const std::string &name) {
  for (const plan::Port &p : ports)
    if (p.name == name)
      return &p;
  return nullptr;
}

bool isPipePort(const std::string &name) { return name.rfind("pipe.", 0) == 0; }

} // namespace

size_t PipelineExecutor::Buffers::bytes() const {
  size_t n = 0;
  for (const auto &[name, b] : ports)
    n += b.size();
  for (const auto &[name, b] : device)
    n += b.bytes();
  return n;
}

PipelineExecutor::PipelineExecutor(Engine &engine, Tracer *tracer)
    : engine_(engine), comm_(engine.comm()),
      group_(comm_.group(plan::ParallelGroup::Pipeline)), tracer_(tracer) {
  const plan::Plan &plan = engine.plan();
  pp_ = int(plan.getInt("pp", 1));
  vpp_ = int(plan.getInt("vpp", 1));
  stages_ = pp_ * vpp_;
  microbatches_ = plan.getInt("num_microbatches", 1);
  micro_ = plan.getInt("micro_batch_size", 1);
  seq_ = plan.getInt("seq", 0);
  if (group_.size != pp_)
    throw Error("the plan has pp=" + std::to_string(pp_) +
                " but this run's pipeline group has " +
                std::to_string(group_.size) + " ranks");
  rank_ = group_.rank;
  steps_ = &plan.schedule.at(size_t(rank_));
  optimizer_ = engine.find("optimizer", rank_);
  if (!optimizer_)
    throw Error("the plan has no optimizer program for pipeline rank " +
                std::to_string(rank_));

  for (int c = 0; c < vpp_; ++c) {
    Chunk ch;
    ch.stage = c * pp_ + rank_;
    ch.forward = engine.find("forward", ch.stage);
    ch.backward = engine.find("backward", ch.stage);
    if (!ch.forward || !ch.backward)
      throw Error("the plan has no forward and backward program for "
                  "pipeline stage " + std::to_string(ch.stage));
    const plan::Program &f = ch.forward->program();
    const plan::Program &b = ch.backward->program();
    const plan::Program *prevF =
        ch.stage > 0 ? findProgram(plan, "forward", ch.stage - 1) : nullptr;
    const plan::Program *nextF = ch.stage + 1 < stages_
                                     ? findProgram(plan, "forward", ch.stage + 1)
                                     : nullptr;
    const plan::Program *nextB =
        ch.stage + 1 < stages_ ? findProgram(plan, "backward", ch.stage + 1)
                               : nullptr;
    const plan::Program *prevB =
        ch.stage > 0 ? findProgram(plan, "backward", ch.stage - 1) : nullptr;
    auto need = [&](const plan::Program *p, const std::string &port,
                    const char *what) {
      if (!p || !findPort(p->outputs, port))
        throw Error("pipeline stage " + std::to_string(ch.stage) + ": " +
                    what + " port '" + port + "' has no sender");
    };
    for (const plan::Port &in : f.inputs) {
      if (in.name == "tokens")
        ch.tokens = true;
      else if (in.name == "targets")
        ch.targets = true;
      else if (isPipePort(in.name)) {
        need(prevF, in.name, "forward input");
        ch.recvForward.push_back({in.name, size_t(in.bytes())});
      } else
        throw Error("pipeline forward program of stage " +
                    std::to_string(ch.stage) + " has an unknown input '" +
                    in.name + "'");
    }
    for (const plan::Port &out : f.outputs)
      if (nextF && findPort(nextF->inputs, out.name))
        ch.sendForward.push_back({out.name, size_t(out.bytes())});
    for (const plan::Port &in : b.inputs) {
      if (in.name == "tokens")
        ch.tokens = true;
      else if (in.name == "targets")
        ch.targets = true;
      if (findPort(f.inputs, in.name) || findPort(f.outputs, in.name)) {
        ch.stash.push_back({in.name, size_t(in.bytes())});
      } else {
        need(nextB, in.name, "backward input");
        ch.recvBackward.push_back({in.name, size_t(in.bytes())});
      }
    }
    for (const plan::Port &out : b.outputs)
      if (prevB && findPort(prevB->inputs, out.name))
        ch.sendBackward.push_back({out.name, size_t(out.bytes())});
    if (ch.stage == stages_ - 1) {
      if (!findPort(f.outputs, "loss"))
        throw Error("the last pipeline stage's forward has no 'loss' output");
      lastStage_ = true;
    }
    maxPorts_ = std::max({maxPorts_, ch.recvForward.size(),
                          ch.recvBackward.size()});
    chunks_.push_back(std::move(ch));
  }
  // Ports per transfer are the same on both sides: the largest of any stage.
  for (const plan::Program &p : plan.programs)
    maxPorts_ = std::max(maxPorts_, p.inputs.size());
  if (int64_t(tag(microbatches_ - 1, stages_ - 1, 1, maxPorts_ - 1)) > 32767)
    throw Error("pipeline: " + std::to_string(microbatches_) +
                " micro-batches x " + std::to_string(stages_) +
                " stages need more message tags than MPI guarantees (32767)");
  if (seq_ <= 0)
    throw Error("pipelined plan has no 'seq' in its config");
  tokens_.resize(size_t(micro_ * seq_));
  targets_.resize(size_t(micro_ * seq_));

  // Which ranks hold each persistent: every rank tells its residency (the
  // engine allocated what this rank's programs reference).
  const Memory &mem = engine.memory();
  const size_t n = mem.count();
  std::vector<float> mine(n), all(n * size_t(pp_));
  for (size_t k = 0; k < n; ++k)
    mine[k] = mem.resident(k) ? 1.0f : 0.0f;
  comm_.allGather(group_, mine.data(), all.data(), n);
  holders_.assign(n, {});
  for (int r = 0; r < pp_; ++r)
    for (size_t k = 0; k < n; ++k)
      if (all[size_t(r) * n + k] != 0.0f)
        holders_[k].push_back(r);
  for (size_t k = 0; k < n; ++k)
    if (holders_[k].empty())
      throw Error("pipeline: persistent '" + mem.info(k).name +
                  "' is on no pipeline rank");
}

int PipelineExecutor::tag(int64_t mb, int stage, int dir, size_t port) const {
  return int(((mb * stages_ + stage) * 2 + dir) * int64_t(maxPorts_) +
             int64_t(port));
}

std::string PipelineExecutor::stagesText() const {
  std::string s;
  for (const Chunk &c : chunks_)
    s += (s.empty() ? "" : ", ") + std::to_string(c.stage);
  return (chunks_.size() > 1 ? "stages " : "stage ") + s;
}

DeviceBuffer PipelineExecutor::take(size_t bytes) {
  auto it = pool_.find(bytes);
  if (it == pool_.end())
    return DeviceBuffer(engine_.backend(), bytes);
  DeviceBuffer b = std::move(it->second);
  pool_.erase(it);
  return b;
}

void PipelineExecutor::feed(ProgramRunner &p, const Buffers &from) {
  for (const plan::Port &in : p.program().inputs) {
    if (auto it = from.device.find(in.name); it != from.device.end()) {
      p.setInputOnDevice(in.name, it->second.data(), it->second.bytes());
      continue;
    }
    // A backward reads the micro-batch's tokens from its stash.
    if (auto it = from.ports.find(in.name); it != from.ports.end()) {
      p.setInput(in.name, it->second.data(), it->second.size());
      continue;
    }
    if (in.name == "tokens") {
      p.setInput("tokens", tokens_.data(), tokens_.size() * 4);
      continue;
    }
    if (in.name == "targets") {
      p.setInput("targets", targets_.data(), targets_.size() * 4);
      continue;
    }
    auto it = from.ports.find(in.name);
    if (it == from.ports.end())
      throw Error("pipeline: no data for input '" + in.name + "' of " +
                  p.name() + " stage " + std::to_string(p.program().stage));
    p.setInput(in.name, it->second.data(), it->second.size());
  }
}

void PipelineExecutor::runForward(const Fetch &fetch, int64_t mb, int c,
                                  double &loss) {
  Chunk &ch = chunks_[size_t(c)];
  auto key = std::make_pair(mb, c);
  Buffers in = std::move(received_[key]);
  received_.erase(key);
  if (ch.tokens || ch.targets)
    fetch(mb, tokens_.data(), targets_.data());
  // The step's event covers its port copies too (the stash and the outgoing
  // activations are this rank's work, not waiting).
  TraceScope t(tracer_,
               "F" + std::to_string(mb) +
                   (vpp_ > 1 ? "." + std::to_string(c) : std::string()),
               "forward", Tracer::Programs);
  feed(*ch.forward, in);
  ch.forward->run(nullptr);
  if (ch.stage == stages_ - 1)
    loss += double(ch.forward->getScalar("loss"));
  // The stash: what backward reads of this forward's inputs and outputs.
  Buffers &stash = stash_[key];
  for (const Transfer &t : ch.stash) {
    auto received = in.ports.find(t.port);
    if (t.port != "tokens" && t.port != "targets" &&
        received == in.ports.end()) {
      // The forward's own output: kept on the device, no host round trip.
      DeviceBuffer d = take(t.bytes);
      ch.forward->copyOutputOnDevice(t.port, d.data());
      stashBytes_ += int64_t(d.bytes());
      stash.device[t.port] = std::move(d);
      continue;
    }
    std::vector<char> &b = stash.ports[t.port];
    if (t.port == "tokens")
      b.assign(reinterpret_cast<const char *>(tokens_.data()),
               reinterpret_cast<const char *>(tokens_.data() + tokens_.size()));
    else if (t.port == "targets")
      b.assign(reinterpret_cast<const char *>(targets_.data()),
               reinterpret_cast<const char *>(targets_.data() +
                                              targets_.size()));
    else
      b = received->second;
    stashBytes_ += int64_t(b.size());
  }
  peakStashed_ = std::max(peakStashed_, int64_t(stash_.size()));
  peakBytes_ = std::max(peakBytes_, stashBytes_);
  Buffers &out = toSend_[key];
  for (const Transfer &t : ch.sendForward) {
    std::vector<char> &b = out.ports[t.port];
    b.resize(t.bytes);
    ch.forward->getOutput(t.port, b.data(), b.size());
  }
}

void PipelineExecutor::runBackward(int64_t mb, int c) {
  Chunk &ch = chunks_[size_t(c)];
  auto key = std::make_pair(mb, c);
  Buffers in = std::move(received_[key]);
  received_.erase(key);
  auto st = stash_.find(key);
  if (st == stash_.end())
    throw Error("pipeline: backward of micro-batch " + std::to_string(mb) +
                " before its forward");
  stashBytes_ -= int64_t(st->second.bytes()); // before its buffers move
  for (auto &[name, b] : st->second.ports)
    in.ports[name] = std::move(b);
  for (auto &[name, b] : st->second.device)
    in.device[name] = std::move(b);
  stash_.erase(st);
  TraceScope t(tracer_,
               "B" + std::to_string(mb) +
                   (vpp_ > 1 ? "." + std::to_string(c) : std::string()),
               "backward", Tracer::Programs);
  feed(*ch.backward, in);
  // Fed (the copies are ordered before anything that reuses the buffers):
  // the stash's device buffers go back to the pool.
  for (auto &[name, b] : in.device)
    pool_.emplace(b.bytes(), std::move(b));
  in.device.clear();
  // The data-parallel buckets start during the last micro-batch's backward.
  engine_.buckets().setStarting(startBuckets_ && mb + 1 == microbatches_);
  ch.backward->run(nullptr);
  engine_.buckets().setStarting(false);
  Buffers &out = toSend_[std::make_pair(mb, c + vpp_)];
  for (const Transfer &t : ch.sendBackward) {
    std::vector<char> &b = out.ports[t.port];
    b.resize(t.bytes);
    ch.backward->getOutput(t.port, b.data(), b.size());
  }
}

double PipelineExecutor::runMicrobatches(const Fetch &fetch,
                                         bool startBuckets) {
  startBuckets_ = startBuckets;
  double loss = 0;
  int next = (rank_ + 1) % pp_, prev = (rank_ + pp_ - 1) % pp_;
  for (const plan::ScheduleStep &st : *steps_) {
    int c = st.chunk;
    int64_t mb = st.microbatch;
    const Chunk &ch = chunks_.at(size_t(c));
    auto key = std::make_pair(mb, c);
    switch (st.kind) {
    case plan::StepKind::RecvForward:
    case plan::StepKind::RecvBackward: {
      bool fwd = st.kind == plan::StepKind::RecvForward;
      TraceScope t(tracer_, fwd ? "recv F" : "recv B", "recv", Tracer::Host);
      Buffers &b = received_[key];
      const auto &ports = fwd ? ch.recvForward : ch.recvBackward;
      for (size_t j = 0; j < ports.size(); ++j) {
        std::vector<char> &buf = b.ports[ports[j].port];
        buf.resize(ports[j].bytes);
        comm_.recv(group_, fwd ? prev : next, tag(mb, ch.stage, fwd ? 0 : 1, j),
                   buf.data(), buf.size());
      }
      break;
    }
    case plan::StepKind::Forward:
      runForward(fetch, mb, c, loss);
      break;
    case plan::StepKind::Backward:
      runBackward(mb, c);
      break;
    case plan::StepKind::SendForward:
    case plan::StepKind::SendBackward: {
      bool fwd = st.kind == plan::StepKind::SendForward;
      TraceScope t(tracer_, fwd ? "send F" : "send B", "send", Tracer::Host);
      auto k = std::make_pair(mb, fwd ? c : c + vpp_);
      Buffers &b = toSend_[k];
      const auto &ports = fwd ? ch.sendForward : ch.sendBackward;
      // The receiver's ports are in its own input order; match by name.
      const plan::Plan &plan = engine_.plan();
      int peerStage = fwd ? ch.stage + 1 : ch.stage - 1;
      const plan::Program *peer =
          findProgram(plan, fwd ? "forward" : "backward", peerStage);
      std::vector<std::string> order;
      for (const plan::Port &in : peer->inputs)
        for (const Transfer &t2 : ports)
          if (t2.port == in.name)
            order.push_back(in.name);
      for (size_t j = 0; j < order.size(); ++j) {
        sending_.push_back(std::move(b.ports[order[j]]));
        const std::vector<char> &buf = sending_.back();
        comm_.isend(group_, fwd ? next : prev,
                    tag(mb, peerStage, fwd ? 0 : 1, j), buf.data(),
                    buf.size());
      }
      toSend_.erase(k);
      break;
    }
    case plan::StepKind::Optimizer:
      return loss;
    }
  }
  return loss;
}

double PipelineExecutor::runForwardOnly(const Fetch &fetch) {
  // Stages run one after another: the receiver of stage s+1 is blocked in
  // its receive for exactly that stage (its earlier stages are done), so
  // blocking sends cannot deadlock, with or without interleaving.
  double loss = 0;
  int next = (rank_ + 1) % pp_, prev = (rank_ + pp_ - 1) % pp_;
  const plan::Plan &plan = engine_.plan();
  for (Chunk &ch : chunks_) {
    Buffers in;
    for (size_t j = 0; j < ch.recvForward.size(); ++j) {
      std::vector<char> &buf = in.ports[ch.recvForward[j].port];
      buf.resize(ch.recvForward[j].bytes);
      comm_.recv(group_, prev, tag(0, ch.stage, 0, j), buf.data(), buf.size());
    }
    if (ch.tokens || ch.targets)
      fetch(0, tokens_.data(), targets_.data());
    {
      TraceScope t(tracer_, "eval F" + std::to_string(ch.stage), "forward",
                   Tracer::Programs);
      feed(*ch.forward, in);
      ch.forward->run(nullptr);
    }
    if (ch.stage == stages_ - 1) {
      loss += double(ch.forward->getScalar("loss"));
      continue;
    }
    // In the receiver's input order, as runMicrobatches sends.
    const plan::Program *peer = findProgram(plan, "forward", ch.stage + 1);
    size_t j = 0;
    for (const plan::Port &port : peer->inputs)
      for (const Transfer &t : ch.sendForward)
        if (t.port == port.name) {
          std::vector<char> buf(t.bytes);
          ch.forward->getOutput(t.port, buf.data(), buf.size());
          comm_.send(group_, next, tag(0, ch.stage + 1, 0, j++), buf.data(),
                     buf.size());
        }
  }
  return loss;
}

double PipelineExecutor::runOptimizer(float lr, float step) {
  {
    TraceScope t(tracer_, "wait sends", "wait", Tracer::Host);
    comm_.waitSends();
    sending_.clear();
  }
  if (!stash_.empty() || !received_.empty())
    throw Error("pipeline: the schedule left micro-batches unfinished");
  TraceScope t(tracer_, "optimizer", "optimizer", Tracer::Programs);
  optimizer_->setScalar("lr", lr);
  if (optimizer_->inputPort("step"))
    optimizer_->setScalar("step", step);
  optimizer_->run(nullptr);
  return optimizer_->outputPort("grad_norm")
             ? double(optimizer_->getScalar("grad_norm"))
             : 0.0;
}

void PipelineExecutor::collect(plan::Role role) {
  // Rank 0 receives, in plan order, each tensor it does not hold from the
  // first rank that does (the one whose optimizer updates it; the tied
  // embedding is on rank 0 already). Blocking sends cannot deadlock: every
  // rank walks the same order and rank 0 takes the messages one by one.
  Memory &mem = engine_.memory();
  std::vector<char> buf;
  for (size_t k : mem.withRole(role)) {
    const std::vector<int> &h = holders_[k];
    if (h.front() == 0)
      continue;
    if (rank_ == h.front() || rank_ == 0)
      buf.resize(mem.bytes(k));
    if (rank_ == h.front()) {
      mem.toHost(k, buf.data());
      comm_.send(group_, 0, kCollectTag, buf.data(), buf.size());
    } else if (rank_ == 0) {
      comm_.recv(group_, h.front(), kCollectTag, buf.data(), buf.size());
      mem.fromHost(k, buf.data()); // a host copy
    }
  }
}

std::vector<std::vector<float>> PipelineExecutor::sumGrads() {
  // Rank 0 gets each gradient summed over the ranks that hold it (the tied
  // embedding's two parts meet); it keeps its own local values to restore.
  Memory &mem = engine_.memory();
  std::vector<std::vector<float>> local;
  std::vector<float> part;
  for (size_t k : mem.withRole(plan::Role::Grad)) {
    std::vector<float> &mineK = local.emplace_back();
    const std::vector<int> &h = holders_[k];
    bool held = std::find(h.begin(), h.end(), rank_) != h.end();
    if ((!held && rank_ != 0) || h == std::vector<int>{0})
      continue; // not taking part, or rank 0's own already
    if (mem.info(k).dtype != plan::DType::F32)
      throw Error("--dump-grads with a pipeline needs f32 gradients");
    const size_t words = mem.bytes(k) / 4;
    if (rank_ != 0) {
      part.resize(words);
      mem.toHost(k, part.data());
      comm_.send(group_, 0, kCollectTag, part.data(), words * 4);
      continue;
    }
    std::vector<float> sum(words, 0.0f);
    if (held) {
      mineK.resize(words);
      mem.toHost(k, mineK.data());
      sum = mineK;
    }
    for (int r : h) {
      if (r == 0)
        continue;
      part.resize(words);
      comm_.recv(group_, r, kCollectTag, part.data(), words * 4);
      for (size_t e = 0; e < words; ++e)
        sum[e] += part[e];
    }
    mem.fromHost(k, sum.data()); // the device values, or a host copy
  }
  return local;
}

void PipelineExecutor::restore(const std::vector<std::vector<float>> &local) {
  Memory &mem = engine_.memory();
  std::vector<size_t> grads = mem.withRole(plan::Role::Grad);
  for (size_t k = 0; k < grads.size(); ++k)
    if (!local[k].empty())
      mem.fromHost(grads[k], local[k].data());
  mem.dropHostCopies();
}

} // namespace mega::rt

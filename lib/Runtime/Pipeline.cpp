//===- Pipeline.cpp - Running a pipeline rank's schedule -----------------===//
#include "Pipeline.h"

#include "PipelineTraffic.h"
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

/// What forward `f` receives from the stage before: its pipe inputs, in
/// input order (the order of the transfers on both ends).
std::vector<const plan::Port *> forwardReceives(const plan::Program &f) {
  std::vector<const plan::Port *> r;
  for (const plan::Port &in : f.inputs)
    if (isPipePort(in.name))
      r.push_back(&in);
  return r;
}

/// What backward `b` receives from the stage after: its inputs that its
/// forward `f` neither reads nor writes (those are stashed), in input order.
std::vector<const plan::Port *> backwardReceives(const plan::Program &f,
                                                 const plan::Program &b) {
  std::vector<const plan::Port *> r;
  for (const plan::Port &in : b.inputs)
    if (!findPort(f.inputs, in.name) && !findPort(f.outputs, in.name))
      r.push_back(&in);
  return r;
}

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
  if (plan.schedule.size() != size_t(pp_))
    throw Error("the plan's schedule has steps for " +
                std::to_string(plan.schedule.size()) + " pipeline ranks, not " +
                std::to_string(pp_));
  steps_ = &plan.schedule[size_t(rank_)];
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
    // A transfer's ports, in the receiver's order, each written by the
    // sending program with the size the receiver reads.
    auto transfers = [&](const std::vector<const plan::Port *> &ports,
                         const plan::Program *sender, int receiver,
                         const char *what) {
      std::vector<Transfer> out;
      for (const plan::Port *in : ports) {
        const plan::Port *from =
            sender ? findPort(sender->outputs, in->name) : nullptr;
        if (!from || from->bytes() != in->bytes())
          throw Error("pipeline stage " + std::to_string(receiver) + ": " +
                      what + " port '" + in->name + "' has no sender" +
                      (from ? " of its size" : ""));
        out.push_back({in->name, size_t(in->bytes())});
      }
      return out;
    };
    for (const plan::Port &in : f.inputs) {
      if (in.name == "tokens")
        ch.tokens = true;
      else if (in.name == "targets")
        ch.targets = true;
      else if (!isPipePort(in.name))
        throw Error("pipeline forward program of stage " +
                    std::to_string(ch.stage) + " has an unknown input '" +
                    in.name + "'");
    }
    for (const plan::Port &in : b.inputs) {
      if (in.name == "tokens")
        ch.tokens = true;
      else if (in.name == "targets")
        ch.targets = true;
      if (findPort(f.inputs, in.name) || findPort(f.outputs, in.name))
        ch.stash.push_back({in.name, size_t(in.bytes())});
    }
    const int s = ch.stage;
    ch.recvForward = transfers(forwardReceives(f), prevF, s, "forward input");
    ch.recvBackward =
        transfers(backwardReceives(f, b), nextB, s, "backward input");
    // What this stage sends, as the receiving stage's programs see it.
    if (nextF)
      ch.sendForward =
          transfers(forwardReceives(*nextF), &f, s + 1, "forward input");
    if (prevF && prevB)
      ch.sendBackward = transfers(backwardReceives(*prevF, *prevB), &b, s - 1,
                                  "backward input");
    if (ch.stage == stages_ - 1) {
      if (!findPort(f.outputs, "loss"))
        throw Error("the last pipeline stage's forward has no 'loss' output");
      lastStage_ = true;
    }
    chunks_.push_back(std::move(ch));
  }
  // Every rank checks the whole plan's traffic, so all refuse alike.
  std::vector<std::vector<plan::ScheduleStep>> eval;
  for (int r = 0; r < pp_; ++r)
    eval.push_back(evalSteps(r, pp_, vpp_));
  evalSteps_ = eval[size_t(rank_)];
  for (const auto &schedule : {plan.schedule, eval}) {
    std::string why = checkPipeExchanges(pipeExchanges(schedule, pp_, vpp_));
    if (!why.empty())
      throw Error(why);
  }
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

void PipelineExecutor::give(DeviceBuffer b) {
  size_t bytes = b.bytes();
  pool_.emplace(bytes, std::move(b));
}

void PipelineExecutor::feed(ProgramRunner &p, const Buffers &from) {
  for (const plan::Port &in : p.program().inputs) {
    if (auto it = from.device.find(in.name); it != from.device.end())
      p.setInputOnDevice(in.name, it->second.data(), it->second.bytes());
    else if (auto h = from.ports.find(in.name); h != from.ports.end())
      p.setInput(in.name, h->second.data(), h->second.size()); // stashed
    else if (in.name == "tokens")
      p.setInput("tokens", tokens_.data(), tokens_.size() * 4);
    else if (in.name == "targets")
      p.setInput("targets", targets_.data(), targets_.size() * 4);
    else
      throw Error("pipeline: no data for input '" + in.name + "' of " +
                  p.name() + " stage " + std::to_string(p.program().stage));
  }
}

void PipelineExecutor::keepSends(ProgramRunner &p,
                                 const std::vector<Transfer> &ports,
                                 std::pair<int64_t, int> key) {
  if (ports.empty())
    return;
  Buffers &out = toSend_[key];
  for (const Transfer &t : ports) {
    DeviceBuffer d = take(t.bytes);
    p.copyOutputOnDevice(t.port, d.data());
    out.device[t.port] = std::move(d);
  }
}

void PipelineExecutor::runForward(const Fetch &fetch, int64_t mb, int c,
                                  bool train, double &loss) {
  Chunk &ch = chunks_[size_t(c)];
  auto key = std::make_pair(mb, c);
  Buffers in = std::move(received_[key]);
  received_.erase(key);
  if (ch.tokens || ch.targets)
    fetch(mb, tokens_.data(), targets_.data());
  // The step's event covers its port copies too (the stash and the outgoing
  // activations are this rank's work, not waiting).
  std::string name =
      train ? "F" + std::to_string(mb) +
                  (vpp_ > 1 ? "." + std::to_string(c) : std::string())
            : "eval F" + std::to_string(ch.stage);
  TraceScope t(tracer_, name, "forward", Tracer::Programs);
  feed(*ch.forward, in);
  ch.forward->run(nullptr);
  if (ch.stage == stages_ - 1)
    loss += double(ch.forward->getScalar("loss"));
  if (train) {
    // The stash: what backward reads of this forward's inputs and outputs.
    Buffers &stash = stash_[key];
    for (const Transfer &t : ch.stash) {
      if (t.port == "tokens" || t.port == "targets") {
        const std::vector<int32_t> &v = t.port == "tokens" ? tokens_ : targets_;
        const char *p = reinterpret_cast<const char *>(v.data());
        stash.ports[t.port].assign(p, p + v.size() * 4);
      } else if (auto r = in.device.find(t.port); r != in.device.end()) {
        stash.device[t.port] = std::move(r->second); // as it arrived
        in.device.erase(r);
      } else {
        // The forward's own output, copied on the device.
        DeviceBuffer d = take(t.bytes);
        ch.forward->copyOutputOnDevice(t.port, d.data());
        stash.device[t.port] = std::move(d);
      }
    }
    stashBytes_ += int64_t(stash.bytes());
    peakStashed_ = std::max(peakStashed_, int64_t(stash_.size()));
    peakBytes_ = std::max(peakBytes_, stashBytes_);
  }
  // Fed (copies ordered before anything that reuses the buffers).
  for (auto &[port, b] : in.device)
    give(std::move(b));
  keepSends(*ch.forward, ch.sendForward, key);
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
  for (auto &[name, b] : in.device)
    give(std::move(b));
  in.device.clear();
  // The data-parallel buckets start during the last micro-batch's backward.
  engine_.buckets().setStarting(startBuckets_ && mb + 1 == microbatches_);
  ch.backward->run(nullptr);
  engine_.buckets().setStarting(false);
  keepSends(*ch.backward, ch.sendBackward, std::make_pair(mb, c + vpp_));
}

void PipelineExecutor::exchange(const std::vector<plan::ScheduleStep> &steps) {
  if (steps.empty())
    return;
  std::vector<PeerTransfer> transfers;
  std::vector<DeviceBuffer> sent;
  std::string name;
  for (const plan::ScheduleStep &st : steps) {
    const Chunk &ch = chunks_.at(size_t(st.chunk));
    const PipeTransfer pt = stepTransfer(st, rank_, pp_, vpp_);
    const bool fwd = !pt.message.gradient;
    name += std::string(name.empty() ? "" : " ") +
            (pt.send ? "send " : "recv ") + (fwd ? "F" : "B") +
            std::to_string(st.microbatch);
    if (!pt.send) {
      Buffers &b = received_[std::make_pair(int64_t(st.microbatch), st.chunk)];
      for (const Transfer &t : fwd ? ch.recvForward : ch.recvBackward) {
        DeviceBuffer d = take(t.bytes);
        transfers.push_back({false, pt.peer, d.data(), t.bytes});
        b.device[t.port] = std::move(d);
      }
      continue;
    }
    const std::vector<Transfer> &ports = fwd ? ch.sendForward : ch.sendBackward;
    if (ports.empty())
      continue;
    auto key = std::make_pair(int64_t(st.microbatch),
                              fwd ? st.chunk : st.chunk + vpp_);
    auto it = toSend_.find(key);
    if (it == toSend_.end())
      throw Error("pipeline schedule: rank " + std::to_string(rank_) +
                  " sends " + pt.message.text() + " before computing it");
    for (const Transfer &t : ports) {
      DeviceBuffer &d = it->second.device.at(t.port);
      transfers.push_back({true, pt.peer, d.data(), t.bytes});
      sent.push_back(std::move(d));
    }
    toSend_.erase(it);
  }
  TraceScope t(tracer_, name, "exchange", Tracer::Host);
  engine_.backend().exchange(group_, transfers, comm_);
  for (DeviceBuffer &d : sent)
    give(std::move(d));
}

double PipelineExecutor::runSteps(const std::vector<plan::ScheduleStep> &steps,
                                  const Fetch &fetch, bool train) {
  double loss = 0;
  std::vector<plan::ScheduleStep> open; // consecutive Send/Recv steps
  for (const plan::ScheduleStep &st : steps) {
    switch (st.kind) {
    case plan::StepKind::RecvForward:
    case plan::StepKind::SendForward:
    case plan::StepKind::RecvBackward:
    case plan::StepKind::SendBackward:
      open.push_back(st);
      continue;
    default:
      break;
    }
    exchange(open);
    open.clear();
    switch (st.kind) {
    case plan::StepKind::Forward:
      runForward(fetch, st.microbatch, st.chunk, train, loss);
      break;
    case plan::StepKind::Backward:
      runBackward(st.microbatch, st.chunk);
      break;
    default: // the optimizer: runOptimizer
      return loss;
    }
  }
  exchange(open);
  return loss;
}

double PipelineExecutor::runMicrobatches(const Fetch &fetch,
                                         bool startBuckets) {
  startBuckets_ = startBuckets;
  return runSteps(*steps_, fetch, true);
}

double PipelineExecutor::runForwardOnly(const Fetch &fetch) {
  return runSteps(evalSteps_, fetch, false);
}

double PipelineExecutor::runOptimizer(float lr, float step) {
  if (!stash_.empty() || !received_.empty() || !toSend_.empty())
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

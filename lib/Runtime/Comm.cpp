//===- Comm.cpp - Communicators: checks, single process, the factory ------===//
//
// 1. checkCollective: a collective's operands against the group sizes, once
//    at load time (launch then trusts them, as for kernels).
// 2. The single-process communicator: every group has size 1, so AllReduce,
//    AllGather and ReduceScatter are copies (nothing when in == out),
//    send/recv are errors, and an exchange pairs its sends to rank 0 (this
//    process) with its receives in order. World size 1 never touches MPI.
// 3. checkSamePlan: every rank's plan hash against its groups'.
// 4. createCommunicator: the single-process one for world size 1, MPI
//    (CommMpi.cpp) otherwise, or a one-line refusal in a build without MPI.
//
//===----------------------------------------------------------------------===//
#include "Comm.h"

#include <cstring>

namespace mega::rt {

void checkCollective(const plan::Instr &instr,
                     const std::vector<const plan::Value *> &inputs,
                     const std::vector<const plan::Value *> &outputs,
                     const Communicator &comm) {
  using plan::Op;
  // plan::validate checked counts, attributes and dtypes already.
  const ProcessGroup &g = comm.group(plan::ParallelGroup(instr.i.at(0)));
  int64_t size = g.size;
  auto n = [](const plan::Value *v) { return v->numel(); };
  switch (instr.op) {
  case Op::AllReduce:
    if (n(inputs[0]) != n(outputs[0]))
      throw Error("AllReduce input and output differ in element count");
    return;
  case Op::AllGather:
    if (n(outputs[0]) != size * n(inputs[0]))
      throw Error("AllGather output has " + std::to_string(n(outputs[0])) +
                  " elements, not group size " + std::to_string(size) +
                  " x input " + std::to_string(n(inputs[0])));
    return;
  case Op::ReduceScatter:
    if (n(inputs[0]) != size * n(outputs[0]))
      throw Error("ReduceScatter input has " + std::to_string(n(inputs[0])) +
                  " elements, not group size " + std::to_string(size) +
                  " x output " + std::to_string(n(outputs[0])));
    return;
  case Op::AllReduceStart:
    return;
  case Op::ReduceScatterStart:
    for (const plan::Value *in : inputs)
      if (n(in) % size != 0)
        throw Error("ReduceScatterStart input has " + std::to_string(n(in)) +
                    " elements, not a multiple of group size " +
                    std::to_string(size));
    return;
  case Op::ReduceScatterWait:
    for (size_t k = 0; k < inputs.size(); ++k)
      if (n(inputs[k]) != size * n(outputs[k]))
        throw Error("ReduceScatterWait input " + std::to_string(k) + " has " +
                    std::to_string(n(inputs[k])) +
                    " elements, not group size " + std::to_string(size) +
                    " x output " + std::to_string(n(outputs[k])));
    return;
  case Op::AllReduceWait:
    for (size_t k = 0; k < inputs.size(); ++k)
      if (n(inputs[k]) != n(outputs[k]))
        throw Error("AllReduceWait input and output differ in element count");
    return;
  case Op::Send:
  case Op::Recv:
    if (size == 1)
      throw Error(std::string(plan::opName(instr.op)) +
                  " in a group of one rank");
    return;
  default:
    throw Error(std::string(plan::opName(instr.op)) + " is not a collective");
  }
}

namespace {

class SingleProcessCommunicator final : public Communicator {
public:
  SingleProcessCommunicator() {
    for (int k = 0; k < 3; ++k) {
      groups_[k].kind = plan::ParallelGroup(k);
      groups_[k].worldRanks = {0};
      groups_[k].handle = k;
    }
  }
  const char *name() const override { return "single-process"; }
  int worldRank() const override { return 0; }
  int worldSize() const override { return 1; }
  const ProcessGroup &group(plan::ParallelGroup kind) const override {
    return groups_[size_t(kind)];
  }
  void allReduce(const ProcessGroup &, const float *in, float *out, size_t n,
                 plan::ReduceOp) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void allGather(const ProcessGroup &, const float *in, float *out,
                 size_t n) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void reduceScatter(const ProcessGroup &, const float *in, float *out,
                     size_t n) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void send(const ProcessGroup &, int, int, const void *, size_t) override {
    throw Error("send in a single-process run");
  }
  void recv(const ProcessGroup &, int, int, void *, size_t) override {
    throw Error("recv in a single-process run");
  }
  void exchange(const ProcessGroup &,
                const std::vector<PeerTransfer> &transfers) override {
    // The k-th send meets the k-th receive, as between two ranks.
    std::vector<const PeerTransfer *> sends, recvs;
    for (const PeerTransfer &t : transfers) {
      if (t.peer != 0)
        throw Error("exchange with rank " + std::to_string(t.peer) +
                    " in a single-process run");
      (t.send ? sends : recvs).push_back(&t);
    }
    if (sends.size() != recvs.size())
      throw Error("exchange in a single-process run: " +
                  std::to_string(sends.size()) + " sends but " +
                  std::to_string(recvs.size()) + " receives");
    for (size_t k = 0; k < sends.size(); ++k) {
      if (sends[k]->bytes != recvs[k]->bytes)
        throw Error("exchange in a single-process run: a send of " +
                    std::to_string(sends[k]->bytes) +
                    " bytes meets a receive of " +
                    std::to_string(recvs[k]->bytes));
      std::memmove(recvs[k]->data, sends[k]->data, sends[k]->bytes);
    }
  }

private:
  ProcessGroup groups_[3];
};

} // namespace

std::unique_ptr<Communicator> createSingleProcessCommunicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

GroupLayout::GroupLayout(int rank, int tp, int dp, int pp)
    : tp(tp), dp(dp), pp(pp) {
  t = rank % tp;
  d = (rank / tp) % dp;
  p = rank / (tp * dp);
}

std::vector<int> GroupLayout::members(plan::ParallelGroup kind) const {
  std::vector<int> r;
  switch (kind) {
  case plan::ParallelGroup::Tensor:
    for (int k = 0; k < tp; ++k)
      r.push_back(worldRank(k, d, p));
    break;
  case plan::ParallelGroup::Data:
    for (int k = 0; k < dp; ++k)
      r.push_back(worldRank(t, k, p));
    break;
  case plan::ParallelGroup::Pipeline:
    for (int k = 0; k < pp; ++k)
      r.push_back(worldRank(t, d, k));
    break;
  }
  return r;
}

int GroupLayout::rankIn(plan::ParallelGroup kind) const {
  switch (kind) {
  case plan::ParallelGroup::Tensor:
    return t;
  case plan::ParallelGroup::Data:
    return d;
  case plan::ParallelGroup::Pipeline:
    return p;
  }
  return 0;
}

int GroupLayout::color(plan::ParallelGroup kind) const {
  // Ranks that share every coordinate but `kind`'s form one group.
  switch (kind) {
  case plan::ParallelGroup::Tensor:
    return d + dp * p;
  case plan::ParallelGroup::Data:
    return t + tp * p;
  case plan::ParallelGroup::Pipeline:
    return t + tp * d;
  }
  return 0;
}

void checkSamePlan(const plan::Plan &plan, Communicator &comm) {
  if (comm.worldSize() == 1)
    return;
  uint64_t h = 1469598103934665603ull; // FNV-1a, 64 bits
  for (uint8_t b : plan::serialize(plan)) {
    h ^= b;
    h *= 1099511628211ull;
  }
  float mine[4]; // 16 bits each: exact in f32
  for (int k = 0; k < 4; ++k)
    mine[k] = float((h >> (16 * k)) & 0xffff);
  for (int kind = 0; kind < 3; ++kind) {
    const ProcessGroup &g = comm.group(plan::ParallelGroup(kind));
    if (g.size == 1)
      continue;
    std::vector<float> all(4 * size_t(g.size));
    comm.allGather(g, mine, all.data(), 4);
    for (int r = 0; r < g.size; ++r)
      if (std::memcmp(&all[4 * size_t(r)], mine, sizeof mine) != 0)
        throw Error("world rank " + std::to_string(g.worldRanks[size_t(r)]) +
                    " loaded another plan than world rank " +
                    std::to_string(comm.worldRank()) +
                    " (every rank must run the same plan file)");
  }
}

#ifndef MEGA_HAVE_MPI
std::unique_ptr<Communicator> createMpiCommunicator(int, int,
                                                    const GroupLayout &) {
  throw Error("this mega-run was built without MPI, so it runs world size 1 "
              "only (install libopenmpi-dev and rebuild)");
}
#endif

std::unique_ptr<Communicator> createCommunicator(int rank, int worldSize,
                                                 int tp, int dp, int pp) {
  if (tp <= 0 || dp <= 0 || pp <= 0 || int64_t(tp) * dp * pp != worldSize)
    throw Error("world size " + std::to_string(worldSize) +
                " is not tp*dp*pp = " + std::to_string(tp) + "*" +
                std::to_string(dp) + "*" + std::to_string(pp));
  if (worldSize == 1)
    return createSingleProcessCommunicator();
  return createMpiCommunicator(rank, worldSize, GroupLayout(rank, tp, dp, pp));
}

} // namespace mega::rt

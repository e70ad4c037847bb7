//===- PlacedComm.h - A communicator that only places a rank -------------===//
//
// For kernel and engine tests: every group has `size` ranks (world ranks
// 0..size-1) with this process at `rank`, and nothing communicates: each
// collective and transfer throws, unless a test's subclass overrides the
// one it answers itself.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TEST_RUNTIME_PLACEDCOMM_H
#define MEGA_TEST_RUNTIME_PLACEDCOMM_H

#include "mega/Runtime/Backend.h"

#include <string>
#include <vector>

namespace mega::test {

class PlacedComm : public rt::Communicator {
public:
  PlacedComm(int rank, int size) {
    for (int k = 0; k < 3; ++k) {
      groups_[k].kind = plan::ParallelGroup(k);
      groups_[k].rank = rank;
      groups_[k].size = size;
      groups_[k].handle = k;
      for (int r = 0; r < size; ++r)
        groups_[k].worldRanks.push_back(r);
    }
  }
  const char *name() const override { return "placed"; }
  int worldRank() const override { return groups_[0].rank; }
  int worldSize() const override { return groups_[0].size; }
  const rt::ProcessGroup &group(plan::ParallelGroup kind) const override {
    return groups_[int(kind)];
  }
  void allReduce(const rt::ProcessGroup &, const float *, float *, size_t,
                 plan::ReduceOp) override {
    none("allReduce");
  }
  void allGather(const rt::ProcessGroup &, const float *, float *,
                 size_t) override {
    none("allGather");
  }
  void reduceScatter(const rt::ProcessGroup &, const float *, float *,
                     size_t) override {
    none("reduceScatter");
  }
  void send(const rt::ProcessGroup &, int, int, const void *, size_t) override {
    none("send");
  }
  void recv(const rt::ProcessGroup &, int, int, void *, size_t) override {
    none("recv");
  }
  void exchange(const rt::ProcessGroup &,
                const std::vector<rt::PeerTransfer> &) override {
    none("exchange");
  }

protected:
  [[noreturn]] static void none(const char *what) {
    throw rt::Error(std::string("the test communicator was asked to ") + what);
  }

private:
  rt::ProcessGroup groups_[3];
};

} // namespace mega::test

#endif // MEGA_TEST_RUNTIME_PLACEDCOMM_H

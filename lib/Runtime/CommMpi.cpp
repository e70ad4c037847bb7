//===- CommMpi.cpp - The MPI communicator ---------------------------------===//
//
// 1. MPI_Init once (unless something else did), check MPI's rank and size
//    against the launcher's variables.
// 2. One MPI_Comm_split of MPI_COMM_WORLD per group kind (tensor, data,
//    pipeline): color = the coordinates the group does not span, key = the
//    rank within it, so MPI's group rank is GroupLayout::rankIn.
// 3. Collectives map one to one: MPI_Allreduce (MPI_IN_PLACE when in ==
//    out), MPI_Allgather, MPI_Reduce_scatter_block, MPI_Send/MPI_Recv.
// 4. An exchange (the pipeline's transfers) posts its receives, then its
//    sends as MPI_Issend, which completes only once the receive is posted,
//    as NCCL's send does, and waits for all of them. It runs on a duplicate
//    of the group's communicator with one tag, so it never matches
//    send()/recv() and its messages meet in posting order, as NCCL's do: a
//    schedule whose order or grouping would hang on NCCL hangs here too, in
//    the CPU tests.
//    The data-parallel gradient buckets' non-blocking all-reduces
//    (startAllReduce, MPI_Iallreduce in place) and the distributed
//    optimizer's reduce-scatters (startReduceScatter,
//    MPI_Ireduce_scatter_block) are moved on by progress(),
//    which the engine calls between the instructions of a program while a
//    bucket is in flight: MPI_Iallreduce advances only inside MPI calls, and
//    a thread polling beside the compute (two ranks on two cores) costs the
//    kernels more than it saves. Every MPI call holds `mutex_`
//    (MPI_THREAD_SERIALIZED).
// 5. The destructor frees the groups and calls MPI_Finalize, except while an
//    exception unwinds (a failing rank must not wait in MPI_Finalize for
//    ranks that wait in a collective for it: it exits, and mpirun ends the
//    job).
//
//===----------------------------------------------------------------------===//
#include "Comm.h"

// The C API only (OpenMPI's mpi.h would pull in the deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

namespace mega::rt {

namespace {

void check(int rc, const char *what) {
  if (rc == MPI_SUCCESS)
    return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI: ") + what + ": " + std::string(msg, size_t(len)));
}

int count(size_t n) {
  if (n > size_t(INT_MAX))
    throw Error("MPI: a collective over " + std::to_string(n) +
                " elements exceeds INT_MAX");
  return int(n);
}

class MpiCommunicator final : public Communicator {
public:
  MpiCommunicator(int rank, int worldSize, const GroupLayout &layout) {
    int inited = 0;
    MPI_Initialized(&inited);
    int provided = MPI_THREAD_SINGLE;
    if (!inited) {
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED,
                            &provided),
            "MPI_Init_thread");
      ownsInit_ = true;
    } else {
      MPI_Query_thread(&provided);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    if (rank_ != rank || size_ != worldSize)
      throw Error("MPI says rank " + std::to_string(rank_) + " of " +
                  std::to_string(size_) + " but the launcher's variables say " +
                  std::to_string(rank) + " of " + std::to_string(worldSize));
    for (int k = 0; k < 3; ++k) {
      auto kind = plan::ParallelGroup(k);
      ProcessGroup &g = groups_[k];
      g.kind = kind;
      g.worldRanks = layout.members(kind);
      g.size = int(g.worldRanks.size());
      g.rank = layout.rankIn(kind);
      g.handle = k;
      check(MPI_Comm_split(MPI_COMM_WORLD, layout.color(kind), g.rank,
                           &comms_[k]),
            "MPI_Comm_split");
      int r = -1, s = -1;
      MPI_Comm_rank(comms_[k], &r);
      MPI_Comm_size(comms_[k], &s);
      if (r != g.rank || s != g.size)
        throw Error("MPI: group split disagrees with the rank layout");
      check(MPI_Comm_dup(comms_[k], &exchanges_[k]), "MPI_Comm_dup");
    }
  }

  ~MpiCommunicator() override {
    if (std::uncaught_exceptions() > 0)
      return;
    for (MPI_Comm *set : {comms_, exchanges_})
      for (int k = 0; k < 3; ++k)
        if (set[k] != MPI_COMM_NULL)
          MPI_Comm_free(&set[k]);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (ownsInit_ && !finalized)
      MPI_Finalize();
  }

  const char *name() const override { return "mpi"; }
  int worldRank() const override { return rank_; }
  int worldSize() const override { return size_; }
  const ProcessGroup &group(plan::ParallelGroup kind) const override {
    return groups_[size_t(kind)];
  }

  void allReduce(const ProcessGroup &g, const float *in, float *out, size_t n,
                 plan::ReduceOp op) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Op mop = op == plan::ReduceOp::Max ? MPI_MAX : MPI_SUM;
    check(MPI_Allreduce(in == out ? MPI_IN_PLACE : in, out, count(n), MPI_FLOAT,
                        mop, comm(g)),
          "MPI_Allreduce");
  }
  void allGather(const ProcessGroup &g, const float *in, float *out,
                 size_t n) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const void *src = in == out + size_t(g.rank) * n ? MPI_IN_PLACE : in;
    check(MPI_Allgather(src, count(n), MPI_FLOAT, out, count(n), MPI_FLOAT,
                        comm(g)),
          "MPI_Allgather");
  }
  void reduceScatter(const ProcessGroup &g, const float *in, float *out,
                     size_t n) override {
    std::lock_guard<std::mutex> lock(mutex_);
    count(n * size_t(g.size));
    check(MPI_Reduce_scatter_block(in, out, count(n), MPI_FLOAT, MPI_SUM,
                                   comm(g)),
          "MPI_Reduce_scatter_block");
  }
  void send(const ProcessGroup &g, int peer, int tag, const void *data,
            size_t bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    check(MPI_Send(data, count(bytes), MPI_BYTE, peer, tag, comm(g)),
          "MPI_Send");
  }
  void recv(const ProcessGroup &g, int peer, int tag, void *data,
            size_t bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    check(MPI_Recv(data, count(bytes), MPI_BYTE, peer, tag, comm(g),
                   MPI_STATUS_IGNORE),
          "MPI_Recv");
  }
  void exchange(const ProcessGroup &g,
                const std::vector<PeerTransfer> &transfers) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Comm c = comm(g, exchanges_);
    const size_t n = transfers.size();
    std::vector<MPI_Request> requests(n, MPI_REQUEST_NULL);
    for (int pass = 0; pass < 2; ++pass) // receives first, then sends
      for (size_t k = 0; k < n; ++k) {
        const PeerTransfer &t = transfers[k];
        if (t.send != (pass == 1))
          continue;
        if (t.peer < 0 || t.peer >= g.size)
          throw Error("MPI: exchange with rank " + std::to_string(t.peer) +
                      " of " + std::to_string(g.size));
        if (t.send)
          check(MPI_Issend(t.data, count(t.bytes), MPI_BYTE, t.peer,
                           kExchangeTag, c, &requests[k]),
                "MPI_Issend");
        else
          check(MPI_Irecv(t.data, count(t.bytes), MPI_BYTE, t.peer,
                          kExchangeTag, c, &requests[k]),
                "MPI_Irecv");
      }
    std::vector<MPI_Status> status(n);
    check(MPI_Waitall(int(n), requests.data(), status.data()),
          "MPI_Waitall (exchange)");
    for (size_t k = 0; k < n; ++k) {
      if (transfers[k].send)
        continue;
      int got = 0;
      MPI_Get_count(&status[k], MPI_BYTE, &got);
      if (size_t(got) != transfers[k].bytes)
        throw Error("MPI: exchange: " + std::to_string(got) +
                    " bytes came from rank " +
                    std::to_string(transfers[k].peer) + " where " +
                    std::to_string(transfers[k].bytes) + " were expected");
    }
  }
  int startAllReduce(const ProcessGroup &g, float *data, size_t n,
                     plan::ReduceOp op) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Op mop = op == plan::ReduceOp::Max ? MPI_MAX : MPI_SUM;
    size_t slot = freeSlot();
    check(MPI_Iallreduce(MPI_IN_PLACE, data, count(n), MPI_FLOAT, mop, comm(g),
                         &reductions_[slot]),
          "MPI_Iallreduce");
    return int(slot);
  }
  int startReduceScatter(const ProcessGroup &g, const float *in, float *out,
                         size_t n) override {
    std::lock_guard<std::mutex> lock(mutex_);
    count(n * size_t(g.size));
    size_t slot = freeSlot();
    check(MPI_Ireduce_scatter_block(in, out, count(n), MPI_FLOAT, MPI_SUM,
                                    comm(g), &reductions_[slot]),
          "MPI_Ireduce_scatter_block");
    return int(slot);
  }
  void progress() override {
    std::lock_guard<std::mutex> lock(mutex_);
    int done = 0;
    // An error leaves the request for waitStarted's MPI_Wait to report.
    MPI_Testall(int(reductions_.size()), reductions_.data(), &done,
                MPI_STATUSES_IGNORE);
  }
  void waitStarted(int handle) override {
    if (handle < 0)
      return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (size_t(handle) >= reductions_.size())
      throw Error("MPI: wait for a collective that was never started");
    // A request progress() saw complete is MPI_REQUEST_NULL, for which
    // MPI_Wait returns at once.
    check(MPI_Wait(&reductions_[size_t(handle)], MPI_STATUS_IGNORE),
          "MPI_Wait (gradient bucket)");
  }

private:
  static constexpr int kExchangeTag = 0;

  /// A free slot of reductions_ (grown by one when none is).
  size_t freeSlot() {
    size_t slot = 0;
    while (slot < reductions_.size() && reductions_[slot] != MPI_REQUEST_NULL)
      ++slot;
    if (slot == reductions_.size())
      reductions_.push_back(MPI_REQUEST_NULL);
    return slot;
  }
  MPI_Comm comm(const ProcessGroup &g) const { return comm(g, comms_); }
  static MPI_Comm comm(const ProcessGroup &g, const MPI_Comm *set) {
    if (g.handle < 0 || g.handle > 2)
      throw Error("MPI: a process group of another communicator");
    return set[g.handle];
  }
  int rank_ = 0, size_ = 1;
  /// The started collectives' requests by handle (MPI_REQUEST_NULL: free
  /// slot).
  std::vector<MPI_Request> reductions_;
  std::mutex mutex_; ///< held by every MPI call
  bool ownsInit_ = false;
  ProcessGroup groups_[3];
  MPI_Comm comms_[3] = {MPI_COMM_NULL, MPI_COMM_NULL, MPI_COMM_NULL};
  /// Duplicates of comms_ for exchange() (its own matching context).
  MPI_Comm exchanges_[3] = {MPI_COMM_NULL, MPI_COMM_NULL, MPI_COMM_NULL};
};

} // namespace

std::unique_ptr<Communicator> createMpiCommunicator(int rank, int worldSize,
                                                    const GroupLayout &layout) {
  return std::make_unique<MpiCommunicator>(rank, worldSize, layout);
}

} // namespace mega::rt

//===- CommMpi.cpp - The MPI communicator ---------------------------------===//
//
// 1. MPI_Init once (unless something else did), check MPI's rank and size
//    against the launcher's variables.
// 2. One MPI_Comm_split of MPI_COMM_WORLD per group kind (tensor, data,
//    pipeline): color = the coordinates the group does not span, key = the
//    rank within it, so MPI's group rank is GroupLayout::rankIn.
// 3. Collectives map one to one: MPI_Allreduce (MPI_IN_PLACE when in ==
//    out), MPI_Allgather, MPI_Reduce_scatter_block, MPI_Send/MPI_Recv.
// 4. Non-blocking sends (the pipeline's) are moved on by a progress thread
//    while this rank computes: a large message goes in fragments that the
//    sender must push, so without it an activation sent before a long
//    forward would reach the next stage only when this rank next calls MPI.
//    MPI runs at MPI_THREAD_SERIALIZED: every call holds `mutex_`, and the
//    thread, woken only while sends are pending, calls MPI_Testall every
//    50 us (a blocking call of the main thread progresses them itself).
//    The data-parallel gradient buckets' non-blocking all-reduces
//    (startAllReduce, MPI_Iallreduce in place) are moved on by progress(),
//    which the engine calls between the instructions of a program while a
//    bucket is in flight: MPI_Iallreduce advances only inside MPI calls, and
//    a thread polling beside the compute (two ranks on two cores) costs the
//    kernels more than it saves.
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

#include <chrono>
#include <climits>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
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
    }
    if (provided >= MPI_THREAD_SERIALIZED)
      progress_ = std::thread([this] { progressLoop(); });
  }

  ~MpiCommunicator() override {
    if (progress_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
      }
      wake_.notify_all();
      progress_.join();
    }
    if (std::uncaught_exceptions() > 0)
      return;
    for (MPI_Comm &c : comms_)
      if (c != MPI_COMM_NULL)
        MPI_Comm_free(&c);
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
  void isend(const ProcessGroup &g, int peer, int tag, const void *data,
             size_t bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Request request;
    check(MPI_Isend(data, count(bytes), MPI_BYTE, peer, tag, comm(g),
                    &request),
          "MPI_Isend");
    pending_.push_back(request);
    wake_.notify_one();
  }
  int startAllReduce(const ProcessGroup &g, float *data, size_t n,
                     plan::ReduceOp op) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Op mop = op == plan::ReduceOp::Max ? MPI_MAX : MPI_SUM;
    size_t slot = 0;
    while (slot < reductions_.size() && reductions_[slot] != MPI_REQUEST_NULL)
      ++slot;
    if (slot == reductions_.size())
      reductions_.push_back(MPI_REQUEST_NULL);
    check(MPI_Iallreduce(MPI_IN_PLACE, data, count(n), MPI_FLOAT, mop, comm(g),
                         &reductions_[slot]),
          "MPI_Iallreduce");
    return int(slot);
  }
  void progress() override {
    std::lock_guard<std::mutex> lock(mutex_);
    int done = 0;
    // An error leaves the request for waitAllReduce's MPI_Wait to report.
    MPI_Testall(int(reductions_.size()), reductions_.data(), &done,
                MPI_STATUSES_IGNORE);
  }
  void waitAllReduce(int handle) override {
    if (handle < 0)
      return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (size_t(handle) >= reductions_.size())
      throw Error("MPI: wait for an all-reduce that was never started");
    // A request the progress thread saw complete is MPI_REQUEST_NULL, for
    // which MPI_Wait returns at once.
    check(MPI_Wait(&reductions_[size_t(handle)], MPI_STATUS_IGNORE),
          "MPI_Wait (all-reduce)");
  }
  void waitSends() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_.empty())
      return;
    check(MPI_Waitall(int(pending_.size()), pending_.data(),
                      MPI_STATUSES_IGNORE),
          "MPI_Waitall");
    pending_.clear();
  }

private:
  /// Step 4.
  void progressLoop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      if (pending_.empty()) {
        wake_.wait(lock);
        continue;
      }
      int done = 0;
      if (!pending_.empty() &&
          (MPI_Testall(int(pending_.size()), pending_.data(), &done,
                       MPI_STATUSES_IGNORE) != MPI_SUCCESS ||
           done))
        pending_.clear(); // an error shows again in waitSends' MPI_Waitall
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      lock.lock();
    }
  }

  MPI_Comm comm(const ProcessGroup &g) const {
    if (g.handle < 0 || g.handle > 2)
      throw Error("MPI: a process group of another communicator");
    return comms_[g.handle];
  }
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> pending_; ///< isends not yet waited for
  /// startAllReduce's requests by handle (MPI_REQUEST_NULL: free slot).
  std::vector<MPI_Request> reductions_;
  std::mutex mutex_;                 ///< held by every MPI call
  std::condition_variable wake_;     ///< an isend for the progress thread
  std::thread progress_;
  bool stop_ = false;
  bool ownsInit_ = false;
  ProcessGroup groups_[3];
  MPI_Comm comms_[3] = {MPI_COMM_NULL, MPI_COMM_NULL, MPI_COMM_NULL};
};

} // namespace

std::unique_ptr<Communicator> createMpiCommunicator(int rank, int worldSize,
                                                    const GroupLayout &layout) {
  return std::make_unique<MpiCommunicator>(rank, worldSize, layout);
}

} // namespace mega::rt

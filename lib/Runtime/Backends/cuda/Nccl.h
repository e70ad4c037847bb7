//===- Nccl.h - NCCL communicators for the CUDA backend's collectives -----===//
//
// One NCCL communicator per process group of a run (tensor, data,
// pipeline), created at start-up: the group's rank 0 makes the unique id and
// sends it to the others over the run's Communicator (MPI), then every rank
// joins. Collectives then run on device pointers, no host staging.
//
// No NCCL call may wait forever: the communicators are non-blocking (a call
// returns ncclInProgress while it still needs its peers), and every call and
// every wait on enqueued NCCL work polls the communicator's asynchronous
// error with a deadline. On an error or at the deadline the communicator is
// aborted (its kernels stop) and an Error names the operation, the group and
// its ranks; mega-run prints it as its one error line and exits 1, and
// mpirun then ends the other ranks.
//
// Built only when CMake found NCCL (MEGA_HAVE_NCCL).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_NCCL_H
#define MEGA_RUNTIME_BACKENDS_CUDA_NCCL_H

#include "mega/Runtime/Backend.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <string>
#include <vector>

namespace mega::rt::gpu {

/// "the data group (world ranks 0, 2)", for messages.
std::string describeGroup(const ProcessGroup &g);

/// The NCCL library's version, "2.28.9".
std::string ncclVersionString();

class NcclComms {
public:
  /// `timeoutSeconds` bounds each call and each wait.
  explicit NcclComms(double timeoutSeconds);
  ~NcclComms();
  NcclComms(const NcclComms &) = delete;
  NcclComms &operator=(const NcclComms &) = delete;

  /// Creates the communicator of `g` on the current device. Every rank of
  /// `g` calls it at the same point; `comm` carries the unique id.
  void join(Communicator &comm, const ProcessGroup &g);
  bool has(const ProcessGroup &g) const;

  /// Enqueue on `s`; completion is for wait(). `in` may equal `out`.
  void allReduce(const ProcessGroup &g, const float *in, float *out, size_t n,
                 plan::ReduceOp op, cudaStream_t s);
  /// out = concat over group ranks of `in` (n floats each).
  void allGather(const ProcessGroup &g, const float *in, float *out, size_t n,
                 cudaStream_t s);
  /// out (n floats) = part g.rank of the sum of `in` (g.size * n floats).
  void reduceScatter(const ProcessGroup &g, const float *in, float *out,
                     size_t n, cudaStream_t s);
  /// In-place sums of every parts[k] (counts[k] floats), one group call;
  /// with `scatter`, in-place reduce-scatters instead: this rank's block
  /// of parts[k] (counts[k] / g.size floats at block g.rank) becomes that
  /// block of the sum, the rest of parts[k] is left unspecified.
  void allReduceParts(const ProcessGroup &g, const std::vector<void *> &parts,
                      const std::vector<size_t> &counts, bool scatter,
                      cudaStream_t s);
  /// The sends and receives of `transfers` (device memory, bytes) in one
  /// group call, named `what` in errors. NCCL matches sends to receives by
  /// order, not by tag.
  void exchange(const ProcessGroup &g,
                const std::vector<PeerTransfer> &transfers, cudaStream_t s,
                const char *what);
  /// Returns once `done`, recorded after `g`'s NCCL work `what`, has
  /// completed. On an asynchronous NCCL error or at the deadline: aborts
  /// the communicator and throws.
  void wait(const ProcessGroup &g, cudaEvent_t done, const char *what);
  /// Aborts every communicator (their kernels stop); for teardown on an
  /// error path.
  void abortAll();

private:
  struct Entry {
    ncclComm_t comm = nullptr;
    std::string name; ///< describeGroup
  };
  Entry &entry(const ProcessGroup &g, const char *what);
  /// Settles a call's result: polls while it is in progress, throws (after
  /// aborting) on failure.
  void settle(Entry &e, ncclResult_t r, const char *what);
  [[noreturn]] void abort(Entry &e, const char *what, const std::string &why);

  double timeout_;
  Entry entries_[3]; ///< by plan::ParallelGroup
};

/// "world ranks 0 and 1 share the GPU at PCI 0000:3b:00" when two ranks of
/// the run use one GPU (NCCL refuses that), else "". Every rank calls it at
/// the same point and gets the same answer: each rank's GPU (its UUID, which
/// no other GPU on any host has, and its PCI address for the message) is
/// gathered over the tensor, then data, then pipeline group, the axes of
/// the tp x dp x pp grid, so every rank ends up with every rank's.
std::string sharedGpu(Communicator &comm);

/// What the CUDA backend holds for collectives on device memory: the
/// communicators, and the gradient buckets' own stream with its events.
/// Blocking collectives (plan collectives) run on the compute stream and
/// are waited for with the deadline before returning. A bucket's
/// all-reduce runs on the communication stream, ordered after the compute
/// stream's work so far by an event, so that it overlaps the rest of the
/// backward; its wait polls with the deadline, then makes the compute
/// stream wait on the event recorded after the all-reduce.
class NcclCollectives {
public:
  NcclCollectives(cudaStream_t compute, double timeoutSeconds);
  ~NcclCollectives();
  NcclCollectives(const NcclCollectives &) = delete;
  NcclCollectives &operator=(const NcclCollectives &) = delete;

  NcclComms &comms() { return comms_; }
  bool has(const ProcessGroup &g) const { return comms_.has(g); }
  /// One plan collective (AllReduce, AllGather, ReduceScatter, Send,
  /// Recv) on device pointers over `g`; returns when it has completed.
  void run(const plan::Instr &instr, const std::vector<TensorRef> &ins,
           const std::vector<TensorRef> &outs, const ProcessGroup &g);
  /// Backend::exchange on the compute stream; returns when it has
  /// completed (waited for with the deadline).
  void exchange(const ProcessGroup &g,
                const std::vector<PeerTransfer> &transfers);
  int startBuckets(const ProcessGroup &g, const std::vector<void *> &parts,
                   const std::vector<size_t> &counts, bool scatter);
  void waitBuckets(int handle);

private:
  struct Pending {
    ProcessGroup group;
    cudaEvent_t done = nullptr;
    bool busy = false;
  };
  NcclComms comms_;
  cudaStream_t compute_;
  cudaStream_t comm_ = nullptr;  ///< the buckets' all-reduces
  cudaEvent_t ready_ = nullptr;  ///< compute work before a bucket's start
  cudaEvent_t done_ = nullptr;   ///< a plan collective's end
  std::vector<Pending> buckets_; ///< by handle
  void *scratch_ = nullptr;      ///< an input that overlaps its output
  size_t scratchBytes_ = 0;
};

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_NCCL_H

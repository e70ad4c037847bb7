//===- BucketReducer.h - Gradient buckets reduced in place or in flight --===//
//
// The plan's split collectives of gradient buckets (mega-data-parallel's
// overlapped gradient reduction): AllReduceStart / AllReduceWait pairs, and
// the distributed optimizer's ReduceScatterStart / ReduceScatterWait pairs.
// The start sits in the train program right after a bucket's last gradient
// accumulation, the wait in the optimizer. A wait may also stand alone
// (mega-tensor-grad-bucket's sum over the tensor group of the replicated
// parameters' gradient terms): it reduces now. One reducer per engine holds
// what lives between the two programs: each bucket's host staging buffers
// (allocated once, at load) and the requests in flight.
//
// A start runs only while the trainer says the micro-batch is the step's
// last (setStarting); the earlier micro-batches still accumulate, and a step
// that must see the local gradients (--dump-grads) starts nothing. A wait
// finds its bucket in flight and completes it, or reduces it now.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BUCKETREDUCER_H
#define MEGA_RUNTIME_BUCKETREDUCER_H

#include "mega/Runtime/Backend.h"

#include <map>
#include <utility>
#include <vector>

namespace mega::rt {

class BucketReducer {
public:
  BucketReducer(Backend &backend, Communicator &comm)
      : backend_(backend), comm_(comm) {}

  /// At load, for every start and wait (plan::isBucketOp): the bucket of
  /// `grads` (keyed by its first gradient's bytes and its group). Throws Error
  /// when two instructions disagree on a bucket.
  void declare(const plan::Instr &instr, const std::vector<TensorRef> &grads);
  /// After every program is loaded: each started bucket has a wait.
  void checkPairs() const;

  /// Whether a start starts (the step's last micro-batch) or is skipped.
  void setStarting(bool on) { starting_ = on; }
  bool starting() const { return starting_; }

  void start(const plan::Instr &instr, const std::vector<TensorRef> &grads);
  /// `blocks`: a ReduceScatterWait's outputs (this rank's blocks of the
  /// sums), empty for an AllReduceWait (in place).
  void wait(const plan::Instr &instr, const std::vector<TensorRef> &grads,
            const std::vector<TensorRef> &blocks);
  /// Buckets in flight (0 between steps).
  size_t inFlight() const { return inFlight_; }
  /// Buckets, and those whose start the plan has (overlapped).
  size_t count() const { return buckets_.size(); }
  size_t overlapped() const;
  /// Of those, the reduce-scattered ones (the distributed optimizer's).
  size_t scattered() const;
  /// Host bytes of the staging buffers of the buckets that start.
  size_t stagingBytes() const;

private:
  struct Bucket {
    /// Reduce-scattered (ReduceScatterStart/Wait): each gradient on its
    /// own, this rank keeping block `rank` of `size`.
    bool scatter = false;
    std::vector<void *> parts;
    std::vector<size_t> counts;
    size_t numel = 0;
    size_t rank = 0, size = 1;
    /// A packed copy of the gradients; empty: reduced in place (one host
    /// part), or a scatter bucket in host memory (read where they are).
    std::vector<float> staging;
    /// A scatter bucket on the host: the blocks of the sums, back to back.
    std::vector<float> blocks;
    /// Reduced on the device by the backend: these spans, in place.
    bool device = false;
    std::vector<void *> deviceParts;
    std::vector<size_t> deviceCounts;
    bool started = false, waited = false;
    std::vector<int> handles; ///< in flight: the backend's or comm's
    bool inFlight = false;
  };
  /// A bucket is its first gradient's bytes and its group: the tensor-group
  /// bucket of some gradients (mega-tensor-grad-bucket) may begin with the
  /// first gradient of a data-parallel one.
  using Key = std::pair<void *, int64_t>;
  static Key key(const plan::Instr &instr,
                 const std::vector<TensorRef> &grads) {
    return {grads.front().data, instr.i.at(0)};
  }
  Bucket &find(const plan::Instr &instr, const std::vector<TensorRef> &grads);
  float *pack(Bucket &b);
  void unpack(Bucket &b);
  void startScatter(Bucket &b, const ProcessGroup &g);
  void waitScatter(Bucket &b, const plan::Instr &instr,
                   const std::vector<TensorRef> &grads,
                   const std::vector<TensorRef> &blocks);

  Backend &backend_;
  Communicator &comm_;
  std::map<Key, Bucket> buckets_;
  bool starting_ = false;
  size_t inFlight_ = 0;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_BUCKETREDUCER_H

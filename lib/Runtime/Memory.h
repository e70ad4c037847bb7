//===- Memory.h - Device buffers and the persistent tensors ---------------===//
//
// Memory owns the persistent tensors of a plan (parameters, gradients,
// optimizer moments) as one device buffer each, allocated once. It knows the
// plan's roles, so checkpointing and gradient dumps ask it by parameter
// rather than by index. A pipeline rank allocates only the persistents its
// own programs reference (the point of pipelining is less memory per rank);
// the others exist only as plan entries, or for a while as host copies that a
// checkpoint or a gradient dump receives from their owner.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_MEMORY_H
#define MEGA_RUNTIME_MEMORY_H

#include "mega/Plan/Plan.h"
#include "mega/Runtime/Backend.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mega::rt {

/// One device allocation, released when it goes away.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend &backend, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer &&other) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  void *data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

private:
  Backend *backend_ = nullptr;
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Memory {
public:
  /// `comm` (optional: without it every group has one rank) tells which
  /// shard of a tensor-parallel persistent this process holds; a persistent
  /// sharded over a group of another size than the plan's is an Error.
  /// `resident` (empty: all) says which persistents get a device buffer.
  /// Each list of `contiguous` (resident persistents, each in one list at
  /// most) shares one allocation, in list order, every tensor starting at a
  /// multiple of kContiguousAlign bytes with zeros between: a data-parallel
  /// gradient bucket, which is then all-reduced in place.
  Memory(const plan::Plan &plan, Backend &backend,
         Communicator *comm = nullptr, std::vector<bool> resident = {},
         const std::vector<std::vector<size_t>> &contiguous = {});
  static constexpr size_t kContiguousAlign = 64;

  Backend &backend() const { return backend_; }
  size_t count() const { return plan_.persistents.size(); }
  const plan::Persistent &info(size_t k) const { return plan_.persistents[k]; }
  /// The device buffer (nullptr when not resident).
  void *data(size_t k) const { return ptrs_[k]; }
  /// This rank's (local, shard) bytes of persistent k, resident or not.
  size_t bytes(size_t k) const { return bytes_[k]; }
  /// Bytes its buffer holds past them (plan::Persistent::tailBytes): zeros
  /// at allocation, never saved, loaded or dumped.
  size_t tail(size_t k) const { return size_t(info(k).tailBytes); }
  /// Whether persistent k has a device buffer on this rank.
  bool resident(size_t k) const { return ptrs_[k] != nullptr; }
  /// Whether toHost(k) has values: resident, or a host copy was given.
  bool available(size_t k) const {
    return resident(k) || hostCopies_.count(k) != 0;
  }
  /// Device bytes of this rank's persistents.
  size_t residentBytes() const;
  /// Device bytes allocated for them (with the gaps of contiguous groups).
  size_t allocatedBytes() const;
  /// Frees the host copies of persistents that are not resident.
  void dropHostCopies() { hostCopies_.clear(); }

  /// Resident parameters drawn by their Init (Normal from a stream derived from `seed`
  /// and the parameter's name, so adding a tensor never changes the others);
  /// every other persistent zeroed. A sharded parameter draws the full
  /// tensor from the same stream and keeps its shard, so every tensor-
  /// parallel degree starts from the same full weights.
  void initialize(uint64_t seed);
  /// Every resident parameter copy (plan::Role::ParamCopy) set to its
  /// parameter rounded to bf16 as Cast rounds. initialize() and
  /// loadCheckpoint() call it; the optimizer keeps the copies in step.
  void refreshParamCopies();

  // Tensor-parallel shards (plan::Persistent::shardDim).
  bool sharded(size_t k) const { return info(k).shardDim >= 0; }
  /// A state sharded over its own group whose parameter is itself a shard
  /// (the distributed optimizer's moment of a tensor-parallel shard: a data
  /// block of the parameter's local shape).
  bool nested(size_t k) const {
    const plan::Persistent &t = info(k);
    return sharded(k) && t.role != plan::Role::Param && t.param >= 0 &&
           info(size_t(t.param)).shardDim >= 0 &&
           info(size_t(t.param)).shardGroup != t.shardGroup;
  }
  /// The full tensor's shape (the local shape when not sharded).
  const std::vector<int64_t> &fullShape(size_t k) const {
    return nested(k)    ? info(size_t(info(k).param)).fullShape
           : sharded(k) ? info(k).fullShape
                        : info(k).shape;
  }
  size_t fullBytes(size_t k) const;
  /// The full tensor on the host. For a sharded persistent this is a
  /// collective over its shard group (an allGather): every rank of the group
  /// must call it, in the same order.
  void fullToHost(size_t k, void *dst) const;
  /// Keeps this rank's shard of a full host tensor (fullBytes(k) bytes).
  void fromFullHost(size_t k, const void *src);
  void zero(size_t k);
  /// For a persistent that is not resident these work on a host copy:
  /// fromHost makes one, toHost without one is an Error.
  void toHost(size_t k, void *dst) const;
  void fromHost(size_t k, const void *src);

  /// Index of the parameter called `name`, or -1.
  int findParam(const std::string &name) const;
  /// Index of the persistent with `role` that belongs to parameter `param`,
  /// or -1.
  int stateOf(size_t param, plan::Role role) const;
  /// Indices of all persistents with `role`, in plan order.
  std::vector<size_t> withRole(plan::Role role) const;
  int64_t parameterCount() const;

private:
  /// Rank and size of persistent k's shard group.
  const ProcessGroup *shardGroup(size_t k) const;
  void gatherHost(const plan::Persistent &t, const ProcessGroup *g,
                  const char *local, size_t bytes, void *dst) const;

  const plan::Plan &plan_;
  Backend &backend_;
  Communicator *comm_;
  std::vector<DeviceBuffer> buffers_; ///< one per allocation
  std::vector<void *> ptrs_;          ///< persistent k's bytes, or nullptr
  std::vector<size_t> bytes_;
  std::map<size_t, std::vector<char>> hostCopies_;
};

/// float <-> bfloat16 (round to nearest even), for bf16 parameters.
uint16_t toBF16(float f);
float fromBF16(uint16_t b);

} // namespace mega::rt

#endif // MEGA_RUNTIME_MEMORY_H

//===- Memory.h - Device buffers and the persistent tensors ---------------===//
//
// Memory owns every persistent tensor of a plan (parameters, gradients,
// optimizer moments) as one device buffer each, allocated once. It knows the
// plan's roles, so checkpointing and gradient dumps ask it by parameter
// rather than by index.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_MEMORY_H
#define MEGA_RUNTIME_MEMORY_H

#include "mega/Plan/Plan.h"
#include "mega/Runtime/Backend.h"

#include <cstdint>
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
  Memory(const plan::Plan &plan, Backend &backend);

  Backend &backend() const { return backend_; }
  size_t count() const { return buffers_.size(); }
  const plan::Persistent &info(size_t k) const { return plan_.persistents[k]; }
  void *data(size_t k) const { return buffers_[k].data(); }
  size_t bytes(size_t k) const { return buffers_[k].bytes(); }

  /// Parameters drawn by their Init (Normal from a stream derived from `seed`
  /// and the parameter's name, so adding a tensor never changes the others);
  /// every other persistent zeroed.
  void initialize(uint64_t seed);
  void zero(size_t k);
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
  const plan::Plan &plan_;
  Backend &backend_;
  std::vector<DeviceBuffer> buffers_;
};

/// float <-> bfloat16 (round to nearest even), for bf16 parameters.
uint16_t toBF16(float f);
float fromBF16(uint16_t b);

} // namespace mega::rt

#endif // MEGA_RUNTIME_MEMORY_H

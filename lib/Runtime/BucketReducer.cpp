//===- BucketReducer.cpp - Gradient buckets reduced in place or in flight -===//
//
// The engine asks Memory to place each bucket's gradients back to back (a
// gradient buffer per bucket, as Megatron's), so in host memory a bucket is
// one span, all-reduced in place. Otherwise (device memory, or gradients
// that are not whole persistents) the reduction runs on a packed copy: start
// copies them into the bucket's staging buffer (allocated when the plan is
// loaded, never during a step) and starts one non-blocking all-reduce of it;
// wait completes it and copies the sums back. A backend with device
// collectives (NCCL) reduces the device spans in place on its own stream
// instead (Backend::startBuckets / waitBuckets): no staging at all.
//
//===----------------------------------------------------------------------===//
#include "BucketReducer.h"

#include "Memory.h"

#include <string>

namespace mega::rt {

void BucketReducer::declare(const plan::Instr &instr,
                            const std::vector<TensorRef> &grads) {
  const char *name = plan::opName(instr.op);
  if (grads.empty())
    throw Error(std::string(name) + " has no gradients");
  auto [it, fresh] = buckets_.try_emplace(key(instr, grads));
  Bucket &b = it->second;
  std::vector<void *> parts;
  std::vector<size_t> counts;
  size_t numel = 0;
  for (const TensorRef &g : grads) {
    parts.push_back(g.data);
    counts.push_back(size_t(g.numel()));
    numel += size_t(g.numel());
  }
  if (!fresh && (parts != b.parts || counts != b.counts))
    throw Error(std::string(name) +
                ": its gradients are not those of the bucket's other "
                "instruction with the same first gradient and group");
  if (fresh) {
    b.parts = std::move(parts);
    b.counts = std::move(counts);
    b.numel = numel;
    // Placed back to back by Memory (each at a multiple of its alignment,
    // zeros between): one in-place all-reduce of the whole span, gaps
    // included (their sum stays zero).
    bool contiguous = true;
    size_t span = 0;
    const char *first = static_cast<const char *>(b.parts.front());
    for (size_t k = 0; k < b.parts.size(); ++k) {
      contiguous = contiguous && static_cast<const char *>(b.parts[k]) ==
                                     first + span * sizeof(float);
      size_t bytes = b.counts[k] * sizeof(float);
      size_t align = Memory::kContiguousAlign;
      span += (k + 1 < b.parts.size() ? (bytes + align - 1) / align * align
                                      : bytes) /
              sizeof(float);
    }
    const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
    if (backend_.deviceBuckets(g)) {
      // On the device (NCCL): in place, the whole span in one call when
      // contiguous, else each gradient; nothing staged.
      b.device = true;
      if (contiguous) {
        b.deviceParts = {b.parts.front()};
        b.deviceCounts = {span};
      } else {
        b.deviceParts = b.parts;
        b.deviceCounts = b.counts;
      }
    } else if (contiguous && backend_.hostMemory()) {
      b.numel = span; // reduced in place
    } else {
      b.staging.assign(numel, 0.0f);
    }
  }
  if (instr.op == plan::Op::AllReduceStart)
    b.started = true;
  else
    b.waited = true;
}

void BucketReducer::checkPairs() const {
  for (const auto &[key, b] : buckets_)
    if (b.started && !b.waited)
      throw Error("the plan starts the all-reduce of a gradient bucket (" +
                  std::to_string(b.numel) +
                  " elements) that no AllReduceWait completes");
}

BucketReducer::Bucket &
BucketReducer::find(const plan::Instr &instr,
                    const std::vector<TensorRef> &grads) {
  const char *what = plan::opName(instr.op);
  auto it = buckets_.find(key(instr, grads));
  if (it == buckets_.end())
    throw Error(std::string(what) + ": a bucket that was not declared");
  return it->second;
}

float *BucketReducer::pack(Bucket &b) {
  if (b.staging.empty())
    return static_cast<float *>(b.parts.front());
  size_t at = 0;
  for (size_t k = 0; k < b.parts.size(); ++k) {
    backend_.copyToHost(b.staging.data() + at, b.parts[k], b.counts[k] * 4);
    at += b.counts[k];
  }
  return b.staging.data();
}

void BucketReducer::unpack(Bucket &b) {
  if (b.staging.empty())
    return;
  size_t at = 0;
  for (size_t k = 0; k < b.parts.size(); ++k) {
    backend_.copyToDevice(b.parts[k], b.staging.data() + at, b.counts[k] * 4);
    at += b.counts[k];
  }
}

void BucketReducer::start(const plan::Instr &instr,
                          const std::vector<TensorRef> &grads) {
  if (!starting_)
    return;
  Bucket &b = find(instr, grads);
  if (b.inFlight)
    throw Error("AllReduceStart: the bucket's previous all-reduce was never "
                "waited for");
  // The gradients were written by kernels that may still run (a GPU
  // stream): the copy to the staging buffer waits for them.
  const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
  if (b.device) {
    // Ordered after those kernels by the backend, on its own stream.
    b.handle = backend_.startBuckets(g, b.deviceParts, b.deviceCounts);
  } else {
    float *data = pack(b);
    b.handle = comm_.startAllReduce(g, data, b.numel, plan::ReduceOp::Sum);
  }
  b.inFlight = true;
  ++inFlight_;
}

void BucketReducer::wait(const plan::Instr &instr,
                         const std::vector<TensorRef> &grads) {
  Bucket &b = find(instr, grads);
  if (b.inFlight) {
    if (b.device)
      backend_.waitBuckets(b.handle);
    else
      comm_.waitAllReduce(b.handle);
    b.inFlight = false;
    b.handle = -1;
    --inFlight_;
  } else if (b.device) {
    const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
    backend_.waitBuckets(
        backend_.startBuckets(g, b.deviceParts, b.deviceCounts));
  } else {
    const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
    float *data = pack(b);
    comm_.allReduce(g, data, data, b.numel, plan::ReduceOp::Sum);
  }
  unpack(b);
}

size_t BucketReducer::overlapped() const {
  size_t n = 0;
  for (const auto &[key, b] : buckets_)
    n += b.started ? 1 : 0;
  return n;
}

size_t BucketReducer::stagingBytes() const {
  size_t n = 0;
  for (const auto &[key, b] : buckets_)
    n += b.started ? b.staging.size() * sizeof(float) : 0;
  return n;
}

} // namespace mega::rt

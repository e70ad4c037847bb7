//===- BucketReducer.cpp - Gradient buckets reduced in place or in flight -===//
//
// The engine asks Memory to place each all-reduce bucket's gradients back to
// back (a gradient buffer per bucket, as Megatron's), so in host memory a
// bucket is one span, all-reduced in place. Otherwise (device memory, or
// gradients that are not whole persistents) the reduction runs on a packed
// copy: start copies them into the bucket's staging buffer (allocated when
// the plan is loaded, never during a step) and starts one non-blocking
// all-reduce of it; wait completes it and copies the sums back. A backend
// with device collectives (NCCL) reduces the device spans in place on its
// own stream instead (Backend::startBuckets / waitBuckets): no staging at
// all.
//
// A scatter bucket (the distributed optimizer) reduce-scatters each
// gradient on its own: its block must stay whole for the block's update.
// The wait's outputs live in the optimizer program's arena, which the train
// program's kernels use while the collectives run, so nothing is received
// there before the wait: on the host the blocks arrive in the bucket's own
// staging (from the gradients themselves in host memory, else from a packed
// copy) and the wait copies them out; on the device NCCL reduce-scatters
// each gradient in place (this rank's block of the accumulator receives the
// block of the sum) and the wait copies that block out. An unstarted wait
// runs one plain ReduceScatter per gradient, leaving the accumulators alone.
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
  bool scatter = instr.op == plan::Op::ReduceScatterStart ||
                 instr.op == plan::Op::ReduceScatterWait;
  auto [it, fresh] = buckets_.try_emplace(key(instr, grads));
  Bucket &b = it->second;
  if (!fresh && scatter != b.scatter)
    throw Error(std::string(name) +
                ": the bucket's other instruction with the same first "
                "gradient and group is " +
                (b.scatter ? "a reduce-scatter" : "an all-reduce"));
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
  const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
  if (fresh && scatter) {
    b.scatter = true;
    b.parts = std::move(parts);
    b.counts = std::move(counts);
    b.numel = numel;
    b.rank = size_t(g.rank);
    b.size = size_t(g.size);
    for (size_t n : b.counts)
      if (n % b.size != 0)
        throw Error(std::string(name) + ": a gradient of " + std::to_string(n) +
                    " elements does not split into " + std::to_string(b.size) +
                    " blocks");
    if (backend_.deviceBuckets(g)) {
      b.device = true;
      b.deviceParts = b.parts;
      b.deviceCounts = b.counts;
    } else {
      b.blocks.assign(numel / b.size, 0.0f);
      if (!backend_.hostMemory())
        b.staging.assign(numel, 0.0f);
    }
  } else if (fresh) {
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
  if (instr.op == plan::Op::AllReduceStart ||
      instr.op == plan::Op::ReduceScatterStart)
    b.started = true;
  else
    b.waited = true;
}

void BucketReducer::checkPairs() const {
  for (const auto &[key, b] : buckets_)
    if (b.started && !b.waited)
      throw Error(std::string("the plan starts the ") +
                  (b.scatter ? "reduce-scatter" : "all-reduce") +
                  " of a gradient bucket (" + std::to_string(b.numel) +
                  " elements) that no " +
                  (b.scatter ? "ReduceScatterWait" : "AllReduceWait") +
                  " completes");
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
    throw Error(std::string(plan::opName(instr.op)) +
                ": the bucket's previous collective was never waited for");
  // The gradients were written by kernels that may still run (a GPU
  // stream): the copy to the staging buffer waits for them.
  const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
  if (b.scatter) {
    startScatter(b, g);
  } else if (b.device) {
    // Ordered after those kernels by the backend, on its own stream.
    b.handles = {
        backend_.startBuckets(g, b.deviceParts, b.deviceCounts, false)};
  } else {
    float *data = pack(b);
    b.handles = {comm_.startAllReduce(g, data, b.numel, plan::ReduceOp::Sum)};
  }
  b.inFlight = true;
  ++inFlight_;
}

void BucketReducer::startScatter(Bucket &b, const ProcessGroup &g) {
  if (b.device) {
    b.handles = {backend_.startBuckets(g, b.deviceParts, b.deviceCounts, true)};
    return;
  }
  b.handles.clear();
  const float *in = b.staging.empty() ? nullptr : pack(b);
  size_t at = 0, blockAt = 0;
  for (size_t k = 0; k < b.parts.size(); ++k) {
    const float *src = in ? in + at : static_cast<const float *>(b.parts[k]);
    size_t block = b.counts[k] / b.size;
    b.handles.push_back(
        comm_.startReduceScatter(g, src, b.blocks.data() + blockAt, block));
    at += b.counts[k];
    blockAt += block;
  }
}

void BucketReducer::wait(const plan::Instr &instr,
                         const std::vector<TensorRef> &grads,
                         const std::vector<TensorRef> &blocks) {
  Bucket &b = find(instr, grads);
  if (b.scatter) {
    waitScatter(b, instr, grads, blocks);
    return;
  }
  if (b.inFlight) {
    if (b.device)
      backend_.waitBuckets(b.handles.at(0));
    else
      comm_.waitStarted(b.handles.at(0));
    b.inFlight = false;
    b.handles.clear();
    --inFlight_;
  } else if (b.device) {
    const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
    backend_.waitBuckets(
        backend_.startBuckets(g, b.deviceParts, b.deviceCounts, false));
  } else {
    const ProcessGroup &g = comm_.group(plan::ParallelGroup(instr.i.at(0)));
    float *data = pack(b);
    comm_.allReduce(g, data, data, b.numel, plan::ReduceOp::Sum);
  }
  unpack(b);
}

void BucketReducer::waitScatter(Bucket &b, const plan::Instr &instr,
                                const std::vector<TensorRef> &grads,
                                const std::vector<TensorRef> &blocks) {
  if (blocks.size() != b.parts.size())
    throw Error("ReduceScatterWait: " + std::to_string(blocks.size()) +
                " outputs for a bucket of " + std::to_string(b.parts.size()) +
                " gradients");
  if (!b.inFlight) {
    // Nothing started (a step that dumps the local gradients): each
    // gradient reduce-scattered now, as the ReduceScatter instruction would.
    plan::Instr rs;
    rs.op = plan::Op::ReduceScatter;
    rs.i = {instr.i.at(0)};
    for (size_t k = 0; k < grads.size(); ++k)
      backend_.collective(rs, {grads[k]}, {blocks[k]}, comm_);
    return;
  }
  if (b.device) {
    backend_.waitBuckets(b.handles.at(0));
    for (size_t k = 0; k < b.parts.size(); ++k) {
      size_t bytes = b.counts[k] / b.size * sizeof(float);
      backend_.copyOnDevice(
          blocks[k].data,
          static_cast<const char *>(b.parts[k]) + b.rank * bytes, bytes);
    }
  } else {
    for (int h : b.handles)
      comm_.waitStarted(h);
    size_t at = 0;
    for (size_t k = 0; k < b.parts.size(); ++k) {
      size_t block = b.counts[k] / b.size;
      backend_.copyToDevice(blocks[k].data, b.blocks.data() + at,
                            block * sizeof(float));
      at += block;
    }
  }
  b.inFlight = false;
  b.handles.clear();
  --inFlight_;
}

size_t BucketReducer::overlapped() const {
  size_t n = 0;
  for (const auto &[key, b] : buckets_)
    n += b.started ? 1 : 0;
  return n;
}

size_t BucketReducer::scattered() const {
  size_t n = 0;
  for (const auto &[key, b] : buckets_)
    n += b.started && b.scatter ? 1 : 0;
  return n;
}

size_t BucketReducer::stagingBytes() const {
  size_t n = 0;
  for (const auto &[key, b] : buckets_)
    n += b.started ? (b.staging.size() + b.blocks.size()) * sizeof(float) : 0;
  return n;
}

} // namespace mega::rt

//===- Memory.cpp - Device buffers and the persistent tensors -------------===//
#include "Memory.h"

#include "Rng.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace mega::rt {

DeviceBuffer::DeviceBuffer(Backend &backend, size_t bytes)
    : backend_(&backend), bytes_(bytes) {
  // Zero-byte tensors still get a distinct, valid pointer.
  ptr_ = backend.allocate(bytes ? bytes : 64);
  if (!ptr_)
    throw Error("out of device memory allocating " + std::to_string(bytes) +
                " bytes");
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_)
    backend_->release(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer &&o) noexcept
    : backend_(o.backend_), ptr_(std::exchange(o.ptr_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&o) noexcept {
  if (this != &o) {
    if (ptr_)
      backend_->release(ptr_);
    backend_ = o.backend_;
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

uint16_t toBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
    return uint16_t((u >> 16) | 0x40); // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float fromBF16(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

namespace {

int64_t product(const std::vector<int64_t> &s, size_t b, size_t e) {
  int64_t n = 1;
  for (size_t d = b; d < e; ++d)
    n *= s[d];
  return n;
}

/// Copies between a full tensor and part `r` of `S` of its shard:
/// dim shardDim of the full tensor is shardGroups chunks, each cut into S
/// parts; the shard is part r of every chunk, chunks in order. A full dim
/// that S parts of the local size exceed (one chunk) is zero-padded at its
/// end: the padding is zeros in the shard and is dropped going back.
void shardCopy(const plan::Persistent &t, int64_t r, int64_t S,
               const char *full, char *local, bool toLocal) {
  const size_t d = size_t(t.shardDim);
  const std::vector<int64_t> &fs = t.fullShape;
  const int64_t outer = product(fs, 0, d), inner = product(fs, d + 1, fs.size());
  const int64_t F = fs[d], G = t.shardGroups, part = t.shape[d] / G,
                chunk = part * S;
  // The part's entries that exist in the full tensor (all but padding).
  const int64_t real = std::clamp<int64_t>(F - r * part, 0, part);
  const size_t es = plan::dtypeSize(t.dtype);
  const size_t len = size_t(real * inner) * es;
  const size_t pad = size_t((part - real) * inner) * es;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t g = 0; g < G; ++g) {
      const size_t fo = size_t((o * F + g * chunk + r * part) * inner) * es;
      const size_t lo = size_t((o * G * part + g * part) * inner) * es;
      if (toLocal) {
        std::memcpy(local + lo, full + fo, len);
        std::memset(local + lo + len, 0, pad);
      } else {
        std::memcpy(const_cast<char *>(full) + fo, local + lo, len);
      }
    }
}

} // namespace

Memory::Memory(const plan::Plan &plan, Backend &backend, Communicator *comm,
               std::vector<bool> resident,
               const std::vector<std::vector<size_t>> &contiguous)
    : plan_(plan), backend_(backend), comm_(comm) {
  if (!resident.empty() && resident.size() != plan.persistents.size())
    throw Error("internal: residency of " + std::to_string(resident.size()) +
                " persistents for a plan with " +
                std::to_string(plan.persistents.size()));
  buffers_.reserve(plan.persistents.size());
  bytes_.reserve(plan.persistents.size());
  for (size_t k = 0; k < plan.persistents.size(); ++k) {
    const plan::Persistent &t = plan.persistents[k];
    if (t.shardDim >= 0) {
      // plan::validate proved the shapes consistent; the group size must be
      // the number of parts.
      // (ceil: a zero-padded dim leaves part of the last shard empty.)
      size_t d = size_t(t.shardDim);
      int64_t parts = (t.fullShape[d] + t.shape[d] - 1) / t.shape[d];
      const ProcessGroup *g = comm ? &comm->group(plan::ParallelGroup(
                                         t.shardGroup))
                                   : nullptr;
      int64_t size = g ? g->size : 1;
      if (parts != size)
        throw Error("persistent '" + t.name + "' is split " +
                    std::to_string(parts) + " ways but this run's group " +
                    std::to_string(t.shardGroup) + " has " +
                    std::to_string(size) + " rank(s) (launch the plan with " +
                    "its tensor-parallel size)");
    }
    bytes_.push_back(size_t(t.bytes()));
  }
  auto isResident = [&](size_t k) { return resident.empty() || resident[k]; };
  ptrs_.assign(plan.persistents.size(), nullptr);
  std::vector<bool> placed(plan.persistents.size(), false);
  auto padded = [](size_t b) {
    return (b + kContiguousAlign - 1) / kContiguousAlign * kContiguousAlign;
  };
  for (const std::vector<size_t> &group : contiguous) {
    size_t total = 0;
    for (size_t k : group) {
      if (k >= ptrs_.size() || placed[k] || !isResident(k))
        throw Error("internal: a contiguous group of persistents names " +
                    std::to_string(k) +
                    " twice, out of range or not resident");
      placed[k] = true;
      total += padded(bytes_[k] + tail(k));
    }
    // Zero-filled: the gaps between the tensors stay zero.
    buffers_.emplace_back(backend, total);
    char *at = static_cast<char *>(buffers_.back().data());
    for (size_t k : group) {
      ptrs_[k] = at;
      at += padded(bytes_[k] + tail(k));
    }
  }
  for (size_t k = 0; k < plan.persistents.size(); ++k)
    if (!placed[k] && isResident(k)) {
      // (Zero-filled: a tail starts as zeros.)
      buffers_.emplace_back(backend, bytes_[k] + tail(k));
      ptrs_[k] = buffers_.back().data();
    }
}

size_t Memory::residentBytes() const {
  size_t n = 0;
  for (size_t k = 0; k < count(); ++k)
    if (resident(k))
      n += bytes(k);
  return n;
}

size_t Memory::allocatedBytes() const {
  size_t n = 0;
  for (const DeviceBuffer &b : buffers_)
    n += b.bytes();
  return n;
}

const ProcessGroup *Memory::shardGroup(size_t k) const {
  if (!comm_ || !sharded(k))
    return nullptr;
  return &comm_->group(plan::ParallelGroup(info(k).shardGroup));
}

size_t Memory::fullBytes(size_t k) const {
  const std::vector<int64_t> &s = fullShape(k);
  return size_t(product(s, 0, s.size())) * plan::dtypeSize(info(k).dtype);
}

/// The full tensor of shard `t` (`bytes` bytes here, in `local`) gathered
/// over `g` into `dst`.
void Memory::gatherHost(const plan::Persistent &t, const ProcessGroup *g,
                        const char *local, size_t bytes, void *dst) const {
  if (!g || g->size == 1) {
    std::memcpy(dst, local, bytes);
    return;
  }
  // allGather moves f32 elements: the shard's bytes, padded to whole floats.
  const size_t words = (bytes + 3) / 4;
  std::vector<float> mine(words, 0.0f), all(words * size_t(g->size));
  std::memcpy(mine.data(), local, bytes);
  comm_->allGather(*g, mine.data(), all.data(), words);
  for (int r = 0; r < g->size; ++r)
    shardCopy(t, r, g->size, static_cast<const char *>(dst),
              reinterpret_cast<char *>(all.data() + size_t(r) * words), false);
}

void Memory::fullToHost(size_t k, void *dst) const {
  const ProcessGroup *g = shardGroup(k);
  if (!sharded(k) || !g || g->size == 1) {
    if (!nested(k)) {
      toHost(k, dst); // the constructor proved 1 part when unsharded or alone
      return;
    }
  }
  std::vector<char> local(bytes(k));
  toHost(k, local.data());
  if (!nested(k)) {
    gatherHost(info(k), g, local.data(), local.size(), dst);
    return;
  }
  // A block of a shard: the shard over this state's group, then the full
  // tensor over the parameter's.
  const size_t p = size_t(info(k).param);
  std::vector<char> shard(bytes(p));
  gatherHost(info(k), g, local.data(), local.size(), shard.data());
  gatherHost(info(p), shardGroup(p), shard.data(), shard.size(), dst);
}

void Memory::fromFullHost(size_t k, const void *src) {
  if (!sharded(k)) {
    fromHost(k, src);
    return;
  }
  const char *full = static_cast<const char *>(src);
  std::vector<char> shard;
  if (nested(k)) {
    // The parameter's shard first, then this state's block of it.
    const size_t p = size_t(info(k).param);
    const ProcessGroup *pg = shardGroup(p);
    shard.resize(bytes(p));
    shardCopy(info(p), pg ? pg->rank : 0, pg ? pg->size : 1, full,
              shard.data(), true);
    full = shard.data();
  }
  const ProcessGroup *g = shardGroup(k);
  std::vector<char> local(bytes(k));
  shardCopy(info(k), g ? g->rank : 0, g ? g->size : 1, full, local.data(),
            true);
  fromHost(k, local.data());
}

void Memory::initialize(uint64_t seed) {
  std::vector<char> host;
  for (size_t k = 0; k < count(); ++k) {
    // Another pipeline rank draws (and owns) the rest.
    if (!resident(k))
      continue;
    const plan::Persistent &t = info(k);
    if (t.role != plan::Role::Param || t.init == plan::Init::Zeros ||
        t.dtype == plan::DType::I32) {
      zero(k);
      continue;
    }
    // The full tensor (a shard keeps its part below).
    size_t n = fullBytes(k) / plan::dtypeSize(t.dtype);
    Rng rng(mix64(seed) ^ hashString(t.name));
    host.assign(fullBytes(k), 0);
    for (size_t e = 0; e < n; ++e) {
      float v =
          t.init == plan::Init::Ones ? 1.0f : float(t.initStd * rng.normal());
      if (t.dtype == plan::DType::BF16) {
        uint16_t b = toBF16(v);
        std::memcpy(host.data() + 2 * e, &b, 2);
      } else {
        std::memcpy(host.data() + 4 * e, &v, 4);
      }
    }
    fromFullHost(k, host.data());
  }
  refreshParamCopies();
}

void Memory::refreshParamCopies() {
  std::vector<float> param;
  std::vector<uint16_t> copy;
  for (size_t k : withRole(plan::Role::ParamCopy)) {
    if (!resident(k))
      continue; // another pipeline rank's
    const size_t p = size_t(info(k).param);
    // A rank that reads the copy runs the optimizer that updates the
    // parameter, so the parameter is here too (or the plan is wrong).
    if (!resident(p) || info(p).dtype != plan::DType::F32 ||
        bytes(k) * 2 != bytes(p))
      throw Error("persistent '" + info(k).name +
                  "': a bf16 parameter copy without its f32 parameter here");
    param.resize(bytes(p) / 4);
    copy.resize(param.size());
    toHost(p, param.data());
    for (size_t e = 0; e < param.size(); ++e)
      copy[e] = toBF16(param[e]);
    fromHost(k, copy.data());
  }
}

void Memory::zero(size_t k) {
  std::vector<char> z(bytes(k), 0);
  fromHost(k, z.data());
}

void Memory::toHost(size_t k, void *dst) const {
  if (resident(k)) {
    backend_.copyToHost(dst, data(k), bytes(k));
    return;
  }
  auto it = hostCopies_.find(k);
  if (it == hostCopies_.end())
    throw Error("internal: persistent '" + info(k).name +
                "' is neither on this rank nor copied here");
  std::memcpy(dst, it->second.data(), bytes(k));
}

void Memory::fromHost(size_t k, const void *src) {
  if (resident(k)) {
    backend_.copyToDevice(data(k), src, bytes(k));
    return;
  }
  const char *s = static_cast<const char *>(src);
  hostCopies_[k].assign(s, s + bytes(k));
}

int Memory::findParam(const std::string &name) const {
  for (size_t k = 0; k < count(); ++k)
    if (info(k).role == plan::Role::Param && info(k).name == name)
      return int(k);
  return -1;
}

int Memory::stateOf(size_t param, plan::Role role) const {
  for (size_t k = 0; k < count(); ++k)
    if (info(k).role == role && info(k).param == int32_t(param))
      return int(k);
  return -1;
}

std::vector<size_t> Memory::withRole(plan::Role role) const {
  std::vector<size_t> out;
  for (size_t k = 0; k < count(); ++k)
    if (info(k).role == role)
      out.push_back(k);
  return out;
}

int64_t Memory::parameterCount() const {
  int64_t n = 0;
  for (size_t k : withRole(plan::Role::Param))
    n += int64_t(bytes(k) / plan::dtypeSize(info(k).dtype));
  return n;
}

} // namespace mega::rt

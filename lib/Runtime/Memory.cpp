//===- Memory.cpp - Device buffers and the persistent tensors -------------===//
#include "Memory.h"

#include "Rng.h"

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

Memory::Memory(const plan::Plan &plan, Backend &backend)
    : plan_(plan), backend_(backend) {
  buffers_.reserve(plan.persistents.size());
  for (const plan::Persistent &t : plan.persistents) {
    int64_t numel = 1;
    for (int64_t d : t.shape)
      numel *= d;
    buffers_.emplace_back(backend, size_t(numel) * plan::dtypeSize(t.dtype));
  }
}

void Memory::initialize(uint64_t seed) {
  std::vector<char> host;
  for (size_t k = 0; k < count(); ++k) {
    const plan::Persistent &t = info(k);
    if (t.role != plan::Role::Param || t.init == plan::Init::Zeros ||
        t.dtype == plan::DType::I32) {
      zero(k);
      continue;
    }
    size_t n = bytes(k) / plan::dtypeSize(t.dtype);
    Rng rng(mix64(seed) ^ hashString(t.name));
    host.assign(bytes(k), 0);
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
    fromHost(k, host.data());
  }
}

void Memory::zero(size_t k) {
  std::vector<char> z(bytes(k), 0);
  fromHost(k, z.data());
}

void Memory::toHost(size_t k, void *dst) const {
  backend_.copyToHost(dst, data(k), bytes(k));
}

void Memory::fromHost(size_t k, const void *src) {
  backend_.copyToDevice(data(k), src, bytes(k));
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

//===- nccl_test.cpp - The CUDA backend's NCCL path on one GPU ------------===//
//
// What one GPU can check of the NCCL collectives (several GPUs are needed
// for more): with one-rank communicators (mega-run --comm nccl on one
// process, bootstrapped through the single-process communicator), every
// plan collective through Backend::collective against the host-staged path
// of a second backend (outputs poisoned first, bits compared; an output
// overlapping its input; an AllGather of bf16), the gradient buckets on their own stream
// (contiguous and scattered), the pipeline's exchange with itself (two
// sends and two receives in one group, through both backends), and the two
// ways a collective ends badly: an invalid argument and a receive that
// nothing ever matches (the watchdog's deadline), each one Error naming the
// operation and the group, never a hang.
//
// Exit 0: passed; 1: failed; 77: no GPU (ctest reports it as skipped).
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"
#include "Nccl.h"

#include "mega/Runtime/Backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace mega;
using plan::DType;
using plan::Instr;
using plan::Op;
using plan::Value;

namespace {

int failures = 0;

void fail(const std::string &what) {
  std::printf("FAIL %s\n", what.c_str());
  ++failures;
}

std::vector<float> randomVec(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v) {
    x = d(g);
    if (x == 0.0f)
      x = 0.5f;
  }
  return v;
}

/// One operand in its own device buffer of `b`.
struct Buf {
  rt::Backend &b;
  Value value;
  void *ptr;
  Buf(rt::Backend &backend, size_t n) : b(backend) {
    value.dtype = DType::F32;
    value.shape = {int64_t(n)};
    ptr = b.allocate(n * 4);
  }
  ~Buf() { b.release(ptr); }
  rt::TensorRef ref() { return rt::TensorRef{ptr, &value}; }
  void put(const std::vector<float> &v) {
    b.copyToDevice(ptr, v.data(), v.size() * 4);
  }
  std::vector<float> get() {
    std::vector<float> v(size_t(value.numel()));
    b.copyToHost(v.data(), ptr, v.size() * 4);
    return v;
  }
};

bool sameBits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

/// One collective of `n` input floats and `m` output floats through
/// `backend`'s collective(), the output poisoned with NaN first.
std::vector<float> runCollective(rt::Backend &backend, rt::Communicator &comm,
                                 const Instr &instr,
                                 const std::vector<float> &in, size_t m,
                                 bool inPlace) {
  Buf a(backend, in.size());
  a.put(in);
  if (inPlace) {
    backend.collective(instr, {a.ref()}, {a.ref()}, comm);
    return a.get();
  }
  Buf out(backend, m);
  out.put(std::vector<float>(m, std::nanf("")));
  backend.collective(instr, {a.ref()}, {out.ref()}, comm);
  return out.get();
}

void checkCollectives(rt::Backend &nccl, rt::Backend &host,
                      rt::Communicator &comm) {
  struct Case {
    const char *name;
    Op op;
    std::vector<int64_t> i;
    bool inPlace;
  };
  int64_t tensor = int64_t(plan::ParallelGroup::Tensor);
  int64_t data = int64_t(plan::ParallelGroup::Data);
  int64_t pipe = int64_t(plan::ParallelGroup::Pipeline);
  const Case cases[] = {
      {"AllReduce sum", Op::AllReduce, {tensor, 0}, false},
      {"AllReduce max", Op::AllReduce, {tensor, 1}, false},
      {"AllReduce sum in place", Op::AllReduce, {data, 0}, true},
      {"AllGather", Op::AllGather, {tensor}, false},
      {"ReduceScatter", Op::ReduceScatter, {pipe}, false},
  };
  // Large, odd, one element.
  const size_t sizes[] = {50304 * 3, 4097, 1};
  uint64_t seed = 1;
  for (const Case &c : cases)
    for (size_t n : sizes) {
      Instr instr;
      instr.op = c.op;
      instr.i = c.i;
      std::vector<float> in = randomVec(n, seed++);
      std::string what = std::string(c.name) + " n=" + std::to_string(n);
      try {
        std::vector<float> got =
            runCollective(nccl, comm, instr, in, n, c.inPlace);
        std::vector<float> want =
            runCollective(host, comm, instr, in, n, c.inPlace);
        if (!sameBits(got, want))
          fail(what + ": nccl and host-staged results differ");
        else
          std::printf("ok   %s\n", what.c_str());
      } catch (const std::exception &e) {
        fail(what + ": " + e.what());
      }
    }
}

/// A bf16 AllGather (sequence parallelism in bf16 plans), moved as 4-byte
/// words: NCCL against the host-staged path and, in a one-rank group,
/// against its input, bit for bit.
void checkBf16Gather(rt::Backend &nccl, rt::Backend &host,
                     rt::Communicator &comm) {
  Instr instr;
  instr.op = Op::AllGather;
  instr.i = {int64_t(plan::ParallelGroup::Tensor)};
  const size_t sizes[] = {50304 * 2, 4098, 2}; // bf16 elements, even
  uint64_t seed = 101;
  for (size_t n : sizes) {
    std::string what = "AllGather bf16 n=" + std::to_string(n);
    // n bf16 elements are n / 2 words of random bits.
    std::vector<float> in = randomVec(n / 2, seed++);
    auto once = [&](rt::Backend &b) {
      Value v;
      v.dtype = DType::BF16;
      v.shape = {int64_t(n)};
      void *x = b.allocate(n * 2), *y = b.allocate(n * 2);
      std::vector<float> out(n / 2);
      try {
        b.copyToDevice(x, in.data(), n * 2);
        std::vector<float> poison(n / 2, std::nanf(""));
        b.copyToDevice(y, poison.data(), n * 2);
        b.collective(instr, {rt::TensorRef{x, &v}}, {rt::TensorRef{y, &v}},
                     comm);
        b.copyToHost(out.data(), y, n * 2);
      } catch (...) {
        b.release(x);
        b.release(y);
        throw;
      }
      b.release(x);
      b.release(y);
      return out;
    };
    try {
      std::vector<float> got = once(nccl), want = once(host);
      if (!sameBits(got, want))
        fail(what + ": nccl and host-staged results differ");
      else if (!sameBits(got, in))
        fail(what + ": a one-rank gather changed its input");
      else
        std::printf("ok   %s\n", what.c_str());
    } catch (const std::exception &e) {
      fail(what + ": " + e.what());
    }
  }
}

/// An AllReduce whose output starts one element into its input: not
/// NCCL's in-place form, so the backend must read a copy of the input.
void checkOverlap(rt::Backend &nccl, rt::Backend &host,
                  rt::Communicator &comm) {
  const size_t n = 10000;
  Instr instr;
  instr.op = Op::AllReduce;
  instr.i = {int64_t(plan::ParallelGroup::Tensor), 0};
  std::vector<float> v = randomVec(n + 1, 31);
  auto once = [&](rt::Backend &b) {
    Buf buf(b, n + 1);
    buf.put(v);
    Value part;
    part.shape = {int64_t(n)};
    rt::TensorRef in{buf.ptr, &part};
    rt::TensorRef out{static_cast<float *>(buf.ptr) + 1, &part};
    b.collective(instr, {in}, {out}, comm);
    return buf.get();
  };
  try {
    std::vector<float> got = once(nccl), want = once(host);
    if (!sameBits(got, want))
      fail("AllReduce onto its own input shifted by one: results differ");
    else
      std::printf("ok   AllReduce onto its own input shifted by one\n");
  } catch (const std::exception &e) {
    fail(std::string("overlap: ") + e.what());
  }
}

void checkBuckets(rt::Backend &nccl, rt::Communicator &comm) {
  const rt::ProcessGroup &g = comm.group(plan::ParallelGroup::Data);
  if (!nccl.deviceBuckets(g)) {
    fail("buckets: the data group has no device buckets");
    return;
  }
  try {
    // Three buckets in flight at once: one contiguous span, one of three
    // scattered parts, one reduce-scattered; their handles are then reused
    // by a second round.
    const size_t n0 = 3 * 1024 * 1024, counts[3] = {1000, 7, 65536};
    Buf span(nccl, n0), p0(nccl, counts[0]), p1(nccl, counts[1]),
        p2(nccl, counts[2]), sc(nccl, counts[2]);
    std::vector<float> v0 = randomVec(n0, 11), v1 = randomVec(counts[0], 12),
                       v2 = randomVec(counts[1], 13),
                       v3 = randomVec(counts[2], 14),
                       v4 = randomVec(counts[2], 15);
    for (int round = 0; round < 2; ++round) {
      span.put(v0);
      p0.put(v1);
      p1.put(v2);
      p2.put(v3);
      sc.put(v4);
      int h0 = nccl.startBuckets(g, {span.ptr}, {n0}, false);
      int h1 = nccl.startBuckets(g, {p0.ptr, p1.ptr, p2.ptr},
                                 {counts[0], counts[1], counts[2]}, false);
      // The distributed optimizer's in-place reduce-scatter of a part.
      int h2 = nccl.startBuckets(g, {sc.ptr}, {counts[2]}, true);
      if (h0 == h1 || h1 == h2 || h0 == h2)
        fail("buckets: three buckets in flight share a handle (" +
             std::to_string(h0) + ", " + std::to_string(h1) + ", " +
             std::to_string(h2) + ")");
      nccl.waitBuckets(h1);
      nccl.waitBuckets(h2);
      nccl.waitBuckets(h0);
      // One rank: the sum (and its one block) is the value itself, bit for
      // bit.
      if (!sameBits(span.get(), v0) || !sameBits(p0.get(), v1) ||
          !sameBits(p1.get(), v2) || !sameBits(p2.get(), v3) ||
          !sameBits(sc.get(), v4))
        fail("buckets round " + std::to_string(round) +
             ": the sums are not the values");
      else
        std::printf("ok   buckets round %d (handles %d, %d, %d)\n", round, h0,
                    h1, h2);
    }
    bool threw = false;
    try {
      nccl.waitBuckets(1000); // no start returned it
    } catch (const rt::Error &) {
      threw = true;
    }
    if (!threw)
      fail("buckets: waiting for a handle not in flight did not throw");
  } catch (const std::exception &e) {
    fail(std::string("buckets: ") + e.what());
  }
}

/// The pipeline's exchange (Backend::exchange) with this rank: two sends
/// and two receives in one group, through `nccl` (one ncclGroupStart/End,
/// waited for with the deadline) and `host` (staged through the
/// single-process communicator). Sends meet receives in order, the first
/// with the first, so both must deliver each source bit for bit.
void checkExchangeWithSelf(rt::Backend &nccl, rt::Backend &host,
                           rt::Communicator &comm) {
  const rt::ProcessGroup &g = comm.group(plan::ParallelGroup::Pipeline);
  for (rt::Backend *b : {&nccl, &host}) {
    const char *path = b == &nccl ? "nccl" : "host-staged";
    try {
      const size_t n[2] = {12345, 77};
      std::vector<float> v[2] = {randomVec(n[0], 21), randomVec(n[1], 22)};
      Buf src0(*b, n[0]), src1(*b, n[1]), dst0(*b, n[0]), dst1(*b, n[1]);
      src0.put(v[0]);
      src1.put(v[1]);
      dst0.put(std::vector<float>(n[0], std::nanf("")));
      dst1.put(std::vector<float>(n[1], std::nanf("")));
      b->exchange(g,
                  {{false, 0, dst0.ptr, n[0] * 4},
                   {true, 0, src0.ptr, n[0] * 4},
                   {true, 0, src1.ptr, n[1] * 4},
                   {false, 0, dst1.ptr, n[1] * 4}},
                  comm);
      bool ok0 = sameBits(dst0.get(), v[0]), ok1 = sameBits(dst1.get(), v[1]);
      if (!ok0 || !ok1)
        fail(std::string("exchange with itself (") + path +
             "): the received bytes differ");
      else
        std::printf("ok   exchange with itself (%s): %zu and %zu floats\n",
                    path, n[0], n[1]);
    } catch (const std::exception &e) {
      fail(std::string("exchange with itself (") + path + "): " + e.what());
    }
  }
}

/// `body` must throw rt::Error whose message holds every one of `want`
/// (each "a|b" is satisfied by either).
template <typename F>
void expectError(const char *what, const std::vector<std::string> &want,
                 F body) {
  auto t0 = std::chrono::steady_clock::now();
  try {
    body();
    fail(std::string(what) + ": no error");
    return;
  } catch (const rt::Error &e) {
    std::string msg = e.what();
    for (const std::string &w : want) {
      bool found = false;
      for (size_t at = 0; at <= w.size();) {
        size_t bar = std::min(w.find('|', at), w.size());
        found = found || msg.find(w.substr(at, bar - at)) != std::string::npos;
        at = bar + 1;
      }
      if (!found) {
        fail(std::string(what) + ": the message lacks '" + w + "': " + msg);
        return;
      }
    }
    if (msg.find('\n') != std::string::npos) {
      fail(std::string(what) + ": the message is not one line: " + msg);
      return;
    }
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    std::printf("ok   %s after %.2f s: %s\n", what, s, msg.c_str());
  }
}

void checkErrors(rt::Communicator &comm) {
  const rt::ProcessGroup &g = comm.group(plan::ParallelGroup::Tensor);
  float *buf = nullptr;
  if (cudaMalloc(&buf, 4096)) {
    fail("errors: cudaMalloc");
    return;
  }
  cudaStream_t s = nullptr;
  cudaEvent_t done = nullptr;
  cudaStreamCreate(&s);
  cudaEventCreate(&done);
  // A peer outside the one-rank group: NCCL refuses the argument.
  expectError("invalid argument",
              {"nccl: Send over the tensor group (world rank 0)",
               "invalid argument", "aborted"},
              [&] {
                rt::gpu::NcclComms comms(30);
                comms.join(comm, g);
                comms.exchange(g, {{true, 5, buf, 16}}, s, "Send");
              });
  // A receive no send ever matches: the wait's deadline (2 s) ends it and
  // the abort stops the kernel, so the stream drains afterwards. (Should
  // NCCL itself see that a rank's receive from itself has no send, its
  // error is as good: one line, no hang.)
  expectError("timeout",
              {"nccl: Recv over the tensor group (world rank 0)",
               "not finished after 2 s|no progress after 2 s|invalid usage",
               "aborted"},
              [&] {
                rt::gpu::NcclComms comms(2);
                comms.join(comm, g);
                comms.exchange(g, {{false, 0, buf, 16}}, s, "Recv");
                cudaEventRecord(done, s);
                comms.wait(g, done, "Recv");
              });
  cudaError_t e = cudaStreamSynchronize(s);
  if (e != cudaSuccess)
    fail(std::string("after the timeout the stream did not drain: ") +
         cudaGetErrorString(e));
  else
    std::printf("ok   the aborted receive's stream drained\n");
  cudaEventDestroy(done);
  cudaStreamDestroy(s);
  cudaFree(buf);
}

} // namespace

int main() {
  std::string reason;
  if (rt::gpu::deviceCount(reason) <= 0) {
    std::printf("no GPU (%s): skipped\n", reason.c_str());
    return 77;
  }
  try {
    std::printf("NCCL %s\n", rt::gpu::ncclVersionString().c_str());
    std::unique_ptr<rt::Communicator> comm =
        rt::createSingleProcessCommunicator();
    std::unique_ptr<rt::Backend> nccl = rt::createCudaBackend(0);
    std::unique_ptr<rt::Backend> host = rt::createCudaBackend(0);
    // auto on one rank: nothing to set up, the host path stays.
    std::string line = host->setupCollectives(*comm, rt::CommPath::Auto, 30);
    if (!line.empty())
      fail("--comm auto on one rank said: " + line);
    line = nccl->setupCollectives(*comm, rt::CommPath::Nccl, 30);
    std::printf("%s\n", line.c_str());
    if (line.find("collectives: NCCL") != 0)
      fail("--comm nccl did not choose NCCL: " + line);
    // Every group has its communicator, so collective() takes the NCCL
    // path for each (it stages only for a group without one).
    for (int k = 0; k < 3; ++k) {
      const rt::ProcessGroup &g = comm->group(plan::ParallelGroup(k));
      if (!nccl->deviceBuckets(g))
        fail("--comm nccl left " + rt::gpu::describeGroup(g) +
             " without a communicator");
      if (host->deviceBuckets(g))
        fail("the host-staged backend claims NCCL for " +
             rt::gpu::describeGroup(g));
    }
    checkCollectives(*nccl, *host, *comm);
    checkOverlap(*nccl, *host, *comm);
    checkBf16Gather(*nccl, *host, *comm);
    checkBuckets(*nccl, *comm);
    checkExchangeWithSelf(*nccl, *host, *comm);
    checkErrors(*comm);
  } catch (const std::exception &e) {
    fail(std::string("unexpected: ") + e.what());
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}

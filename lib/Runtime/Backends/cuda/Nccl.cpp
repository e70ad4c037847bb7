//===- Nccl.cpp - NCCL communicators for the CUDA backend's collectives ---===//
//
// See Nccl.h. Every NCCL call goes through settle(): a non-blocking
// communicator answers ncclInProgress while the call still needs its peers
// (connection set-up, the first use of a channel), and the next call on that
// communicator may only come once ncclCommGetAsyncError says ncclSuccess;
// settle polls for that with the deadline. Completion of the enqueued work
// is wait()'s business: an event recorded after it, polled likewise.
//
//===----------------------------------------------------------------------===//
#include "Nccl.h"

#include "Common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

namespace mega::rt::gpu {

namespace {

using Clock = std::chrono::steady_clock;

const char *kindName(plan::ParallelGroup k) {
  switch (k) {
  case plan::ParallelGroup::Tensor:
    return "tensor";
  case plan::ParallelGroup::Data:
    return "data";
  case plan::ParallelGroup::Pipeline:
    return "pipeline";
  }
  return "unknown";
}

/// Polls without burning a core for long: a millisecond of yields (short
/// collectives finish in microseconds), then naps.
class Poll {
public:
  explicit Poll(double seconds)
      : start_(Clock::now()),
        deadline_(start_ + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(seconds))) {}
  /// False once the deadline has passed.
  bool next() {
    Clock::time_point now = Clock::now();
    if (now >= deadline_)
      return false;
    if (now - start_ < std::chrono::milliseconds(1))
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    return true;
  }

private:
  Clock::time_point start_, deadline_;
};

/// "300", "0.5": the timeout as the user wrote it.
std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

/// ncclGetLastError's text in parentheses, or nothing when it has none.
std::string lastError(ncclComm_t comm) {
  const char *last = ncclGetLastError(comm);
  return last && *last ? std::string(" (") + last + ")" : std::string();
}

/// Tag of the unique id's message, apart from the pipeline's tags (the
/// exchange runs before any of them).
constexpr int kIdTag = 0x4e4343;

} // namespace

std::string describeGroup(const ProcessGroup &g) {
  std::string s = std::string("the ") + kindName(g.kind) +
                  " group (world rank" +
                  (g.worldRanks.size() == 1 ? " " : "s ");
  for (size_t k = 0; k < g.worldRanks.size(); ++k)
    s += (k ? ", " : "") + std::to_string(g.worldRanks[k]);
  return s + ")";
}

std::string ncclVersionString() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess)
    return "(unknown version)";
  // NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z from 2.9 on.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

NcclComms::NcclComms(double timeoutSeconds) : timeout_(timeoutSeconds) {}

NcclComms::~NcclComms() {
  // Nothing here may throw. At a normal end every NCCL operation has
  // completed (each was waited for), so an abort only frees this rank's
  // resources; unlike ncclCommDestroy it has no closing step with the
  // peers, which a rank leaving on an error could never finish.
  abortAll();
}

void NcclComms::abortAll() {
  for (Entry &e : entries_)
    if (e.comm) {
      ncclCommAbort(e.comm);
      e.comm = nullptr;
    }
}

bool NcclComms::has(const ProcessGroup &g) const {
  size_t k = size_t(g.kind);
  return k < 3 && entries_[k].comm;
}

NcclComms::Entry &NcclComms::entry(const ProcessGroup &g, const char *what) {
  size_t k = size_t(g.kind);
  if (k >= 3 || !entries_[k].comm)
    throw Error(std::string("nccl: ") + what + " over " + describeGroup(g) +
                ": the group has no NCCL communicator");
  return entries_[k];
}

void NcclComms::abort(Entry &e, const char *what, const std::string &why) {
  std::string msg = std::string("nccl: ") + what + " over " + e.name + ": " +
                    why + "; communicator aborted";
  // Every communicator's kernels stop (a stuck operation of another group
  // would otherwise keep the teardown waiting); the job ends with `msg`.
  abortAll();
  throw Error(msg);
}

void NcclComms::settle(Entry &e, ncclResult_t r, const char *what) {
  Poll poll(timeout_);
  while (r == ncclInProgress) {
    if (!poll.next())
      abort(e, what,
            "no progress after " + seconds(timeout_) +
                " s (a rank of the group did not take part, or is stuck)");
    ncclResult_t q = ncclCommGetAsyncError(e.comm, &r);
    if (q != ncclSuccess)
      r = q; // the query itself failing is the error to report
  }
  if (r != ncclSuccess) {
    abort(e, what, std::string(ncclGetErrorString(r)) + lastError(e.comm));
  }
}

void NcclComms::join(Communicator &comm, const ProcessGroup &g) {
  size_t k = size_t(g.kind);
  if (k >= 3)
    throw Error("nccl: unknown process group kind " + std::to_string(k));
  Entry &e = entries_[k];
  if (e.comm)
    throw Error("nccl: " + describeGroup(g) + " joined twice");
  e.name = describeGroup(g);
  ncclUniqueId id{};
  if (g.rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      throw Error("nccl: ncclGetUniqueId for " + e.name + ": " +
                  ncclGetErrorString(r) + lastError(nullptr));
    for (int peer = 1; peer < g.size; ++peer)
      comm.send(g, peer, kIdTag, &id, sizeof id);
  } else {
    comm.recv(g, 0, kIdTag, &id, sizeof id);
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&e.comm, g.size, id, g.rank, &config);
  if (!e.comm) // failed before there was a communicator to poll or abort
    throw Error("nccl: creating the communicator of " + e.name + ": " +
                ncclGetErrorString(r) + lastError(nullptr));
  settle(e, r, "creating the communicator");
}

void NcclComms::allReduce(const ProcessGroup &g, const float *in, float *out,
                          size_t n, plan::ReduceOp op, cudaStream_t s) {
  Entry &e = entry(g, "AllReduce");
  ncclRedOp_t red = op == plan::ReduceOp::Max ? ncclMax : ncclSum;
  settle(e, ncclAllReduce(in, out, n, ncclFloat32, red, e.comm, s),
         "AllReduce");
}

void NcclComms::allGather(const ProcessGroup &g, const float *in, float *out,
                          size_t n, cudaStream_t s) {
  Entry &e = entry(g, "AllGather");
  settle(e, ncclAllGather(in, out, n, ncclFloat32, e.comm, s), "AllGather");
}

void NcclComms::reduceScatter(const ProcessGroup &g, const float *in,
                              float *out, size_t n, cudaStream_t s) {
  Entry &e = entry(g, "ReduceScatter");
  settle(e, ncclReduceScatter(in, out, n, ncclFloat32, ncclSum, e.comm, s),
         "ReduceScatter");
}

void NcclComms::allReduceParts(const ProcessGroup &g,
                               const std::vector<void *> &parts,
                               const std::vector<size_t> &counts, bool scatter,
                               cudaStream_t s) {
  const char *what = scatter ? "the gradient bucket's ReduceScatter"
                             : "the gradient bucket's AllReduce";
  Entry &e = entry(g, what);
  if (parts.size() != counts.size())
    throw Error(std::string("nccl: ") + what + ": " +
                std::to_string(parts.size()) + " parts but " +
                std::to_string(counts.size()) + " counts");
  size_t size = size_t(g.size), rank = size_t(g.rank);
  if (scatter)
    for (size_t n : counts)
      if (n % size != 0)
        throw Error(std::string("nccl: ") + what + ": " + std::to_string(n) +
                    " elements do not split into " + std::to_string(size) +
                    " blocks");
  // Inside a group the calls only queue (no result but argument errors);
  // ncclGroupEnd launches them all and is the call to settle.
  settle(e, ncclGroupStart(), what);
  ncclResult_t first = ncclSuccess;
  for (size_t k = 0; k < parts.size(); ++k) {
    // In place: NCCL's reduce-scatter may receive into the sender's own
    // block (recvbuff = sendbuff + rank * recvcount).
    float *part = static_cast<float *>(parts[k]);
    size_t block = counts[k] / size;
    ncclResult_t r = scatter
                         ? ncclReduceScatter(part, part + rank * block, block,
                                             ncclFloat32, ncclSum, e.comm, s)
                         : ncclAllReduce(part, part, counts[k], ncclFloat32,
                                         ncclSum, e.comm, s);
    if (first == ncclSuccess)
      first = r;
  }
  ncclResult_t end = ncclGroupEnd();
  settle(e, first != ncclSuccess ? first : end, what);
}

void NcclComms::exchange(const ProcessGroup &g,
                         const std::vector<PeerTransfer> &transfers,
                         cudaStream_t s, const char *what) {
  Entry &e = entry(g, what);
  // One group: its sends and receives progress together, so the pairs that
  // would wait for each other (1F1B's send-forward / receive-backward) meet.
  settle(e, ncclGroupStart(), what);
  ncclResult_t first = ncclSuccess;
  for (const PeerTransfer &t : transfers) {
    ncclResult_t r =
        t.send ? ncclSend(t.data, t.bytes, ncclChar, t.peer, e.comm, s)
               : ncclRecv(t.data, t.bytes, ncclChar, t.peer, e.comm, s);
    if (first == ncclSuccess)
      first = r;
  }
  ncclResult_t end = ncclGroupEnd();
  settle(e, first != ncclSuccess ? first : end, what);
}

void NcclComms::wait(const ProcessGroup &g, cudaEvent_t done,
                     const char *what) {
  Entry &e = entry(g, what);
  Poll poll(timeout_);
  for (;;) {
    cudaError_t q = cudaEventQuery(done);
    if (q == cudaSuccess)
      return;
    if (q != cudaErrorNotReady)
      abort(e, what,
            std::string("waiting for it: ") + cudaGetErrorString(q) + " (" +
                cudaGetErrorName(q) + ")");
    ncclResult_t st = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(e.comm, &st);
    if (r != ncclSuccess)
      st = r;
    if (st != ncclSuccess && st != ncclInProgress) {
      abort(e, what, std::string(ncclGetErrorString(st)) + lastError(e.comm));
    }
    if (!poll.next())
      abort(e, what,
            "not finished after " + seconds(timeout_) +
                " s (--comm-timeout; a rank of the group did not take part, "
                "or is stuck)");
  }
}

//===----------------------------------------------------------------------===//
// Choosing NCCL: one GPU per rank
//===----------------------------------------------------------------------===//

std::string sharedGpu(Communicator &comm) {
  // Record: world rank, UUID (16 bytes), PCI domain, bus, device; floats
  // hold each exactly (all below 2^24), which is what allGather moves.
  constexpr size_t kRecord = 20;
  int dev = 0;
  checkCuda(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp prop{};
  checkCuda(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  std::vector<float> all(kRecord);
  all[0] = float(comm.worldRank());
  for (size_t b = 0; b < 16; ++b)
    all[1 + b] = float(static_cast<unsigned char>(prop.uuid.bytes[b]));
  all[17] = float(prop.pciDomainID);
  all[18] = float(prop.pciBusID);
  all[19] = float(prop.pciDeviceID);
  for (int k = 0; k < 3; ++k) {
    const ProcessGroup &g = comm.group(plan::ParallelGroup(k));
    if (g.size <= 1)
      continue;
    std::vector<float> grown(all.size() * size_t(g.size));
    comm.allGather(g, all.data(), grown.data(), all.size());
    all.swap(grown);
  }
  size_t n = all.size() / kRecord;
  for (size_t a = 0; a < n; ++a)
    for (size_t b = a + 1; b < n; ++b) {
      const float *ra = &all[a * kRecord], *rb = &all[b * kRecord];
      if (!std::equal(ra + 1, ra + 17, rb + 1))
        continue;
      char pci[32];
      std::snprintf(pci, sizeof pci, "%04x:%02x:%02x", unsigned(ra[17]),
                    unsigned(ra[18]), unsigned(ra[19]));
      int x = int(ra[0]), y = int(rb[0]);
      return "world ranks " + std::to_string(std::min(x, y)) + " and " +
             std::to_string(std::max(x, y)) + " share the GPU at PCI " + pci;
    }
  return "";
}

//===----------------------------------------------------------------------===//
// The backend's collectives
//===----------------------------------------------------------------------===//

NcclCollectives::NcclCollectives(cudaStream_t compute, double timeoutSeconds)
    : comms_(timeoutSeconds), compute_(compute) {
  // The highest priority: a bucket's all-reduce kernels are scheduled ahead
  // of the backward's, so the reduction finishes while the backward runs.
  int least = 0, greatest = 0;
  checkCuda(cudaDeviceGetStreamPriorityRange(&least, &greatest),
            "cudaDeviceGetStreamPriorityRange");
  checkCuda(
      cudaStreamCreateWithPriority(&comm_, cudaStreamNonBlocking, greatest),
      "cudaStreamCreateWithPriority");
  checkCuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming),
            "cudaEventCreateWithFlags");
  checkCuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming),
            "cudaEventCreateWithFlags");
}

NcclCollectives::~NcclCollectives() {
  // Nothing here may throw. A bucket still in flight on an error path may
  // wait for peers that have gone: stop the kernels before draining.
  if (comm_ && cudaStreamQuery(comm_) == cudaErrorNotReady)
    comms_.abortAll();
  if (comm_) {
    cudaStreamSynchronize(comm_);
    cudaStreamDestroy(comm_);
  }
  for (Pending &p : buckets_)
    if (p.done)
      cudaEventDestroy(p.done);
  if (ready_)
    cudaEventDestroy(ready_);
  if (done_)
    cudaEventDestroy(done_);
  if (scratch_)
    cudaFree(scratch_);
  cudaGetLastError();
}

void NcclCollectives::run(const plan::Instr &instr,
                          const std::vector<TensorRef> &ins,
                          const std::vector<TensorRef> &outs,
                          const ProcessGroup &g) {
  using plan::Op;
  const char *name = plan::opName(instr.op);
  // The plan's collectives move float32, or for AllGather bf16 as whole
  // 4-byte words (plan::validate: an even count); the host-staged path
  // does the same. Counts below are in words.
  const bool words = instr.op == Op::AllGather;
  for (const TensorRef &t : ins)
    if (t.value->dtype != plan::DType::F32 &&
        !(words && t.value->dtype == plan::DType::BF16))
      throw Error(std::string(name) + ": nccl moves float32 operands only");
  for (const TensorRef &t : outs)
    if (t.value->dtype != plan::DType::F32 &&
        !(words && t.value->dtype == plan::DType::BF16))
      throw Error(std::string(name) + ": nccl moves float32 operands only");
  const std::vector<int64_t> &i = instr.i;
  size_t inN = ins.empty() ? 0 : size_t(ins[0].value->bytes()) / 4;
  size_t outN = outs.empty() ? 0 : size_t(outs[0].value->bytes()) / 4;
  // Send/Recv: i[1] is the peer's offset in the group, as the staged path.
  auto peer = [&] {
    return int((g.rank + i.at(1) % g.size + g.size) % g.size);
  };
  // NCCL takes an input that is its output only in its in-place forms (the
  // same bytes for AllReduce; this rank's part of the other's for
  // AllGather and ReduceScatter). The host-staged path takes any overlap,
  // so any other one reads a copy of the input.
  const float *in = ins.empty() ? nullptr : ins[0].f32();
  if (!ins.empty() && !outs.empty()) {
    const char *a = static_cast<const char *>(ins[0].data);
    const char *o = static_cast<const char *>(outs[0].data);
    bool overlap = a < o + outN * 4 && o < a + inN * 4;
    size_t r = size_t(g.rank);
    bool inPlace = (instr.op == Op::AllReduce && a == o) ||
                   (instr.op == Op::AllGather && a == o + r * inN * 4) ||
                   (instr.op == Op::ReduceScatter && o == a + r * outN * 4);
    if (overlap && !inPlace) {
      if (scratchBytes_ < inN * 4) {
        if (scratch_)
          checkCuda(cudaFree(scratch_), "cudaFree"); // blocking: idle
        scratch_ = nullptr;
        scratchBytes_ = 0;
        checkCuda(cudaMalloc(&scratch_, inN * 4), "cudaMalloc (nccl input)");
        scratchBytes_ = inN * 4;
      }
      checkCuda(cudaMemcpyAsync(scratch_, in, inN * 4, cudaMemcpyDeviceToDevice,
                                compute_),
                "cudaMemcpyAsync (nccl input)");
      in = static_cast<const float *>(scratch_);
    }
  }
  switch (instr.op) {
  case Op::AllReduce:
    comms_.allReduce(g, in, outs[0].f32(), inN, plan::ReduceOp(i.at(1)),
                     compute_);
    break;
  case Op::AllGather:
    comms_.allGather(g, in, outs[0].f32(), inN, compute_);
    break;
  case Op::ReduceScatter:
    comms_.reduceScatter(g, in, outs[0].f32(), outN, compute_);
    break;
  case Op::Send:
    comms_.exchange(g, {{true, peer(), const_cast<float *>(in), inN * 4}},
                    compute_, name);
    break;
  case Op::Recv:
    comms_.exchange(g, {{false, peer(), outs[0].data, outN * 4}}, compute_,
                    name);
    break;
  default:
    throw Error(std::string(name ? name : "opcode") +
                " is not a collective nccl runs");
  }
  checkCuda(cudaEventRecord(done_, compute_), "cudaEventRecord");
  comms_.wait(g, done_, name);
}

void NcclCollectives::exchange(const ProcessGroup &g,
                               const std::vector<PeerTransfer> &transfers) {
  const char *what = "the pipeline's Send/Recv";
  comms_.exchange(g, transfers, compute_, what);
  checkCuda(cudaEventRecord(done_, compute_), "cudaEventRecord");
  comms_.wait(g, done_, what);
}

int NcclCollectives::startBuckets(const ProcessGroup &g,
                                  const std::vector<void *> &parts,
                                  const std::vector<size_t> &counts,
                                  bool scatter) {
  size_t h = 0;
  while (h < buckets_.size() && buckets_[h].busy)
    ++h;
  if (h == buckets_.size()) {
    buckets_.emplace_back();
    checkCuda(
        cudaEventCreateWithFlags(&buckets_[h].done, cudaEventDisableTiming),
        "cudaEventCreateWithFlags");
  }
  // The gradients come from kernels queued on the compute stream: the
  // communication stream waits for them, the compute stream goes on.
  checkCuda(cudaEventRecord(ready_, compute_), "cudaEventRecord");
  checkCuda(cudaStreamWaitEvent(comm_, ready_, 0), "cudaStreamWaitEvent");
  comms_.allReduceParts(g, parts, counts, scatter, comm_);
  Pending &p = buckets_[h];
  checkCuda(cudaEventRecord(p.done, comm_), "cudaEventRecord");
  p.group = g;
  p.busy = true;
  return int(h);
}

void NcclCollectives::waitBuckets(int handle) {
  if (handle < 0 || size_t(handle) >= buckets_.size() ||
      !buckets_[size_t(handle)].busy)
    throw Error("nccl: waiting for gradient bucket " + std::to_string(handle) +
                ", which is not in flight");
  Pending &p = buckets_[size_t(handle)];
  p.busy = false;
  comms_.wait(p.group, p.done, "the gradient bucket's collective");
  // The optimizer's kernels read the sums. The event has completed already
  // (the host waited, for the deadline's sake); the stream dependency
  // states the order for the device all the same.
  checkCuda(cudaStreamWaitEvent(compute_, p.done, 0), "cudaStreamWaitEvent");
}

} // namespace mega::rt::gpu

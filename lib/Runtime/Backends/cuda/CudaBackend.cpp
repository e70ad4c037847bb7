//===- CudaBackend.cpp - The CUDA backend: memory, checks, dispatch -------===//
//
// One device, one stream, one cuBLAS handle. Launches only enqueue; the
// copies to and from the host synchronise the stream (the engine reads a
// loss or writes tokens through them, and the host buffer may go away right
// after), and so does synchronize(). Each synchronisation also reports the
// first data error a kernel recorded (see Common.h).
//
// check(): the attribute checks are the CPU backend's, reached through its
// public interface: a plan the CPU accepts is exactly a plan the GPU
// accepts, and the checks live in one place. On top come what only this
// backend needs (dtypes, the Elementwise parameter limits).
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"

#include "Common.h"
#include "Jit.h"
#ifdef MEGA_HAVE_NCCL
#include "Nccl.h"
#endif
#include "CudnnAttention.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace mega::rt::gpu {

//===----------------------------------------------------------------------===//
// Errors and scratch
//===----------------------------------------------------------------------===//

[[noreturn]] void fail(const char *api, cudaError_t e) {
  throw Error(std::string("cuda: ") + api + ": " + cudaGetErrorString(e) +
              " (" + cudaGetErrorName(e) + ")");
}

[[noreturn]] void failBlas(const char *api, cublasStatus_t s) {
  throw Error(std::string("cuda: ") + api + ": " + cublasGetStatusString(s) +
              " (" + cublasGetStatusName(s) + ")");
}

void checkLaunch(const char *kernel) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(std::string("cuda: launching ") + kernel + ": " +
                cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

Workspace::~Workspace() {
  if (ptr_) {
    cudaStreamSynchronize(stream_);
    cudaFree(ptr_);
  }
}

/// True while `stream` is being recorded into a graph.
static bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  checkCuda(cudaStreamIsCapturing(stream, &st), "cudaStreamIsCapturing");
  return st != cudaStreamCaptureStatusNone;
}

void *Workspace::get(size_t bytes) {
  if (bytes <= capacity_)
    return ptr_;
  if (capturing(stream_))
    throw Error("kernel scratch would grow from " + std::to_string(capacity_) +
                " to " + std::to_string(bytes) + " bytes while recording");
  size_t want = std::max(bytes, capacity_ * 2);
  want = (want + (size_t(1) << 20) - 1) >> 20 << 20; // whole MiB
  if (ptr_) {
    // Kernels still queued may use the old buffer.
    checkCuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    checkCuda(cudaFree(ptr_), "cudaFree");
    ptr_ = nullptr;
    capacity_ = 0;
  }
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    cudaGetLastError(); // an allocation failure is not sticky; clear it
    throw Error(
        "cuda: out of device memory for " + std::to_string(want) +
        " bytes of kernel scratch (cudaMalloc: " + cudaGetErrorString(e) + ")");
  }
  ptr_ = p;
  capacity_ = want;
  ++generation_;
  return ptr_;
}

TableCache::~TableCache() {
  if (!entries_.empty())
    cudaStreamSynchronize(stream_);
  for (auto &kv : entries_)
    cudaFree(kv.second.dev);
}

const void *TableCache::get(const void *key, const void *host, size_t bytes) {
  Entry &e = entries_[key];
  if (e.dev && e.host.size() == bytes &&
      std::memcmp(e.host.data(), host, bytes) == 0)
    return e.dev; // the steady state: nothing to upload
  if (capturing(stream_))
    throw Error("a kernel table would be uploaded while recording");
  if (e.dev)
    ++generation_; // a recording may hold the old contents or address
  if (e.dev && e.host.size() != bytes) {
    // Kernels still queued may read the old table.
    checkCuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    checkCuda(cudaFree(e.dev), "cudaFree");
    e.dev = nullptr;
  }
  if (!e.dev) {
    cudaError_t err = cudaMalloc(&e.dev, bytes ? bytes : 1);
    if (err != cudaSuccess) {
      cudaGetLastError();
      e.dev = nullptr;
      e.host.clear();
      fail("cudaMalloc (kernel table)", err);
    }
  }
  const char *h = static_cast<const char *>(host);
  e.host.assign(h, h + bytes);
  // Stream-ordered: a launch queued before still reads the old contents.
  // From pageable memory the copy has left e.host when the call returns.
  checkCuda(cudaMemcpyAsync(e.dev, e.host.data(), bytes,
                            cudaMemcpyHostToDevice, stream_),
            "cudaMemcpyAsync (kernel table)");
  return e.dev;
}

namespace {

//===----------------------------------------------------------------------===//
// The backend
//===----------------------------------------------------------------------===//

/// A graph node's kind as the log names it.
const char *graphNodeKind(cudaGraphNodeType t) {
  switch (t) {
  case cudaGraphNodeTypeMemcpy:
    return "memcpy";
  case cudaGraphNodeTypeMemset:
    return "memset";
  case cudaGraphNodeTypeHost:
    return "host";
  case cudaGraphNodeTypeGraph:
    return "child graph";
  case cudaGraphNodeTypeEmpty:
    return "empty";
  case cudaGraphNodeTypeWaitEvent:
    return "event wait";
  case cudaGraphNodeTypeEventRecord:
    return "event record";
  case cudaGraphNodeTypeMemAlloc:
    return "alloc";
  case cudaGraphNodeTypeMemFree:
    return "free";
  case cudaGraphNodeTypeConditional:
    return "conditional";
  default:
    return "other";
  }
}

/// One program run's launches as an instantiated CUDA graph. It holds the
/// addresses of the kernel scratch and tables as they were when recorded,
/// so it refuses to replay once either has moved.
class CudaGraph final : public LaunchGraph {
public:
  CudaGraph(cudaStream_t stream, cudaGraphExec_t exec, size_t kernels,
            size_t others, std::string details, const Workspace &ws,
            const TableCache &tables)
      : stream_(stream), exec_(exec), kernels_(kernels), others_(others),
        details_(std::move(details)), ws_(ws), tables_(tables),
        wsGeneration_(ws.generation()), tablesGeneration_(tables.generation()) {
  }
  ~CudaGraph() override {
    // Nothing here may throw; a replay still queued keeps the exec alive
    // (CUDA defers its release).
    cudaGraphExecDestroy(exec_);
  }
  bool replay() override {
    if (ws_.generation() != wsGeneration_ ||
        tables_.generation() != tablesGeneration_)
      return false;
    checkCuda(cudaGraphLaunch(exec_, stream_), "cudaGraphLaunch");
    return true;
  }
  const char *kind() const override { return "CUDA graph"; }
  size_t kernels() const override { return kernels_; }
  size_t otherNodes() const override { return others_; }
  std::string details() const override { return details_; }

private:
  cudaStream_t stream_;
  cudaGraphExec_t exec_;
  size_t kernels_, others_;
  std::string details_;
  const Workspace &ws_;
  const TableCache &tables_;
  uint64_t wsGeneration_, tablesGeneration_;
};

class CudaBackend final : public Backend {
public:
  CudaBackend(int device, const CudaOptions &options) {
    checker_ = createCpuBackend(1); // first: it may refuse this CPU
    checkCuda(cudaSetDevice(device), "cudaSetDevice");
    // --wgrad-stream: the main stream above the side stream, so that the
    // backward's chain gets the multiprocessors first and the weight
    // gradients fill what it leaves (and under NCCL's stream, Nccl.cpp,
    // where there are levels enough). MEGA_CUDA_SIDE_PRIORITY=0 leaves both
    // at the default, to compare.
    int mainPriority = 0;
    if (options.wgradStream) {
      const char *env = std::getenv("MEGA_CUDA_SIDE_PRIORITY");
      int least = 0, greatest = 0;
      checkCuda(cudaDeviceGetStreamPriorityRange(&least, &greatest),
                "cudaDeviceGetStreamPriorityRange");
      if (!(env && std::string(env) == "0") && greatest < least) {
        mainPriority = least - greatest >= 2 ? greatest + 1 : greatest;
        sidePriority_ = least;
        priorities_ = true;
      }
    }
    checkCuda(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking,
                                           mainPriority),
              "cudaStreamCreateWithPriority");
    ws_ = std::make_unique<Workspace>(stream_);
    tables_ = std::make_unique<TableCache>(stream_);
    checkBlas(cublasLtCreate(&lt_), "cublasLtCreate");
    makeGemmScratch(stream_, blas_, ltWorkspace_);
    ltPlans_ = std::make_unique<LtPlans>();
    // The error record lives on the device (kernels claim it with an
    // atomic); each synchronisation copies it into pinned host memory.
    checkCuda(
        cudaMalloc(reinterpret_cast<void **>(&errDev_), sizeof(DeviceError)),
        "cudaMalloc");
    checkCuda(cudaMemsetAsync(errDev_, 0, sizeof(DeviceError), stream_),
              "cudaMemsetAsync");
    checkCuda(cudaMallocHost(reinterpret_cast<void **>(&errHost_),
                             sizeof(DeviceError)),
              "cudaMallocHost");
    std::memset(errHost_, 0, sizeof(DeviceError));
    int sms = 0;
    checkCuda(
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
    ctx_.stream = stream_;
    ctx_.blas = blas_;
    ctx_.lt = lt_;
    ctx_.ltPlans = ltPlans_.get();
    ctx_.ltWorkspace = ltWorkspace_;
    ctx_.ltWorkspaceBytes = kLtWorkspaceBytes;
    ctx_.ws = ws_.get();
    ctx_.tables = tables_.get();
    ctx_.err = errDev_;
    ctx_.sms = sms > 0 ? sms : 1;
    ewJit_ = std::make_unique<EwJit>(device);
    ctx_.ewJit = ewJit_.get();
    chooseAttention(options.attention);
    ctx_.gemmAutotune = options.gemmAutotune || options.gemmAutotuneWide;
    ctx_.gemmAutotuneWide = options.gemmAutotuneWide;
    ctx_.gemmCandidate = options.gemmCandidate;
    keepGemmChoices(device, options);
    wgradStream_ = options.wgradStream;
  }

  /// CudaOptions::gemmChoices: kept only for this GPU's name and this
  /// cuBLASLt (cuBLASLt's algorithm structure holds for those alone).
  void keepGemmChoices(int device, const CudaOptions &options) {
    gemmChoices_ = options.gemmChoices;
    saveGemmChoices_ = options.saveGemmChoices;
    if (!gemmChoices_)
      return;
    cudaDeviceProp prop{};
    checkCuda(cudaGetDeviceProperties(&prop, device),
              "cudaGetDeviceProperties");
    const std::string name = prop.name;
    const int64_t lt = int64_t(cublasLtGetVersion());
    GemmChoices &c = *gemmChoices_;
    if (!c.byKey.empty() && (c.device != name || c.cublasLt != lt)) {
      std::fprintf(stderr,
                   "cuda: autotune: the kept GEMM algorithms were timed on %s "
                   "with cuBLASLt %lld, this is %s with cuBLASLt %lld: timing "
                   "them again\n",
                   c.device.c_str(), (long long)c.cublasLt, name.c_str(),
                   (long long)lt);
      c.byKey.clear();
    }
    c.device = name;
    c.cublasLt = lt;
    ctx_.gemmChoices = gemmChoices_.get();
    ctx_.saveGemmChoices = &saveGemmChoices_;
  }

  ~CudaBackend() override {
    // Nothing here may throw; errors at teardown have nowhere to go.
#ifdef MEGA_HAVE_NCCL
    nccl_.reset(); // first: its stream waits on the compute stream's events
#endif
    if (stream_)
      cudaStreamSynchronize(stream_);
    ws_.reset();
    ewJit_.reset(); // unloads the generated kernels (the stream is drained)
    cudnn_.reset();
    tables_.reset();
    ltPlans_.reset(); // before the handle its descriptors belong to
    if (side_)
      cudaStreamSynchronize(side_);
    for (cudaEvent_t e : marks_)
      cudaEventDestroy(e);
    if (sideBlas_)
      cublasDestroy(sideBlas_);
    if (sideLtWorkspace_)
      cudaFree(sideLtWorkspace_);
    if (side_)
      cudaStreamDestroy(side_);
    if (blas_)
      cublasDestroy(blas_);
    if (lt_)
      cublasLtDestroy(lt_);
    if (ltWorkspace_)
      cudaFree(ltWorkspace_);
    if (errDev_)
      cudaFree(errDev_);
    if (errHost_)
      cudaFreeHost(errHost_);
    if (stream_)
      cudaStreamDestroy(stream_);
  }

  const char *name() const override { return "cuda"; }

  //===--------------------------------------------------------------------===//
  // Collectives: NCCL on device memory, or host-staged (Backend's default)
  //===--------------------------------------------------------------------===//

  std::string setupCollectives(Communicator &comm, CommPath path,
                               double timeoutSeconds) override {
    const int world = comm.worldSize();
    std::string host =
        std::string("collectives: host-staged through ") + comm.name();
    if (path == CommPath::Host)
      return world > 1 ? host + " (--comm host)" : "";
#ifndef MEGA_HAVE_NCCL
    (void)timeoutSeconds;
    if (path == CommPath::Nccl)
      throw Error("--comm nccl: this mega-run was built without NCCL (no "
                  "nccl.h and libnccl beside the CUDA toolkit it was built "
                  "with); use --comm host");
    return world > 1 ? host + " (this mega-run was built without NCCL)" : "";
#else
    if (path == CommPath::Auto && world == 1)
      return ""; // no group has a peer
    if (!(timeoutSeconds > 0))
      throw Error("--comm-timeout must be positive, not " +
                  std::to_string(timeoutSeconds));
    std::string shared = sharedGpu(comm);
    if (!shared.empty()) {
      if (path == CommPath::Nccl)
        throw Error("--comm nccl: " + shared +
                    ", and NCCL needs one GPU per rank (use --comm host or "
                    "--comm auto, or give each rank its own GPU)");
      return host + ": " + shared + " (NCCL needs one GPU per rank)";
    }
    nccl_ = std::make_unique<NcclCollectives>(stream_, timeoutSeconds);
    std::string sizes;
    for (int k = 0; k < 3; ++k) {
      const ProcessGroup &g = comm.group(plan::ParallelGroup(k));
      // --comm nccl gives even a one-rank group its communicator, so that
      // one process runs the device path too.
      if (g.size > 1 || path == CommPath::Nccl)
        nccl_->comms().join(comm, g);
      sizes += (k ? " x " : "") + std::to_string(g.size);
    }
    char timeout[32];
    std::snprintf(timeout, sizeof timeout, "%g", timeoutSeconds);
    return "collectives: NCCL " + ncclVersionString() +
           " on device memory (tensor x data x pipeline groups of " + sizes +
           " ranks; gradient buckets on their own stream; waits time out "
           "after " +
           timeout + " s)";
#endif
  }

#ifdef MEGA_HAVE_NCCL
  void collective(const plan::Instr &instr, const std::vector<TensorRef> &ins,
                  const std::vector<TensorRef> &outs,
                  Communicator &comm) override {
    const ProcessGroup &g = comm.group(plan::ParallelGroup(instr.i.at(0)));
    if (nccl_ && nccl_->has(g))
      return nccl_->run(instr, ins, outs, g);
    runCollectiveStaged(*this, instr, ins, outs, comm);
  }
  void exchange(const ProcessGroup &g,
                const std::vector<PeerTransfer> &transfers,
                Communicator &comm) override {
    if (nccl_ && nccl_->has(g))
      return nccl_->exchange(g, transfers);
    runExchangeStaged(*this, g, transfers, comm);
  }
  bool deviceBuckets(const ProcessGroup &g) const override {
    return nccl_ && nccl_->has(g);
  }
  int startBuckets(const ProcessGroup &g, const std::vector<void *> &parts,
                   const std::vector<size_t> &counts, bool scatter) override {
    if (!deviceBuckets(g))
      throw Error("cuda: gradient buckets of a group without NCCL");
    return nccl_->startBuckets(g, parts, counts, scatter);
  }
  void waitBuckets(int handle) override {
    if (!nccl_)
      throw Error("cuda: waiting for a gradient bucket without NCCL");
    nccl_->waitBuckets(handle);
  }
#endif

  void *allocate(size_t bytes) override {
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    if (rounded < bytes)
      throw Error("cuda: cannot allocate " + std::to_string(bytes) + " bytes");
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw Error("cuda: out of device memory allocating " +
                  std::to_string(bytes) +
                  " bytes (cudaMalloc: " + cudaGetErrorString(e) + ")");
    }
    e = cudaMemsetAsync(p, 0, rounded, stream_);
    if (e != cudaSuccess) {
      cudaFree(p);
      fail("cudaMemsetAsync", e);
    }
    sizes_[p] = rounded;
    allocated_ += rounded;
    return p;
  }

  void release(void *ptr) override {
    // Called from destructors: never throws. Work still queued may use
    // the buffer, so drain the stream first.
    if (!ptr)
      return;
    cudaStreamSynchronize(stream_);
    cudaFree(ptr);
    auto it = sizes_.find(ptr);
    if (it != sizes_.end()) {
      allocated_ -= it->second;
      sizes_.erase(it);
    }
  }

  std::string memoryHeld() const override {
    const size_t scratch = ws_->capacity();
    const size_t lt = kLtWorkspaceBytes * (sideLtWorkspace_ ? 2 : 1);
    return std::to_string(allocated_ + scratch + lt) +
           " bytes of device memory held by the cuda backend (allocated for "
           "the plan " +
           std::to_string(allocated_) + ", kernel scratch " +
           std::to_string(scratch) + ", cuBLASLt workspace " +
           std::to_string(lt) + (sideLtWorkspace_ ? ", two streams" : "") + ")";
  }

  void copyToDevice(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return;
    checkCuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync (to device)");
    // The caller may reuse `src` as soon as we return.
    syncAndReport();
  }

  void copyOnDevice(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      checkCuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                stream_),
                "cudaMemcpyAsync (on device)");
  }

  void copyToHost(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return;
    checkCuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_),
              "cudaMemcpyAsync (to host)");
    syncAndReport();
  }

  void check(const plan::Instr &instr, const std::vector<const Value *> &ins,
             const std::vector<const Value *> &outs) override {
    const char *opName = plan::opName(instr.op);
    if (!opName || plan::isCollective(instr.op))
      throw Error("cuda: unknown opcode " + std::to_string(int(instr.op)));
    auto refuse = [&](const std::string &msg) {
      throw Error(std::string(opName) + ": " + msg);
    };
    for (const Value *v : ins)
      if (!v)
        refuse("an input is missing");
    for (const Value *v : outs)
      if (!v)
        refuse("an output is missing");
    // bf16 operands: the CPU checks say which kernels take them.
    checker_->check(instr, ins, outs);
    if (instr.op == Op::Attention || instr.op == Op::AttentionGrad) {
      if (instr.i[2] > kAttentionMaxHeadDim)
        refuse("head dim " + std::to_string(instr.i[2]) +
               " is more than the cuda kernel's " +
               std::to_string(kAttentionMaxHeadDim));
    }
    if (instr.op == Op::Elementwise) {
      // Accepted by the CPU checks, so i = {n, nin, nout, periods, code}.
      int64_t nin = instr.i[1], nout = instr.i[2];
      int64_t code = (int64_t(instr.i.size()) - 3 - nin) / 4;
      if (nin > kEwMaxInputs || nout > kEwMaxOutputs || code > kEwMaxCode ||
          int64_t(instr.f.size()) > kEwMaxConsts)
        refuse("the cuda kernel takes at most " + std::to_string(kEwMaxInputs) +
               " inputs, " + std::to_string(kEwMaxOutputs) + " outputs, " +
               std::to_string(kEwMaxCode) + " micro-ops and " +
               std::to_string(kEwMaxConsts) + " constants; this one has " +
               std::to_string(nin) + ", " + std::to_string(nout) + ", " +
               std::to_string(code) + " and " + std::to_string(instr.f.size()));
      // Its generated kernel is compiled now, while the plan loads, so that
      // no step waits for NVRTC.
      std::vector<bool> inBf16, outBf16;
      for (const Value *v : ins)
        inBf16.push_back(v->dtype == DType::BF16);
      for (const Value *v : outs)
        outBf16.push_back(v->dtype == DType::BF16);
      ewJit_->get(instr, inBf16, outBf16);
    }
    if ((instr.op == Op::EmbeddingGrad ||
         instr.op == Op::VocabEmbeddingGrad) &&
        instr.i[0] > INT32_MAX)
      refuse("the cuda kernel sorts at most 2^31-1 ids");
  }

  void launch(const plan::Instr &instr, const std::vector<TensorRef> &ins,
              const std::vector<TensorRef> &outs, Communicator &comm) override {
    // GradNorm with shard flags: the squared sums meet over comm.
    if (instr.op == Op::GradNorm && !instr.i.empty())
      return runGradNormSharded(ctx_, instr, ins, outs, comm);
    run(instr, ins, outs, groupPlace(instr, comm));
  }
  /// Without a communicator: world size 1, rank 0 of every group.
  void launch(const plan::Instr &instr, const std::vector<TensorRef> &ins,
              const std::vector<TensorRef> &outs) override {
    run(instr, ins, outs, GroupPlace{});
  }
  void synchronize() override { syncAndReport(); }

  std::string kernelChoices() const override { return attentionLine_; }

  bool capturable(const plan::Instr &instr) const override {
    // GradNorm with shard flags brings its sums to the host and meets the
    // other ranks; every other kernel only enqueues work on the stream with
    // plan constants and fixed pointers (lr and step are device-resident
    // ports). Collectives never reach launch().
    if (plan::isCollective(instr.op))
      return false;
    return !(instr.op == Op::GradNorm && !instr.i.empty());
  }

  std::unique_ptr<LaunchGraph> capture(const std::function<void()> &body,
                                       std::string &why) override {
    // Whatever is queued (an input upload) runs before, not inside.
    syncAndReport();
    // Global mode: any call that cannot be recorded (an allocation, a
    // synchronisation, a pageable copy) fails instead of running.
    checkCuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
              "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
      body();
    } catch (const std::exception &e) {
      why = e.what();
    } catch (...) {
      why = "an unexpected failure while recording"; // still end the capture
    }
    lane_ = 0; // a body that failed may have left the side stream chosen
    cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (why.empty() && end != cudaSuccess)
      why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
    if (!why.empty()) {
      if (graph)
        cudaGraphDestroy(graph);
      cudaGetLastError(); // a failed recording is not sticky; clear it
      return nullptr;
    }
    size_t n = 0, kernels = 0;
    cudaError_t e = cudaGraphGetNodes(graph, nullptr, &n);
    std::vector<cudaGraphNode_t> nodes(n);
    if (e == cudaSuccess && n)
      e = cudaGraphGetNodes(graph, nodes.data(), &n);
    // The other nodes by kind, for the log: the plan's Copies and Fills,
    // and whatever the libraries (cuBLASLt, cuDNN) record around their
    // kernels.
    // With two streams of different priorities, the kernels by the priority
    // the recording copied from their stream (and the graph runs by them).
    std::map<std::string, size_t> others;
    std::map<int, size_t> byPriority;
    for (size_t k = 0; e == cudaSuccess && k < n; ++k) {
      cudaGraphNodeType t;
      e = cudaGraphNodeGetType(nodes[k], &t);
      if (e == cudaSuccess && t == cudaGraphNodeTypeKernel) {
        ++kernels;
        cudaKernelNodeAttrValue v{};
        if (priorities_ &&
            cudaGraphKernelNodeGetAttribute(
                nodes[k], cudaKernelNodeAttributePriority, &v) == cudaSuccess)
          ++byPriority[v.priority];
      } else if (e == cudaSuccess) {
        ++others[graphNodeKind(t)];
      }
    }
    cudaGetLastError(); // a refused attribute query is not sticky
    std::string details;
    for (const auto &[kind, count] : others)
      details.append(details.empty() ? "" : ", ")
          .append(std::to_string(count))
          .append(" ")
          .append(kind);
    if (byPriority.size() > 1) {
      details.append(details.empty() ? "" : "; ")
          .append("kernels by priority:");
      for (const auto &[priority, count] : byPriority)
        details.append(" ")
            .append(std::to_string(count))
            .append(" at ")
            .append(std::to_string(priority));
    }
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess)
      e = cudaGraphInstantiateWithFlags(
          &exec, graph,
          priorities_ ? cudaGraphInstantiateFlagUseNodePriority : 0);
    cudaGraphDestroy(graph); // the exec keeps what it needs
    if (e != cudaSuccess) {
      cudaGetLastError();
      why = std::string("instantiating the graph: ") + cudaGetErrorString(e);
      return nullptr;
    }
    return std::make_unique<CudaGraph>(stream_, exec, kernels, n - kernels,
                                       std::move(details), *ws_, *tables_);
  }

  bool prepareSideStream(size_t marks) override {
    if (!wgradStream_)
      return false;
    if (!side_) {
      checkCuda(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking,
                                             sidePriority_),
                "cudaStreamCreateWithPriority (side stream)");
      // Its own cuBLAS handle and GEMM scratch, made as the main ones are:
      // two products at once never share a workspace.
      makeGemmScratch(side_, sideBlas_, sideLtWorkspace_);
    }
    sideCtx_ = ctx_;
    sideCtx_.stream = side_;
    sideCtx_.blas = sideBlas_;
    sideCtx_.ltWorkspace = sideLtWorkspace_;
    while (marks_.size() < marks) {
      cudaEvent_t e = nullptr;
      checkCuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
                "cudaEventCreateWithFlags");
      marks_.push_back(e);
    }
    return true;
  }

  bool sideLaunch(const plan::Instr &instr,
                  const std::vector<const Value *> &inputs) const override {
    return side_ && gemmLibraryLaunch(instr, inputs);
  }

  void setLane(int lane, long wait) override {
    if (lane != 0 && (lane != 1 || !side_))
      throw Error("cuda: no stream for lane " + std::to_string(lane));
    lane_ = lane;
    if (wait >= 0)
      checkCuda(cudaStreamWaitEvent(lane_ ? side_ : stream_, mark(wait), 0),
                "cudaStreamWaitEvent");
  }

  void markLane(long m) override {
    checkCuda(cudaEventRecord(mark(m), lane_ ? side_ : stream_),
              "cudaEventRecord");
  }

private:
  /// A stream's cuBLAS handle and GEMM scratch. cuBLAS computes plain fp32
  /// (no TF32 tensor cores, which round the inputs to 10 mantissa bits), so
  /// results agree with the CPU to float rounding. cuBLASLt's bf16 GEMMs
  /// get a fixed scratch (what its heuristic may use; 32 MiB covers the
  /// large-K split algorithms on Hopper), and cuBLAS the same one (its
  /// calls and cuBLASLt's never overlap on one stream): it then allocates
  /// nothing of its own, so it picks the same algorithms whether a run is
  /// recorded into a graph or not. The workspace is set after
  /// cublasSetStream, which resets it.
  static void makeGemmScratch(cudaStream_t stream, cublasHandle_t &blas,
                              void *&workspace) {
    checkBlas(cublasCreate(&blas), "cublasCreate");
    checkBlas(cublasSetStream(blas, stream), "cublasSetStream");
    checkBlas(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH),
              "cublasSetMathMode");
    checkCuda(cudaMalloc(&workspace, kLtWorkspaceBytes),
              "cudaMalloc (GEMM workspace)");
    checkBlas(cublasSetWorkspace(blas, workspace, kLtWorkspaceBytes),
              "cublasSetWorkspace");
  }

  cudaEvent_t mark(long m) const {
    if (m < 0 || size_t(m) >= marks_.size())
      throw Error("cuda: no mark " + std::to_string(m) + " (" +
                  std::to_string(marks_.size()) + " made)");
    return marks_[size_t(m)];
  }

  /// Loads cuDNN for the bf16 attention unless told not to (Common.h, Ctx).
  void chooseAttention(AttentionBackend want) {
    if (want == AttentionBackend::Local) {
      attentionLine_ = "attention: mega's kernels (--attention-backend local)";
      return;
    }
    std::string why;
    cudnn_ = CudnnAttention::load(why);
    if (!cudnn_) {
      if (want == AttentionBackend::Fused)
        throw Error("--attention-backend fused: cuDNN cannot be used: " + why);
      attentionLine_ = "attention: mega's kernels (cuDNN: " + why + ")";
      return;
    }
    ctx_.cudnn = cudnn_.get();
    ctx_.cudnnRequired = want == AttentionBackend::Fused;
    attentionLine_ = "attention: " + cudnn_->version() +
                     " fused attention for bf16, mega's kernels elsewhere";
  }

  /// `place`: this process's place in the group the instruction names
  /// (groupPlace, Backend.h).
  void run(const plan::Instr &instr, const std::vector<TensorRef> &ins,
           const std::vector<TensorRef> &outs, const GroupPlace &place) {
    // The side stream runs only what sideLaunch names, whose one scratch,
    // the GEMM library's, it has its own of.
    if (lane_ == 1) {
      std::vector<const Value *> values;
      for (const TensorRef &r : ins)
        values.push_back(r.value);
      if (!gemmLibraryLaunch(instr, values))
        throw Error(std::string("cuda: ") + plan::opName(instr.op) +
                    " cannot run on the side stream");
    }
    const Ctx &ctx = lane_ == 1 ? sideCtx_ : ctx_;
    // AdamW with a group (the distributed optimizer): this rank's block.
    if (instr.op == Op::AdamW && !instr.i.empty())
      return runAdamWShard(ctx_, place, instr, ins, outs);
    switch (instr.op) {
#define MEGA_CASE(NAME)                                                        \
  case Op::NAME:                                                               \
    return run##NAME(ctx, instr, ins, outs);
      MEGA_PLAN_BASE_KERNELS(MEGA_CASE)
      MEGA_PLAN_FUSED_KERNELS(MEGA_CASE)
      MEGA_CASE(RowMax)
      MEGA_CASE(VocabCrossEntropy)
#undef MEGA_CASE
    case Op::VocabEmbedding:
    case Op::VocabEmbeddingGrad:
    case Op::VocabCrossEntropyStats:
    case Op::VocabCrossEntropyGrad:
      return runVocab(instr, ins, outs, place);
#define MEGA_CASE(NAME) case Op::NAME:
      MEGA_PLAN_COLLECTIVES(MEGA_CASE)
#undef MEGA_CASE
      // Collectives run through Backend::collective.
      throw Error(std::string(plan::opName(instr.op)) +
                  ": not a kernel of the cuda backend");
    }
    throw Error("cuda: unknown opcode " + std::to_string(int(instr.op)));
  }

  /// The four vocabulary-parallel kernels that need this rank's place.
  void runVocab(const plan::Instr &instr, const std::vector<TensorRef> &ins,
                const std::vector<TensorRef> &outs, const GroupPlace &place) {
    switch (instr.op) {
    case Op::VocabEmbedding:
      return runVocabEmbedding(ctx_, place, instr, ins, outs);
    case Op::VocabEmbeddingGrad:
      return runVocabEmbeddingGrad(ctx_, place, instr, ins, outs);
    case Op::VocabCrossEntropyStats:
      return runVocabCrossEntropyStats(ctx_, place, instr, ins, outs);
    case Op::VocabCrossEntropyGrad:
      return runVocabCrossEntropyGrad(ctx_, place, instr, ins, outs);
    default:
      throw Error("cuda: not a vocabulary-parallel kernel");
    }
  }

  void syncAndReport() {
    checkCuda(cudaMemcpyAsync(errHost_, errDev_, sizeof(DeviceError),
                              cudaMemcpyDeviceToHost, stream_),
              "cudaMemcpyAsync (error record)");
    checkCuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    const DeviceError *e = errHost_;
    if (!e->flag)
      return;
    Op op = Op(e->op);
    // The CPU backend's words for each kernel's data error.
    const bool target = op == Op::CrossEntropy || op == Op::CrossEntropyGrad ||
                        op == Op::CrossEntropyWithGrad ||
                        op == Op::VocabCrossEntropyStats ||
                        op == Op::VocabCrossEntropyGrad;
    const bool vocab = target || op == Op::VocabEmbedding ||
                       op == Op::VocabEmbeddingGrad;
    std::string what = target ? "target " : "id ";
    std::string range = vocab ? " is outside the vocabulary [0, "
                              : " is outside the table [0, ";
    const char *name = plan::opName(op);
    std::string msg = std::string(name ? name : "kernel") + ": " + what +
                      std::to_string(e->value) + " of row " +
                      std::to_string(e->row) + range +
                      std::to_string(e->limit) + ")";
    // Clear the record so that the backend stays usable.
    checkCuda(cudaMemsetAsync(errDev_, 0, sizeof(DeviceError), stream_),
              "cudaMemsetAsync (error record)");
    checkCuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    std::memset(errHost_, 0, sizeof(DeviceError));
    throw Error(msg);
  }

  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  static constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;
  cublasLtHandle_t lt_ = nullptr;
  void *ltWorkspace_ = nullptr;
  std::unique_ptr<LtPlans> ltPlans_;
  /// mega-run --wgrad-stream (prepareSideStream): the side stream, its
  /// cuBLAS handle and GEMM scratch, the context its launches get, the
  /// marks between the two streams, and the stream launches go on now.
  bool wgradStream_ = false;
  bool priorities_ = false; ///< the two streams' priorities differ
  int sidePriority_ = 0;
  cudaStream_t side_ = nullptr;
  cublasHandle_t sideBlas_ = nullptr;
  void *sideLtWorkspace_ = nullptr;
  Ctx sideCtx_;
  std::vector<cudaEvent_t> marks_;
  int lane_ = 0;
  std::unique_ptr<Workspace> ws_;
  std::unique_ptr<TableCache> tables_;
  DeviceError *errHost_ = nullptr; ///< pinned host copy
  DeviceError *errDev_ = nullptr;  ///< the record kernels write
  Ctx ctx_;
  std::unique_ptr<Backend> checker_;
  std::unique_ptr<EwJit> ewJit_;
  std::unique_ptr<CudnnAttention> cudnn_; ///< null: mega's attention kernels
  std::string attentionLine_;
  std::shared_ptr<GemmChoices> gemmChoices_;
  std::function<void(const GemmChoices &)> saveGemmChoices_;
  std::unordered_map<void *, size_t> sizes_; ///< allocate()'s blocks
  size_t allocated_ = 0;
#ifdef MEGA_HAVE_NCCL
  std::unique_ptr<NcclCollectives> nccl_; ///< set by setupCollectives
#endif
};

} // namespace

int deviceCount(std::string &reason) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
    return 0;
  }
  if (n <= 0)
    reason = "cudaGetDeviceCount: no devices";
  return n;
}

} // namespace mega::rt::gpu

namespace mega::rt {

std::unique_ptr<Backend> createCudaBackend(int device,
                                           const CudaOptions &options) {
  std::string reason;
  int n = gpu::deviceCount(reason);
  if (n <= 0)
    throw Error("no CUDA device available (" + reason + ")");
  if (options.localRank >= 0)
    device = int(options.localRank % n);
  if (device < 0 || device >= n)
    throw Error("CUDA device " + std::to_string(device) + " does not exist (" +
                std::to_string(n) + " visible)");
  return std::make_unique<gpu::CudaBackend>(device, options);
}

} // namespace mega::rt

//===- Backend.h - The small interface every runtime backend implements ---===//
//
// The engine (plan loading, memory, training loop) knows nothing about how a
// kernel runs; a backend knows nothing about training. Like IREE's HAL
// drivers, a backend is: allocate, copy, launch, synchronise (and, later,
// collectives). The CPU backend is always built; CUDA joins when present.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKEND_H
#define MEGA_RUNTIME_BACKEND_H

#include "mega/Plan/Plan.h"
#include "mega/Runtime/GemmChoices.h"

#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mega::rt {

/// The runtime's one error type: a message a user can act on.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A resolved operand: where the bytes are plus the plan's view of them.
struct TensorRef {
  void *data = nullptr;
  const plan::Value *value = nullptr; ///< dtype and shape
  int64_t numel() const { return value->numel(); }
  float *f32() const { return static_cast<float *>(data); }
  int32_t *i32() const { return static_cast<int32_t *>(data); }
  /// bfloat16 bits (the upper half of the float).
  uint16_t *bf16() const { return static_cast<uint16_t *>(data); }
};

/// One process group: this process's place in it and the world ranks it
/// spans (in group-rank order). Groups are values handed to every
/// collective; there is no global "current group" (STYLE.md).
struct ProcessGroup {
  plan::ParallelGroup kind = plan::ParallelGroup::Data;
  int rank = 0;                ///< this process's rank within the group
  int size = 1;                ///< ranks in the group
  std::vector<int> worldRanks; ///< worldRanks[r] = world rank of group rank r
  int handle = -1;             ///< the communicator's own index for it
};

/// One transfer of an exchange (Communicator::exchange, Backend::exchange):
/// `bytes` at `data` sent to, or received from, group rank `peer`.
struct PeerTransfer {
  bool send = false;
  int peer = 0;
  void *data = nullptr;
  size_t bytes = 0;
};

/// Collectives over host memory (f32), for the backends and the trainer.
/// One instance per process, created for the program run and passed down
/// explicitly (Engine -> ProgramRunner -> Backend::collective).
/// Implementations: single-process (every group has size 1) and MPI.
class Communicator {
public:
  virtual ~Communicator() = default;
  virtual const char *name() const = 0;
  virtual int worldRank() const = 0;
  virtual int worldSize() const = 0;
  /// The group of `kind` this process belongs to.
  virtual const ProcessGroup &group(plan::ParallelGroup kind) const = 0;
  /// out[k] = op over the group of in[k]; `in` may equal `out`.
  virtual void allReduce(const ProcessGroup &g, const float *in, float *out,
                         size_t n, plan::ReduceOp op) = 0;
  /// out = concat over group ranks of each rank's `in` (n elements each).
  virtual void allGather(const ProcessGroup &g, const float *in, float *out,
                         size_t n) = 0;
  /// out (n elements) = part `g.rank` of the sum over the group of `in`
  /// (g.size * n elements).
  virtual void reduceScatter(const ProcessGroup &g, const float *in,
                             float *out, size_t n) = 0;
  /// Point to point with group rank `peer`.
  virtual void send(const ProcessGroup &g, int peer, int tag, const void *data,
                    size_t bytes) = 0;
  virtual void recv(const ProcessGroup &g, int peer, int tag, void *data,
                    size_t bytes) = 0;
  /// Runs `transfers` (host memory) with the ranks of `g` as one group and
  /// returns when every one has completed. Every implementation keeps
  /// NCCL's rules, so that a run behaves alike on every path: no tags (the
  /// k-th send from rank a to rank b is b's k-th receive from a), and a send
  /// completes only once its receive is posted. Ranks must therefore agree
  /// on the order of their transfers and put into one group the ones that
  /// would otherwise wait for each other (PipelineTraffic.h checks a
  /// pipeline schedule for both). These transfers never match send()/recv().
  virtual void exchange(const ProcessGroup &g,
                        const std::vector<PeerTransfer> &transfers) = 0;
  /// Starts data[k] = op over the group of data[k] (in place, n elements)
  /// and returns a handle for waitStarted(); `data` must stay untouched
  /// until then. The default reduces now and returns -1.
  virtual int startAllReduce(const ProcessGroup &g, float *data, size_t n,
                             plan::ReduceOp op) {
    allReduce(g, data, data, n, op);
    return -1;
  }
  /// Starts out (n elements) = part `g.rank` of the sum over the group of
  /// `in` (g.size * n elements, sharing no byte with out) and returns a
  /// handle for waitStarted(); neither may be touched until then. The
  /// default reduce-scatters now and returns -1.
  virtual int startReduceScatter(const ProcessGroup &g, const float *in,
                                 float *out, size_t n) {
    reduceScatter(g, in, out, n);
    return -1;
  }
  /// Returns when the collective of `handle` (from startAllReduce or
  /// startReduceScatter) is done; -1 returns at once.
  virtual void waitStarted(int handle) { (void)handle; }
  /// Moves the started collectives on (their rounds run inside MPI calls);
  /// the engine calls it between instructions while any is in flight.
  virtual void progress() {}
};

/// This process's place in the group an instruction's i[group] names: the
/// kernels that work on their own part of a tensor read it.
struct GroupPlace {
  int64_t rank = 0;
  int64_t size = 1;
};

/// The place in `comm`'s groups that `instr`'s kernel works from, one rule
/// for every backend: AdamW with i = {group} (the distributed optimizer:
/// this rank's block of the parameter) and the vocabulary-parallel opcodes
/// (VocabEmbedding, VocabEmbeddingGrad, VocabCrossEntropyStats,
/// VocabCrossEntropyGrad: i[group] is their last attribute, which check()
/// proved names a group). Rank 0 of 1 for every other instruction.
inline GroupPlace groupPlace(const plan::Instr &instr,
                             const Communicator &comm) {
  int64_t group;
  switch (instr.op) {
  case plan::Op::AdamW:
    if (instr.i.empty())
      return GroupPlace{};
    group = instr.i[0];
    break;
  case plan::Op::VocabEmbedding:
  case plan::Op::VocabEmbeddingGrad:
  case plan::Op::VocabCrossEntropyStats:
  case plan::Op::VocabCrossEntropyGrad:
    group = instr.i.back();
    break;
  default:
    return GroupPlace{};
  }
  const ProcessGroup &g = comm.group(plan::ParallelGroup(group));
  return GroupPlace{g.rank, g.size};
}

/// The true vocabulary of a vocabulary-parallel loss kernel
/// (VocabCrossEntropyStats, VocabCrossEntropyGrad: i = {rows, Vl, [V,]
/// group}) on `place`: V when the vocabulary is padded, else all Vl * size
/// columns. A V that padding of the last shard cannot produce is an Error,
/// the same one on every backend.
inline int64_t trueVocab(const plan::Instr &in, const GroupPlace &place) {
  const int64_t Vl = in.i[1], all = Vl * place.size;
  if (in.i.size() != 4)
    return all;
  const int64_t V = in.i[2];
  if (V > all || V <= all - Vl)
    throw Error(std::string(plan::opName(in.op)) + ": vocabulary " +
                std::to_string(V) + " is not " + std::to_string(place.size) +
                " shards of " + std::to_string(Vl) +
                " with padding in the last");
  return V;
}

/// GradNorm with shard flags (plan opcode 14, i = {group, s_0..s_{n-1}
/// [, pipeline group [, data group]]}): the squared norm of the whole model
/// from this rank's sums of squares of its replicated (`replicated`) and
/// sharded (`sharded`) gradients. The data-parallel blocks' sums meet over
/// the data group first, the shards' over `group`, then the stages' over the
/// pipeline group, so every rank gets the same total. Each backend computes
/// the two sums its own way and calls this.
inline double gradNormTotal(const plan::Instr &in, size_t n, double replicated,
                            double sharded, Communicator &comm) {
  if (in.i.size() == 3 + n) {
    const ProcessGroup &d = comm.group(plan::ParallelGroup(in.i[2 + n]));
    if (d.size > 1) {
      float both[2] = {float(replicated), float(sharded)};
      comm.allReduce(d, both, both, 2, plan::ReduceOp::Sum);
      replicated = double(both[0]);
      sharded = double(both[1]);
    }
  }
  const ProcessGroup &g = comm.group(plan::ParallelGroup(in.i[0]));
  if (g.size > 1) {
    float shard = float(sharded);
    comm.allReduce(g, &shard, &shard, 1, plan::ReduceOp::Sum);
    sharded = double(shard);
  }
  double total = replicated + sharded;
  if (in.i.size() >= 2 + n && in.i[1 + n] >= 0) {
    const ProcessGroup &p = comm.group(plan::ParallelGroup(in.i[1 + n]));
    if (p.size > 1) {
      float mine = float(total);
      comm.allReduce(p, &mine, &mine, 1, plan::ReduceOp::Sum);
      total = double(mine);
    }
  }
  return total;
}

/// A launch whose only scratch is the GEMM library's: a bf16 MatMul without
/// an epilogue (cuBLASLt, or cuBLAS should it have no algorithm) or a Copy.
/// What the cuda backend's side stream runs (Backend::sideLaunch), with a
/// cuBLAS handle and GEMM workspace of its own.
inline bool gemmLibraryLaunch(const plan::Instr &instr,
                              const std::vector<const plan::Value *> &inputs) {
  if (instr.op == plan::Op::Copy)
    return true;
  if (instr.op != plan::Op::MatMul || inputs.empty() || !inputs[0])
    return false;
  const bool epilogue = instr.i.size() > 12 && instr.i[12] != 0;
  return !epilogue && inputs[0]->dtype == plan::DType::BF16;
}

/// A backend's recording of the launches of one program run, replayed as
/// one unit (a CUDA graph): the same kernels with the same arguments and
/// pointers, so a replay reads its inputs from the same device buffers.
class LaunchGraph {
public:
  virtual ~LaunchGraph() = default;
  /// Enqueues the recorded launches. False (nothing enqueued) when memory
  /// the recording points into has moved since (a kernel scratch grew for
  /// another program): the caller records again.
  virtual bool replay() = 0;
  /// What it is and holds, for the log: "CUDA graph", its kernel count, and
  /// its other nodes (copies, fills).
  virtual const char *kind() const = 0;
  virtual size_t kernels() const = 0;
  virtual size_t otherNodes() const = 0;
  /// What else the log says of it, or "": its other nodes by kind ("132
  /// memset, 24 memcpy"), its kernels by priority.
  virtual std::string details() const { return ""; }
};

/// How a run's collectives move data (mega-run --comm): Auto picks the
/// device path (NCCL) when the backend has one and every rank of every group
/// has its own GPU, else host staging through the Communicator.
enum class CommPath { Auto, Nccl, Host };

class Backend {
public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;
  /// One line for the log on which kernel implementations this backend
  /// picked where it had a choice ("" when it had none).
  virtual std::string kernelChoices() const { return ""; }
  /// One line for the log on the device memory this backend holds now (what
  /// the plan allocated, kernel scratch, library workspaces), measured, to
  /// stand beside the plan's figure ("" for host memory).
  virtual std::string memoryHeld() const { return ""; }
  /// Device memory (host memory for the CPU), zero-filled, 64-byte aligned.
  virtual void *allocate(size_t bytes) = 0;
  virtual void release(void *ptr) = 0;
  virtual void copyToDevice(void *dst, const void *src, size_t bytes) = 0;
  virtual void copyToHost(void *dst, const void *src, size_t bytes) = 0;
  /// Device memory to device memory, ordered after the work already
  /// enqueued (the CUDA backend's stream); the default goes through host
  /// memory.
  virtual void copyOnDevice(void *dst, const void *src, size_t bytes) {
    std::vector<char> host(bytes);
    copyToHost(host.data(), src, bytes);
    copyToDevice(dst, host.data(), bytes);
  }
  /// Checks once, when a plan is loaded, that an instruction's attributes
  /// agree with its operands' sizes, so that launch() can never touch memory
  /// outside them. Throws Error naming the problem.
  virtual void check(const plan::Instr &instr,
                     const std::vector<const plan::Value *> &inputs,
                     const std::vector<const plan::Value *> &outputs) = 0;
  /// Runs one instruction.
  virtual void launch(const plan::Instr &instr,
                      const std::vector<TensorRef> &inputs,
                      const std::vector<TensorRef> &outputs) = 0;
  /// Runs one instruction as launch() does, with `comm`, the program run's
  /// communicator, for the kernels that need a process group: those
  /// groupPlace() names (the vocabulary-parallel opcodes, the distributed
  /// optimizer's AdamW) read their place in it, and GradNorm with shard
  /// flags all-reduces its sharded squared sum over its group. The engine
  /// calls this for every instruction that is not a collective; the default
  /// ignores `comm` (a backend without those kernels refuses them in
  /// check()).
  virtual void launch(const plan::Instr &instr,
                      const std::vector<TensorRef> &inputs,
                      const std::vector<TensorRef> &outputs,
                      Communicator &comm) {
    (void)comm;
    launch(instr, inputs, outputs);
  }
  virtual void synchronize() {}
  /// Runs one collective instruction (plan::isCollective) with `comm`, the
  /// program run's communicator. The default stages device memory through
  /// host buffers (the CPU's "device" memory is host memory, so the CPU
  /// backend passes its pointers straight through); a GPU backend may
  /// override it with NCCL. Operand sizes were checked at load time
  /// (checkCollective).
  virtual void collective(const plan::Instr &instr,
                          const std::vector<TensorRef> &inputs,
                          const std::vector<TensorRef> &outputs,
                          Communicator &comm) {
    runCollectiveStaged(*this, instr, inputs, outputs, comm);
  }
  /// Communicator::exchange with `transfers` in device memory, ordered after
  /// the work enqueued so far; what it receives is there for the work
  /// enqueued after it returns. The default stages through host memory (the
  /// CPU passes its pointers straight through); a GPU backend may run it on
  /// NCCL.
  virtual void exchange(const ProcessGroup &g,
                        const std::vector<PeerTransfer> &transfers,
                        Communicator &comm) {
    runExchangeStaged(*this, g, transfers, comm);
  }
  /// Chooses how collective() and the gradient buckets move data for
  /// `comm`'s groups; called once per run, before the engine loads the
  /// plan, by every rank at the same point (a device path meets the other
  /// ranks to set up). `timeoutSeconds` bounds every wait on device
  /// collectives. Returns one line for the log ("" when there is nothing to
  /// say). Throws Error when `path` cannot be honoured. The default keeps
  /// host staging and refuses CommPath::Nccl.
  virtual std::string setupCollectives(Communicator &comm, CommPath path,
                                       double timeoutSeconds) {
    (void)comm;
    (void)timeoutSeconds;
    if (path == CommPath::Nccl)
      throw Error(std::string("--comm nccl needs the cuda backend (this run "
                              "uses ") +
                  name() + ")");
    return "";
  }
  /// True when the gradient buckets of group `g` are all-reduced on the
  /// device (startBuckets/waitBuckets) rather than staged through host
  /// memory and the Communicator.
  virtual bool deviceBuckets(const ProcessGroup &g) const {
    (void)g;
    return false;
  }
  /// Starts the in-place sum over `g` of parts[k] (counts[k] floats each, on
  /// the device), ordered after the work enqueued so far, while later work
  /// goes on; returns a handle for waitBuckets(). With `scatter`, an
  /// in-place reduce-scatter of each part instead: its block g.rank
  /// (counts[k] / g.size floats) becomes that block of the sum, and the rest
  /// of the part is left unspecified.
  virtual int startBuckets(const ProcessGroup &g,
                           const std::vector<void *> &parts,
                           const std::vector<size_t> &counts, bool scatter) {
    (void)g;
    (void)parts;
    (void)counts;
    (void)scatter;
    throw Error(std::string(name()) + " backend has no device buckets");
  }
  /// Work enqueued after this sees the sums of `handle`'s start. Errors and
  /// timeouts of the all-reduce end here as Error.
  virtual void waitBuckets(int handle) { (void)handle; }
  /// True when device pointers are host pointers (no staging needed).
  virtual bool hostMemory() const { return false; }
  /// True when launch() of `instr` only enqueues device work whose every
  /// argument stays the same from run to run (plan constants, fixed device
  /// pointers): no host round trip, no host value read at launch time. Only
  /// programs made of such instructions may be recorded (capture()).
  virtual bool capturable(const plan::Instr &instr) const {
    (void)instr;
    return false;
  }
  /// Calls `body`, whose launches are recorded rather than run (nothing
  /// executes), and returns the recording. nullptr, with `why` saying why,
  /// when the backend cannot record or `body` did something a recording
  /// cannot hold; the caller then runs the launches itself. The default
  /// (the CPU) records nothing and does not call `body`.
  virtual std::unique_ptr<LaunchGraph>
  capture(const std::function<void()> &body, std::string &why) {
    (void)body;
    why = std::string(name()) + " backend records no launches";
    return nullptr;
  }
  /// mega-run --wgrad-stream: readies a second stream, and `marks` marks
  /// on it and the main one, for recording a program whose launches are
  /// split over the two (Lanes.h); false when the backend has none (the
  /// default, and cuda without the option). Called before capture(), never
  /// while recording.
  virtual bool prepareSideStream(size_t marks) {
    (void)marks;
    return false;
  }
  /// True when the side stream may run `instr`: it touches no memory
  /// beyond its operands but scratch the side stream has its own of.
  virtual bool
  sideLaunch(const plan::Instr &instr,
             const std::vector<const plan::Value *> &inputs) const {
    (void)instr;
    (void)inputs;
    return false;
  }
  /// While recording: the launches that follow go on `lane` (0: the main
  /// stream, 1: the side stream), after the launch marked `wait` (>= 0) on
  /// the other one has finished.
  virtual void setLane(int lane, long wait) {
    (void)lane;
    (void)wait;
  }
  /// While recording: marks the point after the last launch as `mark`, for
  /// a later setLane to wait for.
  virtual void markLane(long mark) { (void)mark; }

protected:
  /// The default collective(): host pointers straight through when
  /// hostMemory(), else copies through host vectors.
  static void runCollectiveStaged(Backend &backend, const plan::Instr &instr,
                                  const std::vector<TensorRef> &inputs,
                                  const std::vector<TensorRef> &outputs,
                                  Communicator &comm) {
    using plan::Op;
    const std::vector<int64_t> &i = instr.i;
    const ProcessGroup &g = comm.group(plan::ParallelGroup(i.at(0)));
    bool host = backend.hostMemory();
    std::vector<float> inBuf, outBuf;
    const float *in = nullptr;
    float *out = nullptr;
    // 4-byte words: an f32 operand's elements, a bf16 AllGather's pairs
    // (plan::validate: its input's count is even; gathering the words
    // gathers the elements).
    auto words = [](const TensorRef &t) {
      return size_t(t.value->bytes()) / 4;
    };
    size_t inN = inputs.empty() ? 0 : words(inputs[0]);
    size_t outN = outputs.empty() ? 0 : words(outputs[0]);
    if (!inputs.empty()) {
      in = inputs[0].f32();
      if (!host) {
        inBuf.resize(inN);
        backend.copyToHost(inBuf.data(), inputs[0].data, inN * 4);
        in = inBuf.data();
      }
    }
    if (!outputs.empty()) {
      out = outputs[0].f32();
      if (!host) {
        outBuf.resize(outN);
        out = outBuf.data();
      }
    }
    switch (instr.op) {
    case Op::AllReduce:
      comm.allReduce(g, in, out, inN, plan::ReduceOp(i.at(1)));
      break;
    case Op::AllGather:
      comm.allGather(g, in, out, inN);
      break;
    case Op::ReduceScatter:
      comm.reduceScatter(g, in, out, outN);
      break;
    case Op::Send:
      comm.send(g, int((g.rank + i.at(1) % g.size + g.size) % g.size),
                int(i.at(2)), in, inN * 4);
      break;
    case Op::Recv:
      comm.recv(g, int((g.rank + i.at(1) % g.size + g.size) % g.size),
                int(i.at(2)), out, outN * 4);
      break;
    default:
      throw Error(std::string(plan::opName(instr.op)) +
                  " is not a collective");
    }
    if (!host && !outputs.empty())
      backend.copyToDevice(outputs[0].data, outBuf.data(), outN * 4);
  }
  /// The default exchange(): host pointers straight through when
  /// hostMemory(), else the sends copied to host buffers first and the
  /// receives copied to the device after.
  static void runExchangeStaged(Backend &backend, const ProcessGroup &g,
                                const std::vector<PeerTransfer> &transfers,
                                Communicator &comm) {
    if (backend.hostMemory())
      return comm.exchange(g, transfers);
    std::vector<std::vector<char>> staging(transfers.size());
    std::vector<PeerTransfer> host = transfers;
    for (size_t k = 0; k < transfers.size(); ++k) {
      staging[k].resize(transfers[k].bytes);
      host[k].data = staging[k].data();
      if (transfers[k].send)
        backend.copyToHost(host[k].data, transfers[k].data, transfers[k].bytes);
    }
    comm.exchange(g, host);
    for (size_t k = 0; k < transfers.size(); ++k)
      if (!transfers[k].send)
        backend.copyToDevice(transfers[k].data, host[k].data,
                             transfers[k].bytes);
  }
};

/// Checks a collective instruction's operands against the group sizes of
/// `comm`; throws Error naming the problem.
void checkCollective(const plan::Instr &instr,
                     const std::vector<const plan::Value *> &inputs,
                     const std::vector<const plan::Value *> &outputs,
                     const Communicator &comm);

/// Every group of size 1: world size 1, no MPI touched.
std::unique_ptr<Communicator> createSingleProcessCommunicator();

/// The communicator for a launch of `worldSize` ranks laid out as
/// tp x dp x pp in Megatron's order (tensor rank fastest, then data, then
/// pipeline: world rank = t + tp*(d + dp*p)). World size 1 gives the
/// single-process communicator without initialising MPI; otherwise MPI
/// (its rank and size must agree with `rank`/`worldSize`). Throws Error
/// when this build has no MPI and worldSize > 1.
std::unique_ptr<Communicator> createCommunicator(int rank, int worldSize,
                                                 int tp, int dp, int pp);

/// The CPU backend: OpenBLAS for MatMul, OpenMP-parallel loops elsewhere.
/// threads <= 0 means "as the environment says" (OMP_NUM_THREADS).
std::unique_ptr<Backend> createCpuBackend(int threads);

/// Which kernels run a plan's bf16 Attention and AttentionGrad on CUDA
/// (mega-run --attention-backend, Megatron's names): Auto takes cuDNN's
/// fused attention where cuDNN is loaded and accepts the problem, else
/// mega's own kernels; Fused demands cuDNN (an Error where it cannot run);
/// Local keeps mega's kernels (deterministic run to run).
enum class AttentionBackend { Auto, Fused, Local };

struct CudaOptions {
  AttentionBackend attention = AttentionBackend::Auto;
  /// Each distinct bf16 GEMM's cuBLASLt algorithm is the fastest of the
  /// heuristic's candidates, timed at its first call outside a graph
  /// capture, instead of the heuristic's first. mega-run's default
  /// (--no-gemm-autotune: off); off here, so that a backend made without
  /// options repeats its bits run to run.
  bool gemmAutotune = false;
  /// mega-run --gemm-autotune-wide: the autotune (implied) also times the
  /// wide search's candidates: one configuration of each of cuBLASLt's
  /// algorithm ids and split-K forms of the products that leave the GPU
  /// part idle (lib/Runtime/Backends/cuda/LtSearch.h).
  bool gemmAutotuneWide = false;
  /// Tests (cuda_twin_check): with the autotune on, each GEMM runs its
  /// candidate `gemmCandidate` (the heuristic's first where it has fewer,
  /// or where the launch refuses it, as the timing would drop it), so that
  /// every candidate's result can be checked; -1: the fastest, timed.
  int gemmCandidate = -1;
  /// mega-run --wgrad-stream: a second stream for the weight gradients'
  /// products while a program is recorded (Backend::prepareSideStream).
  bool wgradStream = false;
  /// mega-run --gemm-autotune-file: the choices kept from earlier runs
  /// (used where they still apply; the GEMMs they lack are timed and
  /// added) and what writes them back after each addition. A set timed on
  /// another GPU or cuBLASLt is dropped (said on stderr) and timed again.
  std::shared_ptr<GemmChoices> gemmChoices;
  std::function<void(const GemmChoices &)> saveGemmChoices;
  /// The process's rank on its node (the launcher's LOCAL_RANK), or -1:
  /// with one, the backend takes GPU localRank mod the visible count instead
  /// of the device asked for, so that the ranks of a node spread over its
  /// GPUs as Megatron's do.
  int64_t localRank = -1;
};

/// The CUDA backend on `device` (cuBLAS/cuBLASLt for MatMul). Throws Error
/// ("no CUDA device available (cudaGetDeviceCount: ...)") when there is no
/// usable GPU, and ("this mega-run was built without the CUDA backend")
/// when the build has no CUDA toolkit (MEGA_HAVE_CUDA undefined).
std::unique_ptr<Backend> createCudaBackend(int device,
                                           const CudaOptions &options = {});

} // namespace mega::rt

#endif // MEGA_RUNTIME_BACKEND_H

//===- AssignBuffers.cpp - Liveness-packed arena placement
//------------------===//
//
// Gives every kernel result of a program a byte offset in the program's one
// scratch arena, reusing the memory of values that are dead.
//
// Algorithm, per function (straight-line, one block):
//  1. Number the ops.
//  2. Alias classes (mega/Target/Plan/Placement.h). A `mega.view` aliases its
//     source at +offset; a part of a `mega.concat` (contiguous at kernel
//     level; seen through reshape views) aliases the concat's result at the
//     sum of the sizes of the parts before it. Following these links gives
//     every value a root and its byte offset inside the root.
//  3. Roots defined by `mega.param`, `mega.state` (persistent tensors) or
//     `mega.input` (ports) need no arena memory; neither does the root of a
//     `mega.output` value (all of it, Placement::portRootOf): its producer
//     writes straight into the port.
//  4. Every other root is a buffer of its byte size rounded up to 64, live
//     from the first op that defines any value of its class to the last op
//     that uses one (inclusive at both ends, so a kernel's outputs never
//     share memory with its inputs).
//  4b. In place: a result of a kernel that may overwrite an operand (the
//     table kInPlace: CrossEntropyGrad's (and CrossEntropyWithGrad's)
//     dlogits over its logits, whose
//     kernels and twin checks are written for it) takes that operand's
//     buffer when the operand is a whole buffer of the same size that this
//     op uses last (same shape and size: same dtype, so bf16 dlogits of bf16
//     logits qualify and those of f32 logits do not). The buffer then lives
//     on to the result's last use; for GPT the logits and their gradient,
//     the largest tensors of the step, share one buffer.
//  4c. With `wgrad-slack` N > 0 (megac --wgrad-stream): a weight
//     gradient's product (a MatMul of bf16 operands, no epilogue, whose
//     destination is a persistent tensor) keeps the arena buffers it reads
//     live until the N-th kernel after it, so that none of those kernels
//     writes into them: mega-run --wgrad-stream can then run the product
//     on its side stream beside them without waiting (lib/Runtime/Lanes.h).
//  5. Greedy by size, best fit: buffers by decreasing size (ties: earlier
//     first) each take the smallest gap between already placed buffers whose
//     live ranges intersect its own, or the first offset after them all.
//  6. Every mega.kernel, mega.concat and mega.empty gets `mega.offset` (one
//     absolute arena offset per result; -1 for a result in an output port),
//     the function `mega.arena_bytes`, and, to show what packing bought,
//     `mega.naive_bytes` (the sum of all buffer sizes, no reuse) and
//     `mega.peak_live_bytes` (the most bytes live at once: no placement can
//     do better). The same figures summed over programs are pass statistics
//     (shown by --mlir-pass-statistics where MLIR is built with statistics;
//     Debian's release build compiles them out, hence the attributes).
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"
#include "mega/Target/Plan/Placement.h"

#include "llvm/ADT/DenseMap.h"

namespace mega {
#define GEN_PASS_DEF_MEGAASSIGNBUFFERS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

constexpr int64_t kAlign = 64;

int64_t alignUp(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Buffer {
  Value root;
  int64_t size = 0;
  unsigned first = 0, last = 0; ///< live range, op indices (inclusive)
  int64_t offset = -1;
  int merged = -1; ///< the buffer whose memory this one reuses (step 4b)
};

/// Step 4b: kernels whose result `result` may be written over operand
/// `operand` (the CPU backend's check() accepts exactly that overlap).
struct InPlace {
  StringLiteral kernel;
  unsigned result, operand;
};
constexpr InPlace kInPlace[] = {
    {"CrossEntropyGrad", 0, 0},
    {"VocabCrossEntropyGrad", 0, 0},
    {"CrossEntropyWithGrad", 2, 0},
};

struct ArenaStats {
  int64_t arenaBytes = 0, naiveBytes = 0, peakLiveBytes = 0;
};

class Assigner {
public:
  Assigner(func::FuncOp func, unsigned wgradSlack)
      : func(func), wgradSlack(wgradSlack) {}

  FailureOr<ArenaStats> run() {
    Block &block = func.getBody().front();
    // Step 1.
    unsigned k = 0;
    for (Operation &op : block)
      index[&op] = k++;
    // Step 2.
    Operation *conflict = placement.build(block);
    if (conflict)
      return conflict->emitOpError()
             << "has a part that is placed twice (concat parts must be fresh "
                "kernel results; run mega-lower-to-kernels)";
    // Step 3.
    for (auto out : block.getOps<OutputOp>()) {
      Value root = placement.portRootOf(out.getValue());
      if (!root || inPort.count(root))
        return out.emitOpError()
               << "value must be a kernel result placed nowhere else "
                  "(mega-lower-to-kernels inserts a Copy otherwise)";
      inPort.insert(root);
    }
    // Step 4.
    llvm::DenseMap<Value, unsigned> bufferOf;
    for (Operation &op : block) {
      if (!isa<ParamOp, StateOp, InputOp, OutputOp, ViewOp, ConcatOp, EmptyOp,
               KernelOp, func::ReturnOp>(op))
        return op.emitOpError("is not at kernel level (run "
                              "mega-lower-to-kernels before "
                              "mega-assign-buffers)");
      unsigned at = index[&op];
      auto touch = [&](Value v) {
        Value root = rootOf(v).first;
        if (!isArenaRoot(root) || inPort.count(root))
          return;
        auto [it, inserted] = bufferOf.try_emplace(root, buffers.size());
        if (inserted)
          buffers.push_back({root, alignUp(byteSize(root)), at, at});
        Buffer &buf = buffers[it->second];
        buf.first = std::min(buf.first, at);
        buf.last = std::max(buf.last, at);
      };
      for (Value v : op.getResults())
        touch(v);
      for (Value v : op.getOperands())
        touch(v);
    }
    // Step 4b.
    for (auto k : block.getOps<KernelOp>())
      for (const InPlace &ip : kInPlace) {
        // The table counts the plan's outputs: a kernel's first mega.dests
        // outputs are its last operands, the rest its results.
        auto d = k->getAttrOfType<IntegerAttr>("mega.dests");
        const unsigned dests = d ? unsigned(d.getInt()) : 0;
        if (k.getKernel() != ip.kernel || ip.result < dests ||
            k->getNumResults() <= ip.result - dests ||
            k->getNumOperands() <= ip.operand)
          continue;
        Value in = k->getOperand(ip.operand),
              out = k->getResult(ip.result - dests);
        auto [rin, offIn] = rootOf(in);
        auto [rout, offOut] = rootOf(out);
        auto bin = bufferOf.find(rin), bout = bufferOf.find(rout);
        if (bin == bufferOf.end() || bout == bufferOf.end() || offIn != 0 ||
            offOut != 0 || byteSize(in) != byteSize(rin) ||
            byteSize(out) != byteSize(rout) ||
            byteSize(in) != byteSize(out))
          continue;
        Buffer &from = buffers[bin->second], &to = buffers[bout->second];
        unsigned at = index[k];
        if (from.merged >= 0 || from.last != at || to.first != at)
          continue;
        to.merged = int(bin->second);
        from.last = std::max(from.last, to.last);
      }
    // Step 4c.
    if (wgradSlack > 0) {
      SmallVector<unsigned> kernels;
      for (auto k : block.getOps<KernelOp>())
        kernels.push_back(index[k]);
      unsigned n = 0;
      for (auto k : block.getOps<KernelOp>()) {
        const unsigned at = n++;
        if (!isWgradProduct(k))
          continue;
        const unsigned until =
            kernels[std::min<size_t>(at + wgradSlack, kernels.size() - 1)];
        for (Value v : k->getOperands()) {
          auto it = bufferOf.find(rootOf(v).first);
          if (it == bufferOf.end())
            continue;
          Buffer &buf = buffers[it->second];
          buf.last = std::max(buf.last, until);
        }
      }
    }
    // Step 5.
    ArenaStats result;
    pack(result);
    // Step 6.
    annotate(block);
    auto i64 = [&](int64_t v) {
      return IntegerAttr::get(IntegerType::get(func.getContext(), 64), v);
    };
    func->setAttr("mega.arena_bytes", i64(result.arenaBytes));
    func->setAttr("mega.naive_bytes", i64(result.naiveBytes));
    func->setAttr("mega.peak_live_bytes", i64(result.peakLiveBytes));
    return result;
  }

private:
  /// Step 4c's products: into a persistent tensor, bf16 operands, no
  /// epilogue (what the runtime's side stream runs).
  bool isWgradProduct(KernelOp k) const {
    auto d = k->getAttrOfType<IntegerAttr>("mega.dests");
    if (k.getKernel() != "MatMul" || !d || d.getInt() != 1 ||
        k->getNumOperands() < 3)
      return false;
    ArrayRef<int64_t> i = k.getI();
    if (i.size() > 12 && i[12] != 0)
      return false;
    auto a = dyn_cast<RankedTensorType>(k->getOperand(0).getType());
    if (!a || !a.getElementType().isBF16())
      return false;
    Value dest = rootOf(k->getOperand(k->getNumOperands() - 1)).first;
    Operation *def = dest.getDefiningOp();
    return def && isa<ParamOp, StateOp>(def);
  }

  std::pair<Value, int64_t> rootOf(Value v) const {
    return placement.rootOf(v);
  }
  static bool isArenaRoot(Value root) { return Placement::isArenaRoot(root); }

  void pack(ArenaStats &result) {
    SmallVector<unsigned> order;
    for (unsigned k = 0; k < buffers.size(); ++k)
      if (buffers[k].merged < 0)
        order.push_back(k);
    llvm::stable_sort(order, [&](unsigned a, unsigned b) {
      return buffers[a].size > buffers[b].size;
    });
    SmallVector<unsigned> placed;
    for (unsigned k : order) {
      Buffer &buf = buffers[k];
      // Placed buffers alive at the same time, by offset.
      SmallVector<const Buffer *> live;
      for (unsigned p : placed) {
        const Buffer &o = buffers[p];
        if (o.first <= buf.last && buf.first <= o.last)
          live.push_back(&o);
      }
      llvm::sort(live, [](const Buffer *a, const Buffer *b) {
        return a->offset < b->offset;
      });
      int64_t best = -1, bestGap = INT64_MAX, end = 0;
      for (const Buffer *o : live) {
        int64_t gap = o->offset - end;
        if (gap >= buf.size && gap < bestGap) {
          best = end;
          bestGap = gap;
        }
        end = std::max(end, o->offset + o->size);
      }
      buf.offset = best >= 0 ? best : end;
      placed.push_back(k);
      result.arenaBytes = std::max(result.arenaBytes, buf.offset + buf.size);
      result.naiveBytes += buf.size;
    }
    // The peak of live bytes: a lower bound for any placement.
    unsigned numOps = index.size();
    SmallVector<int64_t> delta(numOps + 1, 0);
    for (const Buffer &buf : buffers) {
      if (buf.merged >= 0)
        continue;
      delta[buf.first] += buf.size;
      delta[buf.last + 1] -= buf.size;
    }
    int64_t live = 0;
    for (int64_t d : delta)
      result.peakLiveBytes = std::max(result.peakLiveBytes, live += d);
  }

  void annotate(Block &block) {
    llvm::DenseMap<Value, int64_t> rootOffset;
    for (const Buffer &buf : buffers)
      rootOffset[buf.root] =
          buf.merged >= 0 ? buffers[size_t(buf.merged)].offset : buf.offset;
    auto offsetOf = [&](Value v) -> int64_t {
      auto [root, off] = rootOf(v);
      auto it = rootOffset.find(root);
      return it == rootOffset.end() ? -1 : it->second + off;
    };
    for (Operation &op : block)
      if (isa<KernelOp, ConcatOp, EmptyOp>(op)) {
        SmallVector<int64_t> offsets;
        for (Value r : op.getResults())
          offsets.push_back(offsetOf(r));
        op.setAttr("mega.offset",
                   DenseI64ArrayAttr::get(op.getContext(), offsets));
      }
  }

  func::FuncOp func;
  unsigned wgradSlack;
  llvm::DenseMap<Operation *, unsigned> index;
  Placement placement;
  llvm::DenseSet<Value> inPort;
  std::vector<Buffer> buffers;
};

struct AssignBuffers : mega::impl::MegaAssignBuffersBase<AssignBuffers> {
  using MegaAssignBuffersBase::MegaAssignBuffersBase;
  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.getBody().empty())
        continue;
      if (!func.getBody().hasOneBlock()) {
        func.emitError("mega-assign-buffers expects straight-line functions "
                       "(one block)");
        return signalPassFailure();
      }
      FailureOr<ArenaStats> p = Assigner(func, wgradSlack).run();
      if (failed(p))
        return signalPassFailure();
      arenaBytes += p->arenaBytes;
      naiveBytes += p->naiveBytes;
      peakLiveBytes += p->peakLiveBytes;
    }
  }

  Statistic arenaBytes{this, "arena-bytes",
                       "Arena bytes of all programs (liveness-packed)"};
  Statistic naiveBytes{this, "naive-bytes",
                       "Sum of all buffer sizes (one buffer per value)"};
  Statistic peakLiveBytes{
      this, "peak-live-bytes",
      "Peak of simultaneously live bytes (lower bound for the arena)"};
};

} // namespace

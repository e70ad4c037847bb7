//===- FuseOptimizer.cpp - One AdamWMulti per optimizer step --------------===//
//
// `mega-fuse-optimizer`, at kernel level (after mega-lower-to-kernels, before
// mega-fold-casts and mega-assign-buffers). mega-lower-to-kernels gives every
// parameter its own AdamW instruction and every gradient its own `Fill 0`
// (mega.zero_grad): two launches per parameter, 297 for GPT-2 small, each
// too small to fill a GPU. One AdamWMulti (docs/plan-format.md) does the
// same updates in one launch and, with zero_grads = 1, clears the
// gradients in the same pass.
//
// Algorithm, per function, over its block in program order:
//  1. Runs. A run is a sequence of plain AdamW kernels (no integer
//     attributes, no results: not the distributed optimizer's block update,
//     which writes an output that an AllGather reads) with the same lr,
//     step and coef operands and the same beta1, beta2 and eps, separated
//     only by ops that name buffers or views (no operands, or pure: the
//     mega.state / mega.param reads of the next update). Any other op ends
//     the run. AdamW kernels in place on disjoint tensors commute, so a run
//     of n becomes one AdamWMulti at the place of its last member: every
//     operand is defined there, and whatever fed the gradients (GradNorm,
//     AllReduceWait, AllReduce) already came before the first member.
//  2. Fills. After the run, each `Fill 0` kernel writing (mega.dests) a
//     whole gradient of the run is foldable when no op between the run and
//     it has an operand in that gradient's buffer (seen through views, by
//     the mega.state name and role). The tensors with a foldable Fill get
//     one AdamWMulti with zero_grads = 1 (the kernel clears each gradient
//     after its update, also when coef is NaN and the update is skipped, as
//     the Fill did) and their Fills are erased; the others (an update that
//     reads a copy of its gradient, such as the pipeline's all-reduced tied
//     embedding, or a gradient read before its Fill) get one with
//     zero_grads = 0 and keep their Fills. The two commute: their tensors
//     are disjoint. A group of one without a Fill to fold stays an AdamW.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"

#include <string>

namespace mega {
#define GEN_PASS_DEF_MEGAFUSEOPTIMIZER
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// A plain AdamW: in place, no group (the distributed optimizer's has
/// i = {group} and the updated block as a result).
bool isPlainAdamW(Operation *op) {
  auto k = dyn_cast<KernelOp>(op);
  return k && k.getKernel() == "AdamW" && k.getI().empty() &&
         k->getNumResults() == 0 && k->getNumOperands() == 7 &&
         k.getF().size() == 4;
}

/// Ops that only name memory (mega.state, mega.param, mega.input) or look
/// at it another way (mega.view): no data moves, so a run may span them.
bool isTransparent(Operation *op) {
  return op->getNumOperands() == 0 || isPure(op);
}

/// The buffer a value lives in: persistent state by name and role, a
/// parameter by name, anything else by its root value.
std::string bufferOf(Value v) {
  while (auto view = v.getDefiningOp<ViewOp>())
    v = view.getSource();
  if (auto s = v.getDefiningOp<StateOp>())
    return ("state:" + s.getRole() + ":" + s.getName()).str();
  if (auto p = v.getDefiningOp<ParamOp>())
    return ("param:" + p.getName()).str();
  return "value:" +
         std::to_string(reinterpret_cast<uintptr_t>(v.getAsOpaquePointer()));
}

/// The gradient buffer a `Fill 0` clears whole, or "" when it is another
/// Fill (a result, a value other than 0, a partial view).
std::string zeroFillTarget(Operation *op) {
  auto k = dyn_cast<KernelOp>(op);
  if (!k || k.getKernel() != "Fill" || !k->hasAttr(kDestsAttr) ||
      k->getNumOperands() != 1 || k->getNumResults() != 0 ||
      k.getF().size() != 1 || k.getF()[0] != 0.0f)
    return "";
  Value dest = k->getOperand(0);
  if (!dest.getDefiningOp<StateOp>())
    return ""; // a view of a gradient: part of it
  return bufferOf(dest);
}

struct MegaFuseOptimizer
    : mega::impl::MegaFuseOptimizerBase<MegaFuseOptimizer> {
  Statistic fusedRuns{this, "fused-runs", "AdamWMulti kernels created"};
  Statistic fusedUpdates{this, "fused-updates", "AdamW kernels merged"};
  Statistic foldedFills{this, "folded-fills",
                        "gradient Fills folded into zero_grads"};

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>())
      fuseBlock(func.getBody().front());
  }

  void fuseBlock(Block &block) {
    // Runs first, then the rewrites: fusing erases Fills (and their
    // mega.state) further down the block.
    SmallVector<SmallVector<KernelOp>> runs(1);
    for (Operation &op : block) {
      if (isPlainAdamW(&op)) {
        auto k = cast<KernelOp>(op);
        if (!runs.back().empty() && !sameRun(runs.back().front(), k))
          runs.emplace_back();
        runs.back().push_back(k);
      } else if (!isTransparent(&op) && !runs.back().empty()) {
        runs.emplace_back();
      }
    }
    for (ArrayRef<KernelOp> run : runs)
      if (!run.empty())
        fuse(run);
  }

  /// lr, step, coef and beta1, beta2, eps alike (only the weight decay may
  /// differ between the tensors of one AdamWMulti).
  static bool sameRun(KernelOp a, KernelOp b) {
    for (unsigned k = 4; k < 7; ++k)
      if (a->getOperand(k) != b->getOperand(k))
        return false;
    return a.getF().take_front(3) == b.getF().take_front(3);
  }

  void fuse(ArrayRef<KernelOp> run) {
    KernelOp last = run.back();
    // Step 2: the Fills of the run's gradients.
    llvm::StringMap<unsigned> gradOf; // gradient buffer -> run position
    for (auto [k, a] : llvm::enumerate(run))
      gradOf[bufferOf(a->getOperand(1))] = unsigned(k);
    SmallVector<Operation *> fills(run.size(), nullptr);
    llvm::StringSet<> blocked; // read or written before its Fill
    unsigned found = 0;
    for (Operation *op = last->getNextNode(); op && found < run.size();
         op = op->getNextNode()) {
      std::string target = zeroFillTarget(op);
      auto it = gradOf.find(target);
      if (!target.empty() && it != gradOf.end() && !blocked.contains(target) &&
          !fills[it->second]) {
        fills[it->second] = op;
        ++found;
        continue;
      }
      for (Value v : op->getOperands()) {
        std::string buf = bufferOf(v);
        if (gradOf.count(buf))
          blocked.insert(buf);
      }
      if (blocked.size() == gradOf.size())
        break;
    }
    // Tensors whose gradient's Fill folds get one AdamWMulti with
    // zero_grads = 1, the others one with zero_grads = 0 (the updates of
    // disjoint tensors commute). A group of one without a Fill to fold
    // stays a plain AdamW.
    SmallVector<KernelOp> zeroed, kept;
    const bool uniqueGrads = gradOf.size() == run.size();
    for (auto [k, a] : llvm::enumerate(run))
      (uniqueGrads && fills[k] ? zeroed : kept).push_back(a);
    if (kept.size() > 1)
      create(kept, last, false);
    if (!zeroed.empty())
      create(zeroed, last, true);
    for (KernelOp a : run)
      if (kept.size() > 1 || !llvm::is_contained(kept, a))
        a->erase();
    if (!uniqueGrads)
      return;
    for (Operation *fill : fills) {
      if (!fill)
        continue;
      Operation *dest = fill->getOperand(0).getDefiningOp();
      fill->erase();
      if (dest->use_empty())
        dest->erase(); // the mega.state only the Fill read
      ++foldedFills;
    }
  }

  /// One AdamWMulti for `group` before `at`.
  void create(ArrayRef<KernelOp> group, KernelOp at, bool zero) {
    SmallVector<Value> operands;
    llvm::append_range(operands, at->getOperands().slice(4, 3));
    SmallVector<float> f(at.getF().take_front(3));
    for (KernelOp a : group) {
      llvm::append_range(operands, a->getOperands().take_front(4));
      f.push_back(a.getF()[3]);
    }
    OpBuilder b(at);
    b.create<KernelOp>(
        at.getLoc(), TypeRange{}, b.getStringAttr("AdamWMulti"), operands,
        b.getDenseI64ArrayAttr({int64_t(group.size()), zero ? 1 : 0}),
        b.getDenseF32ArrayAttr(f));
    ++fusedRuns;
    fusedUpdates += group.size();
  }
};

} // namespace

//===- FuseLoss.cpp - Cross entropy and its gradient as one kernel --------===//
//
// `mega-fuse-loss`, at kernel level (after mega-fold-casts, before
// mega-assign-buffers). A training program computes the loss with
// CrossEntropy (logits, targets) -> loss, lse and, when the loss is the
// program's last forward op, its gradient right after with CrossEntropyGrad
// (logits, targets, lse, dloss) -> dlogits: the logits, the step's largest
// tensor, are read from memory twice. CrossEntropyWithGrad
// (docs/plan-format.md) computes both per row, reading each row once; its
// results are the two kernels' bits.
//
// Algorithm, per CrossEntropyGrad kernel G:
//  1. G's lse is a result of a CrossEntropy kernel C in the same block, and
//     G reads C's logits and targets (the same values); neither writes in
//     place (mega.dests).
//  2. G's dloss is defined before C (a block argument or an op before it),
//     and no kernel between C and G writes in place into memory that C or
//     G reads.
//  3. CrossEntropyWithGrad (logits, targets, dloss) -> (loss, lse, dlogits)
//     replaces C at C's place (the gradient is written before the ops that
//     came between; nothing between reads it, since it did not exist
//     there); G goes.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGAFUSELOSS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

bool isKernel(Operation *op, StringRef name) {
  auto k = dyn_cast_or_null<KernelOp>(op);
  return k && k.getKernel() == name && !k->hasAttr(kDestsAttr);
}

struct MegaFuseLoss : mega::impl::MegaFuseLossBase<MegaFuseLoss> {
  using MegaFuseLossBase::MegaFuseLossBase;

  void runOnOperation() override {
    if (!enable)
      return;
    SmallVector<KernelOp> grads;
    getOperation().walk([&](KernelOp k) {
      if (isKernel(k, "CrossEntropyGrad"))
        grads.push_back(k);
    });
    for (KernelOp g : grads)
      tryFuse(g);
  }

  void tryFuse(KernelOp g) {
    if (g->getNumOperands() != 4 || g->getNumResults() != 1)
      return;
    // Step 1.
    Value lse = g->getOperand(2);
    auto ce = lse.getDefiningOp<KernelOp>();
    if (!ce || !isKernel(ce, "CrossEntropy") || ce->getNumResults() != 2 ||
        ce->getResult(1) != lse || ce->getBlock() != g->getBlock() ||
        ce->getOperand(0) != g->getOperand(0) ||
        ce->getOperand(1) != g->getOperand(1) || ce.getI() != g.getI())
      return;
    // Step 2.
    Value dloss = g->getOperand(3);
    if (Operation *def = dloss.getDefiningOp())
      if (def->getBlock() != ce->getBlock() || !def->isBeforeInBlock(ce))
        return;
    for (Operation *op = ce->getNextNode(); op != g.getOperation();
         op = op->getNextNode())
      if (writesInto(op, ce) || writesInto(op, g))
        return;
    // Step 3.
    OpBuilder b(ce);
    SmallVector<Type> types(ce->getResultTypes());
    types.push_back(g->getResult(0).getType());
    auto fused = b.create<KernelOp>(
        ce.getLoc(), types, b.getStringAttr("CrossEntropyWithGrad"),
        ValueRange{ce->getOperand(0), ce->getOperand(1), dloss}, ce.getIAttr(),
        ce.getFAttr());
    for (NamedAttribute a : ce->getDiscardableAttrs())
      fused->setAttr(a.getName(), a.getValue());
    ce->getResult(0).replaceAllUsesWith(fused->getResult(0));
    ce->getResult(1).replaceAllUsesWith(fused->getResult(1));
    g->getResult(0).replaceAllUsesWith(fused->getResult(2));
    g->erase();
    ce->erase();
  }
};

} // namespace

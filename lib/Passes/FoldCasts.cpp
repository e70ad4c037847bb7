//===- FoldCasts.cpp - Producers write the bf16 copy themselves -----------===//
//
// `mega-fold-casts`, at kernel level (after mega-lower-to-kernels, before
// mega-assign-buffers). mega-mixed-precision casts every tensor-core operand
// to bf16 with its own Cast kernel: a full read of the f32 value and a write
// of the copy. Where the f32 value exists only to be cast, its producer can
// round on store instead; the kernels that can (their bf16-output form is in
// docs/plan-format.md) are listed in kBf16Producers.
//
// Algorithm, per Cast kernel (f32 -> bf16), in program order:
//  1. Walk from its operand up through mega.view sources to the root value.
//     Stop unless the root is a result of a mega.kernel in kBf16Producers
//     that writes a fresh buffer (no mega.dests) and is f32.
//  2. Collect the root's users transitively through views; stop unless
//     every non-view user is a Cast to bf16 (a port, a concat, any other
//     kernel still needs the f32 value).
//  3. Retype the root to bf16 and every view under it to bf16 with its byte
//     offset halved (element offsets are unchanged); replace each Cast's
//     result by its (now bf16) operand and erase the Cast.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/StringSet.h"

namespace mega {
#define GEN_PASS_DEF_MEGAFOLDCASTS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// Kernels whose f32 results may be bf16 instead (rounded on store).
const llvm::StringSet<> kBf16Producers = {"Elementwise", "Transpose",
                                          "CrossEntropyGrad"};

RankedTensorType withBf16(Type t) {
  auto r = cast<RankedTensorType>(t);
  return RankedTensorType::get(r.getShape(), BFloat16Type::get(t.getContext()));
}

bool isBf16Cast(Operation *op) {
  auto k = dyn_cast<KernelOp>(op);
  return k && k.getKernel() == "Cast" && k->getNumResults() == 1 &&
         cast<RankedTensorType>(k->getResult(0).getType())
             .getElementType()
             .isBF16();
}

struct MegaFoldCasts : mega::impl::MegaFoldCastsBase<MegaFoldCasts> {
  uint64_t folded = 0;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      SmallVector<KernelOp> casts;
      func.walk([&](KernelOp k) {
        if (isBf16Cast(k))
          casts.push_back(k);
      });
      for (KernelOp c : casts)
        if (c->getBlock()) // not erased by an earlier fold
          tryFold(c);
    }
  }

  void tryFold(KernelOp castOp) {
    // Step 1.
    Value root = castOp->getOperand(0);
    while (auto v = root.getDefiningOp<ViewOp>())
      root = v.getSource();
    auto producer = root.getDefiningOp<KernelOp>();
    if (!producer || !kBf16Producers.contains(producer.getKernel()) ||
        producer->hasAttr("mega.dests") ||
        !cast<RankedTensorType>(root.getType()).getElementType().isF32())
      return;
    // Step 2.
    SmallVector<ViewOp> views;
    SmallVector<Operation *> casts;
    SmallVector<Value> work = {root};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      for (Operation *user : v.getUsers()) {
        if (auto view = dyn_cast<ViewOp>(user)) {
          views.push_back(view);
          work.push_back(view.getResult());
        } else if (isBf16Cast(user)) {
          casts.push_back(user);
        } else {
          return;
        }
      }
    }
    // Step 3.
    root.setType(withBf16(root.getType()));
    OpBuilder b(producer);
    for (ViewOp view : views) {
      view.getResult().setType(withBf16(view.getType()));
      view.setOffsetAttr(b.getI64IntegerAttr(view.getOffset() / 2));
    }
    for (Operation *c : casts) {
      c->getResult(0).replaceAllUsesWith(c->getOperand(0));
      c->erase();
      ++folded;
    }
  }
};

} // namespace

//===- OverwriteGrads.cpp - The first write of each gradient overwrites ---===//
//
// `mega-overwrite-grads{microbatches=1}`, at kernel level (after
// mega-fuse-bias-grad and mega-bf16-weight-copies, before
// mega-assign-buffers). A training step adds every gradient term into the
// parameter's gradient in place, into gradients the optimizer cleared at
// the end of the step before (AdamWMulti's zero_grads, or a Fill 0). When
// the train program runs once per step (one micro-batch, no pipeline), the
// first kernel that adds into a gradient can overwrite it instead: it no
// longer reads the zeros, and the optimizer no longer writes them (as
// PyTorch's zero_grad(set_to_none=True)). 0 + x is x, so the bits are
// those of the plan without the pass.
//
// Algorithm:
//  1. microbatches != 1, or no @train: nothing to do (with several
//     micro-batches the train program runs more than once per step).
//  2. Walk @train's ops in order. A gradient (a mega.state of role "grad",
//     by name) whose first use is as a destination of a kernel that adds
//     into the whole of it, in a form with an overwriting twin, gets that
//     twin: a MatMul's C (batch 1, ldc = N, M·N elements: beta 1 -> 0), its
//     bias-gradient epilogue's g (i[13] 1 -> 0), a ReduceSum's out (i[2]),
//     an EmbeddingGrad's table (i[3]: zeroed first, then the scatter-add),
//     a LayerNormGrad's dw and db together (accumulate_wb i[3], both first
//     uses) and its dsum (i[4], its last output). Any other first use (a read, a view, a
//     kernel without such a form) leaves that gradient as it is.
//  3. In @optimizer: a Fill 0 of an overwritten gradient goes; an
//     AdamWMulti's zero_grads (i[1]) becomes 0 when every gradient among
//     its operands is overwritten (else the kernel still clears them all,
//     which is harmless).
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/StringSet.h"

namespace mega {
#define GEN_PASS_DEF_MEGAOVERWRITEGRADS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// The gradient's name when `v` is a mega.state of role "grad" itself.
std::optional<StringRef> gradName(Value v) {
  auto s = v.getDefiningOp<StateOp>();
  if (!s || s.getRole() != "grad")
    return std::nullopt;
  return s.getName();
}

int64_t numel(Value v) {
  return cast<RankedTensorType>(v.getType()).getNumElements();
}

struct MegaOverwriteGrads
    : mega::impl::MegaOverwriteGradsBase<MegaOverwriteGrads> {
  using MegaOverwriteGradsBase::MegaOverwriteGradsBase;

  llvm::StringSet<> overwritten, settled;

  void runOnOperation() override {
    // Step 1.
    if (microbatches != 1)
      return;
    ModuleOp module = getOperation();
    auto train = module.lookupSymbol<func::FuncOp>("train");
    if (!train)
      return;
    // Step 2.
    train.walk([&](Operation *op) {
      for (OpOperand &use : op->getOpOperands()) {
        std::optional<StringRef> name = gradName(use.get());
        if (name && !settled.contains(*name))
          firstUse(op, use, *name);
      }
    });
    // Step 3.
    if (auto opt = module.lookupSymbol<func::FuncOp>("optimizer"))
      dropClearing(opt);
  }

  void settle(StringRef name, bool overwrite) {
    settled.insert(name);
    if (overwrite)
      overwritten.insert(name);
  }

  /// `use` is the first use of gradient `name`: overwrite it there when
  /// the kernel has the form, else leave the gradient alone.
  void firstUse(Operation *op, OpOperand &use, StringRef name) {
    auto k = dyn_cast<KernelOp>(op);
    const unsigned idx = use.getOperandNumber();
    const int64_t nd = k ? destCount(k) : 0;
    if (!k || idx + nd < k->getNumOperands())
      return settle(name, false); // read, or not a kernel
    SmallVector<int64_t> i(k.getI());
    SmallVector<float> f(k.getF());
    StringRef kernel = k.getKernel();
    const unsigned dest = idx - (k->getNumOperands() - nd);
    const int64_t n = numel(use.get());
    bool ok = false;
    if (kernel == "MatMul" && i.size() >= 12 && dest == 0 &&
        (i.size() == 12 || i[12] == 0 || i[12] == 5) && i[0] == 1 &&
        i[8] == i[2] && i[1] * i[2] == n && f.size() == 2 &&
        (f[1] == 1.0f || f[1] == 0.0f)) {
      f[1] = 0.0f;
      ok = true;
    } else if (kernel == "MatMul" && i.size() == 14 && i[12] == 5 &&
               dest == 1 && i[2] == n) {
      i[13] = 0;
      ok = true;
    } else if (kernel == "ReduceSum" && i.size() == 3 && dest == 0 &&
               i[1] == n) {
      i[2] = 0;
      ok = true;
    } else if (kernel == "EmbeddingGrad" && i.size() == 4 && dest == 0 &&
               i[1] * i[2] == n) {
      i[3] = 0;
      ok = true;
    } else if (kernel == "LayerNormGrad" && (dest == 1 || dest == 2) &&
               i.size() >= 4) {
      // dw and db share accumulate_wb: both must be first uses here.
      const unsigned base = k->getNumOperands() - nd;
      std::optional<StringRef> dw = gradName(k->getOperand(base + 1));
      std::optional<StringRef> db = gradName(k->getOperand(base + 2));
      if (dw && db && *dw != *db && !settled.contains(*dw) &&
          !settled.contains(*db) && numel(k->getOperand(base + 1)) == i[1] &&
          numel(k->getOperand(base + 2)) == i[1]) {
        i[3] = 0;
        settle(*dw, true);
        settle(*db, true);
        k.setIAttr(DenseI64ArrayAttr::get(k.getContext(), i));
        return;
      }
    } else if (kernel == "LayerNormGrad" && i.size() == 5 && dest >= 3 &&
               int64_t(dest) == nd - 1 && i[1] == n) {
      // dsum: the last output (the 5th, or the 4th with a bf16 dx).
      i[4] = 0;
      ok = true;
    }
    if (ok) {
      k.setIAttr(DenseI64ArrayAttr::get(k.getContext(), i));
      k.setFAttr(DenseF32ArrayAttr::get(k.getContext(), f));
    }
    settle(name, ok);
  }

  void dropClearing(func::FuncOp opt) {
    SmallVector<KernelOp> fills;
    opt.walk([&](KernelOp k) {
      if (k.getKernel() == "Fill" && k->getNumOperands() == 1 &&
          destCount(k) == 1 && k.getF().size() == 1 && k.getF()[0] == 0.0f) {
        std::optional<StringRef> name = gradName(k->getOperand(0));
        if (name && overwritten.contains(*name))
          fills.push_back(k);
      }
      if (k.getKernel() == "AdamWMulti" && k.getI().size() >= 2 &&
          k.getI()[1] == 1) {
        bool all = true;
        for (Value v : k->getOperands())
          if (std::optional<StringRef> name = gradName(v))
            all &= overwritten.contains(*name);
        if (all) {
          SmallVector<int64_t> i(k.getI());
          i[1] = 0;
          k.setIAttr(DenseI64ArrayAttr::get(k.getContext(), i));
        }
      }
    });
    for (KernelOp k : fills)
      k->erase();
  }
};

} // namespace

//===- FuseBiasGrad.cpp - A Linear's bias gradient into its weight gradient
//-===//
//
// `mega-fuse-bias-grad`, at kernel level (after mega-fuse-norm-grad, before
// mega-assign-buffers). A Linear's backward reads its output gradient dy
// twice beside the dX product: the weight gradient dW += x^T dy (a MatMul
// adding into the gradient in place, dy its B operand) and the bias
// gradient db += the column sums of dy (a ReduceSum adding in place). The
// MatMul's epilogue 5 (docs/plan-format.md) computes the column sums of its
// B as a second output, so the two become one kernel: on the GPU cuBLASLt's
// bias-gradient epilogue sums dy while the product reads it, and dy is no
// longer read a second time.
//
// Algorithm, per ReduceSum kernel R adding in place (mega.dests = 1,
// i = {K, N, 1}) its input X's column sums into an f32 g of N elements:
//  1. A MatMul M in R's block adds in place (mega.dests = 1, one destination
//     C, no epilogue) with batch 1, B not transposed, N columns, K rows,
//     ldb = N and alpha 1, whose B is exactly X's K x N elements: the same
//     root buffer through views, at the same offset, with X's element type.
//     The first such M wins.
//  2. Between R and M (whichever comes first) no op writes in place into
//     what R or M reads, and no op reads or writes g's bytes; g shares no
//     memory with M's operands. (The sums move to M's place.)
//  3. M becomes MatMul(A, B, C, g) with i = M's + {5, 1} and two
//     destinations; R goes. When g's defining op comes after M (a state
//     reference next to R), a clone of it before M names g.
// The CPU computes the product and then ReduceSum's very sums, so a plan
// has the same bits with and without the pass.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGAFUSEBIASGRAD
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

Type elementOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getElementType();
}

/// The root value under `v`'s views and `v`'s byte offset in it.
std::pair<Value, int64_t> rootOf(Value v) {
  int64_t bytes = 0;
  while (auto view = v.getDefiningOp<ViewOp>()) {
    bytes += view.getOffset();
    v = view.getSource();
  }
  return {v, bytes};
}

/// Ops strictly between `a` and `b` (either order) in their block.
SmallVector<Operation *> between(Operation *a, Operation *b) {
  if (b->isBeforeInBlock(a))
    std::swap(a, b);
  SmallVector<Operation *> ops;
  for (Operation *op = a->getNextNode(); op && op != b; op = op->getNextNode())
    ops.push_back(op);
  return ops;
}

struct MegaFuseBiasGrad : mega::impl::MegaFuseBiasGradBase<MegaFuseBiasGrad> {
  using MegaFuseBiasGradBase::MegaFuseBiasGradBase;

  void runOnOperation() override {
    if (!enable)
      return;
    SmallVector<KernelOp> sums;
    getOperation().walk([&](KernelOp k) {
      if (isKernelOp(k, "ReduceSum"))
        sums.push_back(k);
    });
    for (KernelOp r : sums)
      tryFuse(r);
  }

  /// Step 1: the weight gradient's MatMul reading R's input as B, or null.
  static KernelOp findProduct(KernelOp r, int64_t K, int64_t N) {
    Value x = r->getOperand(0);
    auto [root, offset] = rootOf(x);
    for (Operation &op : *r->getBlock()) {
      auto m = dyn_cast<KernelOp>(&op);
      if (!m || !isKernelOp(m, "MatMul") || destCount(m) != 1 ||
          m->getNumOperands() != 3 || m->getNumResults() != 0)
        continue;
      ArrayRef<int64_t> i = m.getI();
      ArrayRef<float> f = m.getF();
      // batch 1, B [K, N] not transposed with ldb = N, no epilogue, alpha 1.
      if (i.size() != 12 || i[0] != 1 || i[2] != N || i[3] != K || i[5] != 0 ||
          i[7] != N || f.size() != 2 || f[0] != 1.0f)
        continue;
      Value b = m->getOperand(1);
      auto [broot, boffset] = rootOf(b);
      if (broot != root || boffset != offset || elementOf(b) != elementOf(x) ||
          numElements(b) < K * N)
        continue;
      return m;
    }
    return {};
  }

  /// Step 2.
  static bool movable(KernelOp r, KernelOp m, Value g) {
    for (Value v : m->getOperands())
      if (mayShareMemory(g, v))
        return false;
    for (Operation *op : between(r, m)) {
      // References to memory touch nothing (g's own state reference may
      // sit between).
      if (isa<ViewOp, EmptyOp, StateOp, ParamOp>(op))
        continue;
      if (writesInto(op, r) || writesInto(op, m))
        return false;
      for (Value v : op->getOperands())
        if (mayShareMemory(g, v))
          return false;
      for (Value v : op->getResults())
        if (mayShareMemory(g, v))
          return false;
    }
    return true;
  }

  void tryFuse(KernelOp r) {
    ArrayRef<int64_t> ri = r.getI();
    if (ri.size() != 3 || ri[2] != 1 || destCount(r) != 1 ||
        r->getNumOperands() != 2 || r->getNumResults() != 0)
      return;
    const int64_t K = ri[0], N = ri[1];
    Value g = r->getOperand(1);
    if (!elementOf(g).isF32() || numElements(g) != N ||
        numElements(r->getOperand(0)) != K * N)
      return;
    KernelOp m = findProduct(r, K, N);
    if (!m || !movable(r, m, g))
      return;
    OpBuilder b(m);
    // g named before M (its state reference may sit just before R).
    Value gm = g;
    Operation *gdef = g.getDefiningOp();
    if (gdef && gdef->getBlock() == m->getBlock() && m->isBeforeInBlock(gdef)) {
      if (!isa<StateOp, ParamOp>(gdef))
        return;
      gm = b.clone(*gdef)->getResult(0);
    }
    SmallVector<Value> operands(m->getOperands());
    operands.push_back(gm);
    SmallVector<int64_t> i(m.getI());
    i.push_back(5); // epilogue: B's column sums
    i.push_back(1); // added into g
    auto fused =
        b.create<KernelOp>(m.getLoc(), TypeRange{}, m.getKernelAttr(), operands,
                           b.getDenseI64ArrayAttr(i), m.getFAttr());
    for (NamedAttribute a : m->getDiscardableAttrs())
      fused->setAttr(a.getName(), a.getValue());
    fused->setAttr(kDestsAttr, b.getI64IntegerAttr(2));
    r->erase();
    m->erase();
    if (gdef && gdef->use_empty())
      gdef->erase();
  }
};

} // namespace

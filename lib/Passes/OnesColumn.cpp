//===- OnesColumn.cpp - A Linear's bias gradient as one more product row --===//
//
// `mega-ones-column`, at kernel level (after mega-overwrite-grads, before
// mega-assign-buffers; megac --ones-column-bias-grad). A Linear fed by a
// LayerNorm computes, in its backward, the weight gradient x^T dy and the
// bias gradient, the column sums of dy: after mega-fuse-bias-grad one
// MatMul with epilogue 5 (cuBLASLt's bias-gradient epilogue, which costs a
// third of the product's time at GPT-2's shapes). The column sums are
// 1^T dy, so a column of ones beside x makes them one more row of x^T dy:
// the norm writes each row of x padded to `ld` columns, a 1 in column H
// and zeros after, the forward product reads x with lda = ld, and the
// weight gradient becomes a plain product of ld rows into scratch, whose
// first H rows are the weight gradient and row H the bias gradient.
//
// Algorithm, per MatMul W with epilogue 5 (batch 1, A transposed, M = H
// rows, lda = H, ldc = N, alpha 1; dests C = g_w [H, N] and g = g_b [N]):
//  1. W's A is, through views at offset 0, result 0 of a LayerNorm L of
//     {rows = K, cols = H} in W's block.
//  2. Every use of L's y, through views at offset 0 whose last dimension
//     is H, is W or a MatMul reading it as A not transposed with batch 1,
//     K = H and lda = H (the Linear's forward product).
//  3. ld = H + 1 rounded up to 8 elements (rows of 16-byte multiples in
//     bf16 and f32). L gets i = {rows, H, ld} and y, and each view of it,
//     the last dimension ld; the forward products lda = ld.
//  4. W becomes a plain MatMul (A, B) -> S, a new [ld, N] f32 buffer, with
//     M = lda = ld, alpha 1, beta 0. After it: the first H rows of S into
//     g_w and row H into g_b, each a Copy when W overwrote it (beta 0, its
//     accumulate 0: mega-overwrite-grads), else an Elementwise add in
//     place. Rows H+1..ld-1 of S are zeros.
//  5. Instead of 4, when W overwrote both gradients, g_w is a `mega.state`
//     and the module has no data-parallel axis (whose buckets place the
//     gradients back to back): S is g_w's own buffer, given a tail of
//     (ld - H) * N * 4 bytes (`mega.tail_bytes` on the state, the plan's
//     tail_bytes): the product writes g_w in place, row H into the tail,
//     and only the bias row is copied out. GPT-2 small's bf16 step loses
//     24 Copies of 7 to 9 MB.
// The bias gradient's bits are then the product's f32 sum (a 1 times each
// element of dy), not ReduceSum's; both backends compute the same plan.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGAONESCOLUMN
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

using namespace mega::mm;

/// `t` with its last dimension `last`.
RankedTensorType withLast(RankedTensorType t, int64_t last) {
  SmallVector<int64_t> shape(t.getShape());
  shape.back() = last;
  return RankedTensorType::get(shape, t.getElementType());
}

/// Everything that reads y: the views of it (at offset 0, last dimension
/// H) and the kernels at the end of them.
struct Uses {
  SmallVector<ViewOp> views;
  SmallVector<KernelOp> forward; ///< MatMuls reading y as A (step 2)
  bool weightGrad = false;       ///< W is among the readers
};

struct MegaOnesColumn : mega::impl::MegaOnesColumnBase<MegaOnesColumn> {
  using MegaOnesColumnBase::MegaOnesColumnBase;

  void runOnOperation() override {
    SmallVector<KernelOp> products;
    if (auto mesh =
            getOperation()->getAttrOfType<DenseI64ArrayAttr>("mega.mesh"))
      dataParallel = mesh.size() > 1 && mesh[1] > 1;
    getOperation().walk([&](KernelOp k) {
      if (isKernelOp(k, "MatMul") && k.getI().size() == 14 &&
          k.getI()[kEpilogue] == 5)
        products.push_back(k);
    });
    for (KernelOp w : products)
      tryRewrite(w);
  }

  /// The LayerNorm under W's A (step 1), or null.
  static KernelOp normOf(KernelOp w) {
    Value v = w->getOperand(0);
    while (auto view = v.getDefiningOp<ViewOp>()) {
      if (view.getOffset() != 0)
        return {};
      v = view.getSource();
    }
    auto l = v.getDefiningOp<KernelOp>();
    if (!l || !isKernelOp(l, "LayerNorm") || l.getI().size() != 2 ||
        cast<OpResult>(v).getResultNumber() != 0 ||
        l->getBlock() != w->getBlock())
      return {};
    return l;
  }

  /// Step 2 over the uses of `v` (y or a view of it); false when a use is
  /// not one the rewrite knows.
  static bool collect(Value v, int64_t H, KernelOp w, Uses &uses) {
    for (OpOperand &use : v.getUses()) {
      Operation *user = use.getOwner();
      if (auto view = dyn_cast<ViewOp>(user)) {
        RankedTensorType t = tensorOf(view.getResult());
        if (view.getOffset() != 0 || t.getRank() == 0 ||
            t.getShape().back() != H ||
            t.getElementType() != tensorOf(v).getElementType() ||
            t.getNumElements() != tensorOf(v).getNumElements())
          return false;
        uses.views.push_back(view);
        if (!collect(view.getResult(), H, w, uses))
          return false;
        continue;
      }
      auto k = dyn_cast<KernelOp>(user);
      if (!k || use.getOperandNumber() != 0)
        return false;
      if (k == w) {
        uses.weightGrad = true;
        continue;
      }
      if (!isKernelOp(k, "MatMul") || k.getI().size() < 12)
        return false;
      ArrayRef<int64_t> i = k.getI();
      if (i[kBatch] != 1 || i[kTransA] != 0 || i[kK] != H || i[kLda] != H)
        return false;
      uses.forward.push_back(k);
    }
    return true;
  }

  void tryRewrite(KernelOp w) {
    ArrayRef<int64_t> wi = w.getI();
    ArrayRef<float> wf = w.getF();
    const int64_t H = wi[kM], N = wi[kN], K = wi[kK];
    if (destCount(w) != 2 || w->getNumOperands() != 4 ||
        w->getNumResults() != 0 || wi[kBatch] != 1 || wi[kTransA] != 1 ||
        wi[kLda] != H || wi[kLdc] != N || wf.size() != 2 || wf[0] != 1.0f ||
        H <= 0 || N <= 0)
      return;
    Value gw = w->getOperand(2), gb = w->getOperand(3);
    if (!tensorOf(gw).getElementType().isF32() || numElements(gw) != H * N ||
        !tensorOf(gb).getElementType().isF32() || numElements(gb) != N)
      return;
    KernelOp l = normOf(w);
    if (!l || l.getI()[0] != K || l.getI()[1] != H)
      return;
    Uses uses;
    if (!collect(l->getResult(0), H, w, uses) || !uses.weightGrad)
      return;

    // Step 3.
    const int64_t ld = (H + 1 + 7) / 8 * 8;
    OpBuilder b(w);
    l.setIAttr(b.getDenseI64ArrayAttr({K, H, ld}));
    l->getResult(0).setType(withLast(tensorOf(l->getResult(0)), ld));
    for (ViewOp view : uses.views)
      view.getResult().setType(withLast(tensorOf(view.getResult()), ld));
    for (KernelOp f : uses.forward) {
      SmallVector<int64_t> i(f.getI());
      i[kLda] = ld;
      f.setIAttr(b.getDenseI64ArrayAttr(i));
    }

    // Step 4, or 5.
    Location loc = w.getLoc();
    auto f32 = b.getF32Type();
    auto rows = RankedTensorType::get({ld, N}, f32);
    const bool overwrite = wf[1] == 0.0f && wi[13] == 0;
    auto gwState = gw.getDefiningOp<StateOp>();
    const bool tail =
        overwrite && gwState && gwState.getRole() == "grad" && !dataParallel;
    Value s;
    if (tail) {
      const int64_t bytes = (ld - H) * N * 4;
      auto old = gwState->getAttrOfType<IntegerAttr>(kTailBytesAttr);
      if (!old || old.getInt() < bytes)
        gwState->setAttr(kTailBytesAttr, b.getI64IntegerAttr(bytes));
      s = b.create<ViewOp>(loc, rows, gw, b.getI64IntegerAttr(0));
    } else {
      s = b.create<EmptyOp>(loc, rows);
    }
    SmallVector<int64_t> pi(wi.take_front(12));
    pi[kM] = ld;
    pi[kLda] = ld;
    auto product = b.create<KernelOp>(
        loc, TypeRange{}, w.getKernelAttr(),
        ValueRange{w->getOperand(0), w->getOperand(1), s},
        b.getDenseI64ArrayAttr(pi), b.getDenseF32ArrayAttr({1.0f, 0.0f}));
    for (NamedAttribute a : w->getDiscardableAttrs())
      product->setAttr(a.getName(), a.getValue());
    product->setAttr(kDestsAttr, b.getI64IntegerAttr(1));
    if (!tail)
      moveInto(b, loc, s, 0, gw, wf[1] != 0.0f);
    moveInto(b, loc, s, H * N, gb, wi[13] != 0);
    w->erase();
  }

  /// Whether the module's mesh has a data axis of more than one rank (its
  /// gradients go into buckets, which Memory places back to back).
  bool dataParallel = false;

  /// `dst` (=, or += when `add`) the elements of `s` from `at` on.
  static void moveInto(OpBuilder &b, Location loc, Value s, int64_t at,
                       Value dst, bool add) {
    RankedTensorType t = tensorOf(dst);
    Value src = b.create<ViewOp>(loc, t, s, b.getI64IntegerAttr(at * 4));
    KernelOp k;
    if (!add) {
      k = b.create<KernelOp>(loc, TypeRange{}, b.getStringAttr("Copy"),
                             ValueRange{src, dst}, b.getDenseI64ArrayAttr({}),
                             b.getDenseF32ArrayAttr({}));
    } else {
      // r0 = src, r1 = dst, r0 = r0 + r1, dst = r0 (plan-format.md §4).
      const int64_t n = t.getNumElements();
      k = b.create<KernelOp>(
          loc, TypeRange{}, b.getStringAttr("Elementwise"),
          ValueRange{src, dst, dst},
          b.getDenseI64ArrayAttr(
              {n, 2, 1, n, n, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0}),
          b.getDenseF32ArrayAttr({}));
    }
    k->setAttr(kDestsAttr, b.getI64IntegerAttr(1));
  }
};

} // namespace

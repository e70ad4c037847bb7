//===- FuseNormGrad.cpp - Residual and dw/db adds into LayerNormGrad ------===//
//
// `mega-fuse-norm-grad`, at kernel level (after mega-fold-casts,
// mega-fuse-loss and mega-chunk-loss, before mega-assign-buffers). In a
// pre-norm block's backward every LayerNormGrad's dx is added to the residual
// gradient by an Elementwise (which, in a bf16 plan, also stores the sum's bf16
// copy), and its dw and db are added into the parameters' gradients by two
// in-place Elementwise kernels of `cols` elements; the final norm's dx is cast
// to bf16 by a Cast. LayerNormGrad's `accumulate` (dx += ...), `accumulate_wb`
// (dw, db += the finished column sums) and its optional bf16 4th output
// (docs/plan-format.md, opcode 6) compute the same bits in the norm's one
// pass, so those kernels go: the residual gradient is read and written
// once per norm instead of twice, and 50 tiny launches per GPT-2 step go.
//
// Algorithm, per LayerNormGrad kernel L (not accumulating, not writing in
// place, 3 results, 3 integer attributes), with n = rows * cols:
//  1. (residual add) L's dx has one use, an Elementwise E (no mega.dests)
//     later in the block whose micro-op program loads its two inputs, adds
//     them once and stores only that sum: to one f32 output, or to one f32
//     and one bf16 output (its copy); its inputs are dx and an f32 r of n
//     elements, both read whole (period n). Then L can add dx into r's
//     bytes when r's old value is read by nothing after L: r is the result
//     of a kernel (or a mega.empty) defined before L, a root of its own
//     (not a concat part, no output port over it), no operand of L and no
//     op after L but E reads any of its bytes (through views too), and no
//     kernel between L and E writes in place into what E reads. E's f32
//     result must not be a concat part or in an output port either (r's
//     bytes take its place).
//  2. (the bf16 copy) Otherwise, a Cast of dx to bf16 (n elements) later in
//     the block with no kernel between L and it writing in place into its
//     input becomes L's 4th result.
//  3. (dw, db) dw and db each have one use, an Elementwise G writing in
//     place (mega.dests = 1) into an f32 g of `cols` elements whose program
//     is exactly g + dw (db): Loads, one Add, one Store, either order (f32
//     addition is commutative). Both must match; the two g share no memory
//     with each other, with L's operands or with r, and no op between L
//     and each G touches its g (reads or writes its bytes: the add now
//     happens at L's place).
//  4. The fused L' at L's place: its destinations (mega.dests) are, when 3
//     holds, dx's bytes (r from 1, else a new mega.empty before L') and the
//     two g; when only 1 holds, r alone; its results are what is left of
//     dx, dw, db, then the bf16 copy from 1 or 2. i = {rows, cols, 1 if 1
//     holds, then 1 when 3 holds}. E's f32 result becomes r (its bf16 one
//     the copy), the Cast's result the copy, L's dx the mega.empty; E, the
//     Cast and the G go.
//  5. (the bias gradient) Then, for every LayerNormGrad L with the bf16 copy
//     as its 4th output (and no 5th): a ReduceSum R in the block whose input
//     is exactly that copy, whole (i = {rows, cols, a}), either writing a
//     fresh f32 result (a = 0) or adding into an f32 g of `cols` elements in
//     place (mega.dests = 1, a = 1: a Linear's bias gradient), with no kernel
//     between L and R writing into what R reads. For the in-place form g is
//     nameable before L (as in 3), shares no memory with L's operands or the
//     copy, and no op between L and R touches it (the add now happens at L's
//     place). The copy's column sums become L's 5th output (i[4] = a; i[3]
//     = 0 when L had no accumulate_wb): a new result, or for the in-place
//     form g as a 5th destination (every output before it a destination
//     too: L's remaining results go to new mega.empty buffers before L, read
//     in their place). R goes: the copy is no longer read again just to sum
//     its columns.
//  6. (the residual gradient in bf16, megac --bf16-residual-grad) L's dx
//     may be bf16 (mega-fold-casts let the norm round it), and in 1 r may
//     be bf16 when E stores the sum in bf16 alone: then L' accumulates into
//     r's bf16 bytes (the old value widened, the f32 sum rounded, E's
//     bits) and has no copy (4th) output, dx being its own copy; in 5 the
//     ReduceSum of a bf16 dx (L's first destination or result) after L
//     becomes the 4th output, with the same attributes (one before L reads
//     the destination's old value and stays).
// The kernel computes the values these kernels computed, in their order
// (the CPU's bits are the unfused plan's: `megac --fuse-norm-grad=false`).
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"
#include "mega/Plan/Plan.h"
#include "mega/Target/Plan/Placement.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGAFUSENORMGRAD
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

bool isF32(Value v, int64_t n) {
  auto t = tensorType(v);
  return t.getElementType().isF32() && t.getNumElements() == n;
}

bool isBf16(Value v, int64_t n) {
  auto t = tensorType(v);
  return t.getElementType().isBF16() && t.getNumElements() == n;
}

/// True when the Elementwise program `i` over n elements reads both of its
/// two inputs whole (period n), adds them once, and stores only that sum,
/// once to each of its `nout` outputs: in0 + in1 in either order, nothing
/// else. (Add's operands may come in either order: f32 addition is
/// commutative, so the bits are the same.)
bool isOneAdd(ArrayRef<int64_t> i, int64_t n, int64_t nout) {
  if (i.size() < 5 || i[0] != n || i[1] != 2 || i[2] != nout || i[3] != n ||
      i[4] != n)
    return false;
  SmallVector<EwExpr> exprs;
  SmallVector<int64_t> outs;
  SmallVector<bool> read;
  if (!evaluateEw(i, exprs, outs, read) || !read[0] || !read[1])
    return false;
  // Loads and exactly one Add of input 0 and input 1, stored everywhere.
  int64_t sum = -1;
  for (auto [k, e] : llvm::enumerate(exprs)) {
    if (e.kind == EwExpr::Input)
      continue;
    if (e.kind != EwExpr::Add || sum >= 0)
      return false;
    const EwExpr &x = exprs[e.a], &y = exprs[e.b];
    if (x.kind != EwExpr::Input || y.kind != EwExpr::Input || x.a == y.a)
      return false;
    sum = int64_t(k);
  }
  return sum >= 0 && llvm::all_of(outs, [&](int64_t o) { return o == sum; });
}

struct MegaFuseNormGrad : mega::impl::MegaFuseNormGradBase<MegaFuseNormGrad> {
  using MegaFuseNormGradBase::MegaFuseNormGradBase;

  void runOnOperation() override {
    if (!enable)
      return;
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.getBody().empty() || !func.getBody().hasOneBlock())
        continue;
      SmallVector<KernelOp> norms;
      func.walk([&](KernelOp k) {
        if (isKernelOp(k, "LayerNormGrad"))
          norms.push_back(k);
      });
      for (KernelOp l : norms)
        tryFuse(l);
      norms.clear();
      func.walk([&](KernelOp k) {
        if (isKernelOp(k, "LayerNormGrad"))
          norms.push_back(k);
      });
      for (KernelOp l : norms)
        fuseCopySum(l);
    }
  }

  /// A value naming what `acc` names, usable before L: `acc` itself, or a
  /// clone of its persistent tensor reference (recorded in `refs`) before L.
  static Value nameBefore(OpBuilder &b, KernelOp l, Value acc,
                          SmallVectorImpl<Operation *> &refs) {
    Operation *def = acc.getDefiningOp();
    if (!def || def->getBlock() != l->getBlock() || def->isBeforeInBlock(l))
      return acc;
    refs.push_back(def);
    return b.clone(*def)->getResult(0);
  }

  /// True when `acc` can be named before L and nothing from L up to `upTo`
  /// (not included) reads or writes its bytes, nor is it L's operand.
  static bool movableAcc(KernelOp l, Operation *upTo, Value acc) {
    if (Operation *def = acc.getDefiningOp())
      if (def->getBlock() == l->getBlock() && !def->isBeforeInBlock(l) &&
          !isa<StateOp, ParamOp>(def))
        return false;
    for (Value v : l->getOperands())
      if (mayShareMemory(acc, v))
        return false;
    for (Operation *op : between(l, upTo))
      for (Value v : op->getOperands())
        if (mayShareMemory(acc, v))
          return false;
    return true;
  }

  /// Step 5: the ReduceSum of L's copy, or null; `into` is its in-place form.
  KernelOp copySum(KernelOp l, Value copy, int64_t rows, int64_t cols,
                   bool &into) {
    for (Operation *user : copy.getUsers()) {
      auto rs = dyn_cast<KernelOp>(user);
      // After L: a bf16 dx is L's destination, whose old value a ReduceSum
      // before L reads (the copy of an f32 dx is L's result: after it).
      if (!rs || !isKernelOp(rs, "ReduceSum") ||
          rs->getBlock() != l->getBlock() || rs->getOperand(0) != copy ||
          !l->isBeforeInBlock(rs))
        continue;
      ArrayRef<int64_t> ri = rs.getI();
      if (ri.size() != 3 || ri[0] != rows || ri[1] != cols ||
          (ri[2] != 0 && ri[2] != 1))
        continue;
      auto dests = rs->getAttrOfType<IntegerAttr>(kDestsAttr);
      into = dests != nullptr;
      if (into
              ? dests.getInt() != 1 || ri[2] != 1 ||
                    rs->getNumOperands() != 2 || rs->getNumResults() != 0 ||
                    rs->getOperand(1) == copy || !isF32(rs->getOperand(1), cols)
              : ri[2] != 0 || rs->getNumOperands() != 1 ||
                    rs->getNumResults() != 1 || !isF32(rs->getResult(0), cols))
        continue;
      if (llvm::any_of(between(l, rs),
                       [&](Operation *op) { return writesInto(op, rs); }))
        continue;
      if (into && (mayShareMemory(rs->getOperand(1), copy) ||
                   !movableAcc(l, rs, rs->getOperand(1))))
        continue;
      return rs;
    }
    return {};
  }

  void fuseCopySum(KernelOp l) {
    ArrayRef<int64_t> li = l.getI();
    auto dattr = l->getAttrOfType<IntegerAttr>(kDestsAttr);
    const int64_t nd = dattr ? dattr.getInt() : 0;
    const int64_t nres = l->getNumResults();
    if (nd < 0 || nd + nres < 3 || nd + nres > 4 ||
        int64_t(l->getNumOperands()) != 5 + nd ||
        (li.size() != 3 && li.size() != 4))
      return;
    const int64_t rows = li[0], cols = li[1];
    // The copy: the 4th output, or a bf16 dx itself (its first output: a
    // destination or a result).
    Value dx = nd > 0 ? l->getOperand(5) : l->getResult(0);
    const bool dxBf16 = isBf16(dx, rows * cols);
    if (dxBf16 != (nd + nres == 3))
      return;
    Value copy = dxBf16 ? dx : l->getResult(nres - 1);
    if (!isBf16(copy, rows * cols))
      return;
    bool into = false;
    KernelOp rs = copySum(l, copy, rows, cols, into);
    if (!rs)
      return;
    OpBuilder b(l);
    Location loc = l.getLoc();
    SmallVector<Value> operands(l->getOperands());
    SmallVector<Value> now(l->getResults()); // what reads L's results reads
    SmallVector<Type> types;
    SmallVector<Operation *> refs;
    if (into) {
      for (int64_t k = 0; k < nres; ++k) {
        now[k] = b.create<EmptyOp>(loc, l->getResult(k).getType());
        operands.push_back(now[k]);
      }
      operands.push_back(nameBefore(b, l, rs->getOperand(1), refs));
    } else {
      for (Value v : l->getResults())
        types.push_back(v.getType());
      types.push_back(rs->getResult(0).getType());
    }
    SmallVector<int64_t> i(li);
    if (i.size() == 3)
      i.push_back(0); // accumulate_wb
    i.push_back(rs.getI()[2]);
    auto fused = b.create<KernelOp>(loc, types, l.getKernelAttr(), operands,
                                    b.getDenseI64ArrayAttr(i), l.getFAttr());
    for (NamedAttribute a : l->getDiscardableAttrs())
      fused->setAttr(a.getName(), a.getValue());
    if (into)
      fused->setAttr(kDestsAttr, b.getI64IntegerAttr(nd + nres + 1));
    else
      for (int64_t k = 0; k < nres; ++k)
        now[k] = fused->getResult(k);
    for (int64_t k = 0; k < nres; ++k)
      l->getResult(k).replaceAllUsesWith(now[k]);
    if (!into)
      rs->getResult(0).replaceAllUsesWith(fused->getResult(nres));
    rs->erase();
    for (Operation *ref : refs)
      if (ref->use_empty())
        ref->erase();
    l->erase();
  }

  /// Ops strictly after `from` up to (not including) `to`, or to the end of
  /// the block when `to` is null.
  static SmallVector<Operation *> between(Operation *from, Operation *to) {
    SmallVector<Operation *> ops;
    for (Operation *op = from->getNextNode(); op && op != to;
         op = op->getNextNode())
      ops.push_back(op);
    return ops;
  }

  /// Step 1: E and r, or nulls.
  std::pair<KernelOp, Value> residualAdd(KernelOp l, int64_t n,
                                         const Placement &place) {
    Value dx = l->getResult(0);
    if (!dx.hasOneUse())
      return {};
    auto e = dyn_cast<KernelOp>(*dx.getUsers().begin());
    if (!e || !isKernelOp(e, "Elementwise") || e->hasAttr(kDestsAttr) ||
        e->getBlock() != l->getBlock() || e->getNumOperands() != 2 ||
        !isOneAdd(e.getI(), n, e->getNumResults()))
      return {};
    Value r = e->getOperand(0) == dx ? e->getOperand(1) : e->getOperand(0);
    if (r == dx || !isF32(dx, n) || !(isF32(r, n) || isBf16(r, n)))
      return {};
    // E's outputs: the f32 sum, and maybe its bf16 copy; or, with a bf16 r
    // (the residual gradient kept in bf16), the sum in bf16 alone.
    const unsigned nout = e->getNumResults();
    if (isBf16(r, n) ? nout != 1 || !isBf16(e->getResult(0), n)
        : nout == 1
            ? !isF32(e->getResult(0), n)
            : nout != 2 ||
                  !((isF32(e->getResult(0), n) && isBf16(e->getResult(1), n)) ||
                    (isBf16(e->getResult(0), n) && isF32(e->getResult(1), n))))
      return {};
    // r: its own root, in the arena, defined before L.
    Operation *def = r.getDefiningOp();
    if (!def || !isa<KernelOp, EmptyOp>(def) ||
        def->getBlock() != l->getBlock() || !def->isBeforeInBlock(l) ||
        place.rootOf(r).first != r)
      return {};
    // No output port over r or the sum (through views): their bytes would
    // be the port's.
    Value sum = nout == 1 || isF32(e->getResult(0), n) ? e->getResult(0)
                                                       : e->getResult(1);
    if (place.rootOf(sum).first != sum)
      return {};
    for (auto out : l->getBlock()->getOps<OutputOp>()) {
      Value root = place.rootOf(out.getValue()).first;
      if (root == r || root == sum)
        return {};
    }
    auto touchesR = [&](Operation *op) {
      return llvm::any_of(op->getOperands(),
                          [&](Value v) { return place.rootOf(v).first == r; });
    };
    if (llvm::any_of(l->getOperands(),
                     [&](Value v) { return place.rootOf(v).first == r; }))
      return {};
    for (Operation *op : between(l, nullptr))
      if (op != e.getOperation() && touchesR(op))
        return {};
    for (Operation *op : between(l, e))
      if (writesInto(op, e))
        return {};
    return {e, r};
  }

  /// Step 2: the Cast of dx to bf16, or null.
  KernelOp castOfDx(KernelOp l, int64_t n) {
    Value dx = l->getResult(0);
    if (!isF32(dx, n))
      return {};
    for (Operation *user : dx.getUsers()) {
      auto c = dyn_cast<KernelOp>(user);
      if (!c || !isKernelOp(c, "Cast") || c->hasAttr(kDestsAttr) ||
          c->getBlock() != l->getBlock() || c->getNumOperands() != 1 ||
          c->getNumResults() != 1 || c.getI().size() != 1 || c.getI()[0] != n ||
          !isBf16(c->getResult(0), n))
        continue;
      if (llvm::any_of(between(l, c),
                       [&](Operation *op) { return writesInto(op, c); }))
        continue;
      return c;
    }
    return {};
  }

  /// Step 3 for one of dw, db: the in-place add G and its g, or nulls.
  std::pair<KernelOp, Value> gradAdd(KernelOp l, Value d, int64_t cols) {
    if (!d.hasOneUse())
      return {};
    auto g = dyn_cast<KernelOp>(*d.getUsers().begin());
    auto dests = g ? g->getAttrOfType<IntegerAttr>(kDestsAttr) : nullptr;
    if (!g || !isKernelOp(g, "Elementwise") || !dests || dests.getInt() != 1 ||
        g->getNumOperands() != 3 || g->getNumResults() != 0 ||
        g->getBlock() != l->getBlock() || !isOneAdd(g.getI(), cols, 1))
      return {};
    Value acc = g->getOperand(2);
    Value other = g->getOperand(0) == acc ? g->getOperand(1) : g->getOperand(0);
    if (other != d || (g->getOperand(0) != acc && g->getOperand(1) != acc) ||
        !isF32(acc, cols))
      return {};
    // L' names g before L: a value defined there, or a persistent tensor's
    // reference (mega.state, mega.param) that can be named there again.
    if (Operation *def = acc.getDefiningOp())
      if (def->getBlock() == l->getBlock() && !def->isBeforeInBlock(l) &&
          !isa<StateOp, ParamOp>(def))
        return {};
    for (Value v : l->getOperands())
      if (mayShareMemory(acc, v))
        return {};
    for (Operation *op : between(l, g))
      for (Value v : op->getOperands())
        if (mayShareMemory(acc, v))
          return {};
    return {g, acc};
  }

  void tryFuse(KernelOp l) {
    ArrayRef<int64_t> li = l.getI();
    if (l->hasAttr(kDestsAttr) || l->getNumOperands() != 5 ||
        l->getNumResults() != 3 || li.size() != 3 || li[2] != 0)
      return;
    const int64_t rows = li[0], cols = li[1], n = rows * cols;
    if (!(isF32(l->getResult(0), n) || isBf16(l->getResult(0), n)) ||
        !isF32(l->getResult(1), cols) || !isF32(l->getResult(2), cols))
      return;
    Placement place;
    if (place.build(*l->getBlock()))
      return;
    auto [e, r] = residualAdd(l, n, place);
    KernelOp cast = e ? KernelOp() : castOfDx(l, n);
    auto [gw, accW] = gradAdd(l, l->getResult(1), cols);
    auto [gb, accB] = gradAdd(l, l->getResult(2), cols);
    bool wb = gw && gb && !mayShareMemory(accW, accB);
    if (wb && r && (mayShareMemory(accW, r) || mayShareMemory(accB, r)))
      wb = false;
    if (!e && !cast && !wb)
      return;

    // Step 4.
    OpBuilder b(l);
    Location loc = l.getLoc();
    Value copy; // E's or the Cast's bf16 result
    Value sum;  // E's f32 result
    if (e && e->getNumResults() == 1) {
      sum = e->getResult(0); // f32, or bf16 with a bf16 r
    } else if (e) {
      const bool f32First = isF32(e->getResult(0), n);
      sum = e->getResult(f32First ? 0 : 1);
      copy = e->getResult(f32First ? 1 : 0);
    } else if (cast) {
      copy = cast->getResult(0);
    }
    SmallVector<Value> dests;
    Value dxInto = r;
    SmallVector<Operation *> refs; // g's references after L, named anew
    auto nameBefore = [&](Value acc) -> Value {
      Operation *def = acc.getDefiningOp();
      if (!def || def->getBlock() != l->getBlock() || def->isBeforeInBlock(l))
        return acc;
      refs.push_back(def);
      return b.clone(*def)->getResult(0);
    };
    if (wb) {
      if (!dxInto)
        dxInto = b.create<EmptyOp>(loc, l->getResult(0).getType());
      dests = {dxInto, nameBefore(accW), nameBefore(accB)};
    } else if (e) {
      dests = {r};
    }
    SmallVector<Type> types;
    for (unsigned k = dests.size(); k < 3; ++k)
      types.push_back(l->getResult(k).getType());
    if (copy)
      types.push_back(copy.getType());
    SmallVector<Value> operands(l->getOperands());
    llvm::append_range(operands, dests);
    SmallVector<int64_t> i = {rows, cols, e ? 1 : 0};
    if (wb)
      i.push_back(1);
    auto fused = b.create<KernelOp>(loc, types, l.getKernelAttr(), operands,
                                    b.getDenseI64ArrayAttr(i), l.getFAttr());
    for (NamedAttribute a : l->getDiscardableAttrs())
      fused->setAttr(a.getName(), a.getValue());
    if (!dests.empty())
      fused->setAttr(kDestsAttr, b.getI64IntegerAttr(int64_t(dests.size())));
    // L's results that stay results come first, then the copy.
    const unsigned kept = 3 - dests.size();
    for (unsigned k = 0; k < kept; ++k)
      l->getResult(dests.size() + k).replaceAllUsesWith(fused->getResult(k));
    if (copy)
      copy.replaceAllUsesWith(fused->getResult(kept));
    if (e) {
      sum.replaceAllUsesWith(r);
      e->erase();
    } else if (wb) {
      l->getResult(0).replaceAllUsesWith(dxInto);
    }
    if (cast)
      cast->erase();
    if (wb) {
      gw->erase();
      gb->erase();
      for (Operation *ref : refs)
        if (ref->use_empty())
          ref->erase();
    }
    l->erase();
  }
};

} // namespace

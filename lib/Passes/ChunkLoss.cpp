//===- ChunkLoss.cpp - The output layer a row block at a time --------------===//
//
// `mega-chunk-loss`, at kernel level (after mega-fuse-loss, before
// mega-assign-buffers). A language model's logits [rows, V] are its step's
// largest buffer (GPT-2 small, bf16, micro-batch 16: 1.65 GB) and live only
// from the output layer's product to the two products that read their
// gradient. Computed a row block at a time, the arena holds one block's
// logits instead of all of them; the products stay large (a block still
// has thousands of rows).
//
// Algorithm, per CrossEntropyWithGrad kernel K with {rows, V} (no
// mega.dests), when its logits are over `max-logits-mib`:
//  1. K's logits are the only result of a MatMul L used by K alone: batch
//     1, A not transposed and contiguous (lda = L's K), C contiguous (ldc =
//     V), beta 0, no epilogue or a bias (row-wise); no mega.dests.
//  2. Every reader of K's dlogits (through offset-0 views of all of it) is
//     a MatMul U of batch 1, without epilogue or mega.dests' other uses,
//     reading dlogits as A (lda = V) and nothing else of K's:
//     (a) transA 0, M = rows, beta 0, no mega.dests, ldc = N: its rows are
//         dlogits' rows (the product into the layer's input gradient);
//     (b) transA 1, M = V, K = rows, B not transposed and contiguous (ldb =
//         N): the sum over rows (the weight gradient), into a fresh result
//         (beta 0) or, accumulating, into its mega.dests operand.
//  3. Between L and the last U (P) there is nothing but K, the Us, views,
//     mega.output, mega.state and mega.param (no kernel): moving those
//     kernels to P changes nothing another kernel reads or writes, and no
//     U writes what L, K or another U reads.
//  4. n = the smallest divisor of rows with rows/n rows of logits within
//     the limit. At P, for block c (r = rows/n rows, element offset c*r
//     times the row length): L over the block's rows of A; K with {r, V,
//     rows, c > 0}, writing the loss (adding its share after the first
//     block) and its lse rows into mega.empty buffers (mega.dests); each
//     (a) U writes its rows into a mega.empty of its result; each (b) U
//     adds the block's sum (beta 1 after the first block; the first keeps
//     U's beta, into U's destination or a mega.empty). The old results'
//     users read the buffers; mega.output and views between L and P that
//     read them move after the blocks.
//
// What changes: the lse rows, dlogits and (a) rows are computed as before
// (the same bits on the CPU); the loss sums the blocks' shares in float,
// and (b) adds n partial products (rounding differs by ulps).
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGACHUNKLOSS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

using namespace mega::mm;

bool isMatMul(Operation *op) {
  auto k = dyn_cast_or_null<KernelOp>(op);
  return k && k.getKernel() == "MatMul";
}
int64_t epilogue(KernelOp k) {
  return k.getI().size() > kEpilogue ? k.getI()[kEpilogue] : 0;
}

/// `n` elements of `src` (seen as [n / cols, cols] when cols > 0, else
/// flat) from element `elems` on.
Value rowsView(OpBuilder &b, Location loc, Value src, int64_t elems,
               int64_t rows, int64_t cols) {
  SmallVector<int64_t> shape{rows};
  if (cols > 0)
    shape.push_back(cols);
  auto type = RankedTensorType::get(shape, tensorOf(src).getElementType());
  return b.create<ViewOp>(loc, type, src,
                          b.getI64IntegerAttr(elems * elemBytes(src)));
}

struct Reader {
  KernelOp mm;
  bool rowBlocks; ///< (a); else (b)
};

struct MegaChunkLoss : mega::impl::MegaChunkLossBase<MegaChunkLoss> {
  using MegaChunkLossBase::MegaChunkLossBase;

  void runOnOperation() override {
    if (maxLogitsMib <= 0)
      return;
    SmallVector<KernelOp> losses;
    getOperation().walk([&](KernelOp k) {
      if (k.getKernel() == "CrossEntropyWithGrad" && !k->hasAttr(kDestsAttr) &&
          k.getI().size() == 2)
        losses.push_back(k);
    });
    for (KernelOp k : losses)
      tryChunk(k);
  }

  /// Step 2's readers of `v` (dlogits, or an offset-0 view of all of it);
  /// false on any other reader.
  bool collectReaders(Value v, int64_t rows, int64_t V,
                      SmallVectorImpl<Reader> &readers,
                      SmallVectorImpl<Operation *> &views) {
    for (OpOperand &use : v.getUses()) {
      Operation *user = use.getOwner();
      if (auto view = dyn_cast<ViewOp>(user)) {
        if (view.getOffset() != 0 ||
            tensorOf(view.getResult()).getNumElements() * elemBytes(view) !=
                tensorOf(v).getNumElements() * elemBytes(v))
          return false;
        views.push_back(view);
        if (!collectReaders(view.getResult(), rows, V, readers, views))
          return false;
        continue;
      }
      if (!isMatMul(user) || use.getOperandNumber() != 0)
        return false;
      auto u = cast<KernelOp>(user);
      ArrayRef<int64_t> i = u.getI();
      ArrayRef<float> f = u.getF();
      if (i.size() < 12 || i[kBatch] != 1 || epilogue(u) != 0 ||
          f.size() != 2 || i[kLda] != V || u->getNumOperands() < 2)
        return false;
      auto d = u->getAttrOfType<IntegerAttr>(kDestsAttr);
      const int64_t dests = d ? d.getInt() : 0;
      if (i[kTransA] == 0) { // (a)
        if (i[kM] != rows || i[kK] != V || f[1] != 0.0f || dests != 0 ||
            u->getNumOperands() != 2 || u->getNumResults() != 1 ||
            i[kLdc] != i[kN])
          return false;
        readers.push_back({u, true});
      } else { // (b)
        if (i[kM] != V || i[kK] != rows || i[kTransB] != 0 ||
            i[kLdb] != i[kN] || u->getNumOperands() != 2 + dests ||
            u->getNumResults() != (dests ? 0u : 1u) || dests > 1 ||
            (!dests && f[1] != 0.0f) ||
            tensorOf(u->getOperand(1)).getNumElements() != rows * i[kN])
          return false;
        readers.push_back({u, false});
      }
    }
    return true;
  }

  void tryChunk(KernelOp k) {
    const int64_t rows = k.getI()[0], V = k.getI()[1];
    Value logits = k->getOperand(0);
    const int64_t bytes = tensorOf(logits).getNumElements() * elemBytes(logits);
    const int64_t limit =
        std::max<int64_t>(1, int64_t(maxLogitsMib * double(1 << 20)));
    if (rows < 2 || bytes <= limit)
      return;
    // Step 1.
    auto l = logits.getDefiningOp<KernelOp>();
    if (!isMatMul(l) || !logits.hasOneUse() || l->hasAttr(kDestsAttr) ||
        l->getNumResults() != 1 || l->getBlock() != k->getBlock())
      return;
    ArrayRef<int64_t> li = l.getI();
    if (li.size() < 12 || li[kBatch] != 1 || li[kM] != rows || li[kN] != V ||
        li[kTransA] != 0 || li[kLda] != li[kK] || li[kLdc] != V ||
        l.getF().size() != 2 || l.getF()[1] != 0.0f ||
        (epilogue(l) != 0 && epilogue(l) != 1) ||
        tensorOf(l->getOperand(0)).getNumElements() != rows * li[kK])
      return;
    // Step 2.
    SmallVector<Reader> readers;
    SmallVector<Operation *> dlogitViews;
    if (!collectReaders(k->getResult(2), rows, V, readers, dlogitViews) ||
        readers.empty())
      return;
    for (const Reader &u : readers)
      if (u.mm->getBlock() != k->getBlock() || u.mm->isBeforeInBlock(k))
        return;
    // Step 3.
    Operation *last = k;
    for (const Reader &u : readers)
      if (last->isBeforeInBlock(u.mm))
        last = u.mm;
    SmallVector<Operation *> kernels{l, k};
    for (const Reader &u : readers)
      kernels.push_back(u.mm);
    for (Operation *op = l->getNextNode(); op != last; op = op->getNextNode())
      if (!llvm::is_contained(kernels, op) &&
          !isa<ViewOp, OutputOp, StateOp, ParamOp>(op))
        return;
    for (Reader u : readers)
      for (Operation *reader : kernels)
        if (reader != u.mm.getOperation() && writesInto(u.mm, reader))
          return;
    // Step 4.
    int64_t n = (bytes + limit - 1) / limit;
    while (rows % n != 0)
      ++n;
    if (n > rows)
      return;
    const int64_t r = rows / n;

    OpBuilder b(last);
    b.setInsertionPointAfter(last);
    Location loc = k.getLoc();
    Value loss = b.create<EmptyOp>(loc, tensorOf(k->getResult(0)));
    Value lse = b.create<EmptyOp>(loc, tensorOf(k->getResult(1)));
    SmallVector<Value> outs; // per reader: its buffer
    for (const Reader &u : readers)
      outs.push_back(u.mm->getNumResults()
                         ? b.create<EmptyOp>(loc, tensorOf(u.mm->getResult(0)))
                               .getResult()
                         : u.mm->getOperands().back());
    Value a = l->getOperand(0), targets = k->getOperand(1),
          dloss = k->getOperand(2);
    const int64_t kDim = li[kK];
    for (int64_t c = 0; c < n; ++c) {
      // The block's logits.
      SmallVector<Value> lOps{rowsView(b, loc, a, c * r * kDim, r, kDim)};
      for (Value v : l->getOperands().drop_front())
        lOps.push_back(v);
      SmallVector<int64_t> i(li);
      i[kM] = r;
      auto lt = RankedTensorType::get({r, V}, tensorOf(logits).getElementType());
      Value blockLogits =
          b.create<KernelOp>(loc, TypeRange{lt}, l.getKernelAttr(), lOps,
                             b.getDenseI64ArrayAttr(i), l.getFAttr())
              ->getResult(0);
      // Its loss share, lse rows and dlogits.
      auto dt = RankedTensorType::get(
          {r, V}, tensorOf(k->getResult(2)).getElementType());
      auto ce = b.create<KernelOp>(
          loc, TypeRange{dt}, k.getKernelAttr(),
          ValueRange{blockLogits, rowsView(b, loc, targets, c * r, r, 0), dloss,
                     loss, rowsView(b, loc, lse, c * r, r, 0)},
          b.getDenseI64ArrayAttr({r, V, rows, c > 0}), k.getFAttr());
      ce->setAttr(kDestsAttr, b.getI64IntegerAttr(2));
      Value dlogits = ce->getResult(0);
      // The readers' share.
      for (auto [u, out] : llvm::zip(readers, outs)) {
        ArrayRef<int64_t> ui = u.mm.getI();
        SmallVector<int64_t> j(ui);
        SmallVector<float> f(u.mm.getF());
        SmallVector<Value> ops{dlogits};
        if (u.rowBlocks) {
          const int64_t N = ui[kN];
          j[kM] = r;
          ops.push_back(u.mm->getOperand(1));
          ops.push_back(rowsView(b, loc, out, c * r * N, r, N));
        } else {
          const int64_t N = ui[kN];
          j[kK] = r;
          if (c > 0)
            f[1] = 1.0f;
          ops.push_back(rowsView(b, loc, u.mm->getOperand(1), c * r * N, r, N));
          ops.push_back(out);
        }
        auto m = b.create<KernelOp>(loc, TypeRange{}, u.mm.getKernelAttr(), ops,
                                    b.getDenseI64ArrayAttr(j),
                                    b.getDenseF32ArrayAttr(f));
        m->setAttr(kDestsAttr, b.getI64IntegerAttr(1));
      }
    }
    Operation *end = b.getInsertionPoint() == b.getBlock()->end()
                         ? nullptr
                         : &*b.getInsertionPoint();
    // The old results' users read the buffers; those between L and P move
    // after the blocks (views first: users after what they use).
    k->getResult(0).replaceAllUsesWith(loss);
    k->getResult(1).replaceAllUsesWith(lse);
    for (auto [u, out] : llvm::zip(readers, outs))
      if (u.mm->getNumResults())
        u.mm->getResult(0).replaceAllUsesWith(out);
    SmallVector<Operation *> moved;
    for (Operation *op = l->getNextNode(); op != last; op = op->getNextNode())
      if (isa<ViewOp, OutputOp>(op) && !llvm::is_contained(dlogitViews, op))
        moved.push_back(op);
    for (Operation *op : moved) {
      bool reads = false;
      for (Value v : op->getOperands())
        reads |= v == loss || v == lse || llvm::is_contained(outs, v) ||
                 llvm::any_of(moved, [&](Operation *m) {
                   return m != op && v.getDefiningOp() == m;
                 });
      if (!reads)
        continue;
      if (end)
        op->moveBefore(end);
      else
        op->moveBefore(b.getBlock(), b.getBlock()->end());
    }
    for (const Reader &u : readers)
      u.mm->erase();
    for (Operation *view : llvm::reverse(dlogitViews))
      view->erase();
    k->erase();
    l->erase();
  }
};

} // namespace

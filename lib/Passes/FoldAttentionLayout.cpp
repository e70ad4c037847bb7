//===- FoldAttentionLayout.cpp - Attention reads the projection layout ----===//
//
// `mega-fold-attention-layout`, at kernel level (after mega-fuse-epilogues,
// before mega-fold-casts). mega-lower-to-kernels gives Attention and
// AttentionGrad contiguous [B, H, S, hd] operands, so every layer moves its
// heads three times around attention: the fused projection's [B, S, 3, H,
// hd] output is transposed to q|k|v [3, B, H, S, hd], o [B, H, S, hd] back
// to [B, S, H, hd] for the output projection, and the gradient dout from
// [B, S, H, hd] to [B, H, S, hd]. The kernels can read and write those
// layouts directly (the strided form of opcodes 29 and 30,
// docs/plan-format.md); this pass removes the Transposes.
//
// Algorithm, per function:
//  1. q|k|v. A Transpose whose every user (through mega.view) is a q, k or
//     v operand of Attention / AttentionGrad, whose result is [3, B, H, S,
//     hd] of its input's elements with the head dim contiguous, and each
//     operand slice j of that result: the operands become views of the
//     Transpose's input at element offset j * (input step of the leading
//     dim), with the q|k|v strides the input steps of B, H and S. When the
//     Transpose also rounded (f32 -> bf16), a Cast of its input (same
//     layout) takes its place, which mega-fold-casts can then fold into the
//     input's producer.
//  2. o. An Attention whose o (through views) feeds one Transpose [B, H, S,
//     hd] -> [B, S, H, hd] and otherwise only Casts whose users are
//     AttentionGrad o operands: the Attention writes o as [B, S, H, hd]
//     (strides (S*H*hd, hd, H*hd)), the Transpose's users read o (or a Cast
//     of it when the Transpose rounded), and those AttentionGrads read their
//     o with the same strides.
//  3. dout, and o read back. An AttentionGrad whose dout is (through
//     views) a Transpose [B, S, H, hd] -> [B, H, S, hd] used nowhere else
//     reads the Transpose's input (or a Cast of it) with strides (S*H*hd,
//     hd, H*hd). So does one whose o is such a Transpose (a pipeline's
//     backward, handed o in rows for the output projection: mega-port-
//     sources).
//  4. dq|dk|dv. An AttentionGrad whose dq, dk, dv (through views) are only
//     the parts, in that order, of a mega.concat [3, B, H, S, hd] that only
//     a Transpose to [B, S, 3, H, hd] reads (the q|k|v gradient's join for
//     the projection's backward) writes them straight into that layout: a
//     mega.empty [B, S, 3, H, hd] placed before it, its dq, dk, dv as views
//     at element offsets 0, H*hd, 2*H*hd passed as mega.dests, with strides
//     (S*3*H*hd, hd, 3*H*hd). The Transpose's users read the buffer (or a
//     Cast of it when the Transpose rounded); the Transpose and the concat
//     go.
// A Transpose that still has other users stays and nothing about it folds.
// The kernels' contiguous form stays the default: an attention kernel
// untouched by the pass keeps its 4 integer attributes.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallPtrSet.h"

#include <array>
#include <optional>

namespace mega {
#define GEN_PASS_DEF_MEGAFOLDATTENTIONLAYOUT
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

using Strides = std::array<int64_t, 3>; // (sB, sH, sS)

/// The operand groups of the strided form (docs/plan-format.md).
enum Group { kQkv = 0, kO = 1, kDout = 2, kGrads = 3 };

bool isAttention(Operation *op) {
  auto k = dyn_cast<KernelOp>(op);
  return k &&
         (k.getKernel() == "Attention" || k.getKernel() == "AttentionGrad");
}

/// An attention kernel's heads and per-group strides, read from and written
/// back to its integer attributes. A group never set stays contiguous.
struct Layout {
  int64_t bh, seq, hd;
  int64_t heads = 0; ///< 0: the contiguous form (no heads given)
  std::array<std::optional<Strides>, 4> groups;

  explicit Layout(KernelOp k) {
    ArrayRef<int64_t> i = k.getI();
    bh = i[0];
    seq = i[1];
    hd = i[2];
    if (i.size() <= 4)
      return;
    heads = i[4];
    size_t at = 5;
    for (int g = 0; g < 4; ++g) {
      if (!grad(k) && g >= kDout)
        break;
      groups[g] = Strides{i[at], i[at + 1], i[at + 2]};
      at += 3;
    }
  }
  static bool grad(KernelOp k) { return k.getKernel() == "AttentionGrad"; }

  /// False when `h` disagrees with heads already given.
  bool setHeads(int64_t h) {
    if (h <= 0 || bh % h != 0 || (heads && heads != h))
      return false;
    heads = h;
    return true;
  }

  void write(KernelOp k) const {
    SmallVector<int64_t> i(k.getI().take_front(4));
    i.push_back(heads);
    const Strides contiguous = {heads * seq * hd, seq * hd, hd};
    for (int g = 0; g < (grad(k) ? 4 : 2); ++g) {
      const Strides s = groups[g].value_or(contiguous);
      i.append(s.begin(), s.end());
    }
    k.setIAttr(DenseI64ArrayAttr::get(k.getContext(), i));
  }
};

/// The input element step of each dim of a Transpose's result type (0 for
/// size-1 dims), from its i = {rank, d_0.., p_0..} on simplified dims;
/// nullopt when the result dims do not split the simplified ones.
std::optional<SmallVector<int64_t>> resultSteps(KernelOp t) {
  ArrayRef<int64_t> i = t.getI();
  if (i.empty() || int64_t(i.size()) != 1 + 2 * i[0])
    return std::nullopt;
  const int64_t r = i[0];
  SmallVector<int64_t> instride(r, 1), od(r), os(r);
  for (int64_t k = r - 2; k >= 0; --k)
    instride[k] = instride[k + 1] * i[1 + k + 1];
  for (int64_t j = 0; j < r; ++j) {
    const int64_t p = i[1 + r + j];
    if (p < 0 || p >= r)
      return std::nullopt;
    od[j] = i[1 + p];
    os[j] = instride[p];
  }
  ArrayRef<int64_t> shape = tensorOf(t->getResult(0)).getShape();
  SmallVector<int64_t> steps(shape.size(), 0);
  int64_t j = r - 1, rem = j >= 0 ? od[j] : 1, acc = 1;
  auto skipDone = [&]() {
    while (j >= 0 && rem == 1) {
      if (--j >= 0) {
        rem = od[j];
        acc = 1;
      }
    }
  };
  for (int64_t k = int64_t(shape.size()) - 1; k >= 0; --k) {
    if (shape[k] == 1)
      continue;
    skipDone();
    if (j < 0 || shape[k] <= 0 || rem % shape[k] != 0)
      return std::nullopt;
    steps[k] = os[j] * acc;
    acc *= shape[k];
    rem /= shape[k];
  }
  skipDone();
  if (j >= 0)
    return std::nullopt;
  return steps;
}

/// A Cast kernel: it keeps the layout (element e stays element e).
bool isCast(Operation *op) {
  auto k = dyn_cast_or_null<KernelOp>(op);
  return k && k.getKernel() == "Cast" && k->getNumOperands() == 1 &&
         k->getNumResults() == 1;
}

/// Follows `v` up through views (and, with `casts`, Cast kernels: before
/// mega-fold-casts a bf16 operand is a Cast of the f32 Transpose): the root
/// value and the element offset of `v` in it (nullopt when a byte offset is
/// not a whole element).
std::pair<Value, std::optional<int64_t>> rootOf(Value v, bool casts) {
  int64_t elems = 0;
  for (;;) {
    if (auto view = v.getDefiningOp<ViewOp>()) {
      const int64_t size = elemBytes(view.getSource());
      if (view.getOffset() % size != 0)
        return {v, std::nullopt};
      elems += view.getOffset() / size;
      v = view.getSource();
    } else if (casts && isCast(v.getDefiningOp())) {
      v = v.getDefiningOp()->getOperand(0);
    } else {
      return {v, elems};
    }
  }
}

/// The users of `v` other than views (and, with `casts`, Cast kernels),
/// following those; `through` lists the views and casts passed, sources
/// before users.
void usesThrough(Value v, bool casts, SmallVectorImpl<OpOperand *> &uses,
                 SmallVectorImpl<Operation *> &through) {
  for (OpOperand &use : v.getUses()) {
    Operation *op = use.getOwner();
    if (isa<ViewOp>(op) || (casts && isCast(op))) {
      through.push_back(op);
      usesThrough(op->getResult(0), casts, uses, through);
    } else {
      uses.push_back(&use);
    }
  }
}

/// `x` itself, or a Cast of it to `to`'s element type (same shape) right
/// before `before`.
Value castTo(OpBuilder &b, Location loc, Value x, RankedTensorType to) {
  RankedTensorType xt = tensorOf(x);
  if (xt.getElementType() == to.getElementType())
    return x;
  auto type = RankedTensorType::get(xt.getShape(), to.getElementType());
  return b
      .create<KernelOp>(loc, TypeRange{type}, b.getStringAttr("Cast"),
                        ValueRange{x},
                        b.getDenseI64ArrayAttr({xt.getNumElements()}),
                        b.getDenseF32ArrayAttr({}))
      ->getResult(0);
}

/// A flat view of `src` from element `elems` on, `n` elements long.
Value flatView(OpBuilder &b, Location loc, Value src, int64_t elems,
               int64_t n) {
  RankedTensorType st = tensorOf(src);
  auto type = RankedTensorType::get({n}, st.getElementType());
  return b.create<ViewOp>(loc, type, src,
                          b.getI64IntegerAttr(elems * elemBytes(src)));
}

/// The elements a strided [BH, S, hd] operand spans.
int64_t spanOf(const Layout &l, int64_t heads, const Strides &s) {
  return (l.bh / heads - 1) * s[0] + (heads - 1) * s[1] + (l.seq - 1) * s[2] +
         l.hd;
}

/// Erases the views and casts left without users (users before sources).
void eraseDead(ArrayRef<Operation *> ops) {
  llvm::SmallPtrSet<Operation *, 8> gone;
  for (Operation *op : llvm::reverse(ops))
    if (!gone.contains(op) && op->use_empty()) {
      gone.insert(op);
      op->erase();
    }
}

struct MegaFoldAttentionLayout
    : mega::impl::MegaFoldAttentionLayoutBase<MegaFoldAttentionLayout> {
  using MegaFoldAttentionLayoutBase::MegaFoldAttentionLayoutBase;

  void runOnOperation() override {
    if (!enable)
      return;
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      SmallVector<KernelOp> transposes, attentions;
      func.walk([&](KernelOp k) {
        if (k.getKernel() == "Transpose")
          transposes.push_back(k);
        else if (isAttention(k))
          attentions.push_back(k);
      });
      for (KernelOp t : transposes)
        foldQkv(t);
      for (KernelOp a : attentions)
        if (a.getKernel() == "Attention") {
          foldO(a);
        } else {
          foldRowsRead(a, /*operand=*/5, kDout);
          foldRowsRead(a, /*operand=*/3, kO);
          foldGrads(a);
        }
    }
  }

  /// Step 1.
  void foldQkv(KernelOp t) {
    Value out = t->getResult(0);
    ArrayRef<int64_t> shape = tensorOf(out).getShape();
    if (shape.size() != 5)
      return;
    auto steps = resultSteps(t);
    if (!steps || (shape[4] > 1 && (*steps)[4] != 1))
      return;
    const int64_t B = shape[1], H = shape[2], S = shape[3], D = shape[4];
    const int64_t slice = B * H * S * D;
    SmallVector<OpOperand *> uses;
    SmallVector<Operation *> through;
    usesThrough(out, /*casts=*/true, uses, through);
    if (uses.empty())
      return;
    struct Use {
      OpOperand *operand;
      int64_t part;
    };
    SmallVector<Use> parts;
    for (OpOperand *u : uses) {
      auto k = dyn_cast<KernelOp>(u->getOwner());
      if (!k || !isAttention(k) || u->getOperandNumber() >= 3)
        return;
      auto [root, at] = rootOf(u->get(), /*casts=*/true);
      Layout l(k);
      if (root != out ||
          tensorOf(u->get()).getElementType() !=
              tensorOf(uses[0]->get()).getElementType() ||
          !at || *at % slice != 0 || *at / slice >= shape[0] || l.bh != B * H ||
          l.seq != S || l.hd != D || (l.heads && l.heads != H) ||
          tensorOf(u->get()).getNumElements() != slice)
        return;
      parts.push_back({u, *at / slice});
    }
    // q, k and v share one layout group: every kernel must read all three
    // from this Transpose (not, say, q from another one).
    llvm::DenseMap<Operation *, unsigned> seen;
    for (const Use &p : parts)
      seen[p.operand->getOwner()] |= 1u << p.operand->getOperandNumber();
    for (auto &[k, mask] : seen)
      if (mask != 7u)
        return;
    const Strides s = {(*steps)[1], (*steps)[2], (*steps)[3]};
    Value in = t->getOperand(0);
    const int64_t inElems = tensorOf(in).getNumElements();
    const int64_t lead = (*steps)[0];
    // Every part must stay inside the input (the plan check's bound).
    for (const Use &p : parts) {
      Layout l(cast<KernelOp>(p.operand->getOwner()));
      if (p.part * lead + spanOf(l, H, s) > inElems)
        return;
    }
    OpBuilder b(t);
    Value src = castTo(b, t.getLoc(), in, tensorOf(uses[0]->get()));
    for (const Use &p : parts) {
      auto k = cast<KernelOp>(p.operand->getOwner());
      Layout l(k);
      l.setHeads(H);
      l.groups[kQkv] = s;
      b.setInsertionPoint(k);
      // The source dominates k: it is defined where the Transpose was.
      p.operand->set(
          flatView(b, t.getLoc(), src, p.part * lead, spanOf(l, H, s)));
      l.write(k);
    }
    eraseDead(through);
    if (out.use_empty())
      t->erase();
  }

  /// Step 2.
  void foldO(KernelOp a) {
    Value o = a->getResult(0);
    RankedTensorType ot = tensorOf(o);
    Layout l(a);
    SmallVector<OpOperand *> uses;
    SmallVector<Operation *> views;
    usesThrough(o, /*casts=*/false, uses, views);
    KernelOp merge;
    SmallVector<KernelOp> grads;
    SmallVector<Operation *> castViews;
    for (OpOperand *u : uses) {
      auto k = dyn_cast<KernelOp>(u->getOwner());
      if (!k)
        return;
      if (k.getKernel() == "Transpose" && !merge) {
        merge = k;
        continue;
      }
      // A Cast to the AttentionGrads' dtype, and those read only its o.
      SmallVector<OpOperand *> castUses;
      if (k.getKernel() == "Cast") {
        usesThrough(k->getResult(0), /*casts=*/false, castUses, castViews);
      } else {
        castUses.push_back(u);
      }
      for (OpOperand *cu : castUses) {
        auto g = dyn_cast<KernelOp>(cu->getOwner());
        if (!g || g.getKernel() != "AttentionGrad" ||
            cu->getOperandNumber() != 3)
          return;
        grads.push_back(g);
      }
    }
    if (!merge)
      return;
    // The merge: [B, H, S, hd] -> [B, S, H, hd], read from o whole.
    auto [root, at] = rootOf(merge->getOperand(0), /*casts=*/false);
    ArrayRef<int64_t> in = tensorOf(merge->getOperand(0)).getShape();
    ArrayRef<int64_t> res = tensorOf(merge->getResult(0)).getShape();
    auto steps = resultSteps(merge);
    if (root != o || !at || *at != 0 || in.size() != 4 || res.size() != 4 ||
        !steps)
      return;
    const int64_t B = in[0], H = in[1], S = in[2], D = in[3];
    if (B * H != l.bh || S != l.seq || D != l.hd || res[0] != B ||
        res[1] != S || res[2] != H || res[3] != D)
      return;
    const int64_t want[4] = {H * S * D, D, S * D, 1};
    for (int k = 0; k < 4; ++k)
      if (res[k] > 1 && (*steps)[k] != want[k])
        return;
    const Strides s = {S * H * D, D, H * D};
    if (!l.setHeads(H))
      return;
    for (KernelOp g : grads) {
      Layout gl(g);
      if (!gl.setHeads(H))
        return;
    }
    // o becomes [B, S, H, hd] (its views keep their byte sizes).
    l.groups[kO] = s;
    l.write(a);
    o.setType(RankedTensorType::get(res, ot.getElementType()));
    for (KernelOp g : grads) {
      Layout gl(g);
      gl.setHeads(H);
      gl.groups[kO] = s;
      gl.write(g);
    }
    OpBuilder b(merge);
    Value merged = castTo(b, merge.getLoc(), o, tensorOf(merge->getResult(0)));
    merge->getResult(0).replaceAllUsesWith(merged);
    merge->erase();
    eraseDead(views);
  }

  /// Step 3: AttentionGrad `g`'s `operand` (dout or o), of `group`.
  void foldRowsRead(KernelOp g, unsigned operand, Group group) {
    Layout l(g);
    Value x = g->getOperand(operand);
    auto [root, at] = rootOf(x, /*casts=*/true);
    auto t = root.getDefiningOp<KernelOp>();
    if (!t || t.getKernel() != "Transpose" || !at || *at != 0)
      return;
    SmallVector<OpOperand *> uses;
    SmallVector<Operation *> views;
    usesThrough(root, /*casts=*/true, uses, views);
    if (uses.size() != 1 || uses[0]->getOwner() != g.getOperation())
      return;
    ArrayRef<int64_t> in = tensorOf(t->getOperand(0)).getShape();
    ArrayRef<int64_t> res = tensorOf(root).getShape();
    auto steps = resultSteps(t);
    if (in.size() != 4 || res.size() != 4 || !steps)
      return;
    const int64_t B = res[0], H = res[1], S = res[2], D = res[3];
    if (B * H != l.bh || S != l.seq || D != l.hd || in[0] != B || in[1] != S ||
        in[2] != H || in[3] != D)
      return;
    const int64_t want[4] = {S * H * D, D, H * D, 1};
    for (int k = 0; k < 4; ++k)
      if (res[k] > 1 && (*steps)[k] != want[k])
        return;
    if (!l.setHeads(H))
      return;
    l.groups[group] = Strides{S * H * D, D, H * D};
    OpBuilder b(t);
    Value src = castTo(b, t.getLoc(), t->getOperand(0), tensorOf(x));
    g->setOperand(operand, src);
    l.write(g);
    eraseDead(views);
    if (root.use_empty())
      t->erase();
  }

  /// Step 4.
  void foldGrads(KernelOp g) {
    if (g->getNumResults() != 3 || g->hasAttr(kDestsAttr))
      return;
    // Each of dq, dk, dv: one use, a view (full, as [1, B, H, S, hd]) that
    // is part j of one concat.
    ConcatOp concat;
    SmallVector<Operation *> views, joinViews;
    for (unsigned j = 0; j < 3; ++j) {
      Value r = g->getResult(j);
      if (!r.hasOneUse())
        return;
      Operation *user = *r.getUsers().begin();
      Value part = r;
      if (auto view = dyn_cast<ViewOp>(user)) {
        if (view.getOffset() != 0 || !view->hasOneUse())
          return;
        views.push_back(view);
        part = view.getResult();
        user = *part.getUsers().begin();
      }
      auto c = dyn_cast<ConcatOp>(user);
      if (!c || (concat && c != concat) || c.getInputs().size() != 3 ||
          c.getInputs()[j] != part)
        return;
      concat = c;
    }
    // The concat, seen (through whole views) as [3, B, H, S, hd], read only
    // by a Transpose to [B, S, 3, H, hd].
    if (concat.getDim() != 0)
      return;
    Value joined = concat.getResult();
    while (joined.hasOneUse()) {
      auto view = dyn_cast<ViewOp>(*joined.getUsers().begin());
      if (!view || view.getOffset() != 0 ||
          tensorOf(view.getResult()).getNumElements() * elemBytes(view) !=
              tensorOf(joined).getNumElements() * elemBytes(joined))
        break;
      joinViews.push_back(view);
      joined = view.getResult();
    }
    ArrayRef<int64_t> in = tensorOf(joined).getShape();
    if (in.size() != 5 || in[0] != 3 || !joined.hasOneUse())
      return;
    auto t = dyn_cast<KernelOp>(*joined.getUsers().begin());
    if (!t || t.getKernel() != "Transpose")
      return;
    const int64_t B = in[1], H = in[2], S = in[3], D = in[4];
    Layout l(g);
    if (B * H != l.bh || S != l.seq || D != l.hd ||
        tensorOf(g->getResult(0)).getNumElements() != B * H * S * D)
      return;
    ArrayRef<int64_t> res = tensorOf(t->getResult(0)).getShape();
    auto steps = resultSteps(t);
    if (!steps || res.size() != 5 || res[0] != B || res[1] != S ||
        res[2] != 3 || res[3] != H || res[4] != D)
      return;
    const int64_t want[5] = {H * S * D, D, B * H * S * D, S * D, 1};
    for (int k = 0; k < 5; ++k)
      if (res[k] > 1 && (*steps)[k] != want[k])
        return;
    if (!l.setHeads(H))
      return;
    l.groups[kGrads] = Strides{S * 3 * H * D, D, 3 * H * D};
    // The buffer, and the three strided outputs as its views.
    OpBuilder b(g);
    Location loc = g.getLoc();
    RankedTensorType f32Packed =
        RankedTensorType::get(res, tensorOf(g->getResult(0)).getElementType());
    Value buffer = b.create<EmptyOp>(loc, f32Packed);
    SmallVector<Value> operands(g->getOperands());
    for (int64_t j = 0; j < 3; ++j)
      operands.push_back(flatView(b, loc, buffer, j * H * D,
                                  spanOf(l, H, *l.groups[kGrads])));
    auto packed = b.create<KernelOp>(loc, TypeRange{}, g.getKernelAttr(),
                                     operands, g.getIAttr(), g.getFAttr());
    packed->setAttr(kDestsAttr, b.getI64IntegerAttr(3));
    l.write(packed);
    b.setInsertionPoint(t);
    Value out =
        castTo(b, t.getLoc(), buffer, tensorOf(t->getResult(0)));
    t->getResult(0).replaceAllUsesWith(out);
    // Users before what they use.
    t->erase();
    for (Operation *view : llvm::reverse(joinViews))
      view->erase();
    concat->erase();
    for (Operation *view : views)
      view->erase();
    g->erase();
  }
};

} // namespace

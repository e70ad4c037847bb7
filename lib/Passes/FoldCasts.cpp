//===- FoldCasts.cpp - Producers write the bf16 copy themselves -----------===//
//
// `mega-fold-casts`, at kernel level (after mega-lower-to-kernels, before
// mega-assign-buffers). mega-mixed-precision casts every tensor-core operand
// to bf16 with its own Cast kernel: a full read of the f32 value and a write
// of the copy. Where its producer can round on store (the bf16-output forms
// of docs/plan-format.md, listed in kProducers; a MatMul with an epilogue,
// or a bf16 product with beta 0; a LayerNormGrad's dx), it writes the bf16
// copy itself. Rounding
// commutes with moving elements, so a Transpose of the value into bf16 may read
// the bf16 copy instead (bf16 -> bf16, same bits).
//
// Algorithm, per Cast kernel (f32 -> bf16), last first (a Transpose's own
// cast folds before its producer's; see step 2), in rounds until no cast
// folds:
//  1. Walk from its operand up through mega.view sources to the root value.
//     Stop unless the root is f32 and a result of a mega.kernel that writes
//     it fresh (no mega.dests) and that kProducers lets round that result.
//  2. Collect the root's users transitively through views. A non-view user
//     is foldable if it is a Cast to bf16, or (norm-attention) a Transpose
//     with a bf16 output; any other is a keeper (it needs the f32 value).
//  3. No keeper: retype the root to bf16 and every view under it to bf16
//     with its byte offset halved (element offsets are unchanged); replace
//     each Cast's result by its (now bf16) operand and erase the Cast; the
//     Transposes now read bf16.
//  4. Keepers, and the root is an Elementwise result: rebuild the
//     Elementwise with one more output, bf16, stored from the register the
//     root is stored from, right after that store (so the two hold the same
//     value), within the CUDA kernel's limits (kEwMaxOutputs, kEwMaxCode).
//     The foldable users read the new output (through bf16 copies of the
//     views between; the f32 views left unused go), the keepers keep the
//     f32 one.
//  5. A root that is a mega.empty (kernels fill it through views passed as
//     mega.dests: AttentionGrad's dq|dk|dv in c_attn's layout) folds when
//     every user, through views, is a foldable Cast or a dest of a kernel
//     in kDestRounders whose dests all lie in this buffer: the buffer and
//     its views become bf16 (byte offsets halved) and those kernels round
//     on store.
//  6. After the rounds: a Cast bf16 -> f32 whose every user, through views,
//     reads it as an Elementwise input, as the pre-activation of a MatMul's
//     GELU-gradient epilogue, as the residual of its bias + residual
//     epilogue, as a LayerNorm's x or as a LayerNormGrad's dy or x goes;
//     those kernels read the bf16 source (through bf16 copies of the views)
//     and widen it on load, which is exact (mega-mixed-precision's rounded
//     values).
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"

#include <functional>

namespace mega {
#define GEN_PASS_DEF_MEGAFOLDCASTS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// A kernel that may write a result as bf16 (rounded on store).
struct Producer {
  int result;         ///< the result that may be bf16; -1: any
  bool normAttention; ///< only with the norm-attention option
  bool canAddOutput;  ///< an Elementwise: a bf16 copy as one more output
};
const llvm::StringMap<Producer> kProducers = {
    {"Elementwise", {-1, false, true}},
    {"Transpose", {0, false, false}},
    {"CrossEntropyGrad", {0, false, false}},
    {"LayerNorm", {0, true, false}},      // y; mean and rstd stay f32
    {"Attention", {0, true, false}},      // o; lse stays f32
    {"MatMul", {-1, false, false}},       // D (roundsOnStore), GELU's aux
    {"LayerNormGrad", {0, false, false}}, // dx; dw and db stay f32
};

/// Kernels that may write all their destinations (mega.dests) as bf16
/// together, rounded on store.
const llvm::StringSet<> kDestRounders = {"AttentionGrad"};

bool isBf16(Type t) {
  return cast<RankedTensorType>(t).getElementType().isBF16();
}

/// A MatMul rounds D on store with an epilogue (i[12] != 0), or without one
/// when it is a tensor-core product that overwrites one contiguous C (bf16
/// A and B, alpha != 0, beta = 0, K > 0, ldc = N, strideC = M*N when
/// batched: docs/plan-format.md), e.g. the logits a bf16 cross-entropy
/// reads. An accumulating product needs its f32 C.
bool roundsOnStore(KernelOp k) {
  if (k.getKernel() != "MatMul")
    return true;
  ArrayRef<int64_t> i = k.getI();
  if (i.size() == 13 && i[12] != 0)
    return true;
  ArrayRef<float> f = k.getF();
  return i.size() >= 12 && i[3] > 0 && i[8] == i[2] &&
         (i[0] <= 1 || i[11] == i[1] * i[2]) && f.size() == 2 &&
         f[0] != 0.0f && f[1] == 0.0f && k->getNumOperands() == 2 &&
         isBf16(k->getOperand(0).getType()) &&
         isBf16(k->getOperand(1).getType());
}

/// A MatMul with the GELU epilogue (3) stores its aux (the pre-activation)
/// rounded when aux is bf16; D is computed from the unrounded value.
bool roundsAux(KernelOp k) {
  ArrayRef<int64_t> i = k.getI();
  return k.getKernel() == "MatMul" && i.size() == 13 && i[12] == 3;
}

/// Operand `idx` of `k` may be bf16, widened on load (docs/plan-format.md):
/// an Elementwise input, epilogue 4's pre-activation, epilogue 2's
/// residual, a LayerNorm's x, a LayerNormGrad's dy or x.
bool widensOnLoad(KernelOp k, unsigned idx) {
  StringRef name = k.getKernel();
  ArrayRef<int64_t> i = k.getI();
  if (name == "Elementwise")
    return true;
  if (name == "MatMul" && i.size() == 13)
    return (i[12] == 4 && idx == 2) || (i[12] == 2 && idx == 3);
  if (name == "LayerNorm")
    return idx == 0;
  if (name == "LayerNormGrad")
    return idx == 0 || idx == 1;
  return false;
}

/// The CUDA Elementwise kernel's parameter limits (kEwMaxOutputs and
/// kEwMaxCode in lib/Runtime/Backends/cuda/Common.h): a second output must
/// not make a kernel the GPU refuses.
constexpr int64_t kEwMaxOutputs = 8;
constexpr int64_t kEwMaxCode = 160;
constexpr int64_t kEwStore = 1; // plan::EwOp::Store

RankedTensorType withBf16(Type t) {
  auto r = cast<RankedTensorType>(t);
  return RankedTensorType::get(r.getShape(), BFloat16Type::get(t.getContext()));
}

/// The bf16 twin of `v`: `twin` maps a root to its bf16 counterpart; a
/// view under it gets a bf16 view of its source's twin (byte offset
/// halved: the same element), made once, right after that source.
Value bf16Twin(Value v, llvm::DenseMap<Value, Value> &twin) {
  if (Value t = twin.lookup(v))
    return t;
  auto view = v.getDefiningOp<ViewOp>();
  Value src = bf16Twin(view.getSource(), twin);
  OpBuilder vb(view);
  vb.setInsertionPointAfterValue(src);
  Value t = vb.create<ViewOp>(view.getLoc(), withBf16(view.getType()), src,
                              vb.getI64IntegerAttr(view.getOffset() / 2));
  twin[v] = t;
  return t;
}

bool isBf16Cast(Operation *op) {
  auto k = dyn_cast<KernelOp>(op);
  return k && k.getKernel() == "Cast" && k->getNumResults() == 1 &&
         isBf16(k->getResult(0).getType());
}

bool isBf16Transpose(Operation *op) {
  auto k = dyn_cast<KernelOp>(op);
  return k && k.getKernel() == "Transpose" && k->getNumResults() == 1 &&
         isBf16(k->getResult(0).getType());
}

struct MegaFoldCasts : mega::impl::MegaFoldCastsBase<MegaFoldCasts> {
  using MegaFoldCastsBase::MegaFoldCastsBase;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      // Last cast first: a user's own cast folds before its producer's,
      // so a Transpose it read is already bf16 out (foldable). Rounds until
      // nothing changes, each removing at least one cast.
      for (bool changed = true; changed;) {
        changed = false;
        SmallVector<KernelOp> casts;
        func.walk([&](KernelOp k) {
          if (isBf16Cast(k))
            casts.push_back(k);
        });
        for (KernelOp c : llvm::reverse(casts))
          if (c->getBlock()) // not erased by an earlier fold
            changed |= tryFold(c);
      }
      // Step 6.
      SmallVector<KernelOp> widenings;
      func.walk([&](KernelOp k) {
        if (k.getKernel() == "Cast" && k->getNumOperands() == 1 &&
            k->getNumResults() == 1 && isBf16(k->getOperand(0).getType()) &&
            !isBf16(k->getResult(0).getType()))
          widenings.push_back(k);
      });
      for (KernelOp w : widenings)
        foldWidening(w);
    }
  }

  /// Step 6.
  static void foldWidening(KernelOp castOp) {
    SmallVector<ViewOp> views;
    SmallVector<OpOperand *> reads;
    SmallVector<Value> work = {castOp->getResult(0)};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      for (OpOperand &use : v.getUses()) {
        Operation *user = use.getOwner();
        auto k = dyn_cast<KernelOp>(user);
        if (auto view = dyn_cast<ViewOp>(user)) {
          views.push_back(view);
          work.push_back(view.getResult());
        } else if (k && !isDest(use) &&
                   widensOnLoad(k, use.getOperandNumber())) {
          reads.push_back(&use);
        } else {
          return;
        }
      }
    }
    llvm::DenseMap<Value, Value> twin = {
        {castOp->getResult(0), castOp->getOperand(0)}};
    for (OpOperand *use : reads)
      use->set(bf16Twin(use->get(), twin));
    for (ViewOp view : llvm::reverse(views))
      if (view->use_empty())
        view->erase();
    castOp->erase();
  }

  bool foldable(Operation *user) {
    return isBf16Cast(user) || (normAttention && isBf16Transpose(user));
  }

  /// True when it removed casts.
  bool tryFold(KernelOp castOp) {
    // Step 1.
    Value root = castOp->getOperand(0);
    while (auto v = root.getDefiningOp<ViewOp>())
      root = v.getSource();
    if (root.getDefiningOp<EmptyOp>())
      return foldEmpty(root);
    auto producer = root.getDefiningOp<KernelOp>();
    if (!producer || producer->hasAttr("mega.dests") ||
        !cast<RankedTensorType>(root.getType()).getElementType().isF32())
      return false;
    auto it = kProducers.find(producer.getKernel());
    if (it == kProducers.end())
      return false;
    const Producer &p = it->second;
    const unsigned resultNo = cast<OpResult>(root).getResultNumber();
    if ((p.result >= 0 && unsigned(p.result) != resultNo) ||
        (p.normAttention && !normAttention) || !roundsOnStore(producer) ||
        (producer.getKernel() == "MatMul" && resultNo > 0 &&
         !roundsAux(producer)))
      return false;
    // Step 2.
    SmallVector<ViewOp> views;
    SmallVector<Operation *> folds;
    bool keepers = false;
    SmallVector<Value> work = {root};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      for (Operation *user : v.getUsers()) {
        if (auto view = dyn_cast<ViewOp>(user)) {
          views.push_back(view);
          work.push_back(view.getResult());
        } else if (foldable(user)) {
          folds.push_back(user);
        } else {
          keepers = true;
        }
      }
    }
    if (keepers)
      return p.canAddOutput && addBf16Output(producer, resultNo, folds, views);
    // Step 3.
    retypeToBf16(root, views, folds);
    return true;
  }

  /// Steps 3 and 5: `root` and its `views` become bf16; the Casts among
  /// `folds` go (their users read the root's bf16 bytes).
  static void retypeToBf16(Value root, ArrayRef<ViewOp> views,
                           ArrayRef<Operation *> folds) {
    root.setType(withBf16(root.getType()));
    for (ViewOp view : views) {
      view.getResult().setType(withBf16(view.getType()));
      view.setOffsetAttr(
          IntegerAttr::get(view.getOffsetAttr().getType(), view.getOffset() / 2));
    }
    for (Operation *f : folds)
      if (isBf16Cast(f)) {
        f->getResult(0).replaceAllUsesWith(f->getOperand(0));
        f->erase();
      }
  }

  /// Step 5.
  bool foldEmpty(Value root) {
    if (!cast<RankedTensorType>(root.getType()).getElementType().isF32())
      return false;
    SmallVector<ViewOp> views;
    SmallVector<Operation *> folds;
    llvm::SmallPtrSet<Operation *, 4> writers;
    llvm::SmallPtrSet<Value, 8> inside = {root};
    SmallVector<Value> work = {root};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      for (OpOperand &use : v.getUses()) {
        Operation *user = use.getOwner();
        if (auto view = dyn_cast<ViewOp>(user)) {
          views.push_back(view);
          inside.insert(view.getResult());
          work.push_back(view.getResult());
        } else if (foldable(user)) {
          folds.push_back(user);
        } else if (isDest(use) &&
                   kDestRounders.contains(cast<KernelOp>(user).getKernel())) {
          writers.insert(user);
        } else {
          return false;
        }
      }
    }
    if (folds.empty())
      return false;
    // A writer rounds all its destinations together: all must be here.
    for (Operation *w : writers)
      for (OpOperand &use : w->getOpOperands())
        if (isDest(use) && !inside.contains(use.get()))
          return false;
    retypeToBf16(root, views, folds);
    return true;
  }

  /// `use` is a destination (one of the last mega.dests operands) of a
  /// mega.kernel.
  static bool isDest(OpOperand &use) {
    auto k = dyn_cast<KernelOp>(use.getOwner());
    auto d = k ? k->getAttrOfType<IntegerAttr>("mega.dests") : nullptr;
    return d && use.getOperandNumber() + d.getInt() >= k->getNumOperands();
  }

  /// Step 4: `ew` gets a bf16 copy of result `resultNo` as its last output;
  /// the `folds` (reached from that result through views) read it. False
  /// when the kernel cannot take one more output.
  bool addBf16Output(KernelOp ew, unsigned resultNo,
                     ArrayRef<Operation *> folds, ArrayRef<ViewOp> views) {
    // i = {n, nIn, nOut, period_0..period_{nIn-1}, (op, dst, a, b)...}.
    SmallVector<int64_t> code(ew.getI());
    if (code.size() < 3)
      return false;
    const int64_t nin = code[1], nout = code[2], begin = 3 + nin;
    if (nout + 1 > kEwMaxOutputs ||
        (int64_t(code.size()) - begin) / 4 + 1 > kEwMaxCode)
      return false;
    // The last store of the result: the register holds its final value.
    int64_t store = -1;
    for (int64_t at = begin; at + 3 < int64_t(code.size()); at += 4)
      if (code[at] == kEwStore && code[at + 2] == int64_t(resultNo))
        store = at;
    if (store < 0)
      return false;
    const int64_t reg = code[store + 1];
    code.insert(code.begin() + store + 4, {kEwStore, reg, nout, 0});
    code[2] = nout + 1;

    OpBuilder b(ew);
    SmallVector<Type> types(ew->getResultTypes());
    Value root = ew->getResult(resultNo);
    types.push_back(withBf16(root.getType()));
    auto next = b.create<KernelOp>(ew.getLoc(), types, ew.getKernelAttr(),
                                   ew.getInputs(), b.getDenseI64ArrayAttr(code),
                                   ew.getFAttr());
    for (NamedAttribute a : ew->getDiscardableAttrs())
      next->setAttr(a.getName(), a.getValue());
    ew->replaceAllUsesWith(next->getResults().drop_back());
    Value copy = next->getResults().back();
    root = next->getResult(resultNo);

    // A bf16 twin of each view between the result and a foldable user.
    llvm::DenseMap<Value, Value> twin = {{root, copy}};
    for (Operation *f : folds) {
      Value t = bf16Twin(f->getOperand(0), twin);
      if (isBf16Cast(f)) {
        f->getResult(0).replaceAllUsesWith(t);
        f->erase();
      } else {
        f->setOperand(0, t);
      }
    }
    // The f32 views only the moved users read (users before sources).
    for (ViewOp view : llvm::reverse(views))
      if (view->use_empty())
        view->erase();
    ew->erase();
    return true;
  }
};

} // namespace

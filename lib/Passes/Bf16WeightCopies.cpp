//===- Bf16WeightCopies.cpp - The optimizer keeps each weight's bf16 copy ===//
//
// `mega-bf16-weight-copies`, at kernel level (after mega-fuse-optimizer,
// before mega-assign-buffers). mega-mixed-precision casts every f32
// parameter that a tensor-core op reads to bf16 at its use, in every
// micro-step and in the backward again: GPT-2 small's 49 weight Casts move
// 0.74 GB a step, and the copies occupy the arena until the last product
// that reads them. Megatron instead keeps bf16 model params beside the
// optimizer's fp32 main params and copies main -> model after each step.
// Here the parameter's copy is a persistent tensor (`mega.state {role =
// "param_copy"}`, docs/plan-format.md §3.2) that the AdamWMulti updating
// the parameter rewrites from the new value in the same pass (its copy
// flags), or, with the distributed optimizer, a Cast right after the
// AllGather that brings the updated parameter back writes; the programs
// read it instead of casting. The copy is the same Cast of the same value,
// computed once per step instead of once per use: the same bits
// everywhere.
//
// Algorithm, over the module:
//  1. Writers. For every parameter name: the AdamWMulti slots that update
//     it (operand 3 + 4k, the mega.param itself), the AllGathers whose one
//     destination is the whole mega.param (the distributed optimizer's,
//     after its block update, which only reads the parameter), and any
//     other write: an in-place operand of AdamW (without a group) or Sgd,
//     an AdamWMulti slot through a view, any other kernel's destination
//     (mega.dests) in it. Views count as their parameter.
//  2. Eligible: no other write; AdamWMulti slots or AllGathers, not both,
//     at most one per function; and at least one Cast kernel of the whole
//     parameter (its mega.param directly, f32 -> bf16, the same shape)
//     whose result kernels only read (no destination, no output port).
//  3. Ranks: a function's pipeline rank is its mega.stage modulo the number
//     of optimizer functions (0 without a pipeline). Every function that
//     casts the parameter must have on its rank a function with one of its
//     writers (else the copy there would go stale).
//  4. Rewrite: each Cast becomes a `mega.state "name" {role = "param_copy"}`
//     (one per function); each AdamWMulti with slots of eligible
//     parameters gets i = {n, zero_grads, c_1..c_n} and the copies as
//     destinations (mega.dests), in slot order; after each AllGather of an
//     eligible parameter comes a Cast of the parameter into its copy (a
//     destination).
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/ADT/StringMap.h"

namespace mega {
#define GEN_PASS_DEF_MEGABF16WEIGHTCOPIES
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

constexpr StringLiteral kCopyRole = "param_copy";

/// The parameter `v` is (through views), or null.
ParamOp paramOf(Value v) {
  while (auto view = v.getDefiningOp<ViewOp>())
    v = view.getSource();
  return v.getDefiningOp<ParamOp>();
}

/// Number of trailing operands a kernel writes (mega.dests).
unsigned destCount(KernelOp k) {
  if (auto d = k->getAttrOfType<IntegerAttr>(kDestsAttr))
    return unsigned(d.getInt());
  return 0;
}

/// Whether every use of `v`, through views, reads it as a kernel input: a
/// copy that some kernel wrote into (a destination) or that left through an
/// output port would no longer be the parameter's Cast.
bool onlyRead(Value v) {
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    if (auto view = dyn_cast<ViewOp>(user)) {
      if (!onlyRead(view.getResult()))
        return false;
      continue;
    }
    auto k = dyn_cast<KernelOp>(user);
    if (!k || use.getOperandNumber() >= k->getNumOperands() - destCount(k))
      return false;
  }
  return true;
}

/// A Cast of a whole parameter to bf16 that is only read: the parameter,
/// or null.
ParamOp castParam(KernelOp k) {
  if (k.getKernel() != "Cast" || k->getNumOperands() != 1 ||
      k->getNumResults() != 1 || destCount(k) != 0)
    return nullptr;
  auto p = k->getOperand(0).getDefiningOp<ParamOp>();
  auto from = dyn_cast<RankedTensorType>(k->getOperand(0).getType());
  auto to = dyn_cast<RankedTensorType>(k->getResult(0).getType());
  if (!p || !from || !to || !from.getElementType().isF32() ||
      !to.getElementType().isBF16() || from.getShape() != to.getShape() ||
      !onlyRead(k->getResult(0)))
    return nullptr;
  return p;
}

struct Slot {
  KernelOp multi;
  unsigned index; ///< tensor k of the AdamWMulti
};

struct ParamUse {
  SmallVector<Slot> slots;
  SmallVector<KernelOp> gathers;
  SmallVector<KernelOp> casts;
  bool otherWrite = false;
};

struct MegaBf16WeightCopies
    : mega::impl::MegaBf16WeightCopiesBase<MegaBf16WeightCopies> {
  Statistic copies{this, "copies", "parameters given a bf16 copy"};
  Statistic castsReplaced{this, "casts-replaced",
                          "weight Casts replaced by the copy"};

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> funcs(module.getOps<func::FuncOp>());
    // Step 3's ranks.
    int64_t optimizers = 0;
    for (func::FuncOp f : funcs)
      if (auto p = f->getAttrOfType<StringAttr>("mega.program");
          p && p.getValue() == "optimizer")
        ++optimizers;
    auto rankOf = [&](Operation *op) -> int64_t {
      auto f = op->getParentOfType<func::FuncOp>();
      auto stage = f->getAttrOfType<IntegerAttr>("mega.stage");
      return stage && optimizers > 0 ? stage.getInt() % optimizers : 0;
    };

    // Step 1.
    llvm::MapVector<StringRef, ParamUse> uses;
    for (func::FuncOp f : funcs)
      f.walk([&](KernelOp k) {
        StringRef name = k.getKernel();
        const unsigned n = k->getNumOperands(), dests = destCount(k);
        for (unsigned o = 0; o < n; ++o) {
          ParamOp p = paramOf(k->getOperand(o));
          if (!p)
            continue;
          ParamUse &u = uses[p.getName()];
          const bool whole = bool(k->getOperand(o).getDefiningOp<ParamOp>());
          if (name == "AdamWMulti" && o >= 3 && o < n - dests &&
              (o - 3) % 4 == 0 && whole)
            u.slots.push_back({k, (o - 3) / 4});
          else if (name == "AllGather" && dests == 1 && o == n - 1 && whole)
            u.gathers.push_back(k);
          else if (o >= n - dests || name == "AdamWMulti" || name == "Sgd" ||
                   (name == "AdamW" && k.getI().empty()))
            u.otherWrite = true; // a write, or a slot through a view
        }
        if (ParamOp p = castParam(k))
          uses[p.getName()].casts.push_back(k);
      });

    // Steps 2 and 3.
    llvm::DenseMap<Operation *, SmallVector<unsigned>> flagged; // multi -> k
    SmallVector<StringRef> chosen;
    for (auto &[name, u] : uses) {
      if (u.otherWrite || u.slots.empty() == u.gathers.empty() ||
          u.casts.empty())
        continue;
      SmallVector<Operation *> writers;
      for (const Slot &s : u.slots)
        writers.push_back(s.multi);
      for (KernelOp g : u.gathers)
        writers.push_back(g);
      llvm::SmallPtrSet<Operation *, 4> funcsWithWriter;
      llvm::SmallDenseSet<int64_t> ranks;
      bool ok = true;
      for (Operation *w : writers) {
        ok &= funcsWithWriter.insert(w->getParentOfType<func::FuncOp>()).second;
        ranks.insert(rankOf(w));
      }
      for (KernelOp c : u.casts)
        ok &= ranks.contains(rankOf(c));
      if (!ok)
        continue;
      chosen.push_back(name);
      for (const Slot &s : u.slots)
        flagged[s.multi].push_back(s.index);
      for (KernelOp g : u.gathers)
        castAfter(g);
    }

    // Step 4: the readers.
    for (StringRef name : chosen) {
      llvm::DenseMap<Operation *, Value> copyIn; // function -> its copy
      for (KernelOp c : uses[name].casts) {
        auto f = c->getParentOfType<func::FuncOp>();
        Value &copy = copyIn[f];
        if (!copy) {
          OpBuilder b(&f.getBody().front(), f.getBody().front().begin());
          copy = b.create<StateOp>(c.getLoc(), c->getResult(0).getType(), name,
                                   kCopyRole);
        }
        c->getResult(0).replaceAllUsesWith(copy);
        c->erase();
        ++castsReplaced;
      }
      ++copies;
    }
    // Step 4: the writers.
    for (auto &[op, slots] : flagged) {
      auto k = cast<KernelOp>(op);
      const int64_t n = k.getI()[0];
      SmallVector<int64_t> i(k.getI());
      i.resize(size_t(2 + n), 0);
      SmallVector<Value> operands(k->getOperands());
      llvm::sort(slots);
      OpBuilder b(k);
      for (unsigned s : slots) {
        i[2 + s] = 1;
        auto p = k->getOperand(3 + 4 * s).getDefiningOp<ParamOp>();
        auto type = cast<RankedTensorType>(p.getType());
        operands.push_back(b.create<StateOp>(
            k.getLoc(), RankedTensorType::get(type.getShape(), b.getBF16Type()),
            p.getName(), kCopyRole));
      }
      auto multi =
          b.create<KernelOp>(k.getLoc(), TypeRange{}, k.getKernelAttr(),
                             operands, b.getDenseI64ArrayAttr(i), k.getFAttr());
      multi->setAttr(kDestsAttr, b.getI64IntegerAttr(int64_t(slots.size())));
      k->erase();
    }
  }

  /// The copy of the parameter `gather` writes, cast from it right after.
  void castAfter(KernelOp gather) {
    Value param = gather->getOperands().back();
    auto type = cast<RankedTensorType>(param.getType());
    OpBuilder b(gather->getContext());
    b.setInsertionPointAfter(gather);
    Value copy = b.create<StateOp>(
        gather.getLoc(),
        RankedTensorType::get(type.getShape(), b.getBF16Type()),
        param.getDefiningOp<ParamOp>().getName(), kCopyRole);
    auto c =
        b.create<KernelOp>(gather.getLoc(), TypeRange{},
                           b.getStringAttr("Cast"), ValueRange{param, copy},
                           b.getDenseI64ArrayAttr({type.getNumElements()}),
                           b.getDenseF32ArrayAttr({}));
    c->setAttr(kDestsAttr, b.getI64IntegerAttr(1));
  }
};

} // namespace

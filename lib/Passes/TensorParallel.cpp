//===- TensorParallel.cpp - Megatron tensor parallelism, decided by rules -===//
//
// `mega-tensor-parallel{size=T}` rewrites the tensor-level forward programs
// (after mega-decompose, before mega-autodiff) into the program one device of
// a 1-D mesh of T devices runs. It knows no op: what an op can compute on
// split or partial operands comes from its ShardingOpInterface rule
// (lib/Dialect/Mega/MegaSharding.cpp); ops without one take only replicated
// operands. Shardings are #mega.sharding (upstream mesh's meaning).
//
// Algorithm:
//  1. T = 1: nothing to do. Otherwise put `mega.mesh = array<i64: T, ...>`
//     on the module (other axes kept), refuse a `heads` hyper-parameter that
//     T does not divide (the error names both values) and programs that are
//     not straight-line tensor-level code (mega.repeat, mega.linear, ...).
//  2. Decisions are per parameter name (all programs share parameters):
//     name -> sharding. A sweep propagates them forward through every
//     program in order: a param's value gets its decision; each op gets its
//     operands' shardings and asks its rule. When the rule fails and some
//     operands are partial, it is asked again with them all-reduced. The
//     sharding the rule needs for an operand is obtained by
//       - nothing, when it already has it;
//       - `mega.all_reduce`, when the operand is partial and is needed whole;
//       - a new decision, when the operand is an undecided `mega.param` and
//         the split divides its dimension (the sweep then restarts);
//     anything else makes the sweep fail. A `groups` answer (reshape of the
//     fused q|k|v) is recorded on the params the split came from.
//  3. Seeds, in program order: every `mega.matmul` whose right operand is an
//     undecided rank-2 `mega.param` is tried column-parallel (its output
//     dimension split). The try is kept when sweeps reach a fixed point
//     without failure (the split is absorbed, e.g. by a row-parallel weight
//     whose product is partial and then all-reduced, or by the
//     vocabulary-parallel loss), otherwise dropped. A split reaching a
//     `mega.output` fails the try in the seed's own program; in the others
//     it is all-gathered (@predict's logits). A failed try is retried once
//     with the ops that had a plain and a `groups` answer preferring
//     `groups` (T = 3: split the heads, not q|k|v).
//  4. Rewrite with the final sweep: params get `mega.sharding` (and
//     `mega.shard_groups` for re-ordered ones) and their local dims; partial
//     operands needed whole get one `mega.all_reduce` per value, right after
//     its producer; replicated f32 operands of ops doing split work get one
//     `mega.copy_to_region` (Megatron's f: all-reduce of the gradient); every
//     split or partial result carries `mega.sharding` and its type becomes the
//     local one (split dimensions divided by T); an op doing split work then
//     builds its per-device form (ShardingOpInterface::partition: the
//     vocabulary-parallel embedding and loss); a split `mega.output` (the
//     logits of @predict) is all-gathered.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaInterfaces.h"
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"

namespace mega {
#define GEN_PASS_DEF_MEGATENSORPARALLEL
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

constexpr StringLiteral kShardingAttr = "mega.sharding";
constexpr StringLiteral kGroupsAttr = "mega.shard_groups";

RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

ShardingAttr replicated(Value v) {
  return ShardingAttr::getReplicated(v.getContext(), tensorType(v).getRank());
}

/// What one sweep found: every value's sharding and the operands that need
/// an all_reduce.
struct Sweep {
  DenseMap<Value, ShardingAttr> sharding;
  DenseSet<OpOperand *> reduce;
  /// Split operands of `mega.output` (gathered: @predict's logits).
  DenseSet<OpOperand *> gather;
  /// Params (by name) whose split dim is stored in `groups` blocks.
  llvm::StringMap<int64_t> groups;
  /// Ops whose rule had a plain and a `groups` answer (ShardingRule).
  SmallVector<Operation *> ambiguous;

  ShardingAttr of(Value v) const {
    auto it = sharding.find(v);
    return it == sharding.end() ? replicated(v) : it->second;
  }
};

enum class SweepResult { Stable, Changed, Failed };

struct TensorParallel : mega::impl::MegaTensorParallelBase<TensorParallel> {
  using MegaTensorParallelBase::MegaTensorParallelBase;
  void runOnOperation() override;

private:
  SmallVector<func::FuncOp> funcs;
  SmallVector<int64_t, 1> mesh;
  llvm::StringMap<ShardingAttr> decisions;
  /// The program whose seed is being tried (no gathered outputs there).
  func::FuncOp noGatherIn;
  /// Ops asked to prefer their `groups` answer (step 3's retry).
  DenseSet<Operation *> preferGroups;

  SweepResult sweep(Sweep &out);
  void recordGroups(Sweep &s, Value v, int64_t groups);
  void rewrite(Sweep &s);
};

/// The param op defining `v`, if any.
ParamOp paramOf(Value v) { return v.getDefiningOp<ParamOp>(); }

// Step 2.
SweepResult TensorParallel::sweep(Sweep &s) {
  s = Sweep();
  for (func::FuncOp f : funcs) {
    for (Operation &op : f.getBody().getOps()) {
      if (auto p = dyn_cast<ParamOp>(op)) {
        auto it = decisions.find(p.getName());
        if (it != decisions.end())
          s.sharding[p.getResult()] = it->second;
        continue;
      }
      SmallVector<ShardingAttr> in;
      bool allReplicated = true;
      for (Value v : op.getOperands()) {
        in.push_back(s.of(v));
        allReplicated &= in.back().isReplicated();
      }
      if (allReplicated)
        continue;
      if (isa<OutputOp>(op) && in[0].getSplitDim() >= 0) {
        // A split that only ends gathered is not worth making: allowed in
        // programs other than the one that is trying it (@predict's logits
        // under the layout @train chose).
        if (f == noGatherIn)
          return SweepResult::Failed;
        s.gather.insert(&op.getOpOperand(0));
        continue;
      }
      ShardingRule rule;
      rule.mesh = mesh;
      rule.preferGroups = preferGroups.contains(&op);
      auto iface = dyn_cast<ShardingOpInterface>(op);
      bool ok = iface && succeeded(iface.getShardingRule(in, rule));
      if (!ok) {
        // All-reduce the partial operands and ask again.
        bool anyPartial = false;
        for (auto [i, v] : llvm::enumerate(op.getOperands()))
          if (in[i].isPartial()) {
            in[i] = replicated(v);
            anyPartial = true;
          }
        rule = ShardingRule();
        rule.mesh = mesh;
        rule.preferGroups = preferGroups.contains(&op);
        if (!anyPartial)
          return SweepResult::Failed;
        // Any op computes on whole operands.
        bool whole =
            llvm::all_of(in, [](ShardingAttr a) { return a.isReplicated(); });
        if (whole) {
          rule.operands.assign(in.begin(), in.end());
          for (Value r : op.getResults())
            rule.results.push_back(replicated(r));
          ok = true;
        } else if (iface) {
          ok = succeeded(iface.getShardingRule(in, rule));
        }
        if (!ok)
          return SweepResult::Failed;
        if (!iface) {
          for (OpOperand &use : op.getOpOperands())
            if (s.of(use.get()).isPartial())
              s.reduce.insert(&use);
          continue;
        }
      }
      bool changed = false;
      for (OpOperand &use : op.getOpOperands()) {
        ShardingAttr have = s.of(use.get());
        ShardingAttr want = rule.operands[use.getOperandNumber()];
        if (have == want)
          continue;
        if (have.isPartial() && want.isReplicated()) {
          s.reduce.insert(&use);
          continue;
        }
        ParamOp p = paramOf(use.get());
        int64_t d = want.getSplitDim();
        if (!p || !have.isReplicated() || want.isPartial() || d < 0 ||
            decisions.count(p.getName()) ||
            tensorType(use.get()).getDimSize(d) % mesh[0] != 0)
          return SweepResult::Failed;
        decisions[p.getName()] = want;
        changed = true;
      }
      if (changed)
        return SweepResult::Changed;
      for (auto [r, sh] : llvm::zip(op.getResults(), rule.results))
        if (!sh.isReplicated())
          s.sharding[r] = sh;
      if (rule.groups > 1)
        recordGroups(s, op.getOperand(0), rule.groups);
      if (rule.ambiguous)
        s.ambiguous.push_back(&op);
    }
  }
  return SweepResult::Stable;
}

/// Marks every param whose split reaches `v` (through split operands) as
/// stored in `groups` blocks.
void TensorParallel::recordGroups(Sweep &s, Value v, int64_t groups) {
  if (ParamOp p = paramOf(v)) {
    s.groups[p.getName()] = groups;
    return;
  }
  if (Operation *def = v.getDefiningOp())
    for (Value operand : def->getOperands())
      if (s.of(operand).getSplitDim() >= 0)
        recordGroups(s, operand, groups);
}

/// The per-device type of `v` under `s`.
RankedTensorType localType(Value v, ShardingAttr s, ArrayRef<int64_t> mesh) {
  RankedTensorType t = tensorType(v);
  SmallVector<int64_t> shape(t.getShape());
  for (int64_t d = 0; d < t.getRank(); ++d)
    for (int64_t axis : s.getDimAxes(d))
      shape[d] /= mesh[axis];
  return RankedTensorType::get(shape, t.getElementType());
}

// Step 4.
void TensorParallel::rewrite(Sweep &s) {
  MLIRContext *ctx = &getContext();
  IRRewriter b(ctx);
  auto axes = b.getDenseI64ArrayAttr({0});
  DenseMap<Value, Value> reduced, copied;
  for (func::FuncOp f : funcs) {
    SmallVector<Operation *> ops;
    for (Operation &op : f.getBody().getOps())
      ops.push_back(&op);
    for (Operation *op : ops) {
      bool splitWork = false;
      for (OpOperand &use : op->getOpOperands())
        splitWork |=
            !s.of(use.get()).isReplicated() && !s.reduce.contains(&use);
      for (Value r : op->getResults())
        splitWork |= !s.of(r).isReplicated();
      for (OpOperand &use : op->getOpOperands()) {
        Value v = use.get();
        if (s.gather.contains(&use)) {
          ShardingAttr sh = s.of(v);
          int64_t d = sh.getSplitDim();
          SmallVector<int64_t> shape(tensorType(v).getShape());
          shape[d] *= mesh[0];
          b.setInsertionPoint(op);
          use.set(b.create<AllGatherOp>(
              v.getLoc(), RankedTensorType::get(shape, b.getF32Type()), v,
              b.getDenseI64ArrayAttr(sh.getDimAxes(d)), d));
          continue;
        }
        bool whole = s.of(v).isReplicated();
        if (s.reduce.contains(&use)) {
          Value &r = reduced[v];
          if (!r) {
            b.setInsertionPointAfterValue(v);
            r = b.create<AllReduceOp>(v.getLoc(), v, axes,
                                      b.getStringAttr("sum"));
          }
          use.set(r);
          v = r;
          whole = true;
        }
        if (splitWork && whole && tensorType(v).getElementType().isF32()) {
          Value &c = copied[v];
          if (!c) {
            b.setInsertionPointAfterValue(v);
            c = b.create<CopyToRegionOp>(v.getLoc(), v, axes);
          }
          use.set(c);
        }
      }
      // Annotate and retype the results.
      SmallVector<Attribute> shardings;
      bool any = false;
      for (Value r : op->getResults()) {
        ShardingAttr sh = s.of(r);
        shardings.push_back(sh);
        if (sh.isReplicated())
          continue;
        any = true;
        r.setType(localType(r, sh, mesh));
      }
      if (any)
        op->setAttr(kShardingAttr, shardings.size() == 1
                                       ? shardings[0]
                                       : Attribute(b.getArrayAttr(shardings)));
      // The op's own per-device form (vocabulary-parallel ops).
      if (auto iface = dyn_cast<ShardingOpInterface>(op); iface && splitWork) {
        SmallVector<ShardingAttr> in;
        for (Value v : op->getOperands())
          in.push_back(s.of(v));
        Operation *now = iface.partition(b, in);
        if (now != op)
          for (auto [r, sh] : llvm::zip(now->getResults(), shardings))
            if (!cast<ShardingAttr>(sh).isReplicated())
              s.sharding[r] = cast<ShardingAttr>(sh);
        continue;
      }
      if (!any)
        continue;
      if (auto p = dyn_cast<ParamOp>(op)) {
        SmallVector<Attribute> dims;
        for (int64_t d : p.getType().getShape())
          dims.push_back(b.getI64IntegerAttr(d));
        p.setDimsAttr(b.getArrayAttr(dims));
        auto g = s.groups.find(p.getName());
        if (g != s.groups.end())
          p->setAttr(kGroupsAttr, b.getI64IntegerAttr(g->second));
      }
    }
  }
}

void TensorParallel::runOnOperation() {
  ModuleOp module = getOperation();
  // Step 1.
  if (size < 1) {
    module.emitError() << "mega-tensor-parallel: size must be positive, not "
                       << int64_t(size);
    return signalPassFailure();
  }
  if (size == 1)
    return;
  // Keep the other axes of a mesh another pass made (axis 1: data).
  if (auto m = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh"))
    mesh.assign(m.asArrayRef().begin(), m.asArrayRef().end());
  if (mesh.empty())
    mesh.push_back(1);
  mesh[0] = int64_t(size);
  module->setAttr("mega.mesh", DenseI64ArrayAttr::get(&getContext(), mesh));
  if (auto hp = module->getAttrOfType<DictionaryAttr>(kHParamsAttr))
    if (auto heads = dyn_cast_or_null<IntegerAttr>(hp.get("heads")))
      if (heads.getInt() % size != 0) {
        module.emitError() << "--tp " << int64_t(size)
                           << " does not divide heads=" << heads.getInt();
        return signalPassFailure();
      }
  for (auto f : module.getOps<func::FuncOp>()) {
    if (f.isExternal())
      continue;
    // Straight-line tensor-level programs only: the sweep visits one block.
    if (!f.getBody().hasOneBlock()) {
      f.emitOpError("must have one block for mega-tensor-parallel");
      return signalPassFailure();
    }
    for (Operation &op : f.getBody().getOps()) {
      if (op.hasAttr(kShardingAttr) ||
          isa<AllReduceOp, CopyToRegionOp, AllGatherOp, ReduceScatterOp>(op)) {
        op.emitOpError(
            "is already partitioned: mega-tensor-parallel runs once");
        return signalPassFailure();
      }
      if (op.getNumRegions() || isa<DecomposeOpInterface>(op)) {
        op.emitOpError("is not a tensor-level op: run mega-unroll and "
                       "mega-decompose before mega-tensor-parallel");
        return signalPassFailure();
      }
    }
    funcs.push_back(f);
  }

  auto settle = [&](Sweep &s) {
    for (int i = 0; i < 64; ++i) {
      SweepResult r = sweep(s);
      if (r != SweepResult::Changed)
        return r == SweepResult::Stable;
    }
    return false;
  };
  Sweep s;
  if (!settle(s)) {
    module.emitError("mega-tensor-parallel: the program cannot run replicated");
    return signalPassFailure();
  }
  // Step 3.
  SmallVector<MatMulOp> seeds;
  for (func::FuncOp f : funcs)
    f.walk([&](MatMulOp mm) {
      if (ParamOp p = paramOf(mm.getB()); p && p.getType().getRank() == 2)
        seeds.push_back(mm);
    });
  for (MatMulOp mm : seeds) {
    ParamOp p = paramOf(mm.getB());
    if (decisions.count(p.getName()))
      continue;
    int64_t outDim = mm.getTransposeB() ? 0 : 1;
    if (p.getType().getDimSize(outDim) % size != 0)
      continue;
    llvm::StringMap<ShardingAttr> saved = decisions;
    decisions[p.getName()] = ShardingAttr::getSplit(&getContext(), 2, outDim);
    Sweep trial;
    noGatherIn = mm->getParentOfType<func::FuncOp>();
    if (settle(trial))
      continue;
    // Again with the ops that had a plain and a `groups` answer taking
    // `groups` (T = 3 divides q|k|v's 3 as well as the heads: the heads are
    // wanted), as long as failing sweeps show new such ops.
    SmallVector<Operation *> added;
    bool ok = false;
    while (!ok) {
      size_t before = added.size();
      for (Operation *op : trial.ambiguous)
        if (preferGroups.insert(op).second)
          added.push_back(op);
      if (added.size() == before)
        break;
      decisions = saved;
      decisions[p.getName()] = ShardingAttr::getSplit(&getContext(), 2, outDim);
      ok = settle(trial);
    }
    if (!ok) {
      for (Operation *op : added)
        preferGroups.erase(op);
      decisions = std::move(saved);
    }
  }
  noGatherIn = nullptr;
  if (!settle(s))
    return signalPassFailure();
  // Step 4.
  rewrite(s);
}

} // namespace

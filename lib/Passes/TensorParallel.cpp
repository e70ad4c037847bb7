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
//  5. Sequence parallelism (`sequence-parallel`), with the split of steps
//     2-3 kept: the final sweep gets one more way to obtain an operand. A
//     partial sum that an op needs whole is first offered to the op
//     reduce-scattered into blocks of rows (its leading dim); when the op's
//     rule takes them (bias and residual adds, layer norms), the
//     `mega.reduce_scatter` replaces the all-reduce and the blocks flow on;
//     an op whose rule refuses them (a column-parallel matmul, the output
//     layer, anything without a rule) gets them `mega.all_gather`ed. Blocks
//     gathered into replicated work (whose gradient would be whole, not a
//     term per device) send the reduce-scatters they came from back to
//     all-reduces, and the sweep is run again.
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
/// On a param zero-padded along its split dim: the dim's true size.
constexpr StringLiteral kUnpaddedAttr = "mega.unpadded";
/// On an op taking padded operands: per operand, the true size of its split
/// dim (0: not padded); the op's rule reads it (ShardingRule::valid).
constexpr StringLiteral kUnpaddedOperandsAttr = "mega.unpadded_operands";

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
  /// Sequence parallelism: values split into blocks of rows (leading dim),
  /// partial operands reduce-scattered into such blocks, and row blocks
  /// all-gathered for an op that needs them whole.
  DenseSet<Value> rows;
  DenseSet<OpOperand *> scatter, rowGather;
  /// Padding: the true size of a padded value's split dim, and the ops that
  /// take padded operands (the true sizes, 0 for the others).
  DenseMap<Value, int64_t> valid;
  DenseMap<Operation *, SmallVector<int64_t>> paddedOps;

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
  /// Params whose split dim the devices do not divide: its true size (the
  /// param is zero-padded to the next multiple of the devices).
  llvm::StringMap<int64_t> unpadded;
  /// The program whose seed is being tried (no gathered outputs there).
  func::FuncOp noGatherIn;
  /// Ops asked to prefer their `groups` answer (step 3's retry).
  DenseSet<Operation *> preferGroups;
  /// Sequence parallelism in the sweeps (step 5; the split is decided
  /// without it), and the partial values it must all-reduce after all.
  bool sp = false;
  DenseSet<Value> noScatter;
  /// Whether step 5 may still split a parameter (wpe by positions when the
  /// blocks are of one sequence's positions).
  bool spDecisions = true;

  SweepResult sweep(Sweep &out);
  SweepResult visit(Sweep &s, Operation &op, ArrayRef<ShardingAttr> have);
  bool scatterable(Value v, ShardingAttr have) const;
  int64_t rowsDim(RankedTensorType t) const;
  void recordGroups(Sweep &s, Value v, int64_t groups);
  LogicalResult rewrite(Sweep &s);
  bool dropWholeRowsOnReplicatedWork(const Sweep &s);
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
        auto u = unpadded.find(p.getName());
        if (u != unpadded.end())
          s.valid[p.getResult()] = u->second;
        continue;
      }
      SmallVector<ShardingAttr> have;
      bool allReplicated = true;
      for (Value v : op.getOperands()) {
        have.push_back(s.of(v));
        allReplicated &= have.back().isReplicated();
      }
      if (allReplicated)
        continue;
      if (isa<OutputOp>(op) && have[0].getSplitDim() >= 0) {
        // A split that only ends gathered is not worth making: allowed in
        // programs other than the one that is trying it (@predict's logits
        // under the layout @train chose).
        if (f == noGatherIn)
          return SweepResult::Failed;
        s.gather.insert(&op.getOpOperand(0));
        continue;
      }
      SweepResult r = visit(s, op, have);
      if (r != SweepResult::Stable)
        return r;
    }
  }
  return SweepResult::Stable;
}

/// The dim along which blocks of `t`'s rows are split: its first dim that
/// is not 1, when it is a leading one (not the last) and the tensor axis
/// divides it -- the micro-batch's sequences, or with one sequence its
/// positions; -1 when there is none.
int64_t TensorParallel::rowsDim(RankedTensorType t) const {
  for (int64_t d = 0; d + 1 < t.getRank(); ++d) {
    if (t.isDynamicDim(d))
      return -1;
    if (t.getDimSize(d) != 1)
      return t.getDimSize(d) % mesh[0] == 0 ? d : -1;
  }
  return -1;
}

/// Whether `v`, partial, can be reduce-scattered into row blocks (sequence
/// parallelism): an f32 activation with a rowsDim.
bool TensorParallel::scatterable(Value v, ShardingAttr have) const {
  RankedTensorType t = tensorType(v);
  return sp && !noScatter.contains(v) && have.isPartial() &&
         have.getSplitDim() == -1 &&
         have.getPartialKind().getValue() == "sum" &&
         t.getElementType().isF32() && rowsDim(t) >= 0;
}

// Step 2, one op: the attempts, in order, are the operands as they are;
// (sequence parallelism) the partial ones reduce-scattered into row blocks;
// the partial ones all-reduced and the row blocks all-gathered (whole). The
// first whose rule answers and whose operands can all be obtained wins.
SweepResult TensorParallel::visit(Sweep &s, Operation &op,
                                  ArrayRef<ShardingAttr> have) {
  auto iface = dyn_cast<ShardingOpInterface>(op);
  bool anyPartial =
      llvm::any_of(have, [](ShardingAttr a) { return a.isPartial(); });
  bool anyRows = llvm::any_of(op.getOperands(),
                              [&](Value v) { return s.rows.contains(v); });
  bool anyScatterable = false;
  for (auto [v, h] : llvm::zip(op.getOperands(), have))
    anyScatterable |= scatterable(v, h);
  SmallVector<int64_t> valid;
  bool anyPadded = false;
  for (Value v : op.getOperands()) {
    valid.push_back(s.valid.lookup(v));
    anyPadded |= valid.back() > 0;
  }
  enum Attempt { AsIs, Scatter, Whole };
  SmallVector<Attempt, 3> attempts{AsIs};
  if (anyScatterable)
    attempts.push_back(Scatter);
  if (anyPartial || anyRows)
    attempts.push_back(Whole);
  bool ruleFailedOnly = true;
  for (Attempt at : attempts) {
    // Without sequence parallelism the historic behaviour: operands that
    // cannot be obtained fail the sweep, only a failing rule falls back.
    if (at != AsIs && !sp && !ruleFailedOnly)
      return SweepResult::Failed;
    SmallVector<ShardingAttr> in(have.begin(), have.end());
    for (auto [i, v] : llvm::enumerate(op.getOperands())) {
      if (at == Scatter && scatterable(v, have[i]))
        in[i] = ShardingAttr::getSplit(v.getContext(), tensorType(v).getRank(),
                                       rowsDim(tensorType(v)));
      if (at == Whole && (have[i].isPartial() || s.rows.contains(v)))
        in[i] = replicated(v);
    }
    ShardingRule rule;
    rule.mesh = mesh;
    rule.preferGroups = preferGroups.contains(&op);
    rule.valid = valid;
    bool ok = false;
    if (at == Whole && !anyPadded &&
        llvm::all_of(in, [](ShardingAttr a) { return a.isReplicated(); })) {
      // Any op computes on whole operands.
      rule.operands.assign(in.begin(), in.end());
      for (Value r : op.getResults())
        rule.results.push_back(replicated(r));
      ok = true;
    } else if (iface) {
      ok = succeeded(iface.getShardingRule(in, rule)) &&
           (!anyPadded || rule.paddingHandled);
    }
    if (!ok)
      continue;
    ruleFailedOnly = false;
    // Can every operand get the sharding the rule asks for?
    SmallVector<std::tuple<ParamOp, ShardingAttr, int64_t>> decide;
    SmallVector<OpOperand *> reduce, scatter, gather;
    bool obtainable = true;
    for (OpOperand &use : op.getOpOperands()) {
      Value v = use.get();
      ShardingAttr h = have[use.getOperandNumber()];
      ShardingAttr want = rule.operands[use.getOperandNumber()];
      if (h == want)
        continue;
      if (h.isPartial() && want.isReplicated()) {
        reduce.push_back(&use);
        continue;
      }
      if (at == Scatter && scatterable(v, h) &&
          want.getSplitDim() == rowsDim(tensorType(v)) &&
          !want.isPartial()) {
        scatter.push_back(&use);
        continue;
      }
      if (s.rows.contains(v) && want.isReplicated()) {
        gather.push_back(&use);
        continue;
      }
      ParamOp p = paramOf(v);
      int64_t d = want.getSplitDim();
      if (!p || !h.isReplicated() || want.isPartial() || d < 0 ||
          decisions.count(p.getName()) || tensorType(v).isDynamicDim(d)) {
        obtainable = false;
        break;
      }
      // A dim the devices do not divide is zero-padded (kept only where
      // every op taking it knows what the padding means).
      int64_t n = tensorType(v).getDimSize(d);
      if (sp && !spDecisions) {
        obtainable = false;
        break;
      }
      decide.push_back({p, want, n % mesh[0] ? n : 0});
    }
    if (!obtainable) {
      if (!sp)
        return SweepResult::Failed;
      continue;
    }
    if (!decide.empty()) {
      for (auto [p, want, n] : decide) {
        decisions[p.getName()] = want;
        if (n)
          unpadded[p.getName()] = n;
      }
      return SweepResult::Changed;
    }
    s.reduce.insert(reduce.begin(), reduce.end());
    s.scatter.insert(scatter.begin(), scatter.end());
    s.rowGather.insert(gather.begin(), gather.end());
    // Row blocks flow on: a result split along its leading dim by an op
    // that took row blocks is row blocks too.
    bool rowsIn = !scatter.empty();
    for (OpOperand &use : op.getOpOperands())
      rowsIn |= s.rows.contains(use.get()) && !llvm::is_contained(gather, &use);
    if (anyPadded)
      s.paddedOps[&op] = valid;
    for (auto [r, n] : llvm::zip(op.getResults(), rule.resultValid))
      if (n > 0)
        s.valid[r] = n;
    for (auto [r, sh] : llvm::zip(op.getResults(), rule.results)) {
      if (sh.isReplicated())
        continue;
      s.sharding[r] = sh;
      // (Blocks of rows: split along a dim with only 1s before it.)
      int64_t d = sh.getSplitDim();
      bool leading = d >= 0 && !sh.isPartial();
      for (int64_t k = 0; leading && k < d; ++k)
        leading = tensorType(r).getDimSize(k) == 1;
      if (rowsIn && leading)
        s.rows.insert(r);
    }
    if (rule.groups > 1)
      recordGroups(s, op.getOperand(0), rule.groups);
    if (rule.ambiguous)
      s.ambiguous.push_back(&op);
    return SweepResult::Stable;
  }
  return SweepResult::Failed;
}

/// Marks every param whose split reaches `v` (through split operands) as
/// stored in `groups` blocks.
void TensorParallel::recordGroups(Sweep &s, Value v, int64_t groups) {
  if (ParamOp p = paramOf(v)) {
    s.groups[p.getName()] = groups;
    return;
  }
  // (Not through row blocks all-gathered for the op: the split that
  // reaches `v` is not theirs.)
  if (Operation *def = v.getDefiningOp())
    for (OpOperand &use : def->getOpOperands())
      if (s.of(use.get()).getSplitDim() >= 0 && !s.rowGather.contains(&use))
        recordGroups(s, use.get(), groups);
}

/// The per-device type of `v` under `s`.
RankedTensorType localType(Value v, ShardingAttr s, ArrayRef<int64_t> mesh) {
  RankedTensorType t = tensorType(v);
  SmallVector<int64_t> shape(t.getShape());
  // A split dim the devices do not divide is zero-padded: ceil.
  for (int64_t d = 0; d < t.getRank(); ++d)
    for (int64_t axis : s.getDimAxes(d))
      shape[d] = (shape[d] + mesh[axis] - 1) / mesh[axis];
  return RankedTensorType::get(shape, t.getElementType());
}

/// Whether `op` computes on split or partial values under `s` (a use that
/// is all-reduced or all-gathered first is whole).
bool doesSplitWork(const Sweep &s, Operation *op) {
  for (OpOperand &use : op->getOpOperands())
    if (!s.of(use.get()).isReplicated() && !s.reduce.contains(&use) &&
        !s.rowGather.contains(&use))
      return true;
  return llvm::any_of(op->getResults(),
                      [&](Value r) { return !s.of(r).isReplicated(); });
}

// Step 4.
LogicalResult TensorParallel::rewrite(Sweep &s) {
  bool bad = false;
  MLIRContext *ctx = &getContext();
  IRRewriter b(ctx);
  auto axes = b.getDenseI64ArrayAttr({0});
  DenseMap<Value, Value> reduced, copied, scattered, rowGathered;
  for (func::FuncOp f : funcs) {
    SmallVector<Operation *> ops;
    for (Operation &op : f.getBody().getOps())
      ops.push_back(&op);
    for (Operation *op : ops) {
      bool splitWork = doesSplitWork(s, op);
      for (OpOperand &use : op->getOpOperands()) {
        Value v = use.get();
        if (s.scatter.contains(&use)) {
          // Sequence parallelism: the partial sum, reduce-scattered into
          // this device's block of rows (Megatron's reduce-scatter after a
          // row-parallel linear); adjoint: all-gather.
          Value &r = scattered[v];
          if (!r) {
            int64_t d = rowsDim(tensorType(v));
            SmallVector<int64_t> shape(tensorType(v).getShape());
            shape[d] /= mesh[0];
            b.setInsertionPointAfterValue(v);
            r = b.create<ReduceScatterOp>(
                v.getLoc(), RankedTensorType::get(shape, b.getF32Type()), v,
                axes, d);
            r.getDefiningOp()->setAttr(
                kShardingAttr, ShardingAttr::getSplit(ctx, shape.size(), d));
          }
          use.set(r);
          continue;
        }
        if (s.rowGather.contains(&use)) {
          // Row blocks all-gathered for an op that needs them whole (the
          // input of a column-parallel linear); adjoint: reduce-scatter of
          // the gradient, which is a term per device there -- so no
          // copy_to_region. Work that is replicated would give a gradient
          // that is whole on every device, which the reduce-scatter would
          // count T times.
          if (!splitWork) {
            op->emitOpError("takes whole rows gathered from sequence-parallel "
                            "blocks but does replicated work: its gradient "
                            "would be counted --tp times");
            bad = true;
          }
          Value &g = rowGathered[v];
          if (!g) {
            int64_t d = s.of(v).getSplitDim();
            SmallVector<int64_t> shape(tensorType(v).getShape());
            shape[d] *= mesh[0];
            b.setInsertionPointAfterValue(v);
            g = b.create<AllGatherOp>(
                v.getLoc(), RankedTensorType::get(shape, b.getF32Type()), v,
                axes, d);
          }
          use.set(g);
          continue;
        }
        if (s.gather.contains(&use)) {
          ShardingAttr sh = s.of(v);
          int64_t d = sh.getSplitDim();
          SmallVector<int64_t> shape(tensorType(v).getShape());
          shape[d] *= mesh[0];
          b.setInsertionPoint(op);
          Value g = b.create<AllGatherOp>(
              v.getLoc(), RankedTensorType::get(shape, b.getF32Type()), v,
              b.getDenseI64ArrayAttr(sh.getDimAxes(d)), d);
          if (int64_t n = s.valid.lookup(v)) {
            // Zero padding gathered (@predict's logits of a padded
            // vocabulary): keep the first n along d -- moved to the front,
            // a view of the leading n, moved back.
            int64_t rank = shape.size();
            SmallVector<int64_t> perm{d}, back;
            for (int64_t k = 0; k < rank; ++k)
              if (k != d)
                perm.push_back(k);
            back.assign(rank, 0);
            for (int64_t k = 0; k < rank; ++k)
              back[perm[k]] = k;
            auto permuted = [&](ArrayRef<int64_t> sh, ArrayRef<int64_t> p) {
              SmallVector<int64_t> out;
              for (int64_t k : p)
                out.push_back(sh[k]);
              return RankedTensorType::get(out, b.getF32Type());
            };
            RankedTensorType front = permuted(shape, perm);
            Value t = b.create<TransposeOp>(v.getLoc(), front, g,
                                            b.getDenseI64ArrayAttr(perm));
            SmallVector<int64_t> cut(front.getShape());
            cut[0] = n;
            Value kept = b.create<ViewOp>(
                v.getLoc(), RankedTensorType::get(cut, b.getF32Type()), t,
                b.getI64IntegerAttr(0));
            SmallVector<int64_t> full(shape);
            full[d] = n;
            g = b.create<TransposeOp>(
                v.getLoc(), RankedTensorType::get(full, b.getF32Type()), kept,
                b.getDenseI64ArrayAttr(back));
          }
          use.set(g);
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
      if (auto it = s.paddedOps.find(op); it != s.paddedOps.end())
        op->setAttr(kUnpaddedOperandsAttr, b.getDenseI64ArrayAttr(it->second));
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
        auto u = unpadded.find(p.getName());
        if (u != unpadded.end())
          p->setAttr(kUnpaddedAttr, b.getI64IntegerAttr(u->second));
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
  return failure(bad);
}

// Step 5: row blocks all-gathered into replicated work (a residual add whose
// other operand is whole, e.g. after a replicated embedding) would get a
// whole gradient on every device, which the gather's adjoint (reduce-scatter)
// would count T times. The reduce-scatters those blocks came from become
// all-reduces again. Returns whether anything changed.
bool TensorParallel::dropWholeRowsOnReplicatedWork(const Sweep &s) {
  bool changed = false;
  SmallVector<Value> work;
  for (func::FuncOp f : funcs)
    for (Operation &op : f.getBody().getOps())
      if (!doesSplitWork(s, &op))
        for (OpOperand &use : op.getOpOperands())
          if (s.rowGather.contains(&use))
            work.push_back(use.get());
  DenseSet<Value> seen;
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (!seen.insert(v).second)
      continue;
    Operation *def = v.getDefiningOp();
    if (!def)
      continue;
    for (OpOperand &use : def->getOpOperands()) {
      if (s.scatter.contains(&use))
        changed |= noScatter.insert(use.get()).second;
      else if (s.rows.contains(use.get()))
        work.push_back(use.get());
    }
  }
  return changed;
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
    if (p.getType().isDynamicDim(outDim))
      continue;
    // A dim the devices do not divide is tried zero-padded.
    int64_t n = p.getType().getDimSize(outDim);
    llvm::StringMap<ShardingAttr> saved = decisions;
    llvm::StringMap<int64_t> savedPad = unpadded;
    auto decide = [&] {
      decisions = saved;
      unpadded = savedPad;
      decisions[p.getName()] = ShardingAttr::getSplit(&getContext(), 2, outDim);
      if (n % size)
        unpadded[p.getName()] = n;
    };
    decide();
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
      decide();
      ok = settle(trial);
    }
    if (!ok) {
      for (Operation *op : added)
        preferGroups.erase(op);
      decisions = std::move(saved);
      unpadded = std::move(savedPad);
    }
  }
  noGatherIn = nullptr;
  if (!settle(s))
    return signalPassFailure();
  // Step 5. Blocks of one sequence's positions ask to split wpe by
  // positions; when another program cannot take that (@predict's single
  // sequence under a training batch of several), step 5 runs again without
  // new splits.
  if (sequenceParallel) {
    sp = true;
    llvm::StringMap<ShardingAttr> savedDecisions = decisions;
    llvm::StringMap<int64_t> savedPad = unpadded;
    auto run = [&] {
      do {
        if (!settle(s))
          return false;
      } while (dropWholeRowsOnReplicatedWork(s));
      return true;
    };
    if (!run()) {
      decisions = std::move(savedDecisions);
      unpadded = std::move(savedPad);
      noScatter.clear();
      spDecisions = false;
      if (!run()) {
        module.emitError("mega-tensor-parallel: sequence parallelism found "
                         "no consistent layout");
        return signalPassFailure();
      }
    }
  }
  // Step 4.
  if (failed(rewrite(s)))
    return signalPassFailure();
}

} // namespace

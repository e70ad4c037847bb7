//===- Autodiff.cpp - Reverse-mode differentiation of @train -------------===//
//
// `mega-autodiff{microbatches=N}` appends the backward pass to the training
// program and adds the gradient of every parameter into its persistent
// accumulator. The pass knows no op: each op's adjoint comes from its
// GradientOpInterface::buildGradient (lib/Dialect/Mega/MegaGradients.cpp).
//
// Algorithm:
//  1. Find `func.func @train` and the value %l of its `mega.output "loss"`.
//     Its body must be one straight-line block (mega-unroll has run) and not
//     yet differentiated (no mega.accumulate_grad).
//  2. Activity (forward sweep): a value is active when it is a `mega.param`
//     result or an f32 result of an op with an active operand. Only active
//     values receive gradients: nothing is computed for token ids, inputs,
//     masks or constants.
//  3. Seed: grad(%l) = mega.fill 1/N : tensor<f32>, N = microbatches. One
//     micro-step's loss is the mean over its tokens, so the sum of the N
//     accumulated gradients is the gradient of the global-batch mean.
//  4. Reverse sweep over the ops before the terminator, appending at the end
//     of the block. For an op with at least one result holding a gradient:
//     call buildGradient with one gradient per result (null where none); it
//     returns one per operand (null = none). Gradients of inactive operands
//     are dropped; one must have exactly its operand's type. A gradient
//     reaching a value that already has one is summed with mega.add (fan-out:
//     the residual stream; the tied wte, used by the embedding and by the
//     output matmul). An op without the interface whose result carries a
//     gradient is an error naming the op.
//  5. When the sweep reaches the first (in program order) `mega.param` of a
//     name, every use of every param op of that name has been visited: the
//     sum of their gradients is final and `mega.accumulate_grad "name", %g`
//     is emitted there, so each gradient dies as early as possible.
//     A parameter that does not reach the loss gets no accumulate_grad (its
//     accumulator stays zero) and a warning: almost always a model bug.
//  6. Erase the backward ops whose results ended up unused (gradients that a
//     rule built for an inactive operand).
// Pipeline stages (mega-pipeline-stages ran before): every op built for the
// adjoint of an op with `mega.stage` gets that stage, the seed the loss's,
// and step 5 sums and accumulates a parameter's gradient per stage (the tied
// wte has one `mega.param` per stage that reads it), so no backward op mixes
// two stages.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaInterfaces.h"
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/ScopeExit.h"

namespace mega {
#define GEN_PASS_DEF_MEGAAUTODIFF
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

bool isF32Tensor(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && t.getElementType().isF32();
}

/// The state of one reverse sweep over a straight-line block.
class ReverseSweep {
public:
  ReverseSweep(Block &body, Operation *terminator)
      : body(body), builder(terminator) {}

  /// Step 2.
  void markActive() {
    for (Operation &op : body.without_terminator()) {
      bool active =
          isa<ParamOp>(op) || llvm::any_of(op.getOperands(), [&](Value v) {
            return activeValues.count(v);
          });
      if (!active)
        continue;
      for (Value r : op.getResults())
        if (isF32Tensor(r))
          activeValues.insert(r);
    }
  }

  /// Adds `grad` to the gradient of `v` (step 4).
  void accumulate(Value v, Value grad, Location loc) {
    Value &slot = grads[v];
    slot = slot ? Value(builder.create<AddOp>(loc, slot, grad)) : grad;
  }

  /// Steps 3-5. Returns failure after emitting a diagnostic.
  LogicalResult run(Value loss, int64_t microbatches) {
    // Parameter ops per name, and how many are still to be visited.
    llvm::MapVector<StringRef, SmallVector<ParamOp>> paramsByName;
    for (ParamOp p : body.getOps<ParamOp>())
      paramsByName[p.getName()].push_back(p);
    llvm::StringMap<unsigned> unvisited;
    for (auto &[name, ops] : paramsByName)
      unvisited[name] = ops.size();

    if (!activeValues.count(loss))
      return emitError(loss.getLoc())
             << "the loss does not depend on any parameter";
    Location seedLoc = loss.getLoc();
    auto lossType = cast<RankedTensorType>(loss.getType());
    Value seed = builder.create<FillOp>(
        seedLoc, lossType, builder.getF64FloatAttr(1.0 / double(microbatches)));
    grads[loss] = seed;
    firstBackwardOp = seed.getDefiningOp();
    if (Operation *def = loss.getDefiningOp())
      copyStage(def, firstBackwardOp);

    SmallVector<Operation *> forward;
    for (Operation &op : body.without_terminator())
      if (&op != firstBackwardOp)
        forward.push_back(&op);

    for (Operation *op : llvm::reverse(forward)) {
      if (auto param = dyn_cast<ParamOp>(op)) {
        if (--unvisited[param.getName()] == 0)
          finishParam(param.getName(), paramsByName[param.getName()]);
        continue;
      }
      SmallVector<Value> resultGrads;
      bool any = false;
      for (Value r : op->getResults()) {
        resultGrads.push_back(grads.lookup(r));
        any |= bool(resultGrads.back());
      }
      if (!any)
        continue;
      auto rule = dyn_cast<GradientOpInterface>(op);
      if (!rule)
        return op->emitOpError()
               << "has no gradient rule (GradientOpInterface), but its result "
                  "reaches the loss";
      SmallVector<Value> operandGrads;
      builder.setInsertionPoint(body.getTerminator());
      Operation *before = body.getTerminator()->getPrevNode();
      auto stageNewOps = llvm::make_scope_exit([&] {
        for (Operation *n = before->getNextNode(); n != body.getTerminator();
             n = n->getNextNode())
          copyStage(op, n);
      });
      if (failed(rule.buildGradient(builder, resultGrads, operandGrads)))
        return failure();
      if (operandGrads.size() != op->getNumOperands())
        return op->emitOpError()
               << "gradient rule returned " << operandGrads.size()
               << " gradients for " << op->getNumOperands() << " operands";
      for (auto [i, operand, grad] :
           llvm::enumerate(op->getOperands(), operandGrads)) {
        if (!grad || !activeValues.count(operand))
          continue;
        if (grad.getType() != operand.getType())
          return op->emitOpError() << "gradient rule gave operand #" << i
                                   << " of type " << operand.getType()
                                   << " a gradient of type " << grad.getType();
        accumulate(operand, grad, op->getLoc());
      }
    }
    return success();
  }

  /// The pipeline stage of `from` (if any) on `to`, unless it has one.
  static void copyStage(Operation *from, Operation *to) {
    if (auto s = from->getAttrOfType<IntegerAttr>("mega.stage"))
      if (!to->hasAttr("mega.stage"))
        to->setAttr("mega.stage", s);
  }

  /// Step 5 for one parameter name: one sum and accumulation per pipeline
  /// stage (all in one without stages).
  void finishParam(StringRef name, ArrayRef<ParamOp> ops) {
    llvm::MapVector<Attribute, Value> totals;
    ParamOp first = ops.front();
    Location loc = first.getLoc();
    for (ParamOp p : ops) {
      Value g = grads.lookup(p.getResult());
      if (!g)
        continue;
      Value &total = totals[p->getAttr("mega.stage")];
      if (total) {
        total = builder.create<AddOp>(loc, total, g);
        copyStage(p, total.getDefiningOp());
      } else {
        total = g;
      }
    }
    if (totals.empty()) {
      first.emitWarning() << "parameter '" << name
                          << "' does not reach the loss; it gets no gradient";
      return;
    }
    for (auto &[stage, total] : totals) {
      auto acc = builder.create<AccumulateGradOp>(loc, name, total);
      if (stage)
        acc->setAttr("mega.stage", stage);
    }
  }

  /// Step 6: erase the unused backward ops, last first so chains die.
  void eraseDeadBackwardOps() {
    SmallVector<Operation *> backward;
    bool seen = false;
    for (Operation &op : body.without_terminator()) {
      seen |= &op == firstBackwardOp;
      if (seen)
        backward.push_back(&op);
    }
    for (Operation *op : llvm::reverse(backward))
      if (isOpTriviallyDead(op))
        op->erase();
  }

private:
  Block &body;
  OpBuilder builder;
  llvm::DenseSet<Value> activeValues;
  llvm::DenseMap<Value, Value> grads;
  Operation *firstBackwardOp = nullptr;
};

struct MegaAutodiff : mega::impl::MegaAutodiffBase<MegaAutodiff> {
  using MegaAutodiffBase::MegaAutodiffBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (microbatches < 1) {
      module.emitError() << "mega-autodiff: microbatches must be >= 1, got "
                         << int64_t(microbatches);
      return signalPassFailure();
    }
    // Step 1.
    auto train = module.lookupSymbol<func::FuncOp>("train");
    if (!train) {
      module.emitError("mega-autodiff: the module has no func.func @train "
                       "(run mega-make-programs first)");
      return signalPassFailure();
    }
    if (!train.getBody().hasOneBlock()) {
      train.emitOpError("must have a single block to be differentiated");
      return signalPassFailure();
    }
    Block &body = train.getBody().front();
    Value loss;
    for (Operation &op : body) {
      if (op.getNumRegions() != 0) {
        op.emitOpError("has regions: run mega-unroll before mega-autodiff");
        return signalPassFailure();
      }
      if (isa<AccumulateGradOp>(op)) {
        op.emitOpError("@train is already differentiated");
        return signalPassFailure();
      }
      auto out = dyn_cast<OutputOp>(op);
      if (!out || out.getName() != "loss")
        continue;
      if (loss) {
        out.emitOpError("second \"loss\" output in @train");
        return signalPassFailure();
      }
      loss = out.getValue();
    }
    if (!loss) {
      train.emitOpError("has no mega.output \"loss\" to differentiate");
      return signalPassFailure();
    }
    auto lossType = dyn_cast<RankedTensorType>(loss.getType());
    if (!lossType || lossType.getRank() != 0 ||
        !lossType.getElementType().isF32()) {
      emitError(loss.getLoc())
          << "the loss must be tensor<f32>, got " << loss.getType();
      return signalPassFailure();
    }

    ReverseSweep sweep(body, body.getTerminator());
    sweep.markActive();
    if (failed(sweep.run(loss, microbatches)))
      return signalPassFailure();
    sweep.eraseDeadBackwardOps();
  }
};

} // namespace

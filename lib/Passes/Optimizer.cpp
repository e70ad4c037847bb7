//===- Optimizer.cpp - The @optimizer program ----------------------------===//
//
// `mega-optimizer{optimizer=adam|sgd beta1 beta2 eps weight-decay clip-grad}`
// creates `func.func @optimizer`, the program the runtime runs once per
// global batch, after the micro-steps of @train have accumulated gradients.
//
// Algorithm:
//  1. Check the options (optimizer is adam or sgd; 0 <= beta < 1; eps > 0;
//     weight-decay >= 0) and that the module has a differentiated @train and
//     no @optimizer yet.
//  2. The parameters to update are those @train accumulates a gradient for
//     (mega.accumulate_grad), in the order of their first mega.param; their
//     types come from those ops. A parameter without a gradient is left alone,
//     as torch.optim leaves a parameter whose .grad is None.
//  3. Build @optimizer: inputs `lr` and `step` (mega.input, tensor<f32>);
//     each gradient read with `mega.state "name" {role = "grad"}`; one
//     `mega.grad_norm` over all of them {max_norm = clip-grad} giving the
//     global norm (output "grad_norm", before clipping) and the clip
//     coefficient (with tensor parallelism `mega.sharded_grads` lists the
//     operands whose parameter has a split `mega.sharding`: their squares
//     are summed over the tensor group, the others counted once); per
//     parameter `mega.adamw` or `mega.sgd` with the
//     coefficient and weight decay = weight-decay for rank >= 2, 0 otherwise
//     (biases and LayerNorm parameters are not decayed); then `mega.zero_grad`
//     per parameter, after every update has read its gradient.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringSet.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace mega {
#define GEN_PASS_DEF_MEGAOPTIMIZER
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// `v` as a user typed it (1, 0.95, 1e-08), for diagnostics.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

struct ParamToUpdate {
  StringRef name;
  RankedTensorType type;
  bool sharded = false; ///< a tensor-parallel shard (mega.sharding)
};

struct MegaOptimizer : mega::impl::MegaOptimizerBase<MegaOptimizer> {
  using MegaOptimizerBase::MegaOptimizerBase;

  /// Step 1 (options). Emits the error and returns failure.
  LogicalResult checkOptions(ModuleOp module) {
    auto fail = [&]() { return module.emitError() << "mega-optimizer: "; };
    if (optimizer != "adam" && optimizer != "sgd")
      return fail() << "optimizer must be adam or sgd, got '" << optimizer
                    << "'";
    if (!(beta1 >= 0.0 && beta1 < 1.0))
      return fail() << "beta1 must be in [0, 1), got " << num(beta1);
    if (!(beta2 >= 0.0 && beta2 < 1.0))
      return fail() << "beta2 must be in [0, 1), got " << num(beta2);
    if (!(eps > 0.0))
      return fail() << "eps must be > 0, got " << num(eps);
    if (!(weightDecay >= 0.0))
      return fail() << "weight-decay must be >= 0, got " << num(weightDecay);
    if (std::isnan(clipGrad))
      return fail() << "clip-grad must be a number";
    return success();
  }

  /// Step 2.
  FailureOr<SmallVector<ParamToUpdate>> collectParams(func::FuncOp train) {
    llvm::StringSet<> withGrad;
    train.walk([&](AccumulateGradOp acc) { withGrad.insert(acc.getName()); });
    if (withGrad.empty()) {
      train.emitOpError("accumulates no gradient: run mega-autodiff before "
                        "mega-optimizer");
      return failure();
    }
    llvm::MapVector<StringRef, RankedTensorType> params;
    llvm::StringSet<> sharded;
    WalkResult walk = train.walk([&](ParamOp p) {
      if (!withGrad.contains(p.getName()) || params.count(p.getName()))
        return WalkResult::advance();
      auto type = cast<RankedTensorType>(p.getType());
      if (!type.hasStaticShape()) {
        p.emitOpError("needs a static shape for the optimizer");
        return WalkResult::interrupt();
      }
      params.insert({p.getName(), type});
      if (auto sh = p->getAttrOfType<ShardingAttr>("mega.sharding");
          sh && !sh.isReplicated())
        sharded.insert(p.getName());
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();
    SmallVector<ParamToUpdate> result;
    for (auto &[name, type] : params)
      result.push_back({name, type, sharded.contains(name)});
    return result;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (failed(checkOptions(module)))
      return signalPassFailure();
    auto train = module.lookupSymbol<func::FuncOp>("train");
    if (!train) {
      module.emitError("mega-optimizer: the module has no func.func @train");
      return signalPassFailure();
    }
    if (Operation *old = module.lookupSymbol("optimizer")) {
      old->emitOpError("mega-optimizer: @optimizer already exists");
      return signalPassFailure();
    }
    FailureOr<SmallVector<ParamToUpdate>> params = collectParams(train);
    if (failed(params))
      return signalPassFailure();

    // Step 3.
    MLIRContext *ctx = module.getContext();
    Location loc = NameLoc::get(StringAttr::get(ctx, "optimizer"));
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    auto func =
        b.create<func::FuncOp>(loc, "optimizer", b.getFunctionType({}, {}));
    b.setInsertionPointToStart(func.addEntryBlock());

    auto scalar = RankedTensorType::get({}, b.getF32Type());
    auto input = [&](StringRef name) -> Value {
      return b.create<InputOp>(loc, scalar, b.getStringAttr(name),
                               b.getArrayAttr({}),
                               TypeAttr::get(b.getF32Type()));
    };
    Value lr = input("lr");
    Value step = input("step");

    SmallVector<Value> grads;
    for (const ParamToUpdate &p : *params)
      grads.push_back(b.create<StateOp>(loc, p.type, p.name, "grad"));
    auto norm = b.create<GradNormOp>(loc, grads, b.getF64FloatAttr(clipGrad));
    // Tensor parallelism: which gradients are shards (their squares are
    // summed over the tensor group; the replicated ones counted once).
    SmallVector<int64_t> sharded;
    for (auto [k, p] : llvm::enumerate(*params))
      if (p.sharded)
        sharded.push_back(int64_t(k));
    if (!sharded.empty())
      norm->setAttr("mega.sharded_grads", b.getDenseI64ArrayAttr(sharded));
    b.create<OutputOp>(loc, "grad_norm", norm.getNorm());

    for (auto [p, g] : llvm::zip_equal(*params, grads)) {
      double decay = p.type.getRank() >= 2 ? double(weightDecay) : 0.0;
      if (optimizer == "adam")
        b.create<AdamWOp>(loc, b.getStringAttr(p.name), g, lr, step,
                          norm.getCoef(), b.getF64FloatAttr(beta1),
                          b.getF64FloatAttr(beta2), b.getF64FloatAttr(eps),
                          b.getF64FloatAttr(decay));
      else
        b.create<SgdOp>(loc, b.getStringAttr(p.name), g, lr, norm.getCoef(),
                        b.getF64FloatAttr(decay));
    }
    for (const ParamToUpdate &p : *params)
      b.create<ZeroGradOp>(loc, p.name);
    b.create<func::ReturnOp>(loc);
  }
};

} // namespace

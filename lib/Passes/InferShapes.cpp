//===- InferShapes.cpp - Re-infer result types in program order ------------===//
//
// Algorithm (per function, ops in pre-order, so operands are refined before
// their users and a region op before its body):
//  1. A region op whose entry block has one argument per operand (the body
//     of mega.repeat, mega.fused) gives those arguments its operands' types.
//  2. An op implementing InferTypeOpInterface gets the result types its rule
//     gives for its current operands. A failing rule, or a type that
//     contradicts the existing one where both are static, is an error.
//  3. Other ops (mega.reshape, mega.fill, mega.state: their type is their
//     shape argument) keep their types.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGAINFERSHAPES
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {
struct MegaInferShapes : mega::impl::MegaInferShapesBase<MegaInferShapes> {
  void runOnOperation() override {
    WalkResult r = getOperation().walk<WalkOrder::PreOrder>([](Operation *op) {
      // Step 1.
      for (Region &region : op->getRegions()) {
        if (region.empty() || isa<func::FuncOp>(op))
          continue;
        Block &entry = region.front();
        if (entry.getNumArguments() == op->getNumOperands())
          for (auto [arg, operand] :
               llvm::zip(entry.getArguments(), op->getOperands()))
            arg.setType(operand.getType());
      }
      // Step 2.
      auto infer = dyn_cast<InferTypeOpInterface>(op);
      if (!infer)
        return WalkResult::advance();
      SmallVector<Type> types;
      if (failed(infer.inferReturnTypes(
              op->getContext(), op->getLoc(), op->getOperands(),
              op->getRawDictionaryAttrs(), op->getPropertiesStorage(),
              op->getRegions(), types))) {
        op->emitOpError("mega-infer-shapes: cannot infer the result types");
        return WalkResult::interrupt();
      }
      if (!areCompatibleTypes(types, op->getResultTypes())) {
        InFlightDiagnostic d =
            op->emitOpError("mega-infer-shapes: inferred result types (");
        llvm::interleaveComma(types, d);
        d << ") contradict the declared ones (";
        llvm::interleaveComma(op->getResultTypes(), d);
        d << ")";
        return WalkResult::interrupt();
      }
      for (auto [res, t] : llvm::zip(op->getResults(), types))
        res.setType(t);
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace

//===- mega-opt.cpp - mlir-opt with the mega dialect and passes -----------===//
//
// Every dialect and pass megac uses is registered, so each pass runs alone on
// a file (the lit tests) and pipelines can be replayed by hand:
//   mega-opt models/gpt.mlir --mega-make-programs --mega-specialize=... ...
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mega::MegaDialect, mlir::func::FuncDialect>();
  mega::registerMegaPasses();
  // canonicalize, cse, symbol-dce, inline, ... (the generic MLIR passes).
  mlir::registerTransformsPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "mega optimizer driver: the mega dialect and its passes\n",
      registry));
}

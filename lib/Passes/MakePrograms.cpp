//===- MakePrograms.cpp - @train, @eval and @predict from the model --------===//
//
// Algorithm:
//  1. Find the model function: the module's only function (an error lists
//     them when there are several; a module that already has @train is an
//     error too).
//  2. For each program (train: loss; eval: loss; predict: logits with
//     mega.overrides = {batch = 1} when the model has a `batch`
//     hyper-parameter): clone the model function under the
//     program's name and erase every mega.output not kept (a program whose
//     output the model lacks is skipped for predict, an error for train).
//  3. Erase ops that became dead (params, inputs and pure ops whose results
//     are unused), innermost first, until nothing changes.
//  4. Erase the model function.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mega {
#define GEN_PASS_DEF_MEGAMAKEPROGRAMS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {
struct Program {
  StringRef name;
  StringRef output;
  bool required;
  bool singleBatch;
};
constexpr Program kPrograms[] = {
    {"train", "loss", true, false},
    {"eval", "loss", true, false},
    {"predict", "logits", false, true},
};

/// Step 3: erase trivially dead ops until a fixed point.
void eraseDeadOps(func::FuncOp f) {
  bool changed = true;
  while (changed) {
    changed = false;
    SmallVector<Operation *> dead;
    f.walk<WalkOrder::PostOrder>([&](Operation *op) {
      if (op != f && isOpTriviallyDead(op))
        dead.push_back(op);
    });
    for (Operation *op : dead) {
      // An op may have become live-less only through one erased before it;
      // re-check so we never erase an op that still has uses.
      if (op->use_empty() || isOpTriviallyDead(op)) {
        op->erase();
        changed = true;
      }
    }
  }
}

struct MegaMakePrograms
    : mega::impl::MegaMakeProgramsBase<MegaMakePrograms> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Step 1.
    SmallVector<func::FuncOp> funcs(module.getOps<func::FuncOp>());
    if (funcs.size() != 1) {
      InFlightDiagnostic d = module.emitError()
                             << "mega-make-programs: expected one model "
                                "function, found "
                             << funcs.size();
      for (func::FuncOp f : funcs)
        d.attachNote(f.getLoc()) << "function @" << f.getSymName();
      return signalPassFailure();
    }
    func::FuncOp model = funcs.front();
    for (const Program &p : kPrograms)
      if (model.getSymName() == p.name) {
        model.emitError() << "mega-make-programs: the module already has "
                             "program @"
                          << p.name;
        return signalPassFailure();
      }

    // Step 2.
    OpBuilder b(module.getContext());
    b.setInsertionPoint(model);
    for (const Program &p : kPrograms) {
      bool hasOutput = false;
      model.walk([&](OutputOp out) { hasOutput |= out.getName() == p.output; });
      if (!hasOutput) {
        if (!p.required)
          continue;
        model.emitError() << "mega-make-programs: the model has no output \""
                          << p.output << "\" (needed by @" << p.name << ")";
        return signalPassFailure();
      }
      auto f = cast<func::FuncOp>(b.clone(*model));
      f.setSymName(p.name);
      auto hparams = module->getAttrOfType<DictionaryAttr>(kHParamsAttr);
      if (p.singleBatch && hparams && hparams.get("batch"))
        f->setAttr(kOverridesAttr,
                   b.getDictionaryAttr(b.getNamedAttr(
                       "batch", b.getI64IntegerAttr(1))));
      SmallVector<OutputOp> drop;
      f.walk([&](OutputOp out) {
        if (out.getName() != p.output)
          drop.push_back(out);
      });
      for (OutputOp out : drop)
        out.erase();
      // Step 3.
      eraseDeadOps(f);
    }
    // Step 4.
    model.erase();
  }
};
} // namespace

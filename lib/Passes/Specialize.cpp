//===- Specialize.cpp - Fix the hyper-parameters ---------------------------===//
//
// Algorithm:
//  1. Read the defaults, the module attribute mega.hparams (name -> i64).
//  2. Apply each `set` entry "name=value": the name must be a hyper-parameter
//     of the model (else an error lists the model's names), the value a
//     positive integer. Store the result back in mega.hparams.
//  3. For each function, add its mega.overrides (e.g. batch = 1 in
//     @predict) and resolve every size of every SizedOpInterface op against
//     them (unknown names and non-positive sizes are errors at the op).
//  4. Give the ops without operands (mega.param, mega.input) their now
//     static types; mega-infer-shapes propagates them.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/StringExtras.h"

namespace mega {
#define GEN_PASS_DEF_MEGASPECIALIZE
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {
/// "a, b, c" of the names in `dict`.
std::string namesOf(DictionaryAttr dict) {
  if (!dict || dict.empty())
    return "(none)";
  std::string s;
  llvm::raw_string_ostream os(s);
  llvm::interleaveComma(dict, os,
                        [&](NamedAttribute a) { os << a.getName().getValue(); });
  return s;
}

/// Step 2 and 3: `base` with `name` set to `value`, checked.
FailureOr<NamedAttrList> applyOverride(NamedAttrList base, StringRef name,
                                       StringRef valueText, Location loc,
                                       StringRef what) {
  MLIRContext *ctx = loc.getContext();
  if (!base.get(name))
    return emitError(loc) << "unknown hyper-parameter '" << name << "' in "
                          << what << "; the model has: "
                          << namesOf(base.getDictionary(ctx));
  int64_t value;
  if (valueText.trim().getAsInteger(10, value))
    return emitError(loc) << "hyper-parameter " << name << "=" << valueText
                          << " in " << what << " is not an integer";
  if (value <= 0)
    return emitError(loc) << "hyper-parameter " << name << "=" << value
                          << " in " << what << " must be positive";
  base.set(name, IntegerAttr::get(IntegerType::get(ctx, 64), value));
  return base;
}

struct MegaSpecialize : mega::impl::MegaSpecializeBase<MegaSpecialize> {
  using MegaSpecializeBase::MegaSpecializeBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = module.getContext();
    Location loc = module.getLoc();
    // Step 1.
    auto defaults = module->getAttrOfType<DictionaryAttr>(kHParamsAttr);
    if (!defaults && module->hasAttr(kHParamsAttr)) {
      module.emitError() << kHParamsAttr << " must be a dictionary";
      return signalPassFailure();
    }
    NamedAttrList hparams(defaults ? defaults : DictionaryAttr::get(ctx));
    for (NamedAttribute a : hparams)
      if (!isa<IntegerAttr>(a.getValue())) {
        module.emitError() << "hyper-parameter '" << a.getName().getValue()
                           << "' must be an integer, got " << a.getValue();
        return signalPassFailure();
      }

    // Step 2.
    for (const std::string &entry : set) {
      auto [name, value] = StringRef(entry).split('=');
      if (value.empty() && !StringRef(entry).contains('=')) {
        emitError(loc) << "mega-specialize: expected name=value in set, got '"
                       << entry << "'";
        return signalPassFailure();
      }
      FailureOr<NamedAttrList> next =
          applyOverride(hparams, name.trim(), value, loc, "set");
      if (failed(next))
        return signalPassFailure();
      hparams = *next;
    }
    DictionaryAttr global = hparams.getDictionary(ctx);
    module->setAttr(kHParamsAttr, global);

    // Step 3 and 4.
    for (func::FuncOp f : module.getOps<func::FuncOp>()) {
      NamedAttrList local(global);
      if (auto overrides = f->getAttrOfType<DictionaryAttr>(kOverridesAttr))
        for (NamedAttribute o : overrides) {
          auto v = dyn_cast<IntegerAttr>(o.getValue());
          std::string text = v ? std::to_string(v.getInt()) : "?";
          FailureOr<NamedAttrList> next = applyOverride(
              local, o.getName().getValue(), text, f.getLoc(),
              (Twine(kOverridesAttr) + " of @" + f.getSymName()).str());
          if (failed(next))
            return signalPassFailure();
          local = *next;
        }
      DictionaryAttr env = local.getDictionary(ctx);
      WalkResult r = f.walk([&](SizedOpInterface op) {
        Location opLoc = op->getLoc();
        if (failed(op.resolveSizes([&](Attribute size) {
              return resolveSize(size, env, opLoc);
            })))
          return WalkResult::interrupt();
        // Step 4.
        auto infer = dyn_cast<InferTypeOpInterface>(op.getOperation());
        if (infer && op->getNumOperands() == 0) {
          SmallVector<Type> types;
          if (failed(infer.inferReturnTypes(
                  ctx, opLoc, op->getOperands(), op->getRawDictionaryAttrs(),
                  op->getPropertiesStorage(), op->getRegions(), types)))
            return WalkResult::interrupt();
          for (auto [res, t] : llvm::zip(op->getResults(), types))
            res.setType(t);
        }
        return WalkResult::advance();
      });
      if (r.wasInterrupted())
        return signalPassFailure();
    }
  }
};
} // namespace

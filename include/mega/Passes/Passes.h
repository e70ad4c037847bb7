//===- Passes.h - The passes of megac's pipeline ----------------*- C++ -*-===//
//
// Declares mega::createMega<Name>() for every pass of Passes.td,
// mega::registerMegaPasses() (all of them, for mega-opt and megac's
// --pass-pipeline), and the option structs Mega<Name>Options.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PASSES_PASSES_H
#define MEGA_PASSES_PASSES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace mega {

#define GEN_PASS_DECL
#include "mega/Passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "mega/Passes/Passes.h.inc"

} // namespace mega

#endif // MEGA_PASSES_PASSES_H

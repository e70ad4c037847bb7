//===- Ports.h - The pipeline ports of a module -----------------*- C++ -*-===//
//
// mega-pipeline-split hands a value from one program to another through a
// port `pipe.N`: one mega.output in the producer, a mega.input of the same
// name in each reader. The passes that rewrite ports (mega-port-sources,
// mega-narrow-ports) find them here.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PASSES_PORTS_H
#define MEGA_PASSES_PORTS_H

#include "mega/Dialect/Mega/MegaOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/MapVector.h"

namespace mega {

struct Port {
  OutputOp out;                   ///< the producer's output (null: none)
  llvm::SmallVector<InputOp> ins; ///< the readers' inputs
  bool ok = true;                 ///< false: more than one output
};

/// An op that only moves a value's elements (reshape, transpose, split):
/// what mega-port-sources lets a reader redo and mega-narrow-ports looks
/// through to the casts that round the result.
inline bool isLayout(mlir::Operation *op) {
  return llvm::isa<ReshapeOp, TransposeOp, SplitOp>(op);
}

/// The ports of `module` by name, in the order first seen.
inline llvm::MapVector<llvm::StringRef, Port>
collectPorts(mlir::ModuleOp module) {
  llvm::MapVector<llvm::StringRef, Port> ports;
  module.walk([&](mlir::Operation *op) {
    if (auto o = llvm::dyn_cast<OutputOp>(op)) {
      if (!o.getName().starts_with("pipe."))
        return;
      Port &p = ports[o.getName()];
      p.ok = p.ok && !p.out;
      p.out = o;
    } else if (auto i = llvm::dyn_cast<InputOp>(op)) {
      if (i.getName().starts_with("pipe."))
        ports[i.getName()].ins.push_back(i);
    }
  });
  return ports;
}

} // namespace mega

#endif // MEGA_PASSES_PORTS_H

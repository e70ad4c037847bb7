//===- MegaOps.h - Ops of the mega dialect ----------------------*- C++ -*-===//
#ifndef MEGA_DIALECT_MEGA_MEGAOPS_H
#define MEGA_DIALECT_MEGA_MEGAOPS_H

#include "mega/Dialect/Mega/MegaDialect.h"
#include "mega/Dialect/Mega/MegaInterfaces.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "mega/Dialect/Mega/MegaOps.h.inc"

namespace mega {
/// On a `mega.state` of role grad: bytes its buffer holds past the tensor,
/// which views of it may reach (state_c4, view_c2; the plan's
/// Persistent::tailBytes).
inline constexpr llvm::StringLiteral kTailBytesAttr = "mega.tail_bytes";
} // namespace mega

#endif // MEGA_DIALECT_MEGA_MEGAOPS_H

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

#endif // MEGA_DIALECT_MEGA_MEGAOPS_H

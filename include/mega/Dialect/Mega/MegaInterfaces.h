//===- MegaInterfaces.h - Op interfaces of the mega dialect -----*- C++ -*-===//
#ifndef MEGA_DIALECT_MEGA_MEGAINTERFACES_H
#define MEGA_DIALECT_MEGA_MEGAINTERFACES_H

#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/PatternMatch.h"

#include "mega/Dialect/Mega/MegaInterfaces.h.inc"

#endif // MEGA_DIALECT_MEGA_MEGAINTERFACES_H

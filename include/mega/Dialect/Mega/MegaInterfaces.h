//===- MegaInterfaces.h - Op interfaces of the mega dialect -----*- C++ -*-===//
#ifndef MEGA_DIALECT_MEGA_MEGAINTERFACES_H
#define MEGA_DIALECT_MEGA_MEGAINTERFACES_H

#include "mega/Dialect/Mega/MegaDialect.h"

#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/PatternMatch.h"

namespace mega {
/// What ShardingOpInterface::getShardingRule answers: the sharding each
/// operand must have and the sharding of each result. `groups` > 1 asks that
/// the split dimension of operand 0 be stored as `groups` equal blocks each
/// split over the mesh (the fused q|k|v columns, re-ordered per head).
struct ShardingRule {
  /// Input: the mesh shape (axis sizes), set by the caller.
  llvm::ArrayRef<int64_t> mesh;
  /// Input: where the op could answer either a plain split or a `groups`
  /// one (a reshape of [3*nh*hd] when T divides 3), answer `groups`.
  bool preferGroups = false;
  /// Output: the op had that choice (the caller may retry preferring it).
  bool ambiguous = false;
  llvm::SmallVector<ShardingAttr> operands;
  llvm::SmallVector<ShardingAttr> results;
  int64_t groups = 1;
  /// Input: per operand, the true size of its split dimension when the
  /// tensor is zero-padded to a multiple of the devices (a vocabulary that
  /// T does not divide), else 0.
  llvm::SmallVector<int64_t> valid;
  /// Output: the rule knows what the padding means for this op (padded
  /// entries never reach a result, or reach it only in padded entries);
  /// without it an op cannot take a padded operand.
  bool paddingHandled = false;
  /// Output: per result, the true size of its split dimension when it is
  /// padded, else 0 (empty: none).
  llvm::SmallVector<int64_t> resultValid;
};
} // namespace mega

#include "mega/Dialect/Mega/MegaInterfaces.h.inc"

#endif // MEGA_DIALECT_MEGA_MEGAINTERFACES_H

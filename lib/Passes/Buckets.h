//===- Buckets.h - One all-reduce for many gradients ------------*- C++ -*-===//
//
// Megatron sums many small gradients with one collective: they are copied
// into one flat buffer, reduced together and read back in place.
// mega-data-parallel (over the data axis) and mega-tensor-grad-bucket (over
// the tensor axis) build that bucket here.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PASSES_BUCKETS_H
#define MEGA_PASSES_BUCKETS_H

#include "mlir/IR/Builders.h"

namespace mega {

/// Sums `values` (f32, static shapes) over mesh `axis` with one collective,
/// built at `b`'s insertion point: each value is flattened (`mega.reshape`
/// to 1-D; none for rank 1), they are concatenated (`mega.concat`; none for
/// one value), one `mega.all_reduce` sums the bucket, and a `mega.view` of
/// each value's part (at its byte offset, with its type) replaces all of its
/// other uses.
void allReduceBucket(mlir::OpBuilder &b, mlir::Location loc,
                     llvm::ArrayRef<mlir::Value> values, int64_t axis);

} // namespace mega

#endif // MEGA_PASSES_BUCKETS_H

//===- MegaSizes.cpp - Sizes given by hyper-parameter name -----------------===//
//
// SizedOpInterface: the ops whose sizes may name a hyper-parameter replace
// them by integers when mega-specialize resolves them.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

using namespace mlir;
using namespace mega;

using Resolver = llvm::function_ref<FailureOr<int64_t>(Attribute)>;

static FailureOr<ArrayAttr> resolveDims(ArrayAttr dims, Resolver resolve) {
  Builder b(dims.getContext());
  SmallVector<Attribute> out;
  for (Attribute d : dims) {
    FailureOr<int64_t> v = resolve(d);
    if (failed(v))
      return failure();
    out.push_back(b.getI64IntegerAttr(*v));
  }
  return b.getArrayAttr(out);
}

LogicalResult ParamOp::resolveSizes(Resolver resolve) {
  FailureOr<ArrayAttr> dims = resolveDims(getDims(), resolve);
  if (failed(dims))
    return failure();
  setDimsAttr(*dims);
  return success();
}

LogicalResult InputOp::resolveSizes(Resolver resolve) {
  FailureOr<ArrayAttr> dims = resolveDims(getDims(), resolve);
  if (failed(dims))
    return failure();
  setDimsAttr(*dims);
  return success();
}

LogicalResult AttentionOp::resolveSizes(Resolver resolve) {
  FailureOr<int64_t> heads = resolve(getHeads());
  if (failed(heads))
    return failure();
  setHeadsAttr(Builder(getContext()).getI64IntegerAttr(*heads));
  return success();
}

LogicalResult RepeatOp::resolveSizes(Resolver resolve) {
  FailureOr<int64_t> count = resolve(getCount());
  if (failed(count))
    return failure();
  setCountAttr(Builder(getContext()).getI64IntegerAttr(*count));
  return success();
}

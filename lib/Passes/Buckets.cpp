//===- Buckets.cpp - One all-reduce for many gradients --------------------===//
#include "Buckets.h"

#include "mega/Dialect/Mega/MegaOps.h"

#include "llvm/ADT/SmallPtrSet.h"

using namespace mlir;

void mega::allReduceBucket(OpBuilder &b, Location loc, ArrayRef<Value> values,
                           int64_t axis) {
  Type f32 = b.getF32Type();
  SmallVector<Value> flat;
  llvm::SmallPtrSet<Operation *, 8> packing;
  int64_t total = 0;
  for (Value v : values) {
    auto type = cast<RankedTensorType>(v.getType());
    int64_t n = type.getNumElements();
    total += n;
    if (type.getRank() == 1) {
      flat.push_back(v);
      continue;
    }
    auto r = b.create<ReshapeOp>(loc, RankedTensorType::get({n}, f32), v);
    packing.insert(r);
    flat.push_back(r);
  }
  Value packed = flat.front();
  if (flat.size() > 1) {
    auto c = b.create<ConcatOp>(loc, RankedTensorType::get({total}, f32), flat,
                                b.getI64IntegerAttr(0));
    packing.insert(c);
    packed = c;
  }
  auto reduced = b.create<AllReduceOp>(loc, packed.getType(), packed,
                                       b.getDenseI64ArrayAttr({axis}),
                                       b.getStringAttr("sum"));
  packing.insert(reduced);
  int64_t offset = 0;
  for (Value v : values) {
    Value part = b.create<ViewOp>(loc, v.getType(), reduced.getResult(),
                                  b.getI64IntegerAttr(offset * 4));
    offset += cast<RankedTensorType>(v.getType()).getNumElements();
    v.replaceUsesWithIf(part, [&](OpOperand &use) {
      return !packing.contains(use.getOwner());
    });
  }
}

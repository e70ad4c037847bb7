//===- Unroll.cpp - mega.repeat -> count copies of its body ----------------===//
//
// Algorithm (innermost mega.repeat first):
//  1. The count must be an integer (run mega-specialize first).
//  2. For i = 0 .. count-1, clone the body's ops before the repeat, mapping
//     the block argument to the value carried so far (init first); the
//     yielded value becomes the new carried value.
//  3. In copy i, every mega.param named N is renamed `prefix.{i}.N`; a
//     `scaled_init` param gets std / sqrt(2 * count) and loses the flag.
//  4. The repeat's result is replaced by the last carried value, and the
//     repeat erased.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/IR/IRMapping.h"

#include <cmath>

namespace mega {
#define GEN_PASS_DEF_MEGAUNROLL
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {
LogicalResult unroll(RepeatOp repeat) {
  // Step 1.
  auto countAttr = dyn_cast<IntegerAttr>(repeat.getCount());
  if (!countAttr)
    return repeat.emitOpError() << "count " << repeat.getCount()
                                << " is not resolved; run mega-specialize "
                                   "first";
  int64_t count = countAttr.getInt();
  Block &body = repeat.getBody().front();
  auto yield = cast<YieldOp>(body.getTerminator());
  OpBuilder b(repeat);
  Value carried = repeat.getInit();
  for (int64_t i = 0; i < count; ++i) {
    // Step 2.
    IRMapping map;
    map.map(body.getArgument(0), carried);
    std::string prefix = (repeat.getPrefix() + "." + Twine(i) + ".").str();
    for (Operation &op : body.without_terminator()) {
      Operation *copy = b.clone(op, map);
      // Step 3.
      copy->walk([&](ParamOp p) {
        p.setName((prefix + p.getName()).str());
        if (p.getScaledInit()) {
          double std = p.getStd() ? p.getStd()->convertToDouble() : 0.0;
          p.setStdAttr(b.getF64FloatAttr(std / std::sqrt(2.0 * count)));
          p.setScaledInit(false);
        }
      });
    }
    carried = map.lookup(yield.getValues()[0]);
  }
  // Step 4.
  repeat.getResult().replaceAllUsesWith(carried);
  repeat.erase();
  return success();
}

struct MegaUnroll : mega::impl::MegaUnrollBase<MegaUnroll> {
  void runOnOperation() override {
    SmallVector<RepeatOp> repeats;
    getOperation().walk<WalkOrder::PostOrder>(
        [&](RepeatOp r) { repeats.push_back(r); });
    for (RepeatOp r : repeats)
      if (failed(unroll(r)))
        return signalPassFailure();
  }
};
} // namespace

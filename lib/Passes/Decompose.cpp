//===- Decompose.cpp - Model-level ops -> tensor-level ops -----------------===//
//
// Algorithm:
//  1. Collect every op implementing DecomposeOpInterface (mega.linear,
//     mega.attention), in program order.
//  2. Ask each to replace itself by tensor-level ops (rules in
//     lib/Dialect/Mega/MegaDecompositions.cpp); a rule that fails has
//     reported why and fails the pass. With `fused-attention` (megac's
//     choice) attention becomes one mega.flash_attention.
// layer_norm, cross_entropy, embedding and gelu are tensor-level primitives
// and stay.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/IR/PatternMatch.h"

namespace mega {
#define GEN_PASS_DEF_MEGADECOMPOSE
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {
struct MegaDecompose : mega::impl::MegaDecomposeBase<MegaDecompose> {
  using MegaDecomposeBase::MegaDecomposeBase;
  void runOnOperation() override {
    // Step 1.
    SmallVector<DecomposeOpInterface> ops;
    getOperation().walk([&](DecomposeOpInterface op) { ops.push_back(op); });
    // Step 2.
    IRRewriter rewriter(&getContext());
    for (DecomposeOpInterface op : ops)
      if (failed(op.decompose(rewriter, fusedAttention)))
        return signalPassFailure();
  }
};
} // namespace

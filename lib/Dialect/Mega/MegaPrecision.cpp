//===- MegaPrecision.cpp - Operands that may be bf16 ----------------------===//
//
// MixedPrecisionOpInterface bodies (mega-mixed-precision). The ops listed
// here run their products on tensor cores when these operands are bf16 and
// accumulate in fp32; everything else (normalisation, softmax statistics,
// the loss, the optimizer) keeps fp32 operands.
//
//   matmul                a, b
//   flash_attention       q, k, v
//   flash_attention_grad  q, k, v, o, dout   (not lse: a logsumexp in bf16
//                                             would shift every probability)
//   cross_entropy         logits  (as autocast: the [rows, vocab] logits are
//   cross_entropy_grad    logits   the largest activation; the kernels widen
//                                  them and keep lse, the loss and every sum
//                                  fp32. The vocabulary-parallel ops keep f32
//                                  logits.)
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

using namespace mlir;
using namespace mega;

SmallVector<unsigned> MatMulOp::getLowPrecisionOperands() { return {0, 1}; }

SmallVector<unsigned> FlashAttentionOp::getLowPrecisionOperands() {
  return {0, 1, 2};
}

SmallVector<unsigned> FlashAttentionGradOp::getLowPrecisionOperands() {
  return {0, 1, 2, 3, 5};
}

SmallVector<unsigned> CrossEntropyOp::getLowPrecisionOperands() { return {0}; }

SmallVector<unsigned> CrossEntropyGradOp::getLowPrecisionOperands() {
  return {0};
}

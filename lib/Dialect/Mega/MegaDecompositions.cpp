//===- MegaDecompositions.cpp - Model-level ops as tensor-level ops --------===//
//
// DecomposeOpInterface bodies (mega-decompose). Both need static shapes.
//
//  mega.linear x, w, b     -> mega.matmul x, w ; mega.add _, b
//  mega.attention x, ...   -> qkv = x @ w_qkv + b_qkv          [B,S,3H]
//                             reshape                          [B,S,3,nh,hd]
//                             transpose perm [2,0,3,1,4]       [3,B,nh,S,hd]
//                             split dim 0 (views), reshape     [B,nh,S,hd] x3
//                             s = q @ k^T                      [B,nh,S,S]
//                             p = softmax(s){1/sqrt(hd), causal}
//                             o = p @ v                        [B,nh,S,hd]
//                             (fusedAttention: o, lse = flash_attention(q, k,
//                             v){1/sqrt(hd), causal}, no [S,S] tensor)
//                             transpose perm [0,2,1,3]         [B,S,nh,hd]
//                             reshape                          [B,S,H]
//                             o @ w_o + b_o                    [B,S,H]
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

#include <cmath>

using namespace mlir;
using namespace mega;

static LogicalResult needStatic(Operation *op) {
  for (Type t : op->getOperandTypes())
    if (!cast<RankedTensorType>(t).hasStaticShape())
      return op->emitOpError("needs static operand shapes to decompose; run "
                             "mega-specialize and mega-infer-shapes first");
  return success();
}

/// x @ w (+ b): the shared tail of both decompositions.
static Value buildAffine(RewriterBase &rw, Location loc, Value x, Value w,
                         Value b) {
  Value y = rw.create<MatMulOp>(loc, x, w, /*transpose_a=*/false,
                                /*transpose_b=*/false);
  if (b)
    y = rw.create<AddOp>(loc, y, b);
  return y;
}

LogicalResult LinearOp::decompose(RewriterBase &rw, bool) {
  if (failed(needStatic(*this)))
    return failure();
  rw.setInsertionPoint(*this);
  rw.replaceOp(*this, buildAffine(rw, getLoc(), getX(), getWeight(), getBias()));
  return success();
}

LogicalResult AttentionOp::decompose(RewriterBase &rw, bool fusedAttention) {
  if (failed(needStatic(*this)))
    return failure();
  int64_t nh = staticSize(getHeads());
  if (ShapedType::isDynamic(nh))
    return emitOpError("heads must be resolved (run mega-specialize first)");
  ArrayRef<int64_t> xs = getX().getType().getShape();
  int64_t bsz = xs[0], seq = xs[1], hid = xs[2], hd = hid / nh;
  Type f32 = rw.getF32Type();
  auto tensor = [&](ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, f32);
  };
  Location loc = getLoc();
  rw.setInsertionPoint(*this);

  Value qkv = buildAffine(rw, loc, getX(), getWQkv(), getBQkv());
  Value heads = rw.create<ReshapeOp>(loc, tensor({bsz, seq, 3, nh, hd}), qkv);
  Value t = rw.create<TransposeOp>(loc, heads,
                                   rw.getDenseI64ArrayAttr({2, 0, 3, 1, 4}));
  auto split = rw.create<SplitOp>(loc, t, /*dim=*/0, /*parts=*/3);
  SmallVector<Value, 3> qkvParts;
  for (Value part : split.getResults())
    qkvParts.push_back(
        rw.create<ReshapeOp>(loc, tensor({bsz, nh, seq, hd}), part));
  FloatAttr scale = rw.getF64FloatAttr(1.0 / std::sqrt(double(hd)));
  UnitAttr causal = getCausal() ? rw.getUnitAttr() : UnitAttr();
  Value o;
  if (fusedAttention) {
    o = rw.create<FlashAttentionOp>(
              loc, TypeRange{tensor({bsz, nh, seq, hd}), tensor({bsz, nh, seq})},
              qkvParts[0], qkvParts[1], qkvParts[2], scale, causal)
            .getO();
  } else {
    Value scores = rw.create<MatMulOp>(loc, qkvParts[0], qkvParts[1],
                                       /*transpose_a=*/false,
                                       /*transpose_b=*/true);
    Value probs = rw.create<SoftmaxOp>(loc, scores, scale, causal);
    o = rw.create<MatMulOp>(loc, probs, qkvParts[2], /*transpose_a=*/false,
                            /*transpose_b=*/false);
  }
  o = rw.create<TransposeOp>(loc, o, rw.getDenseI64ArrayAttr({0, 2, 1, 3}));
  o = rw.create<ReshapeOp>(loc, tensor({bsz, seq, hid}), o);
  rw.replaceOp(*this, buildAffine(rw, loc, o, getWO(), getBO()));
  return success();
}

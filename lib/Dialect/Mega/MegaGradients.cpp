//===- MegaGradients.cpp - Reverse-mode rules of the mega ops ------------===//
//
// GradientOpInterface::buildGradient of every op marked `Differentiable` in
// MegaOps.td. `mega-autodiff` (lib/Passes/Autodiff.cpp) calls these while it
// walks a program backwards; it knows no op itself.
//
// Contract (MegaInterfaces.td): given one gradient per result (null: the
// result does not reach the loss), emit at the builder's insertion point the
// ops computing one gradient per operand (null: none, e.g. i32 ids) with
// exactly the operand's type. Gradients of several uses of one value are
// summed by the pass, not here.
//
// Notation below: y = op(x...), dy = d loss / d y, dx = d loss / d x.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

using namespace mlir;
using namespace mega;

namespace {

RankedTensorType rankedType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// A zero tensor of `type` (the gradient of a result nobody used).
Value zeros(OpBuilder &b, Location loc, Type type) {
  return b.create<FillOp>(loc, type, b.getF64FloatAttr(0.0));
}

/// `v` reshaped to `shape` (same element type).
Value reshapeTo(OpBuilder &b, Location loc, Value v, ArrayRef<int64_t> shape) {
  auto t = RankedTensorType::get(shape, rankedType(v).getElementType());
  if (t == v.getType())
    return v;
  return b.create<ReshapeOp>(loc, t, v);
}

/// The adjoint of trailing broadcast: `grad` has the broadcast (full) shape,
/// `operand` a suffix of it; sum `grad` over the leading dims it lacks.
Value sumToOperand(OpBuilder &b, Location loc, Value grad, Value operand) {
  int64_t rank = rankedType(operand).getRank();
  if (rankedType(grad).getRank() == rank)
    return grad;
  return b.create<ReduceSumOp>(loc, grad, rank);
}

/// Product of the dims of `shape` (dynamic if any is).
int64_t product(ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (ShapedType::isDynamic(d))
      return ShapedType::kDynamic;
    n *= d;
  }
  return n;
}

/// `v [..., R, C]` as `[prod(...)*R, C]`.
Value flattenLeading(OpBuilder &b, Location loc, Value v) {
  ArrayRef<int64_t> s = rankedType(v).getShape();
  return reshapeTo(b, loc, v, {product(s.drop_back()), s.back()});
}

/// `v` with its last two dims swapped.
Value swapLastTwo(OpBuilder &b, Location loc, Value v) {
  int64_t rank = rankedType(v).getRank();
  SmallVector<int64_t> perm;
  for (int64_t i = 0; i < rank; ++i)
    perm.push_back(i);
  std::swap(perm[rank - 1], perm[rank - 2]);
  return b.create<TransposeOp>(loc, v, b.getDenseI64ArrayAttr(perm));
}

/// Operands of a unary op: dx for x only.
void setUnary(SmallVectorImpl<Value> &operandGrads, Value dx) {
  operandGrads.assign({dx});
}

} // namespace

//===----------------------------------------------------------------------===//
// Model-level ops that survive decomposition
//===----------------------------------------------------------------------===//

// y[..., :] = table[ids[...], :]  =>  dtable[v, :] = sum of dy[p, :] over the
// positions p with ids[p] = v (a scatter-add); ids are integers: no gradient.
LogicalResult EmbeddingOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                         SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  int64_t vocab = rankedType(getTable()).getDimSize(0);
  if (ShapedType::isDynamic(vocab))
    return emitOpError("gradient needs a static vocabulary size");
  Value dtable = b.create<EmbeddingGradOp>(getLoc(), getIds(), dy,
                                           b.getI64IntegerAttr(vocab));
  operandGrads[1] = dtable;
  return success();
}

// y = xhat * w + b, xhat = (x - mean) * rstd, per row over the C columns.
//   db = sum_rows dy,   dw = sum_rows dy * xhat,
//   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  g = dy * w.
// mega.layer_norm_grad computes all three from the saved mean and rstd.
// The mean and rstd results only feed gradient ops: they carry no gradient.
LogicalResult LayerNormOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                         SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  if (resultGrads[1] || resultGrads[2])
    return emitOpError("no gradient rule through the mean and rstd results");
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  auto grad = b.create<LayerNormGradOp>(getLoc(), dy, getX(), getWeight(),
                                        getMean(), getRstd());
  operandGrads[0] = grad.getDx();
  operandGrads[1] = grad.getDweight();
  operandGrads[2] = grad.getDbias();
  return success();
}

// loss = (1/R) sum_r (lse_r - logits[r, t_r]),
// lse_r = log sum_v exp(logits[r, v])
//   => dlogits[r, v] = dloss / R * (exp(logits[r, v] - lse_r) - [v == t_r]),
// exp(logits - lse) being the row's softmax.
// Only the loss result carries a gradient (lse is saved for this rule);
// targets are integers.
LogicalResult
CrossEntropyOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                              SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  if (resultGrads[1])
    return emitOpError("no gradient rule through the lse result");
  Value dloss = resultGrads[0];
  if (!dloss)
    return success();
  operandGrads[0] = b.create<CrossEntropyGradOp>(getLoc(), getLogits(),
                                                 getTargets(), getLse(), dloss);
  return success();
}

//===----------------------------------------------------------------------===//
// Tensor level
//===----------------------------------------------------------------------===//

// C = op(A) @ op(B), op = optional swap of the last two dims. With
// dop(A) = dC @ op(B)^T and dop(B) = op(A)^T @ dC:
//   dA = ta ? op(B) @ dC^T            : dC @ op(B)^T
//   dB = tb ? dC^T @ op(A)            : op(A)^T @ dC
// each one mega.matmul with transpose flags. Batched (equal ranks): per batch,
// the same. Shared rank-2 B with A [..., M, K]: B's gradient sums over the
// folded leading dims, i.e. one rank-2 product of A and dC flattened to
// [P*M, K] and [P*M, N]; when A is itself transposed ([..., K, M]) the rows
// do not fold, so the batched products are summed with mega.reduce_sum.
LogicalResult MatMulOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                      SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dc = resultGrads[0];
  if (!dc)
    return success();
  Location loc = getLoc();
  Value a = getA(), bm = getB();
  bool ta = getTransposeA(), tb = getTransposeB();
  int64_t rankA = rankedType(a).getRank(), rankB = rankedType(bm).getRank();
  bool shared = rankB == 2 && rankA > 2;

  // dA.
  if (!ta) {
    operandGrads[0] = b.create<MatMulOp>(loc, dc, bm, false, !tb);
  } else if (!shared) {
    operandGrads[0] = b.create<MatMulOp>(loc, bm, dc, tb, true);
  } else {
    // A rank-2 left operand cannot be batched against dC: compute dA^T
    // ([..., M, K], with B still shared) and swap its last two dims.
    Value dat = b.create<MatMulOp>(loc, dc, bm, false, !tb);
    operandGrads[0] = swapLastTwo(b, loc, dat);
  }

  // dB.
  auto weightGrad = [&](Value lhs, Value dcv) -> Value {
    return tb ? Value(b.create<MatMulOp>(loc, dcv, lhs, true, ta))
              : Value(b.create<MatMulOp>(loc, lhs, dcv, !ta, false));
  };
  if (!shared) {
    operandGrads[1] = weightGrad(a, dc);
  } else if (!ta) {
    operandGrads[1] =
        weightGrad(flattenLeading(b, loc, a), flattenLeading(b, loc, dc));
  } else {
    operandGrads[1] = b.create<ReduceSumOp>(loc, weightGrad(a, dc), 2);
  }
  return success();
}

// y = lhs + rhs (rhs broadcast over lhs's leading dims):
//   dlhs = dy, drhs = reduce_sum(dy) down to rhs's rank.
LogicalResult AddOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                   SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  operandGrads[0] = dy;
  operandGrads[1] = sumToOperand(b, getLoc(), dy, getRhs());
  return success();
}

// y = lhs - rhs:  dlhs = dy, drhs = -reduce_sum(dy).
LogicalResult SubOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                   SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  operandGrads[0] = dy;
  Value summed = sumToOperand(b, getLoc(), dy, getRhs());
  operandGrads[1] =
      b.create<ScaleOp>(getLoc(), summed, b.getF64FloatAttr(-1.0));
  return success();
}

// y = lhs * rhs:  dlhs = dy * rhs (rhs broadcast as in the forward),
//                 drhs = reduce_sum(dy * lhs).
LogicalResult MulOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                   SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  operandGrads[0] = b.create<MulOp>(getLoc(), dy, getRhs());
  Value full = b.create<MulOp>(getLoc(), dy, getLhs());
  operandGrads[1] = sumToOperand(b, getLoc(), full, getRhs());
  return success();
}

// y = factor * x:  dx = factor * dy.
LogicalResult ScaleOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                     SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  setUnary(operandGrads,
           dy ? Value(b.create<ScaleOp>(getLoc(), dy, getFactorAttr()))
              : Value());
  return success();
}

// y = gelu(x):  dx = gelu'(x) * dy  (mega.gelu_grad).
LogicalResult GeluOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  setUnary(operandGrads,
           dy ? Value(b.create<GeluGradOp>(getLoc(), getX(), dy)) : Value());
  return success();
}

// y = softmax(s * x) per row:  dx = s * y * (dy - sum_c(dy * y))
// (mega.softmax_grad, from the forward's output). Masked (causal) entries
// have y = 0, so they get dx = 0 as they should.
LogicalResult SoftmaxOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  setUnary(operandGrads, dy ? Value(b.create<SoftmaxGradOp>(
                                  getLoc(), getResult(), dy, getScaleAttr()))
                            : Value());
  return success();
}

// o = softmax(scale q k^T) v with its row logsumexp: one fused adjoint that
// recomputes the probabilities from lse (no [S, S] tensor is kept). lse has
// no users but the adjoint, so it receives no gradient.
LogicalResult
FlashAttentionOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                SmallVectorImpl<Value> &operandGrads) {
  Value dout = resultGrads[0];
  operandGrads.assign(3, Value());
  if (resultGrads[1])
    return emitOpError("has no gradient through its lse result");
  if (!dout)
    return success();
  Type f32 = b.getF32Type();
  auto like = [&](Value x) {
    return RankedTensorType::get(rankedType(x).getShape(), f32);
  };
  auto g = b.create<FlashAttentionGradOp>(
      getLoc(), TypeRange{like(getQ()), like(getK()), like(getV())}, getQ(),
      getK(), getV(), getO(), getLse(), dout, getScaleAttr(), getCausalAttr());
  operandGrads.assign(g->getResults().begin(), g->getResults().end());
  return success();
}

// y = sum of x over its leading dims:  dx = dy broadcast back over them,
// written as zeros(x) + dy (trailing broadcast of mega.add).
LogicalResult ReduceSumOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                         SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  if (!dy) {
    setUnary(operandGrads, Value());
    return success();
  }
  RankedTensorType xType = rankedType(getX());
  if (!xType.hasStaticShape())
    return emitOpError("gradient needs a static operand shape");
  Value dx = dy;
  if (xType != dy.getType())
    dx = b.create<AddOp>(getLoc(), zeros(b, getLoc(), xType), dy);
  setUnary(operandGrads, dx);
  return success();
}

//===----------------------------------------------------------------------===//
// Layout
//===----------------------------------------------------------------------===//

// A reshape moves no element: dx = dy reshaped back.
LogicalResult ReshapeOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  setUnary(operandGrads,
           dy ? Value(b.create<ReshapeOp>(getLoc(), getX().getType(), dy))
              : Value());
  return success();
}

// y dim j = x dim perm[j]  =>  dx = transpose(dy, inverse(perm)), where
// inverse[perm[j]] = j.
LogicalResult TransposeOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                         SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  if (!dy) {
    setUnary(operandGrads, Value());
    return success();
  }
  ArrayRef<int64_t> perm = getPerm();
  SmallVector<int64_t> inverse(perm.size());
  for (auto [j, p] : llvm::enumerate(perm))
    inverse[p] = int64_t(j);
  setUnary(operandGrads, b.create<TransposeOp>(
                             getLoc(), dy, b.getDenseI64ArrayAttr(inverse)));
  return success();
}

// split and concat are each other's adjoints. A part that does not reach the
// loss contributes zeros (mega.fill) to the concatenated gradient.
LogicalResult SplitOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                     SmallVectorImpl<Value> &operandGrads) {
  if (llvm::all_of(resultGrads, [](Value g) { return !g; })) {
    setUnary(operandGrads, Value());
    return success();
  }
  SmallVector<Value> parts;
  for (auto [result, grad] : llvm::zip_equal(getResults(), resultGrads)) {
    if (grad) {
      parts.push_back(grad);
      continue;
    }
    if (!rankedType(result).hasStaticShape())
      return emitOpError("gradient of an unused part needs a static shape");
    parts.push_back(zeros(b, getLoc(), result.getType()));
  }
  setUnary(operandGrads,
           b.create<ConcatOp>(getLoc(), parts, b.getI64IntegerAttr(getDim())));
  return success();
}

LogicalResult ConcatOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                      SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  // mega.split makes equal parts only.
  Type first = getInputs().front().getType();
  if (llvm::any_of(getInputs(), [&](Value v) { return v.getType() != first; }))
    return emitOpError("gradient needs inputs of equal types (mega.split "
                       "makes equal parts)");
  auto split =
      b.create<SplitOp>(getLoc(), dy, getDim(), int64_t(getInputs().size()));
  for (auto [i, part] : llvm::enumerate(split.getResults()))
    operandGrads[i] = part;
  return success();
}

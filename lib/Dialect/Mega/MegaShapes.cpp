//===- MegaShapes.cpp - Result type rules of the mega ops ------------------===//
//
// InferTypeOpInterface for every op whose result types follow from its
// operands and attributes. The rules work with dynamic (`?`) dimensions and
// give static types once the operands are static; mega-infer-shapes re-runs
// them in program order after mega-specialize made params and inputs static.
//
// The rules are lenient: where operands disagree they still produce a type
// (the verifiers in MegaOps.cpp, which run first, report the disagreement).
// They fail only where no type of the right rank can be formed.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

using namespace mlir;
using namespace mega;

namespace {
constexpr int64_t kDyn = ShapedType::kDynamic;

RankedTensorType tensorType(Value v) {
  return dyn_cast<RankedTensorType>(v.getType());
}

Type f32(MLIRContext *ctx) { return Float32Type::get(ctx); }

RankedTensorType tensorOf(ArrayRef<int64_t> shape, Type elt) {
  return RankedTensorType::get(shape, elt);
}

/// The better known of two sizes that should agree.
int64_t merge(int64_t a, int64_t b) { return ShapedType::isDynamic(a) ? b : a; }

/// Product of the leading dims (all but the last): the number of rows.
int64_t rows(RankedTensorType t) {
  int64_t n = 1;
  for (int64_t d : t.getShape().drop_back()) {
    if (ShapedType::isDynamic(d))
      return kDyn;
    n *= d;
  }
  return n;
}

SmallVector<int64_t> dimsShape(ArrayAttr dims) {
  SmallVector<int64_t> shape;
  for (Attribute d : dims)
    shape.push_back(staticSize(d));
  return shape;
}
} // namespace

// Result types are compatible when they agree wherever both are static, so a
// program stays valid while mega-infer-shapes refines it.
#define MEGA_COMPATIBLE_RESULTS(Op)                                            \
  bool Op::isCompatibleReturnTypes(TypeRange l, TypeRange r) {                 \
    return areCompatibleTypes(l, r);                                           \
  }
MEGA_COMPATIBLE_RESULTS(ParamOp)
MEGA_COMPATIBLE_RESULTS(InputOp)
MEGA_COMPATIBLE_RESULTS(EmbeddingOp)
MEGA_COMPATIBLE_RESULTS(LayerNormOp)
MEGA_COMPATIBLE_RESULTS(LinearOp)
MEGA_COMPATIBLE_RESULTS(AttentionOp)
MEGA_COMPATIBLE_RESULTS(RepeatOp)
MEGA_COMPATIBLE_RESULTS(CrossEntropyOp)
MEGA_COMPATIBLE_RESULTS(MatMulOp)
MEGA_COMPATIBLE_RESULTS(AddOp)
MEGA_COMPATIBLE_RESULTS(SubOp)
MEGA_COMPATIBLE_RESULTS(MulOp)
MEGA_COMPATIBLE_RESULTS(ScaleOp)
MEGA_COMPATIBLE_RESULTS(GeluOp)
MEGA_COMPATIBLE_RESULTS(GeluGradOp)
MEGA_COMPATIBLE_RESULTS(SoftmaxOp)
MEGA_COMPATIBLE_RESULTS(SoftmaxGradOp)
MEGA_COMPATIBLE_RESULTS(LayerNormGradOp)
MEGA_COMPATIBLE_RESULTS(CrossEntropyGradOp)
MEGA_COMPATIBLE_RESULTS(EmbeddingGradOp)
MEGA_COMPATIBLE_RESULTS(ReduceSumOp)
MEGA_COMPATIBLE_RESULTS(TransposeOp)
MEGA_COMPATIBLE_RESULTS(SplitOp)
MEGA_COMPATIBLE_RESULTS(ConcatOp)
MEGA_COMPATIBLE_RESULTS(GradNormOp)
#undef MEGA_COMPATIBLE_RESULTS

//===----------------------------------------------------------------------===//
// Model level
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::inferReturnTypes(MLIRContext *ctx,
                                        std::optional<Location>,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  types.push_back(tensorOf(dimsShape(adaptor.getDims()), f32(ctx)));
  return success();
}

LogicalResult InputOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  types.push_back(
      tensorOf(dimsShape(adaptor.getDims()), adaptor.getElementType()));
  return success();
}

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  RankedTensorType ids = tensorType(adaptor.getIds());
  RankedTensorType table = tensorType(adaptor.getTable());
  if (!ids || !table || table.getRank() != 2)
    return failure();
  SmallVector<int64_t> shape(ids.getShape());
  shape.push_back(table.getDimSize(1));
  types.push_back(tensorOf(shape, f32(ctx)));
  return success();
}

LogicalResult LayerNormOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  RankedTensorType x = tensorType(adaptor.getX());
  if (!x || x.getRank() < 1)
    return failure();
  SmallVector<int64_t> shape(x.getShape());
  RankedTensorType w = tensorType(adaptor.getWeight());
  if (w && w.getRank() == 1)
    shape.back() = merge(shape.back(), w.getDimSize(0));
  auto stats = tensorOf({rows(x)}, f32(ctx));
  types.append({tensorOf(shape, f32(ctx)), stats, stats});
  return success();
}

LogicalResult LinearOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location>,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  RankedTensorType x = tensorType(adaptor.getX());
  RankedTensorType w = tensorType(adaptor.getWeight());
  if (!x || !w || x.getRank() < 1 || w.getRank() != 2)
    return failure();
  SmallVector<int64_t> shape(x.getShape());
  shape.back() = w.getDimSize(1);
  types.push_back(tensorOf(shape, f32(ctx)));
  return success();
}

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getX().getType());
  return success();
}

LogicalResult RepeatOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location>,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getInit().getType());
  return success();
}

LogicalResult CrossEntropyOp::inferReturnTypes(MLIRContext *ctx,
                                               std::optional<Location>,
                                               Adaptor adaptor,
                                               SmallVectorImpl<Type> &types) {
  RankedTensorType logits = tensorType(adaptor.getLogits());
  if (!logits || logits.getRank() < 1)
    return failure();
  types.push_back(tensorOf({}, f32(ctx)));
  types.push_back(tensorOf({rows(logits)}, f32(ctx)));
  return success();
}

//===----------------------------------------------------------------------===//
// Tensor level
//===----------------------------------------------------------------------===//

LogicalResult MatMulOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location>,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  RankedTensorType a = tensorType(adaptor.getA());
  RankedTensorType b = tensorType(adaptor.getB());
  if (!a || !b || a.getRank() < 2 || b.getRank() < 2)
    return failure();
  int64_t ra = a.getRank(), rb = b.getRank();
  int64_t m = adaptor.getTransposeA() ? a.getDimSize(ra - 1)
                                      : a.getDimSize(ra - 2);
  int64_t n = adaptor.getTransposeB() ? b.getDimSize(rb - 2)
                                      : b.getDimSize(rb - 1);
  SmallVector<int64_t> shape(a.getShape().drop_back(2));
  if (rb == ra)
    for (int64_t i = 0; i + 2 < ra; ++i)
      shape[i] = merge(shape[i], b.getDimSize(i));
  shape.append({m, n});
  types.push_back(tensorOf(shape, f32(ctx)));
  return success();
}

#define MEGA_SAME_AS_OPERAND(Op, getter)                                       \
  LogicalResult Op::inferReturnTypes(MLIRContext *, std::optional<Location>,   \
                                     Adaptor adaptor,                          \
                                     SmallVectorImpl<Type> &types) {           \
    types.push_back(adaptor.getter().getType());                               \
    return success();                                                          \
  }
MEGA_SAME_AS_OPERAND(AddOp, getLhs)
MEGA_SAME_AS_OPERAND(SubOp, getLhs)
MEGA_SAME_AS_OPERAND(MulOp, getLhs)
MEGA_SAME_AS_OPERAND(ScaleOp, getX)
MEGA_SAME_AS_OPERAND(GeluOp, getX)
MEGA_SAME_AS_OPERAND(GeluGradOp, getX)
MEGA_SAME_AS_OPERAND(SoftmaxOp, getX)
MEGA_SAME_AS_OPERAND(SoftmaxGradOp, getY)
#undef MEGA_SAME_AS_OPERAND

// dlogits has the logits' shape and is f32 also for bf16 logits (mixed
// precision): the rounding of the gradient is mega-fold-casts' decision.
LogicalResult CrossEntropyGradOp::inferReturnTypes(
    MLIRContext *ctx, std::optional<Location>, Adaptor adaptor,
    SmallVectorImpl<Type> &types) {
  RankedTensorType logits = tensorType(adaptor.getLogits());
  if (!logits)
    return failure();
  types.push_back(RankedTensorType::get(logits.getShape(), f32(ctx)));
  return success();
}

LogicalResult LayerNormGradOp::inferReturnTypes(MLIRContext *,
                                                std::optional<Location>,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  Type w = adaptor.getWeight().getType();
  types.append({adaptor.getX().getType(), w, w});
  return success();
}

LogicalResult EmbeddingGradOp::inferReturnTypes(MLIRContext *ctx,
                                                std::optional<Location>,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  RankedTensorType dy = tensorType(adaptor.getDy());
  if (!dy || dy.getRank() < 1)
    return failure();
  types.push_back(
      tensorOf({adaptor.getVocab(), dy.getShape().back()}, f32(ctx)));
  return success();
}

LogicalResult ReduceSumOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  RankedTensorType x = tensorType(adaptor.getX());
  int64_t rank = adaptor.getRank();
  if (!x || rank < 0 || rank > x.getRank())
    return failure();
  types.push_back(tensorOf(x.getShape().take_back(rank), f32(ctx)));
  return success();
}

LogicalResult TransposeOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  RankedTensorType x = tensorType(adaptor.getX());
  ArrayRef<int64_t> perm = adaptor.getPerm();
  if (!x || int64_t(perm.size()) != x.getRank())
    return failure();
  SmallVector<int64_t> shape;
  for (int64_t p : perm) {
    if (p < 0 || p >= x.getRank())
      return failure();
    shape.push_back(x.getDimSize(p));
  }
  types.push_back(tensorOf(shape, x.getElementType()));
  return success();
}

LogicalResult SplitOp::inferReturnTypes(MLIRContext *ctx,
                                        std::optional<Location>,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  RankedTensorType x = tensorType(adaptor.getX());
  int64_t dim = adaptor.getDim(), parts = adaptor.getParts();
  if (!x || dim < 0 || dim >= x.getRank() || parts < 1)
    return failure();
  SmallVector<int64_t> shape(x.getShape());
  if (!ShapedType::isDynamic(shape[dim]))
    shape[dim] /= parts;
  types.append(parts, tensorOf(shape, x.getElementType()));
  return success();
}

LogicalResult ConcatOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location>,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (adaptor.getInputs().empty())
    return failure();
  RankedTensorType first = tensorType(adaptor.getInputs()[0]);
  int64_t dim = adaptor.getDim();
  if (!first || dim < 0 || dim >= first.getRank())
    return failure();
  SmallVector<int64_t> shape(first.getShape());
  shape[dim] = 0;
  for (Value v : adaptor.getInputs()) {
    RankedTensorType t = tensorType(v);
    if (!t || t.getRank() != first.getRank())
      return failure();
    int64_t d = t.getDimSize(dim);
    shape[dim] = (ShapedType::isDynamic(d) || ShapedType::isDynamic(shape[dim]))
                     ? kDyn
                     : shape[dim] + d;
    for (int64_t i = 0; i < t.getRank(); ++i)
      if (i != dim)
        shape[i] = merge(shape[i], t.getDimSize(i));
  }
  types.push_back(tensorOf(shape, f32(ctx)));
  return success();
}

LogicalResult GradNormOp::inferReturnTypes(MLIRContext *ctx,
                                           std::optional<Location>, Adaptor,
                                           SmallVectorImpl<Type> &types) {
  auto scalar = tensorOf({}, f32(ctx));
  types.append({scalar, scalar});
  return success();
}

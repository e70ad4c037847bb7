//===- MegaOps.cpp - Verifiers of the mega ops -----------------------------===//
//
// One verifier per op; each check cites its constraint id in docs/dialect.md
// (`// matmul_c2`) and has a case in test/Dialect/Mega/invalid.mlir.
// Dimensions that are still dynamic (`?`) are not checked; they are checked
// once mega-infer-shapes has made them static.
//
// Result types themselves are checked by InferTypeOpInterface against the
// rules in MegaShapes.cpp, after these verifiers ran.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <cstdio>

using namespace mlir;
using namespace mega;

namespace {
RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}
bool known(int64_t d) { return !ShapedType::isDynamic(d); }
/// True when both sizes are static and differ.
bool conflict(int64_t a, int64_t b) { return known(a) && known(b) && a != b; }

/// "[4, 32, ?]"
std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  llvm::raw_string_ostream os(s);
  llvm::interleaveComma(shape, os, [&](int64_t d) {
    if (known(d))
      os << d;
    else
      os << '?';
  });
  os << ']';
  return s;
}

/// Checks shared by mega.param and mega.input (param_c2..c4, input_c2..c4).
LogicalResult verifyDims(Operation *op, ArrayAttr dims, RankedTensorType type) {
  // param_c2, input_c2
  if (int64_t(dims.size()) != type.getRank())
    return op->emitOpError() << "has " << dims.size()
                             << " dims but its type has rank "
                             << type.getRank();
  for (auto [i, dim] : llvm::enumerate(dims)) {
    // param_c3, input_c3
    if (failed(parseSizeExpr(dim)))
      return op->emitOpError() << "dim " << i << " is not a size: " << dim;
    int64_t v = staticSize(dim);
    if (known(v) && v <= 0)
      return op->emitOpError() << "dim " << i << " is " << v
                               << "; sizes must be positive";
    // param_c4, input_c4
    if (conflict(v, type.getDimSize(i)))
      return op->emitOpError()
             << "dim " << i << " is " << v << " but the type says "
             << type.getDimSize(i);
  }
  return success();
}

/// A double as a user writes it ("0.9", "1", "1e-08"), for diagnostics.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

LogicalResult verifyName(Operation *op, StringRef name) {
  if (name.empty())
    return op->emitOpError("needs a non-empty name");
  return success();
}
} // namespace

//===----------------------------------------------------------------------===//
// Model level
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  // param_c1
  if (failed(verifyName(*this, getName())))
    return failure();
  // param_c2, param_c3, param_c4
  if (failed(verifyDims(*this, getDims(), getType())))
    return failure();
  // param_c5
  StringRef init = getInit();
  if (init != "normal" && init != "zeros" && init != "ones")
    return emitOpError() << "init must be normal(std), zeros or ones, not '"
                         << init << "'";
  if ((init == "normal") != bool(getStd()))
    return emitOpError("a std is given exactly for init normal");
  if (getStd() && getStd()->convertToDouble() < 0)
    return emitOpError() << "std " << num(getStd()->convertToDouble())
                         << " is negative";
  // param_c6
  if (getScaledInit() && init != "normal")
    return emitOpError("scaled_init needs init normal(std)");
  return success();
}

LogicalResult InputOp::verify() {
  // input_c1
  if (failed(verifyName(*this, getName())))
    return failure();
  // input_c2, input_c3, input_c4
  if (failed(verifyDims(*this, getDims(), getType())))
    return failure();
  // input_c5
  if (getElementType() != getType().getElementType())
    return emitOpError() << "element_type " << getElementType()
                         << " differs from the result's "
                         << getType().getElementType();
  return success();
}

LogicalResult OutputOp::verify() {
  // output_c1
  return verifyName(*this, getName());
}

LogicalResult EmbeddingOp::verify() {
  RankedTensorType table = tensorType(getTable());
  // embedding_c1
  if (table.getRank() != 2)
    return emitOpError() << "table must be [vocab, hidden], got rank "
                         << table.getRank();
  // embedding_c2
  if (getType().getRank() != tensorType(getIds()).getRank() + 1)
    return emitOpError() << "result must have rank "
                         << tensorType(getIds()).getRank() + 1
                         << " (ids rank + 1), got " << getType().getRank();
  return success();
}

LogicalResult LayerNormOp::verify() {
  RankedTensorType x = tensorType(getX());
  // layer_norm_c1
  if (x.getRank() < 1)
    return emitOpError("x must have rank >= 1");
  int64_t c = x.getShape().back();
  for (Value v : {getWeight(), getBias()}) {
    RankedTensorType t = tensorType(v);
    if (t.getRank() != 1 || conflict(t.getDimSize(0), c))
      return emitOpError() << "weight and bias must be " << shapeStr(c)
                           << ", got " << shapeStr(t.getShape());
  }
  // layer_norm_c2
  if (getEps().convertToDouble() <= 0)
    return emitOpError() << "eps must be positive, got "
                         << num(getEps().convertToDouble());
  return success();
}

LogicalResult LinearOp::verify() {
  RankedTensorType x = tensorType(getX()), w = tensorType(getWeight());
  // linear_c1
  if (w.getRank() != 2 || x.getRank() < 1)
    return emitOpError() << "needs x [..., K] and weight [K, N], got x "
                         << shapeStr(x.getShape()) << " and weight "
                         << shapeStr(w.getShape());
  // linear_c2
  if (conflict(x.getShape().back(), w.getDimSize(0)))
    return emitOpError() << "x has " << x.getShape().back()
                         << " input features but weight has "
                         << w.getDimSize(0);
  // linear_c3
  if (Value b = getBias()) {
    RankedTensorType bt = tensorType(b);
    if (bt.getRank() != 1 || conflict(bt.getDimSize(0), w.getDimSize(1)))
      return emitOpError() << "bias must be " << shapeStr(w.getDimSize(1))
                           << ", got " << shapeStr(bt.getShape());
  }
  return success();
}

LogicalResult AttentionOp::verify() {
  RankedTensorType x = tensorType(getX());
  // attention_c1
  if (x.getRank() != 3)
    return emitOpError() << "x must be [batch, seq, hidden], got "
                         << shapeStr(x.getShape());
  int64_t h = x.getDimSize(2);
  int64_t h3 = known(h) ? 3 * h : ShapedType::kDynamic;
  auto expect = [&](Value v, ArrayRef<int64_t> want,
                    StringRef what) -> LogicalResult {
    RankedTensorType t = tensorType(v);
    bool ok = t.getRank() == int64_t(want.size());
    for (size_t i = 0; ok && i < want.size(); ++i)
      ok = !conflict(t.getDimSize(i), want[i]);
    if (!ok)
      return emitOpError() << what << " must be " << shapeStr(want) << ", got "
                           << shapeStr(t.getShape());
    return success();
  };
  // attention_c2
  if (failed(expect(getWQkv(), {h, h3}, "w_qkv")) ||
      failed(expect(getBQkv(), {h3}, "b_qkv")))
    return failure();
  // attention_c3
  if (failed(expect(getWO(), {h, h}, "w_o")) ||
      failed(expect(getBO(), {h}, "b_o")))
    return failure();
  // attention_c4
  if (failed(parseSizeExpr(getHeads())))
    return emitOpError() << "heads is not a size: " << getHeads();
  int64_t heads = staticSize(getHeads());
  if (known(heads) && heads <= 0)
    return emitOpError() << "heads must be positive, got " << heads;
  if (known(heads) && known(h) && h % heads != 0)
    return emitOpError() << "heads (" << heads << ") does not divide hidden ("
                         << h << ")";
  return success();
}

LogicalResult RepeatOp::verify() {
  // repeat_c1
  if (failed(parseSizeExpr(getCount())))
    return emitOpError() << "count is not a size: " << getCount();
  int64_t count = staticSize(getCount());
  if (known(count) && count <= 0)
    return emitOpError() << "count must be positive, got " << count;
  // repeat_c2
  if (getPrefix().empty())
    return emitOpError("needs a non-empty prefix");
  return success();
}

LogicalResult RepeatOp::verifyRegions() {
  Block &body = getBody().front();
  // repeat_c3
  if (body.getNumArguments() != 1 ||
      !areCompatibleTypes(body.getArgument(0).getType(), getInit().getType()))
    return emitOpError() << "body must take one argument of the type of init ("
                         << getInit().getType() << ")";
  auto yield = dyn_cast<YieldOp>(body.getTerminator());
  // repeat_c4
  if (!yield || yield.getValues().size() != 1 ||
      !areCompatibleTypes(yield.getValues()[0].getType(), getInit().getType()))
    return emitOpError() << "body must yield one value of the type of init ("
                         << getInit().getType() << ")";
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  RankedTensorType logits = tensorType(getLogits());
  RankedTensorType targets = tensorType(getTargets());
  // cross_entropy_c1
  if (logits.getRank() < 1 || targets.getRank() != logits.getRank() - 1)
    return emitOpError() << "targets must have rank " << logits.getRank() - 1
                         << " (logits rank - 1), got " << targets.getRank();
  for (int64_t i = 0; i < targets.getRank(); ++i)
    if (conflict(targets.getDimSize(i), logits.getDimSize(i)))
      return emitOpError() << "targets " << shapeStr(targets.getShape())
                           << " do not match logits "
                           << shapeStr(logits.getShape());
  return success();
}

//===----------------------------------------------------------------------===//
// Tensor level
//===----------------------------------------------------------------------===//

LogicalResult MatMulOp::verify() {
  RankedTensorType a = tensorType(getA()), b = tensorType(getB());
  // matmul_c1
  if (a.getRank() < 2 || b.getRank() < 2)
    return emitOpError() << "operands must have rank >= 2, got "
                         << a.getRank() << " and " << b.getRank();
  int64_t ra = a.getRank(), rb = b.getRank();
  int64_t ka = getTransposeA() ? a.getDimSize(ra - 2) : a.getDimSize(ra - 1);
  int64_t kb = getTransposeB() ? b.getDimSize(rb - 1) : b.getDimSize(rb - 2);
  // matmul_c2
  if (conflict(ka, kb))
    return emitOpError() << "contraction dimensions differ: a has K = " << ka
                         << ", b has K = " << kb;
  // matmul_c3
  if (rb != 2 && rb != ra)
    return emitOpError() << "b must have rank 2 or the rank of a (" << ra
                         << "), got " << rb;
  if (rb == ra)
    for (int64_t i = 0; i + 2 < ra; ++i)
      if (conflict(a.getDimSize(i), b.getDimSize(i)))
        return emitOpError() << "batch dimensions differ: a "
                             << shapeStr(a.getShape()) << ", b "
                             << shapeStr(b.getShape());
  // matmul_c4: one element type (f32, or bf16 products after
  // mega-mixed-precision); the result is f32 either way.
  if (a.getElementType() != b.getElementType())
    return emitOpError() << "operand element types differ: "
                         << a.getElementType() << " and " << b.getElementType();
  return success();
}

/// binary_c1: rhs's shape is a suffix of lhs's.
static LogicalResult verifyBroadcast(Operation *op, Value lhs, Value rhs) {
  RankedTensorType l = tensorType(lhs), r = tensorType(rhs);
  int64_t off = l.getRank() - r.getRank();
  bool ok = off >= 0;
  for (int64_t i = 0; ok && i < r.getRank(); ++i)
    ok = !conflict(r.getDimSize(i), l.getDimSize(off + i));
  if (!ok)
    return op->emitOpError() << "cannot broadcast rhs " << shapeStr(r.getShape())
                             << " to lhs " << shapeStr(l.getShape())
                             << ": rhs must be a suffix of lhs";
  return success();
}

LogicalResult AddOp::verify() { return verifyBroadcast(*this, getLhs(), getRhs()); }
LogicalResult SubOp::verify() { return verifyBroadcast(*this, getLhs(), getRhs()); }
LogicalResult MulOp::verify() { return verifyBroadcast(*this, getLhs(), getRhs()); }

/// Two operands of one shape (gelu_grad_c1, softmax_grad_c1).
static LogicalResult verifySameShape(Operation *op, Value a, Value b) {
  if (!areCompatibleTypes(a.getType(), b.getType()))
    return op->emitOpError() << "operands must have the same shape, got "
                             << shapeStr(tensorType(a).getShape()) << " and "
                             << shapeStr(tensorType(b).getShape());
  return success();
}

LogicalResult GeluGradOp::verify() {
  // gelu_grad_c1
  return verifySameShape(*this, getX(), getDy());
}

LogicalResult SoftmaxOp::verify() {
  // softmax_c1
  if (getCausal() && tensorType(getX()).getRank() < 2)
    return emitOpError("causal softmax needs rank >= 2 (rows and columns)");
  // softmax_c2
  if (tensorType(getX()).getRank() < 1)
    return emitOpError("x must have rank >= 1");
  return success();
}

LogicalResult SoftmaxGradOp::verify() {
  // softmax_grad_c1
  return verifySameShape(*this, getY(), getDy());
}

LogicalResult LayerNormGradOp::verify() {
  RankedTensorType x = tensorType(getX());
  // layer_norm_grad_c1
  if (failed(verifySameShape(*this, getDy(), getX())))
    return failure();
  if (x.getRank() < 1)
    return emitOpError("x must have rank >= 1");
  // layer_norm_grad_c2
  RankedTensorType w = tensorType(getWeight());
  if (w.getRank() != 1 || conflict(w.getDimSize(0), x.getShape().back()))
    return emitOpError() << "weight must be " << shapeStr(x.getShape().back())
                         << ", got " << shapeStr(w.getShape());
  // layer_norm_grad_c3
  if (tensorType(getMean()).getRank() != 1 ||
      tensorType(getRstd()).getRank() != 1)
    return emitOpError("mean and rstd must have rank 1");
  return success();
}

LogicalResult CrossEntropyGradOp::verify() {
  RankedTensorType logits = tensorType(getLogits());
  RankedTensorType targets = tensorType(getTargets());
  // cross_entropy_grad_c1
  if (logits.getRank() < 1 || targets.getRank() != logits.getRank() - 1)
    return emitOpError() << "targets must have rank " << logits.getRank() - 1
                         << " (logits rank - 1), got " << targets.getRank();
  // cross_entropy_grad_c2
  if (tensorType(getLse()).getRank() != 1)
    return emitOpError("lse must have rank 1");
  return success();
}

LogicalResult EmbeddingGradOp::verify() {
  // embedding_grad_c1
  if (getVocab() <= 0)
    return emitOpError() << "vocab must be positive, got " << getVocab();
  // embedding_grad_c2
  RankedTensorType ids = tensorType(getIds()), dy = tensorType(getDy());
  bool ok = dy.getRank() == ids.getRank() + 1;
  for (int64_t i = 0; ok && i < ids.getRank(); ++i)
    ok = !conflict(ids.getDimSize(i), dy.getDimSize(i));
  if (!ok)
    return emitOpError() << "dy must be ids' shape plus [hidden]: ids "
                         << shapeStr(ids.getShape()) << ", dy "
                         << shapeStr(dy.getShape());
  return success();
}

LogicalResult ReduceSumOp::verify() {
  // reduce_sum_c1
  if (getRank() < 0 || getRank() > tensorType(getX()).getRank())
    return emitOpError() << "rank " << getRank() << " is not in [0, "
                         << tensorType(getX()).getRank() << "]";
  return success();
}

LogicalResult ReshapeOp::verify() {
  RankedTensorType x = tensorType(getX()), r = getType();
  // reshape_c1
  if (x.getElementType() != r.getElementType())
    return emitOpError("cannot change the element type");
  // reshape_c2
  if (x.hasStaticShape() && r.hasStaticShape() &&
      x.getNumElements() != r.getNumElements())
    return emitOpError() << "element counts differ: " << shapeStr(x.getShape())
                         << " has " << x.getNumElements() << ", "
                         << shapeStr(r.getShape()) << " has "
                         << r.getNumElements();
  return success();
}

LogicalResult TransposeOp::verify() {
  ArrayRef<int64_t> perm = getPerm();
  int64_t rank = tensorType(getX()).getRank();
  // transpose_c1
  SmallVector<bool> seen(rank, false);
  bool ok = int64_t(perm.size()) == rank;
  for (int64_t p : perm) {
    ok = ok && p >= 0 && p < rank && !seen[p];
    if (ok)
      seen[p] = true;
  }
  if (!ok)
    return emitOpError() << "perm " << shapeStr(perm)
                         << " is not a permutation of the " << rank
                         << " dimensions";
  return success();
}

LogicalResult SplitOp::verify() {
  RankedTensorType x = tensorType(getX());
  // split_c1
  if (getDim() < 0 || getDim() >= x.getRank())
    return emitOpError() << "dim " << getDim() << " is out of range for rank "
                         << x.getRank();
  // split_c2
  if (getParts() < 1 || int64_t(getNumResults()) != getParts())
    return emitOpError() << "must have parts (" << getParts()
                         << ") results, got " << getNumResults();
  // split_c3
  int64_t d = x.getDimSize(getDim());
  if (known(d) && d % getParts() != 0)
    return emitOpError() << "parts (" << getParts() << ") does not divide dim "
                         << getDim() << " (" << d << ")";
  return success();
}

LogicalResult ConcatOp::verify() {
  // concat_c1
  if (getInputs().empty())
    return emitOpError("needs at least one input");
  RankedTensorType first = tensorType(getInputs()[0]);
  // concat_c2
  if (getDim() < 0 || getDim() >= first.getRank())
    return emitOpError() << "dim " << getDim() << " is out of range for rank "
                         << first.getRank();
  // concat_c3
  for (Value v : getInputs()) {
    RankedTensorType t = tensorType(v);
    bool ok = t.getRank() == first.getRank();
    for (int64_t i = 0; ok && i < t.getRank(); ++i)
      ok = i == getDim() || !conflict(t.getDimSize(i), first.getDimSize(i));
    if (!ok)
      return emitOpError() << "inputs differ outside dim " << getDim() << ": "
                           << shapeStr(first.getShape()) << " and "
                           << shapeStr(t.getShape());
  }
  return success();
}

LogicalResult FillOp::verify() {
  // fill_c1
  if (!getType().hasStaticShape())
    return emitOpError("needs a static shape");
  // fill_c2
  double v = getValue().convertToDouble();
  if (getType().getElementType().isInteger(32) && v != double(int64_t(v)))
    return emitOpError() << "value " << num(v) << " is not an integer";
  return success();
}

OpFoldResult FillOp::fold(FoldAdaptor) {
  RankedTensorType t = getType();
  if (t.getElementType().isF32())
    return SplatElementsAttr::get(
        t, FloatAttr::get(t.getElementType(), getValue().convertToDouble()));
  return SplatElementsAttr::get(
      t, IntegerAttr::get(t.getElementType(),
                          int64_t(getValue().convertToDouble())));
}

//===----------------------------------------------------------------------===//
// Training level
//===----------------------------------------------------------------------===//

LogicalResult AccumulateGradOp::verify() {
  // accumulate_grad_c1
  return verifyName(*this, getName());
}

LogicalResult StateOp::verify() {
  // state_c1
  if (failed(verifyName(*this, getName())))
    return failure();
  // state_c2
  StringRef role = getRole();
  if (role != "grad" && role != "adam_m" && role != "adam_v" &&
      role != "param_copy")
    return emitOpError() << "role must be grad, adam_m, adam_v or "
                            "param_copy, not '"
                         << role << "'";
  // state_c3: the parameter copy is bf16, everything else f32.
  Type el = getType().getElementType();
  if ((role == "param_copy") != el.isBF16())
    return emitOpError() << "role '" << role << "' needs element type "
                         << (role == "param_copy" ? "bf16" : "f32")
                         << ", not " << el;
  // state_c4: a gradient's buffer may hold bytes past it (mega-ones-column).
  if (Attribute a = (*this)->getAttr(kTailBytesAttr)) {
    auto tail = dyn_cast<IntegerAttr>(a);
    if (role != "grad" || !tail || tail.getInt() < 0 || tail.getInt() % 4 != 0)
      return emitOpError() << kTailBytesAttr
                           << " must be a non-negative multiple of 4 on a "
                              "grad";
  }
  return success();
}

LogicalResult GradNormOp::verify() {
  // grad_norm_c1
  if (getGrads().empty())
    return emitOpError("needs at least one gradient");
  return success();
}

LogicalResult AdamWOp::verify() {
  // adamw_c1
  if (failed(verifyName(*this, getName())))
    return failure();
  // adamw_c2
  double b1 = getBeta1().convertToDouble(), b2 = getBeta2().convertToDouble();
  if (b1 < 0 || b1 >= 1 || b2 < 0 || b2 >= 1)
    return emitOpError() << "betas must be in [0, 1), got " << num(b1)
                         << " and " << num(b2);
  // adamw_c3
  if (getEps().convertToDouble() <= 0)
    return emitOpError() << "eps must be positive, got "
                         << num(getEps().convertToDouble());
  // adamw_c4
  if (getWeightDecay().convertToDouble() < 0)
    return emitOpError() << "weight_decay must be >= 0, got "
                         << num(getWeightDecay().convertToDouble());
  return success();
}

LogicalResult SgdOp::verify() {
  // sgd_c1
  if (failed(verifyName(*this, getName())))
    return failure();
  // sgd_c2
  if (getWeightDecay().convertToDouble() < 0)
    return emitOpError() << "weight_decay must be >= 0, got "
                         << num(getWeightDecay().convertToDouble());
  return success();
}

LogicalResult ZeroGradOp::verify() {
  // zero_grad_c1
  return verifyName(*this, getName());
}

//===----------------------------------------------------------------------===//
// Kernel level
//===----------------------------------------------------------------------===//

LogicalResult FusedOp::verifyRegions() {
  Block &body = getBody().front();
  // fused_c1
  if (body.getArgumentTypes() != getInputs().getTypes())
    return emitOpError("block arguments must have the types of the inputs");
  // fused_c2
  for (Operation &op : body.without_terminator())
    if (!op.hasTrait<MegaElementwise>())
      return emitOpError() << "body may hold only elementwise ops, found '"
                           << op.getName() << "'";
  // fused_c3
  auto yield = dyn_cast<YieldOp>(body.getTerminator());
  if (!yield || yield.getValues().getTypes() != getResultTypes())
    return emitOpError("body must yield values of the result types");
  return success();
}

LogicalResult KernelOp::verify() {
  // kernel_c1: the opcodes of include/mega/Plan/Plan.h (enum class Op).
  static const llvm::StringSet<> kKernels = {"Fill",
                                             "Copy",
                                             "MatMul",
                                             "Elementwise",
                                             "ReduceSum",
                                             "LayerNorm",
                                             "LayerNormGrad",
                                             "Softmax",
                                             "SoftmaxGrad",
                                             "CrossEntropy",
                                             "CrossEntropyGrad",
                                             "Embedding",
                                             "EmbeddingGrad",
                                             "Transpose",
                                             "GradNorm",
                                             "AdamW",
                                             "Sgd",
                                             "AllReduce",
                                             "AllGather",
                                             "ReduceScatter",
                                             "Send",
                                             "Recv",
                                             "VocabEmbedding",
                                             "VocabEmbeddingGrad",
                                             "RowMax",
                                             "VocabCrossEntropyStats",
                                             "VocabCrossEntropy",
                                             "VocabCrossEntropyGrad",
                                             "Cast",
                                             "Attention",
                                             "AttentionGrad",
                                             "AllReduceStart",
                                             "AllReduceWait",
                                             "AdamWMulti",
                                             "CrossEntropyWithGrad",
                                             "ReduceScatterStart",
                                             "ReduceScatterWait"};
  if (!kKernels.contains(getKernel()))
    return emitOpError() << "unknown kernel '" << getKernel()
                         << "' (see enum class Op in mega/Plan/Plan.h)";
  return success();
}

//===----------------------------------------------------------------------===//
// Mixed precision and fused attention (MegaFusedOps.td)
//===----------------------------------------------------------------------===//

LogicalResult CastOp::verify() {
  // cast_c1
  RankedTensorType x = tensorType(getX()), r = getType();
  if (x.getRank() != r.getRank())
    return emitOpError() << "changes the shape: " << shapeStr(x.getShape())
                         << " -> " << shapeStr(r.getShape());
  for (int64_t i = 0; i < x.getRank(); ++i)
    if (conflict(x.getDimSize(i), r.getDimSize(i)))
      return emitOpError() << "changes the shape: " << shapeStr(x.getShape())
                           << " -> " << shapeStr(r.getShape());
  return success();
}

/// flash_attention_c1..c3: q, k, v [B, heads, S, hd] of one shape and one
/// element type; lse [B, heads, S].
static LogicalResult verifyAttentionOperands(Operation *op, Value q, Value k,
                                             Value v, Value lse) {
  RankedTensorType qt = tensorType(q);
  // flash_attention_c1
  if (qt.getRank() != 4)
    return op->emitOpError() << "q must have rank 4 [B, heads, S, hd], got "
                             << shapeStr(qt.getShape());
  // flash_attention_c2
  for (Value x : {k, v}) {
    RankedTensorType t = tensorType(x);
    if (t.getRank() != 4 || t.getElementType() != qt.getElementType())
      return op->emitOpError() << "q, k and v must have one rank-4 type";
    for (int64_t i = 0; i < 4; ++i)
      if (conflict(t.getDimSize(i), qt.getDimSize(i)))
        return op->emitOpError()
               << "q, k and v shapes differ: " << shapeStr(qt.getShape())
               << " and " << shapeStr(t.getShape());
  }
  // flash_attention_c3
  RankedTensorType lt = tensorType(lse);
  if (lt.getRank() != 3)
    return op->emitOpError() << "lse must have rank 3 [B, heads, S], got "
                             << shapeStr(lt.getShape());
  for (int64_t i = 0; i < 3; ++i)
    if (conflict(lt.getDimSize(i), qt.getDimSize(i)))
      return op->emitOpError() << "lse " << shapeStr(lt.getShape())
                               << " does not match q " << shapeStr(qt.getShape());
  return success();
}

LogicalResult FlashAttentionOp::verify() {
  return verifyAttentionOperands(*this, getQ(), getK(), getV(), getLse());
}

LogicalResult FlashAttentionGradOp::verify() {
  return verifyAttentionOperands(*this, getQ(), getK(), getV(), getLse());
}

LogicalResult EmptyOp::verify() {
  // empty_c1
  if (!getType().hasStaticShape())
    return emitOpError() << "needs a static shape, got "
                         << shapeStr(getType().getShape());
  return success();
}

LogicalResult ViewOp::verify() {
  RankedTensorType src = tensorType(getSource()), r = getType();
  // view_c1
  if (getOffset() < 0)
    return emitOpError() << "offset " << getOffset() << " is negative";
  // view_c2 (a gradient's tail counts: state_c4)
  if (src.hasStaticShape() && r.hasStaticShape()) {
    int64_t srcBytes =
        src.getNumElements() * (src.getElementTypeBitWidth() / 8);
    if (auto st = getSource().getDefiningOp<StateOp>())
      if (auto tail = st->getAttrOfType<IntegerAttr>(kTailBytesAttr))
        srcBytes += tail.getInt();
    int64_t bytes = r.getNumElements() * (r.getElementTypeBitWidth() / 8);
    if (getOffset() + bytes > srcBytes)
      return emitOpError() << "bytes [" << getOffset() << ", "
                           << getOffset() + bytes
                           << ") are outside the source's " << srcBytes;
  }
  return success();
}

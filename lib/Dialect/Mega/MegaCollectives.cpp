//===- MegaCollectives.cpp - Verifiers and adjoints of the collectives ----===//
//
// The ops of the "Collectives" block of MegaOps.td. Constraint ids refer to
// docs/dialect.md ("Collectives"). Adjoints are Megatron's conjugate pairs
// (tensor_parallel/mappings.py):
//
//   y = all_reduce(x) sum   dx = dy                    (dy is replicated)
//   y = copy_to_region(x)   dx = all_reduce(dy) sum    (dy is a term per
//   device) y = all_gather(x, d)    dx = reduce_scatter(dy, d) y =
//   reduce_scatter(x,d) dx = all_gather(dy, d)
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/SmallSet.h"

using namespace mlir;
using namespace mega;

/// The mesh shape of the module enclosing `op` (`mega.mesh`), empty if none.
static ArrayRef<int64_t> meshOf(Operation *op) {
  auto module = op->getParentOfType<ModuleOp>();
  if (!module)
    return {};
  if (auto mesh = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh"))
    return mesh.asArrayRef();
  return {};
}

/// collective_c1: `axes` is a non-empty list of distinct mesh axes (< the
/// mesh rank when the module has a `mega.mesh`). Returns the number of
/// devices over the axes, or 0 when the mesh is not known.
static FailureOr<int64_t> verifyAxes(Operation *op, ArrayRef<int64_t> axes) {
  ArrayRef<int64_t> mesh = meshOf(op);
  if (axes.empty())
    return op->emitOpError("needs at least one mesh axis");
  llvm::SmallSet<int64_t, 4> seen;
  int64_t devices = 1;
  for (int64_t a : axes) {
    if (a < 0 || !seen.insert(a).second)
      return op->emitOpError()
             << "mesh axis " << a << " is negative or repeated";
    if (!mesh.empty() && a >= int64_t(mesh.size()))
      return op->emitOpError() << "mesh axis " << a << " is not below the mesh "
                               << "rank " << mesh.size();
    if (!mesh.empty())
      devices *= mesh[a];
  }
  return mesh.empty() ? 0 : devices;
}

/// collective_c3: `small` is `large` with dimension `dim` divided by
/// `devices` (any whole factor when the mesh is not known).
static LogicalResult verifyBlocks(Operation *op, int64_t dim,
                                  RankedTensorType small,
                                  RankedTensorType large, int64_t devices) {
  if (dim < 0 || dim >= small.getRank())
    return op->emitOpError()
           << "dim " << dim << " is out of range for rank " << small.getRank();
  if (small.getRank() != large.getRank())
    return op->emitOpError("operand and result ranks differ");
  for (int64_t d = 0; d < small.getRank(); ++d) {
    int64_t s = small.getDimSize(d), l = large.getDimSize(d);
    if (ShapedType::isDynamic(s) || ShapedType::isDynamic(l))
      continue;
    bool ok =
        d != dim ? s == l : (devices ? l == s * devices : s > 0 && l % s == 0);
    if (!ok)
      return op->emitOpError()
             << "dim " << d << ": " << l << " is not "
             << (d != dim ? "equal to " : "the device count times ") << s;
  }
  return success();
}

LogicalResult AllReduceOp::verify() {
  if (failed(verifyAxes(*this, getAxes())))
    return failure();
  // all_reduce_c1
  if (getKind() != "sum" && getKind() != "max")
    return emitOpError() << "kind must be sum or max, not '" << getKind()
                         << "'";
  return success();
}

LogicalResult CopyToRegionOp::verify() {
  return success(succeeded(verifyAxes(*this, getAxes())));
}

LogicalResult AllGatherOp::verify() {
  FailureOr<int64_t> devices = verifyAxes(*this, getAxes());
  if (failed(devices))
    return failure();
  // all_gather_c1
  if (getX().getType().getElementType() != getType().getElementType())
    return emitOpError("operand and result element types differ");
  return verifyBlocks(*this, getDim(), getX().getType(), getType(), *devices);
}

LogicalResult ReduceScatterOp::verify() {
  FailureOr<int64_t> devices = verifyAxes(*this, getAxes());
  if (failed(devices))
    return failure();
  return verifyBlocks(*this, getDim(), getType(), getX().getType(), *devices);
}

//===----------------------------------------------------------------------===//
// Adjoints
//===----------------------------------------------------------------------===//

LogicalResult AllReduceOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                         SmallVectorImpl<Value> &operandGrads) {
  if (getKind() != "sum" && resultGrads[0])
    return emitOpError("kind max has no gradient");
  operandGrads.assign({resultGrads[0]});
  return success();
}

LogicalResult
CopyToRegionOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                              SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  operandGrads.assign(
      {dy ? Value(b.create<AllReduceOp>(getLoc(), dy, getAxesAttr(),
                                        b.getStringAttr("sum")))
          : Value()});
  return success();
}

LogicalResult AllGatherOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                         SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  operandGrads.assign(
      {dy ? Value(b.create<ReduceScatterOp>(getLoc(), getX().getType(), dy,
                                            getAxesAttr(), getDimAttr()))
          : Value()});
  return success();
}

LogicalResult
ReduceScatterOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                               SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  operandGrads.assign(
      {dy ? Value(b.create<AllGatherOp>(getLoc(), getX().getType(), dy,
                                        getAxesAttr(), getDimAttr()))
          : Value()});
  return success();
}

//===----------------------------------------------------------------------===//
// Vocabulary-parallel embedding and loss (MegaOps.td): verifiers, adjoints.
//===----------------------------------------------------------------------===//

/// Product of the dims (dynamic if any is).
static int64_t numElements(ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (ShapedType::isDynamic(d))
      return ShapedType::kDynamic;
    n *= d;
  }
  return n;
}

/// vocab_c2: `v` is `[rows]` of `x [..., C]`.
static LogicalResult verifyRows(Operation *op, Value x, Value v,
                                StringRef what) {
  auto xt = cast<RankedTensorType>(x.getType());
  auto vt = cast<RankedTensorType>(v.getType());
  int64_t rows = xt.getRank() ? numElements(xt.getShape().drop_back()) : 1;
  if (vt.getRank() != 1 || (!ShapedType::isDynamic(rows) &&
                            !vt.isDynamicDim(0) && vt.getDimSize(0) != rows))
    return op->emitOpError() << what << " must be [rows] = [" << rows << "]";
  return success();
}

/// vocab_c3: `targets` has the leading dims of `logits`.
static LogicalResult verifyTargets(Operation *op, Value logits, Value targets) {
  auto lt = cast<RankedTensorType>(logits.getType());
  auto tt = cast<RankedTensorType>(targets.getType());
  if (lt.getRank() < 1 || tt.getRank() != lt.getRank() - 1)
    return op->emitOpError("targets must have the leading dims of logits");
  for (int64_t i = 0; i < tt.getRank(); ++i)
    if (!tt.isDynamicDim(i) && !lt.isDynamicDim(i) &&
        tt.getDimSize(i) != lt.getDimSize(i))
      return op->emitOpError("targets must have the leading dims of logits");
  return success();
}

LogicalResult VocabEmbeddingOp::verify() {
  if (failed(verifyAxes(*this, getAxes())))
    return failure();
  // vocab_c1
  auto table = getTable().getType();
  if (table.getRank() != 2 ||
      getType().getRank() != getIds().getType().getRank() + 1)
    return emitOpError("needs a [V', H] table and a result of rank ids + 1");
  return success();
}

LogicalResult VocabEmbeddingGradOp::verify() {
  if (failed(verifyAxes(*this, getAxes())))
    return failure();
  // vocab_c1
  if (getType().getRank() != 2 ||
      getDy().getType().getRank() != getIds().getType().getRank() + 1)
    return emitOpError("needs dy of rank ids + 1 and a [V', H] result");
  return success();
}

LogicalResult RowMaxOp::verify() {
  return verifyRows(*this, getX(), getResult(), "result");
}

LogicalResult VocabCrossEntropyStatsOp::verify() {
  if (failed(verifyAxes(*this, getAxes())) ||
      failed(verifyTargets(*this, getLogits(), getTargets())))
    return failure();
  for (auto [v, what] :
       {std::pair{getMax(), "max"}, std::pair{getSumExp(), "sum_exp"},
        std::pair{getTargetLogit(), "target_logit"}})
    if (failed(verifyRows(*this, getLogits(), v, what)))
      return failure();
  return success();
}

LogicalResult VocabCrossEntropyOp::verify() {
  if (failed(verifyAxes(*this, getAxes())) ||
      failed(verifyTargets(*this, getLogits(), getTargets())))
    return failure();
  for (auto [v, what] :
       {std::pair{getMax(), "max"}, std::pair{getSumExp(), "sum_exp"},
        std::pair{getTargetLogit(), "target_logit"},
        std::pair{getLse(), "lse"}})
    if (failed(verifyRows(*this, getLogits(), v, what)))
      return failure();
  return success();
}

LogicalResult VocabCrossEntropyGradOp::verify() {
  if (failed(verifyAxes(*this, getAxes())) ||
      failed(verifyTargets(*this, getLogits(), getTargets())) ||
      failed(verifyRows(*this, getLogits(), getLse(), "lse")))
    return failure();
  if (getType() != getLogits().getType()) // vocab_c4
    return emitOpError("dlogits must have the type of logits");
  return success();
}

LogicalResult
VocabEmbeddingOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                SmallVectorImpl<Value> &operandGrads) {
  Value dy = resultGrads[0];
  operandGrads.assign({Value(), dy ? Value(b.create<VocabEmbeddingGradOp>(
                                         getLoc(), getTable().getType(),
                                         getIds(), dy, getAxesAttr()))
                                   : Value()});
  return success();
}

// The adjoint is the whole derivative of the loss with respect to this
// device's logits (the path through max cancels; sum_exp and target_logit
// are folded in), so the statistics get none.
LogicalResult
VocabCrossEntropyOp::buildGradient(OpBuilder &b, ValueRange resultGrads,
                                   SmallVectorImpl<Value> &operandGrads) {
  if (resultGrads[1])
    return emitOpError("the gradient of lse is not supported");
  Value dloss = resultGrads[0];
  Value dlogits;
  if (dloss)
    dlogits = b.create<VocabCrossEntropyGradOp>(getLoc(), getLogits().getType(),
                                                getLogits(), getTargets(),
                                                getLse(), dloss, getAxesAttr());
  // A padded vocabulary's padded columns get no gradient.
  if (Attribute vocab = (*this)->getAttr("mega.vocab"); vocab && dlogits)
    dlogits.getDefiningOp()->setAttr("mega.vocab", vocab);
  operandGrads.assign({dlogits, Value(), Value(), Value(), Value()});
  return success();
}

//===----------------------------------------------------------------------===//
// Overlapped gradient buckets
//===----------------------------------------------------------------------===//

/// grad_bucket_c1: one mesh axis (the data-parallel one; a plan
/// instruction reduces over one group).
static LogicalResult verifyBucketAxes(Operation *op, ArrayRef<int64_t> axes) {
  if (failed(verifyAxes(op, axes)))
    return failure();
  if (axes.size() != 1)
    return op->emitOpError() << "reduces over one mesh axis, not "
                             << axes.size();
  return success();
}

LogicalResult GradBucketStartOp::verify() {
  if (failed(verifyBucketAxes(*this, getAxes())))
    return failure();
  // grad_bucket_start_c1
  if (getGrads().empty())
    return emitOpError("needs at least one gradient");
  llvm::SmallSet<StringRef, 8> seen;
  for (Attribute a : getGrads())
    if (!seen.insert(cast<StringAttr>(a).getValue()).second)
      return emitOpError() << "names '" << cast<StringAttr>(a).getValue()
                           << "' twice";
  return success();
}

LogicalResult GradBucketWaitOp::verify() {
  if (failed(verifyBucketAxes(*this, getAxes())))
    return failure();
  // grad_bucket_wait_c1
  if (getGrads().empty())
    return emitOpError("needs at least one gradient");
  if (!getScatter()) {
    // grad_bucket_wait_c2
    if (getGrads().getTypes() != getResults().getTypes())
      return emitOpError("results must have the types of the gradients");
    return success();
  }
  // grad_bucket_wait_c3: each result is its gradient's block along dim 0.
  if (getResults().size() != getGrads().size())
    return emitOpError("needs one result per gradient");
  int64_t devices = *verifyAxes(*this, getAxes());
  for (auto [g, r] : llvm::zip(getGrads(), getResults()))
    if (failed(verifyBlocks(*this, 0, cast<RankedTensorType>(r.getType()),
                            cast<RankedTensorType>(g.getType()), devices)))
      return failure();
  return success();
}

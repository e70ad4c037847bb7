//===- MegaAttrs.cpp - Attributes of the mega dialect ---------------------===//
//
// #mega.sharding (MegaAttrs.td): syntax, verifier and helpers.
//
//   sharding  := `<` `[` dim-axes (`,` dim-axes)* `]` (`,` `partial` `=`
//                (`sum` | `max`) axes)? `>`
//   dim-axes  := `[` (integer (`,` integer)*)? `]`
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/SmallSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mega;

#define GET_ATTRDEF_CLASSES
#include "mega/Dialect/Mega/MegaAttrs.cpp.inc"

void MegaDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "mega/Dialect/Mega/MegaAttrs.cpp.inc"
      >();
}

static ParseResult parseAxes(AsmParser &p, SmallVectorImpl<int64_t> &axes) {
  return p.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&] {
    return p.parseInteger(axes.emplace_back());
  });
}

static void printAxes(AsmPrinter &p, ArrayRef<int64_t> axes) {
  p << '[';
  llvm::interleaveComma(axes, p);
  p << ']';
}

Attribute ShardingAttr::parse(AsmParser &p, Type) {
  MLIRContext *ctx = p.getContext();
  SmallVector<Attribute> dims;
  StringAttr kind;
  SmallVector<int64_t> partial;
  if (p.parseLess() ||
      p.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&] {
        SmallVector<int64_t> axes;
        if (parseAxes(p, axes))
          return failure();
        dims.push_back(DenseI64ArrayAttr::get(ctx, axes));
        return success();
      }))
    return {};
  if (succeeded(p.parseOptionalComma())) {
    StringRef k;
    if (p.parseKeyword("partial") || p.parseEqual() || p.parseKeyword(&k) ||
        parseAxes(p, partial))
      return {};
    kind = StringAttr::get(ctx, k);
  }
  if (p.parseGreater())
    return {};
  return p.getChecked<ShardingAttr>(ctx, ArrayAttr::get(ctx, dims), kind,
                                    partial);
}

void ShardingAttr::print(AsmPrinter &p) const {
  p << "<[";
  llvm::interleaveComma(getSplitAxes(), p, [&](Attribute a) {
    printAxes(p, llvm::cast<DenseI64ArrayAttr>(a).asArrayRef());
  });
  p << ']';
  if (isPartial()) {
    p << ", partial = " << getPartialKind().getValue() << ' ';
    printAxes(p, getPartialAxes());
  }
  p << '>';
}

// Constraint ids: docs/dialect.md, "Sharding".
LogicalResult ShardingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   ArrayAttr splitAxes, StringAttr partialKind,
                                   ArrayRef<int64_t> partialAxes) {
  llvm::SmallSet<int64_t, 4> used;
  for (Attribute a : splitAxes) {
    auto axes = llvm::dyn_cast<DenseI64ArrayAttr>(a);
    if (!axes)
      return emitError() << "split axes must be lists of mesh axes";
    for (int64_t axis : axes.asArrayRef())
      if (axis < 0 || !used.insert(axis).second) // sharding_c1
        return emitError() << "mesh axis " << axis
                           << " is negative or used twice";
  }
  bool partial = partialKind && !partialKind.getValue().empty();
  if (partial && partialKind.getValue() != "sum" &&
      partialKind.getValue() != "max") // sharding_c2
    return emitError() << "partial kind must be sum or max, not "
                       << partialKind.getValue();
  if (partial == partialAxes.empty()) // sharding_c3
    return emitError() << "partial needs a kind and at least one mesh axis";
  for (int64_t axis : partialAxes)
    if (axis < 0 || !used.insert(axis).second) // sharding_c1
      return emitError() << "mesh axis " << axis
                         << " is negative or used twice";
  return success();
}

ShardingAttr ShardingAttr::getReplicated(MLIRContext *ctx, int64_t rank) {
  SmallVector<Attribute> dims(rank, DenseI64ArrayAttr::get(ctx, {}));
  return get(ctx, ArrayAttr::get(ctx, dims), StringAttr(), {});
}

ShardingAttr ShardingAttr::getSplit(MLIRContext *ctx, int64_t rank, int64_t dim,
                                    int64_t axis) {
  SmallVector<Attribute> dims(rank, DenseI64ArrayAttr::get(ctx, {}));
  dims[dim] = DenseI64ArrayAttr::get(ctx, {axis});
  return get(ctx, ArrayAttr::get(ctx, dims), StringAttr(), {});
}

ShardingAttr ShardingAttr::getPartial(MLIRContext *ctx, int64_t rank,
                                      StringRef kind, int64_t axis) {
  SmallVector<Attribute> dims(rank, DenseI64ArrayAttr::get(ctx, {}));
  return get(ctx, ArrayAttr::get(ctx, dims), StringAttr::get(ctx, kind),
             {axis});
}

ArrayRef<int64_t> ShardingAttr::getDimAxes(int64_t dim) const {
  return llvm::cast<DenseI64ArrayAttr>(getSplitAxes()[dim]).asArrayRef();
}

int64_t ShardingAttr::getSplitDim() const {
  int64_t found = -1;
  for (int64_t d = 0, e = getRank(); d < e; ++d)
    if (!getDimAxes(d).empty())
      found = found == -1 ? d : -2;
  return found;
}

//===----------------------------------------------------------------------===//
// The discardable attributes that carry shardings (docs/dialect.md)
//===----------------------------------------------------------------------===//

LogicalResult MegaDialect::verifyOperationAttribute(Operation *op,
                                                    NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  if (name == "mega.mesh") { // mesh_c1
    auto mesh = dyn_cast<DenseI64ArrayAttr>(attr.getValue());
    if (!mesh || mesh.empty() ||
        llvm::any_of(mesh.asArrayRef(), [](int64_t n) { return n <= 0; }))
      return op->emitOpError("mega.mesh must be a non-empty array<i64> of "
                             "positive axis sizes");
    return success();
  }
  if (name == "mega.sharding") { // sharding_c4
    SmallVector<Attribute> list;
    if (auto one = dyn_cast<ShardingAttr>(attr.getValue()))
      list.push_back(one);
    else if (auto many = dyn_cast<ArrayAttr>(attr.getValue()))
      list.assign(many.begin(), many.end());
    if (list.size() != op->getNumResults())
      return op->emitOpError("mega.sharding must give one #mega.sharding per "
                             "result");
    for (auto [a, r] : llvm::zip(list, op->getResults())) {
      auto s = dyn_cast<ShardingAttr>(a);
      auto t = dyn_cast<RankedTensorType>(r.getType());
      if (!s || !t || s.getRank() != t.getRank())
        return op->emitOpError("mega.sharding must give one #mega.sharding "
                               "of the result's rank per result");
    }
    return success();
  }
  if (name == "mega.shard_groups") { // sharding_c5
    auto g = dyn_cast<IntegerAttr>(attr.getValue());
    if (!g || g.getInt() < 2 || !op->hasAttr("mega.sharding"))
      return op->emitOpError("mega.shard_groups must be an integer >= 2 on "
                             "an op with mega.sharding");
    return success();
  }
  return success();
}

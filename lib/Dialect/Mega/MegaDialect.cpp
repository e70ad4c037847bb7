//===- MegaDialect.cpp - The mega dialect and its syntax ------------------===//
//
// Dialect registration, the custom assembly directives of the ops (sizes by
// name, init specs) and the size helpers. Verifiers are in MegaOps.cpp, shape
// rules in MegaShapes.cpp.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;
using namespace mega;

#include "mega/Dialect/Mega/MegaDialect.cpp.inc"
#include "mega/Dialect/Mega/MegaInterfaces.cpp.inc"

void MegaDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "mega/Dialect/Mega/MegaOps.cpp.inc"
      >();
  registerAttributes();
  registerShardingRules();
}

Operation *MegaDialect::materializeConstant(OpBuilder &builder,
                                            Attribute value, Type type,
                                            Location loc) {
  auto splat = dyn_cast<SplatElementsAttr>(value);
  auto tensorType = dyn_cast<RankedTensorType>(type);
  if (!splat || !tensorType || !tensorType.hasStaticShape())
    return nullptr;
  double v;
  if (auto f = dyn_cast<FloatAttr>(splat.getSplatValue<Attribute>()))
    v = f.getValueAsDouble();
  else if (auto i = dyn_cast<IntegerAttr>(splat.getSplatValue<Attribute>()))
    v = double(i.getValue().getSExtValue());
  else
    return nullptr;
  return builder.create<FillOp>(loc, tensorType, builder.getF64FloatAttr(v));
}

//===----------------------------------------------------------------------===//
// Sizes
//===----------------------------------------------------------------------===//

static bool isIdentifier(StringRef s) {
  if (s.empty() || !(llvm::isAlpha(s[0]) || s[0] == '_'))
    return false;
  return llvm::all_of(s, [](char c) { return llvm::isAlnum(c) || c == '_'; });
}

FailureOr<SizeExpr> mega::parseSizeExpr(Attribute size) {
  if (auto i = dyn_cast_or_null<IntegerAttr>(size))
    return SizeExpr{i.getInt(), StringRef()};
  auto s = dyn_cast_or_null<StringAttr>(size);
  if (!s)
    return failure();
  StringRef text = s.getValue();
  SizeExpr e;
  auto [factor, name] = text.split('*');
  if (!name.empty()) {
    if (factor.getAsInteger(10, e.factor))
      return failure();
    text = name;
  }
  if (!isIdentifier(text))
    return failure();
  e.name = text;
  return e;
}

int64_t mega::staticSize(Attribute size) {
  if (auto i = dyn_cast_or_null<IntegerAttr>(size))
    return i.getInt();
  return ShapedType::kDynamic;
}

bool mega::allSizesStatic(ArrayAttr dims) {
  return llvm::all_of(dims, [](Attribute a) { return isa<IntegerAttr>(a); });
}

FailureOr<int64_t> mega::resolveSize(Attribute size, DictionaryAttr hparams,
                                     Location loc) {
  FailureOr<SizeExpr> e = parseSizeExpr(size);
  if (failed(e))
    return emitError(loc) << "malformed size " << size;
  int64_t value = e->factor;
  if (!e->name.empty()) {
    auto v = hparams ? dyn_cast_or_null<IntegerAttr>(hparams.get(e->name))
                     : IntegerAttr();
    if (!v) {
      InFlightDiagnostic d = emitError(loc)
                             << "unknown hyper-parameter '" << e->name
                             << "'; the model has: ";
      if (!hparams || hparams.empty())
        d << "(none)";
      else
        llvm::interleaveComma(hparams, d, [&](NamedAttribute a) {
          d << a.getName().getValue();
        });
      return d;
    }
    value *= v.getInt();
  }
  if (value <= 0)
    return emitError(loc) << "size " << size << " is " << value
                          << "; sizes must be positive";
  return value;
}

bool mega::areCompatibleTypes(TypeRange l, TypeRange r) {
  if (l.size() != r.size())
    return false;
  for (auto [a, b] : llvm::zip(l, r)) {
    if (a == b)
      continue;
    auto ta = dyn_cast<RankedTensorType>(a);
    auto tb = dyn_cast<RankedTensorType>(b);
    if (!ta || !tb || ta.getElementType() != tb.getElementType() ||
        ta.getRank() != tb.getRank())
      return false;
    for (auto [x, y] : llvm::zip(ta.getShape(), tb.getShape()))
      if (!ShapedType::isDynamic(x) && !ShapedType::isDynamic(y) && x != y)
        return false;
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Custom assembly directives
//===----------------------------------------------------------------------===//

/// size := integer | integer `*` name | name | string
static ParseResult parseSize(OpAsmParser &p, Attribute &size) {
  Builder b(p.getContext());
  int64_t value;
  OptionalParseResult intResult = p.parseOptionalInteger(value);
  if (intResult.has_value()) {
    if (failed(*intResult))
      return failure();
    if (failed(p.parseOptionalStar())) {
      size = b.getI64IntegerAttr(value);
      return success();
    }
    StringRef name;
    if (p.parseKeyword(&name))
      return failure();
    size = b.getStringAttr(llvm::Twine(value) + "*" + name);
    return success();
  }
  std::string text;
  StringRef name;
  SMLoc loc = p.getCurrentLocation();
  if (succeeded(p.parseOptionalKeyword(&name)))
    text = name.str();
  else if (failed(p.parseOptionalString(&text)))
    return p.emitError(loc, "expected a size: an integer, a hyper-parameter "
                            "name or `k*name`");
  size = b.getStringAttr(text);
  if (failed(parseSizeExpr(size)))
    return p.emitError(loc, "malformed size '")
           << text << "'";
  return success();
}

static void printSize(OpAsmPrinter &p, Operation *, Attribute size) {
  if (auto i = dyn_cast<IntegerAttr>(size)) {
    p << i.getInt();
    return;
  }
  auto s = cast<StringAttr>(size);
  if (succeeded(parseSizeExpr(s)))
    p << s.getValue();
  else
    p << s;
}

/// dims := `[` (size (`,` size)*)? `]`
static ParseResult parseDims(OpAsmParser &p, ArrayAttr &dims) {
  SmallVector<Attribute> sizes;
  if (p.parseCommaSeparatedList(OpAsmParser::Delimiter::Square, [&] {
        Attribute s;
        if (parseSize(p, s))
          return failure();
        sizes.push_back(s);
        return success();
      }))
    return failure();
  dims = ArrayAttr::get(p.getContext(), sizes);
  return success();
}

static void printDims(OpAsmPrinter &p, Operation *op, ArrayAttr dims) {
  p << '[';
  llvm::interleaveComma(dims, p, [&](Attribute a) { printSize(p, op, a); });
  p << ']';
}

/// init := `normal` `(` float `)` | `zeros` | `ones`
static ParseResult parseInit(OpAsmParser &p, StringAttr &init, FloatAttr &std) {
  StringRef kind;
  SMLoc loc = p.getCurrentLocation();
  if (p.parseKeyword(&kind))
    return failure();
  init = p.getBuilder().getStringAttr(kind);
  if (kind == "normal") {
    double v;
    if (p.parseLParen() || p.parseFloat(v) || p.parseRParen())
      return failure();
    std = p.getBuilder().getF64FloatAttr(v);
    return success();
  }
  if (kind != "zeros" && kind != "ones")
    return p.emitError(loc, "expected init normal(std), zeros or ones");
  return success();
}

static void printInit(OpAsmPrinter &p, Operation *, StringAttr init,
                      FloatAttr std) {
  p << init.getValue();
  if (std) {
    SmallString<16> text;
    std.getValue().toString(text);
    // MLIR float literals need a '.': "1" -> "1.0", "2E-2" -> "2.0E-2".
    if (!StringRef(text).contains('.')) {
      size_t e = StringRef(text).find_insensitive('e');
      if (e == StringRef::npos)
        text += ".0";
      else
        text.insert(text.begin() + e, {'.', '0'});
    }
    p << '(' << text << ')';
  }
}

/// The result type of mega.input; its element type is also kept as the
/// `element_type` attribute so that the shape rule can rebuild the type.
static ParseResult parseInputType(OpAsmParser &p, TypeAttr &elementType,
                                  Type &resultType) {
  SMLoc loc = p.getCurrentLocation();
  if (p.parseType(resultType))
    return failure();
  auto t = dyn_cast<RankedTensorType>(resultType);
  if (!t)
    return p.emitError(loc, "expected a ranked tensor type");
  elementType = TypeAttr::get(t.getElementType());
  return success();
}

static void printInputType(OpAsmPrinter &p, Operation *, TypeAttr,
                           Type resultType) {
  p << resultType;
}

#define GET_OP_CLASSES
#include "mega/Dialect/Mega/MegaOps.cpp.inc"

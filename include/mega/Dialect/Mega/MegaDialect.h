//===- MegaDialect.h - The mega dialect -------------------------*- C++ -*-===//
//
// Include "mega/Dialect/Mega/MegaOps.h" to use the ops; this header has the
// dialect class, the side-effect resources, and the size helpers shared by
// the ops and mega-specialize.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_MEGADIALECT_H
#define MEGA_DIALECT_MEGA_MEGADIALECT_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "mega/Dialect/Mega/MegaDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "mega/Dialect/Mega/MegaAttrs.h.inc"

namespace mega {

/// Persistent tensors: parameters, gradient accumulators, optimizer state.
struct StateResource : mlir::SideEffects::Resource::Base<StateResource> {
  llvm::StringRef getName() final { return "mega::state"; }
};

/// A program's runtime ports (inputs and outputs).
struct PortResource : mlir::SideEffects::Resource::Base<PortResource> {
  llvm::StringRef getName() final { return "mega::port"; }
};

/// Marker trait of elementwise ops (allowed in `mega.fused`).
template <typename ConcreteType>
class MegaElementwise
    : public mlir::OpTrait::TraitBase<ConcreteType, MegaElementwise> {};

/// The name of the module attribute holding a model's hyper-parameters.
inline constexpr llvm::StringLiteral kHParamsAttr = "mega.hparams";
/// A function attribute overriding hyper-parameters for that program only
/// (`@predict` has `mega.overrides = {batch = 1 : i64}`).
inline constexpr llvm::StringLiteral kOverridesAttr = "mega.overrides";

//===----------------------------------------------------------------------===//
// Sizes: an IntegerAttr, or a StringAttr "name" / "k*name" naming a
// hyper-parameter (docs/dialect.md, "Sizes").
//===----------------------------------------------------------------------===//

/// A size split into factor and name ("3*hidden" -> {3, "hidden"}; "hidden"
/// -> {1, "hidden"}; an integer n -> {n, ""}).
struct SizeExpr {
  int64_t factor = 1;
  llvm::StringRef name;
};
/// Decomposes a size attribute; failure if it is neither form.
mlir::FailureOr<SizeExpr> parseSizeExpr(mlir::Attribute size);

/// The integer value of a size, or ShapedType::kDynamic if it is by name.
int64_t staticSize(mlir::Attribute size);

/// Resolves a size against `hparams` (name -> IntegerAttr). Emits an error at
/// `loc` naming the unknown hyper-parameter (and listing the known ones) or
/// the non-positive value.
mlir::FailureOr<int64_t> resolveSize(mlir::Attribute size,
                                     mlir::DictionaryAttr hparams,
                                     mlir::Location loc);

/// True when every dimension size in `dims` is an IntegerAttr.
bool allSizesStatic(mlir::ArrayAttr dims);

/// Two type lists are compatible when they have the same length and each pair
/// has the same element type, rank and dims that agree where both are static.
bool areCompatibleTypes(mlir::TypeRange l, mlir::TypeRange r);

} // namespace mega

#endif // MEGA_DIALECT_MEGA_MEGADIALECT_H

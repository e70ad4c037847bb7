//===- MegaAttrs.td - Attributes of the mega dialect ------*- tablegen -*-===//
//
// #mega.sharding: how a tensor is laid out over the device mesh, with the
// meaning of MLIR's upstream `mesh` sharding (/work/shared/notes/
// mlir19-mesh-dialect.md explains why we keep our own): per tensor dimension
// the mesh axes it is split over, and optionally `partial = sum|max` over
// mesh axes (each device holds a term of the value until an all_reduce).
// The mesh is the module attribute `mega.mesh = array<i64: T>` (axis 0 is the
// tensor-parallel axis).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_ATTRS
#define MEGA_DIALECT_MEGA_ATTRS

include "mega/Dialect/Mega/MegaDialect.td"
include "mlir/IR/AttrTypeBase.td"

def Mega_ShardingAttr : AttrDef<Mega_Dialect, "Sharding"> {
  let mnemonic = "sharding";
  let summary = "split mesh axes per tensor dimension, and partial reduction";
  let description = [{
    `split_axes[d]` lists the mesh axes dimension `d` is split over (empty:
    not split); device `r` holds the `r`-th contiguous block. `partial_kind`
    (`sum` or `max`, empty when not partial) over `partial_axes` says every
    device holds a term whose reduction over those axes is the value. Types
    of sharded values are the per-device (local) shapes.

    ```mlir
    #mega.sharding<[[], [0]]>                 // columns split over axis 0
    #mega.sharding<[[], [], []], partial = sum [0]>
    ```
  }];
  let parameters = (ins
    "::mlir::ArrayAttr":$split_axes,
    DefaultValuedParameter<"::mlir::StringAttr", "::mlir::StringAttr()">:$partial_kind,
    OptionalArrayRefParameter<"int64_t">:$partial_axes);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Not split and not partial.
    static ShardingAttr getReplicated(::mlir::MLIRContext *ctx, int64_t rank);
    /// Dimension `dim` split over mesh axis `axis`, nothing partial.
    static ShardingAttr getSplit(::mlir::MLIRContext *ctx, int64_t rank,
                                 int64_t dim, int64_t axis = 0);
    /// Nothing split, partial `kind` over mesh axis `axis`.
    static ShardingAttr getPartial(::mlir::MLIRContext *ctx, int64_t rank,
                                   ::llvm::StringRef kind, int64_t axis = 0);
    int64_t getRank() const { return getSplitAxes().size(); }
    /// The mesh axes dimension `dim` is split over (empty: none).
    ::llvm::ArrayRef<int64_t> getDimAxes(int64_t dim) const;
    /// The one split dimension, or -1 (none); -2 when several are split.
    int64_t getSplitDim() const;
    bool isPartial() const { return getPartialKind() && !getPartialKind().getValue().empty(); }
    bool isReplicated() const { return getSplitDim() == -1 && !isPartial(); }
  }];
}

#endif // MEGA_DIALECT_MEGA_ATTRS

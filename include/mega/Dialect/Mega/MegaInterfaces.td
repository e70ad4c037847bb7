//===- MegaInterfaces.td - Op interfaces of the mega dialect -*- tablegen -*-===//
//
// Passes know ops only through these interfaces (docs/compiler.md): adding an
// op means writing its own rules, never touching a pass.
//
//  * SizedOpInterface     - sizes given by hyper-parameter name (mega-specialize)
//  * DecomposeOpInterface - model-level op -> tensor-level ops (mega-decompose)
//  * GradientOpInterface  - the adjoint of a differentiable op (mega-autodiff)
//  * ShardingOpInterface  - how operand shardings imply result shardings
//                           (mega-tensor-parallel)
//  * MixedPrecisionOpInterface - which operands may be bf16 (tensor cores)
//                           (mega-mixed-precision)
//
// Shapes use the builtin InferTypeOpInterface (rules in MegaShapes.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_INTERFACES
#define MEGA_DIALECT_MEGA_INTERFACES

include "mlir/IR/OpBase.td"

def Mega_SizedOpInterface : OpInterface<"SizedOpInterface"> {
  let cppNamespace = "::mega";
  let description = [{
    An op some of whose sizes may be written as a hyper-parameter name
    (`hidden`), a multiple of one (`3*hidden`) or an integer. A size is stored
    as an IntegerAttr (resolved) or a StringAttr (by name); see
    `mega::resolveSize` in MegaDialect.h. `mega-specialize` calls
    `resolveSizes` with the effective hyper-parameters; afterwards every size
    is an IntegerAttr and the op's result types can be made static.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{
        Replaces every size attribute by the IntegerAttr `resolve` returns for
        it. `resolve` emits the diagnostic and returns failure for unknown
        names or non-positive values.
      }],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"resolveSizes",
      /*args=*/(ins "::llvm::function_ref<::mlir::FailureOr<int64_t>(::mlir::Attribute)>":$resolve)
    >,
  ];
}

def Mega_DecomposeOpInterface : OpInterface<"DecomposeOpInterface"> {
  let cppNamespace = "::mega";
  let description = [{
    A model-level op that `mega-decompose` rewrites into tensor-level ops
    (bodies in lib/Dialect/Mega/MegaDecompositions.cpp). Needs static operand
    shapes (run after mega-specialize and mega-infer-shapes).
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{
        Builds the tensor-level equivalent at the op's position with
        `rewriter` and replaces the op. `fusedAttention`: attention becomes
        one `mega.flash_attention` instead of matmul/softmax/matmul. On failure emits a diagnostic and
        leaves the IR unchanged.
      }],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"decompose",
      /*args=*/(ins "::mlir::RewriterBase &":$rewriter,
                    "bool":$fusedAttention)
    >,
  ];
}

def Mega_GradientOpInterface : OpInterface<"GradientOpInterface"> {
  let cppNamespace = "::mega";
  let description = [{
    The reverse-mode rule of a differentiable op (bodies in
    lib/Dialect/Mega/MegaGradients.cpp). `mega-autodiff` walks the forward
    program backwards and asks each op for the gradients of its operands given
    the gradients of its results.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{
        Emits, at `b`'s insertion point, the ops computing the gradient of each
        operand. `resultGrads` has one entry per result: the gradient flowing
        into that result, or a null Value when the result has none.
        `operandGrads` receives one entry per operand (null Value: no gradient,
        e.g. integer ids or targets). Returns failure (with a diagnostic) when
        the rule does not apply.
      }],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"buildGradient",
      /*args=*/(ins "::mlir::OpBuilder &":$b,
                    "::mlir::ValueRange":$resultGrads,
                    "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)
    >,
  ];
}

def Mega_ShardingOpInterface : OpInterface<"ShardingOpInterface"> {
  let cppNamespace = "::mega";
  let description = [{
    The sharding rule of an op (bodies in lib/Dialect/Mega/MegaSharding.cpp;
    #mega.sharding in MegaAttrs.td). `mega-tensor-parallel` propagates
    shardings forward through the program by asking each op, given the
    shardings its operands have, which shardings it needs them to have and
    which its results then get. The pass satisfies a need by splitting a
    `mega.param` (a layout decision, free) or by reducing a partial operand
    with `mega.all_reduce` (a collective); anything else rejects the
    decision that led there. An op without the interface accepts only
    replicated operands.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{
        `operands` has one (non-null) sharding per operand, in global
        (unsharded) terms. On success fills `rule.operands` (the sharding each
        operand must have) and `rule.results` (one per result). Fails, without
        a diagnostic, when the op cannot compute with these operand shardings
        short of a collective on an operand that is not partial.
      }],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"getShardingRule",
      /*args=*/(ins "::llvm::ArrayRef<::mega::ShardingAttr>":$operands,
                    "::mega::ShardingRule &":$rule)
    >,
    InterfaceMethod<
      /*desc=*/[{
        Called by the pass once the op's operands and results have their
        per-device types, with the operands' shardings (as the rule
        accepted them). An op whose per-device form is another op or several
        (the vocabulary-parallel embedding and loss, with their collectives)
        builds it with `rewriter`, replaces itself and returns the op that
        now defines its results; otherwise returns itself.
      }],
      /*retTy=*/"::mlir::Operation *",
      /*methodName=*/"partition",
      /*args=*/(ins "::mlir::RewriterBase &":$rewriter,
                    "::llvm::ArrayRef<::mega::ShardingAttr>":$operands)
    >,
  ];
}

def Mega_MixedPrecisionOpInterface : OpInterface<"MixedPrecisionOpInterface"> {
  let cppNamespace = "::mega";
  let description = [{
    An op that computes in fp32 but can read some operands in bf16 (tensor
    cores: bf16 products, fp32 accumulation). `mega-mixed-precision` casts
    exactly these operands; the results stay f32. Bodies in
    lib/Dialect/Mega/MegaPrecision.cpp.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{
        The indices of the operands that may be bf16 (the op's numerics are
        then those of bf16 inputs with fp32 accumulation).
      }],
      /*retTy=*/"::llvm::SmallVector<unsigned>",
      /*methodName=*/"getLowPrecisionOperands",
      /*args=*/(ins)
    >,
  ];
}

#endif // MEGA_DIALECT_MEGA_INTERFACES

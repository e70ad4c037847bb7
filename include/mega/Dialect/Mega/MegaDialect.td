//===- MegaDialect.td - The mega dialect ------------------*- tablegen -*-===//
//
// One dialect at four levels (docs/compiler.md): model, tensor, training and
// kernel. Tensors are builtin ranked tensors (f32 data, i32 token ids).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_DIALECT
#define MEGA_DIALECT_MEGA_DIALECT

include "mlir/IR/OpBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Mega_Dialect : Dialect {
  let name = "mega";
  let cppNamespace = "::mega";
  let summary = "Models, their training programs and their kernels";
  let description = [{
    The `mega` dialect describes a neural network model once (model level:
    `mega.param`, `mega.linear`, `mega.attention`, `mega.repeat`, ...),
    decomposes it into a small set of tensor primitives (tensor level),
    adds the backward pass and optimizer (training level) and finally maps
    every op to one instruction of the plan the runtime executes (kernel
    level). docs/dialect.md lists every op's semantics and constraints.

    A model's hyper-parameters are the module attribute
    `mega.hparams = {layers = 12 : i64, hidden = 768 : i64, ...}`; sizes may be
    written by name and are resolved by `mega-specialize`.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect"];
  let hasConstantMaterializer = 1;
  // #mega.sharding (MegaAttrs.td).
  let useDefaultAttributePrinterParser = 1;
  // `mega.sharding`, `mega.shard_groups`, `mega.mesh` (MegaAttrs.cpp).
  let hasOperationAttrVerify = 1;
  let extraClassDeclaration = [{
    void registerAttributes(); // MegaAttrs.cpp
    void registerShardingRules(); // MegaSharding.cpp
  }];
}

// Memory-effect resources: persistent tensors (parameters, gradients,
// optimizer state) and the program's runtime ports (inputs, outputs).
def Mega_StateResource : Resource<"::mega::StateResource">;
def Mega_PortResource : Resource<"::mega::PortResource">;

// Elementwise ops (may appear in `mega.fused`).
def Mega_Elementwise : NativeOpTrait<"MegaElementwise"> {
  let cppNamespace = "::mega";
}

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//
def Mega_F32Tensor : RankedTensorOf<[F32]>;
def Mega_I32Tensor : RankedTensorOf<[I32]>;
// f32, or bf16 where `mega-mixed-precision` cast an operand for tensor cores.
def Mega_FloatTensor : RankedTensorOf<[F32, BF16]>;
def Mega_AnyTensor : RankedTensorOf<[F32, BF16, I32]>;
def Mega_F32Scalar : 0DTensorOf<[F32]>;
def Mega_Scalar : 0DTensorOf<[F32, I32]>;

// A signed 64-bit integer attribute (getters return int64_t, unlike I64Attr's
// uint64_t, so negative values are caught by the verifiers).
def Mega_I64Attr : TypedSignlessIntegerAttrBase<I64, "int64_t",
                                                "64-bit integer attribute">;

// A size: an integer, or a hyper-parameter name / multiple (`3*hidden`).
def Mega_SizeAttr : AnyAttrOf<[I64Attr, StrAttr]>;

class Mega_Op<string mnemonic, list<Trait> traits = []>
    : Op<Mega_Dialect, mnemonic, traits>;

#endif // MEGA_DIALECT_MEGA_DIALECT

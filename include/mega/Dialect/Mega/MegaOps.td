//===- MegaOps.td - Ops of the mega dialect ---------------*- tablegen -*-===//
//
// All ops of docs/compiler.md, in its four levels. Constraint ids (`matmul_c2`)
// refer to docs/dialect.md; verifiers (MegaOps.cpp) cite them.
//
// Type syntax: every op spells its operand and result types
// (`: operand types -> result types`), so IR round-trips at every stage even
// while some types are still dynamic (`?`) and others are already static.
// Result types of ops with an InferTypeOpInterface rule (MegaShapes.cpp) must
// be compatible with the rule: equal where both are static.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_OPS
#define MEGA_DIALECT_MEGA_OPS

include "mega/Dialect/Mega/MegaDialect.td"
include "mega/Dialect/Mega/MegaInterfaces.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"

// Result types follow from operands and attributes (MegaShapes.cpp).
defvar Shaped = InferTypeOpAdaptorWithIsCompatible;
// The op has a reverse-mode rule (MegaGradients.cpp).
defvar Differentiable = DeclareOpInterfaceMethods<Mega_GradientOpInterface>;
// Sizes may be given by hyper-parameter name (MegaSizes.cpp).
defvar Sized = DeclareOpInterfaceMethods<Mega_SizedOpInterface>;
// Rewritten into tensor-level ops (MegaDecompositions.cpp).
defvar Decomposable = DeclareOpInterfaceMethods<Mega_DecomposeOpInterface>;
// Some operands may be bf16 for tensor cores (MegaPrecision.cpp).
defvar LowPrecision = DeclareOpInterfaceMethods<Mega_MixedPrecisionOpInterface>;

//===----------------------------------------------------------------------===//
// Model level
//===----------------------------------------------------------------------===//

def Mega_ParamOp : Mega_Op<"param",
    [MemoryEffects<[MemRead<Mega_StateResource>]>, Shaped, Sized]> {
  let summary = "a trainable parameter";
  let description = [{
    Reads the trainable parameter `name`. Its dimensions are integers or
    hyper-parameter sizes (`hidden`, `3*hidden`), resolved by
    `mega-specialize`. `init` says how the runtime initialises it when no
    checkpoint is loaded: `normal(std)` (mean 0), `zeros` or `ones`.
    `scaled_init` divides the std by sqrt(2 * count of the enclosing
    `mega.repeat`) (GPT-2's residual projections); `mega-unroll` applies it.

    Inside `mega.repeat` the name is relative to the layer: unrolling prepends
    `prefix.{i}.`. Weight decay applies to parameters of rank >= 2.

    ```mlir
    %wte = mega.param "wte.weight" [vocab, hidden] init normal(0.02) : tensor<?x?xf32>
    %w = mega.param "attn.c_proj.weight" [hidden, hidden] init normal(0.02) scaled_init : tensor<?x?xf32>
    %b = mega.param "ln_f.bias" [768] init zeros : tensor<768xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, ArrayAttr:$dims, StrAttr:$init,
                   OptionalAttr<F64Attr>:$std, UnitAttr:$scaled_init);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $name custom<Dims>($dims) `init` custom<Init>($init, $std)
    (`scaled_init` $scaled_init^)? attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_InputOp : Mega_Op<"input",
    [MemoryEffects<[MemRead<Mega_PortResource>]>, Shaped, Sized]> {
  let summary = "a tensor fed by the runtime";
  let description = [{
    Reads the program input `name` (`tokens`, `targets`: i32). Dimensions as
    for `mega.param`; the element type is the result's.

    ```mlir
    %tokens = mega.input "tokens" [batch, seq] : tensor<?x?xi32>
    ```
  }];
  let arguments = (ins StrAttr:$name, ArrayAttr:$dims,
                   TypeAttr:$element_type);
  let results = (outs Mega_AnyTensor:$result);
  let assemblyFormat = [{
    $name custom<Dims>($dims) attr-dict `:` custom<InputType>($element_type, type($result))
  }];
  let hasVerifier = 1;
}

def Mega_OutputOp : Mega_Op<"output",
    [MemoryEffects<[MemWrite<Mega_PortResource>]>]> {
  let summary = "a program output";
  let description = [{
    Makes `value` the program output `name` (`loss`, `logits`, `grad_norm`).

    ```mlir
    mega.output "loss", %loss : tensor<f32>
    ```
  }];
  let arguments = (ins StrAttr:$name, Mega_AnyTensor:$value);
  let assemblyFormat = "$name `,` $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def Mega_EmbeddingOp : Mega_Op<"embedding", [Pure, Shaped, Differentiable]> {
  let summary = "rows of a table picked by ids";
  let description = [{
    `result[..., :] = table[ids[...], :]`: ids `[...]` (i32) and table `[V, H]`
    give `[..., H]`. Ids outside `[0, V)` are an error at run time.

    ```mlir
    %x = mega.embedding %tokens, %wte : tensor<8x1024xi32>, tensor<50257x768xf32> -> tensor<8x1024x768xf32>
    ```
  }];
  let arguments = (ins Mega_I32Tensor:$ids, Mega_F32Tensor:$table);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $ids `,` $table attr-dict `:` type($ids) `,` type($table) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_LayerNormOp : Mega_Op<"layer_norm", [Pure, Shaped, Differentiable]> {
  let summary = "layer normalisation over the last dimension";
  let description = [{
    `y = (x - mean) * rstd * weight + bias` over the last dimension `C` of
    `x [..., C]`, with `rstd = 1 / sqrt(var + eps)` (biased variance).
    Also returns `mean` and `rstd` per row (`[rows]`, rows = product of the
    leading dimensions), which its gradient reuses.

    ```mlir
    %y, %mean, %rstd = mega.layer_norm %x, %w, %b {eps = 1.0e-05 : f64}
        : tensor<4x32x64xf32>, tensor<64xf32>, tensor<64xf32>
        -> tensor<4x32x64xf32>, tensor<128xf32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, Mega_F32Tensor:$weight,
                   Mega_F32Tensor:$bias,
                   DefaultValuedAttr<F64Attr, "1e-5">:$eps);
  let results = (outs Mega_F32Tensor:$y, Mega_F32Tensor:$mean,
                 Mega_F32Tensor:$rstd);
  let assemblyFormat = [{
    $x `,` $weight `,` $bias attr-dict `:` type($x) `,` type($weight) `,`
    type($bias) `->` type($y) `,` type($mean) `,` type($rstd)
  }];
  let hasVerifier = 1;
}

def Mega_LinearOp : Mega_Op<"linear", [Pure, Shaped, Decomposable]> {
  let summary = "affine map in Conv1D layout";
  let description = [{
    `x [..., K] @ weight [K, N] + bias [N]` (bias optional). `mega-decompose`
    turns it into `mega.matmul` and `mega.add`.

    ```mlir
    %h = mega.linear %x, %w, %b : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, Mega_F32Tensor:$weight,
                   Optional<Mega_F32Tensor>:$bias);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $x `,` $weight (`,` $bias^)? attr-dict `:` type(operands) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_AttentionOp : Mega_Op<"attention", [Pure, Shaped, Sized, Decomposable]> {
  let summary = "multi-head self-attention with fused q|k|v projection";
  let description = [{
    For `x [B, S, H]`: `qkv = x @ w_qkv [H, 3H] + b_qkv [3H]` (columns q|k|v,
    heads contiguous in each), per head `softmax(q k^T / sqrt(H/heads))`
    (masked above the diagonal when `causal`) times `v`, heads concatenated,
    then `@ w_o [H, H] + b_o [H]`. `heads` is an integer or a hyper-parameter
    name and must divide `H`.

    ```mlir
    %a = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(heads) causal
        : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<?xf32>
        -> tensor<?x?x?xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, Mega_F32Tensor:$w_qkv,
                   Mega_F32Tensor:$b_qkv, Mega_F32Tensor:$w_o,
                   Mega_F32Tensor:$b_o, Mega_SizeAttr:$heads,
                   UnitAttr:$causal);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $x `,` $w_qkv `,` $b_qkv `,` $w_o `,` $b_o `heads` `(` custom<Size>($heads) `)`
    (`causal` $causal^)? attr-dict `:` type(operands) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_RepeatOp : Mega_Op<"repeat",
    [RecursiveMemoryEffects, Shaped, Sized]> {
  let summary = "a block of layers applied `count` times";
  let description = [{
    Applies the body `count` times to the carried value: the body's single
    block argument is the value from the previous iteration (`init` first)
    and `mega.yield` gives the next. Parameter names in the body are relative:
    `mega-unroll` makes `count` copies with names prefixed `prefix.{i}.`.
    The result type is the type of `init` (both are spelled, so that IR
    printed while `init` is already static and the result not yet stays
    parseable).

    ```mlir
    %y = mega.repeat %x count(layers) prefix "h" : tensor<?x?x?xf32> -> tensor<?x?x?xf32> {
    ^bb0(%h: tensor<?x?x?xf32>):
      %w = mega.param "ln_1.weight" [hidden] init ones : tensor<?xf32>
      ...
      mega.yield %h2 : tensor<?x?x?xf32>
    }
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$init, Mega_SizeAttr:$count,
                   StrAttr:$prefix);
  let results = (outs Mega_F32Tensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $init `count` `(` custom<Size>($count) `)` `prefix` $prefix attr-dict
    `:` type($init) `->` type($result) $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
}

def Mega_CrossEntropyOp : Mega_Op<"cross_entropy",
    [Pure, Shaped, Differentiable, LowPrecision]> {
  let summary = "mean token cross-entropy";
  let description = [{
    For `logits [..., V]` and `targets [...]` (i32, same leading dims):
    `loss = mean over rows of (lse - logits[row, target])` with
    `lse = log(sum(exp(logits[row, :])))`. Results: `loss` (`tensor<f32>`) and
    `lse` (`[rows]`, for the gradient).

    ```mlir
    %loss, %lse = mega.cross_entropy %logits, %targets
        : tensor<4x32x256xf32>, tensor<4x32xi32> -> tensor<f32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$logits, Mega_I32Tensor:$targets);
  let results = (outs Mega_F32Scalar:$loss, Mega_F32Tensor:$lse);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets) `->`
    type($loss) `,` type($lse)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Tensor level
//===----------------------------------------------------------------------===//

def Mega_MatMulOp : Mega_Op<"matmul", [Pure, Shaped, Differentiable, LowPrecision]> {
  let summary = "(batched) matrix product";
  let description = [{
    `a [..., M, K] @ b [..., K, N] -> [..., M, N]`, where `transpose_a` /
    `transpose_b` swap the last two dimensions of that operand first. A rank-2
    `b` is shared by all of `a`'s leading dimensions; otherwise `a` and `b`
    have the same rank and equal leading (batch) dimensions.

    ```mlir
    %y = mega.matmul %x, %w : tensor<4x32x64xf32>, tensor<64x192xf32> -> tensor<4x32x192xf32>
    %s = mega.matmul %q, %k {transpose_b}
        : tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32> -> tensor<4x4x32x32xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$a, Mega_FloatTensor:$b,
                   UnitAttr:$transpose_a, UnitAttr:$transpose_b);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $a `,` $b attr-dict `:` type($a) `,` type($b) `->` type($result)
  }];
  let hasVerifier = 1;
}

class Mega_BinaryOp<string mnemonic, string what>
    : Mega_Op<mnemonic, [Pure, Shaped, Differentiable, Mega_Elementwise]> {
  let summary = "elementwise " # what # " with trailing broadcast";
  let description = [{
    Elementwise }] # what # [{ of `lhs` and `rhs`. The shape of `rhs` is a
    suffix of the shape of `lhs` (a bias `[N]` against `[..., N]`, a scalar
    `[]` against anything); `rhs` is repeated over `lhs`'s leading dims.
    The result has the shape of `lhs`.

    ```mlir
    %y = mega.}] # mnemonic # [{ %x, %b : tensor<4x32x64xf32>, tensor<64xf32> -> tensor<4x32x64xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$lhs, Mega_F32Tensor:$rhs);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_AddOp : Mega_BinaryOp<"add", "sum">;
def Mega_SubOp : Mega_BinaryOp<"sub", "difference">;
def Mega_MulOp : Mega_BinaryOp<"mul", "product">;

def Mega_ScaleOp : Mega_Op<"scale",
    [Pure, Shaped, Differentiable, Mega_Elementwise]> {
  let summary = "multiplication by a constant";
  let description = [{
    `result = factor * x`.

    ```mlir
    %y = mega.scale %x {factor = 2.5e-01 : f64} : tensor<4x64xf32> -> tensor<4x64xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, F64Attr:$factor);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
}

def Mega_GeluOp : Mega_Op<"gelu",
    [Pure, Shaped, Differentiable, Mega_Elementwise]> {
  let summary = "tanh-approximate GELU";
  let description = [{
    `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`, elementwise.

    ```mlir
    %y = mega.gelu %x : tensor<4x32x256xf32> -> tensor<4x32x256xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
}

def Mega_GeluGradOp : Mega_Op<"gelu_grad", [Pure, Shaped, Mega_Elementwise]> {
  let summary = "gradient of tanh-approximate GELU";
  let description = [{
    `result = gelu'(x) * dy`, elementwise; `x` and `dy` have the same shape.

    ```mlir
    %dx = mega.gelu_grad %x, %dy : tensor<4x256xf32>, tensor<4x256xf32> -> tensor<4x256xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, Mega_F32Tensor:$dy);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $x `,` $dy attr-dict `:` type($x) `,` type($dy) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_SoftmaxOp : Mega_Op<"softmax", [Pure, Shaped, Differentiable]> {
  let summary = "softmax along the last dimension, optionally causal";
  let description = [{
    `softmax(scale * x)` along the last dimension. With `causal`, x has rank
    >= 2 and element `[..., r, c]` is masked (probability 0) when `c > r`,
    i.e. column c of flattened row R is masked when c > R mod S, S the
    second-to-last dimension.

    ```mlir
    %p = mega.softmax %s {causal, scale = 2.5e-01 : f64}
        : tensor<4x4x32x32xf32> -> tensor<4x4x32x32xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x,
                   DefaultValuedAttr<F64Attr, "1.0">:$scale, UnitAttr:$causal);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def Mega_SoftmaxGradOp : Mega_Op<"softmax_grad", [Pure, Shaped]> {
  let summary = "gradient of softmax";
  let description = [{
    Given `y = softmax(scale * x)` and `dy`:
    `dx = scale * y * (dy - sum(dy * y, last dim))`. Masked entries have y = 0
    and so get no gradient.

    ```mlir
    %dx = mega.softmax_grad %y, %dy {scale = 2.5e-01 : f64}
        : tensor<4x32x32xf32>, tensor<4x32x32xf32> -> tensor<4x32x32xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$y, Mega_F32Tensor:$dy,
                   DefaultValuedAttr<F64Attr, "1.0">:$scale);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $y `,` $dy attr-dict `:` type($y) `,` type($dy) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_LayerNormGradOp : Mega_Op<"layer_norm_grad", [Pure, Shaped]> {
  let summary = "gradient of layer normalisation";
  let description = [{
    From `dy` and the forward's `x`, `weight`, `mean`, `rstd`: `dx` (shape of
    x), `dweight` and `dbias` (shape of weight, summed over rows).

    ```mlir
    %dx, %dw, %db = mega.layer_norm_grad %dy, %x, %w, %mean, %rstd
        : tensor<128x64xf32>, tensor<128x64xf32>, tensor<64xf32>, tensor<128xf32>, tensor<128xf32>
        -> tensor<128x64xf32>, tensor<64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$dy, Mega_F32Tensor:$x,
                   Mega_F32Tensor:$weight, Mega_F32Tensor:$mean,
                   Mega_F32Tensor:$rstd);
  let results = (outs Mega_F32Tensor:$dx, Mega_F32Tensor:$dweight,
                 Mega_F32Tensor:$dbias);
  let assemblyFormat = [{
    $dy `,` $x `,` $weight `,` $mean `,` $rstd attr-dict `:` type(operands)
    `->` type(results)
  }];
  let hasVerifier = 1;
}

def Mega_CrossEntropyGradOp : Mega_Op<"cross_entropy_grad",
    [Pure, Shaped, LowPrecision]> {
  let summary = "gradient of mean token cross-entropy";
  let description = [{
    `dlogits = (softmax(logits) - onehot(targets)) * dloss / rows`, using the
    forward's `lse`; `dloss` is `tensor<f32>`.

    ```mlir
    %dl = mega.cross_entropy_grad %logits, %targets, %lse, %dloss
        : tensor<128x256xf32>, tensor<128xi32>, tensor<128xf32>, tensor<f32> -> tensor<128x256xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$logits, Mega_I32Tensor:$targets,
                   Mega_F32Tensor:$lse, Mega_F32Scalar:$dloss);
  let results = (outs Mega_F32Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $targets `,` $lse `,` $dloss attr-dict `:` type(operands)
    `->` type($dlogits)
  }];
  let hasVerifier = 1;
}

def Mega_EmbeddingGradOp : Mega_Op<"embedding_grad", [Pure, Shaped]> {
  let summary = "gradient of an embedding lookup";
  let description = [{
    A zero `[vocab, H]` table into which each row `dy[..., :]` is added at row
    `ids[...]`.

    ```mlir
    %dwte = mega.embedding_grad %tokens, %dy {vocab = 256 : i64}
        : tensor<4x32xi32>, tensor<4x32x64xf32> -> tensor<256x64xf32>
    ```
  }];
  let arguments = (ins Mega_I32Tensor:$ids, Mega_F32Tensor:$dy,
                   Mega_I64Attr:$vocab);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $ids `,` $dy attr-dict `:` type($ids) `,` type($dy) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_ReduceSumOp : Mega_Op<"reduce_sum", [Pure, Shaped, Differentiable]> {
  let summary = "sum over leading dimensions";
  let description = [{
    Sums `x` over its leading dimensions, keeping the trailing `rank` ones
    (the gradient of a broadcast bias: `[B, S, N] -> [N]` with rank 1). The
    result is f32; a bf16 `x` (mega-mixed-precision) is widened exactly.

    ```mlir
    %db = mega.reduce_sum %dy {rank = 1 : i64} : tensor<4x32x64xf32> -> tensor<64xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$x, Mega_I64Attr:$rank);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def Mega_ReshapeOp : Mega_Op<"reshape", [Pure, Differentiable]> {
  let summary = "the same elements in a different shape";
  let description = [{
    Reinterprets the row-major elements of `x` with the result's shape (its
    type is the op's shape argument, so it has no inference rule). Element
    counts agree.

    ```mlir
    %r = mega.reshape %qkv : tensor<4x32x192xf32> -> tensor<4x32x3x4x16xf32>
    ```
  }];
  let arguments = (ins Mega_AnyTensor:$x);
  let results = (outs Mega_AnyTensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def Mega_TransposeOp : Mega_Op<"transpose", [Pure, Shaped, Differentiable]> {
  let summary = "permutation of dimensions";
  let description = [{
    Result dimension `j` is input dimension `perm[j]`. The result has the
    input's element type (f32, or bf16 after mixed precision).

    ```mlir
    %t = mega.transpose %r perm [2, 0, 3, 1, 4]
        : tensor<4x32x3x4x16xf32> -> tensor<3x4x4x32x16xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$x, DenseI64ArrayAttr:$perm);
  let results = (outs Mega_FloatTensor:$result);
  let assemblyFormat = [{
    $x `perm` $perm attr-dict `:` type($x) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_SplitOp : Mega_Op<"split", [Pure, Shaped, Differentiable]> {
  let summary = "equal parts along a dimension";
  let description = [{
    Cuts `x` into `parts` equal pieces along `dim` (which `parts` divides).
    Splitting along dimension 0 (or after dims of size 1) is a view. The
    parts have the input's element type (f32, or bf16 after mixed precision).
    `mega.concat` is its inverse and its adjoint.

    ```mlir
    %q, %k, %v = mega.split %t {dim = 0 : i64, parts = 3 : i64}
        : tensor<3x4x4x32x16xf32> -> tensor<1x4x4x32x16xf32>, tensor<1x4x4x32x16xf32>, tensor<1x4x4x32x16xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$x, Mega_I64Attr:$dim, Mega_I64Attr:$parts);
  let results = (outs Variadic<Mega_FloatTensor>:$results);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($results)";
  let hasVerifier = 1;
}

def Mega_ConcatOp : Mega_Op<"concat", [Pure, Shaped, Differentiable]> {
  let summary = "concatenation along a dimension";
  let description = [{
    Joins `inputs` (same rank, equal in every other dimension) along `dim`.

    ```mlir
    %t = mega.concat %q, %k, %v {dim = 0 : i64}
        : tensor<1x4xf32>, tensor<1x4xf32>, tensor<1x4xf32> -> tensor<3x4xf32>
    ```
  }];
  let arguments = (ins Variadic<Mega_F32Tensor>:$inputs, Mega_I64Attr:$dim);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $inputs attr-dict `:` type($inputs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_FillOp : Mega_Op<"fill", [Pure, ConstantLike]> {
  let summary = "a tensor filled with one value";
  let description = [{
    Every element is `value` (gradient seeds, zeros). The result type is its
    shape argument; it must be static.

    ```mlir
    %seed = mega.fill 2.5e-01 : tensor<f32>
    ```
  }];
  let arguments = (ins F64Attr:$value);
  let results = (outs Mega_AnyTensor:$result);
  let assemblyFormat = "$value attr-dict `:` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Collectives
//
// Communication over mesh axes (the module attribute `mega.mesh = array<i64:
// T, ...>` gives the axis sizes; docs/dialect.md, "Sharding"). Every device
// of the axes runs the op with its local piece. Each carries its adjoint
// (MegaCollectives.cpp), Megatron's conjugate pairs (tensor_parallel/
// mappings.py): copy_to_region (identity) <-> all_reduce sum, all_gather <->
// reduce_scatter. Verifiers: MegaCollectives.cpp.
//===----------------------------------------------------------------------===//

class Mega_CollectiveOp<string mnemonic, list<Trait> traits = []>
    : Mega_Op<mnemonic, !listconcat([Pure, Differentiable], traits)> {
  let arguments = (ins Mega_F32Tensor:$x, DenseI64ArrayAttr:$axes);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $x `axes` $axes attr-dict `:` type($x) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_AllReduceOp : Mega_CollectiveOp<"all_reduce",
    [SameOperandsAndResultType]> {
  let summary = "reduction of a partial value over mesh axes";
  let description = [{
    Every device gets the `kind` (`sum` or `max`) of the `x` of all devices
    of `axes`: turns a `partial = sum|max` value into a replicated one
    (Megatron's reduce_from_tensor_model_parallel_region). Adjoint of `sum`:
    the identity (the incoming gradient is replicated). `max` has no adjoint
    (the vocab-parallel cross-entropy uses it as a constant shift).

    ```mlir
    %y = mega.all_reduce %p axes [0] : tensor<4x32x64xf32> -> tensor<4x32x64xf32>
    %m = mega.all_reduce %l axes [0] {kind = "max"} : tensor<128xf32> -> tensor<128xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, DenseI64ArrayAttr:$axes,
                   DefaultValuedStrAttr<StrAttr, "sum">:$kind);
}

def Mega_CopyToRegionOp : Mega_CollectiveOp<"copy_to_region",
    [SameOperandsAndResultType]> {
  let summary = "identity that marks a replicated value entering split work";
  let description = [{
    `result = x`. Marks where a replicated value is consumed by computation
    split over `axes` (Megatron's copy_to_tensor_model_parallel_region): the
    gradient each device computes for it is only its term, so the adjoint is
    `mega.all_reduce` (sum) of the gradient.

    ```mlir
    %x1 = mega.copy_to_region %x axes [0] : tensor<4x32x64xf32> -> tensor<4x32x64xf32>
    ```
  }];
}

def Mega_AllGatherOp : Mega_CollectiveOp<"all_gather"> {
  let summary = "concatenation of the devices' pieces along a dimension";
  let description = [{
    Every device gets the concatenation, in device order, of the `x` of all
    devices of `axes` along `dim` (result `dim` = size of the axes times
    `x`'s). The result enters computation whose gradient is per-device
    (sequence parallelism), so the adjoint is `mega.reduce_scatter`.

    ```mlir
    %y = mega.all_gather %x axes [0] {dim = 1 : i64} : tensor<4x16x64xf32> -> tensor<4x32x64xf32>
    ```

    It only moves elements, so after mixed precision it may gather bf16
    (the rounded value its readers would otherwise each round); operand and
    result have one element type.
  }];
  let arguments = (ins Mega_FloatTensor:$x, DenseI64ArrayAttr:$axes,
                   Mega_I64Attr:$dim);
  let results = (outs Mega_FloatTensor:$result);
}

def Mega_ReduceScatterOp : Mega_CollectiveOp<"reduce_scatter"> {
  let summary = "sum over mesh axes, each device keeping one block";
  let description = [{
    The sum of the `x` of all devices of `axes`, cut into equal blocks along
    `dim`; device `r` keeps block `r`. Adjoint: `mega.all_gather`.

    ```mlir
    %y = mega.reduce_scatter %x axes [0] {dim = 1 : i64} : tensor<4x32x64xf32> -> tensor<4x16x64xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x, DenseI64ArrayAttr:$axes,
                   Mega_I64Attr:$dim);
}

//===----------------------------------------------------------------------===//
// Vocabulary-parallel embedding and loss
//
// What mega-tensor-parallel puts in place of mega.embedding and
// mega.cross_entropy when the vocabulary is split over mesh `axes` (Megatron's
// VocabParallelEmbedding and vocab_parallel_cross_entropy): each device holds
// the rows (or logit columns) [r*V', (r+1)*V') of the vocabulary, r its index
// along `axes`, V' the local size; the logits are never gathered. Verifiers,
// adjoints: MegaVocabParallel.cpp.
//===----------------------------------------------------------------------===//

def Mega_VocabEmbeddingOp : Mega_Op<"vocab_embedding", [Pure, Differentiable]> {
  let summary = "embedding lookup in this device's block of the vocabulary";
  let description = [{
    Like `mega.embedding` with `table` the device's rows `[r*V', (r+1)*V')`:
    ids in that block give their row, the others zeros, so the result is a
    partial sum over `axes` (an all_reduce completes it). Adjoint:
    `mega.vocab_embedding_grad`.

    ```mlir
    %e = mega.vocab_embedding %ids, %wte axes [0] : tensor<4x32xi32>, tensor<128x64xf32> -> tensor<4x32x64xf32>
    ```
  }];
  let arguments = (ins Mega_I32Tensor:$ids, Mega_F32Tensor:$table,
                   DenseI64ArrayAttr:$axes);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $ids `,` $table `axes` $axes attr-dict `:` type($ids) `,` type($table) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_VocabEmbeddingGradOp : Mega_Op<"vocab_embedding_grad", [Pure]> {
  let summary = "gradient of mega.vocab_embedding";
  let description = [{
    A zero `[V', H]` table into which `dy[..., :]` is added at row
    `ids[...] - r*V'` for the ids in this device's block (the others are
    skipped).

    ```mlir
    %d = mega.vocab_embedding_grad %ids, %dy axes [0] : tensor<4x32xi32>, tensor<4x32x64xf32> -> tensor<128x64xf32>
    ```
  }];
  let arguments = (ins Mega_I32Tensor:$ids, Mega_F32Tensor:$dy,
                   DenseI64ArrayAttr:$axes);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = [{
    $ids `,` $dy `axes` $axes attr-dict `:` type($ids) `,` type($dy) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Mega_RowMaxOp : Mega_Op<"row_max", [Pure]> {
  let summary = "maximum over the last dimension";
  let description = [{
    `result[row] = max(x[row, :])` for `x [..., C]`, result `[rows]`. Not
    differentiated (the loss uses it as a constant shift).

    ```mlir
    %m = mega.row_max %logits : tensor<4x32x128xf32> -> tensor<128xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$x);
  let results = (outs Mega_F32Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def Mega_VocabCrossEntropyStatsOp : Mega_Op<"vocab_cross_entropy_stats", [Pure]> {
  let summary = "this device's terms of the cross-entropy's sums";
  let description = [{
    For the device's logit columns `logits [..., V']`, `targets [...]` and the
    global row maximum `max [rows]`: `sum_exp[row] = sum(exp(logits[row, :] -
    max[row]))` and `target_logit[row] = logits[row, targets[row] - r*V']`
    when the target is in this device's block, else 0. Both are terms of sums
    over `axes`. Not differentiated (mega.vocab_cross_entropy's adjoint is
    the whole gradient).

    ```mlir
    %se, %tl = mega.vocab_cross_entropy_stats %logits, %targets, %max axes [0]
        : tensor<4x32x128xf32>, tensor<4x32xi32>, tensor<128xf32> -> tensor<128xf32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$logits, Mega_I32Tensor:$targets,
                   Mega_F32Tensor:$max, DenseI64ArrayAttr:$axes);
  let results = (outs Mega_F32Tensor:$sum_exp, Mega_F32Tensor:$target_logit);
  let assemblyFormat = [{
    $logits `,` $targets `,` $max `axes` $axes attr-dict `:` type($logits) `,`
    type($targets) `,` type($max) `->` type($sum_exp) `,` type($target_logit)
  }];
  let hasVerifier = 1;
}

def Mega_VocabCrossEntropyOp : Mega_Op<"vocab_cross_entropy",
    [Pure, Differentiable]> {
  let summary = "mean token cross-entropy from all-reduced statistics";
  let description = [{
    `lse = max + log(sum_exp)`, `loss = mean over rows of (lse -
    target_logit)`, with the statistics already reduced over `axes`. The
    logits and targets (this device's columns) are operands for the adjoint:
    `d logits = (exp(logits - lse) - onehot(targets in this block)) * d loss /
    rows` (`mega.vocab_cross_entropy_grad`), the whole derivative, so the
    statistics get none.

    ```mlir
    %loss, %lse = mega.vocab_cross_entropy %logits, %targets, %max, %se, %tl axes [0]
        : tensor<4x32x128xf32>, tensor<4x32xi32>, tensor<128xf32>, tensor<128xf32>, tensor<128xf32>
        -> tensor<f32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$logits, Mega_I32Tensor:$targets,
                   Mega_F32Tensor:$max, Mega_F32Tensor:$sum_exp,
                   Mega_F32Tensor:$target_logit, DenseI64ArrayAttr:$axes);
  let results = (outs Mega_F32Scalar:$loss, Mega_F32Tensor:$lse);
  let assemblyFormat = [{
    $logits `,` $targets `,` $max `,` $sum_exp `,` $target_logit `axes` $axes
    attr-dict `:` type(operands) `->` type($loss) `,` type($lse)
  }];
  let hasVerifier = 1;
}

def Mega_VocabCrossEntropyGradOp : Mega_Op<"vocab_cross_entropy_grad", [Pure]> {
  let summary = "gradient of the vocabulary-parallel cross-entropy";
  let description = [{
    `dlogits = (exp(logits - lse) - onehot(targets - r*V')) * dloss / rows`
    for this device's columns (targets outside its block contribute no
    one-hot).

    ```mlir
    %dl = mega.vocab_cross_entropy_grad %logits, %targets, %lse, %dloss axes [0]
        : tensor<4x32x128xf32>, tensor<4x32xi32>, tensor<128xf32>, tensor<f32> -> tensor<4x32x128xf32>
    ```
  }];
  let arguments = (ins Mega_F32Tensor:$logits, Mega_I32Tensor:$targets,
                   Mega_F32Tensor:$lse, Mega_F32Scalar:$dloss,
                   DenseI64ArrayAttr:$axes);
  let results = (outs Mega_F32Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $targets `,` $lse `,` $dloss `axes` $axes attr-dict `:`
    type(operands) `->` type($dlogits)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Training level
//===----------------------------------------------------------------------===//

def Mega_AccumulateGradOp : Mega_Op<"accumulate_grad",
    [MemoryEffects<[MemRead<Mega_StateResource>, MemWrite<Mega_StateResource>]>]> {
  let summary = "adds into a parameter's gradient accumulator";
  let description = [{
    `grad(name) += grad`; `grad` has the parameter's shape.

    ```mlir
    mega.accumulate_grad "wte.weight", %dwte : tensor<256x64xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, Mega_F32Tensor:$grad);
  let assemblyFormat = "$name `,` $grad attr-dict `:` type($grad)";
  let hasVerifier = 1;
}

def Mega_StateOp : Mega_Op<"state",
    [MemoryEffects<[MemRead<Mega_StateResource>]>]> {
  let summary = "reads persistent state of a parameter";
  let description = [{
    Reads the gradient accumulator (`role = "grad"`) or an AdamW moment
    (`"adam_m"`, `"adam_v"`) of parameter `name`; the result type is the
    parameter's (static). `"param_copy"`: its bf16 copy (bf16 of its shape).

    ```mlir
    %g = mega.state "wte.weight" {role = "grad"} : tensor<256x64xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, StrAttr:$role);
  let results = (outs Mega_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Mega_GradNormOp : Mega_Op<"grad_norm", [Pure, Shaped]> {
  let summary = "global gradient norm and clip coefficient";
  let description = [{
    `norm = sqrt(sum of squares of all grads)`;
    `coef = min(1, max_norm / (norm + 1e-6))` (`max_norm <= 0`: 1), NaN when
    the norm is not finite (the update then does nothing).

    ```mlir
    %norm, %coef = mega.grad_norm %g0, %g1 {max_norm = 1.0 : f64}
        : tensor<256x64xf32>, tensor<64xf32> -> tensor<f32>, tensor<f32>
    ```
  }];
  let arguments = (ins Variadic<Mega_F32Tensor>:$grads,
                   DefaultValuedAttr<F64Attr, "0.0">:$max_norm);
  let results = (outs Mega_F32Scalar:$norm, Mega_F32Scalar:$coef);
  let assemblyFormat = [{
    $grads attr-dict `:` type($grads) `->` type($norm) `,` type($coef)
  }];
  let hasVerifier = 1;
}

def Mega_AdamWOp : Mega_Op<"adamw",
    [MemoryEffects<[MemRead<Mega_StateResource>, MemWrite<Mega_StateResource>]>]> {
  let summary = "AdamW update of one parameter, in place";
  let description = [{
    torch.optim.AdamW on `grad * coef` for parameter `name`, updating it and
    its `adam_m`, `adam_v` state; `lr`, `step` (1-based) and `coef` are
    scalars. Does nothing when `coef` is NaN.

    ```mlir
    mega.adamw "wte.weight", %g, %lr, %step, %coef
        {beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-08 : f64, weight_decay = 0.1 : f64}
        : tensor<256x64xf32>, tensor<f32>, tensor<f32>, tensor<f32>
    ```
  }];
  let arguments = (ins StrAttr:$name, Mega_F32Tensor:$grad,
                   Mega_F32Scalar:$lr, Mega_Scalar:$step,
                   Mega_F32Scalar:$coef, F64Attr:$beta1, F64Attr:$beta2,
                   F64Attr:$eps, F64Attr:$weight_decay);
  let assemblyFormat = [{
    $name `,` $grad `,` $lr `,` $step `,` $coef attr-dict `:` type($grad) `,`
    type($lr) `,` type($step) `,` type($coef)
  }];
  let hasVerifier = 1;
}

def Mega_SgdOp : Mega_Op<"sgd",
    [MemoryEffects<[MemRead<Mega_StateResource>, MemWrite<Mega_StateResource>]>]> {
  let summary = "SGD update of one parameter, in place";
  let description = [{
    `p -= lr * (grad * coef + weight_decay * p)`; nothing when `coef` is NaN.

    ```mlir
    mega.sgd "wte.weight", %g, %lr, %coef {weight_decay = 0.0 : f64}
        : tensor<256x64xf32>, tensor<f32>, tensor<f32>
    ```
  }];
  let arguments = (ins StrAttr:$name, Mega_F32Tensor:$grad,
                   Mega_F32Scalar:$lr, Mega_F32Scalar:$coef,
                   F64Attr:$weight_decay);
  let assemblyFormat = [{
    $name `,` $grad `,` $lr `,` $coef attr-dict `:` type($grad) `,`
    type($lr) `,` type($coef)
  }];
  let hasVerifier = 1;
}

def Mega_ZeroGradOp : Mega_Op<"zero_grad",
    [MemoryEffects<[MemWrite<Mega_StateResource>]>]> {
  let summary = "clears a parameter's gradient accumulator";
  let description = [{
    ```mlir
    mega.zero_grad "wte.weight"
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let assemblyFormat = "$name attr-dict";
  let hasVerifier = 1;
}

def Mega_YieldOp : Mega_Op<"yield",
    [Pure, Terminator, ReturnLike,
     ParentOneOf<["RepeatOp", "FusedOp"]>]> {
  let summary = "ends a mega.repeat or mega.fused body";
  let description = [{
    ```mlir
    mega.yield %h : tensor<?x?x?xf32>
    ```
  }];
  let arguments = (ins Variadic<Mega_AnyTensor>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

include "mega/Dialect/Mega/MegaFusedOps.td"
include "mega/Dialect/Mega/MegaBucketOps.td"
include "mega/Dialect/Mega/MegaKernelOps.td"

#endif // MEGA_DIALECT_MEGA_OPS

//===- MegaFusedOps.td - Mixed precision and fused attention -*- tablegen -*-===//
//
// Ops added for the tensor-core path (included from MegaOps.td):
//  * mega.cast                 - f32 <-> bf16, inserted by mega-mixed-precision
//  * mega.flash_attention      - causal multi-head attention that never
//                                materialises the [S, S] scores (mega-decompose
//                                with fused-attention)
//  * mega.flash_attention_grad - its adjoint (mega-autodiff), recomputing the
//                                scores from the saved row logsumexp
// Constraint ids refer to docs/dialect.md.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_FUSED_OPS
#define MEGA_DIALECT_MEGA_FUSED_OPS

def Mega_CastOp : Mega_Op<"cast", [Pure]> {
  let summary = "element type conversion between f32 and bf16";
  let description = [{
    The same shape with another float element type; f32 -> bf16 rounds to
    nearest even, bf16 -> f32 is exact. `mega-mixed-precision` inserts it in
    front of the bf16 operands of tensor-core ops.

    ```mlir
    %xb = mega.cast %x : tensor<128x64xf32> -> tensor<128x64xbf16>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$x);
  let results = (outs Mega_FloatTensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def Mega_FlashAttentionOp : Mega_Op<"flash_attention",
    [Pure, Differentiable, LowPrecision]> {
  let summary = "fused scaled-dot-product attention per head";
  let description = [{
    For `q, k, v [B, heads, S, hd]`: `o = softmax(scale * q k^T) v` per
    (batch, head), masked above the diagonal when `causal`, and
    `lse [B, heads, S]` = the logsumexp of each row of `scale * q k^T` (what
    the adjoint needs to recompute the probabilities). The [S, S] scores are
    never stored: the kernel walks tiles of k and v with an online softmax.
    q, k, v may be bf16 (mega-mixed-precision); o and lse are f32.

    ```mlir
    %o, %lse = mega.flash_attention %q, %k, %v {causal, scale = 2.5e-01 : f64}
        : tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32>
        -> tensor<4x4x32x16xf32>, tensor<4x4x32xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$q, Mega_FloatTensor:$k,
                   Mega_FloatTensor:$v, F64Attr:$scale, UnitAttr:$causal);
  let results = (outs Mega_F32Tensor:$o, Mega_F32Tensor:$lse);
  let assemblyFormat = [{
    $q `,` $k `,` $v attr-dict `:` type(operands) `->` type(results)
  }];
  let hasVerifier = 1;
}

def Mega_FlashAttentionGradOp : Mega_Op<"flash_attention_grad",
    [Pure, LowPrecision]> {
  let summary = "gradient of mega.flash_attention";
  let description = [{
    From the forward's `q, k, v, o, lse` and `dout` (the gradient of o):
    `dq, dk, dv` (f32, shapes of q, k, v). The probabilities are recomputed
    tile by tile from `lse`; with `D = rowsum(dout * o)`,
    `ds = p * (dout v^T - D)`, `dq = scale * ds k`, `dk = scale * ds^T q`,
    `dv = p^T dout`. q, k, v, o, dout may be bf16; lse is f32.

    ```mlir
    %dq, %dk, %dv = mega.flash_attention_grad %q, %k, %v, %o, %lse, %dout {causal, scale = 2.5e-01 : f64}
        : tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32>,
          tensor<4x4x32x16xf32>, tensor<4x4x32xf32>, tensor<4x4x32x16xf32>
        -> tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32>, tensor<4x4x32x16xf32>
    ```
  }];
  let arguments = (ins Mega_FloatTensor:$q, Mega_FloatTensor:$k,
                   Mega_FloatTensor:$v, Mega_FloatTensor:$o,
                   Mega_F32Tensor:$lse, Mega_FloatTensor:$dout,
                   F64Attr:$scale, UnitAttr:$causal);
  let results = (outs Mega_F32Tensor:$dq, Mega_F32Tensor:$dk,
                 Mega_F32Tensor:$dv);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $o `,` $lse `,` $dout attr-dict `:` type(operands)
    `->` type(results)
  }];
  let hasVerifier = 1;
}

#endif // MEGA_DIALECT_MEGA_FUSED_OPS

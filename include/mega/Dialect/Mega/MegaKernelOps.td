//===- MegaKernelOps.td - Kernel-level ops -----------------*- tablegen -*-===//
//
// The ops of the kernel level (included from MegaOps.td), emitted by
// mega-fuse-elementwise and mega-lower-to-kernels and mapped 1:1 to plan
// instructions or placements by the plan emitter:
//  * mega.fused  - elementwise ops run as one Elementwise kernel
//  * mega.kernel - one plan instruction
//  * mega.empty  - arena bytes that kernels fill through mega.dests
//  * mega.view   - a reinterpretation of bytes (no kernel)
// Constraint ids refer to docs/dialect.md.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_KERNEL_OPS
#define MEGA_DIALECT_MEGA_KERNEL_OPS

def Mega_FusedOp : Mega_Op<"fused",
    [IsolatedFromAbove, RecursiveMemoryEffects]> {
  let summary = "elementwise ops run as one Elementwise kernel";
  let description = [{
    The body's block arguments are the `inputs` (same types); its ops are
    elementwise (`mega.add`, `mega.sub`, `mega.mul`, `mega.scale`,
    `mega.gelu`, `mega.gelu_grad`) and it ends in `mega.yield` of the results.
    Lowered to one `Elementwise` plan instruction.

    ```mlir
    %r = mega.fused (%x, %b) : (tensor<128x256xf32>, tensor<256xf32>) -> tensor<128x256xf32> {
    ^bb0(%a0: tensor<128x256xf32>, %a1: tensor<256xf32>):
      %0 = mega.add %a0, %a1 : tensor<128x256xf32>, tensor<256xf32> -> tensor<128x256xf32>
      %1 = mega.gelu %0 : tensor<128x256xf32> -> tensor<128x256xf32>
      mega.yield %1 : tensor<128x256xf32>
    }
    ```
  }];
  let arguments = (ins Variadic<Mega_AnyTensor>:$inputs);
  let results = (outs Variadic<Mega_AnyTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    `(` $inputs `)` attr-dict `:` functional-type($inputs, $results) $body
  }];
  let hasRegionVerifier = 1;
}

def Mega_KernelOp : Mega_Op<"kernel",
    [MemoryEffects<[MemRead<Mega_StateResource>, MemWrite<Mega_StateResource>]>]> {
  let summary = "one plan instruction";
  let description = [{
    The plan instruction `kernel` (an `Op` name of include/mega/Plan/Plan.h)
    with operands = its inputs, results = its outputs, and the integer and
    float attributes `i`, `f` exactly as Plan.h documents them.

    ```mlir
    %c = mega.kernel "MatMul"(%a, %b) i [1, 128, 192, 64, 0, 0, 64, 192, 192, 0, 0, 0] f [1.0, 0.0]
        : (tensor<128x64xf32>, tensor<64x192xf32>) -> tensor<128x192xf32>
    ```
  }];
  let arguments = (ins StrAttr:$kernel, Variadic<Mega_AnyTensor>:$inputs,
                   DenseI64ArrayAttr:$i, DenseF32ArrayAttr:$f);
  let results = (outs Variadic<Mega_AnyTensor>:$results);
  let assemblyFormat = [{
    $kernel `(` $inputs `)` `i` $i `f` $f attr-dict `:`
    functional-type($inputs, $results)
  }];
  let hasVerifier = 1;
}

def Mega_EmptyOp : Mega_Op<"empty", []> {
  let summary = "arena bytes that kernels fill through mega.dests";
  let description = [{
    Kernel level: a buffer of the result's type whose contents are undefined
    until kernels write them as destinations (`mega.dests`), in program
    order; later ops read what those writes left. No kernel. It lets one
    kernel's strided outputs share a buffer, e.g. AttentionGrad writing dq,
    dk and dv straight into the fused projection's [B, S, 3, H, hd] layout
    (mega-fold-attention-layout). Not pure: two of them are two buffers.

    ```mlir
    %g = mega.empty : tensor<2x8x3x2x16xf32>
    ```
  }];
  let results = (outs Mega_AnyTensor:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Mega_ViewOp : Mega_Op<"view", [Pure]> {
  let summary = "a reinterpretation of bytes";
  let description = [{
    The bytes of `source` from byte `offset` on, seen with the result's type:
    a reshape, or a leading-dimension slice (one of q|k|v). No kernel.

    ```mlir
    %k = mega.view %qkv offset 8192 : tensor<3x4x4x32x16xf32> -> tensor<4x4x32x16xf32>
    ```
  }];
  let arguments = (ins Mega_AnyTensor:$source, Mega_I64Attr:$offset);
  let results = (outs Mega_AnyTensor:$result);
  let assemblyFormat = [{
    $source `offset` $offset attr-dict `:` type($source) `->` type($result)
  }];
  let hasVerifier = 1;
}

#endif // MEGA_DIALECT_MEGA_KERNEL_OPS

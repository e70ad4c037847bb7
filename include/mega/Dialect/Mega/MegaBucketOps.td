//===- MegaBucketOps.td - Overlapped data-parallel gradient buckets -*- tablegen -*-===//
//
// Ops of the data-parallel gradient reduction that overlaps the backward pass
// (included from MegaOps.td), inserted by mega-data-parallel (and a wait alone
// by mega-tensor-grad-bucket):
//  * mega.grad_bucket_start - in @train, right after a bucket's last gradient
//                             accumulation: start its all-reduce (or, with
//                             `scatter`, its reduce-scatters)
//  * mega.grad_bucket_wait  - in @optimizer: the bucket's reduced gradients
//                             (or their blocks)
// Constraint ids refer to docs/dialect.md.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DIALECT_MEGA_BUCKET_OPS
#define MEGA_DIALECT_MEGA_BUCKET_OPS

def Mega_GradBucketStartOp : Mega_Op<"grad_bucket_start",
    [MemoryEffects<[MemRead<Mega_StateResource>,
                    MemWrite<Mega_StateResource>]>]> {
  let summary = "starts the sum of a bucket of gradients over mesh axes";
  let description = [{
    Placed in @train after the last `mega.accumulate_grad` of every gradient
    in `grads`: from here on the accumulators of the bucket are final for
    this step, so their sum over the devices of `axes` can start while the
    backward pass goes on (Megatron's overlapped gradient reduction). It runs
    on the last micro-batch of a step only; the accumulators must not be
    touched until the `mega.grad_bucket_wait` of the same gradients in
    @optimizer. A runtime may also do nothing here: the wait then reduces.
    With `scatter` (the distributed optimizer) each gradient is
    reduce-scattered along dim 0 instead: every device keeps its block of
    the sum.

    ```mlir
    mega.grad_bucket_start ["h.1.mlp.c_proj.bias", "h.1.mlp.c_proj.weight"] axes [1]
    mega.grad_bucket_start ["h.1.mlp.c_proj.bias", "h.1.mlp.c_proj.weight"] axes [1] scatter
    ```
  }];
  let arguments = (ins StrArrayAttr:$grads, DenseI64ArrayAttr:$axes,
                   UnitAttr:$scatter);
  let assemblyFormat = "$grads `axes` $axes (`scatter` $scatter^)? attr-dict";
  let hasVerifier = 1;
}

def Mega_GradBucketWaitOp : Mega_Op<"grad_bucket_wait",
    [MemoryEffects<[MemRead<Mega_StateResource>,
                    MemWrite<Mega_StateResource>]>]> {
  let summary = "the gradients of a bucket summed over mesh axes";
  let description = [{
    `results[k]` = the sum over the devices of `axes` of `grads[k]` (the
    gradient accumulators, `mega.state {role = "grad"}`, in the bucket order
    of the matching `mega.grad_bucket_start`), written back into the
    accumulators: completes the all-reduce the start began, or runs it now
    when none was started. mega-tensor-grad-bucket puts one with no start
    (`axes [0]`) in the optimizer: the tensor-group sum of the replicated
    parameters' gradient terms.

    With `scatter` (the distributed optimizer, after a start with `scatter`)
    `results[k]` is this device's block along dim 0 of that sum, as
    `mega.reduce_scatter ... {dim = 0}` gives it; the accumulators' bytes
    are then unspecified until `mega.zero_grad`.

    ```mlir
    %b, %w = mega.grad_bucket_wait %gb, %gw axes [1]
        : tensor<32xf32>, tensor<128x32xf32> -> tensor<32xf32>, tensor<128x32xf32>
    %bb, %bw = mega.grad_bucket_wait %gb, %gw axes [1] scatter
        : tensor<32xf32>, tensor<128x32xf32> -> tensor<16xf32>, tensor<64x32xf32>
    ```
  }];
  let arguments = (ins Variadic<Mega_F32Tensor>:$grads,
                   DenseI64ArrayAttr:$axes, UnitAttr:$scatter);
  let results = (outs Variadic<Mega_F32Tensor>:$results);
  let assemblyFormat = [{
    $grads `axes` $axes (`scatter` $scatter^)? attr-dict `:` type($grads) `->`
    type($results)
  }];
  let builders = [OpBuilder<(ins "mlir::ValueRange":$grads,
                                 "llvm::ArrayRef<int64_t>":$axes), [{
    $_state.addOperands(grads);
    $_state.addAttribute("axes", $_builder.getDenseI64ArrayAttr(axes));
    $_state.addTypes(grads.getTypes());
  }]>, OpBuilder<(ins "mlir::ValueRange":$grads,
                      "llvm::ArrayRef<int64_t>":$axes,
                      "mlir::TypeRange":$blocks), [{
    $_state.addOperands(grads);
    $_state.addAttribute("axes", $_builder.getDenseI64ArrayAttr(axes));
    $_state.addAttribute("scatter", $_builder.getUnitAttr());
    $_state.addTypes(blocks);
  }]>];
  let hasVerifier = 1;
}

#endif // MEGA_DIALECT_MEGA_BUCKET_OPS

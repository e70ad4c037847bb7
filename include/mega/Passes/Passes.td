//===- Passes.td - The passes of megac's pipeline ---------*- tablegen -*-===//
//
// Every pass of the pipeline (docs/compiler.md), in pipeline order; the
// parallelism passes are in ParallelPasses.td, included below. Each is
// implemented in lib/Passes/<Name>.cpp as
//
//   #define GEN_PASS_DEF_MEGA<NAME>
//   #include "mega/Passes/Passes.h.inc"
//   struct X : mega::impl::Mega<Name>Base<X> { void runOnOperation() override; };
//
// and TableGen generates `mega::createMega<Name>()` (and
// `createMega<Name>(const Mega<Name>Options &)` for passes with options).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PASSES_PASSES_TD
#define MEGA_PASSES_PASSES_TD

include "mlir/Pass/PassBase.td"

// The passes that split the model over ranks (tensor, data and pipeline
// parallelism) and shape what pipeline programs hand each other.
include "mega/Passes/ParallelPasses.td"

def MegaMakePrograms : Pass<"mega-make-programs", "mlir::ModuleOp"> {
  let summary = "Clone the model function into @train, @eval and @predict";
  let description = [{
    The module holds one model function that reads inputs and params and
    outputs `loss` and `logits`. This pass clones it into `@train` and
    `@eval` (keeping the `loss` output) and `@predict` (keeping `logits`,
    with `mega.overrides = {batch = 1}`), drops the other outputs, removes
    what they no longer need, and erases the original.

    Before:
    ```mlir
    func.func @gpt() {
      %t = mega.input "tokens" [batch, seq] : tensor<?x?xi32>
      ...
      mega.output "loss", %loss : tensor<f32>
      mega.output "logits", %logits : tensor<?x?x?xf32>
      return
    }
    ```
    After:
    ```mlir
    func.func @train() { ... mega.output "loss", %loss : tensor<f32> return }
    func.func @eval() { ... mega.output "loss", %loss : tensor<f32> return }
    func.func @predict() attributes {mega.overrides = {batch = 1 : i64}} {
      ... (no targets, no cross_entropy)
      mega.output "logits", %logits : tensor<?x?x?xf32>
      return
    }
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaSpecialize : Pass<"mega-specialize", "mlir::ModuleOp"> {
  let summary = "Fix the hyper-parameters: resolve named sizes, static types";
  let description = [{
    Overrides the module's `mega.hparams` defaults with `set` ("name=value",
    positive integers; an unknown name is an error that lists the model's
    names), applies each function's `mega.overrides` (batch = 1 in
    @predict), replaces every size given by name (`mega.param` and
    `mega.input` dims, `mega.attention` heads, `mega.repeat` count) by its
    value, and gives params and inputs their static types. Run
    mega-infer-shapes next to propagate them.

    Before (`set=hidden=64,seq=32,batch=4,vocab=256`):
    ```mlir
    module attributes {mega.hparams = {batch = 8 : i64, hidden = 768 : i64, ...}} {
      %w = mega.param "wte.weight" [vocab, hidden] init normal(0.02) : tensor<?x?xf32>
    ```
    After:
    ```mlir
    module attributes {mega.hparams = {batch = 4 : i64, hidden = 64 : i64, ...}} {
      %w = mega.param "wte.weight" [256, 64] init normal(0.02) : tensor<256x64xf32>
    ```
  }];
  let options = [
    ListOption<"set", "set", "std::string",
               "Hyper-parameter overrides, each name=value (positive integers)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaInferShapes : Pass<"mega-infer-shapes", "mlir::ModuleOp"> {
  let summary = "Re-infer every result type in program order";
  let description = [{
    Walks each function in order and replaces every result type by the one
    the op's InferTypeOpInterface rule gives for its (now static) operands;
    block arguments of `mega.repeat` / `mega.fused` bodies take the types of
    the op's operands. A rule that fails, or gives a type incompatible with
    the existing one, is an error at the op.

    Before:
    ```mlir
    %x = mega.embedding %t, %w : tensor<4x32xi32>, tensor<256x64xf32> -> tensor<?x?x?xf32>
    ```
    After:
    ```mlir
    %x = mega.embedding %t, %w : tensor<4x32xi32>, tensor<256x64xf32> -> tensor<4x32x64xf32>
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaUnroll : Pass<"mega-unroll", "mlir::ModuleOp"> {
  let summary = "Replace mega.repeat by count copies of its body";
  let description = [{
    Each `mega.repeat` with an integer count becomes `count` copies of its
    body, chained through the carried value; parameter names in copy `i` get
    the prefix `prefix.{i}.`, and `scaled_init` stds are divided by
    sqrt(2 * count).

    Before:
    ```mlir
    %y = mega.repeat %x count(2) prefix "h" : tensor<4x32x64xf32> -> tensor<4x32x64xf32> {
    ^bb0(%h: tensor<4x32x64xf32>):
      %w = mega.param "ln_1.weight" [64] init ones : tensor<64xf32>
      ...
      mega.yield %h2 : tensor<4x32x64xf32>
    }
    ```
    After:
    ```mlir
    %w0 = mega.param "h.0.ln_1.weight" [64] init ones : tensor<64xf32>
    ...
    %w1 = mega.param "h.1.ln_1.weight" [64] init ones : tensor<64xf32>
    ...
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaDecompose : Pass<"mega-decompose", "mlir::ModuleOp"> {
  let summary = "Rewrite model-level ops into tensor-level ops";
  let description = [{
    Every op implementing DecomposeOpInterface (`mega.linear`,
    `mega.attention`) is replaced by tensor-level ops. `mega.layer_norm`,
    `mega.cross_entropy`, `mega.embedding` and `mega.gelu` stay: they are
    tensor-level primitives with their own kernels and gradients.

    Before:
    ```mlir
    %y = mega.linear %x, %w, %b : tensor<4x32x64xf32>, tensor<64x256xf32>, tensor<256xf32> -> tensor<4x32x256xf32>
    ```
    After:
    ```mlir
    %0 = mega.matmul %x, %w : tensor<4x32x64xf32>, tensor<64x256xf32> -> tensor<4x32x256xf32>
    %y = mega.add %0, %b : tensor<4x32x256xf32>, tensor<256xf32> -> tensor<4x32x256xf32>
    ```
    `mega.attention` becomes: linear q|k|v, reshape `[B,S,3,nh,hd]`,
    transpose to `[3,B,nh,S,hd]`, split into q, k, v, `q @ k^T`,
    `softmax {scale = 1/sqrt(hd), causal}`, `@ v`, transpose to
    `[B,S,nh,hd]`, reshape `[B,S,H]`, linear out. With `fused-attention`
    (what megac runs) the three middle ops are one
    `mega.flash_attention %q, %k, %v {scale, causal}`, which never
    materialises the `[B,nh,S,S]` scores.
  }];
  let options = [
    Option<"fusedAttention", "fused-attention", "bool", /*default=*/"false",
           "Attention as one mega.flash_attention (no [S,S] scores)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaMixedPrecision : Pass<"mega-mixed-precision", "mlir::ModuleOp"> {
  let summary = "bf16 operands for tensor-core ops, fp32 everywhere else";
  let description = [{
    With `precision=bf16`, every operand that an op's
    MixedPrecisionOpInterface lists (matmul a and b, flash attention q, k, v)
    is read through a `mega.cast` to bf16; results stay f32 (fp32
    accumulation), and so do parameters, gradients, optimizer state,
    normalisation, softmax statistics and the loss. One cast per value,
    placed right after its definition, so the forward and backward uses of an
    activation or a weight share one bf16 copy. With `reduce-bf16` (the
    default) a `mega.reduce_sum` whose operand has such a copy (a bias
    gradient: the gradient the weight and input products read in bf16)
    sums the copy, as autocast does; its result stays f32, and the f32
    gradient, when nothing else reads it, is no longer written at all
    (mega-fold-casts). With `round-products` (the default) a matmul whose
    f32 result only elementwise ops read, none adding a bias to it and none
    a GELU gradient (mega-fuse-epilogues computes that one in the product's
    epilogue), is rounded to bf16 as autocast's GEMM output is: a cast to
    bf16 and back in front of its readers, which mega-fold-casts turns into
    a bf16 MatMul result that the Elementwise widens on load; so is the
    pre-activation a gelu_grad reads (autocast keeps a Linear's output in
    bf16 for the backward). With `round-residual` (off by default: autocast
    keeps the residual stream in f32) every value a layer_norm normalises
    (a pre-norm model's residual stream) is rounded to bf16 right after its
    definition, for all its readers, as in Megatron's bf16 training without
    `--fp32-residual-connection`; the gradients stay f32. With
    `round-residual-grad` (off by default) the residual stream's gradient
    (the layer norms' dx and the adds that sum them) is rounded to bf16
    where it is read, as in Megatron's bf16 backward. `precision=fp32`
    changes nothing. Run after
    mega-autodiff and mega-optimizer.

    Before:
    ```mlir
    %y = mega.matmul %x, %w : tensor<128x64xf32>, tensor<64x256xf32> -> tensor<128x256xf32>
    ```
    After:
    ```mlir
    %xb = mega.cast %x : tensor<128x64xf32> -> tensor<128x64xbf16>
    %wb = mega.cast %w : tensor<64x256xf32> -> tensor<64x256xbf16>
    %y = mega.matmul %xb, %wb : tensor<128x64xbf16>, tensor<64x256xbf16> -> tensor<128x256xf32>
    ```
  }];
  let options = [
    Option<"precision", "precision", "std::string", /*default=*/"\"bf16\"",
           "fp32 (no change) or bf16">,
    Option<"reduceBf16", "reduce-bf16", "bool", /*default=*/"true",
           "A reduce_sum of a value that has a bf16 copy sums the copy">,
    Option<"roundProducts", "round-products", "bool", /*default=*/"true",
           "A bf16 product read only by elementwise ops (no bias) is "
           "rounded to bf16, as autocast's GEMM output">,
    Option<"roundResidual", "round-residual", "bool", /*default=*/"false",
           "The residual stream (every value a layer_norm normalises) is "
           "stored in bf16: Megatron's bf16 default, where "
           "--fp32-residual-connection keeps it f32">,
    Option<"roundResidualGrad", "round-residual-grad", "bool",
           /*default=*/"false",
           "The residual gradient (the layer norms' dx and the adds that "
           "sum them) is rounded to bf16 where it is read: Megatron's bf16 "
           "backward">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaAutodiff : Pass<"mega-autodiff", "mlir::ModuleOp"> {
  let summary = "Append the backward pass to @train";
  let description = [{
    Seeds d loss = 1 / microbatches, walks @train backwards asking each op's
    GradientOpInterface for its operands' gradients, sums gradients of values
    used several times, and accumulates every parameter's gradient with
    `mega.accumulate_grad`.

    Before:
    ```mlir
    func.func @train() {
      %w = mega.param "w" [4, 4] init normal(0.02) : tensor<4x4xf32>
      %y = mega.matmul %x, %w : ...
      %loss, %lse = mega.cross_entropy %y, %t : ...
      mega.output "loss", %loss : tensor<f32>
    }
    ```
    After:
    ```mlir
      ...
      %seed = mega.fill 1.0 : tensor<f32>
      %dy = mega.cross_entropy_grad %y, %t, %lse, %seed : ...
      %dw = mega.matmul %x, %dy {transpose_a} : ...
      mega.accumulate_grad "w", %dw : tensor<4x4xf32>
    ```
  }];
  let options = [
    Option<"microbatches", "microbatches", "int64_t", /*default=*/"1",
           "Micro-batches per optimizer step (the loss seed is 1/N)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaOptimizer : Pass<"mega-optimizer", "mlir::ModuleOp"> {
  let summary = "Create @optimizer: grad norm, clipping, the update, zero_grad";
  let description = [{
    Creates `@optimizer` with inputs `lr` and `step` and output `grad_norm`:
    reads every parameter's gradient (`mega.state`), computes the global norm
    and clip coefficient (`mega.grad_norm`; after mega-tensor-parallel,
    `mega.sharded_grads` lists the operands that are shards), updates each parameter
    (`mega.adamw` or `mega.sgd`; weight decay only on rank >= 2) and clears
    the accumulators (`mega.zero_grad`).

    After:
    ```mlir
    func.func @optimizer() {
      %lr = mega.input "lr" [] : tensor<f32>
      %step = mega.input "step" [] : tensor<f32>
      %g0 = mega.state "wte.weight" {role = "grad"} : tensor<256x64xf32>
      %norm, %coef = mega.grad_norm %g0 {max_norm = 1.0 : f64} : tensor<256x64xf32> -> tensor<f32>, tensor<f32>
      mega.adamw "wte.weight", %g0, %lr, %step, %coef {...} : ...
      mega.zero_grad "wte.weight"
      mega.output "grad_norm", %norm : tensor<f32>
      return
    }
    ```
  }];
  let options = [
    Option<"optimizer", "optimizer", "std::string", /*default=*/"\"adam\"",
           "adam (AdamW) or sgd">,
    Option<"beta1", "beta1", "double", /*default=*/"0.9", "AdamW beta1">,
    Option<"beta2", "beta2", "double", /*default=*/"0.999", "AdamW beta2">,
    Option<"eps", "eps", "double", /*default=*/"1e-8", "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", /*default=*/"0.01",
           "Decoupled weight decay (parameters of rank >= 2 only)">,
    Option<"clipGrad", "clip-grad", "double", /*default=*/"1.0",
           "Clip the global gradient norm to this (<= 0: no clipping)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaFuseElementwise : Pass<"mega-fuse-elementwise", "mlir::ModuleOp"> {
  let summary = "Group chains of elementwise ops into mega.fused";
  let description = [{
    Before:
    ```mlir
    %0 = mega.add %x, %b : tensor<128x256xf32>, tensor<256xf32> -> tensor<128x256xf32>
    %1 = mega.gelu %0 : tensor<128x256xf32> -> tensor<128x256xf32>
    ```
    After:
    ```mlir
    %1 = mega.fused (%x, %b) : (tensor<128x256xf32>, tensor<256xf32>) -> tensor<128x256xf32> {
    ^bb0(%a: tensor<128x256xf32>, %c: tensor<256xf32>):
      %0 = mega.add %a, %c : tensor<128x256xf32>, tensor<256xf32> -> tensor<128x256xf32>
      %g = mega.gelu %0 : tensor<128x256xf32> -> tensor<128x256xf32>
      mega.yield %g : tensor<128x256xf32>
    }
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaLowerToKernels : Pass<"mega-lower-to-kernels", "mlir::ModuleOp"> {
  let summary = "Map every op to mega.kernel / mega.view (plan instructions)";
  let description = [{
    Before:
    ```mlir
    %c = mega.matmul %a, %b : tensor<128x64xf32>, tensor<64x192xf32> -> tensor<128x192xf32>
    ```
    After:
    ```mlir
    %c = mega.kernel "MatMul"(%a, %b) i [1, 128, 192, 64, 0, 0, 64, 192, 192, 0, 0, 0] f [1.0, 0.0]
        : (tensor<128x64xf32>, tensor<64x192xf32>) -> tensor<128x192xf32>
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaFuseOptimizer : Pass<"mega-fuse-optimizer", "mlir::ModuleOp"> {
  let summary = "One AdamWMulti per run of AdamW kernels, grad Fills folded";
  let description = [{
    At kernel level, after mega-lower-to-kernels: each run of plain AdamW
    kernels (no `i`: not the distributed optimizer's block update) with the
    same lr, step, coef, beta1, beta2 and eps, separated only by ops that
    name buffers or views, becomes one `AdamWMulti` at the place of its last
    member (i = {n, zero_grads}; f = {beta1, beta2, eps, wd_1..wd_n}). The
    tensors whose gradient is cleared afterwards by a `Fill 0` kernel into
    it with no op between reading it get one with zero_grads = 1 and lose
    those Fills; the others one with zero_grads = 0 (a single one stays an
    AdamW). Sgd and every other kernel are left alone.

    Before:
    ```mlir
    mega.kernel "AdamW"(%p0, %g0, %m0, %v0, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.01] : ...
    mega.kernel "AdamW"(%p1, %g1, %m1, %v1, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.0] : ...
    mega.kernel "Fill"(%z0) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<16x32xf32>) -> ()
    mega.kernel "Fill"(%z1) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<32xf32>) -> ()
    ```
    After:
    ```mlir
    mega.kernel "AdamWMulti"(%lr, %step, %coef, %p0, %g0, %m0, %v0, %p1, %g1, %m1, %v1)
        i [2, 1] f [0.9, 0.999, 1.0e-8, 0.01, 0.0] : ...
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaFuseLoss : Pass<"mega-fuse-loss", "mlir::ModuleOp"> {
  let summary = "CrossEntropy and its gradient as one CrossEntropyWithGrad kernel";
  let description = [{
    At kernel level, after mega-fold-casts and before mega-assign-buffers: a
    CrossEntropyGrad that reads the lse, logits and targets of a
    CrossEntropy in the same program, with its dloss ready before the
    CrossEntropy and no in-place write between them into what they read,
    becomes one CrossEntropyWithGrad (logits, targets, dloss) -> (loss, lse,
    dlogits) at the CrossEntropy's place: each row of the logits (GPT's
    largest tensor) is read from memory once instead of twice. The same
    bits (docs/plan-format.md: the two kernels' results).

    Before:
    ```mlir
    %loss, %lse = mega.kernel "CrossEntropy"(%z, %t) i [16, 64] f [] : ...
    %dz = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %one) i [16, 64] f [] : ...
    ```
    After:
    ```mlir
    %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [16, 64] f [] : ...
    ```
  }];
  let options = [
    Option<"enable", "enable", "bool", /*default=*/"true",
           "Fuse (false: keep the two kernels)">,
  ];
}

def MegaChunkLoss : Pass<"mega-chunk-loss", "mlir::ModuleOp"> {
  let summary = "The output layer and its loss a row block at a time";
  let description = [{
    At kernel level, after mega-fuse-loss and before mega-assign-buffers: a
    CrossEntropyWithGrad whose logits (the only result of a MatMul read by
    it alone) are larger than `max-logits-mib`, and whose dlogits only
    MatMuls read (the input gradient, by rows; the weight gradient, summed
    over rows), runs with those MatMuls on row blocks: the smallest number
    n of blocks dividing the rows with each block's logits within the
    limit. Each block computes its logits, its loss share (added to the
    loss: {r, V, rows, accumulate}, docs/plan-format.md opcode 34), its
    dlogits over them, its rows of the input gradient, and adds its part of
    the weight gradient; the arena then holds one block's logits instead of
    all of them. The lse, dlogits and input-gradient rows keep their bits;
    the loss and the weight gradient add n partial sums. Nothing between
    the MatMul and the last reader but views, outputs and state.

    Before (limit below the logits' bytes):
    ```mlir
    %z = mega.kernel "MatMul"(%x, %w) i [1, 8, 64, 4, 0, 1, 4, 4, 64, 0, 0, 0] f [1.0, 0.0] : ...
    %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [8, 64] f [] : ...
    %dx = mega.kernel "MatMul"(%r#2, %w) i [1, 8, 4, 64, 0, 0, 64, 4, 4, 0, 0, 0] f [1.0, 0.0] : ...
    ```
    After (two blocks):
    ```mlir
    %loss = mega.empty : tensor<f32>
    %z0 = mega.kernel "MatMul"(%x0, %w) i [1, 4, 64, 4, ...] f [1.0, 0.0] : ...
    %d0 = mega.kernel "CrossEntropyWithGrad"(%z0, %t0, %one, %loss, %lse0) i [4, 64, 8, 0] f [] {mega.dests = 2} : ...
    mega.kernel "MatMul"(%d0, %w, %dx0) i [1, 4, 4, 64, ...] f [1.0, 0.0] {mega.dests = 1} : ...
    ... the same for block 1, with i [4, 64, 8, 1]
    ```
  }];
  let options = [
    Option<"maxLogitsMib", "max-logits-mib", "double", /*default=*/"0",
           "Largest logits (MiB) computed at once (0: never split)">,
  ];
}

def MegaFuseNormGrad : Pass<"mega-fuse-norm-grad", "mlir::ModuleOp"> {
  let summary = "The residual add, the dx cast, the dw/db adds and the copy's bias sum into LayerNormGrad";
  let description = [{
    At kernel level, after mega-fold-casts, mega-fuse-loss and
    mega-chunk-loss, before mega-assign-buffers: the Elementwise that adds a LayerNormGrad's dx to
    the residual gradient r (and stores the sum's bf16 copy) goes when
    nothing after the norm reads r's old value; the norm accumulates into
    r's bytes (accumulate) and writes the copy as its 4th result. A Cast of
    dx to bf16 becomes that 4th result too. The two in-place Elementwise
    adds of dw and db into the parameter gradients go when nothing between
    touches those gradients: the norm adds its finished sums into them
    (accumulate_wb). A ReduceSum of the whole copy (a Linear's bias
    gradient, in place or fresh) then becomes the norm's 5th output, dsum,
    when nothing between writes what it reads and nothing between touches
    the gradient. The same bits (docs/plan-format.md, opcode 6).

    Before:
    ```mlir
    %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [16, 8, 0] f [] : ...
    %s:2 = mega.kernel "Elementwise"(%r, %d#0) i [128, 2, 2, 128, 128, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0] f [] : ...
    mega.kernel "Elementwise"(%gw, %d#1, %gw) i [8, 2, 1, 8, 8, ...] f [] {mega.dests = 1 : i64} : ...
    mega.kernel "Elementwise"(%gb, %d#2, %gb) i [8, 2, 1, 8, 8, ...] f [] {mega.dests = 1 : i64} : ...
    ```
    After:
    ```mlir
    %h = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s, %r, %gw, %gb) i [16, 8, 1, 1] f [] {mega.dests = 3 : i64} : ... -> tensor<16x8xbf16>
    ```
    (%r then holds the sum, %h its bf16 copy.)
  }];
  let options = [
    Option<"enable", "enable", "bool", /*default=*/"true",
           "Fuse (false: keep the separate kernels)">,
  ];
}

def MegaFuseBiasGrad : Pass<"mega-fuse-bias-grad", "mlir::ModuleOp"> {
  let summary = "A Linear's bias gradient into its weight gradient's MatMul";
  let description = [{
    At kernel level, after mega-fuse-norm-grad, before mega-assign-buffers:
    a ReduceSum adding the column sums of a Linear's output gradient dy
    into the bias gradient in place goes into the MatMul that adds x^T dy
    into the weight gradient (dy its B operand, not transposed, batch 1,
    alpha 1), as the MatMul's epilogue 5 (B's column sums into a second
    destination; docs/plan-format.md), when nothing between the two writes
    what they read or touches the bias gradient. On the GPU cuBLASLt's
    bias-gradient epilogue sums dy while the product reads it. Same bits on
    the CPU.

    Before:
    ```mlir
    mega.kernel "ReduceSum"(%dy, %gb) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xbf16>, tensor<8xf32>) -> ()
    mega.kernel "MatMul"(%x, %dy, %gw) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : ...
    ```
    After:
    ```mlir
    mega.kernel "MatMul"(%x, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1] f [1.0, 1.0] {mega.dests = 2 : i64} : ...
    ```
  }];
  let options = [
    Option<"enable", "enable", "bool", /*default=*/"true",
           "Fuse (false: keep the ReduceSum kernels)">,
  ];
}

def MegaOverwriteGrads : Pass<"mega-overwrite-grads", "mlir::ModuleOp"> {
  let summary = "The first kernel to add into a gradient in a step overwrites it";
  let description = [{
    At kernel level, last before mega-assign-buffers, when the train program
    runs once per step (`microbatches=1`: one micro-batch, no pipeline): the
    first use of each gradient in @train, when it is a kernel adding into
    the whole gradient (a MatMul's C with beta 1, its bias-gradient
    epilogue's g, a ReduceSum, an EmbeddingGrad, a LayerNormGrad's dw and db
    or its dsum), becomes the same kernel overwriting it; in @optimizer the
    Fill 0 of such a gradient goes, and an AdamWMulti whose gradients are
    all overwritten no longer clears them (zero_grads 0). The zeros are
    neither written nor read (PyTorch's zero_grad(set_to_none=True)); the
    bits are the same. Any other value of `microbatches` changes nothing.

    Before:
    ```mlir
    %g = mega.state "w" {role = "grad"} : tensor<4x8xf32>
    mega.kernel "MatMul"(%x, %dy, %g) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : ...
    ```
    After:
    ```mlir
    mega.kernel "MatMul"(%x, %dy, %g) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 0.0] {mega.dests = 1 : i64} : ...
    ```
  }];
  let options = [
    Option<"microbatches", "microbatches", "int64_t", /*default=*/"0",
           "Runs of the train program per step (only 1 changes anything)">,
  ];
}

def MegaOnesColumn : Pass<"mega-ones-column", "mlir::ModuleOp"> {
  let summary = "A Linear's bias gradient as one more row of its weight gradient";
  let description = [{
    At kernel level, after mega-overwrite-grads, before mega-assign-buffers
    (megac --ones-column-bias-grad): a MatMul with the bias-gradient
    epilogue (5) whose A is the output y of a LayerNorm, read elsewhere only
    by the Linear's forward product, gets the bias gradient from a column of
    ones beside y instead. The norm writes rows of y padded to ld = H + 1
    rounded up to 8 columns (a 1 in column H, zeros after: LayerNorm's 3rd
    attribute), the forward product reads y with lda = ld, and the weight
    gradient is a plain product of ld rows into scratch: its first H rows go
    into the weight gradient and row H into the bias gradient (a Copy, or an
    Elementwise add when the MatMul accumulated). On the GPU the product
    takes the time of the one without the epilogue; the bias gradient's bits
    are the product's f32 sum instead of ReduceSum's.

    Before:
    ```mlir
    %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [16, 4] f [1.0e-05] : ... -> (tensor<16x4xbf16>, ...)
    mega.kernel "MatMul"(%y#0, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0] f [1.0, 0.0] {mega.dests = 2 : i64} : ...
    ```
    After:
    ```mlir
    %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [16, 4, 8] f [1.0e-05] : ... -> (tensor<16x8xbf16>, ...)
    %s = mega.empty : tensor<8x8xf32>
    mega.kernel "MatMul"(%y#0, %dy, %s) i [1, 8, 8, 16, 1, 0, 8, 8, 8, 0, 0, 0] f [1.0, 0.0] {mega.dests = 1 : i64} : ...
    %sw = mega.view %s offset 0 : tensor<8x8xf32> -> tensor<4x8xf32>
    mega.kernel "Copy"(%sw, %gw) i [] f [] {mega.dests = 1 : i64} : ...
    %sb = mega.view %s offset 128 : tensor<8x8xf32> -> tensor<8xf32>
    mega.kernel "Copy"(%sb, %gb) i [] f [] {mega.dests = 1 : i64} : ...
    ```
  }];
}

def MegaFuseEpilogues : Pass<"mega-fuse-epilogues", "mlir::ModuleOp"> {
  let summary = "Bias, residual and GELU of a Linear into the MatMul's epilogue";
  let description = [{
    At kernel level, after mega-fuse-optimizer and before mega-fold-casts: a
    plain MatMul (batch 1, alpha 1, beta 0) whose f32 result's only user is
    an Elementwise computing exactly `t + bias[col]`, `(t + bias[col]) +
    residual`, or `t + bias[col]` together with its GELU (read from the
    micro-op program) becomes one MatMul with an epilogue (i[12] = 1, 2, 3;
    docs/plan-format.md): the product is not written and read back. Any
    other program keeps its Elementwise. Same bits on the CPU.

    Before:
    ```mlir
    %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : ...
    %y = mega.kernel "Elementwise"(%t, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : ...
    ```
    After:
    ```mlir
    %y = mega.kernel "MatMul"(%a, %w, %b) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : ...
    ```
  }];
  let options = [
    Option<"enable", "enable", "bool", /*default=*/"true",
           "Fuse (false: leave every MatMul and Elementwise as they are)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaFoldAttentionLayout
    : Pass<"mega-fold-attention-layout", "mlir::ModuleOp"> {
  let summary = "Attention reads q, k, v and writes o in the projection layout";
  let description = [{
    At kernel level, after mega-fuse-epilogues and before mega-fold-casts:
    the Transposes that move heads around attention disappear, the
    Attention / AttentionGrad kernels taking the strided form of
    docs/plan-format.md instead. q, k, v (of both kernels) become views of
    the fused projection's [B, S, 3, H, hd] output; o is written as [B, S, H,
    hd] when its only layout user is the head-merge Transpose (AttentionGrad
    reads it with the same strides); dout is read as [B, S, H, hd]; dq,
    dk, dv are written into one [B, S, 3, H, hd] `mega.empty` (views passed
    as `mega.dests`) instead of being joined by a concat and a Transpose. A
    Transpose that also rounded f32 -> bf16 leaves a Cast of its input in
    its place, which mega-fold-casts can fold into that input's producer.
    A Transpose with any other user stays. Same bits on the CPU.

    Before:
    ```mlir
    %t = mega.kernel "Transpose"(%x) i [5, 2, 64, 3, 4, 16, 2, 0, 3, 1, 4] f [] : (tensor<2x64x3x4x16xf32>) -> tensor<3x2x4x64x16xbf16>
    %q = mega.view %t offset 0 : tensor<3x2x4x64x16xbf16> -> tensor<2x4x64x16xbf16>
    ```
    After:
    ```mlir
    %c = mega.kernel "Cast"(%x) i [24576] f [] : (tensor<2x64x3x4x16xf32>) -> tensor<2x64x3x4x16xbf16>
    %q = mega.view %c offset 0 : tensor<2x64x3x4x16xbf16> -> tensor<24448xbf16>
    ```
    and the Attention's i = {BH, S, hd, causal, H, q|k|v strides, o
    strides}.
  }];
  let options = [
    Option<"enable", "enable", "bool", /*default=*/"true",
           "Fold (false: keep every Transpose around attention)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaFoldCasts : Pass<"mega-fold-casts", "mlir::ModuleOp"> {
  let summary = "Let kernels write the bf16 copy a Cast would make";
  let description = [{
    At kernel level, after mega-lower-to-kernels: a `Cast` to bf16 whose
    source (seen through `mega.view`s) is a fresh result of a kernel that
    rounds on store (an Elementwise result, a Transpose, CrossEntropyGrad's
    dlogits, LayerNorm's y, Attention's o, the D of a MatMul with an
    epilogue; docs/plan-format.md) disappears:
    when every other user is a view, such a Cast, or a Transpose with a bf16
    output, the producer writes bf16 itself, the views are retyped (byte
    offsets halved), the Transposes become bf16 -> bf16 and the casts' users
    read the bf16 value. When an Elementwise result has other users too, the
    Elementwise gets a second, bf16 output (the same register stored twice)
    instead. A `mega.empty` that only such Casts read and that kernels able
    to round all their destinations fill (AttentionGrad's dq|dk|dv buffer)
    becomes bf16 the same way. This saves the f32 write, the cast's read and
    its launch.

    Before:
    ```mlir
    %t = mega.kernel "Transpose"(%x) i [...] f [] : (tensor<4x8xf32>) -> tensor<8x4xf32>
    %b = mega.kernel "Cast"(%t) i [32] f [] : (tensor<8x4xf32>) -> tensor<8x4xbf16>
    ```
    After:
    ```mlir
    %b = mega.kernel "Transpose"(%x) i [...] f [] : (tensor<4x8xf32>) -> tensor<8x4xbf16>
    ```
  }];
  let options = [
    Option<"normAttention", "norm-attention", "bool", /*default=*/"true",
           "Also LayerNorm's y, Attention's o and bf16 -> bf16 Transposes "
           "(off for a backend without those forms)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaBf16Bias : Pass<"mega-bf16-bias", "mlir::ModuleOp"> {
  let summary = "A MatMul that stores its bias sum in bf16 reads the bias in bf16";
  let description = [{
    At kernel level, after mega-fold-casts and before
    mega-bf16-weight-copies: a MatMul whose epilogue adds an f32 bias into a
    value it stores in bf16 (D of the bias and bias + residual epilogues,
    aux of bias + GELU) reads a bf16 Cast of the bias instead (one per bias
    per function, right after its definition, or an existing Cast that
    dominates it). cuBLASLt's bias epilogue takes the bias only in the type
    of the matrix it writes, and PyTorch's autocast rounds a Linear's bias
    too; the bias is widened on load and added in f32 as before. A
    parameter's Cast then becomes the optimizer's bf16 copy
    (mega-bf16-weight-copies).

    Before:
    ```mlir
    %b = mega.param "fc.bias" [8] init zeros : tensor<8xf32>
    %d = mega.kernel "MatMul"(%x, %w, %b) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>) -> tensor<4x8xbf16>
    ```
    After:
    ```mlir
    %b = mega.param "fc.bias" [8] init zeros : tensor<8xf32>
    %c = mega.kernel "Cast"(%b) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
    %d = mega.kernel "MatMul"(%x, %w, %c) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xbf16>) -> tensor<4x8xbf16>
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaBf16WeightCopies : Pass<"mega-bf16-weight-copies", "mlir::ModuleOp"> {
  let summary = "The optimizer keeps each weight's bf16 copy; no weight Casts";
  let description = [{
    At kernel level, after mega-fuse-optimizer and before
    mega-assign-buffers: every parameter whose every update is one
    AdamWMulti slot per optimizer function, or one AllGather into the whole
    parameter (the distributed optimizer's), on each pipeline rank that
    casts it (not Sgd, not a plain AdamW) gets a persistent bf16 copy,
    `mega.state "name" {role = "param_copy"}`. Its Casts (f32 mega.param
    -> bf16, whole) in every program read the copy instead; the AdamWMulti
    writes it from the updated value in the same pass (i = {n, zero_grads,
    c_1..c_n}, the copies as mega.dests in slot order), or a Cast into it
    follows the AllGather: the same bits, computed once per step instead of
    at every use (Megatron's bf16 model params beside the fp32 main
    params).

    Before:
    ```mlir
    %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
    %c = mega.kernel "Cast"(%w) i [512] f [] : (tensor<16x32xf32>) -> tensor<16x32xbf16>
    ...
    mega.kernel "AdamWMulti"(%lr, %step, %coef, %w, %g, %m, %v) i [1, 1] f [...] : ...
    ```
    After:
    ```mlir
    %c = mega.state "w" {role = "param_copy"} : tensor<16x32xbf16>
    ...
    %wc = mega.state "w" {role = "param_copy"} : tensor<16x32xbf16>
    mega.kernel "AdamWMulti"(%lr, %step, %coef, %w, %g, %m, %v, %wc) i [1, 1, 1] f [...] {mega.dests = 1 : i64} : ...
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaAssignBuffers : Pass<"mega-assign-buffers", "mlir::ModuleOp"> {
  let summary = "Place every kernel result in the program arena";
  let description = [{
    Liveness-packs the results of each program's kernels into one arena:
    every kernel (and contiguous concat) gets `mega.offset`, one byte offset
    per result (-1: the result is written into an output port), and every
    function `mega.arena_bytes` (plus `mega.naive_bytes`, the sum of all
    buffers, and `mega.peak_live_bytes`, the lower bound).

    After:
    ```mlir
    func.func @train() attributes {mega.arena_bytes = 1048576 : i64, ...} {
      %c = mega.kernel "MatMul"(%a, %b) i [...] f [...] {mega.offset = array<i64: 0>} : ...
    ```

    With `wgrad-slack=N`, the buffers a weight gradient's product reads
    (a bf16 MatMul without an epilogue into a persistent tensor) stay live
    until the N-th kernel after it, so that a second stream can run the
    product beside those kernels (mega-run --wgrad-stream).
  }];
  let options = [
    Option<"wgradSlack", "wgrad-slack", "unsigned", /*default=*/"0",
           "Kernels after a weight gradient's product that may not write "
           "into the buffers it reads">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

#endif // MEGA_PASSES_PASSES_TD

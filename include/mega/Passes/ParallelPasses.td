//===- ParallelPasses.td - Parallelism passes of megac ----*- tablegen -*-===//
//
// The passes that split the model over ranks (tensor, data and pipeline
// parallelism) and shape what pipeline programs hand each other; included
// by Passes.td, which documents the conventions every pass follows.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PASSES_PARALLELPASSES_TD
#define MEGA_PASSES_PARALLELPASSES_TD

include "mlir/Pass/PassBase.td"

def MegaTensorParallel : Pass<"mega-tensor-parallel", "mlir::ModuleOp"> {
  let summary = "Split the forward program over `size` tensor-parallel devices";
  let description = [{
    Decides, from the tensor-level forward IR and each op's
    ShardingOpInterface rule, which parameters to split and where the
    collectives go, then rewrites every program into the per-device (local)
    program of a 1-D mesh of `size` devices (`mega.mesh = array<i64: size>`
    on the module). Every matmul whose weight is a parameter is tried as
    column-parallel; the split propagates forward until it is absorbed by a
    row-parallel weight (whose product is a partial sum, reduced by
    `mega.all_reduce`); a try that reaches an op which cannot take the split
    is abandoned and that weight stays replicated. For GPT this gives
    Megatron's layout: c_attn and c_fc split by output columns (c_attn
    re-ordered so each device holds whole heads: `mega.shard_groups = 3`),
    attention split by heads, c_proj split by input rows followed by one
    all-reduce; the tied wte split by vocabulary rows, with the
    vocabulary-parallel lookup and loss (`mega.vocab_embedding`,
    `mega.vocab_cross_entropy`: max and sum all-reduces, the logits never
    gathered except as @predict's output). Replicated values entering split
    work pass through `mega.copy_to_region` (all-reduce of the gradient). Run after
    mega-decompose, before mega-autodiff. `heads` (hyper-parameter) not
    divisible by `size` is an error.

    With `sequence-parallel`, a partial sum that would be all-reduced for an
    op that can work on blocks of rows (the leading dim: bias and residual
    adds, layer norms) is reduce-scattered into this device's block instead;
    the blocks flow on until an op needs them whole (the input of a
    column-parallel matmul, the output layer), where they are all-gathered.
    The layer norms' weights then enter split work through
    `mega.copy_to_region`, so their gradients are all-reduced.

    Before (size=2):
    ```mlir
    %w1 = mega.param "mlp.c_fc.weight" [8, 32] init normal(0.02) : tensor<8x32xf32>
    %h = mega.matmul %x, %w1 : tensor<4x8xf32>, tensor<8x32xf32> -> tensor<4x32xf32>
    %g = mega.gelu %h : tensor<4x32xf32> -> tensor<4x32xf32>
    %w2 = mega.param "mlp.c_proj.weight" [32, 8] init normal(0.02) : tensor<32x8xf32>
    %y = mega.matmul %g, %w2 : tensor<4x32xf32>, tensor<32x8xf32> -> tensor<4x8xf32>
    ```
    After:
    ```mlir
    %w1 = mega.param "mlp.c_fc.weight" [8, 16] init normal(0.02)
        {mega.sharding = #mega.sharding<[[], [0]]>} : tensor<8x16xf32>
    %x1 = mega.copy_to_region %x axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
    %h = mega.matmul %x1, %w1 {mega.sharding = #mega.sharding<[[], [0]]>} : ... -> tensor<4x16xf32>
    %g = mega.gelu %h {mega.sharding = #mega.sharding<[[], [0]]>} : ...
    %w2 = mega.param "mlp.c_proj.weight" [16, 8] init normal(0.02)
        {mega.sharding = #mega.sharding<[[0], []]>} : tensor<16x8xf32>
    %p = mega.matmul %g, %w2 {mega.sharding = #mega.sharding<[[], []], partial = sum [0]>} : ...
    %y = mega.all_reduce %p axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
    ```
  }];
  let options = [
    Option<"size", "size", "int64_t", /*default=*/"1",
           "Tensor-parallel devices (Megatron's --tensor-model-parallel-size)">,
    Option<"sequenceParallel", "sequence-parallel", "bool", /*default=*/"false",
           "Megatron's sequence parallelism: layer norms and residual adds "
           "on blocks of rows, reduce-scatter / all-gather instead of "
           "all-reduce">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaDataParallel : Pass<"mega-data-parallel", "mlir::ModuleOp"> {
  let summary = "Start @optimizer with bucketed gradient all-reduces over the data axis";
  let description = [{
    Data parallelism over `size` ranks: every rank runs the same @train on
    its own samples (the loss seed already carries 1/(microbatches*size), so
    a sum over ranks is the mean gradient). This pass makes @optimizer start
    by summing the gradients over mesh axis 1, the data-parallel axis
    (`mega.mesh = array<i64: T, D>`; it sets D = `size`, T stays or is 1).
    The gradients, in the order @optimizer reads them, are packed into
    buckets of at most `bucket-mb` MiB (a larger gradient is a bucket of its
    own): each bucket is one `mega.concat` of the flattened gradients, one
    `mega.all_reduce ... axes [1]`, and `mega.view`s back to each gradient's
    shape, which replace the gradient's uses (grad_norm, adamw/sgd).
    With `overlap` (megac's default) the buckets follow the order in which
    @train's backward finishes the gradients instead, and each is reduced
    while the backward goes on: @train gets a `mega.grad_bucket_start` right
    after the bucket's last `mega.accumulate_grad` (the runtime runs it on a
    step's last micro-batch), and @optimizer a `mega.grad_bucket_wait` of the
    bucket's gradients whose results replace their uses. After
    mega-pipeline-split (no @optimizer) it does this for each rank's
    @optimizer_r with the @backward_s of its stages (s mod P = r, highest
    stage first), so a bucket never mixes ranks' gradients.
    With `distributed-optimizer` each gradient is reduce-scattered instead
    (`mega.reduce_scatter ... {dim = 0}`, one per gradient) and each rank
    updates its block; with `overlap` too, the buckets' start and wait get
    `scatter`: each gradient's reduce-scatter starts in @train and the
    wait's results are the blocks. A module that already has
    `mega.distributed_optimizer` is only overlapped (megac with --pp runs
    the pass before the split without `overlap`, then after it with).
    `size` = 1 leaves the module unchanged. Run after mega-optimizer.

    Before (size=2):
    ```mlir
    %g0 = mega.state "b" {role = "grad"} : tensor<8xf32>
    %g1 = mega.state "w" {role = "grad"} : tensor<4x8xf32>
    %n, %c = mega.grad_norm %g0, %g1 ...
    ```
    After:
    ```mlir
    %g0 = mega.state "b" {role = "grad"} : tensor<8xf32>
    %g1 = mega.state "w" {role = "grad"} : tensor<4x8xf32>
    %f1 = mega.reshape %g1 : tensor<4x8xf32> -> tensor<32xf32>
    %b = mega.concat %g0, %f1 {dim = 0 : i64} : tensor<8xf32>, tensor<32xf32> -> tensor<40xf32>
    %r = mega.all_reduce %b axes [1] : tensor<40xf32> -> tensor<40xf32>
    %r0 = mega.view %r offset 0 : tensor<40xf32> -> tensor<8xf32>
    %r1 = mega.view %r offset 32 : tensor<40xf32> -> tensor<4x8xf32>
    %n, %c = mega.grad_norm %r0, %r1 ...
    ```
  }];
  let options = [
    Option<"size", "size", "int64_t", /*default=*/"1",
           "Data-parallel ranks (Megatron's data-parallel size)">,
    Option<"distributedOptimizer", "distributed-optimizer", "bool",
           /*default=*/"false",
           "ZeRO-1 (Megatron's --use-distributed-optimizer): reduce-scatter "
           "each gradient, update this rank's shard with its shard of the "
           "AdamW moments, all-gather the parameter">,
    Option<"bucketMb", "bucket-mb", "double", /*default=*/"25.0",
           "Largest gradient bucket in MiB (one all-reduce per bucket)">,
    Option<"overlap", "overlap", "bool", /*default=*/"false",
           "Start each bucket's all-reduce (reduce-scatters with "
           "distributed-optimizer) in @train as soon as its gradients are "
           "final (Megatron's --overlap-grad-reduce)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaTensorGradBucket : Pass<"mega-tensor-grad-bucket", "mlir::ModuleOp"> {
  let summary = "Sum the replicated parameters' tensor-parallel gradient terms once a step, in one bucket";
  let description = [{
    With sequence parallelism each tensor-parallel rank computes the
    gradient of a replicated parameter (layer norms, the biases added to
    row blocks, wpe) from its own block of rows: a term of the gradient.
    mega-tensor-parallel sums it over the tensor ranks in the backward, one
    `mega.all_reduce ... axes [0]` per parameter and micro-batch. This pass
    lets the accumulators add the terms instead and sums them once per step,
    at the start of the optimizer, all in one bucket (Megatron all-reduces
    these gradients together after the backward). A parameter qualifies
    when every `mega.accumulate_grad` of it adds such an all-reduce that
    nothing else reads. In each optimizer program (@optimizer, or each
    rank's @optimizer_r after mega-pipeline-split) the qualifying gradients,
    as the update reads them (after mega-data-parallel: a bucket's view, a
    `mega.grad_bucket_wait` result or a reduce-scattered block; tensor and
    data sums commute), are flattened, concatenated, summed by one
    `mega.all_reduce ... axes [0]` and read back through `mega.view`s. The
    module gets `mega.partial_grads = {name = 0 : i64, ...}`: the plan marks
    those gradients partial over the tensor group. A mesh without a tensor
    axis larger than 1 leaves the module unchanged. Run after mega-optimizer,
    mega-data-parallel and mega-pipeline-split.

    Before (mesh [2]):
    ```mlir
    // @train
    %r = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
    mega.accumulate_grad "ln.bias", %r : tensor<8xf32>
    // @optimizer
    %g = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
    %n, %c = mega.grad_norm %g ...
    ```
    After:
    ```mlir
    mega.accumulate_grad "ln.bias", %db : tensor<8xf32>
    // @optimizer
    %g = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
    %s = mega.all_reduce %g axes [0] : tensor<8xf32> -> tensor<8xf32>
    %v = mega.view %s offset 0 : tensor<8xf32> -> tensor<8xf32>
    %n, %c = mega.grad_norm %v ...
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaPipelineStages : Pass<"mega-pipeline-stages", "mlir::ModuleOp"> {
  let summary = "Cut @train's forward program into balanced pipeline stages";
  let description = [{
    Gives every op of @train a `mega.stage` (virtual stage s of S; it runs on
    pipeline rank s mod P): the layers `<prefix>.<i>.*` are cut into S
    contiguous groups balanced by their FLOPs, the embedding joins stage 0 and
    the final norm, output layer and loss stage S-1. Among the cuts with the
    same most expensive group, the one with the smallest estimated peak
    memory of the fullest rank wins (parameter state + the activations of
    the micro-batches the schedule keeps in flight), then the earliest cut;
    with memory-limit-mb no rank may exceed the limit (none fits: an error
    naming the smallest peak). Ops without operands (params, inputs, fills)
    are cloned per stage that uses them. The module gets
    `mega.pipeline_layers` (one string per stage) and `mega.pipeline_memory`
    (estimated peak bytes per rank). Run after mega-decompose (and
    mega-tensor-parallel), before mega-autodiff, which copies each op's stage
    onto its adjoint. S > layers is an error.

    Before (stages=2):
    ```mlir
    %x = mega.embedding %tok, %wte : ...
    %w0 = mega.param "h.0.mlp.c_fc.weight" ...
    %y0 = mega.matmul %x, %w0 : ...
    %w1 = mega.param "h.1.mlp.c_fc.weight" ...
    %y1 = mega.matmul %y0, %w1 : ...
    ```
    After:
    ```mlir
    %x = mega.embedding %tok, %wte {mega.stage = 0 : i64} : ...
    %y0 = mega.matmul %x, %w0 {mega.stage = 0 : i64} : ...
    %y1 = mega.matmul %y0, %w1 {mega.stage = 1 : i64} : ...
    ```
  }];
  let options = [
    Option<"stages", "stages", "int64_t", /*default=*/"1",
           "Pipeline stages S = P*V (ranks times virtual stages per rank)">,
    Option<"ranks", "ranks", "int64_t", /*default=*/"0",
           "Pipeline ranks P (0: one per stage)">,
    Option<"schedule", "schedule", "std::string", /*default=*/"\"1f1b\"",
           "gpipe, 1f1b or interleaved: how many micro-batches each rank "
           "keeps in flight">,
    Option<"microbatches", "microbatches", "int64_t", /*default=*/"1",
           "Micro-batches per optimizer step (m)">,
    Option<"optimizer", "optimizer", "std::string", /*default=*/"\"adam\"",
           "adam (two moments per parameter) or sgd (none)">,
    Option<"momentShards", "moment-shards", "int64_t", /*default=*/"1",
           "Data-parallel ranks sharing each moment (distributed optimizer)">,
    Option<"memoryLimitMb", "memory-limit-mb", "double", /*default=*/"0",
           "Largest estimated peak per rank in MiB (0: no limit)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaPipelineSplit : Pass<"mega-pipeline-split", "mlir::ModuleOp"> {
  let summary = "One forward, backward and optimizer program per stage";
  let description = [{
    Cuts the differentiated @train (ops carry `mega.stage`) into
    `@forward_s` and `@backward_s` per virtual stage s, and @optimizer into
    `@optimizer_r` per pipeline rank r (the parameters its stages read).
    A value used by another program becomes an output port of its producer
    and an input port of its user with the same name (`pipe.N`): an
    activation sent forward, its gradient sent back, or a value stashed
    for the backward of the same micro-batch. The tied embedding's gradient
    is summed over the pipeline axis (mesh axis 2) before the update, and
    the gradient norm is summed over the pipeline ranks with each parameter
    counted once. @eval and @predict are dropped (they need every stage).

    Before (ranks=2):
    ```mlir
    func.func @train() {
      %y0 = mega.matmul %x, %w0 {mega.stage = 0 : i64} : ...
      %y1 = mega.matmul %y0, %w1 {mega.stage = 1 : i64} : ...
    ```
    After:
    ```mlir
    func.func @forward_0() attributes {mega.program = "forward", mega.stage = 0 : i64} {
      %y0 = mega.matmul %x, %w0 : ...
      mega.output "pipe.0", %y0 : ...
    func.func @forward_1() attributes {mega.program = "forward", mega.stage = 1 : i64} {
      %y0 = mega.input "pipe.0" [...] : ...
      %y1 = mega.matmul %y0, %w1 : ...
    ```
  }];
  let options = [
    Option<"ranks", "ranks", "int64_t", /*default=*/"1",
           "Pipeline ranks P (stage s runs on rank s mod P)">,
  ];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaPortSources : Pass<"mega-port-sources", "mlir::ModuleOp"> {
  let summary = "A pipeline port sends the value its layout ops start from";
  let description = [{
    At op level, right after mega-pipeline-split. A port (`pipe.N`) whose
    value the producer only reshapes, transposes or splits out of another
    value r (attention's q, k and v out of the fused projection) carries r
    instead, once per r: through a port already carrying r, else through
    this one. Each reader redoes the layout ops on its input. Attention's o,
    sent both as itself and moved back to rows, crosses once, in rows; the
    attention gradient's readers move it back. The same values; at kernel
    level no copy of a split's parts, and attention reads the projection's
    layout and o's rows in place (mega-fold-attention-layout).

    Before:
    ```mlir
    %t = mega.transpose %x perm [1, 0] : tensor<4x6xf32> -> tensor<6x4xf32>
    mega.output "pipe.0", %t : tensor<6x4xf32>
    // in another program:
    %in = mega.input "pipe.0" [6, 4] : tensor<6x4xf32>
    ```
    After:
    ```mlir
    mega.output "pipe.0", %x : tensor<4x6xf32>
    // in another program:
    %in = mega.input "pipe.0" [4, 6] : tensor<4x6xf32>
    %t = mega.transpose %in perm [1, 0] : tensor<4x6xf32> -> tensor<6x4xf32>
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

def MegaNarrowPorts : Pass<"mega-narrow-ports", "mlir::ModuleOp"> {
  let summary = "Pipeline ports carry bf16 where the value is exactly that";
  let description = [{
    At op level, after mega-mixed-precision. A pipeline port (`pipe.N`, an
    output of one program and an input of others, made f32 by
    mega-pipeline-split before mixed precision) carries bf16 when its
    producer only widens a bf16 value (the residual stream, a rounded
    activation) or when every reader only rounds it to bf16 (a saved
    activation the backward's products read): the readers take the bf16
    input, widened by a cast where they need f32. The same values; half the
    port's bytes, in memory and between pipeline ranks.

    Before:
    ```mlir
    %b = mega.cast %x : tensor<4x8xf32> -> tensor<4x8xbf16>
    %w = mega.cast %b : tensor<4x8xbf16> -> tensor<4x8xf32>
    mega.output "pipe.0", %w : tensor<4x8xf32>
    // in another program:
    %in = mega.input "pipe.0" [4, 8] : tensor<4x8xf32>
    %y, %m, %r = mega.layer_norm %in, ...
    ```
    After:
    ```mlir
    mega.output "pipe.0", %b : tensor<4x8xbf16>
    // in another program:
    %in = mega.input "pipe.0" [4, 8] : tensor<4x8xbf16>
    %wide = mega.cast %in : tensor<4x8xbf16> -> tensor<4x8xf32>
    %y, %m, %r = mega.layer_norm %wide, ...
    ```
  }];
  let dependentDialects = ["mega::MegaDialect"];
}

#endif // MEGA_PASSES_PARALLELPASSES_TD

// RUN: mega-opt %s -split-input-file -mega-lower-to-kernels | FileCheck %s

// Tensor parallelism at kernel level: copy_to_region is the identity (a
// view), the vocabulary-parallel ops are their kernels with group = the
// mesh axis, the last integer attribute (Plan.h opcodes 22-27).
// CHECK-LABEL: func.func @vocab_parallel
// CHECK: mega.view %arg2 offset 0 : tensor<2x8x16xf32> -> tensor<2x8x16xf32>
// CHECK-NOT: copy_to_region
// CHECK: %[[E:.*]] = mega.kernel "VocabEmbedding"(%arg1, %arg0) i [16, 32, 16, 0]
// CHECK: mega.kernel "AllReduce"(%[[E]]) i [0, 0]
// CHECK: %[[M:.*]] = mega.kernel "RowMax"(%arg3) i [16, 32]
// CHECK: %[[GM:.*]] = mega.kernel "AllReduce"(%[[M]]) i [0, 1]
// CHECK: %[[S:.*]]:2 = mega.kernel "VocabCrossEntropyStats"(%arg3, %arg4, %[[GM]]) i [16, 32, 0]
// CHECK: %[[L:.*]]:2 = mega.kernel "VocabCrossEntropy"(%[[GM]], %[[S]]#0, %[[S]]#1) i [16]
// CHECK: mega.kernel "VocabCrossEntropyGrad"(%arg3, %arg4, %[[L]]#1, %arg5) i [16, 32, 0]
// CHECK: mega.kernel "VocabEmbeddingGrad"(%arg6, %arg0) i [16, 32, 16, 0, 0]
func.func @vocab_parallel(%ids: tensor<2x8xi32>, %wte: tensor<32x16xf32>,
                          %x: tensor<2x8x16xf32>, %logits: tensor<2x8x32xf32>,
                          %targets: tensor<2x8xi32>, %dloss: tensor<f32>,
                          %dy: tensor<2x8x16xf32>) {
  %c = mega.copy_to_region %x axes [0] : tensor<2x8x16xf32> -> tensor<2x8x16xf32>
  mega.output "c", %c : tensor<2x8x16xf32>
  %e = mega.vocab_embedding %ids, %wte axes [0] : tensor<2x8xi32>, tensor<32x16xf32> -> tensor<2x8x16xf32>
  %r = mega.all_reduce %e axes [0] : tensor<2x8x16xf32> -> tensor<2x8x16xf32>
  mega.output "e", %r : tensor<2x8x16xf32>
  %m = mega.row_max %logits : tensor<2x8x32xf32> -> tensor<16xf32>
  %gm = mega.all_reduce %m axes [0] {kind = "max"} : tensor<16xf32> -> tensor<16xf32>
  %se, %tl = mega.vocab_cross_entropy_stats %logits, %targets, %gm axes [0]
      : tensor<2x8x32xf32>, tensor<2x8xi32>, tensor<16xf32> -> tensor<16xf32>, tensor<16xf32>
  %loss, %lse = mega.vocab_cross_entropy %logits, %targets, %gm, %se, %tl axes [0]
      : tensor<2x8x32xf32>, tensor<2x8xi32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>
      -> tensor<f32>, tensor<16xf32>
  mega.output "loss", %loss : tensor<f32>
  %dl = mega.vocab_cross_entropy_grad %logits, %targets, %lse, %dloss axes [0]
      : tensor<2x8x32xf32>, tensor<2x8xi32>, tensor<16xf32>, tensor<f32> -> tensor<2x8x32xf32>
  mega.output "dl", %dl : tensor<2x8x32xf32>
  %dt = mega.vocab_embedding_grad %ids, %dy axes [0] : tensor<2x8xi32>, tensor<2x8x16xf32> -> tensor<32x16xf32>
  mega.output "dt", %dt : tensor<32x16xf32>
  return
}

// -----

// All-gather along the last dim (@predict's logits): AllGather stacks the
// ranks' [rows, V/T] blocks as [T, rows, V/T]; a Transpose puts them in
// place. Along dim 0 it is the kernel alone.
// CHECK-LABEL: func.func @gather
// CHECK: %[[G:.*]] = mega.kernel "AllGather"(%arg0) i [0] {{.*}} -> tensor<2x16x32xf32>
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%[[G]]) i [3, 2, 16, 32, 1, 0, 2]
// CHECK: mega.view %[[T]] offset 0 : tensor<16x2x32xf32> -> tensor<2x8x64xf32>
// CHECK: mega.kernel "AllGather"(%arg1) i [0] {{.*}} -> tensor<8x4xf32>
// CHECK: mega.kernel "ReduceScatter"(%arg1) i [0] {{.*}} -> tensor<2x4xf32>
func.func @gather(%x: tensor<2x8x32xf32>, %y: tensor<4x4xf32>) {
  %g = mega.all_gather %x axes [0] {dim = 2 : i64} : tensor<2x8x32xf32> -> tensor<2x8x64xf32>
  mega.output "g", %g : tensor<2x8x64xf32>
  %h = mega.all_gather %y axes [0] {dim = 0 : i64} : tensor<4x4xf32> -> tensor<8x4xf32>
  mega.output "h", %h : tensor<8x4xf32>
  %s = mega.reduce_scatter %y axes [0] {dim = 0 : i64} : tensor<4x4xf32> -> tensor<2x4xf32>
  mega.output "s", %s : tensor<2x4xf32>
  return
}

// -----

// Gradient norm with shards: i = {tensor group, one shard flag per operand}.
// CHECK-LABEL: func.func @grad_norm
// CHECK: mega.kernel "GradNorm"(%arg0, %arg1, %arg2) i [0, 0, 1, 0] f [1.000000e+00]
func.func @grad_norm(%a: tensor<8xf32>, %b: tensor<4x4xf32>, %c: tensor<8xf32>) {
  %n, %coef = mega.grad_norm %a, %b, %c {max_norm = 1.0 : f64, mega.sharded_grads = array<i64: 1>}
      : tensor<8xf32>, tensor<4x4xf32>, tensor<8xf32> -> tensor<f32>, tensor<f32>
  mega.output "n", %n : tensor<f32>
  mega.output "coef", %coef : tensor<f32>
  return
}

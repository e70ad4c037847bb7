// RUN: mega-opt %s -split-input-file -mega-autodiff=microbatches=4 -verify-diagnostics | FileCheck %s
// Numerics of these rules: autodiff-gradcheck.mlir.

// A linear layer: the seed is 1/microbatches; the shared rank-2 weight's
// gradient is one matmul over the flattened leading dims; the broadcast bias
// gets a reduce_sum; the input x gets no gradient.
// CHECK-LABEL: func.func @train
// CHECK-SAME: {
// CHECK: %[[X:.*]] = mega.input "x"
// CHECK: %[[T:.*]] = mega.input "t"
// CHECK: %[[L:.*]] = mega.add
// CHECK: %[[LOSS:.*]], %[[LSE:.*]] = mega.cross_entropy %[[L]], %[[T]]
// CHECK: mega.output "loss", %[[LOSS]]
// CHECK: %[[SEED:.*]] = mega.fill 2.500000e-01 : tensor<f32>
// CHECK: %[[DL:.*]] = mega.cross_entropy_grad %[[L]], %[[T]], %[[LSE]], %[[SEED]]
// CHECK: %[[DB:.*]] = mega.reduce_sum %[[DL]] {rank = 1 : i64} : tensor<2x3x5xf32> -> tensor<5xf32>
// CHECK-NOT: transpose_b
// CHECK: %[[DL2:.*]] = mega.reshape %[[DL]] : tensor<2x3x5xf32> -> tensor<6x5xf32>
// CHECK: %[[X2:.*]] = mega.reshape %[[X]] : tensor<2x3x4xf32> -> tensor<6x4xf32>
// CHECK: %[[DW:.*]] = mega.matmul %[[X2]], %[[DL2]] {transpose_a} : tensor<6x4xf32>, tensor<6x5xf32> -> tensor<4x5xf32>
// CHECK: mega.accumulate_grad "b", %[[DB]] : tensor<5xf32>
// CHECK: mega.accumulate_grad "w", %[[DW]] : tensor<4x5xf32>
// CHECK-NEXT: return
func.func @train() {
  %x = mega.input "x" [2, 3, 4] : tensor<2x3x4xf32>
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %b = mega.param "b" [5] init zeros : tensor<5xf32>
  %h = mega.matmul %x, %w : tensor<2x3x4xf32>, tensor<4x5xf32> -> tensor<2x3x5xf32>
  %l = mega.add %h, %b : tensor<2x3x5xf32>, tensor<5xf32> -> tensor<2x3x5xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// Tied weight: the gradients from the output projection and from the
// embedding are summed into one accumulate_grad.
// CHECK-LABEL: func.func @train
// CHECK: %[[IDS:.*]] = mega.input "tokens"
// CHECK: %[[WTE:.*]] = mega.param "wte.weight"
// CHECK: %[[E:.*]] = mega.embedding %[[IDS]], %[[WTE]]
// CHECK: %[[DL:.*]] = mega.cross_entropy_grad
// CHECK: %[[DE:.*]] = mega.matmul %[[DL]], %[[WTE]] : tensor<2x3x7xf32>, tensor<7x4xf32> -> tensor<2x3x4xf32>
// CHECK: %[[DL2:.*]] = mega.reshape %[[DL]] : tensor<2x3x7xf32> -> tensor<6x7xf32>
// CHECK: %[[E2:.*]] = mega.reshape %[[E]] : tensor<2x3x4xf32> -> tensor<6x4xf32>
// CHECK: %[[DW1:.*]] = mega.matmul %[[DL2]], %[[E2]] {transpose_a} : tensor<6x7xf32>, tensor<6x4xf32> -> tensor<7x4xf32>
// CHECK: %[[DW2:.*]] = mega.embedding_grad %[[IDS]], %[[DE]] {vocab = 7 : i64}
// CHECK: %[[DW:.*]] = mega.add %[[DW1]], %[[DW2]] : tensor<7x4xf32>, tensor<7x4xf32>
// CHECK: mega.accumulate_grad "wte.weight", %[[DW]]
// CHECK-NOT: mega.accumulate_grad
func.func @train() {
  %ids = mega.input "tokens" [2, 3] : tensor<2x3xi32>
  %t = mega.input "targets" [2, 3] : tensor<2x3xi32>
  %wte = mega.param "wte.weight" [7, 4] init normal(0.02) : tensor<7x4xf32>
  %x = mega.embedding %ids, %wte : tensor<2x3xi32>, tensor<7x4xf32> -> tensor<2x3x4xf32>
  %l = mega.matmul %x, %wte {transpose_b} : tensor<2x3x4xf32>, tensor<7x4xf32> -> tensor<2x3x7xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3x7xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// LayerNorm and elementwise rules; broadcast operands of rank 2, 1 and 0 get
// reduce_sum down to their rank; sub negates.
// CHECK-LABEL: func.func @train
// CHECK: %[[X:.*]] = mega.input "x"
// CHECK: %[[G:.*]] = mega.param "ln.weight"
// CHECK: %[[M:.*]] = mega.param "m"
// CHECK: %[[D:.*]] = mega.param "d"
// CHECK: %[[S:.*]] = mega.param "s"
// CHECK: %[[Y:.*]], %[[MEAN:.*]], %[[RSTD:.*]] = mega.layer_norm %[[X]], %[[G]]
// CHECK: %[[A:.*]] = mega.gelu %[[Y]]
// CHECK: %[[Q:.*]] = mega.sub
// CHECK: %[[R:.*]] = mega.scale
// CHECK: %[[DR:.*]] = mega.cross_entropy_grad %[[R]]
// CHECK: %[[DU:.*]] = mega.scale %[[DR]] {factor = 3.000000e+00 : f64}
// CHECK: %[[DQ:.*]] = mega.mul %[[DU]], %[[S]] : tensor<2x3x4xf32>, tensor<f32>
// CHECK: %[[QDU:.*]] = mega.mul %[[DU]], %[[Q]]
// CHECK: %[[DS:.*]] = mega.reduce_sum %[[QDU]] {rank = 0 : i64} : tensor<2x3x4xf32> -> tensor<f32>
// CHECK: %[[DD0:.*]] = mega.reduce_sum %[[DQ]] {rank = 1 : i64} : tensor<2x3x4xf32> -> tensor<4xf32>
// CHECK: %[[DD:.*]] = mega.scale %[[DD0]] {factor = -1.000000e+00 : f64}
// CHECK: %[[DA:.*]] = mega.mul %[[DQ]], %[[M]] : tensor<2x3x4xf32>, tensor<3x4xf32>
// CHECK: %[[ADQ:.*]] = mega.mul %[[DQ]], %[[A]]
// CHECK: %[[DM:.*]] = mega.reduce_sum %[[ADQ]] {rank = 2 : i64} : tensor<2x3x4xf32> -> tensor<3x4xf32>
// CHECK: %[[DY:.*]] = mega.gelu_grad %[[Y]], %[[DA]]
// CHECK: %{{.*}}, %[[DG:.*]], %[[DB:.*]] = mega.layer_norm_grad %[[DY]], %[[X]], %[[G]], %[[MEAN]], %[[RSTD]]
// CHECK-DAG: mega.accumulate_grad "s", %[[DS]] : tensor<f32>
// CHECK-DAG: mega.accumulate_grad "d", %[[DD]] : tensor<4xf32>
// CHECK-DAG: mega.accumulate_grad "m", %[[DM]] : tensor<3x4xf32>
// CHECK-DAG: mega.accumulate_grad "ln.weight", %[[DG]] : tensor<4xf32>
// CHECK-DAG: mega.accumulate_grad "ln.bias", %[[DB]] : tensor<4xf32>
func.func @train() {
  %x = mega.input "x" [2, 3, 4] : tensor<2x3x4xf32>
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %g = mega.param "ln.weight" [4] init ones : tensor<4xf32>
  %b = mega.param "ln.bias" [4] init zeros : tensor<4xf32>
  %m = mega.param "m" [3, 4] init normal(0.5) : tensor<3x4xf32>
  %d = mega.param "d" [4] init normal(0.5) : tensor<4xf32>
  %s = mega.param "s" [] init normal(0.5) : tensor<f32>
  %y, %mean, %rstd = mega.layer_norm %x, %g, %b : tensor<2x3x4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<2x3x4xf32>, tensor<6xf32>, tensor<6xf32>
  %a = mega.gelu %y : tensor<2x3x4xf32> -> tensor<2x3x4xf32>
  %p = mega.mul %a, %m : tensor<2x3x4xf32>, tensor<3x4xf32> -> tensor<2x3x4xf32>
  %q = mega.sub %p, %d : tensor<2x3x4xf32>, tensor<4xf32> -> tensor<2x3x4xf32>
  %u = mega.mul %q, %s : tensor<2x3x4xf32>, tensor<f32> -> tensor<2x3x4xf32>
  %r = mega.scale %u {factor = 3.0 : f64} : tensor<2x3x4xf32> -> tensor<2x3x4xf32>
  %loss, %lse = mega.cross_entropy %r, %t : tensor<2x3x4xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// Batched matmul with both operands transposed: each gradient is one matmul
// with the transpose flags of the rule (dA = op(B) @ dC^T, dB = dC^T @ op(A)).
// CHECK-LABEL: func.func @train
// CHECK: %[[A:.*]] = mega.param "a"
// CHECK: %[[B:.*]] = mega.param "b"
// CHECK: %[[DC:.*]] = mega.cross_entropy_grad
// CHECK: %[[DA:.*]] = mega.matmul %[[B]], %[[DC]] {transpose_a, transpose_b} : tensor<2x5x4xf32>, tensor<2x3x5xf32> -> tensor<2x4x3xf32>
// CHECK: %[[DB:.*]] = mega.matmul %[[DC]], %[[A]] {transpose_a, transpose_b} : tensor<2x3x5xf32>, tensor<2x4x3xf32> -> tensor<2x5x4xf32>
// CHECK: mega.accumulate_grad "b", %[[DB]]
// CHECK: mega.accumulate_grad "a", %[[DA]]
func.func @train() {
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %a = mega.param "a" [2, 4, 3] init normal(1.0) : tensor<2x4x3xf32>
  %b = mega.param "b" [2, 5, 4] init normal(1.0) : tensor<2x5x4xf32>
  %m = mega.matmul %a, %b {transpose_a, transpose_b} : tensor<2x4x3xf32>, tensor<2x5x4xf32> -> tensor<2x3x5xf32>
  %loss, %lse = mega.cross_entropy %m, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// Shared rank-2 weight against a transposed operand [..., K, M]: the rows do
// not fold, so dA is computed as dA^T and transposed back, and dW sums the
// batched products with reduce_sum.
// CHECK-LABEL: func.func @train
// CHECK: %[[A:.*]] = mega.param "a"
// CHECK: %[[W:.*]] = mega.param "w"
// CHECK: %[[DC:.*]] = mega.cross_entropy_grad
// CHECK: %[[DAT:.*]] = mega.matmul %[[DC]], %[[W]] {transpose_b} : tensor<2x3x5xf32>, tensor<4x5xf32> -> tensor<2x3x4xf32>
// CHECK: %[[DA:.*]] = mega.transpose %[[DAT]] perm [0, 2, 1] : tensor<2x3x4xf32> -> tensor<2x4x3xf32>
// CHECK: %[[P:.*]] = mega.matmul %[[A]], %[[DC]] : tensor<2x4x3xf32>, tensor<2x3x5xf32> -> tensor<2x4x5xf32>
// CHECK: %[[DW:.*]] = mega.reduce_sum %[[P]] {rank = 2 : i64} : tensor<2x4x5xf32> -> tensor<4x5xf32>
// CHECK: mega.accumulate_grad "w", %[[DW]]
// CHECK: mega.accumulate_grad "a", %[[DA]]
func.func @train() {
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %a = mega.param "a" [2, 4, 3] init normal(1.0) : tensor<2x4x3xf32>
  %w = mega.param "w" [4, 5] init normal(1.0) : tensor<4x5xf32>
  %m = mega.matmul %a, %w {transpose_a} : tensor<2x4x3xf32>, tensor<4x5xf32> -> tensor<2x3x5xf32>
  %loss, %lse = mega.cross_entropy %m, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// Layout ops: transpose by the inverse permutation, split <-> concat with a
// zero fill for the unused part, softmax_grad from the forward output,
// reduce_sum's gradient broadcast back with a zero fill.
// CHECK-LABEL: func.func @train
// CHECK: %[[X:.*]] = mega.param "x"
// CHECK: %[[PARTS:.*]]:3 = mega.split
// CHECK: %[[P:.*]] = mega.softmax %[[S:.*]] {causal, scale = 0.69999999999999996 : f64}
// CHECK: %[[BIAS:.*]] = mega.param "bias"
// CHECK: %[[DL:.*]] = mega.cross_entropy_grad
// CHECK: %[[DRS:.*]] = mega.reduce_sum %[[DL]] {rank = 2 : i64}
// CHECK: %[[Z:.*]] = mega.fill 0.000000e+00 : tensor<2x3x6xf32>
// CHECK: %[[DBIAS:.*]] = mega.add %[[Z]], %[[DRS]] : tensor<2x3x6xf32>, tensor<3x6xf32>
// CHECK: mega.accumulate_grad "bias", %[[DBIAS]]
// CHECK: %[[DC:.*]]:2 = mega.split %[[DL]] {dim = 2 : i64, parts = 2 : i64} : tensor<2x3x6xf32> -> tensor<2x3x3xf32>, tensor<2x3x3xf32>
// CHECK: %[[DS1:.*]] = mega.softmax_grad %[[P]], %[[DC]]#0 {scale = 0.69999999999999996 : f64}
// CHECK: %[[DS:.*]] = mega.add %[[DC]]#1, %[[DS1]]
// CHECK: %[[DQ:.*]] = mega.matmul %[[DS]]
// CHECK: %[[DK:.*]] = mega.matmul %[[DS]]
// CHECK: %[[DK1:.*]] = mega.reshape %[[DK]] : tensor<2x3x2xf32> -> tensor<1x2x3x2xf32>
// CHECK: %[[DQ1:.*]] = mega.reshape %[[DQ]] : tensor<2x3x2xf32> -> tensor<1x2x3x2xf32>
// CHECK: %[[ZV:.*]] = mega.fill 0.000000e+00 : tensor<1x2x3x2xf32>
// CHECK: %[[DT:.*]] = mega.concat %[[DQ1]], %[[DK1]], %[[ZV]] {dim = 0 : i64}
// CHECK: %[[DR:.*]] = mega.transpose %[[DT]] perm [1, 2, 0, 3] : tensor<3x2x3x2xf32> -> tensor<2x3x3x2xf32>
// CHECK: %[[DX:.*]] = mega.reshape %[[DR]] : tensor<2x3x3x2xf32> -> tensor<2x3x6xf32>
// CHECK: mega.accumulate_grad "x", %[[DX]]
func.func @train() {
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %x = mega.param "x" [2, 3, 6] init normal(1.0) : tensor<2x3x6xf32>
  %r = mega.reshape %x : tensor<2x3x6xf32> -> tensor<2x3x3x2xf32>
  %tr = mega.transpose %r perm [2, 0, 1, 3] : tensor<2x3x3x2xf32> -> tensor<3x2x3x2xf32>
  %parts:3 = mega.split %tr {dim = 0 : i64, parts = 3 : i64} : tensor<3x2x3x2xf32> -> tensor<1x2x3x2xf32>, tensor<1x2x3x2xf32>, tensor<1x2x3x2xf32>
  %q = mega.reshape %parts#0 : tensor<1x2x3x2xf32> -> tensor<2x3x2xf32>
  %k = mega.reshape %parts#1 : tensor<1x2x3x2xf32> -> tensor<2x3x2xf32>
  %s = mega.matmul %q, %k {transpose_b} : tensor<2x3x2xf32>, tensor<2x3x2xf32> -> tensor<2x3x3xf32>
  %p = mega.softmax %s {causal, scale = 0.7 : f64} : tensor<2x3x3xf32> -> tensor<2x3x3xf32>
  %c = mega.concat %p, %s {dim = 2 : i64} : tensor<2x3x3xf32>, tensor<2x3x3xf32> -> tensor<2x3x6xf32>
  %bias = mega.param "bias" [2, 3, 6] init normal(1.0) : tensor<2x3x6xf32>
  %rs = mega.reduce_sum %bias {rank = 2 : i64} : tensor<2x3x6xf32> -> tensor<3x6xf32>
  %l = mega.add %c, %rs : tensor<2x3x6xf32>, tensor<3x6xf32> -> tensor<2x3x6xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3x6xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// Two param ops of one name get one accumulate_grad (their sum); a parameter
// that does not reach the loss gets none, and a warning.
// CHECK-LABEL: func.func @train
// CHECK: %[[DU2:.*]] = mega.reduce_sum
// CHECK: %[[DU1:.*]] = mega.reduce_sum
// CHECK: %[[DU:.*]] = mega.add %[[DU1]], %[[DU2]] : tensor<5xf32>, tensor<5xf32>
// CHECK: mega.accumulate_grad "u", %[[DU]]
// CHECK-NOT: mega.accumulate_grad
// CHECK: return
func.func @train() {
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %x = mega.input "x" [2, 3, 5] : tensor<2x3x5xf32>
  %u = mega.param "u" [5] init normal(1.0) : tensor<5xf32>
  %s = mega.mul %x, %u : tensor<2x3x5xf32>, tensor<5xf32> -> tensor<2x3x5xf32>
  %u2 = mega.param "u" [5] init normal(1.0) : tensor<5xf32>
  %l = mega.add %s, %u2 : tensor<2x3x5xf32>, tensor<5xf32> -> tensor<2x3x5xf32>
  // expected-warning @+1 {{parameter 'unused' does not reach the loss; it gets no gradient}}
  %z = mega.param "unused" [5] init zeros : tensor<5xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// Only @train is differentiated; @eval is left alone.
// CHECK-LABEL: func.func @eval
// CHECK-NOT: cross_entropy_grad
// CHECK-NOT: accumulate_grad
// CHECK-LABEL: func.func @train
// CHECK: mega.accumulate_grad "w"
func.func @eval() {
  %x = mega.input "x" [2, 4] : tensor<2x4xf32>
  %t = mega.input "t" [2] : tensor<2xi32>
  %w = mega.param "w" [4, 3] init normal(0.02) : tensor<4x3xf32>
  %l = mega.matmul %x, %w : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<2x3xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3xf32>, tensor<2xi32> -> tensor<f32>, tensor<2xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}
func.func @train() {
  %x = mega.input "x" [2, 4] : tensor<2x4xf32>
  %t = mega.input "t" [2] : tensor<2xi32>
  %w = mega.param "w" [4, 3] init normal(0.02) : tensor<4x3xf32>
  %l = mega.matmul %x, %w : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<2x3xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3xf32>, tensor<2xi32> -> tensor<f32>, tensor<2xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// RUN: mega-opt %s -split-input-file -mega-lower-to-kernels | FileCheck %s

// A rank-2 weight is shared by every row: the leading dims fold into M.
// i = {batch, M, N, K, transA, transB, lda, ldb, ldc, strideA, strideB, strideC}
// CHECK-LABEL: func.func @matmul_weight
// CHECK: mega.kernel "MatMul"(%arg0, %arg1) i [1, 32, 32, 16, 0, 0, 16, 32, 32, 0, 0, 0] f [1.000000e+00, 0.000000e+00]
// CHECK-SAME: -> tensor<4x8x32xf32>
// The tied output projection: logits = y @ wte^T.
// CHECK: mega.kernel "MatMul"(%arg0, %arg2) i [1, 32, 64, 16, 0, 1, 16, 16, 64, 0, 0, 0]
// CHECK-NOT: mega.matmul
func.func @matmul_weight(%x: tensor<4x8x16xf32>, %w: tensor<16x32xf32>, %wte: tensor<64x16xf32>) {
  %0 = mega.matmul %x, %w : tensor<4x8x16xf32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  %1 = mega.matmul %x, %wte {transpose_b} : tensor<4x8x16xf32>, tensor<64x16xf32> -> tensor<4x8x64xf32>
  mega.output "a", %0 : tensor<4x8x32xf32>
  mega.output "b", %1 : tensor<4x8x64xf32>
  return
}

// -----

// Equal leading dims: one strided batch per (batch, head).
// CHECK-LABEL: func.func @matmul_batched
// CHECK: mega.kernel "MatMul"(%arg0, %arg1) i [8, 8, 8, 16, 0, 1, 16, 16, 8, 128, 128, 64]
// A transposed `a` with a shared weight cannot fold: batch stride 0 for b.
// CHECK: mega.kernel "MatMul"(%arg2, %arg3) i [2, 16, 32, 8, 1, 0, 16, 32, 32, 128, 0, 512]
// The weight gradient x^T @ dy over flattened rows.
// CHECK: mega.kernel "MatMul"(%arg4, %arg5) i [1, 16, 64, 32, 1, 0, 16, 64, 64, 0, 0, 0]
func.func @matmul_batched(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>,
                          %a: tensor<2x8x16xf32>, %b: tensor<8x32xf32>,
                          %x: tensor<32x16xf32>, %dy: tensor<32x64xf32>) {
  %0 = mega.matmul %q, %k {transpose_b} : tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x8xf32>
  %1 = mega.matmul %a, %b {transpose_a} : tensor<2x8x16xf32>, tensor<8x32xf32> -> tensor<2x16x32xf32>
  %2 = mega.matmul %x, %dy {transpose_a} : tensor<32x16xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
  mega.output "s", %0 : tensor<2x4x8x8xf32>
  mega.output "t", %1 : tensor<2x16x32xf32>
  mega.output "dw", %2 : tensor<16x64xf32>
  return
}

// -----

// Elementwise: i = {n, inputs, outputs, periods..., code as (op, dst, a, b)}
// with Load=0 Store=1 Const=2 Add=3 Sub=4 Mul=5 Gelu=15; a bias is read with
// period 64, a fill is a constant and not an operand.
// CHECK-LABEL: func.func @elementwise
// CHECK: %[[A:.*]] = mega.kernel "Elementwise"(%arg0, %arg1) i [256, 2, 1, 256, 64, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f []
// CHECK: %[[S:.*]] = mega.kernel "Elementwise"(%[[A]]) i [256, 1, 1, 256, 0, 0, 0, 0, 2, 1, 0, 0, 4, 0, 0, 1, 1, 0, 0, 0] f [1.000000e+00]
// CHECK: mega.kernel "Elementwise"(%[[S]], %[[A]]) i [256, 2, 1, 256, 256, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 15, 0, 0, 0, 1, 0, 0, 0] f []
// CHECK-NOT: mega.fill
func.func @elementwise(%x: tensor<4x64xf32>, %b: tensor<64xf32>) {
  %one = mega.fill 1.0 : tensor<f32>
  %0 = mega.add %x, %b : tensor<4x64xf32>, tensor<64xf32> -> tensor<4x64xf32>
  %1 = mega.sub %0, %one : tensor<4x64xf32>, tensor<f32> -> tensor<4x64xf32>
  %2 = mega.fused(%1, %0) : (tensor<4x64xf32>, tensor<4x64xf32>) -> tensor<4x64xf32> {
  ^bb0(%p: tensor<4x64xf32>, %q: tensor<4x64xf32>):
    %s = mega.add %p, %q : tensor<4x64xf32>, tensor<4x64xf32> -> tensor<4x64xf32>
    %g = mega.gelu %s : tensor<4x64xf32> -> tensor<4x64xf32>
    mega.yield %g : tensor<4x64xf32>
  }
  mega.output "y", %2 : tensor<4x64xf32>
  return
}

// -----

// Attention layout: reshape is a view; the q|k|v transpose is one Transpose
// kernel (nothing merges: B sits between 3 and nh); the dim-0 split is three
// views; a transpose that only moves a size-1 dim is a view.
// CHECK-LABEL: func.func @attention_layout
// CHECK: %[[R:.*]] = mega.view %arg0 offset 0 : tensor<2x8x96xf32> -> tensor<2x8x3x4x8xf32>
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%[[R]]) i [5, 2, 8, 3, 4, 8, 2, 0, 3, 1, 4] f []
// CHECK-SAME: -> tensor<3x2x4x8x8xf32>
// CHECK: mega.view %[[T]] offset 0 : tensor<3x2x4x8x8xf32> -> tensor<1x2x4x8x8xf32>
// CHECK: mega.view %[[T]] offset 2048 :
// CHECK: mega.view %[[T]] offset 4096 :
// CHECK: mega.view %arg1 offset 0 : tensor<1x8x4xf32> -> tensor<8x1x4xf32>
// CHECK-NOT: mega.transpose
// CHECK-NOT: mega.split
func.func @attention_layout(%qkv: tensor<2x8x96xf32>, %u: tensor<1x8x4xf32>) {
  %r = mega.reshape %qkv : tensor<2x8x96xf32> -> tensor<2x8x3x4x8xf32>
  %t = mega.transpose %r perm [2, 0, 3, 1, 4] : tensor<2x8x3x4x8xf32> -> tensor<3x2x4x8x8xf32>
  %q, %k, %v = mega.split %t {dim = 0 : i64, parts = 3 : i64} : tensor<3x2x4x8x8xf32> -> tensor<1x2x4x8x8xf32>, tensor<1x2x4x8x8xf32>, tensor<1x2x4x8x8xf32>
  %w = mega.transpose %u perm [1, 0, 2] : tensor<1x8x4xf32> -> tensor<8x1x4xf32>
  mega.output "q", %q : tensor<1x2x4x8x8xf32>
  mega.output "k", %k : tensor<1x2x4x8x8xf32>
  mega.output "v", %v : tensor<1x2x4x8x8xf32>
  mega.output "w", %w : tensor<8x1x4xf32>
  return
}

// -----

// A split along the last dim is not contiguous: one Transpose to
// [parts, outer, inner], then views.
// CHECK-LABEL: func.func @split_last
// CHECK: %[[V:.*]] = mega.view %arg0 offset 0 : tensor<4x12xf32> -> tensor<4x3x4xf32>
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%[[V]]) i [3, 4, 3, 4, 1, 0, 2] f [] : (tensor<4x3x4xf32>) -> tensor<3x4x4xf32>
// CHECK: mega.view %[[T]] offset 0 : tensor<3x4x4xf32> -> tensor<4x4xf32>
// CHECK: mega.view %[[T]] offset 64 :
// CHECK: mega.view %[[T]] offset 128 :
func.func @split_last(%x: tensor<4x12xf32>) {
  %a, %b, %c = mega.split %x {dim = 1 : i64, parts = 3 : i64} : tensor<4x12xf32> -> tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  mega.output "a", %a : tensor<4x4xf32>
  mega.output "b", %b : tensor<4x4xf32>
  mega.output "c", %c : tensor<4x4xf32>
  return
}

// -----

// A concat along dim 0 stays (mega-assign-buffers lets the producers write
// into it); its parts must be fresh kernel results, so a function argument
// gets a Copy. Along the last dim: stack [1, outer, inner] views, Transpose.
// CHECK-LABEL: func.func @concat
// CHECK: %[[C0:.*]] = mega.kernel "Copy"(%arg0)
// CHECK: %[[C1:.*]] = mega.kernel "Copy"(%arg1)
// CHECK: %[[J:.*]] = mega.concat %[[C0]], %[[C1]] {dim = 0 : i64} : tensor<2x4xf32>, tensor<2x4xf32> -> tensor<4x4xf32>
// CHECK: %[[V0:.*]] = mega.view %arg0 offset 0 : tensor<2x4xf32> -> tensor<1x2x4xf32>
// CHECK: %[[V1:.*]] = mega.view %arg1 offset 0 : tensor<2x4xf32> -> tensor<1x2x4xf32>
// CHECK: %[[D0:.*]] = mega.kernel "Copy"(%[[V0]])
// CHECK: %[[D1:.*]] = mega.kernel "Copy"(%[[V1]])
// CHECK: %[[S:.*]] = mega.concat %[[D0]], %[[D1]] {dim = 0 : i64} : tensor<1x2x4xf32>, tensor<1x2x4xf32> -> tensor<2x2x4xf32>
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%[[S]]) i [3, 2, 2, 4, 1, 0, 2]
// CHECK: %[[L:.*]] = mega.view %[[T]] offset 0 : tensor<2x2x4xf32> -> tensor<2x8xf32>
// A reshape of a kernel result is all of it: the Transpose writes the port.
// CHECK-NOT: "Copy"
// CHECK: mega.output "last", %[[L]]
func.func @concat(%a: tensor<2x4xf32>, %b: tensor<2x4xf32>) {
  %0 = mega.concat %a, %b {dim = 0 : i64} : tensor<2x4xf32>, tensor<2x4xf32> -> tensor<4x4xf32>
  %1 = mega.concat %a, %b {dim = 1 : i64} : tensor<2x4xf32>, tensor<2x4xf32> -> tensor<2x8xf32>
  mega.output "first", %0 : tensor<4x4xf32>
  mega.output "last", %1 : tensor<2x8xf32>
  return
}

// -----

// Row-wise kernels: i = {rows, cols, ...} over the flattened leading dims.
// CHECK-LABEL: func.func @row_kernels
// CHECK: mega.kernel "Embedding"(%[[WTE:.*]], %[[IDS:[^)]*]]) i [16, 64, 8, 0] f []
// CHECK: mega.kernel "LayerNorm"({{.*}}) i [16, 8] f [1.000000e-05]
// CHECK: mega.kernel "Softmax"({{.*}}) i [64, 4, 1, 4] f [5.000000e-01]
// CHECK: mega.kernel "SoftmaxGrad"({{.*}}) i [64, 4] f [5.000000e-01]
// CHECK: %[[CE:.*]]:2 = mega.kernel "CrossEntropy"({{.*}}) i [16, 64] f []
// CHECK: %[[SEED:.*]] = mega.kernel "Fill"() i [] f [2.500000e-01] : () -> tensor<f32>
// CHECK: mega.kernel "CrossEntropyGrad"({{.*}}, %[[CE]]#1, %[[SEED]]) i [16, 64] f []
// CHECK: mega.kernel "LayerNormGrad"({{.*}}) i [16, 8, 0] f []
// CHECK: mega.kernel "EmbeddingGrad"({{.*}}, %[[IDS]]) i [16, 64, 8, 0] f []
// CHECK: mega.kernel "ReduceSum"({{.*}}) i [16, 8, 0] f []
// CHECK: mega.output "loss", %[[CE]]#0
func.func @row_kernels(%ids: tensor<2x8xi32>, %wte: tensor<64x8xf32>, %w: tensor<8xf32>,
                       %s: tensor<4x4x4x4xf32>, %logits: tensor<2x8x64xf32>, %dy: tensor<2x8x8xf32>) {
  %x = mega.embedding %ids, %wte : tensor<2x8xi32>, tensor<64x8xf32> -> tensor<2x8x8xf32>
  %y, %mean, %rstd = mega.layer_norm %x, %w, %w : tensor<2x8x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x8x8xf32>, tensor<16xf32>, tensor<16xf32>
  %p = mega.softmax %s {causal, scale = 0.5 : f64} : tensor<4x4x4x4xf32> -> tensor<4x4x4x4xf32>
  %dp = mega.softmax_grad %p, %s {scale = 0.5 : f64} : tensor<4x4x4x4xf32>, tensor<4x4x4x4xf32> -> tensor<4x4x4x4xf32>
  %loss, %lse = mega.cross_entropy %logits, %ids : tensor<2x8x64xf32>, tensor<2x8xi32> -> tensor<f32>, tensor<16xf32>
  %seed = mega.fill 0.25 : tensor<f32>
  %dl = mega.cross_entropy_grad %logits, %ids, %lse, %seed : tensor<2x8x64xf32>, tensor<2x8xi32>, tensor<16xf32>, tensor<f32> -> tensor<2x8x64xf32>
  %dx, %dw, %db = mega.layer_norm_grad %dy, %x, %w, %mean, %rstd : tensor<2x8x8xf32>, tensor<2x8x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x8x8xf32>, tensor<8xf32>, tensor<8xf32>
  %dwte = mega.embedding_grad %ids, %dx {vocab = 64 : i64} : tensor<2x8xi32>, tensor<2x8x8xf32> -> tensor<64x8xf32>
  %dsum = mega.reduce_sum %dy {rank = 1 : i64} : tensor<2x8x8xf32> -> tensor<8xf32>
  mega.output "loss", %loss : tensor<f32>
  mega.output "a", %y : tensor<2x8x8xf32>
  mega.output "b", %dp : tensor<4x4x4x4xf32>
  mega.output "c", %dl : tensor<2x8x64xf32>
  mega.output "d", %dwte : tensor<64x8xf32>
  mega.output "e", %dsum : tensor<8xf32>
  mega.output "f", %dw : tensor<8xf32>
  mega.output "g", %db : tensor<8xf32>
  return
}

// -----

// Gradient accumulation. A MatMul, ReduceSum, EmbeddingGrad or Elementwise
// whose result only feeds accumulate_grad accumulates into the gradient
// itself (beta = 1, accumulate = 1, or load + Add before the Store), writing
// into its last operand (`mega.dests = 1`); anything else is an Elementwise
// add into the gradient. A sum of two terms is accumulated term by term.
// CHECK-LABEL: func.func @train
// CHECK: %[[G0:.*]] = mega.state "w" {role = "grad"} : tensor<16x32xf32>
// CHECK: mega.kernel "MatMul"(%{{.*}}, %{{.*}}, %[[G0]]) i [1, 16, 32, 8, 1, 0, 16, 32, 32, 0, 0, 0] f [1.000000e+00, 1.000000e+00] {mega.dests = 1 : i64} : (tensor<8x16xf32>, tensor<8x32xf32>, tensor<16x32xf32>) -> ()
// CHECK: %[[G1:.*]] = mega.state "b" {role = "grad"} : tensor<32xf32>
// CHECK: mega.kernel "ReduceSum"(%{{.*}}, %[[G1]]) i [8, 32, 1] f [] {mega.dests = 1 : i64}
// CHECK: %[[G2:.*]] = mega.state "e" {role = "grad"} : tensor<10x32xf32>
// CHECK: mega.kernel "EmbeddingGrad"(%{{.*}}, %{{.*}}, %[[G2]]) i [8, 10, 32, 1] f [] {mega.dests = 1 : i64}
// Elementwise: r0 = b; r1 = 2; r0 *= r1; then r2 = grad; r0 += r2; store.
// CHECK: %[[G3:.*]] = mega.state "b" {role = "grad"} : tensor<32xf32>
// CHECK: mega.kernel "Elementwise"(%{{.*}}, %[[G3]], %[[G3]]) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 2, 1, 0, 0, 5, 0, 0, 1, 0, 2, 1, 0, 3, 0, 0, 2, 1, 0, 0, 0] f [2.000000e+00] {mega.dests = 1 : i64}
// A value that is also used elsewhere: a separate Elementwise add.
// CHECK: %[[G4:.*]] = mega.state "w" {role = "grad"} : tensor<16x32xf32>
// CHECK: mega.kernel "Elementwise"(%[[G4]], %arg3, %[[G4]]) i [512, 2, 1, 512, 512, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64}
// The sum dw1 + dw2: both matmuls accumulate (beta = 1).
// CHECK: mega.kernel "MatMul"({{.*}}) i [{{.*}}] f [1.000000e+00, 1.000000e+00] {mega.dests = 1 : i64}
// CHECK: mega.kernel "MatMul"({{.*}}) i [{{.*}}] f [1.000000e+00, 1.000000e+00] {mega.dests = 1 : i64}
// CHECK-NOT: mega.add
// CHECK-NOT: accumulate_grad
func.func @train(%x: tensor<8x16xf32>, %dy: tensor<8x32xf32>, %ids: tensor<8xi32>, %gw: tensor<16x32xf32>) {
  %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
  %b = mega.param "b" [32] init zeros : tensor<32xf32>
  %e = mega.param "e" [10, 32] init normal(0.02) : tensor<10x32xf32>
  %dw = mega.matmul %x, %dy {transpose_a} : tensor<8x16xf32>, tensor<8x32xf32> -> tensor<16x32xf32>
  mega.accumulate_grad "w", %dw : tensor<16x32xf32>
  %db = mega.reduce_sum %dy {rank = 1 : i64} : tensor<8x32xf32> -> tensor<32xf32>
  mega.accumulate_grad "b", %db : tensor<32xf32>
  %de = mega.embedding_grad %ids, %dy {vocab = 10 : i64} : tensor<8xi32>, tensor<8x32xf32> -> tensor<10x32xf32>
  mega.accumulate_grad "e", %de : tensor<10x32xf32>
  %s = mega.scale %b {factor = 2.0 : f64} : tensor<32xf32> -> tensor<32xf32>
  mega.accumulate_grad "b", %s : tensor<32xf32>
  mega.accumulate_grad "w", %gw : tensor<16x32xf32>
  mega.output "gw", %gw : tensor<16x32xf32>
  %dw1 = mega.matmul %x, %dy {transpose_a} : tensor<8x16xf32>, tensor<8x32xf32> -> tensor<16x32xf32>
  %dw2 = mega.matmul %x, %dy {transpose_a} : tensor<8x16xf32>, tensor<8x32xf32> -> tensor<16x32xf32>
  %sum = mega.add %dw1, %dw2 : tensor<16x32xf32>, tensor<16x32xf32> -> tensor<16x32xf32>
  mega.accumulate_grad "w", %sum : tensor<16x32xf32>
  return
}

// The optimizer reads the parameters it updates through a mega.param cloned
// from @train; AdamW reads the moments through mega.state.
// CHECK-LABEL: func.func @optimizer
// CHECK: %[[P:.*]] = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
// CHECK: %[[G:.*]] = mega.state "w" {role = "grad"}
// CHECK: %[[N:.*]]:2 = mega.kernel "GradNorm"(%[[G]], %{{.*}}) i [] f [1.000000e+00] : (tensor<16x32xf32>, tensor<32xf32>) -> (tensor<f32>, tensor<f32>)
// CHECK: %[[M:.*]] = mega.state "w" {role = "adam_m"}
// CHECK: %[[V:.*]] = mega.state "w" {role = "adam_v"}
// CHECK: mega.kernel "AdamW"(%[[P]], %[[G]], %[[M]], %[[V]], %{{.*}}, %{{.*}}, %[[N]]#1) i [] f [9.000000e-01, 9.990000e-01, 1.000000e-08, 1.000000e-02] : (tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
// CHECK: mega.kernel "Sgd"(%{{.*}}, %{{.*}}, %{{.*}}, %[[N]]#1) i [] f [0.000000e+00]
// CHECK: %[[Z:.*]] = mega.state "w" {role = "grad"}
// CHECK: mega.kernel "Fill"(%[[Z]]) i [] f [0.000000e+00] {mega.dests = 1 : i64} : (tensor<16x32xf32>) -> ()
// CHECK: mega.output "grad_norm", %[[N]]#0
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<16x32xf32>
  %gb = mega.state "b" {role = "grad"} : tensor<32xf32>
  %norm, %coef = mega.grad_norm %gw, %gb {max_norm = 1.0 : f64} : tensor<16x32xf32>, tensor<32xf32> -> tensor<f32>, tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-8 : f64, weight_decay = 0.01 : f64} : tensor<16x32xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.sgd "b", %gb, %lr, %coef {weight_decay = 0.0 : f64} : tensor<32xf32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.output "grad_norm", %norm : tensor<f32>
  return
}

// -----

// An output that is a parameter is copied into the port.
// CHECK-LABEL: func.func @output_param
// CHECK: %[[P:.*]] = mega.param "p"
// CHECK: %[[C:.*]] = mega.kernel "Copy"(%[[P]]) i [] f []
// CHECK: mega.output "p", %[[C]]
func.func @output_param() {
  %p = mega.param "p" [4] init zeros : tensor<4xf32>
  mega.output "p", %p : tensor<4xf32>
  return
}


// -----

// The backward of the q|k|v split: parts that are reshapes of fresh kernel
// results need no Copy (the MatMuls will write into the concat's result).
// CHECK-LABEL: func.func @concat_of_reshapes
// CHECK: %[[A:.*]] = mega.kernel "MatMul"
// CHECK: %[[B:.*]] = mega.kernel "MatMul"
// CHECK: %[[RA:.*]] = mega.view %[[A]] offset 0 : tensor<4x8xf32> -> tensor<1x4x8xf32>
// CHECK: %[[RB:.*]] = mega.view %[[B]] offset 0 : tensor<4x8xf32> -> tensor<1x4x8xf32>
// CHECK-NOT: "Copy"
// CHECK: mega.concat %[[RA]], %[[RB]] {dim = 0 : i64}
func.func @concat_of_reshapes(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) {
  %a = mega.matmul %x, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %b = mega.matmul %x, %w {transpose_b} : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %ra = mega.reshape %a : tensor<4x8xf32> -> tensor<1x4x8xf32>
  %rb = mega.reshape %b : tensor<4x8xf32> -> tensor<1x4x8xf32>
  %c = mega.concat %ra, %rb {dim = 0 : i64} : tensor<1x4x8xf32>, tensor<1x4x8xf32> -> tensor<2x4x8xf32>
  mega.output "c", %c : tensor<2x4x8xf32>
  return
}

// -----

// Mixed precision and fused attention: Cast {n}; a bf16 MatMul is the same
// instruction with bf16 operand views; Attention / AttentionGrad
// {B*heads, S, hd, causal} {scale} over the contiguous q, k, v views.
// CHECK-LABEL: func.func @fused_attention_bf16
// CHECK: %[[XB:.*]] = mega.kernel "Cast"(%{{.*}}) i [128] f [] : (tensor<8x16xf32>) -> tensor<8x16xbf16>
// CHECK: mega.kernel "MatMul"(%[[XB]], %{{.*}}) i [1, 8, 48, 16, 0, 0, 16, 48, 48, 0, 0, 0] f [1.000000e+00, 0.000000e+00] : (tensor<8x16xbf16>, tensor<16x48xbf16>) -> tensor<8x48xf32>
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"(%[[Q:.*]], %[[K:.*]], %[[V:[^)]*]]) i [8, 64, 16, 1] f [2.500000e-01] : (tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>) -> (tensor<2x4x64x16xf32>, tensor<2x4x64xf32>)
// CHECK: mega.kernel "AttentionGrad"(%[[Q]], %[[K]], %[[V]], %{{.*}}, %[[A]]#1, %{{.*}}) i [8, 64, 16, 1] f [2.500000e-01]
// CHECK-SAME: -> (tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>)
func.func @fused_attention_bf16(%x: tensor<8x16xf32>, %w: tensor<16x48xbf16>, %q: tensor<2x4x64x16xbf16>, %k: tensor<2x4x64x16xbf16>, %v: tensor<2x4x64x16xbf16>, %d: tensor<2x4x64x16xbf16>) {
  %xb = mega.cast %x : tensor<8x16xf32> -> tensor<8x16xbf16>
  %y = mega.matmul %xb, %w : tensor<8x16xbf16>, tensor<16x48xbf16> -> tensor<8x48xf32>
  %o, %lse = mega.flash_attention %q, %k, %v {causal, scale = 2.500000e-01 : f64} : tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16> -> tensor<2x4x64x16xf32>, tensor<2x4x64xf32>
  %ob = mega.cast %o : tensor<2x4x64x16xf32> -> tensor<2x4x64x16xbf16>
  %dq, %dk, %dv = mega.flash_attention_grad %q, %k, %v, %ob, %lse, %d {causal, scale = 2.500000e-01 : f64} : tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64xf32>, tensor<2x4x64x16xbf16> -> tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>
  mega.output "y", %y : tensor<8x48xf32>
  mega.output "dq", %dq : tensor<2x4x64x16xf32>
  mega.output "dk", %dk : tensor<2x4x64x16xf32>
  mega.output "dv", %dv : tensor<2x4x64x16xf32>
  return
}

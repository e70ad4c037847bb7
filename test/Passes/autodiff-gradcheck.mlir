// Numerical check of every gradient rule: the IR mega-autodiff emits is run by
// a float64 numpy interpreter (Inputs/gradcheck.py) and compared with central
// finite differences of the forward loss. See autodiff.mlir for the structure.
// RUN: mega-opt %s -split-input-file -mega-autodiff=microbatches=2 -mlir-print-op-generic 2>/dev/null \
// RUN:   | /usr/bin/python3 %S/Inputs/gradcheck.py --microbatches 2 | FileCheck %s
// RUN: mega-opt %models/gpt.mlir -mega-make-programs \
// RUN:     -mega-specialize="set=layers=2,hidden=8,heads=2,vocab=16,seq=4,batch=2" \
// RUN:     -mega-infer-shapes -mega-unroll -mega-decompose -canonicalize -cse \
// RUN:     -mega-autodiff=microbatches=3 -canonicalize -cse -mlir-print-op-generic \
// RUN:   | /usr/bin/python3 %S/Inputs/gradcheck.py --microbatches 3 | FileCheck %s --check-prefix=GPT

// CHECK: case 0 w: rel {{.*}} OK
// CHECK: case 0 b: rel {{.*}} OK
// Linear layer: shared rank-2 weight, broadcast bias.
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

// CHECK: case 1 wte.weight: rel {{.*}} OK
// Tied weight: embedding and output projection.
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

// CHECK: case 2 ln.weight: rel {{.*}} OK
// CHECK: case 2 ln.bias: rel {{.*}} OK
// CHECK: case 2 m: rel {{.*}} OK
// CHECK: case 2 d: rel {{.*}} OK
// CHECK: case 2 s: rel {{.*}} OK
// LayerNorm, GELU, mul / sub with trailing broadcast (rank 2, 1, 0), scale.
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

// CHECK-COUNT-9: case 3 {{.*}} OK
// Matmul: rank 2 and batched, every transpose combination.
func.func @train() {
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %a1 = mega.param "a1" [2, 3, 4] init normal(1.0) : tensor<2x3x4xf32>
  %b1 = mega.param "b1" [2, 4, 5] init normal(1.0) : tensor<2x4x5xf32>
  %a2 = mega.param "a2" [2, 4, 3] init normal(1.0) : tensor<2x4x3xf32>
  %b2 = mega.param "b2" [2, 5, 4] init normal(1.0) : tensor<2x5x4xf32>
  %p = mega.param "p" [4, 6] init normal(1.0) : tensor<4x6xf32>
  %q = mega.param "q" [5, 4] init normal(1.0) : tensor<5x4xf32>
  %m1 = mega.matmul %a1, %b1 : tensor<2x3x4xf32>, tensor<2x4x5xf32> -> tensor<2x3x5xf32>
  %m2 = mega.matmul %a2, %b1 {transpose_a} : tensor<2x4x3xf32>, tensor<2x4x5xf32> -> tensor<2x3x5xf32>
  %m3 = mega.matmul %a1, %b2 {transpose_b} : tensor<2x3x4xf32>, tensor<2x5x4xf32> -> tensor<2x3x5xf32>
  %m4 = mega.matmul %a2, %b2 {transpose_a, transpose_b} : tensor<2x4x3xf32>, tensor<2x5x4xf32> -> tensor<2x3x5xf32>
  %m5 = mega.matmul %p, %q {transpose_a, transpose_b} : tensor<4x6xf32>, tensor<5x4xf32> -> tensor<6x5xf32>
  %m6 = mega.reshape %m5 : tensor<6x5xf32> -> tensor<2x3x5xf32>
  %s1 = mega.add %m1, %m2 : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %s2 = mega.add %s1, %m3 : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %s3 = mega.add %s2, %m4 : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %s4 = mega.sub %s3, %m6 : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %w = mega.param "w" [5, 5] init normal(1.0) : tensor<5x5xf32>
  %v = mega.param "v" [5, 5] init normal(1.0) : tensor<5x5xf32>
  %x = mega.param "x" [5, 5] init normal(1.0) : tensor<5x5xf32>
  %n1 = mega.matmul %s4, %w {transpose_b} : tensor<2x3x5xf32>, tensor<5x5xf32> -> tensor<2x3x5xf32>
  %n2 = mega.matmul %n1, %v : tensor<2x3x5xf32>, tensor<5x5xf32> -> tensor<2x3x5xf32>
  %n3 = mega.scale %n2 {factor = 0.1 : f64} : tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %n4 = mega.matmul %n3, %x : tensor<2x3x5xf32>, tensor<5x5xf32> -> tensor<2x3x5xf32>
  %loss, %lse = mega.cross_entropy %n4, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// CHECK-COUNT-7: case 4 {{.*}} OK
// Shared rank-2 weight against a transposed batched operand ([..., K, M]).
func.func @train() {
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %a = mega.param "a" [2, 4, 3] init normal(1.0) : tensor<2x4x3xf32>
  %w1 = mega.param "w1" [4, 5] init normal(1.0) : tensor<4x5xf32>
  %w2 = mega.param "w2" [5, 4] init normal(1.0) : tensor<5x4xf32>
  %c = mega.param "c" [2, 3, 4] init normal(1.0) : tensor<2x3x4xf32>
  %w3 = mega.param "w3" [5, 4] init normal(1.0) : tensor<5x4xf32>
  %m1 = mega.matmul %a, %w1 {transpose_a} : tensor<2x4x3xf32>, tensor<4x5xf32> -> tensor<2x3x5xf32>
  %m2 = mega.matmul %a, %w2 {transpose_a, transpose_b} : tensor<2x4x3xf32>, tensor<5x4xf32> -> tensor<2x3x5xf32>
  %m3 = mega.matmul %c, %w3 {transpose_b} : tensor<2x3x4xf32>, tensor<5x4xf32> -> tensor<2x3x5xf32>
  %s1 = mega.add %m1, %m2 : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %s2 = mega.mul %s1, %m3 : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %s3 = mega.scale %s2 {factor = 0.1 : f64} : tensor<2x3x5xf32> -> tensor<2x3x5xf32>
  %u = mega.param "u" [5] init normal(1.0) : tensor<5xf32>
  %s4 = mega.mul %s3, %u : tensor<2x3x5xf32>, tensor<5xf32> -> tensor<2x3x5xf32>
  %u2 = mega.param "u" [5] init normal(1.0) : tensor<5xf32>
  %s5 = mega.add %s4, %u2 : tensor<2x3x5xf32>, tensor<5xf32> -> tensor<2x3x5xf32>
  %z = mega.param "unused" [5] init zeros : tensor<5xf32>
  %loss, %lse = mega.cross_entropy %s5, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// CHECK: case 5 x: rel {{.*}} OK
// CHECK: case 5 bias: rel {{.*}} OK
// CHECK: gradcheck: 26 parameters OK
// Attention-like layout: reshape, transpose, split with an unused part,
// causal scaled softmax, concat, reduce_sum.
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

// GPT: gradcheck: 28 parameters OK

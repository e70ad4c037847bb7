// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-infer-shapes | FileCheck %s

// Static params and inputs propagate through every op, in order, into
// repeat bodies too; reshape/fill keep their declared types.
// CHECK-LABEL: func.func @propagate
func.func @propagate() {
  %t = mega.input "tokens" [4, 8] : tensor<4x8xi32>
  %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
  %b = mega.param "b" [32] init zeros : tensor<32xf32>
  // CHECK: mega.embedding {{.*}} -> tensor<4x8x32xf32>
  %x = mega.embedding %t, %w : tensor<4x8xi32>, tensor<16x32xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.layer_norm {{.*}} -> tensor<4x8x32xf32>, tensor<32xf32>, tensor<32xf32>
  %y, %m, %r = mega.layer_norm %x, %b, %b : tensor<?x?x?xf32>, tensor<32xf32>, tensor<32xf32> -> tensor<?x?x?xf32>, tensor<?xf32>, tensor<?xf32>
  // CHECK: mega.repeat %{{.*}} count(2) prefix "h" : tensor<4x8x32xf32> -> tensor<4x8x32xf32> {
  // CHECK-NEXT: ^bb0(%{{.*}}: tensor<4x8x32xf32>):
  %h = mega.repeat %y count(2) prefix "h" : tensor<?x?x?xf32> -> tensor<?x?x?xf32> {
  ^bb0(%in: tensor<?x?x?xf32>):
    %w2 = mega.param "fc" [32, 64] init normal(0.02) : tensor<32x64xf32>
    // CHECK: mega.linear {{.*}} : tensor<4x8x32xf32>, tensor<32x64xf32> -> tensor<4x8x64xf32>
    %f = mega.linear %in, %w2 : tensor<?x?x?xf32>, tensor<32x64xf32> -> tensor<?x?x?xf32>
    // CHECK: mega.gelu {{.*}} : tensor<4x8x64xf32> -> tensor<4x8x64xf32>
    %g = mega.gelu %f : tensor<?x?x?xf32> -> tensor<?x?x?xf32>
    %w3 = mega.param "proj" [64, 32] init normal(0.02) : tensor<64x32xf32>
    // CHECK: mega.linear {{.*}} -> tensor<4x8x32xf32>
    %p = mega.linear %g, %w3 : tensor<?x?x?xf32>, tensor<64x32xf32> -> tensor<?x?x?xf32>
    // CHECK: mega.yield %{{.*}} : tensor<4x8x32xf32>
    mega.yield %p : tensor<?x?x?xf32>
  }
  // CHECK: mega.matmul {{.*}} {transpose_b} : tensor<4x8x32xf32>, tensor<16x32xf32> -> tensor<4x8x16xf32>
  %l = mega.matmul %h, %w {transpose_b} : tensor<?x?x?xf32>, tensor<16x32xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.cross_entropy {{.*}} -> tensor<f32>, tensor<32xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<?x?x?xf32>, tensor<4x8xi32> -> tensor<f32>, tensor<?xf32>
  // CHECK: mega.reshape {{.*}} : tensor<4x8x16xf32> -> tensor<32x16xf32>
  %rs = mega.reshape %l : tensor<?x?x?xf32> -> tensor<32x16xf32>
  // CHECK: mega.transpose {{.*}} : tensor<32x16xf32> -> tensor<16x32xf32>
  %tr = mega.transpose %rs perm [1, 0] : tensor<32x16xf32> -> tensor<?x?xf32>
  // CHECK: mega.split {{.*}} : tensor<16x32xf32> -> tensor<16x16xf32>, tensor<16x16xf32>
  %s:2 = mega.split %tr {dim = 1 : i64, parts = 2 : i64} : tensor<?x?xf32> -> tensor<?x?xf32>, tensor<?x?xf32>
  // CHECK: mega.concat {{.*}} -> tensor<32x16xf32>
  %c = mega.concat %s#0, %s#1 {dim = 0 : i64} : tensor<?x?xf32>, tensor<?x?xf32> -> tensor<?x?xf32>
  // CHECK: mega.reduce_sum {{.*}} : tensor<32x16xf32> -> tensor<16xf32>
  %sum = mega.reduce_sum %c {rank = 1 : i64} : tensor<?x?xf32> -> tensor<?xf32>
  // CHECK: mega.output "loss", %{{.*}} : tensor<f32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

// An op whose declared type contradicts its operands is an error at the op.
// (Operands are dynamic when parsed, so the verifier accepts the op; the
// static operand type only arrives by inference.)
func.func @contradiction() {
  %w = mega.param "w" [4, 8] init zeros : tensor<4x8xf32>
  %a = mega.gelu %w : tensor<4x8xf32> -> tensor<?x?xf32>
  // expected-error @below {{'mega.gelu' op mega-infer-shapes: inferred result types ('tensor<4x8xf32>') contradict the declared ones ('tensor<4x9xf32>')}}
  %b = mega.gelu %a : tensor<?x?xf32> -> tensor<4x9xf32>
  return
}

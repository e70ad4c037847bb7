// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-decompose | FileCheck %s
// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-decompose=fused-attention=true | FileCheck %s --check-prefix=FUSED

// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:.*]]: tensor<4x8x16xf32>, %[[W:.*]]: tensor<16x32xf32>, %[[B:.*]]: tensor<32xf32>)
func.func @linear(%x: tensor<4x8x16xf32>, %w: tensor<16x32xf32>, %b: tensor<32xf32>) {
  // CHECK-NOT: mega.linear
  // CHECK: %[[M:.*]] = mega.matmul %[[X]], %[[W]] : tensor<4x8x16xf32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  // CHECK: %[[Y:.*]] = mega.add %[[M]], %[[B]] : tensor<4x8x32xf32>, tensor<32xf32> -> tensor<4x8x32xf32>
  // CHECK: mega.output "y", %[[Y]]
  %y = mega.linear %x, %w, %b : tensor<4x8x16xf32>, tensor<16x32xf32>, tensor<32xf32> -> tensor<4x8x32xf32>
  mega.output "y", %y : tensor<4x8x32xf32>
  // Without bias: the matmul alone.
  // CHECK: %[[N:.*]] = mega.matmul %[[X]], %[[W]]
  // CHECK-NEXT: mega.output "n", %[[N]]
  %n = mega.linear %x, %w : tensor<4x8x16xf32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  mega.output "n", %n : tensor<4x8x32xf32>
  return
}

// -----

// B=2, S=8, H=16, heads=4, hd=4.
// CHECK-LABEL: func.func @attention
// CHECK-SAME: (%[[X:[^:]*]]: tensor<2x8x16xf32>, %[[WQ:[^:]*]]: tensor<16x48xf32>, %[[BQ:[^:]*]]: tensor<48xf32>, %[[WO:[^:]*]]: tensor<16x16xf32>, %[[BO:[^:]*]]: tensor<16xf32>)
func.func @attention(%x: tensor<2x8x16xf32>, %wq: tensor<16x48xf32>, %bq: tensor<48xf32>,
                     %wo: tensor<16x16xf32>, %bo: tensor<16xf32>) {
  // CHECK-NOT: mega.attention
  // CHECK: %[[QKV0:.*]] = mega.matmul %[[X]], %[[WQ]] : tensor<2x8x16xf32>, tensor<16x48xf32> -> tensor<2x8x48xf32>
  // CHECK: %[[QKV:.*]] = mega.add %[[QKV0]], %[[BQ]] : tensor<2x8x48xf32>, tensor<48xf32> -> tensor<2x8x48xf32>
  // CHECK: %[[R:.*]] = mega.reshape %[[QKV]] : tensor<2x8x48xf32> -> tensor<2x8x3x4x4xf32>
  // CHECK: %[[T:.*]] = mega.transpose %[[R]] perm [2, 0, 3, 1, 4] : tensor<2x8x3x4x4xf32> -> tensor<3x2x4x8x4xf32>
  // CHECK: %[[S:.*]]:3 = mega.split %[[T]] {dim = 0 : i64, parts = 3 : i64} : tensor<3x2x4x8x4xf32> -> tensor<1x2x4x8x4xf32>, tensor<1x2x4x8x4xf32>, tensor<1x2x4x8x4xf32>
  // CHECK: %[[Q:.*]] = mega.reshape %[[S]]#0 : tensor<1x2x4x8x4xf32> -> tensor<2x4x8x4xf32>
  // CHECK: %[[K:.*]] = mega.reshape %[[S]]#1 : tensor<1x2x4x8x4xf32> -> tensor<2x4x8x4xf32>
  // CHECK: %[[V:.*]] = mega.reshape %[[S]]#2 : tensor<1x2x4x8x4xf32> -> tensor<2x4x8x4xf32>
  // CHECK: %[[SC:.*]] = mega.matmul %[[Q]], %[[K]] {transpose_b} : tensor<2x4x8x4xf32>, tensor<2x4x8x4xf32> -> tensor<2x4x8x8xf32>
  // CHECK: %[[P:.*]] = mega.softmax %[[SC]] {causal, scale = 5.000000e-01 : f64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  // CHECK: %[[O:.*]] = mega.matmul %[[P]], %[[V]] : tensor<2x4x8x8xf32>, tensor<2x4x8x4xf32> -> tensor<2x4x8x4xf32>
  // CHECK: %[[OT:.*]] = mega.transpose %[[O]] perm [0, 2, 1, 3] : tensor<2x4x8x4xf32> -> tensor<2x8x4x4xf32>
  // CHECK: %[[OR:.*]] = mega.reshape %[[OT]] : tensor<2x8x4x4xf32> -> tensor<2x8x16xf32>
  // CHECK: %[[Y0:.*]] = mega.matmul %[[OR]], %[[WO]] : tensor<2x8x16xf32>, tensor<16x16xf32> -> tensor<2x8x16xf32>
  // CHECK: %[[Y:.*]] = mega.add %[[Y0]], %[[BO]] : tensor<2x8x16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>
  // CHECK: mega.output "y", %[[Y]]
  // With fused-attention the scores are never a tensor: one flash_attention
  // between the q|k|v views and the output transpose.
  // FUSED-LABEL: func.func @attention
  // FUSED: %[[Q:.*]] = mega.reshape %{{.*}}#0 : tensor<1x2x4x8x4xf32> -> tensor<2x4x8x4xf32>
  // FUSED: %[[K:.*]] = mega.reshape %{{.*}}#1
  // FUSED: %[[V:.*]] = mega.reshape %{{.*}}#2
  // FUSED-NOT: mega.softmax
  // FUSED: %[[O:.*]], %{{.*}} = mega.flash_attention %[[Q]], %[[K]], %[[V]] {causal, scale = 5.000000e-01 : f64} : tensor<2x4x8x4xf32>, tensor<2x4x8x4xf32>, tensor<2x4x8x4xf32> -> tensor<2x4x8x4xf32>, tensor<2x4x8xf32>
  // FUSED-NEXT: mega.transpose %[[O]] perm [0, 2, 1, 3]
  %y = mega.attention %x, %wq, %bq, %wo, %bo heads(4) causal : tensor<2x8x16xf32>, tensor<16x48xf32>, tensor<48xf32>, tensor<16x16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>
  mega.output "y", %y : tensor<2x8x16xf32>
  return
}

// -----

// Without `causal` the softmax is not masked.
// CHECK-LABEL: func.func @not_causal
// CHECK: mega.softmax %{{.*}} {scale = 5.000000e-01 : f64}
func.func @not_causal(%x: tensor<2x8x16xf32>, %wq: tensor<16x48xf32>, %bq: tensor<48xf32>,
                      %wo: tensor<16x16xf32>, %bo: tensor<16xf32>) {
  %y = mega.attention %x, %wq, %bq, %wo, %bo heads(4) : tensor<2x8x16xf32>, tensor<16x48xf32>, tensor<48xf32>, tensor<16x16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>
  mega.output "y", %y : tensor<2x8x16xf32>
  return
}

// -----

// Primitives with their own kernels stay.
// CHECK-LABEL: func.func @primitives
// CHECK: mega.embedding
// CHECK: mega.layer_norm
// CHECK: mega.gelu
// CHECK: mega.cross_entropy
func.func @primitives(%t: tensor<4xi32>, %w: tensor<8x16xf32>, %v: tensor<16xf32>) {
  %x = mega.embedding %t, %w : tensor<4xi32>, tensor<8x16xf32> -> tensor<4x16xf32>
  %y, %m, %r = mega.layer_norm %x, %v, %v : tensor<4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<4x16xf32>, tensor<4xf32>, tensor<4xf32>
  %g = mega.gelu %y : tensor<4x16xf32> -> tensor<4x16xf32>
  %l, %lse = mega.cross_entropy %g, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<f32>, tensor<4xf32>
  mega.output "loss", %l : tensor<f32>
  return
}

// -----

func.func @dynamic(%x: tensor<?x8x16xf32>, %w: tensor<16x32xf32>) {
  // expected-error @below {{'mega.linear' op needs static operand shapes to decompose; run mega-specialize and mega-infer-shapes first}}
  %y = mega.linear %x, %w : tensor<?x8x16xf32>, tensor<16x32xf32> -> tensor<?x8x32xf32>
  return
}

// -----

func.func @unresolved_heads(%x: tensor<2x8x16xf32>, %wq: tensor<16x48xf32>, %bq: tensor<48xf32>,
                            %wo: tensor<16x16xf32>, %bo: tensor<16xf32>) {
  // expected-error @below {{'mega.attention' op heads must be resolved (run mega-specialize first)}}
  %y = mega.attention %x, %wq, %bq, %wo, %bo heads(heads) causal : tensor<2x8x16xf32>, tensor<16x48xf32>, tensor<48xf32>, tensor<16x16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>
  return
}

// The collectives carry their adjoints, so mega-autodiff differentiates the
// tensor-parallel program unchanged (Megatron's conjugate pairs).
// RUN: mega-opt %s -split-input-file -mega-tensor-parallel=size=2 -mega-autodiff | FileCheck %s

// The MLP after mega-tensor-parallel: the all_reduce of the row-parallel
// product passes the (replicated) gradient through unchanged; the
// copy_to_region before the column-parallel matmul all-reduces the partial
// input gradient; the split weights get split gradients.
// CHECK-LABEL: func.func @train
// CHECK: %[[XC:.*]] = mega.copy_to_region %[[X:.*]] axes [0]
// CHECK: %[[H:.*]] = mega.matmul %[[XC]], %[[W1:.*]] {mega.sharding
// CHECK: %[[G:.*]] = mega.gelu %[[H]]
// CHECK: %[[P:.*]] = mega.matmul %[[G]], %[[W2:.*]] {mega.sharding
// CHECK: %[[Y:.*]] = mega.all_reduce %[[P]] axes [0]
// CHECK: mega.cross_entropy %[[Y]]
// CHECK: %[[DY:.*]] = mega.cross_entropy_grad %[[Y]]
// CHECK-NOT: mega.all_reduce %[[DY]]
// CHECK: %[[DG:.*]] = mega.matmul %[[DY]], %[[W2]] {transpose_b} : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
// CHECK: %[[DW2:.*]] = mega.matmul %[[G]], %[[DY]] {transpose_a} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
// CHECK: mega.accumulate_grad "w2", %[[DW2]] : tensor<16x8xf32>
// CHECK: %[[DH:.*]] = mega.gelu_grad %[[H]], %[[DG]]
// CHECK: %[[DXP:.*]] = mega.matmul %[[DH]], %[[W1]] {transpose_b} : tensor<4x16xf32>, tensor<8x16xf32> -> tensor<4x8xf32>
// CHECK: %[[DW1:.*]] = mega.matmul %[[XC]], %[[DH]] {transpose_a} : tensor<4x8xf32>, tensor<4x16xf32> -> tensor<8x16xf32>
// CHECK: mega.accumulate_grad "w1", %[[DW1]] : tensor<8x16xf32>
// CHECK: %[[DX:.*]] = mega.all_reduce %[[DXP]] axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
// CHECK: mega.mul %[[DX]]
// CHECK: mega.accumulate_grad "w0"
func.func @train() {
  %x0 = mega.input "x" [4, 8] : tensor<4x8xf32>
  %t = mega.input "t" [4] : tensor<4xi32>
  %w0 = mega.param "w0" [8] init ones : tensor<8xf32>
  %x = mega.mul %x0, %w0 : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %w1 = mega.param "w1" [8, 32] init normal(0.02) : tensor<8x32xf32>
  %h = mega.matmul %x, %w1 : tensor<4x8xf32>, tensor<8x32xf32> -> tensor<4x32xf32>
  %g = mega.gelu %h : tensor<4x32xf32> -> tensor<4x32xf32>
  %w2 = mega.param "w2" [32, 8] init normal(0.02) : tensor<32x8xf32>
  %y = mega.matmul %g, %w2 : tensor<4x32xf32>, tensor<32x8xf32> -> tensor<4x8xf32>
  %l, %lse = mega.cross_entropy %y, %t : tensor<4x8xf32>, tensor<4xi32> -> tensor<f32>, tensor<4xf32>
  mega.output "loss", %l : tensor<f32>
  return
}

// The adjoints of the collectives (MegaCollectives.cpp); the tensor-parallel
// programs that use them: tensor-parallel-autodiff.mlir.
// RUN: mega-opt %s -split-input-file -mega-autodiff | FileCheck %s

// all_gather and reduce_scatter are each other's adjoints (sequence
// parallelism's pair).
// CHECK-LABEL: func.func @train
// CHECK: %[[S:.*]] = mega.reduce_scatter %[[A:.*]] axes [0] {dim = 0 : i64} : tensor<4x8xf32> -> tensor<2x8xf32>
// CHECK: %[[G:.*]] = mega.all_gather %[[S]] axes [0] {dim = 0 : i64} : tensor<2x8xf32> -> tensor<4x8xf32>
// CHECK: %[[DL:.*]] = mega.cross_entropy_grad %[[G]]
// CHECK: %[[DS:.*]] = mega.reduce_scatter %[[DL]] axes [0] {dim = 0 : i64} : tensor<4x8xf32> -> tensor<2x8xf32>
// CHECK: %[[DA:.*]] = mega.all_gather %[[DS]] axes [0] {dim = 0 : i64} : tensor<2x8xf32> -> tensor<4x8xf32>
// CHECK: mega.accumulate_grad "a", %[[DA]]
func.func @train() {
  %t = mega.input "t" [4] : tensor<4xi32>
  %a = mega.param "a" [4, 8] init normal(0.02) : tensor<4x8xf32>
  %s = mega.reduce_scatter %a axes [0] {dim = 0 : i64} : tensor<4x8xf32> -> tensor<2x8xf32>
  %g = mega.all_gather %s axes [0] {dim = 0 : i64} : tensor<2x8xf32> -> tensor<4x8xf32>
  %l, %lse = mega.cross_entropy %g, %t : tensor<4x8xf32>, tensor<4xi32> -> tensor<f32>, tensor<4xf32>
  mega.output "loss", %l : tensor<f32>
  return
}

// -----

// copy_to_region's adjoint all-reduces the gradient; all_reduce (sum) passes
// it through (one all_reduce in the backward, not two).
// CHECK-LABEL: func.func @train
// CHECK: %[[C:.*]] = mega.copy_to_region %[[A:.*]] axes [0]
// CHECK: %[[R:.*]] = mega.all_reduce %[[C]] axes [0]
// CHECK: %[[DL:.*]] = mega.cross_entropy_grad %[[R]]
// CHECK: %[[DA:.*]] = mega.all_reduce %[[DL]] axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
// CHECK-NOT: mega.all_reduce
// CHECK: mega.accumulate_grad "a", %[[DA]]
func.func @train() {
  %t = mega.input "t" [4] : tensor<4xi32>
  %a = mega.param "a" [4, 8] init normal(0.02) : tensor<4x8xf32>
  %c = mega.copy_to_region %a axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
  %r = mega.all_reduce %c axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
  %l, %lse = mega.cross_entropy %r, %t : tensor<4x8xf32>, tensor<4xi32> -> tensor<f32>, tensor<4xf32>
  mega.output "loss", %l : tensor<f32>
  return
}

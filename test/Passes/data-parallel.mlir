// RUN: mega-opt %s -split-input-file -mega-data-parallel=size=2 | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-data-parallel="size=2 bucket-mb=0.0001" | FileCheck %s --check-prefix=SMALL
// RUN: mega-opt %s -split-input-file -mega-data-parallel=size=1 | FileCheck %s --check-prefix=ONE
// RUN: mega-opt %s -split-input-file -mega-data-parallel=size=2 -mega-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// One bucket (25 MiB by default): the gradients, in the order @optimizer
// reads them, flattened and concatenated, one all-reduce over mesh axis 1
// (data), and views back that replace every other use. The mesh gets the
// data axis: [T = 1, D = 2].
// CHECK: module attributes {mega.mesh = array<i64: 1, 2>}
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[GW:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK: %[[GB:.*]] = mega.state "b" {role = "grad"} : tensor<5xf32>
// CHECK: %[[FW:.*]] = mega.reshape %[[GW]] : tensor<4x5xf32> -> tensor<20xf32>
// CHECK: %[[CAT:.*]] = mega.concat %[[FW]], %[[GB]] {dim = 0 : i64} : tensor<20xf32>, tensor<5xf32> -> tensor<25xf32>
// CHECK: %[[R:.*]] = mega.all_reduce %[[CAT]] axes [1] : tensor<25xf32> -> tensor<25xf32>
// CHECK: %[[VW:.*]] = mega.view %[[R]] offset 0 : tensor<25xf32> -> tensor<4x5xf32>
// CHECK: %[[VB:.*]] = mega.view %[[R]] offset 80 : tensor<25xf32> -> tensor<5xf32>
// CHECK: mega.grad_norm %[[VW]], %[[VB]]
// CHECK: mega.adamw "w", %[[VW]],
// CHECK: mega.adamw "b", %[[VB]],
// CHECK: mega.zero_grad "w"

// Buckets of 104 bytes: w (80 bytes) and b (20 bytes) share one; a bucket
// never splits a gradient, and no concat for a bucket of one.
// SMALL-LABEL: func.func @optimizer()
// SMALL: mega.concat {{.*}} -> tensor<25xf32>
// SMALL: mega.all_reduce {{.*}} axes [1] : tensor<25xf32>
// SMALL-LABEL: func.func @optimizer()
// SMALL: %[[G1:.*]] = mega.state "big" {role = "grad"} : tensor<40xf32>
// SMALL-NOT: mega.concat
// SMALL: %[[R1:.*]] = mega.all_reduce %[[G1]] axes [1] : tensor<40xf32> -> tensor<40xf32>
// SMALL: mega.all_reduce {{.*}} axes [1] : tensor<3xf32> -> tensor<3xf32>

// size=1: nothing changes.
// ONE-NOT: mega.all_reduce
// ONE-NOT: mega.mesh

// The lowering: the gradients are copied into the bucket (the concat
// stays), one AllReduce {group 1 (data), sum}.
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: mega.kernel "AllReduce"({{.*}}) i [1, 0] f []
// KERNEL: mega.kernel "GradNorm"
module {
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  %gb = mega.state "b" {role = "grad"} : tensor<5xf32>
  %norm, %coef = mega.grad_norm %gw, %gb {max_norm = 1.0 : f64} : tensor<4x5xf32>, tensor<5xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "b", %gb, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.zero_grad "b"
  return
}
func.func @train() {
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %b = mega.param "b" [5] init zeros : tensor<5xf32>
  return
}
}

// -----

// A gradient larger than the bucket is a bucket of its own.
module {
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.fill 1.0 : tensor<f32>
  %g1 = mega.state "big" {role = "grad"} : tensor<40xf32>
  %g2 = mega.state "small" {role = "grad"} : tensor<3xf32>
  mega.sgd "big", %g1, %lr, %coef {weight_decay = 0.0 : f64} : tensor<40xf32>, tensor<f32>, tensor<f32>
  mega.sgd "small", %g2, %lr, %coef {weight_decay = 0.0 : f64} : tensor<3xf32>, tensor<f32>, tensor<f32>
  return
}
func.func @train() {
  %p1 = mega.param "big" [40] init zeros : tensor<40xf32>
  %p2 = mega.param "small" [3] init zeros : tensor<3xf32>
  return
}
}

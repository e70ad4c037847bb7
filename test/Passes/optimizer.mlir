// RUN: mega-opt %s -split-input-file -mega-optimizer | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-optimizer="optimizer=sgd weight-decay=0.1 clip-grad=0" | FileCheck %s --check-prefix=SGD
// RUN: mega-opt %s -split-input-file -mega-optimizer="beta1=0.8 beta2=0.95 eps=1e-6 weight-decay=0.1 clip-grad=2.5" | FileCheck %s --check-prefix=OPTS

// AdamW (defaults): lr and step inputs, one grad_norm over all gradients with
// max_norm = clip-grad (0, no clipping, is the default and not printed),
// output grad_norm, an update per parameter in the order
// of their mega.param (weight decay only on rank >= 2), then zero_grad.
// @train is not touched.
// CHECK-LABEL: func.func @train
// CHECK: mega.accumulate_grad "b"
// CHECK: mega.accumulate_grad "w"
// CHECK-NOT: mega.adamw
// CHECK-LABEL: func.func @optimizer()
// CHECK-NEXT: %[[LR:.*]] = mega.input "lr" [] : tensor<f32>
// CHECK-NEXT: %[[STEP:.*]] = mega.input "step" [] : tensor<f32>
// CHECK-NEXT: %[[GW:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK-NEXT: %[[GB:.*]] = mega.state "b" {role = "grad"} : tensor<5xf32>
// CHECK-NEXT: %[[NORM:.*]], %[[COEF:.*]] = mega.grad_norm %[[GW]], %[[GB]] {max_norm = 1.000000e+00 : f64} : tensor<4x5xf32>, tensor<5xf32> -> tensor<f32>, tensor<f32>
// CHECK-NEXT: mega.output "grad_norm", %[[NORM]] : tensor<f32>
// CHECK-NEXT: mega.adamw "w", %[[GW]], %[[LR]], %[[STEP]], %[[COEF]] {beta1 = 9.000000e-01 : f64, beta2 = 0.99899999999999999 : f64, eps = 1.000000e-08 : f64, weight_decay = 1.000000e-02 : f64}
// CHECK-NEXT: mega.adamw "b", %[[GB]], %[[LR]], %[[STEP]], %[[COEF]] {{{.*}}weight_decay = 0.000000e+00 : f64}
// CHECK-NEXT: mega.zero_grad "w"
// CHECK-NEXT: mega.zero_grad "b"
// CHECK-NEXT: return

// SGD-LABEL: func.func @optimizer()
// SGD: %[[LR:.*]] = mega.input "lr"
// SGD: %[[NORM:.*]], %[[COEF:.*]] = mega.grad_norm %{{.*}}, %{{.*}} : tensor<4x5xf32>, tensor<5xf32> -> tensor<f32>, tensor<f32>
// SGD: mega.sgd "w", %{{.*}}, %[[LR]], %[[COEF]] {weight_decay = 1.000000e-01 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>
// SGD: mega.sgd "b", %{{.*}}, %[[LR]], %[[COEF]] {weight_decay = 0.000000e+00 : f64} : tensor<5xf32>, tensor<f32>, tensor<f32>
// SGD-NOT: mega.adamw
// SGD: mega.zero_grad "w"

// OPTS-LABEL: func.func @optimizer()
// OPTS: mega.grad_norm {{.*}} {max_norm = 2.500000e+00 : f64}
// OPTS: mega.adamw "w", {{.*}} {beta1 = 8.000000e-01 : f64, beta2 = 0.94999999999999996 : f64, eps = 9.9999999999999995E-7 : f64, weight_decay = 1.000000e-01 : f64}
func.func @train() {
  %x = mega.input "x" [2, 3, 4] : tensor<2x3x4xf32>
  %t = mega.input "t" [2, 3] : tensor<2x3xi32>
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %b = mega.param "b" [5] init zeros : tensor<5xf32>
  %h = mega.matmul %x, %w : tensor<2x3x4xf32>, tensor<4x5xf32> -> tensor<2x3x5xf32>
  %l = mega.add %h, %b : tensor<2x3x5xf32>, tensor<5xf32> -> tensor<2x3x5xf32>
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>, tensor<6xf32>
  mega.output "loss", %loss : tensor<f32>
  %seed = mega.fill 1.0 : tensor<f32>
  %dl = mega.cross_entropy_grad %l, %t, %lse, %seed : tensor<2x3x5xf32>, tensor<2x3xi32>, tensor<6xf32>, tensor<f32> -> tensor<2x3x5xf32>
  %db = mega.reduce_sum %dl {rank = 1 : i64} : tensor<2x3x5xf32> -> tensor<5xf32>
  %dl2 = mega.reshape %dl : tensor<2x3x5xf32> -> tensor<6x5xf32>
  %x2 = mega.reshape %x : tensor<2x3x4xf32> -> tensor<6x4xf32>
  %dw = mega.matmul %x2, %dl2 {transpose_a} : tensor<6x4xf32>, tensor<6x5xf32> -> tensor<4x5xf32>
  mega.accumulate_grad "b", %db : tensor<5xf32>
  mega.accumulate_grad "w", %dw : tensor<4x5xf32>
  return
}

// -----

// A parameter without a gradient (no accumulate_grad) is not updated, as
// torch.optim skips a parameter whose .grad is None; one read per name.
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[G:.*]] = mega.state "u" {role = "grad"} : tensor<5xf32>
// CHECK-NOT: mega.state
// CHECK: mega.grad_norm %[[G]] {max_norm
// CHECK: mega.adamw "u"
// CHECK-NOT: "frozen"
// CHECK: mega.zero_grad "u"
// CHECK-NEXT: return
func.func @train() {
  %u = mega.param "u" [5] init zeros : tensor<5xf32>
  %f = mega.param "frozen" [5] init zeros : tensor<5xf32>
  %u2 = mega.param "u" [5] init zeros : tensor<5xf32>
  %s = mega.add %u, %u2 : tensor<5xf32>, tensor<5xf32> -> tensor<5xf32>
  mega.accumulate_grad "u", %s : tensor<5xf32>
  return
}

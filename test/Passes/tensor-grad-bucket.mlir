// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-tensor-grad-bucket | FileCheck %s
// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-tensor-grad-bucket -mega-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// Mesh [2]: "ln.w" and "ln.b" only ever add a tensor-axis sum (ln.w twice,
// as a tied parameter would), so their accumulators add the terms and the
// optimizer sums them once, in place, in the order the updates read them.
// "mixed" also adds a whole value: its all-reduce stays. "w" adds a whole
// value: untouched. (mega-data-parallel's forms: tensor-grad-bucket-data.mlir.)
// CHECK: module attributes {mega.mesh = array<i64: 2>, mega.partial_grads = {ln.b = 0 : i64, ln.w = 0 : i64}}
// CHECK-LABEL: func.func @train()
// CHECK: mega.accumulate_grad "ln.w", %[[DW:.*]] : tensor<8xf32>
// CHECK-NEXT: mega.accumulate_grad "ln.w", %[[DW]] : tensor<8xf32>
// CHECK-NEXT: mega.accumulate_grad "ln.b", %[[DB:.*]] : tensor<8xf32>
// CHECK-NEXT: %[[M:.*]] = mega.all_reduce %[[DB]] axes [0]
// CHECK-NEXT: mega.accumulate_grad "mixed", %[[M]]
// CHECK-NEXT: mega.accumulate_grad "mixed", %[[DB]]
// CHECK-NEXT: mega.accumulate_grad "w"
// CHECK-NOT: mega.all_reduce
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[GW:.*]] = mega.state "w" {role = "grad"}
// CHECK: %[[GLW:.*]] = mega.state "ln.w" {role = "grad"}
// CHECK: %[[GM:.*]] = mega.state "mixed" {role = "grad"}
// CHECK: %[[GLB:.*]] = mega.state "ln.b" {role = "grad"}
// CHECK-NEXT: %[[S:.*]]:2 = mega.grad_bucket_wait %[[GLW]], %[[GLB]] axes [0] : tensor<8xf32>, tensor<8xf32> -> tensor<8xf32>, tensor<8xf32>
// CHECK-NEXT: mega.grad_norm %[[GW]], %[[S]]#0, %[[GM]], %[[S]]#1
// CHECK: mega.adamw "w", %[[GW]],
// CHECK: mega.adamw "ln.w", %[[S]]#0,
// CHECK: mega.adamw "mixed", %[[GM]],
// CHECK: mega.adamw "ln.b", %[[S]]#1,

// The lowering: one AllReduceWait {group 0 (tensor), sum} of the
// accumulators, in place (no copy, no AllReduceStart: it reduces when it
// runs).
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: %[[A:[0-9]+]] = mega.state "ln.w" {role = "grad"}
// KERNEL: %[[B:[0-9]+]] = mega.state "ln.b" {role = "grad"}
// KERNEL: mega.kernel "AllReduceWait"(%[[A]], %[[B]], %[[A]], %[[B]]) i [0, 0] f [] {mega.dests = 2 : i64}
// KERNEL-NEXT: mega.kernel "GradNorm"
module attributes {mega.mesh = array<i64: 2>} {
func.func @train() {
  %w = mega.param "w" [4, 8] init normal(0.02) : tensor<4x8xf32>
  %lw = mega.param "ln.w" [8] init ones : tensor<8xf32>
  %lb = mega.param "ln.b" [8] init zeros : tensor<8xf32>
  %m = mega.param "mixed" [8] init zeros : tensor<8xf32>
  %x = mega.fill 1.0 : tensor<3x4xf32>
  %dy = mega.fill 1.0 : tensor<3x8xf32>
  %dw = mega.matmul %x, %dy {transpose_a} : tensor<3x4xf32>, tensor<3x8xf32> -> tensor<4x8xf32>
  %db = mega.fill 0.5 : tensor<8xf32>
  %r1 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "ln.w", %r1 : tensor<8xf32>
  %r2 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "ln.w", %r2 : tensor<8xf32>
  %r3 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "ln.b", %r3 : tensor<8xf32>
  %r4 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "mixed", %r4 : tensor<8xf32>
  mega.accumulate_grad "mixed", %db : tensor<8xf32>
  mega.accumulate_grad "w", %dw : tensor<4x8xf32>
  return
}
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x8xf32>
  %glw = mega.state "ln.w" {role = "grad"} : tensor<8xf32>
  %gm = mega.state "mixed" {role = "grad"} : tensor<8xf32>
  %glb = mega.state "ln.b" {role = "grad"} : tensor<8xf32>
  %norm, %coef = mega.grad_norm %gw, %glw, %gm, %glb {max_norm = 1.0 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "ln.w", %glw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "mixed", %gm, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "ln.b", %glb, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.zero_grad "ln.w"
  mega.zero_grad "mixed"
  mega.zero_grad "ln.b"
  return
}
}

// -----

// After mega-pipeline-split: each rank's optimizer sums its own gradients
// (here rank 1's "b"; rank 0 has none that qualify).
// CHECK-LABEL: func.func @backward_1()
// CHECK: mega.accumulate_grad "b", %{{.*}} : tensor<8xf32>
// CHECK-NOT: mega.all_reduce
// CHECK-LABEL: func.func @optimizer_0()
// CHECK-NOT: mega.grad_bucket_wait
// CHECK-LABEL: func.func @optimizer_1()
// CHECK: %[[G:.*]] = mega.state "b" {role = "grad"}
// CHECK-NEXT: %[[S:.*]] = mega.grad_bucket_wait %[[G]] axes [0]
// CHECK-NEXT: mega.sgd "b", %[[S]],
module attributes {mega.mesh = array<i64: 2>} {
func.func @backward_0() attributes {mega.program = "backward", mega.stage = 0 : i64} {
  %w = mega.param "w" [4] init zeros : tensor<4xf32>
  %dw = mega.fill 1.0 : tensor<4xf32>
  mega.accumulate_grad "w", %dw : tensor<4xf32>
  return
}
func.func @backward_1() attributes {mega.program = "backward", mega.stage = 1 : i64} {
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %db = mega.fill 1.0 : tensor<8xf32>
  %r = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "b", %r : tensor<8xf32>
  return
}
func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64} {
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.fill 1.0 : tensor<f32>
  %g = mega.state "w" {role = "grad"} : tensor<4xf32>
  mega.sgd "w", %g, %lr, %coef {weight_decay = 0.0 : f64} : tensor<4xf32>, tensor<f32>, tensor<f32>
  return
}
func.func @optimizer_1() attributes {mega.program = "optimizer", mega.stage = 1 : i64} {
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.fill 1.0 : tensor<f32>
  %g = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.sgd "b", %g, %lr, %coef {weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>
  return
}
}

// -----

// No tensor axis larger than 1: nothing changes (the data axis's sums are
// mega-data-parallel's).
// CHECK-LABEL: func.func @train()
// CHECK: %[[R:.*]] = mega.all_reduce %{{.*}} axes [0]
// CHECK-NEXT: mega.accumulate_grad "b", %[[R]]
// CHECK-LABEL: func.func @optimizer()
// CHECK-NOT: mega.grad_bucket_wait
module attributes {mega.mesh = array<i64: 1, 2>} {
func.func @train() {
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %db = mega.fill 1.0 : tensor<8xf32>
  %r = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "b", %r : tensor<8xf32>
  return
}
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.fill 1.0 : tensor<f32>
  %g = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.sgd "b", %g, %lr, %coef {weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>
  return
}
}

// -----

// A gradient read before the last of them is ready cannot use the sum.
module attributes {mega.mesh = array<i64: 2>} {
func.func @train() {
  %a = mega.param "a" [8] init zeros : tensor<8xf32>
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %db = mega.fill 1.0 : tensor<8xf32>
  %r1 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "a", %r1 : tensor<8xf32>
  %r2 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "b", %r2 : tensor<8xf32>
  return
}
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %ga = mega.state "a" {role = "grad"} : tensor<8xf32>
  // expected-error @+1 {{reads a replicated parameter's gradient before the last of them is ready}}
  %norm, %coef = mega.grad_norm %ga {max_norm = 1.0 : f64} : tensor<8xf32> -> tensor<f32>, tensor<f32>
  %gb = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.sgd "a", %ga, %lr, %coef {weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>
  mega.sgd "b", %gb, %lr, %coef {weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>
  return
}
}

// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-data-parallel="size=2 overlap=true bucket-mb=0.0001" | FileCheck %s
// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-data-parallel="size=2 overlap=true bucket-mb=0.0001" -mega-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// overlap: buckets (104 bytes here) follow the order in which @train's
// backward finishes the gradients, not @optimizer's: "b" (20 bytes) and
// "w" (80 bytes) are done after the second matmul's backward, "e" (64
// bytes) last. Each bucket's all-reduce starts right after its last
// accumulate_grad (the tied "w" accumulates twice: its second one counts),
// while the rest of the backward goes on; @optimizer waits for every bucket,
// in the order they start, and uses the reduced gradients.
// CHECK-LABEL: func.func @train()
// CHECK: mega.accumulate_grad "b"
// CHECK-NEXT: mega.accumulate_grad "w"
// CHECK-NOT: mega.grad_bucket_start
// CHECK: mega.accumulate_grad "w"
// CHECK-NEXT: mega.grad_bucket_start ["b", "w"] axes [1]
// CHECK-NEXT: mega.matmul
// CHECK: mega.accumulate_grad "e"
// CHECK-NEXT: mega.grad_bucket_start ["e"] axes [1]
// CHECK-NEXT: return
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[GW:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK: %[[GB:.*]] = mega.state "b" {role = "grad"} : tensor<5xf32>
// CHECK: %[[GE:.*]] = mega.state "e" {role = "grad"} : tensor<16xf32>
// CHECK-NEXT: %[[R:.*]]:2 = mega.grad_bucket_wait %[[GB]], %[[GW]] axes [1] : tensor<5xf32>, tensor<4x5xf32> -> tensor<5xf32>, tensor<4x5xf32>
// CHECK-NEXT: %[[RE:.*]] = mega.grad_bucket_wait %[[GE]] axes [1] : tensor<16xf32> -> tensor<16xf32>
// CHECK: mega.grad_norm %[[R]]#1, %[[R]]#0, %[[RE]]
// CHECK: mega.adamw "w", %[[R]]#1,
// CHECK: mega.adamw "b", %[[R]]#0,
// CHECK: mega.adamw "e", %[[RE]],
// CHECK-NOT: mega.all_reduce
// CHECK-NOT: mega.concat

// The lowering: the start reads the accumulators by name; the wait sums
// them in place (operands = results: `mega.dests` = 2), and the optimizer
// reads the accumulators after it.
// KERNEL-LABEL: func.func @train()
// KERNEL: mega.kernel "Elementwise"
// KERNEL: %[[SB:[0-9]+]] = mega.state "b" {role = "grad"} : tensor<5xf32>
// KERNEL: %[[SW:[0-9]+]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// KERNEL-NEXT: mega.kernel "AllReduceStart"(%[[SB]], %[[SW]]) i [1, 0] f []
// KERNEL: mega.kernel "AllReduceStart"(%{{.*}}) i [1, 0] f []
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: mega.state "e" {role = "grad"}
// KERNEL: mega.kernel "AllReduceWait"(%[[B:[0-9]+]], %[[W:[0-9]+]], %[[B]], %[[W]]) i [1, 0] f [] {mega.dests = 2 : i64}
// KERNEL: mega.kernel "AllReduceWait"
// KERNEL: mega.kernel "GradNorm"(%[[W]], %[[B]],
module {
func.func @train() {
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %b = mega.param "b" [5] init zeros : tensor<5xf32>
  %e = mega.param "e" [16] init zeros : tensor<16xf32>
  %x = mega.fill 1.0 : tensor<3x4xf32>
  %dy = mega.fill 1.0 : tensor<3x5xf32>
  %db = mega.fill 1.0 : tensor<5xf32>
  %dw = mega.matmul %x, %dy {transpose_a} : tensor<3x4xf32>, tensor<3x5xf32> -> tensor<4x5xf32>
  mega.accumulate_grad "b", %db : tensor<5xf32>
  mega.accumulate_grad "w", %dw : tensor<4x5xf32>
  mega.accumulate_grad "w", %dw : tensor<4x5xf32>
  %dx = mega.matmul %dy, %w {transpose_b} : tensor<3x5xf32>, tensor<4x5xf32> -> tensor<3x4xf32>
  %de = mega.fill 2.0 : tensor<16xf32>
  mega.accumulate_grad "e", %de : tensor<16xf32>
  return
}
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  %gb = mega.state "b" {role = "grad"} : tensor<5xf32>
  %ge = mega.state "e" {role = "grad"} : tensor<16xf32>
  %norm, %coef = mega.grad_norm %gw, %gb, %ge {max_norm = 1.0 : f64} : tensor<4x5xf32>, tensor<5xf32>, tensor<16xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "b", %gb, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "e", %ge, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<16xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.zero_grad "b"
  mega.zero_grad "e"
  return
}
}

// -----

// overlap needs the backward program to start the buckets in.
// expected-error @+1 {{mega-data-parallel: overlap needs a func.func @train (run mega-autodiff first)}}
module {
func.func @optimizer() {
  %g = mega.state "w" {role = "grad"} : tensor<4xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.fill 1.0 : tensor<f32>
  mega.sgd "w", %g, %lr, %coef {weight_decay = 0.0 : f64} : tensor<4xf32>, tensor<f32>, tensor<f32>
  return
}
}

// -----

// After mega-pipeline-split: each rank's @optimizer_r with the backwards of
// its stages (s mod P = r), run from the highest stage down (rank 0 holds
// stages 0 and 1 here: P = 1 optimizer, V = 2). "a" is finished in
// @backward_1, "b" in @backward_0: each bucket starts where its gradients
// are final (80 and 40 bytes: a bucket each), and the waits replace the
// gradients in @optimizer_0.
// CHECK-LABEL: func.func @backward_0()
// CHECK: mega.accumulate_grad "b"
// CHECK-NEXT: mega.grad_bucket_start ["b"] axes [1]
// CHECK-LABEL: func.func @backward_1()
// CHECK: mega.accumulate_grad "a"
// CHECK-NEXT: mega.grad_bucket_start ["a"] axes [1]
// CHECK-LABEL: func.func @optimizer_0()
// CHECK-DAG: %[[A:.*]] = mega.grad_bucket_wait %{{.*}} axes [1] : tensor<20xf32> -> tensor<20xf32>
// CHECK-DAG: %[[B:.*]] = mega.grad_bucket_wait %{{.*}} axes [1] : tensor<10xf32> -> tensor<10xf32>
// CHECK: mega.sgd "b", %[[B]]
// CHECK: mega.sgd "a", %[[A]]
module {
func.func @backward_0() attributes {mega.program = "backward", mega.stage = 0 : i64} {
  %b = mega.param "b" [10] init zeros : tensor<10xf32>
  %g = mega.fill 1.0 : tensor<10xf32>
  mega.accumulate_grad "b", %g : tensor<10xf32>
  return
}
func.func @backward_1() attributes {mega.program = "backward", mega.stage = 1 : i64} {
  %a = mega.param "a" [20] init zeros : tensor<20xf32>
  %g = mega.fill 1.0 : tensor<20xf32>
  mega.accumulate_grad "a", %g : tensor<20xf32>
  return
}
func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64} {
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.fill 1.0 : tensor<f32>
  %gb = mega.state "b" {role = "grad"} : tensor<10xf32>
  %ga = mega.state "a" {role = "grad"} : tensor<20xf32>
  mega.sgd "b", %gb, %lr, %coef {weight_decay = 0.0 : f64} : tensor<10xf32>, tensor<f32>, tensor<f32>
  mega.sgd "a", %ga, %lr, %coef {weight_decay = 0.0 : f64} : tensor<20xf32>, tensor<f32>, tensor<f32>
  return
}
}

// -----

// A rank whose stages have no backward program cannot start its buckets.
module {
func.func @backward_0() attributes {mega.program = "backward", mega.stage = 0 : i64} {
  return
}
func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64} {
  return
}
// expected-error @+1 {{mega-data-parallel: no backward program runs on pipeline rank 1}}
func.func @optimizer_1() attributes {mega.program = "optimizer", mega.stage = 1 : i64} {
  return
}
}

// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-data-parallel="size=2 distributed-optimizer=1 overlap=1 bucket-mb=0.0001" | FileCheck %s
// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-data-parallel="size=2 distributed-optimizer=1 overlap=1 bucket-mb=0.0001" -mega-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// The distributed optimizer with overlap (Megatron's --use-distributed-optimizer
// with --overlap-grad-reduce): the buckets (104 bytes) follow the order in
// which @train's backward finishes the gradients, as for the all-reduces,
// but each start and wait has `scatter`: every gradient of the bucket is
// reduce-scattered along dim 0 while the backward goes on, and the wait's
// results are this rank's blocks (4x5 -> 2x5, 6 -> 3, 16 -> 8), which the
// norm (summing the blocks' squares over the data ranks) and the block
// updates read. No mega.reduce_scatter is left in @optimizer.
// CHECK: module attributes {mega.distributed_optimizer = 1 : i64, mega.mesh = array<i64: 1, 2>}
// CHECK-LABEL: func.func @train()
// CHECK: mega.accumulate_grad "w"
// CHECK-NEXT: mega.grad_bucket_start ["b", "w"] axes [1] scatter
// CHECK-NEXT: mega.matmul
// CHECK: mega.accumulate_grad "e"
// CHECK-NEXT: mega.grad_bucket_start ["e"] axes [1] scatter
// CHECK-NEXT: return
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[GW:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK-NEXT: %[[GB:.*]] = mega.state "b" {role = "grad"} : tensor<6xf32>
// CHECK-NEXT: %[[GE:.*]] = mega.state "e" {role = "grad"} : tensor<16xf32>
// CHECK-NEXT: %[[R:.*]]:2 = mega.grad_bucket_wait %[[GB]], %[[GW]] axes [1] scatter : tensor<6xf32>, tensor<4x5xf32> -> tensor<3xf32>, tensor<2x5xf32>
// CHECK-NEXT: %[[RE:.*]] = mega.grad_bucket_wait %[[GE]] axes [1] scatter : tensor<16xf32> -> tensor<8xf32>
// CHECK-NEXT: mega.grad_norm %[[R]]#1, %[[R]]#0, %[[RE]] {max_norm = 1.000000e+00 : f64, mega.shard_axis = 1 : i64, mega.sharded_grads = array<i64: 0, 1, 2>}
// CHECK: mega.adamw "w", %[[R]]#1, {{.*}}mega.data_shard = 1 : i64{{.*}} : tensor<2x5xf32>
// CHECK: mega.adamw "b", %[[R]]#0, {{.*}}mega.data_shard = 1 : i64{{.*}} : tensor<3xf32>
// CHECK: mega.adamw "e", %[[RE]], {{.*}}mega.data_shard = 1 : i64{{.*}} : tensor<8xf32>
// CHECK-NOT: mega.reduce_scatter
// CHECK-NOT: mega.all_reduce

// Lowered: the start reads the accumulators by name (i = {group}); the wait
// writes fresh blocks (no mega.dests: not in place), which GradNorm reads.
// KERNEL-LABEL: func.func @train()
// KERNEL: mega.kernel "Elementwise"
// KERNEL-NEXT: %[[SB:[0-9]+]] = mega.state "b" {role = "grad"} : tensor<6xf32>
// KERNEL-NEXT: %[[SW:[0-9]+]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// KERNEL-NEXT: mega.kernel "ReduceScatterStart"(%[[SB]], %[[SW]]) i [1] f [] : (tensor<6xf32>, tensor<4x5xf32>) -> ()
// KERNEL: mega.kernel "ReduceScatterStart"(%{{.*}}) i [1] f [] : (tensor<16xf32>) -> ()
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: %[[BL:[0-9]+]]:2 = mega.kernel "ReduceScatterWait"(%{{[0-9]+}}, %{{[0-9]+}}) i [1] f [] : (tensor<6xf32>, tensor<4x5xf32>) -> (tensor<3xf32>, tensor<2x5xf32>)
// KERNEL-NEXT: %[[BE:[0-9]+]] = mega.kernel "ReduceScatterWait"(%{{[0-9]+}}) i [1] f [] : (tensor<16xf32>) -> tensor<8xf32>
// KERNEL: mega.kernel "GradNorm"(%[[BL]]#1, %[[BL]]#0, %[[BE]]) i [1, 1, 1, 1]
// KERNEL-NOT: "ReduceScatter"
module {
func.func @train() {
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %b = mega.param "b" [6] init zeros : tensor<6xf32>
  %e = mega.param "e" [16] init zeros : tensor<16xf32>
  %x = mega.fill 1.0 : tensor<3x4xf32>
  %dy = mega.fill 1.0 : tensor<3x5xf32>
  %db = mega.fill 1.0 : tensor<6xf32>
  %dw = mega.matmul %x, %dy {transpose_a} : tensor<3x4xf32>, tensor<3x5xf32> -> tensor<4x5xf32>
  mega.accumulate_grad "b", %db : tensor<6xf32>
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
  %gb = mega.state "b" {role = "grad"} : tensor<6xf32>
  %ge = mega.state "e" {role = "grad"} : tensor<16xf32>
  %norm, %coef = mega.grad_norm %gw, %gb, %ge {max_norm = 1.0 : f64} : tensor<4x5xf32>, tensor<6xf32>, tensor<16xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "b", %gb, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<6xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "e", %ge, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<16xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.zero_grad "b"
  mega.zero_grad "e"
  return
}
}

// -----

// A module distributed already (mega.distributed_optimizer: megac's first
// run of the pass, before mega-pipeline-split) is only overlapped, here on
// the split's per-rank programs: its reduce_scatter becomes the bucket's.
// CHECK-LABEL: func.func @backward_0()
// CHECK: mega.accumulate_grad "w"
// CHECK-NEXT: mega.grad_bucket_start ["w"] axes [1] scatter
// CHECK-LABEL: func.func @optimizer_0()
// CHECK-NEXT: %[[G:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK-NEXT: %[[B:.*]] = mega.grad_bucket_wait %[[G]] axes [1] scatter : tensor<4x5xf32> -> tensor<2x5xf32>
// CHECK-NEXT: mega.output "g", %[[B]]
module attributes {mega.distributed_optimizer = 1 : i64, mega.mesh = array<i64: 1, 2>} {
func.func @backward_0() attributes {mega.program = "backward", mega.stage = 0 : i64} {
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %dw = mega.fill 1.0 : tensor<4x5xf32>
  mega.accumulate_grad "w", %dw : tensor<4x5xf32>
  return
}
func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64} {
  %g = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  %b = mega.reduce_scatter %g axes [1] {dim = 0 : i64} : tensor<4x5xf32> -> tensor<2x5xf32>
  mega.output "g", %b : tensor<2x5xf32>
  return
}
}

// -----

// Overlapping needs every gradient read by its one reduce_scatter.
module attributes {mega.distributed_optimizer = 1 : i64, mega.mesh = array<i64: 1, 2>} {
func.func @backward_0() attributes {mega.program = "backward", mega.stage = 0 : i64} {
  %dw = mega.fill 1.0 : tensor<4x5xf32>
  mega.accumulate_grad "w", %dw : tensor<4x5xf32>
  return
}
func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64} {
  // expected-error @+1 {{mega-data-parallel: the distributed optimizer's gradient 'w' is not read by one reduce_scatter over the data axis alone}}
  %g = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  mega.output "g", %g : tensor<4x5xf32>
  return
}
}

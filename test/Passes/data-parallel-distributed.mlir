// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-data-parallel="size=2 distributed-optimizer=1" | FileCheck %s
// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-data-parallel="size=2 distributed-optimizer=1" -mega-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// The distributed optimizer (ZeRO-1): each gradient is reduce-scattered over
// mesh axis 1 into this data rank's block of rows (no buckets: a block per
// parameter), the norm sums the blocks' squares over the data ranks
// (`mega.sharded_grads` = all, `mega.shard_axis = 1`), and each AdamW
// updates this rank's block (`mega.data_shard = 1`).
// CHECK: module attributes {mega.distributed_optimizer = 1 : i64, mega.mesh = array<i64: 1, 2>}
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[GW:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK-NEXT: %[[BW:.*]] = mega.reduce_scatter %[[GW]] axes [1] {dim = 0 : i64} : tensor<4x5xf32> -> tensor<2x5xf32>
// CHECK: %[[GB:.*]] = mega.state "b" {role = "grad"} : tensor<6xf32>
// CHECK-NEXT: %[[BB:.*]] = mega.reduce_scatter %[[GB]] axes [1] {dim = 0 : i64} : tensor<6xf32> -> tensor<3xf32>
// CHECK-NOT: mega.all_reduce
// CHECK: mega.grad_norm %[[BW]], %[[BB]] {max_norm = 1.000000e+00 : f64, mega.shard_axis = 1 : i64, mega.sharded_grads = array<i64: 0, 1>}
// CHECK: mega.adamw "w", %[[BW]], {{.*}}mega.data_shard = 1 : i64{{.*}} : tensor<2x5xf32>
// CHECK: mega.adamw "b", %[[BB]], {{.*}}mega.data_shard = 1 : i64{{.*}} : tensor<3xf32>
// CHECK: mega.zero_grad "w"

// Lowered: GradNorm over group 1 with every input a shard; AdamW reads the
// whole parameter and its block's gradient and moments (i = {1}) and returns
// the updated block, all-gathered into the parameter (mega.dests = 1).
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: %[[P:.*]] = mega.param "w"
// KERNEL: mega.kernel "ReduceScatter"({{.*}}) i [1] f [] : (tensor<4x5xf32>) -> tensor<2x5xf32>
// KERNEL: mega.kernel "GradNorm"({{.*}}) i [1, 1, 1]
// KERNEL: %[[M:.*]] = mega.state "w" {role = "adam_m"} : tensor<2x5xf32>
// KERNEL: %[[V:.*]] = mega.state "w" {role = "adam_v"} : tensor<2x5xf32>
// KERNEL: %[[U:.*]] = mega.kernel "AdamW"(%[[P]], %{{.*}}, %[[M]], %[[V]], {{.*}}) i [1] {{.*}} -> tensor<2x5xf32>
// KERNEL: mega.kernel "AllGather"(%[[U]], %[[P]]) i [1] f [] {mega.dests = 1 : i64}
module {
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  %gb = mega.state "b" {role = "grad"} : tensor<6xf32>
  %norm, %coef = mega.grad_norm %gw, %gb {max_norm = 1.0 : f64} : tensor<4x5xf32>, tensor<6xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "b", %gb, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<6xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.zero_grad "b"
  return
}
func.func @train() {
  %w = mega.param "w" [4, 5] init normal(0.02) : tensor<4x5xf32>
  %b = mega.param "b" [6] init zeros : tensor<6xf32>
  return
}
}

// -----

// Every moment is split by rows: D must divide each leading dim.
// expected-error @+1 {{--use-distributed-optimizer: --dp 2 does not divide the leading dim of 'b' (5)}}
module {
func.func @optimizer() {
  %gb = mega.state "b" {role = "grad"} : tensor<5xf32>
  return
}
}

// -----

// expected-error @+1 {{--use-distributed-optimizer needs --optimizer adam (sgd has no state to shard)}}
module {
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  %c = mega.fill 1.0 : tensor<f32>
  mega.sgd "w", %gw, %lr, %c {weight_decay = 0.0 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>
  return
}
}

// -----

// With tensor parallelism (mesh [2, D]): the gradients are the shards' (D
// divides their local leading dim), the norm keeps the tensor shard flags
// and gets `mega.data_blocks = 1` -- lowered to GradNorm {0, flags, -1 (no
// pipeline), 1}: the sums meet over the data ranks, then the shards' over
// the tensor ranks.
// CHECK-LABEL: func.func @optimizer()
// CHECK: %[[G:.*]] = mega.state "w" {role = "grad"} : tensor<4x5xf32>
// CHECK-NEXT: %[[B:.*]] = mega.reduce_scatter %[[G]] axes [1] {dim = 0 : i64} : tensor<4x5xf32> -> tensor<2x5xf32>
// CHECK: mega.grad_norm %[[B]] {max_norm = 1.000000e+00 : f64, mega.data_blocks = 1 : i64, mega.sharded_grads = array<i64: 0>}
// CHECK-NOT: mega.shard_axis
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: mega.kernel "GradNorm"({{.*}}) i [0, 1, -1, 1]
module attributes {mega.mesh = array<i64: 2>} {
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x5xf32>
  %norm, %coef = mega.grad_norm %gw {max_norm = 1.0 : f64, mega.sharded_grads = array<i64: 0>} : tensor<4x5xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}
func.func @train() {
  %w = mega.param "w" [4, 5] init normal(0.02) {mega.sharding = #mega.sharding<[[], [0]]>} : tensor<4x5xf32>
  return
}
}

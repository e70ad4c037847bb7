// RUN: mega-opt %s -mega-data-parallel="size=2" -mega-tensor-grad-bucket | FileCheck %s --check-prefix=VIEWS
// RUN: mega-opt %s -mega-data-parallel="size=2 overlap=true" -mega-tensor-grad-bucket | FileCheck %s --check-prefix=OVERLAP
// RUN: mega-opt %s -mega-data-parallel="size=2 distributed-optimizer=true" -mega-tensor-grad-bucket | FileCheck %s --check-prefix=ZERO
// RUN: mega-opt %s -mega-data-parallel="size=2 overlap=true" -mega-tensor-grad-bucket -mega-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// mega-tensor-grad-bucket after each form of mega-data-parallel (mesh
// [2, 2]): the tensor sum takes the gradients as the updates read them, after
// the data sum (the two sums commute).

// Buckets in the optimizer: the updates read views of the data sum, so the
// tensor sum packs the two that qualify.
// VIEWS: module attributes {mega.mesh = array<i64: 2, 2>, mega.partial_grads = {ln.b = 0 : i64, ln.w = 0 : i64}}
// VIEWS-LABEL: func.func @optimizer()
// VIEWS: %[[R:.*]] = mega.all_reduce %{{.*}} axes [1] : tensor<48xf32> -> tensor<48xf32>
// VIEWS-NEXT: %[[VW:.*]] = mega.view %[[R]] offset 0 : tensor<48xf32> -> tensor<4x8xf32>
// VIEWS-NEXT: %[[VLW:.*]] = mega.view %[[R]] offset 128 : tensor<48xf32> -> tensor<8xf32>
// VIEWS-NEXT: %[[VLB:.*]] = mega.view %[[R]] offset 160 : tensor<48xf32> -> tensor<8xf32>
// VIEWS-NEXT: %[[CAT:.*]] = mega.concat %[[VLW]], %[[VLB]] {dim = 0 : i64} : tensor<8xf32>, tensor<8xf32> -> tensor<16xf32>
// VIEWS-NEXT: %[[T:.*]] = mega.all_reduce %[[CAT]] axes [0] : tensor<16xf32> -> tensor<16xf32>
// VIEWS-NEXT: %[[TLW:.*]] = mega.view %[[T]] offset 0 : tensor<16xf32> -> tensor<8xf32>
// VIEWS-NEXT: %[[TLB:.*]] = mega.view %[[T]] offset 32 : tensor<16xf32> -> tensor<8xf32>
// VIEWS-NEXT: mega.grad_norm %[[VW]], %[[TLW]], %[[TLB]]
// VIEWS: mega.adamw "w", %[[VW]],
// VIEWS: mega.adamw "ln.w", %[[TLW]],
// VIEWS: mega.adamw "ln.b", %[[TLB]],

// Overlapped buckets: the updates read the data wait's results, the
// accumulators summed in place, so the tensor sum is one more in-place wait
// after them.
// OVERLAP-LABEL: func.func @optimizer()
// OVERLAP: %[[D:.*]]:3 = mega.grad_bucket_wait %{{.*}}, %{{.*}}, %{{.*}} axes [1]
// OVERLAP-NEXT: %[[S:.*]]:2 = mega.grad_bucket_wait %[[D]]#{{[0-9]}}, %[[D]]#{{[0-9]}} axes [0]
// OVERLAP-NEXT: mega.grad_norm %[[D]]#{{[0-9]}}, %[[S]]#0, %[[S]]#1

// The distributed optimizer: the updates read each gradient's
// reduce-scattered block, which the tensor sum packs.
// ZERO-LABEL: func.func @optimizer()
// ZERO: %[[BW:.*]] = mega.reduce_scatter %{{.*}} axes [1] {dim = 0 : i64} : tensor<4x8xf32> -> tensor<2x8xf32>
// ZERO: %[[BLW:.*]] = mega.reduce_scatter %{{.*}} axes [1] {dim = 0 : i64} : tensor<8xf32> -> tensor<4xf32>
// ZERO: %[[BLB:.*]] = mega.reduce_scatter %{{.*}} axes [1] {dim = 0 : i64} : tensor<8xf32> -> tensor<4xf32>
// ZERO-NEXT: %[[CAT:.*]] = mega.concat %[[BLW]], %[[BLB]] {dim = 0 : i64} : tensor<4xf32>, tensor<4xf32> -> tensor<8xf32>
// ZERO-NEXT: %[[T:.*]] = mega.all_reduce %[[CAT]] axes [0] : tensor<8xf32> -> tensor<8xf32>
// ZERO: mega.grad_norm %[[BW]], %{{.*}}, %{{.*}} {max_norm = 1.000000e+00 : f64, mega.data_blocks = 1 : i64}

// Lowered: the data bucket's wait and the tensor bucket's, both in place on
// the accumulators.
// KERNEL-LABEL: func.func @optimizer()
// KERNEL: mega.kernel "AllReduceWait"({{.*}}) i [1, 0] f [] {mega.dests = 3 : i64}
// KERNEL-NEXT: mega.kernel "AllReduceWait"(%[[A:[0-9]+]], %[[B:[0-9]+]], %[[A]], %[[B]]) i [0, 0] f [] {mega.dests = 2 : i64}
module attributes {mega.mesh = array<i64: 2>} {
func.func @train() {
  %w = mega.param "w" [4, 8] init normal(0.02) : tensor<4x8xf32>
  %lw = mega.param "ln.w" [8] init ones : tensor<8xf32>
  %lb = mega.param "ln.b" [8] init zeros : tensor<8xf32>
  %x = mega.fill 1.0 : tensor<3x4xf32>
  %dy = mega.fill 1.0 : tensor<3x8xf32>
  %dw = mega.matmul %x, %dy {transpose_a} : tensor<3x4xf32>, tensor<3x8xf32> -> tensor<4x8xf32>
  %db = mega.fill 0.5 : tensor<8xf32>
  %r1 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "ln.w", %r1 : tensor<8xf32>
  %r2 = mega.all_reduce %db axes [0] : tensor<8xf32> -> tensor<8xf32>
  mega.accumulate_grad "ln.b", %r2 : tensor<8xf32>
  mega.accumulate_grad "w", %dw : tensor<4x8xf32>
  return
}
func.func @optimizer() {
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<4x8xf32>
  %glw = mega.state "ln.w" {role = "grad"} : tensor<8xf32>
  %glb = mega.state "ln.b" {role = "grad"} : tensor<8xf32>
  %norm, %coef = mega.grad_norm %gw, %glw, %glb {max_norm = 1.0 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<f32>, tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  mega.adamw "w", %gw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<4x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "ln.w", %glw, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "ln.b", %glb, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.zero_grad "w"
  mega.zero_grad "ln.w"
  mega.zero_grad "ln.b"
  return
}
}

// RUN: mega-opt %s -split-input-file -canonicalize -cse | FileCheck %s

// mega.fill is a constant: equal fills are merged, unused ones disappear.
// CHECK-LABEL: func.func @fills
// CHECK-DAG: %[[Z:.*]] = mega.fill 0.000000e+00 : tensor<4xf32>
// CHECK-DAG: %[[I:.*]] = mega.fill 3.000000e+00 : tensor<2xi32>
// CHECK-NOT: mega.fill
// CHECK: mega.output "a", %[[Z]]
// CHECK: mega.output "b", %[[Z]]
// CHECK: mega.output "c", %[[I]]
func.func @fills() {
  %a = mega.fill 0.0 : tensor<4xf32>
  %b = mega.fill 0.0 : tensor<4xf32>
  %c = mega.fill 3.0 : tensor<2xi32>
  %unused = mega.fill 1.0 : tensor<8xf32>
  mega.output "a", %a : tensor<4xf32>
  mega.output "b", %b : tensor<4xf32>
  mega.output "c", %c : tensor<2xi32>
  return
}

// -----

// Persistent state and ports are not removed or merged; reads of a param are
// merged and unused ones disappear.
// CHECK-LABEL: func.func @effects
// CHECK: %[[P:.*]] = mega.param "w"
// CHECK-NOT: mega.param
// CHECK: mega.accumulate_grad "w", %[[P]]
// CHECK: mega.accumulate_grad "w", %[[P]]
// CHECK: mega.zero_grad "w"
// CHECK: mega.output "w", %[[P]]
func.func @effects() {
  %p = mega.param "w" [4] init zeros : tensor<4xf32>
  %q = mega.param "w" [4] init zeros : tensor<4xf32>
  %unused = mega.param "v" [4] init zeros : tensor<4xf32>
  mega.accumulate_grad "w", %p : tensor<4xf32>
  mega.accumulate_grad "w", %p : tensor<4xf32>
  mega.zero_grad "w"
  mega.output "w", %q : tensor<4xf32>
  return
}

// -----

// A read after a write of persistent state is not merged with one before.
// CHECK-LABEL: func.func @read_after_write
// CHECK: %[[P:.*]] = mega.param "w"
// CHECK: mega.sgd "w"
// CHECK: %[[Q:.*]] = mega.param "w"
// CHECK: mega.output "before", %[[P]]
// CHECK: mega.output "after", %[[Q]]
func.func @read_after_write(%lr: tensor<f32>) {
  %p = mega.param "w" [4] init zeros : tensor<4xf32>
  mega.sgd "w", %p, %lr, %lr {weight_decay = 0.0} : tensor<4xf32>, tensor<f32>, tensor<f32>
  %q = mega.param "w" [4] init zeros : tensor<4xf32>
  mega.output "before", %p : tensor<4xf32>
  mega.output "after", %q : tensor<4xf32>
  return
}

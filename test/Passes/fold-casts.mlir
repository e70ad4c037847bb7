// RUN: mega-opt %s -split-input-file -mega-fold-casts | FileCheck %s

// A Transpose read only through views that are cast: it writes bf16 itself,
// the views are retyped with halved byte offsets, the casts are gone.
// CHECK-LABEL: func.func @transpose_views
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%{{.*}}) i [3, 4, 2, 3, 1, 0, 2] f [] : (tensor<4x2x3xf32>) -> tensor<2x4x3xbf16>
// CHECK: %[[A:.*]] = mega.view %[[T]] offset 0 : tensor<2x4x3xbf16> -> tensor<4x3xbf16>
// CHECK: %[[B:.*]] = mega.view %[[T]] offset 24 : tensor<2x4x3xbf16> -> tensor<4x3xbf16>
// CHECK-NOT: "Cast"
// CHECK: mega.kernel "MatMul"(%[[A]], %[[B]])
func.func @transpose_views(%x: tensor<4x2x3xf32>) {
  %t = mega.kernel "Transpose"(%x) i [3, 4, 2, 3, 1, 0, 2] f [] : (tensor<4x2x3xf32>) -> tensor<2x4x3xf32>
  %a = mega.view %t offset 0 : tensor<2x4x3xf32> -> tensor<4x3xf32>
  %b = mega.view %t offset 48 : tensor<2x4x3xf32> -> tensor<4x3xf32>
  %ab = mega.kernel "Cast"(%a) i [12] f [] : (tensor<4x3xf32>) -> tensor<4x3xbf16>
  %bb = mega.kernel "Cast"(%b) i [12] f [] : (tensor<4x3xf32>) -> tensor<4x3xbf16>
  %c = mega.kernel "MatMul"(%ab, %bb) i [1, 4, 4, 3, 0, 1, 3, 3, 4, 0, 0, 0] f [1.0, 0.0] : (tensor<4x3xbf16>, tensor<4x3xbf16>) -> tensor<4x4xf32>
  mega.output "c", %c : tensor<4x4xf32>
  return
}

// -----

// One Elementwise result is only cast (it becomes bf16); the other is also
// an output port and stays f32.
// CHECK-LABEL: func.func @elementwise
// CHECK: %[[E:.*]]:2 = mega.kernel "Elementwise"(%{{.*}}) i [{{.*}}] f [] : (tensor<8xf32>) -> (tensor<8xf32>, tensor<8xbf16>)
// CHECK: %[[C:.*]] = mega.kernel "Cast"(%[[E]]#0) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
// CHECK: mega.output "y", %[[E]]#0
// CHECK: mega.output "g", %[[E]]#1 : tensor<8xbf16>
func.func @elementwise(%x: tensor<8xf32>) {
  %y, %g = mega.kernel "Elementwise"(%x) i [8, 1, 2, 8, 0, 0, 0, 0, 15, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0] f [] : (tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>)
  %yb = mega.kernel "Cast"(%y) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  %gb = mega.kernel "Cast"(%g) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  mega.output "y", %y : tensor<8xf32>
  mega.output "yb", %yb : tensor<8xbf16>
  mega.output "g", %gb : tensor<8xbf16>
  return
}

// -----

// Not a producer that rounds on store (LayerNorm), or a value some other
// kernel reads in f32: the Cast stays.
// CHECK-LABEL: func.func @kept
// CHECK: mega.kernel "Cast"(%{{.*}}#0)
// CHECK: %[[T:.*]] = mega.kernel "Transpose"{{.*}} -> tensor<3x2xf32>
// CHECK: mega.kernel "Cast"(%[[T]])
// CHECK: mega.kernel "ReduceSum"(%[[T]])
func.func @kept(%x: tensor<2x3xf32>, %w: tensor<3xf32>, %b: tensor<3xf32>) {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [2, 3] f [1.0e-05] : (tensor<2x3xf32>, tensor<3xf32>, tensor<3xf32>) -> (tensor<2x3xf32>, tensor<2xf32>, tensor<2xf32>)
  %yb = mega.kernel "Cast"(%y#0) i [6] f [] : (tensor<2x3xf32>) -> tensor<2x3xbf16>
  %t = mega.kernel "Transpose"(%x) i [2, 2, 3, 1, 0] f [] : (tensor<2x3xf32>) -> tensor<3x2xf32>
  %tb = mega.kernel "Cast"(%t) i [6] f [] : (tensor<3x2xf32>) -> tensor<3x2xbf16>
  %s = mega.kernel "ReduceSum"(%t) i [3, 2, 0] f [] : (tensor<3x2xf32>) -> tensor<2xf32>
  mega.output "yb", %yb : tensor<2x3xbf16>
  mega.output "tb", %tb : tensor<3x2xbf16>
  mega.output "s", %s : tensor<2xf32>
  return
}

// RUN: mega-opt %s -split-input-file -mega-fuse-loss | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-fuse-loss=enable=false | FileCheck %s --check-prefix=OFF

// The training step's loss and its gradient: one CrossEntropyWithGrad at
// the CrossEntropy's place, its dlogits (bf16, over the logits' dtype) read
// by what read the gradient.
// CHECK-LABEL: func.func @loss
// CHECK: %[[S:.*]] = mega.kernel "Fill"
// CHECK: %[[F:.*]]:3 = mega.kernel "CrossEntropyWithGrad"(%arg0, %arg1, %[[S]]) i [16, 64] f [] : (tensor<16x64xbf16>, tensor<16xi32>, tensor<f32>) -> (tensor<f32>, tensor<16xf32>, tensor<16x64xbf16>)
// CHECK-NOT: "CrossEntropy
// CHECK: mega.output "loss", %[[F]]#0
// CHECK: mega.output "dlogits", %[[F]]#2
// OFF-LABEL: func.func @loss
// OFF: "CrossEntropy"
// OFF: "CrossEntropyGrad"
func.func @loss(%z: tensor<16x64xbf16>, %t: tensor<16xi32>) {
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %loss, %lse = mega.kernel "CrossEntropy"(%z, %t) i [16, 64] f [] : (tensor<16x64xbf16>, tensor<16xi32>) -> (tensor<f32>, tensor<16xf32>)
  %dz = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %one) i [16, 64] f [] : (tensor<16x64xbf16>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x64xbf16>
  mega.output "loss", %loss : tensor<f32>
  mega.output "dlogits", %dz : tensor<16x64xbf16>
  return
}

// -----

// Must not fuse: the seed is made after the CrossEntropy (the fused kernel
// would run before it), or a kernel between writes in place into the
// logits the gradient reads.
// CHECK-LABEL: func.func @seed_after
// CHECK: "CrossEntropy"
// CHECK: "CrossEntropyGrad"
// CHECK-LABEL: func.func @written_between
// CHECK: "CrossEntropy"
// CHECK: "Fill"
// CHECK: "CrossEntropyGrad"
func.func @seed_after(%z: tensor<16x64xf32>, %t: tensor<16xi32>) {
  %loss, %lse = mega.kernel "CrossEntropy"(%z, %t) i [16, 64] f [] : (tensor<16x64xf32>, tensor<16xi32>) -> (tensor<f32>, tensor<16xf32>)
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %dz = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %one) i [16, 64] f [] : (tensor<16x64xf32>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x64xf32>
  mega.output "loss", %loss : tensor<f32>
  mega.output "dlogits", %dz : tensor<16x64xf32>
  return
}
func.func @written_between(%z: tensor<16x64xf32>, %t: tensor<16xi32>, %one: tensor<f32>) {
  %loss, %lse = mega.kernel "CrossEntropy"(%z, %t) i [16, 64] f [] : (tensor<16x64xf32>, tensor<16xi32>) -> (tensor<f32>, tensor<16xf32>)
  mega.kernel "Fill"(%z) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<16x64xf32>) -> ()
  %dz = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %one) i [16, 64] f [] : (tensor<16x64xf32>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x64xf32>
  mega.output "loss", %loss : tensor<f32>
  mega.output "dlogits", %dz : tensor<16x64xf32>
  return
}

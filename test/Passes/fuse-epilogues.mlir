// RUN: mega-opt %s -split-input-file -mega-fuse-epilogues | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-fuse-epilogues=enable=false | FileCheck %s --check-prefix=OFF

// t + bias[col]: one MatMul with epilogue 1; the Elementwise is gone.
// CHECK-LABEL: func.func @bias
// CHECK-NEXT: %[[D:.*]] = mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 1] f [{{.*}}] : (tensor<4x2xf32>, tensor<2x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
// CHECK-NOT: "Elementwise"
// CHECK: mega.output "y", %[[D]]
// OFF-LABEL: func.func @bias
// OFF: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// OFF: "Elementwise"
func.func @bias(%a: tensor<4x2xf32>, %w: tensor<2x8xf32>, %b: tensor<8xf32>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y = mega.kernel "Elementwise"(%t, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  mega.output "y", %y : tensor<4x8xf32>
  return
}

// -----

// bias[col] + t, the bias first among the inputs and in the add (f32
// addition is commutative): the same epilogue; bf16 operands.
// CHECK-LABEL: func.func @bias_first
// CHECK-NEXT: mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 1, 1, 4, 2, 8, 0, 0, 0, 1] f [{{.*}}] : (tensor<2x4xbf16>, tensor<8x2xbf16>, tensor<8xf32>) -> tensor<32xf32>
// CHECK-NOT: "Elementwise"
func.func @bias_first(%a: tensor<2x4xbf16>, %w: tensor<8x2xbf16>, %b: tensor<8xf32>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 1, 1, 4, 2, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<2x4xbf16>, tensor<8x2xbf16>) -> tensor<4x8xf32>
  %y = mega.kernel "Elementwise"(%b, %t) i [32, 2, 1, 8, 32, 0, 3, 0, 0, 0, 5, 1, 0, 3, 2, 3, 5, 1, 2, 0, 0] f [] : (tensor<8xf32>, tensor<4x8xf32>) -> tensor<32xf32>
  mega.output "y", %y : tensor<32xf32>
  return
}

// -----

// (t + bias[col]) + residual: epilogue 2 (GPT's attention and MLP
// projections).
// CHECK-LABEL: func.func @residual
// CHECK-NEXT: %[[D:.*]] = mega.kernel "MatMul"(%arg0, %arg1, %arg2, %arg3) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 2] f [{{.*}}] : (tensor<4x2xf32>, tensor<2x8xf32>, tensor<8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK-NOT: "Elementwise"
func.func @residual(%a: tensor<4x2xf32>, %w: tensor<2x8xf32>, %b: tensor<8xf32>, %r: tensor<4x8xf32>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y = mega.kernel "Elementwise"(%t, %b, %r) i [32, 3, 1, 32, 8, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 0, 1, 2, 0, 3, 0, 1, 0, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  mega.output "y", %y : tensor<4x8xf32>
  return
}

// -----

// GELU keeping the pre-activation (GPT's c_fc): epilogue 3, D = the GELU
// output, aux = the pre-activation; the users follow.
// CHECK-LABEL: func.func @gelu
// CHECK-NEXT: %[[D:.*]]:2 = mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 3] f [{{.*}}] : (tensor<4x2xf32>, tensor<2x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK-NOT: "Elementwise"
// CHECK: mega.output "pre", %[[D]]#1
// CHECK: mega.output "act", %[[D]]#0
func.func @gelu(%a: tensor<4x2xf32>, %w: tensor<2x8xf32>, %b: tensor<8xf32>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %p, %g = mega.kernel "Elementwise"(%t, %b) i [32, 2, 2, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0, 15, 0, 0, 0, 1, 0, 1, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>)
  mega.output "pre", %p : tensor<4x8xf32>
  mega.output "act", %g : tensor<4x8xf32>
  return
}

// -----

// The GELU output stored first, the pre-activation second: still epilogue 3.
// CHECK-LABEL: func.func @gelu_swapped
// CHECK-NEXT: %[[D:.*]]:2 = mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 3]
// CHECK: mega.output "act", %[[D]]#0
// CHECK: mega.output "pre", %[[D]]#1
func.func @gelu_swapped(%a: tensor<4x2xf32>, %w: tensor<2x8xf32>, %b: tensor<8xf32>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %g, %p = mega.kernel "Elementwise"(%t, %b) i [32, 2, 2, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 15, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>)
  mega.output "act", %g : tensor<4x8xf32>
  mega.output "pre", %p : tensor<4x8xf32>
  return
}

// -----

// Near misses, each kept as it is: the product has a second user; t +
// (bias + r) (another association); t + r with no bias; a Mul in the
// program; beta 1; batch 2; GELU without the pre-activation kept.
// CHECK-LABEL: func.func @near_misses
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Elementwise"
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Elementwise"
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Elementwise"
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Elementwise"
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Elementwise"
// CHECK: "MatMul"(%arg4, %arg5) i [2, 4, 8, 2, 0, 0, 2, 8, 8, 8, 16, 32] f
// CHECK: "Elementwise"
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Elementwise"
func.func @near_misses(%a: tensor<4x2xf32>, %w: tensor<2x8xf32>, %b: tensor<8xf32>, %r: tensor<4x8xf32>, %ab: tensor<2x4x2xf32>, %wb: tensor<2x2x8xf32>, %bb: tensor<16xf32>) {
  %t0 = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y0 = mega.kernel "Elementwise"(%t0, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  mega.output "t0", %t0 : tensor<4x8xf32>
  mega.output "y0", %y0 : tensor<4x8xf32>
  %t1 = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y1 = mega.kernel "Elementwise"(%t1, %b, %r) i [32, 3, 1, 32, 8, 32, 0, 0, 0, 0, 0, 1, 1, 0, 0, 2, 2, 0, 3, 1, 1, 2, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  mega.output "y1", %y1 : tensor<4x8xf32>
  %t2 = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y2 = mega.kernel "Elementwise"(%t2, %r) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  mega.output "y2", %y2 : tensor<4x8xf32>
  %t3 = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y3 = mega.kernel "Elementwise"(%t3, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 5, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  mega.output "y3", %y3 : tensor<4x8xf32>
  %t4 = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 1.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y4 = mega.kernel "Elementwise"(%t4, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  mega.output "y4", %y4 : tensor<4x8xf32>
  %t5 = mega.kernel "MatMul"(%ab, %wb) i [2, 4, 8, 2, 0, 0, 2, 8, 8, 8, 16, 32] f [1.0, 0.0] : (tensor<2x4x2xf32>, tensor<2x2x8xf32>) -> tensor<2x4x8xf32>
  %y5 = mega.kernel "Elementwise"(%t5, %bb) i [64, 2, 1, 64, 16, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<2x4x8xf32>, tensor<16xf32>) -> tensor<2x4x8xf32>
  mega.output "y5", %y5 : tensor<2x4x8xf32>
  %t6 = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y6 = mega.kernel "Elementwise"(%t6, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 15, 0, 0, 0, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  mega.output "y6", %y6 : tensor<4x8xf32>
  return
}

// -----

// A kernel between the two writes in place (mega.dests) into what the
// fused kernel would read (here the bias, as well it could be A or B, which
// the fused product at the Elementwise's place would then read after the
// write): nothing is fused.
// CHECK-LABEL: func.func @in_place_between
// CHECK: "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f
// CHECK: "Fill"
// CHECK: "Elementwise"
func.func @in_place_between(%a: tensor<4x2xf32>, %w: tensor<2x8xf32>, %b: tensor<8xf32>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  mega.kernel "Fill"(%b) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %y = mega.kernel "Elementwise"(%t, %b) i [32, 2, 1, 32, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  mega.output "y", %y : tensor<4x8xf32>
  return
}

// -----

// The GELU gradient (GPT's c_proj dX product and the gradient at c_fc's
// pre-activation x, here bf16): epilogue 4, MatMul(A, B, x). A kernel that
// writes in place between them into memory neither reads (a weight
// gradient accumulating into its state) does not stop the fusion.
// CHECK-LABEL: func.func @gelu_grad
// CHECK: mega.state "w" {role = "grad"}
// CHECK-NEXT: "MatMul"({{.*}}) {{.*}}{mega.dests = 1 : i64}
// CHECK-NEXT: %[[D:.*]] = mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 4] f [{{.*}}] : (tensor<4x2xbf16>, tensor<2x8xbf16>, tensor<4x8xbf16>) -> tensor<4x8xf32>
// CHECK-NOT: "Elementwise"
// CHECK: mega.output "dpre", %[[D]]
// OFF-LABEL: func.func @gelu_grad
// OFF: "Elementwise"
func.func @gelu_grad(%a: tensor<4x2xbf16>, %w: tensor<2x8xbf16>, %x: tensor<4x8xbf16>, %wg: tensor<4x2xbf16>) {
  %t = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>) -> tensor<4x8xf32>
  %g = mega.state "w" {role = "grad"} : tensor<2x2xf32>
  mega.kernel "MatMul"(%wg, %a, %g) i [1, 2, 2, 4, 1, 0, 2, 2, 2, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<4x2xbf16>, tensor<4x2xbf16>, tensor<2x2xf32>) -> ()
  %d = mega.kernel "Elementwise"(%x, %t) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 16, 2, 0, 1, 1, 2, 0, 0] f [] : (tensor<4x8xbf16>, tensor<4x8xf32>) -> tensor<4x8xf32>
  mega.output "dpre", %d : tensor<4x8xf32>
  return
}

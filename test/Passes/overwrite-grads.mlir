// RUN: mega-opt %s -mega-overwrite-grads=microbatches=1 | FileCheck %s
// RUN: mega-opt %s -mega-overwrite-grads=microbatches=2 | FileCheck %s --check-prefix=TWO

// One train run per step: the first kernel adding into each whole gradient
// overwrites it (MatMul beta 1 -> 0, the bias-gradient epilogue's g, the
// norm's dw/db and dsum, a ReduceSum); later adds into it stay adds; a
// gradient whose first use is a read or a view is left alone (the Fill of
// "v" stays), and the optimizer stops clearing the overwritten ones.
// CHECK-LABEL: func.func @train
// CHECK: "MatMul"(%arg0, %arg1, %{{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.000000e+00, 0.000000e+00]
// CHECK: "MatMul"(%arg0, %arg1, %{{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.000000e+00, 1.000000e+00]
// CHECK: "MatMul"(%arg0, %arg1, %{{.*}}, %{{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0] f [1.000000e+00, 0.000000e+00]
// CHECK: "LayerNormGrad"({{.*}}) i [16, 8, 1, 0, 0]
// CHECK: "ReduceSum"({{.*}}) i [16, 8, 1]
// CHECK: "ReduceSum"(%arg2, %[[VV:.*]]) i [16, 8, 1]
// CHECK-LABEL: func.func @optimizer
// CHECK: "Fill"(%[[V:.*]]) i [] f [0.000000e+00]
// CHECK-NOT: "Fill"
// CHECK: "AdamWMulti"({{.*}}) i [2, 0]
// CHECK: "AdamWMulti"({{.*}}) i [1, 1]
// TWO-LABEL: func.func @train
// TWO: f [1.000000e+00, 1.000000e+00]
// TWO: i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1] f [1.000000e+00, 1.000000e+00]
// TWO: "LayerNormGrad"({{.*}}) i [16, 8, 1, 1, 1]
// TWO-LABEL: func.func @optimizer
// TWO: "Fill"
// TWO: "Fill"
// TWO: "AdamWMulti"({{.*}}) i [2, 1]
func.func @train(%x: tensor<16x4xbf16>, %dy: tensor<16x8xbf16>, %r: tensor<16x8xf32>) {
  %w = mega.state "w" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %w) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>) -> ()
  %w2 = mega.state "w" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %w2) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>) -> ()
  %u = mega.state "u" {role = "grad"} : tensor<4x8xf32>
  %ub = mega.state "u.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "MatMul"(%x, %dy, %u, %ub) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1] f [1.0, 1.0] {mega.dests = 2 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>, tensor<8xf32>) -> ()
  %g = mega.state "ln.weight" {role = "grad"} : tensor<8xf32>
  %b = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
  %p = mega.state "p.bias" {role = "grad"} : tensor<8xf32>
  %copy = mega.empty : tensor<16x8xbf16>
  %w8 = mega.empty : tensor<8xf32>
  %m = mega.empty : tensor<16xf32>
  mega.kernel "LayerNormGrad"(%dy, %r, %w8, %m, %m, %r, %g, %b, %copy, %p) i [16, 8, 1, 1, 1] f [] {mega.dests = 5 : i64} : (tensor<16x8xbf16>, tensor<16x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<16x8xbf16>, tensor<8xf32>) -> ()
  %p2 = mega.state "p.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%r, %p2) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  %v = mega.state "v" {role = "grad"} : tensor<8xf32>
  %vv = mega.view %v offset 0 : tensor<8xf32> -> tensor<8xf32>
  mega.kernel "ReduceSum"(%r, %vv) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  return
}
func.func @optimizer(%lr: tensor<f32>, %step: tensor<f32>, %coef: tensor<f32>) {
  %v = mega.state "v" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%v) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %w = mega.state "w" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "Fill"(%w) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<4x8xf32>) -> ()
  %wp = mega.param "w" [4, 8] init zeros : tensor<4x8xf32>
  %wm = mega.state "w" {role = "adam_m"} : tensor<4x8xf32>
  %wv = mega.state "w" {role = "adam_v"} : tensor<4x8xf32>
  %up = mega.param "u" [4, 8] init zeros : tensor<4x8xf32>
  %ug = mega.state "u" {role = "grad"} : tensor<4x8xf32>
  %um = mega.state "u" {role = "adam_m"} : tensor<4x8xf32>
  %uv = mega.state "u" {role = "adam_v"} : tensor<4x8xf32>
  mega.kernel "AdamWMulti"(%lr, %step, %coef, %wp, %w, %wm, %wv, %up, %ug, %um, %uv) i [2, 1] f [0.9, 0.999, 1.0e-08, 0.01, 0.01] {mega.dests = 0 : i64} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) -> ()
  %vp = mega.param "v" [8] init zeros : tensor<8xf32>
  %vm = mega.state "v" {role = "adam_m"} : tensor<8xf32>
  %vw = mega.state "v" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamWMulti"(%lr, %step, %coef, %vp, %v, %vm, %vw) i [1, 1] f [0.9, 0.999, 1.0e-08, 0.01] {mega.dests = 0 : i64} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  return
}

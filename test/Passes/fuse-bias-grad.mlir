// RUN: mega-opt %s -split-input-file -mega-fuse-bias-grad | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-fuse-bias-grad=enable=false | FileCheck %s --check-prefix=OFF

// A Linear's backward in a bf16 plan: the bias gradient (a ReduceSum of dy
// in place) and the weight gradient (x^T dy added in place, dy through a
// view as B). One MatMul with epilogue 5 adds both; the ReduceSum goes.
// CHECK-LABEL: func.func @linear
// CHECK: %[[GB:.*]] = mega.state "fc.bias" {role = "grad"}
// CHECK-NOT: "ReduceSum"
// CHECK: %[[B:.*]] = mega.view %arg1 offset 0
// CHECK: %[[GW:.*]] = mega.state "fc.weight" {role = "grad"}
// CHECK: mega.kernel "MatMul"(%arg0, %[[B]], %[[GW]], %[[GB]]) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1] f [1.000000e+00, 1.000000e+00] {mega.dests = 2 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>, tensor<8xf32>) -> ()
// CHECK-NOT: "ReduceSum"
// OFF-LABEL: func.func @linear
// OFF: "ReduceSum"
// OFF: "MatMul"({{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f
func.func @linear(%x: tensor<16x4xbf16>, %dy: tensor<2x8x8xbf16>) {
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dy, %gb) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<2x8x8xbf16>, tensor<8xf32>) -> ()
  %b = mega.view %dy offset 0 : tensor<2x8x8xbf16> -> tensor<16x8xbf16>
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %b, %gw) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>) -> ()
  return
}

// -----

// The weight gradient first, the bias gradient's state reference after it:
// the reference is named again before the fused MatMul.
// CHECK-LABEL: func.func @product_first
// CHECK: %[[GW:.*]] = mega.state "fc.weight" {role = "grad"}
// CHECK: %[[GB:.*]] = mega.state "fc.bias" {role = "grad"}
// CHECK: mega.kernel "MatMul"(%arg0, %arg1, %[[GW]], %[[GB]]) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1] f [1.000000e+00, 1.000000e+00] {mega.dests = 2 : i64}
// CHECK-NOT: mega.state "fc.bias"
// CHECK-NOT: "ReduceSum"
func.func @product_first(%x: tensor<16x4xf32>, %dy: tensor<16x8xf32>) {
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %gw) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>) -> ()
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dy, %gb) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  return
}

// -----

// Refused: a kernel between them writes into dy (the sums would read the
// new values).
// CHECK-LABEL: func.func @dy_written_between
// CHECK: "ReduceSum"
// CHECK: "MatMul"({{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f
func.func @dy_written_between(%x: tensor<16x4xf32>, %dy: tensor<16x8xf32>) {
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dy, %gb) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  mega.kernel "Fill"(%dy) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<16x8xf32>) -> ()
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %gw) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>) -> ()
  return
}

// -----

// Refused: another kernel adds into the same bias gradient between them
// (moving the sum would change the order of the adds).
// CHECK-LABEL: func.func @bias_touched_between
// CHECK-COUNT-2: "ReduceSum"
// CHECK: "MatMul"({{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f
func.func @bias_touched_between(%x: tensor<16x4xf32>, %dy: tensor<16x8xf32>, %dz: tensor<16x8xf32>) {
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dy, %gb) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  %gb2 = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dz, %gb2) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %gw) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>) -> ()
  return
}

// -----

// Refused: B transposed, alpha not 1, B another part of dy's buffer, a
// MatMul writing a fresh result. Each keeps its ReduceSum.
// CHECK-LABEL: func.func @not_the_weight_gradient
// CHECK-COUNT-4: "ReduceSum"
// CHECK-NOT: 5, 1] f
func.func @not_the_weight_gradient(%x: tensor<16x4xf32>, %dy: tensor<16x8xf32>, %w: tensor<8x16xf32>, %dz: tensor<32x8xf32>) {
  %g1 = mega.state "b1" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%w, %g1) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<8x16xf32>, tensor<8xf32>) -> ()
  %gw1 = mega.state "w1" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %w, %gw1) i [1, 4, 8, 16, 1, 1, 4, 16, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xf32>, tensor<8x16xf32>, tensor<4x8xf32>) -> ()
  %g2 = mega.state "b2" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dy, %g2) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  %gw2 = mega.state "w2" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %gw2) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [0.5, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>) -> ()
  %g3 = mega.state "b3" {role = "grad"} : tensor<8xf32>
  %lo = mega.view %dz offset 0 : tensor<32x8xf32> -> tensor<16x8xf32>
  %hi = mega.view %dz offset 512 : tensor<32x8xf32> -> tensor<16x8xf32>
  mega.kernel "ReduceSum"(%lo, %g3) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  %gw3 = mega.state "w3" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %hi, %gw3) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>) -> ()
  %g4 = mega.state "b4" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%dy, %g4) i [16, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<16x8xf32>, tensor<8xf32>) -> ()
  %p = mega.kernel "MatMul"(%x, %dy) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<4x8xf32>
  mega.output "p", %p : tensor<4x8xf32>
  return
}

// RUN: mega-opt %s -split-input-file -mega-ones-column | FileCheck %s

// A Linear fed by a LayerNorm, one micro-batch (the gradients overwritten):
// the norm writes rows of 8 (a 1 in column 4, zeros after), the forward
// product reads them with lda 8, and the weight gradient is a plain product
// of 8 rows straight into the weight gradient's buffer, which gets a tail
// of 4 rows (128 bytes): row 4, in the tail, is copied into the bias
// gradient.
// CHECK-LABEL: func.func @overwrite
// CHECK: %[[Y:.*]]:3 = mega.kernel "LayerNorm"(%arg0, %arg1, %arg2) i [16, 4, 8] f [1.000000e-05] : (tensor<2x8x4xbf16>, tensor<4xf32>, tensor<4xf32>) -> (tensor<2x8x8xbf16>, tensor<16xf32>, tensor<16xf32>)
// CHECK: %[[V:.*]] = mega.view %[[Y]]#0 offset 0 : tensor<2x8x8xbf16> -> tensor<16x8xbf16>
// CHECK: mega.kernel "MatMul"(%[[V]], %arg3, %arg4) i [1, 16, 8, 4, 0, 0, 8, 8, 8, 0, 0, 0, 1]
// CHECK: %[[GB:.*]] = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
// CHECK: %[[GW:.*]] = mega.state "fc.weight" {mega.tail_bytes = 128 : i64, role = "grad"} : tensor<4x8xf32>
// CHECK: %[[S:.*]] = mega.view %[[GW]] offset 0 : tensor<4x8xf32> -> tensor<8x8xf32>
// CHECK: mega.kernel "MatMul"(%[[V]], %arg5, %[[S]]) i [1, 8, 8, 16, 1, 0, 8, 8, 8, 0, 0, 0] f [1.000000e+00, 0.000000e+00] {mega.dests = 1 : i64} : (tensor<16x8xbf16>, tensor<16x8xbf16>, tensor<8x8xf32>) -> ()
// CHECK-NEXT: %[[SB:.*]] = mega.view %[[S]] offset 128 : tensor<8x8xf32> -> tensor<8xf32>
// CHECK-NEXT: mega.kernel "Copy"(%[[SB]], %[[GB]]) i [] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>) -> ()
// CHECK-NOT: "Copy"
// CHECK-NOT: i [{{.*}}, 5, 0]
func.func @overwrite(%x: tensor<2x8x4xbf16>, %w: tensor<4xf32>, %b: tensor<4xf32>,
                     %wf: tensor<4x8xbf16>, %bf: tensor<8xbf16>, %dy: tensor<16x8xbf16>) {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [16, 4] f [1.0e-05] : (tensor<2x8x4xbf16>, tensor<4xf32>, tensor<4xf32>) -> (tensor<2x8x4xbf16>, tensor<16xf32>, tensor<16xf32>)
  %v = mega.view %y#0 offset 0 : tensor<2x8x4xbf16> -> tensor<16x4xbf16>
  %h = mega.kernel "MatMul"(%v, %wf, %bf) i [1, 16, 8, 4, 0, 0, 4, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<16x4xbf16>, tensor<4x8xbf16>, tensor<8xbf16>) -> tensor<16x8xbf16>
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%v, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0] f [1.0, 0.0] {mega.dests = 2 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>, tensor<8xf32>) -> ()
  return
}

// -----

// Several micro-batches (the gradients accumulated: beta 1, accumulate 1):
// the rows are added in place by Elementwise (load, load, add, store). f32
// rows of 4 columns pad to 8 too.
// CHECK-LABEL: func.func @accumulate
// CHECK: mega.kernel "LayerNorm"(%arg0, %arg1, %arg2) i [16, 4, 8] f {{.*}} -> (tensor<16x8xf32>, tensor<16xf32>, tensor<16xf32>)
// CHECK: mega.kernel "MatMul"({{.*}}) i [1, 8, 8, 16, 1, 0, 8, 8, 8, 0, 0, 0] f [1.000000e+00, 0.000000e+00] {mega.dests = 1 : i64}
// CHECK: %[[SW:.*]] = mega.view %[[S:.*]] offset 0 : tensor<8x8xf32> -> tensor<4x8xf32>
// CHECK: mega.kernel "Elementwise"(%[[SW]], %[[GW:.*]], %[[GW]]) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64}
// CHECK: %[[SB:.*]] = mega.view %[[S]] offset 128 : tensor<8x8xf32> -> tensor<8xf32>
// CHECK: mega.kernel "Elementwise"(%[[SB]], %[[GB:.*]], %[[GB]]) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64}
func.func @accumulate(%x: tensor<16x4xf32>, %w: tensor<4xf32>, %b: tensor<4xf32>, %dy: tensor<16x8xf32>) {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [16, 4] f [1.0e-05] : (tensor<16x4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<16x4xf32>, tensor<16xf32>, tensor<16xf32>)
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%y#0, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 1] f [1.0, 1.0] {mega.dests = 2 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>, tensor<8xf32>) -> ()
  return
}

// -----

// Refused: the norm's output has another reader (a Cast would read the
// padded rows as if they were rows of 4).
// CHECK-LABEL: func.func @other_reader
// CHECK: "LayerNorm"({{.*}}) i [16, 4] f
// CHECK: "MatMul"({{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0]
// CHECK-NOT: "Copy"
func.func @other_reader(%x: tensor<16x4xf32>, %w: tensor<4xf32>, %b: tensor<4xf32>, %dy: tensor<16x8xbf16>) -> tensor<16x4xf32> {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [16, 4] f [1.0e-05] : (tensor<16x4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<16x4xbf16>, tensor<16xf32>, tensor<16xf32>)
  %c = mega.kernel "Cast"(%y#0) i [64] f [] : (tensor<16x4xbf16>) -> tensor<16x4xf32>
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%y#0, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0] f [1.0, 0.0] {mega.dests = 2 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>, tensor<8xf32>) -> ()
  return %c : tensor<16x4xf32>
}

// -----

// Refused: x is not a norm's output (nothing could write its ones column).
// CHECK-LABEL: func.func @not_a_norm
// CHECK: "MatMul"({{.*}}) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0]
// CHECK-NOT: "Copy"
func.func @not_a_norm(%x: tensor<16x4xbf16>, %dy: tensor<16x8xbf16>) {
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%x, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0] f [1.0, 0.0] {mega.dests = 2 : i64} : (tensor<16x4xbf16>, tensor<16x8xbf16>, tensor<4x8xf32>, tensor<8xf32>) -> ()
  return
}

// -----

// Data parallelism (mesh axis 1 of 2): the buckets place the gradients back
// to back, so no tail: the product goes to scratch and both rows are copied.
// CHECK-LABEL: func.func @data_parallel
// CHECK-NOT: mega.tail_bytes
// CHECK: %[[S:.*]] = mega.empty : tensor<8x8xf32>
// CHECK: mega.kernel "MatMul"({{.*}}, %[[S]]) i [1, 8, 8, 16, 1, 0, 8, 8, 8, 0, 0, 0]
// CHECK: mega.kernel "Copy"
// CHECK: mega.kernel "Copy"
module attributes {mega.mesh = array<i64: 1, 2>} {
func.func @data_parallel(%x: tensor<16x4xf32>, %w: tensor<4xf32>, %b: tensor<4xf32>, %dy: tensor<16x8xf32>) {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [16, 4] f [1.0e-05] : (tensor<16x4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<16x4xf32>, tensor<16xf32>, tensor<16xf32>)
  %gb = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  %gw = mega.state "fc.weight" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "MatMul"(%y#0, %dy, %gw, %gb) i [1, 4, 8, 16, 1, 0, 4, 8, 8, 0, 0, 0, 5, 0] f [1.0, 0.0] {mega.dests = 2 : i64} : (tensor<16x4xf32>, tensor<16x8xf32>, tensor<4x8xf32>, tensor<8xf32>) -> ()
  return
}
}

// RUN: mega-opt %s -split-input-file -mega-assign-buffers | FileCheck %s --check-prefix=NONE
// RUN: mega-opt %s -split-input-file -mega-assign-buffers=wgrad-slack=2 | FileCheck %s

// A weight gradient's product (bf16 operands, no epilogue, into a
// persistent gradient) reads x and dy. Without slack the next kernel's
// result takes x's bytes at once; with wgrad-slack=2 neither x's nor dy's
// bytes are written by the two kernels after the product, and the third
// reuses them.
// NONE-LABEL: func.func @wgrad
// NONE-SAME: mega.arena_bytes = 2048 : i64
// NONE: %[[X:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 0>}
// NONE: %[[DY:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 1024>}
// NONE: "MatMul"(%[[X]], %[[DY]]
// NONE-NEXT: "Copy"(%[[DY]]) i [] f [] {mega.offset = array<i64: 0>}
// CHECK-LABEL: func.func @wgrad
// CHECK-SAME: mega.arena_bytes = 4096 : i64
// CHECK: %[[X:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: %[[DY:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 1024>}
// CHECK: "MatMul"(%[[X]], %[[DY]]
// CHECK-NEXT: %[[A:.*]] = mega.kernel "Copy"(%[[DY]]) i [] f [] {mega.offset = array<i64: 2048>}
// CHECK-NEXT: %[[B:.*]] = mega.kernel "Copy"(%[[A]]) i [] f [] {mega.offset = array<i64: 3072>}
// CHECK-NEXT: mega.kernel "Copy"(%[[B]]) i [] f [] {mega.offset = array<i64: 0>}
func.func @wgrad(%in: tensor<32x16xbf16>) {
  %x = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %dy = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %w = mega.state "w" {role = "grad"} : tensor<16x16xf32>
  mega.kernel "MatMul"(%x, %dy, %w) i [1, 16, 16, 32, 1, 0, 16, 16, 16, 0, 0, 0] f [1.0, 0.0] {mega.dests = 1 : i64} : (tensor<32x16xbf16>, tensor<32x16xbf16>, tensor<16x16xf32>) -> ()
  %a = mega.kernel "Copy"(%dy) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %b = mega.kernel "Copy"(%a) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %c = mega.kernel "Copy"(%b) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %d = mega.kernel "Copy"(%c) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  mega.output "y", %d : tensor<32x16xbf16>
  return
}

// -----

// An f32 product (cuBLAS, not the side stream's): no slack, the kernel after it takes x's bytes.
// CHECK-LABEL: func.func @f32_product
// CHECK: %[[X:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: %[[DY:.*]] = mega.kernel "Copy"(%arg0)
// CHECK: "MatMul"(%[[X]], %[[DY]]
// CHECK: mega.kernel "Copy"(%[[DY]]) i [] f [] {mega.offset = array<i64: 0>}
func.func @f32_product(%in: tensor<32x16xf32>) {
  %x = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xf32>) -> tensor<32x16xf32>
  %dy = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xf32>) -> tensor<32x16xf32>
  %w = mega.state "w" {role = "grad"} : tensor<16x16xf32>
  mega.kernel "MatMul"(%x, %dy, %w) i [1, 16, 16, 32, 1, 0, 16, 16, 16, 0, 0, 0] f [1.0, 0.0] {mega.dests = 1 : i64} : (tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x16xf32>) -> ()
  %a = mega.kernel "Copy"(%dy) i [] f [] : (tensor<32x16xf32>) -> tensor<32x16xf32>
  %b = mega.kernel "Copy"(%a) i [] f [] : (tensor<32x16xf32>) -> tensor<32x16xf32>
  %c = mega.kernel "Copy"(%b) i [] f [] : (tensor<32x16xf32>) -> tensor<32x16xf32>
  %d = mega.kernel "Copy"(%c) i [] f [] : (tensor<32x16xf32>) -> tensor<32x16xf32>
  mega.output "y", %d : tensor<32x16xf32>
  return
}

// -----

// A product with the bias-gradient epilogue: no slack, the kernel after it takes x's bytes.
// CHECK-LABEL: func.func @bias_grad_epilogue
// CHECK: %[[X:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: %[[DY:.*]] = mega.kernel "Copy"(%arg0)
// CHECK: "MatMul"(%[[X]], %[[DY]]
// CHECK: mega.kernel "Copy"(%[[DY]]) i [] f [] {mega.offset = array<i64: 0>}
func.func @bias_grad_epilogue(%in: tensor<32x16xbf16>) {
  %x = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %dy = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %w = mega.state "w" {role = "grad"} : tensor<16x16xf32>
  %wb = mega.state "w.bias" {role = "grad"} : tensor<16xf32>
  mega.kernel "MatMul"(%x, %dy, %w, %wb) i [1, 16, 16, 32, 1, 0, 16, 16, 16, 0, 0, 0, 5, 0] f [1.0, 0.0] {mega.dests = 2 : i64} : (tensor<32x16xbf16>, tensor<32x16xbf16>, tensor<16x16xf32>, tensor<16xf32>) -> ()
  %a = mega.kernel "Copy"(%dy) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %b = mega.kernel "Copy"(%a) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %c = mega.kernel "Copy"(%b) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %d = mega.kernel "Copy"(%c) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  mega.output "y", %d : tensor<32x16xbf16>
  return
}

// -----

// A product whose result is no persistent tensor: no slack, the kernel after it takes x's bytes.
// CHECK-LABEL: func.func @arena_result
// CHECK: %[[X:.*]] = mega.kernel "Copy"(%arg0) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: %[[DY:.*]] = mega.kernel "Copy"(%arg0)
// CHECK: "MatMul"(%[[X]], %[[DY]]
// CHECK: mega.kernel "Copy"(%[[DY]]) i [] f [] {mega.offset = array<i64: 0>}
func.func @arena_result(%in: tensor<32x16xbf16>) {
  %x = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %dy = mega.kernel "Copy"(%in) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %t = mega.kernel "MatMul"(%x, %dy) i [1, 16, 16, 32, 1, 0, 16, 16, 16, 0, 0, 0] f [1.0, 0.0] : (tensor<32x16xbf16>, tensor<32x16xbf16>) -> tensor<16x16xf32>
  mega.output "t", %t : tensor<16x16xf32>
  %a = mega.kernel "Copy"(%dy) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %b = mega.kernel "Copy"(%a) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %c = mega.kernel "Copy"(%b) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  %d = mega.kernel "Copy"(%c) i [] f [] : (tensor<32x16xbf16>) -> tensor<32x16xbf16>
  mega.output "y", %d : tensor<32x16xbf16>
  return
}

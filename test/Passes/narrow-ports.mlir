// RUN: mega-opt %s -split-input-file -mega-narrow-ports | FileCheck %s

// A port whose producer widens a bf16 value carries that value: the reader's
// input is bf16, its bf16 cast reads the input itself, and its f32 reader a
// widening cast.
// CHECK-LABEL: func.func @widened
// CHECK: %[[B:.*]] = mega.cast %arg0 : tensor<4x8xf32> -> tensor<4x8xbf16>
// CHECK: mega.output "pipe.0", %[[B]] : tensor<4x8xbf16>
// CHECK-LABEL: func.func @widened_reader
// CHECK: %[[IN:.*]] = mega.input "pipe.0" [4, 8] : tensor<4x8xbf16>
// CHECK-NEXT: %[[W:.*]] = mega.cast %[[IN]] : tensor<4x8xbf16> -> tensor<4x8xf32>
// CHECK: mega.matmul %[[IN]], %{{.*}} : tensor<4x8xbf16>
// CHECK: mega.output "y", %[[W]] : tensor<4x8xf32>
func.func @widened(%x: tensor<4x8xf32>) {
  %b = mega.cast %x : tensor<4x8xf32> -> tensor<4x8xbf16>
  %w = mega.cast %b : tensor<4x8xbf16> -> tensor<4x8xf32>
  mega.output "pipe.0", %w : tensor<4x8xf32>
  return
}
func.func @widened_reader(%m: tensor<8x2xbf16>) {
  %in = mega.input "pipe.0" [4, 8] : tensor<4x8xf32>
  %c = mega.cast %in : tensor<4x8xf32> -> tensor<4x8xbf16>
  %p = mega.matmul %c, %m : tensor<4x8xbf16>, tensor<8x2xbf16> -> tensor<4x2xf32>
  mega.output "y", %in : tensor<4x8xf32>
  mega.output "p", %p : tensor<4x2xf32>
  return
}

// -----

// A port every reader only rounds carries the producer's bf16 cast (a new
// one here); a port one reader needs in f32 stays f32; a name that is not a
// pipeline port is left alone.
// CHECK-LABEL: func.func @rounded
// CHECK: %[[Y:.*]] = mega.matmul
// CHECK-NEXT: %[[YB:.*]] = mega.cast %[[Y]] : tensor<4x2xf32> -> tensor<4x2xbf16>
// CHECK: mega.output "pipe.1", %[[YB]] : tensor<4x2xbf16>
// CHECK: mega.output "pipe.2", %[[Y]] : tensor<4x2xf32>
// CHECK: mega.output "loss", %[[Y]] : tensor<4x2xf32>
// CHECK-LABEL: func.func @rounded_reader
// CHECK: %[[IN:.*]] = mega.input "pipe.1" [4, 2] : tensor<4x2xbf16>
// CHECK-NOT: mega.cast %[[IN]]
// CHECK: mega.matmul %[[IN]],
// CHECK: mega.input "pipe.2" [4, 2] : tensor<4x2xf32>
func.func @rounded(%x: tensor<4x8xbf16>, %m: tensor<8x2xbf16>) {
  %y = mega.matmul %x, %m : tensor<4x8xbf16>, tensor<8x2xbf16> -> tensor<4x2xf32>
  mega.output "pipe.1", %y : tensor<4x2xf32>
  mega.output "pipe.2", %y : tensor<4x2xf32>
  mega.output "loss", %y : tensor<4x2xf32>
  return
}
func.func @rounded_reader(%n: tensor<2x3xbf16>) {
  %in = mega.input "pipe.1" [4, 2] : tensor<4x2xf32>
  %c = mega.cast %in : tensor<4x2xf32> -> tensor<4x2xbf16>
  %p = mega.matmul %c, %n : tensor<4x2xbf16>, tensor<2x3xbf16> -> tensor<4x3xf32>
  %in2 = mega.input "pipe.2" [4, 2] : tensor<4x2xf32>
  %s = mega.add %in2, %in2 : tensor<4x2xf32>, tensor<4x2xf32> -> tensor<4x2xf32>
  mega.output "p", %p : tensor<4x3xf32>
  mega.output "s", %s : tensor<4x2xf32>
  return
}

// -----

// Ports left f32: a reshape (it may become a view of another buffer at
// kernel level), and a bf16 value another port already carries.
// CHECK-LABEL: func.func @kept
// CHECK: mega.output "pipe.3", %{{.*}} : tensor<32xf32>
// CHECK: mega.output "pipe.4", %[[B:.*]] : tensor<4x8xbf16>
// CHECK: mega.output "pipe.5", %{{.*}} : tensor<4x8xf32>
func.func @kept(%x: tensor<4x8xf32>) {
  %r = mega.reshape %x : tensor<4x8xf32> -> tensor<32xf32>
  mega.output "pipe.3", %r : tensor<32xf32>
  %b = mega.cast %x : tensor<4x8xf32> -> tensor<4x8xbf16>
  %w = mega.cast %b : tensor<4x8xbf16> -> tensor<4x8xf32>
  mega.output "pipe.4", %w : tensor<4x8xf32>
  %w2 = mega.cast %b : tensor<4x8xbf16> -> tensor<4x8xf32>
  mega.output "pipe.5", %w2 : tensor<4x8xf32>
  return
}
func.func @kept_reader() {
  %a = mega.input "pipe.3" [32] : tensor<32xf32>
  %ab = mega.cast %a : tensor<32xf32> -> tensor<32xbf16>
  %b = mega.input "pipe.4" [4, 8] : tensor<4x8xf32>
  %c = mega.input "pipe.5" [4, 8] : tensor<4x8xf32>
  mega.output "a", %ab : tensor<32xbf16>
  mega.output "b", %b : tensor<4x8xf32>
  mega.output "c", %c : tensor<4x8xf32>
  return
}

// -----

// A reader left dead by mixed precision (an f32 reshape nothing reads) does
// not keep a port f32: it is erased first, and the port carries bf16.
// CHECK-LABEL: func.func @dead
// CHECK: mega.output "pipe.6", %{{.*}} : tensor<4x8xbf16>
// CHECK-LABEL: func.func @dead_reader
// CHECK: %[[IN:.*]] = mega.input "pipe.6" [4, 8] : tensor<4x8xbf16>
// CHECK-NOT: mega.reshape
// CHECK: mega.output "a", %[[IN]] : tensor<4x8xbf16>
func.func @dead(%x: tensor<4x8xbf16>, %m: tensor<8x8xbf16>) {
  %y = mega.matmul %x, %m : tensor<4x8xbf16>, tensor<8x8xbf16> -> tensor<4x8xf32>
  mega.output "pipe.6", %y : tensor<4x8xf32>
  return
}
func.func @dead_reader() {
  %a = mega.input "pipe.6" [4, 8] : tensor<4x8xf32>
  %ab = mega.cast %a : tensor<4x8xf32> -> tensor<4x8xbf16>
  %r = mega.reshape %a : tensor<4x8xf32> -> tensor<32xf32>
  mega.output "a", %ab : tensor<4x8xbf16>
  return
}

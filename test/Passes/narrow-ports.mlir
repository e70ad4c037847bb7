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

// Layout ops on a reader's input (mega-port-sources has the readers cut
// attention's q, k and v out of the fused projection's port): every reader
// only rounds the parts, so the port carries the value's bf16 cast (right
// before the output, after the value's other readers) and the layout ops
// move bf16 elements. A bf16 value another port already carries ("pipe.5"
// would carry the same cast) keeps its port f32.
// CHECK-LABEL: func.func @layout
// CHECK: mega.gelu %arg0
// CHECK: %[[B:.*]] = mega.cast %arg0 : tensor<4x6xf32> -> tensor<4x6xbf16>
// CHECK-NEXT: mega.output "pipe.3", %[[B]] : tensor<4x6xbf16>
// CHECK: mega.output "pipe.5", %{{.*}} : tensor<4x6xf32>
// CHECK-LABEL: func.func @layout_reader
// CHECK: %[[IN:.*]] = mega.input "pipe.3" [4, 6] : tensor<4x6xbf16>
// CHECK-NEXT: %[[R:.*]] = mega.reshape %[[IN]] : tensor<4x6xbf16> -> tensor<4x2x3xbf16>
// CHECK-NEXT: %[[T:.*]] = mega.transpose %[[R]] perm [1, 0, 2] : tensor<4x2x3xbf16> -> tensor<2x4x3xbf16>
// CHECK-NEXT: %[[S:.*]]:2 = mega.split %[[T]] {dim = 0 : i64, parts = 2 : i64} : tensor<2x4x3xbf16> -> tensor<1x4x3xbf16>, tensor<1x4x3xbf16>
// CHECK: mega.output "q", %[[S]]#0 : tensor<1x4x3xbf16>
// CHECK: mega.output "k", %[[S]]#1 : tensor<1x4x3xbf16>
func.func @layout(%x: tensor<4x6xf32>) {
  %g = mega.gelu %x : tensor<4x6xf32> -> tensor<4x6xf32>
  mega.output "g", %g : tensor<4x6xf32>
  mega.output "pipe.3", %x : tensor<4x6xf32>
  %b = mega.cast %x : tensor<4x6xf32> -> tensor<4x6xbf16>
  %w = mega.cast %b : tensor<4x6xbf16> -> tensor<4x6xf32>
  mega.output "pipe.5", %w : tensor<4x6xf32>
  return
}
func.func @layout_reader() {
  %x = mega.input "pipe.3" [4, 6] : tensor<4x6xf32>
  %r = mega.reshape %x : tensor<4x6xf32> -> tensor<4x2x3xf32>
  %t = mega.transpose %r perm [1, 0, 2] : tensor<4x2x3xf32> -> tensor<2x4x3xf32>
  %q, %k = mega.split %t {dim = 0 : i64, parts = 2 : i64} : tensor<2x4x3xf32> -> tensor<1x4x3xf32>, tensor<1x4x3xf32>
  %qb = mega.cast %q : tensor<1x4x3xf32> -> tensor<1x4x3xbf16>
  %kb = mega.cast %k : tensor<1x4x3xf32> -> tensor<1x4x3xbf16>
  %c = mega.input "pipe.5" [4, 6] : tensor<4x6xf32>
  mega.output "q", %qb : tensor<1x4x3xbf16>
  mega.output "k", %kb : tensor<1x4x3xbf16>
  mega.output "c", %c : tensor<4x6xf32>
  return
}

// -----

// A port whose reader moves its elements and then needs them in f32 (an
// add) stays f32.
// CHECK-LABEL: func.func @layout_f32
// CHECK: mega.output "pipe.7", %arg0 : tensor<4x6xf32>
// CHECK-LABEL: func.func @layout_f32_reader
// CHECK: mega.input "pipe.7" [4, 6] : tensor<4x6xf32>
func.func @layout_f32(%x: tensor<4x6xf32>) {
  mega.output "pipe.7", %x : tensor<4x6xf32>
  return
}
func.func @layout_f32_reader() {
  %x = mega.input "pipe.7" [4, 6] : tensor<4x6xf32>
  %t = mega.transpose %x perm [1, 0] : tensor<4x6xf32> -> tensor<6x4xf32>
  %tb = mega.cast %t : tensor<6x4xf32> -> tensor<6x4xbf16>
  %s = mega.add %t, %t : tensor<6x4xf32>, tensor<6x4xf32> -> tensor<6x4xf32>
  mega.output "s", %s : tensor<6x4xf32>
  mega.output "tb", %tb : tensor<6x4xbf16>
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

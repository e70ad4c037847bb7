// RUN: mega-opt %s -split-input-file -mega-port-sources | FileCheck %s

// Attention's q and k, reshaped, transposed and split out of one projection
// and sent as two ports: the projection is sent once, through the first
// port; the second port goes, and its reader reads the first port's input
// (moved before it here) and redoes the layout ops on it. A port that is no
// layout op's result ("pipe.2") is left alone.
// CHECK-LABEL: func.func @qk
// CHECK-NOT: "pipe.1"
// CHECK: mega.output "pipe.0", %arg0 : tensor<4x6xf32>
// CHECK-NEXT: mega.output "pipe.2", %arg1 : tensor<4x6xf32>
// CHECK-LABEL: func.func @qk_reader
// CHECK-NEXT: %[[IN:.*]] = mega.input "pipe.0" [4, 6] : tensor<4x6xf32>
// CHECK-NEXT: %[[R:.*]] = mega.reshape %[[IN]] : tensor<4x6xf32> -> tensor<4x2x3xf32>
// CHECK-NEXT: %[[T:.*]] = mega.transpose %[[R]] perm [1, 0, 2]
// CHECK-NEXT: %[[K:.*]]:2 = mega.split %[[T]]
// CHECK-NEXT: %[[R2:.*]] = mega.reshape %[[IN]] : tensor<4x6xf32> -> tensor<4x2x3xf32>
// CHECK-NEXT: %[[T2:.*]] = mega.transpose %[[R2]] perm [1, 0, 2]
// CHECK-NEXT: %[[Q:.*]]:2 = mega.split %[[T2]]
// CHECK-NEXT: mega.input "pipe.2" [4, 6]
// CHECK-NEXT: mega.add %[[K]]#1, %[[Q]]#0
func.func @qk(%x: tensor<4x6xf32>, %y: tensor<4x6xf32>) {
  %r = mega.reshape %x : tensor<4x6xf32> -> tensor<4x2x3xf32>
  %t = mega.transpose %r perm [1, 0, 2] : tensor<4x2x3xf32> -> tensor<2x4x3xf32>
  %q, %k = mega.split %t {dim = 0 : i64, parts = 2 : i64} : tensor<2x4x3xf32> -> tensor<1x4x3xf32>, tensor<1x4x3xf32>
  mega.output "pipe.0", %q : tensor<1x4x3xf32>
  mega.output "pipe.1", %k : tensor<1x4x3xf32>
  mega.output "pipe.2", %y : tensor<4x6xf32>
  return
}
func.func @qk_reader() {
  %k = mega.input "pipe.1" [1, 4, 3] : tensor<1x4x3xf32>
  %q = mega.input "pipe.0" [1, 4, 3] : tensor<1x4x3xf32>
  %y = mega.input "pipe.2" [4, 6] : tensor<4x6xf32>
  %s = mega.add %k, %q : tensor<1x4x3xf32>, tensor<1x4x3xf32> -> tensor<1x4x3xf32>
  mega.output "s", %s : tensor<1x4x3xf32>
  mega.output "y", %y : tensor<4x6xf32>
  return
}

// -----

// Attention's o, sent as itself and moved back to rows: the rows' port
// goes, and its readers, in a program that had no input of o's port, get
// one and transpose it there. A value sent by two ports of one name is
// left alone.
// CHECK-LABEL: func.func @o
// CHECK: mega.output "pipe.3", %arg0 : tensor<2x3x4xf32>
// CHECK-NOT: "pipe.4"
// CHECK: mega.output "pipe.5", %{{.*}} : tensor<3x2x4xf32>
// CHECK: mega.output "pipe.5", %{{.*}} : tensor<3x2x4xf32>
// CHECK-LABEL: func.func @o_reader
// CHECK: mega.input "pipe.3" [2, 3, 4] : tensor<2x3x4xf32>
// CHECK-LABEL: func.func @rows_reader
// CHECK: %[[IN:.*]] = mega.input "pipe.3" [2, 3, 4] : tensor<2x3x4xf32>
// CHECK-NEXT: %[[T:.*]] = mega.transpose %[[IN]] perm [1, 0, 2]
// CHECK-NEXT: %[[R:.*]] = mega.reshape %[[T]] : tensor<3x2x4xf32> -> tensor<3x8xf32>
// CHECK: mega.output "r", %[[R]]
func.func @o(%o: tensor<2x3x4xf32>) {
  mega.output "pipe.3", %o : tensor<2x3x4xf32>
  %t = mega.transpose %o perm [1, 0, 2] : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
  %r = mega.reshape %t : tensor<3x2x4xf32> -> tensor<3x8xf32>
  mega.output "pipe.4", %r : tensor<3x8xf32>
  mega.output "pipe.5", %t : tensor<3x2x4xf32>
  mega.output "pipe.5", %t : tensor<3x2x4xf32>
  return
}
func.func @o_reader() {
  %o = mega.input "pipe.3" [2, 3, 4] : tensor<2x3x4xf32>
  mega.output "o", %o : tensor<2x3x4xf32>
  return
}
func.func @rows_reader() {
  %r = mega.input "pipe.4" [3, 8] : tensor<3x8xf32>
  mega.output "r", %r : tensor<3x8xf32>
  return
}

// -----

// Attention's o sent as itself, which only attention gradients read, and
// moved back to rows for the output projection: the rows keep their port,
// o's port goes, and its readers move the rows back to o (the inverse
// reshape and transpose), which the attention gradient reads in place at
// kernel level. o in rows is what the forward's attention writes.
// CHECK-LABEL: func.func @o_rows
// CHECK-NOT: "pipe.8"
// CHECK: mega.output "pipe.9", %{{.*}} : tensor<1x8x8xf32>
// CHECK-NOT: "pipe.8"
// CHECK-LABEL: func.func @o_rows_reader
// CHECK: %[[IN:.*]] = mega.input "pipe.9" [1, 8, 8] : tensor<1x8x8xf32>
// CHECK-NEXT: %[[R:.*]] = mega.reshape %[[IN]] : tensor<1x8x8xf32> -> tensor<1x8x2x4xf32>
// CHECK-NEXT: %[[O:.*]] = mega.transpose %[[R]] perm [0, 2, 1, 3] : tensor<1x8x2x4xf32> -> tensor<1x2x8x4xf32>
// CHECK: mega.flash_attention_grad %arg0, %arg0, %arg0, %[[O]],
// CHECK: mega.matmul %[[IN]],
func.func @o_rows(%o: tensor<1x2x8x4xf32>) {
  mega.output "pipe.8", %o : tensor<1x2x8x4xf32>
  %t = mega.transpose %o perm [0, 2, 1, 3] : tensor<1x2x8x4xf32> -> tensor<1x8x2x4xf32>
  %r = mega.reshape %t : tensor<1x8x2x4xf32> -> tensor<1x8x8xf32>
  mega.output "pipe.9", %r : tensor<1x8x8xf32>
  return
}
func.func @o_rows_reader(%q: tensor<1x2x8x4xf32>, %lse: tensor<1x2x8xf32>, %d: tensor<1x2x8x4xf32>, %w: tensor<8x8xf32>) {
  %o = mega.input "pipe.8" [1, 2, 8, 4] : tensor<1x2x8x4xf32>
  %dq, %dk, %dv = mega.flash_attention_grad %q, %q, %q, %o, %lse, %d {causal, scale = 5.000000e-01 : f64} : tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8xf32>, tensor<1x2x8x4xf32> -> tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>
  %rows = mega.input "pipe.9" [1, 8, 8] : tensor<1x8x8xf32>
  %p = mega.matmul %rows, %w : tensor<1x8x8xf32>, tensor<8x8xf32> -> tensor<1x8x8xf32>
  mega.output "dq", %dq : tensor<1x2x8x4xf32>
  mega.output "p", %p : tensor<1x8x8xf32>
  return
}

// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-unroll | FileCheck %s

// Each layer is one copy of the body; names get `prefix.{i}.`; the carried
// value threads through; scaled_init divides std by sqrt(2 * count).
// CHECK-LABEL: func.func @layers
func.func @layers(%x: tensor<4x8xf32>) {
  // CHECK-NOT: mega.repeat
  // CHECK: %[[W0:.*]] = mega.param "h.0.w" [8] init ones : tensor<8xf32>
  // CHECK: %[[P0:.*]] = mega.param "h.0.proj" [8] init normal(0.01) : tensor<8xf32>
  // CHECK: %[[A0:.*]] = mega.add %arg0, %[[W0]]
  // CHECK: %[[M0:.*]] = mega.mul %[[A0]], %[[P0]]
  // CHECK: %[[W1:.*]] = mega.param "h.1.w" [8] init ones : tensor<8xf32>
  // CHECK: %[[P1:.*]] = mega.param "h.1.proj" [8] init normal(0.01) : tensor<8xf32>
  // CHECK: %[[A1:.*]] = mega.add %[[M0]], %[[W1]]
  // CHECK: %[[M1:.*]] = mega.mul %[[A1]], %[[P1]]
  // CHECK-NOT: "h.2.
  // CHECK: mega.output "y", %[[M1]]
  %y = mega.repeat %x count(2) prefix "h" : tensor<4x8xf32> -> tensor<4x8xf32> {
  ^bb0(%in: tensor<4x8xf32>):
    %w = mega.param "w" [8] init ones : tensor<8xf32>
    %p = mega.param "proj" [8] init normal(0.02) scaled_init : tensor<8xf32>
    %a = mega.add %in, %w : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
    %m = mega.mul %a, %p : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
    mega.yield %m : tensor<4x8xf32>
  }
  mega.output "y", %y : tensor<4x8xf32>
  return
}

// -----

// Nested repeats: the inner one is unrolled inside each outer copy.
// CHECK-LABEL: func.func @nested
// CHECK: mega.param "outer.0.inner.0.w"
// CHECK: mega.param "outer.0.inner.1.w"
// CHECK: mega.param "outer.1.inner.0.w"
// CHECK: mega.param "outer.1.inner.1.w"
// CHECK-NOT: mega.repeat
func.func @nested(%x: tensor<8xf32>) {
  %y = mega.repeat %x count(2) prefix "outer" : tensor<8xf32> -> tensor<8xf32> {
  ^bb0(%o: tensor<8xf32>):
    %z = mega.repeat %o count(2) prefix "inner" : tensor<8xf32> -> tensor<8xf32> {
    ^bb0(%i: tensor<8xf32>):
      %w = mega.param "w" [8] init ones : tensor<8xf32>
      %a = mega.add %i, %w : tensor<8xf32>, tensor<8xf32> -> tensor<8xf32>
      mega.yield %a : tensor<8xf32>
    }
    mega.yield %z : tensor<8xf32>
  }
  mega.output "y", %y : tensor<8xf32>
  return
}

// -----

func.func @unresolved(%x: tensor<8xf32>) {
  // expected-error @below {{'mega.repeat' op count "layers" is not resolved; run mega-specialize first}}
  %y = mega.repeat %x count(layers) prefix "h" : tensor<8xf32> -> tensor<8xf32> {
  ^bb0(%i: tensor<8xf32>):
    mega.yield %i : tensor<8xf32>
  }
  return
}

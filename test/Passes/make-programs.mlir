// RUN: mega-opt %s -split-input-file -mega-make-programs -verify-diagnostics | FileCheck %s

// The model function becomes @train and @eval (loss) and @predict (logits,
// batch 1); each keeps only what its output needs.
module attributes {mega.hparams = {batch = 8}} {
  func.func @model() {
    %t = mega.input "tokens" [batch, seq] : tensor<?x?xi32>
    %y = mega.input "targets" [batch, seq] : tensor<?x?xi32>
    %w = mega.param "wte.weight" [vocab, hidden] init normal(0.02) : tensor<?x?xf32>
    %x = mega.embedding %t, %w : tensor<?x?xi32>, tensor<?x?xf32> -> tensor<?x?x?xf32>
    %logits = mega.matmul %x, %w {transpose_b} : tensor<?x?x?xf32>, tensor<?x?xf32> -> tensor<?x?x?xf32>
    %loss, %lse = mega.cross_entropy %logits, %y : tensor<?x?x?xf32>, tensor<?x?xi32> -> tensor<f32>, tensor<?xf32>
    mega.output "loss", %loss : tensor<f32>
    mega.output "logits", %logits : tensor<?x?x?xf32>
    return
  }
}
// CHECK-NOT: func.func @model
// CHECK-LABEL: func.func @train()
// CHECK-NOT:     mega.overrides
// CHECK:         mega.input "targets"
// CHECK:         %[[LOSS:.*]], %{{.*}} = mega.cross_entropy
// CHECK-NEXT:    mega.output "loss", %[[LOSS]] : tensor<f32>
// CHECK-NOT:     mega.output "logits"
// CHECK:         return
// CHECK-LABEL: func.func @eval()
// CHECK:         mega.cross_entropy
// CHECK-NEXT:    mega.output "loss"
// CHECK-NOT:     mega.output "logits"
// CHECK-LABEL: func.func @predict() attributes {mega.overrides = {batch = 1 : i64}}
// CHECK-NOT:     mega.input "targets"
// CHECK-NOT:     mega.cross_entropy
// CHECK:         %[[L:.*]] = mega.matmul
// CHECK-NEXT:    mega.output "logits", %[[L]]
// CHECK-NOT:     mega.output "loss"

// -----

// Dead code inside a repeat body is removed, and params used only by a
// dropped output disappear from that program.
module {
  func.func @model() {
    %t = mega.input "tokens" [4] : tensor<4xi32>
    %w = mega.param "w" [8, 2] init zeros : tensor<8x2xf32>
    %x = mega.embedding %t, %w : tensor<4xi32>, tensor<8x2xf32> -> tensor<4x2xf32>
    %r = mega.repeat %x count(2) prefix "h" : tensor<4x2xf32> -> tensor<4x2xf32> {
    ^bb0(%h: tensor<4x2xf32>):
      %unused = mega.param "unused" [2] init zeros : tensor<2xf32>
      mega.yield %h : tensor<4x2xf32>
    }
    %l = mega.param "only_for_loss" [2] init zeros : tensor<2xf32>
    %s = mega.add %r, %l : tensor<4x2xf32>, tensor<2xf32> -> tensor<4x2xf32>
    %sum = mega.reduce_sum %s {rank = 0 : i64} : tensor<4x2xf32> -> tensor<f32>
    mega.output "loss", %sum : tensor<f32>
    mega.output "logits", %r : tensor<4x2xf32>
    return
  }
}
// CHECK-LABEL: func.func @train()
// CHECK-NOT:     "unused"
// CHECK:         mega.param "only_for_loss"
// CHECK-LABEL: func.func @predict()
// CHECK-NOT:     "only_for_loss"
// CHECK:         mega.output "logits"

// -----

// A model without logits gets no @predict; one without `batch` no override.
// CHECK-NOT: mega.overrides
module {
  func.func @lm() {
    %l = mega.param "p" [] init zeros : tensor<f32>
    mega.output "loss", %l : tensor<f32>
    return
  }
}
// CHECK-LABEL: func.func @train()
// CHECK-LABEL: func.func @eval()
// CHECK-NOT: func.func @predict

// -----

// expected-error @below {{mega-make-programs: expected one model function, found 2}}
module {
  // expected-note @below {{function @a}}
  func.func @a() { return }
  // expected-note @below {{function @b}}
  func.func @b() { return }
}

// -----

module {
  // expected-error @below {{mega-make-programs: the model has no output "loss" (needed by @train)}}
  func.func @model() {
    return
  }
}

// -----

module {
  // expected-error @below {{mega-make-programs: the module already has program @train}}
  func.func @train() {
    return
  }
}

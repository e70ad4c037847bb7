// RUN: mega-opt %s -split-input-file -mega-pipeline-stages=stages=2 -verify-diagnostics | FileCheck %s

// Two layers on two stages: the embedding joins stage 0, the output layer
// (the tied wte again) and the loss stage 1. Each stage reads its own
// mega.param of wte, so autodiff accumulates its gradient once per stage.
// The estimated peak per rank (1F1B, one micro-batch) counts wte's state
// (16x8 floats x parameter, gradient, 2 moments = 2048 bytes) on both: rank
// 0 = 2048 + 1024 (h.0.w) + 512 bytes of activations, rank 1 = 2048 + 1024
// + 804 (the matmul, the logits, the loss).
// CHECK: module attributes {mega.pipeline_layers = ["embedding h.0", "h.1 final"], mega.pipeline_memory = [3584, 3876]}
// CHECK-LABEL: func.func @train
// CHECK-DAG: %[[TOK:.*]] = mega.input "tokens" {{.*}}mega.stage = 0
// CHECK-DAG: %[[TGT:.*]] = mega.input "targets" {{.*}}mega.stage = 1
// CHECK-DAG: %[[WTE1:.*]] = mega.param "wte.weight" {{.*}}mega.stage = 1
// CHECK-DAG: %[[WTE0:.*]] = mega.param "wte.weight" {{.*}}mega.stage = 0
// CHECK: %[[X:.*]] = mega.embedding %[[TOK]], %[[WTE0]] {mega.stage = 0 : i64}
// CHECK: %[[Y0:.*]] = mega.matmul %[[X]], %{{.*}} {mega.stage = 0 : i64}
// CHECK: %[[Y1:.*]] = mega.matmul %[[Y0]], %{{.*}} {mega.stage = 1 : i64}
// CHECK: %[[L:.*]] = mega.matmul %[[Y1]], %[[WTE1]] {mega.stage = 1 : i64, transpose_b}
// CHECK: mega.cross_entropy %[[L]], %[[TGT]] {mega.stage = 1 : i64}
// CHECK: mega.output "loss", %{{.*}} {mega.stage = 1 : i64}
module {
  func.func @train() {
    %tok = mega.input "tokens" [2, 4] : tensor<2x4xi32>
    %tgt = mega.input "targets" [2, 4] : tensor<2x4xi32>
    %wte = mega.param "wte.weight" [16, 8] init normal(0.02) : tensor<16x8xf32>
    %x = mega.embedding %tok, %wte : tensor<2x4xi32>, tensor<16x8xf32> -> tensor<2x4x8xf32>
    %w0 = mega.param "h.0.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y0 = mega.matmul %x, %w0 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %w1 = mega.param "h.1.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y1 = mega.matmul %y0, %w1 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %logits = mega.matmul %y1, %wte {transpose_b} : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    %loss, %lse = mega.cross_entropy %logits, %tgt : tensor<2x4x16xf32>, tensor<2x4xi32> -> tensor<f32>, tensor<8xf32>
    mega.output "loss", %loss : tensor<f32>
    return
  }
}

// -----

// Three layers on two stages, balanced by FLOPs: the output layer (2*8*16*8)
// costs twice a layer (2*8*8*8), so stage 0 takes two layers and stage 1 one
// layer plus the output layer and loss (an uneven cut, reported).
// CHECK: module attributes {mega.pipeline_layers = ["embedding h.0 h.1", "h.2 final"], mega.pipeline_memory = [4864, 3876]}
// CHECK-LABEL: func.func @train
// CHECK: mega.matmul {{.*}} {mega.stage = 0 : i64}
// CHECK: mega.matmul {{.*}} {mega.stage = 0 : i64}
// CHECK: mega.matmul {{.*}} {mega.stage = 1 : i64}
// CHECK: mega.matmul {{.*}} {mega.stage = 1 : i64, transpose_b}
module {
  func.func @train() {
    %tok = mega.input "tokens" [2, 4] : tensor<2x4xi32>
    %tgt = mega.input "targets" [2, 4] : tensor<2x4xi32>
    %wte = mega.param "wte.weight" [16, 8] init normal(0.02) : tensor<16x8xf32>
    %x = mega.embedding %tok, %wte : tensor<2x4xi32>, tensor<16x8xf32> -> tensor<2x4x8xf32>
    %w0 = mega.param "h.0.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y0 = mega.matmul %x, %w0 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %w1 = mega.param "h.1.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y1 = mega.matmul %y0, %w1 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %w2 = mega.param "h.2.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y2 = mega.matmul %y1, %w2 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %logits = mega.matmul %y2, %wte {transpose_b} : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    %loss, %lse = mega.cross_entropy %logits, %tgt : tensor<2x4x16xf32>, tensor<2x4xi32> -> tensor<f32>, tensor<8xf32>
    mega.output "loss", %loss : tensor<f32>
    return
  }
}

// -----

// More stages than layers.
// expected-error @+1 {{mega-pipeline-stages: 2 pipeline stages (--pp x --vpp) are more than layers=1}}
module {
  func.func @train() {
    %tok = mega.input "tokens" [2, 4] : tensor<2x4xi32>
    %tgt = mega.input "targets" [2, 4] : tensor<2x4xi32>
    %wte = mega.param "wte.weight" [16, 8] init normal(0.02) : tensor<16x8xf32>
    %x = mega.embedding %tok, %wte : tensor<2x4xi32>, tensor<16x8xf32> -> tensor<2x4x8xf32>
    %w0 = mega.param "h.0.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y0 = mega.matmul %x, %w0 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %logits = mega.matmul %y0, %wte {transpose_b} : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    %loss, %lse = mega.cross_entropy %logits, %tgt : tensor<2x4x16xf32>, tensor<2x4xi32> -> tensor<f32>, tensor<8xf32>
    mega.output "loss", %loss : tensor<f32>
    return
  }
}

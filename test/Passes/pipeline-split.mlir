// RUN: mega-opt %s -split-input-file -mega-pipeline-stages=stages=2 -mega-autodiff -mega-optimizer -mega-pipeline-split=ranks=2 -verify-diagnostics | FileCheck %s

// Two stages on two ranks. The activation crossing the cut is an output
// port of forward 0 and an input port of forward 1 with the same name; its
// gradient goes back the same way; what a backward needs from its forward
// (the embedding output, stage 1's own input, the logits and lse) is stashed
// through ports too. The tied wte is accumulated on both stages, summed over
// the pipeline axis before the update, and counted once in the norm.
// CHECK: module attributes {mega.mesh = array<i64: 1, 1, 2>
// CHECK-LABEL: func.func @forward_0() attributes {mega.program = "forward", mega.stage = 0 : i64}
// CHECK: %[[X:.*]] = mega.embedding
// CHECK: %[[Y0:.*]] = mega.matmul %[[X]]
// CHECK: mega.output "[[ACT:pipe\.[0-9]+]]", %[[Y0]]
// CHECK: mega.output "[[EMB:pipe\.[0-9]+]]", %[[X]]
// CHECK-LABEL: func.func @backward_0() attributes {mega.program = "backward", mega.stage = 0 : i64}
// CHECK-DAG: mega.input "tokens"
// CHECK-DAG: mega.input "[[EMB]]"
// CHECK-DAG: mega.input "[[DACT:pipe\.[0-9]+]]"
// CHECK: mega.accumulate_grad "h.0.w"
// CHECK: mega.embedding_grad
// CHECK: mega.accumulate_grad "wte.weight"
// CHECK-NOT: mega.output
// CHECK-LABEL: func.func @forward_1() attributes {mega.program = "forward", mega.stage = 1 : i64}
// CHECK-DAG: mega.input "targets"
// CHECK-DAG: mega.input "[[ACT]]"
// CHECK: mega.cross_entropy
// CHECK: mega.output "loss"
// CHECK-LABEL: func.func @backward_1() attributes {mega.program = "backward", mega.stage = 1 : i64}
// CHECK: mega.input "[[ACT]]"
// CHECK: mega.cross_entropy_grad
// CHECK: mega.accumulate_grad "h.1.w"
// CHECK: mega.accumulate_grad "wte.weight"
// CHECK: mega.output "[[DACT]]"
// CHECK-LABEL: func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64}
// CHECK: %[[G0:.*]] = mega.state "wte.weight" {role = "grad"}
// CHECK: %[[S0:.*]] = mega.all_reduce %[[G0]] axes [2]
// CHECK: mega.grad_norm %[[S0]], %{{.*}} {{{.*}}mega.pipeline_counted = array<i64: 1, 1>}
// CHECK: mega.adamw "wte.weight", %[[S0]]
// CHECK: mega.adamw "h.0.w"
// CHECK-NOT: "h.1.w"
// CHECK-LABEL: func.func @optimizer_1() attributes {mega.program = "optimizer", mega.stage = 1 : i64}
// CHECK: %[[G1:.*]] = mega.state "wte.weight" {role = "grad"}
// CHECK: %[[S1:.*]] = mega.all_reduce %[[G1]] axes [2]
// CHECK: mega.grad_norm %[[S1]], %{{.*}} {{{.*}}mega.pipeline_counted = array<i64: 0, 1>}
// CHECK: mega.adamw "wte.weight", %[[S1]]
// CHECK: mega.adamw "h.1.w"
// CHECK-NOT: func.func @train
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

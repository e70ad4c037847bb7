// RUN: mega-opt %s -split-input-file -mega-bf16-weight-copies | FileCheck %s

// The Casts of w (train and eval) read w's copy; the AdamWMulti that
// updates w and b writes it: flag 1 for w, 0 for b (never cast), the copy
// as its one destination. The cast of a view of w stays.
// CHECK-LABEL: func.func @train
// CHECK: %[[C:.*]] = mega.state "w" {role = "param_copy"} : tensor<16x32xbf16>
// CHECK-NOT: "Cast"(%
// CHECK: mega.kernel "MatMul"(%{{.*}}, %[[C]])
// CHECK: mega.kernel "MatMul"(%{{.*}}, %[[C]])
// CHECK: mega.kernel "Cast"(%{{.*}}) i [256] f [] : (tensor<8x32xf32>)
// CHECK-LABEL: func.func @eval
// CHECK: %[[E:.*]] = mega.state "w" {role = "param_copy"} : tensor<16x32xbf16>
// CHECK-NOT: "Cast"
// CHECK: mega.kernel "MatMul"(%{{.*}}, %[[E]])
// CHECK-LABEL: func.func @optimizer
// CHECK: %[[W:.*]] = mega.param "w"
// CHECK: %[[WC:.*]] = mega.state "w" {role = "param_copy"} : tensor<16x32xbf16>
// CHECK: mega.kernel "AdamWMulti"(%{{.*}}, %[[W]], %{{.*}}, %[[WC]]) i [2, 1, 1, 0] f [9.000000e-01, 9.990000e-01, 1.000000e-08, 1.000000e-02, 0.000000e+00] {mega.dests = 1 : i64}
// CHECK-NOT: AdamWMulti
module {
  func.func @train() {
    %x = mega.input "x" [4, 16] : tensor<4x16xbf16>
    %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
    %c = mega.kernel "Cast"(%w) i [512] f [] : (tensor<16x32xf32>) -> tensor<16x32xbf16>
    %y = mega.kernel "MatMul"(%x, %c) i [1, 4, 32, 16, 0, 0, 16, 32, 32, 0, 0, 0] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x32xbf16>) -> tensor<4x32xf32>
    %c2 = mega.kernel "Cast"(%w) i [512] f [] : (tensor<16x32xf32>) -> tensor<16x32xbf16>
    %z = mega.kernel "MatMul"(%x, %c2) i [1, 4, 32, 16, 0, 0, 16, 32, 32, 0, 0, 0] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x32xbf16>) -> tensor<4x32xf32>
    %v = mega.view %w offset 0 : tensor<16x32xf32> -> tensor<8x32xf32>
    %cv = mega.kernel "Cast"(%v) i [256] f [] : (tensor<8x32xf32>) -> tensor<8x32xbf16>
    mega.output "y", %y : tensor<4x32xf32>
    mega.output "z", %z : tensor<4x32xf32>
    mega.output "cv", %cv : tensor<8x32xbf16>
    return
  }
  func.func @eval() {
    %x = mega.input "x" [4, 16] : tensor<4x16xbf16>
    %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
    %c = mega.kernel "Cast"(%w) i [512] f [] : (tensor<16x32xf32>) -> tensor<16x32xbf16>
    %y = mega.kernel "MatMul"(%x, %c) i [1, 4, 32, 16, 0, 0, 16, 32, 32, 0, 0, 0] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x32xbf16>) -> tensor<4x32xf32>
    mega.output "y", %y : tensor<4x32xf32>
    return
  }
  func.func @optimizer() {
    %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
    %b = mega.param "b" [32] init zeros : tensor<32xf32>
    %lr = mega.input "lr" [] : tensor<f32>
    %step = mega.input "step" [] : tensor<f32>
    %coef = mega.input "coef" [] : tensor<f32>
    %gw = mega.state "w" {role = "grad"} : tensor<16x32xf32>
    %mw = mega.state "w" {role = "adam_m"} : tensor<16x32xf32>
    %vw = mega.state "w" {role = "adam_v"} : tensor<16x32xf32>
    %gb = mega.state "b" {role = "grad"} : tensor<32xf32>
    %mb = mega.state "b" {role = "adam_m"} : tensor<32xf32>
    %vb = mega.state "b" {role = "adam_v"} : tensor<32xf32>
    mega.kernel "AdamWMulti"(%lr, %step, %coef, %w, %gw, %mw, %vw, %b, %gb, %mb, %vb) i [2, 1] f [0.9, 0.999, 1.0e-8, 0.01, 0.0] : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>) -> ()
    return
  }
}

// -----

// Sgd updates w: its Cast stays, and no copy appears.
// CHECK-LABEL: func.func @train
// CHECK: mega.kernel "Cast"
// CHECK-NOT: param_copy
// CHECK-LABEL: func.func @optimizer
// CHECK-NOT: param_copy
// CHECK: mega.kernel "Sgd"
module {
  func.func @train() {
    %w = mega.param "w" [16] init zeros : tensor<16xf32>
    %c = mega.kernel "Cast"(%w) i [16] f [] : (tensor<16xf32>) -> tensor<16xbf16>
    %r = mega.kernel "Cast"(%c) i [16] f [] : (tensor<16xbf16>) -> tensor<16xf32>
    mega.output "r", %r : tensor<16xf32>
    return
  }
  func.func @optimizer() {
    %w = mega.param "w" [16] init zeros : tensor<16xf32>
    %lr = mega.input "lr" [] : tensor<f32>
    %coef = mega.input "coef" [] : tensor<f32>
    %gw = mega.state "w" {role = "grad"} : tensor<16xf32>
    mega.kernel "Sgd"(%w, %gw, %lr, %coef) i [] f [0.0] : (tensor<16xf32>, tensor<16xf32>, tensor<f32>, tensor<f32>) -> ()
    return
  }
}

// -----

// The distributed optimizer: the block update reads w, the AllGather
// writes it whole; right after it a Cast writes w's copy, which the train
// program reads. u is also written by a Fill (a destination): it keeps its
// Cast.
// CHECK-LABEL: func.func @train
// CHECK: %[[C:.*]] = mega.state "w" {role = "param_copy"} : tensor<4x8xbf16>
// CHECK: %[[CU:.*]] = mega.kernel "Cast"(%{{.*}}) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
// CHECK-NOT: (tensor<4x8xf32>) -> tensor<4x8xbf16>
// CHECK: mega.kernel "Cast"(%[[CU]])
// CHECK-NEXT: mega.kernel "Cast"(%[[C]])
// CHECK-LABEL: func.func @optimizer
// CHECK: %[[W:.*]] = mega.param "w"
// CHECK: mega.kernel "AllGather"(%{{.*}}, %[[W]])
// CHECK-NEXT: %[[WC:.*]] = mega.state "w" {role = "param_copy"} : tensor<4x8xbf16>
// CHECK-NEXT: mega.kernel "Cast"(%[[W]], %[[WC]]) i [32] f [] {mega.dests = 1 : i64} : (tensor<4x8xf32>, tensor<4x8xbf16>) -> ()
// CHECK-NOT: param_copy
module {
  func.func @train() {
    %w = mega.param "w" [4, 8] init normal(0.02) : tensor<4x8xf32>
    %u = mega.param "u" [4, 8] init normal(0.02) : tensor<4x8xf32>
    %cu = mega.kernel "Cast"(%u) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
    %c = mega.kernel "Cast"(%w) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
    %ru = mega.kernel "Cast"(%cu) i [32] f [] : (tensor<4x8xbf16>) -> tensor<4x8xf32>
    %r = mega.kernel "Cast"(%c) i [32] f [] : (tensor<4x8xbf16>) -> tensor<4x8xf32>
    mega.output "ru", %ru : tensor<4x8xf32>
    mega.output "r", %r : tensor<4x8xf32>
    return
  }
  func.func @optimizer() {
    %u = mega.param "u" [4, 8] init normal(0.02) : tensor<4x8xf32>
    mega.kernel "Fill"(%u) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<4x8xf32>) -> ()
    %w = mega.param "w" [4, 8] init normal(0.02) : tensor<4x8xf32>
    %lr = mega.input "lr" [] : tensor<f32>
    %step = mega.input "step" [] : tensor<f32>
    %coef = mega.input "coef" [] : tensor<f32>
    %gw = mega.state "w" {role = "grad"} : tensor<2x8xf32>
    %mw = mega.state "w" {role = "adam_m"} : tensor<2x8xf32>
    %vw = mega.state "w" {role = "adam_v"} : tensor<2x8xf32>
    %nw = mega.kernel "AdamW"(%w, %gw, %mw, %vw, %lr, %step, %coef) i [1] f [0.9, 0.999, 1.0e-8, 0.01] : (tensor<4x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> tensor<2x8xf32>
    mega.kernel "AllGather"(%nw, %w) i [1] f [] {mega.dests = 1 : i64} : (tensor<2x8xf32>, tensor<4x8xf32>) -> ()
    return
  }
}

// -----

// Pipeline: stage 1 (rank 1 of 2) casts w, but only rank 0's optimizer
// updates it: the copy would go stale there, so nothing changes. u is cast
// on stage 0 and updated by rank 0's optimizer: it gets its copy.
// CHECK-LABEL: func.func @forward_0
// CHECK: %[[U:.*]] = mega.state "u" {role = "param_copy"}
// CHECK-NOT: (tensor<8xf32>) -> tensor<8xbf16>
// CHECK: mega.kernel "Cast"(%[[U]])
// CHECK-LABEL: func.func @forward_1
// CHECK: mega.kernel "Cast"
// CHECK-LABEL: func.func @optimizer_0
// CHECK: mega.kernel "AdamWMulti"({{.*}}) i [2, 1, 0, 1] f [{{.*}}] {mega.dests = 1 : i64}
module {
  func.func @forward_0() attributes {mega.program = "forward", mega.stage = 0 : i64} {
    %u = mega.param "u" [8] init zeros : tensor<8xf32>
    %c = mega.kernel "Cast"(%u) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
    %r = mega.kernel "Cast"(%c) i [8] f [] : (tensor<8xbf16>) -> tensor<8xf32>
    mega.output "r", %r : tensor<8xf32>
    return
  }
  func.func @forward_1() attributes {mega.program = "forward", mega.stage = 1 : i64} {
    %w = mega.param "w" [8] init zeros : tensor<8xf32>
    %c = mega.kernel "Cast"(%w) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
    %r = mega.kernel "Cast"(%c) i [8] f [] : (tensor<8xbf16>) -> tensor<8xf32>
    mega.output "r", %r : tensor<8xf32>
    return
  }
  func.func @optimizer_0() attributes {mega.program = "optimizer", mega.stage = 0 : i64} {
    %w = mega.param "w" [8] init zeros : tensor<8xf32>
    %u = mega.param "u" [8] init zeros : tensor<8xf32>
    %lr = mega.input "lr" [] : tensor<f32>
    %step = mega.input "step" [] : tensor<f32>
    %coef = mega.input "coef" [] : tensor<f32>
    %gw = mega.state "w" {role = "grad"} : tensor<8xf32>
    %mw = mega.state "w" {role = "adam_m"} : tensor<8xf32>
    %vw = mega.state "w" {role = "adam_v"} : tensor<8xf32>
    %gu = mega.state "u" {role = "grad"} : tensor<8xf32>
    %mu = mega.state "u" {role = "adam_m"} : tensor<8xf32>
    %vu = mega.state "u" {role = "adam_v"} : tensor<8xf32>
    mega.kernel "AdamWMulti"(%lr, %step, %coef, %w, %gw, %mw, %vw, %u, %gu, %mu, %vu) i [2, 1] f [0.9, 0.999, 1.0e-8, 0.0, 0.0] : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
    return
  }
  func.func @optimizer_1() attributes {mega.program = "optimizer", mega.stage = 1 : i64} {
    return
  }
}

// -----

// A copy that a kernel writes into (a destination) or that leaves through
// an output port would stop being the weight's Cast: those Casts stay; the
// one only read becomes the copy.
// CHECK-LABEL: func.func @train
// CHECK: %[[C:.*]] = mega.state "w" {role = "param_copy"}
// CHECK: %[[A:.*]] = mega.kernel "Cast"(%{{.*}}) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
// CHECK: mega.kernel "Fill"(%[[A]])
// CHECK: %[[B:.*]] = mega.kernel "Cast"(%{{.*}}) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
// CHECK: mega.kernel "Cast"(%[[C]]) i [8]
// CHECK: mega.output "b", %[[B]]
module {
  func.func @train() {
    %w = mega.param "w" [8] init zeros : tensor<8xf32>
    %a = mega.kernel "Cast"(%w) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
    mega.kernel "Fill"(%a) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xbf16>) -> ()
    %b = mega.kernel "Cast"(%w) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
    %c = mega.kernel "Cast"(%w) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
    %r = mega.kernel "Cast"(%c) i [8] f [] : (tensor<8xbf16>) -> tensor<8xf32>
    mega.output "a", %a : tensor<8xbf16>
    mega.output "b", %b : tensor<8xbf16>
    mega.output "r", %r : tensor<8xf32>
    return
  }
  func.func @optimizer() {
    %w = mega.param "w" [8] init zeros : tensor<8xf32>
    %lr = mega.input "lr" [] : tensor<f32>
    %step = mega.input "step" [] : tensor<f32>
    %coef = mega.input "coef" [] : tensor<f32>
    %gw = mega.state "w" {role = "grad"} : tensor<8xf32>
    %mw = mega.state "w" {role = "adam_m"} : tensor<8xf32>
    %vw = mega.state "w" {role = "adam_v"} : tensor<8xf32>
    mega.kernel "AdamWMulti"(%lr, %step, %coef, %w, %gw, %mw, %vw) i [1, 1] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
    return
  }
}

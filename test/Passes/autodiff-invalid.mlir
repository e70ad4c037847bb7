// RUN: mega-opt %s -split-input-file -mega-autodiff -verify-diagnostics
// RUN: not mega-opt %s -split-input-file -mega-autodiff=microbatches=0 2>&1 | FileCheck %s --check-prefix=MB

// MB: error: mega-autodiff: microbatches must be >= 1, got 0

// expected-error @+1 {{mega-autodiff: the module has no func.func @train (run mega-make-programs first)}}
module {
  func.func @gpt() {
    return
  }
}

// -----

// expected-error @+1 {{has no mega.output "loss" to differentiate}}
func.func @train() {
  %w = mega.param "w" [4] init zeros : tensor<4xf32>
  mega.output "logits", %w : tensor<4xf32>
  return
}

// -----

func.func @train() {
  %x = mega.input "x" [2, 4] : tensor<2x4xf32>
  %t = mega.input "t" [2] : tensor<2xi32>
  %l = mega.scale %x {factor = 2.0 : f64} : tensor<2x4xf32> -> tensor<2x4xf32>
  // expected-error @+1 {{the loss does not depend on any parameter}}
  %loss, %lse = mega.cross_entropy %l, %t : tensor<2x4xf32>, tensor<2xi32> -> tensor<f32>, tensor<2xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

func.func @train() {
  %t = mega.input "t" [2] : tensor<2xi32>
  %w = mega.param "w" [2, 4] init normal(0.02) : tensor<2x4xf32>
  // expected-error @+1 {{'mega.view' op has no gradient rule (GradientOpInterface), but its result reaches the loss}}
  %v = mega.view %w offset 0 : tensor<2x4xf32> -> tensor<2x4xf32>
  %loss, %lse = mega.cross_entropy %v, %t : tensor<2x4xf32>, tensor<2xi32> -> tensor<f32>, tensor<2xf32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// -----

func.func @train() {
  %t = mega.input "t" [2] : tensor<2xi32>
  %w = mega.param "w" [2, 4] init normal(0.02) : tensor<2x4xf32>
  %loss, %lse = mega.cross_entropy %w, %t : tensor<2x4xf32>, tensor<2xi32> -> tensor<f32>, tensor<2xf32>
  mega.output "loss", %loss : tensor<f32>
  // expected-error @+1 {{'mega.accumulate_grad' op @train is already differentiated}}
  mega.accumulate_grad "w", %w : tensor<2x4xf32>
  return
}

// -----

func.func @train() {
  %x = mega.input "x" [2, 4] : tensor<2x4xf32>
  // expected-error @+1 {{'mega.repeat' op has regions: run mega-unroll before mega-autodiff}}
  %y = mega.repeat %x count(2) prefix "h" : tensor<2x4xf32> -> tensor<2x4xf32> {
  ^bb0(%h: tensor<2x4xf32>):
    mega.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @train() {
  %t = mega.input "t" [2] : tensor<2xi32>
  %w = mega.param "w" [2, 4] init normal(0.02) : tensor<2x4xf32>
  // expected-error @+1 {{'mega.cross_entropy' op no gradient rule through the lse result}}
  %loss, %lse = mega.cross_entropy %w, %t : tensor<2x4xf32>, tensor<2xi32> -> tensor<f32>, tensor<2xf32>
  %s = mega.reduce_sum %lse {rank = 0 : i64} : tensor<2xf32> -> tensor<f32>
  %l2 = mega.add %loss, %s : tensor<f32>, tensor<f32> -> tensor<f32>
  mega.output "loss", %l2 : tensor<f32>
  return
}

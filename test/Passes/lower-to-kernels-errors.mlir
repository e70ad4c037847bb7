// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-lower-to-kernels

// Model-level ops have no kernel: mega-decompose must run first.
func.func @not_decomposed(%x: tensor<2x4x8xf32>, %w: tensor<8x8xf32>) {
  // expected-error @+1 {{'mega.linear' op has no kernel lowering}}
  %0 = mega.linear %x, %w : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
  mega.output "y", %0 : tensor<2x4x8xf32>
  return
}

// -----

// The optimizer updates a parameter no program declares.
func.func @optimizer(%g: tensor<4xf32>, %lr: tensor<f32>, %c: tensor<f32>) {
  // expected-error @+1 {{'mega.sgd' op updates 'ghost', which no function reads with mega.param}}
  mega.sgd "ghost", %g, %lr, %c {weight_decay = 0.0 : f64} : tensor<4xf32>, tensor<f32>, tensor<f32>
  return
}

// -----

// Concatenating unequal parts along an inner dimension has no kernel.
func.func @concat_unequal(%a: tensor<2x4xf32>, %b: tensor<2x2xf32>) {
  // expected-error @+1 {{unequal parts}}
  %0 = mega.concat %a, %b {dim = 1 : i64} : tensor<2x4xf32>, tensor<2x2xf32> -> tensor<2x6xf32>
  mega.output "y", %0 : tensor<2x6xf32>
  return
}

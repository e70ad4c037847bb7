// RUN: mega-opt %s -split-input-file -verify-diagnostics -mega-assign-buffers

// Buffers are assigned at kernel level only.
func.func @not_lowered(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.gelu' op is not at kernel level}}
  %0 = mega.gelu %x : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

// An output's producer writes into the port, so it must be a kernel result
// that nothing else places (mega-lower-to-kernels inserts a Copy otherwise).
func.func @output_of_param() {
  %p = mega.param "p" [4] init zeros : tensor<4xf32>
  // expected-error @+1 {{'mega.output' op value must be a kernel result placed nowhere else}}
  mega.output "p", %p : tensor<4xf32>
  return
}

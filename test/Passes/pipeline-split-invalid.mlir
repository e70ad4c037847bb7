// RUN: mega-opt %s -split-input-file -mega-pipeline-stages=stages=3 -mega-autodiff -mega-optimizer -mega-pipeline-split=ranks=3 -verify-diagnostics

// A value that skips a stage has no port between neighbours: the embedding
// output (stage 0) read by the last layer (stage 2) is refused.
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
    // expected-error @+1 {{in the forward of stage 2 reads a value of the forward of stage 0; pipeline programs may only pass values to the next stage or to their own backward}}
    %z = mega.add %y2, %x : tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x8xf32>
    %logits = mega.matmul %z, %wte {transpose_b} : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    %loss, %lse = mega.cross_entropy %logits, %tgt : tensor<2x4x16xf32>, tensor<2x4xi32> -> tensor<f32>, tensor<8xf32>
    mega.output "loss", %loss : tensor<f32>
    return
  }
}

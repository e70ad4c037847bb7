// Input of pipeline-stages-memory.mlir (the memory tie-break).
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
    %t2 = mega.param "h.2.table" [1024, 8] init normal(0.02) : tensor<1024x8xf32>
    %e2 = mega.embedding %tok, %t2 : tensor<2x4xi32>, tensor<1024x8xf32> -> tensor<2x4x8xf32>
    %y2 = mega.add %y1, %e2 : tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x8xf32>
    %w3 = mega.param "h.3.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y3_0 = mega.matmul %y2, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3_1 = mega.matmul %y3_0, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3_2 = mega.matmul %y3_1, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3_3 = mega.matmul %y3_2, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3_4 = mega.matmul %y3_3, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3_5 = mega.matmul %y3_4, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3_6 = mega.matmul %y3_5, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y3 = mega.matmul %y3_6, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %loss, %lse = mega.cross_entropy %y3, %tgt : tensor<2x4x8xf32>, tensor<2x4xi32> -> tensor<f32>, tensor<8xf32>
    mega.output "loss", %loss : tensor<f32>
    return
  }
}

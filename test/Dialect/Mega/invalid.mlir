// One case per verifier check (constraint ids: docs/dialect.md).
// RUN: mega-opt %s -split-input-file -verify-diagnostics

//===----------------------------------------------------------------------===//
// mega.param
//===----------------------------------------------------------------------===//

// param_c1
func.func @param_c1_empty_name() {
  // expected-error @+1 {{'mega.param' op needs a non-empty name}}
  %0 = mega.param "" [4] init zeros : tensor<4xf32>
  return
}

// -----

// param_c2
func.func @param_c2_rank() {
  // expected-error @+1 {{'mega.param' op has 2 dims but its type has rank 1}}
  %0 = mega.param "w" [4, 4] init zeros : tensor<?xf32>
  return
}

// -----

// param_c3
func.func @param_c3_not_a_size() {
  // expected-error @+1 {{'mega.param' op dim 0 is not a size: "3*"}}
  %0 = "mega.param"() <{name = "w", dims = ["3*"], init = "zeros"}> : () -> tensor<?xf32>
  return
}

// -----

// param_c3
func.func @param_c3_non_positive() {
  // expected-error @+1 {{'mega.param' op dim 1 is 0; sizes must be positive}}
  %0 = mega.param "w" [4, 0] init zeros : tensor<4x0xf32>
  return
}

// -----

// param_c4
func.func @param_c4_type_disagrees() {
  // expected-error @+1 {{'mega.param' op dim 0 is 4 but the type says 5}}
  %0 = mega.param "w" [4] init zeros : tensor<5xf32>
  return
}

// -----

// param_c5
func.func @param_c5_unknown_init() {
  // expected-error @+1 {{'mega.param' op init must be normal(std), zeros or ones, not 'uniform'}}
  %0 = "mega.param"() <{name = "w", dims = [4], init = "uniform"}> : () -> tensor<4xf32>
  return
}

// -----

// param_c5
func.func @param_c5_std_without_normal() {
  // expected-error @+1 {{'mega.param' op a std is given exactly for init normal}}
  %0 = "mega.param"() <{name = "w", dims = [4], init = "zeros", std = 1.0 : f64}> : () -> tensor<4xf32>
  return
}

// -----

// param_c5
func.func @param_c5_negative_std() {
  // expected-error @+1 {{'mega.param' op std -1 is negative}}
  %0 = mega.param "w" [4] init normal(-1.0) : tensor<4xf32>
  return
}

// -----

// param_c6
func.func @param_c6_scaled_init_needs_normal() {
  // expected-error @+1 {{'mega.param' op scaled_init needs init normal(std)}}
  %0 = mega.param "w" [4] init ones scaled_init : tensor<4xf32>
  return
}

// -----

func.func @param_syntax_init() {
  // expected-error @+1 {{expected init normal(std), zeros or ones}}
  %0 = mega.param "w" [4] init uniform : tensor<4xf32>
  return
}

// -----

func.func @param_syntax_size() {
  // expected-error @+1 {{expected a size: an integer, a hyper-parameter name or `k*name`}}
  %0 = mega.param "w" [4.5] init zeros : tensor<?xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// mega.input, mega.output
//===----------------------------------------------------------------------===//

// input_c1
func.func @input_c1_empty_name() {
  // expected-error @+1 {{'mega.input' op needs a non-empty name}}
  %0 = mega.input "" [4] : tensor<4xi32>
  return
}

// -----

// input_c2
func.func @input_c2_rank() {
  // expected-error @+1 {{'mega.input' op has 1 dims but its type has rank 2}}
  %0 = mega.input "tokens" [batch] : tensor<?x?xi32>
  return
}

// -----

// input_c3
func.func @input_c3_non_positive() {
  // expected-error @+1 {{'mega.input' op dim 0 is -2; sizes must be positive}}
  %0 = mega.input "tokens" [-2] : tensor<?xi32>
  return
}

// -----

// input_c4
func.func @input_c4_type_disagrees() {
  // expected-error @+1 {{'mega.input' op dim 1 is 8 but the type says 9}}
  %0 = mega.input "tokens" [4, 8] : tensor<4x9xi32>
  return
}

// -----

// input_c5
func.func @input_c5_element_type() {
  // expected-error @+1 {{'mega.input' op element_type 'f32' differs from the result's 'i32'}}
  %0 = "mega.input"() <{name = "tokens", dims = [4], element_type = f32}> : () -> tensor<4xi32>
  return
}

// -----

// output_c1
func.func @output_c1_empty_name(%x: tensor<f32>) {
  // expected-error @+1 {{'mega.output' op needs a non-empty name}}
  mega.output "", %x : tensor<f32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// mega.embedding, mega.layer_norm, mega.linear
//===----------------------------------------------------------------------===//

// ids are i32 (operand type constraint)
func.func @embedding_ids_i32(%ids: tensor<4xf32>, %t: tensor<8x16xf32>) {
  // expected-error @+1 {{'mega.embedding' op operand #0 must be ranked tensor of 32-bit signless integer values, but got 'tensor<4xf32>'}}
  %0 = mega.embedding %ids, %t : tensor<4xf32>, tensor<8x16xf32> -> tensor<4x16xf32>
  return
}

// -----

// embedding_c1
func.func @embedding_c1_table_rank(%ids: tensor<4xi32>, %t: tensor<8xf32>) {
  // expected-error @+1 {{'mega.embedding' op table must be [vocab, hidden], got rank 1}}
  %0 = mega.embedding %ids, %t : tensor<4xi32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

// embedding_c2
func.func @embedding_c2_result_rank(%ids: tensor<4xi32>, %t: tensor<8x16xf32>) {
  // expected-error @+1 {{'mega.embedding' op result must have rank 2 (ids rank + 1), got 3}}
  %0 = mega.embedding %ids, %t : tensor<4xi32>, tensor<8x16xf32> -> tensor<4x1x16xf32>
  return
}

// -----

// layer_norm_c1
func.func @layer_norm_c1_rank(%x: tensor<f32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'mega.layer_norm' op x must have rank >= 1}}
  %y, %m, %r = mega.layer_norm %x, %w, %w : tensor<f32>, tensor<4xf32>, tensor<4xf32> -> tensor<f32>, tensor<1xf32>, tensor<1xf32>
  return
}

// -----

// layer_norm_c1
func.func @layer_norm_c1_weight(%x: tensor<2x8xf32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'mega.layer_norm' op weight and bias must be [8], got [4]}}
  %y, %m, %r = mega.layer_norm %x, %w, %w : tensor<2x8xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<2x8xf32>, tensor<2xf32>, tensor<2xf32>
  return
}

// -----

// layer_norm_c2
func.func @layer_norm_c2_eps(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'mega.layer_norm' op eps must be positive, got 0}}
  %y, %m, %r = mega.layer_norm %x, %w, %w {eps = 0.0} : tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x8xf32>, tensor<2xf32>, tensor<2xf32>
  return
}

// -----

// linear_c1
func.func @linear_c1_weight_rank(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'mega.linear' op needs x [..., K] and weight [K, N], got x [2, 8] and weight [8]}}
  %0 = mega.linear %x, %w : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xf32>
  return
}

// -----

// linear_c2
func.func @linear_c2_features(%x: tensor<2x8xf32>, %w: tensor<4x16xf32>) {
  // expected-error @+1 {{'mega.linear' op x has 8 input features but weight has 4}}
  %0 = mega.linear %x, %w : tensor<2x8xf32>, tensor<4x16xf32> -> tensor<2x16xf32>
  return
}

// -----

// linear_c3
func.func @linear_c3_bias(%x: tensor<2x8xf32>, %w: tensor<8x16xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mega.linear' op bias must be [16], got [8]}}
  %0 = mega.linear %x, %w, %b : tensor<2x8xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<2x16xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// mega.attention
//===----------------------------------------------------------------------===//

// attention_c1
func.func @attention_c1_rank(%x: tensor<32x64xf32>, %wqkv: tensor<64x192xf32>, %bqkv: tensor<192xf32>,
                             %wo: tensor<64x64xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op x must be [batch, seq, hidden], got [32, 64]}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(4) causal : tensor<32x64xf32>, tensor<64x192xf32>, tensor<192xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<32x64xf32>
  return
}

// -----

// attention_c2
func.func @attention_c2_wqkv(%x: tensor<2x32x64xf32>, %wqkv: tensor<64x128xf32>, %bqkv: tensor<192xf32>,
                             %wo: tensor<64x64xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op w_qkv must be [64, 192], got [64, 128]}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(4) causal : tensor<2x32x64xf32>, tensor<64x128xf32>, tensor<192xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<2x32x64xf32>
  return
}

// -----

// attention_c2
func.func @attention_c2_bqkv(%x: tensor<2x32x64xf32>, %wqkv: tensor<64x192xf32>, %bqkv: tensor<64xf32>,
                             %wo: tensor<64x64xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op b_qkv must be [192], got [64]}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(4) causal : tensor<2x32x64xf32>, tensor<64x192xf32>, tensor<64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<2x32x64xf32>
  return
}

// -----

// attention_c3
func.func @attention_c3_wo(%x: tensor<2x32x64xf32>, %wqkv: tensor<64x192xf32>, %bqkv: tensor<192xf32>,
                           %wo: tensor<64x32xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op w_o must be [64, 64], got [64, 32]}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(4) causal : tensor<2x32x64xf32>, tensor<64x192xf32>, tensor<192xf32>, tensor<64x32xf32>, tensor<64xf32> -> tensor<2x32x64xf32>
  return
}

// -----

// attention_c3
func.func @attention_c3_bo(%x: tensor<2x32x64xf32>, %wqkv: tensor<?x?xf32>, %bqkv: tensor<?xf32>,
                           %wo: tensor<?x?xf32>, %bo: tensor<65xf32>) {
  // expected-error @+1 {{'mega.attention' op b_o must be [64], got [65]}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(4) causal : tensor<2x32x64xf32>, tensor<?x?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<65xf32> -> tensor<2x32x64xf32>
  return
}

// -----

// attention_c4
func.func @attention_c4_heads_divide(%x: tensor<2x32x64xf32>, %wqkv: tensor<64x192xf32>, %bqkv: tensor<192xf32>,
                                     %wo: tensor<64x64xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op heads (3) does not divide hidden (64)}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(3) causal : tensor<2x32x64xf32>, tensor<64x192xf32>, tensor<192xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<2x32x64xf32>
  return
}

// -----

// attention_c4
func.func @attention_c4_heads_positive(%x: tensor<2x32x64xf32>, %wqkv: tensor<64x192xf32>, %bqkv: tensor<192xf32>,
                                       %wo: tensor<64x64xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op heads must be positive, got 0}}
  %0 = mega.attention %x, %wqkv, %bqkv, %wo, %bo heads(0) causal : tensor<2x32x64xf32>, tensor<64x192xf32>, tensor<192xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<2x32x64xf32>
  return
}

// -----

// attention_c4
func.func @attention_c4_heads_size(%x: tensor<2x32x64xf32>, %wqkv: tensor<64x192xf32>, %bqkv: tensor<192xf32>,
                                   %wo: tensor<64x64xf32>, %bo: tensor<64xf32>) {
  // expected-error @+1 {{'mega.attention' op heads is not a size: "2*"}}
  %0 = "mega.attention"(%x, %wqkv, %bqkv, %wo, %bo) <{heads = "2*"}> : (tensor<2x32x64xf32>, tensor<64x192xf32>, tensor<192xf32>, tensor<64x64xf32>, tensor<64xf32>) -> tensor<2x32x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// mega.repeat
//===----------------------------------------------------------------------===//

// repeat_c1
func.func @repeat_c1_count(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.repeat' op count must be positive, got 0}}
  %0 = mega.repeat %x count(0) prefix "h" : tensor<4xf32> -> tensor<4xf32> {
  ^bb0(%h: tensor<4xf32>):
    mega.yield %h : tensor<4xf32>
  }
  return
}

// -----

// repeat_c1
func.func @repeat_c1_count_size(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.repeat' op count is not a size: "x*y"}}
  %0 = "mega.repeat"(%x) <{count = "x*y", prefix = "h"}> ({
  ^bb0(%h: tensor<4xf32>):
    mega.yield %h : tensor<4xf32>
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

// repeat_c2
func.func @repeat_c2_prefix(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.repeat' op needs a non-empty prefix}}
  %0 = mega.repeat %x count(2) prefix "" : tensor<4xf32> -> tensor<4xf32> {
  ^bb0(%h: tensor<4xf32>):
    mega.yield %h : tensor<4xf32>
  }
  return
}

// -----

// repeat_c3
func.func @repeat_c3_block_argument(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.repeat' op body must take one argument of the type of init ('tensor<4xf32>')}}
  %0 = mega.repeat %x count(2) prefix "h" : tensor<4xf32> -> tensor<4xf32> {
  ^bb0(%h: tensor<5xf32>):
    mega.yield %x : tensor<4xf32>
  }
  return
}

// -----

// repeat_c4
func.func @repeat_c4_yield(%x: tensor<4xf32>, %y: tensor<8xf32>) {
  // expected-error @+1 {{'mega.repeat' op body must yield one value of the type of init ('tensor<4xf32>')}}
  %0 = mega.repeat %x count(2) prefix "h" : tensor<4xf32> -> tensor<4xf32> {
  ^bb0(%h: tensor<4xf32>):
    mega.yield %y : tensor<8xf32>
  }
  return
}

// -----

// cross_entropy_c1
func.func @cross_entropy_c1_rank(%l: tensor<4x8x16xf32>, %t: tensor<32xi32>) {
  // expected-error @+1 {{'mega.cross_entropy' op targets must have rank 2 (logits rank - 1), got 1}}
  %0, %1 = mega.cross_entropy %l, %t : tensor<4x8x16xf32>, tensor<32xi32> -> tensor<f32>, tensor<32xf32>
  return
}

// -----

// cross_entropy_c1
func.func @cross_entropy_c1_shape(%l: tensor<4x8x16xf32>, %t: tensor<4x9xi32>) {
  // expected-error @+1 {{'mega.cross_entropy' op targets [4, 9] do not match logits [4, 8, 16]}}
  %0, %1 = mega.cross_entropy %l, %t : tensor<4x8x16xf32>, tensor<4x9xi32> -> tensor<f32>, tensor<32xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Tensor level
//===----------------------------------------------------------------------===//

// matmul_c1
func.func @matmul_c1_rank(%a: tensor<8xf32>, %b: tensor<8x4xf32>) {
  // expected-error @+1 {{'mega.matmul' op operands must have rank >= 2, got 1 and 2}}
  %0 = mega.matmul %a, %b : tensor<8xf32>, tensor<8x4xf32> -> tensor<4xf32>
  return
}

// -----

// matmul_c2
func.func @matmul_c2_contraction(%a: tensor<2x8x64xf32>, %b: tensor<32x16xf32>) {
  // expected-error @+1 {{'mega.matmul' op contraction dimensions differ: a has K = 64, b has K = 32}}
  %0 = mega.matmul %a, %b : tensor<2x8x64xf32>, tensor<32x16xf32> -> tensor<2x8x16xf32>
  return
}

// -----

// matmul_c2
func.func @matmul_c2_contraction_transposed(%a: tensor<8x4xf32>, %b: tensor<8x4xf32>) {
  // expected-error @+1 {{'mega.matmul' op contraction dimensions differ: a has K = 4, b has K = 8}}
  %0 = mega.matmul %a, %b : tensor<8x4xf32>, tensor<8x4xf32> -> tensor<8x4xf32>
  return
}

// -----

// matmul_c3
func.func @matmul_c3_b_rank(%a: tensor<2x3x8x4xf32>, %b: tensor<3x4x8xf32>) {
  // expected-error @+1 {{'mega.matmul' op b must have rank 2 or the rank of a (4), got 3}}
  %0 = mega.matmul %a, %b : tensor<2x3x8x4xf32>, tensor<3x4x8xf32> -> tensor<2x3x8x8xf32>
  return
}

// -----

// matmul_c3
func.func @matmul_c3_batch(%a: tensor<2x8x4xf32>, %b: tensor<3x4x8xf32>) {
  // expected-error @+1 {{'mega.matmul' op batch dimensions differ: a [2, 8, 4], b [3, 4, 8]}}
  %0 = mega.matmul %a, %b : tensor<2x8x4xf32>, tensor<3x4x8xf32> -> tensor<2x8x8xf32>
  return
}

// -----

// binary_c1
func.func @add_c1_broadcast(%a: tensor<4x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'mega.add' op cannot broadcast rhs [4] to lhs [4, 8]: rhs must be a suffix of lhs}}
  %0 = mega.add %a, %b : tensor<4x8xf32>, tensor<4xf32> -> tensor<4x8xf32>
  return
}

// -----

// binary_c1
func.func @sub_c1_broadcast_rank(%a: tensor<8xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.sub' op cannot broadcast rhs [4, 8] to lhs [8]: rhs must be a suffix of lhs}}
  %0 = mega.sub %a, %b : tensor<8xf32>, tensor<4x8xf32> -> tensor<8xf32>
  return
}

// -----

// binary_c1
func.func @mul_c1_broadcast(%a: tensor<4x8xf32>, %b: tensor<2x8xf32>) {
  // expected-error @+1 {{'mega.mul' op cannot broadcast rhs [2, 8] to lhs [4, 8]: rhs must be a suffix of lhs}}
  %0 = mega.mul %a, %b : tensor<4x8xf32>, tensor<2x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// gelu_grad_c1
func.func @gelu_grad_c1(%x: tensor<4x8xf32>, %dy: tensor<4x9xf32>) {
  // expected-error @+1 {{'mega.gelu_grad' op operands must have the same shape, got [4, 8] and [4, 9]}}
  %0 = mega.gelu_grad %x, %dy : tensor<4x8xf32>, tensor<4x9xf32> -> tensor<4x8xf32>
  return
}

// -----

// softmax_c1
func.func @softmax_c1_causal_rank(%x: tensor<8xf32>) {
  // expected-error @+1 {{'mega.softmax' op causal softmax needs rank >= 2 (rows and columns)}}
  %0 = mega.softmax %x {causal} : tensor<8xf32> -> tensor<8xf32>
  return
}

// -----

// softmax_c2
func.func @softmax_c2_rank(%x: tensor<f32>) {
  // expected-error @+1 {{'mega.softmax' op x must have rank >= 1}}
  %0 = mega.softmax %x : tensor<f32> -> tensor<f32>
  return
}

// -----

// softmax_grad_c1
func.func @softmax_grad_c1(%y: tensor<4x8xf32>, %dy: tensor<8x4xf32>) {
  // expected-error @+1 {{'mega.softmax_grad' op operands must have the same shape, got [4, 8] and [8, 4]}}
  %0 = mega.softmax_grad %y, %dy : tensor<4x8xf32>, tensor<8x4xf32> -> tensor<4x8xf32>
  return
}

// -----

// layer_norm_grad_c1
func.func @layer_norm_grad_c1_dy(%dy: tensor<4x9xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>) {
  // expected-error @+1 {{'mega.layer_norm_grad' op operands must have the same shape, got [4, 9] and [4, 8]}}
  %0, %1, %2 = mega.layer_norm_grad %dy, %x, %w, %m, %m : tensor<4x9xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>
  return
}

// -----

// layer_norm_grad_c1
func.func @layer_norm_grad_c1_rank(%x: tensor<f32>, %w: tensor<8xf32>, %m: tensor<4xf32>) {
  // expected-error @+1 {{'mega.layer_norm_grad' op x must have rank >= 1}}
  %0, %1, %2 = mega.layer_norm_grad %x, %x, %w, %m, %m : tensor<f32>, tensor<f32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<f32>, tensor<8xf32>, tensor<8xf32>
  return
}

// -----

// layer_norm_grad_c2
func.func @layer_norm_grad_c2_weight(%x: tensor<4x8xf32>, %w: tensor<4xf32>, %m: tensor<4xf32>) {
  // expected-error @+1 {{'mega.layer_norm_grad' op weight must be [8], got [4]}}
  %0, %1, %2 = mega.layer_norm_grad %x, %x, %w, %m, %m : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x8xf32>, tensor<4xf32>, tensor<4xf32>
  return
}

// -----

// layer_norm_grad_c3
func.func @layer_norm_grad_c3_stats(%x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4x1xf32>) {
  // expected-error @+1 {{'mega.layer_norm_grad' op mean and rstd must have rank 1}}
  %0, %1, %2 = mega.layer_norm_grad %x, %x, %w, %m, %m : tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4x1xf32>, tensor<4x1xf32> -> tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>
  return
}

// -----

// cross_entropy_grad_c1
func.func @cross_entropy_grad_c1(%l: tensor<4x16xf32>, %t: tensor<4x1xi32>, %lse: tensor<4xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{'mega.cross_entropy_grad' op targets must have rank 1 (logits rank - 1), got 2}}
  %0 = mega.cross_entropy_grad %l, %t, %lse, %d : tensor<4x16xf32>, tensor<4x1xi32>, tensor<4xf32>, tensor<f32> -> tensor<4x16xf32>
  return
}

// -----

// cross_entropy_grad_c2
func.func @cross_entropy_grad_c2(%l: tensor<4x16xf32>, %t: tensor<4xi32>, %lse: tensor<4x1xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{'mega.cross_entropy_grad' op lse must have rank 1}}
  %0 = mega.cross_entropy_grad %l, %t, %lse, %d : tensor<4x16xf32>, tensor<4xi32>, tensor<4x1xf32>, tensor<f32> -> tensor<4x16xf32>
  return
}

// -----

// embedding_grad_c1
func.func @embedding_grad_c1(%ids: tensor<4xi32>, %dy: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.embedding_grad' op vocab must be positive, got 0}}
  %0 = mega.embedding_grad %ids, %dy {vocab = 0 : i64} : tensor<4xi32>, tensor<4x8xf32> -> tensor<0x8xf32>
  return
}

// -----

// embedding_grad_c2
func.func @embedding_grad_c2(%ids: tensor<4xi32>, %dy: tensor<5x8xf32>) {
  // expected-error @+1 {{'mega.embedding_grad' op dy must be ids' shape plus [hidden]: ids [4], dy [5, 8]}}
  %0 = mega.embedding_grad %ids, %dy {vocab = 16 : i64} : tensor<4xi32>, tensor<5x8xf32> -> tensor<16x8xf32>
  return
}

// -----

// reduce_sum_c1
func.func @reduce_sum_c1(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.reduce_sum' op rank 3 is not in [0, 2]}}
  %0 = mega.reduce_sum %x {rank = 3 : i64} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// reshape_c1
func.func @reshape_c1_element_type(%x: tensor<4x8xi32>) {
  // expected-error @+1 {{'mega.reshape' op cannot change the element type}}
  %0 = mega.reshape %x : tensor<4x8xi32> -> tensor<32xf32>
  return
}

// -----

// reshape_c2
func.func @reshape_c2_count(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.reshape' op element counts differ: [4, 8] has 32, [33] has 33}}
  %0 = mega.reshape %x : tensor<4x8xf32> -> tensor<33xf32>
  return
}

// -----

// transpose_c1
func.func @transpose_c1_repeated(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.transpose' op perm [0, 0] is not a permutation of the 2 dimensions}}
  %0 = mega.transpose %x perm [0, 0] : tensor<4x8xf32> -> tensor<4x4xf32>
  return
}

// -----

// transpose_c1
func.func @transpose_c1_length(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.transpose' op perm [1, 0, 2] is not a permutation of the 2 dimensions}}
  %0 = mega.transpose %x perm [1, 0, 2] : tensor<4x8xf32> -> tensor<8x4x1xf32>
  return
}

// -----

// split_c1
func.func @split_c1_dim(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.split' op dim 2 is out of range for rank 2}}
  %0:2 = mega.split %x {dim = 2 : i64, parts = 2 : i64} : tensor<4x8xf32> -> tensor<4x4xf32>, tensor<4x4xf32>
  return
}

// -----

// split_c2
func.func @split_c2_results(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.split' op must have parts (2) results, got 3}}
  %0:3 = mega.split %x {dim = 1 : i64, parts = 2 : i64} : tensor<4x8xf32> -> tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  return
}

// -----

// split_c3
func.func @split_c3_divide(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.split' op parts (3) does not divide dim 1 (8)}}
  %0:3 = mega.split %x {dim = 1 : i64, parts = 3 : i64} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>
  return
}

// -----

// concat_c1
func.func @concat_c1_empty() {
  // expected-error @+1 {{'mega.concat' op needs at least one input}}
  %0 = "mega.concat"() <{dim = 0 : i64}> : () -> tensor<4xf32>
  return
}

// -----

// concat_c2
func.func @concat_c2_dim(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.concat' op dim 2 is out of range for rank 2}}
  %0 = mega.concat %x, %x {dim = 2 : i64} : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// concat_c3
func.func @concat_c3_shapes(%x: tensor<4x8xf32>, %y: tensor<5x8xf32>) {
  // expected-error @+1 {{'mega.concat' op inputs differ outside dim 1: [4, 8] and [5, 8]}}
  %0 = mega.concat %x, %y {dim = 1 : i64} : tensor<4x8xf32>, tensor<5x8xf32> -> tensor<4x16xf32>
  return
}

// -----

// fill_c1
func.func @fill_c1_static() {
  // expected-error @+1 {{'mega.fill' op needs a static shape}}
  %0 = mega.fill 0.0 : tensor<?xf32>
  return
}

// -----

// fill_c2
func.func @fill_c2_integer() {
  // expected-error @+1 {{'mega.fill' op value 0.5 is not an integer}}
  %0 = mega.fill 0.5 : tensor<4xi32>
  return
}

// -----

// result types are the inferred ones (InferTypeOpInterface)
func.func @inferred_result_type(%x: tensor<4x8xf32>) {
  // expected-error @+2 {{'mega.gelu' op inferred type(s) 'tensor<4x8xf32>' are incompatible with return type(s) of operation 'tensor<4x9xf32>'}}
  // expected-error @+1 {{'mega.gelu' op failed to infer returned types}}
  %0 = mega.gelu %x : tensor<4x8xf32> -> tensor<4x9xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Training level
//===----------------------------------------------------------------------===//

// accumulate_grad_c1
func.func @accumulate_grad_c1(%g: tensor<4xf32>) {
  // expected-error @+1 {{'mega.accumulate_grad' op needs a non-empty name}}
  mega.accumulate_grad "", %g : tensor<4xf32>
  return
}

// -----

// state_c1
func.func @state_c1() {
  // expected-error @+1 {{'mega.state' op needs a non-empty name}}
  %0 = mega.state "" {role = "grad"} : tensor<4xf32>
  return
}

// -----

// state_c2
func.func @state_c2() {
  // expected-error @+1 {{'mega.state' op role must be grad, adam_m, adam_v or param_copy, not 'momentum'}}
  %0 = mega.state "w" {role = "momentum"} : tensor<4xf32>
  return
}

// -----

// state_c4
func.func @state_c4_role() {
  // expected-error @+1 {{'mega.state' op mega.tail_bytes must be a non-negative multiple of 4 on a grad}}
  %0 = mega.state "w" {role = "adam_m", mega.tail_bytes = 16 : i64} : tensor<4xf32>
  return
}

// -----

// state_c4
func.func @state_c4_odd() {
  // expected-error @+1 {{'mega.state' op mega.tail_bytes must be a non-negative multiple of 4 on a grad}}
  %0 = mega.state "w" {role = "grad", mega.tail_bytes = 6 : i64} : tensor<4xf32>
  return
}

// -----

// state_c3
func.func @state_c3_copy() {
  // expected-error @+1 {{'mega.state' op role 'param_copy' needs element type bf16, not 'f32'}}
  %0 = mega.state "w" {role = "param_copy"} : tensor<4xf32>
  return
}

// -----

func.func @state_c3_grad() {
  // expected-error @+1 {{'mega.state' op role 'grad' needs element type f32, not 'bf16'}}
  %0 = mega.state "w" {role = "grad"} : tensor<4xbf16>
  return
}

// -----

// grad_norm_c1
func.func @grad_norm_c1() {
  // expected-error @+1 {{'mega.grad_norm' op needs at least one gradient}}
  %0, %1 = "mega.grad_norm"() : () -> (tensor<f32>, tensor<f32>)
  return
}

// -----

// adamw_c1
func.func @adamw_c1(%g: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'mega.adamw' op needs a non-empty name}}
  mega.adamw "", %g, %s, %s, %s {beta1 = 0.9, beta2 = 0.999, eps = 1.0e-8, weight_decay = 0.0} : tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

// adamw_c2
func.func @adamw_c2(%g: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'mega.adamw' op betas must be in [0, 1), got 0.9 and 1}}
  mega.adamw "w", %g, %s, %s, %s {beta1 = 0.9, beta2 = 1.0, eps = 1.0e-8, weight_decay = 0.0} : tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

// adamw_c3
func.func @adamw_c3(%g: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'mega.adamw' op eps must be positive, got 0}}
  mega.adamw "w", %g, %s, %s, %s {beta1 = 0.9, beta2 = 0.999, eps = 0.0, weight_decay = 0.0} : tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

// adamw_c4
func.func @adamw_c4(%g: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'mega.adamw' op weight_decay must be >= 0, got -0.1}}
  mega.adamw "w", %g, %s, %s, %s {beta1 = 0.9, beta2 = 0.999, eps = 1.0e-8, weight_decay = -0.1} : tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

// sgd_c1
func.func @sgd_c1(%g: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'mega.sgd' op needs a non-empty name}}
  mega.sgd "", %g, %s, %s {weight_decay = 0.0} : tensor<4xf32>, tensor<f32>, tensor<f32>
  return
}

// -----

// sgd_c2
func.func @sgd_c2(%g: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'mega.sgd' op weight_decay must be >= 0, got -1}}
  mega.sgd "w", %g, %s, %s {weight_decay = -1.0} : tensor<4xf32>, tensor<f32>, tensor<f32>
  return
}

// -----

// zero_grad_c1
func.func @zero_grad_c1() {
  // expected-error @+1 {{'mega.zero_grad' op needs a non-empty name}}
  mega.zero_grad ""
  return
}

// -----

//===----------------------------------------------------------------------===//
// Kernel level
//===----------------------------------------------------------------------===//

// fused_c1
func.func @fused_c1_arguments(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.fused' op block arguments must have the types of the inputs}}
  %0 = mega.fused (%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<5xf32>):
    mega.yield %a : tensor<5xf32>
  }
  return
}

// -----

// fused_c2
func.func @fused_c2_not_elementwise(%x: tensor<4x4xf32>) {
  // expected-error @+1 {{'mega.fused' op body may hold only elementwise ops, found 'mega.matmul'}}
  %0 = mega.fused (%x) : (tensor<4x4xf32>) -> tensor<4x4xf32> {
  ^bb0(%a: tensor<4x4xf32>):
    %m = mega.matmul %a, %a : tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x4xf32>
    mega.yield %m : tensor<4x4xf32>
  }
  return
}

// -----

// fused_c3
func.func @fused_c3_yield(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.fused' op body must yield values of the result types}}
  %0 = mega.fused (%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    mega.yield
  }
  return
}

// -----

// kernel_c1
func.func @kernel_c1(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.kernel' op unknown kernel 'Conv2D' (see enum class Op in mega/Plan/Plan.h)}}
  %0 = mega.kernel "Conv2D"(%x) i [] f [] : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

// empty_c1
func.func @empty_c1_dynamic() {
  // expected-error @+1 {{'mega.empty' op needs a static shape, got [?, 4]}}
  %0 = mega.empty : tensor<?x4xf32>
  return
}

// -----

// view_c1
func.func @view_c1_negative(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.view' op offset -4 is negative}}
  %0 = mega.view %x offset -4 : tensor<4xf32> -> tensor<2xf32>
  return
}

// -----

// view_c2
func.func @view_c2_outside(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.view' op bytes [8, 24) are outside the source's 16}}
  %0 = mega.view %x offset 8 : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

// view_c2: a gradient's tail counts, and only as far as it goes.
func.func @view_c2_past_tail() {
  %g = mega.state "w" {role = "grad", mega.tail_bytes = 16 : i64} : tensor<4xf32>
  %0 = mega.view %g offset 16 : tensor<4xf32> -> tensor<4xf32>
  // expected-error @+1 {{'mega.view' op bytes [0, 48) are outside the source's 32}}
  %1 = mega.view %g offset 0 : tensor<4xf32> -> tensor<12xf32>
  return
}

// -----

func.func @yield_parent(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.yield' op expects parent op to be one of 'mega.repeat, mega.fused'}}
  mega.yield %x : tensor<4xf32>
}

// -----

func.func @grad_bucket_two_axes() {
  // expected-error @+1 {{reduces over one mesh axis, not 2}}
  mega.grad_bucket_start ["w"] axes [0, 1]
  return
}

// -----

func.func @grad_bucket_wait_types(%g: tensor<4xf32>) {
  // expected-error @+1 {{results must have the types of the gradients}}
  %r = mega.grad_bucket_wait %g axes [1] : tensor<4xf32> -> tensor<5xf32>
  return
}

// -----

// grad_bucket_wait_c3: with `scatter`, each result is its gradient's block
// along dim 0 over the devices of `axes` (2 here).
module attributes {mega.mesh = array<i64: 1, 2>} {
func.func @grad_bucket_wait_scatter_block(%g: tensor<4x5xf32>) {
  // expected-error @+1 {{dim 0: 4 is not the device count times 1}}
  %r = mega.grad_bucket_wait %g axes [1] scatter : tensor<4x5xf32> -> tensor<1x5xf32>
  return
}
}

// -----

func.func @grad_bucket_wait_scatter_dims(%g: tensor<4x5xf32>) {
  // expected-error @+1 {{dim 1: 5 is not equal to 4}}
  %r = mega.grad_bucket_wait %g axes [1] scatter : tensor<4x5xf32> -> tensor<2x4xf32>
  return
}

// -----

func.func @grad_bucket_twice() {
  // expected-error @+1 {{names 'w' twice}}
  mega.grad_bucket_start ["w", "w"] axes [1]
  return
}

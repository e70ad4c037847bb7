// RUN: mega-opt %s -split-input-file -verify-diagnostics \
// RUN:   -mega-specialize="set=hidden=64,heads=4" | FileCheck %s

// Overrides replace the defaults; every size by name is resolved; params and
// inputs get static types (others keep theirs until mega-infer-shapes).
// CHECK-LABEL: module attributes {mega.hparams = {batch = 8 : i64, heads = 4 : i64, hidden = 64 : i64, layers = 2 : i64, seq = 16 : i64}}
module attributes {mega.hparams = {layers = 2, hidden = 768, heads = 12, seq = 16, batch = 8}} {
  // CHECK-LABEL: func.func @train()
  func.func @train() {
    // CHECK: mega.input "tokens" [8, 16] : tensor<8x16xi32>
    %t = mega.input "tokens" [batch, seq] : tensor<?x?xi32>
    // CHECK: mega.param "w" [64, 192] init normal(0.02) : tensor<64x192xf32>
    %w = mega.param "w" [hidden, 3*hidden] init normal(0.02) : tensor<?x?xf32>
    // CHECK: mega.param "b" [7] init zeros : tensor<7xf32>
    %b = mega.param "b" [7] init zeros : tensor<?xf32>
    // CHECK: mega.repeat %{{.*}} count(2) prefix "h" : tensor<64x192xf32> -> tensor<?x?xf32>
    %r = mega.repeat %w count(layers) prefix "h" : tensor<?x?xf32> -> tensor<?x?xf32> {
    ^bb0(%h: tensor<?x?xf32>):
      // CHECK: mega.param "ln" [64] init ones : tensor<64xf32>
      %p = mega.param "ln" [hidden] init ones : tensor<?xf32>
      mega.yield %h : tensor<?x?xf32>
    }
    // CHECK: heads(4)
    %x = mega.input "x" [batch, seq, hidden] : tensor<?x?x?xf32>
    %bq = mega.param "bq" [3*hidden] init zeros : tensor<?xf32>
    %wo = mega.param "wo" [hidden, hidden] init zeros : tensor<?x?xf32>
    %bo = mega.param "bo" [hidden] init zeros : tensor<?xf32>
    %a = mega.attention %x, %w, %bq, %wo, %bo heads(heads) causal : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
    return
  }
  // Function-level overrides (batch = 1 in @predict) win over `set`.
  // CHECK-LABEL: func.func @predict()
  func.func @predict() attributes {mega.overrides = {batch = 1 : i64}} {
    // CHECK: mega.input "tokens" [1, 16] : tensor<1x16xi32>
    %t = mega.input "tokens" [batch, seq] : tensor<?x?xi32>
    return
  }
}

// -----

// expected-error @below {{unknown hyper-parameter 'hidden' in set; the model has: layers}}
module attributes {mega.hparams = {layers = 2}} {
}

// -----

// expected-error @below {{unknown hyper-parameter 'hidden' in set; the model has: (none)}}
module {
}

// -----

module attributes {mega.hparams = {hidden = 8, heads = 2}} {
  func.func @train() {
    // expected-error @below {{unknown hyper-parameter 'vocab'; the model has: heads, hidden}}
    %w = mega.param "wte.weight" [vocab, hidden] init normal(0.02) : tensor<?x?xf32>
    return
  }
}

// -----

module attributes {mega.hparams = {hidden = 8, heads = 2}} {
  // expected-error @below {{unknown hyper-parameter 'batch' in mega.overrides of @predict; the model has: heads, hidden}}
  func.func @predict() attributes {mega.overrides = {batch = 1 : i64}} {
    return
  }
}

// -----

// expected-error @below {{hyper-parameter 'hidden' must be an integer, got 6.400000e+01 : f64}}
module attributes {mega.hparams = {hidden = 64.0, heads = 2}} {
}

// Errors in `set` itself (one RUN line each).
// RUN: not mega-opt %s -mega-specialize="set=hidden=0" 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not mega-opt %s -mega-specialize="set=hidden=-3" 2>&1 | FileCheck %s --check-prefix=NEG
// RUN: not mega-opt %s -mega-specialize="set=hidden=big" 2>&1 | FileCheck %s --check-prefix=NAN
// RUN: not mega-opt %s -mega-specialize="set=hidden" 2>&1 | FileCheck %s --check-prefix=FORM
// RUN: not mega-opt %s -mega-specialize="set=layerz=2" 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// RUN: mega-opt %s -mega-specialize="set=hidden=32,heads=8" | FileCheck %s --check-prefix=OK

// ZERO: error: hyper-parameter hidden=0 in set must be positive
// NEG: error: hyper-parameter hidden=-3 in set must be positive
// NAN: error: hyper-parameter hidden=big in set is not an integer
// FORM: error: mega-specialize: expected name=value in set, got 'hidden'
// UNKNOWN: error: unknown hyper-parameter 'layerz' in set; the model has: heads, hidden, layers
// OK: mega.hparams = {heads = 8 : i64, hidden = 32 : i64, layers = 2 : i64}
// OK: mega.param "w" [32] init zeros : tensor<32xf32>
module attributes {mega.hparams = {layers = 2, hidden = 64, heads = 4}} {
  func.func @train() {
    %w = mega.param "w" [hidden] init zeros : tensor<?xf32>
    mega.output "w", %w : tensor<?xf32>
    return
  }
}

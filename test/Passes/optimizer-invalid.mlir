// RUN: mega-opt %s -split-input-file -mega-optimizer -verify-diagnostics
// RUN: not mega-opt %s -split-input-file -mega-optimizer=optimizer=lamb 2>&1 | FileCheck %s --check-prefix=OPT
// RUN: not mega-opt %s -split-input-file -mega-optimizer=beta2=1.0 2>&1 | FileCheck %s --check-prefix=BETA
// RUN: not mega-opt %s -split-input-file -mega-optimizer=eps=0 2>&1 | FileCheck %s --check-prefix=EPS
// RUN: not mega-opt %s -split-input-file -mega-optimizer=weight-decay=-1 2>&1 | FileCheck %s --check-prefix=WD

// OPT: error: mega-optimizer: optimizer must be adam or sgd, got 'lamb'
// BETA: error: mega-optimizer: beta2 must be in [0, 1), got 1
// EPS: error: mega-optimizer: eps must be > 0, got 0
// WD: error: mega-optimizer: weight-decay must be >= 0, got -1

// expected-error @+1 {{mega-optimizer: the module has no func.func @train}}
module {
  func.func @eval() {
    return
  }
}

// -----

// expected-error @+1 {{accumulates no gradient: run mega-autodiff before mega-optimizer}}
func.func @train() {
  %w = mega.param "w" [4] init zeros : tensor<4xf32>
  mega.output "loss", %w : tensor<4xf32>
  return
}

// -----

func.func @train() {
  %w = mega.param "w" [4] init zeros : tensor<4xf32>
  mega.accumulate_grad "w", %w : tensor<4xf32>
  return
}
// expected-error @+1 {{'func.func' op mega-optimizer: @optimizer already exists}}
func.func @optimizer() {
  return
}

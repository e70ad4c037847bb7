// RUN: mega-opt %s -split-input-file -mega-data-parallel=size=2 -verify-diagnostics
// RUN: not mega-opt %s -split-input-file -mega-data-parallel=size=0 2>&1 | FileCheck %s --check-prefix=SIZE
// RUN: not mega-opt %s -split-input-file -mega-data-parallel="size=2 bucket-mb=0" 2>&1 | FileCheck %s --check-prefix=BUCKET

// SIZE: error: mega-data-parallel: size must be >= 1, got 0
// BUCKET: error: mega-data-parallel: bucket-mb must be > 0

// expected-error @+1 {{mega-data-parallel: the module has no func.func @optimizer (run mega-optimizer first)}}
module {
  func.func @train() {
    return
  }
}

// -----

module {
  func.func @optimizer() {
    // expected-error @+1 {{needs a static shape for the data-parallel all-reduce}}
    %g = mega.state "w" {role = "grad"} : tensor<?xf32>
    return
  }
}

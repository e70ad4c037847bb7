// size=1 leaves the module alone; size=0 is refused.
// RUN: mega-opt %s -mega-tensor-parallel=size=1 | FileCheck %s
// RUN: not mega-opt %s -mega-tensor-parallel=size=0 2>&1 | FileCheck %s --check-prefix=ZERO

// CHECK-NOT: mega.mesh
// CHECK-NOT: mega.sharding
// CHECK: mega.param "w1" [8, 32]
// ZERO: error: mega-tensor-parallel: size must be positive, not 0
func.func @mlp() {
  %x = mega.input "x" [4, 8] : tensor<4x8xf32>
  %w1 = mega.param "w1" [8, 32] init zeros : tensor<8x32xf32>
  %h = mega.matmul %x, %w1 : tensor<4x8xf32>, tensor<8x32xf32> -> tensor<4x32xf32>
  %w2 = mega.param "w2" [32, 8] init zeros : tensor<32x8xf32>
  %y = mega.matmul %h, %w2 : tensor<4x32xf32>, tensor<32x8xf32> -> tensor<4x8xf32>
  mega.output "y", %y : tensor<4x8xf32>
  return
}

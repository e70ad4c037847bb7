// RUN: mega-opt %s -split-input-file -mega-fuse-elementwise | FileCheck %s
// Every group the pass forms must fit the Elementwise kernel (16 registers):
// RUN: mega-opt %s -split-input-file -mega-fuse-elementwise -mega-lower-to-kernels | FileCheck %s --check-prefix=LOWER

// Bias add + GELU: one group; the bias is a broadcast input.
// CHECK-LABEL: func.func @bias_gelu
// CHECK-SAME: (%[[X:.*]]: tensor<4x256xf32>, %[[B:.*]]: tensor<256xf32>)
// CHECK: %[[R:.*]] = mega.fused(%[[X]], %[[B]]) : (tensor<4x256xf32>, tensor<256xf32>) -> tensor<4x256xf32> {
// CHECK-NEXT: ^bb0(%[[A0:.*]]: tensor<4x256xf32>, %[[A1:.*]]: tensor<256xf32>):
// CHECK-NEXT:   %[[S:.*]] = mega.add %[[A0]], %[[A1]]
// CHECK-NEXT:   %[[G:.*]] = mega.gelu %[[S]]
// CHECK-NEXT:   mega.yield %[[G]] : tensor<4x256xf32>
// CHECK-NEXT: }
// CHECK-NEXT: mega.output "y", %[[R]]
// LOWER-LABEL: func.func @bias_gelu
// LOWER: mega.kernel "Elementwise"
// LOWER-NOT: mega.kernel
// LOWER: return
func.func @bias_gelu(%x: tensor<4x256xf32>, %b: tensor<256xf32>) {
  %0 = mega.add %x, %b : tensor<4x256xf32>, tensor<256xf32> -> tensor<4x256xf32>
  %1 = mega.gelu %0 : tensor<4x256xf32> -> tensor<4x256xf32>
  mega.output "y", %1 : tensor<4x256xf32>
  return
}

// -----

// The residual chain of a block: out = res + (m + bias) is one kernel.
// CHECK-LABEL: func.func @residual
// CHECK-SAME: (%[[M:.*]]: tensor<8x64xf32>, %[[B:.*]]: tensor<64xf32>, %[[RES:.*]]: tensor<8x64xf32>)
// CHECK: mega.fused(%[[M]], %[[B]], %[[RES]])
// CHECK-COUNT-2: mega.add
// CHECK: mega.yield
// CHECK-NOT: mega.add
func.func @residual(%m: tensor<8x64xf32>, %b: tensor<64xf32>, %res: tensor<8x64xf32>) {
  %0 = mega.add %m, %b : tensor<8x64xf32>, tensor<64xf32> -> tensor<8x64xf32>
  %1 = mega.add %res, %0 : tensor<8x64xf32>, tensor<8x64xf32> -> tensor<8x64xf32>
  mega.output "y", %1 : tensor<8x64xf32>
  return
}

// -----

// An intermediate that is also used outside the group is yielded as a
// second result, not recomputed.
// CHECK-LABEL: func.func @yield_intermediate
// CHECK: %[[F:.*]]:2 = mega.fused
// CHECK: %[[S:.*]] = mega.add
// CHECK: %[[G:.*]] = mega.gelu %[[S]]
// CHECK: mega.yield %[[S]], %[[G]] : tensor<4x16xf32>, tensor<4x16xf32>
// CHECK: mega.output "pre", %[[F]]#0
// CHECK: mega.output "post", %[[F]]#1
func.func @yield_intermediate(%x: tensor<4x16xf32>, %b: tensor<16xf32>) {
  %0 = mega.add %x, %b : tensor<4x16xf32>, tensor<16xf32> -> tensor<4x16xf32>
  %1 = mega.gelu %0 : tensor<4x16xf32> -> tensor<4x16xf32>
  mega.output "pre", %0 : tensor<4x16xf32>
  mega.output "post", %1 : tensor<4x16xf32>
  return
}

// -----

// Element counts differ: gelu of the [16] bias is not fused into the
// [4, 16] add (it stays a kernel of its own), so nothing is grouped.
// CHECK-LABEL: func.func @different_sizes
// CHECK-NOT: mega.fused
// CHECK: mega.gelu
// CHECK: mega.add
func.func @different_sizes(%x: tensor<4x16xf32>, %b: tensor<16xf32>) {
  %0 = mega.gelu %b : tensor<16xf32> -> tensor<16xf32>
  %1 = mega.add %x, %0 : tensor<4x16xf32>, tensor<16xf32> -> tensor<4x16xf32>
  mega.output "y", %1 : tensor<4x16xf32>
  return
}

// -----

// The producer's value is also read by a matmul that sits between it and its
// elementwise consumer: the group could not sit at the consumer, so the two
// stay apart.
// CHECK-LABEL: func.func @user_in_between
// CHECK-NOT: mega.fused
// CHECK: mega.add
// CHECK: mega.matmul
// CHECK: mega.gelu
func.func @user_in_between(%x: tensor<4x16xf32>, %b: tensor<16xf32>, %w: tensor<16x16xf32>) {
  %0 = mega.add %x, %b : tensor<4x16xf32>, tensor<16xf32> -> tensor<4x16xf32>
  %1 = mega.matmul %0, %w : tensor<4x16xf32>, tensor<16x16xf32> -> tensor<4x16xf32>
  %2 = mega.gelu %0 : tensor<4x16xf32> -> tensor<4x16xf32>
  mega.output "a", %1 : tensor<4x16xf32>
  mega.output "b", %2 : tensor<4x16xf32>
  return
}

// -----

// A mega.fill operand is an input of the group (the lowering turns it into a
// constant); scale and gelu_grad fuse too.
// CHECK-LABEL: func.func @fill_and_grad
// CHECK: %[[HALF:.*]] = mega.fill 5.000000e-01 : tensor<f32>
// CHECK: mega.fused(%{{.*}}, %{{.*}}, %[[HALF]])
// CHECK: mega.gelu_grad
// CHECK: mega.mul
// CHECK: mega.scale
// CHECK: mega.yield
// LOWER-LABEL: func.func @fill_and_grad
// LOWER-NOT: mega.fill
// LOWER: mega.kernel "Elementwise"(%{{[^,]*}}, %{{[^,)]*}}) i [64, 2, 1, 64, 64,
// LOWER-SAME: f [5.000000e-01, 2.000000e+00]
func.func @fill_and_grad(%x: tensor<4x16xf32>, %dy: tensor<4x16xf32>) {
  %h = mega.fill 0.5 : tensor<f32>
  %0 = mega.gelu_grad %x, %dy : tensor<4x16xf32>, tensor<4x16xf32> -> tensor<4x16xf32>
  %1 = mega.mul %0, %h : tensor<4x16xf32>, tensor<f32> -> tensor<4x16xf32>
  %2 = mega.scale %1 {factor = 2.0 : f64} : tensor<4x16xf32> -> tensor<4x16xf32>
  mega.output "y", %2 : tensor<4x16xf32>
  return
}

// -----

// Two gradient contributions summed into a third: one group with three
// inputs (the gradient accumulation of a value used three times).
// CHECK-LABEL: func.func @grad_sum
// CHECK: mega.fused(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<32x8xf32>, tensor<32x8xf32>, tensor<32x8xf32>) -> tensor<32x8xf32>
// CHECK-NOT: mega.fused
func.func @grad_sum(%a: tensor<32x8xf32>, %b: tensor<32x8xf32>, %c: tensor<32x8xf32>) {
  %0 = mega.add %a, %b : tensor<32x8xf32>, tensor<32x8xf32> -> tensor<32x8xf32>
  %1 = mega.add %0, %c : tensor<32x8xf32>, tensor<32x8xf32> -> tensor<32x8xf32>
  mega.output "g", %1 : tensor<32x8xf32>
  return
}

// -----

// Twenty values alive at once do not fit 16 registers: the pass splits the
// work into several groups, each of which lowers.
// CHECK-LABEL: func.func @register_pressure
// CHECK-COUNT-2: mega.fused
// LOWER-LABEL: func.func @register_pressure
// LOWER-NOT: mega.add
// LOWER-NOT: mega.scale
// LOWER: return
func.func @register_pressure(%x: tensor<64xf32>) {
  %s0 = mega.scale %x {factor = 1.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s1 = mega.scale %x {factor = 2.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s2 = mega.scale %x {factor = 3.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s3 = mega.scale %x {factor = 4.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s4 = mega.scale %x {factor = 5.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s5 = mega.scale %x {factor = 6.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s6 = mega.scale %x {factor = 7.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s7 = mega.scale %x {factor = 8.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s8 = mega.scale %x {factor = 9.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s9 = mega.scale %x {factor = 10.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s10 = mega.scale %x {factor = 11.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s11 = mega.scale %x {factor = 12.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s12 = mega.scale %x {factor = 13.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s13 = mega.scale %x {factor = 14.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s14 = mega.scale %x {factor = 15.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s15 = mega.scale %x {factor = 16.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s16 = mega.scale %x {factor = 17.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s17 = mega.scale %x {factor = 18.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s18 = mega.scale %x {factor = 19.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %s19 = mega.scale %x {factor = 20.0 : f64} : tensor<64xf32> -> tensor<64xf32>
  %m0 = mega.mul %s0, %s19 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m1 = mega.mul %s1, %s18 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m2 = mega.mul %s2, %s17 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m3 = mega.mul %s3, %s16 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m4 = mega.mul %s4, %s15 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m5 = mega.mul %s5, %s14 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m6 = mega.mul %s6, %s13 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m7 = mega.mul %s7, %s12 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m8 = mega.mul %s8, %s11 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %m9 = mega.mul %s9, %s10 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a0 = mega.add %m0, %m1 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a1 = mega.add %a0, %m2 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a2 = mega.add %a1, %m3 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a3 = mega.add %a2, %m4 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a4 = mega.add %a3, %m5 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a5 = mega.add %a4, %m6 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a6 = mega.add %a5, %m7 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a7 = mega.add %a6, %m8 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  %a8 = mega.add %a7, %m9 : tensor<64xf32>, tensor<64xf32> -> tensor<64xf32>
  mega.output "y", %a8 : tensor<64xf32>
  return
}

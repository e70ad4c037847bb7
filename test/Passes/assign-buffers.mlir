// RUN: mega-opt %s -split-input-file -mega-assign-buffers | FileCheck %s

// A chain: each value dies at the next kernel, so the third reuses the
// first's memory; the last writes straight into its output port (-1).
// CHECK-LABEL: func.func @chain
// CHECK-SAME: mega.arena_bytes = 2048 : i64, mega.naive_bytes = 3072 : i64, mega.peak_live_bytes = 2048 : i64
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 1024>}
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: -1>}
func.func @chain() {
  %x = mega.input "x" [256] : tensor<256xf32>
  %a = mega.kernel "Copy"(%x) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  %b = mega.kernel "Copy"(%a) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  %c = mega.kernel "Copy"(%b) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  %d = mega.kernel "Copy"(%c) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  mega.output "y", %d : tensor<256xf32>
  return
}

// -----

// A view keeps its source alive until the view's last use.
// CHECK-LABEL: func.func @view_extends_life
// CHECK-SAME: mega.arena_bytes = 3072 : i64
// CHECK: %[[A:.*]] = mega.kernel "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: mega.view %[[A]] offset 0
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 1024>}
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 2048>}
func.func @view_extends_life() {
  %x = mega.input "x" [256] : tensor<256xf32>
  %a = mega.kernel "Copy"(%x) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  %v = mega.view %a offset 0 : tensor<256xf32> -> tensor<16x16xf32>
  %b = mega.kernel "Copy"(%x) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  %c = mega.kernel "Copy"(%b) i [] f [] : (tensor<256xf32>) -> tensor<256xf32>
  %d = mega.kernel "Elementwise"(%v, %c) i [256, 2, 1, 256, 256, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<16x16xf32>, tensor<256xf32>) -> tensor<256xf32>
  mega.output "y", %d : tensor<256xf32>
  return
}

// -----

// The parts of a concat are placed inside its result, so their producers
// write there directly; small buffers are 64-byte aligned.
// CHECK-LABEL: func.func @concat_parts
// CHECK-SAME: mega.arena_bytes = 512 : i64
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 256>}
// CHECK: mega.concat {{.*}} {dim = 0 : i64, mega.offset = array<i64: 0>}
// CHECK: mega.kernel "Fill"() i [] f [1.000000e+00] {mega.offset = array<i64: 0>} : () -> tensor<3xf32>
// CHECK: mega.kernel "Fill"() i [] f [2.000000e+00] {mega.offset = array<i64: 64>} : () -> tensor<3xf32>
func.func @concat_parts() {
  %x = mega.input "x" [64] : tensor<64xf32>
  %p = mega.kernel "Copy"(%x) i [] f [] : (tensor<64xf32>) -> tensor<64xf32>
  %q = mega.kernel "Copy"(%x) i [] f [] : (tensor<64xf32>) -> tensor<64xf32>
  %j = mega.concat %p, %q {dim = 0 : i64} : tensor<64xf32>, tensor<64xf32> -> tensor<128xf32>
  %y = mega.kernel "Copy"(%j) i [] f [] : (tensor<128xf32>) -> tensor<128xf32>
  mega.output "y", %y : tensor<128xf32>
  %s = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<3xf32>
  %t = mega.kernel "Fill"() i [] f [2.0] : () -> tensor<3xf32>
  %u = mega.kernel "Elementwise"(%s, %t) i [3, 2, 1, 3, 3, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
  mega.output "z", %u : tensor<3xf32>
  return
}

// -----

// Each result of a multi-result kernel is a buffer of its own; one nobody
// reads (mean, rstd here) still takes memory while the kernel writes it.
// Persistent state written in place (mega.dests) takes no arena memory.
// CHECK-LABEL: func.func @multi_result
// CHECK-SAME: mega.arena_bytes = 1152 : i64
// CHECK: mega.kernel "LayerNorm"({{.*}}) i [4, 64] f [1.000000e-05] {mega.offset = array<i64: 0, 1024, 1088>}
// CHECK: mega.kernel "ReduceSum"({{.*}}) {{.*}}mega.dests = 1 : i64, mega.offset = array<i64>}
func.func @multi_result() {
  %x = mega.input "x" [4, 64] : tensor<4x64xf32>
  %w = mega.param "w" [64] init ones : tensor<64xf32>
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %w) i [4, 64] f [1.0e-5] : (tensor<4x64xf32>, tensor<64xf32>, tensor<64xf32>) -> (tensor<4x64xf32>, tensor<4xf32>, tensor<4xf32>)
  %g = mega.state "w" {role = "grad"} : tensor<64xf32>
  mega.kernel "ReduceSum"(%y#0, %g) i [4, 64, 1] f [] {mega.dests = 1 : i64} : (tensor<4x64xf32>, tensor<64xf32>) -> ()
  return
}

// -----

// Concat parts seen through reshape views: the producers are placed in the
// concat's result, which here is the output port (every offset -1).
// CHECK-LABEL: func.func @parts_through_views
// CHECK-SAME: mega.arena_bytes = 0 : i64
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: -1>}
// CHECK: "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: -1>}
// CHECK: mega.concat {{.*}} {dim = 0 : i64, mega.offset = array<i64: -1>}
func.func @parts_through_views() {
  %x = mega.input "x" [64] : tensor<64xf32>
  %p = mega.kernel "Copy"(%x) i [] f [] : (tensor<64xf32>) -> tensor<64xf32>
  %q = mega.kernel "Copy"(%x) i [] f [] : (tensor<64xf32>) -> tensor<64xf32>
  %rp = mega.view %p offset 0 : tensor<64xf32> -> tensor<1x64xf32>
  %rq = mega.view %q offset 0 : tensor<64xf32> -> tensor<1x64xf32>
  %j = mega.concat %rp, %rq {dim = 0 : i64} : tensor<1x64xf32>, tensor<1x64xf32> -> tensor<2x64xf32>
  mega.output "y", %j : tensor<2x64xf32>
  return
}

// -----

// In place: CrossEntropyGrad's dlogits take the buffer of its logits when
// the logits die there (both 1024 bytes at offset 0); while something reads
// the logits afterwards they get their own (offset 1024).
// CHECK-LABEL: func.func @cross_entropy_grad_in_place
// CHECK: %[[Z:.*]] = mega.kernel "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "CrossEntropyGrad"(%[[Z]], {{.*}} {mega.offset = array<i64: 0>}
// CHECK-LABEL: func.func @cross_entropy_grad_logits_live
// CHECK: %[[Z:.*]] = mega.kernel "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "CrossEntropyGrad"(%[[Z]], {{.*}} {mega.offset = array<i64: 1024>}
func.func @cross_entropy_grad_in_place() {
  %x = mega.input "x" [16, 16] : tensor<16x16xf32>
  %t = mega.input "t" [16] : tensor<16xi32>
  %lse = mega.input "lse" [16] : tensor<16xf32>
  %dl = mega.input "dloss" [] : tensor<f32>
  %z = mega.kernel "Copy"(%x) i [] f [] : (tensor<16x16xf32>) -> tensor<16x16xf32>
  %g = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %dl) i [16, 16] f [] : (tensor<16x16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x16xf32>
  %y = mega.kernel "Copy"(%g) i [] f [] : (tensor<16x16xf32>) -> tensor<16x16xf32>
  mega.output "y", %y : tensor<16x16xf32>
  return
}
func.func @cross_entropy_grad_logits_live() {
  %x = mega.input "x" [16, 16] : tensor<16x16xf32>
  %t = mega.input "t" [16] : tensor<16xi32>
  %lse = mega.input "lse" [16] : tensor<16xf32>
  %dl = mega.input "dloss" [] : tensor<f32>
  %z = mega.kernel "Copy"(%x) i [] f [] : (tensor<16x16xf32>) -> tensor<16x16xf32>
  %g = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %dl) i [16, 16] f [] : (tensor<16x16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x16xf32>
  %s = mega.kernel "Elementwise"(%z, %g) i [256, 2, 1, 256, 256, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
  mega.output "y", %s : tensor<16x16xf32>
  return
}

// -----

// A row block of the loss (mega-chunk-loss): CrossEntropyWithGrad writes the
// loss and lse into its two mega.dests operands, so its one result is plan
// output 2, the dlogits: over the logits (1024 bytes at offset 0).
// CHECK-LABEL: func.func @cross_entropy_with_grad_dests_in_place
// CHECK: %[[Z:.*]] = mega.kernel "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "CrossEntropyWithGrad"(%[[Z]], {{.*}} {mega.dests = 2 : i64, mega.offset = array<i64: 0>}
func.func @cross_entropy_with_grad_dests_in_place() {
  %x = mega.input "x" [16, 16] : tensor<16x16xf32>
  %t = mega.input "t" [16] : tensor<16xi32>
  %dl = mega.input "dloss" [] : tensor<f32>
  %loss = mega.empty : tensor<f32>
  %lse = mega.empty : tensor<16xf32>
  %z = mega.kernel "Copy"(%x) i [] f [] : (tensor<16x16xf32>) -> tensor<16x16xf32>
  %g = mega.kernel "CrossEntropyWithGrad"(%z, %t, %dl, %loss, %lse) i [16, 16, 32, 0] f [] {mega.dests = 2 : i64} : (tensor<16x16xf32>, tensor<16xi32>, tensor<f32>, tensor<f32>, tensor<16xf32>) -> tensor<16x16xf32>
  %y = mega.kernel "Copy"(%g) i [] f [] : (tensor<16x16xf32>) -> tensor<16x16xf32>
  mega.output "y", %y : tensor<16x16xf32>
  mega.output "loss", %loss : tensor<f32>
  mega.output "lse", %lse : tensor<16xf32>
  return
}

// -----

// Mixed precision: bf16 dlogits over bf16 logits (the same bytes, 512 at
// offset 0); bf16 dlogits of f32 logits are another size: their own buffer.
// CHECK-LABEL: func.func @cross_entropy_grad_bf16_in_place
// CHECK: %[[Z:.*]] = mega.kernel "Cast"(%{{.*}}) i [256] f [] {mega.offset = array<i64: 0>}
// CHECK: "CrossEntropyGrad"(%[[Z]], {{.*}} {mega.offset = array<i64: 0>} {{.*}} -> tensor<16x16xbf16>
// CHECK-LABEL: func.func @cross_entropy_grad_bf16_of_f32
// CHECK: %[[Z:.*]] = mega.kernel "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 0>}
// CHECK: "CrossEntropyGrad"(%[[Z]], {{.*}} {mega.offset = array<i64: 1024>} {{.*}} -> tensor<16x16xbf16>
func.func @cross_entropy_grad_bf16_in_place() {
  %x = mega.input "x" [16, 16] : tensor<16x16xf32>
  %t = mega.input "t" [16] : tensor<16xi32>
  %lse = mega.input "lse" [16] : tensor<16xf32>
  %dl = mega.input "dloss" [] : tensor<f32>
  %z = mega.kernel "Cast"(%x) i [256] f [] : (tensor<16x16xf32>) -> tensor<16x16xbf16>
  %g = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %dl) i [16, 16] f [] : (tensor<16x16xbf16>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x16xbf16>
  %y = mega.kernel "Cast"(%g) i [256] f [] : (tensor<16x16xbf16>) -> tensor<16x16xf32>
  mega.output "y", %y : tensor<16x16xf32>
  return
}
func.func @cross_entropy_grad_bf16_of_f32() {
  %x = mega.input "x" [16, 16] : tensor<16x16xf32>
  %t = mega.input "t" [16] : tensor<16xi32>
  %lse = mega.input "lse" [16] : tensor<16xf32>
  %dl = mega.input "dloss" [] : tensor<f32>
  %z = mega.kernel "Copy"(%x) i [] f [] : (tensor<16x16xf32>) -> tensor<16x16xf32>
  %g = mega.kernel "CrossEntropyGrad"(%z, %t, %lse, %dl) i [16, 16] f [] : (tensor<16x16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<f32>) -> tensor<16x16xbf16>
  %y = mega.kernel "Cast"(%g) i [256] f [] : (tensor<16x16xbf16>) -> tensor<16x16xf32>
  mega.output "y", %y : tensor<16x16xf32>
  return
}

// -----

// A mega.empty is arena memory of its own (512 bytes, placed first as the
// largest), live from the empty to its last reader: the kernels that fill it
// through views (mega.dests) get no memory of their own, and their input,
// live at those kernels, never shares the buffer.
// CHECK-LABEL: func.func @empty_filled_by_dests
// CHECK-SAME: mega.arena_bytes = 768 : i64
// CHECK: mega.kernel "Copy"(%{{.*}}) i [] f [] {mega.offset = array<i64: 512>}
// CHECK: mega.empty {mega.offset = array<i64: 0>} : tensor<128xf32>
// CHECK: mega.kernel "Copy"({{.*}}) i [] f [] {mega.dests = 1 : i64, mega.offset = array<i64>}
// CHECK: mega.kernel "Copy"({{.*}}) i [] f [] {mega.dests = 1 : i64, mega.offset = array<i64>}
func.func @empty_filled_by_dests() {
  %x = mega.input "x" [64] : tensor<64xf32>
  %a = mega.kernel "Copy"(%x) i [] f [] : (tensor<64xf32>) -> tensor<64xf32>
  %e = mega.empty : tensor<128xf32>
  %lo = mega.view %e offset 0 : tensor<128xf32> -> tensor<64xf32>
  %hi = mega.view %e offset 256 : tensor<128xf32> -> tensor<64xf32>
  mega.kernel "Copy"(%a, %lo) i [] f [] {mega.dests = 1 : i64} : (tensor<64xf32>, tensor<64xf32>) -> ()
  mega.kernel "Copy"(%a, %hi) i [] f [] {mega.dests = 1 : i64} : (tensor<64xf32>, tensor<64xf32>) -> ()
  %y = mega.kernel "Copy"(%e) i [] f [] : (tensor<128xf32>) -> tensor<128xf32>
  %z = mega.kernel "Copy"(%x) i [] f [] : (tensor<64xf32>) -> tensor<64xf32>
  mega.output "y", %y : tensor<128xf32>
  mega.output "z", %z : tensor<64xf32>
  return
}

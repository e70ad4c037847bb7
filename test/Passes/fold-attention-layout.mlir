// RUN: mega-opt %s -split-input-file -mega-fold-attention-layout | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-fold-attention-layout=enable=false | FileCheck %s --check-prefix=OFF

// B 2, S 8, H 2, hd 4. The bf16 forward: the q|k|v Transpose (which also
// rounded) becomes a Cast of the projection output in its own layout, read
// at element offsets 0, 8, 16 with strides (192, 4, 24); o is written as
// [B, S, H, hd] (strides (64, 4, 8)) and the head-merge Transpose (which
// rounded) becomes a Cast of o.
// CHECK-LABEL: func.func @forward_bf16
// CHECK: %[[C:.*]] = mega.kernel "Cast"(%arg0) i [384] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<2x8x3x2x4xbf16>
// CHECK-DAG: %[[Q:.*]] = mega.view %[[C]] offset 0 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK-DAG: %[[K:.*]] = mega.view %[[C]] offset 16 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK-DAG: %[[V:.*]] = mega.view %[[C]] offset 32 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"(%[[Q]], %[[K]], %[[V]]) i [4, 8, 4, 1, 2, 192, 4, 24, 64, 4, 8] f [5.000000e-01] : (tensor<368xbf16>, tensor<368xbf16>, tensor<368xbf16>) -> (tensor<2x8x2x4xf32>, tensor<2x2x8xf32>)
// CHECK: %[[O:.*]] = mega.kernel "Cast"(%[[A]]#0) i [128] f [] : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xbf16>
// CHECK-NOT: "Transpose"
// CHECK: mega.output "o", %[[O]] : tensor<2x8x2x4xbf16>
// OFF-LABEL: func.func @forward_bf16
// OFF-COUNT-2: "Transpose"
// OFF-NOT: "Cast"
func.func @forward_bf16(%x: tensor<2x8x3x2x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xbf16>
  %q1 = mega.view %t offset 0 : tensor<3x2x2x8x4xbf16> -> tensor<1x2x2x8x4xbf16>
  %k1 = mega.view %t offset 256 : tensor<3x2x2x8x4xbf16> -> tensor<1x2x2x8x4xbf16>
  %v1 = mega.view %t offset 512 : tensor<3x2x2x8x4xbf16> -> tensor<1x2x2x8x4xbf16>
  %q = mega.view %q1 offset 0 : tensor<1x2x2x8x4xbf16> -> tensor<2x2x8x4xbf16>
  %k = mega.view %k1 offset 0 : tensor<1x2x2x8x4xbf16> -> tensor<2x2x8x4xbf16>
  %v = mega.view %v1 offset 0 : tensor<1x2x2x8x4xbf16> -> tensor<2x2x8x4xbf16>
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>)
  %o = mega.kernel "Transpose"(%a#0) i [4, 2, 2, 8, 4, 0, 2, 1, 3] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x8x2x4xbf16>
  mega.output "o", %o : tensor<2x8x2x4xbf16>
  return
}

// -----

// The training step: AttentionGrad reads the same q|k|v views, o through
// its Cast with o's strides, and dout (a Transpose that rounded) as a Cast
// of [B, S, H, hd] with strides (64, 4, 8); dq|dk|dv stay contiguous with
// heads 2: (64, 32, 4).
// CHECK-LABEL: func.func @train_bf16
// CHECK: %[[C:.*]] = mega.kernel "Cast"(%arg0)
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"({{.*}}) i [4, 8, 4, 1, 2, 192, 4, 24, 64, 4, 8]
// CHECK: mega.kernel "Cast"(%[[A]]#0) i [128] f [] : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xbf16>
// CHECK: %[[OB:.*]] = mega.kernel "Cast"(%[[A]]#0)
// CHECK: %[[D:.*]] = mega.kernel "Cast"(%arg1) i [128] f [] : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xbf16>
// CHECK: mega.kernel "AttentionGrad"(%{{.*}}, %{{.*}}, %{{.*}}, %[[OB]], %[[A]]#1, %[[D]]) i [4, 8, 4, 1, 2, 192, 4, 24, 64, 4, 8, 64, 4, 8, 64, 32, 4] f [5.000000e-01]
// CHECK-NOT: "Transpose"
// OFF-LABEL: func.func @train_bf16
// OFF-COUNT-3: "Transpose"
func.func @train_bf16(%x: tensor<2x8x3x2x4xf32>, %g: tensor<2x8x2x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xbf16>
  %q = mega.view %t offset 0 : tensor<3x2x2x8x4xbf16> -> tensor<2x2x8x4xbf16>
  %k = mega.view %t offset 256 : tensor<3x2x2x8x4xbf16> -> tensor<2x2x8x4xbf16>
  %v = mega.view %t offset 512 : tensor<3x2x2x8x4xbf16> -> tensor<2x2x8x4xbf16>
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>)
  %o = mega.kernel "Transpose"(%a#0) i [4, 2, 2, 8, 4, 0, 2, 1, 3] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x8x2x4xbf16>
  %ob = mega.kernel "Cast"(%a#0) i [128] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x2x8x4xbf16>
  %d = mega.kernel "Transpose"(%g) i [4, 2, 8, 2, 4, 0, 2, 1, 3] f [] : (tensor<2x8x2x4xf32>) -> tensor<2x2x8x4xbf16>
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%q, %k, %v, %ob, %a#1, %d) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  mega.output "o", %o : tensor<2x8x2x4xbf16>
  mega.output "dq", %dq : tensor<2x2x8x4xf32>
  mega.output "dk", %dk : tensor<2x2x8x4xf32>
  mega.output "dv", %dv : tensor<2x2x8x4xf32>
  return
}

// -----

// fp32: the Attention reads the projection output itself (byte offsets 0,
// 32, 64), no Cast; o is written [B, S, H, hd] and is the output.
// CHECK-LABEL: func.func @forward_f32
// CHECK-NOT: "Cast"
// CHECK-DAG: %[[Q:.*]] = mega.view %arg0 offset 0 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
// CHECK-DAG: %[[K:.*]] = mega.view %arg0 offset 32 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
// CHECK-DAG: %[[V:.*]] = mega.view %arg0 offset 64 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"(%[[Q]], %[[K]], %[[V]]) i [4, 8, 4, 1, 2, 192, 4, 24, 64, 4, 8]
// CHECK-NOT: "Transpose"
// CHECK: mega.output "o", %[[A]]#0 : tensor<2x8x2x4xf32>
func.func @forward_f32(%x: tensor<2x8x3x2x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xf32>
  %q = mega.view %t offset 0 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %k = mega.view %t offset 512 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %v = mega.view %t offset 1024 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>)
  %o = mega.kernel "Transpose"(%a#0) i [4, 2, 2, 8, 4, 0, 2, 1, 3] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x8x2x4xf32>
  mega.output "o", %o : tensor<2x8x2x4xf32>
  return
}

// -----

// Must not fold: the q|k|v Transpose has another user (an output port),
// and o has another user besides its head merge (so its layout stays).
// CHECK-LABEL: func.func @other_users
// CHECK: "Transpose"
// CHECK: mega.kernel "Attention"({{.*}}) i [4, 8, 4, 1] f
// CHECK: "Transpose"
func.func @other_users(%x: tensor<2x8x3x2x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xf32>
  %q = mega.view %t offset 0 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %k = mega.view %t offset 512 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %v = mega.view %t offset 1024 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>)
  %o = mega.kernel "Transpose"(%a#0) i [4, 2, 2, 8, 4, 0, 2, 1, 3] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x8x2x4xf32>
  mega.output "t", %t : tensor<3x2x2x8x4xf32>
  mega.output "o", %o : tensor<2x8x2x4xf32>
  mega.output "raw", %a#0 : tensor<2x2x8x4xf32>
  return
}

// -----

// Must not fold: a Transpose that is not a head split (q|k|v of
// [3, B, H, S, hd] from [B, 3, S, H, hd]: the head dim is contiguous but
// the kernels' S and B disagree with the Attention's), and a dout Transpose
// that keeps the heads in place.
// CHECK-LABEL: func.func @wrong_shapes
// CHECK: "Transpose"
// CHECK: mega.kernel "Attention"({{.*}}) i [4, 4, 4, 1] f
// CHECK: "Transpose"
func.func @wrong_shapes(%x: tensor<2x8x3x2x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xf32>
  %q = mega.view %t offset 0 : tensor<3x2x2x8x4xf32> -> tensor<4x4x4xf32>
  %k = mega.view %t offset 512 : tensor<3x2x2x8x4xf32> -> tensor<4x4x4xf32>
  %v = mega.view %t offset 1024 : tensor<3x2x2x8x4xf32> -> tensor<4x4x4xf32>
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [4, 4, 4, 1] f [0.5] : (tensor<4x4x4xf32>, tensor<4x4x4xf32>, tensor<4x4x4xf32>) -> (tensor<4x4x4xf32>, tensor<4x4xf32>)
  %o = mega.kernel "Transpose"(%a#0) i [3, 4, 4, 4, 1, 0, 2] f [] : (tensor<4x4x4xf32>) -> tensor<4x4x4xf32>
  mega.output "o", %o : tensor<4x4x4xf32>
  return
}

// -----

// As lowering leaves bf16 operands (before mega-fold-casts): f32 Transposes
// and a Cast of each q, k, v slice and of dout. The slice Casts give way to
// one Cast of the whole projection output; dout's to a Cast of [B, S, H,
// hd].
// CHECK-LABEL: func.func @lowered_casts
// CHECK: %[[C:.*]] = mega.kernel "Cast"(%arg0) i [384] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<2x8x3x2x4xbf16>
// CHECK-DAG: mega.view %[[C]] offset 0 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK-DAG: mega.view %[[C]] offset 16 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK-DAG: mega.view %[[C]] offset 32 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"({{.*}}) i [4, 8, 4, 1, 2, 192, 4, 24, 64, 4, 8]
// CHECK-NOT: "Transpose"
// CHECK: %[[D:.*]] = mega.kernel "Cast"(%arg1) i [128] f [] : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xbf16>
// CHECK: mega.kernel "AttentionGrad"({{.*}}, %[[D]]) i [4, 8, 4, 1, 2, 192, 4, 24, 64, 4, 8, 64, 4, 8, 64, 32, 4]
// CHECK-NOT: "Transpose"
// CHECK: mega.output "o", %[[A]]#0 : tensor<2x8x2x4xf32>
func.func @lowered_casts(%x: tensor<2x8x3x2x4xf32>, %g: tensor<2x8x2x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xf32>
  %q = mega.view %t offset 0 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %k = mega.view %t offset 512 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %v = mega.view %t offset 1024 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %qb = mega.kernel "Cast"(%q) i [128] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x2x8x4xbf16>
  %kb = mega.kernel "Cast"(%k) i [128] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x2x8x4xbf16>
  %vb = mega.kernel "Cast"(%v) i [128] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x2x8x4xbf16>
  %a:2 = mega.kernel "Attention"(%qb, %kb, %vb) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>)
  %o = mega.kernel "Transpose"(%a#0) i [4, 2, 2, 8, 4, 0, 2, 1, 3] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x8x2x4xf32>
  %ob = mega.kernel "Cast"(%a#0) i [128] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x2x8x4xbf16>
  %d = mega.kernel "Transpose"(%g) i [4, 2, 8, 2, 4, 0, 2, 1, 3] f [] : (tensor<2x8x2x4xf32>) -> tensor<2x2x8x4xf32>
  %db = mega.kernel "Cast"(%d) i [128] f [] : (tensor<2x2x8x4xf32>) -> tensor<2x2x8x4xbf16>
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%qb, %kb, %vb, %ob, %a#1, %db) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  mega.output "o", %o : tensor<2x8x2x4xf32>
  mega.output "dq", %dq : tensor<2x2x8x4xf32>
  mega.output "dk", %dk : tensor<2x2x8x4xf32>
  mega.output "dv", %dv : tensor<2x2x8x4xf32>
  return
}

// -----

// Must not fold: q comes from another tensor than k and v (q, k, v share one
// layout group, so all three must be views of the same Transpose).
// CHECK-LABEL: func.func @mixed_sources
// CHECK: "Transpose"
// CHECK: mega.kernel "Attention"({{.*}}) i [4, 8, 4, 1] f
func.func @mixed_sources(%x: tensor<2x8x3x2x4xf32>, %q: tensor<2x2x8x4xf32>) {
  %t = mega.kernel "Transpose"(%x) i [5, 2, 8, 3, 2, 4, 2, 0, 3, 1, 4] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<3x2x2x8x4xf32>
  %k = mega.view %t offset 512 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %v = mega.view %t offset 1024 : tensor<3x2x2x8x4xf32> -> tensor<2x2x8x4xf32>
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>)
  mega.output "o", %a#0 : tensor<2x2x8x4xf32>
  return
}

// -----

// dq|dk|dv (step 4): the gradients' join for the projection's backward, a
// concat [3, B, H, S, hd] and a Transpose to [B, S, 3, H, hd], becomes one
// mega.empty of that layout that AttentionGrad writes through three views
// (mega.dests) at byte offsets 0, 32, 64 with strides (192, 4, 24); the
// Transpose's users read the buffer. When the Transpose also rounded, they
// read a Cast of it.
// CHECK-LABEL: func.func @grads
// CHECK: %[[G:.*]] = mega.empty : tensor<2x8x3x2x4xf32>
// CHECK-DAG: %[[DQ:.*]] = mega.view %[[G]] offset 0 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
// CHECK-DAG: %[[DK:.*]] = mega.view %[[G]] offset 32 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
// CHECK-DAG: %[[DV:.*]] = mega.view %[[G]] offset 64 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
// CHECK: mega.kernel "AttentionGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %arg5, %[[DQ]], %[[DK]], %[[DV]]) i [4, 8, 4, 1, 2, 64, 32, 4, 64, 32, 4, 64, 32, 4, 192, 4, 24] f [5.000000e-01] {mega.dests = 3 : i64}
// CHECK-NOT: "Transpose"
// CHECK-NOT: mega.concat
// CHECK: mega.output "g", %[[G]] : tensor<2x8x3x2x4xf32>
// CHECK-LABEL: func.func @grads_rounded
// CHECK: %[[G:.*]] = mega.empty : tensor<2x8x3x2x4xf32>
// CHECK: mega.kernel "AttentionGrad"
// CHECK: %[[C:.*]] = mega.kernel "Cast"(%[[G]]) i [384] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<2x8x3x2x4xbf16>
// CHECK: mega.output "g", %[[C]] : tensor<2x8x3x2x4xbf16>
// OFF-LABEL: func.func @grads
// OFF-NOT: mega.empty
// OFF: "Transpose"
func.func @grads(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>) {
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  %v2 = mega.view %dv offset 0 : tensor<2x2x8x4xf32> -> tensor<1x2x2x8x4xf32>
  %v1 = mega.view %dk offset 0 : tensor<2x2x8x4xf32> -> tensor<1x2x2x8x4xf32>
  %v0 = mega.view %dq offset 0 : tensor<2x2x8x4xf32> -> tensor<1x2x2x8x4xf32>
  %c = mega.concat %v0, %v1, %v2 {dim = 0 : i64} : tensor<1x2x2x8x4xf32>, tensor<1x2x2x8x4xf32>, tensor<1x2x2x8x4xf32> -> tensor<3x2x2x8x4xf32>
  %t = mega.kernel "Transpose"(%c) i [5, 3, 2, 2, 8, 4, 1, 3, 0, 2, 4] f [] : (tensor<3x2x2x8x4xf32>) -> tensor<2x8x3x2x4xf32>
  mega.output "g", %t : tensor<2x8x3x2x4xf32>
  return
}
func.func @grads_rounded(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>) {
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  %c = mega.concat %dq, %dk, %dv {dim = 0 : i64} : tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32> -> tensor<6x2x8x4xf32>
  %c5 = mega.view %c offset 0 : tensor<6x2x8x4xf32> -> tensor<3x2x2x8x4xf32>
  %t = mega.kernel "Transpose"(%c5) i [5, 3, 2, 2, 8, 4, 1, 3, 0, 2, 4] f [] : (tensor<3x2x2x8x4xf32>) -> tensor<2x8x3x2x4xbf16>
  mega.output "g", %t : tensor<2x8x3x2x4xbf16>
  return
}

// -----

// Must not fold: the join puts dk before dq (it is not the projection's
// q|k|v order), and a join whose concat is also read elsewhere.
// CHECK-LABEL: func.func @grads_other_order
// CHECK-NOT: mega.empty
// CHECK: "Transpose"
// CHECK-LABEL: func.func @grads_concat_read
// CHECK-NOT: mega.empty
// CHECK: "Transpose"
func.func @grads_other_order(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>) {
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  %c = mega.concat %dk, %dq, %dv {dim = 0 : i64} : tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32> -> tensor<6x2x8x4xf32>
  %c5 = mega.view %c offset 0 : tensor<6x2x8x4xf32> -> tensor<3x2x2x8x4xf32>
  %t = mega.kernel "Transpose"(%c5) i [5, 3, 2, 2, 8, 4, 1, 3, 0, 2, 4] f [] : (tensor<3x2x2x8x4xf32>) -> tensor<2x8x3x2x4xf32>
  mega.output "g", %t : tensor<2x8x3x2x4xf32>
  return
}
func.func @grads_concat_read(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>) {
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  %v2 = mega.view %dv offset 0 : tensor<2x2x8x4xf32> -> tensor<1x2x2x8x4xf32>
  %v1 = mega.view %dk offset 0 : tensor<2x2x8x4xf32> -> tensor<1x2x2x8x4xf32>
  %v0 = mega.view %dq offset 0 : tensor<2x2x8x4xf32> -> tensor<1x2x2x8x4xf32>
  %c = mega.concat %v0, %v1, %v2 {dim = 0 : i64} : tensor<1x2x2x8x4xf32>, tensor<1x2x2x8x4xf32>, tensor<1x2x2x8x4xf32> -> tensor<3x2x2x8x4xf32>
  %t = mega.kernel "Transpose"(%c) i [5, 3, 2, 2, 8, 4, 1, 3, 0, 2, 4] f [] : (tensor<3x2x2x8x4xf32>) -> tensor<2x8x3x2x4xf32>
  mega.output "g", %t : tensor<2x8x3x2x4xf32>
  mega.output "joined", %c : tensor<3x2x2x8x4xf32>
  return
}

// -----

// A pipeline's backward handed o in rows (mega-port-sources): AttentionGrad
// reads o, a Transpose [B, S, H, hd] -> [B, H, S, hd] of the rows that only
// it reads, from the rows with strides (64, 4, 8), like dout; the
// Transpose goes. The product that reads the rows too is untouched.
// CHECK-LABEL: func.func @o_from_rows
// CHECK-NOT: "Transpose"
// CHECK: mega.kernel "AttentionGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %arg5) i [4, 8, 4, 1, 2, 64, 32, 4, 64, 4, 8, 64, 32, 4, 64, 32, 4] f [5.000000e-01]
// CHECK: mega.kernel "MatMul"(%arg3,
// OFF-LABEL: func.func @o_from_rows
// OFF: "Transpose"
func.func @o_from_rows(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %rows: tensor<2x8x2x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>, %w: tensor<8x8xbf16>) {
  %o = mega.kernel "Transpose"(%rows) i [4, 2, 8, 2, 4, 0, 2, 1, 3] f [] : (tensor<2x8x2x4xbf16>) -> tensor<2x2x8x4xbf16>
  %dq, %dk, %dv = mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d) i [4, 8, 4, 1] f [0.5] : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>)
  %p = mega.kernel "MatMul"(%rows, %w) i [1, 16, 8, 8, 0, 0, 8, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<2x8x2x4xbf16>, tensor<8x8xbf16>) -> tensor<16x8xf32>
  mega.output "dq", %dq : tensor<2x2x8x4xf32>
  mega.output "dk", %dk : tensor<2x2x8x4xf32>
  mega.output "dv", %dv : tensor<2x2x8x4xf32>
  mega.output "p", %p : tensor<16x8xf32>
  return
}

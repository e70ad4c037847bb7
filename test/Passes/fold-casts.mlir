// RUN: mega-opt %s -split-input-file -mega-fold-casts | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-fold-casts=norm-attention=false | FileCheck %s --check-prefix=OFF

// A Transpose read only through views that are cast: it writes bf16 itself,
// the views are retyped with halved byte offsets, the casts are gone.
// CHECK-LABEL: func.func @transpose_views
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%{{.*}}) i [3, 4, 2, 3, 1, 0, 2] f [] : (tensor<4x2x3xf32>) -> tensor<2x4x3xbf16>
// CHECK: %[[A:.*]] = mega.view %[[T]] offset 0 : tensor<2x4x3xbf16> -> tensor<4x3xbf16>
// CHECK: %[[B:.*]] = mega.view %[[T]] offset 24 : tensor<2x4x3xbf16> -> tensor<4x3xbf16>
// CHECK-NOT: "Cast"
// CHECK: mega.kernel "MatMul"(%[[A]], %[[B]])
func.func @transpose_views(%x: tensor<4x2x3xf32>) {
  %t = mega.kernel "Transpose"(%x) i [3, 4, 2, 3, 1, 0, 2] f [] : (tensor<4x2x3xf32>) -> tensor<2x4x3xf32>
  %a = mega.view %t offset 0 : tensor<2x4x3xf32> -> tensor<4x3xf32>
  %b = mega.view %t offset 48 : tensor<2x4x3xf32> -> tensor<4x3xf32>
  %ab = mega.kernel "Cast"(%a) i [12] f [] : (tensor<4x3xf32>) -> tensor<4x3xbf16>
  %bb = mega.kernel "Cast"(%b) i [12] f [] : (tensor<4x3xf32>) -> tensor<4x3xbf16>
  %c = mega.kernel "MatMul"(%ab, %bb) i [1, 4, 4, 3, 0, 1, 3, 3, 4, 0, 0, 0] f [1.0, 0.0] : (tensor<4x3xbf16>, tensor<4x3xbf16>) -> tensor<4x4xf32>
  mega.output "c", %c : tensor<4x4xf32>
  return
}

// -----

// One Elementwise result is only cast (it becomes bf16); the other is also
// an output port and stays f32, its bf16 copy a third output.
// CHECK-LABEL: func.func @elementwise
// CHECK: %[[E:.*]]:3 = mega.kernel "Elementwise"(%{{.*}}) i [8, 1, 3, 8, 0, 0, 0, 0, 15, 1, 0, 0, 1, 0, 0, 0, 1, 0, 2, 0, 1, 1, 1, 0] f [] : (tensor<8xf32>) -> (tensor<8xf32>, tensor<8xbf16>, tensor<8xbf16>)
// CHECK-NOT: "Cast"
// CHECK: mega.output "y", %[[E]]#0 : tensor<8xf32>
// CHECK: mega.output "yb", %[[E]]#2 : tensor<8xbf16>
// CHECK: mega.output "g", %[[E]]#1 : tensor<8xbf16>
func.func @elementwise(%x: tensor<8xf32>) {
  %y, %g = mega.kernel "Elementwise"(%x) i [8, 1, 2, 8, 0, 0, 0, 0, 15, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0] f [] : (tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>)
  %yb = mega.kernel "Cast"(%y) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  %gb = mega.kernel "Cast"(%g) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  mega.output "y", %y : tensor<8xf32>
  mega.output "yb", %yb : tensor<8xbf16>
  mega.output "g", %gb : tensor<8xbf16>
  return
}

// -----

// LayerNorm's y, only cast, becomes bf16 (mean and rstd stay f32); not
// with norm-attention=false (a backend without a bf16 y).
// CHECK-LABEL: func.func @layernorm
// CHECK: %[[Y:.*]]:3 = mega.kernel "LayerNorm"({{.*}}) -> (tensor<2x3xbf16>, tensor<2xf32>, tensor<2xf32>)
// CHECK-NEXT: %[[V:.*]] = mega.view %[[Y]]#0 offset 6 : tensor<2x3xbf16> -> tensor<3xbf16>
// CHECK-NOT: "Cast"
// CHECK: mega.kernel "MatMul"(%[[Y]]#0, %{{.*}})
// CHECK: mega.output "row1", %[[V]] : tensor<3xbf16>
// OFF-LABEL: func.func @layernorm
// OFF: -> (tensor<2x3xf32>, tensor<2xf32>, tensor<2xf32>)
// OFF-COUNT-2: "Cast"
func.func @layernorm(%x: tensor<2x3xf32>, %w: tensor<3xf32>, %b: tensor<3xf32>, %m: tensor<3x4xbf16>) {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [2, 3] f [1.0e-05] : (tensor<2x3xf32>, tensor<3xf32>, tensor<3xf32>) -> (tensor<2x3xf32>, tensor<2xf32>, tensor<2xf32>)
  %r = mega.view %y#0 offset 12 : tensor<2x3xf32> -> tensor<3xf32>
  %yb = mega.kernel "Cast"(%y#0) i [6] f [] : (tensor<2x3xf32>) -> tensor<2x3xbf16>
  %rb = mega.kernel "Cast"(%r) i [3] f [] : (tensor<3xf32>) -> tensor<3xbf16>
  %c = mega.kernel "MatMul"(%yb, %m) i [1, 2, 4, 3, 0, 0, 3, 4, 4, 0, 0, 0] f [1.0, 0.0] : (tensor<2x3xbf16>, tensor<3x4xbf16>) -> tensor<2x4xf32>
  mega.output "c", %c : tensor<2x4xf32>
  mega.output "row1", %rb : tensor<3xbf16>
  mega.output "mean", %y#1 : tensor<2xf32>
  return
}

// -----

// Attention's o: a Cast (for the gradient) and a Transpose read it, the
// Transpose's result only cast in turn. Both casts go: the Transpose's (it
// writes bf16), then o's (o becomes bf16, lse stays f32; the Transpose moves
// bf16 -> bf16) although o's cast comes first; AttentionGrad reads o.
// CHECK-LABEL: func.func @attention
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"(%arg0, %arg1, %arg2) {{.*}} -> (tensor<2x4x8xbf16>, tensor<2x4xf32>)
// CHECK-NOT: "Cast"
// CHECK: %[[T:.*]] = mega.kernel "Transpose"(%[[A]]#0) i [3, 2, 4, 8, 1, 0, 2] f [] : (tensor<2x4x8xbf16>) -> tensor<4x2x8xbf16>
// CHECK-NOT: "Cast"
// CHECK: mega.kernel "AttentionGrad"(%arg0, %arg1, %arg2, %[[A]]#0, %[[A]]#1, %arg3)
// CHECK: mega.output "t", %[[T]] : tensor<4x2x8xbf16>
// OFF-LABEL: func.func @attention
// OFF: -> (tensor<2x4x8xf32>, tensor<2x4xf32>)
// OFF-NEXT: "Cast"
// OFF-NEXT: "Transpose"{{.*}} : (tensor<2x4x8xf32>) -> tensor<4x2x8xbf16>
// OFF-NOT: "Cast"
func.func @attention(%q: tensor<2x4x8xbf16>, %k: tensor<2x4x8xbf16>, %v: tensor<2x4x8xbf16>, %dout: tensor<2x4x8xbf16>) {
  %a:2 = mega.kernel "Attention"(%q, %k, %v) i [2, 4, 8, 1] f [0.35] : (tensor<2x4x8xbf16>, tensor<2x4x8xbf16>, tensor<2x4x8xbf16>) -> (tensor<2x4x8xf32>, tensor<2x4xf32>)
  %ob = mega.kernel "Cast"(%a#0) i [64] f [] : (tensor<2x4x8xf32>) -> tensor<2x4x8xbf16>
  %t = mega.kernel "Transpose"(%a#0) i [3, 2, 4, 8, 1, 0, 2] f [] : (tensor<2x4x8xf32>) -> tensor<4x2x8xf32>
  %tb = mega.kernel "Cast"(%t) i [64] f [] : (tensor<4x2x8xf32>) -> tensor<4x2x8xbf16>
  %g:3 = mega.kernel "AttentionGrad"(%q, %k, %v, %ob, %a#1, %dout) i [2, 4, 8, 1] f [0.35] : (tensor<2x4x8xbf16>, tensor<2x4x8xbf16>, tensor<2x4x8xbf16>, tensor<2x4x8xbf16>, tensor<2x4xf32>, tensor<2x4x8xbf16>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
  mega.output "t", %tb : tensor<4x2x8xbf16>
  mega.output "dq", %g#0 : tensor<2x4x8xf32>
  mega.output "dk", %g#1 : tensor<2x4x8xf32>
  mega.output "dv", %g#2 : tensor<2x4x8xf32>
  return
}

// -----

// An Elementwise result that a ReduceSum also reads: the Elementwise gets a
// third output, bf16, stored from the same register right after result 0's
// store (before r0 is overwritten); the casts (one through a view) read it,
// the ReduceSum keeps the f32 result. Same with norm-attention=false.
// CHECK-LABEL: func.func @second_output
// CHECK: %[[E:.*]]:3 = mega.kernel "Elementwise"(%arg0, %arg1) i [12, 2, 3, 12, 12, 0, 0, 0, 0, 0, 1, 1, 0, 16, 0, 0, 1, 1, 0, 0, 0, 1, 0, 2, 0, 7, 0, 0, 0, 1, 0, 1, 0] f [] : (tensor<4x3xf32>, tensor<4x3xf32>) -> (tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xbf16>)
// CHECK: %[[H:.*]] = mega.view %[[E]]#2 offset 12 : tensor<4x3xbf16> -> tensor<2x3xbf16>
// CHECK-NOT: "Cast"
// CHECK-NOT: mega.view
// CHECK: mega.kernel "ReduceSum"(%[[E]]#0)
// CHECK: mega.kernel "MatMul"(%[[E]]#2, %arg2)
// CHECK: mega.output "h", %[[H]] : tensor<2x3xbf16>
// CHECK: mega.output "neg", %[[E]]#1 : tensor<4x3xf32>
// OFF-LABEL: func.func @second_output
// OFF: -> (tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xbf16>)
// OFF-NOT: "Cast"
func.func @second_output(%x: tensor<4x3xf32>, %d: tensor<4x3xf32>, %w: tensor<3x5xbf16>) {
  %e:2 = mega.kernel "Elementwise"(%x, %d) i [12, 2, 2, 12, 12, 0, 0, 0, 0, 0, 1, 1, 0, 16, 0, 0, 1, 1, 0, 0, 0, 7, 0, 0, 0, 1, 0, 1, 0] f [] : (tensor<4x3xf32>, tensor<4x3xf32>) -> (tensor<4x3xf32>, tensor<4x3xf32>)
  %eb = mega.kernel "Cast"(%e#0) i [12] f [] : (tensor<4x3xf32>) -> tensor<4x3xbf16>
  %h = mega.view %e#0 offset 24 : tensor<4x3xf32> -> tensor<2x3xf32>
  %hb = mega.kernel "Cast"(%h) i [6] f [] : (tensor<2x3xf32>) -> tensor<2x3xbf16>
  %s = mega.kernel "ReduceSum"(%e#0) i [4, 3, 0] f [] : (tensor<4x3xf32>) -> tensor<3xf32>
  %c = mega.kernel "MatMul"(%eb, %w) i [1, 4, 5, 3, 0, 0, 3, 5, 5, 0, 0, 0] f [1.0, 0.0] : (tensor<4x3xbf16>, tensor<3x5xbf16>) -> tensor<4x5xf32>
  mega.output "s", %s : tensor<3xf32>
  mega.output "c", %c : tensor<4x5xf32>
  mega.output "h", %hb : tensor<2x3xbf16>
  mega.output "neg", %e#1 : tensor<4x3xf32>
  return
}

// -----

// Casts that stay: LayerNorm's mean (only y may be bf16); Attention's o
// that a kernel reads in f32; a Transpose (no second output) read by a
// ReduceSum; an Elementwise with the most outputs the GPU kernel takes.
// CHECK-LABEL: func.func @kept
// CHECK: %[[Y:.*]]:3 = mega.kernel "LayerNorm"{{.*}} -> (tensor<2x3xf32>, tensor<2xf32>, tensor<2xf32>)
// CHECK: mega.kernel "Cast"(%[[Y]]#1)
// CHECK: %[[T:.*]] = mega.kernel "Transpose"{{.*}} -> tensor<3x2xf32>
// CHECK: mega.kernel "Cast"(%[[T]])
// CHECK: mega.kernel "ReduceSum"(%[[T]])
// CHECK: %[[A:.*]]:2 = mega.kernel "Attention"{{.*}} -> (tensor<1x2x3xf32>, tensor<1x2xf32>)
// CHECK: mega.kernel "Cast"(%[[A]]#0)
// CHECK: %[[E:.*]]:8 = mega.kernel "Elementwise"{{.*}} -> (tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>)
// CHECK: mega.kernel "Cast"(%[[E]]#0)
// OFF-LABEL: func.func @kept
// OFF-COUNT-4: "Cast"
func.func @kept(%x: tensor<2x3xf32>, %w: tensor<3xf32>, %b: tensor<3xf32>, %q: tensor<1x2x3xf32>, %z: tensor<2xf32>) {
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %b) i [2, 3] f [1.0e-05] : (tensor<2x3xf32>, tensor<3xf32>, tensor<3xf32>) -> (tensor<2x3xf32>, tensor<2xf32>, tensor<2xf32>)
  %mb = mega.kernel "Cast"(%y#1) i [2] f [] : (tensor<2xf32>) -> tensor<2xbf16>
  %t = mega.kernel "Transpose"(%x) i [2, 2, 3, 1, 0] f [] : (tensor<2x3xf32>) -> tensor<3x2xf32>
  %tb = mega.kernel "Cast"(%t) i [6] f [] : (tensor<3x2xf32>) -> tensor<3x2xbf16>
  %s = mega.kernel "ReduceSum"(%t) i [3, 2, 0] f [] : (tensor<3x2xf32>) -> tensor<2xf32>
  %a:2 = mega.kernel "Attention"(%q, %q, %q) i [1, 2, 3, 0] f [0.5] : (tensor<1x2x3xf32>, tensor<1x2x3xf32>, tensor<1x2x3xf32>) -> (tensor<1x2x3xf32>, tensor<1x2xf32>)
  %ab = mega.kernel "Cast"(%a#0) i [6] f [] : (tensor<1x2x3xf32>) -> tensor<1x2x3xbf16>
  %as = mega.kernel "ReduceSum"(%a#0) i [2, 3, 0] f [] : (tensor<1x2x3xf32>) -> tensor<3xf32>
  %e:8 = mega.kernel "Elementwise"(%z) i [2, 1, 8, 2, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 4, 0, 1, 0, 5, 0, 1, 0, 6, 0, 1, 0, 7, 0] f [] : (tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>)
  %eb = mega.kernel "Cast"(%e#0) i [2] f [] : (tensor<2xf32>) -> tensor<2xbf16>
  mega.output "mb", %mb : tensor<2xbf16>
  mega.output "tb", %tb : tensor<3x2xbf16>
  mega.output "s", %s : tensor<2xf32>
  mega.output "ab", %ab : tensor<1x2x3xbf16>
  mega.output "as", %as : tensor<3xf32>
  mega.output "e0", %e#0 : tensor<2xf32>
  mega.output "eb", %eb : tensor<2xbf16>
  return
}

// -----

// A MatMul with an epilogue writes its D in bf16 when D is only cast (the
// GELU activation; a bias epilogue's D); GELU's aux stays f32. So does a
// plain bf16 product that overwrites C (beta 0: the logits).
// CHECK-LABEL: func.func @matmul_epilogue
// CHECK: %[[G:.*]]:2 = mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 3] f [{{.*}}] : (tensor<4x2xbf16>, tensor<2x8xbf16>, tensor<8xf32>) -> (tensor<4x8xbf16>, tensor<4x8xf32>)
// CHECK: %[[B:.*]] = mega.kernel "MatMul"(%arg0, %arg1, %arg2) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 1] f [{{.*}} -> tensor<4x8xbf16>
// CHECK-NOT: "Cast"(%[[B]])
// CHECK: %[[P:.*]] = mega.kernel "MatMul"(%arg0, %arg1) {{.*}} -> tensor<4x8xbf16>
// CHECK-NOT: "Cast"
// CHECK: mega.output "act", %[[G]]#0 : tensor<4x8xbf16>
// CHECK: mega.output "pre", %[[G]]#1 : tensor<4x8xf32>
// CHECK: mega.output "y", %[[B]] : tensor<4x8xbf16>
// CHECK: mega.output "p", %[[P]] : tensor<4x8xbf16>
func.func @matmul_epilogue(%a: tensor<4x2xbf16>, %w: tensor<2x8xbf16>, %b: tensor<8xf32>) {
  %g:2 = mega.kernel "MatMul"(%a, %w, %b) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 3] f [1.0, 0.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>)
  %gb = mega.kernel "Cast"(%g#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %y = mega.kernel "MatMul"(%a, %w, %b) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>, tensor<8xf32>) -> tensor<4x8xf32>
  %yb = mega.kernel "Cast"(%y) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %p = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>) -> tensor<4x8xf32>
  %pb = mega.kernel "Cast"(%p) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "act", %gb : tensor<4x8xbf16>
  mega.output "pre", %g#1 : tensor<4x8xf32>
  mega.output "y", %yb : tensor<4x8xbf16>
  mega.output "p", %pb : tensor<4x8xbf16>
  return
}

// -----

// A plain MatMul keeps f32 C and its Cast where C would be read (beta 1:
// the sum needs f32), where its operands are f32 (no tensor-core product),
// where alpha is 0, and where C is not one contiguous block (ldc 16 > N).
// CHECK-LABEL: func.func @matmul_plain_kept
// CHECK: %[[A:.*]] = mega.kernel "MatMul"(%arg0, %arg1) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.000000e+00, 1.000000e+00] : (tensor<4x2xbf16>, tensor<2x8xbf16>) -> tensor<4x8xf32>
// CHECK-NEXT: mega.kernel "Cast"(%[[A]])
// CHECK: %[[F:.*]] = mega.kernel "MatMul"(%arg2, %arg3) {{.*}} -> tensor<4x8xf32>
// CHECK-NEXT: mega.kernel "Cast"(%[[F]])
// CHECK: %[[Z:.*]] = mega.kernel "MatMul"(%arg0, %arg1) {{.*}} f [0.000000e+00, 0.000000e+00] {{.*}} -> tensor<4x8xf32>
// CHECK-NEXT: mega.kernel "Cast"(%[[Z]])
// CHECK: %[[S:.*]] = mega.kernel "MatMul"(%arg0, %arg1) i [2, 4, 8, 1, 0, 0, 1, 8, 16, 4, 8, 64] {{.*}} -> tensor<2x4x16xf32>
// CHECK-NEXT: mega.kernel "Cast"(%[[S]])
func.func @matmul_plain_kept(%a: tensor<4x2xbf16>, %w: tensor<2x8xbf16>, %af: tensor<4x2xf32>, %wf: tensor<2x8xf32>, %c: tensor<4x8xf32>) {
  %acc = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 1.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>) -> tensor<4x8xf32>
  %accb = mega.kernel "Cast"(%acc) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %f = mega.kernel "MatMul"(%af, %wf) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<4x2xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %fb = mega.kernel "Cast"(%f) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %z = mega.kernel "MatMul"(%a, %w) i [1, 4, 8, 2, 0, 0, 2, 8, 8, 0, 0, 0] f [0.0, 0.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>) -> tensor<4x8xf32>
  %zb = mega.kernel "Cast"(%z) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %st = mega.kernel "MatMul"(%a, %w) i [2, 4, 8, 1, 0, 0, 1, 8, 16, 4, 8, 64] f [1.0, 0.0] : (tensor<4x2xbf16>, tensor<2x8xbf16>) -> tensor<2x4x16xf32>
  %stb = mega.kernel "Cast"(%st) i [128] f [] : (tensor<2x4x16xf32>) -> tensor<2x4x16xbf16>
  mega.output "acc", %accb : tensor<4x8xbf16>
  mega.output "f", %fb : tensor<4x8xbf16>
  mega.output "z", %zb : tensor<4x8xbf16>
  mega.output "s", %stb : tensor<2x4x16xbf16>
  return
}

// -----

// Step 5: a mega.empty that AttentionGrad fills through views (mega.dests)
// and that only a Cast reads becomes bf16 itself: the views halve their
// byte offsets, the kernel rounds dq, dk, dv on store, the Cast goes.
// CHECK-LABEL: func.func @grads_buffer
// CHECK: %[[G:.*]] = mega.empty : tensor<2x8x3x2x4xbf16>
// CHECK-DAG: %[[DQ:.*]] = mega.view %[[G]] offset 0 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK-DAG: %[[DK:.*]] = mega.view %[[G]] offset 16 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK-DAG: %[[DV:.*]] = mega.view %[[G]] offset 32 : tensor<2x8x3x2x4xbf16> -> tensor<368xbf16>
// CHECK: mega.kernel "AttentionGrad"({{.*}}, %[[DQ]], %[[DK]], %[[DV]])
// CHECK-NOT: "Cast"
// CHECK: mega.output "g", %[[G]] : tensor<2x8x3x2x4xbf16>
func.func @grads_buffer(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>) {
  %g = mega.empty : tensor<2x8x3x2x4xf32>
  %dq = mega.view %g offset 0 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  %dk = mega.view %g offset 32 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  %dv = mega.view %g offset 64 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d, %dq, %dk, %dv) i [4, 8, 4, 1, 2, 64, 32, 4, 64, 32, 4, 64, 32, 4, 192, 4, 24] f [0.5] {mega.dests = 3 : i64} : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>, tensor<368xf32>, tensor<368xf32>, tensor<368xf32>) -> ()
  %c = mega.kernel "Cast"(%g) i [384] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<2x8x3x2x4xbf16>
  mega.output "g", %c : tensor<2x8x3x2x4xbf16>
  return
}

// -----

// Must not fold: the buffer is also read as f32 (a ReduceSum), or one of
// the kernel's destinations lies elsewhere (it rounds all or none).
// CHECK-LABEL: func.func @grads_buffer_f32_reader
// CHECK: mega.empty : tensor<2x8x3x2x4xf32>
// CHECK: "Cast"
// CHECK-LABEL: func.func @grads_buffer_dest_elsewhere
// CHECK: mega.empty : tensor<2x8x3x2x4xf32>
// CHECK: "Cast"
func.func @grads_buffer_f32_reader(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>) {
  %g = mega.empty : tensor<2x8x3x2x4xf32>
  %dq = mega.view %g offset 0 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  %dk = mega.view %g offset 32 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  %dv = mega.view %g offset 64 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d, %dq, %dk, %dv) i [4, 8, 4, 1, 2, 64, 32, 4, 64, 32, 4, 64, 32, 4, 192, 4, 24] f [0.5] {mega.dests = 3 : i64} : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>, tensor<368xf32>, tensor<368xf32>, tensor<368xf32>) -> ()
  %c = mega.kernel "Cast"(%g) i [384] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<2x8x3x2x4xbf16>
  %r = mega.view %g offset 0 : tensor<2x8x3x2x4xf32> -> tensor<16x24xf32>
  %s = mega.kernel "ReduceSum"(%r) i [16, 24, 0] f [] : (tensor<16x24xf32>) -> tensor<24xf32>
  mega.output "g", %c : tensor<2x8x3x2x4xbf16>
  mega.output "s", %s : tensor<24xf32>
  return
}
func.func @grads_buffer_dest_elsewhere(%q: tensor<2x2x8x4xbf16>, %k: tensor<2x2x8x4xbf16>, %v: tensor<2x2x8x4xbf16>, %o: tensor<2x2x8x4xbf16>, %lse: tensor<2x2x8xf32>, %d: tensor<2x2x8x4xbf16>, %other: tensor<368xf32>) {
  %g = mega.empty : tensor<2x8x3x2x4xf32>
  %dq = mega.view %g offset 0 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  %dk = mega.view %g offset 32 : tensor<2x8x3x2x4xf32> -> tensor<368xf32>
  mega.kernel "AttentionGrad"(%q, %k, %v, %o, %lse, %d, %dq, %dk, %other) i [4, 8, 4, 1, 2, 64, 32, 4, 64, 32, 4, 64, 32, 4, 192, 4, 24] f [0.5] {mega.dests = 3 : i64} : (tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8x4xbf16>, tensor<2x2x8xf32>, tensor<2x2x8x4xbf16>, tensor<368xf32>, tensor<368xf32>, tensor<368xf32>) -> ()
  %c = mega.kernel "Cast"(%g) i [384] f [] : (tensor<2x8x3x2x4xf32>) -> tensor<2x8x3x2x4xbf16>
  mega.output "g", %c : tensor<2x8x3x2x4xbf16>
  return
}

// -----

// Step 6: a product rounded by mega-mixed-precision (round-products) is a
// Cast to bf16 and one back to f32 in front of an Elementwise: the first
// folds into the MatMul (bf16 C), the second goes as the Elementwise reads
// the bf16 value itself (through a bf16 copy of the view between), widening
// it on load. A widening Cast with any other reader stays.
// CHECK-LABEL: func.func @rounded_product
// CHECK: %[[P:.*]] = mega.kernel "MatMul"(%arg0, %arg1) {{.*}} -> tensor<8x64xbf16>
// CHECK-NEXT: %[[V:.*]] = mega.view %[[P]] offset 0 : tensor<8x64xbf16> -> tensor<512xbf16>
// CHECK-NEXT: mega.kernel "Elementwise"(%arg2, %[[V]]) {{.*}} : (tensor<512xf32>, tensor<512xbf16>) -> tensor<512xf32>
// CHECK-NOT: "Cast"
// CHECK-LABEL: func.func @widening_kept
// CHECK: "Cast"({{.*}}) i [512] f [] : (tensor<8x64xbf16>) -> tensor<8x64xf32>
// OFF-LABEL: func.func @rounded_product
func.func @rounded_product(%a: tensor<8x32xbf16>, %b: tensor<32x64xbf16>, %x: tensor<512xf32>) {
  %p = mega.kernel "MatMul"(%a, %b) i [1, 8, 64, 32, 0, 0, 32, 64, 64, 0, 0, 0] f [1.0, 0.0] : (tensor<8x32xbf16>, tensor<32x64xbf16>) -> tensor<8x64xf32>
  %r = mega.kernel "Cast"(%p) i [512] f [] : (tensor<8x64xf32>) -> tensor<8x64xbf16>
  %w = mega.kernel "Cast"(%r) i [512] f [] : (tensor<8x64xbf16>) -> tensor<8x64xf32>
  %v = mega.view %w offset 0 : tensor<8x64xf32> -> tensor<512xf32>
  %g = mega.kernel "Elementwise"(%x, %v) i [512, 2, 1, 512, 512, 0, 0, 0, 0, 0, 1, 1, 0, 16, 2, 0, 1, 1, 2, 0, 0] f [] : (tensor<512xf32>, tensor<512xf32>) -> tensor<512xf32>
  mega.output "g", %g : tensor<512xf32>
  return
}
func.func @widening_kept(%r: tensor<8x64xbf16>) {
  %w = mega.kernel "Cast"(%r) i [512] f [] : (tensor<8x64xbf16>) -> tensor<8x64xf32>
  mega.output "w", %w : tensor<8x64xf32>
  return
}

// -----

// Step 6 with the residual stream in bf16 (mega-mixed-precision's
// round-residual): the MatMul whose epilogue adds the residual writes bf16
// (the first Cast folds), and the Cast back goes: the next product's
// residual (epilogue 2's R), the LayerNorm's x and the LayerNormGrad's x
// read the bf16 value and widen it on load.
// CHECK-LABEL: func.func @residual_stream
// CHECK: %[[D:.*]] = mega.kernel "MatMul"(%arg0, %arg1, %arg2, %arg3) {{.*}} -> tensor<8x16xbf16>
// CHECK-NEXT: %[[Y:.*]]:3 = mega.kernel "LayerNorm"(%[[D]], %arg4, %arg5) {{.*}} : (tensor<8x16xbf16>, tensor<16xf32>, tensor<16xf32>) -> (tensor<8x16xbf16>, tensor<8xf32>, tensor<8xf32>)
// CHECK-NEXT: %[[E:.*]] = mega.kernel "MatMul"(%arg0, %arg1, %arg2, %[[D]]) {{.*}} : (tensor<8x16xbf16>, tensor<16x16xbf16>, tensor<16xf32>, tensor<8x16xbf16>) -> tensor<8x16xf32>
// CHECK-NEXT: mega.kernel "LayerNormGrad"(%arg6, %[[D]], %arg4, %[[Y]]#1, %[[Y]]#2) {{.*}} : (tensor<8x16xf32>, tensor<8x16xbf16>,
// CHECK-NOT: "Cast"
// OFF-LABEL: func.func @residual_stream
func.func @residual_stream(%a: tensor<8x16xbf16>, %b: tensor<16x16xbf16>, %bias: tensor<16xf32>, %r: tensor<8x16xf32>, %w: tensor<16xf32>, %nb: tensor<16xf32>, %dy: tensor<8x16xf32>) {
  %d = mega.kernel "MatMul"(%a, %b, %bias, %r) i [1, 8, 16, 16, 0, 0, 16, 16, 16, 0, 0, 0, 2] f [1.0, 0.0] : (tensor<8x16xbf16>, tensor<16x16xbf16>, tensor<16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  %h = mega.kernel "Cast"(%d) i [128] f [] : (tensor<8x16xf32>) -> tensor<8x16xbf16>
  %x = mega.kernel "Cast"(%h) i [128] f [] : (tensor<8x16xbf16>) -> tensor<8x16xf32>
  %y:3 = mega.kernel "LayerNorm"(%x, %w, %nb) i [8, 16] f [1.0e-05] : (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<8x16xf32>, tensor<8xf32>, tensor<8xf32>)
  %yh = mega.kernel "Cast"(%y#0) i [128] f [] : (tensor<8x16xf32>) -> tensor<8x16xbf16>
  %e = mega.kernel "MatMul"(%a, %b, %bias, %x) i [1, 8, 16, 16, 0, 0, 16, 16, 16, 0, 0, 0, 2] f [1.0, 0.0] : (tensor<8x16xbf16>, tensor<16x16xbf16>, tensor<16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  %g:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %y#1, %y#2) i [8, 16, 0] f [] : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<16xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>)
  mega.output "y", %yh : tensor<8x16xbf16>
  mega.output "e", %e : tensor<8x16xf32>
  mega.output "dx", %g#0 : tensor<8x16xf32>
  return
}

// -----

// A LayerNormGrad's dx read only by its Cast (megac --bf16-residual-grad's
// rounding): the norm writes dx in bf16; dw and db stay f32. One that an
// f32 reader keeps does not fold.
// CHECK-LABEL: func.func @norm_grad_dx
// CHECK: %[[D:.*]]:3 = mega.kernel "LayerNormGrad"({{.*}}) i [4, 8, 0] f [] : ({{.*}}) -> (tensor<4x8xbf16>, tensor<8xf32>, tensor<8xf32>)
// CHECK-NOT: "Cast"
// CHECK: mega.output "dxb", %[[D]]#0 : tensor<4x8xbf16>
// CHECK: %[[K:.*]]:3 = mega.kernel "LayerNormGrad"({{.*}}) i [4, 8, 0] f [] : ({{.*}}) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
// CHECK: mega.kernel "Cast"(%[[K]]#0)
func.func @norm_grad_dx(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %b = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "dxb", %b : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  %k:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %kb = mega.kernel "Cast"(%k#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "kb", %kb : tensor<4x8xbf16>
  mega.output "k", %k#0 : tensor<4x8xf32>
  return
}

// RUN: mega-opt %s -split-input-file -mega-mixed-precision | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-mixed-precision=precision=fp32 | FileCheck %s --check-prefix=FP32
// RUN: mega-opt %s -split-input-file -mega-mixed-precision=reduce-bf16=false | FileCheck %s --check-prefix=F32SUM
// RUN: mega-opt %s -split-input-file -mega-mixed-precision=round-products=false | FileCheck %s --check-prefix=F32PROD
// RUN: mega-opt %s -split-input-file -mega-mixed-precision=round-residual=true | FileCheck %s --check-prefix=RESID
// RUN: mega-opt %s -split-input-file -mega-mixed-precision=round-residual-grad=true | FileCheck %s --check-prefix=RGRAD

// Both operands of a matmul are read in bf16; the product stays f32. One cast
// per value: the weight's copy serves the forward and the backward product.
// A product that only elementwise ops read whole (no bias row added) is
// rounded as autocast's bf16 GEMM output: a cast to bf16 and back.
// CHECK-LABEL: func.func @matmuls
// CHECK-SAME: (%[[X:[^:]*]]: tensor<8x16xf32>, %[[DY:[^:]*]]: tensor<8x32xf32>)
// CHECK-DAG: %[[XB:.*]] = mega.cast %[[X]] : tensor<8x16xf32> -> tensor<8x16xbf16>
// CHECK-DAG: %[[DYB:.*]] = mega.cast %[[DY]] : tensor<8x32xf32> -> tensor<8x32xbf16>
// CHECK: %[[W:.*]] = mega.param "w"
// CHECK-NEXT: %[[WB:.*]] = mega.cast %[[W]] : tensor<16x32xf32> -> tensor<16x32xbf16>
// CHECK: %[[Y:.*]] = mega.matmul %[[XB]], %[[WB]] : tensor<8x16xbf16>, tensor<16x32xbf16> -> tensor<8x32xf32>
// CHECK-NEXT: %[[YB:.*]] = mega.cast %[[Y]] : tensor<8x32xf32> -> tensor<8x32xbf16>
// CHECK-NEXT: %[[YW:.*]] = mega.cast %[[YB]] : tensor<8x32xbf16> -> tensor<8x32xf32>
// CHECK: %[[DX:.*]] = mega.matmul %[[DYB]], %[[WB]] {transpose_b} : tensor<8x32xbf16>, tensor<16x32xbf16> -> tensor<8x16xf32>
// CHECK-NOT: mega.cast
// CHECK: mega.add %[[YW]], %[[YW]] : tensor<8x32xf32>, tensor<8x32xf32>
// FP32-LABEL: func.func @matmuls
// FP32-NOT: mega.cast
func.func @matmuls(%x: tensor<8x16xf32>, %dy: tensor<8x32xf32>) {
  %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
  %y = mega.matmul %x, %w : tensor<8x16xf32>, tensor<16x32xf32> -> tensor<8x32xf32>
  %dx = mega.matmul %dy, %w {transpose_b} : tensor<8x32xf32>, tensor<16x32xf32> -> tensor<8x16xf32>
  %s = mega.add %y, %y : tensor<8x32xf32>, tensor<8x32xf32> -> tensor<8x32xf32>
  mega.output "s", %s : tensor<8x32xf32>
  mega.output "dx", %dx : tensor<8x16xf32>
  return
}

// -----

// Attention reads q, k, v in bf16; its gradient also o and dout, never lse.
// CHECK-LABEL: func.func @attention
// CHECK-SAME: (%[[Q:[^:]*]]: tensor<2x4x64x16xf32>, %[[K:[^:]*]]: tensor<2x4x64x16xf32>, %[[V:[^:]*]]: tensor<2x4x64x16xf32>, %[[D:[^:]*]]: tensor<2x4x64x16xf32>)
// CHECK-DAG: %[[QB:.*]] = mega.cast %[[Q]] : tensor<2x4x64x16xf32> -> tensor<2x4x64x16xbf16>
// CHECK-DAG: %[[KB:.*]] = mega.cast %[[K]]
// CHECK-DAG: %[[VB:.*]] = mega.cast %[[V]]
// CHECK-DAG: %[[DB:.*]] = mega.cast %[[D]]
// CHECK: %[[O:.*]], %[[L:.*]] = mega.flash_attention %[[QB]], %[[KB]], %[[VB]] {causal, scale = 2.500000e-01 : f64} : tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16> -> tensor<2x4x64x16xf32>, tensor<2x4x64xf32>
// CHECK-NEXT: %[[OB:.*]] = mega.cast %[[O]] : tensor<2x4x64x16xf32> -> tensor<2x4x64x16xbf16>
// CHECK: mega.flash_attention_grad %[[QB]], %[[KB]], %[[VB]], %[[OB]], %[[L]], %[[DB]] {causal, scale = 2.500000e-01 : f64} : tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64x16xbf16>, tensor<2x4x64xf32>, tensor<2x4x64x16xbf16>
func.func @attention(%q: tensor<2x4x64x16xf32>, %k: tensor<2x4x64x16xf32>, %v: tensor<2x4x64x16xf32>, %d: tensor<2x4x64x16xf32>) {
  %o, %lse = mega.flash_attention %q, %k, %v {causal, scale = 2.500000e-01 : f64} : tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32> -> tensor<2x4x64x16xf32>, tensor<2x4x64xf32>
  %dq, %dk, %dv = mega.flash_attention_grad %q, %k, %v, %o, %lse, %d {causal, scale = 2.500000e-01 : f64} : tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64xf32>, tensor<2x4x64x16xf32> -> tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>
  mega.output "o", %o : tensor<2x4x64x16xf32>
  mega.output "dq", %dq : tensor<2x4x64x16xf32>
  mega.output "dk", %dk : tensor<2x4x64x16xf32>
  mega.output "dv", %dv : tensor<2x4x64x16xf32>
  return
}

// -----

// Ops without the interface (layer norm, softmax, the loss) keep f32.
// CHECK-LABEL: func.func @others
// CHECK-NOT: mega.cast
// CHECK: return
func.func @others(%x: tensor<8x16xf32>) {
  %p = mega.softmax %x {scale = 1.000000e+00 : f64} : tensor<8x16xf32> -> tensor<8x16xf32>
  mega.output "p", %p : tensor<8x16xf32>
  return
}

// -----

// Reshapes are looked through: the activation is cast once and both
// products read views of that copy (no second cast of the same bytes).
// CHECK-LABEL: func.func @through_reshape
// CHECK-SAME: (%[[X:[^:]*]]: tensor<2x4x16xf32>, %[[DY:[^:]*]]: tensor<8x32xf32>)
// CHECK-DAG: %[[XB:.*]] = mega.cast %[[X]] : tensor<2x4x16xf32> -> tensor<2x4x16xbf16>
// CHECK-DAG: %[[XR:.*]] = mega.reshape %[[XB]] : tensor<2x4x16xbf16> -> tensor<8x16xbf16>
// CHECK: mega.matmul %[[XB]], %{{.*}} : tensor<2x4x16xbf16>, tensor<16x32xbf16> -> tensor<2x4x32xf32>
// CHECK-NOT: mega.cast
// CHECK: mega.matmul %[[XR]], %{{.*}} {transpose_a} : tensor<8x16xbf16>, tensor<8x32xbf16> -> tensor<16x32xf32>
// CHECK-NOT: mega.cast
// CHECK: return
func.func @through_reshape(%x: tensor<2x4x16xf32>, %dy: tensor<8x32xf32>) {
  %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
  %y = mega.matmul %x, %w : tensor<2x4x16xf32>, tensor<16x32xf32> -> tensor<2x4x32xf32>
  %xr = mega.reshape %x : tensor<2x4x16xf32> -> tensor<8x16xf32>
  %dw = mega.matmul %xr, %dy {transpose_a} : tensor<8x16xf32>, tensor<8x32xf32> -> tensor<16x32xf32>
  mega.output "y", %y : tensor<2x4x32xf32>
  mega.output "dw", %dw : tensor<16x32xf32>
  return
}

// -----

// The cross-entropy ops read the logits in bf16 (one copy for both); lse,
// the loss and dlogits stay f32.
// CHECK-LABEL: func.func @cross_entropy
// CHECK: %[[Z:.*]] = mega.matmul
// CHECK-NEXT: %[[ZB:.*]] = mega.cast %[[Z]] : tensor<8x32xf32> -> tensor<8x32xbf16>
// CHECK: %[[L:.*]], %[[LSE:.*]] = mega.cross_entropy %[[ZB]], %{{.*}} : tensor<8x32xbf16>, tensor<8xi32> -> tensor<f32>, tensor<8xf32>
// CHECK: mega.cross_entropy_grad %[[ZB]], %{{.*}}, %[[LSE]], %{{.*}} : tensor<8x32xbf16>, tensor<8xi32>, tensor<8xf32>, tensor<f32> -> tensor<8x32xf32>
// FP32-LABEL: func.func @cross_entropy
// FP32-NOT: mega.cast
func.func @cross_entropy(%x: tensor<8x16xf32>, %w: tensor<16x32xf32>, %t: tensor<8xi32>, %dl: tensor<f32>) {
  %z = mega.matmul %x, %w : tensor<8x16xf32>, tensor<16x32xf32> -> tensor<8x32xf32>
  %loss, %lse = mega.cross_entropy %z, %t : tensor<8x32xf32>, tensor<8xi32> -> tensor<f32>, tensor<8xf32>
  %dz = mega.cross_entropy_grad %z, %t, %lse, %dl : tensor<8x32xf32>, tensor<8xi32>, tensor<8xf32>, tensor<f32> -> tensor<8x32xf32>
  mega.output "loss", %loss : tensor<f32>
  mega.output "dz", %dz : tensor<8x32xf32>
  return
}

// -----

// Bias gradients (reduce-bf16, the default): a reduce_sum of a value that a
// product reads in bf16 sums that copy, also through a reshape (a view of
// the copy, no second cast); one of a value with no copy stays f32 (no cast
// is made for a sum alone). The results stay f32.
// CHECK-LABEL: func.func @bias_grads
// CHECK-SAME: (%[[DY:[^:]*]]: tensor<2x4x32xf32>, %[[E:[^:]*]]: tensor<2x4x32xf32>)
// CHECK: %[[DYB:.*]] = mega.cast %[[DY]] : tensor<2x4x32xf32> -> tensor<2x4x32xbf16>
// CHECK: %[[RB:.*]] = mega.reshape %[[DYB]] : tensor<2x4x32xbf16> -> tensor<8x32xbf16>
// CHECK: mega.matmul %[[RB]]
// CHECK: mega.reduce_sum %[[DYB]] {rank = 1 : i64} : tensor<2x4x32xbf16> -> tensor<32xf32>
// CHECK: mega.reduce_sum %[[RB]] {rank = 1 : i64} : tensor<8x32xbf16> -> tensor<32xf32>
// CHECK: mega.reduce_sum %[[E]] {rank = 2 : i64} : tensor<2x4x32xf32> -> tensor<4x32xf32>
// CHECK-NOT: mega.cast
// F32SUM-LABEL: func.func @bias_grads
// F32SUM-NOT: mega.reduce_sum {{.*}}xbf16>
func.func @bias_grads(%dy: tensor<2x4x32xf32>, %e: tensor<2x4x32xf32>) {
  %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
  %r = mega.reshape %dy : tensor<2x4x32xf32> -> tensor<8x32xf32>
  %dx = mega.matmul %r, %w {transpose_b} : tensor<8x32xf32>, tensor<16x32xf32> -> tensor<8x16xf32>
  %db = mega.reduce_sum %dy {rank = 1 : i64} : tensor<2x4x32xf32> -> tensor<32xf32>
  %db2 = mega.reduce_sum %r {rank = 1 : i64} : tensor<8x32xf32> -> tensor<32xf32>
  %dp = mega.reduce_sum %e {rank = 2 : i64} : tensor<2x4x32xf32> -> tensor<4x32xf32>
  mega.output "dx", %dx : tensor<8x16xf32>
  mega.output "db", %db : tensor<32xf32>
  mega.output "db2", %db2 : tensor<32xf32>
  mega.output "dp", %dp : tensor<4x32xf32>
  return
}

// -----

// round-products: a product that an elementwise op reads whole is rounded
// (a cast to bf16 and back); one with a bias row added (a Linear's output:
// autocast rounds after the bias), one a GELU gradient reads as dy
// (mega-fuse-epilogues computes that in the product's epilogue) and one
// that flows into a parameter's gradient (gradients stay f32) are not. The
// pre-activation a GELU gradient reads gets the round trip too, right
// before the gradient.
// CHECK-LABEL: func.func @products
// CHECK: %[[P:.*]] = mega.matmul %{{.*}} {transpose_b}
// CHECK-NEXT: %[[PB:.*]] = mega.cast %[[P]] : tensor<8x64xf32> -> tensor<8x64xbf16>
// CHECK-NEXT: %[[PW:.*]] = mega.cast %[[PB]] : tensor<8x64xbf16> -> tensor<8x64xf32>
// CHECK-NEXT: mega.mul %[[PW]], %{{.*}}
// CHECK: %[[DH:.*]] = mega.matmul %{{.*}} {transpose_b}
// CHECK-NOT: mega.cast %[[DH]]
// CHECK: %[[XB:.*]] = mega.cast %arg0 : tensor<8x64xf32> -> tensor<8x64xbf16>
// CHECK-NEXT: %[[XW:.*]] = mega.cast %[[XB]] : tensor<8x64xbf16> -> tensor<8x64xf32>
// CHECK-NEXT: mega.gelu_grad %[[XW]], %[[DH]]
// CHECK: %[[T:.*]] = mega.matmul
// CHECK-NOT: mega.cast %[[T]]
// CHECK: mega.add %[[T]], %{{.*}} : tensor<8x64xf32>, tensor<64xf32>
// CHECK: %[[DW:.*]] = mega.matmul %{{.*}} {transpose_a}
// CHECK-NOT: mega.cast %[[DW]]
// CHECK: mega.add %[[DW]], %{{.*}} : tensor<32x32xf32>, tensor<32x32xf32>
// F32PROD-LABEL: func.func @products
// F32PROD-NOT: tensor<8x64xbf16> -> tensor<8x64xf32>
func.func @products(%x: tensor<8x64xf32>, %dy: tensor<8x32xf32>, %h: tensor<8x32xf32>, %e: tensor<32x32xf32>) {
  %w = mega.param "w" [64, 32] init normal(0.02) : tensor<64x32xf32>
  %b = mega.param "b" [64] init zeros : tensor<64xf32>
  %p = mega.matmul %dy, %w {transpose_b} : tensor<8x32xf32>, tensor<64x32xf32> -> tensor<8x64xf32>
  %q = mega.mul %p, %x : tensor<8x64xf32>, tensor<8x64xf32> -> tensor<8x64xf32>
  %dh = mega.matmul %h, %w {transpose_b} : tensor<8x32xf32>, tensor<64x32xf32> -> tensor<8x64xf32>
  %g = mega.gelu_grad %x, %dh : tensor<8x64xf32>, tensor<8x64xf32> -> tensor<8x64xf32>
  %w2 = mega.param "w2" [32, 64] init normal(0.02) : tensor<32x64xf32>
  %t = mega.matmul %h, %w2 : tensor<8x32xf32>, tensor<32x64xf32> -> tensor<8x64xf32>
  %y = mega.add %t, %b : tensor<8x64xf32>, tensor<64xf32> -> tensor<8x64xf32>
  %w3 = mega.param "w3" [32, 32] init normal(0.02) : tensor<32x32xf32>
  %dw = mega.matmul %h, %dy {transpose_a} : tensor<8x32xf32>, tensor<8x32xf32> -> tensor<32x32xf32>
  %sum = mega.add %dw, %e : tensor<32x32xf32>, tensor<32x32xf32> -> tensor<32x32xf32>
  mega.accumulate_grad "w3", %sum : tensor<32x32xf32>
  mega.output "q", %q : tensor<8x64xf32>
  mega.output "g", %g : tensor<8x64xf32>
  mega.output "y", %y : tensor<8x64xf32>
  return
}

// -----

// round-products: a layer norm's gradient reads the dX product as its dy
// (autocast hands the norm the bf16 gradient widened): rounded too.
// CHECK-LABEL: func.func @norm_dy
// CHECK: %[[P:.*]] = mega.matmul %{{.*}} {transpose_b}
// CHECK-NEXT: %[[PB:.*]] = mega.cast %[[P]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// CHECK-NEXT: %[[PW:.*]] = mega.cast %[[PB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// CHECK: mega.layer_norm_grad %[[PW]],
// F32PROD-LABEL: func.func @norm_dy
// F32PROD-NOT: tensor<16x8xbf16> -> tensor<16x8xf32>
func.func @norm_dy(%dy: tensor<16x32xf32>, %x: tensor<16x8xf32>, %g: tensor<8xf32>, %mean: tensor<16xf32>, %rstd: tensor<16xf32>) {
  %w = mega.param "w" [8, 32] init normal(0.02) : tensor<8x32xf32>
  %p = mega.matmul %dy, %w {transpose_b} : tensor<16x32xf32>, tensor<8x32xf32> -> tensor<16x8xf32>
  %dx, %dw, %db = mega.layer_norm_grad %p, %x, %g, %mean, %rstd : tensor<16x8xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32>
  mega.output "dx", %dx : tensor<16x8xf32>
  mega.output "dw", %dw : tensor<8xf32>
  mega.output "db", %db : tensor<8xf32>
  return
}

// -----

// round-residual (off by default): every value a layer norm normalises is
// rounded to bf16 right after its definition, and every reader (the norm,
// its gradient, the next residual add) takes the rounded value; once per
// value. Without the option the stream stays f32.
// RESID-LABEL: func.func @residual
// RESID: %[[S:.*]] = mega.add %arg0, %arg1
// RESID-NEXT: %[[SB:.*]] = mega.cast %[[S]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RESID-NEXT: %[[SW:.*]] = mega.cast %[[SB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RESID-NEXT: %[[Y:.*]], %[[M:.*]], %[[R:.*]] = mega.layer_norm %[[SW]],
// RESID: %[[T:.*]] = mega.add %[[SW]], %[[Y]]
// RESID-NEXT: %[[TB:.*]] = mega.cast %[[T]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RESID-NEXT: %[[TW:.*]] = mega.cast %[[TB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RESID-NEXT: mega.layer_norm %[[TW]],
// RESID: mega.layer_norm_grad %arg2, %[[SW]],
// RESID-NOT: mega.cast
// CHECK-LABEL: func.func @residual
// CHECK-NOT: tensor<16x8xbf16>
func.func @residual(%x: tensor<16x8xf32>, %p: tensor<16x8xf32>, %dy: tensor<16x8xf32>) {
  %g = mega.param "g" [8] init ones : tensor<8xf32>
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %s = mega.add %x, %p : tensor<16x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  %y, %mean, %rstd = mega.layer_norm %s, %g, %b {eps = 1.0e-05 : f64} : tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<16x8xf32>, tensor<16xf32>, tensor<16xf32>
  %t = mega.add %s, %y : tensor<16x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  %z, %mean2, %rstd2 = mega.layer_norm %t, %g, %b {eps = 1.0e-05 : f64} : tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<16x8xf32>, tensor<16xf32>, tensor<16xf32>
  %dx, %dw, %db = mega.layer_norm_grad %dy, %s, %g, %mean, %rstd : tensor<16x8xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32>
  mega.output "z", %z : tensor<16x8xf32>
  mega.output "dx", %dx : tensor<16x8xf32>
  return
}

// -----

// round-residual across pipeline programs: a port a norm normalises where it
// arrives ("pipe.0") is the stream. The producer rounds its value before the
// send, and every program reading it rounds its input, the backward's norm
// gradient included, so all see what one program would. A port no norm
// reads ("pipe.1") is left alone.
// RESID-LABEL: func.func @stage0
// RESID: %[[S:.*]] = mega.add %arg0, %arg1
// RESID-NEXT: %[[SB:.*]] = mega.cast %[[S]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RESID-NEXT: %[[SW:.*]] = mega.cast %[[SB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RESID-NEXT: mega.output "pipe.0", %[[SW]]
// RESID-NEXT: mega.output "pipe.1", %arg1
// RESID-LABEL: func.func @stage1_forward
// RESID: %[[IN:.*]] = mega.input "pipe.0"
// RESID-NEXT: %[[INB:.*]] = mega.cast %[[IN]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RESID-NEXT: %[[INW:.*]] = mega.cast %[[INB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RESID: mega.layer_norm %[[INW]],
// RESID-LABEL: func.func @stage1_backward
// RESID: %[[IN:.*]] = mega.input "pipe.0"
// RESID-NEXT: %[[INB:.*]] = mega.cast %[[IN]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RESID-NEXT: %[[INW:.*]] = mega.cast %[[INB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RESID: mega.layer_norm_grad %arg0, %[[INW]],
// RESID: %[[P:.*]] = mega.input "pipe.1"
// RESID-NOT: mega.cast
// RESID: mega.output "r", %[[P]]
func.func @stage0(%x: tensor<16x8xf32>, %p: tensor<16x8xf32>) {
  %s = mega.add %x, %p : tensor<16x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  mega.output "pipe.0", %s : tensor<16x8xf32>
  mega.output "pipe.1", %p : tensor<16x8xf32>
  return
}
func.func @stage1_forward() {
  %g = mega.param "g" [8] init ones : tensor<8xf32>
  %in = mega.input "pipe.0" [16, 8] : tensor<16x8xf32>
  %y, %mean, %rstd = mega.layer_norm %in, %g, %g {eps = 1.0e-05 : f64} : tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<16x8xf32>, tensor<16xf32>, tensor<16xf32>
  mega.output "y", %y : tensor<16x8xf32>
  mega.output "mean", %mean : tensor<16xf32>
  mega.output "rstd", %rstd : tensor<16xf32>
  return
}
func.func @stage1_backward(%dy: tensor<16x8xf32>, %mean: tensor<16xf32>, %rstd: tensor<16xf32>) {
  %g = mega.param "g" [8] init ones : tensor<8xf32>
  %in = mega.input "pipe.0" [16, 8] : tensor<16x8xf32>
  %dx, %dw, %db = mega.layer_norm_grad %dy, %in, %g, %mean, %rstd : tensor<16x8xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32>
  %r = mega.input "pipe.1" [16, 8] : tensor<16x8xf32>
  mega.output "dx", %dx : tensor<16x8xf32>
  mega.output "r", %r : tensor<16x8xf32>
  return
}

// -----

// round-residual-grad (off by default): the residual gradient, the norms'
// dx and the adds that sum them, is rounded to bf16 where something other
// than the next add of that chain reads it: the top norm's dx (read by a
// product and by the add) and each sum (read by a product, the next add or
// the output); the lower norm's dx, read by its add alone, stays f32. A
// product's bf16 copy of such a value is the rounded value itself.
// RGRAD-LABEL: func.func @residual_grad
// RGRAD: %[[DX1:.*]], %{{.*}}, %{{.*}} = mega.layer_norm_grad %arg0,
// RGRAD-NEXT: %[[DX1B:.*]] = mega.cast %[[DX1]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RGRAD-NEXT: %[[DX1W:.*]] = mega.cast %[[DX1B]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RGRAD: mega.matmul %[[DX1B]],
// RGRAD: %[[DX2:.*]], %{{.*}}, %{{.*}} = mega.layer_norm_grad %arg1,
// RGRAD-NOT: mega.cast %[[DX2]]
// RGRAD: %[[S:.*]] = mega.add %[[DX1W]], %[[DX2]]
// RGRAD-NEXT: %[[SB:.*]] = mega.cast %[[S]] : tensor<16x8xf32> -> tensor<16x8xbf16>
// RGRAD-NEXT: %[[SW:.*]] = mega.cast %[[SB]] : tensor<16x8xbf16> -> tensor<16x8xf32>
// RGRAD: mega.output "dx", %[[SW]]
// RESID-LABEL: func.func @residual_grad
// CHECK-LABEL: func.func @residual_grad
// CHECK: %[[DX1:.*]], %{{.*}}, %{{.*}} = mega.layer_norm_grad
// CHECK: mega.add %[[DX1]],
func.func @residual_grad(%dy1: tensor<16x8xf32>, %dy2: tensor<16x8xf32>, %x: tensor<16x8xf32>, %w: tensor<8x4xf32>) {
  %g = mega.param "g" [8] init ones : tensor<8xf32>
  %y, %mean, %rstd = mega.layer_norm %x, %g, %g {eps = 1.0e-05 : f64} : tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<16x8xf32>, tensor<16xf32>, tensor<16xf32>
  %dx1, %dw1, %db1 = mega.layer_norm_grad %dy1, %x, %g, %mean, %rstd : tensor<16x8xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32>
  %p = mega.matmul %dx1, %w : tensor<16x8xf32>, tensor<8x4xf32> -> tensor<16x4xf32>
  %dx2, %dw2, %db2 = mega.layer_norm_grad %dy2, %x, %g, %mean, %rstd : tensor<16x8xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<16x8xf32>, tensor<8xf32>, tensor<8xf32>
  %s = mega.add %dx1, %dx2 : tensor<16x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  mega.output "p", %p : tensor<16x4xf32>
  mega.output "dx", %s : tensor<16x8xf32>
  mega.output "y", %y : tensor<16x8xf32>
  return
}

// -----

// Sequence parallelism's all_gather (step 8): one the products read only in
// bf16 gathers the rounded rows, the cast running on this device's block;
// one that gathers a widened bf16 value gathers that value; one an f32 op
// reads stays f32, and so does a block of an odd element count (the
// runtimes move bf16 as 4-byte words).
// CHECK-LABEL: func.func @gather
// CHECK: %[[XB:.*]] = mega.cast %arg0 : tensor<2x4xf32> -> tensor<2x4xbf16>
// CHECK-NEXT: %[[G:.*]] = mega.all_gather %[[XB]] axes [0] {dim = 0 : i64} : tensor<2x4xbf16> -> tensor<4x4xbf16>
// CHECK: mega.matmul %[[G]], %{{.*}} : tensor<4x4xbf16>, tensor<4x3xbf16>
// CHECK: %[[G2:.*]] = mega.all_gather %arg1 axes [0] {dim = 0 : i64} : tensor<2x4xbf16> -> tensor<4x4xbf16>
// CHECK: mega.matmul %[[G2]], %{{.*}} : tensor<4x4xbf16>, tensor<4x3xbf16>
// CHECK: %[[G3:.*]] = mega.all_gather %arg0 axes [0] {dim = 0 : i64} : tensor<2x4xf32> -> tensor<4x4xf32>
// CHECK: mega.add %[[G3]], %[[G3]]
// CHECK: %[[G4:.*]] = mega.all_gather %arg3 axes [0] {dim = 0 : i64} : tensor<1x3xf32> -> tensor<2x3xf32>
// CHECK: mega.cast %[[G4]] : tensor<2x3xf32> -> tensor<2x3xbf16>
// FP32-LABEL: func.func @gather
// FP32-NOT: -> tensor<4x4xbf16>
func.func @gather(%x: tensor<2x4xf32>, %b: tensor<2x4xbf16>, %w: tensor<4x3xf32>, %odd: tensor<1x3xf32>, %w3: tensor<3x3xf32>) {
  %g = mega.all_gather %x axes [0] {dim = 0 : i64} : tensor<2x4xf32> -> tensor<4x4xf32>
  %p = mega.matmul %g, %w : tensor<4x4xf32>, tensor<4x3xf32> -> tensor<4x3xf32>
  %wide = mega.cast %b : tensor<2x4xbf16> -> tensor<2x4xf32>
  %g2 = mega.all_gather %wide axes [0] {dim = 0 : i64} : tensor<2x4xf32> -> tensor<4x4xf32>
  %p2 = mega.matmul %g2, %w : tensor<4x4xf32>, tensor<4x3xf32> -> tensor<4x3xf32>
  %g3 = mega.all_gather %x axes [0] {dim = 0 : i64} : tensor<2x4xf32> -> tensor<4x4xf32>
  %s = mega.add %g3, %g3 : tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x4xf32>
  %g4 = mega.all_gather %odd axes [0] {dim = 0 : i64} : tensor<1x3xf32> -> tensor<2x3xf32>
  %p4 = mega.matmul %g4, %w3 : tensor<2x3xf32>, tensor<3x3xf32> -> tensor<2x3xf32>
  mega.output "p", %p : tensor<4x3xf32>
  mega.output "p2", %p2 : tensor<4x3xf32>
  mega.output "s", %s : tensor<4x4xf32>
  mega.output "p4", %p4 : tensor<2x3xf32>
  return
}

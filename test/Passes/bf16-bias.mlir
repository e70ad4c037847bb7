// RUN: mega-opt %s -split-input-file -mega-bf16-bias | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-bf16-bias -mega-bf16-weight-copies | FileCheck %s --check-prefix=COPY

// c_attn (bias into a bf16 D) and c_fc (bias into a bf16 aux) read a bf16
// Cast of their bias, made right after the parameter; the second MatMul of
// the same bias shares it. The bias + residual product that stores f32 and
// the GELU product whose aux is f32 keep the f32 bias.
// CHECK-LABEL: func.func @train
// CHECK: %[[B1:.*]] = mega.param "attn.bias" [8] init zeros : tensor<8xf32>
// CHECK-NEXT: %[[C1:.*]] = mega.kernel "Cast"(%[[B1]]) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
// CHECK: %[[B2:.*]] = mega.param "fc.bias" [8] init zeros : tensor<8xf32>
// CHECK-NEXT: %[[C2:.*]] = mega.kernel "Cast"(%[[B2]]) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
// CHECK: %[[B3:.*]] = mega.param "proj.bias" [8] init zeros : tensor<8xf32>
// CHECK-NOT: "Cast"
// CHECK: "MatMul"(%arg0, %arg1, %[[C1]]) {{.*}} -> tensor<4x8xbf16>
// CHECK: "MatMul"(%arg0, %arg1, %[[C1]]) {{.*}} -> tensor<4x8xbf16>
// CHECK: "MatMul"(%arg0, %arg1, %[[C2]]) {{.*}} -> (tensor<4x8xbf16>, tensor<4x8xbf16>)
// CHECK: "MatMul"(%arg0, %arg1, %[[B2]]) {{.*}} -> (tensor<4x8xbf16>, tensor<4x8xf32>)
// CHECK: "MatMul"(%arg0, %arg1, %[[B3]], %arg2) {{.*}} -> tensor<4x8xf32>
// The optimizer keeps the two copies; no Cast is left in @train.
// COPY-LABEL: func.func @train
// COPY-DAG: %[[S1:.*]] = mega.state "attn.bias" {role = "param_copy"} : tensor<8xbf16>
// COPY-DAG: %[[S2:.*]] = mega.state "fc.bias" {role = "param_copy"} : tensor<8xbf16>
// COPY-NOT: "Cast"
// COPY: "MatMul"(%arg0, %arg1, %[[S1]])
// COPY: "MatMul"(%arg0, %arg1, %[[S1]])
// COPY: "MatMul"(%arg0, %arg1, %[[S2]])
// COPY-NOT: "Cast"
// COPY-LABEL: func.func @optimizer
// COPY: "AdamWMulti"({{.*}}) i [3, 1, 1, 1, 0] f
func.func @train(%x: tensor<4x16xbf16>, %w: tensor<16x8xbf16>, %r: tensor<4x8xf32>) {
  %b1 = mega.param "attn.bias" [8] init zeros : tensor<8xf32>
  %b2 = mega.param "fc.bias" [8] init zeros : tensor<8xf32>
  %b3 = mega.param "proj.bias" [8] init zeros : tensor<8xf32>
  %d1 = mega.kernel "MatMul"(%x, %w, %b1) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>) -> tensor<4x8xbf16>
  %d2 = mega.kernel "MatMul"(%x, %w, %b1) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>) -> tensor<4x8xbf16>
  %g, %a = mega.kernel "MatMul"(%x, %w, %b2) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 3] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>) -> (tensor<4x8xbf16>, tensor<4x8xbf16>)
  %g2, %a2 = mega.kernel "MatMul"(%x, %w, %b2) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 3] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>) -> (tensor<4x8xbf16>, tensor<4x8xf32>)
  %p = mega.kernel "MatMul"(%x, %w, %b3, %r) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 2] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  mega.output "d1", %d1 : tensor<4x8xbf16>
  mega.output "d2", %d2 : tensor<4x8xbf16>
  mega.output "g", %g : tensor<4x8xbf16>
  mega.output "a", %a : tensor<4x8xbf16>
  mega.output "g2", %g2 : tensor<4x8xbf16>
  mega.output "a2", %a2 : tensor<4x8xf32>
  mega.output "p", %p : tensor<4x8xf32>
  return
}
func.func @optimizer(%lr: tensor<f32>, %step: tensor<f32>, %coef: tensor<f32>) {
  %b1 = mega.param "attn.bias" [8] init zeros : tensor<8xf32>
  %g1 = mega.state "attn.bias" {role = "grad"} : tensor<8xf32>
  %m1 = mega.state "attn.bias" {role = "adam_m"} : tensor<8xf32>
  %v1 = mega.state "attn.bias" {role = "adam_v"} : tensor<8xf32>
  %b2 = mega.param "fc.bias" [8] init zeros : tensor<8xf32>
  %g2 = mega.state "fc.bias" {role = "grad"} : tensor<8xf32>
  %m2 = mega.state "fc.bias" {role = "adam_m"} : tensor<8xf32>
  %v2 = mega.state "fc.bias" {role = "adam_v"} : tensor<8xf32>
  %b3 = mega.param "proj.bias" [8] init zeros : tensor<8xf32>
  %g3 = mega.state "proj.bias" {role = "grad"} : tensor<8xf32>
  %m3 = mega.state "proj.bias" {role = "adam_m"} : tensor<8xf32>
  %v3 = mega.state "proj.bias" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamWMulti"(%lr, %step, %coef, %b1, %g1, %m1, %v1, %b2, %g2, %m2, %v2, %b3, %g3, %m3, %v3) i [3, 1] f [0.9, 0.999, 1.0e-8, 0.0, 0.0, 0.0] : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  return
}

// -----

// A Cast of the bias that dominates the product is reused; a bias already
// bf16 and a product without an epilogue are left alone.
// CHECK-LABEL: func.func @reuse
// CHECK: %[[C:.*]] = mega.kernel "Cast"(%arg2)
// CHECK-NOT: "Cast"
// CHECK: "MatMul"(%arg0, %arg1, %[[C]])
// CHECK: "MatMul"(%arg0, %arg1, %arg3)
func.func @reuse(%x: tensor<4x16xbf16>, %w: tensor<16x8xbf16>, %b: tensor<8xf32>, %bh: tensor<8xbf16>) {
  %c = mega.kernel "Cast"(%b) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  %d = mega.kernel "MatMul"(%x, %w, %b) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xf32>) -> tensor<4x8xbf16>
  %e = mega.kernel "MatMul"(%x, %w, %bh) i [1, 4, 8, 16, 0, 0, 16, 8, 8, 0, 0, 0, 1] f [1.0, 0.0] : (tensor<4x16xbf16>, tensor<16x8xbf16>, tensor<8xbf16>) -> tensor<4x8xbf16>
  mega.output "c", %c : tensor<8xbf16>
  mega.output "d", %d : tensor<4x8xbf16>
  mega.output "e", %e : tensor<4x8xbf16>
  return
}

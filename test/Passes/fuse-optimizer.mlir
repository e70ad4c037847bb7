// RUN: mega-opt %s -split-input-file -mega-fuse-optimizer | FileCheck %s

// The AdamW kernels of one step become one AdamWMulti at the place of the
// last (after GradNorm), each tensor's weight decay in f; the Fills that
// clear their gradients afterwards fold into zero_grads = 1.
// CHECK-LABEL: func.func @fused
// CHECK: %[[LR:.*]] = mega.input "lr"
// CHECK: %[[STEP:.*]] = mega.input "step"
// CHECK: %[[GW:.*]] = mega.state "w" {role = "grad"}
// CHECK: %[[GB:.*]] = mega.state "b" {role = "grad"}
// CHECK: %[[N:.*]]:2 = mega.kernel "GradNorm"(%[[GW]], %[[GB]])
// CHECK-NOT: "AdamW"(
// CHECK: %[[MB:.*]] = mega.state "b" {role = "adam_m"}
// CHECK: %[[VB:.*]] = mega.state "b" {role = "adam_v"}
// CHECK: mega.kernel "AdamWMulti"(%[[LR]], %[[STEP]], %[[N]]#1, %{{[^,]+}}, %[[GW]], %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %[[GB]], %[[MB]], %[[VB]]) i [2, 1] f [9.000000e-01, 9.990000e-01, 1.000000e-08, 1.000000e-02, 0.000000e+00]
// CHECK-NOT: "Fill"
// CHECK-NOT: "AdamW"(
// CHECK: mega.output "grad_norm", %[[N]]#0
func.func @fused() {
  %w = mega.param "w" [16, 32] init normal(0.02) : tensor<16x32xf32>
  %b = mega.param "b" [32] init zeros : tensor<32xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<16x32xf32>
  %gb = mega.state "b" {role = "grad"} : tensor<32xf32>
  %n:2 = mega.kernel "GradNorm"(%gw, %gb) i [] f [1.0] : (tensor<16x32xf32>, tensor<32xf32>) -> (tensor<f32>, tensor<f32>)
  %mw = mega.state "w" {role = "adam_m"} : tensor<16x32xf32>
  %vw = mega.state "w" {role = "adam_v"} : tensor<16x32xf32>
  mega.kernel "AdamW"(%w, %gw, %mw, %vw, %lr, %step, %n#1) i [] f [0.9, 0.999, 1.0e-8, 0.01] : (tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %mb = mega.state "b" {role = "adam_m"} : tensor<32xf32>
  %vb = mega.state "b" {role = "adam_v"} : tensor<32xf32>
  mega.kernel "AdamW"(%b, %gb, %mb, %vb, %lr, %step, %n#1) i [] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %zw = mega.state "w" {role = "grad"} : tensor<16x32xf32>
  mega.kernel "Fill"(%zw) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<16x32xf32>) -> ()
  %zb = mega.state "b" {role = "grad"} : tensor<32xf32>
  mega.kernel "Fill"(%zb) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<32xf32>) -> ()
  mega.output "grad_norm", %n#0 : tensor<f32>
  return
}

// -----

// The distributed optimizer's AdamW (i = {group}, the updated block as a
// result, all-gathered into the parameter) is left alone, and so are the
// Fills after it.
// CHECK-LABEL: func.func @distributed
// CHECK: %[[U0:.*]] = mega.kernel "AdamW"({{.*}}) i [1] f
// CHECK: mega.kernel "AllGather"(%[[U0]], %{{.*}}) i [1]
// CHECK: %[[U1:.*]] = mega.kernel "AdamW"({{.*}}) i [1] f
// CHECK: mega.kernel "AllGather"(%[[U1]], %{{.*}}) i [1]
// CHECK-NOT: AdamWMulti
// CHECK-COUNT-2: mega.kernel "Fill"
func.func @distributed() {
  %w = mega.param "w" [4, 8] init normal(0.02) : tensor<4x8xf32>
  %u = mega.param "u" [4, 8] init normal(0.02) : tensor<4x8xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %coef = mega.input "coef" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<2x8xf32>
  %mw = mega.state "w" {role = "adam_m"} : tensor<2x8xf32>
  %vw = mega.state "w" {role = "adam_v"} : tensor<2x8xf32>
  %nw = mega.kernel "AdamW"(%w, %gw, %mw, %vw, %lr, %step, %coef) i [1] f [0.9, 0.999, 1.0e-8, 0.01] : (tensor<4x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> tensor<2x8xf32>
  mega.kernel "AllGather"(%nw, %w) i [1] f [] {mega.dests = 1 : i64} : (tensor<2x8xf32>, tensor<4x8xf32>) -> ()
  %gu = mega.state "u" {role = "grad"} : tensor<2x8xf32>
  %mu = mega.state "u" {role = "adam_m"} : tensor<2x8xf32>
  %vu = mega.state "u" {role = "adam_v"} : tensor<2x8xf32>
  %nu = mega.kernel "AdamW"(%u, %gu, %mu, %vu, %lr, %step, %coef) i [1] f [0.9, 0.999, 1.0e-8, 0.01] : (tensor<4x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> tensor<2x8xf32>
  mega.kernel "AllGather"(%nu, %u) i [1] f [] {mega.dests = 1 : i64} : (tensor<2x8xf32>, tensor<4x8xf32>) -> ()
  %zw = mega.state "w" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "Fill"(%zw) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<4x8xf32>) -> ()
  %zu = mega.state "u" {role = "grad"} : tensor<4x8xf32>
  mega.kernel "Fill"(%zu) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<4x8xf32>) -> ()
  return
}

// -----

// Sgd is left alone, with the Fills of its gradients.
// CHECK-LABEL: func.func @sgd
// CHECK: mega.kernel "Sgd"
// CHECK: mega.kernel "Sgd"
// CHECK-NOT: AdamWMulti
// CHECK-COUNT-2: mega.kernel "Fill"
func.func @sgd() {
  %w = mega.param "w" [8] init zeros : tensor<8xf32>
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %coef = mega.input "coef" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<8xf32>
  %gb = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.kernel "Sgd"(%w, %gw, %lr, %coef) i [] f [0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>) -> ()
  mega.kernel "Sgd"(%b, %gb, %lr, %coef) i [] f [0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>) -> ()
  mega.kernel "Fill"(%gw) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  mega.kernel "Fill"(%gb) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  return
}

// -----

// A kernel reads the gradients of b and c between the updates and their
// Fills: those two Fills cannot move up, so b and c get an AdamWMulti with
// zero_grads = 0 and keep their Fills (after the readers); w and e get one
// with zero_grads = 1 and lose theirs.
// CHECK-LABEL: func.func @fill_blocked
// CHECK: %[[GB:.*]] = mega.state "b" {role = "grad"}
// CHECK: %[[GC:.*]] = mega.state "c" {role = "grad"}
// CHECK-NOT: "AdamW"(
// CHECK: mega.kernel "AdamWMulti"(%{{.*}}, %{{.*}}, %{{.*}}, %{{[^,]+}}, %[[GB]], %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %[[GC]], %{{.*}}) i [2, 0] f [9.000000e-01, 9.990000e-01, 1.000000e-08, 0.000000e+00, 2.000000e-02]
// CHECK: mega.kernel "AdamWMulti"({{.*}}) i [2, 1] f [9.000000e-01, 9.990000e-01, 1.000000e-08, 1.000000e-02, 3.000000e-02]
// CHECK-NOT: "AdamW"(
// CHECK: %[[CB:.*]] = mega.kernel "Copy"
// CHECK: mega.output "gb", %[[CB]]
// CHECK: %[[CC:.*]] = mega.kernel "Copy"
// CHECK: mega.output "gc", %[[CC]]
// CHECK: %[[ZB:.*]] = mega.state "b" {role = "grad"}
// CHECK: mega.kernel "Fill"(%[[ZB]])
// CHECK: %[[ZC:.*]] = mega.state "c" {role = "grad"}
// CHECK: mega.kernel "Fill"(%[[ZC]])
// CHECK-NOT: "Fill"
// CHECK: return
func.func @fill_blocked() {
  %w = mega.param "w" [8] init zeros : tensor<8xf32>
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %c = mega.param "c" [8] init zeros : tensor<8xf32>
  %e = mega.param "e" [8] init zeros : tensor<8xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %coef = mega.input "coef" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<8xf32>
  %mw = mega.state "w" {role = "adam_m"} : tensor<8xf32>
  %vw = mega.state "w" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%w, %gw, %mw, %vw, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.01] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %gb = mega.state "b" {role = "grad"} : tensor<8xf32>
  %mb = mega.state "b" {role = "adam_m"} : tensor<8xf32>
  %vb = mega.state "b" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%b, %gb, %mb, %vb, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %gc = mega.state "c" {role = "grad"} : tensor<8xf32>
  %mc = mega.state "c" {role = "adam_m"} : tensor<8xf32>
  %vc = mega.state "c" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%c, %gc, %mc, %vc, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.02] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %ge = mega.state "e" {role = "grad"} : tensor<8xf32>
  %me = mega.state "e" {role = "adam_m"} : tensor<8xf32>
  %ve = mega.state "e" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%e, %ge, %me, %ve, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.03] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %zw = mega.state "w" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%zw) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %rb = mega.state "b" {role = "grad"} : tensor<8xf32>
  %rv = mega.view %rb offset 0 : tensor<8xf32> -> tensor<2x4xf32>
  %rc = mega.state "c" {role = "grad"} : tensor<8xf32>
  %rcv = mega.view %rc offset 0 : tensor<8xf32> -> tensor<2x4xf32>
  %cb = mega.kernel "Copy"(%rv) i [] f [] : (tensor<2x4xf32>) -> tensor<2x4xf32>
  mega.output "gb", %cb : tensor<2x4xf32>
  %cc = mega.kernel "Copy"(%rcv) i [] f [] : (tensor<2x4xf32>) -> tensor<2x4xf32>
  mega.output "gc", %cc : tensor<2x4xf32>
  %zb = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%zb) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %zc = mega.state "c" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%zc) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %ze = mega.state "e" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%ze) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  return
}

// -----

// A run of one AdamW whose Fill folds becomes an AdamWMulti of one tensor
// (one launch instead of two); an AdamW that reads a copy of its gradient
// (the pipeline's all-reduced tied embedding) keeps the gradient's Fill.
// CHECK-LABEL: func.func @gradient_copy
// CHECK: %[[R:.*]] = mega.kernel "AllReduce"
// CHECK: mega.kernel "AdamW"(%{{[^,]+}}, %[[R]],
// CHECK: mega.kernel "AdamWMulti"({{.*}}) i [1, 1]
// CHECK: mega.kernel "Fill"
// CHECK-NOT: "Fill"
// CHECK: return
func.func @gradient_copy() {
  %w = mega.param "w" [8] init zeros : tensor<8xf32>
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %coef = mega.input "coef" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<8xf32>
  %r = mega.kernel "AllReduce"(%gw) i [2, 0] f [] : (tensor<8xf32>) -> tensor<8xf32>
  %mw = mega.state "w" {role = "adam_m"} : tensor<8xf32>
  %vw = mega.state "w" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%w, %r, %mw, %vw, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %gb = mega.state "b" {role = "grad"} : tensor<8xf32>
  %mb = mega.state "b" {role = "adam_m"} : tensor<8xf32>
  %vb = mega.state "b" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%b, %gb, %mb, %vb, %lr, %step, %coef) i [] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %zw = mega.state "w" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%zw) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %zb = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%zb) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  return
}

// -----

// Different clip coefficients: two runs of one AdamW each, nothing to fold
// (no Fill follows), both stay plain AdamW.
// CHECK-LABEL: func.func @two_coefs
// CHECK: mega.kernel "AdamW"
// CHECK: mega.kernel "AdamW"
// CHECK-NOT: AdamWMulti
func.func @two_coefs() {
  %w = mega.param "w" [8] init zeros : tensor<8xf32>
  %b = mega.param "b" [8] init zeros : tensor<8xf32>
  %lr = mega.input "lr" [] : tensor<f32>
  %step = mega.input "step" [] : tensor<f32>
  %c1 = mega.input "c1" [] : tensor<f32>
  %c2 = mega.input "c2" [] : tensor<f32>
  %gw = mega.state "w" {role = "grad"} : tensor<8xf32>
  %mw = mega.state "w" {role = "adam_m"} : tensor<8xf32>
  %vw = mega.state "w" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%w, %gw, %mw, %vw, %lr, %step, %c1) i [] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  %gb = mega.state "b" {role = "grad"} : tensor<8xf32>
  %mb = mega.state "b" {role = "adam_m"} : tensor<8xf32>
  %vb = mega.state "b" {role = "adam_v"} : tensor<8xf32>
  mega.kernel "AdamW"(%b, %gb, %mb, %vb, %lr, %step, %c2) i [] f [0.9, 0.999, 1.0e-8, 0.0] : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> ()
  return
}

// RUN: mega-opt %s -split-input-file -mega-fuse-norm-grad | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-fuse-norm-grad=enable=false | FileCheck %s --check-prefix=OFF

// A block's norm in the bf16 backward: dx added to the residual gradient
// %r (the sum and its bf16 copy), dw and db added into their gradients,
// the copy's columns summed into a bias gradient. One LayerNormGrad
// accumulates into %r's bytes and the three gradients (named again before
// it); its copy goes to a mega.empty; what read the sum reads %r.
// CHECK-LABEL: func.func @residual
// CHECK: %[[R:.*]] = mega.kernel "Fill"
// CHECK: %[[GW:.*]] = mega.state "ln.weight" {role = "grad"}
// CHECK: %[[GB:.*]] = mega.state "ln.bias" {role = "grad"}
// CHECK: %[[C:.*]] = mega.empty : tensor<4x8xbf16>
// CHECK: %[[GS:.*]] = mega.state "proj.bias" {role = "grad"}
// CHECK: mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[R]], %[[GW]], %[[GB]], %[[C]], %[[GS]]) i [4, 8, 1, 1, 1] f [] {mega.dests = 5 : i64} : (tensor<4x8xbf16>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xbf16>, tensor<8xf32>) -> ()
// CHECK-NOT: "Elementwise"
// CHECK-NOT: "ReduceSum"
// CHECK: mega.kernel "Cast"(%[[R]])
// OFF-LABEL: func.func @residual
// OFF: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// OFF-COUNT-3: "Elementwise"
func.func @residual(%dy: tensor<4x8xbf16>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xbf16>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e:2 = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 2, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xbf16>)
  %gb = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gb, %d#2, %gb) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gw = mega.state "ln.weight" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%d#1, %gw, %gw) i [8, 2, 1, 8, 8, 0, 1, 0, 0, 0, 0, 1, 0, 3, 1, 1, 0, 1, 1, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gs = mega.state "proj.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%e#1, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  %p = mega.kernel "Cast"(%e#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "p", %p : tensor<4x8xbf16>
  return
}

// -----

// The final norm: its dx starts the residual gradient, and a Cast makes its
// bf16 copy. The dx goes into a mega.empty passed as the first destination,
// the Cast becomes the 4th result.
// CHECK-LABEL: func.func @final_norm
// CHECK: %[[E:.*]] = mega.empty : tensor<4x8xf32>
// CHECK: %[[C:.*]] = mega.empty : tensor<4x8xbf16>
// CHECK: %[[GS:.*]] = mega.state "b" {role = "grad"}
// CHECK: mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[E]], %{{.*}}, %{{.*}}, %[[C]], %[[GS]]) i [4, 8, 0, 1, 1] f [] {mega.dests = 5 : i64}
// CHECK-NOT: "Cast"
// CHECK-NOT: "Elementwise"
// CHECK-NOT: "ReduceSum"
// CHECK: mega.output "dx", %[[E]]
func.func @final_norm(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %gb = mega.state "ln_f.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gb, %d#2, %gb) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gw = mega.state "ln_f.weight" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gw, %d#1, %gw) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gs = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%c, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  mega.output "dx", %d#0 : tensor<4x8xf32>
  return
}

// -----

// The residual gradient in bf16 (megac --bf16-residual-grad): the top
// norm writes a bf16 dx, the next adds its f32 dx into it with a bf16
// Elementwise (one bf16 output). The top norm's dx goes to a bf16
// mega.empty, which is its own copy: its column sums (the ReduceSum) are
// its 4th output. The next norm accumulates into that bf16 buffer (the sum
// replaced by it) and sums its columns too.
// CHECK-LABEL: func.func @bf16_residual_grad
// CHECK: %[[E:.*]] = mega.empty : tensor<4x8xbf16>
// CHECK: %[[GS:.*]] = mega.state "b" {role = "grad"}
// CHECK: mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[E]], %{{.*}}, %{{.*}}, %[[GS]]) i [4, 8, 0, 1, 1] f [] {mega.dests = 4 : i64} : ({{.*}}, tensor<4x8xbf16>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
// CHECK: %[[GS2:.*]] = mega.state "b2" {role = "grad"}
// CHECK: mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[E]], %{{.*}}, %{{.*}}, %[[GS2]]) i [4, 8, 1, 1, 1] f [] {mega.dests = 4 : i64} : ({{.*}}, tensor<4x8xbf16>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
// CHECK-NOT: "Elementwise"
// CHECK-NOT: "ReduceSum"
// CHECK: mega.kernel "Cast"(%[[E]])
// OFF-LABEL: func.func @bf16_residual_grad
// OFF: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
func.func @bf16_residual_grad(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xbf16>, tensor<8xf32>, tensor<8xf32>)
  %gb = mega.state "ln_f.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gb, %d#2, %gb) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gw = mega.state "ln_f.weight" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gw, %d#1, %gw) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gs = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%d#0, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  %d2:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%d#0, %d2#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xbf16>, tensor<4x8xf32>) -> tensor<4x8xbf16>
  %gb2 = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gb2, %d2#2, %gb2) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gw2 = mega.state "ln.weight" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gw2, %d2#1, %gw2) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gs2 = mega.state "b2" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%e, %gs2) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  %wide = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xbf16>) -> tensor<4x8xf32>
  mega.output "dx", %wide : tensor<4x8xf32>
  return
}

// -----

// A bf16 residual gradient a ReduceSum reads before the norm that
// accumulates into it: the sum is of the old value, so it stays a
// ReduceSum (the norm's column sums would be of the new one). The norm
// still accumulates.
// CHECK-LABEL: func.func @sum_before_norm
// CHECK: mega.kernel "ReduceSum"(%[[R:.*]], %{{.*}}) i [4, 8, 1]
// CHECK: mega.kernel "LayerNormGrad"({{.*}}, %[[R]]) i [4, 8, 1] f [] {mega.dests = 1 : i64}
func.func @sum_before_norm(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>) {
  %r = mega.kernel "Elementwise"(%a, %b) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xbf16>
  %gs = mega.state "b" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%r, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xbf16>, tensor<4x8xf32>) -> tensor<4x8xbf16>
  %wide = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xbf16>) -> tensor<4x8xf32>
  mega.output "dx", %wide : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// fp32: the residual add has no bf16 copy, and dw, db are read elsewhere:
// only dx accumulates (one destination; dw and db stay results).
// CHECK-LABEL: func.func @fp32_residual
// CHECK: %[[R:.*]] = mega.kernel "Fill"
// CHECK: %[[D:.*]]:2 = mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[R]]) i [4, 8, 1] f [] {mega.dests = 1 : i64} : ({{.*}}) -> (tensor<8xf32>, tensor<8xf32>)
// CHECK-NOT: "Elementwise"
// CHECK: mega.kernel "ReduceSum"(%[[R]],
// CHECK: mega.output "dw", %[[D]]#0
// CHECK: mega.output "db", %[[D]]#1
func.func @fp32_residual(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%d#0, %r) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %gs = mega.state "wpe" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%e, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xf32>, tensor<8xf32>) -> ()
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// fp32: r is also read through a view, before the norm (the weight
// gradient's product): that reads its old value, so the add still fuses.
// CHECK-LABEL: func.func @view_read_before
// CHECK: %[[R:.*]] = mega.kernel "Fill"
// CHECK: mega.kernel "Cast"(%{{.*}}) i [32]
// CHECK: mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[R]]) i [4, 8, 1] f [] {mega.dests = 1 : i64}
// CHECK-NOT: "Elementwise"
func.func @view_read_before(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %v = mega.view %r offset 0 : tensor<4x8xf32> -> tensor<32xf32>
  %t = mega.kernel "Cast"(%v) i [32] f [] : (tensor<32xf32>) -> tensor<32xbf16>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "t", %t : tensor<32xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// A Cast alone: the copy is a 4th result, dx, dw and db stay results.
// CHECK-LABEL: func.func @cast_only
// CHECK: %[[D:.*]]:4 = mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4) i [4, 8, 0] f [] : ({{.*}}) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xbf16>)
// CHECK-NOT: "Cast"
// CHECK: mega.output "copy", %[[D]]#3
// CHECK: mega.output "dx", %[[D]]#0
func.func @cast_only(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "copy", %c : tensor<4x8xbf16>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// Must not fuse the residual add: r's old value is read after the norm
// (@read_later), r is a function argument, not arena memory (@r_argument),
// a kernel between writes in place into r (@written_between), r is read
// through a view after the norm (@r_viewed), the sum goes to an output port
// (@sum_to_port), the program is not one add (@not_an_add: r - dx;
// @add_twice: (r + dx) + r), or dx has another reader (@dx_read_twice).
// CHECK-LABEL: func.func @read_later
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @r_argument
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @written_between
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @r_viewed
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @sum_to_port
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @not_an_add
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @add_twice
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
// CHECK-LABEL: func.func @dx_read_twice
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
func.func @read_later(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %t = mega.kernel "Cast"(%r) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "t", %t : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @r_argument(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>, %r: tensor<4x8xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @written_between(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  mega.kernel "Fill"(%r) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<4x8xf32>) -> ()
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @r_viewed(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %v = mega.view %r offset 0 : tensor<4x8xf32> -> tensor<32xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %t = mega.kernel "Cast"(%v) i [32] f [] : (tensor<32xf32>) -> tensor<32xbf16>
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "t", %t : tensor<32xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @sum_to_port(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  mega.output "sum", %e : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @not_an_add(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 4, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @add_twice(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 1, 0, 1, 3, 1, 1, 0, 1, 1, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @dx_read_twice(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %r = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<4x8xf32>
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %e = mega.kernel "Elementwise"(%r, %d#0) i [32, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %k = mega.kernel "Cast"(%e) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.output "k", %k : tensor<4x8xbf16>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// Must not accumulate dw and db: a kernel between the norm and the bias
// gradient's add reads that gradient (@grad_read_between), or only one of
// the two is added into a gradient (@one_grad). The Elementwise adds stay
// and the norm has no accumulate_wb.
// CHECK-LABEL: func.func @grad_read_between
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK-COUNT-2: "Elementwise"
// CHECK-LABEL: func.func @one_grad
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "Elementwise"
func.func @grad_read_between(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %gb0 = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
  %c = mega.kernel "Cast"(%gb0) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  %gb = mega.state "ln.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gb, %d#2, %gb) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  %gw = mega.state "ln.weight" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gw, %d#1, %gw) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  mega.output "c", %c : tensor<8xbf16>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  return
}
func.func @one_grad(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %gw = mega.state "ln.weight" {role = "grad"} : tensor<8xf32>
  mega.kernel "Elementwise"(%gw, %d#1, %gw) i [8, 2, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 0, 3, 0, 0, 1, 1, 0, 0, 0] f [] {mega.dests = 1 : i64} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> ()
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// The copy's column sums as a fresh result (ReduceSum without accumulate):
// a 5th result, i[3] = 0 (no accumulate_wb), i[4] = 0.
// CHECK-LABEL: func.func @sum_fresh
// CHECK: %[[D:.*]]:5 = mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4) i [4, 8, 0, 0, 0] f [] : ({{.*}}) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xbf16>, tensor<8xf32>)
// CHECK-NOT: "ReduceSum"
// CHECK: mega.output "sum", %[[D]]#4
// CHECK: mega.output "copy", %[[D]]#3
// CHECK: mega.output "dx", %[[D]]#0
// OFF-LABEL: func.func @sum_fresh
// OFF: "ReduceSum"
func.func @sum_fresh(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %b = mega.kernel "ReduceSum"(%c) i [4, 8, 0] f [] : (tensor<4x8xbf16>) -> tensor<8xf32>
  mega.output "sum", %b : tensor<8xf32>
  mega.output "copy", %c : tensor<4x8xbf16>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// Summed into a gradient in place while dx, dw and db stay results: every
// output becomes a destination, the four results new mega.empty buffers
// read in their place.
// CHECK-LABEL: func.func @sum_into
// CHECK: %[[DX:.*]] = mega.empty : tensor<4x8xf32>
// CHECK: %[[DW:.*]] = mega.empty : tensor<8xf32>
// CHECK: %[[DB:.*]] = mega.empty : tensor<8xf32>
// CHECK: %[[C:.*]] = mega.empty : tensor<4x8xbf16>
// CHECK: %[[GS:.*]] = mega.state "proj.bias" {role = "grad"}
// CHECK: mega.kernel "LayerNormGrad"(%arg0, %arg1, %arg2, %arg3, %arg4, %[[DX]], %[[DW]], %[[DB]], %[[C]], %[[GS]]) i [4, 8, 0, 0, 1] f [] {mega.dests = 5 : i64} : ({{.*}}) -> ()
// CHECK-NOT: "ReduceSum"
// CHECK: mega.output "copy", %[[C]]
// CHECK: mega.output "dx", %[[DX]]
// CHECK: mega.output "dw", %[[DW]]
// CHECK: mega.output "db", %[[DB]]
func.func @sum_into(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %gs = mega.state "proj.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%c, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  mega.output "copy", %c : tensor<4x8xbf16>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// -----

// Must not fold the ReduceSum: the gradient is read between the norm and
// the sum (@sum_grad_read_between) or written there (@sum_grad_written),
// it is one of the norm's operands (@sum_grad_operand), the sum is over
// another shape of the copy (@sum_reshaped: outer 2, inner 16), or it sums
// dx, not the copy (@sum_of_dx).
// CHECK-LABEL: func.func @sum_grad_read_between
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "ReduceSum"
// CHECK-LABEL: func.func @sum_grad_written
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "ReduceSum"
// CHECK-LABEL: func.func @sum_grad_operand
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "ReduceSum"
// CHECK-LABEL: func.func @sum_reshaped
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "ReduceSum"
// CHECK-LABEL: func.func @sum_of_dx
// CHECK: "LayerNormGrad"({{.*}}) i [4, 8, 0] f []
// CHECK: "ReduceSum"
func.func @sum_grad_read_between(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %gs = mega.state "proj.bias" {role = "grad"} : tensor<8xf32>
  %t = mega.kernel "Cast"(%gs) i [8] f [] : (tensor<8xf32>) -> tensor<8xbf16>
  mega.kernel "ReduceSum"(%c, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  mega.output "t", %t : tensor<8xbf16>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @sum_grad_written(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %g0 = mega.state "proj.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "Fill"(%g0) i [] f [0.0] {mega.dests = 1 : i64} : (tensor<8xf32>) -> ()
  %gs = mega.state "proj.bias" {role = "grad"} : tensor<8xf32>
  mega.kernel "ReduceSum"(%c, %gs) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @sum_grad_operand(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  mega.kernel "ReduceSum"(%c, %w) i [4, 8, 1] f [] {mega.dests = 1 : i64} : (tensor<4x8xbf16>, tensor<8xf32>) -> ()
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @sum_reshaped(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %b = mega.kernel "ReduceSum"(%c) i [2, 16, 0] f [] : (tensor<4x8xbf16>) -> tensor<16xf32>
  mega.output "sum", %b : tensor<16xf32>
  mega.output "dx", %d#0 : tensor<4x8xf32>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}
func.func @sum_of_dx(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>, %m: tensor<4xf32>, %s: tensor<4xf32>) {
  %d:3 = mega.kernel "LayerNormGrad"(%dy, %x, %w, %m, %s) i [4, 8, 0] f [] : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %c = mega.kernel "Cast"(%d#0) i [32] f [] : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %b = mega.kernel "ReduceSum"(%d#0) i [4, 8, 0] f [] : (tensor<4x8xf32>) -> tensor<8xf32>
  mega.output "sum", %b : tensor<8xf32>
  mega.output "copy", %c : tensor<4x8xbf16>
  mega.output "dw", %d#1 : tensor<8xf32>
  mega.output "db", %d#2 : tensor<8xf32>
  return
}

// Every op of the mega dialect parses, prints and parses again (custom and
// generic forms).
// RUN: mega-opt %s | mega-opt | FileCheck %s
// RUN: mega-opt %s --mlir-print-op-generic | mega-opt | FileCheck %s

// CHECK-LABEL: func.func @model_level
func.func @model_level() {
  // CHECK: mega.input "tokens" [batch, seq] : tensor<?x?xi32>
  %t = mega.input "tokens" [batch, seq] : tensor<?x?xi32>
  // CHECK: mega.input "targets" [4, 8] : tensor<4x8xi32>
  %y = mega.input "targets" [4, 8] : tensor<4x8xi32>
  // CHECK: mega.param "wte.weight" [vocab, hidden] init normal(0.02) : tensor<?x?xf32>
  %wte = mega.param "wte.weight" [vocab, hidden] init normal(0.02) : tensor<?x?xf32>
  // CHECK: mega.param "w" [hidden, 3*hidden] init normal(0.02) scaled_init : tensor<?x?xf32>
  %w = mega.param "w" [hidden, 3*hidden] init normal(0.02) scaled_init : tensor<?x?xf32>
  // CHECK: mega.param "b" [3*hidden] init zeros : tensor<?xf32>
  %b = mega.param "b" [3*hidden] init zeros : tensor<?xf32>
  // CHECK: mega.param "g" [64] init ones : tensor<64xf32>
  %g = mega.param "g" [64] init ones : tensor<64xf32>
  // CHECK: mega.param "n" [2] init normal(1.0) : tensor<2xf32>
  %n = mega.param "n" [2] init normal(1.0) : tensor<2xf32>
  // CHECK: mega.embedding %{{.*}}, %{{.*}} : tensor<?x?xi32>, tensor<?x?xf32> -> tensor<?x?x?xf32>
  %x = mega.embedding %t, %wte : tensor<?x?xi32>, tensor<?x?xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.layer_norm %{{.*}} {eps = {{.*}} : f64} : tensor<?x?x?xf32>, tensor<?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>, tensor<?xf32>, tensor<?xf32>
  %l, %mean, %rstd = mega.layer_norm %x, %b, %b {eps = 1.0e-6} : tensor<?x?x?xf32>, tensor<?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>, tensor<?xf32>, tensor<?xf32>
  // CHECK: mega.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
  %h = mega.linear %l, %w, %b : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.linear %{{[^,]*}}, %{{[^,]*}} : tensor<?x?x?xf32>, tensor<?x?xf32> -> tensor<?x?x?xf32>
  %h2 = mega.linear %l, %w : tensor<?x?x?xf32>, tensor<?x?xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.attention {{.*}} heads(heads) causal :
  %a = mega.attention %l, %w, %b, %wte, %b heads(heads) causal : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.attention {{.*}} heads(4) :
  %a2 = mega.attention %l, %w, %b, %wte, %b heads(4) : tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
  // CHECK: mega.repeat %{{.*}} count(layers) prefix "h" : tensor<?x?x?xf32> -> tensor<?x?x?xf32> {
  // CHECK-NEXT: ^bb0(%{{.*}}: tensor<?x?x?xf32>):
  // CHECK: mega.yield %{{.*}} : tensor<?x?x?xf32>
  %r = mega.repeat %a count(layers) prefix "h" : tensor<?x?x?xf32> -> tensor<?x?x?xf32> {
  ^bb0(%in: tensor<?x?x?xf32>):
    %p = mega.param "ln.weight" [hidden] init ones : tensor<?xf32>
    %o = mega.add %in, %p : tensor<?x?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>
    mega.yield %o : tensor<?x?x?xf32>
  }
  // CHECK: mega.repeat %{{.*}} count(2) prefix "blocks"
  %r2 = mega.repeat %r count(2) prefix "blocks" : tensor<?x?x?xf32> -> tensor<?x?x?xf32> {
  ^bb0(%in: tensor<?x?x?xf32>):
    mega.yield %in : tensor<?x?x?xf32>
  }
  // CHECK: mega.cross_entropy %{{.*}}, %{{.*}} : tensor<?x?x?xf32>, tensor<?x?xi32> -> tensor<f32>, tensor<?xf32>
  %loss, %lse = mega.cross_entropy %r2, %t : tensor<?x?x?xf32>, tensor<?x?xi32> -> tensor<f32>, tensor<?xf32>
  // CHECK: mega.output "loss", %{{.*}} : tensor<f32>
  mega.output "loss", %loss : tensor<f32>
  return
}

// CHECK-LABEL: func.func @tensor_level
func.func @tensor_level(%x: tensor<4x8x16xf32>, %w: tensor<16x32xf32>,
                        %q: tensor<2x4x8x16xf32>, %v: tensor<16xf32>,
                        %ids: tensor<4x8xi32>, %m: tensor<32xf32>,
                        %dl: tensor<f32>) {
  // CHECK: mega.matmul %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  %0 = mega.matmul %x, %w : tensor<4x8x16xf32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  // CHECK: mega.matmul %{{.*}}, %{{.*}} {transpose_b} : tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x8xf32>
  %1 = mega.matmul %q, %q {transpose_b} : tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x8xf32>
  // CHECK: mega.matmul %{{.*}}, %{{.*}} {transpose_a} : tensor<4x8x16xf32>, tensor<4x8x32xf32> -> tensor<4x16x32xf32>
  %2 = mega.matmul %x, %0 {transpose_a} : tensor<4x8x16xf32>, tensor<4x8x32xf32> -> tensor<4x16x32xf32>
  // CHECK: mega.add %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<16xf32> -> tensor<4x8x16xf32>
  %3 = mega.add %x, %v : tensor<4x8x16xf32>, tensor<16xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.sub %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<f32> -> tensor<4x8x16xf32>
  %4 = mega.sub %3, %dl : tensor<4x8x16xf32>, tensor<f32> -> tensor<4x8x16xf32>
  // CHECK: mega.mul %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  %5 = mega.mul %4, %x : tensor<4x8x16xf32>, tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.scale %{{.*}} {factor = 5.000000e-01 : f64} : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  %6 = mega.scale %5 {factor = 0.5 : f64} : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.gelu %{{.*}} : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  %7 = mega.gelu %6 : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.gelu_grad %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  %8 = mega.gelu_grad %6, %7 : tensor<4x8x16xf32>, tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.softmax %{{.*}} {causal, scale = 2.500000e-01 : f64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  %9 = mega.softmax %1 {causal, scale = 0.25 : f64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  // CHECK: mega.softmax %{{.*}} : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  %10 = mega.softmax %x : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.softmax_grad %{{.*}}, %{{.*}} {scale = 2.500000e-01 : f64} : tensor<2x4x8x8xf32>, tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  %11 = mega.softmax_grad %9, %1 {scale = 0.25 : f64} : tensor<2x4x8x8xf32>, tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  // CHECK: mega.layer_norm %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<4x8x16xf32>, tensor<32xf32>, tensor<32xf32>
  %y, %mean, %rstd = mega.layer_norm %x, %v, %v : tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<4x8x16xf32>, tensor<32xf32>, tensor<32xf32>
  // CHECK: mega.layer_norm_grad {{.*}} : tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<16xf32>, tensor<32xf32>, tensor<32xf32> -> tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32>
  %dx, %dw, %db = mega.layer_norm_grad %y, %x, %v, %mean, %rstd : tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<16xf32>, tensor<32xf32>, tensor<32xf32> -> tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32>
  // CHECK: mega.cross_entropy %{{.*}}, %{{.*}} : tensor<4x8x16xf32>, tensor<4x8xi32> -> tensor<f32>, tensor<32xf32>
  %loss, %lse = mega.cross_entropy %x, %ids : tensor<4x8x16xf32>, tensor<4x8xi32> -> tensor<f32>, tensor<32xf32>
  // CHECK: mega.cross_entropy_grad {{.*}} : tensor<4x8x16xf32>, tensor<4x8xi32>, tensor<32xf32>, tensor<f32> -> tensor<4x8x16xf32>
  %dlogits = mega.cross_entropy_grad %x, %ids, %lse, %dl : tensor<4x8x16xf32>, tensor<4x8xi32>, tensor<32xf32>, tensor<f32> -> tensor<4x8x16xf32>
  // CHECK: mega.embedding %{{.*}}, %{{.*}} : tensor<4x8xi32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  %e = mega.embedding %ids, %w : tensor<4x8xi32>, tensor<16x32xf32> -> tensor<4x8x32xf32>
  // CHECK: mega.embedding_grad %{{.*}}, %{{.*}} {vocab = 16 : i64} : tensor<4x8xi32>, tensor<4x8x32xf32> -> tensor<16x32xf32>
  %dt = mega.embedding_grad %ids, %e {vocab = 16 : i64} : tensor<4x8xi32>, tensor<4x8x32xf32> -> tensor<16x32xf32>
  // CHECK: mega.reduce_sum %{{.*}} {rank = 1 : i64} : tensor<4x8x16xf32> -> tensor<16xf32>
  %s = mega.reduce_sum %x {rank = 1 : i64} : tensor<4x8x16xf32> -> tensor<16xf32>
  // CHECK: mega.reshape %{{.*}} : tensor<4x8x16xf32> -> tensor<32x16xf32>
  %rs = mega.reshape %x : tensor<4x8x16xf32> -> tensor<32x16xf32>
  // CHECK: mega.transpose %{{.*}} perm [2, 0, 1] : tensor<4x8x16xf32> -> tensor<16x4x8xf32>
  %tr = mega.transpose %x perm [2, 0, 1] : tensor<4x8x16xf32> -> tensor<16x4x8xf32>
  // CHECK: mega.split %{{.*}} {dim = 2 : i64, parts = 2 : i64} : tensor<4x8x16xf32> -> tensor<4x8x8xf32>, tensor<4x8x8xf32>
  %p:2 = mega.split %x {dim = 2 : i64, parts = 2 : i64} : tensor<4x8x16xf32> -> tensor<4x8x8xf32>, tensor<4x8x8xf32>
  // CHECK: mega.concat %{{.*}}, %{{.*}} {dim = 2 : i64} : tensor<4x8x8xf32>, tensor<4x8x8xf32> -> tensor<4x8x16xf32>
  %c = mega.concat %p#0, %p#1 {dim = 2 : i64} : tensor<4x8x8xf32>, tensor<4x8x8xf32> -> tensor<4x8x16xf32>
  // CHECK: mega.fill 2.500000e-01 : tensor<f32>
  %f = mega.fill 0.25 : tensor<f32>
  // CHECK: mega.fill 0.000000e+00 : tensor<4x8xi32>
  %fi = mega.fill 0.0 : tensor<4x8xi32>
  return
}

// CHECK-LABEL: func.func @training_level
func.func @training_level(%g: tensor<16x32xf32>, %b: tensor<32xf32>,
                          %lr: tensor<f32>, %step: tensor<f32>) {
  // CHECK: mega.accumulate_grad "w", %{{.*}} : tensor<16x32xf32>
  mega.accumulate_grad "w", %g : tensor<16x32xf32>
  // CHECK: mega.state "w" {role = "grad"} : tensor<16x32xf32>
  %s = mega.state "w" {role = "grad"} : tensor<16x32xf32>
  // CHECK: mega.state "w" {role = "adam_m"} : tensor<16x32xf32>
  %m = mega.state "w" {role = "adam_m"} : tensor<16x32xf32>
  // CHECK: mega.grad_norm %{{.*}}, %{{.*}} {max_norm = 1.000000e+00 : f64} : tensor<16x32xf32>, tensor<32xf32> -> tensor<f32>, tensor<f32>
  %norm, %coef = mega.grad_norm %s, %b {max_norm = 1.0 : f64} : tensor<16x32xf32>, tensor<32xf32> -> tensor<f32>, tensor<f32>
  // CHECK: mega.adamw "w", %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {beta1 = {{.*}}, beta2 = {{.*}}, eps = {{.*}}, weight_decay = {{.*}}} : tensor<16x32xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  mega.adamw "w", %s, %lr, %step, %coef {beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-8 : f64, weight_decay = 0.1 : f64} : tensor<16x32xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  // CHECK: mega.sgd "b", %{{.*}}, %{{.*}}, %{{.*}} {weight_decay = 0.000000e+00 : f64} : tensor<32xf32>, tensor<f32>, tensor<f32>
  mega.sgd "b", %b, %lr, %coef {weight_decay = 0.0 : f64} : tensor<32xf32>, tensor<f32>, tensor<f32>
  // CHECK: mega.zero_grad "w"
  mega.zero_grad "w"
  // CHECK: mega.output "grad_norm", %{{.*}} : tensor<f32>
  mega.output "grad_norm", %norm : tensor<f32>
  return
}

// CHECK-LABEL: func.func @kernel_level
func.func @kernel_level(%a: tensor<32x16xf32>, %w: tensor<16x64xf32>,
                        %b: tensor<64xf32>) {
  // CHECK: mega.kernel "MatMul"(%{{.*}}, %{{.*}}) i [1, 32, 64, 16, 0, 0, 16, 64, 64, 0, 0, 0] f [1.000000e+00, 0.000000e+00] : (tensor<32x16xf32>, tensor<16x64xf32>) -> tensor<32x64xf32>
  %c = mega.kernel "MatMul"(%a, %w) i [1, 32, 64, 16, 0, 0, 16, 64, 64, 0, 0, 0] f [1.0, 0.0] : (tensor<32x16xf32>, tensor<16x64xf32>) -> tensor<32x64xf32>
  // CHECK: mega.fused(%{{.*}}, %{{.*}}) : (tensor<32x64xf32>, tensor<64xf32>) -> tensor<32x64xf32> {
  // CHECK: mega.yield %{{.*}} : tensor<32x64xf32>
  %r = mega.fused (%c, %b) : (tensor<32x64xf32>, tensor<64xf32>) -> tensor<32x64xf32> {
  ^bb0(%x: tensor<32x64xf32>, %y: tensor<64xf32>):
    %0 = mega.add %x, %y : tensor<32x64xf32>, tensor<64xf32> -> tensor<32x64xf32>
    %1 = mega.gelu %0 : tensor<32x64xf32> -> tensor<32x64xf32>
    mega.yield %1 : tensor<32x64xf32>
  }
  // CHECK: mega.view %{{.*}} offset 4096 : tensor<32x64xf32> -> tensor<16x64xf32>
  %v = mega.view %r offset 4096 : tensor<32x64xf32> -> tensor<16x64xf32>
  // CHECK: mega.empty : tensor<2x8x3x2x16xf32>
  %e = mega.empty : tensor<2x8x3x2x16xf32>
  // CHECK: mega.kernel "Fill"() i [] f [0.000000e+00] : () -> tensor<16x64xf32>
  %z = mega.kernel "Fill"() i [] f [0.0] : () -> tensor<16x64xf32>
  return
}

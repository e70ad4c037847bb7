// #mega.sharding and the collectives round-trip (pretty and generic form).
// (FileCheck reads `[[` as a variable: the checks spell it {{\[\[}}.)
// RUN: mega-opt %s | mega-opt | FileCheck %s
// RUN: mega-opt %s --mlir-print-op-generic | mega-opt | FileCheck %s

// CHECK: module attributes {mega.mesh = array<i64: 2, 2>}
module attributes {mega.mesh = array<i64: 2, 2>} {
  // CHECK-LABEL: func.func @shardings
  func.func @shardings() {
    // CHECK: mega.param "w" [8, 16] init zeros {mega.sharding = #mega.sharding<{{\[\[}}], [0]]>} : tensor<8x16xf32>
    %w = mega.param "w" [8, 16] init zeros {mega.sharding = #mega.sharding<[[], [0]]>} : tensor<8x16xf32>
    // CHECK: mega.scale %{{.*}} {factor = 2.000000e+00 : f64, mega.sharding = #mega.sharding<{{\[\[}}], []], partial = sum [0]>}
    %p = mega.scale %w {factor = 2.0 : f64, mega.sharding = #mega.sharding<[[], []], partial = sum [0]>} : tensor<8x16xf32> -> tensor<8x16xf32>
    // Several axes on one dimension, and partial max over another axis.
    // CHECK: mega.scale %{{.*}} {factor = 1.000000e+00 : f64, mega.sharding = #mega.sharding<{{\[\[}}0, 1], []]>}
    %v = mega.scale %w {factor = 1.0 : f64, mega.sharding = #mega.sharding<[[0, 1], []]>} : tensor<8x16xf32> -> tensor<8x16xf32>
    // CHECK: mega.scale %{{.*}} {factor = 1.000000e+00 : f64, mega.sharding = #mega.sharding<{{\[\[}}0], []], partial = max [1]>}
    %m = mega.scale %w {factor = 1.0 : f64, mega.sharding = #mega.sharding<[[0], []], partial = max [1]>} : tensor<8x16xf32> -> tensor<8x16xf32>
    return
  }

  // CHECK-LABEL: func.func @collectives
  func.func @collectives(%x: tensor<4x8xf32>) {
    // CHECK: mega.all_reduce %{{.*}} axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
    %0 = mega.all_reduce %x axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
    // CHECK: mega.all_reduce %{{.*}} axes [0, 1] {kind = "max"} : tensor<4x8xf32> -> tensor<4x8xf32>
    %1 = mega.all_reduce %x axes [0, 1] {kind = "max"} : tensor<4x8xf32> -> tensor<4x8xf32>
    // CHECK: mega.copy_to_region %{{.*}} axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
    %2 = mega.copy_to_region %x axes [0] : tensor<4x8xf32> -> tensor<4x8xf32>
    // CHECK: mega.all_gather %{{.*}} axes [1] {dim = 1 : i64} : tensor<4x8xf32> -> tensor<4x16xf32>
    %3 = mega.all_gather %x axes [1] {dim = 1 : i64} : tensor<4x8xf32> -> tensor<4x16xf32>
    // CHECK: mega.reduce_scatter %{{.*}} axes [0, 1] {dim = 0 : i64} : tensor<4x8xf32> -> tensor<1x8xf32>
    %4 = mega.reduce_scatter %x axes [0, 1] {dim = 0 : i64} : tensor<4x8xf32> -> tensor<1x8xf32>
    return
  }

  // CHECK-LABEL: func.func @vocab_parallel
  func.func @vocab_parallel(%ids: tensor<2x3xi32>, %table: tensor<4x8xf32>, %logits: tensor<2x3x4xf32>, %dy: tensor<2x3x8xf32>, %dl: tensor<f32>) {
    // CHECK: mega.vocab_embedding %{{.*}}, %{{.*}} axes [0] : tensor<2x3xi32>, tensor<4x8xf32> -> tensor<2x3x8xf32>
    %e = mega.vocab_embedding %ids, %table axes [0] : tensor<2x3xi32>, tensor<4x8xf32> -> tensor<2x3x8xf32>
    // CHECK: mega.vocab_embedding_grad %{{.*}}, %{{.*}} axes [0] : tensor<2x3xi32>, tensor<2x3x8xf32> -> tensor<4x8xf32>
    %de = mega.vocab_embedding_grad %ids, %dy axes [0] : tensor<2x3xi32>, tensor<2x3x8xf32> -> tensor<4x8xf32>
    // CHECK: mega.row_max %{{.*}} : tensor<2x3x4xf32> -> tensor<6xf32>
    %m = mega.row_max %logits : tensor<2x3x4xf32> -> tensor<6xf32>
    // CHECK: mega.vocab_cross_entropy_stats %{{.*}}, %{{.*}}, %{{.*}} axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32> -> tensor<6xf32>, tensor<6xf32>
    %se, %tl = mega.vocab_cross_entropy_stats %logits, %ids, %m axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32> -> tensor<6xf32>, tensor<6xf32>
    // CHECK: mega.vocab_cross_entropy {{.*}} axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32>, tensor<6xf32>, tensor<6xf32> -> tensor<f32>, tensor<6xf32>
    %loss, %lse = mega.vocab_cross_entropy %logits, %ids, %m, %se, %tl axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32>, tensor<6xf32>, tensor<6xf32> -> tensor<f32>, tensor<6xf32>
    // CHECK: mega.vocab_cross_entropy_grad {{.*}} axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32>, tensor<f32> -> tensor<2x3x4xf32>
    %g = mega.vocab_cross_entropy_grad %logits, %ids, %lse, %dl axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32>, tensor<f32> -> tensor<2x3x4xf32>
    return
  }
}

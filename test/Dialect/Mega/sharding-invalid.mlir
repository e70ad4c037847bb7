// #mega.sharding and collective verifiers, one case per check (constraint
// ids: docs/dialect.md, "Sharding" and "Collectives").
// RUN: mega-opt %s -split-input-file -verify-diagnostics

// sharding_c1
// expected-error @+1 {{mesh axis 0 is negative or used twice}}
func.func @sharding_c1_twice() attributes {s = #mega.sharding<[[0], [0]]>} {
  return
}

// -----

// sharding_c2
// expected-error @+1 {{partial kind must be sum or max, not prod}}
func.func @sharding_c2_kind() attributes {s = #mega.sharding<[[]], partial = prod [0]>} {
  return
}

// -----

// sharding_c3
// expected-error @+1 {{partial needs a kind and at least one mesh axis}}
func.func @sharding_c3_no_axes() attributes {s = #mega.sharding<[[]], partial = sum []>} {
  return
}

// -----

// collective_c1
func.func @collective_c1_no_axes(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.all_reduce' op needs at least one mesh axis}}
  %0 = mega.all_reduce %x axes [] : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

// collective_c1
func.func @collective_c1_repeated(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.copy_to_region' op mesh axis 0 is negative or repeated}}
  %0 = mega.copy_to_region %x axes [0, 0] : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

// collective_c1
module attributes {mega.mesh = array<i64: 2>} {
  func.func @collective_c1_mesh_rank(%x: tensor<4xf32>) {
    // expected-error @+1 {{'mega.all_reduce' op mesh axis 1 is not below the mesh rank 1}}
    %0 = mega.all_reduce %x axes [1] : tensor<4xf32> -> tensor<4xf32>
    return
  }
}

// -----

// all_reduce_c1
func.func @all_reduce_c1_kind(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.all_reduce' op kind must be sum or max, not 'min'}}
  %0 = mega.all_reduce %x axes [0] {kind = "min"} : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

// collective_c2
func.func @collective_c2_same_type(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mega.all_reduce' op requires the same type for all operands and results}}
  %0 = mega.all_reduce %x axes [0] : tensor<4xf32> -> tensor<8xf32>
  return
}

// -----

// collective_c3
module attributes {mega.mesh = array<i64: 2>} {
  func.func @collective_c3_gather(%x: tensor<4x8xf32>) {
    // expected-error @+1 {{'mega.all_gather' op dim 1: 24 is not the device count times 8}}
    %0 = mega.all_gather %x axes [0] {dim = 1 : i64} : tensor<4x8xf32> -> tensor<4x24xf32>
    return
  }
}

// -----

// collective_c3
func.func @collective_c3_other_dim(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.reduce_scatter' op dim 0: 4 is not equal to 2}}
  %0 = mega.reduce_scatter %x axes [0] {dim = 1 : i64} : tensor<4x8xf32> -> tensor<2x4xf32>
  return
}

// -----

// collective_c3
func.func @collective_c3_dim(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'mega.all_gather' op dim 2 is out of range for rank 2}}
  %0 = mega.all_gather %x axes [0] {dim = 2 : i64} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// all_gather_c1
func.func @all_gather_c1(%x: tensor<4x8xbf16>) {
  // expected-error @+1 {{'mega.all_gather' op operand and result element types differ}}
  %0 = mega.all_gather %x axes [0] {dim = 0 : i64} : tensor<4x8xbf16> -> tensor<8x8xf32>
  return
}

// -----

// mesh_c1
// expected-error @+1 {{mega.mesh must be a non-empty array<i64> of positive axis sizes}}
module attributes {mega.mesh = array<i64: 2, 0>} {
}

// -----

// sharding_c4
func.func @sharding_c4_rank() {
  // expected-error @+1 {{mega.sharding must give one #mega.sharding of the result's rank per result}}
  %0 = mega.param "w" [4] init zeros {mega.sharding = #mega.sharding<[[], [0]]>} : tensor<4xf32>
  return
}

// -----

// sharding_c4
func.func @sharding_c4_count(%x: tensor<4xf32>) {
  // expected-error @+1 {{mega.sharding must give one #mega.sharding per result}}
  %0:2 = mega.split %x {dim = 0 : i64, parts = 2 : i64, mega.sharding = [#mega.sharding<[[0]]>]} : tensor<4xf32> -> tensor<2xf32>, tensor<2xf32>
  return
}

// -----

// sharding_c5
func.func @sharding_c5_groups() {
  // expected-error @+1 {{mega.shard_groups must be an integer >= 2 on an op with mega.sharding}}
  %0 = mega.param "w" [4] init zeros {mega.shard_groups = 3 : i64} : tensor<4xf32>
  return
}

// -----

// vocab_c1
func.func @vocab_c1_table(%ids: tensor<2x3xi32>, %t: tensor<4xf32>) {
  // expected-error @+1 {{'mega.vocab_embedding' op needs a [V', H] table and a result of rank ids + 1}}
  %e = mega.vocab_embedding %ids, %t axes [0] : tensor<2x3xi32>, tensor<4xf32> -> tensor<2x3x4xf32>
  return
}

// -----

// vocab_c1
func.func @vocab_c1_grad(%ids: tensor<2x3xi32>, %dy: tensor<2x8xf32>) {
  // expected-error @+1 {{'mega.vocab_embedding_grad' op needs dy of rank ids + 1 and a [V', H] result}}
  %e = mega.vocab_embedding_grad %ids, %dy axes [0] : tensor<2x3xi32>, tensor<2x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// vocab_c2
func.func @vocab_c2_rows(%l: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mega.row_max' op result must be [rows] = [6]}}
  %m = mega.row_max %l : tensor<2x3x4xf32> -> tensor<3xf32>
  return
}

// -----

// vocab_c2
func.func @vocab_c2_stats(%l: tensor<2x3x4xf32>, %t: tensor<2x3xi32>, %m: tensor<5xf32>) {
  // expected-error @+1 {{'mega.vocab_cross_entropy_stats' op max must be [rows] = [6]}}
  %se, %tl = mega.vocab_cross_entropy_stats %l, %t, %m axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<5xf32> -> tensor<6xf32>, tensor<6xf32>
  return
}

// -----

// vocab_c3
func.func @vocab_c3_targets(%l: tensor<2x3x4xf32>, %t: tensor<3x2xi32>, %r: tensor<6xf32>) {
  // expected-error @+1 {{'mega.vocab_cross_entropy' op targets must have the leading dims of logits}}
  %loss, %lse = mega.vocab_cross_entropy %l, %t, %r, %r, %r axes [0] : tensor<2x3x4xf32>, tensor<3x2xi32>, tensor<6xf32>, tensor<6xf32>, tensor<6xf32> -> tensor<f32>, tensor<6xf32>
  return
}

// -----

// vocab_c4
func.func @vocab_c4_grad_type(%l: tensor<2x3x4xf32>, %t: tensor<2x3xi32>, %r: tensor<6xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{'mega.vocab_cross_entropy_grad' op dlogits must have the type of logits}}
  %g = mega.vocab_cross_entropy_grad %l, %t, %r, %d axes [0] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32>, tensor<f32> -> tensor<2x3x5xf32>
  return
}

// -----

// collective_c1 (vocabulary-parallel ops too)
func.func @vocab_axes(%l: tensor<2x3x4xf32>, %t: tensor<2x3xi32>, %r: tensor<6xf32>) {
  // expected-error @+1 {{'mega.vocab_cross_entropy_stats' op needs at least one mesh axis}}
  %se, %tl = mega.vocab_cross_entropy_stats %l, %t, %r axes [] : tensor<2x3x4xf32>, tensor<2x3xi32>, tensor<6xf32> -> tensor<6xf32>, tensor<6xf32>
  return
}

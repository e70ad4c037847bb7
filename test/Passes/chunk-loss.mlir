// RUN: mega-opt %s -split-input-file -mega-chunk-loss=max-logits-mib=0.5 | FileCheck %s
// RUN: mega-opt %s -split-input-file -mega-chunk-loss=max-logits-mib=2 | FileCheck %s --check-prefix=BIG
// RUN: mega-opt %s -split-input-file -mega-chunk-loss | FileCheck %s --check-prefix=OFF

// GPT's output layer: logits [512, 1024] f32 (2 MiB) over a 0.5 MiB limit,
// so 4 blocks of 128 rows. Each block: its rows of x (128 rows x 64 floats
// = 32768 bytes apart) into the logits MatMul, its loss share (accumulated
// after the first) and lse rows, the weight gradient's part added into the
// gradient state (beta 1 after the first block), its rows of the input
// gradient. The loss output moves after the blocks and reads the buffer.
// CHECK-LABEL: func.func @output_layer
// CHECK-DAG: %[[LOSS:.*]] = mega.empty : tensor<f32>
// CHECK-DAG: %[[LSE:.*]] = mega.empty : tensor<512xf32>
// CHECK-DAG: %[[DX:.*]] = mega.empty : tensor<512x64xf32>
// CHECK: %[[X0:.*]] = mega.view %arg0 offset 0 : tensor<512x64xf32> -> tensor<128x64xf32>
// CHECK: %[[Z0:.*]] = mega.kernel "MatMul"(%[[X0]], %arg2) i [1, 128, 1024, 64, 0, 1, 64, 64, 1024, 0, 0, 0] f [1.000000e+00, 0.000000e+00]
// CHECK: %[[T0:.*]] = mega.view %arg1 offset 0 : tensor<512xi32> -> tensor<128xi32>
// CHECK: %[[S0:.*]] = mega.view %[[LSE]] offset 0 : tensor<512xf32> -> tensor<128xf32>
// CHECK: %[[D0:.*]] = mega.kernel "CrossEntropyWithGrad"(%[[Z0]], %[[T0]], %{{.*}}, %[[LOSS]], %[[S0]]) i [128, 1024, 512, 0] f [] {mega.dests = 2 : i64}
// CHECK-DAG: mega.kernel "MatMul"(%[[D0]], %{{.*}}, %arg3) i [1, 1024, 64, 128, 1, 0, 1024, 64, 64, 0, 0, 0] f [1.000000e+00, 1.000000e+00] {mega.dests = 1 : i64}
// CHECK-DAG: %[[R0:.*]] = mega.view %[[DX]] offset 0 : tensor<512x64xf32> -> tensor<128x64xf32>
// CHECK-DAG: mega.kernel "MatMul"(%[[D0]], %arg2, %[[R0]]) i [1, 128, 64, 1024, 0, 0, 1024, 64, 64, 0, 0, 0] f [1.000000e+00, 0.000000e+00] {mega.dests = 1 : i64}
// CHECK: mega.view %arg0 offset 32768 : tensor<512x64xf32> -> tensor<128x64xf32>
// CHECK: mega.view %arg1 offset 512 : tensor<512xi32> -> tensor<128xi32>
// CHECK: "CrossEntropyWithGrad"({{.*}}) i [128, 1024, 512, 1] f [] {mega.dests = 2 : i64}
// CHECK: mega.view %arg0 offset 65536
// CHECK: "CrossEntropyWithGrad"({{.*}}) i [128, 1024, 512, 1]
// CHECK: mega.view %arg0 offset 98304
// CHECK: "CrossEntropyWithGrad"({{.*}}) i [128, 1024, 512, 1]
// CHECK: mega.view %[[DX]] offset 98304
// CHECK: mega.output "loss", %[[LOSS]] : tensor<f32>
// CHECK: mega.output "dx", %[[DX]] : tensor<512x64xf32>
// CHECK-NOT: "CrossEntropyWithGrad"
// BIG-LABEL: func.func @output_layer
// BIG-COUNT-1: "CrossEntropyWithGrad"
// BIG-NOT: mega.empty
// OFF-LABEL: func.func @output_layer
// OFF-COUNT-1: "CrossEntropyWithGrad"
func.func @output_layer(%x: tensor<512x64xf32>, %t: tensor<512xi32>, %w: tensor<1024x64xf32>, %gw: tensor<1024x64xf32>) {
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %z = mega.kernel "MatMul"(%x, %w) i [1, 512, 1024, 64, 0, 1, 64, 64, 1024, 0, 0, 0] f [1.0, 0.0] : (tensor<512x64xf32>, tensor<1024x64xf32>) -> tensor<512x1024xf32>
  %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [512, 1024] f [] : (tensor<512x1024xf32>, tensor<512xi32>, tensor<f32>) -> (tensor<f32>, tensor<512xf32>, tensor<512x1024xf32>)
  mega.output "loss", %r#0 : tensor<f32>
  %dx = mega.kernel "MatMul"(%r#2, %w) i [1, 512, 64, 1024, 0, 0, 1024, 64, 64, 0, 0, 0] f [1.0, 0.0] : (tensor<512x1024xf32>, tensor<1024x64xf32>) -> tensor<512x64xf32>
  %v = mega.view %r#2 offset 0 : tensor<512x1024xf32> -> tensor<512x1024xf32>
  mega.kernel "MatMul"(%v, %x, %gw) i [1, 1024, 64, 512, 1, 0, 1024, 64, 64, 0, 0, 0] f [1.0, 1.0] {mega.dests = 1 : i64} : (tensor<512x1024xf32>, tensor<512x64xf32>, tensor<1024x64xf32>) -> ()
  mega.output "dx", %dx : tensor<512x64xf32>
  return
}

// -----

// A fresh weight gradient (beta 0, no destination): a buffer the first
// block writes (beta 0) and the others add to (beta 1). 6 rows of 131072
// f32 logits (3 MiB), 4 blocks needed: 6 is not a multiple of 4 or 5, so 6
// blocks of one row.
// CHECK-LABEL: func.func @fresh_weight_grad
// CHECK: %[[G:.*]] = mega.empty : tensor<131072x8xf32>
// CHECK: "CrossEntropyWithGrad"({{.*}}) i [1, 131072, 6, 0]
// CHECK: "MatMul"({{.*}}, %[[G]]) i [1, 131072, 8, 1, 1, 0, 131072, 8, 8, 0, 0, 0] f [1.000000e+00, 0.000000e+00] {mega.dests = 1 : i64}
// CHECK: "CrossEntropyWithGrad"({{.*}}) i [1, 131072, 6, 1]
// CHECK: "MatMul"({{.*}}, %[[G]]) i [1, 131072, 8, 1, 1, 0, 131072, 8, 8, 0, 0, 0] f [1.000000e+00, 1.000000e+00] {mega.dests = 1 : i64}
// CHECK-COUNT-4: "CrossEntropyWithGrad"({{.*}}) i [1, 131072, 6, 1]
// CHECK: mega.output "gw", %[[G]]
// BIG-LABEL: func.func @fresh_weight_grad
// BIG: "CrossEntropyWithGrad"({{.*}}) i [3, 131072, 6, 0]
// BIG: "CrossEntropyWithGrad"({{.*}}) i [3, 131072, 6, 1]
// BIG-NOT: "CrossEntropyWithGrad"
// BIG-LABEL: func.func @kernel_between
func.func @fresh_weight_grad(%x: tensor<6x8xf32>, %t: tensor<6xi32>, %w: tensor<131072x8xf32>) {
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %z = mega.kernel "MatMul"(%x, %w) i [1, 6, 131072, 8, 0, 1, 8, 8, 131072, 0, 0, 0] f [1.0, 0.0] : (tensor<6x8xf32>, tensor<131072x8xf32>) -> tensor<6x131072xf32>
  %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [6, 131072] f [] : (tensor<6x131072xf32>, tensor<6xi32>, tensor<f32>) -> (tensor<f32>, tensor<6xf32>, tensor<6x131072xf32>)
  %gw = mega.kernel "MatMul"(%r#2, %x) i [1, 131072, 8, 6, 1, 0, 131072, 8, 8, 0, 0, 0] f [1.0, 0.0] : (tensor<6x131072xf32>, tensor<6x8xf32>) -> tensor<131072x8xf32>
  mega.output "loss", %r#0 : tensor<f32>
  mega.output "gw", %gw : tensor<131072x8xf32>
  return
}

// -----

// Left whole: a kernel between the logits and their last reader (moving
// the blocks past it could change what it reads), dlogits read by a kernel
// that is not a MatMul, and logits that another kernel also reads.
// CHECK-LABEL: func.func @kernel_between
// CHECK-COUNT-1: "CrossEntropyWithGrad"
// CHECK-NOT: mega.empty
// CHECK-LABEL: func.func @reduce_reader
// CHECK-COUNT-1: "CrossEntropyWithGrad"
// CHECK-NOT: mega.empty
// CHECK-LABEL: func.func @logits_read_twice
// CHECK-COUNT-1: "CrossEntropyWithGrad"
// CHECK-NOT: mega.empty
func.func @kernel_between(%x: tensor<512x64xf32>, %t: tensor<512xi32>, %w: tensor<1024x64xf32>) {
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %z = mega.kernel "MatMul"(%x, %w) i [1, 512, 1024, 64, 0, 1, 64, 64, 1024, 0, 0, 0] f [1.0, 0.0] : (tensor<512x64xf32>, tensor<1024x64xf32>) -> tensor<512x1024xf32>
  %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [512, 1024] f [] : (tensor<512x1024xf32>, tensor<512xi32>, tensor<f32>) -> (tensor<f32>, tensor<512xf32>, tensor<512x1024xf32>)
  %y = mega.kernel "Cast"(%x) i [32768] f [] : (tensor<512x64xf32>) -> tensor<512x64xbf16>
  %dx = mega.kernel "MatMul"(%r#2, %w) i [1, 512, 64, 1024, 0, 0, 1024, 64, 64, 0, 0, 0] f [1.0, 0.0] : (tensor<512x1024xf32>, tensor<1024x64xf32>) -> tensor<512x64xf32>
  mega.output "loss", %r#0 : tensor<f32>
  mega.output "dx", %dx : tensor<512x64xf32>
  mega.output "y", %y : tensor<512x64xbf16>
  return
}
func.func @reduce_reader(%x: tensor<512x64xf32>, %t: tensor<512xi32>, %w: tensor<1024x64xf32>) {
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %z = mega.kernel "MatMul"(%x, %w) i [1, 512, 1024, 64, 0, 1, 64, 64, 1024, 0, 0, 0] f [1.0, 0.0] : (tensor<512x64xf32>, tensor<1024x64xf32>) -> tensor<512x1024xf32>
  %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [512, 1024] f [] : (tensor<512x1024xf32>, tensor<512xi32>, tensor<f32>) -> (tensor<f32>, tensor<512xf32>, tensor<512x1024xf32>)
  %s = mega.kernel "ReduceSum"(%r#2) i [512, 1024, 0] f [] : (tensor<512x1024xf32>) -> tensor<1024xf32>
  mega.output "loss", %r#0 : tensor<f32>
  mega.output "s", %s : tensor<1024xf32>
  return
}
func.func @logits_read_twice(%x: tensor<512x64xf32>, %t: tensor<512xi32>, %w: tensor<1024x64xf32>) {
  %one = mega.kernel "Fill"() i [] f [1.0] : () -> tensor<f32>
  %z = mega.kernel "MatMul"(%x, %w) i [1, 512, 1024, 64, 0, 1, 64, 64, 1024, 0, 0, 0] f [1.0, 0.0] : (tensor<512x64xf32>, tensor<1024x64xf32>) -> tensor<512x1024xf32>
  %r:3 = mega.kernel "CrossEntropyWithGrad"(%z, %t, %one) i [512, 1024] f [] : (tensor<512x1024xf32>, tensor<512xi32>, tensor<f32>) -> (tensor<f32>, tensor<512xf32>, tensor<512x1024xf32>)
  %dx = mega.kernel "MatMul"(%r#2, %w) i [1, 512, 64, 1024, 0, 0, 1024, 64, 64, 0, 0, 0] f [1.0, 0.0] : (tensor<512x1024xf32>, tensor<1024x64xf32>) -> tensor<512x64xf32>
  mega.output "loss", %r#0 : tensor<f32>
  mega.output "z", %z : tensor<512x1024xf32>
  mega.output "dx", %dx : tensor<512x64xf32>
  return
}

// RUN: mega-opt %s -mega-pipeline-stages="stages=2 microbatches=2" | FileCheck %s --check-prefix=EVEN
// RUN: mega-opt %s -mega-pipeline-stages="stages=2 microbatches=2 schedule=gpipe" | FileCheck %s --check-prefix=GPIPE
// RUN: mega-opt %s -mega-pipeline-stages="stages=2 microbatches=2 memory-limit-mb=0.005" | FileCheck %s --check-prefix=LIMIT
// RUN: mega-opt %s -mega-pipeline-stages="stages=2 microbatches=2 memory-limit-mb=0.003" -verify-diagnostics
// RUN: mega-opt %S/Inputs/pipeline-stages-tie.mlir -mega-pipeline-stages="stages=3 microbatches=3" | FileCheck %s --check-prefix=TIE
// RUN: mega-opt %S/Inputs/pipeline-stages-5layers.mlir -mega-pipeline-stages="stages=4 ranks=2 schedule=interleaved microbatches=2" | FileCheck %s --check-prefix=INTER

// The memory model of mega-pipeline-stages (lib/Passes/PipelineStages.cpp,
// steps 3 and 4). Per unit, parameter state = 4 bytes x (parameter +
// gradient + 2 AdamW moments) per element, activations = the bytes of the
// unit's op results per micro-batch. Below (this file): the embedding (wte
// 16x8: 2048 bytes of state, 256 of activations) and four layers of one 8x8
// matmul (1024 / 256 bytes; the loss adds 36 to the last), 1F1B on P = 2
// ranks with m = 2, so rank 0 keeps 2 micro-batches in flight, rank 1 one.

// FLOPs alone: two layers each (the most expensive stage, 2112 FLOPs, is
// unique); mega.pipeline_memory is the estimated peak of each rank:
// rank 0 = 4096 + 2 x 768, rank 1 = 2048 + 548.
// EVEN: module attributes {mega.pipeline_layers = ["embedding h.0 h.1", "h.2 h.3 final"], mega.pipeline_memory = [5632, 2596]}

// GPipe keeps all m = 2 micro-batches in flight on rank 1 too.
// GPIPE: module attributes {mega.pipeline_layers = ["embedding h.0 h.1", "h.2 h.3 final"], mega.pipeline_memory = [5632, 3144]}

// A limit of 0.005 MiB (5243 bytes) rules out the even cut (rank 0: 5632):
// the cheapest cut that fits is the uneven 1 | 3 (rank 0: 3072 + 2 x 512).
// LIMIT: module attributes {mega.pipeline_layers = ["embedding h.0", "h.1 h.2 h.3 final"], mega.pipeline_memory = [4096, 3876]}
// LIMIT-LABEL: func.func @train
// LIMIT: mega.matmul %{{.*}}, %{{.*}} {mega.stage = 0 : i64}
// LIMIT: mega.matmul %{{.*}}, %{{.*}} {mega.stage = 1 : i64}

// A limit of 0.003 MiB fits no cut: the error names the limit and the
// smallest peak a cut reaches (4096 bytes, the 1 | 3 cut's rank 0).

// Inputs/pipeline-stages-tie.mlir: three stages of 1F1B (m = 3: 3, 2 and 1
// micro-batches in flight). h.3 (eight matmuls) and the loss are the most
// expensive stage (8201 FLOPs) in both the cut `embedding h.0 | h.1 h.2 |
// h.3` and `embedding h.0 h.1 | h.2 | h.3`; the earliest cut would be the
// first, but h.2 reads a 1024x8 table (131072 bytes of state), so its rank
// is the fullest and is lighter without h.1 (132096 bytes instead of
// 133632): the memory tie-break takes the second.
// TIE: module attributes {mega.pipeline_layers = ["embedding h.0 h.1", "h.2", "h.3 final"], mega.pipeline_memory = [6400, 132096, 3108]}
// TIE-LABEL: func.func @train
// TIE: mega.matmul {{.*}} {mega.stage = 0 : i64}
// TIE: mega.matmul {{.*}} {mega.stage = 0 : i64}
// TIE: mega.embedding {{.*}} {mega.stage = 1 : i64}

// Inputs/pipeline-stages-5layers.mlir: five layers on P = 2 ranks x V = 2
// chunks (rank 0 holds virtual stages 0 and 2, rank 1 stages 1 and 3),
// interleaved with m = P = 2 (all forwards before the first backward). The
// most expensive group is 2048 FLOPs for `embedding h.0 | h.1 h.2 | h.3 |
// h.4` and for the earlier `embedding h.0 | h.1 | h.2 h.3 | h.4`; the second
// puts two layers on rank 0's chunk 1 (peak 5120 + 2 x 1024 = 7168 bytes),
// the first at most 5632 bytes on any rank, so it wins.
// INTER: module attributes {mega.pipeline_layers = ["embedding h.0", "h.1 h.2", "h.3", "h.4 final"], mega.pipeline_memory = [5632, 4680]}

// expected-error @+1 {{mega-pipeline-stages: no cut of 4 layers into 2 stages fits memory-limit-mb=0.003 (3146 bytes): the smallest estimated peak of a rank is 4096 bytes}}
module {
  func.func @train() {
    %tok = mega.input "tokens" [2, 4] : tensor<2x4xi32>
    %tgt = mega.input "targets" [2, 4] : tensor<2x4xi32>
    %wte = mega.param "wte.weight" [16, 8] init normal(0.02) : tensor<16x8xf32>
    %x = mega.embedding %tok, %wte : tensor<2x4xi32>, tensor<16x8xf32> -> tensor<2x4x8xf32>
    %w0 = mega.param "h.0.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y0 = mega.matmul %x, %w0 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %w1 = mega.param "h.1.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y1 = mega.matmul %y0, %w1 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %w2 = mega.param "h.2.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y2 = mega.matmul %y1, %w2 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %w3 = mega.param "h.3.w" [8, 8] init normal(0.02) : tensor<8x8xf32>
    %y3 = mega.matmul %y2, %w3 : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %loss, %lse = mega.cross_entropy %y3, %tgt : tensor<2x4x8xf32>, tensor<2x4xi32> -> tensor<f32>, tensor<8xf32>
    mega.output "loss", %loss : tensor<f32>
    return
  }
}

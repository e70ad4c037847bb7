//===- TestPlans.h - Small hand-built plans for the runtime tests ---------===//
//
// A "tanh bigram" language model written directly as plan instructions, with
// the four programs the compiler emits (train, optimizer, eval, predict):
//
//   h = wte[tokens]            Embedding          [rows, H]
//   a = tanh(h)                Elementwise
//   z = a @ proj.weight + bias MatMul, Elementwise (broadcast row)
//   loss = mean CE(z, targets) CrossEntropy
//
// Small enough that a Python test can compute its loss and every gradient in
// closed form with numpy, while exercising MatMul (both transposes),
// Elementwise (loads, constants, broadcasts), ReduceSum, CrossEntropy(Grad),
// Embedding(Grad), GradNorm, AdamW/Sgd and Fill.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TEST_RUNTIME_ENGINE_TESTPLANS_H
#define MEGA_TEST_RUNTIME_ENGINE_TESTPLANS_H

#include "mega/Plan/Plan.h"

#include <map>
#include <string>

namespace mega::test {

struct BigramConfig {
  int64_t vocab = 16, hidden = 8, seq = 8;
  int64_t micro = 2;              ///< B
  int64_t microbatches = 2;       ///< per iteration
  std::string optimizer = "adam"; ///< adam | sgd
  double lr = 1e-2;
  float initStd = 0.5f;  ///< wte and proj.weight
  float projStd = -1.0f; ///< proj.weight only when >= 0
  float clip = 0.0f;     ///< GradNorm max norm (0 = none)
  float weightDecay = 0.01f;
  std::string target = "cpu";
  /// Data-parallel ranks: config dp, loss seed 1/(microbatches*dp), and the
  /// optimizer program starts with an in-place AllReduce (data group, sum)
  /// of every gradient, as the compiler's mega-data-parallel emits.
  int64_t dp = 1;
  /// Tensor-parallel ranks (config tp). tp > 1: wte is vocabulary-parallel
  /// (shard of rows, VocabEmbedding + AllReduce), proj.weight and proj.bias
  /// column-parallel (shards of the vocabulary columns), so the logits are
  /// vocabulary-parallel and the loss is RowMax / AllReduce max /
  /// VocabCrossEntropyStats / AllReduce sum / VocabCrossEntropy, as
  /// Megatron's vocab_parallel_cross_entropy; GradNorm carries shard flags.
  int64_t tp = 1;
  std::map<std::string, std::string> extraConfig;
};

plan::Plan makeBigramPlan(const BigramConfig &c);

} // namespace mega::test

#endif // MEGA_TEST_RUNTIME_ENGINE_TESTPLANS_H

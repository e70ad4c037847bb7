//===- Generator.h - Autoregressive sampling with the "predict" program ---===//
//
// Each step runs "predict" (tokens [1,S] -> logits [1,S,V]) on the last S
// tokens of the context, left-aligned and padded with id 0 after them (the
// model is causal, so padding after the last real token cannot change its
// logits), reads the logits at the last real position, and picks the next
// token: argmax at temperature 0, else softmax(logits / T) over the top k
// (k = 0: all) sampled with the seeded Rng.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_GENERATOR_H
#define MEGA_RUNTIME_GENERATOR_H

#include "Engine.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace mega::rt {

struct GenerateOptions {
  std::vector<int32_t> prompt;
  int64_t maxNewTokens = 64;
  double temperature = 1.0;
  int64_t topK = 0;
  uint64_t seed = 1234;
  /// Only ids below this are ever sampled (a tokenizer smaller than the
  /// plan's padded vocab); 0 means the whole vocab.
  int64_t vocabLimit = 0;
  /// Generation stops after this id (not printed); -1 for none.
  int32_t eos = -1;
};

class Generator {
public:
  /// Checks the "predict" program's ports; throws Error.
  explicit Generator(Engine &engine);
  int64_t seq() const { return seq_; }
  int64_t vocab() const { return vocab_; }

  /// Returns the new tokens; `onToken` sees each as soon as it is chosen.
  std::vector<int32_t> run(const GenerateOptions &options,
                           const std::function<void(int32_t)> &onToken);

  /// The sampling rule on one row of logits (exposed for tests).
  static int32_t pick(const std::vector<float> &logits, int64_t limit,
                      double temperature, int64_t topK, class Rng &rng);

private:
  ProgramRunner &predict_;
  int64_t seq_ = 0, vocab_ = 0;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_GENERATOR_H

//===- DataLoader.h - GPT samples from a Megatron indexed dataset ---------===//
//
// The token stream is the concatenation of all documents of PREFIX.bin/.idx.
// Sample i is tokens [i*S, i*S + S + 1): its first S tokens are the inputs,
// its last S the targets; there are (ntokens - 1) / S samples. Samples are
// consumed in global order g = 0, 1, 2, ...: epoch g / N, position g % N,
// sample order[position] where order is the identity (--no-shuffle) or a
// permutation drawn from (seed, epoch). The data position is therefore fully
// described by (seed, shuffle, consumed samples), which is what a checkpoint
// stores.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_DATALOADER_H
#define MEGA_RUNTIME_DATALOADER_H

#include <cstdint>
#include <string>
#include <vector>

namespace mega::rt {

class SampleSource {
public:
  /// Opens PREFIX and checks it: one-line Error for a missing or corrupt
  /// dataset, a token id >= vocab (naming the id and the vocab), or a stream
  /// shorter than one sample of `seq` + 1 tokens.
  SampleSource(const std::string &prefix, int64_t seq, int64_t vocab,
               bool shuffle, uint64_t seed);

  int64_t numSamples() const { return numSamples_; }
  int64_t numTokens() const { return int64_t(tokens_.size()); }
  int64_t seq() const { return seq_; }

  /// The dataset sample that global sample `g` maps to.
  int64_t sampleAt(int64_t g);
  /// Fills rows x seq tokens and targets with global samples
  /// [first, first + rows).
  void batch(int64_t first, int64_t rows, int32_t *tokens, int32_t *targets);

private:
  std::string prefix_;
  std::vector<int32_t> tokens_;
  int64_t seq_;
  int64_t numSamples_;
  bool shuffle_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_; ///< the current epoch's permutation
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_DATALOADER_H

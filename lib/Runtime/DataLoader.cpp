//===- DataLoader.cpp - GPT samples from a Megatron indexed dataset -------===//
#include "DataLoader.h"

#include "Rng.h"

#include "mega/Data/IndexedDataset.h"
#include "mega/Runtime/Backend.h"

#include <cstring>

namespace mega::rt {

SampleSource::SampleSource(const std::string &prefix, int64_t seq,
                           int64_t vocab, bool shuffle, uint64_t seed)
    : prefix_(prefix), seq_(seq), shuffle_(shuffle), seed_(seed) {
  if (seq <= 0)
    throw Error("sequence length must be positive, got " + std::to_string(seq));
  try {
    data::IndexedDataset ds = data::IndexedDataset::open(prefix);
    if (ds.maxTokenId() >= vocab) {
      const auto &t = ds.tokens();
      size_t at = 0;
      while (t[at] < vocab)
        ++at;
      throw Error("dataset '" + prefix + "' has token id " +
                  std::to_string(t[at]) + " (at token " + std::to_string(at) +
                  ") but the plan's vocab is " + std::to_string(vocab) +
                  " (ids must be < vocab; was the data made with another "
                  "tokenizer?)");
    }
    tokens_ = ds.tokens();
  } catch (const Error &) {
    throw;
  } catch (const std::exception &e) {
    throw Error("dataset '" + prefix + "': " + e.what());
  }
  numSamples_ = tokens_.empty() ? 0 : (int64_t(tokens_.size()) - 1) / seq;
  if (numSamples_ < 1)
    throw Error(
        "dataset '" + prefix + "' has " + std::to_string(tokens_.size()) +
        " tokens, fewer than one sample of seq+1 = " + std::to_string(seq + 1));
}

int64_t SampleSource::sampleAt(int64_t g) {
  int64_t epoch = g / numSamples_, pos = g % numSamples_;
  if (!shuffle_)
    return pos;
  if (epoch != epoch_) {
    // Fisher-Yates with a stream that depends only on (seed, epoch), so any
    // epoch's order can be rebuilt on resume without stored state.
    order_.resize(size_t(numSamples_));
    for (int64_t k = 0; k < numSamples_; ++k)
      order_[size_t(k)] = k;
    Rng rng(mix64(seed_ ^ 0x6d656761646174ull) ^ mix64(uint64_t(epoch)));
    for (int64_t k = numSamples_ - 1; k > 0; --k)
      std::swap(order_[size_t(k)], order_[rng.below(uint64_t(k + 1))]);
    epoch_ = epoch;
  }
  return order_[size_t(pos)];
}

void SampleSource::batch(int64_t first, int64_t rows, int32_t *tokens,
                         int32_t *targets) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t *s = tokens_.data() + sampleAt(first + r) * seq_;
    std::memcpy(tokens + r * seq_, s, size_t(seq_) * 4);
    std::memcpy(targets + r * seq_, s + 1, size_t(seq_) * 4);
  }
}

} // namespace mega::rt

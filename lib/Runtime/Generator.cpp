//===- Generator.cpp - Autoregressive sampling
//-----------------------------===//
#include "Generator.h"

#include "Rng.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mega::rt {

Generator::Generator(Engine &engine) : predict_(engine.program("predict")) {
  const plan::Port &tok = predict_.requireInput("tokens");
  const plan::Port &logits = predict_.requireOutput("logits");
  if (tok.dtype != plan::DType::I32 || tok.shape.size() != 2 ||
      tok.shape[0] != 1)
    throw Error("plan program 'predict' input 'tokens' must be i32 [1, S]");
  if (logits.dtype != plan::DType::F32 || logits.shape.size() != 3 ||
      logits.shape[0] != 1 || logits.shape[1] != tok.shape[1])
    throw Error("plan program 'predict' output 'logits' must be f32 [1, S, V]");
  seq_ = tok.shape[1];
  vocab_ = logits.shape[2];
  if (seq_ < 1 || vocab_ < 1)
    throw Error("plan program 'predict' has an empty sequence or vocab");
}

int32_t Generator::pick(const std::vector<float> &logits, int64_t limit,
                        double temperature, int64_t topK, Rng &rng) {
  for (int64_t k = 0; k < limit; ++k)
    if (!std::isfinite(logits[size_t(k)]))
      throw Error("the model produced a non-finite logit (" +
                  std::to_string(logits[size_t(k)]) + " for token " +
                  std::to_string(k) + "); are the parameters damaged?");
  if (temperature <= 0.0)
    return int32_t(std::max_element(logits.begin(), logits.begin() + limit) -
                   logits.begin());
  std::vector<int32_t> ids(static_cast<size_t>(limit));
  std::iota(ids.begin(), ids.end(), 0);
  int64_t k = topK > 0 ? std::min(topK, limit) : limit;
  // Highest logits first, ties by id, so the candidate order is fixed.
  auto higher = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] != logits[size_t(b)]
               ? logits[size_t(a)] > logits[size_t(b)]
               : a < b;
  };
  if (k < limit)
    std::nth_element(ids.begin(), ids.begin() + k, ids.end(), higher);
  ids.resize(size_t(k));
  std::sort(ids.begin(), ids.end(), higher);
  double top = logits[size_t(ids[0])];
  std::vector<double> w(static_cast<size_t>(k));
  double total = 0;
  for (int64_t j = 0; j < k; ++j)
    total += w[size_t(j)] =
        std::exp((double(logits[size_t(ids[size_t(j)])]) - top) / temperature);
  double u = rng.uniform() * total;
  for (int64_t j = 0; j < k; ++j) {
    u -= w[size_t(j)];
    if (u < 0)
      return ids[size_t(j)];
  }
  return ids[size_t(k - 1)];
}

std::vector<int32_t>
Generator::run(const GenerateOptions &o,
               const std::function<void(int32_t)> &onToken) {
  if (o.prompt.empty())
    throw Error("the prompt is empty after tokenization");
  for (int32_t t : o.prompt)
    if (t < 0 || t >= vocab_)
      throw Error("prompt token id " + std::to_string(t) +
                  " is outside the plan's vocab of " + std::to_string(vocab_) +
                  " (tokenizer and model do not match)");
  int64_t limit = o.vocabLimit > 0 ? std::min(o.vocabLimit, vocab_) : vocab_;
  Rng rng(mix64(o.seed ^ 0x67656e657261746full));
  std::vector<int32_t> context = o.prompt, out;
  std::vector<int32_t> window(static_cast<size_t>(seq_));
  std::vector<float> row(static_cast<size_t>(vocab_));
  for (int64_t step = 0; step < o.maxNewTokens; ++step) {
    size_t n = std::min<size_t>(context.size(), size_t(seq_));
    std::fill(window.begin(), window.end(), 0);
    std::copy(context.end() - long(n), context.end(), window.begin());
    predict_.setInput("tokens", window.data(), window.size() * 4);
    predict_.run();
    predict_.getOutput("logits", row.data(), row.size() * 4,
                       (n - 1) * size_t(vocab_) * 4);
    int32_t next = pick(row, limit, o.temperature, o.topK, rng);
    if (next == o.eos)
      break;
    context.push_back(next);
    out.push_back(next);
    onToken(next);
  }
  return out;
}

} // namespace mega::rt

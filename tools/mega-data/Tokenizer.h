//===- Tokenizer.h - SentencePiece training and encoding for mega-data ----===//
//
// The tokenizer is a SentencePiece BPE model (see docs/data.md for why BPE):
//   * byte_fallback: any UTF-8 text encodes, unknown characters become
//     <0xNN> byte pieces instead of <unk>
//   * special ids fixed: <unk>=0, <s>=1 (bos), </s>=2 (eos), no pad
//   * identity normalization: decode(encode(x)) gives x back (up to runs of
//     whitespace), no NFKC rewriting of the source text
//   * fixed thread count, fixed random seed and no file paths in the trainer
//     spec, so the .model bytes depend only on the training text and flags
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TOOLS_DATA_TOKENIZER_H
#define MEGA_TOOLS_DATA_TOKENIZER_H

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace mega::datatool {

/// Threads sentencepiece trains with. Fixed (not the core count) so the
/// model is the same on every machine.
inline constexpr int kTrainThreads = 2;

/// Trains a BPE model on `texts` and returns the serialized ModelProto.
/// Throws std::runtime_error with sentencepiece's message on failure.
std::string trainTokenizer(const std::vector<std::string> &texts,
                           int vocabSize, bool verbose);

class Tokenizer {
public:
  /// Loads a serialized model; `what` names it in errors. Requires eos.
  static Tokenizer fromSerialized(const std::string &proto,
                                  const std::string &what);
  Tokenizer(Tokenizer &&) noexcept;
  Tokenizer &operator=(Tokenizer &&) noexcept;
  ~Tokenizer();

  int vocabSize() const;
  int eosId() const;
  int bosId() const;
  int unkId() const;
  const std::string &serialized() const { return proto_; }

  /// Token ids of `text` (no bos/eos added).
  std::vector<int32_t> encode(const std::string &text) const;
  /// Encodes every text, using `threads` threads; result order = input order.
  std::vector<std::vector<int32_t>>
  encodeAll(const std::vector<std::string> &texts, int threads) const;
  /// Writes the "piece<TAB>score" listing spm_train writes as .vocab.
  void writeVocab(const std::string &path) const;

private:
  Tokenizer() = default;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string proto_, what_;
};

/// Quiets sentencepiece's INFO logging unless `verbose`.
void setTokenizerLogging(bool verbose);

} // namespace mega::datatool

#endif // MEGA_TOOLS_DATA_TOKENIZER_H

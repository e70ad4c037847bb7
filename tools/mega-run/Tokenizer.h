//===- Tokenizer.h - sentencepiece behind a small interface ---------------===//
//
// Only mega-run links sentencepiece (the runtime library stays free of it).
// A build without it still has this class; loading then fails with one line.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TOOLS_MEGA_RUN_TOKENIZER_H
#define MEGA_TOOLS_MEGA_RUN_TOKENIZER_H

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mega::run {

class Tokenizer {
public:
  /// Throws rt::Error when the model cannot be loaded or this build has no
  /// sentencepiece.
  static std::unique_ptr<Tokenizer> load(const std::string &modelPath);
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string &text) const = 0;
  virtual std::string decode(const std::vector<int32_t> &ids) const = 0;
  virtual int64_t size() const = 0;
  virtual int32_t eos() const = 0; ///< -1 when the model has none
};

} // namespace mega::run

#endif // MEGA_TOOLS_MEGA_RUN_TOKENIZER_H

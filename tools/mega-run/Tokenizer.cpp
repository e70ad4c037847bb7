//===- Tokenizer.cpp - sentencepiece behind a small interface -------------===//
#include "Tokenizer.h"

#include "mega/Runtime/Backend.h"

#ifdef MEGA_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace mega::run {

#ifdef MEGA_HAVE_SENTENCEPIECE

namespace {

class SentencePieceTokenizer : public Tokenizer {
public:
  explicit SentencePieceTokenizer(const std::string &path) {
    auto status = sp_.Load(path);
    if (!status.ok())
      throw rt::Error("cannot load tokenizer model '" + path +
                      "': " + status.ToString());
  }
  std::vector<int32_t> encode(const std::string &text) const override {
    std::vector<int> ids;
    auto status = sp_.Encode(text, &ids);
    if (!status.ok())
      throw rt::Error("cannot tokenize the prompt: " + status.ToString());
    return {ids.begin(), ids.end()};
  }
  std::string decode(const std::vector<int32_t> &ids) const override {
    std::vector<int> v(ids.begin(), ids.end());
    std::string out;
    auto status = sp_.Decode(v, &out);
    if (!status.ok())
      throw rt::Error("cannot decode tokens: " + status.ToString());
    return out;
  }
  int64_t size() const override { return sp_.GetPieceSize(); }
  int32_t eos() const override { return sp_.eos_id(); }

private:
  sentencepiece::SentencePieceProcessor sp_;
};

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string &modelPath) {
  return std::make_unique<SentencePieceTokenizer>(modelPath);
}

#else

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string &) {
  throw rt::Error("this mega-run was built without sentencepiece, so "
                  "--generate cannot tokenize (install libsentencepiece-dev "
                  "and rebuild)");
}

#endif

} // namespace mega::run

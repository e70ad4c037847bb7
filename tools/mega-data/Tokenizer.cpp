//===- Tokenizer.cpp - SentencePiece training and encoding for mega-data --===//
#include "Tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

// sentencepiece's log-level switch lives in its private common.h, but the
// symbol is exported by libsentencepiece (0.1.9x). Declared here so training
// does not print hundreds of INFO lines on every run.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace mega::datatool {

namespace {

// Longest text handed to the trainer as one "sentence"; sentencepiece drops
// longer ones from training (max_sentence_length), so we cut them instead.
constexpr size_t kTrainChunk = 32 * 1024;

// Feeds training text to sentencepiece without a temporary file (a file
// path would also end up in the model's trainer spec and break byte-identical
// output across runs).
class ChunkIterator : public sentencepiece::SentenceIterator {
public:
  explicit ChunkIterator(const std::vector<std::string> &texts)
      : texts_(texts) {
    load();
  }
  bool done() const override { return doc_ >= texts_.size(); }
  void Next() override {
    pos_ += cur_.size();
    load();
  }
  const std::string &value() const override { return cur_; }
  sentencepiece::util::Status status() const override { return {}; }

private:
  // Sets cur_ to the next chunk of at most kTrainChunk bytes, cut at a space
  // (or else at a UTF-8 character boundary), moving to the next text at end.
  void load() {
    while (doc_ < texts_.size() && pos_ >= texts_[doc_].size()) {
      ++doc_;
      pos_ = 0;
    }
    if (doc_ >= texts_.size())
      return;
    const std::string &t = texts_[doc_];
    size_t len = std::min(kTrainChunk, t.size() - pos_);
    if (pos_ + len < t.size()) {
      size_t cut = t.rfind(' ', pos_ + len);
      if (cut != std::string::npos && cut > pos_) {
        len = cut + 1 - pos_;
      } else {
        while (len > 1 && (static_cast<unsigned char>(t[pos_ + len]) & 0xc0) == 0x80)
          --len;
      }
    }
    cur_.assign(t, pos_, len);
  }
  const std::vector<std::string> &texts_;
  size_t doc_ = 0, pos_ = 0;
  std::string cur_;
};

// sentencepiece errors read "Internal: ./src/x.cc(580) [condition] text";
// the user needs only "text" (when there is one), on one line.
std::string statusText(const sentencepiece::util::Status &st) {
  std::string s = st.ToString();
  const size_t b = s.find(") ["), e = s.rfind("] ");
  if (b != std::string::npos && e != std::string::npos && e > b &&
      e + 2 < s.size())
    s = s.substr(e + 2);
  for (char &c : s)
    if (c == '\n' || c == '\r')
      c = ' ';
  return s;
}

} // namespace

void setTokenizerLogging(bool verbose) {
  sentencepiece::logging::SetMinLogLevel(verbose ? 0 : 2);
}

std::string trainTokenizer(const std::vector<std::string> &texts,
                           int vocabSize, bool verbose) {
  setTokenizerLogging(verbose);
  // Sampling of input sentences (only when there are more than
  // input_sentence_size) uses this seed: fixed for reproducibility.
  sentencepiece::SetRandomGeneratorSeed(1234);
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocabSize)},
      {"byte_fallback", "true"},
      // Every character of the training text gets its own piece. The usual
      // 0.9995 drops the rarest 0.05% of characters, which on the Austen
      // text means '(' ')' and all digits would only exist as byte pieces.
      {"character_coverage", "1.0"},
      {"normalization_rule_name", "identity"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", std::to_string(kTrainThreads)},
      // Up to 2M chunks are used as is; larger corpora are sampled (seeded).
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(kTrainChunk + 16)},
      // Small inputs may not support the requested size; BPE then stops
      // early rather than failing.
      {"hard_vocab_limit", "false"},
  };
  ChunkIterator it(texts);
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!st.ok())
    throw std::runtime_error("tokenizer training failed: " + statusText(st));
  return proto;
}

Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;
Tokenizer &Tokenizer::operator=(Tokenizer &&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::fromSerialized(const std::string &proto,
                                    const std::string &what) {
  Tokenizer t;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto st = t.sp_->LoadFromSerializedProto(proto);
  if (!st.ok())
    throw std::runtime_error(what + ": not a valid sentencepiece model");
  t.proto_ = proto;
  t.what_ = what;
  // Every document ends with eos; a model without one cannot be used.
  if (t.sp_->eos_id() < 0 || t.sp_->eos_id() >= t.sp_->GetPieceSize())
    throw std::runtime_error(what + ": tokenizer has no eos (</s>) piece");
  return t;
}

int Tokenizer::vocabSize() const { return sp_->GetPieceSize(); }
int Tokenizer::eosId() const { return sp_->eos_id(); }
int Tokenizer::bosId() const { return sp_->bos_id(); }
int Tokenizer::unkId() const { return sp_->unk_id(); }

std::vector<int32_t> Tokenizer::encode(const std::string &text) const {
  std::vector<int> ids;
  auto st = sp_->Encode(text, &ids);
  if (!st.ok())
    throw std::runtime_error(what_ + ": encoding failed: " + statusText(st));
  return {ids.begin(), ids.end()};
}

std::vector<std::vector<int32_t>>
Tokenizer::encodeAll(const std::vector<std::string> &texts,
                     int threads) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  // Each thread takes a fixed interleaved share of the texts and writes only
  // its own slots, so the result does not depend on scheduling.
  // SentencePieceProcessor::Encode is const and thread-safe.
  std::vector<std::string> errors(static_cast<size_t>(threads));
  auto work = [&](int tid) {
    try {
      for (size_t i = static_cast<size_t>(tid); i < texts.size();
           i += static_cast<size_t>(threads))
        out[i] = encode(texts[i]);
    } catch (const std::exception &e) {
      errors[static_cast<size_t>(tid)] = e.what();
    }
  };
  std::vector<std::thread> pool;
  try {
    for (int t = 1; t < threads; ++t)
      pool.emplace_back(work, t);
  } catch (...) { // could not start a thread: join the others, then report
    for (auto &th : pool)
      th.join();
    throw;
  }
  work(0);
  for (auto &th : pool)
    th.join();
  for (const auto &e : errors)
    if (!e.empty())
      throw std::runtime_error(e);
  return out;
}

void Tokenizer::writeVocab(const std::string &path) const {
  // Same layout as spm_train's .vocab: one "piece<TAB>score" per id.
  std::ostringstream os;
  for (int i = 0; i < sp_->GetPieceSize(); ++i)
    os << sp_->IdToPiece(i) << '\t' << sp_->GetScore(i) << '\n';
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << os.str();
  f.close();
  if (!f)
    throw std::runtime_error("cannot write " + path);
}

} // namespace mega::datatool

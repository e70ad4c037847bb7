//===- main.cpp - mega-data: build tokenized Megatron datasets ------------===//
//
//   mega-data --corpus austen --output-prefix DIR/austen [--vocab-size 8192]
//             [--valid-fraction 0.05]
//   mega-data --input FILE.txt --output-prefix P
//             [--tokenizer-model M | --vocab-size N] [--valid-fraction F]
//   mega-data --info PREFIX
//
// Outputs of a build: P.model, P.vocab (sentencepiece), P_train.{bin,idx}
// and P_valid.{bin,idx} (Megatron MMIDIDX, one document per paragraph, eos
// appended to every document). See docs/data.md.
//
// Every failure prints exactly one line "mega-data: error: ..." to stderr
// and exits with status 1.
//
//===----------------------------------------------------------------------===//
#include "Corpus.h"
#include "Tokenizer.h"

#include "mega/Data/IndexedDataset.h"
#include "mega/Support/ErrorLine.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace mega;
using namespace mega::datatool;

namespace {

/// A user error: bad flag or value. Reported like any other error.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char *kUsage =
    "usage: mega-data --corpus austen --output-prefix P [--vocab-size N] "
    "[--valid-fraction F]\n"
    "       mega-data --input FILE.txt --output-prefix P "
    "[--tokenizer-model M | --vocab-size N] [--valid-fraction F]\n"
    "       mega-data --info PREFIX\n"
    "options:\n"
    "  --corpus austen         the six Jane Austen novels (r-cran-janeaustenr)\n"
    "  --austen-rdata BASE     lazy-load database to read them from\n"
    "                          (default /usr/lib/R/site-library/janeaustenr/"
    "data/Rdata)\n"
    "  --input FILE            UTF-8 text, documents separated by blank lines\n"
    "  --output-prefix P       write P.model P.vocab P_{train,valid}.{bin,idx}\n"
    "  --vocab-size N          BPE vocabulary to train (default 8192)\n"
    "  --tokenizer-model M     reuse this sentencepiece model, do not train\n"
    "  --valid-fraction F      last ceil(F*n) paragraphs of each source go to\n"
    "                          validation, 0 <= F < 1 (default 0.05)\n"
    "  --threads N             encoding threads (default 2; output does not\n"
    "                          depend on it)\n"
    "  --verbose               show sentencepiece's training log\n"
    "  --info PREFIX           print counts of PREFIX.idx or PREFIX_{train,"
    "valid}.idx\n";

struct Options {
  std::optional<std::string> corpus, input, outputPrefix, tokenizerModel,
      info;
  std::string austenRData = kAustenRData;
  std::optional<int> vocabSize;
  double validFraction = 0.05;
  int threads = 2;
  bool verbose = false, help = false;
};

long long parseInt(const std::string &flag, const std::string &v, long long lo,
                   long long hi) {
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception &) {
    used = 0;
  }
  if (v.empty() || used != v.size())
    throw UsageError(flag + " expects an integer, got '" + v + "'");
  if (x < lo || x > hi)
    throw UsageError(flag + " must be in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got " + v);
  return x;
}

Options parseArgs(int argc, char **argv) {
  Options o;
  std::map<std::string, bool> seen;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool hasValue = false;
    if (arg.rfind("--", 0) != 0)
      throw UsageError("unexpected argument '" + arg + "' (see --help)");
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      hasValue = true;
    }
    static const std::map<std::string, bool> takesValue = {
        {"--corpus", true},         {"--input", true},
        {"--output-prefix", true},  {"--vocab-size", true},
        {"--valid-fraction", true}, {"--tokenizer-model", true},
        {"--info", true},           {"--austen-rdata", true},
        {"--threads", true},        {"--verbose", false},
        {"--help", false}};
    auto it = takesValue.find(arg);
    if (it == takesValue.end())
      throw UsageError("unknown flag '" + arg + "' (see --help)");
    if (seen[arg])
      throw UsageError(arg + " given twice");
    seen[arg] = true;
    if (!it->second) {
      if (hasValue)
        throw UsageError(arg + " takes no value");
      (arg == "--verbose" ? o.verbose : o.help) = true;
      continue;
    }
    if (!hasValue) {
      if (i + 1 >= argc)
        throw UsageError(arg + " needs a value");
      value = argv[++i];
    }
    if (value.empty())
      throw UsageError(arg + " needs a non-empty value");
    if (arg == "--corpus") {
      if (value != "austen")
        throw UsageError("unknown corpus '" + value + "' (known: austen)");
      o.corpus = value;
    } else if (arg == "--input") {
      o.input = value;
    } else if (arg == "--output-prefix") {
      o.outputPrefix = value;
    } else if (arg == "--tokenizer-model") {
      o.tokenizerModel = value;
    } else if (arg == "--info") {
      o.info = value;
    } else if (arg == "--austen-rdata") {
      o.austenRData = value;
    } else if (arg == "--vocab-size") {
      // Below ~300 there is no room beyond the 256 byte pieces and specials.
      o.vocabSize = static_cast<int>(parseInt(arg, value, 300, 1000000));
    } else if (arg == "--threads") {
      o.threads = static_cast<int>(parseInt(arg, value, 1, 256));
    } else if (arg == "--valid-fraction") {
      char *end = nullptr;
      double f = std::strtod(value.c_str(), &end);
      if (end != value.c_str() + value.size() || !std::isfinite(f))
        throw UsageError(arg + " expects a number, got '" + value + "'");
      if (f < 0 || f >= 1)
        throw UsageError(arg + " must be in [0, 1), got " + value);
      o.validFraction = f;
    }
  }
  if (o.help)
    return o;
  const int modes = o.corpus.has_value() + o.input.has_value() + o.info.has_value();
  if (modes != 1)
    throw UsageError("give exactly one of --corpus, --input, --info "
                     "(see --help)");
  if (o.info) {
    if (o.outputPrefix || o.vocabSize || o.tokenizerModel || seen["--valid-fraction"])
      throw UsageError("--info takes no other options");
    return o;
  }
  if (!o.outputPrefix)
    throw UsageError("--output-prefix is required");
  // A prefix names files (P.model, P_train.bin); "dir/" would give hidden
  // files named ".model" - almost certainly not what was meant.
  if (o.outputPrefix->back() == '/' || fs::is_directory(*o.outputPrefix))
    throw UsageError("--output-prefix '" + *o.outputPrefix +
                     "' is a directory; give a file prefix like DIR/name");
  if (o.tokenizerModel && o.vocabSize)
    throw UsageError("--tokenizer-model and --vocab-size exclude each other");
  if (seen["--austen-rdata"] && !o.corpus)
    throw UsageError("--austen-rdata only applies to --corpus austen");
  return o;
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

std::string readBinary(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path))
    throw std::runtime_error("cannot open " + path +
                             (fs::exists(path) ? "" : ": no such file"));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeBinary(const std::string &path, const std::string &data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.close();
  if (!f)
    throw std::runtime_error("cannot write " + path);
}

struct SplitStats {
  uint64_t docs = 0, tokens = 0;
};

SplitStats writeDataset(const std::string &prefix,
                        const std::vector<std::vector<int32_t>> &docs,
                        const Tokenizer &tok) {
  data::IndexedDatasetWriter w(prefix, data::tokenTypeForVocab(tok.vocabSize()));
  SplitStats s;
  for (auto d : docs) {
    d.push_back(tok.eosId()); // Megatron's --append-eod
    w.addDocument(d);
    s.tokens += d.size();
  }
  w.finish();
  s.docs = docs.size();
  return s;
}

int build(const Options &o) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string prefix = *o.outputPrefix;
  // Fail on an unusable output location before the expensive work.
  fs::path dir = fs::path(prefix).parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir))
      throw std::runtime_error("cannot create output directory " +
                               dir.string() + ": " + ec.message());
  }

  std::vector<Source> sources;
  if (o.corpus)
    sources = loadAusten(o.austenRData);
  else
    sources.push_back(loadTextFile(*o.input));
  uint64_t paras = 0, bytes = 0;
  for (const auto &s : sources)
    paras += s.docs.size(), bytes += s.bytes;
  std::printf("mega-data: read %zu source(s): %llu paragraphs, %llu bytes "
              "(%.2f s)\n",
              sources.size(), static_cast<unsigned long long>(paras),
              static_cast<unsigned long long>(bytes), secondsSince(t0));

  Split split = splitCorpus(sources, o.validFraction);
  std::printf("mega-data: split: %zu train / %zu valid documents (last "
              "ceil(%g*n) paragraphs of each source to valid)\n",
              split.train.size(), split.valid.size(), o.validFraction);

  const auto t1 = std::chrono::steady_clock::now();
  std::string proto, modelWhat;
  if (o.tokenizerModel) {
    proto = readBinary(*o.tokenizerModel);
    modelWhat = *o.tokenizerModel;
  } else {
    proto = trainTokenizer(split.train, o.vocabSize.value_or(8192), o.verbose);
    modelWhat = prefix + ".model";
  }
  setTokenizerLogging(o.verbose);
  Tokenizer tok = Tokenizer::fromSerialized(proto, modelWhat);
  writeBinary(prefix + ".model", proto);
  tok.writeVocab(prefix + ".vocab");
  std::printf("mega-data: tokenizer %s: vocab %d (unk %d, bos %d, eos %d) "
              "(%.2f s)\n",
              o.tokenizerModel ? "loaded" : "trained (BPE)", tok.vocabSize(),
              tok.unkId(), tok.bosId(), tok.eosId(), secondsSince(t1));
  // BPE stops early when the text has no more pairs to merge; say so, since
  // a model config built for the requested size would waste embeddings.
  if (!o.tokenizerModel && tok.vocabSize() < o.vocabSize.value_or(8192))
    std::printf("mega-data: note: the training text supports only %d of the "
                "%d requested pieces\n",
                tok.vocabSize(), o.vocabSize.value_or(8192));

  const auto t2 = std::chrono::steady_clock::now();
  for (const auto &[name, docs] :
       {std::pair{"train", &split.train}, std::pair{"valid", &split.valid}}) {
    const std::string p = prefix + "_" + name;
    SplitStats s = writeDataset(p, tok.encodeAll(*docs, o.threads), tok);
    std::printf("mega-data: %s: %llu documents, %llu tokens, %s\n", p.c_str(),
                static_cast<unsigned long long>(s.docs),
                static_cast<unsigned long long>(s.tokens),
                data::tokenTypeName(data::tokenTypeForVocab(tok.vocabSize())));
  }
  std::printf("mega-data: encoded in %.2f s; total %.2f s\n",
              secondsSince(t2), secondsSince(t0));
  return 0;
}

void printInfo(const data::IndexedDataset &ds) {
  std::printf("%s:\n", ds.prefix().c_str());
  std::printf("  documents:    %llu\n",
              static_cast<unsigned long long>(ds.numDocuments()));
  std::printf("  sequences:    %llu\n",
              static_cast<unsigned long long>(ds.numSequences()));
  std::printf("  tokens:       %llu\n",
              static_cast<unsigned long long>(ds.numTokens()));
  std::printf("  dtype:        %s (code %d)\n", data::tokenTypeName(ds.tokenType()),
              static_cast<int>(ds.tokenType()));
  std::printf("  max token id: %d\n", ds.maxTokenId());
}

int info(const std::string &prefix) {
  std::vector<std::string> prefixes;
  if (fs::exists(prefix + ".idx"))
    prefixes = {prefix};
  else if (fs::exists(prefix + "_train.idx"))
    prefixes = {prefix + "_train", prefix + "_valid"};
  else
    throw std::runtime_error("no dataset at " + prefix + " (neither " + prefix +
                             ".idx nor " + prefix + "_train.idx exists)");
  // Load everything first so an error leaves no partial report behind.
  std::vector<data::IndexedDataset> sets;
  for (const auto &p : prefixes)
    sets.push_back(data::IndexedDataset::open(p));
  std::optional<Tokenizer> tok;
  if (prefixes.size() == 2 && fs::exists(prefix + ".model")) {
    setTokenizerLogging(false);
    tok = Tokenizer::fromSerialized(readBinary(prefix + ".model"),
                                    prefix + ".model");
    for (const auto &ds : sets)
      if (ds.maxTokenId() >= tok->vocabSize())
        throw std::runtime_error(ds.prefix() + ": token id " +
                                 std::to_string(ds.maxTokenId()) +
                                 " >= vocab size " +
                                 std::to_string(tok->vocabSize()));
  }
  for (const auto &ds : sets)
    printInfo(ds);
  if (tok)
    std::printf("%s.model:\n  vocab size:   %d (eos %d)\n", prefix.c_str(),
                tok->vocabSize(), tok->eosId());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  try {
    Options o = parseArgs(argc, argv);
    if (o.help) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return o.info ? info(*o.info) : build(o);
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "mega-data: error: out of memory\n");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "mega-data: error: %s\n",
                 mega::errorLine(e.what()).c_str());
  }
  return 1;
}

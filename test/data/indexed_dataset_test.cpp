//===- indexed_dataset_test.cpp - Unit test of mega/Data/IndexedDataset.h -===//
//
// Covers what the mega-data end-to-end test cannot reach: int32 datasets
// (vocab >= 65500), empty documents, Megatron files with several sequences
// per document or with a multimodal mode array, other integer dtypes, and
// the writer's range checks. Usage: indexed_dataset_test [SCRATCH_DIR]
//
//===----------------------------------------------------------------------===//
#include "mega/Data/IndexedDataset.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

using namespace mega::data;
namespace fs = std::filesystem;

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond     \
                << "\n";                                                       \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

static std::string slurp(const std::string &p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
static void spit(const std::string &p, const std::string &d) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << d;
}
static void le(std::string &s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i)
    s.push_back(static_cast<char>(v >> (8 * i)));
}

/// Expects open(prefix) to throw a one-line message containing `needle`.
static void expectError(const std::string &prefix, const std::string &needle) {
  try {
    IndexedDataset::open(prefix);
    std::cerr << "no error for " << prefix << " (wanted '" << needle << "')\n";
    ++failures;
  } catch (const std::runtime_error &e) {
    std::string m = e.what();
    if (m.find(needle) == std::string::npos || m.find('\n') != std::string::npos) {
      std::cerr << "unexpected message for " << prefix << ": " << m << "\n";
      ++failures;
    }
  }
}

int main(int argc, char **argv) {
  fs::path dir = argc > 1 ? fs::path(argv[1])
                          : fs::temp_directory_path() / "mega_idx_test";
  fs::create_directories(dir);
  const std::string u16 = (dir / "u16").string(), i32 = (dir / "i32").string();

  CHECK(tokenTypeForVocab(65499) == TokenType::UInt16);
  CHECK(tokenTypeForVocab(65500) == TokenType::Int32);

  // uint16 round trip with an empty document in the middle.
  {
    IndexedDatasetWriter w(u16, TokenType::UInt16);
    w.addDocument(std::vector<int32_t>{5, 65535, 2});
    w.addDocument(std::vector<int32_t>{});
    w.addDocument(std::vector<int32_t>{7, 2});
    w.finish();
    auto ds = IndexedDataset::open(u16);
    CHECK(ds.numDocuments() == 3 && ds.numSequences() == 3);
    CHECK(ds.numTokens() == 5 && ds.maxTokenId() == 65535);
    CHECK((ds.tokens() == std::vector<int32_t>{5, 65535, 2, 7, 2}));
    CHECK(ds.document(1).first == 3 && ds.document(1).second == 3);
    CHECK(ds.document(2).first == 3 && ds.document(2).second == 5);
    CHECK((ds.documentOffsets() == std::vector<uint64_t>{0, 3, 3, 5}));
    CHECK(slurp(u16 + ".bin").size() == 10);
    // Header bytes exactly as Megatron's _IndexWriter writes them.
    std::string idx = slurp(u16 + ".idx");
    std::string want("MMIDIDX\0\0", 9);
    le(want, 1, 8), want.push_back(8), le(want, 3, 8), le(want, 4, 8);
    le(want, 3, 4), le(want, 0, 4), le(want, 2, 4);
    le(want, 0, 8), le(want, 6, 8), le(want, 6, 8);
    for (int d = 0; d <= 3; ++d)
      le(want, d, 8);
    CHECK(idx == want);
  }
  // int32 for big vocabularies.
  {
    IndexedDatasetWriter w(i32, TokenType::Int32);
    w.addDocument(std::vector<int32_t>{100000, 2});
    w.finish();
    auto ds = IndexedDataset::open(i32);
    CHECK(ds.tokenType() == TokenType::Int32 && ds.maxTokenId() == 100000);
    CHECK(slurp(i32 + ".bin").size() == 8);
  }
  // Writer range checks.
  {
    IndexedDatasetWriter w((dir / "bad").string(), TokenType::UInt16);
    bool threw = false;
    try { w.addDocument(std::vector<int32_t>{70000}); } catch (const std::runtime_error &) { threw = true; }
    CHECK(threw);
    threw = false;
    try { w.addDocument(std::vector<int32_t>{-1}); } catch (const std::runtime_error &) { threw = true; }
    CHECK(threw);
  }
  // A Megatron file with two sequences in one document, int64 tokens and a
  // trailing multimodal mode array: readable, sequences flattened.
  {
    const std::string p = (dir / "mm").string();
    std::string idx("MMIDIDX\0\0", 9), bin;
    le(idx, 1, 8), idx.push_back(5), le(idx, 2, 8), le(idx, 2, 8);
    le(idx, 1, 4), le(idx, 2, 4);
    le(idx, 0, 8), le(idx, 8, 8);
    le(idx, 0, 8), le(idx, 2, 8);
    idx += std::string("\0\0", 2); // modes
    le(bin, 4, 8), le(bin, 9, 8), le(bin, 2, 8);
    spit(p + ".idx", idx), spit(p + ".bin", bin);
    auto ds = IndexedDataset::open(p);
    CHECK(ds.numDocuments() == 1 && ds.numSequences() == 2);
    CHECK((ds.tokens() == std::vector<int32_t>{4, 9, 2}));
    CHECK(ds.document(0).second == 3);
  }
  // Corruptions, each with a message naming the file and the problem.
  {
    const std::string good = slurp(u16 + ".idx"), bin = slurp(u16 + ".bin");
    auto variant = [&](const std::string &name, std::string idx,
                       std::string b) {
      const std::string p = (dir / name).string();
      spit(p + ".idx", idx), spit(p + ".bin", b);
      return p;
    };
    std::string s = good;
    expectError((dir / "nothing").string(), "nothing.idx");
    expectError(variant("short", good.substr(0, 30), bin), "short.idx: truncated header");
    s = good, s[3] = 'X';
    expectError(variant("magic", s, bin), "magic.idx: bad magic");
    s = good, s[9] = 2;
    expectError(variant("ver", s, bin), "ver.idx: unsupported version 2");
    s = good, s[17] = 6;
    expectError(variant("float", s, bin), "float.idx: unsupported dtype code 6");
    s = good, s[18] = 4;
    expectError(variant("count", s, bin), "count.idx: size");
    s = good, s[25] = 0x7f;
    expectError(variant("huge", s, bin), "huge.idx: sequence count");
    expectError(variant("extra", good + "xy", bin), "extra.idx: size");
    s = good, s[34] = 4; // first length 3 -> 4: pointers no longer agree
    expectError(variant("ptr", s, bin), "ptr.idx: sequence 1 pointer");
    s = good, s[s.size() - 8] = 2; // last doc index 3 -> 2
    expectError(variant("doc", s, bin), "doc.idx: document indices must run");
    s = good, s[s.size() - 16] = 9;
    expectError(variant("order", s, bin), "order.idx: document index 2");
    expectError(variant("binsz", good, bin + "z"), "binsz.bin: size 11");
    std::string neg = slurp(i32 + ".bin");
    neg[3] = static_cast<char>(0x80);
    expectError(variant("neg", slurp(i32 + ".idx"), neg), "neg.bin: token 0");
  }
  fs::remove_all(dir);
  if (failures) {
    std::cerr << failures << " failure(s)\n";
    return 1;
  }
  std::cout << "indexed_dataset_test: all passed\n";
  return 0;
}

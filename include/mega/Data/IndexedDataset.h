//===- IndexedDataset.h - Megatron MMIDIDX .bin/.idx reader and writer ----===//
//
// Header-only reader and writer for the token datasets Megatron-LM trains on
// (megatron/core/datasets/indexed_dataset.py). A dataset PREFIX is two files:
//
//   PREFIX.bin  the tokens of every sequence, back to back, little-endian,
//               in the element type named by the index (uint16 or int32 here)
//   PREFIX.idx  offset  size   field
//               0       9      magic "MMIDIDX\0\0"
//               9       8      u64 version = 1
//               17      1      u8 dtype code (1 uint8, 2 int8, 3 int16,
//                              4 int32, 5 int64, 8 uint16; 6/7 are floats)
//               18      8      u64 S = number of sequences
//               26      8      u64 D = number of document_indices entries,
//                              i.e. documents + 1 (Megatron writes
//                              len(document_indices), which starts with 0)
//               34      4*S    i32 sequence lengths, in tokens
//               ..      8*S    i64 sequence pointers, byte offsets into .bin
//               ..      8*D    i64 document indices: document d is sequences
//                              [idx[d], idx[d+1]); idx[0] = 0, idx[D-1] = S
//               ..      S      (multimodal only) i8 sequence modes - ignored
//   All integers are little-endian.
//
// Design choices (why):
//  * The reader copies the tokens into a std::vector<int32_t>. The datasets a
//    2-core training run uses are a few MB; a plain vector is simpler than an
//    mmap, works everywhere, and lets us check every token once on load.
//  * Every inconsistency (sizes that do not add up, pointers that are not
//    contiguous, a token that does not fit) is an error at open time with a
//    one-line message naming the file, so the runtime never indexes out of
//    bounds later.
//  * Bytes are assembled explicitly as little-endian so the code is correct
//    on any host, not only on little-endian ones.
//
// It depends on the C++ standard library alone.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_DATA_INDEXEDDATASET_H
#define MEGA_DATA_INDEXEDDATASET_H

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mega::data {

/// Megatron's numeric codes for the token element type (DType enum).
enum class TokenType : uint8_t {
  UInt8 = 1,
  Int8 = 2,
  Int16 = 3,
  Int32 = 4,
  Int64 = 5,
  UInt16 = 8,
};

inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I',
                                        'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIndexVersion = 1;
/// Size of the fixed part of the .idx file (magic..document count).
inline constexpr uint64_t kIndexHeaderSize = 34;

/// Bytes per token; 0 for codes that are not integer token types.
inline size_t tokenTypeSize(uint8_t code) {
  switch (code) {
  case 1: case 2: return 1;
  case 3: case 8: return 2;
  case 4: return 4;
  case 5: return 8;
  default: return 0;
  }
}

inline const char *tokenTypeName(TokenType t) {
  switch (t) {
  case TokenType::UInt8: return "uint8";
  case TokenType::Int8: return "int8";
  case TokenType::Int16: return "int16";
  case TokenType::Int32: return "int32";
  case TokenType::Int64: return "int64";
  case TokenType::UInt16: return "uint16";
  }
  return "?";
}

/// Megatron's rule (DType.optimal_dtype): uint16 when the vocabulary has
/// fewer than 65500 entries, else int32.
inline TokenType tokenTypeForVocab(int64_t vocabSize) {
  return vocabSize < 65500 ? TokenType::UInt16 : TokenType::Int32;
}

namespace detail {

inline std::string errnoText() { return std::strerror(errno); }

inline uint64_t getLE(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

inline void putLE(std::string &out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

/// Reads a whole file; throws "cannot open/read FILE: reason".
inline std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path + ": " + errnoText());
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (in.bad())
    throw std::runtime_error("cannot read " + path + ": " + errnoText());
  return data;
}

} // namespace detail

/// A loaded dataset: the flat token stream plus document boundaries.
class IndexedDataset {
public:
  /// Opens PREFIX.idx and PREFIX.bin and validates them against each other.
  /// Throws std::runtime_error with a one-line message naming the bad file.
  static IndexedDataset open(const std::string &prefix) {
    IndexedDataset ds;
    ds.prefix_ = prefix;
    const std::string idxPath = prefix + ".idx", binPath = prefix + ".bin";
    const std::string idx = detail::readFile(idxPath);
    auto fail = [&](const std::string &what) -> void {
      throw std::runtime_error(idxPath + ": " + what);
    };
    const auto *p = reinterpret_cast<const unsigned char *>(idx.data());
    const uint64_t size = idx.size();
    if (size < kIndexHeaderSize)
      fail("truncated header (" + std::to_string(size) + " bytes, need " +
           std::to_string(kIndexHeaderSize) + ")");
    if (std::memcmp(p, kIndexMagic, sizeof kIndexMagic) != 0)
      fail("bad magic, not a Megatron MMIDIDX index");
    if (uint64_t v = detail::getLE(p + 9, 8); v != kIndexVersion)
      fail("unsupported version " + std::to_string(v) + " (expected 1)");
    const uint8_t code = p[17];
    const size_t item = tokenTypeSize(code);
    if (item == 0)
      fail("unsupported dtype code " + std::to_string(code) +
           " (expected an integer type: 1,2,3,4,5,8)");
    ds.type_ = static_cast<TokenType>(code);
    const uint64_t S = detail::getLE(p + 18, 8);
    const uint64_t D = detail::getLE(p + 26, 8);
    // Bound the counts by the file size before multiplying, so a corrupt
    // count cannot overflow the size computation below.
    const uint64_t body = size - kIndexHeaderSize;
    if (S > body / 12 || D > body / 8)
      fail("sequence count " + std::to_string(S) + " / document count " +
           std::to_string(D) + " do not fit in a " + std::to_string(size) +
           "-byte file");
    const uint64_t expect = kIndexHeaderSize + 12 * S + 8 * D;
    // Megatron appends one int8 mode per sequence for multimodal data; allow
    // it (and ignore it) but nothing else.
    if (size != expect && size != expect + S)
      fail("size " + std::to_string(size) + " bytes does not match counts (" +
           std::to_string(S) + " sequences, " + std::to_string(D) +
           " document indices => " + std::to_string(expect) + " bytes)");
    if (D < 1)
      fail("document index list is empty (must start with 0)");
    const unsigned char *lens = p + kIndexHeaderSize;
    const unsigned char *ptrs = lens + 4 * S;
    const unsigned char *docs = ptrs + 8 * S;

    // Sequences must be back to back from byte 0: the flat token stream the
    // runtime sees relies on it (Megatron's builder always writes them so).
    uint64_t tokens = 0;
    ds.seqStarts_.reserve(S + 1);
    for (uint64_t i = 0; i < S; ++i) {
      const auto len = static_cast<int32_t>(detail::getLE(lens + 4 * i, 4));
      const auto ptr = static_cast<int64_t>(detail::getLE(ptrs + 8 * i, 8));
      if (len < 0)
        fail("sequence " + std::to_string(i) + " has negative length");
      if (ptr < 0 || static_cast<uint64_t>(ptr) != tokens * item)
        fail("sequence " + std::to_string(i) + " pointer " +
             std::to_string(ptr) + " is not contiguous (expected " +
             std::to_string(tokens * item) + ")");
      ds.seqStarts_.push_back(tokens);
      tokens += static_cast<uint64_t>(len);
    }
    ds.seqStarts_.push_back(tokens);
    ds.docSeq_.resize(D);
    for (uint64_t d = 0; d < D; ++d) {
      const auto v = static_cast<int64_t>(detail::getLE(docs + 8 * d, 8));
      const int64_t prev = d ? ds.docSeq_[d - 1] : 0;
      if (v < prev || static_cast<uint64_t>(v) > S)
        fail("document index " + std::to_string(d) + " = " +
             std::to_string(v) + " is out of order or past " +
             std::to_string(S) + " sequences");
      ds.docSeq_[d] = v;
    }
    if (ds.docSeq_.front() != 0 || static_cast<uint64_t>(ds.docSeq_.back()) != S)
      fail("document indices must run from 0 to the sequence count " +
           std::to_string(S));

    const std::string bin = detail::readFile(binPath);
    if (bin.size() != tokens * item)
      throw std::runtime_error(
          binPath + ": size " + std::to_string(bin.size()) +
          " bytes does not match the index (" + std::to_string(tokens) +
          " tokens x " + std::to_string(item) + " bytes)");
    const auto *b = reinterpret_cast<const unsigned char *>(bin.data());
    ds.tokens_.resize(tokens);
    const bool isSigned = code == 2 || code == 3 || code == 4 || code == 5;
    for (uint64_t i = 0; i < tokens; ++i) {
      uint64_t raw = detail::getLE(b + i * item, static_cast<int>(item));
      int64_t v = static_cast<int64_t>(raw);
      if (isSigned && item < 8 && (raw >> (8 * item - 1)))
        v = static_cast<int64_t>(raw) - (int64_t(1) << (8 * item)); // sign
      if (v < 0 || v > std::numeric_limits<int32_t>::max())
        throw std::runtime_error(binPath + ": token " + std::to_string(i) +
                                 " has id " + std::to_string(v) +
                                 ", outside [0, 2^31)");
      ds.tokens_[i] = static_cast<int32_t>(v);
      ds.maxToken_ = std::max(ds.maxToken_, ds.tokens_[i]);
    }
    return ds;
  }

  const std::string &prefix() const { return prefix_; }
  TokenType tokenType() const { return type_; }
  /// All tokens of all documents, in file order.
  const std::vector<int32_t> &tokens() const { return tokens_; }
  uint64_t numTokens() const { return tokens_.size(); }
  uint64_t numSequences() const { return seqStarts_.size() - 1; }
  uint64_t numDocuments() const { return docSeq_.size() - 1; }
  /// Largest token id present, -1 when the dataset is empty.
  int32_t maxTokenId() const { return maxToken_; }
  /// Token range [first, second) of document d in tokens().
  std::pair<uint64_t, uint64_t> document(uint64_t d) const {
    if (d >= numDocuments())
      throw std::out_of_range(prefix_ + ": document " + std::to_string(d) +
                              " out of range");
    return {seqStarts_[docSeq_[d]], seqStarts_[docSeq_[d + 1]]};
  }
  /// Token offsets where each document starts, plus numTokens() at the end
  /// (numDocuments()+1 entries) - the shape a sampler wants.
  std::vector<uint64_t> documentOffsets() const {
    std::vector<uint64_t> out;
    out.reserve(docSeq_.size());
    for (int64_t s : docSeq_)
      out.push_back(seqStarts_[s]);
    return out;
  }

private:
  std::string prefix_;
  TokenType type_ = TokenType::Int32;
  std::vector<int32_t> tokens_;
  std::vector<uint64_t> seqStarts_; ///< token offset per sequence, +1 end
  std::vector<int64_t> docSeq_;     ///< document -> first sequence, +1 end
  int32_t maxToken_ = -1;
};

/// Writes PREFIX.bin while documents are added and PREFIX.idx at finish().
/// One sequence per document (what preprocess_data.py writes without
/// sentence splitting).
class IndexedDatasetWriter {
public:
  IndexedDatasetWriter(std::string prefix, TokenType type)
      : prefix_(std::move(prefix)), type_(type),
        item_(tokenTypeSize(static_cast<uint8_t>(type))) {
    if (item_ == 0)
      throw std::runtime_error(prefix_ + ": unsupported token type");
    bin_.open(prefix_ + ".bin", std::ios::binary | std::ios::trunc);
    if (!bin_)
      throw std::runtime_error("cannot create " + prefix_ +
                               ".bin: " + detail::errnoText());
  }

  /// Appends one document (may be empty). Throws if a token does not fit
  /// the element type.
  void addDocument(const int32_t *toks, size_t n) {
    if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      throw std::runtime_error(prefix_ + ".bin: document too long");
    // Largest id the element type holds (ids are int32, so 4+ bytes: all).
    const bool isSigned = type_ != TokenType::UInt8 && type_ != TokenType::UInt16;
    const int64_t hi = item_ >= 4 ? std::numeric_limits<int32_t>::max()
                       : isSigned ? (int64_t(1) << (8 * item_ - 1)) - 1
                                  : (int64_t(1) << (8 * item_)) - 1;
    std::string buf;
    buf.reserve(n * item_);
    for (size_t i = 0; i < n; ++i) {
      if (toks[i] < 0 || toks[i] > hi)
        throw std::runtime_error(prefix_ + ".bin: token id " +
                                 std::to_string(toks[i]) + " does not fit " +
                                 tokenTypeName(type_));
      detail::putLE(buf, static_cast<uint64_t>(toks[i]), static_cast<int>(item_));
    }
    bin_.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (!bin_)
      throw std::runtime_error("cannot write " + prefix_ + ".bin: " +
                               detail::errnoText());
    lengths_.push_back(static_cast<int32_t>(n));
  }
  void addDocument(const std::vector<int32_t> &toks) {
    addDocument(toks.data(), toks.size());
  }

  /// Closes the .bin and writes the .idx. Call exactly once.
  void finish() {
    bin_.close();
    if (!bin_)
      throw std::runtime_error("cannot write " + prefix_ + ".bin");
    const uint64_t S = lengths_.size();
    std::string idx(kIndexMagic, sizeof kIndexMagic);
    detail::putLE(idx, kIndexVersion, 8);
    idx.push_back(static_cast<char>(type_));
    detail::putLE(idx, S, 8);
    detail::putLE(idx, S + 1, 8); // document_indices has S+1 entries
    for (int32_t len : lengths_)
      detail::putLE(idx, static_cast<uint32_t>(len), 4);
    uint64_t ptr = 0;
    for (int32_t len : lengths_) {
      detail::putLE(idx, ptr, 8);
      ptr += static_cast<uint64_t>(len) * item_;
    }
    for (uint64_t d = 0; d <= S; ++d)
      detail::putLE(idx, d, 8);
    std::ofstream out(prefix_ + ".idx", std::ios::binary | std::ios::trunc);
    out.write(idx.data(), static_cast<std::streamsize>(idx.size()));
    out.close();
    if (!out)
      throw std::runtime_error("cannot write " + prefix_ +
                               ".idx: " + detail::errnoText());
  }

  uint64_t numDocuments() const { return lengths_.size(); }

private:
  std::string prefix_;
  TokenType type_;
  size_t item_;
  std::ofstream bin_;
  std::vector<int32_t> lengths_;
};

} // namespace mega::data

#endif // MEGA_DATA_INDEXEDDATASET_H

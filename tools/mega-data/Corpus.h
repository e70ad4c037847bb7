//===- Corpus.h - Text sources, paragraphs and the train/valid split ------===//
//
// A corpus is a list of sources (a novel, or one input file), each a list of
// documents. A document is one paragraph: a run of non-blank lines, every
// line trimmed of surrounding whitespace and the lines joined by one space;
// inside a paragraph every run of ASCII whitespace becomes one space.
// Blank (whitespace-only) lines separate paragraphs.
//
// Split rule (deterministic, no randomness): for each source with n
// documents and --valid-fraction f > 0, the LAST k = ceil(f * n) documents,
// clamped to [1, n-1], go to validation and the rest to training, in order.
// Taking the tail of every novel (not a random sample) keeps validation text
// unseen as running prose and keeps every novel represented in both splits.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TOOLS_DATA_CORPUS_H
#define MEGA_TOOLS_DATA_CORPUS_H

#include <cstddef>
#include <string>
#include <vector>

namespace mega::datatool {

struct Source {
  std::string name;               ///< "emma", or the input file path
  std::vector<std::string> docs;  ///< paragraphs, in text order
  size_t bytes = 0;               ///< total UTF-8 bytes of docs
};

/// Default location of the janeaustenr lazy-load database (without suffix).
inline constexpr const char *kAustenRData =
    "/usr/lib/R/site-library/janeaustenr/data/Rdata";

/// The six novels in publication order (the corpus order, fixed).
const std::vector<std::string> &austenNovels();

/// Groups lines into paragraphs (see the file comment).
std::vector<std::string> paragraphs(const std::vector<std::string> &lines);

/// Reads the six novels from BASE.rdx/.rdb. Throws std::runtime_error.
std::vector<Source> loadAusten(const std::string &rdataBase);

/// Reads a UTF-8 text file (optional BOM, LF or CRLF). Rejects invalid
/// UTF-8 and NUL bytes with the line number.
Source loadTextFile(const std::string &path);

/// Number of validation documents for n documents (see the split rule).
/// Throws when f > 0 but n < 2, since one side would be empty.
size_t validCount(size_t n, double fraction, const std::string &name);

struct Split {
  std::vector<std::string> train, valid;
};
Split splitCorpus(const std::vector<Source> &sources, double fraction);

/// Returns the byte offset of the first invalid UTF-8 sequence, or npos.
size_t findInvalidUtf8(const std::string &s);

} // namespace mega::datatool

#endif // MEGA_TOOLS_DATA_CORPUS_H

//===- RData.h - Minimal reader for R serialization and lazy-load DBs -----===//
//
// The Debian package r-cran-janeaustenr ships the novels only inside R's
// lazy-load database (data/Rdata.rdx + data/Rdata.rdb). To use it without an
// R installation we read that format directly. Only what those files need is
// supported; anything else is rejected with a clear error, never guessed.
//
// R serialization (format versions 2 and 3, "X\n" = XDR, big-endian):
//   header  "X\n", int version, int writer R version, int min reader version,
//           [v3: int n, n bytes native encoding name]
//   item    int flags: bits 0-7 type, bit 9 has-attributes, bit 10 has-tag,
//           bits 12-27 "levels" (for CHARSXP: the string's encoding)
//           then a type-specific body; vectors are (int length | -1, hi, lo)
//           followed by the elements, then the attribute pairlist if flagged.
//
// Lazy-load database:
//   .rdx    a serialized (usually gzip-compressed) named list:
//             variables  = named list of int[2] (byte offset, length) in .rdb
//             references = environments (must be empty for us)
//             compressed = TRUE/1 (zlib), 2 (bzip2), 3 (xz)
//   .rdb    per variable: 4-byte big-endian uncompressed length, then for
//           compressed=1 a zlib stream; for 2/3 a type byte ('0' stored,
//           '1' zlib, '2' bzip2, 'Z' xz) and that stream. The result is a
//           serialized R object.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TOOLS_DATA_RDATA_H
#define MEGA_TOOLS_DATA_RDATA_H

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mega::rdata {

/// Every malformed, truncated or unsupported input.
struct RError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// SEXP type codes we understand (R's Rinternals.h numbering).
enum Sexp : int {
  NILSXP = 0,
  SYMSXP = 1,
  LISTSXP = 2,
  CHARSXP = 9,
  LGLSXP = 10,
  INTSXP = 13,
  REALSXP = 14,
  STRSXP = 16,
  VECSXP = 19,
  EXPRSXP = 20,
};

struct RObject;
using RPtr = std::shared_ptr<const RObject>;

/// A decoded R value. Only the fields matching `type` are used.
struct RObject {
  int type = NILSXP;
  std::vector<int32_t> ints;  ///< LGLSXP/INTSXP; NA is INT32_MIN
  std::vector<double> reals;  ///< REALSXP
  /// STRSXP elements, UTF-8; std::nullopt is NA_character_.
  std::vector<std::optional<std::string>> strings;
  std::optional<std::string> text; ///< CHARSXP (nullopt = NA) / SYMSXP name
  std::vector<RPtr> items;         ///< VECSXP elements, LISTSXP values
  std::vector<std::string> tags;   ///< LISTSXP tags ("" when untagged)
  std::vector<std::pair<std::string, RPtr>> attributes;

  /// Attribute `name`, or nullptr.
  const RObject *attr(const std::string &name) const;
  /// The "names" attribute as strings (empty when absent).
  std::vector<std::string> names() const;
  /// Element `name` of a named list (VECSXP), or nullptr.
  const RObject *get(const std::string &name) const;
  /// Number of elements for vector types.
  size_t length() const;
};

/// Human name of a SEXP type code, for error messages.
std::string sexpName(int type);

/// Decodes one serialized R object. `what` names the source in errors.
RPtr unserialize(const std::string &bytes, const std::string &what);

/// Inflates a zlib or gzip stream. `expected` (if nonzero) is the exact size
/// the caller knows it must have.
std::string inflate(const char *data, size_t size, size_t expected,
                    const std::string &what);

/// An opened lazy-load database (BASE.rdx + BASE.rdb).
class LazyLoadDB {
public:
  /// Reads and validates BASE.rdx; keeps BASE.rdb in memory.
  static LazyLoadDB open(const std::string &base);
  /// Variable names in index order.
  const std::vector<std::string> &variables() const { return names_; }
  bool has(const std::string &name) const;
  /// Decompresses and decodes one variable.
  RPtr load(const std::string &name) const;

private:
  std::string base_, rdb_;
  std::vector<std::string> names_;
  std::vector<std::pair<uint64_t, uint64_t>> spans_; ///< (offset, length)
  int compression_ = 1;
};

} // namespace mega::rdata

#endif // MEGA_TOOLS_DATA_RDATA_H

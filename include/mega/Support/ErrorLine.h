//===- ErrorLine.h - An error message made fit for one terminal line ------===//
//
// The command-line programs print every error as one line, `PROG: error:
// MESSAGE`. A message may quote what a damaged file held (a checkpoint's
// tensor name, a JSON parser's unexpected byte): line breaks and tabs become
// spaces, and any other control byte and any byte that is not part of valid
// UTF-8 is written as \xNN, so the line stays one line, readable, and free of
// terminal escapes. Valid UTF-8 (a name in another script) passes unchanged.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_SUPPORT_ERRORLINE_H
#define MEGA_SUPPORT_ERRORLINE_H

#include <cstddef>
#include <string>
#include <string_view>

namespace mega {

/// The length of the valid UTF-8 sequence of two to four bytes starting at
/// s[i] (a lead byte >= 0x80), or 0 when it is not one (a stray continuation
/// byte, an overlong lead, a cut sequence).
inline size_t utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t n = c >= 0xC2 && c <= 0xDF   ? 2
             : c >= 0xE0 && c <= 0xEF ? 3
             : c >= 0xF0 && c <= 0xF4 ? 4
                                      : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80)
      return 0;
  // The second byte's range where the lead alone does not settle it:
  // overlong forms (E0, F0), UTF-16 surrogates (ED), past U+10FFFF (F4).
  const unsigned char c1 = byte(i + 1);
  if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
      (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
    return 0;
  return n;
}

/// `message` as one printable line (see the file comment).
inline std::string errorLine(std::string_view message) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(message.size());
  for (size_t i = 0; i < message.size();) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    if (c == '\n' || c == '\r' || c == '\t') {
      out += ' ';
      ++i;
    } else if (c >= 0x20 && c < 0x7F) {
      out += char(c);
      ++i;
    } else if (size_t n = c >= 0x80 ? utf8SequenceLength(message, i) : 0) {
      out.append(message.substr(i, n));
      i += n;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    }
  }
  return out;
}

} // namespace mega

#endif // MEGA_SUPPORT_ERRORLINE_H

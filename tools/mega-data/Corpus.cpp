//===- Corpus.cpp - Text sources, paragraphs and the train/valid split ----===//
#include "Corpus.h"

#include "RData.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace mega::datatool {

namespace {

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' ||
         c == '\v';
}

std::string trim(const std::string &s) {
  size_t b = 0, e = s.size();
  while (b < e && isSpace(s[b]))
    ++b;
  while (e > b && isSpace(s[e - 1]))
    --e;
  return s.substr(b, e - b);
}

Source makeSource(std::string name, const std::vector<std::string> &lines) {
  Source src;
  src.name = std::move(name);
  src.docs = paragraphs(lines);
  for (const auto &d : src.docs)
    src.bytes += d.size();
  return src;
}

} // namespace

const std::vector<std::string> &austenNovels() {
  static const std::vector<std::string> names = {
      "sensesensibility", "prideprejudice", "mansfieldpark",
      "emma",             "northangerabbey", "persuasion"};
  return names;
}

std::vector<std::string> paragraphs(const std::vector<std::string> &lines) {
  std::vector<std::string> out;
  std::string cur;
  for (const auto &raw : lines) {
    std::string line = trim(raw);
    if (line.empty()) {
      if (!cur.empty())
        out.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (!cur.empty())
      cur.push_back(' ');
    // Runs of ASCII whitespace (tabs, double spaces) become one space, so a
    // document is exactly what decode(encode(document)) gives back.
    for (size_t i = 0; i < line.size(); ++i) {
      if (isSpace(line[i])) {
        if (cur.back() != ' ')
          cur.push_back(' ');
      } else {
        cur.push_back(line[i]);
      }
    }
  }
  if (!cur.empty())
    out.push_back(std::move(cur));
  return out;
}

size_t findInvalidUtf8(const std::string &s) {
  const auto *p = reinterpret_cast<const unsigned char *>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n)
      return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80)
        return i;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and values past U+10FFFF are invalid.
    static const uint32_t minCp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minCp[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
      return i;
    i += len;
  }
  return std::string::npos;
}

std::vector<Source> loadAusten(const std::string &rdataBase) {
  auto db = rdata::LazyLoadDB::open(rdataBase);
  std::vector<Source> out;
  for (const auto &name : austenNovels()) {
    if (!db.has(name))
      throw std::runtime_error(rdataBase + ".rdx: novel '" + name +
                               "' not found");
    rdata::RPtr obj = db.load(name);
    if (obj->type != rdata::STRSXP)
      throw std::runtime_error(rdataBase + ".rdb: '" + name +
                               "' is not a character vector (got: " +
                               rdata::sexpName(obj->type) + ")");
    std::vector<std::string> lines;
    lines.reserve(obj->strings.size());
    for (const auto &s : obj->strings) {
      std::string line = s.value_or(""); // NA lines count as blank
      if (findInvalidUtf8(line) != std::string::npos)
        throw std::runtime_error(rdataBase + ".rdb: '" + name +
                                 "' contains invalid UTF-8");
      lines.push_back(std::move(line));
    }
    out.push_back(makeSource(name, lines));
  }
  return out;
}

Source loadTextFile(const std::string &path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw std::runtime_error(path + ": is a directory, expected a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path + ": " +
                             std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (in.bad())
    throw std::runtime_error("cannot read " + path + ": " +
                             std::strerror(errno));
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0)
    data.erase(0, 3); // a UTF-8 byte order mark is not text
  auto lineOf = [&](size_t off) {
    size_t line = 1;
    for (size_t i = 0; i < off; ++i)
      line += data[i] == '\n';
    return line;
  };
  if (size_t bad = findInvalidUtf8(data); bad != std::string::npos)
    throw std::runtime_error(path + ": invalid UTF-8 at line " +
                             std::to_string(lineOf(bad)) + " (byte " +
                             std::to_string(bad) + ")");
  if (size_t nul = data.find('\0'); nul != std::string::npos)
    throw std::runtime_error(path + ": NUL byte at line " +
                             std::to_string(lineOf(nul)));
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < data.size()) {
    size_t nl = data.find('\n', start);
    if (nl == std::string::npos)
      nl = data.size();
    lines.push_back(data.substr(start, nl - start)); // '\r' goes in trim()
    start = nl + 1;
  }
  Source src = makeSource(path, lines);
  if (src.docs.empty())
    throw std::runtime_error(path + ": no text (only blank lines)");
  return src;
}

size_t validCount(size_t n, double fraction, const std::string &name) {
  if (fraction <= 0)
    return 0;
  if (n < 2)
    throw std::runtime_error(name + ": has " + std::to_string(n) +
                             " document(s); a train/valid split needs at "
                             "least 2 (or use --valid-fraction 0)");
  auto k = static_cast<size_t>(std::ceil(fraction * static_cast<double>(n)));
  return std::min(std::max<size_t>(k, 1), n - 1);
}

Split splitCorpus(const std::vector<Source> &sources, double fraction) {
  Split s;
  for (const auto &src : sources) {
    const size_t n = src.docs.size();
    const size_t k = validCount(n, fraction, src.name);
    s.train.insert(s.train.end(), src.docs.begin(), src.docs.end() - k);
    s.valid.insert(s.valid.end(), src.docs.end() - k, src.docs.end());
  }
  return s;
}

} // namespace mega::datatool

//===- Json.cpp - Minimal JSON parser and writers
//--------------------------===//
#include "Json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace mega::rt::json {

const Value *Value::find(const std::string &key) const {
  for (const auto &[k, v] : object)
    if (k == key)
      return &v;
  return nullptr;
}

bool Value::isInt() const {
  if (kind != Number || text.empty())
    return false;
  size_t i = text[0] == '-' ? 1 : 0;
  if (i == text.size() || text.size() - i > 18)
    return false;
  for (; i < text.size(); ++i)
    if (text[i] < '0' || text[i] > '9')
      return false;
  return true;
}

int64_t Value::asInt() const {
  if (!isInt())
    throw std::runtime_error("expected an integer");
  return std::strtoll(text.c_str(), nullptr, 10);
}

namespace {

class Parser {
public:
  Parser(const std::string &t, int maxDepth) : s(t), maxDepth(maxDepth) {}

  Value document() {
    Value v = value(0);
    ws();
    if (pos != s.size())
      fail("unexpected trailing characters");
    return v;
  }

private:
  [[noreturn]] void fail(const std::string &m) {
    throw std::runtime_error("malformed JSON: " + m + " at byte " +
                             std::to_string(pos));
  }
  void ws() {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' ||
                              s[pos] == '\n' || s[pos] == '\r'))
      ++pos;
  }
  bool eat(char c) {
    ws();
    if (pos < s.size() && s[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c))
      fail(std::string("expected '") + c + "'");
  }
  bool word(const char *w) {
    size_t n = std::char_traits<char>::length(w);
    if (s.compare(pos, n, w) == 0) {
      pos += n;
      return true;
    }
    return false;
  }

  Value value(int depth) {
    if (depth > maxDepth)
      fail("nesting too deep");
    ws();
    if (pos >= s.size())
      fail("unexpected end");
    Value v;
    char c = s[pos];
    if (c == '{') {
      ++pos;
      v.kind = Value::Object;
      if (eat('}'))
        return v;
      do {
        ws();
        std::string key = string();
        expect(':');
        v.object.emplace_back(std::move(key), value(depth + 1));
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++pos;
      v.kind = Value::Array;
      if (eat(']'))
        return v;
      do
        v.array.push_back(value(depth + 1));
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Value::String;
      v.text = string();
    } else if (word("true")) {
      v.kind = Value::Bool;
      v.boolean = true;
    } else if (word("false")) {
      v.kind = Value::Bool;
    } else if (word("null")) {
      v.kind = Value::Null;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Value::Number;
      size_t start = pos;
      if (s[pos] == '-')
        ++pos;
      auto digits = [&] {
        size_t d = pos;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9')
          ++pos;
        if (pos == d)
          fail("bad number");
      };
      digits();
      if (pos < s.size() && s[pos] == '.') {
        ++pos;
        digits();
      }
      if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
        ++pos;
        if (pos < s.size() && (s[pos] == '+' || s[pos] == '-'))
          ++pos;
        digits();
      }
      v.text = s.substr(start, pos - start);
      v.number = std::strtod(v.text.c_str(), nullptr);
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  static void utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (pos + 4 > s.size())
      fail("bad \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[pos++];
      int d = (c >= '0' && c <= '9')   ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (d < 0)
        fail("bad \\u escape");
      v = v << 4 | uint32_t(d);
    }
    return v;
  }

  std::string string() {
    if (pos >= s.size() || s[pos] != '"')
      fail("expected a string");
    ++pos;
    std::string out;
    while (true) {
      if (pos >= s.size())
        fail("unterminated string");
      char c = s[pos++];
      if (c == '"')
        return out;
      if (static_cast<unsigned char>(c) < 0x20)
        fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos >= s.size())
        fail("unterminated string");
      char e = s[pos++];
      switch (e) {
      case '"':
      case '\\':
      case '/':
        out += e;
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        uint32_t cp = hex4();
        if (cp >= 0xD800 && cp < 0xDC00 && s.compare(pos, 2, "\\u") == 0) {
          pos += 2;
          uint32_t lo = hex4();
          if (lo < 0xDC00 || lo >= 0xE000)
            fail("bad surrogate pair");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        utf8(out, cp);
        break;
      }
      default:
        fail("bad escape");
      }
    }
  }

  const std::string &s;
  size_t pos = 0;
  int maxDepth;
};

} // namespace

Value parse(const std::string &text, int maxDepth) {
  return Parser(text, maxDepth).document();
}

std::string quote(const std::string &s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += c;
      }
    }
  }
  return out + "\"";
}

std::string number(double v) {
  if (!std::isfinite(v))
    return "null";
  char buf[40];
  for (int prec = 6; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  return buf;
}

} // namespace mega::rt::json

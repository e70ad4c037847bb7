//===- Json.h - The little JSON the runtime reads and writes --------------===//
//
// Safetensors headers, checkpoint metadata, log lines and traces are JSON.
// The runtime needs objects, arrays, strings, numbers, booleans and null,
// and error messages that say what is wrong; nothing more, so no library.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_JSON_H
#define MEGA_RUNTIME_JSON_H

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mega::rt::json {

struct Value {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0.0;
  /// Numbers are also kept as written, so 64-bit integers survive exactly.
  std::string text;
  std::vector<Value> array;
  /// Object members in file order (safetensors allows any order).
  std::vector<std::pair<std::string, Value>> object;

  const Value *find(const std::string &key) const;
  bool isInt() const;
  /// The number as an exact integer; throws std::runtime_error otherwise.
  int64_t asInt() const;
};

/// Parses one JSON document (surrounding whitespace allowed). Throws
/// std::runtime_error("... at byte N") on any syntax error. `maxDepth`
/// bounds nesting so a hostile file cannot exhaust the stack.
Value parse(const std::string &text, int maxDepth = 64);

/// `s` as a JSON string literal, quotes included.
std::string quote(const std::string &s);
/// A finite number in the shortest form that reads back exactly (%.17g),
/// or `null` for NaN and infinities (JSON has no spelling for them).
std::string number(double v);

} // namespace mega::rt::json

#endif // MEGA_RUNTIME_JSON_H

//===- Rng.cpp - Rng state as text
//-----------------------------------------===//
#include "Rng.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace mega::rt {

std::string Rng::save() const {
  char buf[64];
  if (!haveSpare_) {
    std::snprintf(buf, sizeof buf, "%016" PRIx64, state_);
  } else {
    uint64_t bits;
    std::memcpy(&bits, &spare_, sizeof bits);
    std::snprintf(buf, sizeof buf, "%016" PRIx64 ":%016" PRIx64, state_, bits);
  }
  return buf;
}

bool Rng::restore(const std::string &text) {
  auto parseHex = [](const std::string &s, uint64_t &out) {
    if (s.size() != 16)
      return false;
    out = 0;
    for (char c : s) {
      int d = (c >= '0' && c <= '9')   ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                       : -1;
      if (d < 0)
        return false;
      out = out << 4 | uint64_t(d);
    }
    return true;
  };
  uint64_t state, bits = 0;
  size_t colon = text.find(':');
  if (!parseHex(text.substr(0, colon), state))
    return false;
  bool spare = colon != std::string::npos;
  if (spare && !parseHex(text.substr(colon + 1), bits))
    return false;
  state_ = state;
  haveSpare_ = spare;
  std::memcpy(&spare_, &bits, sizeof bits);
  if (!spare)
    spare_ = 0.0;
  return true;
}

} // namespace mega::rt

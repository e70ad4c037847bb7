//===- Rng.h - The runtime's one deterministic random number generator ----===//
//
// splitmix64 for the bits and Box-Muller for normals: tiny, self-contained
// and identical on every platform and compiler, so a seed names one run.
// The whole state is one 64-bit word plus a cached normal, which makes it
// trivial to store in a checkpoint.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_RNG_H
#define MEGA_RUNTIME_RNG_H

#include <cmath>
#include <cstdint>
#include <string>

namespace mega::rt {

/// One splitmix64 step applied to a value: a good 64-bit mixing function.
inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// FNV-1a over a string, for deriving per-name streams.
inline uint64_t hashString(const std::string &s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class Rng {
public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }

  /// Uniform integer in [0, n) (n > 0), without modulo bias.
  uint64_t below(uint64_t n) {
    uint64_t limit = ~uint64_t(0) - (~uint64_t(0) % n);
    uint64_t x;
    do
      x = next();
    while (x >= limit);
    return x % n;
  }

  /// Standard normal by Box-Muller; the second value of each pair is kept.
  double normal() {
    if (haveSpare_) {
      haveSpare_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300)
      u1 = 1e-300;
    double r = std::sqrt(-2.0 * std::log(u1));
    double t = 6.283185307179586476925286766559 * u2;
    spare_ = r * std::sin(t);
    haveSpare_ = true;
    return r * std::cos(t);
  }

  /// The full state as text ("<hex state>" or "<hex state>:<hex spare>"),
  /// and back; used by checkpoints.
  std::string save() const;
  /// Returns false when the text is not a state this class wrote.
  bool restore(const std::string &text);

private:
  uint64_t state_;
  bool haveSpare_ = false;
  double spare_ = 0.0;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_RNG_H

//===- GemmChoices.cpp - The --gemm-autotune-file text format -------------===//
//
//   # mega-run --gemm-autotune-file: cuBLASLt algorithms by GEMM
//   device NVIDIA H100 80GB HBM3
//   cublaslt 130100
//   gemm 1 0 3072 768 16384 ... (17 integers) algo 9a3f... (8 hex words)
//   us 96.4
//
// Lines starting with '#' and empty lines are skipped; `device` and
// `cublaslt` come once, before the first `gemm`.
//
//===----------------------------------------------------------------------===//
#include "mega/Runtime/GemmChoices.h"

#include "FileUtil.h"
#include "mega/Runtime/Backend.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace mega::rt {

namespace {

[[noreturn]] void bad(const std::string &path, int line,
                      const std::string &what) {
  throw Error(path + ":" + std::to_string(line) + ": " + what);
}

/// The rest of `ls` after one space, trimmed of trailing spaces.
std::string rest(std::istringstream &ls) {
  std::string s;
  std::getline(ls >> std::ws, s);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r'))
    s.pop_back();
  return s;
}

} // namespace

GemmChoices readGemmChoices(const std::string &path) {
  GemmChoices c;
  if (!fs::exists(path))
    return c;
  std::istringstream in(fs::readFile(path));
  std::string text;
  bool haveDevice = false, haveVersion = false;
  for (int line = 1; std::getline(in, text); ++line) {
    std::istringstream ls(text);
    std::string word;
    if (!(ls >> word) || word[0] == '#')
      continue;
    if (word == "device") {
      if (haveDevice)
        bad(path, line, "a second 'device' line");
      c.device = rest(ls);
      if (c.device.empty())
        bad(path, line, "'device' needs the GPU's name");
      haveDevice = true;
    } else if (word == "cublaslt") {
      if (haveVersion || !(ls >> c.cublasLt) || c.cublasLt <= 0 ||
          !rest(ls).empty())
        bad(path, line, "'cublaslt' needs one version number, once");
      haveVersion = true;
    } else if (word == "gemm") {
      if (!haveDevice || !haveVersion)
        bad(path, line, "'gemm' before the 'device' and 'cublaslt' lines");
      GemmKey key{};
      for (int64_t &k : key)
        if (!(ls >> k))
          bad(path, line, "'gemm' needs 17 integers");
      GemmChoice g;
      if (!(ls >> word) || word != "algo")
        bad(path, line, "'gemm' needs 17 integers, then 'algo'");
      for (uint64_t &w : g.algo) {
        std::string hex;
        if (!(ls >> hex) || hex.size() > 16 ||
            hex.find_first_not_of("0123456789abcdefABCDEF") !=
                std::string::npos)
          bad(path, line, "'algo' needs 8 hexadecimal words");
        w = std::strtoull(hex.c_str(), nullptr, 16);
      }
      if (!(ls >> word) || word != "us" || !(ls >> g.us) || !(g.us >= 0) ||
          !rest(ls).empty())
        bad(path, line, "'gemm' ends with 'us' and the time in microseconds");
      if (!c.byKey.emplace(key, g).second)
        bad(path, line, "a second choice for the same GEMM");
    } else {
      bad(path, line,
          "expected 'device', 'cublaslt' or 'gemm', not '" + word + "'");
    }
  }
  if (haveDevice != haveVersion)
    throw Error(path + ": " +
                (haveDevice ? "no 'cublaslt' line" : "no 'device' line"));
  return c;
}

void writeGemmChoices(const std::string &path, const GemmChoices &c) {
  std::string s = "# mega-run --gemm-autotune-file: cuBLASLt algorithms by "
                  "GEMM (the backend's key, the algorithm, its time)\n";
  s += "device " + c.device + "\n";
  s += "cublaslt " + std::to_string(c.cublasLt) + "\n";
  char buf[64];
  for (const auto &[key, g] : c.byKey) {
    s += "gemm";
    for (int64_t k : key) {
      s += ' ';
      s += std::to_string(k);
    }
    s += " algo";
    for (uint64_t w : g.algo) {
      std::snprintf(buf, sizeof buf, " %016" PRIx64, w);
      s += buf;
    }
    std::snprintf(buf, sizeof buf, " us %.3f\n", g.us);
    s += buf;
  }
  fs::writeFileAtomic(path, s);
}

} // namespace mega::rt

//===- TestExpect.h - Checks that print a line each and count failures ----===//
//
// For the small test programs that print "ok" or "FAIL" beside each check's
// description and end with a total (lanes_test, gemm_tuning_test):
// expect() checks one thing, fail() counts a failure found elsewhere, and
// finish() prints the total and gives main's exit code.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TEST_TESTEXPECT_H
#define MEGA_TEST_TESTEXPECT_H

#include <cstdio>
#include <string>

namespace megatest {

/// The failures counted so far in this program.
inline int &failures() {
  static int n = 0;
  return n;
}

/// Counts a failure; `what` is printed after "FAIL" when given.
inline void fail(const std::string &what = "") {
  if (!what.empty())
    std::printf("FAIL  %s\n", what.c_str());
  ++failures();
}

/// One check: "ok" or "FAIL" and `what`.
inline void expect(bool ok, const std::string &what) {
  if (ok)
    std::printf("ok    %s\n", what.c_str());
  else
    fail(what);
}

/// "all passed" (0) or "N failed" (1).
inline int finish() {
  if (failures()) {
    std::printf("%d failed\n", failures());
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}

} // namespace megatest

#endif // MEGA_TEST_TESTEXPECT_H

#!/usr/bin/env bash
# The whole test suite: set-up and build (scripts/setup.sh), then every test
# (lit for the compiler, the runtime and kernel tests, the PyTorch comparisons)
# through ctest. This is what .ci/run calls.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEGA_BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
cd "$build"
ctest --output-on-failure -j "${MEGA_TEST_JOBS:-2}" "$@"

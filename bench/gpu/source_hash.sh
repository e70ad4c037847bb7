#!/usr/bin/env bash
# One hash of the sources the runtime executables are built from (C++, CUDA
# and CMake files under the top level, cmake/, include/, lib/, tools/ and
# test/): bench/gpu/prebuild.sh records it, check.sh compares it.
cd "$(dirname "$0")/../.." || exit 1
find CMakeLists.txt cmake include lib tools test -type f \
  \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.inc' \
     -o -name 'CMakeLists.txt' -o -name '*.cmake' -o -name '*.in' \) 2>/dev/null \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16

//===- TransposeDims.h - A Transpose instruction's dims, simplified ------===//
//
// Both backends walk a Transpose (plan opcode 13, rank <= 6) the same way:
// the output dims with size-1 dims dropped and runs of dims that stay
// adjacent in the input merged, each with its input stride. Host code only
// (the CUDA backend copies the result into its kernel's parameters).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_TRANSPOSEDIMS_H
#define MEGA_RUNTIME_TRANSPOSEDIMS_H

#include "mega/Plan/Plan.h"

#include <cstdint>

namespace mega::rt {

/// Output dims `dim` and the input stride `ist` of each, outermost first.
struct TransposeDims {
  int rank = 0;
  int64_t dim[6];
  int64_t ist[6];
};

/// i = {rank, d_0..d_{rank-1}, p_0..p_{rank-1}} (plan.h): out dim j is in
/// dim p_j. The backend's check() has bounded rank by 6.
inline TransposeDims simplifyTranspose(const plan::Instr &in) {
  const int rank = int(in.i[0]);
  int64_t d[6], is[6];
  for (int k = 0; k < rank; ++k)
    d[k] = in.i[1 + k];
  int64_t s = 1;
  for (int k = rank - 1; k >= 0; --k) {
    is[k] = s;
    s *= d[k];
  }
  TransposeDims p;
  for (int j = 0; j < rank; ++j) {
    const int src = int(in.i[1 + rank + j]);
    if (d[src] == 1)
      continue;
    if (p.rank > 0 && p.ist[p.rank - 1] == is[src] * d[src]) {
      p.dim[p.rank - 1] *= d[src];
      p.ist[p.rank - 1] = is[src];
      continue;
    }
    p.dim[p.rank] = d[src];
    p.ist[p.rank] = is[src];
    ++p.rank;
  }
  return p;
}

} // namespace mega::rt

#endif // MEGA_RUNTIME_TRANSPOSEDIMS_H

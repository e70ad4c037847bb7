//===- Comm.h - Communicators: rank layout and the MPI implementation -----===//
//
// The Communicator interface lives in mega/Runtime/Backend.h. This header
// has what only the runtime needs: the rank layout and the MPI factory.
//
// Rank layout (Megatron's default order "tp-dp-pp", tensor rank fastest):
//   world rank = t + tp * (d + dp * p)
// so the tp ranks of one tensor group are neighbours (one node, fast links),
// and pipeline stages are farthest apart.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_COMM_H
#define MEGA_RUNTIME_COMM_H

#include "mega/Runtime/Backend.h"

#include <memory>
#include <vector>

namespace mega::rt {

/// This rank's coordinates (t, d, p) in a tp x dp x pp launch.
struct GroupLayout {
  GroupLayout(int rank, int tp, int dp, int pp);
  int tp, dp, pp;
  int t, d, p;
  int worldRank(int t_, int d_, int p_) const {
    return t_ + tp * (d_ + dp * p_);
  }
  /// World ranks of this rank's group of `kind`, in group-rank order.
  std::vector<int> members(plan::ParallelGroup kind) const;
  /// This rank's rank within its group of `kind`.
  int rankIn(plan::ParallelGroup kind) const;
  /// A number shared exactly by the members of one group of `kind`.
  int color(plan::ParallelGroup kind) const;
};

/// Throws Error on every rank of a group when its ranks were given different
/// plans (a hash of the serialized plan, gathered over the tensor, data and
/// pipeline groups in turn, which together reach every rank): each rank
/// checks only its own copy, and ranks that disagree on the plan would hang
/// or compute nonsense together. Nothing to do at world size 1.
void checkSamePlan(const plan::Plan &plan, Communicator &comm);

/// MPI_Init (once per process) and one MPI communicator per group. Throws
/// Error when MPI's rank/size disagree with the launcher's variables.
std::unique_ptr<Communicator> createMpiCommunicator(int rank, int worldSize,
                                                    const GroupLayout &layout);

} // namespace mega::rt

#endif // MEGA_RUNTIME_COMM_H

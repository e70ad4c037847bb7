//===- Devices.h - Choosing a backend and checking the launch -------------===//
#ifndef MEGA_RUNTIME_DEVICES_H
#define MEGA_RUNTIME_DEVICES_H

#include "mega/Plan/Plan.h"
#include "mega/Runtime/Backend.h"

#include <memory>
#include <string>

namespace mega::rt {

/// "cpu" or "cuda" (`cuda`: that backend's options). Throws Error when this
/// build or machine cannot run it.
std::unique_ptr<Backend> createBackend(const std::string &device, int threads,
                                       const CudaOptions &cuda = {});

/// The device a plan was compiled for: its "train" (else first) program's
/// target, "cpu" for an empty plan.
std::string defaultDevice(const plan::Plan &plan);

/// Where this process sits in the launch, as the launchers say it
/// (OMPI_COMM_WORLD_*, SLURM_PROCID/SLURM_NTASKS, RANK/WORLD_SIZE).
struct LaunchInfo {
  int64_t rank = 0;
  int64_t worldSize = 1;
  std::string source; ///< the variable the world size came from, or ""
  /// This process's rank on its node, from the same launcher
  /// (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, LOCAL_RANK); -1 when it
  /// does not say. A cuda run takes GPU localRank mod the visible count.
  int64_t localRank = -1;
};
/// Throws Error for a variable that is not a positive integer.
LaunchInfo launchInfo();

/// tp * pp * dp of the plan (each defaulting to 1).
int64_t planWorldSize(const plan::Plan &plan);
/// Refuses a world size that is not the plan's tp*pp*dp.
void checkWorldSize(const plan::Plan &plan, const LaunchInfo &launch);

} // namespace mega::rt

#endif // MEGA_RUNTIME_DEVICES_H

//===- Devices.cpp - Choosing a backend and checking the launch -----------===//
#include "Devices.h"

#include <cstdlib>

namespace mega::rt {

#ifndef MEGA_HAVE_CUDA
// Built without a CUDA toolkit: no build of this mega-run can use a GPU.
std::unique_ptr<Backend> createCudaBackend(int, const CudaOptions &) {
  throw Error("this mega-run was built without the CUDA backend; use "
              "--device cpu");
}
#endif

std::unique_ptr<Backend> createBackend(const std::string &device, int threads,
                                       const CudaOptions &cuda) {
  if (device == "cpu")
    return createCpuBackend(threads);
  if (device == "cuda") {
    // One rank, one GPU: device 0 of those CUDA_VISIBLE_DEVICES shows, or
    // with a local rank, that rank mod the visible count (cuda.localRank).
    try {
      return createCudaBackend(0, cuda);
    } catch (const Error &e) {
      throw Error(std::string("--device cuda: ") + e.what());
    }
  }
  throw Error("--device must be 'cpu' or 'cuda', not '" + device + "'");
}

std::string defaultDevice(const plan::Plan &plan) {
  if (const plan::Program *p = plan.findProgram("train"))
    return p->target;
  return plan.programs.empty() ? "cpu" : plan.programs.front().target;
}

namespace {

/// Reads a positive integer variable; false when it is not set.
bool envInt(const char *name, int64_t &out, bool allowZero) {
  const char *v = std::getenv(name);
  if (!v || !*v)
    return false;
  char *end = nullptr;
  long long n = std::strtoll(v, &end, 10);
  if (*end || n < (allowZero ? 0 : 1))
    throw Error(std::string("environment variable ") + name + "='" + v +
                "' is not a " + (allowZero ? "non-negative" : "positive") +
                " integer");
  out = n;
  return true;
}

} // namespace

LaunchInfo launchInfo() {
  LaunchInfo l;
  const char *vars[][3] = {
      {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
       "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"},
      {"WORLD_SIZE", "RANK", "LOCAL_RANK"}};
  for (const auto &v : vars)
    if (envInt(v[0], l.worldSize, false)) {
      l.source = v[0];
      envInt(v[1], l.rank, true);
      envInt(v[2], l.localRank, true);
      break;
    }
  return l;
}

int64_t planWorldSize(const plan::Plan &plan) {
  return plan.getInt("tp", 1) * plan.getInt("pp", 1) * plan.getInt("dp", 1);
}

void checkWorldSize(const plan::Plan &plan, const LaunchInfo &launch) {
  int64_t need = planWorldSize(plan);
  std::string shape = "tp*pp*dp = " + std::to_string(plan.getInt("tp", 1)) +
                      "*" + std::to_string(plan.getInt("pp", 1)) + "*" +
                      std::to_string(plan.getInt("dp", 1)) + " = " +
                      std::to_string(need);
  if (launch.worldSize != need)
    throw Error("world size is " + std::to_string(launch.worldSize) +
                (launch.source.empty() ? " (no launcher)"
                                       : " (from " + launch.source + ")") +
                " but the plan needs " + shape + " ranks");
  // Multi-rank launches are built by createCommunicator (MPI), which
  // refuses them in one line when this build has no MPI.
}

} // namespace mega::rt

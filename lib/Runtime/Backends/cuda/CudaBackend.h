//===- CudaBackend.h - What the CUDA backend offers besides Backend.h -----===//
//
// Private to the runtime and its tests (createCudaBackend itself is declared
// in mega/Runtime/Backend.h).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_BACKENDS_CUDA_CUDABACKEND_H
#define MEGA_RUNTIME_BACKENDS_CUDA_CUDABACKEND_H

#include "mega/Runtime/Backend.h"

#include <string>

namespace mega::rt::gpu {

/// Number of visible CUDA devices; 0 with `reason` set ("cudaGetDeviceCount:
/// <error string>") when there are none or the driver cannot be used.
int deviceCount(std::string &reason);

} // namespace mega::rt::gpu

#endif // MEGA_RUNTIME_BACKENDS_CUDA_CUDABACKEND_H

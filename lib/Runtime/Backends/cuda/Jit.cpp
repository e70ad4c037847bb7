//===- Jit.cpp - Generated Elementwise kernels: NVRTC and their cache -----===//
#include "Jit.h"

#include "mega/Runtime/Backend.h"

#include <nvrtc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mega::rt::gpu {

namespace {

/// The first `lines` lines of `log`, for an error message.
std::string head(const std::string &log, int lines) {
  size_t at = 0;
  for (int k = 0; k < lines && at != std::string::npos; ++k) {
    at = log.find('\n', at);
    if (at != std::string::npos)
      ++at;
  }
  std::string h = at == std::string::npos ? log : log.substr(0, at);
  while (!h.empty() && (h.back() == '\n' || h.back() == '\0'))
    h.pop_back();
  return h;
}

} // namespace

bool nvrtcCubin(const std::string &source, const std::string &arch,
                std::vector<char> &cubin, std::string &why) {
  nvrtcProgram prog = nullptr;
  nvrtcResult r = nvrtcCreateProgram(&prog, source.c_str(), "mega_ew.cu", 0,
                                     nullptr, nullptr);
  if (r != NVRTC_SUCCESS) {
    why = std::string("nvrtcCreateProgram: ") + nvrtcGetErrorString(r);
    return false;
  }
  struct Destroy {
    nvrtcProgram &p;
    ~Destroy() { nvrtcDestroyProgram(&p); }
  } destroy{prog};
  // A real architecture (sm_, not compute_): NVRTC emits a CUBIN. Default
  // float semantics (IEEE division and sqrt, no fast math), as the
  // interpreter was built with.
  const std::string archOpt = "-arch=" + arch;
  const char *opts[] = {archOpt.c_str(), "-std=c++17"};
  r = nvrtcCompileProgram(prog, 2, opts);
  if (r == NVRTC_ERROR_INVALID_OPTION) {
    why = "nvrtcCompileProgram: " + archOpt + " refused (" +
          nvrtcGetErrorString(r) + ")";
    return false;
  }
  if (r != NVRTC_SUCCESS) {
    std::string log;
    size_t size = 0;
    if (nvrtcGetProgramLogSize(prog, &size) == NVRTC_SUCCESS && size > 1) {
      log.resize(size);
      nvrtcGetProgramLog(prog, log.data());
    }
    throw Error(std::string("cuda: NVRTC could not compile a generated "
                            "Elementwise kernel (") +
                nvrtcGetErrorString(r) + "): " + head(log, 6));
  }
  size_t size = 0;
  r = nvrtcGetCUBINSize(prog, &size);
  if (r != NVRTC_SUCCESS || size == 0) {
    why = std::string("nvrtcGetCUBINSize: ") + nvrtcGetErrorString(r);
    return false;
  }
  cubin.resize(size);
  r = nvrtcGetCUBIN(prog, cubin.data());
  if (r != NVRTC_SUCCESS) {
    why = std::string("nvrtcGetCUBIN: ") + nvrtcGetErrorString(r);
    return false;
  }
  return true;
}

EwJit::EwJit(int device) {
  const char *env = std::getenv("MEGA_CUDA_NVRTC");
  if (env && std::strcmp(env, "0") == 0) {
    disable("MEGA_CUDA_NVRTC=0");
    return;
  }
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                             device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor,
                             device) != cudaSuccess) {
    cudaGetLastError();
    disable("cannot read the device's compute capability");
    return;
  }
  arch_ = "sm_" + std::to_string(major) + std::to_string(minor);
  int vmaj = 0, vmin = 0;
  if (nvrtcVersion(&vmaj, &vmin) != NVRTC_SUCCESS)
    disable("nvrtcVersion failed");
}

EwJit::~EwJit() {
  // The backend drained its stream before this runs; nothing may throw.
  for (cudaLibrary_t lib : libraries_)
    cudaLibraryUnload(lib);
}

void EwJit::disable(const std::string &why) {
  usable_ = false;
  std::fprintf(stderr,
               "cuda: Elementwise runs on the interpreter kernel (%s)\n",
               why.c_str());
}

const EwJit::Kernels *EwJit::compile(EwKernelSpec spec) {
  const std::string source = ewSource(spec);
  // Keyed by the whole source (hashed by the map, compared in full on a
  // hit): two instructions share a kernel exactly when their texts agree.
  auto it = bySource_.find(source);
  if (it != bySource_.end())
    return it->second.get();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<char> cubin;
  std::string why;
  if (!nvrtcCubin(source, arch_, cubin, why)) {
    disable(why);
    return nullptr;
  }
  cudaLibrary_t lib = nullptr;
  cudaError_t e = cudaLibraryLoadData(&lib, cubin.data(), nullptr, nullptr, 0,
                                      nullptr, nullptr, 0);
  if (e != cudaSuccess) {
    cudaGetLastError(); // not sticky; keep it from the next launch check
    disable(std::string("cudaLibraryLoadData: ") + cudaGetErrorString(e));
    return nullptr;
  }
  libraries_.push_back(lib);
  auto k = std::make_unique<Kernels>();
  k->spec = std::move(spec);
  e = cudaLibraryGetKernel(&k->vec, lib, kEwVectorKernel);
  if (e == cudaSuccess)
    e = cudaLibraryGetKernel(&k->scalar, lib, kEwScalarKernel);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(std::string("cuda: a generated Elementwise kernel is missing "
                            "from its own library (cudaLibraryGetKernel: ") +
                cudaGetErrorString(e) + ")");
  }
  compileMs_ += std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
  ++compiled_;
  return (bySource_[source] = std::move(k)).get();
}

const EwJit::Kernels *EwJit::get(const plan::Instr &instr,
                                 const std::vector<bool> &inBf16,
                                 const std::vector<bool> &outBf16) {
  if (!usable_)
    return nullptr;
  Seen &seen = byInstr_[&instr];
  if (seen.kernels && seen.i == instr.i && seen.bf16In == inBf16 &&
      seen.bf16Out == outBf16 &&
      seen.f.size() == instr.f.size() &&
      (instr.f.empty() || std::memcmp(seen.f.data(), instr.f.data(),
                                      instr.f.size() * sizeof(float)) == 0))
    return seen.kernels;
  seen.kernels = compile(ewSpecOf(instr, inBf16, outBf16));
  seen.i = instr.i;
  seen.f = instr.f;
  seen.bf16In = inBf16;
  seen.bf16Out = outBf16;
  return usable_ ? seen.kernels : nullptr;
}

void EwJit::report() {
  if (!compiled_)
    return;
  std::fprintf(stderr, "cuda: %d elementwise kernel%s compiled by NVRTC in "
                       "%.0f ms\n",
               compiled_, compiled_ == 1 ? "" : "s", compileMs_);
  compiled_ = 0;
  compileMs_ = 0;
}

} // namespace mega::rt::gpu

//===- cudnn_attention_test.cpp - cuDNN's attention, what a CPU can check -===//
//
// The parts of CudnnAttention.cpp that need no GPU, run wherever the CUDA
// backend builds:
//   1. libcudnn.so.9 opens through the frontend's dynamic loading and names
//      its version ("cuDNN 9.x.y (frontend a.b.c)");
//   2. runSdpa's refusals: operands cuDNN cannot take (f32, a head dim not a
//      multiple of 8, strides not multiples of 8, a misaligned pointer) go
//      back to mega's kernels, or, with cuDNN required, end in one Error
//      naming why; nothing reaches cuDNN;
//   3. without a GPU, an operand set cuDNN could take goes back to mega's
//      kernels (cudnnCreate fails), or ends in one Error when cuDNN is
//      required; never a crash.
// Exit 0: passed; 1: failed; 77: this build or machine has no cuDNN (ctest
// reports it as skipped).
//
//===----------------------------------------------------------------------===//
#include "Common.h"
#include "CudaBackend.h"
#include "CudnnAttention.h"

#include <cstdio>
#include <string>
#include <vector>

using namespace mega;
using namespace mega::rt::gpu;
using plan::DType;

namespace {

int failures = 0;

void expect(bool ok, const std::string &what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  failures += !ok;
}

/// The Attention of GPT-2 small's layer on `dt` operands at fake, aligned
/// addresses (nothing is read: every call here stops before the device).
struct Problem {
  explicit Problem(DType dt, int64_t hd = 64) {
    qkv.dtype = o.dtype = dt;
    qkv.shape = {16 * 1024 * 3 * 12 * hd};
    o.shape = {16, 1024, 12, hd};
    lse.dtype = DType::F32;
    lse.shape = {192, 1024};
    instr.op = plan::Op::Attention;
    instr.i = {192, 1024, hd, 1, 12};
    instr.f = {0.125f};
    p = SdpaProblem{16,
                    12,
                    1024,
                    hd,
                    true,
                    0.125f,
                    {1024 * 3 * 12 * hd, hd, 3 * 12 * hd},
                    {1024 * 12 * hd, hd, 12 * hd},
                    {1024 * 12 * hd, hd, 12 * hd},
                    {1024 * 3 * 12 * hd, hd, 3 * 12 * hd}};
  }
  /// The operands (built per call: a copied Problem's refs point at its own
  /// values); q starts `qShift` bytes late.
  Refs ins() const {
    return {
        {at(0x10000 + qShift), &qkv}, {at(0x10080), &qkv}, {at(0x10100), &qkv}};
  }
  Refs outs() const { return {{at(0x20000), &o}, {at(0x30000), &lse}}; }
  static void *at(uintptr_t a) { return reinterpret_cast<void *>(a); }
  plan::Value qkv, o, lse;
  plan::Instr instr;
  SdpaProblem p;
  uintptr_t qShift = 0;
};

/// runSdpa's outcome: "ran", "fallback" or the Error's text.
std::string outcome(const Ctx &ctx, const Problem &pr) {
  try {
    return runSdpa(ctx, pr.instr, pr.p, pr.ins(), pr.outs()) ? "ran"
                                                             : "fallback";
  } catch (const rt::Error &e) {
    return e.what();
  }
}

bool has(const std::string &s, const std::string &needle) {
  return s.find(needle) != std::string::npos;
}

} // namespace

int main() {
  if (!CudnnAttention::built()) {
    std::printf("SKIP: this build has no cuDNN frontend\n");
    return 77;
  }
  std::string why;
  std::unique_ptr<CudnnAttention> cudnn = CudnnAttention::load(why);
  if (!cudnn) {
    std::printf("SKIP: cuDNN cannot be loaded here: %s\n", why.c_str());
    return 77;
  }
  const std::string v = cudnn->version();
  std::printf("%s\n", v.c_str());
  expect(v.rfind("cuDNN 9.", 0) == 0 && has(v, "(frontend "),
         "the version names cuDNN 9 and the frontend");

  cudaStream_t stream = nullptr;
  Workspace ws(stream);
  Ctx ctx;
  ctx.ws = &ws;
  ctx.cudnn = cudnn.get();

  // Refusals, as a fallback and as an Error when cuDNN is required.
  struct Misfit {
    const char *what, *needle;
    Problem pr;
  };
  std::vector<Misfit> misfits = {
      {"f32 operands", "not bf16", Problem(DType::F32)},
      {"head dim 12", "head dim 12", Problem(DType::BF16, 12)},
      {"strides not multiples of 8", "strides", Problem(DType::BF16)},
      {"q 8 bytes off alignment", "16-byte aligned", Problem(DType::BF16)},
      {"f32 lse as bf16", "not bf16", Problem(DType::BF16)}};
  misfits[2].pr.p.qkv.sS += 1;
  misfits[3].pr.qShift = 8;
  misfits[4].pr.lse.dtype = DType::BF16;
  for (Misfit &m : misfits) {
    ctx.cudnnRequired = false;
    expect(outcome(ctx, m.pr) == "fallback",
           std::string(m.what) + ": mega's kernels");
    ctx.cudnnRequired = true;
    const std::string e = outcome(ctx, m.pr);
    expect(has(e, "Attention: --attention-backend fused: cuDNN cannot run "
                  "it:") &&
               has(e, m.needle),
           std::string(m.what) + " with cuDNN required: " + e);
  }

  // An operand set cuDNN takes: without a device, one Error.
  std::string reason;
  if (deviceCount(reason) <= 0) {
    Problem ok(DType::BF16);
    ctx.cudnnRequired = false;
    expect(outcome(ctx, ok) == "fallback", "no GPU: mega's kernels");
    ctx.cudnnRequired = true;
    const std::string e = outcome(ctx, ok);
    expect(has(e, "cuDNN cannot run it: cudnnCreate failed"),
           "no GPU, cuDNN required: one Error: " + e);
  } else {
    std::printf("(a GPU is here: cuda_twin_check runs cuDNN's attention)\n");
  }
  std::printf("cudnn_attention_test: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}

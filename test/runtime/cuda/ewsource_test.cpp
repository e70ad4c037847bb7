//===- ewsource_test.cpp - Generated Elementwise kernels, without a GPU ---===//
//
// The CUDA backend's Elementwise kernels are CUDA C++ written from the
// micro-op program (ElementwiseSource.h) and compiled by NVRTC (Jit.h).
// Neither needs a device, so this runs wherever the toolkit is: for the
// programs the compiler emits (bias add over a broadcast row, GELU with an
// f32 and a bf16 output, the GELU gradient, an in-place residual add, a
// scalar factor) and one that uses every micro-op and odd constants, it
// checks the text (straight-line, exact constants, both kernels, the vector
// loads where they belong) and compiles it for sm_90 (H100), requiring
// success. It also checks when the vector kernel may run, that a broken
// source is reported with NVRTC's log, and that equal programs give equal
// sources (the cache key). What the kernels compute is the GPU twin check's.
//
//===----------------------------------------------------------------------===//
#include "ElementwiseSource.h"
#include "Jit.h"

#include "mega/Runtime/Backend.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace mega;
using namespace mega::rt::gpu;
using plan::EwOp;

namespace {

int failures = 0;

void expect(bool ok, const std::string &what) {
  if (!ok) {
    std::printf("FAIL  %s\n", what.c_str());
    ++failures;
  }
}

bool has(const std::string &text, const std::string &part) {
  return text.find(part) != std::string::npos;
}

struct M {
  EwOp op;
  int dst, a, b;
};

plan::Instr program(int64_t n, const std::vector<int64_t> &periods, int nout,
                    const std::vector<M> &code, std::vector<float> f = {}) {
  plan::Instr in;
  in.op = plan::Op::Elementwise;
  in.i = {n, int64_t(periods.size()), nout};
  in.i.insert(in.i.end(), periods.begin(), periods.end());
  for (const M &m : code)
    in.i.insert(in.i.end(), {int64_t(m.op), m.dst, m.a, m.b});
  in.f = std::move(f);
  return in;
}

/// Generates, checks the common properties and compiles for sm_90.
std::string generate(const std::string &name, const plan::Instr &in,
                     const std::vector<bool> &bf16,
                     const std::vector<bool> &inBf16 = {}) {
  const EwKernelSpec spec = ewSpecOf(in, inBf16, bf16);
  const std::string src = ewSource(spec);
  expect(!has(src, "switch"), name + ": no switch in the generated code");
  expect(has(src, std::string("void __launch_bounds__(256) ") +
                      kEwVectorKernel + "("),
         name + ": defines the vector kernel");
  expect(has(src, std::string("void __launch_bounds__(256) ") +
                      kEwScalarKernel + "("),
         name + ": defines the scalar kernel");
  expect(has(src, "float4"), name + ": the vector kernel loads/stores 16 bytes");
  expect(has(src, spec.wideIndex ? "typedef long long I;"
                                 : "typedef unsigned I;"),
         name + ": index width");
  std::vector<char> cubin;
  std::string why;
  const auto t0 = std::chrono::steady_clock::now();
  bool ok = false;
  try {
    ok = nvrtcCubin(src, "sm_90", cubin, why);
  } catch (const std::exception &e) {
    why = e.what();
  }
  const double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count();
  expect(ok && !cubin.empty(), name + ": NVRTC compiles it for sm_90 (" +
                                   why + ")\n---\n" + src);
  // The CUBIN's symbol table names both kernels (extern "C": unmangled).
  const std::string bin(cubin.begin(), cubin.end());
  expect(has(bin, kEwVectorKernel) && has(bin, kEwScalarKernel),
         name + ": the CUBIN holds both kernels");
  std::printf("%-34s %5zu chars of CUDA C++, %6zu bytes of sm_90 CUBIN, "
              "%4.0f ms\n",
              name.c_str(), src.size(), cubin.size(), ms);
  return src;
}

std::string hexLiteral(float f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "(%af)", double(f));
  return buf;
}

} // namespace

int main() {
  const int64_t rows = 1024, cols = 768, n = rows * cols;

  // Bias add: x [rows, cols] + b [cols] (a broadcast row).
  {
    plan::Instr in = program(n, {n, cols}, 1,
                             {{EwOp::Load, 0, 0, 0},
                              {EwOp::Load, 1, 1, 0},
                              {EwOp::Add, 2, 0, 1},
                              {EwOp::Store, 2, 0, 0}});
    std::string s = generate("bias add (broadcast 768)", in, {false});
    expect(has(s, "*(const float4 *)(in1 + e % per1)"),
           "bias add: the row is read 16 bytes at a time at e % period");
    expect(has(s, "*(const float4 *)(in0 + e)"), "bias add: x read whole");
    expect(has(s, "__fadd_rn(r0_0, r1_0)") && has(s, "__fadd_rn(r0_3, r1_3)"),
           "bias add: a rounded add per lane");
    expect(has(s, "*(float4 *)(out0 + e) = make_float4(r2_0, r2_1, r2_2, "
                  "r2_3)"),
           "bias add: a 16-byte store");
    expect(has(s, "out0[e] = r2_0;"), "bias add: the scalar kernel's store");
    // The same program twice: the same text (the compile cache's key).
    expect(ewSource(ewSpecOf(in, {}, {false})) == s, "bias add: deterministic");
    // Another n with the same shape classes: the same kernel.
    plan::Instr other = program(n * 2, {n * 2, cols}, 1,
                                {{EwOp::Load, 0, 0, 0},
                                 {EwOp::Load, 1, 1, 0},
                                 {EwOp::Add, 2, 0, 1},
                                 {EwOp::Store, 2, 0, 0}});
    expect(ewSource(ewSpecOf(other, {}, {false})) == s,
           "bias add: n and the period are parameters, not source");

    // When the vector kernel may run.
    std::vector<float> buf(size_t(n) + 8);
    EwParams p{};
    p.n = n;
    const float *base = buf.data();
    while (reinterpret_cast<uintptr_t>(base) % 16 != 0)
      ++base;
    p.in[0] = base;
    p.in[1] = p.in[0];
    p.period[0] = n;
    p.period[1] = cols;
    p.out[0] = const_cast<float *>(p.in[0]);
    EwKernelSpec spec = ewSpecOf(in, {}, {false});
    expect(ewVectorizable(spec, p), "vectorizable: aligned, n % 4 == 0");
    p.n = n - 1;
    expect(!ewVectorizable(spec, p), "not vectorizable: n % 4 != 0");
    p.n = n;
    p.period[1] = 251;
    expect(!ewVectorizable(spec, p), "not vectorizable: period 251");
    p.period[1] = cols;
    p.in[1] = p.in[0] + 1;
    expect(!ewVectorizable(spec, p), "not vectorizable: input 4 bytes off");
    p.in[1] = p.in[0];
    p.out[0] = const_cast<float *>(p.in[0] + 2);
    expect(!ewVectorizable(spec, p), "not vectorizable: f32 output 8 bytes off");
    // An 8-byte aligned bf16 output is fine.
    EwKernelSpec bspec = ewSpecOf(in, {}, {true});
    expect(ewVectorizable(bspec, p), "vectorizable: bf16 output 8-byte aligned");
    p.out[0] = const_cast<float *>(p.in[0]) + 1;
    p.out[0] = static_cast<char *>(p.out[0]) + 2;
    expect(!ewVectorizable(bspec, p), "not vectorizable: bf16 output 2-byte off");
  }

  // GELU forward of the biased value, stored in f32 and in bf16.
  {
    plan::Instr in = program(n * 4, {n * 4, cols * 4}, 2,
                             {{EwOp::Load, 0, 0, 0},
                              {EwOp::Load, 1, 1, 0},
                              {EwOp::Add, 2, 0, 1},
                              {EwOp::Gelu, 3, 2, 0},
                              {EwOp::Store, 2, 0, 0},
                              {EwOp::Store, 3, 1, 0}});
    std::string s = generate("gelu, f32 + bf16 outputs", in, {false, true});
    expect(has(s, "r3_2 = mega_gelu(r2_2);"), "gelu: per lane");
    expect(has(s, "unsigned short *out1 = (unsigned short *)p.out[1];"),
           "gelu: output 1 is bf16");
    expect(has(s, "*(uint2 *)(out1 + e) = make_uint2(mega_bf16(r3_0) | "
                  "mega_bf16(r3_1) << 16, mega_bf16(r3_2) | mega_bf16(r3_3) "
                  "<< 16);"),
           "gelu: 4 bf16 in one 8-byte store, element e in the low half");
    expect(has(s, "out1[e] = (unsigned short)mega_bf16(r3_0);"),
           "gelu: the scalar kernel's bf16 store");
    expect(has(s, "0.7978845608028654f") && has(s, "0.044715f"),
           "gelu: the interpreter's constants");
  }

  // GELU gradient: dy * gelu'(x).
  {
    plan::Instr in = program(n * 4, {n * 4, n * 4}, 1,
                             {{EwOp::Load, 0, 0, 0},
                              {EwOp::Load, 1, 1, 0},
                              {EwOp::GeluGrad, 2, 0, 1},
                              {EwOp::Store, 2, 0, 0}});
    std::string s = generate("gelu gradient", in, {false});
    expect(has(s, "r2_1 = mega_gelu_grad(r0_1, r1_1);"), "gelu grad: per lane");
    expect(has(s, "e == __int_as_float(0x7f800000) ? 1.0f : e * s"),
           "gelu grad: e = +inf handled as the interpreter does");
    // As GPT's backward has it: dy a bf16 product, the result bf16.
    std::string h =
        generate("gelu gradient, bf16 dy and result", in, {true}, {false, true});
    expect(has(h, "const unsigned short *in1 = (const unsigned short *)p.in[1];"),
           "gelu grad: input 1 is bf16");
    expect(has(h, "{ const uint2 t = *(const uint2 *)(in1 + e); r1_0 = "
                  "__uint_as_float(t.x << 16); r1_1 = __uint_as_float(t.x & "
                  "0xffff0000u); r1_2 = __uint_as_float(t.y << 16); r1_3 = "
                  "__uint_as_float(t.y & 0xffff0000u); }"),
           "gelu grad: 4 bf16 in one 8-byte load, widened exactly");
    expect(has(h, "r1_0 = mega_f32(in1[e]);"),
           "gelu grad: the scalar kernel widens one bf16");
    expect(has(h, "*(const float4 *)(in0 + e)"), "gelu grad: x still f32");
    // A bf16 input needs 8-byte alignment for the vector kernel.
    std::vector<float> buf(size_t(n) * 4 + 8);
    float *base = buf.data();
    while (reinterpret_cast<uintptr_t>(base) % 16 != 0)
      ++base;
    EwParams p{};
    p.n = n * 4;
    p.in[0] = base;
    p.in[1] = base + 2; // 8 bytes: fine for bf16
    p.period[0] = p.period[1] = n * 4;
    p.out[0] = base;
    const EwKernelSpec hs = ewSpecOf(in, {false, true}, {true});
    expect(ewVectorizable(hs, p), "vectorizable: bf16 input 8-byte aligned");
    p.in[1] = reinterpret_cast<const float *>(
        reinterpret_cast<const char *>(base) + 2);
    expect(!ewVectorizable(hs, p), "not vectorizable: bf16 input 2 bytes off");
  }

  // Residual add in place: out 0 is input 0's bytes (program order kept:
  // both loads come before the store).
  {
    plan::Instr in = program(n, {n, n}, 1,
                             {{EwOp::Load, 0, 0, 0},
                              {EwOp::Load, 1, 1, 0},
                              {EwOp::Add, 0, 0, 1},
                              {EwOp::Store, 0, 0, 0}});
    std::string s = generate("residual add (in place)", in, {false});
    expect(s.find("(in1 + e)") < s.find("(out0 + e)") &&
               s.find("(in0 + e)") < s.find("(out0 + e)"),
           "residual: loads before the store, in program order");
    expect(!has(s, "__restrict__"), "residual: outputs may alias inputs");
  }

  // A scalar factor (loss scale, learning rate) and an odd period.
  {
    plan::Instr in = program(251 * 7, {251 * 7, 1, 251}, 1,
                             {{EwOp::Load, 0, 0, 0},
                              {EwOp::Load, 1, 1, 0},
                              {EwOp::Load, 2, 2, 0},
                              {EwOp::Mul, 3, 0, 1},
                              {EwOp::Sub, 3, 3, 2},
                              {EwOp::Store, 3, 0, 0}});
    std::string s = generate("scalar factor, period 251", in, {false});
    expect(has(s, "{ const float t = in1[0]; r1_0 = t; r1_1 = t; r1_2 = t; "
                  "r1_3 = t; }"),
           "scalar: one load, every lane");
    expect(has(s, "r2_0 = in2[e % per2];"), "scalar kernel: broadcast index");
  }

  // Every micro-op, with constants that must come out exact.
  {
    const float kInf = std::numeric_limits<float>::infinity();
    std::vector<float> consts = {0.75f,  1e-5f,  -0.0f, 3.4028235e38f,
                                 1e-45f, kInf, -kInf, std::nanf(""),
                                 0.1f,   -2.5f};
    std::vector<M> code = {{EwOp::Load, 0, 0, 0},   {EwOp::Load, 1, 1, 0},
                           {EwOp::Exp, 2, 1, 0},    {EwOp::Log, 3, 0, 0},
                           {EwOp::Tanh, 4, 1, 0},   {EwOp::Sqrt, 5, 0, 0},
                           {EwOp::Rsqrt, 6, 0, 0},  {EwOp::Neg, 7, 1, 0},
                           {EwOp::Square, 8, 1, 0}, {EwOp::Add, 9, 2, 3},
                           {EwOp::Sub, 10, 4, 5},   {EwOp::Mul, 11, 6, 7},
                           {EwOp::Div, 12, 8, 2},   {EwOp::Max, 13, 9, 10},
                           {EwOp::Min, 14, 11, 12}, {EwOp::Gelu, 15, 1, 0},
                           {EwOp::GeluGrad, 15, 15, 0}};
    for (int k = 0; k < int(consts.size()); ++k)
      code.push_back({EwOp::Const, 15, k, 0});
    code.push_back({EwOp::Add, 13, 13, 14});
    code.push_back({EwOp::Store, 13, 0, 0});
    code.push_back({EwOp::Store, 15, 1, 0});
    plan::Instr in = program(4096, {4096, 4096}, 2, code, consts);
    std::string s = generate("every micro-op", in, {false, true});
    const char *calls[] = {"expf(r1_0)",        "logf(r0_0)",
                           "tanhf(r1_0)",       "sqrtf(r0_0)",
                           "1.0f / sqrtf(r0_0)", "-r1_0",
                           "__fmul_rn(r1_0, r1_0)", "__fadd_rn(r2_0, r3_0)",
                           "__fsub_rn(r4_0, r5_0)", "__fmul_rn(r6_0, r7_0)",
                           "__fdiv_rn(r8_0, r2_0)", "mega_max(r9_0, r10_0)",
                           "mega_min(r11_0, r12_0)", "mega_gelu(r1_0)",
                           "mega_gelu_grad(r15_0, r0_0)"};
    for (const char *c : calls)
      expect(has(s, c), std::string("every micro-op: ") + c);
    for (float c : consts) {
      if (std::isfinite(c)) {
        const std::string lit = hexLiteral(c);
        expect(has(s, lit), "constant " + lit + " written exactly");
        float back = std::strtof(lit.substr(1, lit.size() - 3).c_str(),
                                 nullptr);
        expect(std::memcmp(&back, &c, 4) == 0,
               "constant " + lit + " reads back as the same float");
      }
    }
    expect(has(s, "__uint_as_float(0x7f800000u)") &&
               has(s, "__uint_as_float(0xff800000u)") &&
               has(s, "__uint_as_float(0x7fc00000u)"),
           "every micro-op: inf, -inf and NaN constants by their bits");
  }

  // Past 2^31 elements: 64-bit indices.
  {
    const int64_t big = (int64_t(1) << 31) + 768;
    plan::Instr in = program(big, {big, 768}, 1,
                             {{EwOp::Load, 0, 0, 0},
                              {EwOp::Load, 1, 1, 0},
                              {EwOp::Mul, 2, 0, 1},
                              {EwOp::Store, 2, 0, 0}});
    generate("2^31 + 768 elements", in, {false});
  }

  // A source that does not compile is an Error carrying NVRTC's log.
  {
    std::vector<char> cubin;
    std::string why;
    std::string msg;
    try {
      nvrtcCubin("extern \"C\" __global__ void k() { undeclared_thing(); }",
                 "sm_90", cubin, why);
    } catch (const rt::Error &e) {
      msg = e.what();
    }
    expect(has(msg, "NVRTC could not compile") && has(msg, "undeclared_thing"),
           "a compile error names NVRTC and quotes its log: '" + msg + "'");
  }

  if (failures) {
    std::printf("ewsource_test: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("ewsource_test: all passed\n");
  return 0;
}

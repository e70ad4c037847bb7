//===- kernel_bench.cpp - CPU kernel timings at cpu-small GPT sizes -------===//
//
// Built with the tests, not run by them:
//   kernel_bench [threads] [--filter SUBSTRING] [--reps N] [--cpu-time]
//                [--blas-threads N]
// --blas-threads N adds, for each MatMul, the time of plain cblas_sgemm
// calls (one per batch item) with OpenBLAS's own threading on N threads.
// Sizes: batch 8, seq 128, hidden 256, heads 4, vocab 8192 (rows = 1024).
// Prints the best and median time of each kernel and its rate: GFLOP/s for
// MatMul, GB/s (bytes read + written once) for the rest, next to memcpy
// of the same size as a bandwidth yardstick.
//
//===----------------------------------------------------------------------===//
#include "KernelTest.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>

#include <time.h>

#include <omp.h>

using namespace kt;
using mega::plan::EwOp;

// OpenBLAS, declared here so that the bench needs no cblas.h: only for the
// --blas-threads comparison (plain sgemm calls, OpenBLAS's own threading).
extern "C" {
char *openblas_get_corename(void);
void openblas_set_num_threads(int);
void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C,
                 int ldc);
}

namespace {

bool gCpuTime = false;

/// Wall time, or with --cpu-time the process's CPU time (robust on a busy
/// machine for single-threaded runs; with threads it includes spinning).
double now() {
  if (gCpuTime) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Bench {
  Harness &h;
  int reps;
  std::string filter;

  /// Times fn; `flops` > 0 reports GFLOP/s, else `bytes` as GB/s.
  void time(const std::string &name, double flops, double bytes,
            const std::function<void()> &fn) {
    if (!filter.empty() && name.find(filter) == std::string::npos)
      return;
    for (int k = 0; k < 3; ++k)
      fn();
    std::vector<double> t;
    double start = now();
    while (int(t.size()) < reps || (now() - start < 0.3 && t.size() < 2000)) {
      double t0 = now();
      fn();
      t.push_back(now() - t0);
    }
    std::sort(t.begin(), t.end());
    double best = t.front(), med = t[t.size() / 2];
    if (flops > 0)
      std::printf("%-56s %9.1f us %9.1f us  %7.1f GFLOP/s\n", name.c_str(), best * 1e6,
                  med * 1e6, flops / best * 1e-9);
    else
      std::printf("%-56s %9.1f us %9.1f us  %7.1f GB/s\n", name.c_str(), best * 1e6,
                  med * 1e6, bytes / best * 1e-9);
  }
};

} // namespace

int main(int argc, char **argv) {
  int threads = 0, reps = 20, blasThreads = 0;
  std::string filter;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    if (a == "--filter" && k + 1 < argc)
      filter = argv[++k];
    else if (a == "--blas-threads" && k + 1 < argc)
      blasThreads = std::atoi(argv[++k]);
    else if (a == "--cpu-time")
      gCpuTime = true;
    else if (a == "--reps" && k + 1 < argc)
      reps = std::atoi(argv[++k]);
    else
      threads = std::atoi(argv[k]);
  }
  if (threads <= 0)
    threads = omp_get_max_threads();
  Harness h(threads); // creating the backend may re-pick OpenBLAS's kernels
  Rng rng(1);
  std::printf("OpenBLAS core: %s\n", openblas_get_corename());
  Bench b{h, reps, filter};
  std::printf("mega CPU kernels, %d thread(s); cpu-small sizes (B 8, S 128, H 256, heads 4, "
              "V 8192)\n%-56s %12s %12s  %s\n",
              threads, "kernel", "best", "median", "rate");

  const int64_t B = 8, S = 128, H = 256, nh = 4, d = H / nh, V = 8192, R = B * S;
  const float f4 = 4.0f;

  // --- bandwidth yardstick --------------------------------------------------
  for (int64_t n : {R * H, R * 4 * H, int64_t(16) << 20}) {
    Tensor &x = h.f32({n}, rng.vec(n)), &y = h.f32({n});
    b.time("memcpy " + std::to_string(n * 4 >> 10) + " KiB (Copy)", 0, 2.0 * n * f4,
           [&] { h.launch(make(Op::Copy, {}), {&x}, {&y}); });
  }

  // --- MatMul ---------------------------------------------------------------
  auto mm = [&](const char *name, int64_t batch, int64_t M, int64_t N, int64_t K, bool ta,
                bool tb, float beta = 0.0f) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    Tensor &A = h.f32({batch * M * K}, rng.vec(batch * M * K)),
           &Bm = h.f32({batch * K * N}, rng.vec(batch * K * N)), &C = h.f32({batch * M * N});
    Instr in = make(Op::MatMul, {batch, M, N, K, ta, tb, lda, ldb, N, M * K, K * N, M * N},
                    {1.0f, beta});
    h.check(in, {&A, &Bm}, {&C});
    b.time(std::string("matmul ") + name, 2.0 * batch * M * N * K, 0,
           [&] { h.launch(in, {&A, &Bm}, {&C}); });
    if (blasThreads > 0) {
      openblas_set_num_threads(blasThreads);
      b.time(std::string("matmul ") + name + " [openblas x" + std::to_string(blasThreads) + "]",
             2.0 * batch * M * N * K, 0, [&] {
               for (int64_t i = 0; i < batch; ++i)
                 cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, int(M), int(N), int(K), 1.0f,
                             A.f() + i * M * K, int(lda), Bm.f() + i * K * N, int(ldb), beta,
                             C.f() + i * M * N, int(N));
             });
      openblas_set_num_threads(1);
    }
  };
  mm("qkv      [1024,256]x[256,768]", 1, R, 3 * H, H, false, false);
  mm("attnproj [1024,256]x[256,256]", 1, R, H, H, false, false);
  mm("fc       [1024,256]x[256,1024]", 1, R, 4 * H, H, false, false);
  mm("fcproj   [1024,1024]x[1024,256]", 1, R, H, 4 * H, false, false);
  mm("logits   [1024,256]x[8192,256]^T", 1, R, V, H, false, true);
  mm("dlogits@wte [1024,8192]x[8192,256]", 1, R, H, V, false, false);
  mm("dwte  [1024,8192]^Tx[1024,256] +=", 1, V, H, R, true, false, 1.0f);
  mm("dWqkv [1024,256]^Tx[1024,768]", 1, H, 3 * H, R, true, false);
  mm("dWfc  [1024,256]^Tx[1024,1024]", 1, H, 4 * H, R, true, false);
  mm("dx    [1024,768]x[256,768]^T", 1, R, H, 3 * H, false, true);
  mm("scores 32x[128,64]x[128,64]^T", B * nh, S, S, d, false, true);
  mm("att@v  32x[128,128]x[128,64]", B * nh, S, d, S, false, false);
  mm("dscores 32x[128,64]x[128,64]^T", B * nh, S, S, d, false, true);
  mm("dv     32x[128,128]^Tx[128,64]", B * nh, S, d, S, true, false);

  // --- Elementwise ----------------------------------------------------------
  auto op = [](EwOp e) { return int64_t(e); };
  {
    const int64_t n = R * H;
    Tensor &x = h.f32({R, H}, rng.vec(n)), &y = h.f32({R, H}, rng.vec(n)), &o = h.f32({R, H});
    Instr add = make(Op::Elementwise, {n, 2, 1, n, n, op(EwOp::Load), 0, 0, 0, op(EwOp::Load),
                                       1, 1, 0, op(EwOp::Add), 2, 0, 1, op(EwOp::Store), 2, 0, 0});
    h.check(add, {&x, &y}, {&o});
    b.time("elementwise residual add [1024,256]", 0, 3.0 * n * f4,
           [&] { h.launch(add, {&x, &y}, {&o}); });
  }
  {
    const int64_t n = R * 4 * H;
    Tensor &x = h.f32({R, 4 * H}, rng.vec(n)), &bias = h.f32({4 * H}, rng.vec(4 * H)),
           &o = h.f32({R, 4 * H}), &pre = h.f32({R, 4 * H}), &dy = h.f32({R, 4 * H}, rng.vec(n));
    Instr gelu = make(Op::Elementwise,
                      {n, 2, 2, n, 4 * H, op(EwOp::Load), 0, 0, 0, op(EwOp::Load), 1, 1, 0,
                       op(EwOp::Add), 0, 0, 1, op(EwOp::Store), 0, 1, 0, op(EwOp::Gelu), 2, 0, 0,
                       op(EwOp::Store), 2, 0, 0});
    h.check(gelu, {&x, &bias}, {&o, &pre});
    b.time("elementwise bias+gelu [1024,1024] (2 out)", 0, 3.0 * n * f4,
           [&] { h.launch(gelu, {&x, &bias}, {&o, &pre}); });
    Instr gg = make(Op::Elementwise, {n, 2, 1, n, n, op(EwOp::Load), 0, 0, 0, op(EwOp::Load), 1,
                                      1, 0, op(EwOp::GeluGrad), 2, 0, 1, op(EwOp::Store), 2, 0, 0});
    h.check(gg, {&pre, &dy}, {&o});
    b.time("elementwise gelu grad [1024,1024]", 0, 3.0 * n * f4,
           [&] { h.launch(gg, {&pre, &dy}, {&o}); });
    Tensor &bs = h.f32({4 * H});
    Instr rs = make(Op::ReduceSum, {R, 4 * H, 0});
    h.check(rs, {&o}, {&bs});
    b.time("reducesum bias grad [1024,1024]", 0, 1.0 * n * f4, [&] { h.launch(rs, {&o}, {&bs}); });
  }

  // --- LayerNorm ------------------------------------------------------------
  {
    const int64_t n = R * H;
    Tensor &x = h.f32({R, H}, rng.vec(n)), &w = h.f32({H}, rng.vec(H)), &bb = h.f32({H}, rng.vec(H)),
           &y = h.f32({R, H}), &m = h.f32({R}), &s = h.f32({R}), &dy = h.f32({R, H}, rng.vec(n)),
           &dx = h.f32({R, H}), &dw = h.f32({H}), &db = h.f32({H});
    Instr ln = make(Op::LayerNorm, {R, H}, {1e-5f});
    h.check(ln, {&x, &w, &bb}, {&y, &m, &s});
    b.time("layernorm [1024,256]", 0, 2.0 * n * f4, [&] { h.launch(ln, {&x, &w, &bb}, {&y, &m, &s}); });
    Instr lg = make(Op::LayerNormGrad, {R, H, 1});
    h.check(lg, {&dy, &x, &w, &m, &s}, {&dx, &dw, &db});
    b.time("layernorm grad [1024,256] (dx +=)", 0, 4.0 * n * f4,
           [&] { h.launch(lg, {&dy, &x, &w, &m, &s}, {&dx, &dw, &db}); });
  }

  // --- Softmax --------------------------------------------------------------
  {
    const int64_t rows = B * nh * S, n = rows * S;
    Tensor &x = h.f32({rows, S}, rng.vec(n, -3, 3)), &y = h.f32({rows, S}),
           &dy = h.f32({rows, S}, rng.vec(n)), &dx = h.f32({rows, S});
    Instr sm = make(Op::Softmax, {rows, S, 1, S}, {0.125f});
    h.check(sm, {&x}, {&y});
    b.time("softmax causal [4096,128]", 0, 2.0 * n * f4, [&] { h.launch(sm, {&x}, {&y}); });
    Instr smn = make(Op::Softmax, {rows, S, 0, 0}, {0.125f});
    b.time("softmax full [4096,128]", 0, 2.0 * n * f4, [&] { h.launch(smn, {&x}, {&y}); });
    Instr sg = make(Op::SoftmaxGrad, {rows, S}, {0.125f});
    h.check(sg, {&y, &dy}, {&dx});
    b.time("softmax grad [4096,128]", 0, 3.0 * n * f4, [&] { h.launch(sg, {&y, &dy}, {&dx}); });
  }

  // --- Loss -----------------------------------------------------------------
  {
    const int64_t n = R * V;
    std::vector<int32_t> t(R);
    for (auto &v : t)
      v = rng.index(V);
    Tensor &lg = h.f32({R, V}, rng.vec(n, -4, 4)), &tt = h.i32({R}, t), &loss = h.f32({}),
           &lse = h.f32({R}), &dl = h.f32({}, {1.0f}), &dlg = h.f32({R, V});
    Instr ce = make(Op::CrossEntropy, {R, V});
    h.check(ce, {&lg, &tt}, {&loss, &lse});
    b.time("cross entropy [1024,8192]", 0, 1.0 * n * f4, [&] { h.launch(ce, {&lg, &tt}, {&loss, &lse}); });
    Instr cg = make(Op::CrossEntropyGrad, {R, V});
    h.check(cg, {&lg, &tt, &lse, &dl}, {&dlg});
    b.time("cross entropy grad [1024,8192]", 0, 2.0 * n * f4,
           [&] { h.launch(cg, {&lg, &tt, &lse, &dl}, {&dlg}); });
  }

  // --- Embedding, Transpose -------------------------------------------------
  {
    std::vector<int32_t> ids(R);
    for (auto &v : ids)
      v = rng.index(V);
    Tensor &table = h.f32({V, H}, rng.vec(V * H)), &ti = h.i32({R}, ids), &out = h.f32({R, H}),
           &dtab = h.f32({V, H});
    Instr e = make(Op::Embedding, {R, V, H, 0});
    h.check(e, {&table, &ti}, {&out});
    b.time("embedding [1024 of 8192,256]", 0, 2.0 * R * H * f4, [&] { h.launch(e, {&table, &ti}, {&out}); });
    Instr eg = make(Op::EmbeddingGrad, {R, V, H, 0});
    h.check(eg, {&out, &ti}, {&dtab});
    b.time("embedding grad (zero 8 MiB + scatter)", 0, (V * H + 2.0 * R * H) * f4,
           [&] { h.launch(eg, {&out, &ti}, {&dtab}); });
    Instr eg1 = make(Op::EmbeddingGrad, {R, V, H, 1});
    b.time("embedding grad (accumulate)", 0, 3.0 * R * H * f4,
           [&] { h.launch(eg1, {&out, &ti}, {&dtab}); });
    Tensor &x = h.f32({B, S, nh, d}, rng.vec(R * H)), &y = h.f32({B, nh, S, d});
    Instr tr = make(Op::Transpose, {4, B, S, nh, d, 0, 2, 1, 3});
    h.check(tr, {&x}, {&y});
    b.time("transpose [8,128,4,64]->[8,4,128,64]", 0, 2.0 * R * H * f4, [&] { h.launch(tr, {&x}, {&y}); });
    Tensor &x2 = h.f32({R, H}, rng.vec(R * H)), &y2 = h.f32({H, R});
    Instr tr2 = make(Op::Transpose, {2, R, H, 1, 0});
    h.check(tr2, {&x2}, {&y2});
    b.time("transpose [1024,256]->[256,1024]", 0, 2.0 * R * H * f4, [&] { h.launch(tr2, {&x2}, {&y2}); });
  }

  // --- Optimizer: a cpu-small model has ~4.9M parameters (4 layers) ---------
  {
    const int64_t n = 4 << 20;
    Tensor &p = h.f32({n}, rng.vec(n)), &g = h.f32({n}, rng.vec(n, -1e-2, 1e-2)), &m = h.f32({n}),
           &v = h.f32({n}), &lr = h.f32({}, {1e-3f}), &st = h.f32({}, {1.0f}),
           &coef = h.f32({}, {1.0f}), &norm = h.f32({});
    Instr gn = make(Op::GradNorm, {}, {1.0f});
    h.check(gn, {&g}, {&norm, &coef});
    b.time("gradnorm 4M", 0, 1.0 * n * f4, [&] { h.launch(gn, {&g}, {&norm, &coef}); });
    Instr aw = make(Op::AdamW, {}, {0.9f, 0.999f, 1e-8f, 0.01f});
    h.check(aw, {&p, &g, &m, &v, &lr, &st, &coef}, {});
    b.time("adamw 4M (p,g,m,v: 7 streams)", 0, 7.0 * n * f4,
           [&] { h.launch(aw, {&p, &g, &m, &v, &lr, &st, &coef}, {}); });
  }
  // --- A mixed sequence, as in a training step: kernels of different sizes
  // back to back (catches per-launch costs such as thread-team churn).
  {
    const int64_t n = R * H;
    std::vector<int32_t> ids(R);
    for (auto &v : ids)
      v = rng.index(V);
    Tensor &table = h.f32({V, H}, rng.vec(V * H)), &ti = h.i32({R}, ids), &x = h.f32({R, H}),
           &r = h.f32({R, H}, rng.vec(n)), &w = h.f32({H}, rng.vec(H)), &bb = h.f32({H}, rng.vec(H)),
           &y = h.f32({R, H}), &m = h.f32({R}), &s = h.f32({R}), &W = h.f32({H, H}, rng.vec(H * H)),
           &z = h.f32({R, H}), &small = h.f32({H});
    Instr emb = make(Op::Embedding, {R, V, H, 0});
    Instr add = make(Op::Elementwise, {n, 2, 1, n, n, op(EwOp::Load), 0, 0, 0, op(EwOp::Load), 1,
                                       1, 0, op(EwOp::Add), 2, 0, 1, op(EwOp::Store), 2, 0, 0});
    Instr ln = make(Op::LayerNorm, {R, H}, {1e-5f});
    Instr mmI = make(Op::MatMul, {1, R, H, H, 0, 0, H, H, H, 0, 0, 0}, {1.0f, 0.0f});
    Instr badd = make(Op::Elementwise, {H, 2, 1, H, H, op(EwOp::Load), 0, 0, 0, op(EwOp::Load), 1,
                                        1, 0, op(EwOp::Add), 2, 0, 1, op(EwOp::Store), 2, 0, 0});
    Instr sm = make(Op::Softmax, {R, H, 0, 0}, {1.0f});
    b.time("sequence embed,add,layernorm,matmul,bias,softmax", 0,
           (2.0 * n + 3.0 * n + 2.0 * n + 2.0 * n + 2.0 * n) * f4, [&] {
             h.launch(emb, {&table, &ti}, {&x});
             h.launch(add, {&x, &r}, {&z});
             h.launch(ln, {&z, &w, &bb}, {&y, &m, &s});
             h.launch(mmI, {&y, &W}, {&x});
             h.launch(badd, {&w, &bb}, {&small});
             h.launch(sm, {&x}, {&z});
           });
  }
  return 0;
}

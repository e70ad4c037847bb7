//===- cuda_twin_norm_grad.cpp - Twins of the fused LayerNormGrad forms ---===//
//
// LayerNormGrad as mega-fuse-norm-grad emits it: dx accumulated into a
// residual gradient (accumulate), dw and db accumulated into the parameter
// gradients (accumulate_wb: the finished column sums added once), and dx's
// bf16 copy as a 4th output, in every combination, with f32 and bf16 dy,
// dx in place over an f32 dy, at shapes that take each CUDA path: the
// warp-per-row kernel (cols % 4 == 0 up to 1024: 96 two float4s a lane,
// 516 the last lane's sixth one empty, 768 GPT-2's six, 1024 eight) and
// the block-per-row kernels (17, 251, 1028 columns; a bf16 copy that is
// not 8-byte aligned). Rows not a multiple of 32 leave the warp kernel's
// last block short. GPT-2 small's [16384, 768] runs the forms its plan
// uses, also twice for determinism. The f32 results (dx, dw, db) are
// compared at rel 1e-5; the bf16 copy in a second comparison at rel 1e-2.
// The copy's column sums (dsum, a 5th output: fresh or accumulating) run
// with the copy at every shape; as sums of bf16 values that may round the
// other way on the two backends they are compared with the copy (rel
// 1e-2). To hold dsum to rel 1e-5 too, "exact" cases zero w: then dx is the
// residual gradient r exactly (or 0), both backends store the same copy,
// and only the summation's double rounding may differ. Those run at every
// shape class, GPT-2's [16384, 768] (twice for determinism) and 70000 rows
// (ReduceSum's chunk 96 rows: three 32-row blocks per CUDA block).
// Then, on the CUDA backend alone, the fused kernel against the unfused
// sequence it replaces (LayerNormGrad, the Elementwise adds, the Cast, the
// ReduceSum of the copy): the same bits, as megac --fuse-norm-grad=false
// promises.
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

namespace twincheck {

namespace {

struct F {
  int64_t rows, cols;
  bool dyBf16, acc, accWb, copy;
  bool inPlace = false;  ///< dx is dy's bytes (f32 dy only)
  bool copyLate = false; ///< the copy starts one element late (2 bytes)
  int dsum = 0;          ///< the copy's column sums: 1 fresh, 2 accumulating
  bool zeroW = false;    ///< w = 0: dx is r (or 0) exactly on both backends
  bool xBf16 = false;    ///< x in bf16 (the residual stream stored in bf16)
  bool dxBf16 = false;   ///< dx in bf16 (its own copy: `copy` false)
};

/// The case of `f`; `copyOnly`: compare the bf16 copy alone (else every
/// f32 output, the copy still written).
Case fusedCase(const F &f, Rng &rng, bool copyOnly) {
  const int64_t rows = f.rows, cols = f.cols, n = rows * cols;
  std::vector<int64_t> i = {rows, cols, f.acc};
  if (f.accWb || f.dsum)
    i.push_back(f.accWb);
  if (f.dsum)
    i.push_back(f.dsum == 2);
  Case c =
      make("LayerNormGrad fused " +
               dims({{"rows", rows},
                     {"cols", cols},
                     {"acc", f.acc},
                     {"acc_wb", f.accWb}}) +
               (f.dyBf16 ? " bf16 dy" : "") + (f.inPlace ? " dx=dy" : "") +
               (f.copy ? (f.copyLate ? " bf16 copy+1" : " bf16 copy") : "") +
               (f.dsum == 1   ? " dsum"
                : f.dsum == 2 ? " dsum acc"
                              : "") +
               (f.zeroW ? " w=0" : "") + (f.xBf16 ? " bf16 x" : "") +
               (f.dxBf16 ? " bf16 dx" : "") + (copyOnly ? " [copy]" : ""),
           Op::LayerNormGrad, i);
  // mean/rstd consistent with x, as the forward leaves them.
  std::vector<float> x = rng.vec(n, -2, 2), mean, rstd;
  if (f.xBf16) // the values a bf16 x holds: the statistics are of those
    x = roundedToBf16(x);
  rowStats(x, rows, cols, mean, rstd);
  // The residual gradient (or dy itself in place) dx starts from.
  int dy, dx;
  if (f.inPlace) {
    dy = c.inout({rows, cols}, rng.vec(n));
    dx = c.same(dy);
  } else {
    dy = f.dyBf16 ? c.bf16({rows, cols}, rng.vec(n))
                  : c.f32({rows, cols}, rng.vec(n));
    if (f.dxBf16) { // the residual gradient in bf16 (values it holds)
      dx = f.acc ? c.bf16({rows, cols}, rng.vec(n))
                 : c.out({rows, cols}, DType::BF16);
      if (f.acc)
        c.compare.push_back(dx);
    } else {
      dx = f.acc ? c.inout({rows, cols}, rng.vec(n)) : c.out({rows, cols});
    }
  }
  c.ins = {dy, f.xBf16 ? c.bf16({rows, cols}, x) : c.f32({rows, cols}, x),
           c.f32({cols}, f.zeroW ? std::vector<float>(size_t(cols), 0.0f)
                                 : rng.vec(cols, 0.5, 1.5)),
           c.f32({rows}, mean), c.f32({rows}, rstd)};
  // dw, db: gradients that already hold a sum (accumulate_wb), else
  // poisoned outputs.
  const int dw = f.accWb ? c.inout({cols}, rng.vec(cols)) : c.out({cols});
  const int db = f.accWb ? c.inout({cols}, rng.vec(cols)) : c.out({cols});
  c.outs = {dx, dw, db};
  // The bf16 value the column sums read: the copy, or a bf16 dx itself.
  int summed = f.dxBf16 ? dx : -1;
  if (f.copy) {
    const int64_t late = f.copyLate ? 1 : 0;
    summed = c.out({n + late}, DType::BF16);
    const int copy = c.view(summed, {rows, cols});
    c.ts[size_t(copy)].v.offset = 2 * late;
    c.outs.push_back(copy);
  }
  if (summed >= 0) {
    // dsum goes with the value it sums, unless that is exact (w = 0).
    const int ds = !f.dsum       ? -1
                   : f.dsum == 2 ? c.inout({cols}, rng.vec(cols))
                                 : c.out({cols});
    if (f.dsum)
      c.outs.push_back(ds);
    // Compared: the bf16 value alone, or every other output.
    std::vector<int> keep;
    for (int t : c.compare)
      if ((t == summed || (t == ds && !f.zeroW)) == copyOnly)
        keep.push_back(t);
    c.compare = keep;
  }
  if (copyOnly)
    c.tol = 1e-2; // one bf16 rounding of values that may differ in the ulp
  return c;
}

void run(const F &f, Rng &rng, bool determinism = false) {
  Case c = fusedCase(f, rng, false);
  twin(c);
  if (determinism)
    deterministic(c);
  if (f.copy || f.dxBf16)
    twin(fusedCase(f, rng, true));
}

/// The fused forms on the CUDA backend alone against the sequence they
/// replace, run on the same backend: the plain LayerNormGrad, then the
/// Elementwise residual add with its bf16 copy (acc) or a Cast of dx, and
/// the two in-place gradient adds. Every result must have the same bits, so
/// a fused add that rounds otherwise (dw added in double, an add contracted
/// into an FMA) shows where the CPU twin's tolerance would hide it.
void sameBitsAsUnfused(int64_t rows, int64_t cols, bool dyBf16, bool acc,
                       Rng &rng, bool dxBf16 = false) {
  const int64_t n = rows * cols;
  if (gQuick && n > (int64_t(1) << 18))
    return;
  const std::vector<float> dy = rng.vec(n), x = rng.vec(n, -2, 2),
                           w = rng.vec(cols, 0.5, 1.5), gw0 = rng.vec(cols),
                           gb0 = rng.vec(cols), s0 = rng.vec(cols);
  // r: each column also holds +2^40 and -2^40 in two rows (a pseudo-random
  // pair): they cancel in the copy's column sum, but the small values
  // summed between them are rounded to 2^-12 on the way, so a summation
  // order other than ReduceSum's shows in dsum's f32 bits.
  std::vector<float> r0 = rng.vec(n);
  if (rows > 1)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t a = (j * 7919 + 13) % rows;
      const int64_t b = (a + 1 + (j * 104729 + 5) % (rows - 1)) % rows;
      r0[size_t(a * cols + j)] = 1099511627776.0f; // 2^40
      r0[size_t(b * cols + j)] = -1099511627776.0f;
    }
  std::vector<float> mean(static_cast<size_t>(rows), 0.0f);
  std::vector<float> rstd(static_cast<size_t>(rows), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    mean[size_t(r)] = 0.1f * float(r % 7) - 0.3f;
    rstd[size_t(r)] = 0.8f + 0.05f * float(r % 11);
  }
  const std::string label =
      "LayerNormGrad fused = unfused on cuda " +
      dims({{"rows", rows}, {"cols", cols}, {"acc", acc}}) +
      (dyBf16 ? " bf16 dy" : "") + (dxBf16 ? " bf16 dx" : "");
  auto inputs = [&](Case &c) {
    c.ins = {dyBf16 ? c.bf16({rows, cols}, dy) : c.f32({rows, cols}, dy),
             c.f32({rows, cols}, x), c.f32({cols}, w), c.f32({rows}, mean),
             c.f32({rows}, rstd)};
  };
  try {
    Case p = make(label, Op::LayerNormGrad, {rows, cols, 0});
    inputs(p);
    p.outs = {p.out({rows, cols}), p.out({cols}), p.out({cols})};
    const Result plain = runOn(*gCuda, p);
    // dx's final value and its bf16 copy: r + dx (Elementwise) or a Cast.
    Result last;
    if (dxBf16) {
      // dx in bf16: r + dx rounded (Elementwise, r bf16, one bf16 output),
      // or dx's Cast; the bf16 value is also the "copy" the sums read.
      if (acc) {
        Case a = make(label, Op::Elementwise, {n, 2, 1, n, n, 0, 0, 0, 0, 0, 1,
                                               1, 0, 3, 0, 0, 1, 1, 0, 0, 0});
        a.ins = {a.bf16({rows, cols}, r0),
                 a.add(DType::F32, {rows, cols}, plain[0])};
        a.outs = {a.out({rows, cols}, DType::BF16)};
        const std::vector<uint32_t> sum = runOn(*gCuda, a)[0];
        last = {sum, sum};
      } else {
        Case k = make(label, Op::Cast, {n});
        k.ins = {k.add(DType::F32, {rows, cols}, plain[0])};
        k.outs = {k.out({rows, cols}, DType::BF16)};
        const std::vector<uint32_t> cast = runOn(*gCuda, k)[0];
        last = {cast, cast};
      }
    } else if (acc) {
      Case a =
          make(label, Op::Elementwise, {n, 2, 2, n, n, 0, 0, 0, 0, 0, 1, 1, 0,
                                        3, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0});
      a.ins = {a.f32({rows, cols}, r0),
               a.add(DType::F32, {rows, cols}, plain[0])};
      a.outs = {a.out({rows, cols}), a.out({rows, cols}, DType::BF16)};
      last = runOn(*gCuda, a);
    } else {
      Case k = make(label, Op::Cast, {n});
      k.ins = {k.add(DType::F32, {rows, cols}, plain[0])};
      k.outs = {k.out({rows, cols}, DType::BF16)};
      last = {plain[0], runOn(*gCuda, k)[0]};
    }
    // g = g + d in place (mega.dests), as megac emits it.
    auto gradAdd = [&](const std::vector<float> &g0,
                       const std::vector<uint32_t> &d) {
      Case g = make(label, Op::Elementwise,
                    {cols, 2, 1, cols, cols, 0, 0, 0, 0, 0, 1,
                     1,    0, 3, 0,    0,    1, 1, 0, 0, 0});
      const int sum = g.inout({cols}, g0);
      g.ins = {sum, g.add(DType::F32, {cols}, d)};
      g.outs = {g.same(sum)};
      return runOn(*gCuda, g)[0];
    };
    const std::vector<uint32_t> gw = gradAdd(gw0, plain[1]);
    const std::vector<uint32_t> gb = gradAdd(gb0, plain[2]);
    // The bias gradient summed from the copy: ReduceSum into s0 (acc), or
    // fresh.
    Case rs = make(label, Op::ReduceSum, {rows, cols, acc});
    std::vector<float> copy(last[1].size()); // read back widened
    for (size_t k = 0; k < copy.size(); ++k)
      copy[k] = floatOf(last[1][k]);
    rs.ins = {rs.bf16({rows, cols}, copy)}; // bf16 values: stored exactly
    rs.outs = {acc ? rs.inout({cols}, s0) : rs.out({cols})};
    const std::vector<uint32_t> sum = runOn(*gCuda, rs)[0];
    // The fused kernel with 4 outputs, then with dsum as a 5th (its
    // accumulate = acc).
    std::string differ;
    for (int withSum : {0, 1}) {
      std::vector<int64_t> fi = {rows, cols, acc, 1};
      if (withSum)
        fi.push_back(acc);
      Case f = make(label, Op::LayerNormGrad, fi);
      inputs(f);
      if (dxBf16) {
        const int d =
            acc ? f.bf16({rows, cols}, r0) : f.out({rows, cols}, DType::BF16);
        if (acc)
          f.compare.push_back(d);
        f.outs = {d, f.inout({cols}, gw0), f.inout({cols}, gb0)};
      } else {
        f.outs = {acc ? f.inout({rows, cols}, r0) : f.out({rows, cols}),
                  f.inout({cols}, gw0), f.inout({cols}, gb0),
                  f.out({rows, cols}, DType::BF16)};
      }
      if (withSum)
        f.outs.push_back(acc ? f.inout({cols}, s0) : f.out({cols}));
      const Result fused = runOn(*gCuda, f);
      const char *f32Names[] = {"dx", "dw", "db", "dx_bf16", "dsum"};
      const char *bf16Names[] = {"dx", "dw", "db", "dsum"};
      const char *const *names = dxBf16 ? bf16Names : f32Names;
      const std::vector<uint32_t> *f32Want[] = {&last[0], &gw, &gb, &last[1],
                                                &sum};
      const std::vector<uint32_t> *bf16Want[] = {&last[0], &gw, &gb, &sum};
      const std::vector<uint32_t> *const *want = dxBf16 ? bf16Want : f32Want;
      for (size_t t = 0; t < fused.size(); ++t)
        if (fused[t] != *want[t])
          differ += std::string(differ.empty() ? "" : ", ") + names[t] +
                    (withSum ? " (with dsum)" : "");
    }
    report(differ.empty(), label,
           differ.empty() ? "bit-identical" : "differ: " + differ);
  } catch (const std::exception &e) {
    report(false, label, std::string("threw: ") + e.what());
  }
}

} // namespace

void normGradFused(Rng &rng) {
  const int64_t shapes[][2] = {{7, 17},   {33, 251}, {17, 96}, {65, 768},
                               {9, 1024}, {3, 516},  {5, 1028}};
  for (const auto &s : shapes)
    for (int dyBf16 : {0, 1})
      for (int acc : {0, 1})
        for (int accWb : {0, 1})
          for (int copy : {0, 1}) {
            run({s[0], s[1], bool(dyBf16), bool(acc), bool(accWb), bool(copy)},
                rng);
            if (!dyBf16) {
              F f{s[0], s[1], false, bool(acc), bool(accWb), bool(copy)};
              f.inPlace = true;
              run(f, rng);
            }
          }
  // A copy 2 bytes into its buffer: not 8-byte aligned, so cols = 768 runs
  // the block kernels; 17 columns do anyway.
  for (int64_t cols : {768, 17}) {
    F f{65, cols, true, true, true, true};
    f.copyLate = true;
    run(f, rng);
  }
  // GPT-2 small: ln_1/ln_2 in the bf16 plan (bf16 dy, dx into the residual
  // gradient with its bf16 copy, dw/db into the gradients), ln_f (a fresh
  // dx and its copy), and the fp32 plan's (f32 dy, no copy).
  run({16384, 768, true, true, true, true}, rng, true);
  run({16384, 768, true, false, true, true}, rng);
  run({16384, 768, false, true, true, false}, rng, true);
  // The copy's column sums, fresh and accumulating, with every other form,
  // at every shape (compared with the copy), and the exact cases (w = 0:
  // dx is r, compared at rel 1e-5), also with the copy 2 bytes late (the
  // block kernels and ReduceSum's element form).
  for (const auto &s : shapes)
    for (int dyBf16 : {0, 1})
      for (int acc : {0, 1})
        for (int dsum : {1, 2}) {
          F f{s[0], s[1], bool(dyBf16), bool(acc), bool(dsum == 2), true};
          f.dsum = dsum;
          run(f, rng);
          if (acc) {
            f.zeroW = true;
            run(f, rng);
          }
        }
  for (int64_t cols : {768, 17}) {
    F f{65, cols, true, true, true, true};
    f.copyLate = true;
    f.dsum = 2;
    f.zeroW = true;
    run(f, rng);
  }
  // GPT-2 small's bf16 plan with the bias gradients summed by the norms
  // (into the c_proj bias gradients: dsum accumulates): ln_1/ln_2 (dx into
  // the residual gradient) and ln_f (a fresh dx).
  // 70000 rows: ReduceSum's chunks of 96 rows, the last one 16 rows.
  for (bool zeroW : {false, true}) {
    F f{16384, 768, true, true, true, true};
    f.dsum = 2;
    f.zeroW = zeroW;
    run(f, rng, true);
    F g{16384, 768, true, false, true, true};
    g.dsum = 2;
    g.zeroW = zeroW;
    run(g, rng);
  }
  {
    F f{70000, 64, true, true, false, true};
    f.dsum = 1;
    f.zeroW = true;
    run(f, rng, true);
  }
  // x in bf16 (a --bf16-residual plan's norms: widened on load) with the
  // forms its plan uses, at every shape class, and GPT-2 small's ln_1/ln_2
  // and ln_f (with the bias-gradient sums), the first twice.
  for (const auto &s : shapes)
    for (int acc : {0, 1}) {
      F f{s[0], s[1], true, bool(acc), true, true};
      f.xBf16 = true;
      run(f, rng);
    }
  for (int acc : {1, 0}) {
    F f{16384, 768, true, bool(acc), true, true};
    f.dsum = 2;
    f.xBf16 = true;
    run(f, rng, acc == 1);
  }
  // The CUDA kernel against the CUDA sequence it replaces, bit for bit: the
  // warp kernel (768; 65 rows: two of ReduceSum's chunks, the last short),
  // the block kernels (251), GPT-2's shape, 70000 rows (ReduceSum's chunk
  // 96 rows, three 32-row blocks a CUDA block).
  const int64_t exact[][2] = {{65, 768}, {33, 251}, {16384, 768}, {70000, 64}};
  for (const auto &s : exact)
    for (int dyBf16 : {0, 1})
      for (int acc : {0, 1})
        sameBitsAsUnfused(s[0], s[1], bool(dyBf16), bool(acc), rng);
  // dx in bf16 (megac --bf16-residual-grad): every form at every shape
  // class, GPT-2 small's ln_1/ln_2 (dx added into the bf16 residual
  // gradient, its columns summed into the c_proj bias gradient) twice and
  // ln_f, the exact dsum cases (w = 0), and the kernel against the CUDA
  // sequence it replaces (the plain norm, the bf16 Elementwise add or Cast,
  // the gradient adds, the ReduceSum of the bf16 result), bit for bit.
  for (const auto &s : shapes)
    for (int acc : {0, 1})
      for (int dsum : {0, 1, 2}) {
        F f{s[0], s[1], true, bool(acc), dsum != 0, false};
        f.dxBf16 = true;
        f.xBf16 = true;
        f.dsum = dsum;
        run(f, rng);
        if (acc && dsum) {
          f.zeroW = true;
          run(f, rng);
        }
      }
  for (int acc : {1, 0}) {
    F f{16384, 768, true, bool(acc), true, false};
    f.dxBf16 = true;
    f.xBf16 = true;
    f.dsum = 2;
    run(f, rng, acc == 1);
  }
  for (const auto &s : exact)
    for (int acc : {0, 1})
      sameBitsAsUnfused(s[0], s[1], true, bool(acc), rng, true);
}

} // namespace twincheck

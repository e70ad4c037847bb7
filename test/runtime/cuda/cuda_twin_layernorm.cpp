//===- cuda_twin_layernorm.cpp - Twins of LayerNorm and LayerNormGrad -----===//
//
// LayerNorm and LayerNormGrad at every shape class of their CUDA kernels
// (the warp-per-row forms for cols % 4 == 0 up to 1024, the block-per-row
// forms otherwise or off alignment), in place, f32 and bf16 y, f32 and
// bf16 dy, and x in bf16 (the residual stream of a `megac --bf16-residual`
// plan, widened on load by both kernels). f32 outputs at rel 1e-5, a bf16
// y at rel 1e-2. The fused LayerNormGrad forms are cuda_twin_norm_grad.cpp.
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

#include <cmath>

namespace twincheck {

void layerNorm(Rng &rng) {
  // The warp-per-row kernels take cols % 4 == 0 up to 1024 (96 and 256: two
  // float4s a lane; 516: 129 float4s, the last lane's sixth one empty; 768:
  // GPT-2, six; 1024: eight); 17, 251, 3000 and 1028 run the block-per-row
  // kernels. Rows not a multiple of 32 leave LayerNormGrad's last block
  // with idle warps.
  const int64_t shapes[][2] = {{7, 17},     {33, 251}, {17, 96},
                               {1024, 256}, {5, 3000}, {4096, 768},
                               {9, 1024},   {3, 516},  {5, 1028}};
  for (const auto &s : shapes) {
    const int64_t rows = s[0], cols = s[1], n = rows * cols;
    for (int inPlace : {0, 1}) {
      Case c = make("LayerNorm " + dims({{"rows", rows}, {"cols", cols}}) +
                        (inPlace ? " in place" : ""),
                    Op::LayerNorm, {rows, cols}, {1e-5f});
      // An offset mean (cancellation in E[x^2] - E[x]^2).
      int x = inPlace ? c.inout({rows, cols}, rng.vec(n, 2.0, 4.0))
                      : c.f32({rows, cols}, rng.vec(n, 2.0, 4.0));
      c.ins = {x, c.f32({cols}, rng.vec(cols, 0.5, 1.5)),
               c.f32({cols}, rng.vec(cols))};
      c.outs = {inPlace ? c.same(x) : c.out({rows, cols}), c.out({rows}),
                c.out({rows})};
      twin(c);
    }
    for (int acc : {0, 1})
      for (int inPlace : {0, 1}) {
        Case c = make("LayerNormGrad " +
                          dims({{"rows", rows}, {"cols", cols}, {"acc", acc}}) +
                          (inPlace ? " in place" : ""),
                      Op::LayerNormGrad, {rows, cols, acc});
        // mean/rstd consistent with x, as the forward leaves them.
        std::vector<float> x = rng.vec(n, -2, 2), mean, rstd;
        rowStats(x, rows, cols, mean, rstd);
        int dy = (inPlace || acc) ? c.inout({rows, cols}, rng.vec(n))
                                  : c.f32({rows, cols}, rng.vec(n));
        c.ins = {dy, c.f32({rows, cols}, x), c.f32({cols}, rng.vec(cols)),
                 c.f32({rows}, mean), c.f32({rows}, rstd)};
        int dx = inPlace ? c.same(dy)
                 : acc   ? c.inout({rows, cols}, rng.vec(n))
                         : c.out({rows, cols});
        c.outs = {dx, c.out({cols}), c.out({cols})};
        twin(c);
        if ((rows == 1024 || rows == 4096) && !acc && !inPlace)
          deterministic(c);
        // dy in bf16 (a bf16 product's gradient, widened on load; never
        // in place): the same values, so the f32 tolerance holds. Then x in
        // bf16 too (the residual stream stored in bf16, widened on load):
        // x's values rounded, mean and rstd of the rounded x.
        for (bool xBf16 : {false, true}) {
          if (inPlace)
            break;
          Case h = make(
              std::string("LayerNormGrad bf16 dy ") + (xBf16 ? "bf16 x " : "") +
                  dims({{"rows", rows}, {"cols", cols}, {"acc", acc}}),
              Op::LayerNormGrad, {rows, cols, acc});
          std::vector<float> xr = xBf16 ? roundedToBf16(x) : x, mr = mean,
                             sr = rstd;
          if (xBf16)
            rowStats(xr, rows, cols, mr, sr);
          h.ins = {h.bf16({rows, cols}, rng.vec(n)),
                   xBf16 ? h.bf16({rows, cols}, xr) : h.f32({rows, cols}, xr),
                   h.f32({cols}, rng.vec(cols)), h.f32({rows}, mr),
                   h.f32({rows}, sr)};
          h.outs = {acc ? h.inout({rows, cols}, rng.vec(n))
                        : h.out({rows, cols}),
                    h.out({cols}), h.out({cols})};
          twin(h);
        }
      }
  }
  // A bf16 y (rounded on store; never in place): the warp kernel (768: 8-byte
  // stores), the block kernel (251 columns; y 2 bytes late, so not 8-byte
  // aligned).
  const int64_t bf16Shapes[][3] = {{4096, 768, 0}, {33, 251, 0}, {65, 768, 1}};
  for (const auto &b : bf16Shapes) {
    const int64_t rows = b[0], cols = b[1], late = b[2], n = rows * cols;
    Case c = make("LayerNorm bf16 y " + dims({{"rows", rows}, {"cols", cols}}) +
                      (late ? " y+1" : ""),
                  Op::LayerNorm, {rows, cols}, {1e-5f});
    c.ins = {c.f32({rows, cols}, rng.vec(n, 2.0, 4.0)),
             c.f32({cols}, rng.vec(cols, 0.5, 1.5)),
             c.f32({cols}, rng.vec(cols))};
    int y = c.out({n + late}, DType::BF16);
    int yv = c.view(y, {rows, cols});
    c.ts[size_t(yv)].v.offset = 2 * late;
    c.outs = {yv, c.out({rows}), c.out({rows})};
    c.tol = 1e-2; // one bf16 rounding of values that may differ in the ulp
    twin(c);
  }
  // Rows of y padded to ldy columns, a 1 in column cols and zeros after
  // (mega-ones-column): the warp kernel (768 -> 776, GPT-2's, also at its
  // 16384 rows; 256 -> 264 f32), the block kernel (251 -> 256; 768 -> 770,
  // ldy not a multiple of 4). The poisoned output shows a pad element left
  // unwritten.
  const int64_t padShapes[][4] = {{4096, 768, 776, 1}, {16384, 768, 776, 1},
                                  {1024, 256, 264, 0}, {33, 251, 256, 1},
                                  {65, 768, 770, 1},   {65, 768, 776, 0}};
  for (const auto &p : padShapes) {
    const int64_t rows = p[0], cols = p[1], ldy = p[2], n = rows * cols;
    const DType yt = p[3] ? DType::BF16 : DType::F32;
    Case c = make("LayerNorm y=" + std::string(name(yt)) + " " +
                      dims({{"rows", rows}, {"cols", cols}, {"ldy", ldy}}),
                  Op::LayerNorm, {rows, cols, ldy}, {1e-5f});
    c.ins = {c.f32({rows, cols}, rng.vec(n, 2.0, 4.0)),
             c.f32({cols}, rng.vec(cols, 0.5, 1.5)),
             c.f32({cols}, rng.vec(cols))};
    c.outs = {c.out({rows, ldy}, yt), c.out({rows}), c.out({rows})};
    if (p[3])
      c.tol = 1e-2;
    twin(c);
  }
  // x in bf16 (the residual stream stored in bf16, widened on load), y f32
  // or bf16, at every shape class (the warp kernel's 8-byte loads: 96, 516,
  // 768, 1024; the block kernel: 17, 251, 1028); in place (y = x, both
  // bf16); x 2 bytes into its buffer (768 columns, not 8-byte aligned: the
  // block kernel); GPT-2 small's [16384, 768] as a --bf16-residual plan
  // runs it (bf16 y), twice for determinism.
  struct X {
    int64_t rows, cols;
    DType y;
    bool inPlace, late, twice;
  };
  const DType F = DType::F32, H = DType::BF16;
  std::vector<X> xs;
  for (const auto &s : shapes)
    for (DType y : {F, H})
      xs.push_back({s[0], s[1], y, false, false, false});
  xs.push_back({65, 768, H, true, false, false});
  xs.push_back({33, 251, H, true, false, false});
  xs.push_back({65, 768, F, false, true, false});
  xs.push_back({65, 768, H, false, true, false});
  xs.push_back({16384, 768, H, false, false, true});
  for (const X &e : xs) {
    const int64_t rows = e.rows, cols = e.cols, n = rows * cols;
    Case c = make("LayerNorm bf16 x y=" + std::string(name(e.y)) + " " +
                      dims({{"rows", rows}, {"cols", cols}}) +
                      (e.inPlace ? " in place" : "") + (e.late ? " x+1" : ""),
                  Op::LayerNorm, {rows, cols}, {1e-5f});
    const int64_t late = e.late ? 1 : 0;
    int x = c.bf16({n + late}, rng.vec(n + late, 2.0, 4.0));
    if (e.inPlace)
      c.compare.push_back(x);
    const int xv = c.view(x, {rows, cols});
    c.ts[size_t(xv)].v.offset = 2 * late;
    c.ins = {xv, c.f32({cols}, rng.vec(cols, 0.5, 1.5)),
             c.f32({cols}, rng.vec(cols))};
    c.outs = {e.inPlace ? c.same(xv) : c.out({rows, cols}, e.y), c.out({rows}),
              c.out({rows})};
    if (e.y == H)
      c.tol = 1e-2; // one bf16 rounding of values that may differ in the ulp
    twin(c);
    if (e.twice)
      deterministic(c);
  }
  // cols = 768 but x (and dy) 4 bytes into their buffers: the block-per-row
  // kernels.
  {
    const int64_t rows = 65, cols = 768, n = rows * cols;
    Case c =
        make("LayerNorm misaligned x " + dims({{"rows", rows}, {"cols", cols}}),
             Op::LayerNorm, {rows, cols}, {1e-5f});
    c.ins = {misalignedInput(c, rng, n, 1, 2.0, 4.0),
             c.f32({cols}, rng.vec(cols, 0.5, 1.5)),
             c.f32({cols}, rng.vec(cols))};
    c.outs = {c.out({rows, cols}), c.out({rows}), c.out({rows})};
    twin(c);
    Case g = make("LayerNormGrad misaligned dy " +
                      dims({{"rows", rows}, {"cols", cols}}),
                  Op::LayerNormGrad, {rows, cols, 0});
    std::vector<float> mean(static_cast<size_t>(rows), 0.1f);
    std::vector<float> rstd(static_cast<size_t>(rows), 1.7f);
    g.ins = {misalignedInput(g, rng, n, 1), g.f32({rows, cols}, rng.vec(n)),
             g.f32({cols}, rng.vec(cols)), g.f32({rows}, mean),
             g.f32({rows}, rstd)};
    g.outs = {g.out({rows, cols}), g.out({cols}), g.out({cols})};
    twin(g);
  }
}

} // namespace twincheck

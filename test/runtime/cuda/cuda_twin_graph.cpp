//===- cuda_twin_graph.cpp - Recorded launches against eager ones ---------===//
//
// The engine replays a program as a CUDA graph (Backend::capture): the same
// kernels with the same arguments, so a replay must give the bits of the
// eager launches, replay after replay. Each case here runs once eagerly
// (runOn), then on its own buffers: launched once (the warm run the engine
// does first), refilled, recorded, replayed, read; refilled, replayed again,
// read. Both readings must equal the eager one bit for bit. The bf16 GEMMs
// reach cuBLASLt's cached plans there (made by the warm run), one of them
// through a view whose alignment class differs from the buffer's.
//
// Also: all the cases in one recording; a recording that refuses to replay
// once the kernel scratch it points into has moved; a body that would grow
// the scratch while recording is refused (no graph, the backend usable).
//
//===----------------------------------------------------------------------===//
#include "TwinHarness.h"

namespace twincheck {

namespace {

/// A Case's operands on the CUDA backend, kept between launches.
class Bound {
public:
  explicit Bound(const Case &c) : c_(c) {
    std::vector<size_t> bytes;
    for (const auto &t : c.ts) {
      size_t k = size_t(t.v.index);
      if (bytes.size() <= k)
        bytes.resize(k + 1, 0);
      bytes[k] = std::max(bytes[k], size_t(t.v.offset + t.v.bytes()));
    }
    for (size_t b : bytes)
      bufs_.push_back(gCuda->allocate(std::max<size_t>(b, 4)));
    std::vector<const Value *> vi, vo;
    for (int k : c.ins) {
      vi.push_back(&c.ts[size_t(k)].v);
      ri_.push_back({ptr(c.ts[size_t(k)].v), &c.ts[size_t(k)].v});
    }
    for (int k : c.outs) {
      vo.push_back(&c.ts[size_t(k)].v);
      ro_.push_back({ptr(c.ts[size_t(k)].v), &c.ts[size_t(k)].v});
    }
    gCuda->check(c.instr, vi, vo);
  }
  ~Bound() {
    for (void *p : bufs_)
      gCuda->release(p);
  }
  Bound(const Bound &) = delete;
  Bound &operator=(const Bound &) = delete;

  /// The initial values, outputs poisoned (as runOn).
  void fill() {
    for (const auto &t : c_.ts)
      if (t.init.empty()) {
        std::vector<uint8_t> nan(static_cast<size_t>(t.v.bytes()), 0xff);
        gCuda->copyToDevice(ptr(t.v), nan.data(), nan.size());
      }
    for (const auto &t : c_.ts)
      if (!t.init.empty())
        gCuda->copyToDevice(ptr(t.v), t.init.data(),
                            std::min(t.init.size() * 4, size_t(t.v.bytes())));
  }
  void launch() { gCuda->launch(c_.instr, ri_, ro_); }
  Result read() {
    gCuda->synchronize();
    Result r;
    for (int k : c_.compare) {
      const Value &v = c_.ts[size_t(k)].v;
      std::vector<uint32_t> host(static_cast<size_t>(v.numel()));
      if (v.dtype == DType::BF16) {
        std::vector<uint16_t> half(host.size());
        gCuda->copyToHost(half.data(), ptr(v), half.size() * 2);
        for (size_t j = 0; j < half.size(); ++j)
          host[j] = uint32_t(half[j]) << 16;
      } else {
        gCuda->copyToHost(host.data(), ptr(v), host.size() * 4);
      }
      r.push_back(std::move(host));
    }
    return r;
  }

private:
  char *ptr(const Value &v) {
    return static_cast<char *>(bufs_[size_t(v.index)]) + v.offset;
  }
  const Case &c_;
  std::vector<void *> bufs_;
  std::vector<rt::TensorRef> ri_, ro_;
};

/// A recording of `body`; nullptr (reported as a failure of `label`) when
/// the backend refused.
std::unique_ptr<rt::LaunchGraph> record(const std::string &label,
                                        const std::function<void()> &body) {
  std::string why;
  std::unique_ptr<rt::LaunchGraph> g = gCuda->capture(body, why);
  if (!g)
    report(false, label, "not recorded: " + why);
  return g;
}

/// A bf16 MatMul case: C = alpha op(A) op(B) + beta C over `batch` items,
/// A `offA` elements into its buffer.
Case bf16MatMul(Rng &rng, int64_t batch, int64_t M, int64_t N, int64_t K,
                int ta, int tb, float alpha, float beta, int64_t offA) {
  const int64_t lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
  const int64_t sA = M * K, sB = K * N, sC = M * N;
  Case c = make("bf16 MatMul " +
                    dims({{"b", batch}, {"M", M}, {"N", N}, {"K", K},
                          {"tA", ta}, {"tB", tb}, {"offA", offA}}) +
                    fmt(" beta=%g", beta),
                Op::MatMul, {batch, M, N, K, ta, tb, lda, ldb, ldc, sA, sB, sC},
                {alpha, beta});
  int a = c.bf16({batch * sA + offA}, rng.vec(batch * sA + offA));
  int av = c.view(a, {batch * sA});
  c.ts[size_t(av)].v.offset = 2 * offA;
  c.ins = {av, c.bf16({batch * sB}, rng.vec(batch * sB))};
  c.outs = {beta != 0.0f ? c.inout({batch * sC}, rng.vec(batch * sC))
                         : c.out({batch * sC})};
  return c;
}

std::vector<Case> graphCases(Rng &rng) {
  std::vector<Case> cs;
  // GPT-2 small's GEMM classes at 512 rows: qkv, the projection with its
  // gradient accumulated (beta 1), the weight gradient (tA), attention-like
  // batched scores, and A one element late (alignment class 2 bytes).
  cs.push_back(bf16MatMul(rng, 1, 512, 2304, 768, 0, 0, 1.0f, 0.0f, 0));
  cs.push_back(bf16MatMul(rng, 1, 512, 768, 768, 0, 1, 1.0f, 1.0f, 0));
  cs.push_back(bf16MatMul(rng, 1, 768, 768, 512, 1, 0, 1.0f, 1.0f, 0));
  cs.push_back(bf16MatMul(rng, 12, 128, 128, 64, 0, 1, 0.125f, 0.0f, 0));
  cs.push_back(bf16MatMul(rng, 1, 96, 256, 64, 0, 0, 1.0f, 0.0f, 1));
  {
    const int64_t M = 256, N = 768, K = 384;
    Case c = make("MatMul f32 " + dims({{"M", M}, {"N", N}, {"K", K}}),
                  Op::MatMul, {1, M, N, K, 0, 0, K, N, N, M * K, K * N, M * N},
                  {1.0f, 0.0f});
    c.ins = {c.f32({M * K}, rng.vec(M * K)), c.f32({K * N}, rng.vec(K * N))};
    c.outs = {c.out({M * N})};
    cs.push_back(std::move(c));
  }
  {
    const int64_t rows = 1024, cols = 768;
    Case c = make("LayerNorm " + dims({{"rows", rows}, {"cols", cols}}),
                  Op::LayerNorm, {rows, cols}, {1e-5f});
    c.ins = {c.f32({rows, cols}, rng.vec(rows * cols, 2.0, 4.0)),
             c.f32({cols}, rng.vec(cols, 0.5, 1.5)), c.f32({cols}, rng.vec(cols))};
    c.outs = {c.out({rows, cols}), c.out({rows}), c.out({rows})};
    cs.push_back(std::move(c));
  }
  {
    // Its partial sums live in the kernel scratch.
    const int64_t rows = 256, V = 8192;
    Case c = make("CrossEntropy " + dims({{"rows", rows}, {"V", V}}),
                  Op::CrossEntropy, {rows, V});
    c.ins = {c.f32({rows, V}, rng.vec(rows * V, -6, 6)),
             c.i32({rows}, rng.ids(rows, V))};
    c.outs = {c.out({}), c.out({rows})};
    cs.push_back(std::move(c));
  }
  {
    // Its table is uploaded by the warm launch and read by the replays;
    // every operand updated in place (so each replay starts from a refill).
    // The same with bf16 weight copies (their pointers are in the table).
    const std::vector<int64_t> sizes = {7, 8193, 262144};
    const int64_t n = int64_t(sizes.size());
    const std::vector<float> f = {0.9f, 0.95f, 1e-8f, 0.1f, 0.0f, 0.1f};
    auto adam = [&](const std::string &label, std::vector<int64_t> i) {
      Case c = make(label, Op::AdamWMulti, std::move(i), f);
      c.ins = {c.f32({}, {3e-4f}), c.f32({}, {7.0f}), c.f32({}, {0.5f})};
      for (int64_t sz : sizes) {
        c.ins.push_back(c.inout({sz}, rng.vec(sz)));
        c.ins.push_back(c.inout({sz}, rng.vec(sz)));
        c.ins.push_back(c.inout({sz}, rng.vec(sz, -0.1, 0.1)));
        c.ins.push_back(c.inout({sz}, rng.vec(sz, 0, 0.01)));
      }
      return c;
    };
    cs.push_back(adam("AdamWMulti " + dims({{"tensors", n}, {"zero_grads", 1}}),
                      {n, 1}));
    Case c = adam("AdamWMulti copies " +
                      dims({{"tensors", n}, {"copies", 2}}),
                  {n, 1, 1, 0, 1});
    c.outs = {c.out({sizes[0]}, DType::BF16), c.out({sizes[2]}, DType::BF16)};
    cs.push_back(std::move(c));
  }
  {
    const std::vector<int64_t> sizes = {17, 16384 * 2 + 5, 96 * 251};
    Case c = make("GradNorm 3 tensors", Op::GradNorm, {}, {1.0f});
    for (int64_t sz : sizes)
      c.ins.push_back(c.f32({sz}, rng.vec(sz)));
    c.outs = {c.out({}), c.out({})};
    cs.push_back(std::move(c));
  }
  return cs;
}

/// Each case recorded on its own: two replays, each the eager bits.
void eachRecorded(const std::vector<Case> &cs) {
  for (const Case &c : cs) {
    const std::string label = "graph: " + c.label;
    try {
      const Result eager = runOn(*gCuda, c);
      Bound b(c);
      b.fill();
      b.launch(); // the warm run: scratch, tables, GEMM plans
      b.fill();
      auto g = record(label, [&] { b.launch(); });
      if (!g)
        continue;
      bool ok = g->replay();
      const Result first = b.read();
      b.fill();
      ok = ok && g->replay();
      const Result second = b.read();
      const bool same = ok && first == eager && second == eager;
      report(same && g->kernels() > 0, label,
             !ok          ? "replay refused"
             : !same      ? "a replay differs from the eager launch"
                          : std::to_string(g->kernels()) +
                                " kernels; two replays bit-identical to eager");
    } catch (const std::exception &e) {
      report(false, label, std::string("threw: ") + e.what());
    }
  }
}

/// All the cases in one recording, in order.
void allRecorded(const std::vector<Case> &cs) {
  const std::string label = "graph: " + std::to_string(cs.size()) +
                            " instructions in one recording";
  try {
    std::vector<Result> eager;
    std::vector<std::unique_ptr<Bound>> bs;
    for (const Case &c : cs) {
      eager.push_back(runOn(*gCuda, c));
      bs.push_back(std::make_unique<Bound>(c));
    }
    for (auto &b : bs) {
      b->fill();
      b->launch();
    }
    for (auto &b : bs)
      b->fill();
    auto g = record(label, [&] {
      for (auto &b : bs)
        b->launch();
    });
    if (!g)
      return;
    if (!g->replay()) {
      report(false, label, "replay refused");
      return;
    }
    size_t bad = 0;
    std::string first;
    for (size_t k = 0; k < bs.size(); ++k)
      if (bs[k]->read() != eager[k]) {
        ++bad;
        if (first.empty())
          first = cs[k].label;
      }
    report(bad == 0, label,
           bad ? std::to_string(bad) + " differ from eager, first " + first
               : std::to_string(g->kernels()) + " kernels, " +
                     std::to_string(g->otherNodes()) + " other nodes" +
                     (g->details().empty() ? std::string()
                                           : " (" + g->details() + ")") +
                     "; all bit-identical to eager");
  } catch (const std::exception &e) {
    report(false, label, std::string("threw: ") + e.what());
  }
}

/// An EmbeddingGrad of `n` ids (its sort keys live in the kernel scratch,
/// 16 bytes per id and more).
Case bigEmbeddingGrad(Rng &rng, int64_t n) {
  const int64_t V = 64, H = 1;
  Case c = make("EmbeddingGrad " + dims({{"rows", n}, {"V", V}, {"H", H}}),
                Op::EmbeddingGrad, {n, V, H, 0});
  c.ins = {c.f32({n, H}, rng.vec(n * H)), c.i32({n}, rng.ids(n, V))};
  c.outs = {c.out({V, H})};
  return c;
}

/// A body that needs more kernel scratch than there is: refused while
/// recording; the backend then runs it eagerly (the scratch grows), and
/// still twins `user`.
/// Then: a recording of `user` made before the scratch grows refuses to
/// replay, and one made again replays the eager bits.
void scratchMoves(Rng &rng, const Case &user) {
  // 2^22 ids want at least 64 MiB of scratch, more than any case before
  // here needs; should some case have grown it further, twice as many.
  int64_t ids = int64_t(1) << 22;
  bool refused = false;
  {
    const std::string label = "graph: scratch growth while recording refused";
    try {
      std::string why;
      for (; ids <= (int64_t(1) << 26); ids *= 2) {
        const Case big = bigEmbeddingGrad(rng, ids);
        Bound b(big);
        b.fill();
        why.clear();
        if (gCuda->capture([&] { b.launch(); }, why))
          continue; // it fitted: a recording nobody replays
        runOn(*gCuda, big); // as the engine then does: eagerly, scratch grows
        break;
      }
      refused = ids <= (int64_t(1) << 26) &&
                why.find("while recording") != std::string::npos;
      report(refused, label, "refused: " + why);
    } catch (const std::exception &e) {
      report(false, label, std::string("threw: ") + e.what());
    }
    twin(user); // the backend still agrees with the CPU
  }
  if (!refused)
    return; // no size known to move the scratch
  const std::string label = "graph: stale after the scratch moved";
  try {
    const Result eager = runOn(*gCuda, user);
    Bound b(user);
    b.fill();
    b.launch();
    b.fill();
    auto g = record(label, [&] { b.launch(); });
    if (!g)
      return;
    // Twice the ids of the refused one: the scratch must move.
    {
      const Case bigger = bigEmbeddingGrad(rng, 2 * ids);
      Bound grow(bigger);
      grow.fill();
      grow.launch();
      gCuda->synchronize();
    }
    if (g->replay()) {
      report(false, label, "replayed a recording of freed scratch");
      return;
    }
    auto again = record(label, [&] { b.launch(); });
    if (!again)
      return;
    const bool ok = again->replay();
    const Result r = b.read();
    report(ok && r == eager, label,
           ok && r == eager ? "refused, recorded again: the eager bits"
                            : "the new recording differs from eager");
  } catch (const std::exception &e) {
    report(false, label, std::string("threw: ") + e.what());
  }
}

} // namespace

void graphs(Rng &rng) {
  const std::vector<Case> cs = graphCases(rng);
  eachRecorded(cs);
  allRecorded(cs);
  // The CrossEntropy case: its partial sums are in the scratch.
  for (const Case &c : cs)
    if (c.instr.op == Op::CrossEntropy)
      scratchMoves(rng, c);
}

} // namespace twincheck

//===- CudnnAttention.cpp - Attention through cuDNN's fused SDPA ----------===//
//
// Per distinct problem, one cuDNN frontend graph:
//   1. tensors Q, K, V (and O, dO, lse for the backward) with the plan's
//      dims [B, H, S, hd] and element strides, each given a fixed uid;
//   2. the SDPA node (forward: O and the softmax stats, natural-log
//      logsumexp of the scaled scores as the plan's lse; backward: dQ, dK,
//      dV) with the plan's scale and causal mask (diagonal band aligned top
//      left, right bound 0: key j > query i masked, as the CPU twin does);
//   3. build: validate, lower to cuDNN's operation graph, heuristics A,
//      support check, plan; its workspace size kept with it.
// A launch looks the graph up (building it the first time), takes the
// workspace from the backend's scratch and enqueues it on the stream.
//
//===----------------------------------------------------------------------===//
#include "CudnnAttention.h"

#include "Common.h"

#ifdef MEGA_HAVE_CUDNN

// cuDNN is opened with dlopen (below); the frontend finds its entry points
// through this handle, so nothing links libcudnn.
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <cudnn_frontend.h>

#include <dlfcn.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <map>

namespace cudnn_frontend {
void *cudnn_dlhandle = nullptr;
} // namespace cudnn_frontend

namespace mega::rt::gpu {

namespace fe = cudnn_frontend;
using fe::graph::Tensor_attributes;

namespace {

// Fixed uids of the variant pack.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kLse, kDout, kDq, kDk, kDv };

/// What tells two problems apart: forward/backward, the shape, causal, the
/// scale's bits and every stride.
using Key = std::array<int64_t, 19>;

Key keyOf(bool backward, const SdpaProblem &p) {
  uint32_t scaleBits;
  std::memcpy(&scaleBits, &p.scale, 4);
  return {backward,  p.batch,   p.heads,   p.seq,     p.hd,
          p.causal,  scaleBits, p.qkv.sB,  p.qkv.sH,  p.qkv.sS,
          p.o.sB,    p.o.sH,    p.o.sS,    p.dout.sB, p.dout.sH,
          p.dout.sS, p.grad.sB, p.grad.sH, p.grad.sS};
}

std::string versionText(size_t v) { // 91900 -> 9.19.0
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

} // namespace

struct CudnnAttention::Impl {
  struct Entry {
    std::shared_ptr<fe::graph::Graph> graph; ///< null: refused
    int64_t workspace = 0;
    std::string why; ///< cuDNN's words for a refusal
  };
  void *lib = nullptr;
  cudnnHandle_t handle = nullptr;
  cudaStream_t stream = nullptr; ///< the one the handle is set to
  std::map<Key, Entry> graphs;
  std::string unusable; ///< why the handle could not be made

  ~Impl() {
    if (handle)
      fe::detail::destroy_handle(handle);
    // The library stays loaded: the frontend keeps function pointers to it
    // in statics for the rest of the process.
  }

  /// Creates the handle (needs the device) the first time and sets its
  /// stream; false with `why` when cuDNN cannot be used on this device
  /// (remembered: later launches go to mega's kernels at once).
  bool bind(cudaStream_t s, std::string &why) {
    if (!unusable.empty()) {
      why = unusable;
      return false;
    }
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    if (!handle) {
      st = fe::detail::create_handle(&handle);
      if (st != CUDNN_STATUS_SUCCESS) {
        handle = nullptr;
        unusable =
            "cudnnCreate failed (status " + std::to_string(int(st)) + ")";
      }
    }
    if (handle && stream != s) {
      st = fe::detail::set_stream(handle, s);
      if (st == CUDNN_STATUS_SUCCESS)
        stream = s;
      else
        unusable =
            "cudnnSetStream failed (status " + std::to_string(int(st)) + ")";
    }
    why = unusable;
    return unusable.empty();
  }

  static std::shared_ptr<Tensor_attributes>
  operand(fe::graph::Graph &g, const char *name, int64_t uid,
          const SdpaProblem &p, const SdpaStrides &l) {
    return g.tensor(Tensor_attributes()
                        .set_name(name)
                        .set_uid(uid)
                        .set_dim({p.batch, p.heads, p.seq, p.hd})
                        .set_stride({l.sB, l.sH, l.sS, 1})
                        .set_data_type(fe::DataType_t::BFLOAT16));
  }
  static void output(const std::shared_ptr<Tensor_attributes> &t, int64_t uid,
                     const SdpaProblem &p, const SdpaStrides &l) {
    t->set_output(true)
        .set_uid(uid)
        .set_dim({p.batch, p.heads, p.seq, p.hd})
        .set_stride({l.sB, l.sH, l.sS, 1})
        .set_data_type(fe::DataType_t::BFLOAT16);
  }
  /// lse: [B*H, S] float, as the plan keeps it.
  static std::vector<int64_t> lseDims(const SdpaProblem &p) {
    return {p.batch, p.heads, p.seq, 1};
  }
  static std::vector<int64_t> lseStrides(const SdpaProblem &p) {
    return {p.heads * p.seq, p.seq, 1, 1};
  }

  Entry build(bool backward, const SdpaProblem &p) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto q = operand(*g, "q", kQ, p, p.qkv);
    auto k = operand(*g, "k", kK, p, p.qkv);
    auto v = operand(*g, "v", kV, p, p.qkv);
    if (!backward) {
      auto opts = fe::graph::SDPA_attributes()
                      .set_name("attention")
                      .set_generate_stats(true)
                      .set_attn_scale(p.scale);
      if (p.causal) // key j > query i masked, as the CPU twin does
        opts.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
            .set_diagonal_band_right_bound(0);
      auto [o, stats] = g->sdpa(q, k, v, opts);
      output(o, kO, p, p.o);
      stats->set_output(true)
          .set_uid(kLse)
          .set_dim(lseDims(p))
          .set_stride(lseStrides(p))
          .set_data_type(fe::DataType_t::FLOAT);
    } else {
      auto o = operand(*g, "o", kO, p, p.o);
      auto dout = operand(*g, "dout", kDout, p, p.dout);
      auto lse = g->tensor(Tensor_attributes()
                               .set_name("lse")
                               .set_uid(kLse)
                               .set_dim(lseDims(p))
                               .set_stride(lseStrides(p))
                               .set_data_type(fe::DataType_t::FLOAT));
      auto opts = fe::graph::SDPA_backward_attributes()
                      .set_name("attention_grad")
                      .set_attn_scale(p.scale);
      if (p.causal)
        opts.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
            .set_diagonal_band_right_bound(0);
      auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, lse, opts);
      output(dq, kDq, p, p.grad);
      output(dk, kDk, p, p.grad);
      output(dv, kDv, p, p.grad);
    }
    Entry e;
    fe::error_t st = g->build(handle, {fe::HeurMode_t::A});
    if (st.is_good())
      st = g->get_workspace_size(e.workspace);
    if (st.is_bad()) {
      e.why = st.get_message();
      return e;
    }
    e.graph = std::move(g);
    return e;
  }

  /// Tells once per problem that cuDNN will not run it (as the JIT tells
  /// of its kernels).
  static void refused(bool backward, const SdpaProblem &p, const char *what,
                      const std::string &why) {
    std::fprintf(stderr,
                 "cuda: cuDNN %s %s B %lld H %lld S %lld hd %lld%s: %s\n", what,
                 backward ? "AttentionGrad" : "Attention", (long long)p.batch,
                 (long long)p.heads, (long long)p.seq, (long long)p.hd,
                 p.causal ? " causal" : "", why.c_str());
  }

  /// The graph of the problem, built the first time; its graph is null
  /// when refused.
  Entry &find(bool backward, const SdpaProblem &p) {
    const Key key = keyOf(backward, p);
    auto it = graphs.find(key);
    if (it == graphs.end()) {
      Entry e;
      try {
        e = build(backward, p);
      } catch (const std::exception &x) { // an entry point missing, say
        e = Entry{};
        e.why = x.what();
      }
      if (!e.graph)
        refused(backward, p, "has no plan for", e.why);
      it = graphs.emplace(key, std::move(e)).first;
    }
    return it->second;
  }

  /// A graph cuDNN built but then fails to launch (a variant pack it
  /// refuses, say) is dropped like a refused one: the caller runs mega's
  /// kernels, which write every output whole.
  bool run(cudaStream_t s, Workspace &ws, bool backward, const SdpaProblem &p,
           std::unordered_map<int64_t, void *> &pack, std::string &why) {
    if (!bind(s, why))
      return false;
    Entry &e = find(backward, p);
    if (!e.graph) {
      why = e.why;
      return false;
    }
    void *scratch = e.workspace > 0 ? ws.get(size_t(e.workspace)) : nullptr;
    fe::error_t st;
    try {
      st = e.graph->execute(handle, pack, scratch);
    } catch (const std::exception &x) {
      st = fe::error_t{fe::error_code_t::CUDNN_BACKEND_API_FAILED, x.what()};
    }
    if (st.is_good())
      return true;
    e.graph.reset();
    e.why = "launch failed: " + st.get_message();
    refused(backward, p, "failed on", e.why);
    why = e.why;
    return false;
  }
};

CudnnAttention::CudnnAttention(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
CudnnAttention::~CudnnAttention() = default;

bool CudnnAttention::built() { return true; }

std::unique_ptr<CudnnAttention> CudnnAttention::load(std::string &why) {
  // The frontend reads one process-wide handle: open the library once.
  static void *lib = nullptr;
  static std::string failure;
  if (!lib && failure.empty()) {
    lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
      const char *e = dlerror();
      failure = e ? e : "libcudnn.so.9 could not be opened";
    }
  }
  if (!lib) {
    why = failure;
    return nullptr;
  }
  fe::cudnn_dlhandle = lib;
  size_t v = 0;
  try {
    v = fe::detail::get_backend_version();
  } catch (const std::exception &e) {
    why = e.what();
    return nullptr;
  }
  if (v < 90000) {
    why = "cuDNN " + versionText(v) + " is older than 9.0";
    return nullptr;
  }
  auto impl = std::make_unique<Impl>();
  impl->lib = lib;
  return std::unique_ptr<CudnnAttention>(new CudnnAttention(std::move(impl)));
}

std::string CudnnAttention::version() const {
  return "cuDNN " + versionText(fe::detail::get_backend_version()) +
         " (frontend " + std::to_string(CUDNN_FRONTEND_MAJOR_VERSION) + "." +
         std::to_string(CUDNN_FRONTEND_MINOR_VERSION) + "." +
         std::to_string(CUDNN_FRONTEND_PATCH_VERSION) + ")";
}

bool CudnnAttention::forward(cudaStream_t stream, Workspace &ws,
                             const SdpaProblem &p, const SdpaForwardArgs &a,
                             std::string &why) {
  std::unordered_map<int64_t, void *> pack = {{kQ, const_cast<void *>(a.q)},
                                              {kK, const_cast<void *>(a.k)},
                                              {kV, const_cast<void *>(a.v)},
                                              {kO, a.o},
                                              {kLse, a.lse}};
  return impl_->run(stream, ws, false, p, pack, why);
}

bool CudnnAttention::backward(cudaStream_t stream, Workspace &ws,
                              const SdpaProblem &p, const SdpaBackwardArgs &a,
                              std::string &why) {
  std::unordered_map<int64_t, void *> pack = {
      {kQ, const_cast<void *>(a.q)},
      {kK, const_cast<void *>(a.k)},
      {kV, const_cast<void *>(a.v)},
      {kO, const_cast<void *>(a.o)},
      {kDout, const_cast<void *>(a.dout)},
      {kLse, const_cast<float *>(a.lse)},
      {kDq, a.dq},
      {kDk, a.dk},
      {kDv, a.dv}};
  return impl_->run(stream, ws, true, p, pack, why);
}

} // namespace mega::rt::gpu

#else // no cuDNN frontend at build time: mega's attention kernels only

namespace mega::rt::gpu {

struct CudnnAttention::Impl {};

CudnnAttention::CudnnAttention(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
CudnnAttention::~CudnnAttention() = default;

bool CudnnAttention::built() { return false; }

std::unique_ptr<CudnnAttention> CudnnAttention::load(std::string &why) {
  why = "this build has no cuDNN frontend headers "
        "(scripts/fetch_cudnn_frontend.sh)";
  return nullptr;
}

std::string CudnnAttention::version() const { return ""; }

bool CudnnAttention::forward(cudaStream_t, Workspace &, const SdpaProblem &,
                             const SdpaForwardArgs &, std::string &why) {
  why = "no cuDNN in this build";
  return false;
}

bool CudnnAttention::backward(cudaStream_t, Workspace &, const SdpaProblem &,
                              const SdpaBackwardArgs &, std::string &why) {
  why = "no cuDNN in this build";
  return false;
}

} // namespace mega::rt::gpu

#endif // MEGA_HAVE_CUDNN

namespace mega::rt::gpu {

namespace {

/// Why cuDNN's SDPA cannot take these operands ("" when it may). `lseIn`,
/// `lseOut`: the position of the float lse among the inputs or outputs.
std::string sdpaMisfit(const SdpaProblem &p, const Refs &ins, const Refs &outs,
                       size_t lseIn, size_t lseOut) {
  for (const Refs *list : {&ins, &outs})
    for (size_t k = 0; k < list->size(); ++k) {
      const bool lse = list == &ins ? k == lseIn : k == lseOut;
      if ((*list)[k].value->dtype != (lse ? DType::F32 : DType::BF16))
        return "its operands are not bf16 (and a float lse)";
      if (!aligned((*list)[k].data, 16))
        return "an operand is not 16-byte aligned";
    }
  if (p.hd % 8 != 0 || p.hd > 128)
    return "head dim " + std::to_string(p.hd) +
           " (cuDNN takes multiples of 8 up to 128)";
  for (const SdpaStrides &l : {p.qkv, p.o, p.dout, p.grad})
    if (l.sB % 8 != 0 || l.sH % 8 != 0 || l.sS % 8 != 0)
      return "its strides are not multiples of 8";
  return "";
}

} // namespace

bool runSdpa(const Ctx &ctx, const Instr &in, const SdpaProblem &p,
             const Refs &ins, const Refs &outs) {
  if (!ctx.cudnn)
    return false;
  const bool grad = in.op == Op::AttentionGrad;
  // lse: Attention's second output, AttentionGrad's fifth input.
  std::string why = grad ? sdpaMisfit(p, ins, outs, 4, size_t(-1))
                         : sdpaMisfit(p, ins, outs, size_t(-1), 1);
  if (why.empty()) {
    const bool ran =
        grad ? ctx.cudnn->backward(
                   ctx.stream, *ctx.ws, p,
                   SdpaBackwardArgs{ins[0].data, ins[1].data, ins[2].data,
                                    ins[3].data, ins[5].data, ins[4].f32(),
                                    outs[0].data, outs[1].data, outs[2].data},
                   why)
             : ctx.cudnn->forward(ctx.stream, *ctx.ws, p,
                                  SdpaForwardArgs{ins[0].data, ins[1].data,
                                                  ins[2].data, outs[0].data,
                                                  outs[1].f32()},
                                  why);
    if (ran)
      return true;
  }
  if (ctx.cudnnRequired)
    throw Error(std::string(plan::opName(in.op)) +
                ": --attention-backend fused: cuDNN cannot run it: " + why);
  return false;
}

} // namespace mega::rt::gpu

//===- Plan.cpp - Plan serialisation and validation ----------------------===//
//
// File layout (all little-endian; docs/plan-format.md is the field-by-field
// reference):
//   magic "MEGAPLAN" | u32 version | u32 reserved (0) | u64 payload bytes |
//   u64 FNV-1a-64 of the payload | payload
// The checksum makes a flipped byte a clear error rather than a wrong run.
//
//===----------------------------------------------------------------------===//
#include "mega/Plan/Plan.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace mega::plan {

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
    return 2;
  }
  return 0;
}

const char *dtypeName(DType t) {
  switch (t) {
  case DType::F32:
    return "f32";
  case DType::I32:
    return "i32";
  case DType::BF16:
    return "bf16";
  }
  return "?";
}

const char *roleName(Role r) {
  switch (r) {
  case Role::Param:
    return "param";
  case Role::Grad:
    return "grad";
  case Role::AdamM:
    return "adam_m";
  case Role::AdamV:
    return "adam_v";
  case Role::ParamCopy:
    return "param_copy";
  }
  return "?";
}

const char *opName(Op op) {
  switch (op) {
#define MEGA_OP(X)                                                             \
  case Op::X:                                                                  \
    return #X;
    MEGA_PLAN_BASE_KERNELS(MEGA_OP)
    MEGA_PLAN_COLLECTIVES(MEGA_OP)
    MEGA_PLAN_VOCAB_KERNELS(MEGA_OP)
    MEGA_PLAN_FUSED_KERNELS(MEGA_OP)
#undef MEGA_OP
  }
  return nullptr;
}

const char *stepKindName(StepKind k) {
  switch (k) {
  case StepKind::RecvForward:
    return "recv-forward";
  case StepKind::Forward:
    return "forward";
  case StepKind::SendForward:
    return "send-forward";
  case StepKind::RecvBackward:
    return "recv-backward";
  case StepKind::Backward:
    return "backward";
  case StepKind::SendBackward:
    return "send-backward";
  case StepKind::Optimizer:
    return "optimizer";
  }
  return "?";
}

namespace {
int64_t elementsOf(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}
} // namespace

int64_t Value::numel() const { return elementsOf(shape); }
int64_t Port::numel() const { return elementsOf(shape); }
int64_t Persistent::numel() const { return elementsOf(shape); }

const Program *Plan::findProgram(const std::string &name) const {
  for (const Program &p : programs)
    if (p.name == name)
      return &p;
  return nullptr;
}

std::string Plan::get(const std::string &key, const std::string &dflt) const {
  auto it = config.find(key);
  return it == config.end() ? dflt : it->second;
}

int64_t Plan::getInt(const std::string &key, int64_t dflt) const {
  auto it = config.find(key);
  if (it == config.end())
    return dflt;
  try {
    return std::stoll(it->second);
  } catch (const std::exception &) {
    throw PlanError("plan config '" + key + "' is not an integer: '" +
                    it->second + "'");
  }
}

double Plan::getFloat(const std::string &key, double dflt) const {
  auto it = config.find(key);
  if (it == config.end())
    return dflt;
  try {
    return std::stod(it->second);
  } catch (const std::exception &) {
    throw PlanError("plan config '" + key + "' is not a number: '" +
                    it->second + "'");
  }
}

//===----------------------------------------------------------------------===//
// Validation
//===----------------------------------------------------------------------===//

namespace {

/// Operand-count rule per opcode: exact counts, or -1 for "at least one".
struct Arity {
  int inputs, outputs;
};

Arity arityOf(Op op) {
  switch (op) {
  case Op::Fill:
    return {0, 1};
  case Op::Copy:
    return {1, 1};
  case Op::MatMul:
    return {-1, -1}; // 2 + epilogue operands, checked with i[12] below
  case Op::Elementwise:
    return {-1, -1};
  case Op::ReduceSum:
    return {1, 1};
  case Op::LayerNorm:
    return {3, 3};
  case Op::LayerNormGrad:
    return {5, -1}; // 3, 4 with dx's bf16 copy, 5 with its sums: below
  case Op::Softmax:
    return {1, 1};
  case Op::SoftmaxGrad:
    return {2, 1};
  case Op::CrossEntropy:
    return {2, 2};
  case Op::CrossEntropyGrad:
    return {4, 1};
  case Op::Embedding:
    return {2, 1};
  case Op::EmbeddingGrad:
    return {2, 1};
  case Op::Transpose:
    return {1, 1};
  case Op::GradNorm:
    return {-1, 2};
  case Op::AdamW:
    return {7, -1}; // 1 output: the distributed optimizer's updated shard
  case Op::Sgd:
    return {4, 0};
  case Op::AllReduce:
  case Op::AllGather:
  case Op::ReduceScatter:
    return {1, 1};
  case Op::Send:
    return {1, 0};
  case Op::Recv:
    return {0, 1};
  case Op::AllReduceStart:
    return {-1, 0};
  case Op::AllReduceWait:
  case Op::ReduceScatterWait:
    return {-1, -1};
  case Op::ReduceScatterStart:
    return {-1, 0};
  case Op::VocabEmbedding:
    return {2, 1};
  case Op::VocabEmbeddingGrad:
    return {2, 1};
  case Op::RowMax:
    return {1, 1};
  case Op::VocabCrossEntropyStats:
    return {3, 2};
  case Op::VocabCrossEntropy:
    return {3, 2};
  case Op::VocabCrossEntropyGrad:
    return {4, 1};
  case Op::Cast:
    return {1, 1};
  case Op::Attention:
    return {3, 2};
  case Op::AttentionGrad:
    return {6, 3};
  case Op::AdamWMulti:
    return {-1, -1}; // 3 + 4n inputs, the copies: checked with i below
  case Op::CrossEntropyWithGrad:
    return {3, 3};
  }
  return {0, 0};
}

[[noreturn]] void fail(const Program &p, size_t instr, const std::string &m) {
  throw PlanError("invalid plan: program '" + p.name + "' instruction " +
                  std::to_string(instr) + ": " + m);
}

int64_t numelOf(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > (int64_t(1) << 40) / d))
      throw PlanError("invalid plan: tensor dimension out of range");
    n *= d;
  }
  return n;
}

/// AdamWMulti: i = {n, zero_grads} or {n, zero_grads, c_1..c_n}, 3 + 4n
/// inputs, one output per c_k = 1, f = {beta1, beta2, eps, wd_1..wd_n}. The
/// backends check shapes and dtypes.
void validateAdamWMulti(const Program &p, size_t k, const Instr &in) {
  if (in.i.size() < 2)
    fail(p, k, "AdamWMulti takes 2 integer attributes (n, zero_grads)");
  const int64_t n = in.i[0];
  if (n < 1 || n > (int64_t(1) << 24))
    fail(p, k, "AdamWMulti updates " + std::to_string(n) +
                   " tensors (1 to 2^24)");
  if (in.inputs.size() != size_t(3 + 4 * n))
    fail(p, k, "AdamWMulti over " + std::to_string(n) + " tensors takes " +
                   std::to_string(3 + 4 * n) + " inputs, not " +
                   std::to_string(in.inputs.size()));
  if (in.i[1] != 0 && in.i[1] != 1)
    fail(p, k, "AdamWMulti zero_grads " + std::to_string(in.i[1]) +
                   " is neither 0 nor 1");
  // The bf16 copies: a flag per tensor, an output per flag set.
  if (in.i.size() != 2 && in.i.size() != size_t(2 + n))
    fail(p, k, "AdamWMulti over " + std::to_string(n) + " tensors takes 2 or " +
                   std::to_string(2 + n) + " integer attributes, not " +
                   std::to_string(in.i.size()));
  size_t copies = 0;
  for (size_t t = 2; t < in.i.size(); ++t) {
    if (in.i[t] != 0 && in.i[t] != 1)
      fail(p, k, "AdamWMulti copy flag " + std::to_string(in.i[t]) +
                     " is neither 0 nor 1");
    copies += size_t(in.i[t]);
  }
  if (in.outputs.size() != copies)
    fail(p, k, "AdamWMulti writes " + std::to_string(copies) +
                   " bf16 copies but has " + std::to_string(in.outputs.size()) +
                   " outputs");
  if (in.f.size() != size_t(3 + n))
    fail(p, k, "AdamWMulti over " + std::to_string(n) + " tensors takes " +
                   std::to_string(3 + n) + " float attributes, not " +
                   std::to_string(in.f.size()));
}

/// LayerNormGrad: dx, dw, db, optionally dx's bf16 copy and then that
/// copy's column sums; the backends check shapes, dtypes and the attributes.
void validateLayerNormGrad(const Program &p, size_t k, const Instr &in) {
  if (in.outputs.size() < 3 || in.outputs.size() > 5)
    fail(p, k, "LayerNormGrad has " + std::to_string(in.outputs.size()) +
                   " outputs, not 3 (dx, dw, db), 4 (and dx in bf16) or 5 "
                   "(and its column sums)");
}

/// MatMul: 12 integer attributes, or 13 with the epilogue i[12] (0 none,
/// 1 bias, 2 bias + residual, 3 bias + GELU with the pre-activation as a
/// second output, 4 the GELU gradient at a pre-activation input), or 14
/// with epilogue 5 (B's column sums as a second output, i[13] accumulate),
/// whose operand counts follow from it. The backends check shapes and
/// dtypes.
void validateMatMul(const Program &p, size_t k, const Instr &in) {
  if (in.i.size() < 12 || in.i.size() > 14)
    fail(p, k, "MatMul takes 12 integer attributes, 13 with an epilogue or "
               "14 with epilogue 5, not " + std::to_string(in.i.size()));
  const int64_t epi = in.i.size() >= 13 ? in.i[12] : 0;
  if (epi < 0 || epi > 5)
    fail(p, k, "MatMul epilogue " + std::to_string(epi) +
                   " is not 0 (none), 1 (bias), 2 (bias + residual), 3 "
                   "(bias + GELU), 4 (GELU gradient) or 5 (bias gradient)");
  if ((epi == 5) != (in.i.size() == 14))
    fail(p, k, "MatMul epilogue 5 (bias gradient) and only it takes a 14th "
               "integer attribute (accumulate)");
  const size_t nin = epi == 0 || epi == 5 ? 2 : epi == 2 ? 4 : 3;
  const size_t nout = epi == 3 || epi == 5 ? 2 : 1;
  if (in.inputs.size() != nin || in.outputs.size() != nout)
    fail(p, k, "MatMul with epilogue " + std::to_string(epi) + " takes " +
                   std::to_string(nin) + " inputs and " +
                   std::to_string(nout) + " outputs, not " +
                   std::to_string(in.inputs.size()) + " and " +
                   std::to_string(in.outputs.size()));
}

/// Collectives: group and attributes in range, f32 operands (an AllGather's
/// may be bf16) whose element counts agree (the group's size is a run-time
/// fact; the runtime checks AllGather/ReduceScatter against it).
void validateCollective(const Program &p, size_t k, const Instr &in) {
  const char *name = opName(in.op);
  bool bucket = in.op == Op::AllReduceStart || in.op == Op::AllReduceWait;
  bool scatter =
      in.op == Op::ReduceScatterStart || in.op == Op::ReduceScatterWait;
  size_t want = (in.op == Op::Send || in.op == Op::Recv)  ? 3
                : (in.op == Op::AllReduce || bucket)      ? 2
                                                          : 1;
  if (in.i.size() != want)
    fail(p, k, std::string(name) + " takes " + std::to_string(want) +
                   " integer attributes");
  if (in.i[0] < 0 || in.i[0] > 2)
    fail(p, k, std::string(name) + " names group " + std::to_string(in.i[0]) +
                   " (0 tensor, 1 data, 2 pipeline)");
  if (in.op == Op::AllReduce && (in.i[1] < 0 || in.i[1] > 1))
    fail(p, k, "AllReduce op " + std::to_string(in.i[1]) +
                   " is neither 0 (sum) nor 1 (max)");
  if (bucket && in.i[1] != 0)
    fail(p, k, std::string(name) + " op " + std::to_string(in.i[1]) +
                   " is not 0 (sum)");
  if ((bucket || scatter) && in.inputs.empty())
    fail(p, k, std::string(name) + " needs at least one input");
  if (in.op == Op::ReduceScatterWait) {
    if (in.outputs.size() != in.inputs.size())
      fail(p, k, "ReduceScatterWait needs one output per input");
    for (size_t j = 0; j < in.inputs.size(); ++j) {
      int64_t a = p.values[size_t(in.outputs[j])].numel();
      int64_t b = p.values[size_t(in.inputs[j])].numel();
      if (a <= 0 || b % a != 0)
        fail(p, k,
             "ReduceScatterWait input " + std::to_string(j) +
                 " is not a whole multiple of its output");
    }
  }
  if (in.op == Op::AllReduceWait) {
    if (in.outputs.size() != in.inputs.size())
      fail(p, k, "AllReduceWait needs one output per input");
    for (size_t j = 0; j < in.inputs.size(); ++j)
      if (p.values[size_t(in.inputs[j])].numel() !=
          p.values[size_t(in.outputs[j])].numel())
        fail(p, k, "AllReduceWait input and output " + std::to_string(j) +
                       " differ in element count");
  }
  // AllGather only moves elements: bf16 too (mixed precision gathers the
  // rounded value), as whole 4-byte words, so its input's count is even.
  if (in.op == Op::AllGather && !in.inputs.empty() && !in.outputs.empty() &&
      p.values[size_t(in.inputs[0])].dtype == DType::BF16) {
    const Value &x = p.values[size_t(in.inputs[0])];
    if (p.values[size_t(in.outputs[0])].dtype != DType::BF16)
      fail(p, k, "AllGather of a bf16 input needs a bf16 output");
    if (x.numel() % 2 != 0)
      fail(p, k,
           "AllGather of bf16 moves 4-byte words: its input's " +
               std::to_string(x.numel()) + " elements are not even");
  } else {
    for (int32_t v : in.inputs)
      if (p.values[size_t(v)].dtype != DType::F32)
        fail(p, k, std::string(name) + " operands must be f32");
    for (int32_t v : in.outputs)
      if (p.values[size_t(v)].dtype != DType::F32)
        fail(p, k, std::string(name) + " operands must be f32");
  }
  if (in.op == Op::AllReduce &&
      p.values[size_t(in.inputs[0])].numel() !=
          p.values[size_t(in.outputs[0])].numel())
    fail(p, k, "AllReduce input and output differ in element count");
  if (in.op == Op::AllGather || in.op == Op::ReduceScatter) {
    int64_t a = p.values[size_t(in.inputs[0])].numel();
    int64_t b = p.values[size_t(in.outputs[0])].numel();
    if (in.op == Op::ReduceScatter)
      std::swap(a, b);
    if (a <= 0 || b % a != 0)
      fail(p, k, std::string(name) +
                     " needs the larger operand to be a whole multiple of the "
                     "smaller");
  }
}

} // namespace

/// Version 3: one schedule per pipeline rank, micro-batches and chunks in
/// range, every forward and backward of the rank's chunks once per
/// micro-batch, the optimizer step last.
static void validateSchedule(const Plan &plan) {
  if (plan.schedule.empty())
    return;
  int64_t pp = plan.getInt("pp", 1), vpp = plan.getInt("vpp", 1),
          m = plan.getInt("num_microbatches", 1);
  auto bad = [](const std::string &what) {
    throw PlanError("invalid plan: pipeline schedule " + what);
  };
  if (int64_t(plan.schedule.size()) != pp)
    bad("has " + std::to_string(plan.schedule.size()) +
        " ranks but the config says pp=" + std::to_string(pp));
  for (size_t r = 0; r < plan.schedule.size(); ++r) {
    std::vector<int> runs(size_t(2 * m * vpp), 0);
    const auto &steps = plan.schedule[r];
    for (size_t k = 0; k < steps.size(); ++k) {
      const ScheduleStep &st = steps[k];
      if (uint8_t(st.kind) > uint8_t(StepKind::Optimizer))
        bad("has an unknown step kind");
      if (st.kind == StepKind::Optimizer) {
        if (k + 1 != steps.size())
          bad("of rank " + std::to_string(r) + " has steps after its optimizer");
        continue;
      }
      if (st.microbatch < 0 || st.microbatch >= m || st.chunk < 0 ||
          st.chunk >= vpp)
        bad("of rank " + std::to_string(r) + " step " + std::to_string(k) +
            " names micro-batch " + std::to_string(st.microbatch) +
            " chunk " + std::to_string(st.chunk) + " outside m=" +
            std::to_string(m) + ", vpp=" + std::to_string(vpp));
      if (st.kind == StepKind::Forward || st.kind == StepKind::Backward)
        ++runs[size_t((st.microbatch * vpp + st.chunk) * 2 +
                      (st.kind == StepKind::Backward))];
    }
    for (int n : runs)
      if (n != 1)
        bad("of rank " + std::to_string(r) +
            " does not run every forward and backward exactly once");
    if (steps.empty() || steps.back().kind != StepKind::Optimizer)
      bad("of rank " + std::to_string(r) + " does not end with the optimizer");
  }
}

void validate(const Plan &plan) {
  std::vector<int64_t> persistentBytes;
  for (size_t k = 0; k < plan.persistents.size(); ++k) {
    const Persistent &t = plan.persistents[k];
    // Values may run into the tail (below: Grad only).
    persistentBytes.push_back(numelOf(t.shape) * int64_t(dtypeSize(t.dtype)) +
                              t.tailBytes);
    if (t.tailBytes != 0 &&
        (t.role != Role::Grad || t.tailBytes < 0 || t.tailBytes % 4 != 0))
      throw PlanError("invalid plan: '" + t.name + "' has a tail of " +
                      std::to_string(t.tailBytes) +
                      " bytes, which only a gradient can have (a positive "
                      "multiple of 4)");
    if (t.role != Role::Param &&
        (t.param < 0 || size_t(t.param) >= plan.persistents.size() ||
         plan.persistents[t.param].role != Role::Param))
      throw PlanError("invalid plan: persistent '" + t.name +
                      "' refers to a missing parameter");
    // Checkpoints and --dump-grads name state by its parameter: a shape or
    // dtype that differs would write mislabelled tensors.
    if (t.shardDim >= 0) {
      // The local shape must be the full shape with dim shardDim cut into
      // shardGroups chunks, each divided by the same number of ranks.
      bool ok = t.fullShape.size() == t.shape.size() &&
                size_t(t.shardDim) < t.shape.size() && t.shardGroups >= 1 &&
                t.shardGroup >= 0 && t.shardGroup <= 2;
      for (size_t d = 0; ok && d < t.shape.size(); ++d) {
        if (int32_t(d) == t.shardDim)
          // Or zero-padded (one chunk): ceil(full / local) ranks, the
          // padding in the last ones (a vocabulary T does not divide).
          ok = t.shape[d] > 0 && t.shape[d] % t.shardGroups == 0 &&
               (t.fullShape[d] % t.shape[d] == 0 ||
                (t.shardGroups == 1 && t.fullShape[d] > t.shape[d]));
        else
          ok = t.shape[d] == t.fullShape[d];
      }
      if (!ok)
        throw PlanError("invalid plan: shard of '" + t.name +
                        "' does not fit its full shape");
    } else if (!t.fullShape.empty() && t.fullShape != t.shape) {
      throw PlanError("invalid plan: unsharded '" + t.name +
                      "' has a different full shape");
    }
    // A partial gradient: a term per rank of a group, of a parameter that
    // is whole over that group (a split one's gradient is its own part).
    if (t.partialGroup != -1) {
      const Persistent &p = plan.persistents[t.param];
      if (t.role != Role::Grad || t.partialGroup < 0 || t.partialGroup > 2 ||
          t.shardDim >= 0 ||
          (p.shardDim >= 0 && p.shardGroup == t.partialGroup))
        throw PlanError("invalid plan: '" + t.name +
                        "' is partial over group " +
                        std::to_string(t.partialGroup) +
                        ", which only the gradient of a parameter whole over "
                        "that group (0 tensor, 1 data, 2 pipeline) can be");
    }
    // (Distributed optimizer: AdamW moments are data-parallel blocks of
    // their parameter's local shape: shard_dim 0 over group 1; the
    // parameter may itself be a tensor-parallel shard.)
    const Persistent &param = plan.persistents[t.param];
    bool dataShard = (t.role == Role::AdamM || t.role == Role::AdamV) &&
                     t.shardDim == 0 && t.shardGroup == 1 &&
                     param.shardGroup != 1 && t.fullShape == param.shape;
    // A parameter's bf16 copy: BF16 of an F32 parameter, same shard.
    const bool copy = t.role == Role::ParamCopy;
    const DType want = copy ? DType::BF16 : param.dtype;
    if (t.role != Role::Param &&
        ((param.shape != t.shape && !dataShard) || want != t.dtype ||
         (copy && (param.dtype != DType::F32 ||
                   param.shardDim != t.shardDim ||
                   param.shardGroups != t.shardGroups ||
                   param.shardGroup != t.shardGroup ||
                   param.fullShape != t.fullShape))))
      throw PlanError("invalid plan: " + std::string(roleName(t.role)) +
                      " of '" + t.name +
                      "' differs in shape or dtype from its parameter");
  }
  validateSchedule(plan);
  for (const Program &p : plan.programs) {
    if (p.arenaBytes < 0)
      throw PlanError("invalid plan: program '" + p.name +
                      "' has a negative arena size");
    for (size_t v = 0; v < p.values.size(); ++v) {
      const Value &val = p.values[v];
      int64_t bytes = numelOf(val.shape) * int64_t(dtypeSize(val.dtype));
      int64_t cap = 0;
      switch (val.space) {
      case Space::Arena:
        cap = p.arenaBytes;
        break;
      case Space::Persistent:
        if (val.index < 0 || size_t(val.index) >= plan.persistents.size())
          throw PlanError("invalid plan: program '" + p.name + "' value " +
                          std::to_string(v) + " names a missing tensor");
        cap = persistentBytes[val.index];
        break;
      case Space::Input:
      case Space::Output: {
        const auto &ports = val.space == Space::Input ? p.inputs : p.outputs;
        if (val.index < 0 || size_t(val.index) >= ports.size())
          throw PlanError("invalid plan: program '" + p.name + "' value " +
                          std::to_string(v) + " names a missing port");
        const Port &port = ports[val.index];
        cap = numelOf(port.shape) * int64_t(dtypeSize(port.dtype));
        break;
      }
      default:
        throw PlanError("invalid plan: program '" + p.name + "' value " +
                        std::to_string(v) + " has an unknown space");
      }
      if (val.offset < 0 || val.offset + bytes > cap)
        throw PlanError("invalid plan: program '" + p.name + "' value " +
                        std::to_string(v) + " lies outside its buffer");
    }
    for (size_t k = 0; k < p.instrs.size(); ++k) {
      const Instr &in = p.instrs[k];
      if (!opName(in.op))
        fail(p, k, "unknown opcode " + std::to_string(int(in.op)));
      Arity a = arityOf(in.op);
      if ((a.inputs >= 0 && int(in.inputs.size()) != a.inputs) ||
          (a.outputs >= 0 && int(in.outputs.size()) != a.outputs))
        fail(p, k, std::string(opName(in.op)) + " has the wrong operand count");
      for (int32_t v : in.inputs)
        if (v < 0 || size_t(v) >= p.values.size())
          fail(p, k, "operand out of range");
      for (int32_t v : in.outputs)
        if (v < 0 || size_t(v) >= p.values.size())
          fail(p, k, "result out of range");
      for (float f : in.f)
        if (std::isinf(f) && in.op != Op::Fill && in.op != Op::Elementwise)
          fail(p, k, "infinite attribute");
      if (isCollective(in.op))
        validateCollective(p, k, in);
      if (in.op == Op::AdamWMulti)
        validateAdamWMulti(p, k, in);
      if (in.op == Op::MatMul)
        validateMatMul(p, k, in);
      if (in.op == Op::LayerNormGrad)
        validateLayerNormGrad(p, k, in);
    }
  }
}

//===----------------------------------------------------------------------===//
// Binary encoding
//===----------------------------------------------------------------------===//

namespace {

class Writer {
public:
  std::vector<uint8_t> out;
  template <typename T> void pod(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T)); // the build refuses big-endian hosts
    out.insert(out.end(), b, b + sizeof(T));
  }
  void str(const std::string &s) {
    pod<uint32_t>(uint32_t(s.size()));
    out.insert(out.end(), s.begin(), s.end());
  }
  template <typename T> void vec(const std::vector<T> &v) {
    pod<uint32_t>(uint32_t(v.size()));
    for (const T &x : v)
      pod<T>(x);
  }
};

class Reader {
public:
  Reader(const uint8_t *d, size_t n) : data(d), size(n) {}
  template <typename T> T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str() {
    uint32_t n = pod<uint32_t>();
    need(n);
    std::string s(reinterpret_cast<const char *>(data + pos), n);
    pos += n;
    return s;
  }
  template <typename T> std::vector<T> vec() {
    uint32_t n = pod<uint32_t>();
    need(size_t(n) * sizeof(T)); // refuse absurd counts before allocating
    std::vector<T> v(n);
    for (auto &x : v)
      x = pod<T>();
    return v;
  }
  uint32_t count(size_t minBytesEach) {
    uint32_t n = pod<uint32_t>();
    need(size_t(n) * minBytesEach);
    return n;
  }
  bool done() const { return pos == size; }

private:
  void need(size_t n) {
    if (n > size - pos)
      throw PlanError("plan payload is truncated or damaged");
  }
  const uint8_t *data;
  size_t size, pos = 0;
};

uint64_t fnv1a64(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull; // FNV-1a-64 offset basis
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

void writePort(Writer &w, const Port &p) {
  w.str(p.name);
  w.pod<uint8_t>(uint8_t(p.dtype));
  w.vec(p.shape);
}

Port readPort(Reader &r) {
  Port p;
  p.name = r.str();
  p.dtype = DType(r.pod<uint8_t>());
  p.shape = r.vec<int64_t>();
  return p;
}

void checkEnum(bool ok, const char *what) {
  if (!ok)
    throw PlanError(std::string("plan has an unknown ") + what);
}

} // namespace

std::vector<uint8_t> serialize(const Plan &plan) {
  Writer w;
  w.pod<uint32_t>(uint32_t(plan.config.size()));
  for (const auto &[k, v] : plan.config) {
    w.str(k);
    w.str(v);
  }
  w.pod<uint32_t>(uint32_t(plan.persistents.size()));
  for (const Persistent &t : plan.persistents) {
    w.str(t.name);
    w.pod<uint8_t>(uint8_t(t.role));
    w.pod<uint8_t>(uint8_t(t.dtype));
    w.vec(t.shape);
    w.pod<uint8_t>(uint8_t(t.init));
    w.pod<float>(t.initStd);
    w.pod<uint8_t>(t.weightDecay ? 1 : 0);
    w.pod<int32_t>(t.param);
    w.pod<int32_t>(t.shardDim);
    w.pod<int32_t>(t.shardGroups);
    w.pod<int32_t>(t.shardGroup);
    w.vec(t.fullShape);
    w.pod<int32_t>(t.partialGroup);
    w.pod<int64_t>(t.tailBytes);
  }
  w.pod<uint32_t>(uint32_t(plan.programs.size()));
  for (const Program &p : plan.programs) {
    w.str(p.name);
    w.str(p.target);
    w.pod<int32_t>(p.stage);
    w.pod<int64_t>(p.arenaBytes);
    w.pod<uint32_t>(uint32_t(p.inputs.size()));
    for (const Port &port : p.inputs)
      writePort(w, port);
    w.pod<uint32_t>(uint32_t(p.outputs.size()));
    for (const Port &port : p.outputs)
      writePort(w, port);
    w.pod<uint32_t>(uint32_t(p.values.size()));
    for (const Value &v : p.values) {
      w.pod<uint8_t>(uint8_t(v.space));
      w.pod<int32_t>(v.index);
      w.pod<int64_t>(v.offset);
      w.pod<uint8_t>(uint8_t(v.dtype));
      w.vec(v.shape);
    }
    w.pod<uint32_t>(uint32_t(p.instrs.size()));
    for (const Instr &in : p.instrs) {
      w.pod<uint16_t>(uint16_t(in.op));
      w.vec(in.inputs);
      w.vec(in.outputs);
      w.vec(in.i);
      w.vec(in.f);
    }
  }

  w.pod<uint32_t>(uint32_t(plan.schedule.size()));
  for (const auto &steps : plan.schedule) {
    w.pod<uint32_t>(uint32_t(steps.size()));
    for (const ScheduleStep &st : steps) {
      w.pod<uint8_t>(uint8_t(st.kind));
      w.pod<int32_t>(st.microbatch);
      w.pod<int32_t>(st.chunk);
    }
  }

  std::vector<uint8_t> file;
  Writer h;
  h.out.assign(kMagic, kMagic + 8);
  h.pod<uint32_t>(kVersion);
  h.pod<uint32_t>(0);
  h.pod<uint64_t>(w.out.size());
  h.pod<uint64_t>(fnv1a64(w.out.data(), w.out.size()));
  file = std::move(h.out);
  file.insert(file.end(), w.out.begin(), w.out.end());
  return file;
}

Plan deserialize(const uint8_t *data, size_t size) {
  constexpr size_t kHeader = 8 + 4 + 4 + 8 + 8;
  if (size < 8 || std::memcmp(data, kMagic, 8) != 0)
    throw PlanError("not a mega plan (bad magic number)");
  if (size < kHeader)
    throw PlanError("plan file is truncated (header incomplete)");
  Reader hr(data + 8, kHeader - 8);
  uint32_t version = hr.pod<uint32_t>();
  hr.pod<uint32_t>();
  uint64_t payload = hr.pod<uint64_t>();
  uint64_t sum = hr.pod<uint64_t>();
  if (version != kVersion)
    throw PlanError("plan format version " + std::to_string(version) +
                    " is not supported (this build reads version " +
                    std::to_string(kVersion) + ")");
  if (payload != size - kHeader)
    throw PlanError("plan file is truncated: header says " +
                    std::to_string(payload) + " payload bytes, file has " +
                    std::to_string(size - kHeader));
  if (fnv1a64(data + kHeader, payload) != sum)
    throw PlanError("plan file is corrupted (checksum mismatch)");

  Reader r(data + kHeader, payload);
  Plan plan;
  for (uint32_t n = r.count(8), k = 0; k < n; ++k) {
    std::string key = r.str();
    plan.config[key] = r.str();
  }
  for (uint32_t n = r.count(16), k = 0; k < n; ++k) {
    Persistent t;
    t.name = r.str();
    uint8_t role = r.pod<uint8_t>();
    checkEnum(role <= uint8_t(Role::ParamCopy), "tensor role");
    t.role = Role(role);
    uint8_t dt = r.pod<uint8_t>();
    checkEnum(dt <= uint8_t(DType::BF16), "dtype");
    t.dtype = DType(dt);
    t.shape = r.vec<int64_t>();
    uint8_t init = r.pod<uint8_t>();
    checkEnum(init <= uint8_t(Init::Normal), "initialiser");
    t.init = Init(init);
    t.initStd = r.pod<float>();
    t.weightDecay = r.pod<uint8_t>() != 0;
    t.param = r.pod<int32_t>();
    t.shardDim = r.pod<int32_t>();
    t.shardGroups = r.pod<int32_t>();
    t.shardGroup = r.pod<int32_t>();
    t.fullShape = r.vec<int64_t>();
    t.partialGroup = r.pod<int32_t>();
    t.tailBytes = r.pod<int64_t>();
    plan.persistents.push_back(std::move(t));
  }
  for (uint32_t n = r.count(16), k = 0; k < n; ++k) {
    Program p;
    p.name = r.str();
    p.target = r.str();
    p.stage = r.pod<int32_t>();
    p.arenaBytes = r.pod<int64_t>();
    for (uint32_t m = r.count(9), j = 0; j < m; ++j)
      p.inputs.push_back(readPort(r));
    for (uint32_t m = r.count(9), j = 0; j < m; ++j)
      p.outputs.push_back(readPort(r));
    for (uint32_t m = r.count(18), j = 0; j < m; ++j) {
      Value v;
      uint8_t space = r.pod<uint8_t>();
      checkEnum(space <= uint8_t(Space::Output), "value space");
      v.space = Space(space);
      v.index = r.pod<int32_t>();
      v.offset = r.pod<int64_t>();
      uint8_t dt = r.pod<uint8_t>();
      checkEnum(dt <= uint8_t(DType::BF16), "dtype");
      v.dtype = DType(dt);
      v.shape = r.vec<int64_t>();
      p.values.push_back(std::move(v));
    }
    for (uint32_t m = r.count(18), j = 0; j < m; ++j) {
      Instr in;
      in.op = Op(r.pod<uint16_t>());
      in.inputs = r.vec<int32_t>();
      in.outputs = r.vec<int32_t>();
      in.i = r.vec<int64_t>();
      in.f = r.vec<float>();
      p.instrs.push_back(std::move(in));
    }
    plan.programs.push_back(std::move(p));
  }
  for (uint32_t n = r.count(4), k = 0; k < n; ++k) {
    std::vector<ScheduleStep> steps;
    for (uint32_t m = r.count(9), j = 0; j < m; ++j) {
      ScheduleStep st;
      uint8_t kind = r.pod<uint8_t>();
      checkEnum(kind <= uint8_t(StepKind::Optimizer), "schedule step kind");
      st.kind = StepKind(kind);
      st.microbatch = r.pod<int32_t>();
      st.chunk = r.pod<int32_t>();
      steps.push_back(st);
    }
    plan.schedule.push_back(std::move(steps));
  }
  if (!r.done())
    throw PlanError("plan payload has trailing bytes (damaged file)");
  validate(plan);
  return plan;
}

void writePlanFile(const Plan &plan, const std::string &path) {
  std::vector<uint8_t> bytes = serialize(plan);
  std::ofstream os(path, std::ios::binary | std::ios::trunc);
  if (!os)
    throw PlanError("cannot open '" + path + "' for writing");
  os.write(reinterpret_cast<const char *>(bytes.data()),
           std::streamsize(bytes.size()));
  if (!os)
    throw PlanError("cannot write '" + path + "'");
}

Plan readPlanFile(const std::string &path) {
  // A plan is a regular file of bounded size: refusing anything else keeps
  // a device such as /dev/zero from being read forever.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw PlanError("cannot open plan '" + path + "': not a regular file");
  constexpr uintmax_t kMaxPlanBytes = uintmax_t(1) << 32;
  uintmax_t fileSize = std::filesystem::file_size(path, ec);
  if (ec || fileSize > kMaxPlanBytes)
    throw PlanError("cannot open plan '" + path + "': unreadable or larger "
                    "than 4 GiB");
  std::ifstream is(path, std::ios::binary);
  if (!is)
    throw PlanError("cannot open plan '" + path + "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(is)),
                             std::istreambuf_iterator<char>());
  try {
    return deserialize(bytes.data(), bytes.size());
  } catch (const PlanError &e) {
    throw PlanError(path + ": " + e.what());
  }
}

} // namespace mega::plan

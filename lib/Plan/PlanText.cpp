//===- PlanText.cpp - The plan's text form (megac --emit plan-text) -------===//
//
// One line per persistent tensor and per instruction, for people and for
// FileCheck; docs/plan-format.md describes what each field means. Nothing
// reads this form back.
//
//===----------------------------------------------------------------------===//
#include "mega/Plan/Plan.h"

#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>

namespace mega::plan {

namespace {

std::string shapeStr(const std::vector<int64_t> &s, DType t) {
  std::ostringstream os;
  for (int64_t d : s)
    os << d << "x";
  os << dtypeName(t);
  return os.str();
}

const char *spaceName(Space s) {
  switch (s) {
  case Space::Arena:
    return "arena";
  case Space::Persistent:
    return "persistent";
  case Space::Input:
    return "in";
  case Space::Output:
    return "out";
  }
  return "?";
}

} // namespace

void printPlan(const Plan &plan, std::ostream &os) {
  os << "mega plan v" << kVersion << "\n";
  os << "config {\n";
  for (const auto &[k, v] : plan.config)
    os << "  " << k << " = " << v << "\n";
  os << "}\n";
  int64_t paramCount = 0;
  for (const Persistent &t : plan.persistents)
    if (t.role == Role::Param) {
      int64_t n = 1;
      for (int64_t d : t.shape)
        n *= d;
      paramCount += n;
    }
  os << "persistents " << plan.persistents.size() << " (" << paramCount
     << " parameters) {\n";
  for (size_t k = 0; k < plan.persistents.size(); ++k) {
    const Persistent &t = plan.persistents[k];
    os << "  %p" << k << " " << roleName(t.role) << " \"" << t.name << "\" "
       << shapeStr(t.shape, t.dtype);
    if (t.role == Role::Param) {
      os << " init="
         << (t.init == Init::Zeros ? "zeros"
             : t.init == Init::Ones ? "ones"
                                    : "normal(" + std::to_string(t.initStd) +
                                          ")");
      if (t.weightDecay)
        os << " decay";
      if (t.shardDim >= 0) {
        os << " shard(dim=" << t.shardDim << " of ";
        for (size_t d = 0; d < t.fullShape.size(); ++d)
          os << (d ? "x" : "") << t.fullShape[d];
        if (t.shardGroups > 1)
          os << ", groups=" << t.shardGroups;
        size_t d = size_t(t.shardDim);
        if (t.fullShape[d] % t.shape[d] != 0)
          os << ", padded to "
             << (t.fullShape[d] + t.shape[d] - 1) / t.shape[d] * t.shape[d];
        os << ", group=" << t.shardGroup << ")";
      }
    } else {
      os << " of %p" << t.param;
      if (t.partialGroup >= 0)
        os << " partial(group=" << t.partialGroup << ")";
      if (t.tailBytes > 0)
        os << " tail(" << t.tailBytes << " bytes)";
      // A state sharded unlike its parameter (the distributed optimizer's
      // moments: a block of rows per data rank).
      if (t.shardDim >= 0 && t.param >= 0 &&
          size_t(t.param) < plan.persistents.size() &&
          (plan.persistents[size_t(t.param)].shardDim < 0 ||
           plan.persistents[size_t(t.param)].shardGroup != t.shardGroup))
        os << " shard(dim=" << t.shardDim << ", group=" << t.shardGroup
           << ")";
    }
    os << "\n";
  }
  os << "}\n";
  for (const Program &p : plan.programs) {
    os << "program \"" << p.name << "\" target=" << p.target
       << " stage=" << p.stage << " arena=" << p.arenaBytes << " bytes {\n";
    for (size_t k = 0; k < p.inputs.size(); ++k)
      os << "  input " << k << " \"" << p.inputs[k].name << "\" "
         << shapeStr(p.inputs[k].shape, p.inputs[k].dtype) << "\n";
    for (size_t k = 0; k < p.outputs.size(); ++k)
      os << "  output " << k << " \"" << p.outputs[k].name << "\" "
         << shapeStr(p.outputs[k].shape, p.outputs[k].dtype) << "\n";
    for (size_t v = 0; v < p.values.size(); ++v) {
      const Value &val = p.values[v];
      os << "  %" << v << " = " << spaceName(val.space);
      if (val.space != Space::Arena)
        os << "[" << val.index << "]";
      os << "+" << val.offset << " : " << shapeStr(val.shape, val.dtype)
         << "\n";
    }
    for (const Instr &in : p.instrs) {
      os << "  ";
      for (size_t k = 0; k < in.outputs.size(); ++k)
        os << (k ? ", %" : "%") << in.outputs[k];
      os << (in.outputs.empty() ? "" : " = ") << opName(in.op) << "(";
      for (size_t k = 0; k < in.inputs.size(); ++k)
        os << (k ? ", %" : "%") << in.inputs[k];
      os << ")";
      if (!in.i.empty()) {
        os << " i=[";
        for (size_t k = 0; k < in.i.size(); ++k)
          os << (k ? "," : "") << in.i[k];
        os << "]";
      }
      if (!in.f.empty()) {
        os << " f=[";
        for (size_t k = 0; k < in.f.size(); ++k)
          os << (k ? "," : "") << std::setprecision(9) << in.f[k];
        os << "]";
      }
      os << "\n";
    }
    os << "}\n";
  }
  for (size_t r = 0; r < plan.schedule.size(); ++r) {
    os << "schedule rank " << r << " {\n";
    for (const ScheduleStep &st : plan.schedule[r]) {
      os << "  " << stepKindName(st.kind);
      if (st.kind != StepKind::Optimizer)
        os << " mb=" << st.microbatch << " chunk=" << st.chunk;
      os << "\n";
    }
    os << "}\n";
  }
}

} // namespace mega::plan

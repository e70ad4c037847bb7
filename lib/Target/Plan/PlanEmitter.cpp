//===- PlanEmitter.cpp - Kernel-level IR -> mega::plan::Plan
//---------------===//
//
// Algorithm:
//  1. Config: the module's hyper-parameters, the driver's options, and
//     flops_per_token (needs the parameter count, so after step 2).
//  2. Persistents: walk every function for `mega.param` (first appearance
//     wins; a second one with another shape is an error; `mega.sharding` and
//     `mega.shard_groups` give the tensor-parallel shard fields), then add a
//     Grad per parameter and, for adam, AdamM and AdamV per parameter (they
//     copy the parameter's shard fields), and a ParamCopy per parameter
//     that a `mega.state {role = "param_copy"}` reads.
//  3. Programs, one per function (train, optimizer, eval, predict first):
//     a. ports: each distinct `mega.input` name is an input port, each
//        `mega.output` an output port;
//     b. places: every tensor value is a plan Value. Views and concat parts
//        alias their root (mega/Target/Plan/Placement.h, the rules
//        mega-assign-buffers used) at a byte offset;
//        a root is a persistent tensor (mega.param / mega.state), an input
//        port (mega.input), an output port (the value of a mega.output) or
//        arena memory at the root's `mega.offset` (a kernel result, a
//        concat or a mega.empty);
//     c. instructions: one per `mega.kernel`, inputs = its operands except the
//        last `mega.dests`, outputs = those destinations then its results.
//
//===----------------------------------------------------------------------===//
#include "mega/Target/Plan/PlanEmitter.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Target/Plan/Placement.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

#include <set>

using namespace mlir;

namespace mega {
namespace {

FailureOr<plan::DType> dtypeOf(Operation *at, Type type) {
  Type el = cast<ShapedType>(type).getElementType();
  if (el.isF32())
    return plan::DType::F32;
  if (el.isInteger(32))
    return plan::DType::I32;
  if (el.isBF16())
    return plan::DType::BF16;
  return at->emitError() << "element type " << el
                         << " has no plan dtype (f32, i32, bf16)";
}

FailureOr<std::vector<int64_t>> shapeOf(Operation *at, Type type) {
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || !t.hasStaticShape())
    return at->emitError() << "type " << type
                           << " is not static (run mega-specialize and "
                              "mega-infer-shapes)";
  return std::vector<int64_t>(t.getShape().begin(), t.getShape().end());
}

std::optional<plan::Op> opcodeOf(StringRef name) {
  for (uint16_t k = 0; k <= uint16_t(plan::kLastOp); ++k)
    if (const char *n = plan::opName(plan::Op(k)); n && name == n)
      return plan::Op(k);
  return std::nullopt;
}

class Emitter {
public:
  Emitter(ModuleOp module, const PlanEmitterOptions &options)
      : module(module), options(options) {}

  FailureOr<plan::Plan> run() {
    if (failed(collectParams()))
      return failure();
    addState();
    addConfig();
    SmallVector<func::FuncOp> funcs = programOrder();
    for (func::FuncOp f : funcs) {
      FailureOr<plan::Program> p = emitProgram(f);
      if (failed(p))
        return failure();
      result.programs.push_back(std::move(*p));
    }
    return std::move(result);
  }

private:
  //===--------------------------------------------------------------------===//
  // Steps 1 and 2
  //===--------------------------------------------------------------------===//

  LogicalResult collectParams() {
    WalkResult walk = module.walk([&](ParamOp p) -> WalkResult {
      FailureOr<std::vector<int64_t>> shape = shapeOf(p, p.getType());
      if (failed(shape))
        return WalkResult::interrupt();
      auto it = paramIndex.find(p.getName());
      if (it != paramIndex.end()) {
        if (result.persistents[it->second].shape != *shape)
          return p.emitOpError()
                 << "reads '" << p.getName()
                 << "' with a shape other than its first reader's";
        return WalkResult::advance();
      }
      if (p.getScaledInit())
        return p.emitOpError("scaled_init was not applied (it is resolved "
                             "by mega-unroll inside mega.repeat)");
      plan::Persistent t;
      t.name = p.getName().str();
      t.role = plan::Role::Param;
      t.shape = *shape;
      StringRef init = p.getInit();
      t.init = init == "ones"     ? plan::Init::Ones
               : init == "normal" ? plan::Init::Normal
                                  : plan::Init::Zeros;
      if (p.getStd())
        t.initStd = float(p.getStd()->convertToDouble());
      t.weightDecay = shape->size() >= 2;
      if (failed(shardOf(p, t)))
        return WalkResult::interrupt();
      paramIndex[p.getName()] = result.persistents.size();
      result.persistents.push_back(std::move(t));
      return WalkResult::advance();
    });
    return failure(walk.wasInterrupted());
  }

  /// Tensor-parallel shard of a parameter from its `mega.sharding` (one split
  /// dim over one mesh axis, the plan group of the same number) and
  /// `mega.shard_groups`; the full shape is the local one times the axis size
  /// (`mega.unpadded`: the true size of a zero-padded split dim).
  LogicalResult shardOf(ParamOp p, plan::Persistent &t) {
    auto sharding = p->getAttrOfType<ShardingAttr>("mega.sharding");
    if (!sharding || sharding.isReplicated())
      return success();
    int64_t dim = sharding.getSplitDim();
    if (sharding.isPartial() || dim < 0 || sharding.getDimAxes(dim).size() != 1)
      return p.emitOpError() << "has sharding " << sharding
                             << ", which the plan cannot hold (one dimension "
                                "split over one mesh axis)";
    int64_t axis = sharding.getDimAxes(dim)[0];
    auto mesh = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh");
    if (!mesh || int64_t(mesh.size()) <= axis)
      return p.emitOpError() << "is split over mesh axis " << axis
                             << ", which the module's mega.mesh lacks";
    t.shardDim = int32_t(dim);
    t.shardGroup = int32_t(axis);
    t.shardGroups = 1;
    if (auto g = p->getAttrOfType<IntegerAttr>("mega.shard_groups"))
      t.shardGroups = int32_t(g.getInt());
    t.fullShape = t.shape;
    t.fullShape[dim] *= mesh[axis];
    // Zero-padded along the split dim (a vocabulary T does not divide): the
    // full tensor is the true one; the last ranks hold the padding.
    if (auto u = p->getAttrOfType<IntegerAttr>("mega.unpadded")) {
      if (t.shardGroups != 1 || u.getInt() > t.fullShape[dim] ||
          u.getInt() <= t.fullShape[dim] - t.shape[dim])
        return p.emitOpError() << "is padded to " << t.fullShape[dim]
                               << " from " << u.getInt()
                               << ", which the plan cannot hold (padding "
                                  "must be less than one shard, with no "
                                  "shard groups)";
      t.fullShape[dim] = u.getInt();
    }
    return success();
  }

  void addState() {
    size_t numParams = result.persistents.size();
    auto addRole = [&](plan::Role role, StringRef roleName) {
      for (size_t k = 0; k < numParams; ++k) {
        plan::Persistent t = result.persistents[k];
        t.role = role;
        t.init = plan::Init::Zeros;
        t.initStd = 0;
        t.weightDecay = false;
        t.param = int32_t(k);
        stateIndex[(roleName + ":" + t.name).str()] = result.persistents.size();
        result.persistents.push_back(std::move(t));
      }
    };
    addRole(plan::Role::Grad, "grad");
    // A gradient buffer's bytes past the tensor (mega-ones-column): the
    // largest any of its mega.states asks for.
    module.walk([&](StateOp st) {
      auto tail = st->getAttrOfType<IntegerAttr>(kTailBytesAttr);
      auto found = stateIndex.find(("grad:" + st.getName()).str());
      if (tail && st.getRole() == "grad" && found != stateIndex.end()) {
        int64_t &t = result.persistents[found->second].tailBytes;
        t = std::max(t, tail.getInt());
      }
    });
    // Gradients kept as a term per rank of a group until the optimizer sums
    // them (mega-tensor-grad-bucket).
    if (auto partial =
            module->getAttrOfType<DictionaryAttr>("mega.partial_grads"))
      for (size_t k = numParams; k < result.persistents.size(); ++k)
        if (auto g = partial.getAs<IntegerAttr>(result.persistents[k].name))
          result.persistents[k].partialGroup = int32_t(g.getInt());
    if (options.optimizer == "adam") {
      size_t first = result.persistents.size();
      addRole(plan::Role::AdamM, "adam_m");
      addRole(plan::Role::AdamV, "adam_v");
      // Distributed optimizer: each data rank holds its block of rows of the
      // moments (mega-data-parallel checked that D divides every dim 0).
      auto axis =
          module->getAttrOfType<IntegerAttr>("mega.distributed_optimizer");
      auto mesh = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh");
      if (axis && mesh && int64_t(mesh.size()) > axis.getInt())
        for (size_t k = first; k < result.persistents.size(); ++k) {
          plan::Persistent &t = result.persistents[k];
          t.shardDim = 0;
          t.shardGroups = 1;
          t.shardGroup = int32_t(axis.getInt());
          t.fullShape = t.shape;
          t.shape[0] /= mesh[axis.getInt()];
        }
    }
    // The bf16 copies that mega-bf16-weight-copies gave some parameters:
    // the parameter's shape and shard, in parameter order.
    std::set<size_t> copied;
    module.walk([&](StateOp st) {
      auto param = paramIndex.find(st.getName());
      if (st.getRole() == "param_copy" && param != paramIndex.end())
        copied.insert(param->second); // (else reported where it is read)
    });
    for (size_t k : copied) {
      std::string key = "param_copy:" + result.persistents[k].name;
      plan::Persistent t = result.persistents[k];
      t.role = plan::Role::ParamCopy;
      t.dtype = plan::DType::BF16;
      t.init = plan::Init::Zeros;
      t.initStd = 0;
      t.weightDecay = false;
      t.param = int32_t(k);
      stateIndex[key] = int32_t(result.persistents.size());
      result.persistents.push_back(std::move(t));
    }
  }

  void addConfig() {
    auto hparams = module->getAttrOfType<DictionaryAttr>(kHParamsAttr);
    llvm::StringMap<int64_t> h;
    if (hparams)
      for (NamedAttribute a : hparams)
        if (auto i = dyn_cast<IntegerAttr>(a.getValue())) {
          h[a.getName()] = i.getInt();
          result.config[a.getName().str()] = std::to_string(i.getInt());
        }
    for (const auto &[k, v] : options.config)
      result.config[k] = v;
    int64_t n = 0;
    for (const plan::Persistent &t : result.persistents)
      if (t.role == plan::Role::Param) {
        int64_t e = 1;
        // The full tensor's count: flops are the model's, not a rank's.
        for (int64_t d : t.shardDim >= 0 ? t.fullShape : t.shape)
          e *= d;
        n += e;
      }
    if (h.count("layers") && h.count("hidden") && h.count("seq"))
      result.config["flops_per_token"] =
          std::to_string(6 * n + 12 * h["layers"] * h["hidden"] * h["seq"]);
  }

  SmallVector<func::FuncOp> programOrder() {
    SmallVector<func::FuncOp> funcs;
    for (StringRef name : {"train", "optimizer", "eval", "predict"})
      if (auto f = module.lookupSymbol<func::FuncOp>(name))
        funcs.push_back(f);
    for (auto f : module.getOps<func::FuncOp>())
      if (!llvm::is_contained(funcs, f) && !f.getBody().empty())
        funcs.push_back(f);
    return funcs;
  }

  //===--------------------------------------------------------------------===//
  // Step 3
  //===--------------------------------------------------------------------===//

  struct ProgramState {
    plan::Program program;
    llvm::StringMap<int32_t> inputPorts;
    llvm::DenseMap<Value, int32_t> outputPortOf; ///< root -> output port
    Placement placement;
    llvm::DenseMap<Value, int32_t> values;
  };

  FailureOr<plan::Program> emitProgram(func::FuncOp f) {
    ProgramState s;
    s.program.name = f.getSymName().str();
    // Pipeline programs (mega-pipeline-split): "forward"/"backward" of a
    // virtual stage, "optimizer" of a pipeline rank.
    if (auto name = f->getAttrOfType<StringAttr>("mega.program"))
      s.program.name = name.str();
    if (auto stage = f->getAttrOfType<IntegerAttr>("mega.stage"))
      s.program.stage = int32_t(stage.getInt());
    s.program.target = options.target;
    auto arena = f->getAttrOfType<IntegerAttr>("mega.arena_bytes");
    if (!arena)
      return f.emitError("has no mega.arena_bytes (run mega-assign-buffers)");
    s.program.arenaBytes = arena.getInt();
    if (!f.getBody().hasOneBlock())
      return f.emitError("is not a straight-line program");
    Block &block = f.getBody().front();

    // Alias links, as mega-assign-buffers made them.
    Operation *conflict = s.placement.build(block);
    if (conflict)
      return conflict->emitOpError("has a part that is placed twice");
    // 3a. Ports.
    for (Operation &op : block) {
      if (auto in = dyn_cast<InputOp>(op)) {
        if (s.inputPorts.count(in.getName()))
          continue;
        FailureOr<plan::Port> port = portOf(in, in.getName(), in.getType());
        if (failed(port))
          return failure();
        s.inputPorts[in.getName()] = s.program.inputs.size();
        s.program.inputs.push_back(std::move(*port));
      } else if (auto out = dyn_cast<OutputOp>(op)) {
        FailureOr<plan::Port> port =
            portOf(out, out.getName(), out.getValue().getType());
        if (failed(port))
          return failure();
        Value root = s.placement.portRootOf(out.getValue());
        if (!root || s.outputPortOf.count(root))
          return out.emitOpError("value must be a kernel result placed "
                                 "nowhere else (run mega-lower-to-kernels)");
        s.outputPortOf[root] = s.program.outputs.size();
        s.program.outputs.push_back(std::move(*port));
      }
    }
    // 3c. Instructions (3b on demand).
    for (Operation &op : block) {
      if (isa<ParamOp, StateOp, InputOp, OutputOp, ViewOp, ConcatOp, EmptyOp,
              func::ReturnOp>(op))
        continue;
      auto k = dyn_cast<KernelOp>(op);
      if (!k)
        return op.emitOpError("is not at kernel level (run "
                              "mega-lower-to-kernels)");
      std::optional<plan::Op> opcode = opcodeOf(k.getKernel());
      if (!opcode)
        return k.emitOpError() << "unknown kernel '" << k.getKernel() << "'";
      int64_t dests = 0;
      if (auto d = k->getAttrOfType<IntegerAttr>("mega.dests"))
        dests = d.getInt();
      int64_t numInputs = int64_t(k.getInputs().size()) - dests;
      if (dests < 0 || numInputs < 0)
        return k.emitOpError("mega.dests exceeds the operand count");
      plan::Instr instr;
      instr.op = *opcode;
      for (auto [j, v] : llvm::enumerate(k.getInputs())) {
        FailureOr<int32_t> idx = valueIndex(s, v);
        if (failed(idx))
          return failure();
        (int64_t(j) < numInputs ? instr.inputs : instr.outputs).push_back(*idx);
      }
      for (Value r : k.getResults()) {
        FailureOr<int32_t> idx = valueIndex(s, r);
        if (failed(idx))
          return failure();
        instr.outputs.push_back(*idx);
      }
      instr.i.assign(k.getI().begin(), k.getI().end());
      instr.f.assign(k.getF().begin(), k.getF().end());
      s.program.instrs.push_back(std::move(instr));
    }
    return std::move(s.program);
  }

  FailureOr<plan::Port> portOf(Operation *op, StringRef name, Type type) {
    FailureOr<plan::DType> dtype = dtypeOf(op, type);
    FailureOr<std::vector<int64_t>> shape = shapeOf(op, type);
    if (failed(dtype) || failed(shape))
      return failure();
    plan::Port port;
    port.name = name.str();
    port.dtype = *dtype;
    port.shape = std::move(*shape);
    return port;
  }

  /// 3b: the plan Value of `v`, created on first use.
  FailureOr<int32_t> valueIndex(ProgramState &s, Value v) {
    auto it = s.values.find(v);
    if (it != s.values.end())
      return it->second;
    Operation *at = v.getDefiningOp() ? v.getDefiningOp()
                                      : v.getParentBlock()->getParentOp();
    FailureOr<plan::DType> dtype = dtypeOf(at, v.getType());
    FailureOr<std::vector<int64_t>> shape = shapeOf(at, v.getType());
    if (failed(dtype) || failed(shape))
      return failure();
    plan::Value pv;
    pv.dtype = *dtype;
    pv.shape = std::move(*shape);
    auto [root, offset] = s.placement.rootOf(v);
    pv.offset = offset;
    Operation *def = root.getDefiningOp();
    if (auto p = dyn_cast_or_null<ParamOp>(def)) {
      pv.space = plan::Space::Persistent;
      pv.index = paramIndex.lookup(p.getName());
    } else if (auto st = dyn_cast_or_null<StateOp>(def)) {
      auto found = stateIndex.find((st.getRole() + ":" + st.getName()).str());
      if (found == stateIndex.end())
        return st.emitOpError()
               << "reads " << st.getRole() << " of '" << st.getName()
               << "', which the plan does not hold (no mega.param of that "
                  "name, or not an adam plan)";
      pv.space = plan::Space::Persistent;
      pv.index = found->second;
    } else if (auto in = dyn_cast_or_null<InputOp>(def)) {
      pv.space = plan::Space::Input;
      pv.index = s.inputPorts.lookup(in.getName());
    } else if (def && isa<KernelOp, ConcatOp, EmptyOp>(def)) {
      auto port = s.outputPortOf.find(root);
      if (port != s.outputPortOf.end()) {
        pv.space = plan::Space::Output;
        pv.index = port->second;
      } else {
        auto offsets = def->getAttrOfType<DenseI64ArrayAttr>("mega.offset");
        unsigned r = cast<OpResult>(root).getResultNumber();
        if (!offsets || offsets.size() <= r || offsets[r] < 0)
          return def->emitOpError(
              "result has no arena offset (run mega-assign-buffers)");
        pv.space = plan::Space::Arena;
        pv.offset += offsets[r];
      }
    } else {
      return at->emitError("value has no place in the plan (not at kernel "
                           "level)");
    }
    int32_t idx = s.program.values.size();
    s.program.values.push_back(std::move(pv));
    s.values[v] = idx;
    return idx;
  }

  ModuleOp module;
  const PlanEmitterOptions &options;
  plan::Plan result;
  llvm::StringMap<int32_t> paramIndex;
  llvm::StringMap<int32_t> stateIndex; ///< "role:name" -> persistent
};

} // namespace

FailureOr<plan::Plan> emitPlan(ModuleOp module,
                               const PlanEmitterOptions &options) {
  return Emitter(module, options).run();
}

} // namespace mega

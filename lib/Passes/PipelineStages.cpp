//===- PipelineStages.cpp - Which pipeline stage computes each op --------===//
//
// `mega-pipeline-stages{stages=S}` decides the pipeline cut of @train's
// forward program: it gives every op a `mega.stage = s` (0 <= s < S) and
// records which layers each stage holds. mega-autodiff copies an op's stage
// onto the ops of its adjoint, and mega-pipeline-split then cuts the
// differentiated program into one forward and one backward program per
// stage. With S = P*V, virtual stage s lives on pipeline rank s mod P
// (Megatron's interleaved layout); this pass does not need to know P.
//
// Algorithm:
//  1. Units. A parameter named `<prefix>.<i>.<rest>` (mega-unroll's names)
//     belongs to layer i, unit i+1. Walking @train in program order, an op
//     with operands gets the largest unit among its operands' units and its
//     parameters' units; a parameter outside the layers is unit 0 (the
//     embedding) while no layer has been seen yet, unit L+1 (final norm,
//     output layer, loss) afterwards. Ops without operands (mega.param,
//     mega.input, mega.fill) and ops computed from them alone have no unit:
//     they are cloned next to each stage that uses them (step 4).
//  2. Cost of a unit: the FLOPs of its ops from their shapes (2*M*N*K per
//     matmul, one per result element otherwise).
//  3. Partition: the L layers into S contiguous, non-empty groups; the
//     embedding joins group 0 and the final unit group S-1. Dynamic
//     programming minimises the most expensive group (ties: the earliest
//     cut). S > L is an error naming both values.
//  4. Annotate: `mega.stage` on every op with a unit; every op without a
//     unit is cloned once per stage that uses it (so each stage reads its own
//     `mega.param`: the tied wte then gets one gradient accumulation per
//     stage) and the clone gets that stage. The module gets
//     `mega.pipeline_layers`, one string per stage ("embedding h.0 h.1").
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/MapVector.h"

namespace mega {
#define GEN_PASS_DEF_MEGAPIPELINESTAGES
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

constexpr int64_t kNoUnit = -1;

/// Layer index and prefix of a parameter name `<prefix>.<i>.<rest>`.
std::optional<std::pair<std::string, int64_t>> layerOf(StringRef name) {
  auto [prefix, rest] = name.split('.');
  auto [index, tail] = rest.split('.');
  int64_t i;
  if (prefix.empty() || tail.empty() || index.getAsInteger(10, i) || i < 0)
    return std::nullopt;
  return std::make_pair(prefix.str(), i);
}

int64_t numel(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r || !r.hasStaticShape())
    return 0;
  return r.getNumElements();
}

/// Step 2: a shape-based FLOP count (what the runtime's kernels do).
double flopsOf(Operation *op) {
  if (auto mm = dyn_cast<MatMulOp>(op)) {
    auto a = cast<RankedTensorType>(mm.getOperand(0).getType());
    int64_t k = a.getShape()[a.getRank() - (mm.getTransposeA() ? 2 : 1)];
    return 2.0 * double(numel(mm.getType())) * double(k);
  }
  double n = 0;
  for (Value r : op->getResults())
    n += double(numel(r.getType()));
  return n;
}

struct MegaPipelineStages
    : mega::impl::MegaPipelineStagesBase<MegaPipelineStages> {
  using MegaPipelineStagesBase::MegaPipelineStagesBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (stages < 1) {
      module.emitError() << "mega-pipeline-stages: stages must be >= 1, got "
                         << int64_t(stages);
      return signalPassFailure();
    }
    auto train = module.lookupSymbol<func::FuncOp>("train");
    if (!train || !train.getBody().hasOneBlock()) {
      module.emitError("mega-pipeline-stages: needs a single-block "
                       "func.func @train (run mega-unroll first)");
      return signalPassFailure();
    }
    Block &body = train.getBody().front();

    // Step 1.
    llvm::DenseMap<Value, int64_t> unitOf;
    llvm::DenseMap<Operation *, int64_t> opUnit;
    int64_t layers = 0;
    std::string prefix;
    for (ParamOp p : body.getOps<ParamOp>())
      if (auto l = layerOf(p.getName())) {
        layers = std::max(layers, l->second + 1);
        prefix = l->first;
      }
    if (layers == 0) {
      train.emitOpError("has no repeated layers (parameters named "
                        "`<prefix>.<i>.<name>`) to cut into pipeline stages");
      return signalPassFailure();
    }
    int64_t finalUnit = layers + 1, highest = 0;
    for (Operation &op : body.without_terminator()) {
      if (op.getNumRegions()) {
        op.emitOpError("has regions: run mega-unroll first");
        return signalPassFailure();
      }
      int64_t unit = kNoUnit;
      for (Value v : op.getOperands()) {
        if (auto p = v.getDefiningOp<ParamOp>()) {
          auto l = layerOf(p.getName());
          unit = std::max(unit, l ? l->second + 1 : highest > 0 ? finalUnit : 0);
        } else if (auto it = unitOf.find(v); it != unitOf.end()) {
          unit = std::max(unit, it->second);
        }
      }
      if (unit == kNoUnit)
        continue;
      highest = std::max(highest, unit);
      opUnit[&op] = unit;
      for (Value r : op.getResults())
        unitOf[r] = unit;
    }

    // Step 2.
    SmallVector<double> cost(finalUnit + 1, 0.0);
    for (auto [op, unit] : opUnit)
      cost[unit] += flopsOf(op);

    // Step 3.
    int64_t S = stages;
    if (S > layers) {
      module.emitError() << "mega-pipeline-stages: " << S
                         << " pipeline stages (--pp x --vpp) are more than "
                            "layers="
                         << layers;
      return signalPassFailure();
    }
    SmallVector<int64_t> first = partition(cost, layers, S);
    auto stageOfUnit = [&](int64_t unit) {
      if (unit == 0)
        return int64_t(0);
      if (unit == finalUnit)
        return S - 1;
      int64_t s = 0;
      while (s + 1 < S && unit - 1 >= first[s + 1])
        ++s;
      return s;
    };

    // Step 4.
    OpBuilder b(module.getContext());
    for (auto [op, unit] : opUnit)
      op->setAttr("mega.stage", b.getI64IntegerAttr(stageOfUnit(unit)));
    SmallVector<Operation *> unplaced;
    for (Operation &op : body.without_terminator())
      if (!opUnit.count(&op))
        unplaced.push_back(&op);
    // Users first, so that a chain of unit-less ops is cloned from its end.
    for (Operation *op : llvm::reverse(unplaced)) {
      llvm::MapVector<int64_t, SmallVector<OpOperand *>> usesByStage;
      for (OpOperand &use : op->getUses()) {
        Operation *user = use.getOwner();
        auto s = user->getAttrOfType<IntegerAttr>("mega.stage");
        if (!s) {
          if (isa<func::ReturnOp>(user))
            continue;
          user->emitOpError("uses a value no pipeline stage computes");
          return signalPassFailure();
        }
        usesByStage[s.getInt()].push_back(&use);
      }
      if (usesByStage.empty()) {
        if (!isa<OutputOp>(op) && op->getNumResults())
          continue; // dead; canonicalisation removes it
        op->emitOpError("is not used by any pipeline stage");
        return signalPassFailure();
      }
      bool firstStage = true;
      for (auto &[s, uses] : usesByStage) {
        Operation *copy = op;
        if (!firstStage) {
          b.setInsertionPoint(op);
          copy = b.clone(*op);
          for (OpOperand *use : uses)
            use->set(copy->getResult(
                cast<OpResult>(use->get()).getResultNumber()));
        }
        copy->setAttr("mega.stage", b.getI64IntegerAttr(s));
        firstStage = false;
      }
    }
    // Outputs follow their value.
    for (OutputOp out : body.getOps<OutputOp>())
      if (auto d = out.getValue().getDefiningOp())
        if (auto s = d->getAttrOfType<IntegerAttr>("mega.stage"))
          out->setAttr("mega.stage", s);

    SmallVector<Attribute> names;
    for (int64_t s = 0; s < S; ++s) {
      std::string text = s == 0 ? "embedding" : "";
      int64_t end = s + 1 < S ? first[s + 1] : layers;
      for (int64_t l = first[s]; l < end; ++l)
        text += (text.empty() ? "" : " ") + prefix + "." + std::to_string(l);
      if (s == S - 1)
        text += " final";
      names.push_back(b.getStringAttr(text));
    }
    module->setAttr("mega.pipeline_layers", b.getArrayAttr(names));
  }

  /// Step 3: first[s] = the first layer of group s (first[0] = 0).
  static SmallVector<int64_t> partition(ArrayRef<double> cost, int64_t L,
                                        int64_t S) {
    // layerCost[l] = cost of layer l, with the embedding and the final unit
    // counted in the first and last layer's group by the DP below.
    auto groupCost = [&](int64_t a, int64_t e, bool firstGroup,
                         bool lastGroup) {
      double c = 0;
      for (int64_t l = a; l < e; ++l)
        c += cost[l + 1];
      if (firstGroup)
        c += cost[0];
      if (lastGroup)
        c += cost[L + 1];
      return c;
    };
    const double inf = std::numeric_limits<double>::infinity();
    // best[s][e]: the smallest maximum over groups 0..s covering layers
    // [0, e); from[s][e]: where group s starts.
    std::vector<std::vector<double>> best(S, std::vector<double>(L + 1, inf));
    std::vector<std::vector<int64_t>> from(S, std::vector<int64_t>(L + 1, 0));
    for (int64_t e = 1; e <= L; ++e)
      best[0][e] = groupCost(0, e, true, S == 1 && e == L);
    for (int64_t s = 1; s < S; ++s)
      for (int64_t e = s + 1; e <= L; ++e)
        for (int64_t a = s; a < e; ++a) {
          double c = std::max(best[s - 1][a],
                              groupCost(a, e, false, s == S - 1 && e == L));
          if (c < best[s][e]) {
            best[s][e] = c;
            from[s][e] = a;
          }
        }
    SmallVector<int64_t> first(S, 0);
    int64_t e = L;
    for (int64_t s = S - 1; s > 0; --s) {
      first[s] = from[s][e];
      e = first[s];
    }
    return first;
  }
};

} // namespace

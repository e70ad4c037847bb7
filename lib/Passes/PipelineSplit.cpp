//===- PipelineSplit.cpp - Per-stage forward, backward, optimizer programs ===//
//
// `mega-pipeline-split{ranks=P}` turns the differentiated @train, whose ops
// carry `mega.stage` (mega-pipeline-stages, copied onto the adjoints by
// mega-autodiff), into the programs the runtime's pipeline schedule calls:
// `@forward_s` and `@backward_s` for every virtual stage s of S, and
// `@optimizer_r` for every pipeline rank r (s runs on rank s mod P).
//
// Algorithm:
//  1. Phases: the ops of @train up to its `mega.output "loss"` are the
//     forward, the ops after it (what mega-autodiff appended) the backward.
//  2. Walk @train in order; clone each op into the program (stage, phase).
//     Ops without operands (mega.param, mega.input, mega.fill) are cloned on
//     demand into every program that reads them: the runtime feeds `tokens`
//     and `targets` to a backward from the micro-batch's stash.
//  3. A value read by a program other than its producer's becomes an output
//     port `pipe.N` of the producer and an input port of the same name of the
//     reader. Allowed crossings: forward s -> forward s+1 (an activation,
//     sent), backward s -> backward s-1 (its gradient, sent), forward s ->
//     backward s (stashed for the micro-batch), and an input of forward s
//     read by backward s (stashed too). Anything else (a value skipping a
//     stage) is an error naming both stages.
//  4. The optimizer: a parameter lives on the ranks whose stages read it.
//     @optimizer_r is @optimizer without the updates of other ranks'
//     parameters; the gradient norm keeps this rank's gradients and gets
//     `mega.pipeline_counted` (1 = counted here, 0 = a copy counted on the
//     parameter's first rank), so the lowered GradNorm sums over the
//     pipeline ranks with each parameter once. A parameter on several ranks
//     (the tied wte, on the first and last) gets its gradient summed over
//     mesh axis 2 (`mega.all_reduce ... axes [2]`; Megatron's embedding
//     group) before the norm and the update, so both copies stay identical;
//     ranks without it contribute zeros (`mega.output "tied.<name>"`, which
//     the runtime ignores, keeps that all-reduce alive). A data-parallel
//     bucket (mega-data-parallel ran before) is rebuilt from the gradients
//     this rank still updates, so it carries no other stage's gradients.
//  5. @train, @optimizer, @eval and @predict are erased (eval and predict
//     need every stage: compile them with --pp 1). The mesh gets axis 2 = P.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringSet.h"

#include <memory>
#include <set>

namespace mega {
#define GEN_PASS_DEF_MEGAPIPELINESPLIT
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

constexpr int64_t kPipelineAxis = 2;
/// Mesh axis of the data-parallel ranks (mega-data-parallel's buckets).
constexpr int64_t kDataAxis = 1;

/// One program being built.
struct Program {
  func::FuncOp func;
  int64_t stage = 0;
  bool backward = false;
  IRMapping map;
  /// Values read from another program (input ports), by port name.
  llvm::DenseSet<Value> imported;
  /// Values other programs read (output ports), in order.
  llvm::MapVector<Value, std::string> exported;
  Operation *terminator = nullptr;
};

func::FuncOp makeFunc(ModuleOp module, StringRef name, StringRef program,
                      int64_t stage) {
  OpBuilder b(module.getContext());
  b.setInsertionPointToEnd(module.getBody());
  auto f = b.create<func::FuncOp>(
      NameLoc::get(b.getStringAttr(name)), name, b.getFunctionType({}, {}));
  f->setAttr("mega.program", b.getStringAttr(program));
  f->setAttr("mega.stage", b.getI64IntegerAttr(stage));
  b.setInsertionPointToStart(f.addEntryBlock());
  b.create<func::ReturnOp>(f.getLoc());
  return f;
}

ArrayAttr dimsOf(OpBuilder &b, RankedTensorType t) {
  SmallVector<Attribute> dims;
  for (int64_t d : t.getShape())
    dims.push_back(b.getI64IntegerAttr(d));
  return b.getArrayAttr(dims);
}

void eraseDeadOps(func::FuncOp f) {
  bool changed = true;
  while (changed) {
    changed = false;
    SmallVector<Operation *> ops;
    for (Operation &op : f.getBody().front().without_terminator())
      ops.push_back(&op);
    for (Operation *op : llvm::reverse(ops))
      if (isOpTriviallyDead(op)) {
        op->erase();
        changed = true;
      }
  }
}

struct MegaPipelineSplit
    : mega::impl::MegaPipelineSplitBase<MegaPipelineSplit> {
  using MegaPipelineSplitBase::MegaPipelineSplitBase;

  ModuleOp module;
  int64_t S = 1;
  std::vector<std::shared_ptr<Program>> programs; // [2*s + backward]
  llvm::DenseMap<Operation *, Program *> programOf;
  llvm::DenseMap<Value, std::string> portNames;

  Program &prog(int64_t s, bool backward) {
    return *programs[size_t(2 * s + (backward ? 1 : 0))];
  }

  std::string portName(Value v) {
    auto it = portNames.find(v);
    if (it != portNames.end())
      return it->second;
    std::string name = "pipe." + std::to_string(portNames.size());
    portNames[v] = name;
    return name;
  }

  static std::string describe(const Program &p) {
    return std::string(p.backward ? "backward" : "forward") + " of stage " +
           std::to_string(p.stage);
  }

  /// Step 2/3: `v` as seen inside `p`, cloning or importing it.
  FailureOr<Value> valueIn(Program &p, Value v, Operation *user) {
    if (Value m = p.map.lookupOrNull(v))
      return m;
    Operation *def = v.getDefiningOp();
    if (!def)
      return user->emitOpError("reads a block argument; @train must have none");
    OpBuilder b(p.terminator);
    if (def->getNumOperands() == 0 && def->getNumRegions() == 0) {
      b.setInsertionPointToStart(&p.func.getBody().front());
      Operation *copy = b.clone(*def);
      copy->removeAttr("mega.stage");
      for (auto [from, to] : llvm::zip(def->getResults(), copy->getResults()))
        p.map.map(from, to);
      return p.map.lookup(v);
    }
    Program *q = programOf.lookup(def);
    if (!q)
      return def->emitOpError("has no pipeline stage (run "
                              "mega-pipeline-stages before mega-autodiff)");
    bool ok = false;
    if (!q->backward && !p.backward)
      ok = p.stage == q->stage + 1;
    else if (q->backward && p.backward)
      ok = p.stage == q->stage - 1;
    else if (!q->backward && p.backward)
      ok = p.stage == q->stage ||
           (p.stage == q->stage + 1 &&
            prog(p.stage, false).imported.contains(v));
    if (!ok)
      return user->emitOpError()
             << "in the " << describe(p) << " reads a value of the "
             << describe(*q)
             << "; pipeline programs may only pass values to the next stage "
                "or to their own backward";
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type || !type.hasStaticShape())
      return user->emitOpError("passes a value without a static shape "
                               "between pipeline stages");
    std::string name = portName(v);
    q->exported.insert({v, name});
    b.setInsertionPointToStart(&p.func.getBody().front());
    auto in = b.create<InputOp>(def->getLoc(), type, b.getStringAttr(name),
                                dimsOf(b, type),
                                TypeAttr::get(type.getElementType()));
    p.map.map(v, in.getResult());
    p.imported.insert(v);
    return in.getResult();
  }

  LogicalResult splitTrain(func::FuncOp train) {
    Block &body = train.getBody().front();
    for (int64_t s = 0; s < S; ++s)
      for (bool backward : {false, true}) {
        auto p = std::make_shared<Program>();
        std::string kind = backward ? "backward" : "forward";
        p->func = makeFunc(module, kind + "_" + std::to_string(s), kind, s);
        p->stage = s;
        p->backward = backward;
        p->terminator = p->func.getBody().front().getTerminator();
        programs.push_back(std::move(p));
      }
    bool backward = false;
    for (Operation &op : body.without_terminator()) {
      if (op.getNumOperands() == 0 && op.getNumRegions() == 0)
        continue; // step 2: cloned where read
      auto stage = op.getAttrOfType<IntegerAttr>("mega.stage");
      if (!stage || stage.getInt() < 0 || stage.getInt() >= S)
        return op.emitOpError("has no pipeline stage below ")
               << S << " (run mega-pipeline-stages before mega-autodiff)";
      Program &p = prog(stage.getInt(), backward);
      for (Value v : op.getOperands())
        if (failed(valueIn(p, v, &op)))
          return failure();
      OpBuilder b(p.terminator);
      Operation *copy = b.clone(op, p.map);
      copy->removeAttr("mega.stage");
      programOf[&op] = &p;
      if (auto out = dyn_cast<OutputOp>(op); out && out.getName() == "loss")
        backward = true;
    }
    if (!backward)
      return train.emitOpError("has no mega.output \"loss\"");
    for (auto &p : programs) {
      OpBuilder b(p->terminator);
      for (auto &[v, name] : p->exported)
        b.create<OutputOp>(v.getLoc(), name, p->map.lookup(v));
    }
    return success();
  }

  /// Step 4 for rank r.
  LogicalResult splitOptimizer(func::FuncOp opt, int64_t r,
                               const llvm::StringMap<std::set<int64_t>> &ranks,
                               ArrayRef<RankedTensorType> tiedTypes,
                               ArrayRef<std::string> tiedNames) {
    OpBuilder b(module.getContext());
    b.setInsertionPointToEnd(module.getBody());
    auto f = cast<func::FuncOp>(b.clone(*opt));
    f.setSymName("optimizer_" + std::to_string(r));
    f->setAttr("mega.program", b.getStringAttr("optimizer"));
    f->setAttr("mega.stage", b.getI64IntegerAttr(r));
    Block &body = f.getBody().front();
    auto here = [&](StringRef name) {
      auto it = ranks.find(name);
      return it != ranks.end() && it->second.count(r);
    };
    auto owner = [&](StringRef name) { return *ranks.find(name)->second.begin(); };

    // The parameter each gradient value is the update's gradient of.
    llvm::DenseMap<Value, StringRef> gradOf;
    SmallVector<Operation *> others;
    for (Operation &op : body) {
      StringRef name;
      Value g;
      if (auto a = dyn_cast<AdamWOp>(op))
        name = a.getName(), g = a.getGrad();
      else if (auto s = dyn_cast<SgdOp>(op))
        name = s.getName(), g = s.getGrad();
      else if (auto z = dyn_cast<ZeroGradOp>(op))
        name = z.getName();
      else
        continue;
      if (g)
        gradOf[g] = name;
      if (!here(name))
        others.push_back(&op);
    }
    for (Operation *op : others)
      op->erase();

    // The tied parameters: sum over the pipeline axis, on every rank in the
    // same order (by name) and before the norm, whose pipeline sum follows:
    // collectives of one group must meet in the same order everywhere.
    Operation *normOp = nullptr;
    for (GradNormOp n : body.getOps<GradNormOp>())
      normOp = n;
    for (auto [name, type] : llvm::zip(tiedNames, tiedTypes)) {
      if (here(name)) {
        for (auto &[g, n] : gradOf) {
          if (n != name)
            continue;
          if (normOp)
            b.setInsertionPoint(normOp);
          else
            b.setInsertionPointAfterValue(g);
          auto sum = b.create<AllReduceOp>(g.getLoc(), g,
                                           b.getDenseI64ArrayAttr(
                                               {kPipelineAxis}),
                                           b.getStringAttr("sum"));
          g.replaceAllUsesExcept(sum.getResult(), sum);
          gradOf[sum.getResult()] = name;
          break;
        }
      } else {
        b.setInsertionPoint(normOp ? normOp : body.getTerminator());
        Location loc = f.getLoc();
        Value zero = b.create<FillOp>(loc, type, b.getF64FloatAttr(0.0));
        auto sum = b.create<AllReduceOp>(
            loc, zero, b.getDenseI64ArrayAttr({kPipelineAxis}),
            b.getStringAttr("sum"));
        b.create<OutputOp>(loc, "tied." + name, sum.getResult());
      }
    }

    // The gradient norm: this rank's gradients, each parameter once.
    for (GradNormOp norm : llvm::make_early_inc_range(body.getOps<GradNormOp>())) {
      llvm::DenseSet<int64_t> shards;
      if (auto s = norm->getAttrOfType<DenseI64ArrayAttr>("mega.sharded_grads"))
        shards.insert(s.asArrayRef().begin(), s.asArrayRef().end());
      SmallVector<Value> grads;
      SmallVector<int64_t> sharded, counted;
      for (auto [k, g] : llvm::enumerate(norm.getGrads())) {
        Value use = g;
        // After the tied sum the update reads the sum; so does the norm.
        for (auto &[v, n] : gradOf)
          if (auto ar = v.getDefiningOp<AllReduceOp>();
              ar && ar.getX() == g)
            use = v;
        auto it = gradOf.find(use);
        if (it == gradOf.end())
          return norm.emitOpError() << "gradient #" << k
                                    << " is read by no update";
        if (!here(it->second))
          continue;
        if (shards.count(int64_t(k)))
          sharded.push_back(int64_t(grads.size()));
        counted.push_back(owner(it->second) == r ? 1 : 0);
        grads.push_back(use);
      }
      b.setInsertionPoint(norm);
      auto fresh =
          b.create<GradNormOp>(norm.getLoc(), grads, norm.getMaxNormAttr());
      if (!sharded.empty())
        fresh->setAttr("mega.sharded_grads", b.getDenseI64ArrayAttr(sharded));
      fresh->setAttr("mega.pipeline_counted", b.getDenseI64ArrayAttr(counted));
      // The groups the norm's sums meet over besides (the distributed
      // optimizer's data blocks: `mega.shard_axis`, `mega.data_blocks`).
      for (StringRef keep : {"mega.shard_axis", "mega.data_blocks"})
        if (Attribute a = norm->getAttr(keep))
          fresh->setAttr(keep, a);
      norm.replaceAllUsesWith(fresh.getResults());
      norm.erase();
    }
    eraseDeadOps(f);
    trimDataBuckets(f);
    return success();
  }

  /// Step 4, last: a data-parallel bucket (mega-data-parallel's concat of
  /// flattened gradients, all-reduced over mesh axis 1, read back through
  /// views) may hold gradients of other ranks' parameters, whose views died
  /// with their updates. Rebuild it from the parts still read, so a rank
  /// neither sends other stages' (zero) gradients nor keeps them allocated.
  static void trimDataBuckets(func::FuncOp f) {
    SmallVector<AllReduceOp> reduces;
    f.walk([&](AllReduceOp r) {
      if (r.getAxes().size() == 1 && r.getAxes()[0] == kDataAxis &&
          r.getX().getDefiningOp<ConcatOp>())
        reduces.push_back(r);
    });
    OpBuilder b(f.getContext());
    for (AllReduceOp r : reduces) {
      auto concat = r.getX().getDefiningOp<ConcatOp>();
      // Byte offset of each part in the bucket, and which parts are read.
      SmallVector<int64_t> offsets;
      int64_t bytes = 0;
      for (Value part : concat.getOperands()) {
        offsets.push_back(bytes);
        bytes += cast<RankedTensorType>(part.getType()).getNumElements() * 4;
      }
      auto partOf = [&](int64_t offset) {
        return int64_t(llvm::upper_bound(offsets, offset) - offsets.begin()) -
               1;
      };
      SmallVector<ViewOp> views;
      llvm::SmallDenseSet<int64_t> read;
      bool onlyViews = true;
      for (Operation *user : r->getUsers()) {
        auto v = dyn_cast<ViewOp>(user);
        if (!v) {
          onlyViews = false;
          break;
        }
        views.push_back(v);
        read.insert(partOf(v.getOffset()));
      }
      if (!onlyViews || read.size() == concat.getNumOperands())
        continue;
      SmallVector<Value> kept;
      llvm::DenseMap<int64_t, int64_t> newOffset;
      int64_t total = 0;
      for (auto [k, part] : llvm::enumerate(concat.getOperands())) {
        if (!read.count(int64_t(k)))
          continue;
        newOffset[int64_t(k)] = total * 4;
        total += cast<RankedTensorType>(part.getType()).getNumElements();
        kept.push_back(part);
      }
      b.setInsertionPoint(r);
      Type type = RankedTensorType::get({total}, b.getF32Type());
      Value packed = kept.front();
      if (kept.size() > 1)
        packed = b.create<ConcatOp>(concat.getLoc(), type, kept,
                                    b.getI64IntegerAttr(0));
      auto reduced = b.create<AllReduceOp>(r.getLoc(), type, packed,
                                           r.getAxesAttr(), r.getKindAttr());
      for (ViewOp v : views) {
        int64_t k = partOf(v.getOffset());
        b.setInsertionPoint(v);
        auto fresh = b.create<ViewOp>(
            v.getLoc(), v.getType(), reduced.getResult(),
            b.getI64IntegerAttr(newOffset[k] + v.getOffset() - offsets[k]));
        v.getResult().replaceAllUsesWith(fresh.getResult());
        v.erase();
      }
      r.erase();
    }
    eraseDeadOps(f);
  }

  void runOnOperation() override {
    module = getOperation();
    auto layers = module->getAttrOfType<ArrayAttr>("mega.pipeline_layers");
    if (!layers) {
      module.emitError("mega-pipeline-split: no mega.pipeline_layers (run "
                       "mega-pipeline-stages first)");
      return signalPassFailure();
    }
    S = int64_t(layers.size());
    if (ranks < 1 || S % ranks != 0) {
      module.emitError() << "mega-pipeline-split: " << S
                         << " stages are not a multiple of ranks=" << ranks;
      return signalPassFailure();
    }
    auto train = module.lookupSymbol<func::FuncOp>("train");
    auto opt = module.lookupSymbol<func::FuncOp>("optimizer");
    if (!train || !opt || !train.getBody().hasOneBlock()) {
      module.emitError("mega-pipeline-split: needs @train and @optimizer");
      return signalPassFailure();
    }
    // Step 4's ownership, before @train goes.
    llvm::StringMap<std::set<int64_t>> ranksOf;
    llvm::StringMap<RankedTensorType> typeOf;
    for (ParamOp p : train.getBody().front().getOps<ParamOp>())
      if (auto s = p->getAttrOfType<IntegerAttr>("mega.stage")) {
        ranksOf[p.getName()].insert(s.getInt() % ranks);
        typeOf[p.getName()] = cast<RankedTensorType>(p.getType());
      }
    SmallVector<std::string> tiedNames;
    SmallVector<RankedTensorType> tiedTypes;
    for (auto &[name, rs] : ranksOf)
      if (rs.size() > 1)
        tiedNames.push_back(name.str());
    llvm::sort(tiedNames);
    for (const std::string &name : tiedNames)
      tiedTypes.push_back(typeOf[name]);

    if (failed(splitTrain(train)))
      return signalPassFailure();
    for (int64_t r = 0; r < ranks; ++r)
      if (failed(splitOptimizer(opt, r, ranksOf, tiedTypes, tiedNames)))
        return signalPassFailure();

    // Step 5.
    for (StringRef name : {"train", "optimizer", "eval", "predict"})
      if (Operation *f = module.lookupSymbol(name))
        f->erase();
    SmallVector<int64_t> mesh;
    if (auto m = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh"))
      mesh.assign(m.asArrayRef().begin(), m.asArrayRef().end());
    while (mesh.size() < 3)
      mesh.push_back(1);
    mesh[kPipelineAxis] = ranks;
    OpBuilder b(module.getContext());
    module->setAttr("mega.mesh", b.getDenseI64ArrayAttr(mesh));
  }
};

} // namespace

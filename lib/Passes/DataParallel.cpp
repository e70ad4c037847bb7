//===- DataParallel.cpp - Bucketed gradient all-reduces over the data axis ===//
//
// `mega-data-parallel{size=D bucket-mb=N}` makes @optimizer start by summing
// every gradient over the data-parallel ranks (mesh axis 1), Megatron's DDP
// with gradient buckets. Each rank's accumulators hold its share: the loss
// seed is 1/(microbatches*D) (megac passes microbatches*D to
// mega-autodiff), so the sum is the mean gradient of the global batch.
//
// Algorithm:
//  1. size = 1: nothing to do. Otherwise find @optimizer (error when
//     missing) and set the module's `mega.mesh` to [T, D]: T = the existing
//     mesh's axis 0 (tensor parallel) or 1, axis 1 = D (axes beyond are kept).
//  2. The gradients are the `mega.state {role = "grad"}` ops of @optimizer,
//     in program order. Pack them greedily, in that order, into buckets of
//     at most bucket-mb MiB (a gradient larger than that is a bucket alone).
//  3. Per bucket, after its last gradient read: flatten each gradient
//     (`mega.reshape` to 1-D; none for rank 1), `mega.concat` them along 0
//     (not for a bucket of one), one `mega.all_reduce ... axes [1]` (sum),
//     and per gradient a `mega.view` of the reduced bucket at its byte
//     offset with its own type.
//  4. Every other use of a gradient read (grad_norm, adamw, sgd) now uses
//     its view: the update, the norm and the clipping see the global
//     gradient, identical on every data rank.
//
// With `overlap` (megac's default), instead of steps 3-4:
//  2'. The gradients are ordered by where @train's backward finishes them
//      (the last `mega.accumulate_grad` of each) before packing, so the
//      first bucket is the first ready (the last layers' gradients).
//  3'. In @train, right after the bucket's last accumulate_grad, one
//      `mega.grad_bucket_start [names] axes [1]`: the runtime starts the
//      bucket's all-reduce there on a step's last micro-batch, so it runs
//      while the backward of the earlier layers goes on.
//      After mega-pipeline-split (the module has @optimizer_r and
//      @backward_s instead of @optimizer and @train), 2'-4' run per rank r:
//      its optimizer's gradients, finished in the backwards of its stages
//      (s mod P = r) taken from the highest stage down, the order in which
//      the last micro-batch runs them.
//  4'. In @optimizer, after the last gradient read and in the order the
//      buckets start, one `mega.grad_bucket_wait` of each bucket's
//      gradients; its results replace their uses. Lowered to
//      AllReduceStart / AllReduceWait instructions whose operands are the
//      gradient accumulators.
//
// Lowering (mega-lower-to-kernels): the concat stays (contiguous parts; the
// gradients are copied into the bucket), the all-reduce is one AllReduce
// instruction {group 1 (data), sum}, the views are free.
//
// With `distributed-optimizer` (ZeRO-1), instead of steps 2-4:
//  5. Refused: `mega.sgd` (no state to shard), a gradient whose leading dim
//     D does not divide (the error names the parameter and the sizes).
//  6. Each gradient read is `mega.reduce_scatter ... axes [1] {dim = 0}`: this
//     rank's block of rows of the global gradient (one per gradient, no
//     buckets: the blocks must stay whole per parameter for the update).
//  7. `mega.grad_norm` gets `mega.sharded_grads` = all of them and
//     `mega.shard_axis = 1`: the squares of the blocks are summed over the
//     data ranks, so the norm (and the clipping) are the global ones. With
//     tensor parallelism (mesh [T > 1, D]) the tensor shard flags stay and
//     `mega.data_blocks = 1` says every input is also a data block: the
//     sums meet over the data ranks, then the shards' over the tensor ranks.
//     (Gradients are the tensor-parallel local ones: D divides their local
//     leading dim, a moment is a block of a shard.)
//  8. Each `mega.adamw` gets `mega.data_shard = 1`: mega-lower-to-kernels
//     makes it update this rank's block of the parameter with block-sized
//     moments and all-gather the parameter; the module gets
//     `mega.distributed_optimizer = 1` so that the plan's AdamW moments are
//     data-parallel shards (shard_dim 0, group 1).
//
// With `distributed-optimizer` and `overlap` (megac's default), steps 5-8,
// then 2'-4' on the reduce-scattered gradients (Megatron's distributed
// optimizer with --overlap-grad-reduce):
//  9. Each bucket's `mega.grad_bucket_start` and `mega.grad_bucket_wait` get
//     `scatter`: the start reduce-scatters every gradient of the bucket
//     (each on its own, along dim 0), the wait's results are the blocks and
//     replace the step-6 reduce_scatters, which go. A module that already
//     has `mega.distributed_optimizer` skips steps 5-8: with --pp megac runs
//     the pass before mega-pipeline-split without `overlap` (the split keeps
//     the reduce_scatters and the norm's attributes on each rank) and again
//     after it with `overlap`, rank by rank.
//
//===----------------------------------------------------------------------===//
#include "Buckets.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringMap.h"

namespace mega {
#define GEN_PASS_DEF_MEGADATAPARALLEL
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// Mesh axis of the data-parallel ranks (plan group 1, ParallelGroup::Data).
constexpr int64_t kDataAxis = 1;

struct MegaDataParallel
    : mega::impl::MegaDataParallelBase<MegaDataParallel> {
  using MegaDataParallelBase::MegaDataParallelBase;

  /// Step 1: mega.mesh = [T, D, ...].
  void setMesh(ModuleOp module) {
    SmallVector<int64_t> mesh;
    if (auto m = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh"))
      mesh.assign(m.asArrayRef().begin(), m.asArrayRef().end());
    if (mesh.empty())
      mesh.push_back(1);
    if (mesh.size() < 2)
      mesh.push_back(size);
    else
      mesh[kDataAxis] = size;
    module->setAttr("mega.mesh",
                    DenseI64ArrayAttr::get(module.getContext(), mesh));
  }

  // Steps 5-8.
  LogicalResult distribute(ModuleOp module, func::FuncOp opt) {
    auto mesh = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh");
    bool tensorParallel = mesh && mesh[0] > 1;
    SmallVector<StateOp> grads;
    WalkResult w = opt.walk([&](Operation *op) {
      if (auto sgd = dyn_cast<SgdOp>(op)) {
        module.emitError("--use-distributed-optimizer needs --optimizer adam "
                         "(sgd has no state to shard)");
        return WalkResult::interrupt();
      }
      if (auto s = dyn_cast<StateOp>(op); s && s.getRole() == "grad")
        grads.push_back(s);
      return WalkResult::advance();
    });
    if (w.wasInterrupted())
      return failure();
    OpBuilder b(module.getContext());
    auto axes = b.getDenseI64ArrayAttr({kDataAxis});
    for (StateOp g : grads) {
      auto type = cast<RankedTensorType>(g.getType());
      if (!type.hasStaticShape() || type.getDimSize(0) % size != 0)
        // (On the module: the model's location, one line.)
        return module.emitError() << "--use-distributed-optimizer: --dp "
                             << int64_t(size)
                             << " does not divide the leading dim of '"
                             << g.getName() << "' (" << type.getDimSize(0)
                             << ")";
      SmallVector<int64_t> shape(type.getShape());
      shape[0] /= size;
      b.setInsertionPointAfter(g);
      auto block = b.create<ReduceScatterOp>(
          g.getLoc(), RankedTensorType::get(shape, b.getF32Type()),
          g.getResult(), axes, 0);
      g.getResult().replaceAllUsesExcept(block, block);
    }
    Attribute axis = b.getI64IntegerAttr(kDataAxis);
    opt.walk([&](Operation *op) {
      if (auto n = dyn_cast<GradNormOp>(op)) {
        if (tensorParallel) {
          // The tensor-parallel shard flags stay; the blocks meet over the
          // data ranks first.
          n->setAttr("mega.data_blocks", axis);
        } else {
          SmallVector<int64_t> all;
          for (int64_t k = 0, e = n.getGrads().size(); k < e; ++k)
            all.push_back(k);
          n->setAttr("mega.sharded_grads", b.getDenseI64ArrayAttr(all));
          n->setAttr("mega.shard_axis", axis);
        }
      }
      if (isa<AdamWOp>(op))
        op->setAttr("mega.data_shard", axis);
    });
    module->setAttr("mega.distributed_optimizer", axis);
    return success();
  }

  /// Step 2's packing: greedily, in the given order, buckets of at most
  /// bucket-mb MiB (a larger gradient alone).
  FailureOr<SmallVector<SmallVector<StateOp>>> pack(ArrayRef<StateOp> grads) {
    int64_t limit = int64_t(double(bucketMb) * 1024.0 * 1024.0);
    SmallVector<SmallVector<StateOp>> buckets;
    int64_t filled = 0;
    for (StateOp g : grads) {
      auto type = cast<RankedTensorType>(g.getType());
      if (!type.hasStaticShape())
        return g.emitOpError(
            "needs a static shape for the data-parallel all-reduce");
      int64_t bytes = type.getNumElements() * 4;
      if (buckets.empty() || filled + bytes > limit) {
        buckets.emplace_back();
        filled = 0;
      }
      buckets.back().push_back(g);
      filled += bytes;
    }
    return buckets;
  }

  /// Steps 2'-4' for every optimizer program: @optimizer with @train, or,
  /// after mega-pipeline-split, each rank's @optimizer_r with the
  /// @backward_s of its stages (s mod P = r).
  LogicalResult overlapAll(ModuleOp module) {
    if (auto opt = module.lookupSymbol<func::FuncOp>("optimizer")) {
      auto train = module.lookupSymbol<func::FuncOp>("train");
      if (!train)
        return module.emitError("mega-data-parallel: overlap needs a "
                                "func.func @train (run mega-autodiff first)");
      return overlapRank(opt, {train});
    }
    SmallVector<func::FuncOp> opts, backwards;
    for (auto f : module.getOps<func::FuncOp>()) {
      auto kind = f->getAttrOfType<StringAttr>("mega.program");
      if (kind && kind.getValue() == "optimizer")
        opts.push_back(f);
      if (kind && kind.getValue() == "backward")
        backwards.push_back(f);
    }
    if (opts.empty())
      return module.emitError("mega-data-parallel: the module has no "
                              "func.func @optimizer (run mega-optimizer "
                              "first)");
    auto stageOf = [](func::FuncOp f) {
      auto s = f->getAttrOfType<IntegerAttr>("mega.stage");
      return s ? s.getInt() : int64_t(-1);
    };
    int64_t P = int64_t(opts.size());
    for (func::FuncOp opt : opts) {
      // A rank runs its chunks' backwards of the last micro-batch from
      // the highest stage down.
      SmallVector<func::FuncOp> mine;
      for (func::FuncOp f : backwards)
        if (stageOf(f) >= 0 && stageOf(f) % P == stageOf(opt))
          mine.push_back(f);
      llvm::sort(mine, [&](func::FuncOp a, func::FuncOp b) {
        return stageOf(a) > stageOf(b);
      });
      if (mine.empty())
        return opt.emitError("mega-data-parallel: no backward program runs "
                             "on pipeline rank ")
               << stageOf(opt);
      if (failed(overlapRank(opt, mine)))
        return failure();
    }
    return success();
  }

  /// Steps 2'-4' for one optimizer program and the backward programs that
  /// accumulate its gradients, in the order they run.
  LogicalResult overlapRank(func::FuncOp opt, ArrayRef<func::FuncOp> backward) {
    SmallVector<StateOp> grads;
    opt.walk([&](StateOp s) {
      if (s.getRole() == "grad")
        grads.push_back(s);
    });
    // Step 9: the distributed optimizer's gradients, each read by one
    // reduce_scatter over the data axis (step 6).
    DenseMap<Operation *, ReduceScatterOp> blockOf;
    if (distributedOptimizer)
      for (StateOp g : grads) {
        auto r = g->hasOneUse()
                     ? dyn_cast<ReduceScatterOp>(*g->getUsers().begin())
                     : ReduceScatterOp();
        if (!r || r.getDim() != 0 ||
            r.getAxes() != ArrayRef<int64_t>{kDataAxis})
          return g.emitOpError("mega-data-parallel: the distributed "
                               "optimizer's gradient '")
                 << g.getName()
                 << "' is not read by one reduce_scatter over the data axis "
                    "alone";
        blockOf[g] = r;
      }
    // Step 2': where the backward finishes each gradient.
    llvm::StringMap<Operation *> finished;
    DenseMap<Operation *, int64_t> position;
    for (func::FuncOp f : backward)
      f.walk([&](Operation *op) {
        position[op] = int64_t(position.size());
        if (auto a = dyn_cast<AccumulateGradOp>(op))
          finished[a.getName()] = op;
      });
    auto when = [&](StateOp g) {
      Operation *last = finished.lookup(g.getName());
      return last ? position[last] : int64_t(position.size());
    };
    llvm::stable_sort(grads,
                      [&](StateOp a, StateOp b) { return when(a) < when(b); });
    FailureOr<SmallVector<SmallVector<StateOp>>> buckets = pack(grads);
    if (failed(buckets))
      return failure();
    // The waits go after the last gradient read, in the order the buckets
    // start: the first waited for is the first sent.
    Operation *waitAfter = nullptr;
    for (StateOp g : grads)
      if (!waitAfter || waitAfter->isBeforeInBlock(g))
        waitAfter = g;
    OpBuilder b(opt.getContext());
    for (ArrayRef<StateOp> bucket : *buckets) {
      // Step 3': after the bucket's last accumulation (or at the end of
      // the last backward when none accumulates it).
      Operation *ready = nullptr;
      Location loc = StateOp(bucket.front()).getLoc();
      SmallVector<Attribute> names;
      SmallVector<Value> values;
      for (StateOp g : bucket) {
        names.push_back(g.getNameAttr());
        values.push_back(g.getResult());
        Operation *last = finished.lookup(g.getName());
        if (last && (!ready || position[ready] < position[last]))
          ready = last;
      }
      if (ready)
        b.setInsertionPointAfter(ready);
      else
        b.setInsertionPoint(
            func::FuncOp(backward.back()).getBody().front().getTerminator());
      auto start = b.create<GradBucketStartOp>(
          loc, b.getArrayAttr(names), b.getDenseI64ArrayAttr({kDataAxis}));
      // Step 4'.
      b.setInsertionPointAfter(waitAfter);
      if (!distributedOptimizer) {
        auto wait = b.create<GradBucketWaitOp>(loc, ValueRange(values),
                                               ArrayRef<int64_t>{kDataAxis});
        waitAfter = wait;
        for (auto [g, r] : llvm::zip(values, wait.getResults()))
          g.replaceAllUsesExcept(r, wait);
        continue;
      }
      // Step 9.
      start.setScatter(true);
      SmallVector<Type> blocks;
      for (StateOp g : bucket)
        blocks.push_back(blockOf[g].getType());
      auto wait = b.create<GradBucketWaitOp>(
          loc, ValueRange(values), ArrayRef<int64_t>{kDataAxis}, blocks);
      waitAfter = wait;
      for (auto [g, r] : llvm::zip(bucket, wait.getResults())) {
        ReduceScatterOp old = blockOf[g];
        old.getResult().replaceAllUsesWith(r);
        old->erase();
      }
    }
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (size < 1) {
      module.emitError() << "mega-data-parallel: size must be >= 1, got "
                         << int64_t(size);
      return signalPassFailure();
    }
    if (!(bucketMb > 0)) {
      module.emitError() << "mega-data-parallel: bucket-mb must be > 0";
      return signalPassFailure();
    }
    if (size == 1)
      return;
    if (overlap && !distributedOptimizer) {
      setMesh(module);
      if (failed(overlapAll(module)))
        return signalPassFailure();
      return;
    }
    // Step 9: distributed already (before mega-pipeline-split), overlap now.
    bool distributed = module->hasAttr("mega.distributed_optimizer");
    auto opt = module.lookupSymbol<func::FuncOp>("optimizer");
    if (!opt && !(distributedOptimizer && distributed)) {
      module.emitError("mega-data-parallel: the module has no func.func "
                       "@optimizer (run mega-optimizer first)");
      return signalPassFailure();
    }
    setMesh(module);
    if (distributedOptimizer) {
      if (!distributed && failed(distribute(module, opt)))
        return signalPassFailure();
      if (overlap && failed(overlapAll(module)))
        return signalPassFailure();
      return;
    }

    // Step 2.
    SmallVector<StateOp> grads;
    opt.walk([&](StateOp s) {
      if (s.getRole() == "grad")
        grads.push_back(s);
    });
    FailureOr<SmallVector<SmallVector<StateOp>>> packed = pack(grads);
    if (failed(packed))
      return signalPassFailure();
    SmallVector<SmallVector<StateOp>> &buckets = *packed;

    OpBuilder b(module.getContext());
    // Steps 3 and 4.
    for (SmallVector<StateOp> &bucket : buckets) {
      Operation *last = bucket.front();
      SmallVector<Value> values;
      for (StateOp g : bucket) {
        if (last->isBeforeInBlock(g))
          last = g;
        values.push_back(g.getResult());
      }
      b.setInsertionPointAfter(last);
      allReduceBucket(b, bucket.front().getLoc(), values, kDataAxis);
    }
  }
};

} // namespace

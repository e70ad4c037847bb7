//===- TensorGradBucket.cpp - Replicated gradients summed once a step -----===//
//
// `mega-tensor-grad-bucket` takes the tensor-group sums of the replicated
// parameters' gradients (sequence parallelism: the layer norms, the biases
// added to row blocks and wpe, whose terms come from each rank's block of
// rows) out of every micro-batch's backward and makes them one all-reduce per
// step at the start of the optimizer: Megatron's all-reduce of the
// sequence-parallel (layer-norm) gradients after the backward.
//
// Algorithm:
//  1. T = the module's mega.mesh axis 0; no mesh or T = 1: nothing to do.
//  2. A parameter qualifies when every mega.accumulate_grad of its name adds
//     a `mega.all_reduce ... axes [0]` (sum) whose only reader it is: its
//     accumulator is then the sum over micro-batches of sums over the tensor
//     ranks, which is the sum over the tensor ranks of the accumulated terms.
//     One accumulation of a whole value, or none, and it stays as it is.
//  3. Those all-reduces go; each accumulate_grad adds the rank's term.
//  4. Per optimizer program (@optimizer, or each @optimizer_r after
//     mega-pipeline-split): the qualifying gradients as the update reads
//     them (its grad operand; the data and tensor sums commute, so the
//     data-parallel reduction stays where it is) are summed over axis 0 in
//     one bucket, right after the last of them is defined, in update order:
//     - when they are the accumulators (the gradient read, or the result of
//       the data-parallel bucket's mega.grad_bucket_wait), by one
//       `mega.grad_bucket_wait ... axes [0]` without a start: the
//       accumulators are summed in place, nothing is copied;
//     - otherwise (a view of a data-parallel bucket, a reduce-scattered
//       block of the distributed optimizer, also a `scatter` wait's)
//       packed, all-reduced and viewed back (Buckets.h).
//     The sums replace their uses (grad_norm, the update).
//  5. The module gets `mega.partial_grads` = {name = 0}: the plan marks those
//     gradients partial over the tensor group (--dump-grads sums them).
//
//===----------------------------------------------------------------------===//
#include "Buckets.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringMap.h"

namespace mega {
#define GEN_PASS_DEF_MEGATENSORGRADBUCKET
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// Mesh axis of the tensor-parallel ranks (plan group 0).
constexpr int64_t kTensorAxis = 0;

/// The tensor-axis sum that `a` adds, or null.
AllReduceOp tensorSum(AccumulateGradOp a) {
  auto r = a.getGrad().getDefiningOp<AllReduceOp>();
  if (!r || r.getKind() != "sum" || !r->hasOneUse() ||
      r.getAxes() != ArrayRef<int64_t>{kTensorAxis})
    return {};
  return r;
}

bool isOptimizer(func::FuncOp f) {
  auto kind = f->getAttrOfType<StringAttr>("mega.program");
  return f.getSymName() == "optimizer" ||
         (kind && kind.getValue() == "optimizer");
}

struct MegaTensorGradBucket
    : mega::impl::MegaTensorGradBucketBase<MegaTensorGradBucket> {
  using MegaTensorGradBucketBase::MegaTensorGradBucketBase;

  /// Step 4 for one optimizer program.
  LogicalResult bucket(func::FuncOp opt, const llvm::StringMap<bool> &ok) {
    SmallVector<Value> grads;
    opt.walk([&](Operation *op) {
      StringRef name;
      Value grad;
      if (auto u = dyn_cast<AdamWOp>(op)) {
        name = u.getName();
        grad = u.getGrad();
      } else if (auto u = dyn_cast<SgdOp>(op)) {
        name = u.getName();
        grad = u.getGrad();
      } else {
        return;
      }
      if (ok.lookup(name) && !llvm::is_contained(grads, grad))
        grads.push_back(grad);
    });
    if (grads.empty())
      return success();
    Block &body = opt.getBody().front();
    Operation *last = nullptr;
    for (Value g : grads) {
      Operation *def = g.getDefiningOp();
      if (!def || def->getBlock() != &body)
        return opt.emitError("mega-tensor-grad-bucket: a gradient the "
                             "update reads is not defined in the program's "
                             "body");
      if (!last || last->isBeforeInBlock(def))
        last = def;
    }
    for (Value g : grads)
      for (Operation *user : g.getUsers())
        if (user->getBlock() != &body || !last->isBeforeInBlock(user))
          return user->emitOpError(
              "reads a replicated parameter's gradient before the last of "
              "them is ready: mega-tensor-grad-bucket cannot sum them there");
    OpBuilder b(opt.getContext());
    b.setInsertionPointAfter(last);
    Location loc = grads.front().getLoc();
    auto accumulator = [](Value g) {
      auto wait = g.getDefiningOp<GradBucketWaitOp>();
      return (wait && !wait.getScatter()) ||
             (isa_and_nonnull<StateOp>(g.getDefiningOp()) &&
              g.getDefiningOp<StateOp>().getRole() == "grad");
    };
    if (!llvm::all_of(grads, accumulator)) {
      allReduceBucket(b, loc, grads, kTensorAxis);
      return success();
    }
    auto wait = b.create<GradBucketWaitOp>(loc, ValueRange(grads),
                                           ArrayRef<int64_t>{kTensorAxis});
    for (auto [g, r] : llvm::zip(grads, wait.getResults()))
      g.replaceAllUsesExcept(r, wait);
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Step 1.
    auto mesh = module->getAttrOfType<DenseI64ArrayAttr>("mega.mesh");
    if (!mesh || mesh.empty() || mesh[kTensorAxis] <= 1)
      return;
    // Step 2: name -> every accumulation adds a tensor sum.
    llvm::StringMap<bool> ok;
    SmallVector<AccumulateGradOp> adds;
    module.walk([&](AccumulateGradOp a) {
      bool sum = bool(tensorSum(a));
      auto [it, first] = ok.try_emplace(a.getName(), sum);
      if (!first)
        it->second = it->second && sum;
      adds.push_back(a);
    });
    // Step 3.
    bool any = false;
    for (AccumulateGradOp a : adds) {
      if (!ok.lookup(a.getName()))
        continue;
      AllReduceOp r = tensorSum(a);
      a.getGradMutable().assign(r.getX());
      r.erase();
      any = true;
    }
    if (!any)
      return;
    // Step 4.
    for (auto f : module.getOps<func::FuncOp>())
      if (isOptimizer(f) && failed(bucket(f, ok)))
        return signalPassFailure();
    // Step 5.
    Builder b(module.getContext());
    SmallVector<NamedAttribute> partial;
    for (const auto &e : ok)
      if (e.getValue())
        partial.push_back(
            b.getNamedAttr(e.getKey(), b.getI64IntegerAttr(kTensorAxis)));
    module->setAttr("mega.partial_grads", b.getDictionaryAttr(partial));
  }
};

} // namespace

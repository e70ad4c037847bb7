//===- LowerToKernels.cpp - Every op to a plan instruction
//------------------===//
//
// Maps tensor- and training-level ops to kernel level: `mega.kernel "<Op>"`
// with the `i`/`f` attributes exactly as include/mega/Plan/Plan.h documents
// them, or `mega.view` where only the bytes' interpretation changes.
//
// Kernel-level conventions (docs/compiler.md, "Kernel level"):
//  * Operands are the plan instruction's inputs and results its outputs,
//    except that a kernel with `mega.dests = k` writes its first k outputs in
//    place into its last k operands (persistent state: a gradient
//    accumulator, a parameter); those operands are not inputs.
//  * `mega.param`, `mega.state` and `mega.input` stay: they name persistent
//    tensors and input ports. `mega.output` stays: mega-assign-buffers lets
//    the producer of its value write straight into the port.
//  * `mega.concat` whose parts lie one after the other in the result (the
//    dims before `dim` are all 1) stays: mega-assign-buffers places each part
//    inside the result, so the producers write into it directly.
//
// Algorithm, per function:
//  0. A gradient that is a sum, accumulate_grad(add(a, b)) with the add used
//     nowhere else, becomes accumulate_grad(a) and accumulate_grad(b), so that
//     each term can accumulate straight from its producer (step 1).
//  1. Walk the ops in order and rewrite each (table below); mega.fill is left
//     for step 2 so that elementwise users can take it as a constant.
//       matmul            -> MatMul (a rank-2 `b` folds a's leading dims into
//                            M, or is shared with batch stride 0 when `a` is
//                            transposed; equal leading dims: strided batch)
//       add/sub/mul/scale/gelu/gelu_grad, mega.fused
//                         -> Elementwise (micro-code from generateEwCode;
//                            operands smaller than the output are read with a
//                            period, mega.fill operands become constants)
//       reshape           -> view
//       transpose         -> view if it only moves size-1 dims, else
//                            Transpose on the simplified dims
//       split             -> views when the parts are contiguous, else one
//                            Transpose to [parts, outer, inner] and views
//       concat            -> unchanged when contiguous, else a contiguous
//                            concat of [1, outer, inner] views + Transpose
//       layer_norm(_grad), softmax(_grad), cross_entropy(_grad), embedding
//       (_grad), reduce_sum, grad_norm, adamw, sgd -> the kernel of that name
//                            (grad_norm with `mega.sharded_grads`: i = {0,
//                            one shard flag per gradient})
//       cast              -> Cast {n} (f32 <-> bf16, mega-mixed-precision)
//       flash_attention(_grad) -> Attention / AttentionGrad {B*heads, S, hd,
//                            causal} {scale}: q, k, v, o are contiguous
//                            [B, heads, S, hd] views, lse [B, heads, S]
//       all_reduce        -> AllReduce {axis (= plan group), 0 sum / 1 max}
//       all_gather, reduce_scatter -> AllGather / ReduceScatter {axis}
//                            (along a non-leading dim with a Transpose
//                            between [size, outer, rest] and the dim)
//       copy_to_region    -> view (the identity; its adjoint is explicit)
//       vocab_embedding(_grad), row_max, vocab_cross_entropy(_stats, _grad)
//                         -> the kernel of that name (group = the axis)
//       accumulate_grad   -> the producing MatMul (beta = 1), ReduceSum,
//                            (Vocab)EmbeddingGrad (accumulate = 1) or
//                            Elementwise (one more input and an Add before its
//                            Store) accumulates into the gradient directly when
//                            it has no other use; otherwise an Elementwise add
//                            into it
//       zero_grad         -> Fill 0 into the gradient
//  2. mega.fill ops still used become Fill kernels; unused ones are erased.
//  3. Give every concat part that is not a fresh kernel result (seen through
//     reshape views) or is placed twice, and every output value that is not
//     all of a root buffer nothing else placed (Placement::portRootOf), a Copy.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"
#include "mega/Plan/Plan.h"
#include "mega/Target/Plan/Placement.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <numeric>

namespace mega {
#define GEN_PASS_DEF_MEGALOWERTOKERNELS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// Name of the discardable attribute of a destination-passing kernel.
RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

int64_t product(ArrayRef<int64_t> dims) {
  return std::accumulate(dims.begin(), dims.end(), int64_t(1),
                         std::multiplies<int64_t>());
}

int64_t elementBytes(Value v) {
  return tensorType(v).getElementTypeBitWidth() / 8;
}

/// True when the parts of a split/concat along `dim` of `shape` are
/// contiguous: every dimension before `dim` has size 1.
bool contiguousAlong(ArrayRef<int64_t> shape, int64_t dim) {
  return product(shape.take_front(dim)) == 1;
}

bool isFreshKernelResult(Value v) {
  if (auto k = v.getDefiningOp<KernelOp>())
    return !k->hasAttr(kDestsAttr);
  return bool(v.getDefiningOp<ConcatOp>());
}

class Lowering {
public:
  Lowering(ModuleOp module, func::FuncOp func,
           const llvm::StringMap<ParamOp> &params)
      : func(func), params(params), b(module.getContext()) {}

  uint64_t accumulatesFolded = 0, copies = 0, sumsSplit = 0;

  LogicalResult run() {
    Block &block = func.getBody().front();
    splitAccumulatedSums(block);
    for (Operation &op : llvm::make_early_inc_range(block)) {
      b.setInsertionPoint(&op);
      if (failed(lower(&op)))
        return failure();
    }
    lowerFills(block);
    fixConcatParts(block);
    fixOutputs(block);
    return success();
  }

private:
  //===--------------------------------------------------------------------===//
  // Builders
  //===--------------------------------------------------------------------===//

  KernelOp kernel(Location loc, StringRef name, ValueRange inputs,
                  TypeRange results, ArrayRef<int64_t> i, ArrayRef<float> f) {
    return b.create<KernelOp>(loc, results, b.getStringAttr(name), inputs,
                              b.getDenseI64ArrayAttr(i),
                              b.getDenseF32ArrayAttr(f));
  }

  /// A kernel with no results writing its outputs into `dests`.
  KernelOp kernelInto(Location loc, StringRef name, ValueRange inputs,
                      ValueRange dests, ArrayRef<int64_t> i,
                      ArrayRef<float> f) {
    SmallVector<Value> operands(inputs);
    llvm::append_range(operands, dests);
    KernelOp k = kernel(loc, name, operands, {}, i, f);
    k->setAttr(kDestsAttr, b.getI64IntegerAttr(dests.size()));
    return k;
  }

  Value view(Location loc, Value source, Type type, int64_t offset) {
    return b.create<ViewOp>(loc, type, source, b.getI64IntegerAttr(offset));
  }

  Value state(Location loc, StringRef name, StringRef role, Type type) {
    return b.create<StateOp>(loc, type, b.getStringAttr(name),
                             b.getStringAttr(role));
  }

  /// A reference to parameter `name` in this function (a mega.param cloned
  /// from the function that declares it when this one does not read it).
  FailureOr<Value> paramRef(Operation *user, StringRef name) {
    for (auto p : func.getBody().getOps<ParamOp>())
      if (p.getName() == name)
        return p.getResult();
    auto it = params.find(name);
    if (it == params.end())
      return user->emitOpError() << "updates '" << name
                                 << "', which no function reads with "
                                    "mega.param";
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&func.getBody().front());
    ParamOp decl = it->second;
    return b.clone(*decl)->getResult(0);
  }

  /// The plan group of a collective or vocabulary-parallel op: mesh axis k
  /// is plan group k (0 tensor, 1 data, 2 pipeline); one axis only.
  static FailureOr<int64_t> groupOf(Operation *op, ArrayRef<int64_t> axes) {
    if (axes.size() != 1)
      return op->emitOpError() << "over " << axes.size()
                               << " mesh axes has no kernel (one axis per "
                                  "instruction)";
    return axes[0];
  }

  static void replace(Operation *op, ValueRange values) {
    op->replaceAllUsesWith(values);
    op->erase();
  }

  void replaceByKernel(Operation *op, StringRef name, ValueRange inputs,
                       ArrayRef<int64_t> i, ArrayRef<float> f) {
    KernelOp k = kernel(op->getLoc(), name, inputs, op->getResultTypes(), i, f);
    replace(op, k->getResults());
  }

  //===--------------------------------------------------------------------===//
  // Step 1
  //===--------------------------------------------------------------------===//

  LogicalResult lower(Operation *op) {
    if (isEwSupported(op))
      return lowerElementwise(op);
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case<ParamOp, StateOp, InputOp, OutputOp, FillOp, KernelOp, ViewOp,
              func::ReturnOp>([](auto) { return success(); })
        .Case<FusedOp>([&](auto f) { return lowerFused(f); })
        .Case<MatMulOp>([&](auto m) { return lowerMatMul(m); })
        .Case<ReshapeOp>([&](auto r) {
          replace(r, view(r.getLoc(), r.getX(), r.getType(), 0));
          return success();
        })
        .Case<TransposeOp>([&](auto t) { return lowerTranspose(t); })
        .Case<SplitOp>([&](auto s) { return lowerSplit(s); })
        .Case<ConcatOp>([&](auto c) { return lowerConcat(c); })
        .Case<LayerNormOp>([&](LayerNormOp ln) {
          int64_t cols = tensorType(ln.getX()).getShape().back();
          replaceByKernel(ln, "LayerNorm",
                          {ln.getX(), ln.getWeight(), ln.getBias()},
                          {numElements(ln.getX()) / cols, cols},
                          {float(ln.getEps().convertToDouble())});
          return success();
        })
        .Case<LayerNormGradOp>([&](LayerNormGradOp g) {
          int64_t cols = tensorType(g.getX()).getShape().back();
          replaceByKernel(g, "LayerNormGrad", g->getOperands(),
                          {numElements(g.getX()) / cols, cols, 0}, {});
          return success();
        })
        .Case<SoftmaxOp>([&](SoftmaxOp s) {
          ArrayRef<int64_t> shape = tensorType(s.getX()).getShape();
          int64_t cols = shape.back();
          int64_t seq = shape.size() >= 2 ? shape[shape.size() - 2] : 1;
          replaceByKernel(
              s, "Softmax", {s.getX()},
              {numElements(s.getX()) / cols, cols, s.getCausal() ? 1 : 0, seq},
              {float(s.getScale().convertToDouble())});
          return success();
        })
        .Case<SoftmaxGradOp>([&](SoftmaxGradOp s) {
          int64_t cols = tensorType(s.getY()).getShape().back();
          replaceByKernel(s, "SoftmaxGrad", {s.getY(), s.getDy()},
                          {numElements(s.getY()) / cols, cols},
                          {float(s.getScale().convertToDouble())});
          return success();
        })
        .Case<CrossEntropyOp>([&](CrossEntropyOp c) {
          replaceByKernel(c, "CrossEntropy", {c.getLogits(), c.getTargets()},
                          {numElements(c.getTargets()),
                           tensorType(c.getLogits()).getShape().back()},
                          {});
          return success();
        })
        .Case<CrossEntropyGradOp>([&](CrossEntropyGradOp c) {
          replaceByKernel(c, "CrossEntropyGrad", c->getOperands(),
                          {numElements(c.getTargets()),
                           tensorType(c.getLogits()).getShape().back()},
                          {});
          return success();
        })
        .Case<EmbeddingOp>([&](EmbeddingOp e) {
          ArrayRef<int64_t> table = tensorType(e.getTable()).getShape();
          replaceByKernel(e, "Embedding", {e.getTable(), e.getIds()},
                          {numElements(e.getIds()), table[0], table[1], 0}, {});
          return success();
        })
        .Case<EmbeddingGradOp>([&](EmbeddingGradOp e) {
          ArrayRef<int64_t> table = e.getType().getShape();
          replaceByKernel(e, "EmbeddingGrad", {e.getDy(), e.getIds()},
                          {numElements(e.getIds()), table[0], table[1], 0}, {});
          return success();
        })
        .Case<ReduceSumOp>([&](ReduceSumOp r) {
          int64_t inner = numElements(r.getResult());
          replaceByKernel(r, "ReduceSum", {r.getX()},
                          {numElements(r.getX()) / inner, inner, 0}, {});
          return success();
        })
        .Case<GradNormOp>([&](GradNormOp g) { return lowerGradNorm(g); })
        .Case<CastOp>([&](CastOp c) {
          replaceByKernel(c, "Cast", {c.getX()}, {numElements(c.getX())}, {});
          return success();
        })
        .Case<FlashAttentionOp>([&](FlashAttentionOp a) {
          replaceByKernel(a, "Attention", a->getOperands(),
                          attentionAttrs(a.getQ(), a.getCausal()),
                          {float(a.getScale().convertToDouble())});
          return success();
        })
        .Case<FlashAttentionGradOp>([&](FlashAttentionGradOp a) {
          replaceByKernel(a, "AttentionGrad", a->getOperands(),
                          attentionAttrs(a.getQ(), a.getCausal()),
                          {float(a.getScale().convertToDouble())});
          return success();
        })
        .Case<AllReduceOp>([&](AllReduceOp r) -> LogicalResult {
          // Mesh axis k is plan group k (0 tensor, 1 data, 2 pipeline).
          if (r.getAxes().size() != 1)
            return r.emitOpError()
                   << "over " << r.getAxes().size()
                   << " mesh axes has no kernel (one axis per AllReduce)";
          replaceByKernel(r, "AllReduce", {r.getX()},
                          {r.getAxes()[0], r.getKind() == "max" ? 1 : 0}, {});
          return success();
        })
        .Case<CopyToRegionOp>([&](CopyToRegionOp c) {
          // The identity forward; its adjoint (an all_reduce) is explicit.
          replace(c, view(c.getLoc(), c.getX(), c.getType(), 0));
          return success();
        })
        .Case<AllGatherOp>([&](AllGatherOp g) -> LogicalResult {
          FailureOr<int64_t> group = groupOf(g, g.getAxes());
          if (failed(group))
            return failure();
          return lowerGatherScatter(g, g.getX(), g.getDim(), *group, true);
        })
        .Case<ReduceScatterOp>([&](ReduceScatterOp r) -> LogicalResult {
          FailureOr<int64_t> group = groupOf(r, r.getAxes());
          if (failed(group))
            return failure();
          return lowerGatherScatter(r, r.getX(), r.getDim(), *group, false);
        })
        .Case<VocabEmbeddingOp>([&](VocabEmbeddingOp e) -> LogicalResult {
          FailureOr<int64_t> group = groupOf(e, e.getAxes());
          if (failed(group))
            return failure();
          ArrayRef<int64_t> table = tensorType(e.getTable()).getShape();
          replaceByKernel(e, "VocabEmbedding", {e.getTable(), e.getIds()},
                          {numElements(e.getIds()), table[0], table[1], *group},
                          {});
          return success();
        })
        .Case<VocabEmbeddingGradOp>(
            [&](VocabEmbeddingGradOp e) -> LogicalResult {
              FailureOr<int64_t> group = groupOf(e, e.getAxes());
              if (failed(group))
                return failure();
              ArrayRef<int64_t> table = e.getType().getShape();
              replaceByKernel(
                  e, "VocabEmbeddingGrad", {e.getDy(), e.getIds()},
                  {numElements(e.getIds()), table[0], table[1], 0, *group}, {});
              return success();
            })
        .Case<RowMaxOp>([&](RowMaxOp r) {
          int64_t cols = tensorType(r.getX()).getShape().back();
          replaceByKernel(r, "RowMax", {r.getX()},
                          {numElements(r.getX()) / cols, cols}, {});
          return success();
        })
        .Case<VocabCrossEntropyStatsOp>(
            [&](VocabCrossEntropyStatsOp c) -> LogicalResult {
              FailureOr<int64_t> group = groupOf(c, c.getAxes());
              if (failed(group))
                return failure();
              replaceByKernel(
                  c, "VocabCrossEntropyStats",
                  {c.getLogits(), c.getTargets(), c.getMax()},
                  vocabAttrs(c, numElements(c.getTargets()),
                             tensorType(c.getLogits()).getShape().back(),
                             *group),
                  {});
              return success();
            })
        .Case<VocabCrossEntropyOp>([&](VocabCrossEntropyOp c) {
          // logits and targets are operands for the adjoint only.
          replaceByKernel(c, "VocabCrossEntropy",
                          {c.getMax(), c.getSumExp(), c.getTargetLogit()},
                          {numElements(c.getTargets())}, {});
          return success();
        })
        .Case<VocabCrossEntropyGradOp>(
            [&](VocabCrossEntropyGradOp c) -> LogicalResult {
              FailureOr<int64_t> group = groupOf(c, c.getAxes());
              if (failed(group))
                return failure();
              replaceByKernel(
                  c, "VocabCrossEntropyGrad",
                  {c.getLogits(), c.getTargets(), c.getLse(), c.getDloss()},
                  vocabAttrs(c, numElements(c.getTargets()),
                             tensorType(c.getLogits()).getShape().back(),
                             *group),
                  {});
              return success();
            })
        .Case<AdamWOp>([&](AdamWOp a) { return lowerAdamW(a); })
        .Case<SgdOp>([&](SgdOp s) { return lowerSgd(s); })
        .Case<AccumulateGradOp>([&](auto a) { return lowerAccumulate(a); })
        .Case<ZeroGradOp>([&](ZeroGradOp z) { return lowerZeroGrad(z); })
        .Case<GradBucketStartOp>(
            [&](GradBucketStartOp g) { return lowerBucketStart(g); })
        .Case<GradBucketWaitOp>([&](GradBucketWaitOp w) {
          SmallVector<Value> grads(w.getGrads());
          if (w.getScatter()) {
            // The blocks, fresh values of the optimizer.
            KernelOp k = kernel(w.getLoc(), "ReduceScatterWait", grads,
                                SmallVector<Type>(w.getResultTypes()),
                                {w.getAxes()[0]}, {});
            replace(w, k->getResults());
            return success();
          }
          // In place: the accumulators themselves are the sums.
          kernelInto(w.getLoc(), "AllReduceWait", grads, grads,
                     {w.getAxes()[0], 0}, {});
          replace(w, grads);
          return success();
        })
        .Default([](Operation *op) {
          return op->emitOpError()
                 << "has no kernel lowering (model-level ops must be "
                    "decomposed and shapes static first)";
        });
  }

  /// {B*heads, S, hd, causal} of an attention kernel over q [B, heads, S, hd].
  static SmallVector<int64_t> attentionAttrs(Value q, bool causal) {
    ArrayRef<int64_t> s = tensorType(q).getShape();
    return {s[0] * s[1], s[2], s[3], causal ? 1 : 0};
  }

  /// Elementwise kernel of `prog`; `operands` are the values outside the
  /// kernel that `prog.inputs` stand for (the same values unless fused).
  LogicalResult emitElementwise(Operation *op, const EwProgram &prog,
                                ValueRange operands) {
    EwCode code = generateEwCode(prog);
    if (code.registers > kEwRegisterCount)
      return op->emitOpError()
             << "needs " << code.registers
             << " Elementwise registers; the kernel has " << kEwRegisterCount;
    int64_t n = numElements(op->getResult(0));
    for (Value r : op->getResults())
      if (numElements(r) != n)
        return op->emitOpError("results differ in element count");
    SmallVector<Value> inputs;
    SmallVector<int64_t> i = {n, int64_t(code.loaded.size()),
                              int64_t(op->getNumResults())};
    for (unsigned k : code.loaded) {
      Value v = operands[k];
      int64_t period = numElements(v);
      if (period > n || n % period)
        return op->emitOpError() << "operand " << k << " of " << period
                                 << " elements does not broadcast to " << n;
      inputs.push_back(v);
      i.push_back(period);
    }
    llvm::append_range(i, code.code);
    replaceByKernel(op, "Elementwise", inputs, i, code.constants);
    return success();
  }

  LogicalResult lowerElementwise(Operation *op) {
    EwProgram prog;
    prog.ops.push_back(op);
    for (Value v : op->getOperands())
      if (!llvm::is_contained(prog.inputs, v)) {
        prog.inputs.push_back(v);
        prog.constants.push_back(fillValue(v));
      }
    prog.outputs.push_back(op->getResult(0));
    SmallVector<Value> operands = prog.inputs;
    return emitElementwise(op, prog, operands);
  }

  LogicalResult lowerFused(FusedOp fused) {
    Block &body = fused.getBody().front();
    EwProgram prog;
    for (Operation &op : body.without_terminator()) {
      if (!isEwSupported(&op))
        return op.emitOpError("cannot be computed by the Elementwise kernel");
      prog.ops.push_back(&op);
    }
    for (auto [arg, outer] :
         llvm::zip(body.getArguments(), fused.getInputs())) {
      prog.inputs.push_back(arg);
      prog.constants.push_back(fillValue(outer));
    }
    llvm::append_range(prog.outputs, body.getTerminator()->getOperands());
    return emitElementwise(fused, prog, fused.getInputs());
  }

  LogicalResult lowerMatMul(MatMulOp m) {
    ArrayRef<int64_t> a = tensorType(m.getA()).getShape();
    ArrayRef<int64_t> bs = tensorType(m.getB()).getShape();
    bool ta = m.getTransposeA(), tb = m.getTransposeB();
    size_t ra = a.size(), rb = bs.size();
    int64_t M = ta ? a[ra - 1] : a[ra - 2], K = ta ? a[ra - 2] : a[ra - 1];
    int64_t N = tb ? bs[rb - 2] : bs[rb - 1];
    int64_t lead = product(a.drop_back(2));
    int64_t batch = lead, strideA = M * K, strideB = K * N;
    if (rb == 2) {
      strideB = 0; // one weight for every batch
      if (!ta) {   // [lead*M, K] @ [K, N]: fold the leading dims into M
        M *= lead;
        batch = 1;
      }
    }
    int64_t strideC = M * N;
    if (batch == 1)
      strideA = strideB = strideC = 0;
    replaceByKernel(m, "MatMul", {m.getA(), m.getB()},
                    {batch, M, N, K, ta, tb, ta ? M : K, tb ? K : N, N, strideA,
                     strideB, strideC},
                    {1.0f, 0.0f});
    return success();
  }

  /// Drops size-1 dims and merges dims that stay adjacent, so the Transpose
  /// kernel walks the fewest dims. Returns the simplified (dims, perm).
  static std::pair<SmallVector<int64_t>, SmallVector<int64_t>>
  simplifyTranspose(ArrayRef<int64_t> shape, ArrayRef<int64_t> perm) {
    // Input dims kept, renumbered.
    SmallVector<int64_t> newIndex(shape.size(), -1);
    SmallVector<int64_t> dims;
    for (auto [d, size] : llvm::enumerate(shape))
      if (size != 1) {
        newIndex[d] = dims.size();
        dims.push_back(size);
      }
    SmallVector<int64_t> p;
    for (int64_t d : perm)
      if (newIndex[d] >= 0)
        p.push_back(newIndex[d]);
    // Runs of output dims reading consecutive input dims become one dim.
    SmallVector<SmallVector<int64_t>> runs; // input dims of each output dim
    for (int64_t d : p) {
      if (!runs.empty() && runs.back().back() + 1 == d)
        runs.back().push_back(d);
      else
        runs.push_back({d});
    }
    // Order runs by their first input dim to number the merged input dims.
    SmallVector<unsigned> byInput(runs.size());
    std::iota(byInput.begin(), byInput.end(), 0);
    llvm::sort(byInput, [&](unsigned x, unsigned y) {
      return runs[x].front() < runs[y].front();
    });
    SmallVector<int64_t> mergedDims(runs.size()), mergedPerm(runs.size());
    for (auto [newIn, r] : llvm::enumerate(byInput)) {
      int64_t size = 1;
      for (int64_t d : runs[r])
        size *= dims[d];
      mergedDims[newIn] = size;
      mergedPerm[r] = newIn;
    }
    return {mergedDims, mergedPerm};
  }

  /// A Transpose kernel (or a view when nothing moves) of `x` to `type`.
  Value transpose(Location loc, Value x, ArrayRef<int64_t> perm, Type type) {
    auto [dims, p] = simplifyTranspose(tensorType(x).getShape(), perm);
    bool identity = true;
    for (auto [j, d] : llvm::enumerate(p))
      identity &= int64_t(j) == d;
    if (identity)
      return view(loc, x, type, 0);
    SmallVector<int64_t> i = {int64_t(dims.size())};
    llvm::append_range(i, dims);
    llvm::append_range(i, p);
    return kernel(loc, "Transpose", {x}, {type}, i, {})->getResult(0);
  }

  LogicalResult lowerTranspose(TransposeOp t) {
    replace(t, transpose(t.getLoc(), t.getX(), t.getPerm(), t.getType()));
    return success();
  }

  LogicalResult lowerSplit(SplitOp s) {
    RankedTensorType xt = tensorType(s.getX());
    ArrayRef<int64_t> shape = xt.getShape();
    int64_t dim = s.getDim(), parts = s.getParts();
    Location loc = s.getLoc();
    Value whole = s.getX();
    if (!contiguousAlong(shape, dim)) {
      // [outer, parts, inner] -> [parts, outer, inner]: parts contiguous.
      int64_t outer = product(shape.take_front(dim));
      int64_t inner = xt.getNumElements() / outer / parts;
      Type el = xt.getElementType();
      Value v =
          view(loc, whole, RankedTensorType::get({outer, parts, inner}, el), 0);
      whole = transpose(loc, v, {1, 0, 2},
                        RankedTensorType::get({parts, outer, inner}, el));
    }
    int64_t partBytes = xt.getNumElements() / parts * elementBytes(whole);
    SmallVector<Value> results;
    for (auto [k, r] : llvm::enumerate(s.getResults()))
      results.push_back(view(loc, whole, r.getType(), k * partBytes));
    replace(s, results);
    return success();
  }

  LogicalResult lowerConcat(ConcatOp c) {
    RankedTensorType rt = c.getType();
    ArrayRef<int64_t> shape = rt.getShape();
    int64_t dim = c.getDim();
    if (contiguousAlong(shape, dim))
      return success(); // placed by mega-assign-buffers
    int64_t outer = product(shape.take_front(dim));
    int64_t parts = c.getInputs().size();
    int64_t inner = numElements(c.getInputs().front());
    for (Value in : c.getInputs())
      if (numElements(in) != inner)
        return c.emitOpError("concatenating unequal parts along a "
                             "non-leading dimension has no kernel lowering");
    inner /= outer;
    Location loc = c.getLoc();
    Type el = rt.getElementType();
    auto partType = RankedTensorType::get({1, outer, inner}, el);
    SmallVector<Value> views;
    for (Value in : c.getInputs())
      views.push_back(view(loc, in, partType, 0));
    Value stacked = b.create<ConcatOp>(
        loc, RankedTensorType::get({parts, outer, inner}, el), views,
        b.getI64IntegerAttr(0));
    Value t = transpose(loc, stacked, {1, 0, 2},
                        RankedTensorType::get({outer, parts, inner}, el));
    replace(c, view(loc, t, rt, 0));
    return success();
  }

  /// GradNorm; with tensor-parallel shards (`mega.sharded_grads`, set by
  /// mega-optimizer) i = {tensor group, s_0..s_{n-1}}, s_k = 1 for a shard:
  /// the backend sums the shards' squares over the group and counts the
  /// replicated gradients once (Plan.h, Op::GradNorm).
  LogicalResult lowerGradNorm(GradNormOp g) {
    float maxNorm = float(g.getMaxNorm().convertToDouble());
    SmallVector<int64_t> i;
    auto sharded = g->getAttrOfType<DenseI64ArrayAttr>("mega.sharded_grads");
    // Pipeline (mega-pipeline-split): the per-rank sums are added over the
    // pipeline ranks; flag 2 marks a copy counted on another rank.
    auto counted =
        g->getAttrOfType<DenseI64ArrayAttr>("mega.pipeline_counted");
    // Distributed optimizer with tensor parallelism: every input is also a
    // data-parallel block (`mega.data_blocks` = the data axis).
    auto blocks = g->getAttrOfType<IntegerAttr>("mega.data_blocks");
    if ((sharded && !sharded.empty()) || counted || blocks) {
      // The group the shards are taken over: tensor, or (`mega.shard_axis`,
      // the distributed optimizer's gradient shards) data.
      auto axis = g->getAttrOfType<IntegerAttr>("mega.shard_axis");
      i.push_back(axis ? axis.getInt() : int64_t(plan::ParallelGroup::Tensor));
      for (size_t k = 0; k < g.getGrads().size(); ++k)
        i.push_back(counted && counted[k] == 0
                        ? 2
                        : int64_t(sharded && llvm::is_contained(
                                                 sharded.asArrayRef(),
                                                 int64_t(k))));
      if (counted || blocks)
        i.push_back(counted ? int64_t(plan::ParallelGroup::Pipeline) : -1);
      if (blocks)
        i.push_back(blocks.getInt());
    }
    replaceByKernel(g, "GradNorm", g.getGrads(), i, {maxNorm});
    return success();
  }

  /// {rows, Vl, group}, or {rows, Vl, V, group} when `mega.vocab` says the
  /// vocabulary is zero-padded past its true size V (the kernels mask the
  /// padded columns).
  static SmallVector<int64_t> vocabAttrs(Operation *op, int64_t rows,
                                         int64_t vl, int64_t group) {
    if (auto v = op->getAttrOfType<IntegerAttr>("mega.vocab"))
      return {rows, vl, v.getInt(), group};
    return {rows, vl, group};
  }

  /// AllGather / ReduceScatter along `dim`. The kernels concatenate (cut)
  /// along dim 0; along another dim with leading dims `outer` > 1, the ranks'
  /// blocks [outer, d*inner] are stacked as [size, outer, d*inner] and a
  /// Transpose moves `size` next to `dim` (before ReduceScatter, after
  /// AllGather).
  LogicalResult lowerGatherScatter(Operation *op, Value x, int64_t dim,
                                   int64_t group, bool gather) {
    Location loc = op->getLoc();
    RankedTensorType rt = cast<RankedTensorType>(op->getResult(0).getType());
    StringRef name = gather ? "AllGather" : "ReduceScatter";
    // The full (gathered / scattered-from) tensor's shape.
    ArrayRef<int64_t> full = gather ? rt.getShape() : tensorType(x).getShape();
    ArrayRef<int64_t> local = gather ? tensorType(x).getShape() : rt.getShape();
    if (contiguousAlong(full, dim)) {
      replaceByKernel(op, name, {x}, {group}, {});
      return success();
    }
    int64_t outer = product(full.take_front(dim));
    int64_t size = full[dim] / local[dim];
    int64_t rest = numElements(gather ? x : op->getResult(0)) / outer;
    Type el = rt.getElementType();
    auto stacked = RankedTensorType::get({size, outer, rest}, el);
    auto spread = RankedTensorType::get({outer, size, rest}, el);
    if (gather) {
      Value all = kernel(loc, name, {x}, {stacked}, {group}, {})->getResult(0);
      Value t = transpose(loc, all, {1, 0, 2}, spread);
      replace(op, view(loc, t, rt, 0));
    } else {
      Value t = transpose(loc, view(loc, x, spread, 0), {1, 0, 2}, stacked);
      auto part = RankedTensorType::get({outer, rest}, el);
      Value mine = kernel(loc, name, {t}, {part}, {group}, {})->getResult(0);
      replace(op, view(loc, mine, rt, 0));
    }
    return success();
  }

  LogicalResult lowerAdamW(AdamWOp a) {
    FailureOr<Value> p = paramRef(a, a.getName());
    if (failed(p))
      return failure();
    Location loc = a.getLoc();
    Type t = p->getType();
    if (auto axis = a->getAttrOfType<IntegerAttr>("mega.data_shard")) {
      // Distributed optimizer: the gradient and the moments are this data
      // rank's block of rows; AdamW reads the parameter's block and writes
      // the updated one (i = {group}), which is all-gathered into the
      // parameter on every rank.
      Type shard = a.getGrad().getType();
      Value m = state(loc, a.getName(), "adam_m", shard);
      Value v = state(loc, a.getName(), "adam_v", shard);
      Value updated =
          kernel(loc, "AdamW",
                 {*p, a.getGrad(), m, v, a.getLr(), a.getStep(), a.getCoef()},
                 {shard}, {axis.getInt()},
                 {float(a.getBeta1().convertToDouble()),
                  float(a.getBeta2().convertToDouble()),
                  float(a.getEps().convertToDouble()),
                  float(a.getWeightDecay().convertToDouble())})
              ->getResult(0);
      kernelInto(loc, "AllGather", {updated}, {*p}, {axis.getInt()}, {});
      a->erase();
      return success();
    }
    Value m = state(loc, a.getName(), "adam_m", t);
    Value v = state(loc, a.getName(), "adam_v", t);
    kernel(loc, "AdamW",
           {*p, a.getGrad(), m, v, a.getLr(), a.getStep(), a.getCoef()}, {}, {},
           {float(a.getBeta1().convertToDouble()),
            float(a.getBeta2().convertToDouble()),
            float(a.getEps().convertToDouble()),
            float(a.getWeightDecay().convertToDouble())});
    a->erase();
    return success();
  }

  LogicalResult lowerSgd(SgdOp s) {
    FailureOr<Value> p = paramRef(s, s.getName());
    if (failed(p))
      return failure();
    kernel(s.getLoc(), "Sgd", {*p, s.getGrad(), s.getLr(), s.getCoef()}, {}, {},
           {float(s.getWeightDecay().convertToDouble())});
    s->erase();
    return success();
  }

  /// The producer of `g` accumulates into the gradient itself when its
  /// kernel has an accumulate mode and `g` has no other use.
  bool foldAccumulate(AccumulateGradOp acc) {
    Value g = acc.getGrad();
    auto k = g.getDefiningOp<KernelOp>();
    if (!k || !g.hasOneUse() || k->getNumResults() != 1 ||
        k->hasAttr(kDestsAttr))
      return false;
    SmallVector<int64_t> i(k.getI());
    SmallVector<float> f(k.getF());
    StringRef name = k.getKernel();
    if (name == "MatMul")
      f[1] = 1.0f; // beta: C += A @ B
    else if (name == "ReduceSum")
      i[2] = 1;
    else if (name == "EmbeddingGrad")
      i[3] = 1;
    else if (name == "VocabEmbeddingGrad")
      i[3] = 1;
    else if (name != "Elementwise" || !accumulatingEwCode(i))
      return false;
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(k);
    Value grad = state(acc.getLoc(), acc.getName(), "grad", g.getType());
    SmallVector<Value> inputs(k.getInputs());
    if (name == "Elementwise")
      inputs.push_back(grad);
    kernelInto(k.getLoc(), name, inputs, {grad}, i, f);
    acc->erase();
    k->erase();
    ++accumulatesFolded;
    return true;
  }

  /// Step 0.
  void splitAccumulatedSums(Block &block) {
    SmallVector<AccumulateGradOp> work(block.getOps<AccumulateGradOp>());
    while (!work.empty()) {
      AccumulateGradOp acc = work.pop_back_val();
      auto add = acc.getGrad().getDefiningOp<AddOp>();
      Type t = acc.getGrad().getType();
      if (!add || !add->hasOneUse() || add.getLhs().getType() != t ||
          add.getRhs().getType() != t)
        continue;
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(acc);
      for (Value term : {add.getLhs(), add.getRhs()})
        work.push_back(
            b.create<AccumulateGradOp>(acc.getLoc(), acc.getNameAttr(), term));
      acc->erase();
      add->erase();
      ++sumsSplit;
    }
  }

  LogicalResult lowerAccumulate(AccumulateGradOp acc) {
    if (foldAccumulate(acc))
      return success();
    Location loc = acc.getLoc();
    Value g = acc.getGrad();
    Value grad = state(loc, acc.getName(), "grad", g.getType());
    int64_t n = numElements(g);
    // r0 = grad; r1 = g; r0 = r0 + r1; grad = r0
    using plan::EwOp;
    kernelInto(loc, "Elementwise", {grad, g}, {grad}, {n, 2,
                                                       1, n,
                                                       n, int64_t(EwOp::Load),
                                                       0, 0,
                                                       0, int64_t(EwOp::Load),
                                                       1, 1,
                                                       0, int64_t(EwOp::Add),
                                                       0, 0,
                                                       1, int64_t(EwOp::Store),
                                                       0, 0,
                                                       0},
               {});
    acc->erase();
    return success();
  }

  /// The accumulators of the bucket, read by name like mega.zero_grad.
  LogicalResult lowerBucketStart(GradBucketStartOp g) {
    SmallVector<Value> grads;
    for (Attribute a : g.getGrads()) {
      StringRef name = cast<StringAttr>(a).getValue();
      auto it = params.find(name);
      if (it == params.end())
        return g.emitOpError() << "reduces '" << name
                               << "', which no function reads with mega.param";
      ParamOp decl = it->second;
      grads.push_back(state(g.getLoc(), name, "grad", decl.getType()));
    }
    if (g.getScatter())
      kernel(g.getLoc(), "ReduceScatterStart", grads, {}, {g.getAxes()[0]}, {});
    else
      kernel(g.getLoc(), "AllReduceStart", grads, {}, {g.getAxes()[0], 0}, {});
    g->erase();
    return success();
  }

  LogicalResult lowerZeroGrad(ZeroGradOp z) {
    auto it = params.find(z.getName());
    if (it == params.end())
      return z.emitOpError() << "clears '" << z.getName()
                             << "', which no function reads with mega.param";
    ParamOp decl = it->second;
    Value grad = state(z.getLoc(), z.getName(), "grad", decl.getType());
    kernelInto(z.getLoc(), "Fill", {}, {grad}, {}, {0.0f});
    z->erase();
    return success();
  }

  //===--------------------------------------------------------------------===//
  // Steps 2 and 3
  //===--------------------------------------------------------------------===//

  /// Step 2: fills still used (by non-elementwise kernels, outputs, concats)
  /// become Fill kernels.
  void lowerFills(Block &block) {
    for (auto fill : llvm::make_early_inc_range(block.getOps<FillOp>())) {
      if (fill->use_empty()) {
        fill->erase();
        continue;
      }
      b.setInsertionPoint(fill);
      Value k = kernel(fill.getLoc(), "Fill", {}, {fill.getType()}, {},
                       {float(fill.getValue().convertToDouble())})
                    ->getResult(0);
      fill.replaceAllUsesWith(k);
      fill->erase();
    }
  }

  Value copyBefore(Operation *user, Value v) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(user);
    ++copies;
    return kernel(v.getLoc(), "Copy", {v}, {v.getType()}, {}, {})->getResult(0);
  }

  /// Step 3: each concat part, seen through reshape views, must be a fresh
  /// kernel result placed by no other concat.
  void fixConcatParts(Block &block) {
    llvm::DenseSet<Value> placed;
    for (auto concat : llvm::make_early_inc_range(block.getOps<ConcatOp>()))
      for (OpOperand &part : concat->getOpOperands()) {
        Value v = stripFullViews(part.get());
        if (!isFreshKernelResult(v) || !placed.insert(v).second)
          part.set(copyBefore(concat, part.get()));
      }
  }

  /// An output's producer writes into the port when the output value is all
  /// of a root buffer that no other output took; otherwise a Copy writes the
  /// port.
  void fixOutputs(Block &block) {
    Placement placement;
    (void)placement.build(block);
    llvm::DenseSet<Value> bound;
    for (auto out : llvm::make_early_inc_range(block.getOps<OutputOp>())) {
      Value root = placement.portRootOf(out.getValue());
      if (root && bound.insert(root).second)
        continue;
      Value copy = copyBefore(out, out.getValue());
      out->setOperand(0, copy);
      bound.insert(copy);
    }
  }

  func::FuncOp func;
  const llvm::StringMap<ParamOp> &params;
  OpBuilder b;
};

struct LowerToKernels : mega::impl::MegaLowerToKernelsBase<LowerToKernels> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    llvm::StringMap<ParamOp> params;
    module.walk([&](ParamOp p) { params.try_emplace(p.getName(), p); });
    for (auto func : module.getOps<func::FuncOp>()) {
      if (func.getBody().empty())
        continue;
      if (!func.getBody().hasOneBlock()) {
        func.emitError("mega-lower-to-kernels expects straight-line "
                       "functions (one block)");
        return signalPassFailure();
      }
      Lowering lowering(module, func, params);
      if (failed(lowering.run()))
        return signalPassFailure();
      numFolded += lowering.accumulatesFolded;
      numSplit += lowering.sumsSplit;
      numCopies += lowering.copies;
    }
    module.walk([&](KernelOp) { ++numKernels; });
    module.walk([&](ViewOp) { ++numViews; });
  }

  Statistic numKernels{this, "kernels", "mega.kernel ops in the module"};
  Statistic numViews{this, "views", "mega.view ops (no kernel)"};
  Statistic numFolded{this, "accumulates-folded",
                      "gradients accumulated by their producing kernel"};
  Statistic numSplit{this, "sums-split",
                     "accumulate_grad of a sum split into one per term"};
  Statistic numCopies{this, "copies",
                      "Copy kernels for outputs and concat parts"};
};

} // namespace

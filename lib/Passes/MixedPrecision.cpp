//===- MixedPrecision.cpp - bf16 operands for tensor-core ops -------------===//
//
// `mega-mixed-precision{precision=bf16}`: the ops whose
// MixedPrecisionOpInterface lists an operand (matmul a and b, flash attention
// q, k, v, the cross-entropy logits) read that operand in bf16; they
// accumulate and return fp32. Everything else keeps fp32: parameters (the
// master weights), gradients, optimizer state, layer norm, softmax
// statistics, the loss.
//
// Algorithm, per function:
//  1. precision=fp32: nothing to do; anything but fp32/bf16 is an error.
//  2. Walk the ops in order. For each operand an op lists that is f32, take
//     the bf16 copy of that value, creating it on first use as a mega.cast
//     placed right after the value's definition (at the block start for a
//     block argument), so that it dominates every later user: the forward
//     and the backward uses of one activation or weight share one copy.
//     A mega.reshape is looked through: its bf16 copy is the reshape of its
//     source's copy (a view), so an activation read as [B, S, H] by the
//     forward product and as [B*S, H] by the weight gradient is cast once.
//  3. Replace the operand by the copy. Result types do not change (f32).
//  4. With reduce-bf16: a mega.reduce_sum whose f32 operand has a bf16 copy
//     from step 2 (directly, or a reshape of a value that has one) sums the
//     copy instead. These are the bias gradients: the gradient that the
//     weight and input products read in bf16 is summed from those same
//     bf16 values, as under autocast, with f32 sums and an f32 result. No
//     copy is made for a reduction alone (that would cost a cast). When the
//     f32 gradient then has no reader but its cast, mega-fold-casts lets
//     its producer write only the bf16 copy.
//  5. With round-products: a mega.matmul with bf16 operands whose f32
//     result only elementwise ops read, none of them adding a smaller
//     operand to it (a bias: autocast rounds a Linear's output after its
//     bias, and so does mega-fuse-epilogues), and that is no parameter's
//     gradient (nothing it flows into through elementwise ops is a
//     mega.accumulate_grad: the tied embedding's product half stays f32, as
//     every gradient does), is rounded as autocast's bf16 GEMM output is: a
//     cast to bf16 and one back to f32 in front of its readers; mega-fold-casts
//     then lets the MatMul write bf16 and the Elementwise widen it on load: no
//     Cast kernel is left. A layer norm's gradient dy counts as such a reader
//     (autocast hands the norm the bf16 gradient widened; LayerNormGrad widens
//     on load). A GELU gradient's dy is the exception: mega-fuse-epilogues
//     computes the gradient in the product's own epilogue, where the product is
//     never stored (so GPT's MLP dX product is not rounded). Likewise the
//     pre-activation a gelu_grad reads (autocast keeps the Linear's output
//     in bf16 for the backward) goes through a cast to bf16 and back; the
//     forward GELU keeps reading it unrounded, so mega-fuse-epilogues'
//     MatMul computes D from the f32 value and stores aux in bf16.
//  6. With round-residual: every f32 value a mega.layer_norm normalises (a
//     pre-norm model's residual stream: the embeddings' sum, each residual
//     add, the last one ln_f reads) goes through a cast to bf16 and one back
//     right after its definition, and every reader (the norm, its gradient,
//     the next residual add, a pipeline send) takes the rounded value, as
//     Megatron keeps the stream in bf16 unless --fp32-residual-connection.
//     Across pipeline programs (mega-pipeline-split), a port `pipe.N` that
//     a norm normalises where it arrives is the stream too: its producer's
//     value and its input in every program that reads it (the backward's
//     norm gradient as well as the next stage's norm) are rounded, so all
//     of them see the value one program would (and mega-narrow-ports can
//     send it as bf16).
//     After mega-autodiff, so the gradients stay f32. mega-fold-casts then
//     lets the producer (the MatMul whose epilogue adds the residual) write
//     bf16 and the readers widen it on load.
//  7. With round-residual-grad: the residual stream's gradient, every f32
//     dx of a mega.layer_norm_grad and every mega.add that sums it (and
//     those sums) into the chain, is rounded to bf16 where something other
//     than the chain's next add reads it: a cast to bf16 (step 2's copy for
//     the products, when there is one) and one back right after its
//     definition, every other reader taking the widened value, as
//     Megatron's bf16 backward keeps that gradient in bf16. A norm's dx
//     read by its add alone stays f32 (the add rounds the sum). After
//     step 2. mega-fold-casts then lets each norm write its dx in bf16 and
//     the adds store bf16; mega-fuse-norm-grad folds the adds back into
//     the norms (accumulating into the bf16 gradient).
//  8. A mega.all_gather (sequence parallelism's gather of a norm's output,
//     or of the residual gradient, for the products) whose every reader
//     casts it to bf16 gathers the bf16 value instead: the operand's bf16
//     cast, or the bf16 value the operand only widens. Rounding commutes
//     with moving elements, so the readers see the same bits; the gather
//     moves half the bytes and the cast runs on the rank's block only. A
//     block of an odd element count stays f32 (the runtimes move bf16 as
//     4-byte words).
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringSet.h"

#include <functional>

namespace mega {
#define GEN_PASS_DEF_MEGAMIXEDPRECISION
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

struct MegaMixedPrecision
    : mega::impl::MegaMixedPrecisionBase<MegaMixedPrecision> {
  using MegaMixedPrecisionBase::MegaMixedPrecisionBase;

  void runOnOperation() override {
    // Step 1.
    if (precision == "fp32")
      return;
    if (precision != "bf16") {
      getOperation().emitError()
          << "mega-mixed-precision: precision must be fp32 or bf16, got '"
          << precision << "'";
      return signalPassFailure();
    }
    llvm::StringSet<> streamPorts;
    if (roundResidual)
      streamPorts = streamPortsOf();
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      castFunction(func);
      if (roundProducts)
        roundProductsOf(func);
      if (roundResidual)
        roundResidualOf(func, streamPorts);
      if (roundResidualGrad)
        roundResidualGradOf(func);
      gatherRoundedOf(func);
    }
  }

  /// Step 8.
  static void gatherRoundedOf(func::FuncOp func) {
    SmallVector<AllGatherOp> gathers;
    // The runtimes gather bf16 as 4-byte words: a block of an odd count
    // stays f32.
    func.walk([&](AllGatherOp g) {
      if (!isBf16(g.getResult()) &&
          cast<RankedTensorType>(g.getX().getType()).getNumElements() % 2 == 0)
        gathers.push_back(g);
    });
    for (AllGatherOp g : gathers) {
      // Readers left dead by step 1 (an f32 reshape its bf16 copy replaced)
      // do not count.
      for (Operation *u : llvm::make_early_inc_range(g->getUsers()))
        if (isOpTriviallyDead(u))
          u->erase();
      if (g->use_empty() || !llvm::all_of(g->getUsers(), [](Operation *u) {
            auto c = dyn_cast<CastOp>(u);
            return c && isBf16(c.getResult());
          }))
        continue;
      OpBuilder b(g);
      Value x = g.getX();
      auto xType = cast<RankedTensorType>(x.getType());
      auto bf16 = [&](RankedTensorType t) {
        return RankedTensorType::get(t.getShape(), b.getBF16Type());
      };
      Value rounded;
      if (auto w = x.getDefiningOp<CastOp>(); w && isBf16(w.getX()))
        rounded = w.getX();
      else
        rounded = b.create<CastOp>(g.getLoc(), bf16(xType), x);
      auto gathered =
          b.create<AllGatherOp>(g.getLoc(), bf16(g.getType()), rounded,
                                g.getAxesAttr(), g.getDimAttr());
      for (Operation *u : llvm::make_early_inc_range(g->getUsers())) {
        u->getResult(0).replaceAllUsesWith(gathered.getResult());
        u->erase();
      }
      g->erase();
    }
  }

  void castFunction(func::FuncOp func) {
    OpBuilder b(func.getContext());
    Type bf16 = b.getBF16Type();
    llvm::DenseMap<Value, Value> copies;
    std::function<Value(Value)> bf16Copy = [&](Value v) -> Value {
      auto it = copies.find(v);
      if (it != copies.end())
        return it->second;
      auto type = cast<RankedTensorType>(v.getType());
      auto bf16Type = RankedTensorType::get(type.getShape(), bf16);
      Value copy;
      if (auto reshape = v.getDefiningOp<ReshapeOp>()) {
        Value source = bf16Copy(reshape.getX());
        b.setInsertionPointAfterValue(source);
        copy = b.create<ReshapeOp>(v.getLoc(), bf16Type, source);
      } else {
        if (Operation *def = v.getDefiningOp())
          b.setInsertionPointAfter(def);
        else
          b.setInsertionPointToStart(cast<BlockArgument>(v).getOwner());
        copy = b.create<CastOp>(v.getLoc(), bf16Type, v);
      }
      copies[v] = copy;
      return copy;
    };
    // Step 2 and 3 (collect first: the walk must not see the new casts).
    SmallVector<MixedPrecisionOpInterface> ops;
    func.walk([&](MixedPrecisionOpInterface op) { ops.push_back(op); });
    for (MixedPrecisionOpInterface op : ops)
      for (unsigned idx : op.getLowPrecisionOperands()) {
        Value v = op->getOperand(idx);
        if (cast<RankedTensorType>(v.getType()).getElementType().isF32())
          op->setOperand(idx, bf16Copy(v));
      }
    // Step 4.
    if (!reduceBf16)
      return;
    std::function<bool(Value)> hasCopy = [&](Value v) {
      if (copies.count(v))
        return true;
      auto reshape = v.getDefiningOp<ReshapeOp>();
      return reshape && hasCopy(reshape.getX());
    };
    func.walk([&](ReduceSumOp r) {
      Value x = r.getX();
      if (cast<RankedTensorType>(x.getType()).getElementType().isF32() &&
          hasCopy(x))
        r->setOperand(0, bf16Copy(x));
    });
  }

  /// Step 5.
  void roundProductsOf(func::FuncOp func) {
    SmallVector<MatMulOp> products;
    func.walk([&](MatMulOp m) { products.push_back(m); });
    for (MatMulOp m : products) {
      Value r = m.getResult();
      auto type = cast<RankedTensorType>(r.getType());
      if (!isBf16(m.getA()) || !isBf16(m.getB()) ||
          !type.getElementType().isF32() || r.use_empty() ||
          !llvm::all_of(r.getUsers(), [&](Operation *u) {
            return (readsWhole(u, type) &&
                    !(isa<GeluGradOp>(u) && u->getOperand(1) == r)) ||
                   (isa<LayerNormGradOp>(u) && u->getOperand(0) == r);
          }) ||
          feedsGradient(r))
        continue;
      roundTrip(r);
    }
    // The pre-activations the GELU gradients read, one round trip each,
    // right before the first gradient (after the forward GELU, which
    // mega-fuse-elementwise then still fuses with the bias add).
    llvm::DenseMap<Value, Value> roundTrips;
    func.walk([&](GeluGradOp g) {
      Value x = g.getOperand(0);
      auto type = cast<RankedTensorType>(x.getType());
      if (!type.getElementType().isF32())
        return;
      Value &w = roundTrips[x];
      if (!w) {
        OpBuilder b(g);
        auto rounded = b.create<CastOp>(
            g.getLoc(),
            RankedTensorType::get(type.getShape(), b.getBF16Type()), x);
        w = b.create<CastOp>(g.getLoc(), type, rounded);
      }
      g->setOperand(0, w);
    });
  }

  /// Step 6: the pipeline ports (`pipe.N`, mega-pipeline-split) some
  /// program's mega.layer_norm normalises as they arrive.
  llvm::StringSet<> streamPortsOf() {
    llvm::StringSet<> names;
    getOperation().walk([&](LayerNormOp n) {
      if (auto in = n.getX().getDefiningOp<InputOp>())
        if (in.getName().starts_with("pipe."))
          names.insert(in.getName());
    });
    return names;
  }

  /// Step 6.
  void roundResidualOf(func::FuncOp func,
                       const llvm::StringSet<> &streamPorts) {
    llvm::SetVector<Value> stream;
    auto add = [&](Value x) {
      if (cast<RankedTensorType>(x.getType()).getElementType().isF32())
        stream.insert(x);
    };
    func.walk([&](Operation *op) {
      if (auto n = dyn_cast<LayerNormOp>(op))
        add(n.getX());
      else if (auto in = dyn_cast<InputOp>(op);
               in && streamPorts.contains(in.getName()))
        add(in.getResult());
      else if (auto out = dyn_cast<OutputOp>(op);
               out && streamPorts.contains(out.getName()))
        add(out.getValue());
    });
    for (Value x : stream)
      roundTrip(x);
  }

  /// Step 7.
  void roundResidualGradOf(func::FuncOp func) {
    // The residual gradient: the norms' dx and the adds that sum them.
    llvm::SetVector<Value> grads;
    func.walk([&](LayerNormGradOp g) {
      Value dx = g->getResult(0);
      if (cast<RankedTensorType>(dx.getType()).getElementType().isF32())
        grads.insert(dx);
    });
    for (size_t k = 0; k < grads.size(); ++k)
      for (Operation *u : grads[k].getUsers())
        if (auto add = dyn_cast<AddOp>(u))
          if (add.getType() == grads[k].getType())
            grads.insert(add.getResult());
    // Rounded where something other than the next add of the chain reads
    // it: the value the products, the bias gradient and the embeddings'
    // gradient read.
    for (Value v : grads) {
      bool outside = llvm::any_of(v.getUsers(), [&](Operation *u) {
        return !(isa<AddOp>(u) && grads.contains(u->getResult(0)));
      });
      if (!outside)
        continue;
      // Step 2's bf16 copy, when there is one, is the rounded value.
      CastOp copy;
      for (Operation *u : v.getUsers())
        if (auto c = dyn_cast<CastOp>(u))
          if (isBf16(c.getResult()))
            copy = c;
      roundTrip(v, copy);
    }
  }

  /// `v` rounded to bf16 and widened back right after its definition (at
  /// the block's start for an argument), every reader but the rounding
  /// cast taking the widened value; `rounded`, when given, is an existing
  /// cast of `v` to bf16, moved there and used as the rounding.
  static void roundTrip(Value v, CastOp rounded = {}) {
    auto type = cast<RankedTensorType>(v.getType());
    OpBuilder b(v.getContext());
    if (Operation *def = v.getDefiningOp())
      b.setInsertionPointAfter(def);
    else
      b.setInsertionPointToStart(cast<BlockArgument>(v).getOwner());
    if (rounded)
      rounded->moveBefore(b.getInsertionBlock(), b.getInsertionPoint());
    else
      rounded = b.create<CastOp>(
          v.getLoc(), RankedTensorType::get(type.getShape(), b.getBF16Type()),
          v);
    b.setInsertionPointAfter(rounded);
    auto widened = b.create<CastOp>(v.getLoc(), type, rounded);
    v.replaceAllUsesExcept(widened, rounded);
  }

  /// `v` reaches a mega.accumulate_grad through elementwise ops.
  static bool feedsGradient(Value v) {
    SmallVector<Value> work = {v};
    llvm::DenseSet<Value> seen;
    while (!work.empty()) {
      Value x = work.pop_back_val();
      if (!seen.insert(x).second)
        continue;
      for (Operation *u : x.getUsers()) {
        if (isa<AccumulateGradOp>(u))
          return true;
        if (isa<AddOp, SubOp, MulOp, ScaleOp, GeluOp, GeluGradOp>(u))
          llvm::append_range(work, u->getResults());
      }
    }
    return false;
  }

  static bool isBf16(Value v) {
    return cast<RankedTensorType>(v.getType()).getElementType().isBF16();
  }

  /// An elementwise op whose operands all have `type`'s shape (no bias row
  /// or scalar broadcast into it).
  static bool readsWhole(Operation *op, RankedTensorType type) {
    if (!isa<AddOp, SubOp, MulOp, ScaleOp, GeluOp, GeluGradOp>(op))
      return false;
    return llvm::all_of(op->getOperandTypes(), [&](Type t) {
      return cast<RankedTensorType>(t).getShape() == type.getShape();
    });
  }
};

} // namespace

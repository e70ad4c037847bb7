//===- NarrowPorts.cpp - Pipeline ports carry bf16 where that is exact ----===//
//
// `mega-narrow-ports`, at op level (after mega-mixed-precision): mega-
// pipeline-split makes every value one program hands another (a stage's
// activation to the next stage, a forward value to its backward program, a
// gradient to the previous stage) a port `pipe.N`, an output of the
// producer and an input of the readers, typed as it was then: f32. Mixed
// precision comes later, so a port may carry an f32 value that is only the
// widening of a bf16 one, or that every reader only rounds to bf16: the
// port's bytes (its buffer, and the pipeline's send and receive between
// ranks) are twice what the bf16 value needs. This pass makes such a port
// bf16; the values every program computes are the same bits.
//
// Algorithm. First, side-effect-free ops nothing reads are erased (mixed
// precision leaves the f32 reshapes its bf16 copies replaced; such a dead
// reader would look like one that needs f32). Then, per port name `pipe.*`
// with one mega.output (the producer) and its mega.inputs (the readers),
// all f32 tensors of one shape:
//  1. (widened) The output is a mega.cast of a bf16 value w: the port
//     carries w. Each reader's input becomes bf16; its readers that cast
//     it to bf16 read the input itself, the others one widening cast
//     placed after it (bf16 -> f32 is exact, so they see the same values).
//  2. (rounded) Otherwise, when every reader's input is read only by casts
//     to bf16: the port carries the output value's bf16 cast (an existing
//     one in the producer, else a new one right after the value's
//     definition), and those casts read the bf16 input instead.
// Anything else keeps its f32 port, and so does a port whose bf16 value
// another port already carries (a value is one output at most), or that is
// a reshape, transpose, split or concat, or that fused attention reads or
// writes (mega-fold-attention-layout makes those views of other buffers).
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/MapVector.h"

namespace mega {
#define GEN_PASS_DEF_MEGANARROWPORTS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

bool isBf16(Type t) {
  return cast<RankedTensorType>(t).getElementType().isBF16();
}

/// A cast of `v` to bf16 among its users, or null.
CastOp bf16CastOf(Value v) {
  for (Operation *u : v.getUsers())
    if (auto c = dyn_cast<CastOp>(u))
      if (isBf16(c.getType()))
        return c;
  return {};
}

struct Port {
  OutputOp out;
  SmallVector<InputOp> ins;
  bool ok = true;
};

struct MegaNarrowPorts : mega::impl::MegaNarrowPortsBase<MegaNarrowPorts> {
  void runOnOperation() override {
    // Readers left dead by mixed precision (an f32 reshape nothing reads
    // any more) would count as readers that need f32.
    eraseDeadOps();
    llvm::MapVector<StringRef, Port> ports;
    getOperation().walk([&](Operation *op) {
      if (auto o = dyn_cast<OutputOp>(op)) {
        if (!o.getName().starts_with("pipe."))
          return;
        Port &p = ports[o.getName()];
        p.ok = p.ok && !p.out;
        p.out = o;
      } else if (auto i = dyn_cast<InputOp>(op)) {
        if (i.getName().starts_with("pipe."))
          ports[i.getName()].ins.push_back(i);
      }
    });
    for (auto &[name, p] : ports) {
      if (!p.ok || !p.out || p.ins.empty())
        continue;
      Value v = p.out.getValue();
      auto type = dyn_cast<RankedTensorType>(v.getType());
      if (!type || !type.getElementType().isF32() || nearAttention(v) ||
          fromLayout(v) ||
          llvm::any_of(p.ins, [&](InputOp i) { return i.getType() != type; }))
        continue;
      // Step 1: the producer widens a bf16 value (not one another port
      // already carries: an output is its value's only placement).
      if (auto c = v.getDefiningOp<CastOp>(); c && isBf16(c.getX().getType())) {
        if (exported(c.getX()))
          continue;
        p.out->setOperand(0, c.getX());
        for (InputOp in : p.ins)
          retypeInput(in, /*widenOthers=*/true);
        continue;
      }
      // Step 2: every reader only rounds it.
      bool onlyRounded = llvm::all_of(p.ins, [](InputOp in) {
        return llvm::all_of(in->getUsers(), [](Operation *u) {
          auto c = dyn_cast<CastOp>(u);
          return c && isBf16(c.getType());
        });
      });
      if (!onlyRounded)
        continue;
      CastOp rounded = bf16CastOf(v);
      if (rounded && exported(rounded.getResult()))
        continue;
      if (!rounded) {
        OpBuilder b(p.out);
        b.setInsertionPointAfterValue(v);
        rounded = b.create<CastOp>(
            v.getLoc(),
            RankedTensorType::get(type.getShape(), b.getBF16Type()), v);
      }
      p.out->setOperand(0, rounded.getResult());
      for (InputOp in : p.ins)
        retypeInput(in, /*widenOthers=*/false);
    }
  }

  /// `v`, or the value it casts, is an operand or a result of fused
  /// attention: mega-fold-attention-layout makes those bf16 values views of
  /// the projections' buffers, which a port cannot be (a program output is
  /// a kernel's own result).
  static bool nearAttention(Value v) {
    SmallVector<Value> vals = {v};
    if (auto c = v.getDefiningOp<CastOp>())
      vals.push_back(c.getX());
    if (CastOp c = bf16CastOf(v))
      vals.push_back(c.getResult());
    auto attention = [](Operation *op) {
      return op && isa<FlashAttentionOp, FlashAttentionGradOp>(op);
    };
    return llvm::any_of(vals, [&](Value x) {
      return attention(x.getDefiningOp()) ||
             llvm::any_of(x.getUsers(), attention);
    });
  }

  /// `v` (looking through casts) is a reshape, transpose, split or concat:
  /// at kernel level those may become views of another buffer (attention's
  /// q, k, v in the projection's layout), which a port cannot be.
  static bool fromLayout(Value v) {
    while (auto c = v.getDefiningOp<CastOp>())
      v = c.getX();
    Operation *def = v.getDefiningOp();
    return def && isa<ReshapeOp, TransposeOp, SplitOp, ConcatOp>(def);
  }

  /// Erases side-effect-free ops whose results nothing reads, users first.
  void eraseDeadOps() {
    getOperation().walk([](func::FuncOp f) {
      SmallVector<Operation *> ops;
      f.walk([&](Operation *op) { ops.push_back(op); });
      for (Operation *op : llvm::reverse(ops))
        if (op != f && isOpTriviallyDead(op))
          op->erase();
    });
  }

  /// `v` is already a program output.
  static bool exported(Value v) {
    return llvm::any_of(v.getUsers(),
                        [](Operation *u) { return isa<OutputOp>(u); });
  }

  /// `in` read as bf16: its casts to bf16 read the new input; any other
  /// reader (only with `widenOthers`) a widening cast of it.
  static void retypeInput(InputOp in, bool widenOthers) {
    OpBuilder b(in);
    auto type = cast<RankedTensorType>(in.getType());
    auto bf16Type = RankedTensorType::get(type.getShape(), b.getBF16Type());
    auto narrow = b.create<InputOp>(in.getLoc(), bf16Type, in.getNameAttr(),
                                    in.getDims(),
                                    TypeAttr::get(b.getBF16Type()));
    Value wide;
    for (OpOperand &use : llvm::make_early_inc_range(in->getUses())) {
      auto c = dyn_cast<CastOp>(use.getOwner());
      if (c && isBf16(c.getType())) {
        c.getResult().replaceAllUsesWith(narrow.getResult());
        c->erase();
        continue;
      }
      assert(widenOthers && "step 2 takes only inputs that are just rounded");
      (void)widenOthers;
      if (!wide) {
        b.setInsertionPointAfter(narrow);
        wide = b.create<CastOp>(in.getLoc(), type, narrow.getResult());
      }
      use.set(wide);
    }
    in->erase();
  }
};

} // namespace

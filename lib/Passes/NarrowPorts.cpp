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
// bf16; the values every program computes are the same bits (at op level:
// a product that now stores bf16 itself may then get a bf16 bias from
// mega-bf16-bias, as it does in a one-program plan).
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
//     to bf16, directly or after layout ops (reshape, transpose, split:
//     attention's q, k and v, which mega-port-sources has the readers cut
//     out of the fused projection's port) whose results are only rounded
//     in turn: the port carries the output
//     value's bf16 cast (an existing one in the producer, else a new one
//     right before the output); those casts read the bf16 input instead,
//     and the layout ops move its bf16 elements.
// In step 1 too, a reader's layout ops whose results are only rounded move
// bf16 elements rather than widened ones. Anything else keeps its f32 port,
// and so does a port whose bf16 value another port already carries (a value
// is one output at most).
//
//===----------------------------------------------------------------------===//
#include "Ports.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

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

struct MegaNarrowPorts : mega::impl::MegaNarrowPortsBase<MegaNarrowPorts> {
  void runOnOperation() override {
    // Readers left dead by mixed precision (an f32 reshape nothing reads
    // any more) would count as readers that need f32.
    eraseDeadOps();
    llvm::MapVector<StringRef, Port> ports = collectPorts(getOperation());
    for (auto &[name, p] : ports) {
      if (!p.ok || !p.out || p.ins.empty())
        continue;
      Value v = p.out.getValue();
      auto type = dyn_cast<RankedTensorType>(v.getType());
      if (!type || !type.getElementType().isF32() || fromLayout(v) ||
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
      // Step 2: every reader only rounds it (after moving its elements).
      bool onlyRounded = llvm::all_of(
          p.ins, [](InputOp in) { return onlyRoundedValue(in.getResult()); });
      if (!onlyRounded)
        continue;
      CastOp rounded = bf16CastOf(v);
      if (rounded && exported(rounded.getResult()))
        continue;
      // An existing cast may come after the output: it reads only v, which
      // the output reads too, so it can go right before the output.
      if (rounded && rounded->getBlock() == p.out->getBlock() &&
          p.out->isBeforeInBlock(rounded))
        rounded->moveBefore(p.out);
      if (!rounded) {
        // Right before the output: a cast right after v would stand
        // between v and its other readers, and mega-fuse-elementwise only
        // fuses v's producer with them when all of v's other users follow
        // (c_fc's bias add with its GELU, for the MatMul's GELU epilogue).
        OpBuilder b(p.out);
        rounded = b.create<CastOp>(
            v.getLoc(),
            RankedTensorType::get(type.getShape(), b.getBF16Type()), v);
      }
      p.out->setOperand(0, rounded.getResult());
      for (InputOp in : p.ins)
        retypeInput(in, /*widenOthers=*/false);
    }
  }

  /// `v` (looking through casts) is a part of a split or a concat: at
  /// kernel level those are views into another buffer, which a port cannot
  /// be (mega-port-sources sends a split's source instead). A reshape is a
  /// view of a whole buffer, a transpose a kernel's result: attention's o
  /// in rows crosses as one.
  static bool fromLayout(Value v) {
    while (auto c = v.getDefiningOp<CastOp>())
      v = c.getX();
    Operation *def = v.getDefiningOp();
    return def && isa<SplitOp, ConcatOp>(def);
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

  /// `in` read as bf16: its casts to bf16 read the new input, and layout
  /// ops whose results are only rounded (onlyRoundedValue) move the bf16
  /// elements instead; any other reader (only with `widenOthers`) reads a
  /// widening cast of it.
  static void retypeInput(InputOp in, bool widenOthers) {
    OpBuilder b(in);
    auto type = cast<RankedTensorType>(in.getType());
    auto narrow =
        b.create<InputOp>(in.getLoc(), bf16Like(type), in.getNameAttr(),
                          in.getDims(), TypeAttr::get(b.getBF16Type()));
    Value wide;
    for (OpOperand &use : llvm::make_early_inc_range(in->getUses())) {
      if (narrowUse(use, narrow.getResult()))
        continue;
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

  static RankedTensorType bf16Like(Type t) {
    auto type = cast<RankedTensorType>(t);
    return RankedTensorType::get(type.getShape(),
                                 BFloat16Type::get(t.getContext()));
  }

  /// Every reader of the f32 `v` is a cast to bf16, or a layout op whose
  /// results are only rounded in turn.
  static bool onlyRoundedValue(Value v) {
    return llvm::all_of(v.getUsers(), [](Operation *u) {
      if (auto c = dyn_cast<CastOp>(u))
        return isBf16(c.getType());
      return isLayout(u) && llvm::all_of(u->getResults(), onlyRoundedValue);
    });
  }

  /// `use` of an f32 value whose bf16 rounding is `narrow`: a cast to bf16
  /// is replaced by `narrow`; a layout op whose results are only rounded is
  /// rebuilt on `narrow` (bf16 results, the same elements moved), and so
  /// are its readers. False, changing nothing, for any other reader.
  static bool narrowUse(OpOperand &use, Value narrow) {
    Operation *u = use.getOwner();
    if (auto c = dyn_cast<CastOp>(u); c && isBf16(c.getType())) {
      c.getResult().replaceAllUsesWith(narrow);
      c->erase();
      return true;
    }
    if (!isLayout(u) || !llvm::all_of(u->getResults(), onlyRoundedValue))
      return false;
    OpBuilder b(u);
    OperationState st(u->getLoc(), u->getName());
    st.addOperands(narrow);
    st.addAttributes(u->getAttrs());
    for (Type t : u->getResultTypes())
      st.addTypes(bf16Like(t));
    Operation *n = b.create(st);
    for (auto [old, nv] : llvm::zip(u->getResults(), n->getResults()))
      for (OpOperand &r : llvm::make_early_inc_range(old.getUses())) {
        bool done = narrowUse(r, nv);
        assert(done && "onlyRoundedValue checked every reader");
        (void)done;
      }
    u->erase();
    return true;
  }
};

} // namespace

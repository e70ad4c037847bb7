//===- PortSources.cpp - A port sends the value its layout ops start from -===//
//
// `mega-port-sources`, at op level, right after mega-pipeline-split (before
// mixed precision). The split makes every value one program reads from
// another a port `pipe.N`, whatever produced it: attention's q, k and v
// (reshaped, transposed and split out of the fused projection) become three
// ports, and its output o both as itself and moved back to rows for the
// output projection. At kernel level a part of a split is a view of another
// buffer, which a port cannot be (a program output is a kernel's own
// result), so the plan copied each part out; o crossed twice; and the
// reader's attention could not read the projection's layout in place.
//
// Algorithm, per port whose producer computes its value v only by
// mega.reshape, mega.transpose and mega.split from a value r (the chain
// followed back from v while the defining op is one of those):
//  1. A port already carrying r (an output of r named `pipe.*`) carries it
//     for this one too: each reader program gets that port's input (one
//     already there is moved before this port's input, a missing one is
//     created there), and this port's output and inputs go. Except when
//     the chain only reshapes and transposes and only attention gradients
//     read that port (attention's o; this port, o moved back to rows for
//     the output projection): then this port stays and the other goes, its
//     readers redoing the inverse chain on this port's input. Attention
//     reads o in either layout (mega-fold-attention-layout), a product only
//     in rows; so the forward's attention writes o in rows, as in one
//     program, and neither program moves it.
//  2. Otherwise this port carries r: its output takes r, and each reader's
//     input becomes one of r's type.
//  3. In each reader, the chain is cloned on that input, in order, where
//     this port's input was, and its readers read the clone of v.
// Ports are visited in the order their names are first seen, so the first
// of q, k, v carries the projection. A port whose name has two outputs is
// left alone. The values
// every program computes are unchanged (layout ops only move elements);
// the canonicalizer drops the producer's chain when nothing else reads it.
//
//===----------------------------------------------------------------------===//
#include "Ports.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

namespace mega {
#define GEN_PASS_DEF_MEGAPORTSOURCES
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// A new input of port `name` carrying `type`, before `at`.
Value newInput(StringRef name, RankedTensorType type, Operation *at) {
  OpBuilder b(at);
  return b
      .create<InputOp>(at->getLoc(), type, b.getStringAttr(name),
                       b.getI64ArrayAttr(type.getShape()),
                       TypeAttr::get(type.getElementType()))
      .getResult();
}

/// The input of port `name` (carrying `type`) in `at`'s function, created
/// before `at`, or moved there when it comes later in the block.
Value inputOf(StringRef name, RankedTensorType type, InputOp at) {
  InputOp found;
  at->getParentOfType<func::FuncOp>().walk([&](InputOp i) {
    if (i.getName() == name)
      found = i;
  });
  if (!found)
    return newInput(name, type, at);
  if (found->getBlock() == at->getBlock() && at->isBeforeInBlock(found))
    found->moveBefore(at);
  return found.getResult();
}

struct MegaPortSources : mega::impl::MegaPortSourcesBase<MegaPortSources> {
  void runOnOperation() override {
    llvm::MapVector<StringRef, Port> ports = collectPorts(getOperation());
    for (auto &[name, p] : ports)
      if (p.ok && p.out)
        sendSource(p, ports);
  }

  static void sendSource(Port &p, llvm::MapVector<StringRef, Port> &ports) {
    SmallVector<Operation *> chain;
    Value v = p.out.getValue(), r = v;
    while (Operation *def = r.getDefiningOp()) {
      if (!isLayout(def))
        break;
      chain.push_back(def);
      r = def->getOperand(0);
    }
    if (chain.empty())
      return;
    std::reverse(chain.begin(), chain.end());
    // Step 1: a port already carrying r.
    OutputOp carrier;
    for (Operation *u : r.getUsers())
      if (auto o = dyn_cast<OutputOp>(u); o && o != p.out) {
        auto it = ports.find(o.getName());
        if (it != ports.end() && it->second.ok)
          carrier = o;
      }
    if (carrier && sendRows(p, ports[carrier.getName()], chain))
      return;
    auto type = cast<RankedTensorType>(r.getType());
    // Step 3, with each reader's input from step 1 or 2.
    for (InputOp in : p.ins) {
      Value source = carrier ? inputOf(carrier.getName(), type, in)
                             : newInput(in.getName(), type, in);
      OpBuilder b(in);
      IRMapping map;
      map.map(r, source);
      for (Operation *op : chain)
        b.clone(*op, map);
      in.getResult().replaceAllUsesWith(map.lookup(v));
      in->erase();
    }
    p.ins.clear();
    if (carrier) {
      p.out->erase();
      p.out = {};
      p.ok = false;
    } else {
      p.out->setOperand(0, r); // step 2
    }
  }

  /// Step 1's exception: `c` sends r, which only attention gradients read
  /// (attention's o), and `p` sends v, r reshaped and transposed (o moved
  /// back to rows for the output projection, whose weight gradient reads
  /// it). `p` keeps sending v, `c` goes, and its readers redo the inverse
  /// of `chain` on `p`'s input. An attention kernel reads o in either
  /// layout (mega-fold-attention-layout), a product only in rows, so the
  /// forward writes o in rows once and no program moves it.
  static bool sendRows(Port &p, Port &c, ArrayRef<Operation *> chain) {
    if (!llvm::all_of(chain, [](Operation *op) {
          return isa<ReshapeOp, TransposeOp>(op);
        }))
      return false;
    for (InputOp in : c.ins)
      for (Operation *u : in->getUsers())
        if (!isa<FlashAttentionGradOp>(u))
          return false;
    Value v = p.out.getValue();
    auto vType = cast<RankedTensorType>(v.getType());
    for (InputOp in : c.ins) {
      Value x = inputOf(p.out.getName(), vType, in);
      OpBuilder b(in);
      for (Operation *op : llvm::reverse(chain)) {
        Type back = op->getOperand(0).getType();
        if (auto t = dyn_cast<TransposeOp>(op)) {
          ArrayRef<int64_t> perm = t.getPerm();
          SmallVector<int64_t> inverse(perm.size());
          for (auto [j, d] : llvm::enumerate(perm))
            inverse[d] = int64_t(j);
          x = b.create<TransposeOp>(op->getLoc(), back, x, inverse);
        } else {
          x = b.create<ReshapeOp>(op->getLoc(), back, x);
        }
      }
      in.getResult().replaceAllUsesWith(x);
      in->erase();
    }
    c.ins.clear();
    c.out->erase();
    c.out = {};
    c.ok = false;
    return true;
  }
};

} // namespace

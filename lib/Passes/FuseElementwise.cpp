//===- FuseElementwise.cpp - Group elementwise chains into mega.fused
//------===//
//
// Greedy producer-consumer fusion of the ops one Elementwise kernel computes
// (mega.add/sub/mul with full or trailing-broadcast operands, mega.scale,
// mega.gelu, mega.gelu_grad), so that a bias add + GELU, a residual chain or
// a sum of gradient contributions costs one pass over memory.
//
// Algorithm, for each function body (one block), in program order:
//  1. Number the ops.
//  2. For each op the Elementwise kernel supports (isEwSupported), look at the
//     groups of the ops producing its operands. A producer group joins the op
//     when
//       a. its result element count equals the op's (every member of a group
//          computes the same n elements; smaller operands are broadcast
//          inputs read with a period, mega.fill operands become constants);
//       b. every user of the group's values outside the merged group comes
//          after the op: the fused op will sit where its last member was, so
//          those users must still follow it;
//       c. the merged group's micro-code needs at most 16 registers
//          (generateEwCode, the same generator the lowering uses).
//     All joining groups are tried at once, then one at a time. An op that
//     joins no group starts its own.
//  3. Each group of two or more ops becomes one mega.fused at the position of
//     its last member: inputs = values read from outside (in first-use order),
//     results = member values used outside the group (so an intermediate
//     that is also needed elsewhere is yielded, not recomputed).
//  4. The members are erased, and so are mega.fill ops left without users.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"

namespace mega {
#define GEN_PASS_DEF_MEGAFUSEELEMENTWISE
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

/// A candidate fusion group: its ops in program order.
struct Group {
  SmallVector<Operation *> ops;
  int64_t numel = 0;
  bool dead = false; ///< merged into another group
};

class Fuser {
public:
  explicit Fuser(Block &block) : block(block) {
    unsigned k = 0;
    for (Operation &op : block)
      index[&op] = k++;
  }

  /// Steps 1-2: forms the groups.
  void formGroups() {
    for (Operation &op : block) {
      if (!isEwSupported(&op))
        continue;
      int64_t n = numElements(op.getResult(0));
      SmallVector<unsigned> producers;
      for (Value v : op.getOperands()) {
        Operation *def = v.getDefiningOp();
        auto it = def ? groupOf.find(def) : groupOf.end();
        if (it == groupOf.end() || llvm::is_contained(producers, it->second))
          continue;
        if (groups[it->second].numel == n)
          producers.push_back(it->second);
      }
      SmallVector<unsigned> legal;
      for (unsigned g : producers)
        if (usersFollow(groups[g].ops, &op))
          legal.push_back(g);

      SmallVector<unsigned> joined;
      if (!legal.empty() && fits(legal, &op)) {
        joined = legal;
      } else {
        for (unsigned g : legal) {
          SmallVector<unsigned> trial(joined);
          trial.push_back(g);
          if (fits(trial, &op))
            joined.push_back(g);
        }
      }
      unsigned target;
      if (joined.empty()) {
        target = groups.size();
        groups.push_back(Group{{}, n});
      } else {
        target = joined.front();
        for (unsigned g : ArrayRef(joined).drop_front()) {
          for (Operation *m : groups[g].ops) {
            groups[target].ops.push_back(m);
            groupOf[m] = target;
          }
          groups[g].ops.clear();
          groups[g].dead = true;
        }
        sortByIndex(groups[target].ops);
      }
      groups[target].ops.push_back(&op);
      groupOf[&op] = target;
    }
  }

  /// Steps 3-4: rewrites every group of two or more ops. Returns the number
  /// of mega.fused ops created and adds the fused op count to `fusedOps`.
  unsigned materialize(uint64_t &fusedOps) {
    unsigned created = 0;
    // In order of last member, so a later group's inputs already refer to
    // the results of the earlier groups' fused ops.
    SmallVector<Group *> order;
    for (Group &g : groups)
      if (!g.dead && g.ops.size() >= 2)
        order.push_back(&g);
    llvm::sort(order, [&](Group *a, Group *b) {
      return index[a->ops.back()] < index[b->ops.back()];
    });
    llvm::SetVector<Operation *> fills;
    for (Group *g : order) {
      EwProgram prog = programOf(g->ops);
      for (Value in : prog.inputs)
        if (auto fill = in.getDefiningOp<FillOp>())
          fills.insert(fill);
      rewrite(g->ops, prog);
      fusedOps += g->ops.size();
      ++created;
    }
    for (Operation *fill : fills)
      if (fill->use_empty())
        fill->erase();
    return created;
  }

private:
  void sortByIndex(SmallVectorImpl<Operation *> &ops) {
    llvm::sort(ops,
               [&](Operation *a, Operation *b) { return index[a] < index[b]; });
  }

  /// Step 2b: users of `members`' results outside `members` + `op` follow
  /// `op`.
  bool usersFollow(ArrayRef<Operation *> members, Operation *op) {
    for (Operation *m : members)
      for (Operation *user : m->getUsers())
        if (user != op && !llvm::is_contained(members, user) &&
            index[user] < index[op])
          return false;
    return true;
  }

  /// Step 2c: the groups `gs` plus `op` fit the register file.
  bool fits(ArrayRef<unsigned> gs, Operation *op) {
    SmallVector<Operation *> ops;
    for (unsigned g : gs)
      llvm::append_range(ops, groups[g].ops);
    sortByIndex(ops);
    ops.push_back(op);
    return generateEwCode(programOf(ops)).registers <= kEwRegisterCount;
  }

  /// Inputs, constants and outputs of a group of ops.
  static EwProgram programOf(ArrayRef<Operation *> ops) {
    EwProgram prog;
    prog.ops.assign(ops.begin(), ops.end());
    llvm::SmallPtrSet<Operation *, 16> members(ops.begin(), ops.end());
    for (Operation *op : ops)
      for (Value v : op->getOperands())
        if (!members.contains(v.getDefiningOp()) &&
            !llvm::is_contained(prog.inputs, v)) {
          prog.inputs.push_back(v);
          prog.constants.push_back(fillValue(v));
        }
    for (Operation *op : ops)
      for (Value r : op->getResults())
        if (llvm::any_of(r.getUsers(), [&](Operation *user) {
              return !members.contains(user);
            }))
          prog.outputs.push_back(r);
    return prog;
  }

  /// Step 3: replaces `ops` by one mega.fused computing `prog`.
  static void rewrite(ArrayRef<Operation *> ops, const EwProgram &prog) {
    Operation *last = ops.back();
    OpBuilder b(last);
    SmallVector<Location> locs;
    for (Operation *op : ops)
      locs.push_back(op->getLoc());
    Location loc = b.getFusedLoc(locs);
    SmallVector<Type> resultTypes;
    for (Value v : prog.outputs)
      resultTypes.push_back(v.getType());
    auto fused = b.create<FusedOp>(loc, resultTypes, prog.inputs);
    Block *body = new Block();
    fused.getBody().push_back(body);
    IRMapping map;
    for (Value in : prog.inputs)
      map.map(in, body->addArgument(in.getType(), in.getLoc()));
    OpBuilder ib = OpBuilder::atBlockEnd(body);
    for (Operation *op : ops)
      ib.clone(*op, map);
    SmallVector<Value> yielded;
    for (Value v : prog.outputs)
      yielded.push_back(map.lookup(v));
    ib.create<YieldOp>(loc, yielded);
    for (auto [k, v] : llvm::enumerate(prog.outputs))
      Value(v).replaceAllUsesWith(fused.getResult(k));
    for (Operation *op : llvm::reverse(ops))
      op->erase();
  }

  Block &block;
  llvm::DenseMap<Operation *, unsigned> index;
  llvm::DenseMap<Operation *, unsigned> groupOf;
  std::vector<Group> groups;
};

struct FuseElementwise : mega::impl::MegaFuseElementwiseBase<FuseElementwise> {
  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.getBody().empty())
        continue;
      if (!func.getBody().hasOneBlock()) {
        func.emitError("mega-fuse-elementwise expects straight-line "
                       "functions (one block)");
        return signalPassFailure();
      }
      Fuser fuser(func.getBody().front());
      fuser.formGroups();
      uint64_t ops = 0;
      numGroups += fuser.materialize(ops);
      numFusedOps += ops;
    }
  }

  Statistic numGroups{this, "fused-groups", "mega.fused ops created"};
  Statistic numFusedOps{this, "fused-ops", "Elementwise ops moved into them"};
};

} // namespace

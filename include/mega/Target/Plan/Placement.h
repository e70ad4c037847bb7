//===- Placement.h - Which kernel-level values share bytes ------*- C++ -*-===//
//
// At kernel level a value's bytes may live inside another value's:
//  * a `mega.view` lies in its source at a byte offset;
//  * a `mega.concat` part lies in the concat's result (parts one after the
//    other), so its producer writes there directly;
//  * a `mega.empty` is a root of its own: kernels write it through views
//    passed as their `mega.dests`.
// Following these links from any value gives its root buffer and its byte
// offset in it. mega-lower-to-kernels (which inserts Copy kernels where a
// value cannot be placed), mega-assign-buffers (which gives roots arena
// memory) and the plan emitter (which turns roots into plan buffers) must agree
// on these rules, so they all use this header.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TARGET_PLAN_PLACEMENT_H
#define MEGA_TARGET_PLAN_PLACEMENT_H

#include "mega/Dialect/Mega/MegaOps.h"

#include "llvm/ADT/DenseMap.h"

#include <utility>

namespace mega {

/// Bytes of a statically shaped tensor value.
inline int64_t byteSize(mlir::Value v) {
  auto t = llvm::cast<mlir::RankedTensorType>(v.getType());
  return t.getNumElements() * (t.getElementTypeBitWidth() / 8);
}

/// `v` seen through views that cover all of their source from offset 0 (a
/// reshape): placing the result is placing the source.
inline mlir::Value stripFullViews(mlir::Value v) {
  while (auto view = v.getDefiningOp<ViewOp>()) {
    if (view.getOffset() != 0 || byteSize(view.getSource()) != byteSize(v))
      break;
    v = view.getSource();
  }
  return v;
}

/// The alias links of one straight-line kernel-level block.
class Placement {
public:
  /// Records the links of `block`. Returns the offending concat when a value
  /// would be placed twice (a part, seen through full views, that is already
  /// a view or part of another concat), else null.
  mlir::Operation *build(mlir::Block &block) {
    for (mlir::Operation &op : block) {
      if (auto view = llvm::dyn_cast<ViewOp>(op)) {
        parent[view.getResult()] = {view.getSource(), view.getOffset()};
      } else if (auto concat = llvm::dyn_cast<ConcatOp>(op)) {
        int64_t offset = 0;
        for (mlir::Value part : concat.getInputs()) {
          mlir::Value placed = stripFullViews(part);
          if (!parent.try_emplace(placed, concat.getResult(), offset).second)
            return &op;
          offset += byteSize(part);
        }
      }
    }
    return nullptr;
  }

  /// The root of `v` and `v`'s byte offset inside it.
  std::pair<mlir::Value, int64_t> rootOf(mlir::Value v) const {
    int64_t offset = 0;
    for (auto it = parent.find(v); it != parent.end(); it = parent.find(v)) {
      v = it->second.first;
      offset += it->second.second;
    }
    return {v, offset};
  }

  /// A root that needs arena memory (not a parameter, state or input).
  static bool isArenaRoot(mlir::Value root) {
    mlir::Operation *def = root.getDefiningOp();
    return def && llvm::isa<KernelOp, ConcatOp, EmptyOp>(def);
  }

  /// The root an output port can take over for `v`: all of an arena root
  /// (same bytes, offset 0); null when `v` is only part of its root or is
  /// not in the arena.
  mlir::Value portRootOf(mlir::Value v) const {
    auto [root, offset] = rootOf(v);
    if (!isArenaRoot(root) || offset != 0 || byteSize(root) != byteSize(v))
      return nullptr;
    return root;
  }

private:
  llvm::DenseMap<mlir::Value, std::pair<mlir::Value, int64_t>> parent;
};

} // namespace mega

#endif // MEGA_TARGET_PLAN_PLACEMENT_H

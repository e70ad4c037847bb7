//===- PlanEmitter.h - Kernel-level IR -> mega::plan::Plan ------*- C++ -*-===//
//
// The last step of megac: a module at kernel level (after mega-assign-buffers)
// becomes the plan the runtime executes (include/mega/Plan/Plan.h).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TARGET_PLAN_PLANEMITTER_H
#define MEGA_TARGET_PLAN_PLANEMITTER_H

#include "mega/Plan/Plan.h"

#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <string>

namespace mega {

struct PlanEmitterOptions {
  /// Compile options recorded in the plan's config next to the model's
  /// hyper-parameters (micro_batch_size, lr, tp, ...).
  std::map<std::string, std::string> config;
  /// "adam" adds the AdamW moments to the persistent tensors.
  std::string optimizer = "adam";
  /// Target of every program ("cpu" or "cuda").
  std::string target = "cpu";
};

/// Builds the plan of `module`:
///  * config: every entry of the module's `mega.hparams`, then
///    `options.config`, then `flops_per_token` = 6 N + 12 L H T (N parameters,
///    L layers, H hidden, T seq) when the model has those hyper-parameters;
///  * persistents: one Param per distinct `mega.param` name (in order of first
///    appearance; init, std, weight decay for rank >= 2), then a Grad of each,
///    then AdamM and AdamV of each when the optimizer is adam;
///  * programs: one per function, named after it, in the order train,
///    optimizer, eval, predict (others after), with ports from `mega.input`
///    and `mega.output` and one instruction per `mega.kernel`.
/// Emits a diagnostic and fails on IR that is not at kernel level.
mlir::FailureOr<plan::Plan> emitPlan(mlir::ModuleOp module,
                                     const PlanEmitterOptions &options);

} // namespace mega

#endif // MEGA_TARGET_PLAN_PLANEMITTER_H

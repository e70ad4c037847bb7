//===- PlanIO.h - The plan calls that may throw, behind a plain API -------===//
//
// megac is built without exceptions (LLVM's flags); mega::plan reports
// problems with PlanError. These wrappers (compiled with exceptions) turn
// that into a message: empty on success.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TOOLS_MEGAC_PLANIO_H
#define MEGA_TOOLS_MEGAC_PLANIO_H

#include "mega/Plan/Plan.h"

#include <string>

namespace mega {
/// plan::validate; the problem, or "".
std::string validatePlan(const plan::Plan &plan);
/// plan::writePlanFile; the problem, or "".
std::string writePlan(const plan::Plan &plan, const std::string &path);
} // namespace mega

#endif // MEGA_TOOLS_MEGAC_PLANIO_H

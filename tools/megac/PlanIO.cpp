//===- PlanIO.cpp - The plan calls that may throw
//---------------------------===//
#include "PlanIO.h"

namespace mega {

std::string validatePlan(const plan::Plan &plan) {
  try {
    plan::validate(plan);
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

std::string writePlan(const plan::Plan &plan, const std::string &path) {
  try {
    plan::writePlanFile(plan, path);
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

} // namespace mega

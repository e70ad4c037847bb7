//===- Schedule.cpp - Learning-rate schedules
//------------------------------===//
#include "Schedule.h"

#include "mega/Runtime/Backend.h"

#include <cmath>

namespace mega::rt {

LrSchedule::Style LrSchedule::parseStyle(const std::string &name) {
  if (name == "constant")
    return Style::Constant;
  if (name == "cosine")
    return Style::Cosine;
  throw Error("--lr-schedule must be 'constant' or 'cosine', not '" + name +
              "'");
}

double LrSchedule::at(int64_t iteration) const {
  int64_t s = iteration - 1;
  if (s < 0)
    s = 0;
  if (warmup > 0 && s <= warmup)
    return maxLr * double(s) / double(warmup);
  if (style == Style::Constant)
    return maxLr;
  if (s > total || total <= warmup)
    return minLr;
  double r = double(s - warmup) / double(total - warmup);
  double coeff = 0.5 * (std::cos(M_PI * r) + 1.0);
  return minLr + coeff * (maxLr - minLr);
}

} // namespace mega::rt

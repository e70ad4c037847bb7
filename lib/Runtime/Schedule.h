//===- Schedule.h - Learning-rate schedules (Megatron's rules) ------------===//
//
// Megatron's OptimizerParamScheduler with step counts in iterations: the
// learning rate used by iteration `it` (1-based) is lr(s) with s = it - 1
// completed steps:
//   warmup W > 0 and s <= W:  lr = maxLr * s / W
//   constant:                 lr = maxLr
//   cosine, s > total:        lr = minLr
//   cosine:                   r = (s - W) / (total - W)
//                             lr = minLr + (maxLr - minLr) * (1 + cos(pi r)) /
//                             2
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_SCHEDULE_H
#define MEGA_RUNTIME_SCHEDULE_H

#include <cstdint>
#include <string>

namespace mega::rt {

struct LrSchedule {
  enum class Style { Constant, Cosine };
  Style style = Style::Constant;
  double maxLr = 1e-4;
  double minLr = 0.0;
  int64_t warmup = 0; ///< iterations
  int64_t total = 0;  ///< iterations (decay ends here)

  /// Throws Error for an unknown name.
  static Style parseStyle(const std::string &name);
  /// The learning rate iteration `iteration` (1-based) uses.
  double at(int64_t iteration) const;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_SCHEDULE_H

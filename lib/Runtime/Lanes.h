//===- Lanes.h - A program's launches on two streams ----------------------===//
//
// mega-run --wgrad-stream (cuda): while a program is recorded into a CUDA
// graph, the weight-gradient products of the backward run on a second
// stream, beside the chain they branch off. A weight gradient is read by
// nothing until the optimizer, yet on one stream the next layer norm's
// gradient waits for it; a product of 776 x 2304 over 16384 rows fills
// half an H100 at most, and the memory-bound kernel after it could use the
// rest.
//
// Which launch may wait on which is decided from the bytes each touches,
// as the plan places them, so the order the plan gives is kept wherever it
// matters: two launches conflict when one writes bytes the other reads or
// writes (a launch's outputs count as read and written: some add into what
// they hold). planLanes:
//   1. Launch k goes on the side lane when the backend can run it there
//      (`side[k]`), it is not the first, and there is a first launch after
//      it that stays on the main lane (else nothing would run beside it)
//      which does not conflict with it (else the main lane would wait for
//      it at once). Decided from the last launch
//      back, so that a weight gradient's product and the Copy of its bias
//      row after it both go to the side lane, while the product of the
//      input's gradient, which the next norm's gradient reads, stays.
//   2. A launch waits for the last launch of the other lane it conflicts
//      with, unless an earlier wait of its lane already covers that one
//      (each lane runs in order, so having waited for launch j of the
//      other lane covers every launch of that lane before j). The first
//      side launch waits at least for the main launch before it: a stream
//      joins a graph recording through such a wait.
//   3. After the last launch, the main lane waits for the side lane's last
//      launch (a recording must end with every stream it forked joined).
// checkLanes proves the result against the conflicts: for every
// conflicting pair, the earlier launch finishes before the later starts.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_LANES_H
#define MEGA_RUNTIME_LANES_H

#include <cstddef>
#include <string>
#include <vector>

namespace mega::rt {

/// Bytes a launch touches: [begin, begin + bytes), written or only read.
struct Access {
  const char *begin = nullptr;
  size_t bytes = 0;
  bool write = false;
};

/// Where launch k runs and what it waits for.
struct LaneStep {
  int lane = 0; ///< 0: the main stream, 1: the side stream
  /// The launch of the other lane to wait for first, or -1.
  long wait = -1;
  /// A later launch (or the final join) waits for this one: record it.
  bool record = false;
};

struct LanePlan {
  std::vector<LaneStep> steps;
  /// The side launch the main lane waits for after the last launch, or -1.
  long join = -1;
  size_t sideLaunches() const;
  size_t waits() const;
};

/// True when launches a and b conflict (LanePlan's rule).
bool conflict(const std::vector<Access> &a, const std::vector<Access> &b);

/// The plan for launches touching `touches[k]`, with `side[k]` true where
/// the backend can run launch k on its side stream.
LanePlan planLanes(const std::vector<std::vector<Access>> &touches,
                   const std::vector<bool> &side);

/// "" when every conflicting pair is ordered by `plan` (and the side lane
/// is joined at the end), else what is not.
std::string checkLanes(const std::vector<std::vector<Access>> &touches,
                       const LanePlan &plan);

} // namespace mega::rt

#endif // MEGA_RUNTIME_LANES_H

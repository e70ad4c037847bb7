//===- Lanes.cpp - A program's launches on two streams --------------------===//
//
// The steps are in Lanes.h. Both planLanes and checkLanes keep, for each
// launch, a clock: the last launch of each lane known to have finished
// before it starts (its own lane's previous launch, and what the launch it
// waits for knew, and that launch itself).
//
//===----------------------------------------------------------------------===//
#include "Lanes.h"

#include <algorithm>
#include <array>

namespace mega::rt {

namespace {

using Clock = std::array<long, 2>;

Clock merge(Clock a, const Clock &b) {
  return {std::max(a[0], b[0]), std::max(a[1], b[1])};
}

bool overlaps(const Access &a, const Access &b) {
  return a.bytes && b.bytes && a.begin < b.begin + b.bytes &&
         b.begin < a.begin + a.bytes;
}

} // namespace

size_t LanePlan::sideLaunches() const {
  return size_t(std::count_if(steps.begin(), steps.end(),
                              [](const LaneStep &s) { return s.lane == 1; }));
}

size_t LanePlan::waits() const {
  return size_t(std::count_if(steps.begin(), steps.end(),
                              [](const LaneStep &s) { return s.wait >= 0; })) +
         (join >= 0 ? 1 : 0);
}

bool conflict(const std::vector<Access> &a, const std::vector<Access> &b) {
  for (const Access &x : a)
    for (const Access &y : b)
      if ((x.write || y.write) && overlaps(x, y))
        return true;
  return false;
}

LanePlan planLanes(const std::vector<std::vector<Access>> &touches,
                   const std::vector<bool> &side) {
  const size_t n = touches.size();
  LanePlan plan;
  plan.steps.resize(n);
  std::vector<Clock> after(n); // what is known finished once k has
  std::array<Clock, 2> next = {Clock{-1, -1}, Clock{-1, -1}};
  std::array<std::vector<long>, 2> launches;
  // 1. The lanes, from the last launch back: each side launch knows the
  // first main launch after it.
  std::vector<bool> onSide(n, false);
  long nextMain = -1;
  for (size_t k = n; k-- > 0;) {
    onSide[k] = k > 0 && k < side.size() && side[k] && nextMain >= 0 &&
                !conflict(touches[k], touches[size_t(nextMain)]);
    if (!onSide[k])
      nextMain = long(k);
  }
  for (size_t k = 0; k < n; ++k) {
    const int lane = onSide[k] ? 1 : 0, other = 1 - lane;
    Clock c = next[lane];
    // 2. The last conflicting launch of the other lane not yet covered.
    long need = -1;
    for (auto it = launches[other].rbegin();
         it != launches[other].rend() && *it > c[other]; ++it)
      if (conflict(touches[k], touches[size_t(*it)])) {
        need = *it;
        break;
      }
    if (lane == 1 && c[0] < 0 && need < 0)
      need = launches[0].back(); // the side stream joins the recording
    if (need >= 0) {
      plan.steps[k].wait = need;
      plan.steps[size_t(need)].record = true;
      c = merge(c, after[size_t(need)]);
    }
    plan.steps[k].lane = lane;
    c[lane] = long(k);
    after[k] = c;
    next[lane] = c;
    launches[lane].push_back(long(k));
  }
  // 3. The join.
  if (!launches[1].empty() && next[0][1] < launches[1].back()) {
    plan.join = launches[1].back();
    plan.steps[size_t(plan.join)].record = true;
  }
  return plan;
}

std::string checkLanes(const std::vector<std::vector<Access>> &touches,
                       const LanePlan &plan) {
  const size_t n = touches.size();
  if (plan.steps.size() != n)
    return "the plan has " + std::to_string(plan.steps.size()) +
           " launches, not " + std::to_string(n);
  std::vector<Clock> before(n), after(n);
  std::array<Clock, 2> next = {Clock{-1, -1}, Clock{-1, -1}};
  long lastSide = -1;
  for (size_t k = 0; k < n; ++k) {
    const LaneStep &s = plan.steps[k];
    if (s.lane != 0 && s.lane != 1)
      return "launch " + std::to_string(k) + " is on lane " +
             std::to_string(s.lane);
    Clock c = next[size_t(s.lane)];
    if (s.wait >= 0) {
      const size_t w = size_t(s.wait);
      if (w >= k || plan.steps[w].lane == s.lane)
        return "launch " + std::to_string(k) + " waits for launch " +
               std::to_string(w) + ", not an earlier one of the other lane";
      if (!plan.steps[w].record)
        return "launch " + std::to_string(k) + " waits for launch " +
               std::to_string(w) + ", which records nothing";
      c = merge(c, after[w]);
    }
    if (s.lane == 1 && lastSide < 0 && s.wait < 0)
      return "the first side launch (" + std::to_string(k) +
             ") waits for nothing: its stream never joins a recording";
    before[k] = c;
    c[size_t(s.lane)] = long(k);
    after[k] = c;
    next[size_t(s.lane)] = c;
    if (s.lane == 1)
      lastSide = long(k);
  }
  for (size_t b = 0; b < n; ++b)
    for (size_t a = 0; a < b; ++a) {
      const int la = plan.steps[a].lane;
      if (la == plan.steps[b].lane || before[b][size_t(la)] >= long(a))
        continue;
      if (conflict(touches[a], touches[b]))
        return "launches " + std::to_string(a) + " and " + std::to_string(b) +
               " touch the same bytes, one writing, and may run at once";
    }
  if (lastSide >= 0) {
    long joined = next[0][1];
    if (plan.join >= 0) {
      if (plan.steps[size_t(plan.join)].lane != 1 ||
          !plan.steps[size_t(plan.join)].record)
        return "the join waits for launch " + std::to_string(plan.join) +
               ", not a recorded side launch";
      joined = std::max(joined, plan.join);
    }
    if (joined < lastSide)
      return "the side lane's launch " + std::to_string(lastSide) +
             " is not joined at the end";
  }
  return "";
}

} // namespace mega::rt

//===- PipelineSchedule.cpp - Pipeline-parallel schedules -----------------===//
//
// The algorithm (steps 1-6) and its formulas are in
// include/mega/Passes/PipelineSchedule.h. The interleaved order follows the
// rules of Megatron-LM's forward_backward_pipelining_with_interleaving
// (warm-up count, chunk and micro-batch of the k-th step), written from
// those rules.
//
//===----------------------------------------------------------------------===//
#include "mega/Passes/PipelineSchedule.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

namespace mega::pipeline {

std::optional<ScheduleKind> parseScheduleKind(std::string_view name) {
  if (name == "gpipe")
    return ScheduleKind::GPipe;
  if (name == "1f1b")
    return ScheduleKind::OneFOneB;
  if (name == "interleaved")
    return ScheduleKind::Interleaved;
  return std::nullopt;
}

const char *scheduleName(ScheduleKind kind) {
  switch (kind) {
  case ScheduleKind::GPipe:
    return "gpipe";
  case ScheduleKind::OneFOneB:
    return "1f1b";
  case ScheduleKind::Interleaved:
    return "interleaved";
  }
  return "?";
}

std::string checkSchedule(const ScheduleConfig &c) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (c.ranks < 1 || c.virtualStages < 1 || c.microbatches < 1)
    return "pipeline sizes must be positive";
  if (c.virtualStages > 1 && c.kind != ScheduleKind::Interleaved)
    return "--vpp " + s(c.virtualStages) +
           " needs --schedule interleaved (got " + scheduleName(c.kind) + ")";
  if (c.kind == ScheduleKind::Interleaved) {
    if (c.virtualStages == 1)
      return "--schedule interleaved needs --vpp > 1";
    if (c.microbatches % c.ranks != 0)
      return "interleaved schedule needs microbatches (" + s(c.microbatches) +
             ") to be a multiple of --pp (" + s(c.ranks) + ")";
  }
  return "";
}

int64_t Step::recvFrom(const ScheduleConfig &c, int64_t rank) const {
  int64_t s = stage(c, rank), last = c.ranks * c.virtualStages - 1;
  if (forward)
    return s > 0 ? (s - 1) % c.ranks : -1;
  return s < last ? (s + 1) % c.ranks : -1;
}

int64_t Step::sendTo(const ScheduleConfig &c, int64_t rank) const {
  int64_t s = stage(c, rank), last = c.ranks * c.virtualStages - 1;
  if (forward)
    return s < last ? (s + 1) % c.ranks : -1;
  return s > 0 ? (s - 1) % c.ranks : -1;
}

namespace {

/// Step 3: the micro-batch and chunk of the k-th forward (or backward) step.
Step interleavedStep(const ScheduleConfig &c, int64_t k, bool forward) {
  int64_t group = c.ranks * c.virtualStages;
  int64_t chunk = (k % group) / c.ranks;
  Step step;
  step.forward = forward;
  step.microbatch = (k / group) * c.ranks + k % c.ranks;
  step.chunk = forward ? chunk : c.virtualStages - 1 - chunk;
  return step;
}

/// Steps 2 and 3: warm-up forwards, steady F/B pairs, cool-down backwards.
std::vector<Step> oneFOneB(const ScheduleConfig &c, int64_t rank) {
  bool interleaved = c.kind == ScheduleKind::Interleaved;
  int64_t total = c.microbatches * c.virtualStages;
  int64_t warmup;
  if (!interleaved)
    warmup = std::min(c.ranks - rank - 1, c.microbatches);
  else if (c.microbatches == c.ranks)
    warmup = total;
  else
    warmup = std::min(
        (c.ranks - rank - 1) * 2 + (c.virtualStages - 1) * c.ranks, total);
  auto at = [&](int64_t k, bool forward) {
    if (interleaved)
      return interleavedStep(c, k, forward);
    return Step{forward, k, 0};
  };
  std::vector<Step> steps;
  for (int64_t k = 0; k < warmup; ++k)
    steps.push_back(at(k, true));
  for (int64_t i = 0; i < total - warmup; ++i) {
    steps.push_back(at(warmup + i, true));
    steps.back().paired = interleaved;
    steps.push_back(at(i, false));
  }
  for (int64_t k = total - warmup; k < total; ++k)
    steps.push_back(at(k, false));
  return steps;
}

} // namespace

std::vector<std::vector<Step>> buildSchedule(const ScheduleConfig &c) {
  std::vector<std::vector<Step>> ranks(c.ranks);
  for (int64_t r = 0; r < c.ranks; ++r) {
    if (c.kind == ScheduleKind::GPipe) {
      for (int64_t mb = 0; mb < c.microbatches; ++mb)
        ranks[r].push_back(Step{true, mb, 0});
      for (int64_t mb = 0; mb < c.microbatches; ++mb)
        ranks[r].push_back(Step{false, mb, 0});
    } else {
      ranks[r] = oneFOneB(c, r);
    }
  }
  return ranks;
}

std::vector<std::vector<plan::ScheduleStep>>
planSteps(const ScheduleConfig &c) {
  using plan::StepKind;
  std::vector<std::vector<plan::ScheduleStep>> out;
  std::vector<std::vector<Step>> steps = buildSchedule(c);
  for (int64_t r = 0; r < c.ranks; ++r) {
    auto &rank = out.emplace_back();
    auto add = [&](StepKind k, const Step &st) {
      rank.push_back({k, int32_t(st.microbatch), int32_t(st.chunk)});
    };
    const std::vector<Step> &mine = steps[size_t(r)];
    std::vector<Step> sends; // of the unit before, for the next exchange
    for (size_t i = 0; i < mine.size();) {
      size_t n = mine[i].paired && i + 1 < mine.size() ? 2 : 1;
      // The exchange: the last unit's sends, this unit's receives.
      for (const Step &st : sends)
        add(st.forward ? StepKind::SendForward : StepKind::SendBackward, st);
      sends.clear();
      for (size_t k = i; k < i + n; ++k)
        if (mine[k].recvFrom(c, r) >= 0)
          add(mine[k].forward ? StepKind::RecvForward : StepKind::RecvBackward,
              mine[k]);
      for (size_t k = i; k < i + n; ++k) {
        add(mine[k].forward ? StepKind::Forward : StepKind::Backward, mine[k]);
        if (mine[k].sendTo(c, r) >= 0)
          sends.push_back(mine[k]);
      }
      i += n;
    }
    for (const Step &st : sends)
      add(st.forward ? StepKind::SendForward : StepKind::SendBackward, st);
    rank.push_back({StepKind::Optimizer, 0, 0});
  }
  return out;
}

Timeline simulate(const ScheduleConfig &c,
                  const std::vector<std::vector<Step>> &steps) {
  Timeline t;
  int64_t stages = c.ranks * c.virtualStages;
  // End time of (forward?, microbatch, stage), once it ran.
  std::map<std::tuple<bool, int64_t, int64_t>, int64_t> done;
  std::vector<size_t> next(c.ranks, 0);
  std::vector<int64_t> free(c.ranks, 0);
  t.ranks.resize(c.ranks);
  size_t remaining = 0;
  for (const auto &rank : steps)
    remaining += rank.size();
  while (remaining > 0) {
    bool progress = false;
    for (int64_t r = 0; r < c.ranks; ++r) {
      // Run rank r as far as its dependencies allow.
      while (next[r] < steps[r].size()) {
        const Step &step = steps[r][next[r]];
        int64_t s = step.stage(c, r), ready = free[r];
        std::vector<std::tuple<bool, int64_t, int64_t>> deps;
        if (step.forward && s > 0)
          deps.emplace_back(true, step.microbatch, s - 1);
        if (!step.forward) {
          deps.emplace_back(true, step.microbatch, s);
          if (s < stages - 1)
            deps.emplace_back(false, step.microbatch, s + 1);
        }
        bool blocked = false;
        for (const auto &d : deps) {
          auto it = done.find(d);
          if (it == done.end()) {
            blocked = true;
            break;
          }
          ready = std::max(ready, it->second);
        }
        if (blocked)
          break;
        int64_t end = ready + (step.forward ? 1 : 2);
        t.ranks[r].push_back(TimedStep{step, ready, end});
        done[{step.forward, step.microbatch, s}] = end;
        free[r] = end;
        ++next[r];
        --remaining;
        progress = true;
      }
    }
    if (!progress) {
      t.deadlock = "the schedule deadlocks";
      return t;
    }
  }
  int64_t busy = 0;
  for (int64_t r = 0; r < c.ranks; ++r) {
    t.makespan = std::max(t.makespan, free[r]);
    for (const TimedStep &ts : t.ranks[r])
      busy += ts.end - ts.start;
  }
  t.idle = c.ranks * t.makespan - busy;
  t.bubble = t.makespan ? double(t.idle) / double(c.ranks * t.makespan) : 0;
  return t;
}

namespace {

std::string stepLabel(const ScheduleConfig &c, const Step &s) {
  std::string label(1, s.forward ? 'F' : 'B');
  label += std::to_string(s.microbatch);
  if (c.virtualStages > 1) {
    label += '.';
    label += std::to_string(s.chunk);
  }
  return label;
}

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string title(const ScheduleConfig &c, const Timeline &t) {
  return std::string(scheduleName(c.kind)) +
         " schedule: P=" + std::to_string(c.ranks) +
         " V=" + std::to_string(c.virtualStages) +
         " m=" + std::to_string(c.microbatches) + ", bubble " +
         fixed(t.bubble, 4) + " (idle " + std::to_string(t.idle) + " of " +
         std::to_string(c.ranks * t.makespan) + " rank-units)";
}

} // namespace

std::string scheduleText(const ScheduleConfig &c, const Timeline &t) {
  std::ostringstream os;
  os << "# " << title(c, t) << "\n";
  for (int64_t r = 0; r < c.ranks; ++r) {
    os << "rank " << r << ":";
    for (const TimedStep &ts : t.ranks[r])
      os << " " << stepLabel(c, ts.step);
    os << "\n";
  }
  os << "makespan: " << t.makespan << "\n";
  os << "bubble: " << fixed(t.bubble, 4) << "\n";
  return os.str();
}

std::string scheduleSvg(const ScheduleConfig &c, const Timeline &t) {
  const int unit = 24, rowH = 32, left = 70, top = 40;
  int64_t width = left + t.makespan * unit + 20;
  int64_t height = top + c.ranks * rowH + 30;
  // Lighter to darker per chunk.
  static const char *const fwd[] = {"#9ecae1", "#4292c6", "#2171b5", "#08519c"};
  static const char *const bwd[] = {"#a1d99b", "#41ab5d", "#238b45", "#006d2c"};
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
     << "\" height=\"" << height << "\" font-family=\"sans-serif\">\n";
  os << "<title>" << title(c, t) << "</title>\n";
  os << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">" << title(c, t)
     << "</text>\n";
  for (int64_t r = 0; r < c.ranks; ++r) {
    int64_t y = top + r * rowH;
    os << "<g class=\"rank\" id=\"rank" << r << "\">\n";
    os << "  <text x=\"8\" y=\"" << y + rowH / 2 + 4
       << "\" font-size=\"12\">rank " << r << "</text>\n";
    // The idle background: gaps between boxes show through.
    os << "  <rect class=\"idle\" x=\"" << left << "\" y=\"" << y
       << "\" width=\"" << t.makespan * unit << "\" height=\"" << rowH - 4
       << "\" fill=\"#f0f0f0\"/>\n";
    for (const TimedStep &ts : t.ranks[r]) {
      int64_t x = left + ts.start * unit, w = (ts.end - ts.start) * unit;
      const char *const *palette = ts.step.forward ? fwd : bwd;
      const char *fill = palette[std::min<int64_t>(ts.step.chunk, 3)];
      os << "  <rect class=\"" << (ts.step.forward ? "fwd" : "bwd") << "\" x=\""
         << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\""
         << rowH - 4 << "\" fill=\"" << fill << "\" stroke=\"#333\"/>";
      os << "<text x=\"" << x + w / 2 << "\" y=\"" << y + rowH / 2 + 2
         << "\" font-size=\"11\" text-anchor=\"middle\">" << ts.step.microbatch
         << "</text>\n";
    }
    os << "</g>\n";
  }
  os << "<text x=\"" << left << "\" y=\"" << height - 8
     << "\" font-size=\"11\">forward: blue (cost 1), backward: green (cost "
        "2)"
     << (c.virtualStages > 1 ? ", darker = later chunk" : "")
     << "; grey = idle</text>\n";
  os << "</svg>\n";
  return os.str();
}

} // namespace mega::pipeline

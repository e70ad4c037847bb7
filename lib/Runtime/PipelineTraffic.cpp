//===- PipelineTraffic.cpp - The messages of a pipeline schedule ---------===//
#include "PipelineTraffic.h"

#include "mega/Runtime/Backend.h"

#include <map>
#include <set>
#include <tuple>

namespace mega::rt {

std::string PipeMessage::text() const {
  return "micro-batch " + std::to_string(microbatch) + "'s " +
         (gradient ? "gradients" : "activations") + " for stage " +
         std::to_string(stage);
}

PipeTransfer stepTransfer(const plan::ScheduleStep &step, int rank, int pp,
                          int vpp) {
  using plan::StepKind;
  if (step.chunk < 0 || step.chunk >= vpp)
    throw Error("pipeline schedule: rank " + std::to_string(rank) +
                " has no chunk " + std::to_string(step.chunk));
  const int stages = pp * vpp, stage = step.chunk * pp + rank;
  const int next = (rank + 1) % pp, prev = (rank + pp - 1) % pp;
  PipeTransfer t;
  int other = -1; // the stage at the other end
  switch (step.kind) {
  case StepKind::RecvForward:
    t = {false, prev, {step.microbatch, stage, false}};
    other = stage - 1;
    break;
  case StepKind::SendForward:
    t = {true, next, {step.microbatch, stage + 1, false}};
    other = stage + 1;
    break;
  case StepKind::RecvBackward:
    t = {false, next, {step.microbatch, stage, true}};
    other = stage + 1;
    break;
  case StepKind::SendBackward:
    t = {true, prev, {step.microbatch, stage - 1, true}};
    other = stage - 1;
    break;
  default:
    throw Error(std::string("pipeline schedule: step ") +
                plan::stepKindName(step.kind) + " moves no data");
  }
  if (other < 0 || other >= stages)
    throw Error("pipeline schedule: rank " + std::to_string(rank) + " has " +
                plan::stepKindName(step.kind) + " on stage " +
                std::to_string(stage) + ", which has no stage " +
                (other < 0 ? "before" : "after") + " it");
  return t;
}

std::vector<std::vector<std::vector<PipeTransfer>>>
pipeExchanges(const std::vector<std::vector<plan::ScheduleStep>> &schedule,
              int pp, int vpp) {
  using plan::StepKind;
  std::vector<std::vector<std::vector<PipeTransfer>>> out(schedule.size());
  for (size_t r = 0; r < schedule.size(); ++r) {
    bool open = false; // the last step was a Send/Recv
    // (backward?, micro-batch, chunk) received, and computed.
    std::set<std::tuple<bool, int32_t, int32_t>> received, computed;
    auto fail = [&](const plan::ScheduleStep &st, const char *why) {
      throw Error("pipeline schedule: rank " + std::to_string(r) + " has " +
                  plan::stepKindName(st.kind) + " of micro-batch " +
                  std::to_string(st.microbatch) + " on chunk " +
                  std::to_string(st.chunk) + " " + why);
    };
    for (const plan::ScheduleStep &st : schedule[r]) {
      const bool backward = st.kind == StepKind::RecvBackward ||
                            st.kind == StepKind::Backward ||
                            st.kind == StepKind::SendBackward;
      const auto id = std::make_tuple(backward, st.microbatch, st.chunk);
      switch (st.kind) {
      case StepKind::RecvForward:
      case StepKind::RecvBackward:
        if (computed.count(id))
          fail(st, "after its computation");
        received.insert(id);
        break;
      case StepKind::SendForward:
      case StepKind::SendBackward:
        if (!computed.count(id))
          fail(st, "before its computation");
        break;
      case StepKind::Forward:
      case StepKind::Backward: {
        // What needs a receive first: a forward past the first stage, a
        // backward before the last.
        int stage = st.chunk * pp + int(r);
        bool needs = backward ? stage + 1 < pp * vpp : stage > 0;
        if (needs && !received.count(id))
          fail(st, "without a receive before it");
        computed.insert(id);
        open = false;
        continue;
      }
      default:
        open = false;
        continue;
      }
      if (!open)
        out[r].emplace_back();
      out[r].back().push_back(stepTransfer(st, int(r), pp, vpp));
      open = true;
    }
  }
  return out;
}

std::string checkPipeExchanges(
    const std::vector<std::vector<std::vector<PipeTransfer>>> &exchanges) {
  const int ranks = int(exchanges.size());
  // Rule 1: per (sender, receiver), the messages and the exchange of each
  // end, in order.
  struct End {
    PipeMessage message;
    size_t exchange;
  };
  struct Channel {
    std::vector<End> sends, recvs;
    size_t done = 0; ///< messages delivered (the simulation)
  };
  std::map<std::pair<int, int>, Channel> channels;
  std::vector<std::vector<size_t>> left(static_cast<size_t>(ranks)); // to go
  for (int r = 0; r < ranks; ++r) {
    const auto &ex = exchanges[size_t(r)];
    left[size_t(r)].resize(ex.size());
    for (size_t e = 0; e < ex.size(); ++e) {
      left[size_t(r)][e] = ex[e].size();
      for (const PipeTransfer &t : ex[e]) {
        if (t.peer < 0 || t.peer >= ranks)
          return "pipeline schedule: rank " + std::to_string(r) +
                 " exchanges with rank " + std::to_string(t.peer) + " of " +
                 std::to_string(ranks);
        if (t.send)
          channels[{r, t.peer}].sends.push_back({t.message, e});
        else
          channels[{t.peer, r}].recvs.push_back({t.message, e});
      }
    }
  }
  for (const auto &[ends, ch] : channels) {
    const auto [a, b] = ends;
    std::string pair =
        "rank " + std::to_string(a) + " sends rank " + std::to_string(b) + " ";
    for (size_t k = 0; k < ch.sends.size() || k < ch.recvs.size(); ++k) {
      if (k == ch.recvs.size())
        return "pipeline schedule: " + pair + ch.sends[k].message.text() +
               ", which rank " + std::to_string(b) + " never receives";
      if (k == ch.sends.size())
        return "pipeline schedule: rank " + std::to_string(b) + " receives " +
               ch.recvs[k].message.text() + " from rank " + std::to_string(a) +
               ", which never sends it";
      if (!(ch.sends[k].message == ch.recvs[k].message))
        return "pipeline schedule: " + pair + ch.sends[k].message.text() +
               " where it expects " + ch.recvs[k].message.text() +
               " (point-to-point messages have no tags: both ends must "
               "agree on their order)";
    }
  }
  // Rule 2: a message moves when both ends are in the exchanges that hold
  // it; an exchange ends when all its messages have moved.
  std::vector<size_t> at(size_t(ranks), 0);
  auto finished = [&](int r) {
    while (at[size_t(r)] < left[size_t(r)].size() &&
           left[size_t(r)][at[size_t(r)]] == 0)
      ++at[size_t(r)];
  };
  for (int r = 0; r < ranks; ++r)
    finished(r);
  for (bool moved = true; moved;) {
    moved = false;
    for (auto &[ends, ch] : channels) {
      const auto [a, b] = ends;
      while (ch.done < ch.sends.size() &&
             at[size_t(a)] == ch.sends[ch.done].exchange &&
             at[size_t(b)] == ch.recvs[ch.done].exchange) {
        --left[size_t(a)][ch.sends[ch.done].exchange];
        --left[size_t(b)][ch.recvs[ch.done].exchange];
        ++ch.done;
        moved = true;
      }
    }
    for (int r = 0; r < ranks; ++r)
      finished(r);
  }
  for (int r = 0; r < ranks; ++r) {
    if (at[size_t(r)] == left[size_t(r)].size())
      continue;
    // The first transfer of its exchange that is still waiting.
    for (const PipeTransfer &t : exchanges[size_t(r)][at[size_t(r)]]) {
      const Channel &ch = channels.at(t.send ? std::make_pair(r, t.peer)
                                             : std::make_pair(t.peer, r));
      const auto &mine = t.send ? ch.sends : ch.recvs;
      bool waiting = false;
      for (size_t k = ch.done; k < mine.size(); ++k)
        if (mine[k].message == t.message)
          waiting = true;
      if (!waiting)
        continue;
      return "pipeline schedule hangs when each send waits for its receive "
             "(as NCCL's do): rank " +
             std::to_string(r) + " waits to " +
             (t.send ? "send " : "receive ") + t.message.text() +
             (t.send ? " to rank " : " from rank ") + std::to_string(t.peer) +
             ", which waits in an exchange it runs before that one (megac "
             "groups a schedule's transfers so that none can hang: a plan "
             "from before that needs compiling again)";
    }
  }
  return "";
}

std::vector<plan::ScheduleStep> evalSteps(int rank, int pp, int vpp) {
  using plan::StepKind;
  std::vector<plan::ScheduleStep> steps;
  const int stages = pp * vpp;
  for (int c = 0; c < vpp; ++c) {
    int stage = c * pp + rank;
    if (stage > 0)
      steps.push_back({StepKind::RecvForward, 0, c});
    steps.push_back({StepKind::Forward, 0, c});
    if (stage + 1 < stages)
      steps.push_back({StepKind::SendForward, 0, c});
  }
  return steps;
}

} // namespace mega::rt

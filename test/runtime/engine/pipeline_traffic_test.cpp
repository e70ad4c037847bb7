//===- pipeline_traffic_test.cpp - Pipeline schedules under NCCL's rules --===//
//
// Every schedule megac can write (GPipe, 1F1B, interleaved; 2-8 ranks, up to
// 4 chunks, 1-32 micro-batches) and its evaluation order must pass the
// pipeline executor's load-time check (PipelineTraffic.h): ranks agree on
// the order of their messages, and no rank waits forever when each send
// waits for its receive; in the unit-cost model (forward 1, backward 2) the
// exchanges cost no time, the makespan being that of pipeline::simulate,
// whose sends never wait. Then the check must refuse what would hang or
// mismatch: the interleaved schedule with one exchange per step (which
// hangs at P=2 V=2 m=4), two sends swapped, a receive left out or late, a
// send nobody receives or before its computation, a transfer on a stage
// that has no neighbour; and the timed model must tell a late schedule (1F1B
// receiving a backward's gradients before the forward it could run first).
// Last, the single-process communicator's exchange.
//
//===----------------------------------------------------------------------===//
#include "PipelineTraffic.h"

#include "mega/Passes/PipelineSchedule.h"
#include "mega/Runtime/Backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <vector>

using namespace mega;
using namespace mega::rt;

namespace {

int failures = 0;

void expect(bool ok, const std::string &what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL %s\n", what.c_str());
    ++failures;
  }
}

using Schedule = std::vector<std::vector<plan::ScheduleStep>>;

std::string check(const Schedule &s, int pp, int vpp) {
  try {
    return checkPipeExchanges(pipeExchanges(s, pp, vpp));
  } catch (const Error &e) {
    return std::string("Error: ") + e.what();
  }
}

void expectRefused(const Schedule &s, int pp, int vpp, const std::string &want,
                   const std::string &what) {
  std::string why = check(s, pp, vpp);
  expect(why.find(want) != std::string::npos,
         what + ": wanted '" + want + "', got '" + why + "'");
  if (!why.empty())
    std::printf("ok   refused %s: %s\n", what.c_str(), why.c_str());
}

/// The unit-cost makespan of `s` (a forward costs 1, a backward 2) when
/// every transfer of an exchange starts once both ends have reached their
/// exchanges and an exchange ends with its last transfer: the step model of
/// pipeline::simulate with each send waiting for its receive. -1 when some
/// rank never finishes.
int64_t exchangeMakespan(const Schedule &s, int pp, int vpp) {
  using plan::StepKind;
  struct Item {
    int64_t cost = 0;                ///< a computation
    std::vector<PipeTransfer> moves; ///< or an exchange
  };
  std::vector<std::vector<Item>> items(s.size());
  for (size_t r = 0; r < s.size(); ++r)
    for (const plan::ScheduleStep &st : s[r]) {
      if (st.kind == StepKind::Forward || st.kind == StepKind::Backward) {
        items[r].push_back({st.kind == StepKind::Forward ? 1 : 2, {}});
      } else if (st.kind != StepKind::Optimizer) {
        if (items[r].empty() || items[r].back().moves.empty())
          items[r].push_back({});
        items[r].back().moves.push_back(stepTransfer(st, int(r), pp, vpp));
      }
    }
  // Where each end of each message waits: (send?, mb, stage, gradient).
  using Id = std::tuple<bool, int64_t, int, bool>;
  std::map<Id, size_t> where;
  for (size_t r = 0; r < s.size(); ++r)
    for (size_t i = 0; i < items[r].size(); ++i)
      for (const PipeTransfer &t : items[r][i].moves)
        where[{t.send, t.message.microbatch, t.message.stage,
               t.message.gradient}] = i;
  std::vector<size_t> at(s.size(), 0);
  std::vector<int64_t> now(s.size(), 0); // when the rank reached items[at]
  std::map<Id, int64_t> moved;           // a send's message: when it moved
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t r = 0; r < s.size(); ++r)
      while (at[r] < items[r].size()) {
        const Item &it = items[r][at[r]];
        int64_t end = now[r] + it.cost;
        bool ready = true;
        for (const PipeTransfer &t : it.moves) {
          Id send{true, t.message.microbatch, t.message.stage,
                  t.message.gradient};
          if (auto m = moved.find(send); m != moved.end()) {
            end = std::max(end, m->second);
            continue;
          }
          Id other{!t.send, t.message.microbatch, t.message.stage,
                   t.message.gradient};
          size_t peer = size_t(t.peer);
          if (at[peer] != where.at(other)) {
            ready = false;
            break;
          }
          int64_t when = std::max(now[r], now[peer]);
          moved[send] = when;
          end = std::max(end, when);
        }
        if (!ready)
          break;
        now[r] = end;
        ++at[r];
        progress = true;
      }
  }
  int64_t makespan = 0;
  for (size_t r = 0; r < s.size(); ++r) {
    if (at[r] != items[r].size())
      return -1;
    makespan = std::max(makespan, now[r]);
  }
  return makespan;
}

void sweep() {
  int configs = 0;
  for (auto kind :
       {pipeline::ScheduleKind::GPipe, pipeline::ScheduleKind::OneFOneB,
        pipeline::ScheduleKind::Interleaved}) {
    bool interleaved = kind == pipeline::ScheduleKind::Interleaved;
    for (int pp = 2; pp <= 8; ++pp)
      for (int vpp = interleaved ? 2 : 1; vpp <= (interleaved ? 4 : 1); ++vpp)
        for (int m = 1; m <= 32; ++m) {
          pipeline::ScheduleConfig c{kind, pp, vpp, m};
          if (!pipeline::checkSchedule(c).empty())
            continue;
          std::string name = std::string(pipeline::scheduleName(kind)) +
                             " P=" + std::to_string(pp) +
                             " V=" + std::to_string(vpp) +
                             " m=" + std::to_string(m);
          std::string why = check(pipeline::planSteps(c), pp, vpp);
          expect(why.empty(), name + ": " + why);
          Schedule eval;
          for (int r = 0; r < pp; ++r)
            eval.push_back(evalSteps(r, pp, vpp));
          why = check(eval, pp, vpp);
          expect(why.empty(), name + " evaluation: " + why);
          // The exchanges cost no time in the unit model: the makespan
          // equals the one with sends that never wait.
          int64_t buffered =
              pipeline::simulate(c, pipeline::buildSchedule(c)).makespan;
          int64_t rendezvous =
              exchangeMakespan(pipeline::planSteps(c), pp, vpp);
          expect(rendezvous == buffered,
                 name + ": makespan " + std::to_string(rendezvous) +
                     " with exchanges, " + std::to_string(buffered) +
                     " with sends that never wait");
          ++configs;
        }
  }
  expect(configs > 300, "the sweep ran " + std::to_string(configs));
  std::printf("ok   %d schedules and their evaluation orders pass, each with "
              "the unit-model makespan of sends that never wait\n",
              configs);
}

/// Each step with its own receive before and send after (one exchange per
/// step, nothing paired).
Schedule unpaired(const pipeline::ScheduleConfig &c) {
  using plan::StepKind;
  Schedule out;
  auto steps = pipeline::buildSchedule(c);
  for (int64_t r = 0; r < c.ranks; ++r) {
    auto &rank = out.emplace_back();
    for (const pipeline::Step &st : steps[size_t(r)]) {
      auto add = [&](StepKind k) {
        rank.push_back({k, int32_t(st.microbatch), int32_t(st.chunk)});
      };
      if (st.recvFrom(c, r) >= 0)
        add(st.forward ? StepKind::RecvForward : StepKind::RecvBackward);
      add(st.forward ? StepKind::Forward : StepKind::Backward);
      if (st.sendTo(c, r) >= 0)
        add(st.forward ? StepKind::SendForward : StepKind::SendBackward);
    }
    rank.push_back({StepKind::Optimizer, 0, 0});
  }
  return out;
}

bool same(const Schedule &a, const Schedule &b) {
  if (a.size() != b.size())
    return false;
  for (size_t r = 0; r < a.size(); ++r) {
    if (a[r].size() != b[r].size())
      return false;
    for (size_t k = 0; k < a[r].size(); ++k)
      if (a[r][k].kind != b[r][k].kind ||
          a[r][k].microbatch != b[r][k].microbatch ||
          a[r][k].chunk != b[r][k].chunk)
        return false;
  }
  return true;
}

/// The index of the step of `kind` for `microbatch` in `steps`; the test's
/// schedules always have it (a missing one ends the test).
size_t stepAt(const std::vector<plan::ScheduleStep> &steps, plan::StepKind kind,
              int32_t microbatch) {
  for (size_t k = 0; k < steps.size(); ++k)
    if (steps[k].kind == kind && steps[k].microbatch == microbatch)
      return k;
  std::fprintf(stderr, "FAIL the schedule has no %s of micro-batch %d\n",
               plan::stepKindName(kind), int(microbatch));
  std::exit(1);
}

void refusals() {
  using plan::StepKind;
  const auto interleaved = pipeline::ScheduleKind::Interleaved;
  // The same order with one exchange per step hangs: rank 0 sends B0's
  // gradients to rank 1 alone, while rank 1 sends B1's first.
  expectRefused(unpaired({interleaved, 2, 2, 4}), 2, 2,
                "hangs when each send waits for its receive (as NCCL's do): "
                "rank 0 waits to send micro-batch 0's gradients for stage 1 "
                "to rank 1",
                "interleaved P=2 V=2 m=4 with one exchange per step");
  expect(exchangeMakespan(unpaired({interleaved, 2, 2, 4}), 2, 2) == -1,
         "the unpaired interleaved order never finishes in the timed model");
  // 1F1B P=2 m=2 with rank 0 receiving B0's gradients before F1 (as a pair
  // would) waits for rank 1's B0 first: 12 units instead of 9.
  Schedule eager =
      pipeline::planSteps({pipeline::ScheduleKind::OneFOneB, 2, 1, 2});
  eager[0] = {{StepKind::Forward, 0, 0},      {StepKind::SendForward, 0, 0},
              {StepKind::RecvBackward, 0, 0}, {StepKind::Forward, 1, 0},
              {StepKind::Backward, 0, 0},     {StepKind::SendForward, 1, 0},
              {StepKind::RecvBackward, 1, 0}, {StepKind::Backward, 1, 0},
              {StepKind::Optimizer, 0, 0}};
  int64_t slow = exchangeMakespan(eager, 2, 1);
  expect(slow == 12, "1F1B with an eager receive: makespan " +
                         std::to_string(slow) + ", not 12");
  // 1F1B and GPipe with one exchange per step are planSteps' own order.
  for (auto kind :
       {pipeline::ScheduleKind::GPipe, pipeline::ScheduleKind::OneFOneB}) {
    pipeline::ScheduleConfig c{kind, 4, 1, 8};
    expect(same(unpaired(c), pipeline::planSteps(c)),
           std::string(pipeline::scheduleName(kind)) +
               ": planSteps is one exchange per step");
  }

  const pipeline::ScheduleConfig oneF{pipeline::ScheduleKind::OneFOneB, 2, 1,
                                      2};
  // Rank 0 runs both forwards, then sends micro-batch 1's activations
  // before micro-batch 0's, which rank 1 receives first.
  Schedule swapped =
      pipeline::planSteps({pipeline::ScheduleKind::GPipe, 2, 1, 2});
  swapped[0] = {{StepKind::Forward, 0, 0},      {StepKind::Forward, 1, 0},
                {StepKind::SendForward, 1, 0},  {StepKind::SendForward, 0, 0},
                {StepKind::RecvBackward, 0, 0}, {StepKind::Backward, 0, 0},
                {StepKind::RecvBackward, 1, 0}, {StepKind::Backward, 1, 0},
                {StepKind::Optimizer, 0, 0}};
  expectRefused(swapped, 2, 1,
                "rank 0 sends rank 1 micro-batch 1's activations for stage 1 "
                "where it expects micro-batch 0's activations for stage 1",
                "two sends swapped");
  // Rank 0 runs micro-batch 1's backward without receiving its gradients.
  Schedule dropped = pipeline::planSteps(oneF);
  dropped[0].erase(dropped[0].begin() +
                   long(stepAt(dropped[0], StepKind::RecvBackward, 1)));
  expectRefused(dropped, 2, 1,
                "Error: pipeline schedule: rank 0 has backward of micro-batch "
                "1 on chunk 0 without a receive before it",
                "a receive left out");
  // Rank 0 sends micro-batch 1's activations a second time, at the end.
  Schedule extra = pipeline::planSteps(oneF);
  extra[0].insert(extra[0].end() - 1, {StepKind::SendForward, 1, 0});
  expectRefused(extra, 2, 1,
                "rank 0 sends rank 1 micro-batch 1's activations for stage 1, "
                "which rank 1 never receives",
                "a send nobody receives");
  // Rank 1 sends micro-batch 0's gradients before computing them.
  Schedule early = pipeline::planSteps(oneF);
  early[1].insert(early[1].begin(), {StepKind::SendBackward, 0, 0});
  expectRefused(early, 2, 1,
                "Error: pipeline schedule: rank 1 has send-backward of "
                "micro-batch 0 on chunk 0 before its computation",
                "a send before its computation");
  // Rank 1 receives micro-batch 1's activations after its forward.
  Schedule late = pipeline::planSteps(oneF);
  size_t recv = stepAt(late[1], StepKind::RecvForward, 1);
  std::swap(late[1][recv], late[1][recv + 1]);
  expectRefused(late, 2, 1,
                "Error: pipeline schedule: rank 1 has forward of micro-batch 1 "
                "on chunk 0 without a receive before it",
                "a receive after its forward");
  // Stage 0 receives nothing.
  Schedule stray = pipeline::planSteps(oneF);
  stray[0].insert(stray[0].begin(), {StepKind::RecvForward, 0, 0});
  expectRefused(stray, 2, 1,
                "Error: pipeline schedule: rank 0 has recv-forward on stage 0, "
                "which has no stage before it",
                "a receive on stage 0");
  // A chunk out of range.
  Schedule chunk = pipeline::planSteps(oneF);
  chunk[1][0].chunk = 1;
  expectRefused(chunk, 2, 1, "Error: pipeline schedule: rank 1 has no chunk 1",
                "a chunk the rank does not have");
}

void singleProcessExchange() {
  auto comm = createSingleProcessCommunicator();
  const ProcessGroup &g = comm->group(plan::ParallelGroup::Pipeline);
  float a[3] = {1, 2, 3}, b[2] = {4, 5}, x[3] = {}, y[2] = {};
  comm->exchange(
      g,
      {{false, 0, x, 12}, {true, 0, a, 12}, {true, 0, b, 8}, {false, 0, y, 8}});
  expect(x[0] == 1 && x[2] == 3 && y[0] == 4 && y[1] == 5,
         "single process: sends meet receives in order");
  std::string why;
  try {
    comm->exchange(g, {{true, 0, a, 12}, {false, 0, y, 8}});
  } catch (const Error &e) {
    why = e.what();
  }
  expect(why == "exchange in a single-process run: a send of 12 bytes meets "
                "a receive of 8",
         "single process: size mismatch: '" + why + "'");
  why.clear();
  try {
    comm->exchange(g, {{true, 1, a, 12}});
  } catch (const Error &e) {
    why = e.what();
  }
  expect(why == "exchange with rank 1 in a single-process run",
         "single process: another rank: '" + why + "'");
  std::printf("ok   single-process exchange\n");
}

} // namespace

int main() {
  sweep();
  refusals();
  singleProcessExchange();
  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("pipeline_traffic_test: all passed\n");
  return 0;
}

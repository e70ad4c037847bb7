//===- lanes_test.cpp - A program's launches on two streams ---------------===//
//
// planLanes and checkLanes (Lanes.h), without a GPU.
//
//   lanes_test              the built-in cases: which launches go to the side
//                           lane, the waits (including those that arena reuse
//                           forces), the join, and checkLanes refusing plans
//                           with a wait, a mark or the join taken away
//   lanes_test PLAN [P...]  the programs of a plan file (all, or those named;
//                           MEGA_LANES_LIST=1 lists every launch's lane and
//                           wait):
//                           each value laid out where the plan puts it (the
//                           arena at its offsets, each persistent and port
//                           apart), the lanes planned as the engine plans
//                           them, checked, and counted (a MatMul into a
//                           persistent tensor, a weight gradient's product,
//                           apart from the other MatMuls)
//
//===----------------------------------------------------------------------===//
#include "Lanes.h"
#include "TestExpect.h"

#include "mega/Plan/Plan.h"
#include "mega/Runtime/Backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

using namespace mega;
using namespace mega::rt;

namespace {

using megatest::expect;

/// Buffers of a made-up arena: buffer b is bytes [64 b, 64 b + 64).
char arena[64 * 16];
Access rd(int b) { return {arena + 64 * b, 64, false}; }
Access wr(int b) { return {arena + 64 * b, 64, true}; }

void testBranch() {
  // 0 writes x (0); 1, a weight gradient, reads x and writes g (1); 2
  // reads x, writes y (2); 3 reads y, writes z (3).
  std::vector<std::vector<Access>> t = {
      {wr(0)}, {rd(0), wr(1)}, {rd(0), wr(2)}, {rd(2), wr(3)}};
  LanePlan p = planLanes(t, {false, true, true, false});
  expect(p.steps[1].lane == 1, "the weight gradient goes to the side lane");
  expect(p.steps[1].wait == 0 && p.steps[0].record,
         "it waits for the launch that wrote what it reads");
  expect(p.steps[2].lane == 0,
         "a product the next main launch reads stays on the main lane");
  expect(p.steps[2].wait == -1 && p.steps[3].wait == -1,
         "the main lane waits for nothing it does not read");
  expect(p.join == 1 && p.steps[1].record,
         "the main lane joins the side lane after the last launch");
  expect(checkLanes(t, p).empty(), "checked: " + checkLanes(t, p));
}

void testReuse() {
  // The side launch 1 reads x (0); the arena gives x's bytes to launch 3's
  // output: 3 must wait for 1. Launch 4 reads g (1), 1's output.
  std::vector<std::vector<Access>> t = {
      {wr(0)}, {rd(0), wr(1)}, {rd(5), wr(2)}, {rd(2), wr(0)}, {rd(1), wr(3)}};
  LanePlan p = planLanes(t, {false, true, false, false, false});
  expect(p.steps[1].lane == 1, "the product goes to the side lane");
  expect(p.steps[3].wait == 1,
         "a launch writing bytes the side launch reads waits for it");
  expect(p.steps[4].wait == -1,
         "a later wait for the same launch is not repeated");
  expect(p.join == -1, "no join when the main lane already waited");
  expect(checkLanes(t, p).empty(), "checked: " + checkLanes(t, p));
}

void testProductAndCopy() {
  // A weight gradient's product (1) writes the gradient (1) and a tail (2);
  // a Copy (2) moves the tail's bias row into the bias gradient (3); the
  // next main launch (3) reads what launch 0 wrote. Both go to the side
  // lane, one after the other, the Copy waiting for nothing.
  std::vector<std::vector<Access>> t = {
      {wr(0)}, {rd(0), wr(1), wr(2)}, {rd(2), wr(3)}, {rd(0), wr(4)}};
  LanePlan p = planLanes(t, {false, true, true, false});
  expect(p.steps[1].lane == 1 && p.steps[2].lane == 1,
         "the product and the Copy of its row both go to the side lane");
  expect(p.steps[2].wait == -1, "the Copy follows the product in stream order");
  expect(p.join == 2, "the join waits for the Copy");
  expect(checkLanes(t, p).empty(), "checked: " + checkLanes(t, p));
  // The product alone, the Copy not takeable: the product's next main
  // launch (the Copy) reads its tail, so it stays on the main lane.
  LanePlan q = planLanes(t, {false, true, false, false});
  expect(q.steps[1].lane == 0 && q.sideLaunches() == 0,
         "a product whose next main launch reads it stays");
}

void testFirstAndOrder() {
  std::vector<std::vector<Access>> t = {
      {rd(0), wr(1)}, {rd(2), wr(3)}, {rd(4), wr(5)}};
  LanePlan p = planLanes(t, {true, true, true});
  expect(p.steps[0].lane == 0, "the first launch stays on the main lane");
  expect(p.steps[2].lane == 0,
         "the last launch stays on the main lane: nothing would run beside "
         "it");
  expect(p.steps[1].lane == 1 && p.steps[1].wait == 0,
         "the first side launch waits for a main one, touching nothing of it "
         "(its stream joins the recording so)");
  expect(checkLanes(t, p).empty(), "checked: " + checkLanes(t, p));
  // Reads never conflict: two launches reading the same bytes may overlap.
  expect(!conflict({rd(0)}, {rd(0)}), "two reads do not conflict");
  expect(conflict({rd(0)}, {wr(0)}) && conflict({wr(0)}, {wr(0)}),
         "a write conflicts with a read or a write of the same bytes");
  expect(!conflict({wr(0)}, {wr(1)}), "adjacent bytes do not conflict");
  expect(!conflict({{arena, 0, true}}, {wr(0)}), "an empty operand touches "
                                                 "nothing");
}

void testCheckRefuses() {
  std::vector<std::vector<Access>> t = {
      {wr(0)}, {rd(0), wr(1)}, {rd(5), wr(2)}, {rd(2), wr(0)}, {rd(1), wr(3)}};
  const LanePlan good = planLanes(t, {false, true, false, false, false});
  LanePlan p = good;
  p.steps[3].wait = -1; // the reuse no longer waits
  expect(checkLanes(t, p).find("may run at once") != std::string::npos,
         "a missing wait is found: " + checkLanes(t, p));
  p = good;
  p.steps[1].record = false;
  expect(checkLanes(t, p).find("records nothing") != std::string::npos,
         "a wait for an unrecorded launch is found: " + checkLanes(t, p));
  p = good;
  p.steps[1].wait = -1;
  expect(checkLanes(t, p).find("joins a recording") != std::string::npos,
         "a first side launch that waits for nothing is found: " +
             checkLanes(t, p));
  std::vector<std::vector<Access>> u = {
      {wr(0)}, {rd(0), wr(1)}, {rd(0), wr(2)}, {rd(2), wr(3)}};
  p = planLanes(u, {false, true, true, false});
  p.join = -1;
  expect(checkLanes(u, p).find("not joined") != std::string::npos,
         "a side lane left unjoined is found: " + checkLanes(u, p));
}

/// The programs of a plan file, as the engine would plan them.
int planFile(const std::string &path, const std::vector<std::string> &only) {
  const plan::Plan plan = plan::readPlanFile(path);
  for (const plan::Program &prog : plan.programs) {
    if (!only.empty() &&
        std::find(only.begin(), only.end(), prog.name) == only.end())
      continue;
    // Each space apart: the arena at 0, persistent k and port k far away.
    auto at = [](const plan::Value &v) {
      const uintptr_t space = uintptr_t(v.space) << 56;
      const uintptr_t index =
          v.space == plan::Space::Arena ? 0 : uintptr_t(v.index) << 40;
      return reinterpret_cast<const char *>(space + index +
                                            uintptr_t(v.offset));
    };
    std::vector<std::vector<Access>> touches;
    std::vector<bool> side;
    for (const plan::Instr &in : prog.instrs) {
      std::vector<Access> t;
      std::vector<const plan::Value *> ins;
      for (int32_t v : in.inputs) {
        const plan::Value &val = prog.values.at(size_t(v));
        t.push_back({at(val), size_t(val.bytes()), false});
        ins.push_back(&val);
      }
      for (int32_t v : in.outputs) {
        const plan::Value &val = prog.values.at(size_t(v));
        t.push_back({at(val), size_t(val.bytes()), true});
      }
      touches.push_back(std::move(t));
      side.push_back(gemmLibraryLaunch(in, ins));
    }
    const LanePlan lanes = planLanes(touches, side);
    const std::string wrong = checkLanes(touches, lanes);
    if (const char *list = std::getenv("MEGA_LANES_LIST");
        list && std::string(list) == "1")
      for (size_t k = 0; k < lanes.steps.size(); ++k)
        std::printf(
            "%4zu %-22s lane %d%s%s\n", k, plan::opName(prog.instrs[k].op),
            lanes.steps[k].lane,
            lanes.steps[k].wait >= 0
                ? (" waits for " + std::to_string(lanes.steps[k].wait)).c_str()
                : "",
            lanes.steps[k].record ? " (marked)" : "");
    // Side launches by opcode; a MatMul whose result is a persistent tensor
    // (a weight gradient's product) apart from the other MatMuls.
    std::map<std::string, int> byOp;
    for (size_t k = 0; k < lanes.steps.size(); ++k) {
      if (lanes.steps[k].lane != 1)
        continue;
      const plan::Instr &in = prog.instrs[k];
      std::string what = plan::opName(in.op);
      if (in.op == plan::Op::MatMul)
        what = !in.outputs.empty() &&
                       prog.values.at(size_t(in.outputs[0])).space ==
                           plan::Space::Persistent
                   ? "MatMul into a persistent"
                   : "other MatMul";
      ++byOp[what];
    }
    std::printf("program %s: %zu launches, %zu on the side lane (",
                prog.name.c_str(), lanes.steps.size(), lanes.sideLaunches());
    bool first = true;
    for (const auto &[op, n] : byOp) {
      std::printf("%s%d %s", first ? "" : ", ", n, op.c_str());
      first = false;
    }
    std::printf("), %zu waits: %s\n", lanes.waits(),
                wrong.empty() ? "checked" : wrong.c_str());
    if (!wrong.empty())
      megatest::fail();
  }
  return megatest::failures() ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
  if (argc > 1) {
    try {
      return planFile(argv[1], std::vector<std::string>(argv + 2, argv + argc));
    } catch (const std::exception &e) {
      std::fprintf(stderr, "lanes_test: %s\n", e.what());
      return 1;
    }
  }
  testBranch();
  testReuse();
  testProductAndCopy();
  testFirstAndOrder();
  testCheckRefuses();
  return megatest::finish();
}

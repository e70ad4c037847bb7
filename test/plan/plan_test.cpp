//===- plan_test.cpp - Plan round trip and every refusal of a bad file ----===//
#include "mega/Plan/Plan.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>

using namespace mega::plan;

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond     \
                << "\n";                                                       \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/// Expects `f` to throw PlanError whose message contains `needle`.
static void expectError(const char *what, const std::function<void()> &f,
                        const std::string &needle) {
  try {
    f();
    std::cerr << what << ": expected a PlanError containing '" << needle
              << "', got none\n";
    ++failures;
  } catch (const PlanError &e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::cerr << what << ": error '" << e.what() << "' lacks '" << needle
                << "'\n";
      ++failures;
    }
  }
}

static Plan samplePlan() {
  Plan p;
  p.config["model"] = "test";
  p.config["hidden"] = "4";
  Persistent w;
  w.name = "w";
  w.shape = {4, 3};
  w.init = Init::Normal;
  w.initStd = 0.02f;
  w.weightDecay = true;
  p.persistents.push_back(w);
  Persistent g;
  g.name = "w";
  g.role = Role::Grad;
  g.shape = {4, 3};
  g.param = 0;
  p.persistents.push_back(g);

  Program prog;
  prog.name = "train";
  prog.arenaBytes = 2 * 3 * 4;
  prog.inputs.push_back({"x", DType::F32, {2, 4}});
  prog.outputs.push_back({"y", DType::F32, {2, 3}});
  prog.values.push_back({Space::Input, 0, 0, DType::F32, {2, 4}});
  prog.values.push_back({Space::Persistent, 0, 0, DType::F32, {4, 3}});
  prog.values.push_back({Space::Arena, 0, 0, DType::F32, {2, 3}});
  prog.values.push_back({Space::Output, 0, 0, DType::F32, {2, 3}});
  Instr mm;
  mm.op = Op::MatMul;
  mm.inputs = {0, 1};
  mm.outputs = {2};
  mm.i = {1, 2, 3, 4, 0, 0, 4, 3, 3, 0, 0, 0};
  mm.f = {1.0f, 0.0f};
  prog.instrs.push_back(mm);
  Instr cp;
  cp.op = Op::Copy;
  cp.inputs = {2};
  cp.outputs = {3};
  prog.instrs.push_back(cp);
  p.programs.push_back(prog);
  return p;
}

int main() {
  Plan p = samplePlan();
  std::vector<uint8_t> bytes = serialize(p);

  // Round trip: the parsed plan prints exactly like the original.
  Plan q = deserialize(bytes.data(), bytes.size());
  std::ostringstream a, b;
  printPlan(p, a);
  printPlan(q, b);
  CHECK(a.str() == b.str());
  CHECK(q.programs.size() == 1 && q.programs[0].instrs.size() == 2);
  CHECK(q.persistents[0].initStd == 0.02f && q.persistents[0].weightDecay);
  CHECK(q.getInt("hidden", 0) == 4);
  CHECK(a.str().find("MatMul(%0, %1)") != std::string::npos);

  expectError("bad magic", [&] {
    auto c = bytes;
    c[0] = 'X';
    deserialize(c.data(), c.size());
  }, "bad magic");
  expectError("unknown version", [&] {
    auto c = bytes;
    c[8] = 7;
    deserialize(c.data(), c.size());
  }, "version 7 is not supported");
  expectError("truncated", [&] {
    deserialize(bytes.data(), bytes.size() - 5);
  }, "truncated");
  expectError("header cut", [&] { deserialize(bytes.data(), 12); },
              "truncated");
  // Every single flipped payload byte is caught by the checksum.
  for (size_t k = 32; k < bytes.size(); ++k) {
    auto c = bytes;
    c[k] ^= 0x5a;
    expectError("flipped byte", [&] { deserialize(c.data(), c.size()); },
                "checksum");
  }
  expectError("operand range", [&] {
    Plan c = samplePlan();
    c.programs[0].instrs[0].inputs[1] = 9;
    validate(c);
  }, "operand out of range");
  expectError("outside buffer", [&] {
    Plan c = samplePlan();
    c.programs[0].values[2].offset = 8;
    validate(c);
  }, "outside its buffer");
  expectError("arity", [&] {
    Plan c = samplePlan();
    c.programs[0].instrs[1].inputs.push_back(0);
    validate(c);
  }, "wrong operand count");
  expectError("dangling grad", [&] {
    Plan c = samplePlan();
    c.persistents[1].param = 1;
    validate(c);
  }, "missing parameter");
  expectError("grad shape", [&] {
    Plan c = samplePlan();
    c.persistents[1].shape = {3, 4};
    validate(c);
  }, "differs in shape");
  expectError("not a regular file", [&] { readPlanFile("/dev/zero"); },
              "not a regular file");
  {
    // A tensor-parallel shard round-trips and prints; one that does not fit
    // its full shape is refused.
    Plan c = samplePlan();
    c.persistents[0].shape = {4, 3};
    c.persistents[0].fullShape = {4, 6};
    c.persistents[0].shardDim = 1;
    c.persistents[0].shardGroups = 3;
    std::vector<uint8_t> b2 = serialize(c);
    Plan d = deserialize(b2.data(), b2.size());
    CHECK(d.persistents[0].shardDim == 1 && d.persistents[0].shardGroups == 3 &&
          d.persistents[0].fullShape == std::vector<int64_t>({4, 6}));
    std::ostringstream t;
    printPlan(d, t);
    CHECK(t.str().find("shard(dim=1 of 4x6, groups=3, group=0)") !=
          std::string::npos);
    c.persistents[0].fullShape = {4, 7};
    expectError("bad shard", [&] { validate(c); }, "does not fit");
  }
  expectError("unknown opcode", [&] {
    Plan c = samplePlan();
    c.programs[0].instrs[1].op = Op(999);
    validate(c);
  }, "unknown opcode");
  expectError("missing file", [&] { readPlanFile("/nonexistent/x.plan"); },
              "cannot open plan");

  // AdamWMulti (opcode 33): 3 + 4n inputs, i = {n, zero_grads}, 3 + n
  // floats; round trip and the validation of each count.
  {
    Plan c = samplePlan();
    Program &prog = c.programs[0];
    Instr a;
    a.op = Op::AdamWMulti;
    a.inputs = {2, 2, 2, 1, 1, 1, 1}; // the kernels' check() refuses aliases
    a.i = {1, 1};
    a.f = {0.9f, 0.999f, 1e-8f, 0.01f};
    prog.instrs.push_back(a);
    validate(c);
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    std::ostringstream x;
    printPlan(d, x);
    CHECK(x.str().find("AdamWMulti(%2, %2, %2, %1, %1, %1, %1) i=[1,1]") !=
          std::string::npos);
    CHECK(!isCollective(Op::AdamWMulti) && kLastOp == Op::ReduceScatterWait &&
          std::string(opName(Op::CrossEntropyWithGrad)) ==
              "CrossEntropyWithGrad");
    auto broken = [&](auto edit) {
      Plan e = c;
      edit(e.programs[0].instrs.back());
      validate(e);
    };
    expectError("adamw multi inputs", [&] {
      broken([](Instr &in) { in.inputs.pop_back(); });
    }, "takes 7 inputs, not 6");
    expectError("adamw multi n", [&] {
      broken([](Instr &in) { in.i = {0, 1}; });
    }, "updates 0 tensors");
    expectError("adamw multi flag", [&] {
      broken([](Instr &in) { in.i = {1, 2}; });
    }, "zero_grads 2 is neither 0 nor 1");
    expectError("adamw multi floats", [&] {
      broken([](Instr &in) { in.f.pop_back(); });
    }, "takes 4 float attributes, not 3");
    expectError("adamw multi outputs", [&] {
      broken([](Instr &in) { in.outputs = {2}; });
    }, "writes 0 bf16 copies but has 1 outputs");
    // The copy flags (mega-bf16-weight-copies): one per tensor, an output
    // per flag set.
    {
      Plan e = c;
      Instr &m = e.programs[0].instrs.back();
      m.i = {1, 1, 1};
      m.outputs = {2};
      validate(e);
      std::vector<uint8_t> eb = serialize(e);
      Plan f = deserialize(eb.data(), eb.size());
      CHECK(f.programs[0].instrs.back().i == m.i &&
            f.programs[0].instrs.back().outputs == m.outputs);
    }
    expectError("adamw multi copy missing", [&] {
      broken([](Instr &in) { in.i = {1, 1, 1}; });
    }, "writes 1 bf16 copies but has 0 outputs");
    expectError("adamw multi copy flag", [&] {
      broken([](Instr &in) { in.i = {1, 1, 2}; in.outputs = {2}; });
    }, "copy flag 2 is neither 0 nor 1");
    expectError("adamw multi copy flags", [&] {
      broken([](Instr &in) { in.i = {1, 1, 1, 0}; });
    }, "takes 2 or 3 integer attributes, not 4");
  }

  // A parameter's bf16 copy (role 4): BF16, its parameter's shape and
  // shard; it round-trips and prints.
  {
    Plan c = samplePlan();
    Persistent k = c.persistents[0];
    k.role = Role::ParamCopy;
    k.dtype = DType::BF16;
    k.init = Init::Zeros;
    k.param = 0;
    c.persistents.push_back(k);
    validate(c);
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    CHECK(d.persistents.back().role == Role::ParamCopy &&
          d.persistents.back().dtype == DType::BF16);
    std::ostringstream x;
    printPlan(d, x);
    CHECK(x.str().find("%p2 param_copy \"w\" 4x3xbf16 of %p0") !=
          std::string::npos);
    // f32, another shape, another shard than its parameter's.
    for (int bad = 0; bad < 3; ++bad)
      expectError("param copy", [&] {
        Plan e = c;
        Persistent &t = e.persistents.back();
        if (bad == 0)
          t.dtype = DType::F32;
        else if (bad == 1)
          t.shape = {3, 4};
        else
          t.shardDim = 0, t.fullShape = {8, 3};
        validate(e);
      }, "param_copy of 'w' differs in shape or dtype");
  }

  // A partial gradient (version 4): a term per rank of the tensor group;
  // it round-trips and prints. Only a gradient can be partial, over a group
  // its parameter is whole over.
  {
    Plan c = samplePlan();
    c.persistents[1].partialGroup = 0;
    validate(c);
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    CHECK(d.persistents[1].partialGroup == 0 &&
          d.persistents[0].partialGroup == -1);
    std::ostringstream x;
    printPlan(d, x);
    CHECK(x.str().find("%p1 grad \"w\" 4x3xf32 of %p0 partial(group=0)\n") !=
          std::string::npos);
    for (int bad = 0; bad < 3; ++bad)
      expectError(
          "partial",
          [&] {
            Plan e = c;
            if (bad == 0) { // a parameter
              e.persistents[1].partialGroup = -1;
              e.persistents[0].partialGroup = 0;
            } else if (bad == 1) { // no such group
              e.persistents[1].partialGroup = 3;
            } else { // the parameter is split over that group
              e.persistents[0].shape = e.persistents[1].shape = {2, 3};
              e.persistents[0].shardDim = 0;
              e.persistents[0].fullShape = {4, 3};
            }
            validate(e);
          },
          "is partial over group");
  }

  // A gradient's tail (version 5): bytes its buffer holds past it, which
  // values may reach; it round-trips and prints. Only a gradient has one,
  // a positive multiple of 4, and a value still stops at its end.
  {
    Plan c = samplePlan();
    c.persistents[1].tailBytes = 16;
    Value past{Space::Persistent, 1, 40, DType::F32, {4}}; // [40, 56) of 64
    c.programs[0].values.push_back(past);
    validate(c);
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    CHECK(d.persistents[1].tailBytes == 16 && d.persistents[0].tailBytes == 0);
    std::ostringstream x;
    printPlan(d, x);
    CHECK(x.str().find("%p1 grad \"w\" 4x3xf32 of %p0 tail(16 bytes)\n") !=
          std::string::npos);
    expectError(
        "value past the tail",
        [&] {
          Plan e = c;
          e.programs[0].values.back().offset = 52; // [52, 68)
          validate(e);
        },
        "lies outside its buffer");
    expectError(
        "value past a tensor without one",
        [&] {
          Plan e = c;
          e.persistents[1].tailBytes = 0;
          validate(e);
        },
        "lies outside its buffer");
    for (int bad = 0; bad < 3; ++bad)
      expectError(
          "tail",
          [&] {
            Plan e = c;
            if (bad == 0) // a parameter
              e.persistents[0].tailBytes = 16;
            else if (bad == 1) // not whole words
              e.persistents[1].tailBytes = 18;
            else
              e.persistents[1].tailBytes = -4;
            validate(e);
          },
          "which only a gradient can have");
  }

  // LayerNormGrad: dx, dw, db, optionally dx's bf16 copy (4 outputs) and
  // its column sums (5).
  {
    Plan c = samplePlan();
    Program &prog = c.programs[0];
    Instr x;
    x.op = Op::LayerNormGrad;
    x.inputs = {0, 0, 0, 0, 0};
    x.outputs = {1, 1, 1, 1};
    x.i = {1, 1, 1, 1};
    prog.instrs.push_back(x);
    validate(c); // 4 outputs pass; the backends check shapes and dtypes
    {
      Plan e = c; // and 5 (the copy's column sums)
      e.programs[0].instrs.back().outputs.push_back(1);
      e.programs[0].instrs.back().i.push_back(0);
      validate(e);
    }
    expectError(
        "layer norm grad 6 outputs",
        [&] {
          Plan e = c;
          e.programs[0].instrs.back().outputs.push_back(1);
          e.programs[0].instrs.back().outputs.push_back(1);
          validate(e);
        },
        "LayerNormGrad has 6 outputs, not 3 (dx, dw, db), 4");
    expectError("layer norm grad 2 outputs", [&] {
      Plan e = c;
      e.programs[0].instrs.back().outputs = {1, 1};
      validate(e);
    }, "LayerNormGrad has 2 outputs");
  }

  // MatMul epilogue 5 (the bias gradient): 14 integer attributes and two
  // outputs; the 14th attribute belongs to it alone.
  {
    Plan c = samplePlan();
    Instr x;
    x.op = Op::MatMul;
    x.inputs = {0, 0};
    x.outputs = {1, 1};
    x.i = {1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 5, 1};
    x.f = {1.0f, 1.0f};
    c.programs[0].instrs.push_back(x);
    validate(c);
    auto with = [&](auto edit) {
      Plan e = c;
      edit(e.programs[0].instrs.back());
      validate(e);
    };
    expectError(
        "epilogue 5 without accumulate",
        [&] { with([](Instr &in) { in.i.pop_back(); }); },
        "MatMul epilogue 5 (bias gradient) and only it takes a 14th");
    expectError(
        "epilogue 1 with a 14th attribute",
        [&] { with([](Instr &in) { in.i[12] = 1; }); },
        "MatMul epilogue 5 (bias gradient) and only it takes a 14th");
    expectError(
        "epilogue 5 with one output",
        [&] { with([](Instr &in) { in.outputs.pop_back(); }); },
        "MatMul with epilogue 5 takes 2 inputs and 2 outputs, not 2 and 1");
    expectError(
        "epilogue 6", [&] { with([](Instr &in) { in.i[12] = 6; }); },
        "MatMul epilogue 6 is not 0 (none)");
  }

  // Collectives (opcodes 17-21): round trip, printing, validation.
  {
    Plan c = samplePlan();
    Program &prog = c.programs[0];
    prog.values.push_back({Space::Arena, 0, 0, DType::F32, {6}});  // %4
    prog.values.push_back({Space::Arena, 0, 0, DType::F32, {3}});  // %5
    prog.values.push_back({Space::Input, 0, 0, DType::I32, {6}});  // %6
    prog.values.push_back({Space::Arena, 0, 0, DType::BF16, {2}}); // %7
    prog.values.push_back({Space::Arena, 0, 0, DType::BF16, {4}}); // %8
    prog.values.push_back({Space::Arena, 0, 0, DType::BF16, {3}}); // %9
    prog.values.push_back({Space::Arena, 0, 0, DType::BF16, {6}}); // %10
    auto add = [&](Op op, std::vector<int32_t> in, std::vector<int32_t> out,
                   std::vector<int64_t> i) {
      Instr x;
      x.op = op;
      x.inputs = std::move(in);
      x.outputs = std::move(out);
      x.i = std::move(i);
      prog.instrs.push_back(x);
    };
    add(Op::AllReduce, {2}, {2}, {1, 0});
    add(Op::AllReduce, {4}, {4}, {0, 1});
    add(Op::ReduceScatter, {4}, {5}, {1});
    add(Op::AllGather, {5}, {4}, {1});
    add(Op::Send, {5}, {}, {2, 1, 7});
    add(Op::Recv, {}, {5}, {2, -1, 7});
    add(Op::AllGather, {7}, {8}, {0}); // bf16: whole 4-byte words
    validate(c);
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    std::ostringstream x, y;
    printPlan(c, x);
    printPlan(d, y);
    CHECK(x.str() == y.str());
    CHECK(x.str().find("%2 = AllReduce(%2) i=[1,0]") != std::string::npos);
    CHECK(x.str().find("%5 = ReduceScatter(%4) i=[1]") != std::string::npos);
    CHECK(x.str().find("%4 = AllGather(%5) i=[1]") != std::string::npos);
    CHECK(x.str().find("Send(%5) i=[2,1,7]") != std::string::npos);
    CHECK(x.str().find("%5 = Recv() i=[2,-1,7]") != std::string::npos);
    CHECK(isCollective(Op::AllReduce) && isCollective(Op::Recv) &&
          !isCollective(Op::Sgd));
    size_t first = prog.instrs.size() - 7;
    auto broken = [&](size_t k, auto edit) {
      Plan e = c;
      edit(e.programs[0].instrs[first + k]);
      validate(e);
    };
    expectError("collective group", [&] {
      broken(0, [](Instr &in) { in.i = {3, 0}; });
    }, "names group 3");
    expectError("collective op", [&] {
      broken(0, [](Instr &in) { in.i = {1, 2}; });
    }, "neither 0 (sum) nor 1 (max)");
    expectError("collective attrs", [&] {
      broken(4, [](Instr &in) { in.i = {1}; });
    }, "Send takes 3 integer attributes");
    expectError("collective sizes", [&] {
      broken(0, [](Instr &in) { in.outputs = {5}; });
    }, "differ in element count");
    expectError("collective multiple", [&] {
      broken(2, [](Instr &in) { in.outputs = {1}; });
    }, "whole multiple");
    expectError("collective dtype", [&] {
      broken(1, [](Instr &in) { in.inputs = {6}; });
    }, "must be f32");
    expectError("collective arity", [&] {
      broken(5, [](Instr &in) { in.inputs = {4}; });
    }, "wrong operand count");
    expectError(
        "bf16 AllGather odd",
        [&] {
          broken(6, [](Instr &in) {
            in.inputs = {9};
            in.outputs = {10};
          });
        },
        "its input's 3 elements are not even");
    expectError(
        "bf16 AllGather into f32",
        [&] { broken(6, [](Instr &in) { in.outputs = {4}; }); },
        "needs a bf16 output");
    expectError(
        "bf16 ReduceScatter",
        [&] {
          broken(2, [](Instr &in) {
            in.inputs = {8};
            in.outputs = {7};
          });
        },
        "must be f32");
  }

  // The distributed optimizer's overlapped reduce-scatters (opcodes 35-36):
  // a start of the accumulators, a wait from them into their blocks.
  {
    Plan c = samplePlan();
    Program &prog = c.programs[0];
    prog.values.push_back({Space::Arena, 0, 0, DType::F32, {6}});  // %4
    prog.values.push_back({Space::Arena, 0, 0, DType::F32, {3}});  // %5
    prog.values.push_back({Space::Arena, 0, 0, DType::F32, {4}});  // %6
    prog.values.push_back({Space::Arena, 0, 0, DType::F32, {2}});  // %7
    prog.values.push_back({Space::Arena, 0, 0, DType::BF16, {3}}); // %8
    Instr start, wait;
    start.op = Op::ReduceScatterStart;
    start.inputs = {4, 6};
    start.i = {1};
    wait.op = Op::ReduceScatterWait;
    wait.inputs = {4, 6};
    wait.outputs = {5, 7};
    wait.i = {1};
    prog.instrs.push_back(start);
    prog.instrs.push_back(wait);
    validate(c);
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    std::ostringstream x;
    printPlan(d, x);
    CHECK(x.str().find("ReduceScatterStart(%4, %6) i=[1]") !=
          std::string::npos);
    CHECK(x.str().find("%5, %7 = ReduceScatterWait(%4, %6) i=[1]") !=
          std::string::npos);
    CHECK(isCollective(Op::ReduceScatterStart) &&
          isBucketOp(Op::ReduceScatterWait) && !isBucketOp(Op::ReduceScatter));
    auto broken = [&](size_t back, auto edit) {
      Plan e = c;
      edit(e.programs[0].instrs[e.programs[0].instrs.size() - 1 - back]);
      validate(e);
    };
    expectError(
        "scatter start attrs",
        [&] { broken(1, [](Instr &in) {
                in.i = {1, 0};
              }); },
        "ReduceScatterStart takes 1 integer attributes");
    expectError(
        "scatter start empty",
        [&] { broken(1, [](Instr &in) { in.inputs.clear(); }); },
        "needs at least one input");
    expectError(
        "scatter wait outputs",
        [&] { broken(0, [](Instr &in) { in.outputs.pop_back(); }); },
        "one output per input");
    expectError(
        "scatter wait multiple",
        [&] { broken(0, [](Instr &in) {
                in.outputs = {5, 5};
              }); },
        "input 1 is not a whole multiple of its output");
    expectError(
        "scatter wait dtype",
        [&] { broken(0, [](Instr &in) {
                in.outputs = {8, 7};
              }); },
        "must be f32");
  }

  // Pipeline schedule (version 3): round trip, printing, validation.
  {
    Plan c = samplePlan();
    c.config["pp"] = "2";
    c.config["num_microbatches"] = "2";
    using K = StepKind;
    c.schedule = {
        {{K::Forward, 0, 0}, {K::SendForward, 0, 0}, {K::Forward, 1, 0},
         {K::SendForward, 1, 0}, {K::RecvBackward, 0, 0}, {K::Backward, 0, 0},
         {K::RecvBackward, 1, 0}, {K::Backward, 1, 0}, {K::Optimizer, 0, 0}},
        {{K::RecvForward, 0, 0}, {K::Forward, 0, 0}, {K::Backward, 0, 0},
         {K::SendBackward, 0, 0}, {K::RecvForward, 1, 0}, {K::Forward, 1, 0},
         {K::Backward, 1, 0}, {K::SendBackward, 1, 0}, {K::Optimizer, 0, 0}}};
    std::vector<uint8_t> cb = serialize(c);
    Plan d = deserialize(cb.data(), cb.size());
    CHECK(d.schedule.size() == 2 && d.schedule[1].size() == 9 &&
          d.schedule[1][4].kind == K::RecvForward &&
          d.schedule[1][4].microbatch == 1);
    std::ostringstream x;
    printPlan(d, x);
    CHECK(x.str().find("schedule rank 1 {\n  recv-forward mb=0 chunk=0\n"
                       "  forward mb=0 chunk=0\n") != std::string::npos);
    CHECK(x.str().find("  optimizer\n}") != std::string::npos);
    auto broken = [&](auto edit) {
      Plan e = c;
      edit(e);
      validate(e);
    };
    expectError("schedule ranks", [&] {
      broken([](Plan &e) { e.config["pp"] = "4"; });
    }, "has 2 ranks but the config says pp=4");
    expectError("schedule microbatch", [&] {
      broken([](Plan &e) { e.schedule[0][2].microbatch = 2; });
    }, "names micro-batch 2 chunk 0 outside m=2, vpp=1");
    expectError("schedule twice", [&] {
      broken([](Plan &e) { e.schedule[1][5].microbatch = 0; });
    }, "does not run every forward and backward exactly once");
    expectError("schedule optimizer", [&] {
      broken([](Plan &e) { e.schedule[0].pop_back(); });
    }, "does not end with the optimizer");
    expectError("schedule kind", [&] {
      broken([](Plan &e) { e.schedule[0][0].kind = StepKind(9); });
    }, "unknown step kind");
  }

  if (failures) {
    std::cerr << failures << " check(s) failed\n";
    return 1;
  }
  std::cout << "plan_test: all checks passed\n";
  return 0;
}

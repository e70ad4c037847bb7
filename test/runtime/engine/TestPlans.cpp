//===- TestPlans.cpp - Small hand-built plans for the runtime tests -------===//
#include "TestPlans.h"

namespace mega::test {

using namespace mega::plan;

namespace {

/// Builds one program: values, arena allocation, instructions.
class ProgramBuilder {
public:
  explicit ProgramBuilder(std::string name, std::string target) {
    p.name = std::move(name);
    p.target = std::move(target);
  }
  int32_t value(Space s, int32_t index, std::vector<int64_t> shape,
                DType dt = DType::F32, int64_t offset = 0) {
    Value v;
    v.space = s;
    v.index = index;
    v.offset = offset;
    v.dtype = dt;
    v.shape = std::move(shape);
    p.values.push_back(v);
    return int32_t(p.values.size() - 1);
  }
  int32_t arena(std::vector<int64_t> shape, DType dt = DType::F32) {
    int32_t v = value(Space::Arena, 0, std::move(shape), dt, p.arenaBytes);
    p.arenaBytes += (p.values[size_t(v)].bytes() + 63) / 64 * 64;
    return v;
  }
  int32_t input(std::string name, std::vector<int64_t> portShape,
                std::vector<int64_t> viewShape, DType dt = DType::F32) {
    p.inputs.push_back({std::move(name), dt, std::move(portShape)});
    return value(Space::Input, int32_t(p.inputs.size() - 1),
                 std::move(viewShape), dt);
  }
  int32_t output(std::string name, std::vector<int64_t> portShape,
                 std::vector<int64_t> viewShape, DType dt = DType::F32) {
    p.outputs.push_back({std::move(name), dt, std::move(portShape)});
    return value(Space::Output, int32_t(p.outputs.size() - 1),
                 std::move(viewShape), dt);
  }
  void instr(Op op, std::vector<int32_t> in, std::vector<int32_t> out,
             std::vector<int64_t> i = {}, std::vector<float> f = {}) {
    p.instrs.push_back(
        {op, std::move(in), std::move(out), std::move(i), std::move(f)});
  }
  Program p;
};

constexpr int64_t kLoad = int64_t(EwOp::Load), kStore = int64_t(EwOp::Store),
                  kConst = int64_t(EwOp::Const), kAdd = int64_t(EwOp::Add),
                  kSub = int64_t(EwOp::Sub), kMul = int64_t(EwOp::Mul),
                  kTanh = int64_t(EwOp::Tanh);

struct Forward {
  int32_t tokens, a, z;
};

/// Emits the forward pass up to the logits z ([rows, V]) into `zOut`, or a
/// fresh arena value when zOut < 0.
Forward forward(ProgramBuilder &b, const BigramConfig &c, int64_t rows,
                int32_t tokens, int32_t zOut) {
  int64_t V = c.vocab, H = c.hidden;
  int32_t wte = b.value(Space::Persistent, 0, {V, H});
  int32_t W = b.value(Space::Persistent, 1, {H, V});
  int32_t bias = b.value(Space::Persistent, 2, {V});
  int32_t h = b.arena({rows, H});
  int32_t a = b.arena({rows, H});
  int32_t z0 = b.arena({rows, V});
  int32_t z = zOut >= 0 ? zOut : b.arena({rows, V});
  b.instr(Op::Embedding, {wte, tokens}, {h}, {rows, V, H, 0});
  b.instr(Op::Elementwise, {h}, {a},
          {rows * H, 1, 1, rows * H, kLoad, 0, 0, 0, kTanh, 1, 0, 0, kStore, 1,
           0, 0});
  b.instr(Op::MatMul, {a, W}, {z0}, {1, rows, V, H, 0, 0, H, V, V, 0, 0, 0},
          {1, 0});
  b.instr(Op::Elementwise, {z0, bias}, {z},
          {rows * V, 2, 1,    rows * V, V, kLoad, 0,      0, 0, kLoad, 1,
           1,        0, kAdd, 2,        0, 1,     kStore, 2, 0, 0});
  return {tokens, a, z};
}

/// The tensor-parallel forward pass (see BigramConfig::tp) up to the local
/// logits zl [rows, V/tp].
Forward forwardTP(ProgramBuilder &b, const BigramConfig &c, int64_t rows,
                  int32_t tokens) {
  int64_t Vl = c.vocab / c.tp, H = c.hidden;
  int32_t wte = b.value(Space::Persistent, 0, {Vl, H});
  int32_t W = b.value(Space::Persistent, 1, {H, Vl});
  int32_t bias = b.value(Space::Persistent, 2, {Vl});
  int32_t h = b.arena({rows, H});
  int32_t a = b.arena({rows, H});
  int32_t z0 = b.arena({rows, Vl});
  int32_t z = b.arena({rows, Vl});
  b.instr(Op::VocabEmbedding, {wte, tokens}, {h}, {rows, Vl, H, 0});
  b.instr(Op::AllReduce, {h}, {h}, {0, 0});
  b.instr(Op::Elementwise, {h}, {a},
          {rows * H, 1, 1, rows * H, kLoad, 0, 0, 0, kTanh, 1, 0, 0, kStore, 1,
           0, 0});
  b.instr(Op::MatMul, {a, W}, {z0},
          {1, rows, Vl, H, 0, 0, H, Vl, Vl, 0, 0, 0}, {1, 0});
  b.instr(Op::Elementwise, {z0, bias}, {z},
          {rows * Vl, 2, 1,    rows * Vl, Vl, kLoad, 0,      0, 0, kLoad, 1,
           1,         0, kAdd, 2,         0,  1,     kStore, 2, 0, 0});
  return {tokens, a, z};
}

/// The vocabulary-parallel loss of local logits z: loss and lse [rows].
void lossTP(ProgramBuilder &b, const BigramConfig &c, int64_t rows, int32_t z,
            int32_t targets, int32_t loss, int32_t lse) {
  int64_t Vl = c.vocab / c.tp;
  int32_t mx = b.arena({rows}), se = b.arena({rows}), tl = b.arena({rows});
  b.instr(Op::RowMax, {z}, {mx}, {rows, Vl});
  b.instr(Op::AllReduce, {mx}, {mx}, {0, 1});
  b.instr(Op::VocabCrossEntropyStats, {z, targets, mx}, {se, tl},
          {rows, Vl, 0});
  b.instr(Op::AllReduce, {se}, {se}, {0, 0});
  b.instr(Op::AllReduce, {tl}, {tl}, {0, 0});
  b.instr(Op::VocabCrossEntropy, {mx, se, tl}, {loss, lse}, {rows});
}

} // namespace

Plan makeBigramPlan(const BigramConfig &c) {
  if (c.tp < 1 || c.vocab % c.tp != 0)
    throw PlanError("tp must divide the vocabulary");
  Plan plan;
  int64_t V = c.vocab, H = c.hidden, S = c.seq, B = c.micro;
  plan.config = {{"model", "bigram-test"},
                 {"layers", "0"},
                 {"hidden", std::to_string(H)},
                 {"heads", "1"},
                 {"vocab", std::to_string(V)},
                 {"seq", std::to_string(S)},
                 {"micro_batch_size", std::to_string(B)},
                 {"num_microbatches", std::to_string(c.microbatches)},
                 {"global_batch_size",
                  std::to_string(B * c.microbatches * c.dp)},
                 {"optimizer", c.optimizer},
                 {"lr", std::to_string(c.lr)},
                 {"tp", std::to_string(c.tp)},
                 {"pp", "1"},
                 {"dp", std::to_string(c.dp)}};
  for (const auto &[k, v] : c.extraConfig)
    plan.config[k] = v;

  auto param = [&](std::string name, std::vector<int64_t> shape, Init init,
                   float stdv, bool decay) {
    Persistent t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.init = init;
    t.initStd = stdv;
    t.weightDecay = decay;
    plan.persistents.push_back(t);
  };
  param("wte.weight", {V, H}, Init::Normal, c.initStd, true);
  param("proj.weight", {H, V}, Init::Normal,
        c.projStd >= 0 ? c.projStd : c.initStd, true);
  param("proj.bias", {V}, Init::Zeros, 0, false);
  auto state = [&](Role role, const char *prefix) {
    for (int32_t k = 0; k < 3; ++k) {
      Persistent t;
      t.name = std::string(prefix) + plan.persistents[size_t(k)].name;
      t.role = role;
      const Persistent &p = plan.persistents[size_t(k)];
      t.shape = p.shape; // sharded like its parameter
      t.shardDim = p.shardDim;
      t.fullShape = p.fullShape;
      t.param = k;
      plan.persistents.push_back(t);
    }
  };
  const bool tp = c.tp > 1;
  if (tp) {
    // wte: rows (vocabulary); proj.weight: columns; proj.bias: its one dim.
    const int32_t dims[3] = {0, 1, 0};
    for (size_t k = 0; k < 3; ++k) {
      Persistent &t = plan.persistents[k];
      t.fullShape = t.shape;
      t.shardDim = dims[k];
      t.shape[size_t(dims[k])] /= c.tp;
    }
  }
  state(Role::Grad, "grad.");
  bool adam = c.optimizer == "adam";
  if (adam) {
    state(Role::AdamM, "adam_m.");
    state(Role::AdamV, "adam_v.");
  }

  int64_t rows = B * S;
  const int64_t Vl = V / c.tp;
  if (tp) { // train, tensor-parallel: as below on the vocabulary shards.
    ProgramBuilder b("train", c.target);
    int32_t tokens = b.input("tokens", {B, S}, {rows}, DType::I32);
    int32_t targets = b.input("targets", {B, S}, {rows}, DType::I32);
    int32_t loss = b.output("loss", {}, {});
    Forward f = forwardTP(b, c, rows, tokens);
    int32_t W = b.value(Space::Persistent, 1, {H, Vl});
    int32_t gwte = b.value(Space::Persistent, 3, {Vl, H});
    int32_t gW = b.value(Space::Persistent, 4, {H, Vl});
    int32_t gb = b.value(Space::Persistent, 5, {Vl});
    int32_t lse = b.arena({rows});
    int32_t dloss = b.arena({});
    int32_t dz = b.arena({rows, Vl});
    int32_t da = b.arena({rows, H});
    int32_t dh = b.arena({rows, H});
    lossTP(b, c, rows, f.z, targets, loss, lse);
    b.instr(Op::Fill, {}, {dloss}, {}, {1.0f / float(c.microbatches * c.dp)});
    b.instr(Op::VocabCrossEntropyGrad, {f.z, targets, lse, dloss}, {dz},
            {rows, Vl, 0});
    b.instr(Op::MatMul, {f.a, dz}, {gW},
            {1, H, Vl, rows, 1, 0, H, Vl, Vl, 0, 0, 0}, {1, 1});
    b.instr(Op::ReduceSum, {dz}, {gb}, {rows, Vl, 1});
    b.instr(Op::MatMul, {dz, W}, {da},
            {1, rows, H, Vl, 0, 1, Vl, Vl, H, 0, 0, 0}, {1, 0});
    b.instr(Op::AllReduce, {da}, {da}, {0, 0});
    b.instr(Op::Elementwise, {da, f.a}, {dh},
            {rows * H, 2, 1,      rows * H, rows * H, kLoad, 0, 0,    0,
             kLoad,    1, 1,      0,        kMul,     2,     1, 1,    kConst,
             3,        0, 0,      kSub,     4,        3,     2, kMul, 5,
             0,        4, kStore, 5,        0,        0},
            {1.0f});
    b.instr(Op::VocabEmbeddingGrad, {dh, tokens}, {gwte}, {rows, Vl, H, 1, 0});
    plan.programs.push_back(std::move(b.p));
  } else { // train: forward, loss, backward accumulating into the grads.
    ProgramBuilder b("train", c.target);
    int32_t tokens = b.input("tokens", {B, S}, {rows}, DType::I32);
    int32_t targets = b.input("targets", {B, S}, {rows}, DType::I32);
    int32_t loss = b.output("loss", {}, {});
    Forward f = forward(b, c, rows, tokens, -1);
    int32_t W = b.value(Space::Persistent, 1, {H, V});
    int32_t gwte = b.value(Space::Persistent, 3, {V, H});
    int32_t gW = b.value(Space::Persistent, 4, {H, V});
    int32_t gb = b.value(Space::Persistent, 5, {V});
    int32_t lse = b.arena({rows});
    int32_t dloss = b.arena({});
    int32_t dz = b.arena({rows, V});
    int32_t da = b.arena({rows, H});
    int32_t dh = b.arena({rows, H});
    b.instr(Op::CrossEntropy, {f.z, targets}, {loss, lse}, {rows, V});
    b.instr(Op::Fill, {}, {dloss}, {}, {1.0f / float(c.microbatches * c.dp)});
    b.instr(Op::CrossEntropyGrad, {f.z, targets, lse, dloss}, {dz}, {rows, V});
    b.instr(Op::MatMul, {f.a, dz}, {gW},
            {1, H, V, rows, 1, 0, H, V, V, 0, 0, 0}, {1, 1});
    b.instr(Op::ReduceSum, {dz}, {gb}, {rows, V, 1});
    b.instr(Op::MatMul, {dz, W}, {da}, {1, rows, H, V, 0, 1, V, V, H, 0, 0, 0},
            {1, 0});
    b.instr(Op::Elementwise, {da, f.a}, {dh},
            {rows * H, 2, 1,      rows * H, rows * H, kLoad, 0, 0,    0,
             kLoad,    1, 1,      0,        kMul,     2,     1, 1,    kConst,
             3,        0, 0,      kSub,     4,        3,     2, kMul, 5,
             0,        4, kStore, 5,        0,        0},
            {1.0f});
    b.instr(Op::EmbeddingGrad, {dh, tokens}, {gwte}, {rows, V, H, 1});
    plan.programs.push_back(std::move(b.p));
  }
  { // optimizer: norm, update, zero the grads.
    ProgramBuilder b("optimizer", c.target);
    int32_t lr = b.input("lr", {}, {});
    int32_t step = b.input("step", {}, {});
    int32_t norm = b.output("grad_norm", {}, {});
    int32_t coef = b.arena({});
    std::vector<int32_t> p, g, m, v;
    for (int32_t k = 0; k < 3; ++k) {
      const auto &shape = plan.persistents[size_t(k)].shape;
      p.push_back(b.value(Space::Persistent, k, shape));
      g.push_back(b.value(Space::Persistent, 3 + k, shape));
      if (adam) {
        m.push_back(b.value(Space::Persistent, 6 + k, shape));
        v.push_back(b.value(Space::Persistent, 9 + k, shape));
      }
    }
    if (c.dp > 1)
      for (int32_t gk : g)
        b.instr(Op::AllReduce, {gk}, {gk}, {1, 0});
    if (tp) // every gradient here is a shard over the tensor group
      b.instr(Op::GradNorm, g, {norm, coef}, {0, 1, 1, 1}, {c.clip});
    else
      b.instr(Op::GradNorm, g, {norm, coef}, {}, {c.clip});
    for (size_t k = 0; k < 3; ++k) {
      float wd = plan.persistents[k].weightDecay ? c.weightDecay : 0.0f;
      if (adam)
        b.instr(Op::AdamW, {p[k], g[k], m[k], v[k], lr, step, coef}, {}, {},
                {0.9f, 0.999f, 1e-8f, wd});
      else
        b.instr(Op::Sgd, {p[k], g[k], lr, coef}, {}, {}, {wd});
    }
    for (size_t k = 0; k < 3; ++k)
      b.instr(Op::Fill, {}, {g[k]}, {}, {0.0f});
    plan.programs.push_back(std::move(b.p));
  }
  { // eval: forward and loss only.
    ProgramBuilder b("eval", c.target);
    int32_t tokens = b.input("tokens", {B, S}, {rows}, DType::I32);
    int32_t targets = b.input("targets", {B, S}, {rows}, DType::I32);
    int32_t loss = b.output("loss", {}, {});
    int32_t lse = b.arena({rows});
    if (tp) {
      Forward f = forwardTP(b, c, rows, tokens);
      lossTP(b, c, rows, f.z, targets, loss, lse);
    } else {
      Forward f = forward(b, c, rows, tokens, -1);
      b.instr(Op::CrossEntropy, {f.z, targets}, {loss, lse}, {rows, V});
    }
    plan.programs.push_back(std::move(b.p));
  }
  { // predict: logits of one sequence.
    ProgramBuilder b("predict", c.target);
    int32_t tokens = b.input("tokens", {1, S}, {S}, DType::I32);
    int32_t logits = b.output("logits", {1, S, V}, {S, V});
    if (tp) {
      // Gather the vocabulary shards ([tp, S, Vl], rank-major) and put the
      // ranks' columns side by side: [S, tp, Vl] = [S, V].
      Forward f = forwardTP(b, c, S, tokens);
      int32_t all = b.arena({c.tp * S, Vl});
      int32_t out = b.value(Space::Output, 0, {S, c.tp, Vl});
      b.instr(Op::AllGather, {f.z}, {all}, {0});
      b.p.values[size_t(all)].shape = {c.tp, S, Vl};
      b.instr(Op::Transpose, {all}, {out}, {3, c.tp, S, Vl, 1, 0, 2});
    } else {
      forward(b, c, S, tokens, logits);
    }
    plan.programs.push_back(std::move(b.p));
  }
  validate(plan);
  return plan;
}

} // namespace mega::test

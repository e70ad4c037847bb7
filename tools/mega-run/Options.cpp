//===- Options.cpp - mega-run's command line
//-------------------------------===//
#include "Options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <vector>

namespace mega::run {

using rt::Error;

const char *usage() {
  return R"(usage:
  mega-run PLAN --data PREFIX --steps N [options]          train
  mega-run PLAN --generate --prompt TEXT --load CKPT --tokenizer-model M.model
                                                            generate text
training:
  --data PREFIX              Megatron .bin/.idx training data
  --steps N                  iterations to train to (alias --train-iters)
  --lr X                     peak learning rate (default: the plan's lr)
  --min-lr X                 cosine floor (default 0)
  --lr-schedule S            constant | cosine (alias --lr-decay-style)
  --warmup N                 linear warmup iterations (alias --lr-warmup-iters)
  --seed S                   parameter init and data order (default 1234)
  --load DIR|FILE            resume from a checkpoint dir / load parameters
  --save DIR                 write checkpoints here (at the end and every
  --save-interval N            N iterations)
  --log-interval N           iterations per log line (default 100)
  --log-file F.jsonl         also write the log as JSON lines
  --eval-data PREFIX         validation data, evaluated at the end and every
  --eval-interval N            N iterations over
  --eval-iters K               K micro-batches (default 10 or all)
  --no-shuffle               sample i = tokens [i*S, i*S+S+1), in order
  --dump-grads FILE          gradients of the first iteration (safetensors)
  --trace FILE.json          Chrome trace of programs and kernels
  --no-cuda-graph            launch every kernel on its own (by default a
                               one-rank cuda run replays each program made
                               only of plain kernels as a CUDA graph)
  --wgrad-stream             cuda: record the weight gradients' products
                               (and their bias rows' copies) on a second
                               stream, beside the backward they branch off,
                               ordered by the bytes each launch touches (the
                               programs replayed as CUDA graphs: one rank)
generation:
  --prompt TEXT  --max-new-tokens N (64)  --temperature T (1.0; 0 = greedy)
  --top-k K (0 = all)  --tokenizer-model M.model
both:
  --device cpu|cuda          (default: the plan's target)  --threads N
  --comm auto|nccl|host      how collectives move data (default auto: NCCL on
                               device memory when the device is cuda and
                               every rank has its own GPU, else host-staged
                               through MPI)
  --comm-timeout S           seconds any NCCL operation may take before the
                               job ends with an error (default 300)
  --attention-backend auto|fused|local
                             cuda: fused = cuDNN's fused attention for bf16,
                               local = mega's kernels (deterministic run to
                               run); auto (default): fused where cuDNN is
                               loaded and accepts the problem, else local
  --no-gemm-autotune         cuda: take cuBLASLt's heuristic's first
                               algorithm for each bf16 GEMM (by default a
                               run times its candidates at the GEMM's first
                               call and keeps the fastest, so two runs may
                               differ in the last bits; --gemm-autotune says
                               so explicitly)
  --gemm-autotune-wide       cuda: time more candidates per GEMM: one
                               configuration of each of cuBLASLt's algorithm
                               ids and split-K forms of the products that
                               leave the GPU part idle (a longer first step)
  --gemm-autotune-file FILE  cuda: keep the timed choices in FILE: a run
                               uses those it finds (untimed) and adds the
                               rest, so runs of one plan on one GPU and
                               cuBLASLt pick the same algorithms
parallel plans (tp*pp*dp ranks): mpirun -np N mega-run PLAN ...
)";
}

namespace {

enum class Mode { Train, Generate, Both };

struct Spec {
  std::vector<const char *> names;
  Mode mode;
  bool takesValue;
  std::function<void(const std::string &flag, const std::string &value)> set;
};

int64_t parseInt(const std::string &flag, const std::string &v, int64_t min) {
  char *end = nullptr;
  errno = 0;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno)
    throw Error(flag + " expects an integer, got '" + v + "'");
  if (n < min)
    throw Error(flag + " must be at least " + std::to_string(min) + ", got " +
                v);
  return n;
}

uint64_t parseU64(const std::string &flag, const std::string &v) {
  char *end = nullptr;
  errno = 0;
  if (v.empty() || v[0] == '-')
    throw Error(flag + " expects a non-negative integer, got '" + v + "'");
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (*end || errno)
    throw Error(flag + " expects a non-negative integer, got '" + v + "'");
  return n;
}

double parseFloat(const std::string &flag, const std::string &v) {
  char *end = nullptr;
  errno = 0;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || errno || !std::isfinite(d))
    throw Error(flag + " expects a number, got '" + v + "'");
  if (d < 0)
    throw Error(flag + " must not be negative, got " + v);
  return d;
}

} // namespace

Options parseOptions(int argc, char **argv) {
  Options o;
  rt::TrainOptions &t = o.train;
  bool haveSaveInterval = false, haveEvalIters = false, haveAutotune = false;
  const Mode T = Mode::Train, G = Mode::Generate, B = Mode::Both;
  auto str = [](std::string &dst) {
    return [&dst](const std::string &, const std::string &v) { dst = v; };
  };
  auto i64 = [](int64_t &dst, int64_t min) {
    return [&dst, min](const std::string &f, const std::string &v) {
      dst = parseInt(f, v, min);
    };
  };
  auto f64 = [](double &dst) {
    return [&dst](const std::string &f, const std::string &v) {
      dst = parseFloat(f, v);
    };
  };
  std::vector<Spec> specs = {
      {{"--help", "-h"}, B, false, [&](auto &, auto &) { o.help = true; }},
      {{"--data", "--data-path"}, T, true, str(t.data)},
      {{"--steps", "--train-iters"}, T, true, i64(t.steps, 1)},
      {{"--lr"}, T, true, f64(t.lr)},
      {{"--min-lr"}, T, true, f64(t.minLr)},
      {{"--lr-schedule", "--lr-decay-style"}, T, true, str(t.schedule)},
      {{"--warmup", "--lr-warmup-iters"}, T, true, i64(t.warmup, 0)},
      {{"--seed"},
       B,
       true,
       [&](const std::string &f, const std::string &v) {
         t.seed = parseU64(f, v);
       }},
      {{"--load"}, B, true, str(t.load)},
      {{"--save"}, T, true, str(t.save)},
      {{"--save-interval"},
       T,
       true,
       [&](const std::string &f, const std::string &v) {
         t.saveInterval = parseInt(f, v, 1);
         haveSaveInterval = true;
       }},
      {{"--log-interval"}, T, true, i64(t.logInterval, 1)},
      {{"--log-file"}, T, true, str(t.logFile)},
      {{"--eval-interval"}, T, true, i64(t.evalInterval, 1)},
      {{"--eval-data", "--valid-data-path"}, T, true, str(t.evalData)},
      {{"--eval-iters"},
       T,
       true,
       [&](const std::string &f, const std::string &v) {
         t.evalIters = parseInt(f, v, 1);
         haveEvalIters = true;
       }},
      {{"--no-shuffle"}, T, false, [&](auto &, auto &) { t.shuffle = false; }},
      {{"--dump-grads"}, T, true, str(t.dumpGrads)},
      {{"--trace"}, T, true, str(t.trace)},
      {{"--no-cuda-graph"},
       T,
       false,
       [&](auto &, auto &) { o.cudaGraph = false; }},
      {{"--wgrad-stream"},
       T,
       false,
       [&](auto &, auto &) { o.wgradStream = true; }},
      {{"--device"}, B, true, str(o.device)},
      {{"--comm"},
       B,
       true,
       [&](const std::string &f, const std::string &v) {
         if (v == "auto")
           o.comm = rt::CommPath::Auto;
         else if (v == "nccl")
           o.comm = rt::CommPath::Nccl;
         else if (v == "host")
           o.comm = rt::CommPath::Host;
         else
           throw Error(f + " must be 'auto', 'nccl' or 'host', not '" + v +
                       "'");
       }},
      {{"--attention-backend"},
       B,
       true,
       [&](const std::string &f, const std::string &v) {
         if (v == "auto")
           o.attention = rt::AttentionBackend::Auto;
         else if (v == "fused")
           o.attention = rt::AttentionBackend::Fused;
         else if (v == "local")
           o.attention = rt::AttentionBackend::Local;
         else
           throw Error(f + " must be 'auto', 'fused' or 'local', not '" + v +
                       "'");
       }},
      {{"--gemm-autotune"},
       B,
       false,
       [&](auto &, auto &) { haveAutotune = true; }},
      {{"--gemm-autotune-wide"},
       B,
       false,
       [&](auto &, auto &) { o.gemmAutotuneWide = true; }},
      {{"--no-gemm-autotune"},
       B,
       false,
       [&](auto &, auto &) { o.gemmAutotune = false; }},
      {{"--gemm-autotune-file"},
       B,
       true,
       [&](const std::string &, const std::string &v) {
         o.gemmAutotuneFile = v;
       }},
      {{"--comm-timeout"},
       B,
       true,
       [&](const std::string &f, const std::string &v) {
         o.commTimeout = parseFloat(f, v);
         if (!(o.commTimeout > 0) || o.commTimeout > 1e6)
           throw Error(f + " must be a number of seconds in (0, 1e6], got " +
                       v);
       }},
      {{"--threads"},
       B,
       true,
       [&](const std::string &f, const std::string &v) {
         o.threads = int(parseInt(f, v, 0));
         if (o.threads > 4096)
           throw Error(f + " is unreasonably large: " + v);
       }},
      {{"--generate"}, G, false, [&](auto &, auto &) { o.generate = true; }},
      {{"--prompt"},
       G,
       true,
       [&](const std::string &, const std::string &v) {
         o.prompt = v;
         o.havePrompt = true;
       }},
      {{"--max-new-tokens"}, G, true, i64(o.maxNewTokens, 0)},
      {{"--temperature"}, G, true, f64(o.temperature)},
      {{"--top-k"}, G, true, i64(o.topK, 0)},
      {{"--tokenizer-model"}, G, true, str(o.tokenizerModel)},
  };

  std::vector<std::string> seen[3];
  for (int k = 1; k < argc; ++k) {
    std::string arg = argv[k];
    if (arg.size() < 2 || arg[0] != '-' || arg == "--") {
      if (arg == "--")
        throw Error("unexpected argument '--'");
      if (!o.plan.empty())
        throw Error("unexpected argument '" + arg + "' (the plan is '" +
                    o.plan + "')");
      o.plan = arg;
      continue;
    }
    std::string name = arg, value;
    bool inlineValue = false;
    if (size_t eq = arg.find('=');
        eq != std::string::npos && arg.rfind("--", 0) == 0) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inlineValue = true;
    }
    const Spec *spec = nullptr;
    for (const Spec &s : specs)
      for (const char *n : s.names)
        if (name == n)
          spec = &s;
    if (!spec)
      throw Error("unknown option '" + name + "' (see mega-run --help)");
    if (spec->takesValue && !inlineValue) {
      if (k + 1 >= argc)
        throw Error("option " + name + " needs a value");
      value = argv[++k];
    } else if (!spec->takesValue && inlineValue) {
      throw Error("option " + name + " takes no value");
    }
    spec->set(name, value);
    seen[int(spec->mode)].push_back(name);
  }
  if (o.help)
    return o;

  if (o.plan.empty())
    throw Error("no plan given (usage: mega-run PLAN --data PREFIX --steps N "
                "...; see --help)");
  if (o.wgradStream && !o.cudaGraph)
    throw Error("--wgrad-stream splits a program's CUDA graph over two "
                "streams; it cannot go with --no-cuda-graph");
  if (!o.gemmAutotune &&
      (haveAutotune || o.gemmAutotuneWide || !o.gemmAutotuneFile.empty()))
    throw Error(std::string("--no-gemm-autotune cannot go with ") +
                (haveAutotune         ? "--gemm-autotune"
                 : o.gemmAutotuneWide ? "--gemm-autotune-wide"
                                      : "--gemm-autotune-file"));
  if (o.generate) {
    if (!seen[int(Mode::Train)].empty())
      throw Error("option " + seen[int(Mode::Train)].front() +
                  " does not apply to --generate");
    if (!o.havePrompt)
      throw Error("--generate needs --prompt TEXT");
    if (t.load.empty())
      throw Error("--generate needs --load CHECKPOINT");
    if (o.tokenizerModel.empty())
      throw Error("--generate needs --tokenizer-model M.model");
  } else {
    if (!seen[int(Mode::Generate)].empty())
      throw Error("option " + seen[int(Mode::Generate)].front() +
                  " only applies with --generate");
    if (t.data.empty())
      throw Error("no training data given (--data PREFIX)");
    if (t.steps <= 0)
      throw Error("no iteration count given (--steps N)");
    if (haveSaveInterval && t.save.empty())
      throw Error("--save-interval needs --save DIR");
    if (haveEvalIters && t.evalData.empty())
      throw Error("--eval-iters needs --eval-data PREFIX");
    if (t.evalInterval > 0 && t.evalData.empty())
      throw Error("--eval-interval needs --eval-data PREFIX");
    rt::LrSchedule::parseStyle(t.schedule);
  }
  return o;
}

} // namespace mega::run

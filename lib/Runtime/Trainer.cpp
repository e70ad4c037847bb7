//===- Trainer.cpp - The training loop
//-------------------------------------===//
#include "Trainer.h"

#include "Checkpoint.h"
#include "DataLoader.h"
#include "Logger.h"
#include "Pipeline.h"
#include "Trace.h"

#include <chrono>
#include <cstdio>
#include <tuple>
#include <cmath>
#include <map>

namespace mega::rt {

namespace {

using Clock = std::chrono::steady_clock;

double msSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void requireShape(const plan::Port &p, const std::string &program,
                  plan::DType dtype, size_t rank) {
  if (p.dtype != dtype || p.shape.size() != rank)
    throw Error("plan program '" + program + "' port '" + p.name + "' is " +
                plan::dtypeName(p.dtype) + " of rank " +
                std::to_string(p.shape.size()) + "; expected " +
                plan::dtypeName(dtype) + " of rank " + std::to_string(rank));
}

void requireScalar(const plan::Port &p, const std::string &program) {
  int64_t n = 1;
  for (int64_t d : p.shape)
    n *= d;
  if (p.dtype != plan::DType::F32 || n != 1)
    throw Error("plan program '" + program + "' port '" + p.name +
                "' must be an f32 scalar");
}

/// Checks tokens/targets [B,S] i32 and loss f32 [] of a train/eval program;
/// returns {B, S}.
std::pair<int64_t, int64_t> checkLossProgram(ProgramRunner &p) {
  const plan::Port &tok = p.requireInput("tokens");
  const plan::Port &tgt = p.requireInput("targets");
  requireShape(tok, p.name(), plan::DType::I32, 2);
  requireShape(tgt, p.name(), plan::DType::I32, 2);
  if (tgt.shape != tok.shape)
    throw Error("plan program '" + p.name() +
                "' has targets shaped unlike its tokens");
  requireScalar(p.requireOutput("loss"), p.name());
  if (tok.shape[0] <= 0 || tok.shape[1] <= 0)
    throw Error("plan program '" + p.name() + "' has an empty tokens port");
  return {tok.shape[0], tok.shape[1]};
}

} // namespace

Trainer::Trainer(Engine &engine, TrainOptions options)
    : engine_(engine), opts_(std::move(options)) {
  const plan::Plan &plan = engine.plan();
  const bool pipelined = !plan.schedule.empty();
  int64_t B, S;
  if (pipelined) {
    // Not every stage reads tokens: the geometry is the plan's.
    B = plan.getInt("micro_batch_size", 0);
    S = plan.getInt("seq", 0);
    if (B <= 0 || S <= 0)
      throw Error("pipelined plan has no micro_batch_size and seq config");
  } else {
    ProgramRunner &train = engine.program("train");
    ProgramRunner &opt = engine.program("optimizer");
    std::tie(B, S) = checkLossProgram(train);
    requireScalar(opt.requireInput("lr"), "optimizer");
    if (const plan::Port *p = opt.inputPort("step"))
      requireScalar(*p, "optimizer");
    if (const plan::Port *p = opt.outputPort("grad_norm"))
      requireScalar(*p, "optimizer");
  }
  shape_.micro = B;
  shape_.seq = S;

  int64_t dp = plan.getInt("dp", 1);
  if (dp <= 0)
    throw Error("plan config dp=" + std::to_string(dp) + " is not positive");
  int64_t nmb = plan.getInt("num_microbatches", 0);
  int64_t G = plan.getInt("global_batch_size", 0);
  if (nmb <= 0)
    nmb = G > 0 ? G / (B * dp) : 1;
  if (nmb <= 0)
    throw Error(
        "plan config global_batch_size=" + std::to_string(G) +
        " is smaller than micro_batch_size*dp=" + std::to_string(B * dp));
  if (G <= 0)
    G = B * nmb * dp;
  if (G != B * nmb * dp)
    throw Error(
        "plan config global_batch_size=" + std::to_string(G) +
        " is not micro_batch_size*num_microbatches*dp = " + std::to_string(B) +
        "*" + std::to_string(nmb) + "*" + std::to_string(dp));
  shape_.microbatches = nmb;
  shape_.global = G;
  shape_.vocab = plan.getInt("vocab", 0);
  if (shape_.vocab <= 0) {
    int wte = engine.memory().findParam("wte.weight");
    shape_.vocab = wte >= 0 ? engine.memory().info(size_t(wte)).shape.at(0)
                            : int64_t(1) << 31;
  }

  if (opts_.steps <= 0)
    throw Error("--steps (or --train-iters) must be given and positive");
  schedule_.style = LrSchedule::parseStyle(opts_.schedule);
  schedule_.maxLr = std::isnan(opts_.lr) ? plan.getFloat("lr", 1e-4) : opts_.lr;
  schedule_.minLr = opts_.minLr;
  schedule_.warmup = opts_.warmup;
  schedule_.total = opts_.steps;
  if (opts_.warmup < 0)
    throw Error("--warmup must not be negative");
  if (opts_.logInterval <= 0)
    opts_.logInterval = std::min<int64_t>(100, opts_.steps);
  if (opts_.evalInterval > 0 && opts_.evalData.empty())
    throw Error("--eval-interval needs --eval-data PREFIX");
  if (!opts_.evalData.empty() && !pipelined)
    engine.program("eval");

  int64_t params = engine.memory().parameterCount();
  flopsPerToken_ = plan.getFloat("flops_per_token", 0.0);
  if (flopsPerToken_ <= 0)
    flopsPerToken_ =
        6.0 * double(params) + 12.0 * double(plan.getInt("layers", 0)) *
                                   double(plan.getInt("hidden", 0)) * double(S);
  // Data parallelism: the plan's dp must be the data group's size (the
  // launch was checked against tp*pp*dp already).
  const ProcessGroup &data = engine.comm().group(plan::ParallelGroup::Data);
  if (data.size != dp)
    throw Error("the plan has dp=" + std::to_string(dp) +
                " but this run's data-parallel group has " +
                std::to_string(data.size) + " ranks");
  dataRank_ = data.rank;
  writer_ = engine.comm().worldRank() == 0;
  rng_ = Rng(mix64(opts_.seed ^ 0x72756e74696d65ull));
  dataSeed_ = opts_.seed;
  tokens_.resize(size_t(B * S));
  targets_.resize(size_t(B * S));
  // Only world rank 0 logs (the loss it logs is the mean over all ranks).
  logger_ = writer_ ? std::make_unique<Logger>(opts_.logFile, opts_.progressBar)
                    : std::make_unique<Logger>("", false);
  logger_->setQuiet(!writer_);
  // One trace file: world rank 0's (pid = its rank). With a pipeline every
  // rank records its steps (no kernels, which would stretch them) into its
  // own file, so that the bubble can be measured.
  if (!opts_.trace.empty() && (writer_ || pipelined)) {
    if (pipelined) {
      // Meet the other stages first, so that the ranks' clocks start
      // together (to an MPI latency) and their traces line up.
      float dummy = 0;
      engine.comm().allReduce(engine.comm().group(plan::ParallelGroup::Pipeline),
                              &dummy, &dummy, 1, plan::ReduceOp::Sum);
    }
    tracer_ = std::make_unique<Tracer>(int(opts_.rank), !pipelined);
  }
  if (pipelined)
    pipeline_ = std::make_unique<PipelineExecutor>(engine, tracer_.get());
}

Trainer::~Trainer() = default;

void Trainer::prepare() {
  // Parameters from the seed, everything else zero; a checkpoint then
  // overwrites the parameters (and, from a directory, the moments).
  Memory &mem = engine_.memory();
  mem.initialize(opts_.seed);
  if (!opts_.load.empty()) {
    LoadResult r = loadCheckpoint(opts_.load, engine_.plan(), mem, true);
    for (const std::string &w : r.warnings)
      logger_->info("mega-run: warning: " + w);
    if (r.resumed) {
      iteration_ = r.state.iteration;
      consumed_ = r.state.consumedSamples;
      dataSeed_ = r.state.dataSeed;
      if (!r.state.rng.empty())
        rng_.restore(r.state.rng);
      if (r.state.shuffle != opts_.shuffle)
        logger_->info(std::string("mega-run: warning: the checkpoint was "
                                  "trained ") +
                      (r.state.shuffle ? "with" : "without") +
                      " shuffling; this run continues " +
                      (opts_.shuffle ? "with" : "without") + " it");
      logger_->info("mega-run: resumed from " + r.source + " at iteration " +
                    std::to_string(iteration_) + ", " +
                    std::to_string(consumed_) + " samples consumed");
    } else {
      logger_->info("mega-run: loaded parameters from " + r.source);
    }
  }

  train_ = std::make_unique<SampleSource>(opts_.data, shape_.seq, shape_.vocab,
                                          opts_.shuffle, dataSeed_);
  if (!opts_.evalData.empty()) {
    // A pipelined plan evaluates with its stages' forward programs, at the
    // training micro-batch.
    auto [Be, Se] = pipeline_ ? std::make_pair(shape_.micro, shape_.seq)
                              : checkLossProgram(engine_.program("eval"));
    eval_ = std::make_unique<SampleSource>(opts_.evalData, Se, shape_.vocab,
                                           false, 0);
    int64_t available = eval_->numSamples() / Be;
    if (available < 1)
      throw Error("eval dataset '" + opts_.evalData + "' has " +
                  std::to_string(eval_->numSamples()) +
                  " samples, fewer than one eval micro-batch of " +
                  std::to_string(Be));
    evalTokens_.resize(size_t(Be * Se));
    evalTargets_.resize(size_t(Be * Se));
    evalBatches_ = opts_.evalIters > 0 ? std::min(opts_.evalIters, available)
                                       : std::min<int64_t>(10, available);
  }

  const plan::Plan &plan = engine_.plan();
  logger_->info(
      "mega-run: " + std::to_string(engine_.memory().parameterCount()) +
      " parameters (" + plan.get("model", "model") + ", layers=" +
      plan.get("layers", "?") + ", hidden=" + plan.get("hidden", "?") +
      ", heads=" + plan.get("heads", "?") +
      ", vocab=" + std::to_string(shape_.vocab) +
      ", seq=" + std::to_string(shape_.seq) + ")");
  logger_->info("mega-run: micro batch " + std::to_string(shape_.micro) +
                " x " + std::to_string(shape_.microbatches) +
                " micro-batches = global batch " +
                std::to_string(shape_.global) + "; data " + opts_.data + ": " +
                std::to_string(train_->numTokens()) + " tokens, " +
                std::to_string(train_->numSamples()) + " samples" +
                (opts_.shuffle ? "" : " (no shuffle)"));
  if (!pipeline_) // (pipeline ranks report theirs at the end)
    logger_->info("mega-run: " +
                  std::to_string(engine_.memory().residentBytes()) +
                  " bytes of persistent tensors (parameters, gradients, "
                  "optimizer state) per rank");
  // The compiler's memory plan as allocated (rank 0's, the one that logs):
  // comparable with a framework's peak allocated bytes for the same step.
  Engine::PlannedBytes planned = engine_.plannedBytes();
  logger_->info("mega-run: " + std::to_string(planned.total()) +
                " bytes of device memory planned on rank 0 (persistent "
                "tensors " + std::to_string(planned.persistents) +
                ", the programs' shared arena " +
                std::to_string(planned.arena) + ", ports " +
                std::to_string(planned.ports) + ")");
  if (size_t n = engine_.buckets().overlapped()) {
    size_t staging = engine_.buckets().stagingBytes();
    bool scattered = engine_.buckets().scattered() == n;
    logger_->info("mega-run: " + std::to_string(n) +
                  " data-parallel gradient buckets " +
                  (scattered ? "reduce-scattered" : "all-reduced") +
                  " during the last micro-batch's backward (" +
                  (staging ? std::to_string(staging) + " bytes of host staging"
                           : std::string("in place")) +
                  ")");
  }
  // Sequence parallelism's replicated gradients (mega-tensor-grad-bucket).
  size_t partial = 0;
  for (const plan::Persistent &t : plan.persistents)
    partial += t.partialGroup == int32_t(plan::ParallelGroup::Tensor) ? 1 : 0;
  if (partial)
    logger_->info("mega-run: " + std::to_string(partial) +
                  " gradients accumulated as tensor-parallel terms, summed "
                  "over the tensor group once a step");
  if (pipeline_)
    logger_->info("mega-run: pipeline " + plan.get("schedule", "1f1b") +
                  " over " + plan.get("pp", "?") + " ranks x " +
                  plan.get("vpp", "1") + " chunks; stages " +
                  plan.get("pipeline_layers", "?") +
                  "; estimated peak memory per rank " +
                  plan.get("pipeline_memory", "?"));
}

double Trainer::runIteration(int64_t iteration, bool dumpGrads, double lr,
                             double &gradNorm) {
  if (pipeline_)
    return runPipelineIteration(iteration, dumpGrads, lr, gradNorm);
  ProgramRunner &train = engine_.program("train");
  ProgramRunner &opt = engine_.program("optimizer");
  // The optimizer's scalars go up first, and the last micro-batch's loss
  // is read after the optimizer is launched: no wait on the device between
  // the last train run and the optimizer.
  opt.setScalar("lr", float(lr));
  if (opt.inputPort("step"))
    opt.setScalar("step", float(iteration));
  double lossSum = 0;
  const bool readLossLater = !dumpGrads;
  for (int64_t m = 0; m < shape_.microbatches; ++m) {
    {
      // Megatron's sampler: micro-batch m of the iteration is the B*D
      // samples [consumed + m*B*D, +B*D), of which data rank d takes the
      // d-th B (docs/runtime.md §4 and §13).
      TraceScope t(tracer_.get(), "data", "host", Tracer::Host);
      int64_t dp = shape_.global / (shape_.micro * shape_.microbatches);
      train_->batch(consumed_ + (m * dp + dataRank_) * shape_.micro,
                    shape_.micro, tokens_.data(), targets_.data());
    }
    train.setInput("tokens", tokens_.data(), tokens_.size() * 4);
    train.setInput("targets", targets_.data(), targets_.size() * 4);
    // The data-parallel buckets start their all-reduce during the last
    // micro-batch's backward, each as soon as its gradients are final;
    // a step whose local gradients are dumped reduces in the optimizer.
    engine_.buckets().setStarting(m + 1 == shape_.microbatches && !dumpGrads);
    train.run(tracer_.get());
    engine_.buckets().setStarting(false);
    if (m + 1 < shape_.microbatches || !readLossLater)
      lossSum += double(train.getScalar("loss"));
  }
  if (dumpGrads) {
    TraceScope t(tracer_.get(), "dump-grads", "host", Tracer::Host);
    dumpGradients(iteration);
  }
  opt.run(tracer_.get());
  // (The optimizer writes none of train's output ports.)
  if (readLossLater)
    lossSum += double(train.getScalar("loss"));
  gradNorm =
      opt.outputPort("grad_norm") ? double(opt.getScalar("grad_norm")) : 0.0;
  consumed_ += shape_.global;
  // The logged loss is the mean over the data-parallel ranks (each rank's
  // is the mean of its micro-batches; all micro-batches weigh the same).
  double loss = lossSum / double(shape_.microbatches);
  const ProcessGroup &data =
      engine_.comm().group(plan::ParallelGroup::Data);
  if (data.size > 1) {
    float l = float(loss);
    engine_.comm().allReduce(data, &l, &l, 1, plan::ReduceOp::Sum);
    loss = double(l) / double(data.size);
  }
  return loss;
}

double Trainer::runPipelineIteration(int64_t iteration, bool dumpGrads,
                                     double lr, double &gradNorm) {
  int64_t dp = shape_.global / (shape_.micro * shape_.microbatches);
  double lossSum = pipeline_->runMicrobatches(
      [&](int64_t m, int32_t *tokens, int32_t *targets) {
        // The same samples as one device: micro-batch m is the B*D samples
        // from consumed + m*B*D, of which data rank d takes the d-th B.
        TraceScope t(tracer_.get(), "data", "host", Tracer::Host);
        train_->batch(consumed_ + (m * dp + dataRank_) * shape_.micro,
                      shape_.micro, tokens, targets);
      },
      /*startBuckets=*/!dumpGrads);
  if (dumpGrads) {
    TraceScope t(tracer_.get(), "dump-grads", "host", Tracer::Host);
    dumpGradients(iteration);
  }
  gradNorm = pipeline_->runOptimizer(float(lr), float(iteration));
  consumed_ += shape_.global;
  // The loss is the last stage's; the others add 0 over the pipeline group,
  // then the mean over the data ranks as without a pipeline.
  Communicator &comm = engine_.comm();
  float l = float(lossSum / double(shape_.microbatches));
  const ProcessGroup &pipe = comm.group(plan::ParallelGroup::Pipeline);
  comm.allReduce(pipe, &l, &l, 1, plan::ReduceOp::Sum);
  const ProcessGroup &data = comm.group(plan::ParallelGroup::Data);
  if (data.size > 1) {
    comm.allReduce(data, &l, &l, 1, plan::ReduceOp::Sum);
    l /= float(data.size);
  }
  return double(l);
}

void Trainer::dumpGradients(int64_t iteration) {
  // Pipeline: each stage holds its parameters' gradients (the tied
  // embedding's in two parts); pipeline rank 0 gets their sums (the whole
  // model's) and puts its own back afterwards.
  std::vector<std::vector<float>> pipelineLocal;
  if (pipeline_)
    pipelineLocal = pipeline_->sumGrads();
  dumpGradientsOverData(iteration);
  if (pipeline_)
    pipeline_->restore(pipelineLocal);
}

void Trainer::dumpGradientsOverData(int64_t iteration) {
  std::map<std::string, std::string> meta = {
      {"iteration", std::to_string(iteration)}, {"format", "mega-grads-1"}};
  Memory &mem = engine_.memory();
  Communicator &comm = engine_.comm();
  const ProcessGroup &data = comm.group(plan::ParallelGroup::Data);
  // The accumulators hold this rank's share: over the data group (the loss
  // seed is 1/(microbatches*dp)), and, for a partial gradient, over its
  // group (a replicated parameter's term from this rank's sequence block).
  // The full gradient is their sum, which the optimizer program computes
  // too. Sum on the host, save (every rank takes part: shards are
  // gathered; world rank 0 writes), and put the local share back. (Under a
  // pipeline only rank 0's ranks hold every gradient; the data and tensor
  // ranks of one pipeline rank hold the same ones.)
  std::vector<size_t> grads;
  for (size_t k : mem.withRole(plan::Role::Grad))
    if (mem.available(k) &&
        (data.size > 1 ||
         (mem.info(k).partialGroup >= 0 &&
          comm.group(plan::ParallelGroup(mem.info(k).partialGroup)).size > 1)))
      grads.push_back(k);
  std::vector<std::vector<float>> local(grads.size());
  for (size_t k = 0; k < grads.size(); ++k) {
    if (mem.info(grads[k]).dtype != plan::DType::F32)
      throw Error("--dump-grads with dp > 1 or partial gradients needs f32 "
                  "gradients");
    local[k].resize(mem.bytes(grads[k]) / 4);
    mem.toHost(grads[k], local[k].data());
    std::vector<float> sum = local[k];
    auto sumOver = [&](const ProcessGroup &g) {
      if (g.size > 1)
        comm.allReduce(g, sum.data(), sum.data(), sum.size(),
                       plan::ReduceOp::Sum);
    };
    if (int32_t p = mem.info(grads[k]).partialGroup; p >= 0)
      sumOver(comm.group(plan::ParallelGroup(p)));
    sumOver(data);
    mem.fromHost(grads[k], sum.data());
  }
  saveTensorsByParam(opts_.dumpGrads, mem, plan::Role::Grad, meta, writer_);
  for (size_t k = 0; k < grads.size(); ++k)
    mem.fromHost(grads[k], local[k].data());
}

double Trainer::evaluate() {
  TraceScope t(tracer_.get(), "evaluate", "host", Tracer::Host);
  if (pipeline_) {
    double sum = 0;
    for (int64_t k = 0; k < evalBatches_; ++k)
      sum += pipeline_->runForwardOnly(
          [&](int64_t, int32_t *tokens, int32_t *targets) {
            eval_->batch(k * shape_.micro, shape_.micro, tokens, targets);
          });
    // The loss is the last stage's; every rank gets it (the others add 0).
    float l = float(sum / double(evalBatches_));
    Communicator &comm = engine_.comm();
    comm.allReduce(comm.group(plan::ParallelGroup::Pipeline), &l, &l, 1,
                   plan::ReduceOp::Sum);
    return double(l);
  }
  ProgramRunner &eval = engine_.program("eval");
  int64_t B = eval.requireInput("tokens").shape[0];
  double sum = 0;
  // Always the first micro-batches of the set, in order, so validation
  // losses of different iterations and runs compare directly.
  for (int64_t k = 0; k < evalBatches_; ++k) {
    eval_->batch(k * B, B, evalTokens_.data(), evalTargets_.data());
    eval.setInput("tokens", evalTokens_.data(), evalTokens_.size() * 4);
    eval.setInput("targets", evalTargets_.data(), evalTargets_.size() * 4);
    eval.run(tracer_.get());
    sum += double(eval.getScalar("loss"));
  }
  return sum / double(evalBatches_);
}

void Trainer::save(int64_t iteration) {
  // Every data rank holds the same parameters and moments; one writes. The
  // ranks of a tensor group take part in gathering their shards.
  TraceScope t(tracer_.get(), "save-checkpoint", "host", Tracer::Host);
  TrainState s;
  s.iteration = iteration;
  s.consumedSamples = consumed_;
  s.dataSeed = dataSeed_;
  s.shuffle = opts_.shuffle;
  s.numSamples = train_->numSamples();
  s.rng = rng_.save();
  if (pipeline_) // pipeline rank 0 gets the other stages' tensors
    for (plan::Role role :
         {plan::Role::Param, plan::Role::AdamM, plan::Role::AdamV})
      pipeline_->collect(role);
  saveCheckpoint(opts_.save, engine_.plan(), engine_.memory(), s, writer_);
  engine_.memory().dropHostCopies();
  if (writer_)
    logger_->info(" saved checkpoint at iteration " +
                  std::to_string(iteration) + " to " + opts_.save);
}

void Trainer::run() {
  prepare();
  if (iteration_ >= opts_.steps) {
    logger_->info("mega-run: the checkpoint is at iteration " +
                  std::to_string(iteration_) + ", not before --steps " +
                  std::to_string(opts_.steps) + "; nothing to train");
    return;
  }

  IntervalStats stats;
  stats.totalIterations = opts_.steps;
  stats.globalBatch = shape_.global;
  double intervalMs = 0, lossSum = 0;
  int64_t intervalIters = 0, lossCount = 0;
  int64_t lastSaved = -1, lastEval = -1;
  bool first = true;
  double tokensPerIteration = double(shape_.global) * double(shape_.seq);

  while (iteration_ < opts_.steps) {
    int64_t it = iteration_ + 1;
    double lr = schedule_.at(it);
    auto t0 = Clock::now();
    double gradNorm = 0;
    double loss =
        runIteration(it, first && !opts_.dumpGrads.empty(), lr, gradNorm);
    double ms = msSince(t0);
    first = false;
    iteration_ = it;

    bool skipped = !std::isfinite(gradNorm);
    if (skipped) {
      ++stats.skipped;
      ++stats.nan;
    } else if (!std::isfinite(loss)) {
      ++stats.nan;
    } else {
      lossSum += loss;
      ++lossCount;
    }
    intervalMs += ms;
    ++intervalIters;
    stats.lr = lr;
    stats.gradNorm = gradNorm;
    logger_->progress(it, opts_.steps, loss,
                      intervalMs / double(intervalIters));

    if (it % opts_.logInterval == 0 || it == opts_.steps) {
      stats.iteration = it;
      stats.consumedSamples = consumed_;
      stats.elapsedMs = intervalMs / double(intervalIters);
      stats.tflops = flopsPerToken_ * tokensPerIteration /
                     (stats.elapsedMs / 1000.0) / 1e12 /
                     double(opts_.worldSize);
      stats.lmLoss = lossCount ? lossSum / double(lossCount)
                               : std::numeric_limits<double>::quiet_NaN();
      logger_->interval(stats);
      stats.skipped = stats.nan = 0;
      intervalMs = lossSum = 0;
      intervalIters = lossCount = 0;
    }
    if (eval_ && opts_.evalInterval > 0 && it % opts_.evalInterval == 0) {
      logger_->validation(it, evaluate());
      lastEval = it;
    }
    if (!opts_.save.empty() && opts_.saveInterval > 0 &&
        it % opts_.saveInterval == 0) {
      save(it);
      lastSaved = it;
    }
  }
  if (eval_ && lastEval != iteration_)
    logger_->validation(iteration_, evaluate());
  if (!opts_.save.empty() && lastSaved != iteration_)
    save(iteration_);
  logger_->finish();
  // The device memory actually held after the run, beside the plan's figure
  // logged at the start (kernel scratch and library workspaces are not in
  // the plan).
  const std::string held = engine_.backend().memoryHeld();
  if (!held.empty() && opts_.rank == 0)
    logger_->info("mega-run: " + held);
  if (pipeline_) {
    // Every rank reports its own activation memory (1F1B keeps at most
    // pp - rank micro-batches in flight on a rank, GPipe all of them).
    std::printf("mega-run: rank %lld pipeline %s: peak %lld stashed "
                "micro-batch(es), %lld bytes of activations\n",
                (long long)opts_.rank, pipeline_->stagesText().c_str(),
                (long long)pipeline_->peakStashed(),
                (long long)pipeline_->peakStashBytes());
    // And its persistent memory: only its stages' tensors.
    std::printf("mega-run: rank %lld pipeline %s: %lld bytes of persistent "
                "tensors (parameters, gradients, optimizer state)\n",
                (long long)opts_.rank, pipeline_->stagesText().c_str(),
                (long long)engine_.memory().residentBytes());
    std::fflush(stdout);
  }
  if (tracer_)
    tracer_->write(opts_.rank == 0 ? opts_.trace
                                   : opts_.trace + ".rank" +
                                         std::to_string(opts_.rank));
}

} // namespace mega::rt

//===- Trainer.h - The training loop
//---------------------------------------===//
//
// One iteration = "train" once per micro-batch (the plan adds into the
// gradient accumulators and already scales by 1/num_microbatches), then
// "optimizer" with the scheduled lr and the 1-based step (it updates the
// parameters and zeroes the gradients). The iteration's loss is the mean of
// its micro-batch losses. With data parallelism (plan dp > 1) each data rank
// runs this on its own samples, the optimizer program starts by all-reducing
// the gradients, the logged loss is averaged over the data ranks, and only
// world rank 0 logs, checkpoints and dumps. Everything a resumed run needs
// to continue bit for bit (parameters, moments, iteration, consumed samples,
// data seed, rng) is in
// the checkpoint.
// A pipelined plan runs its rank's schedule instead (Pipeline.h): the loss
// comes from the last stage, checkpoints and gradient dumps first gather
// every tensor's current values from the pipeline rank that owns it.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_TRAINER_H
#define MEGA_RUNTIME_TRAINER_H

#include "Engine.h"
#include "Rng.h"
#include "Schedule.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

namespace mega::rt {

class Logger;
class PipelineExecutor;
class SampleSource;
class Tracer;
struct TrainState;

struct TrainOptions {
  std::string data;     ///< training PREFIX
  std::string evalData; ///< validation PREFIX ("" = none)
  int64_t steps = 0;    ///< --steps / --train-iters
  double lr = std::numeric_limits<double>::quiet_NaN(); ///< NaN: plan's lr
  double minLr = 0.0;
  std::string schedule = "constant";
  int64_t warmup = 0;
  uint64_t seed = 1234;
  std::string load;         ///< DIR or FILE.safetensors
  std::string save;         ///< DIR
  int64_t saveInterval = 0; ///< 0: only at the end
  int64_t logInterval = 0;  ///< 0: Megatron's 100 (or --steps if fewer)
  std::string logFile;
  int64_t evalInterval = 0; ///< 0: only at the end (with evalData)
  int64_t evalIters = 0;    ///< micro-batches; 0: 10 or the whole set
  bool shuffle = true;
  std::string dumpGrads;
  std::string trace;
  bool progressBar = false;
  int64_t rank = 0;
  int64_t worldSize = 1;
};

/// The batch geometry a plan trains with.
struct BatchShape {
  int64_t micro = 1;        ///< B, rows per micro-batch
  int64_t seq = 1;          ///< S
  int64_t microbatches = 1; ///< per iteration
  int64_t global = 1;       ///< G = samples per iteration
  int64_t vocab = 0;
};

class Trainer {
public:
  /// Checks the plan's programs and the options; throws Error.
  Trainer(Engine &engine, TrainOptions options);
  ~Trainer();

  void run();

  const BatchShape &shape() const { return shape_; }

private:
  void prepare();
  double runIteration(int64_t iteration, bool dumpGrads, double lr,
                      double &gradNorm);
  double evaluate();
  void save(int64_t iteration);
  /// --dump-grads: the full gradient (summed over the data group), written
  /// by world rank 0.
  void dumpGradients(int64_t iteration);
  void dumpGradientsOverData(int64_t iteration);
  double runPipelineIteration(int64_t iteration, bool dumpGrads, double lr,
                              double &gradNorm);

  Engine &engine_;
  TrainOptions opts_;
  BatchShape shape_;
  LrSchedule schedule_;
  Rng rng_;
  uint64_t dataSeed_;
  int64_t iteration_ = 0;
  int64_t consumed_ = 0;
  int64_t dataRank_ = 0; ///< this rank in the data-parallel group
  bool writer_ = true;   ///< world rank 0: logs, checkpoints, dumps
  double flopsPerToken_ = 0;
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<Tracer> tracer_;
  /// Pipelined plans (plan::Plan::schedule): this rank's stages.
  std::unique_ptr<PipelineExecutor> pipeline_;
  std::unique_ptr<SampleSource> train_, eval_;
  int64_t evalBatches_ = 0;
  /// Host staging for one micro-batch, allocated once.
  std::vector<int32_t> tokens_, targets_, evalTokens_, evalTargets_;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_TRAINER_H

//===- Options.h - mega-run's command line
//---------------------------------===//
//
// Flags are Megatron's where Megatron has them (--train-iters,
// --lr-warmup-iters, --lr-decay-style, --save-interval, ...), with the short
// spellings of DESIGN.md §2 as aliases. Every mistake is a mega::rt::Error
// with one line saying what is wrong.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_TOOLS_MEGA_RUN_OPTIONS_H
#define MEGA_TOOLS_MEGA_RUN_OPTIONS_H

#include "Generator.h"
#include "Trainer.h"

#include <string>

namespace mega::run {

struct Options {
  std::string plan;
  bool help = false;
  bool generate = false;
  std::string device; ///< "" = the plan's target
  int threads = 0;
  bool cudaGraph = true; ///< --no-cuda-graph turns it off
  bool wgradStream = false; ///< --wgrad-stream (cuda, with graphs)
  rt::CommPath comm = rt::CommPath::Auto; ///< --comm
  rt::AttentionBackend attention = rt::AttentionBackend::Auto; ///< cuda
  bool gemmAutotune = true; ///< cuda; --no-gemm-autotune turns it off
  bool gemmAutotuneWide = false;          ///< --gemm-autotune-wide (cuda)
  std::string gemmAutotuneFile;           ///< --gemm-autotune-file (cuda)
  double commTimeout = 300;               ///< --comm-timeout, seconds
  rt::TrainOptions train;
  // --generate
  std::string prompt;
  bool havePrompt = false;
  std::string tokenizerModel;
  int64_t maxNewTokens = 64;
  double temperature = 1.0;
  int64_t topK = 0;
};

/// Parses argv; throws rt::Error for any bad input.
Options parseOptions(int argc, char **argv);
const char *usage();

} // namespace mega::run

#endif // MEGA_TOOLS_MEGA_RUN_OPTIONS_H

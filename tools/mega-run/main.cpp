//===- main.cpp - mega-run: execute a plan
//---------------------------------===//
//
// Reads a plan, checks the launch, picks a backend and then trains
// (Trainer) or generates text (Generator). Every failure anywhere ends as
// exactly one line `mega-run: error: <message>` on stderr and exit code 1.
//
//===----------------------------------------------------------------------===//
#include "Checkpoint.h"
#include "Comm.h"
#include "Devices.h"
#include "Engine.h"
#include "FileUtil.h"
#include "Generator.h"
#include "Options.h"
#include "Tokenizer.h"
#include "Trainer.h"

#include "mega/Plan/Plan.h"
#include "mega/Runtime/GemmChoices.h"
#include "mega/Support/ErrorLine.h"

#include <cstdio>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <unistd.h>

using namespace mega;

namespace {

int generate(rt::Engine &engine, const run::Options &o) {
  if (!engine.plan().schedule.empty())
    throw rt::Error("--generate needs a plan compiled with --pp 1 (a "
                    "pipelined plan has no predict program); checkpoints "
                    "load under any layout");
  rt::Generator gen(engine);
  std::unique_ptr<run::Tokenizer> tok = run::Tokenizer::load(o.tokenizerModel);
  if (tok->size() > gen.vocab())
    throw rt::Error("the tokenizer has " + std::to_string(tok->size()) +
                    " pieces but the plan's vocab is " +
                    std::to_string(gen.vocab()));
  engine.memory().initialize(o.train.seed);
  rt::loadCheckpoint(o.train.load, engine.plan(), engine.memory(), false);

  rt::GenerateOptions g;
  g.prompt = tok->encode(o.prompt);
  g.maxNewTokens = o.maxNewTokens;
  g.temperature = o.temperature;
  g.topK = o.topK;
  g.seed = o.train.seed;
  g.vocabLimit = tok->size();
  g.eos = tok->eos();

  // Stream: print the prompt, then whatever the decoded text grew by. Under
  // tensor parallelism every rank runs the same steps (same seed, same
  // sampled ids); only world rank 0 prints.
  std::FILE *out = engine.comm().worldRank() == 0 ? stdout : nullptr;
  auto put = [out](const char *text) {
    if (out) {
      std::fputs(text, out);
      std::fflush(out);
    }
  };
  std::vector<int32_t> ids = g.prompt;
  std::string shown = tok->decode(ids);
  put(o.prompt.c_str());
  gen.run(g, [&](int32_t id) {
    ids.push_back(id);
    std::string full = tok->decode(ids);
    if (full.size() >= shown.size() &&
        full.compare(0, shown.size(), shown) == 0) {
      put(full.c_str() + shown.size());
      shown = std::move(full);
    }
  });
  put("\n");
  return 0;
}

int realMain(int argc, char **argv) {
  run::Options o = run::parseOptions(argc, argv);
  if (o.help) {
    std::fputs(run::usage(), stdout);
    return 0;
  }
  // A directory or a device (/dev/zero) is not a plan; refuse it before
  // reading, so it can neither be misreported nor read forever.
  if (rt::fs::exists(o.plan) && !rt::fs::isRegularFile(o.plan))
    throw rt::Error("cannot open plan '" + o.plan + "': not a regular file");
  plan::Plan plan = plan::readPlanFile(o.plan);
  rt::LaunchInfo launch = rt::launchInfo();
  rt::checkWorldSize(plan, launch);
  std::string device = o.device.empty() ? rt::defaultDevice(plan) : o.device;
  if (launch.worldSize > 1 && launch.source == "WORLD_SIZE")
    throw rt::Error("world size is " + std::to_string(launch.worldSize) +
                    " (from WORLD_SIZE) but multi-rank runs need an MPI "
                    "launcher: mpirun -np " +
                    std::to_string(launch.worldSize) + " mega-run ...");
  // One communicator for the run, handed down explicitly (no global
  // parallel state): single-process at world size 1, MPI otherwise.
  std::unique_ptr<rt::Communicator> comm = rt::createCommunicator(
      int(launch.rank), int(launch.worldSize), int(plan.getInt("tp", 1)),
      int(plan.getInt("dp", 1)), int(plan.getInt("pp", 1)));
  rt::checkSamePlan(plan, *comm);
  rt::CudaOptions cudaOptions;
  cudaOptions.attention = o.attention;
  cudaOptions.gemmAutotune = o.gemmAutotune;
  cudaOptions.gemmAutotuneWide = o.gemmAutotuneWide;
  cudaOptions.wgradStream = o.wgradStream;
  if (!o.gemmAutotuneFile.empty()) {
    // Read before the backend exists: a malformed file ends the run here.
    cudaOptions.gemmChoices = std::make_shared<rt::GemmChoices>(
        rt::readGemmChoices(o.gemmAutotuneFile));
    cudaOptions.saveGemmChoices =
        [path = o.gemmAutotuneFile](const rt::GemmChoices &c) {
          rt::writeGemmChoices(path, c);
        };
  }
  cudaOptions.localRank = launch.localRank;
  std::unique_ptr<rt::Backend> backend =
      rt::createBackend(device, o.threads, cudaOptions);
  // Before the engine loads the plan: the gradient buckets are placed by
  // what this chooses (device spans or host staging).
  std::string commLine =
      backend->setupCollectives(*comm, o.comm, o.commTimeout);
  if (!commLine.empty() && comm->worldRank() == 0 && !o.generate) {
    std::printf("mega-run: %s\n", commLine.c_str());
    std::fflush(stdout);
  }
  std::string kernels = backend->kernelChoices();
  if (!kernels.empty() && comm->worldRank() == 0 && !o.generate) {
    std::printf("mega-run: %s\n", kernels.c_str());
    std::fflush(stdout);
  }
  // Training never runs "predict" (its logits port alone is a sequence's
  // [S, V] floats); a generation runs nothing else (the train arena is the
  // plan's largest).
  const std::vector<std::string> skip =
      o.generate ? std::vector<std::string>{"train", "optimizer", "eval"}
                 : std::vector<std::string>{"predict"};
  rt::Engine engine(plan, *backend, device, comm.get(), skip);
  if (o.generate)
    return generate(engine, o);

  // Training only: a generation streams its text to stdout, where the
  // notice line would land inside the text.
  if (o.cudaGraph)
    engine.useGraphs([](const std::string &line) {
      std::printf("mega-run: %s\n", line.c_str());
      std::fflush(stdout);
    });

  rt::TrainOptions t = o.train;
  t.rank = launch.rank;
  t.worldSize = launch.worldSize;
  t.progressBar = ::isatty(STDERR_FILENO) == 1;
  rt::Trainer trainer(engine, t);
  trainer.run();
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  try {
    return realMain(argc, argv);
  } catch (const std::bad_alloc &) {
    std::fputs("mega-run: error: out of memory\n", stderr);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "mega-run: error: %s\n",
                 mega::errorLine(e.what()).c_str());
  } catch (...) {
    std::fputs("mega-run: error: unexpected internal failure\n", stderr);
  }
  std::fflush(stdout);
  return 1;
}

//===- Checkpoint.h - Megatron-style checkpoint directories ---------------===//
//
//   DIR/latest_checkpointed_iteration.txt     "100" (Megatron's tracker)
//   DIR/iter_0000100/model.safetensors        parameters, canonical names;
//                                             __metadata__ holds TrainState
//   DIR/iter_0000100/optimizer.safetensors    exp_avg.<name>, exp_avg_sq.<name>
//
// Order of a save: model file, optimizer file (each: temp name, fsync,
// rename, fsync dir), then the tracker the same way. The tracker only ever
// names an iteration whose two files are complete and durable, and a save
// never touches another iteration's files, so a crash at any instant leaves
// the tracker's checkpoint loadable (docs/runtime.md spells out the cases).
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_CHECKPOINT_H
#define MEGA_RUNTIME_CHECKPOINT_H

#include "Memory.h"

#include "mega/Plan/Plan.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mega::rt {

/// What, besides tensors, a resumed run needs to continue exactly.
struct TrainState {
  int64_t iteration = 0;
  int64_t consumedSamples = 0;
  uint64_t dataSeed = 0;
  bool shuffle = true;
  int64_t numSamples = 0; ///< of the training set, to report epoch/position
  std::string rng;        ///< Rng::save() of the trainer's generator
};

inline constexpr const char *kTrackerName = "latest_checkpointed_iteration.txt";

/// "iter_0000100".
std::string iterationDirName(int64_t iteration);
/// A hash of the model-defining plan config and parameter shapes, stored in
/// checkpoints so a resume against a different model can be reported.
std::string planConfigHash(const plan::Plan &plan);

/// Files always hold full tensors: tensor-parallel shards are gathered
/// over their groups first, which is a collective, so every rank calls
/// these and only the one with `write` (world rank 0) writes.
void saveCheckpoint(const std::string &dir, const plan::Plan &plan,
                    const Memory &memory, const TrainState &state,
                    bool write = true);

/// Writes every persistent of `role` under its parameter's canonical name
/// (used by --dump-grads with Role::Grad and for parameter-only files).
void saveTensorsByParam(const std::string &path, const Memory &memory,
                        plan::Role role,
                        const std::map<std::string, std::string> &metadata,
                        bool write = true);

struct LoadResult {
  TrainState state;     ///< iteration 0 for a parameters-only file
  bool resumed = false; ///< a checkpoint directory (optimizer + state)
  std::string source;   ///< the file the parameters came from
  std::vector<std::string> warnings;
};

/// `path` is a checkpoint directory (tracker -> iteration) or a single
/// .safetensors file of parameters. With `withOptimizer`, a directory's
/// optimizer file is loaded too. Every parameter must be present with its
/// shape (the full shape of a sharded one, of which this rank keeps its
/// shard); an unknown tensor is an error. Throws Error naming the problem.
LoadResult loadCheckpoint(const std::string &path, const plan::Plan &plan,
                          Memory &memory, bool withOptimizer);

} // namespace mega::rt

#endif // MEGA_RUNTIME_CHECKPOINT_H

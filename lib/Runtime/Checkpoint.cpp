//===- Checkpoint.cpp - Megatron-style checkpoint directories -------------===//
#include "Checkpoint.h"

#include "FileUtil.h"
#include "Rng.h"
#include "Safetensors.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace mega::rt {

namespace {

std::string shapeText(const std::vector<int64_t> &s) {
  std::string t = "[";
  for (size_t k = 0; k < s.size(); ++k)
    t += std::string(k ? "," : "") + std::to_string(s[k]);
  return t + "]";
}

const char *kModelFile = "model.safetensors";
const char *kOptimizerFile = "optimizer.safetensors";

std::string stateName(plan::Role role, const std::string &param) {
  return (role == plan::Role::AdamM ? "exp_avg." : "exp_avg_sq.") + param;
}

/// Full host copies of the sharded persistents with one of `roles`, by
/// index. A collective over each one's shard group: every rank of the group
/// calls it (they walk the same plan in the same order, and hold the same
/// persistents: a shard group lies within one pipeline stage). Persistents
/// this rank has no values of (another pipeline stage's) are skipped.
using Gathered = std::map<size_t, std::vector<char>>;
Gathered gatherShards(const Memory &memory,
                      std::initializer_list<plan::Role> roles) {
  Gathered out;
  for (size_t k = 0; k < memory.count(); ++k) {
    if (!memory.sharded(k) || !memory.available(k))
      continue;
    for (plan::Role r : roles)
      if (memory.info(k).role == r) {
        std::vector<char> &full = out[k];
        full.resize(memory.fullBytes(k));
        memory.fullToHost(k, full.data());
      }
  }
  return out;
}

/// Adds persistent k (its full tensor) to a writer under `name`, copying
/// from the device (or from `gathered`, for a shard) when the writer asks.
void addPersistent(SafetensorsWriter &w, const Memory &memory, size_t k,
                   const std::string &name, const Gathered &gathered) {
  const plan::Persistent &t = memory.info(k);
  auto it = gathered.find(k);
  if (it != gathered.end()) {
    const std::vector<char> *full = &it->second;
    w.add(name, t.dtype, memory.fullShape(k), [full](void *dst) {
      std::memcpy(dst, full->data(), full->size());
    });
    return;
  }
  if (!memory.available(k))
    throw Error("internal: the writer has no values of persistent '" +
                t.name + "'");
  w.add(name, t.dtype, t.shape,
        [&memory, k](void *dst) { memory.toHost(k, dst); });
}

/// Loads `wanted` (tensor name -> persistent index) from a file: every
/// wanted tensor must be there with the persistent's shape, and nothing else
/// may be. F32 and BF16 convert into each other.
void loadInto(const SafetensorsReader &r, Memory &memory,
              const std::map<std::string, size_t> &wanted, const char *what) {
  for (const TensorEntry &e : r.tensors())
    if (!wanted.count(e.name))
      throw Error("'" + r.path() + "' holds tensor '" + e.name +
                  "' that the plan has no " + what +
                  " for (checkpoint of a different model?)");
  std::vector<char> raw, conv;
  for (const auto &[name, k] : wanted) {
    const plan::Persistent &t = memory.info(k);
    const TensorEntry *e = r.find(name);
    if (!e)
      throw Error("'" + r.path() + "' has no tensor '" + name +
                  "' (the plan's " + what + " " + shapeText(t.shape) + ")");
    // Files hold full tensors; a shard keeps its part (fromFullHost).
    const std::vector<int64_t> &shape = memory.fullShape(k);
    if (e->shape != shape)
      throw Error("tensor '" + name + "' in '" + r.path() + "' has shape " +
                  shapeText(e->shape) + " but the plan expects " +
                  shapeText(shape));
    // Another pipeline stage's tensor: that rank loads it.
    if (!memory.resident(k))
      continue;
    raw.resize(e->bytes());
    r.read(*e, raw.data());
    if (e->dtype == t.dtype) {
      memory.fromFullHost(k, raw.data());
      continue;
    }
    size_t n = memory.fullBytes(k) / plan::dtypeSize(t.dtype);
    conv.resize(memory.fullBytes(k));
    if (e->dtype == plan::DType::BF16 && t.dtype == plan::DType::F32) {
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, raw.data() + 2 * i, 2);
        float f = fromBF16(b);
        std::memcpy(conv.data() + 4 * i, &f, 4);
      }
    } else if (e->dtype == plan::DType::F32 && t.dtype == plan::DType::BF16) {
      for (size_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, raw.data() + 4 * i, 4);
        uint16_t b = toBF16(f);
        std::memcpy(conv.data() + 2 * i, &b, 2);
      }
    } else {
      throw Error("tensor '" + name + "' in '" + r.path() + "' is " +
                  safetensorsDType(e->dtype) + " but the plan holds " +
                  safetensorsDType(t.dtype));
    }
    memory.fromFullHost(k, conv.data());
  }
}

int64_t metaInt(const SafetensorsReader &r, const std::string &key) {
  auto it = r.metadata().find(key);
  if (it == r.metadata().end())
    throw Error("'" + r.path() + "' lacks checkpoint metadata '" + key +
                "' (not a mega checkpoint?)");
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end || errno || v < 0)
    throw Error("'" + r.path() + "' has a bad '" + key +
                "' in its metadata: '" + it->second + "'");
  return v;
}

std::string readTracker(const std::string &dir) {
  std::string path = fs::join(dir, kTrackerName);
  std::string text = fs::readFile(path);
  size_t b = text.find_first_not_of(" \t\r\n"),
         e = text.find_last_not_of(" \t\r\n");
  std::string t = b == std::string::npos ? "" : text.substr(b, e - b + 1);
  if (t == "release")
    return fs::join(dir, "release");
  if (t.empty() || t.size() > 12 ||
      t.find_first_not_of("0123456789") != std::string::npos)
    throw Error("'" + path + "' does not name an iteration (contents: '" +
                t.substr(0, 40) + "')");
  return fs::join(dir, iterationDirName(std::stoll(t)));
}

} // namespace

std::string iterationDirName(int64_t iteration) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "iter_%07lld", (long long)iteration);
  return buf;
}

std::string planConfigHash(const plan::Plan &plan) {
  uint64_t h = 1469598103934665603ull;
  auto add = [&h](const std::string &s) { h = mix64(h ^ hashString(s)); };
  for (const char *key :
       {"model", "layers", "hidden", "heads", "vocab", "seq", "optimizer"})
    add(std::string(key) + "=" + plan.get(key));
  for (const plan::Persistent &t : plan.persistents)
    if (t.role == plan::Role::Param) // full shapes: any tensor-parallel size
      add(t.name + shapeText(t.shardDim >= 0 ? t.fullShape : t.shape));
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

void saveCheckpoint(const std::string &dir, const plan::Plan &plan,
                    const Memory &memory, const TrainState &state,
                    bool write) {
  const Gathered gathered = gatherShards(
      memory, {plan::Role::Param, plan::Role::AdamM, plan::Role::AdamV});
  if (!write)
    return;
  bool newDir = !fs::isDirectory(dir);
  fs::makeDirectories(dir);
  if (newDir)
    fs::fsyncDirectory(fs::parentDirectory(dir));
  std::string iterDir = fs::join(dir, iterationDirName(state.iteration));
  if (!fs::isDirectory(iterDir)) {
    fs::makeDirectories(iterDir);
    fs::fsyncDirectory(dir);
  }
  fs::removeStaleTemporaries(dir);
  fs::removeStaleTemporaries(iterDir);

  std::map<std::string, std::string> meta;
  meta["format"] = "mega-checkpoint-1";
  meta["iteration"] = std::to_string(state.iteration);
  meta["consumed_samples"] = std::to_string(state.consumedSamples);
  meta["data_seed"] = std::to_string(state.dataSeed);
  meta["data_shuffle"] = state.shuffle ? "1" : "0";
  if (state.numSamples > 0) {
    meta["data_epoch"] =
        std::to_string(state.consumedSamples / state.numSamples);
    meta["data_position"] =
        std::to_string(state.consumedSamples % state.numSamples);
  }
  meta["rng_state"] = state.rng;
  meta["plan_config_hash"] = planConfigHash(plan);
  for (const auto &[k, v] : plan.config)
    meta["config." + k] = v;

  SafetensorsWriter model;
  for (size_t k : memory.withRole(plan::Role::Param))
    addPersistent(model, memory, k, memory.info(k).name, gathered);
  for (const auto &[k, v] : meta)
    model.setMetadata(k, v);
  model.write(fs::join(iterDir, kModelFile));

  SafetensorsWriter opt;
  for (plan::Role role : {plan::Role::AdamM, plan::Role::AdamV})
    for (size_t k : memory.withRole(role))
      addPersistent(
          opt, memory, k,
          stateName(role, memory.info(size_t(memory.info(k).param)).name),
          gathered);
  opt.setMetadata("format", "mega-checkpoint-1");
  opt.setMetadata("iteration", std::to_string(state.iteration));
  opt.setMetadata("optimizer", plan.get("optimizer", "adam"));
  opt.write(fs::join(iterDir, kOptimizerFile));

  // Only now, with both files durable, may the tracker point here.
  fs::writeFileAtomic(fs::join(dir, kTrackerName),
                      std::to_string(state.iteration) + "\n");
}

void saveTensorsByParam(const std::string &path, const Memory &memory,
                        plan::Role role,
                        const std::map<std::string, std::string> &metadata,
                        bool write) {
  const Gathered gathered = gatherShards(memory, {role});
  if (!write)
    return;
  SafetensorsWriter w;
  for (size_t k : memory.withRole(role)) {
    const plan::Persistent &t = memory.info(k);
    std::string name =
        role == plan::Role::Param ? t.name : memory.info(size_t(t.param)).name;
    addPersistent(w, memory, k, name, gathered);
  }
  for (const auto &[k, v] : metadata)
    w.setMetadata(k, v);
  w.write(path);
}

LoadResult loadCheckpoint(const std::string &path, const plan::Plan &plan,
                          Memory &memory, bool withOptimizer) {
  if (!fs::exists(path))
    throw Error("checkpoint '" + path + "' does not exist");
  LoadResult result;
  std::string iterDir;
  if (fs::isDirectory(path)) {
    if (fs::exists(fs::join(path, kTrackerName)))
      iterDir = readTracker(path);
    else if (fs::exists(fs::join(path, kModelFile)))
      iterDir = path; // an iter_XXXXXXX directory named directly
    else
      throw Error("'" + path + "' is not a checkpoint directory (no " +
                  kTrackerName + ")");
    if (!fs::isDirectory(iterDir))
      throw Error("the tracker in '" + path + "' names '" + iterDir +
                  "', which does not exist");
    result.resumed = true;
    result.source = fs::join(iterDir, kModelFile);
  } else {
    result.source = path;
  }

  std::map<std::string, size_t> params;
  for (size_t k : memory.withRole(plan::Role::Param))
    params[memory.info(k).name] = k;
  SafetensorsReader model(result.source);
  loadInto(model, memory, params, "parameter");
  // The bf16 copies follow the parameters (they are never in a file).
  memory.refreshParamCopies();
  if (!result.resumed)
    return result;

  TrainState &s = result.state;
  s.iteration = metaInt(model, "iteration");
  s.consumedSamples = metaInt(model, "consumed_samples");
  if (auto it = model.metadata().find("data_seed");
      it != model.metadata().end()) {
    char *end = nullptr;
    errno = 0;
    s.dataSeed = std::strtoull(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || errno)
      throw Error("'" + result.source +
                  "' has a bad data_seed in its metadata");
  }
  s.shuffle = !model.metadata().count("data_shuffle") ||
              model.metadata().at("data_shuffle") != "0";
  if (model.metadata().count("rng_state")) {
    s.rng = model.metadata().at("rng_state");
    if (!Rng().restore(s.rng))
      throw Error("'" + result.source + "' has a damaged rng_state");
  }
  auto hash = model.metadata().find("plan_config_hash");
  if (hash != model.metadata().end() && hash->second != planConfigHash(plan))
    result.warnings.push_back(
        "checkpoint '" + path +
        "' was saved from a plan with a different model configuration");

  if (withOptimizer) {
    SafetensorsReader opt(fs::join(iterDir, kOptimizerFile));
    if (metaInt(opt, "iteration") != s.iteration)
      throw Error("'" + opt.path() + "' is from iteration " +
                  std::to_string(metaInt(opt, "iteration")) +
                  " but the model file from " + std::to_string(s.iteration));
    std::map<std::string, size_t> states;
    for (plan::Role role : {plan::Role::AdamM, plan::Role::AdamV})
      for (size_t k : memory.withRole(role))
        states[stateName(role,
                         memory.info(size_t(memory.info(k).param)).name)] = k;
    loadInto(opt, memory, states, "optimizer state");
  }
  return result;
}

} // namespace mega::rt

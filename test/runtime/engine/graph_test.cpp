//===- graph_test.cpp - The engine's recorded-replay path on the CPU ------===//
//
// ProgramRunner::useGraph runs a program eagerly once, records its second
// run (Backend::capture) and replays the recording after. The CPU backend
// records nothing, so this test wraps it in a backend that does: during
// capture() a launch is kept (instruction and operands) instead of run, and
// replay() runs the kept launches on the CPU. Trained side by side with an
// engine on the plain CPU backend, the losses and parameters must be the
// same bits, while the counts say which path each run took:
//   - first run eager, second recorded and replayed, later ones replayed;
//   - one notice per program, naming it and its kernel count;
//   - a recording that went stale is made again;
//   - a refused recording leaves the program eager for good, with a notice;
//   - a run traced kernel by kernel launches each kernel itself;
//   - the plain CPU backend never records, and gives no notice.
// With a side stream (Backend::prepareSideStream, Lanes.h; here any launch
// may go there), the recording keeps each launch's lane and wait, and a
// replay runs the side launches in another order the waits allow: as late
// as they may (each just before the first main launch that waits for it),
// then as early (right after the main launch it waits for). A wait the
// engine left out would let a launch read bytes rewritten after, or before,
// its time, and the bits would differ from the plain engine's.
//
//===----------------------------------------------------------------------===//
#include "Engine.h"
#include "TestPlans.h"
#include "Trace.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace mega;
using namespace mega::rt;

namespace {

int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,    \
                   #cond);                                                     \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/// The CPU backend with recording: what the engine sees of a CUDA backend's
/// graphs, minus the GPU.
class RecordingBackend final : public Backend {
public:
  RecordingBackend() : cpu_(createCpuBackend(1)) {}

  struct Launch {
    const plan::Instr *instr;
    std::vector<TensorRef> ins, outs;
    int lane = 0;
    long wait = -1; ///< the launch (index into the recording) it waits for
  };
  class Recording final : public LaunchGraph {
  public:
    Recording(RecordingBackend &be, std::vector<Launch> launches)
        : be_(be), launches_(std::move(launches)), generation_(be.generation) {}
    bool replay() override {
      if (be_.generation != generation_)
        return false;
      ++be_.replays;
      std::vector<size_t> order = be_.replays % 2 ? late() : early();
      for (size_t k : order)
        be_.cpu_->launch(*launches_[k].instr, launches_[k].ins,
                         launches_[k].outs);
      return true;
    }
    /// Side launches as late as the waits allow.
    std::vector<size_t> late() const {
      std::vector<size_t> order, pending;
      auto flushTo = [&](long last) {
        size_t n = 0;
        while (n < pending.size() && long(pending[n]) <= last)
          order.push_back(pending[n++]);
        pending.erase(pending.begin(), pending.begin() + long(n));
      };
      for (size_t k = 0; k < launches_.size(); ++k) {
        if (launches_[k].lane == 1) {
          pending.push_back(k);
          continue;
        }
        if (launches_[k].wait >= 0)
          flushTo(launches_[k].wait);
        order.push_back(k);
      }
      flushTo(long(launches_.size()));
      return order;
    }
    /// Side launches as early as the waits allow: right after the main
    /// launch each waits for (or the one its lane's previous waited for).
    std::vector<size_t> early() const {
      std::vector<size_t> order, side;
      std::vector<long> after; // the main launch each side launch follows
      long c = -1;
      for (size_t k = 0; k < launches_.size(); ++k)
        if (launches_[k].lane == 1) {
          c = std::max(c, launches_[k].wait);
          side.push_back(k);
          after.push_back(c);
        }
      size_t s = 0;
      auto run = [&](long mainDone) {
        while (s < side.size() && after[s] <= mainDone)
          order.push_back(side[s++]);
      };
      run(-1);
      for (size_t k = 0; k < launches_.size(); ++k)
        if (launches_[k].lane == 0) {
          order.push_back(k);
          run(long(k));
        }
      run(long(launches_.size()));
      return order;
    }
    const char *kind() const override { return "test recording"; }
    size_t kernels() const override { return launches_.size(); }
    size_t otherNodes() const override { return 0; }

  private:
    RecordingBackend &be_;
    std::vector<Launch> launches_;
    uint64_t generation_;
  };

  using Backend::launch;
  const char *name() const override { return "recording-cpu"; }
  void *allocate(size_t bytes) override { return cpu_->allocate(bytes); }
  void release(void *p) override { cpu_->release(p); }
  void copyToDevice(void *d, const void *s, size_t n) override {
    cpu_->copyToDevice(d, s, n);
  }
  void copyToHost(void *d, const void *s, size_t n) override {
    cpu_->copyToHost(d, s, n);
  }
  void check(const plan::Instr &in, const std::vector<const plan::Value *> &i,
             const std::vector<const plan::Value *> &o) override {
    cpu_->check(in, i, o);
  }
  void launch(const plan::Instr &in, const std::vector<TensorRef> &i,
              const std::vector<TensorRef> &o) override {
    if (recording_) {
      long wait = -1;
      if (wait_ >= 0) {
        CHECK(marks_.count(wait_) == 1); // waits only for what was marked
        wait = marks_.count(wait_) ? marks_.at(wait_) : -1;
        CHECK(wait >= 0 && kept_[size_t(wait)].lane != lane_);
      }
      kept_.push_back({&in, i, o, lane_, wait});
      wait_ = -1;
      return;
    }
    CHECK(lane_ == 0);
    ++eagerLaunches;
    cpu_->launch(in, i, o);
  }
  bool hostMemory() const override { return true; }
  bool capturable(const plan::Instr &in) const override {
    return !plan::isCollective(in.op);
  }
  std::unique_ptr<LaunchGraph> capture(const std::function<void()> &body,
                                       std::string &why) override {
    if (refuse) {
      why = "refused by the test";
      return nullptr;
    }
    ++captures;
    recording_ = true;
    kept_.clear();
    marks_.clear();
    joined_ = -1;
    body();
    recording_ = false;
    // The engine ends on the main lane, having waited for the side lane's
    // last launch (a CUDA recording must end joined).
    CHECK(lane_ == 0);
    wait_ = -1; // the join's: it waits at once, for no launch after it
    long lastSide = -1;
    for (size_t k = 0; k < kept_.size(); ++k)
      if (kept_[k].lane == 1)
        lastSide = long(k);
    CHECK(lastSide < 0 || joined_ >= lastSide);
    for (const Launch &l : kept_)
      sideLaunches += l.lane == 1;
    return std::make_unique<Recording>(*this, std::move(kept_));
  }
  bool prepareSideStream(size_t) override { return twoStreams; }
  bool sideLaunch(const plan::Instr &,
                  const std::vector<const plan::Value *> &) const override {
    return true; // the CPU has no scratch to share: any launch may go
  }
  void setLane(int lane, long wait) override {
    CHECK(recording_ && (lane == 0 || lane == 1));
    lane_ = lane;
    wait_ = wait;
    if (wait >= 0)
      CHECK(marks_.count(wait) == 1);
    if (lane == 0 && wait >= 0 && marks_.count(wait))
      joined_ = std::max(joined_, marks_.at(wait));
  }
  void markLane(long mark) override {
    CHECK(recording_ && !kept_.empty());
    marks_[mark] = long(kept_.size()) - 1;
  }

  int captures = 0, replays = 0;
  int64_t eagerLaunches = 0, sideLaunches = 0;
  uint64_t generation = 0; ///< bumped by the test: recordings go stale
  bool refuse = false;
  bool twoStreams = false; ///< prepareSideStream's answer

private:
  std::unique_ptr<Backend> cpu_;
  bool recording_ = false;
  std::vector<Launch> kept_;
  int lane_ = 0;
  long wait_ = -1;
  long joined_ = -1; ///< the last side launch the main lane waited for
  std::map<long, long> marks_; ///< the engine's mark -> launch in kept_
};

std::vector<float> params(const Engine &e) {
  std::vector<float> all;
  const Memory &m = e.memory();
  for (size_t k : m.withRole(plan::Role::Param)) {
    std::vector<float> v(m.bytes(k) / 4);
    m.toHost(k, v.data());
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

bool sameBits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/// One iteration of `e`: its micro-batches (tokens shifted by the step and
/// the micro-batch, so every run sees other inputs), then the optimizer.
/// Returns the micro-batch losses and the grad norm.
std::vector<float> iterate(Engine &e, int step, const test::BigramConfig &cfg,
                           Tracer *tracer = nullptr) {
  std::vector<float> out;
  const size_t n = size_t(cfg.micro * cfg.seq);
  std::vector<int32_t> tok(n), tgt(n);
  ProgramRunner &train = e.program("train");
  for (int m = 0; m < int(cfg.microbatches); ++m) {
    for (size_t k = 0; k < n; ++k) {
      tok[k] = int32_t((k * 7 + size_t(step) * 3 + size_t(m)) % size_t(cfg.vocab));
      tgt[k] = int32_t((k * 5 + size_t(step)) % size_t(cfg.vocab));
    }
    train.setInput("tokens", tok.data(), n * 4);
    train.setInput("targets", tgt.data(), n * 4);
    train.run(tracer);
    out.push_back(train.getScalar("loss"));
  }
  ProgramRunner &opt = e.program("optimizer");
  opt.setScalar("lr", 0.01f * float(step));
  opt.setScalar("step", float(step));
  opt.run(tracer);
  out.push_back(opt.getScalar("grad_norm"));
  return out;
}

/// The bigram plan on the plain CPU backend and on the recording one,
/// side by side from the same initial parameters.
struct Twins {
  explicit Twins(bool twoStreams)
      : cfg(clipped()), plan(test::makeBigramPlan(cfg)),
        cpu(createCpuBackend(1)) {
    rec.twoStreams = twoStreams;
    plain = std::make_unique<Engine>(plan, *cpu, "cpu");
    graphed = std::make_unique<Engine>(plan, rec, "cpu");
  }
  void initialize(uint64_t seed) {
    plain->memory().initialize(seed);
    graphed->memory().initialize(seed);
  }
  static test::BigramConfig clipped() {
    test::BigramConfig c;
    c.clip = 1.0f;
    return c;
  }
  test::BigramConfig cfg;
  plan::Plan plan;
  std::unique_ptr<Backend> cpu;
  RecordingBackend rec;
  std::unique_ptr<Engine> plain, graphed;
};

void testReplay() {
  Twins t(false);
  const test::BigramConfig &cfg = t.cfg;
  const plan::Plan &plan = t.plan;
  RecordingBackend &rec = t.rec;
  Engine &plain = *t.plain, &graphed = *t.graphed;
  std::vector<std::string> notices, plainNotices;
  plain.useGraphs([&](const std::string &l) { plainNotices.push_back(l); });
  graphed.useGraphs([&](const std::string &l) { notices.push_back(l); });
  CHECK(!plain.program("train").graphEligible());
  CHECK(graphed.program("train").graphEligible());
  CHECK(graphed.program("optimizer").graphEligible());
  t.initialize(3);
  size_t trainKernels = 0;
  for (const plan::Program &p : plan.programs)
    if (p.name == "train")
      trainKernels = p.instrs.size();

  auto same = [&](int step, const char *what) {
    std::vector<float> a = iterate(plain, step, cfg),
                       b = iterate(graphed, step, cfg);
    bool ok = sameBits(a, b) && sameBits(params(plain), params(graphed));
    if (!ok)
      std::fprintf(stderr, "step %d (%s): losses or parameters differ\n", step,
                   what);
    CHECK(ok);
  };
  // Step 1: train runs eagerly, then records (micro-batch 2); the optimizer
  // runs eagerly.
  same(1, "warm");
  CHECK(rec.captures == 1 && rec.replays == 1);
  CHECK(notices.size() == 1);
  CHECK(!notices.empty() &&
        notices[0] == "program train replayed as a test recording: " +
                          std::to_string(trainKernels) + " kernels");
  // Step 2: train replays twice, the optimizer records and replays.
  same(2, "recorded");
  CHECK(rec.captures == 2 && rec.replays == 4);
  CHECK(notices.size() == 2 && notices.back().find("program optimizer "
                                                   "replayed as a test "
                                                   "recording: ") == 0);
  const int64_t eagerBefore = rec.eagerLaunches;
  same(3, "replayed");
  CHECK(rec.captures == 2 && rec.replays == 7);
  CHECK(rec.eagerLaunches == eagerBefore); // nothing launched on its own

  // Stale recordings are made again (no second notice).
  ++rec.generation;
  same(4, "stale");
  CHECK(rec.captures == 4 && rec.replays == 10);
  CHECK(notices.size() == 2);

  // A run traced kernel by kernel launches each kernel itself.
  {
    Tracer tracer(0, true);
    const int64_t before = rec.eagerLaunches;
    const int replaysBefore = rec.replays;
    std::vector<float> a = iterate(plain, 5, cfg),
                       b = iterate(graphed, 5, cfg, &tracer);
    CHECK(sameBits(a, b) && sameBits(params(plain), params(graphed)));
    CHECK(rec.replays == replaysBefore && rec.eagerLaunches > before);
  }

  // Refused: the program stays eager for good, with one notice why.
  rec.refuse = true;
  ++rec.generation;
  same(6, "refused");
  CHECK(rec.captures == 4);
  CHECK(notices.size() == 4);
  CHECK(notices.size() == 4 &&
        notices[2] == "program train runs kernel by kernel: refused by the "
                      "test");
  rec.refuse = false;
  same(7, "eager for good");
  CHECK(rec.captures == 4 && notices.size() == 4);
  CHECK(plainNotices.empty());
}

/// The same bits with the launches split over two lanes, replayed in the
/// orders the waits allow.
void testSideStream() {
  Twins t(true);
  const test::BigramConfig &cfg = t.cfg;
  RecordingBackend &rec = t.rec;
  Engine &plain = *t.plain, &graphed = *t.graphed;
  std::vector<std::string> notices;
  graphed.useGraphs([&](const std::string &l) { notices.push_back(l); });
  t.initialize(5);
  for (int step = 1; step <= 5; ++step) {
    std::vector<float> a = iterate(plain, step, cfg),
                       b = iterate(graphed, step, cfg);
    const bool ok = sameBits(a, b) && sameBits(params(plain), params(graphed));
    if (!ok)
      std::fprintf(stderr, "two lanes, step %d: losses or parameters differ\n",
                   step);
    CHECK(ok);
  }
  CHECK(rec.replays >= 4 && rec.sideLaunches > 0);
  const bool told =
      !notices.empty() &&
      notices[0].find("launches on the side stream") != std::string::npos;
  CHECK(told);
  std::printf("two lanes: %lld side launches recorded, %d replays; %s\n",
              (long long)rec.sideLaunches, rec.replays,
              notices.empty() ? "no notice" : notices[0].c_str());
}

} // namespace

int main() {
  try {
    testReplay();
    testSideStream();
  } catch (const std::exception &e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    ++failures;
  }
  std::printf("graph replay %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}

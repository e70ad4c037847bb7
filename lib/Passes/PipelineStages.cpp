//===- PipelineStages.cpp - Which pipeline stage computes each op --------===//
//
// `mega-pipeline-stages{stages=S ranks=P schedule microbatches=m optimizer
// moment-shards memory-limit-mb}` decides the pipeline cut of @train's
// forward program: it gives every op a `mega.stage = s` (0 <= s < S) and
// records which layers each stage holds and the estimated peak memory of
// each pipeline rank. mega-autodiff copies an op's stage onto the ops of its
// adjoint, and mega-pipeline-split then cuts the differentiated program into
// one forward and one backward program per stage. With S = P*V, virtual
// stage s lives on pipeline rank s mod P (Megatron's interleaved layout).
//
// Algorithm:
//  1. Units. A parameter named `<prefix>.<i>.<rest>` (mega-unroll's names)
//     belongs to layer i, unit i+1. Walking @train in program order, an op
//     with operands gets the largest unit among its operands' units and its
//     parameters' units; a parameter outside the layers is unit 0 (the
//     embedding) while no layer has been seen yet, unit L+1 (final norm,
//     output layer, loss) afterwards. Ops without operands (mega.param,
//     mega.input, mega.fill) and ops computed from them alone have no unit:
//     they are cloned next to each stage that uses them (step 6).
//  2. Cost of a unit: the FLOPs of its ops from their shapes (2*M*N*K per
//     matmul, one per result element otherwise).
//  3. Memory of a unit, an estimate made before autodiff and fusion exist:
//     (a) parameter state: every parameter the unit's ops read (directly or
//     through ops without a unit) costs its bytes for the parameter, its
//     gradient and, with optimizer=adam, two moments (divided by
//     moment-shards under the distributed optimizer); sgd holds none. A
//     parameter read by several stages (the tied wte) counts on each.
//     (b) activations per micro-batch: the bytes of every result of the
//     unit's ops, i.e. as if the backward kept every intermediate of the
//     forward. That over-counts results the adjoints do not read (an add's
//     operands, views) and ignores the fused kernels' scratch; the runtime's
//     stash (what each backward reads of its forward) is smaller (see
//     docs/compiler.md for measured figures).
//     Peak of rank r = the parameter state of its stages + the most
//     activation bytes alive at once when rank r runs its steps of the
//     schedule (include/mega/Passes/PipelineSchedule.h: a forward of stage s
//     adds stage s's activations, its backward frees them). That is
//     min(P-r, m) micro-batches for 1F1B, m for GPipe, and the interleaved
//     schedule's warm-up + 1 forwards spread over the rank's chunks.
//  4. Partition: the L layers into S contiguous, non-empty groups; the
//     embedding joins group 0 and the final unit group S-1. S > L is an
//     error naming both values. Among the cuts where no rank's peak exceeds
//     memory-limit-mb (0: no limit):
//       a. the smallest FLOPs of the most expensive group (F*),
//       b. among those, the smallest peak of the fullest rank (M*),
//       c. among those, the earliest cut: the last group starts as early as
//          possible, then the one before it, and so on.
//     With V = 1 a rank is a group, so (a) and (b) are dynamic programmes
//     minimising the largest group value over the groups allowed, and (c)
//     follows a table of which prefixes can still be completed. With V > 1
//     a rank's peak mixes several groups: for each FLOPs bound from F*
//     upwards the cuts within it are enumerated (pruned by the same table)
//     and each rank's peak evaluated; more than 1,000,000 cuts is an error.
//     No cut within the limit: an error naming the limit and the smallest
//     peak any cut reaches.
//  5. Report: the module gets `mega.pipeline_layers`, one string per
//     virtual stage ("embedding h.0 h.1"), and `mega.pipeline_memory`, the
//     estimated peak bytes of each pipeline rank (i64, rank order).
//  6. Annotate: `mega.stage` on every op with a unit; every op without a
//     unit is cloned once per stage that uses it (so each stage reads its own
//     `mega.param`: the tied wte then gets one gradient accumulation per
//     stage) and the clone gets that stage.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"
#include "mega/Passes/PipelineSchedule.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringMap.h"

#include <cstdio>
#include <functional>
#include <limits>

namespace mega {
#define GEN_PASS_DEF_MEGAPIPELINESTAGES
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

constexpr int64_t kNoUnit = -1;
constexpr int64_t kMaxEnumeratedCuts = 1000000;
constexpr double kMiB = 1024.0 * 1024.0;

/// Layer index and prefix of a parameter name `<prefix>.<i>.<rest>`.
std::optional<std::pair<std::string, int64_t>> layerOf(StringRef name) {
  auto [prefix, rest] = name.split('.');
  auto [index, tail] = rest.split('.');
  int64_t i;
  if (prefix.empty() || tail.empty() || index.getAsInteger(10, i) || i < 0)
    return std::nullopt;
  return std::make_pair(prefix.str(), i);
}

int64_t numel(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r || !r.hasStaticShape())
    return 0;
  return r.getNumElements();
}

int64_t bytesOf(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r || !r.hasStaticShape() || !r.getElementType().isIntOrFloat())
    return 0;
  return r.getNumElements() *
         int64_t((r.getElementType().getIntOrFloatBitWidth() + 7) / 8);
}

/// Bytes as a reader wants them: MiB, or bytes below 0.1 MiB (test-sized
/// models).
std::string mib(double bytes) {
  char buf[48];
  if (bytes >= 0.1 * kMiB)
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / kMiB);
  else
    std::snprintf(buf, sizeof buf, "%.0f bytes", bytes);
  return buf;
}

/// An option value as the user typed it (0.5, 12, 1e-05).
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

/// Step 2: a shape-based FLOP count (what the runtime's kernels do).
double flopsOf(Operation *op) {
  if (auto mm = dyn_cast<MatMulOp>(op)) {
    auto a = cast<RankedTensorType>(mm.getOperand(0).getType());
    int64_t k = a.getShape()[a.getRank() - (mm.getTransposeA() ? 2 : 1)];
    return 2.0 * double(numel(mm.getType())) * double(k);
  }
  double n = 0;
  for (Value r : op->getResults())
    n += double(numel(r.getType()));
  return n;
}

/// Steps 2-4: the cost model of the units and the search for the cut.
/// Group s of a cut holds layers [a, e) (units a+1..e), plus unit 0 when
/// s = 0 and unit L+1 when s = S-1.
struct CutModel {
  int64_t L = 0, S = 1;
  pipeline::ScheduleConfig schedule;
  std::vector<std::vector<pipeline::Step>> steps;
  SmallVector<double> flops;     ///< per unit
  SmallVector<int64_t> acts;     ///< activation bytes per micro-batch
  SmallVector<int64_t> ownState; ///< state of parameters read by one unit
  struct Shared {                ///< a parameter read by several units
    int64_t bytes = 0;
    SmallVector<int64_t> units;
  };
  SmallVector<Shared> shared;
  SmallVector<int64_t> inflight; ///< V = 1: peak micro-batches on rank r
  int64_t cutsSeen = 0;

  bool has(int64_t s, int64_t a, int64_t e, int64_t unit) const {
    return (unit == 0 && s == 0) || (unit == L + 1 && s == S - 1) ||
           (unit >= a + 1 && unit <= e);
  }
  double groupFlops(int64_t s, int64_t a, int64_t e) const {
    double c = 0;
    for (int64_t l = a; l < e; ++l)
      c += flops[l + 1];
    if (s == 0)
      c += flops[0];
    if (s == S - 1)
      c += flops[L + 1];
    return c;
  }
  int64_t sumOver(ArrayRef<int64_t> perUnit, int64_t s, int64_t a,
                  int64_t e) const {
    int64_t n = 0;
    for (int64_t u = 0; u <= L + 1; ++u)
      if (has(s, a, e, u))
        n += perUnit[u];
    return n;
  }
  int64_t groupState(int64_t s, int64_t a, int64_t e) const {
    int64_t n = sumOver(ownState, s, a, e);
    for (const Shared &p : shared)
      if (llvm::any_of(p.units, [&](int64_t u) { return has(s, a, e, u); }))
        n += p.bytes;
    return n;
  }
  int64_t groupActs(int64_t s, int64_t a, int64_t e) const {
    return sumOver(acts, s, a, e);
  }
  /// V = 1: the peak of the rank that runs group s alone.
  double groupPeak(int64_t s, int64_t a, int64_t e) const {
    return double(groupState(s, a, e)) +
           double(inflight[s]) * double(groupActs(s, a, e));
  }

  /// The most activation bytes alive at once on `rank` (step 3).
  int64_t activationPeak(int64_t rank, ArrayRef<int64_t> stageActs) const {
    int64_t live = 0, peak = 0;
    for (const pipeline::Step &st : steps[size_t(rank)]) {
      int64_t b = stageActs[st.stage(schedule, rank)];
      live += st.forward ? b : -b;
      peak = std::max(peak, live);
    }
    return peak;
  }

  /// Estimated peak bytes per rank of the cut `first` (group starts).
  SmallVector<int64_t> rankPeaks(ArrayRef<int64_t> first) const {
    SmallVector<int64_t> state(S), act(S);
    for (int64_t s = 0; s < S; ++s) {
      int64_t e = s + 1 < S ? first[s + 1] : L;
      state[s] = groupState(s, first[s], e);
      act[s] = groupActs(s, first[s], e);
    }
    SmallVector<int64_t> peaks;
    for (int64_t r = 0; r < schedule.ranks; ++r) {
      int64_t n = activationPeak(r, act);
      for (int64_t c = 0; c < schedule.virtualStages; ++c)
        n += state[c * schedule.ranks + r];
      peaks.push_back(n);
    }
    return peaks;
  }

  using Allowed = std::function<bool(int64_t, int64_t, int64_t)>;
  using Metric = std::function<double(int64_t, int64_t, int64_t)>;

  /// The smallest possible largest `metric` over the groups of a cut made
  /// of allowed groups only; infinity when there is none.
  double minimax(const Metric &metric, const Allowed &allowed) const {
    const double inf = std::numeric_limits<double>::infinity();
    // best[s][e]: over groups 0..s covering layers [0, e).
    std::vector<std::vector<double>> best(S, std::vector<double>(L + 1, inf));
    for (int64_t e = 1; e <= L; ++e)
      if (allowed(0, 0, e))
        best[0][e] = metric(0, 0, e);
    for (int64_t s = 1; s < S; ++s)
      for (int64_t e = s + 1; e <= L; ++e)
        for (int64_t a = s; a < e; ++a)
          if (best[s - 1][a] < inf && allowed(s, a, e))
            best[s][e] =
                std::min(best[s][e], std::max(best[s - 1][a], metric(s, a, e)));
    return best[S - 1][L];
  }

  /// Calls `visit` with every cut made of allowed groups, earliest first
  /// (step 4c), until it returns false. ok[s][e]: layers [0, e) can be cut
  /// into allowed groups 0..s, so the walk never enters a dead end.
  void forEachCut(const Allowed &allowed,
                  const std::function<bool(ArrayRef<int64_t>)> &visit) const {
    std::vector<std::vector<bool>> ok(S, std::vector<bool>(L + 1, false));
    for (int64_t e = 1; e <= L; ++e)
      ok[0][e] = allowed(0, 0, e);
    for (int64_t s = 1; s < S; ++s)
      for (int64_t e = s + 1; e <= L; ++e)
        for (int64_t a = s; a < e && !ok[s][e]; ++a)
          ok[s][e] = ok[s - 1][a] && allowed(s, a, e);
    if (!ok[S - 1][L])
      return;
    SmallVector<int64_t> first(S, 0);
    std::function<bool(int64_t, int64_t)> walk = [&](int64_t s, int64_t e) {
      if (s == 0)
        return visit(first);
      for (int64_t a = s; a < e; ++a)
        if (ok[s - 1][a] && allowed(s, a, e)) {
          first[s] = a;
          if (!walk(s - 1, a))
            return false;
        }
      return true;
    };
    walk(S - 1, L);
  }

  /// Step 4: the group starts of the chosen cut, or nullopt when no cut
  /// fits `limit` bytes (0: none); `smallestPeak` is then the smallest
  /// peak any cut reaches. Fails (with `tooMany` set) past
  /// kMaxEnumeratedCuts.
  std::optional<SmallVector<int64_t>> choose(double limit, double &smallestPeak,
                                             bool &tooMany) {
    tooMany = false;
    auto any = [](int64_t, int64_t, int64_t) { return true; };
    auto flopsOf = [&](int64_t s, int64_t a, int64_t e) {
      return groupFlops(s, a, e);
    };
    if (schedule.virtualStages == 1) {
      auto peakOf = [&](int64_t s, int64_t a, int64_t e) {
        return groupPeak(s, a, e);
      };
      auto fits = [&](int64_t s, int64_t a, int64_t e) {
        return limit <= 0 || groupPeak(s, a, e) <= limit;
      };
      double fStar = minimax(flopsOf, fits);
      if (fStar == std::numeric_limits<double>::infinity()) {
        smallestPeak = minimax(peakOf, any);
        return std::nullopt;
      }
      auto withinF = [&](int64_t s, int64_t a, int64_t e) {
        return groupFlops(s, a, e) <= fStar && fits(s, a, e);
      };
      double mStar = minimax(peakOf, withinF);
      SmallVector<int64_t> chosen;
      forEachCut(
          [&](int64_t s, int64_t a, int64_t e) {
            return withinF(s, a, e) && groupPeak(s, a, e) <= mStar;
          },
          [&](ArrayRef<int64_t> first) {
            chosen.assign(first.begin(), first.end());
            return false;
          });
      return chosen;
    }
    // V > 1: FLOPs bounds from F* upwards; each cut within a bound is
    // evaluated whole (a rank's peak mixes its chunks' groups).
    std::vector<double> bounds;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t a = s == 0 ? 0 : s; a < (s == 0 ? 1 : L); ++a)
        for (int64_t e = a + 1; e <= (s == S - 1 ? L : L - (S - 1 - s)); ++e)
          if (s != S - 1 || e == L)
            bounds.push_back(groupFlops(s, a, e));
    llvm::sort(bounds);
    bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
    double fStar = minimax(flopsOf, any);
    smallestPeak = std::numeric_limits<double>::infinity();
    for (double bound : bounds) {
      if (bound < fStar)
        continue;
      std::optional<SmallVector<int64_t>> best;
      double bestPeak = 0;
      forEachCut(
          [&](int64_t s, int64_t a, int64_t e) {
            return groupFlops(s, a, e) <= bound;
          },
          [&](ArrayRef<int64_t> first) {
            if (++cutsSeen > kMaxEnumeratedCuts) {
              tooMany = true;
              return false;
            }
            SmallVector<int64_t> peaks = rankPeaks(first);
            double peak = double(*llvm::max_element(peaks));
            smallestPeak = std::min(smallestPeak, peak);
            if ((limit <= 0 || peak <= limit) && (!best || peak < bestPeak)) {
              best = SmallVector<int64_t>(first.begin(), first.end());
              bestPeak = peak;
            }
            return true;
          });
      if (tooMany)
        return std::nullopt;
      if (best)
        return best;
    }
    return std::nullopt;
  }
};

struct MegaPipelineStages
    : mega::impl::MegaPipelineStagesBase<MegaPipelineStages> {
  using MegaPipelineStagesBase::MegaPipelineStagesBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Option and memory-limit errors are the user's configuration, not the
    // IR's: reported at the module's location without the IR dump that
    // Operation::emitError attaches.
    auto fail = [&](const Twine &message) {
      mlir::emitError(module.getLoc()) << "mega-pipeline-stages: " << message;
      signalPassFailure();
    };
    if (stages < 1)
      return fail("stages must be >= 1, got " + Twine(int64_t(stages)));
    int64_t P = ranks == 0 ? int64_t(stages) : int64_t(ranks);
    if (P < 1 || stages % P != 0)
      return fail("stages=" + Twine(int64_t(stages)) +
                  " must be a positive multiple of ranks=" + Twine(P));
    auto kind = pipeline::parseScheduleKind(schedule.getValue());
    if (!kind)
      return fail("schedule=" + schedule +
                  ": expected gpipe, 1f1b or interleaved");
    CutModel model;
    model.schedule = {*kind, P, stages / P, int64_t(microbatches)};
    if (std::string problem = pipeline::checkSchedule(model.schedule);
        !problem.empty())
      return fail(problem);
    if (optimizer != "adam" && optimizer != "sgd")
      return fail("optimizer=" + optimizer + ": expected adam or sgd");
    if (momentShards < 1)
      return fail("moment-shards must be >= 1, got " +
                  Twine(int64_t(momentShards)));
    if (!(memoryLimitMb >= 0))
      return fail("memory-limit-mb must be >= 0 (0: no limit), got " +
                  num(memoryLimitMb));
    auto train = module.lookupSymbol<func::FuncOp>("train");
    if (!train || !train.getBody().hasOneBlock()) {
      module.emitError("mega-pipeline-stages: needs a single-block "
                       "func.func @train (run mega-unroll first)");
      return signalPassFailure();
    }
    Block &body = train.getBody().front();

    // Step 1.
    llvm::DenseMap<Value, int64_t> unitOf;
    llvm::DenseMap<Operation *, int64_t> opUnit;
    int64_t layers = 0;
    std::string prefix;
    for (ParamOp p : body.getOps<ParamOp>())
      if (auto l = layerOf(p.getName())) {
        layers = std::max(layers, l->second + 1);
        prefix = l->first;
      }
    if (layers == 0) {
      train.emitOpError("has no repeated layers (parameters named "
                        "`<prefix>.<i>.<name>`) to cut into pipeline stages");
      return signalPassFailure();
    }
    int64_t finalUnit = layers + 1, highest = 0;
    for (Operation &op : body.without_terminator()) {
      if (op.getNumRegions()) {
        op.emitOpError("has regions: run mega-unroll first");
        return signalPassFailure();
      }
      int64_t unit = kNoUnit;
      for (Value v : op.getOperands()) {
        if (auto p = v.getDefiningOp<ParamOp>()) {
          auto l = layerOf(p.getName());
          unit = std::max(unit, l ? l->second + 1 : highest > 0 ? finalUnit : 0);
        } else if (auto it = unitOf.find(v); it != unitOf.end()) {
          unit = std::max(unit, it->second);
        }
      }
      if (unit == kNoUnit)
        continue;
      highest = std::max(highest, unit);
      opUnit[&op] = unit;
      for (Value r : op.getResults())
        unitOf[r] = unit;
    }

    // Steps 2 and 3.
    int64_t S = stages;
    model.L = layers;
    model.S = S;
    model.flops.assign(finalUnit + 1, 0.0);
    model.acts.assign(finalUnit + 1, 0);
    model.ownState.assign(finalUnit + 1, 0);
    // Parameter state per element byte: the parameter, its gradient, the
    // AdamW moments (a 1/moment-shards block of each under ZeRO-1).
    int64_t momentCopies = optimizer == "adam" ? 2 : 0;
    llvm::StringMap<std::pair<int64_t, SmallVector<int64_t>>> readers;
    for (auto [op, unit] : opUnit) {
      model.flops[unit] += flopsOf(op);
      for (Value r : op->getResults())
        model.acts[unit] += bytesOf(r.getType());
      // The parameters behind each operand, through ops without a unit.
      SmallVector<Value> work(op->getOperands().begin(),
                              op->getOperands().end());
      llvm::DenseSet<Operation *> seen;
      while (!work.empty()) {
        Operation *d = work.pop_back_val().getDefiningOp();
        if (!d || opUnit.count(d) || !seen.insert(d).second)
          continue;
        if (auto p = dyn_cast<ParamOp>(d)) {
          int64_t b = bytesOf(p.getType());
          auto &entry = readers[p.getName()];
          entry.first = 2 * b + momentCopies * b / momentShards;
          if (!llvm::is_contained(entry.second, unit))
            entry.second.push_back(unit);
        }
        work.append(d->getOperands().begin(), d->getOperands().end());
      }
    }
    for (auto &entry : readers) {
      auto &[bytes, units] = entry.second;
      if (units.size() == 1)
        model.ownState[units.front()] += bytes;
      else
        model.shared.push_back({bytes, units});
    }

    // Step 4.
    if (S > layers) {
      module.emitError() << "mega-pipeline-stages: " << S
                         << " pipeline stages (--pp x --vpp) are more than "
                            "layers="
                         << layers;
      return signalPassFailure();
    }
    model.steps = pipeline::buildSchedule(model.schedule);
    if (model.schedule.virtualStages == 1)
      for (int64_t r = 0; r < P; ++r) {
        SmallVector<int64_t> ones(S, 1);
        model.inflight.push_back(model.activationPeak(r, ones));
      }
    double limit = double(memoryLimitMb) * kMiB, smallestPeak = 0;
    bool tooMany = false;
    std::optional<SmallVector<int64_t>> cut =
        model.choose(limit, smallestPeak, tooMany);
    if (tooMany)
      return fail("more than " + Twine(kMaxEnumeratedCuts) + " cuts of " +
                  Twine(layers) + " layers into " + Twine(S) +
                  " virtual stages to compare under memory-limit-mb=" +
                  num(memoryLimitMb) +
                  "; use fewer virtual stages or another limit");
    if (!cut)
      return fail("no cut of " + Twine(layers) + " layers into " + Twine(S) +
                  " stages fits memory-limit-mb=" + num(memoryLimitMb) +
                  " (" + mib(limit) + "): the smallest estimated peak of a "
                  "rank is " + mib(smallestPeak));
    SmallVector<int64_t> first = *cut;
    SmallVector<int64_t> peaks = model.rankPeaks(first);
    auto stageOfUnit = [&](int64_t unit) {
      if (unit == 0)
        return int64_t(0);
      if (unit == finalUnit)
        return S - 1;
      int64_t s = 0;
      while (s + 1 < S && unit - 1 >= first[s + 1])
        ++s;
      return s;
    };

    // Step 6.
    OpBuilder b(module.getContext());
    for (auto [op, unit] : opUnit)
      op->setAttr("mega.stage", b.getI64IntegerAttr(stageOfUnit(unit)));
    SmallVector<Operation *> unplaced;
    for (Operation &op : body.without_terminator())
      if (!opUnit.count(&op))
        unplaced.push_back(&op);
    // Users first, so that a chain of unit-less ops is cloned from its end.
    for (Operation *op : llvm::reverse(unplaced)) {
      llvm::MapVector<int64_t, SmallVector<OpOperand *>> usesByStage;
      for (OpOperand &use : op->getUses()) {
        Operation *user = use.getOwner();
        auto s = user->getAttrOfType<IntegerAttr>("mega.stage");
        if (!s) {
          if (isa<func::ReturnOp>(user))
            continue;
          user->emitOpError("uses a value no pipeline stage computes");
          return signalPassFailure();
        }
        usesByStage[s.getInt()].push_back(&use);
      }
      if (usesByStage.empty()) {
        if (!isa<OutputOp>(op) && op->getNumResults())
          continue; // dead; canonicalisation removes it
        op->emitOpError("is not used by any pipeline stage");
        return signalPassFailure();
      }
      bool firstStage = true;
      for (auto &[s, uses] : usesByStage) {
        Operation *copy = op;
        if (!firstStage) {
          b.setInsertionPoint(op);
          copy = b.clone(*op);
          for (OpOperand *use : uses)
            use->set(copy->getResult(
                cast<OpResult>(use->get()).getResultNumber()));
        }
        copy->setAttr("mega.stage", b.getI64IntegerAttr(s));
        firstStage = false;
      }
    }
    // Outputs follow their value.
    for (OutputOp out : body.getOps<OutputOp>())
      if (auto d = out.getValue().getDefiningOp())
        if (auto s = d->getAttrOfType<IntegerAttr>("mega.stage"))
          out->setAttr("mega.stage", s);

    // Step 5.
    SmallVector<Attribute> names;
    for (int64_t s = 0; s < S; ++s) {
      std::string text = s == 0 ? "embedding" : "";
      int64_t end = s + 1 < S ? first[s + 1] : layers;
      for (int64_t l = first[s]; l < end; ++l)
        text += (text.empty() ? "" : " ") + prefix + "." + std::to_string(l);
      if (s == S - 1)
        text += " final";
      names.push_back(b.getStringAttr(text));
    }
    module->setAttr("mega.pipeline_layers", b.getArrayAttr(names));
    module->setAttr("mega.pipeline_memory", b.getI64ArrayAttr(peaks));
  }
};

} // namespace

//===- main.cpp - megac: compile a model into a plan
//------------------------===//
//
//   megac MODEL.mlir -o PLAN [--set NAME=VALUE]... [--micro-batch-size B]
//         [--global-batch-size G] [--optimizer adam|sgd] [--lr X] ...
//         [--emit plan|plan-text|mlir] [standard MLIR pass-manager flags]
//   megac [MODEL.mlir] --emit schedule-text|schedule-svg [-o FILE] --pp P
//         [--vpp V] [--schedule gpipe|1f1b|interleaved] [batch flags]
//
// 1. Parse and check the flags: every invalid configuration is one line
//    `megac: error: ...` and exit code 1, before anything is compiled.
// 2. Parse the model and check the --set names against its hyper-parameters.
// 3. Run the pipeline (buildPipeline, below); IR problems are MLIR
//    diagnostics with locations.
// 4. Emit the kernel-level IR, or the plan (binary or text).
// --emit schedule-*: after step 1 (and step 2 when a model is given, for
// `layers`), draw the pipeline schedule (include/mega/Passes/
// PipelineSchedule.h) and stop; nothing is compiled.
//
//===----------------------------------------------------------------------===//
#include "PlanIO.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"
#include "mega/Passes/PipelineSchedule.h"
#include "mega/Target/Plan/PlanEmitter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"

#include <cmath>
#include <cstdio>
#include <sstream>

using namespace mlir;
namespace cl = llvm::cl;

namespace {

//===----------------------------------------------------------------------===//
// Flags (DESIGN.md §2)
//===----------------------------------------------------------------------===//

cl::OptionCategory megacCat("megac options");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<model.mlir>"),
                               cl::cat(megacCat));
cl::opt<std::string> outputFile("o", cl::desc("Output file (the plan)"),
                                cl::value_desc("file"), cl::cat(megacCat));
cl::list<std::string> sets("set",
                           cl::desc("Override a hyper-parameter: NAME=VALUE"),
                           cl::value_desc("NAME=VALUE"), cl::cat(megacCat));
cl::opt<std::string> microBatch("micro-batch-size", cl::value_desc("B"),
                                cl::desc("Samples per micro-batch (default 1)"),
                                cl::init("1"), cl::cat(megacCat));
cl::opt<std::string> globalBatch(
    "global-batch-size", cl::value_desc("G"),
    cl::desc("Samples per optimizer step (default: micro-batch-size)"),
    cl::init("0"), cl::cat(megacCat));
cl::opt<std::string> optimizer("optimizer", cl::value_desc("adam|sgd"),
                               cl::desc("adam (AdamW) or sgd"),
                               cl::init("adam"), cl::cat(megacCat));
cl::opt<std::string> lr("lr", cl::value_desc("X"),
                        cl::desc("Learning rate recorded in the plan"),
                        cl::init("1e-3"), cl::cat(megacCat));
cl::opt<std::string> weightDecay("weight-decay", cl::value_desc("X"),
                                 cl::desc("Decoupled weight decay (rank >= 2)"),
                                 cl::init("0.01"), cl::cat(megacCat));
cl::opt<std::string> beta1("adam-beta1", cl::value_desc("X"),
                           cl::desc("AdamW beta1 (0.9)"), cl::init("0.9"),
                           cl::cat(megacCat));
cl::opt<std::string> beta2("adam-beta2", cl::value_desc("X"),
                           cl::desc("AdamW beta2 (0.999)"), cl::init("0.999"),
                           cl::cat(megacCat));
cl::opt<std::string> adamEps("adam-eps", cl::value_desc("X"),
                             cl::desc("AdamW epsilon (1e-8)"), cl::init("1e-8"),
                             cl::cat(megacCat));
cl::opt<std::string>
    clipGrad("clip-grad", cl::value_desc("X"),
             cl::desc("Clip the global gradient norm (0: off)"),
             cl::init("1.0"), cl::cat(megacCat));
cl::opt<std::string> tp("tensor-model-parallel-size", cl::value_desc("T"),
                        cl::desc("Tensor-parallel ranks"), cl::init("1"),
                        cl::cat(megacCat));
cl::alias tpAlias("tp", cl::aliasopt(tp), cl::cat(megacCat),
                  cl::desc("Alias for "
                           "--tensor-model-parallel-size"));
cl::opt<std::string> pp("pipeline-model-parallel-size", cl::value_desc("P"),
                        cl::desc("Pipeline stages"), cl::init("1"),
                        cl::cat(megacCat));
cl::alias ppAlias("pp", cl::aliasopt(pp), cl::cat(megacCat),
                  cl::desc("Alias for --pipeline-model-parallel-size"));
cl::opt<std::string> dp("data-parallel-size", cl::value_desc("D"),
                        cl::desc("Data-parallel ranks"), cl::init("1"),
                        cl::cat(megacCat));
cl::alias dpAlias("dp", cl::aliasopt(dp), cl::cat(megacCat),
                  cl::desc("Alias for --data-parallel-size"));
cl::opt<std::string> vpp("num-virtual-stages-per-pipeline-rank",
                         cl::value_desc("V"),
                         cl::desc("Virtual pipeline stages per rank"),
                         cl::init("1"), cl::cat(megacCat));
cl::alias
    vppAlias("vpp", cl::aliasopt(vpp), cl::cat(megacCat),
             cl::desc("Alias for --num-virtual-stages-per-pipeline-rank"));
cl::opt<std::string> schedule("schedule",
                              cl::value_desc("gpipe|1f1b|interleaved"),
                              cl::desc("gpipe, 1f1b or interleaved"),
                              cl::init("1f1b"), cl::cat(megacCat));
cl::opt<std::string> pipelineMemoryLimit(
    "pipeline-memory-limit", cl::value_desc("MiB"),
    cl::desc("Largest estimated peak memory of a pipeline rank; the stage "
             "cut must fit it (0: no limit)"),
    cl::init("0"), cl::cat(megacCat));
cl::opt<bool> sequenceParallel("sequence-parallel",
                               cl::desc("Megatron sequence parallelism"),
                               cl::cat(megacCat));
cl::opt<bool> distributedOptimizer(
    "use-distributed-optimizer",
    cl::desc("Shard optimizer state over data-parallel ranks"),
    cl::cat(megacCat));
cl::opt<bool> overlapGradReduce(
    "overlap-grad-reduce",
    cl::desc("Start each data-parallel gradient bucket's all-reduce (its "
             "reduce-scatters with --use-distributed-optimizer) in the last "
             "micro-batch's backward, as soon as its gradients are final "
             "(default on; =false reduces them in the optimizer step)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<std::string> ddpBucketSize(
    "ddp-bucket-size", cl::value_desc("N"),
    cl::desc("Gradient elements per data-parallel all-reduce bucket "
             "(default 6553600: 25 MiB of f32)"),
    cl::init("6553600"), cl::cat(megacCat));
cl::opt<std::string> target("target", cl::value_desc("cpu|cuda"),
                            cl::desc("cpu or cuda"), cl::init("cpu"),
                            cl::cat(megacCat));
cl::opt<std::string> precision("precision", cl::value_desc("fp32|bf16"),
                               cl::desc("fp32 or bf16"), cl::init("fp32"),
                               cl::cat(megacCat));
cl::opt<bool> bf16Reductions(
    "bf16-reductions",
    cl::desc("bf16: a bias gradient is summed from the gradient's bf16 copy, "
             "as under autocast (mega-mixed-precision{reduce-bf16}; default "
             "on; =false sums the f32 gradient)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> bf16Products(
    "bf16-products",
    cl::desc("bf16: a product that only elementwise code reads (no bias "
             "add) is stored in bf16, as autocast's GEMM output "
             "(mega-mixed-precision{round-products}; default on; =false "
             "keeps it f32)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> bf16Residual(
    "bf16-residual",
    cl::desc("bf16: the residual stream (what the layer norms read) is "
             "stored in bf16, as in Megatron's bf16 training "
             "(mega-mixed-precision{round-residual}; default on; =false is "
             "--fp32-residual-connection)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> bf16ResidualGrad(
    "bf16-residual-grad",
    cl::desc("bf16: the residual stream's gradient (the layer norms' dx "
             "and their sums) is rounded to bf16 where it is read, as in "
             "Megatron's bf16 backward (mega-mixed-precision"
             "{round-residual-grad}; default on with the bf16 residual "
             "stream; =false keeps the gradient f32)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> narrowPorts(
    "narrow-ports",
    cl::desc("bf16 pipelines: a port between programs carries bf16 where "
             "its value is exactly that (a widened bf16 value, or one every "
             "reader rounds to bf16), half the bytes in memory and between "
             "ranks (mega-narrow-ports; default on; the same bits, =false "
             "keeps every port f32 to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> tensorGradBucket(
    "tensor-grad-bucket",
    cl::desc("sequence parallelism: the layer norms', biases' and wpe's "
             "gradient terms are summed over the tensor ranks once a step, "
             "in one all-reduce at the start of the optimizer, instead of "
             "one per parameter and micro-batch in the backward "
             "(mega-tensor-grad-bucket; default on; =false to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> portSources(
    "port-sources",
    cl::desc("pipelines: a port whose value its producer only reshapes, "
             "transposes or splits out of another value (attention's q, k, "
             "v and o) sends that value once, and the readers redo the "
             "layout ops (mega-port-sources; default on; the same values, "
             "=false to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> fp32Residual(
    "fp32-residual-connection",
    cl::desc("bf16: keep the residual stream in f32, as Megatron's flag of "
             "this name and as PyTorch's autocast do"),
    cl::init(false), cl::cat(megacCat));
cl::opt<bool> foldCasts(
    "fold-casts",
    cl::desc("bf16: kernels write the bf16 copy of their result instead of a "
             "Cast kernel (mega-fold-casts; default on; the same bits, "
             "=false keeps every Cast to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> fuseEpilogues(
    "fuse-epilogues",
    cl::desc("MatMul computes a Linear's bias, residual add and GELU in its "
             "epilogue (mega-fuse-epilogues; default on; the same bits on "
             "the CPU, =false keeps the Elementwise kernels to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> fuseLoss(
    "fuse-loss",
    cl::desc("CrossEntropy and its gradient run as one kernel that reads the "
             "logits once (mega-fuse-loss; default on; the same bits, =false "
             "keeps the two kernels to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> fuseNormGrad(
    "fuse-norm-grad",
    cl::desc("LayerNormGrad adds dx into the residual gradient, writes its "
             "bf16 copy and adds dw/db into the gradients itself "
             "(mega-fuse-norm-grad; default on; the same bits, =false keeps "
             "the Elementwise and Cast kernels to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> fuseBiasGrad(
    "fuse-bias-grad",
    cl::desc("A Linear's bias gradient is summed by its weight gradient's "
             "MatMul (epilogue 5) instead of a ReduceSum that reads the "
             "output gradient again (mega-fuse-bias-grad; default on; the "
             "same bits on the CPU, =false keeps the ReduceSum kernels)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> overwriteGrads(
    "overwrite-grads",
    cl::desc("With one micro-batch per step, the first kernel to add into a "
             "gradient overwrites it and the optimizer no longer clears "
             "the gradients (mega-overwrite-grads; default on; the same "
             "bits, =false keeps the clearing)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<unsigned> wgradSlack(
    "wgrad-slack",
    cl::desc("Kernels after each weight gradient's bf16 product that may not "
             "write into the arena buffers it reads, so that mega-run "
             "--wgrad-stream can run the product beside them on a second "
             "stream (mega-assign-buffers{wgrad-slack}; default 0: the arena "
             "reuses them at once)"),
    cl::init(0), cl::cat(megacCat));
cl::opt<cl::boolOrDefault> onesColumnBiasGrad(
    "ones-column-bias-grad",
    cl::desc("A Linear fed by a LayerNorm gets its bias gradient as one more "
             "row of its weight gradient's product: the norm writes a column "
             "of ones beside its output (mega-ones-column; default on for "
             "--target cuda --precision bf16, where cuBLASLt's bias-gradient "
             "epilogue costs more than the row; off elsewhere)"),
    cl::cat(megacCat));
cl::opt<bool> bf16Bias(
    "bf16-bias",
    cl::desc("bf16: a Linear whose output (or GELU pre-activation) is stored "
             "in bf16 reads its bias in bf16, as autocast's Linear and as "
             "cuBLASLt's bias epilogue take it (mega-bf16-bias; default on; "
             "=false keeps the f32 bias, which the GPU then adds in a "
             "kernel of its own)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<bool> bf16WeightCopies(
    "bf16-weight-copies",
    cl::desc("bf16: the optimizer keeps each AdamW-updated weight's bf16 "
             "copy and the programs read it instead of casting the weight "
             "at every use (mega-bf16-weight-copies; default on; the same "
             "bits, =false keeps the Casts to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<double> maxLogitsMib(
    "max-logits-mib", cl::value_desc("MiB"),
    cl::desc("The output layer, its loss and their gradients run on row "
             "blocks whose logits fit in this many MiB, so the arena holds "
             "one block's (mega-chunk-loss; default 512; 0 computes all "
             "rows at once)"),
    cl::init(512), cl::cat(megacCat));
cl::opt<bool> foldAttentionLayout(
    "fold-attention-layout",
    cl::desc("Attention reads q, k, v from the projection's layout and "
             "writes o in the output projection's (mega-fold-attention-"
             "layout; default on; the same bits, =false keeps the "
             "Transposes to compare)"),
    cl::init(true), cl::cat(megacCat));
cl::opt<std::string> emit(
    "emit", cl::value_desc("plan|plan-text|mlir|schedule-text|schedule-svg"),
    cl::desc("plan (binary, default), plan-text, mlir (the kernel-level IR), "
             "or the pipeline schedule as text or SVG"),
    cl::init("plan"), cl::cat(megacCat));

[[noreturn]] void fail(const llvm::Twine &message) {
  llvm::errs() << "megac: error: " << message << "\n";
  std::exit(1);
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

/// The compile options after checking, as the pipeline needs them.
struct CompileOptions {
  std::vector<std::string> sets; ///< "name=value", batch included
  int64_t microBatch = 1, globalBatch = 1, microbatches = 1;
  int64_t tp = 1, pp = 1, dp = 1, vpp = 1;
  int64_t ddpBucketSize = 6553600; ///< f32 elements per gradient bucket
  double pipelineMemoryLimitMb = 0;
  mega::pipeline::ScheduleKind schedule =
      mega::pipeline::ScheduleKind::OneFOneB;
  double lr = 1e-3, weightDecay = 0.01, beta1 = 0.9, beta2 = 0.999, eps = 1e-8,
         clipGrad = 1.0;
};

int64_t intFlag(const char *flag, llvm::StringRef text) {
  int64_t v;
  if (text.trim().getAsInteger(10, v))
    fail(llvm::Twine("--") + flag + " " + text + ": expected an integer");
  return v;
}

double floatFlag(const char *flag, llvm::StringRef text) {
  double v;
  if (text.trim().getAsDouble(v) || !std::isfinite(v))
    fail(llvm::Twine("--") + flag + " " + text + ": expected a number");
  return v;
}

//===----------------------------------------------------------------------===//
// Step 1: flags
//===----------------------------------------------------------------------===//

CompileOptions checkFlags() {
  CompileOptions o;
  bool scheduleOnly = emit == "schedule-text" || emit == "schedule-svg";
  if (inputFile.empty() && !scheduleOnly)
    fail("no model given (usage: megac MODEL.mlir -o PLAN)");
  auto positive = [](const char *flag, int64_t v) {
    if (v <= 0)
      fail(llvm::Twine("--") + flag + " must be positive, got " +
           llvm::Twine(v));
    return v;
  };
  // Parallelism: tensor and data parallelism; `heads` not divisible by --tp
  // is the tensor-parallel pass's error (it knows the model).
  o.tp = positive("tp", intFlag("tp", tp));
  o.pp = positive("pp", intFlag("pp", pp));
  o.dp = positive("dp", intFlag("dp", dp));
  o.ddpBucketSize = positive("ddp-bucket-size",
                             intFlag("ddp-bucket-size", ddpBucketSize));
  o.vpp = positive("vpp", intFlag("vpp", vpp));
  // Pipeline: the schedule's own rules are checked with the batch, below.
  auto kind = mega::pipeline::parseScheduleKind(schedule.getValue());
  if (!kind)
    fail("--schedule " + schedule + ": expected gpipe, 1f1b or interleaved");
  o.schedule = *kind;
  if (o.vpp > 1 && o.pp == 1)
    fail("--vpp " + llvm::Twine(o.vpp) + " needs --pp > 1");
  o.pipelineMemoryLimitMb =
      floatFlag("pipeline-memory-limit", pipelineMemoryLimit);
  if (!(o.pipelineMemoryLimitMb >= 0))
    fail("--pipeline-memory-limit must be >= 0 MiB (0: no limit), got " +
         num(o.pipelineMemoryLimitMb));
  if (o.pipelineMemoryLimitMb > 0 && o.pp == 1)
    fail("--pipeline-memory-limit " + num(o.pipelineMemoryLimitMb) +
         " needs --pp > 1");
  if (!(maxLogitsMib >= 0) || std::isinf(maxLogitsMib))
    fail("--max-logits-mib must be >= 0 MiB (0: all rows at once), got " +
         num(maxLogitsMib));
  if (sequenceParallel && o.tp == 1)
    fail("--sequence-parallel needs --tp > 1");
  // The distributed optimizer shards the AdamW moments over the data ranks
  // (a dim D does not divide is mega-data-parallel's error: it knows the
  // parameters).
  if (distributedOptimizer && o.dp == 1)
    fail("--use-distributed-optimizer needs --dp > 1");
  if (distributedOptimizer && optimizer == "sgd")
    fail("--use-distributed-optimizer needs --optimizer adam (sgd has no "
         "state to shard)");
  if (target != "cpu" && target != "cuda")
    fail("--target " + target + ": expected cpu or cuda");
  if (precision != "fp32" && precision != "bf16")
    fail("--precision " + precision + ": expected fp32 or bf16");
  if (bf16Residual.getNumOccurrences() && bf16Residual && precision != "bf16")
    fail("--bf16-residual needs --precision bf16 (in fp32 the residual "
         "stream is f32 like everything else)");
  if (bf16Residual.getNumOccurrences() && bf16Residual && fp32Residual)
    fail("--bf16-residual and --fp32-residual-connection contradict each "
         "other");
  if (bf16ResidualGrad.getNumOccurrences() && bf16ResidualGrad &&
      precision != "bf16")
    fail("--bf16-residual-grad needs --precision bf16");
  if (bf16ResidualGrad.getNumOccurrences() && bf16ResidualGrad &&
      (fp32Residual || !bf16Residual))
    fail("--bf16-residual-grad needs the residual stream in bf16 (it "
         "contradicts --fp32-residual-connection and --bf16-residual=false)");

  // Batch.
  o.microBatch =
      positive("micro-batch-size", intFlag("micro-batch-size", microBatch));
  int64_t g = intFlag("global-batch-size", globalBatch);
  o.globalBatch =
      g == 0 ? o.microBatch * o.dp : positive("global-batch-size", g);
  if (o.globalBatch % (o.microBatch * o.dp) != 0)
    fail("--global-batch-size " + llvm::Twine(o.globalBatch) +
         " is not a multiple of --micro-batch-size " +
         llvm::Twine(o.microBatch) +
         (o.dp > 1 ? " times --dp " + llvm::Twine(o.dp) : llvm::Twine("")));
  o.microbatches = o.globalBatch / (o.microBatch * o.dp);
  if (std::string problem = mega::pipeline::checkSchedule(
          {o.schedule, o.pp, o.vpp, o.microbatches});
      !problem.empty())
    fail(problem);

  // Optimizer.
  if (optimizer != "adam" && optimizer != "sgd")
    fail("--optimizer " + optimizer + ": expected adam or sgd");
  o.lr = floatFlag("lr", lr);
  o.weightDecay = floatFlag("weight-decay", weightDecay);
  o.beta1 = floatFlag("adam-beta1", beta1);
  o.beta2 = floatFlag("adam-beta2", beta2);
  o.eps = floatFlag("adam-eps", adamEps);
  o.clipGrad = floatFlag("clip-grad", clipGrad);
  if (!(o.lr > 0))
    fail("--lr must be positive, got " + num(o.lr));
  if (!(o.weightDecay >= 0))
    fail("--weight-decay must be >= 0, got " + num(o.weightDecay));
  if (!(o.beta1 >= 0 && o.beta1 < 1))
    fail("--adam-beta1 must be in [0, 1), got " + num(o.beta1));
  if (!(o.beta2 >= 0 && o.beta2 < 1))
    fail("--adam-beta2 must be in [0, 1), got " + num(o.beta2));
  if (!(o.eps > 0))
    fail("--adam-eps must be positive, got " + num(o.eps));
  if (!(o.clipGrad >= 0))
    fail("--clip-grad must be >= 0 (0 disables clipping), got " +
         num(o.clipGrad));

  // Hyper-parameters (names are checked against the model in step 2).
  for (const std::string &s : sets) {
    auto [name, value] = llvm::StringRef(s).split('=');
    int64_t v;
    if (name.empty() || value.empty())
      fail("--set " + s + ": expected NAME=VALUE");
    if (value.getAsInteger(10, v) || v <= 0)
      fail("--set " + s + ": the value must be a positive integer");
    if (name == "batch")
      fail("--set " + s + ": the batch is set by --micro-batch-size");
    o.sets.push_back(s);
  }
  o.sets.push_back("batch=" + std::to_string(o.microBatch));

  // Output.
  if (emit != "plan" && emit != "plan-text" && emit != "mlir" && !scheduleOnly)
    fail("--emit " + emit +
         ": expected plan, plan-text, mlir, schedule-text or schedule-svg");
  if (emit == "plan" && outputFile.empty())
    fail("--emit plan writes a binary file: give -o PLAN (or --emit "
         "plan-text)");
  return o;
}

//===----------------------------------------------------------------------===//
// Step 2: the model's hyper-parameters
//===----------------------------------------------------------------------===//

void checkSets(ModuleOp module, const CompileOptions &o) {
  auto hparams = module->getAttrOfType<DictionaryAttr>(mega::kHParamsAttr);
  if (!hparams)
    fail(inputFile + ": the model has no `" + mega::kHParamsAttr +
         "` module attribute");
  std::string known;
  for (NamedAttribute a : hparams)
    known += (known.empty() ? "" : ", ") + a.getName().str();
  for (llvm::StringRef s : o.sets) {
    llvm::StringRef name = s.split('=').first;
    if (name != "batch" && !hparams.get(name))
      fail("--set " + s + ": the model has no hyper-parameter '" + name +
           "' (it has: " + known + ")");
  }
  // Sequence parallelism splits the activations [batch, seq, hidden] into
  // blocks of rows along their first dim that is not 1: the micro-batch's
  // sequences, or with one sequence its positions.
  if (sequenceParallel) {
    int64_t seq = 0;
    if (auto v = dyn_cast_or_null<IntegerAttr>(hparams.get("seq")))
      seq = v.getInt();
    for (llvm::StringRef s : o.sets)
      if (s.split('=').first == "seq")
        s.split('=').second.getAsInteger(10, seq);
    if (o.microBatch > 1 && o.microBatch % o.tp != 0)
      fail("--sequence-parallel needs --tp " + llvm::Twine(o.tp) +
           " to divide --micro-batch-size " + llvm::Twine(o.microBatch) +
           " (the sequences it splits)");
    if (o.microBatch == 1 && seq % o.tp != 0)
      fail("--sequence-parallel needs --tp " + llvm::Twine(o.tp) +
           " to divide seq=" + llvm::Twine(seq) +
           " (the positions it splits at --micro-batch-size 1)");
  }
}

//===----------------------------------------------------------------------===//
// Step 3: the pipeline (docs/compiler.md, "Pipeline")
//===----------------------------------------------------------------------===//

void buildPipeline(PassManager &pm, const CompileOptions &o) {
  // Programs and sizes.
  pm.addPass(mega::createMegaMakePrograms());
  mega::MegaSpecializeOptions specialize;
  specialize.set = o.sets;
  pm.addPass(mega::createMegaSpecialize(specialize));
  pm.addPass(mega::createMegaInferShapes());
  // Model level -> tensor level.
  pm.addPass(mega::createMegaUnroll());
  // Attention as one fused kernel (no [S, S] scores in memory).
  mega::MegaDecomposeOptions decompose;
  decompose.fusedAttention = true;
  pm.addPass(mega::createMegaDecompose(decompose));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Tensor parallelism: the per-rank program of mesh axis 0 (Megatron's
  // layout), before autodiff so that the collectives get their adjoints.
  if (o.tp > 1) {
    mega::MegaTensorParallelOptions tensorParallel;
    tensorParallel.size = o.tp;
    tensorParallel.sequenceParallel = sequenceParallel;
    pm.addPass(mega::createMegaTensorParallel(tensorParallel));
  }
  // Pipeline: every forward op gets its stage (balanced by FLOPs, then by
  // estimated peak memory under the schedule) before autodiff, which gives
  // each adjoint its op's stage.
  if (o.pp > 1) {
    mega::MegaPipelineStagesOptions stages;
    stages.stages = o.pp * o.vpp;
    stages.ranks = o.pp;
    stages.schedule = mega::pipeline::scheduleName(o.schedule);
    stages.microbatches = o.microbatches;
    stages.optimizer = optimizer;
    stages.momentShards = distributedOptimizer ? o.dp : 1;
    stages.memoryLimitMb = o.pipelineMemoryLimitMb;
    pm.addPass(mega::createMegaPipelineStages(stages));
  }
  // Training level: backward pass, optimizer step.
  mega::MegaAutodiffOptions autodiff;
  // The loss seed is 1/(microbatches*dp): the data-parallel all-reduce
  // (a sum) then gives the mean over the global batch.
  autodiff.microbatches = o.microbatches * o.dp;
  pm.addPass(mega::createMegaAutodiff(autodiff));
  mega::MegaOptimizerOptions opt;
  opt.optimizer = optimizer;
  opt.beta1 = o.beta1;
  opt.beta2 = o.beta2;
  opt.eps = o.eps;
  opt.weightDecay = o.weightDecay;
  opt.clipGrad = o.clipGrad;
  pm.addPass(mega::createMegaOptimizer(opt));
  mega::MegaDataParallelOptions dataParallel;
  dataParallel.size = o.dp;
  dataParallel.distributedOptimizer = distributedOptimizer;
  dataParallel.overlap = overlapGradReduce;
  dataParallel.bucketMb = double(o.ddpBucketSize) * 4.0 / (1024.0 * 1024.0);
  // The overlapped buckets of a pipeline are each rank's: they are made
  // after the split, from its optimizer and its stages' backward programs.
  // The distributed optimizer's reduce-scatters are made before it (the
  // split shares them and the norm's block attributes out to the ranks).
  bool bucketsPerRank = o.pp > 1 && dataParallel.overlap;
  if (!bucketsPerRank) {
    pm.addPass(mega::createMegaDataParallel(dataParallel));
  } else if (distributedOptimizer) {
    mega::MegaDataParallelOptions distribute = dataParallel;
    distribute.overlap = false;
    pm.addPass(mega::createMegaDataParallel(distribute));
  }
  // Pipeline: forward/backward programs per stage, optimizer per rank.
  if (o.pp > 1) {
    mega::MegaPipelineSplitOptions split;
    split.ranks = o.pp;
    pm.addPass(mega::createMegaPipelineSplit(split));
  }
  if (bucketsPerRank)
    pm.addPass(mega::createMegaDataParallel(dataParallel));
  // Sequence parallelism: the replicated parameters' gradient terms summed
  // over the tensor ranks once a step, together.
  if (o.tp > 1 && tensorGradBucket)
    pm.addPass(mega::createMegaTensorGradBucket());
  if (o.pp > 1 && portSources)
    pm.addPass(mega::createMegaPortSources());
  // Mixed precision: bf16 operands of the tensor-core ops, fp32 elsewhere.
  mega::MegaMixedPrecisionOptions mixed;
  mixed.precision = precision;
  mixed.reduceBf16 = bf16Reductions;
  mixed.roundProducts = bf16Products;
  mixed.roundResidual = precision == "bf16" && bf16Residual && !fp32Residual;
  mixed.roundResidualGrad =
      mixed.roundResidual && bf16ResidualGrad;
  pm.addPass(mega::createMegaMixedPrecision(mixed));
  if (precision == "bf16" && o.pp > 1 && narrowPorts)
    pm.addPass(mega::createMegaNarrowPorts());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Kernel level: fusion, plan instructions, memory.
  pm.addPass(mega::createMegaFuseElementwise());
  pm.addPass(mega::createMegaLowerToKernels());
  // One launch for all AdamW updates, the gradient clearing folded in.
  pm.addPass(mega::createMegaFuseOptimizer());
  // Bias, residual and GELU of each Linear in the MatMul's epilogue.
  if (fuseEpilogues)
    pm.addPass(mega::createMegaFuseEpilogues());
  // Attention reads and writes the projections' layouts: no head moves.
  if (foldAttentionLayout)
    pm.addPass(mega::createMegaFoldAttentionLayout());
  // Producers round on store instead of a separate Cast where they can.
  if (foldCasts)
    pm.addPass(mega::createMegaFoldCasts());
  // A Linear storing its bias sum in bf16 reads the bias in bf16.
  if (bf16Bias && precision == "bf16")
    pm.addPass(mega::createMegaBf16Bias());
  // The loss and its gradient in one pass over the logits.
  if (fuseLoss)
    pm.addPass(mega::createMegaFuseLoss());
  // The largest logits a row block at a time.
  if (fuseLoss && maxLogitsMib > 0) {
    mega::MegaChunkLossOptions chunk;
    chunk.maxLogitsMib = maxLogitsMib;
    pm.addPass(mega::createMegaChunkLoss(chunk));
  }
  // Each norm's gradient adds into the residual gradient and the weight
  // and bias gradients itself.
  if (fuseNormGrad)
    pm.addPass(mega::createMegaFuseNormGrad());
  // The rest of the bias gradients summed by their weight gradient's
  // MatMul as it reads the output gradient.
  if (fuseBiasGrad)
    pm.addPass(mega::createMegaFuseBiasGrad());
  // The weights' bf16 copies kept by the optimizer, not cast at each use.
  if (bf16WeightCopies && precision == "bf16")
    pm.addPass(mega::createMegaBf16WeightCopies());
  // One train run per step: each gradient's first write overwrites it.
  if (overwriteGrads && o.pp == 1) {
    mega::MegaOverwriteGradsOptions overwrite;
    overwrite.microbatches = o.microbatches;
    pm.addPass(mega::createMegaOverwriteGrads(overwrite));
  }
  // The bias gradients that remain in a weight gradient's epilogue: one
  // more row of the product instead, from a column of ones.
  const bool onesColumn = onesColumnBiasGrad == cl::BOU_UNSET
                              ? target == "cuda" && precision == "bf16"
                              : onesColumnBiasGrad == cl::BOU_TRUE;
  if (onesColumn)
    pm.addPass(mega::createMegaOnesColumn());
  mega::MegaAssignBuffersOptions assign;
  assign.wgradSlack = wgradSlack;
  pm.addPass(mega::createMegaAssignBuffers(assign));
}

//===----------------------------------------------------------------------===//
// Step 4: output
//===----------------------------------------------------------------------===//

std::map<std::string, std::string> planConfig(const CompileOptions &o,
                                              llvm::StringRef model) {
  return {{"model", model.str()},
          {"micro_batch_size", std::to_string(o.microBatch)},
          {"global_batch_size", std::to_string(o.globalBatch)},
          {"num_microbatches", std::to_string(o.microbatches)},
          {"optimizer", optimizer},
          {"lr", num(o.lr)},
          {"weight_decay", num(o.weightDecay)},
          {"adam_beta1", num(o.beta1)},
          {"adam_beta2", num(o.beta2)},
          {"adam_eps", num(o.eps)},
          {"clip_grad", num(o.clipGrad)},
          {"precision", precision},
          {"tp", std::to_string(o.tp)},
          {"pp", std::to_string(o.pp)},
          {"dp", std::to_string(o.dp)},
          {"vpp", std::to_string(o.vpp)},
          {"schedule", mega::pipeline::scheduleName(o.schedule)}};
}

std::unique_ptr<llvm::ToolOutputFile> openOutput() {
  std::string error;
  auto out = openOutputFile(
      outputFile.empty() ? std::string("-") : outputFile.getValue(), &error);
  if (!out)
    fail(error);
  return out;
}

/// --emit schedule-text|schedule-svg: the pipeline schedule of `o`, after
/// checking that every rank gets at least one of the model's `layers` (when
/// known: from the model or --set).
int emitSchedule(const CompileOptions &o, std::optional<int64_t> layers) {
  if (layers && o.pp > *layers)
    fail("--pp " + llvm::Twine(o.pp) +
         " is more than layers=" + llvm::Twine(*layers));
  mega::pipeline::ScheduleConfig config{o.schedule, o.pp, o.vpp,
                                        o.microbatches};
  mega::pipeline::Timeline timeline =
      mega::pipeline::simulate(config, mega::pipeline::buildSchedule(config));
  if (!timeline.deadlock.empty())
    fail("internal error: " + timeline.deadlock);
  auto out = openOutput();
  out->os() << (emit == "schedule-svg"
                    ? mega::pipeline::scheduleSvg(config, timeline)
                    : mega::pipeline::scheduleText(config, timeline));
  out->keep();
  return 0;
}

/// `layers`: --set layers=N, else the model's default (when a model is given).
std::optional<int64_t> modelLayers(ModuleOp module) {
  std::optional<int64_t> layers;
  if (module)
    if (auto hparams =
            module->getAttrOfType<DictionaryAttr>(mega::kHParamsAttr))
      if (auto v = dyn_cast_or_null<IntegerAttr>(hparams.get("layers")))
        layers = v.getInt();
  for (llvm::StringRef s : sets) {
    auto [name, value] = s.split('=');
    int64_t v;
    if (name == "layers" && !value.getAsInteger(10, v))
      layers = v;
  }
  return layers;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // Pass names for --mlir-print-ir-after=<pass> and friends.
  mega::registerMegaPasses();
  registerTransformsPasses();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  // --help lists megac's flags and MLIR's, not every LLVM backend option
  // linked in (they still parse).
  for (auto &[name, option] : cl::getRegisteredOptions()) {
    bool ours = llvm::is_contained(option->Categories, &megacCat);
    llvm::StringRef n = name;
    if (!ours && !n.starts_with("mlir-") && n != "pass-pipeline" &&
        n != "help" && n != "version")
      option->setHiddenFlag(cl::Hidden);
  }
  // Flag errors become one `megac: error:` line too.
  std::string cliErrors;
  llvm::raw_string_ostream cliErrStream(cliErrors);
  if (!cl::ParseCommandLineOptions(argc, argv,
                                   "megac: compile a mega model into a plan\n",
                                   &cliErrStream)) {
    llvm::StringRef first = llvm::StringRef(cliErrors).split('\n').first;
    first.consume_front("megac: ");
    first = first.trim();
    if (first.empty())
      first = "invalid command line (see megac --help)";
    fail(first);
  }
  CompileOptions options = checkFlags();
  bool scheduleOnly = emit == "schedule-text" || emit == "schedule-svg";
  if (scheduleOnly && inputFile.empty())
    return emitSchedule(options, modelLayers(nullptr));

  DialectRegistry registry;
  registry.insert<mega::MegaDialect, func::FuncDialect>();
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  // A problem found in the model is one line, `file:line:col: error: ...`
  // (a parse error, or a pass's refusal at the op it concerns): no source
  // excerpt, and no module printed after it to bury that line.
  context.printOpOnDiagnostic(false);
  llvm::SourceMgr sourceMgr;
  // Only the first error: the passes run on @train, @eval and @predict in
  // parallel, and a problem in the model shows in each of them.
  bool reported = false;
  ScopedDiagnosticHandler diagnostics(&context, [&reported](Diagnostic &d) {
    if (d.getSeverity() != DiagnosticSeverity::Error &&
        d.getSeverity() != DiagnosticSeverity::Warning)
      return success(); // notes and remarks: the error line says it
    if (d.getSeverity() == DiagnosticSeverity::Error) {
      if (reported)
        return success();
      reported = true;
    }
    std::string where = "megac";
    if (auto file = d.getLocation()->findInstanceOf<FileLineColLoc>())
      where = (file.getFilename().str() + ":" +
               std::to_string(file.getLine()) + ":" +
               std::to_string(file.getColumn()));
    llvm::errs() << where
                 << (d.getSeverity() == DiagnosticSeverity::Error ? ": error: "
                                                                  : ": warning: ")
                 << d.str() << "\n";
    return success();
  });

  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> input = openInputFile(inputFile, &error);
  if (!input)
    fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;
  checkSets(*module, options);
  if (scheduleOnly)
    return emitSchedule(options, modelLayers(*module));
  if (std::optional<int64_t> layers = modelLayers(*module);
      layers && options.pp * options.vpp > *layers)
    fail(options.vpp > 1
             ? "--pp " + llvm::Twine(options.pp) + " x --vpp " +
                   llvm::Twine(options.vpp) + " = " +
                   llvm::Twine(options.pp * options.vpp) +
                   " pipeline stages are more than layers=" +
                   llvm::Twine(*layers)
             : "--pp " + llvm::Twine(options.pp) +
                   " is more than layers=" + llvm::Twine(*layers));
  std::string modelName = "model";
  for (auto f : module->getOps<func::FuncOp>()) {
    modelName = f.getSymName().str();
    break;
  }

  PassManager pm(&context);
  if (failed(applyPassManagerCLOptions(pm)))
    return 1;
  DefaultTimingManager timing;
  applyDefaultTimingManagerCLOptions(timing);
  TimingScope timingScope = timing.getRootScope();
  pm.enableTiming(timingScope);
  buildPipeline(pm, options);
  if (failed(pm.run(*module)))
    return 1;

  if (emit == "mlir") {
    auto out = openOutput();
    module->print(out->os());
    out->os() << "\n";
    out->keep();
    return 0;
  }
  mega::PlanEmitterOptions emitOptions;
  emitOptions.config = planConfig(options, modelName);
  emitOptions.optimizer = optimizer;
  emitOptions.target = target;
  FailureOr<mega::plan::Plan> plan = mega::emitPlan(*module, emitOptions);
  if (failed(plan))
    return 1;
  if (options.pp > 1) {
    plan->schedule = mega::pipeline::planSteps(
        {options.schedule, options.pp, options.vpp, options.microbatches});
    // Which layers each virtual stage holds (mega-pipeline-stages' cut).
    std::string cut;
    if (auto layers =
            (*module)->getAttrOfType<ArrayAttr>("mega.pipeline_layers"))
      for (auto [s, a] : llvm::enumerate(layers))
        cut += (s ? " | " : "") + std::to_string(s) + ": " +
               cast<StringAttr>(a).str();
    plan->config["pipeline_layers"] = cut;
    // The estimated peak memory of each pipeline rank for that cut.
    std::string memory;
    if (auto peaks =
            (*module)->getAttrOfType<ArrayAttr>("mega.pipeline_memory"))
      for (auto [r, a] : llvm::enumerate(peaks)) {
        // MiB, or bytes below 0.1 MiB (test-sized models).
        int64_t bytes = cast<IntegerAttr>(a).getInt();
        char text[48];
        if (bytes >= 1024 * 1024 / 10)
          std::snprintf(text, sizeof text, "%.1f MiB",
                        double(bytes) / (1024.0 * 1024));
        else
          std::snprintf(text, sizeof text, "%lld bytes", (long long)bytes);
        memory += (r ? " | " : "") + std::to_string(r) + ": " + text;
      }
    plan->config["pipeline_memory"] = memory;
  }
  if (std::string problem = mega::validatePlan(*plan); !problem.empty())
    fail("internal error: the emitted plan is invalid: " + problem);
  if (emit == "plan-text") {
    std::ostringstream text;
    mega::plan::printPlan(*plan, text);
    auto out = openOutput();
    out->os() << text.str();
    out->keep();
    return 0;
  }
  if (std::string problem = mega::writePlan(*plan, outputFile);
      !problem.empty())
    fail(problem);
  return 0;
}

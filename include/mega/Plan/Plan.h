//===- Plan.h - The plan: the one door between megac and mega-run --------===//
//
// A plan is everything the runtime needs to train a model: the persistent
// tensors (parameters, their gradients, optimizer state), and a handful of
// programs (train micro-step, optimizer step, eval, predict), each a straight
// list of kernel instructions over buffers whose places the compiler chose.
//
// This header and docs/plan-format.md are the only things the compiler and the
// runtime both include. It depends on the C++ standard library alone.
//
// Design choices (why):
//  * Straight-line instruction lists, no control flow: the compiler has
//    already unrolled layers and decided the schedule; the runtime interprets
//    nothing it could get wrong.
//  * Values are views (space, index, byte offset, shape): a reshape, a slice
//    of the fused q|k|v projection or a head view costs nothing at run time.
//  * Every instruction names its kernel by opcode; operand and attribute
//    meaning per opcode is fixed below and in docs/plan-format.md, so a
//    second backend (CUDA) implements the same list.
//  * Programs carry a target and a stage so that pipeline stages and several
//    backends fit in one file without a format change.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_PLAN_PLAN_H
#define MEGA_PLAN_PLAN_H

#include <cstdint>
#include <iosfwd>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace mega::plan {

/// First 8 bytes of every plan file.
inline constexpr char kMagic[8] = {'M', 'E', 'G', 'A', 'P', 'L', 'A', 'N'};
/// The only format version this code reads and writes.
/// Version 2 added tensor-parallel shards of persistents and the
/// vocabulary-parallel opcodes; version 3 the pipeline schedule; version 4
/// the partial gradients (Persistent::partialGroup); version 5 the bytes
/// a gradient's buffer holds past it (Persistent::tailBytes).
inline constexpr uint32_t kVersion = 5;

/// Thrown for every malformed, truncated or inconsistent plan.
struct PlanError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType : uint8_t { F32 = 0, I32 = 1, BF16 = 2 };
size_t dtypeSize(DType t);
const char *dtypeName(DType t);

/// What a persistent tensor is for. The runtime allocates and owns these.
enum class Role : uint8_t {
  Param = 0, ///< a trainable parameter, saved/loaded under `name`
  Grad = 1,  ///< gradient accumulator of `param`
  AdamM = 2, ///< AdamW first moment of `param`
  AdamV = 3, ///< AdamW second moment of `param`
  /// The bf16 copy of `param` that the bf16 programs read instead of a Cast
  /// of it (Megatron's bf16 model params beside the fp32 main params):
  /// BF16, the parameter's shape and shard fields. The runtime computes it
  /// (Cast's rounding) after initialising or loading the parameters; the
  /// AdamWMulti that updates the parameter rewrites it. Never saved, loaded
  /// or dumped.
  ParamCopy = 4,
};
const char *roleName(Role r);

/// How a parameter is initialised when no checkpoint is loaded. Other roles
/// always start at zero.
enum class Init : uint8_t { Zeros = 0, Ones = 1, Normal = 2 };

struct Persistent {
  std::string name; ///< canonical name ("h.0.attn.c_attn.weight")
  Role role = Role::Param;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  Init init = Init::Zeros;
  float initStd = 0.0f;    ///< for Init::Normal (mean 0)
  bool weightDecay = false; ///< parameters only: decoupled weight decay applies
  int32_t param = -1;       ///< for Grad/AdamM/AdamV/ParamCopy: its parameter
  /// Tensor-parallel shard (version 2). shardDim < 0: every rank holds the
  /// whole tensor. Otherwise the full tensor has `fullShape`; its dim
  /// shardDim (size F) is seen as shardGroups consecutive chunks of
  /// F/shardGroups (3 for the fused q|k|v projection), each chunk is cut into
  /// groupSize equal parts along that dim, and rank r of group `shardGroup`
  /// holds part r of every chunk, chunks in order: `shape` is that local
  /// shape. Checkpoints and --dump-grads always hold the full tensor.
  int32_t shardDim = -1;
  int32_t shardGroups = 1;
  int32_t shardGroup = 0; ///< ParallelGroup the shard is taken over
  std::vector<int64_t> fullShape;
  /// A gradient kept as partial sums (version 4): -1, or the ParallelGroup
  /// whose ranks each hold a term of it between the training programs and
  /// the optimizer, whose program sums them (mega-tensor-grad-bucket: the
  /// replicated parameters of sequence-parallel work). --dump-grads sums
  /// them first. Grad only.
  int32_t partialGroup = -1;
  /// Bytes the tensor's buffer holds past its own (version 5; Grad only,
  /// a multiple of 4): zeros at the start, and instructions may use them
  /// through views of the tensor that run past its end. mega-ones-column
  /// has a weight gradient's product write its bias row and padding rows
  /// there instead of a scratch buffer it would then copy from. Never
  /// saved, loaded or dumped.
  int64_t tailBytes = 0;
  /// Elements and bytes of this rank's tensor (`shape`).
  int64_t numel() const;
  int64_t bytes() const { return numel() * int64_t(dtypeSize(dtype)); }
};

/// A named runtime-provided input or runtime-read output of a program.
struct Port {
  std::string name; ///< "tokens", "targets", "lr", "step", "loss", ...
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t numel() const;
  int64_t bytes() const { return numel() * int64_t(dtypeSize(dtype)); }
};

/// Where a value's bytes live.
enum class Space : uint8_t {
  Arena = 0,      ///< program scratch arena; `offset` in bytes
  Persistent = 1, ///< persistent tensor `index`; `offset` in bytes within it
  Input = 2,      ///< input port `index`
  Output = 3,     ///< output port `index`
};

/// A typed, contiguous view of bytes somewhere.
struct Value {
  Space space = Space::Arena;
  int32_t index = 0;
  int64_t offset = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t numel() const;
  int64_t bytes() const { return numel() * int64_t(dtypeSize(dtype)); }
};

/// Kernel opcodes. Operands are listed inputs first, then outputs; `i` are
/// the integer attributes and `f` the float attributes, in the order given.
/// All tensors are row-major and contiguous unless strides say otherwise.
enum class Op : uint16_t {
  /// out: f[0] written to every element.
  Fill = 0,
  /// in -> out, same element count.
  Copy = 1,
  /// A, B -> C.  C[b] = f[0] * op(A[b]) @ op(B[b]) + f[1] * C[b]
  /// A and B are both F32 or both BF16 (tensor cores: bf16 products, fp32
  /// accumulation); C is F32.
  /// i = {batch, M, N, K, transA, transB, lda, ldb, ldc,
  ///      strideA, strideB, strideC} (leading dims and batch strides in
  /// elements; op(X) = X^T when trans is 1). f = {alpha, beta}.
  /// Optional i[12] = epilogue (absent or 0: none, as above), computed per
  /// element of the f32 product t = (A B)[m, n] in this order, in f32:
  ///   1 bias:          A, B, bias -> D.    D = t + bias[n]
  ///   2 bias+residual: A, B, bias, R -> D. D = (t + bias[n]) + R[m, n]
  ///   3 bias+GELU:     A, B, bias -> D, aux. aux = t + bias[n] (F32, or
  ///                    BF16 rounded on store), D = gelu(t + bias[n]) (tanh
  ///                    form, EwOp::Gelu, of the unrounded value)
  ///   4 GELU gradient: A, B, aux -> D.     D = gelu'(aux[m, n]) * t
  ///                    (EwOp::GeluGrad(aux, t)); aux F32 or BF16 (widened)
  ///   5 bias gradient: A, B -> C, g, with i[13] = accumulate: C as without
  ///                    an epilogue (any alpha, beta; C F32), then g[n]
  ///                    (+)= the sum over k of B[k, n], exactly ReduceSum
  ///                    {K, N, accumulate} of B (batch 1, B not transposed,
  ///                    ldb = N; g F32 [N], disjoint from A, B and C).
  ///                    The rules below are for epilogues 1-4.
  /// With an epilogue: batch 1, alpha 1, beta 0, ldc = N; bias F32 [N];
  /// R F32 and aux F32 or BF16 of M*N elements; D F32 or BF16 (rounded on
  /// store) of M*N elements, disjoint from A, B, bias and aux; D may be R
  /// itself (the same bytes) but not overlap it otherwise.
  MatMul = 2,
  /// Fused elementwise program over `n` elements; see EwOp.
  /// operands: inputs..., outputs...;
  /// i = {n, numInputs, numOutputs, period_0..period_{numInputs-1},
  ///      then the code as groups of 4: (EwOp, dst, a, b)}.
  /// Input k is read at index (e % period_k): period n = full tensor,
  /// period = last dim for a broadcast bias row, 1 for a scalar.
  /// f = constants table (EwOp::Const reads f[a]).
  Elementwise = 3,
  /// in [outer, inner] -> out [inner]: out = sum over outer (+ out if
  /// i[2] accumulate). i = {outer, inner, accumulate}.
  ReduceSum = 4,
  /// x [rows, cols], w [cols], b [cols] -> y [rows, cols], mean [rows],
  /// rstd [rows]. i = {rows, cols}; f = {eps}. y may be BF16 (rounded on
  /// store; then not in place); everything else F32.
  LayerNorm = 5,
  /// dy, x, w, mean, rstd -> dx, dw, db (, dx_bf16).  i = {rows, cols,
  /// accumulate} or {rows, cols, accumulate, accumulate_wb}: accumulate adds
  /// into dx (one f32 add per element); accumulate_wb adds the sums over
  /// the rows, each rounded to f32 first, into dw and db (absent or 0: they
  /// are overwritten). The optional 4th output is the final dx rounded to
  /// BF16 as Cast rounds (mega-fuse-norm-grad). An optional 5th output (with
  /// the 4th only, and i = {rows, cols, accumulate, accumulate_wb,
  /// dsum_accumulate}) is the F32 column sums of the 4th, exactly ReduceSum
  /// {rows, cols, dsum_accumulate} on it, bit for bit.
  LayerNormGrad = 6,
  /// x [rows, cols] -> y = softmax(f[0] * x) along cols. i = {rows, cols,
  /// causal, seq}: causal masks column c of row r when c > r % seq.
  Softmax = 7,
  /// y, dy -> dx = f[0] * y * (dy - sum(dy*y)).  i = {rows, cols}.
  SoftmaxGrad = 8,
  /// logits [rows, V], targets i32 [rows] -> loss f32 [] (mean over rows),
  /// lse [rows]. i = {rows, V}.
  CrossEntropy = 9,
  /// logits, targets, lse, dloss [] -> dlogits [rows, V]
  ///   = (softmax(logits) - onehot(target)) * dloss / rows.  i = {rows, V}.
  CrossEntropyGrad = 10,
  /// table [V, H], ids i32 [rows] -> out [rows, H] (+ out if accumulate).
  /// i = {rows, V, H, accumulate}.
  Embedding = 11,
  /// dout [rows, H], ids i32 [rows] -> dtable [V, H]; zeroed first unless
  /// accumulate.  i = {rows, V, H, accumulate}.
  EmbeddingGrad = 12,
  /// in -> out with dims permuted. i = {rank, d_0..d_{rank-1},
  /// p_0..p_{rank-1}}: out dim j is in dim p_j. out has in's dtype, except
  /// F32 in -> BF16 out (rounded on store).
  Transpose = 13,
  /// grads... -> norm [] , coef []. Global L2 norm of all inputs;
  /// coef = min(1, f[0] / (norm + 1e-6)) (f[0] <= 0: no clipping, coef 1);
  /// coef = NaN when norm is not finite (the optimizer then skips).
  /// i = {} : every input is whole on every rank (counted as is).
  /// i = {group, s_0..s_{n-1}} (tensor parallelism): s_k = 1 when input k is
  /// this rank's shard of a gradient split over `group`, 0 when it is
  /// replicated there. The backend sums the squares of the s_k = 1 inputs,
  /// all-reduces that sum over `group` through the run's communicator, and
  /// adds the squares of the s_k = 0 inputs once (not multiplied by the group
  /// size): norm = sqrt(sum_group(shards) + replicated), the same on every
  /// rank, equal to the unsharded model's. Put the instruction after any
  /// data-parallel AllReduce of the grads; no AllReduce of the norm follows.
  GradNorm = 14,
  /// param, grad, m, v, lr [], step [], coef [] -> (in place on param, m, v)
  /// torch.optim.AdamW on grad*coef; does nothing when coef is NaN.
  /// f = {beta1, beta2, eps, weightDecay}.
  AdamW = 15,
  /// param, grad, lr [], coef [] -> (in place) p -= lr*(g*coef + wd*p);
  /// does nothing when coef is NaN.  f = {weightDecay}.
  Sgd = 16,
  // Collectives (docs/plan-format.md §4.1). Group i[0]: 0 tensor, 1 data,
  // 2 pipeline (see ParallelGroup). Operands are f32; a backend runs them
  // through the program run's communicator, never through global state.
  /// in -> out (same element count; may be the same bytes): the reduction
  /// over the group's ranks of `in`. i = {group, op: 0 sum / 1 max}.
  AllReduce = 17,
  /// in [n...] -> out [size*n...]: the concatenation along dim 0 of every
  /// rank's `in`, in group-rank order. i = {group}.
  AllGather = 18,
  /// in [size*n...] -> out [n...]: the sum over the group of `in`, of which
  /// group rank r keeps part r (elements [r*n, (r+1)*n)). i = {group}.
  ReduceScatter = 19,
  /// in -> (): sends `in` to the group rank (rank + i[1]) mod size.
  /// i = {group, peer offset, tag}.
  Send = 20,
  /// () -> out: receives `out` from the group rank (rank + i[1]) mod size.
  /// i = {group, peer offset, tag}.
  Recv = 21,
  // Vocabulary-parallel embedding and loss (Megatron's VocabParallelEmbedding
  // and vocab_parallel_cross_entropy). Each rank of group i[group] holds the
  // vocabulary rows [start, start + Vl) with start = rank-in-group * Vl; the
  // kernels take the rank from the program run's communicator.
  /// table [Vl, H], ids i32 [rows] -> out [rows, H]: the row of ids in this
  /// rank's range, 0 elsewhere (an AllReduce sum follows).
  /// i = {rows, Vl, H, group}. An id outside [0, Vl*groupSize) is an error.
  VocabEmbedding = 22,
  /// dout [rows, H], ids i32 [rows] -> dtable [Vl, H]: scatter-add of the
  /// rows whose id is in this rank's range; zeroed first unless accumulate.
  /// i = {rows, Vl, H, accumulate, group}.
  VocabEmbeddingGrad = 23,
  /// x [rows, cols] -> out [rows]: the maximum of each row. i = {rows, cols}.
  RowMax = 24,
  /// logits [rows, Vl], targets i32 [rows], max [rows] -> sumexp [rows],
  /// targetLogit [rows]: sumexp = sum_v exp(logits - max); targetLogit = the
  /// logit of the target when it is in this rank's range, else 0.
  /// i = {rows, Vl, group}.
  VocabCrossEntropyStats = 25,
  /// max [rows], sumexp [rows], targetLogit [rows] (all three reduced over
  /// the group) -> loss [], lse [rows]: lse = max + log(sumexp),
  /// loss = mean(lse - targetLogit). i = {rows}.
  VocabCrossEntropy = 26,
  /// logits [rows, Vl], targets, lse [rows], dloss [] -> dlogits [rows, Vl]
  ///   = (exp(logits - lse) - [target == start + v]) * dloss / rows.
  /// i = {rows, Vl, group}.
  VocabCrossEntropyGrad = 27,
  // Mixed precision and fused attention (same calling convention as the
  // base kernels).
  /// in -> out: element type conversion, F32 <-> BF16 (round to nearest
  /// even; BF16 -> F32 is exact; the same dtype copies). i = {n}.
  Cast = 28,
  /// q, k, v [BH, S, hd] (all F32 or all BF16) -> o F32 or BF16 (rounded
  /// on store) [BH, S, hd], lse F32 [BH, S]: per (batch*head) slice,
  /// o = softmax(f[0] q k^T) v, causal masking key j > query i; lse =
  /// logsumexp of each scaled score row. The [S, S] scores are never
  /// stored. i = {BH, S, hd, causal}; f = {scale}.
  Attention = 29,
  /// q, k, v, o, lse, dout -> dq, dk, dv (F32 [BH, S, hd]): the gradient of
  /// Attention, probabilities recomputed from lse. q, k, v, o, dout all F32
  /// or all BF16; lse F32. i and f as Attention.
  AttentionGrad = 30,
  // Overlapped data-parallel gradient reduction (a split AllReduce sum).
  /// g_1..g_n -> (): starts the sum over the group of the concatenation of
  /// the inputs (a bucket of gradient accumulators), which must stay
  /// untouched until the AllReduceWait of the same inputs. The runtime runs
  /// it on a step's last micro-batch only, and may skip it (the wait then
  /// reduces). i = {group, op: 0 sum}.
  AllReduceStart = 31,
  /// g_1..g_n -> g_1..g_n (the same bytes): the sum over the group of the
  /// inputs, written in place: completes the AllReduceStart whose first
  /// input is g_1, or reduces now when none was started. i = {group, op}.
  AllReduceWait = 32,
  // Fused optimizer (mega-fuse-optimizer).
  /// lr [], step [], coef [], then per tensor k = 1..n: param_k, grad_k,
  /// m_k, v_k -> (in place): exactly the n AdamW instructions
  /// (param_k, grad_k, m_k, v_k, lr, step, coef) {beta1, beta2, eps, wd_k}
  /// in order, in one launch; with zero_grads = 1 every grad_k is then set
  /// to 0 (also when coef is NaN and the updates are skipped, as the Fill
  /// of mega.zero_grad it replaces). i = {n, zero_grads};
  /// f = {beta1, beta2, eps, wd_1..wd_n}.
  /// With i = {n, zero_grads, c_1..c_n} (c_k 0 or 1, mega-bf16-weight-copies)
  /// the outputs are the BF16 copies of the tensors with c_k = 1, in order:
  /// each is written, in the same pass, with param_k after its update
  /// rounded as Cast rounds (so it is Cast(param_k) afterwards, also when
  /// coef is NaN and param_k is unchanged). Without them, no outputs.
  AdamWMulti = 33,
  // Fused loss (mega-fuse-loss).
  /// logits [rows, V] (F32 or BF16), targets I32 [rows], dloss F32 [] ->
  /// loss F32 [], lse F32 [rows], dlogits [rows, V] (F32 or BF16): exactly
  /// CrossEntropy (logits, targets) -> loss, lse followed by
  /// CrossEntropyGrad (logits, targets, lse, dloss) -> dlogits, bit for bit,
  /// reading the logits from memory once per row; dlogits may be the
  /// logits' bytes when both have one dtype. i = {rows, V}.
  CrossEntropyWithGrad = 34,
  // Overlapped reduce-scatter of the distributed optimizer (a split
  // ReduceScatter per gradient).
  /// g_1..g_n -> (): starts, for each input g_k [size*n_k...] (a gradient
  /// accumulator), the sum over the group of which this rank keeps block r
  /// (as ReduceScatter). The inputs must stay untouched until the
  /// ReduceScatterWait of the same inputs; run on a step's last micro-batch
  /// only, and may be skipped (the wait then reduces). i = {group}.
  ReduceScatterStart = 35,
  /// g_1..g_n -> b_1..b_n: b_k [n_k...] = block r of the sum over the group
  /// of g_k: completes the ReduceScatterStart whose first input is g_1, or
  /// reduce-scatters now when none was started. After a started wait the
  /// inputs' bytes are unspecified (a runtime may reduce in place); an
  /// unstarted one leaves them alone. i = {group}.
  ReduceScatterWait = 36,
};
/// The opcodes by family, as X-macro lists, so that the plan library and
/// every backend's dispatch name the same set: the plain kernels (0-16), the
/// collectives (17-21, run through Backend::collective, and the buckets'
/// 31-32 and 35-36, through the engine's BucketReducer), the
/// vocabulary-parallel kernels (22-27, which need the rank in their group)
/// and the mixed-precision, fused-attention, fused-optimizer and fused-loss
/// kernels (28-30, 33 and 34, called like the plain ones).
#define MEGA_PLAN_BASE_KERNELS(X)                                              \
  X(Fill) X(Copy) X(MatMul) X(Elementwise) X(ReduceSum) X(LayerNorm)           \
  X(LayerNormGrad) X(Softmax) X(SoftmaxGrad) X(CrossEntropy)                   \
  X(CrossEntropyGrad) X(Embedding) X(EmbeddingGrad) X(Transpose) X(GradNorm)   \
  X(AdamW) X(Sgd)
#define MEGA_PLAN_COLLECTIVES(X)                                               \
  X(AllReduce)                                                                 \
  X(AllGather) X(ReduceScatter) X(Send) X(Recv) X(AllReduceStart)              \
      X(AllReduceWait) X(ReduceScatterStart) X(ReduceScatterWait)
#define MEGA_PLAN_VOCAB_KERNELS(X)                                             \
  X(VocabEmbedding) X(VocabEmbeddingGrad) X(RowMax) X(VocabCrossEntropyStats)  \
  X(VocabCrossEntropy) X(VocabCrossEntropyGrad)
#define MEGA_PLAN_FUSED_KERNELS(X)                                             \
  X(Cast) X(Attention) X(AttentionGrad) X(AdamWMulti) X(CrossEntropyWithGrad)
/// The split collectives of the gradient buckets (BucketReducer runs them).
inline bool isBucketOp(Op op) {
  return op == Op::AllReduceStart || op == Op::AllReduceWait ||
         op == Op::ReduceScatterStart || op == Op::ReduceScatterWait;
}
/// The highest opcode this build knows.
inline constexpr Op kLastOp = Op::ReduceScatterWait;
/// True for AllReduce, AllGather, ReduceScatter, Send, Recv and the
/// bucket starts and waits.
inline bool isCollective(Op op) {
  return (op >= Op::AllReduce && op <= Op::Recv) || isBucketOp(op);
}
/// Process groups a collective's i[0] names (Megatron's rank order: tensor
/// fastest, then data, then pipeline).
enum class ParallelGroup : int64_t { Tensor = 0, Data = 1, Pipeline = 2 };
/// Reductions of AllReduce's i[1].
enum class ReduceOp : int64_t { Sum = 0, Max = 1 };
const char *opName(Op op);

/// Elementwise micro-ops, executed per element over registers r0..r15.
/// (op, dst, a, b): dst = op(r[a], r[b]).
enum class EwOp : int64_t {
  Load = 0,      ///< r[dst] = input a
  Store = 1,     ///< output a = r[dst]
  Const = 2,     ///< r[dst] = f[a]
  Add = 3,
  Sub = 4,
  Mul = 5,
  Div = 6,
  Neg = 7,       ///< -r[a]
  Exp = 8,
  Log = 9,
  Tanh = 10,
  Sqrt = 11,
  Rsqrt = 12,
  Max = 13,
  Min = 14,
  Gelu = 15,     ///< tanh-approximate GELU of r[a]
  GeluGrad = 16, ///< d gelu(r[a]) / d r[a], times r[b]
  Square = 17,
};
inline constexpr int kEwRegisters = 16;

struct Instr {
  Op op = Op::Fill;
  std::vector<int32_t> inputs;  ///< value indices
  std::vector<int32_t> outputs; ///< value indices
  std::vector<int64_t> i;
  std::vector<float> f;
};

/// One straight-line program.
struct Program {
  std::string name;       ///< "train", "optimizer", "eval", "predict"
  std::string target = "cpu";
  int32_t stage = 0;      ///< pipeline stage (0 when not pipelined)
  int64_t arenaBytes = 0; ///< scratch the program needs, liveness-packed
  std::vector<Port> inputs;
  std::vector<Port> outputs;
  std::vector<Value> values;
  std::vector<Instr> instrs;
};

/// What one step of a pipeline rank's schedule does (version 3). Chunk c of
/// rank r is virtual stage s = c*pp + r; it runs the programs "forward" and
/// "backward" whose `stage` is s. Ports named alike move between programs:
/// an output of forward s that forward s+1 reads is sent there, one that
/// backward s reads is stashed for the micro-batch (as are forward s's
/// inputs that backward s reads); an output of backward s that backward s-1
/// reads is sent there. A run of consecutive Send/Recv steps is one exchange
/// (docs/plan-format.md §3.4).
enum class StepKind : uint8_t {
  RecvForward = 0,  ///< receive forward s's activations from rank - 1
  Forward = 1,      ///< run forward s for the micro-batch
  SendForward = 2,  ///< send its activations to rank + 1
  RecvBackward = 3, ///< receive backward s's gradients from rank + 1
  Backward = 4,     ///< run backward s (and drop the micro-batch's stash)
  SendBackward = 5, ///< send its input gradients to rank - 1
  Optimizer = 6,    ///< run "optimizer" of stage = rank
};
const char *stepKindName(StepKind k);

struct ScheduleStep {
  StepKind kind = StepKind::Forward;
  int32_t microbatch = 0; ///< 0 for Optimizer
  int32_t chunk = 0;      ///< 0 for Optimizer
};

struct Plan {
  /// Model hyper-parameters and compile options as text ("layers" -> "4",
  /// "micro_batch_size" -> "8", "optimizer" -> "adam", ...).
  std::map<std::string, std::string> config;
  std::vector<Persistent> persistents;
  std::vector<Program> programs;
  /// Pipeline (version 3): the steps of one optimizer step, per pipeline
  /// rank; empty when the plan is not pipelined (config pp = 1).
  std::vector<std::vector<ScheduleStep>> schedule;

  const Program *findProgram(const std::string &name) const;
  std::string get(const std::string &key, const std::string &dflt = "") const;
  int64_t getInt(const std::string &key, int64_t dflt) const;
  double getFloat(const std::string &key, double dflt) const;
};

/// Structural checks a runtime relies on before touching memory: indices in
/// range, every view inside its buffer, operand counts per opcode. Throws
/// PlanError naming the program, instruction and problem.
void validate(const Plan &plan);

/// Serialise (header + payload + checksum) / parse. readPlan validates.
std::vector<uint8_t> serialize(const Plan &plan);
Plan deserialize(const uint8_t *data, size_t size);
void writePlanFile(const Plan &plan, const std::string &path);
Plan readPlanFile(const std::string &path);

/// The readable form `megac --emit plan-text` prints.
void printPlan(const Plan &plan, std::ostream &os);

} // namespace mega::plan

#endif // MEGA_PLAN_PLAN_H

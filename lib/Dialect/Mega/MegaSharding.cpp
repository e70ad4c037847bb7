//===- MegaSharding.cpp - Sharding rules of the mega ops ------------------===//
//
// ShardingOpInterface (MegaInterfaces.td) for each op that can compute on
// split or partial operands, attached here as external models so that the
// rules of all ops read side by side. `mega-tensor-parallel` knows no op: it
// asks these rules. Shardings are in global (unsharded) terms; one split
// dimension per tensor (a 1-D tensor-parallel mesh) is all the rules accept.
//
// Notation: S(d) = split along dimension d over the mesh axes, P = partial
// sum, R = replicated. A rule answers the sharding every operand must have
// (the pass splits a mega.param to match, or all-reduces a P operand) and the
// results'.
//
//   gelu               S(d) -> S(d)                       (P: no)
//   scale              S(d) -> S(d), P -> P               (linear)
//   add, sub           S(d) + S(d-off)|R -> S(d), P + P -> P
//   mul                S(d) * S(d-off)|R -> S(d), P * R -> P
//   matmul a@b         a S(K), b S(K) -> P      (row-parallel weight)
//                      a R,    b S(N) -> S(N)   (column-parallel weight)
//                      a S(batch), b S(batch)|R -> S(batch)  (heads)
//                      a S(M), b R -> S(M);  P @ R -> P
//   reshape            S(d) -> S(first dim of d's group that the mesh divides),
//                      asking for `groups` blocks when a leading factor (the
//                      3 of q|k|v) comes first; P -> P
//   transpose          S(perm[j]) -> S(j), P -> P
//   split, concat      S(d) along another dim -> S(d), P -> P
//   softmax            S(d), d a batch dim (not a row of the causal mask)
//   flash_attention    q, k, v S(d), d = 0 (batch) or 1 (heads) -> o, lse S(d)
//   layer_norm         x S(d) (a leading dim, 1s before it: blocks of rows),
//                      w, b R -> y S(d), mean, rstd S(0): each row is
//                      normalised alone (sequence parallelism)
//   embedding          table S(0) -> P: mega.vocab_embedding (masked rows)
//   cross_entropy      logits S(last) -> R: statistics all-reduced (max, sum
//                      of exp, target logit), mega.vocab_cross_entropy
//
// Padding (a split dim zero-padded to a multiple of the devices: a
// vocabulary T does not divide) is accepted only where the rule says what
// it means: the embedding's table rows (never looked up), a column-parallel
// weight's output columns (padded output columns), the loss's logit columns
// (masked: `mega.vocab` on the vocabulary-parallel loss ops).
//
// `partition` builds an op's per-device form where it is not the op itself
// (embedding and cross_entropy above); the others keep their op.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"

using namespace mlir;
using namespace mega;

namespace {

using Shardings = ArrayRef<ShardingAttr>;

int64_t rankOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getRank();
}
ArrayRef<int64_t> shapeOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getShape();
}

ShardingAttr rep(Value v) {
  return ShardingAttr::getReplicated(v.getContext(), rankOf(v));
}
ShardingAttr splitAt(Value v, int64_t dim) {
  return ShardingAttr::getSplit(v.getContext(), rankOf(v), dim);
}
ShardingAttr partialOf(Value v) {
  return ShardingAttr::getPartial(v.getContext(), rankOf(v), "sum");
}
bool isSum(ShardingAttr s) {
  return s.isPartial() && s.getPartialKind().getValue() == "sum";
}

/// Devices of the mesh axes `s` splits its dimension over.
int64_t devicesOf(ShardingAttr s, const ShardingRule &rule) {
  int64_t n = 1;
  for (int64_t a : s.getDimAxes(s.getSplitDim()))
    n *= a < int64_t(rule.mesh.size()) ? rule.mesh[a] : 0;
  return n;
}

/// Rules for ops whose every result has the sharding `s` of operand 0 and
/// whose other operands must be replicated.
LogicalResult passThrough(Operation *op, Shardings in, ShardingRule &rule,
                          bool linear) {
  ShardingAttr s = in[0];
  if (s.getSplitDim() == -2 || (s.isPartial() && (!linear || !isSum(s))))
    return failure();
  rule.operands.push_back(s);
  for (Value v : op->getOperands().drop_front())
    rule.operands.push_back(rep(v));
  for (Value r : op->getResults())
    rule.results.push_back(s.isPartial()          ? partialOf(r)
                           : s.getSplitDim() >= 0 ? splitAt(r, s.getSplitDim())
                                                  : rep(r));
  return success();
}

LogicalResult geluRule(Operation *op, Shardings in, ShardingRule &rule) {
  return passThrough(op, in, rule, /*linear=*/false);
}
LogicalResult scaleRule(Operation *op, Shardings in, ShardingRule &rule) {
  return passThrough(op, in, rule, /*linear=*/true);
}

/// add, sub (`product` = false) and mul (true): rhs is a suffix of lhs.
LogicalResult binaryRule(Operation *op, Shardings in, ShardingRule &rule,
                         bool product) {
  Value lhs = op->getOperand(0), rhs = op->getOperand(1);
  ShardingAttr l = in[0], r = in[1];
  int64_t dl = l.getSplitDim(), dr = r.getSplitDim();
  int64_t off = rankOf(lhs) - rankOf(rhs);
  if (dl == -2 || dr == -2)
    return failure();
  // Partial: a sum of sums (add), or a sum times a common factor (mul).
  if (l.isPartial() || r.isPartial()) {
    bool ok = product ? (l.isPartial() != r.isPartial() && dl < 0 && dr < 0 &&
                         isSum(l.isPartial() ? l : r))
                      : (isSum(l) && isSum(r) && dl < 0 && dr < 0);
    if (!ok)
      return failure();
    rule.operands.assign({l, r});
    rule.results.push_back(partialOf(op->getResult(0)));
    return success();
  }
  if (dl >= 0 && dr >= 0 && dl != dr + off)
    return failure();
  int64_t d = dl >= 0 ? dl : dr >= 0 ? dr + off : -1;
  if (d < 0) {
    rule.operands.assign({l, r});
    rule.results.push_back(rep(op->getResult(0)));
    return success();
  }
  rule.operands.assign(
      {splitAt(lhs, d), d >= off ? splitAt(rhs, d - off) : rep(rhs)});
  rule.results.push_back(splitAt(op->getResult(0), d));
  return success();
}
LogicalResult addRule(Operation *op, Shardings in, ShardingRule &rule) {
  return binaryRule(op, in, rule, false);
}
LogicalResult mulRule(Operation *op, Shardings in, ShardingRule &rule) {
  return binaryRule(op, in, rule, true);
}

LogicalResult matmulRule(Operation *op, Shardings in, ShardingRule &rule) {
  auto mm = cast<MatMulOp>(op);
  Value a = mm.getA(), b = mm.getB(), y = mm.getResult();
  ShardingAttr sa = in[0], sb = in[1];
  int64_t ra = rankOf(a), rb = rankOf(b);
  int64_t aM = mm.getTransposeA() ? ra - 1 : ra - 2;
  int64_t aK = mm.getTransposeA() ? ra - 2 : ra - 1;
  int64_t bK = mm.getTransposeB() ? rb - 1 : rb - 2;
  int64_t bN = mm.getTransposeB() ? rb - 2 : rb - 1;
  bool batched = rb == ra && ra > 2;
  int64_t da = sa.getSplitDim(), db = sb.getSplitDim();
  if (da == -2 || db == -2)
    return failure();
  // A partial factor times a replicated one stays partial (linearity).
  if (sa.isPartial() || sb.isPartial()) {
    if (sa.isPartial() == sb.isPartial() || da >= 0 || db >= 0 ||
        !isSum(sa.isPartial() ? sa : sb))
      return failure();
    rule.operands.assign({sa, sb});
    rule.results.push_back(partialOf(y));
    return success();
  }
  // Contraction dimension split: each device holds a term of the product.
  if (da == aK || db == bK) {
    if ((da >= 0 && da != aK) || (db >= 0 && db != bK))
      return failure();
    rule.operands.assign({splitAt(a, aK), splitAt(b, bK)});
    rule.results.push_back(partialOf(y));
    return success();
  }
  // Batch dimension (heads): the same on both when b is batched.
  bool aBatch = da >= 0 && da < ra - 2, bBatch = db >= 0 && db < rb - 2;
  if (aBatch || bBatch) {
    int64_t d = aBatch ? da : db;
    if ((aBatch && bBatch && da != db) || (!batched && bBatch) ||
        (da >= 0 && !aBatch) || (db >= 0 && !bBatch && !batched))
      return failure();
    if (batched && db >= 0 && !bBatch)
      return failure();
    rule.operands.assign({splitAt(a, d), batched ? splitAt(b, d) : rep(b)});
    rule.results.push_back(splitAt(y, d));
    return success();
  }
  if (da == aM && db < 0) {
    rule.operands.assign({sa, sb});
    rule.results.push_back(splitAt(y, ra - 2));
    return success();
  }
  if (db == bN && da < 0) {
    rule.operands.assign({sa, sb});
    rule.results.push_back(splitAt(y, ra - 1));
    // A weight zero-padded along N gives zero-padded output columns.
    if (rule.valid.size() == 2 && !rule.valid[0]) {
      rule.paddingHandled = true;
      rule.resultValid.assign({rule.valid[1]});
    }
    return success();
  }
  if (da < 0 && db < 0) {
    rule.operands.assign({sa, sb});
    rule.results.push_back(rep(y));
    return success();
  }
  return failure();
}

/// The groups of dimensions that a reshape maps onto each other: maximal
/// runs of input and output dims with equal products.
struct DimGroup {
  int64_t inBegin, inEnd, outBegin, outEnd;
};
SmallVector<DimGroup> reshapeGroups(ArrayRef<int64_t> in,
                                    ArrayRef<int64_t> out) {
  SmallVector<DimGroup> groups;
  int64_t i = 0, j = 0, ni = in.size(), no = out.size();
  while (i < ni && j < no) {
    DimGroup g{i, i, j, j};
    int64_t pi = in[i++], pj = out[j++];
    while (pi != pj) {
      if (pi < pj && i < ni)
        pi *= in[i++];
      else if (pj < pi && j < no)
        pj *= out[j++];
      else
        return {};
    }
    g.inEnd = i;
    g.outEnd = j;
    groups.push_back(g);
  }
  if (i != ni || j != no) {
    // Trailing dims of size 1 join the last group.
    if (groups.empty())
      return {};
    for (; i < ni; ++i)
      if (in[i] != 1)
        return {};
    for (; j < no; ++j)
      if (out[j] != 1)
        return {};
    groups.back().inEnd = ni;
    groups.back().outEnd = no;
  }
  return groups;
}

LogicalResult reshapeRule(Operation *op, Shardings in, ShardingRule &rule) {
  Value x = op->getOperand(0), y = op->getResult(0);
  ShardingAttr s = in[0];
  int64_t d = s.getSplitDim();
  if (d == -2 || (s.isPartial() && (d >= 0 || !isSum(s))))
    return failure();
  rule.operands.push_back(s);
  if (s.isPartial() || d < 0) {
    rule.results.push_back(s.isPartial() ? partialOf(y) : rep(y));
    return success();
  }
  ArrayRef<int64_t> is = shapeOf(x), os = shapeOf(y);
  int64_t devices = devicesOf(s, rule);
  for (DimGroup g : reshapeGroups(is, os)) {
    if (d < g.inBegin || d >= g.inEnd)
      continue;
    // The split dim must lead its group (contiguous blocks of the group).
    for (int64_t k = g.inBegin; k < d; ++k)
      if (is[k] != 1)
        return failure();
    SmallVector<int64_t> nonUnit;
    for (int64_t k = g.outBegin; k < g.outEnd; ++k)
      if (os[k] != 1)
        nonUnit.push_back(k);
    if (nonUnit.empty() || devices <= 0)
      return failure();
    bool grouped = nonUnit.size() > 1 && os[nonUnit[1]] % devices == 0;
    rule.ambiguous = grouped && os[nonUnit[0]] % devices == 0;
    if (os[nonUnit[0]] % devices == 0 &&
        !(rule.ambiguous && rule.preferGroups)) {
      rule.results.push_back(splitAt(y, nonUnit[0]));
      return success();
    }
    // A leading factor (q|k|v) the devices do not divide: each device holds
    // its block of each of the `groups` parts (the source is re-ordered).
    if (grouped) {
      rule.groups = os[nonUnit[0]];
      rule.results.push_back(splitAt(y, nonUnit[1]));
      return success();
    }
    return failure();
  }
  return failure();
}

LogicalResult transposeRule(Operation *op, Shardings in, ShardingRule &rule) {
  auto t = cast<TransposeOp>(op);
  ShardingAttr s = in[0];
  int64_t d = s.getSplitDim();
  if (d == -2 || (s.isPartial() && !isSum(s)))
    return failure();
  rule.operands.push_back(s);
  if (s.isPartial() || d < 0) {
    rule.results.push_back(s.isPartial() ? partialOf(t) : rep(t));
    return success();
  }
  ArrayRef<int64_t> perm = t.getPerm();
  int64_t j = llvm::find(perm, d) - perm.begin();
  rule.results.push_back(splitAt(t, j));
  return success();
}

LogicalResult splitRule(Operation *op, Shardings in, ShardingRule &rule) {
  if (in[0].getSplitDim() == cast<SplitOp>(op).getDim())
    return failure();
  return passThrough(op, in, rule, /*linear=*/true);
}

LogicalResult concatRule(Operation *op, Shardings in, ShardingRule &rule) {
  int64_t dim = cast<ConcatOp>(op).getDim();
  for (ShardingAttr s : in)
    if (s != in[0])
      return failure();
  if (in[0].getSplitDim() == dim || in[0].getSplitDim() == -2 ||
      (in[0].isPartial() && !isSum(in[0])))
    return failure();
  rule.operands.assign(in.begin(), in.end());
  Value y = op->getResult(0);
  int64_t d = in[0].getSplitDim();
  rule.results.push_back(in[0].isPartial() ? partialOf(y)
                         : d >= 0          ? splitAt(y, d)
                                           : rep(y));
  return success();
}

LogicalResult softmaxRule(Operation *op, Shardings in, ShardingRule &rule) {
  int64_t d = in[0].getSplitDim(), rank = rankOf(op->getOperand(0));
  bool causal = cast<SoftmaxOp>(op).getCausal();
  if (d >= 0 && (d == rank - 1 || (causal && d == rank - 2)))
    return failure();
  return passThrough(op, in, rule, /*linear=*/false);
}
/// Attention is independent per (batch, head): q, k and v split alike along
/// dim 0 or 1 give o and lse split the same way (Megatron splits heads).
LogicalResult flashAttentionRule(Operation *op, Shardings in,
                                 ShardingRule &rule) {
  int64_t d = -1;
  for (ShardingAttr s : in) {
    if (s.isPartial() || s.getSplitDim() == -2)
      return failure();
    int64_t sd = s.getSplitDim();
    if (sd >= 0 && (sd > 1 || (d >= 0 && sd != d)))
      return failure();
    if (sd >= 0)
      d = sd;
  }
  for (Value v : op->getOperands())
    rule.operands.push_back(d >= 0 ? splitAt(v, d) : rep(v));
  for (Value r : op->getResults())
    rule.results.push_back(d >= 0 ? splitAt(r, d) : rep(r));
  return success();
}


/// Rows are independent: x split along a leading dim with only 1s before it
/// (a block of rows, which is also a block of the flattened `[rows]` of mean
/// and rstd) gives the same split of y, and mean and rstd split alike. The
/// weights must be whole; their gradients are then a term per device (the
/// pass puts them through mega.copy_to_region, whose adjoint all-reduces
/// them, as Megatron does for layer norms under sequence parallelism).
LogicalResult layerNormRule(Operation *op, Shardings in, ShardingRule &rule) {
  Value x = op->getOperand(0);
  int64_t d = in[0].getSplitDim();
  if (d < 0 || d + 1 >= rankOf(x) || in[0].isPartial() ||
      !in[1].isReplicated() || !in[2].isReplicated())
    return failure();
  // Contiguous blocks of rows only: the dims before the split one are 1.
  for (int64_t k = 0; k < d; ++k)
    if (shapeOf(x)[k] != 1)
      return failure();
  rule.operands.assign({in[0], in[1], in[2]});
  rule.results.push_back(splitAt(op->getResult(0), d));
  for (Value r : op->getResults().drop_front())
    rule.results.push_back(splitAt(r, 0));
  return success();
}

//===----------------------------------------------------------------------===//
// Vocabulary parallelism: embedding with table S(0) -> P (masked lookup);
// cross_entropy with logits S(last) -> R, computed from all-reduced
// statistics without gathering the logits.
//===----------------------------------------------------------------------===//

LogicalResult embeddingRule(Operation *op, Shardings in, ShardingRule &rule) {
  Value table = op->getOperand(1), y = op->getResult(0);
  if (!in[0].isReplicated() || in[1].isPartial())
    return failure();
  int64_t d = in[1].getSplitDim();
  if (d != 0 && d != 1)
    return failure();
  rule.operands.assign({in[0], splitAt(table, d)});
  rule.results.push_back(d == 0 ? partialOf(y) : splitAt(y, rankOf(y) - 1));
  // Padded vocabulary rows are never looked up (ids < the true vocabulary).
  rule.paddingHandled = d == 0;
  return success();
}

Operation *embeddingPartition(Operation *op, RewriterBase &rw, Shardings in) {
  if (in[1].getSplitDim() != 0)
    return op;
  auto e = cast<EmbeddingOp>(op);
  rw.setInsertionPoint(op);
  auto v = rw.create<VocabEmbeddingOp>(
      e.getLoc(), e.getType(), e.getIds(), e.getTable(),
      rw.getDenseI64ArrayAttr(in[1].getDimAxes(0)));
  v->setDiscardableAttrs(op->getDiscardableAttrDictionary());
  rw.replaceOp(op, v);
  return v;
}

LogicalResult crossEntropyRule(Operation *op, Shardings in,
                               ShardingRule &rule) {
  Value logits = op->getOperand(0);
  if (!in[1].isReplicated() || in[0].isPartial() ||
      in[0].getSplitDim() != rankOf(logits) - 1)
    return failure();
  rule.operands.assign({in[0], in[1]});
  for (Value r : op->getResults())
    rule.results.push_back(rep(r));
  // Padded logit columns are masked (partition passes the true vocabulary).
  rule.paddingHandled = true;
  return success();
}

//   m = row_max(logits); M = all_reduce max m
//   se, tl = vocab_cross_entropy_stats(logits, targets, M)
//   SE, TL = all_reduce sum se, tl
//   loss, lse = vocab_cross_entropy(logits, targets, M, SE, TL)
Operation *crossEntropyPartition(Operation *op, RewriterBase &rw,
                                 Shardings in) {
  auto ce = cast<CrossEntropyOp>(op);
  Location loc = ce.getLoc();
  auto axes = rw.getDenseI64ArrayAttr(in[0].getDimAxes(in[0].getSplitDim()));
  Type rows = ce.getLse().getType();
  rw.setInsertionPoint(op);
  Value m = rw.create<RowMaxOp>(loc, rows, ce.getLogits());
  Value max = rw.create<AllReduceOp>(loc, m, axes, rw.getStringAttr("max"));
  auto stats = rw.create<VocabCrossEntropyStatsOp>(
      loc, TypeRange{rows, rows}, ce.getLogits(), ce.getTargets(), max, axes);
  // A zero-padded vocabulary: the columns past the true size `mega.vocab`
  // are left out of the sum of exponentials and get no gradient (the loss
  // carries it to its gradient op). Their logits are exactly 0 (zero rows),
  // so the row max over them stays a valid shift.
  IntegerAttr vocab;
  if (auto padded =
          op->getAttrOfType<DenseI64ArrayAttr>("mega.unpadded_operands");
      padded && padded.size() > 0 && padded[0] > 0)
    vocab = rw.getI64IntegerAttr(padded[0]);
  if (vocab)
    stats->setAttr("mega.vocab", vocab);
  Value se = rw.create<AllReduceOp>(loc, stats.getSumExp(), axes,
                                    rw.getStringAttr("sum"));
  Value tl = rw.create<AllReduceOp>(loc, stats.getTargetLogit(), axes,
                                    rw.getStringAttr("sum"));
  auto loss = rw.create<VocabCrossEntropyOp>(
      loc, TypeRange{ce.getLoss().getType(), rows}, ce.getLogits(),
      ce.getTargets(), max, se, tl, axes);
  if (vocab)
    loss->setAttr("mega.vocab", vocab);
  rw.replaceOp(op, loss);
  return loss;
}

Operation *noPartition(Operation *op, RewriterBase &, Shardings) { return op; }

template <
    typename OpT, LogicalResult (*Fn)(Operation *, Shardings, ShardingRule &),
    Operation *(*Part)(Operation *, RewriterBase &, Shardings) = noPartition>
struct Rule : ShardingOpInterface::ExternalModel<Rule<OpT, Fn, Part>, OpT> {
  LogicalResult getShardingRule(Operation *op, Shardings operands,
                                ShardingRule &rule) const {
    return Fn(op, operands, rule);
  }
  Operation *partition(Operation *op, RewriterBase &rewriter,
                       Shardings operands) const {
    return Part(op, rewriter, operands);
  }
};

} // namespace

void MegaDialect::registerShardingRules() {
  MLIRContext &ctx = *getContext();
  GeluOp::attachInterface<Rule<GeluOp, geluRule>>(ctx);
  ScaleOp::attachInterface<Rule<ScaleOp, scaleRule>>(ctx);
  AddOp::attachInterface<Rule<AddOp, addRule>>(ctx);
  SubOp::attachInterface<Rule<SubOp, addRule>>(ctx);
  MulOp::attachInterface<Rule<MulOp, mulRule>>(ctx);
  MatMulOp::attachInterface<Rule<MatMulOp, matmulRule>>(ctx);
  ReshapeOp::attachInterface<Rule<ReshapeOp, reshapeRule>>(ctx);
  TransposeOp::attachInterface<Rule<TransposeOp, transposeRule>>(ctx);
  SplitOp::attachInterface<Rule<SplitOp, splitRule>>(ctx);
  ConcatOp::attachInterface<Rule<ConcatOp, concatRule>>(ctx);
  SoftmaxOp::attachInterface<Rule<SoftmaxOp, softmaxRule>>(ctx);
  FlashAttentionOp::attachInterface<
      Rule<FlashAttentionOp, flashAttentionRule>>(ctx);
  LayerNormOp::attachInterface<Rule<LayerNormOp, layerNormRule>>(ctx);
  EmbeddingOp::attachInterface<
      Rule<EmbeddingOp, embeddingRule, embeddingPartition>>(ctx);
  CrossEntropyOp::attachInterface<
      Rule<CrossEntropyOp, crossEntropyRule, crossEntropyPartition>>(ctx);
}

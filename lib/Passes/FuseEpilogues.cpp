//===- FuseEpilogues.cpp - Bias, residual and GELU into the MatMul --------===//
//
// `mega-fuse-epilogues`, at kernel level (after mega-lower-to-kernels and
// mega-fuse-optimizer, before mega-fold-casts). Every Linear lowers to a
// MatMul with an f32 result and an Elementwise that adds the bias (and the
// residual, or applies GELU keeping the pre-activation): the Elementwise
// reads the product back and writes it again. The MatMul's epilogue
// (docs/plan-format.md) computes the same f32 values while the product is
// still in registers on the GPU, so the pair becomes one MatMul.
//
// Algorithm, per MatMul kernel M (batch 1, alpha 1, beta 0, ldc = N, no
// epilogue yet, not writing in place):
//  1. M's result has exactly one use, an Elementwise E over n = M*N
//     elements (not writing in place), and no kernel between M and E
//     writes in place (mega.dests) into memory that M or E reads (the
//     same root through views, or a parameter or state of the same name),
//     so the fused kernel at E's place reads what M and E read.
//  2. E's micro-op program is evaluated symbolically: registers hold
//     expressions over E's inputs built from Load, Add, Gelu and GeluGrad; any
//     other micro-op, an output stored twice or an input never read: no
//     match. f32 addition is commutative (x + y has the bits of y + x), so
//     Add's operands may come in either order; its association may not.
//  3. With t the product (period n), b an f32 input of N elements read with
//     period N and r an f32 input of n elements read with period n, E's
//     outputs must be exactly one of
//       {t + b}                  -> epilogue 1 (bias)
//       {(t + b) + r}            -> epilogue 2 (bias + residual)
//       {t + b, gelu(t + b)}     -> epilogue 3 (D = the GELU output, aux =
//                                   the pre-activation), either order,
//       {gelu_grad(x, t)}        -> epilogue 4 (the GELU gradient of the
//                                   backward, x the pre-activation: n
//                                   elements, f32 or bf16, period n),
//     with every input of E one of t, b, r (x).
//  4. E is replaced by MatMul(A, B, b[, r]) (for the GELU gradient
//     MatMul(A, B, x)) with i[12] = the epilogue, its results typed as E's
//     outputs; M goes.
// The epilogue computes exactly these adds in this order (and the same GELU)
// on the CPU, so a plan's bits do not change.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"
#include "mega/Plan/Plan.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mega {
#define GEN_PASS_DEF_MEGAFUSEEPILOGUES
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

int64_t numel(Type t) { return cast<RankedTensorType>(t).getNumElements(); }


bool isF32(Type t) {
  return cast<RankedTensorType>(t).getElementType().isF32();
}

struct MegaFuseEpilogues
    : mega::impl::MegaFuseEpiloguesBase<MegaFuseEpilogues> {
  using MegaFuseEpiloguesBase::MegaFuseEpiloguesBase;

  void runOnOperation() override {
    if (!enable)
      return;
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      SmallVector<KernelOp> matmuls;
      func.walk([&](KernelOp k) {
        if (k.getKernel() == "MatMul")
          matmuls.push_back(k);
      });
      for (KernelOp mm : matmuls)
        tryFuse(mm);
    }
  }

  void tryFuse(KernelOp mm) {
    // The product: one plain batch-1 GEMM into a fresh, contiguous f32 C.
    ArrayRef<int64_t> mi = mm.getI();
    ArrayRef<float> mf = mm.getF();
    if (mi.size() != 12 || mf.size() != 2 || mi[0] != 1 || mf[0] != 1.0f ||
        mf[1] != 0.0f || mm->getNumResults() != 1 || mm->hasAttr(kDestsAttr))
      return;
    const int64_t M = mi[1], N = mi[2];
    if (M <= 0 || N <= 0 || mi[8] != N)
      return;
    const int64_t n = M * N;
    Value t = mm->getResult(0);
    if (!isF32(t.getType()) || numel(t.getType()) != n || !t.hasOneUse())
      return;
    // Step 1.
    auto ew = dyn_cast<KernelOp>(*t.getUsers().begin());
    if (!ew || ew.getKernel() != "Elementwise" || ew->hasAttr(kDestsAttr) ||
        ew->getBlock() != mm->getBlock() || ew->isBeforeInBlock(mm))
      return;
    for (Operation *op = mm->getNextNode(); op != ew; op = op->getNextNode())
      if (writesInto(op, mm) || writesInto(op, ew))
        return;
    // Step 2.
    ArrayRef<int64_t> ei = ew.getI();
    SmallVector<EwExpr> exprs;
    SmallVector<int64_t> outs;
    SmallVector<bool> read;
    if (!evaluateEw(ei, exprs, outs, read) || ei[0] != n ||
        int64_t(ew.getInputs().size()) != ei[1] ||
        int64_t(ew->getNumResults()) != ei[2] ||
        !llvm::all_of(read, [](bool r) { return r; }))
      return;
    // Step 3: the roles of E's inputs.
    const int64_t nin = ei[1];
    auto input = [&](int64_t k) { return ew.getInputs()[k]; };
    auto period = [&](int64_t k) { return ei[3 + k]; };
    auto isT = [&](int64_t e) {
      return exprs[e].kind == EwExpr::Input && input(exprs[e].a) == t &&
             period(exprs[e].a) == n;
    };
    auto isBias = [&](int64_t e) {
      if (exprs[e].kind != EwExpr::Input)
        return false;
      const int64_t k = exprs[e].a;
      return input(k) != t && period(k) == N && isF32(input(k).getType()) &&
             numel(input(k).getType()) == N;
    };
    auto isResidual = [&](int64_t e) {
      if (exprs[e].kind != EwExpr::Input)
        return false;
      const int64_t k = exprs[e].a;
      return input(k) != t && period(k) == n && isF32(input(k).getType()) &&
             numel(input(k).getType()) == n;
    };
    // x + y in either order, x matching `p`, y matching `q`; the input
    // expression y matched is returned in `other`.
    auto sum = [&](int64_t e, auto p, auto q, int64_t &other) {
      if (exprs[e].kind != EwExpr::Add)
        return false;
      for (auto [x, y] : {std::pair{exprs[e].a, exprs[e].b},
                          std::pair{exprs[e].b, exprs[e].a}})
        if (p(x) && q(y)) {
          other = y;
          return true;
        }
      return false;
    };
    // The pre-activation the GELU gradient reads (f32 or bf16).
    auto isPre = [&](int64_t e) {
      if (exprs[e].kind != EwExpr::Input)
        return false;
      const int64_t k = exprs[e].a;
      auto el = cast<RankedTensorType>(input(k).getType()).getElementType();
      return input(k) != t && period(k) == n && (el.isF32() || el.isBF16()) &&
             numel(input(k).getType()) == n;
    };
    int64_t biasE = -1, resE = -1, epi = 0, dOut = 0, auxOut = -1;
    auto biasSum = [&](int64_t e) { return sum(e, isT, isBias, biasE); };
    if (outs.size() == 1 && exprs[outs[0]].kind == EwExpr::GeluGrad &&
        isPre(exprs[outs[0]].a) && isT(exprs[outs[0]].b)) {
      epi = 4;
      biasE = exprs[outs[0]].a; // the aux input takes the bias's place
    } else if (outs.size() == 1 && biasSum(outs[0])) {
      epi = 1;
    } else if (outs.size() == 1 && sum(outs[0], biasSum, isResidual, resE)) {
      epi = 2;
    } else if (outs.size() == 2) {
      for (int64_t pre = 0; pre < 2 && !epi; ++pre) {
        const int64_t act = 1 - pre;
        if (biasSum(outs[pre]) && exprs[outs[act]].kind == EwExpr::Gelu &&
            exprs[outs[act]].a == outs[pre]) {
          epi = 3;
          dOut = act;
          auxOut = pre;
        }
      }
    }
    if (!epi)
      return;
    // Every input is t, the bias (the pre-activation) or the residual (no
    // other operand to drop).
    Value bias = input(exprs[biasE].a);
    Value res = resE >= 0 ? input(exprs[resE].a) : Value();
    for (int64_t k = 0; k < nin; ++k)
      if (input(k) != t && input(k) != bias && input(k) != res)
        return;
    if (res && res == bias)
      return;
    Type dType = ew->getResult(dOut).getType();
    auto dElem = cast<RankedTensorType>(dType).getElementType();
    if (numel(dType) != n || !(dElem.isF32() || dElem.isBF16()))
      return;
    if (auxOut >= 0 && (!isF32(ew->getResult(auxOut).getType()) ||
                        numel(ew->getResult(auxOut).getType()) != n))
      return;
    // Step 4.
    OpBuilder b(ew);
    SmallVector<Value> inputs = {mm.getInputs()[0], mm.getInputs()[1], bias};
    if (res)
      inputs.push_back(res);
    SmallVector<Type> types = {dType};
    if (auxOut >= 0)
      types.push_back(ew->getResult(auxOut).getType());
    SmallVector<int64_t> i(mi);
    i.push_back(epi);
    auto fused =
        b.create<KernelOp>(ew.getLoc(), types, mm.getKernelAttr(), inputs,
                           b.getDenseI64ArrayAttr(i), mm.getFAttr());
    for (NamedAttribute a : mm->getDiscardableAttrs())
      fused->setAttr(a.getName(), a.getValue());
    ew->getResult(dOut).replaceAllUsesWith(fused->getResult(0));
    if (auxOut >= 0)
      ew->getResult(auxOut).replaceAllUsesWith(fused->getResult(1));
    ew->erase();
    mm->erase();
  }
};

} // namespace

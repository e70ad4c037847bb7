//===- Bf16Bias.cpp - A bf16 Linear's bias is read in bf16 ----------------===//
//
// `mega-bf16-bias`, at kernel level (after mega-fold-casts, before
// mega-bf16-weight-copies). After mega-fold-casts a MatMul whose epilogue
// adds a bias may store the sum in bf16: D for the bias (1) and the bias +
// residual (2) epilogues, the pre-activation aux for bias + GELU (3). Its
// bias is still the f32 parameter. cuBLASLt's bias epilogue takes the bias
// only in the type of the matrix it writes (cublasLt.h,
// CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE): with an f32 bias and a bf16 D it
// offers no algorithm, and the CUDA backend falls back to the plain product
// into f32 scratch and an epilogue kernel (GPT-2 small: c_attn's and c_fc's
// products, about twice their fused time). PyTorch's autocast rounds a
// Linear's bias to bf16 as well (every floating operand of a bf16 linear is
// cast). So such a MatMul reads the bias's bf16 copy: the bias is widened
// on load and added in f32, as before; only the bias's own rounding is new.
//
// Algorithm, per function:
//  1. Each MatMul kernel with epilogue 1 or 2 and a bf16 D, or epilogue 3
//     and a bf16 aux, whose bias (operand 2) is f32.
//  2. Its bias's bf16 copy: an existing Cast kernel (f32 -> bf16) of that
//     very value that dominates the MatMul, else a new one right after the
//     value's definition (the block start for a block argument), shared by
//     every later such MatMul of the function.
//  3. The MatMul reads the copy. A bias that is a parameter leaves a Cast
//     of the whole mega.param, which mega-bf16-weight-copies turns into the
//     optimizer's persistent copy: no kernel per step.
//
//===----------------------------------------------------------------------===//
#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Dominance.h"
#include "llvm/ADT/DenseMap.h"

namespace mega {
#define GEN_PASS_DEF_MEGABF16BIAS
#include "mega/Passes/Passes.h.inc"
} // namespace mega

using namespace mlir;
using namespace mega;

namespace {

bool elementIs(Value v, bool bf16) {
  Type e = cast<RankedTensorType>(v.getType()).getElementType();
  return bf16 ? e.isBF16() : e.isF32();
}

/// Step 1: the MatMul's bias goes into a bf16 store.
bool storesBiasSumInBf16(KernelOp k) {
  if (k.getKernel() != "MatMul" || k->hasAttr("mega.dests"))
    return false;
  ArrayRef<int64_t> i = k.getI();
  if (i.size() != 13 || k->getNumOperands() < 3 ||
      !elementIs(k->getOperand(2), /*bf16=*/false))
    return false;
  if (i[12] == 1 || i[12] == 2)
    return k->getNumResults() == 1 && elementIs(k->getResult(0), true);
  if (i[12] == 3)
    return k->getNumResults() == 2 && elementIs(k->getResult(1), true);
  return false;
}

bool isBf16CastOf(Operation *op, Value v) {
  auto k = dyn_cast<KernelOp>(op);
  return k && k.getKernel() == "Cast" && k->getNumOperands() == 1 &&
         k->getOperand(0) == v && k->getNumResults() == 1 &&
         elementIs(k->getResult(0), true) && !k->hasAttr("mega.dests");
}

struct MegaBf16Bias : mega::impl::MegaBf16BiasBase<MegaBf16Bias> {
  using MegaBf16BiasBase::MegaBf16BiasBase;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      SmallVector<KernelOp> matmuls;
      func.walk([&](KernelOp k) {
        if (storesBiasSumInBf16(k))
          matmuls.push_back(k);
      });
      DominanceInfo dom(func);
      llvm::DenseMap<Value, Value> made;
      for (KernelOp k : matmuls) {
        Value bias = k->getOperand(2);
        Value copy;
        for (Operation *user : bias.getUsers())
          if (isBf16CastOf(user, bias) && dom.properlyDominates(user, k)) {
            copy = user->getResult(0);
            break;
          }
        if (!copy)
          copy = made.lookup(bias);
        if (!copy)
          copy = made[bias] = newCast(bias);
        k->setOperand(2, copy);
      }
    }
  }

  /// A Cast of `bias` to bf16 right after its definition: it dominates
  /// every user of `bias`.
  static Value newCast(Value bias) {
    OpBuilder b(bias.getContext());
    b.setInsertionPointAfterValue(bias);
    auto type = cast<RankedTensorType>(bias.getType());
    auto castOp = b.create<KernelOp>(
        bias.getLoc(),
        TypeRange{RankedTensorType::get(type.getShape(), b.getBF16Type())},
        b.getStringAttr("Cast"), ValueRange{bias},
        b.getDenseI64ArrayAttr({type.getNumElements()}),
        b.getDenseF32ArrayAttr({}));
    return castOp->getResult(0);
  }
};

} // namespace

//===- KernelUtils.h - Shared helpers of the kernel-level passes -*- C++
//-*-===//
//
// The Elementwise micro-op code generator, shared by mega-fuse-elementwise
// (which must know how many registers a group needs before it forms it) and
// mega-lower-to-kernels (which emits the code), so the two always agree.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_LIB_PASSES_KERNELUTILS_H
#define MEGA_LIB_PASSES_KERNELUTILS_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Operation.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>

namespace mega {

/// The attribute that marks a kernel's last N operands as outputs written
/// in place.
inline constexpr llvm::StringLiteral kDestsAttr = "mega.dests";

/// How many of kernel `op`'s last operands it writes in place (mega.dests);
/// 0 without the attribute.
int64_t destCount(mlir::Operation *op);

/// `v`'s type: every kernel-level value is a ranked tensor.
inline mlir::RankedTensorType tensorOf(mlir::Value v) {
  return llvm::cast<mlir::RankedTensorType>(v.getType());
}

/// Bytes of one element of `v`.
inline int64_t elemBytes(mlir::Value v) {
  return tensorOf(v).getElementTypeBitWidth() / 8;
}

/// MatMul's integer attributes by position (docs/plan-format.md, opcode 2).
namespace mm {
enum : unsigned { kBatch, kM, kN, kK, kTransA, kTransB, kLda, kLdb, kLdc };
inline constexpr unsigned kEpilogue = 12;
} // namespace mm

/// True when `op` is the kernel (mega.kernel) `name`.
bool isKernelOp(mlir::Operation *op, llvm::StringRef name);

/// Registers of the plan's Elementwise interpreter (plan::kEwRegisters).
inline constexpr int kEwRegisterCount = 16;

/// One Elementwise instruction to generate: `ops` (elementwise ops in program
/// order) read `inputs` (values defined outside `ops`) and store `outputs`
/// (values defined by `ops`), in the orders given. An input with a value in
/// `constants` (it came from `mega.fill`) is materialised with EwOp::Const
/// instead of being loaded, and is not an operand of the kernel.
struct EwProgram {
  llvm::SmallVector<mlir::Operation *> ops;
  llvm::SmallVector<mlir::Value> inputs;
  llvm::SmallVector<std::optional<double>> constants; ///< one per input
  llvm::SmallVector<mlir::Value> outputs;
};

/// The generated micro-code: groups of 4 (EwOp, dst, a, b), the constants
/// table, the inputs actually loaded (positions in EwProgram::inputs, in
/// kernel operand order) and the number of registers used.
struct EwCode {
  llvm::SmallVector<int64_t> code;
  llvm::SmallVector<float> constants;
  llvm::SmallVector<unsigned> loaded;
  int registers = 0;
};

/// Generates the micro-code of `prog` with a linear-scan register allocator:
/// inputs are loaded (or constants materialised) just before their first use,
/// a register is freed after its value's last use, each output is stored as
/// soon as it is computed. Never fails; `registers` may exceed
/// kEwRegisterCount, which the caller must check.
EwCode generateEwCode(const EwProgram &prog);

/// True for the ops the Elementwise kernel can compute (mega.add, sub, mul,
/// scale, gelu, gelu_grad) on statically shaped f32 tensors.
bool isEwSupported(mlir::Operation *op);

/// Rewrites the integer attributes `i` of a one-output Elementwise kernel
/// so that it also loads one more input (its last: the value accumulated
/// into) and adds it to the result just before the store (mega-lower-to-
/// kernels folds a gradient accumulation into its producer with it). False,
/// `i` unchanged, for several outputs or when the code has no free register.
bool accumulatingEwCode(llvm::SmallVectorImpl<int64_t> &i);

/// The value of `v` when it is produced by `mega.fill`.
std::optional<double> fillValue(mlir::Value v);

/// True when kernel `op` writes in place (mega.dests) into memory that one
/// of `reader`'s operands may share: the same root through mega.view, or a
/// parameter or state of one name and role (each mega.state op is a value
/// of its own). Kernel-level fusions that move a reader past `op` ask this.
bool writesInto(mlir::Operation *op, mlir::Operation *reader);

/// True when `a` and `b` may be one memory: the same root through
/// mega.view, or a parameter or state of one name and role.
bool mayShareMemory(mlir::Value a, mlir::Value b);

/// A symbolic value of an Elementwise micro-op program.
struct EwExpr {
  enum Kind { Input, Add, Gelu, GeluGrad } kind;
  int64_t a = -1, b = -1; ///< Input: the input; otherwise operand exprs
};

/// The Elementwise attributes `i`' outputs as expressions over its inputs
/// (`exprs` in program order, `outputs` the expr each output stores, `read`
/// the inputs loaded); false when the program uses anything but Load, Add,
/// Gelu, GeluGrad and Store, stores an output other than exactly once, or
/// reads an undefined register. Shared by the kernel-level fusions that
/// recognise what an Elementwise computes.
bool evaluateEw(llvm::ArrayRef<int64_t> i, llvm::SmallVectorImpl<EwExpr> &exprs,
                llvm::SmallVectorImpl<int64_t> &outputs,
                llvm::SmallVectorImpl<bool> &read);

/// Number of elements of a statically shaped tensor value.
int64_t numElements(mlir::Value v);

} // namespace mega

#endif // MEGA_LIB_PASSES_KERNELUTILS_H

//===- KernelUtils.cpp - Elementwise micro-code generation
//-----------------===//
//
// Algorithm (generateEwCode):
//  1. Number the non-constant inputs in order: they are the kernel's input
//     operands (load index k = operand k).
//  2. Record the last op that uses each value.
//  3. Walk the ops in order. For each: bring its operands into registers
//     (Load or Const just before the first use), free the registers of the
//     operands used for the last time, allocate the result's register, emit
//     the micro-op, Store the result at once if it is an output, and free its
//     register if nothing later reads it.
// The register count reported is the peak number of registers in use.
//
//===----------------------------------------------------------------------===//
#include "KernelUtils.h"

#include "mega/Dialect/Mega/MegaOps.h"
#include "mega/Plan/Plan.h"

#include "llvm/ADT/DenseMap.h"

using namespace mlir;

namespace mega {

bool isKernelOp(Operation *op, llvm::StringRef name) {
  auto k = dyn_cast_or_null<KernelOp>(op);
  return k && k.getKernel() == name;
}

bool isEwSupported(Operation *op) {
  if (!isa<AddOp, SubOp, MulOp, ScaleOp, GeluOp, GeluGradOp>(op))
    return false;
  auto ok = [](Type t) {
    auto tt = dyn_cast<RankedTensorType>(t);
    return tt && tt.hasStaticShape() && tt.getElementType().isF32();
  };
  return llvm::all_of(op->getOperandTypes(), ok) &&
         llvm::all_of(op->getResultTypes(), ok);
}

namespace {

/// `v` through views: the value whose memory it is.
Value rootOf(Value v) {
  while (auto view = v.getDefiningOp<ViewOp>())
    v = view.getSource();
  return v;
}

/// Two roots that may be one memory: the same value, or a parameter or
/// state of one name and role (each mega.state op is a value of its own).
bool sameMemory(Value a, Value b) {
  if (a == b)
    return true;
  auto pa = a.getDefiningOp<ParamOp>(), pb = b.getDefiningOp<ParamOp>();
  auto sa = a.getDefiningOp<StateOp>(), sb = b.getDefiningOp<StateOp>();
  // A parameter's bytes are also its "param" state.
  auto name = [](ParamOp p, StateOp s) -> std::optional<std::string> {
    if (p)
      return "param:" + p.getName().str();
    if (s)
      return (s.getRole() + ":" + s.getName()).str();
    return std::nullopt;
  };
  auto na = name(pa, sa), nb = name(pb, sb);
  return na && nb && *na == *nb;
}

} // namespace

int64_t destCount(Operation *op) {
  auto a = op->getAttrOfType<IntegerAttr>(kDestsAttr);
  return a ? a.getInt() : 0;
}

bool writesInto(Operation *op, Operation *reader) {
  auto d = op->getAttrOfType<IntegerAttr>(kDestsAttr);
  if (!d)
    return false;
  const unsigned first = op->getNumOperands() - unsigned(d.getInt());
  for (unsigned k = first; k < op->getNumOperands(); ++k)
    for (Value in : reader->getOperands())
      if (sameMemory(rootOf(op->getOperand(k)), rootOf(in)))
        return true;
  return false;
}

bool mayShareMemory(Value a, Value b) {
  return sameMemory(rootOf(a), rootOf(b));
}

std::optional<double> fillValue(Value v) {
  if (auto fill = v.getDefiningOp<FillOp>())
    return fill.getValue().convertToDouble();
  return std::nullopt;
}

bool evaluateEw(ArrayRef<int64_t> i, SmallVectorImpl<EwExpr> &exprs,
                SmallVectorImpl<int64_t> &outputs, SmallVectorImpl<bool> &read) {
  using plan::EwOp;
  if (i.size() < 3)
    return false;
  const int64_t nin = i[1], nout = i[2], begin = 3 + nin;
  if (nin < 1 || nout < 1 || int64_t(i.size()) < begin ||
      (int64_t(i.size()) - begin) % 4 != 0)
    return false;
  SmallVector<int64_t> reg(plan::kEwRegisters, -1);
  outputs.assign(nout, -1);
  read.assign(nin, false);
  auto regOk = [](int64_t r) { return r >= 0 && r < plan::kEwRegisters; };
  for (int64_t at = begin; at < int64_t(i.size()); at += 4) {
    const int64_t op = i[at], dst = i[at + 1], a = i[at + 2], b = i[at + 3];
    if (!regOk(dst))
      return false;
    switch (EwOp(op)) {
    case EwOp::Load:
      if (a < 0 || a >= nin)
        return false;
      read[a] = true;
      exprs.push_back({EwExpr::Input, a, -1});
      reg[dst] = int64_t(exprs.size()) - 1;
      break;
    case EwOp::Store:
      if (a < 0 || a >= nout || outputs[a] >= 0 || reg[dst] < 0)
        return false;
      outputs[a] = reg[dst];
      break;
    case EwOp::Add:
      if (!regOk(a) || !regOk(b) || reg[a] < 0 || reg[b] < 0)
        return false;
      exprs.push_back({EwExpr::Add, reg[a], reg[b]});
      reg[dst] = int64_t(exprs.size()) - 1;
      break;
    case EwOp::Gelu:
      if (!regOk(a) || reg[a] < 0)
        return false;
      exprs.push_back({EwExpr::Gelu, reg[a], -1});
      reg[dst] = int64_t(exprs.size()) - 1;
      break;
    case EwOp::GeluGrad:
      if (!regOk(a) || !regOk(b) || reg[a] < 0 || reg[b] < 0)
        return false;
      exprs.push_back({EwExpr::GeluGrad, reg[a], reg[b]});
      reg[dst] = int64_t(exprs.size()) - 1;
      break;
    default:
      return false;
    }
  }
  return llvm::all_of(outputs, [](int64_t e) { return e >= 0; });
}

int64_t numElements(Value v) {
  return cast<RankedTensorType>(v.getType()).getNumElements();
}

namespace {

using plan::EwOp;

class EwCodeGen {
public:
  explicit EwCodeGen(const EwProgram &prog) : prog(prog) {}

  EwCode run() {
    for (auto [k, in] : llvm::enumerate(prog.inputs))
      if (!prog.constants[k]) {
        loadIndex[in] = out.loaded.size();
        out.loaded.push_back(k);
      }
    for (auto [k, op] : llvm::enumerate(prog.ops))
      for (Value v : op->getOperands())
        lastUse[v] = k;

    for (auto [k, op] : llvm::enumerate(prog.ops))
      emitOp(k, op);
    // An input stored unchanged (a group yielding its own argument).
    for (auto [k, v] : llvm::enumerate(prog.outputs))
      if (!isDefinedInside(v))
        emit(EwOp::Store, materialize(v), k, 0);
    return std::move(out);
  }

private:
  bool isDefinedInside(Value v) const {
    Operation *def = v.getDefiningOp();
    return def && llvm::is_contained(prog.ops, def);
  }

  void emit(EwOp op, int64_t dst, int64_t a, int64_t b) {
    out.code.append({int64_t(op), dst, a, b});
  }

  int allocate() {
    for (auto [r, used] : llvm::enumerate(inUse))
      if (!used) {
        inUse[r] = true;
        return r;
      }
    inUse.push_back(true);
    out.registers = std::max<int>(out.registers, inUse.size());
    return inUse.size() - 1;
  }

  void release(int r) { inUse[r] = false; }

  int64_t constant(double value) {
    float f = float(value);
    for (auto [k, c] : llvm::enumerate(out.constants))
      if (c == f || (std::isnan(c) && std::isnan(f)))
        return k;
    out.constants.push_back(f);
    return out.constants.size() - 1;
  }

  /// The register holding `v`, loading the input or constant on first use.
  int materialize(Value v) {
    auto it = reg.find(v);
    if (it != reg.end())
      return it->second;
    int r = allocate();
    auto pos = llvm::find(prog.inputs, v) - prog.inputs.begin();
    if (auto c = prog.constants[pos])
      emit(EwOp::Const, r, constant(*c), 0);
    else
      emit(EwOp::Load, r, loadIndex.lookup(v), 0);
    reg[v] = r;
    return r;
  }

  void emitOp(unsigned k, Operation *op) {
    SmallVector<int> args;
    for (Value v : op->getOperands())
      args.push_back(materialize(v));
    int tmp = -1;
    if (auto scale = dyn_cast<ScaleOp>(op)) {
      tmp = allocate();
      emit(EwOp::Const, tmp, constant(scale.getFactor().convertToDouble()), 0);
    }
    // Free what dies here before choosing the destination: dst may reuse an
    // operand's register (the interpreter reads a and b before writing dst).
    for (Value v : op->getOperands())
      if (lastUse.lookup(v) == k && reg.count(v)) {
        release(reg[v]);
        reg.erase(v);
      }
    if (tmp >= 0)
      release(tmp);
    Value result = op->getResult(0);
    int dst = allocate();
    reg[result] = dst;

    if (isa<AddOp>(op))
      emit(EwOp::Add, dst, args[0], args[1]);
    else if (isa<SubOp>(op))
      emit(EwOp::Sub, dst, args[0], args[1]);
    else if (isa<MulOp>(op))
      emit(EwOp::Mul, dst, args[0], args[1]);
    else if (isa<ScaleOp>(op))
      emit(EwOp::Mul, dst, args[0], tmp);
    else if (isa<GeluOp>(op))
      emit(EwOp::Gelu, dst, args[0], 0);
    else if (isa<GeluGradOp>(op))
      emit(EwOp::GeluGrad, dst, args[0], args[1]);
    else
      llvm_unreachable(
          "op without an Elementwise micro-op (see isEwSupported)");

    for (auto [j, v] : llvm::enumerate(prog.outputs))
      if (v == result)
        emit(EwOp::Store, dst, j, 0);
    if (!lastUse.count(result)) {
      release(dst);
      reg.erase(result);
    }
  }

  const EwProgram &prog;
  EwCode out;
  llvm::DenseMap<Value, int64_t> loadIndex;
  llvm::DenseMap<Value, unsigned> lastUse;
  llvm::DenseMap<Value, int> reg;
  SmallVector<bool> inUse;
};

} // namespace

EwCode generateEwCode(const EwProgram &prog) { return EwCodeGen(prog).run(); }

bool accumulatingEwCode(SmallVectorImpl<int64_t> &i) {
  int64_t n = i[0], numInputs = i[1], numOutputs = i[2];
  if (numOutputs != 1)
    return false;
  size_t codeStart = 3 + numInputs;
  int64_t maxReg = 0;
  for (size_t c = codeStart; c + 3 < i.size(); c += 4) {
    auto op = EwOp(i[c]);
    maxReg = std::max(maxReg, i[c + 1]);
    if (op != EwOp::Load && op != EwOp::Store && op != EwOp::Const)
      maxReg = std::max({maxReg, i[c + 2], i[c + 3]});
  }
  int64_t t = maxReg + 1;
  if (t >= kEwRegisterCount)
    return false;
  SmallVector<int64_t> out = {n, numInputs + 1, 1};
  out.append(i.begin() + 3, i.begin() + codeStart);
  out.push_back(n);
  for (size_t c = codeStart; c + 3 < i.size(); c += 4) {
    if (EwOp(i[c]) == EwOp::Store) {
      int64_t r = i[c + 1];
      out.append(
          {int64_t(EwOp::Load), t, numInputs, 0, int64_t(EwOp::Add), r, r, t});
    }
    out.append(i.begin() + c, i.begin() + c + 4);
  }
  i = std::move(out);
  return true;
}

} // namespace mega

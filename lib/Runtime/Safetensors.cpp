//===- Safetensors.cpp - Reading and writing .safetensors files -----------===//
#include "Safetensors.h"

#include "Json.h"

#include "mega/Runtime/Backend.h"

#include <algorithm>

namespace mega::rt {

const char *safetensorsDType(plan::DType t) {
  switch (t) {
  case plan::DType::F32:
    return "F32";
  case plan::DType::I32:
    return "I32";
  case plan::DType::BF16:
    return "BF16";
  }
  return "?";
}

namespace {

bool parseDType(const std::string &s, plan::DType &out) {
  for (plan::DType t : {plan::DType::F32, plan::DType::I32, plan::DType::BF16})
    if (s == safetensorsDType(t)) {
      out = t;
      return true;
    }
  return false;
}

/// Headers larger than this are refused before reading them (the reference
/// implementation's limit is 100 MB as well).
constexpr uint64_t kMaxHeader = 100ull << 20;

} // namespace

SafetensorsReader::SafetensorsReader(const std::string &path) : file_(path) {
  auto bad = [&](const std::string &m) -> Error {
    return Error("'" + path + "' is not a valid safetensors file: " + m);
  };
  if (file_.size() < 8)
    throw bad("shorter than the 8-byte header length");
  uint64_t n = 0;
  file_.read(0, &n, 8);
  if (n > kMaxHeader || n > file_.size() - 8)
    throw bad("header length " + std::to_string(n) + " exceeds the file size " +
              std::to_string(file_.size()) + " (truncated or corrupt)");
  std::string text(n, '\0');
  file_.read(8, text.data(), n);
  dataStart_ = 8 + n;
  uint64_t dataSize = file_.size() - dataStart_;

  json::Value header;
  try {
    header = json::parse(text);
  } catch (const std::exception &e) {
    throw bad(std::string("header: ") + e.what());
  }
  if (header.kind != json::Value::Object)
    throw bad("header is not a JSON object");

  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto &[name, v] : header.object) {
    if (name == "__metadata__") {
      if (v.kind != json::Value::Object)
        throw bad("__metadata__ is not an object");
      for (const auto &[k, m] : v.object) {
        if (m.kind != json::Value::String)
          throw bad("__metadata__ value '" + k + "' is not a string");
        metadata_[k] = m.text;
      }
      continue;
    }
    auto badTensor = [&](const std::string &m) {
      return bad("tensor '" + name + "': " + m);
    };
    if (v.kind != json::Value::Object)
      throw badTensor("entry is not an object");
    const json::Value *dt = v.find("dtype"), *shape = v.find("shape"),
                      *offs = v.find("data_offsets");
    if (!dt || !shape || !offs)
      throw badTensor("needs dtype, shape and data_offsets");
    TensorEntry e;
    e.name = name;
    if (dt->kind != json::Value::String || !parseDType(dt->text, e.dtype))
      throw badTensor("unsupported dtype " +
                      (dt->kind == json::Value::String ? dt->text : "?") +
                      " (mega reads F32, I32, BF16)");
    if (shape->kind != json::Value::Array)
      throw badTensor("shape is not an array");
    uint64_t numel = 1;
    for (const json::Value &d : shape->array) {
      if (!d.isInt() || d.asInt() < 0)
        throw badTensor("shape has a bad dimension");
      uint64_t dim = uint64_t(d.asInt());
      if (dim != 0 && numel > (uint64_t(1) << 50) / dim)
        throw badTensor("shape is too large");
      numel *= dim;
      e.shape.push_back(int64_t(dim));
    }
    if (offs->kind != json::Value::Array || offs->array.size() != 2 ||
        !offs->array[0].isInt() || !offs->array[1].isInt() ||
        offs->array[0].asInt() < 0 || offs->array[1].asInt() < 0)
      throw badTensor("data_offsets must be two non-negative integers");
    e.begin = uint64_t(offs->array[0].asInt());
    e.end = uint64_t(offs->array[1].asInt());
    if (e.begin > e.end || e.end > dataSize)
      throw badTensor("data_offsets [" + std::to_string(e.begin) + ", " +
                      std::to_string(e.end) +
                      "] lie outside the data section of " +
                      std::to_string(dataSize) + " bytes (truncated file?)");
    if (e.end - e.begin != numel * plan::dtypeSize(e.dtype))
      throw badTensor("data_offsets span " + std::to_string(e.end - e.begin) +
                      " bytes but the shape needs " +
                      std::to_string(numel * plan::dtypeSize(e.dtype)));
    if (find(name))
      throw badTensor("appears twice");
    spans.emplace_back(e.begin, e.end);
    tensors_.push_back(std::move(e));
  }
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  for (const auto &[b, e] : spans) {
    if (b != pos)
      throw bad("tensor data overlaps or leaves a hole at byte " +
                std::to_string(pos));
    pos = e;
  }
  if (pos != dataSize)
    throw bad(std::to_string(dataSize - pos) +
              " bytes after the last tensor (damaged file)");
}

const TensorEntry *SafetensorsReader::find(const std::string &name) const {
  for (const TensorEntry &e : tensors_)
    if (e.name == name)
      return &e;
  return nullptr;
}

void SafetensorsReader::read(const TensorEntry &entry, void *dst) const {
  file_.read(dataStart_ + entry.begin, dst, entry.bytes());
}

void SafetensorsWriter::add(const std::string &name, plan::DType dtype,
                            const std::vector<int64_t> &shape, Fill fill) {
  if (name == "__metadata__" || tensors_.count(name))
    throw Error("safetensors: duplicate or reserved tensor name '" + name +
                "'");
  Pending p;
  p.entry.name = name;
  p.entry.dtype = dtype;
  p.entry.shape = shape;
  uint64_t numel = 1;
  for (int64_t d : shape)
    numel *= uint64_t(d);
  p.entry.end = numel * plan::dtypeSize(dtype);
  p.fill = std::move(fill);
  tensors_.emplace(name, std::move(p));
}

void SafetensorsWriter::write(const std::string &path) const {
  std::string h = "{";
  bool first = true;
  if (!metadata_.empty()) {
    h += "\"__metadata__\":{";
    for (auto it = metadata_.begin(); it != metadata_.end(); ++it) {
      if (it != metadata_.begin())
        h += ",";
      h += json::quote(it->first) + ":" + json::quote(it->second);
    }
    h += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (const auto &[name, p] : tensors_) {
    if (!first)
      h += ",";
    first = false;
    h += json::quote(name) + ":{\"dtype\":\"" +
         safetensorsDType(p.entry.dtype) + "\",\"shape\":[";
    for (size_t k = 0; k < p.entry.shape.size(); ++k)
      h += std::string(k ? "," : "") + std::to_string(p.entry.shape[k]);
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," +
         std::to_string(offset + p.entry.bytes()) + "]}";
    offset += p.entry.bytes();
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');

  fs::AtomicFile out(path);
  uint64_t n = h.size();
  out.write(&n, 8);
  out.write(h.data(), h.size());
  std::vector<char> staging;
  for (const auto &[name, p] : tensors_) {
    staging.assign(p.entry.bytes(), 0);
    p.fill(staging.data());
    out.write(staging.data(), staging.size());
  }
  out.commit();
}

} // namespace mega::rt

//===- Safetensors.h - Reading and writing .safetensors files -------------===//
//
// Layout (https://github.com/huggingface/safetensors, written from the spec):
//   u64 LE header length N | N bytes of JSON | data section
// The JSON maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data section) and may hold a
// "__metadata__" object of string -> string. We write names sorted, data
// back to back, and pad the header with spaces to a multiple of 8 so the data
// is aligned, as the reference implementation does.
//
// The reader trusts nothing: every size, offset and shape is checked against
// the file, and the tensors must tile the data section exactly, so a
// truncated or damaged file is an error naming the file and the problem.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_SAFETENSORS_H
#define MEGA_RUNTIME_SAFETENSORS_H

#include "FileUtil.h"

#include "mega/Plan/Plan.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mega::rt {

/// "F32", "I32", "BF16" <-> plan dtypes (the only ones the runtime holds).
const char *safetensorsDType(plan::DType t);

struct TensorEntry {
  std::string name;
  plan::DType dtype = plan::DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0; ///< byte range in the data section
  uint64_t bytes() const { return end - begin; }
};

class SafetensorsReader {
public:
  /// Opens and validates the whole header; throws Error naming the file.
  explicit SafetensorsReader(const std::string &path);

  const std::string &path() const { return file_.path(); }
  const std::vector<TensorEntry> &tensors() const { return tensors_; }
  const TensorEntry *find(const std::string &name) const;
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }
  /// Reads one tensor's bytes (entry.bytes() of them) into `dst`.
  void read(const TensorEntry &entry, void *dst) const;

private:
  fs::InputFile file_;
  uint64_t dataStart_ = 0;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
public:
  /// `fill` writes exactly the tensor's bytes into the buffer it is given;
  /// it is called once, while the file is written, so the writer never holds
  /// more than one tensor in memory.
  using Fill = std::function<void(void *dst)>;
  void add(const std::string &name, plan::DType dtype,
           const std::vector<int64_t> &shape, Fill fill);
  void setMetadata(const std::string &key, const std::string &value) {
    metadata_[key] = value;
  }
  /// Writes crash-safely (fs::AtomicFile).
  void write(const std::string &path) const;

private:
  struct Pending {
    TensorEntry entry;
    Fill fill;
  };
  std::map<std::string, Pending> tensors_; ///< sorted by name
  std::map<std::string, std::string> metadata_;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_SAFETENSORS_H

//===- FileUtil.h - Crash-safe writes and bounded reads -------------------===//
//
// Every file the runtime writes that a later run reads (checkpoints, the
// tracker) goes through AtomicFile: the bytes go to a temporary name in the
// same directory, are fsynced, renamed over the final name, and the
// directory is fsynced. rename(2) within one directory is atomic, so a reader
// sees either the old file or the complete new one, never a torn one.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_FILEUTIL_H
#define MEGA_RUNTIME_FILEUTIL_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace mega::rt::fs {

class AtomicFile {
public:
  explicit AtomicFile(std::string path);
  ~AtomicFile(); ///< not committed: the temporary file is removed
  AtomicFile(const AtomicFile &) = delete;
  AtomicFile &operator=(const AtomicFile &) = delete;

  void write(const void *data, size_t bytes);
  /// fsync, close, rename to the final name, fsync the directory.
  void commit();

private:
  std::string path_, tmp_;
  int fd_ = -1;
};

void writeFileAtomic(const std::string &path, const std::string &data);

/// A file opened for positioned reads of known size.
class InputFile {
public:
  explicit InputFile(const std::string &path); ///< throws Error
  ~InputFile();
  InputFile(const InputFile &) = delete;
  InputFile &operator=(const InputFile &) = delete;
  uint64_t size() const { return size_; }
  /// Reads exactly `bytes` at `offset`; throws Error if the file is shorter.
  void read(uint64_t offset, void *dst, size_t bytes) const;
  const std::string &path() const { return path_; }

private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

/// Removes AtomicFile temporaries ("NAME.tmp.PID") in `dir` left by
/// processes that no longer exist (a crash mid-write). Best effort.
void removeStaleTemporaries(const std::string &dir);

std::string readFile(const std::string &path); ///< throws Error
bool exists(const std::string &path);
bool isDirectory(const std::string &path);
bool isRegularFile(const std::string &path);
/// mkdir -p; throws Error.
void makeDirectories(const std::string &path);
void fsyncDirectory(const std::string &dir);
std::string parentDirectory(const std::string &path);
std::string join(const std::string &dir, const std::string &name);

} // namespace mega::rt::fs

#endif // MEGA_RUNTIME_FILEUTIL_H

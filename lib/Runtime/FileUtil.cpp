//===- FileUtil.cpp - Crash-safe writes and bounded reads -----------------===//
#include "FileUtil.h"

#include "mega/Runtime/Backend.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace mega::rt::fs {

namespace {

std::string why() { return std::strerror(errno); }

} // namespace

std::string parentDirectory(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

std::string join(const std::string &dir, const std::string &name) {
  if (dir.empty())
    return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error("cannot create '" + tmp_ + "': " + why());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void *data, size_t bytes) {
  const char *p = static_cast<const char *>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw Error("cannot write '" + tmp_ + "': " + why());
    }
    p += n;
    bytes -= size_t(n);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0)
    throw Error("cannot fsync '" + tmp_ + "': " + why());
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    ::unlink(tmp_.c_str());
    throw Error("cannot close '" + tmp_ + "': " + why());
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::string msg =
        "cannot rename '" + tmp_ + "' to '" + path_ + "': " + why();
    ::unlink(tmp_.c_str());
    throw Error(msg);
  }
  fsyncDirectory(parentDirectory(path_));
}

void writeFileAtomic(const std::string &path, const std::string &data) {
  AtomicFile f(path);
  f.write(data.data(), data.size());
  f.commit();
}

void fsyncDirectory(const std::string &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw Error("cannot open directory '" + dir + "': " + why());
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems refuse fsync on directories (EINVAL); the rename is
  // still atomic there, so only real I/O errors count.
  if (rc != 0 && err != EINVAL && err != EROFS)
    throw Error("cannot fsync directory '" + dir + "': " + std::strerror(err));
}

InputFile::InputFile(const std::string &path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0)
    throw Error("cannot open '" + path + "': " + why());
  struct stat st;
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw Error("'" + path + "' is not a regular file");
  }
  size_ = uint64_t(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0)
    ::close(fd_);
}

void InputFile::read(uint64_t offset, void *dst, size_t bytes) const {
  if (offset > size_ || bytes > size_ - offset)
    throw Error("'" + path_ + "' is truncated");
  char *p = static_cast<char *>(dst);
  while (bytes > 0) {
    ssize_t n = ::pread(fd_, p, bytes, off_t(offset));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw Error("cannot read '" + path_ + "': " + why());
    }
    if (n == 0)
      throw Error("'" + path_ + "' is truncated");
    p += n;
    offset += uint64_t(n);
    bytes -= size_t(n);
  }
}

void removeStaleTemporaries(const std::string &dir) {
  DIR *d = ::opendir(dir.c_str());
  if (!d)
    return;
  std::vector<std::string> stale;
  while (struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || at + 5 >= name.size() ||
        name.find_first_not_of("0123456789", at + 5) != std::string::npos)
      continue;
    long pid = std::strtol(name.c_str() + at + 5, nullptr, 10);
    if (pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH)
      stale.push_back(join(dir, name));
  }
  ::closedir(d);
  for (const std::string &p : stale)
    ::unlink(p.c_str());
}

std::string readFile(const std::string &path) {
  InputFile f(path);
  std::string s(f.size(), '\0');
  f.read(0, s.data(), s.size());
  return s;
}

bool exists(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool isDirectory(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool isRegularFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void makeDirectories(const std::string &path) {
  if (path.empty() || isDirectory(path))
    return;
  std::string parent = parentDirectory(path);
  if (parent != path && parent != "." && parent != "/")
    makeDirectories(parent);
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error("cannot create directory '" + path + "': " + why());
  if (!isDirectory(path))
    throw Error("'" + path + "' exists and is not a directory");
}

} // namespace mega::rt::fs

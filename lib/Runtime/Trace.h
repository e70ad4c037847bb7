//===- Trace.h - Chrome trace-event recording
//------------------------------===//
//
// Records complete ("X") events in memory and writes them as Chrome
// trace-event JSON (viewable in Perfetto / chrome://tracing) at the end.
// pid is the rank; tids are lanes: programs, kernels, host work.
//
//===----------------------------------------------------------------------===//
#ifndef MEGA_RUNTIME_TRACE_H
#define MEGA_RUNTIME_TRACE_H

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace mega::rt {

class Tracer {
public:
  enum Lane : int { Programs = 0, Kernels = 1, Host = 2 };

  Tracer(int rank, bool kernels);
  /// Microseconds since the tracer was made.
  int64_t now() const;
  bool kernels() const { return kernels_ && !full_; }
  void complete(std::string name, const char *category, Lane lane,
                int64_t startUs, int64_t endUs, std::string args = "");
  /// Writes the JSON file (crash-safe like every runtime output).
  void write(const std::string &path) const;

private:
  struct Event {
    std::string name, args;
    const char *category;
    Lane lane;
    int64_t start, duration;
  };
  std::chrono::steady_clock::time_point origin_;
  int rank_;
  bool kernels_;
  bool full_ = false;
  std::vector<Event> events_;
};

/// Times a scope into a tracer when there is one.
class TraceScope {
public:
  TraceScope(Tracer *t, std::string name, const char *category,
             Tracer::Lane lane)
      : t_(t), name_(t ? std::move(name) : std::string()), category_(category),
        lane_(lane), start_(t ? t->now() : 0) {}
  ~TraceScope() {
    if (t_)
      t_->complete(std::move(name_), category_, lane_, start_, t_->now());
  }
  TraceScope(const TraceScope &) = delete;
  TraceScope &operator=(const TraceScope &) = delete;

private:
  Tracer *t_;
  std::string name_;
  const char *category_;
  Tracer::Lane lane_;
  int64_t start_;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_TRACE_H

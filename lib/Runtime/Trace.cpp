//===- Trace.cpp - Chrome trace-event recording
//----------------------------===//
#include "Trace.h"

#include "FileUtil.h"
#include "Json.h"

namespace mega::rt {

namespace {
/// Past this many events only program-level events are kept, so a long
/// run with --trace cannot exhaust memory (each event is ~100 bytes).
constexpr size_t kMaxEvents = 4'000'000;
} // namespace

Tracer::Tracer(int rank, bool kernels)
    : origin_(std::chrono::steady_clock::now()), rank_(rank),
      kernels_(kernels) {}

int64_t Tracer::now() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now() - origin_)
      .count();
}

void Tracer::complete(std::string name, const char *category, Lane lane,
                      int64_t startUs, int64_t endUs, std::string args) {
  if (events_.size() >= kMaxEvents) {
    full_ = true;
    if (lane == Kernels || events_.size() >= 2 * kMaxEvents)
      return;
  }
  events_.push_back({std::move(name), std::move(args), category, lane, startUs,
                     endUs - startUs});
}

void Tracer::write(const std::string &path) const {
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  std::string pid = std::to_string(rank_);
  out += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + pid +
         ",\"tid\":0,\"args\":{\"name\":\"rank " + pid + "\"}}";
  const char *laneNames[] = {"programs", "kernels", "host"};
  for (int lane = 0; lane < 3; ++lane)
    out += ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" + pid +
           ",\"tid\":" + std::to_string(lane) + ",\"args\":{\"name\":\"" +
           laneNames[lane] + "\"}}";
  for (const Event &e : events_) {
    out += ",\n{\"name\":" + json::quote(e.name) + ",\"cat\":\"" + e.category +
           "\",\"ph\":\"X\",\"pid\":" + pid +
           ",\"tid\":" + std::to_string(int(e.lane)) +
           ",\"ts\":" + std::to_string(e.start) +
           ",\"dur\":" + std::to_string(e.duration);
    if (!e.args.empty())
      out += ",\"args\":" + e.args;
    out += "}";
  }
  out += "\n]}\n";
  fs::writeFileAtomic(path, out);
}

} // namespace mega::rt

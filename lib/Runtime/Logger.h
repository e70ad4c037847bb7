//===- Logger.h - Megatron-shaped log lines, JSON lines, progress bar -----===//
#ifndef MEGA_RUNTIME_LOGGER_H
#define MEGA_RUNTIME_LOGGER_H

#include <cstdint>
#include <cstdio>
#include <string>

namespace mega::rt {

/// The figures of one log interval (Megatron averages over the interval).
struct IntervalStats {
  int64_t iteration = 0, totalIterations = 0;
  int64_t consumedSamples = 0;
  double elapsedMs = 0; ///< per iteration, averaged over the interval
  double tflops = 0;    ///< per device
  double lr = 0;
  int64_t globalBatch = 0;
  double lmLoss = 0;   ///< mean over the interval's non-skipped iterations
  double gradNorm = 0; ///< the interval's last iteration
  int64_t skipped = 0; ///< in this interval
  int64_t nan = 0;     ///< in this interval
};

class Logger {
public:
  /// `logFile` empty: no JSON lines. `progressBar`: draw one \r-updated line
  /// on stderr (only pass true when stderr is a terminal).
  Logger(const std::string &logFile, bool progressBar);
  ~Logger();
  Logger(const Logger &) = delete;
  Logger &operator=(const Logger &) = delete;

  /// Megatron's training line on stdout, and a JSON line.
  void interval(const IntervalStats &s);
  /// Megatron's validation block on stdout, and a JSON line.
  void validation(int64_t iteration, double loss);
  /// A plain line on stdout (the progress bar is cleared first).
  void info(const std::string &line);
  void progress(int64_t iteration, int64_t total, double loss, double msPerIt);
  /// Removes the progress bar.
  void finish();
  /// A quiet logger prints and writes nothing (ranks other than 0).
  void setQuiet(bool quiet) { quiet_ = quiet; }

  /// The strings themselves, for tests.
  static std::string formatInterval(const IntervalStats &s);
  static std::string jsonInterval(const IntervalStats &s);
  static std::string formatValidation(int64_t iteration, double loss);

private:
  void clearBar();
  void json(const std::string &line);
  std::FILE *file_ = nullptr;
  std::string path_;
  bool bar_;
  bool barShown_ = false;
  bool quiet_ = false;
  int64_t lastDrawUs_ = -1;
};

} // namespace mega::rt

#endif // MEGA_RUNTIME_LOGGER_H

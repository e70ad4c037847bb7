//===- Logger.cpp - Megatron-shaped log lines, JSON lines, progress bar ---===//
#include "Logger.h"

#include "Json.h"

#include "mega/Runtime/Backend.h"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

namespace mega::rt {

namespace {

std::string fmt(const char *f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string fmtInt(const char *f, int64_t v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, (long long)v);
  return buf;
}

} // namespace

Logger::Logger(const std::string &logFile, bool progressBar)
    : path_(logFile), bar_(progressBar) {
  if (!logFile.empty()) {
    file_ = std::fopen(logFile.c_str(), "w");
    if (!file_)
      throw Error("cannot open log file '" + logFile +
                  "': " + std::strerror(errno));
  }
}

Logger::~Logger() {
  finish();
  if (file_)
    std::fclose(file_);
}

std::string Logger::formatInterval(const IntervalStats &s) {
  // Megatron's training_log(), field for field.
  std::string l;
  l += " iteration " + fmtInt("%8lld", s.iteration) + "/" +
       fmtInt("%8lld", s.totalIterations) + " |";
  l += " consumed samples: " + fmtInt("%12lld", s.consumedSamples) + " |";
  l += " elapsed time per iteration (ms): " + fmt("%.1f", s.elapsedMs) + " |";
  l += " throughput per GPU (TFLOP/s/GPU): " + fmt("%.3f", s.tflops) + " |";
  l += " learning rate: " + fmt("%.6E", s.lr) + " |";
  l += " global batch size: " + fmtInt("%5lld", s.globalBatch) + " |";
  l += " lm loss: " + fmt("%.6E", s.lmLoss) + " |";
  l += " loss scale: 1.0 |";
  l += " grad norm: " + fmt("%.3f", s.gradNorm) + " |";
  l += " number of skipped iterations: " + fmtInt("%3lld", s.skipped) + " |";
  l += " number of nan iterations: " + fmtInt("%3lld", s.nan) + " |";
  return l;
}

std::string Logger::jsonInterval(const IntervalStats &s) {
  return "{\"iteration\":" + std::to_string(s.iteration) +
         ",\"consumed_samples\":" + std::to_string(s.consumedSamples) +
         ",\"elapsed_ms\":" + json::number(s.elapsedMs) +
         ",\"tflops\":" + json::number(s.tflops) +
         ",\"lr\":" + json::number(s.lr) +
         ",\"global_batch_size\":" + std::to_string(s.globalBatch) +
         ",\"lm_loss\":" + json::number(s.lmLoss) +
         ",\"grad_norm\":" + json::number(s.gradNorm) +
         ",\"skipped\":" + std::to_string(s.skipped) +
         ",\"nan\":" + std::to_string(s.nan) + "}";
}

std::string Logger::formatValidation(int64_t iteration, double loss) {
  std::string l =
      " validation loss at iteration " + std::to_string(iteration) +
      " | lm loss value: " + fmt("%.6E", loss) +
      " | lm loss PPL: " + fmt("%.6E", std::exp(std::fmin(20.0, loss))) + " | ";
  std::string dashes(l.size() + 1, '-');
  return dashes + "\n" + l + "\n" + dashes;
}

void Logger::clearBar() {
  if (barShown_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    barShown_ = false;
  }
}

void Logger::json(const std::string &line) {
  if (!file_)
    return;
  std::fputs(line.c_str(), file_);
  std::fputc('\n', file_);
  if (std::fflush(file_) != 0 || std::ferror(file_))
    throw Error("cannot write log file '" + path_ + "'");
}

void Logger::interval(const IntervalStats &s) {
  if (quiet_)
    return;
  info(formatInterval(s));
  json(jsonInterval(s));
}

void Logger::validation(int64_t iteration, double loss) {
  if (quiet_)
    return;
  info(formatValidation(iteration, loss));
  json("{\"iteration\":" + std::to_string(iteration) +
       ",\"validation_loss\":" + json::number(loss) + ",\"validation_ppl\":" +
       json::number(std::exp(std::fmin(20.0, loss))) + "}");
}

void Logger::info(const std::string &line) {
  if (quiet_)
    return;
  clearBar();
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void Logger::progress(int64_t iteration, int64_t total, double loss,
                      double msPerIt) {
  if (quiet_)
    return;
  if (!bar_ || total <= 0)
    return;
  // Redraw at most ten times a second: a terminal is slower than a small
  // model's iterations.
  int64_t nowUs = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count();
  if (iteration != total && lastDrawUs_ >= 0 && nowUs - lastDrawUs_ < 100000)
    return;
  lastDrawUs_ = nowUs;
  constexpr int kWidth = 30;
  int filled = int(double(kWidth) * double(iteration) / double(total));
  if (filled > kWidth)
    filled = kWidth;
  std::string bar(size_t(filled), '#');
  bar.append(size_t(kWidth - filled), '.');
  double etaS = msPerIt * double(total - iteration) / 1000.0;
  long long eta = etaS > 0 ? (long long)etaS : 0;
  std::fprintf(stderr,
               "\r\033[K [%s] %lld/%lld | loss %.4f | %.1f ms/it | ETA "
               "%lld:%02lld:%02lld",
               bar.c_str(), (long long)iteration, (long long)total, loss,
               msPerIt, eta / 3600, eta / 60 % 60, eta % 60);
  std::fflush(stderr);
  barShown_ = true;
}

void Logger::finish() { clearBar(); }

} // namespace mega::rt

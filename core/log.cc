#include "core/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace stateguard::log {
namespace {
std::atomic<bool> gQuiet{false};
std::mutex gMu;

void write(const char* level, std::string_view message) {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::lock_guard lock(gMu);
  std::fprintf(stderr, "%s %s %.*s\n", stamp, level, static_cast<int>(message.size()),
               message.data());
  std::fflush(stderr);
}
}  // namespace

void info(std::string_view message) {
  if (!gQuiet.load()) write("INFO", message);
}
void warn(std::string_view message) { write("WARN", message); }
void error(std::string_view message) { write("ERROR", message); }
void setQuiet(bool quiet) { gQuiet.store(quiet); }

}  // namespace stateguard::log

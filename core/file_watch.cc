#include "core/file_watch.h"

#include <sys/stat.h>

namespace stateguard {

std::string fileFingerprint(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

Poller::Poller(std::chrono::milliseconds interval, std::function<void()> check) {
  thread_ = std::thread([this, interval, check = std::move(check)] {
    const auto step = std::chrono::milliseconds(20);
    while (!stop_.load()) {
      for (auto waited = std::chrono::milliseconds(0); waited < interval && !stop_.load();
           waited += step) {
        std::this_thread::sleep_for(step);
      }
      if (!stop_.load()) check();
    }
  });
}

Poller::~Poller() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace stateguard

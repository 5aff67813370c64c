#pragma once
// Kubernetes Events for denials: posted in the background (never on the admission path),
// at most one per object and reason per interval, from a bounded queue.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "core/kube_client.h"

namespace stateguard {

/// Limits for the event recorder.
struct EventRecorderOptions {
  std::string component = "stateguard-webhook";
  std::string instance;                        ///< reportingInstance (pod name)
  std::chrono::seconds perObjectInterval{60};  ///< one event per object+reason per interval
  size_t maxQueue = 256;                       ///< events waiting to be posted; more are dropped
};

/// Posts core/v1 Events about objects; thread-safe.
class EventRecorder {
 public:
  EventRecorder(KubeClientPtr client, EventRecorderOptions options);
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  /// Queues a Warning event about `object` (the object the request was about). Returns false
  /// when it was rate-limited or the queue is full. An Event the apiserver refuses because its
  /// namespace is being deleted counts as suppressed, without a log line.
  bool warn(const json& object, const std::string& reason, const std::string& message);

  uint64_t posted() const { return posted_.load(); }
  uint64_t suppressed() const { return suppressed_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  void run();

  KubeClientPtr client_;
  EventRecorderOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, json>> queue_;  // path, Event
  std::map<std::string, std::chrono::steady_clock::time_point> lastSent_;
  bool stop_ = false;
  std::atomic<uint64_t> posted_{0}, suppressed_{0}, failed_{0};
  std::thread worker_;
};

/// The core/v1 Event for `object` (cluster-scoped objects get their events in "default").
json makeEvent(const json& object, const std::string& reason, const std::string& message,
               const EventRecorderOptions& options);

}  // namespace stateguard

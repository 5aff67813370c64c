#include "core/events.h"

#include "core/k8s.h"
#include "core/log.h"
#include "core/timeutil.h"

namespace stateguard {

json makeEvent(const json& object, const std::string& reason, const std::string& message,
               const EventRecorderOptions& options) {
  const std::string ns = k8s::namespaceOf(object);
  const std::string now = nowRfc3339();
  json involved = {{"kind", k8s::kind(object)}, {"name", k8s::name(object)}};
  if (!ns.empty()) involved["namespace"] = ns;
  for (const char* key : {"apiVersion"}) {
    if (object.contains(key) && object[key].is_string()) involved[key] = object[key];
  }
  if (auto uid = k8s::str(object, "/metadata/uid"); !uid.empty()) involved["uid"] = uid;
  // The apiserver caps an Event message at 1 KiB.
  std::string text = message.size() > 1024 ? message.substr(0, 1021) + "..." : message;
  return {{"apiVersion", "v1"},
          {"kind", "Event"},
          {"metadata",
           {{"generateName", k8s::name(object) + "."}, {"namespace", ns.empty() ? "default" : ns}}},
          {"involvedObject", involved},
          {"reason", reason},
          {"message", text},
          {"type", "Warning"},
          {"source", {{"component", options.component}}},
          {"reportingComponent", options.component},
          {"reportingInstance", options.instance},
          {"firstTimestamp", now},
          {"lastTimestamp", now},
          {"count", 1}};
}

EventRecorder::EventRecorder(KubeClientPtr client, EventRecorderOptions options)
    : client_(std::move(client)), options_(std::move(options)) {
  worker_ = std::thread([this] { run(); });
}

EventRecorder::~EventRecorder() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  client_->stop();  // aborts a post in flight
  if (worker_.joinable()) worker_.join();
}

bool EventRecorder::warn(const json& object, const std::string& reason,
                         const std::string& message) {
  json event = makeEvent(object, reason, message, options_);
  const std::string ns = event["metadata"]["namespace"];
  const std::string key = k8s::kind(object) + "/" + k8s::ref(object) + "/" + reason;
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    auto it = lastSent_.find(key);
    if ((it != lastSent_.end() && now - it->second < options_.perObjectInterval) ||
        queue_.size() >= options_.maxQueue) {
      suppressed_.fetch_add(1);
      return false;
    }
    lastSent_[key] = now;
    if (lastSent_.size() > 10000) {  // forget old keys so the map stays small
      for (auto i = lastSent_.begin(); i != lastSent_.end();) {
        i = now - i->second >= options_.perObjectInterval ? lastSent_.erase(i) : std::next(i);
      }
    }
    queue_.emplace_back("/api/v1/namespaces/" + ns + "/events", std::move(event));
  }
  cv_.notify_one();
  return true;
}

void EventRecorder::run() {
  while (true) {
    std::pair<std::string, json> item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    KubeResponse r = client_->post(item.first, item.second);
    if (r.ok()) {
      posted_.fetch_add(1);
    } else if (r.status == 403 && r.error.find("being terminated") != std::string::npos) {
      // A namespace being deleted takes no new objects: the Event has nowhere to go, and saying
      // so at every denial would only fill the log.
      suppressed_.fetch_add(1);
    } else {
      failed_.fetch_add(1);
      log::warn("could not record a Kubernetes Event (the audit log still has the decision): " +
                r.error);
    }
  }
}

}  // namespace stateguard

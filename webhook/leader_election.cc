#include "webhook/leader_election.h"

#include <ctime>

#include "core/k8s.h"
#include "core/log.h"

namespace stateguard {

std::string formatMicroTime(std::chrono::system_clock::time_point t) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(micros / 1000000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[48];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(micros % 1000000));
  return buf;
}

LeaderElector::LeaderElector(KubeClientPtr client, LeaseOptions options)
    : client_(std::move(client)), options_(std::move(options)) {}

std::string LeaderElector::path() const {
  return "/apis/coordination.k8s.io/v1/namespaces/" + options_.ns + "/leases/" + options_.name;
}

json LeaderElector::leaseFor(const std::string& rv, int transitions,
                             const std::string& acquireTime) const {
  json meta = {{"name", options_.name}, {"namespace", options_.ns}};
  if (!rv.empty()) meta["resourceVersion"] = rv;
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", meta},
          {"spec",
           {{"holderIdentity", options_.identity},
            {"leaseDurationSeconds", options_.duration.count()},
            {"acquireTime", acquireTime},
            {"renewTime", formatMicroTime(std::chrono::system_clock::now())},
            {"leaseTransitions", transitions}}}};
}

void LeaderElector::becomeLeader(std::chrono::steady_clock::time_point at) {
  if (!leading_)
    log::info("background scan: this replica (" + options_.identity +
              ") now leads, holding Lease " + options_.ns + "/" + options_.name);
  leading_ = true;
  renewedAt_ = at;
  holder_ = options_.identity;
  error_.clear();
}

bool LeaderElector::step() {
  const auto now = std::chrono::steady_clock::now();
  KubeResponse got = client_->request(path());
  std::lock_guard lock(mu_);
  auto failed = [&](const std::string& what) {
    if (!what.empty() && what != error_) log::warn("background scan: " + what);
    error_ = what;
    if (leading_ && now - renewedAt_ >= options_.duration * 2 / 3) {
      leading_ = false;
      log::warn("background scan: could not renew Lease " + options_.ns + "/" + options_.name +
                " for " + std::to_string(options_.duration.count() * 2 / 3) +
                " s; this replica stops scanning until it holds it again");
    }
    return leading_;
  };
  if (got.status == 404) {
    acquireTime_ = formatMicroTime(std::chrono::system_clock::now());
    KubeResponse made =
        client_->post("/apis/coordination.k8s.io/v1/namespaces/" + options_.ns + "/leases",
                      leaseFor("", 0, acquireTime_));
    if (made.ok()) {
      becomeLeader(now);
      return true;
    }
    if (made.status == 409) return failed("");  // another replica created it first
    return failed("cannot create Lease " + options_.ns + "/" + options_.name + ": " + made.error);
  }
  if (!got.ok())
    return failed("cannot read Lease " + options_.ns + "/" + options_.name + ": " + got.error);

  const json& spec = k8s::at(got.body, "/spec");
  const std::string holder = k8s::str(spec, "/holderIdentity");
  const std::string renewTime = k8s::str(spec, "/renewTime");
  const json& durationField = k8s::at(spec, "/leaseDurationSeconds");
  const auto duration = std::chrono::seconds(
      durationField.is_number_integer() ? durationField.get<int64_t>() : options_.duration.count());
  const json& transitionsField = k8s::at(spec, "/leaseTransitions");
  int transitions = transitionsField.is_number_integer() ? transitionsField.get<int>() : 0;
  const std::string record = holder + "\n" + renewTime;
  if (record != observed_) {
    observed_ = record;
    observedAt_ = now;
  }
  holder_ = holder;
  const bool mine = holder == options_.identity;
  const bool free = holder.empty() || now - observedAt_ > duration;
  if (!mine && !free) {
    if (leading_) log::warn("background scan: Lease taken over by " + holder);
    leading_ = false;
    error_.clear();
    return false;
  }
  if (!mine) {
    ++transitions;
    acquireTime_ = formatMicroTime(std::chrono::system_clock::now());
  } else if (acquireTime_.empty()) {
    acquireTime_ = k8s::str(spec, "/acquireTime");
  }
  KubeResponse put = client_->put(
      path(), leaseFor(k8s::str(got.body, "/metadata/resourceVersion"), transitions, acquireTime_));
  if (put.ok()) {
    observed_ = options_.identity + "\n" + k8s::str(put.body, "/spec/renewTime");
    observedAt_ = now;
    becomeLeader(now);
    return true;
  }
  if (put.status == 409) {  // another replica wrote first: it leads
    leading_ = false;
    return false;
  }
  return failed("cannot update Lease " + options_.ns + "/" + options_.name + ": " + put.error);
}

bool LeaderElector::leading() const {
  std::lock_guard lock(mu_);
  return leading_ && std::chrono::steady_clock::now() - renewedAt_ < options_.duration * 2 / 3;
}

void LeaderElector::release() {
  {
    std::lock_guard lock(mu_);
    if (!leading_) return;
    leading_ = false;
  }
  KubeResponse got = client_->request(path());
  if (!got.ok() || k8s::str(got.body, "/spec/holderIdentity") != options_.identity) return;
  json lease = got.body;
  lease["spec"]["holderIdentity"] = "";
  lease["spec"]["leaseDurationSeconds"] = 1;
  lease["spec"]["renewTime"] = formatMicroTime(std::chrono::system_clock::now());
  KubeResponse put = client_->put(path(), lease);
  if (put.ok())
    log::info("background scan: Lease " + options_.ns + "/" + options_.name + " released");
}

std::string LeaderElector::holder() const {
  std::lock_guard lock(mu_);
  return holder_;
}

std::string LeaderElector::lastError() const {
  std::lock_guard lock(mu_);
  return error_;
}

}  // namespace stateguard

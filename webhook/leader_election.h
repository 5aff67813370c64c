#pragma once
// One replica at a time: leader election on a coordination.k8s.io/v1 Lease, as Kubernetes'
// controllers do it (client-go's leaderelection). The holder renews the Lease every few seconds;
// another replica takes it over only once it has seen the same record unchanged for a whole
// leaseDurationSeconds on its own clock (never by comparing clocks across machines). Every write
// carries the resourceVersion it was based on, so of two replicas racing for the Lease the
// apiserver lets exactly one win (the other gets 409 Conflict).

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/kube_client.h"

namespace stateguard {

struct LeaseOptions {
  std::string ns;                     ///< the Lease's namespace
  std::string name;                   ///< the Lease's name
  std::string identity;               ///< this replica (the Pod's name)
  std::chrono::seconds duration{15};  ///< leaseDurationSeconds written into the Lease
};

class LeaderElector {
 public:
  LeaderElector(KubeClientPtr client, LeaseOptions options);

  /// One round: creates the Lease when there is none, renews it while this replica holds it,
  /// takes it over when its holder gave it up or stopped renewing. Returns leading().
  /// Call it every duration/3 or so.
  bool step();
  /// Whether this replica holds the Lease: its last renewal succeeded less than 2/3 of the
  /// duration ago (so it stops before another replica may take over).
  bool leading() const;
  /// Gives the Lease up (holder cleared) so another replica takes over at once; on shutdown.
  void release();
  /// The holder last seen ("" none), for logs.
  std::string holder() const;
  /// The last failure talking to the apiserver ("" after a successful round).
  std::string lastError() const;
  const LeaseOptions& options() const { return options_; }

 private:
  std::string path() const;
  json leaseFor(const std::string& rv, int transitions, const std::string& acquireTime) const;
  void becomeLeader(std::chrono::steady_clock::time_point at);

  KubeClientPtr client_;
  LeaseOptions options_;
  mutable std::mutex mu_;
  bool leading_ = false;
  std::chrono::steady_clock::time_point renewedAt_{};
  std::string holder_;
  std::string error_;
  /// The record last seen (holder and renewTime), and when it was first seen like that.
  std::string observed_;
  std::chrono::steady_clock::time_point observedAt_{};
  std::string acquireTime_;  ///< when this replica took the Lease (kept while it renews)
};

/// A Lease's time (metav1.MicroTime): RFC 3339 UTC with exactly six fractional digits.
std::string formatMicroTime(std::chrono::system_clock::time_point t);

}  // namespace stateguard

#pragma once
// Judge intent once: the cluster's own controllers carrying out what a person's request already
// set going (or what is safe by design) are not judged again. Each controller is recognised by
// its identity (the policy's `controllers`) together with the state it acts in, so no other user
// gains a way around a rule:
//  - pv/pvc-protection removing their finalizer from an object that is being deleted, changing
//    nothing else (they do so only once nothing binds or uses it);
//  - the namespace controller deleting what a namespace that is being deleted holds;
//  - the garbage collector deleting a claim whose owners (a StatefulSet, a pod) are all gone or
//    being deleted (StatefulSet claim retention, generic ephemeral volumes);
//  - the StatefulSet controller making a StatefulSet or its pod the owner of a claim, as the
//    StatefulSet's claim retention policy (Delete) says;
//  - the PV reclaimer deleting a Released PV with reclaim policy Delete (its backend is gone).

#include <optional>
#include <string>

#include "core/cluster_state.h"
#include "core/policy.h"
#include "webhook/admission.h"

namespace stateguard {

/// Why `request` is a controller finishing what was judged, for the audit log; nullopt when it
/// must be judged like any other request. May read the apiserver (state.liveView()) when the
/// cache says the state the controller acts in has not arrived yet.
std::optional<std::string> controllerExemption(const AdmissionRequest& request,
                                               const ClusterState& state,
                                               const ControllerIdentities& controllers);

}  // namespace stateguard

#pragma once
// What the cache keeps of each object: only the fields some rule reads. Applied once, as each
// list page or watch event is decoded (and to --cluster-state files, and to stateguardctl's
// cluster state), before anything is kept. A realistic Pod from a real apiserver is about 4 KiB
// of JSON, most of it managedFields, status and container details no rule looks at; the cache
// held it whole, as a JSON tree about 6 times that size (issue 15).
//
// Every kind: metadata.managedFields and the kubectl.kubernetes.io/last-applied-configuration
// annotation (a copy of the object) go. Pods keep only: metadata (name, namespace, uid, labels,
// ownerReferences without blockOwnerDeletion, deletionTimestamp), spec.volumes that name a
// claim, the containers' and initContainers' names, images and args, spec.nodeName, and
// status.phase. ObjectStore then holds each projection packed as MessagePack.
//
// tests/unit/projection_test.cc runs every rule suite with and without projection and requires
// the same verdicts and messages: a rule that starts reading a dropped field fails it.

#include <span>
#include <string>
#include <string_view>

#include "core/json_yaml.h"

namespace stateguard {

/// Trims `object` (of `kind`, as the cache keys kinds) to what the rules read. Idempotent.
void projectForCache(const std::string& kind, json& object);

/// True when projectForCache(kind, ·) drops the field at `path` (object keys from the root, no
/// array steps) whatever it holds, so a decoder may skip it without building it (the watch
/// cache's list pages, core/json_fast.h). False means "build it; projectForCache decides".
bool cacheSkipsField(const std::string& kind, std::span<const std::string_view> path);

/// Turns projection off for this process (the test that compares verdicts with and without it).
void setCacheProjection(bool enabled);

}  // namespace stateguard

#pragma once
// admission.k8s.io/v1 AdmissionReview: decoding requests (strictly, with clear
// errors) and encoding responses.

#include <string>
#include <string_view>
#include <vector>

#include "core/cluster_state.h"
#include "core/json_yaml.h"

namespace stateguard {

/// request.userInfo.
struct UserInfo {
  std::string username;
  std::string uid;
  std::vector<std::string> groups;
};

/// The parts of request that rules read.
struct AdmissionRequest {
  std::string uid;
  std::string kind;         ///< request.kind.kind, e.g. "PersistentVolume"
  std::string group;        ///< request.kind.group, "" for core
  std::string resource;     ///< request.resource.resource, e.g. "persistentvolumes"
  std::string subResource;  ///< request.subResource
  std::string name;
  std::string ns;
  std::string operation;  ///< CREATE, UPDATE, DELETE, CONNECT
  UserInfo user;
  json object;     ///< null on DELETE
  json oldObject;  ///< null on CREATE
  json options;
  bool dryRun = false;

  /// The object as it is now (oldObject on DELETE, object otherwise).
  const json& current() const;
  /// "Kind namespace/name" for messages and the audit log.
  std::string describe() const;
};

/// Largest AdmissionReview body accepted (the apiserver's own limit is 3 MiB).
inline constexpr size_t kMaxReviewBytes = 3 * 1024 * 1024;
/// Deepest JSON nesting accepted; real Kubernetes objects stay far below it.
inline constexpr size_t kMaxNestingDepth = 512;

/// Decodes an AdmissionReview body. Errors say what is wrong and where
/// ("request.uid is missing", "apiVersion must be admission.k8s.io/v1, got ...").
Result<AdmissionRequest> decodeReview(std::string_view body);

/// The answer to one request.
struct AdmissionResponse {
  bool allowed = true;
  int code = 0;  ///< HTTP-like status code for denials (403)
  std::string message;
  std::vector<std::string> warnings;
};

/// Encodes a full AdmissionReview response carrying `uid`.
std::string encodeReviewResponse(const std::string& uid, const AdmissionResponse& response);
json reviewResponseJson(const std::string& uid, const AdmissionResponse& response);

/// The admission request the apiserver would send for applying `obj`: its CREATE, or an UPDATE
/// of `existing` when that is not null. A namespaced object without a namespace is placed in
/// `defaultNamespace` ("": left without). What lint and the scans judge objects as.
AdmissionRequest applyRequest(const json& obj, ObjectPtr existing, const UserInfo& user,
                              const std::string& defaultNamespace, const std::string& uid);

}  // namespace stateguard

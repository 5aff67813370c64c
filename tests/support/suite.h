#pragma once
// Rule suites: webhook/rules/<rule-id>/suite.yaml holds the cluster state, the cases (real
// objects) and the expected verdicts. One loader builds real AdmissionReviews from them so the
// same samples test the engine in-process, the webhook binary over TLS, and stateguardctl.

#include <string>
#include <vector>

#include "core/json_yaml.h"

namespace stateguard::testing {

/// What a case expects.
struct Expectation {
  bool allowed = true;
  std::string verdict;                ///< audit verdict, "" = not checked
  std::vector<std::string> messages;  ///< substrings of the denial message
  std::vector<std::string> warnings;  ///< substrings each found in some warning
  bool noWarnings = false;
};

/// One case: an AdmissionReview and what must come back.
struct SuiteCase {
  std::string name;
  json review;  ///< the full AdmissionReview request
  json policy;  ///< policy document, null = built-in default
  Expectation expect;
};

/// One rule's suite.
struct Suite {
  std::string rule;
  std::string path;
  json state = json::array();  ///< cluster state objects
  std::vector<SuiteCase> cases;
};

/// Loads every webhook/rules/*/suite.yaml. Throws std::runtime_error with file and case on bad
/// data.
std::vector<Suite> loadSuites();
Suite loadSuite(const std::string& path);

/// Checks an AdmissionReview response against a case; returns "" or what differs.
std::string checkResponse(const SuiteCase& c, const json& reviewResponse);

/// Builds an AdmissionReview as kube-apiserver sends it.
json makeReview(const std::string& uid, const std::string& operation, const json& object,
                const json& oldObject, const json& user, bool dryRun, const json& options,
                const std::string& subResource = "", const std::string& kindOverride = "");

}  // namespace stateguard::testing

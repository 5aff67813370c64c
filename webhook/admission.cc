#include "webhook/admission.h"

#include <algorithm>

#include "core/json_fast.h"
#include "core/json_writer.h"
#include "core/k8s.h"

namespace stateguard {

const json& AdmissionRequest::current() const { return operation == "DELETE" ? oldObject : object; }

std::string AdmissionRequest::describe() const {
  // The apiserver sends a Namespace's own name as request.namespace: "Namespace gitea".
  return kind + " " + (ns.empty() || kind == "Namespace" ? name : ns + "/" + name);
}

namespace {

Result<std::string> stringField(const json& obj, const char* key, const std::string& where,
                                bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return makeError(where + "." + key + " is missing");
    return std::string();
  }
  if (!it->is_string()) return makeError(where + "." + key + " must be a string");
  return it->get<std::string>();
}

/// Moves obj[key] out (an object or null): the objects are the bulk of a review, no copy needed.
Result<json> objectField(json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return json(nullptr);
  if (!it->is_object()) return makeError(where + "." + key + " must be an object or null");
  return std::move(*it);
}

/// Deepest bracket nesting outside strings. Parsing is iterative, but copying and freeing a
/// JSON value recurse, so absurd nesting must be refused before it is parsed.
size_t nestingDepth(std::string_view body) {
  size_t depth = 0;
  size_t deepest = 0;
  bool inString = false;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (inString) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        inString = false;
      }
    } else if (c == '"') {
      inString = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

Result<AdmissionRequest> decodeReview(std::string_view body) {
  if (body.size() > kMaxReviewBytes) {
    return makeError("AdmissionReview is " + std::to_string(body.size()) + " bytes, over the " +
                     std::to_string(kMaxReviewBytes) + "-byte limit");
  }
  json doc;
  // simdjson first (twice as fast, and it bounds the depth itself); what it refuses, the depth
  // check and json::parse judge and explain.
  if (!parseJsonFast(body, doc, kMaxNestingDepth)) {
    if (size_t depth = nestingDepth(body); depth > kMaxNestingDepth) {
      return makeError("body nests " + std::to_string(depth) + " levels deep, over the limit of " +
                       std::to_string(kMaxNestingDepth));
    }
    try {
      doc = json::parse(body);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
      return makeError(std::string("body is not valid JSON: ") + e.what());
    }
  }
  if (!doc.is_object()) return makeError("body must be a JSON object (an AdmissionReview)");
  auto apiVersion = stringField(doc, "apiVersion", "AdmissionReview", true);
  if (!apiVersion.ok()) return makeError(apiVersion.error());
  if (apiVersion.value() != "admission.k8s.io/v1") {
    return makeError("apiVersion must be admission.k8s.io/v1, got \"" + apiVersion.value() +
                     "\" (set admissionReviewVersions: [v1] in the webhook configuration)");
  }
  auto kind = stringField(doc, "kind", "AdmissionReview", true);
  if (!kind.ok()) return makeError(kind.error());
  if (kind.value() != "AdmissionReview") {
    return makeError("kind must be AdmissionReview, got \"" + kind.value() + "\"");
  }
  auto reqIt = doc.find("request");
  if (reqIt == doc.end() || !reqIt->is_object())
    return makeError("request is missing or not an object");
  json& req = *reqIt;

  AdmissionRequest out;
  auto uid = stringField(req, "uid", "request", true);
  if (!uid.ok()) return makeError(uid.error());
  if (uid.value().empty()) return makeError("request.uid is empty");
  out.uid = uid.value();

  auto op = stringField(req, "operation", "request", true);
  if (!op.ok()) return makeError(op.error());
  out.operation = op.value();
  if (out.operation != "CREATE" && out.operation != "UPDATE" && out.operation != "DELETE" &&
      out.operation != "CONNECT") {
    return makeError("request.operation \"" + out.operation +
                     "\" is not one of CREATE, UPDATE, DELETE, CONNECT");
  }

  auto kindIt = req.find("kind");
  if (kindIt == req.end() || !kindIt->is_object())
    return makeError("request.kind is missing or not an object");
  auto k = stringField(*kindIt, "kind", "request.kind", true);
  if (!k.ok()) return makeError(k.error());
  out.kind = k.value();
  auto g = stringField(*kindIt, "group", "request.kind", false);
  if (!g.ok()) return makeError(g.error());
  out.group = g.value();

  if (auto resIt = req.find("resource"); resIt != req.end() && resIt->is_object()) {
    auto r = stringField(*resIt, "resource", "request.resource", false);
    if (!r.ok()) return makeError(r.error());
    out.resource = r.value();
  }
  for (auto [key, field] : {std::pair{"subResource", &out.subResource},
                            std::pair{"name", &out.name}, std::pair{"namespace", &out.ns}}) {
    auto v = stringField(req, key, "request", false);
    if (!v.ok()) return makeError(v.error());
    *field = v.value();
  }

  if (auto userIt = req.find("userInfo"); userIt != req.end() && !userIt->is_null()) {
    if (!userIt->is_object()) return makeError("request.userInfo must be an object");
    auto u = stringField(*userIt, "username", "request.userInfo", false);
    if (!u.ok()) return makeError(u.error());
    out.user.username = u.value();
    auto uu = stringField(*userIt, "uid", "request.userInfo", false);
    if (!uu.ok()) return makeError(uu.error());
    out.user.uid = uu.value();
    if (auto gIt = userIt->find("groups"); gIt != userIt->end() && !gIt->is_null()) {
      if (!gIt->is_array()) return makeError("request.userInfo.groups must be a list of strings");
      for (const auto& group : *gIt) {
        if (!group.is_string())
          return makeError("request.userInfo.groups must be a list of strings");
        out.user.groups.push_back(group.get<std::string>());
      }
    }
  }

  for (auto [key, field] :
       {std::pair{"object", &out.object}, std::pair{"oldObject", &out.oldObject},
        std::pair{"options", &out.options}}) {
    auto v = objectField(req, key, "request");
    if (!v.ok()) return makeError(v.error());
    *field = std::move(v).value();
  }
  if (auto dIt = req.find("dryRun"); dIt != req.end() && !dIt->is_null()) {
    if (!dIt->is_boolean()) return makeError("request.dryRun must be true or false");
    out.dryRun = dIt->get<bool>();
  }
  if (out.operation == "DELETE" && out.oldObject.is_null()) {
    // The apiserver always sends oldObject on DELETE; without it nothing can be judged.
    return makeError("request.oldObject is missing on a DELETE");
  }
  if ((out.operation == "CREATE" || out.operation == "UPDATE") && out.object.is_null()) {
    return makeError("request.object is missing on a " + out.operation);
  }
  if (out.operation == "UPDATE" && out.oldObject.is_null()) {
    return makeError("request.oldObject is missing on an UPDATE");
  }
  if (out.name.empty()) {  // CREATE with generateName: the name is not chosen yet
    out.name = k8s::name(out.current());
    if (out.name.empty()) out.name = k8s::str(out.current(), "/metadata/generateName");
  }
  return out;
}

json reviewResponseJson(const std::string& uid, const AdmissionResponse& response) {
  json resp = {{"uid", uid}, {"allowed", response.allowed}};
  if (!response.allowed) {
    resp["status"] = {{"code", response.code == 0 ? 403 : response.code},
                      {"reason", "Forbidden"},
                      {"message", response.message}};
  }
  if (!response.warnings.empty()) resp["warnings"] = response.warnings;
  return {{"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}, {"response", resp}};
}

std::string encodeReviewResponse(const std::string& uid, const AdmissionResponse& response) {
  // Hand-written for speed; the same bytes as reviewResponseJson(...).dump() (keys in the sorted
  // order nlohmann's objects keep), which the tests check.
  std::string out;
  out.reserve(128 + uid.size() + response.message.size() + 128 * response.warnings.size());
  out += R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"allowed":)";
  out += response.allowed ? "true" : "false";
  if (!response.allowed) {
    out += R"(,"status":{"code":)";
    out += std::to_string(response.code == 0 ? 403 : response.code);
    out += R"(,"message":)";
    appendJsonString(out, response.message);
    out += R"(,"reason":"Forbidden"})";
  }
  out += R"(,"uid":)";
  appendJsonString(out, uid);
  if (!response.warnings.empty()) {
    out += R"(,"warnings":[)";
    for (size_t i = 0; i < response.warnings.size(); ++i) {
      if (i) out.push_back(',');
      appendJsonString(out, response.warnings[i]);
    }
    out.push_back(']');
  }
  out += "}}";
  return out;
}

AdmissionRequest applyRequest(const json& obj, ObjectPtr existing, const UserInfo& user,
                              const std::string& defaultNamespace, const std::string& uid) {
  AdmissionRequest r;
  r.uid = uid;
  r.kind = k8s::kind(obj);
  const std::string apiVersion = k8s::str(obj, "/apiVersion");
  auto slash = apiVersion.find('/');
  r.group = slash == std::string::npos ? "" : apiVersion.substr(0, slash);
  r.name = k8s::name(obj);
  r.user = user;
  r.object = obj;
  const bool clusterScoped = r.kind == "Namespace" || r.kind == "PersistentVolume" ||
                             r.kind == "StorageClass" || r.kind == "ValidatingWebhookConfiguration";
  if (!clusterScoped) {
    r.ns = k8s::namespaceOf(obj).empty() ? defaultNamespace : k8s::namespaceOf(obj);
    if (k8s::namespaceOf(obj).empty() && !r.ns.empty()) r.object["metadata"]["namespace"] = r.ns;
  }
  if (existing) {
    r.operation = "UPDATE";
    r.oldObject = *existing;
  } else {
    r.operation = "CREATE";
  }
  return r;
}

}  // namespace stateguard

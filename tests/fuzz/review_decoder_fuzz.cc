// libFuzzer target: AdmissionReview bytes as the webhook receives them. Whatever decodes is
// judged by the full engine (every rule) against the example cluster state and the response is
// encoded, so the rules are fuzzed along with the decoder.
//
// Invariants checked besides "no crash, leak or sanitizer report":
//  - a rejected body gets a Status response as rejectedReview() builds it (the
//    error text must serialise, whatever bytes the body held);
//  - a body over kMaxReviewBytes never decodes;
//  - a decoded request has a non-empty uid and a known operation;
//  - the encoded response is valid JSON naming the same uid, and a denial carries code 403 and
//    a message;
//  - the audit record serialises (as AuditLog writes it).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/audit.h"
#include "core/cluster_state.h"
#include "core/json_fast.h"
#include "core/log.h"
#include "core/policy.h"
#include "core/timeutil.h"
#include "webhook/admission.h"
#include "webhook/engine.h"
#include "webhook/registry.h"
#include "webhook/server.h"

namespace {

using namespace stateguard;

struct Fixture {
  ObjectStorePtr store;
  Policy enforcing;  ///< the built-in default
  Policy warning;    ///< every rule in warn mode: exercises the warning paths
  Engine engine{allRules()};
};

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "review_decoder_fuzz: %s\n", message.c_str());
  std::abort();
}

const Fixture& fixture() {
  static const Fixture* const kFixture = [] {
    auto* f = new Fixture();
    const std::string path = std::string(STATEGUARD_SOURCE_DIR) + "/examples/cluster-state.yaml";
    auto store = loadClusterStateFile(path);
    if (!store.ok()) die("cannot load " + path + ": " + store.error());
    f->store = store.value();
    f->enforcing = defaultPolicy(ruleDefaults());
    f->warning = f->enforcing;
    for (auto& [id, config] : f->warning.rules) config.mode = Mode::Warn;
    return f;
  }();
  return *kFixture;
}

void check(bool ok, const char* what) {
  if (!ok) die(std::string("invariant violated: ") + what);
}

void judge(const AdmissionRequest& request, const Policy& policy) {
  const Fixture& f = fixture();
  Decision decision = f.engine.review(request, *f.store, policy, Clock::now());
  const std::string encoded = encodeReviewResponse(request.uid, decision.response);
  json parsed = json::parse(encoded, nullptr, /*allow_exceptions=*/false);
  check(!parsed.is_discarded(), "the encoded response is not valid JSON");
  const json& response = parsed["response"];
  check(response.value("uid", "") == request.uid, "the response does not carry the request uid");
  check(response.value("allowed", true) == decision.response.allowed,
        "response.allowed differs from the decision");
  if (!decision.response.allowed) {
    check(response["status"].value("code", 0) == 403, "a denial is not code 403");
    check(!decision.response.message.empty(), "a denial has no message");
  }
  check(encoded == reviewResponseJson(request.uid, decision.response)
                       .dump(-1, ' ', false, json::error_handler_t::replace),
        "the hand-written response differs from the json one");
  const std::string time = "2026-11-21T10:00:00.000Z";
  const std::string audit = auditLine(request, decision, time);
  check(audit == auditLine(auditRecord(request, decision, time)),
        "the hand-written audit line differs from the json one");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log::setQuiet(true);
  fixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  // The fast reader must agree with json::parse on everything it accepts.
  if (size <= kMaxReviewBytes) {
    json fast;
    if (parseJsonFast(body, fast, kMaxNestingDepth)) {
      json slow = json::parse(body, nullptr, /*allow_exceptions=*/false);
      check(!slow.is_discarded(), "simdjson accepted what json::parse refuses");
      check(fast == slow, "simdjson and json::parse read different documents");
    }
  }
  auto request = decodeReview(body);
  if (!request.ok()) {
    check(!request.error().empty(), "a decode error without a message");
    // What the server answers (the same function).
    const auto [code, status] = rejectedReview(size, request.error());
    check(code == 400 || code == 413, "a refused review answered neither 400 nor 413");
    check(!status.empty(), "empty Status body");
    return 0;
  }
  check(size <= kMaxReviewBytes, "a body over kMaxReviewBytes decoded");
  const AdmissionRequest& r = request.value();
  check(!r.uid.empty(), "a decoded request has an empty uid");
  check(r.operation == "CREATE" || r.operation == "UPDATE" || r.operation == "DELETE" ||
            r.operation == "CONNECT",
        "a decoded request has an unknown operation");
  const Fixture& f = fixture();
  judge(r, f.enforcing);
  judge(r, f.warning);
  return 0;
}

// review-path-bench: the webhook's work per AdmissionReview, without HTTP or TLS, timed phase by
// phase on one thread: decode the review, judge it, build the audit line, encode the response.
// It shows where the CPU per request goes (bench/RESULTS.md); the side-by-side throughput against
// nginx is bench/run-bench.sh.
//
// usage: review-path-bench CLUSTER_STATE REVIEW.json [ITERATIONS [POLICY]]

#include <chrono>
#include <cstdio>
#include <iostream>

#include "core/audit.h"
#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "core/policy.h"
#include "webhook/admission.h"
#include "webhook/engine.h"
#include "webhook/registry.h"

using namespace stateguard;
using Steady = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: review-path-bench CLUSTER_STATE REVIEW.json [ITERATIONS [POLICY]]\n";
    return 2;
  }
  auto state = loadClusterStateFile(argv[1]);
  auto body = readFile(argv[2]);
  if (!state.ok() || !body.ok()) {
    std::cerr << (state.ok() ? body.error() : state.error()) << "\n";
    return 2;
  }
  const long n = argc > 3 ? std::atol(argv[3]) : 200000;
  Engine engine(allRules());
  Policy policy = defaultPolicy(ruleDefaults());
  if (argc > 4) {
    auto text = readFile(argv[4]);
    auto parsed = text.ok() ? parsePolicy(text.value(), argv[4], ruleDefaults())
                            : Result<Policy>(makeError(text.error()));
    if (!parsed.ok()) {
      std::cerr << parsed.error() << "\n";
      return 2;
    }
    policy = parsed.value();
  }
  double decodeNs = 0, judgeNs = 0, auditNs = 0, encodeNs = 0;
  size_t bytes = 0;
  for (long i = 0; i < n; ++i) {
    auto t0 = Steady::now();
    auto request = decodeReview(body.value());
    auto t1 = Steady::now();
    Decision d = engine.review(request.value(), *state.value(), policy, Clock::now());
    auto t2 = Steady::now();
    std::string line = auditLine(request.value(), d, nowRfc3339());
    auto t3 = Steady::now();
    std::string out = encodeReviewResponse(request->uid, d.response);
    auto t4 = Steady::now();
    bytes += line.size() + out.size();
    decodeNs += std::chrono::duration<double, std::nano>(t1 - t0).count();
    judgeNs += std::chrono::duration<double, std::nano>(t2 - t1).count();
    auditNs += std::chrono::duration<double, std::nano>(t3 - t2).count();
    encodeNs += std::chrono::duration<double, std::nano>(t4 - t3).count();
  }
  const double total = decodeNs + judgeNs + auditNs + encodeNs;
  const double per = static_cast<double>(n) * 1000;  // ns sums -> us per review
  std::printf("review-path-bench: %ld reviews of %zu bytes (%zu output bytes each)\n", n,
              body.value().size(), bytes / static_cast<size_t>(n));
  std::printf(
      "  decode  %7.2f us\n  judge   %7.2f us\n  audit   %7.2f us (line only, no write)\n"
      "  encode  %7.2f us\n  total   %7.2f us per review\n",
      decodeNs / per, judgeNs / per, auditNs / per, encodeNs / per, total / per);
  return 0;
}

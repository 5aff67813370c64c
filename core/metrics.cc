#include "core/metrics.h"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace stateguard {
namespace {

/// Whole numbers in full (a Unix time or a large counter, not 1.7e+09), others as usual.
std::string formatValue(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    return std::to_string(static_cast<int64_t>(v));
  }
  std::ostringstream out;
  out << v;
  return out.str();
}
}  // namespace

std::string escapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

void Metrics::countDecision(const std::string& rule, const std::string& verdict,
                            const std::string& operation) {
  const std::tuple<std::string_view, std::string_view, std::string_view> key{rule, verdict,
                                                                             operation};
  std::lock_guard lock(mu_);
  auto it = decisions_.find(key);
  if (it == decisions_.end())
    it = decisions_.emplace(std::tuple(rule, verdict, operation), 0).first;
  ++it->second;
}

void Metrics::countRejected(int httpStatus) {
  std::lock_guard lock(mu_);
  ++rejected_[httpStatus];
}

void Metrics::observeLatency(double seconds) {
  // The count first and render() reads it last (sequentially consistent), so a scrape never
  // sees a bucket above the +Inf count.
  latencyCount_.fetch_add(1);
  latencySumNanos_.fetch_add(static_cast<uint64_t>(seconds * 1e9));
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) bucketCounts_[i].fetch_add(1);
  }
}

void Metrics::addGauge(std::string name, std::string help, std::function<double()> read,
                       std::string type) {
  std::lock_guard lock(mu_);
  gauges_.push_back(Gauge{std::move(name), std::move(help), std::move(type), std::move(read)});
}

void Metrics::addCounter(std::string name, std::string help, std::function<uint64_t()> read) {
  addGauge(
      std::move(name), std::move(help),
      [read = std::move(read)] { return static_cast<double>(read()); }, "counter");
}

void Metrics::addSection(std::function<std::string()> render) {
  std::lock_guard lock(mu_);
  sections_.push_back(std::move(render));
}

std::string Metrics::render() const {
  std::ostringstream out;
  std::lock_guard lock(mu_);
  out << "# HELP stateguard_admission_requests_total Admission decisions by rule, verdict and "
         "operation.\n# TYPE stateguard_admission_requests_total counter\n";
  for (const auto& [key, count] : decisions_) {
    const auto& [rule, verdict, operation] = key;
    out << "stateguard_admission_requests_total{rule=\"" << escapeLabel(rule) << "\",verdict=\""
        << escapeLabel(verdict) << "\",operation=\"" << escapeLabel(operation) << "\"} " << count
        << "\n";
  }
  out << "# HELP stateguard_admission_rejected_total Requests refused before review (bad input), "
         "by "
         "HTTP status.\n# TYPE stateguard_admission_rejected_total counter\n";
  for (const auto& [status, count] : rejected_) {
    out << "stateguard_admission_rejected_total{code=\"" << status << "\"} " << count << "\n";
  }
  out << "# HELP stateguard_admission_duration_seconds Time to review one AdmissionReview.\n"
         "# TYPE stateguard_admission_duration_seconds histogram\n";
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    out << "stateguard_admission_duration_seconds_bucket{le=\"" << kBuckets[i] << "\"} "
        << bucketCounts_[i].load() << "\n";
  }
  const uint64_t count = latencyCount_.load();
  out << "stateguard_admission_duration_seconds_bucket{le=\"+Inf\"} " << count << "\n"
      << "stateguard_admission_duration_seconds_sum "
      << static_cast<double>(latencySumNanos_.load()) / 1e9 << "\n"
      << "stateguard_admission_duration_seconds_count " << count << "\n";
  for (const auto& g : gauges_) {
    out << "# HELP " << g.name << " " << g.help << "\n# TYPE " << g.name << " " << g.type << "\n"
        << g.name << " " << formatValue(g.read()) << "\n";
  }
  for (const auto& section : sections_) out << section();
  return out.str();
}

}  // namespace stateguard

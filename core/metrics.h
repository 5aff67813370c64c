#pragma once
// Prometheus text-format metrics: labelled counters, one latency histogram, gauges.

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace stateguard {

/// A label value escaped for the Prometheus text format (backslash, quote, newline).
std::string escapeLabel(const std::string& value);

/// Admission metrics. Thread-safe; render() produces the /metrics body.
class Metrics {
 public:
  static constexpr std::array<double, 12> kBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                      0.01,   0.025,   0.05,   0.1,   0.5,    1.0};

  /// One admission decision per rule that fired (rule "" = nothing fired).
  void countDecision(const std::string& rule, const std::string& verdict,
                     const std::string& operation);
  /// A request answered with an HTTP error before any rule ran (bad input).
  void countRejected(int httpStatus);
  void observeLatency(double seconds);
  /// A value read at render time (readiness, policy reloads); `type` is "gauge" or "counter".
  void addGauge(std::string name, std::string help, std::function<double()> read,
                std::string type = "gauge");
  /// A counter kept elsewhere (reloads, events), read at render time.
  void addCounter(std::string name, std::string help, std::function<uint64_t()> read);
  /// Whole metric families with labels, rendered elsewhere (HELP, TYPE and samples), appended.
  void addSection(std::function<std::string()> render);

  std::string render() const;

 private:
  mutable std::mutex mu_;
  /// Orders (rule, verdict, operation) keys held as strings or string_views alike, so counting
  /// looks a key up without building strings.
  struct KeyLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return views(a) < views(b);
    }
    template <class T>
    static std::tuple<std::string_view, std::string_view, std::string_view> views(const T& t) {
      return {std::get<0>(t), std::get<1>(t), std::get<2>(t)};
    }
  };
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t, KeyLess> decisions_;
  std::map<int, uint64_t> rejected_;
  // The histogram is lock-free: every request observes, and the workers must not queue on it.
  std::array<std::atomic<uint64_t>, kBuckets.size()> bucketCounts_{};
  std::atomic<uint64_t> latencyCount_{0};
  std::atomic<uint64_t> latencySumNanos_{0};
  struct Gauge {
    std::string name, help, type;
    std::function<double()> read;
  };
  std::vector<Gauge> gauges_;
  std::vector<std::function<std::string()>> sections_;
};

}  // namespace stateguard

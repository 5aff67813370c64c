// The audit log: lines from many threads never interleave and none is lost; written before
// writeLine() returns without a flush interval, within the interval (or at shutdown) with one.

#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <thread>

#include "core/audit.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> lines(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream ss(readText(path));
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

/// Eight threads, 2,000 lines each, of different lengths (some longer than a page).
void hammer(AuditLog& log) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&log, t] {
      for (int i = 0; i < 2000; ++i) {
        log.write(json{{"thread", t}, {"i", i}, {"pad", std::string((i * 37) % 5000, 'x')}});
      }
    });
  }
  for (auto& th : threads) th.join();
}

/// Every line parses on its own, and every (thread, i) is there once.
void expectAllWhole(const std::string& path, size_t extra) {
  std::set<std::pair<int, int>> seen;
  const auto all = lines(path);
  for (const auto& l : all) {
    json j = json::parse(l, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "interleaved or torn line: " << l.substr(0, 200);
    if (j.contains("thread")) seen.insert({j["thread"].get<int>(), j["i"].get<int>()});
  }
  EXPECT_EQ(seen.size(), 16000u);
  EXPECT_EQ(all.size(), 16000u + extra);
}

TEST(AuditLog, WithoutIntervalEachLineIsWrittenBeforeWriteReturns) {
  const std::string dir = makeTempDir("sg-audit");
  const std::string path = dir + "/a.log";
  {
    auto log = AuditLog::open(path);
    ASSERT_TRUE(log.ok()) << log.error();
    log.value()->write(json{{"n", 1}});
    EXPECT_EQ(lines(path), std::vector<std::string>{R"({"n":1})"});
    hammer(*log.value());
    expectAllWhole(path, 1);  // all written while the log is still open
  }
  removeTree(dir);
}

TEST(AuditLog, WithIntervalLinesArriveWithinItAndShutdownWritesTheRest) {
  const std::string dir = makeTempDir("sg-audit");
  const std::string path = dir + "/b.log";
  {
    auto log = AuditLog::open(path, 50ms);
    ASSERT_TRUE(log.ok()) << log.error();
    log.value()->write(json{{"n", 1}});
    // Batched: the line waits up to the interval, then arrives without any further call.
    bool arrived = false;
    for (int i = 0; i < 200 && !arrived; ++i) {
      arrived = lines(path).size() == 1;
      if (!arrived) std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(arrived) << "the flusher did not write a pending line";
    hammer(*log.value());
    log.value()->write(json{{"n", 2}});
  }  // closing writes everything still pending
  expectAllWhole(path, 2);
  EXPECT_EQ(lines(path).back(), R"({"n":2})");
  removeTree(dir);
}

TEST(AuditLog, UnwritableDestinationIsAClearError) {
  auto log = AuditLog::open("/nonexistent-dir/audit.log");
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.error().find("cannot open /nonexistent-dir/audit.log for appending"),
            std::string::npos)
      << log.error();
}

}  // namespace
}  // namespace stateguard::testing

// The audit log: lines from many threads never interleave and none is lost; written before
// writeLine() returns in the blocking modes, within the interval (or at shutdown) in batch mode.
// Under faults (issue 13): a full disk never leaves a torn line and every lost line is counted;
// a destination nobody reads holds a caller no longer than the write timeout and memory no more
// than the queue bound; a rotated (renamed or deleted) file is opened again at its path.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
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
    AuditOptions options;
    options.mode = AuditMode::kBatch;
    options.flushInterval = 50ms;
    options.maxQueueBytes = 256 << 20;  // eight threads outrun the disk: nothing may be dropped
    auto log = AuditLog::open(path, options);
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

/// A 256 KiB tmpfs: a real filesystem that fills up. Empty when mounting is not permitted.
class SmallFilesystem {
 public:
  SmallFilesystem() {
    dir_ = makeTempDir("sg-audit-full");
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=256k") == 0) mounted_ = true;
  }
  ~SmallFilesystem() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    removeTree(dir_);
  }
  bool mounted() const { return mounted_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

/// Writes lines until `n` were attempted; returns how many write() reported as recorded.
size_t writeMany(AuditLog& log, size_t n, size_t pad) {
  size_t ok = 0;
  for (size_t i = 0; i < n; ++i) {
    ok += log.write(json{{"i", i}, {"message", "stateguard refused this " + std::string(pad, 'x')}})
              ? 1
              : 0;
  }
  return ok;
}

TEST(AuditLogFaults, FullDiskLosesWholeLinesOnlyAndCountsEveryOne) {
  SmallFilesystem fs;
  if (!fs.mounted())
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): full-disk test skipped";
  for (AuditMode mode : {AuditMode::kBlocking, AuditMode::kBatch}) {
    SCOPED_TRACE(auditModeName(mode));
    const std::string path = fs.dir() + "/audit-" + auditModeName(mode) + ".log";
    constexpr size_t kLines = 600;  // about 600 KiB: more than the filesystem holds
    size_t reported = 0;
    {
      AuditOptions options;
      options.mode = mode;
      options.flushInterval = 1ms;
      auto log = AuditLog::open(path, options);
      ASSERT_TRUE(log.ok()) << log.error();
      reported = writeMany(*log.value(), kLines, 1000);
      log.value().reset();  // writes what is pending: every line is written or counted lost
    }
    const auto all = lines(path);
    ASSERT_FALSE(all.empty());
    ASSERT_LT(all.size(), kLines) << "the filesystem did not fill up";
    for (const auto& l : all) {
      json j = json::parse(l, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << "a torn line is in the log: " << l.substr(0, 120);
    }
    // The file ends with a newline: nothing half-written.
    const std::string text = readText(path);
    EXPECT_EQ(text.back(), '\n');
    if (mode == AuditMode::kBlocking) {
      // Each caller learnt whether its own line was recorded.
      EXPECT_EQ(reported, all.size());
    }
    ::unlink(path.c_str());  // room for the next mode
  }
}

TEST(AuditLogFaults, FullDiskIsCountedAndTheLogRecoversWhenSpaceReturns) {
  SmallFilesystem fs;
  if (!fs.mounted())
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): full-disk test skipped";
  const std::string path = fs.dir() + "/audit.log";
  const std::string filler = fs.dir() + "/filler";
  writeText(filler, std::string(240 * 1024, 'f'));  // almost full
  AuditOptions options;
  options.mode = AuditMode::kBlocking;
  auto log = AuditLog::open(path, options);
  ASSERT_TRUE(log.ok()) << log.error();
  const size_t recorded = writeMany(*log.value(), 60, 500);
  AuditStats stats = log.value()->stats();
  EXPECT_LT(recorded, 60u);
  EXPECT_EQ(stats.linesWritten, recorded);
  EXPECT_EQ(stats.linesWritten + stats.linesDropped, 60u) << "a lost line was not counted";
  EXPECT_GT(stats.writeFailures, 0u);
  EXPECT_NE(log.value()->lastError().find("No space left on device"), std::string::npos)
      << log.value()->lastError();
  EXPECT_EQ(lines(path).size(), recorded);
  ::unlink(filler.c_str());
  EXPECT_TRUE(log.value()->write(json{{"after", "space freed"}}));
  EXPECT_EQ(lines(path).back(), R"({"after":"space freed"})");
}

/// A FIFO that is open for reading (so writers may open it) but never read.
struct StalledReader {
  std::string dir = makeTempDir("sg-audit-fifo");
  std::string path = dir + "/stdout";
  int fd = -1;
  StalledReader() {
    ::mkfifo(path.c_str(), 0600);
    fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
  }
  ~StalledReader() {
    if (fd >= 0) ::close(fd);
    removeTree(dir);
  }
};

TEST(AuditLogFaults, StalledDestinationHoldsNoCallerPastTheTimeoutAndNoMemoryPastTheBound) {
  std::signal(SIGPIPE, SIG_IGN);  // as the binaries do: a reader that goes away is EPIPE
  {
    StalledReader reader;
    ASSERT_GE(reader.fd, 0);
    AuditOptions options;
    options.mode = AuditMode::kBatch;
    options.flushInterval = 1ms;
    options.maxQueueBytes = 256 * 1024;
    options.shutdownWait = 300ms;
    auto log = AuditLog::open(reader.path, options);
    ASSERT_TRUE(log.ok()) << log.error();
    const auto started = std::chrono::steady_clock::now();
    const size_t accepted = writeMany(*log.value(), 2000, 500);  // 1 MiB: the pipe takes 64 KiB
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s) << "batch mode made callers wait";
    const AuditStats stats = log.value()->stats();
    EXPECT_LE(stats.queuedBytes, options.maxQueueBytes);
    EXPECT_GT(stats.linesDropped, 0u);
    EXPECT_EQ(accepted + stats.linesDropped, 2000u);
  }  // the destructor gives up on the stalled pipe after a few seconds
  {
    StalledReader reader;
    AuditOptions options;
    options.mode = AuditMode::kBlocking;
    options.writeTimeout = 200ms;
    options.shutdownWait = 300ms;
    auto log = AuditLog::open(reader.path, options);
    ASSERT_TRUE(log.ok()) << log.error();
    // Fill the pipe through a second writer, so the log's first write blocks.
    const int filler = ::open(reader.path.c_str(), O_WRONLY | O_NONBLOCK);
    ASSERT_GE(filler, 0);
    const std::string block(4096, 'f');
    while (::write(filler, block.data(), block.size()) > 0) {
    }
    ::close(filler);
    const auto started = std::chrono::steady_clock::now();
    EXPECT_FALSE(log.value()->write(json{{"stalled", true}}));
    const auto waited = std::chrono::steady_clock::now() - started;
    EXPECT_GE(waited, 150ms);
    EXPECT_LT(waited, 1500ms) << "a caller waited past the write timeout";
    EXPECT_GT(log.value()->stats().waitTimeouts, 0u);
  }
}

TEST(AuditLogFaults, RotatedFileIsOpenedAgainAtItsPath) {
  const std::string dir = makeTempDir("sg-audit-rotate");
  const std::string path = dir + "/audit.log";
  AuditOptions options;
  options.reopenCheck = 50ms;
  auto log = AuditLog::open(path, options);
  ASSERT_TRUE(log.ok()) << log.error();
  ASSERT_TRUE(log.value()->write(json{{"n", 1}}));
  // logrotate without copytruncate: rename, and the writer must move to a new file.
  ASSERT_EQ(::rename(path.c_str(), (path + ".1").c_str()), 0);
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(log.value()->write(json{{"n", 2}}));
  EXPECT_EQ(lines(path + ".1"), std::vector<std::string>{R"({"n":1})"});
  EXPECT_EQ(lines(path), std::vector<std::string>{R"({"n":2})"});
  // Deleted: created again.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(log.value()->write(json{{"n", 3}}));
  EXPECT_EQ(lines(path), std::vector<std::string>{R"({"n":3})"});
  // Asked (SIGHUP): at once, without waiting for the periodic check.
  AuditOptions slow;
  slow.reopenCheck = 1h;
  auto asked = AuditLog::open(dir + "/b.log", slow);
  ASSERT_TRUE(asked.ok());
  ASSERT_TRUE(asked.value()->write(json{{"n", 1}}));
  ASSERT_EQ(::rename((dir + "/b.log").c_str(), (dir + "/b.log.1").c_str()), 0);
  asked.value()->reopen();
  ASSERT_TRUE(asked.value()->write(json{{"n", 2}}));
  EXPECT_EQ(lines(dir + "/b.log"), std::vector<std::string>{R"({"n":2})"});
  EXPECT_EQ(asked.value()->stats().reopens, 1u);
  EXPECT_EQ(log.value()->stats().reopens, 2u);
  log.value().reset();
  asked.value().reset();
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing

// The real webhook's audit trail under faults (issue 13): a full disk, a stdout nobody reads,
// and a log rotation. Each through the binary as it runs in a pod.
//  - batch (the default): decisions go on, every lost line is counted in the metrics and
//    logged, and the file never holds a torn line;
//  - blocking-strict: what would have been allowed is refused while it cannot be recorded, a
//    denial stays a denial, and the webhook admits again once space returns;
//  - blocking, with an audit destination that stalls: answers come within the write timeout and
//    /healthz at once;
//  - SIGHUP after a rename (logrotate) moves the log to a new file at its path.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/json_yaml.h"
#include "tests/support/process.h"
#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

using namespace std::chrono_literals;

/// A review no rule refuses: creating a ConfigMap.
std::string allowedReview(const std::string& uid) {
  json review = json::parse(readText(sourcePath("examples/reviews/delete-bound-pv.json")));
  review["request"]["uid"] = uid;
  review["request"]["operation"] = "CREATE";
  review["request"]["kind"] = {{"group", ""}, {"version", "v1"}, {"kind", "ConfigMap"}};
  review["request"]["resource"] = {{"group", ""}, {"version", "v1"}, {"resource", "configmaps"}};
  review["request"]["oldObject"] = nullptr;
  review["request"]["name"] = "settings";
  review["request"]["namespace"] = "default";
  review["request"]["object"] = {{"apiVersion", "v1"},
                                 {"kind", "ConfigMap"},
                                 {"metadata", {{"name", "settings"}, {"namespace", "default"}}}};
  return review.dump();
}

double metric(const WebhookProcess& webhook, const std::string& name) {
  auto [status, text] = webhook.get("/metrics");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

json responseOf(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  return j.is_discarded() ? json() : j.value("response", json());
}

/// A 64 KiB tmpfs, nearly filled; empty dir() when mounting is not permitted.
class FullFilesystem {
 public:
  FullFilesystem() {
    dir_ = makeTempDir("sg-audit-disk");
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") != 0) return;
    mounted_ = true;
  }
  ~FullFilesystem() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    removeTree(dir_);
  }
  bool mounted() const { return mounted_; }
  std::string dir() const { return dir_; }
  /// Leaves about `room` bytes free.
  void fill(size_t room) { writeText(dir_ + "/filler", std::string(64 * 1024 - room, 'f')); }
  void free() { ::unlink((dir_ + "/filler").c_str()); }

 private:
  std::string dir_;
  bool mounted_ = false;
};

class AuditFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::signal(SIGPIPE, SIG_IGN);
    dir_ = makeTempDir("sg-audit-faults");
    certs_ = makeDevCerts(dir_ + "/certs");
  }
  void TearDown() override { removeTree(dir_); }
  std::unique_ptr<WebhookProcess> start(std::vector<std::string> extra) {
    auto w = std::make_unique<WebhookProcess>(
        dir_, certs_,
        std::vector<std::string>{"--cluster-state", sourcePath("examples/cluster-state.yaml")},
        std::move(extra));
    EXPECT_TRUE(w->started()) << w->process().stderrText();
    return w;
  }
  std::string dir_;
  DevCerts certs_;
};

/// Every line of the file parses on its own, and the file ends with a newline.
void expectNoTornLine(const std::string& path) {
  const std::string text = readText(path);
  if (text.empty()) return;
  EXPECT_EQ(text.back(), '\n') << "the audit log ends in a torn line";
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    EXPECT_FALSE(json::parse(line, nullptr, false).is_discarded())
        << "torn or glued line in the audit log: " << line.substr(0, 200);
  }
}

TEST_F(AuditFaultsTest, BatchModeOnAFullDiskCountsAndLogsEveryLostLine) {
  FullFilesystem fs;
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): skipped";
  fs.fill(8 * 1024);
  const std::string path = fs.dir() + "/audit.log";
  auto webhook = start({"--audit-log", path, "--audit-mode", "batch"});
  ASSERT_TRUE(webhook->started());
  constexpr int kReviews = 60;
  int allowed = 0;
  for (int i = 0; i < kReviews; ++i) {
    auto [status, body] = webhook->post(allowedReview("uid-" + std::to_string(i)));
    ASSERT_EQ(status, 200) << body;
    allowed += responseOf(body).value("allowed", false) ? 1 : 0;
  }
  EXPECT_EQ(allowed, kReviews) << "batch mode: decisions go on while the disk is full";
  std::this_thread::sleep_for(300ms);
  const double written = metric(*webhook, "stateguard_audit_lines_total");
  const double dropped = metric(*webhook, "stateguard_audit_lines_dropped_total");
  EXPECT_GT(metric(*webhook, "stateguard_audit_write_failures_total"), 0);
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(written + dropped, kReviews) << "a lost line was not counted";
  EXPECT_NE(webhook->process().stderrText().find("No space left on device"), std::string::npos)
      << webhook->process().stderrText();
  expectNoTornLine(path);
  // Space returns: the next decisions are recorded again.
  fs.free();
  ASSERT_EQ(webhook->post(allowedReview("after-free")).first, 200);
  std::this_thread::sleep_for(300ms);
  EXPECT_NE(readText(path).find("after-free"), std::string::npos);
  expectNoTornLine(path);
}

TEST_F(AuditFaultsTest, BlockingStrictRefusesWhatItCannotRecord) {
  FullFilesystem fs;
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): skipped";
  const std::string path = fs.dir() + "/audit.log";
  auto webhook = start({"--audit-log", path, "--audit-mode", "blocking-strict"});
  ASSERT_TRUE(webhook->started());
  auto first = responseOf(webhook->post(allowedReview("recorded")).second);
  EXPECT_TRUE(first.value("allowed", false)) << first.dump();
  fs.fill(0);
  std::string lastMessage;
  bool refused = false;
  for (int i = 0; i < 40 && !refused; ++i) {  // the first few may still fit in a page
    auto response = responseOf(webhook->post(allowedReview("full-" + std::to_string(i))).second);
    refused = !response.value("allowed", true);
    lastMessage = response.value("status", json::object()).value("message", "");
    if (refused) EXPECT_EQ(response["status"].value("code", 0), 503) << response.dump();
  }
  ASSERT_TRUE(refused) << "an unrecordable decision was allowed in blocking-strict mode";
  EXPECT_NE(lastMessage.find("could not record the decision in its audit log"), std::string::npos)
      << lastMessage;
  EXPECT_NE(lastMessage.find("No space left on device"), std::string::npos) << lastMessage;
  // A denial stays the denial it was (the rule's message, not the audit's).
  auto denied = responseOf(
      webhook->post(readText(sourcePath("examples/reviews/delete-bound-pv.json"))).second);
  EXPECT_FALSE(denied.value("allowed", true));
  EXPECT_EQ(denied["status"]["message"].get<std::string>().find("audit log"), std::string::npos)
      << denied.dump();
  fs.free();
  auto again = responseOf(webhook->post(allowedReview("space-back")).second);
  EXPECT_TRUE(again.value("allowed", false)) << again.dump();
  expectNoTornLine(path);
}

TEST_F(AuditFaultsTest, StalledAuditDestinationDoesNotStopAnswers) {
  const std::string fifo = dir_ + "/stdout";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);  // open, never read
  ASSERT_GE(reader, 0);
  const int filler = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  const std::string block(4096, 'f');
  while (::write(filler, block.data(), block.size()) > 0) {
  }
  ::close(filler);
  auto webhook = start({"--audit-log", fifo, "--audit-mode", "blocking"});
  ASSERT_TRUE(webhook->started());
  for (int i = 0; i < 3; ++i) {
    const auto started = std::chrono::steady_clock::now();
    auto [status, body] = webhook->post(allowedReview("stalled-" + std::to_string(i)));
    const auto took = std::chrono::steady_clock::now() - started;
    EXPECT_EQ(status, 200) << body;
    EXPECT_TRUE(responseOf(body).value("allowed", false)) << body;
    EXPECT_LT(took, 4s) << "a decision waited past the 2 s audit write timeout";
    const auto probe = std::chrono::steady_clock::now();
    EXPECT_EQ(webhook->get("/healthz").first, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - probe, 1s);
  }
  EXPECT_GE(metric(*webhook, "stateguard_audit_wait_timeouts_total"), 3);
  ::close(reader);  // the writer's pending write fails with EPIPE; shutdown is not held
}

TEST_F(AuditFaultsTest, SighupAfterARenameWritesToANewFileAtThePath) {
  auto webhook = start({"--audit-mode", "batch", "--audit-flush-ms", "1"});
  ASSERT_TRUE(webhook->started());
  const std::string path = webhook->auditLogPath();
  ASSERT_EQ(webhook->post(allowedReview("before-rotation")).first, 200);
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(::rename(path.c_str(), (path + ".1").c_str()), 0);
  ::kill(webhook->process().pid(), SIGHUP);
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(webhook->post(allowedReview("after-rotation")).first, 200);
  std::this_thread::sleep_for(100ms);
  EXPECT_NE(readText(path + ".1").find("before-rotation"), std::string::npos);
  EXPECT_EQ(readText(path + ".1").find("after-rotation"), std::string::npos);
  EXPECT_NE(readText(path).find("after-rotation"), std::string::npos)
      << "the line went to the rotated file";
  EXPECT_EQ(metric(*webhook, "stateguard_audit_reopens_total"), 1);
  EXPECT_TRUE(webhook->process().running()) << "SIGHUP ended the webhook";
}

}  // namespace
}  // namespace stateguard::testing

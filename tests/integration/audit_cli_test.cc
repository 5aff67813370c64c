// stateguardctl audit on logs written by the real webhook: plain and gzip-rotated files, filters,
// counts, break-glass uses with their reasons, and bad lines counted without failing.

#include <gtest/gtest.h>

#include <sstream>

#include "core/timeutil.h"
#include "tests/support/suite.h"
#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

json pvDeleteReview(const std::string& uid, const std::string& user,
                    const std::vector<std::string>& groups, bool breakGlass, bool dryRun) {
  json pv = json::parse(
      readText(sourcePath("examples/reviews/delete-bound-pv.json")))["request"]["oldObject"];
  if (breakGlass) {
    pv["metadata"]["annotations"]["stateguard.io/allow"] =
        "pv-delete; until=" + formatRfc3339(Clock::now() + std::chrono::hours(1)) +
        "; reason=INC-77 disk replaced";
  }
  return makeReview(uid, "DELETE", nullptr, pv, {{"username", user}, {"groups", groups}}, dryRun,
                    nullptr);
}

class AuditCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-audit");
    DevCerts certs = makeDevCerts(dir_ + "/certs");
    WebhookProcess webhook(dir_, certs,
                           {"--cluster-state", sourcePath("examples/cluster-state.yaml")});
    ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
    // Denied twice (alice), once as a dry run (bob), one break-glass deletion (oncall), and an
    // allowed one.
    for (const auto& review :
         {pvDeleteReview("a1", "alice", {"dev"}, false, false),
          pvDeleteReview("a2", "alice", {"dev"}, false, false),
          pvDeleteReview("b1", "bob", {"dev"}, false, true),
          pvDeleteReview("o1", "oncall", {"stateguard:break-glass"}, true, false)}) {
      ASSERT_EQ(webhook.post(review.dump()).first, 200);
    }
    json allowed = makeReview(
        "c1", "DELETE", nullptr,
        json{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "empty"}}}},
        {{"username", "carol"}, {"groups", {"dev"}}}, false, nullptr);
    ASSERT_EQ(webhook.post(allowed.dump()).first, 200);
    webhook.process().stop();
    log_ = webhook.auditLogPath();
    ASSERT_EQ(webhook.auditRecords().size(), 5u);
  }
  void TearDown() override { removeTree(dir_); }

  CommandResult audit(std::vector<std::string> args) {
    args.insert(args.begin(), "audit");
    return runCommand(binaryPath("stateguardctl"), args);
  }

  std::string dir_, log_;
};

TEST_F(AuditCliTest, SummarisesByRuleVerdictUserAndListsBreakGlass) {
  auto r = audit({"-o", "json", log_});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  json s = json::parse(r.out);
  EXPECT_EQ(s["records"], 5);
  EXPECT_EQ(s["matched"], 5);
  EXPECT_EQ(s["byVerdict"]["deny"], 3);
  EXPECT_EQ(s["byVerdict"]["break-glass"], 1);
  EXPECT_EQ(s["byVerdict"]["allow"], 1);
  EXPECT_EQ(s["byRule"]["pv-delete"], 4);
  EXPECT_EQ(s["byUser"]["alice"], 2);
  ASSERT_EQ(s["breakGlass"].size(), 1u);
  EXPECT_EQ(s["breakGlass"][0]["user"], "oncall");
  EXPECT_EQ(s["breakGlass"][0]["reason"], "INC-77 disk replaced");

  auto table = audit({log_});
  ASSERT_EQ(table.exitCode, 0);
  EXPECT_NE(table.out.find("5 of 5 decision(s) match"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("reason: INC-77 disk replaced"), std::string::npos) << table.out;
}

TEST_F(AuditCliTest, FiltersCombine) {
  auto byUser = audit({"-o", "json", "--user", "alice", log_});
  EXPECT_EQ(json::parse(byUser.out)["matched"], 2);
  auto byVerdict = audit({"-o", "json", "--verdict", "break-glass", log_});
  EXPECT_EQ(json::parse(byVerdict.out)["matched"], 1);
  auto byRule = audit({"-o", "json", "--rule", "pv-delete", "--verdict", "deny", log_});
  json s = json::parse(byRule.out);
  EXPECT_EQ(s["matched"], 3);
  bool sawDryRun = false;
  for (const auto& d : s["decisions"]) sawDryRun |= d["dryRun"] == true;
  EXPECT_TRUE(sawDryRun) << "dry runs are decisions too, marked as such";
  auto recent = audit({"-o", "json", "--since", "1h", log_});
  EXPECT_EQ(json::parse(recent.out)["matched"], 5);
  // A record from long ago falls outside --since.
  std::string old = readText(log_);
  auto first = json::parse(old.substr(0, old.find('\n')));
  first["time"] = "2020-01-01T00:00:00.000Z";
  writeText(dir_ + "/old.log", first.dump() + "\n");
  auto none = audit({"-o", "json", "--since", "1h", dir_ + "/old.log"});
  EXPECT_EQ(json::parse(none.out)["matched"], 0);
  EXPECT_EQ(json::parse(none.out)["records"], 1);
  // A controller finishing what was judged is recorded as "exempt" (webhook/controllers.h).
  json exempt = json::parse(old.substr(0, old.find('\n')));
  exempt["verdict"] = "exempt";
  exempt["user"] = "system:serviceaccount:kube-system:persistent-volume-binder";
  writeText(dir_ + "/exempt.log", old + exempt.dump() + "\n");
  auto byExempt = audit({"-o", "json", "--verdict", "exempt", dir_ + "/exempt.log"});
  ASSERT_EQ(byExempt.exitCode, 0) << byExempt.err;
  EXPECT_EQ(json::parse(byExempt.out)["matched"], 1);
}

TEST_F(AuditCliTest, ReadsGzipRotationsAndCountsBadLines) {
  // A rotated, gzip-compressed copy plus the live file with a torn last line and junk.
  ASSERT_EQ(runCommand("/bin/cp", {log_, dir_ + "/audit.log.1"}).exitCode, 0);
  ASSERT_EQ(runCommand("/bin/gzip", {dir_ + "/audit.log.1"}).exitCode, 0);
  writeText(
      dir_ + "/live.log",
      readText(log_) + "not json at all\n{\"time\": \"x\"}\n" +
          "{\"time\":\"2026-01-01T00:00:00Z\",\"verdict\":\"deny\",\"rule\":5,\"dryRun\":\"x\"}\n" +
          "{\"verdict\":\"deny\", \"ti");
  auto r = audit({"-o", "json", dir_ + "/audit.log.1.gz", dir_ + "/live.log"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  json s = json::parse(r.out);
  EXPECT_EQ(s["records"], 11) << "a record with odd field types still counts, without a crash";
  EXPECT_EQ(s["badLines"], 3);
  EXPECT_NE(r.err.find("live.log:6: not a JSON object"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("live.log:7: no time or verdict"), std::string::npos) << r.err;
}

TEST_F(AuditCliTest, TableEscapesControlCharactersAndCannotBeForged) {
  // Issue 13: user names and reasons come from clients. Raw, an ANSI escape reaches the
  // terminal and a newline in a reason prints a second, forged break-glass row.
  json forged;
  std::istringstream lines(readText(log_));
  for (std::string line; std::getline(lines, line);) {
    json r = json::parse(line);
    if (r.value("breakGlass", false)) forged = r;
  }
  ASSERT_TRUE(forged.is_object());
  forged["user"] =
      "mallory\x1b[31m\x7f\xc2\x9b"
      "2J";
  forged["breakGlassReason"] =
      "INC-1\n  2020-01-01T00:00:00Z  ciso@example.com  DELETE PersistentVolume pv-x  rule "
      "pv-delete\n    reason: FORGED break-glass row\r\x1b]0;title\x07";
  writeText(dir_ + "/hostile.log", forged.dump() + "\n");

  auto table = audit({dir_ + "/hostile.log"});
  ASSERT_EQ(table.exitCode, 0) << table.err;
  EXPECT_EQ(table.out.find('\x1b'), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find('\r'), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find('\x7f'), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find('\x07'), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find("\xc2\x9b"), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find("ciso@example.com  DELETE"),
            table.out.rfind("ciso@example.com  DELETE"));
  // One break-glass use: one row and one reason line, the forged text inside the reason.
  size_t reasons = 0;
  std::istringstream out(table.out);
  for (std::string line; std::getline(out, line);) {
    if (line.rfind("    reason: ", 0) == 0) ++reasons;
    EXPECT_NE(line.rfind("  2020-01-01", 0), 0u) << "forged row: " << line;
  }
  EXPECT_EQ(reasons, 1u) << table.out;
  EXPECT_NE(table.out.find("break-glass uses: 1"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("mallory\\x1b[31m\\x7f\\u009b2J"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("INC-1\\n  2020-01-01"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("FORGED break-glass row\\r\\x1b]0;title\\x07"), std::string::npos)
      << table.out;

  // JSON output is already escaped by the JSON encoder and keeps the exact text.
  auto asJson = audit({"-o", "json", dir_ + "/hostile.log"});
  ASSERT_EQ(asJson.exitCode, 0);
  json s = json::parse(asJson.out);
  EXPECT_EQ(s["breakGlass"][0]["user"], forged["user"]);
  EXPECT_EQ(s["breakGlass"][0]["reason"], forged["breakGlassReason"]);
}

TEST_F(AuditCliTest, UnreadableInputAndBadFlags) {
  auto missing = audit({dir_ + "/nope.log"});
  EXPECT_EQ(missing.exitCode, 2);
  EXPECT_NE(missing.err.find("cannot open"), std::string::npos) << missing.err;
  auto badSince = audit({"--since", "yesterday", log_});
  EXPECT_EQ(badSince.exitCode, 2);
  EXPECT_NE(badSince.err.find("is not a duration like 30m"), std::string::npos);
  auto badVerdict = audit({"--verdict", "maybe", log_});
  EXPECT_EQ(badVerdict.exitCode, 2);
  auto help = audit({"--help"});
  EXPECT_EQ(help.exitCode, 0);
  EXPECT_NE(help.out.find("usage: stateguardctl audit"), std::string::npos);
}

}  // namespace
}  // namespace stateguard::testing

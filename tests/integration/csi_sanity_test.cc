// csi-sanity, the CSI conformance suite (csi-test v5.3.1), against the CSI hostpath driver
// (v1.15.0): once directly, once through stateguard-csi, compared test by test from their JUnit
// files. In mount and block mode, with device templates that name nothing, a real ext4 device,
// a blank one and a missing one. A test that passes directly must pass through the proxy; with a
// missing device the guard's refusal is the right answer for tests that stage a volume, but
// never for the argument checks ("should fail when no ...").

#include <gtest/gtest.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <thread>

#include "tests/support/csi_tools.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

struct Config {
  std::string mode;       ///< "mount" or "block" (--csi.testvolumeaccesstype)
  std::string template_;  ///< "nothing", "ext4", "blank", "missing"
};

/// Readable ctest names ("mount/ext4", not gtest's bytes of the object).
void PrintTo(const Config& c, std::ostream* os) { *os << c.mode << "/" << c.template_; }

std::string nameOf(const ::testing::TestParamInfo<Config>& info) {
  return info.param.mode + "_" + info.param.template_;
}

struct Outcome {
  std::string status;   ///< passed, failed, skipped, pending
  std::string failure;  ///< the failure text, when failed
};

std::string unescapeXml(std::string s) {
  const std::pair<const char*, const char*> entities[] = {
      {"&lt;", "<"},   {"&gt;", ">"},   {"&quot;", "\""}, {"&#39;", "'"},
      {"&#34;", "\""}, {"&#xA;", "\n"}, {"&amp;", "&"}};
  for (const auto& [from, to] : entities) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + 1)) {
      s.replace(at, std::string(from).size(), to);
    }
  }
  return s;
}

/// Test name -> outcome, from csi-sanity's --csi.junitfile.
std::map<std::string, Outcome> readJunit(const std::string& xml) {
  std::map<std::string, Outcome> out;
  std::regex testcase("<testcase name=\"([^\"]*)\"[^>]*status=\"([a-z]+)\"");
  for (auto it = std::sregex_iterator(xml.begin(), xml.end(), testcase);
       it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    Outcome o{m[2], ""};
    size_t end = xml.find("</testcase>", static_cast<size_t>(m.position(0)));
    std::string body = xml.substr(
        static_cast<size_t>(m.position(0)),
        end == std::string::npos ? std::string::npos : end - static_cast<size_t>(m.position(0)));
    if (size_t f = body.find("<failure"); f != std::string::npos)
      o.failure = unescapeXml(body.substr(f));
    out[unescapeXml(m[1])] = o;
  }
  return out;
}

class CsiSanityTest : public ::testing::TestWithParam<Config> {
 protected:
  void SetUp() override {
    if (std::string why = mountAndLoopSkipReason(); !why.empty()) {
      GTEST_SKIP() << "csi-sanity comparison skipped: " << why;
    }
    sanity_ = csiTool("csi-sanity");
    hostpath_ = csiTool("hostpathplugin");
    if (sanity_.empty() || hostpath_.empty()) {
      GTEST_SKIP()
          << "csi-sanity comparison skipped: csi-sanity.xz / hostpathplugin.xz not found in "
          << csiToolsDir() << " (set STATEGUARD_CSI_TOOLS)";
    }
    dir_ = makeTempDir("sg-sanity");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    unmountUnder(dir_);
    removeTree(dir_);
  }

  /// One csi-sanity run against the unix socket `socket`, through a DelayingUnixRelay (see
  /// there: csi-sanity's own connect race); the JUnit outcomes.
  std::map<std::string, Outcome> runSanity(const std::string& name, const std::string& socket) {
    const std::string base = dir_ + "/" + name;
    DelayingUnixRelay relay(base + "-relay.sock", socket, std::chrono::milliseconds(200));
    EXPECT_EQ(relay.error(), "");
    const std::string endpoint = "unix://" + base + "-relay.sock";
    std::vector<std::string> args = {"--csi.endpoint", endpoint, "--csi.controllerendpoint",
                                     endpoint, "--csi.stagingdir", base + "-staging",
                                     "--csi.mountdir", base + "-mount", "--csi.junitfile",
                                     base + ".xml", "--csi.testvolumeaccesstype", GetParam().mode,
                                     // 1 MiB volumes: the hostpath driver copies a block
                                     // volume's whole file for a snapshot (10 GiB by default).
                                     "--csi.testvolumesize", "1048576", "-ginkgo.timeout", "2m"};
    const auto started = std::chrono::steady_clock::now();
    CommandResult r = runCommand(sanity_, args, "", std::chrono::seconds(110));
    std::cout << "csi-sanity " << name << " run: exit " << r.exitCode << " after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started)
                     .count()
              << " ms" << std::endl;
    writeText(base + ".log", r.out + r.err);
    auto outcomes = readJunit(readText(base + ".xml"));
    EXPECT_FALSE(outcomes.empty()) << name << ": no JUnit results; exit " << r.exitCode << "\n"
                                   << r.out.substr(r.out.size() > 3000 ? r.out.size() - 3000 : 0);
    return outcomes;
  }

  std::unique_ptr<ChildProcess> startHostpath(const std::string& name) {
    const std::string sock = dir_ + "/" + name + ".sock";
    auto p = std::make_unique<ChildProcess>(
        hostpath_,
        std::vector<std::string>{"--endpoint", "unix://" + sock, "--nodeid", "node-" + name,
                                 "--statedir", dir_ + "/" + name + "-state"},
        dir_);
    for (int i = 0; i < 100 && ::access(sock.c_str(), F_OK) != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(::access(sock.c_str(), F_OK), 0)
        << "hostpathplugin did not start: " << p->stderrText();
    return p;
  }

  std::string sanity_, hostpath_, dir_;
};

TEST_P(CsiSanityTest, ThroughTheProxyMatchesDirect) {
  const Config& c = GetParam();
  // The devices the template resolves to.
  const std::string devDir = dir_ + "/dev";
  ::mkdir(devDir.c_str(), 0755);
  std::unique_ptr<LoopDevice> loop;
  std::string tmpl, root = devDir;
  if (c.template_ == "nothing") {
    tmpl = "{volume_context.stateguard-test-no-such-key}";  // resolves to no device
  } else if (c.template_ == "missing") {
    tmpl = devDir + "/missing";
  } else {
    const std::string img = dir_ + "/" + c.template_ + ".img";
    ASSERT_EQ(runCommand("/usr/bin/truncate", {"-s", "64M", img}).exitCode, 0);
    if (c.template_ == "ext4") {
      CommandResult r = runCommand("/usr/sbin/mkfs.ext4", {"-q", "-F", img});
      ASSERT_EQ(r.exitCode, 0) << r.err;
    }
    loop = std::make_unique<LoopDevice>(img);
    ASSERT_FALSE(loop->path().empty()) << loop->error();
    tmpl = loop->path();
    root = "/dev";
  }

  auto driverAlone = startHostpath("direct");
  auto direct = runSanity("direct", dir_ + "/direct.sock");
  driverAlone->stop();

  auto driver = startHostpath("behind");
  const std::string proxySock = dir_ + "/proxy.sock";
  ChildProcess proxy(binaryPath("stateguard-csi"),
                     {"--csi-address", "unix://" + proxySock, "--driver-address",
                      "unix://" + dir_ + "/behind.sock", "--ledger-dir", dir_ + "/ledger",
                      "--device-path-template", tmpl, "--device-root", root, "--http-endpoint",
                      "127.0.0.1:0", "--audit-log", dir_ + "/audit.log", "--node-name", "node-a"},
                     dir_);
  ASSERT_TRUE(proxy.waitForOutput("driver is ", std::chrono::seconds(10))) << proxy.stderrText();
  auto proxied = runSanity("proxied", proxySock);
  EXPECT_TRUE(proxy.running()) << "stateguard-csi died: " << proxy.stderrText();

  // Tests that pass directly and not through the proxy (outside the expected refusals).
  int passedDirect = 0, refusals = 0;
  auto compare = [&](const std::map<std::string, Outcome>& through, bool count) {
    std::map<std::string, std::string> out;
    for (const auto& [name, d] : direct) {
      if (d.status != "passed") continue;
      if (count) ++passedDirect;
      auto it = through.find(name);
      if (it == through.end()) {
        out[name] = "missing from the proxied run";
        continue;
      }
      if (it->second.status == "passed") continue;
      const bool argumentCheck = name.find("should fail when no") != std::string::npos ||
                                 name.find("should fail when invalid") != std::string::npos;
      const bool guardRefusal = it->second.failure.find("stateguard refused") != std::string::npos;
      if (c.template_ == "missing" && guardRefusal && !argumentCheck) {
        if (count) ++refusals;
        continue;
      }
      out[name] = it->second.status + "\n" + it->second.failure.substr(0, 800);
    }
    return out;
  };
  auto brokenOnce = compare(proxied, true);
  std::vector<std::string> broken;
  if (!brokenOnce.empty()) {
    // A test counts as broken only when it fails through the proxy twice.
    std::cout << brokenOnce.size() << " test(s) failed through the proxy; running csi-sanity "
              << "through the proxy once more" << std::endl;
    auto again = compare(runSanity("proxied-again", proxySock), false);
    for (const auto& [name, why] : brokenOnce) {
      if (again.count(name)) {
        broken.push_back(name + ": " + why);
      } else {
        std::cout << "flaky, passed on the second run: " << name << ": " << why.substr(0, 600)
                  << std::endl;
      }
    }
  }
  EXPECT_GE(passedDirect, 60) << "the driver alone passed only " << passedDirect << " tests";
  std::string list;
  for (const std::string& b : broken) list += "  - " + b + "\n";
  auto tail = [](const std::string& text) {
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  };
  if (!broken.empty()) {
    std::cout << "broken through the proxy:\n" << list;
    std::cout << "---- end of the proxied csi-sanity log (" << dir_ << "/proxied.log)\n"
              << tail(readText(dir_ + "/proxied.log")) << "\n---- stateguard-csi stderr\n"
              << tail(proxy.stderrText()) << std::endl;
  }
  EXPECT_TRUE(broken.empty()) << broken.size() << " csi-sanity tests pass against the driver but "
                              << "not through stateguard-csi (" << c.mode << ", device template "
                              << c.template_ << "):\n"
                              << list;
  if (c.template_ == "missing" && c.mode == "mount") {
    EXPECT_GT(refusals, 0) << "a missing device was never refused: the guard did not run";
  } else {
    EXPECT_EQ(refusals, 0);
  }
  RecordProperty("passed_direct", passedDirect);
  RecordProperty("expected_refusals", refusals);
  std::cout << "csi-sanity " << c.mode << "/" << c.template_ << ": " << passedDirect
            << " passed directly, " << refusals << " refused by the guard as expected, "
            << broken.size() << " broken" << std::endl;
  proxy.stop();
  driver->stop();
}

INSTANTIATE_TEST_SUITE_P(Matrix, CsiSanityTest,
                         ::testing::Values(Config{"mount", "nothing"}, Config{"mount", "ext4"},
                                           Config{"mount", "blank"}, Config{"mount", "missing"},
                                           Config{"block", "nothing"}, Config{"block", "ext4"},
                                           Config{"block", "blank"}, Config{"block", "missing"}),
                         nameOf);

}  // namespace
}  // namespace stateguard::testing

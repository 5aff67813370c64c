// The real webhook at its open-file limit (issue 13): started with RLIMIT_NOFILE 64 through
// prlimit, then flooded with more TCP connections than it has descriptors. It must not spin on the
// listener (CPU time measured from /proc/PID/stat), must not flood its log (stderr growth
// measured), and must answer /healthz again once the flood is closed.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

/// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
long cpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

int connectTo(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

size_t countLines(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(FdLimit, NoBusyLoopNoLogFloodAndHealthzAnswersAfterTheFlood) {
  const std::string prlimit = findProgram("prlimit");
  if (prlimit.empty()) GTEST_SKIP() << "prlimit (util-linux) is not installed";
  const std::string dir = makeTempDir("sg-fdlimit");
  DevCerts certs = makeDevCerts(dir + "/certs");
  // The same arguments WebhookProcess gives, run under prlimit (which execs: same PID).
  ChildProcess proc(
      prlimit,
      {"--nofile=64:64", binaryPath("stateguard-webhook"), "--listen", "127.0.0.1:0", "--tls-cert",
       certs.tlsCert, "--tls-key", certs.tlsKey, "--audit-log", dir + "/audit.log", "--threads",
       "2", "--cluster-state", sourcePath("examples/cluster-state.yaml")},
      dir);
  ASSERT_TRUE(proc.waitForOutput("listening on https://", std::chrono::seconds(20)))
      << proc.stderrText();
  std::smatch m;
  const std::string started = proc.stderrText();
  ASSERT_TRUE(std::regex_search(started, m, std::regex(R"(127\.0\.0\.1:(\d+))")));
  const int port = std::stoi(m[1]);

  // 200 plain TCP connections: they complete in the kernel's backlog whether or not the server
  // has a descriptor left for them, and they sit in the TLS handshake phase (10 s) once accepted.
  std::vector<int> flood;
  for (int i = 0; i < 200; ++i) {
    int fd = connectTo(port);
    if (fd >= 0) flood.push_back(fd);
  }
  ASSERT_GT(flood.size(), 100u);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the server reaches the limit

  const size_t errBefore = proc.stderrText().size();
  const long ticksBefore = cpuTicks(proc.pid());
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const long ticksAfter = cpuTicks(proc.pid());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string errText = proc.stderrText();
  const double cpuShare = static_cast<double>(ticksAfter - ticksBefore) /
                          static_cast<double>(::sysconf(_SC_CLK_TCK)) / seconds;
  const std::string grown = errText.substr(std::min(errBefore, errText.size()));
  std::cerr << "at the fd limit: " << static_cast<int>(cpuShare * 100) << "% of one core, stderr +"
            << grown.size() << " bytes (" << countLines(grown, "\n") << " lines) in " << seconds
            << " s\n";
  ASSERT_GE(ticksBefore, 0);
  EXPECT_LT(cpuShare, 0.2) << "the server spins at the open-file limit";
  EXPECT_LE(countLines(grown, "\n"), 3u) << grown.substr(0, 2000);
  // The limit was hit and said so, once, with the count of what was refused.
  EXPECT_NE(errText.find("open-file limit"), std::string::npos) << errText.substr(0, 2000);

  for (int fd : flood) ::close(fd);
  flood.clear();
  // The server notices the closed connections (EOF) and has descriptors again.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int status = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    httplib::SSLClient c("127.0.0.1", port);
    c.set_ca_cert_path(certs.caCert.c_str());
    c.enable_server_certificate_verification(true);
    c.set_connection_timeout(2);
    c.set_read_timeout(2);
    auto res = c.Get("/healthz");
    if (res && res->status == 200) {
      // Connections taken off the backlog and closed at the limit are counted. (A new
      // connection can still be shed while the server drains the flood's closed connections
      // from its backlog: then ask again.)
      auto metrics = c.Get("/metrics");
      if (!metrics) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      status = 200;
      std::smatch shed;
      ASSERT_TRUE(std::regex_search(
          metrics->body, shed, std::regex(R"(\nstateguard_http_connections_shed_total (\d+))")))
          << metrics->body;
      EXPECT_GT(std::stoul(shed[1]), 0u);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status, 200) << "/healthz and /metrics are not answered after the flood ended";
  EXPECT_TRUE(proc.running());
  proc.stop();
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing

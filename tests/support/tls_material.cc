#include "tests/support/tls_material.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/json_yaml.h"

extern char** environ;

namespace stateguard::testing {
namespace {

/// Runs argv (argv[0] looked up on PATH), appending its output to `logPath`; true on exit 0.
bool runTool(const std::vector<std::string>& argv, const std::string& logPath) {
  if (argv.empty()) return false;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool isIpAddress(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

Status writeFileChecked(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return makeError("cannot write " + path);
  return Ok{};
}

std::string lastLines(const std::string& logPath) {
  auto text = readFile(logPath);
  if (!text.ok()) return "";
  const std::string& t = text.value();
  return t.size() > 800 ? t.substr(t.size() - 800) : t;
}

/// Signs `<name>.csr` with the CA into `<name>.crt` using the extensions in `ext`.
Status issue(const TlsMaterial& tls, const std::string& name, const std::string& subject,
             const std::string& ext) {
  const std::string base = tls.dir + "/" + name;
  const std::string log = tls.dir + "/openssl.log";
  if (auto s = writeFileChecked(base + ".ext", ext); !s.ok()) return s;
  if (!runTool(
          {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", base + ".key", "-out", base + ".csr", "-subj", subject},
          log)) {
    return makeError("openssl req for " + name + " failed: " + lastLines(log));
  }
  if (!runTool({"openssl", "x509", "-req", "-in", base + ".csr", "-CA", tls.caCertPath, "-CAkey",
                tls.caKeyPath, "-CAcreateserial", "-out", base + ".crt", "-days", "2", "-sha256",
                "-extfile", base + ".ext"},
               log)) {
    return makeError("openssl x509 for " + name + " failed: " + lastLines(log));
  }
  return Ok{};
}

}  // namespace

Result<TlsMaterial> makeTlsMaterial(const std::string& dir, const std::vector<std::string>& hosts) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return makeError("cannot create " + dir + ": " + ec.message());
  TlsMaterial tls;
  tls.dir = dir;
  tls.caCertPath = dir + "/ca.crt";
  tls.caKeyPath = dir + "/ca.key";
  tls.serverCertPath = dir + "/server.crt";
  tls.serverKeyPath = dir + "/server.key";
  const std::string log = dir + "/openssl.log";

  // An explicit config: the distribution's openssl.cnf may add conflicting extensions.
  const std::string caConf = dir + "/ca.cnf";
  if (auto s = writeFileChecked(caConf,
                                "[req]\ndistinguished_name = dn\nprompt = no\n"
                                "[dn]\nCN = stateguard test CA\n"
                                "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
                                "keyUsage = critical,keyCertSign,cRLSign\n"
                                "subjectKeyIdentifier = hash\n");
      !s.ok()) {
    return makeError(s.error());
  }
  if (!runTool({"openssl", "req", "-x509", "-config", caConf, "-extensions", "v3_ca", "-newkey",
                "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                tls.caKeyPath, "-out", tls.caCertPath, "-days", "2", "-sha256"},
               log)) {
    return makeError("openssl req (CA) failed: " + lastLines(log));
  }

  std::string san;
  for (const auto& host : hosts) {
    if (!san.empty()) san += ",";
    san += (isIpAddress(host) ? "IP:" : "DNS:") + host;
  }
  std::string ext =
      "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
      "extendedKeyUsage = serverAuth\n";
  if (!san.empty()) ext += "subjectAltName = " + san + "\n";
  const std::string cn = hosts.empty() ? "stateguard-test-server" : hosts.front();
  if (auto s = issue(tls, "server", "/CN=" + cn, ext); !s.ok()) return makeError(s.error());

  for (auto [path, pem] :
       {std::pair{&tls.caCertPath, &tls.caPem}, std::pair{&tls.serverCertPath, &tls.serverCertPem},
        std::pair{&tls.serverKeyPath, &tls.serverKeyPem}}) {
    auto text = readFile(*path);
    if (!text.ok()) return makeError(text.error());
    *pem = text.value();
  }
  return tls;
}

Result<ClientCertificate> makeClientCertificate(const TlsMaterial& tls, const std::string& name,
                                                const std::string& commonName,
                                                const std::string& organization) {
  std::string subject = "/CN=" + commonName;
  if (!organization.empty()) subject += "/O=" + organization;
  auto s = issue(tls, name, subject,
                 "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
                 "extendedKeyUsage = clientAuth\n");
  if (!s.ok()) return makeError(s.error());
  ClientCertificate cert;
  cert.certPath = tls.dir + "/" + name + ".crt";
  cert.keyPath = tls.dir + "/" + name + ".key";
  auto certText = readFile(cert.certPath);
  if (!certText.ok()) return makeError(certText.error());
  auto keyText = readFile(cert.keyPath);
  if (!keyText.ok()) return makeError(keyText.error());
  cert.certPem = certText.value();
  cert.keyPem = keyText.value();
  return cert;
}

}  // namespace stateguard::testing

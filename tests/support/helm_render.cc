#include "tests/support/helm_render.h"

#include <chrono>

namespace stateguard::testing {
namespace {

using std::chrono::milliseconds;

/// Builds tests/helm-render once per test process (Go in GOPATH mode with Debian's sprig and
/// yaml.v2).
class HelmRenderer {
 public:
  static HelmRenderer& get() {
    static HelmRenderer renderer;
    return renderer;
  }
  ~HelmRenderer() {
    if (!dir_.empty()) removeTree(dir_);
  }
  const std::string& binary() const { return binary_; }
  const std::string& error() const { return error_; }

 private:
  HelmRenderer() {
    if (findProgram("go").empty()) {
      error_ =
          "go is not installed (scripts/install-deps.sh installs golang-go, "
          "golang-github-masterminds-sprig-dev and golang-gopkg-yaml.v2-dev)";
      return;
    }
    dir_ = makeTempDir("sg-helm-render");
    binary_ = dir_ + "/helm-render";
    const std::string cache = std::string(STATEGUARD_BIN_DIR) + "/../helm-render-gocache";
    CommandResult r = runCommand(
        "/usr/bin/env",
        {"GO111MODULE=off", "GOPATH=/usr/share/gocode", "GOFLAGS=", "GOENV=off", "GOCACHE=" + cache,
         "go", "build", "-o", binary_, sourcePath("tests/helm-render/main.go")},
        "", milliseconds(180000));
    if (r.exitCode != 0) {
      error_ = "go build tests/helm-render failed (" + std::to_string(r.exitCode) + "): " + r.err;
      binary_.clear();
    }
  }
  std::string dir_, binary_, error_;
};

}  // namespace

std::string helmRenderBinary(std::string* error) {
  HelmRenderer& h = HelmRenderer::get();
  if (h.binary().empty() && error != nullptr) *error = h.error();
  return h.binary();
}

CommandResult renderHelmChart(const std::vector<std::string>& extra, const std::string& ns) {
  std::string error;
  const std::string binary = helmRenderBinary(&error);
  if (binary.empty()) return CommandResult{-1, "", error};
  std::vector<std::string> args = {"--chart",        sourcePath("manifests/helm/stateguard"),
                                   "--release-name", "stateguard",
                                   "--namespace",    ns,
                                   "--notes"};
  args.insert(args.end(), extra.begin(), extra.end());
  return runCommand(binary, args, "", milliseconds(30000));
}

}  // namespace stateguard::testing

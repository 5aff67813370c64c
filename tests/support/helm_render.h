#pragma once
// The Helm chart rendered without a helm binary: tests/helm-render (Helm's template engine, Go
// text/template with sprig and Helm's own functions) built once per test process with Debian's Go
// packages, then run like `helm template`.

#include <string>
#include <vector>

#include "tests/support/process.h"

namespace stateguard::testing {

/// Path of the tests/helm-render binary, built on first use (the Go build cache lives in the
/// build tree, so later builds only link); "" when it cannot be built, with the reason in *error.
std::string helmRenderBinary(std::string* error);

/// Renders manifests/helm/stateguard like `helm template stateguard <chart> -n NS EXTRA`, with
/// the chart's NOTES.txt on stderr. exitCode is -1 and err the reason when the renderer cannot
/// be built.
CommandResult renderHelmChart(const std::vector<std::string>& extra, const std::string& ns);

}  // namespace stateguard::testing

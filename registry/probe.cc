// The live probe (registry/probe.h), with cpp-httplib's client (Debian builds it with OpenSSL).

#include "registry/probe.h"

#include <httplib.h>

#include <algorithm>

namespace stateguard::registry {
namespace {

using Clock = std::chrono::steady_clock;

/// The API root the runtime uses for `e` ("/v2", or the path itself with override_path). CRI-O
/// locations carry a repository namespace instead, which goes after /v2.
std::string apiRootOf(const Mirror& m, const Endpoint& e) {
  std::string path = e.path;
  while (path.ends_with("/")) path.pop_back();
  if (m.format == Format::Crio) return "/v2";
  return e.overridePath ? path : path + "/v2";
}

std::string namespaceOf(const Mirror& m, const Endpoint& e) {
  if (m.format != Format::Crio) return "";
  std::string path = e.path;
  while (path.ends_with("/")) path.pop_back();
  return path;  // "/proxy-docker.io" or ""
}

/// One request; status or -1 with the transport error in `error`.
int request(const std::string& base, const std::string& method, const std::string& path,
            std::chrono::milliseconds timeout, std::string& error) {
  httplib::Client cli(base);
  if (!cli.is_valid()) {
    error = "cannot use " + base;
    return -1;
  }
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  const auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(timeout - secs);
  cli.set_connection_timeout(static_cast<time_t>(secs.count()), static_cast<time_t>(usecs.count()));
  cli.set_read_timeout(static_cast<time_t>(secs.count()), static_cast<time_t>(usecs.count()));
  cli.set_write_timeout(static_cast<time_t>(secs.count()), static_cast<time_t>(usecs.count()));
  cli.set_follow_location(false);
  httplib::Headers headers = {
      {"Accept",
       "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest."
       "list.v2+json, application/vnd.docker.distribution.manifest.v2+json"}};
  httplib::Result res = method == "HEAD" ? cli.Head(path, headers) : cli.Get(path, headers);
  if (!res) {
    error = httplib::to_string(res.error());
    return -1;
  }
  return res->status;
}

std::string describeMirror(const Mirror& m) {
  return std::string(formatName(m.format)) + " mirror for " + m.registry + " (" + m.where + ")";
}

}  // namespace

json defaultProbeParams() {
  return json{{"budgetMs", 3000},
              {"requestTimeoutMs", 1500},
              {"image", "library/busybox"},
              {"reference", "latest"}};
}

ProbeOptions probeOptionsFromParams(const json& params) {
  ProbeOptions o;
  if (!params.is_object()) return o;
  auto ms = [&](const char* key, std::chrono::milliseconds& out) {
    if (params.contains(key) && params[key].is_number_integer() && params[key].get<long>() > 0)
      out = std::chrono::milliseconds(std::min<long>(params[key].get<long>(), 30000));
  };
  ms("budgetMs", o.budget);
  ms("requestTimeoutMs", o.perRequest);
  if (params.contains("image") && params["image"].is_string()) o.image = params["image"];
  if (params.contains("reference") && params["reference"].is_string())
    o.reference = params["reference"];
  return o;
}

std::vector<MirrorFinding> probeMirrors(const std::vector<Mirror>& mirrors,
                                        const ProbeOptions& opts) {
  std::vector<MirrorFinding> out;
  const auto deadline = Clock::now() + opts.budget;
  const auto remaining = [&] {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return std::min(left, opts.perRequest);
  };
  for (const auto& m : mirrors) {
    for (const auto& e : m.endpoints) {
      if (e.host.empty()) continue;
      const std::string scheme = e.scheme.empty() ? "https" : e.scheme;
      const std::string base = scheme + "://" + e.host;
      const std::string root = apiRootOf(m, e);
      auto left = remaining();
      if (left.count() <= 0) return out;
      std::string error;
      const int status = request(base, "GET", root + "/", left, error);
      MirrorFinding f;
      f.check = "probe";
      f.source = m.source;
      f.line = e.line != 0 ? e.line : m.line;
      if (status != 200 && status != 401) {
        f.message = describeMirror(m) + ": endpoint " + e.url + " answered " +
                    (status < 0 ? "nothing (" + error + ")" : "HTTP " + std::to_string(status)) +
                    " to GET " + base + root + "/ (a registry answers 200, or 401 asking for a " +
                    "token). " + formatName(m.format) + " moves on to the next endpoint, so " +
                    "every pull pays for it, and if it is the last one pulls fail. Fix: correct " +
                    "the URL (scheme, port, path and override_path/overridePath), or remove it.";
        f.warning = m.registry + ": endpoint " + e.host + " did not answer as a registry";
        if (f.warning.size() > 80) f.warning = m.registry + ": an endpoint is not a registry";
        out.push_back(std::move(f));
        continue;
      }
      // The upstream listed as an endpoint must find a manifest that exists upstream.
      if (!isUpstreamHost(m.registry, e.host)) continue;
      left = remaining();
      if (left.count() <= 0) return out;
      const std::string manifest =
          root + namespaceOf(m, e) + "/" + opts.image + "/manifests/" + opts.reference;
      const int mstatus = request(base, "HEAD", manifest, left, error);
      if (mstatus == 404) {
        f.message = describeMirror(m) + ": the upstream endpoint " + e.url + " answers 404 for " +
                    base + manifest + ", an image that exists upstream: the fallback reaches " +
                    "the registry at the wrong path and reports every image as not found. Fix: " +
                    "remove the explicit upstream endpoint; the runtime falls back to " +
                    m.registry + " itself.";
        f.warning = m.registry + ": upstream endpoint " + e.host + " 404s for a known image";
        if (f.warning.size() > 80) f.warning = m.registry + ": upstream endpoint 404s";
        out.push_back(std::move(f));
      }
    }
  }
  return out;
}

}  // namespace stateguard::registry

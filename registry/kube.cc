// Mirror configurations inside Kubernetes objects (registry/kube.h).

#include "registry/kube.h"

#include <array>

#include "core/k8s.h"

namespace stateguard::registry {
namespace {

/// The file format a ConfigMap/Secret key holds, by name; Unknown for other keys. `registry`
/// receives the host of `<host>.hosts.toml`.
FileKind kindOfKey(const std::string& key, std::string& registry) {
  if (key == "hosts.toml") return FileKind::HostsToml;
  for (const char* suffix : {".hosts.toml", "_hosts.toml"}) {
    if (key.size() > std::string_view(suffix).size() && key.ends_with(suffix)) {
      registry = key.substr(0, key.size() - std::string_view(suffix).size());
      return FileKind::HostsToml;
    }
  }
  if (key == "registries.yaml" || key == "registries.yml") return FileKind::K3sRegistries;
  if (key == "registries.conf") return FileKind::CrioConf;
  if (key == "controlplane.yaml" || key == "worker.yaml" || key == "machineconfig.yaml")
    return FileKind::Talos;
  return FileKind::Unknown;
}

void append(ObjectMirrors& out, Result<std::vector<Mirror>> r) {
  if (!r.ok()) {
    out.errors.push_back(r.error());
    return;
  }
  for (auto& m : r.value()) out.mirrors.push_back(std::move(m));
}

/// ConfigMap data / Secret data (base64) and stringData.
void fromDataObject(const json& obj, bool secret, const std::string& configLabel,
                    ObjectMirrors& out) {
  const bool labelled = !configLabel.empty() && k8s::label(obj, configLabel).has_value();
  // The text of every key, decoded (Secret data is base64); only keys that may matter.
  std::vector<std::pair<std::string, std::string>> keys;
  std::string k3sConfig;
  auto collect = [&](const json& data, bool base64) {
    if (!data.is_object()) return;
    for (const auto& [key, value] : data.items()) {
      std::string host;
      const bool wanted =
          labelled || kindOfKey(key, host) != FileKind::Unknown || key == "config.yaml";
      if (!wanted || !value.is_string()) continue;
      std::string text = value.get<std::string>();
      if (base64) {
        auto decoded = decodeBase64(text);
        if (!decoded.ok()) {
          if (kindOfKey(key, host) != FileKind::Unknown)
            out.errors.push_back(k8s::kind(obj) + " " + k8s::ref(obj) + " key " + key +
                                 ": not base64");
          continue;
        }
        text = decoded.value();
      }
      if (key == "config.yaml") k3sConfig = text;
      keys.emplace_back(key, std::move(text));
    }
  };
  collect(obj.value("data", json()), secret);
  if (secret) collect(obj.value("stringData", json()), false);
  const bool disabled = !k3sConfig.empty() && k3sDefaultEndpointDisabled(k3sConfig);
  for (const auto& [key, text] : keys) {
    std::string registry;
    FileKind kind = kindOfKey(key, registry);
    if (kind == FileKind::Unknown && labelled) kind = sniffKind(text);
    if (kind == FileKind::Unknown) continue;
    out.carriesConfig = true;
    append(out, parseMirrorText(text, k8s::kind(obj) + " " + k8s::ref(obj) + " key " + key, kind,
                                registry, disabled));
  }
}

/// CABPT config: spec.configPatches (RFC 6902), spec.strategicPatches (YAML strings), and a
/// full machine config in spec.data.
void fromTalosSpec(const json& spec, const std::string& what, ObjectMirrors& out) {
  if (!spec.is_object()) return;
  std::vector<json> docs;
  std::vector<size_t> lines;
  if (spec.contains("configPatches") && spec["configPatches"].is_array()) {
    json machine = {{"machine", {{"registries", {{"mirrors", json::object()}}}}}};
    bool touched = false;
    for (const auto& op : spec["configPatches"]) {
      if (!op.is_object() || !op.contains("path") || !op["path"].is_string()) continue;
      const std::string path = op["path"].get<std::string>();
      if (!(path.starts_with("/machine/registries") || path == "/machine")) continue;
      touched = true;
      try {
        machine = machine.patch(json::array({op}));
      } catch (const std::exception& e) {
        out.errors.push_back(what + " spec.configPatches " + path + ": " + e.what());
      }
    }
    if (touched) {
      docs.push_back(machine);
      lines.push_back(0);
    }
  }
  auto addYaml = [&](const json& s, const std::string& field) {
    if (!s.is_string()) return;
    const std::string text = s.get<std::string>();
    if (text.find("registries") == std::string::npos &&
        text.find("RegistryMirrorConfig") == std::string::npos)
      return;
    auto parsed = parseDocuments(text, what + " " + field);
    if (!parsed.ok()) {
      out.errors.push_back(parsed.error());
      return;
    }
    for (auto& d : parsed.value()) {
      docs.push_back(std::move(d));
      lines.push_back(0);
    }
  };
  if (spec.contains("strategicPatches") && spec["strategicPatches"].is_array()) {
    for (size_t i = 0; i < spec["strategicPatches"].size(); ++i)
      addYaml(spec["strategicPatches"][i], "spec.strategicPatches[" + std::to_string(i) + "]");
  }
  if (spec.contains("data")) addYaml(spec["data"], "spec.data");
  if (docs.empty()) return;
  auto mirrors = fromTalosDocuments(docs, lines, what);
  if (!mirrors.empty()) out.carriesConfig = true;
  for (auto& m : mirrors) out.mirrors.push_back(std::move(m));
}

}  // namespace

Result<std::string> decodeBase64(const std::string& in) {
  std::array<int, 256> table{};
  table.fill(-1);
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < alphabet.size(); ++i)
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  std::string out;
  unsigned int buffer = 0;
  int bits = 0;
  for (const char c : in) {
    if (c == '=' || c == '\n' || c == '\r') continue;
    const int v = table[static_cast<unsigned char>(c)];
    if (v < 0) return makeError("not base64");
    buffer = (buffer << 6) | static_cast<unsigned int>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xffu));
    }
  }
  return out;
}

ObjectMirrors mirrorsOfObject(const json& obj, const std::string& group,
                              const std::string& configLabel) {
  ObjectMirrors out;
  if (!obj.is_object()) return out;
  const std::string kind = k8s::kind(obj);
  const std::string what = kind + " " + k8s::ref(obj);
  if (group.empty() && (kind == "ConfigMap" || kind == "Secret")) {
    fromDataObject(obj, kind == "Secret", configLabel, out);
  } else if (group == "bootstrap.cluster.x-k8s.io" && kind == "TalosConfig") {
    fromTalosSpec(obj.value("spec", json()), what, out);
  } else if (group == "bootstrap.cluster.x-k8s.io" && kind == "TalosConfigTemplate") {
    fromTalosSpec(k8s::at(obj, "/spec/template/spec"), what, out);
  } else if (group == "controlplane.cluster.x-k8s.io" && kind == "TalosControlPlane") {
    fromTalosSpec(k8s::at(obj, "/spec/controlPlaneConfig/controlplane"),
                  what + " controlPlaneConfig.controlplane", out);
    fromTalosSpec(k8s::at(obj, "/spec/controlPlaneConfig/init"), what + " controlPlaneConfig.init",
                  out);
  } else if (group == "provisioning.cattle.io" && kind == "Cluster") {
    const json& regs = k8s::at(obj, "/spec/rkeConfig/registries");
    if (regs.is_object() && regs.contains("mirrors")) {
      const json& flag =
          k8s::at(obj, "/spec/rkeConfig/machineGlobalConfig/disable-default-registry-endpoint");
      const bool disabled = (flag.is_boolean() && flag.get<bool>()) ||
                            (flag.is_string() && flag.get<std::string>() == "true");
      out.carriesConfig = true;
      auto ms = fromK3sRegistries(regs, disabled, what, "spec.rkeConfig.registries.", 0);
      for (auto& m : ms) out.mirrors.push_back(std::move(m));
    }
  }
  return out;
}

}  // namespace stateguard::registry

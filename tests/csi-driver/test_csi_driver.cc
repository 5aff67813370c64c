// stateguard-test-csi-driver: a CSI node driver for the tests, behaving as drivers built on
// kubernetes mount-utils do when they stage a volume:
//   blkid -p -s TYPE -s PTTYPE -o export DEVICE; exit 2 is read as "unformatted";
//   then mkfs.<fs> through PATH (-F -m0 for ext3/4, -f for xfs), and mount.
// It formats real image files with the real mkfs tools. Instead of mounting (which needs
// privileges) it writes a marker file into the target directory.
//
// Test hooks: before its blkid and before its mkfs it runs HOOK_DIR/<volume_id>.before-probe and
// .before-format if present (sh scripts that make the device vanish, fail or come back: the
// races of the incidents). Any method it does not implement is echoed: the response is the
// request's bytes, x-* metadata comes back as trailing metadata, x-status asks for an error
// status (x-message-bin its message), x-sleep-ms delays the answer (a cancel ends it early and is
// logged), and the remaining deadline is reported (the proxy tests use this).
//
// usage: stateguard-test-csi-driver --endpoint unix:///PATH --device-dir DIR [--hook-dir DIR]
//        [--name NAME] [--no-stage] [--exec-path PATH] [--ledger-dir DIR] [--call-log FILE]
//        [--blkid-2.39]
// --blkid-2.39 reads blkid's exit 8 (ambivalent) as util-linux 2.39 and later report it: exit 2,
// "nothing found". Debian 12 ships 2.38, which exits 8.

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proto/csi.grpc.pb.h"

namespace {

struct Options {
  std::string endpoint, deviceDir, hookDir, name = "test.csi.stateguard.io", callLog;
  bool stage = true;
  bool ambivalentIsBlank = false;  ///< util-linux >= 2.39: blkid exits 2, not 8, when ambivalent
};
Options opts;
std::mutex logMu;

void logCall(const std::string& line) {
  if (opts.callLog.empty()) return;
  std::lock_guard lock(logMu);
  std::ofstream(opts.callLog, std::ios::app) << line << "\n";
}

struct Run {
  int code = -1;
  std::string output;
};

/// Runs argv (through PATH), capturing stdout+stderr.
Run run(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(pipefd[1]);
  Run r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

void hook(const std::string& volumeId, const std::string& phase) {
  if (opts.hookDir.empty()) return;
  std::string path = opts.hookDir + "/" + volumeId + "." + phase;
  if (::access(path.c_str(), R_OK) == 0) run({"sh", path});
}

std::string deviceFor(const std::string& volumeId,
                      const google::protobuf::Map<std::string, std::string>& publishContext) {
  auto it = publishContext.find("devicePath");
  if (it != publishContext.end()) return it->second;
  return opts.deviceDir + "/" + volumeId;
}

/// mount-utils' formatAndMount, minus the mount.
grpc::Status formatAndMount(const std::string& volumeId, const std::string& device,
                            const csi::v1::VolumeCapability& cap, const std::string& target) {
  if (cap.has_block()) return grpc::Status::OK;
  std::string fsType = cap.mount().fs_type().empty() ? "ext4" : cap.mount().fs_type();
  hook(volumeId, "before-probe");
  Run probe = run({"blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", device});
  std::string existing;
  if (probe.code == 0) {
    size_t at = probe.output.find("TYPE=");
    if (at != std::string::npos)
      existing = probe.output.substr(at + 5, probe.output.find('\n', at) - at - 5);
  } else if (probe.code == 2 || (probe.code == 8 && opts.ambivalentIsBlank)) {
    // "unformatted": exactly what mount-utils concludes, whatever the reason blkid had.
    hook(volumeId, "before-format");
    std::vector<std::string> args = {"mkfs." + fsType};
    if (fsType == "ext4" || fsType == "ext3") {
      args.insert(args.end(), {"-F", "-m0"});
    } else if (fsType == "xfs") {
      args.push_back("-f");
    }
    args.push_back(device);
    Run mkfs = run(args);
    logCall("mkfs " + volumeId + " " + fsType + " exit=" + std::to_string(mkfs.code));
    if (mkfs.code != 0) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "format of disk " + device + " failed: " + mkfs.output);
    }
    existing = fsType;
  } else {
    return grpc::Status(
        grpc::StatusCode::INTERNAL,
        "blkid " + device + " exit " + std::to_string(probe.code) + ": " + probe.output);
  }
  ::mkdir(target.c_str(), 0755);
  std::ofstream(target + "/.test-driver-mounted") << device << " " << existing << "\n";
  return grpc::Status::OK;
}

class IdentityService final : public csi::v1::Identity::Service {
  grpc::Status GetPluginInfo(grpc::ServerContext*, const csi::v1::GetPluginInfoRequest*,
                             csi::v1::GetPluginInfoResponse* resp) override {
    resp->set_name(opts.name);
    resp->set_vendor_version("0.0.1-test");
    return grpc::Status::OK;
  }
  grpc::Status GetPluginCapabilities(grpc::ServerContext*,
                                     const csi::v1::GetPluginCapabilitiesRequest*,
                                     csi::v1::GetPluginCapabilitiesResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status Probe(grpc::ServerContext*, const csi::v1::ProbeRequest*,
                     csi::v1::ProbeResponse* resp) override {
    resp->mutable_ready()->set_value(true);
    return grpc::Status::OK;
  }
};

class NodeService final : public csi::v1::Node::Service {
  grpc::Status NodeStageVolume(grpc::ServerContext*, const csi::v1::NodeStageVolumeRequest* req,
                               csi::v1::NodeStageVolumeResponse*) override {
    logCall("NodeStageVolume " + req->volume_id());
    if (!opts.stage) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no staging");
    return formatAndMount(req->volume_id(), deviceFor(req->volume_id(), req->publish_context()),
                          req->volume_capability(), req->staging_target_path());
  }
  grpc::Status NodeUnstageVolume(grpc::ServerContext*, const csi::v1::NodeUnstageVolumeRequest* req,
                                 csi::v1::NodeUnstageVolumeResponse*) override {
    logCall("NodeUnstageVolume " + req->volume_id());
    ::unlink((req->staging_target_path() + "/.test-driver-mounted").c_str());
    return grpc::Status::OK;
  }
  grpc::Status NodePublishVolume(grpc::ServerContext*, const csi::v1::NodePublishVolumeRequest* req,
                                 csi::v1::NodePublishVolumeResponse*) override {
    logCall("NodePublishVolume " + req->volume_id());
    if (!opts.stage) {
      return formatAndMount(req->volume_id(), deviceFor(req->volume_id(), req->publish_context()),
                            req->volume_capability(), req->target_path());
    }
    ::mkdir(req->target_path().c_str(), 0755);
    std::ofstream(req->target_path() + "/.test-driver-published") << req->volume_id() << "\n";
    return grpc::Status::OK;
  }
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*,
                                   const csi::v1::NodeUnpublishVolumeRequest* req,
                                   csi::v1::NodeUnpublishVolumeResponse*) override {
    logCall("NodeUnpublishVolume " + req->volume_id());
    return grpc::Status::OK;
  }
  grpc::Status NodeGetCapabilities(grpc::ServerContext*, const csi::v1::NodeGetCapabilitiesRequest*,
                                   csi::v1::NodeGetCapabilitiesResponse* resp) override {
    if (opts.stage) {
      resp->add_capabilities()->mutable_rpc()->set_type(
          csi::v1::NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME);
    }
    return grpc::Status::OK;
  }
  grpc::Status NodeGetInfo(grpc::ServerContext*, const csi::v1::NodeGetInfoRequest*,
                           csi::v1::NodeGetInfoResponse* resp) override {
    resp->set_node_id("test-node");
    return grpc::Status::OK;
  }
};

/// Every other method: echo.
class EchoService final : public grpc::CallbackGenericService {
  class Reactor : public grpc::ServerGenericBidiReactor {
   public:
    explicit Reactor(grpc::GenericCallbackServerContext* ctx) : ctx_(ctx) { StartRead(&buf_); }
    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no message"));
        return;
      }
      logCall("echo " + ctx_->method());
      grpc::StatusCode code = grpc::StatusCode::OK;
      std::string details;
      int sleepMs = 0;
      std::string message = "failed as asked";
      for (const auto& [k, v] : ctx_->client_metadata()) {
        std::string key(k.data(), k.size()), value(v.data(), v.size());
        if (key.rfind("x-", 0) != 0) continue;
        ctx_->AddTrailingMetadata("echo-" + key, value);
        if (key == "x-status") code = static_cast<grpc::StatusCode>(std::stoi(value));
        if (key == "x-details-bin") details = value;
        if (key == "x-sleep-ms") sleepMs = std::stoi(value);
        if (key == "x-message-bin") message = value;
      }
      ctx_->AddInitialMetadata("x-initial", "from-driver");
      auto left = ctx_->deadline() - std::chrono::system_clock::now();
      if (ctx_->deadline() < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
        ctx_->AddTrailingMetadata(
            "x-deadline-ms",
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
      }
      ctx_->AddTrailingMetadata("x-method", ctx_->method());
      if (sleepMs > 0) {
        // A slow call: answers after x-sleep-ms, or logs "cancelled" when kubelet's cancel
        // reaches it first (how the tests see RST_STREAM cross the proxy).
        auto state = cancel_;
        const std::string method = ctx_->method();
        std::thread([this, state, sleepMs, method] {
          std::unique_lock lock(state->mu);
          bool cancelled = state->cv.wait_for(lock, std::chrono::milliseconds(sleepMs),
                                              [&] { return state->cancelled; });
          lock.unlock();
          if (cancelled) {
            logCall("cancelled " + method);
            Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
          } else {
            StartWriteAndFinish(&buf_, grpc::WriteOptions(), grpc::Status::OK);
          }
        }).detach();
        return;
      }
      if (code != grpc::StatusCode::OK) {
        Finish(grpc::Status(code, message, details));
        return;
      }
      StartWriteAndFinish(&buf_, grpc::WriteOptions(), grpc::Status::OK);
    }
    void OnCancel() override {
      std::lock_guard lock(cancel_->mu);
      cancel_->cancelled = true;
      cancel_->cv.notify_all();
    }
    void OnDone() override { delete this; }

   private:
    struct Cancel {
      std::mutex mu;
      std::condition_variable cv;
      bool cancelled = false;
    };
    grpc::GenericCallbackServerContext* ctx_;
    grpc::ByteBuffer buf_;
    std::shared_ptr<Cancel> cancel_ = std::make_shared<Cancel>();
  };

 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    return new Reactor(ctx);
  }
};

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--endpoint")
      opts.endpoint = next();
    else if (a == "--device-dir")
      opts.deviceDir = next();
    else if (a == "--hook-dir")
      opts.hookDir = next();
    else if (a == "--name")
      opts.name = next();
    else if (a == "--call-log")
      opts.callLog = next();
    else if (a == "--no-stage")
      opts.stage = false;
    else if (a == "--blkid-2.39")
      opts.ambivalentIsBlank = true;
    else if (a == "--exec-path")
      ::setenv("PATH", next().c_str(), 1);
    else if (a == "--ledger-dir")
      ::setenv("STATEGUARD_LEDGER_DIR", next().c_str(), 1);
    else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  if (opts.endpoint.rfind("unix://", 0) == 0) ::unlink(opts.endpoint.substr(7).c_str());
  IdentityService identity;
  NodeService node;
  EchoService echo;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(opts.endpoint, grpc::InsecureServerCredentials());
  // Large echoed messages measure what the sidecar holds of a forwarded call.
  builder.SetMaxReceiveMessageSize(-1);
  builder.RegisterService(&identity);
  builder.RegisterService(&node);
  builder.RegisterCallbackGenericService(&echo);
  auto server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "cannot listen on " << opts.endpoint << "\n";
    return 1;
  }
  std::cerr << "test csi driver listening on " << opts.endpoint << std::endl;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([&] {
    int sig;
    sigwait(&set, &sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }).detach();
  server->Wait();
  return 0;
}

#include "csi-sidecar/proxy.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include "core/log.h"
#include "proto/csi.grpc.pb.h"

namespace stateguard::csi {

namespace {

constexpr char kStage[] = "/csi.v1.Node/NodeStageVolume";
constexpr char kPublish[] = "/csi.v1.Node/NodePublishVolume";

using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

/// Metadata the gRPC library sets itself (pseudo-headers, transport headers, grpc-*).
bool reservedKey(const grpc::string_ref& key) {
  std::string_view k(key.data(), key.size());
  return k.empty() || k[0] == ':' || k.rfind("grpc-", 0) == 0 || k == "content-type" ||
         k == "user-agent" || k == "te";
}

std::string toString(const grpc::string_ref& s) { return std::string(s.data(), s.size()); }

bool parseBuffer(const grpc::ByteBuffer& buffer, google::protobuf::Message& message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return message.ParseFromString(bytes);
}

bool multiNode(const ::csi::v1::VolumeCapability& cap) {
  using Mode = ::csi::v1::VolumeCapability::AccessMode;
  switch (cap.access_mode().mode()) {
    case Mode::MULTI_NODE_READER_ONLY:
    case Mode::MULTI_NODE_SINGLE_WRITER:
    case Mode::MULTI_NODE_MULTI_WRITER:
      return true;
    default:
      return false;
  }
}

std::map<std::string, std::string> toMap(const google::protobuf::Map<std::string, std::string>& m) {
  return std::map<std::string, std::string>(m.begin(), m.end());
}

}  // namespace

/// One call from kubelet. Deletes itself when gRPC is done with it.
class ProxyReactor : public grpc::ServerGenericBidiReactor {
 public:
  ProxyReactor(CsiProxy* proxy, grpc::GenericCallbackServerContext* ctx)
      : proxy_(proxy), ctx_(ctx), started_(std::chrono::steady_clock::now()) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message received"));
      return;
    }
    const std::string& method = ctx_->method();
    if (method == kStage || method == kPublish) {
      // Probing reads the device: never on a gRPC thread.
      std::thread([this] { guarded(); }).detach();
      return;
    }
    forward([this](const grpc::Status& s) { respond(s); });
  }

  void OnCancel() override { client_.TryCancel(); }
  void OnDone() override { delete this; }

 private:
  void prepareClientContext() {
    client_.set_deadline(ctx_->deadline());
    for (const auto& [key, value] : ctx_->client_metadata()) {
      if (reservedKey(key)) continue;
      client_.AddMetadata(toString(key), toString(value));
    }
  }

  template <typename Done>
  void forward(Done done) {
    prepareClientContext();
    proxy_->stub().UnaryCall(&client_, ctx_->method(), grpc::StubOptions(), &request_, &response_,
                             std::move(done));
  }

  grpc::Status forwardAndWait() {
    std::promise<grpc::Status> promise;
    auto result = promise.get_future();
    forward([&promise](const grpc::Status& s) { promise.set_value(s); });
    return result.get();
  }

  /// Answers with the driver's response, metadata and status.
  void respond(const grpc::Status& status) {
    for (const auto& [key, value] : client_.GetServerInitialMetadata()) {
      if (!reservedKey(key)) ctx_->AddInitialMetadata(toString(key), toString(value));
    }
    for (const auto& [key, value] : client_.GetServerTrailingMetadata()) {
      if (!reservedKey(key)) ctx_->AddTrailingMetadata(toString(key), toString(value));
    }
    observe(status.error_code());
    if (status.ok()) {
      StartWriteAndFinish(&response_, grpc::WriteOptions(), status);
    } else {
      Finish(status);
    }
  }

  /// Answers with a status of the sidecar's own (refusal, bad request).
  void finish(const grpc::Status& status) {
    observe(status.error_code());
    Finish(status);
  }

  void observe(grpc::StatusCode code) {
    if (!proxy_->metrics()) return;
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    proxy_->metrics()->observe(proxy_->guard()->driverName(), ctx_->method(),
                               static_cast<int>(code), seconds);
  }

  void guarded() {
    GuardCall call;
    const bool stage = ctx_->method() == kStage;
    call.method = stage ? "NodeStageVolume" : "NodePublishVolume";
    if (stage) {
      ::csi::v1::NodeStageVolumeRequest req;
      if (!parseBuffer(request_, req)) {
        return finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "stateguard: cannot parse NodeStageVolumeRequest"));
      }
      call.inputs = {req.volume_id(), toMap(req.publish_context()), toMap(req.volume_context())};
      call.targetPath = req.staging_target_path();
      call.mount = !req.volume_capability().has_block();
      call.sharedAccess = multiNode(req.volume_capability());
      call.fullCheck = true;
    } else {
      ::csi::v1::NodePublishVolumeRequest req;
      if (!parseBuffer(request_, req)) {
        return finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "stateguard: cannot parse NodePublishVolumeRequest"));
      }
      call.inputs = {req.volume_id(), toMap(req.publish_context()), toMap(req.volume_context())};
      call.targetPath = req.target_path();
      call.mount = !req.volume_capability().has_block();
      call.sharedAccess = multiNode(req.volume_capability());
      call.fullCheck = proxy_->publishIsFirstUse();
    }
    Guard* guard = proxy_->guard();
    std::shared_ptr<std::mutex> volumeLock = guard->volumeLock(call.inputs.volumeId);
    std::unique_lock lock(*volumeLock);
    GuardState state = guard->before(call);
    if (!state.decision.allow) {
      lock.unlock();
      return finish(grpc::Status(static_cast<grpc::StatusCode>(state.decision.grpcCode),
                                 state.decision.message));
    }
    grpc::Status status = forwardAndWait();
    if (status.ok()) {
      if (auto refusal = guard->after(call, state)) {
        lock.unlock();
        return finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, *refusal));
      }
    }
    lock.unlock();
    respond(status);
  }

  CsiProxy* proxy_;
  grpc::GenericCallbackServerContext* ctx_;
  std::chrono::steady_clock::time_point started_;
  grpc::ClientContext client_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

class CsiProxy::Service : public grpc::CallbackGenericService {
 public:
  explicit Service(CsiProxy* proxy) : proxy_(proxy) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    return new ProxyReactor(proxy_, ctx);
  }

 private:
  CsiProxy* proxy_;
};

CsiProxy::CsiProxy(std::string driverAddress, Guard* guard, SidecarMetrics* metrics)
    : driverAddress_(std::move(driverAddress)), guard_(guard), metrics_(metrics) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(driverAddress_, grpc::InsecureChannelCredentials(), args);
  stub_ = std::make_unique<grpc::GenericStub>(channel_);
  service_ = std::make_unique<Service>(this);
}

CsiProxy::~CsiProxy() { shutdown(); }

Status CsiProxy::start(const std::string& address) {
  const std::string prefix = "unix://";
  if (address.rfind(prefix, 0) == 0) {
    std::string path = address.substr(prefix.size());
    if (path.empty() || path[0] != '/') {
      return makeError("--csi-address " + address + ": expected unix:///absolute/path");
    }
    ::unlink(path.c_str());  // a socket left by an earlier run would make bind fail
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterCallbackGenericService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_) return makeError("cannot serve gRPC on " + address);
  return Ok{};
}

void CsiProxy::shutdown() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

void CsiProxy::wait() {
  if (server_) server_->Wait();
}

bool CsiProxy::learnDriver(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::system_clock::now() + timeout;
  if (!driverKnown_) {
    auto identity = ::csi::v1::Identity::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    ::csi::v1::GetPluginInfoResponse info;
    grpc::Status s = identity->GetPluginInfo(&ctx, ::csi::v1::GetPluginInfoRequest(), &info);
    if (!s.ok()) return false;
    guard_->setDriverName(info.name());
    driverKnown_ = true;
  }
  if (!stageUnstageKnown_) {
    auto node = ::csi::v1::Node::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    ::csi::v1::NodeGetCapabilitiesResponse caps;
    grpc::Status s =
        node->NodeGetCapabilities(&ctx, ::csi::v1::NodeGetCapabilitiesRequest(), &caps);
    if (!s.ok()) return false;
    bool stage = false;
    for (const auto& c : caps.capabilities()) {
      if (c.has_rpc() &&
          c.rpc().type() == ::csi::v1::NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME) {
        stage = true;
      }
    }
    hasStageUnstage_ = stage;
    stageUnstageKnown_ = true;
  }
  return true;
}

}  // namespace stateguard::csi

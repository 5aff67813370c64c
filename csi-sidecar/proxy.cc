#include "csi-sidecar/proxy.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "core/log.h"
#include "csi-sidecar/digest.h"
#include "proto/csi.grpc.pb.h"

namespace stateguard::csi {

namespace {

constexpr size_t kGuardWorkers = 4;

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
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
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

/// The arguments the CSI spec marks REQUIRED for the call, checked before the guard sees it: a
/// driver must answer INVALID_ARGUMENT when one is missing (csi-sanity checks that), and the
/// guard must not judge a request it cannot understand ("no capability" is not "mount").
/// `method` names the call, `pathField` the path it requires; "" when the request is well formed.
std::string missingArgument(const std::string& method, const std::string& volumeId,
                            const std::string& path, const char* pathField,
                            const ::csi::v1::VolumeCapability* capability) {
  std::string missing;
  if (volumeId.empty()) {
    missing = "volume_id";
  } else if (path.empty()) {
    missing = pathField;
  } else if (capability == nullptr) {
    missing = "volume_capability";
  } else if (!capability->has_mount() && !capability->has_block()) {
    missing = "volume_capability.access_type (mount or block)";
  }
  if (missing.empty()) return "";
  return method + " without " + missing +
         ": the CSI spec requires it, so the request was answered INVALID_ARGUMENT here and "
         "never reached the driver; nothing was mounted or formatted. Fix the caller.";
}

std::map<std::string, std::string> toMap(const google::protobuf::Map<std::string, std::string>& m) {
  return std::map<std::string, std::string>(m.begin(), m.end());
}

}  // namespace

/// One call from kubelet, driven by completion-queue events; deletes itself when finished.
class ProxyCall {
 public:
  explicit ProxyCall(CsiProxy* proxy) : proxy_(proxy), stream_(&server_) {
    proxy_->service_.RequestCall(&server_, &stream_, proxy_->cq_.get(), proxy_->cq_.get(),
                                 tag(kAccepted));
  }

  enum Event { kAccepted, kRead, kForwarded, kFinished };
  struct Tag {
    ProxyCall* call;
    Event event;
  };

  /// A completion-queue event for this call.
  void on(Event event, bool ok) {
    switch (event) {
      case kAccepted:
        if (!ok) {  // shutting down: no call was accepted
          delete this;
          return;
        }
        new ProxyCall(proxy_);  // ready for the next one
        started_ = std::chrono::steady_clock::now();
        stream_.Read(&request_, tag(kRead));
        return;
      case kRead:
        if (!ok) {
          finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message received"));
          return;
        }
        if (isGuardedMethod(server_.method())) {
          guarded_ = true;
          proxy_->submit([this] { before(); });
        } else {
          forward();
        }
        return;
      case kForwarded:
        if (guarded_) {
          proxy_->submit([this] { after(); });
        } else {
          respond(status_);
        }
        return;
      case kFinished:
        delete this;
        return;
    }
  }

 private:
  void* tag(Event e) {
    tags_[e] = Tag{this, e};
    return &tags_[e];
  }

  void forward() {
    client_.set_deadline(server_.deadline());
    // A driver that is restarting (or whose connection is being re-established) is waited for
    // within kubelet's own deadline instead of failing the call at once. Without a deadline the
    // call would wait forever: then it fails fast, as before.
    if (server_.deadline() < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
      client_.set_wait_for_ready(true);
    }
    for (const auto& [key, value] : server_.client_metadata()) {
      if (!reservedKey(key)) client_.AddMetadata(toString(key), toString(value));
    }
    reader_ =
        proxy_->stub_->PrepareUnaryCall(&client_, server_.method(), request_, proxy_->cq_.get());
    reader_->StartCall();
    reader_->Finish(&response_, &status_, tag(kForwarded));
  }

  /// Answers with the driver's response, metadata and status.
  void respond(const grpc::Status& status) {
    for (const auto& [key, value] : client_.GetServerInitialMetadata()) {
      if (!reservedKey(key)) server_.AddInitialMetadata(toString(key), toString(value));
    }
    for (const auto& [key, value] : client_.GetServerTrailingMetadata()) {
      if (!reservedKey(key)) server_.AddTrailingMetadata(toString(key), toString(value));
    }
    observe(status.error_code());
    if (status.ok()) {
      stream_.WriteAndFinish(response_, grpc::WriteOptions(), status, tag(kFinished));
    } else {
      stream_.Finish(status, tag(kFinished));
    }
  }

  /// Answers with a status of the sidecar's own (refusal, bad request).
  void finish(const grpc::Status& status) {
    observe(status.error_code());
    stream_.Finish(status, tag(kFinished));
  }

  void observe(grpc::StatusCode code) {
    if (!proxy_->metrics_) return;
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    proxy_->metrics_->observe(proxy_->guard_->driverName(), server_.method(),
                              static_cast<int>(code), seconds);
  }

  /// On a guard worker: parse, judge, and forward only what the guard allows.
  void before() {
    const bool stage = server_.method() == kStageMethod;
    call_.method = stage ? "NodeStageVolume" : "NodePublishVolume";
    if (stage) {
      ::csi::v1::NodeStageVolumeRequest req;
      if (!parseBuffer(request_, req)) {
        return finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "stateguard: cannot parse NodeStageVolumeRequest"));
      }
      if (std::string bad = missingArgument(
              call_.method, req.volume_id(), req.staging_target_path(), "staging_target_path",
              req.has_volume_capability() ? &req.volume_capability() : nullptr);
          !bad.empty()) {
        return finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, bad));
      }
      call_.inputs = {req.volume_id(), toMap(req.publish_context()), toMap(req.volume_context())};
      call_.targetPath = req.staging_target_path();
      call_.mount = !req.volume_capability().has_block();
      call_.sharedAccess = multiNode(req.volume_capability());
      call_.fullCheck = true;
    } else {
      ::csi::v1::NodePublishVolumeRequest req;
      if (!parseBuffer(request_, req)) {
        return finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "stateguard: cannot parse NodePublishVolumeRequest"));
      }
      if (std::string bad =
              missingArgument(call_.method, req.volume_id(), req.target_path(), "target_path",
                              req.has_volume_capability() ? &req.volume_capability() : nullptr);
          !bad.empty()) {
        return finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, bad));
      }
      call_.inputs = {req.volume_id(), toMap(req.publish_context()), toMap(req.volume_context())};
      call_.targetPath = req.target_path();
      call_.mount = !req.volume_capability().has_block();
      call_.sharedAccess = multiNode(req.volume_capability());
      call_.fullCheck = proxy_->publishIsFirstUse();
    }
    Guard* guard = proxy_->guard_;
    if (!guard->tryAcquire(call_.inputs.volumeId)) {
      // The CSI spec's answer when an operation on the volume is already pending.
      return finish(grpc::Status(grpc::StatusCode::ABORTED,
                                 "stateguard: another " + call_.method + " of volume " +
                                     shortenId(call_.inputs.volumeId) + " is being judged; retry"));
    }
    state_ = guard->before(call_);
    if (!state_.decision.allow) {
      guard->release(call_.inputs.volumeId);
      return finish(grpc::Status(static_cast<grpc::StatusCode>(state_.decision.grpcCode),
                                 state_.decision.message));
    }
    forward();
  }

  /// On a guard worker, once the driver answered: the post-stage check.
  void after() {
    Guard* guard = proxy_->guard_;
    std::optional<std::string> refusal;
    if (status_.ok()) {
      refusal = guard->after(call_, state_, [this](const GuardCall& c) { return proxy_->undo(c); });
    }
    guard->release(call_.inputs.volumeId);
    if (refusal) return finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, *refusal));
    respond(status_);
  }

  CsiProxy* proxy_;
  grpc::GenericServerContext server_;
  grpc::GenericServerAsyncReaderWriter stream_;
  grpc::ClientContext client_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> reader_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  std::chrono::steady_clock::time_point started_;
  bool guarded_ = false;
  GuardCall call_;
  GuardState state_;
  Tag tags_[4];
};

CsiProxy::CsiProxy(std::string driverAddress, Guard* guard, SidecarMetrics* metrics,
                   ProxyOptions options)
    : driverAddress_(std::move(driverAddress)),
      options_(options),
      guard_(guard),
      metrics_(metrics) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // the driver's answers come back whole
  args.SetMaxSendMessageSize(-1);
  const int backoff = static_cast<int>(options_.maxReconnectBackoff.count());
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(backoff, 100));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(backoff, 100));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff);
  channel_ = grpc::CreateCustomChannel(driverAddress_, grpc::InsecureChannelCredentials(), args);
  stub_ = std::make_unique<grpc::GenericStub>(channel_);
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
  builder.SetMaxReceiveMessageSize(options_.maxReceiveMessageBytes);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterAsyncGenericService(&service_);
  cq_ = builder.AddCompletionQueue();
  server_ = builder.BuildAndStart();
  if (!server_) return makeError("cannot serve gRPC on " + address);
  new ProxyCall(this);
  queueThread_ = std::thread([this] { runQueue(); });
  for (size_t i = 0; i < kGuardWorkers; ++i) workers_.emplace_back([this] { runWorker(); });
  std::lock_guard lock(lifecycleMu_);
  started_ = true;
  return Ok{};
}

void CsiProxy::runQueue() {
  void* raw = nullptr;
  bool ok = false;
  while (cq_->Next(&raw, &ok)) {
    auto* t = static_cast<ProxyCall::Tag*>(raw);
    t->call->on(t->event, ok);
  }
}

void CsiProxy::runWorker() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(jobsMu_);
      jobsCv_.wait(lock, [this] { return stopWorkers_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to do
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

void CsiProxy::submit(std::function<void()> job) {
  {
    std::lock_guard lock(jobsMu_);
    if (!stopWorkers_) {
      jobs_.push_back(std::move(job));
      jobsCv_.notify_one();
      return;
    }
  }
  job();  // shutting down, the workers are gone: finish the call here
}

void CsiProxy::shutdown() {
  {
    std::lock_guard lock(lifecycleMu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
  }
  // Calls in flight get 5 s; then their pending operations complete as cancelled. The queue
  // thread keeps draining meanwhile, so workers can still finish their calls.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  {
    std::lock_guard lock(jobsMu_);
    stopWorkers_ = true;
  }
  jobsCv_.notify_all();
  for (auto& w : workers_) w.join();
  cq_->Shutdown();
  queueThread_.join();
  lifecycleCv_.notify_all();
}

void CsiProxy::wait() {
  std::unique_lock lock(lifecycleMu_);
  lifecycleCv_.wait(lock, [this] { return !started_ || stopped_; });
}

std::string CsiProxy::probeDriver(std::chrono::milliseconds timeout) {
  auto identity = ::csi::v1::Identity::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  ::csi::v1::ProbeResponse resp;
  grpc::Status s = identity->Probe(&ctx, ::csi::v1::ProbeRequest(), &resp);
  if (!s.ok()) {
    return "the CSI driver at " + driverAddress_ + " did not answer Probe (" +
           std::to_string(static_cast<int>(s.error_code())) + " " + s.error_message() + ")";
  }
  // An absent `ready` means ready (CSI spec, Probe).
  if (resp.has_ready() && !resp.ready().value()) {
    return "the CSI driver at " + driverAddress_ + " answered Probe with ready=false";
  }
  return "";
}

std::string CsiProxy::undo(const GuardCall& call) {
  auto node = ::csi::v1::Node::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status s;
  if (call.method == "NodeStageVolume") {
    ::csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(call.inputs.volumeId);
    req.set_staging_target_path(call.targetPath);
    ::csi::v1::NodeUnstageVolumeResponse resp;
    s = node->NodeUnstageVolume(&ctx, req, &resp);
  } else {
    ::csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(call.inputs.volumeId);
    req.set_target_path(call.targetPath);
    ::csi::v1::NodeUnpublishVolumeResponse resp;
    s = node->NodeUnpublishVolume(&ctx, req, &resp);
  }
  if (s.ok()) return "";
  return "code " + std::to_string(static_cast<int>(s.error_code())) + ": " + s.error_message();
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

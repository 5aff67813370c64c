// csi-proxy-bench: the per-call overhead of stateguard-csi, measured side by side against calling
// the CSI driver directly, in one run. Used by bench/csi-proxy-bench.sh, which starts
// stateguard-test-csi-driver and stateguard-csi in front of it.
//
//   csi-proxy-bench --direct unix:///T/driver.sock --proxy unix:///T/sg.sock
//       [--calls N] [--rounds R] [--warmup W] [--concurrency C] [--seconds S] [--load-rounds R]
//       [--driver-pid PID] [--proxy-pid PID]
//       [--stage-dir DIR --block-volume ID --mount-volume ID [--stage-calls N]]
//
// Phases, each for both targets ("direct" = the driver's socket, "proxy" = stateguard-csi's):
//  0. the floor, without gRPC: the same interleaved ping-pong over unix sockets, direct and
//     through a forked relay process, i.e. what one more process on the path costs on this
//     machine before any gRPC work (the --calls/--rounds/--warmup of phase 1).
//  1. sequential unary calls, one in flight: NodeGetCapabilities and Identity Probe (forwarded,
//     not guarded). Warm-up first, then R rounds of N/R calls per target; the order of the two
//     targets alternates from round to round (ABBA...) so drift (other load, CPU frequency)
//     falls on both.
//  2. load: C threads calling NodeGetCapabilities in a closed loop for S seconds per target,
//     alternating targets, --load-rounds times. Calls/s, latency under load and the server
//     processes' CPU time per call (from /proc/PID/stat, when the pids are given).
//  3. guarded NodeStageVolume (information only): a raw block volume (not probed) and a mount
//     volume whose device is an ext4 image (libblkid probe before and after, ledger write with
//     fsync, two audit lines).
// Each call gets a fresh ClientContext with a 30 s deadline, as kubelet sets one.
// Output: human-readable tables and one parseable "BENCH key=value ..." line per measurement.

#include <grpcpp/grpcpp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proto/csi.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string direct, proxy;
  int calls = 20000;
  int rounds = 10;
  int warmup = 2000;
  int concurrency = 8;
  double seconds = 3;
  int loadRounds = 2;
  long driverPid = 0, proxyPid = 0;
  std::string stageDir, blockVolume, mountVolume;
  int stageCalls = 100;
};
Options opts;

/// One target: a channel (one HTTP/2 connection over the unix socket) and stubs.
struct Target {
  std::string name;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<csi::v1::Node::Stub> node;
  std::unique_ptr<csi::v1::Identity::Stub> identity;
};

Target makeTarget(const std::string& name, const std::string& address) {
  Target t;
  t.name = name;
  grpc::ChannelArguments args;
  // One channel per target; without this gRPC may share a subchannel between channels.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  t.channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  t.node = csi::v1::Node::NewStub(t.channel);
  t.identity = csi::v1::Identity::NewStub(t.channel);
  return t;
}

void setDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

[[noreturn]] void die(const std::string& message) {
  std::cerr << "csi-proxy-bench: " << message << std::endl;
  std::exit(1);
}

/// One call; returns its latency in microseconds. Any error status ends the benchmark: the
/// figures are only meaningful for calls that went all the way through.
using Call = std::function<grpc::Status(Target&)>;

double timed(Target& t, const Call& call, const char* what) {
  auto start = Clock::now();
  grpc::Status s = call(t);
  double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  if (!s.ok()) {
    die(std::string(what) + " via " + t.name + " failed: " + std::to_string(s.error_code()) + " " +
        s.error_message());
  }
  return us;
}

grpc::Status nodeGetCapabilities(Target& t) {
  grpc::ClientContext ctx;
  setDeadline(ctx);
  csi::v1::NodeGetCapabilitiesResponse resp;
  grpc::Status s = t.node->NodeGetCapabilities(&ctx, csi::v1::NodeGetCapabilitiesRequest(), &resp);
  if (s.ok() && resp.capabilities_size() == 0) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "no capabilities in the answer");
  }
  return s;
}

grpc::Status probe(Target& t) {
  grpc::ClientContext ctx;
  setDeadline(ctx);
  csi::v1::ProbeResponse resp;
  grpc::Status s = t.identity->Probe(&ctx, csi::v1::ProbeRequest(), &resp);
  if (s.ok() && !resp.ready().value()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "Probe answered not ready");
  }
  return s;
}

Call stageVolume(const std::string& volumeId, bool block) {
  return [volumeId, block](Target& t) {
    grpc::ClientContext ctx;
    setDeadline(ctx);
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(volumeId);
    req.set_staging_target_path(opts.stageDir + "/" + t.name + "-" + volumeId);
    auto* cap = req.mutable_volume_capability();
    if (block) {
      cap->mutable_block();
    } else {
      cap->mutable_mount()->set_fs_type("ext4");
    }
    cap->mutable_access_mode()->set_mode(csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    (*req.mutable_volume_context())["storage.kubernetes.io/csiProvisionerIdentity"] = "bench";
    csi::v1::NodeStageVolumeResponse resp;
    return t.node->NodeStageVolume(&ctx, req, &resp);
  };
}

// ---- statistics ----

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  if (rank == 0) rank = 1;
  return sorted[std::min(rank, sorted.size()) - 1];
}

struct Summary {
  size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

Summary summarise(std::vector<double> v) {
  Summary s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  if (v.empty()) return s;
  s.p50 = percentile(v, 0.50);
  s.p90 = percentile(v, 0.90);
  s.p99 = percentile(v, 0.99);
  s.p999 = percentile(v, 0.999);
  s.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  return s;
}

/// utime + stime of a process in seconds (0 when no pid or unreadable).
double processCpuSeconds(long pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // Fields after the command name (which is in parentheses and may contain spaces).
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) {
      stime = std::stod(field);
      break;
    }
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double ownCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

/// Busy and total jiffies of the whole machine, for the share used by other processes.
std::pair<double, double> machineJiffies() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  double v[10] = {};
  for (double& x : v) in >> x;
  double total = 0;
  for (double x : v) total += x;
  double idle = v[3] + v[4];
  return {total - idle, total};
}

/// CPU use of the processes involved and of the whole machine, for "other" shares.
struct CpuSnapshot {
  double ours = 0;  ///< driver + sidecar + this process, seconds
  std::pair<double, double> machine;
  static CpuSnapshot take() {
    CpuSnapshot s;
    s.ours = processCpuSeconds(opts.driverPid) + processCpuSeconds(opts.proxyPid) + ownCpuSeconds();
    s.machine = machineJiffies();
    return s;
  }
  /// Share of the machine's CPU time used by other processes since `before`.
  static double otherShare(const CpuSnapshot& before, const CpuSnapshot& after) {
    const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double busy = (after.machine.first - before.machine.first) / tick;
    const double total = (after.machine.second - before.machine.second) / tick;
    if (total <= 0) return 0;
    return std::max(0.0, (busy - (after.ours - before.ours)) / total);
  }
};

void printRow(const char* label, const Summary& s) {
  std::printf("  %-34s %8zu %9.1f %9.1f %9.1f %9.1f %9.1f\n", label, s.n, s.p50, s.p90, s.p99,
              s.p999, s.max);
}

void printHeader(const char* title) {
  std::printf("%s\n  %-34s %8s %9s %9s %9s %9s %9s\n", title, "", "calls", "p50", "p90", "p99",
              "p99.9", "max");
}

void benchLine(const std::string& phase, const std::string& method, const std::string& target,
               const Summary& s, const std::string& extra = "") {
  std::printf(
      "BENCH phase=%s method=%s target=%s n=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f "
      "p999_us=%.1f max_us=%.1f mean_us=%.1f%s\n",
      phase.c_str(), method.c_str(), target.c_str(), s.n, s.p50, s.p90, s.p99, s.p999, s.max,
      s.mean, extra.c_str());
}

/// The "added" line of a comparison: `fields` only (" added_p50_us=... ...").
void addedLine(const std::string& phase, const std::string& method, const std::string& fields) {
  std::printf("BENCH phase=%s method=%s target=added%s\n", phase.c_str(), method.c_str(),
              fields.c_str());
}

// ---- phases ----

/// Sequential calls, interleaved per round. Returns latencies per target (0 = direct, 1 = proxy).
std::vector<std::vector<double>> sequential(Target* targets[2], const Call& call, const char* what,
                                            int calls, int rounds, int warmup) {
  for (int i = 0; i < warmup; ++i) {
    for (int t = 0; t < 2; ++t) timed(*targets[t], call, what);
  }
  std::vector<std::vector<double>> out(2);
  const int perRound = std::max(1, calls / rounds);
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const int t = (r % 2 == 0) ? k : 1 - k;  // ABBA: who goes first alternates
      for (int i = 0; i < perRound; ++i) out[t].push_back(timed(*targets[t], call, what));
    }
  }
  return out;
}

struct LoadResult {
  std::vector<double> latencies;
  size_t calls = 0;
  double seconds = 0;
  double driverCpu = 0, proxyCpu = 0, clientCpu = 0;
  double otherShare = 0;  ///< share of the machine used by processes other than these three
};

void load(Target& t, LoadResult& result) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> perThread(static_cast<size_t>(opts.concurrency));
  std::vector<std::thread> threads;
  const double driverCpu0 = processCpuSeconds(opts.driverPid);
  const double proxyCpu0 = processCpuSeconds(opts.proxyPid);
  const double clientCpu0 = ownCpuSeconds();
  const auto machine0 = machineJiffies();
  const auto start = Clock::now();
  for (int i = 0; i < opts.concurrency; ++i) {
    threads.emplace_back([&, i] {
      auto& mine = perThread[static_cast<size_t>(i)];
      mine.reserve(200000);
      while (!stop.load(std::memory_order_relaxed)) {
        mine.push_back(timed(t, nodeGetCapabilities, "NodeGetCapabilities"));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(opts.seconds));
  stop = true;
  for (auto& th : threads) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const auto machine1 = machineJiffies();
  const double driverCpu = processCpuSeconds(opts.driverPid) - driverCpu0;
  const double proxyCpu = processCpuSeconds(opts.proxyPid) - proxyCpu0;
  const double clientCpu = ownCpuSeconds() - clientCpu0;
  size_t n = 0;
  for (auto& v : perThread) {
    n += v.size();
    result.latencies.insert(result.latencies.end(), v.begin(), v.end());
  }
  result.calls += n;
  result.seconds += elapsed;
  result.driverCpu += driverCpu;
  result.proxyCpu += proxyCpu;
  result.clientCpu += clientCpu;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double busy = (machine1.first - machine0.first) / tick;
  const double total = (machine1.second - machine0.second) / tick;
  const double ours = driverCpu + (t.name == "proxy" ? proxyCpu : 0) + clientCpu;
  const double other = total > 0 ? std::max(0.0, (busy - ours) / total) : 0;
  result.otherShare = std::max(result.otherShare, other);
}

// ---- the floor: one more process hop over a unix socket, without gRPC ----
//
// Two 256-byte ping-pongs, interleaved like the gRPC calls: client <-> echo, and
// client <-> relay <-> echo (the relay forwards each message both ways with blocking reads and
// writes, the least any proxy process can do). The difference is what one extra process on the
// path costs on this machine (scheduler wake-ups, not gRPC), a lower bound for any proxy.
// Forked before gRPC is initialised.

constexpr size_t kRawMessage = 256;

bool readFull(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

bool writeFull(int fd, const char* buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = ::write(fd, buf + put, n - put);
    if (w <= 0) return false;
    put += static_cast<size_t>(w);
  }
  return true;
}

struct RawPath {
  int directFd = -1;   ///< client end of client <-> echo
  int relayedFd = -1;  ///< client end of client <-> relay <-> echo
  std::vector<pid_t> children;
};

/// Forks a child that runs `body` and exits; closes nothing of the parent's.
pid_t forkChild(const std::function<void()>& body) {
  pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  return pid;
}

RawPath startRawPath() {
  int direct[2], front[2], back[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, direct) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM, 0, front) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM, 0, back) != 0) {
    die("socketpair failed");
  }
  auto echo = [](int fd) {
    char buf[kRawMessage];
    while (readFull(fd, buf, sizeof buf) && writeFull(fd, buf, sizeof buf)) {
    }
  };
  RawPath path;
  // Each child keeps only its own ends; EOF on the client's end stops the chain.
  path.children.push_back(forkChild([&] {
    for (int fd : {direct[0], front[0], front[1], back[0], back[1]}) ::close(fd);
    echo(direct[1]);
  }));
  path.children.push_back(forkChild([&] {
    for (int fd : {direct[0], direct[1], front[0], back[1]}) ::close(fd);
    char buf[kRawMessage];
    while (readFull(front[1], buf, sizeof buf) && writeFull(back[0], buf, sizeof buf) &&
           readFull(back[0], buf, sizeof buf) && writeFull(front[1], buf, sizeof buf)) {
    }
  }));
  path.children.push_back(forkChild([&] {
    for (int fd : {direct[0], direct[1], front[0], front[1], back[0]}) ::close(fd);
    echo(back[1]);
  }));
  for (int fd : {direct[1], front[1], back[0], back[1]}) ::close(fd);
  path.directFd = direct[0];
  path.relayedFd = front[0];
  return path;
}

/// Interleaved ping-pongs over both raw paths; latencies per path (0 = direct, 1 = relayed).
std::vector<std::vector<double>> rawSequential(const RawPath& path, int calls, int rounds,
                                               int warmup) {
  char buf[kRawMessage] = {};
  auto once = [&](int fd) {
    auto start = Clock::now();
    if (!writeFull(fd, buf, sizeof buf) || !readFull(fd, buf, sizeof buf)) die("raw ping-pong");
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  };
  const int fds[2] = {path.directFd, path.relayedFd};
  for (int i = 0; i < warmup; ++i) {
    for (int fd : fds) once(fd);
  }
  std::vector<std::vector<double>> out(2);
  const int perRound = std::max(1, calls / rounds);
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const int t = (r % 2 == 0) ? k : 1 - k;
      for (int i = 0; i < perRound; ++i) out[t].push_back(once(fds[t]));
    }
  }
  return out;
}

void stopRawPath(RawPath& path) {
  ::close(path.directFd);
  ::close(path.relayedFd);
  for (pid_t pid : path.children) ::waitpid(pid, nullptr, 0);
}

void usage() {
  std::cerr << "usage: csi-proxy-bench --direct ADDR --proxy ADDR [--calls N] [--rounds R] "
               "[--warmup W] [--concurrency C] [--seconds S] [--load-rounds R] [--driver-pid P] "
               "[--proxy-pid P] [--stage-dir DIR --block-volume ID --mount-volume ID] "
               "[--stage-calls N]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (a == "--direct")
      opts.direct = next();
    else if (a == "--proxy")
      opts.proxy = next();
    else if (a == "--calls")
      opts.calls = std::stoi(next());
    else if (a == "--rounds")
      opts.rounds = std::stoi(next());
    else if (a == "--warmup")
      opts.warmup = std::stoi(next());
    else if (a == "--concurrency")
      opts.concurrency = std::stoi(next());
    else if (a == "--seconds")
      opts.seconds = std::stod(next());
    else if (a == "--load-rounds")
      opts.loadRounds = std::stoi(next());
    else if (a == "--driver-pid")
      opts.driverPid = std::stol(next());
    else if (a == "--proxy-pid")
      opts.proxyPid = std::stol(next());
    else if (a == "--stage-dir")
      opts.stageDir = next();
    else if (a == "--block-volume")
      opts.blockVolume = next();
    else if (a == "--mount-volume")
      opts.mountVolume = next();
    else if (a == "--stage-calls")
      opts.stageCalls = std::stoi(next());
    else
      usage();
  }
  if (opts.direct.empty() || opts.proxy.empty() || opts.rounds < 1 || opts.calls < 1) usage();

  // 0. The floor (before gRPC starts any thread: it forks).
  Summary rawSum[2];
  {
    RawPath path = startRawPath();
    auto lat = rawSequential(path, opts.calls, opts.rounds, opts.warmup);
    stopRawPath(path);
    rawSum[0] = summarise(lat[0]);
    rawSum[1] = summarise(lat[1]);
    benchLine("raw", "unix-socket-256B", "direct", rawSum[0]);
    benchLine("raw", "unix-socket-256B", "relayed", rawSum[1]);
    char added[160];
    std::snprintf(added, sizeof added, " added_p50_us=%.1f added_p99_us=%.1f added_p999_us=%.1f",
                  rawSum[1].p50 - rawSum[0].p50, rawSum[1].p99 - rawSum[0].p99,
                  rawSum[1].p999 - rawSum[0].p999);
    addedLine("raw", "unix-socket-256B", added);
  }

  Target direct = makeTarget("direct", opts.direct);
  Target proxy = makeTarget("proxy", opts.proxy);
  Target* targets[2] = {&direct, &proxy};
  for (Target* t : targets) {
    if (!t->channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
      die("cannot connect to " + t->name);
  }

  // 1. Sequential unary calls.
  struct Seq {
    const char* method;
    Call call;
  };
  const Seq seqs[] = {{"NodeGetCapabilities", nodeGetCapabilities}, {"Probe", probe}};
  std::map<std::string, std::pair<Summary, Summary>> seqResults;
  std::map<std::string, double> seqOther;
  for (const Seq& s : seqs) {
    const CpuSnapshot before = CpuSnapshot::take();
    auto lat = sequential(targets, s.call, s.method, opts.calls, opts.rounds, opts.warmup);
    seqOther[s.method] = CpuSnapshot::otherShare(before, CpuSnapshot::take());
    Summary d = summarise(lat[0]), p = summarise(lat[1]);
    benchLine("sequential", s.method, "direct", d);
    benchLine("sequential", s.method, "proxy", p);
    char added[160];
    std::snprintf(added, sizeof added,
                  " added_p50_us=%.1f added_p99_us=%.1f added_p999_us=%.1f other=%.0f%%",
                  p.p50 - d.p50, p.p99 - d.p99, p.p999 - d.p999, seqOther[s.method] * 100);
    addedLine("sequential", s.method, added);
    seqResults[s.method] = {d, p};
  }

  // 2. Concurrent load (NodeGetCapabilities).
  LoadResult loads[2];
  for (int r = 0; r < opts.loadRounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const int t = (r % 2 == 0) ? k : 1 - k;
      load(*targets[t], loads[t]);
    }
  }
  Summary loadSum[2];
  for (int t = 0; t < 2 && opts.loadRounds > 0; ++t) {
    const LoadResult& l = loads[t];
    loadSum[t] = summarise(l.latencies);
    char extra[320];
    std::snprintf(extra, sizeof extra,
                  " concurrency=%d calls_per_s=%.0f driver_cpu_us_per_call=%.1f "
                  "proxy_cpu_us_per_call=%.1f client_cpu_us_per_call=%.1f other_max=%.0f%%",
                  opts.concurrency, static_cast<double>(l.calls) / l.seconds,
                  l.driverCpu * 1e6 / static_cast<double>(l.calls),
                  t == 1 ? l.proxyCpu * 1e6 / static_cast<double>(l.calls) : 0.0,
                  l.clientCpu * 1e6 / static_cast<double>(l.calls), l.otherShare * 100);
    benchLine("load", "NodeGetCapabilities", targets[t]->name, loadSum[t], extra);
  }

  // 3. Guarded NodeStageVolume.
  struct StageCase {
    std::string label;
    Call call;
    int calls;
    int warmup;
  };
  std::vector<StageCase> stages;
  std::map<std::string, std::pair<Summary, Summary>> stageResults;
  if (!opts.stageDir.empty()) {
    if (!opts.blockVolume.empty()) {
      stages.push_back(
          {"NodeStageVolume-block", stageVolume(opts.blockVolume, true), opts.stageCalls * 5, 20});
    }
    if (!opts.mountVolume.empty()) {
      stages.push_back(
          {"NodeStageVolume-ext4", stageVolume(opts.mountVolume, false), opts.stageCalls, 3});
    }
  }
  for (const StageCase& c : stages) {
    auto lat =
        sequential(targets, c.call, c.label.c_str(), c.calls, std::min(10, c.calls), c.warmup);
    Summary d = summarise(lat[0]), p = summarise(lat[1]);
    benchLine("guarded", c.label, "direct", d);
    benchLine("guarded", c.label, "proxy", p);
    stageResults[c.label] = {d, p};
  }

  // Tables.
  std::printf(
      "\n== sequential unary calls, one in flight (latency in microseconds; %d calls per "
      "target and method in %d interleaved rounds after %d warm-up calls)\n",
      std::max(1, opts.calls / opts.rounds) * opts.rounds, opts.rounds, opts.warmup);
  for (const Seq& s : seqs) {
    const auto& [d, p] = seqResults[s.method];
    printHeader(s.method);
    printRow("driver direct", d);
    printRow("through stateguard-csi", p);
    std::printf("  %-34s %8s %9.1f %9.1f %9.1f %9.1f   (other processes: %.0f%% of the CPUs)\n",
                "added by the proxy", "", p.p50 - d.p50, p.p90 - d.p90, p.p99 - d.p99,
                p.p999 - d.p999, seqOther[s.method] * 100);
  }
  printHeader(
      "floor: 256-byte ping-pong over unix sockets, no gRPC (relay = one blocking "
      "read/write process in the middle)");
  printRow("direct", rawSum[0]);
  printRow("through a relay process", rawSum[1]);
  std::printf("  %-34s %8s %9.1f %9.1f %9.1f %9.1f\n", "added by the relay", "",
              rawSum[1].p50 - rawSum[0].p50, rawSum[1].p90 - rawSum[0].p90,
              rawSum[1].p99 - rawSum[0].p99, rawSum[1].p999 - rawSum[0].p999);
  if (opts.loadRounds > 0) {
    std::printf(
        "\n== load: %d callers in a closed loop, NodeGetCapabilities, %d x %.1f s per "
        "target, interleaved\n",
        opts.concurrency, opts.loadRounds, opts.seconds);
    std::printf("  %-24s %10s %9s %9s %9s %12s %12s %12s %7s\n", "", "calls/s", "p50", "p99",
                "p99.9", "driver cpu", "sidecar cpu", "client cpu", "other");
    for (int t = 0; t < 2; ++t) {
      const LoadResult& l = loads[t];
      const double n = static_cast<double>(l.calls);
      std::printf("  %-24s %10.0f %9.1f %9.1f %9.1f %12.1f %12s %12.1f %6.0f%%\n",
                  t == 0 ? "driver direct" : "through stateguard-csi", n / l.seconds,
                  loadSum[t].p50, loadSum[t].p99, loadSum[t].p999, l.driverCpu * 1e6 / n,
                  t == 1
                      ? std::to_string(static_cast<int>(std::lround(l.proxyCpu * 1e6 / n))).c_str()
                      : "-",
                  l.clientCpu * 1e6 / n, l.otherShare * 100);
    }
    {
      const double dr = static_cast<double>(loads[0].calls) / loads[0].seconds;
      const double pr = static_cast<double>(loads[1].calls) / loads[1].seconds;
      std::printf(
          "  proxy / direct calls/s: %.2f   (cpu columns: microseconds of CPU per call; "
          "other = max share of the machine used by other processes in a run)\n",
          pr / dr);
    }
  }
  if (!stages.empty()) {
    std::printf("\n== guarded NodeStageVolume (information, no target)\n");
    for (const StageCase& c : stages) {
      const auto& [d, p] = stageResults[c.label];
      printHeader(c.label.c_str());
      printRow("driver direct", d);
      printRow("through stateguard-csi", p);
      std::printf("  %-34s %8s %9.1f %9.1f %9.1f %9.1f\n", "added by the proxy", "", p.p50 - d.p50,
                  p.p90 - d.p90, p.p99 - d.p99, p.p999 - d.p999);
    }
  }
  std::fflush(stdout);
  return 0;
}

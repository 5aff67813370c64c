// probe-bench: times the in-process device probe (stateguard::csi::probeDevice) against
// `blkid -p -s TYPE -s PTTYPE -o export <image>` run as a child process, the way kubernetes
// mount-utils decides whether to format. Used by bench/probe-bench.sh; prints one block per image.
//
//   probe-bench [--runs N] [--blkid PATH] IMAGE...
//   probe-bench --json IMAGE...      (one probe each, the result as JSON)

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "csi-sidecar/probe.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

struct Timing {
  double best = 0;
  double median = 0;
};

Timing summarise(std::vector<double> micros) {
  std::sort(micros.begin(), micros.end());
  return {micros.front(), micros[micros.size() / 2]};
}

/// Runs blkid with stdout and stderr sent to /dev/null; returns its exit status (-1 if it could
/// not be run or was killed).
int runBlkid(const std::string& blkid, const std::string& image) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> args = {blkid,    "-p", "-s",     "TYPE", "-s",
                                   "PTTYPE", "-o", "export", image};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, blkid.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

/// What mount-utils' SafeFormatAndMount concludes from blkid's exit status.
const char* blkidVerdict(int code) {
  switch (code) {
    case 0:
      return "signature found (would mount)";
    case 2:
      return "\"unformatted\" (would run mkfs)";
    case 8:
      return "ambivalent (error, no mkfs in 2.38)";
    default:
      return "error";
  }
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  std::string blkid = "/usr/sbin/blkid";
  std::vector<std::string> images;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--blkid" && i + 1 < argc) {
      blkid = argv[++i];
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "usage: probe-bench [--runs N] [--blkid PATH] [--json] IMAGE...\n");
      return 2;
    } else {
      images.push_back(arg);
    }
  }
  if (images.empty()) {
    std::fprintf(stderr, "usage: probe-bench [--runs N] [--blkid PATH] [--json] IMAGE...\n");
    return 2;
  }

  if (json) {
    for (const std::string& image : images) {
      std::printf("%s\n", toJson(stateguard::csi::probeDevice(image)).dump(2).c_str());
    }
    return 0;
  }
  for (const std::string& image : images) {
    std::vector<double> probeTimes, blkidTimes;
    stateguard::csi::ProbeResult result;
    int blkidCode = -1;
    // Alternate the two so that neither enjoys a warmer cache than the other.
    for (int i = 0; i < runs; ++i) {
      auto t0 = Clock::now();
      result = stateguard::csi::probeDevice(image);
      auto t1 = Clock::now();
      blkidCode = runBlkid(blkid, image);
      auto t2 = Clock::now();
      probeTimes.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      blkidTimes.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    }
    const Timing p = summarise(probeTimes), b = summarise(blkidTimes);
    std::printf("== %s (%d runs each)\n", image.c_str(), runs);
    std::printf("  %-22s best %9.1f us  median %9.1f us  -> %s; %zu reads besides libblkid's\n",
                "probeDevice", p.best, p.median,
                std::string(stateguard::csi::toString(result.state)).c_str(), result.reads);
    std::printf("  %-22s best %9.1f us  median %9.1f us  -> exit %d: %s\n", "blkid -p (exec)",
                b.best, b.median, blkidCode, blkidVerdict(blkidCode));
    std::printf("  median ratio blkid/probe: %.1fx\n", b.median / p.median);
    std::printf("  probe: %s\n", result.summary().c_str());
    std::printf(
        "BENCH image=%s probe_best_us=%.1f probe_median_us=%.1f probe_state=%s "
        "blkid_best_us=%.1f blkid_median_us=%.1f blkid_exit=%d\n",
        image.c_str(), p.best, p.median,
        std::string(stateguard::csi::toString(result.state)).c_str(), b.best, b.median, blkidCode);
  }
  return 0;
}

// csi_front_driver_fuzz: bytes from a broken or hostile CSI driver -> the CSI sidecar's front
// (csi-sidecar/h2_front.cc): nghttp2's client session towards the driver plus the front's own
// callbacks (response headers and trailers relayed to kubelet, the response pipe and its
// flow-control consumption, resets and GOAWAY mapped to gRPC codes, held PING acks, a driver
// that closes mid-answer). A well-formed unary call from kubelet is routed to a driver socket
// that answers every connection with the input (after its own SETTINGS-less start: the input
// decides) and then closes; kubelet's side reads until its call ends.

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "csi-sidecar/h2_front.h"
#include "tests/support/h2_frames.h"

namespace {

/// kubelet: one unary call on stream 1 (no deadline, so a driver that is gone is answered at
/// once), then reads until the call ends (END_STREAM or RST_STREAM on stream 1, or GOAWAY) or
/// the front closes; 2 s at most.
void kubelet(int fd) {
  using stateguard::testing::h2Frame;
  const std::string request =
      stateguard::testing::kH2Preface + h2Frame(4, 0, 0, "") +
      h2Frame(1, 0x4, 1,
              stateguard::testing::grpcRequestHeaders("/csi.v1.Node/NodeGetVolumeStats")) +
      h2Frame(0, 0x1, 1, std::string("\0\0\0\0\x02\x0a\x00", 7));  // one 2-byte message
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    std::string in;
    bool done = false;
    while (!done) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) break;
      char buf[4096];
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      while (in.size() >= 9) {
        const size_t len = (static_cast<uint8_t>(in[0]) << 16) |
                           (static_cast<uint8_t>(in[1]) << 8) | static_cast<uint8_t>(in[2]);
        if (in.size() < 9 + len) break;
        const uint8_t type = static_cast<uint8_t>(in[3]);
        const uint8_t flags = static_cast<uint8_t>(in[4]);
        const uint32_t stream = (static_cast<uint32_t>(static_cast<uint8_t>(in[5]) & 0x7f) << 24) |
                                (static_cast<uint8_t>(in[6]) << 16) |
                                (static_cast<uint8_t>(in[7]) << 8) | static_cast<uint8_t>(in[8]);
        if (type == 7 ||
            (stream == 1 && (type == 3 || ((type == 0 || type == 1) && (flags & 1))))) {
          done = true;
        }
        in.erase(0, 9 + len);
      }
    }
  }
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/sg-front-driver-fuzz.XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    return std::string(made ? made : "/tmp");
  }();
  const std::string path = dir + "/driver.sock";
  ::unlink(path.c_str());
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 8) != 0) {
    if (listener >= 0) ::close(listener);
    return 0;
  }
  const std::string answer(reinterpret_cast<const char*>(data), size);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC) != 0) {
    ::close(listener);
    return 0;
  }
  // The driver: every connection gets the input, then the driver's end is closed for writing and
  // whatever the front sends is read until it hangs up. A byte on `wake` ends it.
  std::thread driver([&] {
    for (;;) {
      pollfd p[2] = {{listener, POLLIN, 0}, {wake[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0 || p[1].revents) return;
      int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::shutdown(c, SHUT_WR);
      char buf[4096];
      for (;;) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 2000) <= 0 || ::read(c, buf, sizeof buf) <= 0) break;
      }
      ::close(c);
    }
  });

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
    ::fcntl(sv[0], F_SETFL, O_NONBLOCK);  // as accept4 hands it to the front
    std::thread peer(kubelet, sv[1]);
    stateguard::csi::FrontOptions options;
    options.driverPath = path;
    options.guardPath = dir + "/guard.sock";  // absent: guarded calls are not what this drives
    {
      stateguard::csi::H2Front front(options, nullptr);
      front.serve(sv[0]);
    }
    peer.join();
  }
  const char byte = 0;
  (void)!::write(wake[1], &byte, 1);
  driver.join();
  ::close(wake[0]);
  ::close(wake[1]);
  ::close(listener);
  return 0;
}

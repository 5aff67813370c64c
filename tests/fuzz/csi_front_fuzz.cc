// csi_front_fuzz: bytes from a hostile HTTP/2 client (after the connection preface) -> the CSI
// sidecar's front (csi-sidecar/h2_front.cc): nghttp2's server session plus the front's own
// callbacks (routing by :path, header accounting, grpc-timeout, the request pipes and their
// flow-control consumption, trailers-only answers, resets, held PING acks). The driver and guard
// sockets do not exist, so every routed call is answered UNAVAILABLE, or waits within its
// grpc-timeout until the client goes away.

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "csi-sidecar/h2_front.h"

namespace {

/// Writes everything (blocking), then half-closes and reads until the front closes its end.
void client(int fd, std::string bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) break;  // the front closed first (a protocol error ends the connection)
    done += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  while (::read(fd, buf, sizeof buf) > 0) {
  }
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  ::fcntl(sv[0], F_SETFL, O_NONBLOCK);  // as accept4 hands it to the front
  std::thread peer(client, sv[1],
                   kPreface + std::string(reinterpret_cast<const char*>(data), size));
  stateguard::csi::FrontOptions options;
  options.driverPath = "/nonexistent/stateguard-fuzz/driver.sock";
  options.guardPath = "/nonexistent/stateguard-fuzz/guard.sock";
  {
    stateguard::csi::H2Front front(options, nullptr);
    front.serve(sv[0]);
  }
  peer.join();
  return 0;
}

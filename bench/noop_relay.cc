// noop-relay: the floor for any CSI proxy process. Listens on a unix socket and relays every
// connection's bytes to another unix socket and back, untouched (two blocking threads per
// connection, no gRPC, no parsing). bench/csi-real-bench.sh measures gRPC calls through it and
// through stateguard-csi against the same driver: what one more process on the path costs.
//
//   noop-relay LISTEN_PATH TARGET_PATH

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace {

int unixSocket(const std::string& path, bool listen) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return -1;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if (listen) {
    ::unlink(path.c_str());
    if (::bind(fd, sa, sizeof addr) != 0 || ::listen(fd, 64) != 0) return -1;
  } else if (::connect(fd, sa, sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Copies from `in` to `out` until either side closes, then shuts both down.
void pump(int in, int out) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out, buf + done, static_cast<size_t>(n - done));
      if (w <= 0) goto closed;
      done += w;
    }
  }
closed:
  ::shutdown(in, SHUT_RDWR);
  ::shutdown(out, SHUT_RDWR);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: noop-relay LISTEN_PATH TARGET_PATH\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const std::string target = argv[2];
  int listener = unixSocket(argv[1], true);
  if (listener < 0) {
    std::fprintf(stderr, "noop-relay: cannot listen on %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  std::fprintf(stderr, "noop-relay: %s -> %s\n", argv[1], argv[2]);
  for (;;) {
    int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    int driver = unixSocket(target, false);
    if (driver < 0) {
      ::close(client);
      continue;
    }
    std::thread([client, driver] {
      std::thread back([client, driver] { pump(driver, client); });
      pump(client, driver);
      back.join();
      ::close(client);
      ::close(driver);
    }).detach();
  }
}

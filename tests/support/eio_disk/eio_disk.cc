// stateguard-test-eio-disk IMAGE MOUNTPOINT: a FUSE filesystem for the CSI tests serving one file,
// MOUNTPOINT/disk, backed by IMAGE, whose reads can be made to fail with EIO and recover. A loop
// device over MOUNTPOINT/disk is then a real block device that reads badly for a moment: what
// device-mapper's dm-error/dm-flakey would give, on kernels without device-mapper.
//
// MOUNTPOINT/control takes one command per write:
//   ok                          every read succeeds again
//   fail-reads                  every read of disk fails with EIO
//   fail-reads OFFSET LENGTH    reads overlapping [OFFSET, OFFSET+LENGTH) fail with EIO
// Writes always reach IMAGE (a device whose reads fail may still take writes: mkfs can succeed).
// Reading control returns the state and counters, e.g. "fail-reads 0 1048576\nreads 12\n
// failed-reads 3\nwrites 0\n", so a test can check that the errors really reached the driver.
//
// Both files are opened with direct_io: no FUSE page cache answers a read the switch should fail.
// Runs in the foreground; SIGTERM/SIGINT unmount. Prints "eio-disk ready" once mounted.

#define FUSE_USE_VERSION 35
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

/// All state lives here; fuse_loop() is single-threaded, so no locking is needed.
struct Disk {
  int fd = -1;
  uint64_t size = 0;
  bool failing = false;
  uint64_t failOffset = 0, failLength = 0;  // failLength 0 = to the end
  uint64_t reads = 0, failedReads = 0, writes = 0;
  std::string pending;  // a control command written in several pieces
};
Disk disk;

bool overlapsFailure(uint64_t offset, uint64_t length) {
  if (!disk.failing) return false;
  const uint64_t end = disk.failLength == 0 ? UINT64_MAX : disk.failOffset + disk.failLength;
  return offset < end && offset + length > disk.failOffset;
}

std::string status() {
  std::string s = disk.failing ? "fail-reads " + std::to_string(disk.failOffset) + " " +
                                     std::to_string(disk.failLength)
                               : std::string("ok");
  return s + "\nreads " + std::to_string(disk.reads) + "\nfailed-reads " +
         std::to_string(disk.failedReads) + "\nwrites " + std::to_string(disk.writes) + "\n";
}

/// Applies one command line; false when it is not one.
bool command(const std::string& line) {
  char word[32] = {};
  unsigned long long offset = 0, length = 0;
  const int n = std::sscanf(line.c_str(), "%31s %llu %llu", word, &offset, &length);
  if (n >= 1 && std::strcmp(word, "ok") == 0) {
    disk.failing = false;
  } else if (n == 1 && std::strcmp(word, "fail-reads") == 0) {
    disk.failing = true;
    disk.failOffset = disk.failLength = 0;
  } else if (n == 3 && std::strcmp(word, "fail-reads") == 0 && length > 0) {
    disk.failing = true;
    disk.failOffset = offset;
    disk.failLength = length;
  } else {
    return false;
  }
  std::fprintf(stderr, "eio-disk: %s\n", line.c_str());
  return true;
}

int getattrOp(const char* path, struct stat* st, fuse_file_info*) {
  std::memset(st, 0, sizeof *st);
  if (std::strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
  } else if (std::strcmp(path, "/disk") == 0) {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(disk.size);
  } else if (std::strcmp(path, "/control") == 0) {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = 4096;  // room for status(); direct_io reads stop at what read returns
  } else {
    return -ENOENT;
  }
  return 0;
}

int readdirOp(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
              fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOENT;
  for (const char* name : {".", "..", "disk", "control"}) {
    fill(buf, name, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  }
  return 0;
}

int openOp(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path, "/disk") != 0 && std::strcmp(path, "/control") != 0) return -ENOENT;
  fi->direct_io = 1;
  return 0;
}

int readOp(const char* path, char* buf, size_t size, off_t offset, fuse_file_info*) {
  if (std::strcmp(path, "/control") == 0) {
    const std::string s = status();
    if (static_cast<size_t>(offset) >= s.size()) return 0;
    const size_t n = std::min(size, s.size() - static_cast<size_t>(offset));
    std::memcpy(buf, s.data() + offset, n);
    return static_cast<int>(n);
  }
  ++disk.reads;
  if (overlapsFailure(static_cast<uint64_t>(offset), size)) {
    ++disk.failedReads;
    return -EIO;
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(disk.fd, buf + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<int>(done);
}

int writeOp(const char* path, const char* buf, size_t size, off_t offset, fuse_file_info*) {
  if (std::strcmp(path, "/control") == 0) {
    disk.pending.append(buf, size);
    // A command ends with a newline; `echo` sends one, a bare write(2) may not: take both.
    std::string line = disk.pending;
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    disk.pending.clear();
    return command(line) ? static_cast<int>(size) : -EINVAL;
  }
  ++disk.writes;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(disk.fd, buf + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    done += static_cast<size_t>(n);
  }
  return static_cast<int>(done);
}

// `echo x > control` opens with O_TRUNC, which arrives as a truncate to 0.
int truncateOp(const char* path, off_t size, fuse_file_info*) {
  if (std::strcmp(path, "/control") == 0) return 0;
  return static_cast<uint64_t>(size) == disk.size ? 0 : -EPERM;
}

int fsyncOp(const char* path, int, fuse_file_info*) {
  if (std::strcmp(path, "/disk") == 0 && ::fdatasync(disk.fd) != 0) return -errno;
  return 0;
}

void* initOp(fuse_conn_info*, fuse_config* cfg) {
  // Attributes and names are never cached: control's status is always fresh.
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 1;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s IMAGE MOUNTPOINT\n", argv[0]);
    return 2;
  }
  disk.fd = ::open(argv[1], O_RDWR | O_CLOEXEC);
  struct stat st {};
  if (disk.fd < 0 || ::fstat(disk.fd, &st) != 0) {
    std::fprintf(stderr, "eio-disk: %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  disk.size = static_cast<uint64_t>(st.st_size);

  fuse_operations ops{};
  ops.getattr = getattrOp;
  ops.readdir = readdirOp;
  ops.open = openOp;
  ops.read = readOp;
  ops.write = writeOp;
  ops.truncate = truncateOp;
  ops.fsync = fsyncOp;
  ops.init = initOp;

  char arg0[] = "stateguard-test-eio-disk";
  char* args[] = {arg0, nullptr};
  fuse_args fargs = FUSE_ARGS_INIT(1, args);
  fuse* f = fuse_new(&fargs, &ops, sizeof ops, nullptr);
  if (f == nullptr) return 1;
  if (fuse_mount(f, argv[2]) != 0) {
    std::fprintf(stderr, "eio-disk: cannot mount at %s\n", argv[2]);
    fuse_destroy(f);
    return 1;
  }
  if (fuse_set_signal_handlers(fuse_get_session(f)) != 0) {
    fuse_unmount(f);
    fuse_destroy(f);
    return 1;
  }
  std::fprintf(stderr, "eio-disk ready: %s/disk over %s (%" PRIu64 " bytes)\n", argv[2], argv[1],
               disk.size);
  const int rc = fuse_loop(f);
  fuse_remove_signal_handlers(fuse_get_session(f));
  fuse_unmount(f);
  fuse_destroy(f);
  ::close(disk.fd);
  return rc == 0 ? 0 : 1;
}

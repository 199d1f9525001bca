// Unix-socket and fd primitives for the vhost-user control channel (see native.ts).
//
// Everything here runs synchronously on the JS thread, so every syscall is
// non-blocking (SOCK_NONBLOCK / MSG_DONTWAIT) and every fd is created close-on-exec:
// nothing may stall the event loop, and nothing may leak into child processes.
// Arguments coming from JS are validated first; bad ones throw TypeError/RangeError.
#include <napi.h>
#include <uv.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "napi_util.h"
#include "recv_fds.h"

namespace vhd {

ReceivedFds::~ReceivedFds() {
  for (int fd : fds) close(fd);
}

ssize_t RecvWithFds(int fd, void* buf, size_t len, size_t maxFds, int flags, ReceivedFds* out) {
  size_t ctrlLen = maxFds > 0 ? CMSG_SPACE(maxFds * sizeof(int)) : 0;
  std::vector<cmsghdr> ctrl(ctrlLen / sizeof(cmsghdr) + 1);  // cmsghdr-aligned storage
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrlLen > 0 ? ctrl.data() : nullptr;
  msg.msg_controllen = ctrlLen;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      memcpy(&rfd, p + i * sizeof(int), sizeof rfd);  // CMSG_DATA need not be int-aligned
      out->fds.push_back(rfd);
    }
  }
  out->truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  while (out->fds.size() > maxFds) {
    close(out->fds.back());
    out->fds.pop_back();
    out->truncated = true;
  }
  return n;
}

Napi::Object RecvResultObject(Napi::Env env, const char* data, size_t n, ReceivedFds* received) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("data", Napi::Buffer<char>::Copy(env, data, n));
  Napi::Array fds = Napi::Array::New(env, received->fds.size());
  for (size_t i = 0; i < received->fds.size(); i++) fds.Set(static_cast<uint32_t>(i), received->fds[i]);
  result.Set("fds", fds);
  result.Set("fdsTruncated", Napi::Boolean::New(env, received->truncated));
  received->fds.clear();  // ownership passes to JS
  return result;
}

}  // namespace vhd

namespace {

// Linux's SCM_MAX_FD: the kernel rejects more fds in one SCM_RIGHTS message.
constexpr int kMaxFds = 253;
// recvWithFds allocates maxBytes up front; vhost-user messages are a few KiB.
constexpr double kMaxRecvBytes = 16 * 1024 * 1024;
// memfd_create(2): names longer than this are rejected with EINVAL.
constexpr size_t kMaxMemfdName = 249;
// waitWritable's longest wait (tools only; the daemons never wait for a peer).
constexpr double kMaxWaitMs = 60 * 1000;

using vhd::napi::ThrowErrno;

/* ------------------------------------------------------------- arguments */

std::string ArgName(const char* fn, const char* arg) {
  return std::string(fn) + ": " + arg;
}

// An integer-valued Number in [min, max]; TypeError for non-numbers, RangeError otherwise.
double IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* arg,
              double min, double max) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), ArgName(fn, arg) + " must be a number");
  double v;
  if (!vhd::napi::IntegerIn(info[i], min, max, &v))
    throw Napi::RangeError::New(info.Env(), ArgName(fn, arg) + " must be an integer in [" +
                                                std::to_string(static_cast<int64_t>(min)) + ", " +
                                                std::to_string(static_cast<int64_t>(max)) + "]");
  return v;
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* arg = "fd") {
  return static_cast<int>(IntArg(info, i, fn, arg, 0, INT_MAX));
}

// A string without NUL bytes (the kernel would silently cut it there).
std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* arg) {
  std::string s = vhd::napi::StringArg(info, i, ArgName(fn, arg));
  if (s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(info.Env(), ArgName(fn, arg) + " must not contain NUL bytes");
  return s;
}

// Filesystem socket path that fits sun_path with its terminating NUL (no abstract sockets).
sockaddr_un PathArg(const Napi::CallbackInfo& info, size_t i, const char* fn, std::string* path) {
  *path = StringArg(info, i, fn, "path");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path->empty()) throw Napi::RangeError::New(info.Env(), ArgName(fn, "path") + " must not be empty");
  if (path->size() >= sizeof(addr.sun_path))
    throw Napi::RangeError::New(info.Env(), ArgName(fn, "path") + " is " + std::to_string(path->size()) +
                                                " bytes; a unix socket path holds at most " +
                                                std::to_string(sizeof(addr.sun_path) - 1));
  memcpy(addr.sun_path, path->data(), path->size());
  return addr;
}

/* -------------------------------------------------------------- fd guards */

// Every error path after socket() or recvmsg() must give the fd back to the kernel.
using FdGuard = vhd::napi::UniqueFd;

int NewUnixSocket(Napi::Env env) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  return fd;
}

/* ---------------------------------------------------------------- sockets */

// A socket file left behind by a dead server is removed so bind() succeeds; one that a
// live server still listens on is not stolen (two daemons on one path would otherwise
// both believe they own it). "Live" = a probe connect() succeeds or finds the backlog full.
void RemoveStaleSocket(Napi::Env env, const std::string& path, const sockaddr_un& addr) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;  // bind() reports the rest
  FdGuard probe(NewUnixSocket(env));
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ||
      errno == EAGAIN)
    ThrowErrno(env, EADDRINUSE, "bind", path);
  if (errno == ECONNREFUSED && unlink(path.c_str()) != 0 && errno != ENOENT)
    ThrowErrno(env, errno, "unlink", path);
}

// Removes the private directory of BindWithMode (and what is left in it) on every path out.
class PrivateDir {
 public:
  explicit PrivateDir(std::string path) : path_(std::move(path)) {}
  ~PrivateDir() {
    if (fd_ >= 0) {
      unlinkat(fd_, "s", 0);
      close(fd_);
    }
    rmdir(path_.c_str());
  }
  PrivateDir(const PrivateDir&) = delete;
  PrivateDir& operator=(const PrivateDir&) = delete;
  int fd_ = -1;
 private:
  std::string path_;
};

// Creates the socket file at `path` with exactly `mode`, never touching anything else.
// chmod(path) after bind() follows a symlink someone swapped in between (a root daemon would
// chmod the file it points to), and a umask around bind() is process-wide: every thread
// (libuv's pool, the engine, a ZeroMQ I/O thread) creating a file meanwhile would get it.
// Instead: bind in a fresh private directory (mkdtemp, 0700) next to `path` (through
// /proc/self/fd/N/s, so the long private path never hits sun_path's 108 bytes), chmod the
// socket there, where no one else can put a symlink, listen, then link() it to `path`. link()
// neither follows nor replaces what is at `path` (EEXIST, reported as EADDRINUSE as bind()
// would), and a unix socket is found through its inode, so connecting to the link works.
void BindWithMode(Napi::Env env, int fd, const std::string& path, mode_t mode, int backlog) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string tmpl = dir + "/.vhostd-bind-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) ThrowErrno(env, errno, "bind", path);
  PrivateDir priv(tmpl);
  priv.fd_ = open(tmpl.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (priv.fd_ < 0) ThrowErrno(env, errno, "bind", path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string inner = "/proc/self/fd/" + std::to_string(priv.fd_) + "/s";
  memcpy(addr.sun_path, inner.data(), inner.size());
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) ThrowErrno(env, errno, "bind", path);
  if (fchmodat(priv.fd_, "s", mode, 0) != 0) ThrowErrno(env, errno, "chmod", path);
  if (listen(fd, backlog) != 0) ThrowErrno(env, errno, "listen", path);
  if (linkat(priv.fd_, "s", AT_FDCWD, path.c_str(), 0) != 0)
    ThrowErrno(env, errno == EEXIST ? EADDRINUSE : errno, "bind", path);
}

// unixListen(path, backlog, mode?): with a mode the file is created with it (BindWithMode);
// without, it gets what the umask leaves.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  sockaddr_un addr = PathArg(info, 0, "unixListen", &path);
  int backlog = static_cast<int>(IntArg(info, 1, "unixListen", "backlog", 0, 65535));
  bool withMode = info.Length() > 2 && !info[2].IsUndefined();
  mode_t mode = withMode ? static_cast<mode_t>(IntArg(info, 2, "unixListen", "mode", 0, 0777)) : 0;

  RemoveStaleSocket(env, path, addr);
  FdGuard fd(NewUnixSocket(env));
  if (withMode) {
    BindWithMode(env, fd.get(), path, mode, backlog);
    return Napi::Number::New(env, fd.release());
  }
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    ThrowErrno(env, errno, "bind", path);
  if (listen(fd.get(), backlog) != 0) ThrowErrno(env, errno, "listen", path);
  return Napi::Number::New(env, fd.release());
}

// A unix-domain connect() never goes "in progress": it succeeds at once, or fails with
// ENOENT/ECONNREFUSED/EAGAIN (backlog full)/EACCES..., all of which we throw.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  sockaddr_un addr = PathArg(info, 0, "unixConnect", &path);
  FdGuard fd(NewUnixSocket(env));
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    ThrowErrno(env, errno, "connect", path);
  return Napi::Number::New(env, fd.release());
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = FdArg(info, 0, "unixAccept", "listenFd");
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return Napi::Number::New(env, fd);
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    // A client that gave up before we accepted it is not our error: try the next one.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    ThrowErrno(env, errno, "accept4");
  }
}

// One recvmsg(). The control buffer has room for maxFds fds; CMSG_SPACE rounds up, so
// the kernel may still install a few more, which we close: the caller asked for at most
// maxFds and must never own fds it does not know about.
Napi::Value RecvWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "recvWithFds");
  size_t maxBytes = static_cast<size_t>(IntArg(info, 1, "recvWithFds", "maxBytes", 1, kMaxRecvBytes));
  size_t maxFds = static_cast<size_t>(IntArg(info, 2, "recvWithFds", "maxFds", 0, kMaxFds));
  bool peek = info.Length() > 3 && info[3].ToBoolean().Value();

  std::unique_ptr<char[]> buf(new char[maxBytes]);
  vhd::ReceivedFds received;
  ssize_t n = vhd::RecvWithFds(fd, buf.get(), maxBytes, maxFds, peek ? MSG_PEEK : 0, &received);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, peek ? "recvmsg(MSG_PEEK)" : "recvmsg");
  }
  return vhd::RecvResultObject(env, buf.get(), static_cast<size_t>(n), &received);
}

// Copies up to maxBytes of what is queued on a socket without consuming it and without
// taking any fds (no control buffer: the kernel installs none). Lets a reader consume a
// whole vhost-user message with one recvmsg() once all of it has arrived, so a process
// killed between two reads never leaves half a message on a connection another process
// takes over. Returns null on EAGAIN.
Napi::Value PeekBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "peekBytes");
  size_t maxBytes = static_cast<size_t>(IntArg(info, 1, "peekBytes", "maxBytes", 1, kMaxRecvBytes));
  std::unique_ptr<char[]> buf(new char[maxBytes]);
  ssize_t n;
  do {
    n = recv(fd, buf.get(), maxBytes, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "recv(MSG_PEEK)");
  }
  return Napi::Buffer<char>::Copy(env, buf.get(), static_cast<size_t>(n));
}

// Sends as much of data as the socket takes right now, never waiting: returns the bytes
// that went (0 when the socket is full; then the fds did not go either). The fds ride in
// one SCM_RIGHTS with the first byte, so a caller that queues the rest (send_queue.ts)
// sends it without fds and a message's fds are never split from its first byte.
// Waiting here would freeze the event loop, and with it every VF and the HA heartbeats,
// for as long as one peer does not read (issue 17, item 6).
Napi::Value SendWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "sendWithFds");

  const char* data;
  size_t len;
  // Not IsBuffer(): on Node 20 it accepts any ArrayBufferView. A Buffer is a Uint8Array.
  if (info.Length() > 1 && info[1].IsTypedArray() &&
      info[1].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    auto a = info[1].As<Napi::Uint8Array>();
    data = reinterpret_cast<const char*>(a.Data());
    len = a.ByteLength();
  } else {
    throw Napi::TypeError::New(env, "sendWithFds: data must be a Buffer or Uint8Array");
  }

  if (info.Length() < 3 || !info[2].IsArray())
    throw Napi::TypeError::New(env, "sendWithFds: fds must be an array of fds");
  Napi::Array fdArray = info[2].As<Napi::Array>();
  if (fdArray.Length() > static_cast<uint32_t>(kMaxFds))
    throw Napi::RangeError::New(env, "sendWithFds: at most " + std::to_string(kMaxFds) +
                                         " fds per message, got " + std::to_string(fdArray.Length()));
  std::vector<int> fds;
  for (uint32_t i = 0; i < fdArray.Length(); i++) {
    Napi::Value v = fdArray.Get(i);
    double d;
    if (!vhd::napi::IntegerIn(v, 0, INT_MAX, &d))
      throw Napi::TypeError::New(env, "sendWithFds: fds[" + std::to_string(i) + "] must be an fd (integer >= 0)");
    fds.push_back(static_cast<int>(d));
  }
  // On a stream socket a zero-byte sendmsg() carries nothing, the fds included.
  if (len == 0) {
    if (!fds.empty()) throw Napi::RangeError::New(env, "sendWithFds: fds need at least one byte of data");
    return Napi::Number::New(env, 0);
  }

  std::vector<cmsghdr> ctrl(CMSG_SPACE(fds.size() * sizeof(int)) / sizeof(cmsghdr) + 1);
  size_t sent = 0;
  while (sent < len) {
    iovec iov{const_cast<char*>(data) + sent, len - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {
      msg.msg_control = ctrl.data();
      msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
      memset(ctrl.data(), 0, msg.msg_controllen);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    // MSG_NOSIGNAL: a vanished peer is an EPIPE error, not a process-killing SIGPIPE.
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // full: the caller queues the rest
    ThrowErrno(env, errno, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

// Waits up to timeoutMs for a socket to take more data (or report an error/hang-up, which
// the next send reports). For tools and graceful stops only: it blocks the calling thread.
Napi::Value WaitWritable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "waitWritable");
  int timeoutMs = static_cast<int>(IntArg(info, 1, "waitWritable", "timeoutMs", 0, kMaxWaitMs));
  pollfd pfd{fd, POLLOUT, 0};
  int r;
  do {
    r = poll(&pfd, 1, timeoutMs);
  } while (r < 0 && errno == EINTR);
  if (r < 0) ThrowErrno(env, errno, "poll");
  if (r > 0 && (pfd.revents & POLLNVAL)) ThrowErrno(env, EBADF, "poll");
  return Napi::Boolean::New(env, r > 0);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
    ThrowErrno(env, errno, "socketpair");
  FdGuard a(sv[0]), b(sv[1]);
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, sv[0]);
  result.Set(1u, sv[1]);
  a.release();
  b.release();
  return result;
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "peerCred");
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) ThrowErrno(env, errno, "getsockopt");
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

/* --------------------------------------------------------------- plain fds */

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "closeFd");
  // On Linux the fd is gone even when close() says EINTR: retrying could close a reused
  // fd. EBADF is thrown because it means a double close somewhere.
  if (close(fd) != 0 && errno != EINTR && errno != EINPROGRESS) ThrowErrno(env, errno, "close");
  return env.Undefined();
}

Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "dupFd");
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) ThrowErrno(env, errno, "fcntl");
  return Napi::Number::New(env, nfd);
}

// An open-file-description lock on a whole file: the kernel releases it when the last fd of
// that description closes, so a process killed with -9 never leaves it behind. HA uses one
// per VF so that exactly one process runs a VF's queues at any instant. Non-blocking: true
// when taken (or already ours), false when another description holds it.
Napi::Value OfdTryLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "ofdTryLock");
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return Napi::Boolean::New(env, true);
  if (errno == EAGAIN || errno == EACCES) return Napi::Boolean::New(env, false);
  ThrowErrno(env, errno, "fcntl(F_OFD_SETLK)");
}

Napi::Value EventFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned initial = static_cast<unsigned>(IntArg(info, 0, "eventFd", "initial", 0, UINT_MAX));
  int fd = eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "eventfd");
  return Napi::Number::New(env, fd);
}

Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "eventFdWrite");
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  // EAGAIN = counter saturated: the reader has an unread signal anyway.
  if (n < 0 && errno != EAGAIN) ThrowErrno(env, errno, "write");
  return env.Undefined();
}

Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "eventFdRead");
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    ThrowErrno(env, errno, "read");
  }
  if (n != sizeof value) ThrowErrno(env, EINVAL, "read");  // not an eventfd
  return Napi::Number::New(env, static_cast<double>(value));
}

// Sealable, so a front-end-style driver can hand out memory the receiver may trust.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "memfdCreate", "name");
  if (name.size() > kMaxMemfdName)
    throw Napi::RangeError::New(env, "memfdCreate: name is longer than " + std::to_string(kMaxMemfdName) + " bytes");
  double size = IntArg(info, 1, "memfdCreate", "size", 0, 9007199254740991.0);
  FdGuard fd(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd.get() < 0) ThrowErrno(env, errno, "memfd_create");
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) ThrowErrno(env, errno, "ftruncate");
  return Napi::Number::New(env, fd.release());
}

}  // namespace

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("recvWithFds", Napi::Function::New(env, RecvWithFds, "recvWithFds"));
  exports.Set("ofdTryLock", Napi::Function::New(env, OfdTryLock, "ofdTryLock"));
  exports.Set("peekBytes", Napi::Function::New(env, PeekBytes, "peekBytes"));
  exports.Set("sendWithFds", Napi::Function::New(env, SendWithFds, "sendWithFds"));
  exports.Set("waitWritable", Napi::Function::New(env, WaitWritable, "waitWritable"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("eventFd", Napi::Function::New(env, EventFd, "eventFd"));
  exports.Set("eventFdWrite", Napi::Function::New(env, EventFdWrite, "eventFdWrite"));
  exports.Set("eventFdRead", Napi::Function::New(env, EventFdRead, "eventFdRead"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
}

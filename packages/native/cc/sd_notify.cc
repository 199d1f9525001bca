// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (see native.ts).
//
// systemd (Type=notify) gives the service an AF_UNIX SOCK_DGRAM socket in $NOTIFY_SOCKET, a
// filesystem path or, with a leading '@', an abstract name. A notification is one datagram of
// newline-separated assignments ("READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1").
// systemd learns the sender's pid from the kernel (SCM_CREDENTIALS on its side), which is how
// NotifyAccess=main tells the main process from its children: we send from the calling
// process, never from a helper.
//
// Like everything on the JS thread: a fresh close-on-exec socket per call, a non-blocking send
// (MSG_DONTWAIT, MSG_NOSIGNAL). A full receive queue on systemd's side is EAGAIN, reported as
// an error rather than waited for: a watchdog ping that cannot be queued now is retried by the
// next timer tick.
//
// Test support: a receiver socket that records the sender's pid (SO_PASSCRED), so tests can
// play systemd's part and check that notifications come from the daemon's main process.
#include <napi.h>
#include <uv.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

// A notification is a handful of short assignments; systemd itself reads at most a few KiB.
constexpr size_t kMaxState = 4096;

[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = std::string()) {
  const char* code = uv_err_name(-err);
  std::string msg = std::string(syscall) + " " + code + " (" + uv_strerror(-err) + ")";
  if (!path.empty()) msg += ": " + path;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) e.Set("path", Napi::String::New(env, path));
  throw e;
}

// Fills addr from a $NOTIFY_SOCKET-style name: "/path" or "@abstract". Returns the address
// length, or 0 when the name is unusable (relative, empty, too long).
socklen_t FillAddr(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (name.size() < 2 || (name[0] != '/' && name[0] != '@')) return 0;
  if (name.size() > sizeof(addr->sun_path) - (name[0] == '/' ? 1 : 0)) return 0;
  std::memcpy(addr->sun_path, name.data(), name.size());
  if (name[0] == '@') {
    addr->sun_path[0] = '\0';  // abstract: the length, not a terminator, delimits the name
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  }
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// sdNotify(state): true when sent, false when $NOTIFY_SOCKET is unset or empty; throws on a
// malformed $NOTIFY_SOCKET or a failed send.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string state = StringArg(info, 0, "sdNotify: state");
  if (state.empty() || state.size() > kMaxState)
    throw Napi::RangeError::New(env, "sdNotify: state must be 1.." + std::to_string(kMaxState) + " bytes");
  // Read at every call (Node's process.env writes go through setenv): tests and callers may set
  // or clear it after start.
  const char* env_name = std::getenv("NOTIFY_SOCKET");
  if (env_name == nullptr || env_name[0] == '\0') return Napi::Boolean::New(env, false);
  std::string name(env_name);
  sockaddr_un addr;
  socklen_t len = FillAddr(name, &addr);
  if (len == 0) ThrowErrno(env, EINVAL, "sd_notify", name);

  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  iovec iov{const_cast<char*>(state.data()), state.size()};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t n;
  do n = sendmsg(fd.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, errno, "sendmsg", name);
  return Napi::Boolean::New(env, true);
}

/* ------------------------------------------------------------------ test support */

// _testNotifyListen(name): a non-blocking DGRAM socket bound to "/path" or "@abstract" that
// receives senders' credentials. Returns the fd (close it with closeFd).
Napi::Value TestNotifyListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "_testNotifyListen: name");
  sockaddr_un addr;
  socklen_t len = FillAddr(name, &addr);
  if (len == 0) ThrowErrno(env, EINVAL, "bind", name);
  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) ThrowErrno(env, errno, "setsockopt");
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) ThrowErrno(env, errno, "bind", name);
  return Napi::Number::New(env, fd.release());
}

// _testNotifyRecv(fd): one datagram { data, pid } (pid of the sending process, from the
// kernel), or null when none is queued.
Napi::Value TestNotifyRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "_testNotifyRecv: fd must be a number");
  double fdv = info[0].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(fdv) || std::trunc(fdv) != fdv || fdv < 0 || fdv > INT_MAX)
    throw Napi::RangeError::New(env, "_testNotifyRecv: fd must be an integer >= 0");
  char buf[kMaxState + 1];
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(ucred))];
  iovec iov{buf, sizeof(buf)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof(ctrl);
  ssize_t n;
  do n = recvmsg(static_cast<int>(fdv), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "recvmsg");
  }
  int pid = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred cred;
      std::memcpy(&cred, CMSG_DATA(c), sizeof(cred));
      pid = cred.pid;
    }
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("data", Napi::String::New(env, buf, static_cast<size_t>(n)));
  r.Set("pid", Napi::Number::New(env, pid));
  return r;
}

}  // namespace

void InitSdNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
  exports.Set("_testNotifyListen", Napi::Function::New(env, TestNotifyListen, "_testNotifyListen"));
  exports.Set("_testNotifyRecv", Napi::Function::New(env, TestNotifyRecv, "_testNotifyRecv"));
}

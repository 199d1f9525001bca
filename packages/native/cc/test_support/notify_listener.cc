// Test support: systemd's side of $NOTIFY_SOCKET, so tests can check that notifications come
// from the daemon's main process (the kernel tells the receiver the sender's pid).
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "napi_util.h"
#include "sd_notify.h"

namespace vhd::testing {
namespace {

using napi::StringArg;
using napi::ThrowErrno;
using Fd = napi::UniqueFd;

// notifyListen(name): a non-blocking DGRAM socket bound to "/path" or "@abstract" that
// receives senders' credentials. Returns the fd (close it with closeFd).
Napi::Value NotifyListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "notifyListen: name");
  sockaddr_un addr;
  socklen_t len = FillNotifyAddr(name, &addr);
  if (len == 0) ThrowErrno(env, EINVAL, "bind", name);
  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) ThrowErrno(env, errno, "setsockopt");
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) ThrowErrno(env, errno, "bind", name);
  return Napi::Number::New(env, fd.release());
}

// notifyRecv(fd): one datagram { data, pid, fds } (pid of the sending process, from the
// kernel; fds that rode on it, now the caller's), or null when none is queued.
Napi::Value NotifyRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double fdv = napi::IntArgAtLeast(info, 0, "notifyRecv: fd", 0, INT_MAX);
  char buf[kMaxNotifyState + 1];
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(kMaxNotifyFds * sizeof(int))];
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
  Napi::Array fds = Napi::Array::New(env);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
        fds.Set(static_cast<uint32_t>(fds.Length()), fd);
      }
    }
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred cred;
      std::memcpy(&cred, CMSG_DATA(c), sizeof(cred));
      pid = cred.pid;
    }
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("data", Napi::String::New(env, buf, static_cast<size_t>(n)));
  r.Set("pid", Napi::Number::New(env, pid));
  r.Set("fds", fds);
  return r;
}

}  // namespace

void InitNotifyListener(Napi::Env env, Napi::Object exports) {
  exports.Set("notifyListen", Napi::Function::New(env, NotifyListen, "notifyListen"));
  exports.Set("notifyRecv", Napi::Function::New(env, NotifyRecv, "notifyRecv"));
}

}  // namespace vhd::testing

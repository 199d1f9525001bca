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
// With fds (the file-descriptor store: "FDSTORE=1\nFDNAME=..."), they ride on the datagram as
// one SCM_RIGHTS; systemd keeps duplicates, the caller keeps its own.
//
// Tests play systemd's part with the test addon's listener (test_support/notify_listener.cc).
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
#include <vector>

#include "napi_util.h"
#include "sd_notify.h"

namespace vhd {
namespace {

using napi::StringArg;
using napi::ThrowErrno;
using Fd = napi::UniqueFd;

// sdNotify(state, fds?): true when sent, false when $NOTIFY_SOCKET is unset or empty; throws on
// a malformed $NOTIFY_SOCKET or a failed send.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string state = StringArg(info, 0, "sdNotify: state");
  if (state.empty() || state.size() > kMaxNotifyState)
    throw Napi::RangeError::New(env, "sdNotify: state must be 1.." + std::to_string(kMaxNotifyState) + " bytes");
  // Read at every call (Node's process.env writes go through setenv): tests and callers may set
  // or clear it after start.
  const char* env_name = std::getenv("NOTIFY_SOCKET");
  if (env_name == nullptr || env_name[0] == '\0') return Napi::Boolean::New(env, false);
  std::vector<int> fds;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsArray()) throw Napi::TypeError::New(env, "sdNotify: fds must be an array");
    auto a = info[1].As<Napi::Array>();
    if (a.Length() > kMaxNotifyFds) throw Napi::RangeError::New(env, "sdNotify: at most " + std::to_string(kMaxNotifyFds) + " fds");
    for (uint32_t i = 0; i < a.Length(); i++) {
      double v;
      if (!napi::IntegerIn(a.Get(i), 0, INT_MAX, &v)) throw Napi::TypeError::New(env, "sdNotify: fds must be fd numbers");
      fds.push_back(static_cast<int>(v));
    }
  }
  std::string name(env_name);
  sockaddr_un addr;
  socklen_t len = FillNotifyAddr(name, &addr);
  if (len == 0) ThrowErrno(env, EINVAL, "sd_notify", name);

  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  iovec iov{const_cast<char*>(state.data()), state.size()};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> ctrl(fds.empty() ? 0 : CMSG_SPACE(fds.size() * sizeof(int)));
  if (!fds.empty()) {
    msg.msg_control = ctrl.data();
    msg.msg_controllen = ctrl.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(fd.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, errno, "sendmsg", name);
  return Napi::Boolean::New(env, true);
}

}  // namespace
}  // namespace vhd

void InitSdNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, vhd::SdNotify, "sdNotify"));
}

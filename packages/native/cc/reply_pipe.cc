// The reply pipe of a vhost-user connection: a reply is written into a pipe both daemons hold,
// and moved from there to the front-end's socket with splice(). The kernel takes the bytes out
// of the pipe in the same call that queues them on the socket, so after a SIGKILL the pipe
// says exactly what the front-end has not been sent yet: an adopter sends what is left, never
// a byte twice and never one less (see docs/recovery.md, "Exactly once").
#include <napi.h>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "napi_util.h"

namespace {

using vhd::napi::ThrowErrno;

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return static_cast<int>(vhd::napi::IntArgAtLeast(info, i, what, 0, INT_MAX));
}

// pipe() -> [readFd, writeFd], both non-blocking and close-on-exec.
Napi::Value Pipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) ThrowErrno(env, errno, "pipe2");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, fds[0]);
  a.Set(1u, fds[1]);
  return a;
}

// pipeWrite(fd, bytes): all of it or an error. Up to PIPE_BUF a pipe write is atomic, so a
// reply is in the pipe whole or not at all; longer ones are refused.
void PipeWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "pipeWrite: fd");
  if (info.Length() < 2 || !info[1].IsBuffer()) vhd::napi::ThrowType(env, "pipeWrite: bytes must be a Buffer");
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  if (buf.Length() == 0 || buf.Length() > PIPE_BUF)
    vhd::napi::ThrowRange(env, "pipeWrite: bytes must be 1.." + std::to_string(PIPE_BUF) + " long");
  ssize_t n;
  do {
    n = write(fd, buf.Data(), buf.Length());
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, errno, "write");
  if (static_cast<size_t>(n) != buf.Length()) vhd::napi::ThrowError(env, "pipeWrite: short write to a pipe");
}

// spliceOut(pipeFd, socketFd, max) -> bytes moved; 0 when the socket is full (EAGAIN) or the
// pipe is empty. Other errors throw (EPIPE: the front-end is gone).
Napi::Value SpliceOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int from = FdArg(info, 0, "spliceOut: pipeFd");
  int to = FdArg(info, 1, "spliceOut: socketFd");
  size_t max = static_cast<size_t>(vhd::napi::IntArgAtLeast(info, 2, "spliceOut: max", 1, 1 << 20));
  ssize_t n;
  do {
    n = splice(from, nullptr, to, nullptr, max, SPLICE_F_NONBLOCK);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    ThrowErrno(env, errno, "splice");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// queuedBytes(fd) -> FIONREAD: bytes waiting in a pipe (or a socket's receive queue).
Napi::Value QueuedBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "queuedBytes: fd");
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) != 0) ThrowErrno(env, errno, "ioctl(FIONREAD)");
  return Napi::Number::New(env, n);
}

// pipeDiscard(fd) -> bytes read and dropped (a reply that must not be sent).
Napi::Value PipeDiscard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "pipeDiscard: fd");
  char buf[4096];
  double total = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      total += static_cast<double>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) ThrowErrno(env, errno, "read");
    return Napi::Number::New(env, total);
  }
}

}  // namespace

void InitReplyPipe(Napi::Env env, Napi::Object exports) {
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
  exports.Set("pipeWrite", Napi::Function::New(env, PipeWrite, "pipeWrite"));
  exports.Set("spliceOut", Napi::Function::New(env, SpliceOut, "spliceOut"));
  exports.Set("queuedBytes", Napi::Function::New(env, QueuedBytes, "queuedBytes"));
  exports.Set("pipeDiscard", Napi::Function::New(env, PipeDiscard, "pipeDiscard"));
}

// Test support: the fds a fake front-end needs: a memfd "guest" (JS cannot mmap, so tests
// write rings through mapShared's view of it) and eventfds for kicks and calls.
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "napi_util.h"

namespace vhd::testing {
namespace {

using napi::ThrowError;
using napi::ThrowRange;
using napi::ThrowType;

int64_t IntArg(Napi::Env env, Napi::Value v, const char* name, int64_t lo, int64_t hi) {
  if (!v.IsNumber() || !napi::IsInteger(v.As<Napi::Number>().DoubleValue())) ThrowType(env, std::string(name) + " must be an integer number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < double(lo) || d > double(hi))
    ThrowRange(env, std::string(name) + " " + std::to_string((long long)d) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int64_t(d);
}

int FdArg(const Napi::CallbackInfo& info) { return int(IntArg(info.Env(), info[0], "fd", 0, INT32_MAX)); }

// mapShared(fd, size): the file's first `size` bytes mapped shared, as an ArrayBuffer (unmapped
// when it is collected).
Napi::Value MapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info);
  int64_t size = IntArg(env, info[1], "size", 1, int64_t(1) << 40);
  void* p = mmap(nullptr, size_t(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) ThrowError(env, std::string("mmap: ") + strerror(errno));
  return Napi::ArrayBuffer::New(env, p, size_t(size), [](Napi::Env, void* data, size_t* len) { munmap(data, *len); delete len; },
                                new size_t(size_t(size)));
}

Napi::Value Memfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowType(env, "name must be a string");
  int64_t size = IntArg(env, info[1], "size", 0, int64_t(1) << 40);
  int fd = memfd_create(info[0].As<Napi::String>().Utf8Value().c_str(), MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, size) < 0) ThrowError(env, std::string("memfd: ") + strerror(errno));
  return Napi::Number::New(env, fd);
}

Napi::Value EventFd(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) ThrowError(info.Env(), std::string("eventfd: ") + strerror(errno));
  return Napi::Number::New(info.Env(), fd);
}

// The counter (reset), or 0 when the eventfd was not signalled.
Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  uint64_t v = 0;
  if (read(FdArg(info), &v, 8) != 8) v = 0;
  return Napi::Number::New(info.Env(), double(v));
}

Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  uint64_t one = 1;
  ssize_t r = write(FdArg(info), &one, 8);
  (void)r;
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close(FdArg(info));
  return info.Env().Undefined();
}

}  // namespace

void InitGuestFds(Napi::Env env, Napi::Object exports) {
  exports.Set("mapShared", Napi::Function::New(env, MapShared, "mapShared"));
  exports.Set("memfd", Napi::Function::New(env, Memfd, "memfd"));
  exports.Set("eventFd", Napi::Function::New(env, EventFd, "eventFd"));
  exports.Set("eventFdRead", Napi::Function::New(env, EventFdRead, "eventFdRead"));
  exports.Set("eventFdWrite", Napi::Function::New(env, EventFdWrite, "eventFdWrite"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

}  // namespace vhd::testing

// The N-API helpers every glue file shares: throwing the three JS error kinds, system errors
// shaped like Node's own, number checks, and an fd that closes itself. Glue files keep their
// own argument getters where their messages differ (tests assert on the messages JS sees),
// built on these.
#pragma once
#include <napi.h>
#include <uv.h>

#include <unistd.h>

#include <cmath>
#include <string>

namespace vhd::napi {

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }
[[noreturn]] inline void ThrowError(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }

/**
 * Throws an Error shaped like Node's own system errors (code/errno/syscall/path), so callers
 * handle ours and net/fs errors the same way: "<prefix><syscall> <CODE> (<strerror>)[: <path>]",
 * errno negative as in Node (err.errno === -os.constants.errno.ENOENT). `err` is a positive errno.
 */
[[noreturn]] inline void ThrowSystemError(Napi::Env env, const std::string& prefix, int err, const char* syscall,
                                          const std::string& path = std::string()) {
  // On Unix, libuv error codes are the negated errno values.
  const char* code = uv_err_name(-err);
  std::string msg = prefix + syscall + " " + code + " (" + uv_strerror(-err) + ")";
  if (!path.empty()) msg += ": " + path;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) e.Set("path", Napi::String::New(env, path));
  throw e;
}

/** ThrowSystemError without a prefix: "<syscall> <CODE> (<strerror>)[: <path>]". */
[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = std::string()) {
  ThrowSystemError(env, "", err, syscall, path);
}

/** A finite number without a fractional part. */
inline bool IsInteger(double d) { return std::isfinite(d) && std::trunc(d) == d; }

/** The Number at v when it is an integer in [lo, hi]; false otherwise (the caller words the error). */
inline bool IntegerIn(Napi::Value v, double lo, double hi, double* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!IsInteger(d) || d < lo || d > hi) return false;
  *out = d;
  return true;
}

/** Argument i as an integer in [lo, hi]: TypeError "<what> must be a number", RangeError
 *  "<what> must be an integer >= <lo>" (what: "fn: arg"). */
inline double IntArgAtLeast(const Napi::CallbackInfo& info, size_t i, const std::string& what, double lo, double hi) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info.Env(), what + " must be a number");
  double d;
  if (!IntegerIn(info[i], lo, hi, &d)) ThrowRange(info.Env(), what + " must be an integer >= " + std::to_string((long long)lo));
  return d;
}

/** Argument i as a string: TypeError "<what> must be a string" (what: "fn: arg"). */
inline std::string StringArg(const Napi::CallbackInfo& info, size_t i, const std::string& what) {
  if (info.Length() <= i || !info[i].IsString()) ThrowType(info.Env(), what + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

/** Closes its fd on scope exit unless released: an error path after socket() must not leak it. */
class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace vhd::napi

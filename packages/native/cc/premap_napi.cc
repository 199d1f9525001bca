// N-API for premap.h: premapKeep(fd, offset, size) -> id, premapRelease(id), premapCount().
#include <napi.h>
#include <string.h>

#include <climits>
#include <cmath>
#include <string>

#include "napi_util.h"
#include "premap.h"

namespace {

uint64_t u64Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(info.Env(), std::string(name) + " must fit in an unsigned 64-bit integer");
    return r;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (vhd::napi::IsInteger(d) && d >= 0 && d <= 9007199254740991.0) return (uint64_t)d;
  }
  throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a non-negative integer or bigint");
}

Napi::Value Keep(const Napi::CallbackInfo& info) {
  uint64_t fd = u64Arg(info, 0, "premapKeep: fd");
  if (fd > INT_MAX) throw Napi::RangeError::New(info.Env(), "premapKeep: fd is out of range");
  int64_t id = vhd::premap::keep((int)fd, u64Arg(info, 1, "premapKeep: offset"), u64Arg(info, 2, "premapKeep: size"));
  if (id < 0) {
    Napi::Error e = Napi::Error::New(info.Env(), std::string("premapKeep: ") + strerror((int)-id));
    e.Set("errno", Napi::Number::New(info.Env(), (double)id));
    throw e;
  }
  return Napi::Number::New(info.Env(), (double)id);
}

Napi::Value Release(const Napi::CallbackInfo& info) {
  vhd::premap::release((int64_t)u64Arg(info, 0, "premapRelease: id"));
  return info.Env().Undefined();
}

Napi::Value Count(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)vhd::premap::keptCount()); }

}  // namespace

void InitPremap(Napi::Env env, Napi::Object exports) {
  exports.Set("premapKeep", Napi::Function::New(env, Keep, "premapKeep"));
  exports.Set("premapRelease", Napi::Function::New(env, Release, "premapRelease"));
  exports.Set("premapCount", Napi::Function::New(env, Count, "premapCount"));
}

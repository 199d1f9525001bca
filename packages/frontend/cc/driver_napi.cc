// The front-end driver addon: JS glue of DriverDevice and BlkDriver (src/native.ts) plus two
// test-support functions for the frame format (_buildFrame, _checkFrame). Argument checking
// lives here; driver_device.cc and driver_blk.cc trust what they get.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "driver_blk.h"
#include "driver_device.h"
#include "napi_util.h"  // packages/native/cc
#include "test_frame.h"

namespace {

using vhd::drv::BlkDriver;
using vhd::drv::DriverDevice;

using vhd::napi::ThrowRange;
using vhd::napi::ThrowType;

/** An integer number in [lo, hi]. */
double IntArg(Napi::Env env, Napi::Value v, const char* name, double lo, double hi) {
  if (!v.IsNumber()) ThrowType(env, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!vhd::napi::IsInteger(d)) ThrowRange(env, std::string(name) + " must be an integer");
  if (d < lo || d > hi)
    ThrowRange(env, std::string(name) + " must be in [" + std::to_string(uint64_t(lo)) + ", " +
                        std::to_string(uint64_t(hi)) + "]");
  return d;
}

/** Optional property: absent or undefined gives def. */
double OptInt(Napi::Env env, Napi::Object o, const char* name, double def, double lo, double hi) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return def;
  return IntArg(env, v, name, lo, hi);
}

uint64_t BigIntArg(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsBigInt()) ThrowType(env, std::string(name) + " must be a bigint");
  bool lossless = true;
  uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) ThrowRange(env, std::string(name) + " must fit in 64 bits unsigned");
  return r;
}

void MacArg(Napi::Env env, Napi::Object o, const char* name, uint8_t out[6]) {
  Napi::Value v = o.Get(name);
  if (!v.IsString()) ThrowType(env, std::string(name) + " must be a string like 52:54:00:12:34:56");
  if (!vhd::drv::ParseMac(v.As<Napi::String>().Utf8Value(), out))
    ThrowType(env, std::string(name) + " must be a MAC address like 52:54:00:12:34:56");
}

Napi::Object ObjectArg(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsObject()) ThrowType(env, std::string(name) + " must be an object");
  return v.As<Napi::Object>();
}

// What both driver classes tell JS about their guest memory and rings (same shape for net and blk).
enum MemField { kMemFd, kMemSize, kMemAddr };
template <class Device>
Napi::Value MemInfo(Napi::Env env, Device& d, MemField f) {
  if (f == kMemFd) return Napi::Number::New(env, d.memFd());
  if (f == kMemSize) return Napi::Number::New(env, double(d.memSize()));
  return Napi::BigInt::New(env, d.memAddr());
}

template <class RingInfo>
Napi::Object RingObject(Napi::Env env, const RingInfo& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("desc", Napi::BigInt::New(env, r.desc));
  o.Set("avail", Napi::BigInt::New(env, r.avail));
  o.Set("used", Napi::BigInt::New(env, r.used));
  o.Set("kickFd", Napi::Number::New(env, r.kickFd));
  o.Set("callFd", Napi::Number::New(env, r.callFd));
  return o;
}

class DriverDeviceWrap : public Napi::ObjectWrap<DriverDeviceWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DriverDevice",
                       {
                           InstanceAccessor<&DriverDeviceWrap::MemFd>("memFd"),
                           InstanceAccessor<&DriverDeviceWrap::MemSize>("memSize"),
                           InstanceAccessor<&DriverDeviceWrap::MemAddr>("memAddr"),
                           InstanceMethod<&DriverDeviceWrap::Ring>("ring"),
                           InstanceMethod<&DriverDeviceWrap::ResetRings>("resetRings"),
                           InstanceMethod<&DriverDeviceWrap::StartTx>("startTx"),
                           InstanceMethod<&DriverDeviceWrap::StopTx>("stopTx"),
                           InstanceMethod<&DriverDeviceWrap::StartRx>("startRx"),
                           InstanceMethod<&DriverDeviceWrap::StopRx>("stopRx"),
                           InstanceMethod<&DriverDeviceWrap::Stats>("stats"),
                           InstanceMethod<&DriverDeviceWrap::Latency>("latency"),
                           InstanceMethod<&DriverDeviceWrap::WriteMem>("writeMem"),
                           InstanceMethod<&DriverDeviceWrap::ReadMem>("readMem"),
                           InstanceMethod<&DriverDeviceWrap::Close>("close"),
                       });
  }

  explicit DriverDeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DriverDeviceWrap>(info) {
    Napi::Env env = info.Env();
    DriverDevice::Options o;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      Napi::Object opts = ObjectArg(env, info[0], "options");
      o.queuePairs = uint32_t(OptInt(env, opts, "queuePairs", 1, 1, 128));
      o.queueSize = uint32_t(OptInt(env, opts, "queueSize", 256, 1, 32768));
      if (o.queueSize & (o.queueSize - 1)) ThrowRange(env, "queueSize must be a power of two");
      o.memSize = uint64_t(OptInt(env, opts, "memSize", double(64ull << 20), 4096, double(1ull << 40)));
      if (o.memSize % 4096) ThrowRange(env, "memSize must be a multiple of 4096");
      Napi::Value f = opts.Get("features");
      if (!f.IsUndefined()) o.features = BigIntArg(env, f, "features");
    }
    uint64_t need = DriverDevice::RequiredMemory(o.queuePairs, o.queueSize);
    if (o.memSize < need)
      ThrowRange(env, "memSize must be at least " + std::to_string(need) + " for " +
                          std::to_string(o.queuePairs) + " queue pairs of size " + std::to_string(o.queueSize));
    std::string err;
    dev_ = DriverDevice::Create(o, &err);
    if (!dev_) vhd::napi::ThrowError(env, "DriverDevice: " + err);
  }

 private:
  DriverDevice& Dev(Napi::Env env) {
    if (!dev_) vhd::napi::ThrowError(env, "DriverDevice is closed");
    return *dev_;
  }
  uint32_t PairArg(const Napi::CallbackInfo& info) {
    DriverDevice& d = Dev(info.Env());
    return uint32_t(IntArg(info.Env(), info[0], "pair", 0, d.queuePairs() - 1));
  }

  Napi::Value MemFd(const Napi::CallbackInfo& info) { return MemInfo(info.Env(), Dev(info.Env()), kMemFd); }
  Napi::Value MemSize(const Napi::CallbackInfo& info) { return MemInfo(info.Env(), Dev(info.Env()), kMemSize); }
  Napi::Value MemAddr(const Napi::CallbackInfo& info) { return MemInfo(info.Env(), Dev(info.Env()), kMemAddr); }

  Napi::Value Ring(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DriverDevice& d = Dev(env);
    uint32_t q = uint32_t(IntArg(env, info[0], "queue", 0, d.numQueues() - 1));
    return RingObject(env, d.Ring(q));
  }

  Napi::Value ResetRings(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DriverDevice& d = Dev(env);
    d.ResetRings(BigIntArg(env, info[0], "features"));
    return env.Undefined();
  }

  Napi::Value StartTx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t pair = PairArg(info);
    Napi::Object o = ObjectArg(env, info[1], "options");
    vhd::drv::TxConfig c;
    MacArg(env, o, "dstMac", c.dst);
    MacArg(env, o, "srcMac", c.src);
    c.frameSize = uint32_t(IntArg(env, o.Get("frameSize"), "frameSize", vhd::drv::kMinTestFrame, vhd::drv::kMaxTestFrame));
    c.count = uint64_t(OptInt(env, o, "count", 0, 0, 9007199254740991.0));
    c.streamId = uint32_t(OptInt(env, o, "streamId", 0, 0, 4294967295.0));
    Napi::Value r = o.Get("ratePps");
    if (!r.IsUndefined()) {
      if (!r.IsNumber()) ThrowType(env, "ratePps must be a number");
      c.ratePps = r.As<Napi::Number>().DoubleValue();
      if (!std::isfinite(c.ratePps) || c.ratePps < 0 || c.ratePps > 1e9) ThrowRange(env, "ratePps must be in [0, 1e9]");
    }
    Dev(env).StartTx(pair, c);
    return env.Undefined();
  }
  Napi::Value StopTx(const Napi::CallbackInfo& info) {
    uint32_t pair = PairArg(info);
    Dev(info.Env()).StopTx(pair);
    return info.Env().Undefined();
  }
  Napi::Value StartRx(const Napi::CallbackInfo& info) {
    uint32_t pair = PairArg(info);
    Dev(info.Env()).StartRx(pair);
    return info.Env().Undefined();
  }
  Napi::Value StopRx(const Napi::CallbackInfo& info) {
    uint32_t pair = PairArg(info);
    Dev(info.Env()).StopRx(pair);
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t pair = PairArg(info);
    vhd::drv::DriverStatsC s = Dev(env).Stats(pair);
    Napi::Object o = Napi::Object::New(env);
    auto put = [&](const char* k, uint64_t v) { o.Set(k, Napi::Number::New(env, double(v))); };
    put("txPackets", s.txPackets);
    put("txBytes", s.txBytes);
    put("txRingFull", s.txRingFull);
    put("rxPackets", s.rxPackets);
    put("rxBytes", s.rxBytes);
    put("rxForeign", s.rxForeign);
    put("rxLost", s.rxLost);
    put("rxDuplicated", s.rxDuplicated);
    put("rxCorrupted", s.rxCorrupted);
    put("rxReordered", s.rxReordered);
    put("rxMaxGapUs", s.rxMaxGapUs);
    put("ringErrors", s.ringErrors);
    put("rxRingEmptied", s.rxRingEmptied);
    return o;
  }

  Napi::Value Latency(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t pair = PairArg(info);
    vhd::drv::DriverLatencyC l = Dev(env).Latency(pair);
    Napi::Object o = Napi::Object::New(env);
    auto us = [&](const char* k, uint64_t ns) { o.Set(k, Napi::Number::New(env, double(ns) / 1000.0)); };
    o.Set("count", Napi::Number::New(env, double(l.count)));
    us("p50Us", l.p50Ns);
    us("p90Us", l.p90Ns);
    us("p99Us", l.p99Ns);
    us("p999Us", l.p999Ns);
    us("maxUs", l.maxNs);
    return o;
  }

  Napi::Value WriteMem(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DriverDevice& d = Dev(env);
    uint64_t addr = BigIntArg(env, info[0], "addr");
    if (!info[1].IsBuffer()) ThrowType(env, "data must be a Buffer");
    auto buf = info[1].As<Napi::Buffer<uint8_t>>();
    if (!d.WriteMem(addr, buf.Data(), buf.Length())) ThrowRange(env, "writeMem: range outside driver memory");
    return env.Undefined();
  }

  Napi::Value ReadMem(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DriverDevice& d = Dev(env);
    uint64_t addr = BigIntArg(env, info[0], "addr");
    size_t len = size_t(IntArg(env, info[1], "len", 0, double(d.memSize())));
    auto buf = Napi::Buffer<uint8_t>::New(env, len);
    if (!d.ReadMem(addr, buf.Data(), len)) ThrowRange(env, "readMem: range outside driver memory");
    return buf;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    dev_.reset();  // stops the thread, closes fds, unmaps
    return info.Env().Undefined();
  }

  std::unique_ptr<DriverDevice> dev_;
};

class BlkDriverWrap : public Napi::ObjectWrap<BlkDriverWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BlkDriver",
                       {
                           InstanceAccessor<&BlkDriverWrap::MemFd>("memFd"),
                           InstanceAccessor<&BlkDriverWrap::MemSize>("memSize"),
                           InstanceAccessor<&BlkDriverWrap::MemAddr>("memAddr"),
                           InstanceAccessor<&BlkDriverWrap::MaxQueueDepth>("maxQueueDepth"),
                           InstanceMethod<&BlkDriverWrap::Ring>("ring"),
                           InstanceMethod<&BlkDriverWrap::ResetRings>("resetRings"),
                           InstanceMethod<&BlkDriverWrap::StartLoad>("startLoad"),
                           InstanceMethod<&BlkDriverWrap::StopLoad>("stopLoad"),
                           InstanceMethod<&BlkDriverWrap::ClearStats>("clearStats"),
                           InstanceMethod<&BlkDriverWrap::Stats>("stats"),
                           InstanceMethod<&BlkDriverWrap::Request>("request"),
                           InstanceMethod<&BlkDriverWrap::Close>("close"),
                       });
  }

  explicit BlkDriverWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BlkDriverWrap>(info) {
    Napi::Env env = info.Env();
    BlkDriver::Options o;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      Napi::Object opts = ObjectArg(env, info[0], "options");
      o.queueSize = uint32_t(OptInt(env, opts, "queueSize", 128, 4, 32768));
      if (o.queueSize & (o.queueSize - 1)) ThrowRange(env, "queueSize must be a power of two");
      o.memSize = uint64_t(OptInt(env, opts, "memSize", 0, 0, double(1ull << 40)));
      if (o.memSize % 4096) ThrowRange(env, "memSize must be a multiple of 4096");
    }
    uint64_t need = BlkDriver::RequiredMemory(o.queueSize);
    if (o.memSize && o.memSize < need)
      ThrowRange(env, "memSize must be at least " + std::to_string(need) + " for a queue of size " + std::to_string(o.queueSize));
    std::string err;
    dev_ = BlkDriver::Create(o, &err);
    if (!dev_) vhd::napi::ThrowError(env, "BlkDriver: " + err);
  }

 private:
  BlkDriver& Dev(Napi::Env env) {
    if (!dev_) vhd::napi::ThrowError(env, "BlkDriver is closed");
    return *dev_;
  }

  Napi::Value MemFd(const Napi::CallbackInfo& info) { return MemInfo(info.Env(), Dev(info.Env()), kMemFd); }
  Napi::Value MemSize(const Napi::CallbackInfo& info) { return MemInfo(info.Env(), Dev(info.Env()), kMemSize); }
  Napi::Value MemAddr(const Napi::CallbackInfo& info) { return MemInfo(info.Env(), Dev(info.Env()), kMemAddr); }
  Napi::Value MaxQueueDepth(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), BlkDriver::MaxQueueDepth(Dev(info.Env()).queueSize()));
  }

  Napi::Value Ring(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BlkDriver& d = Dev(env);
    IntArg(env, info[0], "queue", 0, 0);  // one request queue
    return RingObject(env, d.Ring());
  }

  Napi::Value ResetRings(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Dev(env).ResetRings(BigIntArg(env, info[0], "features"));
    return env.Undefined();
  }

  Napi::Value StartLoad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BlkDriver& d = Dev(env);
    Napi::Object o = ObjectArg(env, info[0], "options");
    vhd::drv::BlkLoadConfig c;
    c.queueDepth = uint32_t(IntArg(env, o.Get("queueDepth"), "queueDepth", 1, BlkDriver::MaxQueueDepth(d.queueSize())));
    c.writePercent = uint32_t(IntArg(env, o.Get("writePercent"), "writePercent", 0, 100));
    c.sectors = uint64_t(IntArg(env, o.Get("sectors"), "sectors", vhd::drv::kBlkSectorsPerBlock, 9007199254740991.0));
    c.seed = uint64_t(OptInt(env, o, "seed", 1, 0, 9007199254740991.0));
    std::string err;
    if (!d.StartLoad(c, &err)) vhd::napi::ThrowError(env, "startLoad: " + err);
    return env.Undefined();
  }
  Napi::Value StopLoad(const Napi::CallbackInfo& info) {
    Dev(info.Env()).StopLoad();
    return info.Env().Undefined();
  }
  Napi::Value ClearStats(const Napi::CallbackInfo& info) {
    Dev(info.Env()).ClearStats();
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    vhd::drv::BlkStatsC s = Dev(env).Stats();
    Napi::Object o = Napi::Object::New(env);
    auto put = [&](const char* k, uint64_t v) { o.Set(k, Napi::Number::New(env, double(v))); };
    auto us = [&](const char* k, uint64_t ns) { o.Set(k, Napi::Number::New(env, double(ns) / 1000.0)); };
    put("submitted", s.submitted);
    put("completed", s.completed);
    put("reads", s.reads);
    put("writes", s.writes);
    put("errors", s.errors);
    put("ringErrors", s.ringErrors);
    put("inFlight", s.inFlight);
    o.Set("running", Napi::Boolean::New(env, s.running));
    o.Set("broken", Napi::Boolean::New(env, s.broken));
    put("latencyCount", s.latCount);
    us("p50Us", s.p50Ns);
    us("p99Us", s.p99Ns);
    us("maxUs", s.maxNs);
    return o;
  }

  Napi::Value Request(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BlkDriver& d = Dev(env);
    if (!info[0].IsString()) ThrowType(env, "type must be \"read\" or \"write\"");
    std::string type = info[0].As<Napi::String>().Utf8Value();
    if (type != "read" && type != "write") ThrowType(env, "type must be \"read\" or \"write\"");
    uint64_t sector = uint64_t(IntArg(env, info[1], "sector", 0, 9007199254740991.0));
    auto out = Napi::Buffer<uint8_t>::New(env, vhd::drv::kBlkBlockSize);
    if (type == "write") {
      if (!info[2].IsBuffer()) ThrowType(env, "data must be a Buffer of 4096 bytes");
      auto in = info[2].As<Napi::Buffer<uint8_t>>();
      if (in.Length() != vhd::drv::kBlkBlockSize) ThrowRange(env, "data must be a Buffer of 4096 bytes");
      std::memcpy(out.Data(), in.Data(), vhd::drv::kBlkBlockSize);
    } else if (info.Length() > 2 && !info[2].IsUndefined()) {
      ThrowType(env, "a read takes no data");
    }
    uint32_t timeoutMs = 5000;
    if (info.Length() > 3 && !info[3].IsUndefined()) timeoutMs = uint32_t(IntArg(env, info[3], "timeoutMs", 1, 600000));
    std::string err;
    int status = d.RunOne(type == "write" ? vhd::drv::kBlkTypeOut : vhd::drv::kBlkTypeIn, sector, out.Data(), timeoutMs, &err);
    if (status < 0) vhd::napi::ThrowError(env, "request: " + err);
    Napi::Object o = Napi::Object::New(env);
    o.Set("status", Napi::Number::New(env, status));
    o.Set("data", out);
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    dev_.reset();  // stops the thread, closes fds, unmaps
    return info.Env().Undefined();
  }

  std::unique_ptr<BlkDriver> dev_;
};

Napi::Value BuildFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = ObjectArg(env, info[0], "options");
  uint8_t dst[6], src[6];
  MacArg(env, o, "dstMac", dst);
  MacArg(env, o, "srcMac", src);
  size_t len = size_t(IntArg(env, o.Get("frameSize"), "frameSize", vhd::drv::kMinTestFrame, vhd::drv::kMaxTestFrame));
  uint32_t stream = uint32_t(OptInt(env, o, "streamId", 0, 0, 4294967295.0));
  Napi::Value s = o.Get("seq");
  uint64_t seq = s.IsBigInt() ? BigIntArg(env, s, "seq") : uint64_t(IntArg(env, s, "seq", 0, 9007199254740991.0));
  auto buf = Napi::Buffer<uint8_t>::New(env, len);
  Napi::Value ts = o.Get("txNs");
  uint64_t txNs = ts.IsUndefined() ? 0 : BigIntArg(env, ts, "txNs");
  vhd::drv::BuildTestFrame(buf.Data(), len, dst, src, stream, seq, txNs);
  return buf;
}

Napi::Value CheckFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) ThrowType(env, "frame must be a Buffer");
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  vhd::drv::FrameInfo fi;
  vhd::drv::FrameVerdict v = vhd::drv::CheckTestFrame(buf.Data(), buf.Length(), &fi);
  Napi::Object o = Napi::Object::New(env);
  o.Set("verdict", v == vhd::drv::FrameVerdict::kOk ? "ok" : v == vhd::drv::FrameVerdict::kForeign ? "foreign" : "corrupt");
  o.Set("streamId", Napi::Number::New(env, fi.streamId));
  o.Set("seq", Napi::BigInt::New(env, fi.seq));
  o.Set("txNs", Napi::BigInt::New(env, fi.txNs));
  o.Set("problem", fi.problem);
  return o;
}

}  // namespace

// The front-end driver's own addon (vhostd_frontend.node; src/native.ts declares its symbols).
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("DriverDevice", DriverDeviceWrap::Define(env));
  exports.Set("BlkDriver", BlkDriverWrap::Define(env));
  exports.Set("_buildFrame", Napi::Function::New(env, BuildFrame, "_buildFrame"));
  exports.Set("_checkFrame", Napi::Function::New(env, CheckFrame, "_checkFrame"));
  return exports;
}

NODE_API_MODULE(vhostd_frontend, Init)

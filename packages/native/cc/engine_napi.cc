// N-API glue for the datapath engine: argument validation (TypeError / RangeError / Error
// with a reason), then a synchronous command to the engine (see engine.h). Also the module
// constants of the shared counter layout (test-only helpers live in test_support/).
#include <errno.h>
#include <fcntl.h>
#include <napi.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>

#include "engine.h"
#include "napi_util.h"

using namespace vhd;

namespace {

// ------------------------------------------------------------------ validation helpers

using napi::ThrowError;
using napi::ThrowRange;
using napi::ThrowType;

int64_t getInt(Napi::Env env, Napi::Value v, const char* name, int64_t min, int64_t max) {
  if (!v.IsNumber()) ThrowType(env, std::string(name) + " must be an integer number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!napi::IsInteger(d)) ThrowType(env, std::string(name) + " must be an integer number");
  if (d < (double)min || d > (double)max)
    ThrowRange(env, std::string(name) + " " + std::to_string((long long)d) + " is out of range [" + std::to_string(min) +
                        ", " + std::to_string(max) + "]");
  return (int64_t)d;
}

uint64_t getU64(Napi::Env env, Napi::Value v, const char* name) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowRange(env, std::string(name) + " must fit in an unsigned 64-bit integer");
    return r;
  }
  if (v.IsNumber()) return (uint64_t)getInt(env, v, name, 0, 9007199254740991LL);
  ThrowType(env, std::string(name) + " must be a bigint");
}

Napi::Object getObject(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsObject()) ThrowType(env, std::string(name) + " must be an object");
  return v.As<Napi::Object>();
}

bool parseMac(const std::string& s, uint8_t out[6]) {
  unsigned b[6];
  char tail;
  if (s.size() != 17 || sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
    return false;
  for (int i = 0; i < 6; i++) out[i] = (uint8_t)b[i];
  return true;
}

std::string macStr(const uint8_t* m) {
  char b[18];
  snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

RegionSpec getRegion(Napi::Env env, Napi::Value v, const char* name) {
  Napi::Object o = getObject(env, v, name);
  RegionSpec r;
  r.fd = (int)getInt(env, o.Get("fd"), "region.fd", -1, INT32_MAX);
  r.gpa = getU64(env, o.Get("guestAddr"), "region.guestAddr");
  r.size = getU64(env, o.Get("size"), "region.size");
  r.uva = getU64(env, o.Get("userAddr"), "region.userAddr");
  r.mmapOffset = getU64(env, o.Get("mmapOffset"), "region.mmapOffset");
  return r;
}

const char* kindName(EvKind k) {
  switch (k) {
    case EvKind::kRingError: return "ring-error";
    case EvKind::kChainError: return "chain-error";
    case EvKind::kQueueBroken: return "queue-broken";
    case EvKind::kTapError: return "tap-error";
    case EvKind::kSpoofed: return "spoofed";
    case EvKind::kPortLocked: return "port-locked";
  }
  return "ring-error";
}

// ------------------------------------------------------------------ event delivery

struct TsfnState {
  std::mutex m;
  bool alive = false;
  napi_threadsafe_function tsfn = nullptr;
  std::shared_ptr<EventQueue> q;
};

void callJs(napi_env env, napi_value jsCb, void* context, void*) {
  auto* st = static_cast<std::shared_ptr<TsfnState>*>(context);
  std::shared_ptr<EventQueue> q = (*st)->q;
  q->notifyPending.store(false);
  if (!env || !jsCb) return;
  Napi::Env e(env);
  Napi::Function cb(env, jsCb);
  EventRec r;
  int n = 0;
  while (n++ < EventQueue::kCap && q->pop(&r)) {
    Napi::Object ev = Napi::Object::New(e);
    ev.Set("devId", r.devId);
    ev.Set("queue", r.queue);
    ev.Set("kind", kindName(r.kind));
    ev.Set("reason", r.reason);
    napi_value argv[1] = {ev};
    napi_value result;
    if (napi_call_function(env, e.Undefined(), jsCb, 1, argv, &result) != napi_ok) break;
  }
}

void finalizeTsfn(napi_env, void* data, void*) {
  auto* st = static_cast<std::shared_ptr<TsfnState>*>(data);
  {
    std::lock_guard<std::mutex> g((*st)->m);
    (*st)->alive = false;
  }
  delete st;
}

// ------------------------------------------------------------------ the Engine class

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod("addSwitch", &EngineWrap::AddSwitch),
                           InstanceMethod("removeSwitch", &EngineWrap::RemoveSwitch),
                           InstanceMethod("setSwitchUplink", &EngineWrap::SetSwitchUplink),
                           InstanceMethod("fdb", &EngineWrap::Fdb),
                           InstanceMethod("uplinkStats", &EngineWrap::UplinkStatsM),
                           InstanceMethod("addNetDevice", &EngineWrap::AddNetDevice),
                           InstanceMethod("addBlkDevice", &EngineWrap::AddBlkDevice),
                           InstanceMethod("setBlkWriteback", &EngineWrap::SetBlkWriteback),
                           InstanceMethod("removeDevice", &EngineWrap::RemoveDevice),
                           InstanceMethod("setFeatures", &EngineWrap::SetFeatures),
                           InstanceMethod("setDirtyLog", &EngineWrap::SetDirtyLog),
                           InstanceMethod("setBlkInflight", &EngineWrap::SetBlkInflight),
                           InstanceMethod("setMemTable", &EngineWrap::SetMemTable),
                           InstanceMethod("addMemRegion", &EngineWrap::AddMemRegion),
                           InstanceMethod("removeMemRegion", &EngineWrap::RemoveMemRegion),
                           InstanceMethod("startQueue", &EngineWrap::StartQueue),
                           InstanceMethod("stopQueue", &EngineWrap::StopQueue),
                           InstanceMethod("setQueueEnabled", &EngineWrap::SetQueueEnabled),
                           InstanceMethod("setQueueCall", &EngineWrap::SetQueueCall),
                           InstanceMethod("kickAll", &EngineWrap::KickAll),
                           InstanceMethod("signalQueue", &EngineWrap::SignalQueue),
                           InstanceMethod("queueLastAvail", &EngineWrap::QueueLastAvail),
                           InstanceMethod("injectFrame", &EngineWrap::InjectFrame),
                           InstanceMethod("setPortSecurity", &EngineWrap::SetPortSecurity),
                           InstanceMethod("portState", &EngineWrap::PortStateM),
                           InstanceMethod("hold", &EngineWrap::Hold),
                           InstanceMethod("close", &EngineWrap::Close),
                           InstanceAccessor("counters", &EngineWrap::Counters, nullptr),
                           InstanceAccessor("crash", &EngineWrap::Crash, nullptr),
                           InstanceMethod("claimCrashes", &EngineWrap::ClaimCrashes),
                           InstanceAccessor("maxDevices", &EngineWrap::MaxDevices, nullptr),
                           InstanceAccessor("maxQueues", &EngineWrap::MaxQueues, nullptr),
                       });
  }

  EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    EngineConfig cfg;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      Napi::Object o = getObject(env, info[0], "opts");
      if (!o.Get("workers").IsUndefined()) cfg.workers = (int)getInt(env, o.Get("workers"), "opts.workers", 1, 64);
      if (!o.Get("maxDevices").IsUndefined())
        cfg.maxDevices = (int)getInt(env, o.Get("maxDevices"), "opts.maxDevices", 1, 65536);
      if (!o.Get("pollUs").IsUndefined()) cfg.pollUs = (int)getInt(env, o.Get("pollUs"), "opts.pollUs", 0, 10000000);
      if (!o.Get("sharedFd").IsUndefined()) cfg.sharedFd = (int)getInt(env, o.Get("sharedFd"), "opts.sharedFd", 0, INT32_MAX);
      if (!o.Get("crashRole").IsUndefined()) cfg.crashRole = (int)getInt(env, o.Get("crashRole"), "opts.crashRole", 0, crash::kRoles - 1);
    }
    if (info.Length() < 2 || !info[1].IsFunction()) ThrowType(env, "onEvent must be a function");
    engine_ = std::make_unique<Engine>(cfg);
    std::string err = engine_->start();
    if (!err.empty()) {
      engine_->close();
      ThrowError(env, err);
    }
    // Events: a thread-safe function that never keeps Node alive.
    state_ = std::make_shared<TsfnState>();
    state_->q = engine_->eventsShared();
    auto* ctx = new std::shared_ptr<TsfnState>(state_);
    napi_value name = Napi::String::New(env, "vhostd-engine-events");
    napi_status s = napi_create_threadsafe_function(env, info[1], nullptr, name, 4, 1, ctx, finalizeTsfn, ctx, callJs,
                                                    &state_->tsfn);
    if (s != napi_ok) {
      delete ctx;
      engine_->close();
      ThrowError(env, "cannot create the event thread-safe function");
    }
    state_->alive = true;
    napi_unref_threadsafe_function(env, state_->tsfn);
    std::shared_ptr<TsfnState> st = state_;
    engine_->notify = [st] {
      std::lock_guard<std::mutex> g(st->m);
      if (!st->alive || napi_call_threadsafe_function(st->tsfn, nullptr, napi_tsfn_nonblocking) != napi_ok)
        st->q->notifyPending.store(false);
    };
    // Counters: an external ArrayBuffer over the shared mapping; detached at close().
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, engine_->counters(), engine_->countersBytes());
    Napi::TypedArray ta = Napi::TypedArrayOf<uint64_t>::New(env, engine_->countersBytes() / 8, ab, 0, napi_biguint64_array);
    countersRef_ = Napi::Persistent(ta.As<Napi::Object>());
    abRef_ = Napi::Persistent(ab.As<Napi::Object>());
    // Crash attribution (crash_attr.h): the JS thread's slot (serve: devId + 1 in word 0) and
    // the ledger the TS side keeps (4 u32 per device), over the same mapping; detached at close().
    {
      crash::Region* r = engine_->crashRegion();
      Napi::ArrayBuffer cab = Napi::ArrayBuffer::New(env, r, engine_->crashRegionBytes());
      Napi::Object c = Napi::Object::New(env);
      size_t slot0 = reinterpret_cast<uint8_t*>(&r->areas[cfg.crashRole].slots[0].serve) - reinterpret_cast<uint8_t*>(r);
      c.Set("jsSlot", Napi::Uint32Array::New(env, 2, cab, slot0));
      c.Set("ledger", Napi::Uint32Array::New(env, 4 * (size_t)cfg.maxDevices, cab, (size_t)r->hdr.ledgerOffset));
      c.Set("role", Napi::Number::New(env, cfg.crashRole));
      crashRef_ = Napi::Persistent(c);
      crashAbRef_ = Napi::Persistent(cab.As<Napi::Object>());
    }
    env_ = env;
    napi_add_env_cleanup_hook(env, &EngineWrap::Cleanup, this);
    hook_ = true;
  }

  ~EngineWrap() override {
    if (hook_) napi_remove_env_cleanup_hook(env_, &EngineWrap::Cleanup, this);
    if (engine_) engine_->close();
  }

 private:
  static void Cleanup(void* arg) {
    auto* self = static_cast<EngineWrap*>(arg);
    self->hook_ = false;
    if (self->engine_) self->engine_->close();
  }

  Engine& live(Napi::Env env) {
    if (!engine_ || engine_->closed()) ThrowError(env, "engine is closed");
    return *engine_;
  }
  int devArg(const Napi::CallbackInfo& info, int i) {
    Engine& e = live(info.Env());
    int id = (int)getInt(info.Env(), info[i], "devId", 0, e.config().maxDevices - 1);
    if (!e.hasDevice(id)) ThrowError(info.Env(), "device " + std::to_string(id) + " does not exist");
    return id;
  }
  int queueArg(const Napi::CallbackInfo& info, int i, int devId) {
    return (int)getInt(info.Env(), info[i], "queue", 0, engine_->deviceQueues(devId) - 1);
  }
  int switchArg(const Napi::CallbackInfo& info, int i) {
    return (int)getInt(info.Env(), info[i], "switchId", 0, INT32_MAX);
  }
  void check(Napi::Env env, const std::string& err) {
    if (!err.empty()) ThrowError(env, err);
  }

  Napi::Value AddSwitch(const Napi::CallbackInfo& info) {
    Engine& e = live(info.Env());
    check(info.Env(), e.addSwitch(switchArg(info, 0)));
    return info.Env().Undefined();
  }
  Napi::Value RemoveSwitch(const Napi::CallbackInfo& info) {
    Engine& e = live(info.Env());
    check(info.Env(), e.removeSwitch(switchArg(info, 0)));
    return info.Env().Undefined();
  }
  Napi::Value SetSwitchUplink(const Napi::CallbackInfo& info) {
    Engine& e = live(info.Env());
    int sw = switchArg(info, 0);
    int fd = (int)getInt(info.Env(), info[1], "tapFd", -1, INT32_MAX);
    check(info.Env(), e.setUplink(sw, fd));
    return info.Env().Undefined();
  }
  Napi::Value Fdb(const Napi::CallbackInfo& info) {
    Engine& e = live(info.Env());
    std::vector<L2Switch::Entry> entries;
    check(info.Env(), e.fdb(switchArg(info, 0), &entries));
    Napi::Array arr = Napi::Array::New(info.Env(), entries.size());
    for (size_t i = 0; i < entries.size(); i++) {
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("mac", macStr(entries[i].mac));
      o.Set("devId", entries[i].port);
      o.Set("ageMs", (double)(entries[i].ageNs / 1000000ull));
      o.Set("pinned", entries[i].pinned);
      arr.Set((uint32_t)i, o);
    }
    return arr;
  }
  Napi::Value UplinkStatsM(const Napi::CallbackInfo& info) {
    Engine& e = live(info.Env());
    UplinkStats s;
    check(info.Env(), e.uplinkStats(switchArg(info, 0), &s));
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("attached", s.attached);
    o.Set("rxPackets", (double)s.rxPackets);
    o.Set("rxBytes", (double)s.rxBytes);
    o.Set("txPackets", (double)s.txPackets);
    o.Set("txBytes", (double)s.txBytes);
    o.Set("txDrops", (double)s.txDrops);
    o.Set("rxErrors", (double)s.rxErrors);
    return o;
  }
  Napi::Value AddNetDevice(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& e = live(env);
    int id = (int)getInt(env, info[0], "devId", 0, e.config().maxDevices - 1);
    Napi::Object o = getObject(env, info[1], "opts");
    int sw = (int)getInt(env, o.Get("switchId"), "opts.switchId", 0, INT32_MAX);
    if (!o.Get("mac").IsString()) ThrowType(env, "opts.mac must be a string like \"52:54:00:12:34:56\"");
    uint8_t mac[6];
    if (!parseMac(o.Get("mac").As<Napi::String>().Utf8Value(), mac))
      ThrowType(env, "opts.mac must be a string like \"52:54:00:12:34:56\"");
    int mtu = (int)getInt(env, o.Get("mtu"), "opts.mtu", 68, 65535);
    int qp = (int)getInt(env, o.Get("maxQueuePairs"), "opts.maxQueuePairs", 1, kMaxQueuePairs);
    if (e.hasDevice(id)) ThrowError(env, "device " + std::to_string(id) + " already exists");
    if (!e.hasSwitch(sw)) ThrowError(env, "switch " + std::to_string(sw) + " does not exist");
    bool keep = o.Get("keepCounters").IsBoolean() && o.Get("keepCounters").As<Napi::Boolean>().Value();
    PortConfig pc;
    pc.macKey = macKey(mac);
    if (!o.Get("portSecurity").IsUndefined()) portConfig(env, o.Get("portSecurity"), &pc);
    check(env, e.addNetDevice(id, sw, mac, mtu, qp, keep, pc));
    return env.Undefined();
  }
  // {spoofchk?, trust?, adminMac?, lockedMac?} over pc (whose macKey is the device's MAC).
  static void portConfig(Napi::Env env, Napi::Value v, PortConfig* pc) {
    Napi::Object o = getObject(env, v, "portSecurity");
    auto flag = [&](const char* name, bool* out) {
      Napi::Value x = o.Get(name);
      if (x.IsUndefined()) return;
      if (!x.IsBoolean()) ThrowType(env, std::string("portSecurity.") + name + " must be a boolean");
      *out = x.As<Napi::Boolean>().Value();
    };
    flag("spoofchk", &pc->spoofchk);
    flag("trust", &pc->trust);
    flag("adminMac", &pc->adminMac);
    flag("reportLock", &pc->reportLock);
    Napi::Value l = o.Get("lockedMac");
    if (l.IsString() && l.As<Napi::String>().Utf8Value().empty()) {
      pc->lockKey = 0;
    } else if (!l.IsUndefined()) {
      uint8_t m[6];
      if (!l.IsString() || !parseMac(l.As<Napi::String>().Utf8Value(), m) || (m[0] & 1))
        ThrowType(env, "portSecurity.lockedMac must be a unicast MAC like \"52:54:00:12:34:56\"");
      pc->lockKey = macKey(m);
    }
  }
  Napi::Value SetPortSecurity(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    PortState st;
    check(env, engine_->portState(id, &st));
    PortConfig pc = st.cfg;
    pc.lockKey = st.lockKey && !st.cfg.adminMac ? st.lockKey : 0;  // a learned lock stays unless given
    portConfig(env, info[1], &pc);
    check(env, engine_->setPortSecurity(id, pc));
    return env.Undefined();
  }
  Napi::Value PortStateM(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    PortState st;
    check(env, engine_->portState(id, &st));
    auto keyMac = [](uint64_t k) {
      uint8_t m[6];
      for (int i = 0; i < 6; i++) m[i] = (uint8_t)(k >> (40 - 8 * i));
      return macStr(m);
    };
    Napi::Object o = Napi::Object::New(env);
    o.Set("spoofchk", st.cfg.spoofchk);
    o.Set("trust", st.cfg.trust);
    o.Set("adminMac", st.cfg.adminMac);
    o.Set("mac", keyMac(st.cfg.macKey));
    o.Set("lockedMac", st.lockKey ? keyMac(st.lockKey) : std::string());
    o.Set("limit", st.limit);
    o.Set("learned", st.learned);
    return o;
  }
  Napi::Value AddBlkDevice(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& e = live(env);
    int id = (int)getInt(env, info[0], "devId", 0, e.config().maxDevices - 1);
    Napi::Object o = getObject(env, info[1], "opts");
    BlkParams p;
    p.fd = (int)getInt(env, o.Get("fd"), "opts.fd", -1, INT32_MAX);
    if (p.fd < 0) p.nullBytes = getU64(env, o.Get("nullBytes"), "opts.nullBytes");
    p.numQueues = (int)getInt(env, o.Get("numQueues"), "opts.numQueues", 1, kMaxQueuePairs);
    auto flag = [&](const char* k) { return o.Get(k).IsBoolean() && o.Get(k).As<Napi::Boolean>().Value(); };
    p.readonly = flag("readonly");
    p.direct = flag("direct");
    if (!o.Get("serial").IsUndefined()) {
      if (!o.Get("serial").IsString()) ThrowType(env, "opts.serial must be a string");
      std::string ser = o.Get("serial").As<Napi::String>().Utf8Value();
      if (ser.size() > sizeof p.serial) ThrowRange(env, "opts.serial is longer than 20 bytes");
      memcpy(p.serial, ser.data(), ser.size());
    }
    if (e.hasDevice(id)) ThrowError(env, "device " + std::to_string(id) + " already exists");
    BlkInfo bi{};
    check(env, e.addBlkDevice(id, p, flag("keepCounters"), &bi));
    Napi::Object r = Napi::Object::New(env);
    r.Set("capacity", Napi::BigInt::New(env, bi.capacity));
    r.Set("logicalBlockSize", bi.logicalBlock);
    r.Set("physicalBlockSize", bi.physicalBlock);
    return r;
  }
  Napi::Value SetBlkWriteback(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    if (!info[1].IsBoolean()) ThrowType(info.Env(), "writeback must be a boolean");
    check(info.Env(), engine_->setBlkWriteback(id, info[1].As<Napi::Boolean>().Value()));
    return info.Env().Undefined();
  }
  Napi::Value RemoveDevice(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    check(info.Env(), engine_->removeDevice(id));
    return info.Env().Undefined();
  }
  Napi::Value SetFeatures(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    uint64_t f = getU64(info.Env(), info[1], "features");
    check(info.Env(), engine_->setFeatures(id, f));
    return info.Env().Undefined();
  }
  Napi::Value SetMemTable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    if (!info[1].IsArray()) ThrowType(env, "regions must be an array");
    Napi::Array a = info[1].As<Napi::Array>();
    if (a.Length() > (uint32_t)kMaxMemRegions) ThrowRange(env, "at most 64 memory regions");
    std::vector<RegionSpec> regions;
    for (uint32_t i = 0; i < a.Length(); i++) regions.push_back(getRegion(env, a.Get(i), "regions[i]"));
    check(env, engine_->setMemTable(id, regions));
    return env.Undefined();
  }
  Napi::Value AddMemRegion(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    RegionSpec r = getRegion(info.Env(), info[1], "region");
    check(info.Env(), engine_->addMemRegion(id, r));
    return info.Env().Undefined();
  }
  Napi::Value RemoveMemRegion(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    Napi::Object o = getObject(env, info[1], "region");
    uint64_t gpa = getU64(env, o.Get("guestAddr"), "region.guestAddr");
    uint64_t size = getU64(env, o.Get("size"), "region.size");
    uint64_t uva = getU64(env, o.Get("userAddr"), "region.userAddr");
    check(env, engine_->removeMemRegion(id, gpa, size, uva));
    return env.Undefined();
  }
  Napi::Value SetDirtyLog(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    int fd = (int)getInt(env, info[1], "fd", -1, INT32_MAX);
    uint64_t size = fd >= 0 ? getU64(env, info[2], "size") : 0;
    uint64_t offset = fd >= 0 ? getU64(env, info[3], "offset") : 0;
    check(env, engine_->setDirtyLog(id, fd, size, offset));
    return env.Undefined();
  }
  Napi::Value SetBlkInflight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    Napi::Object o = getObject(env, info[1], "area");
    int fd = (int)getInt(env, o.Get("fd"), "area.fd", -1, INT32_MAX);
    uint32_t pending[64] = {};
    uint32_t nq = 0;
    if (fd < 0) {
      check(env, engine_->setBlkInflight(id, -1, 0, 0, 0, 0, false, pending));
    } else {
      uint64_t size = getU64(env, o.Get("size"), "area.size");
      uint64_t offset = getU64(env, o.Get("offset"), "area.offset");
      nq = (uint32_t)getInt(env, o.Get("numQueues"), "area.numQueues", 1, 64);
      uint32_t qs = (uint32_t)getInt(env, o.Get("queueSize"), "area.queueSize", 1, 32768);
      bool fresh = o.Get("fresh").ToBoolean();
      check(env, engine_->setBlkInflight(id, fd, size, offset, nq, qs, fresh, pending));
    }
    Napi::Array out = Napi::Array::New(env, nq);
    for (uint32_t q = 0; q < nq; q++) out.Set(q, Napi::Number::New(env, pending[q]));
    return out;
  }
  Napi::Value StartQueue(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    int q = queueArg(info, 1, id);
    Napi::Object c = getObject(env, info[2], "cfg");
    QueueStart qs;
    int size = (int)getInt(env, c.Get("size"), "cfg.size", 1, 32768);
    if (size & (size - 1)) ThrowRange(env, "cfg.size " + std::to_string(size) + " is not a power of two");
    qs.setup.size = (uint16_t)size;  // 32768 fits
    qs.setup.descAddr = getU64(env, c.Get("descAddr"), "cfg.descAddr");
    qs.setup.availAddr = getU64(env, c.Get("availAddr"), "cfg.availAddr");
    qs.setup.usedAddr = getU64(env, c.Get("usedAddr"), "cfg.usedAddr");
    qs.setup.lastAvailIdx = (uint16_t)getInt(env, c.Get("lastAvailIdx"), "cfg.lastAvailIdx", 0, 65535);
    if (!c.Get("logAddr").IsUndefined()) {
      qs.setup.logUsed = true;
      qs.setup.logAddr = getU64(env, c.Get("logAddr"), "cfg.logAddr");
    }
    qs.kickFd = (int)getInt(env, c.Get("kickFd"), "cfg.kickFd", -1, INT32_MAX);
    qs.callFd = (int)getInt(env, c.Get("callFd"), "cfg.callFd", -1, INT32_MAX);
    qs.errFd = (int)getInt(env, c.Get("errFd"), "cfg.errFd", -1, INT32_MAX);
    uint16_t resumedAt = 0, usedInMemory = 0;
    check(env, engine_->startQueue(id, q, qs, &resumedAt, &usedInMemory));
    Napi::Object out = Napi::Object::New(env);
    out.Set("resumedAt", Napi::Number::New(env, resumedAt));
    out.Set("usedInMemory", Napi::Number::New(env, usedInMemory));
    return out;
  }
  Napi::Value StopQueue(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    int q = queueArg(info, 1, id);
    uint16_t last = 0;
    check(info.Env(), engine_->stopQueue(id, q, &last));
    return Napi::Number::New(info.Env(), last);
  }
  Napi::Value QueueLastAvail(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    int q = queueArg(info, 1, id);
    return Napi::Number::New(info.Env(), engine_->queueLastAvail(id, q));
  }
  Napi::Value SetQueueEnabled(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    int q = queueArg(info, 1, id);
    if (!info[2].IsBoolean()) ThrowType(info.Env(), "enabled must be a boolean");
    check(info.Env(), engine_->setQueueEnabled(id, q, info[2].As<Napi::Boolean>().Value()));
    return info.Env().Undefined();
  }
  Napi::Value SetQueueCall(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    int q = queueArg(info, 1, id);
    int fd = (int)getInt(info.Env(), info[2], "callFd", -1, INT32_MAX);
    check(info.Env(), engine_->setQueueCall(id, q, fd));
    return info.Env().Undefined();
  }
  Napi::Value Hold(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsBoolean()) ThrowType(info.Env(), "hold(on) needs a boolean");
    live(info.Env()).hold(info[0].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  }
  Napi::Value InjectFrame(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = devArg(info, 0);
    if (!info[1].IsBuffer()) ThrowType(env, "frame must be a Buffer");
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    check(env, engine_->injectFrame(id, b.Data(), (uint32_t)b.Length()));
    return env.Undefined();
  }
  Napi::Value SignalQueue(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    int q = queueArg(info, 1, id);
    check(info.Env(), engine_->signalQueue(id, q));
    return info.Env().Undefined();
  }
  Napi::Value KickAll(const Napi::CallbackInfo& info) {
    int id = devArg(info, 0);
    check(info.Env(), engine_->kickAll(id));
    return info.Env().Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (engine_ && !engine_->closed()) {
      engine_->close();  // joins the workers: nothing posts events any more
      {
        std::lock_guard<std::mutex> g(state_->m);
        if (state_->alive) napi_release_threadsafe_function(state_->tsfn, napi_tsfn_release);
      }
      for (Napi::ObjectReference* ref : {&abRef_, &crashAbRef_}) {
        if (ref->IsEmpty()) continue;
        Napi::ArrayBuffer ab = ref->Value().As<Napi::ArrayBuffer>();
        if (!ab.IsDetached()) ab.Detach();
      }
    }
    return info.Env().Undefined();
  }
  Napi::Value Crash(const Napi::CallbackInfo& info) { return crashRef_.Value(); }
  // Takes every crash record left in the shared file (each exactly once across processes).
  Napi::Value ClaimCrashes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& e = live(env);
    crash::Claimed got[crash::kRoles * crash::kRecords];
    int n = crash::claim(e.crashRegion(), got, crash::kRoles * crash::kRecords);
    Napi::Array arr = Napi::Array::New(env, (size_t)n);
    for (int i = 0; i < n; i++) {
      const crash::Record& r = got[i].rec;
      Napi::Object o = Napi::Object::New(env);
      o.Set("role", (double)got[i].role);
      o.Set("pid", (double)r.pid);
      o.Set("tid", (double)r.tid);
      o.Set("sig", (double)r.sig);
      o.Set("code", (double)r.code);
      o.Set("slot", (double)r.slot);
      o.Set("serve", (double)r.serve - 1);  // devId, -1: none
      o.Set("peer", (double)r.peer - 1);
      o.Set("serveTag", (double)r.serveTag);
      o.Set("peerTag", (double)r.peerTag);
      o.Set("atMs", (double)r.atMs);
      o.Set("jsException", (r.flags & crash::kRecJsException) != 0);
      o.Set("command", (r.flags & crash::kRecCommand) != 0);
      o.Set("external", (r.flags & crash::kRecExternal) != 0);
      arr.Set((uint32_t)i, o);
    }
    return arr;
  }
  Napi::Value Counters(const Napi::CallbackInfo& info) {
    return countersRef_.Value();  // detached (length 0) after close()
  }
  Napi::Value MaxDevices(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), engine_->config().maxDevices); }
  Napi::Value MaxQueues(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), kMaxQueues); }

  std::unique_ptr<Engine> engine_;
  std::shared_ptr<TsfnState> state_;
  Napi::ObjectReference countersRef_, abRef_, crashRef_, crashAbRef_;
  napi_env env_ = nullptr;
  bool hook_ = false;
};

// ------------------------------------------------------------------ module functions

Napi::Value OpenTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowType(env, "name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.empty() || name.size() > 15) ThrowRange(env, "tap name must be 1..15 characters");
  std::string err;
  int fd = openTap(name, &err);
  if (fd < 0) ThrowError(env, err);
  return Napi::Number::New(env, fd);
}

// An uncaught JS exception is about to end the process: record it as a crash of the device
// given (devId, or -1: whatever the JS thread's slot names) in every engine's shared file.
Napi::Value NoteFatalException(const Napi::CallbackInfo& info) {
  int64_t dev = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : -1;
  crash::noteException(dev >= 0 && dev < INT32_MAX ? (uint64_t)dev + 1 : 0);
  return info.Env().Undefined();
}

}  // namespace

void InitEngine(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Define(env));
  exports.Set("COUNTERS_PER_QUEUE", Napi::Number::New(env, kCountersPerQueue));
  Napi::Array names = Napi::Array::New(env, kCountersPerQueue);
  for (int i = 0; i < kCountersPerQueue; i++) names.Set((uint32_t)i, kCounterNames[i]);
  exports.Set("COUNTER_NAMES", names);
  exports.Set("PORT_COUNTERS_PER_QUEUE", Napi::Number::New(env, kPortCountersPerQueue));
  Napi::Array pnames = Napi::Array::New(env, kPortCountersPerQueue);
  for (int i = 0; i < kPortCountersPerQueue; i++) pnames.Set((uint32_t)i, kPortCounterNames[i]);
  exports.Set("PORT_COUNTER_NAMES", pnames);
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
  exports.Set("noteFatalException", Napi::Function::New(env, NoteFatalException, "noteFatalException"));
}

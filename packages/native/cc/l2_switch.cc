// Learning switch with port security (see l2_switch.h).
#include "l2_switch.h"

#include <cstdio>
#include <cstring>

#include "tap_port.h"

namespace vhd {

static constexpr uint64_t kSweepIntervalNs = 1000000000ull;

static inline uint32_t fdbHash(uint64_t key) noexcept {
  return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 52) & (kFdbSize - 1);
}

static void formatMac(uint64_t key, char* out, size_t n) {
  snprintf(out, n, "%02x:%02x:%02x:%02x:%02x:%02x", (unsigned)(key >> 40) & 0xff, (unsigned)(key >> 32) & 0xff,
           (unsigned)(key >> 24) & 0xff, (unsigned)(key >> 16) & 0xff, (unsigned)(key >> 8) & 0xff, (unsigned)key & 0xff);
}

L2Switch::L2Switch(int id_, int maxDevices, int worker_)
    : id(id_), worker(worker_), slotOf(maxDevices, -1), ports_(maxDevices) {
  members.reserve(maxDevices);
  up_.cfg.spoofchk = false;
  up_.cfg.trust = true;
  up_.limit = kFdbLimitUplink;
}

void L2Switch::addMember(Device* d) {
  if (slotOf[d->devId] >= 0) return;
  slotOf[d->devId] = (int)members.size();
  members.push_back(d);
}

void L2Switch::removeMember(Device* d) {
  int s = slotOf[d->devId];
  if (s < 0) return;
  Device* last = members.back();
  members[s] = last;
  slotOf[last->devId] = s;
  members.pop_back();
  slotOf[d->devId] = -1;
  purgePort(d->devId);
  ports_[d->devId] = PortState{};
}

void L2Switch::purgePort(int port) noexcept {
  // Rebuild without the port's entries (linear probing has no cheap delete).
  static thread_local FdbSlot keep[kFdbSize];
  int n = 0;
  for (auto& s : fdb_)
    if (s.key && s.port != port) keep[n++] = s;
  memset(fdb_, 0, sizeof fdb_);
  for (int i = 0; i < n; i++) {
    uint32_t h = fdbHash(keep[i].key);
    for (int k = 0; k < kFdbSize; k++) {
      FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
      if (!s.key) { s = keep[i]; break; }
    }
  }
  state(port).learned = 0;
  state(port).lockKey = 0;
}

FdbSlot* L2Switch::find(uint64_t key) noexcept {
  uint32_t h = fdbHash(key);
  for (int k = 0; k < kFdbSize; k++) {
    FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
    if (!s.key) return nullptr;
    if (s.key == key) return &s;
  }
  return nullptr;
}

// Makes key the port's pinned entry; false when another port has it pinned (or the table is full).
bool L2Switch::pin(uint64_t key, int port, uint64_t now) noexcept {
  FdbSlot* s = find(key);
  if (s) {
    if (s->pinned && s->port != port) return false;
    if (s->counted) state(s->port).learned--;
  } else {
    uint32_t h = fdbHash(key);
    for (int k = 0; k < kFdbSize && !s; k++) {
      FdbSlot& t = fdb_[(h + k) & (kFdbSize - 1)];
      if (!t.key || (!t.pinned && (!t.counted || now - t.seenNs > kFdbAgingNs))) s = &t;
    }
    if (!s) return false;
    if (s->key && s->counted) state(s->port).learned--;
  }
  *s = FdbSlot{key, port, 1, 1, now};
  state(port).learned++;
  return true;
}

// The entry stays (a probe chain runs through it) but is free for reuse and found by no lookup.
void L2Switch::unpin(uint64_t key, int port) noexcept {
  FdbSlot* s = find(key);
  if (!s || s->port != port || !s->pinned) return;
  if (s->counted) state(port).learned--;
  s->pinned = 0;
  s->counted = 0;
  s->seenNs = 0;
}

std::string L2Switch::configurePort(int port, const PortConfig& c, uint64_t now) {
  if (port < 0 || port >= (int)ports_.size()) return "no such port";
  purgePort(port);
  PortState& ps = ports_[port];
  ps = PortState{};
  ps.cfg = c;
  ps.limit = c.trust ? kFdbLimitTrusted : kFdbLimitVf;
  auto usable = [](uint64_t k) { return k && !groupKey(k) && k != kZeroMacKey; };
  if (c.adminMac) {
    if (!usable(c.macKey)) return "";
    if (!pin(c.macKey, port, now)) {
      char m[24];
      formatMac(c.macKey, m, sizeof m);
      return std::string("MAC ") + m + " is already another port's MAC on this switch";
    }
    ps.lockKey = c.macKey;
    return "";
  }
  // A carried lock, else the default MAC's reservation. Either may be another port's by now
  // (a guest locked to it): then the port locks on its first frame instead; never a failure,
  // since this runs at restore and HA adoption too.
  if (usable(c.lockKey) && pin(c.lockKey, port, now)) {
    ps.lockKey = c.lockKey;
    return "";
  }
  if (usable(c.macKey)) pin(c.macKey, port, now);
  return "";
}

std::string L2Switch::admits(int port, const uint8_t* srcMac) const {
  if (port == kUplinkPort) return "";
  uint64_t key = macKey(srcMac);
  char m[24], own[24];
  formatMac(key, m, sizeof m);
  const PortState& ps = ports_[port];
  if (groupKey(key) || key == kZeroMacKey) return std::string("source MAC ") + m + " is not a unicast address";
  uint32_t h = fdbHash(key);
  for (int k = 0; k < kFdbSize; k++) {
    const FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
    if (!s.key) break;
    if (s.key == key) {
      if (s.pinned && s.port != port) return std::string("MAC ") + m + " is the MAC of another VF (device " + std::to_string(s.port) + ")";
      break;
    }
  }
  if (ps.cfg.spoofchk && !ps.cfg.trust && ps.lockKey && key != ps.lockKey) {
    formatMac(ps.lockKey, own, sizeof own);
    return std::string("MAC ") + m + " is not the VF's MAC " + own + " (spoofchk on)";
  }
  return "";
}

// Frees the port's share of entries it has not used for the aging time.
void L2Switch::sweepAged(int port, uint64_t now) noexcept {
  PortState& ps = state(port);
  if (now - ps.lastSweepNs < kSweepIntervalNs && ps.lastSweepNs) return;
  ps.lastSweepNs = now;
  for (auto& s : fdb_)
    if (s.key && s.port == port && s.counted && !s.pinned && now - s.seenNs > kFdbAgingNs) {
      s.counted = 0;
      ps.learned--;
    }
}

L2Switch::Admit L2Switch::learn(uint64_t key, int port, uint64_t now) noexcept {
  PortState& ps = state(port);
  const bool dropAtLimit = port != kUplinkPort && !ps.cfg.trust;
  uint32_t h = fdbHash(key);
  FdbSlot* reuse = nullptr;
  FdbSlot* slot = nullptr;
  for (int k = 0; k < kFdbSize; k++) {
    FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
    if (s.key == key) { slot = &s; break; }
    if (!s.key) { slot = reuse ? reuse : &s; reuse = nullptr; break; }
    if (!reuse && !s.pinned && (!s.counted || now - s.seenNs > kFdbAgingNs)) reuse = &s;
  }
  if (!slot) slot = reuse;  // no empty slot: an aged one, or none (the table is full)
  if (slot && slot->key == key) {
    // Another port's own MAC never moves. A port allowed any source (trust, spoofchk off, the
    // uplink) still sends it: forwarded, not learned (a VM bridging or reflecting frames).
    if (slot->pinned && slot->port != port) return Admit::kNotLearned;
    if (slot->port == port && slot->counted) {
      slot->seenNs = now;
      return Admit::kLearned;
    }
  }
  if (ps.learned >= ps.limit) {
    sweepAged(port, now);
    if (ps.learned >= ps.limit) return dropAtLimit ? Admit::kDropped : Admit::kNotLearned;
  }
  if (!slot) return Admit::kNotLearned;  // the table is full of live entries: the frame floods
  if (slot->key && slot->counted) state(slot->port).learned--;  // a move, or an aged slot reused
  *slot = FdbSlot{key, port, 0, 1, now};
  ps.learned++;
  return Admit::kLearned;
}

L2Switch::Admit L2Switch::admit(uint64_t key, int port, uint64_t now, bool* lockedNow) noexcept {
  const bool group = groupKey(key) || key == kZeroMacKey;
  if (port == kUplinkPort) return group ? Admit::kNotLearned : learn(key, port, now);
  PortState& ps = ports_[port];
  if (!ps.cfg.spoofchk || ps.cfg.trust) return group ? Admit::kNotLearned : learn(key, port, now);
  if (ps.lockKey) {
    if (key != ps.lockKey) return Admit::kDropped;
    FdbSlot* s = find(key);
    if (s && s->port == port) s->seenNs = now;
    return Admit::kLearned;
  }
  // Not locked yet: the first unicast source that is no other port's MAC becomes the port's.
  if (group) return Admit::kDropped;
  FdbSlot* s = find(key);
  if (s && s->pinned && s->port != port) return Admit::kDropped;
  if (key != ps.cfg.macKey) unpin(ps.cfg.macKey, port);
  if (!pin(key, port, now)) {
    pin(ps.cfg.macKey, port, now);
    return Admit::kDropped;
  }
  ps.lockKey = key;
  *lockedNow = ps.cfg.reportLock;
  return Admit::kLearned;
}

bool L2Switch::lookup(uint64_t key, uint64_t now, int* port) const noexcept {
  uint32_t h = fdbHash(key);
  for (int k = 0; k < kFdbSize; k++) {
    const FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
    if (!s.key) return false;
    if (s.key == key) {
      if (!s.pinned && (!s.counted || now - s.seenNs > kFdbAgingNs)) return false;
      *port = s.port;
      return true;
    }
  }
  return false;
}

void L2Switch::dump(uint64_t now, std::vector<Entry>* out) {
  for (auto& s : fdb_) {
    if (!s.key || (!s.pinned && (!s.counted || now - s.seenNs > kFdbAgingNs))) continue;
    Entry e;
    for (int i = 0; i < 6; i++) e.mac[i] = (uint8_t)(s.key >> (40 - 8 * i));
    e.port = s.port;
    e.ageNs = now - s.seenNs;
    e.pinned = s.pinned != 0;
    out->push_back(e);
  }
}

void L2Switch::forward(int srcPort, int pair, WorkerCtx& ctx, Device* srcDev, int srcQueue) noexcept {
  if (ctx.n == 0) return;
  int m;
  TapPort* up;
  uint32_t upMask = 0, flood = 0, dropped = 0, unlearned = 0;
  uint64_t droppedKey = 0, lockKey = 0, ownKey = 0;
  {
    SpinGuard g(lock);
    m = (int)members.size();
    if (m > ctx.dstCap) m = ctx.dstCap;
    for (int s = 0; s < m; s++) {
      ctx.dstPtr[s] = members[s];
      ctx.dstMask[s] = 0;
    }
    up = uplink;
    // A burst usually holds one flow: check and learn a source and look up a destination once
    // per run of equal addresses (same time, same port: the table would not change). A learn
    // may move the looked-up address, so it forgets the cached lookup.
    uint64_t learnedKey = 0, lookedUpKey = 0;
    Admit verdict = Admit::kLearned;
    bool lookedUpHit = false;
    int lookedUpPort = -1;
    for (int i = 0; i < ctx.n; i++) {
      const uint8_t* f = ctx.pkts[i].data;
      const uint8_t* dst = f;
      uint64_t k = macKey(f + 6);
      if (k != learnedKey) {
        bool lockedNow = false;
        verdict = admit(k, srcPort, ctx.nowNs, &lockedNow);
        if (lockedNow) lockKey = k;
        learnedKey = k;
        lookedUpKey = 0;
      }
      if (verdict != Admit::kLearned) {
        if (verdict == Admit::kDropped) {
          dropped |= 1u << i;
          droppedKey = k;
          continue;
        }
        if (!groupKey(k) && k != kZeroMacKey) unlearned |= 1u << i;
      }
      int port = -1;
      bool hit = false;
      if (!(dst[0] & 1)) {
        uint64_t dk = macKey(dst);
        if (dk != lookedUpKey) {
          lookedUpHit = lookup(dk, ctx.nowNs, &lookedUpPort);
          lookedUpKey = dk;
        }
        hit = lookedUpHit;
        port = lookedUpPort;
      }
      if (hit) {
        if (port == srcPort) continue;  // never back out the ingress port
        if (port == kUplinkPort) {
          upMask |= 1u << i;
        } else {
          int s = port >= 0 && port < (int)slotOf.size() ? slotOf[port] : -1;
          if (s >= 0 && s < m) ctx.dstMask[s] |= 1u << i;
        }
      } else {
        flood |= 1u << i;
      }
    }
    if (dropped && srcPort != kUplinkPort) ownKey = ports_[srcPort].lockKey ? ports_[srcPort].lockKey : ports_[srcPort].cfg.macKey;
  }
  if (dropped | unlearned | lockKey) {  // rare: port security at work
    Device* d = srcDev;
    if (srcDev && srcQueue >= 0) {
      uint64_t* c = srcDev->portCtr + (size_t)srcQueue * kPortCountersPerQueue;
      addSingleWriter(c + kSpoofed, (uint64_t)__builtin_popcount(dropped));
      addSingleWriter(c + kUnlearned, (uint64_t)__builtin_popcount(unlearned));
    }
    char a[24], b[24];
    if (lockKey && ctx.events) {
      formatMac(lockKey, a, sizeof a);
      snprintf(ctx.reason, sizeof ctx.reason, "%s", a);
      ctx.events->post(srcPort, -1, EvKind::kPortLocked, ctx.reason);
    }
    // Formatted only when the event will be posted (at most once a second per queue): a VM
    // that keeps spoofing costs a counter add per burst, not a printf.
    Virtqueue* sq = d && srcQueue >= 0 ? &d->vq[srcQueue] : nullptr;
    if (dropped && sq && sq->lastEventNs && ctx.nowNs - sq->lastEventNs < 1000000000ull) {
      sq->suppressedEvents++;
    } else if (dropped && sq) {
      formatMac(droppedKey, a, sizeof a);
      formatMac(ownKey, b, sizeof b);
      snprintf(ctx.reason, sizeof ctx.reason,
               "%d frame(s) dropped by port security: source MAC %s is not allowed on this VF (its MAC: %s; another VF's "
               "MAC, a group address, or its FDB share full)",
               __builtin_popcount(dropped), a, b);
      rateLimitedPost(*d, srcQueue, EvKind::kSpoofed, ctx);
    }
  }
  if (flood) {
    for (int s = 0; s < m; s++)
      if (static_cast<Device*>(ctx.dstPtr[s])->devId != srcPort) ctx.dstMask[s] |= flood;
    if (srcPort != kUplinkPort) upMask |= flood;
  }
  // Progress of the source's burst (TxProgress): a frame is done once its last destination has
  // it; frames going nowhere (dropped ones too) are done at once.
  // Counting each frame's destinations keeps this linear in the switch's ports.
  Virtqueue* src = srcDev ? &srcDev->vq[srcQueue] : nullptr;
  uint8_t left[kBurst] = {};
  uint32_t anywhere = up ? upMask : 0;
  if (src) {
    for (int s = 0; s < m; s++) {
      anywhere |= ctx.dstMask[s];
      for (uint32_t b = ctx.dstMask[s]; b; b &= b - 1) left[__builtin_ctz(b)]++;
    }
    for (uint32_t b = up ? upMask : 0; b; b &= b - 1) left[__builtin_ctz(b)]++;
    const uint32_t all = ctx.n >= 32 ? ~0u : ((1u << ctx.n) - 1);
    netTxDelivered(*src, ctx, all & ~anywhere);
  }
  for (int s = 0; s < m; s++) {
    if (!ctx.dstMask[s]) continue;
    uint32_t last = 0;  // frames whose last destination this is
    if (src)
      for (uint32_t b = ctx.dstMask[s]; b; b &= b - 1)
        if (--left[__builtin_ctz(b)] == 0) last |= b & -b;
    netDeliver(*static_cast<Device*>(ctx.dstPtr[s]), pair, ctx, ctx.dstMask[s], src, last);
  }
  if (up && upMask) {
    uint64_t drops = tapTxBurst(*up, ctx, upMask);
    if (drops && srcDev) srcDev->vq[srcQueue].ctr->add(kDrops, drops);
    if (src) netTxDelivered(*src, ctx, upMask);
  }
}

}  // namespace vhd

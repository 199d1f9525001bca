// Learning switch (see l2_switch.h).
#include "l2_switch.h"

#include <cstring>

#include "tap_port.h"

namespace vhd {

static inline uint32_t fdbHash(uint64_t key) noexcept {
  return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 52) & (kFdbSize - 1);
}

L2Switch::L2Switch(int id_, int maxDevices, int worker_) : id(id_), worker(worker_), slotOf(maxDevices, -1) {
  members.reserve(maxDevices);
}

void L2Switch::addMember(NetDevice* d) {
  if (slotOf[d->devId] >= 0) return;
  slotOf[d->devId] = (int)members.size();
  members.push_back(d);
}

void L2Switch::removeMember(NetDevice* d) {
  int s = slotOf[d->devId];
  if (s < 0) return;
  NetDevice* last = members.back();
  members[s] = last;
  slotOf[last->devId] = s;
  members.pop_back();
  slotOf[d->devId] = -1;
  purgePort(d->devId);
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
}

void L2Switch::learn(uint64_t key, int port, uint64_t now) noexcept {
  uint32_t h = fdbHash(key);
  FdbSlot* reuse = nullptr;
  for (int k = 0; k < kFdbSize; k++) {
    FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
    if (s.key == key) {
      s.port = port;  // a move on relearn
      s.seenNs = now;
      return;
    }
    if (!s.key) {
      FdbSlot& t = reuse ? *reuse : s;
      t.key = key;
      t.port = port;
      t.seenNs = now;
      return;
    }
    if (!reuse && now - s.seenNs > kFdbAgingNs) reuse = &s;
  }
  if (reuse) { reuse->key = key; reuse->port = port; reuse->seenNs = now; }
  // else the table is full of live entries: do not learn (the frame floods)
}

bool L2Switch::lookup(uint64_t key, uint64_t now, int* port) const noexcept {
  uint32_t h = fdbHash(key);
  for (int k = 0; k < kFdbSize; k++) {
    const FdbSlot& s = fdb_[(h + k) & (kFdbSize - 1)];
    if (!s.key) return false;
    if (s.key == key) {
      if (now - s.seenNs > kFdbAgingNs) return false;
      *port = s.port;
      return true;
    }
  }
  return false;
}

void L2Switch::dump(uint64_t now, std::vector<Entry>* out) {
  for (auto& s : fdb_) {
    if (!s.key || now - s.seenNs > kFdbAgingNs) continue;
    Entry e;
    for (int i = 0; i < 6; i++) e.mac[i] = (uint8_t)(s.key >> (40 - 8 * i));
    e.port = s.port;
    e.ageNs = now - s.seenNs;
    out->push_back(e);
  }
}

void L2Switch::forward(int srcPort, int pair, WorkerCtx& ctx, NetDevice* srcDev, int srcQueue) noexcept {
  if (ctx.n == 0) return;
  int m;
  TapPort* up;
  uint32_t upMask = 0, flood = 0;
  {
    SpinGuard g(lock);
    m = (int)members.size();
    if (m > ctx.dstCap) m = ctx.dstCap;
    for (int s = 0; s < m; s++) {
      ctx.dstPtr[s] = members[s];
      ctx.dstMask[s] = 0;
    }
    up = uplink;
    // A burst usually holds one flow: learn a source and look up a destination once per
    // run of equal addresses (same time, same port: the table would not change). A learn
    // may move the looked-up address, so it forgets the cached lookup.
    uint64_t learnedKey = 0, lookedUpKey = 0;
    bool lookedUpHit = false;
    int lookedUpPort = -1;
    for (int i = 0; i < ctx.n; i++) {
      const uint8_t* f = ctx.pkts[i].data;
      const uint8_t* dst = f;
      const uint8_t* src = f + 6;
      if (!(src[0] & 1)) {
        uint64_t k = macKey(src);
        if (k != learnedKey) {
          learn(k, srcPort, ctx.nowNs);
          learnedKey = k;
          lookedUpKey = 0;
        }
      }
      int port = -1;
      bool hit = false;
      if (!(dst[0] & 1)) {
        uint64_t k = macKey(dst);
        if (k != lookedUpKey) {
          lookedUpHit = lookup(k, ctx.nowNs, &lookedUpPort);
          lookedUpKey = k;
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
  }
  if (flood) {
    for (int s = 0; s < m; s++)
      if (static_cast<NetDevice*>(ctx.dstPtr[s])->devId != srcPort) ctx.dstMask[s] |= flood;
    if (srcPort != kUplinkPort) upMask |= flood;
  }
  // Progress of the source's burst (TxProgress): a frame is done once its last destination has
  // it; frames going nowhere are done at once.
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
    netDeliver(*static_cast<NetDevice*>(ctx.dstPtr[s]), pair, ctx, ctx.dstMask[s], src, last);
  }
  if (up && upMask) {
    uint64_t drops = tapTxBurst(*up, ctx, upMask);
    if (drops && srcDev) srcDev->vq[srcQueue].ctr->add(kDrops, drops);
    if (src) netTxDelivered(*src, ctx, upMask);
  }
}

}  // namespace vhd

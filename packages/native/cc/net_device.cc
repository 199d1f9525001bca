// virtio-net TX/RX over split virtqueues (see net_device.h).
#include "net_device.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace vhd {

static constexpr uint64_t kNsPerSec = 1000000000ull;

void Device::refreshEnabled(int q) noexcept {
  Virtqueue& v = vq[q];
  bool en = v.enabledState >= 0 ? v.enabledState == 1 : !has(VHOST_USER_F_PROTOCOL_FEATURES);
  __atomic_store_n(&v.enabled, en, __ATOMIC_RELEASE);
}

void Device::applyFeatures(uint64_t f) noexcept {
  features = f;
  hdrLen = (has(VIRTIO_F_VERSION_1) || has(VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;
  mrg = has(VIRTIO_NET_F_MRG_RXBUF);
  log.on = has(VHOST_F_LOG_ALL);
  for (int q = 0; q < kMaxQueues; q++) {
    vq[q].eventIdx = has(VIRTIO_RING_F_EVENT_IDX);
    vq[q].indirectOk = has(VIRTIO_RING_F_INDIRECT_DESC);
    refreshEnabled(q);
  }
}

void rateLimitedPost(Device& d, int q, EvKind kind, WorkerCtx& ctx) noexcept {
  Virtqueue& vq = d.vq[q];
  if (d.mem->fault().pending()) return;  // we read zero pages (sigbus_guard.h); that report says why
  if (ctx.nowNs - vq.lastEventNs < kNsPerSec && vq.lastEventNs != 0) {
    vq.suppressedEvents++;
    return;
  }
  if (vq.suppressedEvents) {
    size_t l = strlen(ctx.reason);
    snprintf(ctx.reason + l, sizeof ctx.reason - l, " (+%u similar suppressed)", vq.suppressedEvents);
    vq.suppressedEvents = 0;
  }
  vq.lastEventNs = ctx.nowNs ? ctx.nowNs : 1;
  if (ctx.events) ctx.events->post(d.devId, q, kind, ctx.reason);
}

void chainError(Device& d, int q, WorkerCtx& ctx) noexcept { rateLimitedPost(d, q, EvKind::kChainError, ctx); }

void queueBroken(Device& d, int q, WorkerCtx& ctx) noexcept {
  Virtqueue& vq = d.vq[q];
  if (vq.broken) return;
  vq.markBroken();
  // After a memory fault in this burst the ring reads as zeros: the fault report says why.
  if (ctx.events && !d.mem->fault().pending()) ctx.events->post(d.devId, q, EvKind::kQueueBroken, ctx.reason);
}

// The frame's bytes [skip, skip+len) when they lie in one segment of the iov list, else null.
static uint8_t* contiguous(const struct iovec* iov, int n, size_t skip, size_t len) noexcept {
  for (int i = 0; i < n; i++) {
    size_t l = iov[i].iov_len;
    if (skip >= l) { skip -= l; continue; }
    return l - skip >= len ? static_cast<uint8_t*>(iov[i].iov_base) + skip : nullptr;
  }
  return nullptr;
}

// Copies len bytes starting `skip` bytes into the iov list to dst.
static void gather(const struct iovec* iov, int n, size_t skip, uint8_t* dst, size_t len) noexcept {
  for (int i = 0; i < n && len; i++) {
    size_t l = iov[i].iov_len;
    if (skip >= l) { skip -= l; continue; }
    size_t c = l - skip;
    if (c > len) c = len;
    memcpy(dst, static_cast<uint8_t*>(iov[i].iov_base) + skip, c);
    dst += c;
    len -= c;
    skip = 0;
  }
}

int netTxBurst(Device& d, int q, WorkerCtx& ctx) noexcept {
  Virtqueue& vq = d.vq[q];
  ctx.n = 0;
  if (!vq.running || !vq.enabled || vq.broken) return 0;
  int pend = vq.pending();
  if (pend < 0) {
    snprintf(ctx.reason, sizeof ctx.reason, "avail idx %u is %u entries ahead of last avail %u (ring size %u)",
             vq.availIdx(), (unsigned)(uint16_t)(vq.availIdx() - vq.lastAvail), vq.lastAvail, vq.size);
    queueBroken(d, q, ctx);
    return 0;
  }
  if (pend == 0) return 0;
  if (pend > kBurst) pend = kBurst;
  const MemTable& mem = *d.mem;
  const uint32_t hl = (uint32_t)d.hdrLen;
  uint64_t bytes = 0, errs = 0;
  int consumed = 0;
  const uint16_t start = vq.lastAvail;
  uint32_t done = 0;  // positions that need no delivery
  vq.prefetchBuffers<false>(mem, start, pend);
  for (int i = 0; i < pend; i++) {
    uint16_t head;
    if (vq.headAt(vq.lastAvail, &head, ctx.reason, sizeof ctx.reason) == Pop::kBroken) {
      queueBroken(d, q, ctx);
      break;
    }
    const uint16_t skipPos = (uint16_t)(vq.lastAvail - vq.skipStart);
    vq.lastAvail++;
    consumed++;
    if (vq.skipN) {
      if (skipPos < vq.skipN && ((vq.skipMask >> skipPos) & 1)) {
        // Delivered by the process that ran this queue before it died: complete it only.
        vq.pushUsed(head, 0);
        done |= 1u << i;
        if (skipPos + 1u >= vq.skipN) vq.skipN = 0;
        continue;
      }
      if (skipPos + 1u >= vq.skipN) vq.skipN = 0;
    }
    Chain c{};
    c.iovStart = 0;
    bool tooMany = false;
    bool ok = vq.walk(mem, head, false, ctx.iov, kMaxIov, &c, &tooMany, ctx.reason, sizeof ctx.reason);
    if (ok && c.len > hl + kMaxFrame) {
      snprintf(ctx.reason, sizeof ctx.reason, "chain at head %u: %" PRIu64 " bytes exceed header %u + max frame %u", head,
               c.len, hl, kMaxFrame);
      ok = false;
    }
    if (ok && c.len < hl + 14) {
      snprintf(ctx.reason, sizeof ctx.reason, "chain at head %u: %" PRIu64 " bytes, shorter than header %u + Ethernet header",
               head, c.len, hl);
      ok = false;
    }
    if (!ok) {
      vq.pushUsed(head, 0);
      done |= 1u << i;
      errs++;
      chainError(d, q, ctx);
      continue;
    }
    ctx.pos[ctx.n] = (uint8_t)i;
    Pkt& p = ctx.pkts[ctx.n];
    const struct iovec& seg0 = ctx.iov[c.iovStart];
    if (seg0.iov_len >= kNetHdrMax) {
      // A constant-size copy (two bytes past a 10-byte header are in the segment too and
      // are cleared below).
      memcpy(p.hdr, seg0.iov_base, kNetHdrMax);
    } else {
      memset(p.hdr, 0, sizeof p.hdr);
      gather(ctx.iov + c.iovStart, c.iovCount, 0, p.hdr, hl);
    }
    p.hdr[10] = p.hdr[11] = 0;  // num_buffers is meaningless on TX (and not part of a 10-byte header)
    p.len = (uint32_t)(c.len - hl);
    // One copy instead of two: a frame in one segment is delivered straight from the sender's
    // buffer, which stays ours until this burst's used entries are published (netTxFinish).
    // Not when a checksum may be finalized in place: the device never writes a TX buffer.
    if (p.hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM)
      p.data = nullptr;
    else if (c.iovCount == 1)
      p.data = static_cast<uint8_t*>(seg0.iov_base) + hl;  // c.len == seg0.iov_len
    else
      p.data = contiguous(ctx.iov + c.iovStart, c.iovCount, hl, p.len);
    if (!p.data) {
      p.data = ctx.bufs + (size_t)ctx.n * kFrameStride;
      gather(ctx.iov + c.iovStart, c.iovCount, hl, p.data, p.len);
    }
    p.csumDone = false;
    bytes += p.len;
    ctx.n++;
    vq.pushUsed(head, 0);
  }
  if (consumed) {
    // Used entries are written but not published until every frame is delivered
    // (netTxFinish): a process killed in between leaves this record to its successor.
    vq.burst = TxProgress{start, (uint8_t)consumed, done, true};
    __atomic_store_n(&vq.ctr->v[kProgress], vq.burst.encode(), __ATOMIC_SEQ_CST);
  }
  // Counted when the burst is finished: a burst a killed process never finished is counted
  // once, by the process that finishes it.
  vq.burstPkts = (uint32_t)ctx.n;
  vq.burstBytes = bytes;
  vq.burstErrs = (uint32_t)errs;
  return consumed;
}

void netTxDelivered(Virtqueue& vq, const WorkerCtx& ctx, uint32_t pktMask) noexcept {
  if (!vq.burst.active || !pktMask) return;
  uint32_t pos = 0;
  while (pktMask) {
    int k = __builtin_ctz(pktMask);
    pktMask &= pktMask - 1;
    pos |= 1u << ctx.pos[k];
  }
  vq.burst.done |= pos;
  vq.storeProgress();  // release: after the destination's used index
}

void netTxFinish(Device& d, int q) noexcept {
  Virtqueue& vq = d.vq[q];
  if (!vq.burst.active) return;
  vq.ctr->add(kPackets, vq.burstPkts);
  vq.ctr->add(kBytes, vq.burstBytes);
  vq.ctr->add(kErrors, vq.burstErrs);
  vq.publishUsed();
  // Finished before the signal's syscall, where a kill is likeliest: a successor must not
  // finish (and count) this burst again. A signal lost that way is sent by the successor,
  // which signals every ring it resumes.
  vq.burst.active = false;
  vq.storeProgress();
  vq.signalIfNeeded();
}

// ---- checksum -------------------------------------------------------------------------

static uint32_t sum16(const uint8_t* p, size_t len, uint32_t s) noexcept {
  uint64_t acc = s;
  while (len >= 2) {
    acc += (uint32_t)(p[0] << 8 | p[1]);
    p += 2;
    len -= 2;
  }
  if (len) acc += (uint32_t)(p[0] << 8);
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint32_t)acc;
}

bool softwareChecksum(Pkt& p) noexcept {
  uint16_t start, off;
  memcpy(&start, p.hdr + 6, 2);
  memcpy(&off, p.hdr + 8, 2);
  if (start >= p.len || (uint32_t)off + 2 > p.len - start) return false;
  uint8_t* field = p.data + start + off;
  if (!p.csumDone) {
    p.csumOrig = (uint16_t)(field[0] << 8 | field[1]);
    uint32_t s = sum16(p.data + start, p.len - start, 0);
    uint16_t c = (uint16_t)~s;
    field[0] = (uint8_t)(c >> 8);
    field[1] = (uint8_t)c;
    p.csumDone = true;
  }
  return true;
}

static void restoreChecksum(Pkt& p) noexcept {
  if (!p.csumDone) return;
  uint16_t start, off;
  memcpy(&start, p.hdr + 6, 2);
  memcpy(&off, p.hdr + 8, 2);
  uint8_t* field = p.data + start + off;
  field[0] = (uint8_t)(p.csumOrig >> 8);
  field[1] = (uint8_t)p.csumOrig;
  p.csumDone = false;
}

// Builds the header for destination d (offload rules); false = drop.
static bool headerFor(Device& d, Pkt& p, uint8_t* out, bool* err) noexcept {
  *err = false;
  memcpy(out, p.hdr, kNetHdrMax);
  uint8_t gso = p.hdr[1];
  if (gso != VIRTIO_NET_HDR_GSO_NONE) {
    bool ok;
    switch (gso & ~VIRTIO_NET_HDR_GSO_ECN) {
      case VIRTIO_NET_HDR_GSO_TCPV4: ok = d.has(VIRTIO_NET_F_GUEST_TSO4); break;
      case VIRTIO_NET_HDR_GSO_TCPV6: ok = d.has(VIRTIO_NET_F_GUEST_TSO6); break;
      case VIRTIO_NET_HDR_GSO_UDP: ok = d.has(VIRTIO_NET_F_GUEST_UFO); break;
      case VIRTIO_NET_HDR_GSO_UDP_L4: ok = d.has(VIRTIO_NET_F_GUEST_USO4) || d.has(VIRTIO_NET_F_GUEST_USO6); break;
      default: ok = false; *err = true; break;
    }
    if ((gso & VIRTIO_NET_HDR_GSO_ECN) && !d.has(VIRTIO_NET_F_GUEST_ECN)) ok = false;
    if (!ok) return false;  // software segmentation: future work
  }
  if (p.hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    if (d.has(VIRTIO_NET_F_GUEST_CSUM)) {
      restoreChecksum(p);
    } else {
      if (!softwareChecksum(p)) { *err = true; return false; }
      out[0] = 0;
    }
  } else if (!d.has(VIRTIO_NET_F_GUEST_CSUM)) {
    out[0] = 0;  // without GUEST_CSUM the device must leave flags zero
  }
  out[10] = out[11] = 0;
  return true;
}

static int pickRxQueue(Device& d, int pair) noexcept {
  int cnt = 0;
  for (int k = 0; k < d.maxQueuePairs; k++) {
    Virtqueue& v = d.vq[2 * k];
    if (__atomic_load_n(&v.enabled, __ATOMIC_ACQUIRE) && __atomic_load_n(&v.running, __ATOMIC_ACQUIRE)) cnt++;
  }
  if (cnt == 0) return 2 * (pair % d.maxQueuePairs);
  int want = pair % cnt;
  for (int k = 0; k < d.maxQueuePairs; k++) {
    Virtqueue& v = d.vq[2 * k];
    if (__atomic_load_n(&v.enabled, __ATOMIC_ACQUIRE) && __atomic_load_n(&v.running, __ATOMIC_ACQUIRE)) {
      if (want-- == 0) return 2 * k;
    }
  }
  return 0;
}

// Scatters hdr + frame across the chains [0, nch) whose segments are in ctx.iov.
static void scatter(Device& d, Virtqueue& vq, WorkerCtx& ctx, int nch, const uint8_t* hdr, uint32_t hl, const Pkt& p) noexcept {
  const uint8_t* src = hdr;
  size_t srcLeft = hl;
  bool inData = false;
  for (int k = 0; k < nch; k++) {
    Chain& ch = ctx.chains[k];
    uint32_t written = 0;
    for (int i = 0; i < ch.iovCount; i++) {
      uint8_t* dst = static_cast<uint8_t*>(ctx.iov[ch.iovStart + i].iov_base);
      size_t room = ctx.iov[ch.iovStart + i].iov_len;
      while (room) {
        if (srcLeft == 0) {
          if (inData) break;
          inData = true;
          src = p.data;
          srcLeft = p.len;
          if (!srcLeft) break;
        }
        size_t c = room < srcLeft ? room : srcLeft;
        memmove(dst, src, c);  // src may be the sender's buffer in guest memory (see netDeliver)
        if (__builtin_expect(d.log.active(), 0)) d.log.markHost(*d.mem, dst, c);
        dst += c;
        src += c;
        room -= c;
        srcLeft -= c;
        written += (uint32_t)c;
      }
      if (srcLeft == 0 && inData) break;
    }
    vq.pushUsed(ch.head, written);
  }
}

// Crash attribution: the device a worker writes into, for as long as it does (crash_attr.h).
struct PeerMark {
  crash::Slot& s;
  PeerMark(crash::Slot& slot, int devId) noexcept : s(slot) { s.setPeer((uint64_t)(devId + 1)); }
  ~PeerMark() { s.setPeer(0); }
};

void netDeliver(Device& d, int pair, WorkerCtx& ctx, uint32_t mask, Virtqueue* src, uint32_t srcDone) noexcept {
  PeerMark mark(*ctx.attr, d.devId);
  int q = pickRxQueue(d, pair);
  Virtqueue& vq = d.vq[q];
  int npk = __builtin_popcount(mask);
  SpinGuard g(vq.lock);
  QueueCounters& c = *vq.ctr;
  // A pending memory fault (sigbus_guard.h): the owner is about to fail the device; writing
  // into zero pages meanwhile would only produce misleading ring errors.
  if (!vq.running || !vq.enabled || vq.broken || d.mem->fault().pending()) {
    c.add(kDrops, (uint64_t)npk);
    if (src) netTxDelivered(*src, ctx, srcDone);
    return;
  }
  const MemTable& mem = *d.mem;
  const uint32_t hl = (uint32_t)d.hdrLen;
  uint64_t pk = 0, by = 0, dr = 0, er = 0;
  uint16_t usedBefore = vq.usedIdx;
  uint16_t availSeen = vq.availIdx();
  {
    uint16_t ready = (uint16_t)(availSeen - vq.lastAvail);  // checked per frame below
    vq.prefetchBuffers<true>(mem, vq.lastAvail, ready < npk ? ready : npk);
  }
  while (mask) {
    int i = __builtin_ctz(mask);
    mask &= mask - 1;
    Pkt& p = ctx.pkts[i];
    uint8_t hdr[kNetHdrMax];
    bool hdrErr;
    if (!headerFor(d, p, hdr, &hdrErr)) {
      dr++;
      if (hdrErr) er++;
      continue;
    }
    // avail->idx is read again only when the entries seen so far are used up: one load of
    // the driver's cache line per burst, not per frame.
    uint16_t pend16 = (uint16_t)(availSeen - vq.lastAvail);
    if (pend16 == 0) {
      availSeen = vq.availIdx();
      pend16 = (uint16_t)(availSeen - vq.lastAvail);
    }
    int pend = pend16 > vq.size ? -1 : (int)pend16;
    if (pend < 0) {
      snprintf(ctx.reason, sizeof ctx.reason, "avail idx %u is %u entries ahead of last avail %u (ring size %u)",
               vq.availIdx(), (unsigned)(uint16_t)(vq.availIdx() - vq.lastAvail), vq.lastAvail, vq.size);
      queueBroken(d, q, ctx);
      dr += 1 + (uint64_t)__builtin_popcount(mask);
      break;
    }
    const uint64_t need = hl + (uint64_t)p.len;
    uint16_t end = (uint16_t)(vq.lastAvail + pend);
    uint16_t cur = vq.lastAvail;
    int nch = 0, niov = 0;
    uint64_t cap = 0;
    enum { kFits, kNoRoom, kBadChain, kBroken } res = kFits;
    while (cap < need) {
      if (cur == end) {  // the buffers seen so far do not hold the frame: any new ones?
        uint16_t a = vq.availIdx();
        if (a != availSeen && (uint16_t)(a - vq.lastAvail) <= vq.size) availSeen = end = a;
      }
      if (cur == end || (!d.mrg && nch == 1) || nch == kMaxRxChains) { res = kNoRoom; break; }
      uint16_t head;
      if (vq.headAt(cur, &head, ctx.reason, sizeof ctx.reason) == Pop::kBroken) { res = kBroken; break; }
      Chain& ch = ctx.chains[nch];
      ch.iovStart = niov;
      bool tooMany = false;
      if (!vq.walk(mem, head, true, ctx.iov, kMaxIov, &ch, &tooMany, ctx.reason, sizeof ctx.reason)) {
        if (tooMany && nch > 0) { res = kNoRoom; break; }  // scratch full: retry from this chain later
        ch.head = head;
        res = kBadChain;
        break;
      }
      cur++;
      nch++;
      niov += ch.iovCount;
      cap += ch.len;
    }
    if (res == kBroken) {
      queueBroken(d, q, ctx);
      dr += 1 + (uint64_t)__builtin_popcount(mask);
      break;
    }
    if (res == kBadChain) {
      // The bad chain and the good ones gathered before it (for this frame) go back empty.
      for (int k = 0; k < nch; k++) vq.pushUsed(ctx.chains[k].head, 0);
      vq.pushUsed(ctx.chains[nch].head, 0);
      vq.lastAvail = (uint16_t)(cur + 1);
      er++;
      dr++;
      chainError(d, q, ctx);
      continue;
    }
    if (res == kNoRoom) {  // nothing consumed
      dr++;
      continue;
    }
    if (hl == 12) {
      uint16_t nb = d.mrg ? (uint16_t)nch : 1;
      memcpy(hdr + 10, &nb, 2);
    }
    const struct iovec& seg0 = ctx.iov[ctx.chains[0].iovStart];
    if (nch == 1 && seg0.iov_len >= need && !d.log.active()) {
      // One receive segment takes the whole frame: two copies, the header's of constant size.
      uint8_t* dst = static_cast<uint8_t*>(seg0.iov_base);
      if (hl == kNetHdrMax) memcpy(dst, hdr, kNetHdrMax);
      else memcpy(dst, hdr, 10);
      // memmove: a frame delivered from the sender's own buffer (netTxBurst) and this receive
      // buffer can overlap, when both devices map the same guest memory (two VFs of one VM, or
      // a front-end that shares one memfd) and the guest aims them at the same bytes.
      memmove(dst + hl, p.data, p.len);
      vq.pushUsed(ctx.chains[0].head, (uint32_t)need);
    } else {
      scatter(d, vq, ctx, nch, hdr, hl, p);
    }
    vq.lastAvail = cur;
    pk++;
    by += p.len;
  }
  if (vq.usedIdx != usedBefore) vq.publishUsed();
  // The source's progress record and this queue's counters before the signal: a process
  // killed in that syscall must neither deliver these frames again after a takeover nor leave
  // frames the front-end got uncounted (the counters are shared with the process that takes
  // over; a kill between the used index and these stores is a few instructions wide).
  if (src) netTxDelivered(*src, ctx, srcDone);
  c.add(kPackets, pk);
  c.add(kBytes, by);
  c.add(kDrops, dr);
  c.add(kErrors, er);
  if (vq.usedIdx != usedBefore) vq.signalIfNeeded();
}

}  // namespace vhd

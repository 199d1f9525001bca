// Split virtqueue implementation (see virtqueue.h).
#include "virtqueue.h"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace vhd {

static inline bool isPow2(uint32_t v) { return v && !(v & (v - 1)); }

bool Virtqueue::mapRings(const MemTable& mem, const QueueSetup& s, char* reason, size_t rlen) noexcept {
  if (!isPow2(s.size) || s.size > kMaxQueueSize) {
    snprintf(reason, rlen, "ring size %u is not a power of two <= %u", s.size, kMaxQueueSize);
    return false;
  }
  if (s.descAddr & (kDescAlign - 1)) { snprintf(reason, rlen, "desc table 0x%" PRIx64 " not %" PRIu64 "-byte aligned", s.descAddr, kDescAlign); return false; }
  if (s.availAddr & (kAvailAlign - 1)) { snprintf(reason, rlen, "avail ring 0x%" PRIx64 " not %" PRIu64 "-byte aligned", s.availAddr, kAvailAlign); return false; }
  if (s.usedAddr & (kUsedAlign - 1)) { snprintf(reason, rlen, "used ring 0x%" PRIx64 " not %" PRIu64 "-byte aligned", s.usedAddr, kUsedAlign); return false; }
  uint64_t dlen = DescTableBytes(s.size), alen = AvailRingBytes(s.size), ulen = UsedRingBytes(s.size);
  uint8_t* d = mem.uvaToHost(s.descAddr, dlen);
  if (!d) { snprintf(reason, rlen, "desc table 0x%" PRIx64 " len %" PRIu64 " outside mapped memory", s.descAddr, dlen); return false; }
  uint8_t* a = mem.uvaToHost(s.availAddr, alen);
  if (!a) { snprintf(reason, rlen, "avail ring 0x%" PRIx64 " len %" PRIu64 " outside mapped memory", s.availAddr, alen); return false; }
  uint8_t* u = mem.uvaToHost(s.usedAddr, ulen);
  if (!u) { snprintf(reason, rlen, "used ring 0x%" PRIx64 " len %" PRIu64 " outside mapped memory", s.usedAddr, ulen); return false; }
  setup = s;
  size = s.size;
  mask = (uint16_t)(s.size - 1);
  desc = reinterpret_cast<volatile VringDesc*>(d);
  avail = reinterpret_cast<volatile uint16_t*>(a);
  used = reinterpret_cast<volatile uint8_t*>(u);
  // Trust the ring over a possibly stale SET_VRING_BASE: we complete in order, so when the
  // used index in memory differs, resume from it (what was used is done).
  uint16_t u_idx = usedIdxInMemory();
  lastAvail = s.lastAvailIdx;
  if (u_idx != lastAvail) lastAvail = u_idx;
  usedIdx = lastAvail;
  signalledUsed = usedIdx;
  // A burst the previous runner of this queue (maybe another process) left unfinished at
  // exactly this position: skip what it delivered already (TxProgress).
  burst = TxProgress{};
  skipN = 0;
  if (ctr) {
    // Shared memory another process wrote (it may have died of a bug): hostile like the ring.
    // A burst takes at most 32 chains and never more than the ring holds; done bits beyond
    // the burst mean nothing. Anything else is ignored: the ring resumes without skipping.
    TxProgress left = TxProgress::decode(__atomic_load_n(&ctr->v[kProgress], __ATOMIC_ACQUIRE));
    if (left.active && left.start == lastAvail && left.n > 0 && left.n <= 32 && left.n <= size) {
      skipStart = left.start;
      skipN = left.n;
      skipMask = left.done & (left.n >= 32 ? ~0u : ((1u << left.n) - 1));
    }
  }
  return true;
}

bool Virtqueue::remap(const MemTable& mem, char* reason, size_t rlen) noexcept {
  uint16_t la = lastAvail, ui = usedIdx, su = signalledUsed;
  QueueSetup s = setup;
  s.lastAvailIdx = la;
  if (!mapRings(mem, s, reason, rlen)) return false;
  lastAvail = la;
  usedIdx = ui;
  signalledUsed = su;
  return true;
}

void Virtqueue::badHead(uint16_t cursor, uint16_t h, char* reason, size_t rlen) const noexcept {
  snprintf(reason, rlen, "avail ring slot %u: head %u >= ring size %u", (unsigned)(cursor & mask), h, size);
}

bool Virtqueue::walkChain(const MemTable& mem, uint16_t head, bool deviceWrites, struct iovec* iov, int maxIov, Chain* out,
                          bool* tooMany, char* reason, size_t rlen) const noexcept {
  *tooMany = false;
  out->head = head;
  out->len = 0;
  int n = out->iovStart;
  const volatile VringDesc* table = desc;
  uint32_t tableSize = size;  // descriptors addressable in the current table
  uint32_t budget = size;     // descriptors we still accept in the current table
  bool inIndirect = false;
  uint16_t idx = head;
  for (;;) {
    if (idx >= tableSize) {
      snprintf(reason, rlen, "%sdesc %u: next index beyond table of %u", inIndirect ? "indirect " : "", idx, tableSize);
      return false;
    }
    if (budget == 0) {
      snprintf(reason, rlen, "%schain longer than %u descriptors (loop?)", inIndirect ? "indirect " : "", tableSize);
      return false;
    }
    budget--;
    VringDesc d = readDesc(&table[idx]);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (inIndirect) { snprintf(reason, rlen, "indirect desc %u: INDIRECT inside an indirect table", idx); return false; }
      if (!indirectOk) { snprintf(reason, rlen, "desc %u: INDIRECT not negotiated", idx); return false; }
      if (d.flags & VRING_DESC_F_NEXT) { snprintf(reason, rlen, "desc %u: INDIRECT together with NEXT", idx); return false; }
      if (d.len == 0 || (d.len & 15)) {
        snprintf(reason, rlen, "desc %u: indirect table len %u is not a non-zero multiple of 16", idx, d.len);
        return false;
      }
      uint8_t* t = mem.gpaToHost(d.addr, d.len);
      if (!t) {
        snprintf(reason, rlen, "desc %u: indirect table addr 0x%" PRIx64 " len %u outside guest memory (or spans regions)",
                 idx, d.addr, d.len);
        return false;
      }
      table = reinterpret_cast<const volatile VringDesc*>(t);
      tableSize = d.len / 16;
      budget = tableSize;
      inIndirect = true;
      idx = 0;
      continue;
    }
    const char* where = inIndirect ? "indirect desc" : "desc";
    if (d.len == 0) { snprintf(reason, rlen, "%s %u: zero length", where, idx); return false; }
    bool w = (d.flags & VRING_DESC_F_WRITE) != 0;
    if (w != deviceWrites) {
      snprintf(reason, rlen, "%s %u: %s descriptor in a %s chain", where, idx, w ? "device-writable" : "read-only",
               deviceWrites ? "receive (device-writes)" : "transmit (device-reads)");
      return false;
    }
    int got = mem.gpaToIov(d.addr, d.len, iov + n, maxIov - n);
    if (got == -1) {
      snprintf(reason, rlen, "%s %u: addr 0x%" PRIx64 " len %u outside guest memory", where, idx, d.addr, d.len);
      return false;
    }
    if (got == -2) {
      *tooMany = true;
      snprintf(reason, rlen, "%s %u: chain needs more than %d memory segments", where, idx, maxIov - out->iovStart);
      return false;
    }
    n += got;
    out->len += d.len;
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    idx = d.next;
  }
  out->iovCount = n - out->iovStart;
  return true;
}

bool Virtqueue::needCall() noexcept {
  // The used idx store must be visible before we read the driver's used_event / flags.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t newIdx = usedIdx, old = signalledUsed;
  signalledUsed = newIdx;
  if (eventIdx) {
    return VringNeedEvent(avail[UsedEventWord(size)], newIdx, old);
  }
  return !(avail[kAvailFlagsWord] & VRING_AVAIL_F_NO_INTERRUPT);
}

void Virtqueue::signal() noexcept {
  if (callFd < 0) return;
  uint64_t one = 1;
  ssize_t r = write(callFd, &one, sizeof one);
  (void)r;  // EAGAIN: counter saturated, the driver will see it anyway
  if (ctr) ctr->add(kCalls, 1);
}

bool Virtqueue::signalIfNeeded() noexcept {
  if (usedIdx == signalledUsed) return false;
  if (!needCall()) return false;
  signal();
  return true;
}

// Both write the used ring, so both are logged while QEMU migrates (like every other write
// into guest memory): a stale avail_event or flags word on the destination stalls a queue.
void Virtqueue::enableNotify() noexcept {
  if (!used) return;
  if (eventIdx) {
    volatile uint16_t* ae = reinterpret_cast<volatile uint16_t*>(used + AvailEventOff(size));
    *ae = lastAvail;
    if (__builtin_expect(logging(), 0)) dlog->mark(setup.logAddr + AvailEventOff(size), 2);
  } else {
    volatile uint16_t* f = reinterpret_cast<volatile uint16_t*>(used + kUsedFlagsOff);
    *f = (uint16_t)(*f & ~VRING_USED_F_NO_NOTIFY);
    if (__builtin_expect(logging(), 0)) dlog->mark(setup.logAddr + kUsedFlagsOff, 2);
  }
}

void Virtqueue::disableNotify() noexcept {
  if (!used) return;
  if (!eventIdx) {
    volatile uint16_t* f = reinterpret_cast<volatile uint16_t*>(used + kUsedFlagsOff);
    *f = (uint16_t)(*f | VRING_USED_F_NO_NOTIFY);
    if (__builtin_expect(logging(), 0)) dlog->mark(setup.logAddr + kUsedFlagsOff, 2);
  }
  // EVENT_IDX: a stale avail_event already suppresses kicks (the driver never crosses it).
}

void Virtqueue::markBroken() noexcept {
  broken = true;
  if (errFd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(errFd, &one, sizeof one);
    (void)r;
  }
  if (ctr) ctr->add(kErrors, 1);
}

}  // namespace vhd

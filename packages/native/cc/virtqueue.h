// Split virtqueue (virtio 1.2 §2.7), device side. Everything read from guest memory is
// untrusted: indices, heads, descriptors and addresses are checked before use, chains are
// length-capped (so loops terminate) and a bad chain never leaves this file as anything but
// a precise reason string.
#pragma once
#include <sys/uio.h>
#include <atomic>
#include <cstdint>
#include <cstddef>

#include "counters.h"
#include "dirty_log.h"
#include "guest_memory.h"
#include "split_ring.h"

namespace vhd {

// One descriptor copied out of guest memory field by field (the guest may change it meanwhile;
// everything after works on this copy).
inline VringDesc readDesc(const volatile VringDesc* d) noexcept {
  VringDesc v;
  v.addr = d->addr;
  v.len = d->len;
  v.flags = d->flags;
  v.next = d->next;
  return v;
}

// Test-and-test-and-set spinlock; held for one burst at most.
class Spinlock {
 public:
  void lock() noexcept {
    for (;;) {
      if (!f_.exchange(true, std::memory_order_acquire)) return;
      while (f_.load(std::memory_order_relaxed)) __builtin_ia32_pause();
    }
  }
  void unlock() noexcept { f_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> f_{false};
};

struct SpinGuard {
  explicit SpinGuard(Spinlock& l) noexcept : l_(l) { l_.lock(); }
  ~SpinGuard() { l_.unlock(); }
  Spinlock& l_;
};

// Where an epoll event came from (epoll_event.data.ptr points at one of these).
struct PollSource {
  enum Kind { kCommand, kKick, kTap, kBlkIo } kind;
  void* owner;  // Device* for kKick and kBlkIo, L2Switch* for kTap
  int queue;
};

// One chain walked into host segments.
struct Chain {
  uint16_t head;
  int iovStart;  // index into the caller's iovec scratch
  int iovCount;
  uint64_t len;  // total bytes
};

enum class Pop { kOk, kEmpty, kBroken };

struct QueueSetup {
  uint16_t size;
  uint64_t descAddr, availAddr, usedAddr;
  uint16_t lastAvailIdx;
  // VHOST_VRING_F_LOG: used-ring writes are logged at this guest-physical address.
  bool logUsed = false;
  uint64_t logAddr = 0;
};

class Virtqueue {
 public:
  // ---- configuration (changed only by the owner worker; for RX queues under `lock`) ----
  QueueSetup setup{};
  bool configured = false;  // startQueue succeeded at least once (setup is valid)
  bool running = false;
  bool broken = false;
  int enabledState = -1;    // -1: never set (follows PROTOCOL_FEATURES rule), 0/1 explicit
  bool enabled = false;     // effective
  bool eventIdx = false;
  bool indirectOk = false;
  int kickFd = -1, callFd = -1, errFd = -1;  // dups owned by the engine
  PollSource pollSrc{PollSource::kKick, nullptr, 0};
  bool inEpoll = false;
  QueueCounters* ctr = nullptr;
  DirtyLog* dlog = nullptr;  // the device's (never null once the device exists)
  // TX: the burst being forwarded (mirrored to ctr->v[kProgress]) and, after a takeover, the
  // positions of the dead process's last burst that were done already (see TxProgress).
  TxProgress burst{};
  uint16_t skipStart = 0;
  uint8_t skipN = 0;
  uint32_t skipMask = 0;
  uint32_t burstPkts = 0, burstErrs = 0;
  uint64_t burstBytes = 0;
  void storeProgress() noexcept { __atomic_store_n(&ctr->v[kProgress], burst.encode(), __ATOMIC_RELEASE); }
  Spinlock lock;  // RX queues: taken by every deliverer; TX queues: unused

  // ---- ring state ----
  uint16_t size = 0, mask = 0;
  volatile VringDesc* desc = nullptr;
  volatile uint16_t* avail = nullptr;  // words: see kAvailRingWord (split_ring.h)
  volatile uint8_t* used = nullptr;    // bytes: see UsedElemOff (split_ring.h)
  uint16_t lastAvail = 0;
  uint16_t usedIdx = 0;     // shadow of used->idx (we are the only writer)
  uint16_t signalledUsed = 0;  // used idx at the last signal decision (EVENT_IDX "old")

  // ---- event rate limiting ----
  uint64_t lastEventNs = 0;
  uint32_t suppressedEvents = 0;

  // Checks ring placement (size, alignment, every byte inside front-end VA space) and maps
  // the rings. On success reads used->idx to resync indices. Returns false + reason.
  bool mapRings(const MemTable& mem, const QueueSetup& s, char* reason, size_t rlen) noexcept;
  // Re-translates after a memory table change (false + reason if the rings no longer fit).
  bool remap(const MemTable& mem, char* reason, size_t rlen) noexcept;
  void unmapRings() noexcept { desc = nullptr; avail = nullptr; used = nullptr; }

  uint16_t availIdx() const noexcept { return __atomic_load_n(&avail[kAvailIdxWord], __ATOMIC_ACQUIRE); }
  // used->idx as it is in guest memory (after mapRings, before we publish: the index the
  // ring held, which may overrule the base we were given).
  uint16_t usedIdxInMemory() const noexcept {
    return __atomic_load_n(reinterpret_cast<volatile uint16_t*>(used + kUsedIdxOff), __ATOMIC_ACQUIRE);
  }
  // Pending avail entries, or -1 when avail->idx is more than size ahead (broken).
  int pending() const noexcept {
    uint16_t n = (uint16_t)(availIdx() - lastAvail);
    return n > size ? -1 : (int)n;
  }
  // Reads the head at slot `cursor` (does not advance lastAvail).
  Pop headAt(uint16_t cursor, uint16_t* head, char* reason, size_t rlen) const noexcept {
    uint16_t h = avail[kAvailRingWord + (cursor & mask)];
    if (__builtin_expect(h >= size, 0)) {
      badHead(cursor, h, reason, rlen);
      return Pop::kBroken;
    }
    *head = h;
    return Pop::kOk;
  }
  // Starts loading the first buffers of the chains at avail slots [from, from+n) into the
  // cache, before a burst walks and copies them: a buffer the driver just wrote (TX) or
  // recycled (RX) sits in the driver's CPU's cache, and fetching them one at a time, each
  // when first touched, was most of a small frame's cost. All the loads are independent,
  // so they overlap. Only a hint: nothing is validated beyond what makes the address safe.
  template <bool kForWrite>
  void prefetchBuffers(const MemTable& mem, uint16_t from, int n) const noexcept {
    for (int k = 0; k < n; k++) {
      uint16_t h = avail[kAvailRingWord + ((uint16_t)(from + k) & mask)];
      if (h >= size) return;
      const volatile VringDesc& d = desc[h];
      if (d.flags & VRING_DESC_F_INDIRECT) continue;
      const uint8_t* p = mem.gpaToHost(d.addr, 128);
      if (!p) continue;
      __builtin_prefetch(p, kForWrite, 3);
      __builtin_prefetch(p + 64, kForWrite, 3);
    }
  }

  // Inline for the usual chain, one direct descriptor that passes every check; anything
  // else, or any doubt, goes to walkChain, which reads the chain afresh and says what is wrong.
  bool walk(const MemTable& mem, uint16_t head, bool deviceWrites, struct iovec* iov, int maxIov, Chain* out,
            bool* tooMany, char* reason, size_t rlen) const noexcept {
    if (head < size && out->iovStart < maxIov) {
      VringDesc d = readDesc(&desc[head]);
      const uint16_t want = deviceWrites ? VRING_DESC_F_WRITE : 0;
      const uint16_t checked = VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE;
      if ((d.flags & checked) == want && d.len != 0) {
        if (uint8_t* h = mem.gpaToHost(d.addr, d.len)) {
          iov[out->iovStart].iov_base = h;
          iov[out->iovStart].iov_len = d.len;
          *tooMany = false;
          out->head = head;
          out->len = d.len;
          out->iovCount = 1;
          return true;
        }
      }
    }
    return walkChain(mem, head, deviceWrites, iov, maxIov, out, tooMany, reason, rlen);
  }
  bool walkChain(const MemTable& mem, uint16_t head, bool deviceWrites, struct iovec* iov, int maxIov, Chain* out,
                 bool* tooMany, char* reason, size_t rlen) const noexcept;

  void pushUsed(uint16_t id, uint32_t len) noexcept {
    // used + UsedElemOff(slot), spelled so that the compiler emits what it always did here.
    volatile uint32_t* e = reinterpret_cast<volatile uint32_t*>(used + kUsedRingOff + kUsedElemBytes * (usedIdx & mask));
    e[0] = id;
    e[1] = len;
    if (__builtin_expect(logging(), 0)) dlog->mark(setup.logAddr + kUsedRingOff + kUsedElemBytes * (usedIdx & mask), kUsedElemBytes);
    usedIdx++;
  }
  void publishUsed() noexcept {
    __atomic_store_n(reinterpret_cast<volatile uint16_t*>(used + kUsedIdxOff), usedIdx, __ATOMIC_RELEASE);
    if (__builtin_expect(logging(), 0)) dlog->mark(setup.logAddr + kUsedIdxOff, 2);
  }
  bool logging() const noexcept { return setup.logUsed && dlog && dlog->active(); }
  // After publishUsed: should the driver be interrupted? (EVENT_IDX or NO_INTERRUPT rules)
  bool needCall() noexcept;
  // Signals callFd if needCall(); counts `calls`. Returns whether it signalled.
  bool signalIfNeeded() noexcept;
  void signal() noexcept;  // unconditional (kickAll)

  // Notification suppression (kicks): enable before sleeping, disable while polling.
  void enableNotify() noexcept;
  void disableNotify() noexcept;

  // Marks broken: stop processing, write errFd. Caller emits the event.
  void markBroken() noexcept;

 private:
  void badHead(uint16_t cursor, uint16_t h, char* reason, size_t rlen) const noexcept;
};

}  // namespace vhd

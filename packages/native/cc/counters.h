// Shared counter layout: maxDevices x kMaxQueues x kCountersPerQueue u64, one cache line per
// queue. The region is plain shared memory (later a memfd read by another process), so every
// access is a relaxed atomic; each counter has one writer at a time (the queue's owner, or the
// deliverer holding the RX queue lock), so an update is load + store, not a locked add.
#pragma once
#include <cstdint>
#include <climits>

namespace vhd {

constexpr int kCountersPerQueue = 8;
constexpr int kMaxQueuePairs = 16;
constexpr int kMaxQueues = 2 * kMaxQueuePairs;

enum Counter : int {
  kPackets = 0,
  kBytes = 1,
  kDrops = 2,
  kKicks = 3,
  kCalls = 4,
  kErrors = 5,
  kWakeups = 6,
  // Not a counter: a TX queue's burst in progress (TxProgress below), in the same shared
  // memory so that the process that takes the queue over after a crash can read it.
  kProgress = 7,
};

constexpr const char* kCounterNames[kCountersPerQueue] = {
    "packets", "bytes", "drops", "kicks", "calls", "errors", "wakeups", "progress"};

// Port security (l2_switch.h), per queue, in a second block after the first one:
// maxDevices x kMaxQueues x kPortCountersPerQueue u64. The first block keeps its layout, so a
// process of the previous version sharing the file reads what it always did (it maps only the
// first block; the file is grown, never shrunk). Written by the TX queue's owner only.
constexpr int kPortCountersPerQueue = 2;
enum PortCounter : int {
  kSpoofed = 0,    // frames dropped: source MAC not allowed on the port, or its FDB share full
  kUnlearned = 1,  // frames forwarded without learning their source (a trusted port's share full)
};
constexpr const char* kPortCounterNames[kPortCountersPerQueue] = {"spoofed", "unlearned"};

inline void addSingleWriter(uint64_t* c, uint64_t n) noexcept {
  if (n) __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

struct alignas(64) QueueCounters {
  uint64_t v[kCountersPerQueue];

  // Single writer: no read-modify-write bus lock needed.
  inline void add(int field, uint64_t n) noexcept {
    if (n == 0) return;
    uint64_t cur = __atomic_load_n(&v[field], __ATOMIC_RELAXED);
    __atomic_store_n(&v[field], cur + n, __ATOMIC_RELAXED);
  }
  // Several possible writers (rare paths only).
  inline void addShared(int field, uint64_t n) noexcept {
    if (n) __atomic_fetch_add(&v[field], n, __ATOMIC_RELAXED);
  }
  inline void reset() noexcept {
    for (auto& x : v) __atomic_store_n(&x, 0, __ATOMIC_RELAXED);
  }
};
static_assert(sizeof(QueueCounters) == 64, "one cache line per queue");

// A TX burst between taking frames from the front-end and publishing their used entries:
// which avail positions [start, start+n) are done (delivered to every destination, or needing
// no delivery). A process killed mid-burst leaves it set; its successor, resuming the ring at
// used->idx == start, completes the done positions without delivering them again and delivers
// the rest: no frame is lost and none is sent twice (a flood to several ports excepted, whose
// earlier ports may see it again). Bits: 0-15 start, 16-23 n, 24-55 done mask, 63 active.
struct TxProgress {
  uint16_t start;
  uint8_t n;
  uint32_t done;
  bool active;

  static TxProgress decode(uint64_t v) noexcept {
    return TxProgress{(uint16_t)v, (uint8_t)(v >> 16), (uint32_t)(v >> 24), (v >> 63) != 0};
  }
  uint64_t encode() const noexcept {
    return (uint64_t)start | ((uint64_t)n << 16) | ((uint64_t)done << 24) | ((uint64_t)(active ? 1 : 0) << 63);
  }
};

}  // namespace vhd

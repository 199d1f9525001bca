// Shared counter layout: maxDevices x kMaxQueues x kCountersPerQueue u64, one cache line per
// queue. The region is plain shared memory (later a memfd read by another process), so every
// access is a relaxed atomic; each counter has one writer at a time (the queue's owner, or the
// deliverer holding the RX queue lock), so an update is load + store, not a locked add.
#pragma once
#include <cstdint>

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
  kReserved = 7,
};

constexpr const char* kCounterNames[kCountersPerQueue] = {
    "packets", "bytes", "drops", "kicks", "calls", "errors", "wakeups", "reserved"};

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

}  // namespace vhd
